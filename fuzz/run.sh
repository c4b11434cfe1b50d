#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the
# other, and prints per target: executions, coverage (libFuzzer's `cov`
# edges and `ft` features), corpus size, and findings.
#
#   bash fuzz/run.sh 60            # each target 60 s (what the test command runs, shorter)
#   bash fuzz/run.sh 1200          # the long run (20 minutes per target)
#   bash fuzz/run.sh 60 config_toml  # one target
#   bash fuzz/run.sh build         # only build the targets (the test command does it early)
#
# The corpus grows in fuzz/corpus/<target> (not committed), starting from
# the committed seeds in fuzz/seeds/<target>. A crash or hang leaves its
# input in fuzz/artifacts/<target>/ and the script fails; copy the input
# to fuzz/regressions/<target>/ (replayed by `cargo test --test
# fuzz_seeds`) with the fix.
#
# Needs cargo-fuzz (installed here when missing). On the stable toolchain
# RUSTC_BOOTSTRAP=1 lets cargo-fuzz's unstable flags through. Built without
# a sanitizer: the code under test is safe Rust, so AddressSanitizer would
# only slow the search; overflow checks and debug assertions are on.
set -euo pipefail
secs=${1:-60}
shift || true
cd "$(dirname "$0")/.."
build_only=false
[ "$secs" != build ] || build_only=true
all=(survey_payload snapshot_restore config_toml send_json_line case_event revisions)
targets=("${@:-${all[@]}}")
if [ $# -eq 0 ]; then targets=("${all[@]}"); fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1
flags=(-s none)  # default build: optimized, with debug assertions and overflow checks
cargo fuzz build "${flags[@]}" >&2
if $build_only; then exit 0; fi

status=0
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  log="fuzz/artifacts/$t/last-run.log"
  echo "fuzz: $t for ${secs}s" >&2
  # -max_len: the 1 MiB payload_too_large seed would otherwise make every
  # input up to 1 MiB long; it is replayed whole by the test suite.
  if cargo fuzz run "${flags[@]}" "$t" "fuzz/corpus/$t" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 >"$log" 2>&1; then
    found=0
  else
    found=1
    status=1
    tail -40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  done_line=$(grep -E '^#[0-9]+\s+(DONE|pulse|NEW|REDUCE)' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || echo "?")
  ft=$(grep -o 'ft: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || echo "?")
  corp=$(grep -o 'corp: [0-9]*' <<<"$done_line" | grep -o '[0-9]*' || echo "?")
  findings=$(find "fuzz/artifacts/$t" -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' -o -name 'leak-*' | wc -l)
  summary+=("$(printf '%-18s %6ss  execs %-10s cov %-6s ft %-7s corpus %-6s findings %s' \
    "$t" "$secs" "$execs" "$cov" "$ft" "$corp" "$findings")")
  [ "$found" = 0 ] || echo "fuzz: $t FOUND A FAILURE, see $log and fuzz/artifacts/$t/" >&2
done
printf '%s\n' "${summary[@]}"
exit "$status"
