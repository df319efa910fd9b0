"""The long-lived lvm shell (lvm/lvm_shell.c): snapshot operations run their
lvm2 commands through one `lvm` process, and that process dying at any step
of a mkdir or rmdir fails the step the way a failed lvm2 command does."""

import errno
import os
import signal
import subprocess

import pytest

from conftest import wait_for
from test_snapshots import (CRASH_BIN, VOL, build_volume, check_consistent, copy_all_lvs,
                            expected_views, mount, mounted_views)


def children(pid):
    """(pid, comm) of the daemon's live child processes."""
    kids = []
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(k) for k in f.read().split()]
        except FileNotFoundError:
            pass
    out = []
    for k in kids:
        try:
            with open("/proc/%d/comm" % k) as f:
                out.append((k, f.read().strip()))
        except FileNotFoundError:
            pass
    return out


def shell_pid(d):
    shells = [k for k, comm in children(d.proc.pid) if comm == "lvm"]
    assert len(shells) <= 1, shells
    return shells[0] if shells else None


def snapdir(d, vg):
    return os.path.join(d.mnt, vg.name, VOL)


def test_mkdir_and_rmdir_start_no_lvm2_process(env):
    vg, ch = build_volume(env, snaps=("s1", "s2"))
    d = mount(env, vg)
    os.listdir(snapdir(d, vg))
    sh = shell_pid(d)
    assert sh, "no lvm shell among the daemon's children: %r" % children(d.proc.pid)
    trace = os.path.join(env.dir, "execve.trace")
    st = subprocess.Popen(["strace", "-f", "-e", "trace=execve", "-o", trace,
                           "-p", str(d.proc.pid)], stderr=subprocess.PIPE, text=True)
    try:
        # strace reports on stderr once it holds every thread of the daemon
        assert st.stderr.readline().startswith("strace: Process")
        os.mkdir(os.path.join(snapdir(d, vg), "new"))
        os.rmdir(os.path.join(snapdir(d, vg), "s1"))
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(30)
    with open(trace) as f:
        execs = [line for line in f if "execve(" in line]
    assert not execs, "processes started during mkdir/rmdir:\n" + "".join(execs)
    assert shell_pid(d) == sh
    assert sorted(os.listdir(snapdir(d, vg))) == ["current", "new", "s2"]
    assert check_consistent(env, vg) == mounted_views(d.mnt, vg)


def test_killed_shell_is_started_again(env):
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    os.listdir(snapdir(d, vg))
    sh = shell_pid(d)
    os.kill(sh, signal.SIGKILL)
    assert wait_for(lambda: shell_pid(d) != sh, 10)  # reaped at the next command at the latest
    os.mkdir(os.path.join(snapdir(d, vg), "new"))
    assert shell_pid(d) not in (None, sh)
    assert "lvm shell (pid %d) died" % sh in d.log()
    assert check_consistent(env, vg) == mounted_views(d.mnt, vg)


def test_fork_fallback(env, monkeypatch):
    monkeypatch.setenv("VSTORFS_LVM_SHELL", "0")
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    os.mkdir(os.path.join(snapdir(d, vg), "new"))
    os.rmdir(os.path.join(snapdir(d, vg), "s1"))
    assert shell_pid(d) is None
    assert "lvm shell started" not in d.log()
    assert check_consistent(env, vg) == mounted_views(d.mnt, vg)


# -- the shell killed at each metadata change of an operation --------------
# VSTORFS_LVM_SHELL_KILL_AT (crash-hook build): "N" kills the shell before the
# N-th lvcreate/lvchange/lvrename/lvremove reaches it, "N+" after lvm2
# committed it and before its answer is read.

# changes: lvm2 metadata commits the operation makes (vg_snapshot.c's state
# diagram); a case past the last one finds the hook never fired and skips.
OPS = {
    "mkdir": dict(snaps=("s1",), heavy=False, victim=None, changes=4),
    "rmdir-commit": dict(snaps=("s1", "s2", "s3"), heavy=False, victim="s1", changes=4),
    "rmdir-rebase": dict(snaps=("s1", "s2", "s3"), heavy=True, victim="s2", changes=3),
}
# A change lvm2 committed with its answer lost (N+) is found by a rescan
# (vg_snapshot.c rename_verified) before anything is undone.
CASES = [pytest.param(op, "%d%s" % (n, after))
         for op in OPS for n in range(1, OPS[op]["changes"] + 1) for after in ("", "+")]


@pytest.mark.parametrize("op,at", CASES)
def test_shell_killed_at_each_change(env, monkeypatch, op, at):
    logs = []
    try:
        _killed_at(env, monkeypatch, op, at, logs)
    except (AssertionError, OSError) as e:
        raise AssertionError("%s\n%s" % (e, "\n".join(d.log() for d in logs))) from e


