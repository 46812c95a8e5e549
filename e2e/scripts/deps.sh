#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine. Idempotent.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

packages=(podman runc qemu-system-x86 socat openssl curl iproute2 iptables netavark aardvark-dns musl-tools
  containernetworking-plugins uidmap)
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
rustup target list --installed | grep -qx x86_64-unknown-linux-musl || rustup target add x86_64-unknown-linux-musl
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

# --- begin: third-party WebSocket clients for the proxy's standalone tests ---
# proxy/tests/websockify_clients.rs drives the proxy with real clients: Python's
# `websockets` (Debian's python3-websockets, for /usr/bin/python3) and websocat,
# which Debian does not package: built once with cargo and cached by version.
WEBSOCAT_VERSION=1.14.1
ws_packages=(python3 python3-websockets libssl-dev pkg-config)
ws_missing=()
for p in "${ws_packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || ws_missing+=("$p"); done
if ((${#ws_missing[@]})); then
  log "installing ${ws_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${ws_missing[@]}" >/dev/null
fi
WEBSOCAT_ROOT=$CACHE/websocat-$WEBSOCAT_VERSION
if [[ ! -x $WEBSOCAT_ROOT/bin/websocat ]]; then
  log "building websocat $WEBSOCAT_VERSION into $WEBSOCAT_ROOT (once)"
  cargo install websocat --version "=$WEBSOCAT_VERSION" --locked --root "$WEBSOCAT_ROOT" --quiet
fi
# --- end: third-party WebSocket clients ---
