/* kv_hash.c - block hashing of token sequences (see dynamo/llm/kv.h).
 *
 * A block's local hash names its tokens; its seq hash chains the parent's
 * seq hash with its local hash, so two blocks with the same tokens after
 * different prefixes get different seq hashes. The engine publishes these
 * hashes in its KV events and the router recomputes local hashes from a
 * prompt's tokens, so both sides must compute exactly the same bytes: the
 * tokens are hashed as little-endian uint32 whatever the host's order.
 */
#include "dynamo/llm/kv.h"

#include <xxhash.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define KV_HOST_LE 1
#else
#define KV_HOST_LE 0
#endif

dyn_kv_hash_t dyn_kv_hash_local(const uint32_t *tokens, size_t block_size, uint64_t seed) {
#if KV_HOST_LE
  /* The array already is the wire order: hash it in place. */
  return XXH3_64bits_withSeed(tokens, block_size * sizeof(uint32_t), seed);
#else
  /* Big-endian host: byte-swap through a small buffer, streaming, which
   * XXH3 guarantees gives the one-shot result. */
  XXH3_state_t st;
  XXH3_64bits_reset_withSeed(&st, seed);
  uint8_t chunk[256];
  size_t i = 0;
  while (i < block_size) {
    size_t k = 0;
    for (; k + 4 <= sizeof chunk && i < block_size; i++, k += 4) {
      uint32_t t = tokens[i];
      chunk[k] = (uint8_t)t;
      chunk[k + 1] = (uint8_t)(t >> 8);
      chunk[k + 2] = (uint8_t)(t >> 16);
      chunk[k + 3] = (uint8_t)(t >> 24);
    }
    XXH3_64bits_update(&st, chunk, k);
  }
  return XXH3_64bits_digest(&st);
#endif
}

dyn_kv_hash_t dyn_kv_hash_chain(dyn_kv_hash_t parent_seq, dyn_kv_hash_t local, uint64_t seed) {
  uint8_t b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = (uint8_t)(parent_seq >> (8 * i));
    b[8 + i] = (uint8_t)(local >> (8 * i));
  }
  return XXH3_64bits_withSeed(b, sizeof b, seed);
}

size_t dyn_kv_hash_blocks(const uint32_t *tokens, size_t n_tokens, size_t block_size,
                          uint64_t seed, dyn_kv_hash_t *local, dyn_kv_hash_t *seq, size_t cap) {
  if (block_size == 0) return 0;
  size_t n = n_tokens / block_size;
  if (!tokens) return n; /* nothing to read: the count alone */
  size_t todo = n < cap ? n : cap;
  dyn_kv_hash_t prev = 0;
  for (size_t i = 0; i < todo; i++) {
    dyn_kv_hash_t l = dyn_kv_hash_local(tokens + i * block_size, block_size, seed);
    if (local) local[i] = l;
    prev = i == 0 ? l : dyn_kv_hash_chain(prev, l, seed);
    if (seq) seq[i] = prev;
  }
  return n;
}
