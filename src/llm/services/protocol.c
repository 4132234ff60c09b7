/* protocol.c - encoders and decoders of the LLM services' messages (see
 * protocol.h, the messages' one description).
 *
 * The messages that carry token ids (engine request and output, route
 * request) are the per-token hot path and can be long: they are written as
 * text straight into a buffer, with no JSON tree and no allocation per id.
 * The others go through jansson. Every decoder parses with jansson and
 * checks the type of each field it reads.
 */
#include "llm/services/protocol.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/json_escape.h"
#include "dynamo/status.h"
#include "llm/services/llm_common.h"

/* ---- writing text ------------------------------------------------------- */

static int put(dyn__buf_t *b, const char *s) { return dyn__buf_append(b, s, strlen(s)); }

static int put_u64(dyn__buf_t *b, uint64_t v) {
  char tmp[24], *p = tmp + sizeof tmp;
  do *--p = (char)('0' + v % 10); while (v /= 10);
  return dyn__buf_append(b, p, (size_t)(tmp + sizeof tmp - p));
}

static int put_tokens(dyn__buf_t *b, const uint32_t *ids, size_t n) {
  /* An id is at most 10 digits and a comma. */
  int rc = dyn__buf_reserve(b, n * 11 + 16);
  if (!rc) rc = put(b, "\"token_ids\":[");
  for (size_t i = 0; !rc && i < n; i++) {
    if (i) rc = dyn__buf_append(b, ",", 1);
    if (!rc) rc = put_u64(b, ids[i]);
  }
  if (!rc) rc = dyn__buf_append(b, "]", 1);
  return rc;
}

/* The buffer's text, NUL-terminated and handed over; NULL (and the buffer
 * freed) if rc says a write failed. */
static char *finish_text(dyn__buf_t *b, int rc) {
  if (!rc) rc = dyn__buf_append(b, "", 1);
  if (rc) {
    dyn__buf_free(b);
    return NULL;
  }
  return (char *)b->data;
}

static char *dump(json_t *v) {
  char *s = v ? json_dumps(v, JSON_COMPACT) : NULL;
  json_decref(v);
  return s;
}

/* ---- reading ------------------------------------------------------------ */

static json_t *parse_object(const void *data, size_t len) {
  json_error_t err;
  json_t *v = json_loadb(data, len, 0, &err);
  if (v && !json_is_object(v)) {
    json_decref(v);
    v = NULL;
  }
  return v;
}

static int get_int(const json_t *o, const char *key, long long *out) {
  const json_t *v = json_object_get(o, key);
  if (!json_is_integer(v)) return 0;
  *out = (long long)json_integer_value(v);
  return 1;
}

/* A count: absent or negative is 0. */
static uint64_t get_count(const json_t *o, const char *key) {
  long long v;
  return get_int(o, key, &v) && v > 0 ? (uint64_t)v : 0;
}

/* ---- Frontend -> Processor ---------------------------------------------- */

char *dyn__proto_gen_request_encode(const dyn__proto_gen_request_t *m) {
  return dump(json_pack("{s:s, s:s?, s:O}", "kind", m->kind == DYN__OAI_CHAT ? "chat" : "completion",
                        "request_id", m->request_id, "request", m->request));
}

static void read_stops(dyn__proto_gen_request_t *m, const json_t *stop) {
  if (json_is_string(stop)) {
    if (json_string_length(stop)) m->stop[m->n_stop++] = json_string_value(stop);
    return;
  }
  size_t i;
  const json_t *s;
  json_array_foreach(stop, i, s) {
    if (!json_is_string(s) || m->n_stop == DYN__PROTO_MAX_STOP) break;
    if (json_string_length(s)) m->stop[m->n_stop++] = json_string_value(s);
  }
}

