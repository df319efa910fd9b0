/*
 * dm_busy: is an LV open on this host? With device-mapper present, an
 * active LV is a dm device and its open count says whether something (a
 * running VM's qemu) holds it. Without device-mapper nothing can be open.
 */
#ifndef VSTORFS_DM_BUSY_H
#define VSTORFS_DM_BUSY_H

#include <stdbool.h>

bool dm_present(void);

/* 1 if <vg>/<lv> is an open dm device, 0 if not (or not active), negative errno on failure. */
int dm_lv_open_count_busy(const char *vg, const char *lv);

#endif
