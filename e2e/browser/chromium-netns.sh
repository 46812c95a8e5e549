#!/usr/bin/env bash
# Runs Debian's Chromium inside the test bed's browser network namespace
# (made by e2e/scripts/cluster-up.sh). There Chromium sees none of the host's
# link changes: every pod the test bed starts adds a veth on the host, and
# Chromium aborts page loads on any such change (net::ERR_NETWORK_CHANGED).
# ClusterIPs and the node address stay reachable through the namespace's veth.
set -euo pipefail
exec ip netns exec porthole-browser "${PORTHOLE_CHROMIUM_BINARY:-/usr/bin/chromium}" "$@"
