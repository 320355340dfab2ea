/* ops_reduce.c - sums and means over the last dim or over everything, and the
 * masked mean over tokens.
 *
 * Sums accumulate in double: a float running sum over 10^6 terms keeps only
 * about 3 correct digits. Partial sums are taken over a fixed split of the
 * data and combined in order, so results do not depend on the thread count. */
#include "internal.h"

#include <string.h>

/* Four accumulators: independent chains pipeline; double keeps them exact
 * enough that their order does not matter at f32 output precision. */
static double sum_f64(const float *x, int64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += x[i];
        s1 += x[i + 1];
        s2 += x[i + 2];
        s3 += x[i + 3];
    }
    for (; i < n; i++) s0 += x[i];
    return (s0 + s1) + (s2 + s3);
}

/* ---- sum_last / mean_last: y[r] = c sum_j x[r, j];  dx[r, j] += c dy[r] ----
 * with c = 1 (sum) or 1/D (mean). */

static vlm_tensor *reduce_last(vlm_ctx *ctx, vlm_tensor *a, vlm_op op, const char *name) {
    VLM_PROPAGATE_NULL(a);
    if (!vlm_check_f32(name, a, "input")) return NULL;
    const bool mean = op == VLM_OP_MEAN_LAST;
    const int64_t D = a->shape[a->ndim - 1];
    if (mean && D == 0) {
        char s[64];
        vlm_set_error("%s: empty last dim in %s", name, vlm_shape_str(a, s, sizeof s));
        return NULL;
    }
    int64_t shape[VLM_MAX_DIMS] = {1};
    for (int i = 0; i < a->ndim - 1; i++) shape[i] = a->shape[i];
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, a->ndim > 1 ? a->ndim - 1 : 1, shape);
    if (!y) return NULL;
    const float *x = vlm_f32(a);
    float *o = vlm_f32(y);
#pragma omp parallel for if (a->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < y->numel; r++) {
        double s = sum_f64(x + r * D, D);
        o[r] = (float)(mean ? s / (double)D : s);
    }
    VLM_RECORD(node, ctx, op, y, &a, 1);
    (void)node;
    return y;
}

static int reduce_last_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *x = node->in[0], *y = node->out;
    const int64_t D = x->shape[x->ndim - 1];
    const float c = node->op == VLM_OP_MEAN_LAST ? 1.0f / (float)D : 1.0f;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < y->numel; r++) {
        const float g = c * y->grad[r];
        for (int64_t j = 0; j < D; j++) dx[r * D + j] += g;
    }
    return 0;
}

vlm_tensor *vlm_sum_last(vlm_ctx *ctx, vlm_tensor *a) {
    return reduce_last(ctx, a, VLM_OP_SUM_LAST, "sum_last");
}
int vlm_sum_last_backward(vlm_ctx *ctx, vlm_node *node) { return reduce_last_backward(ctx, node); }

vlm_tensor *vlm_mean_last(vlm_ctx *ctx, vlm_tensor *a) {
    return reduce_last(ctx, a, VLM_OP_MEAN_LAST, "mean_last");
}
int vlm_mean_last_backward(vlm_ctx *ctx, vlm_node *node) { return reduce_last_backward(ctx, node); }

/* ---- sum_all / mean_all: y = c sum_i x[i];  dx[i] += c dy ---------------- */

#define VLM_SUM_CHUNKS 64 /* fixed, not per thread: the sum order never changes */

static double sum_all_f64(const float *x, int64_t n) {
    double part[VLM_SUM_CHUNKS];
    const int64_t chunk = (n + VLM_SUM_CHUNKS - 1) / VLM_SUM_CHUNKS;
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int c = 0; c < VLM_SUM_CHUNKS; c++) {
        int64_t lo = c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        part[c] = lo < hi ? sum_f64(x + lo, hi - lo) : 0.0;
    }
    double s = 0;
    for (int c = 0; c < VLM_SUM_CHUNKS; c++) s += part[c];
    return s;
}

static vlm_tensor *reduce_all(vlm_ctx *ctx, vlm_tensor *a, vlm_op op, const char *name) {
    VLM_PROPAGATE_NULL(a);
    if (!vlm_check_f32(name, a, "input")) return NULL;
    const bool mean = op == VLM_OP_MEAN_ALL;
    if (mean && a->numel == 0) {
        char s[64];
        vlm_set_error("%s: empty input %s", name, vlm_shape_str(a, s, sizeof s));
        return NULL;
    }
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, 1, (int64_t[]){1});
    if (!y) return NULL;
    double s = sum_all_f64(vlm_f32(a), a->numel);
    vlm_f32(y)[0] = (float)(mean ? s / (double)a->numel : s);
    VLM_RECORD(node, ctx, op, y, &a, 1);
    (void)node;
    return y;
}

