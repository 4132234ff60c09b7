/* env_names.h - the names of the environment variables dynamo's C code
 * sets or reads, in one place.
 *
 * Most of them are how `dynamo serve` talks to the workers it starts: the
 * supervisor sets them (serve/worker_env.c) and the worker side reads them
 * (the runtime, service/, and the Python SDK). A name spelled twice can be
 * misspelled once, and the two sides would then disagree without a word;
 * here each is spelled once, with who sets it and who reads it. The Python
 * SDK (python/dynamo) cannot include this file and spells the names itself;
 * its readers are listed so that a rename knows where else to look.
 */
#ifndef DYN__ENV_NAMES_H
#define DYN__ENV_NAMES_H

/* ---- the runtime: where discovery and events live --------------------- */

/* The embedded control plane's Unix socket. Set by `dynamo serve` for its
 * workers (serve/worker_env.c), or by the user; read by the runtime
 * (runtime/runtime.c) and by `dynamo control` for its default path
 * (runtime/embedded/cp_server.c). */
#define DYN_ENV_CONTROL_SOCKET "DYN_CONTROL_SOCKET"

/* etcd endpoints for discovery. Set by the user or a Kubernetes manifest
 * (package/k8s.c), and passed on to workers by `dynamo serve`; read by the
 * runtime (runtime/runtime.c) and `dynamo serve` (cli/serve_cmd.c). */
#define DYN_ENV_ETCD_ENDPOINTS "ETCD_ENDPOINTS"

/* The NATS server for events. Set and read like ETCD_ENDPOINTS. */
#define DYN_ENV_NATS_SERVER "NATS_SERVER"

/* The address a worker advertises to others. Set by the user, by `dynamo
 * serve --host` for its workers, or by a manifest (the pod's IP); read by
 * the runtime (runtime/runtime.c) and `dynamo serve` (cli/serve_cmd.c). */
#define DYN_ENV_ADVERTISE_HOST "DYN_ADVERTISE_HOST"

/* The address and port a worker's endpoint server binds. Set by a manifest
 * (package/k8s.c) or the user; read by the runtime (runtime/runtime.c). */
#define DYN_ENV_LISTEN_HOST "DYN_LISTEN_HOST"
#define DYN_ENV_LISTEN_PORT "DYN_LISTEN_PORT"

/* The largest frame a connection accepts. Set by the user; read by the
 * runtime (runtime/runtime.c). */
#define DYN_ENV_MAX_FRAME "DYN_MAX_FRAME"

/* The log level (error, warn, info, debug). Set by the user; read by the
 * runtime's logger (runtime/log.c). */
#define DYN_ENV_LOG "DYN_LOG"

/* The lease TTL, in seconds, of etcd registrations. Set by the user or a
 * test; read by the etcd backend (runtime/etcd/etcd.c). */
#define DYN_ENV_ETCD_TTL "DYN_ETCD_TTL"

/* What a worker grants the callers of its request plane, so that none can
 * hold its memory or its connections (runtime.h, dyn_runtime_options_t):
 * how long, in ms, a connection may go without its HELLO, and the least
 * time any frame may take (default 10 s); the bytes per second a frame
 * must arrive at, at least (so a frame of N bytes may take N / rate s);
 * the connections open at once; the bytes of unfinished frames held for
 * all callers together and for one connection. Set by the user or tests;
 * read by the runtime (runtime/runtime.c), and named in the log lines of
 * runtime/server.c and runtime/conn.c when a caller breaks one. */
#define DYN_ENV_STALL_MS "DYN_STALL_MS"
#define DYN_ENV_MIN_FRAME_RATE "DYN_MIN_FRAME_RATE"
#define DYN_ENV_MAX_CONNS "DYN_MAX_CONNS"
#define DYN_ENV_MAX_BUFFERED "DYN_MAX_BUFFERED"
#define DYN_ENV_MAX_PEER_BUFFERED "DYN_MAX_PEER_BUFFERED"

/* ---- a worker of a served graph --------------------------------------- */

/* The merged configuration, as JSON. Set by `dynamo serve` for the
 * resolver (serve/plan.c) and every worker (serve/worker_env.c); read by C
 * services (service/cservice.c) and the Python SDK (sdk/config.py,
 * sdk/plan.py). */
#define DYN_ENV_SERVICE_CONFIG "DYNAMO_SERVICE_CONFIG"

/* The config file's absolute path (or "" for the resolver when there is
 * none), so that paths in it resolve against its directory. Set by
 * serve/plan.c and serve/worker_env.c; read by service/cservice.c (in its
 * messages), llm/services/processor.c (a tokenizer's path) and the Python
 * SDK (sdk/config.py, sdk/plan.py). */
