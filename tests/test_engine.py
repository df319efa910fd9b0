"""Engine tests: build/qcow2cat (chain/ over plain files) against qemu.

Every image here is made by qemu-img/qemu-io in a temporary directory and the
flattened view is compared byte for byte with `qemu-img convert -O raw`.
Broken inputs are made by patching qemu's images with struct.pack; they must
fail with exit status 1 and a log line, never crash.

Self-contained (no conftest fixtures, no root). QCOW2CAT=path selects another
build of the tool (e.g. build-asan/qcow2cat).
"""
import json
import os
import random
import struct
import subprocess

import pytest

from vstorlib import SAN_ENV, qio, run  # noqa: F401  (test_diff, test_check_agree import them from here)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KiB, MiB = 1024, 1024 * 1024








def create(path, size, *opts, backing=None, fmt="qcow2", bfmt="qcow2"):
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if opts:
        cmd += ["-o", ",".join(opts)]
    if backing:
        cmd += ["-b", os.path.basename(str(backing)), "-F", bfmt]
    run(*cmd, path, size)
    return path




def reference(path):
    out = str(path) + ".ref.raw"
    run("qemu-img", "convert", "-O", "raw", path, out)
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


def cat(cat_bin, path, *args, check=True):
    p = subprocess.run([cat_bin, *map(str, args), str(path)] if args and str(args[0]).startswith("-")
                       else [cat_bin, str(path), *map(str, args)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, env=SAN_ENV)
    assert p.returncode in (0, 1), p.stderr.decode(errors="replace")  # never a crash
    assert b"Sanitizer" not in p.stderr and b"runtime error" not in p.stderr, p.stderr.decode()
    if check:
        assert p.returncode == 0, p.stderr.decode(errors="replace")
    return p


def cat_range(cat_bin, path, off, length, check=True):
    return cat(cat_bin, path, off, length, check=check)


def assert_same(cat_bin, path, ref=None, ranges=16, seed=0):
    """Whole image and `ranges` random unaligned ranges (1 B .. 1 MiB) equal qemu."""
    ref = reference(path) if ref is None else ref
    out = cat(cat_bin, path).stdout
    assert len(out) == len(ref)
    if out != ref:
        first = next(i for i in range(len(ref)) if out[i] != ref[i])
        pytest.fail(f"{path}: first difference at byte {first}")
    rng = random.Random(seed)
    for _ in range(ranges):
        length = rng.choice([1, rng.randint(1, 4096), rng.randint(1, MiB)])
        off = rng.randrange(0, len(ref))
        got = cat_range(cat_bin, path, off, length).stdout
        assert got == ref[off:off + length], (path, off, length)
    return ref


# -- on-disk helpers for patching ------------------------------------------

def header(path):
    with open(path, "rb") as f:
        h = f.read(112)
    cb = struct.unpack(">I", h[20:24])[0]
    incompat = struct.unpack(">Q", h[72:80])[0] if struct.unpack(">I", h[4:8])[0] == 3 else 0
    return {
        "cluster_bits": cb,
        "l1_size": struct.unpack(">I", h[36:40])[0],
        "l1_offset": struct.unpack(">Q", h[40:48])[0],
        "incompat": incompat,
        "extended": bool(incompat & 16),
    }


def l2_entry_offset(path, guest_off):
    """File offset of the L2 entry that maps guest_off."""
    h = header(path)
    cs = 1 << h["cluster_bits"]
    es = 16 if h["extended"] else 8
    per_l2 = cs // es
    ci = guest_off // cs
    with open(path, "rb") as f:
        f.seek(h["l1_offset"] + 8 * (ci // per_l2))
        l2 = struct.unpack(">Q", f.read(8))[0] & 0x00fffffffffffe00
    assert l2, "no L2 table there"
    return l2 + (ci % per_l2) * es


def read_u64(path, off):
    with open(path, "rb") as f:
        f.seek(off)
        return struct.unpack(">Q", f.read(8))[0]


def patch(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def pattern_writes(path, rng, n, size, fmt="qcow2"):
    cmds = []
    for _ in range(n):
        length = rng.choice([512, 4096, 65536, rng.randrange(1, 300) * 512])
        off = rng.randrange(0, size - length) // 512 * 512
        cmds.append(f"write -P {rng.randrange(1, 256)} {off} {length}")
    qio(path, *cmds, fmt=fmt)


# -- correct images ----------------------------------------------------------

def test_proxmox_chain(cat_bin, tmp_path):
    """Base with preallocated metadata, extended-L2 overlays with preallocated metadata."""
    size = 16 * MiB
    base = create(tmp_path / "base.qcow2", size, "preallocation=metadata")
    qio(base, "write -P 0x11 0 16M")
    layers = [base]
    rng = random.Random(1)
    for i in range(1, 4):
        top = create(tmp_path / f"snap{i}.qcow2", size, "extended_l2=on", "cluster_size=128k",
                     "preallocation=metadata", backing=layers[-1])
        qio(top, f"write -P {0x20 + i} {i * 1000 * 512 + 512} 512",   # a lone subcluster sector
            f"write -P {0x30 + i} {3 * MiB + i * 7 * 512} 1536",      # straddles nothing in particular
            f"write -z {5 * MiB + i * 4 * KiB} 4096",                  # zero subcluster over data
            f"write -P {0x40 + i} {128 * KiB * i - 512} 1024")         # across a cluster boundary
        pattern_writes(top, rng, 10, size)
        layers.append(top)
    for l in layers:
        assert_same(cat_bin, l, ranges=6, seed=len(str(l)))


def test_extended_l2_16k(cat_bin, tmp_path):
    size = 8 * MiB
    base = create(tmp_path / "base.qcow2", size, "extended_l2=on", "cluster_size=16k")
    qio(base, "write -P 0x5a 0 8M")
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", "cluster_size=16k", backing=base)
    qio(top, "write -P 1 512 512", "write -P 2 16383 2", "write -z 32k 1k", "write -z 1M 64k",
        "write -P 3 2M 1536")
    pattern_writes(top, random.Random(2), 20, size)
    assert_same(cat_bin, top, ranges=10)


@pytest.mark.parametrize("cluster", ["64k", "4k", "512", "2M"])
def test_plain(cat_bin, tmp_path, cluster):
    size = 12 * MiB + 4096
    base = create(tmp_path / "base.qcow2", size, f"cluster_size={cluster}")
    pattern_writes(base, random.Random(3), 20, size)
    top = create(tmp_path / "top.qcow2", size, f"cluster_size={cluster}", backing=base)
    pattern_writes(top, random.Random(4), 20, size)
    qio(top, "write -z 1M 2M")
    assert_same(cat_bin, top, ranges=8)


def test_compat_010(cat_bin, tmp_path):
    size = 8 * MiB
    base = create(tmp_path / "base.qcow2", size, "compat=0.10")
    pattern_writes(base, random.Random(5), 15, size)
    top = create(tmp_path / "top.qcow2", size, "compat=0.10", backing=base)
    pattern_writes(top, random.Random(6), 15, size)
    qio(top, "write -z 0 1M")  # v2 has no zero flag: qemu allocates zeroed clusters
    assert_same(cat_bin, top, ranges=8)


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_compressed(cat_bin, tmp_path, ctype):
    size = 8 * MiB
    src = create(tmp_path / "src.qcow2", size)
    pattern_writes(src, random.Random(7), 30, size)
    qio(src, "write -P 0 6M 1M")  # all-zero data compresses to almost nothing
    comp = tmp_path / "comp.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}", src, comp)
    assert_same(cat_bin, comp, ranges=10)
    # A compressed base under a Proxmox-style overlay.
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", "cluster_size=128k",
                 "preallocation=metadata", backing=comp)
    qio(top, "write -P 9 1000448 512", "write -z 2M 8k")
    assert_same(cat_bin, top, ranges=10)


def test_compressed_extended_l2(cat_bin, tmp_path):
    size = 4 * MiB
    src = create(tmp_path / "src.qcow2", size)
    pattern_writes(src, random.Random(8), 20, size)
    comp = tmp_path / "comp.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "extended_l2=on,compression_type=zstd", src, comp)
    qio(comp, "write -P 4 100k 512")  # a normal cluster next to compressed ones
    assert_same(cat_bin, comp, ranges=6)


def test_zero_clusters_and_subclusters(cat_bin, tmp_path):
    size = 8 * MiB
    base = create(tmp_path / "base.qcow2", size)
    qio(base, "write -P 0x77 0 8M")
    top = create(tmp_path / "top.qcow2", size, backing=base)
    qio(top, "write -z 0 64k", "write -z 1M 1M", "write -z -u 4M 128k")
    ext = create(tmp_path / "ext.qcow2", size, "extended_l2=on", backing=top)
    qio(ext, "write -z 2M 2k", "write -z 3M 64k", "write -P 1 3M 2k", "write -z 6M 512")
    assert_same(cat_bin, top, ranges=4)
    assert_same(cat_bin, ext, ranges=4)


def test_short_backing(cat_bin, tmp_path):
    base = create(tmp_path / "base.qcow2", 3 * MiB + 512)
    qio(base, "write -P 0x33 0 3145728", "write -P 0x34 3145728 512")
    top = create(tmp_path / "top.qcow2", 8 * MiB, "extended_l2=on", backing=base)
    qio(top, "write -P 5 7M 4k")
    ref = assert_same(cat_bin, top, ranges=8)
    assert ref[3 * MiB + 512:7 * MiB] == bytes(4 * MiB - 512)
    raw = create(tmp_path / "short.raw", 1 * MiB + 1000, fmt="raw")
    qio(raw, "write -P 0x44 0 1M", fmt="raw")
    top2 = create(tmp_path / "top2.qcow2", 4 * MiB, backing=raw, bfmt="raw")
    assert_same(cat_bin, top2, ranges=8)
    # A backing layer longer than the overlay: only the overlay's size shows.
    top3 = create(tmp_path / "top3.qcow2", 512 * KiB + 512, backing=raw, bfmt="raw")
    qio(top3, "write -P 6 4k 4k")
    assert assert_same(cat_bin, top3, ranges=4)[-1:] == b"\x44"


def test_eof(cat_bin, tmp_path):
    size = 1 * MiB + 4096
    img = create(tmp_path / "img.qcow2", size)
    qio(img, "write -P 0x66 0 1052672")
    assert cat_range(cat_bin, img, size, 100).stdout == b""
    assert cat_range(cat_bin, img, size + 12345, 1).stdout == b""
    assert cat_range(cat_bin, img, size - 10, 100).stdout == b"\x66" * 10
    assert cat_range(cat_bin, img, 0, 0).stdout == b""
    assert cat_range(cat_bin, img, size - 1, 1).stdout == b"\x66"


def test_raw_bottom(cat_bin, tmp_path):
    size = 8 * MiB
    raw = create(tmp_path / "base.raw", size, fmt="raw")
    pattern_writes(raw, random.Random(9), 20, size, fmt="raw")
    mid = create(tmp_path / "mid.qcow2", size, backing=raw, bfmt="raw")
    pattern_writes(mid, random.Random(10), 10, size)
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", backing=mid)
    pattern_writes(top, random.Random(11), 10, size)
    assert_same(cat_bin, top, ranges=8)
    # No backing-format extension: each backing layer is probed by magic.
    ref = reference(top)
    drop_backing_format(mid)
    drop_backing_format(top)
    assert cat(cat_bin, top).stdout == ref
    assert probe(cat_bin, top)["backing_format"] == "-"


def drop_backing_format(path):
    """Turn the backing-format extension into an unknown one (ignored by readers)."""
    with open(path, "rb") as f:
        hdr = f.read(4096)
    at = hdr.index(struct.pack(">I", 0xE2792ACA), 104)
    patch(path, at, struct.pack(">I", 0x0BADF00D))


def test_deep_chain(cat_bin, tmp_path):
    """300 layers, alternating standard and extended L2, data in every tenth."""
    size = 4 * MiB
    create(tmp_path / "l000.qcow2", size)
    qio(tmp_path / "l000.qcow2", "write -P 1 0 4M")
    # qemu-img create costs ~40 ms a layer: clone two templates and patch the backing name.
    templates = [create(tmp_path / f"t{e}.qcow2", size, *(["extended_l2=on"] if e else []),
                        backing=tmp_path / "l000.qcow2").read_bytes() for e in (0, 1)]
    name_at = [t.index(b"l000.qcow2") for t in templates]
    for i in range(1, 300):
        t = bytearray(templates[i % 2])
        t[name_at[i % 2]:name_at[i % 2] + 10] = b"l%03d.qcow2" % (i - 1)
        path = tmp_path / f"l{i:03d}.qcow2"
        path.write_bytes(bytes(t))
        if i % 10 == 0:
            spec = {"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}, "backing": None}
            run("qemu-io", "-c", f"write -P {i % 250 + 2} {(i * 13 * KiB) % (4 * MiB - 8 * KiB)} 4608",
                "json:" + json.dumps(spec))
    ref = assert_same(cat_bin, path, ranges=4)
    assert ref.count(1) < size  # the upper layers' data is there


def test_threads_and_small_cache(cat_bin, tmp_path):
    size = 32 * MiB
    base = create(tmp_path / "base.qcow2", size, "cluster_size=4k")
    pattern_writes(base, random.Random(12), 60, size)
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", "cluster_size=16k", backing=base)
    pattern_writes(top, random.Random(13), 60, size)
    ref = reference(top)
    for args in (["-t", "8"], ["-t", "8", "--cache", "0"], ["--cache", "4096"]):
        assert cat(cat_bin, top, *args).stdout == ref, args


def test_map_coalesces(cat_bin, tmp_path):
    size = 16 * MiB
    base = create(tmp_path / "base.qcow2", size, "preallocation=metadata")
    qio(base, "write -P 1 0 16M")
    top = create(tmp_path / "top.qcow2", size, "extended_l2=on", "cluster_size=128k",
                 "preallocation=metadata", backing=base)
    qio(top, "write -P 2 1M 512", "write -z 2M 4k")
    lines = cat(cat_bin, top, "--map").stdout.decode().splitlines()
    ext = [l.split() for l in lines]
    assert sum(int(e[1]) for e in ext) == size
    offs = [int(e[0]) for e in ext]
    assert offs == sorted(offs) and offs[0] == 0
    # 16 MiB of preallocated base data around two small overlay writes: a handful of runs, not 256 clusters.
    assert len(ext) <= 6, lines
    assert [e[2] for e in ext] == ["data", "data", "data", "zero", "data"], lines
    assert ext[1][3] == "0" and int(ext[1][1]) == 4096  # the 512 B write: one 4 KiB subcluster


# -- broken inputs -----------------------------------------------------------

def expect_error(cat_bin, path, *args, msg=None):
    p = cat(cat_bin, path, *args, check=False)
    assert p.returncode == 1, "expected a failure"
    err = p.stderr.decode(errors="replace")
    if msg:
        assert msg in err, err
    return err


def test_bad_magic(cat_bin, tmp_path):
    img = tmp_path / "junk.qcow2"
    img.write_bytes(b"not a qcow2 image".ljust(65536, b"\x01"))
    expect_error(cat_bin, img, "-f", "qcow2", msg="bad magic")
    assert cat(cat_bin, img, "-f", "auto").stdout == img.read_bytes()  # AUTO: raw


def test_backing_loop(cat_bin, tmp_path):
    a = create(tmp_path / "a.qcow2", 1 * MiB)
    b = create(tmp_path / "b.qcow2", 1 * MiB, backing=a)
    qio(b, "write -P 1 0 64k")
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "b.qcow2", "-F", "qcow2", a)
    expect_error(cat_bin, b, msg="loop")
    expect_error(cat_bin, a, msg="loop")
    s = tmp_path / "self.qcow2"
    create(s, 1 * MiB)
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "self.qcow2", "-F", "qcow2", s)
    expect_error(cat_bin, s, msg="loop")


def test_missing_backing(cat_bin, tmp_path):
    base = create(tmp_path / "base.qcow2", 1 * MiB)
    top = create(tmp_path / "top.qcow2", 1 * MiB, backing=base)
    qio(top, "write -P 7 0 64k")
    os.unlink(base)
    err = expect_error(cat_bin, top, msg="missing")
    assert err.count("is missing") == 1
    # What the top layer holds is still readable; what falls through is EIO.
    assert cat_range(cat_bin, top, 0, 65536).stdout == b"\x07" * 65536
    expect_error(cat_bin, top, 65536, 1)


def test_backing_outside_directory(cat_bin, tmp_path):
    (tmp_path / "sub").mkdir()
    base = create(tmp_path / "base.qcow2", 1 * MiB)
    top = create(tmp_path / "sub" / "top.qcow2", 1 * MiB)
    for bad in ("../base.qcow2", str(base), "sub/../../base.qcow2"):
        run("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", bad, "-F", "qcow2", top)
        expect_error(cat_bin, top, msg="outside")


def test_l2_entry_past_end(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 4 * MiB)
    qio(img, "write -P 1 0 4M")
    at = l2_entry_offset(img, 1 * MiB)
    e = read_u64(img, at)
    patch(img, at, struct.pack(">Q", (e & ~0x00fffffffffffe00) | (1 << 40)))
    err = expect_error(cat_bin, img, msg="past the end")
    assert cat_range(cat_bin, img, 0, 1 * MiB).stdout == b"\x01" * MiB
    expect_error(cat_bin, img, 1 * MiB + 100, 10)
    # Misaligned host offset.
    patch(img, at, struct.pack(">Q", (e & ~0x00fffffffffffe00) | (e & 0x00fffffffffffe00) + 512))
    expect_error(cat_bin, img, 1 * MiB, 10, msg="misaligned")
    assert err.count("past the end") == 1


def test_l1_entry_past_end(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 4 * MiB)
    qio(img, "write -P 1 0 4M")
    h = header(img)
    patch(img, h["l1_offset"], struct.pack(">Q", (1 << 63) | (1 << 44)))
    expect_error(cat_bin, img, msg="past the end")


def test_truncated_image(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 4 * MiB)
    qio(img, "write -P 1 0 4M")
    os.truncate(img, os.path.getsize(img) - 65536 - 100)
    expect_error(cat_bin, img)
    os.truncate(img, 100)
    expect_error(cat_bin, img, "-f", "qcow2")


def compressed_entry(path, guest_off):
    at = l2_entry_offset(path, guest_off)
    e = read_u64(path, at)
    assert e & (1 << 62), "not compressed"
    cb = header(path)["cluster_bits"]
    x = 62 - (cb - 8)
    coff = e & ((1 << x) - 1)
    nsect = ((e >> x) & ((1 << (62 - x)) - 1)) + 1
    return at, e, coff, nsect * 512 - (coff & 511)


@pytest.mark.parametrize("ctype", ["zlib", "zstd"])
def test_corrupt_compressed(cat_bin, tmp_path, ctype):
    src = create(tmp_path / "src.qcow2", 1 * MiB)
    qio(src, "write -P 0x12 0 1M")
    comp = tmp_path / "comp.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", f"compression_type={ctype}", src, comp)
    _, _, coff, clen = compressed_entry(comp, 128 * KiB)
    patch(comp, coff, bytes(random.Random(1).randrange(256) for _ in range(min(clen, 64))))
    expect_error(cat_bin, comp, 128 * KiB, 1, msg="compressed")
    assert cat_range(cat_bin, comp, 0, 65536).stdout == b"\x12" * 65536
    # A descriptor pointing past the end of the file.
    at, e, _, _ = compressed_entry(comp, 256 * KiB)
    cb = header(comp)["cluster_bits"]
    x = 62 - (cb - 8)
    patch(comp, at, struct.pack(">Q", (e & ~((1 << x) - 1)) | (1 << 36)))
    expect_error(cat_bin, comp, 256 * KiB, 1)


