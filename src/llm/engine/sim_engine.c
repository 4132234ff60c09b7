/* sim_engine.c - the simulated LLM engine: continuous batching and a timing
 * model over the paged KV cache (see dynamo/llm/engine.h). It is one
 * implementation of the engine interface (llm/engine/engine.h): its
 * handles begin with the interface's, and sim_ops, at the end, is its
 * table of operations; dyn_engine_open("sim") reaches dyn_engine_create.
 *
 * One libuv timer drives the steps. A step is planned when the previous one
 * ends (admission, preemption, KV allocation: evictions happen here), and
 * its results are delivered when its modelled duration has passed (KV
 * commits, STORED events, tokens, finishes). The next step is planned at
 * the previous one's modelled end, not at the moment the timer fired, so
 * libuv's millisecond timers do not stretch a sped-up run: late steps are
 * caught up within one timer callback. From idle, a submit arms the timer
 * for the next loop turn, so requests submitted together start together
 * and no callback runs inside submit.
 *
 * A sequence's tokens are its prompt followed by what it generated;
 * n_computed of them have their KV. Prefill is chunked, as in the llama.cpp
 * engine (llama_engine.c), vLLM V1 and llama-server: a step holds the next
 * token of every decoding sequence, then prompt chunks, first come first
 * served (running sequences part way through their prompt, then new
 * admissions), up to max_num_batched_tokens tokens in all, decodes
 * included. So a long prompt is spread over several steps and the streams
 * already decoding get a token in each of them, at the price of a slower
 * step. A decoding sequence of n tokens computes the KV of its last token
 * in the step (so holds blocks for n tokens); the chunk that completes a
 * prompt emits its first new token. A block is committed (registered for
 * prefix matching, STORED) in the step that computes its last token, never
 * earlier. The blocks for the whole prompt are taken at admission, as
 * vLLM V0's chunked prefill did (vLLM V1 and the llama.cpp engine take
 * them chunk by chunk): a prompt begun never waits for blocks half way,
 * and two half-done prompts cannot hold each other's blocks; KV pressure
 * then works as it did before chunking, only the timing changed. Handles
 * of sequences in the step being delivered are freed only after it, so
 * callbacks may cancel anything.
 *
 * KV transfer (disaggregated serving) is modelled: an export is the blocks'
 * seq hashes, each with kv_bytes_per_block bytes standing for its tensors
 * (so the request plane carries a real model's volume), and a sequence
 * submitted with imported KV waits kv_import_us_per_block per block before
 * it may be admitted; then the blocks it brought count as computed (and
 * are committed at admission) and cost no prefill.
 */
#include "common/rand.h"
#include "dynamo/llm/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "llm/engine/engine.h"
#include "llm/engine/seq_list.h"
#include "llm/engine/kv_cache.h"

typedef struct sim sim_t;
typedef struct sim_seq sim_seq_t;

enum { S_WAITING, S_RUNNING, S_DONE };
enum { B_NONE, B_PREFILL, B_DECODE };

struct sim_seq {
  dyn_engine_seq_t base; /* first: what the interface hands out */
  sim_t *e;
  sim_seq_t *prev, *next; /* in e->waiting or e->running */
  sim_seq_t *dead_next;
  int state, in_batch, admitted;
  int decoding; /* past its prompt: one token a step (until preempted) */
  uint32_t *tokens; /* prompt, then generated; room for all of them */
  size_t n_tokens; /* the prompt's (base.n_prompt) and generated ones */
  size_t n_computed; /* tokens with their KV (committed) */
  size_t chunk;      /* tokens it computes in the step in flight */
  uint32_t max_tokens;
  int ignore_eos;
  uint32_t top_logprobs;
  uint64_t rng;
  dyn__kv_seq_t kv;
  void *import; /* dyn_engine_request_t.kv until admission */
  size_t import_len;
  void (*import_free)(void *, void *); /* and its kv_free, kv_free_ud */
  void *import_free_ud;
  uint64_t ready_ns; /* with import: not admitted before (uv_hrtime) */
  dyn_engine_callbacks_t cb;
  void *ud;
};

