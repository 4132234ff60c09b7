/* test_plan.c - what `dynamo serve` decides before it starts anything: the
 * processes a plan becomes (serve/workers.c) and the environment each one
 * gets (serve/worker_env.c), checked without starting a process, so that
 * ASan watches them too. The names are spelled out here rather than taken
 * from env_names.h: they are a contract with the Python SDK, and a rename
 * should fail this test. */
#include <limits.h>

#include <jansson.h>

#include "harness.h"
#include "serve/env.h"
#include "serve/plan.h"
#include "serve/worker_env.h"
#include "serve/workers.h"

/* The value of name in a "NAME=value" array, or NULL; a name set twice is
 * a failure (the first one would win in some programs, the last in others). */
static const char *env_value(char **env, const char *name) {
  size_t len = strlen(name);
  const char *found = NULL;
  int times = 0;
  for (char **v = env; *v; v++)
    if (!strncmp(*v, name, len) && (*v)[len] == '=') {
      found = *v + len + 1;
      times++;
    }
  CHECK_MSG(times <= 1, "%s is set %d times", name, times);
  return found;
}

static void plan_from(const char *json, dyn__plan_t *plan) {
  json_error_t jerr;
  json_t *doc = json_loads(json, 0, &jerr);
  if (!doc) fprintf(stderr, "bad test plan: %s\n", jerr.text);
  REQUIRE(doc != NULL);
  char err[512] = "";
  int rc = dyn__plan_from_json(doc, plan, err, sizeof err);
  json_decref(doc);
  CHECK_MSG(rc == DYN_OK, "%s", err);
  REQUIRE(rc == DYN_OK);
}

static const char *const GRAPH =
    "{\"target\": \"graph.py:Front\", \"entry\": \"Front\", \"services\": ["
    " {\"name\": \"Front\", \"dependencies\": [\"Backend\"]},"
    " {\"name\": \"Backend\", \"workers\": 3, \"resources\": {\"gpu\": 1},"
    "  \"envs\": [{\"name\": \"MODEL\", \"value\": \"llama\"},"
    "            {\"name\": \"DYN_WORKER_INDEX\", \"value\": \"99\"},"
    "            {\"name\": \"DYN_CONTROL_SOCKET\", \"value\": \"/elsewhere.sock\"}]},"
    " {\"name\": \"Router\", \"workers\": 2, \"dependencies\": [\"Backend\", \"Front\"]}],"
    " \"edges\": [[\"Front\", \"Backend\"], [\"Router\", \"Backend\"], [\"Router\", \"Front\"]]}";

static dyn__workers_options_t options(const char *target) {
  return (dyn__workers_options_t){.target = target, .python = "/opt/py/bin/python3",
                                  .self = "/opt/dynamo/bin/dynamo"};
}

static int argv_is(char **argv, const char *const *want) {
  size_t i = 0;
  for (; argv[i] && want[i]; i++)
    if (strcmp(argv[i], want[i])) return 0;
  return !argv[i] && !want[i];
}

static void test_one_process_per_worker(void) {
  dyn__plan_t plan;
  plan_from(GRAPH, &plan);
  dyn__workers_options_t o = options("graph.py:Front");
  dyn__workers_t ws;
  char err[512] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  CHECK_EQ_INT(ws.n, 6);
  CHECK_EQ_INT(ws.nservices, 3);
  const char *labels[] = {"Front.0", "Backend.0", "Backend.1", "Backend.2", "Router.0",
                          "Router.1"};
  const int index[] = {0, 0, 1, 2, 0, 1};
  for (size_t k = 0; k < ws.n && k < 6; k++) {
    CHECK_EQ_STR(ws.w[k].label, labels[k]);
    CHECK_EQ_INT(ws.w[k].index, index[k]);
    CHECK(ws.w[k].cuda == NULL); /* no GPUs given: CUDA_VISIBLE_DEVICES left alone */
    CHECK_EQ_INT(ws.w[k].health_port, 0);
  }
  const char *backend[] = {"/opt/py/bin/python3", "-m", "dynamo.sdk.worker", "graph.py:Front",
                           "--service", "Backend", NULL};
  CHECK(argv_is(ws.w[2].argv, backend));
  CHECK(ws.w[2].svc == dyn__plan_find(&plan, "Backend"));

  /* workers: 3 gives three environments with DYN_WORKER_INDEX 0, 1, 2. */
  dyn__graph_env_t g = {.config_text = "{}", .control_socket = "/run/cp.sock",
                        .target = "graph.py:Front", .grace_s = 10, .all = &ws};
  for (int i = 0; i < 3; i++) {
    char **env = NULL;
    REQUIRE(dyn__worker_env(&g, &ws.w[1 + i], &env) == DYN_OK);
    /* Every worker learns all the workers this serve runs on the machine
     * (an LLM Worker shares the CPUs by it). */
    CHECK_EQ_STR(env_value(env, "DYN_LOCAL_WORKERS"), "Front=1,Backend=3,Router=2");
    char want[8];
    snprintf(want, sizeof want, "%d", i);
    CHECK_EQ_STR(env_value(env, "DYN_WORKER_INDEX"), want);
    CHECK_EQ_STR(env_value(env, "DYN_SERVICE_NAME"), "Backend");
    /* The service's own envs are there, but cannot override ours. */
    CHECK_EQ_STR(env_value(env, "MODEL"), "llama");
    CHECK_EQ_STR(env_value(env, "DYN_CONTROL_SOCKET"), "/run/cp.sock");
    dyn__strv_free(env);
  }
  dyn__workers_free(&ws);
  CHECK(ws.w == NULL && ws.n == 0);
  dyn__plan_free(&plan);
}

