/* classify_cmd.c - `vlm classify`: zero-shot classification of image files
 * against labels given on the command line (CLIP-style prompt ensembles). */
#include "cli.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm classify --model M (--labels LIST | --labels-file FILE) [options] IMAGE...\n"
            "\n"
            "Zero-shot classification. Every label is put into each prompt template, the\n"
            "prompts are embedded by the text tower and L2-normalised, averaged per label\n"
            "and re-normalised (CLIP's prompt ensemble); each image's embedding is scored\n"
            "against every label. Prints the best labels of each image, best first:\n"
            "  IMAGE\n"
            "    SCORE  LABEL\n"
            "\n"
            "options:\n" CLI_MODEL_HELP
            "  --labels LIST        comma-separated labels, e.g. \"cat,dog,ankle boot\"\n"
            "  --labels-file FILE   one label per line\n"
            "  --templates FILE     prompt templates, one per line, each with {} standing for\n"
            "                       \"a\"/\"an\" + the lower-cased label (\"a photo of {}\" ->\n"
            "                       \"a photo of an ankle boot\"); default: the model config's\n"
            "                       data.templates, else the 8 built-in ones\n"
            "  --top-k K            labels printed per image (default 5; at most all labels)\n"
            "  --score KIND         softmax: over the labels of exp(logit_scale) * cosine\n"
            "                       (default; the printed scores of all labels sum to 1)\n"
            "                       sigmoid: SigLIP's independent probability\n"
            "                       sigmoid(exp(logit_scale) * cosine + logit_bias)\n"
            "                       cosine: the cosine similarity itself\n"
            "\n"
            "example:\n"
            "  vlm classify --model runs/fmnist --labels \"T-shirt/top,Trouser,Bag\" shirt.png\n",
            32);
}

typedef struct {
    cli_model_opts m;
    const char *labels, *labels_file, *templates, *score;
    int top_k;
    char **images;
    int n_images;
} classify_args;

static int parse(int argc, char **argv, classify_args *o) {
    cli_args a = {argc, 1, argv, "classify", usage};
    o->top_k = 5;
    o->score = "softmax";
    o->images = calloc((size_t)argc, sizeof *o->images);
    if (!o->images) return fprintf(stderr, "error: out of memory\n"), 1;
    for (; a.i < argc; a.i++) {
        const char *s = argv[a.i], *v = NULL;
        int r;
        long n;
        if (cli_is_help(s)) return usage(stdout), -1;
        if ((r = cli_take_model_opt(&a, &o->m))) {
            if (r == 2) return 2;
        } else if ((r = cli_take(&a, "--labels", NULL, &o->labels)) ||
                   (r = cli_take(&a, "--labels-file", NULL, &o->labels_file)) ||
                   (r = cli_take(&a, "--templates", NULL, &o->templates)) ||
                   (r = cli_take(&a, "--score", NULL, &o->score))) {
            if (r < 0) return 2;
        } else if ((r = cli_take(&a, "--top-k", "-k", &v))) {
            if (r < 0) return 2;
            if (!cli_parse_int(v, 1, 1 << 30, &n)) return cli_bad_usage(&a, "--top-k must be >= 1, got", v);
            o->top_k = (int)n;
        } else if (s[0] == '-' && s[1]) {
            return cli_bad_usage(&a, "unknown option", s);
        } else {
            o->images[o->n_images++] = argv[a.i];
        }
    }
    if (!o->labels == !o->labels_file) return cli_bad_usage(&a, "give exactly one of --labels and --labels-file", NULL);
    if (strcmp(o->score, "softmax") && strcmp(o->score, "sigmoid") && strcmp(o->score, "cosine"))
        return cli_bad_usage(&a, "--score must be softmax, sigmoid or cosine, got", o->score);
    if (!o->n_images) return cli_bad_usage(&a, "no IMAGE given", NULL);
    if (!o->m.model) return cli_bad_usage(&a, "--model is required", NULL);
    return 0;
}

