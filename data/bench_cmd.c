/* bench_cmd.c - `vlm bench loader`: how many training images per second the
 * data loader delivers from a dataset file, so it can be compared with what a
 * training step consumes. Exit status: 0, 1 on a failure, 2 on bad usage. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage_main(FILE *f) {
    fprintf(f, "usage: vlm bench loader [options]   (vlm bench loader --help for details)\n"
               "\n"
               "  loader   images/s delivered by the data loader from a dataset file\n");
}

static void usage_loader(FILE *f) {
    fprintf(f,
            "usage: vlm bench loader --dataset FILE.h5 [options]\n"
            "\n"
            "Runs the data loader (background threads decoding, resizing, normalising and\n"
            "tokenizing) with nothing consuming the batches, and prints the images per\n"
            "second it delivers after the first batch, with the thread count and the\n"
            "dataset's storage layout (raw pixels or jpeg blobs).\n"
            "\n"
            "options:\n"
            "  --dataset FILE     the HDF5 dataset (vlm prepare writes one)\n"
            "  --size N           model input side (default 128)\n"
            "  --batch N          images per batch (default 64)\n"
            "  --threads N        worker threads (default 2)\n"
            "  --depth N          batches prepared ahead (default 3)\n"
            "  --batches K        batches timed, after one untimed (default 30)\n"
            "  --unit U           image or caption (default image)\n"
            "  --augment          random resized crop + horizontal flip (default off)\n"
            "  --filter F         bicubic or bilinear (default bicubic)\n"
            "  --tokenizer FILE   also tokenize the captions: tokenizer.json (BPE) or a\n"
            "                     SentencePiece .model (SigLIP tokenization)\n"
            "  --ctx N            token ids per caption with --tokenizer (default 64)\n"
            "\n"
            "example:\n"
            "  vlm bench loader --dataset train.h5 --size 128 --batch 64 --threads 2\n");
}

typedef struct {
    const char *dataset, *tokenizer, *unit, *filter;
    int size, batch, threads, depth, batches, ctx;
    bool augment;
} bench_args;

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Parses a positive int option value; -1 on a bad one. */
static int parse_pos(const char *opt, const char *s, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < 1 || v > 1 << 24) {
        fprintf(stderr, "error: %s needs a positive integer, not '%s'\n", opt, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* 0, 1 when --help was printed, -1 on bad usage. */
static int parse_args(int argc, char **argv, bench_args *a) {
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) return usage_loader(stdout), 1;
        if (!strcmp(o, "--augment")) {
            a->augment = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: unknown option or missing value: %s\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(o, "--dataset")) a->dataset = v;
        else if (!strcmp(o, "--tokenizer")) a->tokenizer = v;
        else if (!strcmp(o, "--unit")) a->unit = v;
        else if (!strcmp(o, "--filter")) a->filter = v;
        else if (!strcmp(o, "--size")) rc = parse_pos(o, v, &a->size);
        else if (!strcmp(o, "--batch")) rc = parse_pos(o, v, &a->batch);
        else if (!strcmp(o, "--threads")) rc = parse_pos(o, v, &a->threads);
        else if (!strcmp(o, "--depth")) rc = parse_pos(o, v, &a->depth);
        else if (!strcmp(o, "--batches")) rc = parse_pos(o, v, &a->batches);
        else if (!strcmp(o, "--ctx")) rc = parse_pos(o, v, &a->ctx);
        else {
            fprintf(stderr, "error: unknown option %s\n", o);
            return -1;
        }
        if (rc) return -1;
    }
    if (!a->dataset) fprintf(stderr, "error: --dataset is required\n");
    if (strcmp(a->unit, "image") && strcmp(a->unit, "caption"))
        return fprintf(stderr, "error: --unit must be image or caption\n"), -1;
    if (strcmp(a->filter, "bicubic") && strcmp(a->filter, "bilinear"))
        return fprintf(stderr, "error: --filter must be bicubic or bilinear\n"), -1;
    return a->dataset ? 0 : -1;
}

/* ---- tokenizers for --tokenizer ---------------------------------------------------- */

typedef struct {
    vlm_bpe *bpe;
    vlm_spm *spm;
} bench_tok;

/* BPE: the first ctx ids of the encoding; SentencePiece: SigLIP's tokenization
 * (EOS-terminated, EOS-padded). The mask marks the ids before padding. */
static int bench_tokenize(void *user, const char *text, int32_t *ids, uint8_t *mask, int ctx) {
    const bench_tok *t = user;
    int n;
    if (t->spm) {
        n = vlm_siglip_tokenize(t->spm, text, ctx, ids);
        if (n < 0) return -1;
    } else {
        int32_t *all;
        if (vlm_bpe_encode(t->bpe, text, strlen(text), &all, &n)) return -1;
        if (n > ctx) n = ctx;
        memcpy(ids, all, (size_t)n * sizeof *ids);
        free(all);
    }
    memset(mask, 1, (size_t)n);
    return n;
}

