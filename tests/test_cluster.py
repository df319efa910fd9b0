"""Two Proxmox "nodes" on one shared VG: the cluster storage lock, the VM's
owner and state, qemu-server's VM lock, and SOURCE pve:.

Each node is a vstorfs daemon in its own mount and UTS namespace (`unshare
-mu`) with its own hostname; one directory is bind-mounted as /etc/pve in
both (storage.cfg, .vmlist, nodes/<node>/qemu-server/<vmid>.conf,
priv/lock), and each node has its own /run/lock and /run/qemu-server. The
locks are real: mkdir lock directories and flock, nothing mocked. The test
reaches a node's mount through /proc/<pid>/root."""

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
import threading

import pytest

from conftest import MiB, GiB, run, wait_for
from vstorlib import Daemon
import lvmlib
from test_dirstore import pve_volume_snapshot
from test_snapshots import CRASH_BIN, copy_all_lvs, expected_views, lv_tags, qemu_check_all

DISK = 16 * MiB
VOL_A = "vm-100-disk-0.qcow2"   # VM 100 lives on node "nodea"
VOL_B = "vm-200-disk-0.qcow2"   # VM 200 lives on node "nodeb"
STORE = "vstest"
VOL1, VOL2 = "vm-100-disk-1.qcow2", "vm-100-disk-2.qcow2"   # volume chains on a shared dir storage
# A new mount namespace copies every mount there is, other tests' FUSE
# mounts too (vstorfs, the power-loss recorder); a copy would keep that
# server serving after its own umount.
NS_SCRIPT = ('for t in $(findmnt -rn -o TARGET,FSTYPE | awk \'$2 ~ /^fuse(\\.|$)/ {print $1}\'); '
             'do umount -l "$t"; done; '
             'mkdir -p /etc/pve /run/qemu-server && '  # another run's fixture may have removed them
             'mount --bind "$1" /etc/pve && mount --bind "$2" /run/lock && '
             'mount --bind "$3" /run/qemu-server && hostname "$4" && shift 4 && exec "$@"')


@pytest.fixture(scope="module", autouse=True)
def mountpoints():
    """The host paths the namespaces bind over must exist; left as found."""
    made = []
    for d in ("/etc/pve", "/run/qemu-server"):
        if not os.path.isdir(d):
            os.makedirs(d)
            made.append(d)
    if shutil.which("unshare") is None or shutil.which("nsenter") is None:
        pytest.skip("needs unshare and nsenter")
    yield
    for d in reversed(made):
        try:
            os.rmdir(d)
        except OSError:
            pass


class Node(Daemon):
    """One vstorfs daemon in its own namespaces, as one cluster node: the
    harness's Daemon, started under unshare (NS_SCRIPT), seen at self.view."""

    def __init__(self, env, name, pvedir, source, devices, binary=None, envvars=None, tag="",
                 opts=()):
        self.name = name
        base = os.path.join(env.dir, "node-" + name)
        self.lockdir, self.rundir = base + "-lock", base + "-run"
        os.makedirs(self.lockdir, exist_ok=True)
        os.makedirs(self.rundir, exist_ok=True)
        wrap = ["unshare", "-mu", "--propagation", "private", "sh", "-c", NS_SCRIPT, "sh",
                pvedir, self.lockdir, self.rundir, name]
        super().__init__(source, env.mountpoint("mnt-%s%s" % (name, tag)), devices, opts=opts,
                         binary=binary, env=envvars, ns_wrap=wrap, what="node " + name)
        env.daemons.append(self)

    def path(self, *parts):
        return os.path.join(self.view, *parts)


