/* test_worker_policy.c - the Worker's choices that need no engine: how
 * many threads its engine gets by default (src/llm/services/threads.c),
 * and where a decode worker has a prompt prefilled (disagg.c). */
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

/* The queue is the live prefill workers' last reports plus what this
 * decode worker sent each since; a dead worker's report is not counted. */
static void test_queue_length(void) {
  dyn__prefill_load_t loads[] = {
      {.id = 1, .load = 3, .sent = 0, .seen_ms = 100},
      {.id = 2, .load = 0, .sent = 2, .seen_ms = 100}, /* two sent before its report */
      {.id = 3, .load = 5, .sent = 1, .seen_ms = 50},  /* gone */
      {.id = 4, .load = 0, .sent = 1, .seen_ms = 0},   /* no report yet */
  };
  const uint64_t live[] = {4, 2, 1};
  CHECK_EQ_U64(dyn__disagg_queue_length(loads, 4, live, 3), 3 + 2 + 1);
  CHECK_EQ_U64(dyn__disagg_queue_length(loads, 4, live, 1), 1);
  CHECK_EQ_U64(dyn__disagg_queue_length(loads, 4, NULL, 0), 0);
  const uint64_t unknown[] = {9};
  CHECK_EQ_U64(dyn__disagg_queue_length(loads, 4, unknown, 1), 0); /* unknown: idle */
  /* Two decode workers, each having sent one to the same prefill worker:
   * once its report (2) is in, both see 2, not each its own 1. */
  dyn__prefill_load_t a = {.id = 7, .load = 2}, b = {.id = 7, .load = 2};
  const uint64_t seven[] = {7};
  CHECK_EQ_U64(dyn__disagg_queue_length(&a, 1, seven, 1), 2);
  CHECK_EQ_U64(dyn__disagg_queue_length(&b, 1, seven, 1), 2);
}

static void test_goes_remote(void) {
  /* max_tokens, uncached, max-local-prefill-length, queue, max-prefill-queue-size, live */
  CHECK(dyn__disagg_goes_remote(16, 1000, 256, 0, 8, 1));
  CHECK(dyn__disagg_goes_remote(1, 1000, 256, 0, 8, 1)); /* max_tokens 1 too (no KV back) */
  CHECK(!dyn__disagg_goes_remote(0, 1000, 256, 0, 8, 1));
  CHECK(!dyn__disagg_goes_remote(16, 256, 256, 0, 8, 1)); /* not longer than the threshold */
  CHECK(dyn__disagg_goes_remote(16, 257, 256, 0, 8, 1));
  CHECK(dyn__disagg_goes_remote(16, 1000, 256, 7, 8, 1));
  CHECK(!dyn__disagg_goes_remote(16, 1000, 256, 8, 8, 1)); /* the queue is full */
  CHECK(!dyn__disagg_goes_remote(16, 1000, 256, 0, 0, 1)); /* a queue of 0: never */
  CHECK(!dyn__disagg_goes_remote(16, 1000, 256, 0, -1, 1));
  CHECK(!dyn__disagg_goes_remote(16, 1000, 256, 0, 8, 0)); /* no prefill worker */
}

int main(void) {
  test_cpu_max();
  test_engine_workers();
  test_default_threads();
  test_queue_length();
  test_goes_remote();
  TEST_END();
}
