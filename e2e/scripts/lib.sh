# Shared settings for the e2e scripts: versions, cache and state paths, logging.
# shellcheck shell=bash
E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$E2E/.." && pwd)

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
HELM_VERSION=v3.21.4

# Expensive builds live outside the work tree so a warm machine reuses them.
CACHE=${PORTHOLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/porthole}
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
HELM_BIN=$CACHE/helm-$HELM_VERSION-k8s-$K8S_VERSION

# Cluster state: certificates, etcd data, component logs, kubeconfig.
STATE=${PORTHOLE_STATE:-$ROOT/.e2e}
KUBECONFIG_PATH=$STATE/kubeconfig

log() { printf '\033[1m[porthole]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Test network: the node's address (also the hypervisor host of the test VMs)
# and the Service range. Both live on the host's loopback interface.
NODE_IP=10.200.0.1
SERVICE_CIDR=10.96.0.0/16
# Addresses of the node agent's fake proxy pods (--fake-containers, the
# control-plane benchmark only); podman's own pods are in 10.88.0.0/16.
FAKE_POD_CIDR=10.89.0.0/16
BROWSER_NETNS=porthole-browser
KUBERNETES_SERVICE_IP=10.96.0.1
APISERVER_PORT=6443

kubectl() { "$K8S_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }

# Writes a kubeconfig for a client certificate in $STATE/pki.
write_kubeconfig() { # file user
  local pki=$STATE/pki
  cat > "$1" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: porthole-test
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $2
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: porthole-test
  context: {cluster: porthole-test, user: $2}
current-context: porthole-test
KUBECONFIG
}

# Polls a command until it succeeds or the deadline passes.
wait_for() { # seconds description command...
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "timed out after waiting for $what"
    sleep 0.2
  done
}
