/* idmap.h - open-addressing map from a non-zero u32 id to a pointer.
 *
 * Streams on a connection are found by id on every frame, so the lookup must
 * be O(1) with no allocation: linear probing, backward-shift deletion (no
 * tombstones), power-of-two capacity kept under 50% full.
 */
#ifndef DYN__IDMAP_H
#define DYN__IDMAP_H
#include <stddef.h>
#include <stdint.h>

typedef struct dyn__idmap_slot {
  uint32_t key; /* 0: empty */
  void *val;
} dyn__idmap_slot_t;

typedef struct dyn__idmap {
  dyn__idmap_slot_t *slots;
  size_t cap; /* 0 or a power of two */
  size_t len;
} dyn__idmap_t;

void dyn__idmap_init(dyn__idmap_t *m);
void dyn__idmap_free(dyn__idmap_t *m);
void *dyn__idmap_get(const dyn__idmap_t *m, uint32_t key);
/* DYN_OK, DYN_EEXIST if key is present, DYN_EINVAL for key 0, DYN_ENOMEM. */
int dyn__idmap_put(dyn__idmap_t *m, uint32_t key, void *val);
/* Returns the removed value or NULL. */
void *dyn__idmap_del(dyn__idmap_t *m, uint32_t key);
/* Moves every value into out (caller frees) and empties the map; used when
 * a connection dies and all its streams must be ended. */
void **dyn__idmap_drain(dyn__idmap_t *m, size_t *n);
#endif
