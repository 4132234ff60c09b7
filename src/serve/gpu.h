/* gpu.h - counting this machine's GPUs and sharing them among workers.
 *
 * Each worker that asks for GPUs gets its own devices through
 * CUDA_VISIBLE_DEVICES, handed out in order, so that two workers never
 * load models onto the same GPU unless the user said they may.
 */
#ifndef DYN__SERVE_GPU_H
#define DYN__SERVE_GPU_H

#include <stddef.h>
#include <uv.h>

typedef struct dyn__gpus {
  size_t count;
  char **ids;         /* the device names to hand out, "0", "1", ... */
  const char *source; /* how they were found, for messages */
} dyn__gpus_t;

/* $DYN_GPU_COUNT if set; else the devices already in $CUDA_VISIBLE_DEVICES
 * (so that `CUDA_VISIBLE_DEVICES=2,3 dynamo serve` shares out 2 and 3);
 * else the GPU lines of `nvidia-smi -L`; else none. */
int dyn__gpu_detect(uv_loop_t *loop, dyn__gpus_t *out, char *err, size_t errlen);
void dyn__gpu_free(dyn__gpus_t *g);

typedef struct dyn__gpu_demand {
  const char *service;
  int workers;
  int per_worker;
} dyn__gpu_demand_t;

/* Fills assign[w] with the CUDA_VISIBLE_DEVICES value of worker w, workers
 * numbered through the demands in order ("" for a worker that asks none).
 * Asking for more than there is fails, naming each service's demand, unless
 * oversubscribe, which deals the devices out again from the first. */
int dyn__gpu_assign(const dyn__gpus_t *g, const dyn__gpu_demand_t *d, size_t n,
                    int oversubscribe, char **assign, char *err, size_t errlen);

#endif
