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
source "$(dirname "$0")/common.sh"
N=${N:-200000}
PARTITIONS=${PARTITIONS:-1}
mport=$(free_port)

start_tansu "$PARTITIONS" 1
"$BIN" send --brokers "$brokers" --generate --history "$N" --count 0 2>/dev/null

start() { # log, snapshot interval, state topic
  RUST_LOG=info,nps_stream::pipeline=debug "$BIN" run --brokers "$brokers" --group-id bench \
    --metrics-addr "127.0.0.1:$mport" --snapshot-interval "$2" --state-topic "$3" \
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
restored() { [ "$(metric "$mport" nps_state_restores_total)" != "0" ] && [ "$(metric "$mport" nps_state_restoring_partitions)" = "0" ]; }
now() { date +%s.%N; }

# Live: every answer processed (alerts, dead letters, commits).
t0=$(now)
start live.log 1h bench-state
wait_for "live processing" '[ "$(metric "$mport" nps_events_consumed_total)" = "$N" ]'
live=$(echo "$(now) - $t0" | bc)
sleep 2 # a commit
# Stopped in order (Tansu does not hand a kill -9'd member's partitions to
# the next one: docs/operations.md, Known issues): it commits and writes
# its snapshots to bench-state.
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

# (a) No snapshot in the state topic it reads: rebuilt by replay.
start replay.log 1h bench-empty-state
wait_for "rebuild" restored
replay_s=$(metric "$mport" nps_state_last_restore_seconds)
replayed=$(metric "$mport" nps_state_replayed_total)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true  # writes the shutdown snapshot

# (b) From the first run's shutdown snapshot.
start snapshot.log 1h bench-state
wait_for "snapshot restore" restored
snap_s=$(metric "$mport" nps_state_last_restore_seconds)
snap_bytes=$(grep -o 'bytes=[0-9]*' "$work/snapshot.log" | head -1 | cut -d= -f2)
wait_for "gauges" '[ "$(metric "$mport" nps_engine_keys)" != "0" ]'
keys=$(metric "$mport" nps_engine_keys)
segments=$(metric "$mport" nps_engine_segment_states)
ids=$(metric "$mport" nps_dedup_ids)
kill -TERM "$pid"; wait "$pid" 2>/dev/null || true

printf '%s; tansu memory storage; %s answers on %s partition(s)\n' \
  "$(machine)" "$N" "$PARTITIONS"
printf 'live processing:        %8.0f answers/s (%.2f s)\n' "$(echo "$N / $live" | bc -l)" "$live"
printf 'rebuild by replay:      %8.0f answers/s (%.0f replayed in %.2f s)\n' \
  "$(echo "$replayed / $replay_s" | bc -l)" "$replayed" "$replay_s"
printf 'restore from snapshot:  %8.3f s (last partition; %s bytes; in all %.0f keys, %.0f segments, %.0f dedup ids)\n' \
  "$snap_s" "${snap_bytes:-?}" "$keys" "$segments" "$ids"
