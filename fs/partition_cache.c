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

#define CACHE_SLOTS 128
#define PROBE_WAIT_S 5
#define CURRENT_TTL_S 2

struct slot {
	char *key;
	struct partition_table t;
	bool forever;
	time_t made;
};

static const char *mnt;
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;  /* one probe at a time; before cache_lock */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct slot slots[CACHE_SLOTS];   /* cache_lock */
static unsigned next_victim;             /* cache_lock */

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

static int lookup(const char *key, struct partition_table *out)
{
	time_t now = time(NULL);
	int rc = -ENOENT;

	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SLOTS && rc == -ENOENT; i++)
		if (slots[i].key && !strcmp(slots[i].key, key) &&
		    (slots[i].forever || now - slots[i].made < CURRENT_TTL_S))
			rc = table_copy(&slots[i].t, out);
	pthread_mutex_unlock(&cache_lock);
	return rc;
}

static void insert(char *key, const struct partition_table *t, bool forever)
{
	struct slot *s = NULL;

	pthread_mutex_lock(&cache_lock);
	for (int i = 0; i < CACHE_SLOTS && !s; i++)
		if (!slots[i].key || !strcmp(slots[i].key, key))
			s = &slots[i];
	if (!s)
		s = &slots[next_victim++ % CACHE_SLOTS];
	free(s->key);
	partitions_release(&s->t);
	s->key = key;
	if (table_copy(t, &s->t) < 0) {
		free(s->key);
		s->key = NULL;
	}
	s->forever = forever;
	s->made = time(NULL);
	pthread_mutex_unlock(&cache_lock);
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
	if ((rc = lookup(key, out)) != -ENOENT) {
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
	rc = lookup(key, out);
	if (rc == -ENOENT) {
		rc = probe(disk_ino, view, out);
		if (rc == 0)
			insert(key, out, view->snapshot);
		else
			partitions_release(out);
		key = rc == 0 ? NULL : key;
	}
	pthread_mutex_unlock(&probe_lock);
	free(key);
	return rc;
}
