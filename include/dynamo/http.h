/* dynamo/http.h - an HTTP/1.1 server on a dynamo (libuv) loop.
 *
 * For the Python SDK's @api endpoints and the OpenAI-compatible frontend:
 * exact-path routes, whole-body requests, complete or streamed responses
 * (chunked transfer encoding; Server-Sent Events on top), keep-alive, and
 * a callback when the client goes away so upstream work can be cancelled.
 *
 *   dyn_http_server_t *s;
 *   dyn_http_server_start(dyn_runtime_loop(rt), "0.0.0.0", 8000, &s);
 *   dyn_http_route(s, "POST", "/v1/chat/completions", on_chat, ctx);
 *
 * Threading: a server, its requests and every call below belong to the
 * thread that runs the loop. Nothing takes a lock.
 *
 * Request lifetime: a handler receives a request it owns until it calls
 * dyn_http_respond(), dyn_http_error() or dyn_http_finish() exactly once;
 * that call releases the request, and the pointer is dead afterwards. The
 * handler may answer inline or later from any callback on the same loop.
 * If the client disconnects first, the request stays valid (writes return
 * DYN_ECLOSED; the on_close callback, if set, runs once) and the handler
 * must still release it with one of those three calls, which then return
 * DYN_ECLOSED. The on_close callback itself may make that call.
 *
 * Connection handling: HTTP/1.0 and 1.1, keep-alive, one request at a time
 * per connection (pipelined requests wait their turn). While a request is
 * in flight the connection keeps reading, so a client that closes (or
 * half-closes) its side is noticed at once. Malformed requests (an
 * HTTP/0.9 request line too) get 400 and their connection is closed; other
 * connections are not affected. HEAD is answered by a path's GET route
 * (headers only). Slow, idle and greedy clients meet the limits below.
 */
#ifndef DYNAMO_HTTP_H
#define DYNAMO_HTTP_H

#include "dynamo/export.h"

#include <stddef.h>
#include <uv.h>

#include "dynamo/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dyn_http_server dyn_http_server_t;
typedef struct dyn_http_req dyn_http_req_t;

typedef void (*dyn_http_handler_fn)(dyn_http_req_t *req, void *ud);
typedef void (*dyn_http_close_fn)(dyn_http_req_t *req, void *ud);

/* What one server lets its clients hold: time, connections, requests and
 * memory. Past a limit the server answers and closes rather than buffer
 * more (see each field), so a Frontend's memory stays bounded however its
 * clients behave; docs/limits.md states the bound the defaults give.
 * Services take them from their config under the names of
 * dyn_http_limit_name(), e.g. `http_max_connections: 4096`. */
typedef struct dyn_http_limits {
  /* Largest request body; larger ones get 413. */
  size_t max_body;
  /* Request bytes held across all connections: the heads and bodies being
   * read plus the bodies of requests in flight. A request that would go
   * past it gets 503 with Retry-After and its connection is closed. */
  size_t max_buffered;
  /* Response bytes a streaming request may have waiting for a client that
   * does not read; a write past it (dyn_http_write, dyn_http_sse) closes
   * the connection, so on_close fires and the handler cancels its work. */
  size_t max_output;
  /* Open connections. At the cap a new one makes the server close its
   * longest-idle connection, or is answered 503 and closed when none is
   * idle. */
  unsigned max_connections;
  /* Requests handed to handlers and not yet released; more get 503 with
   * Retry-After (the connection stays open). */
  unsigned max_inflight;
  /* A request's head (request line and headers) must arrive whole within
   * this long of its first byte (of the accept, on a new connection);
   * else 408 and close. */
  unsigned header_timeout_ms;
  /* The body must keep a minimum rate: every body_timeout_ms it must
   * bring body_min_rate bytes a second (so a trickle is cut off however
   * fast the body began); else 408 and close. body_min_rate 0:
   * body_timeout_ms bounds the whole body. */
  unsigned body_timeout_ms;
  unsigned body_min_rate; /* bytes per second */
  /* A keep-alive connection between requests is closed after this long. */
  unsigned idle_timeout_ms;
} dyn_http_limits_t;

