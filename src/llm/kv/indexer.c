/* kv_indexer.c - the radix tree of cached blocks (see dynamo/llm/kv.h).
 *
 * A node is one block, identified by the path of local hashes from the
 * root; it also carries the seq hash that names it in events. Each node
 * keeps its holders as a bitset of worker slots (small dense integers given
 * to worker ids), so a query intersects the holders of successive blocks
 * with one AND per 64 workers. Children hang off their parent by local
 * hash: inline when there is one (the common case, a chain of blocks),
 * in a hash map (common/map.h) when there are more. Per worker a map from
 * seq hash to node lets STORED find its parent and REMOVED its blocks in
 * O(1).
 *
 * Invariants: a worker's map holds S -> node exactly when the worker's bit
 * is set in node and node->seq == S; a node other than the root exists
 * while some worker holds it or it has children. Nodes come from slabs,
 * so a chain stored by one event sits together in memory and a query
 * walking it mostly hits the cache lines the previous step brought in.
 */
#include <stdlib.h>
#include <string.h>

#include "dynamo/llm/kv.h"
#include "dynamo/status.h"
#include "common/map.h"

#define SLAB_NODES 1024
/* How many blocks ahead an event's worker-map slots are prefetched: enough
 * misses in flight to hide memory latency behind the work on the current
 * block (8 measured best among 4, 8, 16). */
#define PREFETCH_AHEAD 8

typedef struct kv_node {
  dyn_kv_hash_t local;
  dyn_kv_hash_t seq;
  struct kv_node *parent; /* on the free list: the next free node */
  uint64_t w0;            /* holders among slots 0..63 */
  uint64_t *wx;           /* holders among slots 64.., nwx words */
  uint32_t nwx;
  uint32_t nholders;
  uint32_t nchildren;
  uint32_t live;
  union {
    struct kv_node *one; /* nchildren == 1 */
    dyn__map_t *many; /* nchildren >= 2, keyed by local hash */
  } kids;
} kv_node_t;
_Static_assert(sizeof(kv_node_t) == 64, "a node is one cache line");

/* Nodes are 64 bytes: aligned to cache lines, each costs one line. */
typedef struct kv_slab {
  kv_node_t nodes[SLAB_NODES];
  struct kv_slab *next;
} kv_slab_t;

typedef struct kv_worker {
  uint64_t id;
  int used;
  dyn__map_t blocks; /* seq hash -> kv_node_t* */
} kv_worker_t;

struct dyn_kv_indexer {
  kv_node_t root;
  kv_slab_t *slabs;
  kv_node_t *free_nodes;
  size_t nodes;
  kv_worker_t *workers; /* by slot */
  size_t nslots, cap_slots;
  uint32_t *free_slots;
  size_t nfree_slots;
  dyn__map_t by_id; /* worker id -> (void *)(slot + 1) */
  size_t nwords;       /* bitset words covering every slot */
  uint64_t *active;    /* query scratch, nwords */
  size_t worker_blocks;
  uint64_t applied, dropped, removed_unknown;
};

/* ---- nodes -------------------------------------------------------------- */

static kv_node_t *node_alloc(dyn_kv_indexer_t *ix) {
  if (!ix->free_nodes) {
    kv_slab_t *s = aligned_alloc(64, (sizeof *s + 63) / 64 * 64);
    if (!s) return NULL;
    s->next = ix->slabs;
    ix->slabs = s;
    /* Thread the free list in address order, so consecutive allocations
     * (one STORED chain) are adjacent. */
    for (size_t i = SLAB_NODES; i-- > 0;) {
      s->nodes[i].live = 0;
      s->nodes[i].parent = ix->free_nodes;
      ix->free_nodes = &s->nodes[i];
    }
  }
  kv_node_t *n = ix->free_nodes;
  ix->free_nodes = n->parent;
  memset(n, 0, sizeof *n);
  n->live = 1;
  ix->nodes++;
  return n;
}

static void node_release(dyn_kv_indexer_t *ix, kv_node_t *n) {
  free(n->wx);
  if (n->nchildren >= 2) {
    dyn__map_free(n->kids.many);
    free(n->kids.many);
  }
  n->live = 0;
  n->parent = ix->free_nodes;
  ix->free_nodes = n;
  ix->nodes--;
}

