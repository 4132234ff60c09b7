/* parse.c - http-parser glue: one request message at a time, bounded. */
#include "http/parse.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "dynamo/status.h"

void dyn__http_msg_init(dyn__http_msg_t *m) {
  memset(m, 0, sizeof *m);
  dyn__buf_init(&m->url);
  dyn__buf_init(&m->pq);
  dyn__buf_init(&m->hdrs);
  dyn__buf_init(&m->body);
}

void dyn__http_msg_free(dyn__http_msg_t *m) {
  dyn__buf_free(&m->url);
  dyn__buf_free(&m->pq);
  dyn__buf_free(&m->hdrs);
  dyn__buf_free(&m->body);
  dyn__http_msg_init(m);
}

const char *dyn__http_msg_header(const dyn__http_msg_t *m, const char *name) {
  for (size_t i = 0; i < m->nhdr; i++) {
    const char *n = (const char *)m->hdrs.data + m->hdr[i].name;
    if (!strcasecmp(n, name)) return (const char *)m->hdrs.data + m->hdr[i].value;
  }
  return NULL;
}

static int fail(dyn__http_reader_t *r, int status, const char *why) {
  if (!r->status) {
    r->status = status;
    r->why = why;
  }
  return -1;
}

static int append(dyn__http_reader_t *r, dyn__buf_t *b, const char *at, size_t n) {
  if (dyn__buf_append(b, at, n)) return fail(r, 500, "out of memory");
  return 0;
}

static int nul(dyn__http_reader_t *r, dyn__buf_t *b) {
  return append(r, b, "", 1);
}

static int on_url(http_parser *p, const char *at, size_t n) {
  dyn__http_reader_t *r = p->data;
  return append(r, &r->msg.url, at, n);
}

static int end_value(dyn__http_reader_t *r) {
  if (nul(r, &r->msg.hdrs)) return -1;
  r->msg.nhdr++;
  return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n) {
  dyn__http_reader_t *r = p->data;
  if (r->headers_done) return 0; /* chunked trailers: dropped */
  if (r->hstate == 2 && end_value(r)) return -1;
  if (r->hstate != 1) {
    if (r->msg.nhdr >= DYN__HTTP_MAX_HEADERS)
      return fail(r, 431, "too many header fields");
    r->msg.hdr[r->msg.nhdr].name = r->msg.hdrs.len;
    r->hstate = 1;
  }
  return append(r, &r->msg.hdrs, at, n);
}

static int on_header_value(http_parser *p, const char *at, size_t n) {
  dyn__http_reader_t *r = p->data;
  if (r->headers_done) return 0;
  if (r->hstate == 1) {
    if (nul(r, &r->msg.hdrs)) return -1;
    r->msg.hdr[r->msg.nhdr].value = r->msg.hdrs.len;
    r->hstate = 2;
  }
  if (r->hstate != 2) return fail(r, 400, "header value without a name");
  return append(r, &r->msg.hdrs, at, n);
}

/* Splits the target into path and query: origin-form ("/a?b"), "*", or
 * absolute-form ("http://host/a?b"). */
static int split_target(dyn__http_reader_t *r) {
  dyn__http_msg_t *m = &r->msg;
  if (nul(r, &m->url)) return -1;
  const char *u = (const char *)m->url.data;
  size_t ulen = m->url.len - 1;
  const char *path = u, *query = "";
  size_t plen = ulen, qlen = 0;
  if (u[0] == '/' || !strcmp(u, "*")) {
    const char *h = memchr(u, '#', ulen); /* clients never send one; drop it */
    if (h) plen = ulen = (size_t)(h - u);
    const char *q = memchr(u, '?', ulen);
    if (q) {
      plen = (size_t)(q - u);
      query = q + 1;
      qlen = ulen - plen - 1;
    }
  } else {
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    if (http_parser_parse_url(u, ulen, 0, &pu)) return fail(r, 400, "invalid request target");
    if (pu.field_set & (1 << UF_PATH)) {
      path = u + pu.field_data[UF_PATH].off;
      plen = pu.field_data[UF_PATH].len;
    } else {
      path = "/";
      plen = 1;
    }
    if (pu.field_set & (1 << UF_QUERY)) {
      query = u + pu.field_data[UF_QUERY].off;
      qlen = pu.field_data[UF_QUERY].len;
    }
  }
  if (append(r, &m->pq, path, plen) || nul(r, &m->pq)) return -1;
  m->query_off = m->pq.len;
  if (append(r, &m->pq, query, qlen) || nul(r, &m->pq)) return -1;
  return 0;
}

