#!/usr/bin/env bash
# The operator's container image, built here without Docker or a registry (docs/operations.md,
# "The image"), from the one Dockerfile that `docker build` and `minikube image build` use too:
#
#   scripts/image.sh build    make image: buildah runs the Dockerfile, unchanged, with RUST_IMAGE set
#                             to a local builder base (below); the image goes to the archive
#                             target/image/deployer-operator.oci.tar (+ .ref, .digest)
#   scripts/image.sh base     only the local builder base (build does this when it is missing)
#   scripts/image.sh test     make image-test: scripts/image-test.py on the archive
#
# The local builder base stands in for the Dockerfile's default RUST_IMAGE (rust:<X.Y>-slim-bookworm,
# which cannot be pulled here): Debian bookworm from Debian's archive (debootstrap: minbase +
# ca-certificates, gcc, libc6-dev, as in the rust slim images) plus this machine's rustup toolchain
# at the same Rust version, with the rust image's RUSTUP_HOME, CARGO_HOME and PATH. Every stage of
# the Dockerfile then runs here as written, including its apt-get and cargo downloads.
#
# The archive is both an OCI image layout (index.json) and a `docker save` archive (manifest.json),
# the way `docker save` of Docker >= 25 writes it, so the same file goes to containerd
# (`ctr images import`), to `minikube image load`, `docker load` and `podman load`.
# The image is built with --timestamp 0: the same binary gives the same image digest.
#
# Environment: IMG (default deployer-operator:dev; the name in the archive), RUST_IMAGE (use a
# builder base of your own instead, e.g. the real rust image where a registry is reachable),
# BUILDAH_ISOLATION (default chroot).
set -euo pipefail
cd "$(dirname "$0")/.."

IMG=${IMG:-deployer-operator:dev}
out=target/image
archive=$out/deployer-operator.oci.tar
isolation=${BUILDAH_ISOLATION:-chroot}

log() { echo "image: $*" >&2; }
die() {
  echo "image: FAILED: $*" >&2
  exit 1
}

# need_apt PKG...: install missing Debian packages (root only; otherwise say what to install).
need_apt() {
  local missing=() p
  for p in "$@"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    die "missing Debian packages: ${missing[*]}; as root: apt-get install ${missing[*]}"
  fi
  log "installing ${missing[*]} from apt"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The Rust version of the Dockerfile's default RUST_IMAGE (rust:1.95-slim-bookworm → 1.95).
dockerfile_rust() { sed -nE 's/^ARG RUST_IMAGE=rust:([0-9]+\.[0-9]+)-slim-bookworm$/\1/p' Dockerfile; }

# The full name docker and the kubelet give IMG (deployer-operator:dev → docker.io/library/…).
full_name() {
  local name=$1 first=${1%%/*}
  if [[ $name != */* ]]; then
    name=docker.io/library/$name
  elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
    name=docker.io/$name
  fi
  echo "$name"
}

# The CA bundle this machine's own TLS clients use.
host_bundle() {
  local f
  for f in "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [ -n "$f" ] && [ -f "$f" ] && { echo "$f"; return; }
  done
  die "no CA bundle on this machine (SSL_CERT_FILE, /etc/ssl/certs/ca-certificates.crt)"
}

base_name() {
  local want host
  want=$(dockerfile_rust)
  [ -n "$want" ] || die "no 'ARG RUST_IMAGE=rust:X.Y-slim-bookworm' in the Dockerfile"
  host=$(rustc --version | awk '{print $2}')
  [[ $host == "$want".* ]] ||
    die "the Dockerfile builds with Rust $want, this machine's rustc is $host: install $want (rustup toolchain install $want) or set RUST_IMAGE"
  # The suffix names the recipe below: change it with the recipe.
  echo "localhost/deployer-operator-rust-base:$host-bookworm-r2"
}

