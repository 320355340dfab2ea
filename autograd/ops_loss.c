/* ops_loss.c - fused losses: cross-entropy (ignore index, label smoothing)
 * and the SigLIP sigmoid loss.
 *
 * Both return a [1] mean. Per-row partial sums go to an array and are added
 * serially in double, so the loss does not depend on the thread count. */
#include "internal.h"
#include "vmath.h"

#include <limits.h>
#include <math.h>
#include <string.h>

static double sum_serial(const double *v, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += v[i];
    return s;
}

/* ---- cross_entropy ----------------------------------------------------------
 * Target t = (1-e) onehot(y) + e/C sums to 1, so per kept row, with m = max x
 * and ls = log sum_j exp(x_j - m) (logsumexp = m + ls):
 *   loss = -sum_j t_j log p_j = ls + (1-e) (m - x_y) + (e/C) sum_j (m - x_j)
 * and dloss/dx_j = p_j - t_j, p_j = exp((x_j - m) - ls). Only (m, ls) is saved
 * per row, kept apart so large logits lose no precision to m + ls. The mean
 * divides by the number of kept rows.                                        */

static bool ce_check(const vlm_tensor *logits, const vlm_tensor *labels, int32_t ignore, float e) {
    if (!vlm_check_f32("cross_entropy", logits, "logits") ||
        !vlm_check_dtype("cross_entropy", labels, VLM_I32, "labels"))
        return false;
    char sl[64], sy[64];
    vlm_shape_str(logits, sl, sizeof sl);
    vlm_shape_str(labels, sy, sizeof sy);
    if (logits->ndim != 2 || labels->ndim != 1 || labels->shape[0] != logits->shape[0]) {
        vlm_set_error("cross_entropy: logits %s must be [N, C] and labels %s [N]", sl, sy);
        return false;
    }
    if (!(e >= 0.0f && e <= 1.0f)) {
        vlm_set_error("cross_entropy: label_smoothing %g outside [0, 1]", (double)e);
        return false;
    }
    int64_t C = logits->shape[1];
    const int32_t *y = vlm_i32(labels);
    for (int64_t i = 0; i < labels->numel; i++) {
        if (y[i] != ignore && (y[i] < 0 || y[i] >= C)) {
            vlm_set_error("cross_entropy: label %d at row %lld out of range [0, %lld) "
                          "(logits %s, ignore_index %d)",
                          y[i], (long long)i, (long long)C, sl, ignore);
            return false;
        }
    }
    return true;
}

/* Saves (max, log sum exp(x - max)) of row x into ms, returns the row's loss.
 * The sums are vectorised (simd lanes of double partial sums): their order is
 * fixed by the code, not by the thread count. */
static double ce_row(const float *x, int64_t C, int32_t y, float e, float *ms) {
    float m = -INFINITY;
#pragma omp simd reduction(max : m)
    for (int64_t j = 0; j < C; j++)
        m = x[j] > m ? x[j] : m;
    double s = 0, below = 0; /* below = sum_j (m - x_j) */
#pragma omp simd reduction(+ : s, below)
    for (int64_t j = 0; j < C; j++) {
        s += vm_exp(x[j] - m);
        below += (double)m - x[j];
    }
    ms[0] = m;
    ms[1] = (float)log(s);
    return log(s) + (1.0 - e) * (m - x[y]) + (e / (double)C) * below;
}

vlm_tensor *vlm_cross_entropy(vlm_ctx *ctx, vlm_tensor *logits, vlm_tensor *labels,
                              int32_t ignore_index, float label_smoothing) {
    VLM_PROPAGATE_NULL(logits, labels);
    if (!ce_check(logits, labels, ignore_index, label_smoothing)) return NULL;
    int64_t N = logits->shape[0], C = logits->shape[1], kept = 0;
    vlm_tensor *out = vlm_tensor_new(ctx, VLM_F32, 1, (int64_t[]){1});
    float *ms = vlm_arena_alloc(ctx, (size_t)(2 * N) * sizeof(float));
    double *row_loss = vlm_arena_alloc(ctx, (size_t)N * sizeof(double));
    if (!out || !ms || !row_loss) return NULL;
    const int32_t *y = vlm_i32(labels);
#pragma omp parallel for if (logits->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < N; i++)
        row_loss[i] = y[i] == ignore_index
                          ? 0.0
                          : ce_row(vlm_f32(logits) + i * C, C, y[i], label_smoothing, ms + 2 * i);
    for (int64_t i = 0; i < N; i++)
        kept += y[i] != ignore_index;
    vlm_f32(out)[0] = kept ? (float)(sum_serial(row_loss, N) / (double)kept) : 0.0f;
    vlm_tensor *in[2] = {logits, labels};
    VLM_RECORD(node, ctx, VLM_OP_CROSS_ENTROPY, out, in, 2);
    if (node) {
        node->iarg[0] = ignore_index;
        node->iarg[1] = kept;
        node->farg[0] = label_smoothing;
        node->saved[0] = ms;
    }
    return out;
}

