#include "log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>

static bool log_to_stderr = true;
static bool log_debug;
static bool log_silent;   /* fuzzing: millions of bad images, no log wanted */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void vlog_init(bool to_stderr, bool debug)
{
	log_to_stderr = to_stderr;
	log_debug = debug;
	if (!to_stderr)
		openlog("vstorfs", LOG_PID, LOG_DAEMON);
}

static const char *prio_name(int prio)
{
	switch (prio) {
	case LOG_ERR: return "error";
	case LOG_WARNING: return "warning";
	case LOG_NOTICE: return "notice";
	case LOG_INFO: return "info";
	default: return "debug";
	}
}

void vlog(int prio, const char *fmt, ...)
{
	va_list ap;

	if ((prio >= LOG_DEBUG && !log_debug) || log_silent)
		return;
	va_start(ap, fmt);
	if (log_to_stderr) {
		/* One locked write per line so lines from reader threads never interleave. */
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "vstorfs: %s: ", prio_name(prio));
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		fflush(stderr);
		pthread_mutex_unlock(&log_lock);
	} else {
		vsyslog(prio, fmt, ap);
	}
	va_end(ap);
}

void vlog_silence(bool silent)
{
	log_silent = silent;
}
