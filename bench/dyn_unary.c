/* dyn_unary.c - unary latency through dynamo: one 64-byte request, one
 * 64-byte response, end of stream.
 *
 * A plain C caller with the blocking API: dyn_client_call() opens the stream,
 * dyn_sync_next() returns the one response and then DYN_EOF, and each round
 * trip is timed (CLOCK_MONOTONIC) from the call until the end of the stream,
 * i.e. the whole unary call as an application sees it. The worker is
 * dyn_echo_worker (bench/echo/unary), in another process, reached over the
 * loopback request plane after discovery through the control plane.
 *
 * usage: dyn_unary [iterations=20000]   (DYN_CONTROL_SOCKET as for the worker)
 * prints: RESULT name=dynamo_unary p50_us=X p99_us=Y
 */
#define _GNU_SOURCE
#include "bench.h"
#include <dynamo/dynamo.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG 64
#define WARMUP 1000
#define TIMEOUT_MS 5000


/* One unary call; DYN_OK when exactly one 64-byte message then EOF came. */
static int call_once(dyn_client_t *c, const dyn_call_options_t *opt,
                     const char *body) {
  dyn_sync_stream_t *s = NULL;
  int rc = dyn_client_call(c, opt, body, MSG, &s);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_unary: call: %s\n", dyn_strerror(rc));
    return rc;
  }
  const void *data;
  size_t len = 0;
  rc = dyn_sync_next(s, &data, &len, TIMEOUT_MS);
  if (rc == DYN_OK && len != MSG) {
    fprintf(stderr, "dyn_unary: response of %zu bytes, expected %d\n", len, MSG);
    rc = DYN_EPROTO;
  } else if (rc == DYN_OK) {
    rc = dyn_sync_next(s, &data, &len, TIMEOUT_MS);
    if (rc == DYN_EOF) {
      rc = DYN_OK;
    } else if (rc == DYN_OK) {
      fprintf(stderr, "dyn_unary: more than one response\n");
      rc = DYN_EPROTO;
    }
  }
  if (rc != DYN_OK && rc != DYN_EPROTO) {
    const char *why = dyn_sync_error(s);
    fprintf(stderr, "dyn_unary: next: %s%s%s\n", dyn_strerror(rc),
            why ? ": " : "", why ? why : "");
  }
  dyn_sync_free(s);
  return rc;
}

int main(int argc, char **argv) {
  signal(SIGPIPE, SIG_IGN); /* a vanished peer is an error, not a death */
  long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
  if (iters <= 0) iters = 20000;

  dyn_runtime_options_t opts;
  dyn_runtime_options_init(&opts);
  dyn_runtime_t *rt = NULL;
  int rc = dyn_runtime_create(&opts, &rt);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_unary: runtime: %s\n", dyn_strerror(rc));
    return 1;
  }
  dyn_endpoint_t *ep = NULL;
  dyn_client_t *c = NULL;
  rc = dyn_runtime_endpoint(rt, "bench/echo/unary", &ep);
  if (rc == DYN_OK) rc = dyn_endpoint_client(ep, &c);
  if (rc == DYN_OK) rc = dyn_client_wait(c, 1, 5000);
  if (rc != DYN_OK) {
    fprintf(stderr, "dyn_unary: no instance of bench/echo/unary: %s\n", dyn_strerror(rc));
    if (c) dyn_client_free(c);
    dyn_runtime_shutdown(rt, 0);
    dyn_runtime_destroy(rt);
    return 1;
  }

  double *lat = malloc((size_t)iters * sizeof *lat);
  char body[MSG];
  memset(body, 'q', sizeof body);
  dyn_call_options_t opt;
  memset(&opt, 0, sizeof opt);
  opt.route = DYN_ROUTE_ROUND_ROBIN;
  int failed = lat == NULL;
  for (long i = 0; !failed && i < WARMUP + iters; i++) {
    double t0 = now_us();
    rc = call_once(c, &opt, body);
    double t1 = now_us();
    if (rc != DYN_OK) {
      fprintf(stderr, "dyn_unary: call %ld failed\n", i);
      failed = 1;
    } else if (i >= WARMUP) {
      lat[i - WARMUP] = t1 - t0;
    }
  }

  dyn_client_free(c);
  dyn_runtime_shutdown(rt, 0);
  dyn_runtime_destroy(rt);
  if (!failed) {
    bench_print_latency("dynamo_unary", lat, iters);
  }
  free(lat);
  return failed;
}
