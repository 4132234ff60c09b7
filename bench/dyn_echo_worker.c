/* dyn_echo_worker.c - the worker the dynamo benchmarks call.
 *
 * Serves two endpoints from one process, through the public API only:
 *   bench/echo/unary   answers every request with one 64-byte message.
 *   bench/echo/stream  the body is a decimal count N; answers with N 64-byte
 *                      messages, then ends the stream.
 *
 * Streaming without unbounded memory: dyn_request_send() only appends to the
 * connection's output buffer (flushed before the loop sleeps), and the public
 * API has no "queued bytes" or "writable" signal. So the worker sends at most
 * CHUNK messages per loop turn, shared by every open stream, from a uv_check
 * handle, and before each turn asks libuv how much of the loop's TCP output
 * is still waiting in uv_write() (uv_stream_get_write_queue_size() over
 * uv_walk(dyn_runtime_loop(rt))). While anything waits, it pauses: the loop
 * then sleeps until the socket drains, and the write's completion wakes it.
 * While nothing waits, a uv_idle handle keeps the loop from sleeping so the
 * next chunk follows at once. Queued output stays within about two chunks.
 *
 * SIGTERM/SIGINT stop the loop; main() then fails any stream still open,
 * calls dyn_runtime_shutdown(rt, 1000) and exits.
 *
 * usage: dyn_echo_worker   (DYN_CONTROL_SOCKET names the control plane)
 * prints "READY <address>" on stdout once both endpoints are served.
 */
#define _GNU_SOURCE
#include <dynamo/dynamo.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG 64
#define CHUNK 4096 /* messages per loop turn, over all streams */
#define MAX_COUNT 1000000000ull

typedef struct streamer {
  struct streamer *next;
  dyn_request_t *req;
  uint64_t left;
  int cancelled;
} streamer_t;

static dyn_runtime_t *g_rt;
static uv_check_t g_check;
static uv_idle_t g_idle;
static uv_signal_t g_sigterm, g_sigint;
static streamer_t *g_streams;
static size_t g_nstreams;
static int g_pumping;
static char g_msg[MSG];

/* ---- unary ---------------------------------------------------------------- */

static void on_unary(dyn_request_t *req, const void *body, size_t len, void *ud) {
  int rc = dyn_request_send(req, g_msg, MSG);
  if (rc == DYN_OK)
    dyn_request_end(req);
  else
    dyn_request_fail(req, dyn_strerror(rc));
}

/* ---- streaming ------------------------------------------------------------ */

static void walk_queue(uv_handle_t *h, void *arg) {
  if (h->type == UV_TCP && !uv_is_closing(h))
    *(size_t *)arg += uv_stream_get_write_queue_size((uv_stream_t *)h);
}

static size_t tcp_write_queue(void) {
  size_t n = 0;
  uv_walk(dyn_runtime_loop(g_rt), walk_queue, &n);
  return n;
}

static void pump_stop(void) {
  if (!g_pumping) return;
  uv_check_stop(&g_check);
  uv_idle_stop(&g_idle);
  g_pumping = 0;
}

static void remove_stream(streamer_t **pp) {
  streamer_t *s = *pp;
  *pp = s->next;
  g_nstreams--;
  free(s);
}

static void on_idle(uv_idle_t *h) { (void)h; /* only keeps the loop awake */ }

static void pump(uv_check_t *h) {
  (void)h;
  if (!g_streams) {
    pump_stop();
    return;
  }
  if (tcp_write_queue() > 0) {
    /* The socket is full: sleep until the pending write completes. */
    uv_idle_stop(&g_idle);
    return;
  }
  uint64_t share = CHUNK / (g_nstreams ? g_nstreams : 1);
  if (share < 16) share = 16;
  for (streamer_t **pp = &g_streams; *pp;) {
    streamer_t *s = *pp;
    uint64_t n = s->left < share ? s->left : share;
    int rc = DYN_OK;
    for (uint64_t i = 0; i < n && rc == DYN_OK && !s->cancelled; i++)
      rc = dyn_request_send(s->req, g_msg, MSG);
    if (rc == DYN_OK && !s->cancelled) s->left -= n;
    if (s->cancelled || rc != DYN_OK) {
      /* The caller went away: the handler still finishes the request. */
      dyn_request_end(s->req);
      remove_stream(pp);
    } else if (s->left == 0) {
      dyn_request_end(s->req);
      remove_stream(pp);
    } else {
      pp = &s->next;
    }
  }
  if (!g_streams)
    pump_stop();
  else
    uv_idle_start(&g_idle, on_idle);
}

