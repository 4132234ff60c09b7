/* test_tokenizer.c - byte-level BPE encode/decode, the incremental
 * detokenizer, and the loader's errors.
 *
 * The fixture tests/llm/data/tok_llama3.json was made by
 * examples/llm/make_tokenizer.py (--vocab 1024, llama3 specials); its ids for
 * the strings below were checked against HF tokenizers when written (and
 * test_tokenizer_hf.py checks hundreds more on every run). In the fixture
 * the 256 byte tokens have id == byte value, which the detokenizer tests
 * use to cut characters between tokens on purpose. */
#include "harness.h"
#include "dynamo/llm/tokenizer.h"
#include "llm/tokenizer/tok_internal.h"

#define FIXTURE DYN_TEST_DATA "/tok_llama3.json"

static dyn_tokenizer_t *load_fixture(void) {
  dyn_tokenizer_t *tk = NULL;
  char err[256];
  int rc = dyn_tokenizer_load_file(FIXTURE, &tk, err, sizeof err);
  CHECK_MSG(rc == DYN_OK, "%s", err);
  return tk;
}

static void encode(const dyn_tokenizer_t *tk, const char *s, dyn_tokens_t *t) {
  t->len = 0;
  CHECK_STATUS(dyn_tokenizer_encode(tk, s, strlen(s), t), DYN_OK);
}

static bool ids_eq(const dyn_tokens_t *t, const uint32_t *want, size_t n) {
  if (t->len != n) return false;
  for (size_t i = 0; i < n; i++)
    if (t->ids[i] != want[i]) return false;
  return true;
}

static void test_lookups(dyn_tokenizer_t *tk) {
  CHECK_EQ_INT(dyn_tokenizer_vocab_size(tk), 1024);
  uint32_t id, bos, eos;
  CHECK_STATUS(dyn_tokenizer_token_id(tk, "<|eot_id|>", 10, &id), DYN_OK);
  CHECK_EQ_INT(id, 1023);
  CHECK(dyn_tokenizer_is_special(tk, id));
  CHECK(!dyn_tokenizer_is_special(tk, 'a'));
  CHECK_STATUS(dyn_tokenizer_bos_id(tk, &bos), DYN_OK);
  CHECK_STATUS(dyn_tokenizer_eos_id(tk, &eos), DYN_OK);
  CHECK_EQ_INT(bos, 1019); /* <|begin_of_text|>, the first added token */
  CHECK_EQ_INT(eos, 1020);
  size_t len;
  const char *s = dyn_tokenizer_token_str(tk, ' ', &len);
  CHECK(s && len == 2 && memcmp(s, "\xC4\xA0", 2) == 0); /* "Ġ": GPT-2's space */
  CHECK_STATUS(dyn_tokenizer_token_id(tk, "\xC4\xA0", 2, &id), DYN_OK);
  CHECK_EQ_INT(id, ' ');
  CHECK_STATUS(dyn_tokenizer_token_id(tk, "no such token", 13, &id), DYN_ENOTFOUND);
  CHECK(dyn_tokenizer_token_str(tk, 5000, &len) == NULL);
}

static void test_known_encodings(dyn_tokenizer_t *tk) {
  dyn_tokens_t t = {0};
  static const uint32_t want1[] = {72, 101, 108, 293, 282, 273, 547, 44, 274, 297, 763,
                                   288, 97, 425, 58, 32, 1023, 297, 97, 102, 483, 32,
                                   230, 151, 165, 230, 156, 172, 32, 240, 159, 142, 137};
  encode(tk, "Hello world, the clockmaker said: <|eot_id|> caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89", &t);
  CHECK(ids_eq(&t, want1, sizeof want1 / sizeof *want1));
  static const uint32_t want2[] = {32, 403, 659, 318, 288, 923, 591, 10, 10, 9, 116, 97,
                                   98, 115, 314, 325, 32, 260, 782, 391, 318, 314, 32};
  encode(tk, "  leading spaces\n\n\ttabs   and  trailing   ", &t);
  CHECK(ids_eq(&t, want2, sizeof want2 / sizeof *want2));
  encode(tk, "", &t);
  CHECK_EQ_INT(t.len, 0);
  /* encode appends */
  encode(tk, "a", &t);
  CHECK_STATUS(dyn_tokenizer_encode(tk, "a", 1, &t), DYN_OK);
  CHECK(t.len == 2 && t.ids[0] == 'a' && t.ids[1] == 'a');
  dyn_tokens_free(&t);
}

