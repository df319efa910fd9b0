"""pytest fixtures for the vstorfs end-to-end tests.

Run as root: /usr/bin/python3 -m pytest -v tests
Env: VSTORFS_BIN (daemon, default <repo>/vstorfs), VSTORFS_TMP (scratch dir).
"""

import os
import random
import shutil
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lvmlib  # noqa: E402
from lvmlib import MiB, GiB, VG, Chain, make_workdir, run  # noqa: E402,F401
from vstorlib import (REPO, SANITIZER_MARKERS, MOUNT_TIMEOUT, Daemon, cat_bin,  # noqa: E402,F401
                      crash_daemon_path, daemon_path, qemu_check, qio, require_daemon,
                      require_root, sanitizer_check, skip_if_sanitized, sha256_file, start_daemon, stop_all, umount_lazy,
                      wait_for)

# -- comparison helpers -----------------------------------------------------

def first_difference(a_path, b_path, chunk=MiB):
    with open(a_path, "rb") as a, open(b_path, "rb") as b:
        off = 0
        while True:
            x, y = a.read(chunk), b.read(chunk)
            if x != y:
                for i in range(min(len(x), len(y))):
                    if x[i] != y[i]:
                        return off + i
                return off + min(len(x), len(y))
            if not x:
                return None
            off += len(x)


def assert_same_content(path, ref, rng_seed=0, nranges=24):
    """disk.raw at `path` equals the reference raw image: size, sha256, ranges."""
    st = os.stat(path)
    rsize = os.path.getsize(ref)
    assert st.st_size == rsize, "%s: size %d, reference %d" % (path, st.st_size, rsize)
    # ranges first (they give better messages), unaligned, across cluster edges
    rnd = random.Random(rng_seed)
    with open(path, "rb", buffering=0) as f, open(ref, "rb", buffering=0) as r:
        fd, rd = f.fileno(), r.fileno()
        offsets = [0, 1, 4095, 65535, 65536 - 7, 131072 - 3, max(0, rsize - 5)]
        offsets += [rnd.randrange(0, max(1, rsize)) for _ in range(nranges)]
        for off in offsets:
            n = rnd.choice([1, 7, 512, 4096, 65537, 200000])
            got = os.pread(fd, n, off)
            exp = os.pread(rd, n, off)
            assert got == exp, "%s: bytes %d+%d differ from reference" % (path, off, n)
    if sha256_file(path) != sha256_file(ref):
        pytest.fail("%s: sha256 differs from reference; first difference at byte %s" % (
            path, first_difference(path, ref)))


def disk_path(mnt, vg, volume, view="current"):
    return os.path.join(mnt, vg, volume, view, "disk.raw")


def check_all_views(mnt, chain, volumes=None, seed=0):
    """Compare every view of every (given) volume of a chain with the qemu reference."""
    chain.refresh_reference_layers()
    vg = chain.vg.name
    for vname in (volumes or chain.volumes):
        v = chain.volumes[vname]
        listed = sorted(os.listdir(os.path.join(mnt, vg, vname)))
        assert listed == sorted(v.views()), "%s: views %s, expected %s" % (
            vname, listed, sorted(v.views()))
        for view in v.views():
            ref = chain.reference(vname, view)
            assert_same_content(disk_path(mnt, vg, vname, view), ref, rng_seed=seed)
            os.unlink(ref)


def read_expect_errno(path, off, length, errnos=(5,)):
    """pread that must fail with one of errnos (default EIO)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            os.pread(fd, length, off)
        except OSError as e:
            assert e.errno in errnos, "%s: read %d+%d failed with %s, expected %s" % (
                path, off, length, e, errnos)
            return e
        pytest.fail("%s: read %d+%d succeeded, expected errno %s" % (path, off, length, errnos))
    finally:
        os.close(fd)


# -- fixtures ---------------------------------------------------------------

@pytest.fixture(scope="session")
def daemon_bin():
    require_root()
    return require_daemon()


class Env:
    """Per-test (or per-module) scratch area: VGs, chains, mounts; all cleaned up."""

    def __init__(self):
        require_root()
        self.dir = make_workdir()
        self.vgs = []
        self.daemons = []
        self.mounts = []      # extra mountpoints to umount (loop mounts, mount.vstorfs)
        self.cleanups = []

    def vg(self, **kw):
        vg = VG(self.dir, **kw)
        self.vgs.append(vg)
        return vg

    def chain(self, vg=None, **kw):
        return Chain(vg or self.vg(**kw), self.dir)

    def mountpoint(self, name="mnt"):
        p = os.path.join(self.dir, name)
        os.makedirs(p, exist_ok=True)
        return p

    def mount(self, source, devices, opts=(), name="mnt", rescan=1):
        require_daemon()
        mnt = self.mountpoint(name)
        d = Daemon(source, mnt, devices, opts=opts, rescan=rescan)
        self.daemons.append(d)
        d.wait_mounted()
        return d

    def close(self):
        errors = []
        for fn in reversed(self.cleanups):
            try:
                fn()
            except Exception as e:  # pragma: no cover - cleanup best effort
                errors.append(e)
        for m in reversed(self.mounts):
            if os.path.ismount(m):
                if subprocess.run(["umount", m], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", m], capture_output=True)
        failure = stop_all(self.daemons)
        for vg in self.vgs:
            vg.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)
        if failure:
            raise failure


@pytest.fixture
def env():
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="module")
def module_env():
    e = Env()
    try:
        yield e
    finally:
        e.close()


@pytest.fixture(scope="session")
def ceph_cluster():
    """A throwaway single-node Ceph cluster (tests/cephlib.py) with an initialized pool `rbd`.

    Skips when the ceph packages are missing. Started once per session, stopped by its pid files.
    """
    require_root()
    import cephlib
    missing = cephlib.missing_binaries()
    if missing:
        pytest.skip("ceph packages not installed (missing %s)" % ", ".join(missing))
    c = cephlib.Cluster()
    try:
        c.create()
    except BaseException:
        c.destroy()
        raise
    try:
        yield c
    finally:
        c.destroy()
