/* llm_common.c - helpers shared by the LLM services (see llm_common.h). */
#include "llm/services/llm_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/model_file.h"
#include "dynamo/status.h"

/* Tries key as written, then with '-' and '_' swapped. */
static const char *lookup(dyn_service_ctx_t *ctx, const char *key) {
  const char *v = dyn_service_config_json(ctx, key);
  if (v) return v;
  char alt[128];
  snprintf(alt, sizeof alt, "%s", key);
  for (char *p = alt; *p; p++) *p = *p == '-' ? '_' : *p == '_' ? '-' : *p;
  return dyn_service_config_json(ctx, alt);
}

double dyn__llm_config_double(dyn_service_ctx_t *ctx, const char *key, double dflt) {
  const char *v = lookup(ctx, key);
  if (!v) return dflt;
  char *end;
  double d = strtod(v, &end);
  return end != v && *end == '\0' ? d : dflt;
}

long long dyn__llm_config_int(dyn_service_ctx_t *ctx, const char *key, long long dflt) {
  const char *v = lookup(ctx, key);
  if (!v) return dflt;
  char *end;
  long long n = strtoll(v, &end, 10);
  return end != v && *end == '\0' ? n : dflt;
}

int dyn__llm_config_bool(dyn_service_ctx_t *ctx, const char *key, int dflt) {
  const char *v = lookup(ctx, key);
  if (!v) return dflt;
  if (!strcmp(v, "true") || !strcmp(v, "1")) return 1;
  if (!strcmp(v, "false") || !strcmp(v, "0")) return 0;
  return -1;
}

const char *dyn__llm_config_string(dyn_service_ctx_t *ctx, const char *key, const char *dflt) {
  const char *v = dyn_service_config_string(ctx, key, NULL);
  if (v) return v;
  char alt[128];
  snprintf(alt, sizeof alt, "%s", key);
  for (char *p = alt; *p; p++) *p = *p == '-' ? '_' : *p == '_' ? '-' : *p;
  return dyn_service_config_string(ctx, alt, dflt);
}

const char *dyn__llm_model_file(dyn_service_ctx_t *ctx, char *buf, size_t size) {
  return dyn__model_file(dyn__llm_config_string(ctx, "model-path", NULL),
                         dyn__llm_config_string(ctx, "model", NULL), buf, size);
}

int dyn__llm_tokens_from_json(const json_t *arr, uint32_t **out, size_t *n, const char **why) {
  *out = NULL;
  *n = 0;
  if (!json_is_array(arr)) {
    *why = "token_ids must be an array of integers";
    return DYN_EINVAL;
  }
  size_t len = json_array_size(arr);
  uint32_t *t = malloc((len ? len : 1) * sizeof *t);
  if (!t) return DYN_ENOMEM;
  for (size_t i = 0; i < len; i++) {
    json_t *v = json_array_get(arr, i);
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > (json_int_t)UINT32_MAX) {
      free(t);
      *why = "token_ids must hold integers in [0, 2^32)";
      return DYN_EINVAL;
    }
    t[i] = (uint32_t)json_integer_value(v);
  }
  *out = t;
  *n = len;
  return DYN_OK;
}

void dyn__llm_id_to_hex(uint64_t id, char out[17]) {
  snprintf(out, 17, "%016llx", (unsigned long long)id);
}

int dyn__llm_id_from_hex(const char *s, uint64_t *id) {
  if (!s || !*s || strlen(s) > 16) return DYN_EINVAL;
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 16);
  if (errno || *end) return DYN_EINVAL;
  *id = v;
  return DYN_OK;
}
