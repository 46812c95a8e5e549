#!/usr/bin/env bash
# `make demo`: with the cluster up and porthole installed, starts a QEMU VM, opens
# a ConsoleSession on it and prints the URL. Ctrl-C ends the demo and cleans up.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

vm_pid=""
cleanup() {
  set +e # clean up as much as possible, whatever already went away
  log "cleaning up"
  kubectl delete -f "$ROOT/examples/vnc-session.yaml" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete -f "$ROOT/examples/vnc-hypervisor.yaml" --ignore-not-found >/dev/null 2>&1 || true
  [[ -n $vm_pid ]] && kill "$vm_pid" 2>/dev/null
  "$(dirname "$0")/cluster-down.sh"
}
trap cleanup EXIT

log "starting a QEMU VM with its console on $NODE_IP:5910"
qemu-system-x86_64 -nodefaults -no-user-config -display none -vga std -m 64 \
  -machine accel=kvm:tcg -vnc "$NODE_IP:10" &
vm_pid=$!

log "creating the Hypervisor and the ConsoleSession (examples/)"
kubectl apply -f "$ROOT/examples/vnc-hypervisor.yaml" -f "$ROOT/examples/vnc-session.yaml" >/dev/null
log "waiting for the session to become Ready (proxy pod starting)"
kubectl wait --for=condition=Ready consolesession/demo --timeout=120s >/dev/null
url=$(kubectl get consolesession demo -o jsonpath='{.status.url}')
for image in operator proxy; do
  log "image porthole/$image: $(podman image inspect "localhost/porthole/$image:dev" --format '{{.Size}}' | numfmt --to=iec)"
done
cat <<MSG

  The console is ready. Open this URL in a browser on this machine:

    $url

  kubectl:  export KUBECONFIG=$KUBECONFIG_PATH; kubectl get consolesessions
  Press Ctrl-C to stop the demo and clean up.

MSG
wait "$vm_pid"
