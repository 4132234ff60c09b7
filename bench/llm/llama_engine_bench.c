/* llama_engine_bench.c - the llama.cpp engine alone, in process, measured
 * the way llama.cpp's `llama-batched-bench` measures llama.cpp.
 *
 *   llama_engine_bench MODEL.gguf [-t THREADS] [-npp N] [-ntg N] [-npl B,B,...]
 *                      [-blocks N] [-batch N] [-fa]
 *
 * For each batch size B it submits B requests at once, each a prompt of
 * npp token ids and greedy generation with ignore_eos, and runs the loop
 * until all are done. The work is what batched-bench does for the same
 * -npp/-ntg/-npl: B*npp prompt tokens and B*ntg decoded tokens. Our
 * engine samples the first token from the prompt's last logits, so each
 * request asks for ntg + 1 tokens to decode ntg tokens after the prompt.
 * Prompts are distinct per request and per run (seeded random ids), and
 * the prefix cache is reset between runs, so nothing is served from the
 * cache: batched-bench has none either. A short request warms the engine
 * up first, as batched-bench's warmup decode does. -fa turns on flash
 * attention (the engine's flash_attn), as batched-bench's -fa.
 *
 * Prints, per B, a line bench/llm/llama.sh reads:
 *   RESULT name=engine pl=B pp=N tg=N t=S speed=TOK_PER_S t_pp=S speed_tg=TOK_PER_S
 * speed is (B*npp + B*ntg) / t, batched-bench's "S t/s". The engine runs
 * prompt chunks and decodes in the same steps, so there is no clean
 * prefill phase; t_pp is when the last request got its first token, and
 * speed_tg is B*ntg / (t - t_pp), comparable with batched-bench's S_TG
 * only roughly.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "bench.h"
#include "dynamo/llm/engine.h"
#include "dynamo/status.h"

#define MAX_PL 64

typedef struct req {
  uint32_t *prompt;
  size_t generated;
  int done;
  dyn_engine_finish_t reason;
  double t_first; /* us, 0 until the first token */
} req_t;

static void on_tokens(dyn_engine_seq_t *s, const uint32_t *t, size_t n, void *ud) {
  (void)s, (void)t;
  req_t *r = ud;
  if (!r->generated) r->t_first = now_us();
  r->generated += n;
}

static void on_done(dyn_engine_seq_t *s, dyn_engine_finish_t reason, void *ud) {
  (void)s;
  req_t *r = ud;
  r->done = 1;
  r->reason = reason;
}

static const dyn_engine_callbacks_t cbs = {on_tokens, on_done};

