/* idmap.c - u32 id -> pointer map for per-connection stream tables. */
#include "common/idmap.h"

#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

static size_t slot_of(uint32_t key, size_t cap) {
  /* Fibonacci hashing spreads sequential ids across the table. */
  return (size_t)((key * 2654435769u) & (cap - 1));
}

void dyn__idmap_init(dyn__idmap_t *m) { memset(m, 0, sizeof *m); }

void dyn__idmap_free(dyn__idmap_t *m) {
  free(m->slots);
  dyn__idmap_init(m);
}

void *dyn__idmap_get(const dyn__idmap_t *m, uint32_t key) {
  if (!m->cap || !key) return NULL;
  for (size_t i = slot_of(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
    if (m->slots[i].key == key) return m->slots[i].val;
    if (m->slots[i].key == 0) return NULL;
  }
}

static int grow(dyn__idmap_t *m) {
  size_t cap = m->cap ? m->cap * 2 : 16;
  dyn__idmap_slot_t *s = calloc(cap, sizeof *s);
  if (!s) return DYN_ENOMEM;
  for (size_t i = 0; i < m->cap; i++) {
    if (!m->slots[i].key) continue;
    size_t j = slot_of(m->slots[i].key, cap);
    while (s[j].key) j = (j + 1) & (cap - 1);
    s[j] = m->slots[i];
  }
  free(m->slots);
  m->slots = s;
  m->cap = cap;
  return DYN_OK;
}

int dyn__idmap_put(dyn__idmap_t *m, uint32_t key, void *val) {
  if (!key) return DYN_EINVAL;
  if ((m->len + 1) * 2 > m->cap) {
    int rc = grow(m);
    if (rc) return rc;
  }
  size_t i = slot_of(key, m->cap);
  while (m->slots[i].key) {
    if (m->slots[i].key == key) return DYN_EEXIST;
    i = (i + 1) & (m->cap - 1);
  }
  m->slots[i].key = key;
  m->slots[i].val = val;
  m->len++;
  return DYN_OK;
}

void *dyn__idmap_del(dyn__idmap_t *m, uint32_t key) {
  if (!m->cap || !key) return NULL;
  size_t mask = m->cap - 1, i = slot_of(key, m->cap);
  while (m->slots[i].key != key) {
    if (!m->slots[i].key) return NULL;
    i = (i + 1) & mask;
  }
  void *val = m->slots[i].val;
  /* Backward-shift: pull later members of the probe run into the hole. */
  size_t hole = i;
  for (size_t j = (i + 1) & mask; m->slots[j].key; j = (j + 1) & mask) {
    size_t home = slot_of(m->slots[j].key, m->cap);
    if (((j - home) & mask) >= ((j - hole) & mask)) {
      m->slots[hole] = m->slots[j];
      hole = j;
    }
  }
  m->slots[hole].key = 0;
  m->slots[hole].val = NULL;
  m->len--;
  return val;
}

void **dyn__idmap_drain(dyn__idmap_t *m, size_t *n) {
  *n = 0;
  if (!m->len) return NULL;
  void **out = malloc(m->len * sizeof *out);
  if (!out) return NULL;
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key) out[(*n)++] = m->slots[i].val;
  memset(m->slots, 0, m->cap * sizeof *m->slots);
  m->len = 0;
  return out;
}
