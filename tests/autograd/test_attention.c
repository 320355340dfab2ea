/* test_attention.c - attention and rope against naive double-precision
 * references written from the header's definitions: every mask kind, GQA,
 * rows that see no key, several tiles, decode consistency, bad inputs; and
 * the forward+backward time of a typical shape (printed, not asserted). */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng_state = 0x9E3779B97F4A7C15ULL;

static double urand(void) { /* xorshift64* -> [0, 1) */
    rng_state ^= rng_state >> 12, rng_state ^= rng_state << 25, rng_state ^= rng_state >> 27;
    return (double)((rng_state * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static vlm_tensor *rand_tensor(vlm_ctx *ctx, int64_t a, int64_t b, int64_t c, int64_t d) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, 4, (int64_t[]){a, b, c, d});
    if (t)
        for (int64_t i = 0; i < t->numel; i++)
            vlm_f32(t)[i] = (float)(2 * urand() - 1);
    return t;
}

/* ---- naive attention in double ---------------------------------------------- */

typedef struct {
    const char *what;
    int64_t B, Tq, Tk, Hq, Hkv, D;
    vlm_mask_kind kind;
    int64_t prefix;
    int key_mask; /* 0 none, 1 random (~30% masked), 2 random and batch row 0 all masked */
    float scale;  /* 0: 1/sqrt(D) */
} cfg;

static bool visible(const cfg *c, const uint8_t *km, int64_t b, int64_t i, int64_t j) {
    int64_t pos = i + c->Tk - c->Tq;
    if (km && !km[b * c->Tk + j]) return false;
    if (c->kind == VLM_MASK_CAUSAL) return j <= pos;
    if (c->kind == VLM_MASK_PREFIX) return j < c->prefix || j <= pos;
    return true;
}

/* o = softmax(scale q k^T) v over visible keys; with dO also the grads
 * (dv += p dO, ds = p (dO.v - sum p dO.v), dq += scale ds k, dk += scale ds q).
 * Returns the largest |logit| seen. */
static double ref_attention(const cfg *c, const float *q, const float *k, const float *v,
                            const uint8_t *km, const float *dO, double *o, double *dq, double *dk,
                            double *dv) {
    int64_t D = c->D, g = c->Hq / c->Hkv;
    double scale = c->scale != 0 ? c->scale : 1.0 / sqrt((double)D);
    double *p = malloc((size_t)c->Tk * sizeof *p);
    double *dp = malloc((size_t)c->Tk * sizeof *dp), smax = 0;
    for (int64_t b = 0; b < c->B; b++)
        for (int64_t h = 0; h < c->Hq; h++)
            for (int64_t i = 0; i < c->Tq; i++) {
                int64_t qo = ((b * c->Tq + i) * c->Hq + h) * D;
                double mx = -INFINITY, sum = 0, Dr = 0;
                for (int64_t j = 0; j < c->Tk; j++) {
                    const float *kj = k + ((b * c->Tk + j) * c->Hkv + h / g) * D;
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += (double)q[qo + d] * kj[d];
                    p[j] = visible(c, km, b, i, j) ? s * scale : -INFINITY;
                    smax = fmax(smax, visible(c, km, b, i, j) ? fabs(s * scale) : 0);
                    mx = fmax(mx, p[j]);
                }
                for (int64_t j = 0; j < c->Tk; j++)
                    sum += p[j] = mx == -INFINITY ? 0 : exp(p[j] - mx);
                for (int64_t d = 0; d < D; d++)
                    o[qo + d] = 0;
                for (int64_t j = 0; j < c->Tk; j++) {
                    const float *vj = v + ((b * c->Tk + j) * c->Hkv + h / g) * D;
                    p[j] = sum > 0 ? p[j] / sum : 0;
                    dp[j] = 0;
                    for (int64_t d = 0; d < D; d++)
                        o[qo + d] += p[j] * vj[d];
                    if (dO)
                        for (int64_t d = 0; d < D; d++)
                            dp[j] += (double)dO[qo + d] * vj[d];
                    Dr += p[j] * dp[j];
                }
                if (!dO) continue;
                for (int64_t j = 0; j < c->Tk; j++) {
                    int64_t ko = ((b * c->Tk + j) * c->Hkv + h / g) * D;
                    double ds = p[j] * (dp[j] - Dr);
                    for (int64_t d = 0; d < D; d++) {
                        dv[ko + d] += p[j] * dO[qo + d];
                        dq[qo + d] += scale * ds * k[ko + d];
                        dk[ko + d] += scale * ds * q[qo + d];
                    }
                }
            }
    free(p);
    free(dp);
    return smax;
}

/* max |a - ref| / max(1, max |ref|) */
static double rel_err(const float *a, const double *ref, int64_t n) {
    double err = 0, mag = 1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - ref[i]);
        if (!(d <= err)) err = isnan(d) ? INFINITY : d;
        mag = fmax(mag, fabs(ref[i]));
    }
    return err / mag;
}

