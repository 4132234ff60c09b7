/* disagg.c - disaggregated prefill and decode: a decode Worker asks a
 * PrefillWorker for a long prompt's KV, which comes back over the request
 * plane, and decodes from it.
 *
 * Decode role (Worker, `role: decode`). For each request the worker looks
 * at how much of the prompt its own cache lacks
 * (dyn_engine_kv_cached_blocks). If that is more than
 * max-local-prefill-length tokens, a PrefillWorker is live, and the prefill
 * queue is shorter than max-prefill-queue-size, it calls
 * PrefillWorker/prefill on the live prefill worker with the least load
 * (ties and unknown loads go round robin) with the prompt and the blocks it
 * already holds; else it prefills locally. The queue is shared by every
 * decode worker: what the live prefill workers last reported in their
 * load_metrics (running plus waiting sequences, each a prompt without its
 * first token), plus what this worker sent each since. The answer
 * (protocol.h) is a header naming the prefill engine's KV layout (a
 * mismatch is refused, naming the field), the first token (sent on to the
 * client at once), then the KV in chunks. When all of it came, the worker
 * submits prompt + first token with the KV attached
 * (dyn_engine_request_t.kv), and the engine decodes from there; with
 * max_tokens 1 the first token is the answer, and the request says no_kv
 * so that none is exported. If the prefill stream fails (the prefill
 * worker died, refused, or sent nothing for kv-transfer-timeout-ms, which
 * before the first token needs its load reports to stop too: a prompt
 * waiting in a busy worker's queue is no stall), the worker prefills
 * locally: the prompt, plus the first token if the client already has it,
 * so the answer goes on unbroken. The KV lands in buffers the worker keeps
 * between transfers (see "receive buffers" below).
 *
 * Prefill role (PrefillWorker). prefill runs the prompt for one token,
 * exports the KV of the blocks the caller lacks as soon as that token is
 * out (not at all for no_kv), and streams it, at most kv-chunk-bytes per
 * message, keeping at most four chunks queued on the connection (and,
 * with kv-bandwidth-mbps, no faster than that: a slower link modelled).
 * A caller that goes away
 * cancels the sequence and frees what was left to send.
 *
 * The two thresholds come from the config and can be changed while
 * serving with a key on the control plane, which decode workers watch:
 * config/{namespace}/disagg/max-local-prefill-length and .../max-prefill-
 * queue-size, a decimal value; deleting it restores the config's.
 */
#include <float.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/client.h"
#include "dynamo/discovery.h"
#include "dynamo/events.h"
#include "dynamo/metrics.h"
#include "dynamo/status.h"
#include "llm/services/llm_common.h"
#include "llm/services/protocol.h"
#include "llm/services/worker.h"

typedef struct kvpool kvpool_t;

struct dyn__disagg {
  worker_t *w;
  kvpool_t *pool;        /* decode role */
  dyn_client_t *prefill; /* decode role */
  dyn_watch_t *watch;
  long long cfg_max_local, cfg_max_queue; /* from the config */
  long long max_local, max_queue;         /* in force */
  unsigned timeout_ms;
  size_t chunk_bytes;
  double bandwidth_mbps; /* prefill role: 0 is unlimited */
  char key_local[256], key_queue[256];
  /* decode: the prefill workers' load, from their load_metrics events */
  dyn_subscription_t *load_sub;
  dyn__prefill_load_t loads[64];
  size_t n_loads;
  uint64_t rr;
  /* /metrics */
  dyn_series_t *bytes, *seconds, *receive, *remote, *local, *fallbacks, *queue;
};

/* ---- metrics ------------------------------------------------------------- */

