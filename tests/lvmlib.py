"""Fixture library for the vstorfs end-to-end tests.

Builds throwaway LVM volume groups on loop devices (no device-mapper: LVs are
never activated, their bytes are read and written through the PV extents) and
Proxmox VE 9 style qcow2 volume chains inside them.

Everything here is independent of the vstorfs daemon: the reference content of
a view is what qemu reads from the LV bytes (copied back out of the PVs).
"""

import errno
import fcntl
import struct
import json
import glob
import os
import secrets
import shutil
import string
import subprocess
import tempfile
import time

from vstorlib import sha256_file  # noqa: F401  (lvmlib's users import it from here)

MiB = 1 << 20
BLKZEROOUT = 0x127f
GiB = 1 << 30

LVM_ENV = dict(os.environ, LVM_SUPPRESS_FD_WARNINGS="1")


BATCH_LVS = 32         # Chain.sync creates this many new LVs or more in one metadata write
LV_TEMPLATE = """
\t\t%(name)s {
\t\t\tid = "%(id)s"
\t\t\tstatus = ["READ", "WRITE", "VISIBLE"]
\t\t\tflags = []
\t\t\ttags = [%(tags)s]
\t\t\tcreation_time = %(now)d
\t\t\tcreation_host = "vstorfs-tests"
\t\t\tsegment_count = 1

\t\t\tsegment1 {
\t\t\t\tstart_extent = 0
\t\t\t\textent_count = %(n)d
\t\t\t\ttype = "striped"
\t\t\t\tstripe_count = 1
\t\t\t\tstripes = [
\t\t\t\t\t"pv0", %(start)d
\t\t\t\t]
\t\t\t}
\t\t}
"""


def lvm_id():
    """An LVM UUID: 32 of [A-Za-z0-9], grouped 6-4-4-4-4-4-6."""
    a = string.ascii_letters + string.digits
    c = "".join(secrets.choice(a) for _ in range(32))
    parts, i = [], 0
    for n in (6, 4, 4, 4, 4, 4, 6):
        parts.append(c[i:i + n])
        i += n
    return "-".join(parts)


class CmdError(RuntimeError):
    pass


