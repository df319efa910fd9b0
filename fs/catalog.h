/*
 * catalog: what the tree shows, as immutable per-VG snapshots.
 *
 * A struct fs_vg is built by one scan of one VG (lvm_vg_scan +
 * pve_catalog_build + a header probe of every volume and snapshot LV) and
 * never changes afterwards, except for the lazily opened chains of its
 * views. A background thread checks each VG's metadata sequence number
 * every rescan_secs seconds and publishes a new fs_vg when it moved; FUSE
 * threads take references and never block on lvm2.
 *
 * Locks: catalog_lock (in catalog.c) protects the published array of VGs;
 * fs_vg.chain_lock protects the fs_view.chain pointers of that VG. Never
 * hold catalog_lock while taking a chain_lock.
 */
#ifndef VSTORFS_FS_CATALOG_H
#define VSTORFS_FS_CATALOG_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "chain/chain.h"
#include "lvm/lvm.h"

struct fs_options;

struct fs_view {
	const char *name;            /* "current" or the snapshot name */
	const struct lvm_lv *top;    /* the LV this view's chain starts at */
	enum chain_layer_format fmt; /* what the top must be (from the LV name) */
	uint64_t size;               /* virtual size; the LV size if the header is unreadable */
	int64_t mtime;               /* snapshot: creation of the layer above; current: its LV's */
	uint64_t used;               /* st_blocks in bytes: the view's own layers' LV space, at most size */
	bool snapshot;
	struct chain *chain;         /* opened on first use; chain_lock */
};

struct fs_volume {
	const struct pve_volume *vol;
	const char *name;
	int nviews;                  /* views[0] is current */
	struct fs_view *views;
};

struct fs_vg {
	char *name;
	uint64_t seqno;
	struct lvm_vg *lvm;
	struct pve_catalog *cat;
	int nvols;
	struct fs_volume *vols;      /* sorted by name, as cat->vols */
	pthread_mutex_t chain_lock;
	int refs;                    /* atomic */
};

int fs_catalog_start(const struct fs_options *o);  /* first scan, synchronous */
int fs_catalog_start_rescan(void);                 /* after daemonizing: threads do not survive fork */
void fs_catalog_stop(void);
/* Snapshot operations run between hold and release: one at a time, and the
 * periodic rescan never publishes a half-done state. */
void fs_catalog_hold(void);
void fs_catalog_release(void);
/* Rescan VG `name` now if its metadata changed (after our own snapshot operations). */
int fs_catalog_refresh_vg(const char *name);
/* The same without asking for the seqno first: for callers that just changed the VG. */
int fs_catalog_rescan_vg(const char *name);

/* Bumped whenever a snapshot is published or withdrawn: open files re-resolve their view. */
uint64_t fs_catalog_generation(void);

/* Published VG names, sorted; NULL-terminated copy, free with lvm_free_names. */
char **fs_catalog_vg_names(void);
/* A reference to the newest snapshot of VG `name`, or NULL. */
struct fs_vg *fs_catalog_get_vg(const char *name);
void fs_vg_get(struct fs_vg *vg);
void fs_vg_put(struct fs_vg *vg);

const struct fs_volume *fs_vg_find_volume(const struct fs_vg *vg, const char *name);
struct fs_view *fs_volume_find_view(const struct fs_volume *vol, const char *name);

/* The view's chain, opened on first use; a new reference for the caller. */
int fs_view_chain(struct fs_vg *vg, struct fs_view *view, const char *volname, struct chain **out);

#endif
