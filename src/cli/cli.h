/* cli.h - the `dynamo` command's subcommands. */
#ifndef DYN__CLI_H
#define DYN__CLI_H
int dyn__cmd_build(int argc, char **argv);
int dyn__cmd_control(int argc, char **argv);
int dyn__cmd_deploy(int argc, char **argv);
int dyn__cmd_serve(int argc, char **argv);
int dyn__cmd_status(int argc, char **argv);
int dyn__cmd_worker(int argc, char **argv);

/* "NAME VALUE" or "NAME=VALUE" at argv[*i] (argv[0] is the subcommand):
 * 1 with *out set and *i advanced past what it used, 0 if argv[*i] is
 * another option, -1 (after saying so on stderr) if the value is missing. */
int dyn__cli_option(int argc, char **argv, int *i, const char *name, const char **out);
#endif
