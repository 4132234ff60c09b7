/* router.c - the Router service: which worker should serve this prompt?
 *
 * It keeps a radix-tree index (dynamo/llm/kv.h) of every Worker's KV cache,
 * fed by the workers' "kv_events", and their last "load_metrics". For a
 * request {"token_ids": [...]} it hashes the prompt's full blocks, asks the
 * index how many leading blocks each worker holds, and answers
 * {"worker_id": "<16 hex>", "overlap_blocks": n, "request_blocks": R} with
 * the worker chosen by dyn_kv_select in the configured mode (kv,
 * round-robin, random). The Processor then calls that worker directly.
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
 *   prediction-ttl-ms (10000: see predict_stored),
 *   worker: the engine component's name (Worker).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dynamo/events.h"
#include "dynamo/llm/kv.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "llm/kv/predict.h"
#include "llm/services/llm_common.h"
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
} router_t;

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
    fprintf(stderr, "Router: dropped a malformed KV event batch on %s: %s\n", subject,
            why ? why : dyn_strerror(rc));
}

static uint64_t get_u64(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

static void on_metrics(const char *subject, const void *data, size_t len, void *ud) {
  router_t *r = ud;
  json_error_t err;
  json_t *m = json_loadb(data, len, 0, &err);
  uint64_t id;
  dyn_kv_worker_load_t *l = NULL;
  if (m && !dyn__llm_id_from_hex(json_string_value(json_object_get(m, "worker_id")), &id))
    l = load_of(r, id);
  if (l) {
    l->kv_blocks_used = get_u64(m, "kv_blocks_used");
    l->kv_blocks_total = get_u64(m, "kv_blocks_total");
    l->active_slots = (uint32_t)get_u64(m, "active_slots");
    l->total_slots = (uint32_t)get_u64(m, "total_slots");
    l->waiting = (uint32_t)get_u64(m, "waiting");
  }
  json_decref(m);
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
    fprintf(stderr, "Router: worker %llx left; its blocks are out of the index\n",
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
  if (n) fprintf(stderr, "Router: %zu predicted block(s) never stored; out of the index\n", n);
}

static void route(dyn_request_t *req, const void *body, size_t len, void *ud) {
  router_t *r = dyn_service_data(ud);
  json_error_t err;
  json_t *in = json_loadb(body, len, 0, &err);
  uint32_t *toks = NULL;
  size_t n = 0;
  const char *why = "request must be a JSON object {\"token_ids\": [...]}";
  if (!in || dyn__llm_tokens_from_json(json_object_get(in, "token_ids"), &toks, &n, &why)) {
    json_decref(in);
    dyn_request_fail(req, why);
    return;
  }
  json_decref(in);
  size_t nb = n / r->block_size;
  dyn_kv_hash_t *local = malloc((nb ? nb : 1) * sizeof *local);
  dyn_kv_hash_t *seq = malloc((nb ? nb : 1) * sizeof *seq);
  if (!local || !seq) {
    free(toks);
    free(local);
    free(seq);
    dyn_request_fail(req, "out of memory");
    return;
  }
  dyn_kv_hash_blocks(toks, n, r->block_size, r->kv_seed, local, seq, nb);
  free(toks);
  size_t nm = dyn_kv_indexer_find_matches(r->index, local, nb, r->matches, MAX_WORKERS);
  if (nm > MAX_WORKERS) nm = MAX_WORKERS;
  uint64_t chosen;
  uint32_t overlap = 0;
  int rc = dyn_kv_select(&r->opts, &r->state, r->loads, r->n_loads, r->matches, nm, nb, &chosen,
                         &overlap);
  if (rc) {
    free(local);
    free(seq);
    dyn_request_fail(req, rc == DYN_ENOINSTANCE ? "503 no engine worker is live"
                                                : dyn_strerror(rc));
    return;
  }
  if (r->opts.mode == DYN_KV_ROUTE_KV) predict_stored(r, chosen, local, seq, nb, overlap);
  free(local);
  free(seq);
  dyn_kv_worker_load_t *l = load_of(r, chosen);
  l->waiting++;
  l->kv_blocks_used += nb - overlap;
  char hex[17];
  dyn__llm_id_to_hex(chosen, hex);
  dyn__llm_send_json(req, json_pack("{s:s, s:i, s:i}", "worker_id", hex, "overlap_blocks",
                                    (int)overlap, "request_blocks", (int)nb));
  dyn_request_end(req);
}

/* ---- lifecycle ---------------------------------------------------------- */

