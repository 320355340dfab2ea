/* ops_matmul.c - matmul, linear and embedding.
 *
 * Every product goes through vlm_sgemm (or, in BF16 mode, vlm_gemm_bf16) with
 * transpose flags and leading dimensions, so no transposed copy is made,
 * forward or backward. Backward GEMMs use beta = 1: grads accumulate, and an
 * input used twice (x @ x^T) receives both contributions.
 *
 * Mixed precision (the context's mode at forward time, stored in the node):
 *  - BF16: operands are converted to bf16 once, in the forward; the copies a
 *    backward GEMM needs are kept in the arena (saved[]), the others live in
 *    per-thread scratch. A linear's weight is the exception: backward
 *    converts it again from the f32 weight into scratch, so no bf16 copy of
 *    every weight sits in the arena. Backward rounds the incoming grad to
 *    bf16 (scratch) and runs bf16 GEMMs with f32 accumulation into the f32
 *    grads.
 *  - F16: inputs are rounded to f16, the f16 copy is what backward keeps, and
 *    the GEMMs run in f32 on the f16-rounded values (widened into scratch).
 *    Forward and backward see the same rounded operands, so the grads are
 *    the exact grads of the computed (rounded) function.
 * An operand copy is kept only if the other operand's grad needs it: a frozen
 * weight keeps no activation. */
#include "internal.h"

#include <limits.h>
#include <omp.h>
#include <string.h>

/* OpenBLAS takes int sizes and strides. */
static bool blas_fits(const char *op, int64_t m, int64_t n, int64_t k) {
    if (m <= INT_MAX && n <= INT_MAX && k <= INT_MAX) return true;
    vlm_set_error("%s: GEMM of %lld x %lld x %lld exceeds the BLAS int range", op, (long long)m,
                  (long long)n, (long long)k);
    return false;
}

/* ---- mixed precision helpers ----------------------------------------------- */

/* n elements of src rounded to bf16 or f16 (p), in the arena when kept for
 * backward, else in scratch slot `slot`. */
static uint16_t *lowp_copy(vlm_ctx *ctx, const float *src, int64_t n, vlm_precision p, bool keep,
                           int slot) {
    size_t bytes = (size_t)n * sizeof(uint16_t);
    uint16_t *d = keep ? vlm_arena_alloc(ctx, bytes) : vlm_mp_scratch(slot, bytes);
    if (!d) return NULL;
    if (p == VLM_PREC_BF16)
        vlm_f32_to_bf16_n(d, src, n);
    else
        vlm_f32_to_f16_n(d, src, n);
    return d;
}

/* f32 copy (scratch slot) of n f16 values: the GEMM operand in F16 mode. */
static float *widen_f16(const uint16_t *h, int64_t n, int slot) {
    float *f = vlm_mp_scratch(slot, (size_t)n * sizeof(float));
    if (f) vlm_f16_to_f32_n(f, h, n);
    return f;
}

/* src rounded through f16 into scratch slot `slot` (f32); the f16 bits go to
 * the arena (*kept) when keep, else through scratch slot 2. */
static float *round_f16(vlm_ctx *ctx, const float *src, int64_t n, bool keep, int slot,
                        uint16_t **kept) {
    uint16_t *h = lowp_copy(ctx, src, n, VLM_PREC_F16, keep, 2);
    if (!h) return NULL;
    *kept = keep ? h : NULL;
    return widen_f16(h, n, slot);
}

/* The incoming grad rounded to bf16 (scratch slot 0) for backward GEMMs. */
static uint16_t *grad_bf16(const float *g, int64_t n) {
    uint16_t *d = vlm_mp_scratch(0, (size_t)n * sizeof(uint16_t));
    if (d) vlm_f32_to_bf16_n(d, g, n);
    return d;
}

static int missing_saved(const char *op) {
    return vlm_set_error("%s backward: an input's requires_grad changed after the forward in "
                         "mixed precision mode (its operand copy was not kept)",
                         op);
}

