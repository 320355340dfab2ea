/* test_shape.c - forward values and bad inputs of reshape, permute, transpose,
 * concat, slice and split. Expected values come from index arithmetic written
 * out here, never from the ops under test. */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static bool has(const char *msg, const char *a, const char *b) {
    return strstr(msg, a) && (!b || strstr(msg, b));
}

#define CHECK_ERR(expr, a, b)                                                            \
    do {                                                                                 \
        vlm_clear_error();                                                               \
        CHECK((expr) == NULL, "%s should fail", #expr);                                  \
        CHECK(has(vlm_last_error(), a, b), "message '%s' should name '%s' and '%s'",     \
              vlm_last_error(), a, b ? b : "");                                          \
    } while (0)

/* f32 tensor holding 0, 1, 2, ... */
static vlm_tensor *iota(vlm_ctx *ctx, int ndim, const int64_t *shape) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++) vlm_f32(t)[i] = (float)i;
    return t;
}

/* Row-major offset of multi-index idx in shape. */
static int64_t offset(int ndim, const int64_t *shape, const int64_t *idx) {
    int64_t o = 0;
    for (int i = 0; i < ndim; i++) o = o * shape[i] + idx[i];
    return o;
}

/* Multi-index of flat offset o in shape. */
static void unravel(int ndim, const int64_t *shape, int64_t o, int64_t *idx) {
    for (int i = ndim - 1; i >= 0; i--) {
        idx[i] = o % shape[i];
        o /= shape[i];
    }
}

/* y = permute(iota(x shape), perm): y[o] must be the input offset whose
 * index along dim perm[k] is o's index along k. Returns the mismatches. */
static int64_t permute_mismatches(const vlm_tensor *x, const vlm_tensor *y, const int *perm) {
    int64_t bad = 0, oi[VLM_MAX_DIMS], xi[VLM_MAX_DIMS];
    for (int64_t o = 0; o < y->numel; o++) {
        unravel(y->ndim, y->shape, o, oi);
        for (int k = 0; k < x->ndim; k++) xi[perm[k]] = oi[k];
        bad += vlm_f32(y)[o] != (float)offset(x->ndim, x->shape, xi);
    }
    return bad;
}

static void test_permute_3d(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){2, 3, 4});
    static const int perms[6][3] = {{0, 1, 2}, {0, 2, 1}, {1, 0, 2},
                                    {1, 2, 0}, {2, 0, 1}, {2, 1, 0}};
    for (int p = 0; p < 6; p++) {
        vlm_tensor *y = vlm_permute(ctx, x, perms[p]);
        CHECK(y && y->ndim == 3, "permute %d: %s", p, vlm_last_error());
        if (!y) continue;
        for (int k = 0; k < 3; k++)
            CHECK(y->shape[k] == x->shape[perms[p][k]], "perm %d dim %d", p, k);
        CHECK(permute_mismatches(x, y, perms[p]) == 0, "perm (%d,%d,%d) values", perms[p][0],
              perms[p][1], perms[p][2]);
    }
    /* by hand: perm (2,0,1) gives y[i][j][k] = x[j][k][i] = 12 j + 4 k + i */
    vlm_tensor *y = vlm_permute(ctx, x, (int[]){2, 0, 1});
    CHECK(y && y->shape[0] == 4 && y->shape[1] == 2 && y->shape[2] == 3, "shape [4, 2, 3]");
    if (!y) return;
    CHECK(vlm_f32(y)[(1 * 2 + 0) * 3 + 2] == 9.0f, "y[1][0][2] = x[0][2][1] = 9");
    CHECK(vlm_f32(y)[(3 * 2 + 1) * 3 + 0] == 15.0f, "y[3][1][0] = x[1][0][3] = 15");
    CHECK(vlm_f32(y)[0] == 0.0f && vlm_f32(y)[1] == 4.0f && vlm_f32(y)[3] == 12.0f, "first row");
}

