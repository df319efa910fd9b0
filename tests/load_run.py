#!/usr/bin/env python3
"""Load run of a directory store (issue 18's "done when"). Not a pytest module:
run it by hand, as root, against the built daemon:

    python3 tests/load_run.py [DURATION_SECONDS]       # default 600

It builds a Proxmox-style directory store on a scratch directory (VSTORFS_TMP,
default /var/tmp) with six 64 MiB volumes (internal snapshots and snap-
chains, distinct data written by qemu-io, zlib/zstd compressed clusters,
extended L2, 4 KiB and 128 KiB clusters), mounts it with
`vstorfs SOURCE MNT -f -o rescan=1` and for DURATION seconds runs:

- READERS (32) threads, each picking a view and a random range (4 KiB - 4 MiB,
  log-uniform, aligned or not; some opens O_DIRECT, some posix_fadvise
  DONTNEED to push reads back to the daemon) and comparing the bytes with a
  reference made by `qemu-img convert` (before the run, or when the snapshot
  is taken). `current` is read only where nothing writes it;
- a mkdir/rmdir loop on two volumes (a snap- chain and internal snapshots):
  qemu-io writes into current, mkdir, the new view and current checked whole
  against qemu-img convert of the new snapshot, the view read by the
  readers, more qemu-io writes, rmdir (a merge that moves data), current
  checked whole against qemu again; every op must succeed;
- once, a snapshot layer of a third volume truncated (its views may then
  read EIO: counted as expected, never as wrong bytes), and once a layer of
  a fourth volume replaced by rename with new content (each read must equal
  the old or the new reference whole, or fail with EIO; a mixed read counts
  as wrong; a descriptor opened before the rename must read old bytes);
- a watchdog: a read or op running longer than TIMEOUT s counts as a hang; a
  thread still stuck at the end gets the FUSE connection aborted;
- daemon RSS (VmRSS) and log size sampled every 10 s.

Exit status non-zero on wrong bytes, hangs, unexpected errors or failed
operations (and on a daemon that dies, exits non-zero or logs a sanitizer
report). Env: VSTORFS_BIN (daemon, default <repo>/vstorfs), VSTORFS_TMP.
"""

import argparse
import collections
import errno
import mmap
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

try:
    import pytest  # noqa: F401 (vstorlib needs it; probed here to say so)
except ImportError:
    # The harness (vstorlib) needs pytest: Debian's python3-pytest, for /usr/bin/python3.
    # A python3 first on PATH without it (pyenv) hands the run to that one.
    if os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") and \
            os.access("/usr/bin/python3", os.X_OK):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.exit("load_run.py: needs pytest (apt-get install python3-pytest)")

# Outside pytest, what the harness raises (HARNESS_FAILURES) is reported here, not
# left to a traceback.
from vstorlib import HARNESS_FAILURES, daemon_path, start_daemon, stop_checked
MiB = 1 << 20
VSIZE = 64 * MiB
TIMEOUT = 30.0             # a read or op longer than this is a hang
SAMPLE = 10.0              # RSS / log sampling period


def log(msg):
    sys.stdout.write("[%7.1f] %s\n" % (time.monotonic() - T0, msg))
    sys.stdout.flush()


T0 = time.monotonic()


def q(*args, timeout=300, cwd=None):
    p = subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, cwd=cwd)
    if p.returncode != 0:
        raise RuntimeError("%s -> %d: %s" % (" ".join(args), p.returncode,
                                            (p.stderr or p.stdout).decode(errors="replace").strip()))
    return p


def qio(img, cmds, fmt="qcow2"):
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    q(*(argv + [img]))


def convert(img, out, snap=None):
    argv = ["qemu-img", "convert", "-U"]
    if snap:
        argv += ["-l", "snapshot.name=" + snap]
    q(*(argv + ["-O", "raw", img, out]))
    return out


