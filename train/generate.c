/* generate.c - autoregressive caption generation: the prefix and BOS in one
 * decoder call that fills the KV cache, then one token per step for the
 * whole batch; greedy or sampled (temperature, top-k, top-p) from seeded
 * per-sequence streams. A reference path re-runs the full forward every step
 * so tests can check the cache against it. */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

vlm_gen_opts vlm_gen_opts_default(void) {
    return (vlm_gen_opts){.max_tokens = 32, .temperature = 1.0f, .top_p = 1.0f, .eos_id = -1};
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- options ------------------------------------------------------------------------- */

static int check_id(const char *what, int32_t id, int vocab, bool allow_none) {
    if ((allow_none && id == -1) || (id >= 0 && id < vocab)) return 0;
    return vlm_set_error("generate: %s %d outside [%s, model.decoder.vocab = %d)", what, id,
                         allow_none ? "-1" : "0", vocab);
}

static int opts_ok(const vlm_gen_opts *o, const vlm_decoder *d, int64_t P) {
    int V = d->cfg.vocab;
    if (o->max_tokens < 1)
        return vlm_set_error("generate: max_tokens %d must be >= 1", o->max_tokens);
    if (P + o->max_tokens > d->cfg.max_len)
        return vlm_set_error("generate: %lld prefix positions + max_tokens %d exceed "
                             "model.decoder.max_len %d (at most %lld new tokens)",
                             (long long)P, o->max_tokens, d->cfg.max_len,
                             (long long)(d->cfg.max_len - P));
    if (o->sample && !(o->temperature > 0 && isfinite(o->temperature)))
        return vlm_set_error("generate: temperature %g must be a positive number",
                             (double)o->temperature);
    if (o->sample && o->top_k < 0)
        return vlm_set_error("generate: top_k %d must be >= 0 (0 = off)", o->top_k);
    if (o->sample && !(o->top_p > 0 && o->top_p <= 1))
        return vlm_set_error("generate: top_p %g must lie in (0, 1]", (double)o->top_p);
    if (check_id("bos_id", o->bos_id, V, false) || check_id("eos_id", o->eos_id, V, true) ||
        check_id("pad_id", o->pad_id, V, false))
        return -1;
    return 0;
}

/* ---- picking the next token ------------------------------------------------------------ */

/* splitmix64: one stream per sequence. */
static uint64_t splitmix64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}
static double uniform01(uint64_t *s) { return (double)(splitmix64(s) >> 11) * 0x1.0p-53; }

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

/* Scratch for sampling: candidate ids (best first), their weights, and
 * (score, id) pairs for sorting. */
typedef struct {
    float s;
    int i;
} scored;

typedef struct {
    int *idx;
    double *w;
    scored *pairs;
} sampler;

static int by_score_desc(const void *a, const void *b) {
    const scored *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* Candidates in rank order: the top_k best (ties to the lower id), all ids
 * sorted when only top-p needs an order, or all ids in id order. */
static int candidates(const float *x, int V, const vlm_gen_opts *o, sampler *s) {
    if (o->top_k > 0 && o->top_k < V) {
        vlm_topk(x, V, o->top_k, s->idx);
        return o->top_k;
    }
    if (o->top_p < 1) {
        for (int i = 0; i < V; i++) s->pairs[i] = (scored){x[i], i};
        qsort(s->pairs, (size_t)V, sizeof *s->pairs, by_score_desc);
        for (int i = 0; i < V; i++) s->idx[i] = s->pairs[i].i;
    } else {
        for (int i = 0; i < V; i++) s->idx[i] = i;
    }
    return V;
}

/* temperature -> top-k -> top-p -> draw, as HF's warpers in that order. */
static int32_t sample(const float *logits, int V, const vlm_gen_opts *o, uint64_t *rng,
                      sampler *s) {
    int n = candidates(logits, V, o, s);
    double inv_t = 1.0 / o->temperature, m = -INFINITY, z = 0;
    for (int i = 0; i < n; i++) m = fmax(m, logits[s->idx[i]] * inv_t);
    for (int i = 0; i < n; i++) z += s->w[i] = exp(logits[s->idx[i]] * inv_t - m);
    if (o->top_p < 1) {
        /* keep an id while the mass ranked strictly above it is < top_p */
        double before = 0, keep_z = 0;
        int k = 0;
        while (k < n && (k == 0 || before < o->top_p * z)) before += s->w[k], keep_z += s->w[k++];
        n = k, z = keep_z;
    }
    double u = uniform01(rng) * z, c = 0;
    for (int i = 0; i < n; i++)
        if ((c += s->w[i]) > u) return s->idx[i];
    return s->idx[n - 1]; /* u rounded up to z */
}

/* ---- the decoding loop ----------------------------------------------------------------- */

typedef struct {
    const vlm_decoder *d;
    const vlm_gen_opts *o;
    vlm_tensor *prefix, *prefix_mask;
    vlm_kv_cache *cache;
    int64_t B, P;
    int32_t *tokens; /* [B, max_tokens] */
    int *lengths;
    bool *done;
    uint64_t *rng;
    sampler smp;
    int64_t produced;
} gen;

/* [prefix ; embed(ids)] with a prefix-LM mask over all of it (no cache), or
 * the same appended to the cache; ids [B, T]. Logits of each row's last position. */
static vlm_tensor *forward(vlm_ctx *ctx, gen *g, const int32_t *ids, int64_t T, bool with_prefix) {
    int64_t B = g->B, P = with_prefix ? g->P : 0;
    vlm_tensor *emb = vlm_decoder_embed(ctx, g->d, vlm_tensor_from(ctx, VLM_I32, 2,
                                                                    (int64_t[]){B, T}, ids));
    vlm_tensor *x = with_prefix ? vlm_concat(ctx, (vlm_tensor *[]){g->prefix, emb}, 2, 1) : emb;
    vlm_attn_opts mask = {.kind = with_prefix ? VLM_MASK_PREFIX : VLM_MASK_CAUSAL, .prefix_len = P};
    if (with_prefix && g->prefix_mask) {
        /* padding of the prompt stays masked; the new positions are valid */
        mask.key_mask = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){B, P + T});
        if (!mask.key_mask) return NULL;
        for (int64_t b = 0; b < B; b++) {
            uint8_t *dst = (uint8_t *)mask.key_mask->data + b * (P + T);
            memcpy(dst, (const uint8_t *)g->prefix_mask->data + b * P, (size_t)P);
            memset(dst + P, 1, (size_t)T);
        }
    }
    vlm_tensor *logits = vlm_decoder_forward(ctx, g->d, x, &mask, g->cache, false);
    if (!logits) return NULL;
    int64_t L = logits->shape[1];
    return vlm_reshape(ctx, vlm_slice(ctx, logits, 1, L - 1, 1), 2,
                       (int64_t[]){B, g->d->cfg.vocab});
}

