#!/usr/bin/env bash
# shellcheck source-path=SCRIPTDIR
# Local Kubernetes control plane for the e2e tests: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok (fake nodes and pods), all on 127.0.0.1, built from source by build.sh.
#
#   cluster.sh up      start (or confirm) a healthy cluster; prints the kubeconfig path
#   cluster.sh down    stop exactly the recorded processes and remove $CLUSTER_DIR
#   cluster.sh status  one line per component; exit 0 only when the cluster is healthy
#   cluster.sh restart etcd|apiserver
#                      stop one component and start it again (same ports, PKI, data); for chaos tests
#   cluster.sh node up|down|status|load ARCHIVE
#                      real nodes (kubelet + containerd + runc) beside the kwok ones: node.sh
#
# CLUSTER_DIR (default <repo>/.cluster) holds everything: pki/, kubeconfig, ports.env, logs/, pids/,
# etcd/ and the `ready` marker. See docs/local-cluster.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

CLUSTER_DIR=${CLUSTER_DIR:-$repo/.cluster}
case $CLUSTER_DIR in /*) ;; *) CLUSTER_DIR=$PWD/$CLUSTER_DIR ;; esac
CLUSTER_DIR=${CLUSTER_DIR%/}
PKI=$CLUSTER_DIR/pki
LOGS=$CLUSTER_DIR/logs
PIDS=$CLUSTER_DIR/pids
KUBECONFIG_FILE=$CLUSTER_DIR/kubeconfig
SENTINEL=$CLUSTER_DIR/.deployer-local-cluster # only a directory holding it is ever removed
MARKER=$CLUSTER_DIR/ready
# layout: bump when a running cluster must be recreated (2: the apiserver's kubelet client certificate).
VERSIONS="k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION layout=2"
NODES=3
# Start order; `down` stops in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

log() { echo "cluster.sh: $*" >&2; }
# Never go through an HTTP proxy for loopback health checks.
curl_() { curl --noproxy '*' -fsS --max-time 3 "$@"; }
now() { date +%s.%N; }
# python3 is used for port picking and JSON; prefer the system one (a pyenv shim costs ~0.3s a call).
PYTHON=$(command -v /usr/bin/python3 || command -v python3 || true)
# since T0: seconds elapsed since T0 (a `now` value), one decimal.
since() { awk -v a="$(now)" -v b="$1" 'BEGIN { printf "%.1f", a - b }'; }

# ---------------------------------------------------------------- processes

pid_of() { [ -s "$PIDS/$1.pid" ] && cat "$PIDS/$1.pid"; }

# alive PID: the process runs (not a zombie) and is ours: its command line mentions $CLUSTER_DIR.
# This guards against PID reuse: a recycled PID never matches.
alive() {
  local pid=$1 state cmd
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  state=$(sed 's/^.*) \(.\).*$/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$state" != X ] || return 1
  cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || return 1
  [[ $cmd == *"$CLUSTER_DIR/"* ]]
}

# start NAME BINARY ARGS...: runs BINARY detached (own session, SIGHUP ignored, stdin closed, every
# other inherited fd closed so no caller's pipe or lock is held), output to logs/NAME.log, PID to
# pids/NAME.pid. The PID is written by the process itself just before exec, so it is the binary's.
start() {
  local name=$1 pidf=$PIDS/$1.pid
  shift
  rm -f "$pidf"
  # shellcheck disable=SC2016 # expanded by the inner bash
  setsid bash -c '
    pidf=$1; shift
    for fd in /proc/$$/fd/*; do fd=${fd##*/}; [ "$fd" -gt 2 ] && eval "exec $fd>&-"; done
    trap "" HUP
    echo $$ >"$pidf"
    exec "$@"' cluster-launch "$pidf" "$@" </dev/null >>"$LOGS/$name.log" 2>&1 &
  local i
  for i in $(seq 50); do [ -s "$pidf" ] && return 0; sleep 0.1; done
  fail "$name" "did not start (no pid file after 5s)"
}