static void test_gpus_are_dealt_in_order(void) {
  dyn__plan_t plan;
  plan_from(GRAPH, &plan);
  char *ids[] = {"0", "1", "2", "3"};
  dyn__gpus_t gpus = {.count = 4, .ids = ids, .source = "the test"};
  dyn__workers_options_t o = options("graph.py:Front");
  o.gpus = &gpus;
  dyn__workers_t ws;
  char err[1024] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  /* Front and Router ask none and get "" (no GPU), not the inherited set. */
  const char *want[] = {"", "0", "1", "2", "", ""};
  for (size_t k = 0; k < ws.n && k < 6; k++) CHECK_EQ_STR(ws.w[k].cuda, want[k]);
  dyn__graph_env_t g = {.config_text = "{}", .target = "graph.py:Front"};
  char **env = NULL;
  REQUIRE(dyn__worker_env(&g, &ws.w[3], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "CUDA_VISIBLE_DEVICES"), "2");
  dyn__strv_free(env);
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "CUDA_VISIBLE_DEVICES"), "");
  dyn__strv_free(env);
  dyn__workers_free(&ws);

  /* Two GPUs for three workers: refused, naming the demand ... */
  gpus.count = 2;
  CHECK_STATUS(dyn__workers_plan(&plan, &o, &ws, err, sizeof err), DYN_EINVAL);
  CHECK_MSG(strstr(err, "asks for 3 GPUs") && strstr(err, "Backend: 3 workers x 1 GPU"), "%s",
            err);
  CHECK(ws.n == 0 && ws.w == NULL);
  /* ... unless they may share, when they are dealt again from the first. */
  o.oversubscribe = 1;
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  CHECK_EQ_STR(ws.w[1].cuda, "0");
  CHECK_EQ_STR(ws.w[2].cuda, "1");
  CHECK_EQ_STR(ws.w[3].cuda, "0");
  dyn__workers_free(&ws);

  /* Without GPU allocation, an inherited CUDA_VISIBLE_DEVICES stays. */
  o.gpus = NULL;
  setenv("CUDA_VISIBLE_DEVICES", "5,6", 1);
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  REQUIRE(dyn__worker_env(&g, &ws.w[1], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "CUDA_VISIBLE_DEVICES"), "5,6");
  dyn__strv_free(env);
  unsetenv("CUDA_VISIBLE_DEVICES");
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);
}

static void test_service_name_and_health_ports(void) {
  dyn__plan_t plan;
  plan_from(GRAPH, &plan);
  dyn__workers_options_t o = options("graph.py:Front");
  o.only = "Router";
  o.health_base = 9100;
  dyn__workers_t ws;
  char err[512] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  CHECK_EQ_INT(ws.n, 2);
  CHECK_EQ_INT(ws.nservices, 1);
  CHECK_EQ_STR(ws.w[0].label, "Router.0");
  /* Ports count the workers served here, from the base. */
  CHECK_EQ_INT(ws.w[0].health_port, 9100);
  CHECK_EQ_INT(ws.w[1].health_port, 9101);
  CHECK(dyn__workers_serves(&o, dyn__plan_find(&plan, "Router")));
  CHECK(!dyn__workers_serves(&o, dyn__plan_find(&plan, "Front")));
  dyn__graph_env_t g = {.config_text = "{}", .target = "graph.py:Front", .all = &ws};
  char **env = NULL;
  REQUIRE(dyn__worker_env(&g, &ws.w[1], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "DYN_HEALTH_PORT"), "9101");
  /* --service-name (a Kubernetes pod): the workers of that service alone. */
  CHECK_EQ_STR(env_value(env, "DYN_LOCAL_WORKERS"), "Router=2");
  dyn__strv_free(env);
  dyn__workers_free(&ws);

  /* An inherited DYN_HEALTH_PORT is a base, not a port for every worker. */
  setenv("DYN_HEALTH_PORT", "9000", 1);
  o.health_base = 0;
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "DYN_HEALTH_PORT"), "");
  dyn__strv_free(env);
  unsetenv("DYN_HEALTH_PORT");
  dyn__workers_free(&ws);

  o.only = "Nope";
  CHECK_STATUS(dyn__workers_plan(&plan, &o, &ws, err, sizeof err), DYN_EINVAL);
  CHECK_MSG(strstr(err, "'Nope'") != NULL, "%s", err);
  CHECK(ws.n == 0);
  dyn__plan_free(&plan);
}

