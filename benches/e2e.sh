#!/usr/bin/env bash
# End-to-end benchmarks on a local broker: Tansu with memory storage
# (default) or librdkafka's mock cluster (BROKER=mock, served by
# benches/probe.rs).
#
# 1. Throughput. N generated answers (default 2,000,000; 3% malformed, so
#    dead letters too) are loaded into the input topic (PARTITIONS,
#    default 4), then read (a) by a bare rdkafka consumer with nps-stream's
#    consumer settings that discards them (benches/probe.rs) and (b) by
#    nps-stream doing all its work (decode, validate, engine, metrics, an
#    alert per detractor, dead letters, commits). Each is timed from its
#    first record to its last, and its process's CPU time is read; ROUNDS
#    (default 3) alternate a and b, and the medians are printed with the
#    ratio (b)/(a).
# 2. Alert latency. nps-stream runs live while `nps-stream send --generate`
#    produces RATE answers per second (default 10,000) for DURATION seconds
#    (default 30). The probe reads the alerts and the answers as they
#    arrive and prints p50/p99 of (alert readable − its answer's produce
#    time, the input record's CreateTime), and the same for the answers
#    themselves as the same-run baseline. NPS_ARGS adds flags to
#    nps-stream (e.g. "-X fetch.wait.max.ms=10").
#
# 3. Profile (only when asked: `bash benches/e2e.sh profile`). N answers
#    (default here 1,000,000) are loaded, then nps-stream consumes them
#    `perf record --call-graph dwarf` (the release build keeps line
#    tables for it); prints the shares of the process's samples by thread
#    and the functions with the largest inclusive shares. Needs perf;
#    PERF_DATA=file keeps the recording for `perf report -i file`.
#
#   bash benches/e2e.sh                    # both, on Tansu
#   N=500000 ROUNDS=1 bash benches/e2e.sh throughput
#   BROKER=mock bash benches/e2e.sh latency
#   bash benches/e2e.sh profile            # needs perf
#
# Needs tansu on PATH (bash tests/run-all.sh installs it), curl, bc, python3.
source "$(dirname "$0")/common.sh"
WHAT=${1:-all}
default_n=2000000
[ "$WHAT" = profile ] && default_n=1000000
N=${N:-$default_n}
ROUNDS=${ROUNDS:-3}
PARTITIONS=${PARTITIONS:-4}
RATE=${RATE:-10000}
SECONDS_LIVE=${DURATION:-30}

cargo bench --quiet --bench probe --no-run 2>/dev/null
PROBE=$(ls -t target/release/deps/probe-* | grep -v '\.d$' | head -1)

start_broker() {
  if [ "${BROKER:-tansu}" = mock ]; then
    "$PROBE" mock-broker survey-responses:$PARTITIONS nps-detractor-alerts:$PARTITIONS survey-responses-dlq:1 >"$work/mock.out" &
    pids+=($!)
    until [ -s "$work/mock.out" ]; do sleep 0.1; done
    brokers=$(head -1 "$work/mock.out")
    return
  fi
  start_tansu "$PARTITIONS" "$PARTITIONS"
}
wrap=() # a command to run nps-stream under (the profile's perf)
run_nps() { # group, log, extra args...: sets $mport and $nps
  mport=$(free_port)
  local group=$1 log=$2
  shift 2
  "${wrap[@]}" "$BIN" run --brokers "$brokers" --group-id "$group" --metrics-addr "127.0.0.1:$mport" "$@" >"$work/$log" 2>&1 &
  nps=$!
  pids+=("$nps")
}
cpu_of() { # pid: user + system CPU seconds so far
  awk '{ printf "%.2f\n", ($14 + $15) / 100 }' "/proc/$1/stat"
}
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

describe() {
  local broker="tansu 0.6 memory storage"
  [ "${BROKER:-tansu}" = mock ] && broker="librdkafka's mock cluster"
  printf '%s; broker: %s, on the same machine\n' "$(machine)" "$broker"
}

