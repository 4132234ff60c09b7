/* llm_common.c - helpers shared by the LLM services (see llm_common.h). */
#include "llm/services/llm_common.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/model_file.h"
#include "dynamo/runtime.h"
#include "dynamo/status.h"

void dyn__llm_cfg_init(dyn__llm_cfg_t *c, dyn_service_ctx_t *ctx) {
  c->ctx = ctx;
  c->service = dyn_service_def(ctx)->name;
  c->bad = 0;
}

/* The value of key as compact JSON, tried as written, then with '-' and
 * '_' swapped; *found is the spelling the config uses. NULL when absent. */
static const char *lookup(dyn__llm_cfg_t *c, const char *key, char alt[128], const char **found) {
  *found = key;
  const char *v = dyn_service_config_json(c->ctx, key);
  if (v) return v;
  snprintf(alt, 128, "%s", key);
  for (char *p = alt; *p; p++) *p = *p == '-' ? '_' : *p == '_' ? '-' : *p;
  *found = alt;
  return dyn_service_config_json(c->ctx, alt);
}

/* The message of check.c's form, the value as the config gives it, cut short. */
static void reject(dyn__llm_cfg_t *c, const char *key, const char *what, const char *value) {
  dyn_log(DYN_LOG_ERROR, "%s: config key '%s' must be %s, not %.60s%s", c->service, key, what,
          value, strlen(value) > 60 ? "..." : "");
  c->bad++;
}

void dyn__llm_cfg_reject(dyn__llm_cfg_t *c, const char *key, const char *what) {
  char alt[128];
  const char *found, *v = lookup(c, key, alt, &found);
  reject(c, found, what, v ? v : "unset");
}

/* A number's text starts with a digit or '-': strtoll and strtod would
 * also take blanks, '+', "inf", "nan" and hex. */
static int numeric_start(const char *text) {
  return text && (isdigit((unsigned char)text[0]) || text[0] == '-');
}

int dyn__llm_parse_int(const char *text, long long min, long long max, long long *out) {
  if (!numeric_start(text)) return DYN_EINVAL;
  char *end;
  errno = 0;
  long long n = strtoll(text, &end, 10);
  if (errno || *end || n < min || n > max) return DYN_EINVAL;
  *out = n;
  return DYN_OK;
}

int dyn__llm_parse_double(const char *text, double min, double max, double *out) {
  /* JSON's characters only: strtod would also read hex ("0x1p3"). */
  if (!numeric_start(text) || text[strspn(text, "0123456789-+.eE")]) return DYN_EINVAL;
  char *end;
  errno = 0;
  double d = strtod(text, &end);
  if (errno || *end || !isfinite(d) || d < min || d > max) return DYN_EINVAL;
  *out = d;
  return DYN_OK;
}

void dyn__llm_int_what(char *buf, size_t size, long long min, long long max) {
  if (min == LLONG_MIN && max == LLONG_MAX) snprintf(buf, size, "a whole number");
  else if (max == LLONG_MAX) snprintf(buf, size, "a whole number >= %lld", min);
  else snprintf(buf, size, "a whole number between %lld and %lld", min, max);
}

void dyn__llm_double_what(char *buf, size_t size, double min, double max) {
  if (min == -DBL_MAX && max == DBL_MAX) snprintf(buf, size, "a number");
  else if (max == DBL_MAX) snprintf(buf, size, "a number >= %g", min);
  else snprintf(buf, size, "a number between %g and %g", min, max);
}

long long dyn__llm_cfg_int(dyn__llm_cfg_t *c, const char *key, long long dflt, long long min,
                           long long max) {
  char alt[128], what[96];
  const char *found, *v = lookup(c, key, alt, &found);
  long long n;
  if (!v || !dyn__llm_parse_int(v, min, max, &n)) return v ? n : dflt;
  dyn__llm_int_what(what, sizeof what, min, max);
  reject(c, found, what, v);
  return dflt;
}

double dyn__llm_cfg_double(dyn__llm_cfg_t *c, const char *key, double dflt, double min,
                           double max) {
  char alt[128], what[96];
  const char *found, *v = lookup(c, key, alt, &found);
  double d;
  if (!v || !dyn__llm_parse_double(v, min, max, &d)) return v ? d : dflt;
  dyn__llm_double_what(what, sizeof what, min, max);
  reject(c, found, what, v);
  return dflt;
}

int dyn__llm_cfg_bool(dyn__llm_cfg_t *c, const char *key, int dflt) {
  char alt[128];
  const char *found, *v = lookup(c, key, alt, &found);
  if (!v) return dflt;
  if (!strcmp(v, "true")) return 1;
  if (!strcmp(v, "false")) return 0;
  reject(c, found, "true or false", v);
  return dflt;
}

const char *dyn__llm_cfg_string(dyn__llm_cfg_t *c, const char *key, const char *dflt) {
  char alt[128];
  const char *found, *v = lookup(c, key, alt, &found);
  if (!v) return dflt;
  const char *s = dyn_service_config_string(c->ctx, found, NULL);
  if (s) return s;
  reject(c, found, "a string", v);
  return dflt;
}

const char *dyn__llm_model_file(dyn__llm_cfg_t *c, char *buf, size_t size) {
  return dyn__model_file(dyn__llm_cfg_string(c, "model-path", NULL),
                         dyn__llm_cfg_string(c, "model", NULL), buf, size);
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
