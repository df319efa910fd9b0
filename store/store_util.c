/* Lookups over a store listing and the rules every store shares. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "common/log.h"
#include "store/store.h"

#define SNAP_NAME_MAX 40

bool store_snapshot_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || n > SNAP_NAME_MAX || !strcmp(s, "current"))
		return false;
	if (!((s[0] >= 'A' && s[0] <= 'Z') || (s[0] >= 'a' && s[0] <= 'z')))
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

bool store_view_name_ok(const char *s)
{
	return s[0] && strcmp(s, ".") && strcmp(s, "..") && strcmp(s, "current") && !strchr(s, '/');
}

int store_lock_file(const char *path, int timeout_s)
{
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0) {
		int rc = -errno;

		vlog(LOG_ERR, "lock %s: %s", path, strerror(errno));
		return rc;
	}
	for (int waited = 0;; waited++) {
		if (flock(fd, LOCK_EX | LOCK_NB) == 0)
			return fd;
		if (errno != EWOULDBLOCK || waited >= timeout_s * 10) {
			int err = errno == EWOULDBLOCK ? EBUSY : errno;

			vlog(LOG_ERR, "lock %s: %s", path,
			     err == EBUSY ? "held by another process (timed out)" : strerror(err));
			close(fd);
			return -err;
		}
		usleep(100000);
	}
}

static int vol_cmp(const void *key, const void *elem)
{
	return strcmp(key, ((const struct store_volume *)elem)->name);
}

const struct store_volume *store_listing_find(const struct store_listing *l, const char *volume)
{
	return l->nvols ? bsearch(volume, l->vols, l->nvols, sizeof(*l->vols), vol_cmp) : NULL;
}

const struct store_view *store_volume_find_view(const struct store_volume *v, const char *name)
{
	for (int i = 0; i < v->nviews; i++)
		if (!strcmp(v->views[i].name, name))
			return &v->views[i];
	return NULL;
}
