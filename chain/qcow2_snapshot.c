/*
 * qcow2_snapshot: see qcow2_snapshot.h. The snapshot table layout is the
 * qcow2 spec's; what qemu 7.2 writes into it (and in which order) was
 * checked against qemu-img, see tests/test_isnap.py.
 */
#include "qcow2_snapshot.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/crash.h"
#include "common/log.h"
#include "qcow2_refcount.h"

#define ENTRY_FIXED     40
#define EXTRA_KNOWN     24          /* vm_state_size_large, disk_size, icount */
#define MAX_EXTRA       1024        /* qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA */
#define MAX_TABLE_BYTES (64ULL << 20)  /* qemu's QCOW_MAX_SNAPSHOTS_SIZE */

/* ---- the table ---- */

void qcow2_snapshot_list_free(struct qcow2_snapshot_list *l)
{
	for (unsigned i = 0; l->s && i < l->n; i++) {
		free(l->s[i].id);
		free(l->s[i].name);
		free(l->s[i].unknown_extra);
	}
	free(l->s);
	l->s = NULL;
	l->n = 0;
}

static int bad(struct qcow2_snapshot_list *l, unsigned i, const char *why)
{
	snprintf(l->error, sizeof(l->error), "snapshot table entry %u: %s", i, why);
	return -EIO;
}

static char *read_string(struct layer_io *io, uint64_t off, uint16_t len, int *rc)
{
	char *s = malloc((size_t)len + 1);

	if (!s) {
		*rc = -ENOMEM;
		return NULL;
	}
	if (len && (*rc = layer_pread(io, s, len, off))) {
		free(s);
		return NULL;
	}
	s[len] = 0;
	if (strlen(s) != len) {
		*rc = -EIO;
		free(s);
		return NULL;
	}
	*rc = 0;
	return s;
}

int qsnap_parse(struct layer_io *io, const struct qcow2_header *h, uint64_t table_off,
		struct qcow2_snapshot_list *l)
{
	uint64_t off = table_off, cs = 1ULL << h->cluster_bits;
	int rc = 0;

	memset(l, 0, sizeof(*l));
	l->table_offset = table_off;
	if (!h->nb_snapshots)
		return 0;
	if (h->nb_snapshots > QCOW2_SNAPSHOT_MAX)
		return bad(l, 0, "more than 65536 snapshots");
	if (table_off % cs || table_off >= io->size)
		return bad(l, 0, "table offset invalid");
	l->s = calloc(h->nb_snapshots, sizeof(*l->s));
	if (!l->s)
		return -ENOMEM;
	l->n = h->nb_snapshots;
	for (unsigned i = 0; i < l->n; i++) {
		struct qcow2_snapshot_info *s = &l->s[i];
		uint8_t e[ENTRY_FIXED], x[EXTRA_KNOWN] = { 0 };
		uint16_t idlen, namelen;
		uint64_t need;

		off = (off + 7) & ~7ULL;
		if (off - table_off > MAX_TABLE_BYTES)
			return bad(l, i, "table larger than 64 MiB");
		if (off > io->size || ENTRY_FIXED > io->size - off)
			return bad(l, i, "past the end of the image");
		if ((rc = layer_pread(io, e, ENTRY_FIXED, off)))
			return rc;
		s->l1_offset = qcow2_be64(e);
		s->l1_size = qcow2_be32(e + 8);
		idlen = (uint16_t)(e[12] << 8 | e[13]);
		namelen = (uint16_t)(e[14] << 8 | e[15]);
		s->date_sec = qcow2_be32(e + 16);
		s->date_nsec = qcow2_be32(e + 20);
		s->vm_clock_nsec = qcow2_be64(e + 24);
		s->vm_state_size = qcow2_be32(e + 32);
		s->extra_data_size = qcow2_be32(e + 36);
		if (s->extra_data_size > MAX_EXTRA)
			return bad(l, i, "too much extra data");
		off += ENTRY_FIXED;
		need = (uint64_t)s->extra_data_size + idlen + namelen;
		if (off > io->size || need > io->size - off)
			return bad(l, i, "past the end of the image");
		if (s->extra_data_size &&
		    (rc = layer_pread(io, x, s->extra_data_size < EXTRA_KNOWN ? s->extra_data_size : EXTRA_KNOWN, off)))
			return rc;
		if (s->extra_data_size >= 8)
			s->vm_state_size = qcow2_be64(x);
		s->disk_size = s->extra_data_size >= 16 ? qcow2_be64(x + 8) : h->size / 512 * 512;
		s->icount = s->extra_data_size >= 24 ? qcow2_be64(x + 16) : QCOW2_SNAPSHOT_NO_ICOUNT;
		if (s->disk_size > (1ULL << 62))
			return bad(l, i, "disk size too large");
		if (s->extra_data_size > EXTRA_KNOWN) {
			if (!(s->unknown_extra = malloc(s->extra_data_size - EXTRA_KNOWN)))
				return -ENOMEM;
			if ((rc = layer_pread(io, s->unknown_extra, s->extra_data_size - EXTRA_KNOWN, off + EXTRA_KNOWN)))
				return rc;
		}
		off += s->extra_data_size;
		if (!(s->id = read_string(io, off, idlen, &rc)))
			return rc == -EIO ? bad(l, i, "id contains NUL") : rc;
		off += idlen;
		if (!(s->name = read_string(io, off, namelen, &rc)))
			return rc == -EIO ? bad(l, i, "name contains NUL") : rc;
		off += namelen;
		if (off - table_off > MAX_TABLE_BYTES)
			return bad(l, i, "table larger than 64 MiB");
	}
	l->table_size = off - table_off;
	return 0;
}

