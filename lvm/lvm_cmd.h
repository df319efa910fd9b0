/*
 * lvm_cmd: running lvm2. Always an argument vector and execvp, never a
 * shell. Commands go to o->shell, the store's long-lived lvm shell (lvm_shell.h), unless
 * VSTORFS_LVM_SHELL=0 or it cannot start. Options every call needs are added here: --devices when the mount
 * restricts scanning, --driverloaded n when there is no device-mapper.
 */
#ifndef VSTORFS_LVM_CMD_H
#define VSTORFS_LVM_CMD_H

#include "lvm.h"

/*
 * Run `lvm <argv...>` (argv[0] is the subcommand, NULL-terminated).
 * *out gets stdout (NUL-terminated, malloc'd) when out is not NULL.
 * Returns 0, -ENOENT when lvm2 says the VG does not exist, -ENOSPC when it
 * has no room for a new LV, or -EIO with
 * stderr logged.
 */
int lvm_cmd_run(const struct lvm_opts *o, const char *const argv[], char **out);

/* For lvm_shell's child, after fork: execs lvm2 as lvm_cmd_run does; never returns. */
void lvm_cmd_exec(char *const argv[], char *const envp[]);

#endif
