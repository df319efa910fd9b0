/*
 * dir_backing: the chain_store of a directory store. A backing string
 * names a file inside the store or nothing:
 *  - relative ("snap-s1-vm-100-disk-0.qcow2", "../100/base-100-disk-1.qcow2"):
 *    relative to the directory of the layer naming it, as qemu reads it;
 *    ".." may climb only up to the store's root;
 *  - absolute below the store's path (as mounted, or its realpath);
 *  - absolute ".../_base/<name>" (Nova's image cache) when the store has a
 *    _base directory: re-rooted to this store's _base, so a copied or
 *    NFS-mounted instances directory whose _base moved with it resolves;
 *  - anything else is outside the store: -EACCES, and chain/ logs it.
 * The file itself is then opened confined below the root (file_io.c), so a
 * symlink out of the store is refused too.
 */
#include "dir/dir_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int dir_normalize(const char *path, char **out)
{
	size_t n = strlen(path);
	char *res = malloc(n + 1), *copy = strdup(path), *save = NULL, *c;
	size_t len = 0;

	*out = NULL;
	if (!res || !copy) {
		free(res);
		free(copy);
		return -ENOMEM;
	}
	res[0] = 0;
	for (c = strtok_r(copy, "/", &save); c; c = strtok_r(NULL, "/", &save)) {
		if (!strcmp(c, "."))
			continue;
		if (!strcmp(c, "..")) {
			char *slash;

			if (!len) {
				free(res);
				free(copy);
				return -EACCES;
			}
			slash = strrchr(res, '/');
			len = slash ? (size_t)(slash - res) : 0;
			res[len] = 0;
			continue;
		}
		if (len)
			res[len++] = '/';
		memcpy(res + len, c, strlen(c) + 1);
		len += strlen(c);
	}
	free(copy);
	if (!len) {
		free(res);
		return -EACCES;
	}
	*out = res;
	return 0;
}

static const char *strip_prefix(const char *s, const char *prefix)
{
	size_t n;

	if (!prefix || !prefix[0])
		return NULL;
	n = strlen(prefix);
	if (strncmp(s, prefix, n) || s[n] != '/')
		return NULL;
	return s + n + 1;
}

int dir_backing_resolve(const struct dir_backing *b, const char *from_rel, const char *backing,
			char **rel_out)
{
	char *joined = NULL;
	const char *rest;
	int rc;

	*rel_out = NULL;
	if (!backing[0])
		return -EACCES;
	if (backing[0] != '/') {
		const char *slash = strrchr(from_rel, '/');

		if (!slash)
			joined = strdup(backing);
		else if (asprintf(&joined, "%.*s/%s", (int)(slash - from_rel), from_rel, backing) < 0)
			joined = NULL;
	} else if ((rest = strip_prefix(backing, b->abspath)) ||
		   (rest = strip_prefix(backing, b->realpath))) {
		joined = strdup(rest);
	} else if (b->has_base) {
		/* Nova: /var/lib/nova/instances/_base/<name>, wherever that directory is now. */
		const char *base = NULL, *p = backing;

		while ((p = strstr(p, "/_base/")))
			base = p++;
		if (!base || !base[7] || strchr(base + 7, '/'))
			return -EACCES;
		if (asprintf(&joined, "_base/%s", base + 7) < 0)
			joined = NULL;
	} else {
		return -EACCES;
	}
	if (!joined)
		return -ENOMEM;
	rc = dir_normalize(joined, rel_out);
	free(joined);
	return rc;
}

static int open_backing(const struct chain_store *cs, struct layer_io *from, const char *backing,
			struct layer_io **out)
{
	const struct dir_backing *b = cs->opaque;
	const char *from_rel = file_io_rel(from);
	char *rel;
	int rc;

	*out = NULL;
	if (!from_rel)
		return -EACCES;
	rc = dir_backing_resolve(b, from_rel, backing, &rel);
	if (rc)
		return rc;
	rc = file_io_open(b->rootfd, b->store, rel, false, out);
	free(rel);
	if (rc == 0)
		file_io_set_gate(*out, b->gates);
	if (rc == -EXDEV || rc == -ELOOP)
		return -EACCES;
	if (rc && rc != -ENOENT && rc != -ENOMEM && rc != -EACCES && rc != -EINVAL)
		rc = -EIO;
	return rc;
}

void dir_backing_init(struct chain_store *cs, struct dir_backing *b)
{
	cs->open_backing = open_backing;
	cs->opaque = b;
	cs->kind = "directory";
}