def write_pve(pvedir, vg, shared=True, extra=""):
    os.makedirs(os.path.join(pvedir, "priv", "lock"), exist_ok=True)
    for node, vmid in (("nodea", 100), ("nodeb", 200)):
        d = os.path.join(pvedir, "nodes", node, "qemu-server")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "%d.conf" % vmid), "w") as f:
            f.write("boot: order=scsi0\nscsi0: %s:%s\n\n[s1]\nlock: snapshot\n" % (
                STORE, "vm-%d-disk-0.qcow2" % vmid))
    with open(os.path.join(pvedir, ".vmlist"), "w") as f:
        json.dump({"version": 3, "ids": {
            "100": {"node": "nodea", "type": "qemu", "version": 1},
            "200": {"node": "nodeb", "type": "qemu", "version": 2}}}, f)
    with open(os.path.join(pvedir, "storage.cfg"), "w") as f:
        f.write("lvm: %s\n\tvgname %s\n\tcontent images\n%s\n%s" % (
            STORE, vg.name, "\tshared 1\n" if shared else "", extra))


def build(env):
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    for i, name in enumerate((VOL_A, VOL_B)):
        v = ch.qcow2(name, DISK)
        v.write(0, 2 * MiB, 0x10 + i)
        v.snapshot("s1")
        v.write(3 * MiB, MiB, 0x20 + i)
        v.snapshot("s2")
        v.write(5 * MiB + 512, 300000, 0x30 + i)
    ch.sync()
    pvedir = os.path.join(env.dir, "pve")
    write_pve(pvedir, vg)
    return vg, pvedir


def lock_path(pvedir):
    return os.path.join(pvedir, "priv", "lock", "storage-" + STORE)


def vg_state(vg):
    return lv_tags(vg)


def new_lines(node, before):
    return node.log()[len(before):]


def lock_intervals(node):
    """(taken, released) CLOCK_MONOTONIC ns pairs from a node's log."""
    taken = [int(x) for x in re.findall(r"cluster lock taken \(monotonic (\d+)\)", node.log())]
    rel = [int(x) for x in re.findall(r"released after \d+ ms \(monotonic (\d+)\)", node.log())]
    assert len(taken) == len(rel), node.log()
    return list(zip(taken, rel))


def check_views(env, vg, nodes, tag):
    """Views read as qemu reads the LVs; images clean; VG consistent; no intents."""
    lvmlib.run(["vgck", "--driverloaded", "n", "--devices", vg.devices_opt, vg.name], env=lvmlib.LVM_ENV)
    refdir = copy_all_lvs(vg, os.path.join(env.dir, "ref-" + tag))
    qemu_check_all(refdir)
    for lv, tags in lv_tags(vg).items():
        assert not [t for t in tags if t.startswith(("vstorfs-mkdir", "vstorfs-rmdir"))], (lv, tags)
    for vol in (VOL_A, VOL_B):
        exp = expected_views(vg, refdir, vol)
        for n in nodes:
            d = n.path(vg.name, vol)
            assert wait_for(lambda: sorted(os.listdir(d)) == sorted(exp), 10), (os.listdir(d), exp)
            for view, sha in exp.items():
                assert lvmlib.sha256_file(os.path.join(d, view, "disk.raw")) == sha, (n.name, vol, view)


def in_thread(fn):
    box = {}

    def body():
        try:
            fn()
            box["rc"] = 0
        except OSError as e:
            box["rc"] = e.errno
    t = threading.Thread(target=body)
    t.start()
    return t, box


# -- the cluster storage lock ---------------------------------------------

