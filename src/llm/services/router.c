/* router.c - the Router service: which worker should serve this prompt?
 *
 * It keeps a radix-tree index (dynamo/llm/kv.h) of every Worker's KV cache,
 * fed by the workers' "kv_events", and their last "load_metrics". For a
 * route request (the prompt's token ids; the messages are in protocol.h)
 * it hashes the prompt's full blocks, asks the index how many leading
 * blocks each worker holds, and answers with the worker chosen by
 * dyn_kv_select in the configured mode (kv, round-robin, random). The
 * Processor then calls that worker directly.
 *
 * Everything runs on the worker loop's one thread: events, instance
 * changes and queries touch the index in turn, with no lock and no copy.
 *
 * Loads go stale between two metrics messages, and a burst of requests
 * would all pick the same idle worker; so each choice is also added to the
 * chosen worker's load here (one more waiting request, its uncached blocks
 * used) until that worker's next report replaces the guess.
 *
 * Config (Router section, or Common via common-configs):
 *   block-size (16), mode: kv | round-robin | random (kv),
 *   overlap-weight (1.0), usage-weight (1.0), waiting-weight (1.0),
 *   temperature (0), seed (0), kv-seed (DYN_KV_DEFAULT_SEED),
 *   prediction-ttl-ms (10000: see predict_stored).
 */
#include <float.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/events.h"
#include "dynamo/llm/kv.h"
#include "dynamo/metrics.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "llm/kv/predict.h"
#include "llm/services/llm_common.h"
#include "llm/services/protocol.h"
#include "llm/services/services.h"

#define MAX_WORKERS 1024

typedef struct router {
  dyn_service_ctx_t *ctx;
  dyn_kv_indexer_t *index;
  dyn_kv_select_options_t opts;
  dyn_kv_select_state_t state;
  size_t block_size;
  uint64_t kv_seed;
  dyn_client_t *workers; /* for the live instance list */
  dyn_subscription_t *events_sub, *metrics_sub;
  dyn_kv_worker_load_t loads[MAX_WORKERS];
  size_t n_loads;
  dyn_kv_match_t *matches; /* scratch for find_matches */
  uint64_t dropped_batches;
  dyn__kv_predict_t *guesses; /* blocks indexed before their worker said so */
  uint64_t guess_ttl_ms;
  uv_timer_t guess_timer;
  /* On the health port's /metrics (NULL when they could not be made):
   * decisions per chosen worker, matched blocks per decision, index size. */
  dyn_metric_t *decisions;
  dyn_series_t *overlap, *index_blocks;
  char ns[65], instance[17];
} router_t;

/* Metrics are for operators: a Router that cannot register them routes
 * anyway. Labels: namespace, component, instance, and the chosen worker. */
static void metrics_init(router_t *r, const char *ns) {
  static const char *const labels[] = {"namespace", "component", "instance", NULL};
  static const char *const by_worker[] = {"namespace", "component", "instance", "worker", NULL};
  static const double blocks[] = {0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
  snprintf(r->ns, sizeof r->ns, "%s", ns);
  dyn__llm_id_to_hex(dyn_runtime_instance_id(dyn_service_runtime(r->ctx)), r->instance);
  const char *v[] = {r->ns, dyn_service_def(r->ctx)->name, r->instance};
  dyn_metrics_t *reg = dyn_metrics_default();
  dyn_metric_t *overlap, *size;
  int rc = reg ? DYN_OK : DYN_ENOMEM;
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_COUNTER, "dynamo_router_decisions_total",
                                "Requests routed, by the worker chosen.", by_worker, NULL, 0,
                                &r->decisions);
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_HISTOGRAM, "dynamo_router_overlap_blocks",
                                "Prompt blocks the chosen worker already held, per decision.",
                                labels, blocks, sizeof blocks / sizeof *blocks, &overlap);
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_GAUGE, "dynamo_router_index_blocks",
                                "Blocks in the Router's radix index (shared ones once).", labels,
                                NULL, 0, &size);
  if (!rc && (!(r->overlap = dyn_metric_series(overlap, v)) ||
              !(r->index_blocks = dyn_metric_series(size, v))))
    rc = DYN_ENOMEM;
  if (rc) {
    r->decisions = NULL;
    dyn_log(DYN_LOG_WARN, "Router: no metrics on /metrics: %s", dyn_strerror(rc));
  }
}

static void metrics_note(router_t *r, uint64_t chosen, uint32_t overlap) {
  if (!r->decisions) return;
  char worker[17];
  dyn__llm_id_to_hex(chosen, worker);
  const char *v[] = {r->ns, dyn_service_def(r->ctx)->name, r->instance, worker};
  dyn_series_t *s = dyn_metric_series(r->decisions, v);
  if (s) dyn_series_add(s, 1);
  dyn_series_observe(r->overlap, overlap);
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(r->index, &st);
  dyn_series_set(r->index_blocks, (double)st.nodes);
}

