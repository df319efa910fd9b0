/* chain_reader: see chain_reader.h. */
#include "store/chain_reader.h"

#include <errno.h>
#include <stdlib.h>

#include "chain/chain.h"
#include "chain/diff.h"

struct chain_reader {
	struct view_reader base;
	struct chain *chain;
};

/* Past the chain's end but inside r->size (a raw layer truncated since the
 * listing): chain_read stops short there, and every reply path turns a
 * short read into EIO. */
static ssize_t cr_read(struct view_reader *r, void *buf, size_t len, uint64_t off)
{
	return chain_read(((struct chain_reader *)r)->chain, buf, len, off);
}

static int cr_map(struct view_reader *r, uint64_t off, uint64_t len, struct view_extent *e)
{
	struct chain_extent ce;
	uint64_t run;
	int fd, rc;

	if (off >= chain_size(((struct chain_reader *)r)->chain))
		return -EIO;   /* the listing promised bytes the layer no longer holds */
	rc = chain_map(((struct chain_reader *)r)->chain, off, len, &ce);
	if (rc < 0)
		return rc;
	e->len = ce.len < len ? ce.len : len;
	e->kind = ce.kind == CHAIN_EXT_ZERO ? VIEW_EXT_ZERO : VIEW_EXT_READ;
	run = e->len;
	if (ce.kind == CHAIN_EXT_DATA && ce.io->ops->map_fd) {
		rc = ce.io->ops->map_fd(ce.io, ce.host_off, &run, &fd, &e->fd_off);
		/* EIO: the layer no longer holds these bytes (truncated), which
		 * SEEK_DATA must not call data. Anything else: read() serves it. */
		if (rc == -EIO)
			return rc;
		if (rc == 0 && run > 0) {
			e->kind = VIEW_EXT_FD;
			e->fd = fd;
			if (run < e->len)
				e->len = run;
		}
	}
	return 0;
}

/* Both views are chains of one store: the engine compares their metadata. */
static int cr_changed(struct view_reader *r, struct view_reader *older, view_range_fn fn, void *arg)
{
	struct chain *c = ((struct chain_reader *)r)->chain, *o;

	if (!older)
		return chain_allocated(c, fn, arg);
	o = chain_reader_chain(older);
	return o ? chain_changed(c, o, fn, arg) : -EINVAL;
}

static void cr_free(struct view_reader *r)
{
	chain_put(((struct chain_reader *)r)->chain);
	free(r);
}

static const struct view_reader_ops chain_reader_ops = {
	.read = cr_read,
	.map = cr_map,
	.changed = cr_changed,
	.free = cr_free,
};

int chain_reader_new_sized(struct chain *c, uint64_t size, struct view_reader **out)
{
	int rc = chain_reader_new(c, out);

	if (rc == 0 && size > (*out)->size)
		(*out)->size = size;
	return rc;
}

int chain_reader_new(struct chain *c, struct view_reader **out)
{
	struct chain_reader *r = calloc(1, sizeof(*r));

	if (!r) {
		chain_put(c);
		return -ENOMEM;
	}
	r->base.ops = &chain_reader_ops;
	r->base.size = chain_size(c);
	r->base.refs = 1;
	r->base.broken = chain_is_broken(c);
	r->chain = c;
	*out = &r->base;
	return 0;
}

struct chain *chain_reader_chain(struct view_reader *r)
{
	return r->ops == &chain_reader_ops ? ((struct chain_reader *)r)->chain : NULL;
}
