#!/usr/bin/env bash
# Installs what weir's build and tests need on a fresh Debian machine, and
# nothing that is already there. Runs as root (tests mount FUSE filesystems).
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(gcc)
command -v flock >/dev/null || need+=(util-linux)
command -v python3 >/dev/null || need+=(python3)
# scripts/check-deploy.sh makes a venv for its pinned tools; Debian's python3
# keeps venv and ensurepip in a separate package.
if ! command -v python3 >/dev/null || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    need+=(python3-venv)
fi
command -v unshare >/dev/null || need+=(util-linux)
command -v fusermount3 >/dev/null || need+=(fuse3)
# Cluster mode: its tests run a real etcd, and etcd-client's build compiles
# etcd's protobuf files with protoc (plus the well-known types it imports).
[ -x /usr/bin/etcd ] || need+=(etcd-server)
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
if ((${#need[@]})); then
    echo "setup: installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ ! -c /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
fi
if [ ! -c /dev/fuse ]; then
    echo "setup: /dev/fuse is missing; weir needs the fuse kernel module" >&2
    exit 1
fi
if [ "$(id -u)" != 0 ]; then
    echo "setup: warning: tests mount FUSE filesystems and need root" >&2
fi
command -v cargo >/dev/null || { echo "setup: cargo is missing; install Rust first" >&2; exit 1; }
