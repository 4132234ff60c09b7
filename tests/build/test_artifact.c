/* test_artifact.c - the C pieces behind `dynamo build` and `dynamo deploy`,
 * where ASan and UBSan can watch them: YAML written and read back
 * unchanged (strings that look like numbers or booleans stay strings),
 * the Kubernetes quantity grammar, DNS labels, reproducible archives,
 * extraction that refuses to write outside its directory, artifacts that
 * are not, and Kubernetes objects for a small manifest. */
#include <archive.h>
#include <archive_entry.h>

#include "harness.h"
#include "package/artifact.h"
#include "config/yaml_read.h"
#include "package/k8s.h"
#include "package/tarball.h"
#include "package/yamlout.h"

static json_t *roundtrip(json_t *v) {
  char *text = NULL, err[512];
  json_t *back = NULL;
  json_t *docs[1] = {v};
  if (dyn__yaml_dump(docs, 1, &text)) return NULL;
  if (dyn__yaml_parse(text, strlen(text), "test", &back, err, sizeof err)) {
    fprintf(stderr, "cannot read back:\n%s\n%s\n", text, err);
    back = NULL;
  }
  free(text);
  return back;
}

static void test_yaml_roundtrip(void) {
  const char *strings[] = {"", "1", "0755", "0x1f", "1e3", ".5", "-1", "+1", "yes", "No", "ON",
                           "off", "y", "n", "true", "False", "null", "~", "NULL", "-x",
                           "--service-name", "a: b", "#hash", "[x]", "{y}", "*star", "&amp",
                           "!tag", "%p", "@at", "`tick", "multi\nline\n", "no newline\nat end",
                           " lead", "trail ", "h\xc3\xa9llo", "tab\there", "quote\"s", "back\\s",
                           "1Gi", "500m", "0.0.0.0", "http://x:1/y", NULL};
  json_t *obj = json_object(), *arr = json_array();
  for (const char **s = strings; *s; s++) {
    json_array_append_new(arr, json_string(*s));
    json_object_set_new(obj, *s, json_string(*s)); /* keys too */
  }
  json_t *v = json_pack("{s:o, s:o, s:i, s:f, s:f, s:b, s:n, s:[], s:{}, s:[[s, s]]}", "arr", arr,
                        "obj", obj, "int", -42, "real", 2.0, "frac", 1.25, "bool", 1, "none",
                        "empty_list", "empty_map", "edges", "A", "B");
  json_t *back = roundtrip(v);
  REQUIRE(back != NULL);
  CHECK(json_equal(v, back));
  CHECK(json_is_real(json_object_get(back, "real"))); /* 2.0 did not become 2 */
  json_decref(back);
  json_decref(v);

  char *text = NULL;
  /* YAML 1.1's merge and value keys stay strings there too. */
  json_t *odd = json_pack("{s:s, s:[s, s]}", "<<", "=", "=", "<<", "<<x");
  json_t *docs1[1] = {odd};
  REQUIRE(dyn__yaml_dump(docs1, 1, &text) == DYN_OK);
  CHECK_MSG(!strcmp(text, "\"<<\": \"=\"\n\"=\":\n- \"<<\"\n- <<x\n"), "%s", text);
  free(text);
  json_decref(odd);
  /* Several documents make a "---" stream. */
  json_t *two[2] = {json_pack("{s:i}", "a", 1), json_pack("{s:i}", "b", 2)};
  REQUIRE(dyn__yaml_dump(two, 2, &text) == DYN_OK);
  CHECK(!strncmp(text, "---\na: 1\n---\nb: 2\n", 18));
  free(text);
  json_decref(two[0]);
  json_decref(two[1]);
}

static void test_quantities(void) {
  const char *good[] = {"1", "0", "500m", "1.5", "2Gi", "512Mi", "1e3", "1E-3", "+1", ".5",
                        "0.5Gi", "100k", "3T", "7n", NULL};
  const char *bad[] = {"", "1 Gi", "Gi", "1GB", "1x", "1.5.5", "m", "e3", "1e", "1e+",
                       "lots", "1Ki2", "--1", ".", NULL};
  for (const char **q = good; *q; q++) CHECK_MSG(dyn__k8s_quantity_ok(*q), "%s should be good", *q);
  for (const char **q = bad; *q; q++) CHECK_MSG(!dyn__k8s_quantity_ok(*q), "%s should be bad", *q);
}

