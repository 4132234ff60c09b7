/* server.c - the HTTP/1.1 server: listener, connections, routing, responses.
 *
 * Library choice. Requests are parsed by Node's http-parser (Debian's
 * libhttp-parser-dev, 2.9.4) and the connection handling is ours, on the
 * runtime's libuv loop, in the style of runtime/conn.c. H2O 2.2.5
 * (libh2o-dev, built with libuv) was the other candidate and was turned
 * down for what this module exists to do:
 *  - Disconnect detection. H2O's HTTP/1 connection stops reading while a
 *    request is being handled, so a client that goes away while an LLM is
 *    still thinking (nothing written yet) is only noticed at the next write,
 *    and a handler that never writes keeps the connection forever. We keep
 *    reading during a request and tell the caller at once (on_close), which
 *    is what lets the frontend cancel upstream generation.
 *  - Shutdown. 2.2 has no public way to close a context's open connections
 *    (h2o_context_request_shutdown came in 2.3); dyn_http_server_stop()
 *    must close them and fire on_close for requests in flight.
 *  - Fit. Its generator/proceed streaming, memory pools, TLS (OpenSSL) and
 *    config layers are large next to what is needed here, its built-in
 *    error bodies are text where callers want OpenAI-style JSON, and 2.2 is
 *    an old branch upstream.
 * http-parser does the part that is easy to get wrong (request line,
 * header syntax, chunked bodies, Content-Length/Transfer-Encoding rules,
 * keep-alive semantics); http/parse.c is the small glue the fuzzer covers.
 *
 * Output is written at once (uv_try_write, then one uv_write for the rest
 * while new output accumulates), so a stream's events leave as they are
 * produced. A write failure never closes the connection inside a caller's
 * call (its on_close could then release the request under it): the
 * connection is marked dead and closed from the kick idle handle.
 *
 * Limits (dyn_http_limits_t) keep memory bounded whatever clients do:
 * every request byte read is counted in s->buffered from the moment it
 * arrives until its request is released, and the sweep timer enforces the
 * head, body and idle deadlines. Reads land in one buffer shared by all
 * connections; only bytes left over (pipelined input, a request in flight)
 * are copied to the connection's own, which is freed once it is empty, so
 * an idle or trickling connection holds no read buffer. After a burst the
 * sweep hands freed memory back to the system (malloc_trim).
 */
#include "dynamo/http.h"
#include "runtime/addr.h"

#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dynamo/runtime.h"
#include "http/parse.h"
#include "common/buf.h"
#include "common/json_escape.h"
#include "runtime/conn.h"

#define READ_CHUNK (64u * 1024u)
/* Pipelined input held while a request is in flight before reading pauses. */
#define MAX_HELD_INPUT READ_CHUNK
/* A burst this big (request bytes held at once) is followed by a trim. */
#define TRIM_AFTER (8u * 1024u * 1024u)
/* After a closing response, how long the client may take to close. */
#define LINGER_MS 2000u
#define SWEEP_MS 1000u

typedef struct route {
  struct route *next;
  char *method; /* NULL: any */
  char *path;
  dyn_http_handler_fn fn;
  void *ud;
} route_t;

typedef struct hconn hconn_t;
struct hconn {
  uv_tcp_t tcp;
  dyn_http_server_t *s;
  hconn_t *prev, *next;  /* the server's connections */
  hconn_t *kick_next;    /* the server's kick list */
  dyn__http_reader_t rd;
  dyn__buf_t in, out, inflight;
  uv_write_t wr;
  uv_shutdown_t shut;
  dyn_http_req_t *req; /* the request in flight, if any */
  uint64_t last_active, linger_since;
  uint64_t since;   /* the request being read: its first byte, then the body's window */
  size_t held;      /* its bytes so far, counted in s->buffered */
  size_t mark;      /* held when the body's current window began */
  unsigned closing : 1, writing : 1, dead : 1, close_after : 1, shut_sent : 1,
      lingering : 1, read_paused : 1, continue_sent : 1, kicked : 1, flush_due : 1,
      served : 1, in_body : 1;
  char peer[DYN__ADDR_MAX];
};

struct dyn_http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  uv_timer_t sweep;
  uv_idle_t kick;
  route_t *routes;
  hconn_t *conns;
  size_t nconns;
  hconn_t *kick_head;
  dyn_http_limits_t lim;
  size_t buffered;      /* request bytes held (see the file comment) */
  size_t buffered_peak; /* since the last trim */
  size_t inflight;      /* requests not yet released */
  size_t refused;       /* connections refused since the last sweep */
  char *rbuf;           /* the shared read buffer, READ_CHUNK bytes */
  int port;
  int stopping;
  int open_handles; /* freed when the last one has closed */
};

enum { REQ_NEW, REQ_STREAMING };

struct dyn_http_req {
  dyn_http_server_t *s; /* kept alive until req is released */
  hconn_t *c; /* NULL once the client is gone */
  size_t held; /* request bytes counted in s->buffered */
  dyn__http_msg_t msg;
  dyn__buf_t extra; /* response headers added by the handler */
  dyn_http_close_fn on_close;
  void *close_ud;
  int state;
  int chunked;
  int keep_alive;
  int head; /* a HEAD request: headers only */
  char peer[DYN__ADDR_MAX];
};

static void flush(hconn_t *c);
static void flush_soon(hconn_t *c);
static void process(hconn_t *c);
static size_t process_bytes(hconn_t *c, const char *data, size_t len);
static void on_kick(uv_idle_t *h);
static unsigned sweep_ms(const dyn_http_limits_t *l);

/* ---- server lifetime ---------------------------------------------------- */

static void server_release(dyn_http_server_t *s) {
  if (--s->open_handles > 0) return;
  route_t *r = s->routes;
  while (r) {
    route_t *n = r->next;
    free(r->method);
    free(r->path);
    free(r);
    r = n;
  }
  free(s->rbuf);
  free(s);
}

