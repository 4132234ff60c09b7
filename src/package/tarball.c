/* tarball.c - reproducible .tar.gz writing and safe extraction (libarchive).
 *
 * libarchive does the formats (pax-restricted tar: plain ustar headers
 * unless a path needs more, and gzip). What makes the bytes reproducible is
 * ours to control and is all set here: the walk order (depth first, names
 * in byte order, never readdir's order), the metadata of every entry (one
 * mtime, 0:0, no names, 0755/0644) and the gzip header (no timestamp; no
 * name is ever stored). Nothing else of the build machine gets in.
 *
 * Extraction writes every entry itself instead of using
 * archive_write_disk, so the rules are visible in one place: regular files
 * and directories only, relative paths without "..", files created with
 * O_EXCL|O_NOFOLLOW so a planted link cannot redirect a write.
 */
#include "package/tarball.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dynamo/status.h"
#include "common/fail.h"

long long dyn__tarball_epoch(void) {
  const char *s = getenv("SOURCE_DATE_EPOCH");
  if (!s || !*s) return 0;
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  return errno || *end || v < 0 ? 0 : v;
}

/* ---- writing ---------------------------------------------------------- */

typedef struct writer {
  struct archive *a;
  long long mtime;
  char *err;
  size_t errlen;
} writer_t;

static int by_name(const struct dirent **x, const struct dirent **y) {
  return strcmp((*x)->d_name, (*y)->d_name);
}

static int skip_dots(const struct dirent *d) {
  return strcmp(d->d_name, ".") && strcmp(d->d_name, "..");
}

static int header(writer_t *w, const char *name, mode_t type, int perm, long long size) {
  struct archive_entry *e = archive_entry_new();
  if (!e) return dyn__fail(w->err, w->errlen, DYN_ENOMEM, "out of memory");
  archive_entry_set_pathname(e, name);
  archive_entry_set_filetype(e, type);
  archive_entry_set_perm(e, perm);
  archive_entry_set_size(e, size);
  archive_entry_set_mtime(e, (time_t)w->mtime, 0);
  archive_entry_set_uid(e, 0);
  archive_entry_set_gid(e, 0);
  int r = archive_write_header(w->a, e);
  archive_entry_free(e);
  if (r != ARCHIVE_OK)
    return dyn__fail(w->err, w->errlen, DYN_ESYS, "cannot add %s to the archive: %s", name,
                     archive_error_string(w->a));
  return DYN_OK;
}

static int add_file(writer_t *w, const char *path, const char *name, const struct stat *st) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW);
  if (fd < 0) return dyn__fail(w->err, w->errlen, DYN_ESYS, "cannot read %s: %s", path, strerror(errno));
  int rc = header(w, name, AE_IFREG, (st->st_mode & S_IXUSR) ? 0755 : 0644, (long long)st->st_size);
  char buf[65536];
  long long left = (long long)st->st_size;
  while (!rc && left > 0) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      /* The size in the header is a promise; a file that shrank under us
       * would make a corrupt archive. */
      rc = dyn__fail(w->err, w->errlen, DYN_ESYS, "%s changed while it was archived", path);
      break;
    }
    if (n > left) n = (ssize_t)left;
    if (archive_write_data(w->a, buf, (size_t)n) != n)
      rc = dyn__fail(w->err, w->errlen, DYN_ESYS, "cannot write %s to the archive: %s", name,
                     archive_error_string(w->a));
    left -= n;
  }
  close(fd);
  return rc;
}

static int add_tree(writer_t *w, const char *path, const char *name) {
  int rc = header(w, name, AE_IFDIR, 0755, 0);
  if (rc) return rc;
  struct dirent **list;
  int n = scandir(path, &list, skip_dots, by_name);
  if (n < 0) return dyn__fail(w->err, w->errlen, DYN_ESYS, "cannot list %s: %s", path, strerror(errno));
  for (int i = 0; i < n; i++) {
    char child[PATH_MAX], cname[PATH_MAX];
    struct stat st;
    if (!rc && (snprintf(child, sizeof child, "%s/%s", path, list[i]->d_name) >= (int)sizeof child ||
                snprintf(cname, sizeof cname, "%s/%s", name, list[i]->d_name) >= (int)sizeof cname))
      rc = dyn__fail(w->err, w->errlen, DYN_EINVAL, "path too long under %s", path);
    if (!rc && lstat(child, &st))
      rc = dyn__fail(w->err, w->errlen, DYN_ESYS, "cannot stat %s: %s", child, strerror(errno));
    if (!rc) {
      if (S_ISDIR(st.st_mode)) rc = add_tree(w, child, cname);
      else if (S_ISREG(st.st_mode)) rc = add_file(w, child, cname, &st);
      else
        rc = dyn__fail(w->err, w->errlen, DYN_EINVAL,
                       "%s is not a regular file or directory; an artifact holds only those", child);
    }
    free(list[i]);
  }
  free(list);
  return rc;
}

