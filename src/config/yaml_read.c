/* yaml_read.c - reading YAML into JSON: config files and build manifests.
 *
 * The YAML goes through libyaml's event parser and is built straight into
 * jansson values, so that everything downstream (overrides, the resolver,
 * the workers) deals in one representation: JSON. Plain scalars are typed by
 * the YAML 1.2 core schema (so `yes` stays a string, unlike YAML 1.1), and
 * quoted scalars are always strings. Every error names the file and the
 * line, because a config file is the thing a user edits by hand.
 */
#include "config/yaml_read.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "dynamo/status.h"

/* Bounds that keep a hostile or broken file from exhausting the stack or
 * memory: nesting depth, and the number of values after alias expansion
 * (the "billion laughs" document is a few lines long). */
#define MAX_DEPTH 256
#define MAX_NODES 1000000
#define MAX_FILE (64u << 20)

typedef struct anchor {
  char *name;
  json_t *value;
  size_t nodes;
} anchor_t;

typedef struct ctx {
  yaml_parser_t parser;
  const char *name;
  char *err;
  size_t errlen;
  int check_shape; /* top level and its values must be mappings */
  anchor_t *anchors;
  size_t nanchors, anchors_cap;
  size_t nodes;
} ctx_t;

static int fail(ctx_t *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(ctx_t *c, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->err, c->errlen, fmt, ap);
  va_end(ap);
  return code;
}

/* libyaml marks count from 0; editors count lines and columns from 1. */
static int parser_error(ctx_t *c) {
  const yaml_parser_t *p = &c->parser;
  if (p->error == YAML_MEMORY_ERROR) return fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
  const char *problem = p->problem ? p->problem : "invalid YAML";
  /* The reader (bad encoding) knows a byte offset, not a line. */
  if (p->error == YAML_READER_ERROR)
    return fail(c, DYN_EINVAL, "%s: byte %zu: %s (the file must be UTF-8)", c->name,
                p->problem_offset, problem);
  if (p->context)
    return fail(c, DYN_EINVAL, "%s:%zu:%zu: %s (%s, which starts at line %zu)", c->name,
                p->problem_mark.line + 1, p->problem_mark.column + 1, problem, p->context,
                p->context_mark.line + 1);
  return fail(c, DYN_EINVAL, "%s:%zu:%zu: %s", c->name, p->problem_mark.line + 1,
              p->problem_mark.column + 1, problem);
}

static int next(ctx_t *c, yaml_event_t *ev) {
  if (!yaml_parser_parse(&c->parser, ev)) return parser_error(c);
  return DYN_OK;
}

const char *dyn__yaml_kind_name(const json_t *v) {
  switch (json_typeof(v)) {
    case JSON_OBJECT: return "a mapping";
    case JSON_ARRAY: return "a sequence";
    case JSON_STRING: return "a string";
    case JSON_INTEGER:
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
  }
  return "a value";
}

/* ---- scalars: the YAML 1.2 core schema -------------------------------- */

static int all_in(const char *s, size_t n, const char *set) {
  if (!n) return 0;
  for (size_t i = 0; i < n; i++)
    if (!s[i] || !strchr(set, s[i])) return 0;
  return 1;
}

static int is_one_of(const char *s, const char *const *words) {
  for (; *words; words++)
    if (!strcmp(s, *words)) return 1;
  return 0;
}

