/* test_kv_indexer.c - the radix indexer against a brute-force reference.
 *
 * The reference keeps, per worker, the plain set of seq hashes it holds; a
 * worker's match for a query is the number of leading seq hashes of the
 * query in its set. Long random event streams (stores whose parents are
 * drawn from the worker's blocks, stores with unknown parents, removals,
 * clears, workers leaving and new ones joining, sequences sharing
 * prefixes and reusing local hashes under different parents) are applied
 * to both, and every K events random queries (prefixes of stored
 * sequences, mutated ones, junk) must give the same matches. The tree's
 * node count must equal the blocks held plus their ancestors, so pruning
 * frees exactly what it should. The seed is printed; DYN_TEST_SEED
 * overrides it.
 */
#include "dynamo/llm/kv.h"
#include "harness.h"
#include "common/map.h"

static uint64_t rng;
static uint64_t rnd(void) {
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

#define SEED DYN_KV_DEFAULT_SEED

/* ---- the block universe ------------------------------------------------- */

#define MAX_PROMPTS 300
#define MAX_LEN 48

typedef struct prompt {
  size_t len;
  dyn_kv_hash_t local[MAX_LEN];
  dyn_kv_hash_t seq[MAX_LEN];
} prompt_t;

static prompt_t prompts[MAX_PROMPTS];
static size_t nprompts;
static dyn__map_t parent_of; /* seq -> (prompt index, position) + 1, packed */

static dyn_kv_hash_t small_local(void) {
  /* A small alphabet: the same local hash recurs under many parents. */
  uint32_t t = (uint32_t)below(12);
  return dyn_kv_hash_local(&t, 1, SEED);
}

static void make_prompts(void) {
  dyn__map_init(&parent_of);
  nprompts = MAX_PROMPTS;
  for (size_t i = 0; i < nprompts; i++) {
    prompt_t *p = &prompts[i];
    size_t keep = 0;
    if (i > 0 && below(4)) { /* share a prefix with an earlier prompt */
      const prompt_t *q = &prompts[below(i)];
      keep = below(q->len + 1);
      memcpy(p->local, q->local, keep * sizeof p->local[0]);
    }
    p->len = keep + 1 + below(MAX_LEN - keep);
    for (size_t k = keep; k < p->len; k++) p->local[k] = small_local();
    for (size_t k = 0; k < p->len; k++) {
      p->seq[k] = k ? dyn_kv_hash_chain(p->seq[k - 1], p->local[k], SEED) : p->local[k];
      uintptr_t where = ((uintptr_t)i << 8 | k) + 1;
      dyn__map_put(&parent_of, p->seq[k], (void *)where);
    }
  }
}

/* The seq hash of the parent of block seq (which must be known); 0 and
 * *root set for a root. */
static dyn_kv_hash_t parent_seq(dyn_kv_hash_t seq, int *root) {
  uintptr_t where = (uintptr_t)dyn__map_get(&parent_of, seq) - 1;
  size_t k = where & 0xff;
  *root = k == 0;
  return k ? prompts[where >> 8].seq[k - 1] : 0;
}

/* ---- the reference ------------------------------------------------------ */

#define MAX_WORKERS 160

typedef struct ref_worker {
  uint64_t id;
  int live;
  int known; /* has stored something: the indexer knows it */
  dyn__map_t set;     /* seq -> index in held + 1 */
  dyn_kv_hash_t *held;   /* for drawing a random block */
  size_t n, cap;
} ref_worker_t;

static ref_worker_t ref[MAX_WORKERS];

static int ref_has(const ref_worker_t *w, dyn_kv_hash_t s) {
  return dyn__map_get(&w->set, s) != NULL;
}

static void ref_add(ref_worker_t *w, dyn_kv_hash_t s) {
  if (ref_has(w, s)) return;
  if (w->n == w->cap) {
    w->cap = w->cap ? 2 * w->cap : 64;
    w->held = realloc(w->held, w->cap * sizeof *w->held);
  }
  w->held[w->n] = s;
  dyn__map_put(&w->set, s, (void *)(uintptr_t)(++w->n));
}

static void ref_del(ref_worker_t *w, dyn_kv_hash_t s) {
  uintptr_t i = (uintptr_t)dyn__map_del(&w->set, s);
  if (!i) return;
  dyn_kv_hash_t last = w->held[--w->n];
  if (i - 1 != w->n) {
    w->held[i - 1] = last;
    dyn__map_put(&w->set, last, (void *)i);
  }
}

static void ref_clear(ref_worker_t *w) {
  dyn__map_clear(&w->set);
  w->n = 0;
}

static uint32_t ref_match(const ref_worker_t *w, const dyn_kv_hash_t *seq, size_t n) {
  uint32_t k = 0;
  while (k < n && ref_has(w, seq[k])) k++;
  return k;
}

/* ---- driving both ------------------------------------------------------- */

typedef struct run {
  dyn_kv_indexer_t *ix;
  size_t workers;
  uint64_t events, dropped_expected, stores_with_parent;
  int mismatches, queries;
  uint64_t matched_sum, matched_workers; /* how much the queries found */
} run_t;

static void new_worker(run_t *r, ref_worker_t *w) {
  w->id = rnd();
  w->live = 1;
  w->known = 0;
  ref_clear(w);
  (void)r;
}

/* STORED: mostly extends what the worker holds of a prompt. */
static void ev_store(run_t *r, ref_worker_t *w) {
  const prompt_t *p = &prompts[below(nprompts)];
  size_t have = ref_match(w, p->seq, p->len);
  size_t start;
  uint64_t dice = below(10);
  if (dice < 7) start = have;              /* extend the held prefix */
  else if (dice < 9) start = below(p->len); /* anywhere: parent may be unknown */
  else start = have ? below(have) : 0;      /* re-store held blocks */
  if (start >= p->len) start = p->len - 1;
  size_t k = 1 + below(p->len - start);
  dyn_kv_block_t blocks[MAX_LEN];
  for (size_t i = 0; i < k; i++) {
    blocks[i].seq_hash = p->seq[start + i];
    blocks[i].local_hash = p->local[start + i];
  }
  dyn_kv_event_t ev = {.kind = DYN_KV_STORED, .event_id = r->events, .blocks = blocks,
                       .n_blocks = k};
  if (start) {
    ev.has_parent = 1;
    ev.parent_seq_hash = p->seq[start - 1];
    r->stores_with_parent++;
  }
  int expect_drop = start && !ref_has(w, p->seq[start - 1]);
  int rc = dyn_kv_indexer_apply(r->ix, w->id, &ev);
  if (rc != (expect_drop ? DYN_ENOTFOUND : DYN_OK)) r->mismatches++;
  if (expect_drop) {
    r->dropped_expected++;
    return;
  }
  for (size_t i = 0; i < k; i++) ref_add(w, blocks[i].seq_hash);
  w->known = 1;
}

static void ev_remove(run_t *r, ref_worker_t *w) {
  dyn_kv_hash_t rm[16];
  size_t k = 1 + below(8), n = 0;
  if (below(2)) {
    /* Random blocks: holes mid-sequence (dups allowed). */
    for (size_t i = 0; i < k && w->n; i++) rm[n++] = w->held[below(w->n)];
  } else {
    /* Like an LRU engine: the tail of a held prefix, leaves first. */
    const prompt_t *p = &prompts[below(nprompts)];
    size_t have = ref_match(w, p->seq, p->len);
    for (size_t i = 0; i < k && i < have; i++) rm[n++] = p->seq[have - 1 - i];
  }
  if (below(4) == 0) rm[n++] = rnd();                                  /* an unknown one */
  dyn_kv_event_t ev = {.kind = DYN_KV_REMOVED, .event_id = r->events, .removed = rm,
                       .n_removed = n};
  if (dyn_kv_indexer_apply(r->ix, w->id, &ev) != DYN_OK) r->mismatches++;
  for (size_t i = 0; i < n; i++) ref_del(w, rm[i]);
}

static void query_and_compare(run_t *r) {
  dyn_kv_hash_t local[MAX_LEN], seq[MAX_LEN];
  const prompt_t *p = &prompts[below(nprompts)];
  size_t n = below(2) ? p->len : 1 + below(p->len);
  memcpy(local, p->local, n * sizeof local[0]);
  uint64_t dice = below(10);
  if (dice == 0) local[below(n)] = small_local();  /* mutated: diverges mid-way */
  else if (dice == 1) local[below(n)] = rnd();     /* a block nobody has */
  for (size_t k = 0; k < n; k++) seq[k] = k ? dyn_kv_hash_chain(seq[k - 1], local[k], SEED) : local[k];
  dyn_kv_match_t out[MAX_WORKERS];
  size_t cnt = dyn_kv_indexer_find_matches(r->ix, local, n, out, MAX_WORKERS);
  size_t want = 0;
  r->queries++;
  for (size_t i = 0; i < r->workers; i++) {
    if (!ref[i].live) continue;
    uint32_t m = ref_match(&ref[i], seq, n);
    if (!m) continue;
    want++;
    r->matched_workers++;
    r->matched_sum += m;
    size_t j = 0;
    while (j < cnt && j < MAX_WORKERS && out[j].worker_id != ref[i].id) j++;
    if (j == cnt || out[j].matched_blocks != m) {
      if (r->mismatches++ < 5)
        fprintf(stderr, "worker %zu: want %u got %d (query of %zu blocks)\n", i, m,
                j == cnt ? -1 : (int)out[j].matched_blocks, n);
    }
  }
  if (cnt != want && r->mismatches++ < 5)
    fprintf(stderr, "find_matches listed %zu workers, reference %zu\n", cnt, want);
  /* A smaller cap writes fewer entries but still counts them all. */
  if (cnt > 1) {
    dyn_kv_match_t one[1];
    if (dyn_kv_indexer_find_matches(r->ix, local, n, one, 1) != cnt) r->mismatches++;
  }
}

/* Nodes the tree must have: blocks any worker holds and their ancestors. */
static size_t expected_nodes(const run_t *r) {
  dyn__map_t seen;
  dyn__map_init(&seen);
  for (size_t i = 0; i < r->workers; i++) {
    if (!ref[i].live) continue;
    for (size_t k = 0; k < ref[i].n; k++) {
      dyn_kv_hash_t s = ref[i].held[k];
      int root = 0;
      while (!dyn__map_get(&seen, s)) {
        dyn__map_put(&seen, s, &seen);
        dyn_kv_hash_t ps = parent_seq(s, &root);
        if (root) break;
        s = ps;
      }
    }
  }
  size_t n = seen.n;
  dyn__map_free(&seen);
  return n;
}

static void check_counts(run_t *r) {
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(r->ix, &st);
  size_t blocks = 0, live = 0;
  for (size_t i = 0; i < r->workers; i++) {
    if (!ref[i].live) continue;
    live++;
    blocks += ref[i].n;
    if (dyn_kv_indexer_worker_blocks(r->ix, ref[i].id) != ref[i].n) r->mismatches++;
  }
  size_t want_nodes = expected_nodes(r);
  CHECK_MSG(st.nodes == want_nodes, "nodes %zu, expected %zu", st.nodes, want_nodes);
  CHECK_EQ_INT(st.worker_blocks, blocks);
  size_t known = 0;
  for (size_t i = 0; i < r->workers; i++) known += ref[i].live && ref[i].known;
  CHECK_EQ_INT(st.workers, known);
  (void)live;
  CHECK_EQ_INT(st.events_dropped, r->dropped_expected);
}

static void stream(size_t workers, size_t events, size_t every) {
  run_t r = {0};
  r.workers = workers;
  REQUIRE(dyn_kv_indexer_create(&r.ix) == DYN_OK);
  for (size_t i = 0; i < workers; i++) {
    dyn__map_init(&ref[i].set);
    new_worker(&r, &ref[i]);
  }
  for (r.events = 0; r.events < events; r.events++) {
    ref_worker_t *w = &ref[below(workers)];
    uint64_t dice = below(1000);
    if (dice < 650) {
      ev_store(&r, w);
    } else if (dice < 995) {
      ev_remove(&r, w);
    } else if (dice < 998) {
      dyn_kv_event_t ev = {.kind = DYN_KV_CLEARED, .event_id = r.events};
      if (dyn_kv_indexer_apply(r.ix, w->id, &ev) != DYN_OK) r.mismatches++;
      ref_clear(w);
    } else {
      /* The worker's instance leaves; a new one takes its place. */
      int rc = dyn_kv_indexer_remove_worker(r.ix, w->id);
      if (rc != (w->known ? DYN_OK : DYN_ENOTFOUND)) r.mismatches++;
      if (dyn_kv_indexer_worker_blocks(r.ix, w->id) != 0) r.mismatches++;
      if (dyn_kv_indexer_remove_worker(r.ix, w->id) != DYN_ENOTFOUND) r.mismatches++;
      new_worker(&r, w);
    }
    if (r.events % every == every - 1)
      for (int q = 0; q < 20; q++) query_and_compare(&r);
    if (r.events % 20000 == 19999) check_counts(&r);
  }
  check_counts(&r);
  /* Everybody leaves: the tree must be empty again. */
  for (size_t i = 0; i < workers; i++) dyn_kv_indexer_remove_worker(r.ix, ref[i].id);
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(r.ix, &st);
  CHECK_EQ_INT(st.nodes, 0);
  CHECK_EQ_INT(st.workers, 0);
  CHECK_EQ_INT(st.worker_blocks, 0);
  printf("%zu workers, %zu events: %d queries compared (%.2f matching workers a query, "
         "%.1f blocks each), %" PRIu64 " stores dropped (unknown parent), %d mismatches\n",
         workers, events, r.queries, (double)r.matched_workers / r.queries,
         r.matched_workers ? (double)r.matched_sum / (double)r.matched_workers : 0.0,
         r.dropped_expected, r.mismatches);
  CHECK(r.matched_workers > (uint64_t)r.queries / 2); /* the queries do find blocks */
  CHECK_EQ_INT(r.mismatches, 0);
  CHECK(r.queries > 0 && r.dropped_expected > 0 && r.stores_with_parent > 0);
  dyn_kv_indexer_destroy(r.ix);
  for (size_t i = 0; i < workers; i++) {
    dyn__map_free(&ref[i].set);
    free(ref[i].held);
    memset(&ref[i], 0, sizeof ref[i]);
  }
}

/* ---- hand-made cases ---------------------------------------------------- */

static void store(dyn_kv_indexer_t *ix, uint64_t w, const prompt_t *p, size_t from, size_t to) {
  dyn_kv_block_t b[MAX_LEN];
  for (size_t i = from; i < to; i++) {
    b[i - from].seq_hash = p->seq[i];
    b[i - from].local_hash = p->local[i];
  }
  dyn_kv_event_t ev = {.kind = DYN_KV_STORED, .blocks = b, .n_blocks = to - from,
                       .has_parent = from > 0, .parent_seq_hash = from ? p->seq[from - 1] : 0};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, w, &ev), DYN_OK);
}

