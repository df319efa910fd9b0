"""The directory store (dir/), driven through build/dirstore (the daemon's
store code without FUSE): Proxmox, Nova and plain directories built the way
those tools build them, every view compared with qemu's reading; mkdir and
rmdir as volume chains and as internal snapshots, checked with qemu-img;
kill -9 at every step; bad input.

Needs qemu-img/qemu-io; no root, loop devices or LVM.
"""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import struct
import subprocess
import time

import pytest

from vstorlib import (q, qemu_check, qemu_snapshots, qio, require_root,
                     sha256_file, sha_qemu, start_daemon)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOL = os.environ.get("DIRSTORE") or os.path.join(REPO, "build", "dirstore")
CRASH_TOOL = os.environ.get("DIRSTORE_CRASH") or os.path.join(REPO, "build-crash", "dirstore")
MiB = 1 << 20


def need(path):
    if not os.access(path, os.X_OK):
        pytest.skip("%s not built" % path)
    return path






def ds(*args, tool=None, check=True, env=None, cfg=None):
    argv = [tool or need(TOOL)]
    if cfg:
        argv += ["--cfg", cfg]
    argv += list(args)
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    if check and p.returncode != 0:
        raise AssertionError("%s -> %d\n%s" % (argv, p.returncode, p.stderr.decode()))
    return p


def listing(root, cfg=None):
    out = {}
    for line in ds("ls", root, cfg=cfg).stdout.decode().splitlines():
        vol, view, size, mtime, snap, used, ident = line.split("\t")
        out.setdefault(vol, {})[view] = dict(size=int(size), mtime=int(mtime), snapshot=snap == "1",
                                             ident=ident)
    return out


def sha_view(root, vol, view, via_map=False):
    p = ds(*(["-t"] if via_map else []), "cat", root, vol, view, check=False)
    if p.returncode:
        return "ERR%d" % p.returncode
    return hashlib.sha256(p.stdout).hexdigest()








@pytest.fixture
def tmp(tmp_path):
    d = tmp_path / "w"
    d.mkdir()
    return str(d)


# -- builders: the commands Proxmox, Nova and libvirt run ----------------

def pve_store(tmp, name="vz"):
    """A Proxmox dir storage: images/<vmid>/, qcow2 made as Plugin.pm's alloc_image does."""
    root = os.path.join(tmp, name)
    os.makedirs(os.path.join(root, "images", "100"))
    os.makedirs(os.path.join(root, "images", "102"))
    i100 = os.path.join(root, "images", "100")
    q("qemu-img", "create", "-o", "preallocation=metadata", "-f", "qcow2",
      os.path.join(i100, "vm-100-disk-0.qcow2"), "32M")
    qio(os.path.join(i100, "vm-100-disk-0.qcow2"), "write -P 0x31 0 3M", "write -P 0x32 17M 1M")
    q("qemu-img", "create", "-o", "preallocation=off", "-f", "raw", os.path.join(i100, "vm-100-disk-1.raw"), "8M")
    qio(os.path.join(i100, "vm-100-disk-1.raw"), "write -P 0x41 1M 1M", fmt="raw")
    # a template and its linked clone: clone_image runs in images/102 with a relative backing path
    q("qemu-img", "create", "-f", "qcow2", os.path.join(i100, "base-100-disk-2.qcow2"), "16M")
    qio(os.path.join(i100, "base-100-disk-2.qcow2"), "write -P 0x51 0 4M")
    q("qemu-img", "create", "-b", "../100/base-100-disk-2.qcow2", "-F", "qcow2", "-f", "qcow2",
      "vm-102-disk-0.qcow2", cwd=os.path.join(root, "images", "102"))
    qio(os.path.join(root, "images", "102", "vm-102-disk-0.qcow2"), "write -P 0x52 2M 4M")
    # saved RAM and a vmdk: not shown
    q("qemu-img", "create", "-f", "raw", os.path.join(i100, "vm-100-state-s1.raw"), "1M")
    q("qemu-img", "create", "-f", "vmdk", os.path.join(i100, "vm-100-disk-9.vmdk"), "1M")
    return root


def storage_cfg(tmp, root, extra="", kind="dir", storeid="local"):
    path = os.path.join(tmp, "storage.cfg")
    with open(path, "w") as f:
        f.write("%s: %s\n\tpath %s\n\tcontent images,iso\n%s\n" % (kind, storeid, root, extra))
    return path


# -- reading ------------------------------------------------------------

def test_proxmox_layout_views_match_qemu(tmp):
    root = pve_store(tmp)
    i100 = os.path.join(root, "images", "100")
    img = os.path.join(i100, "vm-100-disk-0.qcow2")
    q("qemu-img", "snapshot", "-c", "before", img)
    qio(img, "write -P 0x33 1M 4M")
    q("qemu-img", "snapshot", "-c", "after", img)
    qio(img, "write -z 0 1M")
    ls = listing(root)
    assert sorted(ls) == ["base-100-disk-2.qcow2", "vm-100-disk-0.qcow2", "vm-100-disk-1.raw",
                          "vm-102-disk-0.qcow2"]
    assert list(ls["vm-100-disk-0.qcow2"]) == ["current", "before", "after"]
    assert ls["vm-100-disk-0.qcow2"]["before"]["snapshot"]
    for view in ("current", "before", "after"):
        ref = sha_qemu(img, None if view == "current" else view)
        assert sha_view(root, "vm-100-disk-0.qcow2", view) == ref
        assert sha_view(root, "vm-100-disk-0.qcow2", view, via_map=True) == ref
    assert sha_view(root, "vm-102-disk-0.qcow2", "current") == \
        sha_qemu(os.path.join(root, "images", "102", "vm-102-disk-0.qcow2"))
    assert sha_view(root, "vm-100-disk-1.raw", "current") == \
        sha_qemu(os.path.join(i100, "vm-100-disk-1.raw"), fmt="raw")
    # file layers splice: data runs come back as fd extents
    kinds = ds("map", root, "vm-100-disk-0.qcow2", "current").stdout.decode()
    assert " fd" in kinds
    # idents are stable across runs
    assert listing(root) == ls


