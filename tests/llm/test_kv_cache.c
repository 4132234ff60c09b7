/* test_kv_cache.c - the simulated engine's paged KV cache: prefix reuse,
 * LRU eviction order, referenced blocks never evicted, the KV events it
 * emits (checked against dyn_kv_hash_blocks), generated tokens filling
 * blocks, a full pool making a request wait instead of failing, and the
 * event batch both engines use (kv_batch.h): runs, and a failed batch
 * dropped whole. */
#include "harness.h"
#include "llm/engine/kv_cache.h"

#define SEED DYN_KV_DEFAULT_SEED

/* A copy of every event the sink saw. */
typedef struct rec_ev {
  dyn_kv_event_kind_t kind;
  uint64_t id;
  int has_parent;
  dyn_kv_hash_t parent;
  size_t n;
  dyn_kv_hash_t h[16]; /* STORED: seq hashes; REMOVED: removed hashes */
  dyn_kv_hash_t local[16];
} rec_ev_t;

typedef struct rec {
  rec_ev_t ev[64];
  size_t n;
  size_t batches;
} rec_t;

static void sink(const dyn_kv_event_t *events, size_t n, void *ud) {
  rec_t *r = ud;
  r->batches++;
  for (size_t i = 0; i < n && r->n < 64; i++) {
    rec_ev_t *e = &r->ev[r->n++];
    memset(e, 0, sizeof *e);
    e->kind = events[i].kind;
    e->id = events[i].event_id;
    e->has_parent = events[i].has_parent;
    e->parent = events[i].parent_seq_hash;
    size_t k = events[i].kind == DYN_KV_STORED ? events[i].n_blocks : events[i].n_removed;
    e->n = k;
    for (size_t j = 0; j < k && j < 16; j++) {
      if (events[i].kind == DYN_KV_STORED) {
        e->h[j] = events[i].blocks[j].seq_hash;
        e->local[j] = events[i].blocks[j].local_hash;
      } else {
        e->h[j] = events[i].removed[j];
      }
    }
  }
}

/* tokens[i] = base + i, so different bases never share a block. */
static void fill(uint32_t *t, size_t n, uint32_t base) {
  for (size_t i = 0; i < n; i++) t[i] = base + (uint32_t)i;
}

static void hashes(const uint32_t *t, size_t n, size_t bs, dyn_kv_hash_t *local,
                   dyn_kv_hash_t *seq) {
  dyn_kv_hash_blocks(t, n, bs, SEED, local, seq, 64);
}

