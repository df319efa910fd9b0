/*
 * merge: the drivers behind merge.h. Both walk the extent map of one view
 * (chain_map, which reports which layer answers each run), turn the runs
 * that must move into whole target units, read those units through a view
 * and queue them on the target's qcow2_writer, committing in batches.
 */
#include "merge.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/crash.h"
#include "common/big_buffer.h"
#include "common/log.h"

#define MERGE_CHUNK (4ULL << 20)

/* Calls fn for each run of view `v` that its top layer answers (own = true)
 * or does not answer (own = false), in order. */
typedef int (*run_fn)(void *ctx, uint64_t off, uint64_t len);

static int walk_runs(struct chain *v, bool own, run_fn fn, void *ctx)
{
	uint64_t size = chain_size(v), pos = 0;

	while (pos < size) {
		uint64_t len;
		bool top;
		int rc = chain_map_top(v, pos, size - pos, &len, &top);

		if (rc < 0)
			return rc;
		if (top == own && (rc = fn(ctx, pos, len)) < 0)
			return rc;
		pos += len;
	}
	return 0;
}

static int add_len(void *ctx, uint64_t off, uint64_t len)
{
	(void)off;
	*(uint64_t *)ctx += len;
	return 0;
}

/* S's own runs that C does not cover. */
struct under_ctx {
	struct chain *view_c;
	run_fn fn;
	void *ctx;
};

static int under_c(void *p, uint64_t off, uint64_t len)
{
	struct under_ctx *u = p;
	uint64_t end = off + len;

	if (off >= chain_size(u->view_c))
		return 0;
	if (end > chain_size(u->view_c))
		end = chain_size(u->view_c);
	while (off < end) {
		uint64_t n;
		bool top;
		int rc = chain_map_top(u->view_c, off, end - off, &n, &top);

		if (rc < 0)
			return rc;
		if (n > end - off)
			n = end - off;
		if (!top && (rc = u->fn(u->ctx, off, n)) < 0)
			return rc;
		off += n;
	}
	return 0;
}

int merge_measure(struct chain *view_c, struct chain *view_s, struct merge_plan *plan)
{
	struct under_ctx u = { view_c, add_len, &plan->rebase_bytes };

	memset(plan, 0, sizeof(*plan));
	int rc = walk_runs(view_c, true, add_len, &plan->commit_bytes);

	return rc ? rc : walk_runs(view_s, true, under_c, &u);
}

/* ---- moving units ---- */

struct mover {
	struct qcow2_writer *w;
	struct chain *src;       /* the view whose bytes are written */
	struct chain *cmp;       /* rebase: the parent view; equal units are skipped */
	bool compare;            /* rebase: compare against cmp (zeros when NULL) */
	uint64_t done_upto;      /* units before this are queued already */
	uint64_t need;           /* need mode: bytes counted instead of written */
	bool need_only;
	merge_host_fn host_fn;   /* need mode: told each host cluster written in place */
	void *host_ctx;
	uint64_t host_last;      /* the last cluster told + 1, 0 = none */
	uint8_t *buf, *cbuf;     /* chunk bytes each */
	uint64_t chunk;
	/* progress */
	const char *label;
	uint64_t total, moved;
	struct timespec start, last;
};

static double secs(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) + (b->tv_nsec - a->tv_nsec) / 1e9;
}

static void progress(struct mover *m, bool final)
{
	struct timespec now;
	double el;

	clock_gettime(CLOCK_MONOTONIC, &now);
	if (!final && secs(&m->last, &now) < 3.0)
		return;
	m->last = now;
	el = secs(&m->start, &now);
	/* moved counts whole target units, total the source's own bytes: clamp. */
	vlog(LOG_NOTICE, "%s: merged %llu of about %llu bytes (%.0f%%), %.1f MiB/s", m->label,
	     (unsigned long long)m->moved, (unsigned long long)m->total,
	     m->total && m->moved < m->total ? 100.0 * m->moved / m->total : 100.0,
	     el > 0 ? m->moved / el / (1 << 20) : 0.0);
}

static int read_view(struct chain *v, uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t size = v ? chain_size(v) : 0;
	ssize_t n = 0;

	if (off < size) {
		n = chain_read(v, buf, off + len > size ? size - off : len, off);
		if (n < 0)
			return n;
	}
	memset(buf + n, 0, len - n);   /* past the view's end */
	return 0;
}

