/*
 * pvelock: time the Proxmox cluster storage lock as vstorfs takes it
 * (store/pve_cluster.c): N rounds of acquire + release of
 * /etc/pve/priv/lock/storage-<storeid>, uncontended, and the median and
 * mean per round. What a snapshot operation on a shared storage adds.
 *
 *   pvelock [-n ROUNDS] STOREID
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/log.h"
#include "store/pve_cluster.h"

static double now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	int rounds = 1000, ai = 1;
	double *t, sum = 0;

	if (argc > 2 && !strcmp(argv[1], "-n")) {
		rounds = atoi(argv[2]);
		ai = 3;
	}
	if (ai >= argc || rounds <= 0) {
		fprintf(stderr, "usage: %s [-n ROUNDS] STOREID\n", argv[0]);
		return 2;
	}
	vlog_init(true, false);
	if (!(t = calloc((size_t)rounds, sizeof(*t))))
		return 1;
	for (int i = 0; i < rounds; i++) {
		struct pve_cfs_lock lk;
		double t0 = now_us();
		int rc;

		vlog_silence(true);
		rc = pve_cfs_lock_storage(argv[ai], false, &lk);
		if (rc == 0)
			pve_cfs_unlock(&lk);
		vlog_silence(false);
		if (rc != 0) {
			fprintf(stderr, "pvelock: round %d: the lock could not be taken (%d)\n", i, rc);
			free(t);
			return 1;
		}
		t[i] = now_us() - t0;
		sum += t[i];
	}
	qsort(t, (size_t)rounds, sizeof(*t), cmp);
	printf("cluster lock storage-%s: %d rounds of acquire+release: median %.1f us, mean %.1f us, "
	       "max %.1f us\n", argv[ai], rounds, t[rounds / 2], sum / rounds, t[rounds - 1]);
	free(t);
	return 0;
}