static void on_server_handle_closed(uv_handle_t *h) {
  server_release(h->data);
}

/* ---- connections -------------------------------------------------------- */

static void kick(hconn_t *c) {
  dyn_http_server_t *s = c->s;
  if (c->kicked || c->closing || s->stopping) return;
  c->kicked = 1;
  c->kick_next = s->kick_head;
  s->kick_head = c;
  uv_idle_start(&s->kick, on_kick);
}

/* Response output is corked: what a handler writes during one loop pass
 * (head, events, the last chunk) leaves in one write, from the kick
 * handle, before the loop next polls. */
static void flush_soon(hconn_t *c) {
  c->flush_due = 1;
  kick(c);
  if (!c->kicked) flush(c); /* the server is stopping: write now */
}

static void kick_unlink(hconn_t *c) {
  hconn_t **pp = &c->s->kick_head;
  while (*pp && *pp != c) pp = &(*pp)->kick_next;
  if (*pp) {
    *pp = c->kick_next;
    c->kick_next = NULL;
    c->kicked = 0;
  }
}

static void on_conn_closed(uv_handle_t *h) {
  hconn_t *c = h->data;
  dyn_http_server_t *s = c->s;
  dyn__buf_free(&c->in);
  dyn__buf_free(&c->out);
  dyn__buf_free(&c->inflight);
  dyn__http_reader_free(&c->rd);
  free(c);
  server_release(s);
}

static void conn_close(hconn_t *c, const char *why) {
  if (c->closing) return;
  c->closing = 1;
  dyn_http_server_t *s = c->s;
  kick_unlink(c);
  if (c->prev) c->prev->next = c->next;
  else s->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  s->nconns--;
  s->buffered -= c->held;
  c->held = 0;
  dyn_http_req_t *req = c->req;
  c->req = NULL;
  if (req) {
    /* Detach first: the callback may release the request. */
    req->c = NULL;
    dyn_log(DYN_LOG_DEBUG, "http: %s %s from %s ended early: %s", req->msg.method,
            (const char *)req->msg.pq.data, c->peer, why);
    dyn_http_close_fn fn = req->on_close;
    req->on_close = NULL;
    if (fn) fn(req, req->close_ud);
  }
  uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *sr, int status) {
  hconn_t *c = sr->data;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c, uv_strerror(status));
    return;
  }
  /* Wait for the client to close so it reads the response before a reset. */
  c->lingering = 1;
  c->linger_since = uv_now(c->s->loop);
}

static void on_write(uv_write_t *wr, int status) {
  hconn_t *c = wr->data;
  c->writing = 0;
  c->inflight.len = 0;
  if (c->closing) return;
  if (status < 0) {
    conn_close(c, uv_strerror(status));
    return;
  }
  c->last_active = uv_now(c->s->loop);
  flush(c);
}

