/* tok_gguf.c - builds a tokenizer from a GGUF model file's own metadata.
 *
 * A GGUF file carries its tokenizer as llama.cpp reads it:
 * tokenizer.ggml.model (the algorithm), .pre (the pre-tokenizer, by name),
 * .tokens, .token_type, .merges, the special token ids and
 * tokenizer.chat_template. This reads them into the same tables a
 * tokenizer.json gives (tok_build.c), so that a config naming a .gguf
 * needs no tokenizer.json and our ids are llama.cpp's (tests/llm/
 * test_tokenizer_gguf.py compares them with llama_tokenize).
 *
 * What follows llama.cpp (src/llama-vocab.cpp at the commit in
 * docs/llm.md) rather than Hugging Face, where the two differ:
 *  - the pre-tokenizer is a name, mapped here to llama.cpp's split
 *    patterns for it (PRE below); an unknown name is refused, as llama.cpp
 *    refuses it, with the name in the error;
 *  - tokens typed CONTROL, USER_DEFINED or UNKNOWN are matched literally
 *    in the text (as llama_tokenize with parse_special); CONTROL and
 *    UNKNOWN ones are special (left out of decoded text on request), and
 *    USER_DEFINED ones decode to their own text, not through the
 *    byte-level map;
 *  - a merge pair listed twice keeps its first rank;
 *  - an empty token string becomes "[EMPTY_<id>]".
 * Only tokenizer.ggml.model "gpt2" (byte-level BPE) is run; SentencePiece
 * ("llama"), WordPiece ("bert"), Unigram ("t5") and the others are
 * refused with the type named.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dynamo/status.h"
#include "llm/tokenizer/gguf.h"
#include "llm/tokenizer/tok_internal.h"

/* llama.cpp's token types (tokenizer.ggml.token_type). */
enum { TT_UNDEFINED, TT_NORMAL, TT_UNKNOWN, TT_CONTROL, TT_USER_DEFINED, TT_UNUSED, TT_BYTE };

/* ---- pre-tokenizers by name ---------------------------------------------- */

/* llama.cpp's split patterns, verbatim: the GPT-2 one without its final
 * "|\s+" (a lone white space it leaves unmatched becomes a piece of its
 * own anyway), and Llama 3's with (?i:...) spelled out as llama.cpp does,
 * which also keeps PCRE2 from folding 's' to U+017F. */
#define PAT_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define PAT_CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
#define PAT_LLAMA3                                                                                 \
  PAT_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
                   "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define PAT_QWEN2                                                                              \
  PAT_CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|" \
                   "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre {
  const char *names; /* the names llama.cpp gives this pre-tokenizer, space-separated */
  const char *steps[DYN__PRETOK_MAX_STEPS];
  bool ignore_merges, add_bos; /* add_bos: llama.cpp's default when the file says nothing */
} pre_t;

static const pre_t PRE[] = {
    {"default",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", PAT_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}, false, false},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2", {PAT_LLAMA3}, true, true},
    {"dbrx smaug-bpe", {PAT_LLAMA3}, false, false},
    {"glm4 chatglm-bpe", {PAT_LLAMA3}, false, false},
    {"gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum jina-v1-en "
     "jina-v2-code roberta-bpe exaone4 mpt olmo jais trillion",
     {PAT_GPT2}, false, false},
    {"smollm starcoder refact command-r codeshell exaone minerva-7b", {"\\p{N}", PAT_GPT2}, false,
     false},
    {"qwen2 deepseek-r1-qwen stablelm2 megrez hunyuan", {PAT_QWEN2}, false, false},
};

static bool has_name(const char *names, const char *s, size_t n) {
  for (const char *p = names; *p;) {
    size_t k = strcspn(p, " ");
    if (k == n && memcmp(p, s, n) == 0) return true;
    p += k + (p[k] == ' ');
  }
  return false;
}

