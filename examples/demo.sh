#!/bin/bash
# vstorfs demo: a Proxmox VE 9 style qcow2-on-LVM disk with two snapshots,
# a Proxmox directory storage whose disk has a qcow2 internal snapshot and,
# when the ceph packages are there, an RBD pool on a throwaway one-node Ceph
# cluster, all shown as one read-only filesystem; old snapshots are read,
# taken and deleted. Run as root after the build: `make demo`. Everything is
# thrown away at the end.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
export LVM_SUPPRESS_FD_WARNINGS=1
work=$(mktemp -d /var/tmp/vstorfs-demo.XXXXXX)
vg=vstdemo$(head -c3 /dev/urandom | od -An -tx1 | tr -d ' \n')
vol=vm-100-disk-0.qcow2
loop=""
mnt=$work/mnt
inner=$work/inner

ceph_dir=""
cleanup() {
	set +e
	mountpoint -q "$inner" && umount "$inner"
	mountpoint -q "$mnt" && { umount "$mnt" || umount -l "$mnt"; }
	# the demo's own cluster, by the PIDs in its pid files
	[ -n "$ceph_dir" ] && (cd "$repo/tests" && python3 -c "import cephlib, sys; c = cephlib.Cluster(sys.argv[1]); c.osd_id = 0; c.destroy()" "$ceph_dir")
	if [ -n "$loop" ]; then
		lvm_ vgremove -f -y "$vg" >/dev/null 2>&1
		losetup -d "$loop"
	fi
	rm -rf "$work"
}
trap cleanup EXIT

lvm_() { local c=$1; shift; "$c" --driverloaded n --devices "$loop" "$@"; }
say() { printf '\n== %s\n' "$*"; }

# Copy a (small) file into an LV through the PV extents: no device-mapper needed.
# One dd per LV segment: segment at LV byte `start` lives at PE `pe` of the PV.
to_lv() { # file lv
	local json pe_start ext ranges start
	json=$(lvm_ pvs --reportformat json --units b --nosuffix -o pe_start,vg_extent_size "$loop" 2>/dev/null)
	pe_start=$(sed -n 's/.*"pe_start":"\([0-9]*\)".*/\1/p' <<<"$json")
	ext=$(sed -n 's/.*"vg_extent_size":"\([0-9]*\)".*/\1/p' <<<"$json")
	ranges=$(lvm_ lvs --reportformat json --units b --nosuffix -o lv_name,seg_start,seg_pe_ranges "$vg" 2>/dev/null |
		grep "\"lv_name\":\"$2\"" | sed -n 's/.*"seg_start":"\([0-9]*\)".*"seg_pe_ranges":"[^:]*:\([0-9]*\)-[0-9]*".*/\1 \2/p')
	while read -r start pe; do
		dd if="$1" of="$loop" bs=1M iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc,sparse,fsync \
			skip="$start" seek=$((pe_start + pe * ext)) count="$(seg_len "$1" "$start" "$2")" status=none
	done <<<"$ranges"
}
# Bytes of file $1 from $2 to the end of the LV segment that starts there.
seg_len() {
	local f=$(stat -c %s "$1") segs
	segs=$(lvm_ lvs --reportformat json --units b --nosuffix -o lv_name,seg_start,seg_size "$vg" 2>/dev/null |
		grep "\"lv_name\":\"$3\"" | sed -n 's/.*"seg_start":"\([0-9]*\)".*"seg_size":"\([0-9]*\)".*/\1 \2/p')
	while read -r s n; do
		if [ "$s" = "$2" ]; then
			local e=$((s + n)); [ "$e" -gt "$f" ] && e=$f
			echo $(( e > s ? e - s : 0 )); return
		fi
	done <<<"$segs"
	echo 0
}
# Create an LV sized for a layer file (plus 1 MiB) and copy the file in.
new_lv() { # file lv
	local size=$(( ($(stat -c %s "$1") / 1048576 + 2) * 1048576 ))
	lvm_ lvcreate -an -Zn -An -y -L "${size}b" -n "$2" --addtag pve-vm-100 "$vg" >/dev/null 2>&1
	# (created without zeroing; the fresh sparse PV reads as zeros anyway)
	to_lv "$1" "$2"
}
# An ext4 image with hello.txt = $2, built without mounting anything.
fs_image() { # out text
	mkdir -p "$work/stage"
	printf '%s\n' "$2" >"$work/stage/hello.txt"
	truncate -s 64M "$1"
	mkfs.ext4 -q -F -d "$work/stage" "$1"
}