static int subscribe(router_t *r, const char *ns, const char *worker, const char *what,
                     dyn_event_fn fn, dyn_subscription_t **sub) {
  dyn_namespace_t *n;
  dyn_component_t *c;
  int rc = dyn_runtime_namespace(dyn_service_runtime(r->ctx), ns, &n);
  if (!rc) rc = dyn_namespace_component(n, worker, &c);
  return rc ? rc : dyn_component_subscribe(c, what, fn, r, sub);
}

static int router_start(dyn_service_ctx_t *ctx) {
  router_t *r = calloc(1, sizeof *r);
  if (!r) return DYN_ENOMEM;
  r->ctx = ctx;
  r->block_size = (size_t)dyn__llm_config_int(ctx, "block-size", 16);
  r->kv_seed = (uint64_t)dyn__llm_config_int(ctx, "kv-seed", DYN_KV_DEFAULT_SEED);
  dyn_kv_select_options_init(&r->opts);
  const char *mode = dyn__llm_config_string(ctx, "mode", "kv");
  if (r->block_size == 0 || parse_mode(mode, &r->opts.mode)) {
    fprintf(stderr, "error: Router: %s\n", r->block_size == 0
                                               ? "block-size must be a positive integer"
                                               : "mode must be kv, round-robin or random");
    free(r);
    return DYN_EINVAL;
  }
  r->opts.overlap_weight = dyn__llm_config_double(ctx, "overlap-weight", r->opts.overlap_weight);
  r->opts.usage_weight = dyn__llm_config_double(ctx, "usage-weight", r->opts.usage_weight);
  r->opts.waiting_weight = dyn__llm_config_double(ctx, "waiting-weight", r->opts.waiting_weight);
  r->opts.temperature = dyn__llm_config_double(ctx, "temperature", r->opts.temperature);
  dyn_kv_select_state_init(&r->state, (uint64_t)dyn__llm_config_int(ctx, "seed", 0));
  const char *worker = dyn__llm_config_string(ctx, "worker", "Worker");
  const char *ns = dyn_service_def(ctx)->namespace_ ? dyn_service_def(ctx)->namespace_ : "dynamo";
  r->guess_ttl_ms = (uint64_t)dyn__llm_config_int(ctx, "prediction-ttl-ms", 10000);
  r->matches = calloc(MAX_WORKERS, sizeof *r->matches);
  int rc = r->matches ? dyn_kv_indexer_create(&r->index) : DYN_ENOMEM;
  if (!rc) rc = dyn__kv_predict_create(&r->guesses);
  if (!rc) {
    uv_loop_t *loop = dyn_runtime_loop(dyn_service_runtime(ctx));
    uv_timer_init(loop, &r->guess_timer);
    r->guess_timer.data = r;
    uint64_t every = r->guess_ttl_ms / 4 ? r->guess_ttl_ms / 4 : 1;
    uv_timer_start(&r->guess_timer, on_guess_timer, every, every);
    uv_unref((uv_handle_t *)&r->guess_timer); /* never keeps a drained loop alive */
  }
  if (!rc) rc = subscribe(r, ns, worker, "kv_events", on_kv_events, &r->events_sub);
  if (!rc) rc = subscribe(r, ns, worker, "load_metrics", on_metrics, &r->metrics_sub);
  r->workers = rc ? NULL : dyn_service_client(ctx, worker, "generate");
  if (rc || !r->workers) {
    fprintf(stderr, "error: Router: cannot start: %s\n", rc ? dyn_strerror(rc) : "no Worker client");
    return rc ? rc : DYN_EINVAL;
  }
  dyn_client_on_change(r->workers, on_instances, r);
  on_instances(r->workers, r);
  dyn_service_set_data(ctx, r);
  fprintf(stderr, "Router: mode %s, block size %zu, weights overlap %.2f usage %.2f waiting %.2f\n",
          mode, r->block_size, r->opts.overlap_weight, r->opts.usage_weight,
          r->opts.waiting_weight);
  return DYN_OK;
}

static void free_router(uv_handle_t *h) {
  router_t *r = h->data;
  dyn__kv_predict_destroy(r->guesses);
  dyn_kv_indexer_destroy(r->index);
  free(r->matches);
  free(r);
}

static void router_shutdown(dyn_service_ctx_t *ctx) {
  router_t *r = dyn_service_data(ctx);
  if (!r) return;
  dyn_unsubscribe(r->events_sub);
  dyn_unsubscribe(r->metrics_sub);
  dyn_client_on_change(r->workers, NULL, NULL);
  dyn_service_set_data(ctx, NULL);
  uv_close((uv_handle_t *)&r->guess_timer, free_router);
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
