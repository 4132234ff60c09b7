/* config.h - the configuration of a served graph: YAML file plus overrides.
 *
 * `dynamo serve -f config.yaml --Backend.workers=2` builds one JSON object:
 * the YAML file (one mapping per service, plus an optional Common section)
 * with each command-line override applied on top, in order. That object is
 * what the resolver and every worker receive in DYNAMO_SERVICE_CONFIG.
 *
 * Errors come back as DYN_E* codes; the sentence that says what is wrong
 * (file, line, service) is written into the caller's err buffer.
 */
#ifndef DYN__SDK_CONFIG_H
#define DYN__SDK_CONFIG_H

#include <jansson.h>
#include <stddef.h>

/* Parses one YAML document into JSON (mappings become objects, sequences
 * arrays, plain scalars resolved by the YAML 1.2 core schema, quoted scalars
 * strings). Aliases are expanded and `<<` merge keys applied. */
int dyn__yaml_parse(const char *text, size_t len, const char *name,
                    json_t **out, char *err, size_t errlen);

/* Reads path and checks its shape: the top level is a mapping whose every
 * value (a service section, or Common) is a mapping; an empty file or an
 * empty section counts as an empty mapping. */
int dyn__config_load(const char *path, json_t **out, char *err, size_t errlen);

/* Applies "Service.key=value" (the leading "--" already stripped): the value
 * is JSON when it parses as JSON, else the string itself; dotted keys reach
 * into nested mappings, which are created when missing. */
int dyn__config_override(json_t *config, const char *arg, char *err, size_t errlen);

/* The configuration a command works with: the file (NULL: none, an empty
 * object) with the overrides applied in order. */
int dyn__config_merge(const char *path, const char *const *overrides, size_t n, json_t **out,
                      char *err, size_t errlen);

/* True when arg (without its leading "--") looks like an override: a dotted
 * key followed by '='. */
int dyn__config_is_override(const char *arg);

#endif
