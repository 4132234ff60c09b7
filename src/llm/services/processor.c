/* processor.c - the Processor service: text in, tokens to an engine, text out.
 *
 * The Frontend sends a gen request (the OpenAI request; every message of
 * the stack is described in protocol.h). The Processor renders chat
 * messages with the model's chat template, tokenizes (with BOS first when
 * the model file asks for it), checks the context length, picks a worker
 * (asking the Router when the graph has one, else round-robin or random
 * over the live workers), calls that worker's
 * generate directly, and streams the answer back as deltas, detokenized
 * incrementally so no UTF-8 character is ever split. The last delta
 * carries finish_reason and usage. Stop strings and the template's
 * end-of-turn tokens end the answer early and cancel the engine's work.
 *
 * A failure is a protocol error with its HTTP status (400 when it is the
 * client's fault); the Router's and the Worker's failures are relayed as
 * they came. A cancel from the Frontend (client gone) cancels the Router
 * call or the engine stream at once.
 *
 * Migration: when the worker's stream breaks before the answer is complete
 * (the worker died, was killed at the end of its drain, or its connection
 * was lost), the Processor sends the prompt plus every token generated so
 * far to another worker (the Router's choice where there is one), with
 * max_tokens reduced by what was produced, and the client's stream goes on
 * from there: the detokenizer, the stop strings and the usage carry over,
 * so no text is repeated or missing. At most migration-limit times per
 * request; a client's own cancel is never migrated.
 *
 * Config: tokenizer (path to a tokenizer.json or a .gguf model file; a
 * relative path is tried from the working directory, the config file's
 * and the graph file's), else the model file the Worker reads (model-path,
 * or model: a .gguf path or a name in the model cache; see
 * dyn__llm_model_file), whose own tokenizer and chat template are used;
 * chat-template (llama3, chatml, mistral, gemma, phi3, plain; default:
 * the model file's own template when it is one of these families, with
 * the default system prompt it adds, else detected from the tokenizer's
 * special tokens), context-length (8192), max-tokens (256,
 * when the request gives none), route (round-robin | random, without a
 * Router), migration-limit (3; 0 turns migration off).
 */
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/array.h"
#include "common/env_names.h"

#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "dynamo/metrics.h"
#include "dynamo/service.h"
#include "dynamo/status.h"
#include "llm/services/llm_common.h"
#include "llm/services/protocol.h"
#include "llm/services/services.h"

#define MAX_STOP 8

typedef struct processor {
  dyn_service_ctx_t *ctx;
  dyn_tokenizer_t *tk;
  dyn_chat_template_t tmpl;
  uint32_t stop_ids[MAX_STOP]; /* the template's end-of-turn tokens and EOS */
  size_t n_stop_ids;
  long long context_length, default_max_tokens;
  size_t max_token_bytes; /* the longest token's text, in bytes */
  int64_t bos;            /* BOS to put before every prompt, or -1 (the model asks for none) */
  dyn_route_t route;
  dyn_client_t *router, *worker;
  long long migration_limit;
  /* On the health port's /metrics; NULL when they could not be made. */
  dyn_series_t *tokenize_seconds, *detokenize_seconds, *migrations;
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
  char *stop[DYN__PROTO_MAX_STOP];
  size_t n_stop, max_stop_len;
  char *held; /* text not yet sent because it may start a stop string */
  size_t held_len;
  size_t prompt_tokens, completion_tokens, cached_tokens;
  const char *finish; /* set once the answer is complete */
  /* The log-probability of the token being emitted, if the request asked:
   * it goes out with the delta that token's text goes in. */
  const dyn__oai_logprob_t *token_lp;
  /* What a migration resends: the prompt's ids then every generated one
   * (seq), and the engine request they go in (its token_ids point into
   * seq; request_id is owned). */
  dyn_tokens_t seq;
  dyn__proto_engine_request_t ereq;
  long long max_tokens;
  long long migrations_left;
  uint64_t lost_worker; /* the instance whose stream broke last */
} job_t;

/* ---- helpers ------------------------------------------------------------ */

static void job_free(job_t *j) {
  for (size_t i = 0; i < j->n_stop; i++) free(j->stop[i]);
  dyn_tokens_free(&j->seq);
  free((char *)j->ereq.request_id);
  dyn_detok_free(j->detok);
  free(j->worker_body);
  free(j->held);
  free(j);
}

