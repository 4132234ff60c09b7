/* test_http.c - the HTTP server end to end, in one process.
 *
 * The server runs on a libuv loop in a second thread (which owns it and
 * every handler); the main thread is the client: raw blocking sockets with
 * receive timeouts, and curl where a real client matters. Main talks to the
 * loop thread only through on_loop() (a uv_async plus a condition variable)
 * and atomics. Every wait is bounded; an alarm turns a hang into a failure.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dynamo/http.h"

static int passed, failed;
#define CHECK(cond)                                                        \
  do {                                                                     \
    if (cond) passed++;                                                    \
    else {                                                                 \
      failed++;                                                            \
      fprintf(stderr, "%s:%d: FAILED: %s\n", __FILE__, __LINE__, #cond);   \
    }                                                                      \
  } while (0)
#define CHECK_MSG(cond, ...)                                               \
  do {                                                                     \
    if (cond) passed++;                                                    \
    else {                                                                 \
      failed++;                                                            \
      fprintf(stderr, "%s:%d: FAILED: %s: ", __FILE__, __LINE__, #cond);   \
      fprintf(stderr, __VA_ARGS__);                                        \
      fputc('\n', stderr);                                                 \
    }                                                                      \
  } while (0)

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Polls an atomic until it reaches want or ms pass. */
static int wait_for(atomic_int *v, int want, int ms) {
  double end = now_ms() + ms;
  while (atomic_load(v) < want && now_ms() < end) sleep_ms(2);
  return atomic_load(v) >= want;
}

/* ---- the loop thread -------------------------------------------------- */

static uv_loop_t loop;
static uv_async_t async;
static dyn_http_server_t *srv;
static int port;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static void (*job)(void);
static int job_done;

static void on_async(uv_async_t *a) {
  pthread_mutex_lock(&mu);
  void (*fn)(void) = job;
  pthread_mutex_unlock(&mu);
  if (fn) fn();
  pthread_mutex_lock(&mu);
  job = NULL;
  job_done = 1;
  pthread_cond_signal(&cv);
  pthread_mutex_unlock(&mu);
}

/* Runs fn on the loop thread and waits for it. */
static void on_loop(void (*fn)(void)) {
  pthread_mutex_lock(&mu);
  job = fn;
  job_done = 0;
  uv_async_send(&async);
  while (!job_done) pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

static void *loop_main(void *arg) {
  uv_run(&loop, UV_RUN_DEFAULT);
  return NULL;
}

/* ---- handlers (loop thread) ------------------------------------------- */

static atomic_int closes_forever, eclosed_writes, eclosed_finish;
static atomic_int hang_started, hang_closed, slow_eclosed, stop_closes;
static atomic_int sse_done;

static void h_hello(dyn_http_req_t *req, void *ud) {
  dyn_http_respond(req, 200, "text/plain", "hello\n", 6);
}

/* An error message in UTF-8 with quotes, a control character and
 * characters of 2, 3 and 4 bytes: it must arrive as it was. */
static const char unicode_msg[] =
    "mod\xc3\xa8le \xc2\xab\"x\"\xc2\xbb inconnu\n\xe2\x82\xac \xf0\x9f\x98\x80";

static void h_unicode_error(dyn_http_req_t *req, void *ud) {
  dyn_http_error(req, 400, unicode_msg);
}

static void h_echo(dyn_http_req_t *req, void *ud) {
  size_t len;
  const char *body = dyn_http_body(req, &len);
  const char *ct = dyn_http_header(req, "CONTENT-type");
  dyn_http_set_header(req, "X-Seen-Content-Type", ct ? ct : "none");
  dyn_http_respond(req, 200, "application/json", body, len);
}

static void h_query(dyn_http_req_t *req, void *ud) {
  char out[256];
  int n = snprintf(out, sizeof out, "%s|%s|%s", dyn_http_path(req), dyn_http_query(req),
                   dyn_http_target(req));
  dyn_http_respond(req, 200, "text/plain", out, (size_t)n);
}

typedef struct stream {
  uv_timer_t t;
  dyn_http_req_t *req;
  int i, n; /* n < 0: forever */
} stream_t;

static void on_stream_timer_closed(uv_handle_t *h) { free(h->data); }

static void on_stream_tick(uv_timer_t *t) {
  stream_t *st = t->data;
  char ev[64];
  int n = snprintf(ev, sizeof ev, "{\"i\":%d}", st->i++);
  int rc = dyn_http_sse(st->req, ev, (size_t)n);
  if (rc == DYN_ECLOSED) return; /* on_close comes next and cleans up */
  if (st->n >= 0 && st->i >= st->n) {
    dyn_http_finish(st->req);
    atomic_fetch_add(&sse_done, 1);
    uv_close((uv_handle_t *)&st->t, on_stream_timer_closed);
  }
}

static void on_forever_close(dyn_http_req_t *req, void *ud) {
  stream_t *st = ud;
  if (dyn_http_write(req, "x", 1) == DYN_ECLOSED) atomic_fetch_add(&eclosed_writes, 1);
  if (dyn_http_finish(req) == DYN_ECLOSED) atomic_fetch_add(&eclosed_finish, 1);
  uv_close((uv_handle_t *)&st->t, on_stream_timer_closed);
  atomic_fetch_add(&closes_forever, 1); /* last: the client thread polls it */
}

static void start_stream(dyn_http_req_t *req, int n, int every_ms) {
  stream_t *st = calloc(1, sizeof *st);
  st->req = req;
  st->n = n;
  uv_timer_init(&loop, &st->t);
  st->t.data = st;
  dyn_http_start(req, 200, "text/event-stream");
  if (n < 0) dyn_http_on_close(req, on_forever_close, st);
  uv_timer_start(&st->t, on_stream_tick, (uint64_t)every_ms, (uint64_t)every_ms);
}

static void h_sse(dyn_http_req_t *req, void *ud) { start_stream(req, 100, 5); }
static void h_forever(dyn_http_req_t *req, void *ud) { start_stream(req, -1, 5); }

static void h_sse_multi(dyn_http_req_t *req, void *ud) {
  dyn_http_start(req, 200, "text/event-stream");
  dyn_http_sse(req, "a\nb", 3);
  dyn_http_sse(req, "", 0);
  dyn_http_finish(req);
}

static void on_hang_close(dyn_http_req_t *req, void *ud) {
  atomic_fetch_add(ud ? &stop_closes : &hang_closed, 1);
  dyn_http_finish(req);
}

static int stopping_now;
static void h_hang(dyn_http_req_t *req, void *ud) {
  atomic_fetch_add(&hang_started, 1);
  dyn_http_on_close(req, on_hang_close, stopping_now ? (void *)1 : NULL);
}

typedef struct slow {
  uv_timer_t t;
  dyn_http_req_t *req;
} slow_t;

static void on_slow_closed(uv_handle_t *h) { free(h->data); }
static void on_slow(uv_timer_t *t) {
  slow_t *sl = t->data;
  if (dyn_http_respond(sl->req, 200, "text/plain", "slow", 4) == DYN_ECLOSED)
    atomic_fetch_add(&slow_eclosed, 1);
  uv_close((uv_handle_t *)&sl->t, on_slow_closed);
}
static void h_slow(dyn_http_req_t *req, void *ud) {
  slow_t *sl = calloc(1, sizeof *sl);
  sl->req = req;
  uv_timer_init(&loop, &sl->t);
  sl->t.data = sl;
  uv_timer_start(&sl->t, on_slow, 50, 0);
}

static void h_noanswer(dyn_http_req_t *req, void *ud) {
  dyn_http_finish(req); /* a buggy handler: 500 */
}

/* An event stream whose handler sets its own Cache-Control. */
static void h_own_cache(dyn_http_req_t *req, void *ud) {
  dyn_http_set_header(req, "cache-control", "no-store");
  dyn_http_start(req, 200, "text/event-stream");
  dyn_http_sse(req, "x", 1);
  dyn_http_finish(req);
}

/* Writes 64 KiB every millisecond until the server says the client is
 * gone; records the most output it saw waiting. */
static atomic_int flood_closed, flood_eclosed;
static atomic_size_t flood_max_pending;
typedef struct flood {
  uv_timer_t t;
  dyn_http_req_t *req;
} flood_t;
static char flood_chunk[64 * 1024];

static void on_flood_tick(uv_timer_t *t) {
  flood_t *f = t->data;
  if (!f->req) return;
  size_t p = dyn_http_pending(f->req);
  if (p > atomic_load(&flood_max_pending)) atomic_store(&flood_max_pending, p);
  if (dyn_http_write(f->req, flood_chunk, sizeof flood_chunk) == DYN_ECLOSED &&
      !atomic_load(&flood_eclosed))
    atomic_store(&flood_eclosed, 1);
}
static void on_flood_close(dyn_http_req_t *req, void *ud) {
  flood_t *f = ud;
  f->req = NULL;
  dyn_http_finish(req);
  uv_close((uv_handle_t *)&f->t, on_stream_timer_closed);
  atomic_fetch_add(&flood_closed, 1);
}
static void h_flood(dyn_http_req_t *req, void *ud) {
  flood_t *f = calloc(1, sizeof *f);
  f->req = req;
  uv_timer_init(&loop, &f->t);
  f->t.data = f;
  dyn_http_start(req, 200, "application/octet-stream");
  dyn_http_on_close(req, on_flood_close, f);
  uv_timer_start(&f->t, on_flood_tick, 1, 1);
}

/* ---- the client side -------------------------------------------------- */

typedef struct client {
  int fd;
  char *buf;
  size_t len, cap;
} client_t;

static int cl_open(client_t *c) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(0x7f000001);
  struct timeval tv = {5, 0};
  setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  return connect(c->fd, (struct sockaddr *)&a, sizeof a);
}