int dyn__tarball_write(const char *dir, const char *prefix, const char *path, long long mtime,
                       char *err, size_t errlen) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp)
    return dyn__fail(err, errlen, DYN_EINVAL, "archive path too long: %s", path);
  writer_t w = {.a = archive_write_new(), .mtime = mtime, .err = err, .errlen = errlen};
  if (!w.a) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  int rc = DYN_OK;
  /* "timestamp" off: gzip's header would otherwise carry the build time. */
  if (archive_write_add_filter_gzip(w.a) != ARCHIVE_OK ||
      archive_write_set_filter_option(w.a, "gzip", "timestamp", NULL) != ARCHIVE_OK ||
      archive_write_set_format_pax_restricted(w.a) != ARCHIVE_OK)
    rc = dyn__fail(err, errlen, DYN_ESYS, "libarchive cannot write .tar.gz: %s",
                   archive_error_string(w.a));
  else if (archive_write_open_filename(w.a, tmp) != ARCHIVE_OK)
    rc = dyn__fail(err, errlen, DYN_ESYS, "cannot create %s: %s", tmp, archive_error_string(w.a));
  else {
    rc = add_tree(&w, dir, prefix);
    if (archive_write_close(w.a) != ARCHIVE_OK && !rc)
      rc = dyn__fail(err, errlen, DYN_ESYS, "cannot finish %s: %s", tmp, archive_error_string(w.a));
  }
  archive_write_free(w.a);
  if (!rc && rename(tmp, path))
    rc = dyn__fail(err, errlen, DYN_ESYS, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
  if (rc) unlink(tmp);
  return rc;
}

/* ---- extracting ------------------------------------------------------- */

/* Relative, no "." or ".." component, no empty component but a trailing
 * slash (tar writes directories as "a/b/"). */
static int safe_name(const char *name) {
  if (!*name || *name == '/') return 0;
  for (const char *p = name; *p;) {
    size_t n = strcspn(p, "/");
    if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.')) return 0;
    if (n == 0) return 0;
    p += n;
    if (*p == '/') p++;
  }
  return 1;
}

/* mkdir -p of the parents of path below root (root exists). */
static int make_parents(const char *root, const char *path) {
  char buf[PATH_MAX];
  snprintf(buf, sizeof buf, "%s", path);
  for (char *s = buf + strlen(root) + 1; (s = strchr(s, '/')); s++) {
    *s = 0;
    if (mkdir(buf, 0755) && errno != EEXIST) return -1;
    *s = '/';
  }
  return 0;
}

static int extract_file(struct archive *a, const char *full, int perm, char *err, size_t errlen) {
  int fd = open(full, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, perm);
  if (fd < 0) return dyn__fail(err, errlen, DYN_ESYS, "cannot create %s: %s", full, strerror(errno));
  char buf[65536];
  la_ssize_t n;
  int rc = DYN_OK;
  while ((n = archive_read_data(a, buf, sizeof buf)) > 0) {
    for (la_ssize_t off = 0; off < n && !rc;) {
      ssize_t w = write(fd, buf + off, (size_t)(n - off));
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) rc = dyn__fail(err, errlen, DYN_ESYS, "cannot write %s: %s", full, strerror(errno));
      else off += w;
    }
    if (rc) break;
  }
  if (!rc && n < 0)
    rc = dyn__fail(err, errlen, DYN_EPROTO, "cannot read %s from the archive: %s", full,
                   archive_error_string(a));
  close(fd);
  return rc;
}

int dyn__tarball_extract(const char *path, const char *into, char *err, size_t errlen) {
  struct archive *a = archive_read_new();
  if (!a) return dyn__fail(err, errlen, DYN_ENOMEM, "out of memory");
  archive_read_support_filter_gzip(a);
  archive_read_support_format_tar(a);
  int rc = DYN_OK;
  if (archive_read_open_filename(a, path, 65536) != ARCHIVE_OK) {
    rc = dyn__fail(err, errlen, DYN_EINVAL, "cannot read %s as a .tar.gz: %s", path,
                   archive_error_string(a));
    archive_read_free(a);
    return rc;
  }
  struct archive_entry *e;
  int r;
  while (!rc && (r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
    const char *name = archive_entry_pathname(e);
    mode_t type = archive_entry_filetype(e);
    char full[PATH_MAX];
    /* `tar czf x.tgz -C DIR .` names its entries "./", "./dynamo.yaml", ...:
     * the same tree, one "./" deeper. The top itself is `into`. */
    while (name && name[0] == '.' && name[1] == '/') name += 2 + strspn(name + 2, "/");
    if (name && type == AE_IFDIR && (!*name || !strcmp(name, "."))) continue;
    if (!name || !safe_name(name)) {
      rc = dyn__fail(err, errlen, DYN_EINVAL, "%s: entry '%s' is not a safe relative path", path,
                     name ? name : "");
      break;
    }
    if (type != AE_IFREG && type != AE_IFDIR) {
      rc = dyn__fail(err, errlen, DYN_EINVAL,
                     "%s: entry '%s' is a link or special file; an artifact holds only files and "
                     "directories", path, name);
      break;
    }
    if (snprintf(full, sizeof full, "%s/%s", into, name) >= (int)sizeof full) {
      rc = dyn__fail(err, errlen, DYN_EINVAL, "%s: entry '%s' makes too long a path", path, name);
      break;
    }
    size_t len = strlen(full);
    if (full[len - 1] == '/') full[len - 1] = 0;
    if (make_parents(into, full)) {
      rc = dyn__fail(err, errlen, DYN_ESYS, "cannot create the directories of %s: %s", full,
                     strerror(errno));
    } else if (type == AE_IFDIR) {
      if (mkdir(full, 0755) && errno != EEXIST)
        rc = dyn__fail(err, errlen, DYN_ESYS, "cannot create %s: %s", full, strerror(errno));
    } else {
      rc = extract_file(a, full, (archive_entry_perm(e) & 0100) ? 0755 : 0644, err, errlen);
    }
  }
  if (!rc && r != ARCHIVE_EOF)
    rc = dyn__fail(err, errlen, DYN_EPROTO, "%s is not a valid .tar.gz: %s", path,
                   archive_error_string(a));
  archive_read_free(a);
  return rc;
}
