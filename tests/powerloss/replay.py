"""Replayer: the crash states a power cut can leave, built from a recorder log.

Persistence model (what the sweep assumes of the host file system; the
model ext4 data=ordered and xfs promise, weakened where POSIX allows):

  * File data (write, truncate, fallocate) of a file is durable once that
    file has been fsync'd or fdatasync'd after it. Before that, any subset
    of its writes may have reached the disk, in any combination, and a write
    that crosses a 4 KiB boundary may land torn: as a prefix, or as any
    subset of its 4 KiB blocks (a device persists blocks, not writes).
  * A namespace change (create, mkdir, link, unlink, rename, symlink) is
    durable once the directory holding the name has been fsync'd after it
    (fsync of the file does not make its name durable). Namespace changes
    reach the disk in the order they were made (the journal commits them in
    order), so the namespace after a crash is a prefix of the changes, at
    least up to the last one made durable.
  * Data and namespace are independent: a rename may be durable while the
    renamed file's data is not, and the other way round.

A block device (the PV file under a loop device) is one file in this model:
a flush makes every earlier write durable, and any subset of the writes
since the last flush may have landed.

Crash points are the moments just before each flush (fsync, fdatasync,
fsync of a directory) and the end of the log: a crash between two flushes
leaves a subset of what a crash just before the second one can leave. For
each crash point the states are every combination of the pending operations
where there are few (EXHAUSTIVE_MAX), else a seeded random sample of
combinations plus the structured ones (none, all, each alone, all but
each), and torn writes: a prefix of a write cut at a 4 KiB boundary (with
the other pending operations all landed, none, and a sample of subsets),
and (sampled) any subset of its 4 KiB blocks, as a device may persist them.
Every sample comes from one random.Random(seed): a seed names a sweep.
"""

import hashlib
import itertools
import os
import random
import shutil
import struct

REC = struct.Struct("<IIQQQIHH")
MAGIC = 0x31524c50
(R_WRITE, R_TRUNC, R_FALLOC, R_FSYNC, R_FSYNCDIR, R_CREATE, R_MKDIR, R_LINK,
 R_UNLINK, R_RMDIR, R_RENAME, R_SYMLINK) = range(1, 13)
DATA_OPS = (R_WRITE, R_TRUNC, R_FALLOC)
NS_OPS = (R_CREATE, R_MKDIR, R_LINK, R_UNLINK, R_RMDIR, R_RENAME, R_SYMLINK)
FLUSH_OPS = (R_FSYNC, R_FSYNCDIR)
NAMES = {R_WRITE: "write", R_TRUNC: "truncate", R_FALLOC: "fallocate", R_FSYNC: "fsync",
         R_FSYNCDIR: "fsyncdir", R_CREATE: "create", R_MKDIR: "mkdir", R_LINK: "link",
         R_UNLINK: "unlink", R_RMDIR: "rmdir", R_RENAME: "rename", R_SYMLINK: "symlink"}
EXHAUSTIVE_MAX = 10
TORN_CUTS = 16
# per torn prefix, budget // TORN_MIX random combinations of the other pending operations
TORN_MIX = 8
BLOCK = 4096


class Op:
    __slots__ = ("i", "type", "ino", "off", "len", "flags", "a", "b", "data")

    def __repr__(self):
        return "#%d %s ino=%d off=%d len=%d %s %s" % (self.i, NAMES[self.type], self.ino, self.off,
                                                       self.len, self.a or "", self.b or "")


def parse_log(path, start=0):
    ops = []
    with open(path, "rb") as f:
        f.seek(start)
        buf = f.read()
    p = 0
    while p < len(buf):
        magic, t, ino, off, ln, flags, n1, n2 = REC.unpack_from(buf, p)
        assert magic == MAGIC, "corrupt recorder log at %d" % (start + p)
        p += REC.size
        o = Op()
        o.i, o.type, o.ino, o.off, o.len, o.flags = len(ops), t, ino, off, ln, flags
        o.a = buf[p:p + n1].decode() if n1 else None
        p += n1
        o.b = buf[p:p + n2].decode() if n2 else None
        p += n2
        o.data = None
        if t == R_WRITE:
            o.data = bytes(buf[p:p + ln])
            p += ln
        ops.append(o)
    return ops


def parent(name):
    return os.path.dirname(name) or "."


def ns_dirs(o):
    """The directories whose fsync makes namespace op o durable."""
    if o.type in (R_RENAME, R_LINK):
        return {parent(o.a), parent(o.b)}
    return {parent(o.a)}


