/* tokenizer.c - encoding text to ids and decoding ids to text.
 *
 * Encoding follows HF tokenizers for byte-level BPE, step by step, so the
 * ids are the same: added tokens are found first (leftmost, then longest,
 * matched literally), the text between them is split by the pre-tokenizer,
 * each piece becomes one id per byte (the byte-level characters' ids) and
 * is merged by bpe.c. Decoding concatenates each id's bytes (precomputed
 * by tok_load.c) and repairs invalid UTF-8 as HF does.
 *
 * Words repeat (" the", " of", a system prompt's vocabulary), so each call
 * keeps a cache of short pieces it has already merged. The cache lives in
 * the call, not in the tokenizer, so a tokenizer stays immutable and
 * shareable between threads without a lock; it costs one small table per
 * call, sized by the text. Measured on English-like text it halves the
 * encode time (tests/llm/test_tokenizer.c prints the figure).
 */
#include <stdlib.h>
#include <string.h>

#include "llm/tokenizer/tok_internal.h"
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

/* The per-call piece cache: pieces up to CACHE_KEY bytes, open addressing
 * over (key bytes, ids) kept in two growing arrays. */
#define CACHE_KEY 32

typedef struct cslot {
  uint32_t key_off, ids_off;
  uint8_t key_len, n_ids; /* key_len 0: empty */
} cslot_t;

typedef struct cache {
  cslot_t *slot;
  size_t mask, n;
  char *keys;
  size_t keys_len, keys_cap;
  uint32_t *ids;
  size_t ids_len, ids_cap;
} cache_t;

/* State of one encode call. */
typedef struct enc {
  const dyn_tokenizer_t *tk;
  dyn_tokens_t *out;
  dyn__pretok_run_t run;
  dyn__bpe_scratch_t bpe;
  char *word; /* ignore_merges: the piece in byte-level form */
  size_t word_cap;
  cache_t cache;
} enc_t;

static size_t piece_hash(const uint8_t *s, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3ull;
  return (size_t)(h ^ (h >> 32));
}

static int cache_init(cache_t *c, size_t text_len) {
  size_t cap = 64;
  while (cap < text_len / 2 && cap < (1u << 15)) cap <<= 1; /* ~1 slot per 2 bytes */
  c->slot = calloc(cap, sizeof *c->slot);
  c->mask = cap - 1;
  return c->slot ? DYN_OK : DYN_ENOMEM;
}

static void cache_free(cache_t *c) {
  free(c->slot);
  free(c->keys);
  free(c->ids);
}

/* The slot for s: a hit (key_len != 0) or the empty slot to fill. */
static cslot_t *cache_find(cache_t *c, const uint8_t *s, size_t n) {
  for (size_t i = piece_hash(s, n) & c->mask;; i = (i + 1) & c->mask) {
    cslot_t *e = &c->slot[i];
    if (!e->key_len || (e->key_len == n && memcmp(c->keys + e->key_off, s, n) == 0)) return e;
  }
}

static bool grow_arr(void **p, size_t *cap, size_t need, size_t elem) {
  if (need <= *cap) return true;
  size_t c = *cap ? *cap * 2 : 1024;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * elem);
  if (!q) return false;
  *p = q;
  *cap = c;
  return true;
}

/* Remembers a piece's ids; a full table (or no memory) just stops caching. */
static void cache_put(cache_t *c, cslot_t *e, const uint8_t *s, size_t n, const uint32_t *ids,
                      size_t k) {
  if ((c->n + 1) * 2 > c->mask + 1 || k == 0 || k > UINT8_MAX) return;
  if (!grow_arr((void **)&c->keys, &c->keys_cap, c->keys_len + n, 1) ||
      !grow_arr((void **)&c->ids, &c->ids_cap, c->ids_len + k, sizeof *c->ids))
    return;
  memcpy(c->keys + c->keys_len, s, n);
  memcpy(c->ids + c->ids_len, ids, k * sizeof *ids);
  *e = (cslot_t){(uint32_t)c->keys_len, (uint32_t)c->ids_len, (uint8_t)n, (uint8_t)k};
  c->keys_len += n;
  c->ids_len += k;
  c->n++;
}

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
  cslot_t *slot = n <= CACHE_KEY ? cache_find(&e->cache, s, n) : NULL;
  if (slot && slot->key_len) {
    memcpy(e->out->ids + e->out->len, e->cache.ids + slot->ids_off, slot->n_ids * sizeof(uint32_t));
    e->out->len += slot->n_ids;
    return DYN_OK;
  }
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
  if (slot) cache_put(&e->cache, slot, s, n, ids, merged);
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
  if (!rc) rc = cache_init(&e.cache, len);
  if (!rc) rc = encode_all(&e, text, len);
  if (rc) out->len = start; /* all or nothing */
  dyn__pretok_run_free(&e.run);
  dyn__bpe_scratch_free(&e.bpe);
  cache_free(&e.cache);
  free(e.word);
  return rc;
}

/* ---- decoding and lookups ------------------------------------------------- */

const uint8_t *dyn_tokenizer_token_bytes(const dyn_tokenizer_t *tk, uint32_t id, size_t *len) {
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
    if (!dyn_tokenizer_token_bytes(tk, ids[i], &bl)) return DYN_EINVAL;
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
    const uint8_t *b = dyn_tokenizer_token_bytes(tk, ids[i], &bl);
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

size_t dyn_tokenizer_end_ids(const dyn_tokenizer_t *tk, uint32_t *ids, size_t cap) {
  if (!tk) return 0;
  const int64_t all[] = {tk->eos_id, tk->eot_id, tk->eom_id};
  size_t n = 0;
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    bool seen = all[i] < 0;
    for (size_t k = 0; k < i && !seen; k++) seen = all[k] == all[i];
    if (seen) continue;
    if (n < cap) ids[n] = (uint32_t)all[i];
    n++;
  }
  return n;
}

int dyn_tokenizer_add_bos(const dyn_tokenizer_t *tk) { return tk && tk->add_bos && tk->bos_id >= 0; }

const char *dyn_tokenizer_chat_template(const dyn_tokenizer_t *tk) {
  return tk ? tk->chat_template : NULL;
}
