/*
 * dir_op: the frame every snapshot operation of the directory store runs
 * in (dir_snapshot.h): the names of the files it touches, the storage
 * lock (Proxmox's own under /var/lock/pve-manager when a storage.cfg names
 * the directory) held from the first check to the last change with a fresh
 * listing taken under it, the busy check qemu's locks allow, the intent
 * file (written and read only through store/intent.c) and the sidecar of
 * the times snapshots were taken (".vstorfs-snaps-<V>.times", one
 * "<snap> <nanoseconds>" line each: a file has no tags to keep them in).
 * The operations themselves are in dir_chain_ops.c and dir_isnap_ops.c,
 * their recovery in dir_recover.c.
 *
 * The intent machine's invariants (VSTORFS_CHECK'd in debug builds):
 * (1) An operation's intent file is written and synced before its first
 *     change to any file, and records exactly that operation
 *     (dir_intent_holds after every "*-intent" crash point).
 * (2) A volume has at most one intent: an operation finding one refuses
 *     (EBUSY) or recovers it first (dir_op_settle).
 * (3) The intent file stays until the last step, and through the point of
 *     no return (the rename of V in mkdir, the first write into S of a
 *     commit, the relink of C of a rebase): recovery reads it there.
 * (4) It is removed only once the operation is complete or fully undone;
 *     a file that does not decode (store/intent.c) is never acted on.
 */
#include "dir/dir_store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "chain/merge.h"
#include "chain/qcow2_create.h"
#include "chain/qcow2_snapshot.h"
#include "chain/qcow2_writer.h"
#include "common/crash.h"
#include "common/log.h"
#include "store/pve_cluster.h"
#include "store/store.h"
#include "dir/dir_snapshot.h"
#include "dir/dir_reserve.h"

#define LOCK_TIMEOUT_S 60
#define PVE_LOCK_DIR "/var/lock/pve-manager"
#define OWN_LOCK_DIR "/run/lock/vstorfs"

/* ---- names ---- */

static int path_in(char *out, size_t len, const char *dir, const char *prefix, const char *name,
		   const char *suffix)
{
	int n = snprintf(out, len, "%s%s%s%s%s", dir, dir[0] ? "/" : "", prefix, name, suffix);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int dir_op_paths(struct dir_op_paths *n, const char *dir, const char *vol)
{
	if (path_in(n->vol, sizeof(n->vol), dir, "", vol, "") ||
	    path_in(n->scratch, sizeof(n->scratch), dir, DIR_SCRATCH_PREFIX, vol, DIR_SCRATCH_SUFFIX) ||
	    path_in(n->intent, sizeof(n->intent), dir, DIR_INTENT_PREFIX, vol, DIR_INTENT_SUFFIX) ||
	    path_in(n->times, sizeof(n->times), dir, DIR_SNAPTIMES_PREFIX, vol, DIR_SNAPTIMES_SUFFIX))
		return -ENAMETOOLONG;
	snprintf(n->dir, sizeof(n->dir), "%s", dir);
	snprintf(n->name, sizeof(n->name), "%s", vol);
	return 0;
}

int dir_op_snap_path(const struct dir_op_paths *n, const char *snap, char *out, size_t len)
{
	char base[NAME_MAX + 1];

	if (pve_snapshot_file_name(n->name, snap, base, sizeof(base)))
		return -EINVAL;
	return path_in(out, len, n->dir, "", base, "");
}

/* ---- the sidecar of taken times: "<snap> <nanoseconds since the epoch>" lines ---- */

static int times_read(struct store *s, const char *rel, char **text)
{
	struct dir_store_priv *p = s->priv;
	int rc = dir_read_small(p->rootfd, rel, text);

	return rc == -ENOENT ? 0 : rc;
}

int64_t dir_snaptime_get(struct store *s, const char *dir, const char *vol, const char *snap)
{
	struct dir_op_paths n;
	char *text = NULL, *line, *save = NULL;
	int64_t t = 0;

	if (dir_op_paths(&n, dir, vol) || times_read(s, n.times, &text) || !text)
		return 0;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[64];
		long long v;

		if (sscanf(line, "%63s %lld", name, &v) == 2 && !strcmp(name, snap))
			t = v;
	}
	free(text);
	return t;
}

