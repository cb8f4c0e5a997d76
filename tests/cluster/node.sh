# shellcheck shell=bash
# Real nodes for the local control plane (sourced by cluster.sh; see docs/local-cluster.md, "Real
# nodes"): NODE_COUNT kubelets (default 2), each with its own containerd and Debian's runc, beside
# the kwok nodes. Only pods that ask for them land there (taint + label), and those pods use the
# host network: this machine may only send packets to 127.0.0.0/8.
#
#   cluster.sh node up      build (first time) and start the real nodes on a running cluster
#   cluster.sh node down    stop them (containers, kubelets, containerds), remove their state
#   cluster.sh node status  one line per process, and the nodes' Ready condition
#   cluster.sh node load ARCHIVE
#                           import an OCI/docker archive into every node's containerd (no registry)
#
# Node i (0-based) is named and addressed 127.0.0.<i+1>: the kubelet refuses a loopback --node-ip
# ("nodeIP can't be loopback address"), but takes an IP given as its hostname as the node's
# InternalIP. Each node's kubelet listens on its own address, so the apiserver reaches it (logs,
# exec, port-forward) on loopback; pods on host networking bind their node's address.
#
# Everything the nodes mount lives in one private mount namespace (the `node-ns` process): a tmpfs
# on /run (containerd's shim sockets, runc's state) and on /var/log (the kubelet's
# /var/log/containers), and read-only files over the six kernel settings the kubelet would
# otherwise rewrite host-wide (vm.overcommit_memory, vm.panic_on_oom, kernel.panic,
# kernel.panic_on_oops, kernel.keys.root_maxkeys, kernel.keys.root_maxbytes; its
# protectKernelDefaults makes it refuse to start instead, so the files show it the values it
# wants, and the host keeps its own). When the namespace's last process exits, all of it is gone.
# Pod cgroups: with no QoS cgroups the kubelet names no parent, and containerd puts each container
# at /k8s.io/<id> in every hierarchy (runc removes it with the container); `node down` removes the
# (empty) /k8s.io where `node up` found none.

NODE_COUNT=${NODE_COUNT:-2}
NODE_DIR=$CLUSTER_DIR/node
NODE_MARKER=$NODE_DIR/ready
NODE_LABEL=deployer-operator.local/node
NODE_TAINT=deployer-operator.local/real-node

node_name() { echo "127.0.0.$(($1 + 1))"; }
node_components() {
  local i
  echo node-ns
  for ((i = 0; i < NODE_COUNT; i++)); do echo "containerd-$i"; done
  for ((i = 0; i < NODE_COUNT; i++)); do echo "kubelet-$i"; done
}
node_sock() { echo "$NODE_DIR/n$1/containerd.sock"; }
# shellcheck disable=SC1091 # written by node up
load_node_env() { [ -f "$NODE_DIR/node.env" ] && . "$NODE_DIR/node.env"; }

# ctr_ I ARGS...: ctr against node i's containerd, in the CRI's namespace.
ctr_() {
  local i=$1
  shift
  "$CONTAINERD_BIN/ctr" --address "$(node_sock "$i")" --namespace k8s.io "$@"
}

node_ns_pid() { pid_of node-ns; }

# in_node_ns NAME ARGS...: start() a process inside the node mount namespace.
in_node_ns() {
  local name=$1
  shift
  start "$name" nsenter --mount="/proc/$(node_ns_pid)/ns/mnt" -- "$@"
}