def test_two_nodes_take_turns_under_the_cluster_lock(env):
    vg, pvedir = build(env)
    a = Node(env, "nodea", pvedir, vg.name, vg.loops).wait_mounted()
    b = Node(env, "nodeb", pvedir, vg.name, vg.loops).wait_mounted()
    before = vg_state(vg)
    # Someone else (Proxmox on a third node) holds the storage lock.
    os.mkdir(lock_path(pvedir))
    ta, ra = in_thread(lambda: os.mkdir(a.path(vg.name, VOL_A, "s3")))
    tb, rb = in_thread(lambda: os.rmdir(b.path(vg.name, VOL_B, "s1")))
    assert wait_for(lambda: "trying to acquire cfs lock 'storage-vstest'" in a.log() and
                    "trying to acquire cfs lock 'storage-vstest'" in b.log(), 8), a.log() + b.log()
    assert os.stat(lock_path(pvedir)).st_mtime == 0, "no unlock request (utime 0) seen"
    assert vg_state(vg) == before, "a node changed the VG while the lock was held elsewhere"
    os.rmdir(lock_path(pvedir))
    ta.join(60)
    tb.join(60)
    assert ra["rc"] == 0 and rb["rc"] == 0, (ra, rb, a.log(), b.log())
    # More rounds at once, both nodes racing for the lock.
    for snap in ("s4", "s5"):
        ta, ra = in_thread(lambda: os.mkdir(a.path(vg.name, VOL_A, snap)))
        tb, rb = in_thread(lambda: os.mkdir(b.path(vg.name, VOL_B, snap)))
        ta.join(60)
        tb.join(60)
        assert ra["rc"] == 0 and rb["rc"] == 0, (ra, rb, a.log(), b.log())
    ta, ra = in_thread(lambda: os.rmdir(a.path(vg.name, VOL_A, "s2")))
    tb, rb = in_thread(lambda: os.rmdir(b.path(vg.name, VOL_B, "s4")))
    ta.join(60)
    tb.join(60)
    assert ra["rc"] == 0 and rb["rc"] == 0, (ra, rb, a.log(), b.log())
    # No operation ran while the other node held the lock.
    spans = sorted(lock_intervals(a) + lock_intervals(b))
    assert len(spans) >= 2 + 4 + 2 + 2   # (two recoveries) + the operations
    for (t0, t1), (u0, u1) in zip(spans, spans[1:]):
        assert t1 <= u0, "two nodes held storage-vstest at once: %s %s" % ((t0, t1), (u0, u1))
    assert not os.path.exists(lock_path(pvedir))
    # rmdir merged outside the lock, and took it back for its metadata steps.
    assert "releasing the cluster lock while merging" in a.log() + b.log()
    check_views(env, vg, (a, b), "turns")


# -- refusals ---------------------------------------------------------------

@pytest.fixture(scope="module")
def refusing(module_env):
    vg, pvedir = build(module_env)
    a = Node(module_env, "nodea", pvedir, vg.name, vg.loops).wait_mounted()
    return module_env, vg, pvedir, a


def refused(node, vg, op, pattern):
    before_log, before = node.log(), vg_state(vg)
    with pytest.raises(OSError) as e:
        op()
    assert e.value.errno == errno.EBUSY
    lines = [ln for ln in new_lines(node, before_log).splitlines() if re.search(pattern, ln)]
    assert len(lines) == 1, new_lines(node, before_log)
    assert vg_state(vg) == before
    return lines[0]


def test_refuses_another_nodes_vm(refusing):
    env, vg, pvedir, a = refusing
    line = refused(a, vg, lambda: os.mkdir(a.path(vg.name, VOL_B, "x1")), r"belongs to node nodeb")
    assert "VM 200" in line
    refused(a, vg, lambda: os.rmdir(a.path(vg.name, VOL_B, "s1")), r"belongs to node nodeb")
    # Reads are always allowed.
    with open(a.path(vg.name, VOL_B, "s1", "disk.raw"), "rb") as f:
        assert f.read(4096) == bytes([0x11]) * 4096


def test_refuses_a_running_vm(refusing):
    env, vg, pvedir, a = refusing
    qemu = shutil.which("qemu-system-x86_64")
    if not qemu:
        pytest.skip("qemu-system-x86_64 missing")
    pidfile = os.path.join(a.rundir, "100.pid")
    accel = ["-enable-kvm"] if os.access("/dev/kvm", os.R_OK | os.W_OK) else []
    vm = subprocess.Popen([qemu, *accel, "-nodefaults", "-S", "-display", "none", "-monitor", "none",
                           "-serial", "none", "-pidfile", pidfile], stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: os.path.exists(pidfile) and open(pidfile).read().strip(), 10)
        line = refused(a, vg, lambda: os.mkdir(a.path(vg.name, VOL_A, "x1")), r"is running")
        assert "pid %d" % vm.pid in line
    finally:
        vm.kill()
        vm.wait()
    # The pid file left by a VM that is gone: no longer running.
    assert os.path.exists(pidfile)
    os.mkdir(a.path(vg.name, VOL_A, "x1"))
    os.rmdir(a.path(vg.name, VOL_A, "x1"))
    os.unlink(pidfile)


