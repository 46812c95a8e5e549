# Shared settings for the e2e scripts: versions, cache and state paths, logging.
# shellcheck shell=bash
E2E=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=$(cd "$E2E/.." && pwd)

K8S_VERSION=v1.35.4
ETCD_VERSION=v3.6.5
HELM_VERSION=v3.19.0

# Expensive builds live outside the work tree so a warm machine reuses them.
CACHE=${PORTHOLE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/porthole}
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION
HELM_BIN=$CACHE/helm-$HELM_VERSION

# Cluster state: certificates, etcd data, component logs, kubeconfig.
STATE=${PORTHOLE_STATE:-$ROOT/.e2e}
KUBECONFIG_PATH=$STATE/kubeconfig

log() { printf '\033[1m[porthole]\033[0m %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