static void test_dns_labels(void) {
  char out[64];
  dyn__dns_label("Frontend", out, sizeof out, 63);
  CHECK_EQ_STR(out, "frontend");
  dyn__dns_label("My_Svc.v2", out, sizeof out, 63);
  CHECK_EQ_STR(out, "my-svc-v2");
  dyn__dns_label("--a__b--", out, sizeof out, 63);
  CHECK_EQ_STR(out, "a-b");
  dyn__dns_label("", out, sizeof out, 63);
  CHECK_EQ_STR(out, "x");
  dyn__dns_label("abcdefghij-klmno", out, sizeof out, 11);
  CHECK_EQ_STR(out, "abcdefghij"); /* cut at 11, then the trailing '-' goes */
}

/* ---- archives ----------------------------------------------------------- */

static void write_file(const char *path, const char *text, int mode) {
  FILE *f = fopen(path, "w");
  REQUIRE(f != NULL);
  fputs(text, f);
  fclose(f);
  chmod(path, (mode_t)mode);
}

static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)n + 1);
  if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) n = -1;
  fclose(f);
  if (n < 0) {
    free(buf);
    return NULL;
  }
  buf[n] = 0;
  *len = (size_t)n;
  return buf;
}

static void make_tree(const char *root) {
  char p[512];
  mkdir(root, 0700);
  snprintf(p, sizeof p, "%s/b", root);
  mkdir(p, 0700);
  snprintf(p, sizeof p, "%s/b/inner.txt", root);
  write_file(p, "inner\n", 0600);
  snprintf(p, sizeof p, "%s/a.sh", root);
  write_file(p, "#!/bin/sh\n", 0700);
  snprintf(p, sizeof p, "%s/empty", root);
  mkdir(p, 0700);
}

static void test_reproducible_archive(void) {
  char tree[256], one[256], two[256], out[256], p[512];
  snprintf(tree, sizeof tree, "%s/tree", h_dir);
  snprintf(one, sizeof one, "%s/one.tar.gz", h_dir);
  snprintf(two, sizeof two, "%s/two.tar.gz", h_dir);
  make_tree(tree);
  char err[512];
  REQUIRE(dyn__tarball_write(tree, "pkg-1", one, 0, err, sizeof err) == DYN_OK);
  /* New mtimes and modes the archive does not keep. */
  snprintf(p, sizeof p, "%s/b/inner.txt", tree);
  struct timespec ts[2] = {{1000000000, 5}, {1500000000, 7}};
  utimensat(AT_FDCWD, p, ts, 0);
  chmod(p, 0640);
  sleep(1);
  REQUIRE(dyn__tarball_write(tree, "pkg-1", two, 0, err, sizeof err) == DYN_OK);
  size_t la, lb;
  char *a = slurp(one, &la), *b = slurp(two, &lb);
  REQUIRE(a && b);
  CHECK(la == lb && !memcmp(a, b, la));
  CHECK(!a[4] && !a[5] && !a[6] && !a[7]); /* gzip MTIME is zero */
  CHECK(!(a[3] & 0x08));                   /* and no FNAME */
  free(a);
  free(b);

  /* It unpacks to the same tree, the executable bit kept. */
  snprintf(out, sizeof out, "%s/out", h_dir);
  mkdir(out, 0700);
  REQUIRE(dyn__tarball_extract(one, out, err, sizeof err) == DYN_OK);
  struct stat st;
  snprintf(p, sizeof p, "%s/pkg-1/a.sh", out);
  CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0755);
  snprintf(p, sizeof p, "%s/pkg-1/b/inner.txt", out);
  size_t n;
  char *text = slurp(p, &n);
  CHECK(text && !strcmp(text, "inner\n"));
  free(text);
  CHECK(stat(p, &st) == 0 && (st.st_mode & 0777) == 0644);
  snprintf(p, sizeof p, "%s/pkg-1/empty", out);
  CHECK(stat(p, &st) == 0 && S_ISDIR(st.st_mode));
  /* Extracting over existing files is refused, not a silent overwrite. */
  CHECK_STATUS(dyn__tarball_extract(one, out, err, sizeof err), DYN_ESYS);

  /* A tree with a symbolic link cannot be archived reproducibly. */
  snprintf(p, sizeof p, "%s/link", tree);
  REQUIRE(symlink("/etc/passwd", p) == 0);
  CHECK_STATUS(dyn__tarball_write(tree, "pkg-1", one, 0, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "link") != NULL || strstr(err, "regular file") != NULL);
  unlink(p);
}

