/*
 * Benchmark ceiling: a trivial libfuse3 low-level server exposing one raw
 * file as MOUNTPOINT/disk.raw, read-only. Reads are answered like vstorfs
 * answers plain data runs (an fd/offset buffer handed to fuse_reply_data,
 * spliced when the kernel allows), with the same multithreaded loop and
 * readahead, and no page cache kept across opens.
 *
 * With --splice the kernel is asked for splice writes (FUSE_CAP_SPLICE_WRITE
 * and _MOVE): libfuse then splices the fd buffers into /dev/fuse instead of
 * reading them into memory and writev()ing them, one copy less.
 *
 * With --direct-io every open is FOPEN_DIRECT_IO: each read(2) becomes one
 * request of its own size, with no page cache (and no readahead) between.
 *
 * With --keep-cache the FUSE page cache survives opens, as vstorfs keeps it
 * for snapshot views.
 *
 * Built with -DPT_RBD (and -lrbd -lrados), RAWFILE may be rbd:POOL/IMAGE[@SNAP]:
 * each read is then one rbd_read of the image (client.admin, $CEPH_CONF)
 * into a buffer the thread keeps, the least any FUSE server over librbd does.
 *
 * usage: passthrough [--splice] [--direct-io] [--keep-cache] RAWFILE MOUNTPOINT [-f] [-o opts]
 */
#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>
#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#ifdef PT_RBD
#include <rbd/librbd.h>
#endif

static int src_fd = -1;
static int use_splice;
static int use_direct_io;
static int use_keep_cache;
static struct stat src_st;

#define FILE_INO 2
static const char *FILE_NAME = "disk.raw";

#ifdef PT_RBD
static rados_t cluster;
static rados_ioctx_t io;
static rbd_image_t img;

/* rbd:POOL/IMAGE[@SNAP]: open it read-only and take its size for src_st */
static int rbd_source(const char *spec)
{
	char pool[256], name[512], *snap;
	const char *slash = strchr(spec, '/');
	rbd_image_info_t info;
	int e;

	if (!slash || (size_t)(slash - spec) >= sizeof(pool) || strlen(slash + 1) >= sizeof(name))
		return -EINVAL;
	memcpy(pool, spec, slash - spec);
	pool[slash - spec] = 0;
	strcpy(name, slash + 1);
	if ((snap = strchr(name, '@')))
		*snap++ = 0;
	if ((e = rados_create(&cluster, "admin")) < 0 || (e = rados_conf_read_file(cluster, NULL)) < 0 ||
	    (e = rados_conf_parse_env(cluster, NULL)) < 0 || (e = rados_connect(cluster)) < 0 || (e = rados_ioctx_create(cluster, pool, &io)) < 0 ||
	    (e = rbd_open_read_only(io, name, &img, snap)) < 0 ||
	    (e = rbd_stat(img, &info, sizeof(info))) < 0)
		return e;
	memset(&src_st, 0, sizeof(src_st));
	src_st.st_size = info.size;
	src_st.st_blocks = info.size / 512;
	return 0;
}
#endif

static void fill_attr(fuse_ino_t ino, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	if (ino == FUSE_ROOT_ID) {
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2;
	} else {
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = src_st.st_size;
		st->st_blocks = src_st.st_blocks;
	}
	st->st_blksize = 4096;
	st->st_mtim = src_st.st_mtim;
	st->st_ctim = src_st.st_ctim;
	st->st_atim = src_st.st_atim;
}

static void pt_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	conn->want |= FUSE_CAP_ASYNC_READ;
	conn->max_readahead = 1 << 20;
	if (use_splice)
		conn->want |= FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE;
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;

	if (parent != FUSE_ROOT_ID || strcmp(name, FILE_NAME))
		return (void)fuse_reply_err(req, ENOENT);
	memset(&e, 0, sizeof(e));
	e.ino = FILE_INO;
	e.attr_timeout = e.entry_timeout = 1.0;
	fill_attr(FILE_INO, &e.attr);
	fuse_reply_entry(req, &e);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	(void)fi;
	if (ino != FUSE_ROOT_ID && ino != FILE_INO)
		return (void)fuse_reply_err(req, ENOENT);
	fill_attr(ino, &st);
	fuse_reply_attr(req, &st, 1.0);
}

