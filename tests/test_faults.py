"""Faults in a directory store while mounted (issue 18): layers that are no
files (FIFO, socket, device, directory), a layer file that stops answering,
layers truncated, replaced or deleted under their views, empty directories,
and what the log says about each.

Everything runs against real files, qemu-img/qemu-io and a real FUSE mount.
A regression here tends to hang rather than fail, so every step that could
hang runs under a watchdog that aborts the FUSE connection
(/sys/fs/fuse/connections/<minor>/abort) and fails the test.
"""

import errno
import os
import time
import shutil
import signal
import socket
import stat
import subprocess
import threading

import pytest

from conftest import MiB, Daemon, make_workdir, require_daemon, require_root, wait_for
from vstorlib import q, qio

VOL = "vm-100-disk-0.qcow2"
WATCHDOG = 40          # seconds: a bound on a hang, never a measured figure
GATE_LIMIT = 4         # common/io_gate.h IO_GATE_LIMIT






def convert(img, out):
    q("qemu-img", "convert", "-U", "-O", "raw", img, out)
    with open(out, "rb") as f:
        return f.read()


@pytest.fixture
def work():
    require_root()
    require_daemon()
    d = make_workdir()
    daemons = []
    yield d, daemons
    for dm in reversed(daemons):
        if dm.proc.poll() is None:
            try:
                os.kill(dm.proc.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    errors = []
    for dm in reversed(daemons):
        try:
            dm.stop(check=True)
        except BaseException as e:  # report the first, clean up all
            errors.append(e)
    shutil.rmtree(d, ignore_errors=True)
    if errors:
        raise errors[0]


def mount(work, source, name, rescan=1):
    d, daemons = work
    dm = Daemon(source, os.path.join(d, name), [], rescan=rescan)
    daemons.append(dm)
    dm.wait_mounted()
    dm.conn = os.minor(os.stat(dm.mnt).st_dev)   # read now: a hung mount cannot be stat'ed
    return dm


def abort(dm):
    path = "/sys/fs/fuse/connections/%d/abort" % dm.conn
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")


def guarded(daemons, fn, what):
    """fn() in a thread; if it has not returned within WATCHDOG seconds, the
    FUSE connections are aborted (so the test ends) and the test fails."""
    out = {}

    def run():
        try:
            out["v"] = fn()
        except BaseException as e:
            out["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(WATCHDOG)
    if t.is_alive():
        for dm in daemons:
            abort(dm)
        t.join(10)
        pytest.fail("%s hung: FUSE connection aborted by the watchdog" % what)
    if "e" in out:
        raise out["e"]
    return out.get("v")


def pread_errno(path, off, n):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as e:
        return e.errno
    try:
        os.pread(fd, n, off)
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


# -- layers that are no files ------------------------------------------------

def make_special(path, kind):
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(path)
        s.listen(1)
        return s
    elif kind == "chardev":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))   # like /dev/zero: endless bytes
    elif kind == "dir":
        os.mkdir(path)
    return None


@pytest.mark.parametrize("kind", ["fifo", "socket", "chardev", "dir"])
def test_layer_that_is_no_file(work, kind):
    """A FIFO, socket, character device or directory at the top, middle or
    bottom of a chain never blocks or is read: the views reading through it
    fail with EIO (the log says it was refused), the rest of the mount works."""
    d, daemons = work
    root = os.path.join(d, "vz")
    i100 = os.path.join(root, "images", "100")
    os.makedirs(i100)
    keep = []
    # middle: current -> snap-s1 (not a file)
    keep.append(make_special(os.path.join(i100, "snap-s1-" + VOL), kind))
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "snap-s1-" + VOL,
      os.path.join(i100, VOL), "1M")
    # bottom: current -> snap-s1 (qcow2) -> base (not a file)
    v1 = "vm-100-disk-1.qcow2"
    keep.append(make_special(os.path.join(i100, "bad-base"), kind))
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "raw", "-b", "bad-base",
      os.path.join(i100, "snap-s1-" + v1), "1M")
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "snap-s1-" + v1,
      os.path.join(i100, v1), "1M")
    # top: the volume's own name
    keep.append(make_special(os.path.join(i100, "vm-100-disk-2.qcow2"), kind))
    # a healthy neighbour
    good = os.path.join(i100, "vm-100-disk-3.qcow2")
    q("qemu-img", "create", "-f", "qcow2", good, "1M")
    qio(good, "write -P 0x5a 0 1M")
    dm = mount(work, root, "mnt")
    top = os.path.join(dm.mnt, "vz")

    def probe():
        vols = sorted(os.listdir(top))
        res = {
            "vols": vols,
            "views0": sorted(os.listdir(os.path.join(top, VOL))),
            "views1": sorted(os.listdir(os.path.join(top, v1))),
            "mid": pread_errno(os.path.join(top, VOL, "current", "disk.raw"), 0, 4096),
            "bottom": pread_errno(os.path.join(top, v1, "current", "disk.raw"), 0, 4096),
            "bottom_s1": pread_errno(os.path.join(top, v1, "s1", "disk.raw"), 0, 4096),
            "good": read_all(os.path.join(top, "vm-100-disk-3.qcow2", "current", "disk.raw")),
        }
        return res

    r = guarded(daemons, probe, "reading a chain with a %s in it" % kind)
    assert r["vols"] == [VOL, v1, "vm-100-disk-3.qcow2"], r["vols"]
    assert r["views0"] == ["current"], "a snapshot layer that is no file is no view"
    assert r["views1"] == ["current", "s1"]
    assert r["mid"] == errno.EIO and r["bottom"] == errno.EIO and r["bottom_s1"] == errno.EIO, r
    assert r["good"] == b"\x5a" * MiB
    log = dm.log()
    assert "not a regular file or block device (refused)" in log, log
    for s in keep:
        if s:
            s.close()


