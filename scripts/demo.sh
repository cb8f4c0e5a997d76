#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Brings up the local control plane (unless
# CLUSTER=current), installs the CRD, runs the operator, applies the seed's nginx Deployer at
# 1.7.7, waits until it is Ready, then bumps it to 1.7.8 with short sleeps and shows the canary
# live until it is Done.
#
# Restart safety, live: in the middle of the first wait the operator is killed. The table shows the
# gap, the operator that takes over, and the step moving on at the deadline the operator persisted
# before the kill (status.waitUntil), with the seconds it was late.
#   DEMO_OPERATOR=local   the operator runs here as a process (the default): kill -9, and a new
#                         process DEMO_DOWN_SECONDS (3) later
#   DEMO_OPERATOR=node    the operator's two pods on the local control plane's real nodes (make
#                         deploy, run first: it builds the image and the nodes): kubectl delete pod
#                         of the one holding the Lease; the other takes over
# Without DEMO_OPERATOR, node is chosen when make deploy has put the operator there already (a
# second operator would act on the same Deployer), else local. Leaves the cluster and the operator
# running.
#
#   scripts/demo.sh             run the demo
#   scripts/demo.sh stop        stop the operator the demo started (make cluster-down calls this)
set -euo pipefail
cd "$(dirname "$0")/.."

# kubectl is the pinned build (tests/cluster/build.sh kubectl: built once, beside the control
# plane), not whatever PATH has; KUBECTL, if it names an executable, wins (the Makefile sets it).
kubectl() {
  [ -x "${KUBECTL:-}" ] || eval "$(bash tests/cluster/build.sh kubectl)"
  "$KUBECTL" "$@"
}

CLUSTER=${CLUSTER:-local}
CLUSTER_DIR=${CLUSTER_DIR:-.cluster}
NS=${DEMO_NAMESPACE:-default}
DOWN=${DEMO_DOWN_SECONDS:-3}
MODE=${DEMO_OPERATOR:-}
pidfile=$CLUSTER_DIR/operator.pid
oplog=$CLUSTER_DIR/logs/operator.log
OP_NS=deployer-system

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' Y=$'\e[33m' D=$'\e[2m' R=$'\e[0m'; else B= G= Y= D= R=; fi
say() { printf '%s==> %s%s\n' "$B" "$*" "$R"; }
die() {
  echo "demo: $*" >&2
  exit 1
}

stop_operator() {
  [ -s "$pidfile" ] || return 0
  local pid
  pid=$(cat "$pidfile")
  if [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q deployer-operator; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do [ -e "/proc/$pid" ] || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    echo "demo: stopped the operator (pid $pid)"
  fi
  rm -f "$pidfile"
}

if [ "${1:-}" = stop ]; then
  stop_operator
  exit 0
fi

t0=$(date +%s)
if [ "$CLUSTER" = local ]; then
  say "Local control plane (kube-apiserver, etcd, controller-manager, scheduler, kwok nodes)"
  bash tests/cluster/cluster.sh up
  export KUBECONFIG=$PWD/$CLUSTER_DIR/kubeconfig
else
  say "Using the cluster of KUBECONFIG=${KUBECONFIG:-~/.kube/config}"
  kubectl version >/dev/null || die "no cluster reachable with the current KUBECONFIG"
fi
mkdir -p "$CLUSTER_DIR/logs"

# An operator make deploy put in the cluster (ready pods), which would reconcile the demo's Deployer.
deployed() { [ "$(kubectl -n "$OP_NS" get deployment deployer-operator -o jsonpath='{.status.readyReplicas}' 2>/dev/null || true)" -ge 1 ] 2>/dev/null; }
if [ -z "$MODE" ]; then
  if [ "$CLUSTER" = local ] && deployed; then MODE=node; else MODE=local; fi
fi
case $MODE in
  local) deployed && die "an operator is deployed in $OP_NS and would act on the demo's Deployer too: make undeploy, or DEMO_OPERATOR=node make demo" ;;
  node) [ "$CLUSTER" = local ] || die "DEMO_OPERATOR=node runs on the local control plane's real nodes only" ;;
  *) die "DEMO_OPERATOR=$MODE: local or node" ;;
esac

say "Installing the CRD"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/deployers.deploy.example.com >/dev/null

# Watch only the demo namespace, so that it never competes with another operator (or the tests).
start_operator() {
  setsid "${CARGO_TARGET_DIR:-target}"/debug/deployer-operator run --namespace "$NS" --wait-refresh-seconds 1 --listen 127.0.0.1:0 </dev/null >>"$oplog" 2>&1 &
  echo $! >"$pidfile"
  disown
}

if [ "$MODE" = local ]; then
  say "Building the operator"
  cargo build --locked --quiet
  say "Starting the operator (log: $oplog)"
  stop_operator
  start_operator
  sleep 1
  kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "demo: the operator did not start:" >&2; tail -20 "$oplog" >&2; exit 1; }
