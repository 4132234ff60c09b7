/* processor.c - the Processor service: text in, tokens to an engine, text out.
 *
 * The Frontend sends {"kind": "chat"|"completion", "request_id", "request":
 * <the OpenAI request>}. The Processor renders chat messages with the
 * model's chat template, tokenizes, checks the context length, picks a
 * worker (asking the Router when the graph has one, else round-robin or
 * random over the live workers), calls that worker's generate directly, and
 * streams the answer back as {"text", "n_tokens", "finish_reason"} deltas,
 * detokenized incrementally so no UTF-8 character is ever split. The last
 * delta carries finish_reason and usage {prompt_tokens, completion_tokens,
 * cached_tokens}. Stop strings and the template's end-of-turn tokens end
 * the answer early and cancel the engine's work.
 *
 * A failure that is the client's fault is a stream error starting with
 * "400 " (the Frontend maps it to an HTTP 400); a cancel from the Frontend
 * (client gone) cancels the Router call or the engine stream at once.
 *
 * Protocol to the Worker (see worker.c): {"token_ids", "max_tokens",
 * "ignore_eos", "seed", "request_id"} in; {"token_ids": [...]} messages
 * out, the first with "cached_tokens", the last with "finish_reason".
 *
 * Config: tokenizer (path to tokenizer.json; a relative path is tried
 * from the working directory, the config file's and the graph file's),
 * chat-template (llama3, chatml, mistral, gemma, phi3, plain; default:
 * detected from the tokenizer), context-length (8192), max-tokens (256,
 * when the request gives none), route (round-robin | random, without a
 * Router), worker (Worker).
 */
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "common/env_names.h"
#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "llm/services/llm_common.h"
#include "llm/services/services.h"

#define MAX_STOP 8

typedef struct processor {
  dyn_service_ctx_t *ctx;
  dyn_tokenizer_t *tk;
  dyn_chat_family_t family;
  uint32_t stop_ids[MAX_STOP]; /* the template's end-of-turn tokens and EOS */
  size_t n_stop_ids;
  long long context_length, default_max_tokens;
  size_t max_token_bytes; /* the longest token's text, in bytes */
  dyn_route_t route;
  dyn_client_t *router, *worker;
} processor_t;

/* One request in flight. */
typedef struct job {
  processor_t *p;
  dyn_request_t *req;        /* upstream (Frontend); NULL once finished */
  dyn_stream_t *router_call; /* while asking the Router */
  dyn_stream_t *engine;      /* while the worker streams */
  char *worker_body;         /* the worker request, kept until it is sent */
  uint64_t worker_id;
  int have_worker;
  dyn_detok_t *detok;
  char *stop[MAX_STOP];
  size_t n_stop, max_stop_len;
  char *held; /* text not yet sent because it may start a stop string */
  size_t held_len;
  size_t prompt_tokens, completion_tokens, cached_tokens;
  const char *finish; /* set once the answer is complete */
} job_t;

/* ---- helpers ------------------------------------------------------------ */

static void job_free(job_t *j) {
  for (size_t i = 0; i < j->n_stop; i++) free(j->stop[i]);
  dyn_detok_free(j->detok);
  free(j->worker_body);
  free(j->held);
  free(j);
}

/* Ends the upstream request, once; the job is freed when nothing refers to
 * it any more (the streams' on_done run later or already did). */
static void job_finish(job_t *j, const char *error) {
  if (!j->req) return;
  if (error) dyn_request_fail(j->req, error);
  else dyn_request_end(j->req);
  j->req = NULL;
}

static void job_maybe_free(job_t *j) {
  if (!j->req && !j->router_call && !j->engine) job_free(j);
}

static void send_delta(job_t *j, const char *text, size_t len, size_t n_tokens) {
  if (!j->req) return;
  json_t *m = json_pack("{s:s%, s:I, s:n}", "text", text ? text : "", text ? len : 0,
                        "n_tokens", (json_int_t)n_tokens, "finish_reason");
  dyn__llm_send_json(j->req, m);
}

