/*
 * plcheck: what a mount does to a directory store, checked in one process
 * (the power-loss sweep checks thousands of crash states; a process per
 * view, or per state, was most of the cost).
 *
 *   plcheck [--cfg STORAGE_CFG] PATH VOLUME
 *   plcheck --batch VOLUME          (one "PATH<TAB>STORAGE_CFG" per stdin line)
 *
 * Opens the store and runs recovery (as a mount does before the first scan),
 * then prints one line per view of VOLUME, "1<TAB>view<TAB>size<TAB>crc",
 * crc being zlib's crc32 and adler32 of the view's bytes as 16 hex digits.
 * Then closes it, opens it again (a second mount), recovers again and
 * prints the same lines with "2". Then, recovery done, every file under
 * PATH: "Q<TAB>file<TAB>corruptions<TAB>leaks<TAB>check_errors<TAB>first"
 * for a qcow2 one (chain/qcow2_check.c, which counts what `qemu-img check`
 * counts) and "L<TAB>file" for one recovery should have removed (an intent,
 * a scratch overlay, a .part). Exit status 0, or 1 when recovery, the scan
 * or a read fails (the error on stderr).
 *
 * With --batch each state's lines end with "END<TAB>rc" (rc 0 or 1, the
 * error as "E<TAB>message" before it) and stdout is flushed, so one process
 * checks a whole sweep, state by state, as the harness builds them.
 *
 *   plcheck --lvm VG DEVICE VOLUME  (one line per state on stdin)
 *
 * The same for an LVM store whose one PV is DEVICE (a loop device whose
 * backing file the harness rewrites in place before each line): the loop
 * device's page cache dropped (the bytes under it changed), then the two
 * mounts (lvm_store_open_process_shell, recovery, scan, every view of
 * VOLUME hashed), then "T<TAB>lv<TAB>tag" for every intent tag left, "Q"
 * for every qcow2 LV's bytes, "K<TAB>rc" for lvm2's vgck and "N<TAB>rc"
 * for the next mkdir (snapshot "plnext"). lvm2 runs through the one lvm
 * shell this process keeps (lvm/lvm_shell.c) for every store it opens, so
 * a state costs lvm2 commands, not processes.
 */
#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "chain/qcow2_check.h"
#include "common/log.h"
#include "dir/dir_store.h"
#include "lvm/lvm.h"
#include "lvm/lvm_cmd.h"
#include "lvm/vg_store.h"
#include "store/store_registry.h"
#include "store/view_reader.h"
#include "tools/lib/file_io.h"

#define CHUNK (1u << 20)

static FILE *errs;	/* stderr, or stdout in batch mode (the harness reads one stream) */
static const char *lvm_dev;	/* --lvm: the PV; mount_once then opens an LVM store */

static void fail(const char *what, const char *name, int rc)
{
	fprintf(errs, "%splcheck: %s%s%s: %s\n", errs == stdout ? "E\t" : "", what, name ? " " : "",
		name ? name : "", strerror(-rc));
}

static int hash_view(struct store *s, struct store_listing *l, const struct store_volume *v,
		     const struct store_view *w, char *buf)
{
	struct view_reader *r;
	uLong crc = crc32(0, NULL, 0), ad = adler32(0, NULL, 0);
	uint64_t off = 0;
	int rc = s->ops->open_view(s, l, v, w, &r);

	if (rc)
		return rc;
	while (off < r->size) {
		size_t len = r->size - off < CHUNK ? (size_t)(r->size - off) : CHUNK;
		ssize_t n = r->ops->read(r, buf, len, off);

		if (n < 0) {
			rc = (int)n;
			break;
		}
		crc = crc32(crc, (const Bytef *)buf, (uInt)len);
		ad = adler32(ad, (const Bytef *)buf, (uInt)len);
		off += len;
	}
	if (rc == 0)
		printf("\t%s\t%" PRIu64 "\t%08lx%08lx\n", w->name, r->size, crc, ad);
	view_reader_put(r);
	return rc;
}