static void flush(hconn_t *c) {
  if (c->closing || c->dead || c->writing) return;
  c->wr.data = c;
  int rc = dyn__write_corked((uv_stream_t *)&c->tcp, &c->out, &c->inflight, &c->wr, on_write);
  if (rc < 0) {
    c->dead = 1; /* closed from the kick handle, never under a caller */
    kick(c);
    return;
  }
  if (rc == 1) {
    c->writing = 1;
    return;
  }
  if (c->close_after && !c->req && !c->shut_sent) {
    c->shut_sent = 1;
    c->shut.data = c;
    if (uv_shutdown(&c->shut, (uv_stream_t *)&c->tcp, on_shutdown)) {
      c->dead = 1;
      kick(c);
    }
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *out) {
  hconn_t *c = h->data;
  /* Nothing left over from earlier reads: the shared buffer will do, as
   * libuv hands it back to on_read before it reads another socket. */
  if (!c->in.len) {
    *out = uv_buf_init(c->s->rbuf, READ_CHUNK);
    return;
  }
  if (dyn__buf_reserve(&c->in, READ_CHUNK)) {
    *out = uv_buf_init(NULL, 0); /* libuv reports UV_ENOBUFS */
    return;
  }
  *out = uv_buf_init((char *)c->in.data + c->in.len, (unsigned)(c->in.cap - c->in.len));
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  hconn_t *c = st->data;
  if (c->closing) return;
  if (nread < 0) {
    conn_close(c, nread == UV_EOF ? "client closed the connection" : uv_strerror((int)nread));
    return;
  }
  if (nread == 0) return;
  c->last_active = uv_now(c->s->loop);
  if (c->close_after) return; /* answered and closing: discard */
  if (buf->base == c->s->rbuf) {
    /* What the reader did not take (input pipelined behind a request in
     * flight) is kept for later. */
    size_t used = process_bytes(c, buf->base, (size_t)nread);
    if (used < (size_t)nread && !c->closing && !c->close_after &&
        dyn__buf_append(&c->in, buf->base + used, (size_t)nread - used)) {
      c->dead = 1;
      kick(c);
    }
  } else {
    c->in.len += (size_t)nread;
    process(c);
  }
  if (!c->closing && c->req && c->in.len > MAX_HELD_INPUT && !c->read_paused) {
    uv_read_stop(st);
    c->read_paused = 1;
  }
}

/* ---- response heads ----------------------------------------------------- */

static const char *reason(int status) {
  const char *r = http_status_str((enum http_status)status);
  return r[0] == '<' ? "Unknown" : r;
}

/* clen >= 0: Content-Length; -1: chunked; -2: until close; -3: no body. */
static int format_head(dyn__buf_t *b, int status, const char *ctype,
                       const dyn__buf_t *extra, long long clen, int keep_alive,
                       int http10) {
  char line[512];
  int n = snprintf(line, sizeof line, "HTTP/1.1 %d %s\r\n", status, reason(status));
  int rc = dyn__buf_append(b, line, (size_t)n);
  if (!rc && ctype) {
    n = snprintf(line, sizeof line, "Content-Type: %.400s\r\n", ctype);
    rc = dyn__buf_append(b, line, (size_t)n);
  }
  if (!rc && extra && extra->len) rc = dyn__buf_append(b, extra->data, extra->len);
  if (!rc) {
    if (clen >= 0) n = snprintf(line, sizeof line, "Content-Length: %lld\r\n", clen);
    else if (clen == -1) n = snprintf(line, sizeof line, "Transfer-Encoding: chunked\r\n");
    else n = 0;
    if (n) rc = dyn__buf_append(b, line, (size_t)n);
  }
  if (!rc) {
    const char *conn = !keep_alive ? "Connection: close\r\n"
                       : http10    ? "Connection: keep-alive\r\n"
                                   : "";
    rc = dyn__buf_append(b, conn, strlen(conn));
  }
  if (!rc) rc = dyn__buf_append(b, "\r\n", 2);
  return rc;
}

/* The OpenAI error types, by HTTP status (the names vLLM answers with and
 * the openai client's exception classes). The one table: the LLM
 * Frontend's error objects use it too. */
const char *dyn_http_error_type(int status) {
  switch (status) {
  case 400: return "BadRequestError";
  case 401: return "AuthenticationError";
  case 403: return "PermissionDeniedError";
  case 404: return "NotFoundError";
  case 405: return "MethodNotAllowedError";
  case 413: return "RequestTooLargeError";
  case 429: return "RateLimitError";
  case 503: return "ServiceUnavailableError";
  default: return status >= 500 ? "InternalServerError" : "BadRequestError";
  }
}

static void error_body(dyn__buf_t *b, int status, const char *message) {
  const char *pre = "{\"error\":{\"message\":";
  if (!message) message = reason(status);
  dyn__buf_append(b, pre, strlen(pre));
  dyn__json_escape(b, message, strlen(message));
  char tail[128];
  int n = snprintf(tail, sizeof tail, ",\"type\":\"%s\",\"code\":%d}}\n",
                   dyn_http_error_type(status), status);
  dyn__buf_append(b, tail, (size_t)n);
}

/* ---- reading requests --------------------------------------------------- */

/* Answers a request that will not be served (malformed, too slow, over a
 * limit) with a JSON error and closes its connection; what was read of it
 * is dropped at once. A 503 says when to retry. */
static void refuse(hconn_t *c, int status, const char *why) {
  dyn_http_server_t *s = c->s;
  dyn__buf_t body, head, extra;
  dyn__buf_init(&body);
  dyn__buf_init(&head);
  dyn__buf_init(&extra);
  static const char retry[] = "Retry-After: 1\r\n";
  error_body(&body, status, why);
  if ((status != 503 || !dyn__buf_append(&extra, retry, sizeof retry - 1)) &&
      !format_head(&head, status, "application/json", &extra, (long long)body.len, 0, 0) &&
      !dyn__buf_append(&c->out, head.data, head.len))
    dyn__buf_append(&c->out, body.data, body.len);
  dyn__buf_free(&body);
  dyn__buf_free(&head);
  dyn__buf_free(&extra);
  s->buffered -= c->held;
  c->held = 0;
  dyn__http_reader_free(&c->rd);
  dyn__http_reader_init(&c->rd, s->lim.max_body);
  c->close_after = 1;
  c->linger_since = uv_now(s->loop);
  c->in.len = 0;
  flush(c);
}

static void bad_request(hconn_t *c) {
  int status = c->rd.status ? c->rd.status : 400;
  const char *why = c->rd.why ? c->rd.why : "malformed request";
  dyn_log(status >= 500 ? DYN_LOG_ERROR : DYN_LOG_WARN,
          "http: bad request from %s: %s (answering %d, closing)", c->peer, why, status);
  refuse(c, status, why);
}

/* Counts n more bytes read for the request on c. */
static void hold(hconn_t *c, size_t n) {
  dyn_http_server_t *s = c->s;
  c->held += n;
  s->buffered += n;
  if (s->buffered > s->buffered_peak) s->buffered_peak = s->buffered;
}

/* The request being read on c would take the server past max_buffered. */
static int over_budget(hconn_t *c) {
  dyn_http_server_t *s = c->s;
  size_t more = 0;
  const http_parser *p = &c->rd.p;
  /* A declared length is refused before its body is read. */
  if (c->in_body && !c->rd.complete && (p->flags & F_CONTENTLENGTH) &&
      p->content_length < (uint64_t)SIZE_MAX)
    more = (size_t)p->content_length;
  return s->buffered > s->lim.max_buffered || more > s->lim.max_buffered - s->buffered;
}

static void dispatch(hconn_t *c) {
  dyn_http_server_t *s = c->s;
  dyn_http_req_t *req = calloc(1, sizeof *req);
  if (!req) {
    dyn_log(DYN_LOG_ERROR, "http: out of memory for a request from %s", c->peer);
    c->dead = 1;
    kick(c);
    return;
  }
  dyn__http_reader_take(&c->rd, &req->msg);
  dyn__buf_init(&req->extra);
  req->s = s;
  s->open_handles++; /* the server outlives its requests */
  s->inflight++;
  req->held = c->held;
  c->held = 0;
  c->in_body = 0;
  c->served = 1;
  req->c = c;
  req->keep_alive = req->msg.keep_alive && !s->stopping;
  req->head = !strcmp(req->msg.method, "HEAD");
  memcpy(req->peer, c->peer, sizeof req->peer);
  c->req = req;
  c->continue_sent = 0;

  const char *method = req->msg.method, *path = dyn_http_path(req);
  route_t *match = NULL, *get = NULL;
  int path_known = 0;
  for (route_t *r = s->routes; r; r = r->next) {
    if (strcmp(r->path, path)) continue;
    path_known = 1;
    if (!r->method || !strcmp(r->method, method)) {
      match = r;
      break;
    }
    if (!get && !strcmp(r->method, "GET")) get = r;
  }
  if (!match && req->head) match = get; /* HEAD: the GET route, headers only */
  if (match && s->inflight > s->lim.max_inflight) {
    char busy[128];
    snprintf(busy, sizeof busy, "the server is busy (%u requests in flight); retry later",
             s->lim.max_inflight);
    dyn_http_set_header(req, "Retry-After", "1");
    dyn_http_error(req, 503, busy);
    return;
  }
  if (match) {
    match->fn(req, match->ud); /* req may be released already */
    return;
  }
  char msg[256];
  if (!path_known) {
    snprintf(msg, sizeof msg, "no route for %s %.160s", method, path);
    dyn_http_error(req, 404, msg);
    return;
  }
  char allow[256] = "";
  size_t al = 0;
  for (route_t *r = s->routes; r; r = r->next) {
    if (strcmp(r->path, path) || !r->method) continue;
    int n = snprintf(allow + al, sizeof allow - al, "%s%s%s", al ? ", " : "", r->method,
                     r == get ? ", HEAD" : "");
    if (n < 0 || (size_t)n >= sizeof allow - al) break;
    al += (size_t)n;
  }
  dyn_http_set_header(req, "Allow", allow);
  snprintf(msg, sizeof msg, "method %s not allowed for %.160s", method, path);
  dyn_http_error(req, 405, msg);
}

/* Reads requests from data until one is in flight or data is used up;
 * returns the bytes taken. */
static size_t process_bytes(hconn_t *c, const char *data, size_t len) {
  dyn_http_server_t *s = c->s;
  size_t used = 0;
  while (!c->closing && !c->dead && !c->req && !c->close_after && used < len) {
    if (!c->held) c->since = uv_now(s->loop); /* a request's first byte */
    long n = dyn__http_reader_feed(&c->rd, data + used, len - used);
    if (n < 0) {
      bad_request(c);
      return len;
    }
    used += (size_t)n;
    hold(c, (size_t)n);
    if (c->rd.headers_done && !c->in_body) {
      c->in_body = 1;
      c->mark = c->held;
      c->since = uv_now(s->loop);
    }
    if (over_budget(c)) {
      dyn_log(DYN_LOG_WARN, "http: request from %s refused: %zu request bytes held, "
              "max_buffered %zu", c->peer, s->buffered, s->lim.max_buffered);
      refuse(c, 503, "the server holds too much request data; retry later");
      return len;
    }
    if (!c->rd.complete) {
      if (c->rd.headers_done && c->rd.msg.expect_continue && !c->continue_sent) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        c->continue_sent = 1;
        if (!dyn__buf_append(&c->out, cont, sizeof cont - 1)) flush(c);
      }
      return used;
    }
    dispatch(c);
  }
  return used;
}

