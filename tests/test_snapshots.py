"""mkdir takes a snapshot and rmdir deletes one, as Proxmox VE 9 does; nothing
is lost when the daemon is killed at any step.

Every check reads the LVs back from the PV extents and lets qemu follow the
backing strings actually stored in them."""

import errno
import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import MiB, GiB, Daemon, disk_path, require_daemon, run, sha256_file, wait_for
import lvmlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISK = 32 * MiB
VOL = "vm-100-disk-0.qcow2"
# make test-asan points this at a sanitized crash-hook build (build-crash-asan).
CRASH_BIN = os.environ.get("VSTORFS_CRASH_BIN") or os.path.join(REPO, "build-crash", "vstorfs")


# -- helpers -------------------------------------------------------------

def lv_tags(vg):
    vg._layout = None
    rows = vg.lvm_json("lvs", "-o", "lv_name,lv_tags", vg.name)["lv"]
    return {r["lv_name"]: [t for t in r["lv_tags"].split(",") if t] for r in rows}


def copy_all_lvs(vg, dst):
    """Every LV's bytes, read from the PV extents, as files named like the LVs."""
    vg._layout = None
    if os.path.isdir(dst):
        shutil.rmtree(dst)
    os.makedirs(dst)
    for lv in vg.lv_names():
        vg.copy_lv_to_file(lv, os.path.join(dst, lv))
    return dst


def qemu_view_sha(refdir, top):
    """sha256 of what qemu reads for the chain starting at LV `top`."""
    out = os.path.join(refdir, "view.raw")
    run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, out], cwd=refdir)
    h = sha256_file(out)
    os.unlink(out)
    return h


def qemu_check_all(refdir):
    for f in sorted(os.listdir(refdir)):
        if f.endswith(".qcow2"):
            r = subprocess.run(["qemu-img", "check", "-f", "qcow2", f], cwd=refdir,
                               capture_output=True, text=True)
            assert r.returncode == 0, "qemu-img check %s:\n%s%s" % (f, r.stdout, r.stderr)
            assert "leaked" not in r.stdout, "qemu-img check %s: %s" % (f, r.stdout)


def snap_lv(snap, vol=VOL):
    return "snap_%s_%s.qcow2" % (vol[:-len(".qcow2")], snap)


def expected_views(vg, refdir, vol=VOL):
    """{view: sha} for the volume, by qemu following the stored backing strings."""
    views = {"current": qemu_view_sha(refdir, vol)}
    pre = "snap_%s_" % vol[:-len(".qcow2")]
    for lv in vg.lv_names():
        if lv.startswith(pre) and lv.endswith(".qcow2"):
            views[lv[len(pre):-len(".qcow2")]] = qemu_view_sha(refdir, lv)
    return views


def mounted_views(mnt, vg, vol=VOL):
    d = os.path.join(mnt, vg.name, vol)
    return {v: sha256_file(os.path.join(d, v, "disk.raw")) for v in os.listdir(d)}


def build_volume(env, snaps=("s1", "s2", "s3"), commit_heavy=False):
    """A Proxmox chain: base + one overlay per snapshot, data in every layer.

    commit_heavy: the newest layers carry more data than the older ones
    (rmdir of an old snapshot then prefers rebase), else the reverse."""
    vg = env.vg(npvs=1, pv_size=2 * GiB)
    ch = env.chain(vg)
    v = ch.qcow2(VOL, DISK)
    v.write(0, 8 * MiB, 0x10)
    v.write(20 * MiB, 3 * MiB, 0x11)
    for i, s in enumerate(snaps):
        v.snapshot(s)
        n = (i + 1) * MiB if commit_heavy else MiB // (i + 1)
        v.write((i * 5 + 2) * MiB + 4096 * i + 512, n, 0x20 + i)
        v.io("write -z %d 65536" % ((i + 1) * 3 * MiB))          # zero over older data
        v.write(DISK - 8192 * (i + 1), 1000, 0x30 + i)          # partial subcluster
    ch.sync()
    return vg, ch


def mount(env, vg, opts=(), binary=None, envvars=None, name="mnt"):
    mnt = env.mountpoint(name)
    d = Daemon(vg.name, mnt, vg.loops, opts=opts, binary=binary, env=envvars)
    env.daemons.append(d)
    d.wait_mounted()
    return d