# -- a layer that stops answering -------------------------------------------

def all_threads_stopped(pid):
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            if f.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                return False
    return True


def test_hung_layer_holds_few_threads(work):
    """A layer on a FUSE filesystem whose daemon is stopped (as a hard NFS
    mount whose server left): reads of it hold at most GATE_LIMIT threads,
    the others fail with EIO, and ls and the other stores keep working."""
    d, daemons = work
    hung = os.path.join(d, "hungstore")
    os.makedirs(hung)
    data = bytes(4096) + os.urandom(8 * MiB - 4096)   # no partition table to probe
    with open(os.path.join(hung, "disk.img"), "wb") as f:
        f.write(data)
    healthy = os.path.join(d, "d2")
    os.makedirs(healthy)
    good = os.urandom(2 * MiB)
    with open(os.path.join(healthy, "g.raw"), "wb") as f:
        f.write(good)
    a = mount(work, hung, "a")
    src = os.path.join(a.mnt, "hungstore", "disk.img", "current")
    b = mount(work, src + "," + healthy, "b")
    path = os.path.join(b.mnt, "current", "disk.raw", "current", "disk.raw")
    nreaders = 24
    fds = guarded(daemons, lambda: [os.open(path, os.O_RDONLY) for _ in range(nreaders)], "opening")
    assert os.pread(fds[0], 4096, 4096) == data[4096:8192]
    results = [None] * nreaders
    os.kill(a.proc.pid, signal.SIGSTOP)
    # kill() returns before every thread has stopped: on a loaded machine a
    # thread of the store's server could still answer the first reads.
    assert wait_for(lambda: all_threads_stopped(a.proc.pid), 10), "the store's server did not stop"
    threads = []
    try:
        def reader(i):
            off = (i + 2) * 65536
            try:
                results[i] = os.pread(fds[i], 4096, off) == data[off:off + 4096]
            except OSError as e:
                results[i] = e.errno

        for i in range(nreaders):
            t = threading.Thread(target=reader, args=(i,), daemon=True)
            t.start()
            threads.append(t)

        def healthy_side():
            names = sorted(os.listdir(b.mnt))
            got = read_all(os.path.join(b.mnt, "d2", "g.raw", "current", "disk.raw"))
            # Every reader beyond the gate has its answer.
            wait_for(lambda: sum(r is not None for r in results) >= nreaders - GATE_LIMIT, 30)
            return names, got

        names, got = guarded(daemons, healthy_side, "the mount beside a hung layer")
        assert names == ["current", "d2"] and got == good
        done = [r for r in results if r is not None]
        blocked = nreaders - len(done)
        assert blocked <= GATE_LIMIT, "%d reads still held by the hung layer" % blocked
        assert all(r == errno.EIO for r in done), results
        assert "reads have not come back" in b.log()
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    for t in threads:
        t.join(WATCHDOG)
    # Those that waited in the layer get their bytes once it answers.
    assert [r for r in results if r is not True and r != errno.EIO] == []
    for fd in fds:
        os.close(fd)


# -- layers changed under their views ---------------------------------------

