/* artifact.c - writing a `dynamo build` artifact and opening one again.
 *
 * Building copies the sources into a staging directory beside the final one
 * (hashing them on the way), writes the manifest, config, Dockerfile and
 * README, renames the staging directory into place and archives it. Only
 * the rename makes NAME-VERSION/ appear, so a failed build never leaves a
 * directory that looks like an artifact.
 *
 * What goes into src/, and why:
 *  - a Python graph: the directory of its file, recursively, because the
 *    graph imports its neighbours; minus what is never source (__pycache__,
 *    VCS and virtualenv directories, build/ and dist/, *.pyc) and minus the
 *    output directory itself when it lies inside.
 *  - a C graph: its shared object only. Sources beside a .so are usually a
 *    build tree, and the .so is what `dynamo worker` loads.
 *
 * Models are never packed (a .gguf among the sources is left out too): they
 * are large, shared by every build of a graph, and live where the workers
 * run (the model cache, a volume on a cluster). The manifest names each
 * model file a service's config points to, with its size and sha256,
 * computed here from the file (models:, below).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* asprintf */
#endif
#include "package/artifact.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <libgen.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "dynamo/status.h"
#include "config/yaml_read.h"
#include "common/fail.h"
#include "common/model_file.h"
#include "package/tarball.h"
#include "package/yamlout.h"

#define MANIFEST_FORMAT 1

/* ---- small file helpers ----------------------------------------------- */

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *f) {
  (void)st, (void)flag, (void)f;
  return remove(p) && errno != ENOENT ? -1 : 0;
}

/* rm -rf, not following symbolic links. */
static int rmtree(const char *path) {
  struct stat st;
  if (lstat(path, &st)) return errno == ENOENT ? DYN_OK : DYN_ESYS;
  return nftw(path, rm_one, 16, FTW_DEPTH | FTW_PHYS) ? DYN_ESYS : DYN_OK;
}

static int mkdirs(const char *path) {
  char buf[PATH_MAX];
  if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return -1;
  for (char *s = buf + 1; (s = strchr(s, '/')); s++) {
    *s = 0;
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    *s = '/';
  }
  return mkdir(buf, 0755) && errno != EEXIST ? -1 : 0;
}

static int write_text(const char *path, const char *text, char *err, size_t errlen) {
  FILE *f = fopen(path, "w");
  if (!f) return dyn__fail(err, errlen, DYN_ESYS, "cannot create %s: %s", path, strerror(errno));
  size_t n = strlen(text);
  int bad = fwrite(text, 1, n, f) != n;
  if (fclose(f) || bad) return dyn__fail(err, errlen, DYN_ESYS, "cannot write %s", path);
  return DYN_OK;
}

static char *read_text(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t cap = 0, n = 0;
  for (;;) {
    if (n + 4096 + 1 > cap) {
      char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);
      if (!nb) break;
      buf = nb;
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    if (r == 0) break;
  }
  int bad = ferror(f) || !buf;
  fclose(f);
  if (bad) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  if (len) *len = n;
  return buf;
}

void dyn__dns_label(const char *s, char *out, size_t cap, size_t max) {
  size_t n = 0;
  if (max >= cap) max = cap - 1;
  for (; *s && n < max; s++) {
    char c = *s;
    if (c >= 'A' && c <= 'Z') c = (char)(c - 'A' + 'a');
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) c = '-';
    if (c == '-' && (n == 0 || out[n - 1] == '-')) continue;
    out[n++] = c;
  }
  while (n && out[n - 1] == '-') n--;
  if (!n) out[n++] = 'x';
  out[n] = 0;
}

/* ---- hashing: FNV-1a, 64 bits ------------------------------------------
 * A version id, not a security boundary: it only has to change when any
 * input changes. */

typedef struct { uint64_t h; } hash_t;
static void hash_init(hash_t *h) { h->h = 14695981039346656037ull; }
static void hash_add(hash_t *h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h->h = (h->h ^ b[i]) * 1099511628211ull;
}
static void hash_str(hash_t *h, const char *s) { hash_add(h, s, strlen(s) + 1); }

/* ---- copying sources -------------------------------------------------- */

typedef struct copier {
  hash_t *hash;
  dev_t skip_dev;  /* the output directory */
  ino_t skip_ino;
  dev_t stage_dev; /* and the staging directory in it */
  ino_t stage_ino;
  size_t nfiles;
  char *err;
  size_t errlen;
} copier_t;

static int excluded(const char *name, int is_dir) {
  static const char *const dirs[] = {"__pycache__", ".git", ".hg", ".svn", ".venv", "venv",
                                     "build", "dist", ".pytest_cache", ".mypy_cache",
                                     "node_modules", NULL};
  if (is_dir) {
    for (const char *const *d = dirs; *d; d++)
      if (!strcmp(name, *d)) return 1;
    return 0;
  }
  size_t n = strlen(name);
  return (n > 4 && (!strcmp(name + n - 4, ".pyc") || !strcmp(name + n - 4, ".pyo"))) ||
         (n > 5 && !strcmp(name + n - 5, ".gguf")); /* a model: named, not packed */
}

static int exists(const char *dir, const char *name, const char *suffix) {
  char p[PATH_MAX];
  if (snprintf(p, sizeof p, "%s/%s%s", dir, name, suffix) >= (int)sizeof p) return 0;
  return access(p, F_OK) == 0;
}

