/* tok_load.c - builds a tokenizer from a Hugging Face tokenizer.json.
 *
 * Reads the parts byte-level BPE needs (model vocab and merges, added
 * tokens, pre-tokenizer, decoder) into flat tables, so that encoding
 * touches no JSON and no strings except in the pre-tokenizer: merges become
 * (id, id) -> (rank, id), each id gets its decoded bytes up front. Anything
 * that would make our ids differ from HF's (another model type, byte
 * fallback, a normalizer we do not apply) is refused here, with the file
 * and the field named, rather than silently mis-tokenized later.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"

/* Ids above this are refused: real vocabularies stay under 300,000, and a
 * hostile file must not make us allocate gigabytes for one big id. */
#define MAX_ID (1u << 24)

typedef struct loader {
  dyn_tokenizer_t *tk;
  const char *name;
  char *err;
  size_t errlen;
} loader_t;

static int fail(loader_t *l, int rc, const char *fmt, ...) {
  if (l->err && l->errlen) {
    int k = snprintf(l->err, l->errlen, "%s: ", l->name);
    if (k >= 0 && (size_t)k < l->errlen) {
      va_list ap;
      va_start(ap, fmt);
      vsnprintf(l->err + k, l->errlen - (size_t)k, fmt, ap);
      va_end(ap);
    }
  }
  return rc;
}

/* ---- arena and string map ------------------------------------------------ */

static int arena_put(dyn_tokenizer_t *tk, const void *p, size_t n, uint32_t *off) {
  if (tk->arena_len + n > UINT32_MAX) return DYN_ENOMEM;
  if (tk->arena_len + n > tk->arena_cap) {
    size_t cap = tk->arena_cap ? tk->arena_cap : 4096;
    while (cap < tk->arena_len + n) cap *= 2;
    char *a = realloc(tk->arena, cap);
    if (!a) return DYN_ENOMEM;
    tk->arena = a;
    tk->arena_cap = cap;
  }
  if (n) memcpy(tk->arena + tk->arena_len, p, n);
  *off = (uint32_t)tk->arena_len;
  tk->arena_len += n;
  return DYN_OK;
}

static uint64_t str_hash(const char *s, size_t n) { /* FNV-1a */
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
  return h ^ (h >> 29);
}

static int map_init(dyn_tokenizer_t *tk, size_t expected) {
  size_t cap = 16;
  while (cap < expected * 2) cap <<= 1;
  tk->map = malloc(cap * sizeof *tk->map);
  if (!tk->map) return DYN_ENOMEM;
  for (size_t i = 0; i < cap; i++) tk->map[i].len = UINT32_MAX;
  tk->map_mask = cap - 1;
  return DYN_OK;
}

int dyn__tok_find(const dyn_tokenizer_t *tk, const char *s, size_t n, uint32_t *id) {
  for (size_t i = str_hash(s, n) & tk->map_mask;; i = (i + 1) & tk->map_mask) {
    const dyn__strslot_t *e = &tk->map[i];
    if (e->len == UINT32_MAX) return DYN_ENOTFOUND;
    if (e->len == n && memcmp(tk->arena + e->off, s, n) == 0) {
      *id = e->id;
      return DYN_OK;
    }
  }
}

/* Maps the string at arena offset off to id; a string already mapped is
 * remapped (an added token overrides a vocab entry, as HF's lookup). */
static void map_put(dyn_tokenizer_t *tk, uint32_t off, uint32_t len, uint32_t id) {
  const char *s = tk->arena + off;
  for (size_t i = str_hash(s, len) & tk->map_mask;; i = (i + 1) & tk->map_mask) {
    dyn__strslot_t *e = &tk->map[i];
    if (e->len == UINT32_MAX) {
      *e = (dyn__strslot_t){off, len, id};
      tk->map_n++;
      return;
    }
    if (e->len == len && memcmp(tk->arena + e->off, s, len) == 0) {
      e->id = id;
      return;
    }
  }
}

