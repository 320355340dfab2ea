/* bench_model.c - `vlm bench model` and `vlm bench generate`: training-step and
 * decoding throughput of a model built from a config, on a synthetic batch.
 *
 * vlm bench model: random init (seed), a synthetic batch, W untimed warm-up
 * steps, then N timed full training steps, each exactly what the trainer
 * does: batch tensors copied into the arena, forward (vlm_siglip_forward or
 * vlm_captioner_loss), vlm_backward, vlm_optim_update (AdamW, grad norm
 * measured, no clipping), vlm_params_zero_grad, vlm_ctx_reset. Prints the
 * median and min step time, images/s, model FLOP/s and MFU against a GEMM
 * peak measured in the same process, peak RSS and the arena peak, then one
 * JSON line with the same fields (scripts/bench.sh reads it).
 *
 * Model FLOPs per step (analytic, PaLM-style MFU: what the model needs, not
 * what an implementation executes):
 *  - every GEMM with a weight W [out, in] applied to `rows` rows costs
 *    6 * rows * in * out (2 forward, 2 for the input grad, 2 for the weight
 *    grad; counted even where an input grad is skipped, e.g. the patch
 *    embedding), i.e. 6 * params_in_GEMMs * tokens summed per GEMM with the
 *    tokens that GEMM actually sees (the MAP head's query, the text head and
 *    the captioner's lm_head see one row or the caption rows only);
 *  - attention with Tq queries, Tk keys and width Dqk = heads * head_dim:
 *    4 * B * Tq * Tk * Dqk forward (QK^T and PV) and twice that backward,
 *    12 * B * Tq * Tk * Dqk, masks not discounted (causal / prefix-LM
 *    attention counts the full Tq x Tk);
 *  - not counted: biases, norms, activations, softmax, embeddings, the loss
 *    (SigLIP's [B, B] logits GEMM is < 0.01%), the optimizer, recomputation
 *    under gradient checkpointing, flash attention's backward recompute.
 *
 * vlm bench generate: greedy decoding of a captioner with the KV cache:
 * prefix (towers, fusion, projections), prefill of [prefix; BOS] through the
 * decoder with a prefix-LM mask, then one token per step (argmax included),
 * timed separately; tokens/s counts the batch. */
#include "train.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* ---- options ---------------------------------------------------------------------- */

typedef struct {
    const char *config, *precision;
    int steps, warmup, threads, batch, tokens, peak_n;
    bool checkpoint;
    long long seed;
} bm_args;

static void usage_model(FILE *f) {
    fprintf(f,
            "usage: vlm bench model --config FILE [options]\n"
            "\n"
            "Times full training steps (forward, backward, AdamW update, zero grad, arena\n"
            "reset) of the model in FILE (its \"model\" object) on a synthetic batch:\n"
            "random images in [-1, 1], random token ids with full masks; a captioner gets\n"
            "an 8-token prompt (the text tower's ctx_len) and 32 caption tokens with\n"
            "random targets. Prints the median and min seconds per step, images/s,\n"
            "model GFLOP/s, MFU against the GEMM peak measured in this process, peak\n"
            "RSS, the arena peak and the load average, then the same as one JSON line\n"
            "(with a hash of the final weights: equal hashes, bitwise equal training).\n"
            "scripts/bench.sh --ratios compares f32/bf16 and checkpointing off/on.\n"
            "\n"
            "options:\n"
            "  --config FILE        model config (configs/bench-siglip.json, bench-caption.json)\n"
            "  --precision P        f32 or bf16 (default f32)\n"
            "  --steps N            timed steps (default 10)\n"
            "  --warmup W           untimed steps first (default 2)\n"
            "  --batch B            default 64 (siglip) or 32 (captioner)\n"
            "  --threads T          compute threads (default: all cores)\n"
            "  --checkpoint         gradient checkpointing in every tower (reports which\n"
            "                       towers it changes)\n"
            "  --seed S             init and data seed (default 1)\n"
            "  --peak-size N        side of the square peak GEMMs (default 2048)\n");
}

static void usage_generate(FILE *f) {
    fprintf(f,
            "usage: vlm bench generate --config FILE [options]\n"
            "\n"
            "Greedy decoding of a captioner (random init) with the KV cache: the prefix\n"
            "(image tower, prompt tower, fusion, projections) is computed, the decoder\n"
            "prefills [prefix; BOS] under the prefix-LM mask, then generates one token\n"
            "per step. Prints prefix, prefill and per-token times and tokens/s (decode\n"
            "steps only, and end to end), medians over the timed repeats, then one JSON\n"
            "line.\n"
            "\n"
            "options:\n"
            "  --config FILE        a captioner config (configs/bench-caption.json)\n"
            "  --batch B            sequences decoded together (default 1)\n"
            "  --tokens N           new tokens per sequence (default 32)\n"
            "  --steps N            timed repeats (default 5)\n"
            "  --warmup W           untimed repeats first (default 1)\n"
            "  --precision P        f32 or bf16 (default f32)\n"
            "  --threads T          compute threads (default: all cores)\n"
            "  --seed S             init and data seed (default 1)\n");
}

static int parse_int(const char *opt, const char *s, int lo, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > 1 << 24) {
        fprintf(stderr, "error: %s needs an integer >= %d, not '%s'\n", opt, lo, s);
        return -1;
    }
    *out = (int)v;
    return 0;
}