/* ---- matmul: C = op(A) op(B) per batch ------------------------------------
 * dA = dC op(B)^T and dB = op(A)^T dC, stored back in A's and B's layout:
 *   !ta: dA = dC op(B)^T        ta: dA = op(B) dC^T
 *   !tb: dB = op(A)^T dC        tb: dB = dC^T op(A)                          */

/* GEMMs below this many multiply-adds get no BLAS threads, so a batch of them
 * is spread over OpenMP threads instead (BLAS runs serially inside). */
#define MM_SMALL (64 * 64 * 64)

typedef struct {
    int64_t batch, M, N, K;
    bool ta, tb;
    bool shared; /* b is 2-D and used by every batch */
} mm_dims;

/* C_i = op(A_i) op(B_i) + beta C_i for i < batch, operands strided by sa, sb, sc.
 * sc == 0 means every batch accumulates into one C, so that loop stays serial. */
static void sgemm_strided(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                          int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb,
                          float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
    bool par = sc != 0 && batch > 1 && M * N * K < MM_SMALL && batch * M * N * K >= VLM_PAR_MIN;
#pragma omp parallel for if (par)
    for (int64_t i = 0; i < batch; i++)
        vlm_sgemm(ta, tb, M, N, K, 1.0f, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

static bool mm_shapes(const vlm_tensor *a, const vlm_tensor *b, bool ta, bool tb, mm_dims *d) {
    char sa[64], sb[64];
    vlm_shape_str(a, sa, sizeof sa);
    vlm_shape_str(b, sb, sizeof sb);
    if (a->ndim < 2 || b->ndim < 2) {
        vlm_set_error("matmul: a %s and b %s need at least 2 dims each", sa, sb);
        return false;
    }
    d->shared = b->ndim == 2 && a->ndim > 2;
    if (!d->shared && a->ndim != b->ndim) {
        vlm_set_error("matmul: a %s and b %s: batch dims differ (b must match a's or be 2-D)", sa,
                      sb);
        return false;
    }
    d->batch = 1;
    for (int i = 0; i < a->ndim - 2; i++) {
        if (!d->shared && a->shape[i] != b->shape[i]) {
            vlm_set_error("matmul: a %s and b %s: batch dim %d differs", sa, sb, i);
            return false;
        }
        d->batch *= a->shape[i];
    }
    const int64_t *as = a->shape + a->ndim - 2, *bs = b->shape + b->ndim - 2;
    d->M = ta ? as[1] : as[0];
    d->K = ta ? as[0] : as[1];
    d->N = tb ? bs[0] : bs[1];
    int64_t kb = tb ? bs[1] : bs[0];
    if (d->K != kb) {
        vlm_set_error("matmul: a %s (trans_a %d) x b %s (trans_b %d): inner dims %lld != %lld", sa,
                      ta, sb, tb, (long long)d->K, (long long)kb);
        return false;
    }
    d->ta = ta;
    d->tb = tb;
    return blas_fits("matmul", d->batch * d->M, d->N, d->K);
}

/* With a shared b and an untransposed a, the batches' rows are contiguous:
 * one tall GEMM replaces the loop, forward and backward alike. */
static void mm_stack(mm_dims *d) {
    if (d->shared && !d->ta) {
        d->M *= d->batch;
        d->batch = 1;
    }
}

vlm_tensor *vlm_matmul(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b, bool trans_a, bool trans_b) {
    VLM_PROPAGATE_NULL(a, b);
    if (!vlm_check_f32("matmul", a, "a") || !vlm_check_f32("matmul", b, "b")) return NULL;
    mm_dims d;
    if (!mm_shapes(a, b, trans_a, trans_b, &d)) return NULL;
    int64_t shape[VLM_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[a->ndim - 2] = d.M;
    shape[a->ndim - 1] = d.N;
    vlm_tensor *c = vlm_tensor_new(ctx, VLM_F32, a->ndim, shape);
    if (!c) return NULL;
    mm_stack(&d);
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;
    int64_t sa = d.M * d.K, sb = d.shared ? 0 : d.K * d.N, sc = d.M * d.N;
    vlm_tensor *in[2] = {a, b};
    vlm_precision prec = vlm_ctx_precision(ctx);
    bool rec = vlm_needs_grad(ctx, in, 2);
    /* dB needs A's copy, dA needs B's */
    bool keep_a = rec && b->requires_grad, keep_b = rec && a->requires_grad;
    uint16_t *la = NULL, *lb = NULL; /* the low-precision copies kept for backward */
    if (prec == VLM_PREC_BF16) {
        uint16_t *A = lowp_copy(ctx, vlm_f32(a), a->numel, prec, keep_a, 0);
        uint16_t *B = lowp_copy(ctx, vlm_f32(b), b->numel, prec, keep_b, 1);
        if (!A || !B ||
            vlm_gemm_bf16_batched(d.ta, d.tb, d.M, d.N, d.K, A, lda, sa, B, ldb, sb, 0.0f,
                                  vlm_f32(c), d.N, sc, d.batch))
            return NULL;
        la = keep_a ? A : NULL;
        lb = keep_b ? B : NULL;
    } else if (prec == VLM_PREC_F16) {
        const float *A = round_f16(ctx, vlm_f32(a), a->numel, keep_a, 0, &la);
        const float *B = A ? round_f16(ctx, vlm_f32(b), b->numel, keep_b, 1, &lb) : NULL;
        if (!B) return NULL;
        sgemm_strided(d.ta, d.tb, d.M, d.N, d.K, A, lda, sa, B, ldb, sb, 0.0f, vlm_f32(c), d.N, sc,
                      d.batch);
    } else {
        sgemm_strided(d.ta, d.tb, d.M, d.N, d.K, vlm_f32(a), lda, sa, vlm_f32(b), ldb, sb, 0.0f,
                      vlm_f32(c), d.N, sc, d.batch);
    }
    VLM_RECORD(node, ctx, VLM_OP_MATMUL, c, in, 2);
    if (node) {
        int64_t args[] = {d.batch, d.M, d.N, d.K, d.ta, d.tb, d.shared, prec};
        memcpy(node->iarg, args, sizeof args);
        node->saved[0] = la;
        node->saved[1] = lb;
    }
    return c;
}

/* The four backward products, as one function of the GEMM to call, so the
 * f32 and bf16 paths share the case analysis. A, B, dC are the operands in
 * the element type the gemm takes. */
typedef int (*mm_gemm_fn)(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                          int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb, float *C,
                          int64_t ldc, int64_t sc, int64_t batch);

static int mm_gemm_f32(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                       int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb, float *C,
                       int64_t ldc, int64_t sc, int64_t batch) {
    sgemm_strided(ta, tb, M, N, K, A, lda, sa, B, ldb, sb, 1, C, ldc, sc, batch);
    return 0;
}

static int mm_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void *A,
                        int64_t lda, int64_t sa, const void *B, int64_t ldb, int64_t sb, float *C,
                        int64_t ldc, int64_t sc, int64_t batch) {
    return vlm_gemm_bf16_batched(ta, tb, M, N, K, A, lda, sa, B, ldb, sb, 1, C, ldc, sc, batch);
}

static int mm_backward_gemms(const mm_dims *d, mm_gemm_fn gemm, const void *A, const void *B,
                             const void *dC, float *da, float *db) {
    int64_t lda = d->ta ? d->M : d->K, ldb = d->tb ? d->K : d->N;
    int64_t sa = d->M * d->K, sb = d->shared ? 0 : d->K * d->N, sc = d->M * d->N;
    int64_t M = d->M, N = d->N, K = d->K, nb = d->batch;
    if (da && !d->ta && gemm(false, !d->tb, M, K, N, dC, N, sc, B, ldb, sb, da, K, sa, nb))
        return -1;
    if (da && d->ta && gemm(d->tb, true, K, M, N, B, ldb, sb, dC, N, sc, da, M, sa, nb)) return -1;
    if (db && !d->tb && gemm(!d->ta, false, K, N, M, A, lda, sa, dC, N, sc, db, N, sb, nb))
        return -1;
    if (db && d->tb && gemm(true, d->ta, N, K, M, dC, N, sc, A, lda, sa, db, K, sb, nb)) return -1;
    return 0;
}

int vlm_matmul_backward(vlm_ctx *ctx, vlm_node *node) {
    const int64_t *g = node->iarg;
    mm_dims d = {g[0], g[1], g[2], g[3], g[4] != 0, g[5] != 0, g[6] != 0};
    vlm_precision prec = (vlm_precision)g[7];
    vlm_tensor *a = node->in[0], *b = node->in[1];
    float *da = vlm_input_grad(ctx, a), *db = vlm_input_grad(ctx, b);
    if ((a->requires_grad && !da) || (b->requires_grad && !db)) return -1;
    const float *dC = node->out->grad;
    const uint16_t *la = node->saved[0], *lb = node->saved[1];
    if (prec != VLM_PREC_F32 && ((db && !la) || (da && !lb))) return missing_saved("matmul");
    if (prec == VLM_PREC_BF16) {
        const uint16_t *dCb = grad_bf16(dC, node->out->numel);
        if (!dCb) return -1;
        return mm_backward_gemms(&d, mm_gemm_bf16, la, lb, dCb, da, db);
    }
    if (prec == VLM_PREC_F16) {
        const float *A = db ? widen_f16(la, a->numel, 1) : NULL;
        const float *B = da ? widen_f16(lb, b->numel, 2) : NULL;
        if ((db && !A) || (da && !B)) return -1;
        return mm_backward_gemms(&d, mm_gemm_f32, A, B, dC, da, db);
    }
    return mm_backward_gemms(&d, mm_gemm_f32, vlm_f32(a), vlm_f32(b), dC, da, db);
}

/* ---- linear: Y = X W^T + b over all leading rows of x -----------------------
 * dX += dY W,  dW += dY^T X,  db += column sums of dY; an input that does not
 * require grad (a frozen weight) costs no GEMM. */

static bool linear_shapes(const vlm_tensor *x, const vlm_tensor *w, const vlm_tensor *bias) {
    char sx[64], sw[64], sb[64] = "none";
    vlm_shape_str(x, sx, sizeof sx);
    vlm_shape_str(w, sw, sizeof sw);
    if (bias) vlm_shape_str(bias, sb, sizeof sb);
    if (w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1] ||
        (bias && (bias->ndim != 1 || bias->shape[0] != w->shape[0]))) {
        vlm_set_error("linear: x %s, weight %s, bias %s: need x [..., in], weight [out, in], "
                      "bias [out]",
                      sx, sw, sb);
        return false;
    }
    return true;
}

/* x may already be in the mode's storage type (bf16 in BF16 mode, f16 in F16
 * mode): a producer that feeds only linears can then emit low precision and
 * the f32 activation never exists. Such an x is used and kept by reference. */
static bool linear_x_ok(const vlm_ctx *ctx, const vlm_tensor *x) {
    vlm_precision p = vlm_ctx_precision(ctx);
    if (x->dtype == VLM_F32 || (x->dtype == VLM_BF16 && p == VLM_PREC_BF16) ||
        (x->dtype == VLM_F16 && p == VLM_PREC_F16))
        return true;
    char s[64];
    vlm_set_error("linear: x %s %s needs f32, or the context's storage type (%s mode)",
                  vlm_dtype_name(x->dtype), vlm_shape_str(x, s, sizeof s), vlm_precision_name(p));
    return false;
}

/* r of vlm_linear_residual: f32 with the output's shape. */
static bool residual_ok(const vlm_tensor *r, int ndim, const int64_t *shape) {
    if (!vlm_check_f32("linear_residual", r, "residual")) return false;
    bool same = r->ndim == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = r->shape[i] == shape[i];
    if (same) return true;
    char sr[64];
    vlm_set_error("linear_residual: residual %s must have the output's shape [..., %lld]",
                  vlm_shape_str(r, sr, sizeof sr), (long long)shape[ndim - 1]);
    return false;
}

/* Y (f32, rows x out, or bf16 when y_bf16: BF16 mode only) = X W^T + bias in
 * the context's mode; *lx gets x's low-precision copy when keep_x. */
static int linear_gemm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias, int64_t rows,
                       void *Y, bool y_bf16, bool keep_x, uint16_t **lx) {
    int64_t in = w->shape[1], out = w->shape[0];
    vlm_precision prec = vlm_ctx_precision(ctx);
    bool lowp_x = x->dtype != VLM_F32;
    *lx = NULL;
    if (prec == VLM_PREC_BF16) { /* the primitive adds the bias */
        uint16_t *X = lowp_x ? x->data : lowp_copy(ctx, vlm_f32(x), x->numel, prec, keep_x, 0);
        uint16_t *W = lowp_copy(ctx, vlm_f32(w), w->numel, prec, false, 1);
        if (!X || !W ||
            vlm_gemm_bf16_bias(false, true, rows, out, in, X, in, W, in,
                               bias ? vlm_f32(bias) : NULL, Y, out, y_bf16))
            return -1;
        *lx = keep_x ? X : NULL;
        return 0;
    }
    float *Yf = Y;
    if (bias) {
#pragma omp parallel for if (rows * out >= VLM_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            memcpy(Yf + r * out, bias->data, (size_t)out * sizeof(float));
    }
    const float *X = vlm_f32(x);
    if (prec == VLM_PREC_F16) {
        /* only the activation is rounded: W is the f32 master and dX uses it as is */
        X = lowp_x ? widen_f16(x->data, x->numel, 0)
                   : round_f16(ctx, vlm_f32(x), x->numel, keep_x, 0, lx);
        if (!X) return -1;
        if (lowp_x && keep_x) *lx = x->data;
    }
    vlm_sgemm(false, true, rows, out, in, 1.0f, X, in, vlm_f32(w), in, bias ? 1.0f : 0.0f, Yf,
              out);
    return 0;
}