static void cl_close(client_t *c) {
  if (c->fd >= 0) close(c->fd);
  c->fd = -1;
  free(c->buf);
  c->buf = NULL;
}

static int cl_send(client_t *c, const void *p, size_t n) {
  const char *s = p;
  while (n) {
    ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
    if (w <= 0) return -1;
    s += w;
    n -= (size_t)w;
  }
  return 0;
}
static int cl_sends(client_t *c, const char *s) { return cl_send(c, s, strlen(s)); }

/* Reads more into the buffer; 0 at EOF, -1 on error or timeout. */
static int cl_fill(client_t *c) {
  if (c->cap - c->len < 65536) {
    c->cap = c->cap ? c->cap * 2 : 131072;
    c->buf = realloc(c->buf, c->cap + 1);
  }
  ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
  if (n > 0) {
    c->len += (size_t)n;
    c->buf[c->len] = 0;
  }
  return n > 0 ? 1 : (int)n;
}

static void cl_consume(client_t *c, size_t n) {
  memmove(c->buf, c->buf + n, c->len - n);
  c->len -= n;
  if (c->buf) c->buf[c->len] = 0;
}

typedef struct resp {
  int status;
  char head[4096];
  char *body;
  size_t body_len;
} resp_t;

static const char *resp_header(resp_t *r, const char *name) {
  static char val[512];
  size_t nl = strlen(name);
  for (char *p = strstr(r->head, "\r\n"); p; p = strstr(p + 2, "\r\n")) {
    if (!strncasecmp(p + 2, name, nl) && p[2 + nl] == ':') {
      const char *v = p + 3 + nl;
      while (*v == ' ') v++;
      size_t vl = strcspn(v, "\r\n");
      if (vl >= sizeof val) vl = sizeof val - 1;
      memcpy(val, v, vl);
      val[vl] = 0;
      return val;
    }
  }
  return NULL;
}

