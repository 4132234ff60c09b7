/* model_file.h - where a config's model lives: one rule for the LLM
 * services that load it and for `dynamo build`, which names it (and its
 * sha256) in an artifact instead of packing it. */
#ifndef DYN__COMMON_MODEL_FILE_H
#define DYN__COMMON_MODEL_FILE_H
#include <stddef.h>

/* The .gguf file a config names: model_path when set, else model as a
 * path (it has a '/' or ends in .gguf), else model as a name the model
 * cache holds as NAME.gguf ($DYN_MODEL_DIR, else ~/.cache/dynamo/models,
 * where scripts/fetch_model.sh puts it), written into buf. NULL when both
 * are NULL. */
const char *dyn__model_file(const char *model_path, const char *model, char *buf, size_t size);

#endif
