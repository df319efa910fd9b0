/*
 * dm_busy: libdevmapper's DM_DEVICE_INFO on the LV's dm name. LVM names
 * dm devices "<vg>-<lv>" with every '-' inside either part doubled.
 */
#include "dm_busy.h"

#include <errno.h>
#include <fcntl.h>
#include <libdevmapper.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The control node can exist without the driver (lvm2 creates it): only an
 * open that succeeds means device-mapper is really there. */
bool dm_present(void)
{
	static int present = -1;

	if (present < 0) {
		int fd = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);

		present = fd >= 0;
		if (fd >= 0)
			close(fd);
	}
	return present;
}

static size_t escape_into(char *out, size_t pos, size_t cap, const char *s)
{
	for (; *s && pos + 2 < cap; s++) {
		out[pos++] = *s;
		if (*s == '-')
			out[pos++] = '-';
	}
	return pos;
}

int dm_lv_open_count_busy(const char *vg, const char *lv)
{
	char name[512];
	size_t pos;
	struct dm_task *t;
	struct dm_info info;
	int rc;

	if (!dm_present())
		return 0;
	pos = escape_into(name, 0, sizeof(name), vg);
	name[pos++] = '-';
	pos = escape_into(name, pos, sizeof(name), lv);
	name[pos] = 0;
	t = dm_task_create(DM_DEVICE_INFO);
	if (!t)
		return -ENOMEM;
	if (!dm_task_set_name(t, name) || !dm_task_run(t) || !dm_task_get_info(t, &info))
		rc = -EIO;
	else
		rc = info.exists && info.open_count > 0;
	dm_task_destroy(t);
	return rc;
}
