/* kv_cache.h - the simulated engine's paged KV cache (internal).
 *
 * A pool of num_blocks blocks of block_size tokens, as vLLM keeps its KV
 * cache, with automatic prefix caching: a block whose tokens are all
 * computed is named by its seq hash (dyn_kv_hash_blocks) and registered,
 * so a later sequence with the same prefix takes a reference on it instead
 * of computing it again. A block nobody references stays registered, in an
 * LRU list, until a new allocation needs it; evicting it is what tells
 * routers a block is gone. Every change a router must know about becomes
 * a dyn_kv_event_t, collected (kv_batch.h) until dyn__kv_cache_flush hands
 * the batch to the sink, so the engine publishes one batch per step.
 *
 * Block states: free (never registered, or dropped by reset), in use
 * (ref > 0, registered or not yet full), cached (ref 0, registered, in the
 * LRU list; evictable). Single-threaded, no I/O.
 */
#ifndef DYN__KV_CACHE_H
#define DYN__KV_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/kv.h"
#include "common/map.h"
#include "llm/engine/kv_batch.h"

/* Not an error: the pool lacks blocks right now and the caller should wait
 * (a positive value, so it never collides with a dynamo/status.h code). */
#define DYN__KV_NOSPACE 1

typedef struct dyn__kv_blk {
  dyn_kv_hash_t seq_hash, local_hash; /* meaningful while registered */
  uint32_t ref;
  uint8_t registered;     /* in the prefix map under seq_hash */
  int32_t prev, next;     /* LRU links (cached) or free-list link (free) */
} dyn__kv_blk_t;

typedef struct dyn__kv_cache {
  dyn__kv_blk_t *blk;
  uint32_t num_blocks, block_size;
  uint64_t seed;
  dyn__map_t map; /* seq hash -> dyn__kv_blk_t * (registered blocks) */
  int32_t free_head; /* singly linked through next */
  int32_t lru_head, lru_tail; /* head: least recently used */
  uint32_t n_free, n_lru, n_used, n_registered;
  uint64_t evictions;
  dyn__kv_batch_t events; /* this step's, until dyn__kv_cache_flush */
  dyn__kv_sink_fn sink;
  void *sink_ud;
} dyn__kv_cache_t;

/* One sequence's blocks: blocks[i] holds tokens [i*bs, (i+1)*bs). The first
 * n_stored blocks are full and hashed; parent is the seq hash of the last
 * of them. */
typedef struct dyn__kv_seq {
  uint32_t *blocks;
  size_t n_blocks, cap;
  size_t n_stored;
  dyn_kv_hash_t parent;
} dyn__kv_seq_t;

/* DYN_EINVAL for a zero size or more than INT32_MAX blocks; DYN_ENOMEM. */
int dyn__kv_cache_init(dyn__kv_cache_t *c, uint32_t num_blocks, uint32_t block_size,
                       uint64_t seed);
void dyn__kv_cache_free(dyn__kv_cache_t *c);
void dyn__kv_cache_set_sink(dyn__kv_cache_t *c, dyn__kv_sink_fn fn, void *ud);

/* Blocks needed to hold n tokens. */
static inline size_t dyn__kv_blocks_for(const dyn__kv_cache_t *c, size_t n) {
  return (n + c->block_size - 1) / c->block_size;
}
/* Blocks an allocation could take now: free plus evictable. */
static inline size_t dyn__kv_cache_available(const dyn__kv_cache_t *c) {
  return (size_t)c->n_free + c->n_lru;
}

/* Leading full blocks of tokens[0..n) that are registered (a prefix hit). */
size_t dyn__kv_cache_match(const dyn__kv_cache_t *c, const uint32_t *tokens, size_t n);

/* Gives an empty seq blocks for tokens[0..n): references the registered
 * prefix (its length in *cached_blocks), then allocates the rest, evicting
 * least recently used cached blocks if the free list runs out. Does nothing
 * and returns DYN__KV_NOSPACE when the pool cannot hold it now;
 * DYN_ENOMEM. */
int dyn__kv_cache_admit(dyn__kv_cache_t *c, dyn__kv_seq_t *s, const uint32_t *tokens,
                        size_t n, size_t *cached_blocks);

/* Grows seq to hold n tokens; DYN__KV_NOSPACE (nothing taken) or DYN_ENOMEM. */
int dyn__kv_cache_grow(dyn__kv_cache_t *c, dyn__kv_seq_t *s, size_t n);

/* Tokens [0..n_computed) of seq now have their KV: registers each newly
 * full block and queues STORED for it. A block whose seq hash another block
 * already holds (two sequences computed the same prefix at once) is
 * dropped for that one, as vLLM does, so a hash is never cached twice. */
int dyn__kv_cache_commit(dyn__kv_cache_t *c, dyn__kv_seq_t *s, const uint32_t *tokens,
                         size_t n_computed);

/* Drops seq's references and empties it. Registered blocks become cached,
 * the last block first, so a sequence's tail is evicted before its shared
 * head; unregistered ones go back to the free list. */
void dyn__kv_cache_release(dyn__kv_cache_t *c, dyn__kv_seq_t *s);

/* Forgets every registered block (cached ones become free; blocks in use
 * stay with their sequences but are no longer shared) and queues CLEARED.
 * DYN_ENOMEM if the event could not be queued (the cache is reset anyway). */
int dyn__kv_cache_reset(dyn__kv_cache_t *c);

/* Hands the queued events to the sink (if any, and unless queueing one ran
 * out of memory: then the batch is dropped, see kv_batch.h) and forgets
 * them; returns how many there were. */
size_t dyn__kv_cache_flush(dyn__kv_cache_t *c);

/* The seq's own memory. */
void dyn__kv_seq_free(dyn__kv_seq_t *s);

#endif