/* Picks step t's token of every unfinished sequence from logits [B, V]. */
static void pick_all(gen *g, const vlm_tensor *logits, int t) {
    int V = g->d->cfg.vocab, M = g->o->max_tokens;
    for (int64_t b = 0; b < g->B; b++) {
        if (g->done[b]) continue;
        const float *row = vlm_f32(logits) + b * V;
        int32_t id = g->o->sample ? sample(row, V, g->o, &g->rng[b], &g->smp) : argmax(row, V);
        g->tokens[b * M + t] = id;
        g->produced++;
        if (id == g->o->eos_id)
            g->done[b] = true;
        else
            g->lengths[b]++;
    }
}

static bool all_done(const gen *g) {
    for (int64_t b = 0; b < g->B; b++)
        if (!g->done[b]) return false;
    return true;
}

/* The ids fed at step t >= 1: with a cache the previous token (pad once
 * done), without one BOS and every token so far. ids has room for B x (t+1). */
static int64_t step_ids(const gen *g, int t, int32_t *ids) {
    int M = g->o->max_tokens;
    if (g->cache) {
        for (int64_t b = 0; b < g->B; b++) ids[b] = g->tokens[b * M + t - 1];
        return 1;
    }
    for (int64_t b = 0; b < g->B; b++) {
        ids[b * (t + 1)] = g->o->bos_id;
        memcpy(ids + b * (t + 1) + 1, g->tokens + b * M, (size_t)t * sizeof *ids);
    }
    return t + 1;
}

static int decode_loop(vlm_ctx *ctx, gen *g, int32_t *ids, vlm_gen_stats *st) {
    int M = g->o->max_tokens;
    for (int64_t b = 0; b < g->B; b++) ids[b] = g->o->bos_id;
    double t0 = now_s();
    vlm_tensor *logits = forward(ctx, g, ids, 1, true);
    if (!logits) return -1;
    pick_all(g, logits, 0);
    double t1 = now_s();
    int steps = 0;
    vlm_arena_pos mark = vlm_arena_mark(ctx);
    for (int t = 1; t < M && !all_done(g); t++, steps++) {
        int64_t T = step_ids(g, t, ids);
        if (!(logits = forward(ctx, g, ids, T, !g->cache))) return -1;
        pick_all(g, logits, t);
        vlm_arena_rewind(ctx, mark); /* a step's activations are dead once picked */
    }
    if (st) {
        st->prefill_s += t1 - t0;
        st->decode_s += now_s() - t1;
        st->steps += steps;
        st->tokens += g->produced;
    }
    return 0;
}

static int gen_alloc(gen *g, int64_t B, int V) {
    g->done = calloc((size_t)B, sizeof *g->done);
    g->rng = malloc((size_t)B * sizeof *g->rng);
    g->smp.idx = malloc((size_t)V * sizeof *g->smp.idx);
    g->smp.w = malloc((size_t)V * sizeof *g->smp.w);
    g->smp.pairs = malloc((size_t)V * sizeof *g->smp.pairs);
    if (g->done && g->rng && g->smp.idx && g->smp.w && g->smp.pairs) return 0;
    return vlm_set_error("generate: out of memory for batch %lld", (long long)B);
}

