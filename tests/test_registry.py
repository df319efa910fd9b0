"""The store registry as a user meets it: --help lists every store's options,
an option no store knows is refused, and a build without Ceph (make RBD=0)
refuses an rbd: source with the reason while serving the other stores."""

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import GiB, REPO, Daemon, require_daemon, require_root, sanitizer_check, wait_for

NORBD_BUILD = "build-norbd"
NORBD_BIN = os.path.join(REPO, NORBD_BUILD, "vstorfs")
NO_CEPH = "built without Ceph RBD support"


@pytest.fixture(scope="module")
def norbd():
    """The daemon built with make RBD=0, in its own build directory."""
    r = subprocess.run(["make", "-j2", "BUILD=" + NORBD_BUILD, "RBD=0", NORBD_BUILD + "/vstorfs"],
                       cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, "make RBD=0 failed:\n%s%s" % (r.stdout[-4000:], r.stderr[-4000:])
    return NORBD_BIN


@pytest.fixture
def tmp():
    d = tempfile.mkdtemp(prefix="registry-", dir=os.environ.get("VSTORFS_TMP", "/var/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run(binary, *args):
    r = subprocess.run([binary] + list(args), capture_output=True, text=True, timeout=60)
    sanitizer_check(r.stderr)
    return r


def test_help_lists_every_store_option():
    r = run(require_daemon(), "--help")
    assert r.returncode == 0
    for opt in ("devices=", "ceph_conf=", "ceph_id=", "ceph_keyring=",     # the stores'
                "ro", "allow_other", "rescan=", "current_io=", "shared_snapshots"):
        assert opt in r.stderr, "--help does not mention %s:\n%s" % (opt, r.stderr)
    for source in ("rbd:POOL", "absolute directory", "volume group", "pve:"):
        assert source in r.stderr


def test_unknown_option_refused(tmp):
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    r = run(require_daemon(), "somevg", mnt, "-f", "-o", "ro,no_such_option=1")
    assert r.returncode == 1
    assert "unknown option 'no_such_option=1'" in r.stderr
    assert not os.path.ismount(mnt)


def test_store_options_still_parsed(tmp):
    """devices= continues over ',/dev/...' and ceph_*= are taken: the daemon
    gets past option parsing to the source (a VG that does not exist)."""
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    r = run(require_daemon(), "no-such-vg-registry", mnt, "-f", "-o",
            "devices=/dev/null,/dev/zero,ceph_id=admin,ceph_conf=/dev/null,ceph_keyring=/dev/null,"
            "ceph_mon_host=127.0.0.1:6789")
    assert r.returncode == 1
    assert "unknown option" not in r.stderr
    assert "no-such-vg-registry" in r.stderr
    assert not os.path.ismount(mnt)


def test_norbd_refuses_rbd_source(norbd, tmp):
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    r = run(norbd, "rbd:vmpool", mnt, "-f")
    assert r.returncode == 1
    assert "rbd:vmpool" in r.stderr and NO_CEPH in r.stderr, r.stderr
    assert not os.path.ismount(mnt)


def test_norbd_refuses_ceph_options(norbd, tmp):
    mnt = os.path.join(tmp, "mnt")
    os.mkdir(mnt)
    r = run(norbd, "/var/lib/vz", mnt, "-f", "-o", "ceph_id=admin")
    assert r.returncode == 1
    assert "ceph_id=admin" in r.stderr and NO_CEPH in r.stderr, r.stderr
    assert not os.path.ismount(mnt)


def test_norbd_needs_no_ceph_libraries(norbd):
    out = subprocess.run(["ldd", norbd], capture_output=True, text=True, check=True).stdout
    assert "librbd" not in out and "librados" not in out


def test_norbd_help_says_what_is_missing(norbd):
    r = run(norbd, "--help")
    assert r.returncode == 0
    assert "devices=" in r.stderr
    assert "ceph_conf=" not in r.stderr
    assert NO_CEPH in r.stderr


def test_norbd_serves_a_directory_store(norbd, tmp):
    require_root()
    store = os.path.join(tmp, "images")
    os.mkdir(store)
    with open(os.path.join(store, "disk.raw"), "wb") as f:
        f.write(b"registry" * 512)
    d = Daemon(store, os.path.join(tmp, "mnt"), [], binary=norbd)
    try:
        d.wait_mounted()
        with open(os.path.join(tmp, "mnt", "images", "disk.raw", "current", "disk.raw"), "rb") as f:
            assert f.read() == b"registry" * 512
    finally:
        d.stop()


def test_all_lists_every_vg_the_devices_show(env):
    """SOURCE all: every kind that can list (LVM) is asked, at mount and at
    each rescan; devices= (the LVM kind's option) bounds what it sees."""
    a, b = env.vg(npvs=1, pv_size=GiB), env.vg(npvs=1, pv_size=GiB)
    later = env.vg(npvs=1, pv_size=GiB)
    d = env.mount("all", a.loops + later.loops)
    assert a.name in os.listdir(d.mnt)
    assert b.name not in os.listdir(d.mnt)          # its PV is not in devices=
    assert later.name in os.listdir(d.mnt)
    later.destroy()
    env.vgs.remove(later)
    assert wait_for(lambda: later.name not in os.listdir(d.mnt), 15), os.listdir(d.mnt)
