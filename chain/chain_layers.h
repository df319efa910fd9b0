/*
 * chain_layers: a look at the layers of an opened chain, for chain/ modules
 * that reason about layers rather than bytes (changed extents). Not for fs/:
 * chain.h stays the read API.
 */
#ifndef VSTORFS_CHAIN_LAYERS_H
#define VSTORFS_CHAIN_LAYERS_H

#include <stdbool.h>
#include <stdint.h>

#include "chain.h"
#include "qcow2_image.h"

struct chain_layer_info {
	struct layer_io *io;       /* NULL for a broken layer that never opened */
	struct qcow2_image *img;   /* NULL: raw, or broken */
	uint64_t size;             /* virtual size of this layer */
	bool broken;               /* reads reaching this layer fail */
};

/*
 * Layer `depth` (0 = top) of c: 0, -EINVAL when there is no such layer,
 * -EIO when the chain is poisoned (a loop, runaway depth: nothing in it is
 * trustworthy). Valid while c is held.
 */
int chain_layer_info(const struct chain *c, int depth, struct chain_layer_info *out);

#endif