def test_internal_snapshot_vmstate_never_shown(tmp):
    root = os.path.join(tmp, "plain")
    os.makedirs(root)
    img = os.path.join(root, "vm.qcow2")
    q("qemu-img", "create", "-f", "qcow2", img, "8M")
    qio(img, "write -P 0x61 0 8M")
    # a snapshot with 4 MiB of VM state stored past the disk (what savevm does)
    q("qemu-img", "snapshot", "-c", "live", img)
    qio(img, "write -P 0x62 0 1M")
    ls = listing(root)
    assert ls["vm.qcow2"]["live"]["size"] == 8 * MiB
    assert sha_view(root, "vm.qcow2", "live") == sha_qemu(img, "live")


def test_nova_layout(tmp):
    inst = os.path.join(tmp, "instances")
    base = os.path.join(inst, "_base")
    os.makedirs(base)
    uuid = "7c0a3f0e-1b2c-4d5e-8f90-a1b2c3d4e5f6"
    os.makedirs(os.path.join(inst, uuid))
    bimg = os.path.join(base, "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3")
    q("qemu-img", "create", "-f", "raw", bimg, "16M")
    qio(bimg, "write -P 0x71 0 6M", fmt="raw")
    eph = os.path.join(base, "ephemeral_1_0706d66")
    q("qemu-img", "create", "-f", "raw", eph, "4M")
    d = os.path.join(inst, uuid)
    # Nova writes absolute backing paths of the host it ran on, raw by default
    q("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", bimg, os.path.join(d, "disk"), "16M")
    qio(os.path.join(d, "disk"), "write -P 0x72 1M 1M")
    q("qemu-img", "rebase", "-u", "-F", "raw", "-b",
      "/var/lib/nova/instances/_base/a94a8fe5ccb19ba61c4c0873d391e987982fbbd3", os.path.join(d, "disk"))
    q("qemu-img", "create", "-f", "qcow2", "-o",
      "backing_file=/var/lib/nova/instances/_base/ephemeral_1_0706d66,backing_fmt=raw",
      "-u", os.path.join(d, "disk.eph0"), "4M")
    q("qemu-img", "create", "-f", "raw", os.path.join(d, "disk.swap"), "2M")
    q("qemu-img", "create", "-f", "raw", os.path.join(d, "disk.config"), "1M")
    with open(os.path.join(d, "disk.info"), "w") as f:
        json.dump({os.path.join(d, "disk"): "qcow2"}, f)
    with open(os.path.join(d, "console.log"), "w") as f:
        f.write("boot\n")
    ls = listing(inst)
    assert sorted(ls) == [uuid + "_disk", uuid + "_disk.config", uuid + "_disk.eph0", uuid + "_disk.swap"]
    # qemu reads it through a copy whose backing paths point at this _base
    ref = os.path.join(tmp, "ref.qcow2")
    shutil.copy(os.path.join(d, "disk"), ref)
    q("qemu-img", "rebase", "-u", "-F", "raw", "-b", bimg, ref)
    assert sha_view(inst, uuid + "_disk", "current") == sha_qemu(ref)
    # internal snapshots like any other directory
    ds("mkdir", inst, uuid + "_disk", "s1")
    assert qemu_snapshots(os.path.join(d, "disk")) == ["s1"]
    assert sha_view(inst, uuid + "_disk", "s1") == sha_view(inst, uuid + "_disk", "current")
    ds("rmdir", inst, uuid + "_disk", "s1")
    assert qemu_snapshots(os.path.join(d, "disk")) == []
    assert ds("mkdir", inst, uuid + "_disk.swap", "s1", check=False).returncode == errno.EOPNOTSUPP


def test_plain_directory_libvirt(tmp):
    root = os.path.join(tmp, "images")
    os.makedirs(root)
    q("qemu-img", "create", "-f", "qcow2", os.path.join(root, "debian12.qcow2"), "16M")
    qio(os.path.join(root, "debian12.qcow2"), "write -P 0x81 0 2M")
    q("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", os.path.join(root, "debian12.qcow2"),
      os.path.join(root, "web1.qcow2"))
    qio(os.path.join(root, "web1.qcow2"), "write -P 0x82 1M 2M")
    q("qemu-img", "create", "-f", "raw", os.path.join(root, "data.img"), "4M")
    with open(os.path.join(root, "README.txt"), "w") as f:
        f.write("not an image\n")
    ls = listing(root)
    assert sorted(ls) == ["data.img", "web1.qcow2"]   # debian12 is web1's backing file
    assert sha_view(root, "web1.qcow2", "current") == sha_qemu(os.path.join(root, "web1.qcow2"))


# -- volume-chain snapshots (Proxmox snapshot-as-volume-chain) ------------

VOL = "vm-100-disk-0.qcow2"


def chain_views(root, cfg=None, vol=VOL):
    return {v: sha_view(root, vol, v) for v in listing(root, cfg)[vol]}


