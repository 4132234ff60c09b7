/* llama_engine.c - the llama.cpp engine: a real model behind the engine
 * interface (dynamo/llm/engine.h, llm/engine/engine.h), on llama.cpp's C
 * API (llama.h).
 *
 * One llama_context per engine with a unified KV cache of num_blocks *
 * block_size cells and LLAMA_MAX_SEQ (64) sequence ids ("slots"). A step is
 * one llama_decode holding the next token of every decoding sequence plus
 * prompt chunks (chunked prefill) up to max_num_batched_tokens, so a long
 * prompt does not stall the streams already decoding.
 *
 * Prefix cache. The KV cells are accounted in blocks of block_size tokens
 * (blk[]): a slot lists the blocks holding its tokens, and a block shared
 * by several slots is the same cells in llama.cpp (llama_memory_seq_cp tags
 * cells with one more sequence id: metadata only in a unified cache). A
 * block whose tokens are all computed is named by its seq hash
 * (dyn_kv_hash_blocks' chain) and announced in a STORED event; the last
 * reference going away announces REMOVED. When a sequence ends, its slot
 * keeps its full blocks and becomes a holder (LRU); a new prompt takes the
 * longest run of leading blocks any slot (holder or running) has computed
 * by seq_cp, and prefills only the rest. Holders are evicted, least
 * recently used first, when a block or a slot is needed; a running
 * sequence is preempted (its cells dropped, its tokens recomputed later,
 * mostly from the cache) when decoding needs blocks nothing else can give.
 *
 * Threads. Everything but the decode runs on the loop thread: planning a
 * step (admission, KV bookkeeping, llama_memory_* calls), applying its
 * results (tokens, finishes, KV events) and the public calls. The decode
 * and the sampling run on the engine's own step thread, one step at a
 * time, handed over with a condition variable and handed back with a
 * uv_async. Always the same thread, not libuv's pool: llama.cpp keeps its
 * compute threads per calling thread, and steps landing on different pool
 * threads ran at half speed (bench/llm: 108-123 against 237-250 tokens/s
 * at batch 1). While a step is in flight nothing else touches the
 * context, so a cancel ends the request at once (on_done) but its cells
 * are freed when the next step is planned.
 *
 * KV transfer (disaggregated serving). An export copies the prompt's
 * blocks [from, from + n) of the slot that computed them into a spare
 * sequence id (seq_cp, metadata only) and serializes that sequence with
 * llama_state_seq_get_data: positions and K/V rows of exactly those cells.
 * An import happens at admission: llama_state_seq_set_data puts the cells
 * into the new slot (it needs them contiguous in the cache; if llama.cpp
 * cannot find such a run, the import is dropped and the tokens computed),
 * then the blocks before them are seq_cp'd from the slot that holds them,
 * and the imported blocks are hashed and announced like computed ones.
 */
#include "common/rand.h"
#include "common/array.h"
#include "dynamo/llm/engine.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <llama.h>

#include "common/map.h"
#include "dynamo/status.h"
#include "llm/engine/engine.h"
#include "llm/engine/kv_batch.h"
#include "llm/engine/seq_list.h"

#define N_SLOTS 64 /* LLAMA_MAX_SEQ of llama.cpp: sequence ids per context */
#define NIL (-1)

typedef struct lengine lengine_t;
typedef struct lseq lseq_t;

enum { Q_WAITING, Q_RUNNING, Q_DONE };
enum { SLOT_FREE, SLOT_RUN, SLOT_HOLD };

/* One block of KV cells; ref counts the slots that list it. */
typedef struct lblk {
  uint32_t ref, run_ref; /* run_ref: of which running slots */
  uint8_t registered;    /* in e->map under hash (announced STORED) */
  dyn_kv_hash_t hash, local;
  int32_t next_free;
} lblk_t;

/* One llama.cpp sequence id. Positions [0, n_blocks * bs) may be held;
 * the first n_full blocks are computed and hashed. */
typedef struct lslot {
  int state;
  lseq_t *seq;          /* SLOT_RUN */
  int32_t *blocks;      /* block_cap entries */
  dyn_kv_hash_t *hashes; /* seq hash of each full block */
  size_t n_blocks, n_full;
  int lru_prev, lru_next; /* SLOT_HOLD: least recently used first */
  uint64_t last_use;
} lslot_t;

struct lseq {
  dyn_engine_seq_t base; /* first: what the interface hands out */
  lengine_t *e;
  lseq_t *prev, *next; /* in e->waiting or e->running */
  lseq_t *dead_next;
  int state, in_batch, admitted;
  int slot;                   /* running: its slot */
  uint32_t *tokens;           /* prompt, then generated */
  size_t n_tokens; /* the prompt's (base.n_prompt) and generated ones */
  size_t n_computed;
  size_t cap_tokens;
  uint32_t max_tokens;
  int ignore_eos;
  uint32_t top_logprobs;
  struct llama_sampler *smpl;
  void *import; /* dyn_engine_request_t.kv until admission */
  size_t import_len;
  void (*import_free)(void *, void *); /* and its kv_free, kv_free_ud */
  void *import_free_ud;
  /* this step */
  size_t chunk;      /* tokens of this sequence in the batch */
  int32_t logit_idx; /* its output row in the batch, or -1 */
  llama_token sampled;
  dyn_engine_callbacks_t cb;
  void *ud;
};

DYN__SEQ_LIST_TYPE(seq_list_t, lseq_t);

struct lengine {
  dyn_engine_t base; /* first: what the interface hands out */
  uv_loop_t *loop;
  uv_timer_t kick; /* plans the first step after an idle submit */
  /* the step thread (see "Threads" above) */
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int go, quit, thread_up;
  uv_async_t step_async; /* the thread's "step done" */
  dyn_engine_options_t o;
  char *model_path;
  struct llama_model *model;
  struct llama_context *ctx;
  const struct llama_vocab *vocab;
  llama_memory_t mem;
  struct llama_batch batch;
  int32_t n_batch_cap, decode_rc;
  uint32_t max_len; /* tokens per sequence */
  /* KV bookkeeping */
  lblk_t *blk;
  int32_t free_head;
  uint32_t n_free, n_run_used, n_registered;
  lslot_t slots[N_SLOTS];
  int lru_head, lru_tail;
  uint64_t use_clock;
  dyn__map_t map; /* seq hash -> lblk_t * (registered blocks) */
  dyn__kv_batch_t events; /* this step's, handed to sink at its end */
  /* sequences */
  seq_list_t waiting, running;
  lseq_t **in_step; /* the step in flight: at most N_SLOTS */
  size_t n_in_step;
  lseq_t *dead; /* ended while in a step, freed after it */
  int busy, kicked, closing;
  int refs; /* engine_free and the timer's close each drop one; 0 frees e */
  uint64_t rng;
  uint64_t step_start; /* uv_hrtime() of the step in flight */
  dyn_engine_kv_events_fn sink;
  void *sink_ud;
  dyn_engine_metrics_t m;
  char layout[384]; /* dyn_engine_kv_layout */
};

