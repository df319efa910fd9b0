"""Proxmox's storage.cfg read by the one parser (store/pve_config.c) that
SOURCE pve:, the LVM store's lock and a directory store's settings share.

A corpus as Proxmox writes it (comments, tab and space indentation,
unknown keys, keys without value, several storages of dir, lvm, nfs, rbd
and lvmthin type, disabled ones, a duplicate id) is checked through the
daemon: what `pve:all` serves and leaves out, and that a directory storage's
"snapshot-as-volume-chain 1" makes mkdir take a volume chain, through pve:
and through the directory mounted as a plain SOURCE. Hostile files (huge
lines, binary, missing fields, duplicate ids, too big) are served as far as
they make sense or refused with a clear error, never a crash.

The daemon runs as a cluster node does in test_cluster.py: a private mount
namespace with /etc/pve bind-mounted (its Node and write_pve)."""

import json
import os
import random
import subprocess

import pytest

from conftest import GiB, MiB, run, sanitizer_check
from test_cluster import STORE, VOL_A, Node, mountpoints, write_pve  # noqa: F401 (autouse fixture)

CHAIN_VOL = "vm-100-disk-1.qcow2"   # VM 100 lives on node "nodea" (write_pve's .vmlist)

CORPUS = """\
# storage.cfg as Proxmox writes it, with an admin's comments
dir: local
	path {local}
	content iso,vztmpl,backup,images
	prune-backups keep-all=1
	shared 0

# indented by spaces, unknown keys
dir: chain
    path {chain}
    content images
    # a comment inside a section
    snapshot-as-volume-chain 1
    preallocation off
    x-site-note kept but unused

nfs: nfs1
	export /export/pve
	path /mnt/pve/nfs1
	server 192.0.2.10
	content images
	options vers=4.2

rbd: ceph-ext
	content images
	krbd 0
	monhost 192.0.2.20 192.0.2.21
	pool vms
	username admin
	nodes nodeb

rbd: ceph-off
	pool rbd
	disable

dir: off
	path {local}
	disable 1

dir: local
	path {other}
	content images

lvmthin: local-lvm
	thinpool data
	vgname pve
	content rootdir,images
"""


def qcow2(path, size="8M"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, size])


def backing_of(path):
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], capture_output=True, text=True,
                         check=True).stdout
    return [json.loads(out).get("backing-filename")]


def left_out_line(node):
    lines = [ln for ln in node.log().splitlines() if "left out" in ln]
    assert len(lines) == 1, node.log()
    return lines[0]


@pytest.fixture
def corpus(env):
    vg = env.vg(npvs=1, pv_size=256 * MiB)
    ch = env.chain(vg)
    ch.qcow2(VOL_A, 8 * MiB)
    ch.sync()
    dirs = {k: os.path.join(env.dir, k) for k in ("local", "chain", "other")}
    qcow2(os.path.join(dirs["local"], "images", "200", "vm-200-disk-0.qcow2"))
    qcow2(os.path.join(dirs["other"], "images", "300", "vm-300-disk-0.qcow2"))
    qcow2(os.path.join(dirs["chain"], "images", "100", CHAIN_VOL))
    pvedir = os.path.join(env.dir, "pve")
    write_pve(pvedir, vg, shared=False, extra=CORPUS.format(**dirs))
    return vg, pvedir, dirs


def test_pve_all_serves_what_proxmox_would(env, corpus):
    vg, pvedir, dirs = corpus
    a = Node(env, "nodea", pvedir, "pve:all", vg.loops).wait_mounted()
    assert sorted(os.listdir(a.view)) == ["chain", "local", STORE]
    # The last section of an id counts, as in Proxmox; the first is logged as replaced.
    assert os.listdir(a.path("local")) == ["vm-300-disk-0.qcow2"]
    assert "a second section of the same storage id" in a.log()
    assert VOL_A in os.listdir(a.path(STORE))
    left = left_out_line(a)
    for why in ("nfs1 (nfs: not mounted)", "ceph-ext (rbd: not for this node)",
                "ceph-off (rbd: disabled)", "off (dir: disabled)",
                "local-lvm (lvmthin: unsupported type)"):
        assert why in left, left
    a.stop()


