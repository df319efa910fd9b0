/*
 * inode table: an array indexed by inode number (1 = root) and a hash of
 * (parent, name) to the newest node for that path. Both only grow.
 */
#include "inode.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t inode_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_node **by_ino;     /* inode_lock; by_ino[ino] */
static size_t nino, cap_ino;        /* inode_lock */
static struct fs_node **buckets;    /* inode_lock */
static size_t nbuckets;             /* inode_lock; power of two */

static size_t hash_key(const struct fs_node *parent, const char *name)
{
	uint64_t h = 1469598103934665603ULL ^ (uintptr_t)parent;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ULL;
	return h & (nbuckets - 1);
}

static int grow_buckets(void)
{
	size_t n = nbuckets ? nbuckets * 2 : 1024, old = nbuckets;
	struct fs_node **nb = calloc(n, sizeof(*nb)), **ob = buckets;

	if (!nb)
		return -1;
	buckets = nb;
	nbuckets = n;
	for (size_t i = 0; i < old; i++) {
		for (struct fs_node *e = ob[i], *next; e; e = next) {
			size_t h = hash_key(e->parent, e->name);

			next = e->hash_next;
			e->hash_next = buckets[h];
			buckets[h] = e;
		}
	}
	free(ob);
	return 0;
}

static struct fs_node *node_new(struct fs_node *parent, enum fs_node_kind kind,
				const char *name, const char *ident)
{
	struct fs_node *n = calloc(1, sizeof(*n));

	if (!n || !(n->name = strdup(name)) || (ident && !(n->ident = strdup(ident))))
		goto fail;
	if (nino + 1 >= cap_ino) {
		size_t c = cap_ino ? cap_ino * 2 : 4096;
		struct fs_node **g = realloc(by_ino, c * sizeof(*g));

		if (!g)
			goto fail;
		by_ino = g;
		cap_ino = c;
	}
	n->parent = parent;
	n->kind = kind;
	n->ino = ++nino;
	by_ino[n->ino] = n;
	return n;
fail:
	if (n) {
		free(n->name);
		free(n->ident);
	}
	free(n);
	return NULL;
}

int fs_inode_init(void)
{
	struct fs_node *root;

	if (grow_buckets())
		return -1;
	root = node_new(NULL, FS_NODE_ROOT, "", NULL);
	return root && root->ino == FUSE_ROOT_ID ? 0 : -1;
}

struct fs_node *fs_inode_find(fuse_ino_t ino)
{
	struct fs_node *n = NULL;

	pthread_mutex_lock(&inode_lock);
	if (ino >= 1 && ino <= nino)
		n = by_ino[ino];
	pthread_mutex_unlock(&inode_lock);
	return n;
}

static bool same_ident(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

struct fs_node *fs_inode_child(struct fs_node *parent, enum fs_node_kind kind,
			       const char *name, const char *ident)
{
	struct fs_node *n, **slot;

	pthread_mutex_lock(&inode_lock);
	for (slot = &buckets[hash_key(parent, name)]; (n = *slot); slot = &n->hash_next)
		if (n->parent == parent && !strcmp(n->name, name))
			break;
	if (n && n->kind == kind && same_ident(n->ident, ident))
		goto out;
	if (n)
		*slot = n->hash_next; /* the path names something new: retire the old node */
	n = node_new(parent, kind, name, ident);
	if (n) {
		if (nino > nbuckets)
			grow_buckets(); /* on failure chains just get longer */
		slot = &buckets[hash_key(parent, name)];
		n->hash_next = *slot;
		*slot = n;
	}
out:
	pthread_mutex_unlock(&inode_lock);
	return n;
}
