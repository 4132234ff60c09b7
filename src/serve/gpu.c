/* gpu.c - GPU discovery and allocation.
 *
 * Discovery avoids linking against NVML or CUDA: the supervisor must run on
 * machines without either, and `nvidia-smi -L` is present wherever the
 * driver is. It is given a few seconds; a wedged driver must not wedge
 * `dynamo serve`.
 */
#include "serve/gpu.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/env_names.h"
#include "dynamo/runtime.h"
#include "dynamo/status.h"
#include "serve/capture.h"
#include "common/fail.h"

#define NVIDIA_SMI_TIMEOUT_MS 10000


static int add_id(dyn__gpus_t *g, const char *id, size_t len) {
  char **ids = realloc(g->ids, (g->count + 2) * sizeof *ids);
  if (!ids) return DYN_ENOMEM;
  g->ids = ids;
  if (!(ids[g->count] = strndup(id, len))) return DYN_ENOMEM;
  ids[++g->count] = NULL;
  return DYN_OK;
}

static int numbered(dyn__gpus_t *g, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char id[24];
    int len = snprintf(id, sizeof id, "%zu", i);
    if (add_id(g, id, (size_t)len)) return DYN_ENOMEM;
  }
  return DYN_OK;
}

/* Lines such as "GPU 0: NVIDIA H100 (UUID: ...)". MIG devices are listed
 * indented under their GPU; they are not separate GPUs for this count. */
static size_t count_gpu_lines(const char *text) {
  size_t n = 0;
  for (const char *line = text; *line;) {
    if (!strncmp(line, "GPU ", 4)) n++;
    const char *nl = strchr(line, '\n');
    if (!nl) break;
    line = nl + 1;
  }
  return n;
}

int dyn__gpu_detect(uv_loop_t *loop, dyn__gpus_t *g, char *err, size_t errlen) {
  memset(g, 0, sizeof *g);
  const char *env = getenv(DYN_ENV_GPU_COUNT);
  if (env && *env) {
    char *end;
    errno = 0;
    long n = strtol(env, &end, 10);
    if (errno || *end || n < 0 || n > 4096)
      return dyn__fail(err, errlen, DYN_EINVAL, DYN_ENV_GPU_COUNT "='%s' is not a number of GPUs", env);
    g->source = DYN_ENV_GPU_COUNT;
    if (numbered(g, (size_t)n)) goto oom;
    return DYN_OK;
  }
  const char *visible = getenv("CUDA_VISIBLE_DEVICES");
  if (visible) {
    g->source = "CUDA_VISIBLE_DEVICES";
    for (const char *p = visible; *p;) {
      size_t len = strcspn(p, ",");
      while (len && p[len - 1] == ' ') len--;
      while (len && *p == ' ') p++, len--;
      if (len && add_id(g, p, len)) goto oom;
      p += strcspn(p, ",");
      if (*p == ',') p++;
    }
    return DYN_OK;
  }
  g->source = "nvidia-smi -L";
  char *argv[] = {"nvidia-smi", "-L", NULL};
  dyn__captured_t c;
  int uv_err;
  int rc = dyn__capture(loop, argv, NULL, NVIDIA_SMI_TIMEOUT_MS, &c, &uv_err);
  if (rc == DYN_ESYS) {
    dyn__captured_free(&c); /* the (empty) output is allocated all the same */
    g->source = "no nvidia-smi";
    return DYN_OK;
  }
  if (rc) goto oom;
  if (c.timed_out)
    dyn_log(DYN_LOG_WARN, "serve: nvidia-smi -L did not answer in %d s; assuming no GPUs",
            NVIDIA_SMI_TIMEOUT_MS / 1000);
  else if (!c.exit_status && !c.term_signal)
    rc = numbered(g, count_gpu_lines(c.out));
  dyn__captured_free(&c);
  if (rc) goto oom;
  return DYN_OK;
oom:
  dyn__gpu_free(g);
  return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
}

void dyn__gpu_free(dyn__gpus_t *g) {
  for (size_t i = 0; i < g->count; i++) free(g->ids[i]);
  free(g->ids);
  g->ids = NULL;
  g->count = 0;
}

int dyn__gpu_assign(const dyn__gpus_t *g, const dyn__gpu_demand_t *d, size_t n,
                    int oversubscribe, char **assign, char *err, size_t errlen) {
  long total = 0;
  int widest = 0;
  for (size_t i = 0; i < n; i++) {
    total += (long)d[i].workers * d[i].per_worker;
    if (d[i].per_worker > widest) widest = d[i].per_worker;
  }
  if (total > (long)g->count && (!oversubscribe || (size_t)widest > g->count)) {
    /* One line per service that asks, so the user sees where to cut. */
    size_t used = 0;
    int w = snprintf(err, errlen, "the graph asks for %ld GPU%s but this machine has %zu (%s):",
                     total, total == 1 ? "" : "s", g->count, g->source);
    if (w > 0) used = (size_t)w < errlen ? (size_t)w : errlen;
    for (size_t i = 0; i < n && used < errlen; i++) {
      if (!d[i].per_worker) continue;
      w = snprintf(err + used, errlen - used, "\n  %s: %d worker%s x %d GPU%s = %d",
                   d[i].service, d[i].workers, d[i].workers == 1 ? "" : "s", d[i].per_worker,
                   d[i].per_worker == 1 ? "" : "s", d[i].workers * d[i].per_worker);
      if (w > 0) used += (size_t)w < errlen - used ? (size_t)w : errlen - used;
    }
    if (used < errlen) {
      if (oversubscribe)
        snprintf(err + used, errlen - used,
                 "\nEven shared, one worker cannot have more GPUs than the machine has; "
                 "pass --no-gpu-alloc to leave CUDA_VISIBLE_DEVICES alone.");
      else
        snprintf(err + used, errlen - used,
                 "\nPass --gpu-oversubscribe to let workers share GPUs, or --no-gpu-alloc to "
                 "leave CUDA_VISIBLE_DEVICES alone.");
    }
    return DYN_EINVAL;
  }
  size_t next = 0, k = 0;
  for (size_t i = 0; i < n; i++) {
    for (int w = 0; w < d[i].workers; w++, k++) {
      size_t len = 1;
      for (int j = 0; j < d[i].per_worker; j++) len += strlen(g->ids[(next + (size_t)j) % g->count]) + 1;
      char *s = malloc(len);
      if (!s) {
        while (k > 0) free(assign[--k]);
        return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
      }
      s[0] = 0;
      for (int j = 0; j < d[i].per_worker; j++) {
        if (j) strcat(s, ",");
        strcat(s, g->ids[next % g->count]);
        next++;
      }
      assign[k] = s;
    }
  }
  return DYN_OK;
}
