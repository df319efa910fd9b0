/*
 * pve_cluster: see pve_cluster.h. Facts from pve-cluster Cluster.pm
 * ($cfs_lock), pve-storage Plugin.pm (cluster_lock_storage), qemu-server
 * (lock_config, the pid file) and pve-ha-manager (the lock update request).
 *
 * What is honest about "a cluster filesystem": Proxmox's own test is that
 * mkdir of /etc/pve/priv/lock leaves a directory (cfs_lock dies "pve
 * cluster filesystem not online" otherwise). vstorfs applies the same
 * test, so a node whose /etc/pve has no priv/ (no pmxcfs) cannot take the
 * lock; a directory shared by the hosts (a test's bind mount) works as
 * pmxcfs does, and the log says when /etc/pve is not pmxcfs.
 *
 * The stale-lock note: after taking the lock this daemon writes
 * /run/lock/vstorfs/cfs-<lockid>.owner ("<pid> <inode> <mtime>" of the
 * lock directory). A later daemon of this node that finds the directory
 * still there, the same inode and mtime, and that pid dead, knows the lock
 * is its own node's leftover: it says so and takes it over (then releases
 * it as usual). Any other holder is waited for, and reported on timeout.
 */
#include "store/pve_cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>
#include <utime.h>

#include "common/log.h"
#include "store/store.h"

#define OWN_RUN_DIR "/run/lock/vstorfs"
#define FUSE_SUPER_MAGIC 0x65735546

static __thread int cfs_held;
static __thread struct pve_cfs_lock *cur_lock;       /* held by this thread */
static __thread struct pve_cfs_lock *suspended_lock; /* released for a data step */

bool pve_cfs_lock_held(void)
{
	return cfs_held > 0;
}

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void pve_node_name(char *buf, size_t len)
{
	char *dot;

	if (gethostname(buf, len) < 0)
		snprintf(buf, len, "localhost");
	buf[len - 1] = 0;
	if ((dot = strchr(buf, '.')))
		*dot = 0;
}

/* ---- the cluster storage lock ---- */

struct refresher {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stop;
	pthread_t thread;
	char path[512];
};

static void *refresh_main(void *arg)
{
	struct refresher *r = arg;

	pthread_mutex_lock(&r->mu);
	while (!r->stop) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += PVE_CFS_REFRESH_S;
		if (pthread_cond_timedwait(&r->cv, &r->mu, &ts) == ETIMEDOUT && !r->stop) {
			time_t t = time(NULL);
			struct timespec tv[2] = { { 0, 0 }, { t, 0 } };

			/* utime(0, now): pmxcfs's lock update request (resets its 120 s). */
			if (utimensat(AT_FDCWD, r->path, tv, 0) < 0)
				vlog(LOG_WARNING, "cluster lock %s: refreshing it failed: %s", r->path,
				     strerror(errno));
		}
	}
	pthread_mutex_unlock(&r->mu);
	return NULL;
}

static void refresher_start(struct pve_cfs_lock *lk)
{
	struct refresher *r = calloc(1, sizeof(*r));

	if (!r)
		return;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	snprintf(r->path, sizeof(r->path), "%s", lk->path);
	if (pthread_create(&r->thread, NULL, refresh_main, r)) {
		free(r);
		return;
	}
	lk->refresher = r;
}

static void refresher_stop(struct pve_cfs_lock *lk)
{
	struct refresher *r = lk->refresher;

	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stop = true;
	pthread_cond_signal(&r->cv);
	pthread_mutex_unlock(&r->mu);
	pthread_join(r->thread, NULL);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	free(r);
	lk->refresher = NULL;
}

/* Proxmox's test for a cluster filesystem: priv/lock is (or can be made) a directory. */
static int cfs_online(const char *storeid, bool no_cluster_ok)
{
	static int said_not_pmxcfs;
	struct statfs sfs;
	struct stat st;

	mkdir(PVE_CFS_LOCK_DIR, 0755); /* as cfs_lock does */
	if (stat(PVE_CFS_LOCK_DIR, &st) < 0 || !S_ISDIR(st.st_mode) || access(PVE_CFS_LOCK_DIR, W_OK) < 0) {
		int err = errno;

		if (no_cluster_ok) {
			vlog(LOG_DEBUG, "storage %s: no cluster lock directory %s (%s): going on without "
			     "it (-o shared_snapshots)", storeid, PVE_CFS_LOCK_DIR, strerror(err));
			return 1;
		}
		vlog(LOG_ERR, "storage %s is shared and no Proxmox cluster lock can be had (%s: %s): "
		     "refusing (mount with -o shared_snapshots only if no Proxmox cluster uses this "
		     "storage)", storeid, PVE_CFS_LOCK_DIR, strerror(err));
		return -EBUSY;
	}
	if (!said_not_pmxcfs && statfs(PVE_ETC_DIR, &sfs) == 0 && (unsigned long)sfs.f_type != FUSE_SUPER_MAGIC) {
		said_not_pmxcfs = 1;
		vlog(LOG_NOTICE, "%s is not pmxcfs: the cluster lock only keeps out hosts that share "
		     "this directory", PVE_ETC_DIR);
	}
	return 0;
}

static void record_write(struct pve_cfs_lock *lk)
{
	struct stat st;
	FILE *f;

	if (stat(lk->path, &st) < 0)
		return;
	mkdir(OWN_RUN_DIR, 0755);
	f = fopen(lk->record, "we");
	if (!f)
		return;
	fprintf(f, "%d %llu %lld\n", (int)getpid(), (unsigned long long)st.st_ino, (long long)st.st_mtime);
	fclose(f);
}