say "A throwaway volume group $vg on a 1 GiB loop file"
truncate -s 1G "$work/pv.img"
loop=$(losetup -f --show "$work/pv.img")
lvm_ pvcreate -y "$loop" >/dev/null 2>&1
lvm_ vgcreate -An "$vg" "$loop" >/dev/null 2>&1
echo "PV $loop"

layers=$work/layers
mkdir -p "$layers" "$mnt" "$inner"
cd "$layers"

say "Base image: ext4 holding hello.txt = 'version 1', stored as qcow2 in LV $vol"
fs_image "$work/v1.raw" "version 1"
qemu-img convert -q -f raw -O qcow2 -o preallocation=metadata "$work/v1.raw" "$vol"

# Take a snapshot the Proxmox VE 9 way: the current layer becomes the snapshot LV,
# a new overlay (backing = bare snapshot LV name) takes the volume's name.
snapshot() { # snapname new-content-raw
	local snap_lv="snap_vm-100-disk-0_$1.qcow2"
	mv "$vol" "$snap_lv"
	qemu-img convert -q -f raw -O qcow2 -o extended_l2=on,cluster_size=128k \
		-B "$snap_lv" -F qcow2 "$2" "$vol"
	echo "snapshot '$1': $snap_lv <- $vol ($(qemu-img info -U "$vol" | sed -n 's/^disk size: //p') new data)"
}

say "Snapshot 'before_upgrade', then hello.txt becomes 'version 2'"
fs_image "$work/v2.raw" "version 2"
snapshot before_upgrade "$work/v2.raw"

say "Snapshot 'after-upgrade', then hello.txt becomes 'version 3'"
fs_image "$work/v3.raw" "version 3"
snapshot after-upgrade "$work/v3.raw"

say "Write each layer into its own LV"
for f in snap_vm-100-disk-0_before_upgrade.qcow2 snap_vm-100-disk-0_after-upgrade.qcow2 "$vol"; do
	new_lv "$f" "$f"
done
lvm_ lvs -o lv_name,lv_size,lv_tags "$vg" 2>/dev/null
rm -f "$work"/v?.raw

say "A Proxmox directory storage: images/200/vm-200-disk-0.qcow2 with internal snapshot 'monday'"
vz=$work/vz
mkdir -p "$vz/images/200"
dvol=vm-200-disk-0.qcow2
fs_image "$work/d1.raw" "monday's file"
qemu-img convert -q -f raw -O qcow2 "$work/d1.raw" "$vz/images/200/$dvol"
qemu-img snapshot -c monday "$vz/images/200/$dvol"
fs_image "$work/d2.raw" "tuesday's file"
qemu-img convert -q -n -f raw -O qcow2 "$work/d2.raw" "$vz/images/200/$dvol"
qemu-img snapshot -l "$vz/images/200/$dvol" | sed 's/^/  /'
rm -f "$work"/d?.raw

sources="$vg,$vz"
opts="devices=$loop"
if command -v ceph-mon >/dev/null && command -v rbd >/dev/null; then
	say "A throwaway one-node Ceph cluster (memstore) with an RBD image and a snapshot"
	ceph_dir=$(mktemp -d /var/tmp/vstorfs-demo-ceph.XXXXXX)
	(cd "$repo/tests" && python3 -c "import cephlib, sys; c = cephlib.Cluster(sys.argv[1]); c.create()" "$ceph_dir")
	rbd_() { rbd -c "$ceph_dir/ceph.conf" --id admin "$@"; }
	fs_image "$work/r1.raw" "from ceph"
	rbd_ import --no-progress "$work/r1.raw" rbd/vm-300-disk-0
	rbd_ snap create rbd/vm-300-disk-0@first
	rm -f "$work/r1.raw"
	rbd_ snap ls rbd/vm-300-disk-0 | sed 's/^/  /'
	sources="$sources,rbd:rbd"
	opts="$opts,ceph_conf=$ceph_dir/ceph.conf,ceph_keyring=$ceph_dir/keyring"