static void send_final(job_t *j) {
  if (!j->req) return;
  json_t *m = json_pack("{s:s, s:I, s:s, s:{s:I, s:I, s:I}}", "text", "", "n_tokens",
                        (json_int_t)0, "finish_reason", j->finish, "usage", "prompt_tokens",
                        (json_int_t)j->prompt_tokens, "completion_tokens",
                        (json_int_t)j->completion_tokens, "cached_tokens",
                        (json_int_t)j->cached_tokens);
  dyn__llm_send_json(j->req, m);
  job_finish(j, NULL);
}

/* ---- stop strings --------------------------------------------------------- */

/* Appends new text to what is held back, sends what can no longer be the
 * start of a stop string, and returns 1 when a stop string completed (the
 * text before it is sent, the rest dropped). */
static int emit_text(job_t *j, const char *text, size_t len, size_t n_tokens) {
  if (j->n_stop == 0) {
    if (len || n_tokens) send_delta(j, text, len, n_tokens);
    return 0;
  }
  char *h = realloc(j->held, j->held_len + len + 1);
  if (!h) return 0;
  memcpy(h + j->held_len, text, len);
  j->held = h;
  j->held_len += len;
  h[j->held_len] = '\0';
  /* The earliest stop string in the text wins, whatever its place in the
   * list: nothing after the first one may reach the client. */
  char *first = NULL;
  for (size_t i = 0; i < j->n_stop; i++) {
    char *at = strstr(h, j->stop[i]);
    if (at && (!first || at < first)) first = at;
  }
  if (first) {
    send_delta(j, h, (size_t)(first - h), n_tokens);
    j->held_len = 0;
    return 1;
  }
  /* Keep the longest tail that could still grow into a stop string. */
  size_t keep = j->max_stop_len - 1 < j->held_len ? j->max_stop_len - 1 : j->held_len;
  /* ...but never cut a UTF-8 character: move the cut back to a lead byte. */
  size_t cut = j->held_len - keep;
  while (cut > 0 && ((unsigned char)h[cut] & 0xC0) == 0x80) cut--;
  send_delta(j, h, cut, n_tokens);
  memmove(h, h + cut, j->held_len - cut);
  j->held_len -= cut;
  return 0;
}

static int is_stop_id(const processor_t *p, uint32_t id) {
  for (size_t i = 0; i < p->n_stop_ids; i++)
    if (p->stop_ids[i] == id) return 1;
  return 0;
}

/* ---- the engine stream ------------------------------------------------- */

static void engine_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  job_t *j = ud;
  if (!j->req || j->finish) return;
  json_error_t err;
  json_t *m = json_loadb(data, len, 0, &err);
  json_t *toks = json_object_get(m, "token_ids");
  json_t *cached = json_object_get(m, "cached_tokens");
  if (json_is_integer(cached)) j->cached_tokens = (size_t)json_integer_value(cached);
  size_t i;
  json_t *t;
  int stop_token = 0, stop_string = 0;
  json_array_foreach(toks, i, t) {
    uint32_t id = (uint32_t)json_integer_value(t);
    j->completion_tokens++;
    if (is_stop_id(j->p, id)) {
      stop_token = 1;
      break;
    }
    const char *piece;
    size_t n;
    if (dyn_detok_push(j->detok, id, &piece, &n) == DYN_OK && emit_text(j, piece, n, 1)) {
      stop_string = 1;
      break;
    }
  }
  const char *fr = json_string_value(json_object_get(m, "finish_reason"));
  int stopped = stop_token || stop_string;
  if (stopped || fr) {
    /* The answer ended without a stop string in it: what the detokenizer
     * and the stop-string look-behind still hold is part of it. */
    const char *piece;
    size_t n;
    if (!stop_string && dyn_detok_flush(j->detok, &piece, &n) == DYN_OK &&
        !emit_text(j, piece, n, 0) && j->held_len)
      send_delta(j, j->held, j->held_len, 0);
    j->finish = stopped ? "stop" : (!strcmp(fr, "length") ? "length" : "stop");
    send_final(j);
    /* The engine would go on generating what nobody reads. */
    if (stopped && j->engine) dyn_stream_cancel(s);
  }
  json_decref(m);
}

static void engine_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  job_t *j = ud;
  j->engine = NULL;
  if (j->req && !j->finish) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s%s", status == DYN_OK ? "the engine ended the stream early" : "",
             status == DYN_OK ? "" : message);
    job_finish(j, status == DYN_ENOINSTANCE ? "503 no engine worker is live" : msg);
  }
  job_maybe_free(j);
}

