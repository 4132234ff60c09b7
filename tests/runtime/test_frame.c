/* test_frame.c - the wire format: frame headers, HELLO, REQUEST prefixes,
 * and the byte buffer frames are read into. */
#include "harness.h"
#include "common/buf.h"
#include "runtime/frame.h"

static size_t make_frame(uint8_t *out, uint32_t stream, uint8_t type, uint8_t flags,
                         const void *payload, uint32_t len) {
  dyn__frame_header(out, len, stream, type, flags);
  if (len) memcpy(out + DYN__FRAME_HDR, payload, len);
  return DYN__FRAME_HDR + len;
}

static void test_ints(void) {
  uint8_t b[8];
  dyn__put_u16(b, 0xbeef);
  CHECK_EQ_INT(b[0], 0xef);
  CHECK_EQ_INT(b[1], 0xbe);
  CHECK_EQ_INT(dyn__get_u16(b), 0xbeef);
  dyn__put_u32(b, 0xdeadbeefu);
  CHECK_EQ_INT(b[0], 0xef);
  CHECK_EQ_INT(b[3], 0xde);
  CHECK_EQ_U64(dyn__get_u32(b), 0xdeadbeefu);
  dyn__put_u64(b, 0x0123456789abcdefull);
  CHECK_EQ_INT(b[0], 0xef);
  CHECK_EQ_INT(b[7], 0x01);
  CHECK_EQ_U64(dyn__get_u64(b), 0x0123456789abcdefull);
  dyn__put_u64(b, UINT64_MAX);
  CHECK_EQ_U64(dyn__get_u64(b), UINT64_MAX);
}

static void test_roundtrip(void) {
  uint8_t buf[256];
  const char payload[] = "hello, frame";
  uint32_t plen = (uint32_t)sizeof payload - 1;
  size_t total = make_frame(buf, 0xa1b2c3d4u, DYN__F_DATA, DYN__FL_RETRY, payload, plen);
  CHECK_EQ_INT(total, DYN__FRAME_HDR + plen);
  CHECK_EQ_INT(buf[10], 0);
  CHECK_EQ_INT(buf[11], 0);

  dyn__frame_t f;
  const char *why = NULL;
  long n = dyn__frame_decode(buf, total, DYN_DEFAULT_MAX_FRAME, &f, &why);
  CHECK_EQ_INT(n, (long)total);
  CHECK_EQ_INT(f.len, plen);
  CHECK_EQ_U64(f.stream, 0xa1b2c3d4u);
  CHECK_EQ_INT(f.type, DYN__F_DATA);
  CHECK_EQ_INT(f.flags, DYN__FL_RETRY);
  CHECK(f.payload == buf + DYN__FRAME_HDR);
  CHECK(!memcmp(f.payload, payload, plen));

  /* Every strict prefix asks for more bytes, and says nothing else. */
  int partial_ok = 1;
  for (size_t k = 0; k < total; k++) {
    why = NULL;
    if (dyn__frame_decode(buf, k, DYN_DEFAULT_MAX_FRAME, &f, &why) != 0 || why) partial_ok = 0;
  }
  CHECK(partial_ok);

  /* Trailing bytes of the next frame are not consumed. */
  size_t second = make_frame(buf + total, 7, DYN__F_END, 0, NULL, 0);
  n = dyn__frame_decode(buf, total + second, DYN_DEFAULT_MAX_FRAME, &f, &why);
  CHECK_EQ_INT(n, (long)total);
  n = dyn__frame_decode(buf + total, second, DYN_DEFAULT_MAX_FRAME, &f, &why);
  CHECK_EQ_INT(n, DYN__FRAME_HDR);
  CHECK_EQ_INT(f.len, 0);
  CHECK_EQ_INT(f.type, DYN__F_END);
  CHECK_EQ_INT(f.stream, 7);

  /* Every known type decodes; every other one is a protocol error. */
  int types_ok = 1;
  for (int t = 0; t < 256; t++) {
    uint8_t h[DYN__FRAME_HDR];
    dyn__frame_header(h, 0, 1, (uint8_t)t, 0);
    why = NULL;
    long r = dyn__frame_decode(h, sizeof h, DYN_DEFAULT_MAX_FRAME, &f, &why);
    int known = (t >= DYN__F_HELLO && t <= DYN__F_GOAWAY) ||
                (t >= DYN__F_CP_FIRST && t <= DYN__F_CP_LAST);
    if (known && r != DYN__FRAME_HDR) types_ok = 0;
    if (!known && (r != DYN_EPROTO || !why)) types_ok = 0;
  }
  CHECK(types_ok);
}

