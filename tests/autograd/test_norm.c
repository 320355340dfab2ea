/* test_norm.c - layernorm, rmsnorm, l2_normalize, softmax, log_softmax:
 * known rows, numerically hard rows, backward against double loops on
 * tensors large enough for the threaded paths, bad inputs. */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static float frand(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (float)((z ^ (z >> 31)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static vlm_tensor *tensor_of(vlm_ctx *ctx, int ndim, const int64_t *shape, const float *v) {
    return vlm_tensor_from(ctx, VLM_F32, ndim, shape, v);
}

static vlm_tensor *rand_tensor(vlm_ctx *ctx, int ndim, const int64_t *shape, bool grad) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++)
        vlm_f32(t)[i] = frand();
    t->requires_grad = grad;
    return t;
}

static double max_err(const float *a, const double *b, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / fmax(1.0, fabs(b[i]));
        if (!(d <= e)) e = d;
    }
    return e;
}

/* ---- known rows ------------------------------------------------------------ */

static void test_layernorm_known(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    /* row [1,2,3,4]: mean 2.5, var 1.25; then the same row shifted by 1e4,
     * which a one-pass E[x^2] - E[x]^2 in f32 would get badly wrong */
    float xv[] = {1, 2, 3, 4, 10001, 10002, 10003, 10004};
    float wv[] = {1, 2, -1, 0.5f}, bv[] = {0, 1, 2, 3};
    vlm_tensor *x = tensor_of(ctx, 2, (int64_t[]){2, 4}, xv);
    vlm_tensor *w = tensor_of(ctx, 1, (int64_t[]){4}, wv),
               *b = tensor_of(ctx, 1, (int64_t[]){4}, bv);
    vlm_tensor *y = vlm_layernorm(ctx, x, w, b, 1e-5f), *y0 = vlm_layernorm(ctx, x, w, NULL, 0);
    CHECK(y && y0, "layernorm: %s", vlm_last_error());
    if (!y || !y0) goto out;
    double rs = 1 / sqrt(1.25 + 1e-5), rs0 = 1 / sqrt(1.25);
    for (int r = 0; r < 2; r++)
        for (int j = 0; j < 4; j++) {
            double xh = (j + 1 - 2.5);
            CHECK_NEAR(vlm_f32(y)[r * 4 + j], xh * rs * wv[j] + bv[j], 2e-6);
            CHECK_NEAR(vlm_f32(y0)[r * 4 + j], xh * rs0 * wv[j], 2e-6);
        }
out:
    vlm_ctx_free(ctx);
}

static void test_rmsnorm_l2_known(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    float xv[] = {1, 2, 3, 4};
    float wv[] = {1, 2, -1, 0.5f};
    vlm_tensor *x = tensor_of(ctx, 1, (int64_t[]){4}, xv),
               *w = tensor_of(ctx, 1, (int64_t[]){4}, wv);
    vlm_tensor *y = vlm_rmsnorm(ctx, x, w, 1e-5f);
    CHECK(y != NULL, "rmsnorm: %s", vlm_last_error());
    for (int j = 0; y && j < 4; j++) /* mean(x^2) = 30 / 4 */
        CHECK_NEAR(vlm_f32(y)[j], wv[j] * xv[j] / sqrt(7.5 + 1e-5), 1e-6);

    /* [3,4] -> [0.6, 0.8]; a zero row stays zero; a row under eps is x / eps */
    float lv[] = {3, 4, 0, 0, 1e-7f, -2e-7f};
    vlm_tensor *l = vlm_l2_normalize(ctx, tensor_of(ctx, 2, (int64_t[]){3, 2}, lv), 1e-6f);
    CHECK(l != NULL, "l2_normalize: %s", vlm_last_error());
    if (l) {
        const float *o = vlm_f32(l);
        CHECK_NEAR(o[0], 0.6, 1e-7);
        CHECK_NEAR(o[1], 0.8, 1e-7);
        CHECK(o[2] == 0 && o[3] == 0, "zero row gave %g %g", o[2], o[3]);
        CHECK_NEAR(o[4], 0.1, 1e-6);
        CHECK_NEAR(o[5], -0.2, 1e-6);
    }
    vlm_ctx_free(ctx);
}

static void test_softmax_known(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    /* [1,2,3], the same shifted by 1000 (exp would overflow without the max), [-1000, 0] */
    float xv[] = {1, 2, 3, 1001, 1002, 1003};
    vlm_tensor *x = tensor_of(ctx, 2, (int64_t[]){2, 3}, xv);
    vlm_tensor *s = vlm_softmax(ctx, x), *ls = vlm_log_softmax(ctx, x);
    CHECK(s && ls, "softmax: %s", vlm_last_error());
    double z = exp(1.0) + exp(2.0) + exp(3.0);
    for (int r = 0; s && ls && r < 2; r++)
        for (int j = 0; j < 3; j++) {
            CHECK_NEAR(vlm_f32(s)[r * 3 + j], exp(j + 1.0) / z, 1e-7);
            CHECK_NEAR(vlm_f32(ls)[r * 3 + j], j + 1.0 - log(z), 1e-6);
        }
    vlm_tensor *e = vlm_log_softmax(ctx, tensor_of(ctx, 1, (int64_t[]){2}, (float[]){-1000, 0}));
    CHECK(e && vlm_f32(e)[0] == -1000.0f && vlm_f32(e)[1] == 0.0f, "log_softmax [-1000, 0]");
    vlm_ctx_free(ctx);
}

