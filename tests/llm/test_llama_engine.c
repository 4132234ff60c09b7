/* test_llama_engine.c - the llama.cpp engine on a real model (SmolLM2-135M,
 * which scripts/deps.sh fetches; $DYN_MODEL_FILE names another .gguf).
 *
 * A reference decoder in this file runs each prompt alone through the same
 * llama.cpp library, the plain way: one sequence, the whole prompt in one
 * llama_decode, then one token per decode, argmax of the logits. Against it:
 *  (a) greedy output of 5 prompts through the engine, one at a time;
 *  (b) 8 greedy requests at once (continuous batching) against the same
 *      requests one at a time;
 *  (c) a repeated long prompt takes >= 90% of its full blocks from the
 *      prefix cache (cached_tokens) and prefills only the rest; the STORED
 *      events carry the hashes of dyn_kv_hash_blocks, chained by parent;
 *  (e) a cancelled request's cells are freed (no running blocks left);
 *  (f) a prompt longer than the context is refused, naming the limit;
 *  (g) a missing or corrupt .gguf is refused, naming the file;
 * plus seeded sampling (same seed, same tokens) and EOG ending a request.
 * "Agree": equal token for token, or first differing where the reference's
 * two best log-probabilities are within 0.1 (batching and a cached prefix
 * change floating-point sums; such a near-tie may flip). Generations are
 * short so the test stays within seconds on two CPU cores. */
#define H_WATCHDOG_S 280
#include "harness.h"

#include <math.h>

#include <llama.h>

#include "dynamo/llm/engine.h"

#define MAXTOK 512
#define GEN 16 /* tokens generated per request */

static const char *g_model;

/* ---- the reference: one sequence, plain decode loop --------------------- */

typedef struct ref {
  uint32_t toks[GEN];
  double gap[GEN]; /* top-1 minus top-2 log-probability at each step */
  size_t n;
} ref_t;

static struct llama_model *g_ref_model;
static struct llama_context *g_ref_ctx;

static void ref_run(const uint32_t *prompt, size_t n_prompt, size_t n_gen, ref_t *out) {
  const struct llama_vocab *vocab = llama_model_get_vocab(g_ref_model);
  int32_t n_vocab = llama_vocab_n_tokens(vocab);
  llama_memory_clear(llama_get_memory(g_ref_ctx), true);
  llama_token buf[MAXTOK];
  for (size_t i = 0; i < n_prompt; i++) buf[i] = (llama_token)prompt[i];
  struct llama_batch b = llama_batch_get_one(buf, (int32_t)n_prompt);
  memset(out, 0, sizeof *out);
  for (size_t step = 0; step < n_gen; step++) {
    REQUIRE(llama_decode(g_ref_ctx, b) == 0);
    const float *lg = llama_get_logits_ith(g_ref_ctx, -1);
    int best = 0, second = -1;
    for (int t = 1; t < n_vocab; t++) {
      if (lg[t] > lg[best]) second = best, best = t;
      else if (second < 0 || lg[t] > lg[second]) second = t;
    }
    /* Log-probabilities share the softmax's normalizer: their gap is the
     * logits' gap. */
    out->gap[step] = (double)lg[best] - (double)lg[second];
    if (llama_vocab_is_eog(vocab, best)) break;
    out->toks[out->n++] = (uint32_t)best;
    buf[0] = best;
    b = llama_batch_get_one(buf, 1);
  }
}

/* Whether got agrees with ref (see the file comment); prints the first
 * difference either way it goes. */
static int agrees(const char *what, const uint32_t *got, size_t n_got, const ref_t *ref) {
  size_t i = 0;
  while (i < n_got && i < ref->n && got[i] == ref->toks[i]) i++;
  if (i == n_got && i == ref->n) return 1;
  /* One ended (EOG) where the other went on, or a token differs: either
   * way step i chose differently. */
  double gap = ref->gap[i < GEN ? i : GEN - 1];
  fprintf(stderr, "%s: first difference at token %zu (reference top-2 gap %.4f)\n", what, i, gap);
  return gap < 0.1;
}

/* ---- driving the engine -------------------------------------------------- */