/* 0, 1 when --help was printed, -1 on bad usage. */
static int parse_args(int argc, char **argv, bm_args *a, bool generate) {
    void (*usage)(FILE *) = generate ? usage_generate : usage_model;
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) return usage(stdout), 1;
        if (!generate && !strcmp(o, "--checkpoint")) {
            a->checkpoint = true;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "error: unknown option or missing value: %s\n", o);
            return -1;
        }
        const char *v = argv[++i];
        int rc = 0;
        if (!strcmp(o, "--config"))
            a->config = v;
        else if (!strcmp(o, "--precision"))
            a->precision = v;
        else if (!strcmp(o, "--steps"))
            rc = parse_int(o, v, 1, &a->steps);
        else if (!strcmp(o, "--warmup"))
            rc = parse_int(o, v, 0, &a->warmup);
        else if (!strcmp(o, "--batch"))
            rc = parse_int(o, v, 1, &a->batch);
        else if (!strcmp(o, "--threads"))
            rc = parse_int(o, v, 1, &a->threads);
        else if (generate && !strcmp(o, "--tokens"))
            rc = parse_int(o, v, 1, &a->tokens);
        else if (!generate && !strcmp(o, "--peak-size"))
            rc = parse_int(o, v, 64, &a->peak_n);
        else if (!strcmp(o, "--seed")) {
            int s;
            rc = parse_int(o, v, 0, &s);
            a->seed = s;
        } else {
            fprintf(stderr, "error: unknown option: %s\n", o);
            return -1;
        }
        if (rc) return -1;
    }
    if (!a->config) {
        fprintf(stderr, "error: --config is required\n");
        return -1;
    }
    if (strcmp(a->precision, "f32") && strcmp(a->precision, "bf16")) {
        fprintf(stderr, "error: --precision must be f32 or bf16, not '%s'\n", a->precision);
        return -1;
    }
    return 0;
}

/* ---- small helpers ------------------------------------------------------------------ */

static double now_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double wall_s(void) { return now_s(CLOCK_MONOTONIC); }
static double cpu_s(void) { return now_s(CLOCK_PROCESS_CPUTIME_ID); }

/* The 1, 5 and 15 minute load averages ("" where /proc is missing): the
 * benchmark shares its machine, and a ratio means little without them. */
static void loadavg(char *buf, size_t cap) {
    FILE *f = fopen("/proc/loadavg", "r");
    float a[3];
    buf[0] = 0;
    if (f && fscanf(f, "%f %f %f", &a[0], &a[1], &a[2]) == 3)
        snprintf(buf, cap, "%.2f %.2f %.2f", a[0], a[1], a[2]);
    if (f) fclose(f);
}

/* Peak resident set size so far, MiB (Linux reports KiB). */
static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median_of(const double *v, int n) {
    double *s = malloc((size_t)n * sizeof *s);
    if (!s) return NAN;
    memcpy(s, v, (size_t)n * sizeof *s);
    qsort(s, (size_t)n, sizeof *s, cmp_double);
    double m = n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
    free(s);
    return m;
}

static double min_of(const double *v, int n) {
    double m = v[0];
    for (int i = 1; i < n; i++) m = v[i] < m ? v[i] : m;
    return m;
}

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static float uniform_pm1(uint64_t *s) { return (float)((splitmix(s) >> 40) * 0x1p-24) * 2 - 1; }

static int load_cfg(const char *path, vlm_model_cfg *cfg) {
    cJSON *root = vlm_json_load(path);
    if (!root) return -1;
    vlm_model_cfg_defaults(cfg);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(root, "model");
    int rc = m ? vlm_cfg_bind(m, vlm_model_cfg_fields, cfg, "model")
               : vlm_set_error("%s: no \"model\" object", path);
    cJSON_Delete(root);
    if (!rc) rc = vlm_model_cfg_validate(cfg);
    if (!rc && strcmp(cfg->type, "siglip") && strcmp(cfg->type, "captioner"))
        rc = vlm_set_error("%s: model.type \"%s\" is neither siglip nor captioner", path,
                           cfg->type);
    return rc;
}

static bool is_captioner(const vlm_model_cfg *c) { return !strcmp(c->type, "captioner"); }

/* ---- model FLOPs (see the top of the file) ----------------------------------------- */

typedef struct {
    double gemm, attn;  /* FLOPs per training step */
    double gemm_params; /* weights that are GEMM operands (tied lm_head counted once more) */
} bm_flops;

static void gemm(bm_flops *f, double rows, double in, double out) {
    f->gemm += 6.0 * rows * in * out;
}
static void attn(bm_flops *f, double B, double tq, double tk, double dqk) {
    f->attn += 12.0 * B * tq * tk * dqk;
}

/* Sum of in*out over the GEMM weights, for the report. */
static double gemm_params(const vlm_model_cfg *c) {
    double p = 0;
    const vlm_vision_cfg *v = &c->vision;
    const vlm_text_cfg *t = &c->text;
    double dv = v->width, dt = t->width;
    double block_v = 4 * dv * dv + 2 * dv * v->mlp, block_t = 4 * dt * dt + 2 * dt * t->mlp;
    p += (double)v->channels * v->patch * v->patch * dv + v->layers * block_v;
    p += t->layers * block_t;
    if (!is_captioner(c)) return p + 4 * dv * dv + 2 * dv * v->mlp + dt * dv; /* MAP head, text head */
    const vlm_decoder_cfg *d = &c->decoder;
    double dd = d->width, hd = dd / d->heads, s2 = (double)c->pixel_shuffle * c->pixel_shuffle;
    p += 2 * dt * dt + 2 * dv * dt + 2 * dt * c->fusion.mlp;          /* fusion */
    p += dv * s2 * dd + dt * dd;                                       /* projections */
    p += d->layers * (2 * dd * d->heads * hd + 2 * dd * d->kv_heads * hd + 3 * dd * d->mlp);
    return p + dd * d->vocab;                                          /* lm_head */
}