static void roundtrip(dyn_tokenizer_t *tk, const char *s, size_t n) {
  dyn_tokens_t t = {0};
  CHECK_STATUS(dyn_tokenizer_encode(tk, s, n, &t), DYN_OK);
  char *out = NULL;
  size_t len = 0;
  CHECK_STATUS(dyn_tokenizer_decode(tk, t.ids, t.len, 0, &out, &len), DYN_OK);
  CHECK_MSG(out && len == n && memcmp(out, s, n) == 0, "round trip of \"%.*s\" gave \"%s\"", (int)n,
            s, out ? out : "(null)");
  free(out);
  dyn_tokens_free(&t);
}

static void test_roundtrip(dyn_tokenizer_t *tk) {
  static const char *texts[] = {
      "The quick brown fox jumps over the lazy dog.",
      "na\xC3\xAFve caf\xC3\xA9 cr\xC3\xA8me br\xC3\xBBl\xC3\xA9" "e Stra\xC3\x9F" "e",
      "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xE4\xB8\xAD\xE6\x96\x87 \xED\x95\x9C\xEA\xB5\xAD\xEC\x96\xB4",
      "\xF0\x9F\x8E\x89\xF0\x9F\x9A\x80 \xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9", /* emoji, ZWJ */
      "   \t\t  spaces   and\ttabs\t\t", "\n", "\n\n\nlines\r\n\r\nand\n", " ",
      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
      "<|eot_id|><|eot_id|>x<|eot_id", "don't we'll I'M 1234567 3.14",
  };
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) roundtrip(tk, texts[i], strlen(texts[i]));
  roundtrip(tk, "a\0b", 3); /* NUL is a byte like any other */
}

static void test_special_tokens(dyn_tokenizer_t *tk) {
  dyn_tokens_t t = {0};
  encode(tk, "x<|eot_id|><|eot_id|>y", &t);
  CHECK(t.len == 4 && t.ids[0] == 'x' && t.ids[1] == 1023 && t.ids[2] == 1023 && t.ids[3] == 'y');
  encode(tk, "<|eot_id", &t); /* not quite the token: plain text */
  for (size_t i = 0; i < t.len; i++) CHECK(t.ids[i] < 1019);
  /* skip_special leaves them out of decode */
  encode(tk, "<|begin_of_text|>hi<|eot_id|>", &t);
  char *out;
  size_t len;
  CHECK_STATUS(dyn_tokenizer_decode(tk, t.ids, t.len, DYN_DETOK_SKIP_SPECIAL, &out, &len), DYN_OK);
  CHECK_EQ_STR(out, "hi");
  free(out);
  uint32_t bad = 99999;
  CHECK_STATUS(dyn_tokenizer_decode(tk, &bad, 1, 0, &out, &len), DYN_EINVAL);
  dyn_tokens_free(&t);
}

static void test_invalid_input(dyn_tokenizer_t *tk) {
  dyn_tokens_t t = {0};
  CHECK_STATUS(dyn_tokenizer_encode(tk, "ok", 2, &t), DYN_OK);
  CHECK_STATUS(dyn_tokenizer_encode(tk, "bad \xC3(", 6, &t), DYN_EINVAL);
  CHECK_STATUS(dyn_tokenizer_encode(tk, "\xED\xA0\x80", 3, &t), DYN_EINVAL); /* a surrogate */
  CHECK_EQ_INT(t.len, 1); /* a failed call appends nothing */
  dyn_tokens_free(&t);
}

/* Pathological pieces: one 200 KB word (BPE must not be quadratic) and
 * 1 MB of spaces (one long run for \s+(?!\S) to backtrack over). */
static void test_long_inputs(dyn_tokenizer_t *tk) {
  size_t n = 1 << 20;
  char *s = malloc(n);
  memset(s, 'a', 200000);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  roundtrip(tk, s, 200000);
  memset(s, ' ', n);
  s[n - 1] = 'x';
  roundtrip(tk, s, n);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  printf("long inputs (200 KB word, 1 MB spaces): %.1f ms\n", ms);
  CHECK(ms < 10000);
  free(s);
}

