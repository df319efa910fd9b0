/*
 * Option parsing. Accepts both "vstorfs SOURCE DIR -o a,b -f" and the
 * mount(8) helper form; generic mount options that mean nothing to a FUSE
 * daemon (rw, defaults, noauto, nofail, _netdev, x-*, ...) are accepted and
 * ignored so an fstab line can carry them. An option not known here is
 * offered to the stores (store/store_registry.h: devices=, ceph_*=, ...);
 * one none of them takes is an error.
 */
#include "options.h"

#include "store/store_registry.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysmacros.h>
#include <sys/stat.h>

void fs_options_usage(const char *prog)
{
	fprintf(stderr,
		"usage: %s SOURCE MOUNTPOINT [-f] [-d] [-o option[,option...]]\n"
		"  SOURCE: a comma list of stores:\n", prog);
	store_registry_usage_sources(stderr);
	fprintf(stderr,
		"          pve: or pve:all (every storage of /etc/pve/storage.cfg), pve:STOREID\n"
		"options:\n"
		"  ro                    read-only mount: no snapshot creation or removal\n"
		"  allow_other           let users other than the mounter in (umask then 022)\n"
		"  uid=N gid=N           owner of every file (default 0)\n"
		"  umask=NNN             octal mask on 0444 files / 0555 dirs (default 077,\n"
		"                        022 with allow_other)\n"
		"  partitions=visible    list <view>/.partitions (hidden by default, always there)\n"
		"  rescan=SECONDS        how often VG changes are looked for (default 2)\n"
		"  current_io=direct|cache  current views skip the page cache (default),\n"
		"                        or go through it (needed for mmap MAP_SHARED)\n"
		"  readahead_kb=N        the kernel's readahead window for buffered readers\n"
		"                        of snapshot views (default 4096; 0: the kernel's)\n"
		"  shared_snapshots      mkdir/rmdir on a shared storage that no Proxmox cluster\n"
		"                        uses (no /etc/pve/priv/lock), and on lvmlockd VGs\n"
		"  foreground (-f)       stay in the foreground, log to stderr\n"
		"  debug                 verbose logging; -d also traces FUSE requests\n"
		"store options:\n");
	store_registry_usage_options(stderr);
}

static int parse_uint(const char *opt, const char *val, unsigned long max, int base,
		      unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(val, &end, base);
	if (errno || end == val || *end || *out > max || val[0] == '-') {
		fprintf(stderr, "vstorfs: bad value for %s: '%s'\n", opt, val);
		return -1;
	}
	return 0;
}

static bool ignored_mount_option(const char *tok)
{
	static const char *const plain[] = {
		"rw", "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser",
		"users", "owner", "group", "exec", "noexec", "suid", "nosuid", "dev", "nodev",
		"atime", "noatime", "relatime", "norelatime", "strictatime", "async", "sync",
		"default_permissions", NULL,
	};
	for (int i = 0; plain[i]; i++)
		if (!strcmp(tok, plain[i]))
			return true;
	return !strncmp(tok, "x-", 2) || !strncmp(tok, "comment=", 8);
}

static int parse_one(struct fs_options *o, const char *tok)
{
	unsigned long v;
	const char *eq = strchr(tok, '=');
	int rc = store_registry_option(&o->store, tok);

	if (rc)
		return rc < 0 ? -1 : 0;
	if (!strcmp(tok, "ro"))
		o->read_only = true;
	else if (!strcmp(tok, "allow_other"))
		o->allow_other = true;
	else if (!strcmp(tok, "shared_snapshots"))
		o->shared_snapshots = true;
	else if (!strcmp(tok, "debug"))
		o->debug = true;
	else if (!strcmp(tok, "foreground"))
		o->foreground = true;
	else if (!strcmp(tok, "current_io=direct"))
		o->current_cached = false;
	else if (!strcmp(tok, "current_io=cache"))
		o->current_cached = true;
	else if (!strcmp(tok, "partitions=visible"))
		o->partitions_visible = true;
	else if (!strcmp(tok, "partitions=hidden"))
		o->partitions_visible = false;
	else if (!strncmp(tok, "uid=", 4)) {
		if (parse_uint("uid", eq + 1, UINT_MAX - 1, 10, &v))
			return -1;
		o->uid = v;
	} else if (!strncmp(tok, "gid=", 4)) {
		if (parse_uint("gid", eq + 1, UINT_MAX - 1, 10, &v))
			return -1;
		o->gid = v;
	} else if (!strncmp(tok, "umask=", 6)) {
		if (parse_uint("umask", eq + 1, 0777, 8, &v))
			return -1;
		o->umask = v;
		o->umask_set = true;
	} else if (!strncmp(tok, "rescan=", 7)) {
		if (parse_uint("rescan", eq + 1, 3600, 10, &v) || v == 0) {
			if (v == 0)
				fprintf(stderr, "vstorfs: rescan must be at least 1 second\n");
			return -1;
		}
		o->rescan_secs = v;
	} else if (!strncmp(tok, "readahead_kb=", 13)) {
		if (parse_uint("readahead_kb", eq + 1, 1 << 20, 10, &v))
			return -1;
		o->readahead_kb = v;
	} else if (!ignored_mount_option(tok)) {
		fprintf(stderr, "vstorfs: unknown option '%s'\n", tok);
		return -1;
	}
	return 0;
}

