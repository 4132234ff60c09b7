/* tcp_pingpong.c - the floor: raw blocking loopback TCP ping-pong.
 *
 * A forked child echoes every 64-byte message back; the parent sends one
 * 64-byte message, reads the 64-byte answer, and times each round trip with
 * CLOCK_MONOTONIC. TCP_NODELAY on both sides, no framing, no event loop:
 * nothing a request plane can do over loopback TCP is cheaper than this.
 *
 * usage: tcp_pingpong [iterations=20000]
 * prints: RESULT name=tcp_pingpong p50_us=X p99_us=Y
 */
#define _GNU_SOURCE
#include "bench.h"
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 64
#define WARMUP 1000

static int full_io(int fd, void *buf, size_t len, int is_write) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = is_write ? write(fd, (char *)buf + done, len - done)
                         : read(fd, (char *)buf + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    done += (size_t)n;
  }
  return 0;
}

static void nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}


static void serve(int lfd) {
  int fd = accept(lfd, NULL, NULL);
  close(lfd);
  if (fd < 0) _exit(1);
  nodelay(fd);
  char buf[MSG];
  while (full_io(fd, buf, MSG, 0) == 0)
    if (full_io(fd, buf, MSG, 1) != 0) break;
  close(fd);
  _exit(0);
}

int main(int argc, char **argv) {
  long iters = argc > 1 ? strtol(argv[1], NULL, 10) : 20000;
  if (iters <= 0) iters = 20000;

  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  if (lfd < 0) { perror("socket"); return 1; }
  int one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in addr;
  memset(&addr, 0, sizeof addr);
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t alen = sizeof addr;
  if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
      listen(lfd, 1) != 0 ||
      getsockname(lfd, (struct sockaddr *)&addr, &alen) != 0) {
    perror("bind/listen");
    return 1;
  }

  pid_t child = fork();
  if (child < 0) { perror("fork"); return 1; }
  if (child == 0) serve(lfd);
  close(lfd);

  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
    perror("connect");
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    return 1;
  }
  nodelay(fd);

  double *lat = malloc((size_t)iters * sizeof *lat);
  if (!lat) { kill(child, SIGKILL); waitpid(child, NULL, 0); return 1; }
  char out[MSG], in[MSG];
  memset(out, 'x', sizeof out);
  int rc = 0;
  for (long i = 0; i < WARMUP + iters; i++) {
    double t0 = now_us();
    if (full_io(fd, out, MSG, 1) != 0 || full_io(fd, in, MSG, 0) != 0) {
      fprintf(stderr, "tcp_pingpong: io failed at %ld: %s\n", i, strerror(errno));
      rc = 1;
      break;
    }
    double t1 = now_us();
    if (i >= WARMUP) lat[i - WARMUP] = t1 - t0;
  }
  close(fd); /* the child sees EOF and exits */
  int st = 0;
  if (waitpid(child, &st, 0) < 0) kill(child, SIGKILL);

  if (rc == 0) {
    bench_print_latency("tcp_pingpong", lat, iters);
  }
  free(lat);
  return rc;
}
