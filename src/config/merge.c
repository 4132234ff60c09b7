/* merge.c - a served graph's configuration: the config file with the
 * command line's --Service.key=value overrides applied on top, in order.
 *
 * The file is read by yaml_read.c and the keys dynamo reads are checked by
 * check.c; this file knows what an override looks like and how it reaches
 * into the file's mappings.
 */
#include "config/merge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fail.h"
#include "config/check.h"
#include "config/yaml_read.h"
#include "dynamo/status.h"

int dyn__config_is_override(const char *arg) {
  size_t keylen = strcspn(arg, "=");
  const char *dot = memchr(arg, '.', keylen);
  return dot != NULL && arg[0] != '-';
}

/* Applies "Service.key=value" (the leading "--" already stripped): the value
 * is JSON when it parses as JSON, else the string itself; dotted keys reach
 * into nested mappings, which are created when missing. */
static int override(json_t *config, const char *arg, char *err, size_t errlen) {
  const char *eq = strchr(arg, '=');
  if (!eq) {
    snprintf(err, errlen, "--%s: an override needs a value: --%s=VALUE", arg, arg);
    return DYN_EINVAL;
  }
  size_t keylen = (size_t)(eq - arg);
  /* Check every part first so that a bad override changes nothing. */
  size_t parts = 1;
  for (size_t i = 0; i < keylen; i++) {
    if (arg[i] != '.') continue;
    parts++;
    if (i == 0 || arg[i - 1] == '.' || i + 1 == keylen) {
      snprintf(err, errlen, "--%s: empty key in '%.*s'", arg, (int)keylen, arg);
      return DYN_EINVAL;
    }
  }
  if (parts < 2 || keylen == 0) {
    snprintf(err, errlen, "--%s: expected --Service.key=value", arg);
    return DYN_EINVAL;
  }
  const char *text = eq + 1;
  json_t *value = json_loads(text, JSON_DECODE_ANY, NULL);
  if (!value) value = json_string(text);
  if (!value) {
    snprintf(err, errlen, "--%s: the value is not valid UTF-8", arg);
    return DYN_EINVAL;
  }
  json_t *node = config;
  const char *part = arg;
  for (;;) {
    size_t n = strcspn(part, ".=");
    char *name = strndup(part, n);
    if (!name) {
      json_decref(value);
      snprintf(err, errlen, "out of memory");
      return DYN_ENOMEM;
    }
    if (part[n] == '=') { /* the last part: set it */
      int bad = json_object_set_new(node, name, value);
      free(name);
      if (bad) {
        snprintf(err, errlen, "out of memory");
        return DYN_ENOMEM;
      }
      return DYN_OK;
    }
    json_t *child = json_object_get(node, name);
    if (!child) {
      child = json_object();
      if (!child || json_object_set_new(node, name, child)) {
        free(name);
        json_decref(value);
        snprintf(err, errlen, "out of memory");
        return DYN_ENOMEM;
      }
    } else if (!json_is_object(child)) {
      snprintf(err, errlen, "--%s: '%.*s' is %s, not a mapping, so it has no key '%.*s'", arg,
               (int)(part + n - arg), arg, dyn__yaml_kind_name(child),
               (int)strcspn(part + n + 1, ".="), part + n + 1);
      free(name);
      json_decref(value);
      return DYN_EINVAL;
    }
    free(name);
    node = child;
    part += n + 1;
  }
}

int dyn__config_merge(const char *path, const char *const *overrides, size_t n, json_t **out,
                      char *err, size_t errlen) {
  json_t *config = NULL;
  int rc = DYN_OK;
  if (path) rc = dyn__config_load(path, &config, err, errlen);
  else if (!(config = json_object())) rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  /* Checked before and after the overrides, so that the message names the
   * file or the command line, whichever brought the bad value. */
  if (!rc && path) rc = dyn__config_check(config, path, err, errlen);
  for (size_t i = 0; !rc && i < n; i++) rc = override(config, overrides[i], err, errlen);
  if (!rc && n) rc = dyn__config_check(config, "the command line (--Service.key=value)", err, errlen);
  if (rc) {
    json_decref(config);
    return rc;
  }
  *out = config;
  return DYN_OK;
}
