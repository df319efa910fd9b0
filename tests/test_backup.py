"""Backup and restore files of a view: changed-since/<older>.json,
allocated.json, .partitions/part<N>.raw, and identities that survive remounts and
neighbours' removal."""

import json
import os
import re
import shutil
import subprocess

import pytest

from conftest import MiB, Daemon, run, wait_for
from test_snapshots import VOL, build_volume, mount

CHUNK = 64 * 1024


def view_dir(d, vg, view, vol=VOL):
    return os.path.join(d.mnt, vg.name, vol, view)


def load_ranges(path):
    with open(path) as f:
        text = f.read()
    ranges = json.loads(text)
    prev_end = -1
    for r in ranges:
        assert set(r) == {"offset", "length", "exists"}, r
        assert r["exists"] in ("true", "false")
        assert r["length"] > 0 and r["offset"] > prev_end - 1, ranges
        prev_end = r["offset"] + r["length"]
    return ranges


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def outside(ranges, size):
    """The byte ranges not covered by `ranges`."""
    pos = 0
    for r in ranges:
        if r["offset"] > pos:
            yield pos, r["offset"] - pos
        pos = r["offset"] + r["length"]
    if pos < size:
        yield pos, size - pos


def check_changed(newer_bytes, older_bytes, ranges):
    size = len(newer_bytes)
    for off, ln in outside(ranges, size):
        assert newer_bytes[off:off + ln] == older_bytes[off:off + ln], \
            "bytes at %d+%d differ but are not listed" % (off, ln)
    for r in ranges:
        if r["exists"] == "false":
            seg = newer_bytes[r["offset"]:r["offset"] + r["length"]]
            assert seg.count(0) == len(seg), "exists=false range %r is not zero" % r


def check_every_pair(d, vg):
    vol = os.path.join(d.mnt, vg.name, VOL)
    views = sorted(os.listdir(vol))
    data = {v: read_all(os.path.join(vol, v, "disk.raw")) for v in views}
    pairs = 0
    for v in views:
        listed = sorted(os.listdir(os.path.join(vol, v, "changed-since")))
        snaps = [s for s in views if s != "current"]
        # older views: every snapshot for current; the earlier ones for a snapshot
        for name in listed:
            older = name[:-len(".json")]
            ranges = load_ranges(os.path.join(vol, v, "changed-since", name))
            check_changed(data[v], data[older], ranges)
            # tight: never more than the disk, and the pair's differences are listed
            assert sum(r["length"] for r in ranges) <= len(data[v])
            pairs += 1
        if v == "current":
            assert listed == sorted(s + ".json" for s in snaps)
        alloc = load_ranges(os.path.join(vol, v, "allocated.json"))
        zero = bytes(len(data[v]))
        check_changed(data[v], zero, alloc)
    return pairs


def snapshot_order(d, vg):
    """Snapshots oldest first, from their mtimes (names are s1, s2, s3 here)."""
    vol = os.path.join(d.mnt, vg.name, VOL)
    return sorted((v for v in os.listdir(vol) if v != "current"))


def test_changed_since_every_pair_and_after_both_merges(env):
    vg, ch = build_volume(env, snaps=("s1", "s2", "s3", "s4"), commit_heavy=True)
    d = mount(env, vg)
    s = view_dir(d, vg, "s2")
    assert sorted(os.listdir(s)) == ["allocated.json", "changed-since", "disk.raw"]
    assert sorted(os.listdir(os.path.join(s, "changed-since"))) == ["s1.json"]
    assert check_every_pair(d, vg) == 4 + 3 + 2 + 1
    # the listed total is what the layer in between holds, not the whole disk
    r = load_ranges(os.path.join(view_dir(d, vg, "s3"), "changed-since", "s2.json"))
    assert 0 < sum(x["length"] for x in r) <= 4 * MiB
    assert any(x["exists"] == "false" for x in r), "the zero write is not listed as exists=false"
    os.rmdir(view_dir(d, vg, "s1"))      # its child holds less: commit
    os.rmdir(view_dir(d, vg, "s3"))      # its child holds more: rebase
    log = d.log()
    assert "by committing" in log and "by rebasing" in log, log[-3000:]
    assert check_every_pair(d, vg) == 2 + 1


def stat_tree(d, vg, views, reverse=False):
    out = {}
    paths = []
    for v in views:
        base = view_dir(d, vg, v)
        paths += [base, os.path.join(base, "disk.raw"), os.path.join(base, "allocated.json"),
                  os.path.join(base, "changed-since")]
        paths += [os.path.join(base, "changed-since", n)
                  for n in sorted(os.listdir(os.path.join(base, "changed-since")))]
    for p in (reversed(paths) if reverse else paths):
        st = os.stat(p)
        # A merge may describe the same differences in other words: the JSON
        # text may change size, and either text is right for the same bytes.
        size = None if p.endswith(".json") else st.st_size
        out[os.path.relpath(p, d.mnt)] = (st.st_ino, st.st_mtime, st.st_ctime, size)
    return out


