"""The power-loss sweep of an LVM store: the PV's backing file lives on the
recorder and a loop device over it is what lvm2 and vstorfs write, so
lvm2's metadata commits and vstorfs's extent writes reach the log as
writes and flushes in the order the device saw them (a flush of the loop
device is an fsync of its backing file: FUSE_FSYNC in the log).

A crash state is the PV file with every write up to a flush and a subset of
the writes after it (replay.py, one file = one device). Every distinct
state picked gets the cheap check (CheapLvm: one loop device for the whole
sweep, its backing file rewritten in place, `powerloss-check --lvm` running
the LVM store's own recovery in one process); every FULL_EVERY-th, the last
and every one the cheap check flags is also put under a fresh loop device
and mounted with the daemon (read-write, so recovery runs).
"""

import os
import shutil
import subprocess
import time

import pytest

from conftest import Daemon
import lvmlib
import test_snapshots as ts
from plharness import PLCHECK, Recorder, REPO, pack_state, parse_plcheck, unpack_state, view_hash
from replay import Base, R_FALLOC, R_TRUNC, R_WRITE, parse_log, sweep

MiB = 1 << 20
VOL = ts.VOL
DISK = 8 * MiB
DAEMON = os.environ.get("POWERLOSS_DAEMON") or os.path.join(REPO, "build", "vstorfs")
# every FULL_EVERY-th state checked also gets the daemon's check (LvmCase.check)
FULL_EVERY = int(os.environ.get("POWERLOSS_DAEMON_EVERY", "50"))
# what check() says of a state whose lvm2 metadata commit is torn (lvm2 cannot read it)
LVM2_TORN = "lvm2 torn"


def flush_loop(loop):
    subprocess.run(["blockdev", "--flushbufs", loop], check=True)
    os.sync()


class StateVG(lvmlib.VG):
    """A VG object over an already attached loop device (no create, no remove)."""

    def __init__(self, name, loop):
        self.workdir, self.name, self.files, self.loops = None, name, [], [loop]
        self.created, self._layout = False, None


def build_chain(vg, work, snaps, heavy):
    ch = lvmlib.Chain(vg, work)
    # heavy: every layer holds less than the one above it, so the merge
    # chooses rebase at every position; for the oldest snapshot that needs a
    # base holding less than the 256 KiB written above it (no preallocated
    # clusters: a rebase would copy each of them)
    v = ch.qcow2(VOL, DISK, opts="cluster_size=65536") if heavy else ch.qcow2(VOL, DISK)
    v.write(0, 128 * 1024 if heavy else 2 * MiB, 0x10)
    for i, s in enumerate(snaps):
        v.snapshot(s)
        n = (i + 1) * 256 * 1024 if heavy else 256 * 1024 // (i + 1)
        v.write((i * 2 + 1) * MiB + 4096 * i + 512, n, 0x20 + i)
        for k in range(6):
            v.write(k * 1300 * 1024 + 8192 * i, 4096, 0x40 + i)
    ch.sync()
    return ch


def expected_crcs(vg, refdir, vol=VOL):
    """{view: what plcheck prints for it} for the volume, by qemu's reading."""
    out = {}
    pre = "snap_%s_" % vol[:-len(".qcow2")]
    tops = {"current": vol}
    for lv in vg.lv_names():
        if lv.startswith(pre) and lv.endswith(".qcow2"):
            tops[lv[len(pre):-len(".qcow2")]] = lv
    raw = os.path.join(refdir, "view.raw")
    for v, top in tops.items():
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, raw], cwd=refdir, check=True)
        with open(raw, "rb") as f:
            out[v] = view_hash(f.read())
        os.unlink(raw)
    return out