int qcow2_snapshot_list(struct layer_io *io, struct qcow2_snapshot_list *out)
{
	uint8_t hdr[QCOW2_HEADER_V2 + 40];
	size_t len = io->size < sizeof(hdr) ? io->size : sizeof(hdr);
	struct qcow2_header h;
	const char *why;
	int rc;

	memset(out, 0, sizeof(*out));
	if ((rc = layer_pread(io, hdr, len, 0)))
		return rc;
	if ((why = qcow2_decode_header(hdr, len, &h))) {
		snprintf(out->error, sizeof(out->error), "%s", why);
		vlog(LOG_ERR, "%s: %s", io->name, why);
		return -EIO;
	}
	rc = qsnap_parse(io, &h, qcow2_be64(hdr + 64), out);
	if (rc) {
		if (!out->error[0])
			snprintf(out->error, sizeof(out->error), "cannot read the snapshot table: %s", strerror(-rc));
		vlog(LOG_ERR, "%s: %s", io->name, out->error);
		qcow2_snapshot_list_free(out);
	}
	return rc;
}

int qcow2_snapshot_find(const struct qcow2_snapshot_list *l, const char *name)
{
	for (unsigned i = 0; i < l->n; i++)
		if (!strcmp(l->s[i].name, name))
			return i;
	return -1;
}

static uint64_t entry_size(const struct qcow2_snapshot_info *s)
{
	uint32_t extra = s->extra_data_size > EXTRA_KNOWN ? s->extra_data_size : EXTRA_KNOWN;

	return ENTRY_FIXED + extra + strlen(s->id) + strlen(s->name);
}

uint64_t qsnap_table_size(const struct qcow2_snapshot_list *l)
{
	uint64_t off = 0;

	for (unsigned i = 0; i < l->n; i++)
		off = ((off + 7) & ~7ULL) + entry_size(&l->s[i]);
	return off;
}