class Base:
    """The backing directory as it was before the operation: names -> inodes, inode -> bytes."""

    def __init__(self, root):
        self.names = {}     # relpath -> ("f", ino) | ("d", ino) | ("l", target)
        self.content = {}   # ino -> bytes
        for dp, dn, fn in os.walk(root):
            for d in dn:
                p = os.path.join(dp, d)
                self.names[os.path.relpath(p, root)] = ("d", os.lstat(p).st_ino)
            for f in fn:
                p = os.path.join(dp, f)
                st = os.lstat(p)
                rel = os.path.relpath(p, root)
                if os.path.islink(p):
                    self.names[rel] = ("l", os.readlink(p))
                    continue
                self.names[rel] = ("f", st.st_ino)
                if st.st_ino not in self.content:
                    with open(p, "rb") as fh:
                        self.content[st.st_ino] = fh.read()


class State:
    """One crash state: a namespace prefix and, per inode, which data ops landed
    (a torn write (op, spans) lands only the byte spans of its data listed)."""

    __slots__ = ("label", "ns_upto", "data", "torn")

    def __init__(self, label, ns_upto, data, torn=None):
        self.label, self.ns_upto, self.data, self.torn = label, ns_upto, frozenset(data), torn


class Log:
    def __init__(self, ops):
        self.ops = ops
        self.flushes = [o.i for o in ops if o.type in FLUSH_OPS]

    def crash_points(self):
        return self.flushes + [len(self.ops)]

    def pending(self, c):
        """Before op index c: the data ops not yet durable, and the range of
        namespace prefixes (every op index < lo is durable)."""
        synced_ino, synced_dir = {}, {}
        for o in self.ops[:c]:
            if o.type == R_FSYNC:
                synced_ino[o.ino] = o.i
            elif o.type == R_FSYNCDIR:
                synced_dir[o.a] = o.i
        data = [o.i for o in self.ops[:c] if o.type in DATA_OPS and synced_ino.get(o.ino, -1) < o.i]
        durable = [o.i for o in self.ops[:c] if o.type in NS_OPS
                   and all(synced_dir.get(d, -1) > o.i for d in ns_dirs(o))]
        ns = [o.i for o in self.ops[:c] if o.type in NS_OPS]
        lo = durable[-1] + 1 if durable else 0
        # namespace prefixes: "up to and including ns op j" for each j >= lo, or none past lo
        choices = [lo] + [j + 1 for j in ns if j >= lo]
        return data, sorted(set(choices))

    def states(self, c, budget, rng):
        data, ns_choices = self.pending(c)
        durable = {o.i for o in self.ops[:c] if o.type in DATA_OPS} - set(data)
        out = []
        n = len(data) + len(ns_choices) - 1
        if n <= EXHAUSTIVE_MAX:
            for m in ns_choices:
                for k in range(len(data) + 1):
                    for sub in itertools.combinations(data, k):
                        out.append(State("c%d ns%d data%s" % (c, m, list(sub)), m, durable | set(sub)))
        else:
            full = set(data)
            for m in (ns_choices[0], ns_choices[-1]):
                out.append(State("c%d ns%d none" % (c, m), m, durable))
                out.append(State("c%d ns%d all" % (c, m), m, durable | full))
            for m in ns_choices[1:-1]:
                out.append(State("c%d ns%d all" % (c, m), m, durable | full))
            for d in data[:64]:
                out.append(State("c%d only %d" % (c, d), ns_choices[-1], durable | {d}))
                out.append(State("c%d all-but %d" % (c, d), ns_choices[-1], durable | (full - {d})))
            for _ in range(budget):
                m = rng.choice(ns_choices)
                sub = {d for d in data if rng.random() < 0.5}
                out.append(State("c%d ns%d random" % (c, m), m, durable | sub))
        # torn writes: a pending write across a 4 KiB boundary lands as a prefix cut at a
        # boundary (every boundary, at most TORN_CUTS of them spread evenly), with the other
        # pending operations landed or not; and, sampled, as any subset of its 4 KiB blocks
        for d in data:
            o = self.ops[d]
            if o.type != R_WRITE or o.len == 0 or o.off // BLOCK == (o.off + o.len - 1) // BLOCK:
                continue
            first = (o.off // BLOCK + 1) * BLOCK - o.off
            cuts = list(range(first, o.len, BLOCK))
            if len(cuts) > TORN_CUTS:
                cuts = [cuts[i * len(cuts) // TORN_CUTS] for i in range(TORN_CUTS)]
            rest = set(data) - {d}
            for cut in cuts:
                out.append(State("c%d torn %d@%d" % (c, d, cut), ns_choices[-1], durable | rest,
                                 (d, ((0, cut),))))
                out.append(State("c%d torn-alone %d@%d" % (c, d, cut), ns_choices[-1], durable,
                                 (d, ((0, cut),))))
                # and with a sample of the other pending operations landed, at any namespace prefix
                for _ in range(budget // TORN_MIX if rest else 0):
                    sub = {x for x in rest if rng.random() < 0.5}
                    out.append(State("c%d torn-mixed %d@%d" % (c, d, cut), rng.choice(ns_choices),
                                     durable | sub, (d, ((0, cut),))))
            pieces = [0] + list(range(first, o.len, BLOCK)) + [o.len]
            spans = list(zip(pieces, pieces[1:]))
            for _ in range(min(budget, 2 ** len(spans))):
                got = tuple(sp for sp in spans if rng.random() < 0.5)
                sub = {x for x in rest if rng.random() < 0.5}
                out.append(State("c%d blocks %d" % (c, d), rng.choice(ns_choices), durable | sub, (d, got)))
        return out

    # -- building ------------------------------------------------------

    def namespace(self, base, upto):
        names = dict(base.names)
        for o in self.ops[:upto]:
            t = o.type
            if t == R_CREATE:
                names[o.a] = ("f", o.ino)
            elif t == R_MKDIR:
                names[o.a] = ("d", o.ino)
            elif t == R_SYMLINK:
                names[o.a] = ("l", o.b)
            elif t == R_LINK:
                names[o.b] = names[o.a]
            elif t in (R_UNLINK, R_RMDIR):
                names.pop(o.a, None)
            elif t == R_RENAME:
                if o.flags & 2:      # RENAME_EXCHANGE
                    names[o.a], names[o.b] = names[o.b], names[o.a]
                else:
                    v = names.pop(o.a)
                    if v[0] == "d":
                        for k in [k for k in names if k.startswith(o.a + "/")]:
                            names[o.b + k[len(o.a):]] = names.pop(k)
                    names[o.b] = v
        return names

    def content(self, base, ino, applied, torn):
        b = bytearray(base.content.get(ino, b""))
        for o in self.ops:
            if o.ino != ino or o.type not in DATA_OPS:
                continue
            if o.i not in applied and not (torn and torn[0] == o.i):
                continue
            if o.type == R_WRITE:
                spans = ((0, o.len),) if not (torn and torn[0] == o.i) else torn[1]
                for s0, s1 in spans:
                    end = o.off + s1
                    if end > len(b):
                        b.extend(bytes(end - len(b)))
                    b[o.off + s0:end] = o.data[s0:s1]
            elif o.type == R_TRUNC:
                if o.len < len(b):
                    del b[o.len:]
                else:
                    b.extend(bytes(o.len - len(b)))
            elif o.type == R_FALLOC:
                end = o.off + o.len
                if o.flags & 0x12:      # PUNCH_HOLE | ZERO_RANGE: zeros in range
                    b[o.off:min(end, len(b))] = bytes(max(0, min(end, len(b)) - o.off))
                if not o.flags & 1 and end > len(b):     # without KEEP_SIZE the file grows
                    b.extend(bytes(end - len(b)))
        return bytes(b)

    def build(self, base, st, dest, cache, exact=True):
        """Write state st under dest (created) unless dest is None; return its digest:
        of the bytes (exact), or of which operations landed (cheap, for a big device file)."""
        names = self.namespace(base, st.ns_upto)
        h = hashlib.sha1()
        blobs = {}
        for name in sorted(names):
            kind, v = names[name]
            h.update(("%s\0%s\0" % (name, kind)).encode())
            if kind == "f":
                key = (v, frozenset(i for i in st.data if self.ops[i].ino == v),
                       st.torn if st.torn and self.ops[st.torn[0]].ino == v else None)
                if not exact and dest is None:
                    h.update(repr((v, sorted(key[1]), key[2])).encode())
                    continue
                if key not in cache:
                    c = self.content(base, v, key[1], key[2])
                    cache[key] = (c, hashlib.sha1(c).digest())
                blobs[name] = cache[key][0]
                h.update(cache[key][1])
            elif kind == "l":
                h.update(v.encode())
        digest = h.hexdigest()
        if dest is None:
            return digest, None
        if os.path.exists(dest):
            shutil.rmtree(dest)
        os.makedirs(dest)
        for name in sorted(names):
            kind, v = names[name]
            p = os.path.join(dest, name)
            if kind == "d":
                os.makedirs(p, exist_ok=True)
        for name, blob in blobs.items():
            p = os.path.join(dest, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                write_sparse(f, blob)
        for name in names:
            kind, v = names[name]
            if kind == "l":
                os.symlink(v, os.path.join(dest, name))
        return digest, dest


ZERO = bytes(65536)


def write_sparse(f, blob):
    """Write blob leaving 64 KiB runs of zeros as holes (qcow2 files are mostly holes)."""
    mv = memoryview(blob)
    n = len(blob)
    off = 0
    while off < n:
        end = min(off + 65536, n)
        if mv[off:end] != ZERO[:end - off]:
            f.seek(off)
            f.write(mv[off:end])
        off = end
    f.truncate(n)


def sweep(ops, budget, seed):
    """Every crash state of a log, as (crash point, State); deterministic for a seed."""
    log = Log(ops)
    rng = random.Random(seed)
    for c in log.crash_points():
        for st in log.states(c, budget, rng):
            yield log, st


def describe(ops):
    counts = {}
    for o in ops:
        counts[NAMES[o.type]] = counts.get(NAMES[o.type], 0) + 1
    return counts
