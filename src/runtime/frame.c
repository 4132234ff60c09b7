/* frame.c - encoding and decoding of request-plane frames (see frame.h).
 *
 * Written by hand rather than with a serialization library because the
 * format is five fixed fields and a few length-prefixed strings; a library
 * would add a dependency and a copy on the hottest path for no gain.
 */
#include "runtime/frame.h"

#include <string.h>

#include "dynamo/status.h"

void dyn__put_u16(uint8_t *p, uint16_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
}
void dyn__put_u32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
void dyn__put_u64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
uint16_t dyn__get_u16(const uint8_t *p) {
  return (uint16_t)(p[0] | (uint16_t)p[1] << 8);
}
uint32_t dyn__get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}
uint64_t dyn__get_u64(const uint8_t *p) {
  return (uint64_t)dyn__get_u32(p) | (uint64_t)dyn__get_u32(p + 4) << 32;
}

void dyn__frame_header(uint8_t hdr[DYN__FRAME_HDR], uint32_t len,
                       uint32_t stream, uint8_t type, uint8_t flags) {
  dyn__put_u32(hdr, len);
  dyn__put_u32(hdr + 4, stream);
  hdr[8] = type;
  hdr[9] = flags;
  hdr[10] = 0;
  hdr[11] = 0;
}

static int type_known(uint8_t t) {
  return (t >= DYN__F_HELLO && t <= DYN__F_GOAWAY) ||
         (t >= DYN__F_CP_FIRST && t <= DYN__F_CP_LAST);
}

long dyn__frame_decode(const uint8_t *buf, size_t n, uint32_t max_frame,
                       dyn__frame_t *f, const char **why) {
  if (n < DYN__FRAME_HDR) return 0;
  uint32_t len = dyn__get_u32(buf);
  if (len > max_frame) {
    *why = "frame larger than the maximum frame size";
    return DYN_ETOOBIG;
  }
  if (!type_known(buf[8])) {
    *why = "unknown frame type";
    return DYN_EPROTO;
  }
  if (buf[10] || buf[11]) {
    *why = "reserved header bits set";
    return DYN_EPROTO;
  }
  if (n - DYN__FRAME_HDR < len) return 0;
  f->len = len;
  f->stream = dyn__get_u32(buf + 4);
  f->type = buf[8];
  f->flags = buf[9];
  f->payload = buf + DYN__FRAME_HDR;
  return (long)(DYN__FRAME_HDR + len);
}

void dyn__hello_encode(uint8_t out[DYN__HELLO_LEN], uint16_t role,
                       uint64_t session) {
  memcpy(out, DYN__MAGIC, 4);
  dyn__put_u16(out + 4, DYN__PROTO_VERSION);
  dyn__put_u16(out + 6, role);
  dyn__put_u64(out + 8, session);
}

int dyn__hello_decode(const dyn__frame_t *f, dyn__hello_t *h,
                      const char **why) {
  if (f->type != DYN__F_HELLO) {
    *why = "first frame is not HELLO (not a dynamo peer?)";
    return DYN_EPROTO;
  }
  if (f->len < DYN__HELLO_LEN || memcmp(f->payload, DYN__MAGIC, 4) != 0) {
    *why = "bad HELLO magic (not a dynamo peer?)";
    return DYN_EPROTO;
  }
  h->version = dyn__get_u16(f->payload + 4);
  h->role = dyn__get_u16(f->payload + 6);
  h->session = dyn__get_u64(f->payload + 8);
  if (h->version != DYN__PROTO_VERSION) {
    *why = "peer speaks another protocol version";
    return DYN_EPROTO;
  }
  return DYN_OK;
}

size_t dyn__request_encode_prefix(uint8_t *out, uint64_t request_id,
                                  uint32_t deadline_ms, const char *path,
                                  uint16_t path_len) {
  dyn__put_u64(out, request_id);
  dyn__put_u32(out + 8, deadline_ms);
  dyn__put_u16(out + 12, path_len);
  memcpy(out + 14, path, path_len);
  return 14u + path_len;
}

int dyn__request_decode(const dyn__frame_t *f, dyn__request_hdr_t *r,
                        const char **why) {
  if (f->len < 14) {
    *why = "REQUEST shorter than its header";
    return DYN_EPROTO;
  }
  r->request_id = dyn__get_u64(f->payload);
  r->deadline_ms = dyn__get_u32(f->payload + 8);
  r->path_len = dyn__get_u16(f->payload + 12);
  if (r->path_len == 0 || (size_t)r->path_len > f->len - 14) {
    *why = "REQUEST path length out of range";
    return DYN_EPROTO;
  }
  r->path = (const char *)f->payload + 14;
  if (memchr(r->path, 0, r->path_len)) {
    *why = "REQUEST path contains NUL";
    return DYN_EPROTO;
  }
  r->body = f->payload + 14 + r->path_len;
  r->body_len = f->len - 14 - r->path_len;
  return DYN_OK;
}