/* What earlier builds left among the sources, when -o named the graph's
 * own directory or one inside it: an artifact (NAME-VERSION/ with a
 * dynamo.yaml beside NAME-VERSION.tar.gz), that archive, a directory
 * holding such a pair (an output directory under any name), and the
 * staging directories (.NAME-build-XXXXXX) of builds in progress. None of
 * it is source, and packing it would nest every build in the next. */
static int is_build_output(const char *parent, const char *name, int is_dir) {
  char stem[NAME_MAX + 1], dir[PATH_MAX];
  size_t n = strlen(name);
  if (!is_dir) {
    if (n <= 7 || strcmp(name + n - 7, ".tar.gz") || n - 7 > NAME_MAX) return 0;
    memcpy(stem, name, n - 7);
    stem[n - 7] = 0;
    return exists(parent, stem, "/dynamo.yaml");
  }
  if (name[0] == '.' && n > 14 && !strncmp(name + n - 13, "-build-", 7)) return 1;
  if (exists(parent, name, "/dynamo.yaml") && exists(parent, name, ".tar.gz")) return 1;
  if (snprintf(dir, sizeof dir, "%s/%s", parent, name) >= (int)sizeof dir) return 0;
  DIR *d = opendir(dir);
  int found = 0;
  for (struct dirent *e; d && !found && (e = readdir(d));)
    found = is_build_output(dir, e->d_name, 0);
  if (d) closedir(d);
  return found;
}

static int copy_file(copier_t *c, const char *from, const char *to, const char *rel,
                     const struct stat *st) {
  int in = open(from, O_RDONLY);
  if (in < 0) return dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot read %s: %s", from, strerror(errno));
  mode_t mode = (st->st_mode & S_IXUSR) ? 0755 : 0644;
  int out = open(to, O_WRONLY | O_CREAT | O_EXCL, mode);
  /* open's mode goes through the umask (0177 would drop the exec bit that
   * the archive records and the version hashes): set it as meant. */
  if (out >= 0 && fchmod(out, mode)) {
    close(out);
    out = -1;
  }
  if (out < 0) {
    close(in);
    return dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot create %s: %s", to, strerror(errno));
  }
  hash_str(c->hash, rel);
  hash_add(c->hash, (st->st_mode & S_IXUSR) ? "x" : "-", 1);
  char buf[65536];
  ssize_t n;
  int rc = DYN_OK;
  while ((n = read(in, buf, sizeof buf)) != 0) {
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 || write(out, buf, (size_t)n) != n) {
      rc = dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot copy %s: %s", from, strerror(errno));
      break;
    }
    hash_add(c->hash, buf, (size_t)n);
  }
  hash_add(c->hash, "\0", 1);
  close(in);
  if (close(out) && !rc) rc = dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot write %s", to);
  c->nfiles++;
  return rc;
}

static int by_name(const struct dirent **x, const struct dirent **y) {
  return strcmp((*x)->d_name, (*y)->d_name);
}
static int skip_dots(const struct dirent *d) {
  return strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
}

/* Sorted, so that the hash does not depend on the order readdir gives. */
static int copy_tree(copier_t *c, const char *from, const char *to, const char *rel) {
  struct dirent **list;
  int n = scandir(from, &list, skip_dots, by_name);
  if (n < 0) return dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot list %s: %s", from, strerror(errno));
  int rc = DYN_OK;
  for (int i = 0; i < n; i++) {
    const char *name = list[i]->d_name;
    char f[PATH_MAX], t[PATH_MAX], r[PATH_MAX];
    struct stat st;
    if (!rc && (snprintf(f, sizeof f, "%s/%s", from, name) >= (int)sizeof f ||
                snprintf(t, sizeof t, "%s/%s", to, name) >= (int)sizeof t ||
                snprintf(r, sizeof r, "%s%s%s", rel, *rel ? "/" : "", name) >= (int)sizeof r))
      rc = dyn__fail(c->err, c->errlen, DYN_EINVAL, "path too long under %s", from);
    if (!rc && lstat(f, &st))
      rc = dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot stat %s: %s", f, strerror(errno));
    if (!rc) {
      if (S_ISDIR(st.st_mode)) {
        if (!excluded(name, 1) && !(st.st_dev == c->skip_dev && st.st_ino == c->skip_ino) &&
            !(st.st_dev == c->stage_dev && st.st_ino == c->stage_ino) &&
            !is_build_output(from, name, 1)) {
          if (mkdir(t, 0755) || chmod(t, 0755)) /* whatever the umask */
            rc = dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot create %s: %s", t, strerror(errno));
          else
            rc = copy_tree(c, f, t, r);
        }
      } else if (S_ISREG(st.st_mode)) {
        if (!excluded(name, 0) && !is_build_output(from, name, 0)) rc = copy_file(c, f, t, r, &st);
      } else if (S_ISLNK(st.st_mode)) {
        /* A link's target is not ours to pack, and following one could
         * drag in a whole tree; say so rather than guess. */
        fprintf(stderr, "dynamo build: warning: %s is a symbolic link; not packed\n", f);
      }
    }
    free(list[i]);
  }
  free(list);
  return rc;
}

/* ---- the manifest ----------------------------------------------------- */

/* The service's own section with the Common keys it opted into, as the
 * workers see it. */