static void call_worker(job_t *j) {
  static const dyn_stream_callbacks_t cb = {engine_data, engine_done};
  dyn_call_options_t opt = {.route = j->p->route};
  if (j->have_worker) {
    opt.route = DYN_ROUTE_DIRECT;
    opt.instance_id = j->worker_id;
  }
  int rc = dyn_client_generate(j->p->worker, &opt, j->worker_body, strlen(j->worker_body), &cb, j,
                               &j->engine);
  if (rc) {
    j->engine = NULL;
    job_finish(j, rc == DYN_ENOINSTANCE ? "503 no engine worker is live" : dyn_strerror(rc));
  }
}

/* ---- the Router call ----------------------------------------------------- */

static void router_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  job_t *j = ud;
  json_error_t err;
  json_t *m = json_loadb(data, len, 0, &err);
  j->have_worker = !dyn__llm_id_from_hex(json_string_value(json_object_get(m, "worker_id")),
                                         &j->worker_id);
  json_decref(m);
}

static void router_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  job_t *j = ud;
  j->router_call = NULL;
  if (j->req) {
    if (status != DYN_OK) job_finish(j, message);
    else if (!j->have_worker) job_finish(j, "the Router answered without a worker_id");
    else call_worker(j);
  }
  job_maybe_free(j);
}

static void on_cancel(dyn_request_t *req, void *ud) {
  job_t *j = ud;
  job_finish(j, "cancelled");
  /* At most one call is open at a time. Cancelling it runs its on_done
   * before returning, and that frees the job: do not touch j after. */
  dyn_stream_t *open = j->router_call ? j->router_call : j->engine;
  if (open) dyn_stream_cancel(open);
  else job_free(j);
}

/* ---- the request ---------------------------------------------------------- */

/* Renders the prompt text: chat messages through the template, or the
 * completion prompt as given. *why names a client error. */
static char *prompt_text(processor_t *p, const char *kind, json_t *request, const char **why) {
  if (!strcmp(kind, "completion")) {
    json_t *pr = json_object_get(request, "prompt");
    if (json_is_array(pr) && json_array_size(pr) == 1) pr = json_array_get(pr, 0);
    if (!json_is_string(pr)) {
      *why = "400 prompt must be a string";
      return NULL;
    }
    return strdup(json_string_value(pr));
  }
  char *out = NULL, err[256];
  size_t len;
  static char msg[300]; /* read at once by the caller, on the one loop thread */
  if (dyn_chat_render_json(p->family, (const struct json_t *)json_object_get(request, "messages"),
                           true, &out, &len, err, sizeof err)) {
    snprintf(msg, sizeof msg, "400 %s", err);
    *why = msg;
    return NULL;
  }
  return out;
}

static int add_stops(job_t *j, json_t *stop) {
  if (json_is_string(stop)) stop = json_pack("[O]", stop);
  else json_incref(stop);
  size_t i;
  json_t *s;
  json_array_foreach(stop, i, s) {
    if (!json_is_string(s) || j->n_stop == MAX_STOP) break;
    if (!json_string_length(s)) continue;
    j->stop[j->n_stop++] = strdup(json_string_value(s));
    if (json_string_length(s) > j->max_stop_len) j->max_stop_len = json_string_length(s);
  }
  json_decref(stop);
  return DYN_OK;
}

