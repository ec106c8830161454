/* cli.h: what the command line tool's files share. */
#ifndef ZCI_TOOLS_CLI_H
#define ZCI_TOOLS_CLI_H

#include "zcinfer.h"

typedef struct cli_opts {
    zci_options zopts;
} cli_opts;

/* Parses an option every command takes (--device, --fp16, --batch …) at argv[i]; returns how
 * many entries it used, 0 if argv[i] is not one, -1 on a bad value (message printed). */
int cli_common_option(int argc, char **argv, int i, cli_opts *o);
/* Fills `bytes` of `data` with deterministic uniform [0, 1) values of type dt (xorshift state
 * in *state, so runs can be repeated); zeros for non-float types. */
void cli_fill_random(void *data, zci_dtype dt, size_t bytes, uint64_t *state);
/* Prints "zcinfer: WHAT: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);
int cmd_bench(int argc, char **argv);
int cmd_build(int argc, char **argv);
int cmd_detect(int argc, char **argv);

#endif