static void process(hconn_t *c) {
  size_t used = process_bytes(c, (const char *)c->in.data, c->in.len);
  if (c->closing || c->close_after) used = c->in.len;
  dyn__buf_consume(&c->in, used);
  if (!c->in.len) dyn__buf_free(&c->in); /* an idle connection holds no buffer */
}

static void on_kick(uv_idle_t *h) {
  dyn_http_server_t *s = h->data;
  hconn_t *batch = s->kick_head;
  s->kick_head = NULL;
  while (batch) {
    hconn_t *c = batch;
    batch = c->kick_next;
    c->kick_next = NULL;
    c->kicked = 0;
    if (c->closing) continue;
    if (c->dead) {
      conn_close(c, "write failed");
      continue;
    }
    if (c->flush_due) {
      c->flush_due = 0;
      flush(c);
      if (c->closing) continue;
    }
    if (c->read_paused && !c->req) {
      c->read_paused = 0;
      uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
    process(c);
  }
  if (!s->kick_head && !s->stopping) uv_idle_stop(h);
}

/* A request too slow to arrive: 408 and close. */
static void too_slow(hconn_t *c, const char *what, unsigned ms, unsigned rate) {
  char why[160];
  if (rate)
    snprintf(why, sizeof why, "the request %s came slower than %u bytes in %u ms", what,
             (unsigned)((uint64_t)rate * ms / 1000), ms);
  else
    snprintf(why, sizeof why, "the request %s did not arrive within %u ms", what, ms);
  dyn_log(DYN_LOG_INFO, "http: %s from %s (answering 408, closing)", why, c->peer);
  refuse(c, 408, why);
}

/* The deadlines, checked every sweep: lingering, answered-and-closing,
 * idle, request head, request body (see dyn_http_limits_t). A request in
 * flight is its handler's business. */
static void sweep_conn(dyn_http_server_t *s, hconn_t *c, uint64_t now) {
  const dyn_http_limits_t *l = &s->lim;
  if (c->lingering) {
    if (now - c->linger_since >= LINGER_MS) conn_close(c, "client did not close");
    return;
  }
  if (c->req) return;
  if (c->close_after) {
    if (now - c->linger_since >= l->header_timeout_ms)
      conn_close(c, "client did not take the answer");
    return;
  }
  if (!c->held) {
    if (now - c->last_active >= (c->served ? l->idle_timeout_ms : l->header_timeout_ms))
      conn_close(c, c->served ? "idle timeout" : "no request");
    return;
  }
  if (!c->in_body) {
    if (now - c->since >= l->header_timeout_ms) too_slow(c, "head", l->header_timeout_ms, 0);
    return;
  }
  /* The body: each window of body_timeout_ms must bring its share of
   * body_min_rate, so bytes sent fast early buy no time later. */
  if (now - c->since < l->body_timeout_ms) return;
  uint64_t need = (uint64_t)l->body_min_rate * l->body_timeout_ms / 1000;
  if (!l->body_min_rate || c->held - c->mark < need) {
    too_slow(c, "body", l->body_timeout_ms, l->body_min_rate);
    return;
  }
  c->since = now;
  c->mark = c->held;
}

static void on_sweep(uv_timer_t *t) {
  dyn_http_server_t *s = t->data;
  uint64_t now = uv_now(s->loop);
  hconn_t *next;
  for (hconn_t *c = s->conns; c; c = next) {
    next = c->next;
    sweep_conn(s, c, now);
  }
  if (s->refused) {
    dyn_log(DYN_LOG_WARN, "http: refused %zu connection(s): max_connections (%u) open, none idle",
            s->refused, s->lim.max_connections);
    s->refused = 0;
  }
#ifdef __GLIBC__
  /* After a burst, glibc keeps the freed memory of large bodies in its
   * heap; hand it back once the burst is over. */
  if (s->buffered_peak >= TRIM_AFTER && s->buffered <= s->buffered_peak / 4) {
    malloc_trim(0);
    s->buffered_peak = s->buffered;
  }
#endif
}

static void peer_name(hconn_t *c) { dyn__peer_name(&c->tcp, c->peer); }

/* At max_connections: closes the connection idle the longest (no request
 * in flight or being read); 0 if there is none. */
static int evict_idle(dyn_http_server_t *s) {
  hconn_t *victim = NULL;
  for (hconn_t *c = s->conns; c; c = c->next)
    if (!c->req && !c->held && !c->close_after && !c->lingering &&
        (!victim || c->last_active < victim->last_active))
      victim = c;
  if (victim) conn_close(victim, "max_connections reached: the longest idle goes");
  return victim != NULL;
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

/* Takes a connection only to answer 503 and close it (a listener must
 * accept, or libuv stops reporting new connections). */
static void refuse_connection(dyn_http_server_t *s, uv_stream_t *l) {
  static const char busy[] =
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
      "Retry-After: 1\r\nConnection: close\r\nContent-Length: 102\r\n\r\n"
      "{\"error\":{\"message\":\"too many connections; retry later\","
      "\"type\":\"ServiceUnavailableError\",\"code\":503}}\n";
  uv_tcp_t *t = malloc(sizeof *t);
  if (!t || uv_tcp_init(s->loop, t)) {
    free(t);
    return;
  }
  if (!uv_accept(l, (uv_stream_t *)t)) {
    uv_buf_t b = uv_buf_init((char *)busy, sizeof busy - 1);
    uv_try_write((uv_stream_t *)t, &b, 1);
  }
  uv_close((uv_handle_t *)t, on_refused_closed);
  s->refused++;
}

static void on_connection(uv_stream_t *l, int status) {
  dyn_http_server_t *s = l->data;
  if (status < 0) {
    dyn_log(DYN_LOG_WARN, "http: accept failed: %s", uv_strerror(status));
    return;
  }
  if (s->nconns >= s->lim.max_connections && !evict_idle(s)) {
    refuse_connection(s, l);
    return;
  }
  hconn_t *c = calloc(1, sizeof *c);
  if (!c || uv_tcp_init(s->loop, &c->tcp)) {
    free(c);
    dyn_log(DYN_LOG_ERROR, "http: cannot take a connection: out of memory");
    return;
  }
  c->tcp.data = c;
  c->s = s;
  s->open_handles++;
  c->next = s->conns;
  if (s->conns) s->conns->prev = c;
  s->conns = c;
  s->nconns++;
  dyn__buf_init(&c->in);
  dyn__buf_init(&c->out);
  dyn__buf_init(&c->inflight);
  dyn__http_reader_init(&c->rd, s->lim.max_body);
  c->last_active = uv_now(s->loop);
  snprintf(c->peer, sizeof c->peer, "?");
  int rc = uv_accept(l, (uv_stream_t *)&c->tcp);
  if (!rc) {
    peer_name(c);
    uv_tcp_nodelay(&c->tcp, 1);
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
  }
  if (rc) {
    dyn_log(DYN_LOG_WARN, "http: accept failed: %s", uv_strerror(rc));
    conn_close(c, uv_strerror(rc));
  }
}

/* ---- server API ----------------------------------------------------------- */

int dyn_http_server_start(uv_loop_t *loop, const char *host, int port,
                          dyn_http_server_t **out) {
  if (!loop || !out || port < 0 || port > 65535) return DYN_EINVAL;
  *out = NULL;
  if (!host || !strcmp(host, "localhost")) host = "127.0.0.1";
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) &&
      uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss))
    return DYN_EINVAL;
  dyn_http_server_t *s = calloc(1, sizeof *s);
  if (!s) return DYN_ENOMEM;
  s->loop = loop;
  dyn_http_limits_default(&s->lim);
  s->rbuf = malloc(READ_CHUNK);
  if (!s->rbuf) {
    free(s);
    return DYN_ENOMEM;
  }
  if (uv_tcp_init(loop, &s->listener)) {
    free(s->rbuf);
    free(s);
    return DYN_ESYS;
  }
  s->listener.data = s;
  s->open_handles = 1;
  int rc = uv_tcp_bind(&s->listener, (struct sockaddr *)&ss, 0);
  if (!rc) rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "http: cannot listen on %s:%d: %s", host, port, uv_strerror(rc));
    /* Freed when the loop next runs the close callback. */
    uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
    return DYN_ESYS;
  }
  struct sockaddr_storage bound;
  int blen = sizeof bound;
  if (!uv_tcp_getsockname(&s->listener, (struct sockaddr *)&bound, &blen))
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
  uv_timer_init(loop, &s->sweep);
  s->sweep.data = s;
  uv_timer_start(&s->sweep, on_sweep, sweep_ms(&s->lim), sweep_ms(&s->lim));
  uv_unref((uv_handle_t *)&s->sweep);
  uv_idle_init(loop, &s->kick);
  s->kick.data = s;
  s->open_handles = 3;
  dyn_log(DYN_LOG_INFO, "http: listening on %s:%d", host, s->port);
  *out = s;
  return DYN_OK;
}