int vlm_cross_entropy_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *logits = node->in[0], *labels = node->in[1];
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, logits, &fresh);
    if (!dx) return logits->requires_grad ? -1 : 0;
    int64_t N = logits->shape[0], C = logits->shape[1], kept = node->iarg[1];
    int32_t ignore = (int32_t)node->iarg[0];
    if (kept == 0) {
        if (fresh) memset(dx, 0, (size_t)logits->numel * sizeof *dx);
        return 0;
    }
    float e = node->farg[0], scale = node->out->grad[0] / (float)kept;
    float off = e / (float)C, on = 1.0f - e + off;
    const float *ms = node->saved[0], keep = vlm_grad_keep(fresh);
    const int32_t *y = vlm_i32(labels);
#pragma omp parallel for if (logits->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        float *d = dx + i * C;
        if (y[i] == ignore) { /* no contribution: a fresh row still needs its zeros */
            if (fresh) memset(d, 0, (size_t)C * sizeof *d);
            continue;
        }
        const float *x = vlm_f32(logits) + i * C;
        float m = ms[2 * i], ls = ms[2 * i + 1];
        for (int64_t j = 0; j < C; j++)
            d[j] = VLM_OLD(keep, d[j]) + scale * (vm_exp((x[j] - m) - ls) - (j == y[i] ? on : off));
    }
    return 0;
}

/* ---- siglip_loss -------------------------------------------------------------
 * P = txt img^T, z = s P + b with s = exp(logit_scale), label l = +-1:
 *   loss = sum_ij softplus(-l z) / N,   G = dloss/dz = -l sigmoid(-l z) / N
 *   dtxt = s G img,  dimg = s G^T txt,  dlogit_scale = s sum G P,  dlogit_bias = sum G.
 * P is saved ([N, M]); z and G are recomputed from it.                      */

static double softplus(double x) { return (x > 0 ? x : 0) + log1p(exp(-fabs(x))); }
static double sigmoid(double x) { return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)); }

static bool siglip_check(const vlm_tensor *txt, const vlm_tensor *img, const vlm_tensor *ls,
                         const vlm_tensor *lb, const vlm_tensor *match) {
    if (!vlm_check_f32("siglip_loss", txt, "txt") || !vlm_check_f32("siglip_loss", img, "img") ||
        !vlm_check_f32("siglip_loss", ls, "logit_scale") ||
        !vlm_check_f32("siglip_loss", lb, "logit_bias") ||
        (match && !vlm_check_dtype("siglip_loss", match, VLM_U8, "match")))
        return false;
    char st[64], si[64], sm[64] = "NULL";
    vlm_shape_str(txt, st, sizeof st);
    vlm_shape_str(img, si, sizeof si);
    if (match) vlm_shape_str(match, sm, sizeof sm);
    if (txt->ndim != 2 || img->ndim != 2 || txt->shape[1] != img->shape[1] || txt->shape[0] == 0 ||
        img->shape[0] == 0) {
        vlm_set_error("siglip_loss: txt %s and img %s must be non-empty [N, D] and [M, D]", st, si);
        return false;
    }
    if (txt->shape[0] > INT_MAX || img->shape[0] > INT_MAX || txt->shape[1] > INT_MAX) {
        vlm_set_error("siglip_loss: txt %s, img %s exceed the BLAS int range", st, si);
        return false;
    }
    if (ls->numel != 1 || lb->numel != 1) {
        vlm_set_error("siglip_loss: logit_scale and logit_bias must have one element "
                      "(got %lld and %lld)",
                      (long long)ls->numel, (long long)lb->numel);
        return false;
    }
    bool match_ok = match ? match->ndim == 2 && match->shape[0] == txt->shape[0] &&
                                match->shape[1] == img->shape[0]
                          : txt->shape[0] == img->shape[0];
    if (!match_ok) {
        vlm_set_error("siglip_loss: txt %s, img %s, match %s: match must be [N, M] "
                      "(NULL = the diagonal, which needs N == M)",
                      st, si, sm);
        return false;
    }
    return true;
}

