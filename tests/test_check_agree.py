"""The writer's check gate (chain/qcow2_check.c, shown by `qcow2cat
--check`) against `qemu-img check --output=json`: the same corruptions,
leaks and check errors on every image of a corpus.

The corpus: qemu-made images of every option combination (cluster sizes
512 B .. 2 MiB, standard and extended L2, preallocation off / metadata /
falloc, refcount_bits 1 .. 64, compressed clusters, internal snapshots,
backing files), written by qemu-io at unaligned and sub-cluster offsets,
some truncated inside their last cluster; then the same images with
bytes patched (tests/hostile.py's builders, and the rule-by-rule cases
below). Where qemu-img check cannot open an image, the gate must refuse it
too. Then a snapshot layer shaped as issue 18 item 3 (a file ending
inside a cluster) is removed by rmdir in a directory store: clean after,
and every view reads as qemu reads it.

Self-contained (no LVM); under two minutes. QCOW2CAT=path selects another
build of qcow2cat (build-asan/qcow2cat).
"""
import os
import struct
import subprocess
import types

import pytest

import hostile
import lvmlib
import test_engine as engine
from test_engine import qio, reference as view
from vstorlib import qemu_check_json, tool_bin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1024, 1024 * 1024
OFFSET_MASK = 0x00fffffffffffe00






def qemu_verdict(path):
    """(corruptions, leaks, check errors) or None when qemu-img cannot check the image."""
    _, r, _ = qemu_check_json(path, fmt="qcow2")
    if r is None:
        return None
    return r.get("corruptions", 0), r.get("leaks", 0), r.get("check-errors", 0)


@pytest.fixture(scope="module", autouse=True)
def dirstore_bin():
    return tool_bin("DIRSTORE", "build/dirstore")


def gate_check(cat_bin, path):
    """(corruptions, leaks, check errors), "refused" (the walk failed), or "unsupported"."""
    p = subprocess.run([cat_bin, "--check", str(path)], capture_output=True, text=True,
                       timeout=60, env=engine.SAN_ENV)
    assert p.returncode in (0, 1, 2, 3), p.stderr
    if p.returncode == 1:
        return "unsupported" if "Operation not supported" in p.stderr else "refused"
    r = dict(line.split(" ", 1) for line in p.stdout.splitlines())
    return int(r["corruptions"]), int(r["leaks"]), int(r.get("check_errors", 0))


def agree(cat_bin, path, tally):
    want, got = qemu_verdict(path), gate_check(cat_bin, path)
    tally.append((os.path.basename(str(path)), want, got))
    if got == "unsupported":
        return
    if want is None:
        assert got == "refused" or got[0] or got[2], f"{path}: qemu cannot check it, the gate finds {got}"
    else:
        assert got == want, f"{path}: qemu-img check {want}, the gate {got}"


def make(path, size, opts, cmds=(), backing=None):
    engine.create(path, size, *opts, backing=backing)
    if cmds:
        qio(path, *cmds)
    return path


# Writes at unaligned and sub-cluster offsets, and one near the end of the disk.
WRITES = ("write -P 1 0 4k", "write -P 2 1536 3584", "write -P 3 65535 2", "write -z 300k 20k",
          "write -P 4 1M 512", "write -P 5 3M 130k", "write -P 6 8387584 512")
SIZE = 8 * MiB

CLUSTERS = ("512", "4k", "16k", "64k", "128k", "2M")
PREALLOC = ("off", "metadata", "falloc")


