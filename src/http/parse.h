/* parse.h - HTTP/1.x request reading: http-parser callbacks glued to one
 * message at a time (method, target, headers, body), with limits.
 *
 * No I/O here, so the fuzzer drives exactly what a connection drives: feed
 * bytes; when a message is complete the reader pauses (the bytes after it
 * are left unconsumed) until dyn__http_reader_take() moves it out.
 */
#ifndef DYN__HTTP_PARSE_H
#define DYN__HTTP_PARSE_H
#include <stddef.h>
#include <http_parser.h>

#include "common/buf.h"

#define DYN__HTTP_MAX_HEADERS 100

typedef struct dyn__http_hdr {
  size_t name, value; /* offsets of NUL-terminated strings in msg.hdrs */
} dyn__http_hdr_t;

typedef struct dyn__http_msg {
  char method[24];
  dyn__buf_t url;   /* the request target as sent, NUL-terminated */
  dyn__buf_t pq;    /* "path\0query\0" split from the target */
  size_t query_off; /* offset of the query in pq */
  dyn__buf_t hdrs;  /* name\0value\0 ... */
  dyn__http_hdr_t hdr[DYN__HTTP_MAX_HEADERS];
  size_t nhdr;
  dyn__buf_t body; /* NUL-terminated (the NUL is not counted in len) */
  int http_major, http_minor;
  int keep_alive;
  int expect_continue;
} dyn__http_msg_t;

typedef struct dyn__http_reader {
  http_parser p;
  size_t max_body;
  dyn__http_msg_t msg;
  int hstate;   /* 0 none, 1 in a header name, 2 in a header value */
  int headers_done;
  int complete; /* msg holds a whole request; feeding is paused */
  int status;   /* after an error: the HTTP status to answer with */
  const char *why; /* after an error: a short reason */
} dyn__http_reader_t;

void dyn__http_msg_init(dyn__http_msg_t *m);
void dyn__http_msg_free(dyn__http_msg_t *m);
/* Case-insensitive lookup; the first match or NULL. */
const char *dyn__http_msg_header(const dyn__http_msg_t *m, const char *name);

void dyn__http_reader_init(dyn__http_reader_t *r, size_t max_body);
void dyn__http_reader_free(dyn__http_reader_t *r);
/* Parses what it can of data. Returns the bytes consumed (all of them unless
 * a message completed inside), or -1 on a malformed or oversized request:
 * r->status (400, 413, 431) and r->why say what to answer. The reader is
 * dead after an error. */
long dyn__http_reader_feed(dyn__http_reader_t *r, const char *data, size_t len);
/* Moves the complete message into *out (which must be free or fresh) and
 * readies the reader for the next one. */
void dyn__http_reader_take(dyn__http_reader_t *r, dyn__http_msg_t *out);
#endif
