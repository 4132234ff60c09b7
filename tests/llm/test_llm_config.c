/* test_llm_config.c - how the LLM services check a config value
 * (llm_common.c): a whole number or a number, as JSON gives it or as text
 * from the control plane, within the range its field holds, and the words
 * that say what it must be. The services' messages are checked served, in
 * test_llm_config.py. */
#include "harness.h"
#include "llm/services/llm_common.h"

#include <float.h>
#include <limits.h>

static void test_parse_int(void) {
  long long v = 42;
  CHECK_STATUS(dyn__llm_parse_int("5", 1, INT32_MAX, &v), DYN_OK);
  CHECK(v == 5);
  CHECK_STATUS(dyn__llm_parse_int("0", 0, LLONG_MAX, &v), DYN_OK);
  CHECK(v == 0);
  CHECK_STATUS(dyn__llm_parse_int("-7", LLONG_MIN, LLONG_MAX, &v), DYN_OK);
  CHECK(v == -7);
  CHECK_STATUS(dyn__llm_parse_int("9223372036854775807", 0, LLONG_MAX, &v), DYN_OK);
  CHECK(v == LLONG_MAX);
  v = 42;
  /* Not whole numbers: a JSON string, a real, a bool, null, text around it. */
  const char *bad[] = {"\"lots\"", "\"5\"", "2.5", "1e3", "true", "null", "", " 5", "+5",
                       "5 ", "5x", "0x10", "[1]", "9223372036854775808", NULL};
  for (size_t i = 0; bad[i]; i++)
    CHECK_MSG(dyn__llm_parse_int(bad[i], LLONG_MIN, LLONG_MAX, &v) == DYN_EINVAL, "'%s'", bad[i]);
  /* Out of the field's range: a negative count, one past uint32. */
  CHECK_STATUS(dyn__llm_parse_int("-5", 1, UINT32_MAX, &v), DYN_EINVAL);
  CHECK_STATUS(dyn__llm_parse_int("0", 1, UINT32_MAX, &v), DYN_EINVAL);
  CHECK_STATUS(dyn__llm_parse_int("4294967296", 1, UINT32_MAX, &v), DYN_EINVAL);
  CHECK_STATUS(dyn__llm_parse_int("4294967295", 1, UINT32_MAX, &v), DYN_OK);
  CHECK(v == UINT32_MAX);
  CHECK_STATUS(dyn__llm_parse_int(NULL, 0, 1, &v), DYN_EINVAL);
}

static void test_parse_double(void) {
  double d = 42;
  CHECK_STATUS(dyn__llm_parse_double("1.5", 0, DBL_MAX, &d), DYN_OK);
  CHECK(d == 1.5);
  CHECK_STATUS(dyn__llm_parse_double("3", 0, DBL_MAX, &d), DYN_OK); /* a whole number is one */
  CHECK(d == 3);
  CHECK_STATUS(dyn__llm_parse_double("-2e-1", -DBL_MAX, DBL_MAX, &d), DYN_OK);
  CHECK(d == -0.2);
  CHECK_STATUS(dyn__llm_parse_double("1", 0, 1, &d), DYN_OK);
  d = 42;
  const char *bad[] = {"\"fast\"", "\"1.0\"", "true", "null", "inf", "nan", "-inf", "0x1p3",
                       " 1", "1.5s", "1e999", "", NULL};
  for (size_t i = 0; bad[i]; i++)
    CHECK_MSG(dyn__llm_parse_double(bad[i], -DBL_MAX, DBL_MAX, &d) == DYN_EINVAL, "'%s'", bad[i]);
  CHECK_STATUS(dyn__llm_parse_double("-0.5", 0, DBL_MAX, &d), DYN_EINVAL);
  CHECK_STATUS(dyn__llm_parse_double("1.01", 0, 1, &d), DYN_EINVAL);
  CHECK(d == 42); /* untouched by a refusal */
}

static void test_what(void) {
  char b[96];
  dyn__llm_int_what(b, sizeof b, 1, INT32_MAX);
  CHECK_EQ_STR(b, "a whole number between 1 and 2147483647");
  dyn__llm_int_what(b, sizeof b, 0, LLONG_MAX);
  CHECK_EQ_STR(b, "a whole number >= 0");
  dyn__llm_int_what(b, sizeof b, LLONG_MIN, LLONG_MAX);
  CHECK_EQ_STR(b, "a whole number");
  dyn__llm_double_what(b, sizeof b, 0, 1);
  CHECK_EQ_STR(b, "a number between 0 and 1");
  dyn__llm_double_what(b, sizeof b, 0, DBL_MAX);
  CHECK_EQ_STR(b, "a number >= 0");
  dyn__llm_double_what(b, sizeof b, -DBL_MAX, DBL_MAX);
  CHECK_EQ_STR(b, "a number");
}

int main(void) {
  test_parse_int();
  test_parse_double();
  test_what();
  TEST_END();
}