/* ---- detokenizer ---------------------------------------------------------- */

static bool valid_utf8(const char *s, size_t n) {
  return dyn__utf8_valid_prefix((const uint8_t *)s, n) == n;
}

/* Pushes ids one by one; checks every piece is whole UTF-8 and returns the
 * concatenation (pieces, then flush). */
static char *stream(dyn_tokenizer_t *tk, const uint32_t *ids, size_t n, unsigned flags) {
  dyn_detok_t *d;
  REQUIRE(dyn_detok_new(tk, flags, &d) == DYN_OK);
  char *acc = calloc(1, 4 * n * 16 + 16);
  size_t k = 0, len;
  const char *p;
  for (size_t i = 0; i < n; i++) {
    CHECK_STATUS(dyn_detok_push(d, ids[i], &p, &len), DYN_OK);
    CHECK_MSG(valid_utf8(p, len), "piece %zu is not whole UTF-8", i);
    memcpy(acc + k, p, len);
    k += len;
  }
  CHECK_STATUS(dyn_detok_flush(d, &p, &len), DYN_OK);
  CHECK(valid_utf8(p, len));
  memcpy(acc + k, p, len);
  dyn_detok_free(d);
  return acc;
}

static void test_detok_split_chars(dyn_tokenizer_t *tk) {
  dyn_detok_t *d;
  const char *p;
  size_t len;
  REQUIRE(dyn_detok_new(tk, 0, &d) == DYN_OK);
  /* U+1F389 as four one-byte tokens: nothing until the last */
  static const uint32_t party[] = {0xF0, 0x9F, 0x8E, 0x89};
  for (int i = 0; i < 3; i++) {
    CHECK_STATUS(dyn_detok_push(d, party[i], &p, &len), DYN_OK);
    CHECK_EQ_INT(len, 0);
  }
  CHECK_STATUS(dyn_detok_push(d, party[3], &p, &len), DYN_OK);
  CHECK(len == 4 && memcmp(p, "\xF0\x9F\x8E\x89", 4) == 0);
  /* "é" (C3 A9): the lead byte waits; then a lone lead byte followed by an
   * ASCII letter is invalid at once: U+FFFD, then the letter */
  CHECK_STATUS(dyn_detok_push(d, 'x', &p, &len), DYN_OK);
  CHECK(len == 1 && p[0] == 'x');
  CHECK_STATUS(dyn_detok_push(d, 0xC3, &p, &len), DYN_OK);
  CHECK_EQ_INT(len, 0);
  CHECK_STATUS(dyn_detok_push(d, 'a', &p, &len), DYN_OK);
  CHECK(len == 4 && memcmp(p, "\xEF\xBF\xBD" "a", 4) == 0);
  CHECK_STATUS(dyn_detok_push(d, 0xFF, &p, &len), DYN_OK); /* never valid */
  CHECK(len == 3 && memcmp(p, "\xEF\xBF\xBD", 3) == 0);
  /* an incomplete character at the end: one U+FFFD on flush */
  CHECK_STATUS(dyn_detok_push(d, 0xE6, &p, &len), DYN_OK);
  CHECK_STATUS(dyn_detok_push(d, 0x97, &p, &len), DYN_OK);
  CHECK_EQ_INT(len, 0);
  CHECK_STATUS(dyn_detok_flush(d, &p, &len), DYN_OK);
  CHECK(len == 3 && memcmp(p, "\xEF\xBF\xBD", 3) == 0);
  CHECK_STATUS(dyn_detok_flush(d, &p, &len), DYN_OK);
  CHECK_EQ_INT(len, 0);
  CHECK_STATUS(dyn_detok_push(d, 123456, &p, &len), DYN_EINVAL);
  dyn_detok_free(d);

  /* a special token between the bytes of a character: kept, it breaks the
   * character (U+FFFD); skipped, the character survives (as HF's decode) */
  static const uint32_t cut[] = {0xC3, 1023, 0xA9};
  char *a = stream(tk, cut, 3, 0), *b = stream(tk, cut, 3, DYN_DETOK_SKIP_SPECIAL);
  CHECK_EQ_STR(a, "\xEF\xBF\xBD<|eot_id|>\xEF\xBF\xBD");
  CHECK_EQ_STR(b, "\xC3\xA9");
  free(a);
  free(b);
}