/* Ends the upstream request, once; the job is freed when nothing refers to
 * it any more (the streams' on_done run later or already did). */
static void job_end(job_t *j) {
  if (!j->req) return;
  dyn_request_end(j->req);
  j->req = NULL;
}

static void job_fail(job_t *j, int status, const char *message) {
  if (!j->req) return;
  dyn__proto_fail(j->req, status, "%s", message);
  j->req = NULL;
}

/* A call to the Router or a Worker failed: its own error as it said, the
 * runtime's mapped by the protocol (no live instance: 503, with what is
 * missing named). */
static void job_relay(job_t *j, int status, const char *message, const char *no_instance) {
  dyn__proto_error_t e;
  dyn__proto_error_decode(status, message, &e);
  job_fail(j, e.status, status == DYN_ENOINSTANCE ? no_instance : e.message);
}

static void job_maybe_free(job_t *j) {
  if (!j->req && !j->router_call && !j->engine) job_free(j);
}

static void send_delta(job_t *j, const char *text, size_t len, size_t n_tokens) {
  if (!j->req) return;
  dyn__proto_delta_t d = {.text = text, .text_len = len, .n_tokens = (long long)n_tokens};
  if (n_tokens && j->token_lp) {
    d.logprobs = j->token_lp;
    d.n_logprobs = 1;
    j->token_lp = NULL;
  }
  dyn__proto_send(j->req, dyn__proto_delta_encode(&d));
}

/* The engine's log-probabilities of one token as OpenAI shows them: each
 * token id by the bytes it decodes to. */
static void token_logprob(const processor_t *p, uint32_t id, const dyn_engine_logprob_t *in,
                          dyn__oai_logprob_t *out) {
  static const uint8_t none[1];
  out->token.bytes = dyn_tokenizer_token_bytes(p->tk, id, &out->token.len);
  if (!out->token.bytes) out->token.bytes = none, out->token.len = 0;
  out->token.logprob = in->logprob;
  out->n_top = in->n_top < DYN__OAI_MAX_TOP_LOGPROBS ? in->n_top : DYN__OAI_MAX_TOP_LOGPROBS;
  for (uint32_t k = 0; k < out->n_top; k++) {
    dyn__oai_token_lp_t *t = &out->top[k];
    t->bytes = dyn_tokenizer_token_bytes(p->tk, in->top_ids[k], &t->len);
    if (!t->bytes) t->bytes = none, t->len = 0;
    t->logprob = in->top_logprobs[k];
  }
}

static void send_final(job_t *j) {
  if (!j->req) return;
  dyn__proto_delta_t d = {
      .finish_reason = j->finish,
      .prompt_tokens = (long long)j->prompt_tokens,
      .completion_tokens = (long long)j->completion_tokens,
      .cached_tokens = (long long)j->cached_tokens,
  };
  dyn__proto_send(j->req, dyn__proto_delta_encode(&d));
  job_end(j);
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

/* Appends what the engine generated to seq, for a migration to resend. */
static int keep_generated(job_t *j, const uint32_t *ids, size_t n) {
  if (dyn__grow((void **)&j->seq.ids, &j->seq.cap, j->seq.len + n, sizeof *j->seq.ids))
    return DYN_ENOMEM;
  memcpy(j->seq.ids + j->seq.len, ids, n * sizeof *ids);
  j->seq.len += n;
  return DYN_OK;
}

static void engine_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  job_t *j = ud;
  if (!j->req || j->finish) return;
  dyn__proto_engine_output_t m;
  const char *why;
  if (dyn__proto_engine_output_decode(data, len, &m, &why)) {
    job_fail(j, 500, why);
    dyn_stream_cancel(s); /* runs engine_done, which may free j */
    return;
  }
  /* The prompt's cache hit is the first worker's; a migration's target
   * reports on the prompt plus what was generated. */
  if (m.cached_tokens >= 0 && j->migrations_left == j->p->migration_limit)
    j->cached_tokens = (size_t)m.cached_tokens;
  int stop_token = 0, stop_string = 0;
  uint64_t t0 = uv_hrtime();
  if (keep_generated(j, m.token_ids, m.n_tokens)) {
    dyn__proto_engine_output_free(&m);
    job_fail(j, 500, "out of memory");
    dyn_stream_cancel(s);
    return;
  }
  for (size_t i = 0; i < m.n_tokens; i++) {
    uint32_t id = m.token_ids[i];
    j->completion_tokens++;
    /* ignore_eos (as vLLM takes it): the template's end-of-turn ids do not
     * end the answer either; only max_tokens and stop strings do. */
    if (!j->ereq.ignore_eos && is_stop_id(j->p, id)) {
      stop_token = 1;
      break;
    }
    const char *piece;
    size_t n;
    dyn__oai_logprob_t lp;
    if (m.logprobs) {
      token_logprob(j->p, id, &m.logprobs[i], &lp);
      j->token_lp = &lp;
    }
    int stop = dyn_detok_push(j->detok, id, &piece, &n) == DYN_OK && emit_text(j, piece, n, 1);
    j->token_lp = NULL;
    if (stop) {
      stop_string = 1;
      break;
    }
  }
  dyn__proto_finish_t fr = m.finish;
  dyn__proto_engine_output_free(&m);
  if (j->p->detokenize_seconds)
    dyn_series_observe(j->p->detokenize_seconds, (double)(uv_hrtime() - t0) / 1e9);
  int stopped = stop_token || stop_string;
  if (stopped || fr != DYN__PROTO_GOING) {
    /* The answer ended without a stop string in it: what the detokenizer
     * and the stop-string look-behind still hold is part of it. */
    const char *piece;
    size_t n;
    if (!stop_string && dyn_detok_flush(j->detok, &piece, &n) == DYN_OK &&
        !emit_text(j, piece, n, 0) && j->held_len)
      send_delta(j, j->held, j->held_len, 0);
    j->finish = !stopped && fr == DYN__PROTO_LENGTH ? "length" : "stop";
    send_final(j);
    /* The engine would go on generating what nobody reads. */
    if (stopped && j->engine) dyn_stream_cancel(s);
  }
}