def check_consistent(env, vg, tag="after"):
    """Mounted views == qemu's views of the LVs; images clean; no intent tags left
    (vstorfs-view= is not an intent: a snapshot's identity, kept across merges)."""
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref-" + tag))
    qemu_check_all(refdir)
    exp = expected_views(vg, refdir)
    for lv, tags in lv_tags(vg).items():
        intents = [t for t in tags if t.startswith("vstorfs-") and not t.startswith("vstorfs-view=")]
        assert not intents, "%s keeps tags %s" % (lv, tags)
    return exp


# -- mkdir ------------------------------------------------------------------

def test_mkdir_takes_a_proxmox_snapshot(env):
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    os.mkdir(os.path.join(d.mnt, vg.name, VOL, "before-upgrade"))
    after = mounted_views(d.mnt, vg)
    assert after["before-upgrade"] == before["current"]
    assert after["current"] == before["current"]
    assert after["s1"] == before["s1"]

    # LVs, tags and image options exactly as Proxmox makes them
    tags = lv_tags(vg)
    assert snap_lv("before-upgrade") in tags
    assert set(tags[VOL]) == {"pve-vm-100", "pve-" + VOL}
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref"))
    info = json.loads(run(["qemu-img", "info", "--output=json", VOL], cwd=refdir).stdout)
    assert info["backing-filename"] == snap_lv("before-upgrade")
    assert info["backing-filename-format"] == "qcow2"
    assert info["cluster-size"] == 131072
    assert info["format-specific"]["data"]["extended-l2"] is True
    assert info["format-specific"]["data"]["compat"] == "1.1"
    assert info["virtual-size"] == DISK
    measure = json.loads(run(["qemu-img", "measure", "--output=json", "-O", "qcow2", "-o",
                              "extended_l2=on,cluster_size=128k", "--size", str(DISK)]).stdout)
    ext = vg.extent_size
    assert vg.lv_size(VOL) == (measure["fully-allocated"] + ext - 1) // ext * ext
    exp = check_consistent(env, vg)
    assert exp == mounted_views(d.mnt, vg)
    # qemu writes into the new overlay and reads back
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x77 1M 64k", VOL], cwd=refdir)
    out = run(["qemu-io", "-f", "qcow2", "-c", "read -P 0x77 1M 64k", VOL], cwd=refdir).stdout
    assert b"Pattern verification failed" not in out


@pytest.mark.parametrize("name,err", [
    ("9lives", errno.EINVAL), ("a", errno.EINVAL), ("bad.name", errno.EINVAL),
    ("x" * 41, errno.EINVAL), ("current", errno.EEXIST), ("s1", errno.EEXIST),
])
def test_mkdir_refuses_bad_names(env, name, err):
    # "current" exists, so the kernel answers EEXIST before asking the daemon
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d.mnt, vg.name, VOL, name))
    assert e.value.errno == err
    check_consistent(env, vg)


def test_mkdir_on_raw_volume_and_ro_mount(env):
    vg, ch = build_volume(env, snaps=())
    ch.raw("vm-101-disk-0", 8 * MiB)
    ch.sync()
    d = mount(env, vg)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d.mnt, vg.name, "vm-101-disk-0", "s1"))
    assert e.value.errno == errno.EOPNOTSUPP
    d.stop()
    d = mount(env, vg, opts=("ro",), name="ro")
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d.mnt, vg.name, VOL, "s9"))
    assert e.value.errno == errno.EROFS


# -- rmdir ------------------------------------------------------------------

@pytest.mark.parametrize("victim", ["s1", "s2", "s3"])
@pytest.mark.parametrize("heavy", [False, True], ids=["light-newer", "heavy-newer"])
def test_rmdir_keeps_every_other_view(env, victim, heavy):
    vg, ch = build_volume(env, commit_heavy=heavy)
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    os.rmdir(os.path.join(d.mnt, vg.name, VOL, victim))
    after = mounted_views(d.mnt, vg)
    expect = dict(before)
    del expect[victim]
    assert after == expect
    assert snap_lv(victim) not in lv_tags(vg)
    assert check_consistent(env, vg) == expect
    assert re.search(r"deleting snapshot %s by (committing|rebasing)" % victim, d.log())