static int load_pre(dyn__tokload_t *l, const dyn__gguf_t *g) {
  const char *s = "default";
  size_t n = strlen(s);
  /* No name: llama.cpp uses "default" (and warns); so do we. */
  int rc = dyn__gguf_get_str(g, "tokenizer.ggml.pre", &s, &n, l->err, l->errlen);
  if (rc && rc != DYN_ENOTFOUND) return rc;
  if (rc == DYN_ENOTFOUND) s = "default", n = strlen(s);
  const pre_t *p = NULL;
  for (size_t i = 0; i < sizeof PRE / sizeof *PRE && !p; i++)
    if (has_name(PRE[i].names, s, n)) p = &PRE[i];
  if (!p)
    return dyn__tok_fail(l, DYN_EINVAL,
                         "tokenizer.ggml.pre '%.*s' is not a supported pre-tokenizer (supported: "
                         "default, llama3/llama-bpe, gpt-2, smollm, qwen2 and their aliases)",
                         (int)(n > 64 ? 64 : n), s);
  for (int i = 0; i < DYN__PRETOK_MAX_STEPS && p->steps[i]; i++) {
    char msg[200];
    if ((rc = dyn__pretok_add(&l->tk->pre, p->steps[i], strlen(p->steps[i]), false, msg, sizeof msg)))
      return dyn__tok_fail(l, rc, "pre-tokenizer '%.*s': %s", (int)n, s, msg);
  }
  l->tk->ignore_merges = p->ignore_merges;
  l->tk->add_bos = p->add_bos;
  return DYN_OK;
}

/* ---- model type, tokens, merges ------------------------------------------ */

static int check_model(dyn__tokload_t *l, const dyn__gguf_t *g) {
  static const struct {
    const char *name, *what;
  } OTHER[] = {{"llama", "SentencePiece BPE"}, {"bert", "WordPiece"}, {"t5", "Unigram"},
               {"rwkv", "RWKV"},            {"plamo2", "PLaMo-2"},   {"none", "no vocabulary"},
               {"no_vocab", "no vocabulary"}};
  const char *s;
  size_t n;
  int rc = dyn__gguf_get_str(g, "tokenizer.ggml.model", &s, &n, l->err, l->errlen);
  if (rc == DYN_ENOTFOUND)
    return dyn__tok_fail(l, DYN_EINVAL, "no tokenizer.ggml.model: the file carries no tokenizer");
  if (rc) return rc;
  if (n == 4 && memcmp(s, "gpt2", 4) == 0) return DYN_OK;
  const char *what = "unknown";
  for (size_t i = 0; i < sizeof OTHER / sizeof *OTHER; i++)
    if (strlen(OTHER[i].name) == n && memcmp(OTHER[i].name, s, n) == 0) what = OTHER[i].what;
  return dyn__tok_fail(l, DYN_EINVAL,
                       "tokenizer.ggml.model '%.*s' (%s) is not supported (byte-level BPE, "
                       "'gpt2', only)",
                       (int)(n > 64 ? 64 : n), s, what);
}

static uint8_t flags_of(int32_t type) {
  switch (type) {
  case TT_CONTROL:
  case TT_UNKNOWN: return DYN__TOK_ADDED | DYN__TOK_SPECIAL;
  case TT_USER_DEFINED: return DYN__TOK_ADDED;
  default: return 0;
  }
}

