/* frontend.c - the Frontend service: the OpenAI-compatible HTTP API.
 *
 * POST /v1/chat/completions and /v1/completions are validated here (see
 * openai.c), handed to the Processor's `generate` endpoint as a gen
 * request, and the Processor's stream of deltas (both in protocol.h) is
 * turned into OpenAI's response: Server-Sent Events chunks when the client
 * streams, one
 * JSON object when it does not. GET /v1/models, /health, /live and /metrics
 * complete the API. A client that goes away cancels its upstream stream at
 * once, so the engine stops spending work on nobody.
 *
 * Everything runs on the worker's loop: each upstream message is parsed
 * once and written to the socket as one SSE event built in place; nothing
 * blocks. The HTTP status is sent with the first upstream message, not
 * before, so a request the Processor refuses (a 400: prompt too long) is an
 * ordinary HTTP error even when the client asked for a stream.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "dynamo/dynamo.h"
#include "dynamo/http.h"
#include "dynamo/service.h"
#include "dynamo/metrics.h"
#include "common/array.h"
#include "common/rand.h"
#include "llm/services/llm_common.h"
#include "llm/services/openai.h"
#include "llm/services/protocol.h"
#include "llm/services/services.h"

enum { EP_CHAT, EP_COMPLETIONS, N_EP };
enum { RT_STREAM, RT_UNARY, N_RT };
enum { ST_SUCCESS, ST_ERROR, ST_CANCELLED, N_ST };

typedef struct frontend {
  dyn_service_ctx_t *ctx;
  dyn_http_server_t *http;
  const char *model;       /* served model name; NULL: any name is served */
  const char *worker_path; /* "" : no worker watch */
  dyn_client_t *workers;   /* watches worker_path */
  dyn_client_t *processor;
  size_t live_workers;
  long long started;       /* /v1/models "created" */
  uint64_t rng;            /* request ids (dyn__splitmix64) */
  dyn_metrics_t *metrics;
  dyn_series_t *requests[N_EP][N_RT][N_ST];
  dyn_series_t *inflight, *ttft, *itl, *duration, *out_tokens;
} frontend_t;

typedef struct call {
  frontend_t *fe;
  dyn_http_req_t *http; /* NULL once released */
  dyn_stream_t *stream; /* NULL once done */
  dyn__oai_kind_t kind;
  int streaming, started, finished;
  int held; /* counted in the runtime's in-flight work (see shutdown) */
  char id[48];
  char finish_reason[16];
  dyn__oai_stream_t st; /* streaming: the chunks' common prefix */
  dyn__buf_t text;      /* unary: the text so far */
  dyn__buf_t out;       /* streaming: the events of one upstream message */
  /* Log-probabilities, when asked for. Streaming: the answer's bytes so
   * far (completions report token offsets). Unary: every token's entry,
   * its bytes kept in lp_bytes and the entries' pointers as offsets into
   * it until the answer is complete (the buffer moves as it grows). */
  size_t lp_offset;
  dyn__oai_logprob_t *lps;
  size_t n_lps, cap_lps;
  dyn__buf_t lp_bytes;
  char *model;
  long long created, prompt_tokens, completion_tokens, cached_tokens, tokens_seen;
  uint64_t t_start, t_last;
  int err_status; /* set when the Frontend itself aborts the stream */
  char err[200];
} call_t;

/* ---- small helpers ----------------------------------------------------- */

static void respond_json(dyn_http_req_t *req, int status, json_t *v) {
  char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
  if (s) dyn_http_respond(req, status, "application/json", s, strlen(s));
  else dyn_http_error(req, 500, "out of memory");
  free(s);
  json_decref(v);
}

static void respond_error(dyn_http_req_t *req, int status, const char *msg, const char *param) {
  char *s = dyn__oai_error_json(status, msg, param);
  if (s) dyn_http_respond(req, status, "application/json", s, strlen(s));
  else dyn_http_error(req, status, msg);
  free(s);
}

static uint64_t next_random(frontend_t *fe) { return dyn__splitmix64(&fe->rng); }

static void count_request(frontend_t *fe, int ep, int streaming, int status) {
  dyn_series_add(fe->requests[ep][streaming ? RT_STREAM : RT_UNARY][status], 1);
}

