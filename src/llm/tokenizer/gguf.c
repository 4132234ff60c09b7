/* gguf.c - parses a GGUF file's header and metadata (see gguf.h).
 *
 * Layout (little-endian): "GGUF", version u32, tensor count u64, key/value
 * count u64, then each pair: key (u64 length + bytes), type u32, value. A
 * string value is a u64 length and its bytes; an array is an element type
 * u32, a count u64 and the elements. Arrays of arrays are refused, as
 * llama.cpp's reader refuses them.
 *
 * Every read goes through need(), which checks the bytes are there
 * without overflowing (a count is compared with the bytes left divided by
 * the smallest element, never multiplied), so a hostile count can neither
 * read past the end nor make us allocate more than the file could hold.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "llm/tokenizer/gguf.h"

/* No real key is longer, and real files have a few dozen pairs (arrays
 * count as one): more is damage, not data, and bounds the duplicate check. */
#define MAX_KEY 65535
#define MAX_KV 4096

typedef struct rd {
  const uint8_t *data;
  size_t len, off;
  const char *name;
  char *err;
  size_t errlen;
} rd_t;

static int failv(const char *name, char *err, size_t errlen, const char *fmt, va_list ap) {
  if (err && errlen) {
    int k = snprintf(err, errlen, "%s: ", name ? name : "(gguf)");
    if (k >= 0 && (size_t)k < errlen) vsnprintf(err + k, errlen - (size_t)k, fmt, ap);
  }
  return DYN_EINVAL;
}