static json_t *service_config(json_t *config, const char *name) {
  json_t *section = json_object_get(config, name);
  json_t *out = json_object();
  json_t *common = json_object_get(config, "Common");
  size_t i;
  json_t *k;
  json_array_foreach(json_object_get(section, "common-configs"), i, k) {
    json_t *v = json_object_get(common, json_string_value(k));
    if (v) json_object_set(out, json_string_value(k), v);
  }
  if (json_is_object(section)) json_object_update(out, section);
  return out;
}

static json_t *copy_or(json_t *v, json_t *dflt) {
  if (!v || json_is_null(v)) return dflt;
  json_decref(dflt);
  return json_deep_copy(v);
}

static json_t *service_entry(const dyn__service_t *s, json_t *config) {
  json_t *o = json_object();
  json_object_set_new(o, "name", json_string(s->name));
  json_object_set_new(o, "namespace", json_string(s->ns));
  json_object_set_new(o, "workers", json_integer(s->workers));
  json_t *res = copy_or(json_object_get(s->json, "resources"), json_object());
  json_object_set_new(res, "gpu", json_integer(s->gpus));
  json_object_set_new(o, "resources", res);
  json_t *envs = json_array();
  for (char **e = s->envs; *e; e++) {
    char *eq = strchr(*e, '=');
    json_t *pair = json_object();
    json_object_set_new(pair, "name", json_stringn(*e, (size_t)(eq - *e)));
    json_object_set_new(pair, "value", json_string(eq + 1));
    json_array_append_new(envs, pair);
  }
  json_object_set_new(o, "envs", envs);
  json_object_set_new(o, "endpoints", copy_or(json_object_get(s->json, "endpoints"), json_array()));
  json_t *http = json_null();
  if (s->http_host) {
    http = json_object();
    json_object_set_new(http, "host", json_string(s->http_host));
    json_object_set_new(http, "port", json_integer(s->http_port));
    json_object_set_new(http, "routes", copy_or(json_object_get(json_object_get(s->json, "http"),
                                                                "routes"), json_array()));
  }
  json_object_set_new(o, "http", http);
  json_object_set_new(o, "dependencies",
                      copy_or(json_object_get(s->json, "dependencies"), json_array()));
  if (s->c_target) {
    /* The library's file name and the service: where the library lay on
     * the build machine is no part of the artifact (the Python graph finds
     * it again where it runs) and must not change the version. */
    const char *colon = strrchr(s->c_target, ':');
    const char *base = s->c_target;
    for (const char *p = s->c_target; colon && p < colon; p++)
      if (*p == '/') base = p + 1;
    json_object_set_new(o, "c_target", json_string(base));
  }
  json_object_set_new(o, "config", service_config(config, s->name));
  return o;
}

static json_t *manifest(const dyn__build_in_t *in, const char *name, const char *rel_target) {
  const dyn__plan_t *p = in->plan;
  json_t *m = json_object();
  json_object_set_new(m, "format", json_integer(MANIFEST_FORMAT));
  json_object_set_new(m, "name", json_string(name));
  json_object_set_new(m, "version", json_string(""));
  json_object_set_new(m, "entry", json_string(p->entry));
  json_object_set_new(m, "kind", json_string(p->is_c ? "c" : "python"));
  json_object_set_new(m, "target", json_string(rel_target));
  json_t *services = json_array();
  for (size_t i = 0; i < p->nservices; i++)
    json_array_append_new(services, service_entry(&p->services[i], in->config));
  json_object_set_new(m, "services", services);
  json_object_set_new(m, "edges", copy_or(json_object_get(p->json, "edges"), json_array()));
  return m;
}

/* ---- models ----------------------------------------------------------- */

