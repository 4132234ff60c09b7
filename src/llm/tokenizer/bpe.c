/* bpe.c - byte-pair merging of one pre-tokenized word.
 *
 * A word starts as one id per byte; BPE repeatedly merges the adjacent pair
 * with the lowest merge rank (leftmost on ties) until no pair has a merge.
 * The result must equal HF tokenizers' Word::merge_all exactly, so this is
 * the same algorithm: a min-heap of candidate merges keyed (rank, position)
 * over a doubly linked list of symbols; a popped candidate whose symbols
 * have changed since it was pushed is stale and skipped. O(n log n) per
 * word, so a pathological 1 MB "word" costs milliseconds, not minutes.
 * Most words are short, and for them a plain array is faster than the
 * heap (measured: about 2x on English text): keep each adjacent pair's rank,
 * merge the leftmost lowest, look up only the two pairs the merge changed.
 * Both pick the same merge at every step, so they give the same ids.
 *
 * The merge table maps a pair of ids to (rank, merged id) in an
 * open-addressing hash keyed by the 64-bit pair: no strings on this path.
 */
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"

#define EMPTY UINT64_MAX

static size_t slot_of(uint64_t key, size_t mask) {
  key ^= key >> 33;
  key *= 0xff51afd7ed558ccdull;
  key ^= key >> 33;
  return (size_t)key & mask;
}

int dyn__merges_init(dyn__merges_t *m, size_t expected) {
  size_t cap = 16;
  while (cap < expected * 2) cap <<= 1; /* load factor <= 0.5 */
  m->slots = malloc(cap * sizeof *m->slots);
  if (!m->slots) return DYN_ENOMEM;
  for (size_t i = 0; i < cap; i++) m->slots[i].key = EMPTY;
  m->mask = cap - 1;
  m->n = 0;
  return DYN_OK;
}

void dyn__merges_free(dyn__merges_t *m) {
  free(m->slots);
  m->slots = NULL;
}

int dyn__merges_add(dyn__merges_t *m, uint32_t left, uint32_t right, uint32_t rank, uint32_t id) {
  if ((m->n + 1) * 2 > m->mask + 1) return DYN_EINVAL; /* sized by init */
  uint64_t key = (uint64_t)left << 32 | right;
  for (size_t i = slot_of(key, m->mask);; i = (i + 1) & m->mask) {
    dyn__merge_slot_t *s = &m->slots[i];
    if (s->key == key) { /* listed twice: the last wins, as in HF */
      s->rank = rank;
      s->id = id;
      return DYN_OK;
    }
    if (s->key == EMPTY) {
      *s = (dyn__merge_slot_t){key, rank, id};
      m->n++;
      return DYN_OK;
    }
  }
}

const dyn__merge_slot_t *dyn__merges_get(const dyn__merges_t *m, uint32_t left, uint32_t right) {
  uint64_t key = (uint64_t)left << 32 | right;
  for (size_t i = slot_of(key, m->mask);; i = (i + 1) & m->mask) {
    const dyn__merge_slot_t *s = &m->slots[i];
    if (s->key == key) return s;
    if (s->key == EMPTY) return NULL;
  }
}

typedef struct sym {
  uint32_t id;
  int32_t prev, next; /* -1: none */
  bool dead;
} sym_t;

typedef struct cand {
  uint32_t rank, pos, id;
} cand_t;

static bool before(const cand_t *a, const cand_t *b) {
  return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(cand_t *h, size_t *n, cand_t c) {
  size_t i = (*n)++;
  while (i > 0) {
    size_t parent = (i - 1) / 2;
    if (!before(&c, &h[parent])) break;
    h[i] = h[parent];
    i = parent;
  }
  h[i] = c;
}

static cand_t heap_pop(cand_t *h, size_t *n) {
  cand_t top = h[0], last = h[--*n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= *n) break;
    if (c + 1 < *n && before(&h[c + 1], &h[c])) c++;
    if (!before(&h[c], &last)) break;
    h[i] = h[c];
    i = c;
  }
  h[i] = last;
  return top;
}

static void push_pair(const dyn__merges_t *m, cand_t *h, size_t *hn, const sym_t *s, int32_t pos) {
  const dyn__merge_slot_t *mg = dyn__merges_get(m, s[pos].id, s[s[pos].next].id);
  if (mg) heap_push(h, hn, (cand_t){mg->rank, (uint32_t)pos, mg->id});
}

