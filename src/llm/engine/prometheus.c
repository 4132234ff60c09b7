/* prometheus.c - an engine's metrics for Prometheus (prometheus.h).
 *
 * The engine keeps cumulative counters and current load
 * (dyn_engine_get_metrics); the Worker hands them here whenever it
 * publishes its load for the Router, so /metrics and the Router see the
 * same numbers. Names follow Prometheus' conventions: the dynamo_engine_
 * prefix, _total on counters; the prefix-cache hit rate is
 * cached_prompt_tokens_total / prompt_tokens_total.
 */
#include "llm/engine/prometheus.h"

#include <stddef.h>
#include <string.h>

#include "dynamo/status.h"

static const char *const k_labels[] = {"namespace", "component", "instance", NULL};

typedef struct family {
  dyn_metric_type_t type;
  const char *name, *help;
  size_t offset; /* of the series pointer in dyn__engine_prom_t */
} family_t;

#define AT(field) offsetof(dyn__engine_prom_t, field)
static const family_t k_families[] = {
    {DYN_METRIC_GAUGE, "dynamo_engine_running_sequences", "Sequences running.", AT(running)},
    {DYN_METRIC_GAUGE, "dynamo_engine_waiting_sequences",
     "Sequences submitted and not running (preempted ones included).", AT(waiting)},
    {DYN_METRIC_GAUGE, "dynamo_engine_kv_blocks_used",
     "KV cache blocks held by running sequences.", AT(blocks_used)},
    {DYN_METRIC_GAUGE, "dynamo_engine_kv_blocks_cached",
     "KV cache blocks in the prefix cache.", AT(blocks_cached)},
    {DYN_METRIC_GAUGE, "dynamo_engine_kv_blocks_total", "KV cache blocks in all.",
     AT(blocks_total)},
    {DYN_METRIC_COUNTER, "dynamo_engine_requests_total", "Requests submitted.", AT(requests)},
    {DYN_METRIC_COUNTER, "dynamo_engine_prompt_tokens_total", "Prompt tokens admitted.",
     AT(prompt_tokens)},
    {DYN_METRIC_COUNTER, "dynamo_engine_cached_prompt_tokens_total",
     "Prompt tokens the prefix cache held (prefix cache hits).", AT(cached_tokens)},
    {DYN_METRIC_COUNTER, "dynamo_engine_generated_tokens_total", "Tokens generated.",
     AT(generated_tokens)},
    {DYN_METRIC_COUNTER, "dynamo_engine_preemptions_total",
     "Sequences preempted for lack of KV blocks.", AT(preemptions)},
    {DYN_METRIC_COUNTER, "dynamo_engine_evictions_total", "Cached KV blocks evicted.",
     AT(evictions)},
    {DYN_METRIC_COUNTER, "dynamo_engine_steps_total", "Engine steps run.", AT(steps)},
};

int dyn__engine_prom_init(dyn__engine_prom_t *p, const char *ns, const char *component,
                          const char *instance) {
  memset(p, 0, sizeof *p);
  dyn_metrics_t *reg = dyn_metrics_default();
  if (!reg) return DYN_ENOMEM;
  const char *values[] = {ns, component, instance};
  for (size_t i = 0; i < sizeof k_families / sizeof *k_families; i++) {
    const family_t *f = &k_families[i];
    dyn_metric_t *m;
    int rc = dyn_metrics_add(reg, f->type, f->name, f->help, k_labels, NULL, 0, &m);
    dyn_series_t *s = rc ? NULL : dyn_metric_series(m, values);
    if (!s) {
      memset(p, 0, sizeof *p); /* update then does nothing */
      return rc ? rc : DYN_ENOMEM;
    }
    *(dyn_series_t **)((char *)p + f->offset) = s;
  }
  static const double secs[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                0.1,    0.25,  0.5,    1,     2.5};
  dyn_metric_t *h;
  int rc = dyn_metrics_add(reg, DYN_METRIC_HISTOGRAM, "dynamo_engine_step_seconds",
                           "Time of one engine step (the simulated engine: as modelled).",
                           k_labels, secs, sizeof secs / sizeof *secs, &h);
  if (rc || !(p->step_seconds = dyn_metric_series(h, values))) {
    memset(p, 0, sizeof *p);
    return rc ? rc : DYN_ENOMEM;
  }
  return DYN_OK;
}

void dyn__engine_prom_step(double seconds, void *ud) {
  dyn__engine_prom_t *p = ud;
  if (p->step_seconds) dyn_series_observe(p->step_seconds, seconds);
}

static void add_delta(dyn_series_t *s, uint64_t now, uint64_t before) {
  if (now > before) dyn_series_add(s, (double)(now - before));
}

void dyn__engine_prom_update(dyn__engine_prom_t *p, const dyn_engine_metrics_t *m) {
  if (!p->running) return; /* init failed: nothing to update */
  dyn_series_set(p->running, m->active_slots);
  dyn_series_set(p->waiting, m->waiting);
  dyn_series_set(p->blocks_used, (double)m->kv_blocks_used);
  dyn_series_set(p->blocks_cached, (double)m->kv_blocks_cached);
  dyn_series_set(p->blocks_total, (double)m->kv_blocks_total);
  add_delta(p->requests, m->requests, p->last.requests);
  add_delta(p->prompt_tokens, m->prompt_tokens, p->last.prompt_tokens);
  add_delta(p->cached_tokens, m->cached_prompt_tokens, p->last.cached_prompt_tokens);
  add_delta(p->generated_tokens, m->generated_tokens, p->last.generated_tokens);
  add_delta(p->preemptions, m->preemptions, p->last.preemptions);
  add_delta(p->evictions, m->evictions, p->last.evictions);
  add_delta(p->steps, m->steps, p->last.steps);
  p->last = *m;
}
