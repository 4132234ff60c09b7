/* etcd.c - discovery on etcd v3 through its JSON gateway (see etcd.h).
 *
 * Three parts share one libcurl multi on the runtime's loop:
 * - the lease: granted at open, kept alive every TTL/3, granted again
 *   (same id) with every key put back if etcd forgot it;
 * - the key queue: puts and deletes go to etcd one at a time, in the order
 *   the process made them, because two requests in flight on two
 *   connections could land in either order and leave a deleted key alive;
 * - watches: range (snapshot) + watch stream, resynced after any loss.
 * We remember what the process asked for (keys, watches), as the embedded
 * backend does, so that any loss can be repaired by replaying it.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/etcd/etcd.h"
#include "common/env_names.h"
#include "runtime/etcd/etcd_codec.h"
#include "runtime/etcd/etcd_http.h"
#include "runtime/internal.h"
#include "runtime/keyset.h"

#define DEFAULT_TTL_S 10
#define OPEN_TIMEOUT_MS 5000
#define REQUEST_TIMEOUT_MS 5000L
#define REVOKE_TIMEOUT_MS 1000L
#define BACKOFF_MIN_MS 250u
#define BACKOFF_MAX_MS 2000u
#define URL_MAX 512

/* gRPC codes the gateway reports in "code" */
#define GRPC_NOT_FOUND 5
#define GRPC_FAILED_PRECONDITION 9
#define GRPC_UNAVAILABLE 14

/* A put (value set) or delete (value NULL) waiting for its turn. */
typedef struct eop {
  struct eop *next;
  char *key;
  char *value;
} eop_t;

typedef struct etcd etcd_t;

typedef struct ewatch {
  struct ewatch *next;
  etcd_t *e;
  dyn_watch_fn fn;
  void *ud;
  uv_timer_t retry;
  dyn__ehttp_req_t *req; /* the range or the stream in flight */
  int delivered;         /* a snapshot went out: the next one needs a RESET */
  int dead;              /* unwatched or closed: no more callbacks */
  unsigned backoff_ms;
  char *key64, *end64;   /* the prefix and its range end, base64 */
  char prefix[];
} ewatch_t;

struct etcd {
  dyn_runtime_t *rt;
  dyn__ehttp_t *http;
  char *endpoints; /* as given, for messages */
  char **urls;
  size_t n_urls, cur;
  int ttl_s;        /* asked for */
  int granted_ttl_s;
  int fresh_id;
  uint64_t lease;   /* 0 until granted */
  uint64_t want_id; /* the id the next grant asks for; 0: etcd picks */
  int live;         /* etcd holds the lease, as far as we know */
  uint64_t last_ok_ms;
  int warned;       /* said that etcd is unreachable past the TTL */
  unsigned lease_backoff_ms;
  uv_timer_t lease_timer;
  dyn__ehttp_req_t *lease_req;

  dyn__keyset_t keys; /* put back after the lease was lost */
  eop_t *ops, **ops_tail;
  dyn__ehttp_req_t *op_req; /* for the head of ops */
  uv_timer_t op_timer;
  unsigned op_backoff_ms;

  ewatch_t *watches;
  dyn__etcd_session_fn on_session;
  void *on_session_ud;

  int opening, open_failed;
  size_t open_tries;
  int closing;
  int handles; /* timers not yet closed */
  char last_error[256];
};

static void lease_grant(etcd_t *e);
static void ops_pump(etcd_t *e);
static void watch_range(ewatch_t *w);

/* ---- helpers ----------------------------------------------------------- */

static uint64_t now_ms(etcd_t *e) { return uv_now(e->rt->loop); }

static const char *url(etcd_t *e, const char *path, char *buf) {
  snprintf(buf, URL_MAX, "%s%s", e->urls[e->cur], path);
  return buf;
}

/* The endpoint failed to answer: the next request tries the next one. */
static void rotate(etcd_t *e) {
  if (e->n_urls > 1) e->cur = (e->cur + 1) % e->n_urls;
}

static unsigned backoff_next(unsigned ms) {
  return ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : ms * 2;
}

static char *b64(const char *s, size_t n) {
  char *out = malloc(dyn__etcd_b64_size(n));
  if (out) dyn__etcd_b64_encode(s, n, out);
  return out;
}

