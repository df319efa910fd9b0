"""What every test module shares: the one daemon harness and the qemu/qcow2cat
helpers. conftest.py re-exports these names, so `from conftest import ...`
keeps working.

The harness is the only place tests start a serving vstorfs: plain mounts,
test_cluster's nodes in namespaces of their own (ns_wrap), load_run.py, the
power-loss sweeps' daemon checks. (tests/powerloss/ has its own recorder; the
mount.vstorfs tests fork the daemon through mount(8), so it is not our child.)
It fails a test when the daemon exited non-zero, died by a signal the test
did not send, or wrote a sanitizer report on stderr.
"""

import hashlib
import json
import os
import signal as signals
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
SANITIZER_MARKERS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:",
                     "LeakSanitizer")
MOUNT_TIMEOUT = 15
# Under a sanitized build a report must not look like our ordinary exit 1.
SAN_ENV = dict(os.environ, ASAN_OPTIONS="exitcode=86:detect_leaks=1",
               UBSAN_OPTIONS="exitcode=87:print_stacktrace=1:halt_on_error=1")


def daemon_path():
    return os.environ.get("VSTORFS_BIN") or os.path.join(REPO, "vstorfs")


def crash_daemon_path():
    """The crash-hook build (VSTORFS_CRASH_AT); make test-asan points it at the ASan one."""
    return os.environ.get("VSTORFS_CRASH_BIN") or os.path.join(REPO, "build-crash", "vstorfs")


def require_daemon(path=None):
    p = path or daemon_path()
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


def rss_kib(pid):
    """VmRSS of a process, KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


def in_mount_table(mnt, ns_pid=None):
    """mnt is mounted, even when dead: os.path.ismount says no for a killed FUSE daemon's
    mountpoint (stat fails with ENOTCONN), but it still needs a umount. ns_pid: look in
    that process's mount namespace instead of ours (gone with it: nothing to umount)."""
    key = " %s " % os.path.realpath(mnt)
    try:
        with open("/proc/%s/mounts" % (ns_pid or "self")) as f:
            return any(key in line for line in f)
    except OSError:
        return False


def umount_lazy(mnt, ns_pid=None):
    """umount, retried for a moment (a reader may still hold a file), then lazily;
    with ns_pid, in that process's mount namespace (nsenter)."""
    if not in_mount_table(mnt, ns_pid):
        return
    pre = ["nsenter", "-t", str(ns_pid), "-m"] if ns_pid else []
    umount = lambda *flags: subprocess.run(pre + ["umount", *flags, mnt], capture_output=True).returncode == 0
    if umount():
        return
    wait_for(umount, 3)
    if in_mount_table(mnt, ns_pid):
        umount("-l")


