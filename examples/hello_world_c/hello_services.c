/* hello_services.c - the hello-world graph as C services.
 *
 *   dynamo serve build/examples/hello_world_c/libhello_services.so:Middle
 *
 * Backend streams one message per word of "TEXT-back"; Middle sends
 * "TEXT-mid" to Backend and relays each answer prefixed with "Middle: ".
 * Payloads are JSON ({"text": ...} in, JSON strings out), exactly as the
 * Python hello world sends, so either half may be the Python one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

const dyn_service_def_t *const dyn_services[] = {&backend, &middle, NULL};