/* The sha256 of a file, as 64 hex digits. */
static int sha256_file(const char *path, char hex[65], long long *bytes, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) return dyn__fail(err, errlen, DYN_ESYS, "cannot read %s: %s", path, strerror(errno));
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  int ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL);
  static unsigned char chunk[1 << 20];
  size_t n;
  *bytes = 0;
  while (ok && (n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    ok = EVP_DigestUpdate(md, chunk, n);
    *bytes += (long long)n;
  }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  ok = ok && !ferror(f) && EVP_DigestFinal_ex(md, d, &dlen) && dlen == 32;
  EVP_MD_CTX_free(md);
  fclose(f);
  if (!ok) return dyn__fail(err, errlen, DYN_ESYS, "cannot compute the sha256 of %s", path);
  for (unsigned i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", d[i]);
  return DYN_OK;
}

static const char *config_str(json_t *cfg, const char *dash, const char *under) {
  json_t *v = json_object_get(cfg, dash);
  if (!v) v = json_object_get(cfg, under);
  return json_string_value(v);
}

/* The manifest's models: every model file a service's config names
 * (model-path, or model as a path or a name in the model cache, as the
 * LLM services find it), once, with the services that use it, its size and
 * its sha256. A model that is not there is an error when the config
 * surely means a file (model-path, a path, or a llama.cpp Worker); a
 * model name no file answers to is a served name (e.g. the simulated
 * engine's) and is left out. */
static int add_models(json_t *m, char *err, size_t errlen) {
  json_t *models = json_array(), *svc;
  size_t i;
  json_array_foreach(json_object_get(m, "services"), i, svc) {
    json_t *cfg = json_object_get(svc, "config");
    const char *name = json_string_value(json_object_get(svc, "name"));
    const char *model_path = config_str(cfg, "model-path", "model_path");
    const char *model = json_string_value(json_object_get(cfg, "model"));
    const char *engine = json_string_value(json_object_get(cfg, "engine"));
    char buf[PATH_MAX];
    const char *file = dyn__model_file(model_path, model, buf, sizeof buf);
    if (!file) continue;
    struct stat st;
    if (stat(file, &st) || !S_ISREG(st.st_mode)) {
      if (!model_path && file == buf && !(engine && !strcmp(engine, "llama.cpp"))) continue;
      json_decref(models);
      return dyn__fail(err, errlen, DYN_ENOTFOUND,
                       "service %s: model file %s not found%s%s (the artifact names its model "
                       "and sha256, so the model must be here at build time)", name, file,
                       file == buf ? "; fetch it with scripts/fetch_model.sh " : "",
                       file == buf ? model : "");
    }
    json_t *entry = NULL, *e;
    size_t k;
    json_array_foreach(models, k, e)
      if (!strcmp(json_string_value(json_object_get(e, "path")), file)) entry = e;
    if (!entry) {
      char hex[65];
      long long bytes = 0;
      int rc = sha256_file(file, hex, &bytes, err, errlen);
      if (rc) {
        json_decref(models);
        return rc;
      }
      const char *slash = strrchr(file, '/');
      entry = json_object();
      json_object_set_new(entry, "name", json_string(model_path ? model_path : model));
      json_object_set_new(entry, "file", json_string(slash ? slash + 1 : file));
      json_object_set_new(entry, "path", json_string(file));
      json_object_set_new(entry, "bytes", json_integer(bytes));
      json_object_set_new(entry, "sha256", json_string(hex));
      json_object_set_new(entry, "services", json_array());
      json_array_append_new(models, entry);
    }
    json_array_append_new(json_object_get(entry, "services"), json_string(name));
  }
  /* Where the file lay on the build machine is no part of the artifact. */
  json_array_foreach(models, i, svc) json_object_del(svc, "path");
  json_object_set_new(m, "models", models);
  return DYN_OK;
}

/* ---- generated files -------------------------------------------------- */

/* The Dockerfile's default base image: the one the graph's code names
 * (@service(image=...), the entry's first, else the first service's in plan
 * order), else in->image (--image, $DYNAMO_IMAGE or the default). */
static const char *base_image(const dyn__build_in_t *in) {
  const dyn__service_t *entry = dyn__plan_find(in->plan, in->plan->entry);
  const char *img = entry ? json_string_value(json_object_get(entry->json, "image")) : NULL;
  for (size_t i = 0; !img && i < in->plan->nservices; i++)
    img = json_string_value(json_object_get(in->plan->services[i].json, "image"));
  return img && *img ? img : in->image;
}

static char *dockerfile(json_t *m, const char *image) {
  const char *name = json_string_value(json_object_get(m, "name"));
  const char *version = json_string_value(json_object_get(m, "version"));
  char ports[512] = "";
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(m, "services"), i, s) {
    json_t *port = json_object_get(json_object_get(s, "http"), "port");
    if (json_is_integer(port) && strlen(ports) < sizeof ports - 16)
      snprintf(ports + strlen(ports), sizeof ports - strlen(ports), " %lld",
               (long long)json_integer_value(port));
  }
  char *out = NULL;
  if (asprintf(&out,
               "# %s %s, built by `dynamo build`.\n"
               "# The base image must have dynamo installed (`dynamo` on PATH and its Python\n"
               "# package importable). Build from the artifact's directory:\n"
               "#   docker build -f env/docker/Dockerfile -t %s:%s .\n"
               "# Without DYN_SERVICE the container serves the whole graph; with it, one\n"
               "# service (the Kubernetes manifests of `dynamo deploy` run one per pod).\n"
               "ARG DYNAMO_IMAGE=%s\n"
               "FROM ${DYNAMO_IMAGE}\n"
               "COPY . /app\n"
               "ENV DYN_SERVICE=\"\" DYN_LISTEN_HOST=0.0.0.0\n"
               "%s%s%s"
               "CMD [\"sh\", \"-c\", \"exec dynamo serve /app ${DYN_SERVICE:+--service-name \\\"$DYN_SERVICE\\\"}\"]\n",
               name, version, name, version, image, *ports ? "EXPOSE" : "", ports,
               *ports ? "\n" : "") < 0)
    return NULL;
  return out;
}

