/*
 * qcow2_image: see qcow2_image.h.
 *
 * Bounds are checked where the numbers come from the image: L1 size
 * against virtual size and a 32 MiB cap, every table and data cluster
 * against the layer's size, compressed ranges against the layer's end.
 * Problems found while reading are logged once per image and reason.
 */
#include "qcow2_image.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "decompress.h"
#include "l2_cache.h"

#define MAX_L1_BYTES (32ULL << 20)
#define HEADER_READ  65536
/*
 * L2 tables are read and cached in 4 KiB slices, as qemu can
 * (l2-cache-entry-size): a 128 KiB table maps 1 GiB, and a small disk or a
 * random read needs a few entries of it, not all 8192.
 */
#define L2_SLICE 4096
#define HEADER_FIRST 4096   /* enough for almost every header: read more only when needed */

enum log_once { LOG_L2_PAST_END = 1, LOG_DATA_PAST_END = 2, LOG_MISALIGNED = 4, LOG_COMPRESSED = 8,
		LOG_IO = 16, LOG_INVALID = 32 };

struct qcow2_image {
	struct layer_io *io;
	struct qcow2_header h;
	uint64_t cs;                /* cluster size */
	bool extended;
	uint64_t l2e_size, l2_entries, sc_size;
	uint64_t slice_bytes, slice_entries;  /* the unit L2 tables are cached in */
	uint64_t *l1;
	uint32_t l1_entries;        /* entries loaded: what the virtual size uses */
	char *backing;
	char backing_fmt[32];
	char label[200];
	unsigned logged;            /* atomic bitmask of enum log_once */
};

/*
 * A live view is opened anew for every open(2), so "once per image" alone
 * would log a damaged layer again on each. The last LOGGED_RECENT (layer,
 * reason) pairs logged anywhere are remembered; the layer is its identity
 * (LV UUID, file) and creation time, so a new layer under an old name is
 * still reported.
 */
#define LOGGED_RECENT 256

static uint64_t logged_recent[LOGGED_RECENT];
static unsigned logged_next;
static pthread_mutex_t logged_lock = PTHREAD_MUTEX_INITIALIZER;

static bool logged_before(const struct layer_io *io, unsigned what)
{
	const char *id = io->id ? io->id : io->name ? io->name : "";
	uint64_t key = 1469598103934665603ULL;
	bool seen = false;

	for (const char *p = id; *p; p++)
		key = (key ^ (unsigned char)*p) * 1099511628211ULL;
	key = (key ^ (uint64_t)io->ctime) * 1099511628211ULL;
	key = (key ^ what) * 1099511628211ULL;
	pthread_mutex_lock(&logged_lock);
	for (unsigned i = 0; i < LOGGED_RECENT && !seen; i++)
		seen = logged_recent[i] == key;
	if (!seen)
		logged_recent[logged_next++ % LOGGED_RECENT] = key;
	pthread_mutex_unlock(&logged_lock);
	return seen;
}

static void log_once(struct qcow2_image *img, unsigned what, const char *reason, uint64_t off)
{
	if (__atomic_fetch_or(&img->logged, what, __ATOMIC_RELAXED) & what)
		return;
	if (logged_before(img->io, what))
		return;
	vlog(LOG_ERR, "%s: layer %s: %s (guest offset %llu; further errors of this kind not logged)",
	     img->label, img->io->name, reason, (unsigned long long)off);
}

uint64_t qcow2_image_size(const struct qcow2_image *img)
{
	return img->h.size;
}

const char *qcow2_image_backing(const struct qcow2_image *img)
{
	return img->backing;
}

const char *qcow2_image_backing_fmt(const struct qcow2_image *img)
{
	return img->backing_fmt;
}

uint64_t qcow2_image_l2_span(const struct qcow2_image *img)
{
	return img->cs * img->slice_entries;
}

void qcow2_image_close(struct qcow2_image *img)
{
	if (!img)
		return;
	l2_cache_drop(img);
	free(img->l1);
	free(img->backing);
	free(img);
}