int dyn__proto_gen_request_decode(const void *data, size_t len, dyn__proto_gen_request_t *m,
                                  const char **why) {
  memset(m, 0, sizeof *m);
  m->root_ = parse_object(data, len);
  const char *kind = json_string_value(json_object_get(m->root_, "kind"));
  m->request = json_object_get(m->root_, "request");
  if (!json_is_object(m->request) || !kind || (strcmp(kind, "chat") && strcmp(kind, "completion"))) {
    dyn__proto_gen_request_free(m);
    *why = "the Processor takes {\"kind\": \"chat\"|\"completion\", \"request\": {...}}";
    return DYN_EINVAL;
  }
  m->kind = !strcmp(kind, "chat") ? DYN__OAI_CHAT : DYN__OAI_COMPLETION;
  m->request_id = json_string_value(json_object_get(m->root_, "request_id"));
  const json_t *r = m->request;
  m->messages = json_object_get(r, "messages");
  const json_t *pr = json_object_get(r, "prompt");
  if (json_is_array(pr) && json_array_size(pr) == 1) pr = json_array_get(pr, 0);
  m->prompt = json_string_value(pr);
  m->has_max_tokens = get_int(r, "max_completion_tokens", &m->max_tokens) ||
                      get_int(r, "max_tokens", &m->max_tokens);
  m->ignore_eos = json_is_true(json_object_get(r, "ignore_eos"));
  m->has_seed = get_int(r, "seed", &m->seed);
  const json_t *t = json_object_get(r, "temperature");
  m->has_temperature = json_is_number(t);
  m->temperature = json_is_number(t) ? json_number_value(t) : 0;
  const json_t *tp = json_object_get(r, "top_p");
  m->top_p = json_is_number(tp) && json_number_value(tp) > 0 ? json_number_value(tp) : 0;
  long long k;
  m->top_k = get_int(r, "top_k", &k) && k > 0 ? k : 0;
  /* The Frontend checked the ranges (openai.c); clamp anyway. */
  long long top = 0;
  const json_t *lp = json_object_get(r, "logprobs");
  if (m->kind == DYN__OAI_CHAT) {
    m->logprobs = json_is_true(lp);
    if (m->logprobs) get_int(r, "top_logprobs", &top);
  } else if (json_is_integer(lp)) {
    m->logprobs = 1;
    top = json_integer_value(lp);
  }
  m->top_logprobs = (uint32_t)(top < 0 ? 0 : top > DYN__OAI_MAX_TOP_LOGPROBS ? DYN__OAI_MAX_TOP_LOGPROBS : top);
  read_stops(m, json_object_get(r, "stop"));
  return DYN_OK;
}

void dyn__proto_gen_request_free(dyn__proto_gen_request_t *m) {
  json_decref(m->root_);
  m->root_ = NULL;
}

/* ---- Processor -> Frontend ---------------------------------------------- */

static json_t *token_lp_json(const dyn__oai_token_lp_t *t) {
  json_t *b = json_array();
  for (size_t i = 0; b && i < t->len; i++) json_array_append_new(b, json_integer(t->bytes[i]));
  return json_pack("{s:o, s:f}", "b", b, "lp", t->logprob);
}

static json_t *logprobs_json(const dyn__oai_logprob_t *lp, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++) {
    json_t *e = token_lp_json(&lp[i].token), *top = json_array();
    for (uint32_t k = 0; top && k < lp[i].n_top; k++)
      json_array_append_new(top, token_lp_json(&lp[i].top[k]));
    if (!e || !top || json_object_set_new(e, "top", top) || json_array_append_new(a, e)) {
      json_decref(e);
      json_decref(a);
      return NULL;
    }
  }
  return a;
}

char *dyn__proto_delta_encode(const dyn__proto_delta_t *m) {
  const char *text = m->text ? m->text : "";
  size_t n = m->text ? m->text_len : 0;
  json_t *o;
  if (!m->finish_reason)
    o = json_pack("{s:s%, s:I, s:n}", "text", text, n, "n_tokens", (json_int_t)m->n_tokens,
                  "finish_reason");
  else
    o = json_pack("{s:s%, s:I, s:s, s:{s:I, s:I, s:I}}", "text", text, n, "n_tokens",
                  (json_int_t)m->n_tokens, "finish_reason", m->finish_reason, "usage",
                  "prompt_tokens", (json_int_t)m->prompt_tokens, "completion_tokens",
                  (json_int_t)m->completion_tokens, "cached_tokens",
                  (json_int_t)m->cached_tokens);
  if (o && m->logprobs && m->n_logprobs) {
    json_t *lp = logprobs_json(m->logprobs, m->n_logprobs);
    if (!lp || json_object_set_new(o, "logprobs", lp)) {
      json_decref(o);
      return NULL;
    }
  }
  return dump(o);
}

