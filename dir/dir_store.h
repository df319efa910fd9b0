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
/* The registry entry (dir_kind.c): absolute paths. */
extern const struct store_kind dir_store_kind;

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
	struct io_gate_set *gates;/* netfs: every layer read passes a gate (common/io_gate.h) */
	/* Scans only (one at a time: fs/ runs them under its ops lock). */
	struct dir_known *known;
	int nknown;
	bool rebaseline;          /* our own snapshot operation ran: the next scan takes files as they are */
};
void dir_known_free(struct dir_store_priv *p);

/* dir_layers.c: the layer files a listing was built from, and what the
 * store remembers of them across scans (the epochs in snapshot idents). */
struct dir_layer_rec {
	char *rel;
	uint64_t dev, ino, size;
	bool raw;               /* a raw layer's size is its content: any change counts */
};
struct dir_layer_list {
	int n;
	struct dir_layer_rec *v;
};
struct dir_known {
	struct dir_layer_rec rec; /* as last seen */
	unsigned epoch;           /* times it was replaced or shrank under us */
};
/* Stat rel, record it in l (may be NULL), and return its epoch, bumped
 * (logged unless top) when it was replaced or shrank since the last scan. */
unsigned dir_layer_note(struct store *s, struct dir_layer_list *l, const char *rel, bool raw, bool top);
void dir_layers_scanned(struct store *s);      /* a scan is done: rebaseline is over */
int dir_layers_changed(struct store *s, const struct dir_layer_list *l);   /* 1: rescan */
/* -EIO (logged once per view and layer) if a file of c is not the one l lists. */
int dir_layers_check_chain(struct store *s, const struct dir_layer_list *l, struct chain *c,
			   const char *label);
void dir_layers_free(struct dir_layer_list *l);

int dir_layout_scan(struct store *s, struct dir_scan *out);
void dir_scan_release(struct dir_scan *sc);

/* Log a line once per key for the life of the store. */
void dir_log_once(struct store *s, const char *key, int prio, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* The directory part of a store-relative path ("" at the top), malloc'd; NULL on ENOMEM. */
char *dir_part(const char *rel);

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
