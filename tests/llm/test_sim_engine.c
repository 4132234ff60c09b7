/* test_sim_engine.c - the simulated engine on a real libuv loop: exact
 * token counts and reproducible tokens, EOS, a cached prefix cutting time
 * to first token (and its KV events), continuous batching with a slot
 * limit, cancellation, decode steps slowing with the batch, requests that
 * wait for (or are preempted for) KV blocks, chunked prefill (a long
 * prompt over several steps while others decode, its blocks announced as
 * computed, a half-computed prompt matched, preempted, or imported), and
 * destroy; all through the engine interface, opened by name, which
 * refuses names it does not know.
 * Times are real
 * (uv_hrtime) with sped-up timing so the whole test takes well under 2 s. */
#include <math.h>

#include "harness.h"
#include "dynamo/llm/engine.h"

#define MAXTOK 1100

typedef struct rq {
  uint32_t toks[MAXTOK];
  size_t n;
  int done, reason;
  uint64_t t_submit, t_first, t_done; /* ns */
  uint64_t first_order, done_order;
  size_t cancel_at;        /* cancel itself after this many tokens (0: never) */
  struct rq *cancel_other; /* ... or cancel that one at its first token */
  int done_seen_in_cancel;
  size_t cached_at_done, generated_at_done;
  dyn_engine_seq_t *h;
  dyn_engine_t *e;
  dyn_engine_metrics_t m_first; /* engine metrics at its first token */
} rq_t;

static uint64_t g_order;

static void on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  rq_t *r = ud;
  if (!r->n) {
    r->t_first = uv_hrtime();
    r->first_order = ++g_order;
    dyn_engine_get_metrics(r->e, &r->m_first);
    if (r->cancel_other && r->cancel_other->h) dyn_engine_cancel(r->cancel_other->h);
  }
  for (size_t i = 0; i < n && r->n < MAXTOK; i++) r->toks[r->n++] = t[i];
  if (r->cancel_at && r->n == r->cancel_at) {
    dyn_engine_cancel(s);
    r->done_seen_in_cancel = r->done; /* on_done ran inside cancel */
  }
}

static void on_done(dyn_engine_seq_t *s, dyn_engine_finish_t reason, void *ud) {
  rq_t *r = ud;
  r->done++;
  r->reason = reason;
  r->t_done = uv_hrtime();
  r->done_order = ++g_order;
  r->cached_at_done = dyn_engine_seq_cached_tokens(s);
  r->generated_at_done = dyn_engine_seq_generated_tokens(s);
  r->h = NULL;
}

static const dyn_engine_callbacks_t cbs = {on_tokens, on_done};

static dyn_engine_t *engine(uv_loop_t *loop, const dyn_engine_options_t *o) {
  dyn_engine_t *e = NULL;
  const char *why = NULL;
  int rc = dyn_engine_open(loop, "sim", o, &e, &why);
  if (rc) fprintf(stderr, "dyn_engine_open: %s (%s)\n", dyn_strerror(rc), why ? why : "");
  return e;
}

static int submit(dyn_engine_t *e, rq_t *r, const uint32_t *prompt, size_t n,
                  uint32_t max_tokens, int ignore_eos, uint64_t seed) {
  memset(r, 0, sizeof *r);
  r->e = e;
  dyn_engine_request_t q = {prompt, n, max_tokens, ignore_eos, 1.0f, 1, seed, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  r->t_submit = uv_hrtime();
  const char *why = NULL;
  int rc = dyn_engine_submit(e, &q, &cbs, r, &r->h, &why);
  if (rc) fprintf(stderr, "submit: %s (%s)\n", dyn_strerror(rc), why ? why : "");
  return rc;
}

static void fill(uint32_t *t, size_t n, uint32_t base) {
  for (size_t i = 0; i < n; i++) t[i] = base + (uint32_t)(i % 20000);
}

/* Destroys e and lets the loop close its timer; the loop must then be
 * empty (nothing of the engine left behind). */
static void finish_engine(uv_loop_t *loop, dyn_engine_t *e) {
  dyn_engine_destroy(e);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(uv_loop_alive(loop), 0);
}

static double ms(uint64_t ns) { return (double)ns / 1e6; }

/* Logprobs: one entry per token during on_tokens, the token itself the
 * most likely of its step, alternatives distinct and less likely, the
 * probabilities shown summing to at most 1; asking for them changes no
 * token, and without them there are none. */
typedef struct lp_rq {
  uint32_t toks[64];
  dyn_engine_logprob_t lp[64];
  size_t n;
  int missing;
} lp_rq_t;

static void lp_on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  lp_rq_t *r = ud;
  const dyn_engine_logprob_t *lp = dyn_engine_seq_logprobs(s);
  for (size_t i = 0; i < n && r->n < 64; i++, r->n++) {
    r->toks[r->n] = t[i];
    if (lp) r->lp[r->n] = lp[i];
    else r->missing++;
  }
}
static void lp_on_done(dyn_engine_seq_t *s, dyn_engine_finish_t reason, void *ud) {}
static const dyn_engine_callbacks_t lp_cbs = {lp_on_tokens, lp_on_done};

static int g_steps;
static double g_step_seconds;
static void on_step(double seconds, void *ud) {
  g_steps++;
  g_step_seconds += seconds;
}

