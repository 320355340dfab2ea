/* test_elementwise.c - add, sub, mul, div: values on hand-written arrays,
 * broadcasting (forward and reduced grads) against a naive index-by-index
 * reference, thread-count independence, error messages, and the tape
 * (shared inputs, no-grad scopes, inputs that need no grad). */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

typedef vlm_tensor *(*binop_fn)(vlm_ctx *, vlm_tensor *, vlm_tensor *);

static vlm_tensor *tensor(vlm_ctx *ctx, int ndim, const int64_t *shape, const float *v) {
    return vlm_tensor_from(ctx, VLM_F32, ndim, shape, v);
}

static uint64_t rng_state = 12345;
static float urand(float lo, float hi) { /* LCG, independent of the library's RNG */
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)(rng_state >> 40) / 16777216.0f;
}

static vlm_tensor *random_tensor(vlm_ctx *ctx, int ndim, const int64_t *shape, float lo,
                                 float hi) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++) vlm_f32(t)[i] = urand(lo, hi);
    return t;
}

static bool values_are(const vlm_tensor *t, int ndim, const int64_t *shape, const float *v) {
    if (!t || t->ndim != ndim) return false;
    for (int d = 0; d < ndim; d++)
        if (t->shape[d] != shape[d]) return false;
    for (int64_t i = 0; i < t->numel; i++)
        if (vlm_f32(t)[i] != v[i]) return false;
    return true;
}

/* ---- hand-written values ------------------------------------------------------- */

static void test_hand_values(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    int64_t s3[] = {3}, s23[] = {2, 3}, s21[] = {2, 1}, s13[] = {1, 3}, s1[] = {1},
            s32[] = {3, 2};
    vlm_tensor *a3 = tensor(ctx, 1, s3, (float[]){1, 2, 3});
    vlm_tensor *b3 = tensor(ctx, 1, s3, (float[]){10, 20, 30});
    vlm_tensor *a23 = tensor(ctx, 2, s23, (float[]){1, 2, 3, 4, 5, 6});
    CHECK(values_are(vlm_add(ctx, a3, b3), 1, s3, (float[]){11, 22, 33}), "same shape add");
    CHECK(values_are(vlm_add(ctx, a23, b3), 2, s23, (float[]){11, 22, 33, 14, 25, 36}),
          "[2,3] + [3] bias");
    CHECK(values_are(vlm_add(ctx, b3, a23), 2, s23, (float[]){11, 22, 33, 14, 25, 36}),
          "[3] + [2,3]");
    CHECK(values_are(vlm_sub(ctx, a23, b3), 2, s23, (float[]){-9, -18, -27, -6, -15, -24}),
          "[2,3] - [3]");
    CHECK(values_are(vlm_sub(ctx, b3, a23), 2, s23, (float[]){9, 18, 27, 6, 15, 24}),
          "[3] - [2,3]");
    vlm_tensor *c21 = tensor(ctx, 2, s21, (float[]){2, 3});
    vlm_tensor *r13 = tensor(ctx, 2, s13, (float[]){1, 10, 100});
    CHECK(values_are(vlm_mul(ctx, c21, r13), 2, s23, (float[]){2, 20, 200, 3, 30, 300}),
          "[2,1] * [1,3] outer product");
    vlm_tensor *five = tensor(ctx, 1, s1, (float[]){5});
    vlm_tensor *x32 = tensor(ctx, 2, s32, (float[]){1, 2, 3, 4, 5, 6});
    CHECK(values_are(vlm_sub(ctx, five, x32), 2, s32, (float[]){4, 3, 2, 1, 0, -1}),
          "[1] - [3,2] scalar");
    vlm_tensor *six = tensor(ctx, 1, s3, (float[]){6, 6, 6});
    vlm_tensor *den = tensor(ctx, 2, s23, (float[]){1, 2, 3, 6, 3, 2});
    CHECK(values_are(vlm_div(ctx, six, den), 2, s23, (float[]){6, 3, 2, 1, 2, 3}),
          "[3] / [2,3]");
    CHECK(values_are(vlm_div(ctx, den, five), 2, s23,
                     (float[]){0.2f, 0.4f, 0.6f, 1.2f, 0.6f, 0.4f}),
          "[2,3] / [1]");
    CHECK(values_are(vlm_mul(ctx, a23, c21), 2, s23, (float[]){2, 4, 6, 12, 15, 18}),
          "[2,3] * [2,1] rows scaled");
    int64_t s0[] = {0, 3};
    vlm_tensor *empty = vlm_add(ctx, vlm_tensor_new(ctx, VLM_F32, 2, s0), b3);
    CHECK(empty && empty->numel == 0 && empty->shape[0] == 0 && empty->shape[1] == 3,
          "[0,3] + [3] gives an empty [0,3]");
    vlm_ctx_free(ctx);
}

