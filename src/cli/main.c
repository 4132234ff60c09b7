/* main.c - the `dynamo` command: dispatches to a subcommand. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: dynamo <command> [options]\n"
          "\n"
          "commands:\n"
          "  serve     run a graph: its workers, restarts and an embedded control plane\n"
          "  build     package a graph into an artifact (a directory and a .tar.gz)\n"
          "  deploy    Kubernetes manifests for an artifact, or kubectl apply them\n"
          "  status    the graph being served: services, instances, their load\n"
          "  control   run the embedded control plane (discovery and events)\n"
          "  worker    run one worker of a C service (started by serve)\n"
          "\n"
          "Run `dynamo <command> --help` for a command's options.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  const char *cmd = argv[1];
  if (!strcmp(cmd, "control")) return dyn__cmd_control(argc - 1, argv + 1);
  if (!strcmp(cmd, "serve")) return dyn__cmd_serve(argc - 1, argv + 1);
  if (!strcmp(cmd, "build")) return dyn__cmd_build(argc - 1, argv + 1);
  if (!strcmp(cmd, "deploy")) return dyn__cmd_deploy(argc - 1, argv + 1);
  if (!strcmp(cmd, "status")) return dyn__cmd_status(argc - 1, argv + 1);
  if (!strcmp(cmd, "worker")) return dyn__cmd_worker(argc - 1, argv + 1);
  if (!strcmp(cmd, "-h") || !strcmp(cmd, "--help") || !strcmp(cmd, "help")) {
    usage(stdout);
    return 0;
  }
  fprintf(stderr, "dynamo: unknown command '%s'\n", cmd);
  usage(stderr);
  return 2;
}