int dyn_http_server_port(const dyn_http_server_t *s) { return s ? s->port : -1; }

void dyn_http_limits_default(dyn_http_limits_t *l) {
  *l = (dyn_http_limits_t){
      .max_body = DYN_HTTP_DEFAULT_MAX_BODY,
      .max_buffered = DYN_HTTP_DEFAULT_MAX_BUFFERED,
      .max_output = DYN_HTTP_DEFAULT_MAX_OUTPUT,
      .max_connections = DYN_HTTP_DEFAULT_MAX_CONNECTIONS,
      .max_inflight = DYN_HTTP_DEFAULT_MAX_INFLIGHT,
      .header_timeout_ms = DYN_HTTP_DEFAULT_HEADER_TIMEOUT_MS,
      .body_timeout_ms = DYN_HTTP_DEFAULT_BODY_TIMEOUT_MS,
      .body_min_rate = DYN_HTTP_DEFAULT_BODY_MIN_RATE,
      .idle_timeout_ms = DYN_HTTP_DEFAULT_IDLE_MS,
  };
}

/* The limits by config key. size: a size_t field (else unsigned); min:
 * the smallest value allowed. */
static const struct {
  const char *name;
  size_t off;
  int size;
  unsigned min;
} limit_keys[] = {
    {"http_max_body", offsetof(dyn_http_limits_t, max_body), 1, 1},
    {"http_max_buffered", offsetof(dyn_http_limits_t, max_buffered), 1, 1},
    {"http_max_output", offsetof(dyn_http_limits_t, max_output), 1, 1},
    {"http_max_connections", offsetof(dyn_http_limits_t, max_connections), 0, 1},
    {"http_max_inflight", offsetof(dyn_http_limits_t, max_inflight), 0, 1},
    {"http_header_timeout_ms", offsetof(dyn_http_limits_t, header_timeout_ms), 0, 10},
    {"http_body_timeout_ms", offsetof(dyn_http_limits_t, body_timeout_ms), 0, 10},
    {"http_body_min_rate", offsetof(dyn_http_limits_t, body_min_rate), 0, 0},
    {"http_idle_timeout_ms", offsetof(dyn_http_limits_t, idle_timeout_ms), 0, 10},
};
#define N_LIMIT_KEYS (sizeof limit_keys / sizeof *limit_keys)

