/*
 * inode: stable inode numbers for the tree's paths.
 *
 * A node is created on first lookup of (parent, name) and never freed, so a
 * struct fs_node pointer stays valid for the life of the mount without
 * locking. A view node also carries an identity (store_view.ident): when the same path later names
 * different bytes (a
 * snapshot removed and one of the same name taken again), lookup hands out
 * a new inode, so the kernel's page cache of the old one is never served
 * for the new one.
 */
#ifndef VSTORFS_FS_INODE_H
#define VSTORFS_FS_INODE_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

/* FILE is disk.raw; the others are the backup files of a view (fs/node_kinds.c). */
enum fs_node_kind {
	FS_NODE_ROOT, FS_NODE_STORE, FS_NODE_VOLUME, FS_NODE_VIEW, FS_NODE_FILE,
	FS_NODE_ALLOCATED, FS_NODE_CHANGED_DIR, FS_NODE_CHANGED, FS_NODE_PART,
	FS_NODE_PARTS_DIR, /* <view>/.partitions: holds the PART files, hidden from readdir */
	FS_NODE_BYINO,  /* the daemon's own door to disk.raw by inode (fs/partition_cache.h) */
};

struct fs_node {
	fuse_ino_t ino;
	struct fs_node *parent;  /* NULL for the root */
	enum fs_node_kind kind;
	char *name;
	char *ident;             /* views: the store's persistent identity of the view; else NULL */
	struct fs_node *hash_next; /* inode_lock: the (parent, name) hash */
	struct fs_node *ino_next;  /* inode_lock: the inode number hash */
	struct stat *attr_at_open; /* fs/lookup.c attr_lock: files, as last opened; else NULL */
};

int fs_inode_init(void);
/* The node for ino, or NULL if no lookup ever produced it. */
struct fs_node *fs_inode_find(fuse_ino_t ino);
/* The node for (parent, name, ident), created if needed; NULL on ENOMEM. */
struct fs_node *fs_inode_child(struct fs_node *parent, enum fs_node_kind kind,
			       const char *name, const char *ident);

#endif