static void migrate(job_t *j, uint64_t lost, const char *why);

/* A stream that broke rather than failed: the worker or the way to it is
 * gone, and nothing says the request itself was at fault. */
static int broken(int status) {
  return status == DYN_EDISCONNECTED || status == DYN_ECONNECT || status == DYN_ECLOSED;
}

static void engine_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  job_t *j = ud;
  j->engine = NULL;
  if (j->req && !j->finish) {
    if (status == DYN_OK) job_fail(j, 500, "the engine ended the stream early");
    else if (broken(status) && j->migrations_left > 0)
      migrate(j, dyn_stream_instance_id(s), message);
    else job_relay(j, status, message, "no engine worker is live");
  }
  job_maybe_free(j);
}

/* After a migration: a live worker other than the one just lost, if there
 * is one (the lost one may still be listed until discovery hears of it). */
static int other_worker(job_t *j, uint64_t *id) {
  uint64_t ids[64];
  size_t n = dyn_client_instances(j->p->worker, ids, 64);
  if (n > 64) n = 64;
  size_t start = (size_t)(j->completion_tokens + j->migrations_left); /* spread the load */
  for (size_t k = 0; k < n; k++) {
    uint64_t c = ids[(start + k) % n];
    if (c != j->lost_worker) {
      *id = c;
      return 1;
    }
  }
  return 0;
}

static void call_worker(job_t *j) {
  static const dyn_stream_callbacks_t cb = {engine_data, engine_done};
  dyn_call_options_t opt = {.route = j->p->route};
  if (j->have_worker && !(j->lost_worker && j->worker_id == j->lost_worker)) {
    opt.route = DYN_ROUTE_DIRECT;
    opt.instance_id = j->worker_id;
  } else if (j->lost_worker && other_worker(j, &opt.instance_id)) {
    opt.route = DYN_ROUTE_DIRECT;
  }
  int rc = dyn_client_generate(j->p->worker, &opt, j->worker_body, strlen(j->worker_body), &cb, j,
                               &j->engine);
  if (rc) {
    j->engine = NULL;
    job_relay(j, rc, NULL, "no engine worker is live");
  }
}

/* ---- the Router call ----------------------------------------------------- */

static void router_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  job_t *j = ud;
  dyn__proto_route_answer_t a;
  j->have_worker = !dyn__proto_route_answer_decode(data, len, &a);
  j->worker_id = a.worker_id;
}

static void router_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  job_t *j = ud;
  j->router_call = NULL;
  if (j->req) {
    if (status != DYN_OK) job_relay(j, status, message, "no Router is live");
    else if (!j->have_worker) job_fail(j, 500, "the Router answered without a worker_id");
    else call_worker(j);
  }
  job_maybe_free(j);
}