/* Random id streams heavy in high bytes (cut characters, invalid runs):
 * the streamed text always equals the one-shot decode. */
static void test_detok_equals_decode(dyn_tokenizer_t *tk) {
  uint32_t ids[64];
  unsigned seed = 42;
  int mismatches = 0;
  for (int round = 0; round < 2000; round++) {
    size_t n = (size_t)(rand_r(&seed) % 64);
    for (size_t i = 0; i < n; i++) {
      int r = rand_r(&seed) % 10;
      ids[i] = r < 6 ? 0x80 + (uint32_t)(rand_r(&seed) % 0x80) /* high bytes */
               : r < 9 ? (uint32_t)(rand_r(&seed) % 1024) : 1023;
    }
    for (unsigned flags = 0; flags < 2; flags++) {
      char *whole;
      size_t len;
      CHECK_STATUS(dyn_tokenizer_decode(tk, ids, n, flags, &whole, &len), DYN_OK);
      char *streamed = stream(tk, ids, n, flags);
      if (strcmp(whole, streamed) != 0 || !valid_utf8(whole, len)) mismatches++;
      free(whole);
      free(streamed);
    }
  }
  CHECK_EQ_INT(mismatches, 0);
  /* and a real sentence, token by token */
  dyn_tokens_t t = {0};
  const char *s = "Un caf\xC3\xA9 \xF0\x9F\x8E\x89 \xE6\x97\xA5\xE6\x9C\xAC, s'il vous pla\xC3\xAEt.";
  encode(tk, s, &t);
  char *streamed = stream(tk, t.ids, t.len, 0);
  CHECK_EQ_STR(streamed, s);
  free(streamed);
  dyn_tokens_free(&t);
}

/* ---- small in-memory tokenizers ------------------------------------------- */

static char *mini(const char *vocab, const char *merges, const char *extra_model, const char *pre) {
  char *s;
  int n = asprintf(&s,
                   "{\"added_tokens\":[],\"normalizer\":null,\"pre_tokenizer\":%s,"
                   "\"decoder\":{\"type\":\"ByteLevel\"},"
                   "\"model\":{\"type\":\"BPE\",%s\"vocab\":%s,\"merges\":%s}}",
                   pre ? pre : "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}",
                   extra_model ? extra_model : "", vocab, merges);
  REQUIRE(n > 0);
  return s;
}

static void encode_mini(const char *json, const char *text, const uint32_t *want, size_t n) {
  dyn_tokenizer_t *tk = NULL;
  char err[256];
  int rc = dyn_tokenizer_load_buf(json, strlen(json), "mini", &tk, err, sizeof err);
  CHECK_MSG(rc == DYN_OK, "%s", err);
  if (rc) return;
  dyn_tokens_t t = {0};
  encode(tk, text, &t);
  CHECK_MSG(ids_eq(&t, want, n), "encoding \"%s\" gave %zu ids", text, t.len);
  dyn_tokens_free(&t);
  dyn_tokenizer_free(tk);
}

static void test_merge_rules(void) {
  const char *v = "{\"a\":0,\"b\":1,\"c\":2,\"ab\":3,\"abc\":4,\"\\u0120\":5,\"bc\":6}";
  /* both merge spellings, same result */
  char *s1 = mini(v, "[\"a b\",\"ab c\"]", NULL, NULL);
  char *s2 = mini(v, "[[\"a\",\"b\"],[\"ab\",\"c\"]]", NULL, NULL);
  static const uint32_t abc2[] = {4, 5, 4};
  encode_mini(s1, "abc abc", abc2, 3);
  encode_mini(s2, "abc abc", abc2, 3);
  /* the lower rank wins: b+c (rank 0) before a+b (rank 1) leaves a|bc */
  char *s3 = mini(v, "[\"b c\",\"a b\",\"ab c\"]", NULL, NULL);
  static const uint32_t a_bc[] = {0, 6};
  encode_mini(s3, "abc", a_bc, 2);
  /* ignore_merges: a piece in the vocabulary is one token, merges or not */
  char *s4 = mini(v, "[]", "\"ignore_merges\":true,", NULL);
  char *s5 = mini(v, "[]", "\"ignore_merges\":false,", NULL);
  static const uint32_t whole[] = {4}, parts[] = {0, 1, 2};
  encode_mini(s4, "abc", whole, 1);
  encode_mini(s5, "abc", parts, 3);
  /* a Split(Regex) + ByteLevel sequence: "ab" "c" kept apart by the split */
  char *s6 = mini(v, "[\"a b\",\"ab c\"]", NULL,
                  "{\"type\":\"Sequence\",\"pretokenizers\":["
                  "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"ab|c\"},\"behavior\":\"Isolated\"},"
                  "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"use_regex\":false}]}");
  static const uint32_t ab_c[] = {3, 2};
  encode_mini(s6, "abc", ab_c, 2);
  free(s1), free(s2), free(s3), free(s4), free(s5), free(s6);
}

