/*
 * chain_reader: a view_reader over a qcow2/raw chain, for the stores whose
 * volumes are chains of layers (LVM, directories). Plain data runs are
 * handed out as (fd, offset) of the layer holding them when the layer can
 * say (layer_io map_fd), so the reply path splices them.
 */
#ifndef VSTORFS_CHAIN_READER_H
#define VSTORFS_CHAIN_READER_H

#include "chain/chain.h"
#include "store/view_reader.h"

/* Takes over the caller's reference on c, also on failure. 0 or -ENOMEM. */
int chain_reader_new(struct chain *c, struct view_reader **out);
/* The same, sized as the listing says (at least the chain's size): bytes
 * between the chain's end and `size` read EIO, never as a short read. For a
 * view whose raw layer shrank after the listing was made. */
int chain_reader_new_sized(struct chain *c, uint64_t size, struct view_reader **out);

/* The chain behind a reader made by chain_reader_new, or NULL for another kind. */
struct chain *chain_reader_chain(struct view_reader *r);

#endif
