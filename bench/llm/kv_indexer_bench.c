/* kv_indexer_bench.c - the KV indexer, single thread: how fast it applies
 * workers' KV events, and how long find_matches takes for a long prompt.
 *
 * (1) Events: 64 workers serve requests made of one of 32 shared system
 *     prompts (64 blocks) and a fresh user part (16..128 blocks). A worker
 *     stores what it lacks (the user part under the system prompt, or the
 *     whole chain) and, past 10,000 blocks, evicts its oldest user parts
 *     leaves first, as an LRU engine does. The events are generated first;
 *     the timed part applies them: block events (stored + removed blocks)
 *     per second, straight to the indexer and through the wire codec
 *     (decode + apply, batches of 16 events, as a router receives them).
 * (2) Queries: a tree where each of 64 workers holds about 10,000 blocks:
 *     conversations of 256 blocks (4,096 tokens at block size 16) that
 *     start with a shared system prompt, each cached on 1..4 workers up to
 *     different depths. find_matches of a 256-block prompt: a stored
 *     conversation plus a new turn, and the worst case, a 256-block prompt
 *     every worker holds in full. Latency per call, p50 / p99 / max.
 *
 * Prints a table and RESULT lines. usage: kv_indexer_bench [scale]
 * (scale < 1 shrinks the event phase, for a quick run).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/kv/encode.h"
#include "bench.h"
#include "dynamo/llm/kv.h"
#include "dynamo/status.h"
#include "common/buf.h"

#define WORKERS 64
#define CAPACITY 10000
#define SYS_PROMPTS 32
#define SYS_BLOCKS 64
#define QUERY_BLOCKS 256

static uint64_t rng = 42;
static uint64_t rnd(void) {
  uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return (size_t)(rnd() % n); }

/* A chain of blocks with real chained hashes. */
static void chain(dyn_kv_block_t *b, size_t n, const dyn_kv_block_t *parent) {
  for (size_t i = 0; i < n; i++) {
    b[i].local_hash = rnd();
    dyn_kv_hash_t ps = i ? b[i - 1].seq_hash : parent ? parent->seq_hash : 0;
    b[i].seq_hash = (i || parent) ? dyn_kv_hash_chain(ps, b[i].local_hash, DYN_KV_DEFAULT_SEED)
                                  : b[i].local_hash;
  }
}

static dyn_kv_block_t sys_prompt[SYS_PROMPTS][SYS_BLOCKS];

/* ---- (1) event throughput ----------------------------------------------- */

typedef struct workload {
  dyn_kv_event_t *ev;
  uint64_t *worker;
  size_t n, cap, cap_worker;
  dyn_kv_block_t *blocks; /* every STORED block, in order */
  size_t nblocks, cap_blocks;
  dyn_kv_hash_t *removed;
  size_t nremoved, cap_removed;
  size_t stored_blocks, removed_blocks;
} workload_t;

typedef struct user_part {
  size_t off, n; /* into workload.blocks */
} user_part_t;

typedef struct sim_worker {
  int has_sys[SYS_PROMPTS];
  user_part_t *fifo; /* oldest first */
  size_t head, tail, cap;
  size_t held;
} sim_worker_t;

static void *grow(void *p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return p;
  while (*cap < need) *cap = *cap ? *cap * 2 : 1024;
  p = realloc(p, *cap * elem);
  if (!p) {
    perror("realloc");
    exit(1);
  }
  return p;
}

static void push_event(workload_t *wl, uint64_t worker, dyn_kv_event_t ev) {
  wl->ev = grow(wl->ev, &wl->cap, wl->n + 1, sizeof *wl->ev);
  wl->worker = grow(wl->worker, &wl->cap_worker, wl->n + 1, sizeof *wl->worker);
  wl->worker[wl->n] = worker;
  wl->ev[wl->n++] = ev;
}

