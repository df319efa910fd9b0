"""Store conformance: what every store behind the tree must do, one suite
parametrized over STORES. Adding a store adds a builder here (a class with
build/refs and its crash steps) and one STORES line.

Each builder makes a small store holding one qcow2/RBD volume with a
3-snapshot chain s1 < s2 < s3, data written between them, mounted through
the one daemon harness (vstorlib). References are the platform's own
readers: qemu-img over the LV bytes or the files, `rbd export`.
"""

import errno
import os
import time

import pytest

import test_dirstore as dst
import test_snapshots as lsn
from vstorlib import (MiB, crash_daemon_path, qemu_check, require_daemon, require_root, sha256_file,
                      sha_qemu, start_daemon, stop_all)

VOL = "vm-100-disk-0.qcow2"
SNAPS = ["s1", "s2", "s3"]


class Store:
    """One store under test: build it, mount it, say what the views must hold."""
    recovery_log = {}       # op -> what the remount after a crash logs (where a store says it)
    mkdir_steps = ()
    rmdir_steps = ()        # (step, victim, shape): shape "rebase" builds newer layers heavier

    def __init__(self, work, request, shape="commit"):
        self.work = work
        self.request = request
        self.shape = shape
        self.daemons = []

    def mount(self, name="mnt", binary=None, env=None, opts=()):
        mnt = os.path.join(self.work, name)
        d = start_daemon(self.source, mnt, self.devices, opts=list(self.opts) + list(opts),
                         binary=binary, env=env, timeout=30)
        self.daemons.append(d)
        return d

    def vol_dir(self, d):
        return os.path.join(d.mnt, self.store, self.vol)

    def views(self, d):
        top = self.vol_dir(d)
        return {v: sha256_file(os.path.join(top, v, "disk.raw")) for v in os.listdir(top)}

    def close(self):
        failure = stop_all(self.daemons)
        self.cleanup()
        if failure:
            raise failure

    def cleanup(self):
        pass

    def check_images(self):
        """The platform's own checker finds the store clean (no leftovers, no leaks)."""


class Lvm(Store):
    """A Proxmox LVM volume chain (test_snapshots.build_volume): base + one LV a snapshot."""
    recovery_log = {"mkdir": "interrupted snapshot", "rmdir": "interrupted snapshot deletion"}
    mkdir_steps = tuple(lsn.MKDIR_STEPS)
    rmdir_steps = tuple((s, "s1", "commit") for s in lsn.RMDIR_COMMIT_STEPS) + \
        tuple((s, "s2", "rebase") for s in lsn.RMDIR_REBASE_STEPS)

    def build(self):
        from conftest import Env
        self.env = Env()
        self.vg, _ = lsn.build_volume(self.env, snaps=tuple(SNAPS),
                                      commit_heavy=self.shape == "rebase")
        self.source, self.devices, self.opts = self.vg.name, self.vg.loops, ()
        self.store, self.vol = self.vg.name, VOL

    def refs(self):
        refdir = lsn.copy_all_lvs(self.vg, os.path.join(self.env.dir, "ref-%d" % time.monotonic_ns()))
        return lsn.expected_views(self.vg, refdir)

    def check_images(self):
        lsn.check_consistent(self.env, self.vg, "conf-%d" % time.monotonic_ns())

    def cleanup(self):
        self.env.close()


class DirChain(Store):
    """Proxmox dir storage with snapshot-as-volume-chain: snap-<s>-<vol> files."""
    mkdir_steps = tuple(dst.MKDIR_STEPS)
    rmdir_steps = tuple((s, "s1", "commit") for s in dst.RM_COMMIT) + \
        tuple((s, "s2", "rebase") for s in dst.RM_REBASE)

    def build(self):
        self.root, self.cfg, self.img = dst.take_chain(self.work, tuple(SNAPS))
        self.source, self.devices, self.opts = self.root, None, ()
        self.store, self.vol = os.path.basename(self.root), VOL
        self.dir = os.path.dirname(self.img)
        # commit: s1's layer outweighs its child's; rebase: s2's child (s3's layer) outweighs s2's
        heavy = ("snap-s1-" if self.shape == "commit" else "snap-s3-") + VOL
        dst.qio(os.path.join(self.dir, heavy), "write -P 0xee 8M 20M")

    def refs(self):
        out = {"current": sha_qemu(self.img)}
        for f in os.listdir(self.dir):
            if f.startswith("snap-") and f.endswith("-" + VOL):
                out[f[len("snap-"):-len("-" + VOL)]] = sha_qemu(os.path.join(self.dir, f))
        return out

    def check_images(self):
        dst.no_leftovers(self.root)
        for f in os.listdir(self.dir):
            if f.endswith(".qcow2"):
                qemu_check(os.path.join(self.dir, f))