static dyn_series_t *series(dyn_metric_type_t type, const char *name, const char *help,
                            const worker_t *w) {
  static const char *const labels[] = {"namespace", "component", "instance", NULL};
  static const double bounds[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  dyn_metrics_t *reg = dyn_metrics_default();
  dyn_metric_t *m;
  const char *ns = dyn_service_def(w->ctx)->namespace_;
  const char *values[] = {ns ? ns : "dynamo", dyn_service_def(w->ctx)->name, w->id_hex};
  if (!reg || dyn_metrics_add(reg, type, name, help, labels,
                              type == DYN_METRIC_HISTOGRAM ? bounds : NULL,
                              type == DYN_METRIC_HISTOGRAM ? sizeof bounds / sizeof *bounds : 0,
                              &m))
    return NULL;
  return dyn_metric_series(m, values);
}

/* Metrics are for operators: a NULL series (no memory) is skipped. */
static void add(dyn_series_t *s, double v) {
  if (s) dyn_series_add(s, v);
}

static void set_queue(dyn__disagg_t *d, uint64_t queue) {
  if (d->queue) dyn_series_set(d->queue, (double)queue);
}

/* ---- layouts ------------------------------------------------------------- */

/* The first "key=value" of a that b has otherwise (or lacks), as a
 * sentence naming it; NULL when they agree. */
static const char *layout_mismatch(const char *mine, const char *theirs, char *buf, size_t cap) {
  if (!strcmp(mine, theirs)) return NULL;
  for (const char *p = mine; *p;) {
    const char *end = strchr(p, ';');
    size_t n = end ? (size_t)(end - p) : strlen(p);
    const char *eq = memchr(p, '=', n);
    size_t klen = eq ? (size_t)(eq - p) : n;
    const char *q = theirs;
    const char *val = NULL;
    size_t vlen = 0;
    while (*q) {
      const char *qe = strchr(q, ';');
      size_t qn = qe ? (size_t)(qe - q) : strlen(q);
      if (qn > klen && q[klen] == '=' && !strncmp(q, p, klen)) {
        val = q + klen + 1;
        vlen = qn - klen - 1;
        break;
      }
      q += qn + (qe ? 1 : 0);
    }
    size_t mylen = eq ? n - klen - 1 : 0;
    if (!val || vlen != mylen || (eq && strncmp(val, eq + 1, vlen))) {
      snprintf(buf, cap, "KV layout mismatch: %.*s is %.*s here and %.*s at the other worker",
               (int)klen, p, (int)mylen, eq ? eq + 1 : "", (int)vlen, val ? val : "(absent)");
      return buf;
    }
    p += n + (end ? 1 : 0);
  }
  snprintf(buf, cap, "KV layout mismatch: \"%s\" here, \"%s\" at the other worker", mine, theirs);
  return buf;
}

/* ---- decode role: receive buffers ----------------------------------------- */

/* A fresh buffer of tens of megabytes costs a page fault per 4 KiB as the
 * KV is copied in (the kernel zeroes and charges each page): profiled at
 * about three times the copy itself, and the largest cost of a transfer on
 * the decode worker. So the KV lands in buffers kept between transfers:
 * the engine gives each back through dyn_engine_request_t.kv_free once
 * the import is installed or dropped, and up to kv-receive-keep-bytes of
 * idle ones (256 MiB) are kept. The pool outlives the rest of the decode
 * state while the engine still holds a buffer: an engine frees its
 * imports when destroyed, after dyn__disagg_shutdown. */
typedef struct kvbuf {
  struct kvbuf *next;
  kvpool_t *pool;
  size_t cap;
  size_t pad_; /* 32 bytes: the data after it is aligned as malloc's */
} kvbuf_t;

struct kvpool {
  kvbuf_t *idle;
  size_t idle_bytes, keep_bytes;
  size_t lent; /* buffers out (receiving, or held by the engine) */
  int closed;
};

static void pool_drop_idle(kvpool_t *p) {
  while (p->idle) {
    kvbuf_t *b = p->idle;
    p->idle = b->next;
    p->idle_bytes -= b->cap;
    free(b);
  }
}

/* A buffer of at least n bytes: an idle one that is big enough, else a
 * new one (the idle ones, all smaller, go: transfers grew). */
static uint8_t *pool_take(kvpool_t *p, size_t n) {
  kvbuf_t *b = NULL;
  for (kvbuf_t **pp = &p->idle; *pp; pp = &(*pp)->next) {
    if ((*pp)->cap >= n) {
      b = *pp;
      *pp = b->next;
      p->idle_bytes -= b->cap;
      break;
    }
  }
  if (!b) {
    pool_drop_idle(p);
    if (n > SIZE_MAX - sizeof *b || !(b = malloc(sizeof *b + n))) return NULL;
    b->cap = n;
    b->pool = p;
  }
  p->lent++;
  return (uint8_t *)(b + 1);
}

/* dyn_engine_request_t.kv_free, and the decode worker's own give-back. */
static void pool_give(void *data, void *ud) {
  kvpool_t *p = ud;
  kvbuf_t *b = (kvbuf_t *)data - 1;
  p->lent--;
  if (!p->closed && b->cap <= p->keep_bytes) {
    while (p->idle && p->idle_bytes + b->cap > p->keep_bytes) { /* the newest stays */
      kvbuf_t *old = p->idle;
      p->idle = old->next;
      p->idle_bytes -= old->cap;
      free(old);
    }
    b->next = p->idle;
    p->idle = b;
    p->idle_bytes += b->cap;
  } else {
    free(b);
  }
  if (p->closed && !p->lent) free(p);
}

static void pool_close(kvpool_t *p) {
  if (!p) return;
  p->closed = 1;
  pool_drop_idle(p);
  if (!p->lent) free(p);
}

/* ---- decode role ---------------------------------------------------------- */

typedef struct djob {
  dyn__disagg_t *d;
  dyn_request_t *req;
  dyn_stream_t *stream;
  uv_timer_t timer; /* stall: no message for timeout_ms */
  dyn_engine_request_t r; /* the engine request; r.prompt is prompt */
  uint32_t *prompt;       /* n_prompt + 1 entries: room for the first token */
  size_t n_prompt, from_block;
  int have_header, have_first, client_gone, answered, refused;
  uint64_t target; /* the prefill worker asked */
  uint64_t kv_expected, kv_blocks;
  uint64_t t0, t_header, t_last; /* the prefill request, the KV header, its last byte */
  kvpool_t *pool; /* outlives d: see "receive buffers" */
  uint8_t *kv;    /* kv_expected bytes from pool once the header came */
  size_t kv_len;  /* of them received */
} djob_t;

static void djob_closed(uv_handle_t *h) {
  djob_t *j = h->data;
  if (j->kv) pool_give(j->kv, j->pool);
  free(j->prompt);
  free(j);
}

static void djob_free(djob_t *j) {
  uv_timer_stop(&j->timer);
  uv_close((uv_handle_t *)&j->timer, djob_closed);
}

/* Runs the request on this worker's engine (with the KV that came, if
 * any), or answers with the failure. */
static void run_here(djob_t *j, void *kv, size_t kv_len) {
  j->r.prompt = j->prompt;
  j->r.n_prompt = j->n_prompt + (j->have_first ? 1 : 0);
  j->r.kv = kv;
  j->r.kv_len = kv_len;
  j->r.kv_free = kv ? pool_give : NULL;
  j->r.kv_free_ud = kv ? j->pool : NULL;
  const char *why = NULL;
  int rc = dyn__worker_submit(j->d->w, j->req, &j->r, j->have_first, &why);
  if (rc) {
    if (kv) pool_give(kv, j->pool);
    if (rc == DYN_ENOMEM) dyn__proto_fail(j->req, 500, "out of memory");
    else dyn__proto_fail(j->req, 400, "%s", why ? why : dyn_strerror(rc));
  }
}

static void on_client_cancel(dyn_request_t *req, void *ud) {
  djob_t *j = ud;
  j->client_gone = 1;
  if (j->stream) dyn_stream_cancel(j->stream); /* on_prefill_done frees j */
}

static dyn__prefill_load_t *find_load(dyn__disagg_t *d, uint64_t id) {
  for (size_t i = 0; i < d->n_loads; i++)
    if (d->loads[i].id == id) return &d->loads[i];
  return NULL;
}

/* The stream was silent for timeout_ms. Before the first token that is
 * also what a request waiting in a busy prefill worker's queue looks like:
 * while that worker still reports its load, it is alive and the request
 * waits on (the queue threshold is what bounds the wait); a stopped one
 * falls silent on its subject too. */
static void on_stall(uv_timer_t *t) {
  djob_t *j = t->data;
  const dyn__prefill_load_t *l = find_load(j->d, j->target);
  if (!j->have_first && l && l->seen_ms && uv_now(t->loop) - l->seen_ms < j->d->timeout_ms)
    return; /* the timer repeats */
  dyn_log(DYN_LOG_WARN, "Worker: prefill worker sent nothing for %u ms: prefilling locally",
          j->d->timeout_ms);
  j->refused = 1; /* on_prefill_done need not say it again */
  if (j->stream) dyn_stream_cancel(j->stream);
}

/* The first token, on to the client; 1 if that ended the answer. */
static int forward_first(djob_t *j, const void *data, size_t len) {
  dyn__proto_engine_output_t out;
  const char *why;
  if (dyn__proto_engine_output_decode(data, len, &out, &why)) return -1;
  int done = out.finish != DYN__PROTO_GOING || !out.n_tokens;
  if (out.n_tokens) {
    j->prompt[j->n_prompt] = out.token_ids[0];
    j->have_first = 1;
    int last = j->r.max_tokens <= 1;
    dyn__proto_engine_output_t fwd = {
        .token_ids = out.token_ids, .n_tokens = 1,
        .cached_tokens = (long long)(j->from_block * j->d->w->block_size),
        .finish = last ? DYN__PROTO_LENGTH : DYN__PROTO_GOING, .logprobs = out.logprobs};
    dyn__proto_send(j->req, dyn__proto_engine_output_encode(&fwd));
    if (j->r.max_tokens > 1) j->r.max_tokens--;
    done = done || last;
  }
  if (done && out.finish == DYN__PROTO_STOP) {
    dyn__proto_engine_output_t fin = {.cached_tokens = j->have_first ? -1 : 0,
                                      .finish = DYN__PROTO_STOP};
    dyn__proto_send(j->req, dyn__proto_engine_output_encode(&fin));
  }
  dyn__proto_engine_output_free(&out);
  return done;
}

static void on_prefill_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  djob_t *j = ud;
  dyn__disagg_t *d = j->d;
  if (j->client_gone || j->refused) return;
  uv_timer_again(&j->timer);
  const char *bad = NULL;
  char msg[512];
  const void *part;
  size_t part_len;
  if (!dyn__proto_kv_chunk_decode(data, len, &part, &part_len)) {
    if (!j->have_first || part_len > j->kv_expected - j->kv_len) {
      bad = "prefill worker: KV beyond what its header announced";
    } else if (part_len) {
      memcpy(j->kv + j->kv_len, part, part_len);
      j->kv_len += part_len;
      if (j->kv_len == j->kv_expected) j->t_last = uv_hrtime();
    }
  } else if (!j->have_header) {
    dyn__proto_kv_header_t h;
    if (dyn__proto_kv_header_decode(data, len, &h)) {
      bad = "prefill worker: its first message is not a KV header";
    } else {
      bad = layout_mismatch(dyn_engine_kv_layout(d->w->engine), h.kv_layout, msg, sizeof msg);
      j->kv_expected = h.kv_bytes;
      j->t_last = j->t_header = uv_hrtime();
      j->kv_blocks = h.kv_blocks;
      j->have_header = 1;
      if (!bad && h.kv_bytes && !(j->kv = pool_take(j->pool, h.kv_bytes)))
        bad = "out of memory for the KV";
      dyn__proto_kv_header_free(&h);
    }
  } else if (!j->have_first) {
    int done = forward_first(j, data, len);
    if (done < 0) bad = "prefill worker: its first token does not decode";
    else if (done) { /* the answer ended there: nothing to decode */
      dyn_request_end(j->req);
      j->answered = j->client_gone = 1; /* nobody waits for the rest */
      add(d->remote, 1);                /* the prefill worker ran the prompt */
      dyn_stream_cancel(s);
      return;
    }
  } else {
    bad = "prefill worker: a message out of order";
  }
  if (bad) {
    dyn_log(DYN_LOG_ERROR, "Worker: %s; prefilling locally", bad);
    j->refused = 1;
    dyn_stream_cancel(s);
  }
}