/* One {"b": [bytes], "lp": x} into t, its bytes appended at *next. */
static int token_lp_read(const json_t *v, dyn__oai_token_lp_t *t, uint8_t **next) {
  const json_t *b = json_object_get(v, "b"), *lp = json_object_get(v, "lp");
  if (!json_is_array(b) || !json_is_number(lp)) return DYN_EINVAL;
  t->bytes = *next;
  t->len = json_array_size(b);
  t->logprob = json_number_value(lp);
  for (size_t i = 0; i < t->len; i++) {
    const json_t *x = json_array_get(b, i);
    if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > 255)
      return DYN_EINVAL;
    *(*next)++ = (uint8_t)json_integer_value(x);
  }
  return DYN_OK;
}

static int logprobs_read(const json_t *a, dyn__proto_delta_t *m) {
  size_t n = json_array_size(a), total = 0, i;
  const json_t *e;
  json_array_foreach(a, i, e) {
    const json_t *top = json_object_get(e, "top");
    total += json_array_size(json_object_get(e, "b"));
    if (json_array_size(top) > DYN__OAI_MAX_TOP_LOGPROBS) return DYN_EINVAL;
    size_t k;
    const json_t *t;
    json_array_foreach(top, k, t) total += json_array_size(json_object_get(t, "b"));
  }
  m->lp_owned_ = calloc(n ? n : 1, sizeof *m->lp_owned_);
  m->lp_bytes_ = malloc(total ? total : 1);
  if (!m->lp_owned_ || !m->lp_bytes_) return DYN_ENOMEM;
  uint8_t *next = m->lp_bytes_;
  json_array_foreach(a, i, e) {
    const json_t *top = json_object_get(e, "top");
    if (!json_is_array(top) || token_lp_read(e, &m->lp_owned_[i].token, &next)) return DYN_EINVAL;
    m->lp_owned_[i].n_top = (uint32_t)json_array_size(top);
    for (uint32_t k = 0; k < m->lp_owned_[i].n_top; k++)
      if (token_lp_read(json_array_get(top, k), &m->lp_owned_[i].top[k], &next)) return DYN_EINVAL;
  }
  m->logprobs = m->lp_owned_;
  m->n_logprobs = n;
  return DYN_OK;
}

int dyn__proto_delta_decode(const void *data, size_t len, dyn__proto_delta_t *m) {
  memset(m, 0, sizeof *m);
  m->root_ = parse_object(data, len);
  const json_t *text = json_object_get(m->root_, "text");
  const json_t *fr = json_object_get(m->root_, "finish_reason");
  if (!m->root_ || (text && !json_is_string(text)) || (fr && !json_is_null(fr) && !json_is_string(fr))) {
    dyn__proto_delta_free(m);
    return DYN_EINVAL;
  }
  m->text = text ? json_string_value(text) : "";
  m->text_len = text ? json_string_length(text) : 0;
  get_int(m->root_, "n_tokens", &m->n_tokens);
  m->finish_reason = json_string_value(fr);
  const json_t *u = json_object_get(m->root_, "usage");
  get_int(u, "prompt_tokens", &m->prompt_tokens);
  m->completion_tokens = -1;
  get_int(u, "completion_tokens", &m->completion_tokens);
  get_int(u, "cached_tokens", &m->cached_tokens);
  const json_t *lp = json_object_get(m->root_, "logprobs");
  if (lp) {
    int rc = json_is_array(lp) ? logprobs_read(lp, m) : DYN_EINVAL;
    if (rc) {
      dyn__proto_delta_free(m);
      return rc;
    }
  }
  return DYN_OK;
}