static int parse_mode(const char *s, dyn_kv_route_mode_t *mode) {
  if (!strcmp(s, "kv")) *mode = DYN_KV_ROUTE_KV;
  else if (!strcmp(s, "round-robin") || !strcmp(s, "round_robin")) *mode = DYN_KV_ROUTE_ROUND_ROBIN;
  else if (!strcmp(s, "random")) *mode = DYN_KV_ROUTE_RANDOM;
  else return DYN_EINVAL;
  return DYN_OK;
}

static dyn_kv_worker_load_t *load_of(router_t *r, uint64_t id) {
  for (size_t i = 0; i < r->n_loads; i++)
    if (r->loads[i].worker_id == id) return &r->loads[i];
  return NULL;
}

/* ---- events ------------------------------------------------------------ */

static int apply_one(void *ud, uint64_t worker_id, const dyn_kv_event_t *ev) {
  router_t *r = ud;
  /* Events of a worker that is not (or no longer) live would resurrect its
   * blocks after its removal; only live workers are indexed. */
  if (!load_of(r, worker_id)) return DYN_OK;
  if (ev->kind == DYN_KV_STORED) dyn__kv_predict_confirm(r->guesses, worker_id, ev->blocks, ev->n_blocks);
  dyn_kv_indexer_apply(r->index, worker_id, ev); /* drops are counted inside */
  return DYN_OK;
}

static void on_kv_events(const char *subject, const void *data, size_t len, void *ud) {
  router_t *r = ud;
  const char *why = NULL;
  int rc = dyn_kv_decode(data, len, NULL, apply_one, r, &why);
  if (rc && r->dropped_batches++ == 0)
    dyn_log(DYN_LOG_WARN, "Router: dropped a malformed KV event batch on %s: %s", subject,
            why ? why : dyn_strerror(rc));
}

static void on_metrics(const char *subject, const void *data, size_t len, void *ud) {
  router_t *r = ud;
  dyn__proto_load_t m;
  dyn_kv_worker_load_t *l = dyn__proto_load_decode(data, len, &m) ? NULL : load_of(r, m.worker_id);
  if (!l) return;
  l->kv_blocks_used = m.kv_blocks_used;
  l->kv_blocks_total = m.kv_blocks_total;
  l->active_slots = (uint32_t)m.active_slots;
  l->total_slots = (uint32_t)m.total_slots;
  l->waiting = (uint32_t)m.waiting;
}

/* The live list changed: new workers start with an empty load; departed
 * ones leave the index, so no request is routed to a dead cache. */
static void on_instances(dyn_client_t *c, void *ud) {
  router_t *r = ud;
  uint64_t ids[MAX_WORKERS];
  size_t n = dyn_client_instances(c, ids, MAX_WORKERS);
  if (n > MAX_WORKERS) n = MAX_WORKERS;
  for (size_t i = 0; i < r->n_loads;) {
    int live = 0;
    for (size_t k = 0; k < n && !live; k++) live = ids[k] == r->loads[i].worker_id;
    if (live) {
      i++;
      continue;
    }
    dyn_kv_indexer_remove_worker(r->index, r->loads[i].worker_id);
    dyn_log(DYN_LOG_INFO, "Router: worker %llx left; its blocks are out of the index",
            (unsigned long long)r->loads[i].worker_id);
    r->loads[i] = r->loads[--r->n_loads];
  }
  for (size_t k = 0; k < n; k++)
    if (!load_of(r, ids[k])) r->loads[r->n_loads++] = (dyn_kv_worker_load_t){.worker_id = ids[k]};
}

/* ---- the endpoint ------------------------------------------------------ */

/* The chosen worker will hold the prompt's blocks once it has prefilled
 * them, but its events say so only then. Until they come, requests sharing
 * the prefix would see no overlap anywhere and be spread over every worker,
 * each computing (and caching) the same prefix. So the index takes the
 * blocks as stored by the chosen worker now, and the blocks it did not
 * hold are remembered as guesses (kv_predict.h): the engine's own STORED
 * confirms them; one still unconfirmed after prediction-ttl-ms (the request
 * was cancelled or refused before its prefill) is removed again. */