static void on_prefill_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  djob_t *j = ud;
  dyn__disagg_t *d = j->d;
  j->stream = NULL;
  uv_timer_stop(&j->timer);
  if (j->client_gone) {
    if (!j->answered) dyn_request_fail(j->req, "cancelled"); /* nobody reads it */
    djob_free(j);
    return;
  }
  if (status == DYN_OK && j->have_first && j->kv_len == j->kv_expected) {
    if (d->seconds) dyn_series_observe(d->seconds, (double)(j->t_last - j->t0) / 1e9);
    if (d->receive) dyn_series_observe(d->receive, (double)(j->t_last - j->t_header) / 1e9);
    add(d->bytes, (double)j->kv_len);
    add(d->remote, 1);
    /* A header alone (nothing the decode worker lacked) is not worth
     * importing. */
    void *kv = j->kv_blocks ? j->kv : NULL;
    size_t kv_len = kv ? j->kv_len : 0;
    if (kv) j->kv = NULL; /* the engine holds it now */
    run_here(j, kv, kv_len);
  } else {
    if (!j->refused)
      dyn_log(DYN_LOG_WARN, "Worker: prefill worker failed (%s): prefilling locally",
              status == DYN_OK ? "the KV came incomplete"
                               : message && *message ? message : dyn_strerror(status));
    add(d->fallbacks, 1);
    add(d->local, 1);
    run_here(j, NULL, 0);
  }
  djob_free(j);
}

