"""Power-cut crash states of every snapshot operation vstorfs writes.

Each test runs one operation on a store whose files live on the recorder
(recorder.c, a logging passthrough FUSE file system), then checks every
crash state the replayer (replay.py, whose docstring states the persistence
model) builds from the log: after recovery every view that existed before
reads as qemu read it, the view taken or removed is whole or gone,
qemu-img check finds no errors and no leaks, a second recovery finds
nothing, and the next mkdir succeeds.

POWERLOSS_STATES=N (default 24) is the number of random combinations per
crash point where there are too many to try all; POWERLOSS_SEED picks them.
Per-operation figures are printed (run with -s) and written to
build/powerloss-<case>.json.
"""

import glob
import json
import os
import shutil
import struct
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plharness import (DirCase, REPO, RECORDER, DIRSTORE, REGRESSIONS, BUDGET, SEED, check_regression, ds, cfg_args,
                       fresh_work, qemu_sha, qio, run, MiB)

VOL = "vm-100-disk-0.qcow2"
VOLDIR = "images/100"


@pytest.fixture(autouse=True)
def tools():
    if os.geteuid() != 0:
        pytest.skip("needs root (FUSE mounts)")
    for t in (RECORDER, DIRSTORE):
        if not os.access(t, os.X_OK):
            pytest.skip("%s not built (make test-powerloss)" % t)


def report(case):
    st = dict(case.stats, ops=len(case.ops))
    print("\npowerloss %s: %s" % (case.name, st), flush=True)
    out = os.environ.get("POWERLOSS_OUT") or os.path.join(REPO, "build")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "powerloss-%s.json" % case.name), "w") as f:
        json.dump(st, f)
    assert not case.failures, "%d of %d crash states fail, first: %s" % (
        len(case.failures), case.stats["checked"], case.failures[:3])
    return st


# -- directory store: Proxmox volume chains ------------------------------

def chain_store(case, snaps):
    """A volume with snap-* layers, made by vstorfs itself (as test_dirstore does)."""
    root = case.backing
    img = case.img()
    run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=64k", img, "8M")
    qio(img, "write -P 0x31 0 1M", "write -P 0x32 5M 512k")
    cfg = cfg_args(root, True)
    for i, s in enumerate(snaps):
        ds(*cfg, "mkdir", root, VOL, s, check=True)
        qio(img, "write -P 0x%x %dk 768k" % (0x90 + i, 512 + 1536 * i))
    return img


def scatter(img, pattern, n=12):
    """Small writes spread over the disk: a merge of this layer is many writes between flushes."""
    qio(img, *["write -P 0x%x %d 16k" % (pattern + i, (i * 600 + 40) * 1024) for i in range(n)])


def chain_views(case, snaps):
    d = os.path.join(case.backing, VOLDIR)
    out = {s: qemu_sha(os.path.join(d, "snap-%s-%s" % (s, VOL))) for s in snaps}
    out["current"] = qemu_sha(case.img())
    return out


def test_chain_mkdir():
    case = DirCase("chain-mkdir", fresh_work("chain-mkdir"), VOLDIR, VOL, True)
    chain_store(case, ("s1",))
    before = chain_views(case, ("s1",))
    case.record(("mkdir", "s2"), before, "s2", before["current"], True)
    case.run_sweep()
    report(case)


@pytest.mark.parametrize("how", ["commit", "rebase"])
@pytest.mark.parametrize("pos", ["oldest", "newest"])
def test_chain_rmdir(how, pos):
    name = "chain-rmdir-%s-%s" % (how, pos)
    case = DirCase(name, fresh_work(name), VOLDIR, VOL, True)
    img = chain_store(case, ("s1", "s2"))
    d = os.path.dirname(img)
    victim = "s1" if pos == "oldest" else "s2"
    child = os.path.join(d, "snap-s2-" + VOL) if victim == "s1" else img
    layer = os.path.join(d, "snap-%s-%s" % (victim, VOL))
    # whichever layer holds less moves: commit when the child is the small one
    qio(layer if how == "commit" else child, "write -P 0xee 1M 3M")
    scatter(child if how == "commit" else layer, 0xa0)
    before = chain_views(case, ("s1", "s2"))
    victim_sha = before.pop(victim)
    case.record(("rmdir", victim), before, victim, victim_sha, False)
    kinds = {o.type for o in case.ops}
    case.run_sweep()
    report(case)
    from replay import R_RENAME, R_UNLINK
    # the operation went the way asked: commit renames S over C, rebase unlinks S
    assert (R_UNLINK in kinds) == (how == "rebase") or how == "commit", kinds


# -- directory store: internal snapshots ---------------------------------

def isnap_store(case):
    img = case.img()
    run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=4k", img, "16M")
    qio(img, "write -P 0x41 0 2M")
    scatter(img, 0x60, 20)
    run("qemu-img", "snapshot", "-c", "s1", img)
    qio(img, "write -P 0xc1 1M 2M")
    return img


def test_isnap_create():
    case = DirCase("isnap-create", fresh_work("isnap-create"), VOLDIR, VOL, False)
    img = isnap_store(case)
    before = {"s1": qemu_sha(img, "s1"), "current": qemu_sha(img)}
    case.record(("mkdir", "s2"), before, "s2", before["current"], True)
    case.run_sweep()
    report(case)


