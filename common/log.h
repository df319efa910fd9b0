/*
 * One logging sink for the whole daemon: stderr when running in the
 * foreground (or under tests), syslog otherwise. Every layer logs where it
 * understands an error, once, and returns a negative errno to its caller.
 */
#ifndef VSTORFS_LOG_H
#define VSTORFS_LOG_H

#include <stdbool.h>
#include <syslog.h> /* LOG_ERR, LOG_WARNING, LOG_NOTICE, LOG_INFO, LOG_DEBUG */

void vlog_init(bool to_stderr, bool debug);
void vlog_silence(bool silent);
void vlog(int prio, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