/* ---- broadcasting against a naive reference ------------------------------------- */

/* Offset in t of the output element at idx (out_nd dims), dims aligned right. */
static int64_t ref_offset(const vlm_tensor *t, int out_nd, const int64_t *idx) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++) {
        int64_t i = t->shape[d] == 1 ? 0 : idx[out_nd - t->ndim + d];
        off = off * t->shape[d] + i;
    }
    return off;
}

static void unravel(int64_t lin, int nd, const int64_t *shape, int64_t *idx) {
    for (int d = nd - 1; d >= 0; d--) {
        idx[d] = lin % shape[d];
        lin /= shape[d];
    }
}

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV };
static const char *op_names[] = {"add", "sub", "mul", "div"};
static const binop_fn op_fns[] = {vlm_add, vlm_sub, vlm_mul, vlm_div};

static float ref_fwd(int op, float a, float b) {
    return op == OP_ADD ? a + b : op == OP_SUB ? a - b : op == OP_MUL ? a * b : a / b;
}

/* d(op)/da and d(op)/db at (a, b), in double */
static void ref_local(int op, double a, double b, double *da, double *db) {
    *da = op == OP_MUL ? b : op == OP_DIV ? 1 / b : 1;
    *db = op == OP_ADD ? 1 : op == OP_SUB ? -1 : op == OP_MUL ? a : -a / (b * b);
}

/* Largest |x - ref| / max(1, |ref|) over n elements. */
static double max_rel_err(const float *x, const double *ref, int64_t n) {
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double e = fabs(x[i] - ref[i]) / fmax(1.0, fabs(ref[i]));
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

typedef struct {
    int na;
    int64_t a[4];
    int nb;
    int64_t b[4];
} shape_pair;

/* Forward must match the reference bit for bit (same float operation); grads
 * are compared to a double-precision reference. */
static void check_pair(int op, const shape_pair *sp) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    vlm_tensor *a = random_tensor(ctx, sp->na, sp->a, -1, 1);
    float lo = op == OP_DIV ? 0.5f : -1, hi = op == OP_DIV ? 2 : 1; /* keep 1/b tame */
    vlm_tensor *b = random_tensor(ctx, sp->nb, sp->b, lo, hi);
    a->requires_grad = b->requires_grad = true;
    vlm_tensor *y = op_fns[op](ctx, a, b);
    CHECK(y != NULL, "%s: %s", op_names[op], vlm_last_error());
    if (!y) {
        vlm_ctx_free(ctx);
        return;
    }
    float *dy = malloc((size_t)y->numel * sizeof *dy);
    double *ga = calloc((size_t)a->numel, sizeof *ga), *gb = calloc((size_t)b->numel, sizeof *gb);
    int64_t idx[4], fwd_bad = 0;
    for (int64_t o = 0; o < y->numel; o++) {
        unravel(o, y->ndim, y->shape, idx);
        int64_t ia = ref_offset(a, y->ndim, idx), ib = ref_offset(b, y->ndim, idx);
        float av = vlm_f32(a)[ia], bv = vlm_f32(b)[ib];
        fwd_bad += vlm_f32(y)[o] != ref_fwd(op, av, bv);
        dy[o] = urand(-1, 1);
        double la, lb;
        ref_local(op, av, bv, &la, &lb);
        ga[ia] += dy[o] * la;
        gb[ib] += dy[o] * lb;
    }
    char sa[64], sb[64];
    vlm_shape_str(a, sa, sizeof sa);
    vlm_shape_str(b, sb, sizeof sb);
    CHECK(fwd_bad == 0, "%s %s %s: %lld forward values differ", op_names[op], sa, sb,
          (long long)fwd_bad);
    int rc = vlm_backward_from(ctx, 0, y, dy);
    CHECK(rc == 0 && a->grad && b->grad, "%s %s %s backward: %s", op_names[op], sa, sb,
          vlm_last_error());
    if (rc == 0 && a->grad && b->grad) {
        double ea = max_rel_err(a->grad, ga, a->numel), eb = max_rel_err(b->grad, gb, b->numel);
        CHECK(ea < 1e-5 && eb < 1e-5, "%s %s %s: grad errors a %.3g b %.3g", op_names[op], sa,
              sb, ea, eb);
    }
    free(dy);
    free(ga);
    free(gb);
    vlm_ctx_free(ctx);
}