static bm_flops model_flops(const vlm_model_cfg *c, double B, double L) {
    bm_flops f = {0};
    const vlm_vision_cfg *v = &c->vision;
    const vlm_text_cfg *t = &c->text;
    double g = (double)(v->image_size / v->patch), N = g * g, dv = v->width, dt = t->width;
    double T = t->ctx_len; /* siglip: the caption length; captioner: the prompt length */
    gemm(&f, B * N, (double)v->channels * v->patch * v->patch, dv);
    for (int l = 0; l < v->layers; l++) {
        for (int k = 0; k < 4; k++) gemm(&f, B * N, dv, dv);
        gemm(&f, B * N, dv, v->mlp);
        gemm(&f, B * N, v->mlp, dv);
        attn(&f, B, N, N, dv);
    }
    for (int l = 0; l < t->layers; l++) {
        for (int k = 0; k < 4; k++) gemm(&f, B * T, dt, dt);
        gemm(&f, B * T, dt, t->mlp);
        gemm(&f, B * T, t->mlp, dt);
        attn(&f, B, T, T, dt);
    }
    if (!is_captioner(c)) {
        gemm(&f, B, dv, dv);         /* MAP head: query of the probe */
        gemm(&f, 2 * B * N, dv, dv); /* keys and values of the tokens */
        attn(&f, B, 1, N, dv);
        gemm(&f, B, dv, dv); /* out_proj */
        gemm(&f, B, dv, v->mlp);
        gemm(&f, B, v->mlp, dv);
        gemm(&f, B, dt, dv); /* text head on the last position */
        f.gemm_params = gemm_params(c);
        return f;
    }
    const vlm_decoder_cfg *d = &c->decoder;
    double s = c->pixel_shuffle, Ni = N / (s * s), dd = d->width, hd = dd / d->heads;
    gemm(&f, 2 * B * T, dt, dt);     /* fusion q and out_proj */
    gemm(&f, 2 * B * N, dv, dt);     /* fusion k, v from the image tokens */
    attn(&f, B, T, N, dt);
    gemm(&f, B * T, dt, c->fusion.mlp);
    gemm(&f, B * T, c->fusion.mlp, dt);
    gemm(&f, B * Ni, dv * s * s, dd); /* image_proj */
    gemm(&f, B * T, dt, dd);          /* fused_proj */
    double Td = Ni + T + L;           /* decoder positions */
    for (int l = 0; l < d->layers; l++) {
        gemm(&f, B * Td, dd, d->heads * hd);          /* q */
        gemm(&f, 2 * B * Td, dd, d->kv_heads * hd);   /* k, v */
        gemm(&f, B * Td, d->heads * hd, dd);          /* o */
        gemm(&f, 2 * B * Td, dd, d->mlp);             /* gate, up */
        gemm(&f, B * Td, d->mlp, dd);                 /* down */
        attn(&f, B, Td, Td, d->heads * hd);
    }
    gemm(&f, B * L, dd, d->vocab); /* lm_head on the caption positions only */
    f.gemm_params = gemm_params(c);
    return f;
}

/* ---- GEMM peaks ------------------------------------------------------------------- */

/* Best GFLOP/s of `reps` n x n x n GEMMs after one untimed call. */
static double peak_sgemm(int n, int reps) {
    size_t e = (size_t)n * n;
    float *a = malloc(e * sizeof *a), *b = malloc(e * sizeof *b), *c = malloc(e * sizeof *c);
    double best = INFINITY;
    if (a && b && c) {
        uint64_t s = 7;
        for (size_t i = 0; i < e; i++) a[i] = uniform_pm1(&s), b[i] = uniform_pm1(&s);
        for (int r = 0; r <= reps; r++) {
            double t0 = wall_s();
            vlm_sgemm(false, false, n, n, n, 1.0f, a, n, b, n, 0.0f, c, n);
            double dt = wall_s() - t0;
            if (r && dt < best) best = dt;
        }
    }
    free(a);
    free(b);
    free(c);
    return isfinite(best) ? 2.0 * n * n * (double)n / best * 1e-9 : NAN;
}

static double peak_bf16(int n, int reps) {
    size_t e = (size_t)n * n;
    uint16_t *a = malloc(e * sizeof *a), *b = malloc(e * sizeof *b);
    float *c = malloc(e * sizeof *c);
    double best = INFINITY;
    if (a && b && c) {
        uint64_t s = 11;
        for (size_t i = 0; i < e; i++) c[i] = uniform_pm1(&s);
        vlm_f32_to_bf16_n(a, c, (int64_t)e);
        for (size_t i = 0; i < e; i++) c[i] = uniform_pm1(&s);
        vlm_f32_to_bf16_n(b, c, (int64_t)e);
        for (int r = 0; r <= reps; r++) {
            double t0 = wall_s();
            if (vlm_gemm_bf16(false, false, n, n, n, a, n, b, n, 0.0f, c, n)) {
                best = INFINITY;
                break;
            }
            double dt = wall_s() - t0;
            if (r && dt < best) best = dt;
        }
    }
    free(a);
    free(b);
    free(c);
    return isfinite(best) ? 2.0 * n * n * (double)n / best * 1e-9 : NAN;
}