class DirInternal(Store):
    """A dir storage whose qcow2 holds internal snapshots (qemu-img snapshot -c)."""
    mkdir_steps = tuple(dst.ISNAP_CREATE)
    rmdir_steps = tuple((s, "s2", "commit") for s in dst.ISNAP_DELETE)

    def build(self):
        self.root = dst.pve_store(self.work)
        self.img = os.path.join(self.root, "images", "100", VOL)
        for i, s in enumerate(SNAPS):
            dst.q("qemu-img", "snapshot", "-c", s, self.img)
            dst.qio(self.img, "write -P 0x%x %dM 2M" % (0xa0 + i, 1 + 3 * i))
            time.sleep(0.01)
        self.source, self.devices, self.opts = self.root, None, ()
        self.store, self.vol = os.path.basename(self.root), VOL

    def refs(self):
        out = {"current": sha_qemu(self.img)}
        for s in dst.qemu_snapshots(self.img):
            out[s] = sha_qemu(self.img, s)
        return out

    def check_images(self):
        dst.no_leftovers(self.root)
        qemu_check(self.img)


class Rbd(Store):
    """An RBD image with three snapshots in the session's throwaway cluster."""
    POOL = "rbd"

    def build(self):
        import test_rbd
        if not test_rbd.daemon_has_store_seam():
            pytest.skip("the daemon does not serve rbd: sources")
        self.c = self.request.getfixturevalue("ceph_cluster")
        self.name = "vm-%d-disk-0" % (300 + Rbd.serial)
        Rbd.serial += 1
        spec = "%s/%s" % (self.POOL, self.name)
        self.c.rbd("create", "--size", "32M", spec)
        for i, s in enumerate(SNAPS):
            test_rbd.write_extents(self.c, self.name, [((1 + 3 * i) * MiB, bytes([0xa0 + i]) * (2 * MiB))])
            self.c.rbd("snap", "create", "%s@%s" % (spec, s))
            time.sleep(1.1)      # rbd snapshot timestamps have seconds: keep them apart
        test_rbd.write_extents(self.c, self.name, [(20 * MiB, b"\x5c" * MiB)])
        self.source = "rbd:" + self.POOL
        self.devices = None
        self.opts = ("ceph_conf=" + self.c.conf, "ceph_id=admin")
        self.store, self.vol = self.POOL, self.name

    def refs(self):
        import json
        spec = "%s/%s" % (self.POOL, self.name)
        snaps = json.loads(self.c.rbd("snap", "ls", "--format", "json", spec).stdout)
        out = {"current": self.c.export_sha256(spec)}
        for s in snaps:
            out[s["name"]] = self.c.export_sha256(spec + "@" + s["name"])
        return out

    def cleanup(self):
        spec = "%s/%s" % (self.POOL, self.name)
        self.c.rbd("snap", "purge", spec, check=False)
        self.c.rbd("rm", "--no-progress", spec, check=False)


Rbd.serial = 0

STORES = {"lvm": Lvm, "dir-chain": DirChain, "dir-internal": DirInternal, "rbd": Rbd}


@pytest.fixture(params=list(STORES))
def store(request, tmp_path):
    require_root()
    require_daemon()
    s = STORES[request.param](str(tmp_path), request)
    try:
        s.build()
        yield s
    finally:
        s.close()


def expect_errno(fn, code):
    with pytest.raises(OSError) as e:
        fn()
    assert e.value.errno == code, "%s, expected %s" % (e.value, errno.errorcode[code])


def older(view, order):
    """The views older than `view` in `order` (oldest first; current is the newest)."""
    return order[:order.index(view)] if view != "current" else list(order)


# -- the tree ---------------------------------------------------------------

def test_tree_shape(store):
    d = store.mount()
    assert store.store in os.listdir(d.mnt)
    assert store.vol in os.listdir(os.path.join(d.mnt, store.store))
    top = store.vol_dir(d)
    assert sorted(os.listdir(top)) == sorted(["current"] + SNAPS)
    for view in ["current"] + SNAPS:
        vd = os.path.join(top, view)
        names = os.listdir(vd)
        for f in ("disk.raw", "allocated.json", "changed-since"):
            assert f in names, "%s: %s missing (%s)" % (view, f, names)
        assert sorted(os.listdir(os.path.join(vd, "changed-since"))) == \
            sorted(o + ".json" for o in older(view, SNAPS)), view
        assert os.stat(os.path.join(vd, "disk.raw")).st_size == 32 * MiB
    assert store.views(d) == store.refs()