def test_compressed_tail_past_eof(cat_bin, tmp_path):
    """qemu rounds compressed lengths to sectors; the last one may end past EOF."""
    src = create(tmp_path / "src.qcow2", 64 * KiB)
    qio(src, "write -P 0x21 0 64k")
    comp = tmp_path / "comp.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", src, comp)
    _, _, coff, clen = compressed_entry(comp, 0)
    os.truncate(comp, coff + clen - 1 if clen > 1 else coff + 1)
    got = cat(cat_bin, comp, check=False)
    if got.returncode == 0:
        assert got.stdout == b"\x21" * 65536


def test_unknown_incompatible_bit(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 1 * MiB)
    h = header(img)
    patch(img, 72, struct.pack(">Q", h["incompat"] | (1 << 5)))
    expect_error(cat_bin, img, msg="incompatible")


def test_dirty_bit_reads(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 1 * MiB)
    qio(img, "write -P 3 0 1M")
    patch(img, 72, struct.pack(">Q", header(img)["incompat"] | 1))
    p = cat(cat_bin, img)
    assert p.stdout == b"\x03" * MiB
    assert b"dirty" in p.stderr


def test_encryption(cat_bin, tmp_path):
    img = create(tmp_path / "img.qcow2", 1 * MiB)
    patch(img, 32, struct.pack(">I", 1))  # AES (v1 encryption)
    expect_error(cat_bin, img, msg="encrypt")
    luks = tmp_path / "luks.qcow2"
    r = subprocess.run(["qemu-img", "create", "-q", "--object", "secret,id=s0,data=pw", "-f", "qcow2",
                        "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
                        str(luks), "1M"], capture_output=True)
    if r.returncode == 0:
        expect_error(cat_bin, luks, msg="encrypt")