static void pump_start(void) {
  if (g_pumping) return;
  uv_check_start(&g_check, pump);
  uv_idle_start(&g_idle, on_idle);
  g_pumping = 1;
}

static void on_stream_cancel(dyn_request_t *req, void *ud) {
  ((streamer_t *)ud)->cancelled = 1;
}

static void on_stream(dyn_request_t *req, const void *body, size_t len, void *ud) {
  char num[32];
  if (len == 0 || len >= sizeof num) {
    dyn_request_fail(req, "body must be a decimal message count");
    return;
  }
  memcpy(num, body, len);
  num[len] = 0;
  char *end;
  errno = 0;
  unsigned long long n = strtoull(num, &end, 10);
  if (errno || *end || end == num || n > MAX_COUNT) {
    dyn_request_fail(req, "body must be a decimal message count");
    return;
  }
  if (n == 0) {
    dyn_request_end(req);
    return;
  }
  streamer_t *s = calloc(1, sizeof *s);
  if (!s) {
    dyn_request_fail(req, "out of memory");
    return;
  }
  s->req = req;
  s->left = n;
  dyn_request_on_cancel(req, on_stream_cancel, s);
  s->next = g_streams;
  g_streams = s;
  g_nstreams++;
  pump_start();
}

/* ---- lifecycle ------------------------------------------------------------ */

static void on_signal(uv_signal_t *h, int signum) {
  dyn_log(DYN_LOG_INFO, "echo worker: signal %d, shutting down", signum);
  dyn_runtime_stop(g_rt);
}

static int serve(const char *path, dyn_handler_fn fn) {
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(g_rt, path, &ep);
  if (rc == DYN_OK) rc = dyn_endpoint_serve(ep, fn, NULL);
  if (rc != DYN_OK)
    fprintf(stderr, "dyn_echo_worker: serving %s: %s\n", path, dyn_strerror(rc));
  return rc;
}

int main(void) {
  signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error, not a death */
  memset(g_msg, 'r', sizeof g_msg);
  dyn_runtime_options_t opts;
  dyn_runtime_options_init(&opts);
  int rc = dyn_runtime_create(&opts, &g_rt);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_echo_worker: runtime: %s\n", dyn_strerror(rc));
    return 1;
  }
  uv_loop_t *loop = dyn_runtime_loop(g_rt);
  uv_check_init(loop, &g_check);
  uv_idle_init(loop, &g_idle);
  uv_signal_init(loop, &g_sigterm);
  uv_signal_init(loop, &g_sigint);
  uv_signal_start(&g_sigterm, on_signal, SIGTERM);
  uv_signal_start(&g_sigint, on_signal, SIGINT);

  if (serve("bench/echo/unary", on_unary) != DYN_OK ||
      serve("bench/echo/stream", on_stream) != DYN_OK) {
    dyn_runtime_shutdown(g_rt, 0);
    dyn_runtime_destroy(g_rt);
    return 1;
  }
  printf("READY %s\n", dyn_runtime_address(g_rt));
  fflush(stdout);

  rc = dyn_runtime_run(g_rt);
  if (rc < 0) fprintf(stderr, "dyn_echo_worker: run: %s\n", dyn_strerror(rc));

  /* Streams still open were cut short: say so rather than end them. */
  pump_stop();
  while (g_streams) {
    dyn_request_fail(g_streams->req, "worker shutting down");
    remove_stream(&g_streams);
  }
  uv_close((uv_handle_t *)&g_check, NULL);
  uv_close((uv_handle_t *)&g_idle, NULL);
  uv_close((uv_handle_t *)&g_sigterm, NULL);
  uv_close((uv_handle_t *)&g_sigint, NULL);
  int cancelled = dyn_runtime_shutdown(g_rt, 1000);
  if (cancelled > 0)
    dyn_log(DYN_LOG_WARN, "echo worker: %d requests cancelled at shutdown", cancelled);
  dyn_runtime_destroy(g_rt);
  return 0;
}