static void test_bad_headers(void) {
  uint8_t h[DYN__FRAME_HDR + 4];
  dyn__frame_t f;
  const char *why;

  /* Oversize is caught from the header alone, before any payload came. */
  dyn__frame_header(h, 1001, 1, DYN__F_DATA, 0);
  why = NULL;
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), DYN_ETOOBIG);
  CHECK(why && strstr(why, "maximum"));
  dyn__frame_header(h, 1000, 1, DYN__F_DATA, 0);
  CHECK_EQ_INT(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), 0); /* wants more */
  dyn__frame_header(h, 0xffffffffu, 1, DYN__F_DATA, 0);
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, DYN_DEFAULT_MAX_FRAME, &f, &why),
               DYN_ETOOBIG);
  dyn__frame_header(h, 4, 1, DYN__F_DATA, 0);
  CHECK_STATUS(dyn__frame_decode(h, sizeof h, 3, &f, &why), DYN_ETOOBIG);
  CHECK_EQ_INT(dyn__frame_decode(h, sizeof h, 4, &f, &why), (long)sizeof h);
  /* max 0: only empty frames. */
  dyn__frame_header(h, 0, 1, DYN__F_END, 0);
  CHECK_EQ_INT(dyn__frame_decode(h, DYN__FRAME_HDR, 0, &f, &why), DYN__FRAME_HDR);

  /* Reserved bits, each byte. */
  dyn__frame_header(h, 0, 1, DYN__F_END, 0);
  h[10] = 1;
  why = NULL;
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "reserved"));
  h[10] = 0;
  h[11] = 0x80;
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), DYN_EPROTO);

  /* Unknown type, also with a payload still missing. */
  dyn__frame_header(h, 100, 1, 0, 0);
  why = NULL;
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "type"));
  dyn__frame_header(h, 100, 1, 200, 0);
  CHECK_STATUS(dyn__frame_decode(h, DYN__FRAME_HDR, 1000, &f, &why), DYN_EPROTO);

  /* Text that is not a frame at all. */
  const char *http = "GET / HTTP/1.1\r\n\r\n";
  why = NULL;
  long r = dyn__frame_decode((const uint8_t *)http, strlen(http), DYN_DEFAULT_MAX_FRAME,
                             &f, &why);
  CHECK(r < 0);
  CHECK(why != NULL);
}

static void test_hello(void) {
  uint8_t payload[DYN__HELLO_LEN];
  dyn__hello_encode(payload, DYN__ROLE_SERVER, 0x1122334455667788ull);
  CHECK(!memcmp(payload, "DYNM", 4));
  dyn__frame_t f = {DYN__HELLO_LEN, 0, DYN__F_HELLO, 0, payload};
  dyn__hello_t h;
  const char *why = NULL;
  CHECK_STATUS(dyn__hello_decode(&f, &h, &why), DYN_OK);
  CHECK_EQ_INT(h.version, DYN__PROTO_VERSION);
  CHECK_EQ_INT(h.role, DYN__ROLE_SERVER);
  CHECK_EQ_U64(h.session, 0x1122334455667788ull);

  /* A longer HELLO is accepted: later versions may append fields. */
  uint8_t longer[DYN__HELLO_LEN + 8];
  memcpy(longer, payload, sizeof payload);
  memset(longer + DYN__HELLO_LEN, 0xee, 8);
  dyn__frame_t fl = {sizeof longer, 0, DYN__F_HELLO, 0, longer};
  CHECK_STATUS(dyn__hello_decode(&fl, &h, &why), DYN_OK);

  uint8_t bad[DYN__HELLO_LEN];
  memcpy(bad, payload, sizeof bad);
  bad[0] = 'X';
  dyn__frame_t fb = {DYN__HELLO_LEN, 0, DYN__F_HELLO, 0, bad};
  why = NULL;
  CHECK_STATUS(dyn__hello_decode(&fb, &h, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "magic"));

  memcpy(bad, payload, sizeof bad);
  dyn__put_u16(bad + 4, DYN__PROTO_VERSION + 1);
  why = NULL;
  CHECK_STATUS(dyn__hello_decode(&fb, &h, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "version"));

  dyn__frame_t fs = {DYN__HELLO_LEN - 1, 0, DYN__F_HELLO, 0, payload};
  CHECK_STATUS(dyn__hello_decode(&fs, &h, &why), DYN_EPROTO);
  dyn__frame_t fe = {0, 0, DYN__F_HELLO, 0, payload};
  CHECK_STATUS(dyn__hello_decode(&fe, &h, &why), DYN_EPROTO);
  dyn__frame_t ft = {DYN__HELLO_LEN, 0, DYN__F_DATA, 0, payload};
  why = NULL;
  CHECK_STATUS(dyn__hello_decode(&ft, &h, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "HELLO"));
}

