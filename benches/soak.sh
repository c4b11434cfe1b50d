#!/usr/bin/env bash
# Soak with faults (not in CI; about 45 minutes with the defaults):
#
#   bash benches/soak.sh                      # 30 minutes at 2,000 answers/s
#   DURATION=300 RATE=1000 bash benches/soak.sh   # a short rehearsal
#
# Two instances of nps-stream (a third comes and goes) in one group on a
# Tansu broker that keeps its data on disk, a steady stream of answers,
# and faults on a schedule: kill -9 of an instance (twice), the broker
# frozen for 30 s, an instance added and removed. At the end the
# windows summed in Prometheus are compared with a count made from the
# input topic read back, every detractor's alert and every dead letter is
# checked, and each instance's RSS, threads and file descriptors over the
# quiet last part are reported. What it runs and checks: benches/soak.py.
# Figures: docs/reliability.md.
#
# Needs: Prometheus (apt: prometheus), python3 with confluent-kafka and
# tansu on PATH (bash tests/run-all.sh installs both).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
TANSU=${TANSU:-$(command -v tansu)}
PY=${NPS_PYTHON:-$PWD/.venv/bin/python}
cargo build --release --quiet --bin nps-stream
out=target/soak
mkdir -p "$out"
work=$(mktemp -d "$out/run.XXXXXX")
trap 'pkill -9 -P $$ 2>/dev/null || true' EXIT
echo "work directory (logs, samples): $work"
"$PY" benches/soak.py --bin "$PWD/target/release/nps-stream" --tansu "$TANSU" --work "$work" \
  --duration "${DURATION:-1800}" --rate "${RATE:-2000}" --report "$out/report.json"
