/* llm_common.h - small helpers the LLM services share: config values
 * checked for their type and range, under either spelling (YAML users
 * write block-size, C code block_size), token
 * id arrays from JSON, and worker ids as the hex strings the messages of
 * protocol.h carry (a uint64 does not survive every JSON parser).
 */
#ifndef DYN__LLM_COMMON_H
#define DYN__LLM_COMMON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dynamo/service.h"

/* A service's config as its start reads it. Each key is tried under both
 * spellings. A value present but of the wrong type or out of range is
 * logged, naming the service, the key, what it must be and the value given
 * (Worker: config key 'num-blocks' must be a whole number between 1 and
 * 2147483647, not "lots"), counted in bad, and the default is returned: a
 * start reads all its keys, so that one try names every bad one, then
 * fails with DYN_EINVAL when bad is set. */
typedef struct {
  dyn_service_ctx_t *ctx;
  const char *service; /* the service's name, which the messages begin with */
  int bad;             /* bad values met so far */
} dyn__llm_cfg_t;

void dyn__llm_cfg_init(dyn__llm_cfg_t *c, dyn_service_ctx_t *ctx);
/* A whole number in [min, max]. */
long long dyn__llm_cfg_int(dyn__llm_cfg_t *c, const char *key, long long dflt, long long min,
                           long long max);
/* A number (a whole one too) in [min, max]. */
double dyn__llm_cfg_double(dyn__llm_cfg_t *c, const char *key, double dflt, double min,
                           double max);
/* true or false, as 1 or 0. */
int dyn__llm_cfg_bool(dyn__llm_cfg_t *c, const char *key, int dflt);
/* A string; the result lives as long as the worker. */
const char *dyn__llm_cfg_string(dyn__llm_cfg_t *c, const char *key, const char *dflt);
/* For a check of the caller's own (one of a list, say): logs that key's
 * value must be what, in the same words, and counts it bad. */
void dyn__llm_cfg_reject(dyn__llm_cfg_t *c, const char *key, const char *what);

/* text, a whole decimal number and nothing else, into *out when it lies in
 * [min, max]: what the int getter checks, for values that come as text
 * (the control plane's). DYN_EINVAL otherwise. */
int dyn__llm_parse_int(const char *text, long long min, long long max, long long *out);
/* The same for a number (JSON's form). */
int dyn__llm_parse_double(const char *text, double min, double max, double *out);
/* What such a value must be, in words: "a whole number >= 0", "a number
 * between 0 and 1". */
void dyn__llm_int_what(char *buf, size_t size, long long min, long long max);
void dyn__llm_double_what(char *buf, size_t size, double min, double max);

/* The .gguf file a config names (model-path, else model), by the rule of
 * dyn__model_file (common/model_file.h), which `dynamo build` shares.
 * Written into buf when it is built; NULL when neither key is set. */
const char *dyn__llm_model_file(dyn__llm_cfg_t *c, char *buf, size_t size);

/* A JSON array of non-negative integers < 2^32 into a malloc'd array.
 * DYN_EINVAL (with *why set) for anything else. */
int dyn__llm_tokens_from_json(const json_t *arr, uint32_t **out, size_t *n, const char **why);

/* Worker ids as 16 hex digits. */
void dyn__llm_id_to_hex(uint64_t id, char out[17]);
int dyn__llm_id_from_hex(const char *s, uint64_t *id);

#endif