/* Asks the Router which worker should run the job's sequence (the prompt,
 * plus what was generated when migrating); router_done then calls it. */
static void ask_router(job_t *j) {
  static const dyn_stream_callbacks_t cb = {router_data, router_done};
  dyn__proto_route_request_t r = {.token_ids = j->seq.ids, .n_tokens = j->seq.len};
  char *rbody = dyn__proto_route_request_encode(&r);
  j->have_worker = 0;
  int rc = rbody ? dyn_client_generate(j->p->router, NULL, rbody, strlen(rbody), &cb, j,
                                       &j->router_call)
                 : DYN_ENOMEM;
  free(rbody);
  if (rc) {
    j->router_call = NULL;
    job_relay(j, rc, NULL, "no Router is live");
  }
}

/* The worker's stream broke mid-answer: resend the prompt and what was
 * generated to another worker, asking for what is left of max_tokens. */
static void migrate(job_t *j, uint64_t lost, const char *why) {
  processor_t *p = j->p;
  j->migrations_left--;
  j->lost_worker = lost;
  if (p->migrations) dyn_series_add(p->migrations, 1);
  char hex[17];
  dyn__llm_id_to_hex(lost, hex);
  dyn_log(DYN_LOG_WARN, "Processor: request %s lost worker %s after %zu tokens (%s); "
          "migrating it (%lld migrations left)", j->ereq.request_id ? j->ereq.request_id : "-",
          hex, j->completion_tokens, why ? why : "stream broke", j->migrations_left);
  j->ereq.token_ids = j->seq.ids;
  j->ereq.n_tokens = j->seq.len;
  j->ereq.max_tokens = (uint32_t)(j->max_tokens - (long long)j->completion_tokens);
  free(j->worker_body);
  j->worker_body = dyn__proto_engine_request_encode(&j->ereq);
  if (!j->worker_body) {
    job_fail(j, 500, "out of memory");
    return;
  }
  if (p->router) ask_router(j);
  else call_worker(j);
}

static void on_cancel(dyn_request_t *req, void *ud) {
  job_t *j = ud;
  dyn_request_fail(req, "cancelled"); /* nobody reads it: the caller left */
  j->req = NULL;
  /* At most one call is open at a time. Cancelling it runs its on_done
   * before returning, and that frees the job: do not touch j after. */
  dyn_stream_t *open = j->router_call ? j->router_call : j->engine;
  if (open) dyn_stream_cancel(open);
  else job_free(j);
}

/* ---- the request ---------------------------------------------------------- */

/* A request the Processor refuses: its HTTP status and message. */
typedef struct refusal {
  int status;
  char message[300];
} refusal_t;