# stop_all: TERM the recorded processes (reverse start order), KILL what is left after 10s, and
# wait until none of them runs. Only the PIDs in $PIDS are touched.
stop_all() {
  local name pid pids=() i
  [ -d "$PIDS" ] || return 0
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    pid=$(pid_of "$name") || continue
    if alive "$pid"; then
      kill -TERM "$pid" 2>/dev/null || true
      kill -CONT "$pid" 2>/dev/null || true # a stopped process acts on TERM only once continued
      pids+=("$pid")
      log "stopping $name (pid $pid)"
    fi
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 100); do
    local left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    if [ "$i" -eq 100 ]; then
      log "still running after 10s, sending KILL to: ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
    fi
    sleep 0.1
  done
  for i in $(seq 50); do
    local left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    [ ${#left[@]} -eq 0 ] && break
    sleep 0.1
  done
  if [ ${#left[@]} -gt 0 ]; then
    log "processes did not exit even after KILL: ${left[*]}"
    return 1
  fi
  # They are dead; give their parent (init, or this shell) a moment to reap the zombies so that
  # `ps` right after `down` is clean. A zombie holds no port, file or memory.
  for i in $(seq 30); do
    local zombies=0
    for pid in "${pids[@]}"; do [ -e "/proc/$pid" ] && zombies=1; done
    [ $zombies -eq 0 ] && return 0
    wait "${pids[@]}" 2>/dev/null || true
    sleep 0.1
  done
  return 0
}

remove_dir() {
  [ -e "$CLUSTER_DIR" ] || return 0
  if [ -f "$SENTINEL" ] || [ -z "$(ls -A "$CLUSTER_DIR")" ]; then
    rm -rf "$CLUSTER_DIR"
  else
    log "refusing to remove $CLUSTER_DIR: it was not created by cluster.sh (no $(basename "$SENTINEL"))"
    return 1
  fi
}

# Processes that still mention $CLUSTER_DIR but are not recorded (e.g. pid files deleted by hand).
# Reported, never killed: only recorded PIDs are ours to stop.
warn_strays() {
  local p cmd strays=()
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = $$ ] && continue
    cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
    case $cmd in *"$CLUSTER_DIR/"*) case $cmd in *cluster.sh*) ;; *) strays+=("$p") ;; esac ;; esac
  done
  if [ ${#strays[@]} -gt 0 ]; then
    log "WARNING: unrecorded processes still use $CLUSTER_DIR: ${strays[*]} (not killed; check with ps -p)"
  fi
}

# ---------------------------------------------------------------- health

# shellcheck disable=SC1091 # written by `up`
load_ports() { [ -f "$CLUSTER_DIR/ports.env" ] && . "$CLUSTER_DIR/ports.env"; }

# health COMPONENT: 0 when the component's own health endpoint answers ok.
health() {
  case $1 in
    etcd) curl_ "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' ;;
    kube-apiserver) [ "$(curl_ --cacert "$PKI/ca.crt" "https://127.0.0.1:$APISERVER_PORT/readyz" 2>/dev/null)" = ok ] ;;
    kube-controller-manager) [ "$(curl_ -k "https://127.0.0.1:$KCM_PORT/healthz" 2>/dev/null)" = ok ] ;;
    kube-scheduler) [ "$(curl_ -k "https://127.0.0.1:$SCHEDULER_PORT/healthz" 2>/dev/null)" = ok ] ;;
    kwok) [ "$(curl_ "http://127.0.0.1:$KWOK_PORT/healthz" 2>/dev/null)" = ok ] ;;
  esac
}

# api PATH [curl args]: a request to the apiserver as the admin user.
api() {
  local path=$1
  shift
  curl_ --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@" \
    "https://127.0.0.1:$APISERVER_PORT$path"
}

# ready_nodes: number of kwok nodes whose Ready condition is True.
ready_nodes() {
  api "/api/v1/nodes?labelSelector=type%3Dkwok" 2>/dev/null | "$PYTHON" -c '
import json, sys
items = json.load(sys.stdin).get("items", [])
print(sum(1 for n in items for c in n.get("status", {}).get("conditions", [])
          if c["type"] == "Ready" and c["status"] == "True"))' 2>/dev/null || echo 0
}

