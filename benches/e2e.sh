#!/usr/bin/env bash
# End-to-end benchmarks on a local broker: Tansu with memory storage
# (default) or librdkafka's mock cluster (BROKER=mock, served by
# benches/probe.rs).
#
# 1. Throughput, two loads as issue 20 measured them (benches/probe.rs
#    `load`): N answers (default 1,000,000) over PARTITIONS (default 6),
#    50 products x 20 regions, a comment on one answer in seven;
#    "ordinary" with 20% detractors, "storm" with 64% (an outage's wave of
#    unhappy customers). Each load gets a fresh broker; ROUNDS (default 3)
#    then alternate its baseline and nps-stream, and the medians are
#    printed with the ratio nps-stream / baseline:
#    - ordinary: a plain rdkafka consumer with librdkafka's defaults that
#      decodes each answer (probe `bare`), first record to last;
#    - storm: the same consumer forwarding a 320-byte record keyed by
#      customer to another topic for each detractor and waiting for every
#      delivery (probe `forward`, "consume and forward"), first record to
#      last acknowledgement;
#    - nps-stream doing all its work (decode, validate, engine, metrics,
#      alerts, promoter events, case tracking, dead letters, commits),
#      from its first alert's emitted_at to the moment the group's
#      committed offsets cover every answer (an offset is committed only
#      once its alert is acknowledged; besides the commit every second,
#      nps-stream commits 50 ms after reading goes quiet with every
#      delivery acknowledged, so this counts up to a quarter of a second
#      against it, and the probe's 100 ms polls). Each round writes its
#      alerts to a topic of its own. Progress is read from Kafka, not by
#      scraping /metrics (several megabytes with 1,000 segments).
#    CPU per answer is each process's user + system time over N.
#    Both loads run on two timelines (TIMELINES, default "spread live"):
#    answers spread over the last 30 days, and answers in time order over
#    the last ten minutes like a live feed (most of them their segment's
#    newest), each on a fresh broker.
# 2. Alert latency. nps-stream runs live while `nps-stream send --generate`
#    produces RATE answers per second (default 10,000) for DURATION seconds
#    (default 30). The probe reads the alerts and the answers as they
#    arrive and prints p50/p99 of (alert readable − its answer's produce
#    time, the input record's CreateTime), and the same for two same-run
#    baselines: the answers themselves (one trip through the broker), and
#    a consume-and-forward consumer running beside nps-stream that sends
#    an alert-sized record per detractor (two trips, as an alert makes).
#    NPS_ARGS adds flags to nps-stream (e.g. "-X fetch.wait.max.ms=10");
#    its -X properties go to the forwarder's consumer too.
#
# 3. Themes (only when asked: `bash benches/e2e.sh themes`). The ordinary
#    load (20% detractors) with a comment on COMMENTS of the answers
#    (default 0.40; probe `load`'s themed comments); ROUNDS pairs of
#    nps-stream with `--themes off` and as it ships (themes on, the
#    shipped taxonomy), each pair in the other order from the one before,
#    measured as in 1.; prints the medians and the cost of themes in CPU
#    per answer.
#
# 4. Profile (only when asked: `bash benches/e2e.sh profile`). N answers
#    of the storm load (SHARE=0.20 for the ordinary one) are loaded, then
#    nps-stream consumes them
#    `perf record --call-graph dwarf` (the release build keeps line
#    tables for it); prints the shares of the process's samples by thread
#    and the functions with the largest inclusive shares. Needs perf;
#    PERF_DATA=file keeps the recording for `perf report -i file`.
#
#   bash benches/e2e.sh                    # both, on Tansu
#   N=500000 ROUNDS=1 bash benches/e2e.sh throughput
#   BROKER=mock bash benches/e2e.sh latency
#   bash benches/e2e.sh themes             # themes on against off
#   bash benches/e2e.sh profile            # needs perf
#
# Needs tansu on PATH (bash tests/run-all.sh installs it), curl, bc, python3.
source "$(dirname "$0")/common.sh"
WHAT=${1:-all}
N=${N:-1000000}
ROUNDS=${ROUNDS:-3}
PARTITIONS=${PARTITIONS:-6}
RATE=${RATE:-10000}
SECONDS_LIVE=${DURATION:-30}

cargo bench --quiet --bench probe --no-run 2>/dev/null
PROBE=$(ls -t target/release/deps/probe-* | grep -v '\.d$' | head -1)