static size_t live_workers(frontend_t *fe) {
  if (fe->workers) return dyn_client_instances(fe->workers, NULL, 0);
  return dyn_client_instances(fe->processor, NULL, 0);
}

/* ---- one request: upstream stream -> HTTP ------------------------------ */

static void call_free(call_t *c) {
  if (c->held) dyn_runtime_release(dyn_service_runtime(c->fe->ctx));
  dyn__oai_stream_free(&c->st);
  dyn__buf_free(&c->text);
  dyn__buf_free(&c->out);
  dyn__buf_free(&c->lp_bytes);
  free(c->lps);
  free(c->model);
  free(c);
}

/* Stops the upstream stream with a failure of the Frontend's own (a
 * malformed message, no memory); on_done reports it. c is gone after. */
static void call_abort(call_t *c, int status, const char *why) {
  c->err_status = status;
  snprintf(c->err, sizeof c->err, "%s", why);
  dyn_stream_cancel(c->stream);
}

static void note_tokens(call_t *c, long long n) {
  if (n <= 0) return;
  uint64_t now = uv_hrtime();
  if (!c->tokens_seen) dyn_series_observe(c->fe->ttft, (double)(now - c->t_start) / 1e9);
  else dyn_series_observe(c->fe->itl, (double)(now - c->t_last) / 1e9 / (double)n);
  c->t_last = now;
  c->tokens_seen += n;
  dyn_series_add(c->fe->out_tokens, (double)n);
}

/* Copies t's bytes into lp_bytes and leaves their offset in t->bytes. */
static int keep_bytes(call_t *c, dyn__oai_token_lp_t *t) {
  uintptr_t off = c->lp_bytes.len;
  if (dyn__buf_append(&c->lp_bytes, t->bytes, t->len)) return DYN_ENOMEM;
  t->bytes = (const uint8_t *)off;
  return DYN_OK;
}

/* Unary: keeps a delta's log-probabilities for the answer (see call_t). */
static int keep_logprobs(call_t *c, const dyn__oai_logprob_t *lp, size_t n) {
  if (dyn__grow((void **)&c->lps, &c->cap_lps, c->n_lps + n, sizeof *c->lps)) return DYN_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    dyn__oai_logprob_t *e = &c->lps[c->n_lps++];
    *e = lp[i];
    if (keep_bytes(c, &e->token)) return DYN_ENOMEM;
    for (uint32_t k = 0; k < e->n_top; k++)
      if (keep_bytes(c, &e->top[k])) return DYN_ENOMEM;
  }
  return DYN_OK;
}

/* Turns the kept offsets into pointers, once no byte will be added. */
static void resolve_logprobs(call_t *c) {
  for (size_t i = 0; i < c->n_lps; i++) {
    dyn__oai_logprob_t *e = &c->lps[i];
    e->token.bytes = c->lp_bytes.data + (uintptr_t)e->token.bytes;
    for (uint32_t k = 0; k < e->n_top; k++)
      e->top[k].bytes = c->lp_bytes.data + (uintptr_t)e->top[k].bytes;
  }
}

static int stream_message(call_t *c, const char *text, size_t n, const char *finish,
                          const dyn__oai_logprob_t *lp, size_t n_lp) {
  int rc = DYN_OK;
  if (!c->started) {
    dyn_http_set_header(c->http, "Cache-Control", "no-cache");
    dyn_http_set_header(c->http, "X-Request-Id", c->id);
    rc = dyn_http_start(c->http, 200, "text/event-stream");
    c->started = 1;
    if (!rc && c->kind == DYN__OAI_CHAT) rc = dyn__oai_chunk_role(&c->st, &c->out);
  }
  /* An empty delta carries nothing; the finish chunk always goes out. */
  if (!rc && (n || finish || n_lp))
    rc = dyn__oai_chunk_delta(&c->st, text, n, finish, lp, n_lp, c->lp_offset, &c->out);
  for (size_t i = 0; i < n_lp; i++) c->lp_offset += lp[i].token.len;
  if (!rc && finish && c->st.include_usage)
    rc = dyn__oai_chunk_usage(&c->st, c->prompt_tokens, c->completion_tokens, c->cached_tokens,
                              &c->out);
  if (!rc && c->out.len) rc = dyn_http_write(c->http, c->out.data, c->out.len);
  c->out.len = 0;
  return rc == DYN_ECLOSED ? DYN_OK : rc; /* a gone client is on_close's business */
}

