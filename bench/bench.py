#!/usr/bin/python3
"""vstorfs benchmarks: see bench/README.md.

Builds throwaway VGs on loop devices (the fixture library of the tests),
measures vstorfs next to qemu-storage-daemon, a trivial passthrough FUSE
server (the ceiling) and the command sequence Proxmox VE 9 runs for a
snapshot, prints one table with the targets marked met/missed, and writes
bench/results.json and bench/results.txt. Everything it creates (mounts,
daemons, loop devices, VGs, scratch files) is removed on exit, also on
failure or Ctrl-C.
"""

import argparse
import atexit
import contextlib
import errno
import fcntl
import glob
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import lvmlib  # noqa: E402
from lvmlib import MiB, GiB, VG, Chain, run, OVERLAY_OPTS, BASE_OPTS  # noqa: E402

VSTORFS = os.environ.get("VSTORFS_BIN") or os.path.join(REPO, "vstorfs")
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
SEQ_RUNS = RUNS + 2         # a dd takes a second and varies a lot: two more
SNAP_RUNS = RUNS + 2        # so do merges (their writes reach the disk)
T0 = time.monotonic()
LOG = []


def log(*a):
    line = "[%6.1fs] %s" % (time.monotonic() - T0, " ".join(str(x) for x in a))
    LOG.append(line)
    print(line, file=sys.stderr, flush=True)


# -- cleanup ------------------------------------------------------------------

class Cleanup:
    def __init__(self):
        self.procs = []      # (Popen, mountpoint or None)
        self.vgs = []
        self.clusters = []   # tests/cephlib.py clusters (daemons stopped by pid file)
        self.dirs = []
        self.done = False

    def add_proc(self, p, mnt=None):
        self.procs.append((p, mnt))

    def umount(self, mnt):
        if mnt and os.path.ismount(mnt):
            if subprocess.run(["umount", mnt], capture_output=True).returncode:
                time.sleep(0.2)
                if subprocess.run(["umount", mnt], capture_output=True).returncode:
                    subprocess.run(["umount", "-l", mnt], capture_output=True)

    def stop(self, p, mnt=None, timeout=20):
        self.umount(mnt)
        if p.poll() is None:
            if mnt is None:
                p.terminate()
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = [(q, m) for q, m in self.procs if q is not p]

    def __call__(self, *a):
        if self.done:
            return
        self.done = True
        for p, mnt in reversed(list(self.procs)):
            try:
                self.stop(p, mnt, timeout=10)
            except Exception as e:  # pragma: no cover
                print("cleanup:", e, file=sys.stderr)
        for c in reversed(list(self.clusters)):
            try:
                c.destroy()
            except Exception as e:  # pragma: no cover
                print("cleanup:", e, file=sys.stderr)
        for vg in reversed(list(self.vgs)):
            try:
                destroy_vg(vg)
            except Exception as e:  # pragma: no cover
                print("cleanup:", e, file=sys.stderr)
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


CLEAN = Cleanup()
atexit.register(CLEAN)


def on_signal(sig, frame):
    CLEAN()
    sys.exit(128 + sig)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGHUP, on_signal)


# -- helpers ----------------------------------------------------------------

def median(xs):
    return statistics.median(xs)


