"""Client conformance (issue 19): real backup and restore clients over a
vstorfs mount of every store kind (tests/clientlib.py builds them).

The nightly job, with one fixed mount point: a backup (restic and borg); a VM
writing into `current` through the image it holds open (qemu-storage-daemon
over the chain, written with qemu-io through NBD; `rbd import-diff` on RBD);
another backup, a remount, a third backup; a restore. Every restored byte is
compared with qemu's (`rbd export`'s) reading of the same view at that night,
and the later nights must not read an unchanged snapshot again (restic's
--json --verbose actions, borg's --list status letters, the bytes the daemon
answered per inode in its FUSE trace).

Then the restore tools on a snapshot view: Sleuth Kit, 7z, e2fsck through
`.partitions/part1.raw`; GNU tar (with and without --sparse) and bsdtar
archives; cp --sparse=always, rsync --sparse and --inplace. Then the stat
contract (st_blocks, inode range, times) and bad input (stat, read and seek in
any order; a snapshot removed between stat and open).
"""

import errno
import json
import os
import random
import shutil
import subprocess

import pytest

import clientlib as cl
from clientlib import MiB
from conftest import Daemon, require_daemon, require_root, run, wait_for

STORES = ["lvm", "pvei", "pvec", "inst", "rbd"]
CLIENTS = ["restic", "borg"]
SNAP = "s1"          # the snapshot view the restore tools work on
VM_WRITES = ["write -P 165 %d %d" % (50 * MiB, MiB), "write -P 166 %d %d" % (46 * MiB + 4096, 65536)]


def need(*tools):
    miss = [t for t in tools if not shutil.which(t)]
    if miss:
        pytest.skip("missing %s" % ", ".join(miss))


class Stores:
    """Every store, mounted by one daemon at one fixed mount point."""

    def __init__(self, request, env):
        self.env = env
        self.work = env.dir
        self.disk = cl.make_disk(self.work)
        self.by = {}
        self.by["lvm"] = cl.LvmStore(env, self.work, self.disk)
        self.by["pvei"] = cl.PveIsnapStore(self.work, self.disk)
        self.by["pvec"] = cl.PveChainStore(self.work, self.disk)
        self.by["inst"] = cl.NovaStore(self.work, self.disk)
        import cephlib
        self.cluster = None
        if not cephlib.missing_binaries():
            self.cluster = request.getfixturevalue("ceph_cluster")
            self.by["rbd"] = cl.RbdStore(self.cluster, self.work, self.disk)
        self.mnt = os.path.join(self.work, "mnt")   # the nightly job's fixed mount point
        self.binary = cl.traced_binary(self.work, require_daemon())
        self.daemon = None
        self.mounts = 0
        self.mount()

    def source(self):
        src = [self.by["lvm"].name] + [self.by[k].root for k in ("pvei", "pvec", "inst")]
        if "rbd" in self.by:
            src.append("rbd:rbd")
        return ",".join(src)

    def mount(self):
        self.mounts += 1
        opts = []
        if self.cluster:
            opts = ["ceph_conf=" + self.cluster.conf, "ceph_id=admin"]
        d = Daemon(self.source(), self.mnt, self.by["lvm"].vg.loops, opts=opts, binary=self.binary,
                   logpath=os.path.join(self.work, "daemon-%d.stderr" % self.mounts))
        self.env.daemons.append(d)
        d.wait_mounted()
        self.daemon = d
        self.trace = cl.ReadTrace(d)
        for s in self.by.values():
            assert wait_for(lambda: os.path.isdir(s.vdir(self.mnt, "s2")), 15), \
                "%s: no view s2 in %s" % (s.name, os.listdir(os.path.join(self.mnt, s.name)))

    def remount(self):
        self.daemon.stop()
        self.mount()

    def store(self, key):
        if key not in self.by:
            pytest.skip("ceph packages not installed")
        return self.by[key]

    def digests(self):
        return {k: {v: s.digest(v) for v in s.views} for k, s in self.by.items()}

    def stop_vms(self):
        for s in self.by.values():
            s.stop_vm()


