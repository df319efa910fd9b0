"""Merge engine tests on files: build/qcow2merge (chain/merge + qcow2_writer)
deletes a snapshot of a qemu-made chain, by commit or rebase, at every
position; qemu is the reference for every surviving view before and after,
and `qemu-img check` must find neither corruption nor a leaked cluster in
the image the merge wrote.

The stacks are Proxmox-shaped (standard-L2 base, extended-L2 overlays, all
with preallocated metadata) and vary where the data sits: preallocated
clusters nobody wrote, zero-flagged clusters (preallocated or not), zeros
written over data and data over zeros, compressed clusters.

Self-contained (no root, no LVM). QCOW2MERGE=path selects another build.
"""
import json
import os
import random
import shutil
import subprocess

import pytest

from vstorlib import SAN_ENV, tool_bin

import test_engine as engine
from test_engine import run, qio, reference as view

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1024, 1024 * 1024
SIZE = 48 * MiB
ROOM = 32 * MiB   # slack past each image's end, as the LV leaves it

BASE = ("preallocation=metadata",)
OVERLAY = ("extended_l2=on", "cluster_size=128k", "preallocation=metadata")


@pytest.fixture(scope="session")
def merge_bin():
    return tool_bin("QCOW2MERGE", "build/qcow2merge")


def create(path, opts, backing=None):
    return engine.create(path, SIZE, *opts, backing=backing)


def check(path):
    """qemu-img check: (exit status, its JSON report)."""
    p = subprocess.run(["qemu-img", "check", "-f", "qcow2", "--output=json", str(path)],
                       capture_output=True, text=True)
    return p.returncode, json.loads(p.stdout) if p.stdout.strip() else {}


def assert_clean(path, what):
    rc, rep = check(path)
    assert rc == 0 and not rep.get("leaks") and not rep.get("corruptions"), \
        f"{what}: qemu-img check exit {rc}: {rep}"


def random_writes(rng, n, zero_share=0.15):
    cmds = []
    for _ in range(n):
        length = rng.choice([512, 4 * KiB, 64 * KiB, 128 * KiB, MiB, rng.randrange(1, 2048) * 512])
        off = rng.randrange(0, SIZE - length) // 512 * 512
        if rng.random() < zero_share:
            cmds.append(f"write -z {off} {length}")
        else:
            cmds.append(f"write -P {rng.randrange(1, 256)} {off} {length}")
    return cmds


def build(tmp_path, layers):
    """layers: [(qcow2 options, qemu-io commands)], bottom first. Paths, bottom first."""
    paths = []
    for i, (opts, cmds) in enumerate(layers):
        p = create(tmp_path / f"l{i}.qcow2", opts, backing=paths[-1] if paths else None)
        if cmds:
            qio(p, *cmds)
        paths.append(p)
    for p in paths:
        assert_clean(p, f"{p.name} as qemu made it")
    return paths


def merge(merge_bin, paths, s, direction):
    """Delete snapshot layer paths[s] (its child is paths[s + 1]); the file
    names the surviving layers keep, as the LV renames leave them."""
    c = paths[s + 1]
    target = paths[s] if direction == "commit" else c
    with open(target, "r+b") as f:
        f.truncate(os.path.getsize(target) + ROOM)
    p = subprocess.run([merge_bin, direction, str(c)], capture_output=True, text=True,
                       timeout=120, env=SAN_ENV)
    assert p.returncode == 0, p.stderr
    assert_clean(target, f"{direction} of {paths[s].name} into {target.name}")
    if direction == "commit":
        os.replace(paths[s], c)   # S takes C's name
    else:
        os.unlink(paths[s])
    return paths[:s] + paths[s + 1:]


def merge_everywhere(merge_bin, tmp_path, layers):
    """Every direction at every position, each on a fresh copy: the views
    that survive read as before and the written image checks clean."""
    src = tmp_path / "src"
    src.mkdir()
    paths = build(src, layers)
    before = [view(p) for p in paths]
    for direction in ("commit", "rebase"):
        for s in range(len(paths) - 1):
            work = tmp_path / f"{direction}{s}"
            shutil.copytree(src, work)
            mine = [work / p.name for p in paths]
            left = merge(merge_bin, mine, s, direction)
            want = before[:s] + before[s + 1:]
            for p, data in zip(left, want):
                assert view(p) == data, f"{direction} at {s}: view {p.name} changed"
            shutil.rmtree(work)