static void pt_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	char buf[512];
	size_t used = 0;
	struct stat st;
	const char *names[] = { ".", "..", FILE_NAME };
	const fuse_ino_t inos[] = { FUSE_ROOT_ID, FUSE_ROOT_ID, FILE_INO };

	(void)fi;
	if (ino != FUSE_ROOT_ID)
		return (void)fuse_reply_err(req, ENOTDIR);
	if (size > sizeof(buf))
		size = sizeof(buf);
	for (off_t i = off; i < 3; i++) {
		size_t n;

		memset(&st, 0, sizeof(st));
		st.st_ino = inos[i];
		st.st_mode = i < 2 ? S_IFDIR : S_IFREG;
		n = fuse_add_direntry(req, buf + used, size - used, names[i], &st, i + 1);
		if (n > size - used)
			break;
		used += n;
	}
	fuse_reply_buf(req, buf, used);
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FILE_INO)
		return (void)fuse_reply_err(req, EISDIR);
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return (void)fuse_reply_err(req, EROFS);
	fi->keep_cache = use_keep_cache;
	fi->direct_io = use_direct_io;
	fuse_reply_open(req, fi);
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec v = FUSE_BUFVEC_INIT(size);

	(void)ino;
	(void)fi;
	if (off >= src_st.st_size)
		return (void)fuse_reply_buf(req, NULL, 0);
	if ((off_t)size > src_st.st_size - off)
		size = src_st.st_size - off;
#ifdef PT_RBD
	if (img) {
		static __thread char *buf;
		static __thread size_t cap;
		ssize_t n;

		if (cap < size) {
			free(buf);
			cap = 0;
			if (!(buf = malloc(size)))
				return (void)fuse_reply_err(req, ENOMEM);
			cap = size;
		}
		n = rbd_read(img, off, size, buf);
		if (n < 0)
			return (void)fuse_reply_err(req, (int)-n);
		return (void)fuse_reply_buf(req, buf, n);
	}
#endif
	v.buf[0].size = size;
	v.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
	v.buf[0].fd = src_fd;
	v.buf[0].pos = off;
	fuse_reply_data(req, &v, FUSE_BUF_SPLICE_MOVE);
}

static void pt_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		     struct fuse_file_info *fi)
{
	off_t r;

	(void)ino;
	(void)fi;
	if (src_fd < 0)
		return (void)fuse_reply_err(req, ENOSYS);
	r = lseek(src_fd, off, whence);
	if (r < 0)
		return (void)fuse_reply_err(req, errno);
	fuse_reply_lseek(req, r);
}

static const struct fuse_lowlevel_ops ops = {
	.init = pt_init,
	.lookup = pt_lookup,
	.getattr = pt_getattr,
	.readdir = pt_readdir,
	.open = pt_open,
	.read = pt_read,
	.lseek = pt_lseek,
};

int main(int argc, char **argv)
{
	struct fuse_args args;
	struct fuse_cmdline_opts o;
	struct fuse_session *se;
	struct fuse_loop_config *loop;
	int rc = 1;

	while (argc > 1 && (!strcmp(argv[1], "--splice") || !strcmp(argv[1], "--direct-io") ||
			    !strcmp(argv[1], "--keep-cache"))) {
		if (!strcmp(argv[1], "--splice"))
			use_splice = 1;
		else if (!strcmp(argv[1], "--direct-io"))
			use_direct_io = 1;
		else
			use_keep_cache = 1;
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	/* As vstorfs does (fs/main.c): reply buffers stay in the heap instead of
	 * being faulted in again for every request. */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
	if (argc < 3) {
		fprintf(stderr, "usage: %s [--splice] [--direct-io] [--keep-cache] RAWFILE MOUNTPOINT [-f] [-o opts]\n", argv[0]);
		return 2;
	}
#ifdef PT_RBD
	if (!strncmp(argv[1], "rbd:", 4)) {
		int e = rbd_source(argv[1] + 4);

		if (e < 0) {
			fprintf(stderr, "%s: %s\n", argv[1], strerror(-e));
			return 1;
		}
	} else
#endif
	if ((src_fd = open(argv[1], O_RDONLY)) < 0 || fstat(src_fd, &src_st)) {
		perror(argv[1]);
		return 1;
	}
	args = (struct fuse_args)FUSE_ARGS_INIT(argc - 1, argv + 1);
	args.argv[0] = argv[0];
	if (fuse_parse_cmdline(&args, &o) || !o.mountpoint) {
		fprintf(stderr, "bad command line\n");
		return 2;
	}
	se = fuse_session_new(&args, &ops, sizeof(ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out_session;
	if (fuse_session_mount(se, o.mountpoint))
		goto out_handlers;
	fuse_daemonize(o.foreground);
	loop = fuse_loop_cfg_create();
	if (loop) {
		/* same loop shape as vstorfs */
		fuse_loop_cfg_set_max_threads(loop, 16);
		fuse_loop_cfg_set_idle_threads(loop, 4);
		rc = fuse_session_loop_mt(se, loop) ? 1 : 0;
		fuse_loop_cfg_destroy(loop);
	}
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out:
	free(o.mountpoint);
	fuse_opt_free_args(&args);
	if (src_fd >= 0)
		close(src_fd);
#ifdef PT_RBD
	if (img) {
		rbd_close(img);
		rados_ioctx_destroy(io);
		rados_shutdown(cluster);
	}
#endif
	return rc;
}
