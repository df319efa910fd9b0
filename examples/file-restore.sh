#!/bin/bash
# file-restore.sh VIEW_DIR PARTITION PATH DEST
#
# Copy one file out of a guest filesystem inside a snapshot view, without
# touching the VM: e.g. /etc/hostname from partition 1 of the snapshot
# before-upgrade:
#
#   examples/file-restore.sh /mnt/vstor/pve/vm-100-disk-0.qcow2/before-upgrade 1 /etc/hostname /tmp/hostname
#
# As root the partition file is loop-mounted read-only; as any other user
# (or with RESTORE_WITHOUT_MOUNT=1) debugfs reads the ext2/3/4 filesystem
# straight from .partitions/part<N>.raw, no loop device, no root.
set -euo pipefail

view=${1:?usage: $0 VIEW_DIR PARTITION PATH DEST}
part="$view/.partitions/part${2:?partition number}.raw"
path=${3:?path inside the guest filesystem}
dest=${4:?destination}

if [ "$(id -u)" = 0 ] && [ -z "${RESTORE_WITHOUT_MOUNT:-}" ]; then
	mnt=$(mktemp -d)
	trap 'umount "$mnt" 2>/dev/null; rmdir "$mnt"' EXIT
	mount -o ro,loop,noload "$part" "$mnt" 2>/dev/null || mount -o ro,loop "$part" "$mnt"
	cp -p "$mnt/$path" "$dest"
	echo "restored $path from $part (loop mount) to $dest"
else
	debugfs -R "dump -p $path $dest" "$part" 2>/dev/null
	[ -e "$dest" ] || { echo "$path: not found in $part" >&2; exit 1; }
	echo "restored $path from $part (debugfs) to $dest"
fi