static kv_node_t *find_child(const kv_node_t *p, dyn_kv_hash_t local) {
  if (p->nchildren == 1) return p->kids.one->local == local ? p->kids.one : NULL;
  if (p->nchildren == 0) return NULL;
  return dyn__map_get(p->kids.many, local);
}

static int add_child(kv_node_t *p, kv_node_t *c) {
  if (p->nchildren == 0) {
    p->kids.one = c;
  } else if (p->nchildren == 1) {
    dyn__map_t *m = malloc(sizeof *m);
    if (!m) return DYN_ENOMEM;
    dyn__map_init(m);
    if (dyn__map_put(m, p->kids.one->local, p->kids.one) ||
        dyn__map_put(m, c->local, c)) {
      dyn__map_free(m);
      free(m);
      return DYN_ENOMEM;
    }
    p->kids.many = m;
  } else if (dyn__map_put(p->kids.many, c->local, c)) {
    return DYN_ENOMEM;
  }
  p->nchildren++;
  return DYN_OK;
}

static void remove_child(kv_node_t *p, kv_node_t *c) {
  if (p->nchildren == 1) {
    p->kids.one = NULL;
  } else {
    dyn__map_t *m = p->kids.many;
    dyn__map_del(m, c->local);
    if (p->nchildren == 2) { /* back to inline */
      kv_node_t *last = NULL;
      for (size_t i = 0; !last && i < dyn__map_cap(m); i++) last = m->slots[i].val;
      dyn__map_free(m);
      free(m);
      p->kids.one = last;
    }
  }
  p->nchildren--;
}

/* Frees n and then each ancestor that nobody holds and that has no child
 * left. */
static void prune(dyn_kv_indexer_t *ix, kv_node_t *n) {
  while (n != &ix->root && n->nholders == 0 && n->nchildren == 0) {
    kv_node_t *p = n->parent;
    remove_child(p, n);
    node_release(ix, n);
    n = p;
  }
}

/* ---- holder bitsets ----------------------------------------------------- */

static int has_holder(const kv_node_t *n, uint32_t slot) {
  if (slot < 64) return (int)(n->w0 >> slot) & 1;
  uint32_t w = slot / 64 - 1;
  return w < n->nwx && ((n->wx[w] >> (slot % 64)) & 1);
}

static int set_holder(kv_node_t *n, uint32_t slot) {
  if (slot < 64) {
    n->w0 |= 1ull << slot;
  } else {
    uint32_t w = slot / 64 - 1;
    if (w >= n->nwx) {
      uint64_t *x = realloc(n->wx, (w + 1) * sizeof *x);
      if (!x) return DYN_ENOMEM;
      memset(x + n->nwx, 0, (w + 1 - n->nwx) * sizeof *x);
      n->wx = x;
      n->nwx = w + 1;
    }
    n->wx[w] |= 1ull << (slot % 64);
  }
  n->nholders++;
  return DYN_OK;
}

static void clear_holder(kv_node_t *n, uint32_t slot) {
  if (slot < 64) n->w0 &= ~(1ull << slot);
  else n->wx[slot / 64 - 1] &= ~(1ull << (slot % 64));
  n->nholders--;
}

/* Word w of n's holder bitset (0 past what n stores). */
static inline uint64_t holder_word(const kv_node_t *n, size_t w) {
  if (w == 0) return n->w0;
  return w - 1 < n->nwx ? n->wx[w - 1] : 0;
}

/* ---- workers ------------------------------------------------------------ */

static kv_worker_t *worker_find(const dyn_kv_indexer_t *ix, uint64_t id, uint32_t *slot) {
  uintptr_t v = (uintptr_t)dyn__map_get(&ix->by_id, id);
  if (!v) return NULL;
  *slot = (uint32_t)(v - 1);
  return &ix->workers[v - 1];
}

