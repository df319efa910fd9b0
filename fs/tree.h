/*
 * tree: what a node of MOUNT/<store>/<volume>/<view>/... names in the
 * newest published catalog, and one table row per node kind saying how
 * that kind resolves, what its children and its listing are, and how big
 * it is. The FUSE operations (lookup.c, listing.c, read_path.c,
 * snapshot_ops.c) ask the table instead of switching on the kind.
 *
 * Helpers here return 0 or a negative errno and never reply.
 */
#ifndef VSTORFS_FS_TREE_H
#define VSTORFS_FS_TREE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#include "fs/catalog.h"
#include "fs/inode.h"

#define DISK_FILE "disk.raw"
#define ALLOCATED_FILE "allocated.json"
#define CHANGED_DIR "changed-since"
#define PARTS_DIR ".partitions"
#define JSON_SUFFIX ".json"

struct fs_options;
struct partition;

extern const struct fs_options *fs_tree_opts; /* set once by fs_tree_init, before the session */
void fs_tree_init(const struct fs_options *o);

/* What a node names in the current catalog; holds a reference on st. */
struct target {
	struct fs_node *node;
	struct fs_store *st;
	const struct store_volume *vol;
	const struct store_view *view;
	const struct store_view *older; /* CHANGED: the view it compares with */
	int part;                       /* PART: the partition number */
};

/* The names a directory lists, in order. */
struct fs_names {
	char **names;
	int n;
};

int fs_names_add(struct fs_names *e, const char *fmt, const char *arg, int num);
void fs_names_free(struct fs_names *e);

/* One node kind. A NULL callback: the kind has none of that (not a
 * directory, no step of its own in resolving, no size). */
struct fs_kind {
	bool file;      /* a regular file (else a directory) */
	bool text;      /* a file whose bytes are generated JSON (else a view reader's) */
	/* One step of resolve(): fill in what node n adds to t (its ancestors done). */
	int (*resolve)(struct target *t, const struct fs_node *n);
	/* The child `name` of a resolved directory of this kind. */
	int (*child)(const struct target *t, const char *name, struct fs_node **out);
	/* What readdir lists. */
	int (*list)(const struct target *t, struct fs_names *e);
	/* Bytes of the file, and bytes its data occupies (st_blocks). */
	void (*size)(const struct target *t, uint64_t *size, uint64_t *data);
};

const struct fs_kind *fs_kind(enum fs_node_kind k);

/* n against the newest catalog: -ENOENT gone, -ESTALE same name, other bytes. */
int fs_resolve(struct fs_node *n, struct target *t);
void fs_target_release(struct target *t);
void fs_fill_attr(const struct target *t, struct stat *st);
double fs_entry_timeout(const struct target *t);
int fs_child_node(const struct target *t, const char *name, struct fs_node **out);
int fs_list_names(const struct target *t, struct fs_names *e);
/* The partition t->part of t->view. */
int fs_find_partition(const struct target *t, struct partition *p);

#endif
