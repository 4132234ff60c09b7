/* worker.c - the Worker service: an engine behind an endpoint, the
 * simulated one or llama.cpp's (config `engine:`, dyn_engine_open).
 *
 * generate takes an engine request and streams the engine's output as it
 * produces tokens (protocol.h has both messages). A cancel from the caller
 * (the Processor, because the HTTP client went away or a stop string
 * matched) cancels the engine's sequence at once, which frees its KV
 * blocks for others.
 *
 * Its engine's load and counters are also Prometheus metrics
 * (dynamo_engine_*, llm/engine/prometheus.h) on the health port's /metrics.
 *
 * The worker also publishes, on its component's subjects:
 *  - "kv_events": each engine step's KV events as one binary batch
 *    (dyn__kv_encode), for the Router's index;
 *  - "load_metrics": its load (dyn__proto_load_t) whenever it changed, at
 *    most every metrics-interval-ms (20), and at least every second.
 *
 * Config: engine ("sim" or "llama.cpp"), block-size (16), num-blocks
 * (1024), max-num-seqs (64),
 * max-num-batched-tokens (2048), vocab-size (32000; at most the
 * tokenizer's), min-token-id (3; 256 skips a byte-level BPE's raw bytes,
 * so the made-up text decodes to whole words), eos-token-id (2), speedup
 * (1.0), prefill-base-us, prefill-per-token-us, decode-base-us,
 * decode-per-seq-us, eos-probability, seed, kv-seed (must match the
 * Router's), metrics-interval-ms. llama.cpp also reads model (a .gguf
 * path, or a name the model cache holds as NAME.gguf: $DYN_MODEL_DIR, else
 * ~/.cache/dynamo/models, where scripts/fetch_model.sh puts it),
 * model-path (a .gguf path, overriding model), threads (default: the
 * CPUs this process may use divided by the engine workers on the machine,
 * threads.c) and max-model-len
 * (default: the model's trained context, at most the KV cache).
 *
 * Disaggregated serving (disagg.c): role (aggregated, or decode: long
 * prompts go to a PrefillWorker, the same code serving "prefill" instead of
 * "generate", whose role is prefill), max-local-prefill-length (512),
 * max-prefill-queue-size (8), kv-transfer-timeout-ms (10000),
 * kv-chunk-bytes (1 MiB), kv-bandwidth-mbps (0: unlimited),
 * kv-receive-keep-bytes (256 MiB of idle receive buffers), and for the
 * simulated engine kv-bytes-per-block (32768) and kv-import-us-per-block
 * (20).
 */
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/engine/prometheus.h"
#include "llm/kv/encode.h"

#include "dynamo/events.h"
#include "dynamo/llm/engine.h"
#include "dynamo/llm/kv.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "common/buf.h"
#include "llm/services/llm_common.h"
#include "llm/services/protocol.h"
#include "llm/services/services.h"
#include "llm/services/worker.h"

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
  dyn__proto_load_t load = {
      .worker_id = dyn_runtime_instance_id(dyn_service_runtime(w->ctx)),
      .active_slots = m.active_slots,
      .total_slots = m.total_slots,
      .waiting = m.waiting,
      .kv_blocks_used = m.kv_blocks_used,
      .kv_blocks_cached = m.kv_blocks_cached,
      .kv_blocks_total = m.kv_blocks_total,
      .requests = m.requests,
      .prompt_tokens = m.prompt_tokens,
      .cached_prompt_tokens = m.cached_prompt_tokens,
      .generated_tokens = m.generated_tokens,
  };
  dyn__engine_prom_update(&w->prom, &m);
  char *s = dyn__proto_load_encode(&load);
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
  dyn__proto_engine_output_t out = {.token_ids = toks, .n_tokens = n, .cached_tokens = -1,
                                    .logprobs = dyn_engine_seq_logprobs(seq)};
  if (!j->sent_first) {
    out.cached_tokens = (long long)dyn_engine_seq_cached_tokens(seq);
    j->sent_first = 1;
  }
  dyn__proto_send(j->req, dyn__proto_engine_output_encode(&out));
  j->w->metrics_dirty = 1;
}

