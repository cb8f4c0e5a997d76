#!/usr/bin/env bash
# Builds (once) what the local control plane, the demos and the tests run, from the Go module proxy,
# at the versions pinned in versions.env:
#   control-plane  kube-apiserver, kube-controller-manager, kube-scheduler, etcd and kwok
#   kubectl        kubectl, from the same Kubernetes modules, beside kube-apiserver
#   helm           the helm CLI (the chart's lint, template and install tests)
#   prometheus     the Prometheus server (step-gate tests, make demo-checks)
# Usage: build.sh [WHAT...] (default: control-plane kubectl). Each set is cached per version under
# $DEPLOYER_CACHE (default ~/.cache/deployer-operator); a binary whose version output already
# matches is not rebuilt. Prints the paths as shell assignments, for `eval`: K8S_BIN, ETCD_BIN and
# KWOK_BIN (directories), KUBECTL, HELM and PROMETHEUS (binaries).
#
#   node           the real node's parts (cluster.sh node up), with the control plane: the kubelet
#                  (same Kubernetes modules), containerd with its runc shim and ctr
#                  (gomod/containerd), the pod sandbox image (node/pause.c, static musl, as an OCI
#                  archive); Debian's runc, musl-tools and buildah from apt. Prints KUBELET_BIN,
#                  CONTAINERD_BIN and PAUSE_ARCHIVE.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

cache=${DEPLOYER_CACHE:-$HOME/.cache/deployer-operator}
k8s_bin=$cache/k8s-$K8S_VERSION
etcd_bin=$cache/etcd-$ETCD_VERSION
kwok_bin=$cache/kwok-$KWOK_VERSION
helm_bin=$cache/helm-$HELM_VERSION
prometheus_bin=$cache/prometheus-$PROMETHEUS_VERSION

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "build.sh: $*" >&2; }

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(control-plane kubectl)
for w in "${what[@]}"; do
  case $w in
    control-plane | kubectl | helm | prometheus) ;;
    node) what+=(control-plane) ;;
    *) log "unknown: $w (control-plane, kubectl, helm, prometheus, node)"; exit 2 ;;
  esac