typedef struct rq {
  uint32_t toks[MAXTOK];
  size_t n, cached;
  int done, reason;
  size_t cancel_at;
  dyn_engine_seq_t *h;
} rq_t;

static void on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  rq_t *r = ud;
  for (size_t i = 0; i < n && r->n < MAXTOK; i++) r->toks[r->n++] = t[i];
  if (r->cancel_at && r->n == r->cancel_at) dyn_engine_cancel(s);
}

static void on_done(dyn_engine_seq_t *s, dyn_engine_finish_t reason, void *ud) {
  rq_t *r = ud;
  r->done++;
  r->reason = reason;
  r->cached = dyn_engine_seq_cached_tokens(s);
  r->h = NULL;
}

static const dyn_engine_callbacks_t cbs = {on_tokens, on_done};

typedef struct events {
  size_t stored, removed, cleared;
  dyn_kv_hash_t last_parent;
  int chain_ok; /* every STORED's parent was stored before (or none) */
  dyn_kv_hash_t seen[4096];
  size_t n_seen;
} events_t;

static void on_events(const dyn_kv_event_t *ev, size_t n, void *ud) {
  events_t *k = ud;
  for (size_t i = 0; i < n; i++) {
    if (ev[i].kind == DYN_KV_STORED) {
      if (ev[i].has_parent) {
        int found = 0;
        for (size_t j = 0; j < k->n_seen; j++) found |= k->seen[j] == ev[i].parent_seq_hash;
        if (!found) k->chain_ok = 0;
      }
      for (size_t j = 0; j < ev[i].n_blocks && k->n_seen < 4096; j++)
        k->seen[k->n_seen++] = ev[i].blocks[j].seq_hash;
      k->stored += ev[i].n_blocks;
    } else if (ev[i].kind == DYN_KV_REMOVED) {
      k->removed += ev[i].n_removed;
    } else {
      k->cleared++;
    }
  }
}

/* The tests' engine: 16-token blocks, 16 sequences, 256 tokens a step,
 * two threads; the callers change what they test. */
static void test_options(dyn_engine_options_t *o, uint32_t num_blocks, uint32_t max_len) {
  dyn_engine_options_init(o);
  o->model = g_model;
  o->num_blocks = num_blocks;
  o->block_size = 16;
  o->max_num_seqs = 16;
  o->max_num_batched_tokens = 256;
  o->threads = 2;
  o->max_model_len = max_len;
}

static dyn_engine_t *open_with(uv_loop_t *loop, const dyn_engine_options_t *o) {
  dyn_engine_t *e = NULL;
  const char *why = NULL;
  int rc = dyn_engine_open(loop, "llama.cpp", o, &e, &why);
  if (rc) fprintf(stderr, "open: %s\n", why ? why : dyn_strerror(rc));
  REQUIRE(rc == DYN_OK);
  CHECK_EQ_STR(dyn_engine_name(e), "llama.cpp");
  return e;
}

static dyn_engine_t *open_engine(uv_loop_t *loop, uint32_t num_blocks, uint32_t max_len) {
  dyn_engine_options_t o;
  test_options(&o, num_blocks, max_len);
  return open_with(loop, &o);
}

static void submit_ex(dyn_engine_t *e, rq_t *r, const uint32_t *p, size_t n,
                      uint32_t max_tokens, float temperature, uint64_t seed, int ignore_eos) {
  memset(r, 0, sizeof *r);
  dyn_engine_request_t q = {.prompt = p, .n_prompt = n, .max_tokens = max_tokens,
                            .temperature = temperature, .has_seed = seed != 0, .seed = seed,
                            .ignore_eos = ignore_eos};
  const char *why = NULL;
  int rc = dyn_engine_submit(e, &q, &cbs, r, &r->h, &why);
  if (rc) fprintf(stderr, "submit: %s\n", why ? why : dyn_strerror(rc));
  REQUIRE(rc == DYN_OK);
}

static void submit(dyn_engine_t *e, rq_t *r, const uint32_t *p, size_t n, uint32_t max_tokens,
                   float temperature, uint64_t seed) {
  submit_ex(e, r, p, n, max_tokens, temperature, seed, 0);
}