/* Covers the row-by-row walk and the tiled walk with the stride-1 source dim
 * landing at each of destination dims 0, 1 and 2. */
static void test_permute_4d(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 4, (int64_t[]){2, 3, 4, 5});
    static const int perms[6][4] = {{3, 1, 0, 2}, {0, 2, 1, 3}, {3, 2, 1, 0},
                                    {0, 3, 1, 2}, {0, 1, 3, 2}, {1, 3, 0, 2}};
    for (int p = 0; p < 6; p++) {
        vlm_tensor *y = vlm_permute(ctx, x, perms[p]);
        CHECK(y && permute_mismatches(x, y, perms[p]) == 0, "4-D perm %d", p);
    }
}

/* Sizes that take the parallel path and partial tiles. Backward with
 * dy = 0, 1, 2, ... must hand each output offset back to its input element. */
static void test_permute_large(vlm_ctx *ctx) {
    static const int perms[4][4] = {{3, 0, 1, 2}, {0, 3, 2, 1}, {2, 0, 3, 1}, {0, 1, 3, 2}};
    for (int p = 0; p < 4; p++) {
        vlm_tensor *x = iota(ctx, 4, (int64_t[]){3, 40, 50, 7});
        x->requires_grad = true;
        size_t mark = vlm_tape_mark(ctx);
        vlm_tensor *y = vlm_permute(ctx, x, perms[p]);
        CHECK(y && permute_mismatches(x, y, perms[p]) == 0, "large permute %d forward", p);
        if (!y) continue;
        float *dy = vlm_arena_alloc(ctx, (size_t)y->numel * sizeof(float));
        for (int64_t i = 0; i < y->numel; i++) dy[i] = (float)i;
        CHECK(vlm_backward_from(ctx, mark, y, dy) == 0, "backward: %s", vlm_last_error());
        /* x->grad = permute(iota(y shape), inverse perm) */
        int inv[4];
        for (int k = 0; k < 4; k++) inv[perms[p][k]] = k;
        vlm_tensor dx = *x; /* x's shape, the grad's values */
        dx.data = x->grad;
        CHECK(permute_mismatches(y, &dx, inv) == 0, "large permute %d backward", p);
    }
}

/* Layout ops move raw elements: i32, bf16 (2 bytes) and u8 go through unchanged. */
static void test_other_dtypes(vlm_ctx *ctx) {
    int32_t iv[6] = {1, 2, 3, 4, 5, 6};
    uint16_t hv[6] = {10, 20, 30, 40, 50, 60};
    uint8_t bv[6] = {7, 8, 9, 10, 11, 12};
    const int perm[2] = {1, 0};
    const int64_t shape[2] = {2, 3};
    vlm_tensor *i = vlm_permute(ctx, vlm_tensor_from(ctx, VLM_I32, 2, shape, iv), perm);
    vlm_tensor *h = vlm_permute(ctx, vlm_tensor_from(ctx, VLM_BF16, 2, shape, hv), perm);
    vlm_tensor *b = vlm_permute(ctx, vlm_tensor_from(ctx, VLM_U8, 2, shape, bv), perm);
    CHECK(i && h && b && i->dtype == VLM_I32 && h->dtype == VLM_BF16 && b->dtype == VLM_U8,
          "dtype kept: %s", vlm_last_error());
    if (!i || !h || !b) return;
    static const int order[6] = {0, 3, 1, 4, 2, 5}; /* transpose of a 2x3 */
    for (int k = 0; k < 6; k++) {
        CHECK(vlm_i32(i)[k] == iv[order[k]], "i32 elem %d", k);
        CHECK(((uint16_t *)h->data)[k] == hv[order[k]], "bf16 elem %d", k);
        CHECK(((uint8_t *)b->data)[k] == bv[order[k]], "u8 elem %d", k);
    }
    vlm_tensor *s = vlm_slice(ctx, vlm_tensor_from(ctx, VLM_U8, 2, shape, bv), 1, 1, 2);
    CHECK(s && ((uint8_t *)s->data)[0] == 8 && ((uint8_t *)s->data)[3] == 12, "u8 slice");
}