static void test_prefix_reuse(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 16, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t a[14];
  fill(a, 14, 100); /* 3 full blocks and a 2-token tail */
  dyn_kv_hash_t loc[8], seq[8];
  hashes(a, 14, 4, loc, seq);

  dyn__kv_seq_t s1 = {0}, s2 = {0}, s3 = {0};
  size_t cached = 99;
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s1, a, 14, &cached), DYN_OK);
  CHECK_EQ_INT(cached, 0);
  CHECK_EQ_INT(s1.n_blocks, 4);
  CHECK_EQ_INT(c.n_used, 4);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, a, 14), 0); /* nothing stored before prefill */
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s1, a, 14), DYN_OK);
  CHECK_EQ_INT(c.n_registered, 3);
  CHECK_EQ_INT(dyn__kv_cache_flush(&c), 1);
  REQUIRE(r.n == 1);
  CHECK_EQ_INT(r.ev[0].kind, DYN_KV_STORED);
  CHECK_EQ_INT(r.ev[0].has_parent, 0);
  CHECK_EQ_INT(r.ev[0].n, 3);
  for (int i = 0; i < 3; i++) {
    CHECK_EQ_U64(r.ev[0].h[i], seq[i]);
    CHECK_EQ_U64(r.ev[0].local[i], loc[i]);
  }

  /* The same prompt while s1 still runs: shares its 3 full blocks. */
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s2, a, 14, &cached), DYN_OK);
  CHECK_EQ_INT(cached, 3);
  for (int i = 0; i < 3; i++) CHECK_EQ_INT(s2.blocks[i], s1.blocks[i]);
  CHECK_NE_INT(s2.blocks[3], s1.blocks[3]); /* the partial tail is private */
  CHECK_EQ_INT(c.n_used, 5);
  CHECK_EQ_INT(c.blk[s1.blocks[0]].ref, 2);
  dyn__kv_cache_release(&c, &s1);
  dyn__kv_cache_release(&c, &s2);
  CHECK_EQ_INT(c.n_used, 0);
  CHECK_EQ_INT(c.n_lru, 3);

  /* Diverging after 2 blocks: 2 cached, and the rest is new. */
  uint32_t b[14];
  memcpy(b, a, sizeof b);
  b[9] = 7;
  CHECK_EQ_INT(dyn__kv_cache_match(&c, b, 14), 2);
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s3, b, 14, &cached), DYN_OK);
  CHECK_EQ_INT(cached, 2);
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s3, b, 14), DYN_OK);
  dyn__kv_cache_flush(&c);
  REQUIRE(r.n == 2);
  /* Only the new block is stored, as a child of block 1 of the prefix. */
  dyn_kv_hash_t bloc[8], bseq[8];
  hashes(b, 14, 4, bloc, bseq);
  CHECK_EQ_INT(r.ev[1].kind, DYN_KV_STORED);
  CHECK_EQ_INT(r.ev[1].has_parent, 1);
  CHECK_EQ_U64(r.ev[1].parent, seq[1]);
  CHECK_EQ_INT(r.ev[1].n, 1);
  CHECK_EQ_U64(r.ev[1].h[0], bseq[2]);
  CHECK(r.ev[1].id > r.ev[0].id);
  dyn__kv_cache_release(&c, &s3);
  dyn__kv_seq_free(&s1);
  dyn__kv_seq_free(&s2);
  dyn__kv_seq_free(&s3);
  dyn__kv_cache_free(&c);
}

/* Stores n tokens from base as a finished request: admit, commit, release. */
static void run_once(dyn__kv_cache_t *c, const uint32_t *t, size_t n) {
  dyn__kv_seq_t s = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(c, &s, t, n, NULL), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_commit(c, &s, t, n), DYN_OK);
  dyn__kv_cache_release(c, &s);
  dyn__kv_seq_free(&s);
}

static void test_lru_order(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 4, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t a[8], b[8], x[4], y[8];
  fill(a, 8, 100);
  fill(b, 8, 200);
  fill(x, 4, 300);
  fill(y, 8, 400);
  dyn_kv_hash_t al[4], as[4], bl[4], bs[4];
  hashes(a, 8, 4, al, as);
  hashes(b, 8, 4, bl, bs);
  run_once(&c, a, 8);
  run_once(&c, b, 8);
  /* Touch a again: it becomes the most recently used. */
  run_once(&c, a, 8);
  CHECK_EQ_INT(c.n_free, 0);
  CHECK_EQ_INT(c.n_lru, 4);
  dyn__kv_cache_flush(&c);
  r.n = 0;

  /* One new block evicts b's tail first (a sequence's tail before its head). */
  run_once(&c, x, 4);
  dyn__kv_cache_flush(&c);
  REQUIRE(r.n == 2);
  CHECK_EQ_INT(r.ev[0].kind, DYN_KV_REMOVED);
  CHECK_EQ_INT(r.ev[0].n, 1);
  CHECK_EQ_U64(r.ev[0].h[0], bs[1]);
  CHECK_EQ_INT(r.ev[1].kind, DYN_KV_STORED);
  CHECK_EQ_INT(c.evictions, 1);

  /* Two more: b's head, then a's tail (a was used after b), in one event. */
  r.n = 0;
  run_once(&c, y, 8);
  dyn__kv_cache_flush(&c);
  REQUIRE(r.n == 2);
  CHECK_EQ_INT(r.ev[0].kind, DYN_KV_REMOVED);
  CHECK_EQ_INT(r.ev[0].n, 2);
  CHECK_EQ_U64(r.ev[0].h[0], bs[0]);
  CHECK_EQ_U64(r.ev[0].h[1], as[1]);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, a, 8), 1);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, b, 8), 0);
  CHECK_EQ_INT(c.evictions, 3);
  dyn__kv_cache_free(&c);
}