def take_chain(tmp, snaps=("s1", "s2")):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1")
    img = os.path.join(root, "images", "100", VOL)
    for i, s in enumerate(snaps):
        ds("mkdir", root, VOL, s, cfg=cfg)
        qio(img, "write -P 0x%x %dM 2M" % (0x90 + i, 1 + 3 * i))
    return root, cfg, img


def test_volume_chain_mkdir_is_proxmox(tmp):
    root, cfg, img = take_chain(tmp)
    d = os.path.dirname(img)
    assert sorted(f for f in os.listdir(d) if "disk-0" in f and not f.startswith(".")) == \
        ["snap-s1-" + VOL, "snap-s2-" + VOL, VOL]
    info = json.loads(q("qemu-img", "info", "--output=json", img).stdout)
    assert info["backing-filename"] == "snap-s2-" + VOL
    assert info["backing-filename-format"] == "qcow2"
    assert info["cluster-size"] == 128 * 1024
    assert info["format-specific"]["data"]["extended-l2"] is True
    # what qemu-img create -o extended_l2=on,cluster_size=128k,preallocation=metadata makes
    ref = os.path.join(tmp, "ref.qcow2")
    q("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", "snap-s2-" + VOL, "-u",
      "-o", "extended_l2=on,cluster_size=128k,preallocation=metadata", ref, "32M")
    assert abs(os.path.getsize(ref) - os.path.getsize(img)) <= 128 * 1024
    for f in os.listdir(d):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(d, f))
    ls = listing(root, cfg)
    assert list(ls[VOL]) == ["current", "s1", "s2"]
    assert sha_view(root, VOL, "s2") == sha_qemu(os.path.join(d, "snap-s2-" + VOL))
    assert sha_view(root, VOL, "current") == sha_qemu(img)
    assert ls[VOL]["s1"]["mtime"] <= ls[VOL]["s2"]["mtime"]
    # a volume that already has snap-* layers stays a chain without the config
    ds("mkdir", root, VOL, "s3")
    assert os.path.exists(os.path.join(d, "snap-s3-" + VOL))
    assert qemu_snapshots(img) == []


@pytest.mark.parametrize("victim", ["s1", "s2", "s3"])
def test_volume_chain_rmdir_keeps_every_other_view(tmp, victim):
    root, cfg, img = take_chain(tmp, ("s1", "s2", "s3"))
    before = chain_views(root, cfg)
    idents = {v: x["ident"] for v, x in listing(root, cfg)[VOL].items()}
    ds("rmdir", root, VOL, victim, cfg=cfg)
    after = chain_views(root, cfg)
    del before[victim]
    assert after == before
    new_idents = {v: x["ident"] for v, x in listing(root, cfg)[VOL].items()}
    for v in new_idents:
        assert new_idents[v] == idents[v]
    d = os.path.dirname(img)
    left = sorted(f for f in os.listdir(d) if "disk-0" in f)
    assert left == sorted(["snap-%s-%s" % (s, VOL) for s in ("s1", "s2", "s3") if s != victim] + [VOL]) \
        or left == sorted(["snap-%s-%s" % (s, VOL) for s in ("s1", "s2", "s3") if s != victim] + [VOL,
                           ".vstorfs-snaps-" + VOL + ".times"])
    for f in os.listdir(d):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(d, f))
    assert sha_qemu(img) == after["current"]
    # the name can be taken again: a new ident
    ds("mkdir", root, VOL, victim, cfg=cfg)
    assert listing(root, cfg)[VOL][victim]["ident"] != idents[victim]


def test_volume_chain_rmdir_refuses_base_of_linked_clone(tmp):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1")
    # a snapshot of the template (volume chain), then a clone reading through the snapshot layer
    ds("mkdir", root, "base-100-disk-2.qcow2", "t1", cfg=cfg)
    q("qemu-img", "create", "-b", "../100/snap-t1-base-100-disk-2.qcow2", "-F", "qcow2", "-f", "qcow2",
      "vm-102-disk-1.qcow2", cwd=os.path.join(root, "images", "102"))
    assert ds("rmdir", root, "base-100-disk-2.qcow2", "t1", cfg=cfg, check=False).returncode == errno.EBUSY


# -- internal snapshots -----------------------------------------------

def test_internal_mkdir_rmdir_as_qemu_img(tmp):
    root = pve_store(tmp)
    img = os.path.join(root, "images", "100", VOL)
    ds("mkdir", root, VOL, "s1")
    qio(img, "write -P 0xa1 0 5M")
    ds("mkdir", root, VOL, "s2")
    qio(img, "write -z 2M 1M")
    assert qemu_snapshots(img) == ["s1", "s2"]
    qemu_check(img)
    for s in ("s1", "s2"):
        assert sha_view(root, VOL, s) == sha_qemu(img, s)
    assert sha_view(root, VOL, "current") == sha_qemu(img)
    ids = {v: x["ident"] for v, x in listing(root)[VOL].items()}
    assert ds("mkdir", root, VOL, "s1", check=False).returncode == errno.EEXIST
    assert ds("mkdir", root, VOL, "bad/name", check=False).returncode == errno.EINVAL
    assert ds("mkdir", root, VOL, "current", check=False).returncode == errno.EEXIST
    assert ds("rmdir", root, VOL, "current", check=False).returncode == errno.EBUSY
    assert ds("rmdir", root, VOL, "nope", check=False).returncode == errno.ENOENT
    ds("rmdir", root, VOL, "s1")
    assert qemu_snapshots(img) == ["s2"]
    qemu_check(img)
    assert listing(root)[VOL]["s2"]["ident"] == ids["s2"]
    assert sha_view(root, VOL, "s2") == sha_qemu(img, "s2")
    # freed clusters are reusable: another round does not grow the file by the data again
    size = os.path.getsize(img)
    ds("mkdir", root, VOL, "s1")
    assert listing(root)[VOL]["s1"]["ident"] != ids["s1"]
    ds("rmdir", root, VOL, "s1")
    ds("rmdir", root, VOL, "s2")
    qemu_check(img)
    assert os.path.getsize(img) <= size + 1 * MiB
    # raw volumes cannot have snapshots
    assert ds("mkdir", root, "vm-100-disk-1.raw", "s1", check=False).returncode == errno.EOPNOTSUPP


