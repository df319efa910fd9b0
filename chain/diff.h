/*
 * diff: which bytes of a view changed since another view of the same volume,
 * and which bytes of a view were ever written — the extents a backup tool
 * asks for (`rbd diff --from-snap S image@T` and `rbd diff image@T`), and
 * their rendering in `rbd diff --format=json` form.
 *
 * Everything is computed from qcow2 metadata (L1/L2 tables); no data cluster
 * is ever read. Memory is bounded: a few words per layer of the chains plus
 * the shared L2 cache (chain_set_cache_limit); the callbacks receive ranges as
 * they are found, in order.
 *
 * Granularity: subclusters with extended L2 entries, else clusters; raw
 * layers count as one allocated run.
 *
 * Thread safety: as chain_read (chains are shared, read-only); both chains
 * must be held (chain_get) for the duration of the call. Views are assumed
 * not to change while compared (snapshot views never do; a `current` view
 * whose VM writes gives the answer of some instant during the call, no
 * better than a read of it would).
 */
#ifndef VSTORFS_DIFF_H
#define VSTORFS_DIFF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "chain.h"

/*
 * One range [off, off + len), len > 0. exists: true when the range holds
 * data in the view, false when it now reads as zeros (zero clusters or
 * subclusters, discards, past the end of a shorter backing layer...).
 * A nonzero return stops the walk and is returned by the caller.
 */
typedef int (*chain_range_fn)(void *arg, uint64_t off, uint64_t len, bool exists);

/*
 * The ranges of `newer`'s bytes that may differ from `older`'s, sorted by
 * offset, disjoint, and adjacent ranges of the same `exists` joined.
 *
 * Promises:
 *  - no false negatives: every byte of newer outside the ranges reads the
 *    same in older (at the same offset, inside older's size);
 *  - every byte of newer at or past chain_size(older) (a grown disk) is in a
 *    range, exists telling whether it reads as data or zeros; bytes of older
 *    past chain_size(newer) (a shrunk disk) are not reported (there is no
 *    byte of newer there: compare the sizes);
 *  - exists=false ranges read as zeros in newer;
 *  - tight: when older's chain is a suffix of newer's (the layers of older,
 *    compared by layer_io id and L1 table, are the bottom layers of newer:
 *    an external snapshot chain), exactly the ranges the layers of newer
 *    above older's top answer for (data, compressed, zero flags, or past the
 *    end of one of them), plus the grown part. Otherwise (after a rebase, two
 *    internal-snapshot L1 tables of one image, unrelated images) ranges are
 *    where the views resolve to different (layer id, host offset), or one
 *    reads zeros and the other does not; compressed clusters compare by
 *    their host offset. Below the longest common suffix of both chains only
 *    the ranges some layer above it answers are looked at.
 *
 * The suffix case reads only the metadata of newer's layers above older's
 * top: a 1 TiB volume whose last snapshot took 1 GiB costs the L2 tables of
 * one layer.
 *
 * Returns 0, a callback's nonzero return, or a negative errno: -EIO when a
 * layer the answer needs is broken or corrupt (as chain_read would), -ENOMEM.
 */
int chain_changed(struct chain *newer, struct chain *older, chain_range_fn cb, void *arg);

/*
 * As chain_changed, but always by the general comparison, also when older is
 * a suffix of newer: tighter (zeros newer's layers wrote where older reads
 * zeros too are left out) at the cost of mapping older's layers under the
 * ranges newer's own layers answer for. Same promises and errors.
 */
int chain_changed_compare(struct chain *newer, struct chain *older, chain_range_fn cb, void *arg);

/*
 * The ranges of c that hold anything other than never-written zeros: what
 * some layer of the chain answers for (data: exists=true; zero clusters:
 * exists=false). Everything left out reads as zeros (unallocated in every
 * layer, or past the end of a shorter layer). Sorted, disjoint, adjacent
 * ranges of the same kind joined. A raw layer counts as data over its size.
 * Preallocated (metadata) clusters count as data: metadata cannot tell that
 * they hold zeros. Errors as chain_changed.
 */
int chain_allocated(struct chain *c, chain_range_fn cb, void *arg);

/*
 * JSON in the form `rbd diff --format=json` prints:
 *   [{"offset":0,"length":4194304,"exists":"true"},{"offset":...,"exists":"false"}]
 * with no whitespace and no trailing newline; `[]` when there is no range.
 * Built incrementally: extent_json_add is a chain_range_fn.
 */
struct extent_json {
	char *buf;        /* NUL-terminated while building */
	size_t len, cap;
	size_t max;       /* refuse to grow past this many bytes (0: no limit) */
	uint64_t ranges;  /* ranges added */
	uint64_t bytes;   /* sum of their lengths */
};

void extent_json_init(struct extent_json *j, size_t max);
/* Append one range (arg: the struct extent_json). 0, -ENOMEM, -EFBIG past max. */
int extent_json_add(void *arg, uint64_t off, uint64_t len, bool exists);
/*
 * Close the array and hand the text over: *out (malloc'd, NUL-terminated,
 * free() it) and *len (without the NUL). The builder is left empty.
 */
int extent_json_finish(struct extent_json *j, char **out, size_t *len);
void extent_json_release(struct extent_json *j);

/* chain_changed / chain_allocated rendered whole; max as extent_json_init. */
int chain_changed_json(struct chain *newer, struct chain *older, size_t max, char **out, size_t *len);
int chain_allocated_json(struct chain *c, size_t max, char **out, size_t *len);

#endif