static char *readme(json_t *m) {
  const char *name = json_string_value(json_object_get(m, "name"));
  const char *version = json_string_value(json_object_get(m, "version"));
  const char *entry = json_string_value(json_object_get(m, "entry"));
  char services[2048] = "";
  size_t i;
  json_t *s;
  json_array_foreach(json_object_get(m, "services"), i, s) {
    size_t n = strlen(services);
    json_t *port = json_object_get(json_object_get(s, "http"), "port");
    char http[64] = "";
    if (json_is_integer(port)) snprintf(http, sizeof http, ", HTTP port %lld", (long long)json_integer_value(port));
    snprintf(services + n, sizeof services - n, "- %s: %lld worker(s)%s\n",
             json_string_value(json_object_get(s, "name")),
             (long long)json_integer_value(json_object_get(s, "workers")), http);
  }
  char models[2048] = "";
  json_array_foreach(json_object_get(m, "models"), i, s) {
    size_t n = strlen(models);
    snprintf(models + n, sizeof models - n, "%s- %s: %s, %lld bytes, sha256 %s\n",
             n ? "" : "Models (not packed: each worker finds its model by name in $DYN_MODEL_DIR,\n"
                      "default ~/.cache/dynamo/models, as NAME.gguf, or at the path given;\n"
                      "scripts/fetch_model.sh NAME fetches a known one; see docs/deploy.md):\n\n",
             json_string_value(json_object_get(s, "name")),
             json_string_value(json_object_get(s, "file")),
             (long long)json_integer_value(json_object_get(s, "bytes")),
             json_string_value(json_object_get(s, "sha256")));
  }
  if (*models) snprintf(models + strlen(models), sizeof models - strlen(models), "\n");
  char *out = NULL;
  if (asprintf(&out,
               "# %s %s\n\n"
               "A dynamo graph (entry service %s) built by `dynamo build`. `dynamo.yaml` describes\n"
               "it, `config.yaml` is the configuration it was built with, `src/` holds its\n"
               "sources.\n\n"
               "Services:\n\n%s\n%s"
               "## Run it here\n\n"
               "    dynamo serve %s-%s            # this directory\n"
               "    dynamo serve %s-%s.tar.gz     # or the archive\n\n"
               "Options of `dynamo serve` apply as to the source, e.g. `--%s.key=value`.\n\n"
               "## Build an image\n\n"
               "    docker build -f env/docker/Dockerfile -t %s:%s --build-arg DYNAMO_IMAGE=<image with dynamo> .\n\n"
               "or `dynamo build ... --containerize`.\n\n"
               "## Deploy to Kubernetes\n\n"
               "    dynamo deploy %s-%s --image %s:%s -o manifests.yaml && kubectl apply -f manifests.yaml\n"
               "    dynamo deploy %s-%s --image %s:%s --apply\n\n"
               "One Deployment per service (replicas = workers), a Service per HTTP port, and\n"
               "etcd and NATS unless `--etcd` / `--nats` name existing ones.\n",
               name, version, entry, services, models, name, version, name, version, entry, name, version,
               name, version, name, version, name, version, name, version) < 0)
    return NULL;
  return out;
}

/* ---- building --------------------------------------------------------- */

typedef struct source {
  char dir[PATH_MAX];   /* what to copy (a directory), or "" */
  char file[PATH_MAX];  /* or the one file to copy (its real path) */
  char name[PATH_MAX];  /* and the name it gets in src/ */
  char rel_target[PATH_MAX + 256];
} source_t;

/* path made absolute without resolving links (realpath would). */
static int absolute(const char *path, char *out, size_t cap) {
  char cwd[PATH_MAX];
  if (path[0] == '/') return snprintf(out, cap, "%s", path) >= (int)cap ? -1 : 0;
  if (!getcwd(cwd, sizeof cwd)) return -1;
  return snprintf(out, cap, "%s/%s", cwd, path) >= (int)cap ? -1 : 0;
}

/* The names come from the path as given, the bytes from where it leads:
 * libfoo.so -> libfoo.so.1 (CMake's layout) is packed as src/libfoo.so,
 * since a C target must end in .so; and a Python graph's directory is the
 * one the given path names, not the one a linked directory leads to. */
static int locate(const dyn__build_in_t *in, const char *graph, const char *svc, int is_c,
                  source_t *src, char *err, size_t errlen) {
  char real[PATH_MAX], given[PATH_MAX], tmp[PATH_MAX];
  struct stat st;
  if (!realpath(graph, real))
    return dyn__fail(err, errlen, DYN_ENOTFOUND, "TARGET '%s': cannot find %s: %s", in->target,
                     graph, strerror(errno));
  if (absolute(graph, given, sizeof given))
    return dyn__fail(err, errlen, DYN_EINVAL, "TARGET '%s': path too long", in->target);
  snprintf(tmp, sizeof tmp, "%s", given);
  snprintf(src->name, sizeof src->name, "%s", basename(tmp));
  snprintf(src->rel_target, sizeof src->rel_target, "%s:%s", src->name, svc);
  if (is_c) {
    src->dir[0] = 0;
    snprintf(src->file, sizeof src->file, "%s", real);
    return DYN_OK;
  }
  /* The directory is copied without following links, so a linked graph
   * file would be left out of its own artifact. */
  if (!lstat(given, &st) && S_ISLNK(st.st_mode))
    return dyn__fail(err, errlen, DYN_EINVAL,
                     "TARGET '%s': %s is a symbolic link; dynamo build packs the graph's "
                     "directory without following links, so name the file it leads to (%s)",
                     in->target, graph, real);
  snprintf(tmp, sizeof tmp, "%s", given);
  snprintf(src->dir, sizeof src->dir, "%s", dirname(tmp));
  src->file[0] = 0;
  return DYN_OK;
}

