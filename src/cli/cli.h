/* cli.h - the `dynamo` command's subcommands. */
#ifndef DYN__CLI_H
#define DYN__CLI_H
int dyn__cmd_build(int argc, char **argv);
int dyn__cmd_control(int argc, char **argv);
int dyn__cmd_deploy(int argc, char **argv);
int dyn__cmd_serve(int argc, char **argv);
int dyn__cmd_worker(int argc, char **argv);
#endif