/* ---- small helpers -------------------------------------------------------- */

DYN__SEQ_LIST_FUNCS(seq_list_t, lseq_t)

static size_t blocks_for(const lengine_t *e, size_t n) {
  return (n + e->o.block_size - 1) / e->o.block_size;
}

/* llama.cpp logs a lot at INFO while loading; keep its warnings and errors. */
static void on_llama_log(enum ggml_log_level level, const char *text, void *ud) {
  if (level == GGML_LOG_LEVEL_ERROR || level == GGML_LOG_LEVEL_WARN)
    fprintf(stderr, "llama.cpp: %s", text);
}

/* ---- KV events ------------------------------------------------------------ */

static void flush_events(lengine_t *e) { dyn__kv_batch_flush(&e->events, e->sink, e->sink_ud); }

/* ---- blocks and slots ----------------------------------------------------- */

static int32_t blk_pop(lengine_t *e) {
  int32_t i = e->free_head;
  if (i == NIL) return NIL;
  e->free_head = e->blk[i].next_free;
  e->n_free--;
  return i;
}

static void blk_ref(lengine_t *e, int32_t i, int running) {
  lblk_t *b = &e->blk[i];
  b->ref++;
  if (running && b->run_ref++ == 0) e->n_run_used++;
}

static void blk_unref(lengine_t *e, int32_t i, int running) {
  lblk_t *b = &e->blk[i];
  if (running && --b->run_ref == 0) e->n_run_used--;
  if (--b->ref) return;
  if (b->registered) {
    if (dyn__map_get(&e->map, b->hash) == b) dyn__map_del(&e->map, b->hash);
    b->registered = 0;
    e->n_registered--;
    e->m.evictions++;
    (void)dyn__kv_batch_removed(&e->events, b->hash); /* failed: the batch is dropped */
  }
  b->next_free = e->free_head;
  e->free_head = i;
  e->n_free++;
}

static void lru_unlink(lengine_t *e, int id) {
  lslot_t *s = &e->slots[id];
  if (s->lru_prev != NIL) e->slots[s->lru_prev].lru_next = s->lru_next;
  else e->lru_head = s->lru_next;
  if (s->lru_next != NIL) e->slots[s->lru_next].lru_prev = s->lru_prev;
  else e->lru_tail = s->lru_prev;
  s->lru_prev = s->lru_next = NIL;
}

static void lru_append(lengine_t *e, int id) {
  lslot_t *s = &e->slots[id];
  s->lru_prev = e->lru_tail;
  s->lru_next = NIL;
  if (e->lru_tail != NIL) e->slots[e->lru_tail].lru_next = id;
  else e->lru_head = id;
  e->lru_tail = id;
}

/* Drops blocks [keep, n_blocks) of slot id, in llama.cpp and here. */
static void slot_truncate(lengine_t *e, int id, size_t keep) {
  lslot_t *s = &e->slots[id];
  if (keep >= s->n_blocks) return;
  llama_memory_seq_rm(e->mem, id, keep ? (llama_pos)(keep * e->o.block_size) : -1, -1);
  for (size_t i = s->n_blocks; i-- > keep;) blk_unref(e, s->blocks[i], s->state == SLOT_RUN);
  s->n_blocks = keep;
  if (s->n_full > keep) s->n_full = keep;
}

static void slot_free(lengine_t *e, int id) {
  lslot_t *s = &e->slots[id];
  if (s->state == SLOT_HOLD) lru_unlink(e, id);
  slot_truncate(e, id, 0);
  llama_memory_seq_rm(e->mem, id, -1, -1);
  s->state = SLOT_FREE;
  s->seq = NULL;
}

/* Evicts the least recently used holder; 0 if there is none. */
static int evict_holder(lengine_t *e) {
  if (e->lru_head == NIL) return 0;
  slot_free(e, e->lru_head);
  return 1;
}

/* A free block, evicting holders while none is; NIL if the running
 * sequences hold every block. */
static int32_t blk_take(lengine_t *e) {
  while (!e->n_free && evict_holder(e)) {
  }
  int32_t i = blk_pop(e);
  if (i != NIL) {
    e->blk[i].ref = 0;
    e->blk[i].run_ref = 0;
    e->blk[i].registered = 0;
  }
  return i;
}

/* Not an error: the blocks or slots are not there now (positive, so it
 * never collides with a dynamo/status.h code). */
#define NOSPACE 1

/* Gives running slot id blocks for its first n tokens; NOSPACE if the
 * blocks are not there (what it got so far it keeps). */
static int slot_grow(lengine_t *e, int id, size_t n) {
  lslot_t *s = &e->slots[id];
  size_t need = blocks_for(e, n);
  while (s->n_blocks < need) {
    int32_t b = blk_take(e);
    if (b == NIL) return NOSPACE;
    blk_ref(e, b, 1);
    s->blocks[s->n_blocks++] = b;
  }
  return DYN_OK;
}

/* The tokens [0, n_computed) of running slot id now have their KV: hashes
 * each newly full block; the first block with a hash registers it and
 * queues STORED (a chain of them shares one event). */
static void slot_commit(lengine_t *e, int id, const uint32_t *tokens, size_t n_computed) {
  lslot_t *s = &e->slots[id];
  size_t full = n_computed / e->o.block_size, bs = e->o.block_size;
  int run = 0;
  for (size_t i = s->n_full; i < full && i < s->n_blocks; i++) {
    lblk_t *b = &e->blk[s->blocks[i]];
    dyn_kv_hash_t local = dyn_kv_hash_local(tokens + i * bs, bs, e->o.kv_hash_seed);
    dyn_kv_hash_t h = i ? dyn_kv_hash_chain(s->hashes[i - 1], local, e->o.kv_hash_seed) : local;
    s->hashes[i] = h;
    s->n_full = i + 1;
    if (b->registered) continue; /* shared from another slot */
    b->hash = h;
    b->local = local;
    if (dyn__map_get(&e->map, h)) { /* computed twice at once: one announced */
      run = 0;
      continue;
    }
    if (dyn__map_put(&e->map, h, b)) { /* unannounced, it would break the chain */
      dyn__kv_batch_fail(&e->events);
      continue;
    }
    b->registered = 1;
    e->n_registered++;
    (void)dyn__kv_batch_stored(&e->events, &run, i > 0, i > 0 ? s->hashes[i - 1] : 0,
                               (dyn_kv_block_t){h, local}); /* failed: dropped */
  }
}

