"""Stores and helpers for tests/test_clients.py (the client conformance suite).

One 64 MiB disk (GPT, one ext4 partition holding known files, data past the
partition) is put on every store as a VM's disk with two snapshots:

  lvm    Proxmox thick LVM: qcow2 layers in LVs (tests/lvmlib.py)
  pvei   Proxmox directory, internal qcow2 snapshots
  pvec   Proxmox directory, snap-<snap>-<vol> volume chain
  inst   OpenStack Nova: instances/<uuid>/disk over _base (internal snapshots)
  rbd    Ceph RBD on the test cluster (tests/cephlib.py)

Each qemu store has a "VM": a qemu-storage-daemon holding the chain open
(writable top, as a running VM holds its disk) with one NBD export per view;
it is both how the VM writes into `current` (qemu-io over nbd+unix://) and
the reference reading of every view. RBD's VM is the rbd client
(`rbd import-diff`), its reference `rbd export`.
"""

import collections
import json
import os
import random
import re
import shutil
import subprocess

from lvmlib import MiB, run, qemu_img, qemu_io, OVERLAY_OPTS, sha256_file

DISK_SIZE = 64 * MiB
PART_START = MiB
PART_SIZE = 40 * MiB
VOL = "vm-100-disk-0.qcow2"
NOVA_UUID = "5b0c9a4e-2f1d-4c3b-9a8e-7d6c5b4a3f21"
NOVA_BASE = "3f786850e387550fdab836ed7e6dc881de23001b"
SNAPS = ("s1", "s2")
# what the disk holds inside its ext4 partition (path -> bytes)
FILES = {
    "etc/hostname": b"nightly-host\n",
    "data/blob.bin": random.Random(19).randbytes(300 * 1024 + 17),
    "data/small.txt": b"the quick brown fox\n" * 50,
}


