/* test_kv_select.c - worker selection: the prefix holder wins on equal
 * load, load beats a small overlap, the cost formula's terms and weights,
 * round-robin cycles, random covers everyone, ties are broken at random,
 * temperature sampling follows softmax and replays under a seed, and bad
 * options are refused. */
#include <math.h>

#include "dynamo/llm/kv.h"
#include "harness.h"

static dyn_kv_worker_load_t load(uint64_t id, uint64_t used, uint64_t total, uint32_t waiting) {
  dyn_kv_worker_load_t l = {id, used, total, 0, 8, waiting};
  return l;
}

static uint64_t pick(const dyn_kv_select_options_t *o, dyn_kv_select_state_t *st,
                     const dyn_kv_worker_load_t *l, size_t n, const dyn_kv_match_t *m,
                     size_t nm, size_t r, uint32_t *ov) {
  uint64_t w = 0;
  int rc = dyn_kv_select(o, st, l, n, m, nm, r, &w, ov);
  CHECK_STATUS(rc, DYN_OK);
  return w;
}

static void test_prefix_wins(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 1);
  dyn_kv_worker_load_t l[4] = {load(10, 100, 1000, 0), load(11, 100, 1000, 0),
                               load(12, 100, 1000, 0), load(13, 100, 1000, 0)};
  dyn_kv_match_t m[2] = {{12, 30}, {11, 5}};
  uint32_t ov = 0;
  for (int i = 0; i < 50; i++) {
    CHECK_EQ_U64(pick(&o, &st, l, 4, m, 2, 32, &ov), 12);
    CHECK_EQ_INT(ov, 30);
  }
  /* Overlap is clamped to the request. */
  pick(&o, &st, l, 4, m, 2, 20, &ov);
  CHECK_EQ_INT(ov, 20);
}

static void test_load_beats_small_overlap(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 2);
  /* 12 holds 2 of 32 blocks but is 95% full with a queue; 10 is idle. */
  dyn_kv_worker_load_t l[2] = {load(10, 50, 1000, 0), load(12, 950, 1000, 6)};
  dyn_kv_match_t m[1] = {{12, 2}};
  uint32_t ov = 99;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, &ov), 10);
  CHECK_EQ_INT(ov, 0);
  /* With a long overlap the loaded worker wins on usage alone (no queue):
   * cost(10) = 1 + 0.05, cost(12) = 2/32 + 0.95. */
  m[0].matched_blocks = 31;
  l[1].waiting = 0;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, &ov), 12);
  /* The waiting term: normalised by the longest queue. 10: 1 + 0.05 + 0
   * = 1.05; 12: 1/32 + 0.95 + 1 = 1.98. Weight 0 removes it: 0.98. */
  l[1].waiting = 3;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, NULL), 10);
  o.waiting_weight = 0.0;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, NULL), 12);
  /* Only overlap counts: the full worker with the prefix wins. */
  o.usage_weight = 0.0;
  o.waiting_weight = 0.0;
  m[0].matched_blocks = 2;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, NULL), 12);
  /* Only usage counts: the idle worker wins. */
  o.overlap_weight = 0.0;
  o.usage_weight = 1.0;
  CHECK_EQ_U64(pick(&o, &st, l, 2, m, 1, 32, NULL), 10);
}

static void test_ties_random(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 3);
  dyn_kv_worker_load_t l[4] = {load(1, 0, 0, 0), load(2, 0, 0, 0), load(3, 0, 0, 0),
                               load(4, 500, 1000, 0)};
  int seen[5] = {0};
  for (int i = 0; i < 3000; i++) seen[pick(&o, &st, l, 4, NULL, 0, 0, NULL)]++;
  for (int w = 1; w <= 3; w++) CHECK_MSG(seen[w] > 800, "worker %d chosen %d/3000", w, seen[w]);
  CHECK_EQ_INT(seen[4], 0); /* the loaded one is never a tie */
}

