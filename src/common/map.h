/* map.h - the one hash table: uint64 key -> non-NULL pointer (internal).
 *
 * Used for a connection's open streams (found by id on every frame) and by
 * the KV indexer, whose hot paths are exactly these lookups on tables far
 * bigger than the caches. Hence: open addressing with linear probing in one
 * flat array of 16-byte slots (one cache line per probe, usually), no
 * allocation per entry, load factor at most 1/2, and backward-shift
 * deletion (no tombstones, so a table that churns through millions of
 * stores and removals never degrades). Keys are any uint64 (0 included); a
 * NULL value marks an empty slot, so values must be non-NULL. Keys are
 * mixed (splitmix64's finalizer) before use, so sequential ids and hostile
 * or patterned keys still spread.
 *
 * get and prefetch are inline: the indexer calls them in its inner loops.
 */
#ifndef DYN__MAP_H
#define DYN__MAP_H
#include <stddef.h>
#include <stdint.h>

typedef struct dyn__map_slot {
  uint64_t key;
  void *val; /* NULL: empty */
} dyn__map_slot_t;

typedef struct dyn__map {
  dyn__map_slot_t *slots;
  size_t mask; /* capacity - 1; capacity a power of two, or 0 slots */
  size_t n;    /* entries */
} dyn__map_t;

static inline uint64_t dyn__map_mix(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

void dyn__map_init(dyn__map_t *m);
void dyn__map_free(dyn__map_t *m);
/* Drops every entry, keeping the memory. */
void dyn__map_clear(dyn__map_t *m);

static inline void *dyn__map_get(const dyn__map_t *m, uint64_t key) {
  if (!m->n) return NULL;
  for (size_t i = dyn__map_mix(key) & m->mask;; i = (i + 1) & m->mask) {
    const dyn__map_slot_t *s = &m->slots[i];
    if (!s->val) return NULL;
    if (s->key == key) return s->val;
  }
}

/* Asks the CPU to start loading key's slot: a caller that knows the next
 * keys (a KV event's blocks) overlaps their cache misses, which otherwise
 * dominate. */
static inline void dyn__map_prefetch(const dyn__map_t *m, uint64_t key) {
  if (m->slots) __builtin_prefetch(&m->slots[dyn__map_mix(key) & m->mask]);
}

/* Inserts or replaces. DYN_OK, DYN_EINVAL for a NULL val, DYN_ENOMEM (the
 * map unchanged). */
int dyn__map_put(dyn__map_t *m, uint64_t key, void *val);
/* Inserts only: as put, but DYN_EEXIST (the map unchanged) if key is
 * present. */
int dyn__map_add(dyn__map_t *m, uint64_t key, void *val);
/* As put, and *prev gets the value replaced (NULL if the key was new): one
 * probe does both the lookup and the insertion. */
int dyn__map_swap(dyn__map_t *m, uint64_t key, void *val, void **prev);
/* Removes key; returns its value, or NULL if absent. */
void *dyn__map_del(dyn__map_t *m, uint64_t key);
/* Moves every value into a malloc'd array (caller frees; *n its length)
 * and empties the map: a dead connection ends all its streams this way.
 * NULL with *n = 0 if the map was empty or out of memory (the map then
 * unchanged). */
void **dyn__map_drain(dyn__map_t *m, size_t *n);
/* Capacity, for iterating slots[0..cap) and skipping NULL values. */
static inline size_t dyn__map_cap(const dyn__map_t *m) { return m->slots ? m->mask + 1 : 0; }
#endif