/* ---- ids and their bytes ------------------------------------------------- */

/* A token's bytes: its characters mapped back through the byte-level map;
 * if any character is not in the map, the token's own UTF-8 (HF's
 * ByteLevel decoder does the same). */
static int token_bytes(dyn_tokenizer_t *tk, const char *s, size_t n, uint32_t *off,
                       uint32_t *len) {
  uint8_t small[256];
  uint8_t *buf = n <= sizeof small ? small : malloc(n);
  if (!buf) return DYN_ENOMEM;
  size_t k = 0, i = 0;
  bool mapped = true;
  while (i < n) {
    uint32_t cp;
    size_t cl = dyn__utf8_decode((const uint8_t *)s + i, n - i, &cp);
    int b = cl ? dyn__bytelevel_byte(cp) : -1;
    if (b < 0) {
      mapped = false;
      break;
    }
    buf[k++] = (uint8_t)b;
    i += cl;
  }
  int rc = mapped ? arena_put(tk, buf, k, off) : arena_put(tk, s, n, off);
  *len = (uint32_t)(mapped ? k : n);
  if (buf != small) free(buf);
  return rc;
}

static int set_token(loader_t *l, uint32_t id, const char *s, size_t n, uint8_t flags) {
  dyn_tokenizer_t *tk = l->tk;
  dyn__tokinfo_t *t = &tk->tok[id];
  int rc = arena_put(tk, s, n, &t->str_off);
  if (!rc) rc = token_bytes(tk, s, n, &t->byte_off, &t->byte_len);
  if (rc) return fail(l, rc, "out of memory");
  t->str_len = (uint32_t)n;
  t->flags = (uint8_t)(flags | DYN__TOK_PRESENT);
  map_put(tk, t->str_off, t->str_len, id);
  return DYN_OK;
}

static bool get_id(json_t *v, uint32_t *id) {
  if (!json_is_integer(v)) return false;
  json_int_t x = json_integer_value(v);
  if (x < 0 || x >= (json_int_t)MAX_ID) return false;
  *id = (uint32_t)x;
  return true;
}

/* Sizes the id tables from the largest id in vocab and added_tokens. */
static int size_ids(loader_t *l, json_t *vocab, json_t *added) {
  uint32_t max = 0, id;
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    if (!get_id(v, &id))
      return fail(l, DYN_EINVAL, "model.vocab['%s'] is not an id (an integer in [0, %u))", key,
                  MAX_ID);
    if (id >= max) max = id + 1;
  }
  size_t i;
  json_array_foreach(added, i, v) {
    if (!json_is_object(v) || !get_id(json_object_get(v, "id"), &id))
      return fail(l, DYN_EINVAL, "added_tokens[%zu] has no valid 'id'", i);
    if (id >= max) max = id + 1;
  }
  if (max == 0) return fail(l, DYN_EINVAL, "model.vocab is empty");
  l->tk->n_ids = max;
  l->tk->tok = calloc(max, sizeof *l->tk->tok);
  if (!l->tk->tok) return fail(l, DYN_ENOMEM, "out of memory");
  size_t expected = json_object_size(vocab) + json_array_size(added);
  if (map_init(l->tk, expected))
    return fail(l, DYN_ENOMEM, "out of memory");
  return DYN_OK;
}

static int load_vocab(loader_t *l, json_t *vocab) {
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    uint32_t id = (uint32_t)json_integer_value(v);
    if (l->tk->tok[id].flags)
      return fail(l, DYN_EINVAL, "model.vocab: id %u is used twice ('%.*s' and '%s')", id,
                  (int)l->tk->tok[id].str_len, l->tk->arena + l->tk->tok[id].str_off, key);
    int rc = set_token(l, id, key, strlen(key), 0);
    if (rc) return rc;
  }
  return DYN_OK;
}

/* ---- added tokens -------------------------------------------------------- */

