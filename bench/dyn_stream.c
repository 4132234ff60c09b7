/* dyn_stream.c - streaming throughput through dynamo: 64-byte messages/s.
 *
 * Uses the callback API: dyn_client_generate() with on_data counting the
 * messages (and checking each is 64 bytes) and on_done recording the end,
 * driven by dyn_runtime_run() until the last stream ends and on_done calls
 * dyn_runtime_stop(). The worker is dyn_echo_worker (bench/echo/stream),
 * whose request body is the decimal message count.
 *
 *   1. one stream of M messages                 -> dynamo_stream_1
 *   2. 64 concurrent streams of M/64 messages   -> dynamo_stream_64
 * All streams of a run share the one pooled connection to the worker.
 * Time runs from the first dyn_client_generate() to the last on_done.
 *
 * usage: dyn_stream [M=2000000]   (DYN_CONTROL_SOCKET as for the worker)
 * prints: RESULT name=dynamo_stream_1 msgs_per_s=X
 *         RESULT name=dynamo_stream_64 msgs_per_s=X
 */
#define _GNU_SOURCE
#include <dynamo/dynamo.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG 64
#define MAX_STREAMS 64

typedef struct run {
  dyn_runtime_t *rt;
  int open;           /* streams not yet done */
  int failed;         /* a stream ended with an error */
  uint64_t msgs;      /* messages received, all streams */
  uint64_t bad_len;   /* messages that were not 64 bytes */
} run_t;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  run_t *r = ud;
  r->msgs++;
  if (len != MSG) r->bad_len++;
}

static void on_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  run_t *r = ud;
  if (status != DYN_OK) {
    fprintf(stderr, "dyn_stream: stream ended with %s%s%s\n", dyn_strerror(status),
            message ? ": " : "", message ? message : "");
    r->failed = 1;
  }
  if (--r->open == 0) dyn_runtime_stop(r->rt);
}

/* Runs `streams` concurrent streams of `each` messages; returns msgs/s or a
 * negative number on failure. */
static double run_streams(dyn_runtime_t *rt, dyn_client_t *c, int streams,
                          uint64_t each) {
  static const dyn_stream_callbacks_t cb = {on_data, on_done};
  run_t r = {.rt = rt};
  char body[32];
  int blen = snprintf(body, sizeof body, "%" PRIu64, each);
  dyn_call_options_t opt;
  memset(&opt, 0, sizeof opt);
  opt.route = DYN_ROUTE_ROUND_ROBIN;

  double t0 = now_s();
  for (int i = 0; i < streams; i++) {
    int rc = dyn_client_generate(c, &opt, body, (size_t)blen, &cb, &r, NULL);
    if (rc != DYN_OK) {
      fprintf(stderr, "dyn_stream: generate: %s\n", dyn_strerror(rc));
      r.failed = 1;
      break;
    }
    r.open++;
  }
  if (r.open > 0) dyn_runtime_run(rt);
  double t1 = now_s();

  uint64_t want = each * (uint64_t)streams;
  if (r.failed || r.open != 0 || r.bad_len || r.msgs != want) {
    fprintf(stderr,
            "dyn_stream: %d x %" PRIu64 ": got %" PRIu64 " of %" PRIu64
            " messages (%" PRIu64 " not %d bytes, %d streams open)\n",
            streams, each, r.msgs, want, r.bad_len, MSG, r.open);
    return -1;
  }
  return (double)r.msgs / (t1 - t0);
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error, not a death */
  long long m = argc > 1 ? strtoll(argv[1], NULL, 10) : 2000000;
  if (m < MAX_STREAMS) m = 2000000;
  uint64_t total = (uint64_t)m;

  dyn_runtime_options_t opts;
  dyn_runtime_options_init(&opts);
  dyn_runtime_t *rt = NULL;
  int rc = dyn_runtime_create(&opts, &rt);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_stream: runtime: %s\n", dyn_strerror(rc));
    return 1;
  }
  dyn_endpoint_t *ep = NULL;
  dyn_client_t *c = NULL;
  rc = dyn_runtime_endpoint(rt, "bench/echo/stream", &ep);
  if (rc == DYN_OK) rc = dyn_endpoint_client(ep, &c);
  if (rc == DYN_OK) rc = dyn_client_wait(c, 1, 5000);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_stream: no instance of bench/echo/stream: %s\n", dyn_strerror(rc));
    if (c) dyn_client_free(c);
    dyn_runtime_shutdown(rt, 0);
    dyn_runtime_destroy(rt);
    return 1;
  }

  int failed = 0;
  /* Warm up the connection and both sides' buffers. */
  if (run_streams(rt, c, 1, total / 20 + 1) < 0 ||
      run_streams(rt, c, MAX_STREAMS, total / 20 / MAX_STREAMS + 1) < 0)
    failed = 1;

  double one = failed ? -1 : run_streams(rt, c, 1, total);
  if (one < 0) {
    failed = 1;
  } else {
    printf("RESULT name=dynamo_stream_1 msgs_per_s=%.0f\n", one);
    fflush(stdout);
  }
  double many = failed ? -1 : run_streams(rt, c, MAX_STREAMS, total / MAX_STREAMS);
  if (many < 0) {
    failed = 1;
  } else {
    printf("RESULT name=dynamo_stream_64 msgs_per_s=%.0f\n", many);
    fflush(stdout);
  }

  dyn_client_free(c);
  dyn_runtime_shutdown(rt, 0);
  dyn_runtime_destroy(rt);
  return failed;
}
