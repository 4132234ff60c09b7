/* addr.h - socket addresses as text, for log lines that name a peer. */
#ifndef DYN__ADDR_H
#define DYN__ADDR_H
#include <stddef.h>
#include <uv.h>

#define DYN__ADDR_MAX 64 /* "[" + IPv6 text + "]:" + port, NUL */

/* Writes the TCP peer of h as "1.2.3.4:5" or "[::1]:5", or "?" if unknown. */
void dyn__peer_name(const uv_tcp_t *h, char out[DYN__ADDR_MAX]);
#endif