static int mount_once(const char *path, const struct store_config *cfg, const char *vol, int pass,
		      char *buf)
{
	struct store *s;
	struct store_listing *l;
	int rc = lvm_dev ? lvm_store_open_process_shell(path, cfg, &s) : dir_store_open(path, cfg, &s);

	if (rc) {
		fail("open", NULL, rc);
		return rc;
	}
	if ((rc = s->ops->recover(s)))
		fail("recovery", NULL, rc);
	else if ((rc = s->ops->scan(s, &l)))
		fail("scan", NULL, rc);
	else {
		for (int i = 0; i < l->nvols && rc == 0; i++) {
			if (strcmp(l->vols[i].name, vol))
				continue;
			for (int j = 0; j < l->vols[i].nviews && rc == 0; j++) {
				printf("%d", pass);
				rc = hash_view(s, l, &l->vols[i], &l->vols[i].views[j], buf);
				if (rc)
					fail("read", l->vols[i].views[j].name, rc);
			}
		}
		s->ops->listing_free(s, l);
	}
	s->ops->close(s);
	return rc;
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

/* What `qemu-img check` would say of one file, or -errno when it cannot be opened as qcow2. */
static int check_file(const char *path, const char *rel)
{
	struct qcow2_layer_check r;
	struct layer_io *io = NULL;
	int rc = tool_file_open(path, 0, &io);

	if (!rc)
		rc = qcow2_check_layer(io, &r);
	layer_close(io);
	if (rc) {
		fail("check", rel, rc);
		return rc;
	}
	printf("Q\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%s\n", rel, r.corruptions + r.unreadable,
	       r.leaks, r.check_errors, r.first);
	return 0;
}

/* Every file under dir (rel its path from the state's root): checked or flagged. */
static int walk(const char *dir, const char *rel)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int rc = 0;

	if (!d) {
		fail("opendir", rel, -errno);
		return -errno;
	}
	while (rc == 0 && (e = readdir(d))) {
		char p[4096], r[4096];
		struct stat st;

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
		snprintf(r, sizeof(r), "%s%s%s", rel, *rel ? "/" : "", e->d_name);
		if (lstat(p, &st))
			continue;
		if (S_ISDIR(st.st_mode))
			rc = walk(p, r);
		else if (!strncmp(e->d_name, ".vstorfs-intent-", 16) ||
			 !strncmp(e->d_name, ".vstorfs-new-", 13) || ends_with(e->d_name, ".part"))
			printf("L\t%s\n", r);
		else if (S_ISREG(st.st_mode) && ends_with(e->d_name, ".qcow2"))
			rc = check_file(p, r);
	}
	closedir(d);
	return rc;
}

static int check_state(const char *path, const char *cfg_path, const char *vol, char *buf)
{
	struct store_config cfg = { 0 };
	int rc;

	cfg.pve_storage_cfg = cfg_path && *cfg_path ? cfg_path : NULL;
	rc = mount_once(path, &cfg, vol, 1, buf);
	if (rc == 0)
		rc = mount_once(path, &cfg, vol, 2, buf);
	if (rc == 0)
		rc = walk(path, "");
	return rc;
}

static int batch(const char *vol, char *buf)
{
	char line[8192];

	errs = stdout;
	while (fgets(line, sizeof(line), stdin)) {
		char *cfg;

		line[strcspn(line, "\n")] = 0;
		if ((cfg = strchr(line, '\t')))
			*cfg++ = 0;
		printf("END\t%d\n", check_state(line, cfg, vol, buf) ? 1 : 0);
		fflush(stdout);
	}
	return 0;
}

/* Flush the device's page cache out and drop it: the harness changes the file under it. */
static int drop_cache(const char *dev)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		rc = -errno;
	else if (fsync(fd) || ioctl(fd, BLKFLSBUF, 0))
		rc = -errno;
	if (fd >= 0)
		close(fd);
	if (rc)
		fail("flush", dev, rc);
	return rc;
}