def test_refuses_a_locked_vm_config(refusing):
    env, vg, pvedir, a = refusing
    conf = os.path.join(pvedir, "nodes", "nodea", "qemu-server", "100.conf")
    saved = open(conf).read()
    with open(conf, "w") as f:
        f.write("lock: backup\n" + saved)
    try:
        line = refused(a, vg, lambda: os.mkdir(a.path(vg.name, VOL_A, "x2")), r"is locked")
        assert "(backup)" in line
    finally:
        with open(conf, "w") as f:
            f.write(saved)


def test_refuses_without_a_cluster_lock_directory(refusing):
    env, vg, pvedir, a = refusing
    priv = os.path.join(pvedir, "priv")
    os.rename(priv, priv + ".away")
    try:
        line = refused(a, vg, lambda: os.mkdir(a.path(vg.name, VOL_A, "x3")),
                       r"no Proxmox cluster lock can be had")
        assert "storage vstest" in line
    finally:
        os.rename(priv + ".away", priv)


def test_refuses_when_the_lock_stays_held(refusing):
    env, vg, pvedir, a = refusing
    os.mkdir(lock_path(pvedir))
    try:
        line = refused(a, vg, lambda: os.rmdir(a.path(vg.name, VOL_A, "s1")),
                       r"still held after 10 s")
        assert "storage vstest" in line
    finally:
        os.rmdir(lock_path(pvedir))


def test_waits_for_qemu_servers_vm_lock(refusing):
    """qm holds /var/lock/qemu-server/lock-100.conf: vstorfs waits 10 s, then EBUSY."""
    env, vg, pvedir, a = refusing
    d = os.path.join(a.lockdir, "qemu-server")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "lock-100.conf"), "a") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        refused(a, vg, lambda: os.mkdir(a.path(vg.name, VOL_A, "x4")),
                r"lock-100.conf: held by another process")
    os.mkdir(a.path(vg.name, VOL_A, "x4"))
    os.rmdir(a.path(vg.name, VOL_A, "x4"))


# -- kill -9 while holding the cluster lock ---------------------------------

def crashed_node(env, pvedir, vg, point, op, path, timeout):
    """Node a, the crash-hook build, killed at `point` by op(path) (os.mkdir,
    os.rmdir): the call fails as a dead FUSE server's does; the node stopped."""
    a = Node(env, "nodea", pvedir, vg.name, vg.loops, binary=CRASH_BIN,
             envvars={"VSTORFS_CRASH_AT": point}).wait_mounted()
    try:
        op(a.path(vg.name, VOL_A, path))
    except OSError as e:
        assert e.errno in (errno.ENOTCONN, errno.ECONNABORTED, errno.EIO), e
    assert wait_for(lambda: a.proc.poll() is not None, timeout)
    a.stop(check=False)
    return a

def test_killed_holding_the_cluster_lock(env):
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    vg, pvedir = build(env)
    crashed_node(env, pvedir, vg, "mkdir-renamed", os.mkdir, "s3", 20)
    assert os.path.isdir(lock_path(pvedir)), "the lock died with the daemon?"
    a2 = Node(env, "nodea", pvedir, vg.name, vg.loops, tag="2").wait_mounted()
    log = a2.log()
    assert re.search(r"cluster lock .*storage-vstest was left by vstorfs pid \d+ of this node", log), log
    assert "interrupted snapshot" in log, log
    assert not os.path.exists(lock_path(pvedir))
    check_views(env, vg, (a2,), "killed")


