/*
 * store_registry: every kind of store this build knows (store.h, struct
 * store_kind), one line each in store_registry.c. store_set.c asks it which
 * kind serves a SOURCE word and which kinds can list "all"; fs/options.c
 * hands it the -o options it does not know itself, and --help prints its
 * usage texts.
 */
#ifndef VSTORFS_STORE_REGISTRY_H
#define VSTORFS_STORE_REGISTRY_H

#include <stdbool.h>
#include <stdio.h>

#include "store/store.h"

/* The kinds, NULL-terminated; a kind not built in has .missing set. */
extern const struct store_kind *const store_kinds[];

/* The kind serving a SOURCE word, and the word its open() takes (the
 * prefix stripped); NULL if none does (logged). */
const struct store_kind *store_registry_match(const char *word, const char **rest);
/* Does a kind claim the word by its prefix or matcher (not the kind
 * taking every other word)? Also for a kind this build lacks. */
bool store_registry_claims(const char *word);
/* Open a SOURCE word with the kind that serves it: -EOPNOTSUPP (logged)
 * for a kind this build lacks. */
int store_registry_open(const char *word, const struct store_config *cfg, struct store **out);

/* Offer one -o option to every kind: 1 taken, 0 no kind knows it, -1 bad
 * (printed). Call store_registry_options_reset before a new option string. */
int store_registry_option(struct store_config *cfg, const char *opt);
void store_registry_options_reset(void);
/* dst = src with each kind's options copied (a pve: storage's own settings
 * go on top): -ENOMEM, dst then needs no freeing. */
int store_registry_config_copy(struct store_config *dst, const struct store_config *src);
void store_registry_options_free(struct store_config *cfg);
/* A kind's options in cfg: NULL when none were given (its defaults). */
const void *store_registry_opts(const struct store_config *cfg, const struct store_kind *k);

/* --help: the SOURCE words, then each kind's options. */
void store_registry_usage_sources(FILE *f);
void store_registry_usage_options(FILE *f);

#endif