def chain64(d, name="vz"):
    """A Proxmox directory store: VOL over snap-s1-VOL, 64 MiB written in s1."""
    root = os.path.join(d, name)
    i100 = os.path.join(root, "images", "100")
    os.makedirs(i100)
    s1 = os.path.join(i100, "snap-s1-" + VOL)
    q("qemu-img", "create", "-f", "qcow2", s1, "64M")
    qio(s1, "write -P 0x11 0 64M")
    img = os.path.join(i100, VOL)
    q("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", "snap-s1-" + VOL, img, "64M")
    qio(img, "write -P 0x22 0 64k")
    return root, i100, s1, img


def test_truncated_layer_reads_eio(work):
    """truncate of a layer under open and new descriptors: EIO past what it
    holds, never 0 bytes or zeros; SEEK_DATA too; cp fails; a raw volume's
    st_size follows."""
    d, daemons = work
    root, i100, s1, img = chain64(d)
    raw = os.path.join(i100, "vm-100-disk-1.raw")
    with open(raw, "wb") as f:
        f.write(b"\x33" * (8 * MiB))
    dm = mount(work, root, "mnt")
    top = os.path.join(dm.mnt, "vz")
    s1v = os.path.join(top, VOL, "s1", "disk.raw")
    curv = os.path.join(top, VOL, "current", "disk.raw")
    rawv = os.path.join(top, "vm-100-disk-1.raw", "current", "disk.raw")
    fs1, fcur, fraw = os.open(s1v, os.O_RDONLY), os.open(curv, os.O_RDONLY), os.open(rawv, os.O_RDONLY)
    try:
        assert os.pread(fs1, MiB, 0) == b"\x11" * MiB
        assert os.pread(fcur, 4096, 3 * MiB) == b"\x11" * 4096
        os.truncate(s1, 2 * MiB)
        os.truncate(raw, 2 * MiB)

        def errs():
            out = {}
            for name, fd in (("s1", fs1), ("cur", fcur)):
                for n in (4096, MiB):   # copied and spliced replies
                    try:
                        got = os.pread(fd, n, 3 * MiB)
                        out[name, n] = "read %d bytes" % len(got)
                    except OSError as e:
                        out[name, n] = e.errno
            try:
                out["raw"] = "read %d bytes" % len(os.pread(fraw, 4096, 4 * MiB))
            except OSError as e:
                out["raw"] = e.errno
            try:
                out["seek"] = os.lseek(fs1, 3 * MiB, os.SEEK_DATA)
            except OSError as e:
                out["seek"] = e.errno
            out["new"] = pread_errno(s1v, 3 * MiB, 4096)
            out["cp"] = subprocess.run(["cp", s1v, os.path.join(d, "copy")],
                                       capture_output=True).returncode
            return out

        r = guarded(daemons, errs, "reading a truncated layer")
        assert all(v == errno.EIO for k, v in r.items() if k != "cp"), r
        assert r["cp"] != 0, "cp of a truncated view must fail"
        assert wait_for(lambda: os.stat(rawv).st_size == 2 * MiB, 15), os.stat(rawv).st_size
    finally:
        for fd in (fs1, fcur, fraw):
            os.close(fd)


def test_replaced_layer_never_mixes(work):
    """A snapshot layer replaced by rename after part of its view is in the
    page cache: an old descriptor reads entirely old bytes (or EIO), the
    name then stands for entirely new bytes under a new inode."""
    d, daemons = work
    root, i100, s1, img = chain64(d)
    old = convert(s1, os.path.join(d, "old.raw"))
    dm = mount(work, root, "mnt")
    s1v = os.path.join(dm.mnt, "vz", VOL, "s1", "disk.raw")
    ino0 = os.stat(s1v).st_ino
    fd = os.open(s1v, os.O_RDONLY)
    try:
        assert os.pread(fd, 4 * MiB, 0) == old[:4 * MiB]
        repl = os.path.join(i100, ".repl.qcow2")
        q("qemu-img", "create", "-f", "qcow2", repl, "64M")
        qio(repl, "write -P 0x44 0 64M")
        new = convert(repl, os.path.join(d, "new.raw"))
        os.rename(repl, s1)
        moved = wait_for(lambda: os.stat(s1v).st_ino != ino0, 15)

        def reads():
            chunks = []
            for off in range(0, 64 * MiB, MiB):
                try:
                    chunks.append(os.pread(fd, MiB, off))
                except OSError as e:
                    chunks.append(e.errno)
            try:
                fresh = read_all(s1v)
            except OSError as e:
                fresh = e.errno
            return chunks, fresh

        chunks, fresh = guarded(daemons, reads, "reading a replaced layer")
        assert moved, "the view of a replaced layer kept its inode"
        kinds = set("old" if c == old[i * MiB:(i + 1) * MiB] else
                    "new" if c == new[i * MiB:(i + 1) * MiB] else
                    "eio" if c == errno.EIO else "other" for i, c in enumerate(chunks))
        assert kinds in ({"old"}, {"eio"}, {"old", "eio"}), "old descriptor read %s" % kinds
        assert fresh == new or fresh == errno.EIO, "a new open must read the new layer whole"
        # Once the kernel's attributes of the old inode run out (10 s for a
        # snapshot), an fstat and a cached read make it ask again, with the
        # descriptor: the answer is the bytes' own attributes, never ESTALE.
        time.sleep(11)

        def later():
            st = os.fstat(fd)
            try:
                got = os.pread(fd, MiB, 8 * MiB)
            except OSError as e:
                got = e.errno
            return st, got

        st, got = guarded(daemons, later, "fstat of an old descriptor")
        assert st.st_ino == ino0 and st.st_size == 64 * MiB
        assert got == old[8 * MiB:9 * MiB] or got == errno.EIO, "old descriptor read %r" % (
            got if isinstance(got, int) else "other bytes")
    finally:
        os.close(fd)