/* Whether slot a's first n blocks are the same cells as slot b's. */
static int same_blocks(const lslot_t *a, const lslot_t *b, size_t n) {
  if (a->n_full < n || b->n_full < n) return 0;
  return !memcmp(a->blocks, b->blocks, n * sizeof *a->blocks);
}

/* Running slot id's sequence ended: it keeps its computed full blocks as a
 * holder, unless another slot already holds the same cells; a holder whose
 * blocks are a prefix of its own is dropped (it adds nothing). */
static void slot_retire(lengine_t *e, int id) {
  lslot_t *s = &e->slots[id];
  for (size_t i = 0; i < s->n_blocks; i++) {
    lblk_t *b = &e->blk[s->blocks[i]];
    if (--b->run_ref == 0) e->n_run_used--;
  }
  s->state = SLOT_HOLD; /* its blocks are no longer a running slot's */
  s->seq = NULL;
  slot_truncate(e, id, s->n_full);
  lru_append(e, id);
  if (!s->n_full) {
    slot_free(e, id);
    return;
  }
  s->last_use = ++e->use_clock;
  for (int j = 0; j < N_SLOTS; j++) {
    lslot_t *o = &e->slots[j];
    if (j == id || o->state == SLOT_FREE) continue;
    if (o->n_full >= s->n_full && same_blocks(o, s, s->n_full)) {
      slot_free(e, id);
      return;
    }
    if (o->state == SLOT_HOLD && same_blocks(o, s, o->n_full)) slot_free(e, j);
  }
}

/* ---- sequences ------------------------------------------------------------ */

static void seq_free(lseq_t *s) {
  if (s->smpl) llama_sampler_free(s->smpl);
  dyn__kv_import_release(s->import, s->import_free, s->import_free_ud);
  free(s->tokens);
  free(s);
}

DYN__SEQ_DEAD_FUNCS(lseq_t, seq_free)

/* Ends s: on_done, out of its list; its slot is retired now unless a step
 * is in flight (then by the next plan, which finds the slot's seq gone). */
static void finish(lseq_t *s, dyn_engine_finish_t reason) {
  lengine_t *e = s->e;
  if (s->state == Q_DONE) return;
  int was_running = s->state == Q_RUNNING;
  list_unlink(was_running ? &e->running : &e->waiting, s);
  s->state = Q_DONE;
  if (was_running) {
    e->slots[s->slot].seq = NULL;
    if (!e->busy) slot_retire(e, s->slot);
  }
  if (s->cb.on_done) s->cb.on_done(&s->base, reason, s->ud);
  seq_dispose(&e->dead, s);
}

/* Drops a running sequence's cells and queues it first in line again; its
 * tokens so far are recomputed (often from the cache) when readmitted. */
static void preempt(lengine_t *e, lseq_t *s) {
  list_unlink(&e->running, s);
  lslot_t *sl = &e->slots[s->slot];
  sl->seq = NULL;
  slot_retire(e, s->slot); /* its full blocks stay as a holder */
  s->state = Q_WAITING;
  s->n_computed = 0;
  list_push(&e->waiting, s, 1);
  e->m.preemptions++;
}

/* A free slot id, evicting the least recently used holder if none is. */
static int slot_take(lengine_t *e) {
  for (int pass = 0; pass < 2; pass++) {
    for (int i = 0; i < N_SLOTS; i++)
      if (e->slots[i].state == SLOT_FREE) return i;
    if (!evict_holder(e)) break;
  }
  return NIL;
}

/* Installs s's imported KV into its new slot id (SLOT_RUN, no blocks yet),
 * with the first `from` blocks copied from slot best, which holds best_n
 * of the prompt's leading blocks (their hashes are in the slot's hashes
 * already). Returns the blocks the slot now holds, *from set; 0 when the
 * import was dropped (it is freed either way). */
static size_t install_import(lengine_t *e, lseq_t *s, int id, int best, size_t best_n,
                             size_t *from) {
  lslot_t *sl = &e->slots[id];
  size_t bs = e->o.block_size, want = (s->n_tokens - 1) / bs;
  uint8_t *blob = s->import;
  size_t blob_len = s->import_len;
  s->import = NULL;
  dyn__kv_blob_hdr_t h;
  const char *why = NULL;
  if (dyn__kv_blob_get(blob, blob_len, &h, &why) ||
      dyn__kv_blob_fits(&h, (uint32_t)bs, sl->hashes, want, best_n)) {
    e->m.kv_import_dropped++;
    dyn__kv_import_release(blob, s->import_free, s->import_free_ud);
    return 0;
  }
  *from = h.from_block;
  size_t nb = h.n_blocks;
  /* The holder we copy from must survive the evictions blk_take may do. */
  int pinned = *from && e->slots[best].state == SLOT_HOLD;
  if (pinned) lru_unlink(e, best);
  size_t k = 0, rd = 0;
  for (; k < nb; k++) {
    int32_t b = blk_take(e);
    if (b == NIL) break;
    blk_ref(e, b, 1);
    sl->blocks[*from + k] = b;
  }
  if (k == nb)
    rd = llama_state_seq_set_data(e->ctx, blob + DYN__KV_BLOB_HDR_SIZE,
                                  blob_len - DYN__KV_BLOB_HDR_SIZE, id);
  dyn__kv_import_release(blob, s->import_free, s->import_free_ud);
  if (!rd) { /* no room, or llama.cpp refused the data */
    for (size_t i = 0; i < k; i++) blk_unref(e, sl->blocks[*from + i], 1);
    llama_memory_seq_rm(e->mem, id, -1, -1);
    if (pinned) lru_append(e, best);
    e->m.kv_import_dropped++;
    return 0;
  }
  if (*from) {
    lslot_t *src = &e->slots[best];
    llama_memory_seq_cp(e->mem, best, id, 0, (llama_pos)(*from * bs));
    for (size_t i = 0; i < *from; i++) {
      sl->blocks[i] = src->blocks[i];
      blk_ref(e, sl->blocks[i], 1);
    }
    if (pinned) {
      src->last_use = ++e->use_clock;
      lru_append(e, best);
    }
  }
  sl->n_blocks = *from + nb;
  sl->n_full = *from;
  e->m.kv_imported_blocks += nb;
  return *from + nb;
}

/* Admits s into a slot: the longest run of its leading full blocks that any
 * slot has computed is copied (seq_cp), at most all but its last token,
 * whose logits the step must compute. */