/* Check the L1 table's geometry; load it only when `load` (a probe does not). */
static const char *load_tables(struct qcow2_image *img, bool load)
{
	uint64_t need_l1, bytes = (uint64_t)img->h.l1_size * 8;
	uint8_t *raw;

	need_l1 = (img->h.size + img->cs * img->l2_entries - 1) / (img->cs * img->l2_entries);
	if (img->h.l1_size < need_l1)
		return "L1 table too small for the virtual size";
	if (bytes > MAX_L1_BYTES)
		return "L1 table too large";
	if (bytes && (img->h.l1_offset % img->cs || img->h.l1_offset > img->io->size ||
		      bytes > img->io->size - img->h.l1_offset))
		return "L1 table past the end of the layer";
	if (!load)
		return NULL;
	/*
	 * Load only the entries the virtual size can reach. A hostile header
	 * may declare a 32 MiB L1 for a tiny disk; holding all of it for every
	 * open layer would let a few small LVs blow up the daemon's memory.
	 */
	img->l1_entries = need_l1;
	bytes = need_l1 * 8;
	img->l1 = calloc(img->l1_entries + 1, 8);
	raw = malloc(bytes + 1);
	if (!img->l1 || !raw) {
		free(raw);
		return "out of memory";
	}
	if (bytes && layer_pread(img->io, raw, bytes, img->h.l1_offset)) {
		free(raw);
		return "cannot read the L1 table";
	}
	for (uint32_t i = 0; i < img->l1_entries; i++)
		img->l1[i] = qcow2_be64(raw + 8 * i);
	free(raw);
	return NULL;
}

const char *qcow2_image_use_l1(struct qcow2_image *img, uint64_t l1_offset, uint32_t l1_size,
			       uint64_t size)
{
	uint64_t span = img->cs * img->l2_entries, need = (size + span - 1) / span;
	uint64_t have = need < l1_size ? need : l1_size, *l1;
	uint8_t *raw;

	if (size > (1ULL << 62) || need * 8 > MAX_L1_BYTES || (uint64_t)l1_size * 8 > MAX_L1_BYTES)
		return "snapshot L1 table too large";
	if (l1_size && (l1_offset % img->cs || l1_offset > img->io->size ||
			(uint64_t)l1_size * 8 > img->io->size - l1_offset))
		return "snapshot L1 table past the end of the layer";
	l1 = calloc(need + 1, 8);
	raw = malloc(have * 8 + 1);
	if (!l1 || !raw) {
		free(l1);
		free(raw);
		return "out of memory";
	}
	if (have && layer_pread(img->io, raw, have * 8, l1_offset)) {
		free(l1);
		free(raw);
		return "cannot read the snapshot L1 table";
	}
	for (uint64_t i = 0; i < have; i++)
		l1[i] = qcow2_be64(raw + 8 * i);
	free(raw);
	free(img->l1);
	img->l1 = l1;
	img->l1_entries = need;
	img->h.size = size;
	return NULL;
}

static const char *read_backing(struct qcow2_image *img, const uint8_t *hdr, size_t hlen)
{
	uint64_t off = img->h.backing_offset, n = img->h.backing_size;

	if (!off || !n)
		return NULL;
	if (off > img->io->size || n > img->io->size - off)
		return "backing file name past the end of the layer";
	img->backing = calloc(1, n + 1);
	if (!img->backing)
		return "out of memory";
	if (off + n <= hlen)
		memcpy(img->backing, hdr + off, n);
	else if (layer_pread(img->io, img->backing, n, off))
		return "cannot read the backing file name";
	if (strlen(img->backing) != n)
		return "backing file name contains NUL";
	return NULL;
}

static const char *image_open(struct layer_io *io, const char *label, bool tables,
			      struct qcow2_image **out)
{
	struct qcow2_image *img = calloc(1, sizeof(*img));
	size_t hlen = io->size < HEADER_FIRST ? io->size : HEADER_FIRST;
	uint8_t *hdr = malloc(HEADER_READ);
	const char *why = NULL;

