/* yamlout.h - JSON values written out as YAML, for the files people read.
 *
 * `dynamo build` writes its manifest and merged config, and `dynamo deploy`
 * its Kubernetes objects, as YAML. They are built as jansson values (whose
 * objects keep insertion order, so the caller decides the key order) and
 * emitted here with libyaml's emitter: block style, and a string quoted
 * whenever it would otherwise read back as something else ("1", "true",
 * "null", "1e3"), so that what dyn__yaml_parse or kubectl reads is exactly
 * what was built.
 */
#ifndef DYN__PACKAGE_YAMLOUT_H
#define DYN__PACKAGE_YAMLOUT_H

#include <jansson.h>
#include <stddef.h>

/* Appends one YAML document for each of docs[0..n) (a "---" separated
 * stream) to a NUL-terminated malloc'd string in *out. DYN_ENOMEM, or
 * DYN_EINVAL for a value YAML cannot hold (a NaN). */
int dyn__yaml_dump(json_t *const *docs, size_t n, char **out);

#endif
