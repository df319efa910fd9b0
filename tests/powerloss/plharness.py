"""Harness of the power-loss sweep: run an operation on a store that lives on
the recorder, then build and check every crash state the replayer yields.

A state is built under /dev/shm (a copy of the pre-operation store with the
chosen operations applied); one whose files are byte-identical to a state
already checked is counted and skipped. Checking runs the store code on it
as a mount does (build/dirstore: dir_store_open, then recovery before the
first scan; the daemon runs the same calls), then reads the views back.
"""

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import zlib

from replay import Base, parse_log, sweep
from vstorlib import start_daemon, stop_checked   # tests/ is on sys.path: tests/conftest.py

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RECORDER = os.path.join(REPO, "build", "powerloss-recorder")
DIRSTORE = os.environ.get("DIRSTORE") or os.path.join(REPO, "build", "dirstore")
PLCHECK = os.environ.get("POWERLOSS_CHECK") or os.path.join(REPO, "build", "powerloss-check")
REGRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "regressions")
# a failing state is saved here; one that shows a real bug is moved to REGRESSIONS with its fix
FOUND = os.path.join(REPO, "build", "powerloss-found")
MiB = 1 << 20
# POWERLOSS_LONG=1: the long sweep (bigger samples, every distinct state checked)
LONG = os.environ.get("POWERLOSS_LONG") == "1"
# per crash point, random combinations when there are too many to try all
BUDGET = int(os.environ.get("POWERLOSS_STATES", "100" if LONG else "16"))
# distinct states checked per operation (spread over the log); 0: every one
CHECKED = int(os.environ.get("POWERLOSS_CHECKED", "0" if LONG else "150"))
# the next mkdir is tried on every PROBE_EVERY-th state checked (and on the last)
PROBE_EVERY = int(os.environ.get("POWERLOSS_PROBE_EVERY", "4"))
SEED = int(os.environ.get("POWERLOSS_SEED", "1"))
# every DAEMON_EVERY-th state checked is also mounted with the real daemon
DAEMON_EVERY = int(os.environ.get("POWERLOSS_DAEMON_EVERY", "50"))
DAEMON = os.environ.get("POWERLOSS_DAEMON") or os.path.join(REPO, "build", "vstorfs")