static vlm_tensor *make_key_mask(vlm_ctx *ctx, const cfg *c) {
    if (!c->key_mask) return NULL;
    vlm_tensor *m = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){c->B, c->Tk});
    if (!m) return NULL;
    uint8_t *d = m->data;
    for (int64_t i = 0; i < m->numel; i++)
        d[i] = !(c->key_mask == 2 && i < c->Tk) && urand() > 0.3;
    return m;
}

/* Forward and backward (random dO) against the reference; q_grad false
 * leaves q out of the graph, so its grad must stay NULL. */
static void check_against_ref(const cfg *c, bool q_grad) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *q = rand_tensor(ctx, c->B, c->Tq, c->Hq, c->D);
    vlm_tensor *k = rand_tensor(ctx, c->B, c->Tk, c->Hkv, c->D);
    vlm_tensor *v = rand_tensor(ctx, c->B, c->Tk, c->Hkv, c->D);
    vlm_tensor *dO = rand_tensor(ctx, c->B, c->Tq, c->Hq, c->D);
    q->requires_grad = q_grad, k->requires_grad = v->requires_grad = true;
    vlm_attn_opts o = {.kind = c->kind,
                       .prefix_len = c->prefix,
                       .key_mask = make_key_mask(ctx, c),
                       .scale = c->scale};
    vlm_tensor *y = vlm_attention(ctx, q, k, v, &o);
    int rc = y ? vlm_backward_from(ctx, 0, y, vlm_f32(dO)) : -1;
    CHECK(rc == 0, "%s: %s", c->what, vlm_last_error());
    if (rc != 0) {
        vlm_ctx_free(ctx);
        return;
    }
    double *ro = calloc((size_t)(q->numel * 2 + k->numel * 2), sizeof *ro);
    double *rdq = ro + q->numel, *rdk = rdq + q->numel, *rdv = rdk + k->numel;
    double smax =
        ref_attention(c, vlm_f32(q), vlm_f32(k), vlm_f32(v), o.key_mask ? o.key_mask->data : NULL,
                      vlm_f32(dO), ro, rdq, rdk, rdv);
    double eo = rel_err(vlm_f32(y), ro, y->numel);
    double ek = rel_err(k->grad, rdk, k->numel), ev = rel_err(v->grad, rdv, v->numel);
    double eq = q_grad ? rel_err(q->grad, rdq, q->numel) : 0;
    /* A few f32 ulps (6e-8) of the largest value, times the conditioning of
     * softmax: an f32 logit is off by a few ulps of its magnitude, which
     * exp turns into that relative error of p. 1e-6 covers |logits| <= 4. */
    double tol = 1e-6 * fmax(1, smax / 4);
    printf("%-46s out %.1e  dq %.1e  dk %.1e  dv %.1e  (tol %.0e)\n", c->what, eo, eq, ek, ev, tol);
    CHECK(eo <= tol, "%s: forward error %.3g", c->what, eo);
    CHECK(eq <= tol && ek <= tol && ev <= tol, "%s: grad errors dq %.3g dk %.3g dv %.3g", c->what,
          eq, ek, ev);
    CHECK(q_grad || q->grad == NULL, "%s: q got a grad without requiring one", c->what);
    free(ro);
    vlm_ctx_free(ctx);
}