def test_rmdir_last_snapshot_and_errors(env):
    vg, ch = build_volume(env, snaps=("only",))
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, "current"))
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, "nosuch"))
    assert e.value.errno == errno.ENOENT
    os.rmdir(os.path.join(d.mnt, vg.name, VOL, "only"))
    assert mounted_views(d.mnt, vg) == {"current": before["current"]}
    assert set(lv_tags(vg)) == {VOL}
    assert check_consistent(env, vg) == {"current": before["current"]}


def test_mkdir_then_rmdir_round_trip_with_proxmox_layers(env):
    """Interleave our snapshots with ones made the Proxmox way (qemu-img)."""
    vg, ch = build_volume(env, snaps=("pve1",))
    d = mount(env, vg)
    os.mkdir(os.path.join(d.mnt, vg.name, VOL, "ours"))
    d.stop()
    # Proxmox takes another snapshot on top of ours, with qemu-img
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "pve"))
    vg.lvrename(VOL, snap_lv("pve2"))
    os.rename(os.path.join(refdir, VOL), os.path.join(refdir, snap_lv("pve2")))
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", lvmlib.OVERLAY_OPTS, "-b",
         snap_lv("pve2"), "-F", "qcow2", VOL, str(DISK)], cwd=refdir)
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x99 5M 300k", VOL], cwd=refdir)
    vg.lvcreate(VOL, vg.extent_size * ((os.path.getsize(os.path.join(refdir, VOL)) +
                                        vg.extent_size) // vg.extent_size),
                tags=("pve-vm-100", "pve-" + VOL))
    vg.copy_file_to_lv(os.path.join(refdir, VOL), VOL)
    d = mount(env, vg, name="mnt2")
    before = mounted_views(d.mnt, vg)
    assert set(before) == {"current", "pve1", "ours", "pve2"}
    for victim in ("ours", "pve1"):
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, victim))
        del before[victim]
        assert mounted_views(d.mnt, vg) == before
    assert check_consistent(env, vg) == before


def test_reader_keeps_reading_while_another_snapshot_goes(env):
    vg, ch = build_volume(env)
    d = mount(env, vg)
    path = disk_path(d.mnt, vg.name, VOL, "s3")
    want = sha256_file(path)
    with open(path, "rb") as f:
        first = f.read(DISK // 2)
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, "s2"))
        rest = f.read()
    import hashlib
    assert hashlib.sha256(first + rest).hexdigest() == want


def test_two_rmdirs_on_one_vg_at_once(env):
    vg = env.vg(npvs=1, pv_size=2 * GiB)
    ch = env.chain(vg)
    vols = ["vm-100-disk-0.qcow2", "vm-100-disk-1.qcow2"]
    for i, name in enumerate(vols):
        v = ch.qcow2(name, DISK)
        v.write(0, 4 * MiB, 0x40 + i)
        v.snapshot("sa")
        v.write(MiB, MiB, 0x50 + i)
        v.snapshot("sb")
        v.write(3 * MiB, MiB, 0x60 + i)
    ch.sync()
    d = mount(env, vg)
    before = {n: mounted_views(d.mnt, vg, n) for n in vols}
    procs = [subprocess.Popen(["rmdir", os.path.join(d.mnt, vg.name, n, "sa")]) for n in vols]
    assert [p.wait() for p in procs] == [0, 0]
    for n in vols:
        del before[n]["sa"]
        assert mounted_views(d.mnt, vg, n) == before[n]
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref"))
    qemu_check_all(refdir)


# -- crash safety -----------------------------------------------------------

MKDIR_STEPS = ["mkdir-created", "mkdir-written", "mkdir-renamed", "mkdir-swapped"]
RMDIR_COMMIT_STEPS = ["rmdir-commit-tagged", "merge-half", "rmdir-commit-merged",
                      "rmdir-commit-removed", "rmdir-commit-renamed"]
RMDIR_REBASE_STEPS = ["rmdir-rebase-tagged", "merge-half", "rmdir-rebase-copied",
                      "rmdir-rebase-relinked"]


