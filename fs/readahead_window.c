#include "fs/readahead_window.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>

#include "common/log.h"
#include "fs/options.h"

static const char *window_mountpoint;
static unsigned window_kb;

static void set_window(void)
{
	char path[64];
	FILE *f;
	dev_t dev = 0;
	/* from mountinfo: a stat(2) of our own root would wait for our own reply */
	int e = fs_options_mounted_here(window_mountpoint, NULL, 0, &dev) ? 0 : -ENOENT;

	if (e == 0) {
		snprintf(path, sizeof(path), "/sys/class/bdi/%u:%u/read_ahead_kb", major(dev), minor(dev));
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
		vlog(LOG_DEBUG, "readahead window of %s (bdi %u:%u): %u KiB", window_mountpoint, major(dev), minor(dev),
		     window_kb);
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
