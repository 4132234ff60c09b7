/* engine.c - the engine interface: creating an engine by name, and the
 * public calls of dynamo/llm/engine.h forwarded to its implementation
 * (see llm/engine/engine.h).
 */
#include "llm/engine/engine.h"

#include <stdio.h>
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

size_t dyn_engine_seq_prompt_tokens(const dyn_engine_seq_t *seq) {
  size_t prompt, cached, generated;
  seq->engine->ops->seq_tokens(seq, &prompt, &cached, &generated);
  return prompt;
}

size_t dyn_engine_seq_cached_tokens(const dyn_engine_seq_t *seq) {
  size_t prompt, cached, generated;
  seq->engine->ops->seq_tokens(seq, &prompt, &cached, &generated);
  return cached;
}

size_t dyn_engine_seq_generated_tokens(const dyn_engine_seq_t *seq) {
  size_t prompt, cached, generated;
  seq->engine->ops->seq_tokens(seq, &prompt, &cached, &generated);
  return generated;
}

void dyn_engine_get_metrics(const dyn_engine_t *e, dyn_engine_metrics_t *m) {
  e->ops->get_metrics(e, m);
}

int dyn_engine_reset_cache(dyn_engine_t *e) { return e->ops->reset_cache(e); }

const dyn_engine_logprob_t *dyn_engine_seq_logprobs(const dyn_engine_seq_t *seq) {
  return seq->engine->ops->seq_logprobs(seq);
}

void dyn_engine_set_step_observer(dyn_engine_t *e, dyn_engine_step_fn fn, void *ud) {
  e->step_fn = fn;
  e->step_ud = ud;
}