static void generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  processor_t *p = dyn_service_data(ud);
  json_error_t err;
  json_t *in = json_loadb(body, len, 0, &err);
  json_t *request = json_object_get(in, "request");
  const char *kind = json_string_value(json_object_get(in, "kind"));
  const char *why = NULL;
  char msg[300];
  if (!json_is_object(request) || !kind || (strcmp(kind, "chat") && strcmp(kind, "completion"))) {
    json_decref(in);
    dyn_request_fail(req, "400 the Processor takes {\"kind\": \"chat\"|\"completion\", \"request\": {...}}");
    return;
  }
  json_t *mt = json_object_get(request, "max_completion_tokens");
  if (!json_is_integer(mt)) mt = json_object_get(request, "max_tokens");
  long long max_tokens = json_is_integer(mt) ? json_integer_value(mt) : p->default_max_tokens;
  if (max_tokens < 1) {
    why = "400 max_tokens must be at least 1";
  } else if (max_tokens > p->context_length) {
    snprintf(msg, sizeof msg,
             "400 This model's maximum context length is %lld tokens. However, you requested "
             "%lld tokens in the completion alone.", p->context_length, max_tokens);
    why = msg;
  }
  char *text = why ? NULL : prompt_text(p, kind, request, &why);
  dyn_tokens_t ids = {0};
  size_t text_len = text ? strlen(text) : 0;
  /* No token is longer than the longest in the vocabulary, so a prompt of
   * more bytes than that many tokens can hold is refused before the
   * tokenizer spends (loop) time on it: every request shares this loop. */
  if (text && text_len > (size_t)p->context_length * p->max_token_bytes) {
    snprintf(msg, sizeof msg,
             "400 This model's maximum context length is %lld tokens; the prompt is %zu bytes, "
             "more than that many tokens can hold.", p->context_length, text_len);
    why = msg;
  } else if (text && dyn_tokenizer_encode(p->tk, text, text_len, &ids)) {
    why = "400 the prompt is not valid UTF-8";
  }
  free(text);
  if (!why && (long long)ids.len + max_tokens > p->context_length) {
    snprintf(msg, sizeof msg,
             "400 This model's maximum context length is %lld tokens. However, you requested "
             "%lld tokens (%zu in the messages, %lld in the completion).",
             p->context_length, (long long)ids.len + max_tokens, ids.len, max_tokens);
    why = msg;
  }
  if (why) {
    dyn_tokens_free(&ids);
    json_decref(in);
    dyn_request_fail(req, why);
    return;
  }
  job_t *j = calloc(1, sizeof *j);
  /* One array of the prompt's ids, for the worker's request and the Router's. */
  json_t *tokens = dyn__llm_tokens_to_json(ids.ids, ids.len);
  dyn_tokens_free(&ids);
  json_t *wreq = json_pack("{s:O, s:I, s:b, s:O?, s:O?, s:O?}", "token_ids", tokens, "max_tokens",
                           (json_int_t)max_tokens, "ignore_eos",
                           json_is_true(json_object_get(request, "ignore_eos")), "seed",
                           json_object_get(request, "seed"), "temperature",
                           json_object_get(request, "temperature"), "request_id",
                           json_object_get(in, "request_id"));
  char *wbody = wreq ? json_dumps(wreq, JSON_COMPACT) : NULL;
  json_decref(wreq);
  if (!j || !wbody || dyn_detok_new(p->tk, DYN_DETOK_SKIP_SPECIAL, &j->detok)) {
    free(j);
    free(wbody);
    json_decref(tokens);
    json_decref(in);
    dyn_request_fail(req, "out of memory");
    return;
  }
  j->p = p;
  j->req = req;
  j->prompt_tokens = json_array_size(tokens);
  add_stops(j, json_object_get(request, "stop"));
  j->worker_body = wbody;
  json_decref(in);
  dyn_request_on_cancel(req, on_cancel, j);
  if (p->router) {
    static const dyn_stream_callbacks_t cb = {router_data, router_done};
    json_t *rreq = json_pack("{s:O}", "token_ids", tokens);
    char *rbody = rreq ? json_dumps(rreq, JSON_COMPACT) : NULL;
    json_decref(rreq);
    int rc = rbody ? dyn_client_generate(p->router, NULL, rbody, strlen(rbody), &cb, j,
                                         &j->router_call)
                   : DYN_ENOMEM;
    free(rbody);
    if (rc) {
      j->router_call = NULL;
      job_finish(j, rc == DYN_ENOINSTANCE ? "503 no Router is live" : dyn_strerror(rc));
    }
  } else {
    call_worker(j);
  }
  json_decref(tokens);
  job_maybe_free(j);
}

/* ---- lifecycle ------------------------------------------------------------ */

/* A relative path is tried as given (from the working directory), then
 * from the config file's directory (DYN_CONFIG_FILE), then from the graph
 * file's (DYN_GRAPH_DIR: what `dynamo build` packs, so a tokenizer kept
 * beside the graph works in its artifact too). */