static int admit(lengine_t *e, lseq_t *s) {
  int id = slot_take(e);
  if (id == NIL) return NOSPACE;
  lslot_t *sl = &e->slots[id];
  size_t bs = e->o.block_size;
  size_t want = (s->n_tokens - 1) / bs; /* full blocks it may take */
  int best = NIL;
  size_t best_n = 0;
  if (want) {
    dyn_kv_hash_t *h = sl->hashes; /* scratch until the copy below */
    dyn_kv_hash_t parent = 0;
    for (size_t i = 0; i < want; i++) {
      dyn_kv_hash_t local = dyn_kv_hash_local(s->tokens + i * bs, bs, e->o.kv_hash_seed);
      h[i] = parent = i ? dyn_kv_hash_chain(parent, local, e->o.kv_hash_seed) : local;
    }
    for (int j = 0; j < N_SLOTS; j++) {
      const lslot_t *o = &e->slots[j];
      if (j == id || o->state == SLOT_FREE) continue;
      size_t n = 0;
      while (n < want && n < o->n_full && o->hashes[n] == h[n]) n++;
      if (n > best_n) best_n = n, best = j;
    }
  }
  sl->state = SLOT_RUN;
  sl->seq = s;
  sl->n_blocks = sl->n_full = 0;
  size_t from = 0, installed = s->import ? install_import(e, s, id, best, best_n, &from) : 0;
  if (installed) {
    s->slot = id;
    s->n_computed = installed * bs;
    slot_commit(e, id, s->tokens, s->n_computed); /* hashed and announced */
    best_n = from;
  } else if (best != NIL) {
    lslot_t *src = &e->slots[best];
    llama_memory_seq_cp(e->mem, best, id, 0, (llama_pos)(best_n * bs));
    for (size_t i = 0; i < best_n; i++) {
      sl->blocks[i] = src->blocks[i];
      sl->hashes[i] = src->hashes[i];
      blk_ref(e, sl->blocks[i], 1);
    }
    sl->n_blocks = sl->n_full = best_n;
    if (src->state == SLOT_HOLD) {
      src->last_use = ++e->use_clock;
      lru_unlink(e, best);
      lru_append(e, best);
    }
  }
  s->slot = id;
  if (!installed) s->n_computed = best_n * bs;
  if (!s->admitted) {
    s->admitted = 1;
    s->base.cached_tokens = best_n * bs; /* the local cache's part */
    e->m.prompt_tokens += s->base.n_prompt;
    e->m.cached_prompt_tokens += s->base.cached_tokens;
  }
  return DYN_OK;
}

/* ---- planning a step ------------------------------------------------------ */

static void batch_add(lengine_t *e, lseq_t *s, size_t from, size_t n, int want_logits) {
  struct llama_batch *b = &e->batch;
  for (size_t i = 0; i < n; i++) {
    int32_t k = b->n_tokens++;
    b->token[k] = (llama_token)s->tokens[from + i];
    b->pos[k] = (llama_pos)(from + i);
    b->n_seq_id[k] = 1;
    b->seq_id[k][0] = s->slot;
    b->logits[k] = 0;
  }
  s->chunk = n;
  s->logit_idx = -1;
  if (want_logits && n) {
    b->logits[b->n_tokens - 1] = 1;
    s->logit_idx = b->n_tokens - 1;
  }
  s->in_batch = 1;
  e->in_step[e->n_in_step++] = s;
}

/* The running slots of sequences that ended during the last step. */
static void retire_ended(lengine_t *e) {
  for (int i = 0; i < N_SLOTS; i++)
    if (e->slots[i].state == SLOT_RUN && !e->slots[i].seq) slot_retire(e, i);
}

/* Builds the next step into e->batch; 1 if there is one. */
static int plan_step(lengine_t *e) {
  retire_ended(e);
  e->batch.n_tokens = 0;
  e->n_in_step = 0;
  size_t budget = e->o.max_num_batched_tokens;
  /* Decode: each sequence whose next token is all it has left to compute,
   * oldest first; while one lacks a block the newest running sequence is
   * preempted (never one already in the batch: those are older), and the
   * scan starts again as the list changed. */
  int preempted = 0;
  for (;;) {
    lseq_t *s = e->running.head;
    while (s && (s->in_batch || s->n_computed + 1 != s->n_tokens)) s = s->next;
    if (!s) break;
    if (slot_grow(e, s->slot, s->n_tokens) == NOSPACE) {
      preempt(e, e->running.tail);
      preempted = 1;
      continue;
    }
    batch_add(e, s, s->n_computed, 1, 1);
    budget = budget ? budget - 1 : 0;
  }
  /* Prefill chunks: running sequences still in their prompt, then newly
   * admitted ones, first come first served, while the budget lasts. */
  for (lseq_t *s = e->running.head; s && budget; s = s->next) {
    if (s->in_batch) continue;
    size_t left = s->n_tokens - s->n_computed, n = left < budget ? left : budget;
    while (n && slot_grow(e, s->slot, s->n_computed + n) == NOSPACE) n /= 2;
    if (!n) continue;
    batch_add(e, s, s->n_computed, n, n == left);
    budget -= n;
  }
  /* As vLLM: no admission in a step that had to preempt. */
  while (!preempted && budget && e->waiting.head && e->running.n < e->o.max_num_seqs) {
    lseq_t *s = e->waiting.head;
    if (admit(e, s) == NOSPACE) break;
    list_unlink(&e->waiting, s);
    list_push(&e->running, s, 0);
    s->state = Q_RUNNING;
    size_t left = s->n_tokens - s->n_computed, n = left < budget ? left : budget;
    while (n && slot_grow(e, s->slot, s->n_computed + n) == NOSPACE) n /= 2;
    if (!n) break; /* admitted; prefills when blocks free up */
    batch_add(e, s, s->n_computed, n, n == left);
    budget -= n;
  }
  return e->batch.n_tokens > 0;
}

/* ---- running a step ------------------------------------------------------- */

/* The sampled token's log-probability under the model's distribution
 * (a log-softmax of the row's logits, before the sampler's settings) and
 * the top_logprobs most likely tokens, most likely first. One pass for the
 * normalizer and one for the top list, kept sorted by insertion (at most
 * 20 entries, and most logits never enter it). On the step thread; the
 * loop reads lp (dyn_engine_seq_logprobs) in deliver, after the step. */
static void compute_logprob(const lengine_t *e, lseq_t *s) {
  const float *logits = llama_get_logits_ith(e->ctx, s->logit_idx);
  int32_t n = llama_vocab_n_tokens(e->vocab);
  dyn_engine_logprob_t *lp = &s->base.lp;
  lp->n_top = 0;
  if (!logits || n <= 0) {
    lp->logprob = 0;
    return;
  }
  float max = logits[0];
  for (int32_t i = 1; i < n; i++)
    if (logits[i] > max) max = logits[i];
  double sum = 0;
  for (int32_t i = 0; i < n; i++) sum += exp((double)(logits[i] - max));
  double lse = (double)max + log(sum);
  lp->logprob = (float)((double)logits[s->sampled] - lse);
  uint32_t k = s->top_logprobs;
  for (int32_t i = 0; i < n && k; i++) {
    float v = logits[i];
    if (lp->n_top == k && v <= lp->top_logprobs[k - 1]) continue;
    uint32_t at = lp->n_top < k ? lp->n_top++ : k - 1;
    while (at > 0 && lp->top_logprobs[at - 1] < v) {
      lp->top_logprobs[at] = lp->top_logprobs[at - 1];
      lp->top_ids[at] = lp->top_ids[at - 1];
      at--;
    }
    lp->top_logprobs[at] = v;
    lp->top_ids[at] = (uint32_t)i;
  }
  for (uint32_t j = 0; j < lp->n_top; j++)
    lp->top_logprobs[j] = (float)((double)lp->top_logprobs[j] - lse);
}