	*out = NULL;
	if (!img || !hdr) {
		free(img);
		free(hdr);
		return "out of memory";
	}
	img->io = io;
	snprintf(img->label, sizeof(img->label), "%s", label);
	if (layer_pread(io, hdr, hlen, 0))
		why = "cannot read the header";
	if (!why)
		why = qcow2_decode_header(hdr, hlen, &img->h);
	if (!why) {
		img->cs = 1ULL << img->h.cluster_bits;
		img->extended = img->h.incompat & QCOW2_INCOMPAT_EXTL2;
		img->l2e_size = img->extended ? 16 : 8;
		img->l2_entries = img->cs / img->l2e_size;
		img->sc_size = img->extended ? img->cs / 32 : img->cs;
		img->slice_bytes = img->cs < L2_SLICE ? img->cs : L2_SLICE;
		img->slice_entries = img->slice_bytes / img->l2e_size;
		if (hlen > img->cs)
			hlen = img->cs;
		why = qcow2_decode_extensions(&img->h, hdr, hlen, img->backing_fmt, sizeof(img->backing_fmt));
		if (why && hlen == HEADER_FIRST && img->cs > HEADER_FIRST && io->size > HEADER_FIRST) {
			/* The extensions go on past the first 4 KiB: read up to the cluster (64 KiB at most). */
			hlen = img->cs < HEADER_READ ? img->cs : HEADER_READ;
			if (hlen > io->size)
				hlen = io->size;
			why = layer_pread(io, hdr, hlen, 0) ? "cannot read the header"
				: qcow2_decode_extensions(&img->h, hdr, hlen, img->backing_fmt,
							  sizeof(img->backing_fmt));
		}
	}
	if (!why)
		why = read_backing(img, hdr, hlen);
	if (!why)
		why = load_tables(img, tables);
	free(hdr);
	if (why) {
		qcow2_image_close(img);
		return why;
	}
	if (tables && img->h.incompat & (QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT))
		vlog(LOG_WARNING, "%s: layer %s is marked %s; reading it anyway", label, io->name,
		     img->h.incompat & QCOW2_INCOMPAT_CORRUPT ? "corrupt" : "dirty");
	*out = img;
	return NULL;
}

const char *qcow2_image_open(struct layer_io *io, const char *label, struct qcow2_image **out)
{
	return image_open(io, label, true, out);
}

const char *qcow2_image_open_header(struct layer_io *io, const char *label, struct qcow2_image **out)
{
	return image_open(io, label, false, out);
}

/*
 * Status of subcluster `sc` of a cluster with this entry/bitmap, or -1 with
 * *why set for entries qemu itself refuses to read (it marks the image
 * corrupt and fails the read): allocated and zero at once, allocated
 * subclusters without a host cluster, a zero flag in a version 2 image.
 */
static int sc_kind(const struct qcow2_image *img, uint64_t entry, uint64_t bitmap, unsigned sc,
		   const char **why)
{
	if (entry & QCOW2_L2_COMPRESSED)
		return QCOW2_COMPRESSED;
	if (img->extended) {
		uint32_t alloc = bitmap, zero = bitmap >> 32;

		if (entry & QCOW2_OFFSET_MASK ? alloc & zero : alloc) {
			*why = "invalid extended L2 entry (subcluster bitmap)";
			return -1;
		}
		if (zero & (1u << sc))
			return QCOW2_ZERO;
		return alloc & (1u << sc) ? QCOW2_DATA : QCOW2_UNALLOCATED;
	}
	if (entry & QCOW2_L2_ZERO) {
		if (img->h.version < 3) {
			*why = "zero cluster in a version 2 image";
			return -1;
		}
		return QCOW2_ZERO;
	}
	return entry & QCOW2_OFFSET_MASK ? QCOW2_DATA : QCOW2_UNALLOCATED;
}

