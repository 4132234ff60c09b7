/* fuzz_http.c - the HTTP request reader (src/http/parse.c over http-parser)
 * on arbitrary bytes.
 *
 * Drives the reader the way a connection does: bytes arrive in slices,
 * whatever a paused reader leaves unconsumed stays queued, and every
 * complete message is taken out and checked. The first two input bytes pick
 * the body limit (small, so 413 is reached often) and the slice size.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http/parse.h"

static void check_msg(const dyn__http_msg_t *m, size_t max_body) {
  if (!m->method[0]) abort();
  if (m->body.len > max_body) abort();
  if (!m->body.data || m->body.data[m->body.len] != 0) abort();
  /* "path\0query\0" */
  if (m->pq.len < 2 || m->query_off == 0 || m->query_off >= m->pq.len) abort();
  if (m->pq.data[m->query_off - 1] != 0 || m->pq.data[m->pq.len - 1] != 0) abort();
  if (strlen((const char *)m->pq.data) != m->query_off - 1) abort();
  if (!m->url.len || m->url.data[m->url.len - 1] != 0) abort();
  if (m->nhdr > DYN__HTTP_MAX_HEADERS) abort();
  for (size_t i = 0; i < m->nhdr; i++) {
    if (m->hdr[i].name >= m->hdrs.len || m->hdr[i].value >= m->hdrs.len) abort();
    if (m->hdr[i].value <= m->hdr[i].name) abort();
    const char *name = (const char *)m->hdrs.data + m->hdr[i].name;
    if (m->hdr[i].name + strlen(name) + 1 != m->hdr[i].value) abort();
    if (!dyn__http_msg_header(m, name)) abort();
  }
  if (m->hdrs.len && m->hdrs.data[m->hdrs.len - 1] != 0) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2) return 0;
  size_t max_body = 16u + data[0] * 8u;
  size_t slice = 1u + data[1] % 64u;
  data += 2;
  size -= 2;
  dyn__http_reader_t r;
  dyn__http_reader_init(&r, max_body);
  dyn__buf_t in;
  dyn__buf_init(&in);
  size_t off = 0;
  while (off < size) {
    size_t n = size - off < slice ? size - off : slice;
    if (dyn__buf_append(&in, data + off, n)) abort();
    off += n;
    for (;;) {
      long k = dyn__http_reader_feed(&r, (const char *)in.data, in.len);
      if (k < 0) {
        if (!r.status || !r.why) abort(); /* every error says what to answer */
        goto done;
      }
      if ((size_t)k > in.len) abort();
      dyn__buf_consume(&in, (size_t)k);
      if (!r.complete) {
        if (in.len) abort(); /* an unpaused reader takes everything */
        break;
      }
      dyn__http_msg_t m;
      dyn__http_reader_take(&r, &m);
      check_msg(&m, max_body);
      dyn__http_msg_free(&m);
      if (!in.len) break;
    }
  }
done:
  dyn__http_reader_free(&r);
  dyn__buf_free(&in);
  return 0;
}