/* An answer, parsed; or why there is none. transport: etcd was not
 * reachable (or not serving), so another endpoint or a later try may do. */
typedef struct reply {
  json_t *json;
  int transport;
  int code;
  char why[200];
} reply_t;

static int reply_parse(reply_t *r, int rc, long status, const char *body, size_t len,
                       const char *err) {
  memset(r, 0, sizeof *r);
  if (rc) {
    r->transport = 1;
    snprintf(r->why, sizeof r->why, "%s", err);
    return -1;
  }
  json_error_t jerr;
  r->json = json_loadb(body, len, 0, &jerr);
  json_t *e = r->json ? json_object_get(r->json, "error") : NULL;
  if (r->json && !e && status == 200) return 0;
  /* {"error":"..","message":"..","code":N}, or in a stream
   * {"error":{"grpc_code":N,"message":".."}} */
  json_t *src = json_is_object(e) ? e : r->json;
  const char *msg = json_string_value(json_object_get(src, "message"));
  if (!msg) msg = json_string_value(e);
  json_t *code = json_object_get(src, json_is_object(e) ? "grpc_code" : "code");
  r->code = (int)json_integer_value(code);
  if (msg) snprintf(r->why, sizeof r->why, "%s", msg);
  else snprintf(r->why, sizeof r->why, "HTTP %ld: %.120s", status, body);
  r->transport = r->code == GRPC_UNAVAILABLE || status == 502 || status == 503;
  json_decref(r->json);
  r->json = NULL;
  return -1;
}

/* ---- the lease --------------------------------------------------------- */

static void lease_schedule(etcd_t *e, uint64_t ms, uv_timer_cb cb) {
  if (!e->closing) uv_timer_start(&e->lease_timer, cb, ms, 0);
}

static uint64_t keepalive_period_ms(etcd_t *e) {
  uint64_t ms = (uint64_t)e->granted_ttl_s * 1000 / 3;
  return ms ? ms : 1;
}

static void on_lease_retry(uv_timer_t *t) { lease_grant(t->data); }

static void drop_ops(etcd_t *e) {
  dyn__ehttp_cancel(e->op_req);
  e->op_req = NULL;
  uv_timer_stop(&e->op_timer);
  while (e->ops) {
    eop_t *op = e->ops;
    e->ops = op->next;
    free(op->key);
    free(op->value);
    free(op);
  }
  e->ops_tail = &e->ops;
}

static int enqueue(etcd_t *e, const char *key, const char *value) {
  eop_t *op = calloc(1, sizeof *op);
  if (!op || !(op->key = strdup(key)) || (value && !(op->value = strdup(value)))) {
    if (op) free(op->key);
    free(op);
    return DYN_ENOMEM;
  }
  *e->ops_tail = op;
  e->ops_tail = &op->next;
  return DYN_OK;
}

/* The lease is new (or new again): whatever was queued was meant for the
 * old one, whose keys etcd has dropped; put every remembered key back. */
static void replay(etcd_t *e) {
  drop_ops(e);
  size_t n = 0;
  for (dyn__key_t *k = e->keys.head; k; k = k->next, n++)
    if (enqueue(e, k->key, k->value))
      dyn_log(DYN_LOG_ERROR, "etcd: out of memory putting back %s", k->key);
  if (n) dyn_log(DYN_LOG_INFO, "etcd: putting back %zu key(s) under lease %" PRIx64, n, e->lease);
  ops_pump(e);
}

static void lease_lost(etcd_t *e, const char *why) {
  if (!e->live || e->closing) return;
  e->live = 0;
  drop_ops(e);
  dyn_log(DYN_LOG_WARN, "etcd: lease %" PRIx64 " is gone (%s); granting it again", e->lease,
          why);
  e->want_id = e->fresh_id ? 0 : e->lease;
  dyn__ehttp_cancel(e->lease_req);
  e->lease_req = NULL;
  lease_grant(e);
}

static void on_keepalive_timer(uv_timer_t *t);