static void test_transpose(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){2, 3, 4});
    vlm_tensor *y = vlm_transpose(ctx, x, 0, 2);
    CHECK(y && y->shape[0] == 4 && y->shape[1] == 3 && y->shape[2] == 2, "transpose shape");
    CHECK(y && permute_mismatches(x, y, (int[]){2, 1, 0}) == 0, "transpose values");
    vlm_tensor *z = vlm_transpose(ctx, x, -1, -2);
    CHECK(z && permute_mismatches(x, z, (int[]){0, 2, 1}) == 0, "negative dims");
    CHECK_ERR(vlm_transpose(ctx, x, 0, 3), "transpose", "[2, 3, 4]");
}

static void test_reshape(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){2, 3, 4});
    vlm_tensor *y = vlm_reshape(ctx, x, 2, (int64_t[]){-1, 6});
    CHECK(y && y->ndim == 2 && y->shape[0] == 4 && y->shape[1] == 6 && y->numel == 24,
          "-1 inferred as 4");
    CHECK(y && y->data == x->data, "reshape shares the data");
    CHECK_ERR(vlm_reshape(ctx, x, 2, (int64_t[]){5, 5}), "reshape", "[2, 3, 4]");
    CHECK(has(vlm_last_error(), "(5, 5)", NULL), "names the target: %s", vlm_last_error());
    CHECK_ERR(vlm_reshape(ctx, x, 2, (int64_t[]){-1, -1}), "reshape", "[2, 3, 4]");
    CHECK_ERR(vlm_reshape(ctx, x, 2, (int64_t[]){-1, 5}), "reshape", "[2, 3, 4]");
    CHECK_ERR(vlm_reshape(ctx, x, 2, (int64_t[]){-2, -12}), "reshape", "[2, 3, 4]");
    CHECK_ERR(vlm_reshape(ctx, x, 5, (int64_t[]){1, 2, 3, 4, 1}), "reshape", "[2, 3, 4]");
    vlm_tensor *e = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){0, 3});
    CHECK_ERR(vlm_reshape(ctx, e, 2, (int64_t[]){0, -1}), "reshape", "[0, 3]");

    /* the view's grad is its own: d sum(y) / dx = 1 lands in x->grad only
     * (retained to look at it: op outputs' grads are released by default) */
    x->requires_grad = true;
    y = vlm_reshape(ctx, x, 1, (int64_t[]){24});
    vlm_tensor *loss = vlm_sum_all(ctx, y);
    vlm_ctx_retain_grads(ctx, true);
    CHECK(vlm_backward(ctx, loss) == 0, "backward: %s", vlm_last_error());
    vlm_ctx_retain_grads(ctx, false);
    CHECK(x->grad && y->grad && x->grad != y->grad, "separate grad buffers");
    int ones = 0;
    for (int i = 0; x->grad && i < 24; i++) ones += x->grad[i] == 1.0f;
    CHECK(ones == 24, "dx = 1 everywhere (%d of 24)", ones);
}

static void test_bad_perm(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){2, 3, 4});
    CHECK_ERR(vlm_permute(ctx, x, (int[]){0, 0, 2}), "permute", "[2, 3, 4]");
    CHECK(has(vlm_last_error(), "(0, 0, 2)", NULL), "names the perm: %s", vlm_last_error());
    CHECK_ERR(vlm_permute(ctx, x, (int[]){0, 1, 3}), "permute", "[2, 3, 4]");
    CHECK_ERR(vlm_permute(ctx, x, (int[]){-1, 1, 2}), "permute", "[2, 3, 4]");
    CHECK_ERR(vlm_permute(ctx, x, NULL), "permute", "[2, 3, 4]");
}

