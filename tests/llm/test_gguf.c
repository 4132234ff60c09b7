/* test_gguf.c - the GGUF reader and the tokenizer built from a GGUF file,
 * on small files made here.
 *
 * A tiny byte-level BPE vocabulary (the 256 byte tokens, a few merges, a
 * CONTROL and a USER_DEFINED token) written as GGUF: its encodings, special
 * ids and template come out as written; then every way the file can be
 * wrong (each truncation, wrong types, unknown tokenizer or pre-tokenizer,
 * repeated keys and tokens, bad ids) is refused with the file named and
 * the problem said. The real model is checked against llama.cpp in
 * test_tokenizer_gguf.py. */
#include "harness.h"
#include "common/buf.h"
#include "dynamo/llm/chat.h"
#include "dynamo/llm/tokenizer.h"
#include "llm/tokenizer/gguf.h"
#include "llm/tokenizer/tok_internal.h"

/* ---- writing a GGUF file ------------------------------------------------- */

typedef struct gw {
  dyn__buf_t b;
  size_t count_at; /* where the pair count is, patched at the end */
  uint64_t n_kv;
} gw_t;

static void put(gw_t *w, const void *p, size_t n) { REQUIRE(dyn__buf_append(&w->b, p, n) == 0); }
static void u32(gw_t *w, uint32_t v) { put(w, &v, 4); }
static void u64(gw_t *w, uint64_t v) { put(w, &v, 8); }
static void str(gw_t *w, const char *s) {
  u64(w, strlen(s));
  put(w, s, strlen(s));
}

static void gw_begin(gw_t *w, uint32_t version) {
  dyn__buf_init(&w->b);
  put(w, "GGUF", 4);
  u32(w, version);
  u64(w, 0); /* tensors */
  w->count_at = w->b.len;
  u64(w, 0);
  w->n_kv = 0;
}

static void key(gw_t *w, const char *k, uint32_t type) {
  str(w, k);
  u32(w, type);
  w->n_kv++;
  memcpy(w->b.data + w->count_at, &w->n_kv, 8);
}

static void kv_str(gw_t *w, const char *k, const char *v) {
  key(w, k, DYN__GGUF_STRING);
  str(w, v);
}

static void kv_u32(gw_t *w, const char *k, uint32_t v) {
  key(w, k, DYN__GGUF_UINT32);
  u32(w, v);
}

static void kv_strs(gw_t *w, const char *k, const char *const *v, size_t n) {
  key(w, k, DYN__GGUF_ARRAY);
  u32(w, DYN__GGUF_STRING);
  u64(w, n);
  for (size_t i = 0; i < n; i++) str(w, v[i]);
}

static void kv_i32s(gw_t *w, const char *k, const int32_t *v, size_t n) {
  key(w, k, DYN__GGUF_ARRAY);
  u32(w, DYN__GGUF_INT32);
  u64(w, n);
  put(w, v, 4 * n);
}

/* The vocabulary: ids 0..255 the byte-level characters, then merged
 * tokens, then <|im_start|> (CONTROL) and <tool> (USER_DEFINED). */
#define N_TOK 263
static char tok_text[N_TOK][16];
static const char *toks[N_TOK];
static int32_t types[N_TOK];

static void make_vocab(void) {
  for (int b = 0; b < 256; b++) {
    uint32_t cp = dyn__bytelevel_cp((uint8_t)b);
    if (cp < 0x80) tok_text[b][0] = (char)cp;
    else tok_text[b][0] = (char)(0xC0 | cp >> 6), tok_text[b][1] = (char)(0x80 | (cp & 0x3F));
    toks[b] = tok_text[b];
    types[b] = 1;
  }
  const char *more[] = {"he", "Ġhe", "ll", "llo", "hello", "<|im_start|>", "<tool>"};
  for (int i = 0; i < 7; i++) toks[256 + i] = more[i], types[256 + i] = 1;
  types[261] = 3; /* CONTROL */
  types[262] = 4; /* USER_DEFINED */
}

static const char *const MERGES[] = {"h e", "Ġ he", "l l", "ll o", "he llo"};
#define TEMPLATE                                                                             \
  "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"     \
  "{{ '<|im_start|>system\\nBe brief, \\'kind\\'.<|im_end|>\\n' }}{% endif %}"              \
  "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}" \
  "{% endfor %}"

