/* test_malformed.c - bad bytes close only the connection that sent them.
 *
 * Raw sockets send the worker things that are not dynamo (HTTP), frames
 * too big to accept, broken REQUEST prefixes, unknown types, a HELLO of
 * another version or from a server; each must be closed (with a log line naming the peer),
 * while a dynamo client's stream on its own connection runs on untouched.
 * Frames split into single bytes must still work. The control plane gets
 * the same treatment on its Unix socket.
 */
#include "harness.h"

static dyn_runtime_t *rt;
static dyn_client_t *c;
static h_worker_t w;
static char err_path[256];

static int call_ok(const char *tag) {
  h_call_t hc;
  char body[64];
  snprintf(body, sizeof body, "3 0 %s", tag);
  int rc = h_call(rt, c, DYN_ROUTE_RANDOM, 0, body, &hc, 3000);
  return rc == DYN_OK && hc.status == DYN_OK && hc.ndata == 3;
}

/* Sends bytes on a fresh connection and expects the server to hang up. */
static int closes_after(const char *what, const void *bytes, size_t n, int hello_first) {
  int fd = h_tcp_connect(w.addr);
  if (fd < 0) return 0;
  if (hello_first) h_send_hello(fd, 1);
  if (n) h_send_all(fd, bytes, n);
  int closed = h_wait_closed(fd, 3000);
  close(fd);
  if (!closed) fprintf(stderr, "%s: the server kept the connection open\n", what);
  return closed;
}

static void put_hdr(uint8_t *h, uint32_t len, uint32_t stream, uint8_t type) {
  for (int i = 0; i < 4; i++) h[i] = (uint8_t)(len >> (8 * i));
  for (int i = 0; i < 4; i++) h[4 + i] = (uint8_t)(stream >> (8 * i));
  h[8] = type;
  h[9] = h[10] = h[11] = 0;
}

static void test_garbage(void) {
  /* A long stream on the client's own connection, across all of it. */
  h_call_t keep;
  CHECK_STATUS(h_call_start(c, DYN_ROUTE_RANDOM, 0, "20 20 keep", &keep, NULL), DYN_OK);
  CHECK(PUMP_UNTIL(keep.ndata >= 1, 3000, rt));
  CHECK(call_ok("before"));

  const char *http = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  CHECK(closes_after("http", http, strlen(http), 0));

  uint8_t h[32];
  put_hdr(h, 1u << 30, 1, 3); /* DATA claiming 1 GiB */
  CHECK(closes_after("1 GiB frame after HELLO", h, 12, 1));
  put_hdr(h, 1u << 30, 0, 1); /* a HELLO claiming 1 GiB */
  CHECK(closes_after("1 GiB HELLO", h, 12, 0));
  put_hdr(h, 0, 1, 9); /* unknown type */
  CHECK(closes_after("unknown type", h, 12, 1));
  put_hdr(h, 0, 1, 4); /* a caller may not send END */
  CHECK(closes_after("END from a caller", h, 12, 1));
  put_hdr(h, 0, 1, 3);
  h[10] = 1; /* reserved bits */
  CHECK(closes_after("reserved bits", h, 12, 1));
  /* REQUEST whose path length runs past the payload. */
  put_hdr(h, 16, 1, 2);
  memset(h + 12, 0, 16);
  h[12 + 12] = 200;
  CHECK(closes_after("path past payload", h, 28, 1));
  /* REQUEST shorter than its fixed header. */
  put_hdr(h, 5, 1, 2);
  CHECK(closes_after("short request", h, 17, 1));
  /* Stream id reused while open. */
  {
    int fd = h_tcp_connect(w.addr);
    REQUIRE(fd >= 0);
    h_send_hello(fd, 1);
    h_send_request(fd, 5, "malformed/echo/generate", "100 50 dup");
    h_send_request(fd, 5, "malformed/echo/generate", "100 50 dup");
    CHECK(h_wait_closed(fd, 3000));
    close(fd);
  }
  /* Stream id 0. */
  {
    int fd = h_tcp_connect(w.addr);
    REQUIRE(fd >= 0);
    h_send_hello(fd, 1);
    h_send_request(fd, 0, "malformed/echo/generate", "1 0 zero");
    CHECK(h_wait_closed(fd, 3000));
    close(fd);
  }

  /* Another protocol version: told why in an ERROR frame, then closed. */
  int fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 2);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 5);
  CHECK_MSG(strstr(f.payload, "version") != NULL, "error: %s", f.payload);
  CHECK(h_wait_closed(fd, 3000));
  close(fd);

  /* A peer that says HELLO as a server (two servers wired together):
   * the role is checked, and the reason comes back before the close. */
  fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  h_send_hello_as(fd, 1, 2);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 5);
  CHECK_MSG(strstr(f.payload, "server's HELLO") != NULL, "error: %s", f.payload);
  CHECK(h_wait_closed(fd, 3000));
  close(fd);

  /* An unknown path is refused on its stream; the connection stays. */
  fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 1);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 1);
  h_send_request(fd, 3, "malformed/echo/nothing", "1 0 x");
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 5);
  CHECK_EQ_INT(f.stream, 3);
  CHECK(f.flags & 1); /* nothing ran: safe to retry elsewhere */
  CHECK(strstr(f.payload, "malformed/echo/nothing") != NULL);
  h_send_request(fd, 4, "malformed/echo/generate", "1 0 still");
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 3);
  CHECK_EQ_STR(f.payload, "still-0");
  close(fd);

  /* The client's stream never noticed. */
  CHECK(PUMP_UNTIL(keep.done, 3000, rt));
  CHECK_STATUS(keep.status, DYN_OK);
  CHECK_EQ_INT(keep.ndata, 20);
  CHECK(call_ok("after"));

  int lines = h_file_count(err_path, "closing connection from 127.0.0.1:");
  printf("worker logged %d 'closing connection from 127.0.0.1:' lines\n", lines);
  CHECK_LE_INT(10, lines);
}