static void test_against_reference(void) {
    static const cfg cases[] = {
        {"no mask, Tq 5, Tk 7", 2, 5, 7, 2, 2, 8, VLM_MASK_NONE, 0, 0},
        {"causal, Tq = Tk = 9", 2, 9, 9, 2, 2, 8, VLM_MASK_CAUSAL, 0, 0},
        {"causal decode-style, Tq 3 < Tk 9", 2, 3, 9, 2, 2, 8, VLM_MASK_CAUSAL, 0, 0},
        {"causal, Tq 9 > Tk 4 (rows see nothing)", 1, 9, 4, 2, 2, 8, VLM_MASK_CAUSAL, 0, 0},
        {"prefix 4, Tq = Tk = 10", 2, 10, 10, 2, 2, 8, VLM_MASK_PREFIX, 4, 0},
        {"prefix 0 (= causal), Tq = Tk = 6", 1, 6, 6, 1, 1, 8, VLM_MASK_PREFIX, 0, 0},
        {"prefix Tk (= none), Tq 3, Tk 6", 1, 3, 6, 1, 1, 8, VLM_MASK_PREFIX, 6, 0},
        {"key mask, causal, batch 0 fully masked", 3, 7, 7, 2, 2, 8, VLM_MASK_CAUSAL, 0, 2},
        {"GQA 6/2, causal, key mask", 2, 8, 8, 6, 2, 16, VLM_MASK_CAUSAL, 0, 1},
        {"GQA 3/1, no mask", 2, 4, 6, 3, 1, 5, VLM_MASK_NONE, 0, 0},
        {"tiles: Tq 130, Tk 200, no mask, GQA 4/2", 1, 130, 200, 4, 2, 16, VLM_MASK_NONE, 0, 0},
        {"tiles: Tq 130, Tk 200, causal, key mask", 2, 130, 200, 2, 1, 16, VLM_MASK_CAUSAL, 0, 1},
        {"tiles: Tq 130, Tk 200, prefix 150", 1, 130, 200, 2, 2, 16, VLM_MASK_PREFIX, 150, 0},
        {"tiles: Tq = Tk = 130, causal, GQA 2/1", 1, 130, 130, 2, 1, 32, VLM_MASK_CAUSAL, 0, 0},
        {"tiles: Tq 200, Tk 130, causal", 1, 200, 130, 1, 1, 16, VLM_MASK_CAUSAL, 0, 0},
        {"tiles: Tq = Tk = 129, prefix 70, D 1", 1, 129, 129, 1, 1, 1, VLM_MASK_PREFIX, 70, 0},
        {"explicit scale 0.35, no mask", 2, 5, 6, 2, 1, 8, VLM_MASK_NONE, 0, 0, 0.35f},
        {"peaky: scale 2, D 64, Tq 70, Tk 150, causal", 1, 70, 150, 2, 2, 64, VLM_MASK_CAUSAL, 0, 1,
         2.0f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_against_ref(&cases[i], true);
    check_against_ref(&cases[8], false);
    check_against_ref(&cases[11], false);
}

/* A row that sees no key: exact zeros out, exact zero grads, no NaN. */
static void test_fully_masked_rows(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t B = 2, T = 70, H = 2, D = 8;
    vlm_tensor *q = rand_tensor(ctx, B, T, H, D), *k = rand_tensor(ctx, B, T, H, D);
    vlm_tensor *v = rand_tensor(ctx, B, T, H, D);
    q->requires_grad = k->requires_grad = v->requires_grad = true;
    vlm_tensor *km = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){B, T});
    memset((uint8_t *)km->data + T, 1, (size_t)T); /* batch 0: nothing; batch 1: everything */
    vlm_tensor *y =
        vlm_attention(ctx, q, k, v, &(vlm_attn_opts){.kind = VLM_MASK_CAUSAL, .key_mask = km});
    bool ok = y && vlm_backward_from(ctx, 0, y, NULL) == 0;
    CHECK(ok, "%s", vlm_last_error());
    int64_t half = ok ? y->numel / 2 : 0, bad_zero = 0, nonfinite = 0, live = 0;
    for (int64_t i = 0; ok && i < y->numel; i++) {
        float vals[4] = {vlm_f32(y)[i], q->grad[i], k->grad[i], v->grad[i]};
        for (int j = 0; j < 4; j++) {
            nonfinite += !isfinite(vals[j]);
            if (i < half)
                bad_zero += vals[j] != 0.0f;
            else
                live += vals[j] != 0.0f;
        }
    }
    CHECK(bad_zero == 0, "%lld non-zero values in a fully masked batch row", (long long)bad_zero);
    CHECK(nonfinite == 0, "%lld non-finite values", (long long)nonfinite);
    CHECK(live > 0, "the unmasked batch row is all zero");
    vlm_ctx_free(ctx);
}