/* ---- backward against double loops ------------------------------------------- */

/* Reference layernorm (rms = false) or rmsnorm backward in double; with
 * g = dy w:  dx = rstd (g - mean(g) - xhat mean(g xhat)) for layernorm,
 * dx = r (g - xhat mean(g xhat)) with xhat = x r for rmsnorm. */
static void norm_backward_ref(bool rms, const float *x, const float *w, const float *dy,
                              int64_t rows, int64_t D, double eps, double *dx, double *dw,
                              double *db) {
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * D, *gr = dy + r * D;
        double mu = 0, var = 0, mg = 0, mgx = 0;
        for (int64_t j = 0; j < D; j++)
            mu += rms ? 0 : xr[j];
        mu /= (double)D;
        for (int64_t j = 0; j < D; j++)
            var += (xr[j] - mu) * (xr[j] - mu);
        double rs = 1 / sqrt(var / (double)D + eps);
        for (int64_t j = 0; j < D; j++) {
            double xh = (xr[j] - mu) * rs, g = (double)gr[j] * w[j];
            mg += g;
            mgx += g * xh;
            dw[j] += gr[j] * xh;
            db[j] += gr[j];
        }
        mg = rms ? 0 : mg / (double)D;
        mgx /= (double)D;
        for (int64_t j = 0; j < D; j++)
            dx[r * D + j] = rs * ((double)gr[j] * w[j] - mg - (xr[j] - mu) * rs * mgx);
    }
}

/* [64, 640]: enough elements for the threaded row and column loops. Grads
 * must match the reference and be bit-identical for 1 and 2 threads. */
static void check_norm_backward(bool rms) {
    const char *op = rms ? "rmsnorm" : "layernorm";
    const int64_t rows = 64, D = 640;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x = rand_tensor(ctx, 3, (int64_t[]){4, 16, D}, true);
    for (int64_t i = 0; i < x->numel; i++)
        vlm_f32(x)[i] = 3 * vlm_f32(x)[i] + 0.5f;
    vlm_tensor *w = rand_tensor(ctx, 1, &D, true), *b = rand_tensor(ctx, 1, &D, true);
    vlm_tensor *dy = rand_tensor(ctx, 3, x->shape, false);
    double *dx = calloc((size_t)(rows * D), sizeof *dx), *dw = calloc((size_t)D, sizeof *dw);
    double *db = calloc((size_t)D, sizeof *db);
    norm_backward_ref(rms, vlm_f32(x), vlm_f32(w), vlm_f32(dy), rows, D, 1e-5, dx, dw, db);
    float *first = malloc((size_t)(rows * D + 2 * D) * sizeof *first);
    for (int threads = 1; threads <= 2; threads++) {
        vlm_set_num_threads(threads);
        x->grad = w->grad = b->grad = NULL;
        vlm_tensor *y = rms ? vlm_rmsnorm(ctx, x, w, 1e-5f) : vlm_layernorm(ctx, x, w, b, 1e-5f);
        CHECK(y && vlm_backward_from(ctx, 0, y, vlm_f32(dy)) == 0, "%s: %s", op, vlm_last_error());
        if (!y) break;
        double ex = max_err(x->grad, dx, rows * D), ew = max_err(w->grad, dw, D);
        double eb = rms ? 0 : max_err(b->grad, db, D);
        CHECK(ex < 1e-5 && ew < 1e-5 && eb < 1e-5, "%s grads max err dx %.3g dw %.3g db %.3g", op,
              ex, ew, eb);
        float *now = malloc((size_t)(rows * D + 2 * D) * sizeof *now);
        memcpy(now, x->grad, (size_t)(rows * D) * sizeof(float));
        memcpy(now + rows * D, w->grad, (size_t)D * sizeof(float));
        memcpy(now + rows * D + D, rms ? w->grad : b->grad, (size_t)D * sizeof(float));
        if (threads == 1)
            memcpy(first, now, (size_t)(rows * D + 2 * D) * sizeof(float));
        else
            CHECK(memcmp(first, now, (size_t)(rows * D + 2 * D) * sizeof(float)) == 0,
                  "%s grads differ between 1 and 2 threads", op);
        free(now);
    }
    vlm_set_num_threads(0);
    free(first);
    free(dx);
    free(dw);
    free(db);
    vlm_ctx_free(ctx);
}

