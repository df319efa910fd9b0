"""A corpus of broken and hostile qcow2 images, built from qemu-img output
by patching bytes (no binary blobs). Each builder adds one volume to a
lvmlib.Chain and says what a reader must see:

  "eio"      every read of `current` that reaches the bad part fails with EIO
  "any"      reads may succeed or fail with EIO (the image is nonsense but
             self-consistent enough to read); nothing may crash or hang
  "ok"       the image is odd but valid: `current` must equal qemu's reading
"""

import os
import struct

from lvmlib import MiB, run

SIZE = 4 * MiB
L2_MASK = 0x00fffffffffffe00


def _patch(ch, name, off, data):
    with open(os.path.join(ch.dir, name), "r+b") as f:
        f.seek(off)
        f.write(data)


def _hdr(ch, name):
    with open(os.path.join(ch.dir, name), "rb") as f:
        h = f.read(112)
    return {
        "l1_off": struct.unpack(">Q", h[40:48])[0],
        "cluster_bits": struct.unpack(">I", h[20:24])[0],
    }


def _l1_l2(ch, name):
    h = _hdr(ch, name)
    with open(os.path.join(ch.dir, name), "rb") as f:
        f.seek(h["l1_off"])
        l1 = struct.unpack(">Q", f.read(8))[0]
    return h, l1 & L2_MASK


def _base(ch, vmid, opts="cluster_size=65536", data=True):
    v = ch.qcow2("vm-%d-disk-0.qcow2" % vmid, SIZE, opts=opts)
    if data:
        v.write(0, SIZE, 0x40 + vmid % 64)
    return v


def truncated_header(ch):
    v = _base(ch, 201)
    os.truncate(os.path.join(ch.dir, v.name), 60)
    return v, "eio"


def header_length_lies(ch):
    v = _base(ch, 202)
    _patch(ch, v.name, 100, struct.pack(">I", 0x7ffffff8))
    return v, "eio"


def l1_size_2_31(ch):
    v = _base(ch, 203)
    _patch(ch, v.name, 36, struct.pack(">I", 1 << 31))
    return v, "eio"


def l1_offset_past_end(ch):
    v = _base(ch, 204)
    _patch(ch, v.name, 40, struct.pack(">Q", 1 << 50))
    return v, "eio"


def l2_entries_past_end(ch):
    v = _base(ch, 205)
    h, l2 = _l1_l2(ch, v.name)
    for i in range(8):
        _patch(ch, v.name, l2 + 8 * i, struct.pack(">Q", (1 << 45) + (i << 16) | 1 << 63))
    return v, "eio"


def l1_l2_overlap(ch):
    """The L1 entry points at the L1 table itself: L1 doubles as an L2 table."""
    v = _base(ch, 206)
    h = _hdr(ch, v.name)
    _patch(ch, v.name, h["l1_off"], struct.pack(">Q", h["l1_off"] | 1 << 63))
    return v, "any"


def l2_points_at_metadata(ch):
    """Data clusters overlapping the header and refcount table."""
    v = _base(ch, 207)
    h, l2 = _l1_l2(ch, v.name)
    _patch(ch, v.name, l2, struct.pack(">QQ", 0 | 1 << 63 | 0x10000 * 0, 0x10000 | 1 << 63))
    _patch(ch, v.name, l2, struct.pack(">Q", 1 << 63 | 0))      # offset 0 = unallocated
    _patch(ch, v.name, l2 + 8, struct.pack(">Q", 1 << 63 | 0x10000))
    return v, "any"


