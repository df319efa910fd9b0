/*
 * node_kinds: the table of fs/tree.h, one row per node kind:
 *
 *   root          /               lists the stores
 *   store         <store>         lists its volumes
 *   volume        <volume>        lists its views (current, then snapshots)
 *   view          <view>          disk.raw, allocated.json, changed-since/,
 *                                 .partitions/ (listed only with partitions=visible)
 *   disk          disk.raw        the view's bytes
 *   allocated     allocated.json  its extent map, as JSON
 *   changed dir   changed-since/  one <older>.json per older snapshot
 *   changed       <older>.json    what changed since that snapshot
 *   parts dir     .partitions/    part<N>.raw per partition
 *   part          part<N>.raw     a partition's bytes
 *   by-ino        (hidden)        the daemon's own door to disk.raw (lookup.c)
 */
#include "fs/tree.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fs/data_bytes.h"
#include "fs/extent_cache.h"
#include "fs/options.h"
#include "fs/partition_cache.h"

/* Views of a volume are current first, then snapshots oldest first: the
 * views older than v are the snapshots before it (every one for current). */
static bool is_older(const struct store_volume *vol, const struct store_view *older,
		     const struct store_view *v)
{
	int o = older - vol->views, i = v - vol->views;

	return o >= 1 && (i == 0 || o < i);
}

/* "s1.json" in changed-since/ -> the view s1, if it is older than t->view. */
static const struct store_view *older_view(const struct target *t, const char *name)
{
	size_t n = strlen(name), m = strlen(JSON_SUFFIX);
	const struct store_view *o;
	char *base;

	if (n <= m || strcmp(name + n - m, JSON_SUFFIX) || !(base = strndup(name, n - m)))
		return NULL;
	o = store_volume_find_view(t->vol, base);
	free(base);
	return o && is_older(t->vol, o, t->view) ? o : NULL;
}

/* "part3.raw" -> 3; 0 when the name is not a partition file's. */
static int part_number(const char *name)
{
	int n = 0, len = 0;

	if (sscanf(name, "part%d.raw%n", &n, &len) != 1 || name[len] || n <= 0 || name[4] < '1' || name[4] > '9')
		return 0;
	return n;
}

/* The partition table of t's view (t: the view or anything below it). */
static int view_partitions(const struct target *t, struct partition_table *pt)
{
	struct fs_node *view = t->node, *disk;

	while (view && view->kind != FS_NODE_VIEW)
		view = view->parent;
	disk = view ? fs_inode_child(view, FS_NODE_FILE, DISK_FILE, NULL) : NULL;
	if (!disk)
		return -ENOMEM;
	return fs_partitions(t->st->store->name, t->vol->name, t->view, disk->ino, pt);
}

int fs_find_partition(const struct target *t, struct partition *p)
{
	struct partition_table pt;
	int rc = view_partitions(t, &pt);

	if (rc < 0)
		return rc;
	rc = -ENOENT;
	for (int i = 0; i < pt.n; i++) {
		if (pt.parts[i].number == t->part) {
			*p = pt.parts[i];
			rc = 0;
		}
	}
	partitions_release(&pt);
	return rc;
}

/* A new child node, or -ENOMEM. */
static int made(struct fs_node *n, struct fs_node **out)
{
	if (!n)
		return -ENOMEM;
	*out = n;
	return 0;
}

/* ---- root ---- */

static int root_child(const struct target *t, const char *name, struct fs_node **out)
{
	struct fs_store *st = fs_catalog_get_store(name);

	if (!st)
		return -ENOENT;
	fs_store_put(st);
	return made(fs_inode_child(t->node, FS_NODE_STORE, name, NULL), out);
}

static int root_list(const struct target *t, struct fs_names *e)
{
	char **names = fs_catalog_store_names();
	int rc = 0;

	(void)t;
	if (!names)
		return -ENOMEM;
	for (int i = 0; names[i] && !rc; i++)
		rc = fs_names_add(e, "%s", names[i], 0);
	fs_catalog_free_names(names);
	return rc;
}

/* ---- store ---- */

static int store_resolve(struct target *t, const struct fs_node *n)
{
	t->st = fs_catalog_get_store(n->name);
	return t->st ? 0 : -ENOENT;
}

static int store_child(const struct target *t, const char *name, struct fs_node **out)
{
	if (!store_listing_find(t->st->listing, name))
		return -ENOENT;
	return made(fs_inode_child(t->node, FS_NODE_VOLUME, name, NULL), out);
}

static int store_list(const struct target *t, struct fs_names *e)
{
	int rc = 0;

	for (int i = 0; i < t->st->listing->nvols && !rc; i++)
		rc = fs_names_add(e, "%s", t->st->listing->vols[i].name, 0);
	return rc;
}

/* ---- volume ---- */

static int volume_resolve(struct target *t, const struct fs_node *n)
{
	t->vol = store_listing_find(t->st->listing, n->name);
	return t->vol ? 0 : -ENOENT;
}

static int volume_child(const struct target *t, const char *name, struct fs_node **out)
{
	const struct store_view *v = store_volume_find_view(t->vol, name);

	if (!v)
		return -ENOENT;
	return made(fs_inode_child(t->node, FS_NODE_VIEW, name, v->ident), out);
}

static int volume_list(const struct target *t, struct fs_names *e)
{
	int rc = 0;

	for (int i = 0; i < t->vol->nviews && !rc; i++)
		rc = fs_names_add(e, "%s", t->vol->views[i].name, 0);
	return rc;
}

/* ---- view ---- */

