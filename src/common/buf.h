/* buf.h - the project's growable byte buffer. Connections, the HTTP server,
 * JSON and SSE output, chat templates and KV event batches all accumulate
 * bytes in one of these; there is no second buffer type. */
#ifndef DYN__BUF_H
#define DYN__BUF_H
#include <stddef.h>
#include <stdint.h>

typedef struct dyn__buf {
  uint8_t *data;
  size_t len;
  size_t cap;
} dyn__buf_t;

void dyn__buf_init(dyn__buf_t *b);
void dyn__buf_free(dyn__buf_t *b);
/* Makes room for n more bytes; returns 0 or DYN_ENOMEM. */
int dyn__buf_reserve(dyn__buf_t *b, size_t n);
int dyn__buf_append(dyn__buf_t *b, const void *p, size_t n);
/* Drops the first n bytes. */
void dyn__buf_consume(dyn__buf_t *b, size_t n);
/* Gives memory back: a buffer of more than cap bytes whose content fits in
 * cap is reallocated to cap (kept as it is if that fails). */
void dyn__buf_shrink(dyn__buf_t *b, size_t cap);
#endif
