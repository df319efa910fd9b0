"""Hostile images (tests/hostile.py) in one VG: nothing crashes or hangs, memory
stays bounded, the affected reads fail with EIO and say so in the log, the
healthy disk next to them still reads exactly like qemu reads it."""

import errno
import os
import subprocess
import threading

import pytest

from conftest import MiB, GiB, check_all_views, skip_if_sanitized
import hostile
from vstorlib import rss_kib

HEALTHY = "vm-100-disk-0.qcow2"


def read_all(path, timeout=20):
    """Read the whole file in 1 MiB steps in a thread; (errno or 0, bytes read)."""
    result = {}

    def work():
        n = 0
        try:
            with open(path, "rb", buffering=0) as f:
                while True:
                    b = f.read(MiB)
                    if not b:
                        break
                    n += len(b)
            result["r"] = (0, n)
        except OSError as e:
            result["r"] = (e.errno, n)
    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "%s: read hung" % path
    return result["r"]


@pytest.fixture(scope="module")
def hostile_vg(module_env):
    vg = module_env.vg(npvs=1, pv_size=2 * GiB)
    ch = module_env.chain(vg)
    good = ch.qcow2(HEALTHY, 8 * MiB)
    good.write(0, 8 * MiB, 0x01)
    good.snapshot("ok")
    good.write(12345, 99999, 0x02)
    cases = {}
    for build in hostile.CORPUS:
        v, expect = build(ch)
        cases[build.__name__] = (v, expect)
    ch.sync()
    for v, _ in cases.values():
        missing = getattr(v, "missing_after_sync", None)
        if missing:
            vg.lvremove(missing)
            ch.lvs_created.discard(missing)
    d = module_env.mount(vg.name, vg.loops, name="hostile")
    return ch, d, cases


@pytest.mark.parametrize("case", [b.__name__ for b in hostile.CORPUS])
def test_hostile_image(hostile_vg, case):
    ch, d, cases = hostile_vg
    v, expect = cases[case]
    voldir = os.path.join(d.mnt, ch.vg.name, v.name)
    assert "current" in os.listdir(voldir)
    err, n = read_all(os.path.join(voldir, "current", "disk.raw"))
    if expect == "eio":
        assert err == errno.EIO, "%s: read %d bytes, error %s; expected EIO" % (case, n, err)
        assert [l for l in d.log().splitlines() if v.name in l or "/" + v.name in l], \
            "%s: no log line names %s" % (case, v.name)
    else:
        assert err in (0, errno.EIO), "%s: %s" % (case, os.strerror(err))
    for view in os.listdir(voldir):                 # every other view: no crash, no hang
        e2, _ = read_all(os.path.join(voldir, view, "disk.raw"))
        assert e2 in (0, errno.EIO)
    assert d.alive()
    assert rss_kib(d.proc.pid) < 200 * 1024, "daemon RSS grew past 200 MiB"


def test_healthy_disk_unaffected(hostile_vg):
    ch, d, cases = hostile_vg
    check_all_views(d.mnt, ch, volumes=[HEALTHY])
    assert d.alive()


def test_chain_deeper_than_the_limit(env):
    """1030 layers: views deeper than 1024 fail with EIO and a log line, the
    shallow ones read, memory stays bounded."""
    skip_if_sanitized()
    depth = 1030
    vg = env.vg(npvs=1, pv_size=2 * GiB, extent_size="1m", metadatasize="32m")
    ch = env.chain(vg)
    v = ch.qcow2("vm-300-disk-0.qcow2", MiB, opts="cluster_size=4096")
    v.write(0, 4096, 0x33)
    ch.lv_slack[v.name] = 0
    for i in range(1, depth):
        lv = v.snapshot("s%d" % i, overlay_opts="cluster_size=4096")
        ch.lv_slack[lv] = 0
        ch.lv_slack[v.name] = 0
    ch.sync()
    d = env.mount(vg.name, vg.loops)
    voldir = os.path.join(d.mnt, vg.name, v.name)
    assert len(os.listdir(voldir)) == depth
    err, _ = read_all(os.path.join(voldir, "current", "disk.raw"), timeout=60)
    assert err == errno.EIO
    assert "deeper than 1024" in d.log()
    err, n = read_all(os.path.join(voldir, "s5", "disk.raw"))
    assert (err, n) == (0, MiB)
    with open(os.path.join(voldir, "s1000", "disk.raw"), "rb") as f:
        assert f.read(4096) == b"\x33" * 4096          # 1000 layers deep: within the limit
    assert d.alive()
    assert rss_kib(d.proc.pid) < 200 * 1024
