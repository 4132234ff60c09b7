/* tokenizer.c - encoding text to ids and decoding ids to text.
 *
 * Encoding follows HF tokenizers for byte-level BPE, step by step, so the
 * ids are the same: added tokens are found first (leftmost, then longest,
 * matched literally), the text between them is split by the pre-tokenizer,
 * each piece becomes one id per byte (the byte-level characters' ids) and
 * is merged by bpe.c. Decoding concatenates each id's bytes (precomputed
 * by tok_load.c) and repairs invalid UTF-8 as HF does.
 *
 * No per-word cache: a cache would make the tokenizer mutable (and so one
 * per thread, or locked); measured without one, a 4,000-token prompt
 * encodes well under a millisecond (see tests/llm/test_tokenizer.c).
 */
#include <stdlib.h>
#include <string.h>

#include "llm/tok_internal.h"
#include "dynamo/status.h"

void dyn_tokens_free(dyn_tokens_t *t) {
  if (!t) return;
  free(t->ids);
  memset(t, 0, sizeof *t);
}

static int tokens_reserve(dyn_tokens_t *t, size_t extra) {
  if (t->len + extra <= t->cap) return DYN_OK;
  size_t cap = t->cap ? t->cap : 256;
  while (cap < t->len + extra) cap *= 2;
  uint32_t *ids = realloc(t->ids, cap * sizeof *ids);
  if (!ids) return DYN_ENOMEM;
  t->ids = ids;
  t->cap = cap;
  return DYN_OK;
}

/* State of one encode call. */
typedef struct enc {
  const dyn_tokenizer_t *tk;
  dyn_tokens_t *out;
  dyn__pretok_run_t run;
  dyn__bpe_scratch_t bpe;
  char *word; /* ignore_merges: the piece in byte-level form */
  size_t word_cap;
} enc_t;

/* ignore_merges (Llama 3): a piece that is itself in the vocabulary is one
 * token, whatever the merges would make of it. */
static int whole_word(enc_t *e, const uint8_t *s, size_t n, bool *done) {
  *done = false;
  if (2 * n > e->word_cap) {
    char *w = realloc(e->word, 2 * n);
    if (!w) return DYN_ENOMEM;
    e->word = w;
    e->word_cap = 2 * n;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t cp = dyn__bytelevel_cp(s[i]);
    if (cp < 0x80) {
      e->word[k++] = (char)cp;
    } else {
      e->word[k++] = (char)(0xC0 | cp >> 6);
      e->word[k++] = (char)(0x80 | (cp & 0x3F));
    }
  }
  uint32_t id;
  if (dyn__tok_find(e->tk, e->word, k, &id) == DYN_OK) {
    e->out->ids[e->out->len++] = id;
    *done = true;
  }
  return DYN_OK;
}

/* One pre-tokenized piece: bytes -> ids -> merges, appended to out. */
static int encode_piece(void *ud, const char *piece, size_t n) {
  enc_t *e = ud;
  const dyn_tokenizer_t *tk = e->tk;
  const uint8_t *s = (const uint8_t *)piece;
  int rc = tokens_reserve(e->out, n);
  if (rc) return rc;
  if (tk->ignore_merges) {
    bool done;
    if ((rc = whole_word(e, s, n, &done)) || done) return rc;
  }
  uint32_t *ids = e->out->ids + e->out->len;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    int64_t id = tk->byte_id[s[i]];
    if (id < 0) id = tk->unk_id; /* a byte missing from the vocabulary */
    if (id >= 0) ids[k++] = (uint32_t)id;
  }
  size_t merged;
  if ((rc = dyn__bpe(&tk->merges, &e->bpe, ids, k, &merged))) return rc;
  e->out->len += merged;
  return DYN_OK;
}

/* Text between added tokens. */
static int encode_segment(enc_t *e, const char *s, size_t n) {
  if (n == 0) return DYN_OK;
  if (!e->tk->pre.add_prefix_space || s[0] == ' ')
    return dyn__pretok_split(&e->tk->pre, &e->run, s, n, encode_piece, e);
  char *t = malloc(n + 1);
  if (!t) return DYN_ENOMEM;
  t[0] = ' ';
  memcpy(t + 1, s, n);
  int rc = dyn__pretok_split(&e->tk->pre, &e->run, t, n + 1, encode_piece, e);
  free(t);
  return rc;
}

/* The longest added token at s, or NULL. */
static const dyn__added_t *added_at(const dyn_tokenizer_t *tk, const char *s, size_t n) {
  uint8_t c = (uint8_t)s[0];
  for (uint32_t i = tk->added_at[c]; i < tk->added_at[c + 1]; i++) {
    const dyn__added_t *a = &tk->added[i];
    if (a->len <= n && memcmp(tk->arena + a->off, s, a->len) == 0) return a;
  }
  return NULL;
}

