/* test_subject.c - NATS-style subjects: syntax, and '*' / '>' matching. */
#include "harness.h"

static void test_valid(void) {
  static const char *ok[] = {"a", "a.b.c", "namespace.ns.component.c.metrics", "A-b_c.1",
                             "x.y.z.w.v.u.t"};
  for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
    CHECK_MSG(dyn_subject_valid(ok[i], 0), "\"%s\" should be valid", ok[i]);
    CHECK_MSG(dyn_subject_valid(ok[i], 1), "\"%s\" should be valid as a pattern", ok[i]);
  }
  static const char *wild[] = {"*", ">", "a.*", "a.>", "*.b", "a.*.c", "*.*.>", "a.*.>"};
  for (size_t i = 0; i < sizeof wild / sizeof *wild; i++) {
    CHECK_MSG(dyn_subject_valid(wild[i], 1), "pattern \"%s\" should be valid", wild[i]);
    CHECK_MSG(!dyn_subject_valid(wild[i], 0), "\"%s\" is no plain subject", wild[i]);
  }
  static const char *bad[] = {"", ".", "a.", ".a", "a..b", "a b", "a\tb", "a\nb", "a\r",
                              "a.>.b", ">.a", "a*", "a.b*", "*a.b", "a.>b", "a.**", ">>"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK_MSG(!dyn_subject_valid(bad[i], 1), "\"%s\" should be invalid", bad[i]);
    CHECK_MSG(!dyn_subject_valid(bad[i], 0), "\"%s\" should be invalid", bad[i]);
  }
  CHECK(!dyn_subject_valid(NULL, 1));
  char longs[1100];
  memset(longs, 'a', sizeof longs);
  longs[1024] = 0;
  CHECK(dyn_subject_valid(longs, 0)); /* 1024: the limit */
  longs[1024] = 'a';
  longs[1025] = 0;
  CHECK(!dyn_subject_valid(longs, 0));
}

typedef struct { const char *pat, *subj; int want; } match_case_t;

static void test_match(void) {
  static const match_case_t cases[] = {
      {"a", "a", 1},
      {"a", "b", 0},
      {"a", "ab", 0},
      {"ab", "a", 0},
      {"a.b", "a.b", 1},
      {"a.b", "a.bc", 0},
      {"a.b", "a.b.c", 0},
      {"a.b.c", "a.b", 0},
      {"*", "a", 1},
      {"*", "a.b", 0},
      {"a.*", "a.b", 1},
      {"a.*", "a", 0},
      {"a.*", "a.b.c", 0},
      {"a.*.c", "a.x.c", 1},
      {"a.*.c", "a.x.d", 0},
      {"a.*.c", "a.c", 0},
      {"*.b", "a.b", 1},
      {"*.b", "b", 0},
      {"*.*", "a.b", 1},
      {"*.*", "a.b.c", 0},
      {">", "a", 1},
      {">", "a.b.c", 1},
      {"a.>", "a.b", 1},
      {"a.>", "a.b.c.d", 1},
      {"a.>", "a", 0},
      {"a.>", "b.c", 0},
      {"a.*.>", "a.b.c", 1},
      {"a.*.>", "a.b", 0},
      {"*.>", "a.b", 1},
      {"*.>", "a", 0},
      {"namespace.*.component.*.kv", "namespace.ns.component.w.kv", 1},
      {"namespace.*.component.*.kv", "namespace.ns.component.w.metrics", 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    int got = dyn_subject_match(cases[i].pat, cases[i].subj) != 0;
    CHECK_MSG(got == cases[i].want, "match(\"%s\", \"%s\") = %d, want %d", cases[i].pat,
              cases[i].subj, got, cases[i].want);
  }
}

int main(void) {
  h_init("subject");
  test_valid();
  test_match();
  TEST_END();
}