static int find_source(const dyn__build_in_t *in, source_t *src, char *err, size_t errlen) {
  char *graph, *svc;
  int is_c;
  int rc = dyn__target_parse(in->target, &graph, &svc, &is_c, err, errlen);
  if (rc) return rc;
  size_t n = strlen(graph);
  if (!is_c && (n < 4 || strcmp(graph + n - 3, ".py")))
    rc = dyn__fail(err, errlen, DYN_EINVAL,
                   "TARGET '%s': dynamo build needs a file (FILE.py:Service or LIB.so:Service); a "
                   "module name does not say which files to pack", in->target);
  else
    rc = locate(in, graph, svc, is_c, src, err, errlen);
  free(graph);
  free(svc);
  return rc;
}

/* dir/name into path; nonzero when it does not fit. */
static int join(char *path, size_t cap, const char *dir, const char *name) {
  return snprintf(path, cap, "%s/%s", dir, name) >= (int)cap;
}

static int write_generated(const char *dir, json_t *m, json_t *config, const char *image,
                           char *err, size_t errlen) {
  char path[PATH_MAX], *text = NULL;
  if (strlen(dir) + 32 > sizeof path)
    return dyn__fail(err, errlen, DYN_EINVAL, "path too long: %s", dir);
  json_t *docs[1] = {m};
  int rc = dyn__yaml_dump(docs, 1, &text);
  if (rc) return dyn__fail(err, errlen, rc, "cannot write the manifest as YAML");
  (void)!join(path, sizeof path, dir, "dynamo.yaml");
  rc = write_text(path, text, err, errlen);
  free(text);
  docs[0] = config;
  if (!rc && (rc = dyn__yaml_dump(docs, 1, &text)))
    return dyn__fail(err, errlen, rc, "cannot write the config as YAML");
  if (!rc) {
    (void)!join(path, sizeof path, dir, "config.yaml");
    rc = write_text(path, text, err, errlen);
    free(text);
  }
  if (!rc) {
    (void)!join(path, sizeof path, dir, "env/docker");
    if (mkdirs(path)) rc = dyn__fail(err, errlen, DYN_ESYS, "cannot create %s: %s", path, strerror(errno));
  }
  if (!rc) {
    (void)!join(path, sizeof path, dir, "env/docker/Dockerfile");
    text = dockerfile(m, image);
    rc = text ? write_text(path, text, err, errlen) : dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    free(text);
  }
  if (!rc) {
    (void)!join(path, sizeof path, dir, "README.md");
    text = readme(m);
    rc = text ? write_text(path, text, err, errlen) : dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    free(text);
  }
  return rc;
}

static int stage_sources(const source_t *src, const char *stage, copier_t *c) {
  char to[PATH_MAX];
  if (join(to, sizeof to, stage, "src"))
    return dyn__fail(c->err, c->errlen, DYN_EINVAL, "path too long: %s", stage);
  if (mkdir(to, 0755) || chmod(to, 0755)) return dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot create %s: %s", to, strerror(errno));
  if (*src->dir) return copy_tree(c, src->dir, to, "");
  struct stat st;
  char dst[PATH_MAX];
  if (join(dst, sizeof dst, to, src->name))
    return dyn__fail(c->err, c->errlen, DYN_EINVAL, "path too long: %s", to);
  if (stat(src->file, &st)) return dyn__fail(c->err, c->errlen, DYN_ESYS, "cannot stat %s", src->file);
  return copy_file(c, src->file, dst, src->name, &st);
}