def test_merge_runs_outside_the_cluster_lock(env):
    """Killed halfway through an rmdir's merge: the cluster lock is free (the
    merge copies data only), the other node works meanwhile, and the next
    mount finishes the rmdir under the lock."""
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    vg, pvedir = build(env)
    b = Node(env, "nodeb", pvedir, vg.name, vg.loops).wait_mounted()
    a = crashed_node(env, pvedir, vg, "merge-half", os.rmdir, "s1", 30)
    assert "crash point merge-half" in a.log()
    assert not os.path.exists(lock_path(pvedir)), "the merge ran under the cluster lock"
    # Node b's recovery leaves a's unfinished rmdir alone; its own work goes on.
    os.mkdir(b.path(vg.name, VOL_B, "during"))
    a2 = Node(env, "nodea", pvedir, vg.name, vg.loops, tag="2").wait_mounted()
    assert "interrupted snapshot" in a2.log() or "deleting snapshot s1" in a2.log(), a2.log()
    assert "s1" not in os.listdir(a2.path(vg.name, VOL_A))
    check_views(env, vg, (a2, b), "merge-half")


def test_recovery_leaves_another_nodes_vm_alone(env):
    if not os.access(CRASH_BIN, os.X_OK):
        pytest.skip("crash-hook build missing (make crash)")
    vg, pvedir = build(env)
    crashed_node(env, pvedir, vg, "merge-half", os.rmdir, "s1", 30)
    tagged = {lv: t for lv, t in lv_tags(vg).items() if any(x.startswith("vstorfs-rmdir") for x in t)}
    assert tagged
    b = Node(env, "nodeb", pvedir, vg.name, vg.loops).wait_mounted()
    assert "which node nodea owns: left to that node" in b.log(), b.log()
    assert {lv: t for lv, t in lv_tags(vg).items() if any(x.startswith("vstorfs-rmdir") for x in t)} == tagged
    a2 = Node(env, "nodea", pvedir, vg.name, vg.loops, tag="2").wait_mounted()
    assert "s1" not in os.listdir(a2.path(vg.name, VOL_A))
    check_views(env, vg, (a2, b), "left-alone")


# -- SOURCE pve: --------------------------------------------------------------

def test_pve_source_serves_the_storages_of_this_node(env):
    vg, pvedir = build(env)
    local = os.path.join(env.dir, "vz")
    img = os.path.join(local, "images", "200")
    os.makedirs(img)
    run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(img, "vm-200-disk-0.qcow2"), "8M"])
    extra = ("dir: local\n\tpath %s\n\tcontent images\n\n"
             "nfs: nfs1\n\tserver 192.0.2.1\n\texport /x\n\tcontent images\n\n"
             "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\n"
             "zfspool: tank\n\tpool tank\n\n"
             "dir: off\n\tpath %s\n\tdisable 1\n\n"
             "dir: other\n\tpath %s\n\tnodes nodeb\n" % (local, local, local))
    write_pve(pvedir, vg, extra=extra)
    a = Node(env, "nodea", pvedir, "pve:", vg.loops).wait_mounted()
    assert sorted(os.listdir(a.view)) == ["local", STORE]
    assert VOL_A in os.listdir(a.path(STORE))
    left = [ln for ln in a.log().splitlines() if "left out" in ln]
    assert len(left) == 1, a.log()
    for sid in ("nfs1 (nfs: not mounted)", "local-lvm (lvmthin: unsupported type)",
                "tank (zfspool: unsupported type)", "off (dir: disabled)",
                "other (dir: not for this node)"):
        assert sid in left[0], left[0]
    # The directory storage follows the same VM rules.
    with pytest.raises(OSError) as e:
        os.mkdir(a.path("local", "vm-200-disk-0.qcow2", "x1"))
    assert e.value.errno == errno.EBUSY
    assert "belongs to node nodeb" in a.log()
    os.mkdir(a.path(STORE, VOL_A, "via-pve"))
    a.stop()
    one = Node(env, "nodea", pvedir, "pve:%s" % STORE, vg.loops, tag="one").wait_mounted()
    assert os.listdir(one.view) == [STORE]
    assert "via-pve" in os.listdir(one.path(STORE, VOL_A))


