/* frame.h - the wire format shared by the request plane and the control
 * plane.
 *
 * Every message is a frame: a 12-byte header, then `len` payload bytes.
 *
 *   offset 0  u32 len      payload length, little endian, <= max frame
 *   offset 4  u32 stream   stream id chosen by the side that opened it
 *   offset 8  u8  type     DYN__F_*
 *   offset 9  u8  flags    DYN__FL_*
 *   offset 10 u16 reserved must be zero
 *
 * A connection opens with HELLO from each side (magic "DYNM", version), so a
 * stray client or a future version fails with a clear message. REQUEST's
 * payload is [u64 request id][u32 deadline ms][u16 path len][path][body];
 * DATA carries one response message; END and CANCEL are empty; ERROR holds
 * a UTF-8 message. GOAWAY (empty) tells a caller that the instance is
 * draining: it takes no new streams on this connection, and any stream it
 * has not answered when the connection closes never ran, so it is safe to
 * send elsewhere. Types from 16 up belong to the control plane
 * (embedded/cp_proto.h). The decoder never trusts a length: a frame that is
 * too big, has an unknown type or non-zero reserved bits is a protocol
 * error, and the connection carrying it is closed.
 */
#ifndef DYN__FRAME_H
#define DYN__FRAME_H
#include <stddef.h>
#include <stdint.h>

#define DYN__FRAME_HDR 12u
#define DYN__MAGIC "DYNM"
#define DYN__PROTO_VERSION 1u
#define DYN__HELLO_LEN 16u /* magic, u16 version, u16 role, u64 session */

enum {
  DYN__F_HELLO = 1,
  DYN__F_REQUEST = 2,
  DYN__F_DATA = 3,
  DYN__F_END = 4,
  DYN__F_ERROR = 5,
  DYN__F_CANCEL = 6,
  DYN__F_GOAWAY = 7,
  DYN__F_CP_FIRST = 16,
  DYN__F_CP_LAST = 31
};

/* ERROR flag: nothing of the request ran; the caller may retry elsewhere. */
#define DYN__FL_RETRY 0x01u
/* ERROR flag: the instance stopped before the request finished (its drain
 * ran out): for the caller the instance went away mid-stream, as if the
 * connection had closed (DYN_EDISCONNECTED), so it may continue the work
 * elsewhere (the LLM Processor migrates such a stream). */
#define DYN__FL_GONE 0x02u

enum { DYN__ROLE_CLIENT = 1, DYN__ROLE_SERVER = 2 };

typedef struct dyn__frame {
  uint32_t len;
  uint32_t stream;
  uint8_t type;
  uint8_t flags;
  const uint8_t *payload; /* points into the decode buffer */
} dyn__frame_t;

typedef struct dyn__request_hdr {
  uint64_t request_id;
  uint32_t deadline_ms;
  const char *path; /* not NUL-terminated */
  uint16_t path_len;
  const uint8_t *body;
  size_t body_len;
} dyn__request_hdr_t;

typedef struct dyn__hello {
  uint16_t version;
  uint16_t role;
  uint64_t session;
} dyn__hello_t;

void dyn__put_u16(uint8_t *p, uint16_t v);
void dyn__put_u32(uint8_t *p, uint32_t v);
void dyn__put_u64(uint8_t *p, uint64_t v);
uint16_t dyn__get_u16(const uint8_t *p);
uint32_t dyn__get_u32(const uint8_t *p);
uint64_t dyn__get_u64(const uint8_t *p);

void dyn__frame_header(uint8_t hdr[DYN__FRAME_HDR], uint32_t len,
                       uint32_t stream, uint8_t type, uint8_t flags);

/* Decodes one frame from buf[0..n). Returns the bytes it spans (>0), 0 if
 * more bytes are needed, or DYN_EPROTO / DYN_ETOOBIG; *why then names the
 * problem. */
long dyn__frame_decode(const uint8_t *buf, size_t n, uint32_t max_frame,
                       dyn__frame_t *f, const char **why);

void dyn__hello_encode(uint8_t out[DYN__HELLO_LEN], uint16_t role,
                       uint64_t session);
/* 0, or DYN_EPROTO with *why set (bad magic, other version, short). */
int dyn__hello_decode(const dyn__frame_t *f, dyn__hello_t *h, const char **why);

/* Request prefix: encodes everything before the body into out, which must
 * hold 14 + path_len bytes; returns its length. */
size_t dyn__request_encode_prefix(uint8_t *out, uint64_t request_id,
                                  uint32_t deadline_ms, const char *path,
                                  uint16_t path_len);
int dyn__request_decode(const dyn__frame_t *f, dyn__request_hdr_t *r,
                        const char **why);
#endif
