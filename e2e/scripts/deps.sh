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
