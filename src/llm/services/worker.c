/* worker.c - the Worker service: the simulated engine behind an endpoint.
 *
 * generate takes {"token_ids": [...], "max_tokens", "ignore_eos", "seed",
 * "temperature"} and streams {"token_ids": [...]} as the engine produces
 * them; the first message also carries "cached_tokens" (prompt tokens the
 * prefix cache held), the last one "finish_reason" ("stop" | "length").
 * A cancel from the caller (the Processor, because the HTTP client went
 * away or a stop string matched) cancels the engine's sequence at once,
 * which frees its KV blocks for others.
 *
 * The worker also publishes, on its component's subjects:
 *  - "kv_events": each engine step's KV events as one binary batch
 *    (dyn__kv_encode), for the Router's index;
 *  - "load_metrics": JSON {"worker_id", "active_slots", "total_slots",
 *    "kv_blocks_used", "kv_blocks_total", "kv_blocks_cached", "waiting",
 *    counters...} whenever the load changed, at most every
 *    metrics-interval-ms (20), and at least every second.
 *
 * Config: block-size (16), num-blocks (1024), max-num-seqs (64),
 * max-num-batched-tokens (2048), vocab-size (32000; at most the
 * tokenizer's), min-token-id (3; 256 skips a byte-level BPE's raw bytes,
 * so the made-up text decodes to whole words), eos-token-id (2), speedup (1.0), prefill-base-us, prefill-per-token-us,
 * decode-base-us, decode-per-seq-us, eos-probability, seed, kv-seed
 * (must match the Router's), metrics-interval-ms.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "llm/kv/encode.h"
#include "dynamo/events.h"
#include "dynamo/llm/engine.h"
#include "dynamo/llm/kv.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "common/buf.h"
#include "llm/services/llm_common.h"
#include "llm/services/services.h"

typedef struct worker {
  dyn_service_ctx_t *ctx;
  dyn_engine_t *engine;
  dyn_component_t *component;
  char id_hex[17];
  dyn__buf_t events;
  uv_timer_t metrics_timer;
  unsigned metrics_interval_ms;
  int metrics_dirty;
  uint64_t last_metrics_ms;
} worker_t;

typedef struct wjob {
  worker_t *w;
  dyn_request_t *req;
  dyn_engine_seq_t *seq;
  int sent_first;
} wjob_t;

/* ---- publishing -------------------------------------------------------- */

static void publish_metrics(worker_t *w) {
  dyn_engine_metrics_t m;
  dyn_engine_get_metrics(w->engine, &m);
  json_t *j = json_pack(
      "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "worker_id", w->id_hex,
      "active_slots", (json_int_t)m.active_slots, "total_slots", (json_int_t)m.total_slots,
      "waiting", (json_int_t)m.waiting, "kv_blocks_used", (json_int_t)m.kv_blocks_used,
      "kv_blocks_cached", (json_int_t)m.kv_blocks_cached, "kv_blocks_total",
      (json_int_t)m.kv_blocks_total, "requests", (json_int_t)m.requests, "prompt_tokens",
      (json_int_t)m.prompt_tokens, "cached_prompt_tokens", (json_int_t)m.cached_prompt_tokens,
      "generated_tokens", (json_int_t)m.generated_tokens);
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (s) dyn_component_publish(w->component, "load_metrics", s, strlen(s));
  free(s);
  w->metrics_dirty = 0;
  w->last_metrics_ms = uv_now(dyn_runtime_loop(dyn_service_runtime(w->ctx)));
}

/* Coalesces: a change marks the metrics dirty; the timer publishes. */
static void on_metrics_timer(uv_timer_t *t) {
  worker_t *w = t->data;
  uint64_t now = uv_now(t->loop);
  if (w->metrics_dirty || now - w->last_metrics_ms >= 1000) publish_metrics(w);
}

static void on_kv_events(const dyn_kv_event_t *events, size_t n, void *ud) {
  worker_t *w = ud;
  w->events.len = 0;
  if (dyn__kv_encode(&w->events, dyn_runtime_instance_id(dyn_service_runtime(w->ctx)), events,
                    n) == DYN_OK)
    dyn_component_publish(w->component, "kv_events", w->events.data, w->events.len);
  w->metrics_dirty = 1;
}