static int reserve(dyn__bpe_scratch_t *sc, size_t n) {
  if (n <= sc->cap) return DYN_OK;
  size_t cap = sc->cap ? sc->cap : 64;
  while (cap < n) cap *= 2;
  sym_t *sym = realloc(sc->sym, cap * sizeof *sym);
  if (!sym) return DYN_ENOMEM;
  sc->sym = sym;
  /* Each merge pushes at most two candidates, each popped candidate is
   * gone: n - 1 initial plus 2 per merge stays under 3n. */
  cand_t *heap = realloc(sc->heap, 3 * cap * sizeof *heap);
  if (!heap) return DYN_ENOMEM;
  sc->heap = heap;
  sc->cap = cap;
  return DYN_OK;
}

void dyn__bpe_scratch_free(dyn__bpe_scratch_t *s) {
  free(s->sym);
  free(s->heap);
  memset(s, 0, sizeof *s);
}

#define SMALL 48 /* words up to this many bytes take the array path */
#define NONE UINT32_MAX

static void rank_pair(const dyn__merges_t *m, const uint32_t *ids, size_t i, uint32_t *rank,
                      uint32_t *merged) {
  const dyn__merge_slot_t *mg = dyn__merges_get(m, ids[i], ids[i + 1]);
  rank[i] = mg ? mg->rank : NONE;
  merged[i] = mg ? mg->id : 0;
}

static size_t bpe_small(const dyn__merges_t *m, uint32_t *ids, size_t n) {
  uint32_t rank[SMALL], merged[SMALL]; /* of the pair (i, i + 1) */
  for (size_t i = 0; i + 1 < n; i++) rank_pair(m, ids, i, rank, merged);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; i++)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == NONE) break;
    ids[best] = merged[best];
    n--;
    size_t tail = n - best - 1; /* entries after the removed id */
    memmove(ids + best + 1, ids + best + 2, tail * sizeof *ids);
    memmove(rank + best + 1, rank + best + 2, (tail ? tail - 1 : 0) * sizeof *rank);
    memmove(merged + best + 1, merged + best + 2, (tail ? tail - 1 : 0) * sizeof *merged);
    if (best > 0) rank_pair(m, ids, best - 1, rank, merged);
    if (best + 1 < n) rank_pair(m, ids, best, rank, merged);
  }
  return n;
}

int dyn__bpe(const dyn__merges_t *m, dyn__bpe_scratch_t *sc, uint32_t *ids, size_t n,
             size_t *out_n) {
  *out_n = n;
  if (n < 2) return DYN_OK;
  if (n <= SMALL) {
    *out_n = bpe_small(m, ids, n);
    return DYN_OK;
  }
  if (n > INT32_MAX / 4) return DYN_EINVAL;
  int rc = reserve(sc, n);
  if (rc) return rc;
  sym_t *s = sc->sym;
  cand_t *h = sc->heap;
  size_t hn = 0;
  for (size_t i = 0; i < n; i++)
    s[i] = (sym_t){ids[i], (int32_t)i - 1, i + 1 < n ? (int32_t)i + 1 : -1, false};
  for (size_t i = 0; i + 1 < n; i++) push_pair(m, h, &hn, s, (int32_t)i);
  while (hn) {
    cand_t c = heap_pop(h, &hn);
    sym_t *left = &s[c.pos];
    if (left->dead || left->next < 0) continue;
    sym_t *right = &s[left->next];
    const dyn__merge_slot_t *mg = dyn__merges_get(m, left->id, right->id);
    if (!mg || mg->rank != c.rank || mg->id != c.id) continue; /* stale */
    left->id = c.id;
    right->dead = true;
    left->next = right->next;
    if (right->next >= 0) s[right->next].prev = (int32_t)c.pos;
    if (left->prev >= 0) push_pair(m, h, &hn, s, left->prev);
    if (left->next >= 0) push_pair(m, h, &hn, s, (int32_t)c.pos);
  }
  size_t k = 0;
  for (int32_t i = 0; i >= 0; i = s[i].next) ids[k++] = s[i].id;
  *out_n = k;
  return DYN_OK;
}
