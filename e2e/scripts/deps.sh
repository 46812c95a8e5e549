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

# --- begin: browser end-to-end tests (e2e/browser, e2e/suite/tests/browser.rs) ---
# Debian's Chromium, driven by playwright-core at the exact version in
# e2e/browser/package-lock.json. Playwright never downloads a browser of its own.
browser_missing=()
dpkg -s chromium >/dev/null 2>&1 || browser_missing+=(chromium)
command -v node >/dev/null 2>&1 || browser_missing+=(nodejs)
command -v npm >/dev/null 2>&1 || browser_missing+=(npm)
if ((${#browser_missing[@]})); then
  log "installing ${browser_missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${browser_missing[@]}" >/dev/null
fi
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' ||
  die "the browser tests need Node.js 20 or later (playwright-core), found $(node --version)"
browser_stamp=$E2E/browser/node_modules/.porthole-lock
browser_lock=$(cksum < "$E2E/browser/package-lock.json")
if [[ ! -f $browser_stamp || $(cat "$browser_stamp") != "$browser_lock" ]]; then
  log "installing the browser driver's npm packages (npm ci in e2e/browser)"
  # --ignore-scripts: nothing from the registry runs here.
  (cd "$E2E/browser" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$browser_lock" > "$browser_stamp"
fi
# --- end: browser end-to-end tests ---
