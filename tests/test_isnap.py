"""qcow2 internal snapshots in the engine (chain/qcow2_snapshot.h), against qemu.

build/qcow2snap (list/create/delete/check/reclaim) and build/qcow2cat -s SNAP
over image files made by qemu-img/qemu-io. References: `qemu-img convert -l
snapshot.name=S`, `qemu-img snapshot -l/-c/-d`, `qemu-img check`. Crash tests
use build-crash/qcow2snap (VSTORFS_CRASH_AT kills it at a named step).
No root needed. QCOW2SNAP / QCOW2CAT select other builds (e.g. ASan).
"""
import json
import os
import random
import shutil
import struct
import subprocess

import pytest

from vstorlib import SAN_ENV, qemu_check_json, qio, tool_bin

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1024, 1024 * 1024

CREATE_STEPS = ["refcounts", "l1-copy", "l2-flags", "l1-flags", "table", "header", "done"]
DELETE_STEPS = ["table", "header", "l2-flags", "l1-flags", "done"]


def _tool(env, name, build="build"):
    return tool_bin(env, f"{build}/{name}")


@pytest.fixture(scope="session")
def tools():
    return {"snap": _tool("QCOW2SNAP", "qcow2snap"), "cat": _tool("QCOW2CAT", "qcow2cat")}


@pytest.fixture(scope="session")
def crash_snap():
    subprocess.run(["make", "-s", "-C", REPO, "BUILD=build-crash", "EXTRA_CFLAGS=-DVSTORFS_CRASH_HOOKS",
                    "build-crash/qcow2snap"], check=True)
    return os.path.join(REPO, "build-crash", "qcow2snap")


def run(*cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.PIPE, **kw).stdout