def _compressed(ch, vmid, ctype):
    raw = os.path.join(ch.dir, "raw-%d" % vmid)
    with open(raw, "wb") as f:
        f.write(bytes(range(256)) * (SIZE // 256))
    name = "vm-%d-disk-0.qcow2" % vmid
    run(["qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
         "cluster_size=65536,compression_type=" + ctype, raw, name], cwd=ch.dir)
    os.unlink(raw)
    v = ch._add(name, SIZE, "qcow2", "", None, None)
    h, l2 = _l1_l2(ch, name)
    with open(os.path.join(ch.dir, name), "rb") as f:
        f.seek(l2)
        entry = struct.unpack(">Q", f.read(8))[0]
    return v, h, l2, entry


def compressed_past_end(ch):
    v, h, l2, e = _compressed(ch, 208, "zlib")
    x = 62 - (h["cluster_bits"] - 8)
    _patch(ch, v.name, l2, struct.pack(">Q", 1 << 62 | (e & ~((1 << x) - 1)) | (1 << 38)))
    return v, "eio"


def compressed_too_short(ch):
    """The descriptor claims one sector: the stream inflates to less than a cluster."""
    v, h, l2, e = _compressed(ch, 209, "zlib")
    x = 62 - (h["cluster_bits"] - 8)
    _patch(ch, v.name, l2, struct.pack(">Q", 1 << 62 | (e & ((1 << x) - 1))))
    return v, "eio"


def compressed_too_long(ch):
    """Stream data of another cluster follows: more than a cluster of output is cut, not overrun."""
    v, h, l2, e = _compressed(ch, 210, "zlib")
    x = 62 - (h["cluster_bits"] - 8)
    _patch(ch, v.name, l2, struct.pack(">Q", 1 << 62 | (e & ((1 << x) - 1)) | (255 << x)))
    return v, "any"


def zstd_garbage(ch):
    v, h, l2, e = _compressed(ch, 211, "zstd")
    x = 62 - (h["cluster_bits"] - 8)
    _patch(ch, v.name, e & ((1 << x) - 1), os.urandom(512))
    return v, "eio"


def backing_loop_1(ch):
    v = _base(ch, 212, data=False)
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", v.name, v.name],
        cwd=ch.dir)
    return v, "eio"


def backing_loop_5(ch):
    v = _base(ch, 213, data=False)
    for i in range(4):
        v.snapshot("s%d" % i, overlay_opts="cluster_size=65536")
    base = v.snaps[0][1]
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", v.name, base],
        cwd=ch.dir)
    return v, "eio"


def backing_4k(ch):
    v = _base(ch, 214, data=False)
    _patch(ch, v.name, 8, struct.pack(">QI", 8192, 4096))
    _patch(ch, v.name, 8192, b"A" * 4096)
    return v, "eio"


def backing_dotdot(ch):
    v = _base(ch, 215, data=False)
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", "../../etc/shadow",
         v.name], cwd=ch.dir)
    return v, "eio"


def backing_absolute_outside(ch):
    v = _base(ch, 216, data=False)
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b", "/etc/passwd", v.name],
        cwd=ch.dir)
    return v, "eio"


def unknown_incompatible(ch):
    v = _base(ch, 217)
    _patch(ch, v.name, 72, struct.pack(">Q", 1 << 40))
    return v, "eio"


def encrypted(ch):
    v = _base(ch, 218)
    _patch(ch, v.name, 32, struct.pack(">I", 1))
    return v, "eio"


def external_data_file(ch):
    v = _base(ch, 219)
    _patch(ch, v.name, 72, struct.pack(">Q", 1 << 2))
    return v, "eio"


def refcount_order_7(ch):
    v = _base(ch, 220)
    _patch(ch, v.name, 96, struct.pack(">I", 7))
    return v, "eio"


def cluster_bits_8(ch):
    v = _base(ch, 221)
    _patch(ch, v.name, 20, struct.pack(">I", 8))
    return v, "eio"


def cluster_bits_22(ch):
    v = _base(ch, 222)
    _patch(ch, v.name, 20, struct.pack(">I", 22))
    return v, "eio"


def virtual_size_2_63(ch):
    v = _base(ch, 223)
    _patch(ch, v.name, 24, struct.pack(">Q", 1 << 63))
    return v, "eio"


def snapshot_missing_mid_chain(ch):
    v = _base(ch, 224, data=False)
    v.write(0, MiB, 0x11)
    v.snapshot("s1", overlay_opts="cluster_size=65536")
    v.write(MiB, MiB, 0x12)
    v.snapshot("s2", overlay_opts="cluster_size=65536")
    v.write(2 * MiB, MiB, 0x13)
    v.missing_after_sync = v.snaps[1][1]      # the test removes this LV after sync
    return v, "eio"


CORPUS = [truncated_header, header_length_lies, l1_size_2_31, l1_offset_past_end,
          l2_entries_past_end, l1_l2_overlap, l2_points_at_metadata, compressed_past_end,
          compressed_too_short, compressed_too_long, zstd_garbage, backing_loop_1, backing_loop_5,
          backing_4k, backing_dotdot, backing_absolute_outside, unknown_incompatible, encrypted,
          external_data_file, refcount_order_7, cluster_bits_8, cluster_bits_22, virtual_size_2_63,
          snapshot_missing_mid_chain]
