/* test_cp_proto.c - control-plane payloads: the [u16 len][string][rest]
 * pair and single-string payloads never read out of bounds. */
#include "harness.h"
#include "runtime/embedded/cp_proto.h"

static void test_pair(void) {
  uint8_t buf[2 + DYN__CP_KEY_MAX + 64];
  dyn__cp_pair_t pr;
  const char *why;

  size_t n = dyn__cp_pair_prefix(buf, "instances/a/b/c:1f", 18);
  CHECK_EQ_INT(n, 20);
  CHECK_EQ_INT(dyn__get_u16(buf), 18);
  memcpy(buf + n, "{\"v\":1}", 7);
  CHECK_STATUS(dyn__cp_pair_decode(buf, n + 7, &pr, &why), DYN_OK);
  CHECK_EQ_INT(pr.str_len, 18);
  CHECK(pr.str_len == 18 && !memcmp(pr.str, "instances/a/b/c:1f", 18));
  CHECK_EQ_INT(pr.rest_len, 7);
  CHECK(pr.rest == buf + 20 && !memcmp(pr.rest, "{\"v\":1}", 7));

  /* The string exactly fills the payload: empty rest. */
  CHECK_STATUS(dyn__cp_pair_decode(buf, n, &pr, &why), DYN_OK);
  CHECK_EQ_INT(pr.rest_len, 0);

  /* One byte short of the string. */
  why = NULL;
  CHECK_STATUS(dyn__cp_pair_decode(buf, n - 1, &pr, &why), DYN_EPROTO);
  CHECK(why != NULL);

  /* Too short for the length itself. */
  CHECK_STATUS(dyn__cp_pair_decode(buf, 0, &pr, &why), DYN_EPROTO);
  CHECK_STATUS(dyn__cp_pair_decode(buf, 1, &pr, &why), DYN_EPROTO);

  /* Empty string. */
  dyn__put_u16(buf, 0);
  CHECK_STATUS(dyn__cp_pair_decode(buf, 10, &pr, &why), DYN_EPROTO);

  /* Length claims far more than there is. */
  dyn__put_u16(buf, 0xffff);
  CHECK_STATUS(dyn__cp_pair_decode(buf, 10, &pr, &why), DYN_EPROTO);

  /* At the key limit: fine; one over: refused even when the bytes are there. */
  memset(buf + 2, 'k', DYN__CP_KEY_MAX + 1);
  dyn__put_u16(buf, DYN__CP_KEY_MAX);
  CHECK_STATUS(dyn__cp_pair_decode(buf, 2 + DYN__CP_KEY_MAX, &pr, &why), DYN_OK);
  dyn__put_u16(buf, DYN__CP_KEY_MAX + 1);
  CHECK_STATUS(dyn__cp_pair_decode(buf, 2 + DYN__CP_KEY_MAX + 1, &pr, &why), DYN_EPROTO);

  /* NUL inside the string, but not in the rest. */
  n = dyn__cp_pair_prefix(buf, "a\0b", 3);
  why = NULL;
  CHECK_STATUS(dyn__cp_pair_decode(buf, n, &pr, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "NUL"));
  n = dyn__cp_pair_prefix(buf, "ab", 2);
  buf[n] = 0;
  buf[n + 1] = 'x';
  CHECK_STATUS(dyn__cp_pair_decode(buf, n + 2, &pr, &why), DYN_OK);
  CHECK_EQ_INT(pr.rest_len, 2);

  /* Every truncation of a valid pair either decodes inside its bounds or
   * fails; decoded spans never pass the end. */
  n = dyn__cp_pair_prefix(buf, "subject.x", 9);
  memcpy(buf + n, "payload", 7);
  int bounds_ok = 1;
  for (size_t k = 0; k <= n + 7; k++) {
    int rc = dyn__cp_pair_decode(buf, k, &pr, &why);
    if (rc == DYN_OK) {
      if ((const uint8_t *)pr.str + pr.str_len > buf + k || pr.rest + pr.rest_len != buf + k)
        bounds_ok = 0;
      if (k < n) bounds_ok = 0;
    } else if (rc != DYN_EPROTO || k >= n) {
      bounds_ok = 0;
    }
  }
  CHECK(bounds_ok);
}

static void test_string(void) {
  const char *why;
  uint8_t buf[DYN__CP_KEY_MAX + 2];
  memset(buf, 'p', sizeof buf);
  CHECK_STATUS(dyn__cp_string_check(buf, 1, &why), DYN_OK);
  CHECK_STATUS(dyn__cp_string_check(buf, DYN__CP_KEY_MAX, &why), DYN_OK);
  why = NULL;
  CHECK_STATUS(dyn__cp_string_check(buf, DYN__CP_KEY_MAX + 1, &why), DYN_EPROTO);
  CHECK(why != NULL);
  CHECK_STATUS(dyn__cp_string_check(buf, 0, &why), DYN_EPROTO);
  buf[5] = 0;
  why = NULL;
  CHECK_STATUS(dyn__cp_string_check(buf, 10, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "NUL"));
  CHECK_STATUS(dyn__cp_string_check(buf, 5, &why), DYN_OK);
}

int main(void) {
  h_init("cp_proto");
  test_pair();
  test_string();
  TEST_END();
}
