/* dynamo/llm/engine.h - the LLM engine behind a Worker, and the simulated
 * engine: no GPU, no model, vLLM's timing and KV-cache behaviour.
 *
 * Every engine is driven through the same calls: submit, cancel, per-step
 * token callbacks, load metrics, KV events. dyn_engine_open creates one by
 * name (a Worker's `engine:` setting); the rest of this header applies to
 * any engine. The simulated engine ("sim", dyn_engine_create) is described
 * here; its options are dyn_engine_options_t.
 *
 * The simulated engine exists so that KV-aware routing can be tested and
 * benchmarked on any machine. Like vLLM it keeps a paged KV cache of
 * num_blocks blocks of block_size tokens with automatic prefix caching and
 * LRU eviction, and runs continuous batching with chunked prefill (as
 * vLLM V1 and the llama.cpp engine): each step decodes one token for every
 * sequence past its prompt, then adds prompt chunks, first come first
 * served (prompts already begun, then waiting requests admitted in order
 * while a slot and the KV blocks for the prompt are free), up to
 * max_num_batched_tokens tokens in all, the decodes counted. A long prompt
 * thus takes several steps, during which the other streams keep getting a
 * token per step; its first token comes out in the step that computes its
 * last chunk. A step lasts what the timing model says of the tokens it
 * computes, divided by speedup:
 *
 *   step = [prefill_base_us + prefill_per_token_us * prompt tokens computed]
 *              (if the step has a prompt chunk)
 *        + [decode_base_us + decode_per_seq_us * sequences decoding]
 *              (if any sequence decodes)
 *
 * so time to first token is queueing plus the prefill of the part of the
 * prompt the cache did not hold: exactly what routing to the worker with
 * the longest cached prefix saves. Generated tokens are pseudo-random ids
 * from a per-request seed (reproducible), EOS with a small probability.
 * When the pool runs out of blocks for decoding, the newest running
 * sequence is preempted (its blocks freed, its prompt and output requeued
 * at the front and recomputed later, as vLLM's recompute preemption does).
 *
 * Everything runs on one libuv loop thread: create, submit, cancel and the
 * callbacks all happen on it. KV events use the types of dynamo/llm/kv.h
 * and the block hashes of dyn_kv_hash_blocks, so a router's indexer can
 * apply them as they are.
 */
#ifndef DYNAMO_LLM_ENGINE_H
#define DYNAMO_LLM_ENGINE_H

#include "dynamo/export.h"

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "dynamo/llm/kv.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_engine dyn_engine_t;
typedef struct dyn_engine_seq dyn_engine_seq_t; /* one submitted request */

/* Defaults (dyn_engine_options_init) model a small model on one GPU:
 * a 1,000-token uncached prompt costs 2 + 100 = 102 ms of prefill, a decode
 * step 8 ms alone and 8 + 64 * 0.1 = 14.4 ms with 64 sequences. */
typedef struct dyn_engine_options {
  uint32_t block_size;             /* tokens per KV block: 16 */
  uint32_t num_blocks;             /* KV blocks in the pool: 1024 */
  uint32_t max_num_seqs;           /* running sequences at most: 64 */
  uint32_t max_num_batched_tokens; /* tokens computed per step, one per
                                    * decoding sequence plus prompt
                                    * chunks: 2048 (a longer prompt is
                                    * prefilled over several steps) */
  uint32_t vocab_size;             /* generated ids are below this: 32000 */
  uint32_t min_token_id;           /* ... and at least this (skips special
                                    * ids): 3 */
  uint32_t eos_token_id;           /* never generated as text: 2 */
  double eos_probability;          /* chance a step ends a request (STOP)
                                    * unless ignore_eos: 0.005 */
  double speedup;                  /* every duration is divided by it: 1 */
  double prefill_base_us;          /* 2000 */
  double prefill_per_token_us;     /* per uncached prompt token: 100 */
  double decode_base_us;           /* 8000 */
  double decode_per_seq_us;        /* per sequence in the step: 100 */
  uint64_t seed;                   /* seeds requests that give none: 0 */
  uint64_t kv_hash_seed;           /* for block hashes: DYN_KV_DEFAULT_SEED;
                                    * must match the router's */
  /* The llama.cpp engine only (the sim ignores them). Its KV cache holds
   * num_blocks * block_size tokens; vocab_size, min_token_id, eos_*,
   * speedup and the step times come from the model or do not apply. */
  const char *model;               /* the .gguf file: NULL */
  uint32_t threads;                /* decode threads; 0: the machine's cores */
  uint32_t max_model_len;          /* tokens per sequence (prompt and
                                    * output); 0: the model's trained
                                    * context, at most the KV cache */
  /* The KV cache's element types, named as llama-server's
   * --cache-type-k/-v: f32, f16, bf16, q8_0, q4_0, q4_1, iq4_nl, q5_0,
   * q5_1; NULL: f16. */
  const char *cache_type_k;
  const char *cache_type_v;
  int flash_attn;                  /* nonzero: flash attention (a quantized
                                    * V cache needs it): 0; the Worker's
                                    * flash-attn defaults to true (its CPU
                                    * kernel skips the cells other
                                    * sequences hold: docs/llm.md) */
  /* The simulated engine's KV transfer (dyn_engine_kv_export): each block
   * exported is its seq hash and kv_bytes_per_block bytes, and a sequence
   * submitted with imported KV is admitted kv_import_us_per_block * blocks
   * (divided by speedup) after its submit, as if copying it in. */
  uint32_t kv_bytes_per_block;     /* 32768 */
  double kv_import_us_per_block;   /* 20 */
} dyn_engine_options_t;