static void test_round_robin_and_random(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  o.mode = DYN_KV_ROUTE_ROUND_ROBIN;
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 4);
  dyn_kv_worker_load_t l[3] = {load(7, 0, 10, 0), load(8, 0, 10, 0), load(9, 0, 10, 0)};
  dyn_kv_match_t m[1] = {{9, 4}};
  uint32_t ov = 0;
  for (int i = 0; i < 9; i++) {
    uint64_t w = pick(&o, &st, l, 3, m, 1, 8, &ov);
    CHECK_EQ_U64(w, 7 + (uint64_t)(i % 3));
    CHECK_EQ_INT(ov, w == 9 ? 4 : 0); /* overlap reported in every mode */
  }
  o.mode = DYN_KV_ROUTE_RANDOM;
  int seen[10] = {0};
  for (int i = 0; i < 3000; i++) seen[pick(&o, &st, l, 3, m, 1, 8, NULL)]++;
  for (int w = 7; w <= 9; w++) CHECK_MSG(seen[w] > 850, "worker %d chosen %d/3000", w, seen[w]);
}

static void test_temperature(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  o.temperature = 0.5;
  dyn_kv_worker_load_t l[3] = {load(1, 0, 100, 0), load(2, 50, 100, 0), load(3, 100, 100, 0)};
  /* Costs 0, 0.5, 1 (usage only): weights 1, e^-1, e^-2. */
  double wsum = 1 + exp(-1.0) + exp(-2.0);
  double want[3] = {1 / wsum, exp(-1.0) / wsum, exp(-2.0) / wsum};
  enum { N = 20000 };
  uint64_t seq_a[64], seq_b[64];
  int count[4] = {0};
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 99);
  for (int i = 0; i < N; i++) {
    uint64_t w = pick(&o, &st, l, 3, NULL, 0, 0, NULL);
    count[w]++;
    if (i < 64) seq_a[i] = w;
  }
  for (int w = 1; w <= 3; w++) {
    double f = (double)count[w] / N;
    CHECK_MSG(fabs(f - want[w - 1]) < 0.02, "worker %d: %.3f of draws, softmax says %.3f", w, f,
              want[w - 1]);
  }
  /* The same seed replays the same draws; another seed does not. */
  dyn_kv_select_state_init(&st, 99);
  for (int i = 0; i < 64; i++) seq_b[i] = pick(&o, &st, l, 3, NULL, 0, 0, NULL);
  CHECK(!memcmp(seq_a, seq_b, sizeof seq_a));
  dyn_kv_select_state_init(&st, 100);
  for (int i = 0; i < 64; i++) seq_b[i] = pick(&o, &st, l, 3, NULL, 0, 0, NULL);
  CHECK(memcmp(seq_a, seq_b, sizeof seq_a) != 0);
}

static void test_errors(void) {
  dyn_kv_select_options_t o;
  dyn_kv_select_options_init(&o);
  dyn_kv_select_state_t st;
  dyn_kv_select_state_init(&st, 5);
  dyn_kv_worker_load_t l[1] = {load(1, 0, 0, 0)};
  uint64_t w;
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 0, NULL, 0, 4, &w, NULL), DYN_ENOINSTANCE);
  CHECK_STATUS(dyn_kv_select(&o, &st, NULL, 1, NULL, 0, 4, &w, NULL), DYN_EINVAL);
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 1, NULL, 0, 4, NULL, NULL), DYN_EINVAL);
  o.temperature = -1;
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 1, NULL, 0, 4, &w, NULL), DYN_EINVAL);
  o.temperature = NAN;
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 1, NULL, 0, 4, &w, NULL), DYN_EINVAL);
  dyn_kv_select_options_init(&o);
  o.usage_weight = INFINITY;
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 1, NULL, 0, 4, &w, NULL), DYN_EINVAL);
  dyn_kv_select_options_init(&o);
  o.mode = (dyn_kv_route_mode_t)9;
  CHECK_STATUS(dyn_kv_select(&o, &st, l, 1, NULL, 0, 4, &w, NULL), DYN_EINVAL);
}

int main(void) {
  test_prefix_wins();
  test_load_beats_small_overlap();
  test_ties_random();
  test_round_robin_and_random();
  test_temperature();
  test_errors();
  TEST_END();
}
