#!/usr/bin/python3
"""Seed corpus for fuzz_snapshot: small qemu-made images with internal
snapshots, in fuzz_snapshot's input format (ops byte, grow byte, image).

usage: make_snap_seeds.py OUTDIR"""

import os
import subprocess
import sys
import tempfile


def sh(*argv, cwd):
    subprocess.run(argv, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def main(out):
    os.makedirs(out, exist_ok=True)
    cases = {
        "v2-512": "compat=0.10,cluster_size=512",
        "v3-4k": "cluster_size=4096",
        "ext16k": "extended_l2=on,cluster_size=16k",
        "rc4": "cluster_size=4096,refcount_bits=4",
        "rc64": "cluster_size=512,refcount_bits=64",
        "prealloc": "cluster_size=4096,preallocation=metadata",
    }
    with tempfile.TemporaryDirectory() as d:
        for name, opts in cases.items():
            sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, "i.qcow2", "128k", cwd=d)
            sh("qemu-io", "-f", "qcow2", "-c", "write -P 1 0 40k", "i.qcow2", cwd=d)
            sh("qemu-img", "snapshot", "-c", "a", "i.qcow2", cwd=d)
            sh("qemu-io", "-f", "qcow2", "-c", "write -P 2 8k 20k", "i.qcow2", cwd=d)
            sh("qemu-img", "snapshot", "-c", "b", "i.qcow2", cwd=d)
            with open(os.path.join(d, "i.qcow2"), "rb") as f:
                img = f.read()
            for ops in (1, 2, 4, 15):
                with open(os.path.join(out, f"{name}-{ops}"), "wb") as f:
                    f.write(bytes([ops, 16]) + img)
        sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "s.qcow2", "64k", cwd=d)
        sh("qemu-io", "-f", "qcow2", "-c", "write -P 3 0 64k", "s.qcow2", cwd=d)
        sh("qemu-img", "convert", "-c", "-O", "qcow2", "-o", "cluster_size=4096", "s.qcow2", "c.qcow2", cwd=d)
        sh("qemu-img", "snapshot", "-c", "z", "c.qcow2", cwd=d)
        with open(os.path.join(d, "c.qcow2"), "rb") as f:
            img = f.read()
        with open(os.path.join(out, "compressed-15"), "wb") as f:
            f.write(bytes([15, 16]) + img)


if __name__ == "__main__":
    main(sys.argv[1])
