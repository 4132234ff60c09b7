/* yamlout.c - JSON values written out as YAML with libyaml's emitter.
 *
 * The emitter does the syntax (indentation, escaping, multi-line strings);
 * this file decides the one thing it cannot: whether a string may be
 * written plain. A plain "8000" or "yes" reads back as a number or a
 * boolean (YAML 1.1 readers, kubectl's among them, still take yes/no/on/off
 * as booleans), so any string that could be mistaken for another type is
 * double-quoted. The rule is deliberately broader than the YAML 1.2 core
 * schema: quoting a string that did not need it costs two characters,
 * not quoting one that did changes its type.
 */
#include "package/yamlout.h"

#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <yaml.h>

#include "dynamo/status.h"

typedef struct sink {
  char *buf;
  size_t len, cap;
  int oom;
} sink_t;

static int on_write(void *data, unsigned char *bytes, size_t size) {
  sink_t *s = data;
  if (s->len + size + 1 > s->cap) {
    size_t cap = s->cap ? s->cap : 4096;
    while (cap < s->len + size + 1) cap *= 2;
    char *nb = realloc(s->buf, cap);
    if (!nb) {
      s->oom = 1;
      return 0;
    }
    s->buf = nb;
    s->cap = cap;
  }
  memcpy(s->buf + s->len, bytes, size);
  s->len += size;
  s->buf[s->len] = 0;
  return 1;
}

/* True when a plain scalar s could read back as something other than a
 * string in some YAML reader. */
static int needs_quotes(const char *s) {
  static const char *const words[] = {"~", "null", "true", "false", "yes", "no", "on", "off",
                                      "y", "n", NULL};
  if (!*s) return 1;
  /* YAML 1.1's merge key and value key: PyYAML, for one, reads a plain
   * "<<" as a merge and fails on a plain "=" (no constructor for !!value). */
  if (!strcmp(s, "<<") || !strcmp(s, "=")) return 1;
  if (isdigit((unsigned char)*s) || strchr("+-.", *s)) return 1;
  for (const char *const *w = words; *w; w++)
    if (!strcasecmp(s, *w)) return 1;
  return 0;
}

static int emit(yaml_emitter_t *em, yaml_event_t *ev) { return yaml_emitter_emit(em, ev) ? 0 : -1; }

static int scalar(yaml_emitter_t *em, const char *text, int is_string) {
  yaml_event_t ev;
  yaml_scalar_style_t style = YAML_ANY_SCALAR_STYLE;
  if (is_string && needs_quotes(text)) style = YAML_DOUBLE_QUOTED_SCALAR_STYLE;
  /* A config file inside a ConfigMap reads best as a literal block; the
   * emitter falls back to quoting where a block cannot hold the text. */
  else if (is_string && strchr(text, '\n')) style = YAML_LITERAL_SCALAR_STYLE;
  /* plain_implicit only for non-strings and strings that are safe plain:
   * the emitter then never picks a plain style that would change type. */
  if (!yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)text, (int)strlen(text), 1, 1,
                                    style))
    return -1;
  return emit(em, &ev);
}

static int value(yaml_emitter_t *em, json_t *v);

static int mapping(yaml_emitter_t *em, json_t *v) {
  yaml_event_t ev;
  if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_MAPPING_STYLE) ||
      emit(em, &ev))
    return -1;
  const char *k;
  json_t *item;
  json_object_foreach(v, k, item) {
    if (scalar(em, k, 1) || value(em, item)) return -1;
  }
  if (!yaml_mapping_end_event_initialize(&ev)) return -1;
  return emit(em, &ev);
}

static int sequence(yaml_emitter_t *em, json_t *v) {
  yaml_event_t ev;
  if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_ANY_SEQUENCE_STYLE) ||
      emit(em, &ev))
    return -1;
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    if (value(em, item)) return -1;
  }
  if (!yaml_sequence_end_event_initialize(&ev)) return -1;
  return emit(em, &ev);
}

static int value(yaml_emitter_t *em, json_t *v) {
  char num[64];
  switch (json_typeof(v)) {
  case JSON_OBJECT: return mapping(em, v);
  case JSON_ARRAY: return sequence(em, v);
  case JSON_STRING: return scalar(em, json_string_value(v), 1);
  case JSON_INTEGER:
    snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
    return scalar(em, num, 0);
  case JSON_REAL:
    if (!isfinite(json_real_value(v))) return -2;
    snprintf(num, sizeof num, "%.17g", json_real_value(v));
    /* 2.0 prints as "2", which would read back as an integer. */
    if (!strpbrk(num, ".eE")) strcat(num, ".0");
    return scalar(em, num, 0);
  case JSON_TRUE: return scalar(em, "true", 0);
  case JSON_FALSE: return scalar(em, "false", 0);
  case JSON_NULL: return scalar(em, "null", 0);
  }
  return -1;
}

int dyn__yaml_dump(json_t *const *docs, size_t n, char **out) {
  *out = NULL;
  sink_t sink = {0};
  yaml_emitter_t em;
  yaml_event_t ev;
  if (!yaml_emitter_initialize(&em)) return DYN_ENOMEM;
  yaml_emitter_set_output(&em, on_write, &sink);
  yaml_emitter_set_unicode(&em, 1);
  yaml_emitter_set_width(&em, 100);
  yaml_emitter_set_indent(&em, 2);
  int rc = 0;
  if (!yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) || emit(&em, &ev)) rc = -1;
  for (size_t i = 0; i < n && !rc; i++) {
    /* Every document after the first needs its "---"; the first gets one
     * too when there are several, which reads better in a manifest. */
    if (!yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, n > 1 ? 0 : 1) ||
        emit(&em, &ev))
      rc = -1;
    if (!rc) rc = value(&em, docs[i]);
    if (!rc && (!yaml_document_end_event_initialize(&ev, 1) || emit(&em, &ev))) rc = -1;
  }
  if (!rc && (!yaml_stream_end_event_initialize(&ev) || emit(&em, &ev))) rc = -1;
  if (!rc && !yaml_emitter_flush(&em)) rc = -1;
  yaml_emitter_delete(&em);
  if (rc || sink.oom) {
    free(sink.buf);
    return rc == -2 ? DYN_EINVAL : DYN_ENOMEM;
  }
  *out = sink.buf ? sink.buf : strdup("");
  return *out ? DYN_OK : DYN_ENOMEM;
}