/* ---- the synthetic batch -------------------------------------------------------------- */

enum { BM_PROMPT = 8, BM_CAPTION = 32 }; /* captioner bench sizes (prompt = text ctx_len) */

typedef struct {
    int64_t B, S, C, T, Tp, L; /* T: siglip text length; Tp, L: captioner prompt, caption */
    float *pixels;
    int32_t *ids, *prompt, *cap_in, *targets;
    uint8_t *pmask;
} bm_batch;

static void batch_free(bm_batch *b) {
    free(b->pixels);
    free(b->ids);
    free(b->prompt);
    free(b->cap_in);
    free(b->targets);
    free(b->pmask);
}

static int32_t rand_id(uint64_t *s, int vocab) { return (int32_t)(splitmix(s) % (uint64_t)vocab); }

static int batch_make(bm_batch *b, const vlm_model_cfg *c, int64_t B, uint64_t seed) {
    memset(b, 0, sizeof *b);
    b->B = B;
    b->S = c->vision.image_size;
    b->C = c->vision.channels;
    uint64_t s = seed * 0x2545F4914F6CDD1DULL + 1;
    size_t np = (size_t)(B * b->C * b->S * b->S);
    if (!(b->pixels = malloc(np * sizeof *b->pixels))) goto oom;
    for (size_t i = 0; i < np; i++) b->pixels[i] = uniform_pm1(&s);
    if (!is_captioner(c)) {
        b->T = c->text.ctx_len;
        if (!(b->ids = malloc((size_t)(B * b->T) * sizeof *b->ids))) goto oom;
        for (int64_t i = 0; i < B * b->T; i++) b->ids[i] = rand_id(&s, c->text.vocab);
        return 0;
    }
    b->Tp = c->text.ctx_len < BM_PROMPT ? c->text.ctx_len : BM_PROMPT;
    b->L = BM_CAPTION;
    size_t npr = (size_t)B * (size_t)b->Tp, ncap = (size_t)B * (size_t)b->L;
    b->prompt = malloc(npr * sizeof *b->prompt);
    b->pmask = malloc(npr);
    b->cap_in = malloc(ncap * sizeof *b->cap_in);
    b->targets = malloc(ncap * sizeof *b->targets);
    if (!b->prompt || !b->pmask || !b->cap_in || !b->targets) goto oom;
    for (size_t i = 0; i < npr; i++) b->prompt[i] = rand_id(&s, c->text.vocab);
    memset(b->pmask, 1, npr);
    for (size_t i = 0; i < ncap; i++) {
        b->cap_in[i] = rand_id(&s, c->decoder.vocab);
        b->targets[i] = rand_id(&s, c->decoder.vocab);
    }
    return 0;
oom:
    batch_free(b);
    return vlm_set_error("bench: out of memory for the synthetic batch");
}

/* The loss of the batch, inputs copied into the arena as the trainer does. */
static vlm_tensor *batch_loss(vlm_ctx *ctx, const vlm_model *m, const bm_batch *b) {
    int64_t B = b->B;
    vlm_tensor *img = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){B, b->C, b->S, b->S}, b->pixels);
    if (!is_captioner(&m->cfg)) {
        /* no key mask: every id is valid (SigLIP trains without one) */
        vlm_tensor *ids = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, b->T}, b->ids);
        return vlm_siglip_forward(ctx, m, img, ids, NULL, NULL, true, NULL, NULL);
    }
    vlm_tensor *pr = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, b->Tp}, b->prompt);
    vlm_tensor *pm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, b->Tp}, b->pmask);
    vlm_tensor *ci = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, b->L}, b->cap_in);
    vlm_tensor *tg = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, b->L}, b->targets);
    if (!pm) return NULL;
    return vlm_captioner_loss(ctx, m, img, pr, pm, ci, tg, true);
}

/* ---- gradient checkpointing probe -------------------------------------------------- */

enum { TOWER_VISION, TOWER_TEXT, TOWER_DECODER, TOWER_COUNT };
static const char *const tower_names[TOWER_COUNT] = {"vision", "text", "decoder"};

static bool *tower_flag(vlm_model *m, int tower) {
    if (tower == TOWER_VISION) return &m->vision.cfg.checkpoint;
    if (tower == TOWER_TEXT) return &m->text.cfg.checkpoint;
    return m->captioner ? &((vlm_captioner *)m->captioner)->decoder.cfg.checkpoint : NULL;
}

/* Tape length of one batch-1 forward of a tower with its flag set to ck. */
static int tower_tape_len(vlm_ctx *ctx, vlm_model *m, int tower, bool ck, size_t *len) {
    bool *flag = tower_flag(m, tower), was = *flag;
    *flag = ck;
    vlm_ctx_reset(ctx);
    vlm_tensor *out = NULL;
    if (tower == TOWER_VISION) {
        const vlm_vision_cfg *v = &m->vision.cfg;
        vlm_tensor *img = vlm_zeros(ctx, VLM_F32, 4,
                                    (int64_t[]){1, v->channels, v->image_size, v->image_size});
        out = vlm_vision_forward(ctx, &m->vision, img, true, NULL);
    } else if (tower == TOWER_TEXT) {
        int64_t T = m->text.cfg.ctx_len;
        out = vlm_text_forward(ctx, &m->text, vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){1, T}), NULL,
                               true, NULL);
    } else {
        const vlm_decoder *d = &((vlm_captioner *)m->captioner)->decoder;
        vlm_tensor *x = vlm_zeros(ctx, VLM_F32, 3, (int64_t[]){1, 4, d->cfg.width});
        if (x) x->requires_grad = true;
        out = vlm_decoder_forward(ctx, d, x, NULL, NULL, true);
    }
    *len = vlm_tape_len(ctx);
    vlm_ctx_reset(ctx);
    *flag = was;
    return out ? 0 : -1;
}