/* lowp: y in the context's storage type. BF16 mode has the GEMM write bf16;
 * F16 mode computes f32 in scratch and rounds it into y. r (f32, y's shape):
 * a residual added to y (vlm_linear_residual; then !lowp). */
static vlm_tensor *linear(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias,
                          vlm_tensor *r, bool lowp) {
    if (!linear_x_ok(ctx, x) || !vlm_check_f32("linear", w, "weight") ||
        (bias && !vlm_check_f32("linear", bias, "bias")) || !linear_shapes(x, w, bias))
        return NULL;
    int64_t out = w->shape[0], rows = 1;
    for (int i = 0; i < x->ndim - 1; i++)
        rows *= x->shape[i];
    if (!blas_fits("linear", rows, out, w->shape[1])) return NULL;
    int64_t shape[VLM_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    if (r && !residual_ok(r, x->ndim, shape)) return NULL;
    vlm_dtype dt = lowp ? vlm_ctx_lowp_dtype(ctx) : VLM_F32;
    vlm_tensor *y = vlm_tensor_new(ctx, dt, x->ndim, shape);
    if (!y) return NULL;
    bool via_f32 = dt == VLM_F16; /* the GEMMs write f32 or bf16 (slots 0-2: the operands) */
    void *Y = via_f32 ? vlm_mp_scratch(3, (size_t)y->numel * sizeof(float)) : y->data;
    /* linear: {x, w, bias}; linear_residual: {x, w, r, bias} */
    vlm_tensor *inputs[4] = {x, w, r ? r : bias, bias};
    int n_in = 2 + (r != NULL) + (bias != NULL);
    /* dW needs x's copy. dX needs W's, which backward makes again from the
     * f32 weight (the same bf16 values; a pass over W is cheap next to the
     * GEMMs and keeps a copy of every weight out of the arena). */
    bool keep_x = vlm_needs_grad(ctx, inputs, n_in) && w->requires_grad;
    uint16_t *lx;
    if (!Y || linear_gemm(ctx, x, w, bias, rows, Y, dt == VLM_BF16, keep_x, &lx)) return NULL;
    if (via_f32) vlm_f32_to_f16_n(y->data, Y, y->numel);
    if (r) {
        float *yv = vlm_f32(y);
        const float *rv = vlm_f32(r);
#pragma omp parallel for simd if (y->numel >= VLM_PAR_MIN)
        for (int64_t i = 0; i < y->numel; i++)
            yv[i] += rv[i];
    }
    VLM_RECORD(node, ctx, r ? VLM_OP_LINEAR_RESIDUAL : VLM_OP_LINEAR, y, inputs, n_in);
    if (node) {
        node->iarg[0] = rows;
        node->iarg[1] = vlm_ctx_precision(ctx);
        node->saved[0] = lx;
    }
    return y;
}

vlm_tensor *vlm_linear(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias) {
    VLM_PROPAGATE_NULL(x, w);
    return linear(ctx, x, w, bias, NULL, false);
}

vlm_tensor *vlm_linear_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias) {
    VLM_PROPAGATE_NULL(x, w);
    return linear(ctx, x, w, bias, NULL, true);
}

