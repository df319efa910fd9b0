/*
 * chain: layers stacked top-down and read as one disk. See chain.h.
 *
 * A chain is immutable once opened (apart from the L2 cache and its
 * reference count), so readers share it without locks. Opening follows
 * backing strings iteratively, never recursively; a layer that cannot be
 * opened ends the chain as a "broken" layer: reads that reach it fail.
 */
#include "chain.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/log_cause.h"
#include "chain_layers.h"
#include "qcow2_image.h"
#include "qcow2_snapshot.h"

#define MAX_DEPTH 1024
#define MAP_WINDOW (8ULL << 20)   /* a power of two: one map_once looks this far at most */

struct layer {
	struct layer_io *io;          /* NULL for a broken layer that never opened */
	struct qcow2_image *img;      /* NULL: raw */
	uint64_t size;                /* virtual size of this layer */
	const char *broken;           /* why reads reaching it fail, or NULL */
};

struct chain {
	int refs;                     /* atomic */
	int n, cap;
	struct layer *layers;         /* grown as the chain deepens: most chains have a few layers */
	uint64_t size;
	bool broken;
	bool poisoned;                /* a loop or runaway depth: no byte of it is trustworthy */
	uint64_t min_span;            /* smallest L2 slice span among qcow2 layers, at most MAP_WINDOW */
	char label[256];
};

static bool has_magic(struct layer_io *io)
{
	uint8_t m[4];

	return io->size >= 4 && layer_pread(io, m, 4, 0) == 0 && !memcmp(m, QCOW2_MAGIC_BYTES, 4);
}

int chain_probe_layer(struct layer_io *io, struct chain_probe *p)
{
	struct qcow2_image *img;
	const char *why;

	memset(p, 0, sizeof(*p));
	if (!has_magic(io)) {
		p->format = CHAIN_FMT_RAW;
		p->virtual_size = io->size;
		return 0;
	}
	why = qcow2_image_open_header(io, io->name, &img);
	if (why) {
		p->format = CHAIN_FMT_BAD;
		snprintf(p->error, sizeof(p->error), "%s", why);
		return 0;
	}
	p->format = CHAIN_FMT_QCOW2;
	p->virtual_size = qcow2_image_size(img);
	if (qcow2_image_backing(img))
		p->backing = strdup(qcow2_image_backing(img));
	if (qcow2_image_backing_fmt(img)[0])
		p->backing_format = strdup(qcow2_image_backing_fmt(img));
	qcow2_image_close(img);
	return 0;
}

void chain_probe_release(struct chain_probe *p)
{
	free(p->backing);
	free(p->backing_format);
	p->backing = p->backing_format = NULL;
}

/* Logged once per view and cause: a view opened again and again (each
 * open(2) of current, each rescan) that breaks the same way says so once. */
static void mark_broken(struct chain *c, struct layer *l, const char *name, const char *why)
{
	char subject[300], cause[600];

	l->broken = why;
	c->broken = true;
	snprintf(subject, sizeof(subject), "broken:%s", c->label);
	snprintf(cause, sizeof(cause), "%s: %s", name, why);
	if (log_cause_new(subject, cause))
		vlog(LOG_ERR, "%s: layer %s: %s", c->label, name, why);
}

/* Open layer `l` from io as format fmt. */
static void open_layer(struct chain *c, struct layer *l, struct layer_io *io,
		       enum chain_layer_format fmt)
{
	const char *why;

	l->io = io;
	l->size = io->size;
	if (fmt == CHAIN_FMT_AUTO)
		fmt = has_magic(io) ? CHAIN_FMT_QCOW2 : CHAIN_FMT_RAW;
	if (fmt == CHAIN_FMT_RAW)
		return;
	why = qcow2_image_open(io, c->label, &l->img);
	if (why) {
		mark_broken(c, l, io->name, why);
		return;
	}
	l->size = qcow2_image_size(l->img);
	if (qcow2_image_l2_span(l->img) < c->min_span)
		c->min_span = qcow2_image_l2_span(l->img);
}

static bool seen_before(const struct chain *c, const struct layer_io *io)
{
	for (int i = 0; i < c->n - 1; i++)
		if (c->layers[i].io && !strcmp(c->layers[i].io->id, io->id))
			return true;
	return false;
}

/* The refusal names the store's own kind: a directory has no volume group. */
static const char *outside_why(const struct chain_store *st)
{
	if (st->kind && !strcmp(st->kind, "volume group"))
		return "backing file is outside the volume group (refused)";
	if (st->kind && !strcmp(st->kind, "directory"))
		return "backing file is outside the directory store (refused)";
	return "backing file is outside the store (refused)";
}

