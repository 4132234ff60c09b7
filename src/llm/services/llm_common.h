/* llm_common.h - small helpers the LLM services share: config values under
 * either spelling (YAML users write block-size, C code block_size), token
 * id arrays from JSON, and worker ids as the hex strings the messages of
 * protocol.h carry (a uint64 does not survive every JSON parser).
 */
#ifndef DYN__LLM_COMMON_H
#define DYN__LLM_COMMON_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "dynamo/service.h"

/* The config value of key, trying "a-b" and "a_b" spellings; dflt if
 * absent or not a number. */
double dyn__llm_config_double(dyn_service_ctx_t *ctx, const char *key, double dflt);
long long dyn__llm_config_int(dyn_service_ctx_t *ctx, const char *key, long long dflt);
/* true/false (or 1/0) in the config as 1/0; dflt when absent; -1 when it
 * is something else. */
int dyn__llm_config_bool(dyn_service_ctx_t *ctx, const char *key, int dflt);
/* A string value; the result lives as long as the worker. */
const char *dyn__llm_config_string(dyn_service_ctx_t *ctx, const char *key, const char *dflt);

/* The .gguf file a config names (model-path, else model), by the rule of
 * dyn__model_file (common/model_file.h), which `dynamo build` shares.
 * Written into buf when it is built; NULL when neither key is set. */
const char *dyn__llm_model_file(dyn_service_ctx_t *ctx, char *buf, size_t size);

/* A JSON array of non-negative integers < 2^32 into a malloc'd array.
 * DYN_EINVAL (with *why set) for anything else. */
int dyn__llm_tokens_from_json(const json_t *arr, uint32_t **out, size_t *n, const char **why);

/* Worker ids as 16 hex digits. */
void dyn__llm_id_to_hex(uint64_t id, char out[17]);
int dyn__llm_id_from_hex(const char *s, uint64_t *id);

#endif
