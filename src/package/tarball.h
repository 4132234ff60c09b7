/* tarball.h - reproducible .tar.gz archives of a directory, and their
 * safe extraction, for `dynamo build` and `dynamo serve ARTIFACT`.
 *
 * Reproducible means the same tree gives the same bytes on any machine at
 * any time: entries in byte order of their paths, one fixed mtime, owner
 * 0:0 with no user or group names, modes reduced to 0755/0644, and a gzip
 * header with no timestamp and no file name.
 */
#ifndef DYN__PACKAGE_TARBALL_H
#define DYN__PACKAGE_TARBALL_H

#include <stddef.h>

/* Archives the tree at dir into the file path (written to path.tmp and
 * renamed, so a reader never sees half an archive), every entry under
 * prefix/ (prefix itself is the first entry). Files that are executable by
 * their owner get 0755, others 0644; directories 0755. Symbolic links and
 * special files are refused (DYN_EINVAL), since the archive must not
 * depend on what a link points to at build time. */
int dyn__tarball_write(const char *dir, const char *prefix, const char *path, long long mtime,
                       char *err, size_t errlen);

/* Unpacks path (.tar.gz) into the existing directory into. Entries with
 * absolute paths, "..", links or special files are refused (DYN_EINVAL):
 * an archive from elsewhere must not write outside into. */
int dyn__tarball_extract(const char *path, const char *into, char *err, size_t errlen);

/* The mtime reproducible archives use: $SOURCE_DATE_EPOCH when it is a
 * whole number (the reproducible-builds.org convention), else 0. */
long long dyn__tarball_epoch(void);

#endif