static void granted(etcd_t *e, uint64_t id, uint64_t ttl) {
  uint64_t old = e->lease;
  e->lease = id;
  e->live = 1;
  e->granted_ttl_s = ttl > 0 && ttl < 1000000 ? (int)ttl : e->ttl_s;
  e->last_ok_ms = now_ms(e);
  e->warned = 0;
  e->lease_backoff_ms = BACKOFF_MIN_MS;
  lease_schedule(e, keepalive_period_ms(e), on_keepalive_timer);
  if (!old) return; /* the first grant, at open: nothing to put back */
  if (old != id) {
    dyn_log(DYN_LOG_WARN,
            "etcd: the session id changed from %" PRIx64 " to %" PRIx64
            " (etcd granted a new lease); instance keys must be registered again",
            old, id);
    if (e->on_session) e->on_session(e->on_session_ud, old, id);
    if (e->closing) return;
  }
  replay(e);
}

static void on_grant(dyn__ehttp_req_t *req, int rc, long status, const char *body, size_t len,
                     const char *err, void *ud) {
  (void)req;
  etcd_t *e = ud;
  e->lease_req = NULL;
  reply_t r;
  uint64_t id = 0, ttl = 0;
  if (!reply_parse(&r, rc, status, body, len, err)) {
    int bad = dyn__etcd_json_u64(r.json, "ID", &id) || !id ||
              dyn__etcd_json_u64(r.json, "TTL", &ttl) < 0;
    json_decref(r.json);
    if (!bad) {
      granted(e, id, ttl);
      return;
    }
    snprintf(r.why, sizeof r.why, "malformed lease grant answer");
  }
  snprintf(e->last_error, sizeof e->last_error, "%s", r.why);
  if (!r.transport && e->want_id && r.code == GRPC_FAILED_PRECONDITION) {
    /* Someone holds that id now: take whatever etcd gives. */
    dyn_log(DYN_LOG_WARN, "etcd: cannot grant lease %" PRIx64 " again (%s)", e->want_id,
            r.why);
    e->want_id = 0;
    lease_grant(e);
    return;
  }
  if (r.transport) rotate(e);
  if (e->opening) {
    /* Each endpoint gets one try; an endpoint that answered with an error
     * may be electing a leader, so it gets until the open deadline. */
    if (r.transport && ++e->open_tries >= e->n_urls) e->open_failed = 1;
    else lease_schedule(e, r.transport ? 0 : BACKOFF_MIN_MS, on_lease_retry);
    return;
  }
  dyn_log(e->lease_backoff_ms == BACKOFF_MIN_MS ? DYN_LOG_WARN : DYN_LOG_DEBUG,
          "etcd: lease grant failed (%s); retrying in %u ms", r.why, e->lease_backoff_ms);
  lease_schedule(e, e->lease_backoff_ms, on_lease_retry);
  e->lease_backoff_ms = backoff_next(e->lease_backoff_ms);
}

static void lease_grant(etcd_t *e) {
  if (e->closing || e->lease_req) return;
  char body[96], u[URL_MAX];
  if (e->want_id)
    snprintf(body, sizeof body, "{\"TTL\":%d,\"ID\":\"%" PRIu64 "\"}", e->ttl_s, e->want_id);
  else
    snprintf(body, sizeof body, "{\"TTL\":%d}", e->ttl_s);
  if (dyn__ehttp_post(e->http, url(e, "/v3/lease/grant", u), body, REQUEST_TIMEOUT_MS, NULL,
                      on_grant, e, &e->lease_req))
    lease_schedule(e, BACKOFF_MAX_MS, on_lease_retry);
}

/* No answer to a keepalive: past the TTL etcd may have dropped the lease,
 * which the first keepalive answered after the outage will tell. */
static void keepalive_failed(etcd_t *e, const char *why) {
  uint64_t silent = now_ms(e) - e->last_ok_ms;
  if (!e->warned && silent >= (uint64_t)e->granted_ttl_s * 1000) {
    e->warned = 1;
    dyn_log(DYN_LOG_WARN,
            "etcd: no keepalive answer from %s for %" PRIu64
            " ms (%s); lease %" PRIx64 " may have expired, keys go back once etcd answers",
            e->endpoints, silent, why, e->lease);
  }
  uint64_t wait = e->lease_backoff_ms;
  if (wait > keepalive_period_ms(e)) wait = keepalive_period_ms(e);
  e->lease_backoff_ms = backoff_next(e->lease_backoff_ms);
  lease_schedule(e, wait, on_keepalive_timer);
}

