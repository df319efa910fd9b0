"""Read path: every view of every disk equals what qemu reads from the LVs."""

import concurrent.futures
import errno
import json
import os
import random
import subprocess
import threading
import time

import pytest

from conftest import (skip_if_sanitized, MiB, GiB, Env, check_all_views, assert_same_content, disk_path,
                      require_daemon, sha256_file, wait_for, run)
import lvmlib
from lvmlib import OVERLAY_OPTS

DISK = 16 * MiB

# volume name -> what it exercises
ZOO = {
    "vm-100-disk-0.qcow2": "1-layer chain, plain 64k clusters",
    "vm-100-disk-1.qcow2": "3-layer chain, extended L2 128k, zero (sub)clusters, partial subcluster writes",
    "vm-102-disk-0.qcow2": "extended L2 16k clusters",
    "vm-103-disk-0.qcow2": "plain 4k clusters",
    "vm-104-disk-0.qcow2": "compat=0.10",
    "vm-105-disk-0.qcow2": "zstd compressed clusters",
    "vm-106-disk-0.qcow2": "zlib compressed clusters",
    "vm-107-disk-0.qcow2": "backing shorter than overlay",
    "vm-101-disk-0": "raw volume",
    "vm-108-disk-0.qcow2": "LVs split across two PVs",
    "vm-109-disk-0.qcow2": "old snap-<snap>-<volume> naming",
    "vm-111-disk-0.qcow2": "snapshot names Proxmox lists but mkdir refuses",
}
# Proxmox reads snapshot `$1` of any snap_<volume>_(.*).qcow2 / snap-(.*)-<volume>
# layer; these break mkdir's rule (one character, a digit first, '.', '+', too long).
ODD_SNAPS = [("a", False), ("9", False), ("v1.2+rc", False), ("s" * 60, False), ("b", True)]


