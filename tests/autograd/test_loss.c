/* test_loss.c - cross_entropy and siglip_loss: closed forms, hand-worked
 * examples, ignore_index, large logits, a larger case against double loops,
 * bad inputs. */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x5851F42D4C957F2DULL;
static float frand(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (float)((z ^ (z >> 31)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static vlm_tensor *f32_of(vlm_ctx *ctx, int ndim, const int64_t *shape, const float *v, bool grad) {
    vlm_tensor *t = vlm_tensor_from(ctx, VLM_F32, ndim, shape, v);
    t->requires_grad = grad;
    return t;
}

static vlm_tensor *i32_of(vlm_ctx *ctx, int64_t n, const int32_t *v) {
    return vlm_tensor_from(ctx, VLM_I32, 1, &n, v);
}

static double loss_of(const vlm_tensor *t) { return t ? vlm_f32(t)[0] : NAN; }

/* ---- cross_entropy ---------------------------------------------------------- */

/* Equal logits: p = 1/C, so the loss is log C for any label and any smoothing,
 * and dx = (1/C - t) / N. */
static void test_ce_uniform(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    const int64_t N = 4, C = 10;
    float x[40];
    for (int i = 0; i < 40; i++)
        x[i] = 3.7f;
    vlm_tensor *logits = f32_of(ctx, 2, (int64_t[]){N, C}, x, true);
    vlm_tensor *labels = i32_of(ctx, N, (int32_t[]){0, 9, 3, 3});
    vlm_tensor *l0 = vlm_cross_entropy(ctx, logits, labels, -100, 0.0f);
    vlm_tensor *l1 = vlm_cross_entropy(ctx, logits, labels, -100, 0.3f);
    CHECK_NEAR(loss_of(l0), log(10.0), 1e-6);
    CHECK_NEAR(loss_of(l1), log(10.0), 1e-6);
    CHECK(l0 && l0->ndim == 1 && l0->shape[0] == 1, "cross_entropy must return [1]");
    CHECK(vlm_backward(ctx, l0) == 0, "backward: %s", vlm_last_error());
    for (int64_t i = 0; logits->grad && i < N; i++)
        for (int64_t j = 0; j < C; j++)
            CHECK_NEAR(logits->grad[i * C + j], (0.1 - (j == vlm_i32(labels)[i])) / N, 1e-7);
    vlm_ctx_free(ctx);
}

/* One row [1, 2, 3], label 0, smoothing 0.1, worked by hand:
 * -0.9 log p0 - (0.1/3) (log p0 + log p1 + log p2) = lse - 0.9 * 1 - (0.1/3) * 6. */
static void test_ce_smoothing(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *logits = f32_of(ctx, 2, (int64_t[]){1, 3}, (float[]){1, 2, 3}, true);
    vlm_tensor *l = vlm_cross_entropy(ctx, logits, i32_of(ctx, 1, (int32_t[]){0}), -1, 0.1f);
    double lse = log(exp(1.0) + exp(2.0) + exp(3.0));
    CHECK_NEAR(loss_of(l), lse - 0.9 - 0.2, 1e-6);
    CHECK_NEAR(loss_of(l), 2.30760596444438, 1e-6);
    CHECK(vlm_backward(ctx, l) == 0, "backward: %s", vlm_last_error());
    double t[3] = {0.9 + 0.1 / 3, 0.1 / 3, 0.1 / 3};
    for (int j = 0; logits->grad && j < 3; j++)
        CHECK_NEAR(logits->grad[j], exp(j + 1.0 - lse) - t[j], 1e-7);
    vlm_ctx_free(ctx);
}

/* Ignored rows count neither in the sum nor in the mean, and get zero grads;
 * all rows ignored gives 0 and zero grads. */
static void test_ce_ignore(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    float x[] = {0.5f, -1, 2, 9, 9, 9, 1, 1, 0};
    vlm_tensor *logits = f32_of(ctx, 2, (int64_t[]){3, 3}, x, true);
    vlm_tensor *l =
        vlm_cross_entropy(ctx, logits, i32_of(ctx, 3, (int32_t[]){2, -100, 0}), -100, 0.0f);
    double r0 = log(exp(0.5) + exp(-1.0) + exp(2.0)) - 2, r2 = log(2 * exp(1.0) + 1) - 1;
    CHECK_NEAR(loss_of(l), (r0 + r2) / 2, 1e-6);
    CHECK(vlm_backward(ctx, l) == 0, "backward: %s", vlm_last_error());
    CHECK(logits->grad && logits->grad[3] == 0 && logits->grad[4] == 0 && logits->grad[5] == 0,
          "ignored row got a grad");

    logits->grad = NULL;
    vlm_tensor *all =
        vlm_cross_entropy(ctx, logits, i32_of(ctx, 3, (int32_t[]){-100, -100, -100}), -100, 0.1f);
    CHECK(all && loss_of(all) == 0.0, "all rows ignored: loss %g, want 0", loss_of(all));
    CHECK(vlm_backward(ctx, all) == 0, "backward: %s", vlm_last_error());
    int nz = 0;
    for (int i = 0; logits->grad && i < 9; i++)
        nz += logits->grad[i] != 0;
    CHECK(nz == 0, "all rows ignored: %d nonzero grads", nz);
    vlm_ctx_free(ctx);
}

/* Logits far from 0: finite, and accurate to f32 (not to the ulp of 1000). */
static void test_ce_large_logits(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *logits =
        f32_of(ctx, 2, (int64_t[]){2, 3}, (float[]){1000, 0, -1000, 1001, 1002, 1003}, false);
    vlm_tensor *l = vlm_cross_entropy(ctx, logits, i32_of(ctx, 2, (int32_t[]){1, 0}), -100, 0);
    double r1 = log(exp(-2.0) + exp(-1.0) + 1) + 2;
    CHECK_NEAR(loss_of(l), (1000 + r1) / 2, 1e-6);
    vlm_ctx_free(ctx);
}

/* [64, 600] (threaded rows) with ignored rows and smoothing against double loops. */
static void test_ce_large(void) {
    const int64_t N = 64, C = 600;
    const float e = 0.05f;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *logits = vlm_tensor_new(ctx, VLM_F32, 2, (int64_t[]){N, C});
    vlm_tensor *labels = vlm_tensor_new(ctx, VLM_I32, 1, &N);
    for (int64_t i = 0; i < N * C; i++)
        vlm_f32(logits)[i] = 5 * frand();
    for (int64_t i = 0; i < N; i++)
        vlm_i32(labels)[i] = i % 7 == 3 ? -1 : (int32_t)(i * 37 % C);
    logits->requires_grad = true;
    vlm_tensor *l = vlm_cross_entropy(ctx, logits, labels, -1, e);
    CHECK(l && vlm_backward(ctx, l) == 0, "cross_entropy: %s", vlm_last_error());
    double *ref = calloc((size_t)(N * C), sizeof *ref), total = 0;
    int64_t kept = 0;
    for (int64_t i = 0; i < N; i++)
        kept += vlm_i32(labels)[i] != -1;
    for (int64_t i = 0; i < N; i++) {
        int32_t y = vlm_i32(labels)[i];
        if (y == -1) continue;
        const float *x = vlm_f32(logits) + i * C;
        double z = 0;
        for (int64_t j = 0; j < C; j++)
            z += exp(x[j]);
        for (int64_t j = 0; j < C; j++) {
            double t = (1 - e) * (j == y) + e / C, lp = x[j] - log(z);
            total -= t * lp;
            ref[i * C + j] = (exp(lp) - t) / kept;
        }
    }
    CHECK_NEAR(loss_of(l), total / kept, 1e-6);
    double err = 0;
    for (int64_t i = 0; logits->grad && i < N * C; i++)
        err = fmax(err, fabs(logits->grad[i] - ref[i]));
    CHECK(logits->grad && err < 1e-8, "cross_entropy grad max err %.3g", err);
    free(ref);
    vlm_ctx_free(ctx);
}

/* ---- siglip_loss ------------------------------------------------------------- */

/* txt = I, img = [[1,0],[0.6,0.8]], logit_scale = log 2, logit_bias = -1:
 * z = 2 P - 1 = [[1, 0.2], [-1, 0.6]]; diagonal labels give
 * loss = (sp(-1) + sp(0.2) + sp(-1) + sp(-0.6)) / 2 = 0.931075097 (sp = softplus).
 * With row 0 all positive the (0,1) term is sp(-0.2) = sp(0.2) - 0.2: 0.1 less. */
static void test_siglip_2x2(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    const int64_t s22[] = {2, 2}, s1[] = {1};
    vlm_tensor *txt = f32_of(ctx, 2, s22, (float[]){1, 0, 0, 1}, true);
    vlm_tensor *img = f32_of(ctx, 2, s22, (float[]){1, 0, 0.6f, 0.8f}, true);
    vlm_tensor *ls = f32_of(ctx, 1, s1, (float[]){(float)log(2.0)}, true);
    vlm_tensor *lb = f32_of(ctx, 1, s1, (float[]){-1}, true);
    vlm_tensor *l = vlm_siglip_loss(ctx, txt, img, ls, lb, NULL);
    CHECK_NEAR(loss_of(l), 0.9310750974519615, 1e-6);
    vlm_tensor *mask = vlm_tensor_from(ctx, VLM_U8, 2, s22, (uint8_t[]){1, 1, 0, 1});
    CHECK_NEAR(loss_of(vlm_siglip_loss(ctx, txt, img, ls, lb, mask)), 0.8310750974519615, 1e-6);

    /* grads of the diagonal case: G = dL/dz = -l sigmoid(-l z) / 2 */
    CHECK(vlm_backward(ctx, l) == 0, "siglip backward: %s", vlm_last_error());
    const double z[2][2] = {{1, 0.2}, {-1, 0.6}}, P[2][2] = {{1, 0.6}, {0, 0.8}};
    const double I[2][2] = {{1, 0}, {0.6, 0.8}};
    double G[2][2], gs = 0, gb = 0;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) {
            double lab = i == j ? 1 : -1;
            G[i][j] = -lab / (1 + exp(lab * z[i][j])) / 2;
            gs += 2 * G[i][j] * P[i][j];
            gb += G[i][j];
        }
    CHECK(ls->grad && lb->grad && txt->grad && img->grad, "siglip: missing grads");
    if (!ls->grad || !lb->grad || !txt->grad || !img->grad) goto out;
    CHECK_NEAR(ls->grad[0], gs, 1e-6);
    CHECK_NEAR(lb->grad[0], gb, 1e-6);
    for (int i = 0; i < 2; i++)
        for (int d = 0; d < 2; d++) { /* dtxt = s G img, dimg = s G^T txt (txt = I) */
            CHECK_NEAR(txt->grad[i * 2 + d], 2 * (G[i][0] * I[0][d] + G[i][1] * I[1][d]), 1e-6);
            CHECK_NEAR(img->grad[i * 2 + d], 2 * G[d][i], 1e-6);
        }
out:
    vlm_ctx_free(ctx);
}

/* Realistic trained values (scale 100, bias -50, |z| up to 150): no overflow. */
static void test_siglip_extreme(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    const int64_t s22[] = {2, 2}, s1[] = {1};
    vlm_tensor *txt = f32_of(ctx, 2, s22, (float[]){1, 0, 0, 1}, true);
    vlm_tensor *img = f32_of(ctx, 2, s22, (float[]){0, 1, 1, 0}, true);
    vlm_tensor *ls = f32_of(ctx, 1, s1, (float[]){(float)log(100.0)}, true);
    vlm_tensor *lb = f32_of(ctx, 1, s1, (float[]){-50}, true);
    /* z = [[-50, 50], [50, -50]]: every pair is maximally wrong, sp(50) ~ 50 each */
    vlm_tensor *l = vlm_siglip_loss(ctx, txt, img, ls, lb, NULL);
    CHECK_NEAR(loss_of(l), 4 * (50 + log1p(exp(-50.0))) / 2, 1e-6);
    CHECK(vlm_backward(ctx, l) == 0 && isfinite(ls->grad[0]) && isfinite(txt->grad[0]),
          "siglip extreme: non-finite grads");
    vlm_ctx_free(ctx);
}

/* ---- bad inputs -------------------------------------------------------------- */

static void expect_error(vlm_tensor *r, const char *what, const char *const *subs) {
    CHECK(r == NULL, "%s: expected NULL", what);
    for (; *subs; subs++)
        CHECK(strstr(vlm_last_error(), *subs), "%s: message '%s' lacks '%s'", what,
              vlm_last_error(), *subs);
}

static void test_bad_inputs(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    float x[20] = {0};
    vlm_tensor *logits = f32_of(ctx, 2, (int64_t[]){4, 5}, x, false);
    vlm_tensor *labels = i32_of(ctx, 4, (int32_t[]){0, 7, 1, 2});
    expect_error(vlm_cross_entropy(ctx, logits, labels, -100, 0), "label out of range",
                 (const char *[]){"cross_entropy", "label 7", "row 1", "[0, 5)", NULL});
    expect_error(vlm_cross_entropy(ctx, logits, i32_of(ctx, 3, (int32_t[]){0, 1, 2}), -100, 0),
                 "label count", (const char *[]){"cross_entropy", "[4, 5]", "[3]", NULL});
    expect_error(vlm_cross_entropy(ctx, logits, f32_of(ctx, 1, (int64_t[]){4}, x, false), -100, 0),
                 "f32 labels", (const char *[]){"cross_entropy", "labels", "i32", NULL});
    expect_error(
        vlm_cross_entropy(ctx, logits, i32_of(ctx, 4, (int32_t[]){0, 1, 2, 3}), -100, 1.5f),
        "smoothing", (const char *[]){"cross_entropy", "label_smoothing", NULL});

    const int64_t s35[] = {3, 5}, s45[] = {4, 5}, s1[] = {1};
    vlm_tensor *t = f32_of(ctx, 2, s35, x, false), *im = f32_of(ctx, 2, s45, x, false);
    vlm_tensor *ls = f32_of(ctx, 1, s1, x, false), *lb = f32_of(ctx, 1, s1, x, false);
    expect_error(vlm_siglip_loss(ctx, t, im, ls, lb, NULL), "siglip N != M, no mask",
                 (const char *[]){"siglip_loss", "[3, 5]", "[4, 5]", NULL});
    vlm_tensor *m34 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){3, 4});
    vlm_tensor *m43 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){4, 3});
    vlm_tensor *mi = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){3, 4});
    CHECK(vlm_siglip_loss(ctx, t, im, ls, lb, m34) != NULL, "siglip [3,4] mask: %s",
          vlm_last_error());
    expect_error(vlm_siglip_loss(ctx, t, im, ls, lb, m43), "siglip mask shape",
                 (const char *[]){"siglip_loss", "match [4, 3]", NULL});
    expect_error(vlm_siglip_loss(ctx, t, im, ls, lb, mi), "siglip i32 mask",
                 (const char *[]){"siglip_loss", "match", "u8", NULL});
    expect_error(vlm_siglip_loss(ctx, t, f32_of(ctx, 2, (int64_t[]){3, 4}, x, false), ls, lb, NULL),
                 "siglip D mismatch", (const char *[]){"siglip_loss", "[3, 4]", NULL});
    expect_error(vlm_siglip_loss(ctx, t, t, f32_of(ctx, 1, (int64_t[]){2}, x, false), lb, NULL),
                 "siglip scale shape", (const char *[]){"siglip_loss", "logit_scale", NULL});
    vlm_ctx_free(ctx);
}

int main(void) {
    test_ce_uniform();
    test_ce_smoothing();
    test_ce_ignore();
    test_ce_large_logits();
    test_ce_large();
    test_siglip_2x2();
    test_siglip_extreme();
    test_bad_inputs();
    return TEST_DONE();
}
