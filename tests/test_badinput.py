"""Bad input: damaged LVs give EIO on the reads that touch them, one log line
naming the LV, and the daemon keeps serving everything else correctly."""

import errno
import os
import struct
import time

import pytest

from conftest import (MiB, GiB, check_all_views, assert_same_content, disk_path,
                      require_daemon, wait_for, run)
from lvmlib import lv_qcow2_header, first_l2_entry

DISK = 8 * MiB

HEALTHY = "vm-100-disk-0.qcow2"


def bad_header(ch):
    """Middle layer of a 3-layer chain has an invalid cluster_bits."""
    v = ch.qcow2("vm-110-disk-0.qcow2", DISK)
    v.write(0, DISK, 0x10)
    v.snapshot("s1")
    v.write(MiB, MiB, 0x11)
    v.snapshot("s2")
    v.write(2 * MiB, MiB, 0x12)
    bad = "snap_vm-110-disk-0_s2.qcow2"

    def patch(vg):
        vg.pwrite_lv(bad, 20, struct.pack(">I", 99))          # cluster_bits = 99
    return v.name, bad, {"s2": True, "current": True, "s1": False}, 0, patch


def backing_loop(ch):
    """The base layer's backing file is the volume's top: a loop."""
    v = ch.qcow2("vm-111-disk-0.qcow2", DISK)
    v.write(0, DISK, 0x20)
    base = v.snapshot("s1")
    v.write(0, MiB, 0x21)
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2", "-b", v.name, base],
        cwd=ch.dir)
    return v.name, base, {"s1": True, "current": True}, 4 * MiB, None


def missing_backing(ch):
    """Top overlay names a backing LV that does not exist."""
    v = ch.qcow2("vm-112-disk-0.qcow2", DISK)
    v.write(0, DISK, 0x30)
    v.snapshot("s1")
    v.write(0, MiB, 0x31)
    run(["qemu-img", "rebase", "-q", "-u", "-f", "qcow2", "-F", "qcow2",
         "-b", "snap_vm-112-disk-0_gone.qcow2", v.name], cwd=ch.dir)
    return v.name, v.name, {"current": True, "s1": False}, 4 * MiB, None


def l2_past_end(ch):
    """An L2 entry of the base (plain 64k clusters) points past the end of its LV."""
    v = ch.qcow2("vm-113-disk-0.qcow2", DISK)
    v.write(0, DISK, 0x40)
    base = v.snapshot("s1")
    v.write(4 * MiB, MiB, 0x41)

    def patch(vg):
        l2, h = first_l2_entry(vg, base)
        assert h["cluster_bits"] == 16
        beyond = (vg.lv_size(base) + (1 << 20)) & ~0xffff
        vg.pwrite_lv(base, l2, struct.pack(">Q", (1 << 63) | beyond))
    # cluster 0 is broken in both views (current has no data there)
    return v.name, base, {"s1": True, "current": True}, 0, patch


def bad_compressed(ch, ctype):
    name = "vm-114-disk-0.qcow2" if ctype == "zlib" else "vm-115-disk-0.qcow2"
    v = ch.qcow2(name, DISK, opts="compression_type=%s" % ctype)
    for i in range(8):
        v.io("write -c -P %d %d 65536" % (0x50 + i, i * 65536))
    base = v.snapshot("s1")
    v.write(4 * MiB, 4096, 0x5f)

    def patch(vg):
        l2, h = first_l2_entry(vg, base)
        entry = struct.unpack(">Q", vg.pread_lv(base, l2, 8))[0]
        assert entry & (1 << 62), "cluster 0 is not compressed: %x" % entry
        x = 62 - (h["cluster_bits"] - 8)
        off = entry & ((1 << x) - 1)
        vg.pwrite_lv(base, off, b"\xff" * 256)
    return v.name, base, {"s1": True, "current": True}, 0, patch


CASES = {
    "corrupt-header": bad_header,
    "backing-loop": backing_loop,
    "missing-backing": missing_backing,
    "l2-past-end": l2_past_end,
    "zlib-garbage": lambda ch: bad_compressed(ch, "zlib"),
    "zstd-garbage": lambda ch: bad_compressed(ch, "zstd"),
}


def open_read(path, off, length):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, off)
    finally:
        os.close(fd)


def expect_eio(path, off, length=4096):
    """The open or the read of a broken view fails with EIO."""
    with pytest.raises(OSError) as ei:
        open_read(path, off, length)
    assert ei.value.errno == errno.EIO, "%s: %s (expected EIO)" % (path, ei.value)


def lines_naming(log, lv):
    return [l for l in log.splitlines() if lv in l and l.startswith("vstorfs:")]


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input(env, case):
    require_daemon()
    vg = env.vg(npvs=1, pv_size=GiB)
    ch = env.chain(vg)
    good = ch.qcow2(HEALTHY, DISK)
    good.write(0, DISK, 0x01)
    good.snapshot("ok")
    good.write(12345, 99999, 0x02)
    volume, bad_lv, views, bad_off, patch = CASES[case](ch)
    ch.sync()
    if patch:
        patch(vg)
    ch.refresh_reference_layers()

    d = env.mount(vg.name, vg.loops)
    vgdir = os.path.join(d.mnt, vg.name)
    assert HEALTHY in os.listdir(vgdir)

    assert volume in os.listdir(vgdir)
    listed = os.listdir(os.path.join(vgdir, volume))
    assert "current" in listed
    for view, broken in views.items():
        path = disk_path(d.mnt, vg.name, volume, view)
        if broken:
            if view not in listed:
                continue          # a view that cannot be opened may also be hidden
            expect_eio(path, bad_off)
            expect_eio(path, bad_off)
        else:
            assert view in listed, (view, listed)
            assert_same_content(path, ch.reference(volume, view))

    # a log line names the LV (with a reason), and it is not repeated per read
    assert wait_for(lambda: lines_naming(d.log(), bad_lv), 5), \
        "no log line naming %s:\n%s" % (bad_lv, d.log())
    n = len(lines_naming(d.log(), bad_lv))
    for _ in range(5):
        for view, broken in views.items():
            if broken and view in listed:
                expect_eio(disk_path(d.mnt, vg.name, volume, view), bad_off)
    time.sleep(0.3)
    again = lines_naming(d.log(), bad_lv)
    assert len(again) == n, "log repeated per read:\n" + "\n".join(again)
    assert all(len(l) > len("vstorfs: error: ") + len(bad_lv) for l in again), again

    # still up, and the healthy disk still reads correctly
    assert d.alive()
    check_all_views(d.mnt, ch, volumes=[HEALTHY])
    assert d.alive()
