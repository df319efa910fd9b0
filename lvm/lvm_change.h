/*
 * lvm_change: the lvm2 metadata changes a snapshot operation is made of.
 * Each is one lvm2 command and so one atomic VG metadata commit: after a
 * crash the VG shows either the state before the command or after it.
 */
#ifndef VSTORFS_LVM_CHANGE_H
#define VSTORFS_LVM_CHANGE_H

#include <stdint.h>

#include "lvm.h"

int lvm_lv_rename(const struct lvm_opts *o, const char *vg, const char *from, const char *to);
/* A linear LV of at least `bytes`, rounded up to extents by lvm2; tags NULL-terminated. Not activated without device-mapper. */
int lvm_lv_create(const struct lvm_opts *o, const char *vg, const char *name, uint64_t bytes,
		  const char *const *tags);
int lvm_lv_remove(const struct lvm_opts *o, const char *vg, const char *name);
/* Add and delete tags (NULL-terminated lists, at most 5 each, either NULL) in one commit. */
int lvm_lv_retagv(const struct lvm_opts *o, const char *vg, const char *name,
		  const char *const *add, const char *const *del);
/* Add and/or delete one tag in a single commit; either may be NULL. */
int lvm_lv_retag(const struct lvm_opts *o, const char *vg, const char *name, const char *add,
		 const char *del);


/*
 * Open an LV for writing: /dev/<vg>/<lv> when it exists, else its PV
 * extents opened O_RDWR. flush() fdatasyncs every device written. Holds a
 * reference on vg. Only snapshot operations, under the storage lock, use it.
 */
int lvm_lv_open_rw(struct lvm_vg *vg, const struct lvm_lv *lv, struct layer_io **out);

#endif