static int encode_all(enc_t *e, const char *text, size_t len) {
  const dyn_tokenizer_t *tk = e->tk;
  size_t seg = 0;
  int rc;
  for (size_t i = 0; i < len;) {
    uint8_t c = (uint8_t)text[i];
    const dyn__added_t *a = tk->added_at[c] < tk->added_at[c + 1] ? added_at(tk, text + i, len - i) : NULL;
    if (!a) {
      i++;
      continue;
    }
    if ((rc = encode_segment(e, text + seg, i - seg)) || (rc = tokens_reserve(e->out, 1))) return rc;
    e->out->ids[e->out->len++] = a->id;
    i += a->len;
    seg = i;
  }
  return encode_segment(e, text + seg, len - seg);
}

int dyn_tokenizer_encode(const dyn_tokenizer_t *tk, const char *text, size_t len, dyn_tokens_t *out) {
  if (!tk || !out || (!text && len)) return DYN_EINVAL;
  if (dyn__utf8_valid_prefix((const uint8_t *)text, len) != len) return DYN_EINVAL;
  enc_t e = {.tk = tk, .out = out};
  size_t start = out->len;
  int rc = dyn__pretok_run_init(&tk->pre, &e.run);
  if (!rc) rc = encode_all(&e, text, len);
  if (rc) out->len = start; /* all or nothing */
  dyn__pretok_run_free(&e.run);
  dyn__bpe_scratch_free(&e.bpe);
  free(e.word);
  return rc;
}

/* ---- decoding and lookups ------------------------------------------------- */

const uint8_t *dyn__tokenizer_bytes(const dyn_tokenizer_t *tk, uint32_t id, size_t *len) {
  if (id >= tk->n_ids || !tk->tok[id].flags) return NULL;
  *len = tk->tok[id].byte_len;
  return (const uint8_t *)tk->arena + tk->tok[id].byte_off;
}

int dyn_tokenizer_decode(const dyn_tokenizer_t *tk, const uint32_t *ids, size_t n, unsigned flags,
                         char **out, size_t *out_len) {
  if (!tk || !out || (!ids && n)) return DYN_EINVAL;
  *out = NULL;
  size_t total = 0, bl;
  for (size_t i = 0; i < n; i++) {
    if (!dyn__tokenizer_bytes(tk, ids[i], &bl)) return DYN_EINVAL;
    total += bl;
  }
  uint8_t *raw = malloc(total + 1);
  char *text = malloc(3 * total + 1);
  if (!raw || !text) {
    free(raw);
    free(text);
    return DYN_ENOMEM;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if ((flags & DYN_DETOK_SKIP_SPECIAL) && dyn_tokenizer_is_special(tk, ids[i])) continue;
    const uint8_t *b = dyn__tokenizer_bytes(tk, ids[i], &bl);
    memcpy(raw + k, b, bl);
    k += bl;
  }
  size_t tl = 0;
  dyn__utf8_lossy(raw, k, true, text, &tl);
  free(raw);
  text[tl] = '\0';
  *out = text;
  if (out_len) *out_len = tl;
  return DYN_OK;
}

uint32_t dyn_tokenizer_vocab_size(const dyn_tokenizer_t *tk) { return tk ? tk->n_ids : 0; }

int dyn_tokenizer_token_id(const dyn_tokenizer_t *tk, const char *tok, size_t len, uint32_t *id) {
  if (!tk || !tok || !id) return DYN_EINVAL;
  return dyn__tok_find(tk, tok, len, id);
}

const char *dyn_tokenizer_token_str(const dyn_tokenizer_t *tk, uint32_t id, size_t *len) {
  if (!tk || id >= tk->n_ids || !tk->tok[id].flags) return NULL;
  if (len) *len = tk->tok[id].str_len;
  return tk->arena + tk->tok[id].str_off;
}

int dyn_tokenizer_is_special(const dyn_tokenizer_t *tk, uint32_t id) {
  return tk && id < tk->n_ids && (tk->tok[id].flags & DYN__TOK_SPECIAL) ? 1 : 0;
}

static int id_or_none(int64_t v, uint32_t *id) {
  if (v < 0) return DYN_ENOTFOUND;
  *id = (uint32_t)v;
  return DYN_OK;
}

int dyn_tokenizer_bos_id(const dyn_tokenizer_t *tk, uint32_t *id) {
  return tk && id ? id_or_none(tk->bos_id, id) : DYN_EINVAL;
}

int dyn_tokenizer_eos_id(const dyn_tokenizer_t *tk, uint32_t *id) {
  return tk && id ? id_or_none(tk->eos_id, id) : DYN_EINVAL;
}
