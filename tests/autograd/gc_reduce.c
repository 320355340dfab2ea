/* Gradient-check cases: sum_last, mean_last, sum_all, mean_all, masked_mean. */
#include "gc.h"

static vlm_tensor *f_sum_last(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_sum_last(ctx, x[0]);
}

static vlm_tensor *f_mean_last(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_mean_last(ctx, x[0]);
}

static vlm_tensor *f_sum_all(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_sum_all(ctx, x[0]);
}

static vlm_tensor *f_mean_all(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_mean_all(ctx, x[0]);
}

/* The mask is [B, T] u8 from static data matching x's first two dims. */
static vlm_tensor *f_masked_mean(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    int64_t shape[2] = {x[0]->shape[0], x[0]->shape[1]};
    vlm_tensor *mask = vlm_tensor_from(ctx, VLM_U8, 2, shape, u);
    return vlm_masked_mean(ctx, x[0], mask);
}

/* rows: all valid, none valid, alternating */
static uint8_t mask_3x4[] = {1, 1, 1, 1, 0, 0, 0, 0, 1, 0, 1, 0};
/* T = 1: one valid row, one empty row */
static uint8_t mask_2x1[] = {1, 0};
/* B = 1, one valid token among five, a non-1 byte counting as valid */
static uint8_t mask_1x5[] = {0, 0, 7, 0, 0};
static uint8_t mask_2x7[] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 0, 0, 1, 0};

static const gc_case cases[] = {
    {"sum_last", "[3,5]", f_sum_last, NULL, 1, {{2, {3, 5}}}},
    {"sum_last", "[7] 1-D -> [1]", f_sum_last, NULL, 1, {{1, {7}}}},
    {"sum_last", "[2,1,3,1] size-1 last dim", f_sum_last, NULL, 1, {{4, {2, 1, 3, 1}}}},
    {"sum_last", "[1,4,9]", f_sum_last, NULL, 1, {{3, {1, 4, 9}}}},
    {"mean_last", "[3,5]", f_mean_last, NULL, 1, {{2, {3, 5}}}},
    {"mean_last", "[7] 1-D -> [1]", f_mean_last, NULL, 1, {{1, {7}}}},
    {"mean_last", "[2,1,3,1] size-1 last dim", f_mean_last, NULL, 1, {{4, {2, 1, 3, 1}}}},
    {"mean_last", "[1,4,9]", f_mean_last, NULL, 1, {{3, {1, 4, 9}}}},
    {"sum_all", "[4,3]", f_sum_all, NULL, 1, {{2, {4, 3}}}},
    {"sum_all", "[1]", f_sum_all, NULL, 1, {{1, {1}}}},
    {"sum_all", "[2,3,1,5]", f_sum_all, NULL, 1, {{4, {2, 3, 1, 5}}}},
    {"mean_all", "[5,7]", f_mean_all, NULL, 1, {{2, {5, 7}}}},
    {"mean_all", "[1]", f_mean_all, NULL, 1, {{1, {1}}}},
    {"mean_all", "[3,1,4]", f_mean_all, NULL, 1, {{3, {3, 1, 4}}}},
    {"masked_mean", "[3,4,5] rows all/none/half valid", f_masked_mean, mask_3x4, 1,
     {{3, {3, 4, 5}}}},
    {"masked_mean", "[2,1,3] T=1, one empty row", f_masked_mean, mask_2x1, 1, {{3, {2, 1, 3}}}},
    {"masked_mean", "[1,5,1] one valid token, D=1", f_masked_mean, mask_1x5, 1,
     {{3, {1, 5, 1}}}},
    {"masked_mean", "[2,7,3] odd T", f_masked_mean, mask_2x7, 1, {{3, {2, 7, 3}}}},
};
GC_REGISTER(cases)