class CheapLvm:
    """The cheap check of LVM crash states: one state file under one loop device
    for the whole sweep, rewritten in place (base bytes, then the landed writes),
    and one `powerloss-check --lvm` process that drops the loop device's cache
    and runs what a mount does (lvm_store_open, recovery, scan, every view read
    through the chain code, twice), then the intent tags, qcow2_check on every
    qcow2 LV, vgck and the next mkdir, lvm2 going through its one lvm shell."""

    def __init__(self, case, base):
        self.case = case
        path, _ = base
        with open(path, "rb") as f:
            self.base = f.read()
        self.file = os.path.join(case.work, "cheap.img")
        with open(self.file, "wb") as f:
            f.write(self.base)
        self.loop = subprocess.run(["losetup", "-f", "--show", self.file], check=True,
                                   capture_output=True).stdout.decode().strip()
        self.vg = StateVG(case.vg.name, self.loop)
        self.proc = subprocess.Popen([PLCHECK, "--lvm", case.vg.name, self.loop, VOL], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.n = 0

    def write_state(self, log, st):
        with open(self.file, "r+b") as f:
            fd = f.fileno()
            os.pwrite(fd, self.base, 0)
            for o in log.ops:
                if o.type == R_WRITE and (o.i in st.data or (st.torn and st.torn[0] == o.i)):
                    spans = st.torn[1] if st.torn and st.torn[0] == o.i else ((0, o.len),)
                    for a, b in spans:
                        os.pwrite(fd, o.data[a:b], o.off + a)
            os.fsync(fd)

    def check(self, log, st):
        """None when the state is fine, LVM2_TORN, or what is wrong."""
        self.write_state(log, st)
        self.n += 1
        if self.n % 100 == 0:
            drop_lvm_archives(self.vg.name)
        self.proc.stdin.write("%s\n" % st.label)
        self.proc.stdin.flush()
        lines, errs = [], []
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("END\t"):
                break
            (errs if line.startswith("E\t") else lines).append(line)
        else:
            raise AssertionError("powerloss-check exited %s" % self.proc.poll())
        if line != "END\t0":
            if self.case.lvm2_torn(self.vg):
                return LVM2_TORN
            return "recovery or reading fails: " + " ".join(errs)[-400:]
        passes, _, qcheck = parse_plcheck(lines)
        if passes["1"] != passes["2"]:
            return "second mount reads differently: %s / %s" % (passes["1"], passes["2"])
        views = passes["1"]
        c = self.case
        err = views_wrong(views, c.keep_crc, c.victims_crc)
        if err:
            return err
        bad = {f: e for f, e in qcheck.items() if e}
        if bad:
            return "qcow2 check: %s" % bad
        for line in lines:
            f = line.split("\t")
            if f[0] == "T":
                return "%s keeps tag %s" % (f[1], f[2])
            if f[0] == "K" and f[1] != "0":
                return "vgck: %s" % f[1]
            if f[0] == "N" and f[1] != "0":
                return "next mkdir: %s" % f[1]
        return None

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)


def drop_lvm_archives(vg):
    for f in lvmlib.glob.glob("/etc/lvm/archive/%s_*.vg" % vg) + ["/etc/lvm/backup/" + vg]:
        if os.path.exists(f):
            os.unlink(f)


def views_wrong(views, keep, victims):
    """None when every kept view reads as before, no view is unexpected, and
    each victim (taken or removed) is whole or absent; else what is wrong."""
    for v, h in keep.items():
        if views.get(v) != h:
            return "view %s %s" % (v, "gone" if v not in views else "reads differently")
    extra = set(views) - set(keep) - set(victims)
    if extra:
        return "unexpected views %s" % sorted(extra)
    for v, h in victims.items():
        if v in views and views[v] != h:
            return "view %s half there" % v
    return None


def views_of(mnt, vg):
    d = os.path.join(mnt, vg.name, VOL)
    return {v: lvmlib.sha256_file(os.path.join(d, v, "disk.raw")) for v in os.listdir(d)}