/* effect[t]: 1 if the tower records a different tape with its checkpoint flag
 * on (the flag is implemented), 0 if not, -1 if the model has no such tower. */
static int checkpoint_probe(vlm_ctx *ctx, vlm_model *m, int effect[TOWER_COUNT]) {
    for (int t = 0; t < TOWER_COUNT; t++) {
        effect[t] = -1;
        if (!tower_flag(m, t)) continue;
        size_t on, off;
        if (tower_tape_len(ctx, m, t, true, &on) || tower_tape_len(ctx, m, t, false, &off))
            return vlm_set_error("checkpoint probe (%s tower): %s", tower_names[t],
                                 vlm_last_error());
        effect[t] = on != off;
    }
    return 0;
}

/* ---- JSON ------------------------------------------------------------------------- */

static void json_num(cJSON *o, const char *k, double v) {
    if (isfinite(v))
        cJSON_AddNumberToObject(o, k, v);
    else
        cJSON_AddNullToObject(o, k);
}

static void json_print(cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    if (s) printf("%s\n", s);
    free(s);
    cJSON_Delete(o);
}

/* ---- vlm bench model ---------------------------------------------------------------- */

/* FNV-1a over the parameter bytes after the run: equal hashes mean bitwise
 * equal weights, so two builds can be checked for identical training. */
static uint64_t params_hash(vlm_params *p) {
    const unsigned char *b = (const unsigned char *)vlm_params_values(p);
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < (size_t)vlm_params_numel(p) * sizeof(float); i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

typedef struct {
    double *step_s, *cpu_s;
    double first_loss, last_loss;
} bm_times;

static int train_steps(vlm_ctx *ctx, vlm_model *m, vlm_optim *opt, const bm_batch *b, int n,
                       bool timed, bm_times *tm, int first_index) {
    for (int i = 0; i < n; i++) {
        double w0 = wall_s(), c0 = cpu_s();
        vlm_tensor *loss = batch_loss(ctx, m, b);
        if (!loss) return -1;
        double l = vlm_f32(loss)[0];
        if (vlm_backward(ctx, loss) || vlm_optim_update(opt, NULL, NULL)) return -1;
        vlm_params_zero_grad(m->params);
        vlm_ctx_reset(ctx);
        double dw = wall_s() - w0, dc = cpu_s() - c0;
        if (timed) {
            tm->step_s[i] = dw;
            tm->cpu_s[i] = dc;
        }
        if (first_index + i == 0) tm->first_loss = l;
        tm->last_loss = l;
        printf("%s %3d: %.4f s  (cpu %.2f s)  loss %.4f\n", timed ? "step  " : "warmup",
               i + 1, dw, dc, l);
        fflush(stdout);
    }
    return 0;
}

static const char *checkpoint_summary(const int effect[TOWER_COUNT], char *buf, size_t cap) {
    size_t n = 0;
    buf[0] = 0;
    for (int t = 0; t < TOWER_COUNT; t++) {
        if (effect[t] < 0) continue;
        n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s %s", n ? ", " : "",
                              tower_names[t], effect[t] ? "on" : "NO EFFECT (flag not implemented)");
    }
    return buf;
}