/* Arrays may move while generating, so events hold offsets until fixup. */
static void build_workload(workload_t *wl, size_t target_blocks) {
  memset(wl, 0, sizeof *wl);
  static sim_worker_t sw[WORKERS];
  memset(sw, 0, sizeof sw);
  uint64_t id = 0;
  while (wl->stored_blocks + wl->removed_blocks < target_blocks) {
    size_t w = below(WORKERS), s = below(SYS_PROMPTS), user = 16 + below(113);
    sim_worker_t *k = &sw[w];
    size_t sys_n = k->has_sys[s] ? 0 : SYS_BLOCKS;
    size_t off = wl->nblocks;
    wl->blocks = grow(wl->blocks, &wl->cap_blocks, off + sys_n + user, sizeof *wl->blocks);
    memcpy(wl->blocks + off, sys_prompt[s], sys_n * sizeof *wl->blocks);
    chain(wl->blocks + off + sys_n, user, &sys_prompt[s][SYS_BLOCKS - 1]);
    wl->nblocks += sys_n + user;
    dyn_kv_event_t ev = {.kind = DYN_KV_STORED, .event_id = id++,
                         .blocks = (void *)(uintptr_t)off, .n_blocks = sys_n + user};
    if (!sys_n) {
      ev.has_parent = 1;
      ev.parent_seq_hash = sys_prompt[s][SYS_BLOCKS - 1].seq_hash;
    }
    push_event(wl, w, ev);
    wl->stored_blocks += sys_n + user;
    k->has_sys[s] = 1;
    k->held += sys_n + user;
    k->fifo = grow(k->fifo, &k->cap, k->tail + 1, sizeof *k->fifo);
    k->fifo[k->tail++] = (user_part_t){off + sys_n, user};
    /* Evict the oldest user parts, leaves first (system prompts stay). */
    while (k->held > CAPACITY && k->head < k->tail) {
      user_part_t u = k->fifo[k->head++];
      size_t roff = wl->nremoved;
      wl->removed = grow(wl->removed, &wl->cap_removed, roff + u.n, sizeof *wl->removed);
      for (size_t i = 0; i < u.n; i++) wl->removed[roff + i] = wl->blocks[u.off + u.n - 1 - i].seq_hash;
      wl->nremoved += u.n;
      dyn_kv_event_t rm = {.kind = DYN_KV_REMOVED, .event_id = id++,
                           .removed = (void *)(uintptr_t)roff, .n_removed = u.n};
      push_event(wl, w, rm);
      wl->removed_blocks += u.n;
      k->held -= u.n;
    }
  }
  for (size_t i = 0; i < wl->n; i++) {
    dyn_kv_event_t *e = &wl->ev[i];
    if (e->kind == DYN_KV_STORED) e->blocks = wl->blocks + (uintptr_t)e->blocks;
    else e->removed = wl->removed + (uintptr_t)e->removed;
  }
  for (size_t w = 0; w < WORKERS; w++) free(sw[w].fifo);
}

/* Applies every event; *us_stored / *us_removed get the time spent in
 * each kind (a clock read around each event: ~1% of an event's cost). */
static double apply_direct(const workload_t *wl, dyn_kv_indexer_t *ix, double *us_stored,
                           double *us_removed) {
  double t0 = now_us(), t = t0;
  *us_stored = *us_removed = 0;
  for (size_t i = 0; i < wl->n; i++) {
    int rc = dyn_kv_indexer_apply(ix, wl->worker[i], &wl->ev[i]);
    if (rc) {
      fprintf(stderr, "apply: %s\n", dyn_strerror(rc));
      exit(1);
    }
    double t1 = now_us();
    *(wl->ev[i].kind == DYN_KV_STORED ? us_stored : us_removed) += t1 - t;
    t = t1;
  }
  return t - t0;
}

static int on_event(void *ud, uint64_t worker, const dyn_kv_event_t *ev) {
  return dyn_kv_indexer_apply(ud, worker, ev);
}

/* Batches of up to 16 consecutive events of one worker, as a worker's
 * publisher would send them (here mostly a STORED and its evictions). */
static double apply_codec(const workload_t *wl, dyn_kv_indexer_t *ix, size_t *nbatches) {
  dyn__buf_t buf;
  dyn__buf_init(&buf);
  size_t *ends = malloc((wl->n + 1) * sizeof *ends);
  size_t nb = 0;
  for (size_t i = 0; i < wl->n;) {
    size_t j = i + 1;
    while (j < wl->n && j - i < 16 && wl->worker[j] == wl->worker[i]) j++;
    if (dyn__kv_encode(&buf, wl->worker[i], wl->ev + i, j - i)) exit(1);
    ends[nb++] = buf.len;
    i = j;
  }
  double t0 = now_us();
  size_t off = 0;
  for (size_t b = 0; b < nb; b++) {
    const char *why = NULL;
    int rc = dyn_kv_decode(buf.data + off, ends[b] - off, NULL, on_event, ix, &why);
    if (rc) {
      fprintf(stderr, "decode: %s (%s)\n", dyn_strerror(rc), why ? why : "-");
      exit(1);
    }
    off = ends[b];
  }
  double t = now_us() - t0;
  *nbatches = nb;
  free(ends);
  dyn__buf_free(&buf);
  return t;
}

