/* threads.c - how many threads a Worker's engine runs when its config
 * gives no `threads`: the CPUs this process may use, shared by the engine
 * workers on this machine.
 *
 * The CPUs are what the scheduler will actually give us, not the node's
 * count: the affinity mask (taskset, a cpuset), and below that the cgroup
 * v2 quota (cpu.max, which a Kubernetes CPU limit becomes) of our cgroup
 * and each one above it. (sched_getaffinity itself rather than libuv's
 * uv_available_parallelism, which needs libuv 1.44.)
 *
 * The engine workers are every worker of every LLM engine service
 * (Worker, PrefillWorker) that `dynamo serve` runs here: it tells each
 * worker the count per service (DYN_LOCAL_WORKERS, serve/worker_env.c).
 * A Kubernetes pod runs one worker, so there it is 1; so is a worker
 * started by hand, which has no such variable.
 */
#define _GNU_SOURCE /* sched_getaffinity, CPU_COUNT */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/env_names.h"
#include "llm/services/services.h"
#include "llm/services/worker.h"

unsigned dyn__cpu_max_cpus(const char *text) {
  char quota[32];
  unsigned long long period = 0;
  if (sscanf(text, "%31s %llu", quota, &period) != 2 || !period || !strcmp(quota, "max"))
    return 0;
  char *end;
  unsigned long long q = strtoull(quota, &end, 10);
  if (end == quota || *end) return 0;
  unsigned long long n = q / period; /* a part of a CPU is not a thread's worth */
  return n ? (n > 65536 ? 65536 : (unsigned)n) : 1;
}

/* The least quota of our cgroup and its ancestors; 0 when none is set (or
 * this is no cgroup v2 system). */
static unsigned cgroup_cpus(void) {
  char line[4096], dir[4200];
  FILE *f = fopen("/proc/self/cgroup", "r");
  if (!f) return 0;
  const char *path = NULL;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "0::", 3)) { /* the v2 hierarchy's line */
      line[strcspn(line, "\n")] = 0;
      path = line + 3;
      break;
    }
  fclose(f);
  if (!path) return 0;
  /* Without a cgroup namespace the path is the host's, which a container
   * may not have mounted: the missing levels are skipped, and the top of
   * the mount is read last. */
  snprintf(dir, sizeof dir, "/sys/fs/cgroup%s", strcmp(path, "/") ? path : "");
  unsigned best = 0;
  for (;;) {
    char file[4300], text[64];
    snprintf(file, sizeof file, "%s/cpu.max", dir);
    if ((f = fopen(file, "r"))) {
      if (fgets(text, sizeof text, f)) {
        unsigned n = dyn__cpu_max_cpus(text);
        if (n && (!best || n < best)) best = n;
      }
      fclose(f);
    }
    char *slash = strrchr(dir, '/');
    if (!strcmp(dir, "/sys/fs/cgroup") || !slash) break;
    *slash = 0;
  }
  return best;
}

unsigned dyn__engine_workers_here(const char *local) {
  unsigned long n = 0;
  for (const char *p = local; p && *p;) {
    size_t len = strcspn(p, ",");
    const char *eq = memchr(p, '=', len);
    if (eq) {
      size_t name_len = (size_t)(eq - p);
      const char *engines[] = {dyn__llm_worker.name, dyn__llm_prefill_worker.name};
      for (size_t i = 0; i < sizeof engines / sizeof *engines; i++)
        if (strlen(engines[i]) == name_len && !memcmp(p, engines[i], name_len))
          n += strtoul(eq + 1, NULL, 10);
    }
    p += len + (p[len] == ',');
  }
  return n ? (n > 65536 ? 65536 : (unsigned)n) : 1; /* at least this worker */
}

/* The CPUs in our affinity mask; the online ones where it cannot be read. */
static unsigned affinity_cpus(void) {
  cpu_set_t set;
  if (!sched_getaffinity(0, sizeof set, &set) && CPU_COUNT(&set) > 0)
    return (unsigned)CPU_COUNT(&set);
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (unsigned)n : 1;
}

uint32_t dyn__worker_default_threads(void) {
  unsigned cpus = affinity_cpus();
  unsigned quota = cgroup_cpus();
  if (quota && quota < cpus) cpus = quota;
  unsigned t = cpus / dyn__engine_workers_here(getenv(DYN_ENV_LOCAL_WORKERS));
  return t ? t : 1;
}
