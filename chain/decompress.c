#include "decompress.h"

#include <errno.h>
#include <zlib.h>
#include <zstd.h>

static int inflate_raw(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	z_stream s = { 0 };
	int rc;

	if (inflateInit2(&s, -12) != Z_OK)
		return -ENOMEM;
	s.next_in = (Bytef *)in;
	s.avail_in = in_len;
	s.next_out = out;
	s.avail_out = out_len;
	rc = inflate(&s, Z_FINISH);
	inflateEnd(&s);
	/* qemu accepts a stream that fills the cluster even if it does not end there. */
	if ((rc == Z_STREAM_END || rc == Z_BUF_ERROR) && s.avail_out == 0)
		return 0;
	return -EIO;
}

static int unzstd(const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	ZSTD_DCtx *dctx = ZSTD_createDCtx();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	size_t r = 1;
	int rc = -EIO;

	if (!dctx)
		return -ENOMEM;
	while (ob.pos < ob.size) {
		r = ZSTD_decompressStream(dctx, &ob, &ib);

		if (ZSTD_isError(r))
			break;
		if (r == 0 || ib.pos == ib.size) {
			/* frame ended (or input ran out): full cluster or corrupt */
			break;
		}
	}
	/*
	 * The frame must also end with the cluster (r == 0), as qemu requires:
	 * a frame that would inflate past the cluster is corrupt, and qemu
	 * fails that read with EIO rather than returning its first cluster.
	 */
	if (ob.pos == ob.size && r == 0)
		rc = 0;
	ZSTD_freeDCtx(dctx);
	return rc;
}

int decompress_cluster(int type, const uint8_t *in, size_t in_len, uint8_t *out, size_t out_len)
{
	return type == 1 ? unzstd(in, in_len, out, out_len) : inflate_raw(in, in_len, out, out_len);
}