/* On the step thread: the decode, then each output row's sampling. */
static void step_work(lengine_t *e) {
  e->decode_rc = llama_decode(e->ctx, e->batch);
  if (e->decode_rc) return;
  for (size_t i = 0; i < e->n_in_step; i++) {
    lseq_t *s = e->in_step[i];
    if (s->logit_idx < 0) continue;
    s->sampled = llama_sampler_sample(s->smpl, e->ctx, s->logit_idx);
    if (s->base.logprobs) compute_logprob(e, s);
  }
}

static void start_step(lengine_t *e);

static void end_step_batch(lengine_t *e) {
  for (size_t i = 0; i < e->n_in_step; i++) e->in_step[i]->in_batch = 0;
  e->n_in_step = 0;
  seq_free_dead(&e->dead);
}

static void engine_free(lengine_t *e);

static void deliver(lengine_t *e, lseq_t *s) {
  llama_token t = s->sampled;
  if (!s->ignore_eos && llama_vocab_is_eog(e->vocab, t)) {
    finish(s, DYN_ENGINE_STOP);
    return;
  }
  uint32_t tok = (uint32_t)t;
  s->tokens[s->n_tokens++] = tok;
  s->base.n_generated++;
  e->m.generated_tokens++;
  if (s->cb.on_tokens) s->cb.on_tokens(&s->base, &tok, 1, s->ud);
  if (s->state == Q_RUNNING &&
      (s->base.n_generated >= s->max_tokens || s->n_tokens >= e->max_len))
    finish(s, DYN_ENGINE_LENGTH);
}

static void step_done(lengine_t *e) {
  e->busy = 0;
  e->m.steps++;
  dyn__engine_step_done(&e->base, (double)(uv_hrtime() - e->step_start) / 1e9);
  if (e->decode_rc) {
    /* 1 (no KV slot) cannot happen while the block accounting holds;
     * anything else is llama.cpp failing. The step's sequences fail and
     * their cells go, so the next step starts from a known state. */
    fprintf(stderr, "llama.cpp engine: llama_decode failed (%d) on a step of %d tokens\n",
            e->decode_rc, e->batch.n_tokens);
    for (size_t i = 0; i < e->n_in_step; i++) {
      lseq_t *s = e->in_step[i];
      if (s->state != Q_RUNNING) continue;
      int id = s->slot;
      finish(s, DYN_ENGINE_ERROR); /* retires the slot (not busy) */
      if (e->slots[id].state != SLOT_FREE) slot_free(e, id);
    }
  } else {
    for (size_t i = 0; i < e->n_in_step; i++) {
      lseq_t *s = e->in_step[i];
      if (s->state != Q_RUNNING) continue;
      s->n_computed += s->chunk;
      slot_commit(e, s->slot, s->tokens, s->n_computed);
    }
  }
  /* KV first, then tokens: a router hears of a prefix no later than the
   * client sees output. */
  flush_events(e);
  for (size_t i = 0; i < e->n_in_step && !e->decode_rc; i++) {
    lseq_t *s = e->in_step[i];
    if (s->state == Q_RUNNING && s->logit_idx >= 0) deliver(e, s);
  }
  end_step_batch(e);
  start_step(e);
}

/* Plans and queues the next step, if there is anything to run. */
static void start_step(lengine_t *e) {
  if (e->busy || e->closing) return;
  int any = plan_step(e);
  flush_events(e); /* evictions of the planning */
  if (!any) return;
  e->busy = 1;
  e->step_start = uv_hrtime();
  pthread_mutex_lock(&e->mu);
  e->go = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* The step thread: one step each time start_step says go, until quit. */
static void *step_thread(void *arg) {
  lengine_t *e = arg;
  pthread_mutex_lock(&e->mu);
  for (;;) {
    while (!e->go && !e->quit) pthread_cond_wait(&e->cv, &e->mu);
    if (e->quit) break;
    e->go = 0;
    pthread_mutex_unlock(&e->mu);
    step_work(e);
    uv_async_send(&e->step_async);
    pthread_mutex_lock(&e->mu);
  }
  pthread_mutex_unlock(&e->mu);
  return NULL;
}

/* On the loop: the step the thread finished (one at a time is in flight,
 * so a coalesced wake-up still means exactly one). */
static void on_step_async(uv_async_t *a) {
  lengine_t *e = a->data;
  if (e->busy && !e->closing) step_done(e);
}

/* Stops the step thread, waiting for the step in flight (a few ms). */
static void stop_thread(lengine_t *e) {
  if (!e->thread_up) return;
  pthread_mutex_lock(&e->mu);
  e->quit = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->mu);
  pthread_join(e->thread, NULL);
  e->thread_up = 0;
}

static void on_kick(uv_timer_t *t) {
  lengine_t *e = t->data;
  e->kicked = 0;
  start_step(e);
}

/* ---- creating and destroying ---------------------------------------------- */

static const dyn__engine_ops_t llama_ops;

static void backend_init_once(void) {
  llama_log_set(on_llama_log, NULL);
  llama_backend_init();
}

/* Why a model could not be opened, naming the file (per thread, as
 * engine.c's messages). */
static const char *model_error(const char *path, const char *what) {
  static _Thread_local char msg[512];
  snprintf(msg, sizeof msg, "engine: model %s: %s", path, what);
  return msg;
}

/* The KV cache types llama-server accepts (its kv_cache_types); NULL is
 * f16, llama.cpp's default. */
static int cache_type(const char *name, enum ggml_type *out) {
  static const enum ggml_type ok[] = {GGML_TYPE_F32,  GGML_TYPE_F16,  GGML_TYPE_BF16,
                                      GGML_TYPE_Q8_0, GGML_TYPE_Q4_0, GGML_TYPE_Q4_1,
                                      GGML_TYPE_IQ4_NL, GGML_TYPE_Q5_0, GGML_TYPE_Q5_1};
  if (!name) {
    *out = GGML_TYPE_F16;
    return 1;
  }
  for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
    if (!strcmp(name, ggml_type_name(ok[i]))) {
      *out = ok[i];
      return 1;
    }
  return 0;
}