cmd_base() {
  [ "$(id -u)" = 0 ] || die "the builder base needs root (debootstrap, buildah's storage); run as root or set RUST_IMAGE"
  need_apt buildah debootstrap debian-archive-keyring
  local base sysroot version rootfs ctr t0=$SECONDS
  base=$(base_name)
  if buildah inspect --type image "$base" >/dev/null 2>&1; then
    log "builder base $base is there"
    return 0
  fi
  # The Dockerfile's `rustup target add x86_64-unknown-linux-musl` must find the target in the
  # toolchain copied below: inside the build, rustup has no CA it trusts for its download (a
  # TLS-inspecting proxy may sit in between; only cargo gets this machine's bundle), so the target
  # comes from this machine's rustup, once.
  if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
    log "adding the target x86_64-unknown-linux-musl to this machine's toolchain (rustup)"
    rustup target add x86_64-unknown-linux-musl >&2 || die "rustup target add x86_64-unknown-linux-musl"
  fi
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | awk '{print $2}')
  rootfs=$out/base-rootfs
  rm -rf "$rootfs"
  mkdir -p "$rootfs"
  log "builder base $base: Debian bookworm (debootstrap) + the rustup toolchain $version of this machine"
  debootstrap --variant=minbase --include=ca-certificates,gcc,libc6-dev bookworm "$rootfs" \
    http://deb.debian.org/debian >"$out/debootstrap.log" 2>&1 ||
    { tail -20 "$out/debootstrap.log" >&2; die "debootstrap (log: $out/debootstrap.log)"; }
  # The toolchain as the rust images lay it out; its documentation stays out (700 MB).
  local tc=$rootfs/usr/local/rustup/toolchains/$version-x86_64-unknown-linux-gnu
  mkdir -p "$tc" "$rootfs/usr/local/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$tc" -xf -
  install -m 0755 "$(command -v rustup)" "$rootfs/usr/local/cargo/bin/rustup"
  local p
  for p in cargo rustc rustdoc cargo-clippy clippy-driver cargo-fmt rustfmt; do
    ln -sf rustup "$rootfs/usr/local/cargo/bin/$p"
  done
  printf 'version = "12"\ndefault_toolchain = "%s-x86_64-unknown-linux-gnu"\nprofile = "minimal"\n' \
    "$version" >"$rootfs/usr/local/rustup/settings.toml"
  # This machine's CA bundle, for cargo's downloads only (a TLS-inspecting proxy may sit between
  # it and crates.io): beside, not in, /etc/ssl/certs, so the runtime stage still ships Debian's
  # bundle alone (image-test.py checks that no certificate of this machine's own got in).
  mkdir -p "$rootfs/usr/local/share/deployer-build"
  cp "$(host_bundle)" "$rootfs/usr/local/share/deployer-build/host-ca-bundle.crt"
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/dev/* "$rootfs"/proc/* "$rootfs"/sys/*
  ctr=$(buildah from scratch)
  buildah copy --quiet "$ctr" "$rootfs" / >/dev/null
  buildah config --env RUSTUP_HOME=/usr/local/rustup --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env RUST_VERSION="$version" --env CARGO_HTTP_CAINFO=/usr/local/share/deployer-build/host-ca-bundle.crt \
    --cmd bash \
    --label "org.opencontainers.image.description=Local stand-in for rust:$version-slim-bookworm: Debian bookworm (debootstrap) + the host's rustup toolchain" \
    "$ctr"
  buildah commit --quiet --rm "$ctr" "$base" >/dev/null
  rm -rf "$rootfs"
  log "builder base $base ready after $((SECONDS - t0)) s"
}

cmd_build() {
  [ "$(id -u)" = 0 ] || die "buildah here needs root (its storage is /var/lib/containers); or build with docker: make docker-build"
  need_apt buildah
  command -v python3 >/dev/null || die "python3 is needed"
  local base t0=$SECONDS name digest
  if [ -n "${RUST_IMAGE:-}" ]; then base=$RUST_IMAGE; else cmd_base; base=$(base_name); fi
  name=$(full_name "$IMG")
  mkdir -p "$out"
  log "buildah build of the Dockerfile, RUST_IMAGE=$base, as $name (isolation $isolation)"
  # --pull=never: nothing is fetched from a registry; --layers: the dependency layer stays cached
  # (old layers stay in /var/lib/containers until `buildah prune`); --force-rm: no working
  # container is left behind by a failed build.
  buildah build --pull=never --layers --force-rm --network host --isolation "$isolation" --timestamp 0 \
    --build-arg RUST_IMAGE="$base" -f Dockerfile -t "$name" . >"$out/build.log" 2>&1 ||
    { tail -40 "$out/build.log" >&2; die "buildah build (log: $out/build.log)"; }
  rm -f "$archive.tmp"
  buildah push --quiet --format oci "$name" "oci-archive:$archive.tmp:$name" >/dev/null
  # Add manifest.json (the `docker save` index) beside index.json, so docker and minikube load it too.
  python3 scripts/image-test.py --add-docker-manifest "$archive.tmp" "$name"
  mv "$archive.tmp" "$archive"
  digest=$(python3 scripts/image-test.py --digest "$archive")
  echo "$name" >"$archive.ref"
  echo "$digest" >"$archive.digest"
  log "built $archive ($(stat -c %s "$archive") bytes) in $((SECONDS - t0)) s: $name, manifest $digest"
}

case ${1:-} in
  base) cmd_base ;;
  build) cmd_build ;;
  test)
    # runc: the test runs the image's filesystem the way the pod runs it.
    if [ "$(id -u)" = 0 ]; then need_apt runc; fi
    exec python3 scripts/image-test.py "$archive"
    ;;
  *) die "usage: $0 base|build|test" ;;
esac
