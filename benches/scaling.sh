#!/usr/bin/env bash
# Many instances on one Tansu broker, each holding few keys: do rebalances
# and restores stay bounded as members come and go? (docs/scaling.md)
#
#   bash benches/scaling.sh                 # 32 partitions, up to 8 instances
#   PARTITIONS=64 MEMBERS=12 bash benches/scaling.sh
#
# The demo's generated history of N answers (its few product x region
# keys, over 30 days) is read by one instance, which
# snapshots every partition; then instances join one at a time, and after
# each join the script waits until every member is ready (/readyz 200 on
# all) and nothing restores. Per step it prints: members, the seconds from
# the join to all ready, the partitions restored in that step (from a
# snapshot or rebuilt), the slowest restore of the step, and the state
# topic's records. Then members leave (SIGTERM) one at a time, the same.
# Incremental (cooperative-sticky) assignment, the shipped setting; case
# tracking off, so that the step measures the windows' partitions.
#
# Needs tansu on PATH (bash tests/run-all.sh installs it) and curl.
source "$(dirname "$0")/common.sh"
PARTITIONS=${PARTITIONS:-32}
MEMBERS=${MEMBERS:-8}
N=${N:-200000}

start_tansu "$PARTITIONS" "$PARTITIONS"
"$BIN" send --brokers "$brokers" --generate --history "$N" --count 0 2>/dev/null

ports=()
member_pids=()
join() { # index
  local port
  port=$(free_port)
  "$BIN" run --brokers "$brokers" --group-id scale --metrics-addr "127.0.0.1:$port" \
    --snapshot-interval 5s --cases off --promoters off \
    -X session.timeout.ms=15000 -X partition.assignment.strategy=cooperative-sticky \
    >"$work/member-$1.log" 2>&1 &
  pids+=($!)
  member_pids+=($!)
  ports+=("$port")
}
ready_all() {
  for p in "${ports[@]}"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$p/readyz")" = 200 ] || return 1
    [ "$(metric "$p" nps_state_restoring_partitions)" = 0 ] || return 1
  done
  # Every partition owned by someone.
  local owned=0
  for p in "${ports[@]}"; do owned=$((owned + $(metric "$p" nps_assigned_partitions))); done
  [ "$owned" = "$PARTITIONS" ]
}
restores() { # total restores over the live members, ever (snapshot + rebuild)
  local s=0
  for p in "${ports[@]}"; do s=$((s + $(metric "$p" nps_state_restores_total))); done
  echo "$s"
}
slowest() { # the slowest last restore among the members, seconds
  for p in "${ports[@]}"; do metric "$p" nps_state_last_restore_seconds; done | sort -g | tail -1
}
now() { date +%s.%N; }
step() { # label: waits for all ready, prints one line
  local t0=$1 before=$2 label=$3
  for _ in $(seq 1200); do ready_all && break; sleep 0.1; done
  ready_all || { echo "timed out: $label" >&2; exit 1; }
  local t1
  t1=$(now)
  printf '%-7s %2d members  %6.2f s to all ready  %3d partitions restored  slowest restore %s s\n' \
    "$label" "${#ports[@]}" "$(echo "$t1 - $t0" | bc)" "$(( $(restores) - before ))" "$(slowest)"
}

machine; echo
echo "partitions $PARTITIONS, history $N answers, up to $MEMBERS members"
t0=$(now)
join 0
for _ in $(seq 3000); do [ "$(metric "${ports[0]}" nps_events_consumed_total)" = "$N" ] && break; sleep 0.1; done
step "$t0" 0 "first"
sleep 6 # a snapshot of every partition
for i in $(seq 1 $((MEMBERS - 1))); do
  before=$(restores)
  t0=$(now)
  join "$i"
  step "$t0" "$before" "join"
done
for i in $(seq $((MEMBERS - 1)) -1 1); do
  sleep 6
  kill -TERM "${member_pids[$i]}"
  wait "${member_pids[$i]}" 2>/dev/null || true
  unset 'ports[i]' 'member_pids[i]'
  ports=("${ports[@]}")
  member_pids=("${member_pids[@]}")
  before=$(restores)
  t0=$(now)
  step "$t0" "$before" "leave"
done
