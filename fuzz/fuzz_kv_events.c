/* fuzz_kv_events.c - the KV event decoder, and the indexer behind it, on
 * arbitrary bytes.
 *
 * A router decodes whatever arrives on the bus and applies it to its
 * indexer, so both are fuzzed together: every batch that decodes must
 * re-encode to exactly the input (the format is canonical), every error
 * must name its reason, and the decoded events (spread over a few workers)
 * go into an indexer that is queried after each one. When all workers are
 * removed the tree must be empty; ASan checks nothing leaks or overruns.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "llm/kv/encode.h"
#include "dynamo/llm/kv.h"
#include "dynamo/status.h"
#include "common/buf.h"

typedef struct ctx {
  dyn_kv_indexer_t *ix;
  dyn__buf_t re; /* the events re-encoded, header excluded */
  dyn_kv_hash_t query[64];
  size_t nquery;
} ctx_t;

static int on_event(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  ctx_t *c = ud;
  dyn__buf_t one;
  dyn__buf_init(&one);
  if (dyn__kv_encode(&one, worker, ev, 1)) abort();
  if (dyn__buf_append(&c->re, one.data + DYN_KV_WIRE_HEADER, one.len - DYN_KV_WIRE_HEADER))
    abort();
  dyn__buf_free(&one);
  /* A few workers, so events interleave in the tree. */
  uint64_t w = ev->event_id & 3;
  int rc = dyn_kv_indexer_apply(c->ix, w, ev);
  if (rc != DYN_OK && rc != DYN_ENOTFOUND && rc != DYN_EPROTO) abort();
  for (size_t i = 0; i < ev->n_blocks && c->nquery < 64; i++)
    c->query[c->nquery++] = ev->blocks[i].local_hash;
  dyn_kv_match_t out[4];
  size_t m = dyn_kv_indexer_find_matches(c->ix, c->query, c->nquery, out, 4);
  if (m > 4) abort();
  for (size_t i = 0; i < m; i++)
    if (out[i].worker_id > 3 || out[i].matched_blocks == 0 || out[i].matched_blocks > c->nquery)
      abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ctx_t c;
  memset(&c, 0, sizeof c);
  if (dyn_kv_indexer_create(&c.ix)) abort();
  dyn__buf_init(&c.re);
  const char *why = NULL;
  int rc = dyn_kv_decode(data, size, NULL, on_event, &c, &why);
  if (rc) {
    if (rc != DYN_EPROTO || !why) abort();
    if (c.re.len) abort(); /* a bad batch delivered an event */
  } else if (c.re.len + DYN_KV_WIRE_HEADER != size ||
             (c.re.len && memcmp(c.re.data, data + DYN_KV_WIRE_HEADER, c.re.len))) {
    abort(); /* not canonical */
  }
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(c.ix, &st);
  size_t blocks = 0;
  for (uint64_t w = 0; w < 4; w++) blocks += dyn_kv_indexer_worker_blocks(c.ix, w);
  if (blocks != st.worker_blocks) abort();
  for (uint64_t w = 0; w < 4; w++) dyn_kv_indexer_remove_worker(c.ix, w);
  dyn_kv_indexer_get_stats(c.ix, &st);
  if (st.nodes || st.workers || st.worker_blocks) abort();
  dyn_kv_indexer_destroy(c.ix);
  dyn__buf_free(&c.re);
  return 0;
}
