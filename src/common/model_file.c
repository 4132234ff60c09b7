/* model_file.c - where a config's model lives (see model_file.h). */
#include "common/model_file.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *dyn__model_file(const char *model_path, const char *model, char *buf, size_t size) {
  if (model_path) return model_path;
  if (!model) return NULL;
  size_t n = strlen(model);
  if (strchr(model, '/') || (n > 5 && !strcmp(model + n - 5, ".gguf"))) return model;
  const char *dir = getenv("DYN_MODEL_DIR"), *home = getenv("HOME");
  if (dir && *dir) snprintf(buf, size, "%s/%s.gguf", dir, model);
  else snprintf(buf, size, "%s/.cache/dynamo/models/%s.gguf", home ? home : "", model);
  return buf;
}