uint64_t dyn__disagg_queue_length(const dyn__prefill_load_t *loads, size_t n,
                                  const uint64_t *live, size_t n_live) {
  uint64_t queue = 0;
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < n_live; k++)
      if (loads[i].id == live[k]) {
        queue += loads[i].load + loads[i].sent;
        break;
      }
  return queue;
}

int dyn__disagg_goes_remote(uint32_t max_tokens, long long uncached, long long max_local,
                            uint64_t queue, long long max_queue, size_t n_live) {
  return max_tokens >= 1 && uncached > max_local && max_queue > 0 &&
         queue < (uint64_t)max_queue && n_live > 0;
}

/* The live prefill workers (at most 64), and the queue they hold. */
static size_t live_prefill(dyn__disagg_t *d, uint64_t ids[64], uint64_t *queue) {
  size_t n = dyn_client_instances(d->prefill, ids, 64);
  if (n > 64) n = 64;
  *queue = dyn__disagg_queue_length(d->loads, d->n_loads, ids, n);
  return n;
}

/* id's entry, made when missing; NULL when all are taken by workers that
 * still report (more than we track). A dead worker's entry, the longest
 * silent, is reused. */
static dyn__prefill_load_t *load_entry(dyn__disagg_t *d, uint64_t id) {
  dyn__prefill_load_t *l = find_load(d, id);
  if (l) return l;
  if (d->n_loads < sizeof d->loads / sizeof *d->loads) {
    l = &d->loads[d->n_loads++];
  } else {
    uint64_t now = uv_now(dyn_runtime_loop(dyn_service_runtime(d->w->ctx)));
    for (size_t i = 0; i < d->n_loads; i++)
      if (now - d->loads[i].seen_ms > 2000 && (!l || d->loads[i].seen_ms < l->seen_ms))
        l = &d->loads[i];
    if (!l) return NULL;
  }
  *l = (dyn__prefill_load_t){.id = id};
  return l;
}

/* A prefill worker's load event: its prefill requests (running plus
 * waiting sequences), which now include what we sent it before. */
static void on_prefill_load(const char *subject, const void *data, size_t len, void *ud) {
  dyn__disagg_t *d = ud;
  dyn__proto_load_t m;
  if (dyn__proto_load_decode(data, len, &m)) return;
  dyn__prefill_load_t *l = load_entry(d, m.worker_id);
  if (!l) return;
  l->load = m.active_slots + m.waiting;
  l->sent = 0;
  l->seen_ms = uv_now(dyn_runtime_loop(dyn_service_runtime(d->w->ctx)));
  uint64_t ids[64], queue;
  live_prefill(d, ids, &queue);
  set_queue(d, queue);
}