static uint32_t match_of(dyn_kv_indexer_t *ix, uint64_t w, const prompt_t *p, size_t n) {
  dyn_kv_match_t out[8];
  size_t c = dyn_kv_indexer_find_matches(ix, p->local, n, out, 8);
  for (size_t i = 0; i < c && i < 8; i++)
    if (out[i].worker_id == w) return out[i].matched_blocks;
  return 0;
}

static void test_basics(void) {
  prompt_t p = {.len = 6};
  for (size_t k = 0; k < p.len; k++) {
    uint32_t t = (uint32_t)(k + 100);
    p.local[k] = dyn_kv_hash_local(&t, 1, SEED);
    p.seq[k] = k ? dyn_kv_hash_chain(p.seq[k - 1], p.local[k], SEED) : p.local[k];
  }
  dyn_kv_indexer_t *ix;
  REQUIRE(dyn_kv_indexer_create(&ix) == DYN_OK);
  store(ix, 7, &p, 0, 4);
  store(ix, 9, &p, 0, 2);
  CHECK_EQ_INT(match_of(ix, 7, &p, 6), 4);
  CHECK_EQ_INT(match_of(ix, 9, &p, 6), 2);
  CHECK_EQ_INT(match_of(ix, 7, &p, 3), 3); /* the query is shorter */
  store(ix, 7, &p, 4, 6);                  /* a STORED with a parent */
  CHECK_EQ_INT(match_of(ix, 7, &p, 6), 6);
  /* An unknown parent: dropped, counted, DYN_ENOTFOUND. */
  dyn_kv_block_t b = {p.seq[3], p.local[3]};
  dyn_kv_event_t orphan = {.kind = DYN_KV_STORED, .has_parent = 1,
                           .parent_seq_hash = p.seq[2], .blocks = &b, .n_blocks = 1};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 9, &orphan), DYN_ENOTFOUND);
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 12345, &orphan), DYN_ENOTFOUND);
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(ix, &st);
  CHECK_EQ_INT(st.events_dropped, 2);
  CHECK_EQ_INT(st.workers, 2); /* the orphan did not make 12345 known */
  CHECK_EQ_INT(st.nodes, 6);
  CHECK_EQ_INT(match_of(ix, 9, &p, 6), 2);
  /* A hole in the middle ends the match even though later blocks stay. */
  dyn_kv_hash_t hole = p.seq[1];
  dyn_kv_event_t rm = {.kind = DYN_KV_REMOVED, .removed = &hole, .n_removed = 1};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 7, &rm), DYN_OK);
  CHECK_EQ_INT(match_of(ix, 7, &p, 6), 1);
  CHECK_EQ_INT(dyn_kv_indexer_worker_blocks(ix, 7), 5);
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 7, &rm), DYN_OK); /* again: unknown */
  dyn_kv_indexer_get_stats(ix, &st);
  CHECK_EQ_INT(st.removed_unknown, 1);
  CHECK_EQ_INT(st.nodes, 6); /* the hole's node has children: it stays */
  /* A node conflicting with the tree: same parent and local, other seq. */
  dyn_kv_block_t liar = {p.seq[0] ^ 1, p.local[0]};
  dyn_kv_event_t conflict = {.kind = DYN_KV_STORED, .blocks = &liar, .n_blocks = 1};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 9, &conflict), DYN_EPROTO);
  /* Clearing 7 frees its branch beyond 9's blocks. */
  dyn_kv_event_t clr = {.kind = DYN_KV_CLEARED};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 7, &clr), DYN_OK);
  dyn_kv_indexer_get_stats(ix, &st);
  CHECK_EQ_INT(st.nodes, 2);
  CHECK_EQ_INT(st.workers, 2); /* cleared, still known */
  CHECK_EQ_INT(match_of(ix, 7, &p, 6), 0);
  CHECK_EQ_INT(dyn_kv_indexer_remove_worker(ix, 7), DYN_OK);
  CHECK_EQ_INT(dyn_kv_indexer_remove_worker(ix, 7), DYN_ENOTFOUND);
  CHECK_EQ_INT(dyn_kv_indexer_remove_worker(ix, 9), DYN_OK);
  dyn_kv_indexer_get_stats(ix, &st);
  CHECK_EQ_INT(st.nodes, 0);
  /* Bad arguments. */
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 1, NULL), DYN_EINVAL);
  dyn_kv_event_t weird = {.kind = (dyn_kv_event_kind_t)0};
  CHECK_STATUS(dyn_kv_indexer_apply(ix, 1, &weird), DYN_EINVAL);
  CHECK_EQ_INT(dyn_kv_indexer_find_matches(ix, p.local, 6, NULL, 0), 0);
  dyn_kv_indexer_destroy(ix);
}

int main(void) {
  const char *env = getenv("DYN_TEST_SEED");
  uint64_t seed = env ? strtoull(env, NULL, 0) : 20261127;
  printf("seed %" PRIu64 " (DYN_TEST_SEED overrides)\n", seed);
  rng = seed;
  test_basics();
  make_prompts();
  stream(8, 200000, 500);  /* one bitset word */
  stream(100, 40000, 400); /* slots past 64: the multi-word path */
  dyn__map_free(&parent_of);
  TEST_END();
}