class Daemon:
    """One foreground vstorfs process serving one mountpoint.

    devices: the devices= option (LVM sources); None leaves it out (dir, rbd).
    opts: more -o options, a sequence or a comma-separated string.
    env: variables added to the daemon's environment (VSTORFS_CRASH_AT, ...).
    ns_wrap: an argv that puts the daemon in a mount namespace of its own and execs
    the rest of the argv there (`unshare -m ... sh -c SCRIPT sh ARGS`), so that the
    process started is the daemon. Its mount is then seen at self.view
    (/proc/PID/root/MNT) and unmounted in that namespace.
    what: the daemon's name in failure messages.
    """

    def __init__(self, source, mnt, devices=None, opts=(), rescan=1, logpath=None, binary=None,
                 env=None, ns_wrap=None, what="vstorfs"):
        self.source = source
        self.mnt = mnt
        self.what = what
        self.binary = require_daemon(binary)
        os.makedirs(mnt, exist_ok=True)
        o = []
        if devices is not None:
            o.append("devices=" + ",".join(devices))
        if rescan is not None:
            o.append("rescan=%d" % rescan)
        if isinstance(opts, str):
            opts = [x for x in opts.split(",") if x]
        o += list(opts)
        self.argv = list(ns_wrap or []) + [self.binary, source, mnt, "-f"] + (
            ["-o", ",".join(o)] if o else [])
        self.logpath = logpath or (mnt.rstrip("/") + ".stderr")
        self.log_fh = open(self.logpath, "wb")
        e = dict(os.environ)
        e.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:quarantine_size_mb=32")  # keep RSS checks meaningful
        e.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        e.update(env or {})
        self.proc = subprocess.Popen(self.argv, stdout=self.log_fh, stderr=self.log_fh,
                                     stdin=subprocess.DEVNULL, env=e)
        self.ns_pid = self.proc.pid if ns_wrap else None
        self.view = "/proc/%d/root%s" % (self.proc.pid, mnt) if ns_wrap else mnt
        # signals the test sent: dying by one of them is expected. An armed crash
        # point (VSTORFS_CRASH_AT, crash-hook build) is the test's own kill -9.
        self.sent = {signals.SIGKILL} if (env or {}).get("VSTORFS_CRASH_AT") else set()
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
            if os.path.ismount(self.view):
                self.dev = os.stat(self.view).st_dev
                return self
            if self.proc.poll() is not None:
                pytest.fail("%s exited (%d) before mounting\n%s\nstderr:\n%s" % (
                    self.what, self.proc.returncode, " ".join(self.argv), self.log()))
            time.sleep(0.05)
        pytest.fail("%s did not mount %s within %ds\n%s\nstderr:\n%s" % (
            self.what, self.view, timeout, " ".join(self.argv), self.log()))

    def alive(self):
        return self.proc.poll() is None and os.path.ismount(self.view)

    def signal(self, sig):
        """Send sig; the daemon dying by it is then no failure at stop()."""
        self.sent.add(sig)
        try:
            self.proc.send_signal(sig)
        except ProcessLookupError:
            pass

    def kill9(self):
        """kill -9 and reap; the mount is left dead (stop() unmounts it lazily)."""
        self.signal(signals.SIGKILL)
        self.proc.wait()

    def foreign_copies(self):
        """(pid, mountpoint) of mount namespaces other than ours (and the
        daemon's own, with ns_wrap) that hold a copy of this mount. `unshare -m` (test_cluster's nodes, bench, any
        other engineer's container on a shared machine) copies every mount
        that exists at that moment; the copy keeps the FUSE connection up
        after our umount, so the daemon rightly serves on and never exits."""
        dev = getattr(self, "dev", None)
        if dev is None:
            return []
        key = " %d:%d " % (os.major(dev), os.minor(dev))
        seen = {os.readlink("/proc/self/ns/mnt")}
        if self.ns_pid:
            try:
                seen.add(os.readlink("/proc/%d/ns/mnt" % self.ns_pid))
            except OSError:
                pass
        out = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                ns = os.readlink("/proc/%s/ns/mnt" % pid)
                if ns in seen:
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
            if released or os.path.ismount(self.view):
                continue
            copies = self.foreign_copies()
            for pid, path in copies:
                subprocess.run(["nsenter", "-t", str(pid), "-m", "umount", "-l", path],
                               capture_output=True)
            if copies:
                released = True
                print("vstorlib: umount of %s left copies in other mount namespaces (pid, path): %r; "
                      "unmounted them there" % (self.mnt, copies), file=sys.stderr)

    def stop(self, check=True):
        """umount, wait for the exit; with check, fail unless it exited 0 (or by a
        signal the test sent) without a sanitizer report. Returns the log."""
        if self.stopped:
            return self.log()
        self.stopped = True
        if self.ns_pid is None:
            umount_lazy(self.mnt)
        elif self.proc.poll() is None:
            # its namespace went with it (nothing else lives there); once reaped,
            # the pid may be another process's
            umount_lazy(self.mnt, self.ns_pid)
        try:
            rc = self.wait_exit(20)
        except subprocess.TimeoutExpired:
            copies = self.foreign_copies()
            self.proc.kill()
            self.proc.wait()
            self.log_fh.close()
            if check:
                pytest.fail("%s did not exit after umount (copies in other mount namespaces: %r)"
                            "\nstderr:\n%s" % (self.what, copies, self.log()))
            return self.log()
        self.log_fh.close()
        log = self.log()
        if check:
            check_exit(rc, log, self.sent, self.what)
        return log


