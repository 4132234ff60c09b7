/* test_kv_hash.c - block hashing: the exact bytes hashed (checked against
 * XXH3 computed here directly), partial tails ignored, chaining, seeds,
 * and the cap on what is written. */
#include <xxhash.h>

#include "dynamo/llm/kv.h"
#include "harness.h"

/* The contract spelled out independently of kv_hash.c. */
static uint64_t ref_local(const uint32_t *t, size_t bs, uint64_t seed) {
  uint8_t b[256];
  for (size_t i = 0; i < bs; i++)
    for (int k = 0; k < 4; k++) b[4 * i + k] = (uint8_t)(t[i] >> (8 * k));
  return XXH3_64bits_withSeed(b, 4 * bs, seed);
}

static uint64_t ref_chain(uint64_t parent, uint64_t local, uint64_t seed) {
  uint8_t b[16];
  for (int k = 0; k < 8; k++) {
    b[k] = (uint8_t)(parent >> (8 * k));
    b[8 + k] = (uint8_t)(local >> (8 * k));
  }
  return XXH3_64bits_withSeed(b, 16, seed);
}

static void test_matches_xxh3(void) {
  uint32_t t[12];
  for (int i = 0; i < 12; i++) t[i] = 100000u * (uint32_t)i + 7u;
  dyn_kv_hash_t local[3], seq[3];
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 12, 4, DYN_KV_DEFAULT_SEED, local, seq, 3), 3);
  for (int i = 0; i < 3; i++)
    CHECK_EQ_U64(local[i], ref_local(t + 4 * i, 4, DYN_KV_DEFAULT_SEED));
  CHECK_EQ_U64(seq[0], local[0]);
  CHECK_EQ_U64(seq[1], ref_chain(seq[0], local[1], DYN_KV_DEFAULT_SEED));
  CHECK_EQ_U64(seq[2], ref_chain(seq[1], local[2], DYN_KV_DEFAULT_SEED));
  CHECK_EQ_U64(dyn_kv_hash_local(t + 4, 4, DYN_KV_DEFAULT_SEED), local[1]);
  CHECK_EQ_U64(dyn_kv_hash_chain(seq[0], local[1], DYN_KV_DEFAULT_SEED), seq[1]);
}

static void test_partial_tail(void) {
  uint32_t t[11];
  for (int i = 0; i < 11; i++) t[i] = (uint32_t)i;
  dyn_kv_hash_t a[4] = {0}, b[4] = {0}, sa[4], sb[4];
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 11, 4, 1, a, sa, 4), 2);
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 8, 4, 1, b, sb, 4), 2);
  CHECK_EQ_U64(a[0], b[0]);
  CHECK_EQ_U64(a[1], b[1]);
  CHECK_EQ_U64(sa[1], sb[1]);
  CHECK_EQ_U64(a[2], 0); /* nothing written for the tail */
  t[10] = 999;           /* changing the tail changes nothing */
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 11, 4, 1, a, sa, 4), 2);
  CHECK_EQ_U64(sa[1], sb[1]);
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 3, 4, 1, a, sa, 4), 0);
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 11, 0, 1, a, sa, 4), 0);
}

static void test_chaining(void) {
  /* Block X after prefix P1 and after prefix P2. */
  uint32_t s1[8] = {1, 2, 3, 4, 50, 51, 52, 53};
  uint32_t s2[8] = {9, 9, 9, 9, 50, 51, 52, 53};
  dyn_kv_hash_t l1[2], q1[2], l2[2], q2[2];
  dyn_kv_hash_blocks(s1, 8, 4, DYN_KV_DEFAULT_SEED, l1, q1, 2);
  dyn_kv_hash_blocks(s2, 8, 4, DYN_KV_DEFAULT_SEED, l2, q2, 2);
  CHECK_EQ_U64(l1[1], l2[1]);
  CHECK(q1[1] != q2[1]);
  CHECK(l1[0] != l2[0]);
  /* Token order within a block matters. */
  uint32_t s3[4] = {2, 1, 3, 4};
  CHECK(dyn_kv_hash_local(s3, 4, DYN_KV_DEFAULT_SEED) != l1[0]);
}

static void test_seed_and_cap(void) {
  uint32_t t[64];
  for (int i = 0; i < 64; i++) t[i] = (uint32_t)(i * 31);
  dyn_kv_hash_t a[4], b[4], sa[4], sb[4];
  dyn_kv_hash_blocks(t, 64, 16, 1, a, sa, 4);
  dyn_kv_hash_blocks(t, 64, 16, 2, b, sb, 4);
  for (int i = 0; i < 4; i++) {
    CHECK(a[i] != b[i]);
    CHECK(sa[i] != sb[i]);
  }
  /* cap bounds the writes, the return value still counts every block. */
  dyn_kv_hash_t c[4] = {0, 0, 0, 0};
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 64, 16, 1, NULL, c, 2), 4);
  CHECK_EQ_U64(c[0], sa[0]);
  CHECK_EQ_U64(c[1], sa[1]);
  CHECK_EQ_U64(c[2], 0);
  CHECK_EQ_INT(dyn_kv_hash_blocks(t, 64, 16, 1, NULL, NULL, 0), 4);
}

int main(void) {
  test_matches_xxh3();
  test_partial_tail();
  test_chaining();
  test_seed_and_cap();
  TEST_END();
}
