/* partition_cache: see partition_cache.h. */
#include "fs/partition_cache.h"

#include <errno.h>
#include <inttypes.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/slot_cache.h"

#define PROBE_WAIT_S 5
#define CURRENT_TTL_S 2

static const char *mnt;                /* constant after fs_partitions_init (before the session) */
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;  /* one probe at a time; before cache.lock */

void fs_partitions_init(const char *mountpoint)
{
	mnt = mountpoint;
}

static int table_copy(const struct partition_table *from, struct partition_table *to)
{
	*to = *from;
	to->parts = NULL;
	if (!from->n)
		return 0;
	to->parts = malloc(from->n * sizeof(*to->parts));
	if (!to->parts)
		return -ENOMEM;
	memcpy(to->parts, from->parts, from->n * sizeof(*to->parts));
	return 0;
}

/* The answers: malloc'd tables, handed out as copies. */
static int table_get(void *value, void *out)
{
	return table_copy(value, out);
}

static void table_free(void *value)
{
	partitions_release(value);
	free(value);
}

static struct slot_cache_slot slots[128]; /* cache.lock */
static struct slot_cache cache = SLOT_CACHE(slots, CURRENT_TTL_S, table_get, table_free);

static void keep(char *key, const struct partition_table *t, bool forever)
{
	struct partition_table *kept = malloc(sizeof(*kept));

	if (kept && table_copy(t, kept) == 0) {
		slot_cache_put(&cache, key, kept, forever);
		return;
	}
	free(kept);
	free(key);
}

static int probe(uint64_t disk_ino, const struct store_view *view, struct partition_table *t)
{
	char *path;
	int fd, rc;

	if (!mnt)
		return -EOPNOTSUPP;
	if (asprintf(&path, "%s/" FS_BYINO_DIR "/%" PRIx64, mnt, disk_ino) < 0)
		return -ENOMEM;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		vlog(LOG_WARNING, "%s: cannot open it to find partitions: %s", path, strerror(errno));
		free(path);
		return rc;
	}
	rc = partitions_read(fd, view->size, t);
	close(fd);
	free(path);
	return rc;
}

int fs_partitions(const char *store, const char *volume, const struct store_view *view,
		  uint64_t disk_ino, struct partition_table *out)
{
	struct timespec until;
	char *key;
	int rc;

	memset(out, 0, sizeof(*out));
	if (asprintf(&key, "%s\n%s\n%s\n%s", store, volume, view->name, view->ident) < 0)
		return -ENOMEM;
	if ((rc = slot_cache_get(&cache, key, out)) != -ENOENT) {
		free(key);
		return rc;
	}
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += PROBE_WAIT_S;
	if (pthread_mutex_timedlock(&probe_lock, &until)) {
		free(key);
		return -EAGAIN;
	}
	/* Another thread may have probed it while this one waited. */
	rc = slot_cache_get(&cache, key, out);
	if (rc == -ENOENT) {
		rc = probe(disk_ino, view, out);
		if (rc == 0)
			keep(key, out, view->snapshot);
		else
			partitions_release(out);
		key = rc == 0 ? NULL : key;
	}
	pthread_mutex_unlock(&probe_lock);
	free(key);
	return rc;
}