/* An archive with one entry of the given name and type, as an attacker
 * would make it. */
static void evil_archive(const char *path, const char *name, mode_t type) {
  struct archive *a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  archive_write_open_filename(a, path);
  struct archive_entry *e = archive_entry_new();
  archive_entry_set_pathname(e, name);
  archive_entry_set_filetype(e, type);
  archive_entry_set_perm(e, 0644);
  if (type == AE_IFLNK) archive_entry_set_symlink(e, "/tmp");
  archive_entry_set_size(e, type == AE_IFREG ? 4 : 0);
  archive_write_header(a, e);
  if (type == AE_IFREG) archive_write_data(a, "evil", 4);
  archive_entry_free(e);
  archive_write_close(a);
  archive_write_free(a);
}

/* What `tar czf a.tgz -C ARTIFACT .` writes: every name under "./". */
static void test_dot_slash_archives_open(void) {
  static const struct {
    const char *name;
    mode_t type;
    const char *text;
  } entries[] = {{"./", AE_IFDIR, NULL},
                 {"./dynamo.yaml", AE_IFREG,
                  "name: x\nversion: \"1\"\ntarget: g.py:X\nservices: [{name: X}]\n"},
                 {"./src/", AE_IFDIR, NULL},
                 {"./src/g.py", AE_IFREG, "print('x')\n"},
                 {".", AE_IFDIR, NULL}};
  char path[256], err[512];
  snprintf(path, sizeof path, "%s/dotslash.tgz", h_dir);
  struct archive *a = archive_write_new();
  archive_write_add_filter_gzip(a);
  archive_write_set_format_pax_restricted(a);
  REQUIRE(archive_write_open_filename(a, path) == ARCHIVE_OK);
  for (size_t i = 0; i < sizeof entries / sizeof entries[0]; i++) {
    struct archive_entry *e = archive_entry_new();
    size_t n = entries[i].text ? strlen(entries[i].text) : 0;
    archive_entry_set_pathname(e, entries[i].name);
    archive_entry_set_filetype(e, entries[i].type);
    archive_entry_set_perm(e, entries[i].type == AE_IFDIR ? 0755 : 0644);
    archive_entry_set_size(e, (la_int64_t)n);
    archive_write_header(a, e);
    if (n) archive_write_data(a, entries[i].text, n);
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  dyn__artifact_t art;
  int rc = dyn__artifact_open(path, &art, err, sizeof err);
  CHECK_MSG(rc == DYN_OK, "%s", err);
  if (rc) return;
  CHECK(strstr(art.target, "/src/g.py:X") != NULL);
  char g[1024];
  snprintf(g, sizeof g, "%s/src/g.py", art.root);
  CHECK(access(g, R_OK) == 0);
  dyn__artifact_close(&art);
  /* "./" does not hide what follows it. */
  snprintf(path, sizeof path, "%s/dotdot.tgz", h_dir);
  evil_archive(path, "./../evil.txt", AE_IFREG);
  char into[256];
  snprintf(into, sizeof into, "%s/dotinto", h_dir);
  mkdir(into, 0700);
  CHECK_STATUS(dyn__tarball_extract(path, into, err, sizeof err), DYN_EINVAL);
  /* ".//etc/x" is "./etc/x": relative, and it stays inside. */
  evil_archive(path, ".//etc/evil.txt", AE_IFREG);
  CHECK_STATUS(dyn__tarball_extract(path, into, err, sizeof err), DYN_OK);
  char inside[512];
  snprintf(inside, sizeof inside, "%s/etc/evil.txt", into);
  CHECK(access(inside, F_OK) == 0);
}

static void test_unsafe_archives_are_refused(void) {
  struct {
    const char *name;
    mode_t type;
  } cases[] = {{"../evil.txt", AE_IFREG}, {"/tmp/evil-abs.txt", AE_IFREG},
               {"a/../../evil.txt", AE_IFREG}, {"a//b", AE_IFREG},
               {"ln", AE_IFLNK}, {"fifo", AE_IFIFO}};
  char path[256], into[256], err[512], outside[256];
  snprintf(into, sizeof into, "%s/into", h_dir);
  mkdir(into, 0700);
  snprintf(into, sizeof into, "%s/into/deeper", h_dir);
  mkdir(into, 0700);
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    snprintf(path, sizeof path, "%s/evil%zu.tar.gz", h_dir, i);
    evil_archive(path, cases[i].name, cases[i].type);
    CHECK_MSG(dyn__tarball_extract(path, into, err, sizeof err) == DYN_EINVAL, "%s was accepted",
              cases[i].name);
  }
  snprintf(outside, sizeof outside, "%s/into/evil.txt", h_dir);
  CHECK(access(outside, F_OK) != 0);
  CHECK(access("/tmp/evil-abs.txt", F_OK) != 0);
  /* Not an archive at all. */
  snprintf(path, sizeof path, "%s/plain.tar.gz", h_dir);
  write_file(path, "plain text", 0644);
  CHECK(dyn__tarball_extract(path, into, err, sizeof err) != DYN_OK);
}