DYN__SEQ_LIST_TYPE(seq_list_t, sim_seq_t);

struct sim {
  dyn_engine_t base; /* first: what the interface hands out */
  uv_timer_t timer;
  dyn_engine_options_t o;
  dyn__kv_cache_t kv;
  seq_list_t waiting, running;
  sim_seq_t **batch; /* the step in flight: max_num_seqs entries */
  size_t n_batch;
  sim_seq_t *dead; /* ended during a step, freed after it */
  int busy;               /* a step is in flight, ending at step_end */
  int kicked;             /* idle, timer armed to plan a step */
  int closing;
  uint64_t step_start, step_end; /* uv_hrtime() ns */
  uint64_t rng;
  dyn_engine_kv_events_fn sink;
  void *sink_ud;
  dyn_engine_metrics_t m; /* the cumulative counters */
  char layout[160];       /* dyn_engine_kv_layout */
};

/* ---- small helpers -------------------------------------------------------- */

DYN__SEQ_LIST_FUNCS(seq_list_t, sim_seq_t)

static void seq_free(sim_seq_t *s) {
  dyn__kv_seq_free(&s->kv);
  dyn__kv_import_release(s->import, s->import_free, s->import_free_ud);
  free(s->tokens);
  free(s);
}

DYN__SEQ_DEAD_FUNCS(sim_seq_t, seq_free)

static void forward_events(const dyn_kv_event_t *ev, size_t n, void *ud) {
  sim_t *e = ud;
  if (e->sink) e->sink(ev, n, e->sink_ud);
}

/* ---- options -------------------------------------------------------------- */

void dyn_engine_options_init(dyn_engine_options_t *o) {
  memset(o, 0, sizeof *o);
  o->block_size = 16;
  o->num_blocks = 1024;
  o->max_num_seqs = 64;
  o->max_num_batched_tokens = 2048;
  o->vocab_size = 32000;
  o->min_token_id = 3;
  o->eos_token_id = 2;
  o->eos_probability = 0.005;
  o->speedup = 1.0;
  o->prefill_base_us = 2000;
  o->prefill_per_token_us = 100;
  o->decode_base_us = 8000;
  o->decode_per_seq_us = 100;
  o->seed = 0;
  o->kv_hash_seed = DYN_KV_DEFAULT_SEED;
  o->kv_bytes_per_block = 32768;
  o->kv_import_us_per_block = 20;
}

static int bad_time(double t) { return !isfinite(t) || t < 0; }

/* Ids a generated token can take: [min_token_id, vocab_size) less EOS. */
static uint32_t token_range(const dyn_engine_options_t *o) {
  if (o->vocab_size <= o->min_token_id) return 0;
  uint32_t r = o->vocab_size - o->min_token_id;
  if (o->eos_token_id >= o->min_token_id && o->eos_token_id < o->vocab_size) r--;
  return r;
}

static const char *check_options(const dyn_engine_options_t *o) {
  if (!o->block_size) return "engine options: block_size must be at least 1";
  if (!o->num_blocks || o->num_blocks > INT32_MAX)
    return "engine options: num_blocks must be between 1 and 2^31-1";
  if (!o->max_num_seqs) return "engine options: max_num_seqs must be at least 1";
  if (!o->max_num_batched_tokens)
    return "engine options: max_num_batched_tokens must be at least 1";
  if (token_range(o) < 1)
    return "engine options: vocab_size leaves no token id above min_token_id besides EOS";
  if (!isfinite(o->speedup) || o->speedup <= 0)
    return "engine options: speedup must be a positive finite number";
  if (bad_time(o->prefill_base_us) || bad_time(o->prefill_per_token_us) ||
      bad_time(o->decode_base_us) || bad_time(o->decode_per_seq_us) ||
      bad_time(o->kv_import_us_per_block))
    return "engine options: step times must be finite and not negative";
  if (!(o->eos_probability >= 0 && o->eos_probability <= 1))
    return "engine options: eos_probability must be between 0 and 1";
  return NULL;
}

