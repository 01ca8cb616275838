#!/bin/sh
# Docker or bare metal: weir in a container, mounting the namespace at
# /mnt/weir/ns on the host. Run as root. docs/install.md walks through it.
set -eu

# The config (the mount table), the cache, the mount point's parent, and the
# directory a file:///var/lib/weir-data root serves (unused with object storage).
mkdir -p /etc/weir /var/cache/weir /mnt/weir /var/lib/weir-data
[ -e /etc/weir/weir.yaml ] || { echo "write /etc/weir/weir.yaml first (see docs/install.md)" >&2; exit 1; }
# Object storage credentials (AWS_ACCESS_KEY_ID=..., one per line), if any.
touch /etc/weir/env && chmod 600 /etc/weir/env

# The container's mount must propagate back to the host: make /mnt/weir a
# shared mount of its own (a bind onto itself), then bind it rshared.
if ! mountpoint -q /mnt/weir; then
    mount --bind /mnt/weir /mnt/weir
fi
mount --make-rshared /mnt/weir

# --device /dev/fuse and SYS_ADMIN let weir mount FUSE; AppArmor's default
# Docker profile forbids mount(2), so it is lifted for this container.
# A container that was killed leaves a dead mount at /mnt/weir/ns, and weir
# refuses a mounted mount point: each start detaches it first.
docker run -d --name weir --restart unless-stopped \
    --device /dev/fuse --cap-add SYS_ADMIN --security-opt apparmor=unconfined \
    -v /etc/weir:/etc/weir:ro \
    -v /var/cache/weir:/var/cache/weir \
    -v /var/lib/weir-data:/var/lib/weir-data \
    --env-file /etc/weir/env \
    --mount type=bind,source=/mnt/weir,target=/mnt/weir,bind-propagation=rshared \
    --entrypoint /bin/sh \
    ghcr.io/weir-dev/weir:0.1.0 \
    -c 'weir umount --lazy /mnt/weir/ns 2>/dev/null; mkdir -p /mnt/weir/ns && exec weir mount /mnt/weir/ns --config /etc/weir/weir.yaml --foreground'