def wait_mount(mnt, proc, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.ismount(mnt):
            return
        if proc.poll() is not None:
            raise RuntimeError("%s exited %d before mounting %s" % (proc.args, proc.returncode, mnt))
        time.sleep(0.002)
    raise RuntimeError("%s did not mount %s" % (proc.args, mnt))


def start_vstorfs(vg, mnt, logdir, wait=True, opts=""):
    os.makedirs(mnt, exist_ok=True)
    lf = open(vstorfs_log(logdir, mnt), "ab")
    p = subprocess.Popen([VSTORFS, vg.name, mnt, "-f", "-o",
                          "devices=%s%s" % (vg.devices_opt, "," + opts if opts else "")],
                         stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
    lf.close()
    CLEAN.add_proc(p, mnt)
    if wait:
        wait_mount(mnt, p)
    return p


def vstorfs_log(logdir, mnt):
    return os.path.join(logdir, "vstorfs-%s.log" % os.path.basename(mnt))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def drop_file_cache(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def warm(path, ranges):
    """Read byte ranges of a device/file once so they sit in its page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        for off, n in ranges:
            pos = off
            while pos < off + n:
                m = min(8 * MiB, off + n - pos)
                b = os.pread(fd, m, pos)
                if not b:
                    break
                pos += len(b)
    finally:
        os.close(fd)


def file_data_ranges(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return list(lvmlib.data_ranges(fd, os.fstat(fd).st_size))
    finally:
        os.close(fd)


def warm_lv(vg, ch, lv):
    """Read an LV's data once through the loop device (its page cache is what
    vstorfs and qsd read): the ranges where the layer file copied into it has
    data, i.e. everything but the unallocated tail of the preallocated
    images, which nobody reads."""
    dev, off, size = lv_segment(vg, lv)
    rng = file_data_ranges(os.path.join(ch.dir, lv))
    warm(dev, [(off + a, n) for a, n in rng])
    return sum(n for _, n in rng)


def lv_segment(vg, lv):
    segs = vg.layout()[lv]
    # contiguous on one PV: the raw node of the qsd chain needs one (offset, size)
    for a, b in zip(segs, segs[1:]):
        assert a[1] == b[1] and a[2] + a[3] == b[2], "LV %s is not contiguous" % lv
    return segs[0][1], segs[0][2], sum(s[3] for s in segs)


def timed(argv, **kw):
    t = time.monotonic()
    run(argv, **kw)
    return time.monotonic() - t


def make_vg(workdir, pv_size, extent="4m", metadatasize=None):
    """A one-PV VG on a sparse file, its loop device in direct-I/O mode and held open."""
    vg = VG(workdir, npvs=1, pv_size=pv_size, extent_size=extent, metadatasize=metadatasize)
    CLEAN.vgs.append(vg)
    loop_direct_io(vg)
    log("VG %s on %s" % (vg.name, ",".join(vg.loops)))
    return vg


def loop_direct_io(vg):
    """Loop devices with direct I/O to their backing file: the LV bytes are
    cached once (in the loop device's page cache, which vstorfs and qsd both
    read) instead of twice, so warming 2 GiB cannot evict itself."""
    for loop in vg.loops:
        run(["losetup", "--direct-io=on", loop], check=False)
    # Linux drops a block device's page cache when its last opener closes it:
    # hold the loop devices open so the warm cache survives between mounts.
    vg._hold = [os.open(loop, os.O_RDONLY) for loop in vg.loops]


def destroy_vg(vg):
    for fd in getattr(vg, "_hold", []):
        os.close(fd)
    vg._hold = []
    name = vg.name
    vg.destroy()
    # lvm2 archives the metadata of every change (the Proxmox replay runs
    # without -An, as Proxmox does): drop this VG's copies
    for f in glob.glob("/etc/lvm/archive/%s_[0-9]*.vg" % name) + ["/etc/lvm/backup/" + name]:
        with contextlib.suppress(OSError):
            os.unlink(f)
    if vg in CLEAN.vgs:
        CLEAN.vgs.remove(vg)


def sync_fresh(ch, names=None):
    """Chain.sync for a VG whose PV was never written: create the LVs (unless
    created beforehand), copy only the data ranges of each layer file.
    (Chain.sync also zeroes every
    hole with BLKZEROOUT, which a loop device turns into FALLOC_FL_ZERO_RANGE:
    the whole LV gets allocated in the PV file, gigabytes of disk for ranges
    that read as zeros anyway.)"""
    vg = ch.vg
    names = [lv for lv in (names or ch.layer_files()) if lv not in ch.lvs_created]
    existing = set(vg.lv_names())
    for lv in names:
        if lv not in existing:
            vg.lvcreate(lv, ch.lv_size_for(lv), tags=ch.layer_owner[lv].tags)
        ch.lvs_created.add(lv)
    assert len(vg.loops) == 1
    fd = os.open(vg.loops[0], os.O_WRONLY)
    try:
        for lv in names:
            dev, off, size = lv_segment(vg, lv)
            path = os.path.join(ch.dir, lv)
            assert os.path.getsize(path) <= size
            src = os.open(path, os.O_RDONLY)
            try:
                for a, n in lvmlib.data_ranges(src, os.fstat(src).st_size):
                    for o in range(a, a + n, 8 * MiB):
                        m = min(8 * MiB, a + n - o)
                        os.pwrite(fd, os.pread(src, m, o), off + o)
            finally:
                os.close(src)
        os.fsync(fd)
    finally:
        os.close(fd)


# -- fixture: 2 GiB, 3-layer chain -------------------------------------------------

MAIN_VOL = "vm-100-disk-0.qcow2"
SPARSE_VOL = "vm-100-disk-1.qcow2"
SPARSE_PREALLOC_VOL = "vm-100-disk-2.qcow2"
DISK = 2 * GiB


def rand_writes(rnd, srcfile, n, sizes, zero_frac=0.1, disk=DISK):
    cmds = []
    for _ in range(n):
        ln = rnd.choice(sizes)
        off = rnd.randrange(0, (disk - ln) // 4096) * 4096
        if rnd.random() < zero_frac:
            cmds.append("write -z %d %d" % (off, ln))
        else:
            cmds.append("write -s %s %d %d" % (srcfile, off, ln))
    return cmds


def build_main(workdir):
    t = time.monotonic()
    vg = make_vg(workdir, 12 * GiB)
    ch = Chain(vg, workdir)
    src = os.path.join(workdir, "random.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(32 * MiB))
    rnd = random.Random(42)
    v = ch.qcow2(MAIN_VOL, DISK)                 # base: 64k clusters, preallocation=metadata
    cmds = []
    for r in range(DISK // (32 * MiB)):          # 64 regions: data / zeros / unallocated
        x = rnd.random()
        off = r * 32 * MiB + rnd.randrange(0, 8) * MiB
        ln = rnd.randrange(4, 25) * MiB
        if x < 0.55:
            cmds.append("write -s %s %d %d" % (src, off, ln))
        elif x < 0.7:
            cmds.append("write -z %d %d" % (off, ln))
    v.io(*cmds)
    sizes = [4096, 16384, 65536, 131072, 512 * 1024, MiB, 4 * MiB]
    v.snapshot("s1")                             # overlays: extended L2, 128k, prealloc metadata
    v.io(*rand_writes(rnd, src, 300, sizes))
    v.snapshot("s2")
    v.io(*rand_writes(rnd, src, 300, sizes))
    # mostly-empty 2 GiB disk for the sparse copy
    # (the first without preallocation: with preallocation=metadata every
    # cluster is allocated and an LV cannot say which of them are holes, so
    # qemu-img map and SEEK_HOLE both report the whole disk as data)
    for name, opts in ((SPARSE_VOL, "cluster_size=65536"), (SPARSE_PREALLOC_VOL, BASE_OPTS)):
        s = ch.qcow2(name, DISK, opts=opts)
        s.io(*["write -s %s %d %d" % (src, off, MiB) for off in range(0, DISK, 256 * MiB)])
    sync_fresh(ch)
    log("main fixture built in %.1fs" % (time.monotonic() - t))
    return vg, ch, src


def qsd_start(vg, ch, volume, export_file, logdir):
    layers = ch.volumes[volume].layers()        # oldest first
    assert len(vg.loops) == 1
    bd = [{"driver": "host_device", "node-name": "pv", "filename": vg.loops[0],
           "read-only": True, "aio": "threads", "cache": {"direct": False}}]
    for i, lv in enumerate(layers):
        dev, off, size = lv_segment(vg, lv)
        assert dev == vg.loops[0]
        bd.append({"driver": "raw", "node-name": "f%d" % i, "file": "pv",
                   "offset": off, "size": size, "read-only": True})
        q = {"driver": "qcow2", "node-name": "top" if i == len(layers) - 1 else "l%d" % i,
             "file": "f%d" % i, "read-only": True,
             "backing": ("l%d" % (i - 1)) if i else None}
        bd.append(q)
    open(export_file, "w").close()
    argv = ["qemu-storage-daemon"]
    for b in bd:
        argv += ["--blockdev", json.dumps(b)]
    argv += ["--export", "type=fuse,id=e,node-name=top,mountpoint=%s" % export_file]
    lf = open(os.path.join(logdir, "qsd.log"), "ab")
    p = subprocess.Popen(argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
    lf.close()
    CLEAN.add_proc(p, export_file)
    wait_mount(export_file, p)
    return p


# The readahead window vstorfs writes to its own mount (readahead_kb=, fs/
# readahead_window.c); every passthrough mount gets the same, so the ceiling
# is not the kernel's 128 KiB against vstorfs' window.
READAHEAD_KB = 4096


def set_readahead_kb(mnt, kb=READAHEAD_KB):
    st = os.stat(mnt)
    with open("/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(st.st_dev),
                                                     os.minor(st.st_dev)), "w") as f:
        f.write("%d\n" % kb)


def passthrough_start(workdir, rawfile, mnt, logdir, splice=False, direct_io=False,
                      keep_cache=False, env=None):
    """rawfile: a file, or rbd:POOL/IMAGE[@SNAP] (a build with -DPT_RBD that
    reads the image through librbd, client.admin of $CEPH_CONF in env)."""
    rbd = rawfile.startswith("rbd:")
    binp = os.path.join(workdir, "passthrough-rbd" if rbd else "passthrough")
    if not os.path.exists(binp):
        cflags = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.decode().split()
        run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", binp,
             os.path.join(HERE, "passthrough.c")] + cflags +
            (["-DPT_RBD", "-lrbd", "-lrados"] if rbd else []))
    os.makedirs(mnt, exist_ok=True)
    lf = open(os.path.join(logdir, "passthrough.log"), "ab")
    p = subprocess.Popen([binp] + (["--splice"] if splice else []) +
                         (["--direct-io"] if direct_io else []) +
                         (["--keep-cache"] if keep_cache else []) + [rawfile, mnt, "-f"],
                         stdout=lf, stderr=lf,
                         stdin=subprocess.DEVNULL, env=env)
    lf.close()
    CLEAN.add_proc(p, mnt)
    wait_mount(mnt, p)
    set_readahead_kb(mnt)
    return p


def dd_seq(path, direct=False):
    drop_file_cache(path)
    t = time.monotonic()
    run(["dd", "if=" + path, "of=/dev/null", "bs=1M"] + (["iflag=direct"] if direct else []))
    return os.path.getsize(path) / (time.monotonic() - t) / MiB


def dd_seq_direct(path):
    """O_DIRECT: every read is one 1 MiB FUSE request, no page cache of the
    FUSE file in between (what a backup reader with its own buffering sees)."""
    return dd_seq(path, direct=True)


def dd_reread(path):
    """dd bs=1M of what is already in the page cache (nothing dropped)."""
    t = time.monotonic()
    run(["dd", "if=" + path, "of=/dev/null", "bs=1M"])
    return os.path.getsize(path) / (time.monotonic() - t) / MiB


def cp_seq(path):
    """cp to /dev/null: its buffer is st_blksize (at least 128 KiB)."""
    drop_file_cache(path)
    t = time.monotonic()
    run(["cp", path, "/dev/null"])
    return os.path.getsize(path) / (time.monotonic() - t) / MiB


def dd_par4(path):
    """Four dd bs=1M at once, one per quarter (four VMs' backups at once)."""
    drop_file_cache(path)
    size = os.path.getsize(path)
    q = size // 4 // MiB
    t = time.monotonic()
    ps = [subprocess.Popen(["dd", "if=" + path, "of=/dev/null", "bs=1M", "skip=%d" % (i * q),
                            "count=%d" % q], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
          for i in range(4)]
    for p in ps:
        if p.wait() != 0:
            raise RuntimeError("dd of %s failed" % path)
    return 4 * q * MiB / (time.monotonic() - t) / MiB


# (result key, label, reader): the sequential readers of part `main`
SEQ_READERS = (("seq_MiBps", "seq read, dd bs=1M", dd_seq),
               ("seqd_MiBps", "seq read, dd bs=1M O_DIRECT", lambda p: dd_seq(p, direct=True)),
               ("cp_MiBps", "cp to /dev/null", cp_seq),
               ("par4_MiBps", "4 readers at once, dd bs=1M", dd_par4))


def fio_rand(path, jobs, runtime=5):
    p = run(["fio", "--name=r", "--filename=" + path, "--rw=randread", "--bs=4k",
             "--direct=1", "--numjobs=%d" % jobs, "--time_based", "--runtime=%d" % runtime,
             "--ioengine=psync", "--group_reporting", "--output-format=json"])
    out = p.stdout.decode()
    return json.loads(out[out.index("{"):])["jobs"][0]["read"]["iops"]


def interleaved(targets, fn, runs=RUNS):
    """runs rounds, every target once per round: a load change on the machine
    hits all targets alike instead of whichever ran at that moment. Odd rounds
    run the targets in reverse order (ABBA): whichever goes first in a round
    (a cold CPU cache, memory the previous reader just freed) is not always
    the same target."""
    out = {name: [] for name in targets}
    items = list(targets.items())
    for r in range(runs):
        for name, path in (items if r % 2 == 0 else items[::-1]):
            out[name].append(fn(path))
    return {name: median(xs) for name, xs in out.items()}, out


def ttfb(vg, mnt, vol, logdir):
    out = []
    for _ in range(RUNS):
        t = time.monotonic()
        p = start_vstorfs(vg, mnt, logdir, wait=False)
        path = os.path.join(mnt, vg.name, vol, "current", "disk.raw")
        while True:
            if os.path.ismount(mnt):
                try:
                    fd = os.open(path, os.O_RDONLY)
                    b = os.pread(fd, 4096, 0)
                    os.close(fd)
                    if len(b) == 4096:
                        break
                except FileNotFoundError:
                    pass
            if p.poll() is not None:
                raise RuntimeError("vstorfs exited")
            if time.monotonic() - t > 30:
                raise RuntimeError("no first byte within 30s")
            time.sleep(0.001)
        out.append(time.monotonic() - t)
        CLEAN.stop(p, mnt)
    return median(out), out


def bench_main(workdir, logdir, res):
    vg, ch, _ = build_main(workdir)
    # reference flat image = the passthrough's file (fully allocated)
    # (from the layer files sync_fresh copied into the LVs: the same bytes;
    # the content check below compares against the LV side through vstorfs/qsd)
    flat = os.path.join(workdir, "flat.raw")
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-S", "0", MAIN_VOL, flat],
        cwd=ch.dir)
    # warm: the LV extents through the loop device (what both vstorfs and qsd
    # read) and the passthrough's file
    for lv in ch.volumes[MAIN_VOL].layers() + [SPARSE_VOL, SPARSE_PREALLOC_VOL]:
        warm_lv(vg, ch, lv)
    warm(flat, [(0, DISK)])
    os.sync()

    mnt = os.path.join(workdir, "mnt")
    vp = start_vstorfs(vg, mnt, logdir)
    vpath = os.path.join(mnt, vg.name, MAIN_VOL, "current", "disk.raw")
    qfile = os.path.join(workdir, "qsd-export.raw")
    qp = qsd_start(vg, ch, MAIN_VOL, qfile, logdir)
    pmnt = os.path.join(workdir, "mnt-pt")
    pp = passthrough_start(workdir, flat, pmnt, logdir)
    ppath = os.path.join(pmnt, "disk.raw")
    smnt = os.path.join(workdir, "mnt-pt-splice")
    sp = passthrough_start(workdir, flat, smnt, logdir, splice=True)
    spath = os.path.join(smnt, "disk.raw")
    targets = {"vstorfs": vpath, "qsd": qfile, "passthrough": ppath}
    for name, path in list(targets.items()) + [("passthrough_splice", spath)]:
        assert os.path.getsize(path) == DISK, (name, os.path.getsize(path))
    # spot check (a full cmp of the slow qsd export costs a minute; the
    # test suite checks vstorfs content exhaustively)
    rnd = random.Random(7)
    offs = [0, DISK - MiB] + [rnd.randrange(0, DISK - MiB) for _ in range(200)]
    fds = {n: os.open(p, os.O_RDONLY) for n, p in list(targets.items()) + [("flat", flat)]}
    try:
        for off in offs:
            ref = os.pread(fds["flat"], MiB, off)
            for name in targets:
                if os.pread(fds[name], MiB, off) != ref:
                    raise RuntimeError("%s differs from the flat reference at %d" % (name, off))
    finally:
        for fd in fds.values():
            os.close(fd)
    log("content of the three targets spot-checked against qemu-img convert")

    # sequential, four readers: dd bs=1M buffered and O_DIRECT, cp, four dd
    # at once over the four quarters. The passthrough runs three ways
    # (copying, splicing, splicing with direct_io); the ceiling for a reader
    # is whichever of them serves that reader best. One unmeasured pass
    # each first: the first read of a fresh FUSE file pays page-cache
    # allocation and metadata loads.
    dmnt = os.path.join(workdir, "mnt-pt-direct")
    dp = passthrough_start(workdir, flat, dmnt, logdir, splice=True, direct_io=True)
    seq_targets = dict(targets, passthrough_splice=spath,
                       passthrough_direct=os.path.join(dmnt, "disk.raw"))
    for path in seq_targets.values():
        dd_seq(path)
    for key, label, fn in SEQ_READERS:
        med_, runs_ = interleaved(seq_targets, fn, SEQ_RUNS)
        res[key], res[key + "_runs"] = med_, runs_
        for name in seq_targets:
            log("%s %s: %.0f MiB/s %s" % (label, name, med_[name], ["%.0f" % x for x in runs_[name]]))
    # a snapshot view keeps its page cache: its second read against the
    # passthrough keeping its page cache too (what a FUSE file's cache
    # gives) and, for reference, a local file in the page cache
    kmnt = os.path.join(workdir, "mnt-pt-keep")
    kp = passthrough_start(workdir, flat, kmnt, logdir, splice=True, keep_cache=True)
    snap_path = os.path.join(mnt, vg.name, MAIN_VOL, "s2", "disk.raw")
    kpath = os.path.join(kmnt, "disk.raw")
    dd_reread(snap_path)
    dd_reread(kpath)
    res["reread_MiBps"], res["reread_MiBps_runs"] = interleaved(
        {"vstorfs": snap_path, "passthrough_keep_cache": kpath, "page_cache": flat}, dd_reread,
        SEQ_RUNS)
    CLEAN.stop(kp, kmnt)
    log("second read of a snapshot view: %s" % {k: round(v) for k, v in res["reread_MiBps"].items()})
    CLEAN.stop(dp, dmnt)
    CLEAN.stop(sp, smnt)
    res["rss_kib_main_after_seq"] = rss_kib(vp.pid)
    for jobs, key in ((1, "rand4k_iops_1job"), (4, "rand4k_iops_4jobs")):
        res[key], res[key + "_runs"] = interleaved(targets, lambda p: fio_rand(p, jobs))
        log("rand %d job(s): %s" % (jobs, {k: round(v) for k, v in res[key].items()}))
    res["rss_kib_main_after_rand"] = rss_kib(vp.pid)

    # sparse-aware copy of a mostly-empty 2 GiB disk, into tmpfs (no disk
    # writeback in the numbers)
    res["sparse_copy"] = {}
    for key, vol in (("no_prealloc", SPARSE_VOL), ("prealloc_metadata", SPARSE_PREALLOC_VOL)):
        spath = os.path.join(mnt, vg.name, vol, "current", "disk.raw")
        fd = os.open(spath, os.O_RDONLY)
        try:
            nseg = len(list(lvmlib.data_ranges(fd, DISK)))
            data = sum(n for _, n in lvmlib.data_ranges(fd, DISK))
        finally:
            os.close(fd)
        out = tempfile.mktemp(prefix="vstorfs-bench-copy-", dir="/dev/shm")
        cp, dd = [], []
        try:
            for _ in range(RUNS):
                drop_file_cache(spath)
                cp.append(timed(["cp", "--sparse=always", spath, out]))
                alloc = os.stat(out).st_blocks * 512
                os.unlink(out)
                drop_file_cache(spath)
                dd.append(timed(["dd", "if=" + spath, "of=" + out, "bs=1M"]))
                os.unlink(out)
        finally:
            if os.path.exists(out):
                os.unlink(out)
        res["sparse_copy"][key] = {
            "cp_sparse_s": median(cp), "cp_sparse_runs": cp,
            "dd_full_s": median(dd), "dd_full_runs": dd,
            "cp_output_allocated_MiB": alloc / MiB,
            "seek_data_segments": nseg, "seek_data_MiB": data / MiB}
        log("sparse copy %s: cp --sparse %.2f s, dd %.2f s, SEEK_DATA finds %.0f MiB" % (
            key, median(cp), median(dd), data / MiB))
    CLEAN.stop(pp, pmnt)
    CLEAN.stop(qp, qfile)
    CLEAN.stop(vp, mnt)
    os.unlink(flat)
    # time to first byte on this VG
    res["ttfb_main_s"], res["ttfb_main_runs"] = ttfb(vg, mnt, MAIN_VOL, logdir)
    destroy_vg(vg)


# -- 200 disks x 5 snapshots ------------------------------------------------------

def build_many(workdir, nvol, nsnap, res):
    """nvol volumes of 1 MiB, each a chain of nsnap snapshots + current, written
    straight into the VG metadata with one vgcfgrestore (lvcreate one by one is
    what takes minutes: its cost is sampled and reported)."""
    t0 = time.monotonic()
    ext = MiB
    nlv = nvol * (nsnap + 1)

    def lvid():
        a = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
        s = "".join(random.choice(a) for _ in range(32))
        return "-".join([s[0:6], s[6:10], s[10:14], s[14:18], s[18:22], s[22:26], s[26:32]])

    # template qcow2 chain for vmid 1000, then patched per vmid (same name length)
    tdir = os.path.join(workdir, "many-tmpl")
    os.makedirs(tdir)
    names = ["snap_vm-1000-disk-0_s%d.qcow2" % k for k in range(1, nsnap + 1)] + \
        ["vm-1000-disk-0.qcow2"]
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", BASE_OPTS, names[0], str(MiB), cwd=tdir)
    lvmlib.qemu_io(names[0], "write -P 0x42 0 65536", cwd=tdir)
    for a, b in zip(names, names[1:]):
        lvmlib.qemu_img("create", "-q", "-u", "-f", "qcow2", "-o", OVERLAY_OPTS, "-b", a,
                        "-F", "qcow2", b, str(MiB), cwd=tdir)
    blobs = [open(os.path.join(tdir, n), "rb").read() for n in names]
    lv_ext = max(-(-len(b) // ext) for b in blobs)     # extents per LV
    vg = make_vg(workdir, nlv * lv_ext * ext + 256 * MiB, extent="1m", metadatasize="32m")
    vg.lvm("lvcreate", "-an", "-Zn", "-An", "-y", "-L", "%dm" % lv_ext, "-n", "tmpl",
           "--addtag", "pve-vm-1000", vg.name)
    cfg = os.path.join(workdir, "many.vgcfg")
    vg.lvm("vgcfgbackup", "-f", cfg, vg.name)
    text = open(cfg).read()
    m = re.search(r"\n(\t+)tmpl \{\n", text)
    ind = m.group(1)
    end = text.index("\n" + ind + "}\n", m.end()) + len(ind) + 3
    tmpl = text[m.start():end]
    pvname = re.search(r'stripes = \[\s*"(pv\d+)", 0', tmpl).group(1)

    blocks, writes = [], []
    pe = 0
    for i in range(nvol):
        vmid = 1000 + i
        for n, data in zip(names, blobs):
            lvn = n.replace("vm-1000-", "vm-%d-" % vmid)
            b = tmpl.replace("tmpl {", lvn + " {", 1)
            b = re.sub(r'id = "[^"]*"', 'id = "%s"' % lvid(), b, 1)
            b = b.replace('"pve-vm-1000"', '"pve-vm-%d"' % vmid)
            b = re.sub(r'("%s", )0' % pvname, r"\g<1>%d" % pe, b, 1)
            blocks.append(b)
            writes.append((pe, data.replace(b"vm-1000-", b"vm-%d-" % vmid)))
            pe += lv_ext
    text = text[:m.start()] + "".join(blocks) + text[end:]
    with open(cfg, "w") as f:
        f.write(text)
    t_meta = time.monotonic()
    vg.lvm("vgcfgrestore", "-f", cfg, vg.name)
    t_restore = time.monotonic() - t_meta
    vg._layout = None
    pe_start = next(iter(vg.pv_info().values()))[0]
    fd = os.open(vg.loops[0], os.O_WRONLY)
    try:
        for pe_i, data in writes:
            os.pwrite(fd, data, pe_start + pe_i * ext)
        os.fsync(fd)
    finally:
        os.close(fd)
    # what lvcreate costs on a VG this size (sampled, then undone by a restore)
    k = 5
    t = time.monotonic()
    for j in range(k):
        vg.lvm("lvcreate", "-an", "-Zn", "-An", "-y", "-L", "1m", "-n", "probe%d" % j,
               "--addtag", "pve-vm-999", vg.name)
    per_lvcreate_full = (time.monotonic() - t) / k
    vg.lvm("vgcfgrestore", "-f", cfg, vg.name)
    vg._layout = None
    # and on an empty VG
    e = make_vg(workdir, 256 * MiB, extent="1m")
    t = time.monotonic()
    for j in range(k):
        e.lvm("lvcreate", "-an", "-Zn", "-An", "-y", "-L", "1m", "-n", "probe%d" % j,
              "--addtag", "pve-vm-999", e.name)
    per_lvcreate_empty = (time.monotonic() - t) / k
    destroy_vg(e)
    res["many_build"] = {
        "volumes": nvol, "snapshots_per_volume": nsnap, "lvs": nlv,
        "build_s": round(time.monotonic() - t0, 2), "vgcfgrestore_s": round(t_restore, 2),
        "lvcreate_s_per_lv_empty_vg": round(per_lvcreate_empty, 3),
        "lvcreate_s_per_lv_full_vg": round(per_lvcreate_full, 3),
        "lvcreate_estimate_s": round(nlv * (per_lvcreate_empty + per_lvcreate_full) / 2, 1),
    }
    log("many: %s" % res["many_build"])
    return vg, ["vm-%d-disk-0.qcow2" % (1000 + i) for i in range(nvol)]


def bench_many(workdir, logdir, res):
    nvol, nsnap = 200, 5
    vg, vols = build_many(workdir, nvol, nsnap, res)
    mnt = os.path.join(workdir, "mnt-many")
    r = {}
    r["ttfb_s"], r["ttfb_runs"] = ttfb(vg, mnt, vols[0], logdir)
    ls = []
    for _ in range(RUNS):
        p = start_vstorfs(vg, mnt, logdir)
        t = time.monotonic()
        out = run(["ls", "-R", mnt]).stdout
        ls.append(time.monotonic() - t)
        CLEAN.stop(p, mnt)
    r["ls_R_s"], r["ls_R_runs"] = median(ls), ls
    r["ls_R_entries"] = out.count(b"disk.raw")
    assert r["ls_R_entries"] == nvol * (nsnap + 1), r["ls_R_entries"]
    # RSS: idle, after reading 20 and then 100 disks whole (current and a
    # snapshot view each), and with those 100 x 2 views held open at once
    p = start_vstorfs(vg, mnt, logdir)
    time.sleep(0.3)
    r["rss_kib_idle"] = rss_kib(p.pid)

    def read_all(v, view):
        with open(os.path.join(mnt, vg.name, v, view, "disk.raw"), "rb") as f:
            while f.read(MiB):
                pass
    for v in vols[:20]:
        read_all(v, "current")
    r["rss_kib_20_read"] = rss_kib(p.pid)
    for v in vols[:100]:
        for view in ("current", "s3"):
            read_all(v, view)
    r["rss_kib_100_read"] = rss_kib(p.pid)
    fds = []
    try:
        for v in vols[:100]:
            for view in ("current", "s3"):
                fd = os.open(os.path.join(mnt, vg.name, v, view, "disk.raw"), os.O_RDONLY)
                fds.append(fd)
                os.pread(fd, 4096, 0)
        r["rss_kib_100_open"] = rss_kib(p.pid)
    finally:
        for fd in fds:
            os.close(fd)
    CLEAN.stop(p, mnt)
    res["many"] = r
    log("many: %s" % {k: v for k, v in r.items() if not k.endswith("runs")})


# -- mkdir / rmdir: vstorfs and the Proxmox VE 9 command sequence -------------------

PVE_REPORT = ["--separator", ":", "--noheadings", "--units", "b", "--unbuffered", "--nosuffix"]
PVE_LVS_OPTIONS = ("vg_name,lv_name,lv_size,lv_attr,pool_lv,data_percent,metadata_percent,"
                   "snap_percent,uuid,tags,metadata_size,time")
PVE_QCOW2_OPTS = ["extended_l2=on", "cluster_size=128k"]


def perl_num(x):
    """A number as Perl interpolates it ("${size}K" of a division)."""
    return str(int(x)) if x == int(x) else repr(x)


class PveReplay:
    """The processes pve-storage's LVMPlugin.pm (Proxmox VE 9) starts for a
    snapshot of a stopped VM's qcow2 volume (volume_snapshot) and for its
    deletion (volume_snapshot_delete), in its order and with its arguments,
    down to the helpers they call (activate_volume, lvrename's lvs check,
    alloc_snap_image/alloc_lvm_image: qemu-img info, vgs, qemu-img measure,
    lvcreate, lvm_qcow2_format; volume_snapshot_info; free_lvm_volumes with
    the default saferemove=0). Storage settings: snapshot-as-volume-chain=1,
    preallocation unset (metadata), not shared.

    lvm2 commands run on the bench VG with --driverloaded n --devices added
    (this machine has no device-mapper: lvchange -aey/--refresh and
    lvcreate -aly -Wy succeed there without activating or wiping anything,
    so they cost less here than on a real host). qemu-img gets
    FILES/<lv>, a file holding the LV's bytes, where Proxmox passes
    /dev/<vg>/<lv> (which needs device-mapper); the file follows its LV
    through renames and removals."""

    def __init__(self, vg, files, lockfile):
        self.vg, self.files, self.lockfile = vg, files, lockfile
        self.steps = []      # (tool, what, seconds) per process, in order

    # -- processes --
    def _run(self, tool, what, argv):
        t = time.monotonic()
        p = subprocess.run(argv, env=lvmlib.LVM_ENV, capture_output=True,
                           stdin=subprocess.DEVNULL)
        self.steps.append((tool, what, time.monotonic() - t))
        if p.returncode:
            raise RuntimeError("proxmox replay: %s failed (%d): %s" % (
                " ".join(argv), p.returncode, p.stderr.decode(errors="replace")))
        return p.stdout.decode()

    def lvm(self, *argv):
        full = [argv[0], "--driverloaded", "n", "--devices", self.vg.devices_opt] + list(argv[1:])
        what = os.path.basename(argv[0])
        if what == "lvchange":
            what += " " + argv[1]
        return self._run("lvm2", what, full)

    def qemu_img(self, *argv):
        dev = "/dev/%s/" % self.vg.name
        full = [self.file(a[len(dev):]) if a.startswith(dev) else a for a in argv]
        return self._run("qemu-img", "qemu-img " + argv[1], full)

    def file(self, lv):
        return os.path.join(self.files, lv)

    def path(self, lv):
        return "/dev/%s/%s" % (self.vg.name, lv)

    @contextlib.contextmanager
    def storage_lock(self):
        """cluster_lock_storage of a non-shared storage: flock on a lock file."""
        fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # -- LVMPlugin.pm --
    @staticmethod
    def get_snap_name(volname, snap):
        if snap == "current":
            return volname
        return "snap_%s_%s.qcow2" % (re.sub(r"\.[^.]+$", "", volname), snap)

    def activate_volume(self, volname):
        name_re = re.sub(r"\.qcow2$", "", volname).replace(".", "\\.")
        select = "vg_name = \"%s\" && lv_name =~ '^(%s|snap_%s_.+)\\.qcow2$'" % (
            self.vg.name, name_re, name_re)
        self.lvm("/sbin/lvchange", "-aey", "--select", select)
        self.lvm("/sbin/lvchange", "--refresh", "--select", select)

    def lvm_list_volumes(self):
        out = self.lvm("/sbin/lvs", *PVE_REPORT, "--config", 'report/time_format="%s"',
                       "--options", PVE_LVS_OPTIONS, self.vg.name)
        return {ln.strip().split(":")[1] for ln in out.splitlines() if ln.strip()}

    def lvm_vgs(self):
        out = self.lvm("/sbin/vgs", *PVE_REPORT, "--options", "vg_name,vg_size,vg_free,lv_count")
        return {f[0]: int(f[2]) for f in (ln.strip().split(":") for ln in out.splitlines())
                if len(f) >= 4}

    def lvrename(self, old, new):
        if new in self.lvm_list_volumes():
            raise RuntimeError("target volume '%s' already exists" % new)
        self.lvm("/sbin/lvrename", self.vg.name, old, new)
        os.rename(self.file(old), self.file(new))

    def lvcreate(self, name, size_kib, tags):
        argv = ["/sbin/lvcreate", "-aly", "-Wy", "--yes", "--size", size_kib + "k", "--name", name,
                "--setautoactivation", "n"]
        for t in tags:
            argv += ["--addtag", t]
        self.lvm(*argv, self.vg.name)
        with open(self.file(name), "wb") as f:       # the LV's bytes, as qemu-img will see them
            f.truncate(int(float(size_kib) * 1024))

    def free_lvm_volume(self, name):
        self.lvm("/sbin/lvremove", "-f", "%s/%s" % (self.vg.name, name))
        os.unlink(self.file(name))

    def volume_snapshot(self, volname, snap):
        vmid = re.match(r"vm-(\d+)-", volname).group(1)
        with self.storage_lock():
            self.activate_volume(volname)
            snapvol = self.get_snap_name(volname, snap)
            self.lvrename(volname, snapvol)                       # rename_snapshot
            # alloc_snap_image: file_size_info of the snapshot
            info = json.loads(self.qemu_img("/usr/bin/qemu-img", "info", "--output=json",
                                            "-f", "qcow2", "--", self.path(snapvol)))
            size = perl_num(info["virtual-size"] / 1024)
            # alloc_lvm_image
            free = self.lvm_vgs()[self.vg.name]
            m = json.loads(self.qemu_img("/usr/bin/qemu-img", "measure", "--output=json",
                                         "--size", size + "K", "-O", "qcow2",
                                         "-o", ",".join(PVE_QCOW2_OPTS)))
            if free < float(size):
                raise RuntimeError("not enough free space")
            self.lvcreate(volname, perl_num(m["fully-allocated"] / 1024),
                          ["pve-vm-" + vmid, "@pve-" + volname])
            # lvm_qcow2_format -> qemu_img_create_qcow2_backed
            self.activate_volume(volname)
            self.qemu_img("/usr/bin/qemu-img", "create", "-F", "qcow2", "-b", snapvol,
                          "-f", "qcow2", "-o", ",".join(PVE_QCOW2_OPTS + ["preallocation=metadata"]),
                          "--", self.path(volname))
        return "create"

    def volume_snapshot_delete(self, volname, snap):
        short = re.sub(r"\.qcow2$", "", volname)
        self.activate_volume(volname)
        # volume_snapshot_info
        chain = json.loads(self.qemu_img("/usr/bin/qemu-img", "info", "--output=json",
                                         "--backing-chain", "--", self.path(volname)))

        def snapname(path):
            name = os.path.basename(path)
            m = re.match(r"^snap_%s_(.*)\.qcow2$" % re.escape(short), name)
            return m.group(1) if m else ("current" if name == volname else None)
        info = {}
        for layer in chain:
            s = snapname(layer["filename"])
            if not s:
                continue
            d = info.setdefault(s, {})
            d.update(file=layer["filename"], volname=self.get_snap_name(volname, s),
                     vsize=layer["virtual-size"])
            if layer.get("backing-filename"):
                p = snapname(layer["backing-filename"])
                d["parent"] = p
                info.setdefault(p, {})["child"] = s
        s = info[snap]
        if not os.path.exists(s["file"]):
            raise RuntimeError("volume %s is missing" % s["file"])
        child = info[s["child"]]
        if not s.get("parent"):
            # the oldest snapshot: commit its child into it, drop the child's
            # LV, give the snapshot's LV the child's name
            if child["vsize"] > s["vsize"]:
                raise NotImplementedError("volume_resize before the commit")
            self.qemu_img("/usr/bin/qemu-img", "commit", child["file"])
            with self.storage_lock():
                self.free_lvm_volume(child["volname"])
                self.lvrename(s["volname"], child["volname"])
            return "commit"
        self.qemu_img("/usr/bin/qemu-img", "rebase", "-b", self.get_snap_name(volname, s["parent"]),
                      "-F", "qcow2", "-f", "qcow2", child["file"])
        with self.storage_lock():
            self.free_lvm_volume(s["volname"])
        return "rebase"


# The steps of the old bench's Proxmox sequence (a lower bound: only the
# commands that change the VG or the image).
PVE_CORE_STEPS = {"create": ("lvrename", "lvcreate", "qemu-img create"),
                  "rebase": ("qemu-img rebase", "lvremove"),
                  "commit": ("qemu-img commit", "lvremove", "lvrename")}

# (label, virtual size, MiB in each of s1 and current)
SNAP_CASES = (("1 GiB disk, 64 MiB layers", GiB, 64),
              ("1 GiB disk, 256 MiB layers", GiB, 256),
              ("64 GiB disk, 64 MiB layers", 64 * GiB, 64))
# (key, label, how many MiB Proxmox moves, as a multiple of the layer size)
SNAP_OPS = (("mkdir", "mkdir", 0),
            ("rmdir_newest", "rmdir newest", 1),
            ("rmdir_middle", "rmdir middle", 1),
            ("rmdir_oldest", "rmdir oldest", 2))


def snap_volname(ci, run_i):
    return "vm-%d-disk-%d.qcow2" % (300 + ci, run_i)


def build_snapvol(ch, name, size, mib):
    """s0 (16 MiB) <- s1 (mib MiB) <- current (mib MiB), each layer's data
    in 16 pieces spread over the whole disk (so a big disk has its L2 tables
    all over the place)."""
    stride, piece = size // 16, mib * MiB // 16
    assert piece <= stride // 4
    v = ch.qcow2(name, size)
    v.write(0, 16 * MiB, 0x11)
    v.snapshot("s0")
    v.io(*["write -P 0x22 %d %d" % (k * stride + stride // 4, piece) for k in range(16)])
    v.snapshot("s1")
    v.io(*["write -P 0x33 %d %d" % (k * stride + stride // 2, piece) for k in range(16)])
    return v


RMDIR_RE = re.compile(r"deleting snapshot (\S+) by \S+ .*?\((commit|rebase) moves (\d+) bytes")
VSTORFS_OPS = (("mkdir", "snapm", os.mkdir), ("rmdir_newest", "snapm", os.rmdir),
               ("rmdir_middle", "s1", os.rmdir), ("rmdir_oldest", "s0", os.rmdir))


def vstorfs_op(mnt, vg, vol, logf, key, name, op):
    """One mkdir/rmdir through the mount: its time and, from the daemon's log,
    the direction and bytes of the merge; an error is recorded, not raised."""
    pos = os.path.getsize(logf)
    t = time.monotonic()
    err = None
    try:
        op(os.path.join(mnt, vg.name, vol, name))
    except OSError as e:
        err = errno.errorcode.get(e.errno, str(e.errno))
    dt = time.monotonic() - t
    with open(logf, errors="replace") as f:
        f.seek(pos)
        m = RMDIR_RE.findall(f.read())
    return {"s": None if err else dt, "error": err,
            "how": m[-1][1] if m else ("create" if key == "mkdir" else "?"),
            "moved_MiB": int(m[-1][2]) / MiB if m else (0.0 if key == "mkdir" else None)}


def vstorfs_ops(mnt, vg, vol, logf):
    """mkdir snapm, rmdir snapm, rmdir s1, rmdir s0; after a failure the
    rest of the volume's sequence is skipped (s = None, error "skipped")."""
    out, failed = {}, False
    for key, name, op in VSTORFS_OPS:
        if failed:
            out[key] = {"s": None, "error": "skipped", "how": "-", "moved_MiB": None}
            continue
        out[key] = vstorfs_op(mnt, vg, vol, logf, key, name, op)
        failed = out[key]["error"] is not None
    return out


def proxmox_ops(pve, vol):
    out = {}
    for key, fn in (("mkdir", lambda: pve.volume_snapshot(vol, "snapm")),
                    ("rmdir_newest", lambda: pve.volume_snapshot_delete(vol, "snapm")),
                    ("rmdir_middle", lambda: pve.volume_snapshot_delete(vol, "s1")),
                    ("rmdir_oldest", lambda: pve.volume_snapshot_delete(vol, "s0"))):
        pve.steps = []
        t = time.monotonic()
        how = fn()
        dt = time.monotonic() - t
        core = sum(s for _, what, s in pve.steps if what in PVE_CORE_STEPS[how])
        out[key] = {"s": dt, "how": how, "core_s": core, "steps": pve.steps,
                    "lvm2": sum(1 for tool, _, _ in pve.steps if tool == "lvm2"),
                    "qemu_img": sum(1 for tool, _, _ in pve.steps if tool == "qemu-img")}
    return out


def pve_sized(ch, lv):
    """Proxmox sizes a qcow2 LV as `qemu-img measure`'s fully-allocated size
    rounded up to the extent; a preallocated image file is exactly that size."""
    return lvmlib.roundup(os.path.getsize(os.path.join(ch.dir, lv)), ch.vg.extent_size)


def med(xs):
    xs = [x for x in xs if x is not None]
    return median(xs) if xs else None


def bench_snap(workdir, logdir, res):
    t0 = time.monotonic()
    # LVs are thick and the images preallocated: size the (sparse) PVs for
    # every volume's layers plus the LVs mkdir adds
    pv_size = 4 * GiB + sum(SNAP_RUNS * 5 * (size + size // 32 + 8 * MiB)
                            for _, size, _ in SNAP_CASES)
    vgv = make_vg(workdir, pv_size)
    chv = Chain(vgv, workdir)
    for ci, (_, size, mib) in enumerate(SNAP_CASES):
        for i in range(SNAP_RUNS):
            build_snapvol(chv, snap_volname(ci, i), size, mib)
    # LVs exactly as large as Proxmox makes them: no room beyond the
    # preallocated image, so a merge that asks for more fails (ENOSPC)
    for lv in chv.layer_files():
        vgv.lvcreate(lv, pve_sized(chv, lv), tags=chv.layer_owner[lv].tags)
    sync_fresh(chv)
    # the Proxmox side: a VG of the same shape (same LV names and sizes, so
    # its lvm2 commands see as much metadata), its qemu-img on copies of the
    # layer files (the LV bytes are never read on that side)
    vgp = make_vg(workdir, pv_size)
    files = os.path.join(workdir, "pve-files")
    os.makedirs(files)
    for lv in chv.layer_files():
        vgp.lvcreate(lv, vgv.lv_size(lv), tags=chv.layer_owner[lv].tags)
        run(["cp", "--sparse=always", os.path.join(chv.dir, lv), os.path.join(files, lv)])
    shutil.rmtree(chv.dir)
    os.sync()     # no writeback of the fixture inside a measured fsync
    log("snapshot fixture built in %.1fs" % (time.monotonic() - t0))
    pve = PveReplay(vgp, files, os.path.join(workdir, "pve-storage-bench.lock"))
    mnt = os.path.join(workdir, "mnt-snap")
    logf = vstorfs_log(logdir, mnt)
    runs = {}       # (case index, side) -> [ops of each run]
    for i in range(SNAP_RUNS):
        # each round: vstorfs on its VG (mounted with the default options),
        # then Proxmox on the other with the daemon gone
        p = start_vstorfs(vgv, mnt, logdir)
        for ci in range(len(SNAP_CASES)):
            runs.setdefault((ci, "vstorfs"), []).append(
                vstorfs_ops(mnt, vgv, snap_volname(ci, i), logf))
        CLEAN.stop(p, mnt)
        for ci in range(len(SNAP_CASES)):
            runs.setdefault((ci, "proxmox"), []).append(proxmox_ops(pve, snap_volname(ci, i)))
    # both sides end with the same disk: vstorfs' current against the
    # Proxmox files, for the 1 GiB volumes of the first round
    p = start_vstorfs(vgv, mnt, logdir)
    compared = []
    for ci, (label, size, _) in enumerate(SNAP_CASES):
        if size <= GiB and not any(r["error"] for r in runs[(ci, "vstorfs")][0].values()):
            vol = snap_volname(ci, 0)
            run(["qemu-img", "compare", "-q", "-f", "raw", "-F", "qcow2",
                 os.path.join(mnt, vgv.name, vol, "current", "disk.raw"), pve.file(vol)])
            compared.append(label)
    CLEAN.stop(p, mnt)
    log("vstorfs and the Proxmox sequence leave the same disk (qemu-img compare): %s" % compared)

    cases = []
    for ci, (label, size, mib) in enumerate(SNAP_CASES):
        c = {"label": label, "disk_GiB": size / GiB, "layer_MiB": mib, "ops": {}}
        for key, _, pmul in SNAP_OPS:
            v = [r[key] for r in runs[(ci, "vstorfs")]]
            x = [r[key] for r in runs[(ci, "proxmox")]]
            o = c["ops"][key] = {
                "vstorfs_s": med([r["s"] for r in v]), "vstorfs_runs": [r["s"] for r in v],
                "vstorfs_errors": [r["error"] for r in v if r["error"]],
                "vstorfs_how": v[0]["how"], "vstorfs_moved_MiB": v[0]["moved_MiB"],
                "proxmox_s": median([r["s"] for r in x]), "proxmox_runs": [r["s"] for r in x],
                "proxmox_how": x[0]["how"], "proxmox_moved_MiB": pmul * mib,
                "proxmox_lower_bound_s": median([r["core_s"] for r in x]),
                # qemu-img's own merge (rebase/commit), what its data rate is
                "proxmox_merge_s": median([sum(s for _, what, s in r["steps"]
                                               if what in ("qemu-img rebase", "qemu-img commit"))
                                           for r in x]),
                "proxmox_lvm2_cmds": x[0]["lvm2"], "proxmox_qemu_img_cmds": x[0]["qemu_img"],
                "proxmox_steps": [[tool, what, round(s, 4)] for tool, what, s in x[0]["steps"]],
            }
            o["ratio_vstorfs_proxmox"] = (o["vstorfs_s"] / o["proxmox_s"]
                                          if o["vstorfs_s"] is not None else None)
        cases.append(c)
        log("snap %s: %s" % (label, ", ".join(
            "%s %s/%.3f s" % (k, "%.3f" % o["vstorfs_s"] if o["vstorfs_s"] is not None
                              else o["vstorfs_errors"][0], o["proxmox_s"])
            for k, o in c["ops"].items())))
    res["snap"] = {"cases": cases}
    destroy_vg(vgp)
    destroy_vg(vgv)


# -- new parts: file chain (dir store), backup, RBD ---------------------------------
#
# Each part reports rows of {label, unit, vstorfs, competitors {name: value},
# ceiling (passthrough FUSE server, same reader) or None, lower_is_better};
# the table prints vstorfs against the best competitor and the ceiling.

NEW_FIO_RUNTIME = 3         # seconds per fio run in the new parts (5 in `main`)


def start_vstorfs_src(source, mnt, logdir, opts=""):
    """vstorfs on any SOURCE (a directory store, rbd:<pool>), foreground."""
    os.makedirs(mnt, exist_ok=True)
    lf = open(vstorfs_log(logdir, mnt), "ab")
    argv = [VSTORFS, source, mnt, "-f"] + (["-o", opts] if opts else [])
    p = subprocess.Popen(argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
    lf.close()
    CLEAN.add_proc(p, mnt)
    wait_mount(mnt, p)
    return p


def qsd_start_nodes(nodes, top, export_file, logdir, env=None):
    """qemu-storage-daemon with the given blockdev nodes, `top` exported over FUSE."""
    open(export_file, "w").close()
    argv = ["qemu-storage-daemon"]
    for b in nodes:
        argv += ["--blockdev", json.dumps(b)]
    argv += ["--export", "type=fuse,id=e,node-name=%s,mountpoint=%s" % (top, export_file)]
    lf = open(os.path.join(logdir, "qsd-%s.log" % os.path.basename(export_file)), "ab")
    p = subprocess.Popen(argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL, env=env)
    lf.close()
    CLEAN.add_proc(p, export_file)
    wait_mount(export_file, p)
    return p


def spot_check(paths, ref, size, n=100, seed=7):
    """Every path reads what `ref` reads at n random MiB (+ first and last)."""
    rnd = random.Random(seed)
    offs = [0, size - MiB] + [rnd.randrange(0, size - MiB) for _ in range(n)]
    fds = {name: os.open(p, os.O_RDONLY) for name, p in list(paths.items()) + [("ref", ref)]}
    try:
        for off in offs:
            want = os.pread(fds["ref"], MiB, off)
            for name in paths:
                if os.pread(fds[name], MiB, off) != want:
                    raise RuntimeError("%s differs from the reference at %d" % (name, off))
    finally:
        for fd in fds.values():
            os.close(fd)


def row(label, unit, vstorfs, comps, ceiling=None, lower_is_better=False, note=None,
        runs=None):
    r = {"label": label, "unit": unit, "vstorfs": vstorfs, "competitors": comps,
         "ceiling": ceiling, "lower_is_better": lower_is_better}
    if note:
        r["note"] = note
    if runs:
        r["runs"] = runs
    return r


def row_ratios(r):
    """(best competitor name, its value, vstorfs x best, vstorfs / ceiling) as
    speed factors: > 1 means vstorfs is faster, whatever the unit."""
    v = r["vstorfs"]
    comps = {k: x for k, x in r["competitors"].items() if x is not None}
    best = bestv = xb = xc = None
    if comps and v:
        pick = min if r["lower_is_better"] else max
        best = pick(comps, key=comps.get)
        bestv = comps[best]
        xb = bestv / v if r["lower_is_better"] else v / bestv
    if r["ceiling"] and v:
        xc = r["ceiling"] / v if r["lower_is_better"] else v / r["ceiling"]
    return best, bestv, xb, xc


def read_rows(targets, ceil_copy, ceil_splice, seq_names, rand_names, part, res_part,
              fio_runtime=NEW_FIO_RUNTIME, extra_seq=None, extra_rand=None, rand=True,
              prefix=("", "")):
    """Sequential (buffered and O_DIRECT dd bs=1M) and random 4k (fio, 1 and
    4 jobs) reads of every target, interleaved rounds, like `main`.
    targets: {name: path} including "vstorfs"; ceil_copy/ceil_splice: the
    passthrough servers' files. extra_seq/extra_rand: {name: fn()} for
    non-file competitors (rbd export, fio's rbd engine), measured in the
    same rounds. rand=False: the sequential rows only; prefix: (label
    prefix, result key prefix). Returns the rows."""
    seq_t = dict(targets, ceiling_copy=ceil_copy, ceiling_splice=ceil_splice)
    for path in seq_t.values():
        dd_seq(path)                            # unmeasured first pass
    rows = []
    for direct, key, label in ((False, prefix[1] + "seq", prefix[0] + "seq read, dd bs=1M (MiB/s)"),
                               (True, prefix[1] + "seqd",
                                prefix[0] + "seq read, dd bs=1M O_DIRECT (MiB/s)")):
        fns = {n: (lambda p=p: dd_seq(p, direct=direct)) for n, p in seq_t.items()}
        if extra_seq and not direct:
            fns.update(extra_seq)
        med_, runs_ = interleaved(fns, lambda fn: fn(), RUNS)
        res_part[key + "_MiBps"], res_part[key + "_MiBps_runs"] = med_, runs_
        log("%s %s: %s" % (part, key, {k: round(v) for k, v in med_.items()}))
        comps = {n: med_[n] for n in seq_names if n in med_}
        if extra_seq and not direct:
            comps.update({n: med_[n] for n in extra_seq})
        rows.append(row(label, "MiB/s", med_["vstorfs"], comps,
                        max(med_["ceiling_copy"], med_["ceiling_splice"]), runs=runs_))
    for jobs in ((1, 4) if rand else ()):
        fns = {n: (lambda p=p: fio_rand(p, jobs, fio_runtime))
               for n, p in dict(targets, ceiling_copy=ceil_copy).items()}
        if extra_rand:
            fns.update({n: (lambda f=f: f(jobs)) for n, f in extra_rand.items()})
        med_, runs_ = interleaved(fns, lambda fn: fn(), RUNS)
        key = "rand4k_iops_%djob%s" % (jobs, "s" if jobs > 1 else "")
        res_part[key], res_part[key + "_runs"] = med_, runs_
        log("%s rand %d job(s): %s" % (part, jobs, {k: round(v) for k, v in med_.items()}))
        comps = {n: med_[n] for n in rand_names if n in med_}
        r = row("random 4k, fio %d job%s (IOPS)" % (jobs, "s" if jobs > 1 else ""), "IOPS",
                med_["vstorfs"], comps, med_["ceiling_copy"], runs=runs_)
        for n in (extra_rand or {}):
            r.setdefault("references", {})[n] = med_[n]
        rows.append(r)
    return rows


# -- part `dir`: a Proxmox-dir qcow2 chain of files, internal snapshots --------------

DIR_DISK = GiB
DIR_VOL = "vm-100-disk-0.qcow2"
ISNAP_VOL = "vm-101-disk-0.qcow2"
ISNAP_DISK = 64 * GiB


def build_dir_store(workdir):
    """store/images/100: snap-s1-<vol> (base, 64k clusters, preallocation=
    metadata) <- snap-s2-<vol> <- <vol> (overlays: extended L2, 128k,
    preallocation=metadata), the shape and data mix of `main` on 1 GiB, as a
    Proxmox dir storage with snapshot-as-volume-chain names it; images/101:
    a 64 GiB qcow2 (no preallocation) with 1 GiB written in 64 pieces."""
    t = time.monotonic()
    store = os.path.join(workdir, "vz")
    d = os.path.join(store, "images", "100")
    os.makedirs(d)
    src = os.path.join(workdir, "dir-random.bin")
    with open(src, "wb") as f:
        f.write(os.urandom(32 * MiB))
    rnd = random.Random(43)
    base, mid = "snap-s1-" + DIR_VOL, "snap-s2-" + DIR_VOL
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536," + BASE_OPTS,
                    base, str(DIR_DISK), cwd=d)
    cmds = []
    for r in range(DIR_DISK // (32 * MiB)):
        x = rnd.random()
        off = r * 32 * MiB + rnd.randrange(0, 8) * MiB
        ln = rnd.randrange(4, 25) * MiB
        if x < 0.55:
            cmds.append("write -s %s %d %d" % (src, off, ln))
        elif x < 0.7:
            cmds.append("write -z %d %d" % (off, ln))
    lvmlib.qemu_io(base, *cmds, cwd=d)
    sizes = [4096, 16384, 65536, 131072, 512 * 1024, MiB, 4 * MiB]
    for lower, upper in ((base, mid), (mid, DIR_VOL)):
        lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS, "-b", lower,
                        "-F", "qcow2", upper, str(DIR_DISK), cwd=d)
        lvmlib.qemu_io(upper, *rand_writes(rnd, src, 150, sizes, disk=DIR_DISK), cwd=d)
    d1 = os.path.join(store, "images", "101")
    os.makedirs(d1)
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", ISNAP_VOL, str(ISNAP_DISK), cwd=d1)
    lvmlib.qemu_io(ISNAP_VOL, *["write -s %s %d %d" % (src, k * GiB + (k % 7) * 32 * MiB,
                                                       16 * MiB) for k in range(64)], cwd=d1)
    os.unlink(src)
    log("dir fixture built in %.1fs" % (time.monotonic() - t))
    return store, d, [base, mid, DIR_VOL], os.path.join(d1, ISNAP_VOL)


def bench_dir(workdir, logdir, res):
    store, d, layers, isnap_img = build_dir_store(workdir)
    r = res["dir"] = {"disk_GiB": DIR_DISK / GiB, "layers": layers,
                      "isnap_disk_GiB": ISNAP_DISK / GiB}
    flat = os.path.join(workdir, "dir-flat.raw")
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", "-S", "0", DIR_VOL, flat], cwd=d)
    for lv in layers:
        warm(os.path.join(d, lv), [(0, os.path.getsize(os.path.join(d, lv)))])
    warm(flat, [(0, DIR_DISK)])
    os.sync()
    mnt = os.path.join(workdir, "mnt-dir")
    vp = start_vstorfs_src(store, mnt, logdir)
    vpath = os.path.join(mnt, os.path.basename(store), DIR_VOL, "current", "disk.raw")
    qfile = os.path.join(workdir, "qsd-dir.raw")
    # qemu opens the chain by its backing strings, every file with aio=threads
    # through the same page cache
    qp = qsd_start_nodes([{"driver": "qcow2", "node-name": "top", "read-only": True,
                           "file": {"driver": "file", "filename": os.path.join(d, DIR_VOL),
                                    "aio": "threads"}}], "top", qfile, logdir)
    pmnt, smnt = os.path.join(workdir, "mnt-dir-pt"), os.path.join(workdir, "mnt-dir-pts")
    pp = passthrough_start(workdir, flat, pmnt, logdir)
    sp = passthrough_start(workdir, flat, smnt, logdir, splice=True)
    targets = {"vstorfs": vpath, "qsd": qfile}
    allp = dict(targets, ceiling_copy=os.path.join(pmnt, "disk.raw"),
                ceiling_splice=os.path.join(smnt, "disk.raw"))
    for name, path in allp.items():
        assert os.path.getsize(path) == DIR_DISK, (name, os.path.getsize(path))
    spot_check(allp, flat, DIR_DISK)
    log("dir: content of vstorfs, qsd and the passthrough spot-checked against qemu-img convert")
    rows = read_rows(targets, allp["ceiling_copy"], allp["ceiling_splice"], ["qsd"], ["qsd"],
                     "dir", r)
    r["rss_kib_after_reads"] = rss_kib(vp.pid)
    CLEAN.stop(sp, smnt)
    CLEAN.stop(pp, pmnt)
    CLEAN.stop(qp, qfile)
    os.unlink(flat)

    # internal snapshots: mkdir/rmdir through vstorfs on the image in the
    # store, qemu-img snapshot -c/-d on a copy of the same image, alternating
    copy = os.path.join(workdir, "isnap-copy.qcow2")
    run(["cp", "--sparse=always", isnap_img, copy])
    os.sync()
    vol = os.path.join(mnt, os.path.basename(store), ISNAP_VOL)
    mk, rm, qc, qd = [], [], [], []
    for i in range(SNAP_RUNS):
        name = "bench%d" % i
        t = time.monotonic()
        os.mkdir(os.path.join(vol, name))
        mk.append(time.monotonic() - t)
        t = time.monotonic()
        os.rmdir(os.path.join(vol, name))
        rm.append(time.monotonic() - t)
        qc.append(timed(["qemu-img", "snapshot", "-c", name, copy]))
        qd.append(timed(["qemu-img", "snapshot", "-d", name, copy]))
    CLEAN.stop(vp, mnt)
    chk = run(["qemu-img", "check", "--output=json", isnap_img], check=False)
    r["isnap"] = {"mkdir_s": mk, "rmdir_s": rm, "qemu_img_c_s": qc, "qemu_img_d_s": qd,
                  "qemu_img_check_rc": chk.returncode}
    log("dir isnap: mkdir %s rmdir %s / qemu-img -c %s -d %s (check rc %d)" % (
        ["%.3f" % x for x in mk], ["%.3f" % x for x in rm], ["%.3f" % x for x in qc],
        ["%.3f" % x for x in qd], chk.returncode))
    rows.append(row("internal snapshot mkdir, 64 GiB / 1 GiB written (s)", "s", median(mk),
                    {"qemu-img snapshot -c": median(qc)}, lower_is_better=True,
                    runs={"vstorfs": mk, "qemu-img snapshot -c": qc}))
    rows.append(row("internal snapshot rmdir (s)", "s", median(rm),
                    {"qemu-img snapshot -d": median(qd)}, lower_is_better=True,
                    runs={"vstorfs": rm, "qemu-img snapshot -d": qd}))
    r["rows"] = rows


# -- part `backup`: changed-since on 1 TiB, examples/incremental-backup.sh ---------

BK_DISK = 1 << 40
BK_VOL = "vm-200-disk-0.qcow2"
BK_SAMPLE = 2 * GiB            # the full-read reference reads this much of each view
BK_CMP_SAMPLE = 64 * GiB       # the cmp reference compares the data ranges below this
INC_VOL = "vm-201-disk-0.qcow2"
INC_DISK = 2 * GiB


def qemu_map_ranges(img, cwd):
    """[(start, length, depth)] of qemu-img map --output=json where it reports
    data that is not zero."""
    out = json.loads(run(["qemu-img", "map", "--output=json", "-U", img], cwd=cwd).stdout)
    return [(e["start"], e["length"], e.get("depth", 0)) for e in out
            if e.get("data") and not e.get("zero")]


def merge_ranges(rs):
    out = []
    for a, n in sorted(rs):
        if out and a <= out[-1][0] + out[-1][1]:
            out[-1][1] = max(out[-1][1], a + n - out[-1][0])
        else:
            out.append([a, n])
    return out


def build_backup_store(workdir):
    """bk/images/200: snap-s1-<vol> (1 TiB, 64k clusters, preallocation=
    metadata, 1 GiB of data: 1 MiB at every GiB) <- <vol> (extended L2, 128k,
    preallocation=metadata, 1 GiB changed: 1 MiB at every GiB, elsewhere);
    bk/images/201: a 4 GiB chain for the backup script."""
    t = time.monotonic()
    store = os.path.join(workdir, "bk")
    d = os.path.join(store, "images", "200")
    os.makedirs(d)
    base = "snap-s1-" + BK_VOL
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536," + BASE_OPTS,
                    base, str(BK_DISK), cwd=d)
    ngib = BK_DISK // GiB
    lvmlib.qemu_io(base, *["write -P 0x%02x %d %d" % (1 + k % 250, k * GiB + 64 * MiB, MiB)
                           for k in range(ngib)], cwd=d)
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS, "-b", base, "-F", "qcow2",
                    BK_VOL, str(BK_DISK), cwd=d)
    lvmlib.qemu_io(BK_VOL, *["write -P 0x%02x %d %d" % (1 + (k * 7) % 250,
                                                        k * GiB + (128 + k % 512) * MiB, MiB)
                             for k in range(ngib)], cwd=d)
    d2 = os.path.join(store, "images", "201")
    os.makedirs(d2)
    ibase = "snap-s0-" + INC_VOL
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", "cluster_size=65536," + BASE_OPTS,
                    ibase, str(INC_DISK), cwd=d2)
    lvmlib.qemu_io(ibase, *["write -P 0x21 %d %d" % (k * 256 * MiB, 24 * MiB)
                            for k in range(INC_DISK // (256 * MiB))], cwd=d2)
    lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS, "-b", ibase, "-F", "qcow2",
                    INC_VOL, str(INC_DISK), cwd=d2)
    lvmlib.qemu_io(INC_VOL, *["write -P 0x22 %d %d" % (k * 256 * MiB + 100 * MiB, 8 * MiB)
                              for k in range(INC_DISK // (256 * MiB))], cwd=d2)
    os.sync()
    log("backup fixture built in %.1fs" % (time.monotonic() - t))
    return store, d, d2


def read_json_file(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            b = os.read(fd, MiB)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(fd)
    return b"".join(chunks)


def bench_backup(workdir, logdir, res):
    store, d, d2 = build_backup_store(workdir)
    r = res["backup"] = {"disk_GiB": BK_DISK / GiB}
    layer_files = [os.path.join(d, f) for f in ("snap-s1-" + BK_VOL, BK_VOL)]
    for f in layer_files:
        warm(f, file_data_ranges(f))
    mnt = os.path.join(workdir, "mnt-bk")
    vdir = os.path.join(mnt, os.path.basename(store), BK_VOL)
    cs = os.path.join(vdir, "current", "changed-since", "s1.json")
    # changed-since: a fresh daemon each run (nothing of the chain cached in
    # vstorfs; the image files are in the page cache), then once more with the
    # layer files dropped from the page cache too
    first, again, rss = [], [], []
    for i in range(RUNS + 1):
        cold = i == RUNS
        if cold:
            for f in layer_files:
                drop_file_cache(f)
        p = start_vstorfs_src(store, mnt, logdir)
        t = time.monotonic()
        text = read_json_file(cs)
        dt = time.monotonic() - t
        if cold:
            r["changed_since_cold_page_cache_s"] = dt
        else:
            first.append(dt)
            t = time.monotonic()
            read_json_file(cs)
            again.append(time.monotonic() - t)
        rss.append(rss_kib(p.pid))
        CLEAN.stop(p, mnt)
    ranges = json.loads(text)
    changed = sum(x["length"] for x in ranges)
    # what qemu says changed: the ranges of the top layer (depth 0) in qemu-img map
    qm = []
    for _ in range(RUNS):
        t = time.monotonic()
        top = [(a, n) for a, n, dep in qemu_map_ranges(BK_VOL, d) if dep == 0]
        qm.append(time.monotonic() - t)
    qtop = merge_ranges(top)
    r["changed_since_equals_qemu_map_top"] = merge_ranges(
        (x["offset"], x["length"]) for x in ranges if x["exists"] == "true") == qtop
    r.update({"changed_since_first_s": median(first), "changed_since_first_runs": first,
              "changed_since_again_s": median(again), "changed_since_MiB": changed / MiB,
              "changed_since_ranges": len(ranges), "rss_kib_after_changed_since": max(rss),
              "qemu_img_map_s": median(qm), "qemu_img_map_runs": qm,
              "qemu_img_map_top_MiB": sum(n for _, n in qtop) / MiB})
    log("backup: changed-since %s s (again %.3f s, cold page cache %.3f s), %.0f MiB in %d "
        "ranges, RSS %.1f MiB; qemu-img map %.2f s (top layer %.0f MiB)" % (
            ["%.3f" % x for x in first], median(again), r["changed_since_cold_page_cache_s"],
            changed / MiB, len(ranges), max(rss) / 1024, median(qm),
            r["qemu_img_map_top_MiB"]))

    # references that read bytes, through the same mount
    p = start_vstorfs_src(store, mnt, logdir)
    views = {v: os.path.join(vdir, v, "disk.raw") for v in ("s1", "current")}
    # (a) reading both views in full: BK_SAMPLE of each (the same density of
    # data as the whole disk: 1 MiB per GiB and layer), extrapolated to 1 TiB
    # each; no compare: a lower bound of any full cmp
    full = {}
    for v, path in views.items():
        drop_file_cache(path)
        t = time.monotonic()
        run(["dd", "if=" + path, "of=/dev/null", "bs=1M", "count=%d" % (BK_SAMPLE // MiB)])
        full[v] = BK_SAMPLE / (time.monotonic() - t) / MiB
    full_s = sum(BK_DISK / MiB / x for x in full.values())
    # (b) cmp of the allocated parts only: the non-zero data ranges qemu-img
    # map reports for either view, read from both views and compared
    t = time.monotonic()
    rs = merge_ranges([(a, n) for a, n, _ in qemu_map_ranges("snap-s1-" + BK_VOL, d)] +
                      [(a, n) for a, n, _ in qemu_map_ranges(BK_VOL, d)])
    t_map = time.monotonic() - t
    rs = [(a, min(n, BK_CMP_SAMPLE - a)) for a, n in rs if a < BK_CMP_SAMPLE]
    t = time.monotonic()
    fds = {v: os.open(path, os.O_RDONLY) for v, path in views.items()}
    differ = 0
    try:
        for a, n in rs:
            for o in range(a, a + n, 4 * MiB):
                m = min(4 * MiB, a + n - o)
                if os.pread(fds["s1"], m, o) != os.pread(fds["current"], m, o):
                    differ += m
    finally:
        for fd in fds.values():
            os.close(fd)
    # the maps are timed whole; reading and comparing the data ranges below
    # BK_CMP_SAMPLE (the data is spread evenly) is extrapolated to the disk
    alloc_cmp_s = t_map + (time.monotonic() - t) * BK_DISK / BK_CMP_SAMPLE
    r.update({"alloc_cmp_sample_GiB": BK_CMP_SAMPLE / GiB, "alloc_cmp_maps_s": t_map,"full_read_sample_GiB": BK_SAMPLE / GiB, "full_read_MiBps": full,
              "full_read_both_extrapolated_s": full_s, "alloc_cmp_s": alloc_cmp_s,
              "alloc_cmp_read_MiB": sum(n for _, n in rs) / MiB * BK_DISK / BK_CMP_SAMPLE,
              "alloc_cmp_differ_MiB": differ / MiB})
    log("backup: full read %s MiB/s -> both views of 1 TiB in %.0f s (extrapolated); "
        "cmp of the %.0f MiB qemu-img map calls data: %.2f s (extrapolated)" % (
            {k: round(v) for k, v in full.items()}, full_s, r["alloc_cmp_read_MiB"],
            alloc_cmp_s))
    CLEAN.stop(p, mnt)

    # examples/incremental-backup.sh on the 4 GiB volume: a first (full) run,
    # 64 MiB written into the live volume, a second run
    p = start_vstorfs_src(store, mnt, logdir)
    ivol = os.path.join(mnt, os.path.basename(store), INC_VOL)
    backup = os.path.join(workdir, "backup-201.raw")
    script = os.path.join(REPO, "examples", "incremental-backup.sh")
    inc = {"script": "examples/incremental-backup.sh"}
    for k in ("first", "second"):
        if k == "second":
            lvmlib.qemu_io(INC_VOL, *["write -P 0x23 %d %d" % (j * 512 * MiB + 200 * MiB, 8 * MiB)
                                      for j in range(INC_DISK // (512 * MiB))], cwd=d2)
        t = time.monotonic()
        p_ = subprocess.run(["bash", script, ivol, backup], capture_output=True)
        dt = time.monotonic() - t
        if p_.returncode and k == "first" and b"differ" in p_.stdout + p_.stderr:
            # the script opens the backup "ab+" (O_APPEND): Linux pwrite()
            # then appends whatever the offset, and its own cmp fails. Run a
            # copy that opens it without O_APPEND (the only change) instead.
            log("backup: examples/incremental-backup.sh fails its own cmp (%s); running a copy "
                "that opens the backup without O_APPEND" % p_.stdout.decode().strip()[-200:])
            for v in os.listdir(ivol):
                if v.startswith("backup-"):
                    os.rmdir(os.path.join(ivol, v))
            os.unlink(backup)
            text = open(script).read()
            assert 'open(dst, "ab+")' in text
            script = os.path.join(workdir, "incremental-backup-noappend.sh")
            with open(script, "w") as f:
                f.write(text.replace('open(dst, "ab+")',
                                     'open(dst, "rb+" if os.path.exists(dst) else "wb+")'))
            inc["script"] = "examples/incremental-backup.sh without O_APPEND"
            inc["original_failed"] = p_.stdout.decode()[-500:]
            t = time.monotonic()
            p_ = subprocess.run(["bash", script, ivol, backup], capture_output=True)
            dt = time.monotonic() - t
        if p_.returncode:
            raise RuntimeError("%s failed: %s %s" % (script, p_.stdout.decode()[-500:],
                                                     p_.stderr.decode()[-500:]))
        out = p_.stdout.decode()
        m = re.search(r"copied (\d+) of (\d+) bytes", out)
        inc[k] = {"s": dt, "copied_bytes": int(m.group(1)), "disk_bytes": int(m.group(2))}
    cur = os.path.join(ivol, "current", "disk.raw")
    cps = []
    for _ in range(RUNS):
        out = os.path.join(workdir, "cp-201.raw")
        drop_file_cache(cur)
        t = time.monotonic()
        run(["cp", "--sparse=always", cur, out])
        run(["sync", out])
        cps.append(time.monotonic() - t)
        os.unlink(out)
    CLEAN.stop(p, mnt)
    inc["cp_sparse_s"], inc["cp_sparse_runs"] = median(cps), cps
    r["incremental"] = inc
    log("backup: incremental-backup.sh %s; cp --sparse=always + sync %.2f s" % (
        {k: (round(v["s"], 2), v["copied_bytes"] // MiB) for k, v in inc.items()
         if isinstance(v, dict)}, median(cps)))
    r["incremental"]["disk_GiB"] = INC_DISK / GiB
    r["rows"] = [
        row("changed-since/s1.json, 1 TiB, fresh mount (s)", "s", r["changed_since_first_s"],
            {"qemu-img map (top layer)": r["qemu_img_map_s"],
             "cmp of map's data ranges (extrap.)": alloc_cmp_s,
             "read both views in full (extrap.)": full_s}, lower_is_better=True),
        row("incremental-backup.sh, 2nd run, %d GiB disk (s)" % (INC_DISK // GiB), "s", inc["second"]["s"],
            {"cp --sparse=always + sync": inc["cp_sparse_s"]}, lower_is_better=True,
            note="%s; includes mkdir, its full cmp of the disk and the rmdir merge" % inc["script"]),
    ]


# -- part `rbd`: a throwaway Ceph cluster ---------------------------------------------

RBD_IMG = "vm-300-disk-0"
RBD_SNAP = "s1"
RBD_SIZE = GiB


def bench_rbd(workdir, logdir, res):
    import cephlib
    miss = cephlib.missing_binaries()
    if miss:
        log("rbd: skipped, missing %s" % miss)
        res["rbd"] = {"skipped": "missing %s" % miss}
        return
    t = time.monotonic()
    c = cephlib.Cluster(os.path.join(workdir, "ceph"))
    os.makedirs(c.dir)
    CLEAN.clusters.append(c)
    c.create()
    spec = "%s/%s" % (c.pool, RBD_IMG)
    c.rbd("create", "--size", str(RBD_SIZE // MiB), spec)
    c.rbd("bench", "--io-type", "write", "--io-size", "4M", "--io-threads", "4",
          "--io-total", str(RBD_SIZE), "--io-pattern", "seq", spec, timeout=600)
    c.rbd("snap", "create", spec + "@" + RBD_SNAP)
    log("rbd: cluster and %d MiB image in %.1fs" % (RBD_SIZE // MiB, time.monotonic() - t))
    r = res["rbd"] = {"image_MiB": RBD_SIZE / MiB, "memstore_bytes": cephlib.MEMSTORE_BYTES}
    mnt = os.path.join(workdir, "mnt-rbd")
    vp = start_vstorfs_src("rbd:" + c.pool, mnt, logdir, "ceph_conf=%s,ceph_id=admin,"
                           "ceph_keyring=%s" % (c.conf, c.keyring))
    vdir = os.path.join(mnt, c.pool, RBD_IMG)
    fio_env = dict(os.environ, CEPH_CONF=c.conf)
    procs = [(vp, mnt)]

    def servers(view):
        """qsd (qemu's rbd driver with its defaults, cache.direct=off: librbd's
        cache on) and the two librbd passthroughs (direct_io: one rbd_read per
        read(2); buffered: the page cache and its readahead) of one view."""
        snap = {} if view == "current" else {"snapshot": view}
        qfile = os.path.join(workdir, "qsd-rbd-%s.raw" % view)
        qp = qsd_start_nodes([dict({"driver": "rbd", "node-name": "top", "pool": c.pool,
                                    "image": RBD_IMG, "conf": c.conf, "user": "admin",
                                    "read-only": True}, **snap)], "top", qfile, logdir)
        src = "rbd:%s%s" % (spec, "" if view == "current" else "@" + view)
        dmnt, bmnt = (os.path.join(workdir, "mnt-rbd-pt%s-%s" % (k, view)) for k in "db")
        dp = passthrough_start(workdir, src, dmnt, logdir, direct_io=True, env=fio_env)
        bp = passthrough_start(workdir, src, bmnt, logdir, env=fio_env)
        procs.extend([(qp, qfile), (dp, dmnt), (bp, bmnt)])
        return qfile, os.path.join(dmnt, "disk.raw"), os.path.join(bmnt, "disk.raw")

    def rbd_export(view=""):
        t = time.monotonic()
        subprocess.run(["rbd", "-c", c.conf, "--id", "admin", "export", "--no-progress",
                        spec + view, "-"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=True)
        return RBD_SIZE / (time.monotonic() - t) / MiB

    def fio_librbd(jobs):
        p = run(["fio", "--name=r", "--ioengine=rbd", "--clientname=admin", "--pool=" + c.pool,
                 "--rbdname=" + RBD_IMG, "--rw=randread", "--bs=4k", "--iodepth=1",
                 "--numjobs=%d" % jobs, "--time_based", "--runtime=%d" % NEW_FIO_RUNTIME,
                 "--group_reporting", "--output-format=json"], env=fio_env)
        out = p.stdout.decode()
        return json.loads(out[out.index("{"):])["jobs"][0]["read"]["iops"]

    flat = os.path.join(workdir, "rbd-flat.raw")
    c.export(spec, flat)
    qfile, dpath, bpath = servers("current")
    targets = {"vstorfs": os.path.join(vdir, "current", "disk.raw"), "qsd": qfile}
    spot_check(dict(targets, pt_direct=dpath, pt_buffered=bpath), flat, RBD_SIZE, n=50)
    log("rbd: vstorfs, qsd and the passthroughs spot-checked against rbd export")
    rows = read_rows(targets, dpath, bpath, ["qsd"], ["qsd"], "rbd", r,
                     extra_seq={"rbd export": rbd_export},
                     extra_rand={"librbd (fio rbd engine)": fio_librbd})
    # a snapshot view, as a nightly backup reads it (no random rows: the
    # same reads as current's)
    os.unlink(flat)
    c.export(spec + "@" + RBD_SNAP, flat)
    qfile, dpath, bpath = servers(RBD_SNAP)
    targets = {"vstorfs": os.path.join(vdir, RBD_SNAP, "disk.raw"), "qsd": qfile}
    spot_check(dict(targets, pt_direct=dpath, pt_buffered=bpath), flat, RBD_SIZE, n=50)
    os.unlink(flat)
    rows += read_rows(targets, dpath, bpath, ["qsd"], ["qsd"], "rbd", r,
                      extra_seq={"rbd export": lambda: rbd_export("@" + RBD_SNAP)}, rand=False,
                      prefix=("snapshot view, ", "snap_"))
    r["rss_kib_after_reads"] = rss_kib(vp.pid)
    r["rows"] = rows
    for p_, m_ in reversed(procs):
        CLEAN.stop(p_, m_)
    c.destroy()
    CLEAN.clusters.remove(c)


def new_table(res):
    L = []
    for part, title in (("dir", "file chain, directory store (1 GiB, 3 qcow2 files)"),
                        ("backup", "backup"), ("rbd", "RBD (1 GiB image, memstore cluster)"),
                        ("nightly", "nightly backup (restic, directory store)")):
        rows = res.get(part, {}).get("rows")
        if not rows:
            continue
        L.append("%-52s %9s  %-36s %9s %8s %8s" % (title, "vstorfs", "best competitor", "ceiling",
                                                  "vs best", "vs ceil"))
        for r in rows:
            best, bestv, xb, xc = row_ratios(r)
            fmt = (lambda x: "%9.3f" % x) if r["unit"] == "s" else (lambda x: "%9.0f" % x)
            L.append("  %-50s %s  %-36s %9s %8s %8s" % (
                r["label"], fmt(r["vstorfs"]),
                ("%s %s" % (best, fmt(bestv).strip())) if best else "-",
                fmt(r["ceiling"]) if r["ceiling"] else "-",
                "%.2fx" % xb if xb else "-", "%.0f%%" % (100 * xc) if xc else "-"))
            others = {k: v for k, v in r["competitors"].items() if k != best}
            others.update(r.get("references", {}))
            if others:
                L.append("    also: " + ", ".join("%s %s" % (k, fmt(v).strip())
                                                  for k, v in others.items()))
            if r.get("note"):
                L.append("    (" + r["note"] + ")")
        if part == "backup":
            b = res["backup"]
            inc = b["incremental"]
            L.append("  changed-since: %.0f MiB in %d ranges, again %.3f s, with the layer files "
                     "out of the page cache %.3f s; daemon RSS %.1f MiB" % (
                         b["changed_since_MiB"], b["changed_since_ranges"],
                         b["changed_since_again_s"], b["changed_since_cold_page_cache_s"],
                         b["rss_kib_after_changed_since"] / 1024))
            L.append("  full read = %g GiB of each view by dd bs=1M (%s MiB/s), extrapolated to "
                     "1 TiB each, no compare" % (b["full_read_sample_GiB"], "/".join(
                         "%.0f" % v for v in b["full_read_MiBps"].values())))
            L.append("  cmp of map's data ranges = qemu-img map of both chains (%.1f s) + read and "
                     "compare the %.0f MiB it calls data in both views (measured below %g GiB, "
                     "extrapolated)" % (b["alloc_cmp_maps_s"], b["alloc_cmp_read_MiB"],
                                        b["alloc_cmp_sample_GiB"]))
            L.append("  incremental-backup.sh: 1st run copied %.0f MiB in %.2f s, 2nd run %.0f MiB "
                     "(%.1f%% of the %.0f MiB disk) in %.2f s" % (
                         inc["first"]["copied_bytes"] / MiB, inc["first"]["s"],
                         inc["second"]["copied_bytes"] / MiB,
                         100.0 * inc["second"]["copied_bytes"] / inc["second"]["disk_bytes"],
                         inc["second"]["disk_bytes"] / MiB, inc["second"]["s"]))
        if part in ("dir", "rbd") and "rss_kib_after_reads" in res[part]:
            L.append("  daemon RSS after the reads: %.1f MiB" % (
                res[part]["rss_kib_after_reads"] / 1024))
        L.append({"dir": "  ceiling = passthrough FUSE server over the flattened bytes in the page "
                         "cache; vs best/ceil > 1 = vstorfs faster",
                  "rbd": "  ceiling = passthrough FUSE server reading the same view through librbd "
                         "(the better of direct_io and buffered); vs best/ceil > 1 = vstorfs faster"
                  }.get(part, "  vs best > 1 = vstorfs faster"))
        L.append("")
    return "\n".join(L)


# -- part `nightly`: a second restic backup of an unchanged tree ---------------------

NIGHT_DISKS = 20
NIGHT_DISK = 128 * MiB


def build_nightly_store(workdir):
    """nightly/images/<vmid>/vm-<vmid>-disk-0.qcow2, 20 disks of 128 MiB with
    16 MiB of data each (a fill byte per MiB) and an internal snapshot s1;
    current moved on."""
    t = time.monotonic()
    store = os.path.join(workdir, "nightly")
    vols = []
    for k in range(NIGHT_DISKS):
        vmid = 400 + k
        d = os.path.join(store, "images", str(vmid))
        os.makedirs(d)
        vol = "vm-%d-disk-0.qcow2" % vmid
        img = os.path.join(d, vol)
        lvmlib.qemu_img("create", "-q", "-f", "qcow2", "-o", BASE_OPTS, img, str(NIGHT_DISK))
        rnd = random.Random(k)
        # 16 MiB of data in 1 MiB pieces spread over the disk, a fill byte per piece
        lvmlib.qemu_io(img, *["write -P 0x%02x %d %d" % (1 + (k * 16 + j) % 250,
                                                          (j * 8 + rnd.randrange(0, 7)) * MiB, MiB)
                              for j in range(16)])
        lvmlib.qemu_img("snapshot", "-c", "s1", img)
        lvmlib.qemu_io(img, "write -P 0xee %d %d" % (120 * MiB, 4 * MiB))
        vols.append(vol)
    log("nightly fixture built in %.1fs" % (time.monotonic() - t))
    return store, vols


def restic_backup(repo_env, paths, logdir):
    """One restic backup: (seconds, its JSON summary, the thread ids it had)."""
    import clientlib
    t = time.monotonic()
    rc, out, err, tids = clientlib.run_sampled(["restic", "backup", "--json", "--host", "nightly"]
                                               + paths, env=repo_env)
    dt = time.monotonic() - t
    if rc:
        raise RuntimeError("restic backup failed: %s" % err[-2000:])
    summary = [json.loads(x) for x in out.splitlines() if '"message_type":"summary"' in x][-1]
    return dt, summary, tids


def fuse_read_bytes(logpath, pos, tids):
    """Bytes of READ replies in a vstorfs -d trace after byte `pos` of the log:
    (all of them, those to the threads `tids`)."""
    req = re.compile(rb"unique: (\d+), opcode: READ \(15\), nodeid: \d+, insize: \d+, pid: (\d+)")
    rep = re.compile(rb"\s+unique: (\d+), \S+.*outsize: (\d+)")
    pending, total, theirs = {}, 0, 0
    with open(logpath, "rb") as f:
        f.seek(pos)
        for line in f:
            m = req.match(line)
            if m:
                pending[m.group(1)] = int(m.group(2))
                continue
            m = rep.match(line)
            if m and m.group(1) in pending:
                n = max(0, int(m.group(2)) - 16)
                total += n
                if pending.pop(m.group(1)) in tids:
                    theirs += n
    return total, theirs


def bench_nightly(workdir, logdir, res):
    if not shutil.which("restic"):
        log("nightly: restic not installed, skipped")
        return
    store, vols = build_nightly_store(workdir)
    r = res["nightly"] = {"disks": NIGHT_DISKS, "disk_MiB": NIGHT_DISK // MiB}
    mnt = os.path.join(workdir, "mnt-nightly")
    name = os.path.basename(store)
    views = [os.path.join(mnt, name, v, "s1") for v in vols]
    local = os.path.join(workdir, "local-nightly")
    envs = {}
    for k in ("vstorfs", "local"):
        envs[k] = dict(os.environ, RESTIC_PASSWORD="bench",
                       RESTIC_REPOSITORY=os.path.join(workdir, "restic-" + k),
                       RESTIC_CACHE_DIR=os.path.join(workdir, "restic-cache-" + k))
        run(["restic", "init"], env=envs[k])
    # the first night: both trees backed up once; the local tree is a copy of
    # the snapshot views (times kept), on the scratch directory's filesystem
    p = start_vstorfs_src(store, mnt, logdir)
    for v in views:
        dst = os.path.join(local, os.path.relpath(v, mnt))
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        run(["cp", "-a", "--sparse=always", v, dst])
    lpaths = [os.path.join(local, os.path.relpath(v, mnt)) for v in views]
    first = {"vstorfs": restic_backup(envs["vstorfs"], views, logdir)[0],
             "local": restic_backup(envs["local"], lpaths, logdir)[0]}
    CLEAN.stop(p, mnt)
    # the next nights: a fresh mount each (nothing cached by the kernel or the
    # daemon), traced with -d to count the bytes the daemon answers
    times = {"vstorfs": [], "local": []}
    summaries, served, served_restic = [], [], []
    for i in range(RUNS):
        p = subprocess.Popen([VSTORFS, store, mnt, "-f", "-d"], stdin=subprocess.DEVNULL,
                             stdout=open(os.path.join(logdir, "nightly-trace.log"), "wb"),
                             stderr=subprocess.STDOUT)
        CLEAN.add_proc(p, mnt)
        wait_mount(mnt, p)
        pos = os.path.getsize(os.path.join(logdir, "nightly-trace.log"))
        for k in (("vstorfs", "local") if i % 2 == 0 else ("local", "vstorfs")):
            dt, summ, tids = restic_backup(envs[k], views if k == "vstorfs" else lpaths, logdir)
            times[k].append(dt)
            if k == "vstorfs":
                summaries.append(summ)
                vtids = tids
        a, b = fuse_read_bytes(os.path.join(logdir, "nightly-trace.log"), pos, vtids)
        served.append(a)
        served_restic.append(b)
        CLEAN.stop(p, mnt)
    s = summaries[-1]
    r.update({"first_s": first, "second_s": {k: median(v) for k, v in times.items()},
              "second_runs": times, "daemon_read_bytes": served,
              "daemon_read_bytes_to_restic": served_restic,
              "restic_files_unmodified": s["files_unmodified"],
              "restic_files_changed": s["files_changed"], "restic_files_new": s["files_new"],
              "restic_data_added": s["data_added"]})
    log("nightly: second restic backup of %d snapshot views: vstorfs %s s, local copies %s s; "
        "daemon answered %s bytes (%s to restic's own reads, the rest to the daemon's partition "
        "probe through the mount); restic: %d unmodified, %d changed, %d new, %d bytes added" % (
            NIGHT_DISKS, ["%.2f" % x for x in times["vstorfs"]], ["%.2f" % x for x in times["local"]],
            served, served_restic, s["files_unmodified"], s["files_changed"], s["files_new"],
            s["data_added"]))
    r["rows"] = [
        row("restic 2nd nightly, %d unchanged snapshot views (s)" % NIGHT_DISKS, "s",
            r["second_s"]["vstorfs"], {"restic on local copies": r["second_s"]["local"]},
            lower_is_better=True,
            note="fresh mount, -d trace; daemon answered %d bytes (%d to restic); restic: %d files "
                 "unmodified, %d changed, %d new" % (max(served), max(served_restic),
                                                    s["files_unmodified"], s["files_changed"],
                                                    s["files_new"])),
    ]


# -- targets and the table ---------------------------------------------------------

PASSTHROUGHS = ("passthrough", "passthrough_splice", "passthrough_direct")


def seq_ceiling(res, key="seq_MiBps"):
    """(name, MiB/s) of the passthrough that serves this reader best."""
    s = res[key]
    name = max((n for n in PASSTHROUGHS if n in s), key=s.get)
    return name, s[name]


def merge_rates(res):
    """MiB/s of the merge itself in 'rmdir middle' (the same data moves
    whichever way vstorfs merges): MiB merged / (its time - the time of the
    rmdir with nothing to merge on the same disk). None where an rmdir failed."""
    out = []
    for c in res["snap"]["cases"]:
        fixed = c["ops"]["rmdir_newest"]["vstorfs_s"]
        mid = c["ops"]["rmdir_middle"]
        moved = mid["vstorfs_moved_MiB"] or c["layer_MiB"]
        if fixed is None or mid["vstorfs_s"] is None:
            out.append((c["label"], moved, fixed, None, None))
            continue
        extra = mid["vstorfs_s"] - fixed
        out.append((c["label"], moved, fixed, extra, moved / extra if extra > 0 else float("inf")))
    return out


def summary(res):
    """One line per bench row and target: [(row, measured, target, met)], the
    targets of bench/README.md and of issue 23. Ratios are speed factors of
    medians from the same run (the machine is shared; absolute numbers move
    between runs, side-by-side ratios much less)."""
    S = []

    def add(rowname, x, fmt, target, ok):
        S.append((rowname, fmt % x if x is not None else "failed", target, bool(ok)))

    if "seq_MiBps" in res:
        for key, label, _ in SEQ_READERS:
            if key not in res:
                continue
            s = res[key]
            x = s["vstorfs"] / seq_ceiling(res, key)[1]
            add("main: " + label, 100 * x, "%.0f%% of ceil", ">= 90% of ceil", x >= 0.9)
            x = s["vstorfs"] / s["qsd"]
            add("main: " + label, x, "%.2fx qsd", ">= 3x qsd", x >= 3)
        for key, label in (("rand4k_iops_1job", "1 job"), ("rand4k_iops_4jobs", "4 jobs")):
            r = res[key]
            x = r["vstorfs"] / r["passthrough"]
            add("main: random 4k, " + label, 100 * x, "%.0f%% of ceil", ">= 90% of ceil",
                x >= 0.9)
            x = r["vstorfs"] / r["qsd"]
            add("main: random 4k, " + label, x, "%.2fx qsd", ">= 3x qsd", x >= 3)
        if "reread_MiBps" in res:
            s = res["reread_MiBps"]
            x = s["vstorfs"] / s.get("passthrough_keep_cache", s["page_cache"])
            add("main: snapshot view, 2nd read", 100 * x, "%.0f%% of cached FUSE",
                ">= 95% of cached FUSE", x >= 0.95)
    if "many" in res:
        m = res["many"]
        x = max(m["rss_kib_100_read"], m["rss_kib_100_open"]) / 1024
        add("many: RSS, 100 disks x 2 views", x, "%.1f MiB", "<= 64 MiB", x <= 64)
    if "snap" in res:
        for c in res["snap"]["cases"]:
            for key, label, _ in SNAP_OPS:
                o = c["ops"][key]
                name = "snap: %s, %s" % (label, c["label"])
                x = o["ratio_vstorfs_proxmox"]
                if key == "mkdir":
                    add(name, x, "%.2fx pve", "<= 0.5x pve", x is not None and x <= 0.5)
                    continue
                add(name, x, "%.2fx pve", "<= 1x pve", x is not None and x <= 1)
                x = (o["vstorfs_s"] / o["proxmox_lower_bound_s"]
                     if o["vstorfs_s"] is not None else None)
                add(name, x, "%.2fx pve core", "<= 1.2x pve core", x is not None and x <= 1.2)
        for (label, moved, _, _, rate), c in zip(merge_rates(res), res["snap"]["cases"]):
            q = c["ops"]["rmdir_middle"].get("proxmox_merge_s")
            qrate = c["ops"]["rmdir_middle"]["proxmox_moved_MiB"] / q if q else None
            x = rate / qrate if rate is not None and qrate else None
            add("snap: merge data rate, " + label, x, "%.2fx qemu-img",
                ">= 1x qemu-img", x is not None and x >= 1)
        mid = {(c["disk_GiB"], c["layer_MiB"]): c["ops"]["rmdir_middle"]["vstorfs_s"]
               for c in res["snap"]["cases"]}
        a, b, big = mid.get((1, 64)), mid.get((1, 256)), mid.get((64, 64))
        if None not in (a, b, big):
            # 4x the data at most about 4x the time, 64x the disk about the
            # same time; the bounds leave room for the merges' spread (+-40 %)
            add("snap: rmdir middle, 4x the data", b / a, "%.1fx time", "<= 6x time", b / a <= 6)
            add("snap: rmdir middle, 64x the disk", big / a, "%.1fx time", "<= 2x time",
                big / a <= 2)
    for part in ("dir", "rbd"):
        for r in res.get(part, {}).get("rows", []):
            best, bestv, xb, xc = row_ratios(r)
            name = "%s: %s" % (part, re.sub(r" \(.*\)$", "", r["label"]))
            rand = r["label"].startswith("random 4k")
            if part == "rbd":
                for comp in ("qsd", "rbd export"):
                    v = r["competitors"].get(comp)
                    if v and r["vstorfs"]:
                        x = r["vstorfs"] / v
                        if comp == "qsd":
                            add(name, x, "%.2fx qsd", ">= 1x qsd", x >= 1)
                        else:
                            add(name, 100 * x, "%.0f%% of rbd export", ">= 90% of rbd export",
                                x >= 0.9)
                for comp, v in r.get("references", {}).items():
                    x = r["vstorfs"] / v
                    add(name, 100 * x, "%.0f%% of librbd", ">= 90% of librbd", x >= 0.9)
            if rand and xc is not None:
                add(name, 100 * xc, "%.0f%% of ceil", ">= 90% of ceil", xc >= 0.9)
            elif part == "dir" and xb is not None:
                S.append((name, "%.2fx %s" % (xb, best), "-", None))
    nb = res.get("nightly", {})
    if "second_s" in nb:
        x = nb["second_s"]["vstorfs"] / nb["second_s"]["local"]
        add("nightly: 2nd restic backup", x, "%.2fx local", "<= 1.5x local", x <= 1.5)
        x = max(nb["daemon_read_bytes"])
        add("nightly: bytes read in the 2nd backup", x, "%d B", "0 B, all unmodified",
            x == 0 and nb["restic_files_changed"] == 0 and nb["restic_files_new"] == 0)
    return S


def summary_lines(S):
    return ["  %-50s %-22s %-24s %s" % (n, v, t, "-" if ok is None else "MET" if ok else "SHORT")
            for n, v, t, ok in S]


def table(res):
    L = []
    if "seq_MiBps" in res:
        L.append("%-38s %10s %10s %10s %8s %8s" % ("reads (median of %d, seq %d)" % (
            RUNS, SEQ_RUNS), "vstorfs",
                                                   "qsd", "ceiling", "vs qsd", "vs ceil"))
        rows = [(key, label + " (MiB/s)", seq_ceiling(res, key)) for key, label, _ in SEQ_READERS
                if key in res]
        rows += [("rand4k_iops_1job", "random 4k, fio 1 job (IOPS)",
                  ("passthrough", res["rand4k_iops_1job"]["passthrough"])),
                 ("rand4k_iops_4jobs", "random 4k, fio 4 jobs (IOPS)",
                  ("passthrough", res["rand4k_iops_4jobs"]["passthrough"]))]
        for key, label, (cname, ceil) in rows:
            r = res[key]
            L.append("%-38s %10.0f %10.0f %10.0f %7.2fx %7.0f%%  %s" % (
                label, r["vstorfs"], r["qsd"], ceil, r["vstorfs"] / r["qsd"],
                100 * r["vstorfs"] / ceil, cname))
            if key in dict((k, 1) for k, _, _ in SEQ_READERS):
                L.append("    passthrough copy %.0f, splice %.0f, direct_io %.0f" % tuple(
                    r.get(n, 0) for n in PASSTHROUGHS))
        if "reread_MiBps" in res:
            r = res["reread_MiBps"]
            best = r.get("passthrough_keep_cache", r["page_cache"])
            L.append("%-38s %10.0f %10s %10.0f %8s %7.0f%%  %s" % (
                "snapshot view, 2nd read (MiB/s)", r["vstorfs"], "-", best, "-",
                100 * r["vstorfs"] / best, "passthrough keeping its cache"))
            L.append("    a local file in the page cache: %.0f" % r["page_cache"])
        L.append("  ceiling = the passthrough FUSE server (bench/passthrough.c) that serves the "
                 "reader best: copying, splicing, or splicing with direct_io")
        L.append("")
    if "snap" in res:
        L.append("%-38s %10s %10s %10s %8s  %-17s %s" % (
            "snapshots (median of %d, seconds)" % SNAP_RUNS, "vstorfs", "proxmox", "pve core",
            "vs pve", "pve processes", "MiB moved vstorfs/pve"))
        for c in res["snap"]["cases"]:
            L.append(c["label"])
            for key, label, _ in SNAP_OPS:
                o = c["ops"][key]
                vm = o["vstorfs_moved_MiB"]
                v = ("%10.3f" % o["vstorfs_s"]) if o["vstorfs_s"] is not None else \
                    "%10s" % o["vstorfs_errors"][0]
                r = ("%7.2fx" % o["ratio_vstorfs_proxmox"]) if o["vstorfs_s"] is not None else \
                    "%8s" % "-"
                L.append("  %-36s %s %10.3f %10.3f %s  %-17s %s" % (
                    label, v, o["proxmox_s"], o["proxmox_lower_bound_s"], r,
                    "%d lvm2 %d qemu-img" % (o["proxmox_lvm2_cmds"], o["proxmox_qemu_img_cmds"]),
                    "-" if key == "mkdir" else "%s (%s) / %.0f (%s)" % (
                        "?" if vm is None else "%.0f" % vm, o["vstorfs_how"],
                        o["proxmox_moved_MiB"], o["proxmox_how"])))
        L.append("  pve core: only lvrename+lvcreate+qemu-img create / qemu-img rebase+lvremove /"
                 " qemu-img commit+lvremove+lvrename (the old lower bound)")
        for label, moved, fixed, extra, rate in merge_rates(res):
            if rate is None:
                L.append("  rmdir middle, %s: failed" % label)
            elif rate == float("inf"):
                L.append("  rmdir middle, %-28s %.0f MiB merged in %.3f s, an empty merge "
                         "(rmdir newest) took %.3f s" % (label + ":", moved, extra + fixed, fixed))
            else:
                L.append("  rmdir middle, %-28s %.0f MiB merged in %.3f s beyond the %.3f s "
                         "of an empty merge: %.0f MiB/s" % (label + ":", moved, extra, fixed,
                                                            rate))
        L.append("")
    other = []
    if "ttfb_main_s" in res:
        other.append(("mount + first 4 KiB, 1-chain VG", "%.3f s" % res["ttfb_main_s"]))
    for key, s in res.get("sparse_copy", {}).items():
        other.append(("copy 2 GiB disk, 8 MiB used (%s)" % key,
                      "cp --sparse=always %.2f s, dd %.2f s (SEEK_DATA finds %.0f MiB)" % (
                          s["cp_sparse_s"], s["dd_full_s"], s["seek_data_MiB"])))
    if "rss_kib_main_after_rand" in res:
        other.append(("RSS after seq + random (1 chain)",
                      "%.1f MiB" % (res["rss_kib_main_after_rand"] / 1024)))
    if "many" in res:
        m, b = res["many"], res["many_build"]
        other.append(("%d LVs: built with one vgcfgrestore" % b["lvs"],
                      "%.1f s (lvcreate one by one: about %.0f s)" % (
                          b["build_s"], b["lvcreate_estimate_s"])))
        other.append(("200x6 VG: mount + first 4 KiB", "%.3f s" % m["ttfb_s"]))
        other.append(("200x6 VG: ls -R of a fresh mount", "%.3f s" % m["ls_R_s"]))
        other.append(("200x6 VG: RSS idle / 20 disks read / 100x2 read / 100x2 open",
                      "%.1f / %.1f / %.1f / %.1f MiB" % (
                          m["rss_kib_idle"] / 1024, m["rss_kib_20_read"] / 1024,
                          m["rss_kib_100_read"] / 1024, m["rss_kib_100_open"] / 1024)))
    for where, c in sorted(res.get("cfs_lock", {}).items()):
        other.append(("cluster storage lock, acquire+release (%s)" % where,
                      "median %.0f us, mean %.0f us (a directory, not pmxcfs)" % (
                          c["median_us"], c["mean_us"])))
    if other:
        L.append("other")
        L += ["  %-62s %s" % o for o in other]
        L.append("")
    new = new_table(res)
    if new:
        L.append(new)
    S = summary(res)
    if S:
        L.append("summary: one line per row and target (ratios within this run)")
        L += summary_lines(S)
    return "\n".join(L)


def bench_cluster(workdir, logdir, res):
    """The Proxmox cluster storage lock as vstorfs takes it (build/pvelock):
    acquire + release of /etc/pve/priv/lock/storage-<id>, uncontended, with a
    directory bind-mounted as /etc/pve in a private mount namespace (no
    pmxcfs here), once on the work directory's filesystem, once on tmpfs."""
    tool = os.path.join(REPO, "build", "pvelock")
    out = {}
    made = not os.path.isdir("/etc/pve")
    for where, base in (("workdir", workdir), ("tmpfs", "/dev/shm")):
        d = tempfile.mkdtemp(prefix="vstorfs-pve-", dir=base)
        try:
            os.makedirs(os.path.join(d, "priv", "lock"))
            os.makedirs("/etc/pve", exist_ok=True)
            p = run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                     'mount --bind "$1" /etc/pve && exec "$2" -n 2000 bench', "sh", d, tool])
            m = re.search(r"median ([\d.]+) us, mean ([\d.]+) us", p.stdout.decode())
            out[where] = {"median_us": float(m.group(1)), "mean_us": float(m.group(2))}
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if made:
        with contextlib.suppress(OSError):
            os.rmdir("/etc/pve")
    res["cfs_lock"] = out


PARTS = {"main": bench_main, "many": bench_many, "snap": bench_snap,
         "dir": bench_dir, "backup": bench_backup, "rbd": bench_rbd, "nightly": bench_nightly,
         "cluster": bench_cluster}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default=",".join(PARTS),
                    help="comma list of parts: main (seq/rand/sparse/ttfb), many, snap, "
                    "dir (file chain, internal snapshots), backup (changed-since, "
                    "incremental-backup.sh), rbd (Ceph), cluster (the Proxmox cluster lock)")
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench needs root (loop devices, LVM, FUSE)")
    if not os.access(VSTORFS, os.X_OK):
        sys.exit("build the daemon first (make)")
    workdir = tempfile.mkdtemp(prefix="vstorfs-bench-", dir=os.environ.get("VSTORFS_TMP", "/var/tmp"))
    CLEAN.dirs.append(workdir)
    logdir = os.path.join(workdir, "logs")
    os.makedirs(logdir)
    res = {"machine": {"nproc": os.cpu_count(), "kernel": os.uname().release,
                       "loadavg_at_start": os.getloadavg()},
           "runs_per_measure": RUNS, "runs_seq": SEQ_RUNS, "runs_snap": SNAP_RUNS}
    parts = args.only.split(",")
    bad = [p for p in parts if p not in PARTS]
    if bad:
        sys.exit("unknown part(s) %s; parts: %s" % (",".join(bad), ",".join(PARTS)))
    try:
        for part in PARTS:
            if part in parts:
                t = time.monotonic()
                PARTS[part](workdir, logdir, res)
                res.setdefault("part_s", {})[part] = round(time.monotonic() - t, 1)
    except BaseException:
        for f in sorted(os.listdir(logdir)) if os.path.isdir(logdir) else []:
            txt = open(os.path.join(logdir, f), errors="replace").read()[-3000:]
            if txt.strip():
                print("--- %s (tail)\n%s" % (f, txt), file=sys.stderr)
        raise
    res["total_s"] = round(time.monotonic() - T0, 1)
    res["summary"] = [{"row": n, "measured": v, "target": t, "met": ok}
                      for n, v, t, ok in summary(res)]
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    tab = table(res)
    txt = os.path.splitext(args.out)[0] + ".txt"
    with open(txt, "w") as f:
        f.write("\n".join(LOG) + "\n\n" + tab + "\n")
    print(tab)
    print("\nresults: %s, %s (total %.0f s)" % (args.out, txt, res["total_s"]))


if __name__ == "__main__":
    main()
