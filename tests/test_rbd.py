"""The RBD store (rbd/) against a real throwaway Ceph cluster (tests/cephlib.py).

The store is driven through build/rbdcat, which calls the same store_ops and
view_reader the daemon does; `rbd export`, `rbd diff` and `rbd snap ls` are
the references.
"""

import json
import os
import random
import subprocess
import threading
import time

import pytest

from conftest import REPO, wait_for
from vstorlib import rss_kib, skip_if_sanitized, start_daemon
from lvmlib import MiB, run

POOL = "rbd"


def rbdcat_path():
    if not os.environ.get("RBDCAT"):
        # make test-asan builds no sanitized rbdcat: build/rbdcat would repeat the plain
        # run; the sanitized daemon's rbd path is what the test_tree_* cases run.
        skip_if_sanitized("build/rbdcat is not sanitized: the plain run covers it")
    p = os.environ.get("RBDCAT") or os.path.join(REPO, "build", "rbdcat")
    if not os.access(p, os.X_OK):
        pytest.skip("build/rbdcat not built")
    return p


def rbdcat(cluster, *args, conf=None, user=None, keyring=None, source="rbd:" + POOL, check=True,
           timeout=300):
    argv = [rbdcat_path(), "-c", conf or cluster.conf]
    if user:
        argv += ["-i", user]
    if keyring:
        argv += ["-k", keyring]
    argv += [source] + list(args)
    p = subprocess.run(argv, capture_output=True, timeout=timeout)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (" ".join(argv), p.returncode,
                                                     p.stderr.decode(errors="replace")))
    return p