/* The plan lists only the dependencies that survived link(); a worker
 * learns exactly those. */
static void test_live_dependencies(void) {
  dyn__plan_t plan;
  plan_from("{\"services\": ["
            " {\"name\": \"Front\", \"dependencies\": [\"Backend\", \"Cache\"]},"
            " {\"name\": \"Backend\", \"dependencies\": []},"
            " {\"name\": \"Cache\"}],"
            " \"edges\": [[\"Front\", \"Backend\"], [\"Front\", \"Cache\"]]}",
            &plan);
  dyn__workers_options_t o = options("pkg.graph:Front");
  dyn__workers_t ws;
  char err[512] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  REQUIRE(ws.n == 3);
  dyn__graph_env_t g = {.config_text = "{}", .target = "pkg.graph:Front"};
  const char *want[] = {"Backend,Cache", "", ""};
  for (size_t k = 0; k < 3; k++) {
    char **env = NULL;
    REQUIRE(dyn__worker_env(&g, &ws.w[k], &env) == DYN_OK);
    /* Set even when empty: "none live", unlike unset, "all listed live". */
    CHECK_EQ_STR(env_value(env, "DYN_SERVICE_DEPENDS"), want[k]);
    dyn__strv_free(env);
  }
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);

  /* link() pruned Front -> Cache: the plan has Backend alone. */
  plan_from("{\"services\": [{\"name\": \"Front\", \"dependencies\": [\"Backend\"]},"
            " {\"name\": \"Backend\"}], \"edges\": [[\"Front\", \"Backend\"]]}",
            &plan);
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  char **env = NULL;
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "DYN_SERVICE_DEPENDS"), "Backend");
  dyn__strv_free(env);
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);
}

static void test_c_workers(void) {
  /* A C graph: every worker is `dynamo worker`, and no Python setting. */
  dyn__plan_t plan;
  plan_from("{\"kind\": \"c\", \"services\": [{\"name\": \"Echo\", \"workers\": 2}]}", &plan);
  dyn__workers_options_t o = options("./libecho.so:Echo");
  dyn__workers_t ws;
  char err[512] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  const char *c[] = {"/opt/dynamo/bin/dynamo", "worker", "./libecho.so:Echo", "--service", "Echo",
                     NULL};
  CHECK(argv_is(ws.w[1].argv, c));
  unsetenv("PYTHONUNBUFFERED");
  dyn__graph_env_t g = {.config_text = "{}", .target = "./libecho.so:Echo", .is_c = 1};
  char **env = NULL;
  REQUIRE(dyn__worker_env(&g, &ws.w[1], &env) == DYN_OK);
  CHECK(env_value(env, "PYTHONUNBUFFERED") == NULL);
  dyn__strv_free(env);
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);

  /* A C service in a Python graph runs its own shared object. */
  plan_from("{\"services\": [{\"name\": \"Front\"},"
            " {\"name\": \"Fast\", \"kind\": \"c\", \"target\": \"lib/libfast.so:Fast\"}]}",
            &plan);
  o = options("graph.py:Front");
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  const char *py[] = {"/opt/py/bin/python3", "-m", "dynamo.sdk.worker", "graph.py:Front",
                      "--service", "Front", NULL};
  const char *fast[] = {"/opt/dynamo/bin/dynamo", "worker", "lib/libfast.so:Fast", "--service",
                        "Fast", NULL};
  CHECK(argv_is(ws.w[0].argv, py));
  CHECK(argv_is(ws.w[1].argv, fast));
  /* A Python graph's workers are unbuffered, unless the user said otherwise. */
  g = (dyn__graph_env_t){.config_text = "{}", .target = "graph.py:Front"};
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "PYTHONUNBUFFERED"), "1");
  dyn__strv_free(env);
  setenv("PYTHONUNBUFFERED", "0", 1);
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "PYTHONUNBUFFERED"), "0");
  dyn__strv_free(env);
  unsetenv("PYTHONUNBUFFERED");
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);
}