/* [-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
static int is_float(const char *s) {
  if (*s == '-' || *s == '+') s++;
  size_t ip = strspn(s, "0123456789");
  s += ip;
  if (*s == '.') {
    s++;
    size_t fp = strspn(s, "0123456789");
    if (!ip && !fp) return 0;
    s += fp;
  } else if (!ip) {
    return 0;
  }
  if (*s == 'e' || *s == 'E') {
    s++;
    if (*s == '-' || *s == '+') s++;
    size_t ep = strspn(s, "0123456789");
    if (!ep) return 0;
    s += ep;
  }
  return *s == 0;
}

static json_t *plain_scalar(const char *s, size_t n) {
  static const char *const nulls[] = {"~", "null", "Null", "NULL", NULL};
  static const char *const trues[] = {"true", "True", "TRUE", NULL};
  static const char *const falses[] = {"false", "False", "FALSE", NULL};
  if (memchr(s, 0, n)) return json_stringn(s, n);
  if (!n || is_one_of(s, nulls)) return json_null();
  if (is_one_of(s, trues)) return json_true();
  if (is_one_of(s, falses)) return json_false();
  const char *digits = (*s == '-' || *s == '+') ? s + 1 : s;
  int base = 0;
  const char *num = NULL;
  if (all_in(digits, strlen(digits), "0123456789")) base = 10, num = s;
  else if (!strncmp(s, "0o", 2) && all_in(s + 2, n - 2, "01234567")) base = 8, num = s + 2;
  else if (!strncmp(s, "0x", 2) && all_in(s + 2, n - 2, "0123456789abcdefABCDEF"))
    base = 16, num = s + 2;
  if (base) {
    errno = 0;
    long long v = strtoll(num, NULL, base);
    if (errno != ERANGE) return json_integer(v);
    /* Too big for an integer: keep the magnitude as a number rather than
     * wrapping it or failing the whole file. */
    return json_real(base == 10 ? strtod(num, NULL) : (double)strtoull(num, NULL, base));
  }
  /* .inf and .nan are floats in YAML but have no JSON spelling; they stay
   * strings, which is what a JSON consumer can at least see. */
  if (is_float(s)) return json_real(strtod(s, NULL));
  return json_stringn(s, n);
}

static int is_null_scalar(const char *s, size_t n) {
  json_t *v = plain_scalar(s, n);
  int null = json_is_null(v);
  json_decref(v);
  return null;
}

static json_t *scalar(const yaml_event_t *ev) {
  const char *s = (const char *)ev->data.scalar.value;
  size_t n = ev->data.scalar.length;
  const char *tag = (const char *)ev->data.scalar.tag;
  /* "!" (non-specific) and "!!str" both force a string; other tags are
   * application-specific and we type the value as if it had none. */
  if (tag && (!strcmp(tag, "!") || !strcmp(tag, YAML_STR_TAG))) return json_stringn(s, n);
  if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE) return json_stringn(s, n);
  return plain_scalar(s, n);
}

/* ---- building --------------------------------------------------------- */

static int build(ctx_t *c, yaml_event_t *ev, int depth, json_t **out, size_t *nodes);

static int count_nodes(ctx_t *c, size_t add, const yaml_mark_t *m) {
  c->nodes += add;
  if (c->nodes > MAX_NODES)
    return fail(c, DYN_ETOOBIG, "%s:%zu: more than %d values (aliases expanding too far?)",
                c->name, m->line + 1, MAX_NODES);
  return DYN_OK;
}

static int remember_anchor(ctx_t *c, const char *name, json_t *v, size_t nodes) {
  if (c->nanchors == c->anchors_cap) {
    size_t cap = c->anchors_cap ? c->anchors_cap * 2 : 8;
    anchor_t *a = realloc(c->anchors, cap * sizeof *a);
    if (!a) return fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
    c->anchors = a;
    c->anchors_cap = cap;
  }
  char *copy = strdup(name);
  if (!copy) return fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
  c->anchors[c->nanchors++] = (anchor_t){copy, json_incref(v), nodes};
  return DYN_OK;
}

static int alias(ctx_t *c, const yaml_event_t *ev, json_t **out, size_t *nodes) {
  const char *name = (const char *)ev->data.alias.anchor;
  /* Searched from the end: a redefined anchor means its latest definition. */
  for (size_t i = c->nanchors; i-- > 0;) {
    if (strcmp(c->anchors[i].name, name)) continue;
    int rc = count_nodes(c, c->anchors[i].nodes, &ev->start_mark);
    if (rc) return rc;
    /* A copy, not a shared reference: an override that changes one use of
     * an alias must not change the others. */
    *out = json_deep_copy(c->anchors[i].value);
    *nodes = c->anchors[i].nodes;
    return *out ? DYN_OK : fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
  }
  return fail(c, DYN_EINVAL, "%s:%zu:%zu: unknown alias '*%s'", c->name,
              ev->start_mark.line + 1, ev->start_mark.column + 1, name);
}

