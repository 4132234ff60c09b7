/* kv_predict.h - blocks a router expects a worker to store (internal).
 *
 * When the router sends a prompt to a worker, the worker will hold the
 * prompt's blocks once its prefill ends, but its KV events say so only
 * then. The router indexes them at once (so requests sharing the prefix
 * follow) and records the guess here. A STORED from that worker confirms
 * it; a guess still unconfirmed when it expires (the request was cancelled
 * or refused before its prefill) is handed back to be removed from the
 * index, so a stale guess never attracts requests for long.
 */
#ifndef DYN__KV_PREDICT_H
#define DYN__KV_PREDICT_H

#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/kv.h"

typedef struct dyn__kv_predict dyn__kv_predict_t;

int dyn__kv_predict_create(dyn__kv_predict_t **out);
void dyn__kv_predict_destroy(dyn__kv_predict_t *p);

/* Worker should store these blocks (seq hashes) by expires (any clock, the
 * same as dyn__kv_predict_expire's). A block already guessed for that
 * worker keeps its first expiry. 0 or DYN_ENOMEM (what was added stays). */
int dyn__kv_predict_add(dyn__kv_predict_t *p, uint64_t worker, const dyn_kv_hash_t *seq,
                        size_t n, uint64_t expires);

/* A STORED event of worker: its blocks are confirmed, no longer guesses. */
void dyn__kv_predict_confirm(dyn__kv_predict_t *p, uint64_t worker,
                             const dyn_kv_block_t *blocks, size_t n);

/* Forgets every guess that expired by now; fn(ud, worker, seq) for each
 * unconfirmed one, which the caller removes from its index. Returns how
 * many fn got. */
size_t dyn__kv_predict_expire(dyn__kv_predict_t *p, uint64_t now,
                              void (*fn)(void *ud, uint64_t worker, dyn_kv_hash_t seq),
                              void *ud);

/* Guesses not yet expired (confirmed or not). */
size_t dyn__kv_predict_pending(const dyn__kv_predict_t *p);

#endif