static void gen_free(gen *g) {
    free(g->done);
    free(g->rng);
    free(g->smp.idx);
    free(g->smp.w);
    free(g->smp.pairs);
    vlm_kv_cache_free(g->cache);
}

static bool prefix_ok(const vlm_decoder *d, const vlm_tensor *prefix, const vlm_tensor *mask) {
    char s[64], m[64];
    if (!prefix || prefix->dtype != VLM_F32 || prefix->ndim != 3 || prefix->shape[0] < 1 ||
        prefix->shape[1] < 1 || prefix->shape[2] != d->cfg.width) {
        vlm_set_error("generate: prefix must be f32 [B, P, %d] with B, P >= 1, got %s", d->cfg.width,
                      prefix ? vlm_shape_str(prefix, s, sizeof s) : "NULL");
        return false;
    }
    if (mask && (mask->dtype != VLM_U8 || mask->ndim != 2 || mask->shape[0] != prefix->shape[0] ||
                 mask->shape[1] != prefix->shape[1])) {
        vlm_set_error("generate: prefix mask must be u8 [B, P] = %s, got %s %s",
                      vlm_shape_str(prefix, s, sizeof s), vlm_dtype_name(mask->dtype),
                      vlm_shape_str(mask, m, sizeof m));
        return false;
    }
    return true;
}

int vlm_generate(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *prefix, vlm_tensor *prefix_mask,
                 const vlm_gen_opts *o, int32_t *tokens, int *lengths, vlm_gen_stats *st) {
    if (!d || !o || !tokens || !prefix_ok(d, prefix, prefix_mask) || opts_ok(o, d, prefix->shape[1]))
        return -1;
    int64_t B = prefix->shape[0], P = prefix->shape[1];
    int M = o->max_tokens;
    gen g = {.d = d, .o = o, .prefix = prefix, .prefix_mask = prefix_mask, .B = B, .P = P,
             .tokens = tokens};
    int *own_lengths = lengths ? NULL : malloc((size_t)B * sizeof *own_lengths);
    g.lengths = lengths ? lengths : own_lengths;
    int32_t *ids = malloc((size_t)(B * (M + 1)) * sizeof *ids);
    int rc = g.lengths && ids ? gen_alloc(&g, B, d->cfg.vocab)
                              : vlm_set_error("generate: out of memory");
    /* the last token is never fed back: P + 1 + (M - 1) positions */
    if (!rc && !o->no_cache && !(g.cache = vlm_kv_cache_new(&d->cfg, (int)B, (int)(P + M)))) rc = -1;
    if (!rc) {
        for (int64_t i = 0; i < B * M; i++) tokens[i] = o->pad_id;
        for (int64_t b = 0; b < B; b++) {
            g.lengths[b] = 0;
            g.rng[b] = o->seed ^ (0xD1B54A32D192ED03ULL * (uint64_t)(b + 1));
        }
        bool prev = vlm_set_grad_enabled(ctx, false);
        vlm_arena_pos mark = vlm_arena_mark(ctx);
        rc = decode_loop(ctx, &g, ids, st);
        vlm_arena_rewind(ctx, mark);
        vlm_set_grad_enabled(ctx, prev);
    }
    gen_free(&g);
    free(ids);
    free(own_lengths);
    return rc;
}

int vlm_caption_generate(vlm_ctx *ctx, const vlm_model *m, const float *pixels, int B,
                         const int32_t *prompt_ids, const uint8_t *prompt_mask, int Tp,
                         const vlm_gen_opts *o, int32_t *tokens, int *lengths,
                         vlm_gen_stats *st) {
    if (!m || !m->captioner)
        return vlm_set_error("caption: the model is not a captioner (model.type \"%s\")",
                             m ? m->cfg.type : "(null)");
    if (!pixels || !prompt_ids || B < 1 || Tp < 1)
        return vlm_set_error("caption: need B >= 1 images and a prompt of Tp >= 1 ids");
    const vlm_captioner *cap = m->captioner;
    int S = m->cfg.vision.image_size, C = m->cfg.vision.channels;
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_arena_pos mark = vlm_arena_mark(ctx);
    double t0 = now_s();
    vlm_tensor *img = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){B, C, S, S}, pixels);
    vlm_tensor *ids = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){B, Tp}, prompt_ids);
    vlm_tensor *mask = prompt_mask
                           ? vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, Tp}, prompt_mask)
                           : NULL;
    vlm_tensor *prefix = vlm_captioner_prefix(ctx, m, img, ids, mask, false);
    vlm_tensor *pmask = prefix && mask ? vlm_captioner_key_mask(ctx, m, mask, 0) : NULL;
    int rc = prefix && (pmask || !mask) ? 0 : -1;
    if (st) st->prefill_s += now_s() - t0;
    if (!rc) rc = vlm_generate(ctx, &cap->decoder, prefix, pmask, o, tokens, lengths, st);
    vlm_arena_rewind(ctx, mark);
    vlm_set_grad_enabled(ctx, prev);
    return rc;
}
