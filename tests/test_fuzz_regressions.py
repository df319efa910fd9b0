"""Every input the fuzzers ever failed on (fuzz/regressions/ for the reader,
fuzz/regressions-merge/ for the merge writer), and the seed corpora,
replayed through the same entry points built with gcc + ASan/UBSan. The
merge target aborts on its own oracle too (a surviving view that changed,
an image written that qemu-img check's rules refuse)."""

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {  # target: (replay binary, regressions dir, make_seeds.py flags)
    "chain": ("fuzz-replay", "regressions", []),
    "merge": ("fuzz-merge-replay", "regressions-merge", ["--merge"]),
}


@pytest.fixture(scope="module", params=list(TARGETS))
def target(request):
    binary, regressions, seed_flags = TARGETS[request.param]
    path = os.path.join(REPO, "build", binary)
    if not os.access(path, os.X_OK):
        r = subprocess.run(["make", "-C", REPO, "build/" + binary], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return path, os.path.join(REPO, "fuzz", regressions), seed_flags


def run_replay(replay, files):
    r = subprocess.run([replay] + files, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in r.stderr, r.stderr[-4000:]
    assert r.stdout.count("ok ") == len(files)


def test_regressions_replay_clean(target):
    replay, regressions, _ = target
    files = sorted(glob.glob(os.path.join(regressions, "*")))
    files = [f for f in files if os.path.isfile(f) and not f.endswith(".md")]
    if not files:
        pytest.skip("no fuzzer findings recorded")
    run_replay(replay, files)


def test_seed_corpus_replays_clean(target, tmp_path):
    replay, _, seed_flags = target
    subprocess.run([sys.executable if os.path.basename(sys.executable).startswith("python3")
                    else "/usr/bin/python3", os.path.join(REPO, "fuzz", "make_seeds.py"),
                    *seed_flags, str(tmp_path)], check=True)
    files = sorted(str(p) for p in tmp_path.iterdir())
    assert len(files) >= 7
    run_replay(replay, files)