/* Makes room for one more slot and for its bitset word in the scratch. */
static int slots_reserve(dyn_kv_indexer_t *ix) {
  if (ix->nslots == ix->cap_slots) {
    size_t cap = ix->cap_slots ? ix->cap_slots * 2 : 16;
    kv_worker_t *w = realloc(ix->workers, cap * sizeof *w);
    if (!w) return DYN_ENOMEM;
    ix->workers = w;
    uint32_t *f = realloc(ix->free_slots, cap * sizeof *f);
    if (!f) return DYN_ENOMEM;
    ix->free_slots = f;
    ix->cap_slots = cap;
  }
  size_t words = (ix->nslots + 1 + 63) / 64;
  if (words > ix->nwords) {
    uint64_t *a = realloc(ix->active, words * sizeof *a);
    if (!a) return DYN_ENOMEM;
    ix->active = a;
    ix->nwords = words;
  }
  return DYN_OK;
}

static int worker_add(dyn_kv_indexer_t *ix, uint64_t id, uint32_t *slot, kv_worker_t **out) {
  uint32_t s;
  if (ix->nfree_slots) {
    s = ix->free_slots[--ix->nfree_slots];
  } else {
    int rc = slots_reserve(ix);
    if (rc) return rc;
    s = (uint32_t)ix->nslots++;
    ix->workers[s].used = 0;
  }
  if (dyn__map_put(&ix->by_id, id, (void *)(uintptr_t)(s + 1))) {
    ix->free_slots[ix->nfree_slots++] = s;
    return DYN_ENOMEM;
  }
  kv_worker_t *w = &ix->workers[s];
  w->id = id;
  w->used = 1;
  dyn__map_init(&w->blocks);
  *slot = s;
  *out = w;
  return DYN_OK;
}

/* Drops every block the worker holds. */
static void worker_clear(dyn_kv_indexer_t *ix, kv_worker_t *w, uint32_t slot) {
  dyn__map_t *m = &w->blocks;
  /* prune never frees a node this worker still holds, so the entries not
   * yet visited stay valid while earlier ones cascade. */
  for (size_t i = 0; i < dyn__map_cap(m); i++) {
    kv_node_t *n = m->slots[i].val;
    if (!n) continue;
    clear_holder(n, slot);
    prune(ix, n);
  }
  ix->worker_blocks -= m->n;
  dyn__map_clear(m);
}

/* ---- events ------------------------------------------------------------- */

/* Makes worker (slot) hold block b under parent; *out gets its node. */
static int store_one(dyn_kv_indexer_t *ix, kv_worker_t *w, uint32_t slot, kv_node_t *parent,
                     const dyn_kv_block_t *b, kv_node_t **out) {
  kv_node_t *c = find_child(parent, b->local_hash);
  if (c && c->seq != b->seq_hash) return DYN_EPROTO;
  if (!c) {
    c = node_alloc(ix);
    if (!c) return DYN_ENOMEM;
    c->local = b->local_hash;
    c->seq = b->seq_hash;
    c->parent = parent;
    if (add_child(parent, c)) {
      node_release(ix, c);
      return DYN_ENOMEM;
    }
  }
  *out = c;
  if (has_holder(c, slot)) return DYN_OK;
  if (set_holder(c, slot)) {
    prune(ix, c);
    return DYN_ENOMEM;
  }
  kv_node_t *old;
  if (dyn__map_swap(&w->blocks, b->seq_hash, c, (void **)&old)) {
    clear_holder(c, slot);
    prune(ix, c);
    return DYN_ENOMEM;
  }
  ix->worker_blocks++;
  if (old) {
    /* The same seq hash at another path (only a hash collision or a
     * confused engine does that): the newest placement wins. */
    clear_holder(old, slot);
    ix->worker_blocks--;
    prune(ix, old); /* never c or its ancestors: they have children */
  }
  return DYN_OK;
}

