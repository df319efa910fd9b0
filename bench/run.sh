#!/bin/sh
# make bench: everything in bench.py; root, loop devices, lvm2, FUSE, qemu, fio.
exec /usr/bin/python3 "$(dirname "$0")/bench.py" "$@"
