/* openai.c - validating OpenAI requests and writing OpenAI responses.
 *
 * Validation follows what OpenAI-compatible servers (vLLM, NVIDIA Dynamo)
 * accept: the fields the stack acts on are type- and range-checked, with a
 * 400 that names the field; fields it does not know pass through untouched
 * (clients send many), and null means "not given", as in OpenAI's schema.
 *
 * Streamed chunks are the hot path: one per delta. They are written as text
 * into a caller's buffer from a prefix built once per request, so a delta
 * costs one escape pass over its text and no JSON tree.
 */
#include "llm/services/openai.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/http.h"
#include "dynamo/status.h"
#include "common/json_escape.h"

/* ---- validation -------------------------------------------------------- */

static int fail(dyn__oai_error_t *err, const char *param, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof err->message, fmt, ap);
  va_end(ap);
  err->status = 400;
  err->param = param;
  return DYN_EINVAL;
}

/* The field if given and not null, else NULL. */
static const json_t *opt(const json_t *req, const char *key) {
  const json_t *v = json_object_get(req, key);
  return json_is_null(v) ? NULL : v;
}

static int check_positive_int(const json_t *req, const char *key, dyn__oai_error_t *err) {
  const json_t *v = opt(req, key);
  if (!v) return DYN_OK;
  if (!json_is_integer(v)) return fail(err, key, "'%s' must be an integer", key);
  if (json_integer_value(v) < 1)
    return fail(err, key, "'%s' must be at least 1, got %lld", key,
                (long long)json_integer_value(v));
  return DYN_OK;
}

/* lo_open: the range excludes lo. */
static int check_number(const json_t *req, const char *key, double lo, int lo_open, double hi,
                        dyn__oai_error_t *err) {
  const json_t *v = opt(req, key);
  if (!v) return DYN_OK;
  if (!json_is_number(v)) return fail(err, key, "'%s' must be a number", key);
  double x = json_number_value(v);
  if (isnan(x) || x > hi || (lo_open ? x <= lo : x < lo))
    return fail(err, key, "'%s' must be in %s%g, %g], got %g", key, lo_open ? "(" : "[", lo, hi,
                x);
  return DYN_OK;
}

static int check_bool(const json_t *req, const char *key, dyn__oai_error_t *err) {
  const json_t *v = opt(req, key);
  if (v && !json_is_boolean(v)) return fail(err, key, "'%s' must be a boolean", key);
  return DYN_OK;
}

static int check_stop(const json_t *req, dyn__oai_error_t *err) {
  const json_t *v = opt(req, "stop");
  if (!v || json_is_string(v)) return DYN_OK;
  if (!json_is_array(v)) return fail(err, "stop", "'stop' must be a string or an array of strings");
  size_t i;
  const json_t *s;
  json_array_foreach(v, i, s) {
    if (!json_is_string(s))
      return fail(err, "stop", "'stop[%zu]' must be a string", i);
  }
  return DYN_OK;
}

static int known_role(const char *r) {
  static const char *const roles[] = {"system", "user", "assistant", "tool", "developer", NULL};
  for (size_t i = 0; roles[i]; i++)
    if (!strcmp(r, roles[i])) return 1;
  return 0;
}

/* content: a string, or an array of {"type":"text","text":string} parts;
 * an assistant turn may have none (it carried tool calls). */
static int check_content(const json_t *m, size_t i, const char *role, dyn__oai_error_t *err) {
  const json_t *c = opt(m, "content");
  if (!c) {
    if (!strcmp(role, "assistant")) return DYN_OK;
    return fail(err, "messages", "'messages[%zu].content' is required", i);
  }
  if (json_is_string(c)) return DYN_OK;
  if (!json_is_array(c))
    return fail(err, "messages", "'messages[%zu].content' must be a string or an array of parts", i);
  size_t k;
  const json_t *part;
  json_array_foreach(c, k, part) {
    const char *type = json_string_value(json_object_get(part, "type"));
    if (!type || strcmp(type, "text"))
      return fail(err, "messages",
                  "'messages[%zu].content[%zu]': only parts of type 'text' are supported", i, k);
    if (!json_is_string(json_object_get(part, "text")))
      return fail(err, "messages", "'messages[%zu].content[%zu].text' must be a string", i, k);
  }
  return DYN_OK;
}