/* The last query of a length-T sequence over all T keys (a decode step) must
 * equal row T-1 of the full causal attention. */
static void test_decode_matches_full(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t B = 2, T = 100, Hq = 4, Hkv = 2, D = 16;
    vlm_tensor *q = rand_tensor(ctx, B, T, Hq, D), *k = rand_tensor(ctx, B, T, Hkv, D);
    vlm_tensor *v = rand_tensor(ctx, B, T, Hkv, D);
    vlm_tensor *last = vlm_tensor_new(ctx, VLM_F32, 4, (int64_t[]){B, 1, Hq, D});
    for (int64_t b = 0; b < B; b++)
        memcpy(vlm_f32(last) + b * Hq * D, vlm_f32(q) + ((b * T + T - 1) * Hq) * D,
               (size_t)(Hq * D) * sizeof(float));
    vlm_attn_opts causal = {.kind = VLM_MASK_CAUSAL};
    vlm_tensor *full = vlm_attention(ctx, q, k, v, &causal);
    vlm_tensor *step = vlm_attention(ctx, last, k, v, &causal);
    vlm_tensor *step_nomask = vlm_attention(ctx, last, k, v, NULL);
    CHECK(full && step && step_nomask, "%s", vlm_last_error());
    double err = 0, err2 = 0;
    for (int64_t b = 0; full && step && step_nomask && b < B; b++)
        for (int64_t e = 0; e < Hq * D; e++) {
            float f = vlm_f32(full)[((b * T + T - 1) * Hq) * D + e];
            err = fmax(err, fabs(f - vlm_f32(step)[b * Hq * D + e]));
            err2 = fmax(err2, fabs(f - vlm_f32(step_nomask)[b * Hq * D + e]));
        }
    printf("decode step vs row T-1 of full causal: max diff %.2e (no mask: %.2e)\n", err, err2);
    CHECK(err <= 1e-6 && err2 <= 1e-6, "decode step differs from full causal row: %.3g, %.3g", err,
          err2);
    vlm_ctx_free(ctx);
}

/* opts NULL = no mask and scale 1/sqrt(D); nothing is recorded without grad. */
static void test_defaults_and_no_grad(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *q = rand_tensor(ctx, 1, 5, 2, 8), *k = rand_tensor(ctx, 1, 6, 2, 8);
    vlm_tensor *v = rand_tensor(ctx, 1, 6, 2, 8);
    vlm_tensor *a = vlm_attention(ctx, q, k, v, NULL);
    vlm_tensor *b =
        vlm_attention(ctx, q, k, v, &(vlm_attn_opts){.kind = VLM_MASK_NONE, .scale = 1 / sqrtf(8)});
    CHECK(a && b && memcmp(a->data, b->data, (size_t)a->numel * sizeof(float)) == 0,
          "opts NULL differs from scale 1/sqrt(D)");
    q->requires_grad = true;
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *c = vlm_attention(ctx, q, k, v, NULL);
    vlm_tensor *r = vlm_rope(ctx, q, 0, 10000.0f);
    vlm_set_grad_enabled(ctx, prev);
    CHECK(c && r && vlm_tape_len(ctx) == 0 && !c->requires_grad, "no_grad recorded a node");
    vlm_ctx_free(ctx);
}

/* ---- rope --------------------------------------------------------------------- */

/* HF: inv_freq = theta^(-2i/D) rounded to f32, angle = f32(pos * inv_freq);
 * the rest in double. */
static double rope_ref(const float *x, int64_t j, int64_t D, int64_t pos, double theta) {
    int64_t half = D / 2, i = j % half;
    float inv = (float)pow(theta, -2.0 * (double)i / (double)D);
    double ang = (float)pos * inv, c = cos(ang), s = sin(ang);
    return j < half ? x[j] * c - x[j + half] * s : x[j] * c + x[j - half] * s;
}