class Writer:
    """Distinct data for qemu-io: every written range gets its own random bytes."""

    def __init__(self, tmpd, seed):
        self.tmpd = tempfile.mkdtemp(prefix="w%d-" % seed, dir=tmpd)   # one per thread
        self.rnd = random.Random(seed)
        self.n = 0

    def src(self, length):
        self.n += 1
        p = os.path.join(self.tmpd, "src%d" % self.n)
        with open(p, "wb") as f:
            f.write(self.rnd.randbytes(length))
        return p

    def cmds(self, count, zero_frac=0.15, compressed_cluster=0):
        out = []
        for _ in range(count):
            if compressed_cluster:
                c = compressed_cluster
                ln = c * self.rnd.randint(1, 8)
                off = self.rnd.randrange(0, (VSIZE - ln) // c + 1) * c
                out.append("write -c -s %s %d %d" % (self.src(ln), off, ln))
                continue
            ln = self.rnd.choice([512, 4096, 12288, 65536, 200704, MiB, 3 * MiB + 512])
            off = self.rnd.randrange(0, (VSIZE - ln) // 512 + 1) * 512
            if self.rnd.random() < zero_frac:
                out.append("write -z %d %d" % (off, ln))
            else:
                out.append("write -s %s %d %d" % (self.src(ln), off, ln))
        return out

    def raw(self, path, regions):
        """A 64 MiB raw file with random data in `regions` (MiB offsets, lengths)."""
        with open(path, "wb") as f:
            f.truncate(VSIZE)
            for off, ln in regions:
                f.seek(off * MiB)
                f.write(self.rnd.randbytes(ln * MiB))
        return path

    def cleanup(self):
        for n in os.listdir(self.tmpd):
            if n.startswith("src"):
                os.unlink(os.path.join(self.tmpd, n))


# -- the store ---------------------------------------------------------------

class View:
    def __init__(self, vol, name, refs):
        self.vol = vol
        self.name = name
        self.refs = refs               # acceptable references (file paths); [old] or [old, new]
        self.ref_fds = [os.open(r, os.O_RDONLY) for r in refs]
        self.path = None
        self.state = "live"            # live | removing | removed
        self.removed_at = 0.0
        self.inflight = 0
        self.eio_ok = False            # set when a fault makes EIO an expected answer
        self.replaced_gen = 0          # bumped when a new reference is added
        self.snapshot = name != "current"
        self.size = VSIZE

    @property
    def label(self):
        return "%s/%s" % (self.vol.name, self.name)

    def add_ref(self, path):
        self.ref_fds.append(os.open(path, os.O_RDONLY))
        self.refs.append(path)
        self.replaced_gen += 1

    def close(self):
        for fd in self.ref_fds:
            os.close(fd)
        self.ref_fds = []


class Volume:
    def __init__(self, name, vmid, role):
        self.name = name
        self.vmid = vmid
        self.role = role
        self.views = {}
        self.fault_t = 0.0             # monotonic time of the fault on this volume

    def image(self, store):
        return os.path.join(store, "images", str(self.vmid), self.name)

    def layer(self, store, snap):
        return os.path.join(store, "images", str(self.vmid), "snap-%s-%s" % (snap, self.name))


def build_store(work):
    """Six volumes, every view's reference made by qemu-img convert."""
    store = os.path.join(work, "vz")
    refs = os.path.join(work, "refs")
    tmpd = os.path.join(work, "tmp")
    for d in (refs, tmpd):
        os.makedirs(d)
    for vmid in range(100, 106):
        os.makedirs(os.path.join(store, "images", str(vmid)))
    w = Writer(tmpd, 18)
    vols = []
    pm = ["-o", "extended_l2=on,cluster_size=128k,preallocation=metadata"]

    def overlay(v, lower, upper_path, opts=()):
        q("qemu-img", "create", "-f", "qcow2", *opts, "-F", "qcow2", "-b", os.path.basename(lower),
          upper_path, "64M")

    # 100: snap- chain, mkdir/rmdir loop (chain mkdir: it already has snap- layers)
    v = Volume("vm-100-disk-0.qcow2", 100, "loop-chain")
    s1 = v.layer(store, "s1")
    q("qemu-img", "convert", "-O", "qcow2", "-f", "raw", w.raw(os.path.join(tmpd, "b.raw"), [(0, 8), (20, 12), (50, 6)]), s1)
    qio(s1, w.cmds(6))
    overlay(v, s1, v.image(store), pm)
    qio(v.image(store), w.cmds(8))
    v.snaps = [("s1", s1, None)]
    vols.append(v)

    # 101: internal snapshots, extended L2, mkdir/rmdir loop (internal)
    v = Volume("vm-101-disk-0.qcow2", 101, "loop-internal")
    img = v.image(store)
    q("qemu-img", "create", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k", img, "64M")
    qio(img, w.cmds(12))
    q("qemu-img", "snapshot", "-c", "s1", img)
    qio(img, w.cmds(8))
    q("qemu-img", "snapshot", "-c", "s2", img)
    qio(img, w.cmds(6))
    v.snaps = [("s1", img, "s1"), ("s2", img, "s2")]
    vols.append(v)

    # 102: snap-s1 (64 MiB of data, so a truncate cuts most of it) <- snap-s2 <- current
    v = Volume("vm-102-disk-0.qcow2", 102, "truncate")
    s1 = v.layer(store, "s1")
    q("qemu-img", "convert", "-O", "qcow2", "-f", "raw", w.raw(os.path.join(tmpd, "b.raw"), [(0, 64)]), s1)
    s2 = v.layer(store, "s2")
    overlay(v, s1, s2, pm)
    qio(s2, w.cmds(10))
    overlay(v, s2, v.image(store))
    qio(v.image(store), w.cmds(6))
    v.snaps = [("s1", s1, None), ("s2", s2, None), ("current", v.image(store), None)]
    vols.append(v)

    # 103: snap-s1 <- snap-s2 (replaced by rename later) <- current
    v = Volume("vm-103-disk-0.qcow2", 103, "replace")
    s1 = v.layer(store, "s1")
    q("qemu-img", "create", "-f", "qcow2", s1, "64M")
    qio(s1, w.cmds(14))
    s2 = v.layer(store, "s2")
    overlay(v, s1, s2)
    qio(s2, w.cmds(10))
    overlay(v, s2, v.image(store), pm)
    qio(v.image(store), w.cmds(6))
    v.snaps = [("s1", s1, None), ("s2", s2, None), ("current", v.image(store), None)]
    vols.append(v)

    # 104: zlib-compressed base, internal snapshots over compressed and plain writes
    v = Volume("vm-104-disk-0.qcow2", 104, "static")
    img = v.image(store)
    q("qemu-img", "convert", "-c", "-O", "qcow2", "-f", "raw",
      w.raw(os.path.join(tmpd, "b.raw"), [(1, 10), (30, 20)]), img)
    q("qemu-img", "snapshot", "-c", "s1", img)
    qio(img, w.cmds(6, compressed_cluster=65536) + w.cmds(6))
    q("qemu-img", "snapshot", "-c", "s2", img)
    qio(img, w.cmds(8))
    q("qemu-img", "snapshot", "-c", "s3", img)
    qio(img, w.cmds(4, zero_frac=0.6))
    v.snaps = [("s1", img, "s1"), ("s2", img, "s2"), ("s3", img, "s3"), ("current", img, None)]
    vols.append(v)

    # 105: zstd-compressed base <- 4 KiB clusters <- extended L2 64 KiB clusters
    v = Volume("vm-105-disk-0.qcow2", 105, "static")
    a = v.layer(store, "a")
    q("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", "-f", "raw",
      w.raw(os.path.join(tmpd, "b.raw"), [(0, 24), (40, 24)]), a)
    b = v.layer(store, "b")
    overlay(v, a, b, ["-o", "cluster_size=4096"])
    qio(b, w.cmds(16))
    overlay(v, b, v.image(store), ["-o", "extended_l2=on"])
    qio(v.image(store), w.cmds(10))
    v.snaps = [("a", a, None), ("b", b, None), ("current", v.image(store), None)]
    vols.append(v)

    w.cleanup()
    os.unlink(os.path.join(tmpd, "b.raw"))
    for v in vols:
        for name, path, snap in v.snaps:
            ref = convert(path, os.path.join(refs, "%d-%s.raw" % (v.vmid, name)), snap)
            v.views[name] = View(v, name, [ref])
    return store, refs, tmpd, vols, w


# -- the run -----------------------------------------------------------------

class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = collections.Counter()
        self.details = collections.defaultdict(list)   # kind -> first few descriptions
        self.errs = {}     # (view, op, errno) -> [count, first, last] (s after the volume's fault)

    def add(self, **kw):
        with self.lock:
            for k, n in kw.items():
                self.c[k] += n

    def add_err(self, name, view, what):
        with self.lock:
            t = time.monotonic() - view.vol.fault_t if view.vol.fault_t else None
            k = (view.label, what.split(" ")[0], name)
            e = self.errs.get(k)
            if e is None:
                self.errs[k] = [1, t, t]
            else:
                e[0] += 1
                e[2] = t

    def note(self, kind, text, limit=12):
        with self.lock:
            self.c[kind] += 1
            if len(self.details[kind]) < limit:
                self.details[kind].append("%.1fs %s" % (time.monotonic() - T0, text))


class Watchdog:
    """Every blocking call runs between begin() and end(); one that lasts
    longer than TIMEOUT counts as a hang (once)."""

    def __init__(self, stats):
        self.stats = stats
        self.lock = threading.Lock()
        self.slots = {}        # key -> [t0, what, counted]
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def begin(self, key, what):
        with self.lock:
            self.slots[key] = [time.monotonic(), what, False]

    def end(self, key):
        with self.lock:
            s = self.slots.pop(key, None)
        if s and not s[2] and time.monotonic() - s[0] > TIMEOUT:
            self.stats.note("hangs", "%s took %.1f s" % (s[1], time.monotonic() - s[0]))

    def stuck(self):
        now = time.monotonic()
        with self.lock:
            return [(k, s[1], now - s[0]) for k, s in self.slots.items() if now - s[0] > TIMEOUT]

    def run(self):
        while not self.stop.wait(0.5):
            now = time.monotonic()
            with self.lock:
                for s in self.slots.values():
                    if not s[2] and now - s[0] > TIMEOUT:
                        s[2] = True
                        self.stats.note("hangs", "%s still running after %.0f s" % (s[1], TIMEOUT))


def diff_count(a, b):
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return abs(len(a) - len(b))
    # count differing bytes without numpy: compare 4 KiB blocks, then bytes in differing blocks
    wrong = abs(len(a) - len(b))
    for o in range(0, n, 4096):
        x, y = a[o:o + 4096], b[o:o + 4096]
        if x != y:
            wrong += sum(1 for i in range(len(x)) if x[i] != y[i])
    return wrong


class Run:
    def __init__(self, args, work, store, refs, tmpd, vols, writer, mnt, daemon):
        self.args = args
        self.work, self.store, self.refdir, self.tmpd = work, store, refs, tmpd
        self.vols = vols
        self.writer = writer
        self.mnt = mnt
        self.daemon = daemon
        self.stats = Stats()
        self.wd = Watchdog(self.stats)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.top = os.path.join(mnt, os.path.basename(store))
        self.pool = []
        for v in vols:
            for view in v.views.values():
                view.path = os.path.join(self.top, v.name, view.name, "disk.raw")
        for v in vols:
            for view in v.views.values():
                self.pool.append(view)
        self.samples = []          # (t, rss_kib, log_lines, load1)
        self.fault_results = []
        self.t_start = None

    # -- helpers
    def guarded(self, key, what, fn):
        self.wd.begin(key, what)
        try:
            return fn()
        finally:
            self.wd.end(key)

    def pool_add(self, view):
        with self.lock:
            self.pool = self.pool + [view]

    def pool_remove(self, view):
        with self.lock:
            self.pool = [v for v in self.pool if v is not view]

    def full_compare(self, key, path, ref, what):
        """Read path whole through the mount (4 MiB reads), compare with ref."""
        wrong = 0
        total = 0
        fd = self.guarded(key, "open " + what, lambda: os.open(path, os.O_RDONLY))
        try:
            size = os.fstat(fd).st_size
            rsize = os.path.getsize(ref)
            if size != rsize:
                self.stats.note("verify_failed", "%s: size %d, qemu %d" % (what, size, rsize))
                return False
            with open(ref, "rb") as r:
                off = 0
                while off < size:
                    got = self.guarded(key, "read %s @%d" % (what, off), lambda: os.pread(fd, 4 * MiB, off))
                    exp = r.read(4 * MiB)
                    if got != exp:
                        wrong += diff_count(got, exp)
                        if not got:
                            break
                    off += len(got)
                    total += len(got)
        finally:
            self.guarded(key, "close " + what, lambda: os.close(fd))
        self.stats.add(verify_reads=1, verify_bytes=total)
        if wrong:
            self.stats.add(wrong_bytes=wrong)
            self.stats.note("verify_failed", "%s: %d bytes differ from qemu" % (what, wrong))
            return False
        return True

    # -- readers
    def reader(self, i):
        rnd = random.Random(1000 + i)
        fds = {}          # view -> (fd, gen at open, direct)
        key = "reader%d" % i
        buf = mmap.mmap(-1, 4 * MiB)
        st = self.stats

        def close(view):
            fd = fds.pop(view)[0]
            self.guarded(key, "close " + view.label, lambda: os.close(fd))

        while not self.stop.is_set():
            pool = self.pool
            for view in [v for v in fds if v not in pool or v.state != "live"]:
                close(view)
            view = rnd.choice(pool)
            if view.state == "removed":
                # a snapshot rmdir removed: a new open must fail with ENOENT
                try:
                    fd = self.guarded(key, "open removed " + view.label, lambda: os.open(view.path, os.O_RDONLY))
                except OSError as e:
                    if e.errno in (errno.ENOENT, errno.ESTALE):
                        st.add(enoent_removed=1)
                    else:
                        st.note("unexpected_errors", "open of removed %s: %s" % (view.label, e))
                    continue
                os.close(fd)
                st.note("unexpected_errors", "open of removed %s succeeded" % view.label)
                continue
            if view.state != "live":
                continue
            ent = fds.get(view)
            if ent is None or rnd.random() < 0.08:
                if ent is not None:
                    close(view)
                direct = rnd.random() < 0.1
                flags = os.O_RDONLY | (os.O_DIRECT if direct else 0)
                try:
                    fd = self.guarded(key, "open " + view.label, lambda: os.open(view.path, flags))
                except OSError as e:
                    self.error(view, "open", e, None)
                    continue
                ent = fds[view] = (fd, view.replaced_gen, direct)
                st.add(opens=1)
            fd, gen, direct = ent
            n = int(4096 * 2 ** (rnd.random() * 10))
            if direct or rnd.random() < 0.5:
                n = max(4096, n & ~4095)
                off = rnd.randrange(0, (view.size - n) // 4096 + 1) * 4096
            else:
                off = rnd.randrange(0, view.size - n + 1)
            if view.snapshot and not direct and rnd.random() < 0.02:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                st.add(fadvise_dontneed=1)
            with self.lock:
                if view.state != "live":
                    continue
                view.inflight += 1
                refs = list(zip(view.refs, view.ref_fds))
            try:
                what = "read %s @%d+%d%s" % (view.label, off, n, " O_DIRECT" if direct else "")
                try:
                    if direct:
                        with memoryview(buf) as whole, whole[:n] as m:
                            got = self.guarded(key, what, lambda: os.preadv(fd, [m], off))
                            data = bytes(m[:got])
                    else:
                        data = self.guarded(key, what, lambda: os.pread(fd, n, off))
                except OSError as e:
                    # the fault flag is read after the call: a read under way when the
                    # fault came may fail
                    self.error(view, what, e, view.eio_ok)
                    if e.errno != errno.EIO:
                        close(view)       # as an application would: reopen next time
                    continue
            finally:
                with self.lock:
                    view.inflight -= 1
            eio_ok = view.eio_ok
            st.add(reads=1, reads_direct=int(direct))
            exp_len = min(n, view.size - off)
            matched = None
            for idx, (rp, rfd) in enumerate(refs):
                if len(data) == exp_len and data == os.pread(rfd, exp_len, off):
                    matched = idx
                    break
            if matched is not None:
                st.add(bytes_verified=len(data))
                if len(refs) > 1:
                    st.add(**{"replaced_read_" + ("old" if matched == 0 else "new"): 1})
                    if matched > 0 and gen == 0:
                        # README: an old descriptor of a snapshot view keeps reading the old
                        # bytes; current may change at any moment (reported, not failed)
                        st.note("prereplace_fd_read_new" if view.snapshot else "prereplace_current_fd_read_new", what)
                continue
            if len(data) < exp_len and eio_ok and data == os.pread(refs[0][1], len(data), off):
                st.note("short_reads_faulted", "%s: %d of %d bytes, %.2f s after the fault" % (
                    what, len(data), exp_len, time.monotonic() - view.vol.fault_t))
                st.add_err("short read (faulted)", view, what)
                continue
            wrong = min(diff_count(data, os.pread(rfd, exp_len, off)) for _, rfd in refs)
            st.add(wrong_bytes=wrong)
            st.note("wrong_reads", "%s: %d bytes wrong (got %d bytes, %d references)" % (
                what, wrong, len(data), len(refs)))
        for view in list(fds):
            close(view)
        buf.close()

    def error(self, view, what, e, eio_ok):
        if eio_ok is None:
            eio_ok = view.eio_ok
        self.stats.add_err(errno.errorcode.get(e.errno, str(e.errno)), view, what)
        if e.errno == errno.EIO and eio_ok:
            self.stats.add(eio_expected=1, **{"eio_expected_" + view.vol.role: 1})
        elif e.errno == errno.EIO:
            self.stats.note("eio_unexpected", "%s: %s" % (what, e))
        else:
            self.stats.note("unexpected_errors", "%s: %s" % (what, e))

    # -- mkdir / rmdir
    def snap_loop(self, vol):
        key = "loop-" + vol.role
        rnd = random.Random(vol.vmid)
        w = Writer(self.tmpd, vol.vmid * 7)
        vdir = os.path.join(self.top, vol.name)
        img = vol.image(self.store)
        n = 0
        while not self.stop.is_set():
            n += 1
            name = "ld%d" % n
            try:
                qio(img, w.cmds(rnd.randint(1, 4)))
                w.cleanup()
                t = time.monotonic()
                try:
                    self.guarded(key, "mkdir %s/%s" % (vol.name, name), lambda: os.mkdir(os.path.join(vdir, name)))
                except OSError as e:
                    self.stats.note("op_failed", "mkdir %s/%s: %s" % (vol.name, name, e))
                    self.stop.wait(2)
                    continue
                self.stats.add(ops=1, mkdir=1, mkdir_s=time.monotonic() - t)
                if vol.role == "loop-chain":
                    ref = convert(vol.layer(self.store, name), os.path.join(self.refdir, "%d-%s.raw" % (vol.vmid, name)))
                else:
                    ref = convert(img, os.path.join(self.refdir, "%d-%s.raw" % (vol.vmid, name)), name)
                path = os.path.join(vdir, name, "disk.raw")
                ok = self.full_compare(key, path, ref, "%s/%s" % (vol.name, name))
                ok &= self.full_compare(key, os.path.join(vdir, "current", "disk.raw"), ref,
                                        "%s/current after mkdir %s" % (vol.name, name))
                self.stats.add(mkdir_verified=int(ok))
                view = View(vol, name, [ref])
                view.path = path
                self.pool_add(view)
                self.stop.wait(rnd.uniform(1, 3))
                qio(img, w.cmds(rnd.randint(1, 4)))      # data for the merge to move
                w.cleanup()
                self.stop.wait(rnd.uniform(0, 1))
                with self.lock:
                    view.state = "removing"
                while view.inflight:
                    time.sleep(0.01)
                t = time.monotonic()
                try:
                    self.guarded(key, "rmdir %s/%s" % (vol.name, name), lambda: os.rmdir(os.path.join(vdir, name)))
                except OSError as e:
                    self.stats.note("op_failed", "rmdir %s/%s: %s" % (vol.name, name, e))
                    self.pool_remove(view)
                    view.close()
                    self.stop.wait(2)
                    continue
                self.stats.add(ops=1, rmdir=1, rmdir_s=time.monotonic() - t)
                view.state = "removed"
                listed = self.guarded(key, "listdir " + vol.name, lambda: os.listdir(vdir))
                if name in listed:
                    self.stats.note("op_failed", "rmdir %s/%s: still listed" % (vol.name, name))
                cur = convert(img, os.path.join(self.refdir, "%d-current.raw" % vol.vmid))
                ok = self.full_compare(key, os.path.join(vdir, "current", "disk.raw"), cur,
                                       "%s/current after rmdir %s" % (vol.name, name))
                self.stats.add(rmdir_verified=int(ok))
                os.unlink(cur)
                self.stop.wait(2)
                self.pool_remove(view)
                view.close()
                os.unlink(ref)
            except Exception as e:   # qemu failed, or an OSError outside an op
                self.stats.note("unexpected_errors", "%s loop: %r" % (vol.name, e))
                self.stop.wait(2)

    # -- faults
    def faults(self):
        d = self.args.duration
        trunc = next(v for v in self.vols if v.role == "truncate")
        repl = next(v for v in self.vols if v.role == "replace")
        if self.stop.wait(d * 0.3):
            return
        try:
            layer = trunc.layer(self.store, "s1")
            with self.lock:
                for view in trunc.views.values():
                    view.eio_ok = True
            before = os.path.getsize(layer)
            trunc.fault_t = time.monotonic()
            os.truncate(layer, 16 * MiB)
            self.fault_results.append("truncate at %.0f s of the run" % (trunc.fault_t - self.t_start))
            log("fault: truncated %s from %d to %d bytes" % (os.path.basename(layer), before, 16 * MiB))
            self.stop.wait(3)
            # a fresh open (new identity after the rescan: no page cache) of data past the cut
            path = trunc.views["s1"].path
            try:
                fd = self.guarded("faults", "open truncated", lambda: os.open(path, os.O_RDONLY))
                try:
                    got = self.guarded("faults", "read truncated", lambda: os.pread(fd, MiB, 40 * MiB))
                    self.fault_results.append("truncate: fresh read of s1 past the cut returned %d bytes (expected EIO)" % len(got))
                    self.stats.note("unexpected_errors", "truncated view read %d bytes past the cut" % len(got))
                finally:
                    os.close(fd)
            except OSError as e:
                ok = e.errno == errno.EIO
                self.fault_results.append("truncate: fresh read of s1 past the cut: %s%s" % (
                    os.strerror(e.errno), "" if ok else " (expected EIO)"))
                if not ok:
                    self.stats.note("unexpected_errors", "truncated view: %s" % e)
        except Exception as e:
            self.stats.note("unexpected_errors", "truncate fault: %r" % e)
        if self.stop.wait(max(0.0, d * 0.55 - (time.monotonic() - self.t_start))):
            return
        try:
            rd = os.path.join(self.work, "repl")
            os.makedirs(rd)
            s1, s2 = repl.layer(self.store, "s1"), repl.layer(self.store, "s2")
            os.symlink(s1, os.path.join(rd, os.path.basename(s1)))
            new = os.path.join(rd, os.path.basename(s2))
            q("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", os.path.basename(s1), new, "64M")
            w = Writer(self.tmpd, 4242)
            qio(new, w.cmds(12, zero_frac=0.1))
            w.cleanup()
            shutil.copy(repl.image(self.store), os.path.join(rd, repl.name))
            ref_s2 = convert(new, os.path.join(self.refdir, "103-s2-new.raw"))
            ref_cur = convert(os.path.join(rd, repl.name), os.path.join(self.refdir, "103-current-new.raw"))
            with self.lock:
                for name, ref in (("s2", ref_s2), ("current", ref_cur)):
                    repl.views[name].add_ref(ref)
                    repl.views[name].eio_ok = True
            repl.fault_t = time.monotonic()
            os.rename(new, s2)
            self.fault_results.append("replace at %.0f s of the run" % (repl.fault_t - self.t_start))
            log("fault: replaced %s by rename" % os.path.basename(s2))
            self.stop.wait(3)
            for name, ref in (("s2", ref_s2), ("current", ref_cur)):
                ok = self.full_compare("faults", repl.views[name].path, ref, "%s/%s after replace" % (repl.name, name))
                self.fault_results.append("replace: fresh open of %s reads the new layer whole: %s" % (
                    name, "yes" if ok else "NO"))
        except Exception as e:
            self.stats.note("unexpected_errors", "replace fault: %r" % e)

    # -- sampling
    def rss_kib(self):
        try:
            with open("/proc/%d/status" % self.daemon.proc.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None

    def log_lines(self):
        try:
            with open(self.daemon.logpath, "rb") as f:
                return f.read().count(b"\n")
        except OSError:
            return 0

    def sample(self):
        with open("/proc/loadavg") as f:
            load = float(f.read().split()[0])
        self.samples.append((time.monotonic() - self.t_start, self.rss_kib(), self.log_lines(), load))

    def sampler(self):
        self.sample()
        while not self.stop.wait(SAMPLE):
            self.sample()
            t, rss, lines, load = self.samples[-1]
            c = self.stats.c
            log("rss %s MiB, log %d lines, load %.2f, reads %d, ops %d, wrong %d, hangs %d" % (
                "%.1f" % (rss / 1024) if rss else "?", lines, load, c["reads"], c["ops"],
                c["wrong_bytes"], c["hangs"]))
            if self.daemon.proc.poll() is not None:
                self.stats.note("unexpected_errors", "daemon exited with %s" % self.daemon.proc.returncode)
                self.stop.set()

    def go(self):
        self.t_start = time.monotonic()
        threads = [threading.Thread(target=self.reader, args=(i,), daemon=True) for i in range(self.args.readers)]
        threads += [threading.Thread(target=self.snap_loop, args=(v,), daemon=True)
                    for v in self.vols if v.role.startswith("loop")]
        threads.append(threading.Thread(target=self.faults, daemon=True))
        sampler = threading.Thread(target=self.sampler, daemon=True)
        sampler.start()
        for t in threads:
            t.start()
        self.stop.wait(self.args.duration)
        self.stop.set()
        self.t_end = time.monotonic()
        sampler.join()
        self.sample()
        deadline = time.monotonic() + TIMEOUT + 5
        for t in threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t for t in threads if t.is_alive()]
        self.aborted = False
        if alive:
            log("%d threads still stuck: %s; aborting the FUSE connection" % (len(alive), self.wd.stuck()))
            abort_connection(self.daemon)
            self.aborted = True
            for t in alive:
                t.join(10)
        self.wd.stop.set()


def abort_connection(daemon):
    """Abort the daemon's FUSE connection: the way out for a reader stuck in it."""
    path = "/sys/fs/fuse/connections/%d/abort" % os.minor(daemon.dev)
    if not os.path.exists(path) and not os.path.ismount("/sys/fs/fuse/connections"):
        subprocess.run(["mount", "-t", "fusectl", "none", "/sys/fs/fuse/connections"], capture_output=True)
    if os.path.exists(path):
        with open(path, "w") as f:
            f.write("1")
        return True
    log("cannot abort: %s missing" % path)
    return False


def normalize(line):
    line = re.sub(r"^\S+ \S+ ", "", line) if re.match(r"^\d{4}-\d\d-\d\d", line) else line
    return re.sub(r"\d+", "N", line)[:170]


def report(run, daemon_failure, log_text, wall_build):
    c = run.stats.c
    dur = run.t_end - run.t_start
    s = run.samples
    warm = min(60.0, dur / 4)
    lines_total = s[-1][2]
    after = [x for x in s if x[0] >= warm]
    lines_warm = after[0][2] if after else lines_total
    t_warm = after[0][0] if after else dur
    per_min = (lines_total - lines_warm) / max(1e-9, (s[-1][0] - t_warm) / 60)
    rss = [x[1] for x in s if x[1]]
    rss1 = next((x[1] for x in s if x[0] >= 60 and x[1]), rss[0] if rss else None)
    loads = [x[3] for x in s]
    mib = lambda k: "%.1f MiB" % (k / 1024) if k else "?"
    out = []
    p = out.append
    p("== vstorfs load run: %.0f s, %d readers, build %.0f s; load avg 1 min: min %.2f mean %.2f max %.2f (%d cores)" % (
        dur, run.args.readers, wall_build, min(loads), sum(loads) / len(loads), max(loads), os.cpu_count()))
    p("reads done:        %d (%d O_DIRECT, %d opens, %d fadvise DONTNEED) + %d whole-view checks" % (
        c["reads"], c["reads_direct"], c["opens"], c["fadvise_dontneed"], c["verify_reads"]))
    p("bytes verified:    %.2f GiB by readers + %.2f GiB in whole-view checks" % (
        c["bytes_verified"] / 2 ** 30, c["verify_bytes"] / 2 ** 30))
    p("wrong bytes:       %d (%d wrong reads, %d failed whole-view checks)" % (
        c["wrong_bytes"], c["wrong_reads"], c["verify_failed"]))
    p("EIO:               expected %d (truncated volume %d, replaced volume %d), unexpected %d" % (
        c["eio_expected"], c["eio_expected_truncate"], c["eio_expected_replace"], c["eio_unexpected"]))
    p("replaced layer:    reads matching old %d, new %d; descriptors opened before the rename reading new: snapshot views %d, current %d" % (
        c["replaced_read_old"], c["replaced_read_new"], c["prereplace_fd_read_new"], c["prereplace_current_fd_read_new"]))
    p("short reads:       %d on the truncated volume, each a prefix of the right bytes (the kernel returns what came before the failing request)" % c["short_reads_faulted"])
    p("other errors:      ENOENT on removed views %d (expected), unexpected %d" % (
        c["enoent_removed"], c["unexpected_errors"]))
    p("hangs:             %d%s" % (c["hangs"], " (FUSE connection aborted)" if run.aborted else ""))
    p("ops done:          %d (mkdir %d, mean %.3f s; rmdir %d, mean %.3f s), failed %d; views checked after mkdir %d, current after rmdir %d" % (
        c["ops"], c["mkdir"], c["mkdir_s"] / max(1, c["mkdir"]), c["rmdir"], c["rmdir_s"] / max(1, c["rmdir"]),
        c["op_failed"], c["mkdir_verified"], c["rmdir_verified"]))
    for r in run.fault_results:
        p("fault check:       " + r)
    p("log lines:         %d total, %.1f per minute after the first %.0f s" % (lines_total, per_min, warm))
    p("daemon RSS:        %s at 1 min, %s at the end, max %s" % (mib(rss1), mib(rss[-1] if rss else None), mib(max(rss) if rss else None)))
    p("RSS series (MiB):  " + " ".join("%.0f" % (x[1] / 1024) for x in s if x[1]))
    p("daemon exit:       %s%s" % (run.daemon.proc.returncode,
                                   ", " + daemon_failure.splitlines()[0] if daemon_failure else ""))
    if run.stats.errs:
        p("errors by view, call, errno (count; first..last s after that volume's fault):")
        for (label, op, name), (n, t1, t2) in sorted(run.stats.errs.items()):
            p("  %-28s %-6s %-22s %6d  %s" % (label, op, name, n,
                                            "%.2f..%.2f" % (t1, t2) if t1 is not None else "(no fault)"))
    for kind in ("wrong_reads", "verify_failed", "eio_unexpected", "unexpected_errors", "hangs", "op_failed",
                 "prereplace_fd_read_new", "short_reads_faulted"):
        for d in run.stats.details.get(kind, []):
            p("  %s: %s" % (kind, d))
    counts = collections.Counter(normalize(l) for l in log_text.splitlines())
    p("daemon log, distinct lines (numbers as N):")
    for line, n in counts.most_common(15):
        p("  %5d  %s" % (n, line))
    sys.stdout.write("\n".join(out) + "\n")
    bad = []
    if c["wrong_bytes"] or c["wrong_reads"] or c["verify_failed"]:
        bad.append("wrong bytes")
    if c["hangs"]:
        bad.append("hangs")
    if c["eio_unexpected"] or c["unexpected_errors"]:
        bad.append("unexpected errors")
    if c["prereplace_fd_read_new"]:
        bad.append("old descriptors of a snapshot view read new bytes")
    if c["op_failed"]:
        bad.append("failed operations")
    if daemon_failure:
        bad.append("daemon: " + daemon_failure.splitlines()[0])
    return bad


def main():
    ap = argparse.ArgumentParser(description="vstorfs directory-store load run (issue 18)")
    ap.add_argument("duration", nargs="?", type=float, default=600.0, help="seconds of load (default 600)")
    ap.add_argument("--readers", type=int, default=32)
    ap.add_argument("--keep-log", metavar="PATH", help="copy the daemon's stderr here at the end")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("load_run.py: needs root (FUSE mount, mkdir/rmdir of snapshots)")
    binary = daemon_path()
    if not os.access(binary, os.X_OK):
        sys.exit("load_run.py: %s not built" % binary)
    work = tempfile.mkdtemp(prefix="vstorfs-load-", dir=os.environ.get("VSTORFS_TMP", "/var/tmp"))
    daemon = None
    run = None
    bad = ["interrupted"]
    try:
        log("building the store in %s" % work)
        store, refs, tmpd, vols, writer = build_store(work)
        wall_build = time.monotonic() - T0
        log("store built: %d volumes, %d views" % (len(vols), sum(len(v.views) for v in vols)))
        daemon = start_daemon(store, os.path.join(work, "mnt"), rescan=1, binary=binary, timeout=30,
                              logpath=os.path.join(work, "daemon.stderr"))
        log("mounted (daemon pid %d, FUSE connection %d); running %.0f s" % (
            daemon.proc.pid, os.minor(daemon.dev), args.duration))
        run = Run(args, work, store, refs, tmpd, vols, writer, daemon.mnt, daemon)
        # every view must be listed as built
        for v in vols:
            got = sorted(os.listdir(os.path.join(run.top, v.name)))
            exp = sorted(set(v.views) | {"current"})
            if got != exp:
                raise RuntimeError("%s lists %s, expected %s" % (v.name, got, exp))
        run.go()
        failure = stop_checked(daemon)
        text = daemon.log()
        if args.keep_log:
            shutil.copy(daemon.logpath, args.keep_log)
        daemon = None
        bad = report(run, failure, text, wall_build)
    except HARNESS_FAILURES as e:
        print(str(e))
        bad = [str(e).splitlines()[0]]
    finally:
        if daemon is not None:
            daemon.stop(check=False)
            if args.keep_log:
                shutil.copy(daemon.logpath, args.keep_log)
        if run is not None:
            for v in run.pool:
                v.close()
        shutil.rmtree(work, ignore_errors=True)
    if bad:
        print("FAILED: " + ", ".join(bad))
        sys.exit(1)
    print("OK")


if __name__ == "__main__":
    main()