static int load_tokenizer(processor_t *p, const char *path) {
  char err[512] = "", alt[4096];
  const char *use = path;
  if (access(path, R_OK) != 0 && path[0] != '/') {
    const char *cfg = getenv(DYN_ENV_CONFIG_FILE), *graph = getenv(DYN_ENV_GRAPH_DIR);
    char *cfg_copy = cfg ? strdup(cfg) : NULL;
    const char *bases[2] = {cfg_copy ? dirname(cfg_copy) : NULL, graph};
    for (int i = 0; i < 2 && use == path; i++) {
      if (!bases[i]) continue;
      snprintf(alt, sizeof alt, "%s/%s", bases[i], path);
      if (access(alt, R_OK) == 0) use = alt;
    }
    free(cfg_copy);
  }
  if (dyn_tokenizer_load_file(use, &p->tk, err, sizeof err)) {
    fprintf(stderr, "error: Processor: %s\n", err);
    return 1;
  }
  return 0;
}

static int processor_start(dyn_service_ctx_t *ctx) {
  processor_t *p = calloc(1, sizeof *p);
  if (!p) return DYN_ENOMEM;
  p->ctx = ctx;
  const char *path = dyn__llm_config_string(ctx, "tokenizer", NULL);
  if (!path) {
    fprintf(stderr, "error: Processor: config key 'tokenizer' (path to a tokenizer.json) is required\n");
    free(p);
    return DYN_EINVAL;
  }
  if (load_tokenizer(p, path)) {
    free(p);
    return DYN_EINVAL;
  }
  const char *fam = dyn__llm_config_string(ctx, "chat-template", NULL);
  p->family = dyn_chat_detect(p->tk);
  if (fam && dyn_chat_family_from_name(fam, &p->family)) {
    fprintf(stderr, "error: Processor: chat-template '%s' is not one of the built-in families\n",
            fam ? fam : "?");
    return DYN_EINVAL;
  }
  p->n_stop_ids = dyn_chat_stop_ids(p->family, p->tk, p->stop_ids, MAX_STOP);
  if (p->n_stop_ids > MAX_STOP) p->n_stop_ids = MAX_STOP;
  for (uint32_t id = 0, n = dyn_tokenizer_vocab_size(p->tk); id < n; id++) {
    size_t len = 0;
    /* The byte-level form is at least as long as the bytes it stands for. */
    if (dyn_tokenizer_token_str(p->tk, id, &len) && len > p->max_token_bytes)
      p->max_token_bytes = len;
  }
  if (p->max_token_bytes == 0) p->max_token_bytes = 1;
  p->context_length = dyn__llm_config_int(ctx, "context-length", 8192);
  p->default_max_tokens = dyn__llm_config_int(ctx, "max-tokens", 256);
  const char *route = dyn__llm_config_string(ctx, "route", "round-robin");
  p->route = !strcmp(route, "random") ? DYN_ROUTE_RANDOM : DYN_ROUTE_ROUND_ROBIN;
  const char *worker = dyn__llm_config_string(ctx, "worker", "Worker");
  p->worker = dyn_service_client(ctx, worker, "generate");
  if (dyn_service_has_dependency(ctx, "Router")) p->router = dyn_service_client(ctx, "Router", "generate");
  if (!p->worker) return DYN_EINVAL;
  dyn_service_set_data(ctx, p);
  fprintf(stderr, "Processor: tokenizer %s (%u ids), template %s, routing %s\n", path,
          dyn_tokenizer_vocab_size(p->tk), dyn_chat_family_name(p->family),
          p->router ? "by the Router" : route);
  return DYN_OK;
}

static void processor_shutdown(dyn_service_ctx_t *ctx) {
  processor_t *p = dyn_service_data(ctx);
  if (!p) return;
  dyn_tokenizer_free(p->tk);
  free(p);
  dyn_service_set_data(ctx, NULL);
}

static const dyn_endpoint_def_t processor_endpoints[] = {{"generate", generate}, {0}};
static const char *const processor_depends[] = {"Router", "Worker", NULL};

const dyn_service_def_t dyn__llm_processor = {
    .name = "Processor",
    .namespace_ = "dynamo",
    .workers = 1,
    .endpoints = processor_endpoints,
    .depends = processor_depends,
    .on_start = processor_start,
    .on_shutdown = processor_shutdown,
};