static inline double siglip_label(const uint8_t *match, int64_t i, int64_t j, int64_t M) {
    return (match ? match[i * M + j] != 0 : i == j) ? 1.0 : -1.0;
}

vlm_tensor *vlm_siglip_loss(vlm_ctx *ctx, vlm_tensor *txt, vlm_tensor *img, vlm_tensor *logit_scale,
                            vlm_tensor *logit_bias, vlm_tensor *match) {
    VLM_PROPAGATE_NULL(txt, img, logit_scale, logit_bias);
    if (!siglip_check(txt, img, logit_scale, logit_bias, match)) return NULL;
    int64_t N = txt->shape[0], M = img->shape[0], D = txt->shape[1];
    vlm_tensor *out = vlm_tensor_new(ctx, VLM_F32, 1, (int64_t[]){1});
    float *P = vlm_arena_alloc(ctx, (size_t)(N * M) * sizeof(float));
    double *row_loss = vlm_arena_alloc(ctx, (size_t)N * sizeof(double));
    if (!out || !P || !row_loss) return NULL;
    vlm_sgemm(false, true, N, M, D, 1.0f, vlm_f32(txt), D, vlm_f32(img), D, 0.0f, P, M);
    double s = exp((double)vlm_f32(logit_scale)[0]), b = vlm_f32(logit_bias)[0];
    const uint8_t *mk = match ? (const uint8_t *)match->data : NULL;
#pragma omp parallel for if (N * M >= VLM_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        double acc = 0;
        for (int64_t j = 0; j < M; j++)
            acc += softplus(-siglip_label(mk, i, j, M) * (s * P[i * M + j] + b));
        row_loss[i] = acc;
    }
    vlm_f32(out)[0] = (float)(sum_serial(row_loss, N) / (double)N);
    vlm_tensor *in[5] = {txt, img, logit_scale, logit_bias, match};
    VLM_RECORD(node, ctx, VLM_OP_SIGLIP_LOSS, out, in, match ? 5 : 4);
    if (node) node->saved[0] = P;
    return out;
}

int vlm_siglip_loss_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *txt = node->in[0], *img = node->in[1], *ls = node->in[2], *lb = node->in[3];
    const uint8_t *mk = node->n_in > 4 ? (const uint8_t *)node->in[4]->data : NULL;
    float *dt = vlm_input_grad(ctx, txt), *di = vlm_input_grad(ctx, img);
    float *ds = vlm_input_grad(ctx, ls), *dbias = vlm_input_grad(ctx, lb);
    if ((txt->requires_grad && !dt) || (img->requires_grad && !di) || (ls->requires_grad && !ds) ||
        (lb->requires_grad && !dbias))
        return -1;
    int64_t N = txt->shape[0], M = img->shape[0], D = txt->shape[1];
    const float *P = node->saved[0];
    float *G = vlm_arena_alloc(ctx, (size_t)(N * M) * sizeof(float));
    double *row = vlm_arena_alloc(ctx, (size_t)(2 * N) * sizeof(double));
    if (!G || !row) return -1;
    double s = exp((double)vlm_f32(ls)[0]), b = vlm_f32(lb)[0];
    double gscale = node->out->grad[0] / (double)N;
#pragma omp parallel for if (N * M >= VLM_PAR_MIN)
    for (int64_t i = 0; i < N; i++) {
        double gp = 0, gs = 0;
        for (int64_t j = 0; j < M; j++) {
            double l = siglip_label(mk, i, j, M), p = P[i * M + j];
            double g = -l * sigmoid(-l * (s * p + b)) * gscale;
            G[i * M + j] = (float)g;
            gp += g * p;
            gs += g;
        }
        row[i] = gp;
        row[N + i] = gs;
    }
    if (ds) ds[0] += (float)(s * sum_serial(row, N));
    if (dbias) dbias[0] += (float)sum_serial(row + N, N);
    if (dt) vlm_sgemm(false, false, N, D, M, (float)s, G, M, vlm_f32(img), D, 1.0f, dt, D);
    if (di) vlm_sgemm(true, false, M, D, N, (float)s, G, M, vlm_f32(txt), D, 1.0f, di, D);
    return 0;
}