static int on_headers_complete(http_parser *p) {
  dyn__http_reader_t *r = p->data;
  dyn__http_msg_t *m = &r->msg;
  if (r->hstate == 2 && end_value(r)) return -1;
  r->hstate = 0;
  r->headers_done = 1;
  snprintf(m->method, sizeof m->method, "%s", http_method_str((enum http_method)p->method));
  m->http_major = p->http_major;
  m->http_minor = p->http_minor;
  if (!m->url.len) return fail(r, 400, "empty request target");
  if (split_target(r)) return -1;
  if ((p->flags & F_CONTENTLENGTH) && p->content_length > r->max_body)
    return fail(r, 413, "request body too large");
  /* The declared length at once: no regrowing, no copies, and the pages
   * become memory only as the body arrives. */
  if ((p->flags & F_CONTENTLENGTH) && p->content_length &&
      dyn__buf_reserve(&m->body, (size_t)p->content_length + 1))
    return fail(r, 500, "out of memory");
  const char *e = dyn__http_msg_header(m, "expect");
  if (e) {
    if (strcasecmp(e, "100-continue")) return fail(r, 417, "unsupported expectation");
    m->expect_continue = p->http_major == 1 && p->http_minor >= 1;
  }
  return 0;
}

static int on_body(http_parser *p, const char *at, size_t n) {
  dyn__http_reader_t *r = p->data;
  if (n > r->max_body - r->msg.body.len) return fail(r, 413, "request body too large");
  return append(r, &r->msg.body, at, n);
}

static int on_message_complete(http_parser *p) {
  dyn__http_reader_t *r = p->data;
  if (nul(r, &r->msg.body)) return -1;
  r->msg.body.len--; /* keep the NUL out of the length */
  r->msg.keep_alive = http_should_keep_alive(p) && !p->upgrade;
  r->complete = 1;
  /* Stop right after this message; what follows waits for take(). */
  http_parser_pause(p, 1);
  return 0;
}

static const http_parser_settings settings = {
  .on_url = on_url,
  .on_header_field = on_header_field,
  .on_header_value = on_header_value,
  .on_headers_complete = on_headers_complete,
  .on_body = on_body,
  .on_message_complete = on_message_complete,
};

static void reset(dyn__http_reader_t *r) {
  http_parser_init(&r->p, HTTP_REQUEST);
  r->p.data = r;
  r->hstate = 0;
  r->headers_done = 0;
  r->complete = 0;
}

void dyn__http_reader_init(dyn__http_reader_t *r, size_t max_body) {
  memset(r, 0, sizeof *r);
  r->max_body = max_body;
  dyn__http_msg_init(&r->msg);
  reset(r);
}

void dyn__http_reader_free(dyn__http_reader_t *r) {
  dyn__http_msg_free(&r->msg);
}

long dyn__http_reader_feed(dyn__http_reader_t *r, const char *data, size_t len) {
  if (r->status) return -1;
  if (r->complete || !len) return 0;
  size_t n = http_parser_execute(&r->p, &settings, data, len);
  enum http_errno err = HTTP_PARSER_ERRNO(&r->p);
  if (r->complete) {
    /* Paused at the end of the message (or stopped at an upgrade). */
    if (n > len) n = len;
    return (long)n;
  }
  if (err != HPE_OK) {
    if (err == HPE_HEADER_OVERFLOW) return fail(r, 431, "request header too large");
    return fail(r, 400, http_errno_description(err));
  }
  if (r->p.upgrade) return fail(r, 400, "protocol upgrade without a complete message");
  /* A request line without a version is HTTP/0.9: http-parser would go on
   * to wait for headers that such a client never sends. */
  if (!r->headers_done && r->p.http_major == 0 && r->p.http_minor == 9)
    return fail(r, 400, "HTTP/0.9 request (no HTTP version in the request line)");
  return (long)n;
}

void dyn__http_reader_take(dyn__http_reader_t *r, dyn__http_msg_t *out) {
  *out = r->msg;
  dyn__http_msg_init(&r->msg);
  reset(r);
}