/* ---- ending sequences ----------------------------------------------------- */

/* Ends s: out of its list, KV references dropped, on_done; the memory goes
 * now, or after the step if the step in flight still points at it. */
static void finish(sim_seq_t *s, dyn_engine_finish_t reason) {
  sim_t *e = s->e;
  list_unlink(s->state == S_RUNNING ? &e->running : &e->waiting, s);
  s->state = S_DONE;
  dyn__kv_cache_release(&e->kv, &s->kv);
  if (s->cb.on_done) s->cb.on_done(&s->base, reason, s->ud);
  seq_dispose(&e->dead, s);
}

static void sim_cancel(dyn_engine_seq_t *seq) {
  sim_seq_t *s = (sim_seq_t *)seq;
  if (s->state == S_DONE) return;
  finish(s, DYN_ENGINE_CANCELLED);
}

/* Frees the running sequence's blocks and requeues it first in line; its
 * tokens so far (the computed part of a prompt cut off half way too) are
 * recomputed, often from the prefix cache, when it is admitted again. */
static void preempt(sim_t *e, sim_seq_t *s) {
  list_unlink(&e->running, s);
  dyn__kv_cache_release(&e->kv, &s->kv);
  s->n_computed = 0;
  s->decoding = 0;
  s->state = S_WAITING;
  list_push(&e->waiting, s, 1);
  e->m.preemptions++;
}

/* ---- planning a step ------------------------------------------------------ */

/* Blocks the running sequences need for this step's decode (none for
 * those still in their prompt: they hold its blocks already). */
static size_t decode_need(sim_t *e) {
  size_t need = 0;
  for (sim_seq_t *s = e->running.head; s; s = s->next) {
    size_t want = dyn__kv_blocks_for(&e->kv, s->n_tokens);
    if (want > s->kv.n_blocks) need += want - s->kv.n_blocks;
  }
  return need;
}

/* s computes n tokens in the step being planned. */
static void batch_add(sim_t *e, sim_seq_t *s, int kind, size_t n) {
  s->in_batch = kind;
  s->chunk = n;
  e->batch[e->n_batch++] = s;
}

/* Gives every decoding sequence its block and one token of the budget for
 * this step, preempting the newest running sequence (decoding or not)
 * while they do not all fit. 1 if anything was preempted. */
static int plan_decode(sim_t *e, size_t *n_decode, size_t *budget) {
  int preempted = 0;
  while (e->running.n && decode_need(e) > dyn__kv_cache_available(&e->kv)) {
    preempt(e, e->running.tail);
    preempted = 1;
  }
  for (sim_seq_t *s = e->running.head; s; s = s->next) {
    if (!s->decoding) continue;
    (void)dyn__kv_cache_grow(&e->kv, &s->kv, s->n_tokens); /* fits: checked */
    batch_add(e, s, B_DECODE, 1);
    (*n_decode)++;
    if (*budget) (*budget)--; /* decodes always run, over budget too */
  }
  return preempted;
}

/* The blocks of s's prompt that its imported KV (if any) makes computed,
 * given the cached ones; the import is used or dropped here, once. */
static size_t take_import(sim_t *e, sim_seq_t *s, size_t cached_blocks) {
  if (!s->import) return cached_blocks;
  size_t got = cached_blocks;
  dyn__kv_blob_hdr_t h;
  const char *why = NULL;
  size_t want = (s->n_tokens - 1) / e->o.block_size; /* the last token is computed */
  dyn_kv_hash_t *seq = want ? malloc(want * sizeof *seq) : NULL;
  dyn_kv_hash_t *local = want ? malloc(want * sizeof *local) : NULL;
  if (want && seq && local &&
      dyn__kv_blob_get(s->import, s->import_len, &h, &why) == DYN_OK) {
    dyn_kv_hash_blocks(s->tokens, want * e->o.block_size, e->o.block_size, e->o.kv_hash_seed,
                       local, seq, want);
    if (!dyn__kv_blob_fits(&h, e->o.block_size, seq, want, cached_blocks) &&
        s->import_len == DYN__KV_BLOB_HDR_SIZE + (size_t)h.n_blocks * (8 + e->o.kv_bytes_per_block)) {
      if (h.from_block + h.n_blocks > got) got = h.from_block + h.n_blocks;
      e->m.kv_imported_blocks += h.n_blocks;
    } else {
      e->m.kv_import_dropped++;
    }
  } else {
    e->m.kv_import_dropped++;
  }
  free(seq);
  free(local);
  dyn__kv_import_release(s->import, s->import_free, s->import_free_ud);
  s->import = NULL;
  return got;
}