/* The live prefill worker with the least load (its report plus what we
 * sent since; unknown counts as idle); ties go round robin. */
static uint64_t least_loaded(dyn__disagg_t *d, const uint64_t *ids, size_t n) {
  uint64_t best = 0, best_load = UINT64_MAX;
  d->rr++;
  for (size_t k = 0; k < n; k++) {
    uint64_t id = ids[(d->rr + k) % n];
    const dyn__prefill_load_t *l = find_load(d, id);
    uint64_t load = l ? l->load + l->sent : 0;
    if (load < best_load) best = id, best_load = load;
  }
  return best;
}

void dyn__disagg_generate(worker_t *w, dyn_request_t *req, void *in_) {
  dyn__proto_engine_request_t *in = in_;
  dyn__disagg_t *d = w->dg;
  djob_t *j = calloc(1, sizeof *j);
  if (j) j->prompt = malloc((in->n_tokens + 1) * sizeof *j->prompt);
  if (!j || !j->prompt) {
    if (j) free(j);
    dyn__proto_engine_request_free(in);
    dyn__proto_fail(req, 500, "out of memory");
    return;
  }
  memcpy(j->prompt, in->token_ids, in->n_tokens * sizeof *j->prompt);
  j->d = d;
  j->pool = d->pool;
  j->req = req;
  j->n_prompt = in->n_tokens;
  j->r = (dyn_engine_request_t){
      .prompt = j->prompt,
      .n_prompt = in->n_tokens,
      .max_tokens = in->max_tokens,
      .ignore_eos = in->ignore_eos,
      .temperature = (float)in->temperature,
      .has_seed = in->has_seed,
      .seed = in->seed,
      .top_p = (float)in->top_p,
      .top_k = in->top_k > INT32_MAX ? INT32_MAX : (int32_t)in->top_k,
      .logprobs = in->logprobs,
      .top_logprobs = in->top_logprobs,
  };
  uv_timer_init(dyn_runtime_loop(dyn_service_runtime(w->ctx)), &j->timer);
  j->timer.data = j;
  j->from_block = dyn_engine_kv_cached_blocks(w->engine, j->prompt, j->n_prompt);
  size_t cached = j->from_block * w->block_size;
  long long uncached = (long long)(j->n_prompt > cached ? j->n_prompt - cached : 0);
  uint64_t live[64], queue;
  size_t n_live = live_prefill(d, live, &queue);
  set_queue(d, queue);
  int remote = dyn__disagg_goes_remote(in->max_tokens, uncached, d->max_local, queue,
                                       d->max_queue, n_live);
  int rc = DYN_EINVAL;
  if (remote) {
    /* max_tokens 1: the first token is the whole answer, so the prefill
     * worker need not export and send the KV. */
    dyn__proto_prefill_request_t p = {.req = *in,
                                      .kv_layout = dyn_engine_kv_layout(w->engine),
                                      .kv_from_block = (uint32_t)j->from_block,
                                      .no_kv = in->max_tokens <= 1};
    char *body = dyn__proto_prefill_request_encode(&p);
    static const dyn_stream_callbacks_t cb = {on_prefill_data, on_prefill_done};
    j->target = least_loaded(d, live, n_live);
    dyn_call_options_t opt = {.route = DYN_ROUTE_DIRECT, .instance_id = j->target};
    rc = body ? dyn_client_generate(d->prefill, &opt, body, strlen(body), &cb, j, &j->stream)
              : DYN_ENOMEM;
    free(body);
  }
  dyn__proto_engine_request_free(in);
  if (rc == DYN_OK) {
    /* Counted until the prefill worker's next report, which includes it. */
    dyn__prefill_load_t *l = load_entry(d, j->target);
    if (l) l->sent++;
    set_queue(d, queue + 1);
    j->t0 = uv_hrtime();
    uv_timer_start(&j->timer, on_stall, d->timeout_ms, d->timeout_ms);
    dyn_request_on_cancel(req, on_client_cancel, j);
    return;
  }
  if (remote) add(d->fallbacks, 1);
  add(d->local, 1);
  run_here(j, NULL, 0);
  djob_free(j);
}

