/* kv_select.c - choosing the worker for a request (see dynamo/llm/kv.h).
 *
 * The cost weighs the prefill a worker would still have to do (the part
 * of the prompt it does not already hold) against how full its KV cache
 * is and how many requests wait in front of it; the formula is in kv.h.
 * All randomness (tie breaks, sampling, random mode) comes from the
 * caller's state, a splitmix64 stream, so a seed replays every choice and
 * two routers never share hidden global state.
 */
#include <math.h>

#include "dynamo/llm/kv.h"
#include "dynamo/status.h"
#include "common/rand.h"

void dyn_kv_select_options_init(dyn_kv_select_options_t *o) {
  o->mode = DYN_KV_ROUTE_KV;
  o->overlap_weight = 1.0;
  o->usage_weight = 1.0;
  o->waiting_weight = 1.0;
  o->temperature = 0.0;
}

void dyn_kv_select_state_init(dyn_kv_select_state_t *st, uint64_t seed) {
  st->rr = 0;
  st->rng = seed;
}

static uint64_t next_u64(dyn_kv_select_state_t *st) { return dyn__splitmix64(&st->rng); }

/* Uniform in [0, n) without modulo bias worth caring about (n is tiny). */
static size_t next_below(dyn_kv_select_state_t *st, size_t n) {
  return (size_t)(((unsigned __int128)next_u64(st) * n) >> 64);
}

/* Uniform in [0, 1). */
static double next_unit(dyn_kv_select_state_t *st) {
  return (double)(next_u64(st) >> 11) * 0x1.0p-53;
}

static int weight_ok(double w) {
  return isfinite(w) && w >= 0.0;
}

static uint32_t overlap_of(uint64_t id, const dyn_kv_match_t *m, size_t n, size_t r) {
  for (size_t i = 0; i < n; i++)
    if (m[i].worker_id == id) return m[i].matched_blocks < r ? m[i].matched_blocks : (uint32_t)r;
  return 0;
}

static double cost_of(const dyn_kv_select_options_t *o, const dyn_kv_worker_load_t *l,
                      uint32_t overlap, size_t r, uint32_t max_waiting) {
  double c = 0.0;
  if (r) c += o->overlap_weight * (double)(r - overlap) / (double)r;
  if (l->kv_blocks_total)
    c += o->usage_weight * (double)l->kv_blocks_used / (double)l->kv_blocks_total;
  if (max_waiting) c += o->waiting_weight * (double)l->waiting / (double)max_waiting;
  return c;
}

/* Argmin, or a softmax(-cost/T) draw; returns the chosen index. */
static size_t choose_kv(const dyn_kv_select_options_t *o, dyn_kv_select_state_t *st,
                        const dyn_kv_worker_load_t *loads, size_t n,
                        const dyn_kv_match_t *matches, size_t n_matches, size_t r) {
  uint32_t max_waiting = 0;
  for (size_t i = 0; i < n; i++)
    if (loads[i].waiting > max_waiting) max_waiting = loads[i].waiting;
  double best = INFINITY;
  size_t pick = 0, ties = 0;
  /* Pass 1: the minimum (ties by reservoir sampling, one draw each). */
  for (size_t i = 0; i < n; i++) {
    double c = cost_of(o, &loads[i], overlap_of(loads[i].worker_id, matches, n_matches, r), r,
                       max_waiting);
    if (c < best) {
      best = c;
      pick = i;
      ties = 1;
    } else if (c == best && next_below(st, ++ties) == 0) {
      pick = i;
    }
  }
  if (o->temperature <= 0.0) return pick;
  /* Pass 2: weights exp(-(c - best)/T) are in (0, 1], so no overflow. */
  double total = 0.0;
  for (size_t i = 0; i < n; i++)
    total += exp(-(cost_of(o, &loads[i], overlap_of(loads[i].worker_id, matches, n_matches, r),
                           r, max_waiting) - best) / o->temperature);
  double x = next_unit(st) * total;
  for (size_t i = 0; i < n; i++) {
    x -= exp(-(cost_of(o, &loads[i], overlap_of(loads[i].worker_id, matches, n_matches, r), r,
                       max_waiting) - best) / o->temperature);
    if (x < 0.0) return i;
  }
  return pick; /* rounding left x at 0: the last positive weight is fine too */
}

int dyn_kv_select(const dyn_kv_select_options_t *opts, dyn_kv_select_state_t *st,
                  const dyn_kv_worker_load_t *loads, size_t n_loads,
                  const dyn_kv_match_t *matches, size_t n_matches, size_t request_blocks,
                  uint64_t *worker_id, uint32_t *overlap) {
  if (!opts || !st || !worker_id || (!loads && n_loads) || (!matches && n_matches))
    return DYN_EINVAL;
  if (!weight_ok(opts->overlap_weight) || !weight_ok(opts->usage_weight) ||
      !weight_ok(opts->waiting_weight) || !weight_ok(opts->temperature))
    return DYN_EINVAL;
  size_t pick;
  switch (opts->mode) {
  case DYN_KV_ROUTE_KV:
  case DYN_KV_ROUTE_ROUND_ROBIN:
  case DYN_KV_ROUTE_RANDOM: break;
  default: return DYN_EINVAL;
  }
  if (!n_loads) return DYN_ENOINSTANCE;
  if (opts->mode == DYN_KV_ROUTE_ROUND_ROBIN) pick = (size_t)(st->rr++ % n_loads);
  else if (opts->mode == DYN_KV_ROUTE_RANDOM) pick = next_below(st, n_loads);
  else pick = choose_kv(opts, st, loads, n_loads, matches, n_matches, request_blocks);
  *worker_id = loads[pick].worker_id;
  if (overlap) *overlap = overlap_of(*worker_id, matches, n_matches, request_blocks);
  return DYN_OK;
}