/* As qemu 7.2's qcow2_write_snapshots: every entry with at least 24 bytes of extra data. */
void qsnap_serialise(const struct qcow2_snapshot_list *l, uint8_t *buf)
{
	uint64_t off = 0;

	for (unsigned i = 0; i < l->n; i++) {
		const struct qcow2_snapshot_info *s = &l->s[i];
		uint32_t extra = s->extra_data_size > EXTRA_KNOWN ? s->extra_data_size : EXTRA_KNOWN;
		size_t idlen = strlen(s->id), namelen = strlen(s->name);
		uint8_t *e;

		off = (off + 7) & ~7ULL;
		e = buf + off;
		qmeta_put64(e, s->l1_offset);
		qmeta_put32(e + 8, s->l1_size);
		e[12] = idlen >> 8;
		e[13] = idlen;
		e[14] = namelen >> 8;
		e[15] = namelen;
		qmeta_put32(e + 16, s->date_sec);
		qmeta_put32(e + 20, s->date_nsec);
		qmeta_put64(e + 24, s->vm_clock_nsec);
		/* Too large for 32 bits: older readers should see a disk-only snapshot. */
		qmeta_put32(e + 32, s->vm_state_size <= 0xffffffffULL ? (uint32_t)s->vm_state_size : 0);
		qmeta_put32(e + 36, extra);
		qmeta_put64(e + 40, s->vm_state_size);
		qmeta_put64(e + 48, s->disk_size);
		qmeta_put64(e + 56, s->icount);
		if (extra > EXTRA_KNOWN)
			memcpy(e + 64, s->unknown_extra, extra - EXTRA_KNOWN);
		memcpy(e + ENTRY_FIXED + extra, s->id, idlen);
		memcpy(e + ENTRY_FIXED + extra + idlen, s->name, namelen);
		off += ENTRY_FIXED + extra + idlen + namelen;
	}
}

/*
 * Allocate and write the table for m->snaps (in memory already), leaving
 * its offset in *off and size in *size. Refcounts are committed first.
 */
static int write_snapshot_table(struct qmeta *m, uint64_t *off, uint64_t *size)
{
	uint64_t bytes = qsnap_table_size(&m->snaps), clusters;
	uint8_t *buf;
	int rc;

	*off = 0;
	*size = bytes;
	if (!m->snaps.n)
		return 0;
	if (bytes > MAX_TABLE_BYTES)
		return qmeta_fail(m, -EFBIG, "the snapshot table would pass 64 MiB");
	clusters = (bytes + m->cs - 1) / m->cs;
	if ((rc = qmeta_alloc(m, clusters, off)) || (rc = qmeta_commit_refs(m)))
		return rc;
	if (!(buf = calloc(1, clusters * m->cs)))
		return -ENOMEM;
	qsnap_serialise(&m->snaps, buf);
	rc = layer_pwrite(m->io, buf, clusters * m->cs, *off);
	free(buf);
	return rc ? rc : layer_flush(m->io);
}

static int write_header_snapshots(struct qmeta *m, uint32_t n, uint64_t off)
{
	uint8_t b[12];
	int rc;

	qmeta_put32(b, n);
	qmeta_put64(b + 4, off);
	if ((rc = layer_pwrite(m->io, b, sizeof(b), QCOW2_HDR_NB_SNAPSHOTS)))
		return rc;
	return layer_flush(m->io);
}

/* ---- shared steps ---- */

/* Open, then refuse images the checker finds structural errors in. */
static int open_checked(struct layer_io *io, unsigned flags, struct qmeta **out,
			struct qcow2_check_result *r)
{
	struct qcow2_check_result local;
	struct qmeta *m;
	int rc;

	if (!r)
		r = &local;
	memset(r, 0, sizeof(*r));
	*out = NULL;
	if (!io->ops->pwrite)
		return -EROFS;
	if ((rc = qmeta_open(io, flags, &m))) {
		if (rc != -ENOTSUP && rc != -ENOMEM)
			r->errors++;
		return rc;
	}
	rc = qmeta_count_refs(m, NULL, r);
	if (!rc && r->errors) {
		char why[240];

		snprintf(why, sizeof(why), "refusing to change an image with %llu metadata errors (%s)",
			 (unsigned long long)r->errors, r->first_error);
		rc = qmeta_fail(m, -EIO, why);
	}
	if (rc) {
		qmeta_close(m);
		return rc;
	}
	*out = m;
	return 0;
}

struct raise {
	int64_t delta;
};

static int raise_fn(struct qmeta *m, void *opaque, uint64_t cluster, int kind)
{
	(void)kind;
	return qmeta_rc_add(m, cluster, ((struct raise *)opaque)->delta);
}