class LvmCase:
    def __init__(self, name, work, direct_io=False):
        self.name, self.work, self.direct_io = name, work, direct_io
        self.backing = os.path.join(work, "backing")
        os.makedirs(self.backing)
        self.rec = Recorder(self.backing, os.path.join(work, "rec"), os.path.join(work, "ops.log"))
        self.vg = lvmlib.VG(os.path.join(work, "rec"), pv_size=40 * MiB, extent_size="1m")
        if direct_io:
            subprocess.run(["losetup", "--direct-io=on", self.vg.loops[0]], check=True)
        self.stats = dict(tried=0, unique=0, checked=0, failures=0)
        self.failures, self.torn_labels = [], []

    def record(self, op, snaps, victim, heavy):
        return self.record_ops([(op, victim)], snaps, heavy)

    def record_ops(self, steps, snaps, heavy):
        """Run steps [(mkdir|rmdir, view)] in one mount; one log for all of them."""
        build_chain(self.vg, self.work, snaps, heavy)
        flush_loop(self.vg.loops[0])
        ref = ts.copy_all_lvs(self.vg, os.path.join(self.work, "ref0"))
        before = ts.expected_views(self.vg, ref)
        crcs = expected_crcs(self.vg, ref)
        self.base = Base(self.backing)
        start = os.path.getsize(os.path.join(self.work, "ops.log"))
        d = Daemon(self.vg.name, os.path.join(self.work, "m0"), self.vg.loops, binary=DAEMON)
        d.wait_mounted()
        try:
            for op, view in steps:
                path = os.path.join(d.mnt, self.vg.name, VOL, view)
                os.mkdir(path) if op == "mkdir" else os.rmdir(path)
        finally:
            d.stop()
        self.daemon_log = d.log()
        flush_loop(self.vg.loops[0])
        self.ops = parse_log(os.path.join(self.work, "ops.log"), start)
        # views taken or removed: whole or absent; every other one unchanged
        self.victims, self.victims_crc = {}, {}
        for op, view in steps:
            self.victims[view] = before["current"] if op == "mkdir" else before.pop(view)
            self.victims_crc[view] = crcs["current"] if op == "mkdir" else crcs.pop(view)
        self.keep, self.keep_crc = before, crcs
        return self.ops

    def close(self):
        for loop in self.vg.loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        self.vg.loops = []
        self.vg.created = False
        self.rec.stop()
        drop_lvm_archives(self.vg.name)

    def check(self, root):
        """None when the state at root is fine, else what is wrong: the state's
        PV file under a fresh loop device, mounted with the daemon (recovery
        runs), every view read, vgck, no intent tag left, every LV's bytes
        copied for `qemu-img check`, a second mount that reads the same and
        makes the next mkdir."""
        img = [os.path.join(root, f) for f in os.listdir(root) if f.endswith(".img")][0]
        loop = subprocess.run(["losetup", "-f", "--show", img], check=True,
                              capture_output=True).stdout.decode().strip()
        vg = StateVG(self.vg.name, loop)
        try:
            return self._check(vg)
        finally:
            subprocess.run(["losetup", "-d", loop], capture_output=True)

    def _mount(self, vg, tag):
        d = Daemon(vg.name, os.path.join(self.work, "m-" + tag), vg.loops, binary=DAEMON)
        while not os.path.ismount(d.mnt) and d.proc.poll() is None:
            time.sleep(0.005)     # polling for the mount, not a timing assumption
        d.wait_mounted()
        return d

    def lvm2_torn(self, vg):
        """lvm2's own reading of the state, when it finds its metadata torn: lvm2
        writes a commit's text and header with no flush between, so a device that
        reorders them leaves a VG that lvm2 itself cannot read."""
        p = vg.lvm("vgs", vg.name, check=False)
        e = p.stderr.decode(errors="replace")
        return "Checksum error" in e or "invalid metadata text" in e

    def _check(self, vg):
        try:
            d = self._mount(vg, "a")
        except pytest.fail.Exception as e:
            if self.lvm2_torn(vg):
                return LVM2_TORN
            return "mount: %s" % str(e)[-300:]
        try:
            views = views_of(d.mnt, vg)
        except OSError as e:
            return "reading views: %s" % e
        finally:
            d.stop(check=False)
        err = views_wrong(views, self.keep, self.victims)
        if err:
            return err
        p = vg.lvm("vgck", vg.name, check=False)
        if p.returncode:
            return "vgck: " + p.stderr.decode(errors="replace")
        for lv, tags in ts.lv_tags(vg).items():
            intents = [t for t in tags if t.startswith("vstorfs-") and not t.startswith("vstorfs-view=")]
            if intents:
                return "%s keeps tags %s" % (lv, intents)
        ref = ts.copy_all_lvs(vg, os.path.join(self.work, "ref-state"))
        for f in sorted(os.listdir(ref)):
            if f.endswith(".qcow2"):
                r = subprocess.run(["qemu-img", "check", "-f", "qcow2", f], cwd=ref, capture_output=True, text=True)
                if r.returncode or "leaked" in r.stdout:
                    return "qemu-img check %s: %s" % (f, r.stdout[-300:])
        # a second mount reads the same, and the next mkdir does not trip
        d = self._mount(vg, "b")
        try:
            if views_of(d.mnt, vg) != views:
                return "second mount reads differently"
            os.mkdir(os.path.join(d.mnt, vg.name, VOL, "plnext"))
        except OSError as e:
            return "next mkdir: %s" % e
        finally:
            d.stop(check=False)
        return None

    def split_states(self, log):
        """Per crash point: every pending extent write landed and no pending lvm2
        metadata write (the metadata area is the PV's first MiB), and the converse."""
        from replay import State
        out = []
        for c in log.crash_points():
            data, ns = log.pending(c)
            durable = {o.i for o in log.ops[:c] if o.type in (1, 2, 3)} - set(data)
            meta = {d for d in data if log.ops[d].off < MiB}
            ext = set(data) - meta
            if meta and ext:
                out.append(State("c%d extents-only" % c, ns[-1], durable | ext))
                out.append(State("c%d metadata-only" % c, ns[-1], durable | meta))
        self.mixed = len(out) // 2
        # and the end: everything pending at the last flush lost, then all of it landed
        c = log.flushes[-1] if log.flushes else len(log.ops)
        data, ns = log.pending(c)
        durable = {o.i for o in log.ops[:c] if o.type in (1, 2, 3)} - set(data)
        out.append(State("c%d none" % c, ns[0], durable))
        c = len(log.ops)
        data, ns = log.pending(c)
        durable = {o.i for o in log.ops[:c] if o.type in (1, 2, 3)} - set(data)
        out.append(State("end all", ns[-1], durable | set(data)))
        return out

    def run_split(self):
        """Check every split state (see split_states)."""
        from replay import Log
        log = Log(self.ops)
        state = os.path.join(self.work, "state")
        for st in self.split_states(log):
            self.stats["tried"] += 1
            self.stats["unique"] += 1
            log.build(self.base, st, state, {})
            err = self.check(state)
            self.stats["checked"] += 1
            self.stats["full_checked"] = self.stats.get("full_checked", 0) + 1
            self.count(log, st, state, err)
        return self.stats

    def count(self, log, st, state, err):
        if err == LVM2_TORN:
            self.stats["lvm2_torn"] = self.stats.get("lvm2_torn", 0) + 1
            self.torn_labels.append(st.label)
        elif err:
            self.stats["failures"] += 1
            self.failures.append((st.label, err))
            if len(self.failures) <= 3:
                log.build(self.base, st, state, {})
                self.keep_regression(state, st.label, err)

    def keep_regression(self, state, label, err):
        """Save a failing state (the PV file before recovery) as build/powerloss-found/<case>-<n>.tar.gz."""
        from plharness import FOUND
        os.makedirs(FOUND, exist_ok=True)
        meta = dict(name=self.name, vg=self.vg.name, keep=self.keep, victims=self.victims, label=label,
                    error=err)
        pack_state(state, meta, os.path.join(FOUND, "lvm-%s-%d.tar.gz" % (self.name, len(self.failures))))

    def base_file(self):
        """The PV file as it was before the operation, written once."""
        [(name, (kind, ino))] = [(n, v) for n, v in self.base.names.items() if n.endswith(".img")]
        path = os.path.join(self.work, "base-" + os.path.basename(name))
        with open(path, "wb") as f:
            f.write(self.base.content[ino])
        return path, name

    def materialize(self, log, st, base, state):
        """State st as a PV file under state: a copy of the base with the writes
        that landed applied in log order (a torn one: only its landed spans)."""
        path, name = base
        os.makedirs(state, exist_ok=True)
        for f in os.listdir(state):
            os.unlink(os.path.join(state, f))
        dest = os.path.join(state, name)
        shutil.copyfile(path, dest)
        with open(dest, "r+b") as f:
            fd = f.fileno()
            for o in log.ops:
                if o.type == R_WRITE and (o.i in st.data or (st.torn and st.torn[0] == o.i)):
                    spans = st.torn[1] if st.torn and st.torn[0] == o.i else ((0, o.len),)
                    for a, b in spans:
                        os.pwrite(fd, o.data[a:b], o.off + a)
                elif o.type in (R_TRUNC, R_FALLOC) and o.i in st.data:
                    raise AssertionError("a PV file is not truncated or fallocated: %r" % o)

    def run_sweep(self, budget, seed, max_unique):
        """Every state is built and hashed; of the distinct ones, max_unique spread
        evenly over the log (first and last included) get the cheap check, and
        every FULL_EVERY-th, the last and every flagged one the daemon's."""
        seen, cache, uniq = set(), {}, []
        for log, st in sweep(self.ops, budget, seed):
            self.stats["tried"] += 1
            digest, _ = log.build(self.base, st, None, cache, exact=False)
            if len(cache) > 4:
                cache.clear()
            if digest not in seen:
                seen.add(digest)
                uniq.append((log, st))
        self.stats["unique"] = len(uniq)
        k = min(max_unique, len(uniq))
        pick = sorted({(i * (len(uniq) - 1)) // max(1, k - 1) for i in range(k)}) if k > 1 else list(range(k))
        state = os.path.join(self.work, "state")
        self.stats.setdefault("full_checked", 0)
        self.stats.setdefault("lvm2_torn", 0)
        base = self.base_file()
        cheap = CheapLvm(self, base)
        try:
            for n, i in enumerate(pick):
                log, st = uniq[i]
                err = cheap.check(log, st)
                # a torn lvm2 commit cannot be mounted either: nothing more to see
                full = err != LVM2_TORN and (bool(err) or n % FULL_EVERY == 0 or n == len(pick) - 1)
                if full:
                    self.materialize(log, st, base, state)
                    derr = self.check(state)
                    if err:
                        err = "cheap check: %s; daemon: %s" % (err, derr or "fine")
                    elif derr:
                        err = "daemon: %s" % derr
                self.stats["checked"] += 1
                self.stats["full_checked"] += full
                self.count(log, st, state, err)
        finally:
            cheap.close()
        return self.stats


def check_regression(path, work):
    """Re-check a kept LVM crash state: attach its PV file, mount, check."""
    root, meta = unpack_state(path, work)
    c = LvmCase.__new__(LvmCase)
    c.name, c.work, c.keep, c.victims = meta["name"], work, meta["keep"], meta["victims"]
    c.vg = StateVG(meta["vg"], None)
    err = c.check(root)
    for f in lvmlib.glob.glob("/etc/lvm/archive/%s_*.vg" % meta["vg"]) + ["/etc/lvm/backup/" + meta["vg"]]:
        if os.path.exists(f):
            os.unlink(f)
    return meta, err