#define DYN_HTTP_DEFAULT_MAX_BODY (16u * 1024u * 1024u)
#define DYN_HTTP_DEFAULT_MAX_BUFFERED (64u * 1024u * 1024u)
#define DYN_HTTP_DEFAULT_MAX_OUTPUT (256u * 1024u)
#define DYN_HTTP_DEFAULT_MAX_CONNECTIONS 1024u
#define DYN_HTTP_DEFAULT_MAX_INFLIGHT 256u
#define DYN_HTTP_DEFAULT_HEADER_TIMEOUT_MS 10000u
#define DYN_HTTP_DEFAULT_BODY_TIMEOUT_MS 10000u
#define DYN_HTTP_DEFAULT_BODY_MIN_RATE (16u * 1024u)
#define DYN_HTTP_DEFAULT_IDLE_MS 60000u

/* Binds host:port (an IPv4 or IPv6 literal such as "0.0.0.0" or "::";
 * NULL or "localhost": 127.0.0.1; port 0: any free port) and starts
 * accepting on loop with the default limits. DYN_EINVAL for a host that
 * is not numeric, DYN_ESYS (logged) when the bind or listen fails; its
 * listener handle is then freed by the loop's next run. */
DYN_EXTERN int dyn_http_server_start(uv_loop_t *loop, const char *host, int port,
                          dyn_http_server_t **out);
/* The bound port (the chosen one when started with port 0). */
DYN_EXTERN int dyn_http_server_port(const dyn_http_server_t *s);
/* The defaults above. */
DYN_EXTERN void dyn_http_limits_default(dyn_http_limits_t *l);
/* Replaces the server's limits (any time; connections already open get the
 * new ones too). DYN_EINVAL, naming the field in the log, for a zero
 * limit or a timeout under 10 ms. */
DYN_EXTERN int dyn_http_server_set_limits(dyn_http_server_t *s, const dyn_http_limits_t *l);
DYN_EXTERN void dyn_http_server_limits(const dyn_http_server_t *s, dyn_http_limits_t *out);
/* The limits as config keys: dyn_http_limit_name(i) is the i-th key
 * ("http_max_connections", ...; NULL past the last), and
 * dyn_http_limits_set() sets the field a key names: DYN_ENOTFOUND for no
 * such key, DYN_EINVAL for a value out of range (negative, zero, too big). */
DYN_EXTERN const char *dyn_http_limit_name(size_t i);
DYN_EXTERN int dyn_http_limits_set(dyn_http_limits_t *l, const char *name, long long value);
/* Requests in flight and request bytes held right now. */
DYN_EXTERN size_t dyn_http_server_inflight(const dyn_http_server_t *s);
DYN_EXTERN size_t dyn_http_server_buffered(const dyn_http_server_t *s);
/* Open connections right now. */
DYN_EXTERN size_t dyn_http_server_connections(const dyn_http_server_t *s);
/* Stops listening and closes every connection; requests in flight get
 * their on_close (inside this call) and stay valid until released. The
 * server's memory goes once the loop has run the handles' close callbacks,
 * so keep running the loop (a uv_run(loop, UV_RUN_DEFAULT) returns when
 * nothing else is active). Do not use s after this call. */
DYN_EXTERN void dyn_http_server_stop(dyn_http_server_t *s);

/* Routes method ("GET", "POST", ...; NULL: any) + exact path (no query;
 * compared as sent, without percent-decoding) to fn. A path with routes
 * but none for the method answers 405 with an Allow header; an unknown
 * path answers 404. Both as JSON errors (see dyn_http_error). DYN_EEXIST
 * if that method and path are taken. */
DYN_EXTERN int dyn_http_route(dyn_http_server_t *s, const char *method, const char *path,
                   dyn_http_handler_fn fn, void *ud);