static void on_upstream_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  (void)s;
  call_t *c = ud;
  if (!c->http || c->finished) return;
  dyn__proto_delta_t d;
  if (dyn__proto_delta_decode(data, len, &d)) {
    call_abort(c, 500, "the Processor sent a malformed message");
    return;
  }
  note_tokens(c, d.n_tokens);
  if (d.finish_reason) {
    c->finished = 1;
    snprintf(c->finish_reason, sizeof c->finish_reason, "%s", d.finish_reason);
    c->prompt_tokens = d.prompt_tokens;
    c->completion_tokens = d.completion_tokens >= 0 ? d.completion_tokens : c->tokens_seen;
    c->cached_tokens = d.cached_tokens;
  }
  int rc = c->streaming
               ? stream_message(c, d.text, d.text_len, d.finish_reason, d.logprobs, d.n_logprobs)
               : dyn__buf_append(&c->text, d.text, d.text_len);
  if (!rc && !c->streaming && d.n_logprobs) rc = keep_logprobs(c, d.logprobs, d.n_logprobs);
  dyn__proto_delta_free(&d);
  if (rc) call_abort(c, 500, dyn_strerror(rc));
}

/* Ends the HTTP side of a failed request: an HTTP error if nothing was
 * sent yet, else an SSE error event and [DONE] (what vLLM sends; the
 * openai client raises APIError on the event). */
static void reply_failure(call_t *c, int status, const char *msg) {
  if (!c->started) {
    respond_error(c->http, status, msg, NULL);
    return;
  }
  char *e = dyn__oai_error_json(status, msg, NULL);
  if (e) {
    dyn_http_sse(c->http, e, strlen(e));
    free(e);
  }
  dyn_http_write(c->http, "data: [DONE]\n\n", 14);
  dyn_http_finish(c->http);
}

static void reply_success(call_t *c) {
  if (c->streaming) {
    dyn_http_write(c->http, "data: [DONE]\n\n", 14);
    dyn_http_finish(c->http);
    return;
  }
  resolve_logprobs(c);
  char *r = dyn__oai_response(c->kind, c->id, c->created, c->model,
                              c->text.len ? (const char *)c->text.data : "", c->text.len,
                              c->finish_reason, c->lps, c->n_lps, c->prompt_tokens,
                              c->completion_tokens, c->cached_tokens);
  if (!r) {
    respond_error(c->http, 500, "out of memory", NULL);
    return;
  }
  dyn_http_set_header(c->http, "X-Request-Id", c->id);
  dyn_http_respond(c->http, 200, "application/json", r, strlen(r));
  free(r);
}

static void on_upstream_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  (void)s;
  call_t *c = ud;
  frontend_t *fe = c->fe;
  c->stream = NULL;
  dyn_series_add(fe->inflight, -1);
  dyn_series_observe(fe->duration, (double)(uv_hrtime() - c->t_start) / 1e9);
  int ep = c->kind == DYN__OAI_CHAT ? EP_CHAT : EP_COMPLETIONS;
  if (!c->http) { /* the client left; the cancel ended us */
    count_request(fe, ep, c->streaming, ST_CANCELLED);
  } else if (c->err_status) {
    reply_failure(c, c->err_status, c->err);
    count_request(fe, ep, c->streaming, ST_ERROR);
  } else if (status == DYN_OK && !c->finished) {
    reply_failure(c, 500, "the Processor ended the stream without a finish_reason");
    count_request(fe, ep, c->streaming, ST_ERROR);
  } else if (status == DYN_OK) {
    reply_success(c);
    count_request(fe, ep, c->streaming, ST_SUCCESS);
  } else {
    dyn__proto_error_t e;
    dyn__proto_error_decode(status, message, &e);
    reply_failure(c, e.status, e.message);
    count_request(fe, ep, c->streaming, status == DYN_ECANCELED ? ST_CANCELLED : ST_ERROR);
  }
  call_free(c);
}