const char *dyn_http_limit_name(size_t i) {
  return i < N_LIMIT_KEYS ? limit_keys[i].name : NULL;
}

static unsigned long long limit_get(const dyn_http_limits_t *l, size_t i) {
  const char *p = (const char *)l + limit_keys[i].off;
  return limit_keys[i].size ? *(const size_t *)p : *(const unsigned *)p;
}

int dyn_http_limits_set(dyn_http_limits_t *l, const char *name, long long value) {
  for (size_t i = 0; i < N_LIMIT_KEYS; i++) {
    if (strcmp(name, limit_keys[i].name)) continue;
    unsigned long long max = limit_keys[i].size ? SIZE_MAX : UINT_MAX;
    if (value < (long long)limit_keys[i].min || (unsigned long long)value > max)
      return DYN_EINVAL;
    char *p = (char *)l + limit_keys[i].off;
    if (limit_keys[i].size) *(size_t *)p = (size_t)value;
    else *(unsigned *)p = (unsigned)value;
    return DYN_OK;
  }
  return DYN_ENOTFOUND;
}

/* The sweep runs often enough for the shortest deadline (tests use short
 * ones), at most once a second. */
static unsigned sweep_ms(const dyn_http_limits_t *l) {
  unsigned ms = SWEEP_MS;
  unsigned t[] = {l->header_timeout_ms, l->body_timeout_ms, l->idle_timeout_ms};
  for (size_t i = 0; i < 3; i++)
    if (t[i] / 4 < ms) ms = t[i] / 4;
  return ms < 10 ? 10 : ms;
}

int dyn_http_server_set_limits(dyn_http_server_t *s, const dyn_http_limits_t *l) {
  if (!s || !l || s->stopping) return DYN_EINVAL;
  for (size_t i = 0; i < N_LIMIT_KEYS; i++)
    if (limit_get(l, i) < limit_keys[i].min) {
      dyn_log(DYN_LOG_ERROR, "http: limit %s is %llu; the least allowed is %u",
              limit_keys[i].name, limit_get(l, i), limit_keys[i].min);
      return DYN_EINVAL;
    }
  s->lim = *l;
  for (hconn_t *c = s->conns; c; c = c->next) c->rd.max_body = l->max_body;
  uv_timer_start(&s->sweep, on_sweep, sweep_ms(l), sweep_ms(l));
  return DYN_OK;
}

void dyn_http_server_limits(const dyn_http_server_t *s, dyn_http_limits_t *out) {
  *out = s->lim;
}

size_t dyn_http_server_inflight(const dyn_http_server_t *s) { return s ? s->inflight : 0; }
size_t dyn_http_server_buffered(const dyn_http_server_t *s) { return s ? s->buffered : 0; }

size_t dyn_http_server_connections(const dyn_http_server_t *s) {
  return s ? s->nconns : 0;
}

void dyn_http_server_stop(dyn_http_server_t *s) {
  if (!s || s->stopping) return;
  s->stopping = 1;
  uv_close((uv_handle_t *)&s->listener, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->sweep, on_server_handle_closed);
  uv_close((uv_handle_t *)&s->kick, on_server_handle_closed);
  while (s->conns) conn_close(s->conns, "server stopping");
}