static void test_rope_reference(void) {
    static const struct {
        int64_t B, T, H, D, pos;
        float theta;
    } cases[] = {
        {1, 3, 2, 4, 0, 10000},   {2, 5, 3, 8, 5, 10000},     {1, 4, 1, 2, 0, 100000},
        {2, 6, 2, 64, 5, 100000}, {1, 3, 3, 16, 1000, 10000}, {1, 2, 1, 128, 4000, 500000},
    };
    for (size_t n = 0; n < sizeof cases / sizeof cases[0]; n++) {
        vlm_ctx *ctx = vlm_ctx_new(0);
        int64_t B = cases[n].B, T = cases[n].T, H = cases[n].H, D = cases[n].D;
        vlm_tensor *x = rand_tensor(ctx, B, T, H, D);
        vlm_tensor *y = vlm_rope(ctx, x, cases[n].pos, cases[n].theta);
        CHECK(y != NULL, "%s", vlm_last_error());
        double err = 0;
        for (int64_t r = 0; y && r < B * T * H; r++) {
            int64_t pos = cases[n].pos + r / H % T;
            for (int64_t j = 0; j < D; j++)
                err = fmax(err, fabs(vlm_f32(y)[r * D + j] -
                                     rope_ref(vlm_f32(x) + r * D, j, D, pos, cases[n].theta)));
        }
        printf("rope [%lld,%lld,%lld,%lld] pos %lld theta %g: max err %.2e\n", (long long)B,
               (long long)T, (long long)H, (long long)D, (long long)cases[n].pos, cases[n].theta,
               err);
        /* the output is a few f32 roundings of values <= sqrt(2) */
        CHECK(err <= 1e-6, "rope case %zu: error %.3g", n, err);
        vlm_ctx_free(ctx);
    }
}

/* rope at pos_offset p equals positions p.. of a longer sequence, bit for bit. */
static void test_rope_offset(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t B = 2, T = 20, H = 3, D = 16, p = 7, n = 5;
    vlm_tensor *x = rand_tensor(ctx, B, T, H, D);
    vlm_tensor *part = vlm_tensor_new(ctx, VLM_F32, 4, (int64_t[]){B, n, H, D});
    for (int64_t b = 0; b < B; b++)
        memcpy(vlm_f32(part) + b * n * H * D, vlm_f32(x) + (b * T + p) * H * D,
               (size_t)(n * H * D) * sizeof(float));
    vlm_tensor *full = vlm_rope(ctx, x, 0, 10000.0f), *sub = vlm_rope(ctx, part, p, 10000.0f);
    int64_t diff = 0;
    for (int64_t b = 0; full && sub && b < B; b++)
        diff += memcmp(vlm_f32(full) + (b * T + p) * H * D, vlm_f32(sub) + b * n * H * D,
                       (size_t)(n * H * D) * sizeof(float)) != 0;
    CHECK(full && sub && diff == 0, "rope at offset %lld differs from slicing a longer sequence",
          (long long)p);
    vlm_ctx_free(ctx);
}

/* ---- bad inputs ------------------------------------------------------------- */

static void expect_error(vlm_tensor *t, const char *op, const char *shape, const char *what) {
    const char *e = vlm_last_error();
    CHECK(t == NULL, "%s: accepted", what);
    printf("%-20s -> %s\n", what, e);
    CHECK(strstr(e, op) == e && strstr(e, shape),
          "%s: message '%s' should start with '%s' and name %s", what, e, op, shape);
}

