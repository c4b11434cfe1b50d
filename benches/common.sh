# Sourced by the end-to-end benchmark scripts (e2e.sh, memory.sh,
# restore.sh): the release binary, a scratch directory and the processes to
# kill on exit, free ports, a Tansu broker with the service's topics, the
# machine's description, and sums over nps-stream's /metrics.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$HOME/.cargo/bin:$PATH"

# NPS_BIN: measure another build instead (e.g. one made with
# `--no-default-features --features tls`, glibc's malloc instead of
# jemalloc).
if [ -z "${NPS_BIN:-}" ]; then
  cargo build --release --quiet --bin nps-stream
fi
BIN=${NPS_BIN:-$PWD/target/release/nps-stream}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_tansu() { # input partitions, alerts partitions: sets $brokers
  local port
  port=$(free_port)
  brokers=127.0.0.1:$port
  tansu broker --listener-url "tcp://$brokers" --advertised-listener-url "tcp://$brokers" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  for t in "survey-responses:$1" "nps-detractor-alerts:$2" survey-responses-dlq:1; do
    tansu topic create --broker "tcp://$brokers" --partitions "${t#*:}" --config retention.ms=604800000 "${t%%:*}" >/dev/null
  done
}

machine() { # one line: architecture, cores, CPU model, memory
  printf 'machine: %s, %s cores (%s), %s GiB' \
    "$(uname -m)" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" \
    "$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)"
}

metric() { # port, name [, label filter]: the sum of the matching samples
  # (integral sums print as integers, others with 6 decimals). The value is
  # the last field: label values may hold spaces.
  # Before the listener is up, the sum is 0 (not an error under set -e).
  { curl -s "http://127.0.0.1:$1/metrics" || true; } | awk -v n="$2" -v f="${3:-}" \
    '$0 ~ "^"n"({| )" && index($0, f) { s += $NF } END { printf (s == int(s) ? "%.0f\n" : "%.6f\n"), s }'
}