/* A good file; `skip` leaves out the key with that name, `model` and `pre`
 * replace those values. */
static void good_file(gw_t *w, const char *skip, const char *model, const char *pre) {
  gw_begin(w, 3);
  kv_str(w, "general.architecture", "llama");
  if (!skip || strcmp(skip, "model")) kv_str(w, "tokenizer.ggml.model", model ? model : "gpt2");
  if (!skip || strcmp(skip, "pre")) kv_str(w, "tokenizer.ggml.pre", pre ? pre : "smollm");
  if (!skip || strcmp(skip, "tokens")) kv_strs(w, "tokenizer.ggml.tokens", toks, N_TOK);
  kv_i32s(w, "tokenizer.ggml.token_type", types, N_TOK);
  if (!skip || strcmp(skip, "merges")) kv_strs(w, "tokenizer.ggml.merges", MERGES, 5);
  kv_u32(w, "tokenizer.ggml.bos_token_id", 261);
  kv_u32(w, "tokenizer.ggml.eos_token_id", 0);
  kv_u32(w, "tokenizer.ggml.eot_token_id", 1);
  kv_str(w, "tokenizer.chat_template", TEMPLATE);
}

static int load(gw_t *w, dyn_tokenizer_t **tk, char *err, size_t errlen) {
  return dyn__tokenizer_load_gguf_buf(w->b.data, w->b.len, "t.gguf", tk, err, errlen);
}

/* Loading must fail with DYN_EINVAL and a message naming the file and
 * containing `want`. */
static void refused(gw_t *w, const char *want) {
  dyn_tokenizer_t *tk = NULL;
  char err[512] = "";
  CHECK_STATUS(load(w, &tk, err, sizeof err), DYN_EINVAL);
  CHECK(tk == NULL);
  CHECK_MSG(strncmp(err, "t.gguf: ", 8) == 0 && strstr(err, want), "got '%s', want '%s'", err, want);
  dyn__buf_free(&w->b);
}

/* ---- the tests ------------------------------------------------------------ */