def _killed_at(env, monkeypatch, op, at, logs):
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    spec = OPS[op]
    vg, ch = build_volume(env, snaps=spec["snaps"], commit_heavy=spec["heavy"])
    before = expected_views(vg, copy_all_lvs(vg, os.path.join(env.dir, "ref0")))
    monkeypatch.setenv("VSTORFS_LVM_SHELL_KILL_AT", at)
    d = mount(env, vg, binary=CRASH_BIN, name="killed")
    monkeypatch.delenv("VSTORFS_LVM_SHELL_KILL_AT")
    logs.append(d)
    path = os.path.join(snapdir(d, vg), spec["victim"] or "new")
    try:
        os.rmdir(path) if spec["victim"] else os.mkdir(path)
        done = True
    except OSError as e:
        assert e.errno == errno.EIO, e
        done = False
    fired = "killing pid" in d.log()
    if not fired:
        assert done, "failed with no lvm shell killed:\n" + d.log()
        pytest.skip("%s makes fewer than %s changes" % (op, at.rstrip("+")))
    # Every view the operation does not touch reads as before, in the mount
    # and as qemu reads the LVs.
    untouched = {v: h for v, h in before.items() if v != spec["victim"]}
    views = mounted_views(d.mnt, vg)
    for v, h in untouched.items():
        assert views[v] == h, "%s changed (%s killed at %s)" % (v, op, at)
    ref = expected_views(vg, copy_all_lvs(vg, os.path.join(env.dir, "ref1")))
    for v, h in untouched.items():
        if v in ref:
            assert ref[v] == h, "qemu reads %s changed (%s killed at %s)" % (v, op, at)
    # The shell is back, and the next operation works, or (a committed
    # lvcreate whose answer was lost leaves its scratch LV) says to remount.
    try:
        os.mkdir(os.path.join(snapdir(d, vg), "next"))
        made = True
    except OSError as e:
        assert e.errno == errno.EBUSY and "remount to recover it" in d.log(), e
        made = False
    assert shell_pid(d)
    d.stop()
    # A remount finishes or undoes whatever the failure left.
    d2 = mount(env, vg, name="again")
    logs.append(d2)
    if not made:
        os.mkdir(os.path.join(snapdir(d2, vg), "next"))
    views = mounted_views(d2.mnt, vg)
    assert views["next"] == before["current"]
    for v, h in untouched.items():
        assert views[v] == h
    if spec["victim"]:
        if spec["victim"] in views:
            assert not done and views[spec["victim"]] == before[spec["victim"]]
    elif done:
        assert views["new"] == before["current"]
    assert check_consistent(env, vg, "again") == views


# -- one shell per store ------------------------------------------------------

def test_each_store_has_its_own_shell(env):
    """Two VGs in one daemon: each store runs its own lvm shell, so a store
    whose shell is stopped (SIGSTOP) does not delay a mkdir on the other."""
    import threading
    import time
    from vstorlib import Daemon

    (vga, _), (vgb, _) = build_volume(env, snaps=("s1",)), build_volume(env, snaps=("s1",))
    d = Daemon("%s,%s" % (vga.name, vgb.name), env.mountpoint("two"), vga.loops + vgb.loops)
    env.daemons.append(d)
    d.wait_mounted()
    for vg in (vga, vgb):
        os.listdir(snapdir(d, vg))
    shells = [k for k, comm in children(d.proc.pid) if comm == "lvm"]
    assert len(shells) == 2, "want one lvm shell per store: %r" % children(d.proc.pid)
    # Either shell may be A's: stop each in turn; each time exactly one
    # mkdir (the other store's) finishes while the stopped shell's waits.
    for stopped in shells:
        os.kill(stopped, signal.SIGSTOP)
        try:
            blocked, free = [], []
            results = {}

            def mk(vg, name):
                try:
                    os.mkdir(os.path.join(snapdir(d, vg), name))
                    results[vg.name] = None
                except OSError as e:
                    results[vg.name] = e

            name = "n%d" % stopped
            ta = threading.Thread(target=mk, args=(vga, name))
            tb = threading.Thread(target=mk, args=(vgb, name))
            ta.start()
            tb.start()
            t0 = time.monotonic()
            while time.monotonic() - t0 < 60 and ta.is_alive() and tb.is_alive():
                time.sleep(0.05)
            for vg, t in ((vga, ta), (vgb, tb)):
                (blocked if t.is_alive() else free).append(vg)
            assert len(free) == 1 and len(blocked) == 1, \
                "with one shell stopped, one mkdir must finish and the other wait: %r" % results
            assert results[free[0].name] is None, results
            assert name in os.listdir(snapdir(d, free[0]))
        finally:
            os.kill(stopped, signal.SIGCONT)
        ta.join(60)
        tb.join(60)
        assert not ta.is_alive() and not tb.is_alive()
        assert results == {vga.name: None, vgb.name: None}, results
    assert sorted(k for k, comm in children(d.proc.pid) if comm == "lvm") == sorted(shells)
    for vg in (vga, vgb):
        assert check_consistent(env, vg, tag=vg.name) == mounted_views(d.mnt, vg)