def option_sets():
    for cs in CLUSTERS:
        for ext in ("off", "on"):
            if ext == "on" and cs in ("512", "4k"):
                continue
            for pre in PREALLOC:
                yield f"{cs}-{ext}-{pre}", (f"cluster_size={cs}", f"extended_l2={ext}",
                                           f"preallocation={pre}")
    for bits in (1, 2, 4, 8, 32, 64):
        for ext in ("off", "on"):
            yield f"rc{bits}-{ext}", ("cluster_size=64k", f"extended_l2={ext}", f"refcount_bits={bits}")
    yield "v2", ("compat=0.10", "cluster_size=64k")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """qemu-made images: [(path, what qemu did)], every one checked later."""
    d = tmp_path_factory.mktemp("corpus")
    out = []
    for name, opts in option_sets():
        p = make(d / f"{name}.qcow2", SIZE, opts, WRITES if "compat=0.10" not in opts else WRITES[:2])
        out.append(p)
        # the same options, one sub-cluster write alone: with extended L2 the file ends inside it
        q = make(d / f"{name}-tail.qcow2", SIZE, opts)
        qio(q, "write -P 9 2M 4k")
        out.append(q)
    # compressed clusters, both compression types, sub-cluster rewrites over them
    raw = d / "src.raw"
    with open(raw, "wb") as f:
        for i in range(SIZE // 4096):
            f.write(bytes([i % 251]) * 2048 + os.urandom(16) + bytes(2032))
    for ctype in ("zlib", "zstd"):
        for cs in ("4k", "64k", "2M"):
            p = d / f"comp-{ctype}-{cs}.qcow2"
            subprocess.run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
                            f"cluster_size={cs},compression_type={ctype}", str(raw), str(p)], check=True)
            out.append(p)
            q = d / f"comp-{ctype}-{cs}-rw.qcow2"
            subprocess.run(["cp", str(p), str(q)], check=True)
            qio(q, "write -P 7 4k 1k", "write -z 1M 64k")
            out.append(q)
    # internal snapshots (COPIED cleared, shared clusters), written after
    for cs, ext in (("64k", "off"), ("128k", "on"), ("512", "off")):
        p = make(d / f"isnap-{cs}-{ext}.qcow2", SIZE, (f"cluster_size={cs}", f"extended_l2={ext}"), WRITES)
        for i in range(3):
            subprocess.run(["qemu-img", "snapshot", "-c", f"s{i}", str(p)], check=True)
            qio(p, f"write -P {10 + i} {i * 100}k 4k")
        subprocess.run(["qemu-img", "snapshot", "-d", "s1", str(p)], check=True)
        out.append(p)
    for bits in (2, 64):
        p = make(d / f"isnap-rc{bits}.qcow2", SIZE, (f"refcount_bits={bits}",), WRITES[:3])
        subprocess.run(["qemu-img", "snapshot", "-c", "a", str(p)], check=True)
        qio(p, "write -P 3 0 64k")
        out.append(p)
    # backing chains: a sub-cluster write in an overlay over another cluster size
    base = make(d / "chain-base.qcow2", SIZE, ("cluster_size=64k",), WRITES)
    mid = make(d / "chain-mid.qcow2", SIZE, ("cluster_size=128k", "extended_l2=on"), ("write -P 8 0 4k",),
               backing=base)
    top = make(d / "chain-top.qcow2", SIZE, ("cluster_size=2M", "extended_l2=on"), ("write -P 9 5k 1k",),
               backing=mid)
    out += [base, mid, top]
    return out


def test_qemu_made_images(cat_bin, corpus):
    tally = []
    for p in corpus:
        agree(cat_bin, p, tally)
    assert len(tally) >= 100
    # qemu's own images never count anything
    assert all(w == (0, 0, 0) for _, w, _ in tally), [t for t in tally if t[1] != (0, 0, 0)]


def test_item3_image_is_clean(cat_bin, tmp_path):
    """Issue 18 item 3: 128 KiB extended-L2 clusters, no preallocation, one
    4 KiB write: the file ends inside its last data cluster."""
    p = make(tmp_path / "item3.qcow2", 1 * MiB, ("cluster_size=131072", "extended_l2=on"), ("write 0 4k",))
    assert os.path.getsize(p) % 131072 == 4096
    assert qemu_verdict(p) == (0, 0, 0)
    assert gate_check(cat_bin, p) == (0, 0, 0)


# ---- patched images: each breaks one rule qemu-img check counts ----

def _read(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)