static void test_good(void) {
  gw_t w;
  good_file(&w, NULL, NULL, NULL);
  dyn_tokenizer_t *tk = NULL;
  char err[512] = "";
  REQUIRE(load(&w, &tk, err, sizeof err) == DYN_OK);
  CHECK_EQ_INT(dyn_tokenizer_vocab_size(tk), N_TOK);
  dyn_tokens_t t = {0};
  /* "hello he": hello (merged through he+llo), Ġhe; the control and the
   * user-defined token matched literally; digits one by one (smollm). */
  const char *text = "hello he<|im_start|>x<tool>12";
  CHECK_STATUS(dyn_tokenizer_encode(tk, text, strlen(text), &t), DYN_OK);
  const uint32_t want[] = {260, 257, 261, 'x', 262, '1', '2'};
  CHECK_EQ_INT(t.len, 7);
  for (size_t i = 0; i < 7 && i < t.len; i++) CHECK_EQ_INT(t.ids[i], want[i]);
  CHECK(dyn_tokenizer_is_special(tk, 261));
  CHECK(!dyn_tokenizer_is_special(tk, 262));
  char *back;
  size_t len;
  CHECK_STATUS(dyn_tokenizer_decode(tk, t.ids, t.len, DYN_DETOK_SKIP_SPECIAL, &back, &len), DYN_OK);
  CHECK_EQ_STR(back, "hello hex<tool>12");
  free(back);
  uint32_t id, ends[4];
  CHECK_STATUS(dyn_tokenizer_bos_id(tk, &id), DYN_OK);
  CHECK_EQ_INT(id, 261);
  CHECK_EQ_INT(dyn_tokenizer_end_ids(tk, ends, 4), 2); /* EOS 0, EOT 1 */
  CHECK(ends[0] == 0 && ends[1] == 1);
  CHECK(!dyn_tokenizer_add_bos(tk));
  /* The template: chatml, and its literal system turn is the default. */
  REQUIRE(dyn_tokenizer_chat_template(tk) != NULL);
  dyn_chat_template_t ct;
  CHECK_STATUS(dyn_chat_template_parse(dyn_tokenizer_chat_template(tk), &ct, err, sizeof err), DYN_OK);
  CHECK(ct.family == DYN_CHAT_CHATML);
  CHECK_EQ_STR(ct.default_system, "Be brief, 'kind'.");
  dyn_chat_msg_t m[] = {{"user", "Hi", 2}};
  char *p;
  CHECK_STATUS(dyn_chat_template_render(&ct, m, 1, true, &p, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(p, "<|im_start|>system\nBe brief, 'kind'.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                  "<|im_start|>assistant\n");
  free(p);
  dyn_chat_msg_t s[] = {{"system", "S", 1}, {"user", "Hi", 2}};
  CHECK_STATUS(dyn_chat_template_render(&ct, s, 2, false, &p, &len, err, sizeof err), DYN_OK);
  CHECK_EQ_STR(p, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n");
  free(p);
  dyn_chat_template_free(&ct);
  CHECK_STATUS(dyn_chat_template_parse("{{ messages }}", &ct, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "none of the built-in families") != NULL);
  /* A chatml template without a literal system turn has no default. */
  CHECK_STATUS(dyn_chat_template_parse("{{ '<|im_start|>system\\n' + messages[0]['content'] + "
                                       "'<|im_end|>' }}", &ct, err, sizeof err), DYN_OK);
  CHECK(ct.family == DYN_CHAT_CHATML && ct.default_system == NULL);
  dyn_tokens_free(&t);
  dyn_tokenizer_free(tk);
  dyn__buf_free(&w.b);
}

/* Every proper prefix of a good file is refused cleanly (under ASan: no
 * read past the end), and names the file. */
static void test_truncations(void) {
  gw_t w;
  good_file(&w, NULL, NULL, NULL);
  size_t bad = 0;
  for (size_t n = 0; n < w.b.len; n++) {
    dyn_tokenizer_t *tk = NULL;
    char err[512] = "";
    int rc = dyn__tokenizer_load_gguf_buf(w.b.data, n, "t.gguf", &tk, err, sizeof err);
    if (rc != DYN_EINVAL || tk || strncmp(err, "t.gguf: ", 8) != 0) bad++;
  }
  CHECK_EQ_INT(bad, 0);
  dyn__buf_free(&w.b);
}

static void test_refusals(void) {
  gw_t w;
  good_file(&w, NULL, "llama", NULL);
  refused(&w, "tokenizer.ggml.model 'llama' (SentencePiece BPE) is not supported");
  good_file(&w, NULL, "t5", NULL);
  refused(&w, "tokenizer.ggml.model 't5' (Unigram) is not supported");
  good_file(&w, NULL, "wat", NULL);
  refused(&w, "tokenizer.ggml.model 'wat' (unknown) is not supported");
  good_file(&w, NULL, NULL, "neverheard");
  refused(&w, "tokenizer.ggml.pre 'neverheard' is not a supported pre-tokenizer");
  good_file(&w, "model", NULL, NULL);
  refused(&w, "no tokenizer.ggml.model");
  good_file(&w, "tokens", NULL, NULL);
  refused(&w, "no tokenizer.ggml.tokens");
  good_file(&w, "merges", NULL, NULL);
  refused(&w, "no tokenizer.ggml.merges");

  /* A missing pre-tokenizer is llama.cpp's "default". */
  good_file(&w, "pre", NULL, NULL);
  dyn_tokenizer_t *tk = NULL;
  char err[512];
  CHECK_STATUS(load(&w, &tk, err, sizeof err), DYN_OK);
  dyn_tokenizer_free(tk);
  dyn__buf_free(&w.b);

  /* Wrong value types. */
  gw_begin(&w, 3);
  key(&w, "tokenizer.ggml.model", DYN__GGUF_UINT32);
  u32(&w, 7);
  refused(&w, "'tokenizer.ggml.model' is uint32, expected a string");
  good_file(&w, NULL, NULL, NULL);
  key(&w, "tokenizer.ggml.pad_token_id", DYN__GGUF_FLOAT32); /* unread: fine */
  u32(&w, 0);
  CHECK_STATUS(load(&w, &tk, err, sizeof err), DYN_OK);
  dyn_tokenizer_free(tk);
  dyn__buf_free(&w.b);

  /* Ids and tokens. */
  good_file(&w, NULL, NULL, NULL);
  kv_u32(&w, "tokenizer.ggml.unknown_token_id", 99999);
  refused(&w, "tokenizer.ggml.unknown_token_id is 99999, outside the 263 tokens");
  const char *dup[] = {"a", "b", "a"};
  gw_begin(&w, 3);
  kv_str(&w, "tokenizer.ggml.model", "gpt2");
  kv_strs(&w, "tokenizer.ggml.tokens", dup, 3);
  refused(&w, "tokenizer.ggml.tokens[2] ('a') repeats token 0");
  const char *bad_merge[] = {"hx"};
  good_file(&w, "merges", NULL, NULL);
  kv_strs(&w, "tokenizer.ggml.merges", bad_merge, 1);
  refused(&w, "tokenizer.ggml.merges[0] ('hx') is not two tokens separated by a space");
  good_file(&w, NULL, NULL, NULL);
  kv_i32s(&w, "tokenizer.ggml.token_type", types, 3);
  refused(&w, "key 'tokenizer.ggml.token_type' appears twice");

  /* The container itself. */
  gw_begin(&w, 1);
  refused(&w, "GGUF version 1 is not supported");
  gw_begin(&w, 0x03000000u);
  refused(&w, "big-endian GGUF files are not supported");
  dyn__buf_init(&w.b);
  put(&w, "{\"model\": 1}", 12);
  refused(&w, "not a GGUF file");
  gw_begin(&w, 3);
  key(&w, "x", DYN__GGUF_ARRAY);
  u32(&w, DYN__GGUF_ARRAY);
  u64(&w, 1);
  refused(&w, "'x' is an array of array (type 9), which is not supported");
  gw_begin(&w, 3);
  key(&w, "x", DYN__GGUF_ARRAY);
  u32(&w, DYN__GGUF_UINT64);
  u64(&w, UINT64_MAX / 2);
  refused(&w, "'x' claims 9223372036854775807 elements of uint64");
  gw_begin(&w, 3); /* a length that wraps when 8 is added (found by fuzz_gguf) */
  key(&w, "x", DYN__GGUF_STRING);
  u64(&w, UINT64_MAX);
  put(&w, "abcdef", 6);
  refused(&w, "truncated at offset 37 in the string value of 'x'");
  gw_begin(&w, 3);
  key(&w, "x", 77);
  u32(&w, 0);
  refused(&w, "'x' has value type 77, which is not a GGUF type");
  gw_begin(&w, 3);
  uint64_t many = 1u << 20;
  memcpy(w.b.data + w.count_at, &many, 8);
  refused(&w, "the header claims 1048576 metadata pairs");
}

static void test_file(void) {
  char path[] = "/tmp/dyn_gguf_XXXXXX";
  int fd = mkstemp(path);
  REQUIRE(fd >= 0);
  gw_t w;
  good_file(&w, NULL, NULL, NULL);
  REQUIRE(write(fd, w.b.data, w.b.len) == (ssize_t)w.b.len);
  close(fd);
  dyn_tokenizer_t *tk = NULL;
  char err[512] = "";
  /* dyn_tokenizer_load_file tells a GGUF file by its first bytes. */
  CHECK_STATUS(dyn_tokenizer_load_file(path, &tk, err, sizeof err), DYN_OK);
  CHECK_EQ_INT(dyn_tokenizer_vocab_size(tk), N_TOK);
  dyn_tokenizer_free(tk);
  REQUIRE(truncate(path, 300) == 0);
  CHECK_STATUS(dyn_tokenizer_load_file(path, &tk, err, sizeof err), DYN_EINVAL);
  CHECK_MSG(strncmp(err, path, strlen(path)) == 0 && strstr(err, "tokenizer.ggml.tokens"), "%s", err);
  unlink(path);
  CHECK_STATUS(dyn_tokenizer_load_file(path, &tk, err, sizeof err), DYN_ENOTFOUND);
  dyn__buf_free(&w.b);
}

int main(void) {
  h_init("gguf");
  make_vocab();
  test_good();
  test_truncations();
  test_refusals();
  test_file();
  TEST_END();
}
