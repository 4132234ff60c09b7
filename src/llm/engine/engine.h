/* engine.h - the engine interface behind a Worker (internal).
 *
 * A Worker drives one engine through dynamo/llm/engine.h: submit, cancel,
 * per-step token callbacks, load metrics and KV events. Each engine (the
 * simulated one in sim_engine.c, llama.cpp's in llama_engine.c) implements that API as a
 * table of operations, and its handles start with the structs below, so
 * engine.c can forward every public call to the right implementation and
 * dyn_engine_open can create one by the name a Worker's config gives
 * (`engine:`).
 *
 * An implementation keeps the contract dynamo/llm/engine.h states (one
 * loop thread, no callback inside submit, on_done exactly once, the handle
 * freed when on_done returns); engine.c checks only what is common to all:
 * NULL handles. What every sequence counts lives in its common part
 * (struct dyn_engine_seq), so engine.c answers the per-sequence calls
 * itself.
 */
#ifndef DYN__LLM_ENGINE_H
#define DYN__LLM_ENGINE_H
#include "dynamo/llm/engine.h"

typedef struct dyn__engine_ops {
  const char *name; /* what dyn_engine_open and a config's `engine:` call it */
  void (*destroy)(dyn_engine_t *e);
  void (*set_kv_events)(dyn_engine_t *e, dyn_engine_kv_events_fn fn, void *ud);
  int (*submit)(dyn_engine_t *e, const dyn_engine_request_t *req,
                const dyn_engine_callbacks_t *cb, void *ud, dyn_engine_seq_t **out,
                const char **why);
  /* Never called for a sequence that already ended. */
  void (*cancel)(dyn_engine_seq_t *seq);
  void (*get_metrics)(const dyn_engine_t *e, dyn_engine_metrics_t *m);
  int (*reset_cache)(dyn_engine_t *e);
  const char *(*kv_layout)(const dyn_engine_t *e);
  size_t (*kv_cached_blocks)(dyn_engine_t *e, const uint32_t *tokens, size_t n);
  int (*kv_export)(dyn_engine_t *e, const uint32_t *tokens, size_t n, size_t from_block,
                   void **data, size_t *len, size_t *n_blocks, const char **why);
} dyn__engine_ops_t;

/* The wire form of exported KV (dyn_engine_kv_export): this header, then
 * the engine's own bytes. last_hash is the seq hash of the last block it
 * carries, so an importer can tell that it belongs to its prompt. All
 * fields little-endian. */
#define DYN__KV_BLOB_MAGIC 0x31564b44u /* "DKV1" */
typedef struct dyn__kv_blob_hdr {
  uint32_t magic, block_size, from_block, n_blocks;
  uint64_t last_hash;
} dyn__kv_blob_hdr_t;
#define DYN__KV_BLOB_HDR_SIZE 24

/* Writes h into out (DYN__KV_BLOB_HDR_SIZE bytes). */
void dyn__kv_blob_put(uint8_t *out, const dyn__kv_blob_hdr_t *h);
/* Reads the header of blob: DYN_EINVAL with *why when it is short or
 * not one. */
/* Gives an imported blob back as its request said (kv_free, else free()). */
void dyn__kv_import_release(void *kv, void (*kv_free)(void *, void *), void *ud);
int dyn__kv_blob_get(const void *blob, size_t len, dyn__kv_blob_hdr_t *h, const char **why);
/* Whether blob h can be installed for a prompt whose block seq hashes are
 * hashes[0, n_hashes) (the blocks the importer may take), with `held`
 * leading blocks in its cache: NULL if so, else why not. */
const char *dyn__kv_blob_fits(const dyn__kv_blob_hdr_t *h, uint32_t block_size,
                              const dyn_kv_hash_t *hashes, size_t n_hashes, size_t held);

/* The llama.cpp engine's create (llama_engine.c), in builds that have it;
 * as dyn_engine_create. */
int dyn__llama_engine_create(uv_loop_t *loop, const dyn_engine_options_t *opts,
                             dyn_engine_t **out, const char **why);

/* The first member of every engine's handle. */
struct dyn_engine {
  const dyn__engine_ops_t *ops;
  dyn_engine_step_fn step_fn; /* dyn_engine_set_step_observer */
  void *step_ud;
};

/* What an engine calls when a step completed. */
static inline void dyn__engine_step_done(dyn_engine_t *e, double seconds) {
  if (e->step_fn) e->step_fn(seconds, e->step_ud);
}

/* The first member of every sequence's handle: what the per-sequence
 * calls (dyn_engine_seq_*) read, kept up to date by the engine. */
struct dyn_engine_seq {
  dyn_engine_t *engine;
  size_t n_prompt;      /* the prompt's tokens */
  size_t cached_tokens; /* of them, found in the prefix cache at admission */
  size_t n_generated;   /* tokens handed to on_tokens */
  int logprobs;         /* asked for: lp holds the last token's by on_tokens */
  dyn_engine_logprob_t lp;
};
#endif