static int refuse(refusal_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(refusal_t *r, int status, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(r->message, sizeof r->message, fmt, ap);
  va_end(ap);
  r->status = status;
  return status;
}

/* Renders the prompt text: chat messages through the template, or the
 * completion prompt as given. NULL with *why filled on a refusal. */
static char *prompt_text(processor_t *p, const dyn__proto_gen_request_t *in, refusal_t *why) {
  if (in->kind == DYN__OAI_COMPLETION) {
    if (!in->prompt) {
      refuse(why, 400, "prompt must be a string");
      return NULL;
    }
    char *out = strdup(in->prompt);
    if (!out) refuse(why, 500, "out of memory");
    return out;
  }
  char *out = NULL, err[256];
  size_t len;
  if (dyn_chat_template_render_json(&p->tmpl, (const struct json_t *)in->messages, true, &out,
                                    &len, err, sizeof err)) {
    refuse(why, 400, "%s", err);
    return NULL;
  }
  return out;
}

/* Puts BOS before the prompt when the model asks for it (a GGUF's
 * tokenizer.ggml.add_bos_token), as llama-server does for completions and
 * chat alike; a prompt that already starts with BOS (a template that
 * renders it, or a completion prompt that spells it) keeps the one it has,
 * as llama.cpp's chat code strips the template's before it adds its own. */
static int add_bos(const processor_t *p, dyn_tokens_t *ids) {
  if (p->bos < 0 || (ids->len && ids->ids[0] == (uint32_t)p->bos)) return DYN_OK;
  if (ids->len == ids->cap) {
    size_t cap = ids->cap ? 2 * ids->cap : 16;
    uint32_t *grown = realloc(ids->ids, cap * sizeof *grown);
    if (!grown) return DYN_ENOMEM;
    ids->ids = grown;
    ids->cap = cap;
  }
  memmove(ids->ids + 1, ids->ids, ids->len * sizeof *ids->ids);
  ids->ids[0] = (uint32_t)p->bos;
  ids->len++;
  return DYN_OK;
}

/* The prompt's token ids, or a refusal (the prompt does not fit). */
static int tokenize(processor_t *p, const dyn__proto_gen_request_t *in, long long max_tokens,
                    dyn_tokens_t *ids, refusal_t *why) {
  if (max_tokens < 1) return refuse(why, 400, "max_tokens must be at least 1");
  if (max_tokens > p->context_length)
    return refuse(why, 400,
                  "This model's maximum context length is %lld tokens. However, you requested "
                  "%lld tokens in the completion alone.", p->context_length, max_tokens);
  char *text = prompt_text(p, in, why);
  if (!text) return why->status;
  size_t text_len = strlen(text);
  /* No token is longer than the longest in the vocabulary, so a prompt of
   * more bytes than that many tokens can hold is refused before the
   * tokenizer spends (loop) time on it: every request shares this loop. */
  int rc = 0;
  if (text_len > (size_t)p->context_length * p->max_token_bytes)
    rc = refuse(why, 400,
                "This model's maximum context length is %lld tokens; the prompt is %zu bytes, "
                "more than that many tokens can hold.", p->context_length, text_len);
  else if ((rc = dyn_tokenizer_encode(p->tk, text, text_len, ids)) || (rc = add_bos(p, ids)))
    rc = rc == DYN_ENOMEM ? refuse(why, 500, "out of memory")
                          : refuse(why, 400, "the prompt is not valid UTF-8");
  free(text);
  if (!rc && (long long)ids->len + max_tokens > p->context_length)
    rc = refuse(why, 400,
                "This model's maximum context length is %lld tokens. However, you requested "
                "%lld tokens (%zu in the messages, %lld in the completion).",
                p->context_length, (long long)ids->len + max_tokens, ids->len, max_tokens);
  return rc;
}

/* The job for a request that fits: its worker request encoded, its stop
 * strings copied. NULL when out of memory. */
static job_t *job_new(processor_t *p, dyn_request_t *req, const dyn__proto_gen_request_t *in,
                      dyn_tokens_t *ids, long long max_tokens) {
  job_t *j = calloc(1, sizeof *j);
  if (!j) return NULL;
  j->p = p;
  j->prompt_tokens = ids->len;
  j->max_tokens = max_tokens;
  j->migrations_left = p->migration_limit;
  dyn__proto_engine_request_t w = {
      .token_ids = ids->ids,
      .n_tokens = ids->len,
      .max_tokens = (uint32_t)max_tokens,
      .ignore_eos = in->ignore_eos,
      .has_seed = in->has_seed,
      .seed = (uint64_t)in->seed,
      .has_temperature = in->has_temperature,
      .temperature = in->temperature,
      .top_p = in->top_p,
      .top_k = in->top_k,
      .logprobs = in->logprobs,
      .top_logprobs = in->top_logprobs,
      .request_id = in->request_id,
  };
  j->worker_body = dyn__proto_engine_request_encode(&w);
  /* Kept for a migration: the ids (taken from the caller) and the
   * request's settings. */
  j->seq = *ids;
  *ids = (dyn_tokens_t){0};
  j->ereq = w;
  j->ereq.request_id = in->request_id ? strdup(in->request_id) : NULL;
  int ok = j->worker_body && (!in->request_id || j->ereq.request_id) &&
           !dyn_detok_new(p->tk, DYN_DETOK_SKIP_SPECIAL, &j->detok);
  for (size_t i = 0; ok && i < in->n_stop; i++) {
    size_t n = strlen(in->stop[i]);
    ok = (j->stop[j->n_stop++] = strdup(in->stop[i])) != NULL;
    if (n > j->max_stop_len) j->max_stop_len = n;
  }
  if (!ok) {
    job_free(j);
    return NULL;
  }
  j->req = req;
  return j;
}

static void generate(dyn_request_t *req, const void *body, size_t len, void *ud) {
  processor_t *p = dyn_service_data(ud);
  dyn__proto_gen_request_t in;
  const char *bad;
  int rc = dyn__proto_gen_request_decode(body, len, &in, &bad);
  if (rc) {
    dyn__proto_fail(req, rc == DYN_ENOMEM ? 500 : 400, "%s", rc == DYN_ENOMEM ? "out of memory" : bad);
    return;
  }
  long long max_tokens = in.has_max_tokens ? in.max_tokens : p->default_max_tokens;
  dyn_tokens_t ids = {0};
  refusal_t why;
  job_t *j = NULL;
  uint64_t t0 = uv_hrtime();
  int refused = tokenize(p, &in, max_tokens, &ids, &why);
  if (p->tokenize_seconds) dyn_series_observe(p->tokenize_seconds, (double)(uv_hrtime() - t0) / 1e9);
  if (!refused && !(j = job_new(p, req, &in, &ids, max_tokens)))
    refuse(&why, 500, "out of memory");
  dyn__proto_gen_request_free(&in);
  if (!j) {
    dyn_tokens_free(&ids);
    dyn__proto_fail(req, why.status, "%s", why.message);
    return;
  }
  dyn_request_on_cancel(req, on_cancel, j);
  if (p->router) ask_router(j);
  else call_worker(j);
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
  int rc = dyn_tokenizer_load_file(use, &p->tk, err, sizeof err);
  if (rc) dyn_log(DYN_LOG_ERROR, "Processor: %s", err);
  return rc;
}

/* The chat template: the config's family (chosen, NULL when it names
 * none), else the model file's own template when it is a family we render,
 * else the family the tokenizer's special tokens suggest. */
static int choose_template(processor_t *p, const dyn_chat_family_t *chosen) {
  const char *jinja = dyn_tokenizer_chat_template(p->tk);
  char err[256];
  if (chosen) {
    p->tmpl.family = *chosen;
    return DYN_OK;
  }
  int rc = jinja ? dyn_chat_template_parse(jinja, &p->tmpl, err, sizeof err) : DYN_EINVAL;
  if (rc == DYN_ENOMEM) return rc;
  if (rc) {
    p->tmpl.family = dyn_chat_detect(p->tk);
    if (jinja)
      dyn_log(DYN_LOG_WARN, "Processor: %s; using the %s template (set chat-template to choose)",
              err, dyn_chat_family_name(p->tmpl.family));
  }
  return DYN_OK;
}

static void processor_free(processor_t *p) {
  dyn_chat_template_free(&p->tmpl);
  dyn_tokenizer_free(p->tk);
  free(p);
}

/* Tokenizing a prompt (template and encoding) and detokenizing each
 * engine message, as Prometheus histograms. Metrics are for operators: a
 * Processor that cannot register them serves anyway. */
static void metrics_init(processor_t *p) {
  static const char *const labels[] = {"namespace", "component", "instance", NULL};
  static const double secs[] = {1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3,
                                1e-2, 2.5e-2, 5e-2, 0.1};
  char instance[17];
  dyn__llm_id_to_hex(dyn_runtime_instance_id(dyn_service_runtime(p->ctx)), instance);
  const dyn_service_def_t *d = dyn_service_def(p->ctx);
  const char *v[] = {dyn_service_namespace(d), d->name, instance};
  dyn_metrics_t *reg = dyn_metrics_default();
  dyn_metric_t *tok, *detok, *mig;
  int rc = reg ? DYN_OK : DYN_ENOMEM;
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_HISTOGRAM, "dynamo_processor_tokenize_seconds",
                                "Time to render and tokenize a prompt.", labels, secs,
                                sizeof secs / sizeof *secs, &tok);
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_HISTOGRAM,
                                "dynamo_processor_detokenize_seconds",
                                "Time to detokenize one engine message and check stops.", labels,
                                secs, sizeof secs / sizeof *secs, &detok);
  if (!rc) rc = dyn_metrics_add(reg, DYN_METRIC_COUNTER, "dynamo_processor_migrations_total",
                                "Requests sent to another worker after theirs broke mid-answer.",
                                labels, NULL, 0, &mig);
  if (!rc && (!(p->tokenize_seconds = dyn_metric_series(tok, v)) ||
              !(p->detokenize_seconds = dyn_metric_series(detok, v)) ||
              !(p->migrations = dyn_metric_series(mig, v))))
    rc = DYN_ENOMEM;
  if (rc) {
    p->tokenize_seconds = p->detokenize_seconds = p->migrations = NULL;
    dyn_log(DYN_LOG_WARN, "Processor: no metrics on /metrics: %s", dyn_strerror(rc));
  }
}