static int load_tokenizer(const char *path, bench_tok *t) {
    size_t len = strlen(path);
    if (len >= 5 && !strcmp(path + len - 5, ".json")) t->bpe = vlm_bpe_load(path);
    else t->spm = vlm_spm_load(path);
    return t->bpe || t->spm ? 0 : -1;
}

/* ---- the benchmark ------------------------------------------------------------------ */

static vlm_loader_opts loader_opts(const bench_args *a, bench_tok *tok) {
    vlm_loader_opts o = vlm_loader_opts_default(a->batch, a->size);
    o.unit = strcmp(a->unit, "caption") ? VLM_SAMPLE_IMAGE : VLM_SAMPLE_CAPTION;
    o.image.filter = strcmp(a->filter, "bilinear") ? VLM_RESIZE_BICUBIC : VLM_RESIZE_BILINEAR;
    o.image.random_resized_crop = o.image.hflip = a->augment;
    o.num_threads = a->threads;
    o.queue_depth = a->depth;
    if (a->tokenizer) {
        o.tokenize = bench_tokenize;
        o.tokenize_user = tok;
        o.ctx_len = a->ctx;
    }
    return o;
}

/* Times a->batches batches after a first, untimed one (thread start-up and
 * filling the queue). */
static int time_loader(vlm_loader *l, const bench_args *a, const char *layout) {
    double t0 = clock_s(CLOCK_MONOTONIC);
    if (!vlm_loader_next(l)) return -1;
    double t1 = clock_s(CLOCK_MONOTONIC), cpu1 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    int64_t images = 0;
    for (int k = 0; k < a->batches; k++) {
        const vlm_batch *b = vlm_loader_next(l);
        if (!b) return -1;
        images += b->n;
    }
    double dt = clock_s(CLOCK_MONOTONIC) - t1, cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - cpu1;
    printf("first batch after %.3f s; %d batches (%lld images) in %.3f s\n", t1 - t0, a->batches,
           (long long)images, dt);
    printf("%.1f images/s with %d threads (%s layout), %.1f ms/batch\n", images / dt, a->threads,
           layout, dt * 1e3 / a->batches);
    /* CPU time of all threads: what the work costs even when other processes
     * share the cores (then images/s understates what the loader can do) */
    printf("CPU %.3f ms/image (%.1f images per CPU-second)\n", cpu * 1e3 / images, images / cpu);
    return 0;
}

static int run_bench(const bench_args *a, vlm_dataset *ds, bench_tok *tok) {
    vlm_loader_opts o = loader_opts(a, tok);
    vlm_loader *l = vlm_loader_new(ds, &o);
    if (!l) return -1;
    bool jpeg = vlm_dataset_layout_of(ds) == VLM_DATASET_JPEG;
    printf("dataset %s: %lld images, %lld captions, %s layout\n", a->dataset,
           (long long)vlm_dataset_num_images(ds), (long long)vlm_dataset_num_captions(ds),
           jpeg ? "jpeg" : "raw");
    printf("loader: unit %s, size %d, batch %d, threads %d, depth %d, augment %s, %s, %s\n",
           a->unit, a->size, a->batch, a->threads, a->depth, a->augment ? "on" : "off", a->filter,
           a->tokenizer ? a->tokenizer : "no tokenizer");
    fflush(stdout); /* shown before the wait */
    int rc = time_loader(l, a, jpeg ? "jpeg" : "raw");
    vlm_loader_free(l);
    return rc;
}

static int bench_loader(int argc, char **argv) {
    bench_args a = {.unit = "image", .filter = "bicubic", .size = 128, .batch = 64, .threads = 2,
                    .depth = 3, .batches = 30, .ctx = 64};
    int p = parse_args(argc, argv, &a);
    if (p) return p > 0 ? 0 : (usage_loader(stderr), 2);
    bench_tok tok = {0};
    vlm_dataset *ds = NULL;
    int rc = -1;
    if ((!a.tokenizer || !load_tokenizer(a.tokenizer, &tok)) && (ds = vlm_dataset_open(a.dataset)))
        rc = run_bench(&a, ds, &tok);
    if (rc) fprintf(stderr, "error: %s\n", vlm_last_error());
    vlm_dataset_close(ds);
    vlm_bpe_free(tok.bpe);
    vlm_spm_free(tok.spm);
    return rc ? 1 : 0;
}

/* `vlm bench model|generate` live in train/bench_model.c (train.h). data links
 * below train, so the reference is weak: NULL in a program without train. */
int vlm_cmd_bench_model(int argc, char **argv) __attribute__((weak));

int vlm_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        usage_main(f);
        fprintf(f, "  model    training step time, images/s, MFU, memory of a model config\n"
                   "  generate greedy decoding tokens/s of a captioner with the KV cache\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "loader")) return bench_loader(argc - 1, argv + 1);
    if (!strcmp(argv[1], "model") || !strcmp(argv[1], "generate")) {
        if (vlm_cmd_bench_model) return vlm_cmd_bench_model(argc - 1, argv + 1);
        fprintf(stderr, "error: 'vlm bench %s' is not linked into this program\n", argv[1]);
        return 1;
    }
    fprintf(stderr, "error: unknown benchmark '%s'\n", argv[1]);
    usage_main(stderr);
    return 2;
}