static void on_keepalive(dyn__ehttp_req_t *req, int rc, long status, const char *body,
                         size_t len, const char *err, void *ud) {
  (void)req;
  etcd_t *e = ud;
  e->lease_req = NULL;
  reply_t r;
  if (reply_parse(&r, rc, status, body, len, err)) {
    if (r.transport) rotate(e);
    keepalive_failed(e, r.why);
    return;
  }
  /* The gateway streams keepalive answers: {"result":{"ID":..,"TTL":..}} */
  json_t *res = json_object_get(r.json, "result");
  uint64_t ttl = 0;
  int bad = dyn__etcd_json_u64(res ? res : r.json, "TTL", &ttl) < 0;
  json_decref(r.json);
  if (bad) {
    keepalive_failed(e, "malformed keepalive answer");
    return;
  }
  if (!ttl) {
    lease_lost(e, "etcd no longer knows it");
    return;
  }
  if (e->warned) dyn_log(DYN_LOG_INFO, "etcd answers again; lease %" PRIx64 " is alive", e->lease);
  e->last_ok_ms = now_ms(e);
  e->warned = 0;
  e->lease_backoff_ms = BACKOFF_MIN_MS;
  lease_schedule(e, keepalive_period_ms(e), on_keepalive_timer);
}

static void on_keepalive_timer(uv_timer_t *t) {
  etcd_t *e = t->data;
  if (!e->live) {
    lease_grant(e);
    return;
  }
  if (e->lease_req) return;
  char body[64], u[URL_MAX];
  snprintf(body, sizeof body, "{\"ID\":\"%" PRIu64 "\"}", e->lease);
  long timeout = (long)keepalive_period_ms(e);
  if (timeout < 500) timeout = 500;
  if (dyn__ehttp_post(e->http, url(e, "/v3/lease/keepalive", u), body, timeout, NULL,
                      on_keepalive, e, &e->lease_req))
    keepalive_failed(e, "out of memory");
}

/* ---- the key queue ----------------------------------------------------- */

static void on_op_retry(uv_timer_t *t) { ops_pump(t->data); }

static void op_done(etcd_t *e) {
  eop_t *op = e->ops;
  e->ops = op->next;
  if (!e->ops) e->ops_tail = &e->ops;
  free(op->key);
  free(op->value);
  free(op);
  e->op_backoff_ms = BACKOFF_MIN_MS;
}

static void on_op(dyn__ehttp_req_t *req, int rc, long status, const char *body, size_t len,
                  const char *err, void *ud) {
  (void)req;
  etcd_t *e = ud;
  e->op_req = NULL;
  reply_t r;
  if (!reply_parse(&r, rc, status, body, len, err)) {
    json_decref(r.json);
    op_done(e);
    ops_pump(e);
    return;
  }
  eop_t *op = e->ops;
  if (r.transport) {
    rotate(e);
    uv_timer_start(&e->op_timer, on_op_retry, e->op_backoff_ms, 0);
    e->op_backoff_ms = backoff_next(e->op_backoff_ms);
    return;
  }
  if (op->value && r.code == GRPC_NOT_FOUND && strstr(r.why, "lease")) {
    lease_lost(e, r.why); /* puts them all back once granted again */
    return;
  }
  dyn_log(DYN_LOG_WARN, "etcd refused to %s %s: %s", op->value ? "put" : "delete", op->key,
          r.why);
  op_done(e);
  ops_pump(e);
}

static char *op_body(etcd_t *e, const eop_t *op) {
  char *k = b64(op->key, strlen(op->key));
  char *v = op->value ? b64(op->value, strlen(op->value)) : NULL;
  char *body = NULL;
  if (k && (v || !op->value)) {
    size_t n = strlen(k) + (v ? strlen(v) : 0) + 96;
    if ((body = malloc(n))) {
      if (v)
        snprintf(body, n, "{\"key\":\"%s\",\"value\":\"%s\",\"lease\":\"%" PRIu64 "\"}", k, v,
                 e->lease);
      else
        snprintf(body, n, "{\"key\":\"%s\"}", k);
    }
  }
  free(k);
  free(v);
  return body;
}

