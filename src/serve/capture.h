/* capture.h - run a short-lived command and collect what it prints.
 *
 * The supervisor asks two other programs for facts before it starts a
 * graph: the Python resolver (what is the graph?) and nvidia-smi (how many
 * GPUs?). Both are "run, read stdout and stderr to the end, get the exit
 * status", on the supervisor's own loop so that nothing else is needed.
 */
#ifndef DYN__SERVE_CAPTURE_H
#define DYN__SERVE_CAPTURE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct dyn__captured {
  char *out; /* stdout, NUL-terminated (also when empty) */
  size_t out_len;
  char *err; /* stderr, NUL-terminated */
  size_t err_len;
  int64_t exit_status;
  int term_signal;
  int timed_out; /* killed after timeout_ms */
} dyn__captured_t;

/* Runs argv[0] (searched in PATH) with env (NULL: this process's), stdin
 * from /dev/null, until it exits and both outputs reach their end. Returns
 * DYN_OK when the command ran, whatever its exit status; DYN_ESYS when it
 * could not be started, with the libuv error in *uv_err (UV_ENOENT: no such
 * program). timeout_ms 0 waits for ever. Runs the loop one pass at a time
 * and so leaves other handles on it alone. */
int dyn__capture(uv_loop_t *loop, char *const *argv, char *const *env, uint64_t timeout_ms,
                 dyn__captured_t *out, int *uv_err);
void dyn__captured_free(dyn__captured_t *c);

#endif
