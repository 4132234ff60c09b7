/* json_escape.h - writing a JSON string literal: the one escaper.
 *
 * JSON text the project writes by hand (HTTP error bodies, OpenAI response
 * chunks on the streaming hot path) puts arbitrary text inside quotes:
 * error messages that quote client input, model output cut at any byte.
 * Valid UTF-8 passes through as is, so "é" stays "é" (not "\u00c3\u00a9",
 * which is two other characters); '"', '\\' and the control characters
 * are escaped; bytes that are not valid UTF-8 become "\ufffd" (U+FFFD,
 * one per maximal invalid subsequence, as common/utf8.h repairs), so the
 * output is always valid JSON.
 */
#ifndef DYN__JSON_ESCAPE_H
#define DYN__JSON_ESCAPE_H
#include <stddef.h>

#include "common/buf.h"

/* Appends s[0..n) as a JSON string literal, quotes included. NULs inside
 * are text (\u0000). DYN_OK or DYN_ENOMEM (b unchanged). */
int dyn__json_escape(dyn__buf_t *b, const char *s, size_t n);
#endif
