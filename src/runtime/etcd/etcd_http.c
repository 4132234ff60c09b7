/* etcd_http.c - libcurl's multi interface driven by a libuv loop, for the
 * etcd backend's requests to the JSON gateway.
 *
 * The wiring is libcurl's multi-uv pattern: libcurl tells us which sockets
 * to watch (socket callback -> uv_poll_t) and when to call it back (timer
 * callback -> uv_timer_t); the loop tells libcurl what happened
 * (curl_multi_socket_action). Response bytes are only buffered inside
 * libcurl's write callback; lines and completions go to our callers after
 * curl_multi_socket_action has returned (deliver), because libcurl refuses
 * to add or remove transfers from inside its own callbacks, and a watch
 * callback may well put a key or drop the watch.
 *
 * Requests that end or are cancelled wait on a dead list until no delivery
 * is on the stack (depth 0), so a callback can cancel the request whose
 * line it is reading.
 */
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "runtime/etcd/etcd_http.h"

/* A response larger than this is a fault, not a keyspace we serve. */
#define MAX_BODY (64u << 20)
#define CONNECT_TIMEOUT_MS 2000L

struct dyn__ehttp_req {
  dyn__ehttp_req_t *next; /* in h->reqs while in the multi, then h->dead */
  dyn__ehttp_t *h;
  CURL *easy;
  dyn__ehttp_line_fn line;
  dyn__ehttp_done_fn done;
  void *ud;
  char *buf;
  size_t len, cap, off; /* off: bytes of buf already handed out as lines */
  size_t scanned;       /* buf[off..scanned) holds no line end */
  int quiet;            /* ended or cancelled: no more callbacks */
  int retired;          /* out of the multi, on h->dead */
  int overflow;
  char err[CURL_ERROR_SIZE];
};

typedef struct poll_ctx {
  struct poll_ctx *next;
  uv_poll_t poll;
  curl_socket_t fd;
  dyn__ehttp_t *h;
} poll_ctx_t;

struct dyn__ehttp {
  uv_loop_t *loop;
  CURLM *multi;
  uv_timer_t timer;
  struct curl_slist *headers;
  dyn__ehttp_req_t *reqs;
  dyn__ehttp_req_t *dead;
  poll_ctx_t *polls;
  int depth; /* deliveries on the stack */
  int freed;
};

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc;

/* curl_global_init must run once per process before any handle exists. */
static void global_init(void) { global_rc = curl_global_init(CURL_GLOBAL_DEFAULT); }

/* ---- requests ---------------------------------------------------------- */

static size_t on_write(char *data, size_t size, size_t n, void *ud) {
  dyn__ehttp_req_t *r = ud;
  size_t add = size * n;
  if (r->len + add + 1 > MAX_BODY) {
    r->overflow = 1;
    return 0; /* aborts the transfer */
  }
  if (r->len + add + 1 > r->cap) {
    size_t cap = r->cap ? r->cap : 1024;
    while (cap < r->len + add + 1) cap *= 2;
    char *b = realloc(r->buf, cap);
    if (!b) return 0;
    r->buf = b;
    r->cap = cap;
  }
  memcpy(r->buf + r->len, data, add);
  r->len += add;
  r->buf[r->len] = 0;
  return add;
}

static void unlink_req(dyn__ehttp_t *h, dyn__ehttp_req_t *r) {
  for (dyn__ehttp_req_t **pp = &h->reqs; *pp; pp = &(*pp)->next)
    if (*pp == r) {
      *pp = r->next;
      break;
    }
}

/* Takes r out of libcurl and onto the dead list; its memory stays. */
static void retire(dyn__ehttp_req_t *r) {
  dyn__ehttp_t *h = r->h;
  if (r->retired) return;
  r->retired = 1;
  curl_multi_remove_handle(h->multi, r->easy);
  unlink_req(h, r);
  r->next = h->dead;
  h->dead = r;
}

static void reap(dyn__ehttp_t *h) {
  while (h->dead) {
    dyn__ehttp_req_t *r = h->dead;
    h->dead = r->next;
    curl_easy_cleanup(r->easy);
    free(r->buf);
    free(r);
  }
}