/* The client hung up: release its request and stop the work upstream. */
static void on_client_left(dyn_http_req_t *req, void *ud) {
  call_t *c = ud;
  c->http = NULL;
  dyn_http_finish(req);
  if (c->stream) dyn_stream_cancel(c->stream); /* runs on_upstream_done: c is gone */
}

/* ---- the two generate routes ------------------------------------------- */

static call_t *call_new(frontend_t *fe, dyn_http_req_t *req, dyn__oai_kind_t kind,
                        const dyn__oai_info_t *info) {
  call_t *c = calloc(1, sizeof *c);
  if (!c) return NULL;
  c->fe = fe;
  c->http = req;
  c->kind = kind;
  c->streaming = info->stream;
  c->created = (long long)time(NULL);
  c->t_start = uv_hrtime();
  c->model = strdup(info->model);
  snprintf(c->id, sizeof c->id, "%s-%016llx%016llx", kind == DYN__OAI_CHAT ? "chatcmpl" : "cmpl",
           (unsigned long long)next_random(fe), (unsigned long long)next_random(fe));
  dyn__buf_init(&c->text);
  dyn__buf_init(&c->out);
  if (!c->model || dyn__oai_stream_init(&c->st, kind, c->id, c->created, c->model,
                                        info->include_usage)) {
    free(c->model);
    free(c);
    return NULL;
  }
  return c;
}

/* 0 and a started upstream stream, or an HTTP status with err set. */
static int start_upstream(frontend_t *fe, call_t *c, json_t *request, dyn__proto_error_t *err) {
  dyn__proto_gen_request_t up = {.kind = c->kind, .request_id = c->id, .request = request};
  char *body = dyn__proto_gen_request_encode(&up);
  if (!body) {
    dyn__proto_error_decode(DYN_ENOMEM, NULL, err);
    return err->status;
  }
  static const dyn_stream_callbacks_t cb = {on_upstream_data, on_upstream_done};
  int rc = dyn_client_generate(fe->processor, NULL, body, strlen(body), &cb, c, &c->stream);
  free(body);
  if (rc) {
    dyn__proto_error_decode(rc, rc == DYN_ENOINSTANCE ? "no live Processor instance" : NULL, err);
    return err->status;
  }
  return 0;
}

static void handle_generate(dyn_http_req_t *req, frontend_t *fe, dyn__oai_kind_t kind) {
  int ep = kind == DYN__OAI_CHAT ? EP_CHAT : EP_COMPLETIONS;
  size_t len;
  const char *body = dyn_http_body(req, &len);
  json_error_t jerr;
  json_t *request = json_loadb(body, len, JSON_DECODE_ANY, &jerr);
  if (!request) {
    char msg[300];
    snprintf(msg, sizeof msg, "the request body is not valid JSON: %s (line %d, column %d)",
             jerr.text, jerr.line, jerr.column);
    respond_error(req, 400, msg, NULL);
    count_request(fe, ep, 0, ST_ERROR);
    return;
  }
  dyn__oai_info_t info;
  dyn__oai_error_t err;
  dyn__proto_error_t up_err;
  int status = 0;
  const char *why = NULL, *param = NULL;
  char msg[300];
  call_t *c = NULL;
  if (dyn_runtime_draining(dyn_service_runtime(fe->ctx))) {
    info.stream = 0;
    status = 503, why = "the server is shutting down";
  } else if (dyn__oai_validate(request, kind, &info, &err)) {
    status = err.status, why = err.message, param = err.param;
  } else if (fe->model && strcmp(info.model, fe->model)) {
    snprintf(msg, sizeof msg, "The model `%.200s` does not exist.", info.model);
    status = 404, why = msg, param = "model";
  } else if (!live_workers(fe)) {
    snprintf(msg, sizeof msg, "no live worker: no instance of %.200s",
             fe->workers ? fe->worker_path : "the Processor");
    status = 503, why = msg;
  } else if (!(c = call_new(fe, req, kind, &info))) {
    status = 500, why = "out of memory";
  } else if ((status = start_upstream(fe, c, request, &up_err))) {
    why = up_err.message;
  }
  if (status) {
    respond_error(req, status, why, param);
    count_request(fe, ep, info.stream, ST_ERROR);
    if (c) call_free(c);
    json_decref(request);
    return;
  }
  json_decref(request);
  dyn_series_add(fe->inflight, 1);
  /* A shutdown waits for this answer (up to the grace period), as it does
   * for the requests a worker serves: SIGTERM must not cut streams off. */
  dyn_runtime_hold(dyn_service_runtime(fe->ctx));
  c->held = 1;
  if (dyn_http_on_close(req, on_client_left, c) == DYN_ECLOSED) on_client_left(req, c);
}