static int fail(rd_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(rd_t *r, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  failv(r->name, r->err, r->errlen, fmt, ap);
  va_end(ap);
  return DYN_EINVAL;
}

static int gfail(const dyn__gguf_t *g, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int gfail(const dyn__gguf_t *g, char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  failv(g->name, err, errlen, fmt, ap);
  va_end(ap);
  return DYN_EINVAL;
}

static bool need(const rd_t *r, uint64_t n) { return n <= r->len - r->off; }

static uint32_t u32_at(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t u64_at(const uint8_t *p) { return u32_at(p) | (uint64_t)u32_at(p + 4) << 32; }

static int rd_u32(rd_t *r, uint32_t *v, const char *what, const char *key) {
  if (!need(r, 4))
    return fail(r, "truncated at offset %zu reading %s%s%s", r->off, what, key ? " of " : "",
                key ? key : "");
  *v = u32_at(r->data + r->off);
  r->off += 4;
  return DYN_OK;
}

static int rd_u64(rd_t *r, uint64_t *v, const char *what, const char *key) {
  if (!need(r, 8))
    return fail(r, "truncated at offset %zu reading %s%s%s", r->off, what, key ? " of " : "",
                key ? key : "");
  *v = u64_at(r->data + r->off);
  r->off += 8;
  return DYN_OK;
}

static const char *const TYPE_NAMES[DYN__GGUF_NTYPES] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
    "bool",  "string", "array", "uint64", "int64", "float64"};
static const uint8_t TYPE_SIZE[DYN__GGUF_NTYPES] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};

const char *dyn__gguf_type_name(uint32_t type) {
  return type < DYN__GGUF_NTYPES ? TYPE_NAMES[type] : "unknown";
}

/* Skips one string; key names the pair for errors. */
static int skip_str(rd_t *r, const char *key, uint64_t index, bool in_array) {
  uint64_t n;
  size_t at = r->off;
  /* n is compared with what is left after its own 8 bytes: 8 + n could wrap. */
  if (!need(r, 8) || (n = u64_at(r->data + r->off)) > r->len - r->off - 8) {
    if (in_array)
      return fail(r, "truncated at offset %zu in element %llu of '%s' (a string of %llu bytes)", at,
                  (unsigned long long)index, key,
                  need(r, 8) ? (unsigned long long)u64_at(r->data + at) : 0ull);
    return fail(r, "truncated at offset %zu in the string value of '%s'", at, key);
  }
  r->off += 8 + (size_t)n;
  return DYN_OK;
}

static int rd_value(rd_t *r, dyn__gguf_kv_t *kv, const char *key) {
  size_t start = r->off;
  if (kv->type >= DYN__GGUF_NTYPES)
    return fail(r, "'%s' has value type %u, which is not a GGUF type", key, kv->type);
  kv->n = 1;
  if (kv->type == DYN__GGUF_STRING) {
    int rc = skip_str(r, key, 0, false);
    if (rc) return rc;
  } else if (kv->type == DYN__GGUF_ARRAY) {
    int rc = rd_u32(r, &kv->elem, "the element type", key);
    if (!rc) rc = rd_u64(r, &kv->n, "the element count", key);
    if (rc) return rc;
    if (kv->elem >= DYN__GGUF_NTYPES || kv->elem == DYN__GGUF_ARRAY)
      return fail(r, "'%s' is an array of %s (type %u), which is not supported", key,
                  dyn__gguf_type_name(kv->elem), kv->elem);
    start = r->off;
    if (kv->elem == DYN__GGUF_STRING) {
      if (kv->n > (r->len - r->off) / 8)
        return fail(r, "'%s' claims %llu strings, more than the %zu bytes left can hold", key,
                    (unsigned long long)kv->n, r->len - r->off);
      for (uint64_t i = 0; i < kv->n; i++) {
        int rc2 = skip_str(r, key, i, true);
        if (rc2) return rc2;
      }
    } else {
      uint64_t size = TYPE_SIZE[kv->elem];
      if (kv->n > (r->len - r->off) / size)
        return fail(r, "'%s' claims %llu elements of %s, more than the %zu bytes left hold", key,
                    (unsigned long long)kv->n, dyn__gguf_type_name(kv->elem), r->len - r->off);
      r->off += (size_t)(kv->n * size);
    }
  } else {
    if (!need(r, TYPE_SIZE[kv->type]))
      return fail(r, "truncated at offset %zu in the %s value of '%s'", r->off,
                  dyn__gguf_type_name(kv->type), key);
    r->off += TYPE_SIZE[kv->type];
  }
  kv->val = r->data + start;
  kv->val_len = r->off - start;
  return DYN_OK;
}

static bool same_key(const dyn__gguf_kv_t *kv, const char *key, size_t n) {
  return kv->key_len == n && memcmp(kv->key, key, n) == 0;
}

static int rd_header(rd_t *r, dyn__gguf_t *g, uint64_t *n_kv) {
  if (r->len < 4 || memcmp(r->data, "GGUF", 4) != 0)
    return fail(r, "not a GGUF file (it does not start with the bytes 'GGUF')");
  r->off = 4;
  int rc = rd_u32(r, &g->version, "the version", NULL);
  if (!rc) rc = rd_u64(r, &g->n_tensors, "the tensor count", NULL);
  if (!rc) rc = rd_u64(r, n_kv, "the metadata count", NULL);
  if (rc) return rc;
  if (g->version >= 0x01000000u) /* a small version read backwards */
    return fail(r, "big-endian GGUF files are not supported");
  if (g->version < 2 || g->version > 3)
    return fail(r, "GGUF version %u is not supported (2 and 3 are)", g->version);
  /* The smallest pair: an 8-byte key length, 1 byte of key, a type and a
   * 1-byte value. */
  if (*n_kv > MAX_KV)
    return fail(r, "the header claims %llu metadata pairs (at most %d are read)",
                (unsigned long long)*n_kv, MAX_KV);
  if (*n_kv > (r->len - r->off) / 14)
    return fail(r, "the header claims %llu metadata pairs, more than the %zu bytes left can hold",
                (unsigned long long)*n_kv, r->len - r->off);
  return DYN_OK;
}

int dyn__gguf_parse(dyn__gguf_t *g, const uint8_t *data, size_t len, const char *name, char *err,
                    size_t errlen) {
  memset(g, 0, sizeof *g);
  g->name = name;
  rd_t r = {data, data ? len : 0, 0, name, err, errlen};
  uint64_t n_kv = 0;
  int rc = rd_header(&r, g, &n_kv);
  if (rc) return rc;
  g->kv = calloc(n_kv ? (size_t)n_kv : 1, sizeof *g->kv);
  if (!g->kv) return DYN_ENOMEM;
  char key[128]; /* the key, NUL-terminated and cut short, for messages */
  for (uint64_t i = 0; i < n_kv; i++) {
    dyn__gguf_kv_t *kv = &g->kv[i];
    uint64_t klen = 0;
    snprintf(key, sizeof key, "metadata pair %llu", (unsigned long long)i);
    if ((rc = rd_u64(&r, &klen, "the key length", key))) break;
    if (klen == 0 || klen > MAX_KEY || !need(&r, klen)) {
      rc = fail(&r, "%s at offset %zu has a key of %llu bytes (%s)", key, r.off - 8,
                (unsigned long long)klen,
                klen == 0 ? "empty" : klen > MAX_KEY ? "too long" : "past the end of the file");
      break;
    }
    kv->key = (const char *)data + r.off;
    kv->key_len = (size_t)klen;
    r.off += (size_t)klen;
    snprintf(key, sizeof key, "%.*s", (int)(klen < 100 ? klen : 100), kv->key);
    for (uint64_t k = 0; k < i && !rc; k++)
      if (same_key(&g->kv[k], kv->key, kv->key_len)) rc = fail(&r, "key '%s' appears twice", key);
    if (rc || (rc = rd_u32(&r, &kv->type, "the value type", key)) || (rc = rd_value(&r, kv, key)))
      break;
    g->n_kv++;
  }
  if (rc) dyn__gguf_free(g);
  return rc;
}

void dyn__gguf_free(dyn__gguf_t *g) {
  free(g->kv);
  g->kv = NULL;
  g->n_kv = 0;
}

const dyn__gguf_kv_t *dyn__gguf_find(const dyn__gguf_t *g, const char *key) {
  size_t n = strlen(key);
  for (size_t i = 0; i < g->n_kv; i++)
    if (same_key(&g->kv[i], key, n)) return &g->kv[i];
  return NULL;
}

static int typed(const dyn__gguf_t *g, const char *key, const dyn__gguf_kv_t *kv, const char *want,
                 char *err, size_t errlen) {
  char got[40];
  if (kv->type == DYN__GGUF_ARRAY)
    snprintf(got, sizeof got, "array of %s", dyn__gguf_type_name(kv->elem));
  else
    snprintf(got, sizeof got, "%s", dyn__gguf_type_name(kv->type));
  return gfail(g, err, errlen, "'%s' is %s, expected %s", key, got, want);
}

int dyn__gguf_get_str(const dyn__gguf_t *g, const char *key, const char **s, size_t *n, char *err,
                      size_t errlen) {
  const dyn__gguf_kv_t *kv = dyn__gguf_find(g, key);
  if (!kv) return DYN_ENOTFOUND;
  if (kv->type != DYN__GGUF_STRING) return typed(g, key, kv, "a string", err, errlen);
  const uint8_t *p = kv->val;
  dyn__gguf_next_str(&p, s, n);
  return DYN_OK;
}

int dyn__gguf_get_uint(const dyn__gguf_t *g, const char *key, uint64_t max, uint64_t *v, char *err,
                       size_t errlen) {
  const dyn__gguf_kv_t *kv = dyn__gguf_find(g, key);
  if (!kv) return DYN_ENOTFOUND;
  const uint8_t *p = kv->val;
  int64_t x;
  switch (kv->type) {
  case DYN__GGUF_UINT8: x = p[0]; break;
  case DYN__GGUF_INT8: x = (int8_t)p[0]; break;
  case DYN__GGUF_UINT16: x = p[0] | p[1] << 8; break;
  case DYN__GGUF_INT16: x = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
  case DYN__GGUF_UINT32: x = u32_at(p); break;
  case DYN__GGUF_INT32: x = (int32_t)u32_at(p); break;
  case DYN__GGUF_INT64: x = (int64_t)u64_at(p); break;
  case DYN__GGUF_UINT64:
    if (u64_at(p) > max) goto range;
    *v = u64_at(p);
    return DYN_OK;
  default: return typed(g, key, kv, "an integer", err, errlen);
  }
  if (x < 0 || (uint64_t)x > max) goto range;
  *v = (uint64_t)x;
  return DYN_OK;
range:
  return gfail(g, err, errlen, "'%s' is out of range (at most %llu)", key, (unsigned long long)max);
}

int dyn__gguf_get_bool(const dyn__gguf_t *g, const char *key, bool *v, char *err, size_t errlen) {
  const dyn__gguf_kv_t *kv = dyn__gguf_find(g, key);
  if (!kv) return DYN_ENOTFOUND;
  if (kv->type != DYN__GGUF_BOOL) return typed(g, key, kv, "a bool", err, errlen);
  *v = kv->val[0] != 0;
  return DYN_OK;
}

int dyn__gguf_get_arr(const dyn__gguf_t *g, const char *key, uint32_t elem,
                      const dyn__gguf_kv_t **out, char *err, size_t errlen) {
  const dyn__gguf_kv_t *kv = dyn__gguf_find(g, key);
  if (!kv) return DYN_ENOTFOUND;
  if (kv->type != DYN__GGUF_ARRAY || kv->elem != elem) {
    char want[40];
    snprintf(want, sizeof want, "an array of %s", dyn__gguf_type_name(elem));
    return typed(g, key, kv, want, err, errlen);
  }
  *out = kv;
  return DYN_OK;
}

void dyn__gguf_next_str(const uint8_t **p, const char **s, size_t *n) {
  *n = (size_t)u64_at(*p);
  *s = (const char *)*p + 8;
  *p += 8 + *n;
}

int32_t dyn__gguf_i32_at(const dyn__gguf_kv_t *kv, uint64_t i) {
  return (int32_t)u32_at(kv->val + 4 * i);
}
