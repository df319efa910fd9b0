"""Changed and allocated extents (chain/diff.c) and partitions (common/partitions.c).

Chains are built with qemu-img/qemu-io in a temporary directory;
`build/qcow2cat --changed OLDER IMAGE` / `--allocated IMAGE` print the
extents as `rbd diff --format=json` does, and every answer is checked
against the flattened bytes of `qemu-img convert` for both views:

- no false negatives: every byte outside the ranges reads the same;
- exists=false ranges read as zeros in the newer view;
- tight: what is listed lies within what the layers in between hold
  (`qemu-img map` of each layer: its depth-0 entries), a cluster per range
  of slack at most.

No root, no LVM. QCOW2CAT / PARTLIST select other builds of the tools.
"""
import json
import os
import random
import shutil
import subprocess
import time

import pytest

from test_engine import KiB, MiB, REPO, SAN_ENV, create, qio, reference, run
from vstorlib import tool_bin

GiB, TiB = 1024 * MiB, 1024 * 1024 * MiB




@pytest.fixture(scope="session")
def partlist_bin():
    return tool_bin("PARTLIST", "build/partlist")


def tool(cmd, timeout=120):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=timeout, env=SAN_ENV)
    assert p.returncode == 0, p.stderr.decode(errors="replace")
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr, p.stderr.decode()
    return p.stdout


def parse(out):
    """rbd diff JSON -> [(off, len, exists)], checking its exact form."""
    text = out.decode()
    assert text.endswith("\n") and "\n" not in text[:-1] and " " not in text
    items = json.loads(text)
    res = []
    for it in items:
        assert list(it) == ["offset", "length", "exists"], it
        assert it["exists"] in ("true", "false"), it
        res.append((it["offset"], it["length"], it["exists"] == "true"))
    return res


def changed(cat_bin, older, newer, compare=False):
    return parse(tool([cat_bin, "--changed", older, *(["--compare"] if compare else []), newer]))


def allocated(cat_bin, image):
    return parse(tool([cat_bin, "--allocated", image]))


# -- interval helpers ----------------------------------------------------------

def norm(iv):
    """Sorted, merged [(start, end)]."""
    out = []
    for s, e in sorted(iv):
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def total(iv):
    return sum(e - s for s, e in iv)


def minus(a, b):
    """a \\ b for normalized lists."""
    out, j = [], 0
    for s, e in a:
        cur = s
        while j < len(b) and b[j][1] <= cur:
            j += 1
        k = j
        while k < len(b) and b[k][0] < e:
            if b[k][0] > cur:
                out.append((cur, b[k][0]))
            cur = max(cur, b[k][1])
            k += 1
        if cur < e:
            out.append((cur, e))
    return out


def gaps(ranges, size):
    """The complement of the ranges within [0, size)."""
    return minus([(0, size)], norm([(o, o + n) for o, n, _ in ranges]))


def check_form(ranges, size):
    """Sorted, disjoint, non-empty, adjacent ranges of one kind joined, inside size."""
    prev = None
    for off, length, exists in ranges:
        assert length > 0 and off + length <= size, (off, length, size)
        if prev:
            assert off >= prev[0] + prev[1], (prev, off)
            assert not (off == prev[0] + prev[1] and exists == prev[2]), ("not joined", prev, off)
        prev = (off, length, exists)


def own_ranges(path):
    """What one layer holds itself: depth-0 entries of `qemu-img map` (data or zeros)."""
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True,
                         stdout=subprocess.PIPE).stdout
    return norm([(m["start"], m["start"] + m["length"]) for m in json.loads(out)
                 if m["depth"] == 0 and m["present"]])


def present_ranges(path):
    out = subprocess.run(["qemu-img", "map", "--output=json", str(path)], check=True,
                         stdout=subprocess.PIPE).stdout
    return norm([(m["start"], m["start"] + m["length"]) for m in json.loads(out) if m["present"]])


def vsize(path):
    out = subprocess.run(["qemu-img", "info", "--output=json", str(path)], check=True,
                         stdout=subprocess.PIPE).stdout
    return json.loads(out)["virtual-size"]


