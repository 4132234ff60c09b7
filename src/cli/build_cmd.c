/* build_cmd.c - `dynamo build`: package a graph into an artifact.
 *
 * The graph is resolved exactly as `dynamo serve` resolves it (the same
 * config merge, config/merge.c, and the same resolver, serve/plan.c), so the
 * artifact records the plan that would have run. Writing the artifact is
 * package/artifact.c's job;
 * this file is the command line and, with --containerize, handing the
 * artifact to whichever image builder actually works here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/env_names.h"
#include "cli/cli.h"
#include "cli/tools.h"
#include "package/artifact.h"
#include "config/merge.h"
#include "serve/plan.h"

#define DEFAULT_IMAGE "dynamo:latest"

static void usage(FILE *f) {
  fprintf(f,
"usage: dynamo build TARGET [-f CONFIG.yaml] [--Service.key=value ...] [options]\n"
"\n"
"Packages a graph into an artifact that `dynamo serve` and `dynamo deploy`\n"
"take: OUT/NAME-VERSION/ and OUT/NAME-VERSION.tar.gz, with the manifest\n"
"dynamo.yaml, the merged config.yaml, the sources under src/, a Dockerfile\n"
"(env/docker/Dockerfile) and a README. NAME is the entry service in lower\n"
"case; VERSION a hash of everything packed, so the same inputs give the\n"
"same version and a byte-identical archive.\n"
"\n"
"TARGET\n"
"  path/to/graph.py:Service    packs the directory of graph.py (without\n"
"                              __pycache__, .git, build/, dist/, *.pyc)\n"
"  path/to/libgraph.so:Service packs the shared object\n"
"\n"
"options\n"
"  -f, --file CONFIG.yaml      the configuration, as for `dynamo serve`\n"
"  --Service.key=value         overrides, as for `dynamo serve`\n"
"  -o, --output DIR            where to write (default ./dist)\n"
"  --version VERSION           instead of the content hash\n"
"  --image IMAGE               the Dockerfile's default base image, one with\n"
"                              dynamo installed (default $DYNAMO_IMAGE, else\n"
"                              " DEFAULT_IMAGE ")\n"
"  --containerize              also build the image NAME:VERSION with docker,\n"
"                              podman or buildah, whichever works here\n"
"  -h, --help                  this text\n"
"\n"
"environment\n"
"  SOURCE_DATE_EPOCH           the mtime of every archive entry (default 0)\n"
"  DYN_PYTHON                  the Python that resolves the graph\n");
}

typedef struct build {
  const char *target, *file, *outdir, *version, *image;
  int containerize;
  const char **overrides;
  size_t noverrides;
} build_t;

static int parse_args(build_t *b, int argc, char **argv) {
  b->overrides = calloc((size_t)argc, sizeof *b->overrides);
  if (!b->overrides) return 1;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v;
    int r = 0;
    if (a[0] != '-' || !a[1]) {
      if (b->target) {
        fprintf(stderr, "dynamo build: one TARGET only; '%s' is a second one\n", a);
        return 2;
      }
      b->target = a;
    } else if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
      usage(stdout);
      return -1;
    } else if (!strcmp(a, "--containerize")) {
      b->containerize = 1;
    } else if ((r = dyn__cli_option(argc, argv, &i, "-f", &v)) || (r = dyn__cli_option(argc, argv, &i, "--file", &v))) {
      if (r < 0) return 2;
      b->file = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "-o", &v)) ||
               (r = dyn__cli_option(argc, argv, &i, "--output", &v))) {
      if (r < 0) return 2;
      b->outdir = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--version", &v))) {
      if (r < 0) return 2;
      b->version = v;
    } else if ((r = dyn__cli_option(argc, argv, &i, "--image", &v))) {
      if (r < 0) return 2;
      b->image = v;
    } else if (a[1] == '-' && dyn__config_is_override(a + 2)) {
      b->overrides[b->noverrides++] = a + 2;
    } else {
      fprintf(stderr, "dynamo build: unknown option '%s' (try --help)\n", a);
      return 2;
    }
  }
  if (!b->target) {
    fprintf(stderr, "dynamo build: no TARGET given\n\n");
    usage(stderr);
    return 2;
  }
  return 0;
}

/* docker needs a daemon, podman and buildah do not; try them in that
 * order and say, for each, why it could not be used. */
