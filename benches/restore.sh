#!/usr/bin/env bash
# Restore times on a local Tansu broker: how long a partition takes to come
# back to life (a) by replaying its input when there is no usable snapshot,
# (b) from its snapshot, with the live processing rate of the same run as
# the baseline.
#
#   bash benches/restore.sh            # N=200000 answers, 1 partition
#   N=500000 PARTITIONS=4 bash benches/restore.sh
#
# Needs tansu on PATH (bash tests/run-all.sh installs it) and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-200000}
PARTITIONS=${PARTITIONS:-1}
export PATH="$HOME/.cargo/bin:$PATH"

cargo build --release --quiet
BIN=$PWD/target/release/nps-stream
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
kport=$(free_port)
mport=$(free_port)
brokers=127.0.0.1:$kport
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

tansu broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
  --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$kport") 2>/dev/null && break; sleep 0.1; done
for t in survey-responses:$PARTITIONS nps-detractor-alerts:1 survey-responses-dlq:1; do
  tansu topic create --broker "tcp://$brokers" --partitions "${t#*:}" --config retention.ms=604800000 "${t%%:*}" >/dev/null
done
"$BIN" send --brokers "$brokers" --generate --history "$N" --count 0 2>/dev/null

metric() { # name [label filter]: the sum of the matching samples
  curl -s "http://127.0.0.1:$mport/metrics" | awk -v n="$1" -v f="${2:-}" \
    '$1 ~ "^"n"({|$)" && index($1, f) { s += $2 } END { printf "%.6f\n", s }'
}
start() { # log, snapshot interval
  RUST_LOG=info,nps_stream::pipeline=debug "$BIN" run --brokers "$brokers" --group-id bench \
    --metrics-addr "127.0.0.1:$mport" --snapshot-interval "$2" \
    -X session.timeout.ms=6000 >"$work/$1" 2>&1 &
  pid=$!
  pids+=("$pid")
}
wait_for() { # description, shell condition
  for _ in $(seq 1200); do
    if eval "$2"; then return 0; fi
    sleep 0.1
  done
  echo "timed out: $1" >&2
  exit 1
}
restored() { [ "$(metric nps_state_restores_total)" != "0.000000" ] && [ "$(metric nps_state_restoring_partitions)" = "0.000000" ]; }
now() { date +%s.%N; }

# Live: every answer processed (alerts, dead letters, commits).
t0=$(now)
start live.log 1h
wait_for "live processing" '[ "$(metric nps_events_consumed_total)" = "$N.000000" ]'
live=$(echo "$(now) - $t0" | bc)
sleep 2 # a commit
kill -9 "$pid"; wait "$pid" 2>/dev/null || true

# (a) No snapshot was written (1h interval, killed): rebuilt by replay.
start replay.log 1h
wait_for "rebuild" restored
replay_s=$(metric nps_state_last_restore_seconds)
replayed=$(metric nps_state_replayed_total)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true  # writes the shutdown snapshot

# (b) From the shutdown snapshot.
start snapshot.log 1h
wait_for "snapshot restore" restored
snap_s=$(metric nps_state_last_restore_seconds)
snap_bytes=$(grep -o 'bytes=[0-9]*' "$work/snapshot.log" | head -1 | cut -d= -f2)
wait_for "gauges" '[ "$(metric nps_engine_keys)" != "0.000000" ]'
keys=$(metric nps_engine_keys)
segments=$(metric nps_engine_segment_states)
ids=$(metric nps_dedup_ids)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

printf 'machine: %s, %s cores; tansu memory storage; %s answers on %s partition(s)\n' \
  "$(uname -m)" "$(nproc)" "$N" "$PARTITIONS"
printf 'live processing:        %8.0f answers/s (%.2f s)\n' "$(echo "$N / $live" | bc -l)" "$live"
printf 'rebuild by replay:      %8.0f answers/s (%.0f replayed in %.2f s)\n' \
  "$(echo "$replayed / $replay_s" | bc -l)" "$replayed" "$replay_s"
printf 'restore from snapshot:  %8.3f s (last partition; %s bytes; in all %.0f keys, %.0f segments, %.0f dedup ids)\n' \
  "$snap_s" "${snap_bytes:-?}" "$keys" "$segments" "$ids"