/* ---- linear_residual: y = r + x W^T + bias;  dr += dy, the rest as linear ----
 * A residual branch's last linear with the skip connection's add folded in:
 * the linear's own output never exists apart from y, which saves an
 * activation the size of the residual stream per block (and the add's pass
 * over it; the sum is the same float as vlm_add(r, vlm_linear(...))). */

vlm_tensor *vlm_linear_residual(vlm_ctx *ctx, vlm_tensor *r, vlm_tensor *x, vlm_tensor *w,
                                vlm_tensor *bias) {
    VLM_PROPAGATE_NULL(r, x, w);
    return linear(ctx, x, w, bias, r, false);
}

/* db[j] (+)= sum_r dy[r, j] (stored when fresh). Threads own blocks of
 * columns: no two write the same element and the order over rows is fixed,
 * so results do not depend on the thread count. */
#define COL_BLOCK 64
static void col_sums(const float *dy, int64_t rows, int64_t cols, float *db, bool fresh) {
    int64_t nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
    float keep = vlm_grad_keep(fresh);
#pragma omp parallel for if (rows * cols >= VLM_PAR_MIN)
    for (int64_t bk = 0; bk < nblk; bk++) {
        int64_t j0 = bk * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < nj; j++)
                acc[j] += dy[r * cols + j0 + j];
        for (int64_t j = 0; j < nj; j++)
            db[j0 + j] = VLM_OLD(keep, db[j0 + j]) + (float)acc[j];
    }
}

