#!/usr/bin/env bash
# Stops the test cluster and removes its containers and addresses. Logs stay in
# .e2e/logs for diagnosis; state (etcd data, PKI) is removed.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

for c in node-agent kube-controller-manager kube-apiserver etcd; do
  pid=$(cat "$STATE/pids/$c" 2>/dev/null) || continue
  kill "$pid" 2>/dev/null && for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
  rm -f "$STATE/pids/$c"
done
if command -v podman >/dev/null; then
  ids=$(podman --runtime runc --cgroup-manager=cgroupfs ps -aq --filter label=io.porthole.node 2>/dev/null)
  [[ -n $ids ]] && podman --runtime runc --cgroup-manager=cgroupfs rm -f -t 0 $ids >/dev/null 2>&1
fi
for addr in $(ip -o -4 addr show dev lo | awk '{print $4}' | grep -E '^10\.(96|200)\.'); do
  ip addr del "$addr" dev lo 2>/dev/null
done
ip route del local "$SERVICE_CIDR" dev lo 2>/dev/null
ip route del local "$FAKE_POD_CIDR" dev lo 2>/dev/null
ip netns del "$BROWSER_NETNS" 2>/dev/null
rm -rf "$STATE/etcd" "$STATE/node" "$STATE/pki" "$KUBECONFIG_PATH" "$STATE/node-agent.mode"
log "cluster down (logs kept in $STATE/logs)"