static void ops_pump(etcd_t *e) {
  if (e->op_req || !e->live || e->closing || !e->ops || uv_is_active((uv_handle_t *)&e->op_timer))
    return;
  eop_t *op = e->ops;
  char *body = op_body(e, op);
  char u[URL_MAX];
  int rc = body ? dyn__ehttp_post(e->http,
                                  url(e, op->value ? "/v3/kv/put" : "/v3/kv/deleterange", u),
                                  body, REQUEST_TIMEOUT_MS, NULL, on_op, e, &e->op_req)
                : DYN_ENOMEM;
  free(body);
  if (rc) uv_timer_start(&e->op_timer, on_op_retry, BACKOFF_MAX_MS, 0);
}

/* ---- watches ----------------------------------------------------------- */

static void on_watch_retry(uv_timer_t *t) { watch_range(t->data); }

static void watch_lost(ewatch_t *w, const char *why) {
  dyn__ehttp_cancel(w->req);
  w->req = NULL;
  if (w->dead) return;
  /* Said once per outage: retries while etcd stays away go to debug. */
  dyn_log(w->backoff_ms == BACKOFF_MIN_MS ? DYN_LOG_WARN : DYN_LOG_DEBUG,
          "etcd: watch on %s lost (%s); resyncing in %u ms", w->prefix, why, w->backoff_ms);
  uv_timer_start(&w->retry, on_watch_retry, w->backoff_ms, 0);
  w->backoff_ms = backoff_next(w->backoff_ms);
}

/* Delivers one kv (a PUT, or a DELETE when del). 0, or -1 if malformed. */
static int emit_kv(ewatch_t *w, json_t *kv, int del) {
  size_t vlen = 0;
  char *key = dyn__etcd_b64_member(kv, "key", NULL);
  char *value = del ? NULL : dyn__etcd_b64_member(kv, "value", &vlen);
  int ok = key && (del || value);
  if (ok) w->fn(del ? DYN_WATCH_DELETE : DYN_WATCH_PUT, key, del ? "" : value, vlen, w->ud);
  free(key);
  free(value);
  return ok ? 0 : -1;
}

static void on_stream_line(dyn__ehttp_req_t *req, const char *line, size_t len, void *ud) {
  (void)req;
  ewatch_t *w = ud;
  json_error_t jerr;
  json_t *root = json_loadb(line, len, 0, &jerr);
  json_t *res = root ? json_object_get(root, "result") : NULL;
  if (!res) {
    json_t *err = root ? json_object_get(root, "error") : NULL;
    const char *msg = json_string_value(json_object_get(err, "message"));
    if (!msg) msg = json_string_value(err);
    watch_lost(w, msg ? msg : "malformed watch answer");
    json_decref(root);
    return;
  }
  uint64_t compact = 0;
  dyn__etcd_json_u64(res, "compact_revision", &compact);
  if (json_is_true(json_object_get(res, "canceled")) || compact) {
    const char *why = json_string_value(json_object_get(res, "cancel_reason"));
    watch_lost(w, compact ? "history compacted" : why && *why ? why : "canceled by etcd");
    json_decref(root);
    return;
  }
  json_t *events = json_object_get(res, "events");
  size_t i;
  json_t *ev;
  json_array_foreach(events, i, ev) {
    const char *type = json_string_value(json_object_get(ev, "type"));
    int del = type && !strcmp(type, "DELETE");
    if (emit_kv(w, json_object_get(ev, "kv"), del))
      dyn_log(DYN_LOG_WARN, "etcd: skipping a malformed watch event under %s", w->prefix);
    if (w->dead || !w->req) break; /* unwatched, closed or restarted meanwhile */
  }
  json_decref(root);
}

static void on_stream_done(dyn__ehttp_req_t *req, int rc, long status, const char *body,
                           size_t len, const char *err, void *ud) {
  (void)req;
  (void)body;
  (void)len;
  ewatch_t *w = ud;
  w->req = NULL;
  char why[160];
  if (rc) snprintf(why, sizeof why, "%s", err);
  else snprintf(why, sizeof why, "stream ended, HTTP %ld", status);
  watch_lost(w, why);
}