/* One byte at a time: the reader reassembles frames from any split. */
static void test_byte_by_byte(void) {
  int fd = h_tcp_connect(w.addr);
  REQUIRE(fd >= 0);
  uint8_t buf[256];
  size_t n = 0;
  uint8_t hello[16] = {'D', 'Y', 'N', 'M', 1, 0, 1, 0};
  put_hdr(buf, 16, 0, 1);
  memcpy(buf + 12, hello, 16);
  n = 28;
  const char *path = "malformed/echo/generate", *body = "2 0 bytes";
  size_t pl = strlen(path), bl = strlen(body);
  put_hdr(buf + n, (uint32_t)(14 + pl + bl), 9, 2);
  memset(buf + n + 12, 0, 14);
  buf[n + 12 + 12] = (uint8_t)pl;
  memcpy(buf + n + 26, path, pl);
  memcpy(buf + n + 26 + pl, body, bl);
  n += 26 + pl + bl;
  int sent = 1;
  for (size_t i = 0; i < n; i++) {
    if (h_send_all(fd, buf + i, 1)) sent = 0;
    if (i % 7 == 0) h_sleep_ms(1);
  }
  CHECK(sent);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 1);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_STR(f.payload, "bytes-0");
  CHECK_EQ_INT(f.stream, 9);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_STR(f.payload, "bytes-1");
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 4);
  close(fd);
}

