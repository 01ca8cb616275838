#!/usr/bin/env bash
# `make run`: mounts a small demo namespace with the embedded defaults.
# A local directory is the root; the mount returns once it answers.
set -euo pipefail
cd "$(dirname "$0")/.."
DEMO=${DEMO:-/tmp/weir-demo}
WEIR=${WEIR:-target/release/weir}
mkdir -p "$DEMO/data/datasets/mnist" "$DEMO/data/models" "$DEMO/mnt"
if [ ! -e "$DEMO/data/README.txt" ]; then
    echo "This directory is served by weir from $DEMO/data." > "$DEMO/data/README.txt"
    head -c 8388608 /dev/urandom > "$DEMO/data/models/demo-model.bin"
    for i in 0 1 2 3; do head -c 1048576 /dev/urandom > "$DEMO/data/datasets/mnist/shard-$i.bin"; done
fi
if grep -qs " $DEMO/mnt " /proc/mounts; then
    echo "weir demo is already mounted at $DEMO/mnt (make stop unmounts it)"
    exit 0
fi
"$WEIR" mount "$DEMO/mnt" --ufs "file://$DEMO/data" --cache-dir "$DEMO/cache" -o kernel_cache
echo "weir demo mounted at $DEMO/mnt (UFS: file://$DEMO/data, cache: $DEMO/cache)"
ls -lR "$DEMO/mnt" | head -20
echo "try: cat $DEMO/mnt/README.txt; cp $DEMO/mnt/models/demo-model.bin /tmp/; make stop"