/* The control plane's thresholds (see the top of the file). */
static void on_threshold(dyn_watch_event_t ev, const char *key, const char *value, size_t len,
                         void *ud) {
  dyn__disagg_t *d = ud;
  if ((ev != DYN_WATCH_PUT && ev != DYN_WATCH_DELETE) || !key) return; /* SYNCED, RESET */
  long long *live = !strcmp(key, d->key_local)   ? &d->max_local
                    : !strcmp(key, d->key_queue) ? &d->max_queue
                                                 : NULL;
  if (!live) return;
  long long cfg = live == &d->max_local ? d->cfg_max_local : d->cfg_max_queue;
  if (ev == DYN_WATCH_DELETE) {
    *live = cfg;
  } else if (ev == DYN_WATCH_PUT) {
    long long v;
    if (dyn__llm_parse_int(value, 0, LLONG_MAX, &v)) {
      char what[96];
      dyn__llm_int_what(what, sizeof what, 0, LLONG_MAX);
      dyn_log(DYN_LOG_ERROR, "%s: control-plane key '%s' must be %s, not \"%.60s%s\"; keeping %lld",
              dyn_service_def(d->w->ctx)->name, key, what, value, len > 60 ? "..." : "", *live);
      return;
    }
    *live = v;
  } else {
    return;
  }
  dyn_log(DYN_LOG_INFO, "Worker: %s is now %lld", key, *live);
}

/* ---- prefill role ---------------------------------------------------------- */

typedef struct pjob {
  dyn__disagg_t *d;
  dyn_request_t *req;
  dyn_engine_seq_t *seq;
  uv_timer_t pace;
  uint32_t *prompt;
  size_t n_prompt, from_block;
  uint8_t *blob;
  size_t blob_len, sent;
  uint64_t t0;
  int ended;
} pjob_t;

static void pjob_closed(uv_handle_t *h) {
  pjob_t *j = h->data;
  free(j->blob);
  free(j->prompt);
  free(j);
}

static void pjob_free(pjob_t *j) {
  uv_timer_stop(&j->pace);
  uv_close((uv_handle_t *)&j->pace, pjob_closed);
}

/* Sends what the connection and the modelled bandwidth allow, then waits
 * a millisecond for more room. */
static void pump(uv_timer_t *t) {
  pjob_t *j = t->data;
  dyn__disagg_t *d = j->d;
  size_t budget = SIZE_MAX;
  if (d->bandwidth_mbps > 0) {
    double allowed = (double)(uv_hrtime() - j->t0) / 1e3 * d->bandwidth_mbps;
    budget = allowed > (double)j->sent ? (size_t)(allowed - (double)j->sent) : 0;
  }
  while (j->sent < j->blob_len && dyn_request_pending(j->req) < 4 * d->chunk_bytes && budget) {
    size_t n = j->blob_len - j->sent;
    if (n > d->chunk_bytes) n = d->chunk_bytes;
    if (n > budget) n = budget;
    if (dyn_request_sendv(j->req, dyn__proto_kv_chunk_head(), DYN__PROTO_KV_CHUNK_HEAD_LEN,
                          j->blob + j->sent, n))
      break;
    j->sent += n;
    budget -= n;
    add(d->bytes, (double)n);
  }
  if (j->sent == j->blob_len) {
    if (d->seconds) dyn_series_observe(d->seconds, (double)(uv_hrtime() - j->t0) / 1e9);
    j->ended = 1;
    dyn_request_end(j->req);
    pjob_free(j);
    return;
  }
  uv_timer_start(&j->pace, pump, 1, 0);
}

static void on_prefill_cancel(dyn_request_t *req, void *ud) {
  pjob_t *j = ud;
  j->ended = 1;
  if (j->blob)
    dyn_log(DYN_LOG_INFO, "PrefillWorker: the decode worker left mid-transfer (%zu of %zu KV "
            "bytes sent): freed", j->sent, j->blob_len);
  /* A cancelled request is still ended by its handler: that frees it
   * (nobody reads the answer). LeakSanitizer caught it left behind. */
  dyn_request_fail(req, "cancelled");
  j->req = NULL;
  if (j->seq) dyn_engine_cancel(j->seq); /* on_p_done sees ended */
  else pjob_free(j);                     /* sending: stop, free the KV */
}

static void on_p_tokens(dyn_engine_seq_t *seq, const uint32_t *toks, size_t n, void *ud) {
  pjob_t *j = ud;
  dyn__disagg_t *d = j->d;
  size_t blocks = 0;
  const char *why = NULL;
  void *blob = NULL;
  int rc = dyn_engine_kv_export(d->w->engine, j->prompt, j->n_prompt, j->from_block, &blob,
                                &j->blob_len, &blocks, &why);
  if (rc) {
    j->ended = 1;
    dyn__proto_fail(j->req, 500, "%s", why ? why : dyn_strerror(rc));
    return; /* on_p_done (LENGTH) follows and frees j */
  }
  j->blob = blob;
  dyn__proto_kv_header_t h = {.kv_layout = dyn_engine_kv_layout(d->w->engine),
                              .kv_bytes = j->blob_len, .kv_blocks = blocks,
                              .kv_from_block = j->from_block};
  dyn__proto_send(j->req, dyn__proto_kv_header_encode(&h));
  dyn__proto_engine_output_t out = {.token_ids = toks, .n_tokens = n, .cached_tokens = -1,
                                    .logprobs = dyn_engine_seq_logprobs(seq)};
  dyn__proto_send(j->req, dyn__proto_engine_output_encode(&out));
  j->t0 = uv_hrtime();
  d->w->metrics_dirty = 1;
}

/* no_kv (the caller will not decode): the answer is a header announcing
 * no KV, then the first token; nothing is exported. */
