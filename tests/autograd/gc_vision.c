/* Gradient-check cases: patchify, pixel_shuffle. */
#include "gc.h"

static vlm_tensor *f_patchify(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    return vlm_patchify(ctx, x[0], *(const int *)u);
}

static vlm_tensor *f_pixel_shuffle(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    return vlm_pixel_shuffle(ctx, x[0], *(const int *)u);
}

static int k1 = 1, k2 = 2, k3 = 3, k4 = 4;

static const gc_case cases[] = {
    {"patchify", "[1,1,4,4] p 2", f_patchify, &k2, 1, {{4, {1, 1, 4, 4}}}},
    {"patchify", "[2,3,6,4] p 2", f_patchify, &k2, 1, {{4, {2, 3, 6, 4}}}},
    {"patchify", "[1,2,3,3] p 3 one patch", f_patchify, &k3, 1, {{4, {1, 2, 3, 3}}}},
    {"patchify", "[1,1,2,3] p 1", f_patchify, &k1, 1, {{4, {1, 1, 2, 3}}}},
    {"patchify", "[2,1,9,6] p 3", f_patchify, &k3, 1, {{4, {2, 1, 9, 6}}}},
    {"pixel_shuffle", "[1,16,3] s 2", f_pixel_shuffle, &k2, 1, {{3, {1, 16, 3}}}},
    {"pixel_shuffle", "[2,36,1] s 3", f_pixel_shuffle, &k3, 1, {{3, {2, 36, 1}}}},
    {"pixel_shuffle", "[1,36,2] s 2 odd grid 3x3", f_pixel_shuffle, &k2, 1, {{3, {1, 36, 2}}}},
    {"pixel_shuffle", "[2,16,2] s 4 one token", f_pixel_shuffle, &k4, 1, {{3, {2, 16, 2}}}},
    {"pixel_shuffle", "[1,4,5] s 1 identity", f_pixel_shuffle, &k1, 1, {{3, {1, 4, 5}}}},
};
GC_REGISTER(cases)