/* Whether the unit at `at` of the chunk must be written (rebase skips units P already reads). */
static bool unit_differs(const struct mover *m, uint64_t at, uint64_t unit)
{
	return !m->compare || memcmp(m->buf + at, m->cbuf + at, unit);
}

static int tell_in_place(struct mover *m, uint64_t off, uint64_t len)
{
	uint64_t cs = qcow2_writer_cluster_size(m->w);

	for (uint64_t c = off / cs; c * cs < off + len; c++) {
		uint64_t host;
		int rc;

		if (c + 1 <= m->host_last || !(host = qcow2_writer_in_place_host(m->w, c * cs)))
			continue;
		m->host_last = c + 1;
		if ((rc = m->host_fn(m->host_ctx, host, cs)) < 0)
			return rc;
	}
	return 0;
}

static int move_units(struct mover *m, uint64_t off, uint64_t len)
{
	uint64_t unit = qcow2_writer_unit(m->w), vsize = qcow2_writer_vsize(m->w);
	uint64_t start = off / unit * unit, end = (off + len + unit - 1) / unit * unit;
	int rc;

	if (start < m->done_upto)
		start = m->done_upto;
	if (end > (vsize + unit - 1) / unit * unit)
		end = (vsize + unit - 1) / unit * unit;
	while (start < end) {
		uint64_t n = end - start < m->chunk ? end - start : m->chunk;

		if (m->need_only) {
			uint64_t b;

			if ((rc = qcow2_writer_need(m->w, start, n, &b)) < 0)
				return rc;
			m->need += b;
			if (m->host_fn && (rc = tell_in_place(m, start, n)) < 0)
				return rc;
		} else {
			if ((rc = read_view(m->src, m->buf, n, start)) < 0)
				return rc;
			if (m->compare && (rc = read_view(m->cmp, m->cbuf, n, start)) < 0)
				return rc;
			/* Runs of units that differ go to the writer as one call each. */
			for (uint64_t u = 0, v; u < n; u = v) {
				if (!unit_differs(m, u, unit)) {
					v = u + unit;
					continue;
				}
				for (v = u + unit; v < n && unit_differs(m, v, unit); v += unit)
					;
				if ((rc = qcow2_writer_write(m->w, start + u, m->buf + u, v - u)) < 0)
					return rc;
			}
			m->moved += n;
			if (m->moved >= m->total / 2 && m->moved - n < m->total / 2)
				crash_point("merge-half");
			progress(m, false);
		}
		start += n;
		m->done_upto = start;
	}
	return 0;
}

static int move_run(void *ctx, uint64_t off, uint64_t len)
{
	return move_units(ctx, off, len);
}

static int mover_init(struct mover *m, struct qcow2_writer *w, struct chain *src, const char *label,
		      uint64_t total, bool need_only)
{
	memset(m, 0, sizeof(*m));
	m->w = w;
	m->src = src;
	m->label = label;
	m->total = total;
	m->need_only = need_only;
	clock_gettime(CLOCK_MONOTONIC, &m->start);
	m->last = m->start;
	/* A chunk, or the whole disk when that is smaller. */
	m->chunk = (qcow2_writer_vsize(w) + qcow2_writer_unit(w) - 1) / qcow2_writer_unit(w) * qcow2_writer_unit(w);
	if (m->chunk > MERGE_CHUNK || !m->chunk)
		m->chunk = MERGE_CHUNK;
	if (need_only)
		return 0;
	m->buf = big_buffer_alloc(m->chunk);
	m->cbuf = big_buffer_alloc(m->chunk);
	return m->buf && m->cbuf ? 0 : -ENOMEM;
}

static int mover_finish(struct mover *m, int rc)
{
	if (m->need_only)
		m->need += qcow2_writer_refcount_need(m->w, m->need) + qcow2_writer_tail(m->w);
	if (!rc && !m->need_only)
		rc = qcow2_writer_commit(m->w);
	if (!rc && !m->need_only)
		progress(m, true);
	big_buffer_free(m->buf, m->chunk);
	big_buffer_free(m->cbuf, m->chunk);
	return rc;
}