def test_busy_image_refused(tmp):
    root = pve_store(tmp)
    img = os.path.join(root, "images", "100", VOL)
    # qemu-io holds the image open read-write (OFD locks) while it waits on stdin
    p = subprocess.Popen(["qemu-io", "-f", "qcow2", img], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert ds("mkdir", root, VOL, "s1", check=False).returncode == errno.EBUSY
    finally:
        p.communicate(b"quit\n", timeout=10)
    ds("mkdir", root, VOL, "s1")
    p = subprocess.Popen(["qemu-io", "-f", "qcow2", img], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert ds("rmdir", root, VOL, "s1", check=False).returncode == errno.EBUSY
    finally:
        p.communicate(b"quit\n", timeout=10)


@pytest.mark.parametrize("cfgtext", [("nfs", "\tserver 10.0.0.1\n\texport /x"), ("dir", "\tshared 1")])
def test_shared_storage_refused_unless_asked(tmp, cfgtext):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, cfgtext[1], kind=cfgtext[0], storeid="nfs1")
    assert ds("mkdir", root, VOL, "s1", cfg=cfg, check=False).returncode == errno.EBUSY
    ds("--shared-snapshots", "mkdir", root, VOL, "s1", cfg=cfg)


def test_waits_for_the_proxmox_storage_lock(tmp):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, storeid="dirlock%d" % os.getpid())
    os.makedirs("/var/lock/pve-manager", exist_ok=True)
    lockpath = "/var/lock/pve-manager/pve-storage-dirlock%d" % os.getpid()
    fd = os.open(lockpath, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        p = subprocess.Popen([need(TOOL), "--cfg", cfg, "mkdir", root, VOL, "s1"], stderr=subprocess.PIPE)
        time.sleep(1.0)
        assert p.poll() is None, "mkdir did not wait for Proxmox's lock"
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert p.wait(timeout=20) == 0
    finally:
        os.close(fd)
        os.unlink(lockpath)
    assert qemu_snapshots(os.path.join(root, "images", "100", VOL)) == ["s1"]


# -- crash safety -------------------------------------------------------

def crash(root, step, *args, cfg=None):
    env = dict(os.environ, VSTORFS_CRASH_AT=step)
    p = ds(*args, tool=need(CRASH_TOOL), check=False, env=env, cfg=cfg)
    assert p.returncode == -9 or p.returncode == 137, \
        "no crash at %s (rc %d): %s" % (step, p.returncode, p.stderr.decode())


def no_leftovers(root):
    for dp, dn, fn in os.walk(root):
        for f in fn:
            assert not f.startswith((".vstorfs-intent-", ".vstorfs-new-")) and not f.endswith(".part"), \
                os.path.join(dp, f)


MKDIR_STEPS = ["dir-mkdir-intent", "dir-mkdir-written", "dir-mkdir-renamed", "dir-mkdir-swapped"]


@pytest.mark.parametrize("step", MKDIR_STEPS)
def test_volume_chain_mkdir_crash_at_every_step(tmp, step):
    root, cfg, img = take_chain(tmp, ("s1",))
    before = chain_views(root, cfg)
    crash(root, step, "mkdir", root, VOL, "s2", cfg=cfg)
    ds("recover", root, cfg=cfg)
    no_leftovers(root)
    after = chain_views(root, cfg)
    for v, h in before.items():
        assert after[v] == h, v
    if "s2" in after:
        assert after["s2"] == before["current"]
        assert step in ("dir-mkdir-renamed", "dir-mkdir-swapped")
    else:
        assert step in ("dir-mkdir-intent", "dir-mkdir-written")
    d = os.path.dirname(img)
    for f in os.listdir(d):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(d, f))
    assert sha_qemu(img) == after["current"]


RM_COMMIT = ["dir-rmdir-commit-intent", "merge-half", "dir-rmdir-commit-merged", "dir-rmdir-commit-renamed"]
RM_REBASE = ["dir-rmdir-rebase-intent", "merge-half", "dir-rmdir-rebase-copied", "dir-rmdir-rebase-relinked",
             "dir-rmdir-rebase-removed"]


def _rm_crash(tmp, step, heavy_snapshot):
    root, cfg, img = take_chain(tmp, ("s1", "s2"))
    if heavy_snapshot:
        # s1's layer holds much more than its child (s2's layer): commit the child into it
        qio(os.path.join(os.path.dirname(img), "snap-s1-" + VOL), "write -P 0xee 8M 20M")
        victim = "s1"
    else:
        # s2's layer holds little, current much: rebase current onto s1
        qio(img, "write -P 0xdd 8M 24M")
        victim = "s2"
    before = chain_views(root, cfg)
    crash(root, step, "rmdir", root, VOL, victim, cfg=cfg)
    ds("recover", root, cfg=cfg)
    no_leftovers(root)
    after = chain_views(root, cfg)
    del before[victim]
    assert after == before
    d = os.path.dirname(img)
    for f in os.listdir(d):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(d, f))
    assert sha_qemu(img) == after["current"]