static void test_logprobs(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  dyn_engine_t *e = NULL;
  REQUIRE(dyn_engine_open(loop, "sim", &o, &e, NULL) == DYN_OK);
  dyn_engine_set_step_observer(e, on_step, NULL);
  uint32_t p[24];
  for (size_t i = 0; i < 24; i++) p[i] = 100 + (uint32_t)i;
  static lp_rq_t with, without;
  memset(&with, 0, sizeof with);
  memset(&without, 0, sizeof without);
  dyn_engine_request_t q = {p, 24, 30, 1, 0.0f, 1, 7, 0.0f, 0, 1, 5, NULL, 0, NULL, NULL};
  REQUIRE(dyn_engine_submit(e, &q, &lp_cbs, &with, NULL, NULL) == DYN_OK);
  dyn_engine_request_t q2 = {p, 24, 30, 1, 0.0f, 1, 7, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  REQUIRE(dyn_engine_submit(e, &q2, &lp_cbs, &without, NULL, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(with.n, 30);
  CHECK_EQ_INT(with.missing, 0);
  CHECK_EQ_INT(without.missing, 30);
  CHECK(!memcmp(with.toks, without.toks, sizeof(uint32_t) * 30));
  /* The step observer saw every step, each its modelled duration: one
   * prefill step, then decode steps of 8 ms + 0.1 ms per sequence, all
   * divided by the speedup. */
  dyn_engine_metrics_t mt;
  dyn_engine_get_metrics(e, &mt);
  CHECK_EQ_INT(g_steps, (int)mt.steps);
  CHECK_MSG(g_step_seconds > 29 * 8.1e-3 / 1000 && g_step_seconds < 31 * 10e-3 / 1000,
            "steps took %.6f s", g_step_seconds);
  int ok = 1;
  for (size_t i = 0; i < with.n; i++) {
    const dyn_engine_logprob_t *l = &with.lp[i];
    double sum = 0;
    if (l->n_top != 5 || l->top_ids[0] != with.toks[i] || l->top_logprobs[0] != l->logprob ||
        !(l->logprob < 0))
      ok = 0;
    for (uint32_t k = 0; k < l->n_top; k++) {
      sum += exp(l->top_logprobs[k]);
      if (k && (l->top_logprobs[k] >= l->top_logprobs[k - 1] || l->top_ids[k] == l->top_ids[0]))
        ok = 0;
      for (uint32_t j = 0; j < k; j++)
        if (l->top_ids[j] == l->top_ids[k]) ok = 0;
    }
    if (sum > 1.0) ok = 0;
  }
  CHECK_MSG(ok, "logprobs of the simulated engine break a rule");
  dyn_engine_request_t bad = {p, 24, 30, 1, 0.0f, 1, 7, 0.0f, 0, 1, 21, NULL, 0, NULL, NULL};
  const char *why = NULL;
  CHECK_STATUS(dyn_engine_submit(e, &bad, &lp_cbs, &with, NULL, &why), DYN_EINVAL);
  CHECK(why && strstr(why, "top_logprobs"));
  finish_engine(loop, e);
}

static void test_stream_and_seed(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t p[40];
  fill(p, 40, 1000);
  static rq_t a, b, c;
  REQUIRE(submit(e, &a, p, 40, 50, 1, 42) == DYN_OK);
  CHECK_EQ_INT(a.done, 0); /* nothing happens inside submit */
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.done, 1);
  CHECK_EQ_INT(a.reason, DYN_ENGINE_LENGTH);
  CHECK_EQ_INT(a.n, 50);
  CHECK_EQ_INT(a.generated_at_done, 50);
  int in_range = 1;
  for (size_t i = 0; i < a.n; i++)
    if (a.toks[i] < o.min_token_id || a.toks[i] >= o.vocab_size || a.toks[i] == o.eos_token_id)
      in_range = 0;
  CHECK(in_range);
  /* Same seed, same tokens (even with the prompt now cached); another seed
   * gives others. */
  REQUIRE(submit(e, &b, p, 40, 50, 1, 42) == DYN_OK);
  REQUIRE(submit(e, &c, p, 40, 50, 1, 43) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(b.n, 50);
  CHECK(!memcmp(a.toks, b.toks, sizeof(uint32_t) * 50));
  CHECK(memcmp(a.toks, c.toks, sizeof(uint32_t) * 50) != 0);
  CHECK_EQ_INT(b.cached_at_done, 32); /* 2 full blocks of 16 */

  /* Greedy (temperature 0): the prompt alone decides the output. */
  dyn_engine_request_t g = {p, 40, 20, 1, 0.0f, 0, 0, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  REQUIRE(dyn_engine_submit(e, &g, &cbs, &a, NULL, NULL) == DYN_OK);
  memset(&a, 0, sizeof a);
  a.e = e;
  uv_run(loop, UV_RUN_DEFAULT);
  memset(&b, 0, sizeof b);
  b.e = e;
  REQUIRE(dyn_engine_submit(e, &g, &cbs, &b, NULL, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.n, 20);
  CHECK(!memcmp(a.toks, b.toks, sizeof(uint32_t) * 20));

  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.requests, 5);
  CHECK_EQ_INT(m.generated_tokens, 190);
  CHECK_EQ_INT(m.prompt_tokens, 200);
  CHECK_EQ_INT(m.cached_prompt_tokens, 4 * 32);
  CHECK_EQ_INT(m.active_slots, 0);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  CHECK(m.kv_blocks_cached >= 2);
  finish_engine(loop, e);
}

static void test_eos(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  o.eos_probability = 0.2;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t p[8];
  fill(p, 8, 50);
  static rq_t a;
  REQUIRE(submit(e, &a, p, 8, 1000, 0, 7) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.done, 1);
  CHECK_EQ_INT(a.reason, DYN_ENGINE_STOP);
  CHECK(a.n < 1000); /* p(no EOS in 1000 steps) = 0.8^1000 */
  int no_eos = 1;
  for (size_t i = 0; i < a.n; i++)
    if (a.toks[i] == o.eos_token_id) no_eos = 0;
  CHECK(no_eos);
  finish_engine(loop, e);
}

/* ---- prefix caching: TTFT and KV events ------------------------------- */

typedef struct evlog {
  size_t stored_blocks, removed, cleared, batches;
  dyn_kv_hash_t seq[256];
  int first_has_parent;
  uint64_t last_id;
  int ids_increase;
} evlog_t;

static void on_kv(const dyn_kv_event_t *ev, size_t n, void *ud) {
  evlog_t *l = ud;
  l->batches++;
  for (size_t i = 0; i < n; i++) {
    if (ev[i].event_id <= l->last_id) l->ids_increase = 0;
    l->last_id = ev[i].event_id;
    if (ev[i].kind == DYN_KV_STORED) {
      if (!l->stored_blocks) l->first_has_parent = ev[i].has_parent;
      for (size_t j = 0; j < ev[i].n_blocks; j++)
        if (l->stored_blocks < 256) l->seq[l->stored_blocks++] = ev[i].blocks[j].seq_hash;
    } else if (ev[i].kind == DYN_KV_REMOVED) {
      l->removed += ev[i].n_removed;
    } else {
      l->cleared++;
    }
  }
}

static void test_ttft_prefix(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 4; /* first prefill: (2 + 0.1 * 2048) / 4 = 51.7 ms, then ~0.5 */
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  static evlog_t log;
  memset(&log, 0, sizeof log);
  log.ids_increase = 1;
  dyn_engine_set_kv_events(e, on_kv, &log);
  static uint32_t p[2048];
  fill(p, 2048, 3000);
  static rq_t a, b;
  REQUIRE(submit(e, &a, p, 2048, 1, 1, 1) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  REQUIRE(submit(e, &b, p, 2048, 1, 1, 1) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  double t1 = ms(a.t_first - a.t_submit), t2 = ms(b.t_first - b.t_submit);
  printf("TTFT 2048-token prompt: uncached %.2f ms, cached %.2f ms (speedup 4)\n", t1, t2);
  CHECK_MSG(t1 >= 51.0, "uncached TTFT %.2f ms, the model says 51.7", t1);
  CHECK_MSG(t2 * 3 < t1, "cached TTFT %.2f ms is not clearly below uncached %.2f ms", t2, t1);
  CHECK_EQ_INT(a.cached_at_done, 0);
  CHECK_EQ_INT(b.cached_at_done, 2048);

  /* The prefill stored all 128 blocks, as one chain from the root, named
   * exactly as the router's hashing names them. */
  static dyn_kv_hash_t want[128];
  CHECK_EQ_INT(dyn_kv_hash_blocks(p, 2048, 16, DYN_KV_DEFAULT_SEED, NULL, want, 128), 128);
  CHECK_EQ_INT(log.stored_blocks, 128);
  CHECK_EQ_INT(log.first_has_parent, 0);
  CHECK(!memcmp(log.seq, want, sizeof want));
  CHECK(log.ids_increase);
  CHECK_EQ_INT(log.removed, 0);

  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.kv_blocks_cached, 128);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  CHECK_EQ_INT(m.cached_prompt_tokens, 2048);
  CHECK_EQ_INT(dyn_engine_reset_cache(e), DYN_OK);
  CHECK_EQ_INT(log.cleared, 1);
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.kv_blocks_cached, 0);
  finish_engine(loop, e);
}

/* Imported KV goes back through the request's kv_free, once, whether it
 * was installed, dropped (another prompt's), or still waiting when the
 * engine was destroyed. */
typedef struct given {
  void *ptr[4];
  int n;
} given_t;

static void give_back(void *kv, void *ud) {
  given_t *g = ud;
  if (g->n < 4) g->ptr[g->n] = kv;
  g->n++;
}

static void test_kv_import_given_back(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  o.kv_bytes_per_block = 64;
  dyn_engine_t *src = engine(loop, &o), *dst = engine(loop, &o);
  REQUIRE(src && dst);
  /* The decode side's prompt is one token longer: the first token. */
  static uint32_t p[161], other[161];
  fill(p, 161, 7000);
  fill(other, 161, 9000);
  static rq_t a, b;
  REQUIRE(submit(src, &a, p, 160, 1, 1, 1) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  void *kv[3] = {NULL, NULL, NULL};
  size_t len = 0, blocks = 0;
  const char *why = NULL;
  for (int i = 0; i < 3; i++)
    REQUIRE(dyn_engine_kv_export(src, p, 160, 0, &kv[i], &len, &blocks, &why) == DYN_OK);
  CHECK_EQ_INT(blocks, 10);
  static given_t g;
  memset(&g, 0, sizeof g);
  dyn_engine_request_t q = {p, 161, 2, 1, 1.0f, 1, 1, 0.0f, 0, 0, 0, kv[0], len, give_back, &g};
  memset(&b, 0, sizeof b);
  b.e = dst;
  REQUIRE(dyn_engine_submit(dst, &q, &cbs, &b, &b.h, &why) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(dst, &m);
  CHECK_EQ_INT(m.kv_imported_blocks, 10);
  CHECK_EQ_INT(g.n, 1);
  CHECK(g.ptr[0] == kv[0]);
  dyn_engine_request_t q2 = {other, 161, 2, 1, 1.0f, 1, 1, 0.0f, 0, 0, 0, kv[1], len, give_back, &g};
  REQUIRE(dyn_engine_submit(dst, &q2, &cbs, &b, &b.h, &why) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  dyn_engine_get_metrics(dst, &m);
  CHECK_EQ_INT(m.kv_import_dropped, 1);
  CHECK_EQ_INT(g.n, 2);
  CHECK(g.ptr[1] == kv[1]);
  dyn_engine_request_t q3 = {p, 161, 2, 1, 1.0f, 1, 1, 0.0f, 0, 0, 0, kv[2], len, give_back, &g};
  REQUIRE(dyn_engine_submit(dst, &q3, &cbs, &b, &b.h, &why) == DYN_OK);
  finish_engine(loop, dst); /* before admission: the import still waits */
  CHECK_EQ_INT(g.n, 3);
  CHECK(g.ptr[2] == kv[2]);
  for (int i = 0; i < 3; i++) free(kv[i]);
  finish_engine(loop, src);
}

/* ---- batching ----------------------------------------------------------- */

static void test_slots(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 100;
  o.max_num_seqs = 2;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t p[3][20];
  static rq_t r[3];
  g_order = 0;
  for (int i = 0; i < 3; i++) {
    fill(p[i], 20, 100 * (uint32_t)(i + 1));
    REQUIRE(submit(e, &r[i], p[i], 20, 5, 1, (uint64_t)i) == DYN_OK);
  }
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.waiting, 3);
  uv_run(loop, UV_RUN_DEFAULT);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_INT(r[i].n, 5);
    CHECK_EQ_INT(r[i].reason, DYN_ENGINE_LENGTH);
  }
  /* The first two ran together, the third waited for a slot. */
  CHECK_EQ_INT(r[0].m_first.active_slots, 2);
  CHECK_EQ_INT(r[0].m_first.total_slots, 2);
  CHECK_EQ_INT(r[0].m_first.waiting, 1);
  CHECK(r[1].first_order < r[0].done_order);
  CHECK(r[2].first_order > r[0].done_order);
  CHECK(r[2].first_order > r[1].done_order);
  CHECK_EQ_INT(r[2].m_first.active_slots, 1);
  finish_engine(loop, e);
}

static void test_cancel(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 100;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  static uint32_t p[100];
  fill(p, 100, 700);
  static rq_t a, b, c, d;
  REQUIRE(submit(e, &a, p, 100, 1000, 1, 1) == DYN_OK);
  a.cancel_at = 5;
  /* b is cancelled by c's first token, from inside c's callback. */
  REQUIRE(submit(e, &b, p + 50, 50, 1000, 1, 2) == DYN_OK);
  REQUIRE(submit(e, &c, p + 10, 30, 3, 1, 3) == DYN_OK);
  c.cancel_other = &b;
  /* d is cancelled while it waits, before any step. */
  REQUIRE(submit(e, &d, p, 10, 10, 1, 4) == DYN_OK);
  dyn_engine_cancel(d.h);
  CHECK_EQ_INT(d.done, 1);
  CHECK_EQ_INT(d.reason, DYN_ENGINE_CANCELLED);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.n, 5);
  CHECK_EQ_INT(a.done, 1);
  CHECK_EQ_INT(a.reason, DYN_ENGINE_CANCELLED);
  CHECK_EQ_INT(a.done_seen_in_cancel, 1);
  CHECK_EQ_INT(b.done, 1);
  CHECK_EQ_INT(b.reason, DYN_ENGINE_CANCELLED);
  CHECK(b.n <= 1); /* admitted with c: at most its first token came first */
  CHECK_EQ_INT(c.n, 3);
  CHECK_EQ_INT(c.reason, DYN_ENGINE_LENGTH);
  CHECK_EQ_INT(d.n, 0);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  CHECK_EQ_INT(m.active_slots, 0);
  CHECK_EQ_INT(m.waiting, 0);
  CHECK(m.kv_blocks_cached >= 6); /* a's 100-token prompt stays cached */
  finish_engine(loop, e);
}

/* Mean time between tokens of a request, after its first. */
static double itl_ms(const rq_t *r) {
  return ms(r->t_done - r->t_first) / (double)(r->n - 1);
}

static void test_decode_scaling(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.prefill_base_us = o.prefill_per_token_us = 0;
  o.decode_base_us = 1000;
  o.decode_per_seq_us = 2000; /* 3 ms alone, 17 ms with 8 */
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t p[8][16];
  static rq_t r[8];
  fill(p[0], 16, 10);
  REQUIRE(submit(e, &r[0], p[0], 16, 11, 1, 0) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  double one = itl_ms(&r[0]);
  for (int i = 0; i < 8; i++) {
    fill(p[i], 16, 100 * (uint32_t)(i + 1));
    REQUIRE(submit(e, &r[i], p[i], 16, 11, 1, (uint64_t)i) == DYN_OK);
  }
  uv_run(loop, UV_RUN_DEFAULT);
  double eight = itl_ms(&r[0]);
  printf("decode step: %.2f ms with 1 sequence, %.2f ms with 8 (model: 3, 17)\n", one, eight);
  CHECK_MSG(one >= 2.9, "a step with one sequence took %.2f ms, the model says 3", one);
  /* Lower bounds hold on any machine (steps never end early); the ratio
   * leaves room for a loaded one (the model says 5.7). */
  CHECK_MSG(eight >= 16.5, "a step with 8 sequences took %.2f ms, the model says 17", eight);
  CHECK_MSG(eight > 2 * one, "8 sequences: %.2f ms per step vs %.2f ms for 1", eight, one);
  finish_engine(loop, e);
}

/* ---- KV blocks run out ---------------------------------------------------- */

static void test_blocks_run_out(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  o.block_size = 4;
  o.num_blocks = 8; /* 32 tokens */
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t pa[20], pb[20];
  fill(pa, 20, 100);
  fill(pb, 20, 200);

  /* Could never fit: refused at submit, with a reason. */
  dyn_engine_request_t big = {pa, 20, 14, 1, 1.0f, 0, 0, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL}; /* 33 tokens of KV */
  const char *why = NULL;
  static rq_t x;
  CHECK_STATUS(dyn_engine_submit(e, &big, &cbs, &x, NULL, &why), DYN_EINVAL);
  CHECK(why && strstr(why, "KV blocks"));
  big.max_tokens = 13; /* 32: just fits */
  CHECK_STATUS(dyn_engine_submit(e, &big, &cbs, &x, NULL, NULL), DYN_OK);
  x.e = e;
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(x.n, 13);

  /* a holds 5 of 8 blocks for its prompt: b (5 more) waits until a ends. */
  static rq_t a, b;
  g_order = 0;
  REQUIRE(submit(e, &a, pa, 20, 8, 1, 1) == DYN_OK);
  REQUIRE(submit(e, &b, pb, 20, 8, 1, 2) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.n, 8);
  CHECK_EQ_INT(b.n, 8);
  CHECK_EQ_INT(a.m_first.waiting, 1);
  CHECK(b.first_order > a.done_order);

  /* Two that both start (2 blocks each) but cannot both finish (7 each):
   * the newer is preempted, recomputed later, and its tokens do not change. */
  static rq_t solo, c, d;
  uint32_t pc[8], pd[8];
  fill(pc, 8, 300);
  fill(pd, 8, 400);
  REQUIRE(submit(e, &solo, pd, 8, 20, 1, 9) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  dyn_engine_metrics_t m0, m;
  dyn_engine_get_metrics(e, &m0);
  REQUIRE(submit(e, &c, pc, 8, 20, 1, 8) == DYN_OK);
  REQUIRE(submit(e, &d, pd, 8, 20, 1, 9) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(c.n, 20);
  CHECK_EQ_INT(d.n, 20);
  CHECK(m.preemptions > m0.preemptions);
  CHECK(!memcmp(solo.toks, d.toks, sizeof(uint32_t) * 20));
  CHECK(m.evictions > 0);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  finish_engine(loop, e);
}

static void test_destroy_and_options(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 0;
  dyn_engine_t *e = NULL;
  const char *why = NULL;
  CHECK_STATUS(dyn_engine_create(loop, &o, &e, &why), DYN_EINVAL);
  CHECK(why && strstr(why, "speedup"));
  dyn_engine_options_init(&o);
  o.vocab_size = 4; /* id 3 alone, and it is EOS: nothing to generate */
  o.min_token_id = 3;
  o.eos_token_id = 3;
  CHECK_STATUS(dyn_engine_create(loop, &o, &e, &why), DYN_EINVAL);

  dyn_engine_options_init(&o);
  o.speedup = 100;
  e = engine(loop, &o);
  REQUIRE(e);
  uint32_t p[16];
  fill(p, 16, 5);
  static rq_t a, b;
  REQUIRE(submit(e, &a, p, 16, 1000, 1, 1) == DYN_OK);
  REQUIRE(submit(e, &b, p, 16, 1000, 1, 2) == DYN_OK);
  dyn_engine_request_t empty = {p, 0, 10, 1, 1.0f, 0, 0, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  CHECK_STATUS(dyn_engine_submit(e, &empty, &cbs, &a, NULL, &why), DYN_EINVAL);
  /* Run until both stream, then destroy mid-stream. */
  for (int i = 0; i < 1000 && (a.n < 3 || b.n < 3); i++) uv_run(loop, UV_RUN_ONCE);
  CHECK(a.n >= 3 && b.n >= 3);
  dyn_engine_destroy(e);
  CHECK_EQ_INT(a.done, 1);
  CHECK_EQ_INT(a.reason, DYN_ENGINE_CANCELLED);
  CHECK_EQ_INT(b.reason, DYN_ENGINE_CANCELLED);
  size_t na = a.n;
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.n, na);
  CHECK_EQ_INT(uv_loop_alive(loop), 0);
}

/* dyn_engine_open: "sim" and NULL give the simulated engine; an unknown
 * name is refused with a message naming it and the known engines
 * (tests/llm/test_llama_engine.c opens "llama.cpp" with a model). */
static void test_open_by_name(uv_loop_t *loop) {
  dyn_engine_t *e = NULL;
  const char *why = NULL;
  CHECK_STATUS(dyn_engine_open(loop, NULL, NULL, &e, &why), DYN_OK);
  REQUIRE(e);
  CHECK_EQ_STR(dyn_engine_name(e), "sim");
  finish_engine(loop, e);
  e = NULL;
  CHECK_STATUS(dyn_engine_open(loop, "vllm", NULL, &e, &why), DYN_EINVAL);
  CHECK(e == NULL);
  CHECK_MSG(why && strstr(why, "unknown engine \"vllm\"") && strstr(why, "sim") &&
                strstr(why, "llama.cpp"),
            "%s", why ? why : "(no message)");
  /* llama.cpp is known: without a model (or in a build without llama.cpp)
   * it says what it needs rather than calling the name unknown. */
  CHECK_STATUS(dyn_engine_open(loop, "llama.cpp", NULL, &e, &why), DYN_EINVAL);
  CHECK(e == NULL);
  CHECK_MSG(why && !strstr(why, "unknown") && (strstr(why, "model") || strstr(why, "deps.sh")),
            "%s", why ? why : "(no message)");
  CHECK_STATUS(dyn_engine_open(loop, "", NULL, &e, &why), DYN_EINVAL);
  CHECK_MSG(why && strstr(why, "unknown engine \"\""), "%s", why ? why : "(no message)");
  /* The engine's own checks come through. */
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = -1;
  CHECK_STATUS(dyn_engine_open(loop, "sim", &o, &e, &why), DYN_EINVAL);
  CHECK(why && strstr(why, "speedup"));
  CHECK(e == NULL);
}

/* ---- chunked prefill ------------------------------------------------------ */

/* Per step (1-based): its modelled seconds, and how many blocks of the
 * watched prompt had been announced STORED by its end. */
typedef struct steplog {
  int n;
  double sec[128];
  size_t stored[128];
  const dyn_kv_hash_t *want; /* the watched prompt's seq hashes */
  size_t n_want, n_stored, stored_twice, foreign;
  int step_of_token[MAXTOK]; /* the step each token of rq `watch` came in */
  rq_t *watch;
} steplog_t;

static void log_step(double seconds, void *ud) {
  steplog_t *l = ud;
  l->n++;
  if (l->n < 128) {
    l->sec[l->n] = seconds;
    l->stored[l->n] = l->n_stored;
  }
}

static void log_kv(const dyn_kv_event_t *ev, size_t n, void *ud) {
  steplog_t *l = ud;
  for (size_t i = 0; i < n; i++) {
    for (size_t j = 0; ev[i].kind == DYN_KV_STORED && j < ev[i].n_blocks; j++) {
      size_t k = 0;
      while (k < l->n_want && l->want[k] != ev[i].blocks[j].seq_hash) k++;
      if (k == l->n_want) l->foreign++;
      else if (k < l->n_stored) l->stored_twice++;
      else if (k == l->n_stored) l->n_stored++;
      else l->foreign++; /* out of order: counted as wrong */
    }
  }
  if (l->n < 128) l->stored[l->n] = l->n_stored;
}

static steplog_t g_log;
static rq_t g_d, g_long;
static uint32_t g_long_prompt[5000];

/* Starts g_log over, watching for STORED events of the n_blocks blocks of
 * bs tokens that begin tokens. */
static void log_expect(const uint32_t *tokens, size_t bs, size_t n_blocks) {
  static dyn_kv_hash_t want[312];
  REQUIRE(n_blocks <= 312);
  REQUIRE(dyn_kv_hash_blocks(tokens, n_blocks * bs, bs, DYN_KV_DEFAULT_SEED, NULL, want,
                             n_blocks) == n_blocks);
  memset(&g_log, 0, sizeof g_log);
  g_log.want = want;
  g_log.n_want = n_blocks;
}

/* A sped-up (1000x) engine prefilling budget tokens a step, its steps and
 * KV events logged in g_log. */
static dyn_engine_t *logged_engine(uv_loop_t *loop, uint32_t budget) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  o.max_num_batched_tokens = budget;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  dyn_engine_set_step_observer(e, log_step, &g_log);
  dyn_engine_set_kv_events(e, log_kv, &g_log);
  return e;
}

static void long_on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  on_tokens(s, t, n, ud);
  rq_t *r = ud;
  if (r->n == 1) r->first_order = (uint64_t)g_log.n; /* the step of its first token */
}
static const dyn_engine_callbacks_t long_cbs = {long_on_tokens, on_done};

/* The decoding stream d: logs the step of each token and, at its second,
 * submits the long prompt (so it joins a batch where d is decoding). */
static void d_on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  on_tokens(s, t, n, ud);
  rq_t *r = ud;
  if (r->n <= MAXTOK) g_log.step_of_token[r->n - 1] = g_log.n;
  if (r->n == 2) {
    dyn_engine_request_t q = {g_long_prompt, 5000, 2, 1, 1.0f, 1, 77, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
    memset(&g_long, 0, sizeof g_long);
    g_long.e = r->e;
    REQUIRE(dyn_engine_submit(r->e, &q, &long_cbs, &g_long, NULL, NULL) == DYN_OK);
  }
}
static const dyn_engine_callbacks_t d_cbs = {d_on_tokens, on_done};

/* A 5,000-token prompt joins a batch where a short request decodes: with
 * B tokens a step (the decode taking one), it is prefilled in
 * ceil(5000 / (B - 1)) steps, the decoding stream gets a token in every
 * one of them, each step lasts what the model says of the tokens it
 * computed, and the prompt's blocks are announced as their tokens are
 * computed, each once. An unchunked budget is the old behaviour: one
 * step. */
static void test_chunked_prefill(uv_loop_t *loop, uint32_t budget) {
  fill(g_long_prompt, 5000, 40000);
  log_expect(g_long_prompt, 16, 312);
  dyn_engine_t *e = logged_engine(loop, budget);
  uint32_t p[16];
  fill(p, 16, 9000);
  memset(&g_d, 0, sizeof g_d);
  g_d.e = e;
  dyn_engine_request_t q = {p, 16, 40, 1, 1.0f, 1, 5, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  REQUIRE(dyn_engine_submit(e, &q, &d_cbs, &g_d, &g_d.h, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT); /* d submits the long prompt at its 2nd token */
  CHECK_EQ_INT(g_d.n, 40);
  CHECK_EQ_INT(g_long.n, 2);
  CHECK_EQ_INT(g_long.reason, DYN_ENGINE_LENGTH);

  /* Step 1 prefills d, step 2 decodes it, the long prompt's chunks start
   * in step 3; each step has d's token, so the prompt takes `chunks`. */
  size_t per = budget - 1, chunks = (5000 + per - 1) / per;
  printf("5000-token prompt, %u tokens a step: first token after %d steps (%zu expected)\n",
         budget, (int)g_long.first_order - 2, chunks);
  CHECK_EQ_INT(g_long.first_order, 2 + chunks);
  int every_step = 1;
  for (int i = 0; i < 40; i++)
    if (g_log.step_of_token[i] != i + 1) every_step = 0;
  CHECK_MSG(every_step, "the decoding stream missed a step during the chunked prefill");
  CHECK_EQ_INT(g_log.n, 40);

  /* Step times (us / speedup 1000 = ns): prefill 2000 + 100 per prompt
   * token in the step, decode 8000 + 100 per sequence. */
  int times_ok = 1;
  for (int k = 1; k <= g_log.n; k++) {
    double us;
    if (k == 1) {
      us = 2000 + 100 * 16;
    } else if (k >= 3 && (size_t)k < 3 + chunks) {
      size_t done = per * (size_t)(k - 3), n = 5000 - done < per ? 5000 - done : per;
      us = 2000 + 100.0 * (double)n + 8000 + 100;
    } else {
      us = 8000 + 100 * ((size_t)k == 3 + chunks ? 2 : 1);
    }
    if (fabs(g_log.sec[k] - us * 1e-9) > 1e-12) {
      times_ok = 0;
      fprintf(stderr, "step %d took %.9f s, the model says %.9f\n", k, g_log.sec[k], us * 1e-9);
    }
  }
  CHECK(times_ok);

  /* STORED only for blocks whose tokens are all computed, each once, in
   * chain order, in the step that completed them. */
  int stored_ok = 1;
  for (size_t k = 3; k < 3 + chunks; k++) {
    size_t computed = per * (k - 2) < 5000 ? per * (k - 2) : 5000;
    if (g_log.stored[k] != computed / 16) {
      stored_ok = 0;
      fprintf(stderr, "after step %zu: %zu blocks stored, %zu computed\n", k, g_log.stored[k],
              computed / 16);
    }
  }
  CHECK(stored_ok);
  CHECK_EQ_INT(g_log.n_stored, 312);
  CHECK_EQ_INT(g_log.stored_twice, 0);

  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.steps, 40);
  CHECK_EQ_INT(m.prompt_tokens, 5016);
  CHECK_EQ_INT(m.generated_tokens, 42);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  finish_engine(loop, e);
}

/* Two requests for the same new 5,000-token prompt at once, 512 tokens a
 * step: the first takes the whole budget until its last chunk, where the
 * second is admitted in the leftover and matches only the blocks the
 * first has computed (4,608 tokens), computes the rest (a block computed
 * twice is announced once) and comes out one step later. */
static void test_chunked_prefix(uv_loop_t *loop) {
  fill(g_long_prompt, 5000, 41000);
  log_expect(g_long_prompt, 16, 312);
  dyn_engine_t *e = logged_engine(loop, 512);
  static rq_t a, b;
  dyn_engine_request_t q = {g_long_prompt, 5000, 1, 1, 1.0f, 1, 1, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  memset(&a, 0, sizeof a);
  memset(&b, 0, sizeof b);
  a.e = b.e = e;
  REQUIRE(dyn_engine_submit(e, &q, &long_cbs, &a, NULL, NULL) == DYN_OK);
  REQUIRE(dyn_engine_submit(e, &q, &long_cbs, &b, NULL, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(a.first_order, 10); /* 9 x 512 + 392 */
  CHECK_EQ_INT(b.first_order, 11); /* 120 in step 10, 272 in step 11 */
  CHECK_EQ_INT(a.cached_at_done, 0);
  CHECK_EQ_INT(b.cached_at_done, 4608);
  CHECK_MSG(fabs(g_log.sec[10] - 53200e-9) < 1e-12, "step 10 (two chunks) took %.9f s",
            g_log.sec[10]);
  CHECK_MSG(fabs(g_log.sec[11] - 29200e-9) < 1e-12, "step 11 took %.9f s", g_log.sec[11]);
  CHECK_EQ_INT(g_log.n_stored, 312);
  CHECK_EQ_INT(g_log.stored_twice, 0);
  CHECK_EQ_INT(g_log.foreign, 0);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.cached_prompt_tokens, 4608);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  CHECK_EQ_INT(m.kv_blocks_cached, 312);
  finish_engine(loop, e);
}

/* A prompt cut off half way by preemption: a running sequence needs the
 * blocks that a newer one, 2 tokens a step into its 40-token prompt,
 * holds; the newer one is preempted, keeps the blocks it had computed in
 * the prefix cache, and is recomputed from there once the first ends. Its
 * blocks are announced once each, its prompt counted once, and it comes
 * out with the tokens it would have had alone. */
static void test_chunked_preempt(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  o.block_size = 4;
  o.num_blocks = 16;
  o.max_num_batched_tokens = 2;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(e);
  uint32_t pa[8], pb[40];
  fill(pa, 8, 500);
  fill(pb, 40, 600);
  log_expect(pb, 4, 10);
  dyn_engine_set_kv_events(e, log_kv, &g_log);
  static rq_t solo, a, b;
  REQUIRE(submit(e, &solo, pb, 40, 2, 1, 3) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(dyn_engine_reset_cache(e), DYN_OK);
  log_expect(pb, 4, 10);
  dyn_engine_metrics_t m0, m;
  dyn_engine_get_metrics(e, &m0);
  REQUIRE(submit(e, &a, pa, 8, 30, 1, 2) == DYN_OK);
  REQUIRE(submit(e, &b, pb, 40, 2, 1, 3) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(a.n, 30);
  CHECK_EQ_INT(b.n, 2);
  CHECK_EQ_INT(m.preemptions - m0.preemptions, 1);
  CHECK(b.first_order > a.done_order); /* waited for a's blocks */
  CHECK(!memcmp(solo.toks, b.toks, sizeof(uint32_t) * 2));
  CHECK_EQ_INT(b.cached_at_done, 0); /* its first admission's cache */
  CHECK_EQ_INT(m.prompt_tokens - m0.prompt_tokens, 48);
  CHECK_EQ_INT(m.cached_prompt_tokens - m0.cached_prompt_tokens, 0);
  CHECK_EQ_INT(g_log.n_stored, 10);
  CHECK_EQ_INT(g_log.stored_twice, 0);
  CHECK_EQ_INT(m.kv_blocks_used, 0);
  finish_engine(loop, e);
}

/* Imported KV counts as computed: a prompt whose 62 full blocks come from
 * another engine prefills only its last 8 tokens, here in two chunks of 4
 * (2,000 + 400 us each), and its imported blocks are announced as its own. */
static dyn_engine_t *g_exporter;
static void *g_blob;
static size_t g_blob_len, g_blob_blocks;
static void export_on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  on_tokens(s, t, n, ud);
  REQUIRE(dyn_engine_kv_export(g_exporter, g_long_prompt, 1000, 0, &g_blob, &g_blob_len,
                               &g_blob_blocks, NULL) == DYN_OK);
}

static void test_chunked_import(uv_loop_t *loop) {
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.speedup = 1000;
  g_exporter = engine(loop, &o);
  o.max_num_batched_tokens = 4;
  dyn_engine_t *e = engine(loop, &o);
  REQUIRE(g_exporter && e);
  fill(g_long_prompt, 1000, 42000);
  static rq_t pre, dec;
  static const dyn_engine_callbacks_t export_cbs = {export_on_tokens, on_done};
  dyn_engine_request_t q = {g_long_prompt, 1000, 1, 1, 1.0f, 1, 1, 0.0f, 0, 0, 0, NULL, 0, NULL, NULL};
  memset(&pre, 0, sizeof pre);
  pre.e = g_exporter;
  REQUIRE(dyn_engine_submit(g_exporter, &q, &export_cbs, &pre, NULL, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  REQUIRE(g_blob);
  CHECK_EQ_INT(g_blob_blocks, 62);

  log_expect(g_long_prompt, 16, 62);
  dyn_engine_set_step_observer(e, log_step, &g_log);
  dyn_engine_set_kv_events(e, log_kv, &g_log);
  q.max_tokens = 3;
  q.kv = g_blob;
  q.kv_len = g_blob_len;
  memset(&dec, 0, sizeof dec);
  dec.e = e;
  REQUIRE(dyn_engine_submit(e, &q, &long_cbs, &dec, NULL, NULL) == DYN_OK);
  uv_run(loop, UV_RUN_DEFAULT);
  CHECK_EQ_INT(dec.n, 3);
  CHECK_EQ_INT(dec.first_order, 2);
  CHECK_MSG(fabs(g_log.sec[1] - 2400e-9) < 1e-12 && fabs(g_log.sec[2] - 2400e-9) < 1e-12,
            "prefill steps took %.9f, %.9f s", g_log.sec[1], g_log.sec[2]);
  CHECK_EQ_INT(g_log.stored[1], 62); /* the imported blocks, at once */
  CHECK_EQ_INT(g_log.stored_twice, 0);
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(e, &m);
  CHECK_EQ_INT(m.kv_imported_blocks, 62);
  CHECK_EQ_INT(m.kv_import_dropped, 0);
  CHECK_EQ_INT(m.cached_prompt_tokens, 0);
  finish_engine(loop, e);
  finish_engine(loop, g_exporter);
}

int main(void) {
  h_init("sim_engine");
  uint64_t t0 = uv_hrtime();
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  test_stream_and_seed(&loop);
  test_eos(&loop);
  test_ttft_prefix(&loop);
  test_slots(&loop);
  test_cancel(&loop);
  test_decode_scaling(&loop);
  test_blocks_run_out(&loop);
  test_destroy_and_options(&loop);
  test_open_by_name(&loop);
  test_logprobs(&loop);
  test_chunked_prefill(&loop, 512);
  test_chunked_prefill(&loop, 2048);
  test_chunked_prefill(&loop, 1u << 20);
  test_chunked_prefix(&loop);
  test_chunked_preempt(&loop);
  test_chunked_import(&loop);
  test_kv_import_given_back(&loop);
  CHECK_EQ_INT(uv_loop_close(&loop), 0);
  printf("test_sim_engine: %.0f ms\n", ms(uv_hrtime() - t0));
  TEST_END();
}
