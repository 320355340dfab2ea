/* grads.c - passes over the trainable gradients (finiteness, global norm,
 * clipping, scaling), the fp16 loss scaler, and the whole update sequence.
 *
 * Every pass walks "spans": maximal runs of adjacent trainable parameters,
 * which are contiguous in the flat grad buffer (the store lays parameters
 * out in declaration order). A frozen tower is one gap, never read. */
#include "optim.h"

#include <float.h>
#include <math.h>

/* Elements per parallel work item (64 KiB). */
#define BLOCK 16384
/* Norm partial sums per parallel round (on the stack). */
#define ROUND 256
#define PAR_MIN 32768

/* The next span at or after parameter *i: grads [*g, *g + *len). */
static bool next_span(const vlm_params *p, int *i, float **g, int64_t *len) {
    int n = vlm_params_count(p);
    while (*i < n && !vlm_params_at(p, *i)->requires_grad) (*i)++;
    if (*i >= n) return false;
    *g = vlm_params_at(p, *i)->grad;
    *len = 0;
    for (const vlm_tensor *t; *i < n && (t = vlm_params_at(p, *i))->requires_grad; (*i)++)
        *len += t->numel;
    return true;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* ---- finiteness ------------------------------------------------------------------------- */

/* |x| <= FLT_MAX is false exactly for Inf and NaN; an OR of compares vectorises. */
static int nonfinite_block(const float *x, int64_t n) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad |= !(fabsf(x[i]) <= FLT_MAX);
    return bad;
}

bool vlm_grads_finite(const vlm_params *p) {
    int i = 0, bad = 0;
    float *g;
    int64_t len;
    while (!bad && next_span(p, &i, &g, &len)) {
        int64_t nb = (len + BLOCK - 1) / BLOCK;
#pragma omp parallel for reduction(| : bad) if (len >= PAR_MIN)
        for (int64_t b = 0; b < nb; b++)
            bad |= nonfinite_block(g + b * BLOCK, min64(BLOCK, len - b * BLOCK));
    }
    return !bad;
}

/* ---- the global norm --------------------------------------------------------------------- */

/* Sum of squares in double, 8 independent lanes so the loop vectorises. */
static double sumsq_block(const float *x, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int k = 0; k < 8; k++) acc[k] += (double)x[i + k] * (double)x[i + k];
    double s = 0;
    for (; i < n; i++) s += (double)x[i] * (double)x[i];
    for (int k = 0; k < 8; k++) s += acc[k];
    return s;
}

/* Blocks are summed in index order whatever thread computed them, so the
 * norm is the same for any thread count (runs are reproducible). */
static double sumsq(const float *x, int64_t n) {
    double total = 0;
    for (int64_t base = 0; base < n; base += (int64_t)BLOCK * ROUND) {
        int64_t len = min64(n - base, (int64_t)BLOCK * ROUND);
        int nb = (int)((len + BLOCK - 1) / BLOCK);
        double part[ROUND];
#pragma omp parallel for if (len >= PAR_MIN)
        for (int b = 0; b < nb; b++)
            part[b] = sumsq_block(x + base + (int64_t)b * BLOCK,
                                  min64(BLOCK, len - (int64_t)b * BLOCK));
        for (int b = 0; b < nb; b++) total += part[b];
    }
    return total;
}

double vlm_grad_norm(const vlm_params *p) {
    int i = 0;
    float *g;
    int64_t len;
    double total = 0;
    while (next_span(p, &i, &g, &len)) total += sumsq(g, len);
    return sqrt(total);
}

void vlm_grads_scale(vlm_params *p, float s) {
    int i = 0;
    float *g;
    int64_t len;
    while (next_span(p, &i, &g, &len)) {
#pragma omp parallel for if (len >= PAR_MIN)
        for (int64_t j = 0; j < len; j++) g[j] *= s;
    }
}

double vlm_clip_grad_norm(vlm_params *p, double max_norm) {
    double norm = vlm_grad_norm(p);
    if (!isfinite(norm) || !(max_norm > 0)) return norm;
    double coef = max_norm / (norm + 1e-6); /* torch's formula, epsilon included */
    if (coef < 1.0) vlm_grads_scale(p, (float)coef);
    return norm;
}

/* ---- the loss scaler ----------------------------------------------------------------------- */

void vlm_loss_scaler_init(vlm_loss_scaler *s) {
    *s = (vlm_loss_scaler){.scale = 65536.0f,
                           .good_steps = 0,
                           .growth_interval = 2000,
                           .growth_factor = 2.0f,
                           .backoff_factor = 0.5f};
}

static int unscale_block(float *x, int64_t n, float s) {
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float y = x[i] * s;
        x[i] = y;
        bad |= !(fabsf(y) <= FLT_MAX);
    }
    return bad;
}

bool vlm_loss_scaler_unscale(const vlm_loss_scaler *s, vlm_params *p) {
    /* like GradScaler: the reciprocal in double, rounded to f32 once */
    const float inv = (float)(1.0 / (double)s->scale);
    int i = 0, bad = 0;
    float *g;
    int64_t len;
    while (next_span(p, &i, &g, &len)) {
        int64_t nb = (len + BLOCK - 1) / BLOCK;
#pragma omp parallel for reduction(| : bad) if (len >= PAR_MIN)
        for (int64_t b = 0; b < nb; b++)
            bad |= unscale_block(g + b * BLOCK, min64(BLOCK, len - b * BLOCK), inv);
    }
    return !bad;
}

void vlm_loss_scaler_update(vlm_loss_scaler *s, bool found_inf) {
    if (found_inf) {
        s->scale *= s->backoff_factor;
        s->good_steps = 0;
    } else if (++s->good_steps >= s->growth_interval) {
        /* as torch: a growth that would overflow to Inf is not taken */
        float grown = s->scale * s->growth_factor;
        if (isfinite(grown)) s->scale = grown;
        s->good_steps = 0;
    }
}

/* ---- the whole update ----------------------------------------------------------------------- */

int vlm_optim_update(vlm_optim *o, vlm_loss_scaler *scaler, vlm_step_info *info) {
    vlm_step_info r = {.lr = 0, .grad_norm = NAN, .skipped = false, .scale = 0};
    vlm_params *p = vlm_optim_params(o);
    bool finite = scaler ? vlm_loss_scaler_unscale(scaler, p) : true;
    if (finite) {
        r.grad_norm = vlm_clip_grad_norm(p, (double)vlm_optim_config(o)->clip_norm);
        finite = isfinite(r.grad_norm);
    }
    int rc = 0;
    if (finite) {
        r.lr = vlm_lr_at(vlm_optim_config(o), vlm_optim_steps(o));
        rc = vlm_optim_step(o, r.lr);
    }
    r.skipped = !finite;
    if (scaler && rc == 0) {
        vlm_loss_scaler_update(scaler, !finite);
        r.scale = scaler->scale;
    }
    if (info) *info = r;
    return rc;
}
