/* test_kv_predict.c - the router's guesses of blocks a worker will store:
 * confirmed by STORED, or handed back for removal once they expire. */
#include "harness.h"
#include "llm/kv/predict.h"

typedef struct seen {
  int n;
  uint64_t worker[16];
  dyn_kv_hash_t seq[16];
} seen_t;

static void record(void *ud, uint64_t worker, dyn_kv_hash_t seq) {
  seen_t *s = ud;
  if (s->n < 16) {
    s->worker[s->n] = worker;
    s->seq[s->n] = seq;
  }
  s->n++;
}

int main(void) {
  h_init("kv_predict");
  dyn__kv_predict_t *p;
  REQUIRE(dyn__kv_predict_create(&p) == DYN_OK);
  const dyn_kv_hash_t a[3] = {11, 12, 13}, b[2] = {12, 99};

  /* Worker 1 guesses 11,12,13 (expire at 100); worker 2 guesses 12,99 (200). */
  CHECK_STATUS(dyn__kv_predict_add(p, 1, a, 3, 100), DYN_OK);
  CHECK_STATUS(dyn__kv_predict_add(p, 2, b, 2, 200), DYN_OK);
  /* A block guessed again keeps its first expiry. */
  CHECK_STATUS(dyn__kv_predict_add(p, 1, a + 1, 1, 500), DYN_OK);
  CHECK_EQ_INT(dyn__kv_predict_pending(p), 5);

  /* Worker 1 stores 12: only that guess of worker 1 is confirmed. */
  dyn_kv_block_t stored[1] = {{12, 777}};
  dyn__kv_predict_confirm(p, 1, stored, 1);

  seen_t s = {0};
  CHECK_EQ_INT(dyn__kv_predict_expire(p, 99, record, &s), 0); /* nothing due yet */
  CHECK_EQ_INT(dyn__kv_predict_expire(p, 100, record, &s), 2);
  CHECK_EQ_INT(s.n, 2);
  CHECK(s.worker[0] == 1 && s.seq[0] == 11);
  CHECK(s.worker[1] == 1 && s.seq[1] == 13);
  CHECK_EQ_INT(dyn__kv_predict_pending(p), 2);

  /* Worker 2's 12 was never confirmed by worker 1's STORED. */
  s.n = 0;
  CHECK_EQ_INT(dyn__kv_predict_expire(p, 1000, record, &s), 2);
  CHECK(s.worker[0] == 2 && s.seq[0] == 12 && s.seq[1] == 99);
  CHECK_EQ_INT(dyn__kv_predict_pending(p), 0);

  /* Many guesses, half confirmed: exactly the other half comes back. */
  enum { N = 5000 };
  static dyn_kv_hash_t many[N];
  for (int i = 0; i < N; i++) many[i] = (dyn_kv_hash_t)i * 0x9e3779b97f4a7c15ull;
  CHECK_STATUS(dyn__kv_predict_add(p, 7, many, N, 2000), DYN_OK);
  for (int i = 0; i < N; i += 2) {
    dyn_kv_block_t blk = {many[i], 0};
    dyn__kv_predict_confirm(p, 7, &blk, 1);
  }
  s.n = 0;
  CHECK_EQ_INT(dyn__kv_predict_expire(p, 2000, record, &s), N / 2);
  CHECK_EQ_INT(dyn__kv_predict_pending(p), 0);
  /* A guess left pending is freed with the table (ASan checks). */
  CHECK_STATUS(dyn__kv_predict_add(p, 3, a, 3, 9000), DYN_OK);
  dyn__kv_predict_destroy(p);
  TEST_END();
}
