/*
 * lvm_cmd: fork/execvp of lvm2 with stdout and stderr captured through
 * pipes. Bounded output (64 MiB); the child gets a clean fd table and
 * LVM_SUPPRESS_FD_WARNINGS so lvm2 does not complain about our fds.
 */
#include "lvm_cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "lvm/dm_busy.h"

#define MAX_OUT (64u << 20)
#define MAX_ARGS 64

struct buf {
	char *p;
	size_t len, cap;
};

static int buf_read(int fd, struct buf *b)
{
	char tmp[65536];
	ssize_t n = read(fd, tmp, sizeof(tmp));

	if (n <= 0)
		return n < 0 && errno == EINTR ? 1 : 0;
	if (b->len + n + 1 > MAX_OUT)
		return 1; /* drop the excess, keep draining */
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *p = realloc(b->p, cap);

		if (!p)
			return 1;
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->len, tmp, n);
	b->len += n;
	b->p[b->len] = 0;
	return 1;
}

/*
 * lvm2 sets up a Linux AIO context for its metadata reads, and io_destroy()
 * at exit waits for an RCU grace period: 35 ms of a 40 ms `lvm vgs` here,
 * paid by every command. use_aio=0 cannot be passed with --config (it is
 * read before the command line is), but when io_setup() fails lvm2 falls
 * back to its synchronous engine by design ("Failed to set up async io,
 * using sync io."). So the child gets a seccomp filter that answers
 * io_setup() with ENOSYS and allows everything else.
 */
#if defined(__x86_64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif

static void refuse_aio(void)
{
#ifdef NATIVE_AUDIT_ARCH
	static struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_AUDIT_ARCH, 0, 3),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_setup, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	/* Without CAP_SYS_ADMIN this fails (EACCES): lvm2 then just uses AIO. */
	syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
#endif
}

/* Between fork and exec only async-signal-safe calls: other threads may hold malloc's lock. */
static void child(int outfd, int errfd, char *const argv[], char *const envp[])
{
	refuse_aio();
	dup2(outfd, 1);
	dup2(errfd, 2);
	int nul = open("/dev/null", O_RDONLY);

	if (nul >= 0)
		dup2(nul, 0);
	syscall(SYS_close_range, 3, ~0U, 0);
	signal(SIGPIPE, SIG_DFL);
	/* mount(8) may run us with a PATH that lacks /sbin. */
	execve("/sbin/lvm", argv, envp);
	execve("/usr/sbin/lvm", argv, envp);
	execvpe("lvm", argv, envp);
	_exit(127);
}

int lvm_cmd_run(const struct lvm_opts *o, const char *const argv[], char **out)
{
	const char *full[MAX_ARGS + 8];
	char devices[4096] = "";
	struct buf ob = { 0 }, eb = { 0 };
	int po[2], pe[2], n = 0, status, rc;
	pid_t pid;

	full[n++] = "lvm";
	full[n++] = argv[0];
	if (!dm_present()) {
		full[n++] = "--driverloaded";
		full[n++] = "n";
	}
	if (o && o->devices && o->devices[0]) {
		size_t used = 0;

		for (int i = 0; o->devices[i]; i++)
			used += snprintf(devices + used, used < sizeof(devices) ? sizeof(devices) - used : 0,
					 "%s%s", i ? "," : "", o->devices[i]);
		if (used >= sizeof(devices))
			return -E2BIG;
		full[n++] = "--devices";
		full[n++] = devices;
	}
	for (int i = 1; argv[i]; i++) {
		if (n >= MAX_ARGS + 6)
			return -E2BIG;
		full[n++] = argv[i];
	}
	full[n] = NULL;
	extern char **environ;
	size_t nenv = 0;

	while (environ[nenv])
		nenv++;
	char **envp = calloc(nenv + 3, sizeof(*envp));
	size_t k = 0;

	if (!envp)
		return -ENOMEM;
	/* lvm2's messages are matched below: they must be the untranslated ones. */
	for (size_t i = 0; i < nenv; i++)
		if (strncmp(environ[i], "LC_ALL=", 7) && strncmp(environ[i], "LANGUAGE=", 9))
			envp[k++] = environ[i];
	envp[k++] = "LC_ALL=C";
	envp[k++] = "LVM_SUPPRESS_FD_WARNINGS=1";
	if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
		free(envp);
		return -errno;
	}
	pid = fork();
	if (pid == 0)
		child(po[1], pe[1], (char *const *)full, envp);
	free(envp);
	close(po[1]);
	close(pe[1]);
	if (pid < 0) {
		close(po[0]);
		close(pe[0]);
		return -errno;
	}
	struct pollfd pf[2] = { { po[0], POLLIN, 0 }, { pe[0], POLLIN, 0 } };
	int open_fds = 2;

	while (open_fds) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			if (pf[i].fd >= 0 && pf[i].revents) {
				if (!buf_read(pf[i].fd, i ? &eb : &ob)) {
					close(pf[i].fd);
					pf[i].fd = -1;
					open_fds--;
				}
			}
		}
	}
	for (int i = 0; i < 2; i++)
		if (pf[i].fd >= 0)
			close(pf[i].fd);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	rc = WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -EIO;
	if (rc) {
		const char *err = eb.p ? eb.p : "";

		if (strstr(err, "not found") || strstr(err, "Cannot process volume group"))
			rc = -ENOENT;
		else if (strstr(err, "insufficient free space"))
			rc = -ENOSPC;
		if (rc != -ENOENT)
			vlog(LOG_ERR, "lvm %s failed (%s %d): %s", argv[0],
			     WIFEXITED(status) ? "exit status" : "signal",
			     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), err);
	}
	free(eb.p);
	if (out && rc == 0) {
		*out = ob.p ? ob.p : strdup("");
		return *out ? 0 : -ENOMEM;
	}
	free(ob.p);
	return rc;
}