@pytest.fixture(scope="module")
def stores(request, module_env):
    require_root()
    need("qemu-storage-daemon", "qemu-io", "sfdisk", "mkfs.ext4")
    s = Stores(request, module_env)
    module_env.cleanups.append(s.stop_vms)
    yield s
    # the test cluster is the session's: leave its pool as test_rbd.py expects it
    s.daemon.stop()
    if "rbd" in s.by:
        s.by["rbd"].remove()


# -- the nightly job ------------------------------------------------------------------

class Restic:
    def __init__(self, work):
        self.env = dict(os.environ, RESTIC_PASSWORD="nightly",
                        RESTIC_REPOSITORY=os.path.join(work, "restic-repo"),
                        RESTIC_CACHE_DIR=os.path.join(work, "restic-cache"))
        run(["restic", "init"], env=self.env)

    def backup(self, mnt, night):
        rc, out, err, self.tids = cl.run_sampled(
            ["restic", "backup", "--json", "--verbose", "--host", "nightly", mnt], env=self.env)
        assert rc == 0, "restic backup: %d\n%s" % (rc, err[-3000:])
        status, snap = {}, None
        for line in out.splitlines():
            m = json.loads(line)
            if m.get("message_type") == "verbose_status":
                status[m["item"]] = m["action"]
            elif m.get("message_type") == "summary":
                snap = m["snapshot_id"]
        return status, snap

    def restore(self, snap, target, mnt):
        run(["restic", "restore", snap, "--target", target], env=self.env, timeout=900)
        return os.path.join(target, mnt.lstrip("/"))