# why_unhealthy: empty when the recorded cluster is complete and healthy, else the first reason.
why_unhealthy() {
  [ -f "$MARKER" ] || { echo "ready marker missing (start never completed)"; return; }
  [ "$(cat "$MARKER")" = "$VERSIONS" ] || { echo "built for other versions ($(cat "$MARKER"))"; return; }
  load_ports || { echo "ports.env missing"; return; }
  local name pid
  for name in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$name") || { echo "$name: no pid file"; return; }
    alive "$pid" || { echo "$name: pid $pid is not running"; return; }
  done
  health kube-apiserver || { echo "kube-apiserver: /readyz not ok"; return; }
}

# ---------------------------------------------------------------- failure handling

# fail COMPONENT MESSAGE: name the component, show the end of its log and exit non-zero; the EXIT
# trap of `up` then stops everything this run started.
fail() {
  local name=$1
  shift
  log "FAILED: $name: $*"
  if [ -f "$LOGS/$name.log" ]; then
    echo "----- last 40 lines of $LOGS/$name.log -----" >&2
    tail -n 40 "$LOGS/$name.log" >&2
    echo "-----" >&2
  fi
  exit 1
}

# wait_for COMPONENT TIMEOUT_S CHECK...: poll CHECK every 0.2s; fail early if the process died.
wait_for() {
  local name=$1 timeout=$2 deadline pid
  shift 2
  deadline=$(($(date +%s) + timeout))
  pid=$(pid_of "$name" || true)
  while ! "$@"; do
    if [ -n "$pid" ] && ! alive "$pid"; then fail "$name" "process $pid exited during startup"; fi
    [ "$(date +%s)" -lt "$deadline" ] || fail "$name" "not healthy after ${timeout}s ($*)"
    sleep 0.2
  done
}

# ---------------------------------------------------------------- setup pieces