static void on_chat(dyn_http_req_t *req, void *ud) { handle_generate(req, ud, DYN__OAI_CHAT); }
static void on_completions(dyn_http_req_t *req, void *ud) {
  handle_generate(req, ud, DYN__OAI_COMPLETION);
}

/* ---- the other routes -------------------------------------------------- */

static void on_models(dyn_http_req_t *req, void *ud) {
  frontend_t *fe = ud;
  json_t *data = json_array();
  if (fe->model)
    json_array_append_new(data, json_pack("{s:s, s:s, s:I, s:s}", "id", fe->model, "object",
                                          "model", "created", (json_int_t)fe->started,
                                          "owned_by", "dynamo"));
  respond_json(req, 200, json_pack("{s:s, s:o}", "object", "list", "data", data));
}

static void on_health(dyn_http_req_t *req, void *ud) {
  frontend_t *fe = ud;
  size_t n = live_workers(fe);
  const char *what = fe->workers ? fe->worker_path : "the Processor";
  if (dyn_runtime_draining(dyn_service_runtime(fe->ctx))) {
    respond_json(req, 503, json_pack("{s:s}", "status", "draining"));
    return;
  }
  if (n) {
    respond_json(req, 200, json_pack("{s:s, s:s, s:I}", "status", "healthy", "endpoint", what,
                                     "instances", (json_int_t)n));
    return;
  }
  char msg[300];
  snprintf(msg, sizeof msg, "no live instance of %s", what);
  respond_json(req, 503, json_pack("{s:s, s:s, s:s, s:i}", "status", "unhealthy", "endpoint",
                                   what, "message", msg, "instances", 0));
}

static void on_live(dyn_http_req_t *req, void *ud) {
  (void)ud;
  respond_json(req, 200, json_pack("{s:s}", "status", "live"));
}

static void on_metrics(dyn_http_req_t *req, void *ud) {
  frontend_t *fe = ud;
  size_t len;
  char *text = dyn_metrics_render(fe->metrics, &len);
  if (!text) {
    dyn_http_error(req, 500, "out of memory");
    return;
  }
  dyn_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", text, len);
  free(text);
}

/* ---- metrics ----------------------------------------------------------- */

static int add_histogram(frontend_t *fe, const char *name, const char *help, const double *b,
                         size_t nb, dyn_series_t **out) {
  static const char *const model_label[] = {"model", NULL};
  dyn_metric_t *f;
  int rc = dyn_metrics_add(fe->metrics, DYN_METRIC_HISTOGRAM, name, help, model_label, b, nb, &f);
  const char *v[] = {fe->model ? fe->model : ""};
  if (!rc && !(*out = dyn_metric_series(f, v))) rc = DYN_ENOMEM;
  return rc;
}

static int add_scalar(frontend_t *fe, dyn_metric_type_t type, const char *name, const char *help,
                      dyn_series_t **out) {
  static const char *const model_label[] = {"model", NULL};
  dyn_metric_t *f;
  int rc = dyn_metrics_add(fe->metrics, type, name, help, model_label, NULL, 0, &f);
  const char *v[] = {fe->model ? fe->model : ""};
  if (!rc && !(*out = dyn_metric_series(f, v))) rc = DYN_ENOMEM;
  return rc;
}

