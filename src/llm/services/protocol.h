/* protocol.h - the messages between Frontend, Processor, Router and Worker.
 *
 * This is the one description of what the LLM services say to each other:
 * each message is a C struct here, with one encoder (struct -> the bytes of
 * one stream message) and one decoder (bytes -> struct, checking every
 * field it reads). The wire is JSON, so services written in Python (or a
 * test with `json.dumps`) speak it too; the KV events are the one binary
 * message and have their own codec (dyn__kv_encode in src/llm/kv/encode.h,
 * dyn_kv_decode in dynamo/llm/kv.h).
 *
 *   Frontend --gen request--> Processor --route request--> Router
 *            <----deltas-----           <--route answer---
 *                                       --engine request--> Worker
 *                                       <--engine output---
 *                                Router <--load metrics---- (event)
 *
 * A failure is the stream's error (dyn_request_fail) whose text is an
 * encoded dyn__proto_error_t: the HTTP status the Frontend answers with
 * travels as a field. The Processor relays the Router's and the Worker's
 * failures unchanged. A failure that is not one of ours (the runtime's:
 * no live instance, a lost connection) is mapped in one place,
 * dyn__proto_error_decode.
 *
 * Decoded structs borrow from the decoder's parse (strings, the OpenAI
 * request); call the message's _free when done. Token arrays a decoder
 * returns are malloc'd and freed there too. Encoders return malloc'd,
 * NUL-terminated text (NULL on ENOMEM); the struct they read is borrowed.
 */
#ifndef DYN__LLM_PROTOCOL_H
#define DYN__LLM_PROTOCOL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dynamo/llm/engine.h"
#include "dynamo/server.h"
#include "llm/services/openai.h"

/* ---- Frontend -> Processor: Processor/generate -------------------------
 * {"kind": "chat"|"completion", "request_id": "chatcmpl-<32 hex>",
 *  "request": <the OpenAI request body as the Frontend validated it,
 *              unknown fields included>}
 * The decoder also reads, from "request", what the Processor acts on. */
#define DYN__PROTO_MAX_STOP 8

typedef struct dyn__proto_gen_request {
  dyn__oai_kind_t kind;
  const char *request_id; /* NULL if absent */
  json_t *request;        /* the OpenAI request object */
  /* Read from request by the decoder (not encoded: they are in request): */
  const json_t *messages;   /* chat: "messages" (checked by the chat template) */
  const char *prompt;       /* completion: "prompt", a string or [string]; else NULL */
  int has_max_tokens;       /* "max_completion_tokens", else "max_tokens", an integer */
  long long max_tokens;
  int ignore_eos;           /* "ignore_eos": true (as vLLM accepts) */
  int has_seed;             /* "seed", an integer */
  long long seed;
  int has_temperature;      /* "temperature", a number */
  double temperature;
  double top_p;             /* "top_p", in (0, 1]; 0 when absent */
  long long top_k;          /* "top_k" (as vLLM accepts), > 0; 0 when absent */
  int logprobs;             /* chat "logprobs": true, or completions' "logprobs": n */
  uint32_t top_logprobs;    /* chat "top_logprobs", or completions' n */
  const char *stop[DYN__PROTO_MAX_STOP]; /* "stop": a string or strings; "" skipped */
  size_t n_stop;
  json_t *root_;
} dyn__proto_gen_request_t;

char *dyn__proto_gen_request_encode(const dyn__proto_gen_request_t *m);
/* DYN_EINVAL with *why naming what is wrong; DYN_ENOMEM. */
int dyn__proto_gen_request_decode(const void *data, size_t len, dyn__proto_gen_request_t *m,
                                  const char **why);
void dyn__proto_gen_request_free(dyn__proto_gen_request_t *m);

/* ---- Processor -> Frontend: the answer's deltas -------------------------
 * {"text": "<whole UTF-8 characters>", "n_tokens": N, "finish_reason": null}
 * ... and last {"text", "n_tokens", "finish_reason": "stop"|"length",
 *              "usage": {"prompt_tokens", "completion_tokens", "cached_tokens"}}
 * n_tokens counts the tokens the text came from (for the Frontend's token
 * latency metrics). When the request asked for logprobs, a delta also has
 * "logprobs": [{"b": [token bytes], "lp": x, "top": [{"b", "lp"}...]}],
 * one entry per token it came from. A stream that ends without a
 * finish_reason is a Processor bug. */
typedef struct dyn__proto_delta {
  const char *text; /* NULL: "" */
  size_t text_len;
  long long n_tokens;
  const dyn__oai_logprob_t *logprobs; /* NULL: none */
  size_t n_logprobs;
  const char *finish_reason; /* NULL while the answer goes on */
  /* With finish_reason: */
  long long prompt_tokens;
  long long completion_tokens; /* decoded: -1 when absent */
  long long cached_tokens;
  json_t *root_;
  dyn__oai_logprob_t *lp_owned_;
  uint8_t *lp_bytes_;
} dyn__proto_delta_t;