def test_external_data_file(cat_bin, tmp_path):
    img = tmp_path / "img.qcow2"
    run("qemu-img", "create", "-q", "-f", "qcow2", "-o", f"data_file={tmp_path / 'data.raw'}", img, "1M")
    expect_error(cat_bin, img, msg="external data file")


@pytest.mark.parametrize("field,off,value", [
    ("cluster_bits 8", 20, struct.pack(">I", 8)),
    ("cluster_bits 22", 20, struct.pack(">I", 22)),
    ("version 4", 4, struct.pack(">I", 4)),
    ("huge l1_size", 36, struct.pack(">I", 0x7fffffff)),
    ("l1 past end", 40, struct.pack(">Q", 1 << 50)),
    ("tiny l1 for size", 36, struct.pack(">I", 0)),
    ("huge size", 24, struct.pack(">Q", 1 << 63)),
    ("refcount_order 7", 96, struct.pack(">I", 7)),
    ("header_length odd", 100, struct.pack(">I", 105)),
    ("header_length huge", 100, struct.pack(">I", 0xfffffff8)),
    ("backing name too long", 16, struct.pack(">I", 5000)),
    ("backing name past end", 8, struct.pack(">Q", 1 << 40)),
    ("extension runs off", 112 + 4, struct.pack(">I", 0xffffff00)),
    ("compression type 7", 104, b"\x07"),
])
def test_hostile_header(cat_bin, tmp_path, field, off, value):
    img = create(tmp_path / "img.qcow2", 4 * MiB, backing=create(tmp_path / "b.qcow2", 4 * MiB))
    qio(img, "write -P 1 0 1M")
    patch(img, off, value)
    expect_error(cat_bin, img, "-f", "qcow2")
    probe = cat(cat_bin, img, "--map", check=False)  # every path, no crash
    assert probe.returncode in (0, 1)