void dyn__proto_delta_free(dyn__proto_delta_t *m) {
  json_decref(m->root_);
  free(m->lp_owned_);
  free(m->lp_bytes_);
  m->root_ = NULL;
  m->lp_owned_ = NULL;
  m->lp_bytes_ = NULL;
  m->logprobs = NULL;
}

/* ---- Processor -> Router ------------------------------------------------ */

char *dyn__proto_route_request_encode(const dyn__proto_route_request_t *m) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  int rc = put(&b, "{");
  if (!rc) rc = put_tokens(&b, m->token_ids, m->n_tokens);
  if (!rc) rc = put(&b, "}");
  return finish_text(&b, rc);
}

int dyn__proto_route_request_decode(const void *data, size_t len, dyn__proto_route_request_t *m,
                                    const char **why) {
  memset(m, 0, sizeof *m);
  json_t *o = parse_object(data, len);
  *why = "request must be a JSON object {\"token_ids\": [...]}";
  int rc = o ? dyn__llm_tokens_from_json(json_object_get(o, "token_ids"), &m->owned_,
                                         &m->n_tokens, why)
             : DYN_EINVAL;
  json_decref(o);
  m->token_ids = m->owned_;
  return rc;
}

void dyn__proto_route_request_free(dyn__proto_route_request_t *m) {
  free(m->owned_);
  m->owned_ = NULL;
}

/* ---- Router -> Processor ------------------------------------------------ */

char *dyn__proto_route_answer_encode(const dyn__proto_route_answer_t *m) {
  char hex[17];
  dyn__llm_id_to_hex(m->worker_id, hex);
  return dump(json_pack("{s:s, s:I, s:I}", "worker_id", hex, "overlap_blocks",
                        (json_int_t)m->overlap_blocks, "request_blocks",
                        (json_int_t)m->request_blocks));
}

int dyn__proto_route_answer_decode(const void *data, size_t len, dyn__proto_route_answer_t *m) {
  memset(m, 0, sizeof *m);
  json_t *o = parse_object(data, len);
  int rc = dyn__llm_id_from_hex(json_string_value(json_object_get(o, "worker_id")), &m->worker_id);
  m->overlap_blocks = (uint32_t)get_count(o, "overlap_blocks");
  m->request_blocks = (uint32_t)get_count(o, "request_blocks");
  json_decref(o);
  return rc;
}

/* ---- Processor -> Worker ------------------------------------------------ */

char *dyn__proto_engine_request_encode(const dyn__proto_engine_request_t *m) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  char num[64];
  int rc = put(&b, "{");
  if (!rc) rc = put_tokens(&b, m->token_ids, m->n_tokens);
  if (!rc) rc = put(&b, ",\"max_tokens\":");
  if (!rc) rc = put_u64(&b, m->max_tokens);
  if (!rc) rc = put(&b, m->ignore_eos ? ",\"ignore_eos\":true" : ",\"ignore_eos\":false");
  if (!rc && m->has_seed) {
    snprintf(num, sizeof num, ",\"seed\":%llu", (unsigned long long)m->seed);
    rc = put(&b, num);
  }
  if (!rc && m->has_temperature) {
    /* %.17g reads back as the same double. It came from JSON (the
     * client's request), so it is finite. */
    snprintf(num, sizeof num, ",\"temperature\":%.17g", m->temperature);
    rc = put(&b, num);
  }
  if (!rc && m->top_p > 0) {
    snprintf(num, sizeof num, ",\"top_p\":%.17g", m->top_p);
    rc = put(&b, num);
  }
  if (!rc && m->top_k > 0) {
    snprintf(num, sizeof num, ",\"top_k\":%lld", m->top_k);
    rc = put(&b, num);
  }
  if (!rc && m->logprobs) {
    snprintf(num, sizeof num, ",\"logprobs\":%u", (unsigned)m->top_logprobs);
    rc = put(&b, num);
  }
  if (!rc && m->request_id) {
    rc = put(&b, ",\"request_id\":");
    if (!rc) rc = dyn__json_escape(&b, m->request_id, strlen(m->request_id));
  }
  if (!rc) rc = put(&b, "}");
  return finish_text(&b, rc);
}

