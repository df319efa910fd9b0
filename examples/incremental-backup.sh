#!/bin/bash
# incremental-backup.sh VOLUME_DIR BACKUP_FILE
#
# Nightly backup of one disk into a raw file through vstorfs: take a
# snapshot (mkdir), copy only what changed since the previous run's
# snapshot (changed-since/<previous>.json; the first run copies what
# allocated.json lists), check the backup equals the snapshot, then delete
# the previous snapshot (rmdir). The previous snapshot's name is kept in
# BACKUP_FILE.snapshot.
#
#   examples/incremental-backup.sh /mnt/vstor/pve/vm-100-disk-0.qcow2 /backup/vm-100-disk-0.raw
set -euo pipefail

vol=${1:?usage: $0 VOLUME_DIR BACKUP_FILE}
backup=${2:?usage: $0 VOLUME_DIR BACKUP_FILE}
state="$backup.snapshot"
prev=$(cat "$state" 2>/dev/null || true)
snap="backup-$(date -u +%Y%m%d-%H%M%S)-$$"

mkdir "$vol/$snap"
if [ -n "$prev" ] && [ -d "$vol/$prev" ]; then
	ranges="$vol/$snap/changed-since/$prev.json"
else
	prev=""
	ranges="$vol/$snap/allocated.json"
	rm -f "$backup"
fi

# Copy the listed ranges: data where "exists" is "true", zeros where "false".
python3 - "$vol/$snap/disk.raw" "$backup" "$ranges" <<'PY'
import json, os, sys

src, dst, ranges = sys.argv[1:]
size = os.stat(src).st_size
copied = 0
# not "a" mode: Linux appends every pwrite of an O_APPEND file at the end
with open(src, "rb") as s, open(os.open(dst, os.O_RDWR | os.O_CREAT, 0o600), "rb+") as d:
    d.truncate(size)
    for r in json.load(open(ranges)):
        pos, end = r["offset"], r["offset"] + r["length"]
        while pos < end:
            n = min(4 << 20, end - pos)
            buf = os.pread(s.fileno(), n, pos) if r["exists"] == "true" else bytes(n)
            os.pwrite(d.fileno(), buf, pos)
            copied += n if r["exists"] == "true" else 0
            pos += n
    os.fsync(d.fileno())
print("copied %d of %d bytes (%.1f %%)" % (copied, size, 100.0 * copied / size if size else 0))
PY

cmp "$vol/$snap/disk.raw" "$backup"
echo "$snap" > "$state.tmp" && mv "$state.tmp" "$state"
if [ -n "$prev" ]; then
	rmdir "$vol/$prev"
fi
echo "backup of $vol at snapshot $snap: verified"
