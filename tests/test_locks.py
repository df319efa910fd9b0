"""Locks per store (fs/catalog.c): a snapshot operation that cannot finish
on one store blocks neither the rescans nor the operations of another, and
two operations on one volume take turns and leave every other view's bytes.

The operation is held still deterministically, not by its size: store
"slow" is a directory on its own ext4 (a loop device), frozen with
`fsfreeze -f` while the rmdir runs, so the merge's writes wait in the
kernel until the test thaws it. Store "fast" is a plain directory.

Needs root (loop device, mount, FUSE), qemu-img/qemu-io, fsfreeze.
"""

import hashlib
import os
import shutil
import subprocess
import tempfile
import threading

import pytest

from conftest import Daemon, require_root, wait_for

MiB = 1 << 20
VOL_SLOW = "vm-100-disk-0.qcow2"
VOL_FAST = "vm-200-disk-0.qcow2"


def run(*argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, **kw)


def qcow2(path, size="64M", writes=()):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    run("qemu-img", "create", "-f", "qcow2", path, size)
    for w in writes:
        run("qemu-io", "-f", "qcow2", "-c", w, path)


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(MiB), b""):
            h.update(b)
    return h.hexdigest()


def views(mnt, store, vol):
    d = os.path.join(mnt, store, vol)
    return {v: sha(os.path.join(d, v, "disk.raw")) for v in sorted(os.listdir(d))}


def blocked_threads(pid):
    """Threads of pid asleep uninterruptibly: what a writer to a frozen filesystem does."""
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "D":
                    out.append(t)
        except OSError:
            pass
    return out


class Op(threading.Thread):
    """One mkdir or rmdir through the mount, in a thread: its errno, 0 if it worked."""

    def __init__(self, fn, path):
        super().__init__(daemon=True)
        self.fn, self.path, self.err = fn, path, None

    def run(self):
        try:
            self.fn(self.path)
            self.err = 0
        except OSError as e:
            self.err = e.errno


@pytest.fixture
def stores():
    require_root()
    for tool in ("qemu-img", "qemu-io", "fsfreeze", "mkfs.ext4", "losetup"):
        if not shutil.which(tool):
            pytest.skip("%s missing" % tool)
    top = tempfile.mkdtemp(prefix="locks-", dir="/var/tmp")
    img, slow, fast = (os.path.join(top, n) for n in ("slow.ext4", "slow", "fast"))
    os.makedirs(slow)
    os.makedirs(fast)
    with open(img, "wb") as f:
        f.truncate(512 * MiB)
    run("mkfs.ext4", "-q", "-F", img)
    loop = run("losetup", "--find", "--show", img).stdout.decode().strip()
    frozen = []
    try:
        run("mount", loop, slow)
        try:
            yield top, slow, fast, frozen
        finally:
            if frozen:
                subprocess.run(["fsfreeze", "-u", slow], capture_output=True)
            subprocess.run(["umount", slow], capture_output=True)
    finally:
        subprocess.run(["losetup", "-d", loop], capture_output=True)
        shutil.rmtree(top, ignore_errors=True)


def freeze(path, frozen):
    run("fsfreeze", "-f", path)
    frozen.append(path)


def thaw(path, frozen):
    run("fsfreeze", "-u", path)
    frozen.remove(path)


def mount(top, slow, fast):
    d = Daemon("%s,%s" % (slow, fast), os.path.join(top, "mnt"), [], rescan=1)
    d.wait_mounted()
    return d



def test_merge_on_one_store_blocks_no_other(stores):
    top, slow, fast, frozen = stores
    qcow2(os.path.join(slow, "images", "100", VOL_SLOW), writes=["write -P 0x11 0 16M"])
    qcow2(os.path.join(fast, "images", "200", VOL_FAST), writes=["write -P 0x21 0 4M"])
    d = mount(top, slow, fast)
    try:
        vs = os.path.join(d.mnt, "slow", VOL_SLOW)
        os.mkdir(os.path.join(vs, "s1"))
        run("qemu-io", "-f", "qcow2", "-c", "write -P 0x12 0 16M", os.path.join(slow, "images", "100", VOL_SLOW))
        before = views(d.mnt, "slow", VOL_SLOW)
        freeze(slow, frozen)
        rm = Op(os.rmdir, os.path.join(vs, "s1"))
        rm.start()
        assert wait_for(lambda: blocked_threads(d.proc.pid), 30), "the rmdir never reached the frozen store"
        # A rescan of the other store happens: its new volume shows up.
        qcow2(os.path.join(fast, "images", "200", "vm-200-disk-1.qcow2"), size="8M")
        assert wait_for(lambda: "vm-200-disk-1.qcow2" in os.listdir(os.path.join(d.mnt, "fast")), 30), \
            "the other store was not rescanned while a merge ran"
        assert os.stat(os.path.join(d.mnt, "fast", "vm-200-disk-1.qcow2", "current", "disk.raw")).st_size == 8 * MiB
        # An operation on the other store completes, while the rmdir cannot.
        mk = Op(os.mkdir, os.path.join(d.mnt, "fast", VOL_FAST, "t1"))
        mk.start()
        mk.join(60)
        assert not mk.is_alive(), "mkdir on another store waited for the merge"
        assert mk.err == 0
        assert "t1" in os.listdir(os.path.join(d.mnt, "fast", VOL_FAST))
        assert rm.is_alive()
        thaw(slow, frozen)
        rm.join(120)
        assert not rm.is_alive() and rm.err == 0
        after = views(d.mnt, "slow", VOL_SLOW)
        del before["s1"]
        assert after == before
    finally:
        if frozen:
            thaw(slow, frozen)
        d.stop()


def test_two_rmdirs_on_one_volume_take_turns(stores):
    top, slow, fast, frozen = stores
    img = os.path.join(slow, "images", "100", VOL_SLOW)
    qcow2(img, writes=["write -P 0x11 0 16M"])
    d = mount(top, slow, fast)
    try:
        vs = os.path.join(d.mnt, "slow", VOL_SLOW)
        for i, s in enumerate(("s1", "s2", "s3")):
            os.mkdir(os.path.join(vs, s))
            run("qemu-io", "-f", "qcow2", "-c", "write -P 0x%x %dM 4M" % (0x41 + i, 2 * i), img)
        before = views(d.mnt, "slow", VOL_SLOW)
        freeze(slow, frozen)
        ops = [Op(os.rmdir, os.path.join(vs, s)) for s in ("s1", "s2")]
        for o in ops:
            o.start()
        assert wait_for(lambda: blocked_threads(d.proc.pid), 30), "no rmdir reached the frozen store"
        thaw(slow, frozen)
        for o in ops:
            o.join(120)
            assert not o.is_alive() and o.err == 0, o.err
        after = views(d.mnt, "slow", VOL_SLOW)
        assert after == {v: before[v] for v in ("current", "s3")}
        run("qemu-img", "check", img)
    finally:
        if frozen:
            thaw(slow, frozen)
        d.stop()