static void test_referenced_never_evicted(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 4, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t a[8], b[8], x[12];
  fill(a, 8, 100);
  fill(b, 8, 200);
  fill(x, 12, 300);
  dyn__kv_seq_t held = {0}, s = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &held, a, 8, NULL), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &held, a, 8), DYN_OK);
  run_once(&c, b, 8); /* b: 2 cached blocks, a: 2 referenced */
  dyn__kv_cache_flush(&c);
  r.n = 0;

  /* 3 blocks cannot come from 2 evictable ones: the request must wait,
   * and the pool is left exactly as it was (no eviction, no event). */
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s, x, 12, NULL), DYN__KV_NOSPACE);
  CHECK_EQ_INT(s.n_blocks, 0);
  CHECK_EQ_INT(c.n_lru, 2);
  CHECK_EQ_INT(c.evictions, 0);
  CHECK_EQ_INT(dyn__kv_cache_flush(&c), 0);
  /* Growing a running sequence past the pool waits the same way. */
  CHECK_EQ_INT(dyn__kv_cache_grow(&c, &held, 24), DYN__KV_NOSPACE);
  CHECK_EQ_INT(held.n_blocks, 2);

  /* 2 blocks fit: b's go, a's (referenced) stay. */
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s, x, 8, NULL), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, a, 8), 2);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, b, 8), 0);
  CHECK_EQ_INT(c.n_used, 4);
  CHECK_EQ_INT(dyn__kv_cache_available(&c), 0);
  /* Nothing left to evict at all: wait. */
  dyn__kv_seq_t t = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &t, b, 4, NULL), DYN__KV_NOSPACE);
  /* Once the holder finishes, the waiting request fits. */
  dyn__kv_cache_release(&c, &held);
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &t, b, 4, NULL), DYN_OK);
  dyn__kv_cache_release(&c, &s);
  dyn__kv_cache_release(&c, &t);
  CHECK_EQ_INT(c.n_used, 0);
  dyn__kv_seq_free(&held);
  dyn__kv_seq_free(&s);
  dyn__kv_seq_free(&t);
  dyn__kv_cache_free(&c);
}

/* A sequence decoding token by token stores each block when it fills, as a
 * child of the previous one, and the conversation resent with the answer
 * hits those blocks. */
static void test_generated_blocks(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 16, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t t[16];
  fill(t, 16, 500);
  dyn_kv_hash_t loc[4], seq[4];
  hashes(t, 16, 4, loc, seq);

  dyn__kv_seq_t s = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s, t, 6, NULL), DYN_OK); /* prompt: 6 */
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s, t, 6), DYN_OK);
  dyn__kv_cache_flush(&c);
  REQUIRE(r.n == 1);
  CHECK_EQ_INT(r.ev[0].n, 1);
  CHECK_EQ_U64(r.ev[0].h[0], seq[0]);
  for (size_t n = 7; n <= 16; n++) { /* one decode step per token */
    CHECK_EQ_INT(dyn__kv_cache_grow(&c, &s, n), DYN_OK);
    CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s, t, n), DYN_OK);
    dyn__kv_cache_flush(&c);
  }
  CHECK_EQ_INT(s.n_blocks, 4);
  REQUIRE(r.n == 4); /* one STORED per block, at 8, 12 and 16 tokens */
  for (int i = 1; i < 4; i++) {
    CHECK_EQ_INT(r.ev[i].kind, DYN_KV_STORED);
    CHECK_EQ_INT(r.ev[i].has_parent, 1);
    CHECK_EQ_U64(r.ev[i].parent, seq[i - 1]);
    CHECK_EQ_INT(r.ev[i].n, 1);
    CHECK_EQ_U64(r.ev[i].h[0], seq[i]);
    CHECK_EQ_U64(r.ev[i].local[0], loc[i]);
    CHECK(r.ev[i].id > r.ev[i - 1].id);
  }
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s, t, 20), DYN_EINVAL); /* no block for it */
  dyn__kv_cache_release(&c, &s);
  /* The next turn resends all 16 tokens and more: all 4 blocks hit. */
  uint32_t turn2[20];
  memcpy(turn2, t, sizeof t);
  fill(turn2 + 16, 4, 900);
  size_t cached = 0;
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s, turn2, 20, &cached), DYN_OK);
  CHECK_EQ_INT(cached, 4);
  dyn__kv_cache_release(&c, &s);
  dyn__kv_seq_free(&s);
  dyn__kv_cache_free(&c);
}

