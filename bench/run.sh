#!/usr/bin/env bash
# weir benchmark: builds weir and weir-s3, installs the peers if missing, then
# runs bench/bench.py (which does the work and all the cleanup). See README.md.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

if [[ $(id -u) -ne 0 ]]; then
    echo "bench: run as root (FUSE mounts and drop_caches need it)" >&2
    exit 2
fi

missing=()
command -v fio >/dev/null || missing+=(fio)
command -v rclone >/dev/null || missing+=(rclone)
command -v s3fs >/dev/null || missing+=(s3fs)
command -v fusermount3 >/dev/null || missing+=(fuse3)
if ((${#missing[@]})); then
    if [[ ${BENCH_NO_INSTALL:-0} == 1 ]]; then
        echo "bench: missing ${missing[*]} (BENCH_NO_INSTALL=1)" >&2
        exit 2
    fi
    echo "bench: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    (cd "$repo" && "${CARGO:-cargo}" build --release --locked -p weir -p weir-testkit)
fi

exec python3 "$here/bench.py" "$@"