def run(*argv, check=True, **kw):
    p = subprocess.run(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    if check and p.returncode:
        raise AssertionError("%s -> %d\n%s" % (argv, p.returncode, p.stderr.decode(errors="replace")))
    return p


def qio(img, *cmds):
    argv = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        argv += ["-c", c]
    run(*(argv + [img]))


def qemu_sha(img, snap=None, size=None):
    out = img + ".pl-ref.raw"
    argv = ["qemu-img", "convert", "-U"]
    if snap:
        argv += ["-l", "snapshot.name=" + snap]
    run(*(argv + ["-O", "raw", img, out]))
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    if size is not None:
        data = data[:size]
    return view_hash(data)


def view_hash(data):
    """What plcheck prints for a view: zlib's crc32 and adler32 of its bytes."""
    return "%08x%08x" % (zlib.crc32(data), zlib.adler32(data))


def ds(*args, check=False):
    return run(DIRSTORE, *args, check=check)


def cfg_args(root, chain):
    if not chain:
        return []
    path = root.rstrip("/") + ".storage.cfg"
    with open(path, "w") as f:
        f.write("dir: local\n\tpath %s\n\tcontent images\n\tsnapshot-as-volume-chain 1\n" % root)
    return ["--cfg", path]


def listing(root, cfg, recover=True):
    p = ds(*cfg, *([] if recover else ["--no-recover"]), "ls", root)
    if p.returncode:
        return None, p.stderr.decode(errors="replace")
    out = {}
    for line in p.stdout.decode().splitlines():
        vol, view, size = line.split("\t")[:3]
        out.setdefault(vol, {})[view] = int(size)
    return out, p.stderr.decode(errors="replace")


def view_sha(root, cfg, vol, view):
    p = ds(*cfg, "--no-recover", "cat", root, vol, view)
    if p.returncode:
        return "ERR%d" % p.returncode
    return hashlib.sha256(p.stdout).hexdigest()


def qemu_check(img):
    p = run("qemu-img", "check", "--output=json", img, check=False)
    try:
        r = json.loads(p.stdout)
    except ValueError:
        return "qemu-img check %s: rc %d %s" % (img, p.returncode, p.stderr.decode(errors="replace"))
    if p.returncode or r.get("corruptions", 0) or r.get("leaks", 0):
        return "qemu-img check %s: %s" % (os.path.basename(img), {k: r.get(k) for k in
                                                                   ("corruptions", "leaks", "check-errors")})
    return None


def parse_plcheck(lines):
    """plcheck's lines of one state: (views per mount pass, files left over, qcow2 problems)."""
    passes, leftover, qcheck = {"1": {}, "2": {}}, [], {}
    for line in lines:
        f = line.split("\t")
        if f[0] in ("1", "2"):
            passes[f[0]][f[1]] = f[3]
        elif f[0] == "L":
            leftover.append(f[1])
        elif f[0] == "Q":
            bad = f[2] != "0" or f[3] != "0" or f[4] != "0"
            qcheck[f[1]] = "corruptions %s leaks %s check-errors %s %s" % tuple(f[2:6]) if bad else None
    return passes, leftover, qcheck


class Plcheck:
    """One plcheck --batch process: recovers and checks state after state."""

    def __init__(self, vol):
        self.proc = subprocess.Popen([PLCHECK, "--batch", vol], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def check(self, root, cfg):
        """plcheck's parsed lines for the state at root, or an error string."""
        self.proc.stdin.write("%s\t%s\n" % (root, cfg))
        self.proc.stdin.flush()
        lines, errs = [], []
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("END\t"):
                if line != "END\t0":
                    return "recovery or reading fails: " + " ".join(errs)[-400:]
                return parse_plcheck(lines)
            (errs if line.startswith("E\t") else lines).append(line)
        raise AssertionError("plcheck exited %s" % self.proc.poll())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class Recorder:
    def __init__(self, backing, mnt, logpath):
        os.makedirs(mnt, exist_ok=True)
        self.mnt = mnt
        self.proc = subprocess.Popen([RECORDER, backing, mnt, logpath], stdout=subprocess.DEVNULL,
                                     stderr=open(logpath + ".stderr", "wb"))
        for _ in range(200):
            if os.path.ismount(mnt):
                return
            if self.proc.poll() is not None:
                raise AssertionError("recorder exited %d" % self.proc.returncode)
            time.sleep(0.02)     # polling for the mount, not a timing assumption
        raise AssertionError("recorder did not mount")

    def stop(self):
        subprocess.run(["umount", self.mnt], capture_output=True)
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        self.proc.wait(timeout=30)


class DirCase:
    """One snapshot operation on a one-volume directory store.

    setup(root) builds the store (on a plain directory), op is the dirstore
    argv tail run on the recorder's mount, keep the views (name -> sha of
    qemu's reading) that must survive unchanged, victim the view taken or
    removed and the sha it must have if it is there at all."""

    def __init__(self, name, work, voldir, vol, chain):
        self.name, self.work, self.voldir, self.vol, self.chain = name, work, voldir, vol, chain
        self.backing = os.path.join(work, "backing")
        self.state = os.path.join(work, "state")
        os.makedirs(os.path.join(self.backing, voldir))
        self.stats = dict(tried=0, unique=0, checked=0, failures=0, crash_points=0)
        self.failures = []

    def img(self, root=None):
        return os.path.join(root or self.backing, self.voldir, self.vol)

    def record(self, op, keep, victim, victim_sha, present_after):
        """Run op (mkdir|rmdir SNAP) on the store through the recorder; return the log."""
        self.keep, self.victim, self.victim_sha = keep, victim, victim_sha
        self.present_after = present_after
        self.base = Base(self.backing)
        mnt = os.path.join(self.work, "mnt")
        logpath = os.path.join(self.work, "ops.log")
        r = Recorder(self.backing, mnt, logpath)
        try:
            p = ds(*cfg_args(mnt, self.chain), op[0], mnt, self.vol, op[1])
        finally:
            r.stop()
        assert p.returncode == 0, p.stderr.decode()
        self.ops = parse_log(logpath)
        # the operation's own outcome is the last crash state: check it the same way
        return self.ops

    def judge(self, passes, leftover, qcheck):
        """None when what recovery left (views read in two mounts, files left
        over, qcow2 checks) is what the operation allows, else what is wrong."""
        views = passes["1"]
        if passes["2"] != views:
            return "a second mount reads differently: %s / %s" % (views, passes["2"])
        if leftover:
            return "left over after recovery: %s" % leftover
        for v, h in self.keep.items():
            if v not in views:
                return "view %s gone" % v
            if views[v] != h:
                return "view %s reads differently (%s)" % (v, views[v])
        extra = set(views) - set(self.keep) - {self.victim}
        if extra:
            return "unexpected views %s" % sorted(extra)
        if self.victim in views and views[self.victim] != self.victim_sha:
            return "view %s half there (%s)" % (self.victim, views[self.victim])
        for f, e in sorted(qcheck.items()):
            if e:
                return "qcow2 check %s: %s" % (f, e)
        return None

    def check(self, root, probe=True):
        """The cheap check, one process per state (kept states; the sweep batches it)."""
        cfg = cfg_args(root, self.chain)
        p = run(PLCHECK, *cfg, root, self.vol, check=False)
        if p.returncode:
            return "recovery or reading fails: " + p.stderr.decode(errors="replace")[-400:]
        err = self.judge(*parse_plcheck(p.stdout.decode().splitlines()))
        if err is None and probe:
            # nothing is left that the next mkdir trips on
            p = ds(*cfg, "--no-recover", "mkdir", root, self.vol, "plnext")
            if p.returncode:
                return "next mkdir fails %d: %s" % (p.returncode, p.stderr.decode(errors="replace"))
        return err

    def daemon_check(self, root):
        """The daemon's path on one state: vstorfs mounts it (recovery runs), every
        view is read through FUSE, the next mkdir is made there; then, unmounted,
        `qemu-img check` on every qcow2 file and a second mount reads the same."""
        views = {}
        for n in (1, 2):
            mnt = os.path.join(self.work, "dmnt")
            m = start_daemon(root, mnt, rescan=60, binary=DAEMON)   # recovery runs at mount
            try:
                vol = os.path.join(mnt, os.path.basename(root.rstrip("/")), self.vol)
                got = {}
                for v in sorted(os.listdir(vol)):
                    with open(os.path.join(vol, v, "disk.raw"), "rb") as f:
                        got[v] = view_hash(f.read())
                if n == 2:
                    os.mkdir(os.path.join(vol, "plnext"))
            except OSError as e:
                return "daemon: %s" % e
            finally:
                err = stop_checked(m)
            if err:
                return "daemon: %s ... %s" % (err.splitlines()[0], m.log()[-400:])
            if n == 1:
                views = got
                for dp, dn, fn in os.walk(root):
                    for f in fn:
                        if f.startswith((".vstorfs-intent-", ".vstorfs-new-")) or f.endswith(".part"):
                            return "daemon: left over after recovery: " + f
                        if f.endswith(".qcow2"):
                            e = qemu_check(os.path.join(dp, f))
                            if e:
                                return "daemon: " + e
            elif got != views:
                return "daemon: a second mount reads differently: %s / %s" % (views, got)
        err = self.judge({"1": views, "2": views}, None, {})
        return "daemon: " + err if err else None

    def run_sweep(self, budget=BUDGET, seed=SEED, limit_fail=3, max_checked=None):
        """Build and hash every state; check the distinct ones (at most max_checked,
        spread evenly over the log, first and last included; 0 = all) with the
        cheap check (one plcheck process for the sweep), and with the daemon
        every DAEMON_EVERY-th of them, the last, and every one the cheap check flags."""
        max_checked = CHECKED if max_checked is None else max_checked
        seen, cache, uniq, points = set(), {}, [], set()
        keys = set()
        for log, st in sweep(self.ops, budget, seed):
            self.stats["tried"] += 1
            points.add(st.label.split()[0])
            # the same landed operations make the same bytes: only a new set is built
            key, _ = log.build(self.base, st, None, cache, exact=False)
            if key in keys:
                continue
            keys.add(key)
            digest, _ = log.build(self.base, st, None, cache)
            if len(cache) > 64:
                cache.clear()
            if digest not in seen:
                seen.add(digest)
                uniq.append((log, st, digest))
        self.stats["unique"] = len(uniq)
        self.stats["crash_points"] = len(points)
        self.stats["daemon_checked"] = 0
        k = len(uniq) if not max_checked else min(max_checked, len(uniq))
        pick = sorted({(i * (len(uniq) - 1)) // max(1, k - 1) for i in range(k)}) if k > 1 else list(range(k))
        cfg = cfg_args(self.state, self.chain)
        checker = Plcheck(self.vol)
        cache = {}
        try:
            for n, i in enumerate(pick):
                log, st, digest = uniq[i]
                log.build(self.base, st, self.state, cache)
                if len(cache) > 64:
                    cache.clear()
                err = checker.check(self.state, cfg[1] if cfg else "")
                err = self.judge(*err) if isinstance(err, tuple) else err
                self.stats["checked"] += 1
                if err or n % DAEMON_EVERY == 0 or n == len(pick) - 1:
                    log.build(self.base, st, self.state, cache)
                    derr = self.daemon_check(self.state)
                    self.stats["daemon_checked"] += 1
                    err = "; ".join(e for e in (err, derr) if e) or None
                if err:
                    self.stats["failures"] += 1
                    self.failures.append((st.label, err))
                    if len(self.failures) <= limit_fail:
                        log.build(self.base, st, self.state, cache)
                        self.keep_regression(digest, st.label, err)
        finally:
            checker.close()
        return self.stats

    def expect(self):
        return dict(name=self.name, voldir=self.voldir, vol=self.vol, chain=self.chain, keep=self.keep,
                    victim=self.victim, victim_sha=self.victim_sha)

    def keep_regression(self, digest, label, err):
        """Save a failing crash state (pre-recovery) as build/powerloss-found/<case>-<hash>.tar.gz."""
        os.makedirs(FOUND, exist_ok=True)
        path = os.path.join(FOUND, "%s-%s.tar.gz" % (self.name, digest[:12]))
        meta = self.expect()
        meta.update(label=label, error=err)
        pack_state(self.state, meta, path)


def pack_state(state, meta, path):
    """A crash state and what checking it needs, kept as one tar.gz (unpack_state)."""
    with open(os.path.join(state, ".powerloss.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with tarfile.open(path, "w:gz") as t:
        t.add(state, arcname="state")
    os.unlink(os.path.join(state, ".powerloss.json"))


def unpack_state(path, work):
    """A kept crash state unpacked under work: (its root, what was recorded with it)."""
    with tarfile.open(path) as t:
        t.extractall(work)
    root = os.path.join(work, "state")
    with open(os.path.join(root, ".powerloss.json")) as f:
        meta = json.load(f)
    os.unlink(os.path.join(root, ".powerloss.json"))
    return root, meta


def check_regression(path, work):
    """Re-check a kept crash state: what the sweep found, fixed, stays fixed."""
    root, meta = unpack_state(path, work)
    c = DirCase.__new__(DirCase)
    c.name, c.work, c.voldir, c.vol, c.chain = meta["name"], work, meta["voldir"], meta["vol"], meta["chain"]
    c.keep, c.victim, c.victim_sha = meta["keep"], meta["victim"], meta["victim_sha"]
    return meta, c.check(root)


def fresh_work(name):
    w = os.path.join("/dev/shm", "vstorfs-powerloss-%d" % os.getpid(), name)
    if os.path.exists(w):
        shutil.rmtree(w)
    os.makedirs(w)
    return w