done
wants() { local w; for w in "${what[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

# has_version BIN EXPECTED [ARGS]: the cached binary exists and its version output (ARGS, default
# --version) contains the pinned version.
# (Output captured first: `grep -q` closing the pipe early would SIGPIPE a multi-line --version, and
# pipefail would then report a mismatch.)
has_version() {
  local bin=$1 want=$2 v
  shift 2
  [ $# -gt 0 ] || set -- --version
  [ -x "$bin" ] && v=$("$bin" "$@" 2>/dev/null) && grep -qF -- "$want" <<<"$v"
}

# timed LABEL CMD...: runs CMD and logs how long it took.
timed() {
  local label=$1 t0=$SECONDS
  shift
  "$@"
  log "$label took $((SECONDS - t0))s"
}

command -v go >/dev/null || { log "go is not on PATH; install Go >= 1.26 (see README prerequisites)"; exit 1; }

# Version stamps as upstream's hack/lib/version.sh sets them; without them /version (and
# `kubectl version`) say v0.0.0.
k8s_ldflags() {
  local minor=${K8S_VERSION#v1.} p ldf="-s -w"
  minor=${minor%%.*}
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldf="$ldf -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
    ldf="$ldf -X $p.gitCommit=0000000000000000000000000000000000000000 -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  echo "$ldf"
}
k8s_build() { (cd "$here/gomod/k8s" && go build -trimpath -tags=selinux,notest,grpcnotrace -ldflags "$(k8s_ldflags)" "$@"); }
has_kubectl() { has_version "$k8s_bin/kubectl" "Client Version: $K8S_VERSION" version --client; }

if wants control-plane; then
  if ! { has_version "$k8s_bin/kube-apiserver" "$K8S_VERSION" &&
         has_version "$k8s_bin/kube-controller-manager" "$K8S_VERSION" &&
         has_version "$k8s_bin/kube-scheduler" "$K8S_VERSION"; }; then
    log "building Kubernetes $K8S_VERSION control plane and kubectl into $k8s_bin (cold: 15-30 min on 2 cores)"
    rm -rf "$k8s_bin.tmp" && mkdir -p "$k8s_bin.tmp"
    timed "Kubernetes $K8S_VERSION" k8s_build -o "$k8s_bin.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl
    rm -rf "$k8s_bin" && mv "$k8s_bin.tmp" "$k8s_bin"
  fi

  if ! has_version "$etcd_bin/etcd" "${ETCD_VERSION#v}"; then
    log "building etcd $ETCD_VERSION into $etcd_bin"
    rm -rf "$etcd_bin.tmp" && mkdir -p "$etcd_bin.tmp"
    (cd "$here/gomod/etcd" && timed "etcd $ETCD_VERSION" go build -trimpath -ldflags "-s -w" -o "$etcd_bin.tmp/etcd" go.etcd.io/etcd/server/v3)
    rm -rf "$etcd_bin" && mv "$etcd_bin.tmp" "$etcd_bin"
  fi

  if ! [ -x "$kwok_bin/kwok" ] || ! [ -f "$kwok_bin/stages/node-initialize.yaml" ]; then
    log "building kwok $KWOK_VERSION into $kwok_bin"
    rm -rf "$kwok_bin.tmp" && mkdir -p "$kwok_bin.tmp/stages"
    (cd "$here/gomod/kwok" && timed "kwok $KWOK_VERSION" go build -trimpath -ldflags "-s -w" -o "$kwok_bin.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
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
fi

# kubectl alone (a control plane cached before kubectl joined the set, or no control plane at all):
# the same modules and flags, so a warm Go build cache makes this quick.
if wants kubectl; then
  if ! has_kubectl; then
    log "building kubectl $K8S_VERSION into $k8s_bin"
    mkdir -p "$k8s_bin"
    timed "kubectl $K8S_VERSION" k8s_build -o "$k8s_bin/kubectl.tmp" k8s.io/kubernetes/cmd/kubectl
    mv "$k8s_bin/kubectl.tmp" "$k8s_bin/kubectl"
    has_kubectl || { log "FAILED: $k8s_bin/kubectl does not report $K8S_VERSION"; exit 1; }
  fi
  echo "KUBECTL=$k8s_bin/kubectl"
fi

if wants helm; then
  if ! has_version "$helm_bin/helm" "$HELM_VERSION" version --short; then
    log "building helm $HELM_VERSION into $helm_bin (cold: about 5 min on 2 cores)"
    rm -rf "$helm_bin.tmp" && mkdir -p "$helm_bin.tmp"
    # The version stamp as helm's own Makefile sets it (otherwise `helm version` says v4.3).
    (cd "$here/gomod/helm" && timed "helm $HELM_VERSION" go build -trimpath \
      -ldflags "-s -w -X helm.sh/helm/v4/internal/version.version=$HELM_VERSION -X helm.sh/helm/v4/internal/version.gitTreeState=clean" \
      -o "$helm_bin.tmp/helm" helm.sh/helm/v4/cmd/helm)
    rm -rf "$helm_bin" && mv "$helm_bin.tmp" "$helm_bin"
    has_version "$helm_bin/helm" "$HELM_VERSION" version --short || { log "FAILED: $helm_bin/helm does not report $HELM_VERSION"; exit 1; }
  fi
  echo "HELM=$helm_bin/helm"
fi

if wants prometheus; then
  if ! has_version "$prometheus_bin/prometheus" "version $PROMETHEUS_RELEASE"; then
    log "building Prometheus $PROMETHEUS_RELEASE (module $PROMETHEUS_VERSION) into $prometheus_bin (cold: about 5 min on 2 cores)"
    rm -rf "$prometheus_bin.tmp" && mkdir -p "$prometheus_bin.tmp"
    # remove_all_sd: no cloud service discoveries (AWS, Azure, GCE, Kubernetes, ...), which would
    # triple the build; static and file targets, all the tests and demos use, stay. No
    # builtinassets: the web UI is absent, the HTTP API (/api/v1/...) is all that is queried.
    v=github.com/prometheus/common/version
    (cd "$here/gomod/prometheus" && timed "Prometheus $PROMETHEUS_RELEASE" go build -trimpath -tags=remove_all_sd \
      -ldflags "-s -w -X $v.Version=$PROMETHEUS_RELEASE -X $v.Revision=$PROMETHEUS_VERSION -X $v.Branch=HEAD -X $v.BuildUser=deployer-operator -X $v.BuildDate=19700101-00:00:00" \
      -o "$prometheus_bin.tmp/prometheus" github.com/prometheus/prometheus/cmd/prometheus)
    rm -rf "$prometheus_bin" && mv "$prometheus_bin.tmp" "$prometheus_bin"
    has_version "$prometheus_bin/prometheus" "version $PROMETHEUS_RELEASE" || { log "FAILED: $prometheus_bin/prometheus does not report $PROMETHEUS_RELEASE"; exit 1; }
  fi
  echo "PROMETHEUS=$prometheus_bin/prometheus"
fi

if wants node; then
  kubelet_bin=$cache/kubelet-$K8S_VERSION
  containerd_bin=$cache/containerd-$CONTAINERD_VERSION
  pause_hash=$(sha256sum "$here/node/pause.c" | cut -c1-12)
  pause_dir=$cache/node-pause-$pause_hash

  # Debian packages: runc (the OCI runtime containerd's shim calls), musl-tools (the sandbox
  # process), buildah (its image). Installed when missing, as root; otherwise named.
  missing=()
  for p in runc musl-tools buildah; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "missing Debian packages: ${missing[*]}; as root: apt-get install ${missing[*]}"; exit 1; }
    log "installing ${missing[*]} from apt"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  if ! has_version "$kubelet_bin/kubelet" "$K8S_VERSION"; then
    log "building the kubelet $K8S_VERSION into $kubelet_bin (cold: about 5 min after the control plane)"
    rm -rf "$kubelet_bin.tmp" && mkdir -p "$kubelet_bin.tmp"
    timed "kubelet $K8S_VERSION" k8s_build -o "$kubelet_bin.tmp/" k8s.io/kubernetes/cmd/kubelet
    rm -rf "$kubelet_bin" && mv "$kubelet_bin.tmp" "$kubelet_bin"
  fi

  if ! has_version "$containerd_bin/containerd" "$CONTAINERD_VERSION" || ! [ -x "$containerd_bin/ctr" ] ||
    ! [ -x "$containerd_bin/containerd-shim-runc-v2" ]; then
    log "building containerd $CONTAINERD_VERSION into $containerd_bin (cold: about 4 min)"
    mkdir -p "$containerd_bin.tmp"
    # Static, without the cgo-only snapshotters (btrfs) and the ones the node does not use.
    (cd "$here/gomod/containerd" && go build -trimpath \
      -tags "urfave_cli_no_docs no_btrfs no_devmapper no_zfs osusergo netgo static_build" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$CONTAINERD_VERSION -X github.com/containerd/containerd/v2/version.Revision=gomod" \
      -o "$containerd_bin.tmp/" github.com/containerd/containerd/v2/cmd/containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr)
    rm -rf "$containerd_bin" && mv "$containerd_bin.tmp" "$containerd_bin"
  fi

  if ! [ -s "$pause_dir/pause.oci.tar" ]; then
    log "building the pod sandbox image into $pause_dir"
    rm -rf "$pause_dir.tmp" && mkdir -p "$pause_dir.tmp"
    musl-gcc -static -Os -s -Wall -Wextra -Werror -o "$pause_dir.tmp/pause" "$here/node/pause.c"
    [ "$(id -u)" = 0 ] || { log "building the sandbox image with buildah needs root"; exit 1; }
    ctr=$(buildah from scratch)
    buildah copy --quiet "$ctr" "$pause_dir.tmp/pause" /pause >/dev/null
    buildah config --entrypoint '["/pause"]' --user 65535:65535 "$ctr"
    buildah commit --quiet --rm --timestamp 0 "$ctr" "$PAUSE_IMAGE" >/dev/null
    buildah push --quiet --format oci "$PAUSE_IMAGE" "oci-archive:$pause_dir.tmp/pause.oci.tar:$PAUSE_IMAGE" >/dev/null
    buildah rmi "$PAUSE_IMAGE" >/dev/null
    rm -rf "$pause_dir" && mv "$pause_dir.tmp" "$pause_dir"
  fi
  echo "KUBELET_BIN=$kubelet_bin"
  echo "CONTAINERD_BIN=$containerd_bin"
  echo "PAUSE_ARCHIVE=$pause_dir/pause.oci.tar"
fi
