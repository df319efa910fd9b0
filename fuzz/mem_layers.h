/*
 * mem_layers: the fuzz targets' stack of in-memory layers. The input holds
 * up to four layers; a backing string "L<n>" names layer n (anything else
 * is missing). Layers are copies, so the writer's target may change them,
 * and a name can be pointed at another layer's bytes (an LV renamed).
 *
 * Layout from the given offset: per layer a 4-byte little-endian length
 * and the bytes; what is left is the tail.
 */
#ifndef VSTORFS_FUZZ_MEM_LAYERS_H
#define VSTORFS_FUZZ_MEM_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "chain/chain.h"

#define MEM_MAX_LAYERS 4

struct mem_stack {
	int n;
	uint8_t *data[MEM_MAX_LAYERS];
	size_t len[MEM_MAX_LAYERS];
	int by_name[MEM_MAX_LAYERS];     /* "L<i>" -> layer, -1: no such layer (removed) */
	unsigned long writes;            /* pwrites done through writable layers */
	struct chain_store store;
};

/* Parse n layers from p; *tail / *left: the rest. extra[i] zero bytes are
 * appended to layer i (room to grow, as an LV has). 0 or -ENOMEM. */
int mem_stack_init(struct mem_stack *st, int n, const uint8_t *p, size_t left,
		   const size_t *extra, const uint8_t **tail, size_t *tail_left);
void mem_stack_free(struct mem_stack *st);

/* The layer that name "L<i>" now holds, as a layer_io (writable or not). */
struct layer_io *mem_layer_open(struct mem_stack *st, int name, int writable);

#endif