static void watch_stream(ewatch_t *w, uint64_t rev) {
  etcd_t *e = w->e;
  size_t n = strlen(w->key64) + strlen(w->end64) + 128;
  char *body = malloc(n), u[URL_MAX];
  if (body)
    snprintf(body, n,
             "{\"create_request\":{\"key\":\"%s\",\"range_end\":\"%s\","
             "\"start_revision\":\"%" PRIu64 "\"}}",
             w->key64, w->end64, rev);
  int rc = body ? dyn__ehttp_post(e->http, url(e, "/v3/watch", u), body, 0, on_stream_line,
                                  on_stream_done, w, &w->req)
                : DYN_ENOMEM;
  free(body);
  if (rc) watch_lost(w, dyn_strerror(rc));
}

/* The snapshot: RESET if one went out before, every kv, SYNCED, all in
 * one go so that watchers swap views at once. */
static void on_range(dyn__ehttp_req_t *req, int rc, long status, const char *body, size_t len,
                     const char *err, void *ud) {
  (void)req;
  ewatch_t *w = ud;
  w->req = NULL;
  reply_t r;
  uint64_t rev = 0;
  json_t *hdr = NULL, *kvs = NULL;
  if (!reply_parse(&r, rc, status, body, len, err)) {
    hdr = json_object_get(r.json, "header");
    kvs = json_object_get(r.json, "kvs");
    if (dyn__etcd_json_u64(hdr, "revision", &rev) || !rev || (kvs && !json_is_array(kvs))) {
      snprintf(r.why, sizeof r.why, "malformed range answer");
      json_decref(r.json);
      r.json = NULL;
    }
  }
  if (!r.json) {
    if (r.transport) rotate(w->e);
    watch_lost(w, r.why);
    return;
  }
  w->backoff_ms = BACKOFF_MIN_MS;
  if (w->delivered) w->fn(DYN_WATCH_RESET, NULL, NULL, 0, w->ud);
  size_t i;
  json_t *kv;
  json_array_foreach(kvs, i, kv) {
    if (w->dead) break;
    if (emit_kv(w, kv, 0))
      dyn_log(DYN_LOG_WARN, "etcd: skipping a malformed key under %s", w->prefix);
  }
  json_decref(r.json);
  if (w->dead) return;
  w->delivered = 1;
  w->fn(DYN_WATCH_SYNCED, NULL, NULL, 0, w->ud);
  if (!w->dead) watch_stream(w, rev + 1);
}

static void watch_range(ewatch_t *w) {
  etcd_t *e = w->e;
  if (w->dead || w->req) return;
  size_t n = strlen(w->key64) + strlen(w->end64) + 48;
  char *body = malloc(n), u[URL_MAX];
  if (body) snprintf(body, n, "{\"key\":\"%s\",\"range_end\":\"%s\"}", w->key64, w->end64);
  int rc = body ? dyn__ehttp_post(e->http, url(e, "/v3/kv/range", u), body, REQUEST_TIMEOUT_MS,
                                  NULL, on_range, w, &w->req)
                : DYN_ENOMEM;
  free(body);
  if (rc) watch_lost(w, dyn_strerror(rc));
}

static void on_watch_closed(uv_handle_t *h) {
  ewatch_t *w = h->data;
  free(w->key64);
  free(w->end64);
  free(w);
}

/* The watch's memory goes when its timer has closed: a callback of ours
 * that delivered the event which led to this may still be reading w. */
static void watch_drop(ewatch_t *w) {
  w->dead = 1;
  dyn__ehttp_cancel(w->req);
  w->req = NULL;
  uv_close((uv_handle_t *)&w->retry, on_watch_closed);
}

/* ---- discovery ops ----------------------------------------------------- */

static int etcd_put(void *st, const char *key, const char *value) {
  etcd_t *e = st;
  if (e->closing) return DYN_ECLOSED;
  if (dyn__keyset_put(&e->keys, key, value)) return DYN_ENOMEM;
  int rc = enqueue(e, key, value);
  ops_pump(e);
  return rc;
}

static int etcd_del(void *st, const char *key) {
  etcd_t *e = st;
  if (e->closing) return DYN_ECLOSED;
  dyn__keyset_del(&e->keys, key);
  int rc = enqueue(e, key, NULL);
  ops_pump(e);
  return rc;
}