static int containerize(const dyn__build_out_t *out) {
  char tag[256], dockerfile[4200];
  snprintf(tag, sizeof tag, "%s:%s", out->name, out->version);
  snprintf(dockerfile, sizeof dockerfile, "%s/env/docker/Dockerfile", out->dir);
  char why[512] = "";
  if (dyn__tool_on_path("docker")) {
    char *info[] = {"docker", "info", NULL};
    if (dyn__tool_run(info, NULL, 0, 1) == 0) {
      char *argv[] = {"docker", "build", "-f", dockerfile, "-t", tag, (char *)out->dir, NULL};
      printf("dynamo build: docker build -t %s\n", tag);
      return dyn__tool_run(argv, NULL, 0, 0) == 0 ? 0 : 1;
    }
    strcat(why, "docker is installed but its daemon does not answer (`docker info` fails); ");
  } else {
    strcat(why, "docker is not on PATH; ");
  }
  if (dyn__tool_on_path("podman")) {
    char *argv[] = {"podman", "build", "-f", dockerfile, "-t", tag, (char *)out->dir, NULL};
    printf("dynamo build: podman build -t %s\n", tag);
    if (dyn__tool_run(argv, NULL, 0, 0) == 0) return 0;
    strcat(why, "podman build failed (its output is above); ");
  } else {
    strcat(why, "podman is not on PATH; ");
  }
  if (dyn__tool_on_path("buildah")) {
    char *argv[] = {"buildah", "bud", "-f", dockerfile, "-t", tag, (char *)out->dir, NULL};
    printf("dynamo build: buildah bud -t %s\n", tag);
    if (dyn__tool_run(argv, NULL, 0, 0) == 0) return 0;
    strcat(why, "buildah bud failed (its output is above)");
  } else {
    strcat(why, "buildah is not on PATH");
  }
  fprintf(stderr,
          "dynamo build: --containerize: no image builder works here: %s.\n"
          "The artifact is built; build the image elsewhere with\n"
          "  docker build -f %s -t %s %s\n",
          why, dockerfile, tag, out->dir);
  return 1;
}

int dyn__cmd_build(int argc, char **argv) {
  build_t b = {0};
  int code = parse_args(&b, argc, argv);
  if (code) {
    free(b.overrides);
    return code < 0 ? 0 : code;
  }
  if (!b.outdir) b.outdir = "dist";
  if (!b.image) b.image = getenv(DYN_ENV_IMAGE);
  if (!b.image || !*b.image) b.image = DEFAULT_IMAGE;
  json_t *config = NULL;
  char err[2048];
  int rc = dyn__config_merge(b.file, b.overrides, b.noverrides, &config, err, sizeof err);
  free(b.overrides);
  if (rc) {
    fprintf(stderr, "dynamo build: %s\n", err);
    return 1;
  }
  dyn__plan_t plan;
  rc = dyn__plan_resolve(uv_default_loop(), b.target, config, b.file, 0, &plan, err,
                         sizeof err);
  if (rc) {
    fprintf(stderr, "dynamo build: %s\n", err);
    json_decref(config);
    return 1;
  }
  dyn__build_in_t in = {.target = b.target, .plan = &plan, .config = config,
                        .outdir = b.outdir, .version = b.version, .image = b.image};
  dyn__build_out_t out;
  rc = dyn__artifact_build(&in, &out, err, sizeof err);
  dyn__plan_free(&plan);
  json_decref(config);
  if (rc) {
    fprintf(stderr, "dynamo build: %s\n", err);
    return 1;
  }
  printf("dynamo build: %s %s (%zu source file%s)\n  %s\n  %s\n", out.name, out.version,
         out.nfiles, out.nfiles == 1 ? "" : "s", out.dir, out.tgz);
  fflush(stdout);
  return b.containerize ? containerize(&out) : 0;
}
