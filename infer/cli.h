/* cli.h - helpers shared by the inference subcommands (classify, retrieve,
 * caption, embed): option parsing, the model options every one of them
 * takes, and loading images. Internal to infer/. */
#ifndef VLM_INFER_CLI_H
#define VLM_INFER_CLI_H

#include "infer.h"

typedef struct {
    int argc, i;
    char **argv;
    const char *cmd;          /* "classify", for messages */
    void (*usage)(FILE *);
} cli_args;

bool cli_is_help(const char *a);
/* If argv[i] is option name (or alias) as "--name VALUE" or "--name=VALUE",
 * stores the value and returns 1; 0 if it is another argument; -1 (message
 * printed) when the value is missing. */
int cli_take(cli_args *a, const char *name, const char *alias, const char **val);
/* Prints "error: CMD: what 'arg'" and the usage; returns 2. */
int cli_bad_usage(const cli_args *a, const char *what, const char *arg);
/* Prints "error: <vlm_last_error()>"; returns 1. */
int cli_fail(void);

bool cli_parse_int(const char *s, long min, long max, long *out);
bool cli_parse_u64(const char *s, uint64_t *out);
bool cli_parse_float(const char *s, double *out);

/* Options every inference command takes. */
typedef struct {
    const char *model, *config, *tokenizer, *decoder_tokenizer;
    int threads, batch;
} cli_model_opts;

#define CLI_MODEL_HELP                                                                          \
    "  --model M            a run directory (config.json + model.safetensors + tokenizer),\n"   \
    "                       a checkpoint, or a .safetensors file (then --config)\n"             \
    "  --config FILE        the model's config (run config or {\"model\": ...})\n"              \
    "  --tokenizer FILE     tokenizer.json or spiece.model (default: beside the model)\n"       \
    "  --batch-size N       rows per forward pass (default %d)\n"                             \
    "  --threads N          compute threads (default: all cores)\n"

/* Takes one of the options above at a->i: 1 taken, 0 not one of them, 2 bad
 * usage (message printed). */
int cli_take_model_opt(cli_args *a, cli_model_opts *m);
/* Sets the threads and loads the bundle; prints the error and returns NULL. */
vlm_bundle *cli_load_bundle(const cli_args *a, const cli_model_opts *m);

/* Loads and preprocesses n image files into a malloc'd [n, 3, S, S]; NULL
 * with the error set (naming the file). */
float *cli_load_images(const vlm_bundle *b, char *const *paths, int64_t n);
/* Images [first, first + n) of a dataset, preprocessed, into out. */
int cli_dataset_pixels(const vlm_bundle *b, vlm_dataset *ds, int64_t first, int64_t n, float *out);
/* The preprocessed first n images of ds, embedded batch by batch (so only
 * one batch of pixels is in memory) into out [n, embed_dim]. */
int cli_embed_dataset_images(vlm_ctx *ctx, const vlm_bundle *b, vlm_dataset *ds, int64_t n,
                             int batch, float *out);

/* The captions of a dataset's first images: text[j] of image[j]; distinct
 * texts are embedded once (Fashion-MNIST has 80 distinct captions for 120,000
 * rows): unique[u] are the distinct ones, unique_of[j] the row of text j. */
typedef struct {
    int64_t n, n_unique;
    char **text;
    int64_t *image, *unique_of;
    const char **unique; /* borrowed from text */
} cli_captions;

int cli_read_captions(vlm_dataset *ds, int64_t max_images, cli_captions *c);
void cli_captions_free(cli_captions *c);
/* Embeds the distinct texts and writes every caption's row into out [n, D]. */
int cli_embed_captions(vlm_ctx *ctx, const vlm_bundle *b, const cli_captions *c, int batch,
                       float *out);

/* Lines of a text file (empty ones skipped) as malloc'd strings; NULL with error. */
char **cli_read_lines(const char *path, int *n);
void cli_free_strings(char **s, int64_t n);
/* "a,b,c" (sep ',') -> malloc'd strings, each trimmed of spaces; an empty
 * piece is an error naming the list. */
char **cli_split_list(const char *list, char sep, int *n);

double cli_now(void);

#endif
