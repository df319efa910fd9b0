/*
 * tree: resolving a node against the newest catalog, and the attributes
 * every node's stat shows (see tree.h; the rows are node_kinds.c's).
 *
 * Every file's stat follows one contract (store/store.h): st_blocks counts
 * the bytes its data occupies, the times of anything under current are the
 * time of the stat, those of a snapshot when it was taken, to the
 * nanosecond.
 */
#include "fs/tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fs/options.h"

const struct fs_options *fs_tree_opts;
static time_t mount_time; /* set once by fs_tree_init, before the session */

void fs_tree_init(const struct fs_options *o)
{
	fs_tree_opts = o;
	mount_time = time(NULL);
}

int fs_names_add(struct fs_names *e, const char *fmt, const char *arg, int num)
{
	char **grown = realloc(e->names, (e->n + 1) * sizeof(*grown));
	int rc;

	if (!grown)
		return -ENOMEM;
	e->names = grown;
	rc = arg ? asprintf(&e->names[e->n], fmt, arg) : asprintf(&e->names[e->n], fmt, num);
	if (rc < 0)
		return -ENOMEM;
	e->n++;
	return 0;
}

void fs_names_free(struct fs_names *e)
{
	for (int i = 0; i < e->n; i++)
		free(e->names[i]);
	free(e->names);
}

void fs_target_release(struct target *t)
{
	fs_store_put(t->st);
	t->st = NULL;
}

int fs_resolve(struct fs_node *n, struct target *t)
{
	struct fs_node *path[6];
	int depth = 0;

	memset(t, 0, sizeof(*t));
	t->node = n;
	for (struct fs_node *p = n; p && p->kind != FS_NODE_ROOT; p = p->parent)
		path[depth++] = p;
	for (int i = depth - 1; i >= 0; i--) {
		const struct fs_kind *k = fs_kind(path[i]->kind);
		int rc = k->resolve ? k->resolve(t, path[i]) : 0;

		if (rc) {
			fs_target_release(t);
			return rc;
		}
	}
	return 0;
}

/*
 * current has no time that stands for its bytes: a VM may have written
 * just now, through a descriptor it keeps open (no inotify event, no
 * mtime change on the image file), into LV extents or over librbd. So its
 * mtime and ctime are the time of the stat: a backup tool comparing
 * (size, mtime, ctime) never takes it for unchanged. A snapshot's are
 * when it was taken, at the store's precision (store.h).
 */
static struct timespec view_time(const struct store_view *v)
{
	struct timespec ts = { 0 };

	if (v->snapshot && v->mtime) {
		ts.tv_sec = v->mtime;
		ts.tv_nsec = v->mtime_nsec >= 0 && v->mtime_nsec < 1000000000 ? v->mtime_nsec : 0;
	} else {
		clock_gettime(CLOCK_REALTIME, &ts);
	}
	return ts;
}

void fs_fill_attr(const struct target *t, struct stat *st)
{
	const struct fs_kind *k = fs_kind(t->node->kind);
	uint64_t size = 0, data = 0;

	memset(st, 0, sizeof(*st));
	st->st_ino = t->node->ino;
	st->st_uid = fs_tree_opts->uid;
	st->st_gid = fs_tree_opts->gid;
	/* cp and friends size their buffers by it: 1 MiB reads are what the
	 * reply path serves best, above all without a page cache between. */
	st->st_blksize = 1 << 20;
	st->st_mtim.tv_sec = mount_time;
	if (k->file) {
		st->st_mode = S_IFREG | (0444 & ~fs_tree_opts->umask);
		st->st_nlink = 1;
		if (k->size)
			k->size(t, &size, &data);
		if (data > size)
			data = size;
		st->st_size = size;
		st->st_blocks = (data + 511) / 512;
		st->st_mtim = view_time(t->view);
	} else {
		st->st_mode = S_IFDIR | (0555 & ~fs_tree_opts->umask);
		st->st_nlink = 2;
		if (t->view)
			st->st_mtim = view_time(t->view);
		else if (t->vol && t->vol->mtime)
			st->st_mtim.tv_sec = t->vol->mtime;
	}
	st->st_atim = st->st_ctim = st->st_mtim;
}

double fs_entry_timeout(const struct target *t)
{
	/* Snapshot views never change while they exist; everything else may. */
	return t->view && t->view->snapshot ? 10.0 : 1.0;
}

int fs_child_node(const struct target *t, const char *name, struct fs_node **out)
{
	const struct fs_kind *k = fs_kind(t->node->kind);

	return k->child ? k->child(t, name, out) : -ENOTDIR;
}

int fs_list_names(const struct target *t, struct fs_names *e)
{
	const struct fs_kind *k = fs_kind(t->node->kind);

	return k->list ? k->list(t, e) : -ENOTDIR;
}