static int setup_request_counter(frontend_t *fe) {
  static const char *const labels[] = {"model", "endpoint", "request_type", "status", NULL};
  static const char *const eps[] = {"chat_completions", "completions"};
  static const char *const types[] = {"stream", "unary"};
  static const char *const statuses[] = {"success", "error", "cancelled"};
  dyn_metric_t *f;
  int rc = dyn_metrics_add(fe->metrics, DYN_METRIC_COUNTER, "dynamo_frontend_requests_total",
                            "Requests the frontend answered, by outcome.", labels, NULL, 0, &f);
  for (int e = 0; e < N_EP && !rc; e++)
    for (int t = 0; t < N_RT && !rc; t++)
      for (int s = 0; s < N_ST && !rc; s++) {
        const char *v[] = {fe->model ? fe->model : "", eps[e], types[t], statuses[s]};
        if (!(fe->requests[e][t][s] = dyn_metric_series(f, v))) rc = DYN_ENOMEM;
      }
  return rc;
}

static int setup_metrics(frontend_t *fe) {
  static const double ttft[] = {0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                                1,     2.5,   5,    10,    30,   60};
  static const double itl[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                               0.05,   0.1,   0.25,   0.5,   1};
  static const double dur[] = {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300};
  /* The process's registry: /metrics here and on the health port serve the
   * same text (the runtime's own metrics included). */
  if (!(fe->metrics = dyn_metrics_default())) return DYN_ENOMEM;
  int rc = setup_request_counter(fe);
  if (!rc) rc = add_scalar(fe, DYN_METRIC_GAUGE, "dynamo_frontend_inflight_requests",
                           "Requests in flight to the Processor.", &fe->inflight);
  if (!rc) rc = add_histogram(fe, "dynamo_frontend_time_to_first_token_seconds",
                              "Time from request to the first generated token.", ttft,
                              sizeof ttft / sizeof *ttft, &fe->ttft);
  if (!rc) rc = add_histogram(fe, "dynamo_frontend_inter_token_latency_seconds",
                              "Time between generated tokens (per token of each delta).", itl,
                              sizeof itl / sizeof *itl, &fe->itl);
  if (!rc) rc = add_histogram(fe, "dynamo_frontend_request_duration_seconds",
                              "Time from request to the end of its response.", dur,
                              sizeof dur / sizeof *dur, &fe->duration);
  if (!rc) rc = add_scalar(fe, DYN_METRIC_COUNTER, "dynamo_frontend_output_tokens_total",
                           "Tokens generated for the frontend's clients.", &fe->out_tokens);
  return rc;
}

/* ---- the service ------------------------------------------------------- */

static void on_workers_change(dyn_client_t *c, void *ud) {
  frontend_t *fe = ud;
  size_t n = dyn_client_instances(c, NULL, 0);
  if (!n != !fe->live_workers)
    dyn_log(DYN_LOG_INFO, "Frontend: %zu live instance(s) of %s", n, fe->worker_path);
  fe->live_workers = n;
}

static int watch_workers(frontend_t *fe) {
  if (!*fe->worker_path) return DYN_OK;
  dyn_endpoint_t *ep;
  int rc = dyn_runtime_endpoint(dyn_service_runtime(fe->ctx), fe->worker_path, &ep);
  if (!rc) rc = dyn_endpoint_client(ep, &fe->workers);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "Frontend: cannot watch worker endpoint '%s': %s", fe->worker_path,
            dyn_strerror(rc));
    return rc;
  }
  dyn_client_on_change(fe->workers, on_workers_change, fe);
  return DYN_OK;
}

/* The HTTP limits (dyn_http_limits_t) from the config's http_* keys. */
static void read_http_limits(dyn__llm_cfg_t *c, dyn_http_limits_t *l) {
  dyn_http_limits_default(l);
  const char *key;
  for (size_t i = 0; (key = dyn_http_limit_name(i)); i++) {
    long long v = dyn__llm_cfg_int(c, key, -1, 0, LLONG_MAX); /* -1: absent or bad */
    if (v >= 0 && dyn_http_limits_set(l, key, v))
      dyn__llm_cfg_reject(c, key, "a whole number within the bounds of docs/limits.md");
  }
}

