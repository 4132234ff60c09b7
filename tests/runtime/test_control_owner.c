/* test_control_owner.c - another local user cannot take over the control
 * plane (src/runtime/embedded/cp_path.c).
 *
 * The test makes a second Unix user (it runs as root, as CI does) and has
 * it prepare each attack in a world-writable directory, as /tmp is:
 *   - it creates the default control directory first (mode 777): a
 *     control plane refuses to listen there and a runtime to connect;
 *   - the directory is ours but open to others: refused too;
 *   - it runs `dynamo control` on a socket of its own that a runtime is
 *     pointed at: refused by the socket's owner on disk;
 *   - the socket file is made ours but the process behind it is still the
 *     other user's (a swap between check and connect): refused by the
 *     peer's credentials.
 * Each refusal names the path and what is wrong; a proper directory works.
 */
#include <pwd.h>
#include <sys/stat.h>

#include "harness.h"
#include "runtime/embedded/cp_path.h"

static char user[32];
static uid_t other_uid;
static gid_t other_gid;
static char base[64];

static void remove_user(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "userdel %s >/dev/null 2>&1", user);
  if (system(cmd)) {}
  if (base[0]) {
    snprintf(cmd, sizeof cmd, "rm -rf %s", base);
    if (system(cmd)) {}
  }
}

/* Runs fn(arg) in a child as the other user; returns its exit status. */
static int as_other(int (*fn)(const char *), const char *arg) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(other_gid) || setuid(other_uid)) _exit(100);
    _exit(fn(arg));
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 101;
}

static int make_open_dir(const char *dir) {
  if (mkdir(dir, 0777)) return 1;
  return chmod(dir, 0777) ? 2 : 0;
}

/* A runtime on the default path must fail to join, with DYN_ECONTROL. */
static void runtime_refused(const char *sock) {
  dyn_runtime_options_t o;
  dyn_runtime_options_init(&o);
  o.control_socket = sock;
  dyn_runtime_t *rt = NULL;
  CHECK_STATUS(dyn_runtime_create(&o, &rt), DYN_ECONTROL);
  if (rt) dyn_runtime_destroy(rt);
}

int main(void) {
  h_init("control_owner");
  REQUIRE(geteuid() == 0); /* CI runs as root: it can make a second user */
  snprintf(user, sizeof user, "dyntest%d", (int)getpid());
  atexit(remove_user);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "useradd -M -N -s /usr/sbin/nologin %s", user);
  REQUIRE(system(cmd) == 0);
  struct passwd *pw = getpwnam(user);
  REQUIRE(pw != NULL);
  other_uid = pw->pw_uid;
  other_gid = pw->pw_gid;

  snprintf(base, sizeof base, "/tmp/dynctl-XXXXXX");
  REQUIRE(mkdtemp(base) != NULL);
  REQUIRE(chmod(base, 01777) == 0); /* like /tmp */
  setenv("XDG_RUNTIME_DIR", base, 1);
  unsetenv("DYN_CONTROL_SOCKET");
  char dir[128], err[320];
  snprintf(dir, sizeof dir, "%s/dynamo", base);

  /* 1. The other user made the default directory first. */
  CHECK_EQ_INT(as_other(make_open_dir, dir), 0);
  const char *sock = dyn_control_default_path();
  CHECK_MSG(!strncmp(sock, dir, strlen(dir)), "default path %s", sock);
  CHECK_STATUS(dyn__control_path_check(sock, err, sizeof err), DYN_ECONTROL);
  CHECK_MSG(strstr(err, dir) && strstr(err, "owned by uid"), "%s", err);
  uv_loop_t loop;
  uv_loop_init(&loop);
  dyn_control_t *cp = NULL;
  CHECK_STATUS(dyn_control_start(&loop, sock, &cp), DYN_ECONTROL);
  runtime_refused(sock);

  /* 2. Our own directory, but open to group and others. */
  REQUIRE(rmdir(dir) == 0);
  REQUIRE(mkdir(dir, 0700) == 0 && chmod(dir, 0755) == 0);
  CHECK_STATUS(dyn__control_path_check(sock, err, sizeof err), DYN_ECONTROL);
  CHECK_MSG(strstr(err, dir) && strstr(err, "mode 755"), "%s", err);
  runtime_refused(sock);

  /* 3. A proper directory (made by dyn_control_default_path) works. */
  REQUIRE(rmdir(dir) == 0);
  sock = dyn_control_default_path();
  struct stat st;
  CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK_STATUS(dyn__control_path_check(sock, err, sizeof err), DYN_OK);
  CHECK_STATUS(dyn_control_start(&loop, sock, &cp), DYN_OK);
  if (cp) dyn_control_stop(cp);
  uv_run(&loop, UV_RUN_NOWAIT);

  /* 4. The other user's control plane on a socket in a shared directory. */
  char evil[128];
  snprintf(evil, sizeof evil, "%s/evil.sock", base);
  pid_t pid = fork();
  if (pid == 0) {
    if (setgid(other_gid) || setuid(other_uid)) _exit(100);
    execl(DYN_BIN, DYN_BIN, "control", "--socket", evil, (char *)NULL);
    _exit(127);
  }
  REQUIRE(pid > 0);
  uint64_t end = h_now_ms() + 5000;
  while (h_now_ms() < end && !h_unix_alive(evil)) h_sleep_ms(10);
  REQUIRE(h_unix_alive(evil));
  CHECK_STATUS(dyn__control_path_check(evil, err, sizeof err), DYN_ECONTROL);
  CHECK_MSG(strstr(err, evil) && strstr(err, "owned by uid"), "%s", err);
  runtime_refused(evil);

  /* 5. The file looks like ours; the process behind it is not. */
  REQUIRE(chown(evil, 0, 0) == 0);
  CHECK_STATUS(dyn__control_path_check(evil, err, sizeof err), DYN_OK);
  runtime_refused(evil);

  kill(pid, SIGTERM);
  waitpid(pid, NULL, 0);
  uv_loop_close(&loop);
  TEST_END();
}