def check_changed(ranges, new_bytes, old_bytes, what=""):
    """The promises that hold for every answer: form, no false negatives, zeros are zeros."""
    check_form(ranges, len(new_bytes))
    common = min(len(new_bytes), len(old_bytes))
    for s, e in gaps(ranges, len(new_bytes)):
        assert e <= common, (what, "unlisted bytes past the older view's end", s, e)
        if new_bytes[s:e] != old_bytes[s:e]:
            first = next(i for i in range(s, e) if new_bytes[i] != old_bytes[i])
            pytest.fail(f"{what}: byte {first} differs but is not listed")
    for off, length, exists in ranges:
        if not exists:
            assert new_bytes[off:off + length].count(0) == length, (what, off, length)


def check_tight(ranges, allowed, cluster, what=""):
    listed = norm([(o, o + n) for o, n, _ in ranges])
    extra = total(minus(listed, norm(allowed)))
    assert extra <= cluster * max(1, len(ranges)), (what, extra, ranges[:8])


def check_all_pairs(cat_bin, layers, cluster, extra_allowed=None):
    """Every (older, newer) pair of views of one chain, both APIs and both directions."""
    refs = [reference(p) for p in layers]
    owns = [own_ranges(p) for p in layers]
    sizes = [len(r) for r in refs]
    for i in range(len(layers)):
        for j in range(i):
            what = f"{layers[i].name} vs {layers[j].name}"
            fast = changed(cat_bin, layers[j], layers[i])
            check_changed(fast, refs[i], refs[j], what)
            allowed = [iv for k in range(j + 1, i + 1) for iv in owns[k]]
            allowed.append((sizes[j], sizes[i]))                 # grown
            for k in range(j, i):                                # past a shorter layer in between
                allowed.append((min(sizes[k:i + 1]), sizes[i]))
            if extra_allowed:
                allowed += extra_allowed(i, j)
            check_tight(fast, allowed, cluster, what)
            # The exact promise of the suffix case: what the layers above hold, and no less.
            must = minus(norm(allowed), [(sizes[i], 1 << 63)])
            assert total(minus(must, norm([(o, o + n) for o, n, _ in fast]))) <= cluster * (len(must) + 1), what
            cmp = changed(cat_bin, layers[j], layers[i], compare=True)
            check_changed(cmp, refs[i], refs[j], what + " (compare)")
            assert total(minus(norm([(o, o + n) for o, n, _ in cmp]),
                               norm([(o, o + n) for o, n, _ in fast]))) == 0, what
            back = changed(cat_bin, layers[i], layers[j])        # older as "newer": general path
            check_changed(back, refs[j], refs[i], what + " (reversed)")
            check_tight(back, allowed + [(sizes[i], sizes[j])], cluster, what + " (reversed)")
        alloc = allocated(cat_bin, layers[i])
        check_changed(alloc, refs[i], bytes(len(refs[i])), f"allocated {layers[i].name}")
        check_tight(alloc, present_ranges(layers[i]), cluster, f"allocated {layers[i].name}")
    return refs


def scribble(path, rng, size, n, sc=512, zero=True, discard=True):
    cmds = []
    for _ in range(n):
        length = rng.choice([sc, 4 * KiB, 64 * KiB, 128 * KiB, rng.randrange(1, 600) * 512])
        off = rng.randrange(0, size - length) // 512 * 512
        kind = rng.random()
        if zero and kind < 0.2:
            cmds.append(f"write -z {off} {length}")
        elif discard and kind < 0.3:
            cmds.append(f"discard {off} {length}")
        else:
            cmds.append(f"write -P {rng.randrange(1, 256)} {off} {length}")
    qio(path, *cmds)


# -- changed extents: external chains -----------------------------------------

def test_proxmox_chain(cat_bin, tmp_path):
    """Preallocated base, extended-L2 preallocated overlays: data, zeros, discards in every layer."""
    size = 24 * MiB
    base = create(tmp_path / "base.qcow2", size, "preallocation=metadata")
    qio(base, "write -P 0x11 0 8M", "write -P 0x12 12M 4M", "write -z 20M 1M")
    layers, rng = [base], random.Random(11)
    for i in range(1, 5):
        top = create(tmp_path / f"s{i}.qcow2", size, "extended_l2=on", "cluster_size=128k",
                     "preallocation=metadata", backing=layers[-1])
        qio(top, f"write -P {0x20 + i} {i * 1000 * 512 + 512} 512",
            f"write -z {5 * MiB + i * 4 * KiB} 4096",
            f"discard {13 * MiB + i * 128 * KiB} 128k")
        scribble(top, rng, size, 12, sc=4 * KiB)
        layers.append(top)
    check_all_pairs(cat_bin, layers, 128 * KiB)