start_broker() {
  if [ "${BROKER:-tansu}" = mock ]; then
    "$PROBE" mock-broker survey-responses:$PARTITIONS nps-detractor-alerts:$PARTITIONS survey-responses-dlq:1 forwarded-latency:$PARTITIONS >"$work/mock.out" &
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

topic_create() { # name: with PARTITIONS partitions, on Tansu
  tansu topic create --broker "tcp://$brokers" --partitions "$PARTITIONS" \
    --config retention.ms=604800000 "$1" >/dev/null
}

throughput() {
  [ "${BROKER:-tansu}" = tansu ] || { echo "throughput runs on Tansu only" >&2; exit 1; }
  describe
  local load share base rate cpu timeline
  for timeline in ${TIMELINES:-spread live}; do
  for load in ${LOADS:-ordinary storm}; do
    share=0.20; base=bare
    [ "$load" = storm ] && share=0.64 && base=forward
    start_broker
    TIMELINE=$timeline "$PROBE" load "$brokers" survey-responses "$N" "$share"
    : >"$work/base"; : >"$work/nps"; : >"$work/base_cpu"; : >"$work/nps_cpu"
    for r in $(seq "$ROUNDS"); do
      if [ "$base" = bare ]; then
        "$PROBE" bare "$brokers" survey-responses "$N" >"$work/base.out"
      else
        topic_create "forwarded-$r"
        "$PROBE" forward "$brokers" survey-responses "forwarded-$r" "$N" >"$work/base.out"
      fi
      awk '{ print $(NF-1) }' "$work/base.out" >>"$work/base"
      grep -o 'cpu [0-9.]*' "$work/base.out" | cut -d' ' -f2 >>"$work/base_cpu"
      topic_create "alerts-$load-$r"
      run_nps "bench-$load-$r" "nps-$load-$r.log" --alerts-topic "alerts-$load-$r"
      end=$("$PROBE" committed "$brokers" "bench-$load-$r" survey-responses "$N")
      cpu_of "$nps" >>"$work/nps_cpu"
      kill -TERM "$nps"; wait "$nps" 2>/dev/null || true
      [ -z "${KEEP_LOGS:-}" ] || cp "$work/nps-$load-$r.log" "$KEEP_LOGS/"
      start=$("$PROBE" first-emitted "$brokers" "alerts-$load-$r")
      echo "$N * 1000 / ($end - $start)" | bc -l >>"$work/nps"
      printf '%s, %s round %s: %s %.0f/s, nps-stream %.0f/s\n' "$load" "$timeline" "$r" "$base" \
        "$(tail -1 "$work/base")" "$(tail -1 "$work/nps")"
    done
    rate=$(median <"$work/base"); cpu=$(median <"$work/base_cpu")
    nrate=$(median <"$work/nps"); ncpu=$(median <"$work/nps_cpu")
    {
      printf '%s (%s%% detractors), %s timeline, %s answers on %s partitions, median of %s rounds:\n' \
        "$load" "${share#0.}" "$timeline" "$N" "$PARTITIONS" "$ROUNDS"
      printf '  baseline (%s)  %10.0f answers/s, %6.2f CPU s (%.2f µs per answer)\n' \
        "$base" "$rate" "$cpu" "$(echo "$cpu * 1000000 / $N" | bc -l)"
      printf '  nps-stream          %10.0f answers/s, %6.2f CPU s (%.2f µs per answer)\n' \
        "$nrate" "$ncpu" "$(echo "$ncpu * 1000000 / $N" | bc -l)"
      printf '  ratio %s, %s: %.2fx the rate, %.1fx the CPU per answer\n' "$load" "$timeline" \
        "$(echo "$nrate / $rate" | bc -l)" "$(echo "$ncpu / $cpu" | bc -l)"
    } >>"$work/summary"
    kill -9 "${pids[0]}" 2>/dev/null || true
    pids=()
  done
  done
  cat "$work/summary"
}

# One nps-stream round over the loaded answers: appends its rate to
# $work/$name and its CPU seconds to $work/${name}_cpu.
nps_round() { # name, round, extra args...
  local name=$1 r=$2
  shift 2
  topic_create "alerts-$name-$r"
  run_nps "bench-$name-$r" "nps-$name-$r.log" --alerts-topic "alerts-$name-$r" "$@"
  python3 benches/support/steady.py "$nps" "$mport" "$N" >"$work/${name}_steady" &
  local steady=$!
  end=$("$PROBE" committed "$brokers" "bench-$name-$r" survey-responses "$N")
  cpu_of "$nps" >>"$work/${name}_cpu"
  wait "$steady"
  awk '{ print $2 }' "$work/${name}_steady" >>"$work/${name}_per_answer"
  # user and system CPU seconds, and peak resident MiB, for the round's line.
  awk '{ printf "user %.2f sys %.2f", $14 / 100, $15 / 100 }' "/proc/$nps/stat" >"$work/${name}_detail"
  awk '/VmHWM/ { printf " peak %.0f MiB", $2 / 1024 }' "/proc/$nps/status" >>"$work/${name}_detail"
  kill -TERM "$nps"; wait "$nps" 2>/dev/null || true
  start=$("$PROBE" first-emitted "$brokers" "alerts-$name-$r")
  echo "$N * 1000 / ($end - $start)" | bc -l >>"$work/$name"
}

themes() {
  [ "${BROKER:-tansu}" = tansu ] || { echo "themes runs on Tansu only" >&2; exit 1; }
  describe
  local share=${COMMENTS:-0.40} r
  start_broker
  "$PROBE" load "$brokers" survey-responses "$N" 0.20 "$share"
  : >"$work/off"; : >"$work/off_cpu"; : >"$work/on"; : >"$work/on_cpu"
  : >"$work/off_per_answer"; : >"$work/on_per_answer"
  for r in $(seq "$ROUNDS"); do
    # Each pair runs in the other order from the one before (off, on;
    # on, off; …), so that a broker slowing or speeding up over the run
    # weighs on both alike.
    if [ $((r % 2)) = 1 ]; then
      nps_round off "$r" --themes off
      nps_round on "$r"
    else
      nps_round on "$r"
      nps_round off "$r" --themes off
    fi
    printf 'round %s: themes off %.0f/s %.2f CPU s, %.2f µs per answer consuming (%s); on %.0f/s %.2f CPU s, %.2f µs (%s)\n' "$r" \
      "$(tail -1 "$work/off")" "$(tail -1 "$work/off_cpu")" "$(tail -1 "$work/off_per_answer")" "$(cat "$work/off_detail")" \
      "$(tail -1 "$work/on")" "$(tail -1 "$work/on_cpu")" "$(tail -1 "$work/on_per_answer")" "$(cat "$work/on_detail")"
  done
  local off=$(median <"$work/off") off_cpu=$(median <"$work/off_cpu") off_each=$(median <"$work/off_per_answer")
  local on=$(median <"$work/on") on_cpu=$(median <"$work/on_cpu") on_each=$(median <"$work/on_per_answer")
  printf 'ordinary (20%% detractors), a comment on %s of %s answers, %s partitions, median of %s rounds:\n' \
    "$share" "$N" "$PARTITIONS" "$ROUNDS"
  printf '  --themes off  %10.0f answers/s, %6.2f CPU s to the commit (%.2f µs per answer), %.2f µs per answer consuming\n' \
    "$off" "$off_cpu" "$(echo "$off_cpu * 1000000 / $N" | bc -l)" "$off_each"
  printf '  themes on     %10.0f answers/s, %6.2f CPU s to the commit (%.2f µs per answer), %.2f µs per answer consuming\n' \
    "$on" "$on_cpu" "$(echo "$on_cpu * 1000000 / $N" | bc -l)" "$on_each"
  printf '  themes cost %+.1f%% CPU per answer consuming (%+.1f%% to the commit), %+.1f%% rate\n' \
    "$(echo "($on_each / $off_each - 1) * 100" | bc -l)" \
    "$(echo "($on_cpu / $off_cpu - 1) * 100" | bc -l)" "$(echo "($on / $off - 1) * 100" | bc -l)"
}

latency() {
  start_broker
  count=$((RATE * SECONDS_LIVE))
  run_nps bench-latency latency.log ${NPS_ARGS:-}
  until [ "$(metric "$mport" nps_ready)" = "1" ]; do sleep 0.2; done
  # The second baseline, beside nps-stream: consume and forward an
  # alert-sized record per detractor, its consumer given the same -X
  # properties as nps-stream's.
  [ "${BROKER:-tansu}" = mock ] || topic_create forwarded-latency
  local props=() a
  set -- ${NPS_ARGS:-}
  while [ $# -gt 0 ]; do
    a=$1; shift
    if [ "$a" = -X ] && [ $# -gt 0 ]; then props+=("$1"); shift; fi
  done
  "$PROBE" forward "$brokers" survey-responses forwarded-latency "$count" "${props[@]}" >"$work/forward.out" &
  pids+=("$!")
  # Reads the alerts of both as they come, until 5 s pass without one.
  "$PROBE" latency "$brokers" nps-detractor-alerts survey-responses 5 forwarded-latency >"$work/latency.out" &
  probe=$!
  pids+=("$probe")
  # Both consumers join their groups before the answers start.
  sleep 5
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
  # The storm load by default (SHARE=0.20 for ordinary traffic).
  "$PROBE" load "$brokers" survey-responses "$N" "${SHARE:-0.64}" ${COMMENTS:-}
  local data=${PERF_DATA:-$work/perf.data}
  wrap=(perf record -F ${PERF_FREQ:-499} --call-graph dwarf,16384 -o "$data" --)
  run_nps bench-profile profile.log --snapshot-interval 10s ${NPS_ARGS:-}
  wrap=()
  "$PROBE" committed "$brokers" bench-profile survey-responses "$N" >/dev/null
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
  themes) themes ;;
  *) throughput; latency ;;
esac
