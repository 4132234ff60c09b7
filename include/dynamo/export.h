/* dynamo/export.h - DYN_EXTERN marks the public API, as libuv's UV_EXTERN.
 *
 * The libraries are built with hidden visibility, so each exports exactly
 * the functions and objects its headers declare with this mark; the rest
 * (every dyn__ name) stays inside. tests/exports checks this.
 */
#ifndef DYNAMO_EXPORT_H
#define DYNAMO_EXPORT_H

#if defined(__GNUC__) || defined(__clang__)
#define DYN_EXTERN __attribute__((visibility("default")))
#else
#define DYN_EXTERN
#endif

#endif