@pytest.mark.parametrize("cluster", ["64k", "4k"])
def test_plain_chain(cat_bin, tmp_path, cluster):
    size = 16 * MiB + 4096
    layers, rng = [], random.Random(len(cluster))
    for i in range(4):
        top = create(tmp_path / f"l{i}.qcow2", size, f"cluster_size={cluster}",
                     backing=layers[-1] if layers else None)
        scribble(top, rng, size, 15)
        layers.append(top)
    check_all_pairs(cat_bin, layers, int(cluster[:-1]) * KiB)


def test_compressed(cat_bin, tmp_path):
    size = 8 * MiB
    base = create(tmp_path / "base.qcow2", size)
    qio(base, "write -c -P 1 0 1M", "write -P 2 2M 1M", "write -c -P 3 4M 64k")
    mid = create(tmp_path / "mid.qcow2", size, backing=base)
    qio(mid, "write -c -P 4 1M 128k", "write -z 2M 64k", "write -c -P 5 5M 192k")
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", backing=mid)
    qio(top, "write -c -P 6 6M 64k", "write -P 7 100k 4k", "discard 5M 64k")
    check_all_pairs(cat_bin, [base, mid, top], 64 * KiB)


def test_raw_base(cat_bin, tmp_path):
    size = 8 * MiB
    base = tmp_path / "base.raw"
    with open(base, "wb") as f:
        f.truncate(size)
    qio(base, "write -P 9 1M 3M", fmt="raw")
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", backing=base, bfmt="raw")
    qio(top, "write -P 1 0 512", "write -z 2M 64k")
    check_all_pairs(cat_bin, [base, top], 64 * KiB)
    assert allocated(cat_bin, base) == [(0, size, True)]
    assert allocated(cat_bin, top) == [(0, 2 * MiB, True), (2 * MiB, 64 * KiB, False),
                                       (2 * MiB + 64 * KiB, size - 2 * MiB - 64 * KiB, True)]


def test_grown_and_shrunk(cat_bin, tmp_path):
    """A grown disk lists its new part; a shorter layer in between hides what is under its end."""
    base = create(tmp_path / "base.qcow2", 24 * MiB)
    qio(base, "write -P 1 0 24M")
    short = create(tmp_path / "short.qcow2", 16 * MiB, backing=base)
    qio(short, "write -P 2 1M 64k")
    grown = create(tmp_path / "grown.qcow2", 40 * MiB, "extended_l2=on", backing=short)
    qio(grown, "write -P 3 30M 1M", "write -P 4 17M 4k", "write -z 2M 64k")
    check_all_pairs(cat_bin, [base, short, grown], 64 * KiB)
    ranges = changed(cat_bin, base, grown)
    covered = norm([(o, o + n) for o, n, _ in ranges])
    assert not minus([(16 * MiB, 40 * MiB)], covered)     # all of it: past short's end, and grown
    assert (30 * MiB, MiB, True) in ranges


def test_same_view_and_empty_layer(cat_bin, tmp_path):
    base = create(tmp_path / "base.qcow2", 8 * MiB)
    qio(base, "write -P 1 0 8M")
    top = create(tmp_path / "top.qcow2", 8 * MiB, "extended_l2=on", "cluster_size=128k",
                 "preallocation=metadata", backing=base)
    assert changed(cat_bin, base, base) == []
    assert changed(cat_bin, top, top) == []
    assert changed(cat_bin, base, top) == []               # a fresh snapshot: nothing changed
    assert changed(cat_bin, base, top, compare=True) == []
    assert allocated(cat_bin, top) == [(0, 8 * MiB, True)]


# -- changed extents: views that share no suffix -------------------------------