def crash_daemon(env, vg, step):
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    return mount(env, vg, binary=CRASH_BIN, name="crash", envvars={"VSTORFS_CRASH_AT": step})


def after_crash(env, d, step):
    """The daemon must have died at `step`; clean the dead mount."""
    assert wait_for(lambda: d.proc.poll() is not None, 20), "daemon did not die at " + step
    assert d.proc.returncode == -9
    assert "crash point " + step in d.stop()      # the armed crash point is the expected SIGKILL


def op_expect_crash(fn):
    try:
        fn()
    except OSError as e:
        assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), e


# kill -9 at every mkdir/rmdir step: test_conformance.py (lvm and the other stores).


def test_vm_writes_between_mkdir_crash_and_recovery_survive(env):
    """Killed after the new overlay took the volume's name: a VM that starts
    on it before vstorfs mounts again keeps what it wrote."""
    vg, ch = build_volume(env, snaps=("s1",))
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref0"))
    before = expected_views(vg, refdir)
    d = crash_daemon(env, vg, "mkdir-swapped")
    op_expect_crash(lambda: os.mkdir(os.path.join(d.mnt, vg.name, VOL, "new")))
    after_crash(env, d, "mkdir-swapped")
    # "the VM": qemu writes into the live volume, through its LV bytes
    work = copy_all_lvs(vg, os.path.join(env.dir, "vm"))
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 4M 256k", VOL], cwd=work)
    vg.copy_file_to_lv(os.path.join(work, VOL), VOL, zero_rest=False)
    written = qemu_view_sha(work, VOL)
    d2 = mount(env, vg, name="again")
    assert "interrupted snapshot" in d2.log()
    views = mounted_views(d2.mnt, vg)
    assert views["current"] == written
    assert views["new"] == before["current"] and views["s1"] == before["s1"]
    assert check_consistent(env, vg, "vm") == views


# -- a write failure in the middle (injected: VSTORFS_FAIL_AT, crash-hook build) ---------

FAILURES = [
    # (direction, failure point, done afterwards?)
    ("commit", "lvm-rmdir-merge", False),    # before the first write into S: undone
    ("rebase", "lvm-rmdir-merge", False),    # before the copies into C: undone
    ("rebase", "lvm-rmdir-relink", False),   # C holds copies, still reads through S: undone
    ("commit", "lvm-rmdir-remove", True),    # S holds C's data: finished at once
    ("commit", "lvm-rmdir-rename", True),
    ("rebase", "lvm-rmdir-remove", True),    # C points past S: finished at once
]


def fail_daemon(env, vg, steps):
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    return mount(env, vg, binary=CRASH_BIN, name="fail", envvars={"VSTORFS_FAIL_AT": steps})


@pytest.mark.parametrize("direction,step,done", FAILURES)
def test_rmdir_failure_in_the_middle(env, direction, step, done):
    """A merge step fails (EIO): before the point of no return the rmdir is undone
    (the error stands, every view reads as before, no intent tag, the snapshot can be
    deleted at once); past it, it is finished at once and rmdir succeeds. Either way
    the next mount has nothing to recover."""
    commit = direction == "commit"
    victim = "s1" if commit else "s2"
    vg, ch = build_volume(env, commit_heavy=not commit)
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref0"))
    before = expected_views(vg, refdir)
    tags_before = lv_tags(vg)
    d = fail_daemon(env, vg, step)
    assert mounted_views(d.mnt, vg) == before
    path = os.path.join(d.mnt, vg.name, VOL, victim)
    expect = dict(before)
    if done:
        os.rmdir(path)
        del expect[victim]
    else:
        with pytest.raises(OSError) as e:
            os.rmdir(path)
        assert e.value.errno == errno.EIO
        assert lv_tags(vg) == tags_before
    log = d.log()
    assert "failure point " + step in log
    assert ("by committing" if commit else "by rebasing") in log
    assert ("finishing it" if done else "undone (every view reads as before)") in log
    assert mounted_views(d.mnt, vg) == expect
    assert check_consistent(env, vg, "failed") == expect
    d.stop()
    # the next mount finds nothing to finish: the failed deletion stays failed
    d2 = mount(env, vg, name="again")
    assert "interrupted snapshot" not in d2.log()
    assert mounted_views(d2.mnt, vg) == expect
    if not done:
        # and the volume takes the same rmdir at once
        os.rmdir(os.path.join(d2.mnt, vg.name, VOL, victim))
        del expect[victim]
        assert mounted_views(d2.mnt, vg) == expect
        assert check_consistent(env, vg, "retried") == expect