/* Reads one whole response (Content-Length, chunked or until close). */
static int cl_response(client_t *c, resp_t *r) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!c->buf || !(end = strstr(c->buf, "\r\n\r\n")))
    if (cl_fill(c) <= 0) return -1;
  size_t hl = (size_t)(end - c->buf) + 4;
  if (hl >= sizeof r->head) return -1;
  memcpy(r->head, c->buf, hl);
  r->head[hl] = 0;
  cl_consume(c, hl);
  if (sscanf(r->head, "HTTP/1.%*d %d", &r->status) != 1) return -1;
  if (r->status == 100) return cl_response(c, r);
  const char *cl = resp_header(r, "Content-Length");
  const char *te = resp_header(r, "Transfer-Encoding");
  if (cl) {
    size_t n = strtoul(cl, NULL, 10);
    while (c->len < n)
      if (cl_fill(c) <= 0) return -1;
    r->body = malloc(n + 1);
    memcpy(r->body, c->buf, n);
    r->body[n] = 0;
    r->body_len = n;
    cl_consume(c, n);
  } else if (te && !strcasecmp(te, "chunked")) {
    r->body = malloc(1);
    for (;;) {
      char *crlf;
      while (!c->buf || !(crlf = strstr(c->buf, "\r\n")))
        if (cl_fill(c) <= 0) return -1;
      size_t n = strtoul(c->buf, NULL, 16);
      size_t need = (size_t)(crlf - c->buf) + 2 + n + 2;
      while (c->len < need)
        if (cl_fill(c) <= 0) return -1;
      r->body = realloc(r->body, r->body_len + n + 1);
      memcpy(r->body + r->body_len, crlf + 2, n);
      r->body_len += n;
      r->body[r->body_len] = 0;
      cl_consume(c, need);
      if (!n) break;
    }
  } else {
    int rc;
    while ((rc = cl_fill(c)) > 0) {}
    if (rc < 0) return -1;
    r->body = malloc(c->len + 1);
    memcpy(r->body, c->buf ? c->buf : "", c->len);
    r->body[c->len] = 0;
    r->body_len = c->len;
    cl_consume(c, c->len);
  }
  return 0;
}

/* One request on a new connection. */
static int one(const char *raw, resp_t *r) {
  client_t c;
  if (cl_open(&c)) return -1;
  int rc = cl_sends(&c, raw) ? -1 : cl_response(&c, r);
  cl_close(&c);
  return rc;
}

/* The connection is closed by the server: recv sees EOF (not a timeout). */
static int cl_sees_eof(client_t *c) {
  int rc;
  while ((rc = cl_fill(c)) > 0) {}
  return rc == 0;
}

/* Runs a shell command, returns its output (malloc'ed) or NULL. */
static char *sh(const char *cmd) {
  FILE *f = popen(cmd, "r");
  if (!f) return NULL;
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  size_t n;
  while ((n = fread(out + len, 1, cap - len - 1, f)) > 0) {
    len += n;
    if (cap - len < 1024) out = realloc(out, cap *= 2);
  }
  out[len] = 0;
  if (pclose(f) != 0) {
    free(out);
    return NULL;
  }
  return out;
}

/* ---- tests ------------------------------------------------------------- */

static size_t nconns;
static void count_conns(void) { nconns = dyn_http_server_connections(srv); }

