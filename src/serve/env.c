/* env.c - building "NAME=value" arrays for uv_spawn.
 *
 * Plain arrays, searched linearly: an environment has a few dozen entries
 * and is built once per process start.
 */
#include "serve/env.h"

#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

extern char **environ;

static int grow(dyn__env_t *e) {
  if (e->n + 1 < e->cap) return DYN_OK;
  size_t cap = e->cap ? e->cap * 2 : 64;
  char **v = realloc(e->vars, cap * sizeof *v);
  if (!v) return DYN_ENOMEM;
  e->vars = v;
  e->cap = cap;
  return DYN_OK;
}

int dyn__env_init(dyn__env_t *e) {
  memset(e, 0, sizeof *e);
  if (grow(e)) return DYN_ENOMEM;
  e->vars[0] = NULL;
  for (char **p = environ; p && *p; p++) {
    char *copy = strdup(*p);
    if (!copy || grow(e)) {
      free(copy);
      dyn__env_free(e);
      return DYN_ENOMEM;
    }
    e->vars[e->n++] = copy;
    e->vars[e->n] = NULL;
  }
  return DYN_OK;
}

static ssize_t find(const dyn__env_t *e, const char *name) {
  size_t len = strlen(name);
  for (size_t i = 0; i < e->n; i++)
    if (!strncmp(e->vars[i], name, len) && e->vars[i][len] == '=') return (ssize_t)i;
  return -1;
}

int dyn__env_set(dyn__env_t *e, const char *name, const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  char *var = malloc(nl + vl + 2);
  if (!var) return DYN_ENOMEM;
  memcpy(var, name, nl);
  var[nl] = '=';
  memcpy(var + nl + 1, value, vl + 1);
  ssize_t i = find(e, name);
  if (i >= 0) {
    free(e->vars[i]);
    e->vars[i] = var;
    return DYN_OK;
  }
  if (grow(e)) {
    free(var);
    return DYN_ENOMEM;
  }
  e->vars[e->n++] = var;
  e->vars[e->n] = NULL;
  return DYN_OK;
}

const char *dyn__env_get(const dyn__env_t *e, const char *name) {
  ssize_t i = find(e, name);
  return i < 0 ? NULL : e->vars[i] + strlen(name) + 1;
}

char **dyn__env_take(dyn__env_t *e) {
  char **v = e->vars;
  memset(e, 0, sizeof *e);
  return v;
}

void dyn__env_free(dyn__env_t *e) {
  dyn__strv_free(e->vars);
  memset(e, 0, sizeof *e);
}

void dyn__strv_free(char **v) {
  if (!v) return;
  for (char **p = v; *p; p++) free(*p);
  free(v);
}

char **dyn__strv_dup(char *const *v) {
  size_t n = 0;
  while (v[n]) n++;
  char **copy = calloc(n + 1, sizeof *copy);
  if (!copy) return NULL;
  for (size_t i = 0; i < n; i++) {
    if (!(copy[i] = strdup(v[i]))) {
      dyn__strv_free(copy);
      return NULL;
    }
  }
  return copy;
}
