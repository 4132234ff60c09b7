/* options.c - what every subcommand's argument parser shares. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

int dyn__cli_option(int argc, char **argv, int *i, const char *name, const char **out) {
  size_t n = strlen(name);
  if (strncmp(argv[*i], name, n)) return 0;
  if (argv[*i][n] == '=') {
    *out = argv[*i] + n + 1;
    return 1;
  }
  if (argv[*i][n]) return 0;
  if (*i + 1 >= argc) {
    fprintf(stderr, "dynamo %s: %s needs a value (try --help)\n", argv[0], name);
    *out = NULL;
    return -1;
  }
  *out = argv[++*i];
  return 1;
}