/* ---- loader errors ------------------------------------------------------- */

static void expect_error(const char *json, int want_rc, const char *want_msg) {
  dyn_tokenizer_t *tk = (dyn_tokenizer_t *)1;
  char err[256] = "";
  int rc = dyn_tokenizer_load_buf(json, strlen(json), "tok.json", &tk, err, sizeof err);
  CHECK_STATUS(rc, want_rc);
  CHECK(tk == NULL);
  CHECK_MSG(strstr(err, want_msg) != NULL && strncmp(err, "tok.json: ", 10) == 0,
            "error \"%s\" should name the file and say \"%s\"", err, want_msg);
}

static void test_errors(void) {
  const char *v = "{\"a\":0,\"b\":1,\"ab\":2}";
  expect_error("{\"model\": ", DYN_EINVAL, "not JSON");
  expect_error("[1,2]", DYN_EINVAL, "not a JSON object");
  expect_error("{}", DYN_EINVAL, "'model' is missing");
  expect_error("{\"model\":{\"type\":\"Unigram\",\"vocab\":[]}}", DYN_EINVAL,
               "model.type 'Unigram' is not supported (byte-level BPE only)");
  expect_error("{\"model\":{\"type\":\"BPE\",\"merges\":[]}}", DYN_EINVAL, "model.vocab is missing");
  expect_error("{\"model\":{\"type\":\"BPE\",\"vocab\":{}}}", DYN_EINVAL, "model.merges is missing");
  char *s;
  s = mini(v, "[\"a c\"]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "model.merges[0]: 'c' is not in the vocabulary");
  free(s);
  s = mini(v, "[\"a b\", \"abc\"]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "model.merges[1] ('abc') is not two tokens");
  free(s);
  s = mini(v, "[\"a b\", \"b a\"]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "merged token 'ba' is not in the vocabulary");
  free(s);
  s = mini(v, "[[\"a\"]]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "model.merges[0] is neither");
  free(s);
  s = mini("{\"a\":0,\"b\":-1}", "[]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "model.vocab['b'] is not an id");
  free(s);
  s = mini("{\"a\":0,\"b\":0}", "[]", NULL, NULL);
  expect_error(s, DYN_EINVAL, "id 0 is used twice");
  free(s);
  s = mini(v, "[]", "\"byte_fallback\":true,", NULL);
  expect_error(s, DYN_EINVAL, "byte_fallback is not supported");
  free(s);
  s = mini(v, "[]", NULL, "{\"type\":\"Metaspace\"}");
  expect_error(s, DYN_EINVAL, "pre_tokenizer.type 'Metaspace' is not supported");
  free(s);
  s = mini(v, "[]", NULL, "null");
  expect_error(s, DYN_EINVAL, "no ByteLevel step");
  free(s);
  s = mini(v, "[]", NULL, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(\"},\"behavior\":\"Isolated\"}");
  expect_error(s, DYN_EINVAL, "split pattern does not compile");
  free(s);
  s = mini(v, "[]", NULL, "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"a\"},\"behavior\":\"Removed\"}");
  expect_error(s, DYN_EINVAL, "Split behavior 'Removed' is not supported");
  free(s);
  const char *wp = "{\"decoder\":{\"type\":\"WordPiece\"},\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                   "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
  expect_error(wp, DYN_EINVAL, "decoder.type 'WordPiece' is not supported");
  const char *nfkc = "{\"normalizer\":{\"type\":\"NFKC\"},\"decoder\":{\"type\":\"ByteLevel\"},"
                     "\"pre_tokenizer\":{\"type\":\"ByteLevel\"},"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}";
  expect_error(nfkc, DYN_EINVAL, "normalizer.type 'NFKC' is not supported");

  dyn_tokenizer_t *tk = NULL;
  char err[256];
  CHECK_STATUS(dyn_tokenizer_load_file("/nonexistent/tokenizer.json", &tk, err, sizeof err),
               DYN_ENOTFOUND);
  CHECK(strstr(err, "/nonexistent/tokenizer.json: cannot open") == err);
  CHECK_STATUS(dyn_tokenizer_load_buf("{}", 2, NULL, &tk, NULL, 0), DYN_EINVAL); /* err optional */
}

/* ---- speed ----------------------------------------------------------------- */

/* Encodes text `iters` times; prints and returns microseconds per call. */
static double time_encode(dyn_tokenizer_t *tk, const char *text, size_t n, const char *label) {
  dyn_tokens_t t = {0};
  CHECK_STATUS(dyn_tokenizer_encode(tk, text, n, &t), DYN_OK);
  size_t tokens = t.len;
  int iters = 200;
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int i = 0; i < iters; i++) {
    t.len = 0;
    dyn_tokenizer_encode(tk, text, n, &t);
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double us = ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / iters;
  printf("encode %s: %zu bytes -> %zu tokens in %.1f us (%.0f ns/token)\n", label, n, tokens, us,
         us * 1e3 / (double)tokens);
  CHECK_EQ_INT(t.len, tokens);
  dyn_tokens_free(&t);
  return us;
}

/* Two ~4,000-token prompts (a 1,024-token vocabulary makes more, shorter
 * tokens per byte than a real model's): random sentences over a small word
 * list (repetitive, like a long system prompt), and the first 4,000 tokens'
 * worth of the README (varied prose, shell, Python, YAML). The
 * bound is loose on purpose: the printed numbers are the measurement; the
 * check catches a quadratic slip without failing a busy or sanitized build. */
static void test_speed(dyn_tokenizer_t *tk) {
  static const char *words[] = {"the", "request", "worker", "router", "prefix", "cache",
                                "block", "token", "tokens", "stream", "latency", "is",
                                "a", "of", "and", "to", "in", "measured", "serving",
                                "model", "engine", "prompt", "2024", "42", "(p99)", "it's"};
  size_t cap = 64 * 1024, n = 0;
  char *text = malloc(cap);
  unsigned seed = 1;
  dyn_tokens_t t = {0};
  while (t.len < 4000) {
    for (int i = 0; i < 50; i++) {
      const char *w = words[rand_r(&seed) % (sizeof words / sizeof *words)];
      n += (size_t)snprintf(text + n, cap - n, "%s%s", rand_r(&seed) % 12 ? " " : ".\n", w);
    }
    t.len = 0;
    dyn_tokenizer_encode(tk, text, n, &t);
  }
  CHECK(time_encode(tk, text, n, "repetitive") < 50000);
  FILE *f = fopen(DYN_TEST_DATA "/../../../README.md", "rb");
  REQUIRE(f);
  n = fread(text, 1, cap, f);
  fclose(f);
  t.len = 0;
  dyn_tokenizer_encode(tk, text, n, &t);
  /* cut at about 4,000 tokens: the bytes those tokens decode to */
  char *cut;
  size_t cut_len;
  REQUIRE(dyn_tokenizer_decode(tk, t.ids, t.len < 4000 ? t.len : 4000, 0, &cut, &cut_len) == DYN_OK);
  CHECK(time_encode(tk, cut, cut_len, "README.md") < 50000);
  free(cut);
  dyn_tokens_free(&t);
  free(text);
}

int main(void) {
  h_init("tokenizer");
  dyn_tokenizer_t *tk = load_fixture();
  REQUIRE(tk);
  test_lookups(tk);
  test_known_encodings(tk);
  test_roundtrip(tk);
  test_special_tokens(tk);
  test_invalid_input(tk);
  test_long_inputs(tk);
  test_detok_split_chars(tk);
  test_detok_equals_decode(tk);
  test_merge_rules();
  test_errors();
  test_speed(tk);
  dyn_tokenizer_free(tk);
  TEST_END();
}