static int parse_option_string(struct fs_options *o, const char *s)
{
	char *copy = strdup(s), *save = NULL;
	int rc = 0;

	if (!copy)
		return -1;
	store_registry_options_reset();
	for (char *tok = strtok_r(copy, ",", &save); tok && !rc; tok = strtok_r(NULL, ",", &save))
		rc = parse_one(o, tok);
	free(copy);
	return rc;
}

static void fill_store_config(struct fs_options *o)
{
	o->store.read_only = o->read_only;
	o->store.shared_snapshots = o->shared_snapshots;
	o->store.pve_storage_cfg = NULL; /* Proxmox's own path */
}

/*
 * SOURCE's words: "all", a word a store kind claims (an absolute directory,
 * rbd:<pool>), or else a VG name. A relative path would be taken for a VG
 * name and fail with "not found": say the rule instead.
 */
static int check_source(const char *source)
{
	char *copy = strdup(source), *save = NULL, *abs;
	struct stat st;
	int rc = 0;

	if (!copy)
		return -1;
	for (char *w = strtok_r(copy, ",", &save); w && !rc; w = strtok_r(NULL, ",", &save)) {
		if (store_registry_claims(w) || !strcmp(w, "all"))
			continue;
		/* VG names hold no '/' or '~' and are never "." or ".." */
		if (strchr(w, '/') || w[0] == '~' || !strcmp(w, ".") || !strcmp(w, "..")) {
			abs = realpath(w, NULL);
			fprintf(stderr, "vstorfs: source '%s': a directory store needs an absolute path%s%s%s "
				"(a bare word is a volume group name, rbd:<pool> a Ceph pool)\n",
				w, abs ? " (" : "", abs ? abs : "", abs ? ")" : "");
			free(abs);
			rc = -1;
		} else if (stat(w, &st) == 0 && S_ISDIR(st.st_mode)) {
			abs = realpath(w, NULL);
			fprintf(stderr, "vstorfs: note: source '%s' is taken as a volume group name; for the "
				"directory here give its absolute path (%s)\n", w, abs ? abs : w);
			free(abs);
		}
	}
	free(copy);
	return rc;
}

/* mountinfo escapes space, tab, newline and backslash as \ooo. */
static void unescape(char *s)
{
	char *d = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*d++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*d++ = *s;
		}
	}
	*d = 0;
}

bool fs_options_mounted_here(const char *path, char *src, size_t n, dev_t *dev)
{
	FILE *f = fopen("/proc/self/mountinfo", "r");
	char *line = NULL;
	size_t cap = 0;
	bool found = false;

	if (!f)
		return false;
	/* the last match: mounts stacked on one path are listed bottom first */
	while (getline(&line, &cap, f) > 0) {
		char mnt[4096], fstype[256], source[4096];
		unsigned maj, min;
		char *sep = strstr(line, " - ");

		/* id parent maj:min root MOUNTPOINT opts [optional...] - FSTYPE SOURCE super */
		if (!sep || sscanf(line, "%*s %*s %u:%u %*s %4095s", &maj, &min, mnt) != 3 ||
		    sscanf(sep + 3, "%255s %4095s", fstype, source) != 2)
			continue;
		unescape(mnt);
		unescape(source);
		if (!strcmp(mnt, path) && !strcmp(fstype, "fuse.vstorfs")) {
			if (src)
				snprintf(src, n, "%s", source);
			if (dev)
				*dev = makedev(maj, min);
			found = true;
		}
	}
	free(line);
	fclose(f);
	return found;
}

int fs_options_parse(int argc, char **argv, struct fs_options *o)
{
	const char *pos[2];
	int npos = 0;

	memset(o, 0, sizeof(*o));
	o->umask = 077;
	o->rescan_secs = 2;
	o->readahead_kb = 4096;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "-o")) {
			if (++i >= argc) {
				fprintf(stderr, "vstorfs: -o needs an argument\n");
				return -1;
			}
			if (parse_option_string(o, argv[i]))
				return -1;
		} else if (!strncmp(a, "-o", 2)) {
			if (parse_option_string(o, a + 2))
				return -1;
		} else if (!strcmp(a, "-f")) {
			o->foreground = true;
		} else if (!strcmp(a, "-d")) {
			o->foreground = o->debug = o->fuse_debug = true;
		} else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			fs_options_usage(argv[0]);
			exit(0);
		} else if (a[0] == '-' && a[1]) {
			/* mount(8) passes -n, -s, -v to helpers: nothing to do for them. */
			if (strspn(a + 1, "nsv") != strlen(a + 1)) {
				fprintf(stderr, "vstorfs: unknown flag '%s'\n", a);
				return -1;
			}
		} else if (npos < 2) {
			pos[npos++] = a;
		} else {
			fprintf(stderr, "vstorfs: unexpected argument '%s'\n", a);
			return -1;
		}
	}
	if (npos != 2) {
		fs_options_usage(argv[0]);
		return -1;
	}
	o->source = strdup(pos[0]);
	o->mountpoint = realpath(pos[1], NULL);
	if (!o->source || !o->mountpoint) {
		fprintf(stderr, "vstorfs: bad mountpoint %s: %s\n", pos[1], strerror(errno));
		return -1;
	}
	if (!o->source[0]) {
		fprintf(stderr, "vstorfs: empty source\n");
		return -1;
	}
	if (check_source(o->source))
		return -1;
	/* allow_other is asked for so that others can read: the private
	 * default would refuse them anyway. */
	if (o->allow_other && !o->umask_set)
		o->umask = 022;
	fill_store_config(o);
	return 0;
}

void fs_options_free(struct fs_options *o)
{
	free(o->source);
	free(o->mountpoint);
	store_registry_options_free(&o->store);
}
