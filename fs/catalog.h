/*
 * catalog: what the tree shows, as immutable per-store listings.
 *
 * A struct fs_store pairs one store with one listing it produced; it never
 * changes afterwards, except for the lazily opened readers of its views.
 * A background thread asks each store every rescan_secs seconds whether
 * anything changed and publishes a new fs_store when it did; FUSE threads
 * take references and never wait for a store's scan.
 *
 * Locks, in order (catalog.c says why per store, and what the audit of
 * each store's scan found):
 *   1. a store's op lock: its snapshot operations and the scans that
 *      publish its listing, one at a time; other stores never wait for it
 *   2. set_lock: the store set and the op locks' list
 *   3. catalog_lock: the published array
 * fs_store.reader_lock is taken alone (never with catalog_lock).
 * Below 1 only: an LVM store's lvm shell lock (lvm/lvm_shell.h), taken by
 * that store's own calls under its op lock (its open, before any other
 * thread sees it, and start-up recovery need none); "all"'s VG list, under
 * 2, uses the shell of no store, which no store's call takes.
 */
#ifndef VSTORFS_FS_CATALOG_H
#define VSTORFS_FS_CATALOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "store/store.h"

struct fs_options;

struct fs_store {
	struct store *store;           /* constant */
	struct store_listing *listing; /* constant: never changes once published */
	int *first_view;               /* constant; per volume: its views' index in readers */
	struct view_reader **readers;  /* reader_lock; opened on first use */
	pthread_mutex_t reader_lock;
	int refs;                      /* atomic */
	bool resynced;                 /* atomic: fs_catalog_resync ran for this listing */
};

int fs_catalog_start(const struct fs_options *o);  /* open, recover and scan every store */
int fs_catalog_start_rescan(void);                 /* after daemonizing: threads do not survive fork */
void fs_catalog_stop(void);

/* Bumped whenever a listing is published or withdrawn: open files re-resolve their view. */
uint64_t fs_catalog_generation(void);

/* Published store names, sorted; NULL-terminated copy, free with fs_catalog_free_names. */
char **fs_catalog_store_names(void);
void fs_catalog_free_names(char **names);
/* A reference to the newest listing of store `name`, or NULL. */
struct fs_store *fs_catalog_get_store(const char *name);
void fs_store_get(struct fs_store *s);
void fs_store_put(struct fs_store *s);

/* The view's reader, opened on first use; a new reference for the caller. */
int fs_store_view_reader(struct fs_store *s, const struct store_volume *vol,
			 const struct store_view *view, struct view_reader **out);

/* A view of s opened at a size its listing does not show: rescan that
 * store now (catalog.c says when it does not). */
void fs_catalog_resync(struct fs_store *s, const struct store_view *view, uint64_t opened_size);

/* Snapshot operations: the shared checks (store/snapshot_rules.h,
 * fs/snapshot_checks.h), then the store's, under the store's op lock;
 * then its new listing is published. A negative errno (store.h's list). */
int fs_catalog_snapshot_take(const char *store, const char *volume, const char *snap);
int fs_catalog_snapshot_remove(const char *store, const char *volume, const char *snap);

#endif
