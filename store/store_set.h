/*
 * store_set: the stores of one mount, from its SOURCE: a comma-separated
 * list of VG names, "all" (every VG lvm2 sees, followed as VGs come and
 * go), absolute directory paths, and "rbd:<pool>[/<namespace>]".
 *
 * Which kind of store serves a word, and its constructor, is the
 * registry's (store/store_registry.h); a constructor fails (negative
 * errno, logged) when the source cannot be served.
 * Two stores with one top-level name fail the mount before anything is mounted.
 */
#ifndef VSTORFS_STORE_SET_H
#define VSTORFS_STORE_SET_H

#include "store/store.h"

struct store_set;

/* Parse SOURCE and open every store; -errno after logging which source failed and why. */
int store_set_open(const char *source, const struct store_config *cfg, struct store_set **out);
void store_set_close(struct store_set *set);

/* Re-enumerate dynamic sources ("all"). Returns the number of stores. */
int store_set_refresh(struct store_set *set);
int store_set_count(const struct store_set *set);
/* The i-th store (sorted by name); valid until the next refresh. */
struct store *store_set_at(const struct store_set *set, int i);
struct store *store_set_find(const struct store_set *set, const char *name);

#endif