def test_deleted_snapshot_file_logs_once_and_leaves(work):
    """Opens of a view whose snapshot file is gone log one line, not one per
    open; with rescans on, the view leaves the listing."""
    d, daemons = work
    root, i100, s1, img = chain64(d)
    # rescans off: the dead view stays listed, and every open of it fails
    frozen = mount(work, root, "frozen", rescan=3600)
    s1v = os.path.join(frozen.mnt, "vz", VOL, "s1", "disk.raw")
    assert os.stat(s1v).st_size == 64 * MiB
    live = mount(work, root, "live")
    assert "s1" in os.listdir(os.path.join(live.mnt, "vz", VOL))
    os.unlink(s1)

    def opens():
        return [pread_errno(s1v, 0, 4096) for _ in range(200)]

    res = guarded(daemons, opens, "opening a dead view")
    assert set(res) == {errno.EIO}, set(res)
    lines = [l for l in frozen.log().splitlines() if "snap-s1-" + VOL in l]
    assert len(lines) == 1, "%d log lines for one dead view:\n%s" % (len(lines), "\n".join(lines[:5]))
    assert wait_for(lambda: "s1" not in os.listdir(os.path.join(live.mnt, "vz", VOL)), 15), \
        "a deleted snapshot file stays listed"


# -- empty directories and the store's own words -----------------------------

def test_empty_directories(work):
    """An empty store, an empty images/, an empty images/<vmid>/ mount and
    list (the sanitized daemon once died on qsort(NULL, 0, ...))."""
    d, daemons = work
    empty = os.path.join(d, "empty")
    os.makedirs(empty)
    pve0 = os.path.join(d, "pve0")
    os.makedirs(os.path.join(pve0, "images"))
    pve1 = os.path.join(d, "pve1")
    os.makedirs(os.path.join(pve1, "images", "100"))
    nova = os.path.join(d, "nova")
    os.makedirs(os.path.join(nova, "_base"))
    os.makedirs(os.path.join(nova, "0a1b2c3d-uuid"))
    dm = mount(work, ",".join((empty, pve0, pve1, nova)), "mnt")

    def listing():
        return {n: os.listdir(os.path.join(dm.mnt, n)) for n in sorted(os.listdir(dm.mnt))}

    got = guarded(daemons, listing, "listing empty stores")
    assert got == {"empty": [], "pve0": [], "pve1": [], "nova": []}
    dm.stop(check=True)     # fails on a sanitizer report


def test_messages_name_the_store_kind(work):
    """A backing file outside a directory store is refused as outside the
    directory store, not the volume group."""
    d, daemons = work
    root = os.path.join(d, "plain")
    os.makedirs(root)
    outside = os.path.join(d, "outside.raw")
    with open(outside, "wb") as f:
        f.write(bytes(MiB))
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "raw", "-b", outside,
      os.path.join(root, "a.qcow2"), "1M")
    dm = mount(work, root, "mnt")
    assert guarded(daemons, lambda: pread_errno(
        os.path.join(dm.mnt, "plain", "a.qcow2", "current", "disk.raw"), 0, 4096),
        "reading") == errno.EIO
    log = dm.log()
    assert "outside the directory store (refused)" in log, log
    assert "volume group" not in log, log