DYN_EXTERN void dyn_engine_options_init(dyn_engine_options_t *o);

typedef struct dyn_engine_request {
  const uint32_t *prompt; /* copied by submit */
  size_t n_prompt;        /* at least 1 */
  uint32_t max_tokens;    /* at least 1; generation stops (LENGTH) there */
  int ignore_eos;         /* nonzero: only max_tokens ends the request */
  /* Which tokens come out. temperature 0 is greedy: the output depends on
   * the prompt alone (and the engine seed). Otherwise a request with
   * has_seed replays the same tokens for the same seed, and one without
   * draws from the engine's own sequence. */
  float temperature;
  int has_seed;
  uint64_t seed;
  /* Nucleus and top-k filtering before sampling (temperature > 0 only):
   * top_p 0 or 1 and top_k 0 are off. The simulated engine ignores them. */
  float top_p;
  int32_t top_k;
  /* Nonzero: each generated token's log-probability is kept for
   * dyn_engine_seq_logprobs, with the top_logprobs (at most
   * DYN_ENGINE_MAX_TOP_LOGPROBS) most likely tokens of its step. Asking
   * for them never changes which tokens come out. */
  int logprobs;
  uint32_t top_logprobs;
  /* KV computed elsewhere (disaggregated serving): what dyn_engine_kv_export
   * of an engine with the same dyn_engine_kv_layout gave for this prompt's
   * leading blocks. On DYN_OK submit owns it (freed with free()). It is
   * installed when the sequence is admitted, if this engine's cache then
   * holds every block before the first one it carries; otherwise (or if
   * it does not belong to this prompt) it is dropped and those tokens are
   * computed here, so the output is the same either way. NULL: none. */
  void *kv;
  size_t kv_len;
  /* How the engine gives kv back once it is installed or dropped, on the
   * loop thread: kv_free(kv, kv_free_ud); NULL: free(kv). A caller that
   * receives KV often (a decode worker) keeps its buffers this way: the
   * fresh pages of a new buffer cost more than the copy into them. */
  void (*kv_free)(void *kv, void *ud);
  void *kv_free_ud;
} dyn_engine_request_t;

/* A generated token's log-probability under the distribution it was drawn
 * from (the model's, before sampling settings), and the most likely tokens
 * of that step, most likely first: what OpenAI's logprobs report. */
#define DYN_ENGINE_MAX_TOP_LOGPROBS 20
typedef struct dyn_engine_logprob {
  float logprob;
  uint32_t n_top;
  uint32_t top_ids[DYN_ENGINE_MAX_TOP_LOGPROBS];
  float top_logprobs[DYN_ENGINE_MAX_TOP_LOGPROBS];
} dyn_engine_logprob_t;

typedef enum dyn_engine_finish {
  DYN_ENGINE_STOP = 1,      /* generated EOS (not passed to on_tokens) */
  DYN_ENGINE_LENGTH = 2,    /* reached max_tokens */
  DYN_ENGINE_CANCELLED = 3, /* dyn_engine_cancel or dyn_engine_destroy */
  DYN_ENGINE_ERROR = 4      /* the engine failed it (out of memory) */
} dyn_engine_finish_t;