def _set(path, guest_off, word, value):
    """Set 64-bit word `word` (0 = descriptor, 1 = bitmap) of guest_off's L2 entry; value(old) -> new."""
    at = l2_entry_offset(path, guest_off) + 8 * word
    patch(path, at, struct.pack(">Q", value(read_u64(path, at))))


@pytest.mark.parametrize("case,opts,word,value,qemu_fails", [
    ("alloc and zero bits overlap", ["extended_l2=on"], 1, lambda b: b | (1 << 32), True),
    ("alloc bits without host cluster", ["extended_l2=on"], 0, lambda e: e & ~0x00fffffffffffe00, True),
    ("zero flag in v2", ["compat=0.10"], 0, lambda e: e | 1, True),
    ("zero flag ignored with extended L2", ["extended_l2=on"], 0, lambda e: e | 1, False),
    ("zero flag with host cluster (v3)", [], 0, lambda e: e | 1, False),
    ("misaligned zero cluster", [], 0, lambda e: (e + 512) | 1, True),
    ("misaligned unallocated subclusters", ["extended_l2=on"], 0, lambda e: e + 512, True),
    ("extended: host cluster, no bits", ["extended_l2=on"], 1, lambda b: 0, False),
])
def test_l2_entries_like_qemu(cat_bin, tmp_path, case, opts, word, value, qemu_fails):
    """Odd L2 entries read as qemu reads them (-r: qemu fails those it calls corrupt)."""
    base = create(tmp_path / "base.qcow2", 1 * MiB)
    qio(base, "write -P 0x42 0 1M")
    img = create(tmp_path / "img.qcow2", 1 * MiB, *opts, backing=base)
    qio(img, "write -P 0x55 0 128k")
    _set(img, 0, word, value)
    q = subprocess.run(["qemu-io", "-r", "-f", "qcow2", "-c", "read 0 1M", str(img)], capture_output=True)
    assert (b"read failed" in q.stdout + q.stderr) == qemu_fails, q.stdout + q.stderr
    if qemu_fails:
        expect_error(cat_bin, img, 0, 65536)
        assert cat_range(cat_bin, img, 512 * KiB, 4096).stdout == b"\x42" * 4096
    else:
        assert_same(cat_bin, img, ranges=2)


