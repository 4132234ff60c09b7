/* worker_cmd.c - `dynamo worker lib.so:Entry --service NAME`: one worker of
 * a C service, as `dynamo serve` starts it. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "dynamo/service.h"
#include "serve/cplan.h"

int dyn__cmd_worker(int argc, char **argv) {
  const char *target = NULL, *service = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--service") && i + 1 < argc) {
      service = argv[++i];
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("usage: dynamo worker lib.so:Entry --service NAME\n\n"
             "Runs one worker of a C service (dynamo serve starts these).\n");
      return 0;
    } else if (!target && argv[i][0] != '-') {
      target = argv[i];
    } else {
      fprintf(stderr, "dynamo worker: unexpected argument '%s'\n", argv[i]);
      return 2;
    }
  }
  if (!target || !service || !dyn__is_c_target(target)) {
    fprintf(stderr, "usage: dynamo worker lib.so:Entry --service NAME\n");
    return 2;
  }
  return dyn_service_worker_run(target, service);
}