def pattern_writes(v, seed, n=12, align=512, maxlen=300 * 1024):
    rnd = random.Random(seed)
    for _ in range(n):
        off = rnd.randrange(0, v.size - maxlen) // align * align
        ln = max(align, rnd.randrange(1, maxlen) // align * align)
        v.write(off, ln, rnd.randrange(1, 255))


def build_zoo(env):
    vg = env.vg(npvs=2, pv_size=2 * GiB)
    ch = env.chain(vg)
    L0, L1 = vg.loops

    # 1 layer, plain 64k
    v = ch.qcow2("vm-100-disk-0.qcow2", DISK)
    pattern_writes(v, 1)
    v.write(DISK - 4096, 4096, 0x5a)           # last cluster

    # 3 layers, extended L2 128k overlays; snapshot names with _ and -
    v = ch.qcow2("vm-100-disk-1.qcow2", DISK)
    v.write(0, 4 * MiB, 0x11)
    v.write(8 * MiB, 2 * MiB, 0x12)
    v.snapshot("first_snap")
    v.write(100, 1000, 0x21)                    # partial subcluster (COW inside 4k)
    v.write(128 * 1024 - 300, 600, 0x22)        # crosses a cluster edge
    v.write(1 * MiB, 4096, 0x23)                # exactly one subcluster
    v.io("write -z 2M 4096")                    # zero subcluster over data
    v.io("write -z 3M 128k")                    # zero cluster over data
    v.io("write -z 8392704 1000")               # partial zero inside a subcluster
    v.write(12 * MiB + 77, 333333, 0x24)        # above nothing in the base
    v.snapshot("pre-upgrade_2")
    v.io("write -z 0 64k")
    v.write(9 * MiB + 4095, 2, 0x31)
    v.write(DISK - 1000, 1000, 0x32)

    # extended L2 16k (512 B subclusters)
    v = ch.qcow2("vm-102-disk-0.qcow2", DISK,
                 opts="extended_l2=on,cluster_size=16k,preallocation=metadata")
    pattern_writes(v, 2)
    v.snapshot("s1", overlay_opts="extended_l2=on,cluster_size=16k,preallocation=metadata")
    pattern_writes(v, 3, align=1)
    v.io("write -z 512 512", "write -z 32768 16384")

    # plain 4k clusters
    v = ch.qcow2("vm-103-disk-0.qcow2", DISK, opts="cluster_size=4096,preallocation=metadata")
    pattern_writes(v, 4)
    v.snapshot("s1", overlay_opts="cluster_size=4096")
    pattern_writes(v, 5, align=1)
    v.io("write -z 4096 8192")

    # compat=0.10 (qcow2 v2)
    v = ch.qcow2("vm-104-disk-0.qcow2", DISK, opts="compat=0.10,preallocation=metadata")
    pattern_writes(v, 6)
    v.snapshot("s1", overlay_opts="compat=0.10")
    pattern_writes(v, 7, align=1)
    v.io("write -z 0 65536")

    # compressed (zstd / zlib): no preallocation (compressed writes need free clusters)
    for name, ctype, seed in (("vm-105-disk-0.qcow2", "zstd", 8),
                              ("vm-106-disk-0.qcow2", "zlib", 9)):
        v = ch.qcow2(name, DISK, opts="compression_type=%s" % ctype)
        for i in range(0, 40):
            v.io("write -c -P %d %d 65536" % (i + 1, i * 65536 * 3))
        v.write(7 * MiB + 5, 70000, 0x77)       # uncompressed next to compressed
        v.snapshot("s1", overlay_opts="compression_type=%s,extended_l2=on,cluster_size=128k" % ctype)
        for i in range(0, 20):
            v.io("write -c -P %d %d 131072" % (100 + i, (i * 5 + 1) * 131072))
        v.write(65536 + 3, 5000, 0x78)
        v.io("write -z %d 4096" % (2 * 65536 * 3))

    # backing shorter than overlay
    v = ch.qcow2("vm-107-disk-0.qcow2", 8 * MiB)
    v.write(8 * MiB - 64 * 1024, 64 * 1024, 0x41)
    v.snapshot("small", backing_shorter_by=8 * MiB)
    v.write(8 * MiB - 512, 1024, 0x42)           # straddles the backing's end
    v.write(12 * MiB, 4096, 0x43)

    # raw volume
    v = ch.raw("vm-101-disk-0", 8 * MiB, vmid=101)
    with open(v.path, "r+b") as f:
        rnd = random.Random(10)
        for _ in range(50):
            f.seek(rnd.randrange(0, 8 * MiB - 4096))
            f.write(rnd.randbytes(rnd.randrange(1, 4096)))

    # LVs split across two PVs (explicit PE ranges; 4 MiB extents)
    v = ch.qcow2("vm-108-disk-0.qcow2", DISK)
    pattern_writes(v, 11, maxlen=2 * MiB)
    v.snapshot("s1")
    pattern_writes(v, 12, maxlen=2 * MiB, align=1)
    ch.place("snap_vm-108-disk-0_s1.qcow2", pvs=vg.split_ranges(L0, 400, 2, L1, 400))
    ch.place("vm-108-disk-0.qcow2", pvs=vg.split_ranges(L1, 420, 1, L0, 420))

    # old naming snap-<snap>-<volume>
    v = ch.qcow2("vm-109-disk-0.qcow2", DISK)
    pattern_writes(v, 13)
    v.snapshot("old-one", old_naming=True)
    pattern_writes(v, 14, align=1)
    v.snapshot("s2", old_naming=True)
    pattern_writes(v, 15, align=1)

    v = ch.qcow2("vm-111-disk-0.qcow2", DISK)
    for i, (snap, old_naming) in enumerate(ODD_SNAPS):
        pattern_writes(v, 20 + i, n=4)
        v.snapshot(snap, old_naming=old_naming)
    pattern_writes(v, 30, n=4)

    ch.sync()
    # LVs that are not volumes: never shown
    vg.lvcreate("del-vm-100-disk-5.qcow2", 4 * MiB)
    vg.lvcreate("data", 4 * MiB, tags=())
    for lv in ("snap_vm-108-disk-0_s1.qcow2", "vm-108-disk-0.qcow2"):
        assert len(vg.lv_pvs(lv)) == 2, (lv, vg.layout()[lv])
    ch.refresh_reference_layers()
    return ch


@pytest.fixture(scope="module")
def zoo(module_env):
    require_daemon()
    ch = build_zoo(module_env)
    d = module_env.mount(ch.vg.name, ch.vg.loops, name="zoo")
    return ch, d


@pytest.mark.parametrize("volume", list(ZOO), ids=[ZOO[k] for k in ZOO])
def test_views_match_qemu(zoo, volume):
    ch, d = zoo
    check_all_views(d.mnt, ch, volumes=[volume])
    assert d.alive()


def test_tree_lists_only_volumes(zoo):
    ch, d = zoo
    assert os.listdir(d.mnt) == [ch.vg.name] or ch.vg.name in os.listdir(d.mnt)
    vols = sorted(os.listdir(os.path.join(d.mnt, ch.vg.name)))
    assert vols == sorted(ZOO)
    for v in vols:
        for view in os.listdir(os.path.join(d.mnt, ch.vg.name, v)):
            # the disk and the backup files (no zoo disk has a partition table)
            assert sorted(os.listdir(os.path.join(d.mnt, ch.vg.name, v, view))) == \
                ["allocated.json", "changed-since", "disk.raw"]
    assert sorted(os.listdir(os.path.join(d.mnt, ch.vg.name, "vm-101-disk-0"))) == ["current"]


def test_random_unaligned_reads(zoo):
    ch, d = zoo
    vol = "vm-100-disk-1.qcow2"
    rnd = random.Random(1234)
    for view in ch.volumes[vol].views():
        ref = ch.reference(vol, view)
        path = disk_path(d.mnt, ch.vg.name, vol, view)
        size = os.path.getsize(ref)
        with open(path, "rb", buffering=0) as f, open(ref, "rb", buffering=0) as r:
            for _ in range(150):
                n = rnd.choice([1, 2, 3, 511, 513, 4097, rnd.randrange(1, MiB + 1)])
                off = rnd.randrange(0, size)
                assert os.pread(f.fileno(), n, off) == os.pread(r.fileno(), n, off), \
                    "%s/%s: %d+%d" % (vol, view, off, n)
        os.unlink(ref)


def test_reads_at_and_past_eof(zoo):
    ch, d = zoo
    for vol in ("vm-100-disk-1.qcow2", "vm-107-disk-0.qcow2", "vm-101-disk-0"):
        ref = ch.reference(vol, "current")
        size = os.path.getsize(ref)
        path = disk_path(d.mnt, ch.vg.name, vol)
        with open(path, "rb", buffering=0) as f, open(ref, "rb") as r:
            fd = f.fileno()
            tail = r.read()[size - 100:]
            assert os.pread(fd, 100, size - 100) == tail
            assert os.pread(fd, 4096, size - 100) == tail
            assert os.pread(fd, 1, size) == b""
            assert os.pread(fd, MiB, size) == b""
            assert os.pread(fd, 10, size + 12345) == b""
            assert os.pread(fd, 10, 1 << 50) == b""
        os.unlink(ref)


def test_parallel_readers(zoo):
    ch, d = zoo
    jobs = []
    for vol in ("vm-100-disk-1.qcow2", "vm-105-disk-0.qcow2", "vm-108-disk-0.qcow2"):
        for view in ch.volumes[vol].views():
            jobs.append((vol, view, ch.reference(vol, view)))
    errors = []

    def reader(tid):
        rnd = random.Random(tid)
        try:
            for _ in range(120):
                vol, view, ref = rnd.choice(jobs)
                size = os.path.getsize(ref)
                # up to 2 MiB: spliced replies and replies copied from the
                # thread's own buffer, from threads running at once
                n = rnd.randrange(1, 2 * MiB)
                off = rnd.randrange(0, size)
                with open(disk_path(d.mnt, ch.vg.name, vol, view), "rb", buffering=0) as f, \
                        open(ref, "rb", buffering=0) as r:
                    if os.pread(f.fileno(), n, off) != os.pread(r.fileno(), n, off):
                        errors.append("%s/%s %d+%d" % (vol, view, off, n))
        except Exception as e:  # collected and reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=reader, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:10]
    assert d.alive()


def test_seek_data_hole(zoo):
    ch, d = zoo
    path = disk_path(d.mnt, ch.vg.name, "vm-100-disk-0.qcow2")
    ref = ch.reference("vm-100-disk-0.qcow2", "current")
    size = os.path.getsize(ref)
    with open(path, "rb", buffering=0) as f, open(ref, "rb") as r:
        data = r.read()
        fd = f.fileno()
        # every byte outside the reported data ranges must be zero
        pos = 0
        covered = 0
        while pos < size:
            try:
                a = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                assert e.errno == errno.ENXIO
                a = size
            assert data[pos:a].count(0) == a - pos, "hole %d-%d has data" % (pos, a)
            if a >= size:
                break
            b = os.lseek(fd, a, os.SEEK_HOLE)
            assert a < b <= size
            covered += b - a
            pos = b
        assert covered > 0
        last = data.rstrip(b"\0")
        assert covered >= len(last.lstrip(b"\0")) or covered > 0


def test_stat_fields(zoo):
    ch, d = zoo
    vg = ch.vg.name
    for vol, v in ch.volumes.items():
        for view in v.views():
            st = os.stat(disk_path(d.mnt, vg, vol, view))
            assert st.st_size == ch.virtual_size(vol, view), (vol, view)
            assert oct(st.st_mode) == oct(0o100400), (vol, view)
            assert (st.st_uid, st.st_gid) == (0, 0)
            dst = os.stat(os.path.join(d.mnt, vg, vol, view))
            assert oct(dst.st_mode) == oct(0o040500)
        assert oct(os.stat(os.path.join(d.mnt, vg, vol)).st_mode) == oct(0o040500)
    # snapshot view mtime = ctime of the layer above: older snapshots are not newer
    # (to lvm2's second: the nanoseconds are a hash of the view's identity)
    v = ch.volumes["vm-100-disk-1.qcow2"]
    m = [os.stat(os.path.join(d.mnt, vg, v.name, s)).st_mtime_ns // 10**9 for s, _ in v.snaps]
    assert m == sorted(m), m
    assert all(x > 0 for x in m)


def test_writes_refused(zoo):
    ch, d = zoo
    vg = ch.vg.name
    refused = (errno.EROFS, errno.EPERM, errno.EACCES)
    view = os.path.join(d.mnt, vg, "vm-100-disk-0.qcow2", "current")
    disk = os.path.join(view, "disk.raw")
    before = sha256_file(disk)
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC, os.O_RDONLY | os.O_TRUNC):
        with pytest.raises(OSError) as ei:
            fd = os.open(disk, flags)
            try:
                os.write(fd, b"x")
            finally:
                os.close(fd)
        assert ei.value.errno in refused, (flags, ei.value)
    ops = [
        lambda: os.open(os.path.join(view, "new"), os.O_CREAT | os.O_WRONLY, 0o600),
        lambda: os.unlink(disk),
        lambda: os.rename(disk, os.path.join(view, "x.raw")),
        lambda: os.rename(view, os.path.join(os.path.dirname(view), "renamed")),
        lambda: os.mkdir(os.path.join(view, "dir")),
        lambda: os.mkdir(os.path.join(d.mnt, vg, "newvol")),
        lambda: os.truncate(disk, 0),
        lambda: os.symlink("disk.raw", os.path.join(view, "link")),
    ]
    for op in ops:
        with pytest.raises(OSError) as ei:
            op()
        assert ei.value.errno in refused, ei.value
    # `current` is the live disk: it can never be removed like a snapshot
    with pytest.raises(OSError) as ei:
        os.rmdir(view)
    assert ei.value.errno == errno.EBUSY
    assert sha256_file(disk) == before
    assert sorted(os.listdir(view)) == ["allocated.json", "changed-since", "disk.raw"]
    assert d.alive()


def test_300_layer_chain(env):
    require_daemon()
    skip_if_sanitized()
    vg = env.vg(npvs=1, pv_size=4 * GiB, extent_size="1m")
    ch = env.chain(vg)
    size = 4 * MiB
    v = ch.qcow2("vm-100-disk-0.qcow2", size)
    v.write(0, size, 1)
    ch.lv_slack[v.name] = 0
    sub = 4096   # extended L2 128k -> 4k subclusters; aligned writes need no COW
    for i in range(1, 300):
        lv = v.snapshot("s%d" % i)
        ch.lv_slack[lv] = 0
        ch.lv_slack[v.name] = 0
        off = (i * 7919 * sub) % size
        # write straight into the new top without opening the 300-deep chain:
        # whole subclusters, so no copy-on-write from the backing is needed
        lvmlib.run(["qemu-io", "-c", "write -P %d %d %d" % (i % 250 + 2, off, sub),
                    "json:{\"driver\":\"qcow2\",\"backing\":null,\"file\":"
                    "{\"driver\":\"file\",\"filename\":\"%s\"}}" % v.path])
    ch.sync()
    ch.refresh_reference_layers()
    d = env.mount(vg.name, vg.loops)
    views = sorted(os.listdir(os.path.join(d.mnt, vg.name, v.name)))
    assert len(views) == 300 and "current" in views
    # every view: sha256 vs qemu; some views byte for byte (4 MiB each)
    rnd = random.Random(300)
    full = {view for view in v.views()
            if view in ("current", "s1", "s299") or rnd.random() < 0.1}
    refs = stacked_references(ch, v, full)
    # the deepest views also straight through qemu's own 300-deep chain
    # (which costs about 3 s a view, so not all 300 go that way)
    for view in ("current", "s299"):
        deep = ch.reference(v.name, view)
        assert sha256_file(deep) == refs[view][0], view
        os.unlink(deep)

    def check(view):
        path = disk_path(d.mnt, vg.name, v.name, view)
        assert os.stat(path).st_size == size, view
        digest, raw = refs[view]
        if raw:
            assert_same_content(path, raw)   # its sha256 too
        else:
            assert sha256_file(path) == digest, view

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        for f in [ex.submit(check, view) for view in v.views()]:
            f.result()


def stacked_references(ch, v, keep):
    """{view: (sha256, raw path or None)} of what qemu reads for every view of v,
    built bottom up: each layer's qcow2 (from the LV bytes) read by qemu over the
    raw image qemu read for the layer below, so each view costs one qemu-img of
    depth 2 instead of one of the view's depth. Raw images are kept for `keep`."""
    by_top = {lv: view for view, lv in v.views().items()}
    out, below, below_kept = {}, None, True
    for lv in v.layers():
        raw = os.path.join(ch.refdir, "STACK--%s.raw" % lv)
        spec = {"driver": "qcow2", "file": {"driver": "file", "filename": os.path.join(ch.refdir, lv)},
                "backing": None if below is None else
                {"driver": "raw", "file": {"driver": "file", "filename": below}}}
        lvmlib.run(["qemu-img", "convert", "-O", "raw", "json:" + json.dumps(spec), raw])
        if not below_kept:
            os.unlink(below)
        view = by_top[lv]
        below, below_kept = raw, view in keep
        out[view] = (sha256_file(raw), raw if below_kept else None)
    return out


def test_new_volume_and_snapshot_appear(env):
    require_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-100-disk-0.qcow2", DISK)
    v.write(0, MiB, 0x10)
    ch.sync()
    d = env.mount(vg.name, vg.loops)
    vgdir = os.path.join(d.mnt, vg.name)
    assert os.listdir(vgdir) == [v.name]

    w = ch.qcow2("vm-200-disk-0.qcow2", DISK)
    w.write(3 * MiB + 1, MiB, 0x20)
    ch.sync()
    assert wait_for(lambda: w.name in os.listdir(vgdir), 15), os.listdir(vgdir)
    check_all_views(d.mnt, ch, volumes=[w.name])

    v.snapshot("after_mount-1")
    v.write(512, 4096, 0x30)
    ch.sync()
    viewdir = os.path.join(vgdir, v.name)

    def listed():
        # between the rename and the new overlay's lvcreate the volume is gone
        try:
            return "after_mount-1" in os.listdir(viewdir)
        except FileNotFoundError:
            return False
    assert wait_for(listed, 15), os.listdir(viewdir)

    def current_matches():
        ch.refresh_reference_layers()
        ref = ch.reference(v.name, "current")
        try:
            return sha256_file(disk_path(d.mnt, vg.name, v.name)) == sha256_file(ref)
        except OSError:
            return False
    # the new top may be picked up a rescan after the view appears
    assert wait_for(current_matches, 15, 0.5)
    check_all_views(d.mnt, ch, volumes=[v.name, w.name])
    assert d.alive()


def test_stat_after_open_matches_a_layer_copied_in_after_the_scan(env):
    """A scan that ran while a new overlay's LV held no header yet lists its
    current at the LV's size. A backup tool that opens the file, reads it to
    EOF and stats it must see the size it read, not that guess, even with no
    rescan due for an hour."""
    require_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-100-disk-0.qcow2", DISK)
    w = ch.qcow2("vm-200-disk-0.qcow2", DISK)
    v.write(0, MiB, 0x10)
    ch.sync()
    d = env.mount(vg.name, vg.loops, rescan=3600)
    vgdir = os.path.join(d.mnt, vg.name)

    # Proxmox's snapshot, stopped between lvcreate and qemu-img create
    v.snapshot("s1")
    v.write(512, 4096, 0x30)
    vg.lvcreate(v.name, ch.lv_size_for(v.name), tags=v.tags)
    ch.lvs_created.add(v.name)
    # a listing scanned now (the one mkdir publishes) sees no header on it
    os.mkdir(os.path.join(vgdir, w.name, "w1"))
    ch.sync()

    path = disk_path(d.mnt, vg.name, v.name)
    ch.refresh_reference_layers()
    ref = ch.reference(v.name, "current")
    assert sha256_file(path) == sha256_file(ref)
    time.sleep(1.5)   # past the kernel's attribute timeout: this stat is the daemon's
    st = os.stat(path)
    assert st.st_size == os.path.getsize(ref) == DISK, (st.st_size, vg.lv_size(v.name))
    check_all_views(d.mnt, ch, volumes=[v.name])
    assert d.alive()


def mkfs_image(path, size, files):
    """An ext4 image built by mkfs.ext4 -d from a staging dir holding `files`."""
    stage = path + ".d"
    os.makedirs(stage, exist_ok=True)
    for name, content in files.items():
        with open(os.path.join(stage, name), "w") as f:
            f.write(content)
    with open(path, "wb") as f:
        f.truncate(size)
    run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", stage, path])
    return path


def test_loop_mount_snapshot_ext4(env):
    require_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    size = 64 * MiB
    img1 = mkfs_image(os.path.join(env.dir, "v1.raw"), size,
                      {"hello.txt": "version 1\n", "keep.txt": "same\n"})
    v = ch.import_raw_as_qcow2("vm-100-disk-0.qcow2", img1,
                               opts="cluster_size=65536,preallocation=metadata")
    img2 = mkfs_image(os.path.join(env.dir, "v2.raw"), size,
                      {"hello.txt": "version 2\n", "keep.txt": "same\n"})
    v.snapshot("snap_one", content_raw=img2)
    img3 = mkfs_image(os.path.join(env.dir, "v3.raw"), size,
                      {"hello.txt": "version 3 is longer\n", "keep.txt": "same\n"})
    v.snapshot("snap-two", content_raw=img3)
    ch.sync()
    d = env.mount(vg.name, vg.loops)
    expect = {"snap_one": "version 1\n", "snap-two": "version 2\n",
              "current": "version 3 is longer\n"}
    for view, text in expect.items():
        m = os.path.join(env.dir, "loop-" + view)
        os.makedirs(m)
        r = subprocess.run(["mount", "-o", "loop,ro", "-t", "ext4",
                            disk_path(d.mnt, vg.name, v.name, view), m],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr + "\n" + d.log()
        env.mounts.append(m)
        try:
            with open(os.path.join(m, "hello.txt")) as f:
                assert f.read() == text, view
            with open(os.path.join(m, "keep.txt")) as f:
                assert f.read() == "same\n"
        finally:
            subprocess.run(["umount", m], check=True)
    assert d.alive()