/*
 * Set COPIED in the active L2 and L1 entries exactly where the in-memory
 * refcount is 1 (compressed entries never carry it). L2 tables first,
 * flushed, then the L1 table, flushed; crash points after each.
 */
static int fix_copied(struct qmeta *m, const char *l2_point, const char *l1_point, uint64_t *fixed)
{
	uint8_t *t = malloc(m->cs);
	bool l1_changed = false;
	int rc = 0;

	if (!t)
		return -ENOMEM;
	for (uint32_t i = 0; i < m->h.l1_size && !rc; i++) {
		uint64_t l2 = m->l1[i] & QCOW2_OFFSET_MASK;
		bool changed = false;

		if (!l2)
			continue;
		if ((rc = qmeta_read_table(m, l2, t)))
			break;
		for (uint64_t j = 0; j < m->l2_entries && !rc; j++) {
			uint8_t *p = t + j * m->l2e_size;
			uint64_t e = qcow2_be64(p), want = e & ~QCOW2_OFLAG_COPIED, v;

			if (!(e & QCOW2_L2_COMPRESSED) && (e & QCOW2_OFFSET_MASK)) {
				if ((rc = qmeta_rc_get(m, (e & QCOW2_OFFSET_MASK) / m->cs, &v)))
					break;
				if (v == 1)
					want |= QCOW2_OFLAG_COPIED;
			}
			if (want != e) {
				qmeta_put64(p, want);
				changed = true;
				if (fixed)
					(*fixed)++;
			}
		}
		if (!rc && changed)
			rc = layer_pwrite(m->io, t, m->cs, l2);
	}
	free(t);
	if (!rc)
		rc = layer_flush(m->io);
	if (rc)
		return rc;
	crash_point(l2_point);
	for (uint32_t i = 0; i < m->h.l1_size; i++) {
		uint64_t l2 = m->l1[i] & QCOW2_OFFSET_MASK, want = m->l1[i] & ~QCOW2_OFLAG_COPIED, v;

		if (!l2)
			continue;
		if ((rc = qmeta_rc_get(m, l2 / m->cs, &v)))
			return rc;
		if (v == 1)
			want |= QCOW2_OFLAG_COPIED;
		if (want != m->l1[i]) {
			m->l1[i] = want;
			l1_changed = true;
			if (fixed)
				(*fixed)++;
		}
	}
	if (l1_changed && (rc = qmeta_write_l1(m)))
		return rc;
	crash_point(l1_point);
	return 0;
}

static int valid_name(struct layer_io *io, const char *name)
{
	size_t n = name ? strlen(name) : 0;

	if (n == 0 || n > QCOW2_SNAPSHOT_NAME_MAX) {
		vlog(LOG_ERR, "%s: invalid snapshot name", io->name);
		return -EINVAL;
	}
	return 0;
}

/* ---- create ---- */

