/* etcd_http.h - JSON POSTs to etcd's gateway, run by libcurl on a libuv loop.
 *
 * libcurl's multi interface does the HTTP; the loop does the waiting
 * (curl_multi_socket_action driven by uv_poll_t and one uv_timer_t), so
 * requests never block the runtime. Streamed responses (etcd's watch) are
 * split into lines. Callbacks run from the loop after libcurl has returned,
 * never from inside libcurl (which forbids adding or removing transfers
 * there) and never from inside dyn__ehttp_post: so a callback may post,
 * cancel, or free everything.
 */
#ifndef DYN__ETCD_HTTP_H
#define DYN__ETCD_HTTP_H

#include <stddef.h>
#include <uv.h>

typedef struct dyn__ehttp dyn__ehttp_t;
typedef struct dyn__ehttp_req dyn__ehttp_req_t;

/* One line of a streamed response, without its line end; not NUL-terminated. */
typedef void (*dyn__ehttp_line_fn)(dyn__ehttp_req_t *r, const char *line, size_t len,
                                   void *ud);

/* The request ended, once, unless it was cancelled. rc DYN_OK: an answer
 * came, with its HTTP status and (unstreamed requests) its NUL-terminated
 * body; otherwise no answer, and err says why in words. */
typedef void (*dyn__ehttp_done_fn)(dyn__ehttp_req_t *r, int rc, long status,
                                   const char *body, size_t len, const char *err,
                                   void *ud);

int dyn__ehttp_new(uv_loop_t *loop, dyn__ehttp_t **out);

/* POSTs the JSON body to url. timeout_ms 0: no limit (streams; TCP
 * keepalive then notices a dead peer). line NULL: collect the body for
 * done; else stream it to line. *out (may be NULL) names it for cancel. */
int dyn__ehttp_post(dyn__ehttp_t *h, const char *url, const char *body, long timeout_ms,
                    dyn__ehttp_line_fn line, dyn__ehttp_done_fn done, void *ud,
                    dyn__ehttp_req_t **out);

/* Ends a request; none of its callbacks run after this. */
void dyn__ehttp_cancel(dyn__ehttp_req_t *r);

/* Cancels every request and releases h once its handles have closed. */
void dyn__ehttp_free(dyn__ehttp_t *h);

/* One blocking POST of at most timeout_ms, for paths that must finish
 * before they return (revoking the lease on close). DYN_OK and *status if
 * an answer came. */
int dyn__ehttp_post_sync(const char *url, const char *body, long timeout_ms, long *status);
#endif