static int processor_start(dyn_service_ctx_t *ctx) {
  dyn__llm_cfg_t c;
  dyn__llm_cfg_init(&c, ctx);
  char model[4096];
  const char *path = dyn__llm_cfg_string(&c, "tokenizer", NULL);
  if (!path) path = dyn__llm_model_file(&c, model, sizeof model);
  const char *fam = dyn__llm_cfg_string(&c, "chat-template", NULL);
  dyn_chat_family_t family;
  if (fam && dyn_chat_family_from_name(fam, &family)) {
    char what[128] = "one of the built-in families:";
    for (int f = DYN_CHAT_PLAIN; f <= DYN_CHAT_PHI3; f++)
      snprintf(what + strlen(what), sizeof what - strlen(what), " %s",
               dyn_chat_family_name((dyn_chat_family_t)f));
    dyn__llm_cfg_reject(&c, "chat-template", what);
  }
  long long context_length = dyn__llm_cfg_int(&c, "context-length", 8192, 1, LLONG_MAX);
  long long max_tokens = dyn__llm_cfg_int(&c, "max-tokens", 256, 1, LLONG_MAX);
  long long migration_limit = dyn__llm_cfg_int(&c, "migration-limit", 3, 0, LLONG_MAX);
  const char *route = dyn__llm_cfg_string(&c, "route", "round-robin");
  if (strcmp(route, "round-robin") && strcmp(route, "random"))
    dyn__llm_cfg_reject(&c, "route", "round-robin or random");
  if (c.bad) return DYN_EINVAL;
  if (!path) {
    dyn_log(DYN_LOG_ERROR, "Processor: config key 'tokenizer' (a tokenizer.json or .gguf file) or "
                           "'model' (a .gguf file or a model name) is required");
    return DYN_EINVAL;
  }
  processor_t *p = calloc(1, sizeof *p);
  if (!p) return DYN_ENOMEM;
  p->ctx = ctx;
  int rc = load_tokenizer(p, path);
  if (rc) {
    processor_free(p);
    return rc == DYN_ENOMEM ? rc : DYN_EINVAL;
  }
  if ((rc = choose_template(p, fam ? &family : NULL))) {
    processor_free(p);
    return rc;
  }
  p->n_stop_ids = dyn_chat_stop_ids(p->tmpl.family, p->tk, p->stop_ids, MAX_STOP);
  if (p->n_stop_ids > MAX_STOP) p->n_stop_ids = MAX_STOP;
  for (uint32_t id = 0, n = dyn_tokenizer_vocab_size(p->tk); id < n; id++) {
    size_t len = 0;
    /* The byte-level form is at least as long as the bytes it stands for. */
    if (dyn_tokenizer_token_str(p->tk, id, &len) && len > p->max_token_bytes)
      p->max_token_bytes = len;
  }
  if (p->max_token_bytes == 0) p->max_token_bytes = 1;
  uint32_t bos;
  p->bos = dyn_tokenizer_add_bos(p->tk) && !dyn_tokenizer_bos_id(p->tk, &bos) ? (int64_t)bos : -1;
  p->context_length = context_length;
  p->default_max_tokens = max_tokens;
  p->migration_limit = migration_limit;
  p->route = !strcmp(route, "random") ? DYN_ROUTE_RANDOM : DYN_ROUTE_ROUND_ROBIN;
  p->worker = dyn_service_client(ctx, "Worker", "generate");
  if (dyn_service_has_dependency(ctx, "Router")) p->router = dyn_service_client(ctx, "Router", "generate");
  if (!p->worker) {
    dyn_log(DYN_LOG_ERROR, "Processor: no client for Worker/generate");
    processor_free(p);
    return DYN_EINVAL;
  }
  metrics_init(p);
  dyn_service_set_data(ctx, p);
  dyn_log(DYN_LOG_INFO, "Processor: tokenizer %s (%u ids%s), template %s%s, routing %s", path,
          dyn_tokenizer_vocab_size(p->tk), p->bos >= 0 ? ", BOS before each prompt" : "",
          dyn_chat_family_name(p->tmpl.family),
          p->tmpl.default_system ? " with a default system prompt" : "",
          p->router ? "by the Router" : route);
  return DYN_OK;
}

static void processor_shutdown(dyn_service_ctx_t *ctx) {
  processor_t *p = dyn_service_data(ctx);
  if (!p) return;
  processor_free(p);
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
