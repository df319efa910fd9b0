"""examples/: the incremental backup and file restore scripts, run as a user would."""

import os
import re
import shutil
import subprocess

import pytest

from conftest import MiB, Daemon, REPO, run
from test_backup import make_partitioned_disk
from test_snapshots import VOL, build_volume, mount

EXAMPLES = os.path.join(REPO, "examples")


def backup(vol_dir, target):
    r = subprocess.run([os.path.join(EXAMPLES, "incremental-backup.sh"), vol_dir, target],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"copied (\d+) of (\d+) bytes", r.stdout)
    assert m, r.stdout
    return int(m.group(1)), int(m.group(2))


def test_incremental_backup_copies_only_changes(env):
    vg, ch = build_volume(env, snaps=("s1",))
    d = mount(env, vg)
    vol_dir = os.path.join(d.mnt, vg.name, VOL)
    target = os.path.join(env.dir, "backup.raw")
    first, size = backup(vol_dir, target)
    assert 0 < first <= size
    snaps = [v for v in os.listdir(vol_dir) if v.startswith("backup-")]
    assert len(snaps) == 1
    # the VM writes 1 MiB; the next run copies about that, not the disk
    d.stop()
    v = ch.volumes[VOL]
    lv = v.name        # now the overlay the script's mkdir made
    vg._layout = None  # the daemon changed the VG behind the helper's back
    src = os.path.join(env.dir, "current-layer.qcow2")
    vg.copy_lv_to_file(lv, src)
    # whole 128k clusters: qemu needs no backing layer for this write
    spec = '{"driver":"qcow2","file":{"driver":"file","filename":"%s"},"backing":null}' % src
    run(["qemu-io", "-c", "write -P 0x5e %d %d" % (5 * MiB, MiB), "json:" + spec])
    vg.copy_file_to_lv(src, lv, zero_rest=False)
    d2 = mount(env, vg, name="mnt2")
    vol_dir = os.path.join(d2.mnt, vg.name, VOL)
    second, _ = backup(vol_dir, target)
    assert MiB <= second <= 2 * MiB, second
    snaps2 = [v for v in os.listdir(vol_dir) if v.startswith("backup-")]
    assert len(snaps2) == 1 and snaps2 != snaps, "the previous snapshot was not rotated"
    with open(target, "rb") as f:
        data = f.read()
    assert data[5 * MiB:6 * MiB] == b"\x5e" * MiB


def test_file_restore_with_and_without_root(env):
    if not shutil.which("sfdisk") or not shutil.which("debugfs"):
        pytest.skip("needs sfdisk and debugfs")
    vg = env.vg(pv_size=512 * MiB)
    ch = env.chain(vg)
    disk, parts = make_partitioned_disk(env.dir, "gpt")
    v = ch.import_raw_as_qcow2("vm-130-disk-0.qcow2", disk)
    v.snapshot("nightly")
    ch.sync()
    d = Daemon(vg.name, env.mountpoint(), vg.loops)
    env.daemons.append(d)
    d.wait_mounted()
    view = os.path.join(d.mnt, vg.name, "vm-130-disk-0.qcow2", "nightly")
    script = os.path.join(EXAMPLES, "file-restore.sh")
    for mode, extra in (("loop", {}), ("debugfs", {"RESTORE_WITHOUT_MOUNT": "1"})):
        dest = os.path.join(env.dir, "hostname-" + mode)
        r = subprocess.run([script, view, "2", "/hostname", dest], capture_output=True, text=True,
                           env=dict(os.environ, **extra), timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        assert mode in r.stdout
        with open(dest) as f:
            assert f.read() == "host-gpt-2\n"