/* Set (t > 0) or drop (t == 0) the entry of snap. */
int dir_snaptime_set(struct store *s, const struct dir_op_paths *n, const char *snap, int64_t t)
{
	struct dir_store_priv *p = s->priv;
	char *text = NULL, *line, *save = NULL, *out;
	size_t len = 0, cap;
	int rc = times_read(s, n->times, &text);

	if (rc)
		return rc;
	cap = (text ? strlen(text) : 0) + 128;
	out = malloc(cap);
	if (!out) {
		free(text);
		return -ENOMEM;
	}
	out[0] = 0;
	for (line = text ? strtok_r(text, "\n", &save) : NULL; line; line = strtok_r(NULL, "\n", &save)) {
		char name[64];

		if (sscanf(line, "%63s", name) == 1 && strcmp(name, snap))
			len += (size_t)snprintf(out + len, cap - len, "%s\n", line);
	}
	if (t > 0)
		len += (size_t)snprintf(out + len, cap - len, "%s %" PRId64 "\n", snap, t);
	free(text);
	if (len == 0) {
		rc = dir_unlink(p->rootfd, n->times);
		rc = rc == -ENOENT ? 0 : rc;
		if (rc == 0)
			rc = dir_fsync_parent(p->rootfd, n->times);
	} else {
		rc = dir_write_file_atomic(p->rootfd, n->times, out, len);
	}
	free(out);
	return rc;
}

/* ---- begin / end ---- */

static bool shared_fs(int fd)
{
	struct statfs sfs;

	if (fstatfs(fd, &sfs))
		return false;
	switch ((unsigned long)sfs.f_type) {
	case 0x6969: case 0x517B: case 0xFF534D42: case 0xFE534D42: case 0x00c36400:
		return true;
	}
	return false;
}

static int take_lock(struct store *s, const struct dir_pve_cfg *pc)
{
	struct dir_store_priv *p = s->priv;
	char path[600];
	const char *dir = pc->storeid[0] ? PVE_LOCK_DIR : OWN_LOCK_DIR;
	uint64_t h = 1469598103934665603ULL;

	mkdir(dir, 0755);
	if (pc->storeid[0]) {
		snprintf(path, sizeof(path), "%s/pve-storage-%s", dir, pc->storeid);
	} else {
		for (const char *c = p->realpath; *c; c++)
			h = (h ^ (unsigned char)*c) * 1099511628211ULL;
		snprintf(path, sizeof(path), "%s/dir-%s-%016" PRIx64 ".lock", dir, s->name, h);
	}
	return store_lock_file(path, LOCK_TIMEOUT_S);
}

int dir_op_begin(struct dir_op *op, struct store *s, bool writing)
{
	struct dir_store_priv *p = s->priv;
	const char *cfgpath = s->cfg && s->cfg->pve_storage_cfg ? s->cfg->pve_storage_cfg
								  : "/etc/pve/storage.cfg";
	int rc;

	memset(op, 0, sizeof(*op));
	op->s = s;
	op->p = p;
	op->lockfd = -1;
	rc = dir_pve_cfg_find(cfgpath, p->path, p->realpath, &op->pc);
	if (rc < 0)
		return rc;
	if (writing && (op->pc.shared || shared_fs(p->rootfd)) && !(s->cfg && s->cfg->shared_snapshots) &&
	    !(op->pc.storeid[0] && pve_cfs_lock_held())) {
		vlog(LOG_ERR, "%s: %s is shared storage: snapshots there are Proxmox's to take "
		     "(mount with -o shared_snapshots to override)", s->name,
		     op->pc.storeid[0] ? op->pc.storeid : p->path);
		return -EBUSY;
	}
	op->lockfd = take_lock(s, &op->pc);
	if (op->lockfd < 0)
		return op->lockfd;
	return s->ops->scan(s, &op->l);
}