static const char *check_options(const dyn_engine_options_t *o) {
  if (!o->model || !*o->model)
    return "engine: the llama.cpp engine needs a model (a .gguf file)";
  if (!o->block_size) return "engine options: block_size must be at least 1";
  if (!o->num_blocks || o->num_blocks > INT32_MAX / o->block_size)
    return "engine options: num_blocks * block_size must be between 1 and 2^31-1";
  if (!o->max_num_seqs || o->max_num_seqs > N_SLOTS)
    return "engine options: max_num_seqs must be between 1 and 64 for llama.cpp";
  if (!o->max_num_batched_tokens)
    return "engine options: max_num_batched_tokens must be at least 1";
  enum ggml_type k, v;
  if (!cache_type(o->cache_type_k, &k))
    return "engine options: cache_type_k must be one of f32, f16, bf16, q8_0, q4_0, q4_1, "
           "iq4_nl, q5_0, q5_1";
  if (!cache_type(o->cache_type_v, &v))
    return "engine options: cache_type_v must be one of f32, f16, bf16, q8_0, q4_0, q4_1, "
           "iq4_nl, q5_0, q5_1";
  /* llama.cpp refuses a quantized V cache without flash attention; say so
   * here rather than as "cannot create a context". */
  if (ggml_is_quantized(v) && !o->flash_attn)
    return "engine options: a quantized cache_type_v needs flash_attn";
  return NULL;
}

static void engine_free(lengine_t *e) {
  if (e->batch.token) llama_batch_free(e->batch);
  if (e->ctx) llama_free(e->ctx);
  if (e->model) llama_model_free(e->model);
  for (int i = 0; i < N_SLOTS; i++) {
    free(e->slots[i].blocks);
    free(e->slots[i].hashes);
  }
  dyn__map_free(&e->map);
  dyn__kv_batch_free(&e->events);
  free(e->blk);
  free(e->in_step);
  free(e->model_path);
  if (--e->refs == 0) free(e);
}

static void on_timer_closed(uv_handle_t *h) {
  lengine_t *e = h->data;
  if (--e->refs == 0) free(e);
}

static void on_async_closed(uv_handle_t *h) {
  lengine_t *e = h->data;
  pthread_mutex_destroy(&e->mu);
  pthread_cond_destroy(&e->cv);
  if (--e->refs == 0) free(e);
}

int dyn__llama_engine_create(uv_loop_t *loop, const dyn_engine_options_t *opts,
                             dyn_engine_t **out, const char **why) {
  dyn_engine_options_t defaults;
  if (!opts) {
    dyn_engine_options_init(&defaults);
    opts = &defaults;
  }
  if (!loop || !out) {
    if (why) *why = "engine: loop and out must not be NULL";
    return DYN_EINVAL;
  }
  const char *bad = check_options(opts);
  if (bad) {
    if (why) *why = bad;
    return DYN_EINVAL;
  }
  /* Say what is wrong with the file before llama.cpp tries it. */
  struct stat st;
  if (stat(opts->model, &st) != 0 || access(opts->model, R_OK) != 0) {
    if (why) *why = model_error(opts->model, strerror(errno));
    return DYN_EINVAL;
  }
  if (!S_ISREG(st.st_mode)) {
    if (why) *why = model_error(opts->model, "not a regular file");
    return DYN_EINVAL;
  }
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, backend_init_once);

  lengine_t *e = calloc(1, sizeof *e);
  if (!e) return DYN_ENOMEM;
  e->base.ops = &llama_ops;
  e->loop = loop;
  e->o = *opts;
  e->model_path = strdup(opts->model);
  e->o.model = e->model_path;
  e->refs = 1; /* no timer yet: engine_free frees e itself */
  int rc = DYN_ENOMEM;
  if (!e->model_path) goto fail;

  struct llama_model_params mp = llama_model_default_params();
  /* No repacked weight buffers (AMX and friends): at llama.cpp 4227c9b on
   * an AMX CPU they give wrong rows once a batch holds 32 tokens or more
   * of several sequences (tests/llm/test_llama_engine.c catches it). */
  mp.use_extra_bufts = false;
  e->model = llama_model_load_from_file(opts->model, mp);
  if (!e->model) {
    if (why) *why = model_error(opts->model, "llama.cpp cannot load it (not a valid GGUF model?)");
    rc = DYN_EINVAL;
    goto fail;
  }
  e->vocab = llama_model_get_vocab(e->model);
  uint32_t cells = opts->num_blocks * opts->block_size;
  e->n_batch_cap = (int32_t)(opts->max_num_batched_tokens + N_SLOTS);
  struct llama_context_params cp = llama_context_default_params();
  cp.n_ctx = cells;
  cp.n_batch = (uint32_t)e->n_batch_cap;
  cp.n_ubatch = cp.n_batch < 512 ? cp.n_batch : 512;
  cp.n_seq_max = N_SLOTS;
  cp.kv_unified = true;
  cp.no_perf = true;
  cache_type(opts->cache_type_k, &cp.type_k); /* check_options accepted both */
  cache_type(opts->cache_type_v, &cp.type_v);
  cp.flash_attn = opts->flash_attn != 0;
  long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
  int32_t threads = opts->threads ? (int32_t)opts->threads : (int32_t)(ncpu > 0 ? ncpu : 1);
  cp.n_threads = cp.n_threads_batch = threads;
  e->ctx = llama_init_from_model(e->model, cp);
  if (!e->ctx) {
    if (why) *why = model_error(opts->model, "llama.cpp cannot create a context for it");
    rc = DYN_EINVAL;
    goto fail;
  }
  e->mem = llama_get_memory(e->ctx);
  uint32_t train = (uint32_t)llama_model_n_ctx_train(e->model);
  e->max_len = opts->max_model_len ? opts->max_model_len : train;
  if (!e->max_len || e->max_len > cells) e->max_len = cells;
  e->batch = llama_batch_init(e->n_batch_cap, 0, 1);
  e->blk = calloc(opts->num_blocks, sizeof *e->blk);
  e->in_step = calloc(N_SLOTS, sizeof *e->in_step);
  if (!e->batch.token || !e->blk || !e->in_step) goto fail;
  size_t per_slot = blocks_for(e, e->max_len) + 1;
  for (int i = 0; i < N_SLOTS; i++) {
    e->slots[i].blocks = malloc(per_slot * sizeof *e->slots[i].blocks);
    e->slots[i].hashes = malloc(per_slot * sizeof *e->slots[i].hashes);
    e->slots[i].lru_prev = e->slots[i].lru_next = NIL;
    if (!e->slots[i].blocks || !e->slots[i].hashes) goto fail;
  }
  e->lru_head = e->lru_tail = NIL;
  e->free_head = NIL;
  for (int32_t i = (int32_t)opts->num_blocks - 1; i >= 0; i--) {
    e->blk[i].next_free = e->free_head;
    e->free_head = i;
  }
  e->n_free = opts->num_blocks;
  dyn__map_init(&e->map);
  dyn__kv_batch_init(&e->events);
  e->rng = opts->seed ^ 0x11a3a5eed5eedull;
  char desc[128];
  llama_model_desc(e->model, desc, sizeof desc);
  snprintf(e->layout, sizeof e->layout,
           "engine=llama.cpp;model=%s;model_bytes=%llu;n_params=%llu;n_layer=%d;n_embd=%d;"
           "n_vocab=%d;type_k=%s;type_v=%s;flash_attn=%d;block_size=%u",
           desc, (unsigned long long)llama_model_size(e->model),
           (unsigned long long)llama_model_n_params(e->model), llama_model_n_layer(e->model),
           llama_model_n_embd(e->model), llama_vocab_n_tokens(e->vocab), ggml_type_name(cp.type_k),
           ggml_type_name(cp.type_v), cp.flash_attn, opts->block_size);
  /* Last: nothing after this can fail, and from here the engine owns the
   * step thread and two handles (refs: engine_free and each close). */
  pthread_mutex_init(&e->mu, NULL);
  pthread_cond_init(&e->cv, NULL);
  if (pthread_create(&e->thread, NULL, step_thread, e)) {
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    if (why) *why = "llama.cpp engine: cannot start its step thread";
    rc = DYN_ESYS;
    goto fail;
  }
  e->thread_up = 1;
  uv_async_init(loop, &e->step_async, on_step_async);
  e->step_async.data = e;
  uv_timer_init(loop, &e->kick);
  e->kick.data = e;
  e->refs = 3;
  *out = &e->base;
  return DYN_OK;
