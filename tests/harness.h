/* harness.h - the tiny harness every C test shares.
 *
 * Checks: CHECK(cond) and friends print file:line and the failing
 * expression, count, and go on; REQUIRE(cond) stops the test when nothing
 * after it could mean anything. TEST_END() prints "N passed, N failed" and
 * is the test's return value.
 *
 * Processes: integration tests start a control plane (`dynamo control`) and
 * echo_worker processes. Every child gets PR_SET_PDEATHSIG(SIGKILL), and an
 * atexit handler SIGKILLs whatever is still running and removes the test's
 * temporary directory, so nothing outlives a test, even a failing one. A
 * watchdog alarm turns a hang into a failure before ctest's timeout hits.
 *
 * Waiting: every wait is bounded. PUMP_UNTIL(cond, ms, rt...) drives the
 * given runtimes' loops until cond holds or ms passed, and says which.
 */
#ifndef DYN_TEST_HARNESS_H
#define DYN_TEST_HARNESS_H

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "dynamo/dynamo.h"

#define H_UNUSED __attribute__((unused))

/* Seconds after which a test is declared hung (ctest's TIMEOUT is 60). */
#ifndef H_WATCHDOG_S
#define H_WATCHDOG_S 50
#endif

static int h_passed, h_failed;

#define H_FAIL_(...)                                            \
  do {                                                          \
    h_failed++;                                                 \
    fprintf(stderr, "%s:%d: FAILED: ", __FILE__, __LINE__);     \
    fprintf(stderr, __VA_ARGS__);                               \
    fputc('\n', stderr);                                        \
  } while (0)