def test_identity_stable_across_remounts_and_neighbour_merges(env):
    vg, ch = build_volume(env, snaps=("s1", "s2", "s3", "s4"), commit_heavy=True)
    d = mount(env, vg)
    first = stat_tree(d, vg, ["s1", "s2", "s3", "s4"])
    d.stop()
    d2 = mount(env, vg, name="mnt2")
    again = stat_tree(d2, vg, ["s1", "s2", "s3", "s4"], reverse=True)
    assert {k.split("/", 1)[1]: v for k, v in again.items()} == \
        {k.split("/", 1)[1]: v for k, v in first.items()}
    # a neighbour's removal, by rebase and by commit, changes none of the others
    keep = {k.split("/", 1)[1]: v for k, v in first.items()
            if "/s1" not in k and "/s3" not in k and "s1.json" not in k and "s3.json" not in k}
    os.rmdir(view_dir(d2, vg, "s1"))
    os.rmdir(view_dir(d2, vg, "s3"))
    assert "by committing" in d2.log() and "by rebasing" in d2.log()
    after = stat_tree(d2, vg, ["s2", "s4"])
    assert {k.split("/", 1)[1]: v for k, v in after.items()} == keep
    d2.stop()
    d3 = mount(env, vg, name="mnt3")
    after = stat_tree(d3, vg, ["s2", "s4"], reverse=True)
    assert {k.split("/", 1)[1]: v for k, v in after.items()} == keep
    # taken again under the same name: a new identity
    old_ino = os.stat(view_dir(d3, vg, "s4")).st_ino
    os.rmdir(view_dir(d3, vg, "s4"))
    os.mkdir(view_dir(d3, vg, "s4"))
    assert os.stat(view_dir(d3, vg, "s4")).st_ino != old_ino


def test_current_never_looks_unchanged(env):
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    p = os.path.join(view_dir(d, vg, "current"), "disk.raw")
    a = os.stat(p)
    wait_for(lambda: os.stat(p).st_mtime != a.st_mtime, timeout=5)
    b = os.stat(p)
    assert (b.st_mtime, b.st_ctime) != (a.st_mtime, a.st_ctime)
    assert b.st_ino == a.st_ino


def make_partitioned_disk(workdir, label):
    """A 64 MiB raw disk: GPT with two partitions, or MBR with a primary, an
    extended and two logical partitions; ext4 holding /hostname in each."""
    disk = os.path.join(workdir, "disk-%s.raw" % label)
    with open(disk, "wb") as f:
        f.truncate(64 * MiB)
    if label == "gpt":
        script = "label: gpt\n1M,20M,L\n,20M,L\n"
        parts = {1: (MiB, 20 * MiB), 2: (21 * MiB, 20 * MiB)}
    else:
        script = ("label: dos\nstart=2048,size=32768,type=83\nstart=34816,size=81920,type=5\n"
                  "start=36864,size=20480,type=83\nstart=59392,size=20480,type=83\n")
        parts = {1: (MiB, 16 * MiB)}
    run(["sfdisk", "-q", disk], input=script.encode())
    table = json.loads(run(["sfdisk", "-J", disk]).stdout)["partitiontable"]
    for p in table["partitions"]:
        num = int(re.search(r"(\d+)$", p["node"]).group(1))
        if p.get("type") in ("5", "f", "85"):
            continue
        parts[num] = (p["start"] * 512, p["size"] * 512)
    for num, (start, length) in parts.items():
        root = os.path.join(workdir, "root-%s-%d" % (label, num))
        os.makedirs(root, exist_ok=True)
        with open(os.path.join(root, "hostname"), "w") as f:
            f.write("host-%s-%d\n" % (label, num))
        fs = os.path.join(workdir, "fs-%s-%d.img" % (label, num))
        run(["mkfs.ext4", "-q", "-F", "-d", root, fs, str(length // 1024) + "k"])
        run(["dd", "if=" + fs, "of=" + disk, "bs=1M", "seek=%d" % (start // MiB),
             "conv=notrunc", "status=none"])
    return disk, parts


@pytest.mark.parametrize("label", ["gpt", "dos"])
def test_partition_files(env, label):
    if not shutil.which("sfdisk") or not shutil.which("debugfs"):
        pytest.skip("needs sfdisk and debugfs")
    vg = env.vg(pv_size=512 * MiB)
    ch = env.chain(vg)
    disk, parts = make_partitioned_disk(env.dir, label)
    v = ch.import_raw_as_qcow2("vm-120-disk-0.qcow2", disk)
    v.snapshot("before")
    v.write(30 * MiB, MiB, 0x77)     # the live disk moves on; the snapshot does not
    ch.sync()
    d = Daemon(vg.name, env.mountpoint(), vg.loops)
    env.daemons.append(d)
    d.wait_mounted()
    view = os.path.join(d.mnt, vg.name, "vm-120-disk-0.qcow2", "before")
    assert ".partitions" not in os.listdir(view)   # hidden: a walk reads disk.raw only
    pdir = os.path.join(view, ".partitions")
    listed = sorted(os.listdir(pdir))
    assert listed == sorted("part%d.raw" % n for n in parts)
    with open(disk, "rb") as f:
        raw = f.read()
    for num, (start, length) in parts.items():
        p = os.path.join(pdir, "part%d.raw" % num)
        assert os.stat(p).st_size == length
        assert read_all(p) == raw[start:start + length]
        out = run(["debugfs", "-R", "cat /hostname", p]).stdout.decode()
        assert out.strip() == "host-%s-%d" % (label, num)
    assert not os.path.exists(os.path.join(pdir, "part9.raw"))
    assert not os.path.exists(os.path.join(view, "part1.raw"))
