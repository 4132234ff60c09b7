/* hello_services.c - the hello-world graph as C services.
 *
 *   dynamo serve build/examples/hello_world_c/libhello_services.so:Frontend
 *   curl -N -X POST localhost:8000/generate -d '{"text": "hello world"}'
 *
 * Backend streams one message per word of "TEXT-back"; Middle sends
 * "TEXT-mid" to Backend and relays each answer prefixed with "Middle: ";
 * Frontend serves POST /generate over HTTP and relays Middle's stream as
 * Server-Sent Events prefixed with "Frontend: ".
 * Payloads are JSON ({"text": ...} in, JSON strings out), exactly as the
 * Python hello world sends, so either half may be the Python one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dynamo/http.h"
#include "dynamo/service.h"

static char *request_text(const void *body, size_t len) {
  json_error_t err;
  json_t *v = json_loadb(body, len, JSON_DECODE_ANY, &err);
  /* Accept a serialized model sent as a JSON string, as Python callers do. */
  if (json_is_string(v)) {
    json_t *inner = json_loads(json_string_value(v), 0, &err);
    json_decref(v);
    v = inner;
  }
  const char *t = json_string_value(json_object_get(v, "text"));
  char *out = t ? strdup(t) : NULL;
  json_decref(v);
  return out;
}

static void send_string(dyn_request_t *req, const char *s) {
  json_t *v = json_string(s);
  char *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  dyn_request_send(req, out, strlen(out));
  free(out);
  json_decref(v);
}

static void backend_generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  const char *suffix = dyn_service_config_string(ud, "message", "back");
  char *text = request_text(body, len);
  if (!text) {
    dyn_request_fail(req, "request must be {\"text\": string}");
    return;
  }
  size_t n = strlen(text) + strlen(suffix) + 2;
  char *full = malloc(n);
  snprintf(full, n, "%s-%s", text, suffix);
  char word[1024];
  for (char *save, *w = strtok_r(full, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
    snprintf(word, sizeof word, "Backend: %s", w);
    send_string(req, word);
  }
  dyn_request_end(req);
  free(full);
  free(text);
}

/* Middle relays Backend's stream as it arrives; a cancel travels down. */
static void relay_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  json_error_t err;
  json_t *v = json_loadb(data, len, JSON_DECODE_ANY, &err);
  if (json_is_string(v)) {
    char msg[1024];
    snprintf(msg, sizeof msg, "Middle: %s", json_string_value(v));
    send_string(ud, msg);
  }
  json_decref(v);
}

static void relay_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  if (status == DYN_OK) dyn_request_end(ud);
  else dyn_request_fail(ud, message);
}

static void cancel_downstream(dyn_request_t *req, void *ud) { dyn_stream_cancel(ud); }

static void middle_generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  const char *suffix = dyn_service_config_string(ud, "message", "mid");
  char *text = request_text(body, len);
  if (!text) {
    dyn_request_fail(req, "request must be {\"text\": string}");
    return;
  }
  json_t *v = json_pack("{s:s++}", "text", text, "-", suffix);
  char *out = json_dumps(v, JSON_COMPACT);
  static const dyn_stream_callbacks_t cb = {relay_data, relay_done};
  dyn_stream_t *s;
  int rc = dyn_client_generate(dyn_service_client(ud, "Backend", "generate"), NULL, out,
                               strlen(out), &cb, req, &s);
  if (rc) dyn_request_fail(req, dyn_strerror(rc));
  else dyn_request_on_cancel(req, cancel_downstream, s);
  free(out);
  json_decref(v);
  free(text);
}

/* Frontend: an HTTP request becomes a Middle stream; a client that leaves
 * cancels it, and the cancel travels on to Backend. */
typedef struct call {
  dyn_http_req_t *http;
  dyn_stream_t *stream;
} call_t;

static void front_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  call_t *c = ud;
  json_error_t err;
  json_t *v = json_loadb(data, len, JSON_DECODE_ANY, &err);
  if (json_is_string(v)) {
    json_t *out = json_sprintf("Frontend: %s", json_string_value(v));
    char *text = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
    dyn_http_sse(c->http, text, strlen(text));
    free(text);
    json_decref(out);
  }
  json_decref(v);
}

static void front_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  call_t *c = ud;
  if (c->http) {
    if (status != DYN_OK) {
      json_t *e = json_pack("{s:s}", "error", message);
      char *text = json_dumps(e, JSON_COMPACT);
      dyn_http_sse(c->http, text, strlen(text));
      free(text);
      json_decref(e);
    }
    dyn_http_finish(c->http);
  }
  free(c);
}

static void front_client_left(dyn_http_req_t *req, void *ud) {
  call_t *c = ud;
  dyn_http_finish(req); /* answers nobody; frees the request */
  c->http = NULL;
  dyn_stream_cancel(c->stream); /* runs front_done, which frees c */
}

static void front_generate(dyn_http_req_t *req, void *ud) {
  size_t len;
  const char *body = dyn_http_body(req, &len);
  char *text = request_text(body, len);
  if (!text) {
    dyn_http_error(req, 400, "request must be {\"text\": string}");
    return;
  }
  json_t *v = json_pack("{s:s}", "text", text);
  char *out = json_dumps(v, JSON_COMPACT);
  call_t *c = calloc(1, sizeof *c);
  c->http = req;
  static const dyn_stream_callbacks_t cb = {front_data, front_done};
  int rc = dyn_client_generate(dyn_service_client(ud, "Middle", "generate"), NULL, out,
                               strlen(out), &cb, c, &c->stream);
  if (rc) {
    dyn_http_error(req, 503, dyn_strerror(rc));
    free(c);
  } else {
    dyn_http_start(req, 200, "text/event-stream");
    dyn_http_on_close(req, front_client_left, c);
  }
  free(out);
  json_decref(v);
  free(text);
}

static int front_start(dyn_service_ctx_t *ctx) {
  dyn_http_server_t *srv;
  int port = (int)dyn_service_config_int(ctx, "port", 8000);
  int rc = dyn_http_server_start(dyn_runtime_loop(dyn_service_runtime(ctx)), "0.0.0.0", port, &srv);
  if (!rc) rc = dyn_http_route(srv, "POST", "/generate", front_generate, ctx);
  if (!rc) dyn_service_set_data(ctx, srv);
  return rc;
}

static void front_shutdown(dyn_service_ctx_t *ctx) {
  if (dyn_service_data(ctx)) dyn_http_server_stop(dyn_service_data(ctx));
}

static const dyn_endpoint_def_t backend_endpoints[] = {{"generate", backend_generate}, {0}};
static const dyn_endpoint_def_t middle_endpoints[] = {{"generate", middle_generate}, {0}};
static const char *const middle_depends[] = {"Backend", NULL};

static const dyn_service_def_t backend = {
    .name = "Backend", .namespace_ = "hello", .workers = 1, .endpoints = backend_endpoints};
static const dyn_service_def_t middle = {.name = "Middle",
                                         .namespace_ = "hello",
                                         .workers = 1,
                                         .endpoints = middle_endpoints,
                                         .depends = middle_depends};

static const char *const front_depends[] = {"Middle", NULL};
static const dyn_service_def_t frontend = {.name = "Frontend",
                                           .namespace_ = "hello",
                                           .workers = 1,
                                           .http_port = 8000,
                                           .depends = front_depends,
                                           .on_start = front_start,
                                           .on_shutdown = front_shutdown};

const dyn_service_def_t *const dyn_services[] = {&backend, &middle, &frontend, NULL};
