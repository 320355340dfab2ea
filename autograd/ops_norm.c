/* ops_norm.c - row-wise ops over the last dim: layernorm, rmsnorm,
 * l2_normalize, softmax, log_softmax.
 *
 * Row statistics are accumulated in double (in SIMD lanes: the order is fixed
 * by the code, not the thread count) and saved per row as f32; the forward
 * then uses the saved f32 values, so forward and backward see the same
 * numbers. Rows are independent: every loop is parallel over rows,
 * except the weight/bias grads, which are parallel over columns. */
#include "internal.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

/* Rows of a [..., D] tensor (0 when D is 0, so empty tensors do nothing). */
static int64_t n_rows(const vlm_tensor *x, int64_t D) { return D ? x->numel / D : 0; }

static bool param_ok(const char *op, const vlm_tensor *x, const vlm_tensor *p, const char *what) {
    if (!vlm_check_f32(op, p, what)) return false;
    if (p->ndim == 1 && p->shape[0] == x->shape[x->ndim - 1]) return true;
    char sx[64], sp[64];
    vlm_set_error("%s: %s %s must be [D] for x %s", op, what, vlm_shape_str(p, sp, sizeof sp),
                  vlm_shape_str(x, sx, sizeof sx));
    return false;
}

/* dw[j] += sum_r dy[r,j] xhat[r,j] and db[j] += sum_r dy[r,j], with
 * xhat = (x - mean[r]) rstd[r] (mean NULL: 0). Threads own blocks of columns,
 * so nothing races and the order over rows does not depend on the thread count. */
#define COL_BLOCK 64
static void norm_param_grads(const float *x, const float *dy, const float *mean, const float *rstd,
                             int64_t rows, int64_t D, float *dw, float *db) {
    int64_t nblk = (D + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for if (rows * D >= VLM_PAR_MIN)
    for (int64_t bk = 0; bk < nblk; bk++) {
        int64_t j0 = bk * COL_BLOCK, nj = D - j0 < COL_BLOCK ? D - j0 : COL_BLOCK;
        double aw[COL_BLOCK] = {0}, ab[COL_BLOCK] = {0};
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = x + r * D + j0, *gr = dy + r * D + j0;
            float m = mean ? mean[r] : 0.0f, s = rstd[r];
            for (int64_t j = 0; j < nj; j++) {
                aw[j] += (double)gr[j] * ((xr[j] - m) * s);
                ab[j] += gr[j];
            }
        }
        for (int64_t j = 0; j < nj; j++) {
            if (dw) dw[j0 + j] += (float)aw[j];
            if (db) db[j0 + j] += (float)ab[j];
        }
    }
}

/* Output rows are computed in f32 and, for a low-precision output (the _lowp
 * variants), stored through a stack buffer of ROW_CHUNK values: the same
 * rounding as converting the f32 output afterwards, without ever keeping it. */
#define ROW_CHUNK 256

static vlm_tensor *norm_out(vlm_ctx *ctx, const vlm_tensor *x, bool lowp) {
    return vlm_tensor_new(ctx, lowp ? vlm_ctx_lowp_dtype(ctx) : VLM_F32, x->ndim, x->shape);
}

/* Row r's chunk [j0, j0 + n) of y: into y itself (f32) or into buf, then stored. */
static float *row_dst(vlm_tensor *y, int64_t at, float *buf) {
    return y->dtype == VLM_F32 ? vlm_f32(y) + at : buf;
}
static void row_store(vlm_tensor *y, int64_t at, const float *buf, int64_t n) {
    if (y->dtype != VLM_F32)
        vlm_store_f32_as((char *)y->data + at * (int64_t)vlm_dtype_size(y->dtype), y->dtype, buf,
                         n);
}

/* ---- layernorm: y = (x - mean) rstd w + b, rstd = 1 / sqrt(var + eps) ------
 * With xhat = (x - mean) rstd and g = dy w:
 *   dx = rstd (g - mean(g) - xhat mean(g xhat)),  dw += dy xhat,  db += dy   */