static void test_bad_inputs(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *q = rand_tensor(ctx, 2, 5, 2, 8), *k = rand_tensor(ctx, 2, 6, 2, 8);
    vlm_tensor *k4 = rand_tensor(ctx, 2, 6, 2, 4), *q3 = rand_tensor(ctx, 2, 5, 3, 8);
    vlm_tensor *q3d = vlm_tensor_new(ctx, VLM_F32, 3, (int64_t[]){2, 5, 16});
    vlm_tensor *km_bad = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){2, 5});
    vlm_tensor *km_f32 = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){2, 6});
    expect_error(vlm_attention(ctx, q, k4, k4, NULL), "attention", "[2, 6, 2, 4]", "mismatched D");
    expect_error(vlm_attention(ctx, q, k, k4, NULL), "attention", "[2, 6, 2, 4]", "k, v differ");
    expect_error(vlm_attention(ctx, q3, k, k, NULL), "attention", "[2, 5, 3, 8]", "Hq % Hkv");
    expect_error(vlm_attention(ctx, q3d, k, k, NULL), "attention", "[2, 5, 16]", "3-D q");
    expect_error(vlm_attention(ctx, q, k, k, &(vlm_attn_opts){.key_mask = km_bad}), "attention",
                 "[2, 5]", "key_mask shape");
    expect_error(vlm_attention(ctx, q, k, k, &(vlm_attn_opts){.key_mask = km_f32}), "attention",
                 "f32", "key_mask dtype");
    expect_error(
        vlm_attention(ctx, q, k, k, &(vlm_attn_opts){.kind = VLM_MASK_PREFIX, .prefix_len = 7}),
        "attention", "[2, 6, 2, 8]", "prefix_len > Tk");
    expect_error(
        vlm_attention(ctx, q, k, k, &(vlm_attn_opts){.kind = VLM_MASK_PREFIX, .prefix_len = -1}),
        "attention", "[2, 5, 2, 8]", "prefix_len < 0");
    expect_error(vlm_attention(ctx, km_f32, k, k, NULL), "attention", "[2, 6]", "2-D f32 q");
    expect_error(vlm_rope(ctx, rand_tensor(ctx, 1, 2, 1, 5), 0, 10000.0f), "rope", "[1, 2, 1, 5]",
                 "odd D");
    expect_error(vlm_rope(ctx, q, 0, 0.0f), "rope", "[2, 5, 2, 8]", "theta 0");
    expect_error(vlm_rope(ctx, q, -1, 10000.0f), "rope", "[2, 5, 2, 8]", "negative pos_offset");
    expect_error(vlm_rope(ctx, km_bad, 0, 10000.0f), "rope", "u8", "u8 x");
    vlm_set_error("earlier failure");
    CHECK(vlm_attention(ctx, NULL, k, k, NULL) == NULL && vlm_rope(ctx, NULL, 0, 1e4f) == NULL &&
              strcmp(vlm_last_error(), "earlier failure") == 0,
          "NULL input should pass through");
    vlm_ctx_free(ctx);
}

/* ---- timing (information only) ----------------------------------------------- */

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Inputs are rebuilt after a context reset each repetition, so the timed
 * region reuses warm arena memory instead of faulting in fresh pages. */
static void time_attention(vlm_mask_kind kind, const char *name) {
    int64_t B = 64, T = 64, H = 6, D = 64, n = B * T * H * D, shape[4] = {B, T, H, D};
    vlm_ctx *ctx = vlm_ctx_new(0);
    float *host = malloc((size_t)(4 * n) * sizeof *host);
    for (int64_t i = 0; i < 4 * n; i++)
        host[i] = (float)(2 * urand() - 1);
    double fwd = INFINITY, bwd = INFINITY;
    for (int rep = 0; rep < 5; rep++) {
        vlm_ctx_reset(ctx);
        vlm_tensor *x[4];
        for (int i = 0; i < 4; i++)
            x[i] = vlm_tensor_from(ctx, VLM_F32, 4, shape, host + i * n);
        x[0]->requires_grad = x[1]->requires_grad = x[2]->requires_grad = true;
        double t0 = now();
        vlm_tensor *y = vlm_attention(ctx, x[0], x[1], x[2], &(vlm_attn_opts){.kind = kind});
        double t1 = now();
        int rc = y ? vlm_backward_from(ctx, 0, y, vlm_f32(x[3])) : -1;
        double t2 = now();
        CHECK(rc == 0, "timing run: %s", vlm_last_error());
        fwd = fmin(fwd, t1 - t0), bwd = fmin(bwd, t2 - t1);
    }
    double flops = 4.0 * B * H * T * T * D; /* QK^T and PV, as if unmasked */
    printf("attention B=%lld T=%lld H=%lld D=%lld %-6s (%d threads, BLAS %s): forward %.2f ms "
           "(%.0f GFLOP/s), backward %.2f ms (%.0f GFLOP/s)\n",
           (long long)B, (long long)T, (long long)H, (long long)D, name, vlm_num_threads(),
           vlm_blas_corename(), fwd * 1e3, flops / fwd * 1e-9, bwd * 1e3, 2.5 * flops / bwd * 1e-9);
    free(host);
    vlm_ctx_free(ctx);
}

int main(void) {
    test_against_reference();
    test_fully_masked_rows();
    test_decode_matches_full();
    test_defaults_and_no_grad();
    test_rope_reference();
    test_rope_offset();
    test_bad_inputs();
    time_attention(VLM_MASK_NONE, "none");
    time_attention(VLM_MASK_CAUSAL, "causal");
    return TEST_DONE();
}
