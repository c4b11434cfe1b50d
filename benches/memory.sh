#!/usr/bin/env bash
# Process memory (RSS) of nps-stream on a local Tansu broker:
#
# 1. Per key: STEP_ANSWERS answers (default 200,000) over 20 keys, which
#    brings the Kafka clients' buffers and the allocator to their peak;
#    then 5 steps of as many answers, each over 2,000 new products ×
#    regions (10,000 keys in all), spread over the last 30 days so all 4
#    windows hold data. RSS after each step; the bytes per key are the
#    least-squares slope of RSS over keys across the steps, so client
#    buffers and allocator peaks are outside the figure. Dedup is off here
#    (--dedup-max-ids 0) so the figure is the windows', the key table's
#    and the metric series'; phase 3 runs with the default dedup.
# 2. Cardinality guard: then twice 1,000,000 answers over the existing keys
#    in the last hour (the first fills those keys' newest buckets; the
#    second is the baseline: what a million answers leave behind in client
#    buffers and the allocator), then 1,000,000 with distinct bogus product
#    names (the guard folds them into one overflow segment); RSS after
#    each.
# 3. Steady run: a second instance consumes `send --generate --rate RATE`
#    (default 2,000/s) for DURATION seconds (default 600); RSS is sampled
#    every 30 s after the first two minutes; prints the samples and
#    max/min. The dedup horizon is STEADY_HORIZON (default 1m) so that the
#    dedup set reaches its steady size within the warm-up (with the 24h
#    default it grows for a day, up to --dedup-max-ids per partition, about
#    22 bytes per id); everything else is at its default.
#
# 4. Breakdowns: a third instance with a `team` breakdown (max_values
#    500) and an `agent` one (max_values 5,000, off /metrics), dedup off;
#    STEP_ANSWERS answers over 20 keys without attributes, then 5 steps
#    of STEP_ANSWERS / 5 answers over 100 new teams each (500 in all),
#    then 5 over 1,000 new agents each (5,000), spread over the last 30
#    days; RSS after each step; the bytes per value are the slope of RSS
#    over values (4 partitions: a value has a state in each that holds
#    it).
#
# SKIP_LOAD=1 runs only phases 3 and 4 (DURATION=0 skips 3,
# SKIP_BREAKDOWNS=1 skips 4). HEAPTRACK=1 runs phase 1 only, under
# heaptrack (Debian package heaptrack), and prints where the peak heap is
# held, with bytes per key (benches/heap_sites.py).
#
#   bash benches/memory.sh
#   DURATION=120 bash benches/memory.sh
#
# Needs tansu on PATH (bash tests/run-all.sh installs it), curl, python3.
source "$(dirname "$0")/common.sh"
STEP_ANSWERS=${STEP_ANSWERS:-200000}
BOGUS=${BOGUS:-1000000}
RATE=${RATE:-2000}
DURATION=${DURATION:-600}

start_tansu 4 4