def cat_sha256(cluster, image, view, source="rbd:" + POOL):
    p = subprocess.run("%s -c %s %s cat %s %s | sha256sum" % (
        rbdcat_path(), cluster.conf, source, image, view), shell=True, capture_output=True,
        timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stdout.split()[0].decode()


def listing(cluster, source="rbd:" + POOL):
    """{image: [(view, ident, size, mtime, snapshot), ...]} from `rbdcat ls`."""
    out = {}
    lines = rbdcat(cluster, "ls", source=source).stdout.decode().splitlines()
    assert lines[0].startswith("store ")
    for ln in lines[1:]:
        img, view, ident, size, mtime, snap = ln.split()
        out.setdefault(img, []).append((view, ident, int(size), int(mtime), snap == "1"))
    return out


def snap_ls(cluster, image):
    p = cluster.rbd("snap", "ls", "--format", "json", "%s/%s" % (POOL, image))
    return sorted(json.loads(p.stdout), key=lambda s: s["id"])


def image_id(cluster, image):
    return json.loads(cluster.rbd("info", "--format", "json", "%s/%s" % (POOL, image)).stdout)["id"]


def bench_write(cluster, image, total="4M", size="64K", pattern="rand"):
    cluster.rbd("bench", "--io-type", "write", "--io-size", size, "--io-total", total,
                "--io-pattern", pattern, "%s/%s" % (POOL, image), timeout=300)


def write_extents(cluster, image, extents):
    """Write (offset, bytes) pairs into an image through `rbd import-diff`, whose
    stream format is documented; unlike two `rbd bench` runs in one second (its
    offsets and fill byte come from rand() seeded with the time), these bytes are
    known to differ from what was there."""
    stream = bytearray(b"rbd diff v1\n")
    for off, data in extents:
        stream += b"w" + off.to_bytes(8, "little") + len(data).to_bytes(8, "little") + data
    stream += b"e"
    cluster.rbd("import-diff", "-", "%s/%s" % (POOL, image), input=bytes(stream), timeout=300)


def rbd_diff(cluster, spec, from_snap=None):
    args = ["diff", "--format", "json"]
    if from_snap:
        args += ["--from-snap", from_snap]
    return json.loads(cluster.rbd(*(args + ["%s/%s" % (POOL, spec)])).stdout)


def errname(p):
    return p.stderr.decode().strip().splitlines()[-1] if p.stderr else ""


@pytest.fixture(scope="module")
def images(ceph_cluster, tmp_path_factory):
    """vm-100-disk-0 (imported, s1, bench, s2, bench), vm-101-disk-0 (bench only),
    base-200-disk-0@__base__ (protected) with its clone vm-201-disk-0 (c1)."""
    c = ceph_cluster
    d = tmp_path_factory.mktemp("rbd")
    rnd = random.Random(14)
    src = d / "src.raw"
    with open(src, "wb") as f:
        f.truncate(48 * MiB)
        for _ in range(40):  # data with holes between, unaligned
            off = rnd.randrange(0, 48 * MiB - 300000)
            f.seek(off)
            f.write(rnd.randbytes(rnd.randrange(1, 300000)))
    c.rbd("import", "--no-progress", str(src), "%s/vm-100-disk-0" % POOL, timeout=300)
    c.rbd("snap", "create", "%s/vm-100-disk-0@s1" % POOL)
    time.sleep(1.1)  # distinct snapshot timestamps
    bench_write(c, "vm-100-disk-0")
    c.rbd("snap", "create", "%s/vm-100-disk-0@s2" % POOL)
    bench_write(c, "vm-100-disk-0", total="2M", size="4K")

    c.rbd("create", "--size", "32M", "%s/vm-101-disk-0" % POOL)
    bench_write(c, "vm-101-disk-0", total="8M", size="1M", pattern="seq")

    base = d / "base.raw"
    with open(base, "wb") as f:
        f.write(rnd.randbytes(16 * MiB))
    c.rbd("import", "--no-progress", str(base), "%s/base-200-disk-0" % POOL, timeout=300)
    c.rbd("snap", "create", "%s/base-200-disk-0@__base__" % POOL)
    c.rbd("snap", "protect", "%s/base-200-disk-0@__base__" % POOL)
    c.rbd("clone", "%s/base-200-disk-0@__base__" % POOL, "%s/vm-201-disk-0" % POOL)
    bench_write(c, "vm-201-disk-0", total="1M", size="16K")
    c.rbd("snap", "create", "%s/vm-201-disk-0@c1" % POOL)
    write_extents(c, "vm-201-disk-0", [(rnd.randrange(0, 16 * MiB - 70000), rnd.randbytes(rnd.randrange(1, 70000)))
                                       for _ in range(24)])
    return ["vm-100-disk-0", "vm-101-disk-0", "base-200-disk-0", "vm-201-disk-0"]


def test_listing_views_idents_mtimes(ceph_cluster, images):
    ls = listing(ceph_cluster)
    for img in images:
        snaps = snap_ls(ceph_cluster, img)
        views = ls[img]
        assert [v[0] for v in views] == ["current"] + [s["name"] for s in snaps]
        iid = image_id(ceph_cluster, img)
        assert views[0][1] == iid and not views[0][4]
        for v, s in zip(views[1:], snaps):
            assert v[1] == "%s@%d" % (iid, s["id"])
            assert v[2] == s["size"] and v[4]
            ts = time.mktime(time.strptime(s["timestamp"], "%a %b %d %H:%M:%S %Y"))
            assert abs(v[3] - ts) <= 1, (img, v, s)
    s1, s2 = ls["vm-100-disk-0"][1][3], ls["vm-100-disk-0"][2][3]
    assert s1 < s2


@pytest.mark.parametrize("image", ["vm-100-disk-0", "vm-101-disk-0", "base-200-disk-0", "vm-201-disk-0"])
def test_views_byte_exact(ceph_cluster, images, image):
    for view in [v[0] for v in listing(ceph_cluster)[image]]:
        spec = "%s/%s" % (POOL, image) + ("" if view == "current" else "@" + view)
        assert cat_sha256(ceph_cluster, image, view) == ceph_cluster.export_sha256(spec), spec


def test_ranges_unaligned(ceph_cluster, images, tmp_path):
    """Unaligned reads across object boundaries equal the same bytes of `rbd export`."""
    ref = ceph_cluster.export("%s/vm-201-disk-0@c1" % POOL, str(tmp_path / "ref"))
    data = open(ref, "rb").read()
    rnd = random.Random(3)
    for _ in range(12):
        off = rnd.randrange(0, len(data) - 1)
        n = min(rnd.choice([1, 511, 4097, 4 * MiB + 3, 9 * MiB]), len(data) - off)
        p = rbdcat(ceph_cluster, "cat", "vm-201-disk-0", "c1", str(off), str(n))
        assert p.stdout == data[off:off + n], (off, n)


@pytest.mark.parametrize("image,view", [("vm-100-disk-0", "s1"), ("vm-100-disk-0", "current"),
                                        ("vm-201-disk-0", "c1"), ("vm-101-disk-0", "current")])
def test_map_covers_data(ceph_cluster, images, image, view, tmp_path):
    """map's zero runs read as zeros and hold none of `rbd diff`'s extents."""
    spec = image + ("" if view == "current" else "@" + view)
    ref = open(ceph_cluster.export("%s/%s" % (POOL, spec), str(tmp_path / "ref")), "rb").read()
    runs = []
    for ln in rbdcat(ceph_cluster, "map", image, view).stdout.decode().splitlines():
        off, n, kind = ln.split()
        runs.append((int(off), int(n), kind))
    assert runs and runs[0][0] == 0
    assert sum(r[1] for r in runs) == len(ref)
    zero = [(o, o + n) for o, n, k in runs if k == "zero"]
    for o, e in zero:
        assert ref[o:e].count(0) == e - o, "zero run %d-%d holds data" % (o, e)
    for x in rbd_diff(ceph_cluster, spec):
        for o, e in zero:
            assert x["offset"] + x["length"] <= o or x["offset"] >= e
    if view != "current":
        assert any(k == "zero" for _, _, k in runs) or image == "vm-201-disk-0"


@pytest.mark.parametrize("image,view,older", [
    ("vm-100-disk-0", "s2", "s1"), ("vm-100-disk-0", "current", "s1"),
    ("vm-100-disk-0", "current", "s2"), ("vm-100-disk-0", "s2", None),
    ("vm-201-disk-0", "current", "c1"), ("vm-201-disk-0", "c1", None)])
def test_changed_since_equals_rbd_diff(ceph_cluster, images, image, view, older, tmp_path):
    spec = image + ("" if view == "current" else "@" + view)
    args = ["changed", image, view] + ([older] if older else [])
    got = json.loads(rbdcat(ceph_cluster, *args).stdout)
    assert got == rbd_diff(ceph_cluster, spec, older)
    if not older:
        return
    # no byte outside the extents differs
    new = open(ceph_cluster.export("%s/%s" % (POOL, spec), str(tmp_path / "new")), "rb").read()
    old = open(ceph_cluster.export("%s/%s@%s" % (POOL, image, older), str(tmp_path / "old")), "rb").read()
    pos = 0
    for x in got + [{"offset": len(new), "length": 0}]:
        assert new[pos:x["offset"]] == old[pos:x["offset"]], "bytes %d-%d differ outside the diff" % (
            pos, x["offset"])
        pos = x["offset"] + x["length"]
    assert any(new[x["offset"]:x["offset"] + x["length"]] != old[x["offset"]:x["offset"] + x["length"]]
               for x in got)


def test_changed_refuses_newer_base(ceph_cluster, images):
    p = rbdcat(ceph_cluster, "changed", "vm-100-disk-0", "s1", "s2", check=False)
    assert p.returncode == 22


def test_mkdir_rmdir(ceph_cluster, images):
    c = ceph_cluster
    img = "vm-101-disk-0"
    assert rbdcat(c, "mkdir", img, "before-upgrade").returncode == 0
    assert [s["name"] for s in snap_ls(c, img)] == ["before-upgrade"]
    assert [v[0] for v in listing(c)[img]] == ["current", "before-upgrade"]
    assert cat_sha256(c, img, "before-upgrade") == c.export_sha256("%s/%s" % (POOL, img))
    for name, err in [("before-upgrade", "EEXIST"), ("current", "EEXIST"), ("1bad", "EINVAL"),
                      ("a", "EINVAL"), ("x" * 41, "EINVAL"), ("bad.name", "EINVAL")]:
        p = rbdcat(c, "mkdir", img, name, check=False)
        assert errname(p) == err, (name, p.stderr)
    assert errname(rbdcat(c, "mkdir", "no-such-image", "snapx", check=False)) == "ENOENT"
    assert errname(rbdcat(c, "rmdir", img, "current", check=False)) == "EBUSY"
    assert errname(rbdcat(c, "rmdir", img, "nosuch", check=False)) == "ENOENT"
    assert rbdcat(c, "rmdir", img, "before-upgrade").returncode == 0
    assert snap_ls(c, img) == []
    # the same name again: a new snapshot, a new ident
    rbdcat(c, "mkdir", img, "before-upgrade")
    first = listing(c)[img][1][1]
    rbdcat(c, "rmdir", img, "before-upgrade")
    rbdcat(c, "mkdir", img, "before-upgrade")
    assert listing(c)[img][1][1] != first
    rbdcat(c, "rmdir", img, "before-upgrade")


def test_rmdir_protected(ceph_cluster, images):
    c = ceph_cluster
    p = rbdcat(c, "rmdir", "base-200-disk-0", "__base__", check=False)
    assert errname(p) == "EBUSY"
    assert "vm-201-disk-0" in p.stderr.decode()
    assert [s["name"] for s in snap_ls(c, "base-200-disk-0")] == ["__base__"]
    # protected without clones: unprotected, then removed (as Proxmox does)
    c.rbd("snap", "create", "%s/vm-101-disk-0@prot" % POOL)
    c.rbd("snap", "protect", "%s/vm-101-disk-0@prot" % POOL)
    assert rbdcat(c, "rmdir", "vm-101-disk-0", "prot").returncode == 0
    assert snap_ls(c, "vm-101-disk-0") == []


def test_no_write_caps_eacces(ceph_cluster, images):
    c = ceph_cluster
    kr = c.add_user("vstorfs-ro", [("mon", "profile rbd"), ("osd", "profile rbd-read-only")])
    ls = rbdcat(c, "ls", user="vstorfs-ro", keyring=kr).stdout.decode()
    assert "vm-100-disk-0 s1 " in ls
    p = rbdcat(c, "mkdir", "vm-101-disk-0", "nocaps", user="vstorfs-ro", keyring=kr, check=False)
    assert errname(p) == "EACCES", p.stderr
    c.rbd("snap", "create", "%s/vm-101-disk-0@keep" % POOL)
    p = rbdcat(c, "rmdir", "vm-101-disk-0", "keep", user="vstorfs-ro", keyring=kr, check=False)
    assert errname(p) == "EACCES", p.stderr
    assert [s["name"] for s in snap_ls(c, "vm-101-disk-0")] == ["keep"]
    c.rbd("snap", "rm", "%s/vm-101-disk-0@keep" % POOL)


def test_trash_hidden_and_changed(ceph_cluster, images):
    c = ceph_cluster
    c.rbd("create", "--size", "4M", "%s/vm-300-disk-0" % POOL)
    assert "vm-300-disk-0" in listing(c)
    cmd = "rbd -c %s trash mv %s/vm-300-disk-0" % (c.conf, POOL)
    out = rbdcat(c, "checkchanged", cmd).stdout.decode()
    assert out.split() == ["before", "0", "after", "1"]
    assert "vm-300-disk-0" not in listing(c)
    cmd = "rbd -c %s snap create %s/vm-101-disk-0@chk" % (c.conf, POOL)
    assert rbdcat(c, "checkchanged", cmd).stdout.decode().split() == ["before", "0", "after", "1"]
    c.rbd("snap", "rm", "%s/vm-101-disk-0@chk" % POOL)


def test_namespace(ceph_cluster, images):
    c = ceph_cluster
    c.rbd("namespace", "create", "%s/tenant" % POOL)
    c.rbd("create", "--size", "8M", "%s/tenant/vm-400-disk-0" % POOL)
    bench_write(c, "tenant/vm-400-disk-0", total="2M", size="256K")
    out = rbdcat(c, "ls", source="rbd:%s/tenant" % POOL).stdout.decode().splitlines()
    assert out[0] == "store %s-tenant" % POOL
    assert [ln.split()[0] for ln in out[1:]] == ["vm-400-disk-0"]
    assert cat_sha256(c, "vm-400-disk-0", "current", source="rbd:%s/tenant" % POOL) == \
        c.export_sha256("%s/tenant/vm-400-disk-0" % POOL)
    p = rbdcat(c, "ls", source="rbd:%s/nosuch" % POOL, check=False)
    assert p.returncode == 1 and "no such RBD namespace" in p.stderr.decode()
    p = rbdcat(c, "ls", source="rbd:nosuchpool", check=False)
    assert p.returncode == 1 and "no such pool" in p.stderr.decode()


def test_thousand_images_rescan(ceph_cluster, images):
    c = ceph_cluster
    c.ceph("osd", "pool", "create", "many", "8", "8")
    c.rbd("pool", "init", "many", timeout=120)
    rbdcat(c, "mkimages", "vm-9-disk-", "1000", source="rbd:many", timeout=600)
    out = rbdcat(c, "scantime", source="rbd:many").stdout.decode().split()
    r = dict(zip(out[::2], out[1::2]))
    assert int(r["volumes"]) == 1000
    assert r["changed"] == "0"
    assert float(r["changed_ms"]) < 1000 and float(r["rescan_ms"]) < 1000, r
    print("1000 images:", r)


def test_image_removed_while_open(ceph_cluster, images):
    c = ceph_cluster
    c.rbd("create", "--size", "8M", "%s/vm-500-disk-0" % POOL)
    bench_write(c, "vm-500-disk-0", total="8M", size="1M", pattern="seq")
    c.rbd("snap", "create", "%s/vm-500-disk-0@snap1" % POOL)
    procs = [subprocess.Popen([rbdcat_path(), "-c", c.conf, "rbd:" + POOL, "readloop", img, view, "8"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for img, view in [("vm-500-disk-0", "current"), ("vm-500-disk-0", "snap1"),
                               ("vm-101-disk-0", "current")]]
    time.sleep(2)
    c.rbd("snap", "rm", "%s/vm-500-disk-0@snap1" % POOL)
    c.rbd("rm", "--no-progress", "%s/vm-500-disk-0" % POOL)
    outs = [p.communicate(timeout=60) for p in procs]
    for (out, err), expect_err in zip(outs, [True, True, False]):
        lines = out.decode().split("\n")[1:-1]
        assert lines and lines[0].split()[1] == "ok"
        tail = [ln.split()[1] for ln in lines[-8:]]
        if expect_err:
            assert set(tail) == {"err"}, out
            assert "removed while open" in err.decode()
        else:
            assert set(tail) == {"ok"}, out


def test_mount_no_cluster(ceph_cluster, tmp_path):
    """A cluster that does not answer fails the mount within the bound, with a clear message."""
    conf = tmp_path / "dead.conf"
    with open(ceph_cluster.conf) as f:
        text = f.read()
    text = text.replace("mon host = v2:127.0.0.1:%d" % ceph_cluster.port, "mon host = v2:127.0.0.1:%d" % (
        __import__("cephlib").free_port()))
    text = text.replace("client mount timeout = 20", "client mount timeout = 4")
    conf.write_text(text)
    t = time.monotonic()
    p = rbdcat(ceph_cluster, "ls", conf=str(conf), check=False, timeout=60)
    took = time.monotonic() - t
    assert p.returncode == 1
    assert "no answer from the ceph monitors" in p.stderr.decode(), p.stderr
    assert took < 15, took


def test_cluster_restart_under_reader(ceph_cluster, images, tmp_path):
    """Reads of a cluster that went away fail with EIO after the op timeout, and work again after."""
    c = ceph_cluster
    conf = tmp_path / "fault.conf"
    text = open(c.conf).read()
    for k in ("client mount timeout", "rados mon op timeout", "rados osd op timeout"):
        text = text.replace("%s = 20" % k, "%s = 4" % k)
    conf.write_text(text)
    p = subprocess.Popen([rbdcat_path(), "-c", str(conf), "rbd:" + POOL, "readloop", "vm-100-disk-0",
                          "s1", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(3)
    c.stop()
    time.sleep(12)
    c.start()
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    seq = [ln.split() for ln in out.decode().splitlines()[1:]]
    kinds = [s[1] for s in seq]
    assert kinds[0] == "ok"
    assert "err" in kinds, out
    first_err = kinds.index("err")
    assert all(k == "err" or k == "ok" for k in kinds)
    assert kinds[-1] == "ok" and "ok" in kinds[first_err:], out
    # every failed read returned within the op timeout (+ slack), never hung
    for s in seq:
        if s[1] == "err":
            assert int(s[2]) == 5 and float(s[3]) < 10, s
    assert "reads work again" in err.decode()


# -- through the mounted tree (once fs/ dispatches rbd: sources to the store) --

def daemon_has_store_seam():
    from conftest import daemon_path
    p = daemon_path()
    if not os.access(p, os.X_OK):
        return False
    r = subprocess.run(["nm", "-C", p], capture_output=True)
    return b"store_set_open" in r.stdout and b"rbd_store_open" in r.stdout


def mount_rbd(cluster, mnt, conf=None, extra=()):
    """vstorfs rbd:<pool> MNT -f -o ceph_conf=...,ceph_id=admin: a mounted vstorlib.Daemon."""
    opts = ["ceph_conf=" + (conf or cluster.conf), "ceph_id=admin"] + list(extra)
    return start_daemon("rbd:" + POOL, mnt, opts=opts, timeout=30)


@pytest.fixture
def mounted(ceph_cluster, images, tmp_path):
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet (no store_set_open)")
    mnt = str(tmp_path / "mnt")
    d = mount_rbd(ceph_cluster, mnt)
    yield mnt
    d.stop()


def test_tree_views_byte_exact(ceph_cluster, mounted):
    import hashlib
    c = ceph_cluster
    for img in ["vm-100-disk-0", "vm-201-disk-0", "base-200-disk-0"]:
        snaps = snap_ls(c, img)
        assert sorted(os.listdir(os.path.join(mounted, POOL, img))) == sorted(
            ["current"] + [s["name"] for s in snaps])
        for view in ["current"] + [s["name"] for s in snaps]:
            path = os.path.join(mounted, POOL, img, view, "disk.raw")
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for b in iter(lambda: f.read(4 * MiB), b""):
                    h.update(b)
            spec = "%s/%s" % (POOL, img) + ("" if view == "current" else "@" + view)
            assert h.hexdigest() == c.export_sha256(spec), spec
        for s in snaps:
            st = os.stat(os.path.join(mounted, POOL, img, s["name"], "disk.raw"))
            ts = time.mktime(time.strptime(s["timestamp"], "%a %b %d %H:%M:%S %Y"))
            assert abs(st.st_mtime - ts) <= 1 and st.st_size == s["size"]


def test_tree_stat_contract(ceph_cluster, mounted):
    """Snapshot times carry rbd_snap_get_timestamp's nanoseconds; current's are the stat's
    (librbd's modify timestamp lags writes by up to a minute); st_blocks never 0 for data."""
    img = os.path.join(mounted, POOL, "vm-100-disk-0")
    seen = set()
    for s in snap_ls(ceph_cluster, "vm-100-disk-0"):
        st = os.stat(os.path.join(img, s["name"], "disk.raw"))
        ts = time.mktime(time.strptime(s["timestamp"], "%a %b %d %H:%M:%S %Y"))
        assert st.st_mtime_ns // 10**9 == int(ts) and st.st_mtime_ns % 10**9, (s, st.st_mtime_ns)
        assert st.st_ctime_ns == st.st_mtime_ns
        assert os.stat(os.path.join(img, s["name"], "disk.raw")).st_mtime_ns == st.st_mtime_ns
        assert st.st_blocks > 0
        seen.add(st.st_mtime_ns)
    assert len(seen) == 2
    p = os.path.join(img, "current", "disk.raw")
    a = os.stat(p)
    b = wait_for(lambda: (lambda x: x if x.st_mtime_ns != a.st_mtime_ns else None)(os.stat(p)), 5)
    assert b and b.st_ctime_ns == b.st_mtime_ns and b.st_mtime_ns > a.st_mtime_ns
    assert b.st_mtime_ns >= time.time_ns() - 5 * 10**9
    # statfs: the cluster's raw space (memstore: a fixed size)
    df = json.loads(ceph_cluster.ceph("df", "--format", "json").stdout)["stats"]
    sv = os.statvfs(mounted)
    assert sv.f_blocks * sv.f_frsize == df["total_bytes"] // sv.f_frsize * sv.f_frsize
    assert sv.f_bavail * sv.f_frsize == df["total_avail_bytes"] // sv.f_frsize * sv.f_frsize
    assert sv.f_bavail <= sv.f_blocks and sv.f_files > 10


def test_tree_st_blocks_rbd_diff(ceph_cluster, mounted):
    """st_blocks of disk.raw is what `rbd diff` (whole-object off, parent included) reports
    allocated for the view, rounded up to 512: a sparse image, a clone over its parent's
    snapshot, and an empty image (0), snapshots and current alike."""
    c = ceph_cluster
    c.rbd("create", "--size", "64M", "%s/vm-600-disk-0" % POOL)
    c.rbd("snap", "create", "%s/vm-600-disk-0@empty" % POOL)
    assert wait_for(lambda: os.path.exists(os.path.join(mounted, POOL, "vm-600-disk-0", "empty")), 30)
    for img in ["vm-100-disk-0", "vm-201-disk-0", "base-200-disk-0", "vm-600-disk-0"]:
        for view in ["current"] + [s["name"] for s in snap_ls(c, img)]:
            spec = img + ("" if view == "current" else "@" + view)
            want = sum(x["length"] for x in rbd_diff(c, spec) if x["exists"] == "true")
            for _ in range(2):  # computed, then cached
                st = os.stat(os.path.join(mounted, POOL, img, view, "disk.raw"))
                assert st.st_blocks * 512 == (want + 511) // 512 * 512, (spec, st.st_blocks * 512, want)
            if img == "vm-600-disk-0":
                assert st.st_blocks == 0
            else:
                assert want > 0, spec
            if img == "vm-100-disk-0":
                assert want < st.st_size, spec  # sparse: not the provisioned size
    c.rbd("snap", "rm", "%s/vm-600-disk-0@empty" % POOL)
    c.rbd("rm", "--no-progress", "%s/vm-600-disk-0" % POOL)


def test_tree_rmdir_protected_snapshot_busy(ceph_cluster, mounted):
    """The name rules and mkdir/rmdir are test_conformance's; a protected snapshot
    (a clone's base) is RBD's own EBUSY."""
    import errno
    with pytest.raises(OSError) as e:
        os.rmdir(os.path.join(mounted, POOL, "base-200-disk-0", "__base__"))
    assert e.value.errno == errno.EBUSY
    assert "__base__" in [s["name"] for s in snap_ls(ceph_cluster, "base-200-disk-0")]


def test_tree_mount_no_cluster(ceph_cluster, tmp_path):
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet (no store_set_open)")
    from conftest import daemon_path
    import cephlib
    conf = tmp_path / "dead.conf"
    conf.write_text(open(ceph_cluster.conf).read().replace(
        "mon host = v2:127.0.0.1:%d" % ceph_cluster.port, "mon host = v2:127.0.0.1:%d" % cephlib.free_port()))
    mnt = str(tmp_path / "mnt")
    os.makedirs(mnt)
    t = time.monotonic()
    p = subprocess.run([daemon_path(), "rbd:" + POOL, mnt, "-f", "-o", "ceph_conf=%s,ceph_id=admin" % conf],
                       capture_output=True, timeout=120)
    assert p.returncode != 0 and not os.path.ismount(mnt)
    assert b"no answer from the ceph monitors" in p.stderr
    assert time.monotonic() - t < 60


def fault_conf(cluster, tmp_path):
    """The cluster's configuration with 4 s instead of 20 s op timeouts."""
    conf = tmp_path / "fault.conf"
    text = open(cluster.conf).read()
    for k in ("client mount timeout", "rados mon op timeout", "rados osd op timeout"):
        text = text.replace("%s = 20" % k, "%s = 4" % k)
    conf.write_text(text)
    return str(conf)


def test_tree_cluster_restart(ceph_cluster, images, tmp_path):
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet (no store_set_open)")
    import errno
    c = ceph_cluster
    mnt = str(tmp_path / "mnt")
    d = mount_rbd(c, mnt, conf=fault_conf(c, tmp_path))
    try:
        path = os.path.join(mnt, POOL, "vm-100-disk-0", "current", "disk.raw")
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        try:
            import mmap
            buf = mmap.mmap(-1, MiB)
            assert os.preadv(fd, [buf], 0) == MiB
            c.stop()
            t = time.monotonic()
            with pytest.raises(OSError) as e:
                os.preadv(fd, [buf], 4 * MiB)
            assert e.value.errno == errno.EIO and time.monotonic() - t < 30
            assert d.proc.poll() is None
            c.start()
            assert wait_for(lambda: _preadv_ok(fd, buf), 60)
        finally:
            os.close(fd)
    finally:
        d.stop()


def _preadv_ok(fd, buf):
    try:
        return os.preadv(fd, [buf], 0) == len(buf)
    except OSError:
        return False


def test_tree_daemonized_mount_reads(ceph_cluster, images, tmp_path):
    """mount.vstorfs forks the daemon: librados' threads must start in the
    process that serves (threads do not survive a fork), or every read hangs."""
    from conftest import REPO
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet")
    c = ceph_cluster
    mnt = str(tmp_path / "mnt-bg")
    os.makedirs(mnt)
    r = subprocess.run([os.path.join(REPO, "mount.vstorfs"), "rbd:" + POOL, mnt, "-o",
                        "ceph_conf=%s,ceph_id=admin" % c.conf], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    try:
        done = {}

        def read():
            import hashlib
            with open(os.path.join(mnt, POOL, "vm-100-disk-0", "current", "disk.raw"), "rb") as f:
                done["sha"] = hashlib.sha256(f.read()).hexdigest()
        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(60)
        assert done.get("sha") == c.export_sha256("%s/vm-100-disk-0" % POOL), "read hung or differed"
    finally:
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def _bdi_readahead_kb(mnt):
    st = os.stat(mnt)
    with open("/sys/class/bdi/%d:%d/read_ahead_kb" % (os.major(st.st_dev), os.minor(st.st_dev))) as f:
        return int(f.read())


def _drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


@pytest.fixture(scope="module")
def streamed(ceph_cluster, tmp_path_factory):
    """vm-102-disk-0: 64 MiB of random bytes (16 objects) in its snapshot s1,
    every byte of current rewritten after it; both exported to files."""
    c = ceph_cluster
    d = tmp_path_factory.mktemp("rbd-stream")
    rnd = random.Random(102)
    spec = "%s/vm-102-disk-0" % POOL
    src = d / "s1.raw"
    src.write_bytes(rnd.randbytes(64 * MiB))
    c.rbd("import", "--no-progress", str(src), spec, timeout=300)
    c.rbd("snap", "create", spec + "@s1")
    write_extents(c, "vm-102-disk-0", [(k * 4 * MiB, rnd.randbytes(4 * MiB)) for k in range(16)])
    cur = d / "current.raw"
    c.export(spec, str(cur))
    assert src.read_bytes() != cur.read_bytes()
    return {"s1": src.read_bytes(), "current": cur.read_bytes()}


def test_tree_snapshot_stream_reads_ahead(ceph_cluster, streamed, tmp_path):
    """A snapshot view streamed by dd, buffered and O_DIRECT, while another
    reader's random reads of the same view and of current break into the
    stream, reads what `rbd export` of the snapshot reads, byte for byte; the
    mount's readahead window is the option's; and a stream that stopped
    midway holds no buffers once a random read ends it."""
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet")
    mnt = str(tmp_path / "mnt")
    d = mount_rbd(ceph_cluster, mnt)
    try:
        vol = os.path.join(mnt, POOL, "vm-102-disk-0")
        snap, cur = os.path.join(vol, "s1", "disk.raw"), os.path.join(vol, "current", "disk.raw")
        with open(snap, "rb") as f:
            f.read(4096)
        assert _bdi_readahead_kb(mnt) == 4096
        stop = threading.Event()
        bad = []

        def random_reads():
            rnd = random.Random(5)
            fds = {v: os.open(p, os.O_RDONLY) for v, p in (("s1", snap), ("current", cur))}
            try:
                while not stop.is_set():
                    v = rnd.choice(["s1", "current"])
                    off = rnd.randrange(0, 64 * MiB - 256 * 1024)
                    n = rnd.choice([4096, 65536, 200000])
                    if os.pread(fds[v], n, off) != streamed[v][off:off + n]:
                        bad.append((v, off, n))
            finally:
                for fd in fds.values():
                    os.close(fd)
        t = threading.Thread(target=random_reads, daemon=True)
        t.start()
        try:
            for flags in (["iflag=direct"], [], ["iflag=direct"], []):
                _drop_caches()
                p = subprocess.run(["dd", "if=" + snap, "bs=1M", "status=none"] + flags,
                                   stdout=subprocess.PIPE, check=True, timeout=120)
                assert p.stdout == streamed["s1"], flags
        finally:
            stop.set()
            t.join(60)
        assert not bad
        # stop a stream after 40 of 64 MiB: once a random read ends it, the
        # objects read ahead are given back
        _drop_caches()
        with open(snap, "rb", buffering=0) as f:
            for _ in range(40):
                assert len(f.read(MiB)) == MiB
        before = rss_kib(d.proc.pid)
        fd = os.open(snap, os.O_RDONLY | os.O_DIRECT)
        try:
            import mmap
            buf = mmap.mmap(-1, 4096)
            os.preadv(fd, [buf], 3 * MiB)
            assert bytes(buf) == streamed["s1"][3 * MiB:3 * MiB + 4096]
        finally:
            os.close(fd)
        assert rss_kib(d.proc.pid) <= before - 8 * 1024, (before, rss_kib(d.proc.pid))
    finally:
        d.stop()
    d = mount_rbd(ceph_cluster, mnt, extra=["readahead_kb=0"])
    try:
        kb = _bdi_readahead_kb(mnt)
        with open(os.path.join(mnt, POOL, "vm-102-disk-0", "s1", "disk.raw"), "rb") as f:
            assert f.read(8 * MiB) == streamed["s1"][:8 * MiB]
        assert _bdi_readahead_kb(mnt) == kb
    finally:
        d.stop()


def test_tree_cluster_stops_under_snapshot_stream(ceph_cluster, streamed, tmp_path):
    """The cluster stops while a snapshot view is streamed with objects read
    ahead: the stream gets EIO within the op timeout, never a hang, and
    nothing but what the snapshot holds; once the cluster is back, the view
    reads in full as `rbd export` of it does."""
    if not daemon_has_store_seam():
        pytest.skip("the daemon does not serve rbd: sources yet")
    import errno
    c = ceph_cluster
    mnt = str(tmp_path / "mnt")
    d = mount_rbd(c, mnt, conf=fault_conf(c, tmp_path))
    snap = os.path.join(mnt, POOL, "vm-102-disk-0", "s1", "disk.raw")
    try:
        _drop_caches()
        with open(snap, "rb", buffering=0) as f:
            for k in range(8):
                assert f.read(MiB) == streamed["s1"][k * MiB:(k + 1) * MiB]
            c.stop()
            try:
                t = time.monotonic()
                off = 8 * MiB
                with pytest.raises(OSError) as e:
                    while off < 64 * MiB:
                        # a read may stop short at the first page that failed
                        b = f.read(MiB)
                        assert b and b == streamed["s1"][off:off + len(b)], off
                        off += len(b)
                assert e.value.errno == errno.EIO and time.monotonic() - t < 60
                assert d.proc.poll() is None
            finally:
                c.start()
        _drop_caches()

        def whole():
            try:
                with open(snap, "rb") as f:
                    return f.read() == streamed["s1"]
            except OSError:
                return False
        assert wait_for(whole, 60)
    finally:
        d.stop()
