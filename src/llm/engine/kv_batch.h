/* kv_batch.h - one step's KV events, collected until the engine hands them
 * to its sink (internal).
 *
 * An engine tells routers what its prefix cache holds through KV events
 * (dynamo/llm/kv.h), one batch per step: blocks stored, blocks removed,
 * the cache cleared. Both engines collect them the same way, so it is
 * written once here, for the sim's paged cache (kv_cache.c) and the
 * llama.cpp engine (llama_engine.c). A batch keeps its events in order,
 * with their block and hash lists in two arenas; runs share an event
 * (consecutive removals one REMOVED, a chain of stored blocks one STORED),
 * as vLLM batches them. The arenas may move while a step collects events,
 * so an event records where its entries start and dyn__kv_batch_flush
 * turns that into pointers.
 *
 * Out of memory. A queue call that cannot grow an array returns
 * DYN_ENOMEM and marks the batch failed (so does dyn__kv_batch_fail, for
 * an engine that cannot keep the batch consistent itself); the flush then
 * drops the whole batch instead of sending part of it, as a partial batch
 * gives routers an inconsistent view (a STORED chain with a link missing,
 * a block's removal without its store). The router is told nothing: no
 * CLEARED is sent, as the llama.cpp engine never sent one, so its view of
 * this worker is stale until the cache is reset: it does not know the
 * blocks stored in the lost batch (it routes as if they were not cached)
 * and still believes the removed ones cached. The lost events' ids are
 * skipped (a gap; no router checks for one today). Single-threaded, no
 * I/O.
 */
#ifndef DYN__KV_BATCH_H
#define DYN__KV_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/kv.h"

/* Receives one step's events, in order; the array and the arrays its events
 * point to are valid only during the call. */
typedef void (*dyn__kv_sink_fn)(const dyn_kv_event_t *events, size_t n, void *ud);

typedef struct dyn__kv_batch {
  /* The queued events; their blocks and removed pointers are NULL until
   * the flush sets them from off[i], the event's first entry in its arena. */
  dyn_kv_event_t *ev;
  size_t *off;
  size_t n_ev, cap_ev, cap_off;
  dyn_kv_block_t *stored; /* arena of STORED events' blocks */
  size_t n_stored, cap_stored;
  dyn_kv_hash_t *removed; /* arena of REMOVED events' hashes */
  size_t n_removed, cap_removed;
  uint64_t next_event_id; /* per engine, from 1, never reused */
  int failed;             /* out of memory since the last flush: dropped */
} dyn__kv_batch_t;

/* An empty batch; event ids start at 1. */
void dyn__kv_batch_init(dyn__kv_batch_t *b);
void dyn__kv_batch_free(dyn__kv_batch_t *b);

/* Queues the removal of block hash: extends the last event if it is a
 * REMOVED, else opens one. DYN_ENOMEM (the batch failed). */
int dyn__kv_batch_removed(dyn__kv_batch_t *b, dyn_kv_hash_t hash);

/* Queues block as stored. *run says whether the caller has a chain open:
 * if so, and the last event is a STORED, the block extends it (has_parent
 * and parent are ignored); else a STORED opens, after parent when
 * has_parent, and *run is set. A caller clears *run to end its chain
 * (a block it skipped). DYN_ENOMEM (the batch failed). */
int dyn__kv_batch_stored(dyn__kv_batch_t *b, int *run, int has_parent, dyn_kv_hash_t parent,
                         dyn_kv_block_t block);

/* Queues CLEARED. DYN_ENOMEM (the batch failed). */
int dyn__kv_batch_cleared(dyn__kv_batch_t *b);

/* Marks the batch failed: the caller could not keep it consistent (a block
 * it could not register in the middle of a chain). */
static inline void dyn__kv_batch_fail(dyn__kv_batch_t *b) { b->failed = 1; }

/* Forgets the queued events (and the failure): the engine is going away,
 * or a CLEARED about to be queued says all they said. */
void dyn__kv_batch_drop(dyn__kv_batch_t *b);

/* Hands the queued events to sink (unless it is NULL or the batch failed),
 * then empties the batch; returns how many events it held. */
size_t dyn__kv_batch_flush(dyn__kv_batch_t *b, dyn__kv_sink_fn sink, void *ud);

#endif
