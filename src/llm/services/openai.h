/* openai.h - the OpenAI wire format, for the Frontend service.
 *
 * Two halves, both free of I/O so they are unit-tested on their own:
 *  - validation of /v1/chat/completions and /v1/completions request bodies,
 *    with a 400 message that names the field, as OpenAI and vLLM answer;
 *  - the JSON text the Frontend sends back: streamed chunks (built straight
 *    into a byte buffer from a per-request prefix, so the hot path makes one
 *    pass over each delta), the non-streaming response objects, and the
 *    {"error": {...}} object every failure uses.
 */
#ifndef DYN__LLM_OPENAI_H
#define DYN__LLM_OPENAI_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

typedef enum dyn__oai_kind { DYN__OAI_CHAT = 0, DYN__OAI_COMPLETION = 1 } dyn__oai_kind_t;

/* What the Frontend needs from a valid request; pointers borrow from it. */
typedef struct dyn__oai_info {
  const char *model;
  int stream;
  int include_usage; /* stream_options.include_usage */
} dyn__oai_info_t;

/* ---- log-probabilities ---------------------------------------------------
 * A token as OpenAI's logprobs show it: its bytes (the "token" string is
 * their UTF-8, an invalid sequence as U+FFFD) and its log-probability; and
 * a generated token with the most likely tokens of its step. Requests ask
 * with chat's "logprobs": true and "top_logprobs": 0..20, or completions'
 * "logprobs": 0..5. */
#define DYN__OAI_MAX_TOP_LOGPROBS 20
typedef struct dyn__oai_token_lp {
  const uint8_t *bytes; /* borrowed */
  size_t len;
  double logprob;
} dyn__oai_token_lp_t;

typedef struct dyn__oai_logprob {
  dyn__oai_token_lp_t token;
  uint32_t n_top;
  dyn__oai_token_lp_t top[DYN__OAI_MAX_TOP_LOGPROBS];
} dyn__oai_logprob_t;

/* A failure with its HTTP status and the OpenAI error fields. */
typedef struct dyn__oai_error {
  int status;        /* 400, 404, 500, 503 ... */
  char message[512];
  const char *param; /* the offending field, or NULL */
} dyn__oai_error_t;

/* Checks req (a parsed request body) for kind. DYN_OK and *info filled, or
 * DYN_EINVAL with err set to a 400 naming the field. Unknown fields pass. */
int dyn__oai_validate(const json_t *req, dyn__oai_kind_t kind, dyn__oai_info_t *info,
                      dyn__oai_error_t *err);

/* The error object {"error":{"message","type","param","code"}} as compact
 * JSON text (malloc'd; NULL on ENOMEM). type follows the status
 * (dyn_http_error_type). */
char *dyn__oai_error_json(int status, const char *message, const char *param);


/* ---- streamed chunks ---------------------------------------------------
 * A stream object carries the parts every chunk of a response shares. Each
 * dyn__oai_chunk_* call appends one whole SSE event ("data: {...}\n\n") to
 * out, ready for dyn_http_write. */
typedef struct dyn__oai_stream {
  dyn__oai_kind_t kind;
  int include_usage;
  dyn__buf_t prefix; /* {"id":..,"object":..,"created":..,"model":.., */
} dyn__oai_stream_t;

int dyn__oai_stream_init(dyn__oai_stream_t *st, dyn__oai_kind_t kind, const char *id,
                         long long created, const char *model, int include_usage);
void dyn__oai_stream_free(dyn__oai_stream_t *st);
/* Chat only: the first chunk, delta {"role":"assistant","content":""}. */
int dyn__oai_chunk_role(const dyn__oai_stream_t *st, dyn__buf_t *out);
/* A delta; finish_reason NULL while the stream goes on. A chat chunk with
 * empty text and a finish_reason has delta {}, as OpenAI sends. lp: the
 * log-probabilities of the delta's n_lp tokens (NULL: "logprobs": null);
 * text_offset: where the delta's first token starts in the whole answer
 * (completions report it per token). */
int dyn__oai_chunk_delta(const dyn__oai_stream_t *st, const char *text, size_t n,
                         const char *finish_reason, const dyn__oai_logprob_t *lp, size_t n_lp,
                         size_t text_offset, dyn__buf_t *out);
/* The usage chunk ("choices": []) sent last when include_usage is set. */
int dyn__oai_chunk_usage(const dyn__oai_stream_t *st, long long prompt, long long completion,
                         long long cached, dyn__buf_t *out);

/* ---- whole responses --------------------------------------------------- */
/* The usage object: prompt, completion, total and prompt_tokens_details. */
json_t *dyn__oai_usage(long long prompt, long long completion, long long cached);
/* "chat.completion" or "text_completion" with one choice; NULL on ENOMEM.
 * lp: the answer's n_lp token log-probabilities, or NULL. */
char *dyn__oai_response(dyn__oai_kind_t kind, const char *id, long long created,
                        const char *model, const char *text, size_t n,
                        const char *finish_reason, const dyn__oai_logprob_t *lp, size_t n_lp,
                        long long prompt, long long completion, long long cached);

#endif