def test_volume_chain_setting_through_pve_and_plain_dir(env, corpus):
    """snapshot-as-volume-chain, written with space indentation between a
    comment and unknown keys, makes mkdir a Proxmox volume chain."""
    vg, pvedir, dirs = corpus
    d = os.path.join(dirs["chain"], "images", "100")
    a = Node(env, "nodea", pvedir, "pve:chain", vg.loops).wait_mounted()
    os.mkdir(a.path("chain", CHAIN_VOL, "s1"))
    assert sorted(os.listdir(a.path("chain", CHAIN_VOL))) == ["current", "s1"]
    a.stop()
    assert backing_of(os.path.join(d, CHAIN_VOL)) == ["snap-s1-" + CHAIN_VOL]
    b = Node(env, "nodea", pvedir, dirs["chain"], vg.loops, tag="dir").wait_mounted()
    os.mkdir(b.path("chain", CHAIN_VOL, "s2"))
    b.stop()
    assert backing_of(os.path.join(d, CHAIN_VOL)) == ["snap-s2-" + CHAIN_VOL]
    assert sorted(f for f in os.listdir(d) if not f.startswith(".")) == \
        ["snap-s1-" + CHAIN_VOL, "snap-s2-" + CHAIN_VOL, CHAIN_VOL]


# -- hostile files --------------------------------------------------------------

def good(path):
    return "dir: good\n\tpath %s\n\tcontent images\n" % path


def hostile_cases(gooddir, otherdir):
    rnd = random.Random(20)
    binary = bytes(rnd.randrange(256) for _ in range(64 * 1024))
    return {
        "huge lines": ("x" * 300000 + "\n\n" + good(gooddir) + "\tcomment " + "y" * 200000 + "\n\n"
                       "dir: longpath\n\tpath /" + "p" * 5000 + "\n").encode(),
        "binary": binary + b"\n\n" + good(gooddir).encode() + b"\tnote \x00\x01\x02\n",
        "missing fields": ("lvm: novg\n\tcontent images\n\ndir: nopath\n\tcontent images\n\n"
                           ": noid\n\ndir:\n\ndir: 9-lives_\n\tpath %s\n\n" % otherdir + good(gooddir)).encode(),
        "duplicate ids": (good(gooddir) + "\n" + good(otherdir) + "\n"
                          "dir: twice\n\tpath %s\n\tpath /nonexistent\n" % otherdir).encode(),
    }


@pytest.fixture
def hostile(module_env):
    """One VG and two directories for every hostile file."""
    e = module_env
    if not getattr(e, "pvecfg_vg", None):
        e.pvecfg_vg = e.vg(npvs=1, pv_size=GiB // 4)
        for k in ("good", "other"):
            qcow2(os.path.join(e.dir, k, "images", "100", "vm-100-disk-0.qcow2"))
    return e


def node_with(env, name, data, tag):
    pvedir = os.path.join(env.dir, "pve-" + tag)
    write_pve(pvedir, env.pvecfg_vg)
    with open(os.path.join(pvedir, "storage.cfg"), "wb") as f:
        f.write(data)
    return Node(env, "nodea", pvedir, "pve:all", env.pvecfg_vg.loops, tag=tag)


@pytest.mark.parametrize("case", ["huge lines", "binary", "missing fields", "duplicate ids"])
def test_hostile_storage_cfg_serves_what_makes_sense(hostile, case):
    e = hostile
    data = hostile_cases(os.path.join(e.dir, "good"), os.path.join(e.dir, "other"))[case]
    a = node_with(e, "nodea", data, case.replace(" ", "-")).wait_mounted()
    want = ["good", "twice"] if case == "duplicate ids" else ["good"]
    assert sorted(os.listdir(a.view)) == want, a.log()
    assert os.listdir(a.path("good", "vm-100-disk-0.qcow2")) == ["current"]
    log = a.log()
    assert "ignored" in log, log
    if case == "missing fields":
        left = left_out_line(a)
        assert "novg (lvm: no vgname)" in left and "nopath (dir: no such directory)" in left, left
        assert "not a valid storage id" in log, log
    if case == "duplicate ids":
        assert "a second section of the same storage id" in log and "a repeated key" in log, log
    if case == "huge lines":
        assert "longpath (dir: a value too long)" in left_out_line(a)
    if case == "binary":
        assert "a NUL byte in the line" in log, log
    a.stop()


@pytest.mark.parametrize("case,message", [
    ("too big", "File too large"),
    ("nothing valid", "storage.cfg names no storage"),
])
def test_hostile_storage_cfg_refused_clearly(hostile, case, message):
    e = hostile
    data = (b"# " + b"z" * 100 + b"\n") * (2 * 1024 * 1024 // 100) if case == "too big" \
        else b"\x00\xff garbage\n  \n:\n\tpath /x\n"
    a = node_with(e, "nodea", data, case.replace(" ", "-"))
    rc = a.proc.wait(timeout=30)
    a.stop(check=False)
    log = a.log()
    sanitizer_check(log)
    assert rc > 0, "exit %d (a signal when negative):\n%s" % (rc, log)
    assert message in log, log
