#!/usr/bin/env bash
# Starts the test cluster: etcd, kube-apiserver (RBAC on), kube-controller-manager
# and the porthole node agent, as host processes. Idempotent: a healthy cluster is
# left alone. Kubeconfig: .e2e/kubeconfig. Logs: .e2e/logs/.
#
# PORTHOLE_FAKE_CONTAINERS=1: the node agent runs in its fake-containers mode,
# for the control-plane benchmark only (bench/bench.sh): porthole's proxy pods
# are reported Running and Ready at an address in $FAKE_POD_CIDR without
# running anything; every other pod, the operator's too, runs for real.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"

case ${PORTHOLE_FAKE_CONTAINERS:-} in
  '' | 0 | n | no | f | false | off) agent_mode=normal ;;
  *) agent_mode=fake-containers ;;
esac

healthy() {
  [[ -f $KUBECONFIG_PATH ]] && kubectl get --raw /readyz >/dev/null 2>&1 &&
    [[ $(cat "$STATE/node-agent.mode" 2>/dev/null || echo normal) == "$agent_mode" ]] &&
    for c in etcd kube-apiserver kube-controller-manager node-agent; do
      kill -0 "$(cat "$STATE/pids/$c" 2>/dev/null)" 2>/dev/null || return 1
    done
}
if healthy; then
  log "cluster already up (kubeconfig: $KUBECONFIG_PATH)"
  exit 0
fi
"$here/cluster-down.sh" >/dev/null 2>&1 || true

"$here/build-controlplane.sh" etcd
"$here/build-controlplane.sh" k8s
agent=${CARGO_TARGET_DIR:-$ROOT/target}/debug/porthole-node-agent
[[ -x $agent ]] || (cd "$ROOT" && cargo build -q -p porthole-node-agent)
"$here/certs.sh"
mkdir -p "$STATE/pids" "$STATE/logs"
write_kubeconfig "$KUBECONFIG_PATH" admin
write_kubeconfig "$STATE/controller-manager.kubeconfig" controller-manager
ip addr add "$NODE_IP/32" dev lo 2>/dev/null || true
# Every ClusterIP is local: the node agent's service proxy binds to them
# without adding an address per Service.
ip route replace local "$SERVICE_CIDR" dev lo
# A network namespace for the browser tests' Chromium (e2e/browser/chromium-netns.sh):
# it reaches the host through a veth, and no pod's veth coming or going disturbs it.
if [[ ! -e /run/netns/$BROWSER_NETNS ]]; then
  ip netns add "$BROWSER_NETNS"
  ip link add pb-host type veth peer name pb-browser
  ip link set pb-browser netns "$BROWSER_NETNS"
  ip addr add 10.201.0.1/30 dev pb-host
  ip link set pb-host up
  ip netns exec "$BROWSER_NETNS" ip addr add 10.201.0.2/30 dev pb-browser
  ip netns exec "$BROWSER_NETNS" ip link set pb-browser up
  ip netns exec "$BROWSER_NETNS" ip link set lo up
  ip netns exec "$BROWSER_NETNS" ip route add default via 10.201.0.1
fi

start() { # name command...
  local name=$1
  shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 < /dev/null &
  echo $! >"$STATE/pids/$name"
}

pki=$STATE/pki
log "starting etcd"
start etcd "$ETCD_BIN/etcd" --data-dir "$STATE/etcd" --unsafe-no-fsync \
  --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
  --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
  --initial-cluster default=http://127.0.0.1:2380 --name default
wait_for 30 etcd curl -sf http://127.0.0.1:2379/health

log "starting kube-apiserver $K8S_VERSION"
start kube-apiserver "$K8S_BIN/kube-apiserver" \
  --etcd-servers=http://127.0.0.1:2379 \
  --bind-address=0.0.0.0 --advertise-address="$NODE_IP" --secure-port="$APISERVER_PORT" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --authorization-mode=RBAC \
  --enable-admission-plugins=OwnerReferencesPermissionEnforcement \
  --service-account-issuer=https://kubernetes.default.svc \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range="$SERVICE_CIDR" \
  --allow-privileged=true \
  --enable-priority-and-fairness=false \
  --profiling=false
wait_for 90 "kube-apiserver /readyz" kubectl get --raw /readyz

log "starting kube-controller-manager"
# The persistent-volume controllers bind claims to static (hostPath) volumes, as
# recorded sessions need, and remove the protection finalizers the API server's
# admission adds to every claim and volume (without them, neither is ever deleted).
start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
  --kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
  --controllers=garbage-collector-controller,namespace-controller,clusterrole-aggregation-controller,job-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,endpointslice-controller,endpoints-controller,persistentvolume-binder-controller,persistentvolumeclaim-protection-controller,persistentvolume-protection-controller \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --use-service-account-credentials=true \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port=10257

agent_flags=()
if [[ $agent_mode == fake-containers ]]; then
  # Nothing listens at fake pods' addresses: routed to the host itself, a
  # connection there (the operator's viewer reads) is refused at once, as a
  # real proxy would answer at once. (A prohibit route would not do: the
  # kernel rate-limits its ICMP errors, and most connects would time out.)
  ip route replace local "$FAKE_POD_CIDR" dev lo
  if ss -Hltn 'sport = :8080' | grep -qE '(\*|0\.0\.0\.0|\[::\]):8080'; then
    log "warning: something listens on port 8080 of every host address: fake pods' viewer reads reach it"
  fi
  agent_flags=(--fake-containers)
  log "starting the porthole node agent with FAKE CONTAINERS (proxy pods are not run; benchmark only)"
else
  log "starting the porthole node agent"
fi
echo "$agent_mode" >"$STATE/node-agent.mode"
start node-agent "$agent" --kubeconfig "$KUBECONFIG_PATH" \
  --node-name porthole-node --node-ip "$NODE_IP" --state-dir "$STATE/node" --log-dir "$STATE/logs/pods" \
  "${agent_flags[@]}"

wait_for 60 "the default ServiceAccount" kubectl -n default get serviceaccount default
wait_for 60 "the node to be Ready" kubectl wait --for=condition=Ready node/porthole-node --timeout=1s
log "cluster up: export KUBECONFIG=$KUBECONFIG_PATH ($(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1))"