static int view_resolve(struct target *t, const struct fs_node *n)
{
	t->view = store_volume_find_view(t->vol, n->name);
	if (!t->view)
		return -ENOENT;
	/* Same name, other bytes (a snapshot deleted and taken again; merges
	 * keep idents): the old inode is gone. ESTALE makes the kernel look the
	 * path up again (and find the new inode), and an open handle keep the
	 * reader of the bytes it had. */
	return strcmp(t->view->ident, n->ident) ? -ESTALE : 0;
}

static const struct { const char *name; enum fs_node_kind kind; } view_files[] = {
	{ DISK_FILE, FS_NODE_FILE },
	{ ALLOCATED_FILE, FS_NODE_ALLOCATED },
	{ CHANGED_DIR, FS_NODE_CHANGED_DIR },
	{ PARTS_DIR, FS_NODE_PARTS_DIR }, /* last: listed only with partitions=visible */
};

#define NVIEW_FILES (int)(sizeof(view_files) / sizeof(view_files[0]))

static int view_child(const struct target *t, const char *name, struct fs_node **out)
{
	for (int i = 0; i < NVIEW_FILES; i++)
		if (!strcmp(name, view_files[i].name))
			return made(fs_inode_child(t->node, view_files[i].kind, name, NULL), out);
	return -ENOENT;
}

static int view_list(const struct target *t, struct fs_names *e)
{
	/* .partitions is hidden as ZFS hides .zfs: a walk would read every byte twice. */
	int n = fs_tree_opts->partitions_visible ? NVIEW_FILES : NVIEW_FILES - 1, rc = 0;

	(void)t;
	for (int i = 0; i < n && !rc; i++)
		rc = fs_names_add(e, "%s", view_files[i].name, 0);
	return rc;
}

/* ---- disk.raw ---- */

static void disk_size(const struct target *t, uint64_t *size, uint64_t *data)
{
	*size = t->view->size;
	*data = t->view->used ? t->view->used : fs_view_data_bytes(t->st, t->vol, t->view);
}

/* ---- the JSON files ---- */

static int changed_resolve(struct target *t, const struct fs_node *n)
{
	t->older = older_view(t, n->name);
	return t->older && !strcmp(t->older->ident, n->ident) ? 0 : -ENOENT;
}

static void json_size(const struct target *t, uint64_t *size, uint64_t *data)
{
	struct blob *b;

	if (fs_extents_json(t->st, t->vol, t->view, t->older, &b) == 0)
		*size = *data = b->len;
	blob_put(b);
}

static int changed_dir_child(const struct target *t, const char *name, struct fs_node **out)
{
	const struct store_view *o = older_view(t, name);

	if (!o)
		return -ENOENT;
	return made(fs_inode_child(t->node, FS_NODE_CHANGED, name, o->ident), out);
}

static int changed_dir_list(const struct target *t, struct fs_names *e)
{
	int rc = 0;

	for (int i = 0; i < t->vol->nviews && !rc; i++)
		if (is_older(t->vol, &t->vol->views[i], t->view))
			rc = fs_names_add(e, "%s" JSON_SUFFIX, t->vol->views[i].name, 0);
	return rc;
}

/* ---- partitions ---- */

static int part_resolve(struct target *t, const struct fs_node *n)
{
	t->part = part_number(n->name);
	return 0;
}

static void part_size(const struct target *t, uint64_t *size, uint64_t *data)
{
	struct partition p;

	if (fs_find_partition(t, &p) == 0) {
		*size = p.length;
		*data = fs_data_bytes(t->st, t->vol, t->view, p.start, p.length);
	}
}

static int parts_dir_child(const struct target *t, const char *name, struct fs_node **out)
{
	struct partition p;
	struct target pt = *t;

	if ((pt.part = part_number(name)) <= 0 || fs_find_partition(&pt, &p))
		return -ENOENT;
	return made(fs_inode_child(t->node, FS_NODE_PART, name, NULL), out);
}

static int parts_dir_list(const struct target *t, struct fs_names *e)
{
	struct partition_table pt;
	int rc = 0;

	/* A disk whose table cannot be read now just lists no partition files. */
	if (view_partitions(t, &pt) == 0) {
		for (int i = 0; i < pt.n && !rc; i++)
			rc = fs_names_add(e, "part%d.raw", NULL, pt.parts[i].number);
		partitions_release(&pt);
	}
	return rc;
}

static const struct fs_kind kinds[] = {
	[FS_NODE_ROOT] = { .child = root_child, .list = root_list },
	[FS_NODE_STORE] = { .resolve = store_resolve, .child = store_child, .list = store_list },
	[FS_NODE_VOLUME] = { .resolve = volume_resolve, .child = volume_child, .list = volume_list },
	[FS_NODE_VIEW] = { .resolve = view_resolve, .child = view_child, .list = view_list },
	[FS_NODE_FILE] = { .file = true, .size = disk_size },
	[FS_NODE_ALLOCATED] = { .file = true, .text = true, .size = json_size },
	[FS_NODE_CHANGED_DIR] = { .child = changed_dir_child, .list = changed_dir_list },
	[FS_NODE_CHANGED] = { .file = true, .text = true, .resolve = changed_resolve, .size = json_size },
	[FS_NODE_PART] = { .file = true, .resolve = part_resolve, .size = part_size },
	[FS_NODE_PARTS_DIR] = { .child = parts_dir_child, .list = parts_dir_list },
	[FS_NODE_BYINO] = { 0 }, /* looked up by lookup.c alone; lists nothing */
};

const struct fs_kind *fs_kind(enum fs_node_kind k)
{
	return &kinds[k];
}