/* Admits s (first in line): takes the blocks for its whole prompt,
 * referencing the cached prefix; the prefix and any imported blocks count
 * as computed, at most all but the last token, whose logits the step must
 * compute. DYN__KV_NOSPACE: it waits. */
static int admit(sim_t *e, sim_seq_t *s) {
  size_t bs = e->o.block_size, cached_blocks = 0;
  int rc = dyn__kv_cache_admit(&e->kv, &s->kv, s->tokens, s->n_tokens, &cached_blocks);
  if (rc) return rc;
  size_t computed = take_import(e, s, cached_blocks) * bs;
  size_t cached = cached_blocks * bs;
  if (!s->admitted) {
    s->admitted = 1;
    s->base.cached_tokens = cached < s->base.n_prompt ? cached : s->base.n_prompt;
    e->m.prompt_tokens += s->base.n_prompt;
    e->m.cached_prompt_tokens += s->base.cached_tokens;
  }
  s->n_computed = computed < s->n_tokens ? computed : s->n_tokens - 1;
  /* The imported blocks are computed: registered (STORED) now. */
  return dyn__kv_cache_commit(&e->kv, &s->kv, s->tokens, s->n_computed);
}

/* Prompt chunks while the budget lasts, first come first served: running
 * sequences part way through their prompt, then (unless the step had to
 * preempt, as vLLM) waiting ones admitted in order while a slot and the
 * blocks allow; those whose KV is still being copied in are passed over.
 * Returns the tokens to prefill. */
static size_t plan_prefill(sim_t *e, size_t *n_prefill, size_t budget, int admit_ok,
                           uint64_t start) {
  size_t total = 0;
  for (sim_seq_t *s = e->running.head; s && budget; s = s->next) {
    if (s->in_batch) continue;
    size_t left = s->n_tokens - s->n_computed, n = left < budget ? left : budget;
    batch_add(e, s, B_PREFILL, n);
    (*n_prefill)++;
    budget -= n;
    total += n;
  }
  sim_seq_t *next;
  for (sim_seq_t *s = e->waiting.head;
       admit_ok && s && budget && e->running.n < e->o.max_num_seqs; s = next) {
    next = s->next;
    if (s->ready_ns > start) continue; /* its KV is still being copied in */
    int rc = admit(e, s);
    if (rc == DYN__KV_NOSPACE) break;
    if (rc) {
      finish(s, DYN_ENGINE_ERROR);
      continue;
    }
    list_unlink(&e->waiting, s);
    list_push(&e->running, s, 0);
    s->state = S_RUNNING;
    size_t left = s->n_tokens - s->n_computed, n = left < budget ? left : budget;
    batch_add(e, s, B_PREFILL, n);
    (*n_prefill)++;
    budget -= n;
    total += n;
  }
  return total;
}

static void on_timer(uv_timer_t *t);