static int check_messages(const json_t *req, dyn__oai_error_t *err) {
  const json_t *msgs = opt(req, "messages");
  if (!msgs) return fail(err, "messages", "'messages' is required");
  if (!json_is_array(msgs)) return fail(err, "messages", "'messages' must be an array");
  if (!json_array_size(msgs)) return fail(err, "messages", "'messages' must not be empty");
  size_t i;
  const json_t *m;
  json_array_foreach(msgs, i, m) {
    if (!json_is_object(m)) return fail(err, "messages", "'messages[%zu]' must be an object", i);
    const char *role = json_string_value(json_object_get(m, "role"));
    if (!role) return fail(err, "messages", "'messages[%zu].role' must be a string", i);
    if (!known_role(role))
      return fail(err, "messages",
                  "'messages[%zu].role' must be one of system, user, assistant, tool, developer; "
                  "got '%.64s'", i, role);
    int rc = check_content(m, i, role, err);
    if (rc) return rc;
  }
  return DYN_OK;
}

static int check_prompt(const json_t *req, dyn__oai_error_t *err) {
  const json_t *p = opt(req, "prompt");
  if (!p) return fail(err, "prompt", "'prompt' is required");
  if (json_is_string(p)) return DYN_OK;
  if (!json_is_array(p)) return fail(err, "prompt", "'prompt' must be a string");
  if (json_array_size(p) == 1 && json_is_string(json_array_get(p, 0))) return DYN_OK;
  const json_t *first = json_array_get(p, 0);
  if (json_is_integer(first) || json_is_array(first))
    return fail(err, "prompt", "token-id prompts are not supported; send 'prompt' as a string");
  if (json_array_size(p) > 1)
    return fail(err, "prompt", "batched prompts are not supported; send one prompt per request");
  return fail(err, "prompt", "'prompt' must be a string or an array of one string");
}

static int check_stream(const json_t *req, dyn__oai_info_t *info, dyn__oai_error_t *err) {
  int rc = check_bool(req, "stream", err);
  if (rc) return rc;
  info->stream = json_is_true(json_object_get(req, "stream"));
  const json_t *so = opt(req, "stream_options");
  if (!so) return DYN_OK;
  if (!json_is_object(so)) return fail(err, "stream_options", "'stream_options' must be an object");
  const json_t *iu = opt(so, "include_usage");
  if (iu && !json_is_boolean(iu))
    return fail(err, "stream_options", "'stream_options.include_usage' must be a boolean");
  info->include_usage = json_is_true(iu);
  return DYN_OK;
}

/* Chat: "logprobs" a boolean, "top_logprobs" 0..20 and only with it;
 * completions: "logprobs" the number of alternatives, 0..5 (OpenAI's
 * limits). */
static int check_logprobs(const json_t *req, dyn__oai_kind_t kind, dyn__oai_error_t *err) {
  const json_t *lp = opt(req, "logprobs");
  if (kind == DYN__OAI_COMPLETION) {
    if (!lp) return DYN_OK;
    if (!json_is_integer(lp)) return fail(err, "logprobs", "'logprobs' must be an integer");
    if (json_integer_value(lp) < 0 || json_integer_value(lp) > 5)
      return fail(err, "logprobs", "'logprobs' must be in [0, 5], got %lld",
                  (long long)json_integer_value(lp));
    return DYN_OK;
  }
  int rc = check_bool(req, "logprobs", err);
  if (rc) return rc;
  const json_t *top = opt(req, "top_logprobs");
  if (!top) return DYN_OK;
  if (!json_is_integer(top)) return fail(err, "top_logprobs", "'top_logprobs' must be an integer");
  if (json_integer_value(top) < 0 || json_integer_value(top) > DYN__OAI_MAX_TOP_LOGPROBS)
    return fail(err, "top_logprobs", "'top_logprobs' must be in [0, 20], got %lld",
                (long long)json_integer_value(top));
  if (!json_is_true(lp))
    return fail(err, "top_logprobs", "'top_logprobs' requires 'logprobs' to be true");
  return DYN_OK;
}

/* top_k, as vLLM takes it: an integer, -1 or 0 for no limit. */
static int check_top_k(const json_t *req, dyn__oai_error_t *err) {
  const json_t *v = opt(req, "top_k");
  if (!v) return DYN_OK;
  if (!json_is_integer(v)) return fail(err, "top_k", "'top_k' must be an integer");
  if (json_integer_value(v) < -1)
    return fail(err, "top_k", "'top_k' must be -1 (no limit) or more, got %lld",
                (long long)json_integer_value(v));
  return DYN_OK;
}

