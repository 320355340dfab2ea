/* ops_matmul.c - matmul, linear and embedding.
 *
 * Every product goes through vlm_sgemm with transpose flags and leading
 * dimensions, so no transposed copy is made, forward or backward. Backward
 * GEMMs use beta = 1: grads accumulate, and an input used twice (x @ x^T)
 * receives both contributions. */
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
    sgemm_strided(d.ta, d.tb, d.M, d.N, d.K, vlm_f32(a), lda, d.M * d.K, vlm_f32(b), ldb,
                  d.shared ? 0 : d.K * d.N, 0.0f, vlm_f32(c), d.N, d.M * d.N, d.batch);
    vlm_tensor *in[2] = {a, b};
    VLM_RECORD(node, ctx, VLM_OP_MATMUL, c, in, 2);
    if (node) {
        int64_t args[] = {d.batch, d.M, d.N, d.K, d.ta, d.tb, d.shared};
        memcpy(node->iarg, args, sizeof args);
    }
    return c;
}

int vlm_matmul_backward(vlm_ctx *ctx, vlm_node *node) {
    const int64_t *g = node->iarg;
    mm_dims d = {g[0], g[1], g[2], g[3], g[4] != 0, g[5] != 0, g[6] != 0};
    vlm_tensor *a = node->in[0], *b = node->in[1];
    float *da = vlm_input_grad(ctx, a), *db = vlm_input_grad(ctx, b);
    if ((a->requires_grad && !da) || (b->requires_grad && !db)) return -1;
    const float *A = vlm_f32(a), *B = vlm_f32(b), *dC = node->out->grad;
    int64_t lda = d.ta ? d.M : d.K, ldb = d.tb ? d.K : d.N;
    int64_t sa = d.M * d.K, sb = d.shared ? 0 : d.K * d.N, sc = d.M * d.N;
    if (da && !d.ta)
        sgemm_strided(false, !d.tb, d.M, d.K, d.N, dC, d.N, sc, B, ldb, sb, 1, da, d.K, sa,
                      d.batch);
    if (da && d.ta)
        sgemm_strided(d.tb, true, d.K, d.M, d.N, B, ldb, sb, dC, d.N, sc, 1, da, d.M, sa, d.batch);
    if (db && !d.tb)
        sgemm_strided(!d.ta, false, d.K, d.N, d.M, A, lda, sa, dC, d.N, sc, 1, db, d.N, sb,
                      d.batch);
    if (db && d.tb)
        sgemm_strided(true, d.ta, d.N, d.K, d.M, dC, d.N, sc, A, lda, sa, 1, db, d.K, sb, d.batch);
    return 0;
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

vlm_tensor *vlm_linear(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias) {
    VLM_PROPAGATE_NULL(x, w);
    if (!vlm_check_f32("linear", x, "x") || !vlm_check_f32("linear", w, "weight") ||
        (bias && !vlm_check_f32("linear", bias, "bias")) || !linear_shapes(x, w, bias))
        return NULL;
    int64_t in = w->shape[1], out = w->shape[0], rows = 1;
    for (int i = 0; i < x->ndim - 1; i++)
        rows *= x->shape[i];
    if (!blas_fits("linear", rows, out, in)) return NULL;
    int64_t shape[VLM_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out;
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, x->ndim, shape);
    if (!y) return NULL;
    float *Y = vlm_f32(y);
    if (bias) {
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
        for (int64_t r = 0; r < rows; r++)
            memcpy(Y + r * out, bias->data, (size_t)out * sizeof(float));
    }
    vlm_sgemm(false, true, rows, out, in, 1.0f, vlm_f32(x), in, vlm_f32(w), in, bias ? 1.0f : 0.0f,
              Y, out);
    vlm_tensor *inputs[3] = {x, w, bias};
    VLM_RECORD(node, ctx, VLM_OP_LINEAR, y, inputs, bias ? 3 : 2);
    if (node) node->iarg[0] = rows;
    return y;
}

/* db[j] += sum_r dy[r, j]. Threads own blocks of columns: no two write the
 * same element and the order over rows is fixed, so results do not depend on
 * the thread count. */
#define COL_BLOCK 64
static void col_sums(const float *dy, int64_t rows, int64_t cols, float *db) {
    int64_t nblk = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (rows * cols >= VLM_PAR_MIN)
    for (int64_t bk = 0; bk < nblk; bk++) {
        int64_t j0 = bk * COL_BLOCK, nj = cols - j0 < COL_BLOCK ? cols - j0 : COL_BLOCK;
        double acc[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < nj; j++)
                acc[j] += dy[r * cols + j0 + j];
        for (int64_t j = 0; j < nj; j++)
            db[j0 + j] += (float)acc[j];
    }
}

int vlm_linear_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0], *w = node->in[1], *bias = node->n_in > 2 ? node->in[2] : NULL;
    float *dx = vlm_input_grad(ctx, x), *dw = vlm_input_grad(ctx, w);
    float *db = vlm_input_grad(ctx, bias);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) ||
        (bias && bias->requires_grad && !db))
        return -1;
    int64_t rows = node->iarg[0], out = w->shape[0], in = w->shape[1];
    const float *dY = node->out->grad;
    if (dx) vlm_sgemm(false, false, rows, in, out, 1.0f, dY, out, vlm_f32(w), in, 1.0f, dx, in);
    if (dw) vlm_sgemm(true, false, out, in, rows, 1.0f, dY, out, vlm_f32(x), in, 1.0f, dw, in);
    if (db) col_sums(dY, rows, out, db);
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
