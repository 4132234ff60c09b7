/* array.h - growing a malloc'd array: the one place capacity doubles.
 *
 * dyn__grow makes *p hold at least want elements of size elem, doubling
 * *cap (from 16) as needed; the contents move with realloc. DYN_OK, or
 * DYN_ENOMEM with *p and *cap unchanged. */
#ifndef DYN__COMMON_ARRAY_H
#define DYN__COMMON_ARRAY_H
#include <stdlib.h>

#include "dynamo/status.h"

static inline int dyn__grow(void **p, size_t *cap, size_t want, size_t elem) {
  if (want <= *cap) return DYN_OK;
  size_t n = *cap ? *cap : 16;
  while (n < want) n *= 2;
  void *q = realloc(*p, n * elem);
  if (!q) return DYN_ENOMEM;
  *p = q;
  *cap = n;
  return DYN_OK;
}

#endif
