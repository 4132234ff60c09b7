/* test_map.c - the one hash table (src/common/map.h): basics, growth, long
 * probe runs, backward-shift deletion checked against brute-force models,
 * drain. */
#include "harness.h"
#include "common/map.h"

/* Values are derived from keys so a wrong slot shows as a wrong value. */
static void *val_of(uint64_t key) { return (void *)(uintptr_t)(key * 2u + 1u); }

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

static void test_basics(void) {
  dyn__map_t m;
  dyn__map_init(&m);
  CHECK(dyn__map_get(&m, 1) == NULL);
  CHECK(dyn__map_del(&m, 1) == NULL);
  /* NULL marks an empty slot, so it is no value. */
  CHECK_STATUS(dyn__map_put(&m, 1, NULL), DYN_EINVAL);
  CHECK_STATUS(dyn__map_add(&m, 1, NULL), DYN_EINVAL);
  CHECK_EQ_INT(m.n, 0);
  CHECK_STATUS(dyn__map_add(&m, 1, val_of(1)), DYN_OK);
  CHECK_STATUS(dyn__map_add(&m, 1, val_of(2)), DYN_EEXIST);
  CHECK(dyn__map_get(&m, 1) == val_of(1));
  CHECK(dyn__map_get(&m, 0) == NULL);
  /* 0 and the largest key are keys like any other. */
  CHECK_STATUS(dyn__map_add(&m, 0, val_of(0)), DYN_OK);
  CHECK(dyn__map_get(&m, 0) == val_of(0));
  CHECK_STATUS(dyn__map_add(&m, UINT64_MAX, val_of(7)), DYN_OK);
  CHECK(dyn__map_get(&m, UINT64_MAX) == val_of(7));
  CHECK_EQ_INT(m.n, 3);
  CHECK(dyn__map_del(&m, 0) == val_of(0));
  CHECK(dyn__map_del(&m, 1) == val_of(1));
  CHECK(dyn__map_get(&m, 1) == NULL);
  CHECK(dyn__map_del(&m, 1) == NULL);
  CHECK_EQ_INT(m.n, 1);
  /* A deleted key may come back. */
  CHECK_STATUS(dyn__map_add(&m, 1, val_of(1)), DYN_OK);
  CHECK(dyn__map_get(&m, 1) == val_of(1));
  /* put replaces; swap replaces and returns what it replaced. */
  CHECK_STATUS(dyn__map_put(&m, 1, val_of(3)), DYN_OK);
  CHECK(dyn__map_get(&m, 1) == val_of(3));
  void *prev = val_of(99);
  CHECK_STATUS(dyn__map_swap(&m, 1, val_of(4), &prev), DYN_OK);
  CHECK(prev == val_of(3));
  CHECK_STATUS(dyn__map_swap(&m, 2, val_of(2), &prev), DYN_OK);
  CHECK(prev == NULL);
  CHECK_EQ_INT(m.n, 3);
  /* clear keeps the memory and forgets the entries. */
  size_t cap = dyn__map_cap(&m);
  dyn__map_clear(&m);
  CHECK_EQ_INT(m.n, 0);
  CHECK_EQ_INT(dyn__map_cap(&m), cap);
  CHECK(dyn__map_get(&m, 1) == NULL && dyn__map_get(&m, UINT64_MAX) == NULL);
  dyn__map_free(&m);
  CHECK(m.slots == NULL && dyn__map_cap(&m) == 0 && m.n == 0);
  /* Usable again after free. */
  CHECK_STATUS(dyn__map_put(&m, 5, val_of(5)), DYN_OK);
  CHECK(dyn__map_get(&m, 5) == val_of(5));
  dyn__map_free(&m);
}

