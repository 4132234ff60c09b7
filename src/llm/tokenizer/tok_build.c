/* tok_build.c - building a tokenizer's tables, whatever file they come from.
 *
 * tok_load.c reads a Hugging Face tokenizer.json and tok_gguf.c a GGUF
 * model file; both fill the same flat tables through these functions, so
 * encoding and decoding (tokenizer.c) do not know where a tokenizer came
 * from: a string arena, string -> id map, per-id decoded bytes, the added
 * tokens indexed by first byte, the byte -> id table, and BOS/EOS.
 */
#define _GNU_SOURCE /* qsort_r */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"
#include "llm/tokenizer/tok_internal.h"

int dyn__tok_fail(dyn__tokload_t *l, int rc, const char *fmt, ...) {
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

int dyn__tok_begin(dyn__tokload_t *l) {
  l->tk = calloc(1, sizeof *l->tk);
  if (!l->tk || !(l->tk->name = strdup(l->name))) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
  l->tk->unk_id = l->tk->bos_id = l->tk->eos_id = l->tk->eot_id = l->tk->eom_id = -1;
  return DYN_OK;
}

/* ---- arena and string map ------------------------------------------------ */

static int arena_put(dyn_tokenizer_t *tk, const void *p, size_t n, uint32_t *off) {
  if (tk->arena_len + n > UINT32_MAX) return DYN_ENOMEM;
  /* Allocated even for an empty string: offsets into the arena must point
   * into memory (tk->arena + 0 on NULL is undefined; fuzz_tokenizer). */
  if (tk->arena_len + n > tk->arena_cap || !tk->arena) {
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

int dyn__tok_alloc_ids(dyn__tokload_t *l, uint32_t n_ids, size_t expected) {
  dyn_tokenizer_t *tk = l->tk;
  size_t cap = 16;
  while (cap < expected * 2) cap <<= 1;
  tk->n_ids = n_ids;
  tk->tok = calloc(n_ids ? n_ids : 1, sizeof *tk->tok);
  tk->map = malloc(cap * sizeof *tk->map);
  if (!tk->tok || !tk->map) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
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
 * remapped (an added token overrides a vocab entry, as HF's lookup). The
 * map holds at most half its slots (dyn__tok_alloc_ids sized it for the
 * strings expected); past that the string is refused. */
static int map_put(dyn_tokenizer_t *tk, uint32_t off, uint32_t len, uint32_t id) {
  const char *s = tk->arena + off;
  for (size_t i = str_hash(s, len) & tk->map_mask;; i = (i + 1) & tk->map_mask) {
    dyn__strslot_t *e = &tk->map[i];
    if (e->len == UINT32_MAX) {
      if ((tk->map_n + 1) * 2 > tk->map_mask + 1) return DYN_ENOMEM;
      *e = (dyn__strslot_t){off, len, id};
      tk->map_n++;
      return DYN_OK;
    }
    if (e->len == len && memcmp(tk->arena + e->off, s, len) == 0) {
      e->id = id;
      return DYN_OK;
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

int dyn__tok_set(dyn__tokload_t *l, uint32_t id, const char *s, size_t n, uint8_t flags, bool raw) {
  dyn_tokenizer_t *tk = l->tk;
  dyn__tokinfo_t *t = &tk->tok[id];
  if (n > UINT32_MAX) return dyn__tok_fail(l, DYN_EINVAL, "token %u is too long", id);
  int rc = arena_put(tk, s, n, &t->str_off);
  if (!rc) {
    if (raw) {
      t->byte_off = t->str_off;
      t->byte_len = (uint32_t)n;
    } else {
      rc = token_bytes(tk, s, n, &t->byte_off, &t->byte_len);
    }
  }
  if (!rc) {
    t->str_len = (uint32_t)n;
    t->flags = (uint8_t)(flags | DYN__TOK_PRESENT);
    rc = map_put(tk, t->str_off, t->str_len, id);
  }
  return rc ? dyn__tok_fail(l, rc, "out of memory") : DYN_OK;
}

/* ---- added tokens -------------------------------------------------------- */

static int cmp_added(const void *a, const void *b, void *arena) {
  const dyn__added_t *x = a, *y = b;
  uint8_t fx = (uint8_t)((char *)arena)[x->off], fy = (uint8_t)((char *)arena)[y->off];
  if (fx != fy) return fx < fy ? -1 : 1;
  if (x->len != y->len) return x->len > y->len ? -1 : 1; /* longest first */
  return x->id < y->id ? -1 : x->id > y->id;
}

int dyn__tok_index_added(dyn__tokload_t *l) {
  dyn_tokenizer_t *tk = l->tk;
  size_t n = 0;
  for (uint32_t id = 0; id < tk->n_ids; id++)
    if ((tk->tok[id].flags & DYN__TOK_ADDED) && tk->tok[id].str_len) n++;
  if (n) {
    tk->added = calloc(n, sizeof *tk->added);
    if (!tk->added) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
  }
  for (uint32_t id = 0; id < tk->n_ids; id++) {
    const dyn__tokinfo_t *t = &tk->tok[id];
    if ((t->flags & DYN__TOK_ADDED) && t->str_len)
      tk->added[tk->n_added++] = (dyn__added_t){t->str_off, t->str_len, id};
  }
  if (tk->n_added) qsort_r(tk->added, tk->n_added, sizeof *tk->added, cmp_added, tk->arena);
  /* added_at[c]: the first added token whose first byte is >= c. */
  size_t k = 0;
  for (unsigned c = 0; c <= 256; c++) {
    while (k < tk->n_added && (uint8_t)tk->arena[tk->added[k].off] < c) k++;
    tk->added_at[c] = (uint32_t)k;
  }
  return DYN_OK;
}

/* ---- the rest ------------------------------------------------------------ */

/* Well-known BOS/EOS names, first match wins; for files that name none. */
static void find_bos_eos(dyn_tokenizer_t *tk) {
  static const char *bos[] = {"<|begin_of_text|>", "<s>", "<bos>", "<|startoftext|>"};
  static const char *eos[] = {"<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>"};
  uint32_t id;
  for (size_t i = 0; i < sizeof bos / sizeof *bos && tk->bos_id < 0; i++)
    if (dyn__tok_find(tk, bos[i], strlen(bos[i]), &id) == DYN_OK) tk->bos_id = id;
  for (size_t i = 0; i < sizeof eos / sizeof *eos && tk->eos_id < 0; i++)
    if (dyn__tok_find(tk, eos[i], strlen(eos[i]), &id) == DYN_OK) tk->eos_id = id;
}

void dyn__tok_finish(dyn_tokenizer_t *tk) {
  for (int b = 0; b < 256; b++) {
    char ch[4];
    uint32_t cp = dyn__bytelevel_cp((uint8_t)b), id;
    size_t n = cp < 0x80 ? (ch[0] = (char)cp, 1)
                         : (ch[0] = (char)(0xC0 | cp >> 6), ch[1] = (char)(0x80 | (cp & 0x3F)), 2);
    tk->byte_id[b] = dyn__tok_find(tk, ch, n, &id) == DYN_OK ? (int64_t)id : -1;
  }
  find_bos_eos(tk);
}

void dyn_tokenizer_free(dyn_tokenizer_t *tk) {
  if (!tk) return;
  dyn__pretok_free(&tk->pre);
  dyn__merges_free(&tk->merges);
  free(tk->added);
  free(tk->map);
  free(tk->tok);
  free(tk->arena);
  free(tk->chat_template);
  free(tk->name);
  free(tk);
}
