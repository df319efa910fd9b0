"""pytest fixtures for the vstorfs end-to-end tests.

Run as root: /usr/bin/python3 -m pytest -v tests
Env: VSTORFS_BIN (daemon, default <repo>/vstorfs), VSTORFS_TMP (scratch dir).
"""

import os
import random
import shutil
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lvmlib  # noqa: E402
from lvmlib import MiB, GiB, VG, Chain, sha256_file, make_workdir, run  # noqa: E402,F401

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SANITIZER_MARKERS = ("AddressSanitizer", "runtime error:", "LeakSanitizer")
MOUNT_TIMEOUT = 15


def daemon_path():
    return os.environ.get("VSTORFS_BIN") or os.path.join(REPO, "vstorfs")


def require_daemon():
    p = daemon_path()
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        pytest.skip("vstorfs daemon not built (%s)" % p)
    return p


def skip_if_sanitized(why="scale test: covered by the plain build"):
    """Chains hundreds of layers deep take too long under ASan; make test runs them."""
    if "asan" in daemon_path():
        pytest.skip(why)


def require_root():
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, LVM, FUSE)")


def wait_for(pred, timeout=10.0, interval=0.1):
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > end:
            return v
        time.sleep(interval)


def sanitizer_check(log):
    for m in SANITIZER_MARKERS:
        if m in log:
            pytest.fail("daemon stderr contains %r:\n%s" % (m, log[-20000:]))


class Daemon:
    """One foreground vstorfs process serving one mountpoint."""

    def __init__(self, source, mnt, devices, opts=(), rescan=1, logpath=None, binary=None):
        self.source = source
        self.mnt = mnt
        self.binary = binary or require_daemon()
        os.makedirs(mnt, exist_ok=True)
        o = ["devices=" + ",".join(devices)]
        if rescan is not None:
            o.append("rescan=%d" % rescan)
        o += list(opts)
        self.argv = [self.binary, source, mnt, "-f", "-o", ",".join(o)]
        self.logpath = logpath or (mnt.rstrip("/") + ".stderr")
        self.log_fh = open(self.logpath, "wb")
        env = dict(os.environ)
        env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=32")  # keep RSS checks meaningful
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        self.proc = subprocess.Popen(self.argv, stdout=self.log_fh, stderr=self.log_fh,
                                     stdin=subprocess.DEVNULL, env=env)
        self.stopped = False

    def log(self):
        try:
            with open(self.logpath, "rb") as f:
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_mounted(self, timeout=MOUNT_TIMEOUT):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if os.path.ismount(self.mnt):
                self.dev = os.stat(self.mnt).st_dev
                return
            if self.proc.poll() is not None:
                pytest.fail("vstorfs exited (%d) before mounting\n%s\nstderr:\n%s" % (
                    self.proc.returncode, " ".join(self.argv), self.log()))
            time.sleep(0.05)
        pytest.fail("vstorfs did not mount %s within %ds\n%s\nstderr:\n%s" % (
            self.mnt, timeout, " ".join(self.argv), self.log()))

    def alive(self):
        return self.proc.poll() is None and os.path.ismount(self.mnt)

    def foreign_copies(self):
        """(pid, mountpoint) of mount namespaces other than ours that hold a
        copy of this mount. `unshare -m` (test_cluster's nodes, bench, any
        other engineer's container on a shared machine) copies every mount
        that exists at that moment; the copy keeps the FUSE connection up
        after our umount, so the daemon rightly serves on and never exits."""
        dev = getattr(self, "dev", None)
        if dev is None:
            return []
        key = " %d:%d " % (os.major(dev), os.minor(dev))
        ours = os.readlink("/proc/self/ns/mnt")
        seen, out = set(), []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                ns = os.readlink("/proc/%s/ns/mnt" % pid)
                if ns == ours or ns in seen:
                    continue
                with open("/proc/%s/mountinfo" % pid) as f:
                    for line in f:
                        if key in line and " - fuse.vstorfs " in line:
                            seen.add(ns)
                            out.append((int(pid), line.split()[4]))
                            break
            except OSError:
                continue
        return out

    def wait_exit(self, timeout):
        """Wait for the daemon to exit after our umount. Copies of the mount in
        foreign namespaces are unmounted there (they are ours and would be
        dead anyway), with a note in the log: they, not the daemon, kept it up."""
        end = time.monotonic() + timeout
        released = False
        while True:
            try:
                return self.proc.wait(timeout=min(0.5, max(0.01, end - time.monotonic())))
            except subprocess.TimeoutExpired:
                if time.monotonic() >= end:
                    raise
            if released or os.path.ismount(self.mnt):
                continue
            copies = self.foreign_copies()
            for pid, path in copies:
                subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", path],
                               capture_output=True)
            if copies:
                released = True
                print("conftest: umount of %s left copies in other mount namespaces (pid, path): %r; "
                      "unmounted them there" % (self.mnt, copies), file=sys.stderr)

    def stop(self, check=True):
        """umount, wait for exit status 0, fail on sanitizer reports."""
        if self.stopped:
            return
        self.stopped = True
        if os.path.ismount(self.mnt):
            r = subprocess.run(["umount", self.mnt], capture_output=True)
            if r.returncode != 0:
                wait_for(lambda: subprocess.run(["umount", self.mnt],
                                                capture_output=True).returncode == 0, 3)
                if os.path.ismount(self.mnt):
                    subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        try:
            rc = self.wait_exit(20)
        except subprocess.TimeoutExpired:
            copies = self.foreign_copies()
            self.proc.kill()
            self.proc.wait()
            self.log_fh.close()
            if check:
                pytest.fail("vstorfs did not exit after umount (copies in other mount namespaces: %r)"
                            "\nstderr:\n%s" % (copies, self.log()))
            return
        self.log_fh.close()
        if check:
            log = self.log()
            sanitizer_check(log)
            assert rc == 0, "vstorfs exited %d after umount\nstderr:\n%s" % (rc, log)


def start_daemon(source, mnt, devices, opts=(), rescan=1):
    d = Daemon(source, mnt, devices, opts=opts, rescan=rescan)
    try:
        d.wait_mounted()
    except BaseException:
        d.stop(check=False)
        raise
    return d


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
        failure = None
        for d in self.daemons:
            try:
                d.stop(check=True)
            except BaseException as e:
                failure = failure or e
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