static void on_first_only(dyn_engine_seq_t *seq, const uint32_t *toks, size_t n, void *ud) {
  pjob_t *j = ud;
  dyn__proto_kv_header_t h = {.kv_layout = dyn_engine_kv_layout(j->d->w->engine),
                              .kv_from_block = j->from_block};
  dyn__proto_send(j->req, dyn__proto_kv_header_encode(&h));
  dyn__proto_engine_output_t out = {.token_ids = toks, .n_tokens = n, .cached_tokens = -1,
                                    .logprobs = dyn_engine_seq_logprobs(seq)};
  dyn__proto_send(j->req, dyn__proto_engine_output_encode(&out));
  j->ended = 1;
  dyn_request_end(j->req);
  j->d->w->metrics_dirty = 1;
}

static void on_p_done(dyn_engine_seq_t *seq, dyn_engine_finish_t reason, void *ud) {
  pjob_t *j = ud;
  j->seq = NULL;
  j->d->w->metrics_dirty = 1;
  if (j->ended) { /* cancelled, failed in on_p_tokens, or answered by on_first_only */
    pjob_free(j);
    return;
  }
  if (reason == DYN_ENGINE_LENGTH && j->blob) {
    pump(&j->pace); /* the sequence is done: its KV goes */
  } else if (reason == DYN_ENGINE_STOP) { /* EOS first: no KV, nothing to decode */
    dyn__proto_kv_header_t h = {.kv_layout = dyn_engine_kv_layout(j->d->w->engine)};
    dyn__proto_send(j->req, dyn__proto_kv_header_encode(&h));
    dyn__proto_engine_output_t out = {.cached_tokens = -1, .finish = DYN__PROTO_STOP};
    dyn__proto_send(j->req, dyn__proto_engine_output_encode(&out));
    dyn_request_end(j->req);
    pjob_free(j);
  } else {
    dyn__proto_fail(j->req, 500, "the engine failed");
    pjob_free(j);
  }
}

void dyn__disagg_prefill(dyn_request_t *req, const void *body, size_t len, void *ud) {
  worker_t *w = dyn_service_data(ud);
  dyn__disagg_t *d = w->dg;
  dyn__proto_prefill_request_t in;
  const char *why = NULL;
  char msg[512];
  int rc = dyn__proto_prefill_request_decode(body, len, &in, &why);
  if (rc) {
    if (rc == DYN_ENOMEM) dyn__proto_fail(req, 500, "out of memory");
    else dyn__proto_fail(req, 400, "%s", why);
    return;
  }
  const char *bad = layout_mismatch(dyn_engine_kv_layout(w->engine), in.kv_layout, msg, sizeof msg);
  if (bad) {
    dyn_log(DYN_LOG_ERROR, "PrefillWorker: refused a prefill: %s", bad);
    dyn__proto_fail(req, 400, "%s", bad);
    dyn__proto_prefill_request_free(&in);
    return;
  }
  pjob_t *j = calloc(1, sizeof *j);
  if (j) j->prompt = malloc(in.req.n_tokens * sizeof *j->prompt);
  if (!j || !j->prompt) {
    free(j);
    dyn__proto_prefill_request_free(&in);
    dyn__proto_fail(req, 500, "out of memory");
    return;
  }
  memcpy(j->prompt, in.req.token_ids, in.req.n_tokens * sizeof *j->prompt);
  j->n_prompt = in.req.n_tokens;
  j->from_block = in.kv_from_block;
  int no_kv = in.no_kv;
  j->d = d;
  j->req = req;
  uv_timer_init(dyn_runtime_loop(dyn_service_runtime(w->ctx)), &j->pace);
  j->pace.data = j;
  dyn_engine_request_t r = {
      .prompt = j->prompt,
      .n_prompt = j->n_prompt,
      .max_tokens = 1,
      .ignore_eos = in.req.ignore_eos,
      .temperature = (float)in.req.temperature,
      .has_seed = in.req.has_seed,
      .seed = in.req.seed,
      .top_p = (float)in.req.top_p,
      .top_k = in.req.top_k > INT32_MAX ? INT32_MAX : (int32_t)in.req.top_k,
      .logprobs = in.req.logprobs,
      .top_logprobs = in.req.top_logprobs,
  };
  dyn__proto_prefill_request_free(&in);
  static const dyn_engine_callbacks_t cb = {on_p_tokens, on_p_done};
  static const dyn_engine_callbacks_t first_only = {on_first_only, on_p_done};
  rc = dyn_engine_submit(w->engine, &r, no_kv ? &first_only : &cb, j, &j->seq, &why);
  if (rc) {
    pjob_free(j);
    if (rc == DYN_ENOMEM) dyn__proto_fail(req, 500, "out of memory");
    else dyn__proto_fail(req, 400, "%s", why ? why : dyn_strerror(rc));
    return;
  }
  add(d->remote, 1);
  dyn_request_on_cancel(req, on_prefill_cancel, j);
  w->metrics_dirty = 1;
}

/* ---- lifecycle -------------------------------------------------------------- */

