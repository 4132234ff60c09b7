/* buf.c - growable byte buffer used for connection input and output. */
#include "common/buf.h"

#include <stdlib.h>
#include <string.h>

#include "dynamo/status.h"

void dyn__buf_init(dyn__buf_t *b) { memset(b, 0, sizeof *b); }

void dyn__buf_free(dyn__buf_t *b) {
  free(b->data);
  dyn__buf_init(b);
}

int dyn__buf_reserve(dyn__buf_t *b, size_t n) {
  if (b->cap - b->len >= n) return DYN_OK;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap - b->len < n) {
    if (cap > SIZE_MAX / 2) return DYN_ENOMEM;
    cap *= 2;
  }
  uint8_t *p = realloc(b->data, cap);
  if (!p) return DYN_ENOMEM;
  b->data = p;
  b->cap = cap;
  return DYN_OK;
}

int dyn__buf_append(dyn__buf_t *b, const void *p, size_t n) {
  if (n == 0) return DYN_OK;
  int rc = dyn__buf_reserve(b, n);
  if (rc) return rc;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return DYN_OK;
}

void dyn__buf_consume(dyn__buf_t *b, size_t n) {
  if (n >= b->len) {
    b->len = 0;
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
}

void dyn__buf_shrink(dyn__buf_t *b, size_t cap) {
  if (b->cap <= cap || b->len > cap) return;
  if (cap == 0) {
    dyn__buf_free(b);
    return;
  }
  uint8_t *p = realloc(b->data, cap);
  if (!p) return;
  b->data = p;
  b->cap = cap;
}