/* ---- opening artifacts -------------------------------------------------- */

static void test_open_checks_the_manifest(void) {
  char dir[256], p[512], err[1024];
  dyn__artifact_t a;
  snprintf(dir, sizeof dir, "%s/art", h_dir);
  mkdir(dir, 0700);
  CHECK(!dyn__artifact_is(dir)); /* no dynamo.yaml yet */
  snprintf(p, sizeof p, "%s/dynamo.yaml", dir);
  write_file(p, "name: x\nversion: \"1\"\ntarget: ../escape.py:X\nservices: [{name: X}]\n", 0644);
  CHECK(dyn__artifact_is(dir) && dyn__artifact_is(p));
  CHECK_STATUS(dyn__artifact_open(dir, &a, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "inside src/") != NULL);
  write_file(p, "name: x\nversion: \"1\"\ntarget: g.py:X\nservices: []\n", 0644);
  CHECK_STATUS(dyn__artifact_open(p, &a, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "no services") != NULL);
  write_file(p, "name: x\nversion: \"1\"\ntarget: g.py:X\nservices: [{name: X}]\n", 0644);
  REQUIRE(dyn__artifact_open(p, &a, err, sizeof err) == DYN_OK);
  CHECK(a.tmpdir == NULL);
  CHECK(strstr(a.target, "/art/src/g.py:X") != NULL);
  CHECK(strstr(a.config_path, "/art/config.yaml") != NULL);
  dyn__artifact_close(&a);

  /* A .tar.gz without a dynamo.yaml: refused, and its temporary
   * directory is gone again. */
  char tmp[256], tgz[256];
  snprintf(tmp, sizeof tmp, "%s/tmp", h_dir);
  mkdir(tmp, 0700);
  setenv("TMPDIR", tmp, 1);
  snprintf(tgz, sizeof tgz, "%s/notart.tar.gz", h_dir);
  snprintf(p, sizeof p, "%s/tree", h_dir);
  REQUIRE(dyn__tarball_write(p, "whatever", tgz, 0, err, sizeof err) == DYN_OK);
  CHECK_STATUS(dyn__artifact_open(tgz, &a, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "no dynamo.yaml") != NULL);
  /* The good one, archived: opened from a temporary directory that close
   * removes. */
  snprintf(tgz, sizeof tgz, "%s/art.tar.gz", h_dir);
  REQUIRE(dyn__tarball_write(dir, "x-1", tgz, 0, err, sizeof err) == DYN_OK);
  REQUIRE(dyn__artifact_open(tgz, &a, err, sizeof err) == DYN_OK);
  REQUIRE(a.tmpdir != NULL);
  char *kept = strdup(a.tmpdir);
  CHECK(access(kept, F_OK) == 0);
  dyn__artifact_close(&a);
  CHECK(access(kept, F_OK) != 0);
  free(kept);
  DIR *d = opendir(tmp);
  int left = 0;
  for (struct dirent *e; d && (e = readdir(d));) left += e->d_name[0] != '.';
  if (d) closedir(d);
  CHECK_EQ_INT(left, 0);
  unsetenv("TMPDIR");
}

/* A signal while `dynamo serve X.tar.gz` starts: the handler empties and
 * removes the unpacked directory (nested, with signal-safe calls only),
 * then the signal ends the process as it would have. */