def test_issue_case(merge_bin, tmp_path):
    """The reported stack: remove the middle snapshot, then the oldest."""
    rng = random.Random(11)
    layers = [(BASE, random_writes(rng, 60))] + [(OVERLAY, random_writes(rng, 60)) for _ in range(3)]
    src = tmp_path / "src"
    src.mkdir()
    paths = build(src, layers)
    before = [view(p) for p in paths]
    for direction in ("commit", "rebase"):
        work = tmp_path / direction
        shutil.copytree(src, work)
        mine = [work / p.name for p in paths]
        mine = merge(merge_bin, mine, 1, direction)
        mine = merge(merge_bin, mine, 0, direction)
        want = [before[2], before[3]]
        assert [view(p) for p in mine] == want


# Where data sits in each layer of a 3-layer stack (base, two overlays).
WRITE_ALL = [f"write -P 0x5a 0 {SIZE}"]
ZEROS_OVER_DATA = [f"write -P 0x11 0 {SIZE // 2}", "write -z 64k 64k", "write -z 1M 3M",
                   "write -z 8M 4k", "write -z 9M 128k"]
DATA_OVER_ZEROS = ["write -z 0 16M", "write -P 0x22 64k 64k", "write -P 0x23 2M 4k",
                   "write -P 0x24 3M 1M", "write -P 0x25 5M 512"]
SCATTER = ["write -P 0x31 4k 512", "write -P 0x32 200k 4k", "write -P 0x33 1M 130k",
           "write -P 0x34 20M 1M", "write -z 20M 64k", "write -z 30M 512"]


@pytest.mark.parametrize("base,mid,top", [
    (ZEROS_OVER_DATA, DATA_OVER_ZEROS, SCATTER),
    (DATA_OVER_ZEROS, ZEROS_OVER_DATA, ZEROS_OVER_DATA),
    (WRITE_ALL, ["write -z 0 48M"], DATA_OVER_ZEROS),
    ([], SCATTER, ZEROS_OVER_DATA),
    (["write -z 0 48M"], [], DATA_OVER_ZEROS),
    (SCATTER, ["write -z -u 0 8M", "write -P 0x44 1M 64k"], []),
], ids=["zeros-data-scatter", "data-zeros-zeros", "full-zeroed-data", "empty-base",
        "zero-base", "unmapped-zeros"])
def test_distributions(merge_bin, tmp_path, base, mid, top):
    merge_everywhere(merge_bin, tmp_path, [(BASE, base), (OVERLAY, mid), (OVERLAY, top)])


def test_plain_layers(merge_bin, tmp_path):
    """Standard L2 everywhere, without preallocation: zero flags without a cluster."""
    merge_everywhere(merge_bin, tmp_path, [((), ZEROS_OVER_DATA), ((), DATA_OVER_ZEROS),
                                           (("cluster_size=4k",), SCATTER)])


@pytest.mark.parametrize("seed", [1, 2])
def test_random_stacks(merge_bin, tmp_path, seed):
    rng = random.Random(seed)
    merge_everywhere(merge_bin, tmp_path, [(BASE, random_writes(rng, 60))] +
                     [(OVERLAY, random_writes(rng, 60, 0.3)) for _ in range(2)])


def test_compressed_clusters(merge_bin, tmp_path):
    """A compressed base (qemu-img convert -c): replaced compressed clusters are freed."""
    src = tmp_path / "plain.qcow2"
    create(src, ())
    qio(src, "write -P 0x61 0 8M", "write -P 0x62 20M 3M")
    comp = tmp_path / "src.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", src, comp)
    os.makedirs(tmp_path / "c")
    os.replace(comp, tmp_path / "c" / "l0.qcow2")
    base = tmp_path / "c" / "l0.qcow2"
    top = create(tmp_path / "c" / "l1.qcow2", OVERLAY, backing=base)
    qio(top, "write -P 0x63 64k 4k", "write -z 1M 128k", "write -P 0x64 7M 2M")
    before = view(top)
    for direction in ("commit", "rebase"):
        work = tmp_path / direction
        shutil.copytree(tmp_path / "c", work)
        left = merge(merge_bin, [work / "l0.qcow2", work / "l1.qcow2"], 0, direction)
        assert view(left[0]) == before