static int cmp_added(const void *a, const void *b, void *arena) {
  const dyn__added_t *x = a, *y = b;
  uint8_t fx = (uint8_t)((char *)arena)[x->off], fy = (uint8_t)((char *)arena)[y->off];
  if (fx != fy) return fx < fy ? -1 : 1;
  if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first */
  return x->id < y->id ? -1 : x->id > y->id;
}

static int load_added(loader_t *l, json_t *added) {
  dyn_tokenizer_t *tk = l->tk;
  size_t n = json_array_size(added), i;
  if (n == 0) return DYN_OK;
  tk->added = calloc(n, sizeof *tk->added);
  if (!tk->added) return fail(l, DYN_ENOMEM, "out of memory");
  json_t *v;
  json_array_foreach(added, i, v) {
    uint32_t id = (uint32_t)json_integer_value(json_object_get(v, "id"));
    json_t *content = json_object_get(v, "content");
    if (!json_is_string(content) || json_string_length(content) == 0)
      return fail(l, DYN_EINVAL, "added_tokens[%zu]: 'content' is missing or empty", i);
    const char *s = json_string_value(content);
    size_t len = json_string_length(content);
    uint8_t flags = DYN__TOK_ADDED | (json_is_true(json_object_get(v, "special")) ? DYN__TOK_SPECIAL : 0);
    int rc = set_token(l, id, s, len, flags);
    if (rc) return rc;
    tk->added[tk->n_added++] = (dyn__added_t){tk->tok[id].str_off, (uint32_t)len, id};
  }
  qsort_r(tk->added, tk->n_added, sizeof *tk->added, cmp_added, tk->arena);
  /* added_at[c]: the first added token whose first byte is >= c. */
  size_t k = 0;
  for (unsigned c = 0; c <= 256; c++) {
    while (k < tk->n_added && (uint8_t)tk->arena[tk->added[k].off] < c) k++;
    tk->added_at[c] = (uint32_t)k;
  }
  return DYN_OK;
}