static void test_signal_removes_the_unpacked_directory(void) {
  char dir[256], p[512], tmp[256], tgz[256], err[512];
  snprintf(dir, sizeof dir, "%s/sigart", h_dir);
  mkdir(dir, 0700);
  snprintf(p, sizeof p, "%s/dynamo.yaml", dir);
  write_file(p, "name: x\nversion: \"1\"\ntarget: g.py:X\nservices: [{name: X}]\n", 0644);
  snprintf(p, sizeof p, "%s/src", dir);
  make_tree(p);
  snprintf(p, sizeof p, "%s/src/b/deeper", dir);
  mkdir(p, 0700);
  snprintf(p, sizeof p, "%s/src/b/deeper/x.txt", dir);
  write_file(p, "x\n", 0644);
  snprintf(tgz, sizeof tgz, "%s/sigart.tar.gz", h_dir);
  REQUIRE(dyn__tarball_write(dir, "x-1", tgz, 0, err, sizeof err) == DYN_OK);
  snprintf(tmp, sizeof tmp, "%s/sigtmp", h_dir);
  mkdir(tmp, 0700);
  int sigs[] = {SIGTERM, SIGINT};
  for (int i = 0; i < 2; i++) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      dyn__artifact_t a;
      setenv("TMPDIR", tmp, 1);
      dyn__artifact_guard_signals();
      if (dyn__artifact_open(tgz, &a, err, sizeof err)) _exit(3);
      if (access(a.root, F_OK)) _exit(4);
      raise(sigs[i]);
      _exit(5); /* not reached: the signal ends us */
    }
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK_MSG(WIFSIGNALED(status) && WTERMSIG(status) == sigs[i], "status %#x", status);
    DIR *d = opendir(tmp);
    int left = 0;
    for (struct dirent *e; d && (e = readdir(d));) left += e->d_name[0] != '.';
    if (d) closedir(d);
    CHECK_EQ_INT(left, 0);
  }
}

/* ---- Kubernetes objects ------------------------------------------------- */

static json_t *find_kind(json_t *docs, const char *kind, int nth) {
  size_t i;
  json_t *d;
  json_array_foreach(docs, i, d) {
    if (!strcmp(json_string_value(json_object_get(d, "kind")), kind) && nth-- == 0) return d;
  }
  return NULL;
}

