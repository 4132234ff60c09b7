/* kv_cache.c - the simulated engine's paged KV cache with prefix caching
 * and LRU eviction (see kv_cache.h).
 *
 * The pool is one array of blocks linked by index: a free list (blocks
 * holding nothing anyone can reuse) and an LRU list of cached blocks
 * (registered, unreferenced). A new block comes from the free list first,
 * so a cached prefix survives as long as there is room; only then is the
 * least recently used cached block evicted, which queues REMOVED. Blocks
 * with a reference are in neither list, so they can never be evicted.
 * This mirrors vLLM's block pool, which is what routers are built to model.
 */
#include "llm/engine/kv_cache.h"

#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "dynamo/status.h"

#define NIL (-1)

static dyn__kv_blk_t *blk_of(dyn__kv_cache_t *c, int32_t i) { return &c->blk[i]; }
static int32_t idx_of(dyn__kv_cache_t *c, const dyn__kv_blk_t *b) {
  return (int32_t)(b - c->blk);
}

/* ---- lists ---------------------------------------------------------------- */

static void free_push(dyn__kv_cache_t *c, int32_t i) {
  c->blk[i].next = c->free_head;
  c->blk[i].prev = NIL;
  c->free_head = i;
  c->n_free++;
}

static int32_t free_pop(dyn__kv_cache_t *c) {
  int32_t i = c->free_head;
  if (i != NIL) {
    c->free_head = c->blk[i].next;
    c->n_free--;
  }
  return i;
}

static void lru_append(dyn__kv_cache_t *c, int32_t i) {
  dyn__kv_blk_t *b = blk_of(c, i);
  b->prev = c->lru_tail;
  b->next = NIL;
  if (c->lru_tail != NIL) c->blk[c->lru_tail].next = i;
  else c->lru_head = i;
  c->lru_tail = i;
  c->n_lru++;
}

static void lru_unlink(dyn__kv_cache_t *c, int32_t i) {
  dyn__kv_blk_t *b = blk_of(c, i);
  if (b->prev != NIL) c->blk[b->prev].next = b->next;
  else c->lru_head = b->next;
  if (b->next != NIL) c->blk[b->next].prev = b->prev;
  else c->lru_tail = b->prev;
  b->prev = b->next = NIL;
  c->n_lru--;
}

size_t dyn__kv_cache_flush(dyn__kv_cache_t *c) {
  return dyn__kv_batch_flush(&c->events, c->sink, c->sink_ud);
}

/* ---- blocks --------------------------------------------------------------- */

/* A block for new tokens, with one reference: from the free list, else the
 * least recently used cached block (evicted: REMOVED). NIL if none. */
static int32_t take_block(dyn__kv_cache_t *c, int *rc) {
  int32_t i = free_pop(c);
  if (i == NIL && (i = c->lru_head) != NIL) {
    dyn__kv_blk_t *v = blk_of(c, i);
    lru_unlink(c, i);
    dyn__map_del(&c->map, v->seq_hash);
    v->registered = 0;
    c->n_registered--;
    c->evictions++;
    if (dyn__kv_batch_removed(&c->events, v->seq_hash)) *rc = DYN_ENOMEM;
  }
  if (i != NIL) {
    c->blk[i].ref = 1;
    c->n_used++;
  }
  return i;
}

static void ref_block(dyn__kv_cache_t *c, int32_t i) {
  dyn__kv_blk_t *b = blk_of(c, i);
  if (b->ref++ == 0) {
    lru_unlink(c, i); /* a registered block with no reference is cached */
    c->n_used++;
  }
}

static void unref_block(dyn__kv_cache_t *c, int32_t i) {
  dyn__kv_blk_t *b = blk_of(c, i);
  if (--b->ref) return;
  c->n_used--;
  if (b->registered) lru_append(c, i);
  else free_push(c, i);
}

/* ---- the pool ------------------------------------------------------------- */

int dyn__kv_cache_init(dyn__kv_cache_t *c, uint32_t num_blocks, uint32_t block_size,
                       uint64_t seed) {
  memset(c, 0, sizeof *c);
  if (!num_blocks || !block_size || num_blocks > INT32_MAX) return DYN_EINVAL;
  c->blk = calloc(num_blocks, sizeof *c->blk);
  if (!c->blk) return DYN_ENOMEM;
  c->num_blocks = num_blocks;
  c->block_size = block_size;
  c->seed = seed;
  dyn__kv_batch_init(&c->events);
  dyn__map_init(&c->map);
  c->free_head = c->lru_head = c->lru_tail = NIL;
  /* Pushed in reverse, so block 0 is handed out first (easier to read). */
  for (int32_t i = (int32_t)num_blocks - 1; i >= 0; i--) free_push(c, i);
  return DYN_OK;
}

void dyn__kv_cache_free(dyn__kv_cache_t *c) {
  dyn__map_free(&c->map);
  free(c->blk);
  dyn__kv_batch_free(&c->events);
  memset(c, 0, sizeof *c);
}

void dyn__kv_cache_set_sink(dyn__kv_cache_t *c, dyn__kv_sink_fn fn, void *ud) {
  c->sink = fn;
  c->sink_ud = ud;
}

void dyn__kv_seq_free(dyn__kv_seq_t *s) {
  free(s->blocks);
  memset(s, 0, sizeof *s);
}

static int seq_reserve(dyn__kv_seq_t *s, size_t n) {
  return dyn__grow((void **)&s->blocks, &s->cap, n, sizeof *s->blocks);
}