static void run_until_done(uv_loop_t *loop, rq_t *rs, size_t n) {
  for (;;) {
    size_t done = 0;
    for (size_t i = 0; i < n; i++) done += rs[i].done > 0;
    if (done == n) break;
    uv_run(loop, UV_RUN_ONCE);
  }
}

/* Runs the loop until the engine has no running or waiting request and its
 * last step has come back. */
static void drain(uv_loop_t *loop, dyn_engine_t *e) {
  dyn_engine_metrics_t m;
  for (int i = 0; i < 100000; i++) {
    dyn_engine_get_metrics(e, &m);
    uint64_t steps = m.steps;
    if (!m.active_slots && !m.waiting) {
      uv_run(loop, UV_RUN_NOWAIT);
      dyn_engine_get_metrics(e, &m);
      if (m.steps == steps) return;
    }
    uv_run(loop, UV_RUN_ONCE);
  }
}

static size_t tokenize(const char *text, uint32_t *out, size_t cap) {
  const struct llama_vocab *vocab = llama_model_get_vocab(g_ref_model);
  llama_token buf[MAXTOK];
  int32_t n = llama_tokenize(vocab, text, (int32_t)strlen(text), buf, MAXTOK, true, true);
  REQUIRE(n > 0 && (size_t)n <= cap);
  for (int32_t i = 0; i < n; i++) out[i] = (uint32_t)buf[i];
  return (size_t)n;
}

static const char *prompts[8] = {
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "The quick brown fox",
    "def fibonacci(n):\n",
    "<|im_start|>user\nName three colors.<|im_end|>\n<|im_start|>assistant\n",
    "Once upon a time, in a small village,",
    "1, 2, 3, 4, 5,",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "Water boils at",
};

/* (a) and (b) */
static void test_greedy(uv_loop_t *loop) {
  static uint32_t p[8][MAXTOK];
  static size_t np[8];
  static ref_t ref[8];
  for (int i = 0; i < 8; i++) {
    np[i] = tokenize(prompts[i], p[i], MAXTOK);
    ref_run(p[i], np[i], GEN, &ref[i]);
  }
  dyn_engine_t *e = open_engine(loop, 256, 0);
  static rq_t one[8], all[8];
  /* (a) one at a time against the reference (5 prompts; the other 3 give
   * (b) its one-at-a-time answers). */
  for (int i = 0; i < 8; i++) {
    submit(e, &one[i], p[i], np[i], GEN, 0.0f, 0);
    run_until_done(loop, &one[i], 1);
    CHECK(one[i].reason == DYN_ENGINE_STOP || one[i].reason == DYN_ENGINE_LENGTH);
    if (i < 5) CHECK_MSG(agrees("(a) engine vs reference", one[i].toks, one[i].n, &ref[i]),
                         "prompt %d", i);
  }
  /* France's capital, greedily. */
  char piece[64] = "";
  const struct llama_vocab *vocab = llama_model_get_vocab(g_ref_model);
  char text[512] = "";
  for (size_t t = 0; t < one[0].n; t++) {
    int32_t k = llama_token_to_piece(vocab, (llama_token)one[0].toks[t], piece, 63, 0, false);
    if (k > 0 && strlen(text) + (size_t)k < sizeof text - 1) strncat(text, piece, (size_t)k);
  }
  CHECK_MSG(strstr(text, "Paris") != NULL, "answer: %s", text);
  fprintf(stderr, "France's capital, greedily: %s\n", text);
  drain(loop, e);
  /* (b) all 8 at once: the cache now holds their prompts, so the step
   * mixes prefixes copied from it, prefill and decodes. */
  for (int i = 0; i < 8; i++) submit(e, &all[i], p[i], np[i], GEN, 0.0f, 0);
  run_until_done(loop, all, 8);
  for (int i = 0; i < 8; i++) {
    int same = all[i].n == one[i].n && !memcmp(all[i].toks, one[i].toks, one[i].n * 4);
    CHECK_MSG(same || (agrees("(b) batched vs reference", all[i].toks, all[i].n, &ref[i]) &&
                       agrees("(b) one-at-a-time vs reference", one[i].toks, one[i].n, &ref[i])),
              "prompt %d", i);
  }
  drain(loop, e);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.active_slots, 0);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* (c) and the KV events; seeded sampling; EOG */