/* on_tokens: new tokens of seq (one per step today; the array is valid
 * during the call). on_done: seq ended, once, always; the handle is freed
 * when on_done returns, so forget it there. Both may call any engine
 * function except dyn_engine_destroy: submit, cancel (of any sequence,
 * this one included, which then gets no further call) and the accessors. */
typedef struct dyn_engine_callbacks {
  void (*on_tokens)(dyn_engine_seq_t *seq, const uint32_t *tokens, size_t n, void *ud);
  void (*on_done)(dyn_engine_seq_t *seq, dyn_engine_finish_t reason, void *ud);
} dyn_engine_callbacks_t;

/* Receives the KV events of one engine step (or of a cache reset) in
 * order, event ids increasing; the arrays are valid only during the call.
 * Evictions of one step share a REMOVED event; each chain of blocks that
 * became full shares a STORED event naming its parent. */
typedef void (*dyn_engine_kv_events_fn)(const dyn_kv_event_t *events, size_t n, void *ud);

/* Load and counters, for the worker's metrics and the router's costs. */
typedef struct dyn_engine_metrics {
  uint32_t active_slots;     /* sequences running (admitted, not finished) */
  uint32_t total_slots;      /* max_num_seqs */
  uint32_t waiting;          /* submitted, not running (incl. preempted) */
  uint64_t kv_blocks_used;   /* blocks referenced by running sequences */
  uint64_t kv_blocks_cached; /* blocks in the prefix cache (used or not) */
  uint64_t kv_blocks_total;  /* num_blocks */
  /* cumulative */
  uint64_t requests;         /* submitted */
  uint64_t prompt_tokens;    /* prompt tokens admitted (first admission) */
  uint64_t cached_prompt_tokens; /* ... of which the prefix cache held */
  uint64_t generated_tokens; /* tokens passed to on_tokens */
  uint64_t preemptions;      /* sequences preempted for lack of blocks */
  uint64_t evictions;        /* cached blocks evicted */
  uint64_t steps;            /* steps run */
  uint64_t kv_imported_blocks; /* blocks installed from dyn_engine_request_t.kv */
  uint64_t kv_import_dropped;  /* imports dropped (cache no longer held
                                * their start, bad data): recomputed */
} dyn_engine_metrics_t;

/* Creates an idle engine of the kind called name on loop: "sim" (the
 * simulated engine below; NULL means "sim") or "llama.cpp" (a real model,
 * opts->model, on llama.cpp's C API; see llm/engine/llama_engine.c). opts
 * NULL: defaults. An unknown name is DYN_EINVAL with *why (if not NULL)
 * naming it and the known ones (valid until the next call on this thread);
 * otherwise as the engine's own create. The llama.cpp engine loads the
 * model here: a missing or unreadable model file is DYN_EINVAL with *why
 * naming the file, as is a build without llama.cpp. */
DYN_EXTERN int dyn_engine_open(uv_loop_t *loop, const char *name, const dyn_engine_options_t *opts,
                    dyn_engine_t **out, const char **why);

/* The name an engine was opened by ("sim"). */
DYN_EXTERN const char *dyn_engine_name(const dyn_engine_t *e);

/* Creates an idle simulated engine on loop. opts NULL: defaults. DYN_EINVAL for a
 * zero size or count, vocab_size not above min_token_id + 1, a speedup
 * that is not positive, or a negative or non-finite time or probability,
 * with *why (if not NULL) pointed at a static sentence naming it;
 * DYN_ENOMEM. */
DYN_EXTERN int dyn_engine_create(uv_loop_t *loop, const dyn_engine_options_t *opts,
                      dyn_engine_t **out, const char **why);

/* Cancels every request (on_done(CANCELLED), synchronously, in submission
 * order), drops pending KV events, and closes the step timer; the engine's
 * memory is freed by the timer's close callback, so run the loop once more
 * (as any libuv handle needs). Not from inside an engine callback. */
DYN_EXTERN void dyn_engine_destroy(dyn_engine_t *e);

/* Called on the loop after each engine step with how long it took, in
 * seconds (the simulated engine: its modelled duration), for the step time
 * histogram; NULL: none. */
