/* yaml_read.h - YAML files read as JSON.
 *
 * Config files (`dynamo serve -f`, `dynamo build -f`) and build manifests
 * (dynamo.yaml) are YAML; everything that uses them works on jansson values.
 *
 * Errors come back as DYN_E* codes; the sentence that says what is wrong
 * (file, line, column) is written into the caller's err buffer.
 */
#ifndef DYN__CONFIG_YAML_READ_H
#define DYN__CONFIG_YAML_READ_H

#include <jansson.h>
#include <stddef.h>

/* Parses one YAML document into JSON (mappings become objects, sequences
 * arrays, plain scalars resolved by the YAML 1.2 core schema, quoted scalars
 * strings). Aliases are expanded and `<<` merge keys applied. name is what
 * messages call the text (a path, say). */
int dyn__yaml_parse(const char *text, size_t len, const char *name,
                    json_t **out, char *err, size_t errlen);

/* Reads path as a config file and checks its shape: the top level is a
 * mapping whose every value (a service section, or Common) is a mapping;
 * an empty file or an empty section counts as an empty mapping. */
int dyn__config_load(const char *path, json_t **out, char *err, size_t errlen);

/* What a value is, in YAML's words, for messages: "a mapping", "a
 * sequence", "a string", "a number", "a boolean" or "null". */
const char *dyn__yaml_kind_name(const json_t *v);

#endif