/*
 * How many subclusters from `sc` on share kind `k`: a run steps over them at
 * once, so mapping a large range costs one iteration per cluster, not per
 * subcluster (32 per cluster with extended L2).
 */
static unsigned same_run(const struct qcow2_image *img, int k, uint64_t bitmap, unsigned sc)
{
	uint32_t alloc = bitmap, zero = bitmap >> 32, m;

	if (!img->extended)
		return 1;
	m = (k == QCOW2_DATA ? alloc : k == QCOW2_ZERO ? zero : ~(alloc | zero)) >> sc;
	/* Bits shifted in at the top are 0, so the count stops at subcluster 31. */
	return ~m ? (m & 1 ? (unsigned)__builtin_ctz(~m) : 1) : 32;
}

/*
 * The cached slice of the L2 table at l2off holding the entry for guest
 * offset `off`: -ERANGE when the table is not a whole cluster inside the
 * layer, else what l2_cache_get returns.
 */
static int get_l2_slice(struct qcow2_image *img, uint64_t l2off, uint64_t off, struct l2_table **t)
{
	uint64_t slice = (off / img->cs) % img->l2_entries / img->slice_entries;

	if (l2off % img->cs || l2off > img->io->size || img->cs > img->io->size - l2off)
		return -ERANGE;
	return l2_cache_get(img, img->io, l2off + slice * img->slice_bytes, img->slice_bytes, t);
}

int qcow2_image_map(struct qcow2_image *img, uint64_t off, uint64_t len, struct qcow2_run *run)
{
	uint64_t span = img->cs * img->l2_entries, l1i = off / span, l2off, pos = off, slice_span;
	uint64_t end = off + len > img->h.size ? img->h.size : off + len;
	struct l2_table *t;
	bool first = true;
	int rc;

	memset(run, 0, sizeof(*run));
	if (!img->l1 || l1i >= img->l1_entries)
		return -EIO;
	if (end > (l1i + 1) * span)
		end = (l1i + 1) * span;
	l2off = img->l1[l1i] & QCOW2_OFFSET_MASK;
	if (!l2off) {
		run->kind = QCOW2_UNALLOCATED;
		run->len = end - off;
		return 0;
	}
	rc = get_l2_slice(img, l2off, off, &t);
	if (rc == -ERANGE) {
		log_once(img, LOG_L2_PAST_END, "L1 entry points past the end of the layer", off);
		return -EIO;
	}
	if (rc) {
		log_once(img, LOG_IO, "cannot read an L2 table", off);
		return -EIO;
	}
	slice_span = qcow2_image_l2_span(img);
	if (end > (off / slice_span + 1) * slice_span)
		end = (off / slice_span + 1) * slice_span;
	while (pos < end) {
		uint64_t ci = (pos / img->cs) % img->slice_entries, in = pos % img->cs;
		const uint8_t *e = t->data + ci * img->l2e_size;
		uint64_t entry = qcow2_be64(e), bitmap = img->extended ? qcow2_be64(e + 8) : 0;
		unsigned sc = in / img->sc_size;
		const char *why = NULL;
		int k = sc_kind(img, entry, bitmap, sc, &why);
		uint64_t step = (k == QCOW2_COMPRESSED ? img->cs : (sc + same_run(img, k, bitmap, sc)) * img->sc_size) - in;
		uint64_t host = 0;

		/* A large map (a merge walking a 64 GiB layer) is mostly long runs of
		 * equal entries: empty ones, or preallocated host clusters in
		 * sequence, with the same subcluster bitmap. When this cluster is
		 * wholly of kind k, extend the run over such entries with one
		 * comparison each; the checks below then hold for the whole run
		 * (host clusters in sequence are aligned when the first is). A run
		 * stops before a host cluster past the end of the layer, so that
		 * entry is the one the check below names. */
		if (k >= 0 && k != QCOW2_COMPRESSED && (!img->extended || same_run(img, k, bitmap, 0) == 32)) {
			uint64_t inc = entry & QCOW2_OFFSET_MASK ? img->cs : 0, next = entry + inc;
			uint64_t flags = entry & ~QCOW2_OFFSET_MASK;
			const uint8_t *p = e + img->l2e_size;

			for (uint64_t j = ci + 1; j < img->slice_entries && pos + step < end && qcow2_be64(p) == next &&
			     (next & ~QCOW2_OFFSET_MASK) == flags && (!img->extended || qcow2_be64(p + 8) == bitmap) &&
			     (k != QCOW2_DATA || (next & QCOW2_OFFSET_MASK) <= img->io->size - img->cs);
			     j++, p += img->l2e_size, next += inc)
				step += img->cs;
		}
		if (k < 0) {
			log_once(img, LOG_INVALID, why, pos);
			rc = -EIO;
			break;
		}
		/* Like qemu: a misaligned host cluster fails even for zero/unallocated subclusters. */
		if (k != QCOW2_COMPRESSED && (entry & QCOW2_OFFSET_MASK) % img->cs) {
			log_once(img, LOG_MISALIGNED, "misaligned L2 entry", pos);
			rc = -EIO;
			break;
		}
		if (k == QCOW2_COMPRESSED) {
			uint64_t clen;

			qcow2_decode_compressed(entry, img->h.cluster_bits, &host, &clen);
		} else if (k == QCOW2_DATA) {
			host = (entry & QCOW2_OFFSET_MASK) + in;
			if (host > img->io->size || step > img->io->size - host) {
				log_once(img, LOG_DATA_PAST_END, "L2 entry points past the end of the layer", pos);
				rc = -EIO;
				break;
			}
		}
		if (step > end - pos)
			step = end - pos;
		if (first) {
			run->kind = k;
			run->host = host;
			first = false;
		} else if (k != (int)run->kind || k == QCOW2_COMPRESSED ||
			   (k == QCOW2_DATA && host != run->host + run->len)) {
			break;
		}
		run->len += step;
		pos += step;
		if (k == QCOW2_COMPRESSED)
			break;
	}
	l2_cache_put(t);
	return rc;
}