static vlm_tensor *layernorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b, float eps,
                             bool lowp) {
    VLM_PROPAGATE_NULL(x, w);
    if (!vlm_check_f32("layernorm", x, "x") || !param_ok("layernorm", x, w, "weight") ||
        (b && !param_ok("layernorm", x, b, "bias")))
        return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    vlm_tensor *y = norm_out(ctx, x, lowp);
    float *mean = vlm_arena_alloc(ctx, (size_t)rows * sizeof(float));
    float *rstd = vlm_arena_alloc(ctx, (size_t)rows * sizeof(float));
    if (!y || !mean || !rstd) return NULL;
    const float *W = vlm_f32(w), *B = b ? vlm_f32(b) : NULL;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D;
        double s = 0, v = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < D; j++)
            s += xr[j];
        double mu = s / (double)D;
#pragma omp simd reduction(+ : v)
        for (int64_t j = 0; j < D; j++)
            v += (xr[j] - mu) * (xr[j] - mu);
        float m = (float)mu, rs = (float)(1.0 / sqrt(v / (double)D + eps));
        mean[r] = m;
        rstd[r] = rs;
        float buf[ROW_CHUNK];
        for (int64_t j0 = 0; j0 < D; j0 += ROW_CHUNK) {
            int64_t n = D - j0 < ROW_CHUNK ? D - j0 : ROW_CHUNK;
            float *yr = row_dst(y, r * D + j0, buf);
            for (int64_t j = 0; j < n; j++)
                yr[j] = (xr[j0 + j] - m) * rs * W[j0 + j] + (B ? B[j0 + j] : 0.0f);
            row_store(y, r * D + j0, buf, n);
        }
    }
    vlm_tensor *in[3] = {x, w, b};
    VLM_RECORD(node, ctx, VLM_OP_LAYERNORM, y, in, b ? 3 : 2);
    if (node) {
        node->saved[0] = mean;
        node->saved[1] = rstd;
    }
    return y;
}

vlm_tensor *vlm_layernorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b, float eps) {
    return layernorm(ctx, x, w, b, eps, false);
}

vlm_tensor *vlm_layernorm_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b,
                               float eps) {
    return layernorm(ctx, x, w, b, eps, true);
}

int vlm_layernorm_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0], *w = node->in[1], *b = node->n_in > 2 ? node->in[2] : NULL;
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, x, &fresh), *dw = vlm_input_grad(ctx, w);
    float *db = vlm_input_grad(ctx, b);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw) || (b && b->requires_grad && !db))
        return -1;
    const float *mean = node->saved[0], *rstd = node->saved[1], *W = vlm_f32(w);
    const float *dy = node->out->grad;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    float keep = vlm_grad_keep(fresh);
    if (dx) {
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = vlm_f32(x) + r * D, *gr = dy + r * D;
            float m = mean[r], rs = rstd[r], *dxr = dx + r * D;
            double sg = 0, sgx = 0;
#pragma omp simd reduction(+ : sg, sgx)
            for (int64_t j = 0; j < D; j++) {
                float g = gr[j] * W[j];
                sg += g;
                sgx += (double)g * ((xr[j] - m) * rs);
            }
            float mg = (float)(sg / (double)D), mgx = (float)(sgx / (double)D);
            for (int64_t j = 0; j < D; j++)
                dxr[j] = VLM_OLD(keep, dxr[j]) + rs * (gr[j] * W[j] - mg - (xr[j] - m) * rs * mgx);
        }
    }
    if (dw || db) norm_param_grads(vlm_f32(x), dy, mean, rstd, rows, D, dw, db);
    return 0;
}

/* ---- rmsnorm: y = w x r, r = 1 / sqrt(mean(x^2) + eps) ----------------------
 * With g = dy w:  dx = r (g - x r^2 mean(g x)),  dw += dy x r               */

