#!/usr/bin/env bash
# The real nodes' mount namespace (node.sh starts this under `unshare --mount --propagation
# private`, so nothing mounted here is seen outside): fresh tmpfs on /run and /var/log, and the
# kernel settings the kubelet insists on shown to it read-only, without changing the host's. Then
# it holds the namespace until it is sent SIGTERM.
set -euo pipefail
dir=$1
mount -t tmpfs -o mode=0755,size=64m,nosuid,nodev deployer-node-run /run
mount -t tmpfs -o mode=0755,size=64m,nosuid,nodev deployer-node-log /var/log
for kv in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  key=${kv%%=*}
  mkdir -p "$dir/sysctl/$(dirname "$key")"
  echo "${kv#*=}" >"$dir/sysctl/$key"
  mount --bind "$dir/sysctl/$key" "/proc/sys/$key"
  mount -o remount,bind,ro "/proc/sys/$key"
done
touch "$dir/ns-ready"
exec python3 -c 'import signal, sys; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); signal.pause()' "$dir"