# The answers, as JSON lines (protobuf JSON mapping).
python3 - "$work" "$STEP_ANSWERS" "$BOGUS" <<'PY'
import datetime, json, random, sys
work, n_step, n_bogus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(7)
now = datetime.datetime.now(datetime.timezone.utc)
channels = ["CHANNEL_SMS", "CHANNEL_EMAIL", "CHANNEL_CHAT", "CHANNEL_PHONE", "CHANNEL_WEB", "CHANNEL_IN_APP"]
def line(i, prefix, product, region, age_s):
    t = now - datetime.timedelta(seconds=age_s)
    return json.dumps({"responseId": f"{prefix}-{i}", "customerId": f"c-{rng.randrange(100000)}",
        "product": product, "region": region, "channel": rng.choice(channels),
        "score": rng.randrange(11), "respondedAt": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")})
# A warm-up over 20 keys, then 5 steps of 2,000 new keys each.
loads = [("warm", 0, 20)] + [(f"step{j}", 20 + 2000 * (j - 1), 2000) for j in range(1, 6)]
for name, first, count in loads:
    with open(f"{work}/{name}.jsonl", "w") as f:
        for i in range(n_step):
            k = first + i % count
            f.write(line(i, name, f"producto-{k // 20:03d}", f"region-{k % 20:02d}", rng.uniform(60, 29.5 * 86400)) + "\n")
with open(f"{work}/bogus.jsonl", "w") as f:
    for i in range(n_bogus):
        f.write(line(i, "b", f"bogus-{i:07d}", "region-00", rng.uniform(60, 3600)) + "\n")
# The flood's baseline: as many answers, over keys that already exist.
# Twice: the first also fills the buckets of the last hour in every key's
# rings, so the second is what a million answers cost once state is there.
for name in ("control1", "control2"):
    with open(f"{work}/{name}.jsonl", "w") as f:
        for i in range(n_bogus):
            k = i % 10000
            f.write(line(i, name, f"producto-{k // 20:03d}", f"region-{k % 20:02d}", rng.uniform(60, 3600)) + "\n")
PY

rss() { awk '/VmRSS/ { print $2 * 1024 }' "/proc/$1/status"; }
mib() { echo "scale=1; $1 / 1048576" | bc; }
wait_consumed() { # port, count
  until [ "$(metric "$1" nps_events_consumed_total)" -ge "$2" ]; do sleep 0.2; done
  sleep 10.5 # a snapshot round, after which free memory goes back to the OS
}

# 1 and 2.
if [ -z "${SKIP_LOAD:-}" ]; then
mport=$(free_port)
wrap=()
[ -z "${HEAPTRACK:-}" ] || wrap=(heaptrack -o "$work/heap")
# NPS_ARGS: more flags for this instance (e.g. --cases off to leave the
# case tracker's cases, which grow with the alerts, out of the figure).
# shellcheck disable=SC2086
"${wrap[@]}" "$BIN" run --brokers "$brokers" --group-id mem --metrics-addr "127.0.0.1:$mport" \
  --dedup-max-ids 0 ${NPS_ARGS:-} >"$work/mem.log" 2>&1 &
nps=$!
pids+=("$nps")
until [ "$(metric "$mport" nps_ready)" = "1" ]; do sleep 0.2; done
sleep 2
empty=$(rss "$nps")
sent=0
points=()
for load in warm step1 step2 step3 step4 step5; do
  "$BIN" send --brokers "$brokers" -f "$work/$load.jsonl" 2>/dev/null
  sent=$((sent + STEP_ANSWERS))
  wait_consumed "$mport" "$sent"
  points+=("$(metric "$mport" nps_engine_keys) $(rss "$nps") $(metric "$mport" nps_engine_segment_states)")
done
keys=$(metric "$mport" nps_engine_keys)
if [ -n "${HEAPTRACK:-}" ]; then
  kill -TERM "$(pgrep -P "$nps" -x nps-stream)"
  wait "$nps" 2>/dev/null || true
  heaptrack_print -f "$work"/heap*.zst --print-peaks 0 --print-allocators 0 --print-temporary 0 \
    --print-leaks 0 --flamegraph-cost-type peak -F "$work/stacks.txt" | grep -E "^peak heap"
  echo "$keys keys"
  python3 benches/heap_sites.py "$work/stacks.txt" "$keys"
  exit 0
fi
loaded=$(rss "$nps")
segment_states=$(metric "$mport" nps_engine_segment_states)
"$BIN" send --brokers "$brokers" -f "$work/control1.jsonl" 2>/dev/null
wait_consumed "$mport" $((sent + BOGUS))
control1=$(rss "$nps")
"$BIN" send --brokers "$brokers" -f "$work/control2.jsonl" 2>/dev/null
wait_consumed "$mport" $((sent + 2 * BOGUS))
control=$(rss "$nps")
"$BIN" send --brokers "$brokers" -f "$work/bogus.jsonl" 2>/dev/null
wait_consumed "$mport" $((sent + 3 * BOGUS))
flooded=$(rss "$nps")
overflow=$(metric "$mport" nps_cardinality_overflow_total)
keys_after=$(metric "$mport" nps_engine_keys)
kill -TERM "$nps"; wait "$nps" 2>/dev/null || true

printf '%s; tansu 0.6 memory storage on the same machine\n' "$(machine)"
printf 'RSS with no data:            %8s MiB\n' "$(mib "$empty")"
printf 'after %s answers per load, keys, RSS (MiB), per-partition segment states:\n' "$STEP_ANSWERS"
for p in "${points[@]}"; do
  read -r k r st <<<"$p"
  printf '  %6s keys  %8s MiB  %6s states\n' "$k" "$(mib "$r")" "$st"
done
printf '%s\n' "${points[@]}" | awk -v keys="$keys" -v rss="$loaded" '
  { x[NR] = $1; y[NR] = $2; sx += $1; sy += $2 }
  END {
    mx = sx / NR; my = sy / NR
    for (i = 1; i <= NR; i++) { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ^ 2 }
    printf "  per key: %.0f bytes (slope of RSS over keys); first to last step: %.0f; RSS / keys: %.0f\n",
      sxy / sxx, (y[NR] - y[1]) / (x[NR] - x[1]), rss / keys
  }'
printf 'after %s more answers over the same keys, in the last hour: %8s MiB (%+.1f%%)\n' \
  "$BOGUS" "$(mib "$control1")" "$(echo "100 * ($control1 - $loaded) / $loaded" | bc -l)"
printf 'after %s more again (the baseline): %8s MiB (%+.1f%%)\n' \
  "$BOGUS" "$(mib "$control")" "$(echo "100 * ($control - $control1) / $control1" | bc -l)"
printf 'after %s bogus products: %8s MiB (%+.1f%%), %s keys, %s answers in the overflow segment\n' \
  "$BOGUS" "$(mib "$flooded")" "$(echo "100 * ($flooded - $control) / $control" | bc -l)" "$keys_after" "$overflow"

fi

# 4.
if [ -z "${SKIP_BREAKDOWNS:-}" ]; then
python3 - "$work" "$STEP_ANSWERS" <<'PY'
import datetime, json, random, sys
work, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(11)
now = datetime.datetime.now(datetime.timezone.utc)
def line(i, prefix, attributes):
    t = now - datetime.timedelta(seconds=rng.uniform(60, 29.5 * 86400))
    return json.dumps({"responseId": f"{prefix}-{i}", "product": f"producto-{i % 20:02d}",
        "region": "region-00", "channel": "CHANNEL_PHONE", "score": rng.randrange(11),
        "respondedAt": t.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "attributes": attributes})
with open(f"{work}/plain.jsonl", "w") as f:
    for i in range(n):
        f.write(line(i, "plain", {}) + "\n")
# Five steps of 100 new teams (400 answers each), then five of 1,000 new
# agents (40 answers each).
for attr, per_step in (("team", 100), ("agent_id", 1000)):
    for step in range(1, 6):
        with open(f"{work}/{attr}{step}.jsonl", "w") as f:
            for i in range(n // 5):
                v = (step - 1) * per_step + i % per_step
                f.write(line(i, f"{attr}{step}", {attr: f"{attr}-{v:04d}"}) + "\n")
PY
cat >"$work/breakdowns.toml" <<'TOML'
[[breakdowns]]
attribute = "team"
label = "team"
max_values = 500
[[breakdowns]]
attribute = "agent_id"
label = "agent"
max_values = 5000
prometheus = false
TOML
mport=$(free_port)
"$BIN" run --brokers "$brokers" --group-id breakdowns --metrics-addr "127.0.0.1:$mport" \
  --dedup-max-ids 0 --cases off --config "$work/breakdowns.toml" >"$work/breakdowns.log" 2>&1 &
nps=$!
pids+=("$nps")
until [ "$(metric "$mport" nps_ready)" = "1" ]; do sleep 0.2; done
"$BIN" send --brokers "$brokers" -f "$work/plain.jsonl" 2>/dev/null
sent=$STEP_ANSWERS
wait_consumed "$mport" "$sent"
plain=$(rss "$nps")
printf 'breakdowns, 4 partitions, answers over 30 days; 20 keys and %s answers without attributes: %s MiB\n' \
  "$STEP_ANSWERS" "$(mib "$plain")"
for attr in team agent_id; do
  label=${attr%_id}
  points=()
  for step in 1 2 3 4 5; do
    "$BIN" send --brokers "$brokers" -f "$work/$attr$step.jsonl" 2>/dev/null
    sent=$((sent + STEP_ANSWERS / 5))
    wait_consumed "$mport" "$sent"
    points+=("$(metric "$mport" nps_breakdown_values "breakdown=\"$label\"") $(rss "$nps")")
  done
  printf '  %s: values, RSS (MiB):' "$label"
  for p in "${points[@]}"; do read -r v r <<<"$p"; printf ' %s %s;' "$v" "$(mib "$r")"; done
  printf '%s\n' "${points[@]}" | awk -v label="$label" '
    { x[NR] = $1; y[NR] = $2; sx += $1; sy += $2 }
    END {
      mx = sx / NR; my = sy / NR
      for (i = 1; i <= NR; i++) { sxy += (x[i] - mx) * (y[i] - my); sxx += (x[i] - mx) ^ 2 }
      printf "\n  per %s: %.0f bytes (slope of RSS over values)\n", label, sxy / sxx
    }'
done
kill -TERM "$nps"; wait "$nps" 2>/dev/null || true
fi

# 3.
[ "$DURATION" -gt 0 ] || exit 0
mport=$(free_port)
"$BIN" run --brokers "$brokers" --group-id steady --metrics-addr "127.0.0.1:$mport" \
  --auto-offset-reset latest --dedup-horizon "${STEADY_HORIZON:-1m}" >"$work/steady.log" 2>&1 &
nps=$!
pids+=("$nps")
until [ "$(metric "$mport" nps_ready)" = "1" ]; do sleep 0.2; done
"$BIN" send --brokers "$brokers" --generate --history 0 --rate "$RATE" --count $((RATE * DURATION)) 2>/dev/null &
pids+=($!)
sleep 120
samples=()
for _ in $(seq $(((DURATION - 120) / 30))); do
  samples+=("$(rss "$nps")")
  sleep 30
done
samples+=("$(rss "$nps")")
printf 'steady %s answers/s for %s s, RSS every 30 s after the first two minutes (MiB):' "$RATE" "$DURATION"
for s in "${samples[@]}"; do printf ' %s' "$(mib "$s")"; done
echo
printf '%s\n' "${samples[@]}" | sort -g | awk '{ v[NR] = $1 } END { printf "max / min = %.3f\n", v[NR] / v[1] }'
printf 'at the end: %s dedup ids, %s keys, %s answers consumed\n' "$(metric "$mport" nps_dedup_ids)" \
  "$(metric "$mport" nps_engine_keys)" "$(metric "$mport" nps_events_consumed_total)"
