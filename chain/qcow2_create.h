/*
 * qcow2_create: writing a fresh overlay the way Proxmox VE 9 creates one
 * when it takes a snapshot on LVM: qcow2 v3, extended L2 entries, 128 KiB
 * clusters, a backing file named by a bare string, and metadata
 * preallocated (every L2 entry points at its own host cluster, every
 * subcluster unallocated, so every read falls through to the backing layer).
 */
#ifndef VSTORFS_QCOW2_CREATE_H
#define VSTORFS_QCOW2_CREATE_H

#include <stdint.h>

#include "layer_io.h"

#define QCOW2_OVERLAY_CLUSTER_BITS 17

/*
 * Bytes such an image occupies fully allocated: what `qemu-img measure -O
 * qcow2 -o extended_l2=on,cluster_size=128k --size V` calls "fully
 * allocated size", and what Proxmox sizes the LV by. 0 if vsize is absurd.
 */
uint64_t qcow2_overlay_size(uint64_t vsize);

/*
 * Write the overlay into io (which must be at least qcow2_overlay_size()
 * bytes). Metadata first, then a flush, then the header cluster, then a
 * flush: until the header lands the layer does not claim to be this image.
 * Returns 0 or a negative errno (-ENOSPC if io is too small, -EINVAL for a
 * backing string that does not fit).
 */
int qcow2_overlay_create(struct layer_io *io, uint64_t vsize, const char *backing,
			 const char *backing_format);

#endif