fail:
  engine_free(e);
  return rc;
}

static void llama_destroy(dyn_engine_t *engine) {
  lengine_t *e = (lengine_t *)engine;
  if (e->closing) return;
  /* Cancel while not closing, so that finish retires slots normally. */
  while (e->running.head) finish(e->running.head, DYN_ENGINE_CANCELLED);
  while (e->waiting.head) finish(e->waiting.head, DYN_ENGINE_CANCELLED);
  e->closing = 1;
  dyn__kv_batch_drop(&e->events); /* dropped, as the interface says */
  uv_timer_stop(&e->kick);
  uv_close((uv_handle_t *)&e->kick, on_timer_closed);
  /* A step in flight finishes first; its results are not applied. */
  stop_thread(e);
  e->busy = 0;
  end_step_batch(e);
  uv_close((uv_handle_t *)&e->step_async, on_async_closed);
  engine_free(e);
}

static void llama_set_kv_events(dyn_engine_t *engine, dyn_engine_kv_events_fn fn, void *ud) {
  lengine_t *e = (lengine_t *)engine;
  e->sink = fn;
  e->sink_ud = ud;
}

/* The sampler chain of one request: greedy at temperature 0, else top-k,
 * top-p, temperature and a seeded draw. */
static struct llama_sampler *make_sampler(lengine_t *e, const dyn_engine_request_t *r) {
  struct llama_sampler_chain_params p = llama_sampler_chain_default_params();
  p.no_perf = true;
  struct llama_sampler *c = llama_sampler_chain_init(p);
  if (!c) return NULL;
  if (r->temperature <= 0) {
    llama_sampler_chain_add(c, llama_sampler_init_greedy());
    return c;
  }
  if (r->top_k > 0) llama_sampler_chain_add(c, llama_sampler_init_top_k(r->top_k));
  if (r->top_p > 0 && r->top_p < 1) llama_sampler_chain_add(c, llama_sampler_init_top_p(r->top_p, 1));
  llama_sampler_chain_add(c, llama_sampler_init_temp(r->temperature));
  uint64_t seed = r->has_seed ? r->seed : dyn__splitmix64(&e->rng);
  llama_sampler_chain_add(c, llama_sampler_init_dist((uint32_t)(seed ^ (seed >> 32))));
  return c;
}

/* A request the context can never hold; the message names the limit. */
static const char *too_long(const lengine_t *e, size_t n_prompt) {
  static _Thread_local char msg[200];
  snprintf(msg, sizeof msg,
           "engine submit: the prompt has %zu tokens; this model's context holds at most %u "
           "(prompt and output)",
           n_prompt, e->max_len);
  return msg;
}

static int llama_submit(dyn_engine_t *engine, const dyn_engine_request_t *req,
                        const dyn_engine_callbacks_t *cb, void *ud, dyn_engine_seq_t **out,
                        const char **why) {
  lengine_t *e = (lengine_t *)engine;
  const char *bad = NULL;
  if (e->closing) {
    if (why) *why = "engine submit: the engine is shutting down";
    return DYN_ECLOSED;
  }
  if (!req || !cb) bad = "engine submit: request and callbacks must not be NULL";
  else if (!req->prompt || !req->n_prompt) bad = "engine submit: the prompt is empty";
  else if (!req->max_tokens) bad = "engine submit: max_tokens must be at least 1";
  else if (!(req->temperature >= 0)) bad = "engine submit: temperature must not be negative";
  else if (req->top_logprobs > DYN_ENGINE_MAX_TOP_LOGPROBS)
    bad = "engine submit: top_logprobs must be at most 20";
  else if (req->n_prompt >= e->max_len) bad = too_long(e, req->n_prompt);
  if (!bad) {
    uint32_t n_vocab = (uint32_t)llama_vocab_n_tokens(e->vocab);
    for (size_t i = 0; i < req->n_prompt && !bad; i++)
      if (req->prompt[i] >= n_vocab) bad = "engine submit: a prompt token id is not in the vocabulary";
  }
  if (bad) {
    if (why) *why = bad;
    return DYN_EINVAL;
  }
  lseq_t *s = calloc(1, sizeof *s);
  size_t cap = req->n_prompt + req->max_tokens;
  if (cap > e->max_len) cap = e->max_len;
  if (s) s->tokens = malloc(cap * sizeof *s->tokens);
  if (s && s->tokens) s->smpl = make_sampler(e, req);
  if (!s || !s->tokens || !s->smpl) {
    if (s) seq_free(s);
    return DYN_ENOMEM;
  }
  memcpy(s->tokens, req->prompt, req->n_prompt * sizeof *s->tokens);
  s->base.engine = engine;
  s->e = e;
  s->cap_tokens = cap;
  s->n_tokens = s->base.n_prompt = req->n_prompt;
  s->max_tokens = req->max_tokens;
  s->ignore_eos = req->ignore_eos;
  s->base.logprobs = req->logprobs;
  s->top_logprobs = req->top_logprobs;
  s->cb = *cb;
  s->ud = ud;
  s->import = req->kv;
  s->import_len = req->kv_len;
  s->import_free = req->kv_free;
  s->import_free_ud = req->kv_free_ud;
  s->state = Q_WAITING;
  s->slot = NIL;
  list_push(&e->waiting, s, 0);
  e->m.requests++;
  if (!e->busy && !e->kicked) {
    e->kicked = 1;
    uv_timer_start(&e->kick, on_kick, 0, 0);
  }
  if (out) *out = &s->base;
  return DYN_OK;
}