/* Plans the step starting at start (ns); busy says whether there is one. */
static void plan_step(sim_t *e, uint64_t start) {
  size_t n_decode = 0, n_prefill = 0, budget = e->o.max_num_batched_tokens;
  e->n_batch = 0;
  int preempted = plan_decode(e, &n_decode, &budget);
  size_t prefill_tokens = plan_prefill(e, &n_prefill, budget, !preempted, start);
  e->busy = e->n_batch > 0;
  if (!e->busy) {
    /* Idle with sequences whose KV is still coming in: plan again when the
     * first is ready. */
    uint64_t first = 0;
    for (sim_seq_t *s = e->waiting.head; s; s = s->next)
      if (s->ready_ns > start && (!first || s->ready_ns < first)) first = s->ready_ns;
    if (first && !e->closing) {
      e->kicked = 1;
      uint64_t now = uv_hrtime();
      uv_update_time(e->timer.loop);
      uv_timer_start(&e->timer, on_timer, first > now ? (first - now + 999999) / 1000000 : 0, 0);
    }
    return;
  }
  const dyn_engine_options_t *o = &e->o;
  double us = 0;
  if (n_prefill) us += o->prefill_base_us + o->prefill_per_token_us * (double)prefill_tokens;
  if (n_decode) us += o->decode_base_us + o->decode_per_seq_us * (double)n_decode;
  e->step_end = start + (uint64_t)(us * 1000.0 / o->speedup);
  e->step_start = start;
}

/* ---- delivering a step ---------------------------------------------------- */

static uint32_t next_token(sim_t *e, sim_seq_t *s, int *eos) {
  const dyn_engine_options_t *o = &e->o;
  /* Both draws always happen, so ignore_eos does not change the tokens. */
  double u = (double)(dyn__splitmix64(&s->rng) >> 11) * 0x1.0p-53;
  uint32_t t = o->min_token_id + (uint32_t)(dyn__splitmix64(&s->rng) % token_range(o));
  if (o->eos_token_id >= o->min_token_id && t >= o->eos_token_id) t++;
  *eos = !s->ignore_eos && u < o->eos_probability;
  return t;
}

/* The simulated model's log-probabilities: it is sure of what it says
 * (the token that came out is the most likely, with probability 0.3-0.7)
 * and spreads a little of the rest over other ids, each less likely than
 * the one before, so the probabilities shown never sum past 1 (at most
 * p * 1.35). Drawn from a copy of the sequence's state, so asking for them
 * does not change the tokens. */
static void sim_logprob(const sim_t *e, const sim_seq_t *s, uint32_t t, dyn_engine_logprob_t *lp) {
  uint64_t x = s->rng ^ ((uint64_t)t * 0x9e3779b97f4a7c15ull);
  double p = 0.3 + 0.4 * (double)(dyn__splitmix64(&x) >> 11) * 0x1.0p-53;
  lp->logprob = (float)log(p);
  lp->n_top = s->top_logprobs;
  for (uint32_t k = 0; k < lp->n_top; k++) {
    uint32_t id = t;
    if (k) {
      do {
        id = e->o.min_token_id + (uint32_t)(dyn__splitmix64(&x) % token_range(&e->o));
        for (uint32_t j = 0; j < k; j++)
          if (lp->top_ids[j] == id) id = t; /* taken: draw again */
      } while (id == t);
    }
    lp->top_ids[k] = id;
    lp->top_logprobs[k] = k ? (float)(log(p) - 0.5 - 1.0 * k) : lp->logprob;
  }
}

static void deliver_one(sim_t *e, sim_seq_t *s) {
  int eos;
  uint32_t t = next_token(e, s, &eos);
  if (eos) {
    finish(s, DYN_ENGINE_STOP);
    return;
  }
  if (s->base.logprobs) sim_logprob(e, s, t, &s->base.lp);
  s->tokens[s->n_tokens++] = t;
  s->base.n_generated++;
  e->m.generated_tokens++;
  if (s->cb.on_tokens) s->cb.on_tokens(&s->base, &t, 1, s->ud);
  if (s->state == S_RUNNING && s->base.n_generated >= s->max_tokens)
    finish(s, DYN_ENGINE_LENGTH);
}

/* The step's sequences leave the batch; those that ended during it (kept
 * alive because the batch still pointed at them) are freed now. */
static void end_batch(sim_t *e) {
  for (size_t i = 0; i < e->n_batch; i++) e->batch[i]->in_batch = B_NONE;
  e->n_batch = 0;
  seq_free_dead(&e->dead);
}