static int etcd_watch(void *st, const char *prefix, dyn_watch_fn fn, void *ud, void **handle) {
  etcd_t *e = st;
  size_t n = strlen(prefix);
  if (e->closing) return DYN_ECLOSED;
  if (n == 0) return DYN_EINVAL;
  ewatch_t *w = calloc(1, sizeof *w + n + 1);
  char *end = malloc(n);
  size_t end_n = 0;
  if (w && end) {
    memcpy(w->prefix, prefix, n + 1);
    dyn__etcd_prefix_end(prefix, n, end, &end_n);
    w->key64 = b64(prefix, n);
    /* No byte to increment: "\0", etcd's "every key from key on". */
    w->end64 = end_n ? b64(end, end_n) : strdup("AA==");
  }
  free(end);
  if (!w || !w->key64 || !w->end64) {
    if (w) {
      free(w->key64);
      free(w->end64);
    }
    free(w);
    return DYN_ENOMEM;
  }
  w->e = e;
  w->fn = fn;
  w->ud = ud;
  w->backoff_ms = BACKOFF_MIN_MS;
  uv_timer_init(e->rt->loop, &w->retry);
  w->retry.data = w;
  w->next = e->watches;
  e->watches = w;
  watch_range(w);
  *handle = w;
  return DYN_OK;
}

static void etcd_unwatch(void *st, void *handle) {
  etcd_t *e = st;
  for (ewatch_t **pp = &e->watches; *pp; pp = &(*pp)->next)
    if (*pp == handle) {
      *pp = (*pp)->next;
      watch_drop(handle);
      return;
    }
}

static uint64_t etcd_session(void *st) { return ((etcd_t *)st)->lease; }

static void free_if_done(etcd_t *e) {
  if (e->handles) return;
  for (size_t i = 0; i < e->n_urls; i++) free(e->urls[i]);
  free(e->urls);
  free(e->endpoints);
  free(e);
}

static void on_timer_closed(uv_handle_t *h) {
  etcd_t *e = h->data;
  e->handles--;
  free_if_done(e);
}

/* Stops everything; e goes once its timers have closed. */
static void teardown(etcd_t *e) {
  e->closing = 1;
  e->live = 0;
  dyn__ehttp_free(e->http); /* cancels every request: no more callbacks */
  e->http = NULL;
  e->lease_req = e->op_req = NULL;
  drop_ops(e);
  dyn__keyset_clear(&e->keys);
  while (e->watches) {
    ewatch_t *w = e->watches;
    e->watches = w->next;
    w->req = NULL; /* freed with the multi */
    watch_drop(w);
  }
  uv_close((uv_handle_t *)&e->lease_timer, on_timer_closed);
  uv_close((uv_handle_t *)&e->op_timer, on_timer_closed);
}

/* Revoking makes our instances vanish now rather than a TTL from now. It
 * blocks (1 s at most): close may run inside the loop's own callbacks,
 * where the loop cannot be driven again. */
static void etcd_close(void *st) {
  etcd_t *e = st;
  if (e->closing) return;
  if (e->lease) {
    char body[64], u[URL_MAX];
    long status = 0;
    snprintf(body, sizeof body, "{\"ID\":\"%" PRIu64 "\"}", e->lease);
    if (dyn__ehttp_post_sync(url(e, "/v3/lease/revoke", u), body, REVOKE_TIMEOUT_MS, &status) ||
        (status != 200 && status != 404))
      dyn_log(DYN_LOG_WARN, "etcd: could not revoke lease %" PRIx64
              "; its keys stay until its TTL runs out", e->lease);
  }
  teardown(e);
}

void dyn__etcd_set_session_hook(void *state, dyn__etcd_session_fn fn, void *ud) {
  etcd_t *e = state;
  e->on_session = fn;
  e->on_session_ud = ud;
}

/* The lease is held (granted, and a keepalive answered within its TTL)
 * and no put waits in the queue: etcd has every key under a live lease. */
static int etcd_registered(void *st) {
  etcd_t *e = st;
  if (!e->live || e->closing) return 0;
  if (now_ms(e) - e->last_ok_ms >= (uint64_t)e->granted_ttl_s * 1000) return 0;
  for (eop_t *op = e->ops; op; op = op->next)
    if (op->value) return 0;
  return 1;
}

