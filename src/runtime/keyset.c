/* keyset.c - the remembered keys of a discovery backend (keyset.h). */
#include "runtime/keyset.h"

#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

int dyn__keyset_put(dyn__keyset_t *s, const char *key, const char *value) {
  dyn__key_t *k = s->head;
  while (k && strcmp(k->key, key)) k = k->next;
  char *v = strdup(value);
  if (!v) return DYN_ENOMEM;
  if (!k) {
    k = calloc(1, sizeof *k);
    if (!k || !(k->key = strdup(key))) {
      free(k);
      free(v);
      return DYN_ENOMEM;
    }
    k->next = s->head;
    s->head = k;
  } else {
    free(k->value);
  }
  k->value = v;
  return DYN_OK;
}

static void free_key(dyn__key_t *k) {
  free(k->key);
  free(k->value);
  free(k);
}

void dyn__keyset_del(dyn__keyset_t *s, const char *key) {
  for (dyn__key_t **pp = &s->head; *pp; pp = &(*pp)->next)
    if (!strcmp((*pp)->key, key)) {
      dyn__key_t *k = *pp;
      *pp = k->next;
      free_key(k);
      return;
    }
}

void dyn__keyset_clear(dyn__keyset_t *s) {
  while (s->head) {
    dyn__key_t *k = s->head;
    s->head = k->next;
    free_key(k);
  }
}
