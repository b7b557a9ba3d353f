# capstan's container images, one per binary:
#
#   docker build --target issuer  -t ghcr.io/capstan-dev/capstan-issuer:0.1.0 .
#   docker build --target rotator -t ghcr.io/capstan-dev/capstan-rotator:0.1.0 .
#
# Without a container engine, `cargo xtask image` builds the same images
# (binary, its shared libraries, user 65532, no shell) as OCI archives in
# target/images/. xtask's tests check that this file's toolchain, version,
# user and entrypoints agree with it.

# The toolchain rust-toolchain.toml pins, on Debian 12 so that the binaries
# link against the glibc of the distroless runtime below.
ARG RUST_VERSION=1.95.0

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p capstan-issuer -p capstan-rotator \
 && mkdir /out \
 && cp target/release/capstan-issuer target/release/capstan-rotator /out/

# glibc, libgcc and CA certificates; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.source="https://github.com/capstan-dev/capstan" \
      org.opencontainers.image.licenses="Apache-2.0"
# distroless's nonroot, numeric so that runAsNonRoot can verify it.
USER 65532:65532

FROM runtime AS issuer
LABEL org.opencontainers.image.title="capstan-issuer" \
      org.opencontainers.image.description="A cert-manager external issuer signing with an in-cluster root CA it loads or generates and rotates."
COPY --from=build /out/capstan-issuer /usr/local/bin/capstan-issuer
ENTRYPOINT ["/usr/local/bin/capstan-issuer"]

FROM runtime AS rotator
LABEL org.opencontainers.image.title="capstan-rotator" \
      org.opencontainers.image.description="Pushes CA bundles into ConfigMaps and rolls workloads whose Secrets or ConfigMaps changed."
COPY --from=build /out/capstan-rotator /usr/local/bin/capstan-rotator
ENTRYPOINT ["/usr/local/bin/capstan-rotator"]
