/* fuzz_control.c - the control plane's payload parsers and the subject
 * matcher on arbitrary bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dynamo/events.h"
#include "runtime/embedded/cp_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  dyn__cp_pair_t p;
  const char *why = NULL;
  if (dyn__cp_pair_decode(data, size, &p, &why) == 0) {
    if (p.rest + p.rest_len != data + size) abort();
  }
  (void)dyn__cp_string_check(data, size, &why);
  /* Split the input into a pattern and a subject at the first NUL. */
  char *buf = malloc(size + 2);
  if (!buf) return 0;
  memcpy(buf, data, size);
  buf[size] = 0;
  buf[size + 1] = 0;
  const char *pat = buf;
  const char *subj = buf + strlen(buf) + 1;
  if (subj > buf + size) subj = buf + size + 1;
  int pv = dyn_subject_valid(pat, 1), sv = dyn_subject_valid(subj, 0);
  if (pv && sv) (void)dyn_subject_match(pat, subj);
  /* A valid subject always matches itself and ">". */
  if (sv && (!dyn_subject_match(subj, subj) || !dyn_subject_match(">", subj))) abort();
  free(buf);
  return 0;
}
