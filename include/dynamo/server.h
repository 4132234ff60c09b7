/* dynamo/server.h - serving an endpoint.
 *
 * A handler receives each request's body and a dyn_request_t, through which
 * it streams 0..N response messages and then ends the stream, or fails it
 * with a message. The handler owns the request from the call on and must
 * finish it with exactly one dyn_request_end() or dyn_request_fail(), now or
 * later from the same loop; that also frees it. If the caller cancels or
 * disconnects first, the cancel callback runs once and sends become no-ops
 * that return DYN_ECANCELED; the handler still finishes the request.
 */
#ifndef DYNAMO_SERVER_H
#define DYNAMO_SERVER_H

#include "dynamo/export.h"

#include "dynamo/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_request dyn_request_t;

/* body is valid only during the call: copy what you keep. */
typedef void (*dyn_handler_fn)(dyn_request_t *req, const void *body,
                               size_t len, void *ud);
typedef void (*dyn_cancel_fn)(dyn_request_t *req, void *ud);

/* Serves ep from this process: binds the listener on first use, registers
 * the instance with discovery. DYN_EEXIST if ep is already served. */
DYN_EXTERN int dyn_endpoint_serve(dyn_endpoint_t *ep, dyn_handler_fn fn, void *ud);
/* Deregisters ep; requests in flight continue. */
DYN_EXTERN int dyn_endpoint_unserve(dyn_endpoint_t *ep);

DYN_EXTERN int dyn_request_send(dyn_request_t *req, const void *data, size_t len);
/* Sends one message made of head then body, as dyn_request_send would
 * their concatenation, without the caller joining them first: a small
 * typed prefix goes in front of a large payload (a KV chunk) that is then
 * copied once, into the connection's output, instead of twice. */
DYN_EXTERN int dyn_request_sendv(dyn_request_t *req, const void *head, size_t head_len,
                                 const void *body, size_t body_len);
DYN_EXTERN int dyn_request_end(dyn_request_t *req);
DYN_EXTERN int dyn_request_fail(dyn_request_t *req, const char *message);

DYN_EXTERN void dyn_request_on_cancel(dyn_request_t *req, dyn_cancel_fn fn, void *ud);
DYN_EXTERN int dyn_request_cancelled(const dyn_request_t *req);
/* The caller's request id (for logs and tracing). */
DYN_EXTERN uint64_t dyn_request_id(const dyn_request_t *req);
/* Milliseconds the caller allows from when it sent; 0 means no deadline. */
DYN_EXTERN uint32_t dyn_request_deadline_ms(const dyn_request_t *req);
DYN_EXTERN dyn_endpoint_t *dyn_request_endpoint(const dyn_request_t *req);
/* Bytes queued on the caller's connection and not yet written. Sends never
 * block and never drop, so a handler that streams faster than its caller
 * reads can watch this and slow down; the runtime itself applies no limit. */
DYN_EXTERN size_t dyn_request_pending(const dyn_request_t *req);
/* Opaque pointer for the handler's own state. */
DYN_EXTERN void dyn_request_set_data(dyn_request_t *req, void *data);
DYN_EXTERN void *dyn_request_data(const dyn_request_t *req);

#ifdef __cplusplus
}
#endif
#endif