static int reduce_all_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const int64_t n = node->in[0]->numel;
    const double c = node->op == VLM_OP_MEAN_ALL ? 1.0 / (double)n : 1.0;
    const float g = (float)(c * node->out->grad[0]);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += g;
    return 0;
}

vlm_tensor *vlm_sum_all(vlm_ctx *ctx, vlm_tensor *a) {
    return reduce_all(ctx, a, VLM_OP_SUM_ALL, "sum_all");
}
int vlm_sum_all_backward(vlm_ctx *ctx, vlm_node *node) { return reduce_all_backward(ctx, node); }

vlm_tensor *vlm_mean_all(vlm_ctx *ctx, vlm_tensor *a) {
    return reduce_all(ctx, a, VLM_OP_MEAN_ALL, "mean_all");
}
int vlm_mean_all_backward(vlm_ctx *ctx, vlm_node *node) { return reduce_all_backward(ctx, node); }

/* ---- masked_mean: y[b] = sum_t m[b,t] x[b,t] / n_b, n_b = sum_t m[b,t] -------
 *  dx[b,t] += (m[b,t] / n_b) dy[b]; rows with n_b = 0 give y = 0 and no grad.
 * Any nonzero mask byte counts as valid. The per-token weights m/n_b are what
 * backward needs; they are saved instead of a pointer to the caller's mask. */

static bool masked_mean_ok(const vlm_tensor *x, const vlm_tensor *mask) {
    if (!vlm_check_f32("masked_mean", x, "x") ||
        !vlm_check_dtype("masked_mean", mask, VLM_U8, "mask"))
        return false;
    if (x->ndim == 3 && mask->ndim == 2 && mask->shape[0] == x->shape[0] &&
        mask->shape[1] == x->shape[1])
        return true;
    char s0[64], s1[64];
    vlm_set_error("masked_mean: x %s and mask %s are not [B, T, D] and [B, T]",
                  vlm_shape_str(x, s0, sizeof s0), vlm_shape_str(mask, s1, sizeof s1));
    return false;
}

/* Row b: weights w[t] = m[t] / n into w, y[d] = mean of the valid x rows. */
static void masked_mean_row(const float *x, const uint8_t *m, int64_t T, int64_t D, float *w,
                            double *acc, float *y) {
    int64_t n = 0;
    for (int64_t t = 0; t < T; t++) n += m[t] != 0;
    memset(acc, 0, (size_t)D * sizeof *acc);
    for (int64_t t = 0; t < T; t++) {
        w[t] = m[t] ? (float)(1.0 / (double)n) : 0.0f;
        if (!m[t]) continue;
        for (int64_t d = 0; d < D; d++) acc[d] += x[t * D + d];
    }
    for (int64_t d = 0; d < D; d++) y[d] = n ? (float)(acc[d] / (double)n) : 0.0f;
}

vlm_tensor *vlm_masked_mean(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *mask) {
    VLM_PROPAGATE_NULL(x, mask);
    if (!masked_mean_ok(x, mask)) return NULL;
    const int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, 2, (int64_t[]){B, D});
    float *w = vlm_arena_alloc(ctx, (size_t)(B * T) * sizeof(float));
    double *acc = vlm_arena_alloc(ctx, (size_t)(B * D) * sizeof(double));
    if (!y || !w || !acc) return NULL;
    const uint8_t *m = mask->data;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t b = 0; b < B; b++)
        masked_mean_row(vlm_f32(x) + b * T * D, m + b * T, T, D, w + b * T, acc + b * D,
                        vlm_f32(y) + b * D);
    VLM_RECORD(node, ctx, VLM_OP_MASKED_MEAN, y, &x, 1);
    if (node) node->saved[0] = w;
    return y;
}

int vlm_masked_mean_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *x = node->in[0];
    const int64_t B = x->shape[0], T = x->shape[1], D = x->shape[2];
    const float *w = node->saved[0], *dy = node->out->grad;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t bt = 0; bt < B * T; bt++) {
        if (w[bt] == 0.0f) continue;
        const float *g = dy + bt / T * D;
        for (int64_t d = 0; d < D; d++) dx[bt * D + d] += w[bt] * g[d];
    }
    return 0;
}