/* ---- (2) queries --------------------------------------------------------- */

typedef struct convo {
  dyn_kv_block_t b[QUERY_BLOCKS];
} convo_t;

static void store_chain(dyn_kv_indexer_t *ix, uint64_t w, const dyn_kv_block_t *b, size_t n) {
  dyn_kv_event_t ev = {.kind = DYN_KV_STORED, .blocks = b, .n_blocks = n};
  if (dyn_kv_indexer_apply(ix, w, &ev)) exit(1);
}

static void print_lat(const char *name, double *lat, size_t n, double avg_depth, double avg_w) {
  qsort(lat, n, sizeof *lat, bench_cmp_double);
  double p50 = lat[n * 50 / 100], p99 = lat[n * 99 / 100], mx = lat[n - 1];
  printf("| find_matches %-28s | p50 %6.2f us | p99 %6.2f us | max %6.2f us | depth %5.1f, %4.1f workers |\n",
         name, p50, p99, mx, avg_depth, avg_w);
  printf("RESULT name=kv_find_matches_%s p50_us=%.2f p99_us=%.2f\n", name, p50, p99);
}

static void bench_queries(void) {
  dyn_kv_indexer_t *ix;
  if (dyn_kv_indexer_create(&ix)) exit(1);
  /* Conversations: system prompt + 192 user blocks; each cached on 1..4
   * workers, each up to its own depth (a worker that served an earlier
   * turn holds a shorter prefix). */
  size_t nconv = WORKERS * CAPACITY / ((QUERY_BLOCKS - SYS_BLOCKS) * 2) + 1;
  convo_t *cv = malloc(nconv * sizeof *cv);
  size_t held[WORKERS] = {0};
  size_t placed = 0;
  for (size_t c = 0; c < nconv; c++) {
    size_t s = below(SYS_PROMPTS);
    memcpy(cv[c].b, sys_prompt[s], sizeof sys_prompt[s]);
    chain(cv[c].b + SYS_BLOCKS, QUERY_BLOCKS - SYS_BLOCKS, &sys_prompt[s][SYS_BLOCKS - 1]);
    size_t copies = 1 + below(4);
    for (size_t k = 0; k < copies; k++) {
      uint64_t w = below(WORKERS);
      if (held[w] >= CAPACITY) continue;
      size_t depth = k == 0 ? QUERY_BLOCKS : SYS_BLOCKS + below(QUERY_BLOCKS - SYS_BLOCKS + 1);
      store_chain(ix, w, cv[c].b, depth);
      held[w] = dyn_kv_indexer_worker_blocks(ix, w);
      placed++;
    }
  }
  /* The worst case: one 256-block prompt every worker holds in full. */
  convo_t hot;
  chain(hot.b, QUERY_BLOCKS, NULL);
  for (uint64_t w = 0; w < WORKERS; w++) store_chain(ix, w, hot.b, QUERY_BLOCKS);
  dyn_kv_indexer_stats_t st;
  dyn_kv_indexer_get_stats(ix, &st);
  printf("| tree: %zu workers, %zu nodes, %zu worker-blocks (%.0f per worker), %zu conversations |\n",
         st.workers, st.nodes, st.worker_blocks, (double)st.worker_blocks / WORKERS, nconv);

  enum { Q = 20000 };
  double *lat = malloc(Q * sizeof *lat);
  dyn_kv_hash_t local[QUERY_BLOCKS];
  dyn_kv_match_t out[WORKERS];
  double depth = 0, nw = 0;
  for (size_t q = 0; q < Q; q++) {
    /* A stored conversation's next turn: its first 192..256 blocks, the
     * rest new text. */
    const convo_t *c = &cv[below(nconv)];
    size_t known = QUERY_BLOCKS - below(QUERY_BLOCKS - SYS_BLOCKS - 64 + 1);
    for (size_t i = 0; i < QUERY_BLOCKS; i++) local[i] = i < known ? c->b[i].local_hash : rnd();
    double t0 = now_us();
    size_t m = dyn_kv_indexer_find_matches(ix, local, QUERY_BLOCKS, out, WORKERS);
    lat[q] = now_us() - t0;
    uint32_t best = 0;
    for (size_t i = 0; i < m; i++)
      if (out[i].matched_blocks > best) best = out[i].matched_blocks;
    depth += best;
    nw += (double)m;
  }
  print_lat("conversation_turn", lat, Q, depth / Q, nw / Q);
  for (size_t i = 0; i < QUERY_BLOCKS; i++) local[i] = hot.b[i].local_hash;
  depth = nw = 0;
  for (size_t q = 0; q < Q; q++) {
    double t0 = now_us();
    size_t m = dyn_kv_indexer_find_matches(ix, local, QUERY_BLOCKS, out, WORKERS);
    lat[q] = now_us() - t0;
    depth += m ? out[0].matched_blocks : 0;
    nw += (double)m;
  }
  print_lat("all_64_hold_256", lat, Q, depth / Q, nw / Q);
  free(lat);
  free(cv);
  dyn_kv_indexer_destroy(ix);
}