int qcow2_snapshot_create(struct layer_io *io, const char *name, unsigned flags)
{
	struct qcow2_snapshot_info *grown, *s;
	struct raise up = { 1 };
	struct qmeta *m;
	struct timespec now;
	unsigned long max_id = 0;
	uint64_t l1_off = 0, old_off, old_size, tab_off, tab_size, l1_bytes;
	uint8_t *buf;
	char id[32];
	int rc;

	if ((rc = valid_name(io, name)) || (rc = open_checked(io, flags, &m, NULL)))
		return rc;
	old_off = m->snaps.table_offset;
	old_size = m->snaps.table_size;
	if (m->snaps.n >= QCOW2_SNAPSHOT_MAX) {
		rc = qmeta_fail(m, -EFBIG, "the image has 65536 snapshots already");
		goto out;
	}
	for (unsigned i = 0; i < m->snaps.n; i++) {
		unsigned long v = strtoul(m->snaps.s[i].id, NULL, 10);

		if (v > max_id)
			max_id = v;
	}
	snprintf(id, sizeof(id), "%lu", max_id + 1);
	l1_bytes = (uint64_t)m->h.l1_size * 8;
	/* In memory: the L1 copy's clusters, then +1 for everything the active L1 reaches. */
	if (l1_bytes && (rc = qmeta_alloc(m, (l1_bytes + m->cs - 1) / m->cs, &l1_off)))
		goto out;
	if ((rc = qmeta_walk_l1(m, m->l1, m->h.l1_size, raise_fn, &up)))
		goto out;
	if ((rc = qmeta_commit_refs(m)))
		goto out;
	crash_point("snapshot-create:refcounts");
	/* The copy, with the active entries' flags as they are (qemu copies them so). */
	if (l1_bytes) {
		uint64_t clusters = (l1_bytes + m->cs - 1) / m->cs;

		if (!(buf = calloc(1, clusters * m->cs))) {
			rc = -ENOMEM;
			goto out;
		}
		for (uint32_t i = 0; i < m->h.l1_size; i++)
			qmeta_put64(buf + 8 * i, m->l1[i]);
		rc = layer_pwrite(io, buf, clusters * m->cs, l1_off);
		free(buf);
		if (rc || (rc = layer_flush(io)))
			goto out;
	}
	crash_point("snapshot-create:l1-copy");
	if ((rc = fix_copied(m, "snapshot-create:l2-flags", "snapshot-create:l1-flags", NULL)))
		goto out;
	/* The new entry, appended. */
	grown = realloc(m->snaps.s, (m->snaps.n + 1) * sizeof(*grown));
	if (!grown) {
		rc = -ENOMEM;
		goto out;
	}
	m->snaps.s = grown;
	s = &m->snaps.s[m->snaps.n];
	memset(s, 0, sizeof(*s));
	s->id = strdup(id);
	s->name = strdup(name);
	m->snaps.n++;
	if (!s->id || !s->name) {
		rc = -ENOMEM;
		goto out;
	}
	clock_gettime(CLOCK_REALTIME, &now);
	s->date_sec = now.tv_sec;
	s->date_nsec = now.tv_nsec / 1000 * 1000;   /* qemu-img takes microseconds */
	s->disk_size = m->h.size / 512 * 512;
	s->icount = 0;
	s->extra_data_size = EXTRA_KNOWN;
	s->l1_offset = l1_off;
	s->l1_size = m->h.l1_size;
	if ((rc = write_snapshot_table(m, &tab_off, &tab_size)))
		goto out;
	crash_point("snapshot-create:table");
	if ((rc = write_header_snapshots(m, m->snaps.n, tab_off)))
		goto out;
	crash_point("snapshot-create:header");
	if (m->snaps.n > 1 && (rc = qmeta_free(m, old_off, old_size)))
		goto out;
	rc = qmeta_commit_refs(m);
	crash_point("snapshot-create:done");
out:
	if (rc)
		vlog(LOG_ERR, "%s: creating snapshot %s failed: %s", io->name, name, strerror(-rc));
	qmeta_close(m);
	return rc;
}

/* ---- delete ---- */