static void test_concat(vlm_ctx *ctx) {
    vlm_tensor *a = iota(ctx, 3, (int64_t[]){2, 1, 3});
    vlm_tensor *b = iota(ctx, 3, (int64_t[]){2, 2, 3});
    vlm_tensor *c = iota(ctx, 3, (int64_t[]){2, 3, 3});
    for (int64_t i = 0; i < b->numel; i++) vlm_f32(b)[i] += 100;
    for (int64_t i = 0; i < c->numel; i++) vlm_f32(c)[i] += 200;
    vlm_tensor *y = vlm_concat(ctx, (vlm_tensor *[]){a, b, c}, 3, 1);
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 6 && y->shape[2] == 3, "middle-dim shape");
    int64_t bad = 0;
    for (int64_t i = 0; y && i < 2; i++)
        for (int64_t j = 0; j < 6; j++)
            for (int64_t k = 0; k < 3; k++) {
                float want = j < 1   ? (float)(i * 3 + k)
                             : j < 3 ? 100.0f + (float)((i * 2 + j - 1) * 3 + k)
                                     : 200.0f + (float)((i * 3 + j - 3) * 3 + k);
                bad += vlm_f32(y)[(i * 6 + j) * 3 + k] != want;
            }
    CHECK(y && bad == 0, "middle-dim values (%lld wrong)", (long long)bad);

    float u[] = {1, 2, 3, 4}, v[] = {5, 6};
    vlm_tensor *p = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){2, 2}, u);
    vlm_tensor *q = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){2, 1}, v);
    vlm_tensor *r = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){1, 2}, v);
    vlm_tensor *last = vlm_concat(ctx, (vlm_tensor *[]){p, q}, 2, -1);
    static const float want_last[] = {1, 2, 5, 3, 4, 6};
    CHECK(last && last->shape[1] == 3 && memcmp(vlm_f32(last), want_last, sizeof want_last) == 0,
          "last-dim concat");
    vlm_tensor *first = vlm_concat(ctx, (vlm_tensor *[]){p, r}, 2, 0);
    static const float want_first[] = {1, 2, 3, 4, 5, 6};
    CHECK(first && first->shape[0] == 3 &&
              memcmp(vlm_f32(first), want_first, sizeof want_first) == 0,
          "first-dim concat");

    CHECK_ERR(vlm_concat(ctx, (vlm_tensor *[]){p, q}, 2, 0), "concat", "[2, 1]");
    CHECK(has(vlm_last_error(), "[2, 2]", NULL), "names both shapes: %s", vlm_last_error());
    CHECK_ERR(vlm_concat(ctx, (vlm_tensor *[]){p, a}, 2, 0), "concat", "[2, 1, 3]");
    vlm_tensor *ip = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){2, 2});
    CHECK_ERR(vlm_concat(ctx, (vlm_tensor *[]){p, ip}, 2, 0), "concat", "i32");
    CHECK_ERR(vlm_concat(ctx, (vlm_tensor *[]){p, q}, 2, 2), "concat", "[2, 2]");
    CHECK_ERR(vlm_concat(ctx, (vlm_tensor *[]){p}, 0, 0), "concat", "0 inputs");
    vlm_tensor *nine[9] = {p, p, p, p, p, p, p, p, p};
    CHECK_ERR(vlm_concat(ctx, nine, 9, 0), "concat", "9 inputs");
}

