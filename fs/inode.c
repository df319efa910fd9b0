/*
 * inode table: a hash of inode numbers to nodes and a hash of (parent,
 * name) to the newest node for that path. Both only grow.
 *
 * Inode numbers are derived, not counted: a node's number is a 64-bit
 * hash of its parent's number, its name and its identity, so the same
 * path standing for the same bytes gets the same number in every mount,
 * whatever the lookup order (backup tools that skip unchanged files by
 * inode number rely on it); numbers lie in [2, 2^63). Two different nodes hashing alike are told
 * apart by probing the next numbers: the later one moves on, so numbers
 * stay unique, and only such a (2^-64 rare) pair can depend on order.
 */
#include "inode.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t inode_lock = PTHREAD_MUTEX_INITIALIZER;
static struct fs_node **ino_buckets; /* inode_lock; chained by ino_next */
static size_t nino, nino_buckets;   /* inode_lock; nino_buckets a power of two */
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

static uint64_t hash_str(uint64_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ULL;
	return (h ^ 0xff) * 1099511628211ULL;
}

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	return x ^ (x >> 33);
}

static struct fs_node *ino_lookup(uint64_t ino)
{
	for (struct fs_node *e = ino_buckets[mix(ino) & (nino_buckets - 1)]; e; e = e->ino_next)
		if (e->ino == ino)
			return e;
	return NULL;
}

static int grow_ino_buckets(void)
{
	size_t n = nino_buckets ? nino_buckets * 2 : 1024, old = nino_buckets;
	struct fs_node **nb = calloc(n, sizeof(*nb)), **ob = ino_buckets;

	if (!nb)
		return -1;
	ino_buckets = nb;
	nino_buckets = n;
	for (size_t i = 0; i < old; i++) {
		for (struct fs_node *e = ob[i], *next; e; e = next) {
			size_t h = mix(e->ino) & (n - 1);

			next = e->ino_next;
			e->ino_next = ino_buckets[h];
			ino_buckets[h] = e;
		}
	}
	free(ob);
	return 0;
}

static bool same_ident(const char *a, const char *b)
{
	return (!a && !b) || (a && b && !strcmp(a, b));
}

static bool same_node(const struct fs_node *e, const struct fs_node *parent, enum fs_node_kind kind,
		      const char *name, const char *ident)
{
	return e->parent == parent && e->kind == kind && !strcmp(e->name, name) &&
	       same_ident(e->ident, ident);
}

/* Numbers stay below 2^63: tools that keep st_ino in a signed 64-bit
 * integer (Java, SQLite-backed catalogs, some borg and restic code paths)
 * would see negative numbers above. */
#define INO_MASK 0x7fffffffffffffffULL

/* The number for (parent, kind, name, ident); FUSE_ROOT_ID and 0 are taken. */
static uint64_t derive_ino(const struct fs_node *parent, enum fs_node_kind kind, const char *name,
			   const char *ident)
{
	uint64_t h = 1469598103934665603ULL ^ mix(parent ? parent->ino : 0) ^ (uint64_t)kind;

	h = hash_str(h, name);
	if (ident)
		h = hash_str(h, ident);
	h = mix(h) & INO_MASK;
	for (;; h = (h + 1) & INO_MASK) {
		struct fs_node *e = ino_lookup(h);

		if (h <= FUSE_ROOT_ID)
			continue;
		if (!e || same_node(e, parent, kind, name, ident))
			return h;
	}
}

static struct fs_node *node_new(struct fs_node *parent, enum fs_node_kind kind,
				const char *name, const char *ident)
{
	struct fs_node *n = calloc(1, sizeof(*n));
	size_t h;

	if (!n || !(n->name = strdup(name)) || (ident && !(n->ident = strdup(ident))))
		goto fail;
	if (nino + 1 >= nino_buckets && grow_ino_buckets())
		goto fail;
	n->parent = parent;
	n->kind = kind;
	n->ino = parent ? derive_ino(parent, kind, name, ident) : FUSE_ROOT_ID;
	h = mix(n->ino) & (nino_buckets - 1);
	n->ino_next = ino_buckets[h];
	ino_buckets[h] = n;
	nino++;
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

	if (grow_buckets() || grow_ino_buckets())
		return -1;
	root = node_new(NULL, FS_NODE_ROOT, "", NULL);
	return root && root->ino == FUSE_ROOT_ID ? 0 : -1;
}

struct fs_node *fs_inode_find(fuse_ino_t ino)
{
	struct fs_node *n = NULL;

	pthread_mutex_lock(&inode_lock);
	n = ino_lookup(ino);
	pthread_mutex_unlock(&inode_lock);
	return n;
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
	/* A path that names again what it once named gets its old node back. */
	n = ino_lookup(derive_ino(parent, kind, name, ident));
	if (!n)
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