#define CHECK(cond)                          \
  do {                                       \
    if (cond) h_passed++;                    \
    else H_FAIL_("CHECK(%s)", #cond);        \
  } while (0)

/* CHECK with a printf-style explanation printed on failure. */
#define CHECK_MSG(cond, ...)                                      \
  do {                                                            \
    if (cond) {                                                   \
      h_passed++;                                                 \
    } else {                                                      \
      H_FAIL_("CHECK(%s)", #cond);                                \
      fprintf(stderr, "    ");                                    \
      fprintf(stderr, __VA_ARGS__);                               \
      fputc('\n', stderr);                                        \
    }                                                             \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                  \
  do {                                                                      \
    long long h_a_ = (long long)(a), h_b_ = (long long)(b);                 \
    if (h_a_ == h_b_) h_passed++;                                           \
    else H_FAIL_("CHECK_EQ_INT(%s, %s): %lld != %lld", #a, #b, h_a_, h_b_); \
  } while (0)

#define CHECK_NE_INT(a, b)                                                  \
  do {                                                                      \
    long long h_a_ = (long long)(a), h_b_ = (long long)(b);                 \
    if (h_a_ != h_b_) h_passed++;                                           \
    else H_FAIL_("CHECK_NE_INT(%s, %s): both %lld", #a, #b, h_a_);          \
  } while (0)

#define CHECK_LE_INT(a, b)                                                  \
  do {                                                                      \
    long long h_a_ = (long long)(a), h_b_ = (long long)(b);                 \
    if (h_a_ <= h_b_) h_passed++;                                           \
    else H_FAIL_("CHECK_LE_INT(%s, %s): %lld > %lld", #a, #b, h_a_, h_b_);  \
  } while (0)

#define CHECK_EQ_U64(a, b)                                                  \
  do {                                                                      \
    uint64_t h_a_ = (uint64_t)(a), h_b_ = (uint64_t)(b);                    \
    if (h_a_ == h_b_) h_passed++;                                           \
    else H_FAIL_("CHECK_EQ_U64(%s, %s): %" PRIx64 " != %" PRIx64, #a, #b,   \
                 h_a_, h_b_);                                               \
  } while (0)

/* Status codes, printed with their names so a failure reads by itself. */
#define CHECK_STATUS(a, b)                                                  \
  do {                                                                      \
    int h_a_ = (int)(a), h_b_ = (int)(b);                                   \
    if (h_a_ == h_b_) h_passed++;                                           \
    else H_FAIL_("CHECK_STATUS(%s, %s): %d (%s) != %d (%s)", #a, #b, h_a_,  \
                 dyn_strerror(h_a_), h_b_, dyn_strerror(h_b_));             \
  } while (0)

#define CHECK_EQ_STR(a, b)                                                  \
  do {                                                                      \
    const char *h_a_ = (a), *h_b_ = (b);                                    \
    if (h_a_ && h_b_ && !strcmp(h_a_, h_b_)) h_passed++;                    \
    else H_FAIL_("CHECK_EQ_STR(%s, %s): \"%s\" != \"%s\"", #a, #b,          \
                 h_a_ ? h_a_ : "(null)", h_b_ ? h_b_ : "(null)");           \
  } while (0)

/* A test that made no check at all proves nothing: it fails. */
static H_UNUSED int h_summary(void) {
  if (h_passed + h_failed == 0) {
    fprintf(stderr, "FAIL: the test made no check\n");
    h_failed = 1;
  }
  printf("%d passed, %d failed\n", h_passed, h_failed);
  fflush(stdout);
  return h_failed ? 1 : 0;
}

/* Stops the test (atexit still cleans up) when cond fails. */
#define REQUIRE(cond)                                      \
  do {                                                     \
    if (cond) {                                            \
      h_passed++;                                          \
    } else {                                               \
      H_FAIL_("REQUIRE(%s), stopping", #cond);             \
      h_summary();                                         \
      exit(1);                                             \
    }                                                      \
  } while (0)

#define TEST_END() return h_summary()

/* ---- time -------------------------------------------------------------- */

static H_UNUSED uint64_t h_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static H_UNUSED double h_now_ms_f(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static H_UNUSED void h_sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) && errno == EINTR) {}
}

/* ---- children and cleanup ---------------------------------------------- */

#define H_MAX_CHILDREN 64
static pid_t h_children[H_MAX_CHILDREN];
static int h_nchildren;
static char h_dir[64];
static char h_sock[100]; /* fits sockaddr_un's sun_path */
static pid_t h_parent;
static pid_t h_control_pid; /* killed last, so workers leave quietly */

static void h_forget_child(pid_t pid) {
  for (int i = 0; i < h_nchildren; i++)
    if (h_children[i] == pid) h_children[i] = 0;
  if (h_control_pid == pid) h_control_pid = 0;
}

static int h_rm_one(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw) {
  (void)st;
  (void)flag;
  (void)ftw;
  remove(path);
  return 0;
}

static void h_cleanup(void) {
  if (getpid() != h_parent) return; /* a forked child that failed to exec */
  /* Workers go before the control plane they report to. */
  for (int i = h_nchildren - 1; i >= 0; i--) {
    if (h_children[i] <= 0 || h_children[i] == h_control_pid) continue;
    kill(h_children[i], SIGKILL);
    waitpid(h_children[i], NULL, 0);
    h_children[i] = 0;
  }
  if (h_control_pid > 0) {
    kill(h_control_pid, SIGKILL);
    waitpid(h_control_pid, NULL, 0);
  }
  if (h_dir[0]) {
    nftw(h_dir, h_rm_one, 16, FTW_DEPTH | FTW_PHYS);
    h_dir[0] = 0;
  }
}

/* Only async-signal-safe calls: a hung test must still die cleanly. */
static void h_on_alarm(int sig) {
  (void)sig;
  static const char msg[] = "harness: watchdog: test hung, killing it\n";
  ssize_t w = write(2, msg, sizeof msg - 1);
  (void)w;
  for (int i = 0; i < h_nchildren; i++)
    if (h_children[i] > 0) kill(h_children[i], SIGKILL);
  if (h_dir[0]) {
    pid_t p = fork();
    if (p == 0) {
      execl("/bin/rm", "rm", "-rf", h_dir, (char *)NULL);
      _exit(127);
    }
  }
  _exit(3);
}

/* Call first in main: temp dir, cleanup, watchdog. */
static H_UNUSED void h_init(const char *name) {
  h_parent = getpid();
  signal(SIGPIPE, SIG_IGN);
  setvbuf(stdout, NULL, _IOLBF, 0);
  snprintf(h_dir, sizeof h_dir, "/tmp/dyntest-%s-XXXXXX", name);
  if (!mkdtemp(h_dir)) {
    perror("mkdtemp");
    exit(2);
  }
  atexit(h_cleanup);
  signal(SIGALRM, h_on_alarm);
  alarm(H_WATCHDOG_S);
  /* The control socket of this test, whether or not it starts one; tests
   * run in parallel, so it must never be the per-user default. */
  snprintf(h_sock, sizeof h_sock, "%s/control.sock", h_dir);
  setenv("DYN_CONTROL_SOCKET", h_sock, 1);
}

/* Forks and execs argv with stdout/stderr redirected (-1: inherit; for
 * stderr a path may be given instead). The child dies with this process. */
static H_UNUSED pid_t h_spawn(char *const argv[], int out_fd, const char *err_path) {
  fflush(stdout);
  fflush(stderr);
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    return -1;
  }
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127); /* the parent died already */
    if (out_fd >= 0) dup2(out_fd, 1);
    if (err_path) {
      int fd = open(err_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
      if (fd >= 0) dup2(fd, 2);
    }
    execv(argv[0], argv);
    fprintf(stderr, "harness: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  if (h_nchildren < H_MAX_CHILDREN) h_children[h_nchildren++] = pid;
  return pid;
}

static H_UNUSED int h_kill(pid_t pid, int sig) { return kill(pid, sig); }

/* Waits up to timeout_ms for pid to exit; 0 and *status, or -1. */
static H_UNUSED int h_wait_exit(pid_t pid, int timeout_ms, int *status) {
  uint64_t end = h_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      h_forget_child(pid);
      if (status) *status = st;
      return 0;
    }
    if (r < 0 || h_now_ms() >= end) return -1;
    h_sleep_ms(2);
  }
}

/* SIGKILL and reap. */
static H_UNUSED void h_kill9(pid_t pid) {
  kill(pid, SIGKILL);
  h_wait_exit(pid, 5000, NULL);
}

static H_UNUSED int h_unix_alive(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  struct sockaddr_un sa;
  memset(&sa, 0, sizeof sa);
  sa.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof sa.sun_path) {
    close(fd);
    return 0;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

/* Starts `dynamo control` on this test's socket and waits (5 s at most)
 * until it accepts connections. Returns its pid, or -1. */
static H_UNUSED pid_t h_start_control(void) {
  char *argv[] = {(char *)DYN_BIN, (char *)"control", (char *)"--socket", h_sock, NULL};
  int devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
  pid_t pid = h_spawn(argv, devnull, NULL);
  if (devnull >= 0) close(devnull);
  if (pid < 0) return -1;
  uint64_t end = h_now_ms() + 5000;
  while (h_now_ms() < end) {
    if (h_unix_alive(h_sock)) return h_control_pid = pid;
    if (waitpid(pid, NULL, WNOHANG) == pid) {
      h_forget_child(pid);
      fprintf(stderr, "harness: dynamo control exited at start\n");
      return -1;
    }
    h_sleep_ms(5);
  }
  fprintf(stderr, "harness: dynamo control did not listen within 5 s\n");
  return -1;
}

typedef struct h_worker {
  pid_t pid;
  uint64_t id;
  char addr[96];
} h_worker_t;

/* Starts echo_worker serving NS/echo/generate and reads its "ready" line
 * (5 s at most). err_path: where its stderr goes (NULL: inherited). */
static H_UNUSED int h_start_worker(const char *ns, const char *err_path, h_worker_t *w) {
  memset(w, 0, sizeof *w);
  int p[2];
  if (pipe2(p, O_CLOEXEC)) return -1;
  char *argv[] = {(char *)ECHO_WORKER, (char *)ns, NULL};
  w->pid = h_spawn(argv, p[1], err_path);
  close(p[1]);
  if (w->pid < 0) {
    close(p[0]);
    return -1;
  }
  char line[256];
  size_t n = 0;
  uint64_t end = h_now_ms() + 5000;
  while (n < sizeof line - 1 && !memchr(line, '\n', n)) {
    uint64_t now = h_now_ms();
    if (now >= end) break;
    struct pollfd pf = {p[0], POLLIN, 0};
    if (poll(&pf, 1, (int)(end - now)) <= 0) continue;
    ssize_t r = read(p[0], line + n, sizeof line - 1 - n);
    if (r <= 0) break;
    n += (size_t)r;
  }
  close(p[0]);
  line[n] = 0;
  unsigned long long id = 0;
  if (sscanf(line, "ready %llx %95s", &id, w->addr) != 2) {
    fprintf(stderr, "harness: echo_worker %s did not get ready (got \"%s\")\n", ns, line);
    h_kill9(w->pid);
    w->pid = -1;
    return -1;
  }
  w->id = (uint64_t)id;
  return 0;
}

/* ---- driving runtimes -------------------------------------------------- */

static H_UNUSED void h_pump_once(dyn_runtime_t **rts, int n) {
  for (int i = 0; i < n; i++) dyn_runtime_poll(rts[i]);
}

/* Sleeps until one of the loops has I/O ready, 1 ms at most. */
static H_UNUSED void h_pump_wait(dyn_runtime_t **rts, int n) {
  struct pollfd pf[8];
  int k = 0;
  for (int i = 0; i < n && k < 8; i++) {
    pf[k].fd = dyn_runtime_backend_fd(rts[i]);
    pf[k].events = POLLIN;
    pf[k].revents = 0;
    k++;
  }
  poll(pf, (nfds_t)k, 1);
}

/* Drives the runtimes given after ms until cond holds (1) or ms passed (0). */
#define PUMP_UNTIL(cond, ms, ...)                                      \
  ({                                                                   \
    dyn_runtime_t *h_rts_[] = {__VA_ARGS__};                           \
    int h_n_ = (int)(sizeof h_rts_ / sizeof h_rts_[0]);                \
    uint64_t h_end_ = h_now_ms() + (uint64_t)(ms);                     \
    int h_ok_ = 0;                                                     \
    for (;;) {                                                         \
      h_pump_once(h_rts_, h_n_);                                       \
      if (cond) {                                                      \
        h_ok_ = 1;                                                     \
        break;                                                         \
      }                                                                \
      if (h_now_ms() >= h_end_) break;                                 \
      h_pump_wait(h_rts_, h_n_);                                       \
    }                                                                  \
    h_ok_;                                                             \
  })

/* Drives the runtimes for ms, letting things settle. */
#define PUMP_FOR(ms, ...) ((void)PUMP_UNTIL(0, ms, __VA_ARGS__))

/* A runtime on this test's control plane (loop: NULL for its own). */
static H_UNUSED dyn_runtime_t *h_runtime(uv_loop_t *loop) {
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  o.loop = loop;
  dyn_runtime_t *rt = NULL;
  int rc = dyn_runtime_create(&o, &rt);
  if (rc) {
    fprintf(stderr, "harness: dyn_runtime_create: %s\n", dyn_strerror(rc));
    return NULL;
  }
  return rt;
}

/* ---- one call, recorded -------------------------------------------------- */

#define H_CALL_MSGS 64
typedef struct h_call {
  int done;
  int status;
  char message[256];
  int ndata;
  char data[H_CALL_MSGS][64];
  uint64_t instance;
  double t_done; /* h_now_ms_f() at on_done */
} h_call_t;

static void h_call_on_data(dyn_stream_t *s, const void *data, size_t len, void *ud) {
  h_call_t *hc = ud;
  if (hc->ndata < H_CALL_MSGS) {
    size_t n = len < 63 ? len : 63;
    memcpy(hc->data[hc->ndata], data, n);
    hc->data[hc->ndata][n] = 0;
  }
  hc->ndata++;
}

static void h_call_on_done(dyn_stream_t *s, int status, const char *message, void *ud) {
  h_call_t *hc = ud;
  hc->done++;
  hc->status = status;
  hc->instance = dyn_stream_instance_id(s);
  hc->t_done = h_now_ms_f();
  snprintf(hc->message, sizeof hc->message, "%s", message ? message : "");
}

static H_UNUSED const dyn_stream_callbacks_t h_call_cb = {h_call_on_data, h_call_on_done};

/* Starts a call recorded into hc (route given; other options zero). */
static H_UNUSED int h_call_start(dyn_client_t *c, dyn_route_t route, uint64_t id,
                                 const char *body, h_call_t *hc, dyn_stream_t **out) {
  memset(hc, 0, sizeof *hc);
  dyn_call_options_t o = {route, id, 0, 0};
  return dyn_client_generate(c, &o, body, strlen(body), &h_call_cb, hc, out);
}

/* Starts a call and drives rt until it ends (timeout_ms at most): returns
 * the generate error, or DYN_ETIMEDOUT if it never ended, else DYN_OK with
 * the outcome in hc. */
static H_UNUSED int h_call(dyn_runtime_t *rt, dyn_client_t *c, dyn_route_t route,
                           uint64_t id, const char *body, h_call_t *hc, int timeout_ms) {
  int rc = h_call_start(c, route, id, body, hc, NULL);
  if (rc) return rc;
  return PUMP_UNTIL(hc->done, timeout_ms, rt) ? DYN_OK : DYN_ETIMEDOUT;
}

/* Whether the file at path contains needle (how many times in *count). */
static H_UNUSED int h_file_count(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char line[2048];
  int n = 0;
  while (fgets(line, sizeof line, f))
    for (const char *p = line; (p = strstr(p, needle)); p += strlen(needle)) n++;
  fclose(f);
  return n;
}

/* ---- raw sockets, for speaking (or breaking) the protocol by hand ------ */

/* Connects a blocking TCP socket to "host:port"; -1 on failure. */
static H_UNUSED int h_tcp_connect(const char *addr) {
  char host[64];
  const char *colon = strrchr(addr, ':');
  if (!colon || (size_t)(colon - addr) >= sizeof host) return -1;
  memcpy(host, addr, (size_t)(colon - addr));
  host[colon - addr] = 0;
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)atoi(colon + 1));
  if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return -1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa)) {
    close(fd);
    return -1;
  }
  return fd;
}