def make_disk(workdir):
    """The 64 MiB raw disk every store starts from."""
    disk = os.path.join(workdir, "disk.raw")
    with open(disk, "wb") as f:
        f.truncate(DISK_SIZE)
    run(["sfdisk", "-q", disk], input=b"label: gpt\n2048,%d,L\n" % (PART_SIZE // 512))
    root = os.path.join(workdir, "fsroot")
    for p, data in FILES.items():
        os.makedirs(os.path.dirname(os.path.join(root, p)), exist_ok=True)
        with open(os.path.join(root, p), "wb") as f:
            f.write(data)
    fs = os.path.join(workdir, "fs.img")
    run(["mkfs.ext4", "-q", "-F", "-E", "root_owner=0:0", "-d", root, fs, "%dk" % (PART_SIZE // 1024)])
    run(["dd", "if=" + fs, "of=" + disk, "bs=1M", "seek=%d" % (PART_START // MiB), "conv=notrunc",
         "status=none"])
    os.unlink(fs)
    with open(disk, "r+b") as f:       # data past the partition, holes around it
        f.seek(48 * MiB)
        f.write(random.Random(7).randbytes(2 * MiB + 4097))
    return disk


class Qsd:
    """qemu-storage-daemon over one chain: blockdevs given oldest first, the
    top writable, an NBD export per view (read-only for snapshots)."""

    def __init__(self, workdir, name, blockdevs, exports):
        self.sock = os.path.join(workdir, "qsd-%s.sock" % name)
        self.log = os.path.join(workdir, "qsd-%s.log" % name)
        argv = ["qemu-storage-daemon"]
        for b in blockdevs:
            argv += ["--blockdev", json.dumps(b)]
        argv += ["--nbd-server", "addr.type=unix,addr.path=" + self.sock]
        for exp, (node, writable) in exports.items():
            argv += ["--export", "type=nbd,id=e-%s,node-name=%s,name=%s,writable=%s" % (
                exp, node, exp, "on" if writable else "off")]
        self.exports = exports
        with open(self.log, "wb") as lf:
            self.proc = subprocess.Popen(argv, stdout=lf, stderr=lf, stdin=subprocess.DEVNULL)
        import time
        end = time.monotonic() + 20
        while not os.path.exists(self.sock):
            if self.proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("qemu-storage-daemon did not start: %s" % open(self.log).read())
            time.sleep(0.05)

    def uri(self, exp):
        return "nbd+unix:///%s?socket=%s" % (exp, self.sock)

    def write(self, cmds):
        """The VM writes into current (and flushes, as a guest's sync does)."""
        argv = ["qemu-io", "-f", "raw"]
        for c in list(cmds) + ["flush"]:
            argv += ["-c", c]
        out = run(argv + [self.uri("current")]).stdout.decode()
        assert "error" not in out.lower() and "failed" not in out.lower(), out

    def digest(self, exp, tmpdir):
        out = os.path.join(tmpdir, "nbdref-%d.raw" % os.getpid())
        run(["qemu-img", "convert", "-f", "raw", "-O", "raw", self.uri(exp), out])
        try:
            return sha256_file(out), os.path.getsize(out)
        finally:
            os.unlink(out)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def chain_blockdevs(files, top_writable=True, fmts=None):
    """file nodes + format nodes with explicit backing, oldest first; nodes l0.. and top."""
    bd = []
    names = []
    for i, f in enumerate(files):
        top = i == len(files) - 1
        name = "top" if top else "l%d" % i
        ro = not (top and top_writable)
        fmt = (fmts or {}).get(i, "qcow2")
        bd.append({"driver": "file", "node-name": "f%d" % i, "filename": f, "read-only": ro,
                   "aio": "threads", "cache": {"direct": False}, "locking": "auto"})
        node = {"driver": fmt, "node-name": name, "file": "f%d" % i, "read-only": ro}
        if fmt == "qcow2":
            node["backing"] = names[-1] if names else None
        bd.append(node)
        names.append(name)
    return bd, names


class Store:
    """One store of the mount: name (its top-level directory), volume, views,
    how to write its current view and how to read every view as the reference."""

    name = None
    volume = VOL
    views = ("current",) + SNAPS

    def vdir(self, mnt, view):
        return os.path.join(mnt, self.name, self.volume, view)

    def disk(self, mnt, view):
        return os.path.join(self.vdir(mnt, view), "disk.raw")

    def stop_vm(self):
        pass


class QemuStore(Store):
    def __init__(self, workdir):
        self.workdir = workdir
        self.qsd = None
        self.isnap_ref = {}

    def vm_write(self, cmds):
        self.qsd.write(cmds)

    def digest(self, view):
        if view in self.qsd.exports:
            return self.qsd.digest(view, self.workdir)
        return self.isnap_ref[view]

    def stop_vm(self):
        if self.qsd:
            self.qsd.stop()


def isnap_digest(workdir, image_opts, snap):
    out = os.path.join(workdir, "isnapref.raw")
    run(["qemu-img", "convert", "-U", "--image-opts", "-l", "snapshot.name=" + snap, image_opts,
         "-O", "raw", out])
    try:
        return sha256_file(out), os.path.getsize(out)
    finally:
        os.unlink(out)


def first_writes(img, fmt="qcow2", cwd=None, n=1):
    qemu_io(img, "write -P 0x%02x %d %d" % (0x50 + n, (43 + n) * MiB, MiB), fmt=fmt, cwd=cwd)


class LvmStore(QemuStore):
    def __init__(self, env, workdir, disk):
        super().__init__(workdir)
        self.vg = env.vg(pv_size=384 * MiB)
        self.name = self.vg.name
        ch = self.chain = env.chain(self.vg)
        v = ch.import_raw_as_qcow2(VOL, disk)
        v.snapshot("s1")
        v.write(44 * MiB, MiB, 0x51)
        v.snapshot("s2")
        v.write(45 * MiB, MiB, 0x52)
        ch.place(VOL, slack=24 * MiB)        # room for what the VM writes later
        ch.sync()
        layout = self.vg.layout()
        # the lower layers read through one node, the top writes through another
        # (locking off: both are the same loop device)
        bd = [{"driver": "host_device", "node-name": "pv" + k, "filename": self.vg.loops[0],
               "aio": "threads", "cache": {"direct": False}, "locking": "off",
               "read-only": k == "ro"} for k in ("ro", "rw")]
        names = []
        layers = v.layers()
        for i, lv in enumerate(layers):
            segs = layout[lv]
            for a, b in zip(segs, segs[1:]):
                assert a[1] == b[1] and a[2] + a[3] == b[2], "LV %s is not contiguous" % lv
            top = i == len(layers) - 1
            bd.append({"driver": "raw", "node-name": "f%d" % i, "file": "pvrw" if top else "pvro", "offset": segs[0][2],
                       "size": sum(s[3] for s in segs), "read-only": not top})
            name = "top" if top else "l%d" % i
            bd.append({"driver": "qcow2", "node-name": name, "file": "f%d" % i,
                       "read-only": not top, "backing": names[-1] if names else None})
            names.append(name)
        self.qsd = Qsd(workdir, "lvm", bd, {"s1": ("l0", False), "s2": ("l1", False),
                                            "current": ("top", True)})


class PveIsnapStore(QemuStore):
    name = "pvei"

    def __init__(self, workdir, disk):
        super().__init__(workdir)
        self.root = os.path.join(workdir, self.name)
        d = os.path.join(self.root, "images", "100")
        os.makedirs(d)
        img = os.path.join(d, VOL)
        qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "preallocation=metadata",
                 disk, img)
        qemu_img("snapshot", "-c", "s1", img)
        first_writes(img, n=1)
        qemu_img("snapshot", "-c", "s2", img)
        first_writes(img, n=2)
        for s in SNAPS:
            self.isnap_ref[s] = isnap_digest(workdir, "driver=qcow2,file.filename=" + img, s)
        bd, _ = chain_blockdevs([img])
        self.qsd = Qsd(workdir, self.name, bd, {"current": ("top", True)})


class PveChainStore(QemuStore):
    name = "pvec"

    def __init__(self, workdir, disk):
        super().__init__(workdir)
        self.root = os.path.join(workdir, self.name)
        d = os.path.join(self.root, "images", "100")
        os.makedirs(d)
        files = ["snap-s1-" + VOL, "snap-s2-" + VOL, VOL]
        qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "preallocation=metadata",
                 disk, files[0], cwd=d)
        for i in (1, 2):
            qemu_img("create", "-q", "-f", "qcow2", "-o", OVERLAY_OPTS, "-b", files[i - 1],
                     "-F", "qcow2", files[i], str(DISK_SIZE), cwd=d)
            first_writes(files[i], cwd=d, n=i)
        bd, names = chain_blockdevs([os.path.join(d, f) for f in files])
        self.qsd = Qsd(workdir, self.name, bd, {"s1": ("l0", False), "s2": ("l1", False),
                                                "current": ("top", True)})


class NovaStore(QemuStore):
    name = "instances"
    volume = NOVA_UUID + "_disk"

    def __init__(self, workdir, disk):
        super().__init__(workdir)
        self.root = os.path.join(workdir, self.name)
        base = os.path.join(self.root, "_base", NOVA_BASE)
        os.makedirs(os.path.dirname(base))
        os.makedirs(os.path.join(self.root, NOVA_UUID))
        run(["cp", "--sparse=always", disk, base])
        img = os.path.join(self.root, NOVA_UUID, "disk")
        qemu_img("create", "-q", "-f", "qcow2", "-F", "raw", "-b", base, img, str(DISK_SIZE))
        qemu_img("snapshot", "-c", "s1", img)
        first_writes(img, n=1)
        qemu_img("snapshot", "-c", "s2", img)
        first_writes(img, n=2)
        # the backing path of the host Nova ran on (vstorfs re-roots it to this _base)
        qemu_img("rebase", "-u", "-F", "raw", "-b", "/var/lib/nova/instances/_base/" + NOVA_BASE, img)
        with open(os.path.join(self.root, NOVA_UUID, "disk.info"), "w") as f:
            json.dump({img: "qcow2"}, f)
        opts = ("driver=qcow2,file.filename=%s,backing.driver=raw,backing.file.filename=%s"
                % (img, base))
        for s in SNAPS:
            self.isnap_ref[s] = isnap_digest(workdir, opts, s)
        bd, _ = chain_blockdevs([base, img], fmts={0: "raw"})
        self.qsd = Qsd(workdir, self.name, bd, {"current": ("top", True)})


class RbdStore(Store):
    name = "rbd"
    volume = "vm-200-disk-0"

    def __init__(self, cluster, workdir, disk):
        self.c = cluster
        self.workdir = workdir
        self.spec = "rbd/" + self.volume
        cluster.rbd("import", "--no-progress", disk, self.spec, timeout=300)
        for i, s in enumerate(SNAPS, 1):
            cluster.rbd("snap", "create", "%s@%s" % (self.spec, s))
            self.vm_write_extents([((43 + i) * MiB, bytes([0x50 + i]) * MiB)])

    def remove(self):
        self.c.rbd("snap", "purge", self.spec, timeout=120)
        self.c.rbd("rm", "--no-progress", self.spec, timeout=120)

    def vm_write_extents(self, extents):
        stream = bytearray(b"rbd diff v1\n")
        for off, data in extents:
            stream += b"w" + off.to_bytes(8, "little") + len(data).to_bytes(8, "little") + data
        stream += b"e"
        self.c.rbd("import-diff", "-", self.spec, input=bytes(stream), timeout=300)

    def vm_write(self, cmds):
        ext = []
        for c in cmds:
            m = re.match(r"write -P (\d+) (\d+) (\d+)$", c)
            ext.append((int(m.group(2)), bytes([int(m.group(1))]) * int(m.group(3))))
        self.vm_write_extents(ext)

    def digest(self, view):
        out = os.path.join(self.workdir, "rbdref.raw")
        self.c.export(self.spec + ("" if view == "current" else "@" + view), out)
        try:
            return sha256_file(out), os.path.getsize(out)
        finally:
            os.unlink(out)


# -- the daemon's reads, from its FUSE trace (-d) -------------------------

class ReadTrace:
    """Bytes the daemon answered to READ requests, per inode (nodeid), from
    the libfuse request trace in its stderr, counting only the requests of
    the given threads (a client's: the daemon's partition probe reads
    disk.raw through the mount too, from worker threads that come and go)."""

    REQ = re.compile(rb"unique: (\d+), opcode: READ \(15\), nodeid: (\d+), insize: \d+, pid: (\d+)")
    REP = re.compile(rb"\s+unique: (\d+), (?:success|error: -?\d+[^,]*), outsize: (\d+)")

    def __init__(self, daemon):
        self.d = daemon

    def pos(self):
        return os.path.getsize(self.d.logpath)

    def reads_since(self, pos, pids):
        with open(self.d.logpath, "rb") as f:
            f.seek(pos)
            text = f.read()
        pending = {}
        out = collections.Counter()
        for line in text.splitlines():
            m = self.REQ.match(line)
            if m:
                pending[m.group(1)] = (int(m.group(2)), int(m.group(3)))
                continue
            m = self.REP.match(line)
            if m and m.group(1) in pending:
                node, pid = pending.pop(m.group(1))
                if pid in pids:
                    out[node] += max(0, int(m.group(2)) - 16)
        return out


def run_sampled(argv, env=None, cwd=None, timeout=900):
    """Run a client; return (returncode, stdout, stderr, every thread id it had),
    its /proc/PID/task polled while it runs (FUSE requests carry thread ids)."""
    import tempfile
    import threading
    out, err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    p = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    tids = {p.pid}
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                tids.update(int(t) for t in os.listdir("/proc/%d/task" % p.pid))
            except (FileNotFoundError, ProcessLookupError):
                pass
            done.wait(0.005)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        rc = p.wait(timeout=timeout)
    finally:
        done.set()
        t.join()
        if p.poll() is None:
            p.kill()
            p.wait()
    out.seek(0)
    err.seek(0)
    return rc, out.read().decode(errors="replace"), err.read().decode(errors="replace"), tids


def traced_binary(workdir, binary):
    """A wrapper that starts the daemon with libfuse's request trace (-d)."""
    w = os.path.join(workdir, "vstorfs-traced")
    with open(w, "w") as f:
        f.write("#!/bin/sh\nexec %s -d \"$@\"\n" % binary)
    os.chmod(w, 0o755)
    return w


def copy_tree(src, dst):
    shutil.copytree(src, dst, symlinks=True)