def run(cmd, check=True, env=None, cwd=None, input=None, timeout=600):
    """Run a command, capture output, raise CmdError with its output on failure."""
    p = subprocess.run(cmd, cwd=cwd, env=env, input=input, capture_output=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise CmdError("%s failed (%d):\nstdout: %s\nstderr: %s" % (
            " ".join(map(str, cmd)), p.returncode,
            p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")))
    return p


def data_ranges(fd, size):
    """Yield (offset, length) of the data regions of a (sparse) file."""
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return
            raise
        try:
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError as e:
            if e.errno != errno.ENXIO:
                raise
            end = size
        end = min(end, size)
        if end > start:
            yield start, end - start
        off = end


def roundup(n, a):
    return (n + a - 1) // a * a


class VG:
    """A volume group on one or more loop devices backed by sparse files."""

    def __init__(self, workdir, npvs=1, pv_size=GiB, extent_size="4m", name=None,
                 metadatasize=None):
        self.workdir = workdir
        self.name = name or ("vst" + secrets.token_hex(4))
        self.files = []
        self.loops = []
        self.created = False
        self._layout = None
        try:
            for i in range(npvs):
                f = os.path.join(workdir, "%s-pv%d.img" % (self.name, i))
                with open(f, "wb") as fh:
                    fh.truncate(pv_size)
                self.files.append(f)
                loop = run(["losetup", "-f", "--show", f]).stdout.decode().strip()
                self.loops.append(loop)
            mda = ["--metadatasize", metadatasize] if metadatasize else []
            self.lvm("pvcreate", "-y", "-ff", *mda, *self.loops)
            self.lvm("vgcreate", "-An", "-s", extent_size, self.name, *self.loops)
            self.created = True
        except BaseException:
            self.destroy()
            raise

    # -- lvm plumbing -----------------------------------------------------
    @property
    def devices_opt(self):
        return ",".join(self.loops)

    def lvm(self, cmd, *args, check=True):
        argv = [cmd, "--driverloaded", "n", "--devices", self.devices_opt] + list(args)
        return run(argv, env=LVM_ENV, check=check)

    def lvm_json(self, cmd, *args):
        out = self.lvm(cmd, "--reportformat", "json", "--units", "b", "--nosuffix",
                       *args).stdout.decode()
        return json.loads(out)["report"][0]

    def destroy(self):
        if self.created:
            self.lvm("vgremove", "-f", "-y", self.name, check=False)
            self.created = False
        for loop in self.loops:
            run(["losetup", "-d", loop], check=False)
        self.loops = []
        for f in self.files:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass
        self.files = []
        # lvm2 archives every metadata change of the VG (as on a real host);
        # a test VG's archives and backup go with it.
        for f in glob.glob("/etc/lvm/archive/%s_*.vg" % self.name) + ["/etc/lvm/backup/" + self.name]:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

    # -- LVs -------------------------------------------------------------
    def lvcreate(self, name, size, tags=("pve-vm-100",), pvs=()):
        args = ["-an", "-Zn", "-An", "-y", "-L", "%db" % size, "-n", name]
        for t in tags:
            args += ["--addtag", t]
        self.lvm("lvcreate", *args, self.name, *pvs)
        self._layout = None

    def lvcreate_many(self, lvs):
        """Create many LVs [(name, size, tags)] in one metadata write: vgcfgbackup, the LVs
        added as linear segments after the highest used extent of a one-PV VG,
        vgcfgrestore. What LVM then holds is what as many lvcreate calls would make; a
        deep chain (1030 layers) costs one commit instead of one each (~0.1 s apiece,
        growing with the metadata). Needs a single PV and no LV placement."""
        assert len(self.loops) == 1
        ext = self.extent_size
        (pe_start, _), = self.pv_info().values()
        used = 0                # extents below `used` belong to LVs already
        for segs in self.layout().values():
            for _, _, dev_off, length in segs:
                used = max(used, (dev_off + length - pe_start) // ext)
        backup = os.path.join(self.workdir, "%s.vgcfg" % self.name)
        self.lvm("vgcfgbackup", "-f", backup, self.name)
        text = open(backup).read()
        blocks = []
        for name, size, tags in lvs:
            n = -(-size // ext)
            blocks.append(LV_TEMPLATE % dict(name=name, id=lvm_id(), tags=", ".join('"%s"' % t for t in tags),
                                              now=int(time.time()), n=n, start=used))
            used += n
        body = "".join(blocks)
        if "\tlogical_volumes {\n" in text:
            text = text.replace("\tlogical_volumes {\n", "\tlogical_volumes {\n" + body, 1)
        else:
            end = text.rstrip().rindex("}")
            text = text[:end] + "\tlogical_volumes {\n" + body + "\t}\n" + text[end:]
        with open(backup, "w") as f:
            f.write(text)
        self.lvm("vgcfgrestore", "-f", backup, self.name)
        self._layout = None

    def lvrename(self, old, new):
        self.lvm("lvrename", "-An", self.name, old, new)
        self._layout = None

    def lvremove(self, name):
        self.lvm("lvremove", "-An", "-f", "-y", "%s/%s" % (self.name, name))
        self._layout = None

    def lvextend(self, name, size):
        self.lvm("lvextend", "-An", "-L", "%db" % size, "%s/%s" % (self.name, name))
        self._layout = None

    def pv_info(self):
        rows = self.lvm_json("pvs", "-o", "pv_name,pe_start,vg_extent_size",
                             *self.loops)["pv"]
        return {r["pv_name"]: (int(r["pe_start"]), int(r["vg_extent_size"])) for r in rows}

    @property
    def extent_size(self):
        if not getattr(self, "_ext", None):
            self._ext = next(iter(self.pv_info().values()))[1]
        return self._ext

    def layout(self):
        """{lv_name: [(lv_offset, dev, dev_offset, length), ...]} sorted by lv_offset."""
        if self._layout is not None:
            return self._layout
        pvs = self.pv_info()
        rows = self.lvm_json("lvs", "-a", "-o", "lv_name,seg_start,seg_size,seg_pe_ranges",
                             self.name)["lv"]
        lay = {}
        for r in rows:
            seg_start, seg_size = int(r["seg_start"]), int(r["seg_size"])
            pos = seg_start
            for rng in r["seg_pe_ranges"].split():
                dev, pe = rng.rsplit(":", 1)
                a, b = (int(x) for x in pe.split("-"))
                pe_start, ext = pvs[dev]
                length = (b - a + 1) * ext
                lay.setdefault(r["lv_name"], []).append(
                    (pos, dev, pe_start + a * ext, length))
                pos += length
            assert pos == seg_start + seg_size, r
        for v in lay.values():
            v.sort()
        self._layout = lay
        return lay

    def split_ranges(self, first_pv, first_pe, nfirst, second_pv, second_pe):
        """pvs function for Chain.place: nfirst extents on one PV, the rest on another."""
        def f(n):
            assert n > nfirst
            return ["%s:%d-%d" % (first_pv, first_pe, first_pe + nfirst - 1),
                    "%s:%d-%d" % (second_pv, second_pe, second_pe + n - nfirst - 1)]
        return f

    def lv_names(self):
        return sorted(self.layout())

    def lv_size(self, name):
        segs = self.layout()[name]
        return segs[-1][0] + segs[-1][3]

    def lv_pvs(self, name):
        return sorted({s[1] for s in self.layout()[name]})

    def _pieces(self, name, off, length):
        """Split an LV byte range into (dev, dev_offset, buf_offset, length)."""
        out = []
        for lv_off, dev, dev_off, seg_len in self.layout()[name]:
            a = max(off, lv_off)
            b = min(off + length, lv_off + seg_len)
            if a < b:
                out.append((dev, dev_off + a - lv_off, a - off, b - a))
        covered = sum(p[3] for p in out)
        if covered != length:
            raise ValueError("range %d+%d outside LV %s" % (off, length, name))
        return out

    def pwrite_lv(self, name, off, data):
        data = bytes(data)
        for dev, dev_off, boff, n in self._pieces(name, off, len(data)):
            fd = os.open(dev, os.O_WRONLY)
            try:
                mv = memoryview(data)[boff:boff + n]
                done = 0
                while done < n:
                    done += os.pwrite(fd, mv[done:], dev_off + done)
                os.fsync(fd)
            finally:
                os.close(fd)

    def pread_lv(self, name, off, length):
        buf = bytearray(length)
        for dev, dev_off, boff, n in self._pieces(name, off, length):
            fd = os.open(dev, os.O_RDONLY)
            try:
                done = 0
                while done < n:
                    b = os.pread(fd, n - done, dev_off + done)
                    if not b:
                        raise IOError("short read on %s" % dev)
                    buf[boff + done:boff + done + len(b)] = b
                    done += len(b)
            finally:
                os.close(fd)
        return bytes(buf)

    def zero_lv_range(self, name, off, length):
        """Zero an LV byte range: BLKZEROOUT on the loop device (punches holes in
        the backing file, keeps it sparse) where aligned, else plain writes."""
        for dev, dev_off, boff, n in self._pieces(name, off, length):
            a = roundup(dev_off, 4096)
            b = (dev_off + n) // 4096 * 4096
            fd = os.open(dev, os.O_WRONLY)
            try:
                if b > a:
                    try:
                        fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", a, b - a))
                    except OSError:
                        a = b = dev_off
                for x, y in ((dev_off, min(a, dev_off + n)) if b > a else (dev_off, dev_off + n),
                             (max(b, dev_off), dev_off + n) if b > a else (0, 0)):
                    pos = x
                    while pos < y:
                        m = min(4 * MiB, y - pos)
                        os.pwrite(fd, bytes(m), pos)
                        pos += m
                os.fsync(fd)
            finally:
                os.close(fd)

    def zero_lv(self, name):
        """Zero the whole LV (LVs are created with -Zn; old data may linger)."""
        self.zero_lv_range(name, 0, self.lv_size(name))

    def copy_file_to_lv(self, path, name, zero_rest=True):
        """Copy a (sparse) file into an LV: data regions written, holes zeroed."""
        size = os.path.getsize(path)
        lvsize = self.lv_size(name)
        if size > lvsize:
            raise ValueError("%s (%d) does not fit LV %s (%d)" % (path, size, name, lvsize))
        chunk = 4 * MiB
        # zero everything first where the file has holes, then write the data
        fd = os.open(path, os.O_RDONLY)
        try:
            ranges = list(data_ranges(fd, size))
            pos = 0
            holes = []
            for a, n in ranges:
                if a > pos:
                    holes.append((pos, a - pos))
                pos = a + n
            end = lvsize if zero_rest else size
            if end > pos:
                holes.append((pos, end - pos))
            for a, n in holes:
                self.zero_lv_range(name, a, n)
            for a, n in ranges:
                for o in range(a, a + n, chunk):
                    m = min(chunk, a + n - o)
                    self.pwrite_lv(name, o, os.pread(fd, m, o))
        finally:
            os.close(fd)

    def copy_lv_to_file(self, name, path):
        size = self.lv_size(name)
        chunk = 4 * MiB
        with open(path, "wb") as f:
            f.truncate(size)
            for o in range(0, size, chunk):
                b = self.pread_lv(name, o, min(chunk, size - o))
                if b.count(0) != len(b):
                    f.seek(o)
                    f.write(b)


# -- qemu helpers ---------------------------------------------------------

def qemu_img(*args, cwd=None):
    return run(["qemu-img"] + list(args), cwd=cwd)


def qemu_io(path, *cmds, fmt="qcow2", cwd=None):
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    argv.append(path)
    p = run(argv, cwd=cwd)
    out = p.stdout.decode(errors="replace")
    if "error" in out.lower() or "failed" in out.lower():
        raise CmdError("qemu-io %s: %s" % (cmds, out))
    return out


def qcow2_info(path, cwd=None):
    return json.loads(qemu_img("info", "--output=json", "-U", path, cwd=cwd).stdout)


BASE_OPTS = "preallocation=metadata"
OVERLAY_OPTS = "extended_l2=on,cluster_size=128k,preallocation=metadata"


class Volume:
    """One Proxmox volume (qcow2 or raw) and its snapshots, as files in Chain.dir.

    For a qcow2 volume `vm-100-disk-0.qcow2` the current layer file is named
    like the volume; snapshot s is `snap_vm-100-disk-0_s.qcow2` (or the old
    `snap-s-vm-100-disk-0.qcow2`). Every layer file is named exactly like its
    LV so bare backing names resolve in the directory."""

    def __init__(self, chain, name, size, fmt, opts):
        self.chain = chain
        self.name = name
        self.size = size
        self.fmt = fmt
        self.opts = opts
        self.snaps = []          # [(snapname, lvname)] oldest first

    @property
    def path(self):
        return os.path.join(self.chain.dir, self.name)

    def io(self, *cmds):
        return qemu_io(self.name, *cmds, fmt=self.fmt, cwd=self.chain.dir)

    def write(self, off, length, pattern=None):
        if pattern is None:
            return self.io("write -z %d %d" % (off, length))
        return self.io("write -P %d %d %d" % (pattern, off, length))

    def snap_lvname(self, snap, old_naming=False):
        if old_naming:
            return "snap-%s-%s" % (snap, self.name)
        base = self.name[:-len(".qcow2")] if self.name.endswith(".qcow2") else self.name
        return "snap_%s_%s.qcow2" % (base, snap)

    def snapshot(self, snap, old_naming=False, overlay_opts=None, backing_shorter_by=0,
                 content_raw=None):
        """Proxmox way: rename current layer to the snapshot name, new overlay on top."""
        assert self.fmt == "qcow2"
        lv = self.snap_lvname(snap, old_naming)
        os.rename(self.path, os.path.join(self.chain.dir, lv))
        if self.name in self.chain.lvs_created:
            self.chain.vg.lvrename(self.name, lv)
            self.chain.lvs_created.discard(self.name)
            self.chain.lvs_created.add(lv)
        self.chain.layer_owner[lv] = self
        self.snaps.append((snap, lv))
        if backing_shorter_by:
            # grow the volume: overlay is longer than its backing file
            self.size += backing_shorter_by
        opts = overlay_opts or OVERLAY_OPTS
        if content_raw:
            # new layer = full new content expressed as an overlay of the snapshot
            opts = opts.replace(",preallocation=metadata", "")
            qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", opts, "-B", lv,
                     "-F", "qcow2", os.path.abspath(content_raw), self.name,
                     cwd=self.chain.dir)
            return lv
        # -u: do not open the (possibly very deep) backing chain; the size is given
        qemu_img("create", "-q", "-u", "-f", "qcow2", "-o", opts, "-b", lv, "-F", "qcow2",
                 self.name, str(self.size), cwd=self.chain.dir)
        return lv

    def views(self):
        """{view name: top layer name} — `current` + one per snapshot."""
        v = {"current": self.name}
        for s, lv in self.snaps:
            v[s] = lv
        return v

    def layers(self):
        return [lv for _, lv in self.snaps] + [self.name]


class Chain:
    """Builds Proxmox-style volumes as files, pushes them into LVs of a VG, and
    computes the qemu reference of every view from the LV bytes."""

    def __init__(self, vg, workdir):
        self.vg = vg
        self.dir = os.path.join(workdir, "layers-" + vg.name)
        os.makedirs(self.dir, exist_ok=True)
        self.refdir = os.path.join(workdir, "ref-" + vg.name)
        self.volumes = {}
        self.lvs_created = set()
        self.layer_owner = {}
        self.lv_tags = {}
        self.lv_pvs = {}
        self.lv_slack = {}

    def qcow2(self, name, size, opts=BASE_OPTS, vmid=None, tags=None):
        qemu_img("create", "-q", "-f", "qcow2", "-o", opts, name, str(size), cwd=self.dir)
        return self._add(name, size, "qcow2", opts, vmid, tags)

    def raw(self, name, size, vmid=None, tags=None, src=None):
        p = os.path.join(self.dir, name)
        if src:
            shutil.copyfile(src, p)
            os.truncate(p, size)
        else:
            with open(p, "wb") as f:
                f.truncate(size)
        v = self._add(name, size, "raw", None, vmid, tags)
        self.lv_slack.setdefault(name, 0)
        return v

    def import_raw_as_qcow2(self, name, rawfile, opts="cluster_size=65536"):
        """A qcow2 base whose content is a raw image (e.g. an ext4 made by mkfs)."""
        qemu_img("convert", "-q", "-f", "raw", "-O", "qcow2", "-o", opts, rawfile, name,
                 cwd=self.dir)
        size = os.path.getsize(rawfile)
        return self._add(name, size, "qcow2", opts, None, None)

    def _add(self, name, size, fmt, opts, vmid, tags):
        v = Volume(self, name, size, fmt, opts)
        self.volumes[name] = v
        self.layer_owner[name] = v
        if tags is None:
            if vmid is None:
                vmid = name.split("-")[1] if name.startswith(("vm-", "base-")) else "100"
            tags = ("pve-vm-%s" % vmid,)
        v.tags = tuple(tags)
        return v

    def place(self, lvname, pvs=(), slack=None):
        """Ask for an LV to be created on given PVs (optionally extra slack bytes).
        pvs: list of "PV" / "PV:a-b", or a function(extent count) returning one."""
        self.lv_pvs[lvname] = pvs if callable(pvs) else tuple(pvs)
        if slack is not None:
            self.lv_slack[lvname] = slack

    def layer_files(self):
        out = []
        for v in self.volumes.values():
            out += v.layers()
        return out

    def lv_size_for(self, lvname):
        size = os.path.getsize(os.path.join(self.dir, lvname))
        slack = self.lv_slack.get(lvname, MiB)
        return roundup(size + slack, self.vg.extent_size)

    def sync(self, names=None):
        """Create missing LVs (size >= file), grow them if needed, copy file bytes in."""
        ext = self.vg.extent_size
        names = names or self.layer_files()
        new = [lv for lv in names if lv not in self.lvs_created and not self.lv_pvs.get(lv)]
        if len(new) >= BATCH_LVS and len(self.vg.loops) == 1:
            # a deep chain: one metadata commit for all (lvcreate_many), not one each
            self.vg.lvcreate_many([(lv, self.lv_size_for(lv), self.layer_owner[lv].tags) for lv in new])
            self.lvs_created.update(new)
        for lv in names:       # create/grow all LVs first: one layout query for the copies
            path = os.path.join(self.dir, lv)
            size = os.path.getsize(path)
            if lv not in self.lvs_created:
                lvsize = self.lv_size_for(lv)
                pvs = self.lv_pvs.get(lv, ())
                if callable(pvs):     # f(number of extents) -> PV[:PE range] list
                    pvs = pvs(lvsize // ext)
                self.vg.lvcreate(lv, lvsize, tags=self.layer_owner[lv].tags, pvs=pvs)
                self.lvs_created.add(lv)
            elif size > self.vg.lv_size(lv):
                self.vg.lvextend(lv, roundup(size, ext))
        for lv in names:
            self.vg.copy_file_to_lv(os.path.join(self.dir, lv), lv)

    # -- reference ------------------------------------------------------
    def refresh_reference_layers(self):
        """Read every LV back from the PV extents into refdir (named like the LVs)."""
        if os.path.isdir(self.refdir):
            shutil.rmtree(self.refdir)
        os.makedirs(self.refdir)
        for lv in self.lvs_created:
            self.vg.copy_lv_to_file(lv, os.path.join(self.refdir, lv))

    def reference(self, volume, view, out=None):
        """Raw image of (volume, view) as qemu reads it from the LV bytes. Returns its path."""
        v = self.volumes[volume]
        top = v.views()[view]
        if not os.path.exists(os.path.join(self.refdir, top)):
            self.refresh_reference_layers()
        out = out or os.path.join(self.refdir, "REF--%s--%s.raw" % (volume, view))
        if v.fmt == "raw":
            # raw LV: the disk is the LV's first `size` bytes (LV may be larger;
            # vstorfs shows the LV size as the virtual size of a raw volume)
            shutil.copyfile(os.path.join(self.refdir, top), out)
        else:
            run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", top, out], cwd=self.refdir)
        return out

    def virtual_size(self, volume, view):
        v = self.volumes[volume]
        top = v.views()[view]
        if v.fmt == "raw":
            return self.vg.lv_size(top)
        if not os.path.exists(os.path.join(self.refdir, top)):
            self.refresh_reference_layers()
        return qcow2_info(top, cwd=self.refdir)["virtual-size"]


def lv_qcow2_header(vg, lv):
    """Parse the main qcow2 header fields of an LV (read via the PV extents)."""
    import struct
    h = vg.pread_lv(lv, 0, 512)
    f = struct.unpack(">IIQIIQIIQQIIQ", h[:72])
    keys = ["magic", "version", "backing_file_offset", "backing_file_size",
            "cluster_bits", "size", "crypt_method", "l1_size", "l1_table_offset",
            "refcount_table_offset", "refcount_table_clusters", "nb_snapshots",
            "snapshots_offset"]
    d = dict(zip(keys, f))
    if d["version"] >= 3:
        d["incompatible_features"] = struct.unpack(">Q", h[72:80])[0]
        d["header_length"] = struct.unpack(">I", h[96:100])[0]
    return d


def first_l2_entry(vg, lv):
    """(byte offset in LV of the first L2 table entry, header dict)."""
    import struct
    h = lv_qcow2_header(vg, lv)
    l1 = struct.unpack(">Q", vg.pread_lv(lv, h["l1_table_offset"], 8))[0]
    l2_off = l1 & 0x00fffffffffffe00
    return l2_off, h


def make_workdir(prefix="vstorfs-test-"):
    return tempfile.mkdtemp(prefix=prefix, dir=os.environ.get("VSTORFS_TMP", "/var/tmp"))