/* Resolve the backing layer of the last layer; false when the chain ends. */
static bool next_layer(struct chain *c, const struct chain_store *st)
{
	struct layer *top = &c->layers[c->n - 1], *l;
	const char *backing, *fmt;
	enum chain_layer_format f = CHAIN_FMT_AUTO;
	struct layer_io *io = NULL;
	int rc;

	if (top->broken || !top->img || !(backing = qcow2_image_backing(top->img)))
		return false;
	fmt = qcow2_image_backing_fmt(top->img);
	if (!strcmp(fmt, "raw"))
		f = CHAIN_FMT_RAW;
	else if (!strcmp(fmt, "qcow2"))
		f = CHAIN_FMT_QCOW2;
	else if (fmt[0]) {
		mark_broken(c, top, top->io->name, "backing format is neither raw nor qcow2");
		return false;
	}
	if (c->n == c->cap) {
		int cap = c->cap * 2 > MAX_DEPTH + 1 ? MAX_DEPTH + 1 : c->cap * 2;
		struct layer *grown = realloc(c->layers, cap * sizeof(*grown));

		if (!grown) {
			mark_broken(c, top, top->io->name, "out of memory");
			return false;
		}
		memset(grown + c->cap, 0, (cap - c->cap) * sizeof(*grown));
		c->layers = grown;
		c->cap = cap;
		top = &c->layers[c->n - 1];
	}
	l = &c->layers[c->n++];
	if (c->n > MAX_DEPTH) {
		c->poisoned = true;
		mark_broken(c, l, backing, "chain deeper than 1024 layers");
		return false;
	}
	rc = st->open_backing(st, top->io, backing, &io);
	if (rc == -ENOENT) {
		mark_broken(c, l, backing, "backing layer is missing");
		return false;
	}
	if (rc == -EACCES) {
		mark_broken(c, l, backing, outside_why(st));
		return false;
	}
	if (rc == -EINVAL) {
		mark_broken(c, l, backing, "backing layer is not a regular file or block device (refused)");
		return false;
	}
	if (rc) {
		mark_broken(c, l, backing, "cannot open the backing layer");
		return false;
	}
	if (seen_before(c, io)) {
		layer_close(io);
		/* qemu refuses such a chain outright; so do we, for every read. */
		c->poisoned = true;
		mark_broken(c, l, backing, "backing chain loops");
		return false;
	}
	open_layer(c, l, io, f);
	return true;
}

/* Make the top layer read through internal snapshot `name`. 0 or -errno (logged). */
static int select_snapshot(struct chain *c, const char *name)
{
	struct layer *l = &c->layers[0];
	struct qcow2_snapshot_list list;
	const char *why;
	int i, rc;

	if (l->broken)
		return -EIO;
	if (!l->img)
		return -ENOENT; /* raw: no internal snapshots */
	rc = qcow2_snapshot_list(l->io, &list);
	if (rc)
		return rc;
	i = qcow2_snapshot_find(&list, name);
	if (i < 0) {
		rc = -ENOENT;
	} else if ((why = qcow2_image_use_l1(l->img, list.s[i].l1_offset, list.s[i].l1_size,
					     list.s[i].disk_size))) {
		vlog(LOG_ERR, "%s: layer %s: snapshot %s: %s", c->label, l->io->name, name, why);
		rc = why[0] == 'o' ? -ENOMEM : -EIO;
	} else {
		l->size = list.s[i].disk_size;
	}
	qcow2_snapshot_list_free(&list);
	return rc;
}

static int open_chain(struct layer_io *top, enum chain_layer_format top_format,
		      const struct chain_store *store, const char *snapshot, const char *label,
		      struct chain **out)
{
	struct chain *c = calloc(1, sizeof(*c));

	if (c)
		c->layers = calloc(c->cap = 4, sizeof(*c->layers));
	if (!c || !c->layers) {
		free(c);
		layer_close(top);
		return -ENOMEM;
	}
	c->min_span = MAP_WINDOW;
	c->refs = 1;
	snprintf(c->label, sizeof(c->label), "%s", label);
	c->n = 1;
	open_layer(c, &c->layers[0], top, top_format);
	if (snapshot) {
		int rc = select_snapshot(c, snapshot);

		if (rc) {
			chain_put(c);
			*out = NULL;
			return rc;
		}
	}
	while (next_layer(c, store))
		;
	if (!c->broken) {   /* whole again: its next fault is news */
		char subject[300];

		snprintf(subject, sizeof(subject), "broken:%s", c->label);
		log_cause_clear(subject);
	}
	c->size = c->layers[0].size;
	*out = c;
	return 0;
}

int chain_open(struct layer_io *top, enum chain_layer_format top_format,
	       const struct chain_store *store, const char *label, struct chain **out)
{
	return open_chain(top, top_format, store, NULL, label, out);
}

int chain_open_snapshot(struct layer_io *top, enum chain_layer_format top_format,
			const struct chain_store *store, const char *snapshot, const char *label,
			struct chain **out)
{
	return open_chain(top, top_format, store, snapshot, label, out);
}

void chain_get(struct chain *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
}

void chain_put(struct chain *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL))
		return;
	for (int i = 0; i < c->n; i++) {
		qcow2_image_close(c->layers[i].img);
		layer_close(c->layers[i].io);
	}
	free(c->layers);
	free(c);
}

uint64_t chain_size(const struct chain *c)
{
	return c->size;
}

int chain_depth(const struct chain *c)
{
	return c->n;
}

bool chain_is_broken(const struct chain *c)
{
	return c->broken;
}