static int run_model(const bm_args *a) {
    vlm_model_cfg cfg;
    if (load_cfg(a->config, &cfg)) {
        fprintf(stderr, "error: %s\n", vlm_last_error());
        return 1;
    }
    bool cap = is_captioner(&cfg);
    int64_t B = a->batch > 0 ? a->batch : cap ? 32 : 64;
    cfg.vision.checkpoint = cfg.text.checkpoint = cfg.decoder.checkpoint = a->checkpoint;
    if (a->threads > 0) vlm_set_num_threads(a->threads);
    const char *core = vlm_blas_corename(); /* loads OpenBLAS now, before the RSS baseline */
    double rss_start = peak_rss_mib();

    vlm_model *m = vlm_model_new(&cfg, (uint64_t)a->seed);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_optim *opt = NULL;
    bm_batch b = {0};
    bm_times tm = {0};
    int rc = -1, effect[TOWER_COUNT] = {-1, -1, -1};
    if (!m || !ctx) goto done;
    vlm_optim_cfg oc;
    vlm_optim_cfg_defaults(&oc); /* AdamW lr 3e-4, betas (0.9, 0.999), eps 1e-8, wd 0.01 */
    snprintf(oc.schedule, sizeof oc.schedule, "constant");
    oc.total_steps = a->warmup + a->steps;
    if (!(opt = vlm_optim_new(m->params, &oc))) goto done;
    if (vlm_ctx_set_precision(ctx, strcmp(a->precision, "bf16") ? VLM_PREC_F32 : VLM_PREC_BF16))
        goto done;
    if (batch_make(&b, &cfg, B, (uint64_t)a->seed)) goto done;
    if (a->checkpoint && checkpoint_probe(ctx, m, effect)) goto done;
    tm.step_s = calloc((size_t)a->steps, sizeof *tm.step_s);
    tm.cpu_s = calloc((size_t)a->steps, sizeof *tm.cpu_s);
    if (!tm.step_s || !tm.cpu_s) {
        vlm_set_error("bench: out of memory");
        goto done;
    }

    bm_flops f = model_flops(&cfg, (double)B, (double)b.L);
    double flops = f.gemm + f.attn;
    int threads = vlm_num_threads();
    char ckbuf[256];
    printf("vlm bench model: %s (%s), %.2fM parameters (%.2fM in GEMMs), batch %lld, "
           "precision %s, threads %d, BLAS %s, bf16 %s\n",
           cfg.type, a->config, vlm_params_numel(m->params) / 1e6, f.gemm_params / 1e6,
           (long long)B, a->precision, threads, core, vlm_bf16_native() ? "native" : "emulated");
    if (cap)
        printf("batch: images [%lld, %lld, %lld, %lld] uniform(-1, 1); prompt ids [%lld, %lld] "
               "with a full mask; caption ids and targets [%lld, %lld] uniform\n",
               (long long)B, (long long)b.C, (long long)b.S, (long long)b.S, (long long)B,
               (long long)b.Tp, (long long)B, (long long)b.L);
    else
        printf("batch: images [%lld, %lld, %lld, %lld] uniform(-1, 1); text ids [%lld, %lld] "
               "uniform, full mask (no key mask)\n",
               (long long)B, (long long)b.C, (long long)b.S, (long long)b.S, (long long)B,
               (long long)b.T);
    printf("gradient checkpointing: %s\n",
           a->checkpoint ? checkpoint_summary(effect, ckbuf, sizeof ckbuf) : "off");
    printf("model FLOPs: %.1f GFLOP/step (GEMMs %.1f, attention %.1f)\n", flops * 1e-9,
           f.gemm * 1e-9, f.attn * 1e-9);
    fflush(stdout);

    if (train_steps(ctx, m, opt, &b, a->warmup, false, &tm, 0) ||
        train_steps(ctx, m, opt, &b, a->steps, true, &tm, a->warmup))
        goto done;
    double rss_peak = peak_rss_mib(); /* before the peak GEMMs allocate anything */
    double arena_peak = (double)vlm_arena_peak(ctx) / (1024.0 * 1024.0);

    int pn = a->peak_n;
    double pk32 = peak_sgemm(pn, 5), pk16 = peak_bf16(pn, 5);
    bool bf16 = !strcmp(a->precision, "bf16");
    double med = median_of(tm.step_s, a->steps), mn = min_of(tm.step_s, a->steps);
    double cpu_med = median_of(tm.cpu_s, a->steps);
    double gflops = flops / med * 1e-9, peak = bf16 ? pk16 : pk32;
    printf("step time: median %.4f s, min %.4f s over %d steps (after %d warm-up); "
           "cpu/(wall x %d threads) %.2f\n",
           med, mn, a->steps, a->warmup, threads, cpu_med / med / threads);
    printf("throughput: %.2f images/s (median), %.2f images/s (min)\n", B / med, B / mn);
    printf("achieved: %.1f GFLOP/s (median step)\n", gflops);
    printf("peak (this process, %d^3 GEMM, best of 5): f32 sgemm %.1f GFLOP/s, bf16 %.1f "
           "GFLOP/s\n",
           pn, pk32, pk16);
    printf("MFU: %.1f%% of the %s peak\n", 100.0 * gflops / peak, bf16 ? "bf16" : "f32");
    printf("memory: peak RSS %.1f MiB (%.1f MiB at start), arena peak %.1f MiB\n", rss_peak,
           rss_start, arena_peak);
    char load[64];
    loadavg(load, sizeof load);
    printf("load average: %s\n", load);

    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "bench", "model");
    cJSON_AddStringToObject(o, "framework", "vlm");
    cJSON_AddStringToObject(o, "model", cfg.type);
    cJSON_AddStringToObject(o, "config", a->config);
    cJSON_AddStringToObject(o, "precision", a->precision);
    cJSON_AddBoolToObject(o, "checkpoint", a->checkpoint);
    if (a->checkpoint) cJSON_AddStringToObject(o, "checkpoint_effect", ckbuf);
    json_num(o, "threads", threads);
    json_num(o, "batch", (double)B);
    json_num(o, "steps", a->steps);
    json_num(o, "warmup", a->warmup);
    json_num(o, "params", (double)vlm_params_numel(m->params));
    json_num(o, "step_s_median", med);
    json_num(o, "step_s_min", mn);
    cJSON *all = cJSON_AddArrayToObject(o, "step_s");
    for (int i = 0; all && i < a->steps; i++)
        cJSON_AddItemToArray(all, cJSON_CreateNumber(tm.step_s[i]));
    cJSON *cpus = cJSON_AddArrayToObject(o, "cpu_s");
    for (int i = 0; cpus && i < a->steps; i++)
        cJSON_AddItemToArray(cpus, cJSON_CreateNumber(tm.cpu_s[i]));
    json_num(o, "cpu_util", cpu_med / med / threads);
    json_num(o, "images_per_s", B / med);
    json_num(o, "gflop_per_step", flops * 1e-9);
    json_num(o, "gflops", gflops);
    json_num(o, "peak_gflops_f32", pk32);
    json_num(o, "peak_gflops_bf16", pk16);
    json_num(o, "mfu", gflops / peak);
    json_num(o, "peak_rss_mib", rss_peak);
    json_num(o, "start_rss_mib", rss_start);
    json_num(o, "arena_peak_mib", arena_peak);
    json_num(o, "first_loss", tm.first_loss);
    json_num(o, "last_loss", tm.last_loss);
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)params_hash(m->params));
    cJSON_AddStringToObject(o, "params_hash", hash);
    cJSON_AddStringToObject(o, "loadavg", load);
    cJSON_AddStringToObject(o, "blas", core);
    json_print(o);
    rc = 0;
