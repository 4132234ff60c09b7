/* dynamo/client.h - calling an endpoint.
 *
 * A client follows the live instances of one endpoint through a discovery
 * watch and sends each request to one of them, chosen at random, in turn,
 * or by id. A request opens a stream on the (pooled) connection to that
 * instance's process; responses come back on it as they are produced.
 *
 * Two APIs over one mechanism:
 *  - callbacks: dyn_client_generate() calls on_data for each message and
 *    on_done exactly once; the stream is freed after on_done returns.
 *  - blocking: dyn_client_call() + dyn_sync_next() drive the runtime's loop
 *    on the calling thread until the next message arrives. Use it from the
 *    loop's thread while nothing else runs the loop (a plain C program).
 */
#ifndef DYNAMO_CLIENT_H
#define DYNAMO_CLIENT_H

#include "dynamo/export.h"

#include "dynamo/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_client dyn_client_t;
typedef struct dyn_stream dyn_stream_t;
typedef struct dyn_sync_stream dyn_sync_stream_t;

typedef enum dyn_route {
  DYN_ROUTE_RANDOM = 0,
  DYN_ROUTE_ROUND_ROBIN = 1,
  DYN_ROUTE_DIRECT = 2
} dyn_route_t;

/* Creates a client and starts watching ep's instances. */
DYN_EXTERN int dyn_endpoint_client(dyn_endpoint_t *ep, dyn_client_t **out);
/* Cancels the client's open streams and frees it. */
DYN_EXTERN void dyn_client_free(dyn_client_t *c);

/* How long a request waits for a first instance when none is live:
 * 0 (default) fails at once with DYN_ENOINSTANCE. */
DYN_EXTERN void dyn_client_set_wait(dyn_client_t *c, int wait_ms);

/* Drives the loop until the first discovery snapshot arrived and at least
 * min_instances are live, or timeout_ms passed (DYN_ETIMEDOUT). Blocking. */
DYN_EXTERN int dyn_client_wait(dyn_client_t *c, size_t min_instances, int timeout_ms);

/* Live instance ids, up to cap of them; returns how many are live. */
DYN_EXTERN size_t dyn_client_instances(const dyn_client_t *c, uint64_t *ids, size_t cap);
typedef void (*dyn_instances_fn)(dyn_client_t *c, void *ud);
/* Called after each change of the live list. */
DYN_EXTERN void dyn_client_on_change(dyn_client_t *c, dyn_instances_fn fn, void *ud);

typedef struct dyn_stream_callbacks {
  /* data is valid only during the call. */
  void (*on_data)(dyn_stream_t *s, const void *data, size_t len, void *ud);
  /* status: DYN_OK on a normal end, else the failure; message names it. */
  void (*on_done)(dyn_stream_t *s, int status, const char *message, void *ud);
} dyn_stream_callbacks_t;

typedef struct dyn_call_options {
  dyn_route_t route;
  uint64_t instance_id; /* for DYN_ROUTE_DIRECT */
  uint32_t deadline_ms; /* 0: none; past it the stream fails ETIMEDOUT */
  uint64_t request_id;  /* 0: the runtime picks one */
} dyn_call_options_t;

/* Starts a request. opt may be NULL (random routing, no deadline). On
 * DYN_OK *out (if not NULL) names the stream until on_done. Failures known
 * at once (bad arguments, a message over the maximum frame size, no live
 * instance while the client does not wait) return an error and call
 * nothing; all later ones arrive through on_done, which never runs inside
 * this call (an end found while dispatching is reported from the loop). */
DYN_EXTERN int dyn_client_generate(dyn_client_t *c, const dyn_call_options_t *opt,
                        const void *body, size_t len,
                        const dyn_stream_callbacks_t *cb, void *ud,
                        dyn_stream_t **out);

/* Tells the instance to stop and ends the stream with DYN_ECANCELED:
 * on_done runs before this returns. */
DYN_EXTERN void dyn_stream_cancel(dyn_stream_t *s);
DYN_EXTERN uint64_t dyn_stream_instance_id(const dyn_stream_t *s);

/* Blocking API. */
DYN_EXTERN int dyn_client_call(dyn_client_t *c, const dyn_call_options_t *opt,
                    const void *body, size_t len, dyn_sync_stream_t **out);
/* DYN_OK with the next message in *data (valid until the next call),
 * DYN_EOF at the normal end, DYN_ETIMEDOUT if nothing came within
 * timeout_ms (< 0 waits without limit; the stream stays open), or the
 * stream's failure (see dyn_sync_error()). */
DYN_EXTERN int dyn_sync_next(dyn_sync_stream_t *s, const void **data, size_t *len,
                  int timeout_ms);
/* The failure message; "" while the stream is open. Never NULL. */
DYN_EXTERN const char *dyn_sync_error(const dyn_sync_stream_t *s);
/* Cancels the stream if still open and frees it. */
DYN_EXTERN void dyn_sync_free(dyn_sync_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