def test_pve_source_follows_storage_cfg_while_mounted(env):
    """pve: follows storage.cfg within the rescan period: a storage added
    appears, a disabled one does not, a removed one disappears; a storage
    that stays keeps its store (its inodes and bytes)."""
    vg = env.vg(npvs=1, pv_size=256 * MiB)
    pvedir = os.path.join(env.dir, "pve")
    write_pve(pvedir, vg)
    dirs = {}
    for sid in ("first", "second", "off"):
        d = dirs[sid] = os.path.join(env.dir, "st-" + sid)
        os.makedirs(os.path.join(d, "images", "100"))
        with open(os.path.join(d, "images", "100", "vm-100-disk-0.raw"), "wb") as f:
            f.write(bytes([0x41 + len(sid)]) * MiB)
    cfg = os.path.join(pvedir, "storage.cfg")
    section = "dir: %s\n\tpath %s\n\tcontent images\n%s\n"
    with open(cfg, "w") as f:
        f.write(section % ("first", dirs["first"], ""))
    a = Node(env, "nodea", pvedir, "pve:", vg.loops).wait_mounted()
    assert os.listdir(a.view) == ["first"]
    with open(cfg, "a") as f:
        f.write(section % ("second", dirs["second"], "") + section % ("off", dirs["off"], "\tdisable 1\n"))
    assert wait_for(lambda: "second" in os.listdir(a.view), 10), (os.listdir(a.view), a.log())
    assert sorted(os.listdir(a.view)) == ["first", "second"]
    disk = a.path("second", "vm-100-disk-0.raw", "current", "disk.raw")
    ino, data = os.stat(disk).st_ino, lvmlib.sha256_file(disk)
    with open(cfg, "w") as f:
        f.write(section % ("second", dirs["second"], "") + section % ("off", dirs["off"], "\tdisable 1\n"))
    assert wait_for(lambda: "first" not in os.listdir(a.view), 10), (os.listdir(a.view), a.log())
    assert os.listdir(a.view) == ["second"]
    assert os.stat(disk).st_ino == ino and lvmlib.sha256_file(disk) == data
    log = a.log()
    assert log.count("storage second added") == 1 and log.count("storage first dropped") == 1, log
    assert "storage off" not in log, log
    # Another path for "second": a new store of that name, serving that path.
    with open(cfg, "w") as f:
        f.write(section % ("second", dirs["off"], ""))
    want = lvmlib.sha256_file(os.path.join(dirs["off"], "images", "100", "vm-100-disk-0.raw"))

    def serves_off():
        try:
            return lvmlib.sha256_file(disk) == want
        except OSError:
            return False
    assert wait_for(serves_off, 10), a.log()
    assert os.listdir(a.view) == ["second"]
    a.stop()


def test_pve_rbd_storage_follows_the_vm_rules(env, ceph_cluster):
    """An rbd storage of storage.cfg (the local cluster: no monhost), mounted
    by pve:<id>: another node's VM is refused, this node's VM gets its snapshot."""
    ns = "vstcluster"
    ceph_cluster.rbd("namespace", "create", "rbd/" + ns, check=False)
    for vmid in (100, 200):
        ceph_cluster.rbd("rm", "rbd/%s/vm-%d-disk-0" % (ns, vmid), check=False)
        ceph_cluster.rbd("create", "--size", "8M", "rbd/%s/vm-%d-disk-0" % (ns, vmid))
    pvedir = os.path.join(env.dir, "pve")
    vg = env.vg(npvs=1, pv_size=256 * MiB)
    write_pve(pvedir, vg, extra="rbd: ceph1\n\tpool rbd\n\tnamespace %s\n\tcontent images\n" % ns)
    a = Node(env, "nodea", pvedir, "pve:ceph1", vg.loops,
             opts=("ceph_conf=" + ceph_cluster.conf, "ceph_id=admin")).wait_mounted()
    try:
        assert os.listdir(a.view) == ["ceph1"]
        with pytest.raises(OSError) as e:
            os.mkdir(a.path("ceph1", "vm-200-disk-0", "x1"))
        assert e.value.errno == errno.EBUSY
        assert "VM 200 belongs to node nodeb" in a.log()
        os.mkdir(a.path("ceph1", "vm-100-disk-0", "x1"))
        snaps = ceph_cluster.rbd("snap", "ls", "rbd/%s/vm-100-disk-0" % ns).stdout.decode()
        assert "x1" in snaps
        assert "x1" not in ceph_cluster.rbd("snap", "ls", "rbd/%s/vm-200-disk-0" % ns).stdout.decode()
    finally:
        a.stop()
        for vmid in (100, 200):
            ceph_cluster.rbd("snap", "purge", "rbd/%s/vm-%d-disk-0" % (ns, vmid), check=False)
            ceph_cluster.rbd("rm", "rbd/%s/vm-%d-disk-0" % (ns, vmid), check=False)


