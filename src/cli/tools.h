/* tools.h - the outside programs `dynamo build --containerize` and
 * `dynamo deploy --apply` hand work to (docker, podman, buildah, kubectl):
 * finding them on PATH and running them, with their output left on the
 * terminal so the user reads their own words. */
#ifndef DYN__CLI_TOOLS_H
#define DYN__CLI_TOOLS_H

#include <stddef.h>

/* True when an executable named name is on $PATH. */
int dyn__tool_on_path(const char *name);

/* Runs argv (argv[0] looked up on PATH) and waits for it. When input is not
 * NULL it is written to the child's stdin; when quiet, the child's stdout
 * and stderr go to /dev/null. Returns the exit status, 128+signal when it
 * was killed, or -1 when it could not be started. */
int dyn__tool_run(char *const argv[], const char *input, size_t input_len, int quiet);

#endif