class Borg:
    LETTER = {"A": "new", "M": "modified", "U": "unchanged", "C": "modified"}

    def __init__(self, work):
        self.env = dict(os.environ, BORG_REPO=os.path.join(work, "borg-repo"),
                        BORG_BASE_DIR=os.path.join(work, "borg-home"), BORG_PASSPHRASE="",
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")
        run(["borg", "init", "-e", "none"], env=self.env)

    def backup(self, mnt, night):
        # exit 1 is borg's warning: `current` reports the time of each stat as
        # its ctime (a VM may be writing it), so borg says "file changed while
        # we backed it up" (status C) of each current file it read; the bytes
        # it stored are checked by the restore
        rc, out, err, self.tids = cl.run_sampled(["borg", "create", "--list", "::night%d" % night, mnt],
                                                 env=self.env)
        assert rc in (0, 1), "borg create: %d\n%s" % (rc, err[-3000:])
        status = {}
        for line in err.splitlines() + out.splitlines():
            if len(line) > 2 and line[1] == " " and line[0] in "AMUCEdhcbs?-x":
                status["/" + line[2:].lstrip("/")] = self.LETTER.get(line[0], line[0])
            elif line.endswith(": file changed while we backed it up"):
                path = line[:-len(": file changed while we backed it up")]
                assert "/current/" in path, "borg: a snapshot view changed while read: " + line
            elif rc and line.strip():
                raise AssertionError("borg create warned: " + line)
        return status, "night%d" % night

    def restore(self, snap, target, mnt):
        os.makedirs(target)
        run(["borg", "extract", "::" + snap], env=self.env, cwd=target, timeout=900)
        return os.path.join(target, mnt.lstrip("/"))


class Nights:
    def __init__(self, st):
        self.st = st
        need("restic", "borg")
        self.clients = {"restic": Restic(st.work), "borg": Borg(st.work)}
        self.status = {}     # (client, night) -> {path: action}
        self.reads = {}      # (client, night) -> Counter(inode -> bytes the daemon answered)
        self.snap = {}       # (client, night) -> snapshot id / archive
        self.refs = {}       # night -> {store: {view: (sha256, size)}}
        self.snap_stat = {}  # mount number -> {path: stat tuple} of the snapshot views' files
        self.inodes = {}     # mount number -> {path: inode}
        self.restored = {}   # (client, night) -> {store: {view: sha256}}
        self.json_ok = {}    # (client, night) -> {store: [mismatching json file]}
        self.refs[1] = st.digests()
        self.night(1)
        self.record_stats()
        for s in st.by.values():              # the VM writes through the image it holds open
            s.vm_write(VM_WRITES)
        self.refs[2] = self.refs[3] = st.digests()
        self.night(2)
        st.remount()
        self.record_stats()
        self.night(3)
        for night in (1, 3):
            for name, c in self.clients.items():
                self.restore(name, c, night)

    def night(self, n):
        for name, c in self.clients.items():
            pos = self.st.trace.pos()
            self.status[name, n], self.snap[name, n] = c.backup(self.st.mnt, n)
            self.reads[name, n] = self.st.trace.reads_since(pos, c.tids)
            self.inodes.setdefault(self.st.mounts, self.walk_inodes())

    def walk_inodes(self):
        out = {}
        for s in self.st.by.values():
            for v in s.views:
                for f in view_files(s, self.st.mnt, v, hidden=True):
                    out[f] = os.stat(f).st_ino
        return out

    def record_stats(self):
        out = {}
        for s in self.st.by.values():
            for v in cl.SNAPS:
                for f in view_files(s, self.st.mnt, v, hidden=True) + [s.vdir(self.st.mnt, v)]:
                    x = os.stat(f)
                    out[f] = (x.st_ino, x.st_size, x.st_mtime_ns, x.st_ctime_ns)
        self.snap_stat[self.st.mounts] = out

    def restore(self, name, c, night):
        target = os.path.join(self.st.work, "restore-%s-%d" % (name, night))
        root = c.restore(self.snap[name, night], target, self.st.mnt)
        res, bad = {}, {}
        for k, s in self.st.by.items():
            rel = os.path.relpath(s.vdir(self.st.mnt, "x"), self.st.mnt)[:-2]
            res[k] = {}
            for v in s.views:
                p = os.path.join(root, rel, v, "disk.raw")
                res[k][v] = (cl.sha256_file(p), os.path.getsize(p)) if os.path.exists(p) else None
            # the JSON of a snapshot view never changes: restored == what the mount says now
            bad[k] = []
            for v in cl.SNAPS:
                for f in view_files(s, self.st.mnt, v):
                    if f.endswith(".json"):
                        r = os.path.join(root, os.path.relpath(f, self.st.mnt))
                        if not os.path.exists(r) or open(r, "rb").read() != open(f, "rb").read():
                            bad[k].append(os.path.relpath(f, self.st.mnt))
        self.restored[name, night] = res
        self.json_ok[name, night] = bad
        shutil.rmtree(target)


def view_files(s, mnt, view, hidden=False):
    """The files of a view directory (what a walk finds), plus the partition files."""
    out = []
    base = s.vdir(mnt, view)
    for dp, dn, fn in os.walk(base):
        out += [os.path.join(dp, f) for f in fn]
    if hidden:
        pdir = os.path.join(base, ".partitions")
        if os.path.isdir(pdir):
            out += [os.path.join(pdir, f) for f in os.listdir(pdir)]
    return sorted(set(out))


@pytest.fixture(scope="module")
def nights(stores):
    return Nights(stores)


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("client", CLIENTS)
def test_nightly_restore_equals_qemu(nights, client, store):
    s = nights.st.store(store)
    for night in (1, 3):
        got = nights.restored[client, night][store]
        want = nights.refs[night][store]
        for v in s.views:
            assert got[v] is not None, "%s night %d: %s/disk.raw not in the backup" % (client, night, v)
            assert got[v] == want[v], "%s night %d: restored %s/disk.raw %s, qemu reads %s" % (
                client, night, v, got[v], want[v])
        assert not nights.json_ok[client, night][store], nights.json_ok[client, night][store]
    assert nights.refs[1][store]["current"] != nights.refs[3][store]["current"], "the VM wrote nothing"


@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("client", CLIENTS)
def test_later_nights_read_no_unchanged_snapshot(nights, client, store):
    s = nights.st.store(store)
    mnt = nights.st.mnt
    for night in (2, 3):
        status = nights.status[client, night]
        reads = nights.reads[client, night]
        inodes = nights.inodes[1 if night == 2 else 2]
        cur = s.disk(mnt, "current")
        assert status.get(cur) in ("modified", "new"), \
            "%s night %d: current/disk.raw %s (the VM wrote it)" % (client, night, status.get(cur))
        assert reads[inodes[cur]] >= cl.DISK_SIZE, "%s night %d: current read %d bytes" % (
            client, night, reads[inodes[cur]])
        # borg 1.2 keeps no files-cache entry whose ctime is the newest it
        # memorized in a run (cache.py, _newest_cmtime: its guard against a
        # file changed within the timestamp's resolution). current's files,
        # whose ctime is each stat's, are status C and not memorized, so the
        # one snapshot file with the newest ctime of the whole walk is read
        # again each night by borg, and only that one: nanosecond times make
        # it a single file, not every view taken in that second.
        newest = borg_newest_snapshot_files(nights, mnt) if client == "borg" else set()
        for v in cl.SNAPS:
            for f in view_files(s, mnt, v):
                if f in newest:
                    continue
                assert status.get(f) == "unchanged", "%s night %d: %s is %s" % (
                    client, night, os.path.relpath(f, mnt), status.get(f))
            for f in view_files(s, mnt, v, hidden=True):
                if f in newest:
                    continue
                assert reads[inodes[f]] == 0, "%s night %d: the daemon answered %d bytes of %s" % (
                    client, night, reads[inodes[f]], os.path.relpath(f, mnt))


def borg_newest_snapshot_files(nights, mnt):
    """The files of the snapshot view with the newest ctime in the whole tree
    (every store): its disk.raw and JSON files share the snapshot's time."""
    files = {}
    for name in STORES:
        s = nights.st.store(name)
        for v in cl.SNAPS:
            for f in view_files(s, mnt, v, hidden=True):
                files[f] = (os.stat(f).st_ctime_ns, s.vdir(mnt, v))
    top = max(c for c, _ in files.values())
    newest = {f for f, (c, _) in files.items() if c == top}
    assert len({files[f][1] for f in newest}) == 1, "one view holds the newest ctime: %s" % newest
    return newest


@pytest.mark.parametrize("store", STORES)
def test_first_night_reads_each_view_once(nights, store):
    """A walk of the mount (restic's, the first client of the night) reads each
    view's bytes once: partition files are not listed beside disk.raw."""
    s = nights.st.store(store)
    mnt = nights.st.mnt
    reads = nights.reads["restic", 1]
    inodes = nights.inodes[1]
    for v in s.views:
        size = os.path.getsize(s.disk(mnt, v))
        total = sum(reads[inodes[f]] for f in view_files(s, mnt, v, hidden=True)
                    if not f.endswith(".json"))
        assert total == size, "%s: the first backup read %d bytes of the view's files, disk %d" % (
            v, total, size)
        assert not [n for n in os.listdir(s.vdir(mnt, v)) if n.startswith(("part", ".part"))]


@pytest.mark.parametrize("store", STORES)
def test_snapshot_identity_across_remount(nights, store):
    s = nights.st.store(store)
    a, b = nights.snap_stat[1], nights.snap_stat[2]
    mine = [p for p in a if p.startswith(os.path.join(nights.st.mnt, s.name) + "/")]
    assert mine
    for p in mine:
        assert b.get(p) == a[p], "%s: (ino, size, mtime_ns, ctime_ns) %s, after remount %s" % (
            os.path.relpath(p, nights.st.mnt), a[p], b.get(p))


# -- restore tools on a snapshot view -------------------------------------------------

def part1(s, mnt, view=SNAP):
    return os.path.join(s.vdir(mnt, view), ".partitions", "part1.raw")


def fls_inodes(image, offset_sectors=0):
    out = run(["fls", "-r", "-p", "-o", str(offset_sectors), image]).stdout.decode()
    inodes = {}
    for line in out.splitlines():
        kind, rest = line.split(" ", 1)
        ino, path = rest.split(":\t", 1)
        if kind.startswith("r/r"):
            inodes[path] = ino.strip().rstrip("*").strip()
    return inodes


@pytest.mark.parametrize("image", ["part1", "disk"])
@pytest.mark.parametrize("store", STORES)
def test_sleuthkit_fls_icat(stores, store, image):
    need("fls", "icat")
    s = stores.store(store)
    path = part1(s, stores.mnt) if image == "part1" else s.disk(stores.mnt, SNAP)
    off = 0 if image == "part1" else cl.PART_START // 512
    inodes = fls_inodes(path, off)
    for name, data in cl.FILES.items():
        assert name in inodes, "fls %s: %s not listed (%s)" % (path, name, sorted(inodes))
        got = run(["icat", "-o", str(off), path, inodes[name]]).stdout
        assert got == data, "icat %s %s: %d bytes differ from the file's content" % (path, name, len(got))


def seven_zip():
    for t in ("7z", "7zz", "7za"):
        if shutil.which(t):
            return t
    pytest.skip("7z not installed")


@pytest.mark.parametrize("image", ["part1", "disk"])
@pytest.mark.parametrize("store", STORES)
def test_7z_extracts_one_file(stores, store, image, tmp_path):
    z = seven_zip()
    s = stores.store(store)
    # disk.raw: 7z opens the GPT and the ext4 in its one partition
    src = part1(s, stores.mnt) if image == "part1" else s.disk(stores.mnt, SNAP)
    out = tmp_path / "out"
    run([z, "x", "-y", "-o" + str(out), src, "data/blob.bin"])
    assert (out / "data" / "blob.bin").read_bytes() == cl.FILES["data/blob.bin"]


@pytest.mark.parametrize("store", STORES)
def test_e2fsck_clean_on_snapshot_partition(stores, store):
    need("e2fsck")
    s = stores.store(store)
    p = subprocess.run(["e2fsck", "-fn", part1(s, stores.mnt)], capture_output=True)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()


def assert_tree_equal(view, restored, ref_digest):
    names = sorted(os.path.relpath(f, view) for f in view_files_plain(view))
    got = sorted(os.path.relpath(f, restored) for f in view_files_plain(restored))
    assert got == names, "restored %s, the view lists %s" % (got, names)
    for n in names:
        if n == "disk.raw":
            assert (cl.sha256_file(os.path.join(restored, n)), os.path.getsize(
                os.path.join(restored, n))) == ref_digest, "disk.raw restored differs from qemu's"
        else:
            with open(os.path.join(view, n), "rb") as a, open(os.path.join(restored, n), "rb") as b:
                assert a.read() == b.read(), "%s differs" % n


def view_files_plain(d):
    out = []
    for dp, dn, fn in os.walk(d):
        out += [os.path.join(dp, f) for f in fn]
    return out


@pytest.fixture(scope="module")
def snap_refs(stores):
    return {k: s.digest(SNAP) for k, s in stores.by.items()}


TAR = {
    "gnutar": (["tar", "-cf", "{a}", "-C", "{d}", "."], ["tar", "-xf", "{a}", "-C", "{o}"]),
    "gnutar-sparse": (["tar", "--sparse", "-cf", "{a}", "-C", "{d}", "."],
                      ["tar", "-xf", "{a}", "-C", "{o}"]),
    "bsdtar": (["bsdtar", "-cf", "{a}", "-C", "{d}", "."], ["bsdtar", "-xf", "{a}", "-C", "{o}"]),
}


@pytest.mark.parametrize("mode", sorted(TAR))
@pytest.mark.parametrize("store", STORES)
def test_tar_archive_restores_byte_identical(stores, snap_refs, store, mode, tmp_path):
    need(TAR[mode][0][0])
    s = stores.store(store)
    view = s.vdir(stores.mnt, SNAP)
    a, o = str(tmp_path / "a.tar"), tmp_path / "o"
    o.mkdir()
    sub = lambda argv: [x.format(a=a, d=view, o=str(o)) for x in argv]   # noqa: E731
    run(sub(TAR[mode][0]))
    run(sub(TAR[mode][1]))
    assert_tree_equal(view, str(o), snap_refs[store])


COPY = {
    "cp-sparse": lambda src, dst: run(["cp", "--sparse=always", src, dst]),
    "rsync-sparse": lambda src, dst: run(["rsync", "--sparse", src, dst]),
    "rsync-inplace": lambda src, dst: run(["rsync", "--inplace", "--no-whole-file", src, dst]),
}


@pytest.mark.parametrize("tool", sorted(COPY))
@pytest.mark.parametrize("store", STORES)
def test_copy_identical(stores, snap_refs, store, tool, tmp_path):
    need("rsync")
    s = stores.store(store)
    src = s.disk(stores.mnt, SNAP)
    dst = str(tmp_path / "disk.raw")
    if tool == "rsync-inplace":
        # an earlier copy to update in place: another view's bytes
        run(["cp", "--sparse=always", s.disk(stores.mnt, "s2"), dst])
    COPY[tool](src, dst)
    assert (cl.sha256_file(dst), os.path.getsize(dst)) == snap_refs[store]
    if tool != "rsync-inplace":
        # a sparse copy keeps the holes: far fewer blocks than the disk's size
        assert os.stat(dst).st_blocks * 512 < cl.DISK_SIZE // 2


# -- the stat contract ----------------------------------------------------------------

def holds_data(path):
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return False
            if b.count(0) != len(b):
                return True


@pytest.mark.parametrize("store", STORES)
def test_stat_contract(stores, store):
    s = stores.store(store)
    mnt = stores.mnt
    for v in s.views:
        files = view_files(s, mnt, v, hidden=True)
        assert part1(s, mnt, v) in files, "%s: no .partitions/part1.raw" % v
        assert ".partitions" not in os.listdir(s.vdir(mnt, v))
        for f in files:
            st = os.stat(f)
            rel = os.path.relpath(f, mnt)
            assert 1 <= st.st_ino < 1 << 63, "%s: inode %d" % (rel, st.st_ino)
            if holds_data(f):
                assert st.st_blocks > 0, "%s: st_blocks 0 but the file holds data" % rel
            assert st.st_blocks * 512 <= (st.st_size + 511) // 512 * 512, \
                "%s: st_blocks %d over size %d" % (rel, st.st_blocks, st.st_size)
            if f.endswith(".json") and st.st_size:
                assert st.st_blocks == (st.st_size + 511) // 512, rel
    cur = s.disk(mnt, "current")
    a = os.stat(cur)
    assert wait_for(lambda: os.stat(cur).st_mtime_ns != a.st_mtime_ns, 5), "current's mtime stands still"
    b = os.stat(cur)
    assert b.st_ctime_ns != a.st_ctime_ns and b.st_ino == a.st_ino
    assert any(os.stat(cur).st_mtime_ns % 1000000000 for _ in range(5)), "no nanoseconds in current's mtime"


# -- bad input ------------------------------------------------------------------------

@pytest.mark.parametrize("store", STORES)
def test_stat_read_seek_in_any_order(stores, store):
    s = stores.store(store)
    files = view_files(s, stores.mnt, SNAP, hidden=True)
    rnd = random.Random(hash(store) & 0xffff)
    for f in files:
        with open(f, "rb") as fh:
            ref = fh.read()
        size = len(ref)
        fds = [os.open(f, os.O_RDONLY) for _ in range(2)]
        try:
            for _ in range(60):
                fd = rnd.choice(fds)
                op = rnd.choice(["stat", "fstat", "pread", "read", "data", "hole", "end"])
                off = rnd.choice([0, 1, size - 1, size, size + 4096, rnd.randrange(0, size + 1)])
                off = max(0, off)
                if op == "stat":
                    assert os.stat(f).st_size == size
                elif op == "fstat":
                    assert os.fstat(fd).st_size == size
                elif op == "pread":
                    n = rnd.choice([1, 511, 4096, 131073])
                    assert os.pread(fd, n, off) == ref[off:off + n], (f, off, n)
                elif op == "read":
                    pos = os.lseek(fd, off, os.SEEK_SET)
                    n = rnd.choice([1, 4096, 65536])
                    assert os.read(fd, n) == ref[pos:pos + n]
                    assert os.lseek(fd, 0, os.SEEK_CUR) == min(size, pos + n) or pos >= size
                elif op == "end":
                    assert os.lseek(fd, 0, os.SEEK_END) == size
                else:
                    whence = os.SEEK_DATA if op == "data" else os.SEEK_HOLE
                    try:
                        r = os.lseek(fd, off, whence)
                    except OSError as e:
                        assert e.errno == errno.ENXIO and (off >= size or op == "data"), (f, op, off, e)
                        if op == "data":
                            assert ref[off:].count(0) == len(ref) - min(off, size), \
                                "%s: ENXIO for SEEK_DATA at %d but data follows" % (f, off)
                        continue
                    assert off <= r <= size, (f, op, off, r)
                    if op == "data":
                        assert ref[off:r].count(0) == r - off, "%s: data skipped %d..%d" % (f, off, r)
                    else:
                        # a hole reads as zeros up to the next data
                        try:
                            nxt = os.lseek(fd, r, os.SEEK_DATA) if r < size else size
                        except OSError:
                            nxt = size
                        assert ref[r:nxt].count(0) == nxt - r, "%s: hole %d..%d holds data" % (f, r, nxt)
        finally:
            for fd in fds:
                os.close(fd)


@pytest.mark.parametrize("store", STORES)
def test_snapshot_removed_between_stat_and_open(stores, store):
    """A client stats a file, the snapshot is removed (rmdir), the client opens
    it: ENOENT or ESTALE, never the bytes it had."""
    s = stores.store(store)
    stores.stop_vms()          # a running VM holds the image open for writing: EBUSY
    mnt = stores.mnt
    vd = s.vdir(mnt, "gone")
    os.mkdir(vd)
    disk = os.path.join(vd, "disk.raw")
    assert wait_for(lambda: os.path.exists(disk), 10)
    st = os.stat(disk)
    fd = os.open(os.path.join(vd, "allocated.json"), os.O_RDONLY)
    before = os.pread(fd, 1 << 20, 0)
    os.rmdir(vd)
    for p in (disk, os.path.join(vd, "allocated.json"), os.path.join(vd, ".partitions", "part1.raw")):
        with pytest.raises(OSError) as e:
            fh = os.open(p, os.O_RDONLY)
            try:
                os.pread(fh, 4096, 0)
            finally:
                os.close(fh)
        assert e.value.errno in (errno.ENOENT, errno.ESTALE), (p, e.value)
        with pytest.raises(OSError) as e:
            os.stat(p)
        assert e.value.errno in (errno.ENOENT, errno.ESTALE), (p, e.value)
    assert "gone" not in os.listdir(os.path.dirname(vd))
    # the descriptor opened before the rmdir: its bytes, or an error; never other bytes
    try:
        again = os.pread(fd, 1 << 20, 0)
        assert again == before
    except OSError as e:
        assert e.errno in (errno.ENOENT, errno.ESTALE, errno.EIO), e
    finally:
        os.close(fd)
    assert st.st_size == cl.DISK_SIZE
    assert stores.daemon.alive()
