/* Gradient-check cases: reshape, permute (and transpose), concat, slice (and
 * split). Transpose and split have no node of their own: their cases run
 * under the names of the ops they are built on. */
#include "gc.h"

#include <stddef.h>

typedef struct {
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
} shape_arg;

static vlm_tensor *f_reshape(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const shape_arg *a = u;
    return vlm_reshape(ctx, x[0], a->ndim, a->shape);
}

static shape_arg rs_4_m1 = {2, {4, -1}};
static shape_arg rs_1_2_3_1 = {4, {1, 2, 3, 1}};
static shape_arg rs_5 = {1, {5}};
static shape_arg rs_m1_7 = {3, {-1, 1, 7}};

static vlm_tensor *f_permute(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    return vlm_permute(ctx, x[0], u);
}

static int p_201[] = {2, 0, 1}, p_120[] = {1, 2, 0}, p_021[] = {0, 2, 1}, p_10[] = {1, 0};
static int p_0213[] = {0, 2, 1, 3}, p_3102[] = {3, 1, 0, 2}, p_3210[] = {3, 2, 1, 0};
static int p_0312[] = {0, 3, 1, 2};

typedef struct {
    int d0, d1;
} dims_arg;

static vlm_tensor *f_transpose(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const dims_arg *a = u;
    return vlm_transpose(ctx, x[0], a->d0, a->d1);
}

static dims_arg tr_0_2 = {0, 2}, tr_last2 = {-1, -2};

/* Concatenates all n inputs along dim. */
typedef struct {
    int n, dim;
} concat_arg;

static vlm_tensor *f_concat(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const concat_arg *a = u;
    return vlm_concat(ctx, x, a->n, a->dim);
}

static concat_arg cat2_d0 = {2, 0}, cat3_d1 = {3, 1}, cat3_last = {3, -1}, cat2_d3 = {2, 3};

/* The same tensor twice: both blocks of dy accumulate into one grad. */
static vlm_tensor *f_concat_self(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    vlm_tensor *ts[2] = {x[0], x[0]};
    return vlm_concat(ctx, ts, 2, 1);
}

typedef struct {
    int dim;
    int64_t start, len;
} slice_arg;

static vlm_tensor *f_slice(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const slice_arg *a = u;
    return vlm_slice(ctx, x[0], a->dim, a->start, a->len);
}

static slice_arg sl_d0 = {0, 1, 3}, sl_d1 = {1, 2, 4}, sl_last = {-1, 5, 1}, sl_full = {3, 0, 4};

/* Splits, then concatenates the pieces in reverse order, so every piece's
 * grad has to find its way back to its own block. */
typedef struct {
    int dim, n;
    int64_t sizes[4];
} split_arg;

static vlm_tensor *f_split(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const split_arg *a = u;
    vlm_tensor *p[4], *r[4];
    if (vlm_split(ctx, x[0], a->dim, a->n, a->sizes, p) != 0) return NULL;
    for (int i = 0; i < a->n; i++) r[i] = p[a->n - 1 - i];
    return vlm_concat(ctx, r, a->n, a->dim);
}

static split_arg sp_3 = {1, 3, {2, 4, 3}}, sp_2 = {0, 2, {1, 5}};

static const gc_case cases[] = {
    {"reshape", "[2,3,4] -> (4,-1)", f_reshape, &rs_4_m1, 1, {{3, {2, 3, 4}}}},
    {"reshape", "[6] -> (1,2,3,1)", f_reshape, &rs_1_2_3_1, 1, {{1, {6}}}},
    {"reshape", "[1,5,1] -> (5)", f_reshape, &rs_5, 1, {{3, {1, 5, 1}}}},
    {"reshape", "[7,3] -> (-1,1,7)", f_reshape, &rs_m1_7, 1, {{2, {7, 3}}}},
    {"permute", "[2,3,4] (2,0,1)", f_permute, p_201, 1, {{3, {2, 3, 4}}}},
    {"permute", "[3,1,5] (1,2,0)", f_permute, p_120, 1, {{3, {3, 1, 5}}}},
    {"permute", "[2,5,3] (0,2,1)", f_permute, p_021, 1, {{3, {2, 5, 3}}}},
    {"permute", "[4,7] (1,0)", f_permute, p_10, 1, {{2, {4, 7}}}},
    {"permute", "[2,3,1,5] (0,2,1,3)", f_permute, p_0213, 1, {{4, {2, 3, 1, 5}}}},
    {"permute", "[2,3,4,5] (3,1,0,2)", f_permute, p_3102, 1, {{4, {2, 3, 4, 5}}}},
    {"permute", "[3,1,2,3] (3,2,1,0)", f_permute, p_3210, 1, {{4, {3, 1, 2, 3}}}},
    {"permute", "[2,3,4,3] (0,3,1,2)", f_permute, p_0312, 1, {{4, {2, 3, 4, 3}}}},
    {"permute", "transpose [3,1,4] dims 0,2", f_transpose, &tr_0_2, 1, {{3, {3, 1, 4}}}},
    {"permute", "transpose [2,2,3,5] dims -1,-2", f_transpose, &tr_last2, 1,
     {{4, {2, 2, 3, 5}}}},
    {"concat", "[2,3] ++ [4,3] dim 0", f_concat, &cat2_d0, 2, {{2, {2, 3}}, {2, {4, 3}}}},
    {"concat", "[2,1,3] ++ [2,4,3] ++ [2,2,3] dim 1", f_concat, &cat3_d1, 3,
     {{3, {2, 1, 3}}, {3, {2, 4, 3}}, {3, {2, 2, 3}}}},
    {"concat", "[3,2] ++ [3,1] ++ [3,5] dim -1", f_concat, &cat3_last, 3,
     {{2, {3, 2}}, {2, {3, 1}}, {2, {3, 5}}}},
    {"concat", "[1,2,3,2] ++ [1,2,3,3] dim 3", f_concat, &cat2_d3, 2,
     {{4, {1, 2, 3, 2}}, {4, {1, 2, 3, 3}}}},
    {"concat", "[3,2,2] with itself dim 1", f_concat_self, NULL, 1, {{3, {3, 2, 2}}}},
    {"slice", "[5,4] dim 0 [1,4)", f_slice, &sl_d0, 1, {{2, {5, 4}}}},
    {"slice", "[2,7,3] dim 1 [2,6)", f_slice, &sl_d1, 1, {{3, {2, 7, 3}}}},
    {"slice", "[3,4,6] dim -1 [5,6)", f_slice, &sl_last, 1, {{3, {3, 4, 6}}}},
    {"slice", "[1,3,1,4] dim 3 whole", f_slice, &sl_full, 1, {{4, {1, 3, 1, 4}}}},
    {"slice", "split [2,9] dim 1 (2,4,3)", f_split, &sp_3, 1, {{2, {2, 9}}}},
    {"slice", "split [6,1,2] dim 0 (1,5)", f_split, &sp_2, 1, {{3, {6, 1, 2}}}},
};
GC_REGISTER(cases)