static void test_prefix_cache(uv_loop_t *loop) {
  dyn_engine_t *e = open_engine(loop, 256, 0);
  static events_t ev;
  memset(&ev, 0, sizeof ev);
  ev.chain_ok = 1;
  dyn_engine_set_kv_events(e, on_events, &ev);
  static uint32_t p[MAXTOK];
  size_t n = tokenize("<|im_start|>system\nYou are a careful assistant. Answer briefly, cite "
                      "nothing, and never invent facts. If a question is unclear, say so and "
                      "ask for the missing detail. Prefer plain words over jargon, short "
                      "sentences over long ones, and examples over abstractions. Keep lists "
                      "to three items or fewer. When you do not know, say you do not know. "
                      "Use the metric system, spell out abbreviations the first time, and "
                      "check arithmetic twice before you give a number to anyone."
                      "<|im_end|>\n<|im_start|>user\nWhy is the sky blue?<|im_end|>\n"
                      "<|im_start|>assistant\n",
                      p, MAXTOK);
  REQUIRE(n >= 96); /* several full blocks of 16 */
  static rq_t a, b;
  submit(e, &a, p, n, 4, 0.0f, 0);
  run_until_done(loop, &a, 1);
  CHECK_EQ_INT(a.cached, 0);
  dyn_engine_metrics_t m0, m1;
  dyn_engine_get_metrics(e, &m0);
  submit(e, &b, p, n, 4, 0.0f, 0);
  run_until_done(loop, &b, 1);
  dyn_engine_get_metrics(e, &m1);
  size_t full = n / 16 * 16;
  CHECK_MSG(b.cached * 10 >= full * 9, "cached %zu of %zu full-block tokens", b.cached, full);
  CHECK_EQ_INT(m1.cached_prompt_tokens - m0.cached_prompt_tokens, b.cached);
  CHECK(b.n == a.n && !memcmp(a.toks, b.toks, a.n * 4));
  /* The hashes a router computes for this prompt were all announced, each
   * chain's parent before it. */
  dyn_kv_hash_t seq[64];
  size_t nb = dyn_kv_hash_blocks(p, n, 16, DYN_KV_DEFAULT_SEED, NULL, seq, 64);
  size_t found = 0;
  for (size_t i = 0; i < nb; i++)
    for (size_t j = 0; j < ev.n_seen; j++)
      if (ev.seen[j] == seq[i]) {
        found++;
        break;
      }
  CHECK_EQ_INT(found, nb);
  CHECK(ev.chain_ok);
  /* Seeded sampling: the same seed, the same tokens. */
  static rq_t s1, s2;
  submit(e, &s1, p, n, 8, 0.9f, 1234);
  run_until_done(loop, &s1, 1);
  submit(e, &s2, p, n, 8, 0.9f, 1234);
  run_until_done(loop, &s2, 1);
  CHECK(s1.n == s2.n && !memcmp(s1.toks, s2.toks, s1.n * 4));
  /* EOG ends a request (STOP): ask for a one-word answer with room to spare. */
  static uint32_t q[MAXTOK];
  size_t nq = tokenize("<|im_start|>user\nSay only the word yes.<|im_end|>\n<|im_start|>assistant\n",
                       q, MAXTOK);
  static rq_t y;
  submit(e, &y, q, nq, 64, 0.0f, 0);
  run_until_done(loop, &y, 1);
  CHECK_MSG(y.reason == DYN_ENGINE_STOP, "reason %d after %zu tokens", y.reason, y.n);
  drain(loop, e);
  /* A reset announces CLEARED, and the prompt is computed again. */
  CHECK_STATUS(dyn_engine_reset_cache(e), DYN_OK);
  CHECK_EQ_INT(ev.cleared, 1);
  static rq_t c;
  submit(e, &c, p, n, 2, 0.0f, 0);
  run_until_done(loop, &c, 1);
  CHECK_EQ_INT(c.cached, 0);
  drain(loop, e);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* (e) cancellation frees the cells; preemption under a small cache */
static void test_cancel_and_pressure(uv_loop_t *loop) {
  dyn_engine_t *e = open_engine(loop, 256, 0);
  static uint32_t p[MAXTOK];
  size_t n = tokenize("Tell me a very long story about a dragon.", p, MAXTOK);
  static rq_t a;
  memset(&a, 0, sizeof a);
  submit_ex(e, &a, p, n, 400, 0.8f, 7, 1);
  a.cancel_at = 5;
  run_until_done(loop, &a, 1);
  CHECK_EQ_INT(a.reason, DYN_ENGINE_CANCELLED);
  CHECK_EQ_INT(a.n, 5);
  drain(loop, e);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.active_slots, 0);
  CHECK_EQ_INT(m.kv_blocks_used, 0); /* its cells are no running sequence's */
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);

  /* 12 blocks of 16 cells for 4 requests of ~60 tokens each: they cannot
   * all run at once; each still finishes with the answer it gives alone. */
  e = open_engine(loop, 12, 0);
  static rq_t alone[4], together[4];
  static uint32_t ps[4][MAXTOK];
  static size_t nps[4];
  for (int i = 0; i < 4; i++) {
    nps[i] = tokenize(prompts[4 + i], ps[i], MAXTOK);
    submit_ex(e, &alone[i], ps[i], nps[i], 40, 0.0f, 0, 1);
    run_until_done(loop, &alone[i], 1);
  }
  drain(loop, e);
  for (int i = 0; i < 4; i++) submit_ex(e, &together[i], ps[i], nps[i], 40, 0.0f, 0, 1);
  run_until_done(loop, together, 4);
  for (int i = 0; i < 4; i++) {
    CHECK_EQ_INT(together[i].reason, alone[i].reason);
    CHECK_EQ_INT(together[i].n, alone[i].n);
  }
  drain(loop, e);
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* (f) and (g) */
static void test_refusals(uv_loop_t *loop) {
  dyn_engine_t *e = open_engine(loop, 64, 100);
  static uint32_t p[200];
  for (int i = 0; i < 200; i++) p[i] = 1000 + (uint32_t)i;
  dyn_engine_request_t q = {.prompt = p, .n_prompt = 150, .max_tokens = 4};
  const char *why = NULL;
  static rq_t r;
  CHECK_STATUS(dyn_engine_submit(e, &q, &cbs, &r, NULL, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, "150") && strstr(why, "100"), "why: %s", why ? why : "(null)");
  /* Generation stops at the context: 90 prompt tokens + at most 10. */
  q.n_prompt = 90;
  q.max_tokens = 50;
  q.ignore_eos = 1;
  REQUIRE(dyn_engine_submit(e, &q, &cbs, &r, NULL, NULL) == DYN_OK);
  run_until_done(loop, &r, 1);
  CHECK_EQ_INT(r.reason, DYN_ENGINE_LENGTH);
  CHECK_EQ_INT(r.n, 10);
  drain(loop, e);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);

  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.model = "/nonexistent/model.gguf";
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", &o, &e, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, "/nonexistent/model.gguf"), "why: %s", why ? why : "(null)");
  char path[] = "/tmp/dyn_corrupt_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, "GGUF this is not a model at all", 31) == 31);
  close(fd);
  o.model = path;
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", &o, &e, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, path), "why: %s", why ? why : "(null)");
  unlink(path);
  o.model = NULL;
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", &o, &e, &why), DYN_EINVAL);
  /* KV cache types: a name llama-server would refuse, and a quantized V
   * cache without flash attention, each named. */
  o.model = g_model;
  o.cache_type_k = "q9_9";
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", &o, &e, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, "cache_type_k") && strstr(why, "q8_0"), "why: %s", why ? why : "(null)");
  o.cache_type_k = NULL;
  o.cache_type_v = "q8_0";
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", &o, &e, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, "flash_attn"), "why: %s", why ? why : "(null)");
}

