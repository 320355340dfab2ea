/* Gradient-check cases: gelu, silu, silu_mul, sigmoid, tanh, exp, log, relu,
 * dropout.
 *
 * Default tolerances throughout. Wider input ranges ([-4, 4], [-6, 6]) reach
 * the tails where the tanh/sigmoid terms saturate; log's inputs stay positive;
 * relu's stay at least 0.05 from its kink (the FD step is 1e-2). dropout's
 * identity cases (p = 0, !training) record no node and are tested in
 * test_activation.c. */
#include "gc.h"

#define UNARY_FN(fname, call)                                       \
    static vlm_tensor *fname(vlm_ctx *ctx, vlm_tensor **x, void *u) { \
        (void)u;                                                    \
        return call(ctx, x[0]);                                     \
    }
UNARY_FN(f_gelu, vlm_gelu)
UNARY_FN(f_silu, vlm_silu)
UNARY_FN(f_sigmoid, vlm_sigmoid)
UNARY_FN(f_tanh, vlm_tanh)
UNARY_FN(f_exp, vlm_exp)
UNARY_FN(f_log, vlm_log)
UNARY_FN(f_relu, vlm_relu)

/* p = 0.3 in training: the checker reseeds the context before every forward,
 * so each one draws the same mask. */
static vlm_tensor *f_dropout(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_dropout(ctx, x[0], 0.3f, true);
}

static vlm_tensor *f_silu_mul(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_silu_mul(ctx, x[0], x[1]);
}

/* silu_mul(x, x): one tensor as gate and up, both grads land in one buffer */
static vlm_tensor *f_silu_mul_same(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_silu_mul(ctx, x[0], x[0]);
}

/* f(x) * x: the activation's grad arrives scaled per element, and x gets a
 * second contribution through mul (checks accumulation into a shared grad) */
static vlm_tensor *f_gelu_times_x(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_mul(ctx, vlm_gelu(ctx, x[0]), x[0]);
}

static const gc_case cases[] = {
    {"gelu", "[3,5]", f_gelu, NULL, 1, {{2, {3, 5}}}},
    {"gelu", "[2,3,4] in [-4,4]", f_gelu, NULL, 1, {{3, {2, 3, 4}, -4.0f, 4.0f}}},
    {"gelu", "[13] in [-6,6] tails", f_gelu, NULL, 1, {{1, {13}, -6.0f, 6.0f}}},
    {"gelu", "gelu(x) * x [2,1,7]", f_gelu_times_x, NULL, 1, {{3, {2, 1, 7}, -3.0f, 3.0f}}},

    {"silu", "[3,5]", f_silu, NULL, 1, {{2, {3, 5}}}},
    {"silu", "[2,3,4] in [-4,4]", f_silu, NULL, 1, {{3, {2, 3, 4}, -4.0f, 4.0f}}},
    {"silu", "[13] in [-8,8]", f_silu, NULL, 1, {{1, {13}, -8.0f, 8.0f}}},

    {"silu_mul", "[3,5] x [3,5]", f_silu_mul, NULL, 2, {{2, {3, 5}}, {2, {3, 5}}}},
    {"silu_mul", "[2,3,4] in [-6,6]", f_silu_mul, NULL, 2,
     {{3, {2, 3, 4}, -6.0f, 6.0f}, {3, {2, 3, 4}, -2.0f, 2.0f}}},
    {"silu_mul", "gate = up [13]", f_silu_mul_same, NULL, 1, {{1, {13}, -4.0f, 4.0f}}},

    {"sigmoid", "[3,5]", f_sigmoid, NULL, 1, {{2, {3, 5}}}},
    {"sigmoid", "[2,3,4] in [-6,6]", f_sigmoid, NULL, 1, {{3, {2, 3, 4}, -6.0f, 6.0f}}},
    {"sigmoid", "[7,1]", f_sigmoid, NULL, 1, {{2, {7, 1}}}},

    {"tanh", "[3,5]", f_tanh, NULL, 1, {{2, {3, 5}}}},
    {"tanh", "[2,3,4] in [-3,3]", f_tanh, NULL, 1, {{3, {2, 3, 4}, -3.0f, 3.0f}}},
    {"tanh", "[1,13]", f_tanh, NULL, 1, {{2, {1, 13}}}},

    {"exp", "[3,5]", f_exp, NULL, 1, {{2, {3, 5}}}},
    {"exp", "[2,3,4] in [-3,2]", f_exp, NULL, 1, {{3, {2, 3, 4}, -3.0f, 2.0f}}},
    {"exp", "[7]", f_exp, NULL, 1, {{1, {7}}}},

    {"log", "[3,5] in [0.5,2]", f_log, NULL, 1, {{2, {3, 5}, 0.5f, 2.0f}}},
    {"log", "[2,3,4] in [0.3,5]", f_log, NULL, 1, {{3, {2, 3, 4}, 0.3f, 5.0f}}},
    {"log", "[13,1] in [1,10]", f_log, NULL, 1, {{2, {13, 1}, 1.0f, 10.0f}}},

    {"relu", "[3,5]", f_relu, NULL, 1, {{2, {3, 5}, 0, 0, 0.05f}}},
    {"relu", "[2,3,4] in [-2,2]", f_relu, NULL, 1, {{3, {2, 3, 4}, -2.0f, 2.0f, 0.05f}}},
    {"relu", "[13]", f_relu, NULL, 1, {{1, {13}, 0, 0, 0.05f}}},

    {"dropout", "[3,5] p 0.3", f_dropout, NULL, 1, {{2, {3, 5}}}},
    {"dropout", "[2,3,7] p 0.3", f_dropout, NULL, 1, {{3, {2, 3, 7}}}},
    {"dropout", "[13] p 0.3", f_dropout, NULL, 1, {{1, {13}}}},
};
GC_REGISTER(cases)