/* BF16 backward: dY rounded to bf16 (scratch slot 0) and, when db, db (+)=
 * its column sums, in one pass over dY. Rows go in fixed blocks whose partial
 * sums (double, scratch slot 2) are added in block order, so the result does
 * not depend on the thread count. */
#define CS_ROWS 128
static uint16_t *grad_bf16_sums(const float *dY, int64_t rows, int64_t cols, float *db,
                                bool fresh) {
    uint16_t *d = vlm_mp_scratch(0, (size_t)(rows * cols) * sizeof(uint16_t));
    int64_t nblk = (rows + CS_ROWS - 1) / CS_ROWS;
    double *part = db ? vlm_mp_scratch(2, (size_t)(nblk * cols) * sizeof(double)) : NULL;
    if (!d || (db && !part)) return NULL;
#pragma omp parallel for if (rows * cols >= VLM_PAR_MIN)
    for (int64_t bk = 0; bk < nblk; bk++) {
        int64_t r0 = bk * CS_ROWS, nr = rows - r0 < CS_ROWS ? rows - r0 : CS_ROWS;
        vlm_store_f32_as(d + r0 * cols, VLM_BF16, dY + r0 * cols, nr * cols);
        if (!part) continue;
        double *acc = part + bk * cols;
        for (int64_t j = 0; j < cols; j++)
            acc[j] = 0;
        for (int64_t r = r0; r < r0 + nr; r++)
            for (int64_t j = 0; j < cols; j++)
                acc[j] += dY[r * cols + j];
    }
    float keep = vlm_grad_keep(fresh);
    for (int64_t j = 0; db && j < cols; j++) {
        double s = 0;
        for (int64_t bk = 0; bk < nblk; bk++)
            s += part[bk * cols + j];
        db[j] = VLM_OLD(keep, db[j]) + (float)s;
    }
    return d;
}