typedef void (*dyn_engine_step_fn)(double seconds, void *ud);
DYN_EXTERN void dyn_engine_set_step_observer(dyn_engine_t *e, dyn_engine_step_fn fn, void *ud);

/* The sink for KV events (NULL: none; events are then dropped). */
DYN_EXTERN void dyn_engine_set_kv_events(dyn_engine_t *e, dyn_engine_kv_events_fn fn, void *ud);

/* Queues a request; it runs from the next step, on its own loop turn, so no
 * callback happens inside submit. *out (may be NULL) receives its handle.
 * DYN_EINVAL, *why naming it, for NULL arguments, an empty prompt,
 * max_tokens 0, or a request whose prompt plus max_tokens needs more KV
 * blocks than the whole pool has (it could never run); DYN_ECLOSED after
 * destroy began; DYN_ENOMEM. */
DYN_EXTERN int dyn_engine_submit(dyn_engine_t *e, const dyn_engine_request_t *req,
                      const dyn_engine_callbacks_t *cb, void *ud, dyn_engine_seq_t **out,
                      const char **why);

/* Ends seq now: its KV references are dropped at once (its blocks stay in
 * the prefix cache), it gets no more tokens, and on_done(CANCELLED) is
 * called before cancel returns. seq must not have ended already. */
DYN_EXTERN void dyn_engine_cancel(dyn_engine_seq_t *seq);

/* Per request, valid until its on_done returns. cached_tokens: prompt
 * tokens the prefix cache held when it was first admitted (0 before), for
 * usage.prompt_tokens_details.cached_tokens. */
DYN_EXTERN size_t dyn_engine_seq_prompt_tokens(const dyn_engine_seq_t *seq);
DYN_EXTERN size_t dyn_engine_seq_cached_tokens(const dyn_engine_seq_t *seq);
DYN_EXTERN size_t dyn_engine_seq_generated_tokens(const dyn_engine_seq_t *seq);
/* During on_tokens: one entry per token of that call, or NULL when the
 * request did not ask for logprobs. Valid until on_tokens returns. */
DYN_EXTERN const dyn_engine_logprob_t *dyn_engine_seq_logprobs(const dyn_engine_seq_t *seq);

DYN_EXTERN void dyn_engine_get_metrics(const dyn_engine_t *e, dyn_engine_metrics_t *m);

/* Empties the prefix cache (CLEARED goes to the sink before this returns).
 * Meant for an idle engine: running sequences keep their blocks, which are
 * then no longer shared. DYN_ENOMEM if the event could not be made. */
DYN_EXTERN int dyn_engine_reset_cache(dyn_engine_t *e);

/* ---- moving a prompt's KV between engines (disaggregated serving) ----
 *
 * A prefill worker's engine computes a prompt and exports its KV; a decode
 * worker's engine of the same layout imports it with the request
 * (dyn_engine_request_t.kv) and goes on decoding. Only whole blocks move:
 * a prompt's partial last block (and the first token, which is part of
 * the decode worker's prompt) is computed by the importer. */

/* What must agree between two engines for KV to move between them, as
 * "key=value" pairs joined by ';' (engine, block_size, and the model and
 * cache types for llama.cpp). Valid as long as the engine. */
DYN_EXTERN const char *dyn_engine_kv_layout(const dyn_engine_t *e);

/* The prompt's leading full blocks this engine's cache holds now. */
DYN_EXTERN size_t dyn_engine_kv_cached_blocks(dyn_engine_t *e, const uint32_t *tokens, size_t n);

/* Serializes the KV of the prompt's full blocks [from_block, ...) that
 * this engine holds computed (a running sequence's or the prefix cache's,
 * in one leading run) into a malloc'd *data of *len bytes (free() it);
 * *n_blocks says how many it holds (0 when it holds none past
 * from_block: a header alone). Meant for the moment the prompt's first
 * token came out (on_tokens): between steps. DYN_EINVAL with *why while a
 * step is in flight (llama.cpp) or with no sequence id to spare;
 * DYN_ENOMEM. */
DYN_EXTERN int dyn_engine_kv_export(dyn_engine_t *e, const uint32_t *tokens, size_t n,
                                    size_t from_block, void **data, size_t *len,
                                    size_t *n_blocks, const char **why);

#ifdef __cplusplus
}
#endif
#endif