const dyn__discovery_ops_t dyn__etcd_discovery = {
    "etcd", etcd_put, etcd_del, etcd_watch, etcd_unwatch, etcd_session, etcd_close,
    etcd_registered};

/* ---- open -------------------------------------------------------------- */

/* Splits "a, b,c/" into base URLs without trailing slashes. */
static int parse_endpoints(etcd_t *e, const char *endpoints) {
  size_t cap = 1;
  for (const char *p = endpoints; *p; p++) cap += *p == ',';
  if (!(e->urls = calloc(cap, sizeof *e->urls))) return DYN_ENOMEM;
  const char *p = endpoints;
  while (*p) {
    while (*p == ' ' || *p == ',') p++;
    size_t n = strcspn(p, ", ");
    if (!n) break;
    while (n && p[n - 1] == '/') n--;
    if (n + 32 > URL_MAX || strncmp(p, "http", 4)) return DYN_EINVAL;
    if (!(e->urls[e->n_urls] = strndup(p, n))) return DYN_ENOMEM;
    e->n_urls++;
    p += strcspn(p, ",");
  }
  return e->n_urls ? DYN_OK : DYN_EINVAL;
}

static void on_open_timeout(uv_timer_t *t) {
  etcd_t *e = t->data;
  e->open_failed = 1;
  if (!e->last_error[0])
    snprintf(e->last_error, sizeof e->last_error, "no answer within %d ms", OPEN_TIMEOUT_MS);
}

static int env_ttl(void) {
  const char *s = getenv(DYN_ENV_ETCD_TTL);
  int v = s ? atoi(s) : 0;
  return v > 0 ? v : DEFAULT_TTL_S;
}

int dyn__etcd_open_opts(dyn_runtime_t *rt, const char *endpoints,
                        const dyn__etcd_options_t *opts, void **state) {
  etcd_t *e = calloc(1, sizeof *e);
  if (!e) return DYN_ENOMEM;
  e->rt = rt;
  e->ops_tail = &e->ops;
  e->ttl_s = opts && opts->ttl_s > 0 ? opts->ttl_s : env_ttl();
  e->granted_ttl_s = e->ttl_s;
  e->want_id = opts ? opts->lease_id : 0;
  e->fresh_id = opts ? opts->fresh_id : 0;
  e->lease_backoff_ms = e->op_backoff_ms = BACKOFF_MIN_MS;
  int rc = endpoints ? parse_endpoints(e, endpoints) : DYN_EINVAL;
  if (!rc && !(e->endpoints = strdup(endpoints))) rc = DYN_ENOMEM;
  if (!rc) rc = dyn__ehttp_new(rt->loop, &e->http);
  if (rc) {
    if (rc == DYN_EINVAL)
      dyn_log(DYN_LOG_ERROR, "etcd endpoints \"%s\" are not a list of http:// URLs",
              endpoints ? endpoints : "");
    for (size_t i = 0; i < e->n_urls; i++) free(e->urls[i]);
    free(e->urls);
    free(e->endpoints);
    free(e);
    return rc;
  }
  uv_timer_init(rt->loop, &e->lease_timer);
  uv_timer_init(rt->loop, &e->op_timer);
  e->lease_timer.data = e->op_timer.data = e;
  e->handles = 2;
  e->opening = 1;
  /* No key is queued before open returns, so op_timer keeps the deadline. */
  uv_timer_start(&e->op_timer, on_open_timeout, OPEN_TIMEOUT_MS, 0);
  lease_grant(e);
  while (!e->live && !e->open_failed) dyn__run_once(rt);
  uv_timer_stop(&e->op_timer);
  e->opening = 0;
  if (!e->live) {
    dyn_log(DYN_LOG_ERROR, "cannot reach etcd at %s: %s", endpoints, e->last_error);
    teardown(e);
    uv_run(rt->loop, UV_RUN_NOWAIT); /* lets the closes finish: frees e */
    return DYN_ECONTROL;
  }
  *state = e;
  return DYN_OK;
}

int dyn__etcd_open(dyn_runtime_t *rt, const char *endpoints, void **state) {
  return dyn__etcd_open_opts(rt, endpoints, NULL, state);
}
