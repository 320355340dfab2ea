/* Gradient-check cases: layernorm, rmsnorm, l2_normalize, softmax, log_softmax. */
#include "gc.h"

static vlm_tensor *f_layernorm(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_layernorm(ctx, x[0], x[1], x[2], 1e-5f);
}

static vlm_tensor *f_layernorm_nobias(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_layernorm(ctx, x[0], x[1], NULL, 1e-6f);
}

static vlm_tensor *f_rmsnorm(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_rmsnorm(ctx, x[0], x[1], 1e-5f);
}

static const float EPS_TINY = 1e-12f, EPS_CLAMP = 10.0f;

static vlm_tensor *f_l2_normalize(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    return vlm_l2_normalize(ctx, x[0], *(const float *)u);
}

static vlm_tensor *f_softmax(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_softmax(ctx, x[0]);
}

static vlm_tensor *f_log_softmax(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_log_softmax(ctx, x[0]);
}

/* clang-format off */
static const gc_case cases[] = {
    {"layernorm", "[3,7] w b", f_layernorm, NULL, 3, {{2, {3, 7}}, {1, {7}}, {1, {7}}}},
    {"layernorm", "[3,7] w, no bias", f_layernorm_nobias, NULL, 2, {{2, {3, 7}}, {1, {7}}}},
    {"layernorm", "[2,3,5] w b, x in [-3,5]", f_layernorm, NULL, 3,
     {{3, {2, 3, 5}, -3, 5}, {1, {5}}, {1, {5}}}},

    {"rmsnorm", "[3,7] w", f_rmsnorm, NULL, 2, {{2, {3, 7}}, {1, {7}}}},
    {"rmsnorm", "[2,2,5] w", f_rmsnorm, NULL, 2, {{3, {2, 2, 5}}, {1, {5}}}},

    {"l2_normalize", "[3,5] eps 1e-12", f_l2_normalize, (void *)&EPS_TINY, 1, {{2, {3, 5}}}},
    {"l2_normalize", "[2,3,7] eps 1e-12", f_l2_normalize, (void *)&EPS_TINY, 1,
     {{3, {2, 3, 7}}}},
    {"l2_normalize", "[3,5] clamped (eps 10 > norm)", f_l2_normalize, (void *)&EPS_CLAMP, 1,
     {{2, {3, 5}}}},

    {"softmax", "[3,5]", f_softmax, NULL, 1, {{2, {3, 5}}}},
    {"softmax", "[2,3,7] in [-4,4]", f_softmax, NULL, 1, {{3, {2, 3, 7}, -4, 4}}},

    {"log_softmax", "[3,5]", f_log_softmax, NULL, 1, {{2, {3, 5}}}},
    {"log_softmax", "[2,1,3,7] in [-4,4]", f_log_softmax, NULL, 1, {{4, {2, 1, 3, 7}, -4, 4}}},
};
/* clang-format on */
GC_REGISTER(cases)