static int check_n(const json_t *req, dyn__oai_error_t *err) {
  const json_t *n = opt(req, "n");
  if (!n) return DYN_OK;
  if (!json_is_integer(n)) return fail(err, "n", "'n' must be an integer");
  if (json_integer_value(n) != 1)
    return fail(err, "n", "'n' must be 1: one choice per request is supported, got %lld",
                (long long)json_integer_value(n));
  return DYN_OK;
}

int dyn__oai_validate(const json_t *req, dyn__oai_kind_t kind, dyn__oai_info_t *info,
                      dyn__oai_error_t *err) {
  memset(info, 0, sizeof *info);
  if (!json_is_object(req)) return fail(err, NULL, "the request body must be a JSON object");
  const json_t *model = opt(req, "model");
  if (!model) return fail(err, "model", "'model' is required");
  if (!json_is_string(model)) return fail(err, "model", "'model' must be a string");
  info->model = json_string_value(model);
  int rc = kind == DYN__OAI_CHAT ? check_messages(req, err) : check_prompt(req, err);
  if (!rc) rc = check_positive_int(req, "max_tokens", err);
  if (!rc) rc = check_positive_int(req, "max_completion_tokens", err);
  if (!rc) rc = check_number(req, "temperature", 0, 0, 2, err);
  if (!rc) rc = check_number(req, "top_p", 0, 1, 1, err);
  if (!rc) rc = check_number(req, "presence_penalty", -2, 0, 2, err);
  if (!rc) rc = check_number(req, "frequency_penalty", -2, 0, 2, err);
  if (!rc) rc = check_n(req, err);
  if (!rc) rc = check_stop(req, err);
  if (!rc) rc = check_logprobs(req, kind, err);
  if (!rc) rc = check_top_k(req, err);
  if (!rc) rc = check_stream(req, info, err);
  return rc;
}

/* ---- errors ------------------------------------------------------------ */

char *dyn__oai_error_json(int status, const char *message, const char *param) {
  json_t *e = json_pack("{s:{s:s, s:s, s:o, s:i}}", "error", "message", message ? message : "",
                        "type", dyn_http_error_type(status), "param",
                        param ? json_string(param) : json_null(), "code", status);
  char *s = e ? json_dumps(e, JSON_COMPACT) : NULL;
  json_decref(e);
  return s;
}

/* ---- JSON text --------------------------------------------------------- */

static int put(dyn__buf_t *b, const char *s) { return dyn__buf_append(b, s, strlen(s)); }

/* ---- streamed chunks --------------------------------------------------- */

int dyn__oai_stream_init(dyn__oai_stream_t *st, dyn__oai_kind_t kind, const char *id,
                         long long created, const char *model, int include_usage) {
  memset(st, 0, sizeof *st);
  st->kind = kind;
  st->include_usage = include_usage;
  char num[32];
  snprintf(num, sizeof num, "%lld", created);
  dyn__buf_t *b = &st->prefix;
  dyn__buf_init(b);
  int rc = put(b, "{\"id\":");
  if (!rc) rc = dyn__json_escape(b, id, strlen(id));
  if (!rc) rc = put(b, kind == DYN__OAI_CHAT ? ",\"object\":\"chat.completion.chunk\",\"created\":"
                                             : ",\"object\":\"text_completion\",\"created\":");
  if (!rc) rc = put(b, num);
  if (!rc) rc = put(b, ",\"model\":");
  if (!rc) rc = dyn__json_escape(b, model, strlen(model));
  if (!rc) rc = put(b, ",");
  if (rc) dyn__buf_free(b);
  return rc;
}

void dyn__oai_stream_free(dyn__oai_stream_t *st) { dyn__buf_free(&st->prefix); }

static int begin(const dyn__oai_stream_t *st, dyn__buf_t *out) {
  int rc = put(out, "data: ");
  if (!rc) rc = dyn__buf_append(out, st->prefix.data, st->prefix.len);
  return rc;
}

/* Closes a chunk: usage null while include_usage is on (as OpenAI does). */
static int end(const dyn__oai_stream_t *st, dyn__buf_t *out) {
  return put(out, st->include_usage ? ",\"usage\":null}\n\n" : "}\n\n");
}

