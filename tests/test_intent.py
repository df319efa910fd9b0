"""The intent codec (store/intent.c) on its own, through tools/intentcodec.c,
and the recovery that reads it: a hostile intent file is refused and left
for an administrator, and the form older daemons wrote is still recovered."""

import os
import subprocess

import pytest

from test_dirstore import CRASH_TOOL, VOL, chain_views, crash, ds, need, no_leftovers, take_chain, tmp  # noqa: F401 (tmp: fixture)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODEC = os.path.join(REPO, "build", "intentcodec")


def decode(tmp_path, data):
    f = tmp_path / "intent.op"
    f.write_bytes(data)
    p = subprocess.run([need(CODEC), "decode", str(f)], stdout=subprocess.PIPE, text=True)
    return p.returncode, p.stdout


def fields(out):
    return dict(line.split("=", 1) for line in out.splitlines())


GOOD = {
    b"mkdir-chain s2 1700000000123456789\n": dict(kind="mkdir-chain", snap="s2", time="1700000000123456789"),
    b"rmdir-commit s1 images/100/snap-s1.qcow2 images/100/vm-100-disk-0.qcow2\n":
        dict(kind="rmdir-commit", s="images/100/snap-s1.qcow2", c="images/100/vm-100-disk-0.qcow2"),
    b"rmdir-rebase s2 a/s2.qcow2 a/v.qcow2 -\n": dict(kind="rmdir-rebase", backing=""),
    b"rmdir-rebase s2 a/s2.qcow2 a/v.qcow2 ../100/base-100-disk-2.qcow2\n":
        dict(kind="rmdir-rebase", backing="../100/base-100-disk-2.qcow2"),
    b"isnap-create before-upgrade\n": dict(kind="isnap-create", snap="before-upgrade"),
    b"isnap-delete s1 3\n": dict(kind="isnap-delete", snap="s1", id="3"),
    b"isnap-create s1": dict(kind="isnap-create"),  # no newline: still one record
}


@pytest.mark.parametrize("text", list(GOOD), ids=range(len(GOOD)))
def test_good_intents_decode_and_re_encode(tmp_path, text):
    rc, out = decode(tmp_path, text)
    assert rc == 0, out
    got = fields(out)
    for k, v in GOOD[text].items():
        assert got[k] == v, (k, got)


HOSTILE = {
    "empty": b"",
    "unknown kind": b"format-disk s1\n",
    "missing field": b"rmdir-commit s1 a/s1.qcow2\n",
    "extra field": b"isnap-create s1 s2\n",
    "missing time": b"mkdir-chain s2\n",
    "bad number": b"mkdir-chain s2 12x\n",
    "number overflow": b"mkdir-chain s2 99999999999999999999999\n",
    "plus sign": b"mkdir-chain s2 +5\n",
    "embedded NUL": b"isnap-create s1\x00rm -rf\n",
    "embedded newline": b"isnap-create s1\nisnap-delete s1 3\n",
    "carriage return": b"isnap-create s1\r\n",
    "double space": b"isnap-create  s1\n",
    "tab": b"isnap-create\ts1\n",
    "slash in snap": b"isnap-create a/b\n",
    "dotdot snap": b"isnap-delete .. 3\n",
    "dot snap": b"isnap-create .\n",
    "dotdot in path": b"rmdir-commit s1 images/../../etc/passwd a/c.qcow2\n",
    "absolute path": b"rmdir-commit s1 /etc/passwd a/c.qcow2\n",
    "empty component": b"rmdir-commit s1 a//s.qcow2 a/c.qcow2\n",
    "overlong snap": b"isnap-create " + b"s" * 256 + b"\n",
    "overlong path": b"rmdir-commit s1 " + b"a/" * 2100 + b"s a/c\n",
    "huge file": b"isnap-create s1 " + b"x" * 20000 + b"\n",
    "control char": b"isnap-create s\x01\n",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_intents_are_rejected(tmp_path, name):
    rc, out = decode(tmp_path, HOSTILE[name])
    assert rc == 1, out
    assert out.startswith("rejected: "), out
    assert out.strip() == ("rejected: ENOENT" if name == "unknown kind" else "rejected: EINVAL"), out


def tag(which, value):
    p = subprocess.run([need(CODEC), "tag", which, value], stdout=subprocess.PIPE, text=True)
    return p.returncode, p.stdout


@pytest.mark.parametrize("which,value,want", [
    ("mkdir", "s1", dict(kind="mkdir-chain", snap="s1")),
    ("rmdir", "commit:vm-100-disk-0.qcow2", dict(kind="rmdir-commit", c="vm-100-disk-0.qcow2")),
    ("rmdir", "rebase:vm-100-disk-0.qcow2:-", dict(kind="rmdir-rebase", backing="")),
    ("rmdir", "rebase:vm-100-disk-0.qcow2:snap_vm-100-disk-0_s1.qcow2",
     dict(kind="rmdir-rebase", backing="snap_vm-100-disk-0_s1.qcow2")),
])
def test_lvm_tags_decode(which, value, want):
    rc, out = tag(which, value)
    assert rc == 0, out
    got = fields(out)
    for k, v in want.items():
        assert got[k] == v


@pytest.mark.parametrize("which,value", [
    ("mkdir", ""), ("mkdir", "a b"), ("mkdir", "a/b"), ("mkdir", ".."), ("mkdir", "s$1"),
    ("rmdir", "commit:"), ("rmdir", "merge:x"), ("rmdir", "rebase:x"), ("rmdir", "rebase::-"),
    ("rmdir", "rebase:x:a:b"), ("rmdir", "commit:" + "v" * 300), ("rmdir", "commit:a/b"),
])
def test_hostile_lvm_tags_are_rejected(which, value):
    rc, out = tag(which, value)
    assert rc == 1 and out.startswith("rejected: "), out


def intent_file(root):
    d = os.path.join(root, "images", "100")
    return os.path.join(d, ".vstorfs-intent-%s.op" % VOL)


def test_hostile_intent_file_is_left_alone(tmp):
    root, cfg, img = take_chain(tmp, ("s1",))
    before = chain_views(root, cfg)
    hostile = b"rmdir-commit s1 images/../../etc/passwd images/100/" + VOL.encode() + b"\n"
    with open(intent_file(root), "wb") as f:
        f.write(hostile)
    p = ds("recover", root, cfg=cfg, check=False)
    assert "malformed intent" in p.stderr.decode(), p.stderr.decode()
    with open(intent_file(root), "rb") as f:
        assert f.read() == hostile   # left for an administrator
    os.unlink(intent_file(root))
    assert chain_views(root, cfg) == before


def test_intent_in_the_old_daemons_form_is_recovered(tmp):
    """A mkdir killed after V was renamed to S, its intent file replaced by
    the bytes the daemon wrote before store/intent.c (printf "mkdir-chain %s
    %lld\\n"): recovery finishes the snapshot."""
    need(CRASH_TOOL)
    root, cfg, img = take_chain(tmp, ("s1",))
    before = chain_views(root, cfg)
    crash(root, "dir-mkdir-renamed", "mkdir", root, VOL, "s2", cfg=cfg)
    with open(intent_file(root), "w") as f:
        f.write("mkdir-chain s2 %d\n" % 1700000000000000000)
    ds("recover", root, cfg=cfg)
    no_leftovers(root)
    after = chain_views(root, cfg)
    assert after["s2"] == before["current"]
    for v, h in before.items():
        assert after[v] == h, v