/* Two sequences compute the same prefix at once: the second to finish
 * drops its copy for the first's, and says nothing (already stored). */
static void test_duplicate_prefix(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 8, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t a[8];
  fill(a, 8, 100);
  dyn__kv_seq_t s1 = {0}, s2 = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s1, a, 8, NULL), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s2, a, 8, NULL), DYN_OK);
  CHECK_EQ_INT(c.n_used, 4);
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s1, a, 8), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s2, a, 8), DYN_OK);
  CHECK_EQ_INT(c.n_used, 2);
  CHECK_EQ_INT(c.n_free, 6);
  CHECK_EQ_INT(s2.blocks[0], s1.blocks[0]);
  CHECK_EQ_INT(s2.blocks[1], s1.blocks[1]);
  CHECK_EQ_INT(c.blk[s1.blocks[1]].ref, 2);
  dyn__kv_cache_flush(&c);
  CHECK_EQ_INT(r.n, 1);
  CHECK_EQ_INT(r.ev[0].n, 2);
  dyn__kv_cache_release(&c, &s1);
  dyn__kv_cache_release(&c, &s2);
  CHECK_EQ_INT(c.n_lru, 2);
  dyn__kv_seq_free(&s1);
  dyn__kv_seq_free(&s2);
  dyn__kv_cache_free(&c);
}

static void test_reset(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 8, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  uint32_t a[8], b[8];
  fill(a, 8, 100);
  fill(b, 8, 200);
  run_once(&c, a, 8);
  dyn__kv_seq_t s = {0};
  CHECK_EQ_INT(dyn__kv_cache_admit(&c, &s, b, 8, NULL), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_commit(&c, &s, b, 8), DYN_OK);
  dyn__kv_cache_flush(&c);
  r.n = 0;
  CHECK_EQ_INT(dyn__kv_cache_reset(&c), DYN_OK);
  CHECK_EQ_INT(dyn__kv_cache_flush(&c), 1);
  CHECK_EQ_INT(r.ev[0].kind, DYN_KV_CLEARED);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, a, 8), 0);
  CHECK_EQ_INT(dyn__kv_cache_match(&c, b, 8), 0);
  CHECK_EQ_INT(c.n_lru, 0);
  CHECK_EQ_INT(c.n_free, 6); /* a's blocks are free again; b's still held */
  dyn__kv_cache_release(&c, &s);
  CHECK_EQ_INT(c.n_free, 8); /* no longer cached: straight to the free list */
  dyn__kv_seq_free(&s);
  dyn__kv_cache_free(&c);
}

/* Every block is in exactly one state, the counters agree with the blocks,
 * and every referenced block is counted by the sequences that hold it. */