/* One top-down walk: the run at off, cut at the L2 table boundaries of every layer it consults. */
static int map_once(struct chain *c, uint64_t off, uint64_t len, struct chain_extent *e)
{
	memset(e, 0, sizeof(*e));
	if (off >= c->size || len == 0)
		return -EINVAL;
	if (c->poisoned)
		return -EIO;
	if (len > c->size - off)
		len = c->size - off;
	/* An upper layer's run is cut short by any layer below it: scanning it
	 * far ahead would be thrown away, and redone by the next call. */
	if (len > MAP_WINDOW - off % MAP_WINDOW)
		len = MAP_WINDOW - off % MAP_WINDOW;
	for (int d = 0; d < c->n; d++) {
		struct layer *l = &c->layers[d];
		struct qcow2_run r;
		int rc;

		if (l->broken)
			return -EIO;
		if (off >= l->size) { /* a shorter backing layer reads as zeros past its end */
			e->kind = CHAIN_EXT_ZERO;
			e->len = len;
			e->depth = -1;
			return 0;
		}
		if (len > l->size - off)
			len = l->size - off;
		if (!l->img) {
			e->kind = CHAIN_EXT_DATA;
			e->len = len;
			e->io = l->io;
			e->host_off = off;
			e->depth = d;
			return 0;
		}
		rc = qcow2_image_map(l->img, off, len, &r);
		if (rc)
			return rc;
		len = r.len;
		if (r.kind == QCOW2_UNALLOCATED)
			continue;
		e->len = len;
		e->depth = d;
		if (r.kind == QCOW2_ZERO) {
			e->kind = CHAIN_EXT_ZERO;
		} else if (r.kind == QCOW2_DATA) {
			e->kind = CHAIN_EXT_DATA;
			e->io = l->io;
			e->host_off = r.host;
		} else {
			e->kind = CHAIN_EXT_COPY;
		}
		return 0;
	}
	e->kind = CHAIN_EXT_ZERO;
	e->len = len;
	e->depth = -1;
	return 0;
}

/*
 * A run that ends on an L2 slice boundary (or a MAP_WINDOW boundary) may go
 * on in the next table (contiguous host clusters, more zeros): join those so
 * large reads are one pread. Spans are powers of two, so a cut caused by any
 * layer's table boundary is a multiple of the smallest span; other cuts are
 * real. Each join costs one window, so a call costs what it returns.
 */
int chain_map(struct chain *c, uint64_t off, uint64_t len, struct chain_extent *e)
{
	int rc = map_once(c, off, len, e);

	if (rc || e->kind == CHAIN_EXT_COPY)
		return rc;
	if (len > c->size - off)
		len = c->size - off;
	while (e->len < len && (off + e->len) % c->min_span == 0) {
		struct chain_extent n;

		/* An error further on belongs to the next call, which maps it again. */
		if (map_once(c, off + e->len, len - e->len, &n) || n.kind != e->kind || n.depth != e->depth)
			break;
		if (e->kind == CHAIN_EXT_DATA && (n.io != e->io || n.host_off != e->host_off + e->len))
			break;
		e->len += n.len;
	}
	return 0;
}

int chain_map_top(struct chain *c, uint64_t off, uint64_t len, uint64_t *run, bool *own)
{
	struct layer *l = &c->layers[0];
	struct qcow2_run r;
	int rc;

	if (off >= c->size || len == 0)
		return -EINVAL;
	if (c->poisoned || l->broken)
		return -EIO;
	if (len > c->size - off)
		len = c->size - off;
	if (!l->img) {
		*run = len;
		*own = true;
		return 0;
	}
	rc = qcow2_image_map(l->img, off, len, &r);
	if (rc)
		return rc;
	*run = r.len;
	*own = r.kind != QCOW2_UNALLOCATED;
	return 0;
}

ssize_t chain_read(struct chain *c, void *buf, size_t len, uint64_t off)
{
	size_t done = 0;

	if (off >= c->size)
		return 0;
	if (len > c->size - off)
		len = c->size - off;
	while (done < len) {
		struct chain_extent e;
		int rc = chain_map(c, off + done, len - done, &e);

		if (rc)
			return rc;
		if (e.kind == CHAIN_EXT_ZERO)
			memset((char *)buf + done, 0, e.len);
		else if (e.kind == CHAIN_EXT_DATA)
			rc = layer_pread(e.io, (char *)buf + done, e.len, e.host_off);
		else
			rc = qcow2_image_read_compressed(c->layers[e.depth].img, off + done,
							 (char *)buf + done, e.len);
		if (rc)
			return rc < 0 ? rc : -EIO;
		done += e.len;
	}
	return done;
}

int chain_layer_info(const struct chain *c, int depth, struct chain_layer_info *out)
{
	const struct layer *l;

	if (depth < 0 || depth >= c->n)
		return -EINVAL;
	if (c->poisoned)
		return -EIO;
	l = &c->layers[depth];
	out->io = l->io;
	out->img = l->img;
	out->size = l->size;
	out->broken = l->broken != NULL;
	return 0;
}