# -- space and locks ----------------------------------------------------------

def test_rmdir_that_cannot_fit_changes_nothing(env):
    """Neither layer is preallocated and both LVs are full: ENOSPC, nothing changed."""
    vg = env.vg(npvs=1, pv_size=GiB, extent_size="1m")
    ch = env.chain(vg)
    v = ch.qcow2(VOL, DISK, opts="cluster_size=65536")
    v.write(0, 6 * MiB, 0x10)
    v.snapshot("s1", overlay_opts="cluster_size=65536")
    v.write(8 * MiB, 6 * MiB, 0x20)
    for lv in v.layers():
        ch.place(lv, slack=0)
    ch.sync()
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    tags_before = lv_tags(vg)
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, "s1"))
    assert e.value.errno == errno.ENOSPC
    assert mounted_views(d.mnt, vg) == before
    assert lv_tags(vg) == tags_before
    check_consistent(env, vg)


def test_rmdir_into_layers_sized_like_proxmox_fits(env):
    """Preallocated layers in LVs with no slack (Proxmox sizes them fully
    allocated): a commit into one needs no new space, however scattered."""
    vg = env.vg(npvs=1, pv_size=GiB, extent_size="1m")
    ch = env.chain(vg)
    v = ch.qcow2(VOL, DISK)
    v.write(0, 4 * MiB, 0x10)
    v.snapshot("s1")
    v.io(*["write -P 0x%x %d 65536" % (0x40 + k, k * 2 * MiB + 12288) for k in range(16)])
    for lv in v.layers():
        ch.place(lv, slack=0)
    ch.sync()
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    os.rmdir(os.path.join(d.mnt, vg.name, VOL, "s1"))
    assert "by committing" in d.log()
    del before["s1"]
    assert mounted_views(d.mnt, vg) == before
    assert check_consistent(env, vg) == before


def test_mkdir_on_a_full_vg_is_undone(env):
    vg, ch = build_volume(env, snaps=("s1",))
    vg.lvm("lvcreate", "-an", "-Zn", "-An", "-y", "-l", "100%FREE", "-n", "data", vg.name)
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    tags = lv_tags(vg)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d.mnt, vg.name, VOL, "s2"))
    assert e.value.errno == errno.ENOSPC
    assert lv_tags(vg) == tags                      # renamed back, intent tag removed
    assert mounted_views(d.mnt, vg) == before
    check_consistent(env, vg)


PVE_CFG = "/etc/pve/storage.cfg"


@pytest.fixture
def pve_storage_cfg():
    """Write a Proxmox storage.cfg for the test (restoring whatever was there)."""
    saved = open(PVE_CFG).read() if os.path.exists(PVE_CFG) else None
    made_dir = not os.path.isdir("/etc/pve")
    os.makedirs("/etc/pve", exist_ok=True)

    def write(text):
        with open(PVE_CFG, "w") as f:
            f.write(text)
    yield write
    if saved is None:
        os.unlink(PVE_CFG)
        if made_dir:
            os.rmdir("/etc/pve")
    else:
        write(saved)


def test_shared_storage_refused_unless_asked(env, pve_storage_cfg):
    vg, ch = build_volume(env, snaps=("s1",))
    pve_storage_cfg("dir: local\n\tpath /var/lib/vz\n\nlvm: vstest\n\tvgname %s\n"
                    "\tcontent images\n\tshared 1\n" % vg.name)
    d = mount(env, vg)
    with pytest.raises(OSError) as e:
        os.mkdir(os.path.join(d.mnt, vg.name, VOL, "s2"))
    assert e.value.errno == errno.EBUSY
    assert "shared" in d.log()
    d.stop()
    d = mount(env, vg, opts=("shared_snapshots",), name="forced")
    os.mkdir(os.path.join(d.mnt, vg.name, VOL, "s2"))
    assert "s2" in os.listdir(os.path.join(d.mnt, vg.name, VOL))


