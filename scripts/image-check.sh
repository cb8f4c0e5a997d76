#!/usr/bin/env bash
# make image-check: what can be checked of the container image on a machine without a container
# engine (docs/operations.md, "The image"). Builds the binary the Dockerfile ships — same command,
# same target, same release profile, from a copy of exactly the files the Dockerfile copies — and
# checks that it is static, small enough, and runs.
#
# Needs: rustup (the musl target is added if missing) and a musl C compiler for ring
# (Debian/Ubuntu: apt-get install musl-tools). Environment: STATIC_BIN_MAX_MB (default 27).
set -euo pipefail
cd "$(dirname "$0")/.."

target=x86_64-unknown-linux-musl
build=(cargo build --release --locked --target "$target" --bin deployer-operator)
max_mb=${STATIC_BIN_MAX_MB:-27}
# A target directory of its own, as fresh as the image's builder: never waits for, or disturbs, the
# cargo runs of development (target/ is locked while one builds).
target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}/image-check")
bin=$target_dir/$target/release/deployer-operator
context=$target_dir/context

fail() {
  echo "image-check: FAIL: $*" >&2
  exit 1
}
ok() { echo "image-check: ok: $*"; }

# 1. The Dockerfile: the same build command; a numeric non-root USER; tagged base images, never
#    :latest; every COPY source let through by .dockerignore.
grep -qF "${build[*]}" Dockerfile ||
  fail "the Dockerfile does not build with '${build[*]}'; change it and this script together"
ok "the Dockerfile builds with '${build[*]}'"
grep -Eq '^USER [1-9][0-9]*:[1-9][0-9]*$' Dockerfile || fail "the Dockerfile needs a numeric non-root USER uid:gid"
ok "runtime user: $(grep -E '^USER ' Dockerfile)"
images=$(sed -nE 's/^ARG [A-Z_]*IMAGE=(.*)$/\1/p' Dockerfile)
[ -n "$images" ] || fail "no ARG …IMAGE= base images in the Dockerfile"
for image in $images; do
  last=${image##*/}
  case $last in
    *@sha256:* | *:?*) [[ $last == *:latest ]] && fail "base image $image: never :latest" ;;
    *) fail "base image $image has no tag (that means :latest)" ;;
  esac
done
ok "base images: ${images//$'\n'/ }"
sources=$(sed -nE 's/^COPY +([^-][^ ]*( [^ ]+)*) +[^ ]+$/\1/p' Dockerfile | tr ' ' '\n' | sort -u)
for src in $sources; do
  grep -qx "!${src%/}" .dockerignore || fail ".dockerignore leaves out $src, which the Dockerfile copies"
done
ok ".dockerignore lets through what the Dockerfile copies: ${sources//$'\n'/ }"

# 2. The toolchain the builder stage installs: the musl target and a musl C compiler.
if ! rustup target list --installed | grep -qx "$target"; then
  rustup target add "$target" || fail "rustup target add $target failed (see above)"
fi
command -v x86_64-linux-musl-gcc >/dev/null || command -v musl-gcc >/dev/null ||
  fail "no musl C compiler (ring needs one for $target): apt-get install musl-tools"
ok "toolchain: $(rustc --version), target $target, $(command -v x86_64-linux-musl-gcc || command -v musl-gcc)"

# 3. The build, in a copy of the build context: only what the Dockerfile copies (modification times
#    kept, so an unchanged source is not rebuilt).
rm -rf "$context"
mkdir -p "$context"
for src in $sources; do cp -rp "$src" "$context/"; done
start=$(date +%s)
(cd "$context" && CARGO_TARGET_DIR=$target_dir "${build[@]}")
ok "built $bin from $context in $(($(date +%s) - start)) s"

# 4. Static, small, and it runs.
if command -v file >/dev/null; then
  kind=$(file -b "$bin")
  [[ $kind == *"static-pie linked"* || $kind == *"statically linked"* ]] || fail "not static: $kind"
  ok "file: ${kind%%, BuildID*}"
fi
deps=$(ldd "$bin" 2>&1 || true)
[[ $deps == *"statically linked"* || $deps == *"not a dynamic executable"* ]] || fail "ldd shows libraries: $deps"
ok "ldd: $(xargs <<<"$deps")"
size=$(stat -c %s "$bin")
((size <= max_mb * 1024 * 1024)) || fail "$bin is $size bytes, over $max_mb MB (the image must stay under 30 MB)"
ok "size: $size bytes ($(awk "BEGIN { printf \"%.1f\", $size / 1048576 }") MiB; limit $max_mb MB; the image adds a CA bundle and passwd/group, about 0.2 MB)"
version=$("$bin" --version) || fail "$bin --version failed"
"$bin" crd | diff -u crds/deployer.yaml - >/dev/null || fail "$bin crd differs from crds/deployer.yaml"
ok "runs: '$version'; 'deployer-operator crd' prints crds/deployer.yaml"
if [ "$(id -u)" = 0 ] && command -v setpriv >/dev/null; then
  # As the image's user (nothing of root's, no home directory), with an empty environment.
  setpriv --reuid=65532 --regid=65532 --clear-groups env -i "$bin" crd >/dev/null ||
    fail "$bin does not run as uid 65532"
  ok "runs as uid/gid 65532 with an empty environment"
fi
echo "image-check: all checks passed (the image itself cannot be built here: no container engine)"
