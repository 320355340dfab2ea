/* prepare_cmd.c - `vlm prepare SOURCE [options] -o OUT.h5`: the command line
 * of vlm_prepare() (prepare.c). Exit status: 0, 1 on a failure, 2 on bad
 * usage, 130 when interrupted (SIGINT / SIGTERM: the run stops between
 * batches and removes its temp files, so nothing half-written is left). */
#include "data.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
        "usage: vlm prepare SOURCE [options] -o OUT.h5\n"
        "\n"
        "Converts a data source into a vlm HDF5 dataset (/images or /jpeg, /captions,\n"
        "/caption_image, optional /labels and /class_names; see the README). The file is\n"
        "written as OUT.h5.tmp and renamed when complete: a failed or interrupted run\n"
        "leaves no file and never replaces an existing one.\n"
        "\n"
        "sources:\n"
        "  fashion-mnist  Fashion-MNIST idx files (Debian package dataset-fashion-mnist);\n"
        "                 grey -> RGB, labels, class names, captions from templates\n"
        "  shapes         synthetic coloured shapes with compositional captions\n"
        "  folder         a folder of images + a TSV, CSV or JSONL captions file\n"
        "  coco           COCO captions JSON + its image folder\n"
        "\n"
        "options for every source:\n"
        "  -o, --output FILE       the dataset to write (required)\n"
        "  --image-size S          resize the shorter side to S and centre-crop to S x S;\n"
        "                          default 28 for fashion-mnist, 64 otherwise; 0 keeps the\n"
        "                          files as they are (folder / coco with --jpeg only)\n"
        "  --jpeg                  store JPEG blobs (/jpeg) instead of raw pixels (/images)\n"
        "  --jpeg-quality Q        1..100 (default 90)\n"
        "  --deflate L             gzip level 0..9 for raw /images (default 0: none);\n"
        "                          level 1 makes shapes ~20x and Fashion-MNIST ~2.3x smaller\n"
        "  --val-fraction F        hold out exactly round(F * N) items, chosen by the seed,\n"
        "                          in a second file (default 0: no val file)\n"
        "  --val-out FILE          the held-out file (default OUT-val.h5)\n"
        "  --seed N                split, captions drawn, shapes scenes (default 0)\n"
        "  --limit N               use the first N items only (quick tests)\n"
        "  --strict                fail on the first unreadable image (default: skip it\n"
        "                          and report it)\n"
        "  --threads N             decoding threads (default: all cores)\n"
        "  --quiet                 no progress line\n"
        "\n"
        "fashion-mnist:\n"
        "  --dir DIR               default /usr/share/datasets/fashion-mnist\n"
        "  --split train|test      train: 60,000 images, test: 10,000 (default train)\n"
        "  --captions-per-image K  distinct templates per image, 1..%d (default 2), e.g.\n"
        "                          \"a black and white photo of an ankle boot\"\n"
        "shapes:\n"
        "  --count N               number of images (required)\n"
        "folder:\n"
        "  --images DIR            the folder the caption file's paths are relative to\n"
        "  --captions FILE         .tsv: path<TAB>caption; .csv: path,caption (RFC 4180\n"
        "                          quoting); .jsonl: {\"image\": path, \"caption\": text}\n"
        "                          (or \"text\"; a list of texts also works). A path on\n"
        "                          several lines is one image with several captions.\n"
        "coco:\n"
        "  --annotations FILE      captions_*.json (\"images\" + \"annotations\")\n"
        "  --images DIR            the folder of its file_name entries\n"
        "\n"
        "Shapes captions: \"a SIZE COLOUR KIND\", optionally followed by \"REL a SIZE COLOUR\n"
        "KIND\" and \"and a SIZE COLOUR KIND REL the SIZE COLOUR KIND\" (the second shape);\n"
        "SIZE small|large, COLOUR red|green|blue|yellow|purple|orange, KIND\n"
        "circle|square|triangle, REL left of|right of|above|below. Label: the first\n"
        "shape's kind.\n"
        "\n"
        "examples:\n"
        "  vlm prepare fashion-mnist -o data/fmnist-train.h5 --val-fraction 0.1\n"
        "  vlm prepare fashion-mnist --split test -o data/fmnist-test.h5\n"
        "  vlm prepare shapes --count 50000 --image-size 64 --seed 1 --deflate 1 -o data/shapes.h5\n"
        "  vlm prepare folder --images photos/ --captions photos/captions.tsv -o data/photos.h5\n"
        "  vlm prepare coco --annotations annotations/captions_train2017.json \\\n"
        "      --images train2017/ --image-size 224 --jpeg -o data/coco-train.h5\n",
        VLM_CLASS_TEMPLATES);
}