/* softmax dx = y (g - sum g y); log_softmax dx = g - exp(y) sum g. */
static void check_softmax_backward(bool log_form) {
    const char *op = log_form ? "log_softmax" : "softmax";
    const int64_t rows = 48, D = 700;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){rows, D}, true);
    for (int64_t i = 0; i < x->numel; i++)
        vlm_f32(x)[i] *= 6;
    vlm_tensor *dy = rand_tensor(ctx, 2, x->shape, false);
    vlm_tensor *y = log_form ? vlm_log_softmax(ctx, x) : vlm_softmax(ctx, x);
    CHECK(y && vlm_backward_from(ctx, 0, y, vlm_f32(dy)) == 0, "%s: %s", op, vlm_last_error());
    if (!y) goto out;
    double *ry = malloc((size_t)x->numel * sizeof *ry),
           *rdx = malloc((size_t)x->numel * sizeof *rdx);
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D, *g = vlm_f32(dy) + r * D;
        double m = -INFINITY, z = 0, gp = 0, gs = 0;
        for (int64_t j = 0; j < D; j++)
            m = fmax(m, xr[j]);
        for (int64_t j = 0; j < D; j++)
            z += exp(xr[j] - m);
        for (int64_t j = 0; j < D; j++) {
            double p = exp(xr[j] - m) / z;
            ry[r * D + j] = log_form ? xr[j] - m - log(z) : p;
            gp += g[j] * p;
            gs += g[j];
        }
        for (int64_t j = 0; j < D; j++) {
            double p = exp(xr[j] - m) / z;
            rdx[r * D + j] = log_form ? g[j] - p * gs : p * (g[j] - gp);
        }
    }
    double ey = max_err(vlm_f32(y), ry, x->numel), ex = max_err(x->grad, rdx, x->numel);
    CHECK(ey < 1e-6 && ex < 1e-6, "%s max err y %.3g dx %.3g", op, ey, ex);
    free(ry);
    free(rdx);
out:
    vlm_ctx_free(ctx);
}

/* l2_normalize: dx = (g - y (y . g)) / ||x||, and g / eps on a clamped row. */
static void test_l2_backward(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    float xv[] = {3, 4, 1e-7f, -2e-7f}, gv[] = {0.5f, -1, 2, 3};
    vlm_tensor *x = tensor_of(ctx, 2, (int64_t[]){2, 2}, xv);
    x->requires_grad = true;
    vlm_tensor *y = vlm_l2_normalize(ctx, x, 1e-6f);
    CHECK(y && vlm_backward_from(ctx, 0, y, gv) == 0, "l2_normalize: %s", vlm_last_error());
    if (!y) goto out;
    double yg = 0.6 * 0.5 + 0.8 * -1;
    CHECK_NEAR(x->grad[0], (0.5 - 0.6 * yg) / 5, 1e-7);
    CHECK_NEAR(x->grad[1], (-1 - 0.8 * yg) / 5, 1e-7);
    CHECK_NEAR(x->grad[2], 2 / 1e-6, 1e-6);
    CHECK_NEAR(x->grad[3], 3 / 1e-6, 1e-6);
out:
    vlm_ctx_free(ctx);
}

/* ---- bad inputs -------------------------------------------------------------- */

static void expect_error(vlm_tensor *r, const char *op, const char *detail) {
    CHECK(r == NULL, "%s: expected NULL", op);
    CHECK(strstr(vlm_last_error(), op) && strstr(vlm_last_error(), detail),
          "%s: message '%s' should name the op and '%s'", op, vlm_last_error(), detail);
}

static void test_bad_inputs(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){3, 5}, false);
    vlm_tensor *w4 = rand_tensor(ctx, 1, (int64_t[]){4}, false);
    vlm_tensor *w5 = rand_tensor(ctx, 1, (int64_t[]){5}, false);
    vlm_tensor *xi = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){3, 5});
    expect_error(vlm_layernorm(ctx, x, w4, w5, 1e-5f), "layernorm", "weight [4]");
    expect_error(vlm_layernorm(ctx, x, w5, w4, 1e-5f), "layernorm", "bias [4]");
    expect_error(vlm_layernorm(ctx, xi, w5, NULL, 1e-5f), "layernorm", "i32");
    expect_error(vlm_rmsnorm(ctx, x, w4, 1e-5f), "rmsnorm", "[3, 5]");
    expect_error(vlm_l2_normalize(ctx, xi, 1e-6f), "l2_normalize", "i32");
    expect_error(vlm_softmax(ctx, xi), "softmax", "i32");
    expect_error(vlm_log_softmax(ctx, xi), "log_softmax", "i32");
    vlm_set_error("earlier failure");
    CHECK(vlm_softmax(ctx, NULL) == NULL && vlm_layernorm(ctx, NULL, w5, NULL, 1e-5f) == NULL,
          "NULL input must give NULL");
    CHECK(strcmp(vlm_last_error(), "earlier failure") == 0, "NULL input overwrote the error");
    vlm_ctx_free(ctx);
}

int main(void) {
    test_layernorm_known();
    test_rmsnorm_l2_known();
    test_softmax_known();
    check_norm_backward(false);
    check_norm_backward(true);
    check_softmax_backward(false);
    check_softmax_backward(true);
    test_l2_backward();
    test_bad_inputs();
    return TEST_DONE();
}
