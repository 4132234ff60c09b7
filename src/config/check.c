/* check.c - the keys of a service's configuration that dynamo reads, each
 * checked for its type (see check.h). The Python SDK checks the same keys
 * again (dynamo/sdk/config.py) for a config that reaches it without
 * `dynamo serve`; the messages have the same form. */
#include "config/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fail.h"
#include "config/yaml_read.h"
#include "dynamo/status.h"

typedef struct {
  const char *source, *service;
  char *err;
  size_t errlen;
} where_t;

/* "SOURCE: service S, key 'K': must be WHAT, not VALUE" (VALUE cut short). */
static int bad(const where_t *w, const char *key, const char *what, const json_t *v) {
  char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
  int rc = dyn__fail(w->err, w->errlen, DYN_EINVAL, "%s: service %s, key '%s': must be %s, not %.60s%s",
                     w->source, w->service, key, what, s ? s : dyn__yaml_kind_name(v),
                     s && strlen(s) > 60 ? "..." : "");
  free(s);
  return rc;
}

static int is_count(const json_t *v, json_int_t min, json_int_t max) {
  return json_is_integer(v) && json_integer_value(v) >= min && json_integer_value(v) <= max;
}

/* A GPU count: an integer, or a string of digits as Kubernetes spells it. */
static int is_gpu_count(const json_t *v) {
  if (is_count(v, 0, 1 << 20)) return 1;
  const char *s = json_string_value(v);
  return s && *s && strlen(s) < 8 && strspn(s, "0123456789") == strlen(s);
}

static int is_env(const json_t *e) {
  const json_t *name = json_object_get(e, "name"), *value = json_object_get(e, "value");
  return json_is_string(name) && json_string_length(name) && value && !json_is_object(value) &&
         !json_is_array(value);
}

static int check_resources(const where_t *w, const json_t *res) {
  if (!json_is_object(res)) return bad(w, "ServiceArgs.resources", "a mapping", res);
  char key[128];
  const char *name;
  const json_t *v;
  json_object_foreach((json_t *)res, name, v) {
    snprintf(key, sizeof key, "ServiceArgs.resources.%s", name);
    if (!strcmp(name, "gpu") ? !is_gpu_count(v) : !json_is_string(v) && !json_is_number(v))
      return bad(w, key, !strcmp(name, "gpu") ? "a whole number of GPUs"
                                              : "a quantity (a string or a number)", v);
  }
  return DYN_OK;
}

static int check_service_args(const where_t *w, const json_t *args) {
  if (!json_is_object(args)) return bad(w, "ServiceArgs", "a mapping", args);
  const char *name;
  const json_t *v;
  json_object_foreach((json_t *)args, name, v) {
    if (!strcmp(name, "workers")) {
      if (!is_count(v, 1, 1 << 20)) return bad(w, "ServiceArgs.workers", "an integer >= 1", v);
    } else if (!strcmp(name, "resources")) {
      int rc = check_resources(w, v);
      if (rc) return rc;
    } else if (!strcmp(name, "envs")) {
      size_t i;
      const json_t *e;
      int ok = json_is_array(v);
      json_array_foreach(v, i, e) ok = ok && is_env(e);
      if (!ok) return bad(w, "ServiceArgs.envs", "a list of {name: string, value: scalar}", v);
    } else {
      return dyn__fail(w->err, w->errlen, DYN_EINVAL,
                       "%s: service %s, key 'ServiceArgs.%s': unknown (known: workers, "
                       "resources, envs)", w->source, w->service, name);
    }
  }
  return DYN_OK;
}

static int check_section(const where_t *w, const json_t *section) {
  const char *key;
  const json_t *v;
  json_object_foreach((json_t *)section, key, v) {
    int rc = DYN_OK;
    if (!strcmp(key, "port")) {
      if (!is_count(v, 0, 65535)) rc = bad(w, key, "a port number (0-65535)", v);
    } else if (!strcmp(key, "host")) {
      if (!json_is_string(v)) rc = bad(w, key, "a host name or address (a string)", v);
    } else if (!strcmp(key, "common-configs")) {
      size_t i;
      const json_t *item;
      int ok = json_is_array(v);
      json_array_foreach(v, i, item) ok = ok && json_is_string(item);
      if (!ok) rc = bad(w, key, "a list of Common keys", v);
    } else if (!strcmp(key, "ServiceArgs")) {
      rc = check_service_args(w, v);
    }
    if (rc) return rc;
  }
  return DYN_OK;
}

int dyn__config_check(const json_t *config, const char *source, char *err, size_t errlen) {
  where_t w = {.source = source, .err = err, .errlen = errlen};
  const json_t *section;
  json_object_foreach((json_t *)config, w.service, section) {
    if (!json_is_object(section)) continue; /* its shape is yaml_read's to report */
    int rc = check_section(&w, section);
    if (rc) return rc;
  }
  return DYN_OK;
}