/* Both an image tag and a Kubernetes label value. */
static int valid_version(const char *v) {
  size_t n = strlen(v);
  if (n < 1 || n > 40 || !isalnum((unsigned char)v[0]) || !isalnum((unsigned char)v[n - 1]))
    return 0;
  return strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int dyn__artifact_build(const dyn__build_in_t *in, dyn__build_out_t *out, char *err,
                        size_t errlen) {
  memset(out, 0, sizeof *out);
  source_t src;
  int rc = find_source(in, &src, err, errlen);
  if (rc) return rc;
  char outdir[PATH_MAX], stage[PATH_MAX];
  struct stat ost;
  if (mkdirs(in->outdir) || !realpath(in->outdir, outdir) || stat(outdir, &ost))
    return dyn__fail(err, errlen, DYN_ESYS, "cannot create the output directory %s: %s",
                     in->outdir, strerror(errno));
  dyn__dns_label(*in->plan->entry ? in->plan->entry : "graph", out->name, sizeof out->name, 63);
  if (snprintf(stage, sizeof stage, "%s/.%s-build-XXXXXX", outdir, out->name) >= (int)sizeof stage ||
      !mkdtemp(stage))
    return dyn__fail(err, errlen, DYN_ESYS, "cannot create a staging directory in %s: %s", outdir,
                     strerror(errno));
  hash_t hash;
  hash_init(&hash);
  copier_t c = {.hash = &hash, .skip_dev = ost.st_dev, .skip_ino = ost.st_ino, .err = err,
                .errlen = errlen};
  struct stat sst;
  if (stat(stage, &sst)) {
    rc = dyn__fail(err, errlen, DYN_ESYS, "cannot stat %s: %s", stage, strerror(errno));
    rmtree(stage);
    return rc;
  }
  c.stage_dev = sst.st_dev;
  c.stage_ino = sst.st_ino;
  rc = stage_sources(&src, stage, &c);
  json_t *m = manifest(in, out->name, src.rel_target);
  if (!rc) rc = add_models(m, err, errlen);
  if (!rc) {
    /* Everything else that goes in: the manifest (minus its version), the
     * config and the base image named in the Dockerfile. */
    char *mj = json_dumps(m, JSON_COMPACT | JSON_SORT_KEYS);
    char *cj = json_dumps(in->config, JSON_COMPACT | JSON_SORT_KEYS);
    if (mj && cj) {
      hash_str(&hash, mj);
      hash_str(&hash, cj);
      hash_str(&hash, base_image(in));
    } else {
      rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    }
    free(mj);
    free(cj);
  }
  if (!rc) {
    if (in->version) {
      if (!valid_version(in->version))
        rc = dyn__fail(err, errlen, DYN_EINVAL,
                       "--version '%s': use 1 to 40 letters, digits, '.', '_' or '-', starting "
                       "and ending with a letter or digit (it becomes an image tag and a "
                       "Kubernetes label)", in->version);
      snprintf(out->version, sizeof out->version, "%s", in->version);
    } else {
      snprintf(out->version, sizeof out->version, "%012llx",
               (unsigned long long)(hash.h >> 16));
    }
  }
  if (!rc) {
    json_object_set_new(m, "version", json_string(out->version));
    rc = write_generated(stage, m, in->config, base_image(in), err, errlen);
  }
  json_decref(m);
  if (!rc && (snprintf(out->dir, sizeof out->dir, "%s/%s-%s", outdir, out->name, out->version) >=
                  (int)sizeof out->dir ||
              snprintf(out->tgz, sizeof out->tgz, "%s.tar.gz", out->dir) >= (int)sizeof out->tgz))
    rc = dyn__fail(err, errlen, DYN_EINVAL, "output path too long in %s", outdir);
  /* The same version means the same contents: replacing is safe. */
  if (!rc && rmtree(out->dir))
    rc = dyn__fail(err, errlen, DYN_ESYS, "cannot replace %s: %s", out->dir, strerror(errno));
  if (!rc && rename(stage, out->dir))
    rc = dyn__fail(err, errlen, DYN_ESYS, "cannot rename %s to %s: %s", stage, out->dir,
                   strerror(errno));
  if (rc) {
    rmtree(stage);
    return rc;
  }
  char prefix[256];
  snprintf(prefix, sizeof prefix, "%s-%s", out->name, out->version);
  out->nfiles = c.nfiles;
  return dyn__tarball_write(out->dir, prefix, out->tgz, dyn__tarball_epoch(), err, errlen);
}

/* ---- opening ---------------------------------------------------------- */

static int ends_with(const char *s, const char *tail) {
  size_t n = strlen(s), t = strlen(tail);
  return n >= t && !strcmp(s + n - t, tail);
}

int dyn__artifact_is(const char *path) {
  struct stat st;
  if (stat(path, &st)) return 0;
  if (S_ISDIR(st.st_mode)) {
    char m[PATH_MAX];
    snprintf(m, sizeof m, "%s/dynamo.yaml", path);
    return access(m, R_OK) == 0;
  }
  if (!S_ISREG(st.st_mode)) return 0;
  return ends_with(path, ".tar.gz") || ends_with(path, ".tgz") || ends_with(path, "/dynamo.yaml") ||
         !strcmp(path, "dynamo.yaml");
}

/* A .tar.gz holds one top directory NAME-VERSION/ (or, made by hand, the
 * files themselves). */
static int unpacked_root(const char *tmp, char *root, size_t cap) {
  char m[PATH_MAX];
  snprintf(m, sizeof m, "%s/dynamo.yaml", tmp);
  if (!access(m, R_OK)) return snprintf(root, cap, "%s", tmp) < (int)cap ? 0 : -1;
  struct dirent **list;
  int n = scandir(tmp, &list, skip_dots, by_name), rc = -1;
  if (n == 1) {
    snprintf(m, sizeof m, "%s/%s/dynamo.yaml", tmp, list[0]->d_name);
    if (!access(m, R_OK) && snprintf(root, cap, "%s/%s", tmp, list[0]->d_name) < (int)cap) rc = 0;
  }
  for (int i = 0; i < n; i++) free(list[i]);
  if (n >= 0) free(list);
  return rc;
}

static int check_manifest(dyn__artifact_t *a, const char *path, char *err, size_t errlen) {
  json_t *m = a->manifest;
  const char *keys[] = {"name", "version", "target", NULL};
  if (!json_is_object(m))
    return dyn__fail(err, errlen, DYN_EINVAL, "%s: dynamo.yaml is not a mapping", path);
  for (const char **k = keys; *k; k++)
    if (!json_is_string(json_object_get(m, *k)) || !*json_string_value(json_object_get(m, *k)))
      return dyn__fail(err, errlen, DYN_EINVAL, "%s: dynamo.yaml has no %s", path, *k);
  if (!json_array_size(json_object_get(m, "services")))
    return dyn__fail(err, errlen, DYN_EINVAL, "%s: dynamo.yaml lists no services", path);
  const char *t = json_string_value(json_object_get(m, "target"));
  if (t[0] == '/' || strstr(t, ".."))
    return dyn__fail(err, errlen, DYN_EINVAL,
                     "%s: dynamo.yaml's target '%s' must be a path inside src/", path, t);
  if (asprintf(&a->target, "%s/src/%s", a->root, t) < 0 ||
      asprintf(&a->config_path, "%s/config.yaml", a->root) < 0)
    return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  return DYN_OK;
}

/* ---- a temporary directory a signal must not leave behind -------------
 * `dynamo serve X.tar.gz` unpacks X before its supervisor handles SIGTERM
 * and SIGINT; a signal in between would end the process with the
 * directory left in $TMPDIR. Until the supervisor takes the signals over,
 * a handler removes it and then lets the signal kill the process as it
 * would have. Only async-signal-safe calls from here to the handler:
 * openat, getdents64, fstatat, unlinkat, no malloc, no stdio. */

static char g_unpacked[PATH_MAX];
static volatile sig_atomic_t g_unpacked_set;

struct dirent64_raw { /* what getdents64 writes */
  uint64_t ino;
  int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[];
};

/* Empties the directory open at fd. Passes repeat, since removing entries
 * while reading may make the kernel skip some. */
static void clear_dir(int fd, int depth) {
  _Alignas(8) char buf[2048];
  if (depth > 64) return;
  for (int pass = 0; pass < 8; pass++) {
    int removed = 0;
    long n;
    lseek(fd, 0, SEEK_SET);
    while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
      for (long off = 0; off < n;) {
        struct dirent64_raw *d = (struct dirent64_raw *)(void *)(buf + off);
        off += d->reclen;
        if (!strcmp(d->name, ".") || !strcmp(d->name, "..")) continue;
        struct stat st;
        if (fstatat(fd, d->name, &st, AT_SYMLINK_NOFOLLOW)) continue;
        if (S_ISDIR(st.st_mode)) {
          int sub = openat(fd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub >= 0) {
            clear_dir(sub, depth + 1);
            close(sub);
          }
          removed += !unlinkat(fd, d->name, AT_REMOVEDIR);
        } else {
          removed += !unlinkat(fd, d->name, 0);
        }
      }
    }
    if (!removed) break;
  }
}