static void test_request(void) {
  uint8_t buf[512];
  const char *path = "ns/comp/generate";
  uint16_t plen = (uint16_t)strlen(path);
  size_t n = dyn__request_encode_prefix(buf, 0xfeedfacecafebeefull, 1234, path, plen);
  CHECK_EQ_INT(n, 14u + plen);
  memcpy(buf + n, "BODY", 4);
  dyn__frame_t f = {(uint32_t)n + 4, 3, DYN__F_REQUEST, 0, buf};
  dyn__request_hdr_t r;
  const char *why = NULL;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_OK);
  CHECK_EQ_U64(r.request_id, 0xfeedfacecafebeefull);
  CHECK_EQ_INT(r.deadline_ms, 1234);
  CHECK_EQ_INT(r.path_len, plen);
  CHECK(r.path_len == plen && !memcmp(r.path, path, plen));
  CHECK_EQ_INT(r.body_len, 4);
  CHECK(!memcmp(r.body, "BODY", 4));

  /* No body at all: path fills the payload exactly. */
  f.len = (uint32_t)n;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_OK);
  CHECK_EQ_INT(r.body_len, 0);

  /* Path one byte longer than the payload holds. */
  f.len = (uint32_t)n - 1;
  why = NULL;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_EPROTO);
  CHECK(why != NULL);

  /* Path length 0. */
  n = dyn__request_encode_prefix(buf, 1, 0, "", 0);
  f.len = (uint32_t)n + 3;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_EPROTO);

  /* Path length far past the payload. */
  dyn__request_encode_prefix(buf, 1, 0, "a/b/c", 5);
  dyn__put_u16(buf + 12, 0xffff);
  f.len = 14 + 5;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_EPROTO);

  /* NUL inside the path. */
  n = dyn__request_encode_prefix(buf, 1, 0, "a/b\0c", 5);
  f.len = (uint32_t)n;
  why = NULL;
  CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_EPROTO);
  CHECK(why && strstr(why, "NUL"));

  /* Shorter than the fixed header, down to empty. */
  for (uint32_t len = 0; len < 14; len++) {
    f.len = len;
    CHECK_STATUS(dyn__request_decode(&f, &r, &why), DYN_EPROTO);
  }
}

static void test_buf(void) {
  dyn__buf_t b;
  dyn__buf_init(&b);
  CHECK_EQ_INT(b.len, 0);
  CHECK_STATUS(dyn__buf_append(&b, NULL, 0), DYN_OK);
  CHECK_STATUS(dyn__buf_append(&b, "abcdef", 6), DYN_OK);
  CHECK_EQ_INT(b.len, 6);
  dyn__buf_consume(&b, 2);
  CHECK_EQ_INT(b.len, 4);
  CHECK(!memcmp(b.data, "cdef", 4));
  dyn__buf_consume(&b, 100);
  CHECK_EQ_INT(b.len, 0);
  /* Growth keeps the contents. */
  uint8_t chunk[1000];
  int ok = 1;
  for (int i = 0; i < 300; i++) {
    memset(chunk, i & 0xff, sizeof chunk);
    if (dyn__buf_append(&b, chunk, sizeof chunk)) ok = 0;
  }
  CHECK(ok);
  CHECK_EQ_INT(b.len, 300000);
  CHECK(b.cap >= b.len);
  int same = 1;
  for (int i = 0; i < 300; i++)
    if (b.data[i * 1000] != (i & 0xff) || b.data[i * 1000 + 999] != (i & 0xff)) same = 0;
  CHECK(same);
  CHECK_STATUS(dyn__buf_reserve(&b, SIZE_MAX - 10), DYN_ENOMEM);
  dyn__buf_free(&b);
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
}

static void test_strerror(void) {
  int ok = 1;
  for (int s = 1; s >= -20; s--)
    if (!dyn_strerror(s) || !*dyn_strerror(s)) ok = 0;
  CHECK(ok);
  CHECK(strcmp(dyn_strerror(DYN_EDISCONNECTED), dyn_strerror(DYN_ECONNECT)) != 0);
  CHECK_EQ_STR(dyn_strerror(12345), "unknown status");
}

int main(void) {
  h_init("frame");
  test_ints();
  test_roundtrip();
  test_bad_headers();
  test_hello();
  test_request();
  test_buf();
  test_strerror();
  TEST_END();
}