def test_rebase(cat_bin, tmp_path):
    """s2 rebased from s1 onto base (what rmdir's rebase does): older s1 is not a suffix of s2."""
    size = 16 * MiB
    base = create(tmp_path / "base.qcow2", size)
    qio(base, "write -P 1 0 12M", "write -c -P 8 14M 128k")
    rng = random.Random(5)
    s1 = create(tmp_path / "s1.qcow2", size, "extended_l2=on", backing=base)
    scribble(s1, rng, size, 15, sc=2 * KiB)
    s2 = create(tmp_path / "s2.qcow2", size, "extended_l2=on", backing=s1)
    scribble(s2, rng, size, 15, sc=2 * KiB)
    before = {p: reference(p) for p in (base, s1, s2)}
    run("qemu-img", "rebase", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", s2)
    assert reference(s2) == before[s2]
    own2 = own_ranges(s2)
    for older in (base, s1):
        for cmp in (False, True):
            r = changed(cat_bin, older, s2, compare=cmp)
            check_changed(r, before[s2], before[older], f"s2 vs {older.name}")
            check_tight(r, own2, 64 * KiB, f"s2 vs {older.name}")
        r = changed(cat_bin, s2, older)
        check_changed(r, before[older], before[s2], f"{older.name} vs s2")
    # s1 vs base is still the suffix case; the rebased s2 vs a copy of s1: nothing shared but base.
    shutil.copy(s1, tmp_path / "s1copy.qcow2")
    r = changed(cat_bin, tmp_path / "s1copy.qcow2", s2)
    check_changed(r, before[s2], before[s1], "s2 vs s1copy")


def test_unrelated_images(cat_bin, tmp_path):
    """Two images with no layer in common: everything that is not zeros in both."""
    a = create(tmp_path / "a.qcow2", 8 * MiB)
    b = create(tmp_path / "b.qcow2", 12 * MiB, "cluster_size=4k")
    qio(a, "write -P 1 0 2M", "write -z 4M 1M")
    qio(b, "write -P 1 0 1M", "write -P 2 6M 1M", "write -c -P 3 9M 64k")
    for x, y in ((a, b), (b, a)):
        r = changed(cat_bin, x, y)
        check_changed(r, reference(y), reference(x), f"{y.name} vs {x.name}")


def test_copied_layer_shares_by_host_offset(cat_bin, tmp_path):
    """A view whose top is a copy of older's top (another file): differs only where the copies answer."""
    size = 8 * MiB
    base = create(tmp_path / "base.qcow2", size)
    qio(base, "write -P 1 0 8M")
    mid = create(tmp_path / "mid.qcow2", size, backing=base)
    qio(mid, "write -P 2 1M 64k")
    top = create(tmp_path / "top.qcow2", size, backing=mid)
    qio(top, "write -P 3 3M 64k")
    shutil.copy(mid, tmp_path / "mid2.qcow2")
    r = changed(cat_bin, tmp_path / "mid2.qcow2", top)
    check_changed(r, reference(top), reference(mid), "top vs mid2")
    assert norm([(o, o + n) for o, n, _ in r]) == [(MiB, MiB + 64 * KiB), (3 * MiB, 3 * MiB + 64 * KiB)]


def test_two_l1_tables_of_one_image(cat_bin, tmp_path):
    """Views of one image through two L1 tables (what internal snapshots are): shared clusters,
    same host offset, are unchanged; clusters copied on write, compressed or not, are changed.
    The snapshot's table is read as the active one of a reverted copy; --id-by-name makes both
    files one layer."""
    base = create(tmp_path / "base.qcow2", 8 * MiB)
    qio(base, "write -P 1 0 8M")
    now = create(tmp_path / "img@now.qcow2", 8 * MiB, backing=base)
    qio(now, "write -P 2 0 1M", "write -c -P 3 2M 128k", "write -P 4 4M 64k", "write -z 5M 64k")
    run("qemu-img", "snapshot", "-c", "s", now)
    qio(now, "write -P 5 256k 4k", "discard 2M 64k", "write -c -P 6 2M 64k", "write -z 6M 64k")
    snap = tmp_path / "img@snap.qcow2"
    shutil.copy(now, snap)
    run("qemu-img", "snapshot", "-a", "s", snap)
    ref_now, ref_snap = reference(now), reference(snap)
    want = [(256 * KiB, 320 * KiB), (2 * MiB, 2 * MiB + 64 * KiB), (6 * MiB, 6 * MiB + 64 * KiB)]
    for cmp in ([], ["--compare"]):
        r = parse(tool([cat_bin, "--id-by-name", "--changed", snap, *cmp, now]))
        check_changed(r, ref_now, ref_snap, "now vs snap")
        assert norm([(o, o + n) for o, n, _ in r]) == want
        r = parse(tool([cat_bin, "--id-by-name", "--changed", now, *cmp, snap]))
        check_changed(r, ref_snap, ref_now, "snap vs now")
        assert norm([(o, o + n) for o, n, _ in r]) == want


# -- JSON and errors -----------------------------------------------------------

def test_json_exact_form(cat_bin, tmp_path):
    base = create(tmp_path / "base.qcow2", 8 * MiB)
    top = create(tmp_path / "top.qcow2", 8 * MiB, backing=base)
    qio(top, "write -P 1 0 4M", "write -z 4M 64k")
    out = tool([cat_bin, "--changed", base, top]).decode()
    assert out == ('[{"offset":0,"length":4194304,"exists":"true"},'
                   '{"offset":4194304,"length":65536,"exists":"false"}]\n')
    assert tool([cat_bin, "--changed", top, top]).decode() == "[]\n"


def test_broken_backing_fails(cat_bin, tmp_path):
    base = create(tmp_path / "base.qcow2", 8 * MiB)
    top = create(tmp_path / "top.qcow2", 8 * MiB, backing=base)
    qio(top, "write -P 1 0 1M")
    os.unlink(base)
    p = subprocess.run([cat_bin, "--allocated", str(top)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       env=SAN_ENV)
    assert p.returncode == 1 and b"Sanitizer" not in p.stderr


# -- scale ---------------------------------------------------------------------

def run_measured(cmd, tmp_path):
    """stdout, wall seconds, the child's rusage (CPU) and its own peak RSS in KiB (--stats)."""
    with open(tmp_path / "stderr", "w+b") as err:
        t = time.monotonic()
        p = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=err, env=SAN_ENV)
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        elapsed = time.monotonic() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode(errors="replace")
        assert p.returncode == 0, text
    peak = [int(l.split()[1]) for l in text.splitlines() if l.startswith("peak_rss_kib ")]
    return out, elapsed, ru, peak[0]


def test_scale_1tib(cat_bin, tmp_path):
    """A 1 TiB Proxmox-like chain whose snapshot took 1 GiB: print time and peak memory."""
    base = create(tmp_path / "base.qcow2", "1T")
    qio(base, *[f"write -P 1 {i * 64 * GiB} 16M" for i in range(16)])
    top = create(tmp_path / "top.qcow2", "1T", "extended_l2=on", "cluster_size=128k",
                 "preallocation=metadata", backing=base)
    cmds = []
    for i in range(64):        # 64 x 16 MiB spread over the disk: 512 MiB of data, 512 MiB of zeros
        off = i * 16 * GiB + (i % 7) * 3 * MiB
        cmds.append(f"write -P {i % 250 + 1} {off} 8M")
        cmds.append(f"write -z {off + 8 * MiB} 8M")
    qio(top, *cmds)
    results = {}
    for name, cmd in (("changed", [cat_bin, "--changed", base, top]),
                      ("changed --compare", [cat_bin, "--changed", base, "--compare", top]),
                      ("changed, 4 MiB cache", [cat_bin, "--cache", 4 * MiB, "--changed", base, top]),
                      ("allocated", [cat_bin, "--allocated", top])):
        out, elapsed, ru, peak = run_measured([cmd[0], "--stats", *cmd[1:]], tmp_path)
        ranges = parse(out)
        listed = sum(n for _, n, _ in ranges)
        results[name] = ranges
        print(f"\n1 TiB chain, {name}: {elapsed:.3f} s wall, {ru.ru_utime + ru.ru_stime:.3f} s CPU, "
              f"peak RSS {peak / 1024:.1f} MiB; {len(ranges)} ranges, {listed / MiB:.0f} MiB listed, "
              f"JSON {len(out)} B")
    assert sum(n for _, n, _ in results["changed"]) == GiB
    assert sum(n for _, n, e in results["changed"] if e) == GiB // 2
    # zeros written over base zeros are dropped by the comparison, the data stays
    assert GiB // 2 <= sum(n for _, n, _ in results["changed --compare"]) < GiB
    assert results["changed"] == results["changed, 4 MiB cache"]


# -- partitions ----------------------------------------------------------------

def sfdisk_json(path):
    out = subprocess.run(["sfdisk", "-J", str(path)], check=True, stdout=subprocess.PIPE).stdout
    t = json.loads(out)["partitiontable"]
    return t


def partlist(partlist_bin, path):
    lines = [json.loads(l) for l in tool([partlist_bin, path]).decode().splitlines()]
    return lines[0]["scheme"], lines[1:]


def node_number(node, path):
    return int(node[len(str(path)):])


@pytest.mark.skipif(not shutil.which("sfdisk"), reason="sfdisk (fdisk package) not installed")
def test_partitions_gpt(partlist_bin, tmp_path):
    img = tmp_path / "gpt.raw"
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], check=True, input=(
        "label: gpt\nunit: sectors\n\n"
        f"{img}1 : start=2048, size=16384, name=boot\n"
        f"{img}3 : start=40960, size=20480, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n"
        f"{img}2 : start=18432, size=20480\n").encode())
    scheme, parts = partlist(partlist_bin, img)
    ref = sfdisk_json(img)
    assert scheme == "gpt" == ref["label"]
    want = sorted((node_number(p["node"], img), p["start"] * 512, p["size"] * 512, p["uuid"].lower())
                  for p in ref["partitions"])
    assert [(p["number"], p["start"], p["length"], p["uuid"]) for p in parts] == want
    assert parts[0]["name"] == "boot" and parts[2]["type"] == "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f"


