/* fuzz_frame.c - the request-plane decoder on arbitrary bytes.
 *
 * Feeds the input through the same loop a connection runs: decode frames
 * back to back, and decode each as HELLO and as REQUEST. Every length the
 * decoder reports must stay inside the input.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* A small max frame so the oversize path is reached often. */
  uint32_t max_frame = size ? 64u + data[0] * 16u : 64u;
  size_t off = 0;
  while (off < size) {
    dyn__frame_t f;
    const char *why = NULL;
    long n = dyn__frame_decode(data + off, size - off, max_frame, &f, &why);
    if (n <= 0) {
      if (n < 0 && !why) abort(); /* every error names its reason */
      break;
    }
    if ((size_t)n > size - off || f.payload + f.len > data + size) abort();
    dyn__hello_t h;
    (void)dyn__hello_decode(&f, &h, &why);
    dyn__request_hdr_t r;
    if (dyn__request_decode(&f, &r, &why) == 0) {
      if (r.body + r.body_len != f.payload + f.len) abort();
      if ((const uint8_t *)r.path + r.path_len > r.body) abort();
    }
    off += (size_t)n;
  }
  return 0;
}