def test_isnap_delete():
    case = DirCase("isnap-delete", fresh_work("isnap-delete"), VOLDIR, VOL, False)
    img = isnap_store(case)
    run("qemu-img", "snapshot", "-c", "s2", img)
    qio(img, "write -P 0xc2 3M 2M")
    before = {"s1": qemu_sha(img, "s1"), "s2": qemu_sha(img, "s2"), "current": qemu_sha(img)}
    victim_sha = before.pop("s1")
    case.record(("rmdir", "s1"), before, "s1", victim_sha, False)
    case.run_sweep()
    report(case)


def refcount_table(img):
    with open(img, "rb") as f:
        return struct.unpack(">QI", f.read(60)[48:60])


def test_isnap_create_grows_refcount_table():
    """512-byte clusters, 64-bit refcounts: one refcount table cluster covers 2 MiB
    of file. Snapshots are added by qemu until the next one vstorfs takes has to
    move the refcount table; that create is the one recorded."""
    case = DirCase("isnap-create-grow", fresh_work("isnap-create-grow"), VOLDIR, VOL, False)
    img = case.img()
    run("qemu-img", "create", "-f", "qcow2", "-o", "cluster_size=512,refcount_bits=64", img, "4M")
    qio(img, "write -P 0x51 0 1950k")
    probe = os.path.join(case.work, "probe")
    snaps = []
    for n in range(200):
        shutil.rmtree(probe, ignore_errors=True)
        shutil.copytree(case.backing, probe)
        rt = refcount_table(img)
        ds("mkdir", probe, VOL, "grow", check=True)
        if refcount_table(os.path.join(probe, VOLDIR, VOL)) != rt:
            break
        run("qemu-img", "snapshot", "-c", "q%d" % n, img)
        snaps.append("q%d" % n)
    else:
        pytest.fail("the refcount table never had to grow")
    shutil.rmtree(probe)
    before = {"current": qemu_sha(img)}
    for s in snaps:
        before[s] = qemu_sha(img, s)
    rt = refcount_table(img)
    case.record(("mkdir", "grow"), before, "grow", before["current"], True)
    assert refcount_table(img) != rt, "the recorded create did not move the refcount table"
    case.run_sweep()
    report(case)


# -- kept crash states ----------------------------------------------------

KEPT = sorted(p for p in glob.glob(os.path.join(REGRESSIONS, "*.tar.gz"))
              if not os.path.basename(p).startswith("lvm-"))
KEPT_LVM = sorted(glob.glob(os.path.join(REGRESSIONS, "lvm-*.tar.gz")))


@pytest.mark.parametrize("path", KEPT, ids=[os.path.basename(p) for p in KEPT])
def test_regression(path):
    work = fresh_work("regression")
    meta, err = check_regression(path, work)
    assert err is None, "%s (%s): %s" % (os.path.basename(path), meta["label"], err)


# -- LVM: the PV file on the recorder, a loop device over it ---------------

from plharness import LONG
# distinct LVM states checked per operation (cheap check each, pllvm.CheapLvm); 0: every one
LVM_CHECKED = int(os.environ.get("POWERLOSS_LVM_CHECKED", "0" if LONG else "150")) or 1 << 30


def lvm_case(name, direct_io=False):
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import pllvm
    for t in (pllvm.DAEMON,):
        if not os.access(t, os.X_OK):
            pytest.skip("%s not built" % t)
    return pllvm.LvmCase(name, fresh_work(name), direct_io)


def lvm_run(case, op, snaps, victim, heavy):
    try:
        case.record(op, snaps, victim, heavy)
        case.run_sweep(BUDGET, SEED, LVM_CHECKED)
    finally:
        case.close()
    report(case)


@pytest.mark.parametrize("direct_io", [False, True], ids=["loop-buffered", "loop-direct"])
def test_lvm_mkdir(direct_io):
    case = lvm_case("lvm-mkdir-%s" % ("direct" if direct_io else "buffered"), direct_io)
    lvm_run(case, "mkdir", ("s1",), "new", False)


@pytest.mark.parametrize("how,victim", [("commit", "s1"), ("commit", "s2"), ("rebase", "s1"), ("rebase", "s2")])
def test_lvm_rmdir(how, victim):
    case = lvm_case("lvm-rmdir-%s-%s" % (how, victim))
    # heavy: newer layers hold more, so removing an old snapshot rebases
    lvm_run(case, "rmdir", ("s1", "s2"), victim, how == "rebase")
    # the operation went the way asked (store/snap_merge.c's log line)
    way = "by committing the child" if how == "commit" else "by rebasing the child"
    assert way in case.daemon_log, case.daemon_log[-2000:]


def test_lvm_rmdir_commit_then_mkdir():
    """Two operations in one log: the commit's lvremove frees extents the next
    mkdir's lvcreate may hand out again. Checked: for every flush, the state
    with every pending extent write landed and no pending lvm2 metadata write,
    and the converse (a device reorders them as it likes)."""
    case = lvm_case("lvm-commit-then-mkdir")
    try:
        case.record_ops([("rmdir", "s1"), ("mkdir", "new")], ("s1", "s2"), False)
        case.run_split()
    finally:
        case.close()
    report(case)
    # the order itself: no flush window holds lvm2 metadata writes and extent writes together
    assert case.mixed == 0, "%d flush windows mix lvm2 commits with image writes" % case.mixed


@pytest.mark.parametrize("path", KEPT_LVM, ids=[os.path.basename(p) for p in KEPT_LVM])
def test_lvm_regression(path):
    sys.path.insert(0, os.path.join(REPO, "tests"))
    import pllvm
    work = fresh_work("lvm-regression")
    meta, err = pllvm.check_regression(path, work)
    assert err is None, "%s (%s): %s" % (os.path.basename(path), meta["label"], err)
