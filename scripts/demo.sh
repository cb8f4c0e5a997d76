#!/usr/bin/env bash
# `make demo`: the main job on a fresh machine. Brings up the local control plane (unless
# CLUSTER=current), installs the CRD, runs the operator, applies the seed's nginx Deployer at
# 1.7.7, waits until it is Ready, then bumps it to 1.7.8 with short sleeps and shows the canary
# live until it is Done. Leaves the cluster and the operator running.
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
pidfile=$CLUSTER_DIR/operator.pid
oplog=$CLUSTER_DIR/logs/operator.log

if [ -t 1 ]; then B=$'\e[1m' G=$'\e[32m' Y=$'\e[33m' D=$'\e[2m' R=$'\e[0m'; else B= G= Y= D= R=; fi
say() { printf '%s==> %s%s\n' "$B" "$*" "$R"; }

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
  kubectl version >/dev/null || { echo "demo: no cluster reachable with the current KUBECONFIG" >&2; exit 1; }
  mkdir -p "$CLUSTER_DIR/logs"
fi

say "Building the operator"
cargo build --locked --quiet
mkdir -p "$CLUSTER_DIR/logs"

say "Installing the CRD"
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/deployers.deploy.example.com >/dev/null

say "Starting the operator (log: $oplog)"
stop_operator
# Watch only the demo namespace, so that it never competes with another operator (or the tests).
setsid target/debug/deployer-operator run --namespace "$NS" --wait-refresh-seconds 1 --listen 127.0.0.1:0 </dev/null >>"$oplog" 2>&1 &
echo $! >"$pidfile"
sleep 1
kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "demo: the operator did not start:" >&2; tail -20 "$oplog" >&2; exit 1; }

say "Applying the seed's Deployer: nginx 1.7.7 with 10 replicas"
kubectl -n "$NS" delete deployer nginx --ignore-not-found --wait=true >/dev/null
sed "s/namespace: default/namespace: $NS/" examples/nginx-deployer.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait --for=condition=Ready --timeout=120s deployer/nginx
kubectl -n "$NS" get deployer,deployments

# One line per second: phase, step, weight, canary and stable replicas (ready/desired), time left.
progress() {
  local line last="" deadline=$((SECONDS + 300))
  printf '%s%-8s %-10s %-5s %-6s %-18s %-18s %s%s\n' "$D" TIME PHASE STEP WEIGHT "CANARY 1.7.8" "STABLE 1.7.7" WAIT "$R"
  while [ $SECONDS -lt $deadline ]; do
    local phase step weight wait c s
    IFS='|' read -r phase step weight wait < <(kubectl -n "$NS" get deployer nginx \
      -o jsonpath='{.status.phase}|{.status.step}|{.status.weight}|{.status.progress.wait}{"\n"}') || true
    c=$(kubectl -n "$NS" get deployment nginx-1.7.8 -o jsonpath='{.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || echo -)
    s=$(kubectl -n "$NS" get deployment nginx-1.7.7 -o jsonpath='{.status.readyReplicas}/{.spec.replicas}' 2>/dev/null || echo gone)
    c=${c/#\//0/}; s=${s/#\//0/}
    [ "$phase" = Waiting ] || wait=""
    line=$(printf '%-10s %-5s %-6s %-18s %-18s %s' "$phase" "$step" "${weight:+$weight%}" "$c" "$s" "$wait")
    if [ "$line" != "$last" ]; then
      printf '%s %s%s%s\n' "$(date +%T)" "$([ "$phase" = Done ] && echo "$G" || echo "$Y")" "$line" "$R"
      last=$line
    fi
    [ "$phase" = Done ] && [ "$s" = gone ] && return 0
    sleep 1
  done
  echo "demo: the rollout did not finish within 5 minutes" >&2
  return 1
}

say "Bumping to 1.7.8 (steps 10% 6s, 30% 3s, 60% 3s, 100%): a live canary"
kubectl -n "$NS" patch deployer nginx --type merge -p \
  '{"spec":{"deployment":{"version":"1.7.8"},"steps":[{"percent":10,"sleep":6},{"percent":30,"sleep":3},{"percent":60,"sleep":3},{"percent":100}]}}'
progress

say "Done"
kubectl -n "$NS" get deployer,deployments
kubectl -n "$NS" describe deployer nginx | sed -n '/^Status:/,$p'
cat <<EOF

${B}The demo took $(($(date +%s) - t0))s. The cluster and the operator are still running.${R}
Explore it:   export KUBECONFIG=${KUBECONFIG:-~/.kube/config}
              kubectl get dpl,deploy -n $NS
              kubectl -n $NS patch dpl nginx --type merge -p '{"spec":{"deployment":{"version":"1.7.9"}}}'
              tail -f $oplog
Stop it:      make cluster-down     (stops the operator and the local control plane)
EOF
