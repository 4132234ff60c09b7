/* core.h - what the files of the dynamo._core extension share.
 *
 * The extension wraps libdynamo's public API for dynamo/runtime.py and the
 * SDK. Everything runs on the asyncio thread with the GIL held: Python
 * drives the C loop (Runtime.poll() when the loop's fd is readable or its
 * timer is due) and C calls back into Python from inside poll(). No thread
 * hand-off, no GIL release and reacquire per message. The Python layer
 * turns these objects into awaitables and async iterators.
 *
 * One file per type: runtime.c, request.c (a request being served),
 * client.c, stream.c (a request being made), subscription.c, http.c
 * (HttpServer and HttpRequest, for @api and /health), metrics.c (Metric,
 * the process's Prometheus registry), module.c (the module and its
 * functions). Each type's struct stays private to its file; the
 * others reach it only through the functions below.
 *
 * Ownership: while the C side may still call back with an object as its
 * user data, it holds a reference to that object: a Request until it is
 * finished, a Stream until its on_done, an HttpRequest until it is
 * answered. Callables handed to C (endpoint handlers, route handlers,
 * subscription callbacks) are kept alive by the object that registered
 * them, for as long as it lives.
 */
#ifndef DYN_PY_CORE_H
#define DYN_PY_CORE_H

/* Python.h first: it sets feature macros the C library headers read. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "dynamo/dynamo.h"

extern PyTypeObject RuntimeType, RequestType, ClientType, StreamType, SubscriptionType,
    HttpServerType, HttpRequestType, MetricType;

/* module.c: raises DynamoError(status, message); message NULL means the
 * status's own text. Returns NULL, for `return core_raise_status(...)`. */
PyObject *core_raise_status(int status, const char *message);
/* module.c: reports the exception a Python callback raised, which C cannot
 * pass up, as unraisable; where names the callback. */
void core_report_callback_error(const char *where);

/* request.c: the endpoint handler given to dyn_endpoint_serve; ud is the
 * Python callable, called with a new Request. */
void core_on_request(dyn_request_t *req, const void *body, size_t len, void *ud);

/* client.c: a Client of ep, which keeps runtime alive. */
PyObject *core_client_new(PyObject *runtime, dyn_endpoint_t *ep);
/* client.c: frees the C client; the object stays, closed. */
void core_client_close(PyObject *client);

/* stream.c: sends one request through c; a Stream, or NULL with the
 * exception set. */
PyObject *core_stream_open(dyn_client_t *c, const dyn_call_options_t *opt, const void *body,
                           size_t len);

/* subscription.c: subscribes callback(subject, data) to subject; a
 * Subscription that keeps callback alive, or NULL with the exception set. */
PyObject *core_subscription_new(dyn_runtime_t *rt, const char *subject, PyObject *callback);

/* metrics.c: metrics_render(): the process's registry as Prometheus text
 * (bytes). */
PyObject *core_metrics_render(PyObject *m, PyObject *unused);

/* http.c: an HttpServer listening on host:port on loop. */
PyObject *core_http_server_start(uv_loop_t *loop, const char *host, int port);

#endif