static vlm_tensor *rmsnorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, float eps, bool lowp) {
    VLM_PROPAGATE_NULL(x, w);
    if (!vlm_check_f32("rmsnorm", x, "x") || !param_ok("rmsnorm", x, w, "weight")) return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    vlm_tensor *y = norm_out(ctx, x, lowp);
    float *rinv = vlm_arena_alloc(ctx, (size_t)rows * sizeof(float));
    if (!y || !rinv) return NULL;
    const float *W = vlm_f32(w);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D;
        double ss = 0;
#pragma omp simd reduction(+ : ss)
        for (int64_t j = 0; j < D; j++)
            ss += (double)xr[j] * xr[j];
        float rs = (float)(1.0 / sqrt(ss / (double)D + eps));
        rinv[r] = rs;
        float buf[ROW_CHUNK];
        for (int64_t j0 = 0; j0 < D; j0 += ROW_CHUNK) {
            int64_t n = D - j0 < ROW_CHUNK ? D - j0 : ROW_CHUNK;
            float *yr = row_dst(y, r * D + j0, buf);
            for (int64_t j = 0; j < n; j++)
                yr[j] = W[j0 + j] * (xr[j0 + j] * rs);
            row_store(y, r * D + j0, buf, n);
        }
    }
    vlm_tensor *in[2] = {x, w};
    VLM_RECORD(node, ctx, VLM_OP_RMSNORM, y, in, 2);
    if (node) node->saved[0] = rinv;
    return y;
}

vlm_tensor *vlm_rmsnorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, float eps) {
    return rmsnorm(ctx, x, w, eps, false);
}

vlm_tensor *vlm_rmsnorm_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, float eps) {
    return rmsnorm(ctx, x, w, eps, true);
}

int vlm_rmsnorm_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0], *w = node->in[1];
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, x, &fresh), *dw = vlm_input_grad(ctx, w);
    if ((x->requires_grad && !dx) || (w->requires_grad && !dw)) return -1;
    const float *rinv = node->saved[0], *W = vlm_f32(w), *dy = node->out->grad;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    float keep = vlm_grad_keep(fresh);
    if (dx) {
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
        for (int64_t r = 0; r < rows; r++) {
            const float *xr = vlm_f32(x) + r * D, *gr = dy + r * D;
            float rs = rinv[r], *dxr = dx + r * D;
            double sgx = 0;
#pragma omp simd reduction(+ : sgx)
            for (int64_t j = 0; j < D; j++)
                sgx += (double)(gr[j] * W[j]) * xr[j];
            float c = (float)(sgx / (double)D) * rs * rs;
            for (int64_t j = 0; j < D; j++)
                dxr[j] = VLM_OLD(keep, dxr[j]) + rs * (gr[j] * W[j] - xr[j] * c);
        }
    }
    if (dw) norm_param_grads(vlm_f32(x), dy, NULL, rinv, rows, D, dw, NULL);
    return 0;
}

/* ---- l2_normalize: y = x / max(||x||, eps) -----------------------------------
 * ||x|| > eps: dx = (g - y (y . g)) / ||x||;   clamped: dx = g / eps          */

vlm_tensor *vlm_l2_normalize(vlm_ctx *ctx, vlm_tensor *x, float eps) {
    VLM_PROPAGATE_NULL(x);
    if (!vlm_check_f32("l2_normalize", x, "x")) return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    vlm_tensor *y = vlm_new_like(ctx, x);
    float *norm = vlm_arena_alloc(ctx, (size_t)rows * sizeof(float));
    if (!y || !norm) return NULL;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D;
        float *yr = vlm_f32(y) + r * D;
        double ss = 0;
        for (int64_t j = 0; j < D; j++)
            ss += (double)xr[j] * xr[j];
        norm[r] = (float)sqrt(ss);
        float inv = 1.0f / (norm[r] > eps ? norm[r] : eps);
        for (int64_t j = 0; j < D; j++)
            yr[j] = xr[j] * inv;
    }
    VLM_RECORD(node, ctx, VLM_OP_L2_NORMALIZE, y, &x, 1);
    if (node) {
        node->saved[0] = norm;
        node->farg[0] = eps;
    }
    return y;
}