/* Each grad is fetched right before its GEMM (raw: a first contribution is
 * stored with beta 0, no zero fill), so x and w may even be one tensor. */
static int linear_grads(vlm_ctx *ctx, vlm_node *node, vlm_tensor *bias) {
    vlm_tensor *x = node->in[0], *w = node->in[1];
    bool need_x = x->requires_grad, need_w = w->requires_grad, fresh, fresh_b;
    int64_t rows = node->iarg[0], out = w->shape[0], in = w->shape[1];
    vlm_precision prec = (vlm_precision)node->iarg[1];
    const float *dY = node->out->grad;
    const uint16_t *lx = node->saved[0], *lw = NULL;
    float *dx, *dw, *db = vlm_input_grad_raw(ctx, bias, &fresh_b);
    if (bias && bias->requires_grad && !db) return -1;
    if (prec == VLM_PREC_BF16) {
        if (need_w && !lx) return missing_saved("linear");
        /* the bias grad comes with dY's conversion (one pass over dY) */
        const uint16_t *dYb =
            need_x || need_w || db ? grad_bf16_sums(dY, rows, out, db, fresh_b) : NULL;
        if ((need_x || need_w || db) && !dYb) return -1;
        db = NULL;
        if (need_x && !(lw = lowp_copy(ctx, vlm_f32(w), w->numel, prec, false, 1))) return -1;
        if ((dx = vlm_input_grad_raw(ctx, x, &fresh)) &&
            vlm_gemm_bf16(false, false, rows, in, out, dYb, out, lw, in, !fresh, dx, in))
            return -1;
        if (need_x && !dx) return -1;
        if ((dw = vlm_input_grad_raw(ctx, w, &fresh)) &&
            vlm_gemm_bf16(true, false, out, in, rows, dYb, out, lx, in, !fresh, dw, in))
            return -1;
        if (need_w && !dw) return -1;
    } else {
        const float *X = vlm_f32(x), *W = vlm_f32(w);
        if (prec == VLM_PREC_F16 && need_w) {
            if (!lx) return missing_saved("linear");
            if (!(X = widen_f16(lx, rows * in, 0))) return -1;
        }
        if ((dx = vlm_input_grad_raw(ctx, x, &fresh)))
            vlm_sgemm(false, false, rows, in, out, 1.0f, dY, out, W, in, !fresh, dx, in);
        if (need_x && !dx) return -1;
        if ((dw = vlm_input_grad_raw(ctx, w, &fresh)))
            vlm_sgemm(true, false, out, in, rows, 1.0f, dY, out, X, in, !fresh, dw, in);
        if (need_w && !dw) return -1;
    }
    if (db) col_sums(dY, rows, out, db, fresh_b);
    return 0;
}

