#!/usr/bin/env bash
# The e2e run `make e2e` does on a cluster that is up with porthole installed:
# every test file in parallel, then the tests that restart or upgrade the
# operator (module `disruptive`) one at a time, then the secret scan over
# everything the run logged, recorded as Events or wrote to status. A secret
# collector watches the cluster's Secrets for the whole run.
set -uo pipefail
. "$(dirname "$0")/lib.sh"
bin=${CARGO_TARGET_DIR:-$ROOT/target}/debug
export KUBECONFIG=$KUBECONFIG_PATH
# A failing test's error is its chain of contexts; a backtrace under each one
# would push the message itself out of the tail of the log CI shows.
export RUST_LIB_BACKTRACE=0

rm -rf "$STATE/secrets" "$STATE/reliability"
"$bin/secret-scan" collect &
collector=$!
trap 'kill $collector 2>/dev/null' EXIT

status=0
cargo test --no-fail-fast -p porthole-e2e -- --test-threads=4 --skip disruptive:: || status=1
cargo test --no-fail-fast -p porthole-e2e -- --test-threads=1 disruptive:: || status=1
kill "$collector" 2>/dev/null
log "scanning logs, Events and status for secrets"
"$bin/secret-scan" scan || status=1
exit $status
