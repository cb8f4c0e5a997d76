#!/usr/bin/env bash
# `make demo-checks`: the worked example of docs/checks.md, for real. On the local control plane
# (or CLUSTER=current), with the pinned Prometheus (tests/cluster/build.sh) scraping a stand-in for
# the application's metrics (scripts/fake-app-exporter.py: kwok's pods serve no traffic), it deploys examples/
# checks-deployer.yaml at 1.0.0, rolls out 1.0.1 (healthy: the success-rate check passes at every
# step) and then 1.0.2 (5% of its requests fail: the check aborts the rollout and 1.0.1 is back at
# full size). Prints what a user sees; stops its operator, exporter and Prometheus at the end.
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
NS=${CHECKS_DEMO_NAMESPACE:-checks-demo}
work=$CLUSTER_DIR/checks-demo
if [ -t 1 ]; then B=$'\e[1m' R=$'\e[0m'; else B= R=; fi
say() { printf '\n%s==> %s%s\n' "$B" "$*" "$R"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ "$CLUSTER" = local ]; then
  bash tests/cluster/cluster.sh up >/dev/null
  export KUBECONFIG=$PWD/$CLUSTER_DIR/kubeconfig
fi
# The pinned Prometheus (built once from Go modules, like the control plane).
[ -x "${PROMETHEUS:-}" ] || eval "$(bash tests/cluster/build.sh prometheus)"
cargo build --locked --quiet
kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd/deployers.deploy.example.com >/dev/null
rm -rf "$work" && mkdir -p "$work"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

exporter_port=$(free_port)
python3 scripts/fake-app-exporter.py "$exporter_port" \
  1.0.0:200:40 1.0.1:200:50 1.0.1:500:0.1 1.0.2:200:19 1.0.2:500:1 &
pids+=($!)
prom_port=$(free_port)
cat >"$work/prometheus.yml" <<YAML
global: { scrape_interval: 1s, evaluation_interval: 1s }
scrape_configs:
  - job_name: web
    static_configs: [ { targets: ["127.0.0.1:$exporter_port"] } ]
YAML
"$PROMETHEUS" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/data" \
  --web.listen-address="127.0.0.1:$prom_port" >"$work/prometheus.log" 2>&1 &
pids+=($!)
# Ready once it has scraped enough of the application's traffic for a 10 s rate.
for _ in $(seq 150); do
  curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" \
    --data-urlencode 'query=sum(rate(http_requests_total{version="1.0.0"}[10s]))' 2>/dev/null |
    grep -q '"value"' && break
  sleep 0.2
done

"${CARGO_TARGET_DIR:-target}"/debug/deployer-operator run --namespace "$NS" --listen 127.0.0.1:0 --wait-refresh-seconds 1 \
  >"$work/operator.log" 2>&1 &
pids+=($!)

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl -n "$NS" delete deployer web --ignore-not-found --wait=true >/dev/null
say "kubectl apply -f examples/checks-deployer.yaml   (Prometheus at 127.0.0.1:$prom_port)"
sed "s|http://127.0.0.1:9090|http://127.0.0.1:$prom_port|" examples/checks-deployer.yaml | kubectl -n "$NS" apply -f -
kubectl -n "$NS" wait --for=condition=Ready --timeout=60s deployer/web >/dev/null

# One read per line: phase, step, weight, versions, then each check of the current gate.
view='{{.status.phase}}  step {{.status.step}}  weight {{or .status.weight 0}}%  stable {{.status.stableVersion}}  canary {{or .status.canaryVersion "-"}}{{range .status.checks}}
          {{.name}}  {{.gate}} of step {{.step}}: {{.phase}}, {{.runs}} run(s), {{.failures}} failed, last {{or .lastValue "-"}}{{end}}'
watch_until() {
  local want=$1 deadline=$((SECONDS + 180)) last="" line
  while [ $SECONDS -lt $deadline ]; do
    line=$(kubectl -n "$NS" get deployer web -o go-template="$view" 2>/dev/null) || line=""
    [ "$line" != "$last" ] && { printf '%s  %s\n' "$(date +%T)" "$line"; last=$line; }
    [ "${line%%  *}" = "$want" ] && return 0
    sleep 1
  done
  echo "demo-checks: timed out waiting for $want" >&2
  return 1
}

say "kubectl patch deployer web: version 1.0.1 (healthy: 99.8% of its requests succeed)"
kubectl -n "$NS" patch deployer web --type merge -p '{"spec":{"deployment":{"version":"1.0.1"}}}'
watch_until Done

say "kubectl patch deployer web: version 1.0.2 (5% of its requests fail)"
kubectl -n "$NS" patch deployer web --type merge -p '{"spec":{"deployment":{"version":"1.0.2"}}}'
watch_until Aborted

say "kubectl get deployer,deployments"
kubectl -n "$NS" get deployer,deployments
say "kubectl get deployer web -o jsonpath='{.status.checkVerdict}'"
kubectl -n "$NS" get deployer web -o jsonpath='{.status.checkVerdict}{"\n"}'
say "kubectl get deployer web -o yaml   (status.checks)"
kubectl -n "$NS" get deployer web -o yaml | sed -n '/^  checks:/,/^  [a-z][a-zA-Z]*:/p' | sed '$d'
say "kubectl events --for deployer/web"
kubectl -n "$NS" events --for deployer/web 2>/dev/null | tail -14 || kubectl -n "$NS" get events --field-selector involvedObject.name=web
say "kubectl deployer get web   (the plugin, docs/kubectl.md)"
NO_COLOR=1 "${CARGO_TARGET_DIR:-target}"/debug/kubectl-deployer get web -n "$NS"
