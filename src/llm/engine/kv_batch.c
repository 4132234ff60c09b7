/* kv_batch.c - one step's KV events (see kv_batch.h). */
#include "llm/engine/kv_batch.h"

#include <stdlib.h>
#include <string.h>

#include "common/array.h"
#include "dynamo/status.h"

void dyn__kv_batch_init(dyn__kv_batch_t *b) {
  memset(b, 0, sizeof *b);
  b->next_event_id = 1;
}

void dyn__kv_batch_free(dyn__kv_batch_t *b) {
  free(b->ev);
  free(b->off);
  free(b->stored);
  free(b->removed);
  memset(b, 0, sizeof *b);
}

static int failed(dyn__kv_batch_t *b) {
  b->failed = 1;
  return DYN_ENOMEM;
}

/* Opens an event whose entries start at off in its arena; NULL (the batch
 * failed) when out of memory. */
static dyn_kv_event_t *open_event(dyn__kv_batch_t *b, dyn_kv_event_kind_t kind, size_t off) {
  if (dyn__grow((void **)&b->ev, &b->cap_ev, b->n_ev + 1, sizeof *b->ev) ||
      dyn__grow((void **)&b->off, &b->cap_off, b->n_ev + 1, sizeof *b->off)) {
    b->failed = 1;
    return NULL;
  }
  b->off[b->n_ev] = off;
  dyn_kv_event_t *ev = &b->ev[b->n_ev++];
  memset(ev, 0, sizeof *ev);
  ev->kind = kind;
  ev->event_id = b->next_event_id++;
  return ev;
}

static dyn_kv_event_t *last_of(dyn__kv_batch_t *b, dyn_kv_event_kind_t kind) {
  return b->n_ev && b->ev[b->n_ev - 1].kind == kind ? &b->ev[b->n_ev - 1] : NULL;
}

/* Only REMOVED events append to the removed arena, so the last one's
 * hashes end it and extending it keeps them contiguous. */
int dyn__kv_batch_removed(dyn__kv_batch_t *b, dyn_kv_hash_t hash) {
  if (dyn__grow((void **)&b->removed, &b->cap_removed, b->n_removed + 1, sizeof *b->removed))
    return failed(b);
  dyn_kv_event_t *ev = last_of(b, DYN_KV_REMOVED);
  if (!ev && !(ev = open_event(b, DYN_KV_REMOVED, b->n_removed))) return DYN_ENOMEM;
  b->removed[b->n_removed++] = hash;
  ev->n_removed++;
  return DYN_OK;
}

/* As for REMOVED: the last STORED event's blocks end the stored arena. */
int dyn__kv_batch_stored(dyn__kv_batch_t *b, int *run, int has_parent, dyn_kv_hash_t parent,
                         dyn_kv_block_t block) {
  if (dyn__grow((void **)&b->stored, &b->cap_stored, b->n_stored + 1, sizeof *b->stored))
    return failed(b);
  dyn_kv_event_t *ev = *run ? last_of(b, DYN_KV_STORED) : NULL;
  if (!ev) {
    if (!(ev = open_event(b, DYN_KV_STORED, b->n_stored))) return DYN_ENOMEM;
    ev->has_parent = has_parent;
    ev->parent_seq_hash = has_parent ? parent : 0;
    *run = 1;
  }
  b->stored[b->n_stored++] = block;
  ev->n_blocks++;
  return DYN_OK;
}

int dyn__kv_batch_cleared(dyn__kv_batch_t *b) {
  return open_event(b, DYN_KV_CLEARED, 0) ? DYN_OK : DYN_ENOMEM;
}

void dyn__kv_batch_drop(dyn__kv_batch_t *b) {
  b->n_ev = b->n_stored = b->n_removed = 0;
  b->failed = 0;
}

size_t dyn__kv_batch_flush(dyn__kv_batch_t *b, dyn__kv_sink_fn sink, void *ud) {
  size_t n = b->n_ev;
  if (n && sink && !b->failed) {
    for (size_t i = 0; i < n; i++) {
      dyn_kv_event_t *ev = &b->ev[i];
      if (ev->kind == DYN_KV_STORED) ev->blocks = b->stored + b->off[i];
      else if (ev->kind == DYN_KV_REMOVED) ev->removed = b->removed + b->off[i];
    }
    sink(b->ev, n, ud);
  }
  dyn__kv_batch_drop(b);
  return n;
}
