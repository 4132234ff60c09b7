/* tok_load.c - builds a tokenizer from a Hugging Face tokenizer.json.
 *
 * Reads the parts byte-level BPE needs (model vocab and merges, added
 * tokens, pre-tokenizer, decoder) into flat tables (tok_build.c), so that encoding
 * touches no JSON and no strings except in the pre-tokenizer: merges become
 * (id, id) -> (rank, id), each id gets its decoded bytes up front. Anything
 * that would make our ids differ from HF's (another model type, byte
 * fallback, a normalizer we do not apply) is refused here, with the file
 * and the field named, rather than silently mis-tokenized later.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
#include "dynamo/status.h"

typedef dyn__tokload_t loader_t;
#define fail dyn__tok_fail
#define MAX_ID DYN__TOK_MAX_ID

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
  return dyn__tok_alloc_ids(l, max, json_object_size(vocab) + json_array_size(added));
}

static int load_vocab(loader_t *l, json_t *vocab) {
  const char *key;
  json_t *v;
  json_object_foreach(vocab, key, v) {
    uint32_t id = (uint32_t)json_integer_value(v);
    if (l->tk->tok[id].flags)
      return fail(l, DYN_EINVAL, "model.vocab: id %u is used twice ('%.*s' and '%s')", id,
                  (int)l->tk->tok[id].str_len, l->tk->arena + l->tk->tok[id].str_off, key);
    int rc = dyn__tok_set(l, id, key, strlen(key), 0, false);
    if (rc) return rc;
  }
  return DYN_OK;
}

/* ---- added tokens -------------------------------------------------------- */

static int load_added(loader_t *l, json_t *added) {
  size_t n = json_array_size(added), i;
  json_t *v;
  json_array_foreach(added, i, v) {
    uint32_t id = (uint32_t)json_integer_value(json_object_get(v, "id"));
    json_t *content = json_object_get(v, "content");
    if (!json_is_string(content) || json_string_length(content) == 0)
      return fail(l, DYN_EINVAL, "added_tokens[%zu]: 'content' is missing or empty", i);
    const char *s = json_string_value(content);
    size_t len = json_string_length(content);
    uint8_t flags = DYN__TOK_ADDED | (json_is_true(json_object_get(v, "special")) ? DYN__TOK_SPECIAL : 0);
    int rc = dyn__tok_set(l, id, s, len, flags, false);
    if (rc) return rc;
  }
  return n ? dyn__tok_index_added(l) : DYN_OK;
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
  const char *unk = json_string_value(json_object_get(model, "unk_token"));
  uint32_t uid;
  tk->unk_id = unk && dyn__tok_find(tk, unk, strlen(unk), &uid) == DYN_OK ? (int64_t)uid : -1;
  dyn__tok_finish(tk);
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
  int rc = dyn__tok_begin(&l);
  if (!rc && !json_is_object(root)) rc = fail(&l, DYN_EINVAL, "not a JSON object");
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
  char magic[4];
  if (fread(magic, 1, 4, f) == 4 && memcmp(magic, "GGUF", 4) == 0) { /* a model file */
    fclose(f);
    return dyn__tokenizer_load_gguf_file(path, out, err, errlen);
  }
  rewind(f);
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