int vlm_l2_normalize_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0];
    float *dx = vlm_input_grad(ctx, x);
    if (!dx) return x->requires_grad ? -1 : 0;
    const float *norm = node->saved[0], *Y = vlm_f32(node->out), *dy = node->out->grad;
    float eps = node->farg[0];
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = Y + r * D, *gr = dy + r * D;
        bool clamped = !(norm[r] > eps);
        float inv = 1.0f / (clamped ? eps : norm[r]);
        double yg = 0;
        if (!clamped)
            for (int64_t j = 0; j < D; j++)
                yg += (double)yr[j] * gr[j];
        float p = (float)yg;
        for (int64_t j = 0; j < D; j++)
            dx[r * D + j] += (gr[j] - yr[j] * p) * inv;
    }
    return 0;
}

/* ---- softmax: y = exp(x - max) / sum;  dx = y (g - sum(g y)) ----------------- */

static float row_max(const float *x, int64_t D) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < D; j++)
        m = x[j] > m ? x[j] : m;
    return m;
}

vlm_tensor *vlm_softmax(vlm_ctx *ctx, vlm_tensor *x) {
    VLM_PROPAGATE_NULL(x);
    if (!vlm_check_f32("softmax", x, "x")) return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    vlm_tensor *y = vlm_new_like(ctx, x);
    if (!y) return NULL;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D;
        float *yr = vlm_f32(y) + r * D;
        float m = row_max(xr, D);
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < D; j++)
            s += yr[j] = vm_exp(xr[j] - m);
        float inv = (float)(1.0 / s);
        for (int64_t j = 0; j < D; j++)
            yr[j] *= inv;
    }
    VLM_RECORD(node, ctx, VLM_OP_SOFTMAX, y, &x, 1);
    (void)node; /* nothing to save: backward needs only the inputs and the output */
    return y;
}

int vlm_softmax_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0];
    float *dx = vlm_input_grad(ctx, x);
    if (!dx) return x->requires_grad ? -1 : 0;
    const float *Y = vlm_f32(node->out), *dy = node->out->grad;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = Y + r * D, *gr = dy + r * D;
        double s = 0;
        for (int64_t j = 0; j < D; j++)
            s += (double)gr[j] * yr[j];
        float gy = (float)s;
        for (int64_t j = 0; j < D; j++)
            dx[r * D + j] += yr[j] * (gr[j] - gy);
    }
    return 0;
}

/* ---- log_softmax: y = (x - max) - log sum exp(x - max);  dx = g - exp(y) sum(g) */

vlm_tensor *vlm_log_softmax(vlm_ctx *ctx, vlm_tensor *x) {
    VLM_PROPAGATE_NULL(x);
    if (!vlm_check_f32("log_softmax", x, "x")) return NULL;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
    vlm_tensor *y = vlm_new_like(ctx, x);
    if (!y) return NULL;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = vlm_f32(x) + r * D;
        float *yr = vlm_f32(y) + r * D;
        float m = row_max(xr, D);
        double s = 0;
#pragma omp simd reduction(+ : s)
        for (int64_t j = 0; j < D; j++)
            s += vm_exp(xr[j] - m);
        float ls = (float)log(s); /* x - m is exact; adding m to ls first would round */
        for (int64_t j = 0; j < D; j++)
            yr[j] = (xr[j] - m) - ls;
    }
    VLM_RECORD(node, ctx, VLM_OP_LOG_SOFTMAX, y, &x, 1);
    (void)node; /* nothing to save: backward needs only the inputs and the output */
    return y;
}

int vlm_log_softmax_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *x = node->in[0];
    float *dx = vlm_input_grad(ctx, x);
    if (!dx) return x->requires_grad ? -1 : 0;
    const float *Y = vlm_f32(node->out), *dy = node->out->grad;
    int64_t D = x->shape[x->ndim - 1], rows = n_rows(x, D);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = Y + r * D, *gr = dy + r * D;
        double s = 0;
        for (int64_t j = 0; j < D; j++)
            s += gr[j];
        float sg = (float)s;
        for (int64_t j = 0; j < D; j++)
            dx[r * D + j] += gr[j] - vm_exp(yr[j]) * sg;
    }
    return 0;
}
