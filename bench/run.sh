#!/bin/sh
# make bench: run the vstorfs benchmarks (see bench/README.md). Needs root.
set -e
cd "$(dirname "$0")/.."
export LVM_SUPPRESS_FD_WARNINGS=1
exec /usr/bin/python3 bench/bench.py "$@"
