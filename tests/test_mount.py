"""Mounting: mount.vstorfs, mount -t vstorfs, options, errors, umount ends the daemon."""

import os
import stat
import subprocess

import pytest

from conftest import (MiB, GiB, REPO, Daemon, check_all_views, disk_path, require_daemon,
                      sanitizer_check, wait_for)

HELPER = os.path.join(REPO, "mount.vstorfs")
DISK = 8 * MiB


def small_vg(env):
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-100-disk-0.qcow2", DISK)
    v.write(0, MiB, 0x61)
    v.snapshot("s1")
    v.write(MiB // 2, MiB, 0x62)
    r = ch.raw("vm-101-disk-0", 4 * MiB, vmid=101)
    with open(r.path, "r+b") as f:
        f.write(b"raw volume" * 1000)
    ch.sync()
    return ch


def daemon_pids(mnt):
    """pids whose command line mentions the mountpoint (it is unique per test)."""
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit() or int(p) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if mnt.encode() in argv and any(b"vstorfs" in a for a in argv[:2]):
            out.append(int(p))
    return out


def need_repo_daemon():
    require_daemon()
    if not os.access(os.path.join(REPO, "vstorfs"), os.X_OK):
        pytest.skip("mount.vstorfs uses <repo>/vstorfs, which is not built")


def unmount_and_check_gone(env, mnt):
    r = subprocess.run(["umount", mnt], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert not os.path.ismount(mnt)
    assert wait_for(lambda: not daemon_pids(mnt), 15), "daemon still running after umount"


def test_mount_helper(env):
    need_repo_daemon()
    ch = small_vg(env)
    mnt = env.mountpoint("helper")
    env.mounts.append(mnt)
    r = subprocess.run([HELPER, ch.vg.name, mnt, "-o", "devices=" + ",".join(ch.vg.loops)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    sanitizer_check(r.stderr)
    assert os.path.ismount(mnt)          # mounted by the time the helper returned
    assert daemon_pids(mnt), "no daemon process serving %s" % mnt
    check_all_views(mnt, ch)
    unmount_and_check_gone(env, mnt)


def test_mount_t_vstorfs(env):
    need_repo_daemon()
    ch = small_vg(env)
    link = "/sbin/mount.vstorfs"
    created = False
    if not os.path.lexists(link):
        os.symlink(HELPER, link)
        created = True
        env.cleanups.append(lambda: os.unlink(link))
    elif os.path.realpath(link) != os.path.realpath(HELPER):
        pytest.skip("%s exists and is not this repo's helper" % link)
    mnt = env.mountpoint("mt")
    env.mounts.append(mnt)
    r = subprocess.run(["mount", "-t", "vstorfs", "-o", "ro,devices=" + ",".join(ch.vg.loops),
                        ch.vg.name, mnt], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.path.ismount(mnt)
    check_all_views(mnt, ch)
    unmount_and_check_gone(env, mnt)
    if created:
        assert os.path.islink(link)


def test_ro_option(env):
    ch = small_vg(env)
    d = env.mount(ch.vg.name, ch.vg.loops, opts=("ro",))
    check_all_views(d.mnt, ch)
    with pytest.raises(OSError):
        os.open(disk_path(d.mnt, ch.vg.name, "vm-100-disk-0.qcow2"), os.O_WRONLY)
    with open("/proc/self/mountinfo") as f:
        line = [l for l in f if " %s " % d.mnt in l]
    assert line and "ro" in line[0].split()[5].split(","), line


def test_default_owner_and_modes(env):
    ch = small_vg(env)
    d = env.mount(ch.vg.name, ch.vg.loops)
    p = disk_path(d.mnt, ch.vg.name, "vm-100-disk-0.qcow2", "s1")
    st = os.stat(p)
    assert (st.st_uid, st.st_gid) == (0, 0)
    assert stat.S_IMODE(st.st_mode) == 0o400 and stat.S_ISREG(st.st_mode)
    for dpath in (os.path.join(d.mnt, ch.vg.name), os.path.dirname(p)):
        dst = os.stat(dpath)
        assert stat.S_ISDIR(dst.st_mode) and stat.S_IMODE(dst.st_mode) == 0o500


def test_uid_gid_umask(env):
    ch = small_vg(env)
    d = env.mount(ch.vg.name, ch.vg.loops, opts=("uid=1234", "gid=2345", "umask=022"))
    vgdir = os.path.join(d.mnt, ch.vg.name)
    for root, dirs, files in os.walk(vgdir):
        st = os.stat(root)
        assert (st.st_uid, st.st_gid) == (1234, 2345), root
        assert stat.S_IMODE(st.st_mode) & 0o555 == 0o555, (root, oct(st.st_mode))
        assert stat.S_IMODE(st.st_mode) & 0o222 in (0, 0o200), (root, oct(st.st_mode))
        for f in files:
            fst = os.stat(os.path.join(root, f))
            assert (fst.st_uid, fst.st_gid) == (1234, 2345)
            assert stat.S_IMODE(fst.st_mode) & 0o444 == 0o444, oct(fst.st_mode)
            assert not stat.S_IMODE(fst.st_mode) & 0o111, oct(fst.st_mode)
    # and a user other than root, as allowed by the mode, reads the disk
    r = subprocess.run(["setpriv", "--reuid=4321", "--regid=4321", "--clear-groups",
                        "head", "-c", "10", disk_path(d.mnt, ch.vg.name, "vm-101-disk-0")],
                       capture_output=True)
    if r.returncode == 0:
        assert r.stdout == b"raw volume"
    else:
        # without allow_other FUSE refuses other users; that is fine
        assert b"ermission denied" in r.stderr, r.stderr


def test_umask_077_hides_from_others(env):
    ch = small_vg(env)
    d = env.mount(ch.vg.name, ch.vg.loops, opts=("umask=077",))
    st = os.stat(disk_path(d.mnt, ch.vg.name, "vm-100-disk-0.qcow2"))
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0


def test_nonexistent_vg(env):
    require_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    mnt = env.mountpoint("novg")
    d = Daemon("vstnosuchvg", mnt, vg.loops)
    try:
        rc = d.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        d.stop(check=False)
        pytest.fail("daemon kept running for a nonexistent VG:\n" + d.log())
    d.stopped = True
    d.log_fh.close()
    assert rc == 1, d.log()
    assert not os.path.ismount(mnt)
    assert d.log().strip(), "no error message"
    sanitizer_check(d.log())


def test_nonexistent_vg_helper(env):
    need_repo_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    mnt = env.mountpoint("novg2")
    env.mounts.append(mnt)
    r = subprocess.run([HELPER, "vstnosuchvg", mnt, "-o", "devices=" + ",".join(vg.loops)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert not os.path.ismount(mnt)
    assert r.stderr.strip()


def test_umount_ends_foreground_daemon(env):
    ch = small_vg(env)
    d = env.mount(ch.vg.name, ch.vg.loops)
    assert d.proc.poll() is None
    d.stop(check=True)          # umount, exit status 0, no sanitizer reports
    assert d.proc.returncode == 0
    assert not os.path.ismount(d.mnt)