static void test_get_post(void) {
  resp_t r;
  CHECK(one("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK(r.status == 200);
  CHECK(r.body && !strcmp(r.body, "hello\n"));
  CHECK(resp_header(&r, "Content-Type") && !strcmp(resp_header(&r, "Content-Type"), "text/plain"));
  free(r.body);

  const char *json = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}";
  char req[512];
  snprintf(req, sizeof req,
           "POST /echo HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\n"
           "Content-Length: %zu\r\n\r\n%s", strlen(json), json);
  CHECK(one(req, &r) == 0);
  CHECK(r.status == 200);
  CHECK(r.body && !strcmp(r.body, json));
  CHECK(resp_header(&r, "X-Seen-Content-Type") &&
        !strcmp(resp_header(&r, "X-Seen-Content-Type"), "application/json"));
  free(r.body);

  /* A chunked request body arrives de-chunked (trailers dropped). */
  CHECK(one("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            "3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\nX-Trailer: t\r\n\r\n", &r) == 0);
  CHECK(r.status == 200 && r.body && !strcmp(r.body, "{\"a\":1}"));
  free(r.body);

  CHECK(one("GET /query?a=1&b=%20#frag HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK_MSG(r.body && !strcmp(r.body, "/query|a=1&b=%20|/query?a=1&b=%20#frag"), "%s", r.body);
  free(r.body);
  CHECK(one("GET http://example.com/query?z HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK_MSG(r.body && !strncmp(r.body, "/query|z|", 9), "%s", r.body);
  free(r.body);

  /* A handler that releases without answering: 500. */
  CHECK(one("GET /noanswer HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK(r.status == 500 && r.body && strstr(r.body, "\"type\":\"InternalServerError\""));
  free(r.body);
}

static void test_curl(void) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd,
           "curl -sS --max-time 10 -X POST -H 'Content-Type: application/json' "
           "-d '{\"x\":[1,2,3]}' -w ' %%{http_code}' http://127.0.0.1:%d/echo", port);
  char *out = sh(cmd);
  CHECK_MSG(out && !strcmp(out, "{\"x\":[1,2,3]} 200"), "%s", out ? out : "(curl failed)");
  free(out);

  /* 2 MB body: curl sends Expect: 100-continue and waits for it. */
  snprintf(cmd, sizeof cmd,
           "head -c 2000000 /dev/zero | tr '\\0' 'a' | curl -sS --max-time 10 "
           "--expect100-timeout 5 -H 'Expect: 100-continue' -X POST --data-binary @- "
           "http://127.0.0.1:%d/echo | wc -c", port);
  double t0 = now_ms();
  out = sh(cmd);
  CHECK_MSG(out && atol(out) == 2000000, "%s", out ? out : "(curl failed)");
  CHECK_MSG(now_ms() - t0 < 900, "100-continue not sent? took %.0f ms", now_ms() - t0);
  free(out);

  /* SSE through curl: all 100 events, in order. */
  snprintf(cmd, sizeof cmd, "curl -sSN --max-time 10 http://127.0.0.1:%d/sse", port);
  out = sh(cmd);
  int ok = out != NULL, count = 0;
  for (const char *p = out; p && (p = strstr(p, "data: {\"i\":")); p++) {
    if (atoi(p + 11) != count) ok = 0;
    count++;
  }
  CHECK_MSG(ok && count == 100, "events %d", count);
  free(out);
}

static void test_errors(void) {
  resp_t r;
  CHECK(one("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK(r.status == 404);
  CHECK(resp_header(&r, "Content-Type") && !strcmp(resp_header(&r, "Content-Type"), "application/json"));
  CHECK_MSG(r.body && strstr(r.body, "\"error\"") && strstr(r.body, "\"code\":404"), "%s", r.body);
  free(r.body);

  CHECK(one("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK(r.status == 405);
  CHECK(resp_header(&r, "Allow") && !strcmp(resp_header(&r, "Allow"), "POST"));
  CHECK(r.body && strstr(r.body, "\"code\":405"));
  free(r.body);

  /* 413 from the declared length, before any body is sent. */
  client_t c;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 17000000\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 413);
  CHECK(resp_header(&r, "Connection") && !strcmp(resp_header(&r, "Connection"), "close"));
  free(r.body);
  CHECK(cl_sees_eof(&c));
  cl_close(&c);

  /* 413 from a chunked body that grows past 16 MiB. */
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  char *chunk = malloc((1 << 20) + 32);
  int hl = sprintf(chunk, "%x\r\n", 1 << 20);
  memset(chunk + hl, 'z', 1 << 20);
  memcpy(chunk + hl + (1 << 20), "\r\n", 2);
  for (int i = 0; i < 17; i++)
    if (cl_send(&c, chunk, (size_t)hl + (1 << 20) + 2)) break; /* the server may stop reading */
  free(chunk);
  CHECK(cl_response(&c, &r) == 0 && r.status == 413);
  free(r.body);
  cl_close(&c);

  /* Malformed: 400, that connection closes, others go on. */
  client_t other;
  CHECK(cl_open(&other) == 0);
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 400);
  CHECK(r.body && strstr(r.body, "\"type\":\"BadRequestError\""));
  free(r.body);
  CHECK(cl_sees_eof(&c));
  cl_close(&c);
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "BLAH\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 400);
  free(r.body);
  cl_close(&c);
  cl_sends(&other, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&other, &r) == 0 && r.status == 200);
  free(r.body);
  cl_close(&other);
}

/* dyn_http_error's message is JSON-escaped as UTF-8 text: non-ASCII
 * characters arrive intact (not as one \u00XX per byte). */
static void test_unicode_error(void) {
  resp_t r;
  CHECK(one("GET /unicode_error HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0);
  CHECK(r.status == 400);
  /* é as its own two bytes, not escaped byte by byte. */
  CHECK_MSG(r.body && strstr(r.body, "mod\xc3\xa8le") && !strstr(r.body, "\\u00"), "%s",
            r.body ? r.body : "(no body)");
  json_t *v = r.body ? json_loads(r.body, 0, NULL) : NULL;
  const char *msg = json_string_value(json_object_get(json_object_get(v, "error"), "message"));
  CHECK_MSG(msg && !strcmp(msg, unicode_msg), "message %s", msg ? msg : "(unparsable body)");
  json_decref(v);
  free(r.body);
}

static void test_keepalive(void) {
  client_t c;
  resp_t r;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200 && !resp_header(&r, "Connection"));
  free(r.body);
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "{}"));
  free(r.body);
  /* Pipelined: three requests in one send, three answers in order. */
  cl_sends(&c, "GET /query?1 HTTP/1.1\r\nHost: x\r\n\r\nGET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /query?3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.body && !strncmp(r.body, "/query|1|", 9));
  free(r.body);
  CHECK(cl_response(&c, &r) == 0 && r.body && !strcmp(r.body, "slow"));
  free(r.body);
  CHECK(cl_response(&c, &r) == 0 && r.body && !strncmp(r.body, "/query|3|", 9));
  CHECK(resp_header(&r, "Connection") && !strcmp(resp_header(&r, "Connection"), "close"));
  free(r.body);
  CHECK(cl_sees_eof(&c));
  cl_close(&c);

  /* HTTP/1.0: closes unless asked to keep alive. */
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200);
  CHECK(resp_header(&r, "Connection") && !strcasecmp(resp_header(&r, "Connection"), "keep-alive"));
  free(r.body);
  cl_sends(&c, "GET /hello HTTP/1.0\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200);
  free(r.body);
  CHECK(cl_sees_eof(&c));
  cl_close(&c);
}

static void test_sse(void) {
  client_t c;
  CHECK(cl_open(&c) == 0);
  double t0 = now_ms();
  cl_sends(&c, "GET /sse HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
  char *end;
  while (!c.buf || !(end = strstr(c.buf, "\r\n\r\n")))
    if (cl_fill(&c) <= 0) break;
  CHECK(c.buf && strstr(c.buf, "HTTP/1.1 200 OK\r\n"));
  CHECK(c.buf && strstr(c.buf, "Content-Type: text/event-stream\r\n"));
  CHECK(c.buf && strstr(c.buf, "Transfer-Encoding: chunked\r\n"));
  CHECK(c.buf && strstr(c.buf, "Cache-Control: no-cache\r\n"));
  /* Read the events as they come; the first must arrive long before the
   * last one is written (~500 ms in). */
  int seen = 0, in_order = 1;
  double first_at = 0;
  size_t scanned = 0;
  while (seen < 100) {
    const char *q = strstr(c.buf + scanned, "data: {\"i\":");
    if (!q) {
      scanned = c.len > 12 ? c.len - 12 : 0;
      if (cl_fill(&c) <= 0) break;
      continue;
    }
    if (atoi(q + 11) != seen) in_order = 0;
    if (!seen) first_at = now_ms() - t0;
    seen++;
    scanned = (size_t)(q - c.buf) + 1;
  }
  CHECK_MSG(seen == 100 && in_order, "seen %d in order %d", seen, in_order);
  CHECK_MSG(first_at < 250, "first event after %.0f ms", first_at);
  CHECK_MSG(now_ms() - t0 >= 400, "stream took %.0f ms", now_ms() - t0);
  while (!strstr(c.buf, "\r\n0\r\n\r\n"))
    if (cl_fill(&c) <= 0) break;
  CHECK(strstr(c.buf, "\r\n0\r\n\r\n") != NULL);
  /* The connection stays usable after a stream. */
  cl_consume(&c, c.len);
  resp_t r;
  cl_sends(&c, "GET /sse_multi HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200);
  CHECK_MSG(r.body && !strcmp(r.body, "data: a\ndata: b\n\ndata: \n\n"), "%s", r.body);
  free(r.body);
  cl_close(&c);
  CHECK(wait_for(&sse_done, 2, 2000)); /* this stream and curl's */
}

static void test_disconnect(void) {
  /* Mid-stream: read a few events, go away; on_close fires, writes fail. */
  client_t c;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /forever HTTP/1.1\r\nHost: x\r\n\r\n");
  while (!c.buf || !strstr(c.buf, "data: {\"i\":3}"))
    if (cl_fill(&c) <= 0) break;
  CHECK(c.buf && strstr(c.buf, "data: {\"i\":3}"));
  cl_close(&c);
  CHECK(wait_for(&closes_forever, 1, 2000));
  CHECK(atomic_load(&eclosed_writes) == 1);
  CHECK(atomic_load(&eclosed_finish) == 1);
  sleep_ms(50);
  CHECK(atomic_load(&closes_forever) == 1); /* once */

  /* Before any response byte: noticed at once, without a write. */
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(wait_for(&hang_started, 1, 2000));
  double t0 = now_ms();
  cl_close(&c);
  CHECK(wait_for(&hang_closed, 1, 2000));
  CHECK_MSG(now_ms() - t0 < 500, "%.0f ms", now_ms() - t0);

  /* A handler without on_close answers after the client left: ECLOSED,
   * and the request is released (ASan would see a leak otherwise). */
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  sleep_ms(10);
  cl_close(&c);
  CHECK(wait_for(&slow_eclosed, 1, 2000));
}

static void test_concurrent(void) {
  enum { N = 50 };
  client_t cs[N];
  int opened = 0, ok = 0;
  for (int i = 0; i < N; i++) opened += cl_open(&cs[i]) == 0;
  CHECK(opened == N);
  double t0 = now_ms();
  for (int i = 0; i < N; i++) cl_sends(&cs[i], "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  for (int i = 0; i < N; i++) {
    resp_t r;
    if (cl_response(&cs[i], &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "slow")) ok++;
    free(r.body);
  }
  /* Each waits 50 ms on the server; served together, not one by one. */
  CHECK_MSG(ok == N, "%d of %d", ok, N);
  CHECK_MSG(now_ms() - t0 < 1500, "%.0f ms", now_ms() - t0);
  /* And once more on the same 50 connections (keep-alive). */
  for (int i = 0; i < N; i++) cl_sends(&cs[i], "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  ok = 0;
  for (int i = 0; i < N; i++) {
    resp_t r;
    if (cl_response(&cs[i], &r) == 0 && r.status == 200) ok++;
    free(r.body);
  }
  CHECK_MSG(ok == N, "%d of %d", ok, N);
  for (int i = 0; i < N; i++) cl_close(&cs[i]);
}


static void short_idle(void) {
  dyn_http_limits_t l;
  dyn_http_server_limits(srv, &l);
  l.idle_timeout_ms = l.header_timeout_ms = 300;
  dyn_http_server_set_limits(srv, &l);
}

static void test_idle_timeout(void) {
  on_loop(short_idle);
  client_t c;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "GET /hel"); /* a slow client that never finishes */
  double t0 = now_ms();
  CHECK(cl_sees_eof(&c)); /* closed by the 1 s sweep */
  CHECK_MSG(now_ms() - t0 < 3000, "%.0f ms", now_ms() - t0);
  cl_close(&c);
}


/* ---- limits: slow, idle and greedy clients ---------------------------- */

static dyn_http_limits_t want;
static int limits_rc;
static size_t buffered_now, inflight_now;
static void apply_limits(void) { limits_rc = dyn_http_server_set_limits(srv, &want); }
static void read_counts(void) {
  buffered_now = dyn_http_server_buffered(srv);
  inflight_now = dyn_http_server_inflight(srv);
  nconns = dyn_http_server_connections(srv);
}

/* The defaults with edits, applied on the loop thread. */
static void limits_default(void) { dyn_http_limits_default(&want); }
static void limits_apply(void) {
  on_loop(apply_limits);
  CHECK(limits_rc == DYN_OK);
}

/* Waits until the server has at most n connections open. */
static int conns_drop_to(size_t n, int ms) {
  double end = now_ms() + ms;
  do {
    on_loop(read_counts);
    if (nconns <= n) return 1;
    sleep_ms(10);
  } while (now_ms() < end);
  return 0;
}

/* Bytes are waiting to be read on c. */
static int cl_readable(client_t *c) {
  char b;
  return recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) > 0;
}

/* Reads a response head only (HEAD answers): the status, 0 on failure. */
static int cl_head_only(client_t *c, resp_t *r) {
  memset(r, 0, sizeof *r);
  char *end;
  while (!c->buf || !(end = strstr(c->buf, "\r\n\r\n")))
    if (cl_fill(c) <= 0) return 0;
  size_t hl = (size_t)(end - c->buf) + 4;
  if (hl >= sizeof r->head) return 0;
  memcpy(r->head, c->buf, hl);
  r->head[hl] = 0;
  cl_consume(c, hl);
  return sscanf(r->head, "HTTP/1.%*d %d", &r->status) == 1 ? r->status : 0;
}

static int count_in(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strcasestr(p, needle)); p++) n++;
  return n;
}

static void test_limits_api(void) {
  dyn_http_limits_t l;
  dyn_http_limits_default(&l);
  CHECK(l.max_body == DYN_HTTP_DEFAULT_MAX_BODY && l.max_connections == DYN_HTTP_DEFAULT_MAX_CONNECTIONS);
  size_t n = 0;
  int seen = 0;
  for (const char *k; (k = dyn_http_limit_name(n)); n++) seen += !strcmp(k, "http_max_inflight");
  CHECK(n == 9 && seen == 1);
  CHECK(dyn_http_limits_set(&l, "http_max_inflight", 7) == DYN_OK && l.max_inflight == 7);
  CHECK(dyn_http_limits_set(&l, "http_max_buffered", 1 << 20) == DYN_OK && l.max_buffered == 1 << 20);
  CHECK(dyn_http_limits_set(&l, "http_body_min_rate", 0) == DYN_OK && l.body_min_rate == 0);
  CHECK(dyn_http_limits_set(&l, "http_max_connections", 0) == DYN_EINVAL);
  CHECK(dyn_http_limits_set(&l, "http_max_body", -1) == DYN_EINVAL);
  CHECK(dyn_http_limits_set(&l, "http_header_timeout_ms", 5) == DYN_EINVAL);
  CHECK(dyn_http_limits_set(&l, "http_max_inflight", 1LL << 40) == DYN_EINVAL);
  CHECK(dyn_http_limits_set(&l, "http_nope", 1) == DYN_ENOTFOUND);
  limits_default();
  want.idle_timeout_ms = 0;
  on_loop(apply_limits);
  CHECK(limits_rc == DYN_EINVAL);
}

/* HEAD is answered by the GET route with headers only, on a connection
 * that stays in step; 405 lists HEAD beside GET. */
static void test_head(void) {
  client_t c;
  resp_t r;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "HEAD /hello HTTP/1.1\r\nHost: x\r\n\r\nHEAD /sse_multi HTTP/1.1\r\nHost: x\r\n\r\n"
               "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_head_only(&c, &r) == 200);
  CHECK(resp_header(&r, "Content-Length") && !strcmp(resp_header(&r, "Content-Length"), "6"));
  CHECK(cl_head_only(&c, &r) == 200);
  CHECK(resp_header(&r, "Content-Type") && !strcmp(resp_header(&r, "Content-Type"), "text/event-stream"));
  CHECK(cl_response(&c, &r) == 0 && r.status == 200 && r.body && !strcmp(r.body, "hello\n"));
  free(r.body);
  cl_close(&c);
  CHECK(one("POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", &r) == 0);
  CHECK(r.status == 405 && resp_header(&r, "Allow") && !strcmp(resp_header(&r, "Allow"), "GET, HEAD"));
  free(r.body);
}

/* An event stream carries each header once, the handler's own
 * Cache-Control instead of the server's. */
static void test_sse_headers(void) {
  resp_t r;
  CHECK(one("GET /own_cache HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0 && r.status == 200);
  CHECK_MSG(count_in(r.head, "Cache-Control:") == 1, "%s", r.head);
  CHECK(resp_header(&r, "Cache-Control") && !strcmp(resp_header(&r, "Cache-Control"), "no-store"));
  free(r.body);
  CHECK(one("GET /sse_multi HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0 && r.status == 200);
  CHECK_MSG(count_in(r.head, "Cache-Control:") == 1 && count_in(r.head, "Content-Type:") == 1 &&
                count_in(r.head, "Transfer-Encoding:") == 1, "%s", r.head);
  free(r.body);
}

/* An HTTP/0.9 request line: 400 and a close at once, not a wait. */
static void test_http09(void) {
  client_t c;
  resp_t r;
  CHECK(cl_open(&c) == 0);
  double t0 = now_ms();
  cl_sends(&c, "GET /hello\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 400);
  CHECK_MSG(r.body && strstr(r.body, "HTTP/0.9"), "%s", r.body ? r.body : "(none)");
  free(r.body);
  CHECK(cl_sees_eof(&c));
  CHECK_MSG(now_ms() - t0 < 1000, "%.0f ms", now_ms() - t0);
  cl_close(&c);
}

/* Sends a byte every 50 ms until the server answers (or 3 s pass). */
static void trickle_until_answer(client_t *c, const char *bytes) {
  for (int i = 0; i < 60 && !cl_readable(c); i++) {
    send(c->fd, bytes + (i % strlen(bytes)), 1, MSG_NOSIGNAL);
    sleep_ms(50);
  }
}

/* A head trickled in gets 408 when header_timeout_ms is up, however
 * often bytes come; a connection that sends nothing is closed then. */
static void test_header_timeout(void) {
  limits_default();
  want.header_timeout_ms = 300;
  limits_apply();
  client_t c, quiet;
  resp_t r;
  CHECK(cl_open(&quiet) == 0);
  CHECK(cl_open(&c) == 0);
  double t0 = now_ms();
  cl_sends(&c, "GET /hello HTTP/1.1\r\n");
  trickle_until_answer(&c, "X-A: b\r\n");
  double took = now_ms() - t0;
  CHECK(cl_response(&c, &r) == 0 && r.status == 408);
  CHECK(resp_header(&r, "Connection") && !strcmp(resp_header(&r, "Connection"), "close"));
  CHECK_MSG(r.body && strstr(r.body, "head"), "%s", r.body ? r.body : "(none)");
  free(r.body);
  CHECK(cl_sees_eof(&c));
  CHECK_MSG(took >= 250 && took < 1500, "%.0f ms", took);
  CHECK(cl_sees_eof(&quiet));
  CHECK_MSG(now_ms() - t0 < 2000, "%.0f ms", now_ms() - t0);
  cl_close(&c);
  cl_close(&quiet);
  /* A request sent at once is not affected. */
  CHECK(one("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0 && r.status == 200);
  free(r.body);
}

/* A body slower than body_min_rate over a body_timeout_ms window gets
 * 408; one at full speed is served. */
static void test_body_rate(void) {
  limits_default();
  want.body_timeout_ms = 300;
  want.body_min_rate = 1000; /* 300 bytes a window; 100 at once, then a trickle */
  limits_apply();
  client_t c;
  resp_t r;
  CHECK(cl_open(&c) == 0);
  char body[101];
  memset(body, 'b', 100);
  body[100] = 0;
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
  double t0 = now_ms();
  cl_sends(&c, body);
  trickle_until_answer(&c, "b");
  double took = now_ms() - t0;
  CHECK(cl_response(&c, &r) == 0 && r.status == 408);
  CHECK_MSG(r.body && strstr(r.body, "body came slower than 300 bytes in 300 ms"), "%s",
            r.body ? r.body : "(none)");
  free(r.body);
  CHECK(cl_sees_eof(&c));
  CHECK_MSG(took >= 250 && took < 1500, "%.0f ms", took);
  cl_close(&c);
  on_loop(read_counts);
  CHECK_MSG(buffered_now == 0, "%zu bytes held", buffered_now);
  /* 200 KB at full speed is well within the rate. */
  size_t n = 200000;
  char *big = malloc(n + 128);
  int hl = sprintf(big, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n\r\n", n);
  memset(big + hl, 'q', n);
  big[hl + n] = 0;
  CHECK(one(big, &r) == 0 && r.status == 200 && r.body_len == n);
  free(r.body);
  free(big);
}

/* At max_connections the longest-idle connection makes room; when none
 * is idle a new one gets 503 and is closed. */
static void test_max_connections(void) {
  limits_default();
  want.max_connections = 3;
  limits_apply();
  CHECK(conns_drop_to(0, 2000));
  client_t a, b, c, d, e;
  resp_t r;
  CHECK(cl_open(&a) == 0);
  cl_sends(&a, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&a, &r) == 0 && r.status == 200);
  free(r.body);
  sleep_ms(20);
  CHECK(cl_open(&b) == 0);
  cl_sends(&b, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&b, &r) == 0 && r.status == 200);
  free(r.body);
  sleep_ms(20);
  CHECK(cl_open(&c) == 0);
  sleep_ms(20);
  CHECK(cl_open(&d) == 0); /* a goes: idle the longest */
  cl_sends(&d, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&d, &r) == 0 && r.status == 200);
  free(r.body);
  CHECK(cl_sees_eof(&a));
  on_loop(read_counts);
  CHECK_MSG(nconns == 3, "%zu connections", nconns);
  /* b, c and d busy: no room. */
  int before = atomic_load(&hang_started), closed_before = atomic_load(&hang_closed);
  cl_sends(&b, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_sends(&c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_sends(&d, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(wait_for(&hang_started, before + 3, 2000));
  CHECK(cl_open(&e) == 0);
  CHECK(cl_response(&e, &r) == 0 && r.status == 503);
  CHECK(resp_header(&r, "Retry-After") && !strcmp(resp_header(&r, "Retry-After"), "1"));
  CHECK(r.body && strstr(r.body, "too many connections"));
  free(r.body);
  cl_close(&e);
  cl_close(&a);
  cl_close(&b);
  cl_close(&c);
  cl_close(&d);
  CHECK(wait_for(&hang_closed, closed_before + 3, 2000));
}

/* Past max_inflight: 503 with Retry-After, and the connection goes on. */
static void test_max_inflight(void) {
  limits_default();
  want.max_inflight = 2;
  limits_apply();
  client_t h1, h2, c;
  resp_t r;
  int before = atomic_load(&hang_started), closed_before = atomic_load(&hang_closed);
  CHECK(cl_open(&h1) == 0 && cl_open(&h2) == 0 && cl_open(&c) == 0);
  cl_sends(&h1, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  cl_sends(&h2, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(wait_for(&hang_started, before + 2, 2000));
  cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 503);
  CHECK(resp_header(&r, "Retry-After") && !strcmp(resp_header(&r, "Retry-After"), "1"));
  CHECK(!resp_header(&r, "Connection"));
  free(r.body);
  CHECK(atomic_load(&hang_started) == before + 2);
  cl_close(&h1);
  CHECK(wait_for(&hang_closed, closed_before + 1, 2000));
  cl_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 200);
  free(r.body);
  cl_close(&h2);
  cl_close(&c);
  CHECK(wait_for(&hang_closed, closed_before + 2, 2000));
}

/* Request bytes held across connections are bounded: a declared body
 * that would not fit is refused before it is sent, a chunked one when it
 * grows past; what fits is served, and nothing stays counted. */
static void test_max_buffered(void) {
  limits_default();
  want.max_buffered = 100000;
  limits_apply();
  client_t c;
  resp_t r;
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 200000\r\n\r\n");
  CHECK(cl_response(&c, &r) == 0 && r.status == 503);
  CHECK(resp_header(&r, "Retry-After") && resp_header(&r, "Connection"));
  free(r.body);
  CHECK(cl_sees_eof(&c));
  cl_close(&c);
  CHECK(cl_open(&c) == 0);
  cl_sends(&c, "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
  char chunk[30016];
  int hl = sprintf(chunk, "%x\r\n", 30000);
  memset(chunk + hl, 'c', 30000);
  memcpy(chunk + hl + 30000, "\r\n", 2);
  for (int i = 0; i < 5; i++)
    if (cl_send(&c, chunk, (size_t)hl + 30002)) break;
  CHECK(cl_response(&c, &r) == 0 && r.status == 503);
  free(r.body);
  cl_close(&c);
  char req[60100];
  hl = sprintf(req, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n");
  memset(req + hl, 'k', 60000);
  req[hl + 60000] = 0;
  CHECK(one(req, &r) == 0 && r.status == 200 && r.body_len == 60000);
  free(r.body);
  CHECK(conns_drop_to(0, 2000));
  CHECK_MSG(buffered_now == 0 && inflight_now == 0, "%zu bytes, %zu requests", buffered_now,
            inflight_now);
}

/* A client that stops reading a stream: the output waiting for it stays
 * near max_output, then the connection closes and on_close runs. */
static void test_max_output(void) {
  limits_default();
  limits_apply();
  client_t c;
  memset(&c, 0, sizeof c);
  c.fd = socket(AF_INET, SOCK_STREAM, 0);
  int small = 4096;
  setsockopt(c.fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(0x7f000001);
  CHECK(connect(c.fd, (struct sockaddr *)&a, sizeof a) == 0);
  cl_sends(&c, "GET /flood HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(wait_for(&flood_closed, 1, 10000)); /* never reading */
  CHECK(atomic_load(&flood_eclosed) == 1);
  size_t most = atomic_load(&flood_max_pending);
  CHECK_MSG(most > want.max_output / 2 && most <= want.max_output + sizeof flood_chunk + 64,
            "%zu bytes waiting at most", most);
  cl_close(&c);
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long kb = -1;
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, "VmRSS:", 6)) kb = atol(line + 6);
  if (f) fclose(f);
  return kb;
}

/* The slow-client attack of issue 11 against the default limits: 20
 * connections trickling 16 MB bodies, 20 trickling 70 KB heads and up to
 * 2,000 idle ones. The process's memory stays under the bound stated in
 * docs/limits.md (2 x max_buffered + 8 KiB a connection) while a normal
 * request is served. */
static void test_rss_under_attack(void) {
  limits_default();
  limits_apply();
  CHECK(conns_drop_to(0, 2000));
  enum { BODIES = 20, HEADS = 20 };
  size_t blen = 16000000;
  char *body = malloc(blen);
  memset(body, 'x', blen); /* resident before the baseline */
  char head[70100];
  int hl = sprintf(head, "POST /echo HTTP/1.1\r\nHost: x\r\n");
  while (hl < 70000) hl += sprintf(head + hl, "X-Pad-%d: %01000d\r\n", hl, 0);
  long base = rss_kb();
  client_t tr[BODIES + HEADS];
  for (int i = 0; i < HEADS; i++) {
    CHECK(cl_open(&tr[i]) == 0);
    cl_send(&tr[i], head, (size_t)hl);
  }
  for (int i = HEADS; i < HEADS + BODIES; i++) {
    CHECK(cl_open(&tr[i]) == 0);
    cl_sends(&tr[i], "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 16000000\r\n\r\n");
    cl_send(&tr[i], body, blen - 5); /* refused ones are read and dropped */
  }
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  int nidle = rl.rlim_cur > 3300 ? 2000 : (int)rl.rlim_cur / 3;
  client_t *idle = calloc((size_t)nidle, sizeof *idle);
  int opened = 0;
  for (int i = 0; i < nidle; i++) opened += cl_open(&idle[i]) == 0;
  CHECK(opened == nidle);
  long peak = 0;
  resp_t r;
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < BODIES + HEADS; i++) send(tr[i].fd, "y", 1, MSG_NOSIGNAL);
    sleep_ms(300);
    long now = rss_kb();
    if (now > peak) peak = now;
  }
  CHECK(one("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n", &r) == 0 && r.status == 200);
  free(r.body);
  long now = rss_kb();
  if (now > peak) peak = now;
  on_loop(read_counts);
  long bound_kb = (long)(2 * want.max_buffered / 1024 + want.max_connections * 8);
  fprintf(stderr, "test_http: slow-client attack (%d idle): RSS %ld -> %ld KiB (+%ld, bound +%ld), "
          "%zu connections, %zu request bytes held\n", nidle, base, peak, peak - base, bound_kb,
          nconns, buffered_now);
  CHECK_MSG(peak - base <= bound_kb, "RSS grew %ld KiB, bound %ld", peak - base, bound_kb);
  CHECK(nconns <= want.max_connections && buffered_now <= want.max_buffered);
  for (int i = 0; i < BODIES + HEADS; i++) cl_close(&tr[i]);
  for (int i = 0; i < nidle; i++) cl_close(&idle[i]);
  free(idle);
  free(body);
  CHECK(conns_drop_to(0, 5000));
  CHECK(buffered_now == 0);
}

static void stop_server(void) {
  dyn_http_server_stop(srv);
  uv_close((uv_handle_t *)&async, NULL);
}
static void mark_stopping(void) { stopping_now = 1; }

static void test_stop(void) {
  client_t c, idle;
  CHECK(cl_open(&idle) == 0);
  CHECK(cl_open(&c) == 0);
  on_loop(mark_stopping);
  int before = atomic_load(&hang_started);
  cl_sends(&c, "GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
  CHECK(wait_for(&hang_started, before + 1, 2000));
  on_loop(count_conns);
  CHECK_MSG(nconns == 2, "%zu connections", nconns);
  on_loop(stop_server);
  CHECK(atomic_load(&stop_closes) == 1);
  CHECK(cl_sees_eof(&c));
  CHECK(cl_sees_eof(&idle));
  cl_close(&c);
  cl_close(&idle);
}

static void on_alarm(int sig) {
  static const char m[] = "test_http: watchdog: hung\n";
  ssize_t w = write(2, m, sizeof m - 1);
  (void)w;
  _exit(2);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  signal(SIGALRM, on_alarm);
  alarm(100);
  uv_loop_init(&loop);
  uv_async_init(&loop, &async, on_async);
  int rc = dyn_http_server_start(&loop, "127.0.0.1", 0, &srv);
  if (rc) {
    fprintf(stderr, "cannot start: %s\n", dyn_strerror(rc));
    return 1;
  }
  port = dyn_http_server_port(srv);
  CHECK(port > 0);
  CHECK(dyn_http_route(srv, "GET", "/hello", h_hello, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/unicode_error", h_unicode_error, NULL) == 0);
  CHECK(dyn_http_route(srv, "POST", "/echo", h_echo, NULL) == 0);
  CHECK(dyn_http_route(srv, "post", "/echo", h_echo, NULL) == DYN_EEXIST);
  CHECK(dyn_http_route(srv, "GET", "/query", h_query, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/sse", h_sse, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/sse_multi", h_sse_multi, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/forever", h_forever, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/hang", h_hang, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/slow", h_slow, NULL) == 0);
  CHECK(dyn_http_route(srv, NULL, "/noanswer", h_noanswer, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/own_cache", h_own_cache, NULL) == 0);
  CHECK(dyn_http_route(srv, "GET", "/flood", h_flood, NULL) == 0);
  pthread_t th;
  pthread_create(&th, NULL, loop_main, NULL);

  test_get_post();
  test_curl();
  test_errors();
  test_unicode_error();
  test_keepalive();
  test_sse();
  test_disconnect();
  test_concurrent();
  test_limits_api();
  test_head();
  test_sse_headers();
  test_http09();
  test_header_timeout();
  test_body_rate();
  test_max_connections();
  test_max_inflight();
  test_max_buffered();
  test_max_output();
  test_rss_under_attack();
  test_idle_timeout();
  test_stop();

  pthread_join(th, NULL); /* returns once every handle has closed */
  CHECK(uv_loop_close(&loop) == 0);
  printf("%d passed, %d failed\n", passed, failed);
  return failed ? 1 : 0;
}
