/* nats_reqrep.c - NATS request-reply over loopback, through libnats.
 *
 * One process, two connections to the same nats-server:
 *  - the responder subscribes to "bench.echo" and answers every request with
 *    64 bytes. libnats runs the subscription callback on its own delivery
 *    thread, so the responder does not share a thread with the requester
 *    (the same shape as a separate process, minus a fork; both connections
 *    have their own socket to the server).
 *  - the requester calls natsConnection_Request() with a 64-byte payload and
 *    blocks for the reply; each round trip is timed with CLOCK_MONOTONIC.
 * Both connections set natsOptions_SetSendAsap(true): every publish is
 * flushed at once instead of waiting for the flusher thread, which is the
 * lowest-latency setting libnats offers.
 *
 * usage: nats_reqrep nats://127.0.0.1:PORT [iterations=20000]
 * prints: RESULT name=nats_reqrep p50_us=X p99_us=Y
 */
#define _GNU_SOURCE
#include "bench.h"
#include <nats/nats.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MSG 64
#define WARMUP 1000
#define SUBJECT "bench.echo"

static char g_reply[MSG];


static void on_request(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                       void *closure) {
  const char *reply = natsMsg_GetReply(msg);
  if (reply) natsConnection_Publish(nc, reply, g_reply, MSG);
  natsMsg_Destroy(msg);
}

static natsStatus connect_to(const char *url, natsConnection **nc) {
  natsOptions *opts = NULL;
  natsStatus s = natsOptions_Create(&opts);
  if (s == NATS_OK) s = natsOptions_SetURL(opts, url);
  if (s == NATS_OK) s = natsOptions_SetSendAsap(opts, true);
  if (s == NATS_OK) s = natsConnection_Connect(nc, opts);
  natsOptions_Destroy(opts);
  return s;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s nats://host:port [iterations]\n", argv[0]);
    return 2;
  }
  const char *url = argv[1];
  long iters = argc > 2 ? strtol(argv[2], NULL, 10) : 20000;
  if (iters <= 0) iters = 20000;
  memset(g_reply, 'r', sizeof g_reply);

  natsConnection *resp_nc = NULL, *req_nc = NULL;
  natsSubscription *sub = NULL;
  natsStatus s = connect_to(url, &resp_nc);
  if (s == NATS_OK) s = natsConnection_Subscribe(&sub, resp_nc, SUBJECT, on_request, NULL);
  /* Make sure the server has the subscription before the first request. */
  if (s == NATS_OK) s = natsConnection_FlushTimeout(resp_nc, 5000);
  if (s == NATS_OK) s = connect_to(url, &req_nc);
  if (s != NATS_OK) {
    fprintf(stderr, "nats_reqrep: setup failed: %s\n", natsStatus_GetText(s));
    return 1;
  }

  double *lat = malloc((size_t)iters * sizeof *lat);
  if (!lat) return 1;
  char payload[MSG];
  memset(payload, 'q', sizeof payload);
  int rc = 0;
  for (long i = 0; i < WARMUP + iters; i++) {
    natsMsg *reply = NULL;
    double t0 = now_us();
    s = natsConnection_Request(&reply, req_nc, SUBJECT, payload, MSG, 5000);
    double t1 = now_us();
    if (s != NATS_OK || natsMsg_GetDataLength(reply) != MSG) {
      fprintf(stderr, "nats_reqrep: request %ld failed: %s\n", i,
              s != NATS_OK ? natsStatus_GetText(s) : "short reply");
      natsMsg_Destroy(reply);
      rc = 1;
      break;
    }
    natsMsg_Destroy(reply);
    if (i >= WARMUP) lat[i - WARMUP] = t1 - t0;
  }

  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  natsConnection_Destroy(req_nc);
  natsConnection_Destroy(resp_nc);
  nats_Close();

  if (rc == 0) {
    bench_print_latency("nats_reqrep", lat, iters);
  }
  free(lat);
  return rc;
}