int qcow2_image_read_compressed(struct qcow2_image *img, uint64_t off, void *buf, uint64_t len)
{
	uint64_t span = img->cs * img->l2_entries, l1i = off / span, l2off, coff, clen, entry;
	uint8_t *in = NULL, *out = NULL;
	struct l2_table *t;
	int rc;

	if (!img->l1 || l1i >= img->l1_entries || !(l2off = img->l1[l1i] & QCOW2_OFFSET_MASK))
		return -EIO;
	if ((rc = get_l2_slice(img, l2off, off, &t)))
		return rc == -ERANGE ? -EIO : rc;
	entry = qcow2_be64(t->data + (off / img->cs) % img->slice_entries * img->l2e_size);
	l2_cache_put(t);
	if (!(entry & QCOW2_L2_COMPRESSED))
		return -EIO; /* changed under us; the caller maps again */
	qcow2_decode_compressed(entry, img->h.cluster_bits, &coff, &clen);
	if (coff >= img->io->size) {
		log_once(img, LOG_COMPRESSED, "compressed cluster past the end of the layer", off);
		return -EIO;
	}
	/* qemu rounds the length up to whole sectors, possibly past the end. */
	if (clen > img->io->size - coff)
		clen = img->io->size - coff;
	if (clen > 2 * img->cs + 512)
		clen = 2 * img->cs + 512;
	in = malloc(clen);
	out = malloc(img->cs);
	rc = in && out ? layer_pread(img->io, in, clen, coff) : -ENOMEM;
	if (!rc && decompress_cluster(img->h.compression_type, in, clen, out, img->cs)) {
		log_once(img, LOG_COMPRESSED, "corrupt compressed cluster", off);
		rc = -EIO;
	}
	if (!rc)
		memcpy(buf, out + off % img->cs, len);
	free(in);
	free(out);
	return rc;
}

const uint64_t *qcow2_image_l1(const struct qcow2_image *img, uint32_t *entries)
{
	*entries = img->l1_entries;
	return img->l1;
}
