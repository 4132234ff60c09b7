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
 * NULL handles.
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
  void (*seq_tokens)(const dyn_engine_seq_t *seq, size_t *prompt, size_t *cached,
                     size_t *generated);
  /* NULL when the sequence asked for none; see dyn_engine_seq_logprobs. */
  const dyn_engine_logprob_t *(*seq_logprobs)(const dyn_engine_seq_t *seq);
  void (*get_metrics)(const dyn_engine_t *e, dyn_engine_metrics_t *m);
  int (*reset_cache)(dyn_engine_t *e);
} dyn__engine_ops_t;

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

/* The first member of every sequence's handle. */
struct dyn_engine_seq {
  dyn_engine_t *engine;
};
#endif