/* Flash attention (the Worker's default) with the f16 cache: the same
 * greedy answers as the plain reference context, but where its top two
 * are a near-tie (llama.cpp's CPU kernel rounds the query to f16 and sums
 * V in f16). */
static void test_flash_attn_greedy(uv_loop_t *loop) {
  dyn_engine_options_t o;
  test_options(&o, 256, 0);
  o.flash_attn = 1;
  dyn_engine_t *e = open_with(loop, &o);
  static uint32_t p[5][MAXTOK];
  static ref_t ref[5];
  static rq_t r[5];
  for (int i = 0; i < 5; i++) {
    size_t n = tokenize(prompts[i], p[i], MAXTOK);
    ref_run(p[i], n, GEN, &ref[i]);
    submit(e, &r[i], p[i], n, GEN, 0.0f, 0);
    run_until_done(loop, &r[i], 1);
    CHECK_MSG(agrees("flash attention vs reference", r[i].toks, r[i].n, &ref[i]), "prompt %d",
              i);
  }
  drain(loop, e);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* A q8_0 KV cache with flash attention (llama-server -ctk q8_0 -ctv q8_0
 * -fa): the engine serves, its KV layout names both (so disaggregated
 * workers that differ refuse each other's KV), and greedy output still
 * answers the question. */
static void test_cache_types(uv_loop_t *loop) {
  dyn_engine_options_t o;
  test_options(&o, 64, 0);
  o.cache_type_k = "q8_0";
  o.cache_type_v = "q8_0";
  o.flash_attn = 1;
  dyn_engine_t *e = open_with(loop, &o);
  const char *layout = dyn_engine_kv_layout(e);
  CHECK_MSG(strstr(layout, "type_k=q8_0;type_v=q8_0;flash_attn=1"), "layout: %s", layout);
  static uint32_t p[MAXTOK];
  size_t n = tokenize(prompts[0], p, MAXTOK);
  static rq_t r;
  submit(e, &r, p, n, GEN, 0.0f, 0);
  run_until_done(loop, &r, 1);
  CHECK(r.reason == DYN_ENGINE_STOP || r.reason == DYN_ENGINE_LENGTH);
  char piece[64], text[512] = "";
  const struct llama_vocab *vocab = llama_model_get_vocab(g_ref_model);
  for (size_t t = 0; t < r.n; t++) {
    int32_t k = llama_token_to_piece(vocab, (llama_token)r.toks[t], piece, 63, 0, false);
    if (k > 0 && strlen(text) + (size_t)k < sizeof text - 1) strncat(text, piece, (size_t)k);
  }
  CHECK_MSG(strstr(text, "Paris") != NULL, "answer with a q8_0 cache: %s", text);
  drain(loop, e);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

/* Logprobs from the real model: asking for them changes no token; greedy
 * picks each step's most likely token, so it heads its own top list; the
 * list is ranked and its probabilities sum to at most 1; and the first
 * token's log-probability is the log-softmax of the reference's logits. */
typedef struct lp_rq {
  rq_t r;
  dyn_engine_logprob_t lp[MAXTOK];
  size_t n_lp, missing;
} lp_rq_t;

static void lp_on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  lp_rq_t *x = ud;
  const dyn_engine_logprob_t *lp = dyn_engine_seq_logprobs(s);
  for (size_t i = 0; i < n && x->n_lp < MAXTOK; i++) {
    if (lp) x->lp[x->n_lp++] = lp[i];
    else x->missing++;
  }
  on_tokens(s, t, n, &x->r);
}
static void lp_on_done(dyn_engine_seq_t *s, dyn_engine_finish_t reason, void *ud) {
  on_done(s, reason, &((lp_rq_t *)ud)->r);
}

static void test_logprobs(uv_loop_t *loop) {
  dyn_engine_t *e = open_engine(loop, 64, 0);
  uint32_t p[64];
  size_t n = tokenize(prompts[0], p, 64);
  static lp_rq_t with;
  static rq_t without;
  memset(&with, 0, sizeof with);
  static const dyn_engine_callbacks_t lp_cbs = {lp_on_tokens, lp_on_done};
  dyn_engine_request_t q = {.prompt = p, .n_prompt = n, .max_tokens = 12, .temperature = 0,
                            .logprobs = 1, .top_logprobs = 5};
  REQUIRE(dyn_engine_submit(e, &q, &lp_cbs, &with, &with.r.h, NULL) == DYN_OK);
  run_until_done(loop, &with.r, 1);
  submit(e, &without, p, n, 12, 0.0f, 0);
  run_until_done(loop, &without, 1);
  CHECK(with.r.n > 0 && with.r.n == without.n);
  CHECK(!memcmp(with.r.toks, without.toks, with.r.n * sizeof *with.r.toks));
  CHECK_EQ_INT(with.missing, 0);
  CHECK_EQ_INT(with.n_lp, with.r.n);
  int ok = 1;
  for (size_t i = 0; i < with.n_lp; i++) {
    const dyn_engine_logprob_t *l = &with.lp[i];
    double sum = 0;
    if (l->n_top != 5 || l->top_ids[0] != with.r.toks[i] || l->top_logprobs[0] != l->logprob ||
        l->logprob > 0)
      ok = 0;
    for (uint32_t k = 0; k < l->n_top; k++) {
      sum += exp(l->top_logprobs[k]);
      if (k && l->top_logprobs[k] > l->top_logprobs[k - 1]) ok = 0;
    }
    if (sum > 1.0001) ok = 0;
  }
  CHECK_MSG(ok, "the engine's logprobs break a rule");
  /* The reference's first step. */
  llama_memory_clear(llama_get_memory(g_ref_ctx), true);
  llama_token buf[64];
  for (size_t i = 0; i < n; i++) buf[i] = (llama_token)p[i];
  REQUIRE(llama_decode(g_ref_ctx, llama_batch_get_one(buf, (int32_t)n)) == 0);
  const float *lg = llama_get_logits_ith(g_ref_ctx, -1);
  int32_t nv = llama_vocab_n_tokens(llama_model_get_vocab(g_ref_model));
  double mx = lg[0], sum = 0;
  for (int32_t t = 1; t < nv; t++) mx = lg[t] > mx ? lg[t] : mx;
  for (int32_t t = 0; t < nv; t++) sum += exp(lg[t] - mx);
  double ref = lg[with.r.toks[0]] - mx - log(sum);
  CHECK_MSG(fabs(ref - with.lp[0].logprob) < 1e-2, "first token: engine %.5f, reference %.5f",
            with.lp[0].logprob, ref);
  drain(loop, e);
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
}

int main(void) {
  h_init("llama_engine");
  g_model = getenv("DYN_MODEL_FILE");
  REQUIRE(g_model && *g_model);
  fprintf(stderr, "model: %s\n", g_model);
  REQUIRE(access(g_model, R_OK) == 0); /* scripts/deps.sh fetches it */
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  /* The engine initializes the backend itself; the reference needs a model
   * first, so open (and close) one engine before it. */
  dyn_engine_t *e = open_engine(&loop, 16, 0);
  dyn_engine_destroy(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  struct llama_model_params mp = llama_model_default_params();
  mp.use_extra_bufts = false; /* as the engine: see llama_engine.c */
  g_ref_model = llama_model_load_from_file(g_model, mp);
  REQUIRE(g_ref_model);
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 1024;
  cp.n_batch = 512;
  cp.n_threads = cp.n_threads_batch = 2;
  g_ref_ctx = llama_init_from_model(g_ref_model, cp);
  REQUIRE(g_ref_ctx);
  uint64_t t0 = uv_hrtime();
  test_greedy(&loop);
  fprintf(stderr, "greedy: %.1f s\n", (double)(uv_hrtime() - t0) / 1e9);
  test_prefix_cache(&loop);
  fprintf(stderr, "prefix cache: %.1f s\n", (double)(uv_hrtime() - t0) / 1e9);
  test_cancel_and_pressure(&loop);
  fprintf(stderr, "cancel and pressure: %.1f s\n", (double)(uv_hrtime() - t0) / 1e9);
  test_refusals(&loop);
  test_cache_types(&loop);
  test_flash_attn_greedy(&loop);
  test_logprobs(&loop);
  fprintf(stderr, "took %.1f s\n", (double)(uv_hrtime() - t0) / 1e9);
  llama_free(g_ref_ctx);
  llama_model_free(g_ref_model);
  uv_loop_close(&loop);
  TEST_END();
}