throughput() {
  start_broker
  "$BIN" send --brokers "$brokers" --generate --history "$N" --count 0 2>/dev/null
  : >"$work/bare"; : >"$work/nps"; : >"$work/bare_cpu"; : >"$work/nps_cpu"
  for r in $(seq "$ROUNDS"); do
    "$PROBE" bare "$brokers" survey-responses "$N" >"$work/bare.out"
    awk '{ print $(NF-1) }' "$work/bare.out" >>"$work/bare"
    grep -o 'cpu [0-9.]*' "$work/bare.out" | cut -d' ' -f2 >>"$work/bare_cpu"
    run_nps "bench-$r" "nps-$r.log" --snapshot-interval 10s
    first=""
    while :; do
      c=$(metric "$mport" nps_events_consumed_total)
      t=$(date +%s.%N)
      if [ -z "$first" ] && [ "${c:-0}" -gt 0 ]; then first=$t; c0=$c; fi
      if [ "${c:-0}" -ge "$N" ]; then break; fi
      sleep 0.05
    done
    # First scrape with records to the last: rate over what was counted in between.
    echo "($N - $c0) / ($t - $first)" | bc -l >>"$work/nps"
    cpu_of "$nps" >>"$work/nps_cpu"
    kill -TERM "$nps"; wait "$nps" 2>/dev/null || true
    printf 'round %s: bare %.0f/s, nps-stream %.0f/s\n' "$r" "$(tail -1 "$work/bare")" "$(tail -1 "$work/nps")"
  done
  bare=$(median <"$work/bare")
  npsr=$(median <"$work/nps")
  bare_cpu=$(median <"$work/bare_cpu")
  nps_cpu=$(median <"$work/nps_cpu")
  describe
  printf 'throughput, %s answers on %s partitions, median of %s rounds:\n' "$N" "$PARTITIONS" "$ROUNDS"
  printf '  bare consumer   %10.0f answers/s, %6.2f CPU s (%.2f µs per answer)\n' \
    "$bare" "$bare_cpu" "$(echo "$bare_cpu * 1000000 / $N" | bc -l)"
  printf '  nps-stream      %10.0f answers/s, %6.2f CPU s (%.2f µs per answer), %.0f%% of the bare rate\n' \
    "$npsr" "$nps_cpu" "$(echo "$nps_cpu * 1000000 / $N" | bc -l)" "$(echo "100 * $npsr / $bare" | bc -l)"
  kill -9 "${pids[0]}" 2>/dev/null || true
  pids=()
}

latency() {
  start_broker
  count=$((RATE * SECONDS_LIVE))
  run_nps bench-latency latency.log ${NPS_ARGS:-}
  until [ "$(metric "$mport" nps_ready)" = "1" ]; do sleep 0.2; done
  # Reads the alerts as they come, until 5 s pass without one.
  "$PROBE" latency "$brokers" nps-detractor-alerts survey-responses 5 >"$work/latency.out" &
  probe=$!
  pids+=("$probe")
  sleep 2
  "$BIN" send --brokers "$brokers" --generate --history 0 --rate "$RATE" --count "$count" \
    -X linger.ms=0 2>/dev/null
  wait "$probe" || true
  alerts=$(metric "$mport" nps_detractor_alerts_total)
  describe
  printf 'alert latency at %s answers/s for %s s (%s alerts):\n' "$RATE" "$SECONDS_LIVE" "$alerts"
  cat "$work/latency.out"
}

profile() {
  command -v perf >/dev/null || { echo "profile needs perf (Debian: linux-perf)" >&2; exit 1; }
  start_broker
  "$BIN" send --brokers "$brokers" --generate --history "$N" --count 0 2>/dev/null
  local data=${PERF_DATA:-$work/perf.data}
  wrap=(perf record -F 499 --call-graph dwarf,16384 -o "$data" --)
  run_nps bench-profile profile.log --snapshot-interval 10s ${NPS_ARGS:-}
  wrap=()
  until [ "$(metric "$mport" nps_events_consumed_total)" -ge "$N" ]; do sleep 0.2; done
  # $nps is perf: it stops recording and ends the service on SIGINT.
  kill -INT "$nps"; wait "$nps" 2>/dev/null || true
  describe
  printf 'profile: nps-stream consuming %s answers, share of the process'"'"'s samples\n' "$N"
  echo "by thread:"
  perf report -i "$data" --no-children --sort comm --stdio 2>/dev/null |
    grep -E '^ +[0-9.]+%' | head -12
  echo "by function, inclusive (with what it calls), the largest:"
  # Runtime and thread-start frames that every sample passes through are left out.
  perf report -i "$data" --children --sort symbol --stdio -g none --percent-limit 1 2>/dev/null |
    grep -E '^ +[0-9.]+%' | sed -E 's/ {2,}-  +- +$//; s/ +$//' |
    grep -vE 'inlined\)|0xffff|call_once|catch_unwind|block_on|__rust_begin|spawn_unchecked|thread_start|start_thread|clone3|with_budget|enter_runtime|vtable.shim|syscall_64' |
    head -"${TOP:-50}"
}

case "$WHAT" in
  throughput) throughput ;;
  latency) latency ;;
  profile) profile ;;
  *) throughput; latency ;;
esac
