/*
 * decompress: one compressed qcow2 cluster back into exactly one cluster.
 * zlib clusters are raw deflate streams; zstd clusters are one zstd frame
 * followed by padding up to the sector end. Anything that does not produce
 * exactly `out_len` bytes is corrupt (-EIO).
 */
#ifndef VSTORFS_DECOMPRESS_H
#define VSTORFS_DECOMPRESS_H

#include <stddef.h>
#include <stdint.h>

int decompress_cluster(int type, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len);

#endif
