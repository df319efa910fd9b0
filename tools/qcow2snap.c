/*
 * qcow2snap: internal qcow2 snapshots of an image file through chain/
 * (qcow2_snapshot.h), for tests and recovery by hand.
 *
 *   qcow2snap list IMAGE            one line per snapshot, tab-separated:
 *       id name date_sec date_nsec vm_clock_nsec vm_state_size disk_size icount l1_offset l1_size extra_data_size
 *       (icount "-" when the entry has none)
 *   qcow2snap create IMAGE NAME     as qemu-img snapshot -c NAME
 *   qcow2snap delete IMAGE NAME     as qemu-img snapshot -d NAME
 *   qcow2snap check IMAGE           prints errors/copied_errors/leaks; exit 0 clean, 2 errors, 3 leaks only
 *   qcow2snap reclaim IMAGE         frees leaked clusters, repairs COPIED flags
 *
 * Reading a snapshot view: qcow2cat -s NAME IMAGE. The image file grows
 * when new clusters go past its end (QCOW2_SNAP_GROW). Exit 1 on failure,
 * after the engine logged why.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chain/qcow2_snapshot.h"
#include "common/log.h"
#include "tools/lib/file_io.h"

static int do_list(struct layer_io *io)
{
	struct qcow2_snapshot_list l;
	int rc = qcow2_snapshot_list(io, &l);

	if (rc) {
		fprintf(stderr, "qcow2snap: %s: %s\n", io->name, l.error[0] ? l.error : strerror(-rc));
		return 1;
	}
	for (unsigned i = 0; i < l.n; i++) {
		const struct qcow2_snapshot_info *s = &l.s[i];
		char icount[32] = "-";

		if (s->icount != QCOW2_SNAPSHOT_NO_ICOUNT)
			snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
		printf("%s\t%s\t%" PRIu32 "\t%" PRIu32 "\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\t%s\t%" PRIu64
		       "\t%" PRIu32 "\t%" PRIu32 "\n",
		       s->id, s->name, s->date_sec, s->date_nsec, s->vm_clock_nsec, s->vm_state_size,
		       s->disk_size, icount, s->l1_offset, s->l1_size, s->extra_data_size);
	}
	qcow2_snapshot_list_free(&l);
	return 0;
}

static void print_result(const struct qcow2_check_result *r)
{
	printf("errors %" PRIu64 "\ncopied_errors %" PRIu64 "\nleaks %" PRIu64 "\nclusters %" PRIu64 "\n",
	       r->errors, r->copied_errors, r->leaks, r->clusters);
	if (r->first_error[0])
		printf("first_error %s\n", r->first_error);
}

static void usage(void)
{
	fprintf(stderr, "usage: qcow2snap list|check|reclaim IMAGE\n"
			"       qcow2snap create|delete IMAGE NAME\n");
	exit(2);
}

int main(int argc, char **argv)
{
	struct qcow2_check_result r;
	struct layer_io *io;
	const char *cmd;
	bool rw;
	int rc;

	vlog_init(true, false);
	if (argc < 3)
		usage();
	cmd = argv[1];
	rw = !strcmp(cmd, "create") || !strcmp(cmd, "delete") || !strcmp(cmd, "reclaim");
	if ((!strcmp(cmd, "create") || !strcmp(cmd, "delete")) != (argc == 4) || argc > 4)
		usage();
	if (!rw && strcmp(cmd, "list") && strcmp(cmd, "check"))
		usage();
	rc = tool_file_open(argv[2], rw ? TOOL_FILE_WRITE | TOOL_FILE_GROWS : 0, &io);
	if (rc) {
		fprintf(stderr, "qcow2snap: %s: %s\n", argv[2], strerror(-rc));
		return 1;
	}
	if (!strcmp(cmd, "list")) {
		rc = do_list(io);
	} else if (!strcmp(cmd, "check")) {
		rc = qcow2_check(io, &r);
		print_result(&r);
		if (rc)
			fprintf(stderr, "qcow2snap: check %s: %s\n", io->name, strerror(-rc));
		rc = rc ? 1 : r.errors || r.copied_errors ? 2 : r.leaks ? 3 : 0;
	} else if (!strcmp(cmd, "reclaim")) {
		rc = qcow2_reclaim(io, QCOW2_SNAP_GROW, &r);
		print_result(&r);
		printf("freed %" PRIu64 "\ncopied_fixed %" PRIu64 "\n", r.leaked_clusters_freed, r.copied_fixed);
		if (rc)
			fprintf(stderr, "qcow2snap: reclaim %s: %s\n", io->name, strerror(-rc));
		rc = rc ? 1 : 0;
	} else {
		rc = !strcmp(cmd, "create") ? qcow2_snapshot_create(io, argv[3], QCOW2_SNAP_GROW)
					    : qcow2_snapshot_delete(io, argv[3], QCOW2_SNAP_GROW);
		if (rc)
			fprintf(stderr, "qcow2snap: %s %s %s: %s\n", cmd, io->name, argv[3], strerror(-rc));
		rc = rc ? 1 : 0;
	}
	layer_close(io);
	return rc;
}
