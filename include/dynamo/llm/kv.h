/* dynamo/llm/kv.h - the building blocks of KV-aware routing.
 *
 * An engine worker caches the KV state of a prompt in fixed-size blocks of
 * tokens. A router that knows which worker holds which blocks can send a
 * request to the worker that already holds the longest prefix of its
 * prompt, so that worker skips that part of the prefill. Four pieces, all
 * pure C, no I/O, single-threaded:
 *
 *  - hashing: names each full block of a token sequence, chained so that a
 *    block's name includes its whole prefix (dyn_kv_hash_blocks);
 *  - events: what a worker tells routers about its cache (blocks stored,
 *    blocks removed, all cleared), and the binary wire format that carries
 *    a batch of them over the pub/sub bus (a worker encodes with dyn__kv_encode,
 *    src/llm/kv/encode.h; dyn_kv_decode);
 *  - the indexer: a radix tree of blocks fed by every worker's events that
 *    answers "how many leading blocks of this prompt does each worker hold"
 *    (dyn_kv_indexer_*);
 *  - selection: picks a worker from the overlaps and the workers' loads
 *    (dyn_kv_select).
 *
 * Every call that can fail returns a dynamo/status.h code.
 */
#ifndef DYNAMO_LLM_KV_H
#define DYNAMO_LLM_KV_H

#include "dynamo/export.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- hashing ------------------------------------------------------------ */

typedef uint64_t dyn_kv_hash_t;
#define DYN_KV_DEFAULT_SEED 1337u

/* Hashes the full blocks of a token sequence; a partial tail block is ignored.
 * local[i] = XXH3_64bits_withSeed(tokens of block i as little-endian uint32, seed)
 * seq[i]   = i == 0 ? local[0] : XXH3_64bits_withSeed({seq[i-1], local[i]} as 16 LE bytes, seed)
 * so a block's seq hash names the block together with its whole prefix.
 * Writes min(full blocks, cap) entries to each non-NULL array and returns the
 * number of full blocks (n_tokens / block_size). block_size 0 returns 0. */
DYN_EXTERN size_t dyn_kv_hash_blocks(const uint32_t *tokens, size_t n_tokens, size_t block_size,
                          uint64_t seed, dyn_kv_hash_t *local, dyn_kv_hash_t *seq, size_t cap);

/* The local hash of one block of block_size tokens (as above). */
DYN_EXTERN dyn_kv_hash_t dyn_kv_hash_local(const uint32_t *tokens, size_t block_size, uint64_t seed);

/* The seq hash of a block whose parent has seq hash parent_seq (as above;
 * a root block's seq hash is its local hash). */
DYN_EXTERN dyn_kv_hash_t dyn_kv_hash_chain(dyn_kv_hash_t parent_seq, dyn_kv_hash_t local, uint64_t seed);

/* ---- events ------------------------------------------------------------- */

typedef enum dyn_kv_event_kind {
  DYN_KV_STORED = 1,
  DYN_KV_REMOVED = 2,
  DYN_KV_CLEARED = 3
} dyn_kv_event_kind_t;

typedef struct dyn_kv_block {
  dyn_kv_hash_t seq_hash;
  dyn_kv_hash_t local_hash;
} dyn_kv_block_t;

typedef struct dyn_kv_event {
  dyn_kv_event_kind_t kind;
  uint64_t event_id; /* per-worker, increasing */
  /* STORED: blocks[0] is a child of parent_seq_hash (if has_parent) or a root;
   * blocks[i+1] is a child of blocks[i]. */
  int has_parent;
  dyn_kv_hash_t parent_seq_hash;
  const dyn_kv_block_t *blocks;
  size_t n_blocks;
  /* REMOVED: seq hashes of the blocks evicted. */
  const dyn_kv_hash_t *removed;
  size_t n_removed;
} dyn_kv_event_t;

/* ---- wire format -------------------------------------------------------- */