static void on_done(dyn_engine_seq_t *seq, dyn_engine_finish_t reason, void *ud) {
  wjob_t *j = ud;
  j->w->metrics_dirty = 1;
  if (reason == DYN_ENGINE_STOP || reason == DYN_ENGINE_LENGTH) {
    dyn__proto_engine_output_t out = {
        .cached_tokens = j->sent_first ? -1 : (long long)dyn_engine_seq_cached_tokens(seq),
        .finish = reason == DYN_ENGINE_STOP ? DYN__PROTO_STOP : DYN__PROTO_LENGTH,
    };
    dyn__proto_send(j->req, dyn__proto_engine_output_encode(&out));
    dyn_request_end(j->req);
  } else if (reason == DYN_ENGINE_CANCELLED) {
    dyn_request_fail(j->req, "cancelled"); /* nobody reads it: the caller left */
  } else {
    dyn__proto_fail(j->req, 500, "the engine failed");
  }
  free(j);
}

static void on_cancel(dyn_request_t *req, void *ud) {
  wjob_t *j = ud;
  dyn_engine_cancel(j->seq); /* on_done(CANCELLED) runs and frees j */
}

int dyn__worker_submit(worker_t *w, dyn_request_t *req, const dyn_engine_request_t *r,
                       int sent_first, const char **why) {
  wjob_t *j = calloc(1, sizeof *j);
  static const dyn_engine_callbacks_t cb = {on_tokens, on_done};
  int rc = j ? dyn_engine_submit(w->engine, r, &cb, j, &j->seq, why) : DYN_ENOMEM;
  if (rc) {
    free(j);
    return rc;
  }
  j->w = w;
  j->req = req;
  j->sent_first = sent_first;
  dyn_request_on_cancel(req, on_cancel, j);
  w->metrics_dirty = 1;
  return DYN_OK;
}

static void generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  worker_t *w = dyn_service_data(ud);
  dyn__proto_engine_request_t in;
  const char *why = NULL;
  int rc = dyn__proto_engine_request_decode(body, len, &in, &why);
  if (rc) {
    if (rc == DYN_ENOMEM) dyn__proto_fail(req, 500, "out of memory");
    else dyn__proto_fail(req, 400, "%s", why);
    return;
  }
  if (w->role == DYN__ROLE_DECODE) {
    dyn__disagg_generate(w, req, &in); /* frees in */
    return;
  }
  dyn_engine_request_t r = {
      .prompt = in.token_ids,
      .n_prompt = in.n_tokens,
      .max_tokens = in.max_tokens,
      .ignore_eos = in.ignore_eos,
      .temperature = (float)in.temperature,
      .has_seed = in.has_seed,
      .seed = in.seed,
      .top_p = (float)in.top_p,
      .top_k = in.top_k > INT32_MAX ? INT32_MAX : (int32_t)in.top_k,
      .logprobs = in.logprobs,
      .top_logprobs = in.top_logprobs,
  };
  rc = dyn__worker_submit(w, req, &r, 0, &why);
  dyn__proto_engine_request_free(&in); /* submit copied the prompt */
  if (rc) {
    /* A request the engine refuses is the client's (a prompt the KV pool
     * can never hold); running out of memory is ours. */
    if (rc == DYN_ENOMEM) dyn__proto_fail(req, 500, "out of memory");
    else dyn__proto_fail(req, 400, "%s", why ? why : dyn_strerror(rc));
    return;
  }
}

/* ---- lifecycle ------------------------------------------------------------ */