/* After recovery: intent tags left, every qcow2 LV walked, vgck, the next mkdir. */
static int lvm_after(const char *vg, const struct store_config *cfg, const char *vol)
{
	char *devs[] = { (char *)lvm_dev, NULL };
	struct lvm_opts lo = { .devices = devs };
	const char *vgck[] = { "vgck", vg, NULL };
	struct lvm_vg *g;
	struct store *s;
	int rc = lvm_vg_scan(&lo, vg, &g);

	if (rc) {
		fail("vg scan", vg, rc);
		return rc;
	}
	for (int i = 0; i < g->nlvs && rc == 0; i++) {
		const struct lvm_lv *lv = &g->lvs[i];
		struct qcow2_layer_check r;
		struct layer_io *io = NULL;

		for (char **t = lv->tags; t && *t; t++)
			if (!strncmp(*t, "vstorfs-", 8) && strncmp(*t, TAG_VIEW, strlen(TAG_VIEW)))
				printf("T\t%s\t%s\n", lv->name, *t);
		if (!ends_with(lv->name, ".qcow2"))
			continue;
		if (!(rc = lvm_lv_open(g, lv, &io)))
			rc = qcow2_check_layer(io, &r);
		layer_close(io);
		if (rc)
			fail("check", lv->name, rc);
		else
			printf("Q\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%s\n", lv->name,
			       r.corruptions + r.unreadable, r.leaks, r.check_errors, r.first);
	}
	lvm_vg_put(g);
	if (rc)
		return rc;
	printf("K\t%d\n", lvm_cmd_run(&lo, vgck, NULL));
	if ((rc = lvm_store_open_process_shell(vg, cfg, &s))) {
		fail("open", vg, rc);
		return rc;
	}
	printf("N\t%d\n", s->ops->snapshot_take(s, vol, "plnext", NULL));
	s->ops->close(s);
	return 0;
}

static int lvm_batch(const char *vg, const char *vol, char *buf)
{
	struct store_config cfg = { 0 };
	char line[8192], opt[4200];

	errs = stdout;
	snprintf(opt, sizeof(opt), "devices=%s", lvm_dev);
	if (store_registry_option(&cfg, opt) != 1) {
		fprintf(stderr, "plcheck: %s not taken\n", opt);
		return 2;
	}
	while (fgets(line, sizeof(line), stdin)) {
		int rc = drop_cache(lvm_dev);

		if (rc == 0)
			rc = mount_once(vg, &cfg, vol, 1, buf);
		if (rc == 0)
			rc = mount_once(vg, &cfg, vol, 2, buf);
		if (rc == 0)
			rc = lvm_after(vg, &cfg, vol);
		/* what recovery and the next mkdir wrote reaches the file before it is rewritten */
		if (drop_cache(lvm_dev) && rc == 0)
			rc = -EIO;
		printf("END\t%d\n", rc ? 1 : 0);
		fflush(stdout);
	}
	store_registry_options_free(&cfg);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cfg = NULL;
	char *buf;
	int i = 1, rc;

	errs = stderr;
	vlog_init(true, false);
	if (!(buf = malloc(CHUNK)))
		return 1;
	if (argc == 3 && !strcmp(argv[1], "--batch"))
		return batch(argv[2], buf);
	if (argc == 5 && !strcmp(argv[1], "--lvm")) {
		lvm_dev = argv[3];
		return lvm_batch(argv[2], argv[4], buf);
	}
	if (argc > 2 && !strcmp(argv[1], "--cfg")) {
		cfg = argv[2];
		i = 3;
	}
	if (argc - i != 2) {
		fprintf(stderr, "usage: plcheck [--cfg STORAGE_CFG] PATH VOLUME | --batch VOLUME | --lvm VG DEVICE VOLUME\n");
		return 2;
	}
	rc = check_state(argv[i], cfg, argv[i + 1], buf);
	free(buf);
	return rc ? 1 : 0;
}
