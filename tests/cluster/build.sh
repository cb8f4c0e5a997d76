#!/usr/bin/env bash
# Builds (once) the binaries of the local control plane from the Go module proxy:
# kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok, at the versions pinned in
# versions.env. Each set is cached per version under $DEPLOYER_CACHE (default
# ~/.cache/deployer-operator); a binary whose `--version` already matches is not rebuilt.
# Prints the three bin directories as shell assignments, for `eval`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${DEPLOYER_CACHE:-$HOME/.cache/deployer-operator}
k8s_bin=$cache/k8s-$K8S_VERSION
etcd_bin=$cache/etcd-$ETCD_VERSION
kwok_bin=$cache/kwok-$KWOK_VERSION

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build.sh: $*" >&2; }

# has_version BIN EXPECTED: the cached binary exists and reports the pinned version.
# (Output captured first: `grep -q` closing the pipe early would SIGPIPE a multi-line --version, and
# pipefail would then report a mismatch.)
has_version() { [ -x "$1" ] && local v && v=$("$1" --version 2>/dev/null) && grep -qF -- "$2" <<<"$v"; }

command -v go >/dev/null || { log "go is not on PATH; install Go >= 1.26 (see README prerequisites)"; exit 1; }

if ! { has_version "$k8s_bin/kube-apiserver" "$K8S_VERSION" &&
       has_version "$k8s_bin/kube-controller-manager" "$K8S_VERSION" &&
       has_version "$k8s_bin/kube-scheduler" "$K8S_VERSION"; }; then
  log "building Kubernetes $K8S_VERSION control plane into $k8s_bin (cold: 15-30 min on 2 cores)"
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  # Version stamps as upstream's hack/lib/version.sh sets them; without them /version says v0.0.0.
  ldf="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldf="$ldf -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$k8s_bin.tmp"
  (cd "$here/gomod/k8s" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$ldf" -o "$k8s_bin.tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler)
  rm -rf "$k8s_bin" && mv "$k8s_bin.tmp" "$k8s_bin"
fi

if ! has_version "$etcd_bin/etcd" "${ETCD_VERSION#v}"; then
  log "building etcd $ETCD_VERSION into $etcd_bin"
  mkdir -p "$etcd_bin.tmp"
  (cd "$here/gomod/etcd" && go build -trimpath -ldflags "-s -w" -o "$etcd_bin.tmp/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$etcd_bin" && mv "$etcd_bin.tmp" "$etcd_bin"
fi

if ! [ -x "$kwok_bin/kwok" ] || ! [ -f "$kwok_bin/stages/node-initialize.yaml" ]; then
  log "building kwok $KWOK_VERSION into $kwok_bin"
  mkdir -p "$kwok_bin.tmp/stages"
  (cd "$here/gomod/kwok" && go build -trimpath -ldflags "-s -w" -o "$kwok_bin.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  # kwok's stock node stages ship in its module; the pod stages are the project's own (kwok/).
  src=$(cd "$here/gomod/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage/node
  cp "$src/fast/node-initialize.yaml" "$kwok_bin.tmp/stages/node-initialize.yaml"
  cp "$src/heartbeat-with-lease/node-heartbeat-with-lease.yaml" "$kwok_bin.tmp/stages/node-heartbeat-with-lease.yaml"
  chmod -R u+w "$kwok_bin.tmp"
  rm -rf "$kwok_bin" && mv "$kwok_bin.tmp" "$kwok_bin"
fi

echo "K8S_BIN=$k8s_bin"
echo "ETCD_BIN=$etcd_bin"
echo "KWOK_BIN=$kwok_bin"
