/* test_worker_policy.c - the Worker's choices that need no engine
 * (src/llm/services/threads.c): how many threads its engine gets by
 * default. */
#include "harness.h"
#include "llm/services/worker.h"

#include <sched.h>

static void test_cpu_max(void) {
  CHECK_EQ_INT(dyn__cpu_max_cpus("max 100000\n"), 0); /* no quota */
  CHECK_EQ_INT(dyn__cpu_max_cpus("200000 100000\n"), 2);
  CHECK_EQ_INT(dyn__cpu_max_cpus("150000 100000"), 1); /* a part of a CPU is no thread */
  CHECK_EQ_INT(dyn__cpu_max_cpus("50000 100000"), 1);  /* but there is always one */
  CHECK_EQ_INT(dyn__cpu_max_cpus("400000 50000"), 8);
  CHECK_EQ_INT(dyn__cpu_max_cpus(""), 0);
  CHECK_EQ_INT(dyn__cpu_max_cpus("lots 100000"), 0);
  CHECK_EQ_INT(dyn__cpu_max_cpus("100000 0"), 0);
}

static void test_engine_workers(void) {
  CHECK_EQ_INT(dyn__engine_workers_here(NULL), 1); /* not started by `dynamo serve` */
  CHECK_EQ_INT(dyn__engine_workers_here(""), 1);
  /* Every replica of every engine service counts; the others do not. */
  CHECK_EQ_INT(dyn__engine_workers_here("Frontend=1,Processor=1,Worker=2,PrefillWorker=1"), 3);
  CHECK_EQ_INT(dyn__engine_workers_here("Frontend=1,Processor=2,Router=1,Worker=4"), 4);
  CHECK_EQ_INT(dyn__engine_workers_here("Worker=1"), 1); /* a Kubernetes pod */
  CHECK_EQ_INT(dyn__engine_workers_here("PrefillWorker=3"), 3);
  CHECK_EQ_INT(dyn__engine_workers_here("Workers=5,MyWorker=2,Worker"), 1); /* names exactly */
}

static void test_default_threads(void) {
  cpu_set_t set;
  REQUIRE(sched_getaffinity(0, sizeof set, &set) == 0);
  unsigned cpus = (unsigned)CPU_COUNT(&set);
  setenv("DYN_LOCAL_WORKERS", "Frontend=1,Worker=1", 1);
  unsigned alone = dyn__worker_default_threads();
  /* The CPUs we may use (a cgroup quota may allow fewer), not the node's. */
  CHECK(alone >= 1 && alone <= cpus);
  setenv("DYN_LOCAL_WORKERS", "Frontend=1,Processor=1,Worker=1,PrefillWorker=1", 1);
  CHECK_EQ_INT(dyn__worker_default_threads(), alone / 2 ? alone / 2 : 1);
  setenv("DYN_LOCAL_WORKERS", "Worker=64,PrefillWorker=64", 1);
  CHECK_EQ_INT(dyn__worker_default_threads(), alone / 128 ? alone / 128 : 1);
  unsetenv("DYN_LOCAL_WORKERS");
  CHECK_EQ_INT(dyn__worker_default_threads(), alone);
}

int main(void) {
  test_cpu_max();
  test_engine_workers();
  test_default_threads();
  TEST_END();
}
