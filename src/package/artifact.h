/* artifact.h - the `dynamo build` artifact: writing one, and opening one
 * for `dynamo serve ARTIFACT` and `dynamo deploy ARTIFACT`.
 *
 * An artifact is a directory NAME-VERSION/ and the same tree as
 * NAME-VERSION.tar.gz:
 *
 *   dynamo.yaml           the manifest: name, version, entry, target (relative
 *                         to src/), services (workers, resources, envs,
 *                         endpoints, http, dependencies, config), edges
 *   config.yaml           the merged configuration the graph was built with
 *   src/                  the user's sources (a Python graph's directory, or a
 *                         C graph's shared object)
 *   env/docker/Dockerfile an image that serves the artifact
 *   README.md             how to run, containerize and deploy it
 *
 * The version is a hash of everything that goes in, so the same inputs give
 * the same version and, with tarball.c, the same bytes.
 */
#ifndef DYN__PACKAGE_ARTIFACT_H
#define DYN__PACKAGE_ARTIFACT_H

#include <jansson.h>
#include <stddef.h>

#include "serve/plan.h"

typedef struct dyn__build_in {
  const char *target;   /* as given to `dynamo build`: FILE.py:Svc or LIB.so:Svc */
  const dyn__plan_t *plan;
  json_t *config;       /* the merged configuration */
  const char *outdir;   /* created when missing */
  const char *version;  /* NULL: the content hash */
  const char *image;    /* the Dockerfile's default base image */
} dyn__build_in_t;

typedef struct dyn__build_out {
  char name[128];
  char version[64];
  char dir[4096];  /* outdir/name-version */
  char tgz[4096];  /* outdir/name-version.tar.gz */
  size_t nfiles;   /* files under src/ */
} dyn__build_out_t;

int dyn__artifact_build(const dyn__build_in_t *in, dyn__build_out_t *out, char *err,
                        size_t errlen);

/* An opened artifact. */
typedef struct dyn__artifact {
  char *root;        /* the artifact directory */
  char *tmpdir;      /* where a .tar.gz was unpacked (removed by close), or NULL */
  json_t *manifest;  /* dynamo.yaml */
  char *target;      /* root/src/TARGET, for the supervisor */
  char *config_path; /* root/config.yaml */
} dyn__artifact_t;

/* True when path names an artifact rather than a graph: a directory with a
 * dynamo.yaml, a file named dynamo.yaml, or a .tar.gz / .tgz file. */
int dyn__artifact_is(const char *path);

/* Opens path (any of the three forms; a .tar.gz is unpacked into a fresh
 * temporary directory) and checks its manifest. */
int dyn__artifact_open(const char *path, dyn__artifact_t *out, char *err, size_t errlen);
void dyn__artifact_close(dyn__artifact_t *a);

/* From now until something else handles SIGTERM and SIGINT (the
 * supervisor's loop does), either signal removes the directory a .tar.gz
 * is being or was unpacked into, then ends the process as it would have.
 * For the startup of `dynamo serve ARTIFACT`. */
void dyn__artifact_guard_signals(void);

/* A DNS-1123 label from s (lowercase letters, digits, '-'; at most max
 * bytes, max < cap): what Kubernetes and image names accept. */
void dyn__dns_label(const char *s, char *out, size_t cap, size_t max);

#endif
