/*
 * dir_reader: a view_reader over a struct chain, for the directory store
 * until store/chain_reader.c (the generic one) is on this branch.
 */
#include "dir/dir_internal.h"

#include <errno.h>
#include <stdlib.h>

#include "store/view_reader.h"

struct chain_reader {
	struct view_reader r;
	struct chain *c;
};

static ssize_t cr_read(struct view_reader *r, void *buf, size_t len, uint64_t off)
{
	struct chain_reader *cr = (struct chain_reader *)r;
	ssize_t n = chain_read(cr->c, buf, len, off);

	if (n >= 0 && (size_t)n != len)
		return -EIO;
	return n;
}

static int cr_map(struct view_reader *r, uint64_t off, uint64_t len, struct view_extent *e)
{
	struct chain_reader *cr = (struct chain_reader *)r;
	struct chain_extent ce;
	int rc = chain_map(cr->c, off, len, &ce);

	if (rc)
		return rc;
	e->len = ce.len;
	e->fd = -1;
	e->fd_off = 0;
	if (ce.kind == CHAIN_EXT_ZERO) {
		e->kind = VIEW_EXT_ZERO;
	} else if (ce.kind == CHAIN_EXT_DATA && ce.io->ops->map_fd) {
		uint64_t l = ce.len, fo;
		int fd;

		if (ce.io->ops->map_fd(ce.io, ce.host_off, &l, &fd, &fo) == 0 && l) {
			e->kind = VIEW_EXT_FD;
			e->fd = fd;
			e->fd_off = fo;
			e->len = l;
		} else {
			e->kind = VIEW_EXT_READ;
		}
	} else {
		e->kind = VIEW_EXT_READ;
	}
	return 0;
}

static void cr_free(struct view_reader *r)
{
	struct chain_reader *cr = (struct chain_reader *)r;

	chain_put(cr->c);
	free(cr);
}

static const struct view_reader_ops cr_ops = { .read = cr_read, .map = cr_map, .free = cr_free };

int dir_reader_new(struct chain *c, struct view_reader **out)
{
	struct chain_reader *cr = calloc(1, sizeof(*cr));

	if (!cr) {
		chain_put(c);
		return -ENOMEM;
	}
	cr->r.ops = &cr_ops;
	cr->r.size = chain_size(c);
	cr->r.refs = 1;
	cr->c = c;
	*out = &cr->r;
	return 0;
}
