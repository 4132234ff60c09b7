/* merge.h - the configuration of a served graph: YAML file plus overrides.
 *
 * `dynamo serve -f config.yaml --Backend.workers=2` builds one JSON object:
 * the YAML file (one mapping per service, plus an optional Common section)
 * with each command-line override applied on top, in order. That object is
 * what the resolver and every worker receive in DYNAMO_SERVICE_CONFIG;
 * `dynamo build` packs it as the artifact's config.yaml.
 *
 * Errors come back as DYN_E* codes; the sentence that says what is wrong
 * (file, line, service) is written into the caller's err buffer.
 */
#ifndef DYN__CONFIG_MERGE_H
#define DYN__CONFIG_MERGE_H

#include <jansson.h>
#include <stddef.h>

/* The configuration a command works with: the file (NULL: none, an empty
 * object) with the overrides applied in order. An override is
 * "Service.key=value" (the leading "--" already stripped): the value is
 * JSON when it parses as JSON, else the string itself; dotted keys reach
 * into nested mappings, which are created when missing. */
int dyn__config_merge(const char *path, const char *const *overrides, size_t n, json_t **out,
                      char *err, size_t errlen);

/* True when arg (without its leading "--") looks like an override: a dotted
 * key followed by '='. */
int dyn__config_is_override(const char *arg);

#endif
