/* proc.h - process groups and orphans: making sure nothing is left behind.
 *
 * A worker runs in its own process group, and whatever it starts shares
 * that group, so signalling the group reaches them all. What escapes the
 * group (a daemon that called setsid) still cannot escape the supervisor:
 * it is a child subreaper, so orphans of the graph are reparented to it,
 * and it can find them, reap them, and at the very end kill them.
 */
#ifndef DYN__SERVE_PROC_H
#define DYN__SERVE_PROC_H

#include <stddef.h>
#include <sys/types.h>

/* Makes this process the reaper of its descendants' orphans (Linux; a no-op
 * elsewhere). */
int dyn__proc_become_subreaper(void);

/* True while some process is in group pgid. */
int dyn__proc_group_alive(pid_t pgid);

/* Reaps children of this process that have exited, except the pids in
 * skip (libuv reaps those: they are the workers it spawned). Returns how
 * many were reaped. */
size_t dyn__proc_reap_orphans(const pid_t *skip, size_t nskip);

/* Sends sig (0: none, just count) to every live child of this process not
 * in skip, and returns how many there were. Exited children waiting to be
 * reaped are not counted. */
size_t dyn__proc_signal_children(int sig, const pid_t *skip, size_t nskip);

#endif