static int sequence(ctx_t *c, int depth, json_t **out, size_t *nodes) {
  json_t *arr = json_array();
  if (!arr) return fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
  int rc;
  for (;;) {
    yaml_event_t ev;
    if ((rc = next(c, &ev))) break;
    if (ev.type == YAML_SEQUENCE_END_EVENT) {
      yaml_event_delete(&ev);
      break;
    }
    json_t *item;
    size_t n;
    if ((rc = build(c, &ev, depth + 1, &item, &n))) break;
    *nodes += n;
    if (json_array_append_new(arr, item)) {
      rc = fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
      break;
    }
  }
  if (rc) {
    json_decref(arr);
    return rc;
  }
  *out = arr;
  return DYN_OK;
}

/* `<<: *base` (or a sequence of them) fills in the keys the mapping does not
 * set itself; earlier sources win over later ones, as in YAML 1.1's merge
 * type, which config files use even under 1.2. */
static int mergeable(const json_t *v) {
  if (json_is_object(v)) return 1;
  if (!json_is_array(v)) return 0;
  size_t i;
  json_t *item;
  json_array_foreach(v, i, item) {
    if (!json_is_object(item)) return 0;
  }
  return 1;
}

static int merge_into(json_t *obj, json_t *src) {
  if (json_is_array(src)) {
    size_t i;
    json_t *v;
    json_array_foreach(src, i, v) {
      if (merge_into(obj, v)) return DYN_ENOMEM;
    }
    return DYN_OK;
  }
  const char *k;
  json_t *v;
  json_object_foreach(src, k, v) {
    if (!json_object_get(obj, k) && json_object_set(obj, k, v)) return DYN_ENOMEM;
  }
  return DYN_OK;
}

static int mapping(ctx_t *c, int depth, json_t **out, size_t *nodes) {
  json_t *obj = json_object(), *merges = json_array();
  int rc = DYN_OK;
  if (!obj || !merges) {
    rc = fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
    goto done;
  }
  for (;;) {
    yaml_event_t kev, vev;
    if ((rc = next(c, &kev))) goto done;
    if (kev.type == YAML_MAPPING_END_EVENT) {
      yaml_event_delete(&kev);
      break;
    }
    if (kev.type != YAML_SCALAR_EVENT) {
      rc = fail(c, DYN_EINVAL, "%s:%zu:%zu: only plain keys are supported, not a %s",
                c->name, kev.start_mark.line + 1, kev.start_mark.column + 1,
                kev.type == YAML_ALIAS_EVENT ? "alias" : "collection");
      yaml_event_delete(&kev);
      goto done;
    }
    yaml_mark_t kmark = kev.start_mark;
    size_t klen = kev.data.scalar.length;
    char *key = strndup((const char *)kev.data.scalar.value, klen);
    int is_merge = kev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE && !strcmp(key ? key : "", "<<");
    yaml_event_delete(&kev);
    if (!key) {
      rc = fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
      goto done;
    }
    if (strlen(key) != klen) {
      rc = fail(c, DYN_EINVAL, "%s:%zu:%zu: a key contains a NUL character", c->name,
                kmark.line + 1, kmark.column + 1);
      free(key);
      goto done;
    }
    if ((rc = next(c, &vev))) {
      free(key);
      goto done;
    }
    yaml_mark_t vmark = vev.start_mark;
    json_t *val;
    size_t n = 0;
    rc = build(c, &vev, depth + 1, &val, &n);
    if (rc) {
      free(key);
      goto done;
    }
    *nodes += n;
    if (c->check_shape && depth == 0 && !is_merge) {
      /* A section left empty (`Frontend:`) is an empty mapping: it is what
       * someone writes before filling it in. */
      if (json_is_null(val)) {
        json_decref(val);
        val = json_object();
      } else if (!json_is_object(val)) {
        rc = fail(c, DYN_EINVAL,
                  "%s:%zu: section '%s' must be a mapping of settings, found %s", c->name,
                  vmark.line + 1, key, dyn__yaml_kind_name(val));
        json_decref(val);
        free(key);
        goto done;
      }
    }
    if (is_merge && !mergeable(val)) {
      rc = fail(c, DYN_EINVAL, "%s:%zu: '<<' must merge a mapping or a list of mappings, not %s",
                c->name, vmark.line + 1, dyn__yaml_kind_name(val));
      json_decref(val);
    } else if (is_merge) {
      rc = json_array_append_new(merges, val) ? fail(c, DYN_ENOMEM, "%s: out of memory", c->name)
                                              : DYN_OK;
    } else if (json_object_get(obj, key)) {
      /* YAML forbids it, and silently keeping one of two values is how a
       * typo in a long file hides. */
      rc = fail(c, DYN_EINVAL, "%s:%zu:%zu: duplicate key '%s'", c->name, kmark.line + 1,
                kmark.column + 1, key);
      json_decref(val);
    } else if (json_object_set_new(obj, key, val)) {
      rc = fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
    }
    free(key);
    if (rc) goto done;
  }
  size_t i;
  json_t *m;
  json_array_foreach(merges, i, m) {
    if (merge_into(obj, m)) {
      rc = fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
      goto done;
    }
  }
done:
  json_decref(merges);
  if (rc) {
    json_decref(obj);
    return rc;
  }
  *out = obj;
  return DYN_OK;
}

