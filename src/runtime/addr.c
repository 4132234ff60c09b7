/* addr.c - naming a TCP peer, shared by the request plane and HTTP. */
#include "runtime/addr.h"

#include <stdio.h>

void dyn__peer_name(const uv_tcp_t *h, char out[DYN__ADDR_MAX]) {
  struct sockaddr_storage ss;
  int len = sizeof ss;
  char ip[INET6_ADDRSTRLEN] = "?";
  snprintf(out, DYN__ADDR_MAX, "?");
  if (uv_tcp_getpeername(h, (struct sockaddr *)&ss, &len)) return;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *in4 = (const struct sockaddr_in *)&ss;
    uv_ip4_name(in4, ip, sizeof ip);
    snprintf(out, DYN__ADDR_MAX, "%s:%u", ip, (unsigned)ntohs(in4->sin_port));
  } else if (ss.ss_family == AF_INET6) {
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
    uv_ip6_name(in6, ip, sizeof ip);
    snprintf(out, DYN__ADDR_MAX, "[%s]:%u", ip, (unsigned)ntohs(in6->sin6_port));
  }
}