#define DYN_ENV_CONFIG_FILE "DYN_CONFIG_FILE"

/* The directory of a FILE.py or LIB.so graph, which `dynamo build` packs.
 * Set by serve/worker_env.c; read by llm/services/processor.c. */
#define DYN_ENV_GRAPH_DIR "DYN_GRAPH_DIR"

/* The service a worker runs, and its namespace. Set by serve/worker_env.c,
 * for the service's own code and its logs; read by the runtime's answer to
 * `dynamo status` (runtime/metrics/status_report.c), which names the service with
 * them even when it serves no endpoint (a Frontend), and by tests. */
#define DYN_ENV_SERVICE_NAME "DYN_SERVICE_NAME"
#define DYN_ENV_SERVICE_NAMESPACE "DYN_SERVICE_NAMESPACE"

/* The dependencies that survived the graph's link() calls, comma-separated.
 * Set by serve/worker_env.c; read by service/cservice.c
 * (dyn_service_has_dependency). The Python SDK gets its edges from the
 * graph itself. */
#define DYN_ENV_SERVICE_DEPENDS "DYN_SERVICE_DEPENDS"

/* The worker's index within its service, from 0. Set by
 * serve/worker_env.c; read by service/cservice.c and sdk/worker.py. */
#define DYN_ENV_WORKER_INDEX "DYN_WORKER_INDEX"

/* The supervisor's pid: a worker whose parent is not it (the supervisor
 * died before the worker started) exits. Set by serve/worker_env.c; read
 * by service/cservice.c and sdk/worker.py. */
#define DYN_ENV_SUPERVISOR_PID "DYN_SUPERVISOR_PID"

/* The seconds a worker gets to drain on SIGTERM. Set by serve/worker_env.c
 * (from --grace); read by service/cservice.c and sdk/worker.py. */
#define DYN_ENV_GRACE_SECONDS "DYN_GRACE_SECONDS"

/* The port of a worker's /live and /health. Set by the user or a manifest
 * (package/k8s.c); for `dynamo serve` it is the base, read by
 * cli/serve_cmd.c, and each worker gets its own port (or "") from
 * serve/worker_env.c. Read by service/health.c and sdk/health.py. */
#define DYN_ENV_HEALTH_PORT "DYN_HEALTH_PORT"

/* The workers `dynamo serve` runs on this machine, per service:
 * "Service=count" entries, comma-separated ("Frontend=1,Worker=2,
 * PrefillWorker=1"); with --service-name, that service's alone (a
 * Kubernetes pod: one). Set by serve/worker_env.c; read by the LLM Worker
 * (llm/services/threads.c), which shares the CPUs among the engine workers
 * on the machine. */
#define DYN_ENV_LOCAL_WORKERS "DYN_LOCAL_WORKERS"

/* The address the health port binds (default all interfaces). Set by the
 * user; read by service/health.c and sdk/health.py. */
#define DYN_ENV_HEALTH_HOST "DYN_HEALTH_HOST"

/* How long a worker waits for its dependencies to appear, in ms. Set by
 * the user; read by service/cservice.c and sdk/client.py. */
#define DYN_ENV_DEPENDS_WAIT_MS "DYN_DEPENDS_WAIT_MS"

/* ---- the CLI ---------------------------------------------------------- */

/* The Python that runs the resolver and Python workers. Set by the user;
 * read by serve/plan.c (dyn__python). */
#define DYN_ENV_PYTHON "DYN_PYTHON"

/* How long, in seconds, the Python resolver may take to load a graph before
 * `dynamo serve` or `dynamo build` gives up (default 60). Set by the user;
 * read by serve/plan.c (`dynamo serve --graph-timeout` wins). */
#define DYN_ENV_GRAPH_TIMEOUT "DYN_GRAPH_TIMEOUT"

/* The number of GPUs `dynamo serve` shares out. Set by the user; read by
 * serve/gpu.c. */
#define DYN_ENV_GPU_COUNT "DYN_GPU_COUNT"

/* The container image `dynamo build` names in its manifest. Set by the
 * user; read by cli/build_cmd.c. */
#define DYN_ENV_IMAGE "DYNAMO_IMAGE"

/* Read by Python alone, so not defined here: DYN_HTTP_PORT (sdk/http.py)
 * and DYN_LLM_LIB (dynamo/llm.py). CUDA_VISIBLE_DEVICES and
 * PYTHONUNBUFFERED, which `dynamo serve` also sets, belong to CUDA and
 * Python and keep their literal names. */

#endif