int dyn__proto_engine_request_decode(const void *data, size_t len,
                                     dyn__proto_engine_request_t *m, const char **why) {
  memset(m, 0, sizeof *m);
  m->root_ = parse_object(data, len);
  *why = "request must be a JSON object with token_ids";
  int rc = m->root_ ? dyn__llm_tokens_from_json(json_object_get(m->root_, "token_ids"),
                                                &m->owned_, &m->n_tokens, why)
                    : DYN_EINVAL;
  if (rc) {
    dyn__proto_engine_request_free(m);
    return rc;
  }
  m->token_ids = m->owned_;
  const json_t *mt = json_object_get(m->root_, "max_tokens");
  long long v = 0;
  m->max_tokens = !mt ? 16
                  : get_int(m->root_, "max_tokens", &v) && v > 0 && v <= (long long)UINT32_MAX
                      ? (uint32_t)v : 0;
  m->ignore_eos = json_is_true(json_object_get(m->root_, "ignore_eos"));
  long long seed;
  m->has_seed = get_int(m->root_, "seed", &seed);
  m->seed = m->has_seed ? (uint64_t)seed : 0;
  const json_t *t = json_object_get(m->root_, "temperature");
  m->has_temperature = json_is_number(t);
  m->temperature = json_is_number(t) ? json_number_value(t) : 1.0;
  const json_t *tp = json_object_get(m->root_, "top_p");
  m->top_p = json_is_number(tp) && json_number_value(tp) > 0 ? json_number_value(tp) : 0;
  long long k;
  m->top_k = get_int(m->root_, "top_k", &k) && k > 0 ? k : 0;
  long long top;
  if (get_int(m->root_, "logprobs", &top)) {
    if (top < 0 || top > DYN_ENGINE_MAX_TOP_LOGPROBS) {
      dyn__proto_engine_request_free(m);
      *why = "logprobs must be an integer in [0, 20]";
      return DYN_EINVAL;
    }
    m->logprobs = 1;
    m->top_logprobs = (uint32_t)top;
  }
  m->request_id = json_string_value(json_object_get(m->root_, "request_id"));
  return DYN_OK;
}

void dyn__proto_engine_request_free(dyn__proto_engine_request_t *m) {
  free(m->owned_);
  json_decref(m->root_);
  m->owned_ = NULL;
  m->root_ = NULL;
}

/* ---- Worker -> Processor ------------------------------------------------ */

char *dyn__proto_engine_output_encode(const dyn__proto_engine_output_t *m) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  int rc = put(&b, "{");
  if (!rc) rc = put_tokens(&b, m->token_ids, m->n_tokens);
  if (!rc && m->cached_tokens >= 0) {
    rc = put(&b, ",\"cached_tokens\":");
    if (!rc) rc = put_u64(&b, (uint64_t)m->cached_tokens);
  }
  if (!rc && m->finish != DYN__PROTO_GOING)
    rc = put(&b, m->finish == DYN__PROTO_STOP ? ",\"finish_reason\":\"stop\""
                                              : ",\"finish_reason\":\"length\"");
  if (!rc && m->logprobs) {
    rc = put(&b, ",\"logprobs\":[");
    for (size_t i = 0; !rc && i < m->n_tokens; i++) {
      const dyn_engine_logprob_t *l = &m->logprobs[i];
      char num[64];
      snprintf(num, sizeof num, "%s{\"lp\":%.9g,\"top\":[", i ? "," : "",
               isfinite(l->logprob) ? l->logprob : -9999.0);
      rc = put(&b, num);
      for (uint32_t k = 0; !rc && k < l->n_top && k < DYN_ENGINE_MAX_TOP_LOGPROBS; k++) {
        snprintf(num, sizeof num, "%s[%u,%.9g]", k ? "," : "", (unsigned)l->top_ids[k],
                 isfinite(l->top_logprobs[k]) ? l->top_logprobs[k] : -9999.0);
        rc = put(&b, num);
      }
      if (!rc) rc = put(&b, "]}");
    }
    if (!rc) rc = put(&b, "]");
  }
  if (!rc) rc = put(&b, "}");
  return finish_text(&b, rc);
}