static void complete_step(sim_t *e) {
  e->m.steps++;
  dyn__engine_step_done(&e->base, (double)(e->step_end - e->step_start) / 1e9);
  /* KV first: the blocks this step filled are stored, and the step's
   * events (evictions from planning too) go out before its tokens, so a
   * router hears of a prefix no later than the client sees output. */
  for (size_t i = 0; i < e->n_batch; i++) {
    sim_seq_t *s = e->batch[i];
    if (s->state != S_RUNNING) continue;
    s->n_computed += s->chunk;
    if (dyn__kv_cache_commit(&e->kv, &s->kv, s->tokens, s->n_computed) == DYN_ENOMEM)
      finish(s, DYN_ENGINE_ERROR);
  }
  dyn__kv_cache_flush(&e->kv);
  /* A token for each sequence that has all its tokens computed: a decode,
   * or the chunk that completed a prompt. */
  for (size_t i = 0; i < e->n_batch && !e->closing; i++) {
    sim_seq_t *s = e->batch[i];
    if (s->state != S_RUNNING || s->n_computed != s->n_tokens) continue;
    s->decoding = 1;
    deliver_one(e, s);
  }
  end_batch(e);
}

/* Arms the timer for the step's end (ms granularity, rounded up). */
static void arm(sim_t *e) {
  if (!e->busy) return;
  uint64_t now = uv_hrtime();
  uint64_t ms = e->step_end > now ? (e->step_end - now + 999999) / 1000000 : 0;
  uv_update_time(e->timer.loop); /* the timer counts from the loop's clock */
  uv_timer_start(&e->timer, on_timer, ms, 0);
}

static void on_timer(uv_timer_t *t) {
  sim_t *e = t->data;
  uint64_t now = uv_hrtime();
  if (e->kicked) {
    e->kicked = 0;
    plan_step(e, now);
  }
  /* Catch up on every step that should have ended by now (bounded, so a
   * huge speedup cannot hold the loop). */
  for (int k = 0; e->busy && e->step_end <= now && k < 256; k++) {
    complete_step(e);
    plan_step(e, e->step_end);
  }
  arm(e);
}

/* ---- the engine interface (llm/engine/engine.h) -------------------------- */

static const dyn__engine_ops_t sim_ops;

int dyn_engine_create(uv_loop_t *loop, const dyn_engine_options_t *opts,
                      dyn_engine_t **out, const char **why) {
  dyn_engine_options_t defaults;
  if (!opts) {
    dyn_engine_options_init(&defaults);
    opts = &defaults;
  }
  if (!loop || !out) {
    if (why) *why = "engine: loop and out must not be NULL";
    return DYN_EINVAL;
  }
  const char *bad = check_options(opts);
  if (bad) {
    if (why) *why = bad;
    return DYN_EINVAL;
  }
  sim_t *e = calloc(1, sizeof *e);
  if (!e) return DYN_ENOMEM;
  e->base.ops = &sim_ops;
  e->o = *opts;
  e->batch = calloc(opts->max_num_seqs, sizeof *e->batch);
  int rc = e->batch ? dyn__kv_cache_init(&e->kv, opts->num_blocks, opts->block_size,
                                         opts->kv_hash_seed)
                    : DYN_ENOMEM;
  if (rc) {
    free(e->batch);
    free(e);
    return rc;
  }
  dyn__kv_cache_set_sink(&e->kv, forward_events, e);
  e->rng = opts->seed ^ 0x5eed5eed5eed5eedull;
  snprintf(e->layout, sizeof e->layout,
           "engine=sim;block_size=%u;kv_bytes_per_block=%u;kv_seed=%llu", opts->block_size,
           opts->kv_bytes_per_block, (unsigned long long)opts->kv_hash_seed);
  uv_timer_init(loop, &e->timer);
  e->timer.data = e;
  *out = &e->base;
  return DYN_OK;
}

static void on_closed(uv_handle_t *h) {
  sim_t *e = h->data;
  free(e->batch);
  free(e);
}