/* ---- log-probabilities ------------------------------------------------- */

static int put_num(dyn__buf_t *b, double x) {
  char num[32];
  /* -inf (a token the model ruled out) reads as vLLM writes it. */
  snprintf(num, sizeof num, "%.9g", isfinite(x) ? x : -9999.0);
  return put(b, num);
}

static int put_bytes(dyn__buf_t *b, const dyn__oai_token_lp_t *t) {
  int rc = put(b, "[");
  for (size_t i = 0; !rc && i < t->len; i++) {
    char num[8];
    snprintf(num, sizeof num, i ? ",%u" : "%u", (unsigned)t->bytes[i]);
    rc = put(b, num);
  }
  return rc ? rc : put(b, "]");
}

/* {"token":..,"logprob":..,"bytes":[..]} without the closing brace. */
static int put_token(dyn__buf_t *b, const dyn__oai_token_lp_t *t) {
  int rc = put(b, "{\"token\":");
  if (!rc) rc = dyn__json_escape(b, (const char *)t->bytes, t->len);
  if (!rc) rc = put(b, ",\"logprob\":");
  if (!rc) rc = put_num(b, t->logprob);
  if (!rc) rc = put(b, ",\"bytes\":");
  if (!rc) rc = put_bytes(b, t);
  return rc;
}

/* A choice's "logprobs" value: null without entries; chat
 * {"content": [{"token","logprob","bytes","top_logprobs": [...]}]};
 * completions {"tokens","token_logprobs","top_logprobs","text_offset"},
 * offsets counted in bytes of the answer from text_offset on. */
static int put_logprobs(dyn__buf_t *b, dyn__oai_kind_t kind, const dyn__oai_logprob_t *lp,
                        size_t n, size_t text_offset) {
  if (!lp || !n) return put(b, "null");
  int rc = 0;
  if (kind == DYN__OAI_CHAT) {
    rc = put(b, "{\"content\":[");
    for (size_t i = 0; !rc && i < n; i++) {
      if (i) rc = put(b, ",");
      if (!rc) rc = put_token(b, &lp[i].token);
      if (!rc) rc = put(b, ",\"top_logprobs\":[");
      for (uint32_t k = 0; !rc && k < lp[i].n_top; k++) {
        if (k) rc = put(b, ",");
        if (!rc) rc = put_token(b, &lp[i].top[k]);
        if (!rc) rc = put(b, "}");
      }
      if (!rc) rc = put(b, "]}");
    }
    return rc ? rc : put(b, "]}");
  }
  rc = put(b, "{\"tokens\":[");
  for (size_t i = 0; !rc && i < n; i++) {
    if (i) rc = put(b, ",");
    if (!rc) rc = dyn__json_escape(b, (const char *)lp[i].token.bytes, lp[i].token.len);
  }
  if (!rc) rc = put(b, "],\"token_logprobs\":[");
  for (size_t i = 0; !rc && i < n; i++) {
    if (i) rc = put(b, ",");
    if (!rc) rc = put_num(b, lp[i].token.logprob);
  }
  if (!rc) rc = put(b, "],\"top_logprobs\":[");
  for (size_t i = 0; !rc && i < n; i++) {
    rc = put(b, i ? ",{" : "{");
    for (uint32_t k = 0; !rc && k < lp[i].n_top; k++) {
      if (k) rc = put(b, ",");
      if (!rc) rc = dyn__json_escape(b, (const char *)lp[i].top[k].bytes, lp[i].top[k].len);
      if (!rc) rc = put(b, ":");
      if (!rc) rc = put_num(b, lp[i].top[k].logprob);
    }
    if (!rc) rc = put(b, "}");
  }
  if (!rc) rc = put(b, "],\"text_offset\":[");
  for (size_t i = 0; !rc && i < n; i++) {
    char num[24];
    snprintf(num, sizeof num, i ? ",%zu" : "%zu", text_offset);
    text_offset += lp[i].token.len;
    rc = put(b, num);
  }
  return rc ? rc : put(b, "]}");
}

static int finish_field(dyn__buf_t *out, dyn__oai_kind_t kind, const char *finish_reason,
                        const dyn__oai_logprob_t *lp, size_t n_lp, size_t text_offset) {
  int rc = put(out, ",\"logprobs\":");
  if (!rc) rc = put_logprobs(out, kind, lp, n_lp, text_offset);
  if (!rc) rc = put(out, ",\"finish_reason\":");
  if (rc) return rc;
  if (!finish_reason) return put(out, "null}]");
  rc = dyn__json_escape(out, finish_reason, strlen(finish_reason));
  return rc ? rc : put(out, "}]");
}

