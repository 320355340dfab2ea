/* vlm.c - the `vlm` command: dispatches to the subcommands that each module
 * exports (git style). Each subcommand parses its own options and has --help. */
#include "data.h"
#include "nn.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *summary;
} vlm_command;

static const vlm_command commands[] = {
    /* {"inspect", vlm_cmd_inspect, "list the tensors of a safetensors file"}, */
    {NULL, NULL, NULL},
};

static void usage(FILE *f) {
    fprintf(f, "usage: vlm COMMAND [options]   (vlm COMMAND --help for details)\n\ncommands:\n");
    for (const vlm_command *c = commands; c->name; c++) fprintf(f, "  %-12s %s\n", c->name, c->summary);
}

int main(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (const vlm_command *c = commands; c->name; c++)
        if (!strcmp(c->name, argv[1])) return c->run(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