@pytest.mark.skipif(not shutil.which("sfdisk"), reason="sfdisk (fdisk package) not installed")
def test_partitions_mbr_logical(partlist_bin, tmp_path):
    img = tmp_path / "mbr.raw"
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
    subprocess.run(["sfdisk", "-q", str(img)], check=True, input=(
        "label: dos\nunit: sectors\n\n"
        f"{img}1 : start=2048, size=16384, type=83\n"
        f"{img}2 : start=18432, size=81920, type=5\n"
        f"{img}3 : start=100352, size=20480, type=c\n"
        f"{img}5 : start=20480, size=20480, type=83\n"
        f"{img}6 : start=43008, size=20480, type=82\n"
        f"{img}7 : start=65536, size=32768, type=83\n").encode())
    scheme, parts = partlist(partlist_bin, img)
    ref = sfdisk_json(img)
    assert scheme == "dos" == ref["label"]
    # sfdisk lists the extended container (2); we leave it out (the kernel's 1 KiB stub).
    want = sorted((node_number(p["node"], img), p["start"] * 512, p["size"] * 512)
                  for p in ref["partitions"] if p["type"] != "5")
    assert [(p["number"], p["start"], p["length"]) for p in parts] == want
    assert [p["number"] for p in parts] == [1, 3, 5, 6, 7]
    assert [p["logical"] for p in parts] == [False, False, True, True, True]
    assert [p["type"] for p in parts] == ["0x83", "0xc", "0x83", "0x82", "0x83"]
    # partx (util-linux's kernel-facing tool) numbers them the same.
    out = subprocess.run(["partx", "-g", "-b", "-o", "NR,START,SECTORS", str(img)], check=True,
                         stdout=subprocess.PIPE).stdout.decode().split()
    rows = [tuple(map(int, out[i:i + 3])) for i in range(0, len(out), 3)]
    assert [(n, s * 512, z * 512) for n, s, z in rows if n != 2] == want


def test_partitions_none_and_truncated(partlist_bin, tmp_path):
    img = tmp_path / "none.raw"
    with open(img, "wb") as f:
        f.truncate(4 * MiB)
    assert partlist(partlist_bin, img) == ("", [])
    if shutil.which("sfdisk"):
        big = tmp_path / "cut.raw"
        with open(big, "wb") as f:
            f.truncate(32 * MiB)
        subprocess.run(["sfdisk", "-q", str(big)], check=True, input=(
            "label: dos\nunit: sectors\n\n"
            f"{big}1 : start=2048, size=20480, type=83\n"
            f"{big}2 : start=30720, size=30720, type=83\n").encode())
        os.truncate(big, 20 * MiB)          # p2 now reaches past the end: cut, as the kernel does
        _, parts = partlist(partlist_bin, big)
        assert [(p["number"], p["start"], p["length"]) for p in parts] == \
            [(1, MiB, 10 * MiB), (2, 15 * MiB, 5 * MiB)]