int dyn__oai_chunk_role(const dyn__oai_stream_t *st, dyn__buf_t *out) {
  int rc = begin(st, out);
  if (!rc) rc = put(out, "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\","
                         "\"content\":\"\"},\"logprobs\":null,\"finish_reason\":null}]");
  return rc ? rc : end(st, out);
}

int dyn__oai_chunk_delta(const dyn__oai_stream_t *st, const char *text, size_t n,
                         const char *finish_reason, const dyn__oai_logprob_t *lp, size_t n_lp,
                         size_t text_offset, dyn__buf_t *out) {
  int rc = begin(st, out);
  if (rc) return rc;
  if (st->kind == DYN__OAI_CHAT) {
    if (n || !finish_reason) {
      rc = put(out, "\"choices\":[{\"index\":0,\"delta\":{\"content\":");
      if (!rc) rc = dyn__json_escape(out, text, n);
      if (!rc) rc = put(out, "}");
    } else {
      rc = put(out, "\"choices\":[{\"index\":0,\"delta\":{}");
    }
  } else {
    rc = put(out, "\"choices\":[{\"text\":");
    if (!rc) rc = dyn__json_escape(out, text, n);
    if (!rc) rc = put(out, ",\"index\":0");
  }
  if (!rc) rc = finish_field(out, st->kind, finish_reason, lp, n_lp, text_offset);
  return rc ? rc : end(st, out);
}

int dyn__oai_chunk_usage(const dyn__oai_stream_t *st, long long prompt, long long completion,
                         long long cached, dyn__buf_t *out) {
  char usage[256];
  snprintf(usage, sizeof usage,
           "\"choices\":[],\"usage\":{\"prompt_tokens\":%lld,\"completion_tokens\":%lld,"
           "\"total_tokens\":%lld,\"prompt_tokens_details\":{\"cached_tokens\":%lld}}}\n\n",
           prompt, completion, prompt + completion, cached);
  int rc = begin(st, out);
  return rc ? rc : put(out, usage);
}

/* ---- whole responses --------------------------------------------------- */

json_t *dyn__oai_usage(long long prompt, long long completion, long long cached) {
  return json_pack("{s:I, s:I, s:I, s:{s:I}}", "prompt_tokens", (json_int_t)prompt,
                   "completion_tokens", (json_int_t)completion, "total_tokens",
                   (json_int_t)(prompt + completion), "prompt_tokens_details", "cached_tokens",
                   (json_int_t)cached);
}

char *dyn__oai_response(dyn__oai_kind_t kind, const char *id, long long created,
                        const char *model, const char *text, size_t n,
                        const char *finish_reason, const dyn__oai_logprob_t *lp, size_t n_lp,
                        long long prompt, long long completion, long long cached) {
  json_t *choice;
  json_t *fr = finish_reason ? json_string(finish_reason) : json_null();
  dyn__buf_t lpb;
  dyn__buf_init(&lpb);
  json_t *lpv = put_logprobs(&lpb, kind, lp, n_lp, 0) ? NULL
                : json_loadb((const char *)lpb.data, lpb.len, JSON_DECODE_ANY, NULL);
  dyn__buf_free(&lpb);
  if (kind == DYN__OAI_CHAT)
    choice = json_pack("{s:i, s:{s:s, s:s%}, s:o, s:o}", "index", 0, "message", "role",
                       "assistant", "content", text, n, "logprobs", lpv, "finish_reason", fr);
  else
    choice = json_pack("{s:s%, s:i, s:o, s:o}", "text", text, n, "index", 0, "logprobs", lpv,
                       "finish_reason", fr);
  json_t *r = json_pack("{s:s, s:s, s:I, s:s, s:[o], s:o}", "id", id, "object",
                        kind == DYN__OAI_CHAT ? "chat.completion" : "text_completion", "created",
                        (json_int_t)created, "model", model, "choices", choice, "usage",
                        dyn__oai_usage(prompt, completion, cached));
  char *s = r ? json_dumps(r, JSON_COMPACT) : NULL;
  json_decref(r);
  return s;
}
