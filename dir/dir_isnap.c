/*
 * dir_isnap: qcow2 internal snapshots, read side. The snapshot table
 * (qemu's docs/interop/qcow2.txt, "Snapshots") lists for each snapshot its
 * own L1 table; the L2 tables and data clusters are shared with the active
 * image through refcounts. A snapshot view is the same file read with the
 * header's virtual size and active L1 (offset, size) replaced by the
 * snapshot's: a layer_io that patches those header bytes on the way out and
 * passes everything else through, so the engine reads it unchanged and the
 * vmstate area past the snapshot's virtual size is never reachable.
 */
#include "dir/dir_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chain/qcow2_format.h"

#define MAX_TABLE (64u << 20)   /* qemu's QCOW_MAX_SNAPSHOTS_SIZE */
#define MAX_SNAPS 65536

void dir_isnap_free(struct dir_isnap *s, int n)
{
	for (int i = 0; s && i < n; i++) {
		free(s[i].id);
		free(s[i].name);
	}
	free(s);
}

int dir_isnap_list(struct layer_io *io, struct dir_isnap **out, int *n)
{
	uint8_t hdr[QCOW2_HEADER_V2 + 32];
	struct qcow2_header h;
	uint64_t table_off, pos, table_len = 0;
	struct dir_isnap *s;
	uint8_t *buf;
	uint32_t nb;
	int rc;

	*out = NULL;
	*n = 0;
	if (io->size < QCOW2_HEADER_V2)
		return -EIO;
	rc = layer_pread(io, hdr, QCOW2_HEADER_V2, 0);
	if (rc)
		return rc;
	if (qcow2_decode_header(hdr, QCOW2_HEADER_V2, &h))
		return -EIO;
	nb = qcow2_be32(hdr + 60);
	table_off = qcow2_be64(hdr + 64);
	if (!nb)
		return 0;
	if (nb > MAX_SNAPS || table_off >= io->size || table_off & 7)
		return -EIO;
	table_len = io->size - table_off < MAX_TABLE ? io->size - table_off : MAX_TABLE;
	buf = malloc(table_len);
	s = calloc(nb, sizeof(*s));
	if (!buf || !s) {
		free(buf);
		free(s);
		return -ENOMEM;
	}
	rc = layer_pread(io, buf, table_len, table_off);
	for (pos = 0; rc == 0 && *n < (int)nb; (*n)++) {
		struct dir_isnap *e = &s[*n];
		uint32_t extra, idl, namel;
		uint64_t len;

		if (table_len - pos < 40) {
			rc = -EIO;
			break;
		}
		e->l1_offset = qcow2_be64(buf + pos);
		e->l1_size = qcow2_be32(buf + pos + 8);
		idl = (uint32_t)buf[pos + 12] << 8 | buf[pos + 13];
		namel = (uint32_t)buf[pos + 14] << 8 | buf[pos + 15];
		e->date_sec = qcow2_be32(buf + pos + 16);
		e->date_nsec = qcow2_be32(buf + pos + 20);
		e->vm_state_size = qcow2_be32(buf + pos + 32);
		extra = qcow2_be32(buf + pos + 36);
		len = 40ULL + extra + idl + namel;
		if (extra > 1024 || len > table_len - pos) {
			rc = -EIO;
			break;
		}
		e->disk_size = h.size;
		if (extra >= 8)
			e->vm_state_size = qcow2_be64(buf + pos + 40);
		if (extra >= 16)
			e->disk_size = qcow2_be64(buf + pos + 48);
		e->id = strndup((char *)buf + pos + 40 + extra, idl);
		e->name = strndup((char *)buf + pos + 40 + extra + idl, namel);
		if (!e->id || !e->name) {
			rc = -ENOMEM;
			(*n)++;
			break;
		}
		if ((e->l1_offset & 511) || e->l1_offset >= io->size ||
		    (uint64_t)e->l1_size * 8 > io->size - e->l1_offset) {
			rc = -EIO;
			(*n)++;
			break;
		}
		pos += (len + 7) & ~7ULL;
	}
	free(buf);
	if (rc) {
		dir_isnap_free(s, *n);
		*n = 0;
		return rc;
	}
	*out = s;
	return 0;
}

struct snap_io {
	struct layer_io io;
	struct layer_io *inner;
	uint8_t patch[48];      /* header bytes 0..47 as the snapshot sees them */
	char *name, *id;
};

static int sio_pread(struct layer_io *io, void *buf, size_t len, uint64_t off)
{
	struct snap_io *s = (struct snap_io *)io;
	int rc = layer_pread(s->inner, buf, len, off);

	if (rc == 0 && off < sizeof(s->patch)) {
		size_t n = sizeof(s->patch) - off < len ? sizeof(s->patch) - off : len;

		memcpy(buf, s->patch + off, n);
	}
	return rc;
}

static int sio_map_fd(struct layer_io *io, uint64_t off, uint64_t *len, int *fd, uint64_t *fd_off)
{
	struct snap_io *s = (struct snap_io *)io;

	if (off < sizeof(s->patch) || !s->inner->ops->map_fd)
		return -EINVAL;
	return s->inner->ops->map_fd(s->inner, off, len, fd, fd_off);
}

static void sio_close(struct layer_io *io)
{
	struct snap_io *s = (struct snap_io *)io;

	layer_close(s->inner);
	free(s->name);
	free(s->id);
	free(s);
}

static const struct layer_io_ops sio_ops = {
	.pread = sio_pread, .map_fd = sio_map_fd, .close = sio_close,
};

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}

int dir_isnap_layer(struct layer_io *io, const struct dir_isnap *snap, struct layer_io **out)
{
	struct snap_io *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s) {
		layer_close(io);
		return -ENOMEM;
	}
	rc = layer_pread(io, s->patch, sizeof(s->patch), 0);
	if (rc) {
		layer_close(io);
		free(s);
		return rc;
	}
	put64(s->patch + 24, snap->disk_size);
	put32(s->patch + 36, snap->l1_size);
	put64(s->patch + 40, snap->l1_offset);
	s->inner = io;
	if (asprintf(&s->name, "%s@%s", io->name, snap->name) < 0)
		s->name = NULL;
	if (asprintf(&s->id, "%s#%s", io->id, snap->id) < 0)
		s->id = NULL;
	if (!s->name || !s->id) {
		sio_close(&s->io);
		return -ENOMEM;
	}
	s->io.ops = &sio_ops;
	s->io.size = io->size;
	s->io.name = s->name;
	s->io.id = s->id;
	s->io.ctime = snap->date_sec;
	*out = &s->io;
	return 0;
}

const char *dir_layer_rel(struct layer_io *io)
{
	if (io && io->ops == &sio_ops)
		return file_io_rel(((struct snap_io *)io)->inner);
	return file_io_rel(io);
}