int dyn__ehttp_post(dyn__ehttp_t *h, const char *url, const char *body, long timeout_ms,
                    dyn__ehttp_line_fn line, dyn__ehttp_done_fn done, void *ud,
                    dyn__ehttp_req_t **out) {
  if (h->freed) return DYN_ECLOSED;
  dyn__ehttp_req_t *r = calloc(1, sizeof *r);
  if (!r) return DYN_ENOMEM;
  if (!(r->easy = curl_easy_init())) {
    free(r);
    return DYN_ENOMEM;
  }
  r->h = h;
  r->line = line;
  r->done = done;
  r->ud = ud;
  CURL *c = r->easy;
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h->headers);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_write);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
  curl_easy_setopt(c, CURLOPT_PRIVATE, r);
  curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, ""); /* etcd is never behind $http_proxy */
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS);
  if (timeout_ms > 0) {
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  } else {
    /* A watch may be silent for hours; TCP keepalive notices a dead peer. */
    curl_easy_setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPIDLE, 5L);
    curl_easy_setopt(c, CURLOPT_TCP_KEEPINTVL, 2L);
  }
  if (curl_multi_add_handle(h->multi, c) != CURLM_OK) {
    curl_easy_cleanup(c);
    free(r);
    return DYN_ENOMEM;
  }
  r->next = h->reqs;
  h->reqs = r;
  if (out) *out = r;
  return DYN_OK;
}

void dyn__ehttp_cancel(dyn__ehttp_req_t *r) {
  if (!r || r->quiet) return;
  dyn__ehttp_t *h = r->h;
  r->quiet = 1;
  retire(r);
  if (!h->depth) reap(h);
}

/* ---- delivery ---------------------------------------------------------- */

/* Hands out r's complete lines; stops if a callback ended r or h. */
static void emit_lines(dyn__ehttp_req_t *r) {
  dyn__ehttp_t *h = r->h;
  if (!r->buf) return; /* nothing came */
  while (!r->quiet && !h->freed) {
    char *nl = memchr(r->buf + r->scanned, '\n', r->len - r->scanned);
    if (!nl) {
      r->scanned = r->len;
      break;
    }
    const char *line = r->buf + r->off;
    size_t n = (size_t)(nl - line);
    r->off = r->scanned = (size_t)(nl - r->buf) + 1;
    if (n && line[n - 1] == '\r') n--;
    if (n) r->line(r, line, n, r->ud);
  }
  if (r->quiet || h->freed || !r->off) return;
  /* Keep only the partial line, so the buffer stays the size of one. */
  memmove(r->buf, r->buf + r->off, r->len - r->off);
  r->len -= r->off;
  r->scanned -= r->off;
  r->off = 0;
}

static dyn__ehttp_req_t *next_with_lines(dyn__ehttp_t *h) {
  for (dyn__ehttp_req_t *r = h->reqs; r; r = r->next)
    if (r->line && r->scanned < r->len) return r;
  return NULL;
}

static void finish(dyn__ehttp_req_t *r, CURLcode res) {
  long status = 0;
  curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
  retire(r); /* its last callbacks are still to come */
  if (r->line) {
    emit_lines(r);
    if (!r->quiet && !r->h->freed && r->len > r->off)
      r->line(r, r->buf + r->off, r->len - r->off, r->ud);
    if (r->quiet || r->h->freed) return;
  }
  r->quiet = 1;
  const char *err = r->overflow ? "response too large"
                    : r->err[0] ? r->err
                                : curl_easy_strerror(res);
  int rc = res == CURLE_OK ? DYN_OK : r->overflow ? DYN_ETOOBIG : DYN_ECONTROL;
  int streamed = r->line != NULL;
  r->done(r, rc, status, streamed || !r->buf ? "" : r->buf, streamed ? 0 : r->len, err,
          r->ud);
}

/* Runs after every curl_multi_socket_action: lines, then completions. */
static void deliver(dyn__ehttp_t *h) {
  h->depth++;
  dyn__ehttp_req_t *r;
  while (!h->freed && (r = next_with_lines(h))) emit_lines(r);
  CURLMsg *m;
  int left;
  while (!h->freed && (m = curl_multi_info_read(h->multi, &left))) {
    if (m->msg != CURLMSG_DONE) continue;
    dyn__ehttp_req_t *done = NULL;
    curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&done);
    if (done && !done->quiet) finish(done, m->data.result);
  }
  if (--h->depth == 0) reap(h);
}

/* ---- libcurl <-> libuv ------------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events) {
  poll_ctx_t *ctx = p->data;
  dyn__ehttp_t *h = ctx->h;
  int flags = 0;
  if (status < 0) flags = CURL_CSELECT_ERR;
  if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
  if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
  int running;
  curl_multi_socket_action(h->multi, ctx->fd, flags, &running);
  deliver(h);
}

static void on_timer(uv_timer_t *t) {
  dyn__ehttp_t *h = t->data;
  int running;
  curl_multi_socket_action(h->multi, CURL_SOCKET_TIMEOUT, 0, &running);
  deliver(h);
}

static void on_poll_closed(uv_handle_t *handle) { free(handle->data); }

static void drop_poll(dyn__ehttp_t *h, poll_ctx_t *ctx) {
  for (poll_ctx_t **pp = &h->polls; *pp; pp = &(*pp)->next)
    if (*pp == ctx) {
      *pp = ctx->next;
      break;
    }
  /* Stop now: libcurl may close the descriptor and reuse its number for
   * the next connection before the close callback runs. */
  uv_poll_stop(&ctx->poll);
  uv_close((uv_handle_t *)&ctx->poll, on_poll_closed);
}

