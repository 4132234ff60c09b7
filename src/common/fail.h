/* fail.h - error reporting for the CLI's libraries (config, serve,
 * package): format a message into the caller's buffer and return the
 * status code, in one expression. */
#ifndef DYN__COMMON_FAIL_H
#define DYN__COMMON_FAIL_H
#include <stdarg.h>
#include <stdio.h>

static inline int dyn__fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int dyn__fail(char *err, size_t errlen, int code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return code;
}
#endif
