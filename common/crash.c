#include "crash.h"

#ifdef VSTORFS_CRASH_HOOKS
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

void crash_point(const char *step)
{
	const char *at = getenv("VSTORFS_CRASH_AT");

	if (at && !strcmp(at, step)) {
		vlog(LOG_ERR, "crash point %s: killing myself", step);
		raise(SIGKILL);
	}
}

int crash_fail(const char *step)
{
	const char *at = getenv("VSTORFS_FAIL_AT");
	size_t len = strlen(step);

	for (const char *c = at; c && *c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL)
		if (!strncmp(c, step, len) && (c[len] == ',' || c[len] == 0)) {
			vlog(LOG_ERR, "failure point %s: failing with EIO", step);
			return -EIO;
		}
	return 0;
}
#else
/* ISO C forbids an empty translation unit. */
typedef int crash_hooks_disabled;
#endif
