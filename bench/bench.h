/* bench.h - what every latency benchmark here shares: a monotonic clock in
 * microseconds and the one way results are printed (RESULT lines that
 * bench/run.sh reads). */
#ifndef DYN_BENCH_H
#define DYN_BENCH_H
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y ? 1 : 0;
}

/* Sorts lat[0..n) and prints "RESULT name=NAME p50_us=.. p99_us=..". */
static inline void bench_print_latency(const char *name, double *lat, long n) {
  qsort(lat, (size_t)n, sizeof *lat, bench_cmp_double);
  printf("RESULT name=%s p50_us=%.2f p99_us=%.2f\n", name, lat[(size_t)(n * 50 / 100)],
         lat[(size_t)(n * 99 / 100)]);
}
#endif