else
	say "(no ceph packages: the RBD part is skipped; make deps installs them)"
fi

say "Mount it: mount.vstorfs $sources $mnt -o ${opts//$work/...}"
"$repo/mount.vstorfs" "$sources" "$mnt" -o "$opts"
( cd "$mnt" && find . | sort | sed 's/^\.\///' | grep -v '^\.$' | while read -r p; do
	if [ -f "$p" ]; then printf '%-60s %s bytes\n' "$p" "$(stat -c %s "$p")"; else echo "$p/"; fi
done )

say "Loop-mount the 'before_upgrade' snapshot's disk.raw read-only"
mount -o loop,ro -t ext4 "$mnt/$vg/$vol/before_upgrade/disk.raw" "$inner"
echo "before_upgrade: hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"
mount -o loop,ro -t ext4 "$mnt/$vg/$vol/after-upgrade/disk.raw" "$inner"
echo "after-upgrade:  hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"
mount -o loop,ro -t ext4 "$mnt/$vg/$vol/current/disk.raw" "$inner"
echo "current:        hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"

say "Read-only: writing is refused"
if (echo x >"$mnt/$vg/$vol/current/disk.raw") 2>/dev/null; then echo "unexpected: write succeeded"; exit 1; fi
echo "write refused, as expected"

say "mkdir takes a snapshot the Proxmox way; rmdir deletes one by commit or rebase"
mkdir "$mnt/$vg/$vol/nightly"
echo "views now: $(ls "$mnt/$vg/$vol" | tr '\n' ' ')"
rmdir "$mnt/$vg/$vol/before_upgrade"
echo "after rmdir before_upgrade: $(ls "$mnt/$vg/$vol" | tr '\n' ' ')"
mount -o loop,ro -t ext4 "$mnt/$vg/$vol/after-upgrade/disk.raw" "$inner"
echo "after-upgrade still reads: hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"
lvs --driverloaded n --devices "$loop" -o lv_name,lv_tags "$vg" 2>/dev/null

say "Backup files: what changed between the two LVM snapshots, in rbd diff's JSON"
echo "nightly/changed-since/after-upgrade.json: $(head -c 300 "$mnt/$vg/$vol/nightly/changed-since/after-upgrade.json")"
echo "allocated.json of after-upgrade: $(head -c 200 "$mnt/$vg/$vol/after-upgrade/allocated.json")..."

say "The directory store: the internal snapshot 'monday' is a view"
ls "$mnt/vz/$dvol"
mount -o loop,ro -t ext4 "$mnt/vz/$dvol/monday/disk.raw" "$inner"
echo "monday:  hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"
mount -o loop,ro -t ext4 "$mnt/vz/$dvol/current/disk.raw" "$inner"
echo "current: hello.txt = $(cat "$inner/hello.txt")"
umount "$inner"
mkdir "$mnt/vz/$dvol/tuesday"
rmdir "$mnt/vz/$dvol/monday"
echo "after mkdir tuesday, rmdir monday: qemu-img snapshot -l says"
qemu-img snapshot -l "$vz/images/200/$dvol" | sed 's/^/  /'
qemu-img check "$vz/images/200/$dvol" | sed 's/^/  qemu-img check: /'

if [ -n "$ceph_dir" ]; then
	say "The RBD pool: image vm-300-disk-0 with its snapshot 'first'"
	ls "$mnt/rbd/vm-300-disk-0"
	mount -o loop,ro -t ext4 "$mnt/rbd/vm-300-disk-0/first/disk.raw" "$inner"
	echo "first: hello.txt = $(cat "$inner/hello.txt")"
	umount "$inner"
	mkdir "$mnt/rbd/vm-300-disk-0/second"
	echo "rbd snap ls after mkdir second:"
	rbd_ snap ls rbd/vm-300-disk-0 | sed 's/^/  /'
fi

say "Unmount (this ends the daemon) and clean up"
umount "$mnt"
echo "done"