static int on_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp) {
  (void)easy;
  dyn__ehttp_t *h = userp;
  poll_ctx_t *ctx = socketp;
  if (action == CURL_POLL_REMOVE) {
    if (ctx) {
      curl_multi_assign(h->multi, fd, NULL);
      drop_poll(h, ctx);
    }
    return 0;
  }
  if (!ctx) {
    ctx = calloc(1, sizeof *ctx);
    if (!ctx) return -1;
    ctx->fd = fd;
    ctx->h = h;
    ctx->poll.data = ctx;
    if (uv_poll_init_socket(h->loop, &ctx->poll, fd)) {
      free(ctx);
      return -1;
    }
    ctx->next = h->polls;
    h->polls = ctx;
    curl_multi_assign(h->multi, fd, ctx);
  }
  int events = 0;
  if (action == CURL_POLL_IN || action == CURL_POLL_INOUT) events |= UV_READABLE;
  if (action == CURL_POLL_OUT || action == CURL_POLL_INOUT) events |= UV_WRITABLE;
  uv_poll_start(&ctx->poll, events, on_poll);
  return 0;
}

/* libcurl forbids calling socket_action from here; 0 ms runs it from the
 * loop's next timer pass instead. */
static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp) {
  (void)multi;
  dyn__ehttp_t *h = userp;
  if (timeout_ms < 0) uv_timer_stop(&h->timer);
  else uv_timer_start(&h->timer, on_timer, (uint64_t)timeout_ms, 0);
  return 0;
}

/* ---- lifecycle --------------------------------------------------------- */

int dyn__ehttp_new(uv_loop_t *loop, dyn__ehttp_t **out) {
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return DYN_ESYS;
  dyn__ehttp_t *h = calloc(1, sizeof *h);
  if (!h) return DYN_ENOMEM;
  h->loop = loop;
  h->headers = curl_slist_append(NULL, "Content-Type: application/json");
  /* No "Expect: 100-continue" round trip before larger bodies. */
  struct curl_slist *more = h->headers ? curl_slist_append(h->headers, "Expect:") : NULL;
  if (more) h->headers = more;
  if (!more || !(h->multi = curl_multi_init())) {
    curl_slist_free_all(h->headers);
    free(h);
    return DYN_ENOMEM;
  }
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
  curl_multi_setopt(h->multi, CURLMOPT_SOCKETDATA, h);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
  curl_multi_setopt(h->multi, CURLMOPT_TIMERDATA, h);
  uv_timer_init(loop, &h->timer);
  h->timer.data = h;
  *out = h;
  return DYN_OK;
}

static void on_timer_closed(uv_handle_t *t) {
  dyn__ehttp_t *h = t->data;
  reap(h);
  free(h);
}

void dyn__ehttp_free(dyn__ehttp_t *h) {
  if (!h || h->freed) return;
  h->freed = 1;
  while (h->reqs) {
    h->reqs->quiet = 1;
    retire(h->reqs);
  }
  /* The multi closes its cached connections here, telling on_socket. */
  curl_multi_cleanup(h->multi);
  h->multi = NULL;
  while (h->polls) drop_poll(h, h->polls);
  curl_slist_free_all(h->headers);
  h->headers = NULL;
  if (!h->depth) reap(h);
  /* h itself lives until the timer has closed, after any delivery on the
   * stack has seen h->freed and returned. */
  uv_close((uv_handle_t *)&h->timer, on_timer_closed);
}

static size_t discard(char *data, size_t size, size_t n, void *ud) {
  (void)data;
  (void)ud;
  return size * n;
}

int dyn__ehttp_post_sync(const char *url, const char *body, long timeout_ms, long *status) {
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) return DYN_ESYS;
  CURL *c = curl_easy_init();
  if (!c) return DYN_ENOMEM;
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_setopt(c, CURLOPT_URL, url);
  curl_easy_setopt(c, CURLOPT_COPYPOSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROXY, "");
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms);
  /* The answer is not needed; drop it rather than print it to stdout. */
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  CURLcode res = curl_easy_perform(c);
  if (res == CURLE_OK && status) curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, status);
  curl_easy_cleanup(c);
  curl_slist_free_all(hdr);
  return res == CURLE_OK ? DYN_OK : DYN_ECONTROL;
}