int qcow2_snapshot_delete(struct layer_io *io, const char *name, unsigned flags)
{
	struct qcow2_snapshot_info gone;
	bool removed = false;
	struct raise down = { -1 };
	struct qmeta *m;
	uint64_t old_off, old_size, tab_off, tab_size, *l1 = NULL;
	uint8_t *raw = NULL;
	int rc, i;

	if ((rc = valid_name(io, name)) || (rc = open_checked(io, flags, &m, NULL)))
		return rc;
	old_off = m->snaps.table_offset;
	old_size = m->snaps.table_size;
	if ((i = qcow2_snapshot_find(&m->snaps, name)) < 0) {
		vlog(LOG_ERR, "%s: no snapshot named %s", io->name, name);
		qmeta_close(m);
		return -ENOENT;
	}
	gone = m->snaps.s[i];
	/* The checker validated every snapshot L1 table's bounds. */
	raw = malloc((uint64_t)gone.l1_size * 8 + 1);
	l1 = calloc((uint64_t)gone.l1_size + 1, 8);
	if (!raw || !l1) {
		rc = -ENOMEM;
		goto out_entry;
	}
	if (gone.l1_size && (rc = layer_pread(io, raw, (uint64_t)gone.l1_size * 8, gone.l1_offset)))
		goto out_entry;
	for (uint32_t k = 0; k < gone.l1_size; k++)
		l1[k] = qcow2_be64(raw + 8 * k);
	memmove(&m->snaps.s[i], &m->snaps.s[i + 1], (m->snaps.n - i - 1) * sizeof(gone));
	m->snaps.n--;
	removed = true;
	if ((rc = write_snapshot_table(m, &tab_off, &tab_size)))
		goto out_entry;
	crash_point("snapshot-delete:table");
	if ((rc = write_header_snapshots(m, m->snaps.n, tab_off)))
		goto out_entry;
	crash_point("snapshot-delete:header");
	/*
	 * Nothing refers to the entry now. In memory: free the old table, drop
	 * what the snapshot's L1 reached, free its L1. COPIED goes on where the
	 * refcount will be 1 before that is written: in between, such a
	 * cluster's second reference is a leak, so writing it in place is safe
	 * (and `qemu-img check -r leaks` alone repairs that state).
	 */
	if ((rc = qmeta_free(m, old_off, old_size)) ||
	    (rc = qmeta_walk_l1(m, l1, gone.l1_size, raise_fn, &down)) ||
	    (rc = qmeta_free(m, gone.l1_offset, (uint64_t)gone.l1_size * 8)))
		goto out_entry;
	if ((rc = fix_copied(m, "snapshot-delete:l2-flags", "snapshot-delete:l1-flags", NULL)))
		goto out_entry;
	rc = qmeta_commit_refs(m);
	crash_point("snapshot-delete:done");
out_entry:
	if (removed) {
		free(gone.id);
		free(gone.name);
		free(gone.unknown_extra);
	}
	free(raw);
	free(l1);
	if (rc)
		vlog(LOG_ERR, "%s: deleting snapshot %s failed: %s", io->name, name, strerror(-rc));
	qmeta_close(m);
	return rc;
}

/* ---- check and reclaim ---- */

int qcow2_check(struct layer_io *io, struct qcow2_check_result *r)
{
	struct qmeta *m;
	int rc;

	memset(r, 0, sizeof(*r));
	if ((rc = qmeta_open(io, 0, &m))) {
		if (rc != -ENOTSUP && rc != -ENOMEM) {
			r->errors++;
			snprintf(r->first_error, sizeof(r->first_error), "cannot open: %s", strerror(-rc));
		}
		return rc;
	}
	rc = qmeta_count_refs(m, NULL, r);
	qmeta_close(m);
	return rc;
}

int qcow2_reclaim(struct layer_io *io, unsigned flags, struct qcow2_check_result *r)
{
	struct qcow2_check_result local;
	struct qmeta *m;
	uint32_t *refs = NULL;
	int rc;

	if (!r)
		r = &local;
	if ((rc = open_checked(io, flags, &m, r)))
		return rc;
	if ((rc = qmeta_count_refs(m, &refs, NULL)))
		goto out;
	for (uint64_t c = 0, end = qmeta_rc_end(m); c < end; c++) {
		uint64_t v, n = c < m->nclusters ? refs[c] : 0;

		if ((rc = qmeta_rc_get(m, c, &v)))
			goto out;
		if (v > n) {
			if ((rc = qmeta_rc_add(m, c, -(int64_t)(v - n))))
				goto out;
			r->leaked_clusters_freed++;
		}
	}
	if ((rc = qmeta_commit_refs(m)))
		goto out;
	crash_point("reclaim:refcounts");
	rc = fix_copied(m, "reclaim:l2-flags", "reclaim:l1-flags", &r->copied_fixed);
out:
	free(refs);
	qmeta_close(m);
	return rc;
}

int qcow2_image_end(struct layer_io *io, uint64_t *end)
{
	struct qmeta *m;
	uint64_t c, v = 0;
	int rc = qmeta_open(io, 0, &m);

	if (rc)
		return rc;
	for (c = qmeta_rc_end(m); c > 0; c--) {
		if ((rc = qmeta_rc_get(m, c - 1, &v)))
			break;
		if (v)
			break;
	}
	if (rc == 0)
		*end = c * m->cs;
	qmeta_close(m);
	return rc;
}