/* Templates: --templates FILE, else the config's "|"-separated list, else built-in. */
static char **load_templates(const classify_args *o, const vlm_bundle *b, int *n) {
    if (o->templates) return cli_read_lines(o->templates, n);
    if (b->templates[0]) return cli_split_list(b->templates, '|', n);
    char **t = NULL;
    if (!(t = calloc(VLM_CLASS_TEMPLATES, sizeof *t))) return vlm_set_error("out of memory"), NULL;
    for (*n = 0; *n < VLM_CLASS_TEMPLATES; (*n)++)
        if (!(t[*n] = strdup(vlm_class_templates[*n]))) {
            cli_free_strings(t, *n);
            return vlm_set_error("out of memory"), NULL;
        }
    return t;
}

static int check_templates(char **t, int n, const char *from) {
    for (int i = 0; i < n; i++)
        if (!strstr(t[i], "{}"))
            return vlm_set_error("%s: template %d \"%s\" has no {} for the label", from, i + 1, t[i]);
    return 0;
}

/* Scores of one image against k class vectors, as --score asks. */
static void score_image(const vlm_bundle *b, const char *kind, const float *img, const float *cls,
                        int k, int D, float *out) {
    float scale = vlm_bundle_logit_scale(b), bias = vlm_bundle_logit_bias(b);
    double mx = -INFINITY, z = 0;
    for (int c = 0; c < k; c++) {
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)img[i] * cls[(size_t)c * D + i];
        out[c] = (float)s;
        mx = fmax(mx, scale * s);
    }
    if (!strcmp(kind, "cosine")) return;
    for (int c = 0; c < k; c++) {
        if (!strcmp(kind, "sigmoid")) {
            out[c] = (float)(1.0 / (1.0 + exp(-(scale * out[c] + bias))));
        } else {
            out[c] = (float)exp(scale * out[c] - mx);
            z += out[c];
        }
    }
    for (int c = 0; z > 0 && c < k; c++) out[c] = (float)(out[c] / z);
}

static int print_results(const classify_args *o, const vlm_bundle *b, char **labels, int k,
                         const float *img, const float *cls) {
    int D = vlm_bundle_embed_dim(b), top = o->top_k < k ? o->top_k : k;
    float *s = malloc((size_t)k * sizeof *s);
    int *idx = malloc((size_t)k * sizeof *idx);
    if (!s || !idx) return free(s), free(idx), vlm_set_error("out of memory");
    for (int i = 0; i < o->n_images; i++) {
        score_image(b, o->score, img + (size_t)i * D, cls, k, D, s);
        vlm_topk(s, k, top, idx);
        printf("%s\n", o->images[i]);
        for (int r = 0; r < top; r++) printf("  %.6f  %s\n", s[idx[r]], labels[idx[r]]);
    }
    free(s);
    free(idx);
    return 0;
}

static int run(const classify_args *o, const vlm_bundle *b) {
    int k = 0, nt = 0, rc = -1, D = vlm_bundle_embed_dim(b);
    char **labels = o->labels ? cli_split_list(o->labels, ',', &k) : cli_read_lines(o->labels_file, &k);
    char **tmpl = labels ? load_templates(o, b, &nt) : NULL;
    float *pixels = tmpl ? cli_load_images(b, o->images, o->n_images) : NULL;
    float *cls = malloc((size_t)k * D * sizeof *cls);
    float *img = malloc((size_t)o->n_images * D * sizeof *img);
    vlm_ctx *ctx = vlm_ctx_new(0);
    if (pixels && cls && img && ctx &&
        !check_templates(tmpl, nt, o->templates ? o->templates : "data.templates") &&
        !vlm_bundle_class_vectors(ctx, b, (const char *const *)labels, k,
                                  (const char *const *)tmpl, nt, o->m.batch, cls) &&
        !vlm_bundle_embed_images(ctx, b, pixels, o->n_images, o->m.batch, img))
        rc = print_results(o, b, labels, k, img, cls);
    else if (pixels && (!cls || !img || !ctx))
        vlm_set_error("out of memory");
    vlm_ctx_free(ctx);
    free(img);
    free(cls);
    free(pixels);
    cli_free_strings(tmpl, nt);
    cli_free_strings(labels, k);
    return rc;
}

int vlm_cmd_classify(int argc, char **argv) {
    classify_args o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) {
        free(o.images);
        return rc < 0 ? 0 : rc;
    }
    cli_args a = {argc, 1, argv, "classify", usage};
    vlm_bundle *b = cli_load_bundle(&a, &o.m);
    rc = b ? (run(&o, b) ? cli_fail() : 0) : 1;
    vlm_bundle_free(b);
    free(o.images);
    return rc;
}
