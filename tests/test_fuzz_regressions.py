"""Every input the fuzzer ever crashed on (fuzz/regressions/), and the seed
corpus, replayed through the same entry point built with gcc + ASan/UBSan."""

import glob
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPLAY = os.path.join(REPO, "build", "fuzz-replay")


@pytest.fixture(scope="module")
def replay():
    if not os.access(REPLAY, os.X_OK):
        r = subprocess.run(["make", "-C", REPO, "build/fuzz-replay"], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    return REPLAY


def run_replay(replay, files):
    r = subprocess.run([replay] + files, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=1"))
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    for marker in ("AddressSanitizer", "runtime error:", "LeakSanitizer"):
        assert marker not in r.stderr, r.stderr[-4000:]
    assert r.stdout.count("ok ") == len(files)


def test_regressions_replay_clean(replay):
    files = sorted(glob.glob(os.path.join(REPO, "fuzz", "regressions", "*")))
    files = [f for f in files if os.path.isfile(f) and not f.endswith(".md")]
    if not files:
        pytest.skip("no fuzzer findings recorded")
    run_replay(replay, files)


def test_seed_corpus_replays_clean(replay, tmp_path):
    subprocess.run([sys.executable if os.path.basename(sys.executable).startswith("python3")
                    else "/usr/bin/python3", os.path.join(REPO, "fuzz", "make_seeds.py"),
                    str(tmp_path)], check=True)
    files = sorted(str(p) for p in tmp_path.iterdir())
    assert len(files) >= 7
    run_replay(replay, files)