else
  say "The operator's two pods on the real nodes (make deploy: image, nodes, deploy/ + deploy/local/)"
  stop_operator
  make --no-print-directory deploy
  kubectl -n "$OP_NS" get pods -o wide
fi

say "Applying the seed's Deployer: nginx 1.7.7 with 10 replicas"
kubectl -n "$NS" delete deployer nginx --ignore-not-found --wait=true >/dev/null
sed "s/namespace: default/namespace: $NS/" examples/nginx-deployer.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait --for=condition=Ready --timeout=120s deployer/nginx
kubectl -n "$NS" get deployer,deployments

# The operator column: the process's PID (local) or the pod holding the Lease (node).
holder() { kubectl -n "$OP_NS" get lease deployer-operator -o jsonpath='{.spec.holderIdentity}' 2>/dev/null | sed 's/_[^_]*$//'; }
operator_now() {
  local pid
  if [ "$MODE" = local ]; then
    pid=$(cat "$pidfile" 2>/dev/null) && kill -0 "$pid" 2>/dev/null && echo "pid $pid" || echo "${B}down (killed)${R}${Y}"
  else
    echo "leader $(holder)"
  fi
}

now_rfc() { date -u +%FT%T.%NZ; }
# secs_between A B: B - A in seconds (RFC 3339 times), two decimals.
secs_between() { awk -v a="$(date -d "$1" +%s.%N)" -v b="$(date -d "$2" +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }
# The canary's spec.replicas as its watch delivers them, each line stamped with the time it came
# (RFC 3339, ns): a step starts when the operator raises the canary to the step's size (the step's
# start is not written on its own: the status is written once per step, when it is in place).
canary_log=$(mktemp)
watch_canary() {
  kubectl -n "$NS" get deployments -l deploy.example.com/version=1.7.8 -w \
    -o jsonpath='{.spec.replicas}{"\n"}' 2>/dev/null | while read -r n; do echo "$(now_rfc) $n"; done >>"$canary_log" &
  canary_watch=$!
}
# The canary's size at each step of the demo's plan (R = 10: 10%, 30%, 60%, 100%).
sizes=(0 1 3 6 10)
# step_started N: when the canary was first raised to step N's size.
step_started() { awk -v n="${sizes[$1]}" '$2 >= n { print $1; exit }' "$canary_log"; }
mark() { printf '%s %s>>> %s%s\n' "$(date +%T.%2N)" "$B" "$*" "$R"; }

# The live table, one line per change, polled about twice a second: phase, step, weight, canary
# and stable replicas (ready/desired), time left, the operator.
progress() {
  local line last="" deadline=$((SECONDS + 300)) killed="" restart_at="" until="" killed_step="" old_leader=""
  printf '%s%-11s %-10s %-5s %-6s %-14s %-14s %-22s %s%s\n' "$D" TIME PHASE STEP WEIGHT "CANARY 1.7.8" \
    "STABLE 1.7.7" WAIT OPERATOR "$R"
  while [ $SECONDS -lt $deadline ]; do
    local phase step cur weight wait wu c s op
    IFS='|' read -r phase step cur weight wait wu < <(kubectl -n "$NS" get deployer nginx -o \
      jsonpath='{.status.phase}|{.status.step}|{.status.currentStep}|{.status.weight}|{.status.progress.wait}|{.status.waitUntil}{"\n"}') || true
    c=$(kubectl -n "$NS" get deployment nginx-1.7.8 -o jsonpath='{.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || echo -)
    s=$(kubectl -n "$NS" get deployment nginx-1.7.7 -o jsonpath='{.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || echo gone)
    c=${c/#\//0/}; s=${s/#\//0/}
    [ "$phase" = Waiting ] || wait=""
    op=$(operator_now)
    line=$(printf '%-10s %-5s %-6s %-14s %-14s %-22s %s' "$phase" "$step" "${weight:+$weight%}" "$c" "$s" "$wait" "$op")
    if [ "$line" != "$last" ]; then
      printf '%s %s%s%s\n' "$(date +%T.%2N)" "$([ "$phase" = Done ] && echo "$G" || echo "$Y")" "$line" "$R"
      last=$line
    fi
    # 1. The kill, during the first wait, with the deadline the operator persisted.
    if [ -z "$killed" ] && [ "$phase" = Waiting ] && [ -n "$wu" ] && [ "$cur" = 1 ]; then
      killed=$(date +%s.%N) until=$wu killed_step=$cur
      if [ "$MODE" = local ]; then
        kill -KILL "$(cat "$pidfile")"
        mark "kill -9 of the operator (pid $(cat "$pidfile")), $(secs_between "$(now_rfc)" "$wu") s before the deadline status.waitUntil=$wu"
        restart_at=$(awk -v k="$killed" -v d="$DOWN" 'BEGIN { printf "%.3f", k + d }')
      else
        old_leader=$(holder)
        kubectl -n "$OP_NS" delete pod "$old_leader" --wait=false >/dev/null
        mark "kubectl delete pod $old_leader (the leader), $(secs_between "$(now_rfc)" "$wu") s before the deadline status.waitUntil=$wu"
      fi
    fi
    # 2. Who takes over: a new process DEMO_DOWN_SECONDS later, or the other pod.
    if [ -n "$restart_at" ] && awk -v n="$(date +%s.%N)" -v r="$restart_at" 'BEGIN { exit !(n >= r) }'; then
      restart_at=""
      start_operator
      mark "a new operator (pid $(cat "$pidfile")) after ${DOWN} s down: it knows nothing but the Deployer's status"
    fi
    if [ -n "$old_leader" ]; then
      local h
      h=$(holder)
      if [ -n "$h" ] && [ "$h" != "$old_leader" ]; then
        mark "$h took the Lease $(awk -v k="$killed" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - k }') s after the delete (at most; polled)"
        old_leader=""
      fi
    fi
    # 3. The step after the kill: when it started (the canary raised to its size) against the
    # deadline.
    if [ -n "$killed_step" ] && [ -n "$cur" ] && [ "$cur" != "$killed_step" ]; then
      local started
      started=$(step_started "$cur")
      if [ -n "$started" ]; then
        mark "step $cur started at $started; the deadline persisted before the kill was $until: $(secs_between "$until" "$started") s late"
        killed_step=""
      fi
    fi
    [ "$phase" = Done ] && [ "$s" = gone ] && return 0
    sleep 0.3
  done
  echo "demo: the rollout did not finish within 5 minutes" >&2
  return 1
}

if [ "$MODE" = local ]; then what="kill -9 of the operator"; else what="kubectl delete pod of the leader"; fi
say "Bumping to 1.7.8 (steps 10% 10s, 30% 3s, 60% 3s, 100%): a live canary, and $what in the first wait"
kubectl -n "$NS" patch deployer nginx --type merge -p \
  '{"spec":{"deployment":{"version":"1.7.8"},"steps":[{"percent":10,"sleep":10},{"percent":30,"sleep":3},{"percent":60,"sleep":3},{"percent":100}]}}'
watch_canary
progress
kill "$canary_watch" 2>/dev/null || true
rm -f "$canary_log"

say "Done"
kubectl -n "$NS" get deployer,deployments
kubectl -n "$NS" describe deployer nginx | sed -n '/^Status:/,$p'
if [ "$MODE" = local ]; then
  logs="tail -f $oplog"
else
  logs="kubectl -n $OP_NS logs -f deploy/deployer-operator"
fi
cat <<EOF

${B}The demo took $(($(date +%s) - t0))s. The cluster and the operator are still running.${R}
Explore it:   export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
              kubectl get dpl,deploy -n $NS
              kubectl -n $NS patch dpl nginx --type merge -p '{"spec":{"deployment":{"version":"1.7.9"}}}'
              $logs
Stop it:      make cluster-down     (stops the operator and the local control plane)
EOF