def chain_volume(d, vol, snaps, writes):
    """A Proxmox volume chain made as Proxmox makes it: writes[i] goes into the
    layer that becomes snaps[i] (the last one into the live volume)."""
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on,cluster_size=128k",
         os.path.join(d, vol), "256M"])
    for i, w in enumerate(writes):
        run(["qemu-io", "-f", "qcow2", "-c", w, os.path.join(d, vol)])
        if i < len(snaps):
            pve_volume_snapshot(d, vol, snaps[i])


def qemu_sha(img):
    out = img + ".ref.raw"
    run(["qemu-img", "convert", "-U", "-O", "raw", img, out])
    try:
        return lvmlib.sha256_file(out)
    finally:
        os.unlink(out)


def qemu_clean(img):
    p = subprocess.run(["qemu-img", "check", "--output=json", img], capture_output=True)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    r = json.loads(p.stdout)
    assert not r.get("leaks") and not r.get("corruptions") and not r.get("check-errors"), r


def take_lock_during_merge(held, intent, rmdir_thread):
    """The other node: take storage-<id> as soon as it is free while the rmdir's
    intent exists. True if it was had with the intent still there (mid-merge)."""
    while rmdir_thread.is_alive():
        if not os.path.exists(intent):
            continue
        try:
            os.mkdir(held)
        except FileExistsError:
            continue
        if os.path.exists(intent):
            return True
        os.rmdir(held)
        return False
    return False