/* A batch of one worker's events, all integers little endian:
 *
 *   batch:  u8 'K'  u8 'V'  u8 version (1)  u8 flags (0)
 *           u64 worker_id  u32 n_events  then n_events events
 *   event:  u8 kind (1 STORED, 2 REMOVED, 3 CLEARED)
 *           u8 flags (bit 0: has_parent, STORED only; other bits 0)
 *           u64 event_id  u32 count
 *           STORED:  [u64 parent_seq_hash if has_parent]
 *                    count x { u64 seq_hash, u64 local_hash }
 *           REMOVED: count x u64 seq_hash
 *           CLEARED: count is 0
 *
 * Nothing may follow the last event. The format is canonical: a payload
 * that decodes re-encodes to the same bytes. A header is 16 bytes, an event
 * 14 bytes plus 8 per parent or removed hash and 16 per stored block. */
#define DYN_KV_WIRE_VERSION 1u
#define DYN_KV_WIRE_HEADER 16u
#define DYN_KV_WIRE_EVENT 14u

/* Bytes dyn__kv_encode would append for these events (no validation). */
DYN_EXTERN size_t dyn_kv_encoded_size(const dyn_kv_event_t *events, size_t n_events);

/* Called once per decoded event, in order. ev and its arrays are valid only
 * during the call. A non-zero return stops decoding and is returned by
 * dyn_kv_decode. */
typedef int (*dyn_kv_event_cb)(void *ud, uint64_t worker_id, const dyn_kv_event_t *ev);

/* Validates the whole batch first (magic, version, flags, kinds, counts
 * against the bytes present, nothing trailing), and only then calls cb for
 * each event, so a bad payload delivers no event at all. worker_id (may be
 * NULL) receives the batch's worker. On a malformed payload returns
 * DYN_EPROTO and, if why is not NULL, points *why at a static sentence
 * naming the problem. DYN_EINVAL for NULL data with len > 0; DYN_ENOMEM. */
DYN_EXTERN int dyn_kv_decode(const void *data, size_t len, uint64_t *worker_id, dyn_kv_event_cb cb,
                  void *ud, const char **why);

/* ---- indexer ------------------------------------------------------------ */

/* A radix tree of blocks: a node is a block, its children are keyed by
 * local hash, and each node records which workers hold it. Per worker, a
 * map from seq hash to node finds the block a STORED parent or a REMOVED
 * names in O(1). Single-threaded: the owner feeds it and queries it from
 * one thread; there are no locks. */
typedef struct dyn_kv_indexer dyn_kv_indexer_t;

typedef struct dyn_kv_match {
  uint64_t worker_id;
  uint32_t matched_blocks; /* leading blocks of the query the worker holds */
} dyn_kv_match_t;

typedef struct dyn_kv_indexer_stats {
  size_t nodes;             /* blocks in the tree (shared ones once) */
  size_t workers;           /* workers known (stored something, not removed) */
  size_t worker_blocks;     /* sum over workers of the blocks each holds */
  uint64_t events_applied;  /* events that changed or confirmed state */
  uint64_t events_dropped;  /* STORED with an unknown parent or a conflict */
  uint64_t removed_unknown; /* REMOVED hashes the worker did not hold */
} dyn_kv_indexer_stats_t;

DYN_EXTERN int dyn_kv_indexer_create(dyn_kv_indexer_t **out);
DYN_EXTERN void dyn_kv_indexer_destroy(dyn_kv_indexer_t *ix);

/* Applies one event of worker_id.
 *  STORED: adds the blocks under the parent (or as roots), the worker
 *    holding each; storing a block the worker holds already is a no-op.
 *    A parent the worker does not hold means the router missed events: like
 *    NVIDIA's indexer, the event is dropped whole (counted in
 *    events_dropped) and DYN_ENOTFOUND returned. A block whose (parent,
 *    local hash) node already exists under a different seq hash contradicts
 *    the tree: the blocks before it stay, the rest are dropped (counted)
 *    and DYN_EPROTO returned. A worker's first STORED makes it known.
 *  REMOVED: the worker no longer holds those blocks; a hash it did not hold
 *    is counted in removed_unknown and skipped. Nodes that no worker holds
 *    and that have no children are freed.
 *  CLEARED: the worker holds nothing (it stays known).
 * DYN_EINVAL for NULL arguments or an unknown kind; DYN_ENOMEM (the tree is
 * left consistent, with the blocks stored so far). */
DYN_EXTERN int dyn_kv_indexer_apply(dyn_kv_indexer_t *ix, uint64_t worker_id, const dyn_kv_event_t *ev);

