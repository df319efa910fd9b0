"""SEEK_DATA/SEEK_HOLE on disk.raw against `qemu-img map` of the same chain:
the data ranges vstorfs reports are exactly the ranges qemu calls data."""

import errno
import json
import os

import pytest

from conftest import MiB, GiB, disk_path, run


def our_data_ranges(path, size):
    ranges, pos = [], 0
    fd = os.open(path, os.O_RDONLY)
    try:
        while pos < size:
            try:
                a = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                assert e.errno == errno.ENXIO
                break
            b = os.lseek(fd, a, os.SEEK_HOLE)
            assert a < b <= size
            ranges.append((a, b))
            pos = b
    finally:
        os.close(fd)
    return ranges


def qemu_data_ranges(refdir, top):
    out = json.loads(run(["qemu-img", "map", "--output=json", top], cwd=refdir).stdout)
    ranges = []
    for e in out:
        if not e["data"]:
            continue
        a, b = e["start"], e["start"] + e["length"]
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return ranges


@pytest.fixture(scope="module")
def seek_chain(module_env):
    vg = module_env.vg(npvs=1, pv_size=GiB)
    ch = module_env.chain(vg)
    # A sparse (not preallocated) base, so that holes exist at the bottom too.
    v = ch.qcow2("vm-100-disk-0.qcow2", 24 * MiB, opts="cluster_size=65536")
    v.write(0, 3 * MiB, 0x11)
    v.write(10 * MiB + 4096, 70000, 0x12)
    v.io("write -z 1M 128k")                                  # zero clusters over data
    v.snapshot("s1", overlay_opts="extended_l2=on,cluster_size=128k")
    v.write(5 * MiB + 512, 9000, 0x21)                        # partial subclusters
    v.io("write -z 0 4096", "write -z 2M 12k")                # zero subclusters
    v.snapshot("s2", overlay_opts="extended_l2=on,cluster_size=128k,preallocation=metadata",
               backing_shorter_by=8 * MiB)                    # backing shorter than the overlay
    v.write(26 * MiB, 1 * MiB, 0x31)
    ch.sync()
    ch.refresh_reference_layers()
    d = module_env.mount(vg.name, vg.loops, name="seek")
    return ch, d, v


@pytest.mark.parametrize("view", ["current", "s1", "s2"])
def test_seek_matches_qemu_map(seek_chain, view):
    ch, d, v = seek_chain
    top = v.views()[view]
    path = disk_path(d.mnt, ch.vg.name, v.name, view)
    ours = our_data_ranges(path, os.path.getsize(path))
    theirs = qemu_data_ranges(ch.refdir, top)
    assert ours == theirs, "SEEK_DATA/SEEK_HOLE %s\nqemu-img map  %s" % (ours, theirs)
    assert ours, "no data found at all"


def test_sparse_copy_equals_the_view(seek_chain, tmp_path):
    ch, d, v = seek_chain
    path = disk_path(d.mnt, ch.vg.name, v.name, "current")
    dst = tmp_path / "copy.raw"
    run(["cp", "--sparse=always", path, str(dst)])
    with open(path, "rb") as a, open(dst, "rb") as b:
        assert a.read() == b.read()