static int load_tokens(dyn__tokload_t *l, const dyn__gguf_t *g) {
  const dyn__gguf_kv_t *toks, *types = NULL;
  int rc = dyn__gguf_get_arr(g, "tokenizer.ggml.tokens", DYN__GGUF_STRING, &toks, l->err, l->errlen);
  if (rc == DYN_ENOTFOUND) return dyn__tok_fail(l, DYN_EINVAL, "no tokenizer.ggml.tokens");
  if (rc) return rc;
  if (toks->n == 0 || toks->n > DYN__TOK_MAX_ID)
    return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.tokens has %llu tokens (1 to %u are read)",
                         (unsigned long long)toks->n, DYN__TOK_MAX_ID);
  rc = dyn__gguf_get_arr(g, "tokenizer.ggml.token_type", DYN__GGUF_INT32, &types, l->err, l->errlen);
  if (rc && rc != DYN_ENOTFOUND) return rc;
  if (!rc && types->n != toks->n)
    return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.token_type has %llu entries for %llu tokens",
                         (unsigned long long)types->n, (unsigned long long)toks->n);
  uint32_t n = (uint32_t)toks->n;
  if ((rc = dyn__tok_alloc_ids(l, n, n))) return rc;
  const uint8_t *p = toks->val;
  for (uint32_t id = 0; id < n; id++) {
    const char *s;
    size_t len;
    char empty[32];
    dyn__gguf_next_str(&p, &s, &len);
    if (len == 0) {
      len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%u]", id);
      s = empty;
    }
    uint32_t prev;
    if (dyn__tok_find(l->tk, s, len, &prev) == DYN_OK)
      return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.tokens[%u] ('%.*s') repeats token %u", id,
                           (int)(len > 64 ? 64 : len), s, prev);
    uint8_t flags = types ? flags_of(dyn__gguf_i32_at(types, id)) : 0;
    bool raw = flags == DYN__TOK_ADDED; /* user-defined: its text as it is */
    if ((rc = dyn__tok_set(l, id, s, len, flags, raw))) return rc;
  }
  return dyn__tok_index_added(l);
}

static int load_merges(dyn__tokload_t *l, const dyn__gguf_t *g) {
  dyn_tokenizer_t *tk = l->tk;
  const dyn__gguf_kv_t *m;
  int rc = dyn__gguf_get_arr(g, "tokenizer.ggml.merges", DYN__GGUF_STRING, &m, l->err, l->errlen);
  if (rc == DYN_ENOTFOUND) return dyn__tok_fail(l, DYN_EINVAL, "no tokenizer.ggml.merges (BPE needs them)");
  if (rc) return rc;
  if (m->n >= UINT32_MAX) return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.merges: too many merges");
  if (dyn__merges_init(&tk->merges, (size_t)m->n)) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
  const uint8_t *p = m->val;
  char small[512];
  for (uint32_t i = 0; i < m->n; i++) {
    const char *s;
    size_t n;
    dyn__gguf_next_str(&p, &s, &n);
    /* "left right", split at the first space after the first byte, as
     * llama.cpp does. */
    const char *sp = n > 1 ? memchr(s + 1, ' ', n - 1) : NULL;
    if (!sp || sp + 1 == s + n)
      return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.merges[%u] ('%.*s') is not two tokens "
                           "separated by a space", i, (int)(n > 64 ? 64 : n), s);
    size_t na = (size_t)(sp - s), nb = n - na - 1;
    uint32_t ia, ib, ic;
    if (dyn__tok_find(tk, s, na, &ia) || dyn__tok_find(tk, sp + 1, nb, &ib))
      return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.merges[%u]: '%.*s' is not two tokens of "
                           "the vocabulary", i, (int)(n > 64 ? 64 : n), s);
    char *ab = na + nb <= sizeof small ? small : malloc(na + nb);
    if (!ab) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
    memcpy(ab, s, na);
    memcpy(ab + na, sp + 1, nb);
    rc = dyn__tok_find(tk, ab, na + nb, &ic);
    if (ab != small) free(ab);
    if (rc)
      return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.merges[%u]: the merged token of '%.*s' "
                           "is not in the vocabulary", i, (int)(n > 64 ? 64 : n), s);
    if (dyn__merges_get(&tk->merges, ia, ib)) continue; /* listed before: first rank wins */
    if (dyn__merges_add(&tk->merges, ia, ib, i, ic)) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
  }
  return DYN_OK;
}

/* ---- special ids, template ------------------------------------------------ */