done:
    if (rc) fprintf(stderr, "error: %s\n", vlm_last_error());
    free(tm.step_s);
    free(tm.cpu_s);
    batch_free(&b);
    vlm_optim_free(opt);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
    return rc ? 1 : 0;
}

/* ---- vlm bench generate ------------------------------------------------------------- */

/* Greedy argmax of each row's last position: logits [B, T, V] -> ids[B]. */
static void pick(const vlm_tensor *logits, int32_t *ids) {
    int64_t B = logits->shape[0], T = logits->shape[1], V = logits->shape[2];
    for (int64_t b = 0; b < B; b++) {
        const float *row = vlm_f32(logits) + (b * T + T - 1) * V;
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (row[v] > row[best]) best = v;
        ids[b] = (int32_t)best;
    }
}

typedef struct {
    double prefix, prefill, decode;
} gen_times;

/* One greedy generation of n tokens per row; ids [B] is scratch. */
static int generate_once(vlm_ctx *ctx, const vlm_model *m, const bm_batch *b, vlm_kv_cache *kv,
                         int n, int32_t *ids, int32_t *out, gen_times *gt) {
    const vlm_decoder *d = &((const vlm_captioner *)m->captioner)->decoder;
    int64_t B = b->B;
    vlm_kv_cache_reset(kv);
    double t0 = wall_s();
    vlm_tensor *img = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){B, b->C, b->S, b->S}, b->pixels);
    vlm_tensor *pr = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, b->Tp}, b->prompt);
    vlm_tensor *pm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, b->Tp}, b->pmask);
    vlm_tensor *prefix = vlm_captioner_prefix(ctx, m, img, pr, pm, false);
    if (!prefix) return -1;
    double t1 = wall_s();
    int64_t P = prefix->shape[1];
    for (int64_t i = 0; i < B; i++) ids[i] = 0; /* BOS */
    vlm_tensor *emb =
        vlm_decoder_embed(ctx, d, vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, 1}, ids));
    vlm_tensor *x = vlm_concat(ctx, (vlm_tensor *[]){prefix, emb}, 2, 1);
    /* the prompt mask is full, so no key mask is needed */
    vlm_attn_opts mask = {.kind = VLM_MASK_PREFIX, .prefix_len = P};
    vlm_tensor *logits = vlm_decoder_forward(ctx, d, x, &mask, kv, false);
    if (!logits) return -1;
    pick(logits, ids);
    for (int64_t i = 0; i < B; i++) out[i * n] = ids[i];
    vlm_ctx_reset(ctx);
    double t2 = wall_s();
    vlm_attn_opts causal = {.kind = VLM_MASK_CAUSAL};
    for (int t = 1; t < n; t++) {
        emb = vlm_decoder_embed(ctx, d, vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, 1}, ids));
        if (!(logits = vlm_decoder_forward(ctx, d, emb, &causal, kv, false))) return -1;
        pick(logits, ids);
        for (int64_t i = 0; i < B; i++) out[i * n + t] = ids[i];
        vlm_ctx_reset(ctx);
    }
    double t3 = wall_s();
    *gt = (gen_times){t1 - t0, t2 - t1, t3 - t2};
    return 0;
}

