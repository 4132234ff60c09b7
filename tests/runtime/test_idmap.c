/* test_idmap.c - the stream-id map: basics, collisions, backward-shift
 * deletion checked against a brute-force model, drain. */
#include "harness.h"
#include "common/idmap.h"

/* Values are derived from keys so a wrong slot shows as a wrong value. */
static void *val_of(uint32_t key) { return (void *)(uintptr_t)(key * 2u + 1u); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

static void test_basics(void) {
  dyn__idmap_t m;
  dyn__idmap_init(&m);
  CHECK(dyn__idmap_get(&m, 1) == NULL);
  CHECK(dyn__idmap_del(&m, 1) == NULL);
  CHECK_STATUS(dyn__idmap_put(&m, 0, val_of(0)), DYN_EINVAL);
  CHECK_STATUS(dyn__idmap_put(&m, 1, val_of(1)), DYN_OK);
  CHECK_STATUS(dyn__idmap_put(&m, 1, val_of(2)), DYN_EEXIST);
  CHECK(dyn__idmap_get(&m, 1) == val_of(1));
  CHECK(dyn__idmap_get(&m, 0) == NULL);
  CHECK_STATUS(dyn__idmap_put(&m, UINT32_MAX, val_of(UINT32_MAX)), DYN_OK);
  CHECK(dyn__idmap_get(&m, UINT32_MAX) == val_of(UINT32_MAX));
  CHECK_EQ_INT(m.len, 2);
  CHECK(dyn__idmap_del(&m, 1) == val_of(1));
  CHECK(dyn__idmap_get(&m, 1) == NULL);
  CHECK(dyn__idmap_del(&m, 1) == NULL);
  CHECK(dyn__idmap_del(&m, 0) == NULL);
  CHECK_EQ_INT(m.len, 1);
  /* A deleted key may come back. */
  CHECK_STATUS(dyn__idmap_put(&m, 1, val_of(1)), DYN_OK);
  CHECK(dyn__idmap_get(&m, 1) == val_of(1));
  dyn__idmap_free(&m);
  CHECK(m.slots == NULL && m.cap == 0 && m.len == 0);
  /* Usable again after free. */
  CHECK_STATUS(dyn__idmap_put(&m, 5, val_of(5)), DYN_OK);
  CHECK(dyn__idmap_get(&m, 5) == val_of(5));
  dyn__idmap_free(&m);
}

/* The table stays under half full through growth. */
static void test_growth(void) {
  dyn__idmap_t m;
  dyn__idmap_init(&m);
  int ok = 1, load_ok = 1;
  for (uint32_t k = 1; k <= 100000; k++) {
    if (dyn__idmap_put(&m, k, val_of(k))) ok = 0;
    if (m.len * 2 > m.cap) load_ok = 0;
  }
  CHECK(ok);
  CHECK(load_ok);
  CHECK_EQ_INT(m.len, 100000);
  CHECK((m.cap & (m.cap - 1)) == 0);
  int found = 1;
  for (uint32_t k = 1; k <= 100000; k++)
    if (dyn__idmap_get(&m, k) != val_of(k)) found = 0;
  CHECK(found);
  CHECK(dyn__idmap_get(&m, 100001) == NULL);
  dyn__idmap_free(&m);
}

/* Keys that are multiples of a large power of two land in one home slot at
 * every table size below it: one long probe run, wrapped and shifted. */
static void test_collisions(void) {
  dyn__idmap_t m;
  dyn__idmap_init(&m);
  const uint32_t N = 1500, STEP = 1u << 20;
  int ok = 1;
  for (uint32_t i = 1; i <= N; i++)
    if (dyn__idmap_put(&m, i * STEP, val_of(i * STEP))) ok = 0;
  CHECK(ok);
  CHECK(m.cap < STEP); /* so they really share a home slot */
  /* Delete every third from the run; the others stay findable. */
  int del_ok = 1, find_ok = 1;
  for (uint32_t i = 1; i <= N; i += 3)
    if (dyn__idmap_del(&m, i * STEP) != val_of(i * STEP)) del_ok = 0;
  CHECK(del_ok);
  for (uint32_t i = 1; i <= N; i++) {
    void *v = dyn__idmap_get(&m, i * STEP);
    if ((i - 1) % 3 == 0 ? v != NULL : v != val_of(i * STEP)) find_ok = 0;
  }
  CHECK(find_ok);
  /* Mix in neighbours whose home slots sit inside the run. */
  ok = 1;
  for (uint32_t k = 1; k < 64; k++)
    if (dyn__idmap_put(&m, k, val_of(k))) ok = 0;
  CHECK(ok);
  for (uint32_t i = 2; i <= N; i += 3) dyn__idmap_del(&m, i * STEP);
  find_ok = 1;
  for (uint32_t k = 1; k < 64; k++)
    if (dyn__idmap_get(&m, k) != val_of(k)) find_ok = 0;
  for (uint32_t i = 3; i <= N; i += 3)
    if (dyn__idmap_get(&m, i * STEP) != val_of(i * STEP)) find_ok = 0;
  CHECK(find_ok);
  dyn__idmap_free(&m);
}

/* Random puts, gets and deletes against a plain array model. */
static void random_ops(uint32_t key_range, int ops, int big_keys) {
  enum { MAXK = 4096 };
  static uint32_t model_key[MAXK];
  static int model_live[MAXK];
  memset(model_live, 0, sizeof model_live);
  /* The key universe: small ints, or colliding multiples plus neighbours. */
  for (uint32_t i = 0; i < key_range && i < MAXK; i++)
    model_key[i] = big_keys ? ((i % 2) ? (i + 1) * 4096u : i + 1) : i + 1;
  dyn__idmap_t m;
  dyn__idmap_init(&m);
  size_t live = 0;
  int mismatches = 0;
  for (int op = 0; op < ops; op++) {
    uint32_t i = rnd() % key_range;
    uint32_t k = model_key[i];
    switch (rnd() % 3) {
      case 0: {
        int rc = dyn__idmap_put(&m, k, val_of(k));
        if (rc != (model_live[i] ? DYN_EEXIST : DYN_OK)) mismatches++;
        if (!model_live[i]) live++;
        model_live[i] = 1;
        break;
      }
      case 1: {
        void *v = dyn__idmap_del(&m, k);
        if (v != (model_live[i] ? val_of(k) : NULL)) mismatches++;
        if (model_live[i]) live--;
        model_live[i] = 0;
        break;
      }
      default:
        if (dyn__idmap_get(&m, k) != (model_live[i] ? val_of(k) : NULL)) mismatches++;
    }
    if (m.len != live) mismatches++;
    /* Now and then, the whole table against the model. */
    if (op % 997 == 0)
      for (uint32_t j = 0; j < key_range; j++)
        if (dyn__idmap_get(&m, model_key[j]) != (model_live[j] ? val_of(model_key[j]) : NULL))
          mismatches++;
  }
  CHECK_MSG(mismatches == 0, "%d mismatches (range %u, big %d)", mismatches, key_range,
            big_keys);
  /* Every slot holds a live key, each at most once. */
  size_t used = 0;
  for (size_t s = 0; s < m.cap; s++) used += m.slots[s].key != 0;
  CHECK_EQ_INT(used, live);
  dyn__idmap_free(&m);
}

static void test_drain(void) {
  dyn__idmap_t m;
  dyn__idmap_init(&m);
  size_t n = 99;
  void **v = dyn__idmap_drain(&m, &n);
  CHECK(v == NULL);
  CHECK_EQ_INT(n, 0);
  for (uint32_t k = 1; k <= 1000; k++) dyn__idmap_put(&m, k * 7, val_of(k * 7));
  for (uint32_t k = 1; k <= 1000; k += 2) dyn__idmap_del(&m, k * 7);
  v = dyn__idmap_drain(&m, &n);
  CHECK(v != NULL);
  CHECK_EQ_INT(n, 500);
  CHECK_EQ_INT(m.len, 0);
  /* Exactly the live values, each once. */
  static unsigned char seen[8000];
  memset(seen, 0, sizeof seen);
  int ok = 1;
  for (size_t i = 0; v && i < n; i++) {
    uintptr_t key = ((uintptr_t)v[i] - 1u) / 2u;
    if (key % 7 || key / 7 % 2 || key >= sizeof seen || seen[key]) ok = 0;
    else seen[key] = 1;
  }
  CHECK(ok);
  free(v);
  CHECK(dyn__idmap_get(&m, 14) == NULL);
  /* The emptied map works as new. */
  CHECK_STATUS(dyn__idmap_put(&m, 14, val_of(14)), DYN_OK);
  CHECK(dyn__idmap_get(&m, 14) == val_of(14));
  v = dyn__idmap_drain(&m, &n);
  CHECK_EQ_INT(n, 1);
  free(v);
  dyn__idmap_free(&m);
}

int main(void) {
  h_init("idmap");
  test_basics();
  test_growth();
  test_collisions();
  random_ops(8, 20000, 0);      /* tiny table: wraparound */
  random_ops(40, 50000, 1);     /* collisions and neighbours */
  random_ops(3000, 200000, 0);  /* growth with churn */
  random_ops(3000, 200000, 1);
  test_drain();
  TEST_END();
}