static void sim_destroy(dyn_engine_t *engine) {
  sim_t *e = (sim_t *)engine;
  if (e->closing) return;
  e->closing = 1;
  while (e->running.head) finish(e->running.head, DYN_ENGINE_CANCELLED);
  while (e->waiting.head) finish(e->waiting.head, DYN_ENGINE_CANCELLED);
  end_batch(e);
  dyn__kv_cache_free(&e->kv);
  uv_timer_stop(&e->timer);
  uv_close((uv_handle_t *)&e->timer, on_closed);
}

static void sim_set_kv_events(dyn_engine_t *engine, dyn_engine_kv_events_fn fn, void *ud) {
  sim_t *e = (sim_t *)engine;
  e->sink = fn;
  e->sink_ud = ud;
}

/* The token stream's seed: see dyn_engine_request_t. */
static uint64_t request_seed(sim_t *e, const dyn_engine_request_t *r) {
  if (r->temperature <= 0)
    return dyn_kv_hash_local(r->prompt, r->n_prompt, e->o.seed) ^ 0x67726565647925ull;
  if (r->has_seed) return r->seed;
  return dyn__splitmix64(&e->rng);
}

static const char *check_request(const sim_t *e, const dyn_engine_request_t *r,
                                 const dyn_engine_callbacks_t *cb) {
  if (!r || !cb) return "engine submit: request and callbacks must not be NULL";
  if (!r->prompt || !r->n_prompt) return "engine submit: the prompt is empty";
  if (!r->max_tokens) return "engine submit: max_tokens must be at least 1";
  if (!(r->temperature >= 0)) return "engine submit: temperature must not be negative";
  if (r->top_logprobs > DYN_ENGINE_MAX_TOP_LOGPROBS)
    return "engine submit: top_logprobs must be at most 20";
  /* Its last token's KV is never computed: n_prompt + max_tokens - 1. */
  size_t kv_tokens = r->n_prompt + r->max_tokens - 1;
  if (r->n_prompt > SIZE_MAX / 2 ||
      dyn__kv_blocks_for(&e->kv, kv_tokens) > e->o.num_blocks)
    return "engine submit: prompt plus max_tokens needs more KV blocks than the engine "
           "has (lower max_tokens or shorten the prompt)";
  return NULL;
}

static int sim_submit(dyn_engine_t *engine, const dyn_engine_request_t *req,
                      const dyn_engine_callbacks_t *cb, void *ud, dyn_engine_seq_t **out,
                      const char **why) {
  sim_t *e = (sim_t *)engine;
  if (e->closing) {
    if (why) *why = "engine submit: the engine is shutting down";
    return DYN_ECLOSED;
  }
  const char *bad = check_request(e, req, cb);
  if (bad) {
    if (why) *why = bad;
    return DYN_EINVAL;
  }
  sim_seq_t *s = calloc(1, sizeof *s);
  if (s) s->tokens = malloc((req->n_prompt + req->max_tokens) * sizeof *s->tokens);
  if (!s || !s->tokens) {
    free(s);
    return DYN_ENOMEM;
  }
  memcpy(s->tokens, req->prompt, req->n_prompt * sizeof *s->tokens);
  s->base.engine = engine;
  s->e = e;
  s->n_tokens = s->base.n_prompt = req->n_prompt;
  s->max_tokens = req->max_tokens;
  s->ignore_eos = req->ignore_eos;
  s->base.logprobs = req->logprobs;
  s->top_logprobs = req->top_logprobs;
  s->rng = request_seed(e, req);
  if (req->kv) {
    dyn__kv_blob_hdr_t h;
    const char *ignored;
    double us = dyn__kv_blob_get(req->kv, req->kv_len, &h, &ignored) == DYN_OK
                    ? e->o.kv_import_us_per_block * h.n_blocks / e->o.speedup : 0;
    s->import = req->kv;
    s->import_len = req->kv_len;
    s->import_free = req->kv_free;
    s->import_free_ud = req->kv_free_ud;
    s->ready_ns = uv_hrtime() + (uint64_t)(us * 1000.0);
  }
  s->cb = *cb;
  s->ud = ud;
  s->state = S_WAITING;
  list_push(&e->waiting, s, 0);
  e->m.requests++;
  if (!e->busy && !e->kicked) {
    e->kicked = 1;
    uv_timer_start(&e->timer, on_timer, 0, 0);
  }
  if (out) *out = &s->base;
  return DYN_OK;
}

