/* env.h - environment blocks for the processes the supervisor starts.
 *
 * Every child (resolver, worker) gets this process's environment plus a few
 * variables of its own; a block is built once per child and handed to
 * uv_spawn as a NULL-terminated "NAME=value" array.
 */
#ifndef DYN__SERVE_ENV_H
#define DYN__SERVE_ENV_H

#include <stddef.h>

typedef struct dyn__env {
  char **vars; /* NULL-terminated, always */
  size_t n, cap;
} dyn__env_t;

/* Starts from a copy of this process's environment. */
int dyn__env_init(dyn__env_t *e);
/* Adds or replaces name. */
int dyn__env_set(dyn__env_t *e, const char *name, const char *value);
/* The value of name, or NULL. */
const char *dyn__env_get(const dyn__env_t *e, const char *name);
/* Hands the array over (free it with dyn__strv_free); e is left empty. */
char **dyn__env_take(dyn__env_t *e);
void dyn__env_free(dyn__env_t *e);

/* Frees a NULL-terminated array of malloc'd strings and the array. */
void dyn__strv_free(char **v);
/* A deep copy of a NULL-terminated array, or NULL when out of memory. */
char **dyn__strv_dup(char *const *v);

#endif