static void predict_stored(router_t *r, uint64_t worker, const dyn_kv_hash_t *local,
                           const dyn_kv_hash_t *seq, size_t nb, size_t overlap) {
  if (nb == 0 || overlap >= nb) return;
  dyn_kv_block_t *blocks = malloc(nb * sizeof *blocks);
  if (!blocks) return;
  for (size_t i = 0; i < nb; i++) blocks[i] = (dyn_kv_block_t){seq[i], local[i]};
  dyn_kv_event_t ev = {.kind = DYN_KV_STORED, .blocks = blocks, .n_blocks = nb};
  if (dyn_kv_indexer_apply(r->index, worker, &ev) == DYN_OK)
    dyn__kv_predict_add(r->guesses, worker, seq + overlap, nb - overlap,
                        uv_now(dyn_runtime_loop(dyn_service_runtime(r->ctx))) + r->guess_ttl_ms);
  free(blocks);
}

static void forget_guess(void *ud, uint64_t worker, dyn_kv_hash_t seq) {
  router_t *r = ud;
  dyn_kv_event_t ev = {.kind = DYN_KV_REMOVED, .removed = &seq, .n_removed = 1};
  dyn_kv_indexer_apply(r->index, worker, &ev);
}

static void on_guess_timer(uv_timer_t *t) {
  router_t *r = t->data;
  size_t n = dyn__kv_predict_expire(r->guesses, uv_now(t->loop), forget_guess, r);
  if (n) dyn_log(DYN_LOG_INFO, "Router: %zu predicted block(s) never stored; out of the index", n);
}

