/* kv_map.h - a uint64 -> pointer hash table for the KV indexer (internal).
 *
 * Open addressing with linear probing and backward-shift deletion (no
 * tombstones, so a table that churns through millions of stores and
 * removals never degrades). Written here rather than borrowed because the
 * indexer's hot paths are exactly these lookups: one flat array of 16-byte
 * slots, one cache line per probe usually, no allocation per entry. Keys
 * are any uint64 (0 included); a NULL value marks an empty slot, so values
 * must be non-NULL. Keys are mixed (splitmix64's finalizer) before use, so
 * hostile or patterned keys still spread.
 */
#ifndef DYN__KV_MAP_H
#define DYN__KV_MAP_H
#include <stddef.h>
#include <stdint.h>

typedef struct dyn__kv_slot {
  uint64_t key;
  void *val;
} dyn__kv_slot_t;

typedef struct dyn__kv_map {
  dyn__kv_slot_t *slots;
  size_t mask; /* capacity - 1; capacity a power of two, or 0 slots */
  size_t n;
} dyn__kv_map_t;

static inline uint64_t dyn__kv_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

void dyn__kv_map_init(dyn__kv_map_t *m);
void dyn__kv_map_free(dyn__kv_map_t *m);
/* Drops every entry, keeping the memory. */
void dyn__kv_map_clear(dyn__kv_map_t *m);

static inline void *dyn__kv_map_get(const dyn__kv_map_t *m, uint64_t key) {
  if (!m->n) return NULL;
  for (size_t i = dyn__kv_mix(key) & m->mask;; i = (i + 1) & m->mask) {
    const dyn__kv_slot_t *s = &m->slots[i];
    if (!s->val) return NULL;
    if (s->key == key) return s->val;
  }
}

/* Asks the CPU to start loading key's slot: a caller that knows the next
 * keys (an event's blocks) overlaps their cache misses, which otherwise
 * dominate (a worker's map is far bigger than the caches). */
static inline void dyn__kv_map_prefetch(const dyn__kv_map_t *m, uint64_t key) {
  if (m->slots) __builtin_prefetch(&m->slots[dyn__kv_mix(key) & m->mask]);
}

/* Inserts or replaces; 0 or DYN_ENOMEM (the map unchanged). */
int dyn__kv_map_put(dyn__kv_map_t *m, uint64_t key, void *val);
/* As put, and *prev gets the value replaced (NULL if the key was new):
 * one probe does both the lookup and the insertion. */
int dyn__kv_map_swap(dyn__kv_map_t *m, uint64_t key, void *val, void **prev);
/* Removes key; returns its value, or NULL if absent. */
void *dyn__kv_map_del(dyn__kv_map_t *m, uint64_t key);
/* Capacity (for iterating slots[0..cap), skipping NULL values). */
static inline size_t dyn__kv_map_cap(const dyn__kv_map_t *m) {
  return m->slots ? m->mask + 1 : 0;
}
#endif