def test_name_rules(store):
    d = store.mount()
    top = store.vol_dir(d)
    for bad in ("bad name", "1digit", "a" * 41, "x"):
        expect_errno(lambda: os.mkdir(os.path.join(top, bad)), errno.EINVAL)
    # The README's errno table: `current` already exists (the kernel looks the
    # name up before it asks FUSE, so no store can answer otherwise), and
    # rmdir current is EBUSY.
    expect_errno(lambda: os.mkdir(os.path.join(top, "current")), errno.EEXIST)
    expect_errno(lambda: os.rmdir(os.path.join(top, "current")), errno.EBUSY)
    expect_errno(lambda: os.mkdir(os.path.join(top, "s2")), errno.EEXIST)
    expect_errno(lambda: os.rmdir(os.path.join(top, "nosuch")), errno.ENOENT)
    d.stop()
    ro = store.mount(name="ro", opts=("ro",))
    expect_errno(lambda: os.mkdir(os.path.join(store.vol_dir(ro), "fresh")), errno.EROFS)
    expect_errno(lambda: os.rmdir(os.path.join(store.vol_dir(ro), "s1")), errno.EROFS)
    assert sorted(os.listdir(store.vol_dir(ro))) == sorted(["current"] + SNAPS)


# -- mkdir, rmdir ---------------------------------------------------------------

@pytest.mark.parametrize("victim", SNAPS)
def test_mkdir_then_rmdir_at_every_position(store, victim):
    """mkdir adds a view equal to current; rmdir of the oldest, middle or newest
    leaves every other view byte for byte as the platform reads it."""
    d = store.mount()
    top = store.vol_dir(d)
    before = store.refs()
    os.mkdir(os.path.join(top, "s4"))
    after = store.refs()
    assert after.get("s4") == before["current"] and {k: after[k] for k in before} == before
    assert store.views(d) == after
    os.rmdir(os.path.join(top, victim))
    expect = dict(after)
    del expect[victim]
    assert store.refs() == expect
    assert store.views(d) == expect
    store.check_images()


def crash_cases():
    out = []
    for name, cls in STORES.items():
        steps = [("mkdir", s, None, "commit") for s in cls.mkdir_steps] + \
                [("rmdir", s, v, shape) for s, v, shape in cls.rmdir_steps]
        if not steps:
            out.append(pytest.param(name, None, None, None, None, marks=pytest.mark.skip(
                reason="%s has no crash points (one platform call a step)" % name), id=name))
        for op, step, victim, shape in steps:
            out.append(pytest.param(name, op, step, victim, shape,
                                    id="%s-%s-%s-%s" % (name, op, shape, step)))
    return out


@pytest.mark.parametrize("kind,op,step,victim,shape", crash_cases())
def test_kill9_at_every_step_then_remount_recovers(request, tmp_path, kind, op, step, victim, shape):
    """The daemon dies by kill -9 at `step`; the next mount finishes or undoes the
    operation: every view then reads as before (plus the new one, or minus the
    victim), and the platform's checker finds nothing left over."""
    require_root()
    crash_bin = require_daemon(crash_daemon_path())
    s = STORES[kind](str(tmp_path), request, shape)
    try:
        s.build()
        before = s.refs()
        d = s.mount(name="crash", binary=crash_bin, env={"VSTORFS_CRASH_AT": step})
        path = os.path.join(s.vol_dir(d), "s4" if op == "mkdir" else victim)
        try:
            (os.mkdir if op == "mkdir" else os.rmdir)(path)
        except OSError as e:
            assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), e
        assert d.proc.wait(20) == -9, "daemon did not die at " + step
        log = d.stop()
        assert "crash point " + step in log
        d2 = s.mount(name="again")
        if op in s.recovery_log:
            assert s.recovery_log[op] in d2.log()
        views = s.views(d2)
        assert s.refs() == views
        if op == "mkdir":
            if "s4" in views:
                assert views.pop("s4") == before["current"]
            assert views == before
        else:
            expect = dict(before)
            del expect[victim]
            assert views == expect
        s.check_images()
    finally:
        s.close()


# -- identity -----------------------------------------------------------------

def identity(d, store, views, mtime=True):
    top = store.vol_dir(d)
    out = {}
    for v in views:
        st = os.stat(os.path.join(top, v, "disk.raw"))
        out[v] = (st.st_ino, st.st_mtime_ns if mtime and v != "current" else None)
    return out


def test_identity_across_remount_and_merge(store):
    """A backup tool keys on (inode, mtime): an untouched view keeps both across a
    remount and across the merge that removes its neighbour."""
    d = store.mount()
    first = identity(d, store, ["current"] + SNAPS)
    d.stop()
    d = store.mount(name="again")
    assert identity(d, store, ["current"] + SNAPS) == first
    os.rmdir(os.path.join(store.vol_dir(d), "s2"))
    keep = ["current", "s1", "s3"]
    assert identity(d, store, keep) == {v: first[v] for v in keep}
    d.stop()
    d = store.mount(name="third")
    assert identity(d, store, keep) == {v: first[v] for v in keep}