def check_exit(rc, log, sent=(), what="vstorfs"):
    """Fail unless the daemon exited 0, or died by a signal in `sent`, without a sanitizer report."""
    sanitizer_check(log)
    if rc < 0:
        assert -rc in sent, "%s died by signal %d it was not sent\nstderr:\n%s" % (what, -rc, log)
    else:
        assert rc == 0, "%s exited %d after umount\nstderr:\n%s" % (what, rc, log)


# What the harness raises on a daemon that fails: pytest.fail, check_exit's assert.
HARNESS_FAILURES = (AssertionError, pytest.fail.Exception)


def stop_checked(daemon):
    """daemon.stop(check=True) for a caller that counts a failure instead of raising
    it (load_run.py, the power-loss sweep): None, or what was wrong."""
    try:
        daemon.stop(check=True)
    except HARNESS_FAILURES as e:
        return str(e)
    return None


def start_daemon(source, mnt, devices=None, opts=(), rescan=1, binary=None, env=None,
                 timeout=MOUNT_TIMEOUT, logpath=None):
    """A mounted Daemon; on failure to mount it is stopped (lazy umount) before the error."""
    d = Daemon(source, mnt, devices, opts=opts, rescan=rescan, binary=binary, env=env,
               logpath=logpath)
    try:
        d.wait_mounted(timeout)
    except BaseException:
        d.stop(check=False)
        raise
    return d


def stop_all(daemons):
    """Stop every daemon (newest first), checked; the first failure, or None.
    All are stopped whatever fails, so no mount outlives its test."""
    failure = None
    for d in reversed(daemons):
        try:
            d.stop(check=True)
        except BaseException as e:
            failure = failure or e
    return failure


# -- qemu and qcow2cat helpers ----------------------------------------------

def run(*cmd):
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)


def q(*args, **kw):
    """Run a command, capture both streams, raise on failure."""
    return subprocess.run([str(a) for a in args], check=True, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, **kw)


def qio(img, *cmds, fmt="qcow2"):
    """qemu-io -c CMD ... IMG."""
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    q(*(argv + [img]))


def qemu_check_json(img, fmt=None):
    """(returncode, parsed json or None, stderr) of qemu-img check."""
    argv = ["qemu-img", "check"] + (["-f", fmt] if fmt else []) + ["--output=json", str(img)]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    return p.returncode, (json.loads(p.stdout) if p.stdout.strip() else None), p.stderr


def qemu_check(img):
    """Assert qemu-img check finds neither leaks nor corruptions."""
    rc, r, err = qemu_check_json(img)
    assert rc == 0 and r is not None, (rc, r, err)
    assert r.get("leaks", 0) == 0 and r.get("corruptions", 0) == 0, r
    return r


def sha256_file(path, chunk=4 * MiB):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(chunk), b""):
            h.update(b)
    return h.hexdigest()


def sha_qemu(img, snap=None, fmt=None):
    """sha256 of qemu-img convert's raw reading of img (or its internal snapshot)."""
    out = str(img) + ".ref.raw"
    argv = ["qemu-img", "convert", "-U"]
    if fmt:
        argv += ["-f", fmt]
    if snap:
        argv += ["-l", "snapshot.name=" + snap]
    q(*(argv + ["-O", "raw", img, out]))
    try:
        return sha256_file(out)
    finally:
        os.unlink(out)


def qemu_snapshots(img):
    info = json.loads(q("qemu-img", "info", "-U", "--output=json", img).stdout)
    return [s["name"] for s in info.get("snapshots", [])]


def tool_bin(env_var, target):
    """A built tool: the path in env_var (another build, e.g. build-asan/), else make target."""
    if os.environ.get(env_var):
        return os.path.abspath(os.environ[env_var])
    subprocess.run(["make", "-s", "-C", REPO, target], check=True)
    return os.path.join(REPO, target)


@pytest.fixture(scope="session")
def cat_bin():
    """build/qcow2cat (QCOW2CAT selects another build)."""
    return tool_bin("QCOW2CAT", "build/qcow2cat")