int vlm_linear_backward(vlm_ctx *ctx, vlm_node *node) {
    return linear_grads(ctx, node, node->n_in > 2 ? node->in[2] : NULL);
}

/* The linear's grads read dy first; then r takes dy over when it can. */
int vlm_linear_residual_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *r = node->in[2];
    if (linear_grads(ctx, node, node->n_in > 3 ? node->in[3] : NULL)) return -1;
    if (vlm_grad_steal(ctx, r, node->out)) return 0;
    bool fresh;
    float *dr = vlm_input_grad_raw(ctx, r, &fresh);
    if (!dr) return r->requires_grad ? -1 : 0;
    const float *dy = node->out->grad;
    float keep = vlm_grad_keep(fresh);
#pragma omp parallel for simd if (r->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < r->numel; i++)
        dr[i] = VLM_OLD(keep, dr[i]) + dy[i];
    return 0;
}

/* ---- embedding: out[i] = table[ids[i]];  dtable[ids[i]] += dout[i] --------- */

static bool embedding_ids_ok(const vlm_tensor *table, const vlm_tensor *ids) {
    const int32_t *id = vlm_i32(ids);
    int64_t V = table->shape[0];
    for (int64_t i = 0; i < ids->numel; i++) {
        if (id[i] < 0 || id[i] >= V) {
            char st[64], si[64];
            vlm_set_error("embedding: id %d at position %lld out of range [0, %lld) "
                          "(table %s, ids %s)",
                          id[i], (long long)i, (long long)V, vlm_shape_str(table, st, sizeof st),
                          vlm_shape_str(ids, si, sizeof si));
            return false;
        }
    }
    return true;
}

