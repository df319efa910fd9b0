"""A throwaway single-node Ceph cluster for the RBD store's tests.

One monitor and one OSD on memstore (RAM), everything under one temporary
directory: its own ceph.conf, one keyring (made with ceph-authtool), the
mon's and the OSD's data, logs, pid files and admin sockets. The monitor
listens on 127.0.0.1 at a port below the kernel's ephemeral range. The
daemons daemonize (they reparent to PID 1): they are stopped by the PIDs in
their pid files, never by name. Memstore saves its contents to the OSD's
data directory on a clean shutdown (SIGTERM), so stop() + start() keeps the
images.

    c = Cluster(workdir); c.create(); ...; c.stop(); c.start(); ...; c.destroy()
"""

import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid

from lvmlib import CmdError, run

CEPH_BINARIES = ("ceph-mon", "ceph-osd", "ceph", "ceph-authtool", "monmaptool", "rbd", "rados")
MEMSTORE_BYTES = 1536 << 20


def missing_binaries():
    return [b for b in CEPH_BINARIES if not shutil.which(b)]


def ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError):
        return 32768


def free_port(lo=12000):
    """A port nobody listens on, below the ephemeral range."""
    hi = max(lo + 100, ephemeral_low() - 1)
    for _ in range(200):
        p = random.randrange(lo, hi)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise RuntimeError("no free port below %d" % hi)


def pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie is not alive for our purpose (they reparent to init, which reaps)
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