static int unix_connect(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path, strlen(path) + 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

/* The control plane: garbage closes that session only. */
static void test_control_garbage(void) {
  const char *junk = "PING PING PING PING\r\n";
  int fd = unix_connect(h_sock);
  REQUIRE(fd >= 0);
  h_send_all(fd, junk, strlen(junk));
  CHECK(h_wait_closed(fd, 3000));
  close(fd);

  /* After HELLO: a frame type the control plane does not take, an
   * oversize frame, a PUT whose key length lies. */
  uint8_t h[64];
  fd = unix_connect(h_sock);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 1);
  put_hdr(h, 0, 1, 3); /* DATA */
  h_send_all(fd, h, 12);
  CHECK(h_wait_closed(fd, 3000));
  close(fd);

  fd = unix_connect(h_sock);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 1);
  put_hdr(h, 0x7fffffff, 1, 16);
  h_send_all(fd, h, 12);
  CHECK(h_wait_closed(fd, 3000));
  close(fd);

  /* A PUT with a lying key length is refused with an ERROR, no more. */
  fd = unix_connect(h_sock);
  REQUIRE(fd >= 0);
  h_send_hello(fd, 1);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 1);
  put_hdr(h, 4, 5, 16);
  h[12] = 200;
  h[13] = 0;
  h[14] = 'k';
  h[15] = 'v';
  h_send_all(fd, h, 16);
  CHECK_EQ_INT(h_read_frame(fd, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 5);
  CHECK_EQ_INT(f.stream, 5);
  close(fd);

  /* Discovery still works: the worker is still listed, requests flow. */
  uint64_t id = 0;
  PUMP_FOR(50, rt);
  CHECK_EQ_INT(dyn_client_instances(c, &id, 1), 1);
  CHECK_EQ_U64(id, w.id);
  CHECK(call_ok("control"));
}

/* A caller that never says HELLO, or stops in the middle of a frame, is
 * closed after DYN_STALL_MS (600 ms here); one idle between frames is not. */
static void test_stalled_callers(void) {
  double t0 = h_now_ms_f();
  int silent = h_tcp_connect(w.addr);
  REQUIRE(silent >= 0);
  int partial = h_tcp_connect(w.addr);
  REQUIRE(partial >= 0);
  h_send_hello(partial, 1);
  h_frame_t f;
  CHECK_EQ_INT(h_read_frame(partial, &f, 3000), 1); /* its HELLO */
  CHECK(write(partial, "\x10\x00\x00", 3) == 3); /* a quarter of a header */
  int idle = h_tcp_connect(w.addr);
  REQUIRE(idle >= 0);
  h_send_hello(idle, 1);
  CHECK_EQ_INT(h_read_frame(idle, &f, 3000), 1);
  CHECK(h_wait_closed(silent, 3000));
  CHECK(h_wait_closed(partial, 3000));
  double ms = h_now_ms_f() - t0;
  printf("measured: stalled callers closed after %.0f ms (limit 600 ms)\n", ms);
  CHECK_MSG(ms >= 500.0 && ms < 3000.0, "closed after %.0f ms", ms);
  /* The idle one still works. */
  h_send_request(idle, 1, "malformed/echo/generate", "1 0 idle");
  CHECK_EQ_INT(h_read_frame(idle, &f, 3000), 1);
  CHECK_EQ_INT(f.type, 3);
  close(silent);
  close(partial);
  close(idle);
  CHECK(h_file_count(err_path, "no HELLO in time") >= 1);
  CHECK(h_file_count(err_path, "stalled in the middle of a frame") >= 1);
}

int main(void) {
  h_init("malformed");
  setenv("DYN_STALL_MS", "600", 1); /* the worker inherits it */
  REQUIRE(h_start_control() > 0);
  snprintf(err_path, sizeof err_path, "%s/worker.err", h_dir);
  REQUIRE(h_start_worker("malformed", err_path, &w) == 0);
  rt = h_runtime(NULL);
  REQUIRE(rt);
  dyn_endpoint_t *ep;
  REQUIRE(dyn_runtime_endpoint(rt, "malformed/echo/generate", &ep) == DYN_OK);
  REQUIRE(dyn_endpoint_client(ep, &c) == DYN_OK);
  REQUIRE(dyn_client_wait(c, 1, 5000) == DYN_OK);

  test_garbage();
  test_byte_by_byte();
  test_control_garbage();
  test_stalled_callers();

  dyn_client_free(c);
  dyn_runtime_destroy(rt);
  TEST_END();
}