/* Takes ownership of ev. *nodes counts the values built, for the alias bound. */
static int build(ctx_t *c, yaml_event_t *ev, int depth, json_t **out, size_t *nodes) {
  int rc;
  *nodes = 1;
  yaml_mark_t mark = ev->start_mark;
  if (depth > MAX_DEPTH) {
    yaml_event_delete(ev);
    return fail(c, DYN_ETOOBIG, "%s:%zu: nested deeper than %d levels", c->name, mark.line + 1,
                MAX_DEPTH);
  }
  char *anchor = NULL;
  switch (ev->type) {
    case YAML_SCALAR_EVENT:
      if (ev->data.scalar.anchor) anchor = strdup((const char *)ev->data.scalar.anchor);
      *out = scalar(ev);
      rc = *out ? count_nodes(c, 1, &mark) : fail(c, DYN_ENOMEM, "%s: out of memory", c->name);
      break;
    case YAML_ALIAS_EVENT:
      rc = alias(c, ev, out, nodes);
      break;
    case YAML_SEQUENCE_START_EVENT:
      if (ev->data.sequence_start.anchor)
        anchor = strdup((const char *)ev->data.sequence_start.anchor);
      rc = count_nodes(c, 1, &mark);
      if (!rc) rc = sequence(c, depth, out, nodes);
      break;
    case YAML_MAPPING_START_EVENT:
      if (ev->data.mapping_start.anchor)
        anchor = strdup((const char *)ev->data.mapping_start.anchor);
      rc = count_nodes(c, 1, &mark);
      if (!rc) rc = mapping(c, depth, out, nodes);
      break;
    default:
      rc = fail(c, DYN_EPROTO, "%s:%zu:%zu: unexpected YAML event %d", c->name, mark.line + 1,
                mark.column + 1, (int)ev->type);
      break;
  }
  yaml_event_delete(ev);
  if (!rc && anchor) {
    rc = remember_anchor(c, anchor, *out, *nodes);
    if (rc) json_decref(*out);
  }
  free(anchor);
  return rc;
}

