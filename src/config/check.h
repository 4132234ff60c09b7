/* check.h - the types of the configuration keys dynamo itself reads.
 *
 * Most keys of a service's section are the service's own business, but a
 * few are dynamo's: `port` and `host` (where an HTTP service listens),
 * `common-configs`, and `ServiceArgs` (`workers`, `resources`, `envs`).
 * A value of the wrong type there (`port: "eighty"`) is an error that names
 * where the value came from, the service and the key, before any resolver
 * or worker sees it, for Python and C graphs alike.
 */
#ifndef DYN__CONFIG_CHECK_H
#define DYN__CONFIG_CHECK_H

#include <jansson.h>
#include <stddef.h>

/* Checks every section of config (a mapping of sections). source names
 * where the values came from (a file's path, or the command line) in the
 * message: "SOURCE: service Frontend, key 'port': must be ...". */
int dyn__config_check(const json_t *config, const char *source, char *err, size_t errlen);

#endif