class Cluster:
    def __init__(self, workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix="vstorfs-ceph-",
                                               dir=os.environ.get("VSTORFS_TMP", "/var/tmp"))
        self.conf = os.path.join(self.dir, "ceph.conf")
        self.keyring = os.path.join(self.dir, "keyring")
        self.port = None
        self.fsid = str(uuid.uuid4())
        self.osd_uuid = str(uuid.uuid4())
        self.osd_id = None
        self.pool = "rbd"
        self.timings = {}

    # -- commands ------------------------------------------------------------

    def cmd(self, *argv, check=True, timeout=60, input=None, user=None):
        tool = argv[0]
        extra = ["-c", self.conf]
        if tool in ("ceph", "rbd", "rados"):
            extra += ["--id", user or "admin"]
        return run([tool] + extra + list(argv[1:]), check=check, timeout=timeout, input=input)

    def ceph(self, *args, **kw):
        return self.cmd("ceph", *args, **kw)

    def rbd(self, *args, **kw):
        return self.cmd("rbd", *args, **kw)

    def rados(self, *args, **kw):
        return self.cmd("rados", *args, **kw)

    # -- life cycle ----------------------------------------------------------

    def _write_conf(self):
        d = self.dir
        with open(self.conf, "w") as f:
            f.write("""[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{port}
mon initial members = a
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = {d}/keyring
run dir = {d}/run
admin socket = {d}/run/$name.$pid.asok
pid file = {d}/run/$name.pid
log file = {d}/log/$name.log
crash dir = {d}/crash
osd objectstore = memstore
memstore device bytes = {mem}
osd data = {d}/osd.$id
mon data = {d}/mon.$id
osd pool default size = 1
osd pool default min size = 1
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
paxos propose interval = 0.1
osd pool default pg autoscale mode = off
mon osd down out interval = 0
osd heartbeat grace = 60
osd fast shutdown = false
client mount timeout = 20
rados mon op timeout = 20
rados osd op timeout = 20
[osd]
osd max object name len = 256
osd max object namespace len = 64
osd op num shards = 1
osd op num threads per shard = 2
""".format(fsid=self.fsid, port=self.port, d=d, mem=MEMSTORE_BYTES))

    def create(self):
        """Build and start a fresh cluster with an initialized pool `rbd`."""
        t0 = time.monotonic()
        for sub in ("run", "log", "crash", "mon.a"):
            os.makedirs(os.path.join(self.dir, sub), exist_ok=True)
        self.port = free_port()
        self._write_conf()
        run(["ceph-authtool", "--create-keyring", self.keyring, "--gen-key", "-n", "mon.",
             "--cap", "mon", "allow *"])
        run(["ceph-authtool", self.keyring, "--gen-key", "-n", "client.admin",
             "--cap", "mon", "allow *", "--cap", "osd", "allow *",
             "--cap", "mgr", "allow *", "--cap", "mds", "allow *"])
        run(["ceph-authtool", self.keyring, "--gen-key", "-n", "osd.0",
             "--cap", "mon", "allow profile osd", "--cap", "osd", "allow *",
             "--cap", "mgr", "allow profile osd"])
        monmap = os.path.join(self.dir, "monmap")
        run(["monmaptool", "--create", "--fsid", self.fsid,
             "--addv", "a", "[v2:127.0.0.1:%d]" % self.port, monmap])
        run(["ceph-mon", "-c", self.conf, "--mkfs", "-i", "a", "--monmap", monmap,
             "--keyring", self.keyring])
        self._start_mon()
        out = self.ceph("osd", "new", self.osd_uuid, "0").stdout.decode().strip()
        self.osd_id = int(out or 0)
        os.makedirs(os.path.join(self.dir, "osd.%d" % self.osd_id), exist_ok=True)
        run(["ceph-osd", "-c", self.conf, "-i", str(self.osd_id), "--mkfs",
             "--osd-uuid", self.osd_uuid], timeout=120)
        self._start_osd()
        self.ceph("osd", "pool", "create", self.pool, "8", "8")
        self.rbd("pool", "init", self.pool, timeout=120)
        self.wait_active()
        self.timings["create"] = time.monotonic() - t0

    def _pidfile(self, name):
        return os.path.join(self.dir, "run", name + ".pid")

    def _start_mon(self):
        run(["ceph-mon", "-c", self.conf, "-i", "a"])

    def _start_osd(self):
        run(["ceph-osd", "-c", self.conf, "-i", str(self.osd_id)], timeout=120)

    def wait_active(self, timeout=90):
        """A rados put proves the pool takes writes."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            p = self.rados("-p", self.pool, "put", "vstorfs-probe", "/dev/null",
                           "--rados-osd-op-timeout", "5", check=False, timeout=30)
            if p.returncode == 0:
                return
            last = p.stderr.decode(errors="replace")
            time.sleep(0.2)
        raise CmdError("pool %s not active after %ds: %s" % (self.pool, timeout, last))

    def pids(self):
        out = {}
        for name in ("mon.a", "osd.%s" % self.osd_id):
            try:
                with open(self._pidfile(name)) as f:
                    out[name] = int(f.read().strip())
            except (OSError, ValueError):
                pass
        return out

    def stop(self, timeout=30):
        """SIGTERM both daemons by their pid files (OSD first: memstore saves), wait."""
        t0 = time.monotonic()
        pids = self.pids()
        order = [n for n in pids if n.startswith("osd")] + [n for n in pids if n.startswith("mon")]
        for name in order:
            pid = pids[name]
            if not pid_alive(pid):
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            end = time.monotonic() + timeout
            while pid_alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
                while pid_alive(pid) and time.monotonic() < end + 5:
                    time.sleep(0.05)
        self.timings["stop"] = time.monotonic() - t0

    def start(self):
        """Restart a stopped cluster on the same port and data."""
        t0 = time.monotonic()
        self._start_mon()
        self._start_osd()
        self.wait_active()
        self.timings["start"] = time.monotonic() - t0

    def destroy(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- helpers for tests ---------------------------------------------------

    def add_user(self, name, caps):
        """A client with the given caps (list of (service, cap)); returns its keyring path."""
        args = ["auth", "get-or-create", "client." + name]
        for svc, cap in caps:
            args += [svc, cap]
        key = self.ceph(*args).stdout
        path = os.path.join(self.dir, "keyring." + name)
        with open(path, "wb") as f:
            f.write(key)
        return path

    def export_sha256(self, spec):
        """sha256 of `rbd export <spec> -` (spec: pool/image[@snap])."""
        p = subprocess.run("rbd -c %s --id admin export --no-progress %s - | sha256sum" % (
            self.conf, spec), shell=True, capture_output=True, timeout=600)
        if p.returncode != 0:
            raise CmdError("rbd export %s: %s" % (spec, p.stderr.decode(errors="replace")))
        return p.stdout.split()[0].decode()

    def export(self, spec, path):
        self.rbd("export", "--no-progress", spec, path, timeout=600)
        return path