def tool(binary, *args, ok=True, env=None):
    p = subprocess.run([binary, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120, env=env or SAN_ENV)
    assert p.returncode >= 0 and p.returncode not in (86, 87), p.stderr.decode(errors="replace")
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr, p.stderr.decode()
    if ok:
        assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p


def create(path, size, *opts, backing=None):
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if opts:
        cmd += ["-o", ",".join(opts)]
    if backing:
        cmd += ["-b", os.path.basename(str(backing)), "-F", "qcow2"]
    run(*cmd, path, size)
    return path




def writes(path, rng, n, size):
    cmds = []
    for _ in range(n):
        length = rng.choice([512, 4096, 65536, rng.randrange(1, 300) * 512])
        off = rng.randrange(0, size - length) // 512 * 512
        cmds.append(f"write -P {rng.randrange(1, 256)} {off} {length}")
    cmds.append(f"write -z {rng.randrange(0, size - 65536) // 512 * 512} 65536")
    qio(path, *cmds)


def qemu_view(path, snap=None):
    out = str(path) + ".view.raw"
    cmd = ["qemu-img", "convert", "-O", "raw"]
    if snap:
        cmd += ["-l", f"snapshot.name={snap}"]
    run(*cmd, path, out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def our_view(tools, path, snap=None):
    args = ["-s", snap] if snap else []
    return tool(tools["cat"], *args, path).stdout


def check_map(tools, path, snap, size):
    out = tool(tools["cat"], "-s", snap, "--map", path).stdout.decode().split("\n")
    total = sum(int(l.split()[1]) for l in out if l.strip())
    assert total == size




def qemu_check(path):
    rc, j, err = qemu_check_json(path)
    assert rc in (0, 2, 3) and j is not None, err
    return j, err


def assert_clean(path):
    j, err = qemu_check(path)
    assert j.get("corruptions", 0) == 0 and j.get("leaks", 0) == 0 and j.get("check-errors", 0) == 0, (j, err)


def our_check(tools, path):
    p = tool(tools["snap"], "check", path, ok=False)
    assert p.returncode in (0, 2, 3), p.stderr.decode()
    return dict(l.split(" ", 1) for l in p.stdout.decode().strip().split("\n"))


def qemu_list(path):
    """qemu-img snapshot -l as (id, name, vm_state_size, vm_clock_nsec, icount, date) tuples."""
    j = json.loads(run("qemu-img", "info", "--output=json", path))
    return [(s["id"], s["name"], s["vm-state-size"], s["vm-clock-sec"] * 10**9 + s["vm-clock-nsec"],
             s.get("icount"), (s["date-sec"], s["date-nsec"])) for s in j.get("snapshots", [])]


def our_list(tools, path):
    out = tool(tools["snap"], "list", path).stdout.decode().strip()
    rows = []
    for line in out.split("\n") if out else []:
        f = line.split("\t")
        rows.append({"id": f[0], "name": f[1], "date": (int(f[2]), int(f[3])), "vm_clock": int(f[4]),
                     "vm_state_size": int(f[5]), "disk_size": int(f[6]),
                     "icount": None if f[7] == "-" else int(f[7]), "l1_offset": int(f[8]),
                     "l1_size": int(f[9]), "extra": int(f[10])})
    return rows


# -- on-disk structure, for comparing our writes with qemu's -------------------

def layout(path):
    """Every piece of live metadata, by offset: header fields, refcounts of every
    cluster, active and snapshot L1 tables and the L2 tables they reach, the
    snapshot table with dates blanked. Freed clusters (qemu discards them,
    we leave their bytes) are not looked at."""
    with open(path, "rb") as f:
        d = f.read()
    be = lambda fmt, off: struct.unpack_from(">" + fmt, d, off)[0]
    cb = be("I", 20)
    cs = 1 << cb
    ver = be("I", 4)
    incompat = be("Q", 72) if ver == 3 else 0
    ext = bool(incompat & 16)
    order = be("I", 96) if ver == 3 else 4
    l1_size, l1_off = be("I", 36), be("Q", 40)
    rt_off, rt_cl = be("Q", 48), be("I", 56)
    nb, sn_off = be("I", 60), be("Q", 64)
    out = {"hdr": (ver, cb, be("Q", 24), l1_size, l1_off, rt_off, rt_cl, nb, sn_off, incompat)}
    bits = 1 << order
    rpb = cs * 8 // bits
    refs = {}
    for i in range(rt_cl * cs // 8):
        rb = be("Q", rt_off + 8 * i) & ~511
        if not rb:
            continue
        blk = d[rb:rb + cs]
        val = int.from_bytes(blk, "big")
        for j in range(rpb):
            if bits >= 8:
                v = (val >> ((rpb - 1 - j) * bits)) & ((1 << bits) - 1)
            else:
                v = (blk[j * bits // 8] >> ((j * bits) % 8)) & ((1 << bits) - 1)
            if v:
                refs[i * rpb + j] = v
    out["refcounts"] = refs
    es = 16 if ext else 8

    def l1(off, n):
        return [be("Q", off + 8 * i) for i in range(n)]

    def l2s(entries, inactive=False):
        t = {}
        for e in entries:
            o = e & 0x00fffffffffffe00
            if o:
                t[o] = d[o:o + cs]
                if inactive:
                    # COPIED means nothing outside the active tables; qemu's delete
                    # rewrites it in the shared tables it walks, we leave it.
                    w = bytearray(t[o])
                    for k in range(0, cs, es):
                        w[k] &= 0x7f
                    t[o] = bytes(w)
        return t
    out["l1"] = l1(l1_off, l1_size)
    out["l2"] = l2s(out["l1"])
    snaps, off = [], sn_off
    for i in range(nb):
        off = (off + 7) & ~7
        h = list(struct.unpack_from(">QIHHIIQII", d, off))
        eds, ids, ns = h[8], h[2], h[3]
        body = d[off + 40:off + 40 + eds + ids + ns]
        h[4] = h[5] = 0   # date
        snaps.append((tuple(h), body, l1(h[0], h[1]), l2s(l1(h[0], h[1]), True)))
        off += 40 + eds + ids + ns
    out["snapshots"] = snaps
    return out


# -- image recipes -------------------------------------------------------------

KINDS = {
    "v2": ("compat=0.10",),
    "v3-64k": (),
    "ext-128k": ("extended_l2=on", "cluster_size=128k"),
    "c512": ("cluster_size=512",),
    "prealloc": ("preallocation=metadata",),
    "ext-prealloc": ("extended_l2=on", "cluster_size=128k", "preallocation=metadata"),
}


def make_image(tmp_path, kind, size=6 * MiB, seed=0):
    rng = random.Random(seed)
    if kind == "compressed":
        src = create(tmp_path / "src.qcow2", size)
        writes(src, rng, 20, size)
        img = tmp_path / "img.qcow2"
        run("qemu-img", "convert", "-c", "-O", "qcow2", src, img)
        return img
    if kind == "backing":
        base = create(tmp_path / "base.qcow2", size)
        writes(base, rng, 20, size)
        img = create(tmp_path / "img.qcow2", size, backing=base)
        writes(img, rng, 10, size)
        return img
    img = create(tmp_path / "img.qcow2", size, *KINDS[kind])
    writes(img, rng, 20, size)
    return img


ALL_KINDS = list(KINDS) + ["compressed", "backing"]


# -- reading qemu's snapshots ----------------------------------------------------

@pytest.mark.parametrize("kind", ALL_KINDS)
def test_read_qemu_snapshots(tools, tmp_path, kind):
    size = 6 * MiB
    img = make_image(tmp_path, kind, size)
    rng = random.Random(7)
    qio(img, "write -P 0xaa 0 4096")
    run("qemu-img", "snapshot", "-c", "s1", img)
    writes(img, rng, 10, size)
    run("qemu-img", "snapshot", "-c", "s2", img)
    writes(img, rng, 10, size)
    for snap in ("s1", "s2", None):
        ref = qemu_view(img, snap)
        got = our_view(tools, img, snap)
        assert len(got) == len(ref) == size
        assert got == ref, (kind, snap)
    for snap in ("s1", "s2"):
        check_map(tools, img, snap, size)
        # unaligned ranges
        ref = qemu_view(img, snap)
        for _ in range(4):
            off, n = rng.randrange(size), rng.randrange(1, 300000)
            assert tool(tools["cat"], "-s", snap, img, off, n).stdout == ref[off:off + n]
    rows = our_list(tools, img)
    assert [(r["id"], r["name"], r["vm_state_size"], r["vm_clock"], r["icount"], r["date"]) for r in rows] == \
        [(i, n, v, c, ic, dt) for i, n, v, c, ic, dt in qemu_list(img)]
    assert all(r["disk_size"] == size and r["extra"] == 24 for r in rows)
    assert tool(tools["cat"], "-s", "nope", img, ok=False).returncode == 1
    c = our_check(tools, img)
    assert (c["errors"], c["copied_errors"], c["leaks"]) == ("0", "0", "0"), c


def test_read_snapshot_of_resized_image(tools, tmp_path):
    """The view has the snapshot's disk size; qemu shows the current size, reading
    unallocated (zeros) past the snapshot's L1 table: our bytes are its prefix."""
    img = make_image(tmp_path, "v3-64k", 4 * MiB)
    run("qemu-img", "snapshot", "-c", "small", img)
    run("qemu-img", "resize", "-q", img, "12M")
    qio(img, "write -P 0x33 8M 1M")
    ref = qemu_view(img, "small")
    got = our_view(tools, img, "small")
    assert len(got) == 4 * MiB and got == ref[:4 * MiB]
    assert our_view(tools, img) == qemu_view(img)
    # What restoring the snapshot gives back: the same size and the same bytes.
    restored = str(tmp_path / "restored.qcow2")
    shutil.copyfile(img, restored)
    run("qemu-img", "snapshot", "-a", "small", restored)
    assert got == qemu_view(restored)


def test_vmstate_not_shown(tools, tmp_path):
    """VM state (savevm) lives in the snapshot's L1 past its disk size and is
    never part of the view. Without a VM: a snapshot whose disk_size says 2 MiB
    while its L1 maps data up to 4 MiB shows only the first 2 MiB."""
    img = make_image(tmp_path, "v3-64k", 4 * MiB)
    qio(img, "write -P 0x77 2M 2M")
    run("qemu-img", "snapshot", "-c", "s", img)
    full = qemu_view(img, "s")
    sn = struct.unpack(">Q", open(img, "rb").read()[64:72])[0]
    with open(img, "r+b") as f:
        f.seek(sn + 40 + 8)
        f.write(struct.pack(">Q", 2 * MiB))
    assert our_list(tools, img)[0]["disk_size"] == 2 * MiB
    got = our_view(tools, img, "s")
    assert got == full[:2 * MiB]
    check_map(tools, img, "s", 2 * MiB)


# -- creating ----------------------------------------------------------------------

def same_layout(a, b):
    la, lb = layout(a), layout(b)
    for k in la:
        assert la[k] == lb[k], k
    return la


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_create_like_qemu(tools, tmp_path, kind):
    size = 6 * MiB
    img = make_image(tmp_path, kind, size)
    run("qemu-img", "snapshot", "-c", "old", img)
    writes(img, random.Random(3), 8, size)
    before = qemu_view(img)
    old = qemu_view(img, "old")
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    shutil.copy(img, ours)
    shutil.copy(img, theirs)
    tool(tools["snap"], "create", ours, "new")
    run("qemu-img", "snapshot", "-c", "new", theirs)
    assert_clean(ours)
    # byte for byte the metadata qemu writes, dates aside
    same_layout(ours, theirs)
    ql, tl = qemu_list(ours), qemu_list(theirs)
    assert [x[:5] for x in ql] == [x[:5] for x in tl]
    assert qemu_view(ours, "new") == before
    assert qemu_view(ours, "old") == old
    assert qemu_view(ours) == before
    assert our_view(tools, ours, "new") == before
    c = our_check(tools, ours)
    assert (c["errors"], c["copied_errors"], c["leaks"]) == ("0", "0", "0"), c
    # qemu writes the active image afterwards: the snapshot keeps its bytes
    writes(ours, random.Random(4), 8, size)
    assert_clean(ours)
    assert qemu_view(ours, "new") == before


# -- deleting ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", ALL_KINDS)
def test_delete_like_qemu(tools, tmp_path, kind):
    size = 6 * MiB
    img = make_image(tmp_path, kind, size)
    rng = random.Random(5)
    views = {}
    for s in ("a", "b", "c"):
        run("qemu-img", "snapshot", "-c", s, img)
        views[s] = qemu_view(img, s)
        writes(img, rng, 6, size)
    views[None] = qemu_view(img)
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    shutil.copy(img, ours)
    shutil.copy(img, theirs)
    for s in ("b", "a", "c"):
        tool(tools["snap"], "delete", ours, s)
        run("qemu-img", "snapshot", "-d", s, theirs)
        assert_clean(ours)
        same_layout(ours, theirs)
        del views[s]
        for v, data in views.items():
            assert qemu_view(ours, v) == data
            assert our_view(tools, ours, v) == data
    assert tool(tools["snap"], "delete", ours, "a", ok=False).returncode == 1


def test_freed_clusters_reused(tools, tmp_path):
    img = make_image(tmp_path, "v3-64k")
    tool(tools["snap"], "create", img, "x")
    l1 = our_list(tools, img)[0]["l1_offset"]
    tool(tools["snap"], "delete", img, "x")
    end = os.path.getsize(img)
    tool(tools["snap"], "create", img, "y")
    assert our_list(tools, img)[0]["l1_offset"] == l1
    assert os.path.getsize(img) == end
    assert_clean(img)


def test_mixed_many(tools, tmp_path):
    """Ours and qemu's interleaved: several snapshots, writes between, deletes in random order."""
    size = 8 * MiB
    img = make_image(tmp_path, "ext-128k", size)
    rng = random.Random(11)
    views = {}
    for i in range(6):
        name = f"s{i}"
        if i % 2:
            run("qemu-img", "snapshot", "-c", name, img)
        else:
            tool(tools["snap"], "create", img, name)
        views[name] = qemu_view(img)
        writes(img, rng, 5, size)
    assert_clean(img)
    assert [r["id"] for r in our_list(tools, img)] == [str(i) for i in range(1, 7)]
    order = list(views)
    rng.shuffle(order)
    for k, name in enumerate(order[:4]):
        if k % 2:
            run("qemu-img", "snapshot", "-d", name, img)
        else:
            tool(tools["snap"], "delete", img, name)
        del views[name]
        assert_clean(img)
        for v, data in views.items():
            assert our_view(tools, img, v) == data
    tool(tools["snap"], "create", img, "last")
    ids = [int(r["id"]) for r in our_list(tools, img)]
    assert ids[-1] == max(ids[:-1]) + 1
    assert_clean(img)


def test_narrow_refcounts_overflow_refused(tools, tmp_path):
    """4-bit refcounts hold 15: the 15th snapshot (16 references) is refused
    before anything is written."""
    img = create(tmp_path / "img.qcow2", "4M", "cluster_size=4k", "refcount_bits=4")
    qio(img, "write -P 5 0 1M")
    for i in range(14):
        tool(tools["snap"], "create", img, f"s{i}")
    assert_clean(img)
    digest = open(img, "rb").read()
    r = tool(tools["snap"], "create", img, "over", ok=False)
    assert r.returncode == 1 and b"out of range" in r.stderr
    assert open(img, "rb").read() == digest
    assert qemu_view(img, "s13") == qemu_view(img)


@pytest.mark.parametrize("bits", [64])
def test_refcount_table_grows(tools, tmp_path, bits):
    """512-byte clusters and a 1 GiB disk: each L1 copy is 512 clusters, so new
    refcount blocks and soon a bigger refcount table (moved, header switched)."""
    img = create(tmp_path / "img.qcow2", "1G", "cluster_size=512", f"refcount_bits={bits}")
    qio(img, "write -P 5 0 1M", "write -P 6 700M 64k")
    data = qemu_view(img)
    rt_before = struct.unpack(">QI", open(img, "rb").read()[48:60])
    n = 0
    while struct.unpack(">QI", open(img, "rb").read()[48:60]) == rt_before and n < 40:
        tool(tools["snap"], "create", img, f"g{n}")
        n += 1
    assert struct.unpack(">QI", open(img, "rb").read()[48:60]) != rt_before
    assert_clean(img)
    for i in (0, n - 1):
        assert qemu_view(img, f"g{i}") == data
    for i in range(n):
        tool(tools["snap"], "delete", img, f"g{i}")
    assert_clean(img)
    assert qemu_view(img) == data


# -- crashes ---------------------------------------------------------------------

def views_of(path):
    names = [r[1] for r in qemu_list(path)]
    return {n: qemu_view(path, n) for n in names} | {None: qemu_view(path)}


def assert_crash_state(path):
    """What a crash may leave: leaks, and COPIED flags on clusters whose
    second reference is a leak (qemu counts those as corruptions)."""
    j, err = qemu_check(path)
    assert j.get("check-errors", 0) == 0, err
    bad = [l for l in err.splitlines() if l.startswith("ERROR") and "OFLAG_COPIED" not in l]
    assert not bad, err
    for l in err.splitlines():
        if "OFLAG_COPIED" in l:
            assert "refcount=2" in l or "refcount=3" in l, l
    return j


@pytest.mark.parametrize("kind", ["v3-64k", "ext-prealloc", "compressed", "c512"])
@pytest.mark.parametrize("op,step", [("create", s) for s in CREATE_STEPS] + [("delete", s) for s in DELETE_STEPS])
def test_crash_at_every_step(tools, crash_snap, tmp_path, kind, op, step):
    size = 4 * MiB
    img = make_image(tmp_path, kind, size)
    run("qemu-img", "snapshot", "-c", "keep", img)
    writes(img, random.Random(9), 6, size)
    run("qemu-img", "snapshot", "-c", "victim", img)
    writes(img, random.Random(10), 6, size)
    before = views_of(img)
    env = dict(SAN_ENV, VSTORFS_CRASH_AT=f"snapshot-{op}:{step}")
    name = "new" if op == "create" else "victim"
    p = subprocess.run([crash_snap, op, str(img), name], env=env, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=120)
    assert p.returncode == -9, p.stderr.decode()
    j = assert_crash_state(img)
    after = views_of(img)
    for v, data in before.items():
        if op == "delete" and v == "victim" and v not in after:
            continue
        assert after[v] == data, v
    if op == "create" and "new" in after:
        assert after["new"] == before[None]
    # recovery: reclaim leaves a clean image that still reads the same
    r = tool(tools["snap"], "reclaim", img)
    assert_clean(img)
    assert views_of(img) == after
    c = our_check(tools, img)
    assert (c["errors"], c["copied_errors"], c["leaks"]) == ("0", "0", "0"), (c, r.stdout)
    # and the operation can be run again to completion
    if op == "create":
        tool(tools["snap"], "create", img, "again")
        assert qemu_view(img, "again") == before[None]
    elif "victim" in after:
        tool(tools["snap"], "delete", img, "victim")
    assert_clean(img)


def test_crash_leaks_alone_repair_by_qemu(tools, crash_snap, tmp_path):
    """After the header switch of a delete, `qemu-img check -r leaks` alone is enough."""
    img = make_image(tmp_path, "v3-64k", 4 * MiB)
    run("qemu-img", "snapshot", "-c", "victim", img)
    writes(img, random.Random(1), 4, 4 * MiB)
    for step in ("header", "l1-flags"):
        work = tmp_path / f"w-{step}.qcow2"
        shutil.copy(img, work)
        env = dict(SAN_ENV, VSTORFS_CRASH_AT=f"snapshot-delete:{step}")
        p = subprocess.run([crash_snap, "delete", str(work), "victim"], env=env, capture_output=True)
        assert p.returncode == -9
        subprocess.run(["qemu-img", "check", "-q", "-r", "leaks", str(work)], capture_output=True)
        assert_clean(work)


# -- hostile snapshot tables ---------------------------------------------------------

def patched(tmp_path, src, name, edits):
    dst = tmp_path / f"{name}.qcow2"
    shutil.copy(src, dst)
    with open(dst, "r+b") as f:
        for off, data in edits:
            f.seek(off)
            f.write(data)
    return dst


def test_hostile_tables(tools, tmp_path):
    img = make_image(tmp_path, "v3-64k", 4 * MiB)
    run("qemu-img", "snapshot", "-c", "s1", img)
    run("qemu-img", "snapshot", "-c", "s2", img)
    with open(img, "rb") as f:
        d = f.read()
    sn = struct.unpack(">Q", d[64:72])[0]
    size = len(d)
    e2 = (sn + 40 + 24 + 1 + 2 + 7) & ~7   # second entry
    cases = {
        "nb-huge": [(60, struct.pack(">I", 0xffffffff))],
        "nb-65537": [(60, struct.pack(">I", 65537))],
        "nb-too-many": [(60, struct.pack(">I", 3))],
        "off-misaligned": [(64, struct.pack(">Q", sn + 8))],
        "off-past-end": [(64, struct.pack(">Q", 1 << 40))],
        "off-zero": [(64, struct.pack(">Q", 0))],
        "extra-huge": [(sn + 36, struct.pack(">I", 0xffffffff))],
        "extra-1025": [(sn + 36, struct.pack(">I", 1025))],
        "id-len-huge": [(sn + 12, struct.pack(">H", 0xffff))],
        "name-nul": [(sn + 40 + 24 + 1, b"\0")],
        "id-nul": [(sn + 40 + 24, b"\0")],
        "l1-past-end": [(sn, struct.pack(">Q", 1 << 40))],
        "l1-misaligned": [(sn, struct.pack(">Q", 65536 + 8))],
        "l1-huge": [(sn + 8, struct.pack(">I", 0x10000000))],
        "l1-on-header": [(sn, struct.pack(">Q", 0))],
        "l1-overlaps-l2": [(e2, struct.pack(">Q", struct.unpack(">Q", d[40:48])[0]))],
        "extra-8-v3": [(sn + 36, struct.pack(">I", 8))],
        "disk-size-huge": [(sn + 48, struct.pack(">Q", 1 << 63))],
    }
    for name, edits in cases.items():
        bad = patched(tmp_path, img, name, edits)
        digest = open(bad, "rb").read()
        lst = tool(tools["snap"], "list", bad, ok=False)
        assert lst.returncode in (0, 1), name
        for s in ("s1", "s2"):
            r = tool(tools["cat"], "-s", s, bad, ok=False)
            assert r.returncode in (0, 1), name
            if r.returncode == 0 and not name.startswith("l1-") and name != "extra-8-v3":
                assert r.stdout == qemu_view(img, s), name
        c = tool(tools["snap"], "check", bad, ok=False)
        assert c.returncode in (1, 2, 3), (name, c.stdout)
        for op in (("create", "n"), ("delete", "s1"), ("delete", "s2"), ("reclaim",)):
            r = tool(tools["snap"], op[0], bad, *op[1:], ok=False)
            assert r.returncode == 1, (name, op, r.stderr)
            assert open(bad, "rb").read() == digest, (name, op)


def test_refuses_bad_names_and_features(tools, tmp_path):
    img = make_image(tmp_path, "v3-64k", 2 * MiB)
    assert tool(tools["snap"], "create", img, "", ok=False).returncode == 1
    assert tool(tools["snap"], "create", img, "x" * 256, ok=False).returncode == 1
    tool(tools["snap"], "create", img, "x" * 255)
    assert qemu_list(img)[0][1] == "x" * 255
    bm = create(tmp_path / "bm.qcow2", 2 * MiB)
    run("qemu-img", "bitmap", "--add", bm, "b0")
    digest = open(bm, "rb").read()
    for op in (("create", "n"), ("reclaim",)):
        assert tool(tools["snap"], op[0], bm, *op[1:], ok=False).returncode == 1
    assert open(bm, "rb").read() == digest
    raw = tmp_path / "x.raw"
    raw.write_bytes(b"\0" * 4096)
    assert tool(tools["cat"], "-f", "raw", "-s", "a", raw, ok=False).returncode == 1


def test_fuzz_snapshot_regressions_replay(tmp_path):
    """fuzz/regressions-snapshot and the seed corpus through fuzz_snapshot's entry point (gcc + ASan/UBSan)."""
    import glob
    subprocess.run(["make", "-s", "-C", REPO, "build/fuzz-snapshot-replay"], check=True)
    seeds = tmp_path / "seeds"
    subprocess.run(["/usr/bin/python3", os.path.join(REPO, "fuzz", "make_snap_seeds.py"), str(seeds)], check=True)
    files = sorted(glob.glob(os.path.join(REPO, "fuzz", "regressions-snapshot", "*"))) + \
        sorted(glob.glob(str(seeds / "*")))
    r = subprocess.run([os.path.join(REPO, "build", "fuzz-snapshot-replay")] + files, capture_output=True,
                       text=True, timeout=600, env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"))
    assert r.returncode == 0, r.stderr[-4000:]
    assert "Sanitizer" not in r.stderr and "runtime error:" not in r.stderr
    assert r.stdout.count("ok ") == len(files)
