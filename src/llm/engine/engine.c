/* engine.c - the engine interface: creating an engine by name, and the
 * public calls of dynamo/llm/engine.h forwarded to its implementation
 * (see llm/engine/engine.h).
 */
#include "llm/engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

typedef int (*create_fn)(uv_loop_t *loop, const dyn_engine_options_t *opts, dyn_engine_t **out,
                         const char **why);

#ifndef DYN_HAVE_LLAMA
/* Built without llama.cpp (CMake did not find scripts/llama_cpp.sh's
 * prefix): the name is known, so the message can say what to do. */
int dyn__llama_engine_create(uv_loop_t *loop, const dyn_engine_options_t *opts,
                             dyn_engine_t **out, const char **why) {
  if (why)
    *why = "engine: this build has no llama.cpp (run scripts/deps.sh, then configure and "
           "build again)";
  return DYN_EINVAL;
}
#endif

/* The engines a Worker can run; the first is the default. */
static const struct {
  const char *name;
  create_fn create;
} engines[] = {
    {"sim", dyn_engine_create},
    {"llama.cpp", dyn__llama_engine_create},
};
#define N_ENGINES (sizeof engines / sizeof engines[0])

int dyn_engine_open(uv_loop_t *loop, const char *name, const dyn_engine_options_t *opts,
                    dyn_engine_t **out, const char **why) {
  if (!name) name = engines[0].name;
  for (size_t i = 0; i < N_ENGINES; i++)
    if (!strcmp(name, engines[i].name)) return engines[i].create(loop, opts, out, why);
  /* The message names the bad value and the choices; per thread, as each
   * loop thread may open engines. */
  static _Thread_local char unknown[160];
  int n = snprintf(unknown, sizeof unknown, "engine: unknown engine \"%.64s\" (known:", name);
  for (size_t i = 0; i < N_ENGINES && n > 0 && (size_t)n < sizeof unknown; i++)
    n += snprintf(unknown + n, sizeof unknown - (size_t)n, " %s", engines[i].name);
  if (n > 0 && (size_t)n < sizeof unknown - 1) strcat(unknown, ")");
  if (why) *why = unknown;
  return DYN_EINVAL;
}

const char *dyn_engine_name(const dyn_engine_t *e) { return e->ops->name; }

void dyn_engine_destroy(dyn_engine_t *e) {
  if (e) e->ops->destroy(e);
}

void dyn_engine_set_kv_events(dyn_engine_t *e, dyn_engine_kv_events_fn fn, void *ud) {
  e->ops->set_kv_events(e, fn, ud);
}

int dyn_engine_submit(dyn_engine_t *e, const dyn_engine_request_t *req,
                      const dyn_engine_callbacks_t *cb, void *ud, dyn_engine_seq_t **out,
                      const char **why) {
  if (!e) {
    if (why) *why = "engine submit: engine is NULL";
    return DYN_EINVAL;
  }
  return e->ops->submit(e, req, cb, ud, out, why);
}

void dyn_engine_cancel(dyn_engine_seq_t *seq) {
  if (seq) seq->engine->ops->cancel(seq);
}

size_t dyn_engine_seq_prompt_tokens(const dyn_engine_seq_t *seq) { return seq->n_prompt; }

size_t dyn_engine_seq_cached_tokens(const dyn_engine_seq_t *seq) { return seq->cached_tokens; }

size_t dyn_engine_seq_generated_tokens(const dyn_engine_seq_t *seq) { return seq->n_generated; }

void dyn_engine_get_metrics(const dyn_engine_t *e, dyn_engine_metrics_t *m) {
  e->ops->get_metrics(e, m);
}

int dyn_engine_reset_cache(dyn_engine_t *e) { return e->ops->reset_cache(e); }

const dyn_engine_logprob_t *dyn_engine_seq_logprobs(const dyn_engine_seq_t *seq) {
  return seq->logprobs ? &seq->lp : NULL;
}

void dyn_engine_set_step_observer(dyn_engine_t *e, dyn_engine_step_fn fn, void *ud) {
  e->step_fn = fn;
  e->step_ud = ud;
}

const char *dyn_engine_kv_layout(const dyn_engine_t *e) { return e->ops->kv_layout(e); }

size_t dyn_engine_kv_cached_blocks(dyn_engine_t *e, const uint32_t *tokens, size_t n) {
  return e->ops->kv_cached_blocks(e, tokens, n);
}

int dyn_engine_kv_export(dyn_engine_t *e, const uint32_t *tokens, size_t n, size_t from_block,
                         void **data, size_t *len, size_t *n_blocks, const char **why) {
  if (!e || !tokens || !n || !data || !len || !n_blocks) {
    if (why) *why = "engine kv export: NULL argument or empty prompt";
    return DYN_EINVAL;
  }
  return e->ops->kv_export(e, tokens, n, from_block, data, len, n_blocks, why);
}

/* ---- the exported KV's header ------------------------------------------- */

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void dyn__kv_blob_put(uint8_t *out, const dyn__kv_blob_hdr_t *h) {
  put32(out, h->magic);
  put32(out + 4, h->block_size);
  put32(out + 8, h->from_block);
  put32(out + 12, h->n_blocks);
  put32(out + 16, (uint32_t)h->last_hash);
  put32(out + 20, (uint32_t)(h->last_hash >> 32));
}

void dyn__kv_import_release(void *kv, void (*kv_free)(void *, void *), void *ud) {
  if (kv && kv_free) kv_free(kv, ud);
  else free(kv);
}

int dyn__kv_blob_get(const void *blob, size_t len, dyn__kv_blob_hdr_t *h, const char **why) {
  const uint8_t *p = blob;
  if (!blob || len < DYN__KV_BLOB_HDR_SIZE || get32(p) != DYN__KV_BLOB_MAGIC) {
    *why = "imported KV: not an exported KV blob (bad magic or too short)";
    return DYN_EINVAL;
  }
  h->magic = get32(p);
  h->block_size = get32(p + 4);
  h->from_block = get32(p + 8);
  h->n_blocks = get32(p + 12);
  h->last_hash = (uint64_t)get32(p + 16) | (uint64_t)get32(p + 20) << 32;
  return DYN_OK;
}

const char *dyn__kv_blob_fits(const dyn__kv_blob_hdr_t *h, uint32_t block_size,
                              const dyn_kv_hash_t *hashes, size_t n_hashes, size_t held) {
  if (h->block_size != block_size) return "imported KV: another block size";
  if (!h->n_blocks) return "imported KV: no blocks";
  if ((size_t)h->from_block + h->n_blocks > n_hashes)
    return "imported KV: more blocks than the prompt may take";
  if (hashes[h->from_block + h->n_blocks - 1] != h->last_hash)
    return "imported KV: computed for another prompt";
  if (h->from_block > held) return "imported KV: the cache no longer holds the blocks before it";
  return NULL;
}