static void test_broadcast_reference(void) {
    static const shape_pair pairs[] = {
        {3, {2, 3, 4}, 3, {2, 3, 4}},
        {3, {2, 3, 4}, 1, {4}},
        {1, {4}, 3, {2, 3, 4}},
        {3, {2, 1, 4}, 3, {2, 3, 4}},
        {3, {2, 3, 4}, 3, {2, 3, 1}},
        {4, {3, 1, 2, 1}, 3, {4, 1, 5}},
        {1, {1}, 2, {5, 7}},
        {2, {5, 7}, 2, {1, 1}},
        {4, {1, 2, 1, 3}, 4, {2, 1, 1, 3}},
        /* large enough for the parallel loops, tiles and reduction blocks */
        {2, {64, 1000}, 1, {1000}},
        {3, {40, 1, 50}, 3, {40, 30, 50}},
        {1, {1}, 1, {70001}},       /* sliced over the inner columns */
        {2, {255, 300}, 1, {300}},  /* sliced over the stretched rows */
        {3, {60, 1, 130}, 3, {1, 50, 1}},
        {2, {3, 20000}, 2, {3, 1}},
    };
    for (int op = 0; op < 4; op++)
        for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) check_pair(op, &pairs[i]);
}

/* Same inputs with 1 and 2 threads: bit-identical outputs and grads. */
static void check_threads(const shape_pair *sp) {
    float *first[3] = {0};
    for (int run = 0; run < 2; run++) {
        vlm_set_num_threads(run + 1);
        vlm_ctx *ctx = vlm_ctx_new(1 << 20);
        rng_state = 777;
        vlm_tensor *a = random_tensor(ctx, sp->na, sp->a, -1, 1);
        vlm_tensor *b = random_tensor(ctx, sp->nb, sp->b, 0.5f, 2);
        a->requires_grad = b->requires_grad = true;
        vlm_tensor *y = vlm_div(ctx, a, b);
        int rc = y ? vlm_backward_from(ctx, 0, y, NULL) : -1;
        CHECK(rc == 0, "backward: %s", vlm_last_error());
        const float *got[3] = {y ? vlm_f32(y) : NULL, a->grad, b->grad};
        int64_t n[3] = {y ? y->numel : 0, a->numel, b->numel};
        for (int k = 0; rc == 0 && k < 3; k++) {
            size_t bytes = (size_t)n[k] * sizeof(float);
            if (run == 0) {
                first[k] = malloc(bytes);
                memcpy(first[k], got[k], bytes);
            } else {
                CHECK(first[k] && memcmp(first[k], got[k], bytes) == 0,
                      "result %d differs between 1 and 2 threads", k);
            }
        }
        vlm_ctx_free(ctx);
    }
    for (int k = 0; k < 3; k++) free(first[k]);
    vlm_set_num_threads(0);
}

static void test_thread_independence(void) {
    static const shape_pair pairs[] = {
        {3, {40, 30, 60}, 3, {40, 1, 60}},
        {2, {255, 300}, 1, {300}},
        {1, {70001}, 1, {1}},
    };
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++) check_threads(&pairs[i]);
}

/* ---- errors ------------------------------------------------------------------------ */

static void test_errors(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    int64_t s23[] = {2, 3}, s4[] = {4}, s32[] = {3, 2};
    vlm_tensor *a = vlm_zeros(ctx, VLM_F32, 2, s23), *b = vlm_zeros(ctx, VLM_F32, 1, s4);
    vlm_tensor *c = vlm_zeros(ctx, VLM_F32, 2, s32);
    for (int op = 0; op < 4; op++) {
        char want[96];
        snprintf(want, sizeof want, "%s: shapes [2, 3] and [4] do not broadcast", op_names[op]);
        vlm_clear_error();
        CHECK(op_fns[op](ctx, a, b) == NULL, "%s [2,3] [4] must fail", op_names[op]);
        CHECK(strcmp(vlm_last_error(), want) == 0, "message '%s', want '%s'", vlm_last_error(),
              want);
        snprintf(want, sizeof want, "%s: shapes [3, 2] and [2, 3] do not broadcast", op_names[op]);
        CHECK(op_fns[op](ctx, c, a) == NULL && strcmp(vlm_last_error(), want) == 0,
              "[3,2] vs [2,3]: '%s'", vlm_last_error());
    }
    vlm_tensor *ids = vlm_zeros(ctx, VLM_I32, 2, s23);
    vlm_clear_error();
    CHECK(vlm_mul(ctx, a, ids) == NULL, "i32 operand must fail");
    CHECK(strstr(vlm_last_error(), "mul") && strstr(vlm_last_error(), "i32"),
          "dtype message names op and dtype: '%s'", vlm_last_error());
    vlm_clear_error();
    CHECK(vlm_add(ctx, ids, a) == NULL && strstr(vlm_last_error(), "add") &&
              strstr(vlm_last_error(), "i32"),
          "i32 first operand: '%s'", vlm_last_error());
    vlm_set_error("earlier failure");
    for (int op = 0; op < 4; op++) {
        CHECK(op_fns[op](ctx, NULL, a) == NULL && op_fns[op](ctx, a, NULL) == NULL,
              "%s: NULL input gives NULL", op_names[op]);
    }
    CHECK(strcmp(vlm_last_error(), "earlier failure") == 0,
          "NULL propagation keeps the earlier error, got '%s'", vlm_last_error());
    vlm_ctx_free(ctx);
}