@pytest.mark.parametrize("bad_l1_entry", [
    lambda e: e & ~(1 << 63),
    # qemu reads it as unallocated; qemu-img check takes the header for an L2 table
    lambda e: 1 << 63,
], ids=["copied-dropped", "copied-without-offset"])
def test_refuses_inconsistent_image(merge_bin, tmp_path, bad_l1_entry):
    """An image qemu-img check finds errors in is refused before any write
    (the writer trusts its refcounts); leaks alone are no reason to refuse."""
    paths = build(tmp_path, [(BASE, ["write -P 1 0 1M", "write -z 64k 64k"]),
                             (OVERLAY, ["write -P 2 0 4k"])])
    with open(paths[0], "r+b") as f:       # the first L1 entry
        f.seek(40)
        l1 = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        e = int.from_bytes(f.read(8), "big")
        f.seek(l1)
        f.write(bad_l1_entry(e).to_bytes(8, "big"))
    assert check(paths[0])[0] == 2
    with open(paths[0], "rb") as f:
        image = f.read()
    p = subprocess.run([merge_bin, "commit", str(paths[1])], capture_output=True, text=True,
                       env=SAN_ENV)
    assert p.returncode == 1 and "qemu-img check" in p.stderr, p.stderr
    with open(paths[0], "rb") as f:
        assert f.read() == image


@pytest.mark.parametrize("bits", [1, 4, 16])
def test_commit_into_narrow_refcounts(tmp_path, merge_bin, bits):
    """Refcounts narrower than a byte fill each byte from its least significant
    bit (qemu's get_refcount_ro0..2): the writer must count them as qemu does."""
    base = engine.create(tmp_path / "base.qcow2", 8 * MiB, f"refcount_bits={bits}")
    qio(base, "write -P 1 0 3M")
    top = engine.create(tmp_path / "top.qcow2", 8 * MiB, f"refcount_bits={bits}", backing=base)
    qio(top, "write -P 2 1M 3M")
    expect = view(top)
    os.truncate(base, os.path.getsize(base) + 16 * MiB)   # room: files here do not grow
    subprocess.run([merge_bin, "commit", str(top)], check=True, capture_output=True)
    assert_clean(base, f"commit into refcount_bits={bits}")
    assert view(base) == expect


@pytest.mark.parametrize("p_size,s_size", [
    (40 * MiB, 16 * MiB), (40 * MiB, 16 * MiB + 1536), (16 * MiB, 16 * MiB),
], ids=["parent-longer", "parent-longer-unaligned", "disk-grew"])
def test_rebase_past_shorter_snapshot(merge_bin, tmp_path, p_size, s_size):
    """A backing layer shorter than its child reads as zeros past its end.
    Rebasing C from such an S onto a longer P must write those zeros into C
    where P has data there (as qemu-img rebase does); where P ends with S
    (a disk grown since), there is nothing past S to write."""
    p = engine.create(tmp_path / "p.qcow2", p_size, *BASE)
    qio(p, f"write -P 0x5a 0 {p_size}")
    s = engine.create(tmp_path / "s.qcow2", s_size, *OVERLAY, backing=p)
    qio(s, "write -P 0x22 0 1M", f"write -P 0x23 {s_size - 1024} 512")
    c = engine.create(tmp_path / "c.qcow2", SIZE, *OVERLAY, backing=s)
    qio(c, "write -P 0x33 2M 64k", "write -P 0x34 20M 1M", "write -z 30M 64k")
    for path in (p, s, c):
        assert_clean(path, f"{path.name} as qemu made it")
    before, end = view(c), check(c)[1]["image-end-offset"]
    left = merge(merge_bin, [p, s, c], 1, "rebase")
    assert view(left[1]) == before
    grew = check(c)[1]["image-end-offset"] - end
    # S's own 1 MiB (in 128 KiB clusters) always; past S's end, P's data less C's own.
    assert grew < (2 * MiB if p_size == s_size else p_size - s_size)
