#include "crash.h"

#ifdef VSTORFS_CRASH_HOOKS
#include <errno.h>
#include <signal.h>
#include <stdio.h>
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

/* Each named step fails once per process: what comes after (a retry, recovery) runs. */
int crash_fail(const char *step)
{
	static char fired[1024];
	const char *at = getenv("VSTORFS_FAIL_AT");
	size_t len = strlen(step), used = strlen(fired);

	for (const char *c = at; c && *c; c = strchr(c, ',') ? strchr(c, ',') + 1 : NULL)
		if (!strncmp(c, step, len) && (c[len] == ',' || c[len] == 0)) {
			char key[128];

			snprintf(key, sizeof(key), ",%s,", step);
			if (strstr(fired, key) || used + strlen(key) >= sizeof(fired))
				return 0;
			snprintf(fired + used, sizeof(fired) - used, "%s", key + (used ? 1 : 0));
			vlog(LOG_ERR, "failure point %s: failing with EIO", step);
			return -EIO;
		}
	return 0;
}
#else
/* ISO C forbids an empty translation unit. */
typedef int crash_hooks_disabled;
#endif
