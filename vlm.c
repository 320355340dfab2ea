/* vlm.c - the `vlm` command: dispatches to the subcommands that each module
 * exports (git style). Each subcommand parses its own options and has --help. */
#include "infer.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv); /* argv[0] is the subcommand name */
    const char *summary;
} vlm_command;

static const vlm_command commands[] = {
    {"bench", vlm_cmd_bench, "measure the data loader's throughput (images/s)"},
    {"caption", vlm_cmd_caption, "caption images with a captioner (greedy or sampled, KV cache)"},
    {"classify", vlm_cmd_classify, "zero-shot classification of images against given labels"},
    {"embed", vlm_cmd_embed, "write image / text / fused embeddings to an HDF5 file"},
    {"eval", vlm_cmd_eval, "metrics of a trained model: zero-shot and retrieval, or BLEU / CIDEr-D"},
    {"finetune", vlm_cmd_finetune, "caption fine-tuning of a captioner (towers + fusion + decoder)"},
    {"inspect", vlm_cmd_inspect, "list the tensors of a safetensors file"},
    {"pretrain", vlm_cmd_pretrain, "SigLIP contrastive pretraining (default: Fashion-MNIST)"},
    {"prepare", vlm_cmd_prepare, "convert Fashion-MNIST, shapes, an image folder or COCO into a dataset"},
    {"retrieve", vlm_cmd_retrieve, "search a dataset's images by text or its captions by image"},
    {"tokenizer", vlm_cmd_tokenizer, "train a byte-level BPE tokenizer; encode and decode text"},
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