node_ready_count() {
  api "/api/v1/nodes?labelSelector=${NODE_LABEL}%3Dreal" 2>/dev/null | "$PYTHON" -c '
import json, sys
items = json.load(sys.stdin).get("items", [])
print(sum(1 for n in items for c in n.get("status", {}).get("conditions", [])
          if c["type"] == "Ready" and c["status"] == "True"))' 2>/dev/null || echo 0
}
nodes_real_ready() { [ "$(node_ready_count)" -ge "$NODE_COUNT" ]; }
containerd_up() { "$CONTAINERD_BIN/ctr" --address "$(node_sock "$1")" version >/dev/null 2>&1; }
kubelet_healthy() {
  local port_var=KUBELET_HEALTHZ_PORT_$1
  [ "$(curl_ "http://127.0.0.1:${!port_var}/healthz" 2>/dev/null)" = ok ]
}

write_containerd_config() {
  local i=$1 d=$NODE_DIR/n$1
  mkdir -p "$d/containerd/root" "$d/containerd/state" "$d/cni/conf" "$d/cni/bin"
  # A CNI network list so that the runtime reports its network ready; its plugin does not exist, so
  # a pod without hostNetwork that reached this node would fail to start instead of getting a network.
  cat >"$d/cni/conf/10-host-network-only.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "host-network-only",
 "plugins": [{"type": "no-pod-network-on-this-node-use-hostNetwork"}]}
EOF
  mkdir -p "$d/registry/_default"
  cat >"$d/registry/_default/hosts.toml" <<EOF
# Every registry, for containerd of real node $i: nowhere (loopback, discard port).
server = "http://127.0.0.1:9"
[host."http://127.0.0.1:9"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$d/containerd/config.toml" <<EOF
# containerd of real node $i (cluster.sh node up). Everything under $d; no TCP listener.
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = [
  "io.containerd.nri.v1.nri",
  "io.containerd.internal.v1.opt",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
]

[grpc]
  address = "$d/containerd.sock"

[ttrpc]
  address = "$d/containerd.sock.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  # Images come from archives (node load); a pull of any image goes to 127.0.0.1:9, where nothing
  # answers, never to a registry.
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$d/registry"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"

[plugins."io.containerd.cri.v1.runtime"]
  # root on this VM lacks CAP_SYS_RESOURCE: no oom_score_adj below containerd's own (0), else runc
  # fails to start the pod sandbox ("failed to update /proc/self/oom_score_adj: Permission denied").
  restrict_oom_score_adj = true
  cdi_spec_dirs = ["$d/cdi"]
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$d/cni/bin"]
    conf_dir = "$d/cni/conf"
EOF
}

write_kubelet_config() {
  local i=$1 d=$NODE_DIR/n$1 name port_var=KUBELET_PORT_$1 health_var=KUBELET_HEALTHZ_PORT_$1
  name=$(node_name "$i")
  mkdir -p "$d/kubelet/root" "$d/kubelet/pod-logs" "$d/kubelet/volume-plugins"
  cat >"$d/kubelet/config.yaml" <<EOF
# kubelet of real node $i (cluster.sh node up); see docs/local-cluster.md, "Real nodes".
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $name
port: ${!port_var}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${!health_var}
tlsCertFile: $PKI/kubelet-$i.crt
tlsPrivateKeyFile: $PKI/kubelet-$i.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$d/containerd.sock
# This VM mounts the cgroup v1 controllers, cgroup2 only beside them: run on v1, without the
# kubelet's own QoS and node-allocatable cgroups (pods go under cgroupRoot).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
# (containerd's parent for the pods: the kubelet reads their usage there)
cgroupRoot: /k8s.io
enforceNodeAllocatable: []
failSwapOn: false
# Check, never change, the host's kernel settings (node-ns shows the kubelet the values it wants).
protectKernelDefaults: true
# No iptables chains or rules on this host.
makeIPTablesUtilChains: false
podLogsDir: $d/kubelet/pod-logs
volumePluginDir: $d/kubelet/volume-plugins
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
maxPods: 20
# The disk is shared with everything else on this machine, and its free space counts against a
# size it cannot reach (252 GB with 38 GB available looks 85 % full): absolute thresholds, and no
# image garbage collection (the images here are imported, never pulled again).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2Gi
  imagefs.available: 2Gi
  nodefs.inodesFree: 1%
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
shutdownGracePeriod: 0s
registerWithTaints:
  - {key: $NODE_TAINT, effect: NoSchedule}
EOF
}

cmd_node_up() {
  local t0 reason bins i name
  t0=$(now)
  reason=$(why_unhealthy)
  if [ -n "$reason" ]; then
    log "node up: the control plane is not up ($reason); starting it first"
    cmd_up >&2
  fi
  load_ports
  if [ -f "$NODE_MARKER" ] && node_why_unhealthy >/dev/null && [ -z "$(node_why_unhealthy)" ]; then
    echo "real nodes already up"
    return 0
  fi
  if [ -d "$NODE_DIR" ]; then
    log "real nodes in $NODE_DIR are not usable: $(node_why_unhealthy); stopping them and starting afresh"
    cmd_node_down >&2
  fi
  [ "$(id -u)" = 0 ] || { log "FAILED: real nodes need root (kubelet, containerd, mounts)"; exit 1; }

  local KUBELET_BIN='' CONTAINERD_BIN='' PAUSE_ARCHIVE='' K8S_BIN='' ETCD_BIN='' KWOK_BIN=''
  bins=$("$here/build.sh" node) || { log "FAILED: build.sh node"; exit 1; }
  eval "$bins"
  RUNC=$(command -v runc) || { log "FAILED: runc not found"; exit 1; }
  mkdir -p "$NODE_DIR"
  trap on_node_up_exit EXIT
  trap 'exit 130' INT TERM

  local ports n=$((NODE_COUNT * 2))
  read -r -a ports <<<"$(free_ports "$n")"
  {
    echo "NODE_COUNT=$NODE_COUNT"
    echo "KUBELET_BIN=$KUBELET_BIN"
    echo "CONTAINERD_BIN=$CONTAINERD_BIN"
    echo "RUNC=$RUNC"
    for ((i = 0; i < NODE_COUNT; i++)); do
      echo "KUBELET_PORT_$i=${ports[2 * i]}"
      echo "KUBELET_HEALTHZ_PORT_$i=${ports[2 * i + 1]}"
    done
  } >"$NODE_DIR/node.env"
  load_node_env

  # Certificates: each kubelet's client identity (the Node authorizer's system:node:<name>) and
  # serving certificate for its address.
  for ((i = 0; i < NODE_COUNT; i++)); do
    name=$(node_name "$i")
    (umask 077 && leaf "node-$i" "/O=system:nodes/CN=system:node:$name" "extendedKeyUsage=clientAuth")
    (umask 077 && leaf "kubelet-$i" "/CN=$name" "extendedKeyUsage=serverAuth
subjectAltName=IP:$name")
    mkdir -p "$NODE_DIR/n$i"
    kubeconfig "$NODE_DIR/n$i/kubelet.kubeconfig" "node-$i"
    write_containerd_config "$i"
    write_kubelet_config "$i"
  done

  record_node_cgroups
  # The mount namespace (see the top of this file).
  mkdir -p "$NODE_DIR/sysctl"
  start node-ns unshare --mount --propagation private -- bash "$here/node/ns.sh" "$NODE_DIR"
  wait_for node-ns 10 test -f "$NODE_DIR/ns-ready"
  log "node mount namespace ready (pid $(node_ns_pid)) after $(since "$t0")s"

  for ((i = 0; i < NODE_COUNT; i++)); do
    in_node_ns "containerd-$i" "$CONTAINERD_BIN/containerd" --config "$NODE_DIR/n$i/containerd/config.toml" \
      --log-level warn
  done
  for ((i = 0; i < NODE_COUNT; i++)); do
    wait_for "containerd-$i" 30 containerd_up "$i"
    ctr_ "$i" images import "$PAUSE_ARCHIVE" >"$LOGS/ctr-import.log" 2>&1 ||
      { cat "$LOGS/ctr-import.log" >&2; fail "containerd-$i" "could not import $PAUSE_ARCHIVE"; }
  done
  log "containerd $CONTAINERD_VERSION x$NODE_COUNT ready, sandbox image $PAUSE_IMAGE imported after $(since "$t0")s"

  for ((i = 0; i < NODE_COUNT; i++)); do
    name=$(node_name "$i")
    # PATH: the runc shim is found next to containerd.
    in_node_ns "kubelet-$i" env PATH="$CONTAINERD_BIN:$PATH" "$KUBELET_BIN/kubelet" \
      --config="$NODE_DIR/n$i/kubelet/config.yaml" --kubeconfig="$NODE_DIR/n$i/kubelet.kubeconfig" \
      --root-dir="$NODE_DIR/n$i/kubelet/root" --hostname-override="$name" \
      --node-labels="$NODE_LABEL=real" --v=1
  done
  for ((i = 0; i < NODE_COUNT; i++)); do wait_for "kubelet-$i" 60 kubelet_healthy "$i"; done
  wait_for "kubelet-0" 90 nodes_real_ready
  log "$NODE_COUNT real nodes Ready after $(since "$t0")s"

  echo "$VERSIONS containerd=$CONTAINERD_VERSION nodes=$NODE_COUNT" >"$NODE_MARKER"
  trap - EXIT INT TERM
  echo "real nodes up: $(for ((i = 0; i < NODE_COUNT; i++)); do printf '%s ' "$(node_name "$i")"; done)(kubelet $K8S_VERSION, containerd $CONTAINERD_VERSION, $("$RUNC" --version | head -1)); took $(since "$t0")s"
}

on_node_up_exit() {
  local rc=$?
  if [ ! -f "$NODE_MARKER" ]; then
    node_stop || true
    log "node up failed; logs kept in $LOGS (cluster.sh node down removes the node state)"
  fi
  exit "$rc"
}

# node_why_unhealthy: empty when the recorded nodes run and are Ready.
node_why_unhealthy() {
  [ -f "$NODE_MARKER" ] || { echo "node ready marker missing"; return; }
  load_ports || { echo "the control plane's ports.env is missing"; return; }
  [ "$(cat "$NODE_MARKER")" = "$VERSIONS containerd=$CONTAINERD_VERSION nodes=$NODE_COUNT" ] ||
    { echo "built for other versions ($(cat "$NODE_MARKER"))"; return; }
  load_node_env || { echo "node.env missing"; return; }
  local name pid
  for name in $(node_components); do
    pid=$(pid_of "$name") || { echo "$name: no pid file"; return; }
    alive "$pid" || { echo "$name: pid $pid is not running"; return; }
  done
  nodes_real_ready || echo "not all $NODE_COUNT real nodes are Ready"
}

# node_stop: kubelets first (so nothing restarts the containers), then every container of every
# node's containerd (so the shims exit), the containerds, the namespace holder; then whatever still
# runs in the node mount namespace or under a shim of ours (by PID), and the pod cgroups.
node_stop() {
  [ -d "$NODE_DIR" ] || return 0
  load_node_env || true
  local i name pid pids
  for ((i = 0; i < ${NODE_COUNT:-0}; i++)); do stop_one "kubelet-$i"; done
  if [ -n "${CONTAINERD_BIN:-}" ]; then
    for ((i = 0; i < NODE_COUNT; i++)); do
      pid=$(pid_of "containerd-$i") && alive "$pid" || continue
      local ids id
      ids=$(ctr_ "$i" tasks ls -q 2>/dev/null || true)
      for id in $ids; do ctr_ "$i" tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
      for id in $ids; do
        local k
        for k in $(seq 50); do ctr_ "$i" tasks delete "$id" >/dev/null 2>&1 && break; sleep 0.1; done
      done
      for id in $(ctr_ "$i" containers ls -q 2>/dev/null || true); do
        ctr_ "$i" containers delete "$id" >/dev/null 2>&1 || true
      done
    done
  fi
  for ((i = 0; i < ${NODE_COUNT:-0}; i++)); do stop_one "containerd-$i"; done
  # Leftovers: processes in our mount namespace (shims) and their descendants (containers).
  local ns=''
  pid=$(pid_of node-ns) && alive "$pid" && ns=$(readlink "/proc/$pid/ns/mnt")
  if [ -n "$ns" ]; then
    pids=$(node_ns_members "$ns" "$pid")
    if [ -n "$pids" ]; then
      log "killing what still runs in the node namespace: $pids"
      # shellcheck disable=SC2086
      kill -KILL $pids 2>/dev/null || true
    fi
  fi
  stop_one node-ns
  remove_node_cgroups
  rm -f "$NODE_MARKER"
}

# node_ns_members NS HOLDER: PIDs (other than HOLDER) in mount namespace NS, with their descendants.
node_ns_members() {
  local ns=$1 holder=$2 p members=() all
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = "$holder" ] && continue
    [ "$(readlink "/proc/$p/ns/mnt" 2>/dev/null)" = "$ns" ] && members+=("$p")
  done
  [ ${#members[@]} -gt 0 ] || return 0
  all=$(ps -e -o pid=,ppid= | awk -v roots="${members[*]}" '
    BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
    { parent[$1] = $2 }
    END {
      changed = 1
      while (changed) { changed = 0; for (p in parent) if (!(p in keep) && (parent[p] in keep)) { keep[p] = 1; changed = 1 } }
      for (p in keep) printf "%s ", p
    }')
  echo "$all"
}

# stop_one NAME: TERM a recorded process, KILL it after 10 s, wait until it is gone.
stop_one() {
  local name=$1 pid i
  pid=$(pid_of "$name") || return 0
  alive "$pid" || { rm -f "$PIDS/$name.pid"; return 0; }
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 50); do alive "$pid" || break; sleep 0.1; done
  fi
  rm -f "$PIDS/$name.pid"
}

# record_node_cgroups: the hierarchies without a /k8s.io cgroup before the nodes start (containerd
# creates it there: ours to remove).
record_node_cgroups() {
  local mnt
  for mnt in /sys/fs/cgroup/*; do
    [ -d "$mnt" ] && ! [ -L "$mnt" ] && ! [ -e "$mnt/k8s.io" ] && echo "$mnt/k8s.io"
  done >"$NODE_DIR/cgroups-created"
}

# remove_node_cgroups: the /k8s.io cgroups record_node_cgroups listed and what runc left below
# them, deepest first; only empty ones (rmdir). One with a process in it is left and reported.
remove_node_cgroups() {
  local root d
  [ -f "$NODE_DIR/cgroups-created" ] || return 0
  while IFS= read -r root; do
    [ -d "$root" ] || continue
    while IFS= read -r d; do
      rmdir "$d" 2>/dev/null || log "WARNING: cannot remove cgroup $d (still in use?)"
    done < <(find "$root" -depth -type d)
  done <"$NODE_DIR/cgroups-created"
}

cmd_node_down() {
  node_stop
  if [ -d "$NODE_DIR" ]; then
    # The kubelets' client and serving certificates stay in pki/ with the rest of the cluster.
    rm -rf "$NODE_DIR"
  fi
  # The Node objects: pods bound to them would otherwise wait for kubelets that are gone.
  if [ -z "$(why_unhealthy)" ]; then
    load_ports
    local i
    for ((i = 0; i < NODE_COUNT; i++)); do
      api "/api/v1/nodes/$(node_name "$i")" -X DELETE -o /dev/null 2>/dev/null || true
    done
  fi
  echo "real nodes down"
}

cmd_node_status() {
  local ok=0 name pid a
  [ -d "$NODE_DIR" ] || { echo "no real nodes in $NODE_DIR"; return 1; }
  load_node_env || { echo "node.env missing"; return 1; }
  load_ports
  printf '%-24s %-8s %s\n' PROCESS PID ALIVE
  for name in $(node_components); do
    pid=$(pid_of "$name") || pid=-
    if alive "$pid"; then a=yes; else a=no; ok=1; fi
    printf '%-24s %-8s %s\n' "$name" "$pid" "$a"
  done
  local n
  n=$(node_ready_count)
  [ "$n" -ge "$NODE_COUNT" ] || ok=1
  echo "real nodes Ready: $n/$NODE_COUNT"
  return $ok
}

# node load ARCHIVE: the image in ARCHIVE into every node's containerd, under the name it carries.
cmd_node_load() {
  local archive=$1 i
  local reason
  [ -f "$archive" ] || { log "node load: $archive does not exist"; exit 1; }
  reason=$(node_why_unhealthy)
  [ -z "$reason" ] || { log "node load: the real nodes are not up: $reason"; exit 1; }
  load_node_env
  # The name and manifest digest the archive's OCI index records: the image is also named
  # <name>@<digest>, which CRI looks up for a pod that names it by digest (a pull would record it).
  local name digest
  read -r name digest < <(tar -xOf "$archive" index.json | "$PYTHON" -c '
import json, sys
m = json.load(sys.stdin)["manifests"][0]
print(m.get("annotations", {}).get("org.opencontainers.image.ref.name", ""), m["digest"])')
  [ -n "$name" ] && [ -n "$digest" ] || { log "node load: no image name or digest in $archive's index.json"; exit 1; }
  for ((i = 0; i < NODE_COUNT; i++)); do
    # (ctr repeats the daemon's deprecation warnings on stderr: shown only on failure)
    { ctr_ "$i" images import "$archive" &&
      ctr_ "$i" images tag --force "$name" "${name%:*}@$digest"; } >"$LOGS/ctr-import.log" 2>&1 ||
      { cat "$LOGS/ctr-import.log" >&2; log "node load: import into containerd-$i failed"; exit 1; }
  done
  echo "loaded $archive into $NODE_COUNT nodes: $name, ${name%:*}@$digest"
}