/* Is the existing lock directory our node's leftover from a dead vstorfs? pid if so. */
static int record_stale_pid(const struct pve_cfs_lock *lk)
{
	unsigned long long ino;
	long long mtime;
	struct stat st;
	int pid = 0;
	FILE *f = fopen(lk->record, "re");

	if (!f)
		return 0;
	if (fscanf(f, "%d %llu %lld", &pid, &ino, &mtime) != 3)
		pid = 0;
	fclose(f);
	if (pid <= 0 || stat(lk->path, &st) < 0 || st.st_ino != ino || (long long)st.st_mtime != mtime)
		return 0;
	if (pid == getpid() || kill(pid, 0) == 0 || errno == EPERM)
		return 0;
	return pid;
}

static void lock_taken(struct pve_cfs_lock *lk, const char *storeid)
{
	snprintf(lk->storeid, sizeof(lk->storeid), "%s", storeid);
	cur_lock = lk;
	lk->taken_ns = now_ns();
	cfs_held++;
	record_write(lk);
	refresher_start(lk);
	vlog(LOG_INFO, "storage %s: cluster lock taken (monotonic %lld)", storeid, lk->taken_ns);
}

static void describe_holder(const char *path, char *out, size_t len)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		snprintf(out, len, "gone now");
		return;
	}
	snprintf(out, len, "taken %lld s ago", st.st_mtime ? (long long)(time(NULL) - st.st_mtime) : -1LL);
	if (st.st_mtime == 0)
		snprintf(out, len, "age unknown: its time was reset by an unlock request");
}

int pve_cfs_lock_storage(const char *storeid, bool no_cluster_ok, struct pve_cfs_lock *lk)
{
	int rc = cfs_online(storeid, no_cluster_ok), pid;
	bool said = false;

	memset(lk, 0, sizeof(*lk));
	if (rc)
		return rc;
	snprintf(lk->record, sizeof(lk->record), OWN_RUN_DIR "/cfs-storage-%s.owner", storeid);
	for (int left = PVE_CFS_ACQUIRE_TIMEOUT_S;; left--) {
		snprintf(lk->path, sizeof(lk->path), PVE_CFS_LOCK_DIR "/storage-%s", storeid);
		if (mkdir(lk->path, 0755) == 0) {
			lock_taken(lk, storeid);
			return 0;
		}
		if (errno == EACCES || errno == EPERM || errno == EROFS) {
			vlog(LOG_ERR, "storage %s: cluster lock %s: %s (no quorum?): refusing", storeid,
			     lk->path, strerror(errno));
			break;
		}
		if (errno != EEXIST) {
			vlog(LOG_ERR, "storage %s: cluster lock %s: %s: refusing", storeid, lk->path,
			     strerror(errno));
			break;
		}
		if ((pid = record_stale_pid(lk))) {
			vlog(LOG_WARNING, "storage %s: cluster lock %s was left by vstorfs pid %d of this "
			     "node, killed while holding it: taking it over", storeid, lk->path, pid);
			lock_taken(lk, storeid);
			return 0;
		}
		if (left <= 0) {
			char why[128];

			describe_holder(lk->path, why, sizeof(why));
			vlog(LOG_ERR, "storage %s: cluster lock %s still held after %d s (%s): refusing; "
			     "a lock nobody holds expires in pmxcfs 120 s after it was taken", storeid,
			     lk->path, PVE_CFS_ACQUIRE_TIMEOUT_S, why);
			break;
		}
		if (!said)
			vlog(LOG_NOTICE, "storage %s: trying to acquire cfs lock 'storage-%s' ...", storeid,
			     storeid);
		said = true;
		utime(lk->path, &(struct utimbuf){ 0, 0 }); /* cfs unlock request */
		sleep(1);
	}
	lk->path[0] = 0;
	return -EBUSY;
}

void pve_cfs_unlock(struct pve_cfs_lock *lk)
{
	long long held;

	if (suspended_lock == lk)
		suspended_lock = NULL; /* never taken back: nothing to release */
	if (!lk->path[0])
		return;
	refresher_stop(lk);
	held = (now_ns() - lk->taken_ns) / 1000000;
	unlink(lk->record);
	if (rmdir(lk->path) < 0)
		vlog(LOG_ERR, "cluster lock %s: releasing it failed: %s", lk->path, strerror(errno));
	else
		vlog(LOG_INFO, "cluster lock %s released after %lld ms (monotonic %lld)", lk->path, held,
		     now_ns());
	if (held > 60000)
		vlog(LOG_WARNING, "cluster lock %s was held %lld s: Proxmox's own locked work stops at "
		     "60 s, and its waiters on other nodes gave up after 10 s", lk->path, held / 1000);
	cfs_held--;
	lk->path[0] = 0;
	if (cur_lock == lk)
		cur_lock = NULL;
}

int pve_cfs_suspend(const char *why)
{
	struct pve_cfs_lock *lk = cur_lock;

	if (!lk || !lk->path[0])
		return 0;
	vlog(LOG_INFO, "storage %s: releasing the cluster lock while %s", lk->storeid, why);
	pve_cfs_unlock(lk);
	suspended_lock = lk;
	return 1;
}

int pve_cfs_resume(void)
{
	struct pve_cfs_lock *lk = suspended_lock;
	char storeid[128];

	if (!lk)
		return 0;
	suspended_lock = NULL;
	snprintf(storeid, sizeof(storeid), "%s", lk->storeid);
	return pve_cfs_lock_storage(storeid, false, lk) < 0 ? -EBUSY : 0;
}