/* Request accessors; the strings live as long as the request. */
DYN_EXTERN const char *dyn_http_method(const dyn_http_req_t *req);  /* "POST" */
DYN_EXTERN const char *dyn_http_path(const dyn_http_req_t *req);    /* "/v1/models" */
DYN_EXTERN const char *dyn_http_query(const dyn_http_req_t *req);   /* after '?'; "" if none */
DYN_EXTERN const char *dyn_http_target(const dyn_http_req_t *req);  /* as sent: "/a?b" */
/* Case-insensitive; the first such header or NULL. */
DYN_EXTERN const char *dyn_http_header(const dyn_http_req_t *req, const char *name);
/* Header i in the order sent (0 <= i < count); DYN_ENOTFOUND past the end. */
DYN_EXTERN size_t dyn_http_header_count(const dyn_http_req_t *req);
DYN_EXTERN int dyn_http_header_at(const dyn_http_req_t *req, size_t i, const char **name,
                       const char **value);
/* The whole body (never NULL; NUL-terminated for convenience, the NUL not
 * counted), de-chunked when sent chunked. len may be NULL. */
DYN_EXTERN const char *dyn_http_body(const dyn_http_req_t *req, size_t *len);
/* "ip:port" of the client. */
DYN_EXTERN const char *dyn_http_peer(const dyn_http_req_t *req);

/* Adds a response header (before respond/start). Content-Type,
 * Content-Length, Transfer-Encoding and Connection are the server's. */
DYN_EXTERN int dyn_http_set_header(dyn_http_req_t *req, const char *name, const char *value);

/* A complete response with Content-Length; releases req. content_type may
 * be NULL (none sent). Returns DYN_ECLOSED if the client is gone (req is
 * released all the same), DYN_EINVAL if a streamed response was started
 * (req not released). */
DYN_EXTERN int dyn_http_respond(dyn_http_req_t *req, int status, const char *content_type,
                     const void *body, size_t len);
/* dyn_http_respond with {"error":{"message":...,"type":...,"code":status}},
 * the shape OpenAI clients expect; releases req. */
DYN_EXTERN int dyn_http_error(dyn_http_req_t *req, int status, const char *message);
/* The OpenAI error "type" for an HTTP status: BadRequestError,
 * NotFoundError, ServiceUnavailableError, InternalServerError, ... */
DYN_EXTERN const char *dyn_http_error_type(int status);

/* Streaming: the status line and headers now, then any number of writes,
 * then dyn_http_finish. HTTP/1.1 clients get chunked encoding; HTTP/1.0
 * clients get the body until the connection closes. Writes never block:
 * what the socket does not take at once is buffered (dyn_http_pending says
 * how much, for callers that want to slow down). A write made while more
 * than the limits' max_output is still waiting closes the connection
 * instead (a client that stopped reading): it returns DYN_ECLOSED and
 * on_close runs from the loop. After the client went away every call
 * returns DYN_ECLOSED. text/event-stream responses get Cache-Control:
 * no-cache unless the handler set one. */
DYN_EXTERN int dyn_http_start(dyn_http_req_t *req, int status, const char *content_type);
DYN_EXTERN int dyn_http_write(dyn_http_req_t *req, const void *data, size_t len);
/* One Server-Sent Event: "data: <line>\n" for each line of data, then an
 * empty line. */
DYN_EXTERN int dyn_http_sse(dyn_http_req_t *req, const void *data, size_t len);
/* Ends the response and releases req. Called on a request that was never
 * started, it answers 500 (a handler bug) or, once the client has gone,
 * just releases it (returning DYN_ECLOSED). */
DYN_EXTERN int dyn_http_finish(dyn_http_req_t *req);
/* Bytes written but not yet taken by the socket on req's connection
 * (bounded by the limits' max_output). */
DYN_EXTERN size_t dyn_http_pending(const dyn_http_req_t *req);

/* fn(req, ud) runs once if the client disconnects (or the server stops)
 * before req was released; never after. Replaces an earlier callback.
 * DYN_ECLOSED (fn not kept) if the client is already gone. */
DYN_EXTERN int dyn_http_on_close(dyn_http_req_t *req, dyn_http_close_fn fn, void *ud);

#ifdef __cplusplus
}
#endif
#endif