/* ---- the endpoint -------------------------------------------------------- */

static void on_tokens(dyn_engine_seq_t *seq, const uint32_t *toks, size_t n, void *ud) {
  wjob_t *j = ud;
  json_t *m = json_pack("{s:o}", "token_ids", dyn__llm_tokens_to_json(toks, n));
  if (!j->sent_first) {
    json_object_set_new(m, "cached_tokens",
                        json_integer((json_int_t)dyn_engine_seq_cached_tokens(seq)));
    j->sent_first = 1;
  }
  dyn__llm_send_json(j->req, m);
  j->w->metrics_dirty = 1;
}

static void on_done(dyn_engine_seq_t *seq, dyn_engine_finish_t reason, void *ud) {
  wjob_t *j = ud;
  j->w->metrics_dirty = 1;
  if (reason == DYN_ENGINE_STOP || reason == DYN_ENGINE_LENGTH) {
    json_t *m = json_pack("{s:[], s:s}", "token_ids", "finish_reason",
                          reason == DYN_ENGINE_STOP ? "stop" : "length");
    if (!j->sent_first)
      json_object_set_new(m, "cached_tokens",
                          json_integer((json_int_t)dyn_engine_seq_cached_tokens(seq)));
    dyn__llm_send_json(j->req, m);
    dyn_request_end(j->req);
  } else {
    dyn_request_fail(j->req, reason == DYN_ENGINE_CANCELLED ? "cancelled" : "the engine failed");
  }
  free(j);
}

static void on_cancel(dyn_request_t *req, void *ud) {
  wjob_t *j = ud;
  dyn_engine_cancel(j->seq); /* on_done(CANCELLED) runs and frees j */
}

static void generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  worker_t *w = dyn_service_data(ud);
  json_error_t err;
  json_t *in = json_loadb(body, len, 0, &err);
  uint32_t *toks = NULL;
  size_t n = 0;
  const char *why = "request must be a JSON object with token_ids";
  if (!in || dyn__llm_tokens_from_json(json_object_get(in, "token_ids"), &toks, &n, &why)) {
    json_decref(in);
    dyn_request_fail(req, why);
    return;
  }
  json_t *mt = json_object_get(in, "max_tokens"), *seed = json_object_get(in, "seed");
  json_t *temp = json_object_get(in, "temperature");
  dyn_engine_request_t r = {
      .prompt = toks,
      .n_prompt = n,
      /* Absent: 16. Out of range: 0, which submit refuses with a reason. */
      .max_tokens = !mt ? 16
                    : json_is_integer(mt) && json_integer_value(mt) > 0 &&
                              json_integer_value(mt) <= (json_int_t)UINT32_MAX
                        ? (uint32_t)json_integer_value(mt) : 0,
      .ignore_eos = json_is_true(json_object_get(in, "ignore_eos")),
      .temperature = json_is_number(temp) ? (float)json_number_value(temp) : 1.0f,
      .has_seed = json_is_integer(seed),
      .seed = json_is_integer(seed) ? (uint64_t)json_integer_value(seed) : 0,
  };
  json_decref(in);
  wjob_t *j = calloc(1, sizeof *j);
  static const dyn_engine_callbacks_t cb = {on_tokens, on_done};
  int rc = j ? dyn_engine_submit(w->engine, &r, &cb, j, &j->seq, &why) : DYN_ENOMEM;
  free(toks);
  if (rc) {
    char msg[300];
    snprintf(msg, sizeof msg, "400 %s", rc == DYN_ENOMEM ? "out of memory" : why);
    free(j);
    dyn_request_fail(req, msg);
    return;
  }
  j->w = w;
  j->req = req;
  dyn_request_on_cancel(req, on_cancel, j);
  w->metrics_dirty = 1;
}

/* ---- lifecycle ------------------------------------------------------------ */