vlm_tensor *vlm_embedding(vlm_ctx *ctx, vlm_tensor *table, vlm_tensor *ids) {
    VLM_PROPAGATE_NULL(table, ids);
    if (!vlm_check_f32("embedding", table, "table") ||
        !vlm_check_dtype("embedding", ids, VLM_I32, "ids"))
        return NULL;
    if (table->ndim != 2 || ids->ndim > VLM_MAX_DIMS - 1) {
        char st[64], si[64];
        vlm_set_error("embedding: table %s must be [V, D] and ids %s at most %d-D",
                      vlm_shape_str(table, st, sizeof st), vlm_shape_str(ids, si, sizeof si),
                      VLM_MAX_DIMS - 1);
        return NULL;
    }
    if (!embedding_ids_ok(table, ids)) return NULL;
    int64_t D = table->shape[1], shape[VLM_MAX_DIMS];
    memcpy(shape, ids->shape, sizeof(int64_t) * (size_t)ids->ndim);
    shape[ids->ndim] = D;
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, ids->ndim + 1, shape);
    if (!y) return NULL;
    const int32_t *id = vlm_i32(ids);
    const float *T = vlm_f32(table);
    float *Y = vlm_f32(y);
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < ids->numel; i++)
        memcpy(Y + i * D, T + (int64_t)id[i] * D, (size_t)D * sizeof(float));
    vlm_tensor *in[2] = {table, ids};
    VLM_RECORD(node, ctx, VLM_OP_EMBEDDING, y, in, 2);
    (void)node; /* nothing to save: backward needs only the inputs and the output */
    return y;
}

/* Each thread owns a contiguous range of table rows and scans all ids, so a
 * repeated id never races and rows accumulate in id order for any thread count. */
int vlm_embedding_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *table = node->in[0], *ids = node->in[1];
    float *dt = vlm_input_grad(ctx, table);
    if (!dt) return table->requires_grad ? -1 : 0;
    const int32_t *id = vlm_i32(ids);
    const float *dy = node->out->grad;
    int64_t V = table->shape[0], D = table->shape[1], n = ids->numel;
#pragma omp parallel if (n * D >= VLM_PAR_MIN)
    {
        int64_t nt = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = V * t / nt, hi = V * (t + 1) / nt;
        for (int64_t i = 0; i < n; i++) {
            if (id[i] < lo || id[i] >= hi) continue;
            float *row = dt + (int64_t)id[i] * D;
            const float *g = dy + i * D;
            for (int64_t j = 0; j < D; j++)
                row[j] += g[j];
        }
    }
    return 0;
}