def test_waits_for_the_proxmox_storage_lock(env, pve_storage_cfg):
    import fcntl
    import threading
    vg, ch = build_volume(env, snaps=("s1",))
    pve_storage_cfg("lvm: vstest\n\tvgname %s\n\tcontent images\n" % vg.name)
    d = mount(env, vg)
    os.makedirs("/var/lock/pve-manager", exist_ok=True)
    with open("/var/lock/pve-manager/pve-storage-vstest", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = threading.Event()
        t = threading.Thread(target=lambda: (os.mkdir(os.path.join(d.mnt, vg.name, VOL, "s2")),
                                             done.set()))
        t.start()
        assert not done.wait(2.0), "mkdir went ahead while Proxmox held the storage lock"
        fcntl.flock(lock, fcntl.LOCK_UN)
    t.join(30)
    assert done.is_set()
    assert "s2" in os.listdir(os.path.join(d.mnt, vg.name, VOL))


# -- merges that must allocate ------------------------------------------------

def _alloc_chain(env, kind):
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    if kind == "compressed-base":
        raw = os.path.join(env.dir, "content.raw")
        with open(raw, "wb") as f:
            for i in range(DISK // MiB):
                f.write(bytes([(i * 7 + j) % 251 for j in range(256)]) * (MiB // 256))
        lvmlib.qemu_img("convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
                        "compression_type=zstd", raw, VOL, cwd=ch.dir)
        v = ch._add(VOL, DISK, "qcow2", "", None, None)
        v.snapshot("s1", overlay_opts="cluster_size=65536")
        v.write(3 * MiB + 512, 200000, 0x41)            # commit replaces compressed clusters
        victim = "s1"
    elif kind == "new-l2-tables":
        v = ch.qcow2(VOL, DISK, opts="cluster_size=4096")
        v.write(0, MiB, 0x51)
        v.snapshot("s1", overlay_opts="cluster_size=4096")
        v.write(20 * MiB + 100, 70000, 0x52)            # base has no L2 table there
        v.io("write -z 4096 8192")                       # zeros of the child's own
        victim = "s1"
    else:  # rebase into a child that is not preallocated
        v = ch.qcow2(VOL, DISK, opts="cluster_size=65536")
        v.write(0, 2 * MiB, 0x60)
        v.snapshot("s1", overlay_opts="cluster_size=65536")
        v.write(5 * MiB, 4096, 0x61)                     # the snapshot layer is light...
        v.write(MiB - 512, 1024, 0x63)
        v.snapshot("s2", overlay_opts="cluster_size=65536")
        v.write(10 * MiB, 12 * MiB, 0x62)                # ...its child heavy and sparse
        victim = "s2"
    for lv in v.layers():
        ch.place(lv, slack=16 * MiB)
    ch.sync()
    return vg, victim


@pytest.mark.parametrize("kind", ["compressed-base", "new-l2-tables", "rebase-sparse-child"])
def test_rmdir_allocating_merges_stay_clean(env, kind):
    vg, victim = _alloc_chain(env, kind)
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    os.rmdir(os.path.join(d.mnt, vg.name, VOL, victim))
    del before[victim]
    assert mounted_views(d.mnt, vg) == before
    assert check_consistent(env, vg) == before     # qemu-img check: no errors, no leaks
    if kind == "rebase-sparse-child":
        assert "by rebasing" in d.log()
    else:
        assert "by committing" in d.log()


def test_rmdir_refuses_a_layer_a_clone_reads_through(env):
    vg, ch = build_volume(env, snaps=("s1",))
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "clone"))
    clone = "vm-101-disk-0.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", lvmlib.OVERLAY_OPTS, "-b", snap_lv("s1"),
         "-F", "qcow2", clone, str(DISK)], cwd=refdir)
    vg.lvcreate(clone, 40 * MiB, tags=("pve-vm-101",))
    vg.copy_file_to_lv(os.path.join(refdir, clone), clone)
    d = mount(env, vg)
    before = mounted_views(d.mnt, vg)
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(d.mnt, vg.name, VOL, "s1"))
    assert e.value.errno == errno.EBUSY
    assert clone in d.log()
    assert mounted_views(d.mnt, vg) == before
