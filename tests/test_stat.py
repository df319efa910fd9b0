"""The stat contract (store/store.h, README "Backup and restore files"):
st_blocks counts data on every file kind, current's times move with every
stat, snapshots keep nanosecond times, inode numbers below 2^63, statfs
from the stores, partition files hidden in <view>/.partitions, and the
newcomer's mount mistakes answered with the rule.

Real LVM on loop devices, a directory store made with qemu-img, GNU tar.
"""

import errno
import json
import os
import shutil
import stat
import subprocess
import threading

import pytest

from conftest import MiB, Daemon, run, wait_for
from test_backup import make_partitioned_disk

VOL = "vm-120-disk-0.qcow2"


def data_bytes(path, start=0, length=None):
    """What SEEK_DATA/SEEK_HOLE call data in [start, start+length)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        end = size if length is None else min(size, start + length)
        pos, total = start, 0
        while pos < end:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                assert e.errno == errno.ENXIO
                break
            if d >= end:
                break
            h = min(os.lseek(fd, d, os.SEEK_HOLE), end)
            total += h - d
            pos = h
        return total
    finally:
        os.close(fd)


def walk(top):
    """Every path under top, as os.walk finds them (what a backup tool sees)."""
    out = []
    for root, dirs, files in os.walk(top):
        out += [os.path.join(root, n) for n in dirs + files]
    return out


@pytest.fixture(scope="module")
def lvm(module_env):
    """A VG with a partitioned qcow2 volume, two snapshots, the live disk moved on."""
    if not shutil.which("sfdisk"):
        pytest.skip("needs sfdisk")
    vg = module_env.vg(pv_size=512 * MiB)
    ch = module_env.chain(vg)
    disk, parts = make_partitioned_disk(module_env.dir, "gpt")
    v = ch.import_raw_as_qcow2(VOL, disk)
    v.snapshot("s1")
    v.snapshot("s2")            # in the same second as s1, most likely
    v.write(30 * MiB, MiB, 0x77)
    ch.sync()
    d = module_env.mount(vg.name, vg.loops, name="stat")
    return vg, ch, d, parts


def view(d, vg, name):
    return os.path.join(d.mnt, vg.name, VOL, name)


def test_partitions_hidden_but_there(lvm, module_env):
    vg, ch, d, parts = lvm
    for name in ("current", "s1", "s2"):
        v = view(d, vg, name)
        assert sorted(os.listdir(v)) == ["allocated.json", "changed-since", "disk.raw"]
        assert sorted(os.listdir(os.path.join(v, ".partitions"))) == \
            sorted("part%d.raw" % n for n in parts)
        assert stat.S_ISDIR(os.stat(os.path.join(v, ".partitions")).st_mode)
        assert not os.path.exists(os.path.join(v, "part1.raw"))
    # a walk of the mount meets every view's bytes once: disk.raw and small JSON files only
    files = [p for p in walk(d.mnt) if os.path.isfile(p)]
    assert not [p for p in files if ".partitions" in p or os.path.basename(p).startswith("part")]
    assert sum(1 for p in files if p.endswith("/disk.raw")) == 3
    # partitions=visible lists it
    d2 = module_env.mount(vg.name, vg.loops, opts=("partitions=visible",), name="visible")
    assert ".partitions" in os.listdir(os.path.join(d2.mnt, vg.name, VOL, "s1"))
    d2.stop()


def test_st_blocks_is_data(lvm):
    vg, ch, d, parts = lvm
    for name in ("current", "s1"):
        for num, (start, length) in parts.items():
            p = os.path.join(view(d, vg, name), ".partitions", "part%d.raw" % num)
            st = os.stat(p)
            data = data_bytes(p)
            assert st.st_size == length
            # a fresh ext4 of 20 MiB holds well under half of it
            assert 0 < data < length // 2, (p, data)
            assert st.st_blocks * 512 == (data + 511) // 512 * 512, (p, st.st_blocks, data)
            # the same as disk.raw's data within the partition's range
            assert data == data_bytes(os.path.join(view(d, vg, name), "disk.raw"), start, length)
        for j in ("allocated.json",):
            st = os.stat(os.path.join(view(d, vg, name), j))
            assert st.st_blocks == (st.st_size + 511) // 512 and st.st_blocks > 0
        st = os.stat(os.path.join(view(d, vg, name), "disk.raw"))
        assert st.st_blocks > 0


def test_inode_numbers_below_2_63_and_stable(lvm, module_env):
    vg, ch, d, parts = lvm
    paths = [d.mnt + "/" + vg.name] + walk(os.path.join(d.mnt, vg.name))
    inos = {p[len(d.mnt):]: os.stat(p).st_ino for p in paths}
    assert len(inos) >= 15
    big = {p: i for p, i in inos.items() if i >= 1 << 63 or i < 1}
    assert not big, big
    assert len(set(inos.values())) == len(inos)
    d2 = module_env.mount(vg.name, vg.loops, name="again")
    again = {p: os.stat(d2.mnt + p).st_ino for p in inos}
    d2.stop()
    assert again == inos


def test_snapshot_times_nanoseconds_stable(lvm, module_env):
    vg, ch, d, parts = lvm
    t = {}
    for name in ("s1", "s2"):
        for f in ("", "disk.raw", "allocated.json", "changed-since"):
            st = os.stat(os.path.join(view(d, vg, name), f))
            assert st.st_mtime_ns == st.st_ctime_ns
            t.setdefault(name, set()).add(st.st_mtime_ns)
        assert len(t[name]) == 1, t        # every file of a view: the view's time
    s1, s2 = t["s1"].pop(), t["s2"].pop()
    assert s1 % 10**9 and s2 % 10**9      # LVM has seconds: the nanoseconds come from the ident
    assert s1 != s2                       # taken in one second, still told apart
    d2 = module_env.mount(vg.name, vg.loops, name="times")
    again = [os.stat(os.path.join(d2.mnt, vg.name, VOL, n, "disk.raw")).st_mtime_ns for n in ("s1", "s2")]
    d2.stop()
    assert again == [s1, s2]
    assert os.stat(os.path.join(view(d, vg, "s1"), ".partitions", "part1.raw")).st_mtime_ns == s1


def test_current_times_are_the_stat(lvm):
    vg, ch, d, parts = lvm
    p = os.path.join(view(d, vg, "current"), "disk.raw")
    a = os.stat(p)
    b = wait_for(lambda: (lambda s: s if s.st_mtime_ns != a.st_mtime_ns else None)(os.stat(p)), 5)
    assert b and b.st_ctime_ns != a.st_ctime_ns and b.st_ino == a.st_ino
    # the time of the stat, to the nanosecond (two whole seconds in a row: 1e-18)
    assert a.st_mtime_ns % 10**9 or b.st_mtime_ns % 10**9
    assert (a.st_mtime_ns, b.st_mtime_ns) == (a.st_ctime_ns, b.st_ctime_ns)


def test_statfs(lvm):
    vg, ch, d, parts = lvm
    sv = os.statvfs(d.mnt)
    rows = vg.lvm_json("vgs", "-o", "vg_size,vg_free", vg.name)
    row = rows["vg"][0]
    assert sv.f_blocks * sv.f_frsize == int(row["vg_size"])
    assert sv.f_bavail * sv.f_frsize == int(row["vg_free"]) // sv.f_frsize * sv.f_frsize
    assert sv.f_bfree == sv.f_bavail
    # root, the store, the volume, 3 views with disk.raw, allocated.json,
    # changed-since/, .partitions/ and one JSON per older view (2 + 0 + 1)
    assert sv.f_files == 1 + 1 + 1 + 3 * 5 + 3
    df = run(["df", "-B1", "--output=size,avail", d.mnt]).stdout.decode().split()
    assert int(df[2]) == sv.f_blocks * sv.f_frsize


def test_stat_and_read_during_rescans(lvm):
    """Stats racing rescans: every answer is one the listing gave, never a torn one."""
    vg, ch, d, parts = lvm
    paths = {os.path.join(view(d, vg, n), "disk.raw"): os.stat(os.path.join(view(d, vg, n), "disk.raw"))
             for n in ("current", "s1", "s2")}
    stop, bad = threading.Event(), []

    def hammer():
        while not stop.is_set():
            for p, ref in paths.items():
                st = os.stat(p)
                if (st.st_size, st.st_ino) != (ref.st_size, ref.st_ino):
                    bad.append((p, st))
                fd = os.open(p, os.O_RDONLY)
                try:
                    if os.lseek(fd, 0, os.SEEK_DATA) >= st.st_size:
                        bad.append((p, "SEEK_DATA"))
                    try:
                        os.lseek(fd, st.st_size, os.SEEK_DATA)
                        bad.append((p, "SEEK_DATA at EOF succeeded"))
                    except OSError as e:
                        if e.errno != errno.ENXIO:
                            bad.append((p, e))
                finally:
                    os.close(fd)

    th = threading.Thread(target=hammer)
    th.start()
    try:
        for i in range(6):   # each lvcreate/lvremove changes the VG: a rescan
            vg.lvcreate("vm-199-disk-%d" % i, 8 * MiB, tags=("pve-vm-199",))
            wait_for(lambda: "vm-199-disk-%d" % i in os.listdir(os.path.join(d.mnt, vg.name)), 10)
            vg.lvremove("vm-199-disk-%d" % i)
    finally:
        stop.set()
        th.join()
    assert not bad, bad[:5]


def test_gone_between_stat_and_open(env):
    vg = env.vg(pv_size=256 * MiB)
    ch = env.chain(vg)
    v = ch.qcow2(VOL, 16 * MiB)
    v.write(0, MiB, 0x11)
    v.snapshot("s0")
    v.write(0, 64 << 10, 0x33)
    v.snapshot("s1")            # rmdir s1 rebases: its layer's LV goes away
    v.write(0, MiB, 0x22)
    ch.sync()
    d = env.mount(vg.name, vg.loops)
    vol = os.path.join(d.mnt, vg.name, VOL)
    p = os.path.join(vol, "s1", "disk.raw")
    old = os.stat(p)
    fd = os.open(p, os.O_RDONLY)
    try:
        os.rmdir(os.path.join(vol, "s1"))
        with pytest.raises(OSError) as e:
            os.open(p, os.O_RDONLY)
        assert e.value.errno in (errno.ENOENT, errno.ESTALE)
        os.mkdir(os.path.join(vol, "s1"))   # same name, other bytes: a new inode
        new = os.stat(p)
        assert new.st_ino != old.st_ino
        with open(p, "rb") as f:
            assert f.read(MiB) == b"\x22" * MiB
        # the old descriptor never turns into the new snapshot: it reads
        # what its (removed) layer still holds, or fails, never 0x22
        try:
            got = os.pread(fd, MiB, 0)
            assert got != b"\x22" * MiB, "an old descriptor reads the new snapshot"
        except OSError as e:
            assert e.errno in (errno.ESTALE, errno.ENOENT, errno.EIO)
    finally:
        os.close(fd)


# -- directory stores -------------------------------------------------------

def q(*args):
    return subprocess.run(list(args), check=True, capture_output=True)


@pytest.fixture
def dirstore(env):
    root = os.path.join(env.dir, "pool")
    os.makedirs(root)
    img = os.path.join(root, "vm1.qcow2")
    q("qemu-img", "create", "-f", "qcow2", img, "64M")
    q("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", "-c", "write -P 0x33 40M 1M", img)
    q("qemu-img", "snapshot", "-c", "first", img)
    q("qemu-img", "snapshot", "-c", "second", img)
    q("qemu-io", "-f", "qcow2", "-c", "write -P 0x44 8M 1M", img)
    d = env.mount(root, [])
    return root, img, d


def test_internal_snapshot_blocks_and_nanoseconds(dirstore, env):
    root, img, d = dirstore
    info = json.loads(q("qemu-img", "info", "-U", "--output=json", img).stdout)
    for s in info["snapshots"]:
        p = os.path.join(d.mnt, "pool", "vm1.qcow2", s["name"], "disk.raw")
        st = os.stat(p)
        assert st.st_blocks * 512 == data_bytes(p) == 4 * MiB, (s["name"], st.st_blocks)
        assert st.st_mtime_ns == s["date-sec"] * 10**9 + s["date-nsec"]
        assert st.st_ctime_ns == st.st_mtime_ns
    # GNU tar --sparse archives the data, not zeros
    v = os.path.join(d.mnt, "pool", "vm1.qcow2", "first")
    tarball, out = os.path.join(env.dir, "v.tar"), os.path.join(env.dir, "x")
    os.makedirs(out)
    run(["tar", "--sparse", "-cf", tarball, "-C", v, "disk.raw"])
    run(["tar", "-xf", tarball, "-C", out])
    with open(os.path.join(out, "disk.raw"), "rb") as a, open(os.path.join(v, "disk.raw"), "rb") as b:
        assert a.read() == b.read()


def test_dir_current_moves_while_vm_keeps_file_open(dirstore):
    root, img, d = dirstore
    p = os.path.join(d.mnt, "pool", "vm1.qcow2", "current", "disk.raw")
    a = os.stat(p)
    # a VM writing through a descriptor it keeps open: no close-write event
    fd = os.open(img, os.O_RDWR)
    try:
        os.pwrite(fd, os.pread(fd, 4096, 0), 0)
        b = wait_for(lambda: (lambda s: s if (s.st_mtime_ns, s.st_ctime_ns) != (a.st_mtime_ns, a.st_ctime_ns)
                              else None)(os.stat(p)), 5)
    finally:
        os.close(fd)
    assert b, "current/disk.raw kept its mtime and ctime"
    assert b.st_mtime_ns > os.stat(img).st_mtime_ns


def test_statfs_directory(dirstore):
    root, img, d = dirstore
    sv, ref = os.statvfs(d.mnt), os.statvfs(root)
    assert sv.f_blocks * sv.f_frsize == ref.f_blocks * ref.f_frsize
    assert sv.f_files > 0


# -- newcomer trips --------------------------------------------------------

def daemon_run(args, cwd=None):
    from conftest import require_daemon
    return subprocess.run([require_daemon()] + args, capture_output=True, text=True, cwd=cwd, timeout=30)


def test_relative_source_names_the_rule(env):
    os.makedirs(os.path.join(env.dir, "images", "pool"))
    mnt = env.mountpoint("rel")
    r = daemon_run(["images/pool", mnt, "-f"], cwd=env.dir)
    assert r.returncode != 0 and not os.path.ismount(mnt)
    assert "absolute path" in r.stderr and "volume group" in r.stderr, r.stderr
    assert os.path.join(env.dir, "images", "pool") in r.stderr


def test_mount_over_vstorfs_refused(dirstore, env):
    root, img, d = dirstore
    r = daemon_run([root, d.mnt])      # as mount(8) runs it: forks once mounted
    if r.returncode == 0:              # stacked: take the second one off again
        subprocess.run(["umount", d.mnt], capture_output=True)
    assert r.returncode != 0, "a second mount stacked on %s" % d.mnt
    assert "already a vstorfs mount" in r.stderr, r.stderr
    assert os.listdir(os.path.join(d.mnt, "pool")) == ["vm1.qcow2"]


def test_allow_other_default_umask(env):
    root = os.path.join(env.dir, "pool2")
    os.makedirs(root)
    q("qemu-img", "create", "-f", "qcow2", os.path.join(root, "vm2.qcow2"), "4M")
    d = env.mount(root, [], opts=("allow_other",), name="others")
    p = os.path.join(d.mnt, "pool2", "vm2.qcow2", "current", "disk.raw")
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o444
    assert stat.S_IMODE(os.stat(os.path.dirname(p)).st_mode) == 0o555
    os.chmod(env.dir, 0o711)   # the scratch directory itself is private
    r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        "head", "-c", "512", p], capture_output=True)
    assert r.returncode == 0 and r.stdout == b"\0" * 512, r.stderr


def test_volume_chain_snapshot_birth_time_nanoseconds(env):
    """A Proxmox snap-* view without a recorded time: the birth time of the layer above, to the ns."""
    root = os.path.join(env.dir, "vz")
    i100 = os.path.join(root, "images", "100")
    os.makedirs(i100)
    snap, top = os.path.join(i100, "snap-s1-vm-100-disk-0.qcow2"), os.path.join(i100, "vm-100-disk-0.qcow2")
    q("qemu-img", "create", "-f", "qcow2", snap, "16M")
    q("qemu-io", "-f", "qcow2", "-c", "write -P 0x61 0 1M", snap)
    q("qemu-img", "create", "-f", "qcow2", "-b", "snap-s1-vm-100-disk-0.qcow2", "-F", "qcow2", top)
    w = run(["stat", "-c", "%w", top]).stdout.decode().strip()
    if w in ("-", ""):
        w = run(["stat", "-c", "%y", top]).stdout.decode().strip()
    frac = int(w.split(".")[1].split()[0].ljust(9, "0")[:9])
    d = env.mount(root, [], name="chain")
    st = os.stat(os.path.join(d.mnt, "vz", "vm-100-disk-0.qcow2", "s1", "disk.raw"))
    assert st.st_mtime_ns % 10**9 == frac, (w, st.st_mtime_ns)
    assert st.st_blocks * 512 >= MiB
