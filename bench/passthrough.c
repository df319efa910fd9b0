/*
 * passthrough: the ceiling for the read benchmark. A minimal low-level FUSE
 * server exposing one file, disk.raw, whose bytes come straight from a raw
 * image: every read is answered with the image's (fd, offset), spliced like
 * vstorfs's plain data runs. Whatever this reaches is what this kernel's
 * FUSE can do; vstorfs cannot beat it.
 *
 * usage: passthrough IMAGE MOUNTPOINT   (foreground; umount to stop)
 */
#define FUSE_USE_VERSION 314
#include <errno.h>
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int image_fd;
static off_t image_size;

static void fill(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = image_size;
	}
}

static void pt_init(void *u, struct fuse_conn_info *conn)
{
	(void)u;
	conn->want |= FUSE_CAP_ASYNC_READ;
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE | (conn->capable & FUSE_CAP_SPLICE_MOVE);
	conn->max_readahead = 1 << 20;
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e = { .ino = 2, .attr_timeout = 60, .entry_timeout = 60 };

	if (parent != FUSE_ROOT_ID || strcmp(name, "disk.raw"))
		return (void)fuse_reply_err(req, ENOENT);
	fill(2, &e.attr);
	fuse_reply_entry(req, &e);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	fill(ino, &st);
	fuse_reply_attr(req, &st, 60);
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != 2)
		return (void)fuse_reply_err(req, EISDIR);
	fuse_reply_open(req, fi);
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct fuse_bufvec v = FUSE_BUFVEC_INIT(0);

	(void)ino;
	(void)fi;
	if (off >= image_size)
		return (void)fuse_reply_buf(req, NULL, 0);
	if ((off_t)size > image_size - off)
		size = image_size - off;
	v.buf[0].size = size;
	v.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
	v.buf[0].fd = image_fd;
	v.buf[0].pos = off;
	fuse_reply_data(req, &v, FUSE_BUF_SPLICE_MOVE);
}

static const struct fuse_lowlevel_ops ops = {
	.init = pt_init, .lookup = pt_lookup, .getattr = pt_getattr, .open = pt_open, .read = pt_read,
};

int main(int argc, char **argv)
{
	char *fargv[] = { argv[0], "-o", "ro,default_permissions,fsname=passthrough", NULL };
	struct fuse_args args = FUSE_ARGS_INIT(3, fargv);
	struct fuse_session *se;
	struct fuse_loop_config *cfg;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: %s IMAGE MOUNTPOINT\n", argv[0]);
		return 2;
	}
	image_fd = open(argv[1], O_RDONLY);
	if (image_fd < 0 || (image_size = lseek(image_fd, 0, SEEK_END)) < 0) {
		perror(argv[1]);
		return 1;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se || fuse_set_signal_handlers(se) || fuse_session_mount(se, argv[2]))
		return 1;
	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(cfg, 16);
	rc = fuse_session_loop_mt(se, cfg);
	fuse_loop_cfg_destroy(cfg);
	fuse_session_unmount(se);
	fuse_remove_signal_handlers(se);
	fuse_session_destroy(se);
	return rc ? 1 : 0;
}
