/* caption_cmd.c - `vlm caption`: captions for image files or a dataset's
 * images (batched, KV-cached generation), optionally scored with BLEU and
 * CIDEr-D against the dataset's captions. */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_TOKENS 32
#define DEFAULT_BATCH 8

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm caption --model M [options] IMAGE...\n"
            "       vlm caption --model M --dataset D [--limit N] [options]\n"
            "\n"
            "Generates a caption for each image with a captioner: the image and prompt\n"
            "prefix and BOS go through the decoder once, filling its KV cache, then one\n"
            "token per step for the whole batch until EOS or --max-tokens. Prints\n"
            "IMAGE<TAB>CAPTION per image (INDEX<TAB>CAPTION for a dataset). With --dataset\n"
            "the captions are scored against the dataset's: BLEU-1..4 and CIDEr-D as\n"
            "pycocoevalcap computes them (text lowercased and stripped of punctuation).\n"
            "\n"
            "options:\n" CLI_MODEL_HELP
            "  --decoder-tokenizer FILE  the decoder's tokenizer when it differs\n"
            "  --prompt TEXT        the text-tower prompt (default: the one the model was\n"
            "                       trained with, data.prompt, \"describe the image\")\n"
            "  --greedy             most likely token every step (the default)\n"
            "  --temperature T      sample, dividing the logits by T > 0 (default 1)\n"
            "  --top-k K            sample among the K most likely tokens (0 = all)\n"
            "  --top-p P            sample from the smallest set of most likely tokens\n"
            "                       whose probability reaches P, 0 < P <= 1 (default 1)\n"
            "  --seed S             sampling seed (default 0); image i of a batch draws\n"
            "                       from its own stream\n"
            "  --max-tokens N       new tokens per caption, EOS included (default %d, or\n"
            "                       what model.decoder.max_len leaves after the prefix)\n"
            "  --bos-id ID, --eos-id ID  override the decoder's special tokens\n"
            "  --dataset D          caption the images of an HDF5 dataset and score them\n"
            "  --limit N            with --dataset: the first N images only\n"
            "  --quiet              with --dataset: print only the scores\n"
            "  --timing             print prefill / decode times and tokens/s on stderr\n"
            "\n"
            "examples:\n"
            "  vlm caption --model runs/caption photo.jpg\n"
            "  vlm caption --model runs/caption --temperature 0.7 --top-p 0.9 --seed 1 a.png b.png\n"
            "  vlm caption --model runs/caption --dataset data/shapes-val.h5 --limit 500 --quiet\n",
            DEFAULT_BATCH, DEFAULT_MAX_TOKENS);
}

typedef struct {
    cli_model_opts m;
    const char *prompt, *dataset;
    vlm_gen_opts g;
    bool greedy, sampling, max_given, quiet, timing;
    long bos, eos; /* -2: from the tokenizer */
    int64_t limit;
    char **images;
    int n_images;
} caption_args;