static int apply_stored(dyn_kv_indexer_t *ix, uint64_t id, const dyn_kv_event_t *ev) {
  uint32_t slot = 0;
  kv_worker_t *w = worker_find(ix, id, &slot);
  kv_node_t *parent = &ix->root;
  if (ev->has_parent) {
    parent = w ? dyn__map_get(&w->blocks, ev->parent_seq_hash) : NULL;
    if (!parent) {
      ix->dropped++;
      return DYN_ENOTFOUND;
    }
  }
  if (!w) {
    int rc = worker_add(ix, id, &slot, &w);
    if (rc) return rc;
  }
  for (size_t i = 0; i < ev->n_blocks; i++) {
    if (i + PREFETCH_AHEAD < ev->n_blocks)
      dyn__map_prefetch(&w->blocks, ev->blocks[i + PREFETCH_AHEAD].seq_hash);
    int rc = store_one(ix, w, slot, parent, &ev->blocks[i], &parent);
    if (rc == DYN_EPROTO) ix->dropped++;
    if (rc) return rc;
  }
  ix->applied++;
  return DYN_OK;
}

/* REMOVED, in chunks: first every hash of the chunk leaves the worker's
 * map (slots prefetched ahead) and its node is prefetched, then each node
 * loses the worker, so a block's two cache misses overlap with the other
 * blocks' instead of adding up. Safe because prune never frees a node the
 * worker still holds: the chunk's nodes all live until their turn. */
static void apply_removed(dyn_kv_indexer_t *ix, uint64_t id, const dyn_kv_event_t *ev) {
  uint32_t slot;
  kv_worker_t *w = worker_find(ix, id, &slot);
  if (!w) {
    ix->removed_unknown += ev->n_removed;
    ix->applied++;
    return;
  }
  enum { CHUNK = 32 };
  kv_node_t *nodes[CHUNK];
  for (size_t base = 0; base < ev->n_removed; base += CHUNK) {
    size_t n = ev->n_removed - base < CHUNK ? ev->n_removed - base : CHUNK;
    for (size_t i = 0; i < n; i++) {
      size_t ahead = base + i + PREFETCH_AHEAD;
      if (ahead < ev->n_removed) dyn__map_prefetch(&w->blocks, ev->removed[ahead]);
      nodes[i] = dyn__map_del(&w->blocks, ev->removed[base + i]);
      if (nodes[i]) __builtin_prefetch(nodes[i], 1);
    }
    for (size_t i = 0; i < n; i++) {
      if (!nodes[i]) {
        ix->removed_unknown++;
        continue;
      }
      clear_holder(nodes[i], slot);
      ix->worker_blocks--;
      prune(ix, nodes[i]);
    }
  }
  ix->applied++;
}

int dyn_kv_indexer_apply(dyn_kv_indexer_t *ix, uint64_t worker_id, const dyn_kv_event_t *ev) {
  if (!ix || !ev) return DYN_EINVAL;
  switch (ev->kind) {
  case DYN_KV_STORED:
    if (ev->n_blocks && !ev->blocks) return DYN_EINVAL;
    return apply_stored(ix, worker_id, ev);
  case DYN_KV_REMOVED:
    if (ev->n_removed && !ev->removed) return DYN_EINVAL;
    apply_removed(ix, worker_id, ev);
    return DYN_OK;
  case DYN_KV_CLEARED: {
    uint32_t slot;
    kv_worker_t *w = worker_find(ix, worker_id, &slot);
    if (w) worker_clear(ix, w, slot);
    ix->applied++;
    return DYN_OK;
  }
  }
  return DYN_EINVAL;
}

int dyn_kv_indexer_remove_worker(dyn_kv_indexer_t *ix, uint64_t worker_id) {
  if (!ix) return DYN_EINVAL;
  uint32_t slot;
  kv_worker_t *w = worker_find(ix, worker_id, &slot);
  if (!w) return DYN_ENOTFOUND;
  worker_clear(ix, w, slot);
  dyn__map_free(&w->blocks);
  w->used = 0;
  dyn__map_del(&ix->by_id, worker_id);
  /* Room is there: free_slots has cap_slots entries. */
  ix->free_slots[ix->nfree_slots++] = slot;
  return DYN_OK;
}

/* ---- queries ------------------------------------------------------------ */

/* Lists the workers whose bits are set in word w of bits as matching depth
 * blocks; returns the new count. */
static size_t emit(const dyn_kv_indexer_t *ix, uint64_t bits, size_t w, uint32_t depth,
                   dyn_kv_match_t *out, size_t cap, size_t count) {
  while (bits) {
    uint32_t slot = (uint32_t)(w * 64 + (size_t)__builtin_ctzll(bits));
    bits &= bits - 1;
    if (count < cap) {
      out[count].worker_id = ix->workers[slot].id;
      out[count].matched_blocks = depth;
    }
    count++;
  }
  return count;
}

