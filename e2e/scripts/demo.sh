#!/usr/bin/env bash
# `make demo`, after the cluster is up and porthole installed by the chart: starts
# the Proxmox VE simulator with a real QEMU VM (VMID 101 on node pve1), registers
# it with examples/proxmox-hypervisor.yaml (only the site's values replaced: URL,
# password, certificate fingerprint), opens the example's ConsoleSession and prints
# its URL. Runs until interrupted (Ctrl-C, SIGTERM), then cleans everything up.
#
# For programs driving the demo (e2e/suite/src/bin/demo-check.rs), the last line of
# stdout is the URL; stderr carries the progress. $STATE/demo/ holds the
# simulator's ready.json (URL, CA) and its log.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

DEMO=$STATE/demo
SIM_PORT=8006
EXAMPLE=$ROOT/examples/proxmox-hypervisor.yaml
sim_pid=""
manifests=""

cleanup() {
  set +e # clean up as much as possible, whatever already went away
  log "cleaning up"
  [[ -n $manifests ]] && kubectl delete -f "$manifests" --ignore-not-found --wait=false >/dev/null 2>&1
  if [[ -n $sim_pid ]]; then
    kill "$sim_pid" 2>/dev/null # the simulator stops its VMs on SIGTERM
    for _ in $(seq 100); do kill -0 "$sim_pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$sim_pid" 2>/dev/null
  fi
  "$(dirname "$0")/cluster-down.sh"
  log "demo stopped"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rm -rf "$DEMO"
mkdir -p "$DEMO/sim"
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+')

log "building the Proxmox VE simulator (e2e/pve-sim)"
(cd "$ROOT" && cargo build -q -p porthole-pve-sim)
sim=${CARGO_TARGET_DIR:-$ROOT/target}/debug/porthole-pve-sim

# The simulator plays a current Proxmox VE: the user holds only VM.Console, as
# the example's comment tells a real cluster's administrator to set up.
cat >"$DEMO/pve-sim.yaml" <<YAML
listen: "$NODE_IP:$SIM_PORT"
behaviour: B
node: pve1
users:
  - {id: "porthole@pve", password: "$password", privileges: {"/vms": [VM.Console]}}
vms:
  - {vmid: 101, kind: qemu, running: true, name: demo}
YAML
log "starting the Proxmox VE simulator on https://$NODE_IP:$SIM_PORT with QEMU VM 101"
"$sim" --config "$DEMO/pve-sim.yaml" --state-dir "$DEMO/sim" >"$DEMO/pve-sim.log" 2>&1 &
sim_pid=$!
log "waiting for the simulator and its VM (log: $DEMO/pve-sim.log)"
deadline=$((SECONDS + 60))
until [[ -f $DEMO/sim/ready.json ]]; do
  kill -0 "$sim_pid" 2>/dev/null || die "the simulator exited: $(tail -5 "$DEMO/pve-sim.log")"
  ((SECONDS < deadline)) || die "timed out waiting for the simulator to become ready"
  sleep 0.2
done
sim_url=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["url"])' <"$DEMO/sim/ready.json")
fingerprint=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint_sha256"])' <"$DEMO/sim/ready.json")

# The example as a site uses it: only the values of the site change.
manifests=$DEMO/proxmox.yaml
sed -e "s|https://pve1.example.com:8006|$sim_url|" \
  -e "s|password: change-me|password: \"$password\"|" \
  -e "s|fingerprintSHA256: \".*\"|fingerprintSHA256: \"$fingerprint\"|" \
  "$EXAMPLE" >"$manifests"
for value in "$sim_url" "$password" "$fingerprint"; do
  grep -qF -- "$value" "$manifests" || die "$EXAMPLE changed shape: the demo could not set its values"
done

log "registering the simulator: Secret, Hypervisor pve and ConsoleSession default/pve-demo ($EXAMPLE)"
kubectl apply -f "$manifests" >/dev/null
log "waiting for ConsoleSession pve-demo to become Ready (the proxy pod starting)"
if ! kubectl wait --for=condition=Ready consolesession/pve-demo --timeout=120s >/dev/null; then
  kubectl get consolesession pve-demo -o wide >&2
  die "the session did not become Ready: kubectl describe consolesession pve-demo"
fi
url=$(kubectl get consolesession pve-demo -o jsonpath='{.status.url}')
for image in operator proxy; do
  log "image porthole/$image: $(podman --runtime runc --cgroup-manager=cgroupfs image inspect "localhost/porthole/$image:${IMAGE_TAG:-dev}" --format '{{.Size}}' | numfmt --to=iec)"
done
cat >&2 <<MSG

  The console of Proxmox VM 101 (simulated, a real QEMU) is ready. Open this URL
  in a browser on this machine:

    $url

  kubectl:  export KUBECONFIG=$KUBECONFIG_PATH; kubectl get consolesessions
  Press Ctrl-C to stop the demo and clean up.

MSG
echo "$url"
log "running until interrupted"
wait "$sim_pid" || die "the simulator stopped: $(tail -5 "$DEMO/pve-sim.log")"
