# The operator's image: the static (musl) binary on an empty base (FROM scratch), with a CA bundle
# and a passwd/group entry for its non-root user 65532, all produced by the build itself. No runtime
# base image is pulled, so nothing but this file and the sources decides what the image contains.
#
# One file for every builder, unchanged (docs/operations.md, "The image"):
#   make image                                   here, without Docker or a registry: buildah, with a
#                                                local RUST_IMAGE (scripts/image.sh), OCI archive in
#                                                target/image/deployer-operator.oci.tar
#   docker build -t deployer-operator:0.1.0 .    or `make docker-build IMG=…`
#   minikube image build -t deployer-operator:0.1.0 .
#
# The builder runs the exact command `make image-check` runs on a development machine, on a copy
# of the same files:
#   cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator
# Works with BuildKit, with the legacy builder and with buildah (no RUN --mount, no heredocs).

# Any image with rustup, cargo, gcc and apt-get at the pinned toolchain version (Debian bookworm).
ARG RUST_IMAGE=rust:1.95-slim-bookworm

# Stage 1: the skeleton — Cargo.toml, Cargo.lock and a placeholder for every target cargo knows of
# (it wants them all to exist). It changes only when the manifests or the set of targets change, so
# the dependency layer built from it stays cached while the sources change.
FROM ${RUST_IMAGE} AS planner
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN mkdir /skeleton \
    && cp Cargo.toml Cargo.lock /skeleton/ \
    && cargo metadata --no-deps --format-version 1 --offline > /tmp/metadata.json \
    && grep -o '"src_path":"[^"]*"' /tmp/metadata.json | cut -d'"' -f4 | sed "s#^$PWD/##" \
        | while read -r target; do \
            mkdir -p "/skeleton/$(dirname "$target")" && echo 'fn main() {}' > "/skeleton/$target"; \
        done

# Stage 2: the build.
FROM ${RUST_IMAGE} AS builder
# musl-tools: the musl C compiler that ring (rustls' crypto) needs for the musl target.
# ca-certificates: the CA bundle the runtime stage ships.
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /build
# Dependencies, from the skeleton.
COPY --from=planner /skeleton ./
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator
# The operator. `touch` makes the sources newer than the placeholder build, whatever modification
# times COPY preserved, so cargo never takes the placeholder binary for current. Then the binary
# must run (it is not the placeholder) and be static.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/deployer-operator /out/ \
    && /out/deployer-operator crd | grep -q 'kind: CustomResourceDefinition' \
    && ! ldd /out/deployer-operator 2>/dev/null | grep -q '=>'
# The runtime's whole filesystem: the binary, Debian's CA bundle (kube's client verifies API
# servers through the system roots; webhooks and Slack are HTTPS) and the user 65532 ("nonroot",
# as in distroless) so that tools resolving names find it. Fixed modes, no other files.
RUN mkdir -p /rootfs/etc/ssl/certs \
    && install -m 0755 /out/deployer-operator /rootfs/deployer-operator \
    && install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
    && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
        'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
        'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > /rootfs/etc/passwd \
    && printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > /rootfs/etc/group \
    && chmod 0644 /rootfs/etc/passwd /rootfs/etc/group

# Stage 3: the runtime — no shell, no libc, no package manager: only what stage 2 put in /rootfs.
FROM scratch
LABEL org.opencontainers.image.title="deployer-operator" \
      org.opencontainers.image.description="Restart-safe canary rollouts for Kubernetes through a Deployer custom resource" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /rootfs/ /
# Numeric, so that runAsNonRoot can verify it; deploy/ sets the same runAsUser and a read-only root
# filesystem (the operator writes no files).
USER 65532:65532
ENTRYPOINT ["/deployer-operator"]
CMD ["run"]