static int commit_run(struct chain *view_c, struct qcow2_writer *s, const char *label, bool need_only,
		      uint64_t *need, merge_host_fn fn, void *ctx)
{
	struct mover m = { 0 };
	uint64_t total = 0;
	int rc;

	/* S takes C's place with its own virtual size: another size would change the disk. */
	if (qcow2_writer_vsize(s) != chain_size(view_c)) {
		vlog(LOG_ERR, "%s: commit needs layers of one size (%llu, child %llu)", label,
		     (unsigned long long)qcow2_writer_vsize(s), (unsigned long long)chain_size(view_c));
		return -EINVAL;
	}
	rc = walk_runs(view_c, true, add_len, &total);

	if (!rc)
		rc = mover_init(&m, s, view_c, label, total, need_only);
	m.host_fn = fn;
	m.host_ctx = ctx;
	if (!rc)
		rc = walk_runs(view_c, true, move_run, &m);
	rc = mover_finish(&m, rc);
	if (need)
		*need = m.need;
	return rc;
}

int merge_commit_need(struct chain *view_c, struct qcow2_writer *into_s, uint64_t *bytes)
{
	return commit_run(view_c, into_s, "", true, bytes, NULL, NULL);
}

int merge_commit(struct chain *view_c, struct qcow2_writer *into_s, const char *label)
{
	return commit_run(view_c, into_s, label, false, NULL, NULL, NULL);
}

/*
 * A backing layer shorter than its child reads as zeros past its end, so C
 * reads zeros there through S but P's bytes once it is rebased onto a
 * longer P. C's runs there that it does not cover are moved like S's own
 * (S's view reads zeros there; units equal to P's are skipped). They lie
 * past all of S's runs, so the mover's units stay in order.
 */
static int past_s_end(struct chain *view_s, struct chain *view_p, struct under_ctx *u)
{
	uint64_t from = chain_size(view_s), to = view_p ? chain_size(view_p) : 0;

	return to > from ? under_c(u, from, to - from) : 0;
}

static int rebase_run(struct chain *view_c, struct chain *view_s, struct chain *view_p,
		      struct qcow2_writer *c, const char *label, bool need_only, uint64_t *need,
		      merge_host_fn fn, void *ctx)
{
	struct merge_plan plan;
	struct mover m = { 0 };
	struct under_ctx u = { view_c, move_run, &m }, t = { view_c, add_len, &plan.rebase_bytes };
	int rc = merge_measure(view_c, view_s, &plan);

	if (!rc)
		rc = past_s_end(view_s, view_p, &t);
	if (!rc)
		rc = mover_init(&m, c, view_s, label, plan.rebase_bytes, need_only);
	m.host_fn = fn;
	m.host_ctx = ctx;
	if (!rc) {
		m.compare = true;
		m.cmp = view_p;
		rc = walk_runs(view_s, true, under_c, &u);
	}
	if (!rc)
		rc = past_s_end(view_s, view_p, &u);
	rc = mover_finish(&m, rc);
	if (need)
		*need = m.need;
	return rc;
}

int merge_rebase_need(struct chain *view_c, struct chain *view_s, struct chain *view_p,
		      struct qcow2_writer *into_c, uint64_t *bytes)
{
	return rebase_run(view_c, view_s, view_p, into_c, "", true, bytes, NULL, NULL);
}

int merge_rebase(struct chain *view_c, struct chain *view_s, struct chain *view_p,
		 struct qcow2_writer *into_c, const char *label)
{
	return rebase_run(view_c, view_s, view_p, into_c, label, false, NULL, NULL, NULL);
}

int merge_in_place(bool commit, struct chain *view_c, struct chain *view_s, struct chain *view_p,
		   struct qcow2_writer *into, merge_host_fn fn, void *ctx)
{
	uint64_t need;

	return commit ? commit_run(view_c, into, "", true, &need, fn, ctx)
		      : rebase_run(view_c, view_s, view_p, into, "", true, &need, fn, ctx);
}

int merge_fill_from_view(void *view, void *buf, uint64_t len, uint64_t off)
{
	return read_view(view, buf, len, off);
}

int merge_run(bool commit, struct chain *view_c, struct chain *view_s, struct chain *view_p,
	      struct qcow2_writer *into, const char *new_backing, const char *label)
{
	uint64_t need;
	int rc = commit ? merge_commit_need(view_c, into, &need)
			: merge_rebase_need(view_c, view_s, view_p, into, &need);

	if (!rc && (need > qcow2_writer_room(into) || need > qcow2_writer_table_room(into)))
		rc = -ENOSPC;
	if (!rc)
		rc = commit ? merge_commit(view_c, into, label)
			    : merge_rebase(view_c, view_s, view_p, into, label);
	if (!rc && !commit)
		rc = qcow2_writer_set_backing(into, new_backing);
	return rc;
}