static void route(dyn_request_t *req, const void *body, size_t len, void *ud) {
  router_t *r = dyn_service_data(ud);
  dyn__proto_route_request_t in;
  const char *why;
  int rc = dyn__proto_route_request_decode(body, len, &in, &why);
  if (rc) {
    if (rc == DYN_ENOMEM) dyn__proto_fail(req, 500, "out of memory");
    else dyn__proto_fail(req, 400, "%s", why);
    return;
  }
  const uint32_t *toks = in.token_ids;
  size_t n = in.n_tokens;
  size_t nb = n / r->block_size;
  dyn_kv_hash_t *local = malloc((nb ? nb : 1) * sizeof *local);
  dyn_kv_hash_t *seq = malloc((nb ? nb : 1) * sizeof *seq);
  if (!local || !seq) {
    dyn__proto_route_request_free(&in);
    free(local);
    free(seq);
    dyn__proto_fail(req, 500, "out of memory");
    return;
  }
  dyn_kv_hash_blocks(toks, n, r->block_size, r->kv_seed, local, seq, nb);
  dyn__proto_route_request_free(&in);
  size_t nm = dyn_kv_indexer_find_matches(r->index, local, nb, r->matches, MAX_WORKERS);
  if (nm > MAX_WORKERS) nm = MAX_WORKERS;
  uint64_t chosen;
  uint32_t overlap = 0;
  rc = dyn_kv_select(&r->opts, &r->state, r->loads, r->n_loads, r->matches, nm, nb, &chosen,
                         &overlap);
  if (rc) {
    free(local);
    free(seq);
    if (rc == DYN_ENOINSTANCE) dyn__proto_fail(req, 503, "no engine worker is live");
    else dyn__proto_fail(req, 500, "%s", dyn_strerror(rc));
    return;
  }
  if (r->opts.mode == DYN_KV_ROUTE_KV) predict_stored(r, chosen, local, seq, nb, overlap);
  metrics_note(r, chosen, overlap);
  free(local);
  free(seq);
  dyn_kv_worker_load_t *l = load_of(r, chosen);
  l->waiting++;
  l->kv_blocks_used += nb - overlap;
  dyn__proto_route_answer_t answer = {chosen, overlap, (uint32_t)nb};
  dyn__proto_send(req, dyn__proto_route_answer_encode(&answer));
  dyn_request_end(req);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int subscribe(router_t *r, const char *ns, const char *what, dyn_event_fn fn,
                     dyn_subscription_t **sub) {
  dyn_namespace_t *n;
  dyn_component_t *c;
  int rc = dyn_runtime_namespace(dyn_service_runtime(r->ctx), ns, &n);
  if (!rc) rc = dyn_namespace_component(n, "Worker", &c);
  return rc ? rc : dyn_component_subscribe(c, what, fn, r, sub);
}

/* What router_start allocated before the guess timer: every failure path
 * comes here, so a worker that cannot start leaks nothing. */
static void router_free(router_t *r) {
  dyn_unsubscribe(r->events_sub);
  dyn_unsubscribe(r->metrics_sub);
  dyn__kv_predict_destroy(r->guesses);
  dyn_kv_indexer_destroy(r->index);
  free(r->matches);
  free(r);
}

static int router_start(dyn_service_ctx_t *ctx) {
  router_t *r = calloc(1, sizeof *r);
  if (!r) return DYN_ENOMEM;
  r->ctx = ctx;
  dyn__llm_cfg_t c;
  dyn__llm_cfg_init(&c, ctx);
  r->block_size = (size_t)dyn__llm_cfg_int(&c, "block-size", 16, 1, UINT32_MAX);
  r->kv_seed = (uint64_t)dyn__llm_cfg_int(&c, "kv-seed", (long long)DYN_KV_DEFAULT_SEED, LLONG_MIN,
                                          LLONG_MAX);
  dyn_kv_select_options_init(&r->opts);
  const char *mode = dyn__llm_cfg_string(&c, "mode", "kv");
  if (parse_mode(mode, &r->opts.mode)) dyn__llm_cfg_reject(&c, "mode", "kv, round-robin or random");
  r->opts.overlap_weight =
      dyn__llm_cfg_double(&c, "overlap-weight", r->opts.overlap_weight, 0, DBL_MAX);
  r->opts.usage_weight = dyn__llm_cfg_double(&c, "usage-weight", r->opts.usage_weight, 0, DBL_MAX);
  r->opts.waiting_weight =
      dyn__llm_cfg_double(&c, "waiting-weight", r->opts.waiting_weight, 0, DBL_MAX);
  r->opts.temperature = dyn__llm_cfg_double(&c, "temperature", r->opts.temperature, 0, DBL_MAX);
  dyn_kv_select_state_init(&r->state,
                           (uint64_t)dyn__llm_cfg_int(&c, "seed", 0, LLONG_MIN, LLONG_MAX));
  const char *ns = dyn_service_def(ctx)->namespace_ ? dyn_service_def(ctx)->namespace_ : "dynamo";
  r->guess_ttl_ms = (uint64_t)dyn__llm_cfg_int(&c, "prediction-ttl-ms", 10000, 0, LLONG_MAX);
  if (c.bad) {
    router_free(r);
    return DYN_EINVAL;
  }
  r->matches = calloc(MAX_WORKERS, sizeof *r->matches);
  int rc = r->matches ? dyn_kv_indexer_create(&r->index) : DYN_ENOMEM;
  if (!rc) rc = dyn__kv_predict_create(&r->guesses);
  if (!rc) rc = subscribe(r, ns, "kv_events", on_kv_events, &r->events_sub);
  if (!rc) rc = subscribe(r, ns, "load_metrics", on_metrics, &r->metrics_sub);
  r->workers = rc ? NULL : dyn_service_client(ctx, "Worker", "generate");
  if (rc || !r->workers) {
    dyn_log(DYN_LOG_ERROR, "Router: cannot start: %s",
            rc ? dyn_strerror(rc) : "no client for Worker/generate");
    router_free(r);
    return rc ? rc : DYN_EINVAL;
  }
  /* Last, as nothing after it can fail: once initialized, the timer is the
   * loop's until uv_close. */
  uv_timer_init(dyn_runtime_loop(dyn_service_runtime(ctx)), &r->guess_timer);
  r->guess_timer.data = r;
  uint64_t every = r->guess_ttl_ms / 4 ? r->guess_ttl_ms / 4 : 1;
  uv_timer_start(&r->guess_timer, on_guess_timer, every, every);
  uv_unref((uv_handle_t *)&r->guess_timer); /* never keeps a drained loop alive */
  dyn_client_on_change(r->workers, on_instances, r);
  on_instances(r->workers, r);
  metrics_init(r, ns);
  dyn_service_set_data(ctx, r);
  dyn_log(DYN_LOG_INFO,
          "Router: mode %s, block size %zu, weights overlap %.2f usage %.2f waiting %.2f", mode,
          r->block_size, r->opts.overlap_weight, r->opts.usage_weight, r->opts.waiting_weight);
  return DYN_OK;
}

static void on_timer_closed(uv_handle_t *h) { router_free(h->data); }

static void router_shutdown(dyn_service_ctx_t *ctx) {
  router_t *r = dyn_service_data(ctx);
  if (!r) return;
  /* No event may arrive between here and the timer's close. */
  dyn_unsubscribe(r->events_sub);
  dyn_unsubscribe(r->metrics_sub);
  r->events_sub = r->metrics_sub = NULL;
  dyn_client_on_change(r->workers, NULL, NULL);
  dyn_service_set_data(ctx, NULL);
  uv_close((uv_handle_t *)&r->guess_timer, on_timer_closed);
}

static const dyn_endpoint_def_t router_endpoints[] = {{"generate", route}, {0}};
static const char *const router_depends[] = {"Worker", NULL};

const dyn_service_def_t dyn__llm_router = {
    .name = "Router",
    .namespace_ = "dynamo",
    .workers = 1,
    .endpoints = router_endpoints,
    .depends = router_depends,
    .on_start = router_start,
    .on_shutdown = router_shutdown,
};
