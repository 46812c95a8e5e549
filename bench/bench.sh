#!/usr/bin/env bash
# `make bench`: installs what the benchmarks need (idempotent, cached), builds
# the release binaries and runs the driver, which writes bench/results.json,
# docs/benchmarks.md and docs/benchmarks/*.png. BENCH_QUICK=1: a smoke run.
# Arguments go to the data-plane driver (`target/release/porthole-bench --help`).
#
# Two parts: the data plane (porthole-proxy against websockify and socat, on
# loopback), then the control plane (the operator on the Kubernetes test bed:
# `porthole-bench controlplane --help`), which takes the test bed over: it
# builds the images, restarts the test bed twice (normal, then with the node
# agent's fake containers) and stops it at the end. BENCH_ONLY=dataplane or
# BENCH_ONLY=controlplane runs one part; the other's figures stay in
# bench/results.json and the report.
set -euo pipefail
cd "$(dirname "$0")/.."

only=${BENCH_ONLY:-}
case $only in
  '' | dataplane | controlplane) ;;
  *) echo "bench: BENCH_ONLY must be dataplane or controlplane, not $only" >&2; exit 2 ;;
esac

WEBSOCKIFY_VERSION=0.13.0
VENV="${XDG_CACHE_HOME:-$HOME/.cache}/porthole/bench-venv-$WEBSOCKIFY_VERSION"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

# Items 1-5.
dataplane() {
  if ! command -v socat >/dev/null; then
    echo "bench: installing socat"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq socat >/dev/null
  fi

  # perf profiles porthole-proxy when it misses a CPU target; the run goes on
  # without a profile where it cannot be had.
  if ! perf --version >/dev/null 2>&1; then
    echo "bench: installing linux-perf"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; } ||
      echo "bench: no perf; the report goes without profiles"
  fi

  # websockify from PyPI, with numpy (its frame unmasking uses it when present)
  # and matplotlib for the plots.
  if ! "$VENV/bin/python" -c 'import websockify, numpy, matplotlib' 2>/dev/null; then
    echo "bench: installing websockify $WEBSOCKIFY_VERSION, numpy and matplotlib in $VENV"
    rm -rf "$VENV"
    mkdir -p "$(dirname "$VENV")"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$VENV"
    fi
    "$VENV/bin/pip" install -q --disable-pip-version-check \
      "websockify==$WEBSOCKIFY_VERSION" numpy matplotlib
  fi

  cargo build --release -p porthole-proxy -p porthole-bench

  # BENCH_SYMBOLS=1: also build porthole-proxy with symbols (a profile of its
  # own, target/profiling/; a full build) and profile it whatever the verdicts.
  extra=()
  if [ -n "${BENCH_SYMBOLS:-}" ]; then
    cargo build -p porthole-proxy --profile profiling \
      --config 'profile.profiling.inherits="release"' \
      --config 'profile.profiling.strip=false' \
      --config 'profile.profiling.debug="line-tables-only"'
    extra=(--profile always --profile-binary "$TARGET_DIR/profiling/porthole-proxy")
  fi

  "$TARGET_DIR/release/porthole-bench" \
    --porthole "$TARGET_DIR/release/porthole-proxy" \
    --websockify "$VENV/bin/websockify" \
    --python "$VENV/bin/python" \
    "${extra[@]}" "$@"
}

# Items 6-7. The test bed is ours from here on: whatever ran on it stops.
controlplane() {
  local started=$SECONDS
  cargo build --release -p porthole-bench
  cargo build -q -p porthole-node-agent
  make --no-print-directory images
  trap 'e2e/scripts/cluster-down.sh >/dev/null 2>&1 || true' EXIT
  local driver=$TARGET_DIR/release/porthole-bench

  echo "bench: control plane, item 6 (apply to Ready): a fresh test bed, real containers"
  e2e/scripts/cluster-down.sh
  e2e/scripts/cluster-up.sh
  make --no-print-directory install
  "$driver" controlplane apply-to-ready

  echo "bench: control plane, item 7 (scale): a fresh test bed, the node agent's FAKE containers"
  e2e/scripts/cluster-down.sh
  PORTHOLE_FAKE_CONTAINERS=1 e2e/scripts/cluster-up.sh
  make --no-print-directory install
  "$driver" controlplane scale

  e2e/scripts/cluster-down.sh
  trap - EXIT
  echo "bench: the control-plane part took $((SECONDS - started)) s"
}

if [[ $only != controlplane ]]; then
  dataplane "$@"
fi
if [[ $only != dataplane ]]; then
  controlplane
fi