@pytest.mark.parametrize("step", RM_COMMIT)
def test_volume_chain_rmdir_commit_crash_at_every_step(tmp, step):
    _rm_crash(tmp, step, True)


@pytest.mark.parametrize("step", RM_REBASE)
def test_volume_chain_rmdir_rebase_crash_at_every_step(tmp, step):
    _rm_crash(tmp, step, False)


ISNAP_CREATE = ["dir-isnap-create-intent", "snapshot-create:l1-copy", "snapshot-create:refcounts",
                "snapshot-create:l2-flags", "snapshot-create:l1-flags", "snapshot-create:table",
                "snapshot-create:header", "snapshot-create:done", "dir-isnap-create-done"]
ISNAP_DELETE = ["dir-isnap-delete-intent", "snapshot-delete:table", "snapshot-delete:header",
                "snapshot-delete:l2-flags", "snapshot-delete:l1-flags", "snapshot-delete:done",
                "dir-isnap-delete-done"]


def _isnap_setup(tmp):
    root = pve_store(tmp)
    img = os.path.join(root, "images", "100", VOL)
    q("qemu-img", "snapshot", "-c", "s1", img)
    qio(img, "write -P 0xc1 0 6M")
    return root, img


@pytest.mark.parametrize("step", ISNAP_CREATE)
def test_internal_mkdir_crash_at_every_step(tmp, step):
    root, img = _isnap_setup(tmp)
    before = chain_views(root)
    crash(root, step, "mkdir", root, VOL, "s2")
    ds("recover", root)
    no_leftovers(root)
    qemu_check(img)
    after = chain_views(root)
    for v, h in before.items():
        assert after[v] == h, v
    if "s2" in after:
        assert after["s2"] == before["current"]
        assert sha_qemu(img, "s2") == after["s2"]
    assert sha_qemu(img, "s1") == after["s1"]
    assert qemu_snapshots(img) == list(after)[1:]


@pytest.mark.parametrize("step", ISNAP_DELETE)
def test_internal_rmdir_crash_at_every_step(tmp, step):
    root, img = _isnap_setup(tmp)
    q("qemu-img", "snapshot", "-c", "s2", img)
    qio(img, "write -P 0xc2 3M 6M")
    before = chain_views(root)
    crash(root, step, "rmdir", root, VOL, "s1")
    ds("recover", root)
    no_leftovers(root)
    qemu_check(img)
    after = chain_views(root)
    assert "s1" not in after      # an interrupted delete is finished
    del before["s1"]
    assert after == before
    assert qemu_snapshots(img) == ["s2"]


def test_vm_writes_between_crash_and_recovery_survive(tmp):
    root, img = _isnap_setup(tmp)
    crash(root, "snapshot-create:refcounts", "mkdir", root, VOL, "s2")
    # the recovery waits while a VM holds the image; the VM's writes stay
    p = subprocess.Popen(["qemu-io", "-f", "qcow2", img], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        p.stdin.write(b"write -P 0xf1 7M 1M\n")
        p.stdin.flush()
        time.sleep(0.5)
        ds("recover", root)
        assert any(f.startswith(".vstorfs-intent-") for f in os.listdir(os.path.dirname(img)))
    finally:
        p.communicate(b"quit\n", timeout=10)
    # the next operation on the volume finishes it first, without a remount
    ds("--no-recover", "mkdir", root, VOL, "s3")
    no_leftovers(root)
    qemu_check(img)
    assert sha_view(root, VOL, "current") == sha_qemu(img)
    assert "s3" in qemu_snapshots(img)


# -- bad input ----------------------------------------------------------

def test_bad_input(tmp, capfd):
    root = os.path.join(tmp, "bad")
    os.makedirs(root)
    outside = os.path.join(tmp, "secret.raw")
    with open(outside, "wb") as f:
        f.write(b"S" * 65536)
    good = os.path.join(root, "good.qcow2")
    q("qemu-img", "create", "-f", "qcow2", good, "4M")
    qio(good, "write -P 0x11 0 1M")
    # backing path leaving the store, absolute and relative
    q("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", outside, "-u",
      os.path.join(root, "escape-abs.qcow2"), "64K")
    q("qemu-img", "create", "-f", "qcow2", "-F", "raw", "-b", "../secret.raw", "-u",
      os.path.join(root, "escape-rel.qcow2"), "64K")
    # a symlink pointing out of the store
    os.symlink(outside, os.path.join(root, "link.raw"))
    # not an image, a truncated header, a loop
    with open(os.path.join(root, "text.qcow2"), "w") as f:
        f.write("hello\n" * 100)
    with open(good, "rb") as f:
        hdr = f.read(40)
    with open(os.path.join(root, "trunc.qcow2"), "wb") as f:
        f.write(hdr)
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "loop-b.qcow2",
      os.path.join(root, "loop-a.qcow2"), "1M")
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "loop-a.qcow2",
      os.path.join(root, "loop-b.qcow2"), "1M")
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "loop-me.qcow2",
      os.path.join(root, "loop-me.qcow2"), "1M")
    ls = listing(root)
    assert "link.raw" not in ls
    assert sha_view(root, "good.qcow2", "current") == sha_qemu(good)
    for v in ("escape-abs.qcow2", "escape-rel.qcow2", "text.qcow2", "trunc.qcow2", "loop-me.qcow2"):
        assert v in ls, v
        assert sha_view(root, v, "current") == "ERR%d" % errno.EIO, v
    p = ds("ls", root)
    err = p.stderr.decode()
    # one line per problem, none mentioning the secret's contents
    assert err.count("link.raw") == 1
    assert "SSSS" not in err


