/* log.c - leveled logging to stderr. Level from DYN_LOG, read once. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/env_names.h"
#include "dynamo/runtime.h"

static int level_from_env(void) {
  const char *s = getenv(DYN_ENV_LOG);
  if (!s) return DYN_LOG_WARN;
  if (!strcmp(s, "error")) return DYN_LOG_ERROR;
  if (!strcmp(s, "info")) return DYN_LOG_INFO;
  if (!strcmp(s, "debug")) return DYN_LOG_DEBUG;
  return DYN_LOG_WARN;
}

void dyn_log(dyn_log_level_t level, const char *fmt, ...) {
  static int max_level = -1;
  if (max_level < 0) max_level = level_from_env();
  if ((int)level > max_level) return;
  static const char *names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
  char line[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  /* One write per line so lines of concurrent processes never interleave. */
  char out[1100];
  int n = snprintf(out, sizeof out, "dynamo[%d] %s %s\n", (int)getpid(),
                   names[level], line);
  if (n > 0) {
    ssize_t w = write(2, out, (size_t)n < sizeof out ? (size_t)n : sizeof out - 1);
    (void)w;
  }
}