/* "logprobs": [{"lp": x, "top": [[id, lp], ...]}, ...], one per token. */
static int engine_logprobs_read(const json_t *a, dyn__proto_engine_output_t *m) {
  if (!json_is_array(a) || json_array_size(a) != m->n_tokens) return DYN_EINVAL;
  m->lp_owned_ = calloc(m->n_tokens ? m->n_tokens : 1, sizeof *m->lp_owned_);
  if (!m->lp_owned_) return DYN_ENOMEM;
  for (size_t i = 0; i < m->n_tokens; i++) {
    const json_t *e = json_array_get(a, i), *lp = json_object_get(e, "lp");
    const json_t *top = json_object_get(e, "top");
    if (!json_is_number(lp) || !json_is_array(top) ||
        json_array_size(top) > DYN_ENGINE_MAX_TOP_LOGPROBS)
      return DYN_EINVAL;
    dyn_engine_logprob_t *l = &m->lp_owned_[i];
    l->logprob = (float)json_number_value(lp);
    l->n_top = (uint32_t)json_array_size(top);
    for (uint32_t k = 0; k < l->n_top; k++) {
      const json_t *p = json_array_get(top, k);
      const json_t *id = json_array_get(p, 0), *v = json_array_get(p, 1);
      if (!json_is_integer(id) || json_integer_value(id) < 0 ||
          json_integer_value(id) > (json_int_t)UINT32_MAX || !json_is_number(v))
        return DYN_EINVAL;
      l->top_ids[k] = (uint32_t)json_integer_value(id);
      l->top_logprobs[k] = (float)json_number_value(v);
    }
  }
  m->logprobs = m->lp_owned_;
  return DYN_OK;
}

int dyn__proto_engine_output_decode(const void *data, size_t len,
                                    dyn__proto_engine_output_t *m, const char **why) {
  memset(m, 0, sizeof *m);
  json_t *o = parse_object(data, len);
  *why = "the Worker sent a message that is not a JSON object with token_ids";
  int rc = o ? dyn__llm_tokens_from_json(json_object_get(o, "token_ids"), &m->owned_,
                                         &m->n_tokens, why)
             : DYN_EINVAL;
  m->token_ids = m->owned_;
  m->cached_tokens = -1;
  if (!rc) get_int(o, "cached_tokens", &m->cached_tokens);
  const char *fr = json_string_value(json_object_get(o, "finish_reason"));
  /* Any other reason ends the answer too: as "stop". */
  if (fr) m->finish = !strcmp(fr, "length") ? DYN__PROTO_LENGTH : DYN__PROTO_STOP;
  const json_t *lp = json_object_get(o, "logprobs");
  if (!rc && lp && (rc = engine_logprobs_read(lp, m)))
    *why = rc == DYN_ENOMEM ? "out of memory" : "the Worker sent malformed logprobs";
  json_decref(o);
  if (rc) dyn__proto_engine_output_free(m);
  return rc;
}

void dyn__proto_engine_output_free(dyn__proto_engine_output_t *m) {
  free(m->owned_);
  free(m->lp_owned_);
  m->owned_ = NULL;
  m->lp_owned_ = NULL;
  m->logprobs = NULL;
}

/* ---- Worker -> Router --------------------------------------------------- */

char *dyn__proto_load_encode(const dyn__proto_load_t *m) {
  char hex[17];
  dyn__llm_id_to_hex(m->worker_id, hex);
  return dump(json_pack(
      "{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "worker_id", hex,
      "active_slots", (json_int_t)m->active_slots, "total_slots", (json_int_t)m->total_slots,
      "waiting", (json_int_t)m->waiting, "kv_blocks_used", (json_int_t)m->kv_blocks_used,
      "kv_blocks_cached", (json_int_t)m->kv_blocks_cached, "kv_blocks_total",
      (json_int_t)m->kv_blocks_total, "requests", (json_int_t)m->requests, "prompt_tokens",
      (json_int_t)m->prompt_tokens, "cached_prompt_tokens", (json_int_t)m->cached_prompt_tokens,
      "generated_tokens", (json_int_t)m->generated_tokens));
}

