/*
 * lvm_change: see lvm_change.h. Commands run through lvm_cmd_run (argument
 * vectors, never a shell; --driverloaded n added where there is no
 * device-mapper). With device-mapper an LV is created active, as Proxmox
 * does, so it can be written through /dev/<vg>/<lv>.
 *
 * Every change is followed by a flush of the VG's PVs. lvm2 writes its
 * metadata O_DIRECT and flushes no volatile write cache (the power-loss
 * recorder, tests/powerloss, logs no flush after an lvm2 commit), so
 * without it a commit could still sit in the device cache when our next
 * image write lands: after a power cut, a write into extents an lvremove
 * freed could survive while the lvremove did not, and the removed LV
 * would come back with foreign bytes; a finished mkdir or rmdir could
 * also revert to its intent. After the flush, the commit is durable
 * before anything that follows it.
 */
#include "lvm_change.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/dm_busy.h"
#include "lvm/lvm_cmd.h"

static int flush_dev(const char *dev)
{
	int fd = open(dev, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0 || fdatasync(fd))
		rc = -errno;
	if (fd >= 0)
		close(fd);
	if (rc)
		vlog(LOG_ERR, "lvm: flush of %s after a metadata change: %s", dev, strerror(-rc));
	return rc;
}

/* Flush the PVs of vg: the --devices list, else the PVs lvm2 reports for it
 * (as JSON, the one format both the lvm shell and a forked lvm2 give). */
static int flush_pvs(const struct lvm_opts *o, const char *vg)
{
	const char *argv[] = { "pvs", "--reportformat", "json", "-o", "pv_name", "--select", NULL, NULL };
	struct json_object *root, *rep, *pvs, *v;
	char sel[320], *out = NULL;
	int rc = 0;

	if (o && o->devices && o->devices[0]) {
		for (int i = 0; o->devices[i] && rc == 0; i++)
			rc = flush_dev(o->devices[i]);
		return rc;
	}
	if (snprintf(sel, sizeof(sel), "vg_name=%s", vg) >= (int)sizeof(sel))
		return -ENAMETOOLONG;
	argv[6] = sel;
	if ((rc = lvm_cmd_run(o, argv, &out)))
		return rc;
	root = json_tokener_parse(out);
	free(out);
	if (!root || !json_object_object_get_ex(root, "report", &rep) ||
	    !json_object_is_type(rep, json_type_array) || json_object_array_length(rep) < 1 ||
	    !json_object_object_get_ex(json_object_array_get_idx(rep, 0), "pv", &pvs) ||
	    !json_object_is_type(pvs, json_type_array)) {
		vlog(LOG_ERR, "lvm: pvs of %s: no PV list in its report", vg);
		json_object_put(root);
		return -EIO;
	}
	for (size_t i = 0; i < json_object_array_length(pvs) && rc == 0; i++)
		if (json_object_object_get_ex(json_object_array_get_idx(pvs, i), "pv_name", &v))
			rc = flush_dev(json_object_get_string(v));
	json_object_put(root);
	return rc;
}

static int run(const struct lvm_opts *o, const char *vg, const char *const argv[])
{
	char *out = NULL;
	int rc = lvm_cmd_run(o, argv, &out);

	free(out);
	return rc ? rc : flush_pvs(o, vg);
}

int lvm_lv_rename(const struct lvm_opts *o, const char *vg, const char *from, const char *to)
{
	const char *argv[] = { "lvrename", vg, from, to, NULL };

	return run(o, vg, argv);
}

int lvm_lv_create(const struct lvm_opts *o, const char *vg, const char *name, uint64_t bytes,
		  const char *const *tags)
{
	const char *argv[32];
	char size[32];
	int n = 0;

	snprintf(size, sizeof(size), "%" PRIu64 "b", bytes);
	argv[n++] = "lvcreate";
	argv[n++] = "--yes";
	argv[n++] = "--type";
	argv[n++] = "linear";
	argv[n++] = "--size";
	argv[n++] = size;
	argv[n++] = "--name";
	argv[n++] = name;
	argv[n++] = "--setautoactivation";
	argv[n++] = "n";
	if (dm_present()) {
		argv[n++] = "-aly";
		argv[n++] = "-Wy";
	} else {
		/* No device-mapper: the LV cannot be activated, so not zeroed either;
		 * vstorfs writes every metadata byte it relies on. */
		argv[n++] = "-an";
		argv[n++] = "-Zn";
	}
	for (int i = 0; tags && tags[i] && n < 28; i++) {
		argv[n++] = "--addtag";
		argv[n++] = tags[i];
	}
	argv[n++] = vg;
	argv[n] = NULL;
	return run(o, vg, argv);
}

int lvm_lv_remove(const struct lvm_opts *o, const char *vg, const char *name)
{
	char path[512];
	const char *argv[] = { "lvremove", "-f", path, NULL };

	if (snprintf(path, sizeof(path), "%s/%s", vg, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	return run(o, vg, argv);
}

int lvm_lv_retagv(const struct lvm_opts *o, const char *vg, const char *name,
		  const char *const *add, const char *const *del)
{
	char path[512];
	const char *argv[24];
	int n = 0;

	if (snprintf(path, sizeof(path), "%s/%s", vg, name) >= (int)sizeof(path))
		return -ENAMETOOLONG;
	argv[n++] = "lvchange";
	for (int i = 0; add && add[i] && n < 10; i++) {
		argv[n++] = "--addtag";
		argv[n++] = add[i];
	}
	for (int i = 0; del && del[i] && n < 20; i++) {
		argv[n++] = "--deltag";
		argv[n++] = del[i];
	}
	argv[n++] = path;
	argv[n] = NULL;
	return run(o, vg, argv);
}

int lvm_lv_retag(const struct lvm_opts *o, const char *vg, const char *name, const char *add,
		 const char *del)
{
	const char *a[2] = { add, NULL }, *d[2] = { del, NULL };

	return lvm_lv_retagv(o, vg, name, a, d);
}
