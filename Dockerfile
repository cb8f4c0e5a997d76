# The operator's image: a static (musl) binary on distroless/static, running as a non-root user.
#
#   make docker-build IMG=registry.example.com/deployer-operator:0.1.0
#
# The builder runs the exact command `make image-check` runs on a development machine (where there
# is no container engine), on a copy of the same files, so that check covers the binary this image
# ships:
#   cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator
# Works with BuildKit and with the legacy builder (no RUN --mount). See docs/operations.md.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/static-debian12:nonroot

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
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools \
    && rm -rf /var/lib/apt/lists/* \
    && rustup target add x86_64-unknown-linux-musl
WORKDIR /build
# Dependencies, from the skeleton.
COPY --from=planner /skeleton ./
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator
# The operator. `touch` makes the sources newer than the placeholder build, whatever modification
# times COPY preserved, so cargo never takes the placeholder binary for current. The last two
# lines check that the real binary (not the placeholder) runs, and that it is static.
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --target x86_64-unknown-linux-musl --bin deployer-operator \
    && mkdir -p /out \
    && cp target/x86_64-unknown-linux-musl/release/deployer-operator /out/ \
    && /out/deployer-operator crd | grep -q 'kind: CustomResourceDefinition' \
    && ! ldd /out/deployer-operator 2>/dev/null | grep -q '=>'

# Stage 3: the runtime — no shell, no libc; CA certificates and time zones only.
FROM ${RUNTIME_IMAGE}
LABEL org.opencontainers.image.title="deployer-operator" \
      org.opencontainers.image.description="Restart-safe canary rollouts for Kubernetes through a Deployer custom resource" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/deployer-operator /deployer-operator
# distroless' "nonroot" user, numeric so that runAsNonRoot can verify it; deploy/ sets the same
# runAsUser and a read-only root filesystem (the operator writes no files).
USER 65532:65532
ENTRYPOINT ["/deployer-operator"]
CMD ["run"]