/* The sampling options: 1 taken, 0 not one of them, 2 bad usage. */
static int take_sampling(cli_args *a, caption_args *o) {
    const char *v = NULL;
    double x;
    long n;
    int r;
    if ((r = cli_take(a, "--temperature", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_float(v, &x) || x <= 0)
            return cli_bad_usage(a, "--temperature must be a number > 0, got", v);
        o->g.temperature = (float)x;
    } else if ((r = cli_take(a, "--top-k", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 0, 1 << 30, &n)) return cli_bad_usage(a, "--top-k must be >= 0, got", v);
        o->g.top_k = (int)n;
    } else if ((r = cli_take(a, "--top-p", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_float(v, &x) || !(x > 0 && x <= 1))
            return cli_bad_usage(a, "--top-p must be in (0, 1], got", v);
        o->g.top_p = (float)x;
    } else {
        return 0;
    }
    o->sampling = true;
    return 1;
}

/* Everything else with a value: 1 taken, 0 not, 2 bad usage. */
static int take_other(cli_args *a, caption_args *o) {
    const char *v = NULL;
    long n;
    int r;
    if ((r = cli_take(a, "--prompt", NULL, &o->prompt)) || (r = cli_take(a, "--dataset", NULL, &o->dataset)))
        return r < 0 ? 2 : 1;
    if ((r = cli_take(a, "--seed", NULL, &v)))
        return r < 0 ? 2 : cli_parse_u64(v, &o->g.seed) ? 1 : cli_bad_usage(a, "--seed must be an unsigned integer, got", v);
    if ((r = cli_take(a, "--max-tokens", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 1, 1 << 20, &n)) return cli_bad_usage(a, "--max-tokens must be >= 1, got", v);
        o->g.max_tokens = (int)n, o->max_given = true;
    } else if ((r = cli_take(a, "--limit", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 1, 1L << 40, &n)) return cli_bad_usage(a, "--limit must be >= 1, got", v);
        o->limit = n;
    } else if ((r = cli_take(a, "--bos-id", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 0, 1L << 30, &n)) return cli_bad_usage(a, "--bos-id must be >= 0, got", v);
        o->bos = n;
    } else if ((r = cli_take(a, "--eos-id", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, -1, 1L << 30, &n))
            return cli_bad_usage(a, "--eos-id must be >= 0 (or -1: none), got", v);
        o->eos = n;
    } else {
        return 0;
    }
    return 1;
}

static int parse(int argc, char **argv, caption_args *o) {
    cli_args a = {argc, 1, argv, "caption", usage};
    o->g = vlm_gen_opts_default();
    o->g.max_tokens = DEFAULT_MAX_TOKENS;
    o->bos = o->eos = -2;
    o->m.batch = DEFAULT_BATCH;
    if (!(o->images = calloc((size_t)argc, sizeof *o->images))) return fprintf(stderr, "error: out of memory\n"), 1;
    for (; a.i < argc; a.i++) {
        const char *s = argv[a.i];
        int r;
        if (cli_is_help(s)) return usage(stdout), -1;
        if ((r = cli_take_model_opt(&a, &o->m)) || (r = take_sampling(&a, o)) || (r = take_other(&a, o))) {
            if (r == 2 || r < 0) return 2;
        } else if (!strcmp(s, "--greedy")) {
            o->greedy = true;
        } else if (!strcmp(s, "--quiet")) {
            o->quiet = true;
        } else if (!strcmp(s, "--timing")) {
            o->timing = true;
        } else if (s[0] == '-' && s[1]) {
            return cli_bad_usage(&a, "unknown option", s);
        } else {
            o->images[o->n_images++] = argv[a.i];
        }
    }
    if (o->greedy && o->sampling)
        return cli_bad_usage(&a, "--greedy cannot be combined with --temperature, --top-k or --top-p", NULL);
    if (!o->m.model) return cli_bad_usage(&a, "--model is required", NULL);
    if (!o->n_images == !o->dataset) return cli_bad_usage(&a, "give IMAGE files or --dataset (not both)", NULL);
    o->g.sample = o->sampling;
    return 0;
}

/* Specials from the tokenizer unless given; --max-tokens defaults to what fits. */
static int resolve(caption_args *o, const vlm_bundle *b) {
    if (!vlm_bundle_is_captioner(b))
        return vlm_set_error("%s is not a captioner (model.type \"%s\"): use vlm classify or "
                             "vlm retrieve", o->m.model, b->model->cfg.type);
    if (!o->prompt) o->prompt = b->prompt;
    o->g.bos_id = (int32_t)(o->bos >= 0 ? o->bos : b->bos_id);
    o->g.eos_id = (int32_t)(o->eos >= -1 ? o->eos : b->eos_id);
    o->g.pad_id = b->pad_id >= 0 ? b->pad_id : 0;
    if (o->g.bos_id < 0)
        return vlm_set_error("tokenizer %s has no BOS or EOS token; pass --bos-id", b->tokenizer);
    const vlm_model_cfg *c = &b->model->cfg;
    int g = c->vision.image_size / c->vision.patch / c->pixel_shuffle;
    int room = c->decoder.max_len - g * g - b->ctx_len;
    if (!o->max_given && o->g.max_tokens > room) o->g.max_tokens = room > 1 ? room : 1;
    return 0;
}

/* One caption per line: a newline or tab the model produced would break the
 * IMAGE<TAB>CAPTION format, so they print as spaces. */
static void print_caption(const char *name, const char *cap) {
    printf("%s\t", name);
    for (const char *c = cap; *c; c++) putchar(*c == '\n' || *c == '\r' || *c == '\t' ? ' ' : *c);
    putchar('\n');
}

static void print_timing(const vlm_gen_stats *st, int64_t n) {
    fprintf(stderr,
            "%lld captions: prefill %.3f s (image + prompt + BOS), decode %.3f s for %lld tokens "
            "in %d steps: %.1f tokens/s\n",
            (long long)n, st->prefill_s, st->decode_s, (long long)st->tokens, st->steps,
            st->decode_s > 0 ? (double)st->tokens / st->decode_s : 0.0);
}

static int caption_files(const caption_args *o, const vlm_bundle *b, vlm_ctx *ctx) {
    float *px = cli_load_images(b, o->images, o->n_images);
    char **caps = calloc((size_t)o->n_images, sizeof *caps);
    vlm_gen_stats st = {0};
    int rc = px && caps ? vlm_bundle_caption(ctx, b, px, o->n_images, o->prompt, o->m.batch, &o->g, caps, &st)
                        : (px ? vlm_set_error("out of memory") : -1);
    for (int i = 0; !rc && i < o->n_images; i++) print_caption(o->images[i], caps[i]);
    if (!rc && o->timing) print_timing(&st, o->n_images);
    cli_free_strings(caps, caps ? o->n_images : 0);
    free(px);
    return rc;
}

/* Image i's references are refs[start[i] .. start[i + 1]) (captions grouped by image). */
static int group_refs(const cli_captions *c, int64_t n, const char ***refs, int64_t **start) {
    *refs = malloc((size_t)(c->n ? c->n : 1) * sizeof **refs);
    *start = calloc((size_t)n + 1, sizeof **start);
    int64_t *fill = calloc((size_t)n + 1, sizeof *fill);
    if (!*refs || !*start || !fill) return free(fill), vlm_set_error("out of memory");
    for (int64_t j = 0; j < c->n; j++) (*start)[c->image[j] + 1]++;
    for (int64_t i = 0; i < n; i++) (*start)[i + 1] += (*start)[i];
    for (int64_t j = 0; j < c->n; j++) {
        int64_t i = c->image[j];
        (*refs)[(*start)[i] + fill[i]++] = c->text[j];
    }
    free(fill);
    return 0;
}

/* BLEU / CIDEr-D over the images that have references. */
static int score(char **caps, int64_t n, const cli_captions *c) {
    const char **refs = NULL, **hyps = malloc((size_t)n * sizeof *hyps);
    int64_t *start = NULL, *rs = malloc((size_t)(n + 1) * sizeof *rs), m = 0;
    int rc = hyps && rs ? group_refs(c, n, &refs, &start) : vlm_set_error("out of memory");
    /* compact: drop images without references */
    const char **r2 = rc ? NULL : malloc((size_t)(c->n ? c->n : 1) * sizeof *r2);
    if (!rc && !r2) rc = vlm_set_error("out of memory");
    rs[0] = 0;
    for (int64_t i = 0; !rc && i < n; i++) {
        if (start[i + 1] == start[i]) continue;
        for (int64_t k = start[i]; k < start[i + 1]; k++) r2[rs[m] + k - start[i]] = refs[k];
        rs[m + 1] = rs[m] + start[i + 1] - start[i];
        hyps[m++] = caps[i];
    }
    double bleu[4], cider;
    vlm_caption_corpus corpus = {m, hyps, r2, rs, true};
    if (!rc && !m) rc = vlm_set_error("no image of the dataset has a caption to score against");
    if (!rc) rc = vlm_bleu(&corpus, bleu);
    if (!rc) rc = vlm_cider_d(&corpus, &cider, NULL);
    if (!rc)
        printf("BLEU-1 %.4f  BLEU-2 %.4f  BLEU-3 %.4f  BLEU-4 %.4f  CIDEr-D %.4f  (%lld images, "
               "%lld references)\n",
               bleu[0], bleu[1], bleu[2], bleu[3], cider, (long long)m, (long long)rs[m]);
    free(hyps), free(rs), free(refs), free(start), free(r2);
    return rc;
}

static int caption_dataset(const caption_args *o, const vlm_bundle *b, vlm_ctx *ctx) {
    vlm_dataset *ds = vlm_dataset_open(o->dataset);
    if (!ds) return -1;
    int64_t n = vlm_dataset_num_images(ds), bs = o->m.batch;
    if (o->limit && o->limit < n) n = o->limit;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size;
    float *pixels = malloc((size_t)(bs * px) * sizeof *pixels);
    char **caps = calloc((size_t)(n ? n : 1), sizeof *caps);
    cli_captions c = {0};
    vlm_gen_stats st = {0};
    int rc = pixels && caps ? 0 : vlm_set_error("out of memory");
    if (!rc && n < 1) rc = vlm_set_error("dataset %s has no images", o->dataset);
    for (int64_t i = 0; !rc && i < n; i += bs) {
        int64_t m = n - i < bs ? n - i : bs;
        rc = cli_dataset_pixels(b, ds, i, m, pixels);
        if (!rc) rc = vlm_bundle_caption(ctx, b, pixels, m, o->prompt, (int)bs, &o->g, caps + i, &st);
        for (int64_t k = i; !rc && !o->quiet && k < i + m; k++) {
            char name[32];
            snprintf(name, sizeof name, "%lld", (long long)k);
            print_caption(name, caps[k]);
        }
    }
    if (!rc) rc = cli_read_captions(ds, n, &c);
    if (!rc) rc = score(caps, n, &c);
    if (!rc && o->timing) print_timing(&st, n);
    cli_captions_free(&c);
    cli_free_strings(caps, caps ? n : 0);
    free(pixels);
    vlm_dataset_close(ds);
    return rc;
}

int vlm_cmd_caption(int argc, char **argv) {
    caption_args o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) {
        free(o.images);
        return rc < 0 ? 0 : rc;
    }
    cli_args a = {argc, 1, argv, "caption", usage};
    vlm_bundle *b = cli_load_bundle(&a, &o.m);
    vlm_ctx *ctx = b ? vlm_ctx_new(0) : NULL;
    if (b && !ctx) vlm_set_error("out of memory");
    if (!ctx || resolve(&o, b))
        rc = b ? cli_fail() : 1;
    else
        rc = (o.dataset ? caption_dataset(&o, b, ctx) : caption_files(&o, b, ctx)) ? cli_fail() : 0;
    vlm_ctx_free(ctx);
    vlm_bundle_free(b);
    free(o.images);
    return rc;
}