size_t dyn_kv_indexer_find_matches(dyn_kv_indexer_t *ix, const dyn_kv_hash_t *local_hashes,
                                   size_t n, dyn_kv_match_t *out, size_t cap) {
  if (!ix || !local_hashes || !n || !ix->nwords) return 0;
  const kv_node_t *node = find_child(&ix->root, local_hashes[0]);
  if (!node || !node->nholders) return 0;
  uint32_t depth = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
  size_t count = 0;
  if (ix->nwords == 1) { /* up to 64 workers: one register, no scratch */
    uint64_t active = node->w0;
    for (uint32_t i = 1; i < depth; i++) {
      const kv_node_t *c = find_child(node, local_hashes[i]);
      uint64_t keep = c ? active & c->w0 : 0;
      if (keep != active) {
        count = emit(ix, active & ~keep, 0, i, out, cap, count);
        if (!keep) return count;
        active = keep;
      }
      node = c;
    }
    return emit(ix, active, 0, depth, out, cap, count);
  }
  uint64_t *active = ix->active;
  size_t nw = ix->nwords;
  for (size_t w = 0; w < nw; w++) active[w] = holder_word(node, w);
  for (uint32_t i = 1; i < depth; i++) {
    const kv_node_t *c = find_child(node, local_hashes[i]);
    uint64_t any = 0;
    for (size_t w = 0; w < nw; w++) {
      uint64_t keep = c ? active[w] & holder_word(c, w) : 0;
      if (keep != active[w]) count = emit(ix, active[w] & ~keep, w, i, out, cap, count);
      active[w] = keep;
      any |= keep;
    }
    if (!any) return count;
    node = c;
  }
  for (size_t w = 0; w < nw; w++) count = emit(ix, active[w], w, depth, out, cap, count);
  return count;
}

/* ---- life cycle and counts ---------------------------------------------- */

int dyn_kv_indexer_create(dyn_kv_indexer_t **out) {
  if (!out) return DYN_EINVAL;
  dyn_kv_indexer_t *ix = calloc(1, sizeof *ix);
  if (!ix) return DYN_ENOMEM;
  ix->root.live = 1;
  dyn__map_init(&ix->by_id);
  *out = ix;
  return DYN_OK;
}

void dyn_kv_indexer_destroy(dyn_kv_indexer_t *ix) {
  if (!ix) return;
  for (kv_slab_t *s = ix->slabs, *next; s; s = next) {
    next = s->next;
    for (size_t i = 0; i < SLAB_NODES; i++) {
      kv_node_t *n = &s->nodes[i];
      if (!n->live) continue;
      free(n->wx);
      if (n->nchildren >= 2) {
        dyn__map_free(n->kids.many);
        free(n->kids.many);
      }
    }
    free(s);
  }
  if (ix->root.nchildren >= 2) {
    dyn__map_free(ix->root.kids.many);
    free(ix->root.kids.many);
  }
  for (size_t i = 0; i < ix->nslots; i++)
    if (ix->workers[i].used) dyn__map_free(&ix->workers[i].blocks);
  free(ix->workers);
  free(ix->free_slots);
  free(ix->active);
  dyn__map_free(&ix->by_id);
  free(ix);
}

void dyn_kv_indexer_get_stats(const dyn_kv_indexer_t *ix, dyn_kv_indexer_stats_t *st) {
  memset(st, 0, sizeof *st);
  if (!ix) return;
  st->nodes = ix->nodes;
  st->workers = ix->by_id.n;
  st->worker_blocks = ix->worker_blocks;
  st->events_applied = ix->applied;
  st->events_dropped = ix->dropped;
  st->removed_unknown = ix->removed_unknown;
}

size_t dyn_kv_indexer_worker_blocks(const dyn_kv_indexer_t *ix, uint64_t worker_id) {
  uint32_t slot;
  kv_worker_t *w = ix ? worker_find(ix, worker_id, &slot) : NULL;
  return w ? w->blocks.n : 0;
}