static void test_k8s_objects(void) {
  json_t *m = json_pack(
      "{s:s, s:s, s:[{s:s, s:i, s:{s:s, s:i}, s:o}, {s:s, s:i, s:{}, s:{s:i}}]}", "name", "demo",
      "version", "abc", "services", "name", "Gpu_Worker", "workers", 3, "resources", "memory",
      "2Gi", "gpu", 2, "http", json_null(), "name", "Web", "workers", 1, "resources", "http", "port",
      8080);
  dyn__k8s_opts_t o = {.image = "demo:abc", .config_yaml = "Web: {port: 8080}\n"};
  json_t *docs;
  char err[512];
  REQUIRE(dyn__k8s_objects(m, &o, &docs, err, sizeof err) == DYN_OK);
  /* ConfigMap, etcd x2, NATS x2, Deployment, Deployment + Service. */
  CHECK_EQ_INT((int)json_array_size(docs), 8);
  json_t *gpu = find_kind(docs, "Deployment", 0);
  REQUIRE(gpu != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(gpu, "metadata"), "name")),
               "demo-gpu-worker");
  CHECK_EQ_INT((int)json_integer_value(json_object_get(json_object_get(gpu, "spec"), "replicas")), 3);
  json_t *c = json_array_get(json_object_get(json_object_get(json_object_get(json_object_get(
                                 gpu, "spec"), "template"), "spec"), "containers"), 0);
  json_t *limits = json_object_get(json_object_get(c, "resources"), "limits");
  CHECK_EQ_INT((int)json_integer_value(json_object_get(limits, "nvidia.com/gpu")), 2);
  CHECK_EQ_STR(json_string_value(json_object_get(limits, "memory")), "2Gi");
  json_t *svc = find_kind(docs, "Service", 2); /* after etcd's and NATS's */
  REQUIRE(svc != NULL);
  CHECK_EQ_STR(json_string_value(json_object_get(json_object_get(svc, "metadata"), "name")),
               "demo-web");
  json_decref(docs);

  /* Existing etcd and NATS: neither is deployed. */
  o.etcd = "http://e:2379";
  o.nats = "nats://n:4222";
  REQUIRE(dyn__k8s_objects(m, &o, &docs, err, sizeof err) == DYN_OK);
  CHECK_EQ_INT((int)json_array_size(docs), 4);
  CHECK(find_kind(docs, "StatefulSet", 0) == NULL);
  json_decref(docs);

  o.ns = "Not_A_Label";
  CHECK_STATUS(dyn__k8s_objects(m, &o, &docs, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "--namespace") != NULL);
  o.ns = NULL;
  json_object_set_new(json_object_get(json_array_get(json_object_get(m, "services"), 0),
                                      "resources"), "cpu", json_string("two"));
  CHECK_STATUS(dyn__k8s_objects(m, &o, &docs, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "Gpu_Worker") && strstr(err, "resources.cpu"));
  json_object_set_new(json_object_get(json_array_get(json_object_get(m, "services"), 0),
                                      "resources"), "cpu", json_integer(1));
  json_object_set_new(json_object_get(json_array_get(json_object_get(m, "services"), 1), "http"),
                      "port", json_integer(DYN_K8S_HEALTH_PORT));
  CHECK_STATUS(dyn__k8s_objects(m, &o, &docs, err, sizeof err), DYN_EINVAL);
  CHECK(strstr(err, "Web") && strstr(err, "HTTP port"));
  json_decref(m);

  /* A service's envs may not set what every pod gets; an HTTP service
   * listens on every address in its pod. */
  m = json_pack("{s:s, s:s, s:[{s:s, s:[{s:s, s:s}], s:{s:i, s:s}}]}", "name", "demo", "version",
                "1", "services", "name", "Web", "envs", "name", "DYN_LISTEN_PORT", "value", "1",
                "http", "port", 8080, "host", "127.0.0.1");
  CHECK_STATUS(dyn__k8s_objects(m, &o, &docs, err, sizeof err), DYN_EINVAL);
  CHECK_MSG(strstr(err, "Web") && strstr(err, "DYN_LISTEN_PORT"), "%s", err);
  json_t *first = json_array_get(json_object_get(json_array_get(json_object_get(m, "services"), 0),
                                                 "envs"), 0);
  json_object_set_new(first, "name", json_string("DYN_LOG"));
  REQUIRE(dyn__k8s_objects(m, &o, &docs, err, sizeof err) == DYN_OK);
  json_t *cmd = json_object_get(json_array_get(json_object_get(json_object_get(json_object_get(
      json_object_get(find_kind(docs, "Deployment", 0), "spec"), "template"), "spec"),
      "containers"), 0), "command");
  CHECK_EQ_STR(json_string_value(json_array_get(cmd, json_array_size(cmd) - 1)),
               "--Web.host=0.0.0.0");
  json_decref(docs);
  json_decref(m);
}

static const char *doc_name(json_t *d) {
  return json_string_value(json_object_get(json_object_get(d, "metadata"), "name"));
}

static json_t *pod_selector(json_t *d) {
  json_t *spec = json_object_get(d, "spec");
  json_t *m = json_object_get(json_object_get(spec, "selector"), "matchLabels");
  return m ? m : json_object_get(spec, "selector");
}

/* Every (kind, name) once, every workload selector once, names valid. */
static void check_distinct(json_t *docs) {
  size_t i, j;
  json_t *a, *b;
  json_array_foreach(docs, i, a) {
    const char *n = doc_name(a);
    CHECK_MSG(strlen(n) <= 63 && strspn(n, "abcdefghijklmnopqrstuvwxyz0123456789-") == strlen(n),
              "bad name %s", n);
    json_array_foreach(docs, j, b) {
      if (j <= i) continue;
      const char *ka = json_string_value(json_object_get(a, "kind"));
      const char *kb = json_string_value(json_object_get(b, "kind"));
      CHECK_MSG(strcmp(ka, kb) || strcmp(n, doc_name(b)), "%s %s twice", ka, n);
      if (!strcmp(ka, "Service") || !strcmp(kb, "Service") || !strcmp(ka, "ConfigMap") ||
          !strcmp(kb, "ConfigMap"))
        continue;
      CHECK_MSG(!json_equal(pod_selector(a), pod_selector(b)), "%s and %s select the same pods",
                n, doc_name(b));
    }
  }
}