static int load_specials(dyn__tokload_t *l, const dyn__gguf_t *g) {
  dyn_tokenizer_t *tk = l->tk;
  const struct {
    const char *key;
    int64_t *id;
  } ids[] = {{"tokenizer.ggml.bos_token_id", &tk->bos_id},
             {"tokenizer.ggml.eos_token_id", &tk->eos_id},
             {"tokenizer.ggml.eot_token_id", &tk->eot_id},
             {"tokenizer.ggml.eom_token_id", &tk->eom_id},
             {"tokenizer.ggml.unknown_token_id", &tk->unk_id}};
  for (size_t i = 0; i < sizeof ids / sizeof *ids; i++) {
    uint64_t v;
    int rc = dyn__gguf_get_uint(g, ids[i].key, UINT32_MAX, &v, l->err, l->errlen);
    if (rc == DYN_ENOTFOUND) continue;
    if (rc) return rc;
    if (v >= tk->n_ids)
      return dyn__tok_fail(l, DYN_EINVAL, "%s is %llu, outside the %u tokens", ids[i].key,
                           (unsigned long long)v, tk->n_ids);
    *ids[i].id = (int64_t)v;
  }
  int rc = dyn__gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &tk->add_bos, l->err, l->errlen);
  if (rc && rc != DYN_ENOTFOUND) return rc;
  if (tk->add_bos && tk->bos_id < 0 && !rc)
    return dyn__tok_fail(l, DYN_EINVAL, "tokenizer.ggml.add_bos_token is true but there is no BOS token");
  const char *t;
  size_t n;
  rc = dyn__gguf_get_str(g, "tokenizer.chat_template", &t, &n, l->err, l->errlen);
  if (rc == DYN_ENOTFOUND) return DYN_OK;
  if (rc) return rc;
  if (!(tk->chat_template = malloc(n + 1))) return dyn__tok_fail(l, DYN_ENOMEM, "out of memory");
  memcpy(tk->chat_template, t, n);
  tk->chat_template[n] = '\0';
  return DYN_OK;
}

int dyn__tokenizer_load_gguf_buf(const uint8_t *data, size_t len, const char *name,
                                 dyn_tokenizer_t **out, char *err, size_t errlen) {
  if (err && errlen) err[0] = '\0';
  dyn__tokload_t l = {NULL, name ? name : "model.gguf", err, errlen};
  if (!out) return dyn__tok_fail(&l, DYN_EINVAL, "no output");
  *out = NULL;
  dyn__gguf_t g;
  int rc = dyn__gguf_parse(&g, data, len, l.name, err, errlen);
  if (rc) return rc == DYN_ENOMEM ? dyn__tok_fail(&l, rc, "out of memory") : rc;
  if (!(rc = check_model(&l, &g)) && !(rc = dyn__tok_begin(&l)) && !(rc = load_tokens(&l, &g)) &&
      !(rc = load_merges(&l, &g)) && !(rc = load_pre(&l, &g)) && !(rc = load_specials(&l, &g)))
    dyn__tok_finish(l.tk);
  dyn__gguf_free(&g);
  if (rc) {
    dyn_tokenizer_free(l.tk);
    return rc;
  }
  *out = l.tk;
  return DYN_OK;
}

/* The file is mapped, not read: a model is gigabytes of tensors after a
 * few megabytes of metadata, and only the pages the parse touches load. */
int dyn__tokenizer_load_gguf_file(const char *path, dyn_tokenizer_t **out, char *err, size_t errlen) {
  dyn__tokload_t l = {NULL, path, err, errlen};
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return dyn__tok_fail(&l, errno == ENOENT ? DYN_ENOTFOUND : DYN_ESYS, "cannot open: %s", strerror(errno));
  struct stat st;
  int rc = fstat(fd, &st) != 0 ? dyn__tok_fail(&l, DYN_ESYS, "cannot stat: %s", strerror(errno))
           : st.st_size == 0   ? dyn__tok_fail(&l, DYN_EINVAL, "not a GGUF file (it is empty)")
                               : DYN_OK;
  if (rc) {
    close(fd);
    return rc;
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return dyn__tok_fail(&l, DYN_ESYS, "cannot map: %s", strerror(errno));
  rc = dyn__tokenizer_load_gguf_buf(map, (size_t)st.st_size, path, out, err, errlen);
  munmap(map, (size_t)st.st_size);
  return rc;
}