int dyn_http_route(dyn_http_server_t *s, const char *method, const char *path,
                   dyn_http_handler_fn fn, void *ud) {
  if (!s || !path || !fn || s->stopping) return DYN_EINVAL;
  route_t *r = calloc(1, sizeof *r);
  if (!r) return DYN_ENOMEM;
  r->path = strdup(path);
  r->method = method ? strdup(method) : NULL;
  if (!r->path || (method && !r->method)) {
    free(r->path);
    free(r->method);
    free(r);
    return DYN_ENOMEM;
  }
  for (char *m = r->method; m && *m; m++)
    if (*m >= 'a' && *m <= 'z') *m = (char)(*m - 'a' + 'A');
  for (route_t *o = s->routes; o; o = o->next) {
    if (strcmp(o->path, path)) continue;
    if ((!o->method && !r->method) || (o->method && r->method && !strcmp(o->method, r->method))) {
      free(r->path);
      free(r->method);
      free(r);
      return DYN_EEXIST;
    }
  }
  r->fn = fn;
  r->ud = ud;
  /* Appended, so routes match in the order given (exact ones before any). */
  route_t **pp = &s->routes;
  while (*pp) pp = &(*pp)->next;
  *pp = r;
  return DYN_OK;
}

/* ---- request accessors -------------------------------------------------- */

const char *dyn_http_method(const dyn_http_req_t *req) { return req->msg.method; }
const char *dyn_http_path(const dyn_http_req_t *req) {
  return (const char *)req->msg.pq.data;
}
const char *dyn_http_query(const dyn_http_req_t *req) {
  return (const char *)req->msg.pq.data + req->msg.query_off;
}
const char *dyn_http_target(const dyn_http_req_t *req) {
  return (const char *)req->msg.url.data;
}
const char *dyn_http_header(const dyn_http_req_t *req, const char *name) {
  return dyn__http_msg_header(&req->msg, name);
}
size_t dyn_http_header_count(const dyn_http_req_t *req) { return req->msg.nhdr; }
int dyn_http_header_at(const dyn_http_req_t *req, size_t i, const char **name,
                       const char **value) {
  if (i >= req->msg.nhdr) return DYN_ENOTFOUND;
  if (name) *name = (const char *)req->msg.hdrs.data + req->msg.hdr[i].name;
  if (value) *value = (const char *)req->msg.hdrs.data + req->msg.hdr[i].value;
  return DYN_OK;
}
const char *dyn_http_body(const dyn_http_req_t *req, size_t *len) {
  if (len) *len = req->msg.body.len;
  return (const char *)req->msg.body.data;
}
const char *dyn_http_peer(const dyn_http_req_t *req) { return req->peer; }

/* ---- responses ---------------------------------------------------------- */

static void req_free(dyn_http_req_t *req) {
  dyn_http_server_t *s = req->s;
  s->buffered -= req->held;
  s->inflight--;
  dyn__http_msg_free(&req->msg);
  dyn__buf_free(&req->extra);
  free(req);
  server_release(s);
}

/* The response is complete: the connection moves on; req is freed. */
static void req_done(dyn_http_req_t *req) {
  hconn_t *c = req->c;
  c->req = NULL;
  if (!req->keep_alive) {
    c->close_after = 1;
    c->linger_since = uv_now(c->s->loop);
  }
  req_free(req);
  flush_soon(c);
  if (!c->close_after && (c->in.len || c->read_paused)) kick(c);
}

/* Appends a and b to the connection's output in one piece. */
static int emit(hconn_t *c, const void *a, size_t alen, const void *b, size_t blen,
                const void *z, size_t zlen) {
  if (dyn__buf_reserve(&c->out, alen + blen + zlen)) {
    c->dead = 1;
    kick(c);
    return DYN_ENOMEM;
  }
  if (alen) memcpy(c->out.data + c->out.len, a, alen);
  if (blen) memcpy(c->out.data + c->out.len + alen, b, blen);
  if (zlen) memcpy(c->out.data + c->out.len + alen + blen, z, zlen);
  c->out.len += alen + blen + zlen;
  return DYN_OK;
}

static int gone(const dyn_http_req_t *req) { return !req->c || req->c->dead; }

/* Releases a request whose client is gone (or whose connection is dead and
 * about to close: it must no longer point at req). */
static int release_gone(dyn_http_req_t *req) {
  if (req->c) req->c->req = NULL;
  req_free(req);
  return DYN_ECLOSED;
}

static int valid_token(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (*s <= ' ' || *s >= 0x7f || strchr("()<>@,;:\\\"/[]?={}", *s)) return 0;
  return 1;
}

int dyn_http_set_header(dyn_http_req_t *req, const char *name, const char *value) {
  if (!req || !name || !value || req->state != REQ_NEW || !valid_token(name) ||
      strpbrk(value, "\r\n"))
    return DYN_EINVAL;
  static const char *const reserved[] = {"content-type", "content-length",
                                         "transfer-encoding", "connection"};
  for (size_t i = 0; i < sizeof reserved / sizeof *reserved; i++)
    if (!strcasecmp(name, reserved[i])) return DYN_EINVAL;
  if (dyn__buf_append(&req->extra, name, strlen(name)) ||
      dyn__buf_append(&req->extra, ": ", 2) ||
      dyn__buf_append(&req->extra, value, strlen(value)) ||
      dyn__buf_append(&req->extra, "\r\n", 2))
    return DYN_ENOMEM;
  return DYN_OK;
}

