/*
 * rbd: the RBD store. One store per "rbd:<pool>[/<namespace>]" source,
 * over librados and librbd. Its volumes are the pool's (namespace's) RBD
 * images, its views "current" and one per user snapshot.
 *
 *   rbd_conn.c     cluster connection: config, bounded timeouts, errnos
 *   rbd_list.c     scan (cached per image by header version) and changed()
 *   rbd_reader.c   view_reader: aio reads, map, changed via diff_iterate2
 *   rbd_readahead.c  whole objects read ahead of a snapshot view's stream
 *   rbd_snap.c     mkdir/rmdir: snap create, unprotect + snap rm
 *   rbd_store.c    the store_ops table, rbd_store_open
 */
#ifndef VSTORFS_RBD_H
#define VSTORFS_RBD_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <rados/librados.h>
#include <rbd/librbd.h>

#include "store/store.h"

#define RBD_SNAP_NONE UINT64_MAX  /* the view is "current" */

/* One image as the last scan saw it (shared by listings: refcounted). */
struct rbd_snap_meta {
	uint64_t id;
	char *name;
	uint64_t size;
	int64_t mtime;
	int32_t mtime_nsec; /* rbd_snap_get_timestamp's nanoseconds */
	char *ident;
};

struct rbd_image_meta {
	int refs;           /* atomic */
	char *id;           /* format 1 images have none: "<name>.rbd" */
	bool v1;
	char *name;
	uint64_t header_ver; /* rados version of rbd_header.<id> when read */
	uint64_t size;
	int64_t ctime, mtime;
	char *ident;
	int nsnaps;
	struct rbd_snap_meta *snaps; /* by id: oldest first */
};

struct rbd_store {
	struct store base;
	rados_t cluster;
	rados_ioctx_t io;
	char *pool, *ns;     /* ns "" = the default namespace */
	pthread_mutex_t lock; /* cache */
	struct rbd_image_meta **cache; /* sorted by id */
	int ncache;
	int last_changed_err; /* to log a failing changed() once */
};

/* What a listing keeps: the images it shows, by name, and the header
 * versions it was built from (sorted by id) for changed(). */
struct rbd_listing_priv {
	int nimgs;
	struct rbd_image_meta **imgs;
};

static inline struct rbd_store *rbd_of(struct store *s)
{
	return (struct rbd_store *)s;
}

/* rbd_conn.c */
int rbd_conn_open(const struct store_config *cfg, const char *pool, const char *ns,
		  rados_t *cluster, rados_ioctx_t *io);
int rbd_errno(int r);           /* librbd/librados -errno to what the store returns */
const char *rbd_user(const struct store_config *cfg);

/* rbd_list.c */
int rbd_scan(struct store *s, struct store_listing **out);
void rbd_listing_free(struct store *s, struct store_listing *l);
int rbd_changed(struct store *s, const struct store_listing *l);
void rbd_image_meta_put(struct rbd_image_meta *m);
void rbd_cache_free(struct rbd_store *rs);

/* rbd_reader.c */
int rbd_open_view(struct store *s, const struct store_listing *l, const struct store_volume *vol,
		  const struct store_view *view, struct view_reader **out);

/* rbd_readahead.c: one per snapshot view; all calls thread-safe */
struct rbd_readahead;
struct rbd_readahead *rbd_readahead_new(rbd_image_t img, uint64_t piece, uint64_t size);
/* A read of [off, off + len) arrives: when it continues a stream, read the
 * objects after it ahead. */
void rbd_readahead_note(struct rbd_readahead *ra, uint64_t off, size_t len);
/* Copy [off, off + len), inside one object, from a slot holding it (waiting
 * for its read): 1 when done, 0 when no slot serves it (read it yourself). */
int rbd_readahead_copy(struct rbd_readahead *ra, void *dst, uint64_t off, size_t len);
/* After every read of the image has returned; waits for those ahead. */
void rbd_readahead_free(struct rbd_readahead *ra);

/* rbd_snap.c */
int rbd_snapshot_take(struct store *s, const char *volume, const char *snap,
		      const struct store_progress *p);
int rbd_snapshot_remove(struct store *s, const char *volume, const char *snap,
			const struct store_progress *p);

/* rbd_store.c */
/* The registry entry (rbd_kind.c): rbd:POOL[/NAMESPACE], ceph_*=. */
extern const struct store_kind rbd_store_kind;

/* The ceph_*= options: NULL = librados' default, "admin", none, the configuration's. */
struct rbd_opts {
	char *conf, *id, *keyring, *mon_host;
};
/* cfg's (cfg may be NULL), or the defaults; never NULL. */
const struct rbd_opts *rbd_opts_of(const struct store_config *cfg);

int rbd_store_open(const char *spec, const struct store_config *cfg, struct store **out);

#endif