int main(int argc, char **argv) {
  double scale = argc > 1 ? atof(argv[1]) : 1.0;
  if (scale <= 0) scale = 1.0;
  for (size_t s = 0; s < SYS_PROMPTS; s++) chain(sys_prompt[s], SYS_BLOCKS, NULL);

  workload_t wl;
  build_workload(&wl, (size_t)(10e6 * scale));
  printf("| %-41s | %12s | %12s | %s |\n", "KV indexer, 1 thread (best of 5 rounds)",
         "block ev/s", "events/s", "what");
  enum { ROUNDS = 5 };
  double blocks = (double)(wl.stored_blocks + wl.removed_blocks);
  double best[2] = {0, 0}, all[2][ROUNDS], best_st = 0, best_rm = 0;
  size_t nb = 0, nodes = 0;
  for (int round = 0; round < ROUNDS; round++) {
    for (int pass = 0; pass < 2; pass++) {
      dyn_kv_indexer_t *ix;
      if (dyn_kv_indexer_create(&ix)) exit(1);
      double us_st = 0, us_rm = 0;
      double us = pass == 0 ? apply_direct(&wl, ix, &us_st, &us_rm) : apply_codec(&wl, ix, &nb);
      double rate = blocks / us;
      all[pass][round] = rate;
      if (rate > best[pass]) best[pass] = rate;
      if (pass == 0 && wl.stored_blocks / us_st > best_st) best_st = wl.stored_blocks / us_st;
      if (pass == 0 && wl.removed_blocks / us_rm > best_rm) best_rm = wl.removed_blocks / us_rm;
      dyn_kv_indexer_stats_t st;
      dyn_kv_indexer_get_stats(ix, &st);
      nodes = st.nodes;
      if (st.events_dropped) {
        fprintf(stderr, "unexpected dropped events: %llu\n", (unsigned long long)st.events_dropped);
        return 1;
      }
      dyn_kv_indexer_destroy(ix);
    }
  }
  for (int pass = 0; pass < 2; pass++) {
    qsort(all[pass], ROUNDS, sizeof(double), bench_cmp_double);
    printf("| %-41s | %10.2f M | %10.2f M | median %.2f M; %zu events, %.1f M blocks (%.1f M stored, %.1f M removed)",
           pass ? "decode + apply (wire batches of <= 16)" : "apply (stored + removed)", best[pass],
           best[pass] * (double)wl.n / blocks, all[pass][ROUNDS / 2], wl.n, blocks / 1e6,
           wl.stored_blocks / 1e6, wl.removed_blocks / 1e6);
    if (pass) printf(", %zu batches", nb);
    printf("; %zu nodes at the end |\n", nodes);
    printf("RESULT name=kv_%s block_events_per_s=%.0f\n", pass ? "decode_apply" : "apply",
           best[pass] * 1e6);
    if (!pass) {
      printf("| %-41s | %10.2f M | %12s | STORED events only |\n", "  of which stored blocks",
             best_st, "");
      printf("| %-41s | %10.2f M | %12s | REMOVED events only |\n", "  of which removed blocks",
             best_rm, "");
    }
  }
  free(wl.ev);
  free(wl.worker);
  free(wl.blocks);
  free(wl.removed);

  bench_queries();
  return 0;
}