/* Well-known BOS/EOS names, first match wins. */
static void find_bos_eos(dyn_tokenizer_t *tk) {
  static const char *bos[] = {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"};
  static const char *eos[] = {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"};
  uint32_t id;
  tk->bos_id = tk->eos_id = -1;
  for (size_t i = 0; i < sizeof bos / sizeof *bos && tk->bos_id < 0; i++)
    if (dyn__tok_find(tk, bos[i], strlen(bos[i]), &id) == DYN_OK) tk->bos_id = id;
  for (size_t i = 0; i < sizeof eos / sizeof *eos && tk->eos_id < 0; i++)
    if (dyn__tok_find(tk, eos[i], strlen(eos[i]), &id) == DYN_OK) tk->eos_id = id;
}

/* ---- merges -------------------------------------------------------------- */

static int merge_parts(loader_t *l, size_t i, json_t *m, const char **a, size_t *na,
                       const char **b, size_t *nb) {
  if (json_is_string(m)) { /* "a b" */
    const char *s = json_string_value(m);
    const char *sp = strchr(s, ' ');
    if (!sp || strchr(sp + 1, ' ') || sp == s || !sp[1])
      return fail(l, DYN_EINVAL, "model.merges[%zu] ('%s') is not two tokens separated by one space",
                  i, s);
    *a = s, *na = (size_t)(sp - s), *b = sp + 1, *nb = strlen(sp + 1);
    return DYN_OK;
  }
  if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
      json_is_string(json_array_get(m, 1))) { /* ["a", "b"] */
    *a = json_string_value(json_array_get(m, 0)), *na = json_string_length(json_array_get(m, 0));
    *b = json_string_value(json_array_get(m, 1)), *nb = json_string_length(json_array_get(m, 1));
    return DYN_OK;
  }
  return fail(l, DYN_EINVAL, "model.merges[%zu] is neither \"a b\" nor [\"a\", \"b\"]", i);
}

static int load_merges(loader_t *l, json_t *merges) {
  dyn_tokenizer_t *tk = l->tk;
  size_t i;
  json_t *m;
  char small[512];
  if (dyn__merges_init(&tk->merges, json_array_size(merges))) return fail(l, DYN_ENOMEM, "out of memory");
  json_array_foreach(merges, i, m) {
    const char *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    int rc = merge_parts(l, i, m, &a, &na, &b, &nb);
    if (rc) return rc;
    uint32_t ia, ib, ic;
    if (dyn__tok_find(tk, a, na, &ia))
      return fail(l, DYN_EINVAL, "model.merges[%zu]: '%.*s' is not in the vocabulary", i, (int)na, a);
    if (dyn__tok_find(tk, b, nb, &ib))
      return fail(l, DYN_EINVAL, "model.merges[%zu]: '%.*s' is not in the vocabulary", i, (int)nb, b);
    char *ab = na + nb <= sizeof small ? small : malloc(na + nb);
    if (!ab) return fail(l, DYN_ENOMEM, "out of memory");
    memcpy(ab, a, na);
    memcpy(ab + na, b, nb);
    rc = dyn__tok_find(tk, ab, na + nb, &ic);
    if (rc) fail(l, DYN_EINVAL, "model.merges[%zu]: the merged token '%.*s' is not in the vocabulary",
                 i, (int)(na + nb), ab);
    if (ab != small) free(ab);
    if (rc) return DYN_EINVAL;
    if (i >= UINT32_MAX || dyn__merges_add(&tk->merges, ia, ib, (uint32_t)i, ic))
      return fail(l, DYN_EINVAL, "model.merges: too many merges");
  }
  return DYN_OK;
}

/* ---- model, pre-tokenizer, normalizer, decoder ---------------------------- */

static const char *type_of(json_t *o) {
  const char *t = json_string_value(json_object_get(o, "type"));
  return t ? t : "(none)";
}

/* Options of model that would change ids and that we do not implement. */
static int check_model_options(loader_t *l, json_t *model) {
  if (json_is_true(json_object_get(model, "byte_fallback")))
    return fail(l, DYN_EINVAL, "model.byte_fallback is not supported (byte-level BPE only)");
  static const char *unset[] = {"continuing_subword_prefix", "end_of_word_suffix"};
  for (size_t i = 0; i < 2; i++) {
    json_t *v = json_object_get(model, unset[i]);
    if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0))
      return fail(l, DYN_EINVAL, "model.%s is not supported", unset[i]);
  }
  json_t *dropout = json_object_get(model, "dropout");
  if (dropout && !json_is_null(dropout) && json_number_value(dropout) != 0.0)
    return fail(l, DYN_EINVAL, "model.dropout is not supported (encoding must be deterministic)");
  l->tk->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
  return DYN_OK;
}

static int add_step(loader_t *l, const char *pat, size_t n, bool literal, const char *where) {
  char msg[200];
  int rc = dyn__pretok_add(&l->tk->pre, pat, n, literal, msg, sizeof msg);
  return rc ? fail(l, rc, "%s: %s", where, msg) : DYN_OK;
}