/* The seq hash of block i given its parent's (ignored for i == 0). */
static dyn_kv_hash_t block_hash(const dyn__kv_cache_t *c, const uint32_t *tokens, size_t i,
                                dyn_kv_hash_t parent, dyn_kv_hash_t *local) {
  *local = dyn_kv_hash_local(tokens + i * c->block_size, c->block_size, c->seed);
  return i ? dyn_kv_hash_chain(parent, *local, c->seed) : *local;
}

size_t dyn__kv_cache_match(const dyn__kv_cache_t *c, const uint32_t *tokens, size_t n) {
  size_t full = n / c->block_size, m = 0;
  dyn_kv_hash_t parent = 0, local;
  for (; m < full; m++) {
    parent = block_hash(c, tokens, m, parent, &local);
    if (!dyn__map_get(&c->map, parent)) break;
  }
  return m;
}

int dyn__kv_cache_admit(dyn__kv_cache_t *c, dyn__kv_seq_t *s, const uint32_t *tokens,
                        size_t n, size_t *cached_blocks) {
  size_t need = dyn__kv_blocks_for(c, n), full = n / c->block_size, m = 0, idle = 0;
  if (seq_reserve(s, need)) return DYN_ENOMEM;
  dyn_kv_hash_t parent = 0, local;
  /* Find the cached prefix first, touching nothing, so that a request that
   * does not fit leaves the pool exactly as it was. */
  for (; m < full; m++) {
    dyn_kv_hash_t h = block_hash(c, tokens, m, parent, &local);
    dyn__kv_blk_t *b = dyn__map_get(&c->map, h);
    if (!b) break;
    s->blocks[m] = (uint32_t)idx_of(c, b);
    if (!b->ref) idle++;
    parent = h;
  }
  /* The matched cached blocks are counted as available but are not. */
  if (need - m > dyn__kv_cache_available(c) - idle) return DYN__KV_NOSPACE;
  /* Reference the prefix before allocating, so eviction cannot take it. */
  for (size_t i = 0; i < m; i++) ref_block(c, (int32_t)s->blocks[i]);
  s->n_blocks = s->n_stored = m;
  s->parent = parent;
  if (cached_blocks) *cached_blocks = m;
  int rc = dyn__kv_cache_grow(c, s, n);
  if (rc) dyn__kv_cache_release(c, s);
  return rc;
}

int dyn__kv_cache_grow(dyn__kv_cache_t *c, dyn__kv_seq_t *s, size_t n) {
  size_t need = dyn__kv_blocks_for(c, n);
  if (need <= s->n_blocks) return DYN_OK;
  if (need - s->n_blocks > dyn__kv_cache_available(c)) return DYN__KV_NOSPACE;
  if (seq_reserve(s, need)) return DYN_ENOMEM;
  int rc = DYN_OK;
  while (s->n_blocks < need) s->blocks[s->n_blocks++] = (uint32_t)take_block(c, &rc);
  return rc;
}

/* Registers the seq's block i under h and queues it as stored, extending
 * the caller's STORED chain (*run) or opening one after the seq's parent. */
static int store_block(dyn__kv_cache_t *c, dyn__kv_seq_t *s, size_t i, dyn_kv_hash_t h,
                       dyn_kv_hash_t local, int *run) {
  dyn__kv_blk_t *b = blk_of(c, (int32_t)s->blocks[i]);
  if (dyn__map_put(&c->map, h, b)) return DYN_ENOMEM;
  b->seq_hash = h;
  b->local_hash = local;
  b->registered = 1;
  c->n_registered++;
  return dyn__kv_batch_stored(&c->events, run, i > 0, s->parent, (dyn_kv_block_t){h, local});
}

int dyn__kv_cache_commit(dyn__kv_cache_t *c, dyn__kv_seq_t *s, const uint32_t *tokens,
                         size_t n_computed) {
  size_t full = n_computed / c->block_size;
  if (full > s->n_blocks) return DYN_EINVAL; /* tokens the seq has no block for */
  /* A STORED event covers a chain; a block dropped for a duplicate ends it,
   * and the next stored block opens a new one with its parent named. */
  int run = 0;
  for (size_t i = s->n_stored; i < full; i++) {
    dyn_kv_hash_t local, h = block_hash(c, tokens, i, s->parent, &local);
    dyn__kv_blk_t *dup = dyn__map_get(&c->map, h);
    if (dup) {
      int32_t mine = (int32_t)s->blocks[i];
      ref_block(c, idx_of(c, dup));
      s->blocks[i] = (uint32_t)idx_of(c, dup);
      unref_block(c, mine); /* unregistered: back to the free list */
      run = 0;
    } else {
      int rc = store_block(c, s, i, h, local, &run);
      if (rc) return rc;
    }
    s->parent = h;
    s->n_stored = i + 1;
  }
  return DYN_OK;
}

void dyn__kv_cache_release(dyn__kv_cache_t *c, dyn__kv_seq_t *s) {
  /* Last block first: it reaches the LRU list first, so it is evicted
   * before the blocks of the prefix, which more requests share. */
  for (size_t i = s->n_blocks; i-- > 0;) unref_block(c, (int32_t)s->blocks[i]);
  s->n_blocks = s->n_stored = 0;
  s->parent = 0;
}

int dyn__kv_cache_reset(dyn__kv_cache_t *c) {
  for (uint32_t i = 0; i < c->num_blocks; i++) c->blk[i].registered = 0;
  while (c->lru_head != NIL) {
    int32_t i = c->lru_head;
    lru_unlink(c, i);
    free_push(c, i);
  }
  dyn__map_clear(&c->map);
  c->n_registered = 0;
  return dyn__kv_batch_cleared(&c->events);
}