def test_shared_directory_storage_takes_the_cluster_lock(env):
    """A `shared 1` dir storage (a plain path SOURCE that storage.cfg names):
    mkdir waits for storage-<id> like LVM does, then takes the snapshot; a
    volume-chain rmdir merges with the lock released (another node takes it
    meanwhile), takes it back for its renames, and stops with EIO, its intent
    kept for recovery, when the chain changed meanwhile."""
    local = os.path.join(env.dir, "shared-vz")
    img = os.path.join(local, "images", "100")
    os.makedirs(img)
    run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(img, "vm-100-disk-0.qcow2"), "8M"])
    # Volume chains whose rmdir s1 moves 64 MiB (rebase: S's data C lacks).
    chain_volume(img, VOL1, ["s1"], ["write -P 0x41 0 96M", "write -P 0x42 64M 96M"])
    chain_volume(img, VOL2, ["s1", "s2"], ["write -P 0x51 0 96M", "write -P 0x52 64M 96M",
                                           "write -P 0x53 200M 1M"])
    pvedir = os.path.join(env.dir, "pve")
    vg = env.vg(npvs=1, pv_size=256 * MiB)
    write_pve(pvedir, vg, extra="dir: shvz\n\tpath %s\n\tcontent images\n\tshared 1\n" % local)
    a = Node(env, "nodea", pvedir, local, vg.loops).wait_mounted()
    held = os.path.join(pvedir, "priv", "lock", "storage-shvz")
    os.mkdir(held)
    t, r = in_thread(lambda: os.mkdir(a.path("shared-vz", "vm-100-disk-0.qcow2", "s1")))
    assert wait_for(lambda: "trying to acquire cfs lock 'storage-shvz'" in a.log(), 8), a.log()
    snaps = lambda: run(["qemu-img", "snapshot", "-l", os.path.join(img, "vm-100-disk-0.qcow2")]).stdout
    assert b"s1" not in snaps(), "the snapshot was taken while storage-shvz was held"
    os.rmdir(held)
    t.join(60)
    assert r["rc"] == 0, (r, a.log())
    assert "storage shvz: cluster lock taken" in a.log()
    assert not os.path.exists(held)
    assert b"s1" in snaps()
    assert wait_for(lambda: "s1" in os.listdir(a.path("shared-vz", "vm-100-disk-0.qcow2")), 10)

    # rmdir of a volume chain: the merge runs with storage-shvz released.
    v1 = os.path.join(img, VOL1)
    cur1 = qemu_sha(v1)
    intent1 = os.path.join(img, ".vstorfs-intent-%s.op" % VOL1)
    before = a.log()
    t, r = in_thread(lambda: os.rmdir(a.path("shared-vz", VOL1, "s1")))
    got = take_lock_during_merge(held, intent1, t)
    try:
        assert got, "storage-shvz could not be had while the merge ran:\n" + new_lines(a, before)
        # vstorfs finishes the data copy while we hold the lock, then waits for it
        # before any rename or unlink.
        assert wait_for(lambda: new_lines(a, before).count("trying to acquire cfs lock 'storage-shvz'"),
                        6, 0.02), new_lines(a, before)
        assert os.path.exists(intent1) and os.path.exists(os.path.join(img, "snap-s1-" + VOL1))
        assert t.is_alive()
    finally:
        os.rmdir(held)
    t.join(60)
    assert r["rc"] == 0, (r, new_lines(a, before))
    lines = new_lines(a, before)
    assert "releasing the cluster lock while merging" in lines, lines
    assert lines.index("releasing the cluster lock while merging") < lines.index(": done")
    assert not os.path.exists(intent1) and not os.path.exists(held)
    assert not os.path.exists(os.path.join(img, "snap-s1-" + VOL1))
    qemu_clean(v1)
    assert qemu_sha(v1) == cur1
    assert wait_for(lambda: os.listdir(a.path("shared-vz", VOL1)) == ["current"], 10)
    assert lvmlib.sha256_file(a.path("shared-vz", VOL1, "current", "disk.raw")) == cur1

    # The chain changes while the lock is released (here: C replaced by a copy of
    # itself): no rename, no unlink; EIO, the intent kept; the next operation on
    # the volume finishes it (recovery: C still reads through S, so rebase again).
    v2 = os.path.join(img, VOL2)
    s1, s2 = os.path.join(img, "snap-s1-" + VOL2), os.path.join(img, "snap-s2-" + VOL2)
    ref = {"current": qemu_sha(v2), "s2": qemu_sha(s2)}
    intent2 = os.path.join(img, ".vstorfs-intent-%s.op" % VOL2)
    before = a.log()
    t, r = in_thread(lambda: os.rmdir(a.path("shared-vz", VOL2, "s1")))
    got = take_lock_during_merge(held, intent2, t)
    try:
        assert got, new_lines(a, before)
        assert wait_for(lambda: "trying to acquire cfs lock 'storage-shvz'" in new_lines(a, before),
                        6, 0.02), new_lines(a, before)
        shutil.copyfile(s2, s2 + ".copy")
        os.rename(s2 + ".copy", s2)
    finally:
        os.rmdir(held)
    t.join(60)
    assert r["rc"] == errno.EIO, (r, new_lines(a, before))
    assert "the chain changed while merging outside the cluster lock" in new_lines(a, before)
    assert os.path.exists(intent2) and os.path.exists(s1)
    assert qemu_sha(v2) == ref["current"] and qemu_sha(s2) == ref["s2"]
    before = a.log()
    os.rmdir(a.path("shared-vz", VOL2, "s2"))
    assert "an interrupted snapshot operation is pending: finishing it first" in new_lines(a, before)
    assert not os.path.exists(intent2) and not os.path.exists(s1) and not os.path.exists(s2)
    assert not os.path.exists(held)
    qemu_clean(v2)
    assert qemu_sha(v2) == ref["current"]
    assert wait_for(lambda: os.listdir(a.path("shared-vz", VOL2)) == ["current"], 10)
    assert lvmlib.sha256_file(a.path("shared-vz", VOL2, "current", "disk.raw")) == ref["current"]
    spans = sorted(lock_intervals(a))
    for (t0, t1), (u0, u1) in zip(spans, spans[1:]):
        assert t1 <= u0, (spans, a.log())