static int load_pre_one(loader_t *l, json_t *p, const char *where, bool first, bool *bytelevel) {
  const char *t = type_of(p);
  if (strcmp(t, "ByteLevel") == 0) {
    *bytelevel = true;
    json_t *pre = json_object_get(p, "add_prefix_space");
    if (!pre || json_is_true(pre)) { /* HF's default is true */
      if (!first)
        return fail(l, DYN_EINVAL, "%s: ByteLevel add_prefix_space after another split is not supported",
                    where);
      l->tk->pre.add_prefix_space = true;
    }
    json_t *re = json_object_get(p, "use_regex");
    if (!re || json_is_true(re)) return add_step(l, dyn__pat_gpt2, strlen(dyn__pat_gpt2), false, where);
    return DYN_OK;
  }
  if (strcmp(t, "Split") == 0) {
    json_t *pat = json_object_get(p, "pattern");
    json_t *re = json_object_get(pat, "Regex"), *lit = json_object_get(pat, "String");
    const char *behavior = json_string_value(json_object_get(p, "behavior"));
    if (!json_is_string(re) && !json_is_string(lit))
      return fail(l, DYN_EINVAL, "%s: Split has no pattern {\"Regex\": ...} or {\"String\": ...}", where);
    if (!behavior || strcmp(behavior, "Isolated") != 0)
      return fail(l, DYN_EINVAL, "%s: Split behavior '%s' is not supported (Isolated only)", where,
                  behavior ? behavior : "(none)");
    if (json_is_true(json_object_get(p, "invert")))
      return fail(l, DYN_EINVAL, "%s: Split with invert is not supported", where);
    json_t *s = json_is_string(re) ? re : lit;
    return add_step(l, json_string_value(s), json_string_length(s), !json_is_string(re), where);
  }
  return fail(l, DYN_EINVAL, "%s.type '%s' is not supported (ByteLevel, Split, Sequence)", where, t);
}

static int load_pre(loader_t *l, json_t *p) {
  bool bytelevel = false;
  int rc = DYN_OK;
  if (json_is_object(p) && strcmp(type_of(p), "Sequence") == 0) {
    json_t *list = json_object_get(p, "pretokenizers"), *v;
    size_t i;
    if (!json_is_array(list))
      return fail(l, DYN_EINVAL, "pre_tokenizer: Sequence has no 'pretokenizers' array");
    json_array_foreach(list, i, v) {
      char where[64];
      snprintf(where, sizeof where, "pre_tokenizer.pretokenizers[%zu]", i);
      if ((rc = load_pre_one(l, v, where, i == 0, &bytelevel))) return rc;
    }
  } else if (json_is_object(p)) {
    if ((rc = load_pre_one(l, p, "pre_tokenizer", true, &bytelevel))) return rc;
  }
  if (!bytelevel)
    return fail(l, DYN_EINVAL, "pre_tokenizer has no ByteLevel step (byte-level BPE only)");
  return DYN_OK;
}

static int load_normalizer_decoder(loader_t *l, json_t *root) {
  json_t *n = json_object_get(root, "normalizer");
  /* NFC is accepted and not applied (see dynamo/llm/tokenizer.h). */
  if (n && !json_is_null(n) && strcmp(type_of(n), "NFC") != 0)
    return fail(l, DYN_EINVAL, "normalizer.type '%s' is not supported (none or NFC)", type_of(n));
  json_t *d = json_object_get(root, "decoder");
  if (!json_is_object(d) || strcmp(type_of(d), "ByteLevel") != 0)
    return fail(l, DYN_EINVAL, "decoder.type '%s' is not supported (ByteLevel only)",
                json_is_object(d) ? type_of(d) : "(none)");
  return DYN_OK;
}