static int parse(const char *text, size_t len, const char *name, int check_shape,
                 json_t **out, char *err, size_t errlen) {
  ctx_t c = {.name = name, .err = err, .errlen = errlen, .check_shape = check_shape};
  if (!yaml_parser_initialize(&c.parser)) return fail(&c, DYN_ENOMEM, "%s: out of memory", name);
  yaml_parser_set_input_string(&c.parser, (const unsigned char *)text, len);
  json_t *root = NULL;
  yaml_event_t ev;
  int rc = next(&c, &ev); /* STREAM-START */
  if (rc) goto done;
  yaml_event_delete(&ev);
  if ((rc = next(&c, &ev))) goto done;
  if (ev.type == YAML_STREAM_END_EVENT) { /* an empty file */
    yaml_event_delete(&ev);
    root = json_null();
    goto shape;
  }
  yaml_event_delete(&ev); /* DOCUMENT-START */
  if ((rc = next(&c, &ev))) goto done;
  yaml_mark_t mark = ev.start_mark;
  size_t nodes;
  if (check_shape && ev.type != YAML_MAPPING_START_EVENT &&
      !(ev.type == YAML_SCALAR_EVENT && ev.data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
        is_null_scalar((const char *)ev.data.scalar.value, ev.data.scalar.length))) {
    const char *what = ev.type == YAML_SEQUENCE_START_EVENT ? "a sequence"
                       : ev.type == YAML_ALIAS_EVENT        ? "an alias"
                                                            : "a scalar";
    yaml_event_delete(&ev);
    rc = fail(&c, DYN_EINVAL,
              "%s:%zu: the top level must be a mapping with one section per service, found %s",
              name, mark.line + 1, what);
    goto done;
  }
  if ((rc = build(&c, &ev, 0, &root, &nodes))) goto done;
  if ((rc = next(&c, &ev))) goto done; /* DOCUMENT-END */
  yaml_event_delete(&ev);
  if ((rc = next(&c, &ev))) goto done;
  if (ev.type != YAML_STREAM_END_EVENT) {
    mark = ev.start_mark;
    yaml_event_delete(&ev);
    rc = fail(&c, DYN_EINVAL, "%s:%zu: a second YAML document; put everything in one", name,
              mark.line + 1);
    goto done;
  }
  yaml_event_delete(&ev);
shape:
  if (check_shape && json_is_null(root)) {
    json_decref(root);
    root = json_object();
    if (!root) rc = fail(&c, DYN_ENOMEM, "%s: out of memory", name);
  }
done:
  for (size_t i = 0; i < c.nanchors; i++) {
    free(c.anchors[i].name);
    json_decref(c.anchors[i].value);
  }
  free(c.anchors);
  yaml_parser_delete(&c.parser);
  if (rc) {
    json_decref(root);
    return rc;
  }
  *out = root;
  return DYN_OK;
}

int dyn__yaml_parse(const char *text, size_t len, const char *name, json_t **out, char *err,
                    size_t errlen) {
  return parse(text, len, name, 0, out, err, errlen);
}

int dyn__config_load(const char *path, json_t **out, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    snprintf(err, errlen, "cannot open config file %s: %s", path, strerror(errno));
    return DYN_ENOTFOUND;
  }
  char *text = NULL;
  size_t len = 0, cap = 0;
  int rc = DYN_OK;
  for (;;) {
    if (len == cap) {
      if (cap >= MAX_FILE) {
        snprintf(err, errlen, "%s: larger than %u MiB; is it really a config file?", path,
                 MAX_FILE >> 20);
        rc = DYN_ETOOBIG;
        break;
      }
      cap = cap ? cap * 2 : 4096;
      char *t = realloc(text, cap);
      if (!t) {
        snprintf(err, errlen, "%s: out of memory", path);
        rc = DYN_ENOMEM;
        break;
      }
      text = t;
    }
    size_t n = fread(text + len, 1, cap - len, f);
    len += n;
    if (n == 0) {
      if (ferror(f)) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        rc = DYN_ESYS;
      }
      break;
    }
  }
  fclose(f);
  if (!rc) rc = parse(text ? text : "", len, path, 1, out, err, errlen);
  free(text);
  return rc;
}