int dyn__proto_load_decode(const void *data, size_t len, dyn__proto_load_t *m) {
  memset(m, 0, sizeof *m);
  json_t *o = parse_object(data, len);
  int rc = dyn__llm_id_from_hex(json_string_value(json_object_get(o, "worker_id")), &m->worker_id);
  m->active_slots = get_count(o, "active_slots");
  m->total_slots = get_count(o, "total_slots");
  m->waiting = get_count(o, "waiting");
  m->kv_blocks_used = get_count(o, "kv_blocks_used");
  m->kv_blocks_cached = get_count(o, "kv_blocks_cached");
  m->kv_blocks_total = get_count(o, "kv_blocks_total");
  m->requests = get_count(o, "requests");
  m->prompt_tokens = get_count(o, "prompt_tokens");
  m->cached_prompt_tokens = get_count(o, "cached_prompt_tokens");
  m->generated_tokens = get_count(o, "generated_tokens");
  json_decref(o);
  return rc;
}

/* ---- failures ----------------------------------------------------------- */

char *dyn__proto_error_encode(const dyn__proto_error_t *m) {
  return dump(json_pack("{s:i, s:s}", "status", m->status, "message", m->message));
}

void dyn__proto_error_decode(int dyn_status, const char *text, dyn__proto_error_t *m) {
  json_t *o = text && text[0] == '{' ? parse_object(text, strlen(text)) : NULL;
  long long status;
  const char *msg = json_string_value(json_object_get(o, "message"));
  if (msg && get_int(o, "status", &status) && status >= 400 && status <= 599) {
    m->status = (int)status;
    snprintf(m->message, sizeof m->message, "%s", msg);
  } else {
    /* Not ours: the runtime's own failure. */
    m->status = dyn_status == DYN_ENOINSTANCE ? 503 : 500;
    snprintf(m->message, sizeof m->message, "%s", text ? text : dyn_strerror(dyn_status));
  }
  json_decref(o);
}

int dyn__proto_fail(dyn_request_t *req, int status, const char *fmt, ...) {
  dyn__proto_error_t e = {.status = status};
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e.message, sizeof e.message, fmt, ap);
  va_end(ap);
  char *text = dyn__proto_error_encode(&e);
  int rc = dyn_request_fail(req, text ? text : e.message);
  free(text);
  return rc;
}

int dyn__proto_send(dyn_request_t *req, char *text) {
  if (!text) return DYN_ENOMEM;
  int rc = dyn_request_send(req, text, strlen(text));
  free(text);
  return rc;
}

/* ---- decode Worker -> PrefillWorker -------------------------------------- */

char *dyn__proto_prefill_request_encode(const dyn__proto_prefill_request_t *m) {
  char *inner = dyn__proto_engine_request_encode(&m->req);
  if (!inner) return NULL;
  dyn__buf_t b;
  dyn__buf_init(&b);
  /* The engine request's object, less its closing brace, plus ours. */
  int rc = dyn__buf_append(&b, inner, strlen(inner) - 1);
  free(inner);
  if (!rc) rc = put(&b, ",\"kv_layout\":");
  if (!rc) rc = dyn__json_escape(&b, m->kv_layout ? m->kv_layout : "", m->kv_layout ? strlen(m->kv_layout) : 0);
  if (!rc) rc = put(&b, ",\"kv_from_block\":");
  if (!rc) rc = put_u64(&b, m->kv_from_block);
  if (!rc && m->no_kv) rc = put(&b, ",\"no_kv\":true");
  if (!rc) rc = put(&b, "}");
  return finish_text(&b, rc);
}

