/*
 * dir_recover: at mount, before the first scan, finish or undo every
 * operation a crash interrupted. The intent files (".vstorfs-intent-<vol>")
 * say which; dir_snapshot.c and dir_isnap_ops.c know how. Leftovers of the
 * atomic small-file writes ("*.part") go too.
 */
#include "dir/dir_snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"
#include "store/pve_cluster.h"

/* The intent file's bytes, all of them (a NUL inside is the decoder's to reject). */
static int read_intent(int rootfd, const char *rel, char *buf, size_t cap, size_t *len)
{
	struct stat st;
	int fd = dir_open_regular(rootfd, rel, O_RDONLY, &st);
	ssize_t n = 0;

	*len = 0;
	if (fd < 0)
		return fd;
	while (*len < cap && (n = read(fd, buf + *len, cap - *len)) > 0)
		*len += (size_t)n;
	close(fd);
	return n < 0 ? -EIO : 0;
}

int dir_recover_one(struct store *s, const struct dir_op_paths *np)
{
	struct dir_store_priv *p = s->priv;
	char *text = malloc(INTENT_TEXT_MAX + 2);
	struct intent *in = malloc(sizeof(*in));
	size_t len = 0;
	int r = in && text ? read_intent(p->rootfd, np->intent, text, INTENT_TEXT_MAX + 1, &len) : -ENOMEM;

	if (text)
		text[len] = 0;
	if (r == 0)
		r = intent_decode(text, len, in);
	if (r == 0) {
		r = dir_recover_chain(s, np, in);
		if (r == 1)
			r = dir_recover_isnap(s, np, in);
	} else if (r == -EINVAL || r == -ENOENT) {
		vlog(LOG_ERR, "%s/%s: %s intent \"%.60s\": leaving it for an administrator", s->name,
		     np->intent, r == -ENOENT ? "unknown" : "malformed", text);
		r = -EIO;
	}
	free(in);
	free(text);
	return r;
}

static int recover_dir(struct store *s, const char *dir)
{
	struct dir_store_priv *p = s->priv;
	int fd = dir_opendir_fd(p->rootfd, dir), rc = 0;
	struct dirent *de;
	char **names = NULL;
	int n = 0;
	DIR *d;

	if (fd < 0)
		return 0;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);

		if (!strncmp(de->d_name, ".vstorfs-", 9) && l > 5 && !strcmp(de->d_name + l - 5, ".part")) {
			unlinkat(dirfd(d), de->d_name, 0);
			continue;
		}
		if (strncmp(de->d_name, DIR_INTENT_PREFIX, strlen(DIR_INTENT_PREFIX)) ||
		    l <= strlen(DIR_INTENT_PREFIX) + strlen(DIR_INTENT_SUFFIX) ||
		    strcmp(de->d_name + l - strlen(DIR_INTENT_SUFFIX), DIR_INTENT_SUFFIX))
			continue;
		char **v = realloc(names, (size_t)(n + 1) * sizeof(*v));

		if (!v || !(v[n] = strdup(de->d_name))) {
			names = v ? v : names;
			rc = -ENOMEM;
			break;
		}
		names = v;
		n++;
	}
	closedir(d);
	for (int i = 0; i < n; i++) {
		struct dir_op_paths np;
		char rel[PATH_MAX];
		int r;

		snprintf(rel, sizeof(rel), "%s%s%s", dir, dir[0] ? "/" : "", names[i]);
		{
			char vol[NAME_MAX + 1];
			size_t vl = strlen(names[i]) - strlen(DIR_INTENT_PREFIX) - strlen(DIR_INTENT_SUFFIX);

			snprintf(vol, sizeof(vol), "%.*s", (int)vl, names[i] + strlen(DIR_INTENT_PREFIX));
			r = dir_op_paths(&np, dir, vol);
			/* On a shared storage, another node's VM is that node's to finish. */
			if (r == 0 && pve_lv_owned_elsewhere(s->name, vol)) {
				free(names[i]);
				continue;
			}
		}
		if (r == 0)
			r = dir_recover_one(s, &np);
		if (r < 0) {
			vlog(LOG_ERR, "%s/%s: recovering an interrupted snapshot operation failed: %s",
			     s->name, rel, strerror(-r));
			rc = -EIO;
		}
		free(names[i]);
	}
	free(names);
	return rc;
}

int dir_recover(struct store *s)
{
	struct dir_op op;
	struct dir_scan sc;
	int rc;

	if (s->cfg && s->cfg->read_only)
		return 0;
	rc = dir_op_begin(&op, s, false);
	if (rc == 0)
		rc = dir_layout_scan(s, &sc);
	if (rc == 0) {
		for (int i = 0; i < sc.ndirs; i++)
			if (recover_dir(s, sc.dirs[i]) < 0)
				rc = -EIO;
		dir_scan_release(&sc);
	}
	dir_op_end(&op);
	return rc;
}

int dir_op_settle(struct dir_op *op, const struct store_volume **vol, const char *volume)
{
	const struct dir_vpriv *vp = (*vol)->priv;
	const char *base = strrchr(vp->rel, '/');
	struct dir_op_paths n;
	int rc;

	if (dir_op_paths(&n, vp->dir, base ? base + 1 : vp->rel) || !dir_exists(op->p->rootfd, n.intent))
		return 0;
	vlog(LOG_NOTICE, "%s/%s: an interrupted snapshot operation is pending: finishing it first",
	     op->s->name, n.vol);
	if ((rc = dir_file_busy(op->s, vp->rel)))
		return rc;
	if (dir_recover_one(op->s, &n) < 0) {
		vlog(LOG_ERR, "%s/%s: the interrupted snapshot operation cannot be finished yet",
		     op->s->name, n.vol);
		return -EBUSY;
	}
	op->s->ops->listing_free(op->s, op->l);
	op->l = NULL;
	if ((rc = op->s->ops->scan(op->s, &op->l)))
		return rc;
	*vol = dir_find_volume(op->l, volume);
	return *vol ? 0 : -ENOENT;
}