/* ---- interruption --------------------------------------------------------------- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig) {
    (void)sig;
    interrupted = 1;
}

static bool was_interrupted(void) { return interrupted != 0; }

/* ---- arguments ---------------------------------------------------------------- */

typedef struct {
    int argc, i;
    char **argv;
} args;

/* If argv[i] is option name ("--name VALUE" or "--name=VALUE"), stores the
 * value and returns 1; 0 for another argument; -1 when the value is missing. */
static int take(args *a, const char *name, const char *alias, const char **val) {
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (!strncmp(s, name, n) && s[n] == '=') return *val = s + n + 1, 1;
    if (strcmp(s, name) && (!alias || strcmp(s, alias))) return 0;
    if (a->i + 1 >= a->argc) {
        fprintf(stderr, "error: prepare: %s needs a value\n", name);
        return -1;
    }
    *val = a->argv[++a->i];
    return 1;
}

static int bad_usage(const char *what, const char *arg) {
    fprintf(stderr, "error: prepare: %s%s%s%s\n", what, arg ? " '" : "", arg ? arg : "", arg ? "'" : "");
    fprintf(stderr, "(vlm prepare --help lists the options)\n");
    return 2;
}

static bool parse_i64(const char *s, long long min, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

static bool parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 0);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

/* ---- options ------------------------------------------------------------------- */

enum { FMNIST = 1, SHAPES = 2, FOLDER = 4, COCO = 8, ALL = 15 };

static const struct {
    const char *name;
    vlm_prepare_source source;
    unsigned bit;
} sources[] = {
    {"fashion-mnist", VLM_PREPARE_FASHION_MNIST, FMNIST},
    {"shapes", VLM_PREPARE_SHAPES, SHAPES},
    {"folder", VLM_PREPARE_FOLDER, FOLDER},
    {"coco", VLM_PREPARE_COCO, COCO},
};

/* Options that take a value, and the sources they apply to. */
static const struct {
    const char *name, *alias;
    unsigned sources;
} value_opts[] = {
    {"--output", "-o", ALL},      {"--image-size", NULL, ALL}, {"--jpeg-quality", NULL, ALL},
    {"--deflate", NULL, ALL},     {"--val-fraction", NULL, ALL}, {"--val-out", NULL, ALL},
    {"--seed", NULL, ALL},        {"--limit", NULL, ALL},      {"--threads", NULL, ALL},
    {"--dir", NULL, FMNIST},      {"--split", NULL, FMNIST},   {"--captions-per-image", NULL, FMNIST},
    {"--count", NULL, SHAPES},    {"--images", NULL, FOLDER | COCO},
    {"--captions", NULL, FOLDER}, {"--annotations", NULL, COCO},
};

typedef struct {
    vlm_prepare_opts o;
    unsigned bit; /* the source's */
    bool quiet, size_given;
    /* integer options, copied into o once parsed */
    long long image_size, jpeg_quality, deflate, limit, threads, count, per_image;
} cli;

