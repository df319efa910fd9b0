#!/usr/bin/python3
"""Seed corpora made with qemu-img/qemu-io, as small images packed in the
targets' input formats: for fuzz_chain every feature the reader supports;
with --merge, for fuzz_merge, Proxmox-shaped stacks (preallocated and
zero-flagged clusters, zeros over data, data over zeros, compressed) to
merge both ways at every position.

usage: make_seeds.py [--merge] OUTDIR"""

import os
import struct
import subprocess
import sys
import tempfile


def sh(*argv, cwd):
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def pack(layers, fmt=1, tail=b""):
    out = bytes([len(layers) - 1, fmt])
    for data in layers:
        out += struct.pack("<I", len(data)) + data
    return out + tail


def read(d, name):
    with open(os.path.join(d, name), "rb") as f:
        return f.read()


def seeds(d):
    size = "256k"
    tail = struct.pack(">QQQQ", 0, 65536, 4097, 300000)
    # name: (base create opts, overlay opts or None, qemu-io commands base, overlay)
    cases = {
        "v2-512": ("compat=0.10,cluster_size=512", None, ["write -P 1 0 4k"], []),
        "v3-4k": ("cluster_size=4096", "cluster_size=4096",
                  ["write -P 2 0 64k", "write -z 8k 4k"], ["write -P 3 6k 3000"]),
        "ext16k": ("extended_l2=on,cluster_size=16k", "extended_l2=on,cluster_size=16k",
                   ["write -P 4 0 100k"], ["write -P 5 1000 700", "write -z 32k 512"]),
        "prealloc": ("cluster_size=4096,preallocation=metadata",
                     "extended_l2=on,cluster_size=16k,preallocation=metadata",
                     ["write -P 6 0 128k"], ["write -P 7 2048 4096"]),
    }
    for name, (bopts, oopts, bcmds, ocmds) in cases.items():
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", bopts, "L1", size, cwd=d)
        for c in bcmds:
            sh("qemu-io", "-f", "qcow2", "-c", c, "L1", cwd=d)
        if oopts:
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", oopts, "-b", "L1", "-F", "qcow2",
               "L0", size, cwd=d)
            for c in ocmds:
                sh("qemu-io", "-f", "qcow2", "-c", c, "L0", cwd=d)
            yield name, pack([read(d, "L0"), read(d, "L1")], tail=tail)
        else:
            yield name, pack([read(d, "L1")], tail=tail)
    for ctype in ("zlib", "zstd"):
        with open(os.path.join(d, "raw"), "wb") as f:
            f.write(bytes(range(256)) * 1024)
        sh("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o",
           "cluster_size=4096,compression_type=" + ctype, "raw", "L1", cwd=d)
        yield "compressed-" + ctype, pack([read(d, "L1")], tail=tail)
    # raw bottom layer under a qcow2 overlay, and a 3-deep chain
    with open(os.path.join(d, "L2"), "wb") as f:
        f.write(b"\xab" * 65536)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "L2", "-F", "raw",
       "L1", "64k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 9 4k 4k", "L1", cwd=d)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "L1", "-F", "qcow2",
       "L0", "96k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 8 0 512", "L0", cwd=d)
    yield "raw-bottom", pack([read(d, "L0"), read(d, "L1"), read(d, "L2")], tail=tail)


def pack_merge(layers, flags, room=8):
    """fuzz_merge: layer count - 2, flags (bit 0 commit, bits 1-2 child), room in 4 KiB."""
    out = bytes([len(layers) - 2, flags, room])
    for data in layers:
        out += struct.pack("<I", len(data)) + data
    return out


def merge_seeds(d):
    size = "64k"
    stacks = {
        # base opts, base writes, [(overlay opts, writes)]
        "prealloc-zeros": ("cluster_size=4096,preallocation=metadata",
                           ["write -P 1 0 32k", "write -z 4k 8k", "write -z 40k 4k"],
                           [("extended_l2=on,cluster_size=16k", ["write -P 2 4k 2k", "write -z 16k 1k"]),
                            ("cluster_size=4096", ["write -P 3 0 4k", "write -z 8k 4k"])]),
        "zeros-then-data": ("cluster_size=4096", ["write -z 0 64k", "write -P 4 12k 4k"],
                            [("extended_l2=on,cluster_size=16k,preallocation=metadata",
                              ["write -P 5 1k 1k", "write -z 20k 8k"])]),
        "v2-base": ("compat=0.10,cluster_size=512", ["write -P 6 0 8k"],
                    [("cluster_size=512", ["write -P 7 1k 512", "write -z 2k 1k"]),
                     ("cluster_size=1024", ["write -P 8 3k 2k"])]),
    }
    for name, (bopts, bcmds, overlays) in stacks.items():
        for f in os.listdir(d):
            os.unlink(os.path.join(d, f))
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", bopts, "L%d" % len(overlays), size, cwd=d)
        for c in bcmds:
            sh("qemu-io", "-f", "qcow2", "-c", c, "L%d" % len(overlays), cwd=d)
        for i, (oopts, ocmds) in enumerate(overlays):
            name_i, below = "L%d" % (len(overlays) - 1 - i), "L%d" % (len(overlays) - i)
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", oopts, "-b", below, "-F", "qcow2",
               name_i, size, cwd=d)
            for c in ocmds:
                sh("qemu-io", "-f", "qcow2", "-c", c, name_i, cwd=d)
        layers = [read(d, "L%d" % i) for i in range(len(overlays) + 1)]
        for child in range(len(layers) - 1):
            for commit in (0, 1):
                yield "%s-%s%d" % (name, "commit" if commit else "rebase", child), \
                    pack_merge(layers, commit | child << 1)
    # a compressed snapshot under a standard overlay
    with open(os.path.join(d, "raw"), "wb") as f:
        f.write(bytes(range(256)) * 128)
    sh("qemu-img", "convert", "-q", "-c", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=4096",
       "raw", "L1", cwd=d)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "L1", "-F", "qcow2",
       "L0", "32k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 9 4k 4k", "-c", "write -z 12k 4k", "L0", cwd=d)
    for commit in (0, 1):
        yield "compressed-" + ("commit" if commit else "rebase"), \
            pack_merge([read(d, "L0"), read(d, "L1")], commit)
    # a snapshot shorter than the layers around it: its child reads zeros
    # past its end, where the base has data (commit needs one size: rebase)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "L2", "64k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 10 0 64k", "L2", cwd=d)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=512", "-b", "L2", "-F", "qcow2",
       "L1", "22k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 11 20k 2k", "L1", cwd=d)
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "-b", "L1", "-F", "qcow2",
       "L0", "64k", cwd=d)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 12 40k 2k", "L0", cwd=d)
    yield "short-snapshot-rebase", pack_merge([read(d, "L0"), read(d, "L1"), read(d, "L2")], 0, room=16)


def main():
    merge = sys.argv[1] == "--merge"
    out = sys.argv[-1]
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        for name, data in (merge_seeds(d) if merge else seeds(d)):
            with open(os.path.join(out, name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