def _write(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def _u64(path, off):
    return struct.unpack(">Q", _read(path, off, 8))[0]


def _layout(path):
    h = _read(path, 0, 104)
    cb = struct.unpack(">I", h[20:24])[0]
    l1 = struct.unpack(">Q", h[40:48])[0]
    rt = struct.unpack(">Q", h[48:56])[0]
    ext = struct.unpack(">I", h[4:8])[0] >= 3 and struct.unpack(">Q", h[72:80])[0] & 16
    return types.SimpleNamespace(cs=1 << cb, l1=l1, rt=rt, l2=_u64(path, l1) & OFFSET_MASK,
                                 es=16 if ext else 8)


def _patched(d, name, opts, cmds, patch):
    p = make(d / f"{name}.qcow2", 4 * MiB, opts, cmds)
    patch(p, _layout(p))
    return p


def _dup_entry(p, g):        # entry 1 names entry 0's cluster
    _write(p, g.l2 + g.es, _read(p, g.l2, 8))


def _dup_entry_copied_off(p, g):
    e = _u64(p, g.l2) & ~(1 << 63)
    _write(p, g.l2, struct.pack(">Q", e))
    _write(p, g.l2 + g.es, struct.pack(">Q", e))


def _cut_cluster_past_data(p, g):   # the last data cluster starts past the end
    last = max(_u64(p, g.l2 + i * g.es) & OFFSET_MASK for i in range(g.cs // g.es))
    os.truncate(p, last)


def _cut_inside_data(p, g):
    last = max(_u64(p, g.l2 + i * g.es) & OFFSET_MASK for i in range(g.cs // g.es))
    os.truncate(p, last + 512)


def _grow(p, g):              # past the end: clusters nobody counts
    os.truncate(p, os.path.getsize(p) + 3 * g.cs + 100)


def _l2_reserved(p, g):
    _write(p, g.l2, struct.pack(">Q", _u64(p, g.l2) | 1 << 4))


def _l1_reserved(p, g):
    _write(p, g.l1, struct.pack(">Q", _u64(p, g.l1) | 1 << 60))


def _l1_flags_only(p, g):     # an L1 entry naming cluster 0 as its table
    _write(p, g.l1 + 8, struct.pack(">Q", 1 << 63))


def _misaligned_data(p, g):
    _write(p, g.l2, struct.pack(">Q", _u64(p, g.l2) + 4096))


def _misaligned_l2(p, g):
    _write(p, g.l1, struct.pack(">Q", _u64(p, g.l1) + 1024))


def _reft_reserved(p, g):
    _write(p, g.rt, struct.pack(">Q", _u64(p, g.rt) | 3))


def _reft_misaligned(p, g):
    _write(p, g.rt, struct.pack(">Q", _u64(p, g.rt) + 4096))


def _reft_outside(p, g):
    _write(p, g.rt + 8, struct.pack(">Q", 1 << 40))


def _reft_twice(p, g):        # two table entries, one block
    _write(p, g.rt + 8, _read(p, g.rt, 8))


def _refcount_zeroed(p, g):
    blk = _u64(p, g.rt) & OFFSET_MASK
    _write(p, blk + 2 * 3, bytes(2))


def _refcount_raised(p, g):
    blk = _u64(p, g.rt) & OFFSET_MASK
    _write(p, blk + 2 * 2, struct.pack(">H", 7))


def _bitmap_both(p, g):
    _write(p, g.l2 + 8, struct.pack(">Q", 0x0000000100000001))


def _bitmap_unallocated(p, g):
    _write(p, g.l2 + g.es * 5 + 8, struct.pack(">Q", 3))


def _copied_cleared(p, g):
    _write(p, g.l2, struct.pack(">Q", _u64(p, g.l2) & ~(1 << 63)))


def _copied_l1_cleared(p, g):
    _write(p, g.l1, struct.pack(">Q", _u64(p, g.l1) & ~(1 << 63)))


def _compressed_copied(p, g):
    _write(p, g.l2, struct.pack(">Q", _u64(p, g.l2) | 1 << 63))


STD = ("cluster_size=64k",)
EXT = ("cluster_size=128k", "extended_l2=on")
DATA = ("write -P 1 0 64k", "write -P 2 64k 4k", "write -P 3 1M 4k")
PATCHES = [
    ("dup", STD, _dup_entry), ("dup-copied-off", STD, _dup_entry_copied_off),
    ("dup-rc1", STD + ("refcount_bits=1",), _dup_entry), ("dup-rc2", STD + ("refcount_bits=2",), _dup_entry),
    ("dup-ext", EXT, _dup_entry), ("cut-cluster", STD, _cut_cluster_past_data),
    ("cut-cluster-ext", EXT, _cut_cluster_past_data), ("cut-inside", STD, _cut_inside_data),
    ("cut-inside-ext", EXT, _cut_inside_data), ("grow", STD, _grow), ("grow-512", ("cluster_size=512",), _grow),
    ("l2-reserved", STD, _l2_reserved), ("l1-reserved", STD, _l1_reserved),
    ("l1-flags-only", STD, _l1_flags_only), ("misaligned-data", STD, _misaligned_data),
    ("misaligned-data-ext", EXT, _misaligned_data), ("misaligned-l2", STD, _misaligned_l2),
    ("reft-reserved", STD, _reft_reserved), ("reft-misaligned", STD, _reft_misaligned),
    ("reft-outside", STD, _reft_outside), ("reft-twice", STD, _reft_twice),
    ("refcount-zeroed", STD, _refcount_zeroed), ("refcount-raised", STD, _refcount_raised),
    ("refcount-zeroed-rc1", STD + ("refcount_bits=1",), _refcount_zeroed),
    ("bitmap-both", EXT, _bitmap_both), ("bitmap-unallocated", EXT, _bitmap_unallocated),
    ("copied-cleared", STD, _copied_cleared), ("copied-l1-cleared", STD, _copied_l1_cleared),
    ("copied-cleared-ext", EXT, _copied_cleared),
]


def test_patched_images(cat_bin, tmp_path):
    tally = []
    for name, opts, patch in PATCHES:
        agree(cat_bin, _patched(tmp_path, name, opts, DATA, patch), tally)
    # compressed entries with the COPIED flag or a bitmap
    raw = tmp_path / "c.raw"
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * (MiB // 256))
    for name, opts, patch in (("comp-copied", "cluster_size=65536", _compressed_copied),
                              ("comp-bitmap", "cluster_size=131072,extended_l2=on", _bitmap_both)):
        p = tmp_path / f"{name}.qcow2"
        subprocess.run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", opts, str(raw),
                        str(p)], check=True)
        patch(p, _layout(p))
        agree(cat_bin, p, tally)
    found = [t for t in tally if t[1] not in (None, (0, 0, 0))]
    print("\n".join(map(str, tally)))
    assert len(found) >= len(PATCHES) - 4, tally   # the patches do break what they aim at


def test_hostile_images(cat_bin, tmp_path):
    ch = lvmlib.Chain(types.SimpleNamespace(name="check"), str(tmp_path))
    tally = []
    builders = [b for b in hostile.CORPUS if not b.__name__.startswith(("backing_", "snapshot_missing"))]
    for build in builders:   # (broken backing chains are no matter of refcounts: qemu-img check hangs on a loop)
        v, _ = build(ch)
        agree(cat_bin, os.path.join(ch.dir, v.name), tally)
    print("\n".join(map(str, tally)))
    assert len(tally) == len(builders) >= 15


# ---- the item-3 image through rmdir ----

def test_item3_rmdir_in_a_directory_store(cat_bin, tmp_path):
    """rmdir through the directory store (files grow there, LVs end on
    whole extents) of a snapshot whose layer ends inside its last cluster:
    the child's data is committed into it; every other view reads as
    before, qemu-img check finds it clean."""
    victim = "b"
    import test_dirstore as dst

    tmp = str(tmp_path)
    root = dst.pve_store(tmp)
    cfg = dst.storage_cfg(tmp, root, "\tsnapshot-as-volume-chain 1")
    d = os.path.join(root, "images", "100")
    img = os.path.join(d, dst.VOL)
    for snap, cmds in (("a", ("write 0 4k",)), ("b", ("write -P 5 8k 4k", "write -P 6 1M 130k"))):
        os.rename(img, os.path.join(d, f"snap-{snap}-{dst.VOL}"))
        dst.q("qemu-img", "create", "-F", "qcow2", "-b", f"snap-{snap}-{dst.VOL}", "-f", "qcow2", img,
              "-o", "extended_l2=on,cluster_size=128k")
        qio(img, *cmds)
    assert os.path.getsize(os.path.join(d, f"snap-b-{dst.VOL}")) % 131072 == 4096
    before = dst.chain_views(root, cfg)
    dst.ds("rmdir", root, dst.VOL, victim, cfg=cfg)
    after = dst.chain_views(root, cfg)
    del before[victim]
    assert after == before
    for f in os.listdir(d):
        if f.endswith(".qcow2") and "disk-0" in f:
            assert qemu_verdict(os.path.join(d, f)) == (0, 0, 0), f
    assert dst.sha_qemu(img) == after["current"]
