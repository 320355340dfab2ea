/* Gradient-check cases: matmul, linear, linear_residual, embedding. */
#include "gc.h"

typedef struct {
    bool ta, tb;
} mm_flags;

static const mm_flags NN = {false, false}, TN = {true, false}, NT = {false, true},
                      TT = {true, true};

static vlm_tensor *f_matmul(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const mm_flags *f = u;
    return vlm_matmul(ctx, x[0], x[1], f->ta, f->tb);
}

/* x x^T: both operands are one tensor, so its grad gets two contributions. */
static vlm_tensor *f_gram(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_matmul(ctx, x[0], x[0], false, true);
}

static vlm_tensor *f_linear(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_linear(ctx, x[0], x[1], x[2]);
}

static vlm_tensor *f_linear_nobias(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_linear(ctx, x[0], x[1], NULL);
}

/* x[0] + x[1] W^T + b: the residual is the first input */
static vlm_tensor *f_linear_residual(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_linear_residual(ctx, x[0], x[1], x[2], x[3]);
}

static vlm_tensor *f_linear_residual_nobias(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_linear_residual(ctx, x[0], x[1], x[2], NULL);
}

/* The residual is also the linear's input (y = x + x W^T): x gets both grads. */
static vlm_tensor *f_linear_residual_self(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_linear_residual(ctx, x[0], x[0], x[1], x[2]);
}

typedef struct {
    int ndim;
    int64_t shape[3];
    int32_t ids[12];
} ids_spec;

/* Repeated ids, so the scatter-add must accumulate several rows into one. */
static const ids_spec IDS_1D = {1, {7}, {1, 4, 1, 6, 0, 4, 4}};
static const ids_spec IDS_2D = {2, {2, 3}, {2, 2, 5, 0, 2, 6}};
static const ids_spec IDS_3D = {3, {2, 2, 3}, {3, 3, 3, 1, 0, 6, 6, 1, 2, 3, 5, 4}};

static vlm_tensor *f_embedding(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const ids_spec *s = u;
    vlm_tensor *ids = vlm_tensor_from(ctx, VLM_I32, s->ndim, s->shape, s->ids);
    return vlm_embedding(ctx, x[0], ids);
}

/* clang-format off */
static const gc_case cases[] = {
    {"matmul", "[3,5] x [5,4]", f_matmul, (void *)&NN, 2, {{2, {3, 5}}, {2, {5, 4}}}},
    {"matmul", "[5,3]^T x [5,4]", f_matmul, (void *)&TN, 2, {{2, {5, 3}}, {2, {5, 4}}}},
    {"matmul", "[3,5] x [4,5]^T", f_matmul, (void *)&NT, 2, {{2, {3, 5}}, {2, {4, 5}}}},
    {"matmul", "[5,3]^T x [4,5]^T", f_matmul, (void *)&TT, 2, {{2, {5, 3}}, {2, {4, 5}}}},
    {"matmul", "3-D [2,3,5] x [2,5,4]", f_matmul, (void *)&NN, 2,
     {{3, {2, 3, 5}}, {3, {2, 5, 4}}}},
    {"matmul", "3-D [2,5,3]^T x [2,4,5]^T", f_matmul, (void *)&TT, 2,
     {{3, {2, 5, 3}}, {3, {2, 4, 5}}}},
    {"matmul", "4-D [2,3,3,5] x [2,3,5,2]", f_matmul, (void *)&NN, 2,
     {{4, {2, 3, 3, 5}}, {4, {2, 3, 5, 2}}}},
    {"matmul", "4-D [2,1,5,3]^T x [2,1,5,4]", f_matmul, (void *)&TN, 2,
     {{4, {2, 1, 5, 3}}, {4, {2, 1, 5, 4}}}},
    {"matmul", "shared b: [2,3,5] x [5,4]", f_matmul, (void *)&NN, 2,
     {{3, {2, 3, 5}}, {2, {5, 4}}}},
    {"matmul", "shared b: [3,3,5] x [4,5]^T", f_matmul, (void *)&NT, 2,
     {{3, {3, 3, 5}}, {2, {4, 5}}}},
    {"matmul", "shared b: [2,2,5,3]^T x [4,5]^T", f_matmul, (void *)&TT, 2,
     {{4, {2, 2, 5, 3}}, {2, {4, 5}}}},
    {"matmul", "x x^T, one tensor both sides", f_gram, NULL, 1, {{2, {3, 5}}}},

    {"linear", "[3,5] W [4,5] + b [4]", f_linear, NULL, 3, {{2, {3, 5}}, {2, {4, 5}}, {1, {4}}}},
    {"linear", "[3,5] W [4,5], no bias", f_linear_nobias, NULL, 2, {{2, {3, 5}}, {2, {4, 5}}}},
    {"linear", "3-D [2,3,5] W [7,5] + b", f_linear, NULL, 3,
     {{3, {2, 3, 5}}, {2, {7, 5}}, {1, {7}}}},
    {"linear", "1-D [5] W [3,5] + b", f_linear, NULL, 3, {{1, {5}}, {2, {3, 5}}, {1, {3}}}},

    {"linear_residual", "[2,3,4] + [2,3,5] W [4,5] + b", f_linear_residual, NULL, 4,
     {{3, {2, 3, 4}}, {3, {2, 3, 5}}, {2, {4, 5}}, {1, {4}}}},
    {"linear_residual", "[3,4] + [3,5] W [4,5], no bias", f_linear_residual_nobias, NULL, 3,
     {{2, {3, 4}}, {2, {3, 5}}, {2, {4, 5}}}},
    {"linear_residual", "x + x W [5,5] + b, one tensor", f_linear_residual_self, NULL, 3,
     {{2, {3, 5}}, {2, {5, 5}}, {1, {5}}}},

    {"embedding", "[7,3] ids [7] repeated", f_embedding, (void *)&IDS_1D, 1, {{2, {7, 3}}}},
    {"embedding", "[7,5] ids [2,3] repeated", f_embedding, (void *)&IDS_2D, 1, {{2, {7, 5}}}},
    {"embedding", "[7,2] ids [2,2,3] repeated", f_embedding, (void *)&IDS_3D, 1, {{2, {7, 2}}}},
};
/* clang-format on */
GC_REGISTER(cases)