static int worker_start(dyn_service_ctx_t *ctx) {
  int prefill_service = !strcmp(dyn_service_def(ctx)->name, "PrefillWorker");
  dyn__llm_cfg_t c;
  dyn__llm_cfg_init(&c, ctx);
  const char *role = dyn__llm_cfg_string(&c, "role", prefill_service ? "prefill" : "aggregated");
  dyn__worker_role_t r = DYN__ROLE_AGGREGATED;
  if (!strcmp(role, "aggregated")) r = DYN__ROLE_AGGREGATED;
  else if (!strcmp(role, "decode")) r = DYN__ROLE_DECODE;
  else if (!strcmp(role, "prefill")) r = DYN__ROLE_PREFILL;
  else dyn__llm_cfg_reject(&c, "role", "aggregated, prefill or decode");
  if (!c.bad && (r == DYN__ROLE_PREFILL) != prefill_service) {
    dyn_log(DYN_LOG_ERROR, "Worker: engine config: role %s belongs to the %s service", role,
            prefill_service ? "Worker" : "PrefillWorker");
    return DYN_EINVAL;
  }
  dyn_engine_options_t o;
  dyn_engine_options_init(&o);
  o.block_size = (uint32_t)dyn__llm_cfg_int(&c, "block-size", o.block_size, 1, UINT32_MAX);
  /* Both engines index their cells with an int32. */
  o.num_blocks = (uint32_t)dyn__llm_cfg_int(&c, "num-blocks", o.num_blocks, 1, INT32_MAX);
  o.max_num_seqs = (uint32_t)dyn__llm_cfg_int(&c, "max-num-seqs", o.max_num_seqs, 1, UINT32_MAX);
  o.max_num_batched_tokens = (uint32_t)dyn__llm_cfg_int(&c, "max-num-batched-tokens",
                                                        o.max_num_batched_tokens, 1, UINT32_MAX);
  o.vocab_size = (uint32_t)dyn__llm_cfg_int(&c, "vocab-size", o.vocab_size, 1, UINT32_MAX);
  o.min_token_id = (uint32_t)dyn__llm_cfg_int(&c, "min-token-id", o.min_token_id, 0, UINT32_MAX);
  o.eos_token_id = (uint32_t)dyn__llm_cfg_int(&c, "eos-token-id", o.eos_token_id, 0, UINT32_MAX);
  /* The engine refuses 0 itself. */
  o.speedup = dyn__llm_cfg_double(&c, "speedup", o.speedup, 0, DBL_MAX);
  o.prefill_base_us = dyn__llm_cfg_double(&c, "prefill-base-us", o.prefill_base_us, 0, DBL_MAX);
  o.prefill_per_token_us =
      dyn__llm_cfg_double(&c, "prefill-per-token-us", o.prefill_per_token_us, 0, DBL_MAX);
  o.decode_base_us = dyn__llm_cfg_double(&c, "decode-base-us", o.decode_base_us, 0, DBL_MAX);
  o.decode_per_seq_us =
      dyn__llm_cfg_double(&c, "decode-per-seq-us", o.decode_per_seq_us, 0, DBL_MAX);
  o.eos_probability = dyn__llm_cfg_double(&c, "eos-probability", o.eos_probability, 0, 1);
  /* The same on every worker, so a greedy (temperature 0) request gives the
   * same answer wherever it is routed. Seeds are bits: any whole number. */
  o.seed = (uint64_t)dyn__llm_cfg_int(&c, "seed", 0, LLONG_MIN, LLONG_MAX);
  o.kv_hash_seed =
      (uint64_t)dyn__llm_cfg_int(&c, "kv-seed", (long long)o.kv_hash_seed, LLONG_MIN, LLONG_MAX);
  const char *engine = dyn__llm_cfg_string(&c, "engine", "sim");
  char model_buf[4096];
  o.model = dyn__llm_model_file(&c, model_buf, sizeof model_buf);
  long long threads = dyn__llm_cfg_int(&c, "threads", 0, 0, UINT32_MAX); /* 0: the default */
  o.threads = threads > 0 ? (uint32_t)threads : dyn__worker_default_threads();
  o.max_model_len = (uint32_t)dyn__llm_cfg_int(&c, "max-model-len", 0, 0, UINT32_MAX);
  o.cache_type_k = dyn__llm_cfg_string(&c, "cache-type-k", NULL);
  o.cache_type_v = dyn__llm_cfg_string(&c, "cache-type-v", NULL);
  /* On unless the config says otherwise: llama.cpp's CPU kernel skips the
   * cells the mask excludes, which in one unified cache are most of them
   * (docs/benchmarks.md, "Flash attention"). */
  o.flash_attn = dyn__llm_cfg_bool(&c, "flash-attn", 1);
  o.kv_bytes_per_block =
      (uint32_t)dyn__llm_cfg_int(&c, "kv-bytes-per-block", o.kv_bytes_per_block, 0, UINT32_MAX);
  o.kv_import_us_per_block =
      dyn__llm_cfg_double(&c, "kv-import-us-per-block", o.kv_import_us_per_block, 0, DBL_MAX);
  unsigned metrics_ms =
      (unsigned)dyn__llm_cfg_int(&c, "metrics-interval-ms", 20, 1, UINT_MAX);
  if (c.bad) return DYN_EINVAL;
  worker_t *w = calloc(1, sizeof *w);
  if (!w) return DYN_ENOMEM;
  w->ctx = ctx;
  w->role = r;
  w->metrics_interval_ms = metrics_ms;
  w->block_size = o.block_size;
  dyn_runtime_t *rt = dyn_service_runtime(ctx);
  const char *why = NULL;
  int rc = dyn_engine_open(dyn_runtime_loop(rt), engine, &o, &w->engine, &why);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "Worker: engine config: %s", why ? why : dyn_strerror(rc));
    free(w);
    return rc;
  }
  dyn_namespace_t *ns;
  const char *nsname = dyn_service_def(ctx)->namespace_;
  rc = dyn_runtime_namespace(rt, nsname ? nsname : "dynamo", &ns);
  if (!rc) rc = dyn_namespace_component(ns, dyn_service_def(ctx)->name, &w->component);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "Worker: cannot publish its events: %s", dyn_strerror(rc));
    dyn_engine_destroy(w->engine);
    free(w);
    return rc;
  }
  dyn__llm_id_to_hex(dyn_runtime_instance_id(rt), w->id_hex);
  /* Metrics are for operators: a worker that cannot register them serves
   * anyway, and says so. */
  rc = dyn__engine_prom_init(&w->prom, nsname ? nsname : "dynamo", dyn_service_def(ctx)->name,
                             w->id_hex);
  if (rc) dyn_log(DYN_LOG_WARN, "Worker: no engine metrics on /metrics: %s", dyn_strerror(rc));
  else dyn_engine_set_step_observer(w->engine, dyn__engine_prom_step, &w->prom);
  rc = w->role == DYN__ROLE_AGGREGATED ? DYN_OK : dyn__disagg_start(w);
  if (rc) {
    dyn_engine_destroy(w->engine);
    free(w);
    return rc;
  }
  dyn_engine_set_kv_events(w->engine, on_kv_events, w);
  uv_timer_init(dyn_runtime_loop(rt), &w->metrics_timer);
  w->metrics_timer.data = w;
  uv_timer_start(&w->metrics_timer, on_metrics_timer, 0, w->metrics_interval_ms);
  /* The timer alone must not keep a drained worker's loop alive. */
  uv_unref((uv_handle_t *)&w->metrics_timer);
  w->metrics_dirty = 1;
  dyn_service_set_data(ctx, w);
  /* The simulated engine's time is modelled: it has no threads to tell. */
  char threads_text[32] = "";
  if (strcmp(engine, "sim")) snprintf(threads_text, sizeof threads_text, ", threads %u", o.threads);
  dyn_log(DYN_LOG_INFO,
          "%s %d: engine %s%s%s, %u KV blocks x %u tokens, %u slots%s, role %s, instance %s",
          dyn_service_def(ctx)->name, dyn_service_worker_index(ctx), dyn_engine_name(w->engine),
          strcmp(engine, "sim") ? " " : "", strcmp(engine, "sim") ? o.model : "", o.num_blocks,
          o.block_size, o.max_num_seqs, threads_text, role, w->id_hex);
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
  dyn__disagg_shutdown(w);
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

/* The prefill role: the same worker with the prefill endpoint (disagg.c)
 * instead of generate, so the Processor never routes to it. */
static const dyn_endpoint_def_t prefill_endpoints[] = {{"prefill", dyn__disagg_prefill}, {0}};

const dyn_service_def_t dyn__llm_prefill_worker = {
    .name = "PrefillWorker",
    .namespace_ = "dynamo",
    .workers = 1,
    .endpoints = prefill_endpoints,
    .depends = NULL,
    .on_start = worker_start,
    .on_shutdown = worker_shutdown,
};