static const struct {
    const char *name;
    long long min, max;
    size_t offset; /* of the long long in cli */
} int_opts[] = {
    {"--image-size", 0, 4096, offsetof(cli, image_size)},
    {"--jpeg-quality", 1, 100, offsetof(cli, jpeg_quality)},
    {"--deflate", 0, 9, offsetof(cli, deflate)},
    {"--limit", 1, INT64_MAX, offsetof(cli, limit)},
    {"--threads", 1, 1024, offsetof(cli, threads)},
    {"--count", 1, INT32_MAX, offsetof(cli, count)},
    {"--captions-per-image", 1, VLM_CLASS_TEMPLATES, offsetof(cli, per_image)},
};

/* Numeric options; the caller has checked that the option applies. */
static int set_number(cli *c, const char *name, const char *v) {
    if (!strcmp(name, "--seed"))
        return parse_u64(v, &c->o.seed) ? 0 : bad_usage("--seed must be an integer >= 0, not", v);
    if (!strcmp(name, "--val-fraction")) {
        char *end;
        c->o.val_fraction = strtod(v, &end);
        return *v && !*end && c->o.val_fraction >= 0 && c->o.val_fraction < 1
                   ? 0 : bad_usage("--val-fraction must be a number in [0, 1), not", v);
    }
    for (size_t k = 0; k < sizeof int_opts / sizeof int_opts[0]; k++) {
        if (strcmp(name, int_opts[k].name)) continue;
        long long x;
        if (!parse_i64(v, int_opts[k].min, int_opts[k].max, &x)) {
            fprintf(stderr, "error: prepare: %s must be an integer in %lld..%lld, not '%s'\n", name,
                    int_opts[k].min, int_opts[k].max, v);
            return 2;
        }
        *(long long *)((char *)c + int_opts[k].offset) = x;
        c->size_given |= k == 0;
        return 0;
    }
    return bad_usage("unknown option", name);
}

/* The integer options into o. */
static void copy_numbers(cli *c) {
    c->o.image_size = !c->size_given ? 0 : c->image_size ? (int)c->image_size : VLM_PREPARE_KEEP_SIZE;
    c->o.jpeg_quality = (int)c->jpeg_quality;
    c->o.deflate = (int)c->deflate;
    c->o.limit = c->limit;
    c->o.count = c->count;
    c->o.captions_per_image = (int)c->per_image;
}

static int set_value(cli *c, const char *name, const char *v) {
    const char **dst = !strcmp(name, "--output") ? &c->o.output
                       : !strcmp(name, "--val-out") ? &c->o.val_output
                       : !strcmp(name, "--dir") ? &c->o.dir
                       : !strcmp(name, "--images") ? &c->o.images_dir
                       : !strcmp(name, "--captions") ? &c->o.captions
                       : !strcmp(name, "--annotations") ? &c->o.annotations : NULL;
    if (dst) return *dst = v, 0;
    if (!strcmp(name, "--split")) {
        if (strcmp(v, "train") && strcmp(v, "test")) return bad_usage("--split must be train or test, not", v);
        return c->o.split = v, 0;
    }
    return set_number(c, name, v);
}

/* One argument at a->i: 0 to go on, or an exit status (-1: --help shown). */
static int parse_one(cli *c, args *a) {
    const char *s = a->argv[a->i], *v;
    if (!strcmp(s, "--help") || !strcmp(s, "-h")) return usage(stdout), -1;
    if (!strcmp(s, "--jpeg")) return c->o.jpeg = true, 0;
    if (!strcmp(s, "--strict")) return c->o.strict = true, 0;
    if (!strcmp(s, "--quiet")) return c->quiet = true, 0;
    for (size_t k = 0; k < sizeof value_opts / sizeof value_opts[0]; k++) {
        int r = take(a, value_opts[k].name, value_opts[k].alias, &v);
        if (r < 0) return 2;
        if (!r) continue;
        if (!(value_opts[k].sources & c->bit))
            return bad_usage("this option does not apply to the source given:", value_opts[k].name);
        return set_value(c, value_opts[k].name, v);
    }
    return bad_usage(s[0] == '-' ? "unknown option" : "unexpected argument", s);
}