static int consistent(const dyn__kv_cache_t *c, dyn__kv_seq_t *seqs, int n_seqs) {
  uint32_t used = 0, lru = 0, reg = 0, refs = 0, held = 0;
  for (uint32_t i = 0; i < c->num_blocks; i++) {
    const dyn__kv_blk_t *b = &c->blk[i];
    used += b->ref > 0;
    lru += b->ref == 0 && b->registered;
    reg += b->registered;
    refs += b->ref;
    if (b->registered && dyn__map_get(&c->map, b->seq_hash) != b) return 0;
  }
  for (int s = 0; s < n_seqs; s++) held += (uint32_t)seqs[s].n_blocks;
  return used == c->n_used && lru == c->n_lru && reg == c->n_registered &&
         c->n_used + c->n_lru + c->n_free == c->num_blocks && refs == held;
}

/* Random admits, decode growth and releases over a small pool, prompts
 * drawn from a few shared prefixes: the pool stays consistent throughout. */
static void test_random_ops(void) {
  dyn__kv_cache_t c;
  rec_t r = {0};
  REQUIRE(dyn__kv_cache_init(&c, 24, 4, SEED) == DYN_OK);
  dyn__kv_cache_set_sink(&c, sink, &r);
  enum { NS = 6, LEN = 40 };
  dyn__kv_seq_t seqs[NS];
  uint32_t toks[NS][LEN];
  size_t len[NS];
  memset(seqs, 0, sizeof seqs);
  memset(len, 0, sizeof len);
  uint64_t x = 12345;
  int ok = 1, waits = 0;
  for (int step = 0; step < 5000 && ok; step++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    int s = (int)((x >> 33) % NS), op = (int)((x >> 40) % 4);
    if (!len[s]) { /* admit: one of 3 prefixes, a random suffix */
      size_t n = 4 + (x >> 45) % 20;
      fill(toks[s], LEN, 1000 * (uint32_t)((x >> 50) % 3));
      for (size_t i = 12; i < LEN; i++) toks[s][i] = (uint32_t)((x >> 20) % 5 + i);
      int rc = dyn__kv_cache_admit(&c, &seqs[s], toks[s], n, NULL);
      if (rc == DYN_OK) {
        len[s] = n;
        ok = dyn__kv_cache_commit(&c, &seqs[s], toks[s], n) == DYN_OK;
      } else {
        ok = rc == DYN__KV_NOSPACE && seqs[s].n_blocks == 0;
        waits++;
      }
    } else if (op == 0 || len[s] == LEN) {
      dyn__kv_cache_release(&c, &seqs[s]);
      len[s] = 0;
    } else { /* one decode step */
      int rc = dyn__kv_cache_grow(&c, &seqs[s], len[s] + 1);
      if (rc == DYN_OK) ok = dyn__kv_cache_commit(&c, &seqs[s], toks[s], ++len[s]) == DYN_OK;
      else ok = rc == DYN__KV_NOSPACE;
    }
    dyn__kv_cache_flush(&c);
    if (ok) ok = consistent(&c, seqs, NS);
  }
  CHECK(ok);
  CHECK(waits > 0);
  CHECK(c.evictions > 0);
  for (int s = 0; s < NS; s++) {
    dyn__kv_cache_release(&c, &seqs[s]);
    dyn__kv_seq_free(&seqs[s]);
  }
  CHECK_EQ_INT(c.n_used, 0);
  dyn__kv_cache_free(&c);
}

static void test_bad_init(void) {
  dyn__kv_cache_t c;
  CHECK_EQ_INT(dyn__kv_cache_init(&c, 0, 16, SEED), DYN_EINVAL);
  CHECK_EQ_INT(dyn__kv_cache_init(&c, 16, 0, SEED), DYN_EINVAL);
}

/* The batch itself: a chain extends one STORED while the caller keeps it
 * open and the last event is its own; removals merge; a failed batch is
 * dropped whole, its ids skipped, and the next one goes out. */
