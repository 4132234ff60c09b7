/* deploy_cmd.c - `dynamo deploy`: Kubernetes manifests for a built artifact.
 *
 * Reads the artifact's dynamo.yaml and config.yaml, asks package/k8s.c for
 * the objects, and writes them as one multi-document YAML stream: to stdout,
 * to a file, or into `kubectl apply -f -`. --apply checks first that kubectl
 * exists and reaches a cluster, so that "no cluster" is one clear sentence
 * rather than a page of kubectl retries.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cli/cli.h"
#include "cli/tools.h"
#include "package/artifact.h"
#include "package/k8s.h"
#include "package/yamlout.h"

static void usage(FILE *f) {
  fprintf(f,
"usage: dynamo deploy ARTIFACT [--namespace NS] [-o FILE | --apply] [options]\n"
"\n"
"Writes the Kubernetes objects that run a `dynamo build` artifact (its\n"
"directory, dynamo.yaml or .tar.gz): a ConfigMap with its config; per service\n"
"a Deployment (replicas = workers, one worker per pod, resources as\n"
"requests and limits, GPUs as nvidia.com/gpu, probes on the worker's\n"
"/live and /health on port %d) and, for a service with HTTP, a Service;\n"
"and etcd and NATS (StatefulSet + Service each) unless --etcd / --nats\n"
"name existing ones. Plain Kubernetes: no operator needed.\n"
"\n"
"options\n"
"  -n, --namespace NS   put every object in NS (default: kubectl's current)\n"
"  -o, --output FILE    write the manifests to FILE (default: stdout)\n"
"  --apply              pipe them to `kubectl apply -f -`\n"
"  --image IMAGE        the image with dynamo and the artifact in /app\n"
"                       (default NAME:VERSION, what `dynamo build\n"
"                       --containerize` tags)\n"
"  --etcd URL           use this etcd instead of deploying one\n"
"  --nats URL           use this NATS instead of deploying one\n"
"  -h, --help           this text\n", DYN_K8S_HEALTH_PORT);
}

typedef struct deploy {
  const char *artifact, *ns, *output, *image, *etcd, *nats;
  int apply;
} deploy_t;

static int parse_args(deploy_t *d, int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    int r = 0;
    if (a[0] != '-' || !a[1]) {
      if (d->artifact) {
        fprintf(stderr, "dynamo deploy: one ARTIFACT only; '%s' is a second one\n", a);
        return 2;
      }
      d->artifact = a;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return -1;
    } else if (!strcmp(a, "--apply")) {
      d->apply = 1;
    } else if ((r = dyn__cli_option(argc, argv, &i, "-n", &d->ns)) ||
               (r = dyn__cli_option(argc, argv, &i, "--namespace", &d->ns)) ||
               (r = dyn__cli_option(argc, argv, &i, "-o", &d->output)) ||
               (r = dyn__cli_option(argc, argv, &i, "--output", &d->output)) ||
               (r = dyn__cli_option(argc, argv, &i, "--image", &d->image)) ||
               (r = dyn__cli_option(argc, argv, &i, "--etcd", &d->etcd)) ||
               (r = dyn__cli_option(argc, argv, &i, "--nats", &d->nats))) {
      if (r < 0) return 2;
    } else {
      fprintf(stderr, "dynamo deploy: unknown option '%s' (try --help)\n", a);
      return 2;
    }
  }
  if (!d->artifact) {
    fprintf(stderr, "dynamo deploy: no ARTIFACT given\n\n");
    usage(stderr);
    return 2;
  }
  if (d->apply && d->output) {
    fprintf(stderr, "dynamo deploy: -o and --apply are either-or\n");
    return 2;
  }
  return 0;
}

static char *slurp(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t len = 0;
  FILE *m = open_memstream(&buf, &len);
  char chunk[8192];
  size_t n;
  while (m && (n = fread(chunk, 1, sizeof chunk, f)) > 0) fwrite(chunk, 1, n, m);
  fclose(f);
  if (!m || fclose(m)) {
    free(buf);
    return NULL;
  }
  return buf;
}

static int apply(const char *yaml) {
  if (!dyn__tool_on_path("kubectl")) {
    fprintf(stderr,
            "dynamo deploy: --apply needs kubectl, and there is none on PATH; write the "
            "manifests with -o FILE and apply them where kubectl is\n");
    return 1;
  }
  char *check[] = {"kubectl", "cluster-info", "--request-timeout=5s", NULL};
  if (dyn__tool_run(check, NULL, 0, 1) != 0) {
    fprintf(stderr,
            "dynamo deploy: --apply: no Kubernetes cluster is reachable (`kubectl cluster-info` "
            "fails: no kubeconfig context, or its API server does not answer); nothing applied\n");
    return 1;
  }
  char *argv[] = {"kubectl", "apply", "-f", "-", NULL};
  int st = dyn__tool_run(argv, yaml, strlen(yaml), 0);
  if (st != 0) {
    fprintf(stderr, "dynamo deploy: kubectl apply failed (exit status %d); its message is above\n", st);
    return 1;
  }
  return 0;
}

int dyn__cmd_deploy(int argc, char **argv) {
  deploy_t d = {0};
  int code = parse_args(&d, argc, argv);
  if (code) return code < 0 ? 0 : code;
  dyn__artifact_t a;
  char err[2048];
  if (dyn__artifact_open(d.artifact, &a, err, sizeof err)) {
    fprintf(stderr, "dynamo deploy: %s\n", err);
    return 1;
  }
  char *config = slurp(a.config_path), *image = NULL, *yaml = NULL;
  json_t *docs = NULL;
  code = 1;
  if (!config) {
    fprintf(stderr, "dynamo deploy: cannot read %s: %s\n", a.config_path, strerror(errno));
    goto out;
  }
  if (!d.image &&
      asprintf(&image, "%s:%s", json_string_value(json_object_get(a.manifest, "name")),
               json_string_value(json_object_get(a.manifest, "version"))) < 0) {
    image = NULL;
    goto out;
  }
  dyn__k8s_opts_t o = {.ns = d.ns, .image = d.image ? d.image : image, .etcd = d.etcd,
                       .nats = d.nats, .config_yaml = config};
  if (dyn__k8s_objects(a.manifest, &o, &docs, err, sizeof err)) {
    fprintf(stderr, "dynamo deploy: %s\n", err);
    goto out;
  }
  json_t **list = calloc(json_array_size(docs), sizeof *list);
  for (size_t i = 0; list && i < json_array_size(docs); i++) list[i] = json_array_get(docs, i);
  int rc = list ? dyn__yaml_dump(list, json_array_size(docs), &yaml) : -1;
  free(list);
  if (rc) {
    fprintf(stderr, "dynamo deploy: cannot write the manifests as YAML\n");
    goto out;
  }
  if (d.apply) {
    code = apply(yaml);
  } else if (d.output) {
    FILE *f = fopen(d.output, "w");
    int bad = !f || fputs(yaml, f) < 0;
    if ((f && fclose(f)) || bad) {
      fprintf(stderr, "dynamo deploy: cannot write %s: %s\n", d.output, strerror(errno));
      goto out;
    }
    fprintf(stderr, "dynamo deploy: %zu objects written to %s\n", json_array_size(docs), d.output);
    code = 0;
  } else {
    code = fputs(yaml, stdout) < 0 || fflush(stdout) ? 1 : 0;
  }
out:
  free(yaml);
  json_decref(docs);
  free(image);
  free(config);
  dyn__artifact_close(&a);
  return code;
}