def test_compressed_ignores_bitmap(cat_bin, tmp_path):
    src = create(tmp_path / "src.qcow2", 1 * MiB)
    qio(src, "write -P 0x31 0 1M")
    comp = tmp_path / "comp.qcow2"
    run("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "extended_l2=on", src, comp)
    _set(comp, 0, 1, lambda b: 0x1234_0000_5678)
    assert cat(cat_bin, comp).stdout == b"\x31" * MiB


def test_map_joins_across_l2_tables(cat_bin, tmp_path):
    """4 KiB clusters: one L2 table maps 2 MiB; runs go on across tables."""
    size = 16 * MiB
    base = create(tmp_path / "base.qcow2", size, "cluster_size=4k")
    top = create(tmp_path / "top.qcow2", size, "cluster_size=4k", backing=base)
    qio(top, "write -z 0 16M")
    ext = [l.split() for l in cat(cat_bin, top, "--map").stdout.decode().splitlines()]
    assert [(e[1], e[2], e[3]) for e in ext] == [(str(size), "zero", "0")]
    ext = [l.split() for l in cat(cat_bin, base, "--map").stdout.decode().splitlines()]
    assert [(e[1], e[2], e[3]) for e in ext] == [(str(size), "zero", "-1")]
    # Zero-writing first allocates every L2 table; data written after that
    # sits in contiguous host clusters across the table boundaries.
    qio(top, "write -P 7 0 16M")
    ext = [l.split() for l in cat(cat_bin, top, "--map").stdout.decode().splitlines()]
    assert {(e[2], e[3]) for e in ext} == {("data", "0")}
    assert len(ext) <= 4, ext  # not 8 (one per table): only qemu's refcount blocks interrupt it
    assert cat(cat_bin, top).stdout == b"\x07" * size


def probe(cat_bin, path):
    p = cat(cat_bin, path, "--probe")
    return dict(l.split(" ", 1) for l in p.stdout.decode().splitlines())


def test_probe(cat_bin, tmp_path):
    base = create(tmp_path / "base.raw", 3 * MiB, fmt="raw")
    top = create(tmp_path / "top.qcow2", 5 * MiB, "extended_l2=on", backing=base, bfmt="raw")
    assert probe(cat_bin, top) == {"format": "qcow2", "virtual_size": str(5 * MiB),
                                   "backing": "base.raw", "backing_format": "raw"}
    assert probe(cat_bin, base) == {"format": "raw", "virtual_size": str(3 * MiB),
                                    "backing": "-", "backing_format": "-"}
    patch(top, 72, struct.pack(">Q", header(top)["incompat"] | 1 << 7))
    p = probe(cat_bin, top)
    assert p["format"] == "bad" and "incompatible" in p["error"]
    # Dirty: a probe reads the header only and does not warn (rescans probe often).
    v2 = create(tmp_path / "d.qcow2", 1 * MiB)
    patch(v2, 72, struct.pack(">Q", header(v2)["incompat"] | 1))
    assert cat(cat_bin, v2, "--probe").stderr == b""
    assert probe(cat_bin, v2)["format"] == "qcow2"
