/*
 * readahead_window: the kernel's readahead window of this mount.
 *
 * A FUSE mount's readahead is capped at its bdi's read_ahead_kb, 128 KiB
 * by default whatever max_readahead the daemon asks for at INIT: a
 * buffered reader of a snapshot view then has one or two 128 KiB requests
 * in flight, each a round trip to the store. The window is the bdi's,
 * /sys/class/bdi/MAJ:MIN/read_ahead_kb, as an administrator would set it;
 * the INIT reply lowers it again, so it is set after INIT, at the first
 * open.
 */
#ifndef VSTORFS_READAHEAD_WINDOW_H
#define VSTORFS_READAHEAD_WINDOW_H

/* Once per process: set the window of the vstorfs mount at mountpoint to
 * kb KiB (0: leave the kernel's). A failure (not root) is logged once and
 * changes nothing else. */
void fs_readahead_window_set(const char *mountpoint, unsigned kb);

#endif