char *dyn__proto_delta_encode(const dyn__proto_delta_t *m);
int dyn__proto_delta_decode(const void *data, size_t len, dyn__proto_delta_t *m);
void dyn__proto_delta_free(dyn__proto_delta_t *m);

/* ---- Processor -> Router: Router/generate -------------------------------
 * {"token_ids": [...]}: the prompt's ids. */
typedef struct dyn__proto_route_request {
  const uint32_t *token_ids;
  size_t n_tokens;
  uint32_t *owned_; /* decoded ids */
} dyn__proto_route_request_t;

char *dyn__proto_route_request_encode(const dyn__proto_route_request_t *m);
int dyn__proto_route_request_decode(const void *data, size_t len, dyn__proto_route_request_t *m,
                                    const char **why);
void dyn__proto_route_request_free(dyn__proto_route_request_t *m);

/* ---- Router -> Processor: the one answer --------------------------------
 * {"worker_id": "<16 hex digits>" (a uint64 does not survive every JSON
 *  parser), "overlap_blocks": n (the prompt's leading blocks that worker
 *  holds), "request_blocks": R (the prompt's full blocks)} */
typedef struct dyn__proto_route_answer {
  uint64_t worker_id;
  uint32_t overlap_blocks, request_blocks;
} dyn__proto_route_answer_t;

char *dyn__proto_route_answer_encode(const dyn__proto_route_answer_t *m);
/* DYN_EINVAL when worker_id is missing or not 16 hex digits. */
int dyn__proto_route_answer_decode(const void *data, size_t len, dyn__proto_route_answer_t *m);

/* ---- Processor -> Worker: Worker/generate -------------------------------
 * {"token_ids": [...], "max_tokens": N, "ignore_eos": bool, "seed": n?,
 *  "temperature": t?, "top_p": p?, "top_k": k?, "logprobs": k?,
 *  "request_id": "..."?}
 * logprobs present asks for each token's log-probability with the k
 * (0..20) most likely tokens of its step.
 * Absent max_tokens is 16; one that is not an integer in [1, 2^32) decodes
 * as 0, which the engine refuses with its reason. Absent temperature is
 * 1.0; absent seed draws from the engine's own sequence; absent top_p and
 * top_k (0) filter nothing. */
typedef struct dyn__proto_engine_request {
  const uint32_t *token_ids;
  size_t n_tokens;
  uint32_t max_tokens;
  int ignore_eos;
  int has_seed;
  uint64_t seed;
  int has_temperature;
  double temperature;
  double top_p;           /* 0: absent */
  long long top_k;        /* 0: absent */
  int logprobs;
  uint32_t top_logprobs;
  const char *request_id; /* NULL if absent */
  uint32_t *owned_;
  json_t *root_;
} dyn__proto_engine_request_t;

char *dyn__proto_engine_request_encode(const dyn__proto_engine_request_t *m);
int dyn__proto_engine_request_decode(const void *data, size_t len,
                                     dyn__proto_engine_request_t *m, const char **why);
void dyn__proto_engine_request_free(dyn__proto_engine_request_t *m);

/* ---- Worker -> Processor: the engine's output ----------------------------
 * {"token_ids": [...], "cached_tokens": n?, "finish_reason": "stop"|"length"?,
 *  "logprobs": [{"lp": x, "top": [[id, lp], ...]}, ...]?}
 * as the engine produces tokens; the first message carries cached_tokens
 * (prompt tokens the prefix cache held), the last finish_reason; logprobs,
 * when asked for, has one entry per token. */
typedef enum dyn__proto_finish {
  DYN__PROTO_GOING = 0,
  DYN__PROTO_STOP,   /* the engine's EOS */
  DYN__PROTO_LENGTH, /* max_tokens reached */
} dyn__proto_finish_t;

typedef struct dyn__proto_engine_output {
  const uint32_t *token_ids;
  size_t n_tokens;
  long long cached_tokens; /* -1: not in this message */
  dyn__proto_finish_t finish;
  const dyn_engine_logprob_t *logprobs; /* n_tokens entries, or NULL */
  uint32_t *owned_;
  dyn_engine_logprob_t *lp_owned_;
} dyn__proto_engine_output_t;

char *dyn__proto_engine_output_encode(const dyn__proto_engine_output_t *m);
int dyn__proto_engine_output_decode(const void *data, size_t len,
                                    dyn__proto_engine_output_t *m, const char **why);
void dyn__proto_engine_output_free(dyn__proto_engine_output_t *m);

/* ---- Worker -> Router: "load_metrics" events -----------------------------
 * Published on namespace.{ns}.component.Worker.load_metrics when the load
 * changed (at most every metrics-interval-ms) and at least once a second:
 * {"worker_id": "<16 hex>", "active_slots", "total_slots", "waiting",
 *  "kv_blocks_used", "kv_blocks_cached", "kv_blocks_total", "requests",
 *  "prompt_tokens", "cached_prompt_tokens", "generated_tokens"}
 * The decoder reads a missing or negative count as 0. */