int dyn__proto_prefill_request_decode(const void *data, size_t len,
                                      dyn__proto_prefill_request_t *m, const char **why) {
  memset(m, 0, sizeof *m);
  int rc = dyn__proto_engine_request_decode(data, len, &m->req, why);
  if (rc) return rc;
  m->kv_layout = json_string_value(json_object_get(m->req.root_, "kv_layout"));
  long long from = 0;
  if (!m->kv_layout) {
    *why = "prefill request: kv_layout (a string) is missing";
    rc = DYN_EINVAL;
  } else if (json_object_get(m->req.root_, "kv_from_block") &&
             (!get_int(m->req.root_, "kv_from_block", &from) || from < 0 || from > UINT32_MAX)) {
    *why = "prefill request: kv_from_block must be an integer in [0, 2^32)";
    rc = DYN_EINVAL;
  } else if (json_object_get(m->req.root_, "no_kv") &&
             !json_is_boolean(json_object_get(m->req.root_, "no_kv"))) {
    *why = "prefill request: no_kv must be true or false";
    rc = DYN_EINVAL;
  }
  if (rc) {
    dyn__proto_prefill_request_free(m);
    return rc;
  }
  m->kv_from_block = (uint32_t)from;
  m->no_kv = json_is_true(json_object_get(m->req.root_, "no_kv"));
  return DYN_OK;
}

void dyn__proto_prefill_request_free(dyn__proto_prefill_request_t *m) {
  dyn__proto_engine_request_free(&m->req);
}

char *dyn__proto_kv_header_encode(const dyn__proto_kv_header_t *m) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  int rc = put(&b, "{\"kv_layout\":");
  if (!rc) rc = dyn__json_escape(&b, m->kv_layout ? m->kv_layout : "", m->kv_layout ? strlen(m->kv_layout) : 0);
  if (!rc) rc = put(&b, ",\"kv_bytes\":");
  if (!rc) rc = put_u64(&b, m->kv_bytes);
  if (!rc) rc = put(&b, ",\"kv_blocks\":");
  if (!rc) rc = put_u64(&b, m->kv_blocks);
  if (!rc) rc = put(&b, ",\"kv_from_block\":");
  if (!rc) rc = put_u64(&b, m->kv_from_block);
  if (!rc) rc = put(&b, "}");
  return finish_text(&b, rc);
}

int dyn__proto_kv_header_decode(const void *data, size_t len, dyn__proto_kv_header_t *m) {
  memset(m, 0, sizeof *m);
  m->root_ = parse_object(data, len);
  long long bytes, blocks, from;
  if (!m->root_ || !(m->kv_layout = json_string_value(json_object_get(m->root_, "kv_layout"))) ||
      !get_int(m->root_, "kv_bytes", &bytes) || bytes < 0 ||
      !get_int(m->root_, "kv_blocks", &blocks) || blocks < 0 ||
      !get_int(m->root_, "kv_from_block", &from) || from < 0) {
    dyn__proto_kv_header_free(m);
    return DYN_EINVAL;
  }
  m->kv_bytes = (uint64_t)bytes;
  m->kv_blocks = (uint64_t)blocks;
  m->kv_from_block = (uint64_t)from;
  return DYN_OK;
}

void dyn__proto_kv_header_free(dyn__proto_kv_header_t *m) {
  json_decref(m->root_);
  m->root_ = NULL;
  m->kv_layout = NULL;
}

static const char kv_chunk_head[DYN__PROTO_KV_CHUNK_HEAD_LEN] = {'D', 'K', 'V', 'C'};

const void *dyn__proto_kv_chunk_head(void) { return kv_chunk_head; }

int dyn__proto_kv_chunk_decode(const void *data, size_t len, const void **part, size_t *part_len) {
  if (len < sizeof kv_chunk_head || memcmp(data, kv_chunk_head, sizeof kv_chunk_head))
    return DYN_EINVAL;
  *part = (const uint8_t *)data + sizeof kv_chunk_head;
  *part_len = len - sizeof kv_chunk_head;
  return DYN_OK;
}
