#!/usr/bin/env bash
# Builds (once) Argo Rollouts' controller from its Go module, for `make bench PEERS=argo`, into
# $DEPLOYER_CACHE/argo-rollouts-$ARGO_VERSION/ (default ~/.cache/deployer-operator); a cached binary
# whose --version names the pinned version is not rebuilt. Nothing is downloaded but Go modules
# (and the Go toolchain go1.27.3, which the module proxy serves as a module).
#
# Prints, for `eval`:
#   ARGO_BIN=<path of rollouts-controller>
#   ARGO_CRDS=<manifests/crds of the module, in the Go module cache>   (read at run time, never copied)
#   ARGO_VERSION=<version>
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ARGO_VERSION=v1.10.2 # keep in step with gomod/go.mod
cache=${DEPLOYER_CACHE:-$HOME/.cache/deployer-operator}
out=$cache/argo-rollouts-$ARGO_VERSION
bin=$out/rollouts-controller
module=github.com/argoproj/argo-rollouts

# v1.10.2's go.mod says `go 1.26.10`; the machine's Go is older, so take go1.27.3 from the proxy.
export GOTOOLCHAIN=go1.27.3 CGO_ENABLED=0 GOFLAGS=-buildvcs=false

log() { echo "argo build.sh: $*" >&2; }
command -v go >/dev/null || { log "go is not on PATH"; exit 1; }

has_version() { [ -x "$1" ] && local v && v=$("$1" --version 2>/dev/null) && grep -qF -- "$2" <<<"$v"; }

cd "$here/gomod"
if ! has_version "$bin" "$ARGO_VERSION"; then
  log "building Argo Rollouts $ARGO_VERSION controller into $out (cold: ~10 min on 2 cores)"
  t0=$(date +%s)
  mkdir -p "$out.tmp"
  # The binary keeps upstream's name: client-go's user agent is `rollouts-controller/<version> …`,
  # which the benchmark filters the audit log on.
  nice -n 10 go build -trimpath \
    -ldflags "-s -w -X $module/utils/version.version=${ARGO_VERSION#v}" \
    -o "$out.tmp/rollouts-controller" "$module/cmd/rollouts-controller"
  rm -rf "$out" && mv "$out.tmp" "$out"
  log "built in $(($(date +%s) - t0)) s"
fi

go mod download "$module"
dir=$(go list -m -f '{{.Dir}}' "$module")
[ -f "$dir/manifests/crds/rollout-crd.yaml" ] || { log "no manifests/crds in $dir"; exit 1; }
echo "ARGO_BIN=$bin"
echo "ARGO_CRDS=$dir/manifests/crds"
echo "ARGO_VERSION=$ARGO_VERSION"