typedef struct dyn__proto_load {
  uint64_t worker_id;
  uint64_t active_slots, total_slots, waiting;
  uint64_t kv_blocks_used, kv_blocks_cached, kv_blocks_total;
  uint64_t requests, prompt_tokens, cached_prompt_tokens, generated_tokens; /* cumulative */
} dyn__proto_load_t;

char *dyn__proto_load_encode(const dyn__proto_load_t *m);
/* DYN_EINVAL unless a JSON object with a valid worker_id. */
int dyn__proto_load_decode(const void *data, size_t len, dyn__proto_load_t *m);

/* ---- failures -----------------------------------------------------------
 * The text of a stream's error: {"status": 400..599, "message": "..."}.
 * status is the HTTP status the Frontend answers with: 400 the client's
 * fault (the message says what to change), 503 nothing can serve it now,
 * 500 anything else. The OpenAI error type follows from it
 * (dyn_http_error_type), so it is not carried. */
typedef struct dyn__proto_error {
  int status;
  char message[512];
} dyn__proto_error_t;

char *dyn__proto_error_encode(const dyn__proto_error_t *m);
/* What a failed stream (its dyn status and error text) means for the
 * client: our encoded error as it says; else the runtime's own failure:
 * DYN_ENOINSTANCE (no live instance) is 503, anything else 500, with the
 * text (or the status's name) as the message. Never fails. */
void dyn__proto_error_decode(int dyn_status, const char *text, dyn__proto_error_t *m);

/* Fails req with an encoded error of status and the printf-style message;
 * an error that cannot be encoded (no memory) fails it with plain text,
 * which reads as a 500. */
int dyn__proto_fail(dyn_request_t *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Sends an encoder's text as one stream message and frees it; DYN_ENOMEM
 * if text is NULL (the encoder ran out of memory). */
int dyn__proto_send(dyn_request_t *req, char *text);

/* ---- decode Worker -> PrefillWorker: PrefillWorker/prefill ----------------
 * Disaggregated serving (disagg.c). The request is a Worker/generate
 * request plus "kv_layout" (the decode engine's dyn_engine_kv_layout,
 * which the prefill worker must share), "kv_from_block" (the prompt's
 * leading blocks the decode worker holds: they are not sent) and, when
 * the caller will not decode (max_tokens 1), "no_kv": true (absent is
 * false).
 * The answer, in order:
 *   1. a dyn__proto_kv_header_t (with no_kv: 0 bytes, 0 blocks);
 *   2. the first token, as a dyn__proto_engine_output_t (finish_reason
 *      "stop" when it was EOS: then nothing follows);
 *   3. the KV (dyn_engine_kv_export's bytes) in binary messages, each the
 *      4 bytes "DKVC" then the next part, kv_bytes in all (none with
 *      no_kv: the prefill worker exports nothing);
 * then the stream's end. */
typedef struct dyn__proto_prefill_request {
  dyn__proto_engine_request_t req;
  const char *kv_layout;  /* decoded: NULL when absent (refused) */
  uint32_t kv_from_block;
  int no_kv;              /* the first token alone is wanted */
} dyn__proto_prefill_request_t;
char *dyn__proto_prefill_request_encode(const dyn__proto_prefill_request_t *m);
int dyn__proto_prefill_request_decode(const void *data, size_t len,
                                      dyn__proto_prefill_request_t *m, const char **why);
void dyn__proto_prefill_request_free(dyn__proto_prefill_request_t *m);

/* {"kv_layout": "...", "kv_bytes": N, "kv_blocks": n, "kv_from_block": k} */
typedef struct dyn__proto_kv_header {
  const char *kv_layout;
  uint64_t kv_bytes, kv_blocks, kv_from_block;
  json_t *root_;
} dyn__proto_kv_header_t;
char *dyn__proto_kv_header_encode(const dyn__proto_kv_header_t *m);
/* DYN_EINVAL unless an object with kv_layout and the three counts. */
int dyn__proto_kv_header_decode(const void *data, size_t len, dyn__proto_kv_header_t *m);
void dyn__proto_kv_header_free(dyn__proto_kv_header_t *m);
/* One part of the KV: the 4 bytes "DKVC", then the part. It is the one
 * message sent as two pieces (dyn_request_sendv): the fixed head from
 * here, then the bytes straight from the export, so that a megabyte chunk
 * is not first copied behind its four bytes. */
#define DYN__PROTO_KV_CHUNK_HEAD_LEN 4
const void *dyn__proto_kv_chunk_head(void);
/* DYN_EINVAL unless a KV chunk; *part points into data. */
int dyn__proto_kv_chunk_decode(const void *data, size_t len, const void **part, size_t *part_len);

#endif
