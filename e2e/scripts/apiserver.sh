#!/usr/bin/env bash
# Stops and starts the test bed's kube-apiserver, for fault-injection tests
# (e2e/suite/tests/apiserver.rs). `stop` saves the running apiserver's exact
# command line before stopping it, so `start` runs it again with the very
# arguments cluster-up.sh gave it; its log goes on in .e2e/logs/kube-apiserver.log.
#
#   apiserver.sh stop      SIGTERM, SIGKILL after 5 s, wait until it is gone
#   apiserver.sh start     start it again, wait for /readyz
#   apiserver.sh restart   both
set -euo pipefail
. "$(dirname "$0")/lib.sh"

pidfile=$STATE/pids/kube-apiserver
argsfile=$STATE/kube-apiserver.args

running_pid() {
  local pid
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $(basename "$(readlink "/proc/$pid/exe" 2>/dev/null)") == kube-apiserver ]] || return 1
  echo "$pid"
}

stop() {
  local pid
  pid=$(running_pid) || die "no kube-apiserver runs (see $pidfile): start the cluster first"
  # NUL-separated, as the kernel keeps it: arguments with spaces survive.
  cp "/proc/$pid/cmdline" "$argsfile"
  log "stopping kube-apiserver (pid $pid)"
  # It stops listening at once, then drains long requests for up to a minute:
  # a restart does not wait for that (nor does a crash).
  kill "$pid"
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -9 "$pid" 2>/dev/null || true
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  rm -f "$pidfile"
}

start() {
  running_pid >/dev/null && die "kube-apiserver already runs"
  [[ -s $argsfile ]] || die "no saved command line ($argsfile): run '$0 stop' first"
  local args
  mapfile -d '' args <"$argsfile"
  log "starting kube-apiserver again with its previous arguments"
  # As cluster-up.sh does, but appending to the log it started.
  setsid "${args[@]}" >>"$STATE/logs/kube-apiserver.log" 2>&1 </dev/null &
  echo $! >"$pidfile"
  wait_for 90 "kube-apiserver /readyz" kubectl get --raw /readyz
  log "kube-apiserver ready"
}

case ${1:-} in
  stop) stop ;;
  start) start ;;
  restart) stop && start ;;
  *) die "usage: $0 stop|start|restart" ;;
esac