static int worker_start(dyn_service_ctx_t *ctx) {
  worker_t *w = calloc(1, sizeof *w);
  if (!w) return DYN_ENOMEM;
  w->ctx = ctx;
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.block_size = (uint32_t)dyn__llm_config_int(ctx, "block-size", o.block_size);
  o.num_blocks = (uint32_t)dyn__llm_config_int(ctx, "num-blocks", o.num_blocks);
  o.max_num_seqs = (uint32_t)dyn__llm_config_int(ctx, "max-num-seqs", o.max_num_seqs);
  o.max_num_batched_tokens =
      (uint32_t)dyn__llm_config_int(ctx, "max-num-batched-tokens", o.max_num_batched_tokens);
  o.vocab_size = (uint32_t)dyn__llm_config_int(ctx, "vocab-size", o.vocab_size);
  o.min_token_id = (uint32_t)dyn__llm_config_int(ctx, "min-token-id", o.min_token_id);
  o.eos_token_id = (uint32_t)dyn__llm_config_int(ctx, "eos-token-id", o.eos_token_id);
  o.speedup = dyn__llm_config_double(ctx, "speedup", o.speedup);
  o.prefill_base_us = dyn__llm_config_double(ctx, "prefill-base-us", o.prefill_base_us);
  o.prefill_per_token_us = dyn__llm_config_double(ctx, "prefill-per-token-us", o.prefill_per_token_us);
  o.decode_base_us = dyn__llm_config_double(ctx, "decode-base-us", o.decode_base_us);
  o.decode_per_seq_us = dyn__llm_config_double(ctx, "decode-per-seq-us", o.decode_per_seq_us);
  o.eos_probability = dyn__llm_config_double(ctx, "eos-probability", o.eos_probability);
  /* The same on every worker, so a greedy (temperature 0) request gives the
   * same answer wherever it is routed. */
  o.seed = (uint64_t)dyn__llm_config_int(ctx, "seed", 0);
  o.kv_hash_seed = (uint64_t)dyn__llm_config_int(ctx, "kv-seed", (long long)o.kv_hash_seed);
  dyn_runtime_t *rt = dyn_service_runtime(ctx);
  const char *why = NULL;
  int rc = dyn_engine_create(dyn_runtime_loop(rt), &o, &w->engine, &why);
  if (rc) {
    fprintf(stderr, "error: Worker: engine config: %s\n", why ? why : dyn_strerror(rc));
    free(w);
    return rc;
  }
  dyn_namespace_t *ns;
  const char *nsname = dyn_service_def(ctx)->namespace_;
  rc = dyn_runtime_namespace(rt, nsname ? nsname : "dynamo", &ns);
  if (!rc) rc = dyn_namespace_component(ns, dyn_service_def(ctx)->name, &w->component);
  if (rc) return rc;
  dyn__llm_id_to_hex(dyn_runtime_instance_id(rt), w->id_hex);
  dyn_engine_set_kv_events(w->engine, on_kv_events, w);
  w->metrics_interval_ms = (unsigned)dyn__llm_config_int(ctx, "metrics-interval-ms", 20);
  uv_timer_init(dyn_runtime_loop(rt), &w->metrics_timer);
  w->metrics_timer.data = w;
  uv_timer_start(&w->metrics_timer, on_metrics_timer, 0,
                 w->metrics_interval_ms ? w->metrics_interval_ms : 20);
  /* The timer alone must not keep a drained worker's loop alive. */
  uv_unref((uv_handle_t *)&w->metrics_timer);
  w->metrics_dirty = 1;
  dyn_service_set_data(ctx, w);
  fprintf(stderr,
          "Worker %d: %u KV blocks x %u tokens, %u slots, speedup %.1f, instance %s\n",
          dyn_service_worker_index(ctx), o.num_blocks, o.block_size, o.max_num_seqs, o.speedup,
          w->id_hex);
  return DYN_OK;
}

static void free_worker(uv_handle_t *h) {
  worker_t *w = h->data;
  dyn__buf_free(&w->events);
  free(w);
}

static void worker_shutdown(dyn_service_ctx_t *ctx) {
  worker_t *w = dyn_service_data(ctx);
  if (!w) return;
  dyn_engine_destroy(w->engine);
  uv_close((uv_handle_t *)&w->metrics_timer, free_worker);
  dyn_service_set_data(ctx, NULL);
}

static const dyn_endpoint_def_t worker_endpoints[] = {{"generate", generate}, {0}};

const dyn_service_def_t dyn__llm_worker = {
    .name = "Worker",
    .namespace_ = "dynamo",
    .workers = 1,
    .endpoints = worker_endpoints,
    .depends = NULL,
    .on_start = worker_start,
    .on_shutdown = worker_shutdown,
};