/* As CLEARED, and forgets the worker (its instance left). DYN_ENOTFOUND if
 * the worker is not known. */
DYN_EXTERN int dyn_kv_indexer_remove_worker(dyn_kv_indexer_t *ix, uint64_t worker_id);

/* For each worker holding at least the first block of the query (local
 * hashes of its blocks, in order), how many leading blocks it holds: the
 * longest contiguous prefix, so a block the worker lost ends its match even
 * if it holds later ones. Writes min(count, cap) entries to out (order
 * unspecified; workers with no match are not listed) and returns the
 * count. The walk stops as soon as no worker remains. Allocates nothing. */
DYN_EXTERN size_t dyn_kv_indexer_find_matches(dyn_kv_indexer_t *ix, const dyn_kv_hash_t *local_hashes,
                                   size_t n, dyn_kv_match_t *out, size_t cap);

DYN_EXTERN void dyn_kv_indexer_get_stats(const dyn_kv_indexer_t *ix, dyn_kv_indexer_stats_t *st);

/* Blocks worker_id holds (0 if unknown). */
DYN_EXTERN size_t dyn_kv_indexer_worker_blocks(const dyn_kv_indexer_t *ix, uint64_t worker_id);

/* ---- worker selection --------------------------------------------------- */

typedef enum dyn_kv_route_mode {
  DYN_KV_ROUTE_KV = 0,          /* minimise the cost below */
  DYN_KV_ROUTE_ROUND_ROBIN = 1, /* loads[cursor++ % n] */
  DYN_KV_ROUTE_RANDOM = 2       /* uniform over loads */
} dyn_kv_route_mode_t;

/* What a worker last reported about its load. */
typedef struct dyn_kv_worker_load {
  uint64_t worker_id;
  uint64_t kv_blocks_used;
  uint64_t kv_blocks_total;
  uint32_t active_slots;
  uint32_t total_slots;
  uint32_t waiting; /* requests queued, not yet running */
} dyn_kv_worker_load_t;

/* KV mode, for a request of R full blocks, each worker w costs
 *
 *   cost(w) = overlap_weight * (R - overlap(w)) / R      (0 when R is 0)
 *           + usage_weight   * kv_blocks_used / kv_blocks_total  (0 if total 0)
 *           + waiting_weight * waiting / max waiting over the workers (0 if all 0)
 *
 * where overlap(w) is w's matched_blocks (0 if unlisted), clamped to R: the
 * first term is the share of the prefill still to do. With temperature 0 the
 * cheapest worker wins, exact ties broken at random; with temperature T > 0
 * worker w is drawn with probability softmax(-cost / T). */
typedef struct dyn_kv_select_options {
  dyn_kv_route_mode_t mode;
  double overlap_weight; /* default 1.0 */
  double usage_weight;   /* default 1.0 */
  double waiting_weight; /* default 1.0 */
  double temperature;    /* default 0: argmin */
} dyn_kv_select_options_t;

DYN_EXTERN void dyn_kv_select_options_init(dyn_kv_select_options_t *o);

/* The selector's memory: the round-robin cursor and the random generator
 * (splitmix64; no global rand()), so a seed replays the same choices. */
typedef struct dyn_kv_select_state {
  uint64_t rr;
  uint64_t rng;
} dyn_kv_select_state_t;

DYN_EXTERN void dyn_kv_select_state_init(dyn_kv_select_state_t *st, uint64_t seed);

/* Chooses one of loads[0..n_loads) for a request of request_blocks full
 * blocks, given the indexer's matches. *worker_id receives the choice and,
 * if overlap is not NULL, *overlap its matched blocks (clamped to
 * request_blocks; in every mode). DYN_ENOINSTANCE when n_loads is 0;
 * DYN_EINVAL for NULL arguments, an unknown mode, or a negative or
 * non-finite weight or temperature. Matching is by worker id, O(n_loads *
 * n_matches). */
DYN_EXTERN int dyn_kv_select(const dyn_kv_select_options_t *opts, dyn_kv_select_state_t *st,
                  const dyn_kv_worker_load_t *loads, size_t n_loads,
                  const dyn_kv_match_t *matches, size_t n_matches, size_t request_blocks,
                  uint64_t *worker_id, uint32_t *overlap);

#ifdef __cplusplus
}
#endif
#endif