static json_t *one_service(const char *name, int http) {
  return json_pack("{s:s, s:i, s:{}, s:o}", "name", name, "workers", 1, "resources", "http",
                   http ? json_pack("{s:i}", "port", 8080) : json_null());
}

static void test_k8s_names_never_collide(void) {
  char a[200], b[200], err[512];
  memset(a, 'a', 100);
  a[100] = 0;
  snprintf(b, sizeof b, "%s", a);
  a[99] = 'x';  /* two long names that differ only past the cut */
  json_t *m = json_pack("{s:s, s:s, s:[o, o, o, o, o]}", "name", "demo", "version", "1",
                        "services", one_service(a, 1), one_service(b, 1), one_service("Etcd", 1),
                        one_service("Nats", 1), one_service("Config", 0));
  dyn__k8s_opts_t o = {.image = "demo:1", .config_yaml = "{}\n"};
  json_t *docs;
  REQUIRE(dyn__k8s_objects(m, &o, &docs, err, sizeof err) == DYN_OK);
  check_distinct(docs);
  /* Each Service selects its own pods only: etcd's Service never the
   * graph's Etcd. */
  json_t *etcd_svc = NULL, *etcd_ss = NULL, *user_etcd = NULL;
  size_t i;
  json_t *d;
  json_array_foreach(docs, i, d) {
    const char *kind = json_string_value(json_object_get(d, "kind"));
    if (!strcmp(doc_name(d), "demo-dynamo-etcd") && !strcmp(kind, "Service")) etcd_svc = d;
    if (!strcmp(doc_name(d), "demo-dynamo-etcd") && !strcmp(kind, "StatefulSet")) etcd_ss = d;
    if (!strcmp(doc_name(d), "demo-etcd") && !strcmp(kind, "Deployment")) user_etcd = d;
  }
  REQUIRE(etcd_svc && etcd_ss && user_etcd);
  CHECK(json_equal(pod_selector(etcd_svc), pod_selector(etcd_ss)));
  CHECK(!json_equal(pod_selector(etcd_svc), pod_selector(user_etcd)));
  CHECK(find_kind(docs, "ConfigMap", 0) &&
        !strcmp(doc_name(find_kind(docs, "ConfigMap", 0)), "demo-dynamo-config"));
  json_decref(docs);
  json_decref(m);

  /* A long artifact name: two of them that differ past the cut stay two. */
  char app1[120], app2[120];
  memset(app1, 'p', 80);
  app1[80] = 0;
  snprintf(app2, sizeof app2, "%s", app1);
  app2[79] = 'q';
  json_t *parts[2];
  const char *apps[2] = {app1, app2};
  for (int k = 0; k < 2; k++) {
    m = json_pack("{s:s, s:s, s:[o]}", "name", apps[k], "version", "1", "services",
                  one_service("W", 0));
    REQUIRE(dyn__k8s_objects(m, &o, &docs, err, sizeof err) == DYN_OK);
    json_t *labels = json_object_get(json_object_get(json_array_get(docs, 0), "metadata"), "labels");
    parts[k] = json_incref(json_object_get(labels, "app.kubernetes.io/part-of"));
    CHECK(strlen(json_string_value(parts[k])) <= 40);
    json_decref(docs);
    json_decref(m);
  }
  CHECK(!json_equal(parts[0], parts[1]));
  json_decref(parts[0]);
  json_decref(parts[1]);

  /* Names equal but for case or '_' / '-': refused, naming both. */
  m = json_pack("{s:s, s:s, s:[o, o]}", "name", "demo", "version", "1", "services",
                one_service("My_Worker", 0), one_service("my-worker", 0));
  CHECK_STATUS(dyn__k8s_objects(m, &o, &docs, err, sizeof err), DYN_EINVAL);
  CHECK_MSG(strstr(err, "'My_Worker'") && strstr(err, "'my-worker'"), "%s", err);
  json_decref(m);
}

int main(void) {
  h_init("artifact");
  test_yaml_roundtrip();
  test_quantities();
  test_dns_labels();
  test_reproducible_archive();
  test_unsafe_archives_are_refused();
  test_dot_slash_archives_open();
  test_open_checks_the_manifest();
  test_signal_removes_the_unpacked_directory();
  test_k8s_objects();
  test_k8s_names_never_collide();
  TEST_END();
}