static void sim_get_metrics(const dyn_engine_t *engine, dyn_engine_metrics_t *m) {
  const sim_t *e = (const sim_t *)engine;
  *m = e->m;
  m->active_slots = e->running.n;
  m->total_slots = e->o.max_num_seqs;
  m->waiting = e->waiting.n;
  m->kv_blocks_used = e->kv.n_used;
  m->kv_blocks_cached = e->kv.n_registered;
  m->kv_blocks_total = e->o.num_blocks;
  m->evictions = e->kv.evictions;
}

static const char *sim_kv_layout(const dyn_engine_t *engine) {
  return ((const sim_t *)engine)->layout;
}

static size_t sim_kv_cached_blocks(dyn_engine_t *engine, const uint32_t *tokens, size_t n) {
  sim_t *e = (sim_t *)engine;
  return tokens && n ? dyn__kv_cache_match(&e->kv, tokens, n) : 0;
}

/* The blocks' seq hashes, each followed by kv_bytes_per_block bytes that
 * stand for its tensors. */
static int sim_kv_export(dyn_engine_t *engine, const uint32_t *tokens, size_t n,
                         size_t from_block, void **data, size_t *len, size_t *n_blocks,
                         const char **why) {
  sim_t *e = (sim_t *)engine;
  size_t bs = e->o.block_size, held = dyn__kv_cache_match(&e->kv, tokens, n);
  size_t nb = held > from_block ? held - from_block : 0;
  size_t per = 8 + (size_t)e->o.kv_bytes_per_block;
  dyn_kv_hash_t *seq = malloc((held ? held : 1) * sizeof *seq);
  dyn_kv_hash_t *local = malloc((held ? held : 1) * sizeof *local);
  uint8_t *out = seq && local ? malloc(DYN__KV_BLOB_HDR_SIZE + nb * per) : NULL;
  if (!out) {
    free(seq);
    free(local);
    if (why) *why = "engine kv export: out of memory";
    return DYN_ENOMEM;
  }
  if (held) dyn_kv_hash_blocks(tokens, held * bs, bs, e->o.kv_hash_seed, local, seq, held);
  dyn__kv_blob_hdr_t h = {DYN__KV_BLOB_MAGIC, (uint32_t)bs, (uint32_t)from_block, (uint32_t)nb,
                          nb ? seq[held - 1] : 0};
  dyn__kv_blob_put(out, &h);
  uint8_t *p = out + DYN__KV_BLOB_HDR_SIZE;
  for (size_t i = 0; i < nb; i++, p += per) {
    memcpy(p, &seq[from_block + i], 8);
    memset(p + 8, (int)(seq[from_block + i] & 0xff), per - 8);
  }
  free(seq);
  free(local);
  *data = out;
  *len = DYN__KV_BLOB_HDR_SIZE + nb * per;
  *n_blocks = nb;
  return DYN_OK;
}

static int sim_reset_cache(dyn_engine_t *engine) {
  sim_t *e = (sim_t *)engine;
  int rc = dyn__kv_cache_reset(&e->kv);
  dyn__kv_cache_flush(&e->kv);
  return rc;
}

static const dyn__engine_ops_t sim_ops = {
    .name = "sim",
    .destroy = sim_destroy,
    .set_kv_events = sim_set_kv_events,
    .submit = sim_submit,
    .cancel = sim_cancel,
    .get_metrics = sim_get_metrics,
    .reset_cache = sim_reset_cache,
    .kv_layout = sim_kv_layout,
    .kv_cached_blocks = sim_kv_cached_blocks,
    .kv_export = sim_kv_export,
};