static uint64_t rng_next(uint64_t *x) { /* splitmix64 */
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* Submits n requests of pp prompt ids (from seed) asking max_tokens each,
 * runs the loop until every one is done; returns 0, or -1 after saying why. */
static int run_batch(uv_loop_t *loop, dyn_engine_t *e, req_t *rs, int n, size_t pp,
                     uint32_t max_tokens, uint64_t seed) {
  for (int i = 0; i < n; i++) {
    uint64_t x = seed * 1000003u + (uint64_t)i;
    /* Ids 100..40099: ordinary text tokens of SmolLM2's 49,152, no
     * special ones (the values do not change the cost of a decode). */
    for (size_t k = 0; k < pp; k++) rs[i].prompt[k] = 100 + (uint32_t)(rng_next(&x) % 40000);
    rs[i].generated = 0, rs[i].done = 0, rs[i].t_first = 0;
    dyn_engine_request_t q = {.prompt = rs[i].prompt, .n_prompt = pp, .max_tokens = max_tokens,
                              .ignore_eos = 1, .temperature = 0.0f};
    const char *why = NULL;
    int rc = dyn_engine_submit(e, &q, &cbs, &rs[i], NULL, &why);
    if (rc) {
      fprintf(stderr, "llama_engine_bench: submit: %s\n", why ? why : dyn_strerror(rc));
      return -1;
    }
  }
  for (;;) {
    int done = 0;
    for (int i = 0; i < n; i++) done += rs[i].done;
    if (done == n) break;
    uv_run(loop, UV_RUN_ONCE);
  }
  for (int i = 0; i < n; i++) {
    if (rs[i].reason != DYN_ENGINE_LENGTH || rs[i].generated != max_tokens) {
      fprintf(stderr, "llama_engine_bench: request %d ended with reason %d after %zu tokens\n", i,
              (int)rs[i].reason, rs[i].generated);
      return -1;
    }
  }
  return 0;
}

static long arg_long(const char *flag, const char *v, long lo, long hi) {
  char *end = NULL;
  errno = 0;
  long x = v ? strtol(v, &end, 10) : 0;
  if (!v || errno || *end || x < lo || x > hi) {
    fprintf(stderr, "llama_engine_bench: %s needs a number in [%ld, %ld], got '%s'\n", flag, lo,
            hi, v ? v : "");
    exit(2);
  }
  return x;
}

int main(int argc, char **argv) {
  if (argc < 2 || argv[1][0] == '-') {
    fprintf(stderr, "usage: llama_engine_bench MODEL.gguf [-t THREADS] [-npp N] [-ntg N] "
                    "[-npl B,B,...] [-blocks N] [-batch N] [-fa]\n");
    return 2;
  }
  const char *model = argv[1];
  long threads = 2, pp = 128, tg = 32, blocks = 512, batch = 512;
  int pls[16], n_pl = 0, flash_attn = 0;
  for (int i = 2; i < argc; i++) {
    const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(f, "-fa")) {
      flash_attn = 1;
      continue;
    }
    if (!strcmp(f, "-t")) threads = arg_long(f, v, 1, 256);
    else if (!strcmp(f, "-npp")) pp = arg_long(f, v, 1, 8192);
    else if (!strcmp(f, "-ntg")) tg = arg_long(f, v, 1, 8192);
    else if (!strcmp(f, "-blocks")) blocks = arg_long(f, v, 1, 1 << 20);
    else if (!strcmp(f, "-batch")) batch = arg_long(f, v, 1, 1 << 16);
    else if (!strcmp(f, "-npl")) {
      char list[256];
      snprintf(list, sizeof list, "%s", v ? v : "");
      for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (n_pl == 16) {
          fprintf(stderr, "llama_engine_bench: -npl takes at most 16 sizes\n");
          return 2;
        }
        pls[n_pl++] = (int)arg_long(f, tok, 1, MAX_PL);
      }
    } else {
      fprintf(stderr, "llama_engine_bench: unknown option '%s'\n", f);
      return 2;
    }
    i++;
  }
  if (!n_pl) pls[n_pl++] = 1;

  uv_loop_t loop;
  uv_loop_init(&loop);
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.model = model;
  o.threads = (uint32_t)threads;
  o.num_blocks = (uint32_t)blocks;
  o.block_size = 16;
  o.max_num_seqs = MAX_PL;
  o.max_num_batched_tokens = (uint32_t)batch;
  o.flash_attn = flash_attn;
  dyn_engine_t *e = NULL;
  const char *why = NULL;
  int rc = dyn_engine_open(&loop, "llama.cpp", &o, &e, &why);
  if (rc) {
    fprintf(stderr, "llama_engine_bench: %s\n", why ? why : dyn_strerror(rc));
    return 1;
  }
  static req_t rs[MAX_PL];
  for (int i = 0; i < MAX_PL; i++) rs[i].prompt = malloc((size_t)pp * sizeof(uint32_t));

  int status = 0;
  if (run_batch(&loop, e, rs, 1, pp < 16 ? (size_t)pp : 16, 4, 999) != 0) status = 1; /* warmup */
  for (int k = 0; k < n_pl && !status; k++) {
    int n = pls[k];
    dyn_engine_reset_cache(e);
    double t0 = now_us();
    if (run_batch(&loop, e, rs, n, (size_t)pp, (uint32_t)tg + 1, (uint64_t)k + 1) != 0) {
      status = 1;
      break;
    }
    double t1 = now_us(), t_pp = 0;
    for (int i = 0; i < n; i++)
      if (rs[i].t_first - t0 > t_pp) t_pp = rs[i].t_first - t0;
    double t = (t1 - t0) / 1e6;
    t_pp /= 1e6;
    printf("RESULT name=engine pl=%d pp=%ld tg=%ld t=%.3f speed=%.2f t_pp=%.3f speed_tg=%.2f\n", n,
           pp, tg, t, (double)n * (double)(pp + tg) / t, t_pp,
           t > t_pp ? (double)n * (double)tg / (t - t_pp) : 0.0);
    fflush(stdout);
  }
  dyn_engine_destroy(e);
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  for (int i = 0; i < MAX_PL; i++) free(rs[i].prompt);
  return status;
}