/* The table stays under half full through growth. */
static void test_growth(void) {
  dyn__map_t m;
  dyn__map_init(&m);
  int ok = 1, load_ok = 1;
  for (uint64_t k = 1; k <= 100000; k++) {
    if (dyn__map_add(&m, k, val_of(k))) ok = 0;
    if (m.n * 2 > dyn__map_cap(&m)) load_ok = 0;
  }
  CHECK(ok);
  CHECK(load_ok);
  CHECK_EQ_INT(m.n, 100000);
  CHECK((dyn__map_cap(&m) & m.mask) == 0);
  int found = 1;
  for (uint64_t k = 1; k <= 100000; k++)
    if (dyn__map_get(&m, k) != val_of(k)) found = 0;
  CHECK(found);
  CHECK(dyn__map_get(&m, 100001) == NULL);
  dyn__map_free(&m);
}

/* Keys whose mixed value has its low 12 bits zero share one home slot at
 * every table size up to 4,096: one long probe run, wrapped and shifted. */
#define RUN_BITS 0xfffu
static uint64_t same_home[1500];
static void find_same_home(void) {
  size_t n = 0;
  for (uint64_t k = 1; n < 1500; k++)
    if ((dyn__map_mix(k) & RUN_BITS) == 0) same_home[n++] = k;
}

static void test_collisions(void) {
  dyn__map_t m;
  dyn__map_init(&m);
  const uint32_t N = 1500;
  int ok = 1;
  for (uint32_t i = 0; i < N; i++)
    if (dyn__map_add(&m, same_home[i], val_of(same_home[i]))) ok = 0;
  CHECK(ok);
  CHECK(dyn__map_cap(&m) <= RUN_BITS + 1); /* so they really share a home slot */
  /* Delete every third from the run; the others stay findable. */
  int del_ok = 1, find_ok = 1;
  for (uint32_t i = 0; i < N; i += 3)
    if (dyn__map_del(&m, same_home[i]) != val_of(same_home[i])) del_ok = 0;
  CHECK(del_ok);
  for (uint32_t i = 0; i < N; i++) {
    void *v = dyn__map_get(&m, same_home[i]);
    if (i % 3 == 0 ? v != NULL : v != val_of(same_home[i])) find_ok = 0;
  }
  CHECK(find_ok);
  /* Mix in keys whose home slots sit inside the run. */
  ok = 1;
  for (uint64_t k = 1; k < 64; k++)
    if (dyn__map_put(&m, k + (1ull << 40), val_of(k))) ok = 0;
  CHECK(ok);
  for (uint32_t i = 1; i < N; i += 3) dyn__map_del(&m, same_home[i]);
  find_ok = 1;
  for (uint64_t k = 1; k < 64; k++)
    if (dyn__map_get(&m, k + (1ull << 40)) != val_of(k)) find_ok = 0;
  for (uint32_t i = 2; i < N; i += 3)
    if (dyn__map_get(&m, same_home[i]) != val_of(same_home[i])) find_ok = 0;
  CHECK(find_ok);
  CHECK_EQ_INT(m.n, N / 3 + 63);
  dyn__map_free(&m);
}

/* Random adds, gets and deletes against a plain array model. */
static void random_ops(uint32_t key_range, int ops, int colliding) {
  enum { MAXK = 4096 };
  static uint64_t model_key[MAXK];
  static int model_live[MAXK];
  memset(model_live, 0, sizeof model_live);
  /* The key universe: small ints, or keys sharing a home slot plus
   * neighbours. */
  for (uint32_t i = 0; i < key_range && i < MAXK; i++)
    model_key[i] = colliding && i % 2 && i / 2 < 1500 ? same_home[i / 2] : i;
  dyn__map_t m;
  dyn__map_init(&m);
  size_t live = 0;
  int mismatches = 0;
  for (int op = 0; op < ops; op++) {
    uint32_t i = rnd() % key_range;
    uint64_t k = model_key[i];
    switch (rnd() % 3) {
      case 0: {
        int rc = dyn__map_add(&m, k, val_of(k));
        if (rc != (model_live[i] ? DYN_EEXIST : DYN_OK)) mismatches++;
        if (!model_live[i]) live++;
        model_live[i] = 1;
        break;
      }
      case 1: {
        void *v = dyn__map_del(&m, k);
        if (v != (model_live[i] ? val_of(k) : NULL)) mismatches++;
        if (model_live[i]) live--;
        model_live[i] = 0;
        break;
      }
      default:
        if (dyn__map_get(&m, k) != (model_live[i] ? val_of(k) : NULL)) mismatches++;
    }
    if (m.n != live) mismatches++;
    /* Now and then, the whole table against the model. */
    if (op % 997 == 0)
      for (uint32_t j = 0; j < key_range; j++)
        if (dyn__map_get(&m, model_key[j]) != (model_live[j] ? val_of(model_key[j]) : NULL))
          mismatches++;
  }
  CHECK_MSG(mismatches == 0, "%d mismatches (range %u, colliding %d)", mismatches, key_range,
            colliding);
  /* Every slot holds a live key, each at most once. */
  size_t used = 0;
  for (size_t s = 0; s < dyn__map_cap(&m); s++) used += m.slots[s].val != NULL;
  CHECK_EQ_INT(used, live);
  dyn__map_free(&m);
}