def test_directory_of_10000_files(tmp):
    root = os.path.join(tmp, "many")
    os.makedirs(root)
    for i in range(10000):
        open(os.path.join(root, "junk%05d.txt" % i), "w").close()
    q("qemu-img", "create", "-f", "qcow2", os.path.join(root, "aaa.qcow2"), "1M")
    t = time.monotonic()
    p = ds("ls", root)
    assert time.monotonic() - t < 10
    assert "aaa.qcow2\tcurrent" in p.stdout.decode()
    assert p.stderr.decode().count("more than") == 1


@pytest.mark.parametrize("poll", ["0", "1"])
def test_new_files_appear_without_remount(tmp, poll):
    """inotify where the filesystem has it; the stat signature (NFS, CIFS, ...) with VSTORFS_DIR_POLL=1."""
    root = pve_store(tmp)
    img = os.path.join(root, "images", "100", VOL)
    env = dict(os.environ, VSTORFS_DIR_POLL=poll)
    p = subprocess.Popen([need(TOOL), "--no-recover", "watch", root, "6"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    time.sleep(1.5)
    q("qemu-img", "create", "-f", "qcow2", os.path.join(root, "images", "100", "vm-100-disk-5.qcow2"), "1M")
    time.sleep(2.2)
    q("qemu-img", "snapshot", "-c", "outside", img)   # an internal snapshot by someone else
    out, _ = p.communicate(timeout=30)
    seen = out.decode().split()
    assert seen[0] == "0" and seen.count("1") >= 2, seen
    ls = listing(root)
    assert "vm-100-disk-5.qcow2" in ls and "outside" in ls[VOL]


# -- through the mounted daemon ------------------------------------------



def Mount(source, mnt, binary=None, env=None, opts=""):
    """The one harness (vstorlib.Daemon), no devices= (a directory source)."""
    require_root()
    return start_daemon(source, mnt, opts=opts, binary=binary, env=env)


sha_file = sha256_file


def test_mounted_directory_store(tmp):
    root, cfg, img = take_chain(tmp, ("s1",))     # a volume chain: mkdir stays a chain without the cfg
    i100 = os.path.dirname(img)
    q("qemu-img", "snapshot", "-c", "inside", os.path.join(i100, "base-100-disk-2.qcow2"))
    m = Mount(root, os.path.join(tmp, "mnt"))
    try:
        top = os.path.join(m.mnt, "vz")
        assert sorted(os.listdir(top)) == ["base-100-disk-2.qcow2", "vm-100-disk-0.qcow2", "vm-100-disk-1.raw",
                                           "vm-102-disk-0.qcow2"]
        assert sorted(os.listdir(os.path.join(top, VOL))) == ["current", "s1"]
        assert sha_file(os.path.join(top, VOL, "current", "disk.raw")) == sha_qemu(img)
        assert sha_file(os.path.join(top, VOL, "s1", "disk.raw")) == \
            sha_qemu(os.path.join(i100, "snap-s1-" + VOL))
        assert sha_file(os.path.join(top, "base-100-disk-2.qcow2", "inside", "disk.raw")) == \
            sha_qemu(os.path.join(i100, "base-100-disk-2.qcow2"), "inside")
        # mkdir/rmdir: a chain volume stays a chain, others get internal snapshots
        os.mkdir(os.path.join(top, VOL, "s2"))
        assert os.path.exists(os.path.join(i100, "snap-s2-" + VOL))
        os.mkdir(os.path.join(top, "vm-102-disk-0.qcow2", "snapA"))
        assert qemu_snapshots(os.path.join(root, "images", "102", "vm-102-disk-0.qcow2")) == ["snapA"]
        assert sha_file(os.path.join(top, "vm-102-disk-0.qcow2", "snapA", "disk.raw")) == \
            sha_file(os.path.join(top, "vm-102-disk-0.qcow2", "current", "disk.raw"))
        st = os.stat(os.path.join(top, "vm-102-disk-0.qcow2", "snapA", "disk.raw"))
        assert abs(st.st_mtime - time.time()) < 60
        with pytest.raises(OSError) as e:
            os.mkdir(os.path.join(top, "vm-100-disk-1.raw", "s1"))
        assert e.value.errno == errno.EOPNOTSUPP
        os.rmdir(os.path.join(top, VOL, "s1"))
        os.rmdir(os.path.join(top, "vm-102-disk-0.qcow2", "snapA"))
        assert sorted(os.listdir(os.path.join(top, VOL))) == ["current", "s2"]
        assert qemu_snapshots(os.path.join(root, "images", "102", "vm-102-disk-0.qcow2")) == []
        # a new disk shows without a remount
        q("qemu-img", "create", "-f", "qcow2", os.path.join(i100, "vm-100-disk-3.qcow2"), "1M")
        end = time.monotonic() + 10
        while "vm-100-disk-3.qcow2" not in os.listdir(top):
            assert time.monotonic() < end
            time.sleep(0.2)
    finally:
        m.stop()
    for f in os.listdir(i100):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(i100, f))


def mapped_sha(path, flags):
    import mmap
    fd = os.open(path, os.O_RDONLY)
    try:
        m = mmap.mmap(fd, os.fstat(fd).st_size, flags=flags, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        return hashlib.sha256(m).hexdigest()
    finally:
        m.close()


def loop_sha(path):
    dev = subprocess.run(["losetup", "-f", "--show", "-r", path], check=True,
                         capture_output=True).stdout.decode().strip()
    try:
        return sha_file(dev)
    finally:
        subprocess.run(["losetup", "-d", dev], check=True)


def test_current_read_modes(tmp):
    """current skips the page cache by default: reads, loop devices and
    MAP_PRIVATE give qemu's bytes, new writes show at once, MAP_SHARED is
    refused (ENODEV); current_io=cache allows MAP_SHARED. Snapshot views keep
    their cache and map either way."""
    import mmap
    root, cfg, img = take_chain(tmp, ("s1",))
    s1 = os.path.join(os.path.dirname(img), "snap-s1-" + VOL)
    m = Mount(root, os.path.join(tmp, "mnt"))
    try:
        cur = os.path.join(m.mnt, "vz", VOL, "current", "disk.raw")
        snap = os.path.join(m.mnt, "vz", VOL, "s1", "disk.raw")
        assert os.stat(cur).st_blksize == 1 << 20     # what cp sizes its reads by
        assert sha_file(cur) == loop_sha(cur) == mapped_sha(cur, mmap.MAP_PRIVATE) == sha_qemu(img)
        with pytest.raises(OSError) as e:
            mapped_sha(cur, mmap.MAP_SHARED)
        assert e.value.errno == errno.ENODEV
        assert mapped_sha(snap, mmap.MAP_SHARED) == sha_qemu(s1)
        with open(cur, "rb") as f:                    # what the next open reads is new
            f.read(1 << 20)
        qio(img, "write -P 0x77 0 64k")
        with open(cur, "rb") as f:
            assert f.read(65536) == b"\x77" * 65536
    finally:
        m.stop()
    m = Mount(root, os.path.join(tmp, "mnt"), opts=",current_io=cache")
    try:
        cur = os.path.join(m.mnt, "vz", VOL, "current", "disk.raw")
        assert mapped_sha(cur, mmap.MAP_SHARED) == sha_file(cur) == loop_sha(cur) == sha_qemu(img)
    finally:
        m.stop()


def test_no_sanitizer_reports(tmp):
    """make test-asan points DIRSTORE at build-asan/dirstore: nothing the store logs may be a sanitizer report."""
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1")
    img = os.path.join(root, "images", "100", VOL)
    errs = []
    for args in (("mkdir", root, VOL, "s1"), ("mkdir", root, "vm-102-disk-0.qcow2", "i1"),
                 ("ls", root), ("cat", root, VOL, "s1"), ("map", root, VOL, "current"),
                 ("rmdir", root, VOL, "s1"), ("rmdir", root, "vm-102-disk-0.qcow2", "i1")):
        errs.append(ds(*args, cfg=cfg).stderr.decode())
    qemu_check(img)
    for e in errs:
        assert "Sanitizer" not in e and "runtime error:" not in e, e


def test_mixed_source_vg_and_directories(tmp):
    """SOURCE pve-like VG,/path,/path: each directory is a store named by its basename."""
    import conftest
    from conftest import disk_path
    e = conftest.Env()
    try:
        vg = e.vg(npvs=1, pv_size=256 * MiB)
        ch = e.chain(vg)
        v = ch.qcow2("vm-100-disk-0.qcow2", 8 * MiB)
        v.write(0, MiB, 0x61)
        ch.sync()
        root = pve_store(tmp)
        nova = os.path.join(tmp, "nfs1")
        os.makedirs(nova)
        q("qemu-img", "create", "-f", "qcow2", os.path.join(nova, "lib.qcow2"), "2M")
        d = e.mount("%s,%s,%s" % (vg.name, root, nova), vg.loops)
        assert sorted(os.listdir(d.mnt)) == sorted([vg.name, "vz", "nfs1"])
        assert sha_file(disk_path(d.mnt, "vz", VOL)) == sha_qemu(os.path.join(root, "images", "100", VOL))
        assert os.listdir(os.path.join(d.mnt, "nfs1")) == ["lib.qcow2"]
        assert os.path.getsize(disk_path(d.mnt, vg.name, "vm-100-disk-0.qcow2")) == 8 * MiB
    finally:
        e.close()


def pve_volume_snapshot(d, vol, snap):
    """Proxmox's volume_snapshot with snapshot-as-volume-chain, as Plugin.pm runs it."""
    os.rename(os.path.join(d, vol), os.path.join(d, "snap-%s-%s" % (snap, vol)))
    q("qemu-img", "create", "-F", "qcow2", "-b", "snap-%s-%s" % (snap, vol), "-f", "qcow2",
      os.path.join(d, vol), "-o", "extended_l2=on,cluster_size=128k,preallocation=metadata")


def test_proxmox_made_chain_then_vstorfs_and_back(tmp):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1")
    d = os.path.join(root, "images", "100")
    img = os.path.join(d, VOL)
    pve_volume_snapshot(d, VOL, "pve1")
    qio(img, "write -P 0xa7 2M 3M")
    pve_volume_snapshot(d, VOL, "pve2")
    qio(img, "write -P 0xa8 4M 1M")
    ls = listing(root, cfg)
    assert list(ls[VOL]) == ["current", "pve1", "pve2"]
    assert sha_view(root, VOL, "pve1") == sha_qemu(os.path.join(d, "snap-pve1-" + VOL))
    before = chain_views(root, cfg)
    # vstorfs takes one more and removes one of Proxmox's
    ds("mkdir", root, VOL, "ours", cfg=cfg)
    ds("rmdir", root, VOL, "pve2", cfg=cfg)
    after = chain_views(root, cfg)
    assert after["pve1"] == before["pve1"] and after["current"] == before["current"]
    assert after["ours"] == before["current"]
    # Proxmox deletes the oldest the way volume_snapshot_delete does: qemu-img commit of the
    # child, then the snapshot file renamed to the child's name
    info = json.loads(q("qemu-img", "info", "--output=json", img).stdout)
    child = img if info["backing-filename"] == "snap-pve1-" + VOL else os.path.join(d, "snap-ours-" + VOL)
    q("qemu-img", "commit", child)
    os.rename(os.path.join(d, "snap-pve1-" + VOL), child)
    final = chain_views(root, cfg)
    assert list(final) == ["current", "ours"]
    assert final["current"] == before["current"] == sha_qemu(img)
    for f in os.listdir(d):
        if f.endswith(".qcow2"):
            qemu_check(os.path.join(d, f))


@pytest.mark.parametrize("prealloc", ["off", "metadata", "falloc"])
def test_volume_chain_overlay_preallocation(tmp, prealloc):
    root = pve_store(tmp)
    cfg = storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1\n\tpreallocation %s" % prealloc)
    d = os.path.join(root, "images", "100")
    img = os.path.join(d, VOL)
    before = sha_qemu(img)
    ds("mkdir", root, VOL, "s1", cfg=cfg)
    ref = os.path.join(tmp, "ref.qcow2")
    q("qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", "snap-s1-" + VOL, "-u",
      "-o", "extended_l2=on,cluster_size=128k,preallocation=%s" % prealloc, ref, "32M")
    assert abs(os.path.getsize(ref) - os.path.getsize(img)) <= (128 * 1024 if prealloc != "off" else 0)
    if prealloc == "falloc":
        assert os.stat(img).st_blocks * 512 >= os.path.getsize(img) - 128 * 1024
    qemu_check(img)
    assert sha_qemu(img) == before
    qio(img, "write -P 0x5a 0 3M")
    assert sha_view(root, VOL, "current") == sha_qemu(img)
    ds("rmdir", root, VOL, "s1", cfg=cfg)
    qemu_check(img)
    assert sha_view(root, VOL, "current") == sha_qemu(img)


def test_busy_backing_file_of_a_running_clone_refused(tmp):
    root = pve_store(tmp)
    clone = os.path.join(root, "images", "102", "vm-102-disk-0.qcow2")
    # the clone open read-write: its backing file (the template) is locked against writers
    p = subprocess.Popen(["qemu-io", "-f", "qcow2", clone], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        assert ds("mkdir", root, "base-100-disk-2.qcow2", "t1", check=False).returncode == errno.EBUSY
        ds("mkdir", root, VOL, "other")    # an unrelated volume is not held
    finally:
        p.communicate(b"quit\n", timeout=10)
    ds("mkdir", root, "base-100-disk-2.qcow2", "t1")


def test_proxmox_chain_loop_and_escape(tmp):
    root = pve_store(tmp)
    d = os.path.join(root, "images", "100")
    # vm-100-disk-4 -> snap-xx-vm-100-disk-4 -> vm-100-disk-4: a loop through two files
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "snap-xx-vm-100-disk-4.qcow2",
      os.path.join(d, "vm-100-disk-4.qcow2"), "1M")
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "vm-100-disk-4.qcow2",
      os.path.join(d, "snap-xx-vm-100-disk-4.qcow2"), "1M")
    # a snap-* layer whose backing leaves the store
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "raw", "-b", "../../../../etc/hostname",
      os.path.join(d, "snap-yy-vm-100-disk-5.qcow2"), "1M")
    q("qemu-img", "create", "-f", "qcow2", "-u", "-F", "qcow2", "-b", "snap-yy-vm-100-disk-5.qcow2",
      os.path.join(d, "vm-100-disk-5.qcow2"), "1M")
    ls = listing(root)
    assert sha_view(root, "vm-100-disk-4.qcow2", "current") == "ERR%d" % errno.EIO
    assert sha_view(root, "vm-100-disk-5.qcow2", "yy") == "ERR%d" % errno.EIO
    assert sha_view(root, "vm-100-disk-5.qcow2", "current") == "ERR%d" % errno.EIO
    assert sha_view(root, VOL, "current") == sha_qemu(os.path.join(d, VOL))   # the rest keeps working
    assert "xx" in ls["vm-100-disk-4.qcow2"]


def test_volume_chain_rmdir_after_resize_keeps_the_size(tmp):
    root, cfg, img = take_chain(tmp, ("s1",))
    d = os.path.dirname(img)
    qio(os.path.join(d, "snap-s1-" + VOL), "write -P 0xee 8M 20M")   # commit would move less...
    q("qemu-img", "resize", "-f", "qcow2", img, "48M")                # ...but would shrink the disk
    before = chain_views(root, cfg)
    ds("rmdir", root, VOL, "s1", cfg=cfg)
    assert listing(root, cfg)[VOL]["current"]["size"] == 48 * MiB
    assert chain_views(root, cfg) == {"current": before["current"]}
    qemu_check(img)
    assert sha_qemu(img) == before["current"]
