# syntax=docker/dockerfile:1
#
# The weir image: one binary that serves all three install methods.
#   CSI driver:       weir csi --mode node|controller ...
#   FUSE DaemonSet:   weir mount /mnt/weir/ns --config /etc/weir/weir.yaml --foreground
#   Docker or bare metal: the same weir mount, with --device /dev/fuse --cap-add SYS_ADMIN
#
# Build:  docker build -t ghcr.io/weir-dev/weir:0.1.0 .
# (This repository's CI has no container engine: it lints this file with
# hadolint and checks it against the workspace in scripts/check-deploy.sh and
# tests/manifests.rs, but it never builds the image.)

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=trixie

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# The cache mounts keep crates.io downloads and the target dir between builds;
# the binary is copied out of the cached target dir before the step ends.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p weir \
    && install -D -m 0755 target/release/weir /out/weir

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# weir does its own mount(2) of /dev/fuse as root, so it needs neither libfuse
# nor fusermount3; TLS (rustls) reads the system's CA certificates.
# ca-certificates is left unpinned on purpose: it should be the release's
# newest, and the base image tag already fixes the release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/weir /usr/local/bin/weir
LABEL org.opencontainers.image.title="weir" \
      org.opencontainers.image.description="One cached POSIX namespace over many storage systems, for Kubernetes pods" \
      org.opencontainers.image.source="https://github.com/weir-dev/weir" \
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/local/bin/weir"]
CMD ["--help"]
