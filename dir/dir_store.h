/*
 * dir_store: a directory of VM disk images as a store (store/store.h).
 *
 *   int dir_store_open(const char *path, const struct store_config *cfg, struct store **out);
 *
 * The store's top-level name is the path's basename. Layouts (Proxmox,
 * Nova, any other directory), views and snapshot operations: README.md,
 * "Directory stores".
 */
#ifndef VSTORFS_DIR_STORE_H
#define VSTORFS_DIR_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "dir/dir_internal.h"
#include "store/store.h"

int dir_store_open(const char *path, const struct store_config *cfg, struct store **out);

enum dir_layout { DIR_LAYOUT_PLAIN, DIR_LAYOUT_PVE, DIR_LAYOUT_NOVA };
enum dir_vfmt { DIR_VFMT_RAW, DIR_VFMT_QCOW2, DIR_VFMT_BAD };

/* What storage.cfg says about the store's path (dir, nfs, cifs, ... sections). */
struct dir_pve_cfg {
	char storeid[128];      /* "" when no storage names this path */
	char type[32];
	bool shared;            /* "shared 1" or a network storage type */
	bool volume_chain;      /* "snapshot-as-volume-chain 1" */
	char preallocation[16]; /* "" = Proxmox's default for qcow2 ("metadata") */
};
int dir_pve_cfg_find(const char *cfgpath, const char *path, const char *realpath,
		     struct dir_pve_cfg *out);

/* One volume found by a layout scan (layouts.c). */
struct dir_cand {
	char *name;     /* volume name in the tree */
	char *rel;      /* its top file below the root */
	int vmid;       /* Proxmox: images/<vmid>, else -1 */
	bool pve;       /* Proxmox naming: snap-<snap>-<name> files are its views */
	bool qcow2_name;/* the name says qcow2 (".qcow2"): a non-qcow2 header is broken, not raw */
};

struct dir_scan {
	enum dir_layout layout;
	int ncands;
	struct dir_cand *cands;   /* sorted by name, unique */
	int ndirs;
	char **dirs;              /* directories looked at (for change detection) */
};

/* store_volume.priv and store_view.priv of a directory store's listings. */
struct dir_vpriv {
	char *rel;              /* the volume's top file */
	char *dir;              /* its directory ("" for the root) */
	enum dir_vfmt fmt;
	bool pve;               /* Proxmox naming: volume chains possible */
};

struct dir_wpriv {
	char *rel;              /* top file of the view's chain */
	enum chain_layer_format fmt;
	bool is_isnap;          /* an internal snapshot of rel */
	char *snap;             /* its name (the first so named, as qemu-img picks) */
};

struct dir_store_priv {
	char *path;               /* as given */
	char *realpath;
	int rootfd;
	bool has_base;
	bool netfs;               /* NFS/CIFS/...: no inotify, periodic signature */
	struct dir_backing backing;
	struct chain_store cs;
	int inotify_fd;
	pthread_mutex_t log_lock;
	char **logged;            /* "<what>" already logged once */
	int nlogged;
};

int dir_layout_scan(struct store *s, struct dir_scan *out);
void dir_scan_release(struct dir_scan *sc);

/* Log a line once per key for the life of the store. */
void dir_log_once(struct store *s, const char *key, int prio, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Proxmox snapshot file name of a volume: "snap-<snap>-<vol>". */
int dir_pve_snap_name(const char *vol, const char *snap, char *out, size_t len);

/* A layer's backing, resolved below the root: *rel NULL when none. */
int dir_probe_backing(struct store *s, const char *rel, char **backing_rel, char **backing_raw,
		      enum chain_layer_format *fmt, uint64_t *vsize);

/* Open the chain whose top file is rel (optionally at an internal snapshot). */
int dir_open_chain(struct store *s, const char *rel, const char *snap,
		   enum chain_layer_format fmt, struct chain **out);

/* dir_snapshot.c */
int dir_snapshot_take(struct store *s, const char *volume, const char *snap,
		      const struct store_progress *p);
int dir_snapshot_remove(struct store *s, const char *volume, const char *snap,
			const struct store_progress *p);
int dir_recover(struct store *s);

/* Per-volume taken times of snap-* views (the sidecar file, nanoseconds; 0 unknown), for idents and mtimes. */
int64_t dir_snaptime_get(struct store *s, const char *dir, const char *vol, const char *snap);

#endif
