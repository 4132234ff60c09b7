/* subject.c - NATS-style subject syntax and wildcard matching, so that the
 * embedded event bus and the NATS backend accept the same subscriptions. */
#include <string.h>

#include "dynamo/events.h"

int dyn_subject_valid(const char *s, int allow_wildcards) {
  if (!s || !*s || strlen(s) > 1024) return 0;
  const char *tok = s;
  for (const char *p = s;; p++) {
    if (*p == '.' || *p == 0) {
      size_t n = (size_t)(p - tok);
      if (n == 0) return 0;
      if (memchr(tok, '*', n) || memchr(tok, '>', n)) {
        if (!allow_wildcards || n != 1) return 0;
        if (*tok == '>' && *p != 0) return 0; /* '>' only last */
      }
      if (*p == 0) return 1;
      tok = p + 1;
    } else if (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n') {
      return 0;
    }
  }
}

int dyn_subject_match(const char *pat, const char *subj) {
  for (;;) {
    const char *pe = strchr(pat, '.');
    const char *se = strchr(subj, '.');
    size_t pn = pe ? (size_t)(pe - pat) : strlen(pat);
    size_t sn = se ? (size_t)(se - subj) : strlen(subj);
    if (pn == 1 && pat[0] == '>') return sn > 0;
    if (!(pn == 1 && pat[0] == '*') && (pn != sn || memcmp(pat, subj, pn)))
      return 0;
    if (!pe || !se) return !pe && !se;
    pat = pe + 1;
    subj = se + 1;
  }
}