static int load_model(loader_t *l, json_t *root) {
  json_t *model = json_object_get(root, "model");
  if (!json_is_object(model)) return fail(l, DYN_EINVAL, "'model' is missing or not an object");
  json_t *type = json_object_get(model, "type");
  if (type && (!json_is_string(type) || strcmp(json_string_value(type), "BPE") != 0))
    return fail(l, DYN_EINVAL, "model.type '%s' is not supported (byte-level BPE only)",
                json_is_string(type) ? json_string_value(type) : "?");
  json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
  json_t *added = json_object_get(root, "added_tokens");
  if (!json_is_object(vocab)) return fail(l, DYN_EINVAL, "model.vocab is missing or not an object");
  if (!json_is_array(merges)) return fail(l, DYN_EINVAL, "model.merges is missing or not an array");
  if (added && !json_is_array(added) && !json_is_null(added))
    return fail(l, DYN_EINVAL, "added_tokens is not an array");
  int rc;
  if ((rc = check_model_options(l, model)) || (rc = size_ids(l, vocab, added)) ||
      (rc = load_vocab(l, vocab)) || (rc = load_merges(l, merges)) || (rc = load_added(l, added)))
    return rc;
  dyn_tokenizer_t *tk = l->tk;
  for (int b = 0; b < 256; b++) {
    char ch[4];
    uint32_t cp = dyn__bytelevel_cp((uint8_t)b), id;
    size_t n = cp < 0x80 ? (ch[0] = (char)cp, 1)
                         : (ch[0] = (char)(0xC0 | cp >> 6), ch[1] = (char)(0x80 | (cp & 0x3F)), 2);
    tk->byte_id[b] = dyn__tok_find(tk, ch, n, &id) == DYN_OK ? (int64_t)id : -1;
  }
  const char *unk = json_string_value(json_object_get(model, "unk_token"));
  uint32_t uid;
  tk->unk_id = unk && dyn__tok_find(tk, unk, strlen(unk), &uid) == DYN_OK ? (int64_t)uid : -1;
  find_bos_eos(tk);
  return DYN_OK;
}

int dyn_tokenizer_load_buf(const char *json, size_t len, const char *name, dyn_tokenizer_t **out,
                           char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  loader_t l = {NULL, name ? name : "tokenizer.json", err, errlen};
  if (!json || !out) return fail(&l, DYN_EINVAL, "no input");
  *out = NULL;
  json_error_t je;
  json_t *root = json_loadb(json, len, 0, &je);
  if (!root) return fail(&l, DYN_EINVAL, "not JSON: %s (line %d)", je.text, je.line);
  int rc = DYN_OK;
  l.tk = calloc(1, sizeof *l.tk);
  if (!l.tk || !(l.tk->name = strdup(l.name))) rc = fail(&l, DYN_ENOMEM, "out of memory");
  else if (!json_is_object(root)) rc = fail(&l, DYN_EINVAL, "not a JSON object");
  if (!rc) rc = load_model(&l, root);
  if (!rc) rc = load_pre(&l, json_object_get(root, "pre_tokenizer"));
  if (!rc) rc = load_normalizer_decoder(&l, root);
  json_decref(root);
  if (rc) {
    dyn_tokenizer_free(l.tk);
    return rc;
  }
  *out = l.tk;
  return DYN_OK;
}

int dyn_tokenizer_load_file(const char *path, dyn_tokenizer_t **out, char *err, size_t errlen) {
  loader_t l = {NULL, path ? path : "(null)", err, errlen};
  if (!path || !out) return fail(&l, DYN_EINVAL, "no path");
  FILE *f = fopen(path, "rb");
  if (!f) return fail(&l, errno == ENOENT ? DYN_ENOTFOUND : DYN_ESYS, "cannot open: %s", strerror(errno));
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int rc = DYN_OK;
  for (;;) {
    if (len == cap) {
      char *b = realloc(buf, cap = cap ? cap * 2 : 1 << 16);
      if (!b) {
        rc = fail(&l, DYN_ENOMEM, "out of memory");
        break;
      }
      buf = b;
    }
    size_t k = fread(buf + len, 1, cap - len, f);
    len += k;
    if (k == 0) {
      if (ferror(f)) rc = fail(&l, DYN_ESYS, "read failed");
      break;
    }
  }
  fclose(f);
  if (!rc) rc = dyn_tokenizer_load_buf(buf, len, path, out, err, errlen);
  free(buf);
  return rc;
}

void dyn_tokenizer_free(dyn_tokenizer_t *tk) {
  if (!tk) return;
  dyn__pretok_free(&tk->pre);
  dyn__merges_free(&tk->merges);
  free(tk->added);
  free(tk->map);
  free(tk->tok);
  free(tk->arena);
  free(tk->name);
  free(tk);
}
