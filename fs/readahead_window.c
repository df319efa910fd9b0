#include "fs/readahead_window.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

static const char *window_mountpoint;
static unsigned window_kb;

/* The device of the topmost fuse.vstorfs mount at mountpoint, from
 * mountinfo: a stat(2) of our own root would wait for our own reply. */
static int mount_device(const char *mountpoint, unsigned *maj, unsigned *min)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL;
	size_t cap = 0;
	int found = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		char mnt[4096], fstype[256];
		unsigned a, b;
		char *sep = strstr(line, " - ");

		/* id parent maj:min root MOUNTPOINT opts [optional...] - FSTYPE ... ;
		 * a mountpoint with an escaped character never matches, and then
		 * the window stays the kernel's */
		if (!sep || sscanf(line, "%*s %*s %u:%u %*s %4095s", &a, &b, mnt) != 3 ||
		    sscanf(sep + 3, "%255s", fstype) != 1)
			continue;
		if (!strcmp(mnt, mountpoint) && !strcmp(fstype, "fuse.vstorfs")) {
			*maj = a;
			*min = b;
			found = 0;
		}
	}
	free(line);
	fclose(f);
	return found;
}

static void set_window(void)
{
	unsigned maj, min;
	char path[64];
	FILE *f;
	int e = mount_device(window_mountpoint, &maj, &min);

	if (e == 0) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", maj, min);
		f = fopen(path, "w");
		if (!f)
			e = -errno;
		else if (fprintf(f, "%u\n", window_kb) < 0)
			e = -EIO;
		if (f && fclose(f) && !e)
			e = -errno;
	}
	if (e)
		vlog(LOG_WARNING, "readahead_kb=%u not set on %s: %s; buffered readers of snapshot views get the "
		     "kernel's 128 KiB window", window_kb, window_mountpoint, strerror(-e));
	else
		vlog(LOG_DEBUG, "readahead window of %s (bdi %u:%u): %u KiB", window_mountpoint, maj, min, window_kb);
}

void fs_readahead_window_set(const char *mountpoint, unsigned kb)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;

	if (!kb)
		return;
	window_mountpoint = mountpoint;
	window_kb = kb;
	pthread_once(&once, set_window);
}