void dir_op_end(struct dir_op *op)
{
	if (op->l)
		op->s->ops->listing_free(op->s, op->l);
	op->l = NULL;
	if (op->lockfd >= 0)
		close(op->lockfd);
	op->lockfd = -1;
}

/*
 * busy: qemu holds shared OFD locks on byte 100 + i for each permission bit
 * i it holds and on byte 200 + i for each it refuses to share. WRITE is bit
 * 1: byte 101 held = someone writes the image (a running VM); byte 201 held
 * = someone forbids writers (a VM reading it as a backing file). qemu-img
 * snapshot would refuse either; so do we.
 */
int dir_file_busy(struct store *s, const char *rel)
{
	struct dir_store_priv *p = s->priv;
	int fd = dir_openat(p->rootfd, rel, O_RDONLY, 0), busy = 0;

	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	for (int b = 101; b <= 201 && !busy; b += 100) {
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = b, .l_len = 1 };

		busy = fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
	}
	close(fd);
	if (busy)
		vlog(LOG_ERR, "%s/%s: another process has it open for writing or reads through it "
		     "(a running VM?): refusing",
		     s->name, rel);
	return busy ? -EBUSY : 0;
}

/* The listing's entry for volume, or NULL. */
const struct store_volume *dir_find_volume(const struct store_listing *l, const char *volume)
{
	int lo = 0, hi = l->nvols - 1;

	while (lo <= hi) {
		int mid = (lo + hi) / 2, c = strcmp(l->vols[mid].name, volume);

		if (!c)
			return &l->vols[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/* ---- the intent file ---- */

/* Record `in` as n's intent file (store/intent.c knows the form), atomically. */
int dir_intent_write(struct store *s, const struct dir_op_paths *n, const struct intent *in)
{
	struct dir_store_priv *p = s->priv;
	char buf[INTENT_TEXT_MAX + 2];
	int len = intent_encode(in, buf, sizeof(buf));

	if (len < 0)
		return len;
	return dir_write_file_atomic(p->rootfd, n->intent, buf, (size_t)len);
}

bool dir_intent_holds(struct store *s, const struct dir_op_paths *n, const struct intent *in)
{
	struct dir_store_priv *p = s->priv;
	struct intent *got = malloc(sizeof(*got));
	char *text = NULL;
	bool same;

	same = got && dir_read_small(p->rootfd, n->intent, &text) == 0 &&
	       intent_decode(text, strlen(text), got) == 0 && got->kind == in->kind &&
	       !strcmp(got->snap, in->snap) && !strcmp(got->s, in->s) && !strcmp(got->c, in->c);
	free(text);
	free(got);
	return same;
}

int dir_intent_clear(struct store *s, const struct dir_op_paths *n)
{
	struct dir_store_priv *p = s->priv;

	int rc = dir_unlink(p->rootfd, n->intent);

	if (rc && rc != -ENOENT)
		return rc;
	return dir_fsync_parent(p->rootfd, n->intent);
}

int dir_image_end(struct store *s, const char *rel, uint64_t *end)
{
	struct dir_store_priv *p = s->priv;
	struct layer_io *io;
	int rc = file_io_open(p->rootfd, s->name, rel, false, &io);

	if (rc)
		return rc;
	rc = qcow2_image_end(io, end);
	layer_close(io);
	return rc;
}

/*
 * A rebase that failed before C was pointed past S has changed no view: C
 * holds some of S's bytes it read through S anyway. Undo it: free what the
 * failed batch leaked, cut the file back to the image end (never below its
 * old size), remove the intent. 0 when undone; -1 when C points past S
 * already (the point of no return: the rebase must be finished instead).
 */