static void llama_cancel(dyn_engine_seq_t *seq) { finish((lseq_t *)seq, DYN_ENGINE_CANCELLED); }

static void llama_get_metrics(const dyn_engine_t *engine, dyn_engine_metrics_t *m) {
  const lengine_t *e = (const lengine_t *)engine;
  *m = e->m;
  m->active_slots = e->running.n;
  m->total_slots = e->o.max_num_seqs;
  m->waiting = e->waiting.n;
  m->kv_blocks_used = e->n_run_used;
  m->kv_blocks_cached = e->n_registered;
  m->kv_blocks_total = e->o.num_blocks;
}

/* Drops every holder (their cells go) and announces CLEARED; running
 * sequences keep their cells, no longer shared with new requests through
 * the announced hashes. DYN_EINVAL while a step is in flight (the context
 * is the decode's then): the interface meant it for an idle engine. */
static int llama_reset_cache(dyn_engine_t *engine) {
  lengine_t *e = (lengine_t *)engine;
  if (e->busy) return DYN_EINVAL; /* the context is in use by a step */
  while (evict_holder(e)) {
  }
  dyn__kv_batch_drop(&e->events); /* CLEARED says it all */
  dyn__map_clear(&e->map);
  for (uint32_t i = 0; i < e->o.num_blocks; i++) e->blk[i].registered = 0;
  e->n_registered = 0;
  int rc = dyn__kv_batch_cleared(&e->events);
  flush_events(e);
  return rc;
}

static const char *llama_kv_layout(const dyn_engine_t *engine) {
  return ((const lengine_t *)engine)->layout;
}

/* The slot holding the longest computed run of the prompt's first `full`
 * blocks (their seq hashes in h); its length in *n. NIL if none. */
static int longest_run(const lengine_t *e, const dyn_kv_hash_t *h, size_t full, size_t *n) {
  int best = NIL;
  *n = 0;
  for (int j = 0; j < N_SLOTS; j++) {
    const lslot_t *o = &e->slots[j];
    if (o->state == SLOT_FREE) continue;
    size_t k = 0;
    while (k < full && k < o->n_full && o->hashes[k] == h[k]) k++;
    if (k > *n) *n = k, best = j;
  }
  return best;
}

/* The seq hashes of the prompt's full blocks, malloc'd; NULL on ENOMEM. */
static dyn_kv_hash_t *prompt_hashes(const lengine_t *e, const uint32_t *tokens, size_t n,
                                    size_t *full) {
  size_t bs = e->o.block_size;
  *full = n / bs;
  dyn_kv_hash_t *seq = malloc((*full ? *full : 1) * sizeof *seq);
  dyn_kv_hash_t *local = malloc((*full ? *full : 1) * sizeof *local);
  if (seq && local && *full)
    dyn_kv_hash_blocks(tokens, *full * bs, bs, e->o.kv_hash_seed, local, seq, *full);
  free(local);
  return local ? seq : (free(seq), NULL);
}

static size_t llama_kv_cached_blocks(dyn_engine_t *engine, const uint32_t *tokens, size_t n) {
  lengine_t *e = (lengine_t *)engine;
  size_t full, held = 0;
  dyn_kv_hash_t *h = tokens && n ? prompt_hashes(e, tokens, n, &full) : NULL;
  if (h) longest_run(e, h, full, &held);
  free(h);
  return held;
}

static int llama_kv_export(dyn_engine_t *engine, const uint32_t *tokens, size_t n,
                           size_t from_block, void **data, size_t *len, size_t *n_blocks,
                           const char **why) {
  lengine_t *e = (lengine_t *)engine;
  if (e->busy || e->closing) {
    if (why) *why = "engine kv export: a step is in flight (export between steps)";
    return DYN_EINVAL;
  }
  size_t full, held = 0, bs = e->o.block_size;
  dyn_kv_hash_t *h = prompt_hashes(e, tokens, n, &full);
  if (!h) {
    if (why) *why = "engine kv export: out of memory";
    return DYN_ENOMEM;
  }
  int src = longest_run(e, h, full, &held);
  size_t nb = held > from_block ? held - from_block : 0;
  dyn__kv_blob_hdr_t hdr = {DYN__KV_BLOB_MAGIC, (uint32_t)bs, (uint32_t)from_block,
                            (uint32_t)nb, nb ? h[held - 1] : 0};
  free(h);
  int scratch = NIL;
  if (nb) {
    /* A spare sequence id to hold just those cells; evicting a holder for
     * it must not evict the source. */
    int pinned = e->slots[src].state == SLOT_HOLD;
    if (pinned) lru_unlink(e, src);
    scratch = slot_take(e);
    if (pinned) lru_append(e, src);
    if (scratch == NIL) {
      if (why) *why = "engine kv export: no sequence id to spare (64 running)";
      return DYN_EINVAL;
    }
    llama_memory_seq_cp(e->mem, src, scratch, (llama_pos)(from_block * bs),
                        (llama_pos)((from_block + nb) * bs));
  }
  size_t size = nb ? llama_state_seq_get_size(e->ctx, scratch) : 0;
  uint8_t *out = malloc(DYN__KV_BLOB_HDR_SIZE + size);
  size_t wrote = out && nb ? llama_state_seq_get_data(e->ctx, out + DYN__KV_BLOB_HDR_SIZE, size,
                                                      scratch)
                           : 0;
  if (nb) llama_memory_seq_rm(e->mem, scratch, -1, -1); /* the slot stays free */
  if (!out || (nb && wrote != size)) {
    free(out);
    if (why) *why = out ? "engine kv export: llama_state_seq_get_data failed"
                        : "engine kv export: out of memory";
    return out ? DYN_EINVAL : DYN_ENOMEM;
  }
  dyn__kv_blob_put(out, &hdr);
  *data = out;
  *len = DYN__KV_BLOB_HDR_SIZE + size;
  *n_blocks = nb;
  return DYN_OK;
}

static const dyn__engine_ops_t llama_ops = {
    .name = "llama.cpp",
    .destroy = llama_destroy,
    .set_kv_events = llama_set_kv_events,
    .submit = llama_submit,
    .cancel = llama_cancel,
    .get_metrics = llama_get_metrics,
    .reset_cache = llama_reset_cache,
    .kv_layout = llama_kv_layout,
    .kv_cached_blocks = llama_kv_cached_blocks,
    .kv_export = llama_kv_export,
};
