/* Gradient-check cases: add, sub, mul, div, scale. */
#include "gc.h"

static vlm_tensor *f_scale(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_scale(ctx, x[0], -1.7f);
}

static const gc_case cases[] = {
    {"scale", "[3,5]", f_scale, NULL, 1, {{2, {3, 5}}}},
    {"scale", "[1]", f_scale, NULL, 1, {{1, {1}}}},
    {"scale", "[2,3,1,7] odd sizes", f_scale, NULL, 1, {{4, {2, 3, 1, 7}}}},
};
GC_REGISTER(cases)