static int run_generate(const bm_args *a) {
    vlm_model_cfg cfg;
    if (load_cfg(a->config, &cfg)) {
        fprintf(stderr, "error: %s\n", vlm_last_error());
        return 1;
    }
    if (!is_captioner(&cfg)) {
        fprintf(stderr, "error: %s: vlm bench generate needs a captioner config\n", a->config);
        return 1;
    }
    int64_t B = a->batch > 0 ? a->batch : 1;
    int n = a->tokens;
    if (a->threads > 0) vlm_set_num_threads(a->threads);
    const char *core = vlm_blas_corename();
    double rss_start = peak_rss_mib();
    vlm_model *m = vlm_model_new(&cfg, (uint64_t)a->seed);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_kv_cache *kv = NULL;
    bm_batch b = {0};
    int32_t *ids = NULL, *out = NULL;
    int reps = a->steps, rc = -1;
    double *pre = calloc((size_t)reps, sizeof *pre), *fill = calloc((size_t)reps, sizeof *fill);
    double *dec = calloc((size_t)reps, sizeof *dec), *tot = calloc((size_t)reps, sizeof *tot);
    if (!m || !ctx || !pre || !fill || !dec || !tot) {
        if (m && ctx) vlm_set_error("bench: out of memory");
        goto done;
    }
    if (vlm_ctx_set_precision(ctx, strcmp(a->precision, "bf16") ? VLM_PREC_F32 : VLM_PREC_BF16))
        goto done;
    vlm_set_grad_enabled(ctx, false);
    if (batch_make(&b, &cfg, B, (uint64_t)a->seed)) goto done;
    int64_t g = cfg.vision.image_size / cfg.vision.patch / cfg.pixel_shuffle;
    int64_t P = g * g + b.Tp;
    if (P + n > cfg.decoder.max_len) {
        vlm_set_error("bench: prefix %lld + %d tokens exceed model.decoder.max_len %d",
                      (long long)P, n, cfg.decoder.max_len);
        goto done;
    }
    ids = malloc((size_t)B * sizeof *ids);
    out = malloc((size_t)(B * n) * sizeof *out);
    if (!ids || !out) {
        vlm_set_error("bench: out of memory");
        goto done;
    }
    if (!(kv = vlm_kv_cache_new(&cfg.decoder, (int)B, (int)(P + n)))) goto done;
    int threads = vlm_num_threads();
    printf("vlm bench generate: captioner (%s), %.2fM parameters, batch %lld, %d new tokens "
           "after a %lld-position prefix, greedy with the KV cache, precision %s, threads %d, "
           "BLAS %s\n",
           a->config, vlm_params_numel(m->params) / 1e6, (long long)B, n, (long long)P,
           a->precision, threads, core);
    fflush(stdout);
    for (int r = 0; r < a->warmup + reps; r++) {
        gen_times gt;
        if (generate_once(ctx, m, &b, kv, n, ids, out, &gt)) goto done;
        bool timed = r >= a->warmup;
        double decode_tps = n > 1 ? B * (n - 1) / gt.decode : NAN;
        printf("%s %2d: prefix %.4f s, prefill %.4f s, %d decode steps %.4f s (%.2f ms/step, "
               "%.1f tokens/s)\n",
               timed ? "run   " : "warmup", timed ? r - a->warmup + 1 : r + 1, gt.prefix,
               gt.prefill, n - 1, gt.decode, n > 1 ? 1e3 * gt.decode / (n - 1) : 0.0, decode_tps);
        fflush(stdout);
        if (timed) {
            int i = r - a->warmup;
            pre[i] = gt.prefix;
            fill[i] = gt.prefill;
            dec[i] = gt.decode;
            tot[i] = gt.prefix + gt.prefill + gt.decode;
        }
    }
    double mpre = median_of(pre, reps), mfill = median_of(fill, reps);
    double mdec = median_of(dec, reps), mtot = median_of(tot, reps);
    double tps = n > 1 ? B * (n - 1) / mdec : NAN, e2e = B * n / mtot;
    double rss_peak = peak_rss_mib();
    printf("medians over %d runs: prefix %.4f s, prefill %.4f s, decode %.2f ms/step\n", reps,
           mpre, mfill, n > 1 ? 1e3 * mdec / (n - 1) : 0.0);
    printf("decode: %.1f tokens/s (batch %lld x %d steps); end to end (prefix + prefill + "
           "decode, %d tokens each): %.1f tokens/s\n",
           tps, (long long)B, n - 1, n, e2e);
    printf("memory: peak RSS %.1f MiB (%.1f MiB at start), arena peak %.1f MiB\n", rss_peak,
           rss_start, (double)vlm_arena_peak(ctx) / (1024.0 * 1024.0));
    printf("first sequence: ");
    for (int t = 0; t < n; t++) printf("%d%s", out[t], t + 1 < n ? " " : "\n");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "bench", "generate");
    cJSON_AddStringToObject(o, "framework", "vlm");
    cJSON_AddStringToObject(o, "config", a->config);
    cJSON_AddStringToObject(o, "precision", a->precision);
    json_num(o, "threads", threads);
    json_num(o, "batch", (double)B);
    json_num(o, "tokens", n);
    json_num(o, "prefix_len", (double)P);
    json_num(o, "repeats", reps);
    json_num(o, "prefix_s", mpre);
    json_num(o, "prefill_s", mfill);
    json_num(o, "decode_s", mdec);
    json_num(o, "ms_per_step", n > 1 ? 1e3 * mdec / (n - 1) : NAN);
    json_num(o, "decode_tokens_per_s", tps);
    json_num(o, "e2e_tokens_per_s", e2e);
    json_num(o, "peak_rss_mib", rss_peak);
    json_num(o, "start_rss_mib", rss_start);
    cJSON_AddStringToObject(o, "blas", core);
    json_print(o);
    rc = 0;
done:
    if (rc) fprintf(stderr, "error: %s\n", vlm_last_error());
    free(pre);
    free(fill);
    free(dec);
    free(tot);
    free(ids);
    free(out);
    batch_free(&b);
    vlm_kv_cache_free(kv);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
    return rc ? 1 : 0;
}

/* ---- entry ------------------------------------------------------------------------ */

int vlm_cmd_bench_model(int argc, char **argv) {
    if (argc < 1) return 2;
    bool generate = !strcmp(argv[0], "generate");
    if (!generate && strcmp(argv[0], "model")) {
        fprintf(stderr, "error: unknown benchmark '%s' (model or generate)\n", argv[0]);
        return 2;
    }
    bm_args a = {.precision = "f32", .steps = generate ? 5 : 10, .warmup = generate ? 1 : 2,
                 .tokens = 32, .peak_n = 2048, .seed = 1};
    int p = parse_args(argc, argv, &a, generate);
    if (p) {
        if (p < 0) (generate ? usage_generate : usage_model)(stderr);
        return p > 0 ? 0 : 2;
    }
    return generate ? run_generate(&a) : run_model(&a);
}