static void test_graph_settings(void) {
  /* Paths are made absolute against the directory serve ran in. */
  char sub[PATH_MAX], real_dir[PATH_MAX], want[PATH_MAX + 32];
  REQUIRE(realpath(h_dir, real_dir) != NULL);
  snprintf(sub, sizeof sub, "%s/graphs", h_dir);
  REQUIRE(mkdir(sub, 0700) == 0);
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/graphs/graph.py", h_dir);
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fclose(f);
  snprintf(path, sizeof path, "%s/config.yaml", h_dir);
  REQUIRE((f = fopen(path, "w")) != NULL);
  fclose(f);
  char cwd[PATH_MAX];
  REQUIRE(getcwd(cwd, sizeof cwd) != NULL);
  REQUIRE(chdir(h_dir) == 0);
  unsetenv("DYN_CONFIG_FILE");
  unsetenv("DYN_GRAPH_DIR");

  dyn__plan_t plan;
  plan_from("{\"services\": [{\"name\": \"Front\", \"workers\": 2}]}", &plan);
  dyn__workers_options_t o = options("graphs/graph.py:Front");
  dyn__workers_t ws;
  char err[512] = "";
  REQUIRE(dyn__workers_plan(&plan, &o, &ws, err, sizeof err) == DYN_OK);
  dyn__graph_env_t g = {.config_text = "{\"Front\":{\"x\":1}}",
                        .control_socket = "/run/cp.sock",
                        .etcd = "http://10.0.0.1:2379",
                        .nats = "nats://10.0.0.1:4222",
                        .host = "10.0.0.2",
                        .config_file = "config.yaml",
                        .target = "graphs/graph.py:Front",
                        .grace_s = 2.5};
  char **env = NULL;
  REQUIRE(dyn__worker_env(&g, &ws.w[1], &env) == DYN_OK);
  CHECK_EQ_STR(env_value(env, "DYNAMO_SERVICE_CONFIG"), "{\"Front\":{\"x\":1}}");
  CHECK_EQ_STR(env_value(env, "DYN_CONTROL_SOCKET"), "/run/cp.sock");
  CHECK_EQ_STR(env_value(env, "ETCD_ENDPOINTS"), "http://10.0.0.1:2379");
  CHECK_EQ_STR(env_value(env, "NATS_SERVER"), "nats://10.0.0.1:4222");
  CHECK_EQ_STR(env_value(env, "DYN_ADVERTISE_HOST"), "10.0.0.2");
  snprintf(want, sizeof want, "%s/config.yaml", real_dir);
  CHECK_EQ_STR(env_value(env, "DYN_CONFIG_FILE"), want);
  snprintf(want, sizeof want, "%s/graphs", real_dir);
  CHECK_EQ_STR(env_value(env, "DYN_GRAPH_DIR"), want);
  CHECK_EQ_STR(env_value(env, "DYN_GRACE_SECONDS"), "2.5");
  char pid[16];
  snprintf(pid, sizeof pid, "%d", (int)getpid());
  CHECK_EQ_STR(env_value(env, "DYN_SUPERVISOR_PID"), pid);
  CHECK_EQ_STR(env_value(env, "DYN_WORKER_INDEX"), "1");
  /* The rest of this process's environment is passed on. */
  CHECK(env_value(env, "PATH") != NULL);
  dyn__strv_free(env);

  /* A module target has no graph directory; a missing config file no path;
   * with no control socket of ours, the inherited one stays. */
  g.target = "pkg.graph:Front";
  g.config_file = "missing.yaml";
  g.control_socket = "";
  g.etcd = g.nats = g.host = NULL;
  setenv("DYN_CONTROL_SOCKET", "/inherited.sock", 1);
  REQUIRE(dyn__worker_env(&g, &ws.w[0], &env) == DYN_OK);
  CHECK(env_value(env, "DYN_GRAPH_DIR") == NULL);
  CHECK(env_value(env, "DYN_CONFIG_FILE") == NULL);
  CHECK_EQ_STR(env_value(env, "DYN_CONTROL_SOCKET"), "/inherited.sock");
  dyn__strv_free(env);
  setenv("DYN_CONTROL_SOCKET", h_sock, 1);
  REQUIRE(chdir(cwd) == 0);
  dyn__workers_free(&ws);
  dyn__plan_free(&plan);
}

int main(void) {
  h_init("serve_plan");
  test_one_process_per_worker();
  test_gpus_are_dealt_in_order();
  test_service_name_and_health_ports();
  test_live_dependencies();
  test_c_workers();
  test_graph_settings();
  TEST_END();
}
