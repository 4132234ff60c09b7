/* test_json_escape.c - the JSON string escaper (src/common/json_escape.h):
 * exact output for quotes, controls and UTF-8 (valid passes through,
 * invalid becomes \ufffd, one per maximal ill-formed subsequence), and,
 * over random input, that the output always parses (jansson checks UTF-8)
 * and that valid UTF-8 comes back byte for byte. */
#include "harness.h"
#include "common/json_escape.h"

#include <jansson.h>

/* Escapes s[0..n) into a fresh buffer; the caller frees it. */
static char *escape(const char *s, size_t n) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  if (dyn__json_escape(&b, s, n) || dyn__buf_append(&b, "", 1)) {
    dyn__buf_free(&b);
    return NULL;
  }
  return (char *)b.data;
}

#define EXPECT(in, out)                                                                  \
  do {                                                                                   \
    char *got_ = escape(in, sizeof in - 1);                                              \
    CHECK_MSG(got_ && !strcmp(got_, out), "escaped %s, expected %s", got_ ? got_ : "(ENOMEM)", \
              out);                                                                      \
    free(got_);                                                                          \
  } while (0)

static void test_exact(void) {
  EXPECT("", "\"\"");
  EXPECT("plain text", "\"plain text\"");
  EXPECT("a\"b\\c", "\"a\\\"b\\\\c\"");
  EXPECT("\n\r\t\x01\x1f\x7f", "\"\\n\\r\\t\\u0001\\u001f\x7f\"");
  EXPECT("x\0y", "\"x\\u0000y\"");
  /* Valid UTF-8 stays as it is: 2, 3 and 4 bytes, and the extremes. */
  EXPECT("caf\xc3\xa9", "\"caf\xc3\xa9\"");
  EXPECT("\xe2\x82\xac \xf0\x9f\x98\x80", "\"\xe2\x82\xac \xf0\x9f\x98\x80\"");
  EXPECT("\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf",
         "\"\xc2\x80\xdf\xbf\xe0\xa0\x80\xef\xbf\xbf\xf0\x90\x80\x80\xf4\x8f\xbf\xbf\"");
  /* Invalid UTF-8: a stray byte, a truncated character (one replacement
   * for the whole prefix, at the end or before more text), an overlong,
   * a surrogate, above U+10FFFF, bytes that never occur. */
  EXPECT("a\xff" "b", "\"a\\ufffdb\"");
  EXPECT("\x80", "\"\\ufffd\"");
  EXPECT("\xe2\x82", "\"\\ufffd\"");
  EXPECT("\xe2\x82x", "\"\\ufffdx\"");
  EXPECT("\xf0\x9f\x98" "\xc3\xa9", "\"\\ufffd\xc3\xa9\"");
  EXPECT("\xc0\xaf", "\"\\ufffd\\ufffd\"");
  EXPECT("\xe0\x80\x80", "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");
  EXPECT("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
  EXPECT("\xc1\xbf\xf5\xfe", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");
}

/* It appends: what the buffer held stays. */
static void test_appends(void) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  CHECK_STATUS(dyn__buf_append(&b, "[", 1), DYN_OK);
  CHECK_STATUS(dyn__json_escape(&b, "\xc3\xa9", 2), DYN_OK);
  CHECK_STATUS(dyn__buf_append(&b, ",", 1), DYN_OK);
  CHECK_STATUS(dyn__json_escape(&b, "\"", 1), DYN_OK);
  CHECK_STATUS(dyn__buf_append(&b, "]", 1), DYN_OK);
  const char want[] = "[\"\xc3\xa9\",\"\\\"\"]";
  CHECK(b.len == sizeof want - 1 && !memcmp(b.data, want, sizeof want - 1));
  dyn__buf_free(&b);
}

static uint64_t rng = 0x2545f4914f6cdd1dull;
static uint32_t rnd(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}

/* Appends code point cp as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp) {
  unsigned char *u = (unsigned char *)o;
  if (cp < 0x80) return u[0] = (unsigned char)cp, 1;
  if (cp < 0x800) return u[0] = 0xc0 | cp >> 6, u[1] = 0x80 | (cp & 63), 2;
  if (cp < 0x10000)
    return u[0] = 0xe0 | cp >> 12, u[1] = 0x80 | (cp >> 6 & 63), u[2] = 0x80 | (cp & 63), 3;
  u[0] = 0xf0 | cp >> 18, u[1] = 0x80 | (cp >> 12 & 63), u[2] = 0x80 | (cp >> 6 & 63);
  u[3] = 0x80 | (cp & 63);
  return 4;
}

/* Random valid UTF-8 (every plane, controls, quotes) round-trips exactly;
 * random bytes always give valid JSON. */
static void test_random(void) {
  int valid_bad = 0, bytes_bad = 0;
  char in[256];
  for (int iter = 0; iter < 20000; iter++) {
    size_t n = 0;
    while (n < sizeof in - 4) {
      uint32_t r = rnd(), cp;
      switch (r % 4) {
      case 0: cp = r >> 8 & 0x7f; break;
      case 1: cp = 0x80 + (r >> 8) % 0x780; break;
      case 2: cp = 0x800 + (r >> 8) % 0xf800; break;
      default: cp = 0x10000 + (r >> 8) % 0x100000;
      }
      if (cp >= 0xd800 && cp < 0xe000) continue; /* surrogates are no characters */
      n += put_utf8(in + n, cp);
      if (rnd() % 16 == 0) break;
    }
    char *out = escape(in, n);
    json_t *v = out ? json_loads(out, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
    if (!v || json_string_length(v) != n || memcmp(json_string_value(v), in, n)) valid_bad++;
    json_decref(v);
    free(out);
    /* Now any bytes, high ones often. */
    n = rnd() % 64;
    for (size_t i = 0; i < n; i++) in[i] = (char)(rnd() % 3 ? 0x80 + rnd() % 0x80 : rnd() % 0x80);
    out = escape(in, n);
    v = out ? json_loads(out, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL) : NULL;
    if (!v) bytes_bad++;
    json_decref(v);
    free(out);
  }
  CHECK_EQ_INT(valid_bad, 0);
  CHECK_EQ_INT(bytes_bad, 0);
}

int main(void) {
  h_init("json_escape");
  test_exact();
  test_appends();
  test_random();
  TEST_END();
}
