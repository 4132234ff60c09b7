/* hello_world.c - the hello-world pipeline written against the C runtime.
 *
 *   client --{"text": T}--> Middle --{"text": T-mid}--> Backend
 *   Backend streams one message per word of "T-mid-back"; Middle relays each
 *   prefixed with "Middle: ". Payloads are JSON, as every dynamo SDK sends.
 *
 * usage: hello_world backend | middle | client TEXT
 * (control plane from DYN_CONTROL_SOCKET; run `dynamo control` first)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dynamo/dynamo.h"

static dyn_runtime_t *rt;

/* Reads {"text": ...} into a fresh string, or NULL. */
static char *request_text(const void *body, size_t len) {
  json_error_t err;
  json_t *v = json_loadb(body, len, 0, &err);
  const char *t = json_string_value(json_object_get(v, "text"));
  char *out = t ? strdup(t) : NULL;
  json_decref(v);
  return out;
}

static void send_json_string(dyn_request_t *req, const char *s) {
  json_t *v = json_string(s);
  char *out = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
  dyn_request_send(req, out, strlen(out));
  free(out);
  json_decref(v);
}

static void backend(dyn_request_t *req, const void *body, size_t len, void *ud) {
  char *text = request_text(body, len);
  if (!text) {
    dyn_request_fail(req, "request must be {\"text\": string}");
    return;
  }
  char *full = malloc(strlen(text) + 6);
  sprintf(full, "%s-back", text);
  for (char *save, *w = strtok_r(full, " ", &save); w; w = strtok_r(NULL, " ", &save))
    send_json_string(req, w);
  dyn_request_end(req);
  free(full);
  free(text);
}

/* Middle: one downstream stream per upstream request, relayed as it comes. */
static dyn_client_t *backend_client;

static void relay_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  json_error_t err;
  json_t *v = json_loadb(data, len, JSON_DECODE_ANY, &err);
  const char *word = json_string_value(v);
  if (word) {
    char msg[512];
    snprintf(msg, sizeof msg, "Middle: %s", word);
    send_json_string(ud, msg);
  }
  json_decref(v);
}

static void relay_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  if (status == DYN_OK) dyn_request_end(ud);
  else dyn_request_fail(ud, message);
}

static void cancel_downstream(dyn_request_t *req, void *ud) { dyn_stream_cancel(ud); }

static void middle(dyn_request_t *req, const void *body, size_t len, void *ud) {
  char *text = request_text(body, len);
  if (!text) {
    dyn_request_fail(req, "request must be {\"text\": string}");
    return;
  }
  json_t *v = json_pack("{s:s+}", "text", text, "-mid");
  char *out = json_dumps(v, JSON_COMPACT);
  static const dyn_stream_callbacks_t cb = {relay_data, relay_done};
  dyn_stream_t *s;
  int rc = dyn_client_generate(backend_client, NULL, out, strlen(out), &cb, req, &s);
  if (rc) dyn_request_fail(req, dyn_strerror(rc));
  else dyn_request_on_cancel(req, cancel_downstream, s);
  free(out);
  json_decref(v);
  free(text);
}

static void on_term(uv_signal_t *s, int sig) {
  uv_signal_stop(s);
  dyn_runtime_shutdown(rt, 5000);
}

static int serve(const char *path, dyn_handler_fn fn) {
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(rt, path, &ep);
  if (!rc) rc = dyn_endpoint_serve(ep, fn, NULL);
  if (rc) {
    fprintf(stderr, "cannot serve %s: %s\n", path, dyn_strerror(rc));
    return 1;
  }
  static uv_signal_t term, intr; /* closed by dyn_runtime_destroy's loop pass */
  uv_signal_init(dyn_runtime_loop(rt), &term);
  uv_signal_init(dyn_runtime_loop(rt), &intr);
  uv_signal_start(&term, on_term, SIGTERM);
  uv_signal_start(&intr, on_term, SIGINT);
  uv_unref((uv_handle_t *)&term);
  uv_unref((uv_handle_t *)&intr);
  printf("serving %s at %s\n", path, dyn_runtime_address(rt));
  fflush(stdout);
  dyn_runtime_run(rt);
  uv_close((uv_handle_t *)&term, NULL);
  uv_close((uv_handle_t *)&intr, NULL);
  return 0;
}

static int client(const char *text) {
  dyn_endpoint_t *ep;
  dyn_client_t *c;
  dyn_runtime_endpoint(rt, "hello/middle/generate", &ep);
  if (dyn_endpoint_client(ep, &c) || dyn_client_wait(c, 1, 5000)) {
    fprintf(stderr, "no Middle instance is live\n");
    return 1;
  }
  json_t *v = json_pack("{s:s}", "text", text);
  char *body = json_dumps(v, JSON_COMPACT);
  dyn_sync_stream_t *s;
  int rc = dyn_client_call(c, NULL, body, strlen(body), &s);
  const void *data;
  size_t len;
  while (!rc && (rc = dyn_sync_next(s, &data, &len, 10000)) == DYN_OK)
    printf("%.*s\n", (int)len, (const char *)data);
  if (rc != DYN_EOF) fprintf(stderr, "request failed: %s\n", s ? dyn_sync_error(s) : dyn_strerror(rc));
  dyn_sync_free(s);
  free(body);
  json_decref(v);
  dyn_client_free(c);
  return rc == DYN_EOF ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: hello_world backend | middle | client TEXT\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  int rc = dyn_runtime_create(NULL, &rt);
  if (rc) return 1;
  if (!strcmp(argv[1], "backend")) {
    rc = serve("hello/backend/generate", backend);
  } else if (!strcmp(argv[1], "middle")) {
    dyn_endpoint_t *ep;
    dyn_runtime_endpoint(rt, "hello/backend/generate", &ep);
    dyn_endpoint_client(ep, &backend_client);
    dyn_client_set_wait(backend_client, 10000);
    rc = serve("hello/middle/generate", middle);
  } else if (!strcmp(argv[1], "client") && argc > 2) {
    rc = client(argv[2]);
  } else {
    fprintf(stderr, "unknown role %s\n", argv[1]);
    rc = 2;
  }
  dyn_runtime_destroy(rt);
  return rc;
}
