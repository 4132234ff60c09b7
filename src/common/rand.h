/* rand.h - the project's one pseudo-random generator: splitmix64 (Steele,
 * Lea, Flood), small, fast, good enough for routing choices, jitter and
 * simulated tokens, and seedable with any value (0 included), so a seed
 * replays every draw. Not for anything secret. */
#ifndef DYN__COMMON_RAND_H
#define DYN__COMMON_RAND_H
#include <stdint.h>

static inline uint64_t dyn__splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

#endif