static int parse_args(cli *c, int argc, char **argv) {
    const char *src = argv[1];
    for (size_t k = 0; k < sizeof sources / sizeof sources[0]; k++)
        if (!strcmp(src, sources[k].name)) c->o.source = sources[k].source, c->bit = sources[k].bit;
    if (!c->bit) return bad_usage("unknown source (fashion-mnist, shapes, folder or coco):", src);
    args a = {.argc = argc, .argv = argv};
    for (a.i = 2; a.i < argc; a.i++) {
        int rc = parse_one(c, &a);
        if (rc) return rc;
    }
    copy_numbers(c);
    if (!c->o.output) return bad_usage("missing -o OUT.h5", NULL);
    if (c->o.source == VLM_PREPARE_SHAPES && !c->o.count) return bad_usage("shapes: missing --count N", NULL);
    if (c->o.source == VLM_PREPARE_FOLDER && (!c->o.images_dir || !c->o.captions))
        return bad_usage("folder: --images DIR and --captions FILE are required", NULL);
    if (c->o.source == VLM_PREPARE_COCO && (!c->o.images_dir || !c->o.annotations))
        return bad_usage("coco: --annotations FILE and --images DIR are required", NULL);
    if (c->o.image_size == VLM_PREPARE_KEEP_SIZE && !(c->o.jpeg && (c->bit & (FOLDER | COCO))))
        return bad_usage("--image-size 0 (keep the sizes) needs --jpeg and the folder or coco source", NULL);
    return 0;
}

/* ---- the report ------------------------------------------------------------------ */

static void print_report(const cli *c, const vlm_prepare_report *r) {
    char size[48];
    if (r->image_size) snprintf(size, sizeof size, "%dx%d", r->image_size, r->image_size);
    else snprintf(size, sizeof size, "original size");
    printf("wrote %s: %lld images (%s, %s), %lld captions\n", c->o.output, (long long)r->images,
           size, c->o.jpeg ? "jpeg" : "raw", (long long)r->captions);
    if (r->val_images) {
        char *val = c->o.val_output ? NULL : vlm_prepare_val_path(c->o.output);
        printf("wrote %s: %lld images, %lld captions (held out)\n",
               c->o.val_output ? c->o.val_output : val ? val : "the val file",
               (long long)r->val_images, (long long)r->val_captions);
        free(val);
    }
    if (c->o.val_fraction > 0 && !r->val_images)
        printf("note: --val-fraction %g of %lld items holds out none: no val file\n", c->o.val_fraction,
               (long long)r->images);
    if (r->skipped) printf("skipped %lld unreadable images\n", (long long)r->skipped);
    if (r->uncaptioned) printf("left out %lld images without captions\n", (long long)r->uncaptioned);
    if (r->ignored_captions)
        printf("dropped %lld captions (empty, or of an unknown image)\n", (long long)r->ignored_captions);
    if (r->n_reasons) {
        int64_t total = r->skipped + r->uncaptioned + r->ignored_captions;
        printf("%s:\n", total > r->n_reasons ? "first reasons" : "reasons");
        for (int i = 0; i < r->n_reasons; i++) printf("  %s\n", r->reasons[i]);
    }
    int64_t n = r->images + r->val_images;
    printf("done in %.2f s (%.0f images/s)\n", r->seconds, r->seconds > 0 ? (double)n / r->seconds : 0.0);
}

/* ---- entry point ----------------------------------------------------------------- */

int vlm_cmd_prepare(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "error: prepare: missing SOURCE\n");
        return usage(stderr), 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) return usage(stdout), 0;
    cli c = {0};
    int rc = parse_args(&c, argc, argv);
    if (rc) return rc < 0 ? 0 : rc;
    if (c.threads) vlm_set_num_threads((int)c.threads);
    c.o.progress = !c.quiet;
    c.o.cancelled = was_interrupted;
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESTART}, old_int, old_term;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    vlm_prepare_report r;
    rc = vlm_prepare(&c.o, &r);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (rc) {
        fprintf(stderr, "error: %s\n", vlm_last_error());
        return interrupted ? 130 : 1;
    }
    print_report(&c, &r);
    return 0;
}
