/* Gradient-check cases: add, sub, mul, div, scale.
 *
 * Broadcast cases cover the three kernel layouts (same shape, suffix operand,
 * general strided walk), either operand stretched, both stretched at once, a
 * [1] scalar, size-1 dims and odd sizes. Default tolerances throughout. */
#include "gc.h"

static vlm_tensor *f_scale(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_scale(ctx, x[0], -1.7f);
}

static vlm_tensor *f_add(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_add(ctx, x[0], x[1]);
}

static vlm_tensor *f_sub(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_sub(ctx, x[0], x[1]);
}

static vlm_tensor *f_mul(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_mul(ctx, x[0], x[1]);
}

static vlm_tensor *f_div(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_div(ctx, x[0], x[1]);
}

/* the same tensor as both operands: both contributions must land in its grad */
static vlm_tensor *f_add_self(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_add(ctx, x[0], x[0]);
}

static vlm_tensor *f_mul_self(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_mul(ctx, x[0], x[0]);
}

/* Denominators are drawn from [0.5, 2] or [-2, -0.5] so 1/b stays smooth over
 * the finite-difference step. x / x is not a case: its grad is 0, so a scaled
 * backward cannot be told apart (test_elementwise checks it instead). */

static const gc_case cases[] = {
    {"scale", "[3,5]", f_scale, NULL, 1, {{2, {3, 5}}}},
    {"scale", "[1]", f_scale, NULL, 1, {{1, {1}}}},
    {"scale", "[2,3,1,7] odd sizes", f_scale, NULL, 1, {{4, {2, 3, 1, 7}}}},

    {"add", "[3,5] + [3,5]", f_add, NULL, 2, {{2, {3, 5}}, {2, {3, 5}}}},
    {"add", "[2,3,4] + [4] suffix", f_add, NULL, 2, {{3, {2, 3, 4}}, {1, {4}}}},
    {"add", "[2,1,4] + [2,3,4] a stretched", f_add, NULL, 2, {{3, {2, 1, 4}}, {3, {2, 3, 4}}}},
    {"add", "[1] + [3,2] scalar", f_add, NULL, 2, {{1, {1}}, {2, {3, 2}}}},
    {"add", "[7,1] + [1,13] outer", f_add, NULL, 2, {{2, {7, 1}}, {2, {1, 13}}}},
    {"add", "[2,1,13,1] + [3,1,7] 4-D", f_add, NULL, 2, {{4, {2, 1, 13, 1}}, {3, {3, 1, 7}}}},
    {"add", "x + x", f_add_self, NULL, 1, {{2, {3, 7}}}},

    {"sub", "[2,3,1,7] same", f_sub, NULL, 2, {{4, {2, 3, 1, 7}}, {4, {2, 3, 1, 7}}}},
    {"sub", "[2,3,4] - [4]", f_sub, NULL, 2, {{3, {2, 3, 4}}, {1, {4}}}},
    {"sub", "[4] - [2,3,4]", f_sub, NULL, 2, {{1, {4}}, {3, {2, 3, 4}}}},
    {"sub", "[2,1,4] - [2,3,4]", f_sub, NULL, 2, {{3, {2, 1, 4}}, {3, {2, 3, 4}}}},
    {"sub", "[2,3,4] - [2,1,4]", f_sub, NULL, 2, {{3, {2, 3, 4}}, {3, {2, 1, 4}}}},
    {"sub", "[1] - [3,2]", f_sub, NULL, 2, {{1, {1}}, {2, {3, 2}}}},
    {"sub", "[13,1] - [1,7]", f_sub, NULL, 2, {{2, {13, 1}}, {2, {1, 7}}}},

    {"mul", "[3,5] * [3,5]", f_mul, NULL, 2, {{2, {3, 5}}, {2, {3, 5}}}},
    {"mul", "[2,3,4] * [4]", f_mul, NULL, 2, {{3, {2, 3, 4}}, {1, {4}}}},
    {"mul", "[2,1,4] * [2,3,4] a stretched", f_mul, NULL, 2, {{3, {2, 1, 4}}, {3, {2, 3, 4}}}},
    {"mul", "[2,3,4] * [2,3,1] inner stretched", f_mul, NULL, 2, {{3, {2, 3, 4}}, {3, {2, 3, 1}}}},
    {"mul", "[3,2] * [1] scalar", f_mul, NULL, 2, {{2, {3, 2}}, {1, {1}}}},
    {"mul", "[7,1,3] * [13,1] both stretched", f_mul, NULL, 2, {{3, {7, 1, 3}}, {2, {13, 1}}}},
    /* longer than one 1024-element tile and one 256-column reduction block */
    {"mul", "[1030] * [1] long row", f_mul, NULL, 2, {{1, {1030}}, {1, {1}}}},
    {"mul", "[2,300] * [300] column blocks", f_mul, NULL, 2, {{2, {2, 300}}, {1, {300}}}},
    {"mul", "x * x", f_mul_self, NULL, 1, {{3, {2, 7, 3}}}},

    {"div", "[3,5] / [3,5]", f_div, NULL, 2, {{2, {3, 5}}, {2, {3, 5}, 0.5f, 2.0f}}},
    {"div", "[2,3,4] / [4]", f_div, NULL, 2, {{3, {2, 3, 4}}, {1, {4}, 0.5f, 2.0f}}},
    {"div", "[4] / [2,3,4]", f_div, NULL, 2, {{1, {4}}, {3, {2, 3, 4}, 0.5f, 2.0f}}},
    {"div", "[2,1,4] / [2,3,4]", f_div, NULL, 2, {{3, {2, 1, 4}}, {3, {2, 3, 4}, 0.5f, 2.0f}}},
    {"div", "[2,3,4] / [2,1,4]", f_div, NULL, 2, {{3, {2, 3, 4}}, {3, {2, 1, 4}, 0.5f, 2.0f}}},
    {"div", "[1] / [3,2]", f_div, NULL, 2, {{1, {1}}, {2, {3, 2}, 0.5f, 2.0f}}},
    {"div", "[3,2] / [1] negative", f_div, NULL, 2, {{2, {3, 2}}, {1, {1}, -2.0f, -0.5f}}},
    {"div", "[13,1] / [1,7]", f_div, NULL, 2, {{2, {13, 1}}, {2, {1, 7}, -2.0f, -0.5f}}},
};
GC_REGISTER(cases)