static H_UNUSED int h_send_all(int fd, const void *p, size_t n) {
  const char *c = p;
  while (n) {
    ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    c += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Sends one frame: 12-byte header (reserved bytes zero), then payload. */
static H_UNUSED int h_send_frame(int fd, uint8_t type, uint8_t flags, uint32_t stream,
                                 uint32_t len, const void *payload, size_t plen) {
  uint8_t hdr[12];
  for (int i = 0; i < 4; i++) hdr[i] = (uint8_t)(len >> (8 * i));
  for (int i = 0; i < 4; i++) hdr[4 + i] = (uint8_t)(stream >> (8 * i));
  hdr[8] = type;
  hdr[9] = flags;
  hdr[10] = hdr[11] = 0;
  if (h_send_all(fd, hdr, sizeof hdr)) return -1;
  return plen ? h_send_all(fd, payload, plen) : 0;
}

/* A HELLO of the given version and role (1 client, 2 server). */
static H_UNUSED int h_send_hello_as(int fd, uint16_t version, uint8_t role) {
  uint8_t p[16] = {'D', 'Y', 'N', 'M', (uint8_t)version, (uint8_t)(version >> 8), role, 0};
  return h_send_frame(fd, 1, 0, 0, sizeof p, p, sizeof p);
}

/* A client HELLO: magic, version, role client, session 0. */
static H_UNUSED int h_send_hello(int fd, uint16_t version) {
  return h_send_hello_as(fd, version, 1);
}

/* Reads exactly n bytes within the deadline: n, 0 at EOF, -1 on error or
 * timeout (errno ETIMEDOUT). */
static H_UNUSED ssize_t h_read_full(int fd, void *p, size_t n, uint64_t deadline) {
  size_t got = 0;
  while (got < n) {
    uint64_t now = h_now_ms();
    if (now >= deadline) {
      errno = ETIMEDOUT;
      return -1;
    }
    struct pollfd pf = {fd, POLLIN, 0};
    int pr = poll(&pf, 1, (int)(deadline - now));
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) continue;
    ssize_t r = recv(fd, (char *)p + got, n - got, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) return 0;
    got += (size_t)r;
  }
  return (ssize_t)got;
}

typedef struct h_frame {
  uint32_t len, stream;
  uint8_t type, flags;
  char payload[4096]; /* NUL-terminated, truncated */
} h_frame_t;

/* Reads one frame: 1, 0 at a clean EOF, -1 on error / timeout. */
static H_UNUSED int h_read_frame(int fd, h_frame_t *f, int timeout_ms) {
  uint64_t deadline = h_now_ms() + (uint64_t)timeout_ms;
  uint8_t hdr[12];
  ssize_t r = h_read_full(fd, hdr, sizeof hdr, deadline);
  if (r <= 0) return (int)r;
  f->len = (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 |
           (uint32_t)hdr[3] << 24;
  f->stream = (uint32_t)hdr[4] | (uint32_t)hdr[5] << 8 | (uint32_t)hdr[6] << 16 |
              (uint32_t)hdr[7] << 24;
  f->type = hdr[8];
  f->flags = hdr[9];
  size_t keep = f->len < sizeof f->payload - 1 ? f->len : sizeof f->payload - 1;
  if (keep && h_read_full(fd, f->payload, keep, deadline) != (ssize_t)keep) return -1;
  f->payload[keep] = 0;
  for (size_t skip = f->len - keep; skip;) {
    char junk[4096];
    size_t k = skip < sizeof junk ? skip : sizeof junk;
    if (h_read_full(fd, junk, k, deadline) != (ssize_t)k) return -1;
    skip -= k;
  }
  return 1;
}

/* Waits for the peer to close: 1 at EOF or reset, 0 if it stays open. */
static H_UNUSED int h_wait_closed(int fd, int timeout_ms) {
  uint64_t deadline = h_now_ms() + (uint64_t)timeout_ms;
  for (;;) {
    char buf[4096];
    uint64_t now = h_now_ms();
    if (now >= deadline) return 0;
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, (int)(deadline - now)) <= 0) continue;
    ssize_t r = recv(fd, buf, sizeof buf, 0);
    if (r == 0 || (r < 0 && (errno == ECONNRESET || errno == EPIPE))) return 1;
    if (r < 0 && errno != EINTR && errno != EAGAIN) return 1;
  }
}

/* A REQUEST payload: request id, deadline, path, body. */
static H_UNUSED int h_send_request(int fd, uint32_t stream, const char *path, const char *body) {
  uint8_t p[1024];
  size_t pl = strlen(path), bl = strlen(body);
  if (14 + pl + bl > sizeof p) return -1;
  memset(p, 0, 14);
  p[0] = (uint8_t)stream;
  p[12] = (uint8_t)pl;
  p[13] = (uint8_t)(pl >> 8);
  memcpy(p + 14, path, pl);
  memcpy(p + 14 + pl, body, bl);
  return h_send_frame(fd, 2, 0, stream, (uint32_t)(14 + pl + bl), p, 14 + pl + bl);
}

#endif