int dyn_http_respond(dyn_http_req_t *req, int status, const char *content_type,
                     const void *body, size_t len) {
  if (!req || req->state != REQ_NEW || status < 200 || status > 999 || (len && !body))
    return DYN_EINVAL;
  if (gone(req)) return release_gone(req);
  hconn_t *c = req->c;
  int nobody = status == 204 || status == 304;
  dyn__buf_t head;
  dyn__buf_init(&head);
  int http10 = req->msg.http_major == 1 && req->msg.http_minor == 0;
  int rc = format_head(&head, status, content_type, &req->extra,
                       nobody ? -3 : (long long)len, req->keep_alive, http10);
  if (!rc) rc = emit(c, head.data, head.len, body, nobody || req->head ? 0 : len, NULL, 0);
  dyn__buf_free(&head);
  if (rc) {
    c->dead = 1;
    kick(c);
    release_gone(req);
    return rc;
  }
  req_done(req);
  return DYN_OK;
}

int dyn_http_error(dyn_http_req_t *req, int status, const char *message) {
  if (!req) return DYN_EINVAL;
  dyn__buf_t body;
  dyn__buf_init(&body);
  error_body(&body, status, message);
  int rc = dyn_http_respond(req, status, "application/json", body.data, body.len);
  dyn__buf_free(&body);
  return rc;
}

/* extra (added response headers) has a header called name. */
static int has_header(const dyn__buf_t *extra, const char *name) {
  size_t nl = strlen(name);
  const char *p = (const char *)extra->data, *end = p + extra->len;
  while (p && p + nl < end) {
    if (!strncasecmp(p, name, nl) && p[nl] == ':') return 1;
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    p = eol ? eol + 1 : NULL;
  }
  return 0;
}

int dyn_http_start(dyn_http_req_t *req, int status, const char *content_type) {
  if (!req || req->state != REQ_NEW || status < 200 || status > 999) return DYN_EINVAL;
  if (gone(req)) return DYN_ECLOSED;
  hconn_t *c = req->c;
  int http10 = req->msg.http_major == 1 && req->msg.http_minor == 0;
  req->chunked = !http10;
  if (!req->chunked) req->keep_alive = 0;
  if (content_type && !strncasecmp(content_type, "text/event-stream", 17) &&
      !has_header(&req->extra, "Cache-Control"))
    dyn_http_set_header(req, "Cache-Control", "no-cache");
  dyn__buf_t head;
  dyn__buf_init(&head);
  int rc = format_head(&head, status, content_type, &req->extra,
                       req->chunked ? -1 : -2, req->keep_alive, http10);
  if (!rc) rc = emit(c, head.data, head.len, NULL, 0, NULL, 0);
  dyn__buf_free(&head);
  if (rc) return rc;
  req->state = REQ_STREAMING;
  flush_soon(c);
  return DYN_OK;
}

int dyn_http_write(dyn_http_req_t *req, const void *data, size_t len) {
  if (!req || req->state != REQ_STREAMING || (len && !data)) return DYN_EINVAL;
  if (gone(req)) return DYN_ECLOSED;
  if (!len || req->head) return DYN_OK; /* an empty chunk would end the body */
  hconn_t *c = req->c;
  size_t waiting = c->out.len + c->inflight.len;
  if (waiting > req->s->lim.max_output) {
    dyn_log(DYN_LOG_WARN, "http: %s %s: %s is not reading (%zu bytes waiting, max_output "
            "%zu); closing", req->msg.method, dyn_http_path(req), c->peer, waiting,
            req->s->lim.max_output);
    c->dead = 1; /* closed from the kick handle: on_close runs there */
    kick(c);
    return DYN_ECLOSED;
  }
  int rc;
  if (req->chunked) {
    char size[24];
    int n = snprintf(size, sizeof size, "%zx\r\n", len);
    rc = emit(c, size, (size_t)n, data, len, "\r\n", 2);
  } else {
    rc = emit(c, data, len, NULL, 0, NULL, 0);
  }
  if (rc) return rc;
  flush_soon(c);
  return gone(req) ? DYN_ECLOSED : DYN_OK;
}

int dyn_http_sse(dyn_http_req_t *req, const void *data, size_t len) {
  if (!req || (len && !data)) return DYN_EINVAL;
  dyn__buf_t ev;
  dyn__buf_init(&ev);
  const char *p = data, *end = p + len;
  int rc = DYN_OK;
  do {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    const char *le = nl ? nl : end;
    size_t ll = (size_t)(le - p);
    if (ll && p[ll - 1] == '\r') ll--;
    if (dyn__buf_append(&ev, "data: ", 6) || dyn__buf_append(&ev, p, ll) ||
        dyn__buf_append(&ev, "\n", 1)) {
      rc = DYN_ENOMEM;
      break;
    }
    p = nl ? nl + 1 : end;
  } while (p < end);
  if (!rc) rc = dyn__buf_append(&ev, "\n", 1);
  if (!rc) rc = dyn_http_write(req, ev.data, ev.len);
  dyn__buf_free(&ev);
  return rc;
}

int dyn_http_finish(dyn_http_req_t *req) {
  if (!req) return DYN_EINVAL;
  if (gone(req)) return release_gone(req);
  if (req->state == REQ_NEW) {
    dyn_log(DYN_LOG_WARN, "http: handler for %s %s finished without a response",
            req->msg.method, dyn_http_path(req));
    return dyn_http_error(req, 500, "the handler sent no response");
  }
  if (req->chunked && !req->head) {
    int rc = emit(req->c, "0\r\n\r\n", 5, NULL, 0, NULL, 0);
    if (rc) {
      release_gone(req);
      return rc;
    }
  }
  req_done(req);
  return DYN_OK;
}

size_t dyn_http_pending(const dyn_http_req_t *req) {
  if (!req || !req->c) return 0;
  return req->c->out.len + req->c->inflight.len;
}

int dyn_http_on_close(dyn_http_req_t *req, dyn_http_close_fn fn, void *ud) {
  if (!req) return DYN_EINVAL;
  if (!req->c) return DYN_ECLOSED;
  req->on_close = fn;
  req->close_ud = ud;
  return DYN_OK;
}