static void on_stop_signal(int sig) {
  if (g_unpacked_set) {
    int fd = open(g_unpacked, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd >= 0) {
      clear_dir(fd, 0);
      close(fd);
    }
    rmdir(g_unpacked);
  }
  /* Blocked while we run, so it lands once we return: the default action,
   * the exit status the sender expects. */
  signal(sig, SIG_DFL);
  raise(sig);
}

void dyn__artifact_guard_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, SIGTERM);
  sigaddset(&sa.sa_mask, SIGINT);
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
}

static void unpacked_set(const char *dir) {
  g_unpacked_set = 0;
  if (dir && strlen(dir) < sizeof g_unpacked) {
    memcpy(g_unpacked, dir, strlen(dir) + 1);
    g_unpacked_set = 1;
  }
}

/* ---- opening, continued ---------------------------------------------- */

int dyn__artifact_open(const char *path, dyn__artifact_t *a, char *err, size_t errlen) {
  memset(a, 0, sizeof *a);
  char root[PATH_MAX], real[PATH_MAX];
  struct stat st;
  int rc = DYN_OK;
  if (stat(path, &st) || !realpath(path, real))
    return dyn__fail(err, errlen, DYN_ENOTFOUND, "cannot open the artifact %s: %s", path,
                     strerror(errno));
  if (S_ISDIR(st.st_mode)) {
    snprintf(root, sizeof root, "%s", real);
  } else if (ends_with(real, "/dynamo.yaml")) {
    snprintf(root, sizeof root, "%s", dirname(real));
  } else {
    const char *base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    if (asprintf(&a->tmpdir, "%s/dynamo-artifact-XXXXXX", base) < 0) {
      a->tmpdir = NULL;
      return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    }
    if (!mkdtemp(a->tmpdir)) {
      rc = dyn__fail(err, errlen, DYN_ESYS, "cannot create a directory in %s: %s", base,
                     strerror(errno));
      free(a->tmpdir);
      a->tmpdir = NULL;
      return rc;
    }
    unpacked_set(a->tmpdir);
    if ((rc = dyn__tarball_extract(real, a->tmpdir, err, errlen))) goto fail;
    if (unpacked_root(a->tmpdir, root, sizeof root)) {
      rc = dyn__fail(err, errlen, DYN_EINVAL,
                     "%s holds no dynamo.yaml (at the top or in its one top directory): not an "
                     "artifact of dynamo build", path);
      goto fail;
    }
  }
  if (!(a->root = strdup(root))) {
    rc = dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
    goto fail;
  }
  char mpath[PATH_MAX + 16];
  snprintf(mpath, sizeof mpath, "%s/dynamo.yaml", root);
  size_t len;
  char *text = read_text(mpath, &len);
  if (!text) {
    rc = dyn__fail(err, errlen, DYN_ENOTFOUND, "cannot read %s: %s", mpath, strerror(errno));
    goto fail;
  }
  rc = dyn__yaml_parse(text, len, mpath, &a->manifest, err, errlen);
  free(text);
  if (!rc) rc = check_manifest(a, path, err, errlen);
  if (!rc) return DYN_OK;
fail:
  dyn__artifact_close(a);
  return rc;
}

void dyn__artifact_close(dyn__artifact_t *a) {
  if (a->tmpdir) {
    unpacked_set(NULL);
    rmtree(a->tmpdir);
    free(a->tmpdir);
  }
  free(a->root);
  free(a->target);
  free(a->config_path);
  json_decref(a->manifest);
  memset(a, 0, sizeof *a);
}