free_ports() {
  "$PYTHON" -c '
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

# leaf NAME SUBJECT EXTENSIONS: key + certificate signed by the cluster CA.
leaf() {
  local name=$1 subj=$2 ext=$3
  printf '%s\n' "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" \
    "$ext" >"$PKI/$name.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -days 365 -out "$PKI/$name.crt" -extfile "$PKI/$name.ext" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

make_pki() {
  (
    umask 077
    mkdir -p "$PKI"
    # ECDSA P-256 for the CA and the TLS certificates: generated in milliseconds (RSA-2048 key
    # generation made up most of a second of startup). The ServiceAccount signing key stays RSA.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$PKI/ca.key" -out "$PKI/ca.crt" -days 365 \
      -subj "/CN=deployer-local-ca" -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    leaf apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    leaf admin "/O=system:masters/CN=admin" "extendedKeyUsage=clientAuth"
    # The apiserver's identity towards kubelets (logs, exec, port-forward on the real nodes).
    leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "extendedKeyUsage=clientAuth"
    # The controller manager and the scheduler use their own identities, bound by the apiserver's
    # bootstrap RBAC (as kubeadm does), not system:masters.
    leaf kube-controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
    leaf kube-scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
    openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
    openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  )
}

# kubeconfig FILE CERT_NAME: one cluster/user/context named deployer-local, data embedded.
kubeconfig() {
  local file=$1 user=$2
  (
    umask 077
    cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: deployer-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: deployer-local-$user
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$user.crt")
    client-key-data: $(base64 -w0 <"$PKI/$user.key")
contexts:
- name: deployer-local
  context:
    cluster: deployer-local
    user: deployer-local-$user
current-context: deployer-local
EOF
  )
}

create_nodes() {
  local i name
  for ((i = 0; i < NODES; i++)); do
    name=kwok-node-$i
    api /api/v1/nodes -X POST -H 'Content-Type: application/json' -o /dev/null -d @- <<EOF || api "/api/v1/nodes/$name" -o /dev/null || fail kwok "could not create node $name"
{"apiVersion": "v1", "kind": "Node",
 "metadata": {"name": "$name",
   "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
   "labels": {"type": "kwok", "kubernetes.io/hostname": "$name", "kubernetes.io/os": "linux",
              "kubernetes.io/arch": "amd64", "node-role.kubernetes.io/agent": ""}},
 "spec": {},
 "status": {"capacity": {"cpu": "64", "memory": "512Gi", "pods": "4000"},
            "allocatable": {"cpu": "64", "memory": "512Gi", "pods": "4000"}}}
EOF
  done
}

nodes_ready() { [ "$(ready_nodes)" -ge "$NODES" ]; }

# The probe Pod checks the whole pod path once: admission, scheduler, kwok's pod stages (a broken
# stage file only shows when a stage first matches) and the delete stage.
PROBE=/api/v1/namespaces/default/pods/cluster-probe
create_probe() {
  api /api/v1/namespaces/default/pods -X POST -H 'Content-Type: application/json' -o /dev/null -d \
    '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "cluster-probe"},
      "spec": {"containers": [{"name": "probe", "image": "registry.invalid/probe:1"}]}}' ||
    fail kube-apiserver "could not create the probe pod"
}
probe_ready() {
  api "$PROBE" 2>/dev/null | "$PYTHON" -c '
import json, sys
s = json.load(sys.stdin).get("status", {})
ok = s.get("phase") == "Running" and s.get("podIP") and any(
    c["type"] == "Ready" and c["status"] == "True" for c in s.get("conditions", []))
sys.exit(0 if ok else 1)' 2>/dev/null
}
probe_gone() { [ "$(curl_ -o /dev/null -w '%{http_code}' --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" \
  --key "$PKI/admin.key" "https://127.0.0.1:$APISERVER_PORT$PROBE" 2>/dev/null)" = 404 ]; }
default_sa() { api /api/v1/namespaces/default/serviceaccounts/default -o /dev/null 2>/dev/null; }

# start_etcd / start_apiserver: start one component with the recorded ports and PKI and wait until
# it is healthy (used by `up`, and by `restart`, which keeps the data, ports and certificates).
start_etcd() {
  start etcd "$ETCD_BIN/etcd" --name=deployer-local --data-dir="$CLUSTER_DIR/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="deployer-local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 30 health etcd
}

start_apiserver() {
  start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$APISERVER_PORT" \
    --cert-dir="$PKI" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" --authorization-mode=Node,RBAC \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" --kubelet-certificate-authority="$PKI/ca.crt" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-cluster-ip-range=10.96.0.0/16 --allow-privileged=true --endpoint-reconciler-type=none \
    --audit-policy-file="$here/audit-policy.yaml" --audit-log-path="$LOGS/audit.log" \
    --audit-log-maxsize=200 --audit-log-maxbackup=2 --profiling=false
  wait_for kube-apiserver 120 health kube-apiserver
}

# ---------------------------------------------------------------- commands

# EXIT trap while `up` starts components: unless the start completed, stop what was started.
on_up_exit() {
  local rc=$?
  if [ ! -f "$MARKER" ]; then
    stop_all || true
    log "start failed; logs kept in $LOGS (cluster.sh down removes them)"
  fi
  exit "$rc"
}

cmd_up() {
  local t0 reason c missing=()
  t0=$(now)
  # The README's prerequisites that `up` itself uses (go: build.sh checks it).
  for c in openssl curl python3; do command -v "$c" >/dev/null || missing+=("$c"); done
  if [ ${#missing[@]} -gt 0 ]; then
    log "missing: ${missing[*]} (README prerequisites; on Debian, as root: apt-get install -y ${missing[*]})"
    exit 1
  fi
  if [ -d "$CLUSTER_DIR" ] && [ -n "$(ls -A "$CLUSTER_DIR")" ]; then
    reason=$(why_unhealthy)
    if [ -z "$reason" ]; then
      echo "cluster already up"
      print_usage "$t0"
      return 0
    fi
    log "existing cluster in $CLUSTER_DIR is not usable: $reason; tearing it down and starting fresh"
    stop_all
    remove_dir
  fi

  local bins K8S_BIN='' ETCD_BIN='' KWOK_BIN=''
  bins=$("$here/build.sh") || { log "FAILED: build.sh"; exit 1; }
  eval "$bins"
  if ! [ -x "$K8S_BIN/kube-apiserver" ] || ! [ -x "$ETCD_BIN/etcd" ] || ! [ -x "$KWOK_BIN/kwok" ]; then
    log "FAILED: build.sh did not report usable binaries: $bins"
    exit 1
  fi

  mkdir -p "$CLUSTER_DIR"
  touch "$SENTINEL"
  mkdir -p "$LOGS" "$PIDS" "$CLUSTER_DIR/kubeconfigs" "$CLUSTER_DIR/config"
  mkdir -m 700 "$CLUSTER_DIR/etcd"
  # From here on, any failure or interrupt stops what was started (logs are kept for diagnosis).
  trap on_up_exit EXIT
  trap 'exit 130' INT TERM

  local ports
  read -r -a ports <<<"$(free_ports 6)"
  [ ${#ports[@]} -eq 6 ] || { log "FAILED: could not pick free ports (python3 needed)"; exit 1; }
  cat >"$CLUSTER_DIR/ports.env" <<EOF
ETCD_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
APISERVER_PORT=${ports[2]}
KCM_PORT=${ports[3]}
SCHEDULER_PORT=${ports[4]}
KWOK_PORT=${ports[5]}
EOF
  load_ports

  make_pki
  kubeconfig "$KUBECONFIG_FILE" admin
  kubeconfig "$CLUSTER_DIR/kubeconfigs/kube-controller-manager.kubeconfig" kube-controller-manager
  kubeconfig "$CLUSTER_DIR/kubeconfigs/kube-scheduler.kubeconfig" kube-scheduler

  start_etcd
  log "etcd ready after $(since "$t0")s"

  start_apiserver
  log "kube-apiserver ready after $(since "$t0")s"

  local kcm=$CLUSTER_DIR/kubeconfigs/kube-controller-manager.kubeconfig
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$kcm" \
    --authentication-kubeconfig="$kcm" --authorization-kubeconfig="$kcm" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$PKI/kube-controller-manager" \
    --leader-elect=false --controllers='*' --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" --profiling=false \
    --kube-api-qps=100 --kube-api-burst=200

  local sched=$CLUSTER_DIR/kubeconfigs/kube-scheduler.kubeconfig
  cat >"$CLUSTER_DIR/config/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $sched
leaderElection:
  leaderElect: false
EOF
  start kube-scheduler "$K8S_BIN/kube-scheduler" --config="$CLUSTER_DIR/config/kube-scheduler.yaml" \
    --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --bind-address=127.0.0.1 --secure-port="$SCHEDULER_PORT" --cert-dir="$PKI/kube-scheduler"
  wait_for kube-controller-manager 60 health kube-controller-manager
  wait_for kube-scheduler 60 health kube-scheduler
  log "kube-controller-manager, kube-scheduler ready after $(since "$t0")s"

  # kwok: stock node stages (initialize + lease heartbeat) and the project's pod stages.
  local stages=$CLUSTER_DIR/config/kwok-stages.yaml f
  : >"$stages"
  for f in "$KWOK_BIN"/stages/*.yaml "$here/kwok-pod-stages.yaml"; do
    { cat "$f"; printf '\n---\n'; } >>"$stages"
  done
  start kwok "$KWOK_BIN/kwok" --kubeconfig="$KUBECONFIG_FILE" --config="$stages" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.244.0.0/16 --node-lease-duration-seconds=40 --server-address="127.0.0.1:$KWOK_PORT"
  wait_for kwok 30 health kwok
  log "kwok ready after $(since "$t0")s"

  create_nodes
  wait_for kwok 60 nodes_ready
  log "nodes ready after $(since "$t0")s"
  wait_for kube-controller-manager 60 default_sa
  log "ServiceAccount default/default ready after $(since "$t0")s"
  create_probe
  wait_for kwok 30 probe_ready
  api "$PROBE" -X DELETE -o /dev/null || fail kube-apiserver "could not delete the probe pod"
  wait_for kwok 30 probe_gone
  log "probe pod Running, Ready and deleted after $(since "$t0")s"

  echo "$VERSIONS" >"$MARKER"
  trap - EXIT INT TERM
  print_usage "$t0"
}

print_usage() {
  local t0=$1
  load_ports
  echo "cluster up: Kubernetes $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, apiserver https://127.0.0.1:$APISERVER_PORT"
  echo "kubeconfig: $KUBECONFIG_FILE"
  echo "  export KUBECONFIG=$KUBECONFIG_FILE"
  echo "took $(since "$t0")s"
}

cmd_down() {
  node_stop
  stop_all
  warn_strays
  remove_dir
  echo "cluster down"
}

# restart COMPONENT: stop one component of a healthy cluster (TERM, KILL after 5s) and start it
# again with the same ports, PKI and data; waits until it is healthy again. For chaos tests: the
# clients (operator, controller manager, kwok) see the outage and must recover by themselves.
cmd_restart() {
  local name=$1 t0 pid bins K8S_BIN='' ETCD_BIN='' KWOK_BIN='' reason i
  t0=$(now)
  case $name in
    etcd | kube-apiserver) ;;
    apiserver) name=kube-apiserver ;;
    *) log "restart: only etcd and kube-apiserver (apiserver) can be restarted"; exit 2 ;;
  esac
  reason=$(why_unhealthy)
  [ -z "$reason" ] || { log "restart $name: the cluster in $CLUSTER_DIR is not healthy: $reason"; exit 1; }
  load_ports
  bins=$("$here/build.sh") || { log "FAILED: build.sh"; exit 1; }
  eval "$bins"
  pid=$(pid_of "$name")
  kill -TERM "$pid" 2>/dev/null || true
  # The apiserver drains its watches for a long time on TERM; 5s is enough for a realistic stop.
  for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  fi
  alive "$pid" && fail "$name" "pid $pid did not exit"
  log "$name (pid $pid) stopped after $(since "$t0")s"
  case $name in
    etcd) start_etcd ;;
    kube-apiserver) start_apiserver ;;
  esac
  wait_for kube-apiserver 120 health kube-apiserver
  log "$name restarted (pid $(pid_of "$name")); apiserver ready after $(since "$t0")s"
}

cmd_status() {
  local ok=0 name pid a h
  if ! [ -d "$CLUSTER_DIR" ]; then
    echo "no cluster in $CLUSTER_DIR"
    return 1
  fi
  load_ports || { echo "ports.env missing in $CLUSTER_DIR"; return 1; }
  printf '%-24s %-8s %-6s %s\n' COMPONENT PID ALIVE HEALTH
  for name in "${COMPONENTS[@]}"; do
    pid=$(pid_of "$name") || pid=-
    if alive "$pid"; then a=yes; else a=no; ok=1; fi
    if [ $a = yes ] && health "$name"; then h=ok; else h=fail; ok=1; fi
    printf '%-24s %-8s %-6s %s\n' "$name" "$pid" "$a" "$h"
  done
  if [ "$ok" -eq 0 ]; then
    local n
    n=$(ready_nodes)
    [ "$n" -ge "$NODES" ] || ok=1
    printf '%-24s %-8s %-6s %s\n' nodes - - "$n/$NODES Ready"
  else
    printf '%-24s %-8s %-6s %s\n' nodes - - "not checked"
  fi
  if [ -f "$MARKER" ]; then echo "ready marker: $(cat "$MARKER")"; else echo "ready marker: missing"; ok=1; fi
  echo "kubeconfig: $KUBECONFIG_FILE"
  return $ok
}

# shellcheck source=node.sh
. "$here/node.sh"

case ${1:-} in
  node)
    command -v flock >/dev/null || { log "flock (util-linux) is required"; exit 1; }
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    case ${2:-} in
      up | down | status) "cmd_node_$2" ;;
      load) [ $# -eq 3 ] || { echo "usage: $0 node load ARCHIVE" >&2; exit 2; }; cmd_node_load "$3" ;;
      *) echo "usage: $0 node up|down|status|load ARCHIVE" >&2; exit 2 ;;
    esac
    ;;
  restart)
    [ $# -eq 2 ] || { echo "usage: $0 restart etcd|apiserver" >&2; exit 2; }
    command -v flock >/dev/null || { log "flock (util-linux) is required"; exit 1; }
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    cmd_restart "$2"
    ;;
  up | down)
    command -v flock >/dev/null || { log "flock (util-linux) is required"; exit 1; }
    # One up/down at a time (the lock is on this script; started components close the fd).
    exec 9<"${BASH_SOURCE[0]}"
    flock 9
    "cmd_$1"
    ;;
  status) cmd_status ;;
  *)
    echo "usage: $0 up|down|status|restart etcd|apiserver|node up|down|status|load ARCHIVE   (env CLUSTER_DIR, default $repo/.cluster)" >&2
    exit 2
    ;;
esac
