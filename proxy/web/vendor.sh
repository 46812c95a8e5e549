#!/bin/sh
# Installs the console page's npm dependencies (noVNC) exactly as
# package-lock.json pins them, for build.rs to embed in the binary.
# Idempotent: does nothing when node_modules already matches the lockfile.
set -eu
cd "$(dirname "$0")"

stamp=node_modules/.porthole-lock
lock=$(cksum < package-lock.json)
if [ -f node_modules/@novnc/novnc/core/rfb.js ] && [ -f "$stamp" ] &&
    [ "$(cat "$stamp")" = "$lock" ]; then
    exit 0
fi
# --ignore-scripts: nothing from the registry runs on the build machine.
npm ci --ignore-scripts --no-audit --no-fund
echo "$lock" > "$stamp"
