#!/usr/bin/python3
"""vstorfs benchmarks, side by side with the reference readers, in one run.

Builds its own fixtures on loop devices, prints one table (ratios against
qemu-storage-daemon and against a trivial passthrough FUSE server, the
ceiling for this kernel) and writes bench/results.json. See bench/README.md.
"""

import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests"))

import conftest  # noqa: E402
from lvmlib import MiB, GiB, run  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
results = {}


def log(msg):
    print(msg, flush=True)


def median_time(fn, runs=RUNS):
    times = []
    for _ in range(runs):
        t = time.monotonic()
        fn()
        times.append(time.monotonic() - t)
    return statistics.median(times)


def dd_direct(path, size):
    run(["dd", "if=" + path, "of=/dev/null", "bs=1M", "iflag=direct", "count=%d" % (size // MiB)])


def fio_iops(path, jobs):
    out = run(["fio", "--name=r", "--filename=" + path, "--rw=randread", "--bs=4k", "--direct=1",
               "--numjobs=%d" % jobs, "--time_based", "--runtime=5", "--ioengine=psync",
               "--group_reporting", "--output-format=json", "--readonly"]).stdout
    return json.loads(out)["jobs"][0]["read"]["iops"]


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024


class Background:
    """A server process mounting something, stopped by umount."""

    def __init__(self, argv, mnt, ready):
        self.mnt = mnt
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conftest.wait_for(ready, 20)

    def stop(self):
        subprocess.run(["umount", self.mnt], capture_output=True)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def build_chain(env, size=2 * GiB):
    """A 2 GiB Proxmox chain: 64k base, two extended-L2 128k overlays; data in every
    layer, zero ranges, unallocated ranges."""
    vg = env.vg(npvs=1, pv_size=8 * GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-100-disk-0.qcow2", size)
    v.write(0, 700 * MiB, 0x11)
    v.write(1200 * MiB, 200 * MiB, 0x12)
    v.snapshot("s1")
    v.write(500 * MiB, 300 * MiB, 0x21)
    v.io("write -z 100M 50M")
    v.snapshot("s2")
    v.write(1500 * MiB, 300 * MiB, 0x31)
    v.write(3 * MiB + 4096, 5 * MiB, 0x32)
    ch.sync()
    return vg, ch, v


def bench_reads(env):
    log("building the 2 GiB 3-layer chain ...")
    vg, ch, v = build_chain(env)
    size = v.size
    ch.refresh_reference_layers()       # LV bytes as files: qemu-storage-daemon reads these
    raw = os.path.join(env.dir, "ceiling.raw")
    run(["qemu-img", "convert", "-O", "raw", v.name, raw], cwd=ch.refdir)
    for f in os.listdir(ch.refdir):     # warm every source in the page cache
        run(["cat", os.path.join(ch.refdir, f)], check=False)
    run(["dd", "if=" + vg.loops[0], "of=/dev/null", "bs=4M"])

    d = env.mount(vg.name, vg.loops, rescan=2)
    targets = {"vstorfs": os.path.join(d.mnt, vg.name, v.name, "current", "disk.raw")}

    qsd_file = os.path.join(env.dir, "qsd.raw")
    open(qsd_file, "w").close()
    spec = json.dumps({"driver": "qcow2", "node-name": "top",
                       "file": {"driver": "file", "filename": os.path.join(ch.refdir, v.name)}})
    qsd = Background(["qemu-storage-daemon", "--blockdev", spec, "--export",
                      "type=fuse,id=e,node-name=top,mountpoint=" + qsd_file],
                     qsd_file, lambda: os.path.getsize(qsd_file) == size)
    targets["qemu-storage-daemon"] = qsd_file

    pt_bin = os.path.join(env.dir, "passthrough")
    run(["sh", "-c", "cc -O2 -Wall -Wextra -Werror $(pkg-config --cflags fuse3) -o %s %s "
         "$(pkg-config --libs fuse3)" % (pt_bin, os.path.join(HERE, "passthrough.c"))])
    pt_mnt = env.mountpoint("pt")
    pt = Background([pt_bin, raw, pt_mnt], pt_mnt, lambda: os.path.ismount(pt_mnt))
    targets["passthrough"] = os.path.join(pt_mnt, "disk.raw")
    try:
        for name, path in targets.items():
            dd_direct(path, 64 * MiB)   # warm-up
            t = median_time(lambda: dd_direct(path, size))
            results.setdefault("seq_read_MBps", {})[name] = size / t / 1e6
            log("  seq read %-20s %7.0f MB/s" % (name, size / t / 1e6))
        for jobs in (1, 4):
            for name, path in targets.items():
                iops = statistics.median(fio_iops(path, jobs) for _ in range(RUNS))
                results.setdefault("randread_4k_iops_%dj" % jobs, {})[name] = iops
                log("  random 4k, %d reader(s) %-20s %8.0f IOPS" % (jobs, name, iops))
    finally:
        qsd.stop()
        pt.stop()
    d.stop()


def bench_sparse_copy(env):
    """A mostly-empty 2 GiB disk: cp --sparse=always (SEEK_DATA/SEEK_HOLE) vs dd."""
    vg = env.vg(npvs=1, pv_size=8 * GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-200-disk-0.qcow2", 2 * GiB)
    v.write(0, 16 * MiB, 0x44)
    v.snapshot("s1")
    v.write(GiB, 16 * MiB, 0x45)
    ch.sync()
    d = env.mount(vg.name, vg.loops)
    src = os.path.join(d.mnt, vg.name, v.name, "s1", "disk.raw")
    dst = os.path.join(env.dir, "copy.raw")

    def cp():
        run(["cp", "--sparse=always", src, dst])
        os.unlink(dst)

    def dd():
        run(["dd", "if=" + src, "of=" + dst, "bs=1M", "iflag=direct"])
        os.unlink(dst)
    results["sparse_copy_s"] = {"cp --sparse=always": median_time(cp), "dd full copy": median_time(dd)}
    log("  copy of a 2 GiB disk holding 16 MiB: cp --sparse=always %.2f s, dd %.2f s" % (
        results["sparse_copy_s"]["cp --sparse=always"], results["sparse_copy_s"]["dd full copy"]))
    d.stop()


def bench_many_disks(env, ndisks=200, nsnaps=5):
    log("building a VG with %d disks x %d snapshots ..." % (ndisks, nsnaps))
    vg = env.vg(npvs=1, pv_size=8 * GiB, extent_size="1m", metadatasize="64m")
    ch = env.chain(vg)
    t = time.monotonic()
    vols = []
    for i in range(ndisks):
        v = ch.qcow2("vm-%d-disk-0.qcow2" % (1000 + i), MiB, opts="cluster_size=65536")
        ch.lv_slack[v.name] = 0
        for s in range(nsnaps):
            lv = v.snapshot("s%d" % s, overlay_opts="cluster_size=65536")
            ch.lv_slack[lv] = 0
            ch.lv_slack[v.name] = 0
        vols.append(v)
    ch.sync()
    results["fixture_many_disks_s"] = time.monotonic() - t
    mnt = env.mountpoint("many")
    helper = os.path.join(REPO, "mount.vstorfs")
    opts = "devices=" + ",".join(vg.loops)
    first = os.path.join(mnt, vg.name, vols[0].name, "current", "disk.raw")

    def ttfb():
        t0 = time.monotonic()
        run([helper, vg.name, mnt, "-o", opts])
        with open(first, "rb") as f:
            f.read(4096)
        dt = time.monotonic() - t0
        run(["umount", mnt])
        conftest.wait_for(lambda: not os.path.ismount(mnt), 10)
        return dt
    results["time_to_first_byte_s"] = statistics.median(ttfb() for _ in range(RUNS))
    log("  mount + first 4 KiB read (%d disks, %d LVs): %.2f s" % (
        ndisks, ndisks * (nsnaps + 1), results["time_to_first_byte_s"]))

    d = env.mount(vg.name, vg.loops, name="many2", rescan=60)
    results["ls_R_s"] = median_time(lambda: run(["ls", "-R", d.mnt]))
    log("  ls -R of %d disks x %d snapshots: %.2f s" % (ndisks, nsnaps, results["ls_R_s"]))
    for n in (20, 100):
        for v in vols[:n]:
            with open(os.path.join(d.mnt, vg.name, v.name, "current", "disk.raw"), "rb") as f:
                f.read()
        results["rss_MiB_after_%d_disks" % n] = rss_mib(d.proc.pid)
        log("  daemon RSS after reading %d disks: %.1f MiB" % (n, results["rss_MiB_after_%d_disks" % n]))
    d.stop()


def proxmox_snapshot_cost(vg, ch, v, snap, files):
    """The Proxmox sequence for a snapshot: lvrename, lvcreate, qemu-img create. Without
    device-mapper qemu-img cannot write the LV, so it writes a file of the same size."""
    lv = v.snap_lvname(snap)
    t = time.monotonic()
    vg.lvrename(v.name, lv)
    os.rename(os.path.join(files, v.name), os.path.join(files, lv))
    measure = json.loads(run(["qemu-img", "measure", "--output=json", "-O", "qcow2", "-o",
                              "extended_l2=on,cluster_size=128k", "--size", str(v.size)]).stdout)
    vg.lvcreate(v.name, (measure["fully-allocated"] + vg.extent_size - 1) // vg.extent_size
                * vg.extent_size, tags=("pve-vm-100", "pve-" + v.name))
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
         "extended_l2=on,cluster_size=128k,preallocation=metadata", "-b", lv, "-F", "qcow2",
         v.name, str(v.size)], cwd=files)
    return time.monotonic() - t


def bench_snapshots(env):
    log("building a 1 GiB disk with 100 MiB in the layer to merge ...")
    vg = env.vg(npvs=1, pv_size=8 * GiB)
    ch = env.chain(vg)
    v = ch.qcow2("vm-100-disk-0.qcow2", GiB)
    v.write(0, 400 * MiB, 0x11)
    v.snapshot("s1")
    v.write(300 * MiB, 100 * MiB, 0x22)
    ch.sync()
    files = os.path.join(env.dir, "pve-files")
    os.makedirs(files)
    for lv in vg.lv_names():
        vg.copy_lv_to_file(lv, os.path.join(files, lv))
    d = env.mount(vg.name, vg.loops, rescan=60)
    vol = os.path.join(d.mnt, vg.name, v.name)
    t = time.monotonic()
    os.mkdir(os.path.join(vol, "s2"))
    results.setdefault("mkdir_s", {})["vstorfs"] = time.monotonic() - t
    t = time.monotonic()
    os.rmdir(os.path.join(vol, "s2"))     # empty child: nothing to merge
    results.setdefault("rmdir_empty_child_s", {})["vstorfs"] = time.monotonic() - t
    t = time.monotonic()
    os.rmdir(os.path.join(vol, "s1"))     # commit 100 MiB into the base
    results.setdefault("rmdir_100MiB_s", {})["vstorfs"] = time.monotonic() - t
    d.stop()

    # The same two operations the Proxmox way, on a copy of the chain as it was.
    vg2, ch2, v2 = None, env.chain(env.vg(npvs=1, pv_size=8 * GiB)), None
    v2 = ch2.qcow2("vm-100-disk-0.qcow2", GiB)
    v2.write(0, 400 * MiB, 0x11)
    v2.snapshot("s1")
    v2.write(300 * MiB, 100 * MiB, 0x22)
    ch2.sync()
    vg2 = ch2.vg
    results["mkdir_s"]["proxmox (lvm2 + qemu-img)"] = proxmox_snapshot_cost(vg2, ch2, v2, "s2", ch2.dir)
    # delete s1 (the oldest) by committing its child, the s2 layer holding 100 MiB
    t = time.monotonic()
    child = v2.snap_lvname("s2")
    run(["qemu-img", "commit", "-q", child], cwd=ch2.dir)
    vg2.lvremove(child)
    vg2.lvrename(v2.snap_lvname("s1"), child)
    results["rmdir_100MiB_s"]["proxmox (lvm2 + qemu-img)"] = time.monotonic() - t
    for k in ("mkdir_s", "rmdir_100MiB_s"):
        log("  %-16s %s" % (k, ", ".join("%s %.2f s" % kv for kv in results[k].items())))


def table():
    lines = ["", "%-34s %12s %12s %12s %10s %10s" % ("benchmark", "vstorfs", "qemu-sd", "ceiling",
                                                     "x qemu-sd", "% ceiling")]
    for key, unit in (("seq_read_MBps", "MB/s"), ("randread_4k_iops_1j", "IOPS"),
                      ("randread_4k_iops_4j", "IOPS")):
        r = results.get(key)
        if not r:
            continue
        v, q, c = r["vstorfs"], r["qemu-storage-daemon"], r["passthrough"]
        lines.append("%-34s %12.0f %12.0f %12.0f %9.2fx %9.0f%%" % (
            "%s (%s)" % (key, unit), v, q, c, v / q, 100 * v / c))
    for key in ("mkdir_s", "rmdir_100MiB_s"):
        r = results.get(key, {})
        if "proxmox (lvm2 + qemu-img)" in r:
            lines.append("%-34s %11.2fs %-28s ratio %.2f" % (
                key, r["vstorfs"], "proxmox %.2fs" % r["proxmox (lvm2 + qemu-img)"],
                r["vstorfs"] / r["proxmox (lvm2 + qemu-img)"]))
    for key in ("time_to_first_byte_s", "ls_R_s", "rss_MiB_after_20_disks",
                "rss_MiB_after_100_disks", "rmdir_empty_child_s"):
        if key in results:
            val = results[key] if not isinstance(results[key], dict) else results[key]["vstorfs"]
            lines.append("%-34s %12.2f" % (key, val))
    if "sparse_copy_s" in results:
        s = results["sparse_copy_s"]
        lines.append("%-34s %11.2fs   dd %.2fs" % ("sparse copy 2 GiB (cp)", s["cp --sparse=always"],
                                                    s["dd full copy"]))
    return "\n".join(lines)


def main():
    if os.geteuid() != 0:
        sys.exit("bench: needs root (loop devices, LVM, FUSE)")
    conftest.require_daemon = lambda: os.path.join(REPO, "vstorfs")
    t0 = time.monotonic()
    for step in (bench_reads, bench_sparse_copy, bench_snapshots, bench_many_disks):
        env = conftest.Env()
        try:
            step(env)
        finally:
            env.close()
    results["total_s"] = time.monotonic() - t0
    print(table())
    with open(os.path.join(HERE, "results.json"), "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    print("\nwritten to bench/results.json (%.0f s in all)" % results["total_s"])


if __name__ == "__main__":
    main()