int dyn__disagg_start(worker_t *w) {
  dyn__disagg_t *d = calloc(1, sizeof *d);
  if (!d) return DYN_ENOMEM;
  dyn_service_ctx_t *ctx = w->ctx;
  d->w = w;
  dyn__llm_cfg_t c;
  dyn__llm_cfg_init(&c, ctx);
  d->cfg_max_local = d->max_local =
      dyn__llm_cfg_int(&c, "max-local-prefill-length", 512, 0, LLONG_MAX);
  d->cfg_max_queue = d->max_queue =
      dyn__llm_cfg_int(&c, "max-prefill-queue-size", 8, 0, LLONG_MAX);
  d->timeout_ms = (unsigned)dyn__llm_cfg_int(&c, "kv-transfer-timeout-ms", 10000, 1, UINT_MAX);
  d->chunk_bytes = (size_t)dyn__llm_cfg_int(&c, "kv-chunk-bytes", 1 << 20, 4096, 8 << 20);
  d->bandwidth_mbps = dyn__llm_cfg_double(&c, "kv-bandwidth-mbps", 0, 0, DBL_MAX);
  long long keep = dyn__llm_cfg_int(&c, "kv-receive-keep-bytes", 256ll << 20, 0, LLONG_MAX);
  if (c.bad) {
    free(d);
    return DYN_EINVAL;
  }
  w->dg = d;
  dyn_runtime_t *rt = dyn_service_runtime(ctx);
  const char *ns = dyn_service_def(ctx)->namespace_;
  if (!ns) ns = "dynamo";
  d->bytes = series(DYN_METRIC_COUNTER, "dynamo_disagg_kv_transfer_bytes_total",
                    "KV bytes sent (prefill) or received (decode).", w);
  d->seconds = series(DYN_METRIC_HISTOGRAM, "dynamo_disagg_kv_transfer_seconds",
                      "KV transfers: from the first token to the last byte (prefill), from "
                      "the prefill request to the last byte (decode).", w);
  d->remote = series(DYN_METRIC_COUNTER, "dynamo_disagg_remote_prefills_total",
                     "Prompts prefilled by a prefill worker (decode: used; prefill: served).", w);
  if (w->role == DYN__ROLE_PREFILL) return DYN_OK;
  if (!(d->pool = calloc(1, sizeof *d->pool))) {
    dyn__disagg_shutdown(w);
    return DYN_ENOMEM;
  }
  d->pool->keep_bytes = (size_t)keep;
  d->receive = series(DYN_METRIC_HISTOGRAM, "dynamo_disagg_kv_receive_seconds",
                      "Decode: KV transfers from the arrival of their header to that of their "
                      "last byte.", w);
  d->local = series(DYN_METRIC_COUNTER, "dynamo_disagg_local_prefills_total",
                    "Prompts a decode worker prefilled itself (fallbacks included).", w);
  d->fallbacks = series(DYN_METRIC_COUNTER, "dynamo_disagg_prefill_fallbacks_total",
                        "Remote prefills that failed and were done locally.", w);
  d->queue = series(DYN_METRIC_GAUGE, "dynamo_disagg_prefill_queue_length",
                    "Prefill requests without their first token at the live prefill workers "
                    "(their reports, plus this decode worker's sent since), as this decode "
                    "worker compares with max-prefill-queue-size.", w);
  dyn_endpoint_t *ep;
  char path[256];
  snprintf(path, sizeof path, "%s/PrefillWorker/prefill", ns);
  int rc = dyn_runtime_endpoint(rt, path, &ep);
  if (!rc) rc = dyn_endpoint_client(ep, &d->prefill);
  snprintf(d->key_local, sizeof d->key_local, "config/%s/disagg/max-local-prefill-length", ns);
  snprintf(d->key_queue, sizeof d->key_queue, "config/%s/disagg/max-prefill-queue-size", ns);
  char prefix[256];
  snprintf(prefix, sizeof prefix, "config/%s/disagg/", ns);
  if (!rc) rc = dyn_discovery_watch(rt, prefix, on_threshold, d, &d->watch);
  dyn_namespace_t *nsp;
  dyn_component_t *pc;
  if (!rc) rc = dyn_runtime_namespace(rt, ns, &nsp);
  if (!rc) rc = dyn_namespace_component(nsp, "PrefillWorker", &pc);
  if (!rc) rc = dyn_component_subscribe(pc, "load_metrics", on_prefill_load, d, &d->load_sub);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "Worker: cannot reach the prefill workers: %s", dyn_strerror(rc));
    dyn__disagg_shutdown(w);
    return rc;
  }
  return DYN_OK;
}

void dyn__disagg_shutdown(worker_t *w) {
  dyn__disagg_t *d = w->dg;
  if (!d) return;
  if (d->watch) dyn_discovery_unwatch(d->watch);
  if (d->load_sub) dyn_unsubscribe(d->load_sub);
  if (d->prefill) dyn_client_free(d->prefill); /* open streams end: run_here */
  pool_close(d->pool); /* freed once the engine gave back what it holds */
  free(d);
  w->dg = NULL;
}