/* ---- the tape ------------------------------------------------------------------------ */

static void test_tape(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    int64_t s5[] = {5}, s1[] = {1};
    const float xv[5] = {-2, -0.5f, 0, 1.5f, 3};
    vlm_tensor *x = tensor(ctx, 1, s5, xv);
    x->requires_grad = true;

    /* y = x * x + x: three paths into x, dy/dx = 2x + 1 */
    vlm_tensor *y = vlm_add(ctx, vlm_mul(ctx, x, x), x);
    CHECK(y && y->requires_grad && vlm_tape_len(ctx) == 2, "two nodes recorded");
    CHECK(vlm_backward_from(ctx, 0, y, NULL) == 0, "backward: %s", vlm_last_error());
    for (int i = 0; i < 5; i++) CHECK_NEAR(x->grad[i], 2 * xv[i] + 1, 1e-6);
    CHECK(vlm_tape_len(ctx) == 0, "backward consumes the tape");

    /* z = (x + 1) * (x - 2) with constant scalars: dz/dx = 2x - 1 */
    x->grad = NULL;
    vlm_tensor *one = tensor(ctx, 1, s1, (float[]){1}), *two = tensor(ctx, 1, s1, (float[]){2});
    vlm_tensor *z = vlm_mul(ctx, vlm_add(ctx, x, one), vlm_sub(ctx, x, two));
    CHECK(vlm_backward_from(ctx, 0, z, NULL) == 0, "backward: %s", vlm_last_error());
    for (int i = 0; i < 5; i++) CHECK_NEAR(x->grad[i], 2 * xv[i] - 1, 1e-6);
    CHECK(one->grad == NULL && two->grad == NULL, "constants get no grad");

    /* x / x = 1: its two grad contributions cancel */
    vlm_tensor *p = tensor(ctx, 1, s5, (float[]){0.5f, 1, 2, 3, 7});
    p->requires_grad = true;
    CHECK(vlm_backward_from(ctx, 0, vlm_div(ctx, p, p), NULL) == 0, "x/x backward");
    for (int i = 0; i < 5; i++) CHECK(fabsf(p->grad[i]) < 1e-6f, "d(x/x)/dx = %g", p->grad[i]);

    /* only b requires grad: a gets none, b gets dy * a */
    vlm_tensor *a = tensor(ctx, 1, s5, xv), *b = tensor(ctx, 1, s5, (float[]){1, 2, 3, 4, 5});
    b->requires_grad = true;
    vlm_tensor *ab = vlm_mul(ctx, a, b);
    CHECK(vlm_backward_from(ctx, 0, ab, NULL) == 0, "backward: %s", vlm_last_error());
    CHECK(a->grad == NULL, "input without requires_grad gets no grad");
    for (int i = 0; i < 5; i++) CHECK_NEAR(b->grad[i], xv[i], 1e-7);

    /* no-grad scope and inputs that need no grad record nothing */
    size_t len = vlm_tape_len(ctx);
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *ng = vlm_sub(ctx, vlm_div(ctx, x, p), x);
    CHECK(ng && !ng->requires_grad && vlm_tape_len(ctx) == len, "no-grad scope records nothing");
    vlm_set_grad_enabled(ctx, prev);
    vlm_tensor *cst = vlm_add(ctx, a, one);
    CHECK(cst && !cst->requires_grad && vlm_tape_len(ctx) == len, "constants record nothing");
    vlm_ctx_free(ctx);
}

int main(void) {
    test_hand_values();
    test_broadcast_reference();
    test_thread_independence();
    test_errors();
    test_tape();
    return TEST_DONE();
}
