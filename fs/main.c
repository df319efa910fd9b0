/*
 * vstorfs daemon entry point: parse options, scan the volume groups, mount,
 * and serve until unmounted.
 *
 * Order matters: recovery and the first scan happen before mounting so that a typo in
 * the source fails the mount command with a clear message; the daemon
 * forks only after the mount exists, so mount.vstorfs returns once the
 * tree is usable; threads start only after the fork.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/log.h"
#include "fs/catalog.h"
#include "fs/inode.h"
#include "fs/ops.h"
#include "fs/options.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

static int fuse_args_build(const struct fs_options *o, struct fuse_args *args, const char *argv0)
{
	char *mopts = NULL, *fsname = NULL;
	int rc = 0;

	/* fsname is the source so mount(8), df and /proc/mounts show it. */
	if (asprintf(&fsname, "fsname=%s", o->source) < 0)
		return -1;
	rc |= fuse_opt_add_arg(args, argv0);
	rc |= fuse_opt_add_opt(&mopts, "subtype=vstorfs,default_permissions");
	rc |= fuse_opt_add_opt_escaped(&mopts, fsname);
	if (o->allow_other)
		rc |= fuse_opt_add_opt(&mopts, "allow_other");
	if (o->read_only)
		rc |= fuse_opt_add_opt(&mopts, "ro");
	rc |= fuse_opt_add_arg(args, "-o");
	rc |= fuse_opt_add_arg(args, mopts ? mopts : "");
	if (o->fuse_debug)
		rc |= fuse_opt_add_arg(args, "-d");
	free(mopts);
	free(fsname);
	return rc ? -1 : 0;
}

/*
 * Fork; the parent exits with the child's verdict, written to *ready_fd by
 * daemon_ready() (or nothing at all if the child dies first: failure).
 */
static int daemon_fork(int *ready_fd)
{
	int p[2];
	char ok = 0;
	pid_t pid;

	if (pipe(p))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid > 0) {
		close(p[1]);
		_exit(read(p[0], &ok, 1) == 1 && ok == 'y' ? 0 : 1);
	}
	close(p[0]);
	*ready_fd = p[1];
	if (setsid() < 0)
		return -1;
	return 0;
}

static void daemon_ready(int ready_fd)
{
	int null = open("/dev/null", O_RDWR);

	if (chdir("/")) {
		/* nothing depends on the cwd: the mountpoint path is absolute */
	}
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}
	if (write(ready_fd, "y", 1) != 1) {
		/* the parent is gone; serving goes on */
	}
	close(ready_fd);
}

int main(int argc, char **argv)
{
	int ready_fd = -1;
	char src[4096];
	struct fs_options o;
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fuse_session *se = NULL;
	struct fuse_loop_config *loop = NULL;
	int rc = 1;

	/* Some replies still use a buffer malloc'ed for that request (libfuse's
	 * when a splice fails, compressed runs in a spliced reply); ops.c's own
	 * copies use one per thread (fs/copy_reply.h). Left to
	 * itself glibc returns such blocks to the kernel on free, and the next
	 * request pays a page fault per 4 KiB touching them again: on a
	 * paravirtualized guest that held direct reads to 110 MiB/s instead of
	 * 4 GiB/s. Keep them in the heap; what is kept is bounded by the
	 * requests in flight (max_threads). */
	mallopt(M_MMAP_THRESHOLD, 8 << 20);
	mallopt(M_TRIM_THRESHOLD, 32 << 20);
	if (fs_options_parse(argc, argv, &o))
		return 1;
	/* mount(8) refuses to mount a filesystem again where it already is;
	 * a FUSE mount would silently stack, hiding the first daemon. */
	if (fs_options_mounted_here(o.mountpoint, src, sizeof(src), NULL)) {
		fprintf(stderr, "vstorfs: %s is already a vstorfs mount (of %s); umount it first\n",
			o.mountpoint, src);
		fs_options_free(&o);
		return 1;
	}
	vlog_init(true, o.debug);
	if (fs_inode_init() || fuse_args_build(&o, &args, argv[0])) {
		vlog(LOG_ERR, "out of memory");
		goto out;
	}
	if (!o.foreground && daemon_fork(&ready_fd) < 0) {
		vlog(LOG_ERR, "cannot fork: %s", strerror(errno));
		goto out;
	}
	if (fs_catalog_start(&o) < 0)
		goto out;
	se = fuse_session_new(&args, fs_ops(&o), sizeof(struct fuse_lowlevel_ops), NULL);
	if (!se)
		goto out;
	if (fuse_set_signal_handlers(se))
		goto out_session;
	if (fuse_session_mount(se, o.mountpoint))
		goto out_handlers;
	if (!o.foreground) {
		vlog_init(false, o.debug);
		daemon_ready(ready_fd);
	}
	/* A loop device over disk.raw writes back through us: never let our
	 * own allocations wait on that writeback. */
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0))
		vlog(LOG_WARNING, "PR_SET_IO_FLUSHER: %s", strerror(errno));
	if (fs_catalog_start_rescan() < 0)
		vlog(LOG_WARNING, "cannot start the rescan thread: VG changes will not show");
	vlog(LOG_INFO, "serving %s on %s", o.source, o.mountpoint);
	loop = fuse_loop_cfg_create();
	if (!loop)
		goto out_unmount;
	/* libfuse 3.14 starts a worker whenever none is idle and ends one
	 * whenever more than idle_threads are. With 16 max / 4 idle, fio
	 * randread 4k with 4 jobs saw 190 thread ids in 4 s: a thread started
	 * and ended every ~20 ms, each paying its stack and the first touch of
	 * its 2 MiB huge-page reply buffer (fs/copy_reply.c); perf showed task
	 * switches, wakeups and clear_page on top. With idle == max no worker
	 * ever ends. 8 of them: more than a few O_DIRECT jobs or the kernel's
	 * async readahead keep busy on 2 cores, and each thread keeps its
	 * 2 MiB buffer in RSS (16 added 18 MiB, 8 adds about 2). */
	fuse_loop_cfg_set_max_threads(loop, 8);
	fuse_loop_cfg_set_idle_threads(loop, 8);
	rc = fuse_session_loop_mt(se, loop) ? 1 : 0;
	fuse_loop_cfg_destroy(loop);
out_unmount:
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out_session:
	fuse_session_destroy(se);
out:
	fs_catalog_stop();
	fuse_opt_free_args(&args);
	fs_options_free(&o);
	return rc;
}
