/* kv_predict.c - the router's guesses of blocks workers are about to store
 * (see kv_predict.h). A FIFO in expiry order (every guess gets the same
 * time to live, so appending keeps it sorted) and a map from (worker, seq
 * hash) to the guess, for confirmation in O(1) per stored block.
 */
#include "llm/kv/predict.h"

#include <stdlib.h>

#include "dynamo/status.h"
#include "common/map.h"

typedef struct guess {
  struct guess *next;
  uint64_t worker;
  dyn_kv_hash_t seq;
  uint64_t expires;
  int confirmed;
} guess_t;

struct dyn__kv_predict {
  guess_t *head, *tail;
  size_t n;
  dyn__map_t by_key; /* key(worker, seq) -> guess_t* (unconfirmed only) */
};

/* Distinct workers' guesses of one block must not meet in the map. */
static uint64_t key(uint64_t worker, dyn_kv_hash_t seq) {
  return seq ^ dyn__map_mix(worker ^ 0x9e3779b97f4a7c15ull);
}

int dyn__kv_predict_create(dyn__kv_predict_t **out) {
  dyn__kv_predict_t *p = calloc(1, sizeof *p);
  if (!p) return DYN_ENOMEM;
  dyn__map_init(&p->by_key);
  *out = p;
  return DYN_OK;
}

void dyn__kv_predict_destroy(dyn__kv_predict_t *p) {
  if (!p) return;
  while (p->head) {
    guess_t *g = p->head;
    p->head = g->next;
    free(g);
  }
  dyn__map_free(&p->by_key);
  free(p);
}

int dyn__kv_predict_add(dyn__kv_predict_t *p, uint64_t worker, const dyn_kv_hash_t *seq,
                        size_t n, uint64_t expires) {
  for (size_t i = 0; i < n; i++) {
    uint64_t k = key(worker, seq[i]);
    if (dyn__map_get(&p->by_key, k)) continue;
    guess_t *g = calloc(1, sizeof *g);
    if (!g) return DYN_ENOMEM;
    *g = (guess_t){NULL, worker, seq[i], expires, 0};
    if (dyn__map_put(&p->by_key, k, g)) {
      free(g);
      return DYN_ENOMEM;
    }
    if (p->tail) p->tail->next = g;
    else p->head = g;
    p->tail = g;
    p->n++;
  }
  return DYN_OK;
}

void dyn__kv_predict_confirm(dyn__kv_predict_t *p, uint64_t worker,
                             const dyn_kv_block_t *blocks, size_t n) {
  if (!p->by_key.n) return;
  for (size_t i = 0; i < n; i++) {
    guess_t *g = dyn__map_del(&p->by_key, key(worker, blocks[i].seq_hash));
    if (g) g->confirmed = 1; /* stays in the FIFO until it expires */
  }
}

size_t dyn__kv_predict_expire(dyn__kv_predict_t *p, uint64_t now,
                              void (*fn)(void *ud, uint64_t worker, dyn_kv_hash_t seq),
                              void *ud) {
  size_t dropped = 0;
  while (p->head && p->head->expires <= now) {
    guess_t *g = p->head;
    p->head = g->next;
    if (!p->head) p->tail = NULL;
    p->n--;
    if (!g->confirmed) {
      dyn__map_del(&p->by_key, key(g->worker, g->seq));
      fn(ud, g->worker, g->seq);
      dropped++;
    }
    free(g);
  }
  return dropped;
}

size_t dyn__kv_predict_pending(const dyn__kv_predict_t *p) { return p->n; }
