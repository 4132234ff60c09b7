/* gguf.h - a reader for the metadata of GGUF model files (llama.cpp's
 * format): the header and the key/value pairs, not the tensors.
 *
 * A model file comes from anywhere, so the reader treats it as hostile:
 * every length and count is checked against the bytes that are really
 * there before anything is read or allocated, and every failure is a
 * sentence naming the file, the offset and the key it was reading. The
 * parsed result points into the caller's bytes (nothing is copied), so the
 * bytes must outlive it. Little-endian files of GGUF version 2 and 3 are
 * read; version 1 (32-bit counts) and big-endian files are refused.
 *
 *   dyn__gguf_t g;
 *   if (dyn__gguf_parse(&g, data, len, "model.gguf", err, sizeof err)) die(err);
 *   const char *s; size_t n;
 *   dyn__gguf_get_str(&g, "tokenizer.ggml.model", &s, &n, err, sizeof err);
 *   dyn__gguf_free(&g);
 */
#ifndef DYN_LLM_GGUF_H
#define DYN_LLM_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Value types, as numbered in the file. */
enum {
  DYN__GGUF_UINT8 = 0,
  DYN__GGUF_INT8 = 1,
  DYN__GGUF_UINT16 = 2,
  DYN__GGUF_INT16 = 3,
  DYN__GGUF_UINT32 = 4,
  DYN__GGUF_INT32 = 5,
  DYN__GGUF_FLOAT32 = 6,
  DYN__GGUF_BOOL = 7,
  DYN__GGUF_STRING = 8,
  DYN__GGUF_ARRAY = 9,
  DYN__GGUF_UINT64 = 10,
  DYN__GGUF_INT64 = 11,
  DYN__GGUF_FLOAT64 = 12,
  DYN__GGUF_NTYPES
};

/* One key/value pair. For a scalar, val is its bytes (a string: its
 * 8-byte length, then its bytes) and n is 1; for an array, elem is the
 * element type, n the count and val the first element. val_len covers
 * the whole value, already checked to lie inside the file. */
typedef struct dyn__gguf_kv {
  const char *key;
  size_t key_len;
  uint32_t type, elem;
  uint64_t n;
  const uint8_t *val;
  size_t val_len;
} dyn__gguf_kv_t;

typedef struct dyn__gguf {
  const char *name; /* labels errors; not copied */
  uint32_t version;
  uint64_t n_tensors;
  dyn__gguf_kv_t *kv;
  size_t n_kv;
} dyn__gguf_t;

/* Parses the header and all key/value pairs of data[0..len). DYN_EINVAL
 * with a sentence in err for a malformed file, DYN_ENOMEM. Keys that
 * repeat are refused (llama.cpp refuses them too). */
int dyn__gguf_parse(dyn__gguf_t *g, const uint8_t *data, size_t len, const char *name, char *err,
                    size_t errlen);
void dyn__gguf_free(dyn__gguf_t *g);

/* The pair with this key, or NULL. */
const dyn__gguf_kv_t *dyn__gguf_find(const dyn__gguf_t *g, const char *key);

/* "uint32", "string", "array of int32", ...: for error messages. */
const char *dyn__gguf_type_name(uint32_t type);

/* Typed reads of one key. DYN_ENOTFOUND when the key is absent (err
 * untouched), DYN_EINVAL with err naming the key and both types when the
 * value has another type. get_uint takes any integer type whose value
 * fits in [0, max]; get_str's string is not NUL-terminated. */
int dyn__gguf_get_str(const dyn__gguf_t *g, const char *key, const char **s, size_t *n, char *err,
                      size_t errlen);
int dyn__gguf_get_uint(const dyn__gguf_t *g, const char *key, uint64_t max, uint64_t *v, char *err,
                       size_t errlen);
int dyn__gguf_get_bool(const dyn__gguf_t *g, const char *key, bool *v, char *err, size_t errlen);
/* An array whose elements have type elem. */
int dyn__gguf_get_arr(const dyn__gguf_t *g, const char *key, uint32_t elem,
                      const dyn__gguf_kv_t **kv, char *err, size_t errlen);

/* Walks a string array (validated by the parse): *p starts at kv->val;
 * each call gives the next string and moves *p past it. */
void dyn__gguf_next_str(const uint8_t **p, const char **s, size_t *n);

/* Element i of an int32 array. */
int32_t dyn__gguf_i32_at(const dyn__gguf_kv_t *kv, uint64_t i);

#endif