static int start_http(frontend_t *fe, const char *host, int port, const dyn_http_limits_t *l) {
  int rc = dyn_http_server_start(dyn_runtime_loop(dyn_service_runtime(fe->ctx)), host, port,
                                 &fe->http);
  if (rc) {
    dyn_log(DYN_LOG_ERROR, "Frontend: cannot serve HTTP on %s:%d: %s", host, port,
            dyn_strerror(rc));
    fe->http = NULL;
    return rc;
  }
  rc = dyn_http_server_set_limits(fe->http, l);
  if (!rc) rc = dyn_http_route(fe->http, "POST", "/v1/chat/completions", on_chat, fe);
  if (!rc) rc = dyn_http_route(fe->http, "POST", "/v1/completions", on_completions, fe);
  if (!rc) rc = dyn_http_route(fe->http, "GET", "/v1/models", on_models, fe);
  if (!rc) rc = dyn_http_route(fe->http, "GET", "/health", on_health, fe);
  if (!rc) rc = dyn_http_route(fe->http, "GET", "/live", on_live, fe);
  if (!rc) rc = dyn_http_route(fe->http, "GET", "/metrics", on_metrics, fe);
  if (!rc)
    dyn_log(DYN_LOG_INFO, "Frontend: OpenAI API on http://%s:%d", host,
            dyn_http_server_port(fe->http));
  return rc;
}

static void frontend_free(frontend_t *fe) {
  if (fe->http) dyn_http_server_stop(fe->http); /* cancels what is in flight */
  if (fe->workers) dyn_client_free(fe->workers);
  free(fe); /* the metrics are the process's and stay with it */
}

/* Request ids differ across Frontends and restarts: the state starts from
 * the kernel's randomness (time, pid and instance when it has none). */
static void seed(frontend_t *fe) {
  if (getrandom(&fe->rng, sizeof fe->rng, 0) != (ssize_t)sizeof fe->rng)
    fe->rng = uv_hrtime() ^ ((uint64_t)getpid() << 32) ^
              dyn_runtime_instance_id(dyn_service_runtime(fe->ctx));
}

static int frontend_start(dyn_service_ctx_t *ctx) {
  frontend_t *fe = calloc(1, sizeof *fe);
  if (!fe) return DYN_ENOMEM;
  fe->ctx = ctx;
  fe->started = (long long)time(NULL);
  dyn__llm_cfg_t c;
  dyn__llm_cfg_init(&c, ctx);
  fe->model = dyn__llm_cfg_string(&c, "model", NULL);
  if (!fe->model) fe->model = dyn__llm_cfg_string(&c, "served_model_name", NULL);
  fe->worker_path = dyn__llm_cfg_string(&c, "worker", "dynamo/Worker/generate");
  int wait_ms = (int)dyn__llm_cfg_int(&c, "processor_wait_ms", 5000, 0, INT_MAX);
  const char *host = dyn__llm_cfg_string(&c, "host", "0.0.0.0");
  int port = (int)dyn__llm_cfg_int(&c, "port", 8000, 0, 65535);
  dyn_http_limits_t limits;
  read_http_limits(&c, &limits);
  if (c.bad) {
    free(fe);
    return DYN_EINVAL;
  }
  seed(fe);
  fe->processor = dyn_service_client(ctx, "Processor", "generate");
  if (!fe->processor) {
    dyn_log(DYN_LOG_ERROR, "Frontend: no client for Processor/generate (is Processor in the graph?)");
    free(fe);
    return DYN_EINVAL;
  }
  /* A request without a Processor should be a prompt 503, not a hang. */
  dyn_client_set_wait(fe->processor, wait_ms);
  int rc = setup_metrics(fe);
  if (!rc) rc = watch_workers(fe);
  if (!rc) rc = start_http(fe, host, port, &limits);
  if (rc) {
    frontend_free(fe);
    return rc;
  }
  dyn_service_set_data(ctx, fe);
  return DYN_OK;
}

static void frontend_shutdown(dyn_service_ctx_t *ctx) {
  frontend_t *fe = dyn_service_data(ctx);
  if (!fe) return;
  dyn_service_set_data(ctx, NULL);
  frontend_free(fe);
}

static const char *const frontend_depends[] = {"Processor", NULL};

const dyn_service_def_t dyn__llm_frontend = {
    .abi = DYN_SERVICE_ABI,
    .name = "Frontend",
    .namespace_ = "dynamo",
    .workers = 1,
    .http_port = 8000,
    .depends = frontend_depends,
    .on_start = frontend_start,
    .on_shutdown = frontend_shutdown,
};