static void test_slice_split(vlm_ctx *ctx) {
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){2, 5, 3});
    vlm_tensor *y = vlm_slice(ctx, x, 1, 1, 3);
    CHECK(y && y->shape[0] == 2 && y->shape[1] == 3 && y->shape[2] == 3, "slice shape");
    int64_t bad = 0;
    for (int64_t i = 0; y && i < 2; i++)
        for (int64_t j = 0; j < 3; j++)
            for (int64_t k = 0; k < 3; k++)
                bad += vlm_f32(y)[(i * 3 + j) * 3 + k] != (float)((i * 5 + j + 1) * 3 + k);
    CHECK(y && bad == 0, "slice values");
    vlm_tensor *e = vlm_slice(ctx, x, 2, 3, 0);
    CHECK(e && e->numel == 0 && e->shape[2] == 0, "empty slice at the end is allowed");
    CHECK_ERR(vlm_slice(ctx, x, 1, 3, 3), "slice", "[2, 5, 3]");
    CHECK_ERR(vlm_slice(ctx, x, 1, -1, 2), "slice", "[2, 5, 3]");
    CHECK_ERR(vlm_slice(ctx, x, 1, 0, -1), "slice", "[2, 5, 3]");
    CHECK_ERR(vlm_slice(ctx, x, 3, 0, 1), "slice", "[2, 5, 3]");

    vlm_tensor *out[3];
    CHECK(vlm_split(ctx, x, 1, 3, (int64_t[]){1, 3, 1}, out) == 0, "split: %s", vlm_last_error());
    CHECK(out[0] && out[1] && out[2] && out[0]->shape[1] == 1 && out[1]->shape[1] == 3 &&
              out[2]->shape[1] == 1,
          "split shapes");
    CHECK(out[2] && vlm_f32(out[2])[0] == 12.0f && vlm_f32(out[2])[3] == 27.0f, "last piece");
    vlm_clear_error();
    CHECK(vlm_split(ctx, x, 1, 2, (int64_t[]){2, 2}, out) == -1, "sizes must sum to the dim");
    CHECK(has(vlm_last_error(), "split", "[2, 5, 3]") && has(vlm_last_error(), "(2, 2)", NULL),
          "message: %s", vlm_last_error());
    CHECK(out[0] == NULL && out[1] == NULL, "outputs cleared on failure");
    CHECK(vlm_split(ctx, x, 1, 2, (int64_t[]){6, -1}, out) == -1, "negative size");
}

static void test_null_and_no_grad(vlm_ctx *ctx) {
    vlm_set_error("sentinel");
    CHECK(vlm_permute(ctx, NULL, (int[]){0}) == NULL, "NULL in, NULL out");
    CHECK(vlm_reshape(ctx, NULL, 1, (int64_t[]){1}) == NULL, "NULL in, NULL out");
    CHECK(vlm_slice(ctx, NULL, 0, 0, 1) == NULL, "NULL in, NULL out");
    CHECK(vlm_concat(ctx, (vlm_tensor *[]){NULL, NULL}, 2, 0) == NULL, "NULL in, NULL out");
    CHECK(strcmp(vlm_last_error(), "sentinel") == 0, "error untouched: %s", vlm_last_error());

    vlm_tensor *x = iota(ctx, 2, (int64_t[]){3, 4});
    x->requires_grad = true;
    size_t len = vlm_tape_len(ctx);
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *y = vlm_transpose(ctx, vlm_slice(ctx, x, 0, 1, 2), 0, 1);
    vlm_set_grad_enabled(ctx, prev);
    CHECK(y && !y->requires_grad && vlm_tape_len(ctx) == len, "no_grad records nothing");
    y = vlm_transpose(ctx, vlm_slice(ctx, x, 0, 1, 2), 0, 1);
    CHECK(y && y->requires_grad && vlm_tape_len(ctx) == len + 2, "one node each for slice and "
          "permute, none for transpose");
    vlm_tape_truncate(ctx, len);
}

int main(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    test_permute_3d(ctx);
    test_permute_4d(ctx);
    test_permute_large(ctx);
    test_other_dtypes(ctx);
    test_transpose(ctx);
    test_reshape(ctx);
    test_bad_perm(ctx);
    test_concat(ctx);
    test_slice_split(ctx);
    test_null_and_no_grad(ctx);
    vlm_ctx_free(ctx);
    return TEST_DONE();
}