static void test_batch(void) {
  dyn__kv_batch_t b;
  rec_t r = {0};
  dyn__kv_batch_init(&b);
  int run = 0;
  CHECK_EQ_INT(dyn__kv_batch_stored(&b, &run, 0, 0, (dyn_kv_block_t){1, 11}), DYN_OK);
  CHECK_EQ_INT(run, 1);
  CHECK_EQ_INT(dyn__kv_batch_stored(&b, &run, 1, 99, (dyn_kv_block_t){2, 12}), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 7), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 8), DYN_OK);
  /* run still set, but the last event is a REMOVED: a new STORED opens */
  CHECK_EQ_INT(dyn__kv_batch_stored(&b, &run, 1, 2, (dyn_kv_block_t){3, 13}), DYN_OK);
  run = 0; /* a skipped block ends the chain */
  CHECK_EQ_INT(dyn__kv_batch_stored(&b, &run, 1, 3, (dyn_kv_block_t){4, 14}), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_cleared(&b), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_flush(&b, sink, &r), 5);
  REQUIRE(r.n == 5);
  CHECK_EQ_INT(r.ev[0].kind, DYN_KV_STORED);
  CHECK_EQ_INT(r.ev[0].has_parent, 0);
  CHECK_EQ_INT(r.ev[0].n, 2);
  CHECK_EQ_U64(r.ev[0].h[1], 2);
  CHECK_EQ_U64(r.ev[0].local[1], 12);
  CHECK_EQ_INT(r.ev[1].kind, DYN_KV_REMOVED);
  CHECK_EQ_INT(r.ev[1].n, 2);
  CHECK_EQ_U64(r.ev[1].h[0], 7);
  CHECK_EQ_U64(r.ev[1].h[1], 8);
  CHECK_EQ_INT(r.ev[2].kind, DYN_KV_STORED);
  CHECK_EQ_INT(r.ev[2].has_parent, 1);
  CHECK_EQ_U64(r.ev[2].parent, 2);
  CHECK_EQ_U64(r.ev[2].h[0], 3);
  CHECK_EQ_INT(r.ev[3].n, 1);
  CHECK_EQ_U64(r.ev[3].parent, 3);
  CHECK_EQ_INT(r.ev[4].kind, DYN_KV_CLEARED);
  for (size_t i = 0; i < 5; i++) CHECK_EQ_U64(r.ev[i].id, i + 1);

  /* A failed batch goes nowhere; the next one does, after the gap. */
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 9), DYN_OK);
  dyn__kv_batch_fail(&b);
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 10), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_flush(&b, sink, &r), 1);
  CHECK_EQ_INT(r.batches, 1);
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 11), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_flush(&b, sink, &r), 1);
  REQUIRE(r.n == 6);
  CHECK_EQ_U64(r.ev[5].id, 7);
  CHECK_EQ_INT(r.ev[5].n, 1);
  CHECK_EQ_U64(r.ev[5].h[0], 11);

  /* drop forgets the events and the failure */
  CHECK_EQ_INT(dyn__kv_batch_removed(&b, 12), DYN_OK);
  dyn__kv_batch_fail(&b);
  dyn__kv_batch_drop(&b);
  CHECK_EQ_INT(dyn__kv_batch_cleared(&b), DYN_OK);
  CHECK_EQ_INT(dyn__kv_batch_flush(&b, sink, &r), 1);
  REQUIRE(r.n == 7);
  CHECK_EQ_INT(r.ev[6].kind, DYN_KV_CLEARED);
  CHECK_EQ_INT(dyn__kv_batch_flush(&b, sink, &r), 0);
  CHECK_EQ_INT(r.batches, 3);
  dyn__kv_batch_free(&b);
}

int main(void) {
  h_init("kv_cache");
  test_prefix_reuse();
  test_lru_order();
  test_referenced_never_evicted();
  test_generated_blocks();
  test_duplicate_prefix();
  test_reset();
  test_random_ops();
  test_bad_init();
  test_batch();
  TEST_END();
}