/* put (which replaces) and del over keys drawn from a small range, so many
 * are equal and 0 is among them, against a naive model. */
static uint64_t rnd64(void) { return (uint64_t)rnd() << 32 | rnd(); }
static size_t below(size_t n) { return (size_t)(rnd64() % n); }

static void test_replace_model(void) {
  enum { N = 600 };
  uint64_t keys[N];
  int present[N] = {0};
  dyn__map_t m;
  dyn__map_init(&m);
  for (int i = 0; i < N; i++) keys[i] = i < 4 ? (uint64_t)i : rnd64() & 0xffff; /* 0 is a key */
  int bad = 0;
  for (int step = 0; step < 200000; step++) {
    int i = (int)below(N);
    if (rnd64() & 1) {
      if (dyn__map_put(&m, keys[i], &keys[i])) bad++;
      for (int j = 0; j < N; j++) /* equal keys share an entry */
        if (keys[j] == keys[i]) present[j] = i + 1;
    } else {
      void *v = dyn__map_del(&m, keys[i]);
      if ((v != NULL) != (present[i] != 0)) bad++;
      for (int j = 0; j < N; j++)
        if (keys[j] == keys[i]) present[j] = 0;
    }
    if (step % 1000 == 0) {
      size_t n = 0;
      for (int j = 0; j < N; j++) {
        void *v = dyn__map_get(&m, keys[j]);
        if (present[j] ? v != &keys[present[j] - 1] : v != NULL) bad++;
      }
      for (size_t s = 0; s < dyn__map_cap(&m); s++) n += m.slots[s].val != NULL;
      if (n != m.n) bad++;
    }
  }
  CHECK_EQ_INT(bad, 0);
  dyn__map_free(&m);
}

static void test_drain(void) {
  dyn__map_t m;
  dyn__map_init(&m);
  size_t n = 99;
  void **v = dyn__map_drain(&m, &n);
  CHECK(v == NULL);
  CHECK_EQ_INT(n, 0);
  for (uint32_t k = 1; k <= 1000; k++) dyn__map_add(&m, k * 7, val_of(k * 7));
  for (uint32_t k = 1; k <= 1000; k += 2) dyn__map_del(&m, k * 7);
  v = dyn__map_drain(&m, &n);
  CHECK(v != NULL);
  CHECK_EQ_INT(n, 500);
  CHECK_EQ_INT(m.n, 0);
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
  CHECK(dyn__map_get(&m, 14) == NULL);
  /* The emptied map works as new. */
  CHECK_STATUS(dyn__map_add(&m, 14, val_of(14)), DYN_OK);
  CHECK(dyn__map_get(&m, 14) == val_of(14));
  v = dyn__map_drain(&m, &n);
  CHECK_EQ_INT(n, 1);
  free(v);
  dyn__map_free(&m);
}

int main(void) {
  h_init("map");
  find_same_home();
  test_basics();
  test_growth();
  test_collisions();
  random_ops(8, 20000, 0);      /* tiny table: wraparound */
  random_ops(40, 50000, 1);     /* collisions and neighbours */
  random_ops(3000, 200000, 0);  /* growth with churn */
  random_ops(3000, 200000, 1);
  test_replace_model();
  test_drain();
  TEST_END();
}
