/* gradcheck.c - analytic gradients against central finite differences.
 *
 * The checked scalar is L(x) = sum(f(x) * R) with R a fixed random projection,
 * so every output element contributes with a different weight. The numeric
 * derivative uses central differences at steps h and h/2 combined by
 * Richardson extrapolation, D = (4 D(h/2) - D(h)) / 3, whose truncation error
 * is O(h^4); that allows a step large enough that f32 rounding in the forward
 * stays far below the tolerance. L is accumulated in double. Every forward
 * starts from the same RNG state so dropout masks repeat. */
#include "internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

vlm_gc_tol vlm_gc_default_tol(void) { return (vlm_gc_tol){.h = 1e-2, .atol = 1e-4, .rtol = 2e-3}; }

typedef struct {
    vlm_gc_fn f;
    void *user;
    int n;
    vlm_tensor **x; /* leaf copies of the inputs */
    const float *R; /* projection, NULL until the first forward fixes its size */
    int64_t out_numel;
    uint64_t rng;
} gc_state;

/* One forward in a scratch context; returns L or NAN on failure. */
static double eval_loss(gc_state *s, vlm_ctx *scratch) {
    vlm_ctx_reset(scratch);
    vlm_ctx_seed(scratch, s->rng);
    bool prev = vlm_set_grad_enabled(scratch, false);
    vlm_tensor *out = s->f(scratch, s->x, s->user);
    vlm_set_grad_enabled(scratch, prev);
    if (!out || out->numel != s->out_numel || out->dtype != VLM_F32) return NAN;
    double acc = 0;
    for (int64_t i = 0; i < out->numel; i++) acc += (double)vlm_f32(out)[i] * s->R[i];
    return acc;
}

static double central_diff(gc_state *s, vlm_ctx *scratch, float *x, double step) {
    float keep = *x;
    *x = (float)(keep + step);
    double actual_up = (double)*x - keep; /* the step f32 can represent */
    double up = eval_loss(s, scratch);
    *x = (float)(keep - step);
    double actual_down = keep - (double)*x;
    double down = eval_loss(s, scratch);
    *x = keep;
    return (up - down) / (actual_up + actual_down);
}

static void compare(const float *analytic, const double *numeric, int64_t n, int input,
                    vlm_gc_tol tol, vlm_gc_report *r, double *diff2, double *num2) {
    for (int64_t e = 0; e < n; e++) {
        double d = fabs(analytic[e] - numeric[e]);
        *diff2 += d * d;
        *num2 += numeric[e] * numeric[e];
        if (d > r->max_abs_err || isnan(d)) r->max_abs_err = isnan(d) ? INFINITY : d;
        if ((!(d <= tol.atol + tol.rtol * fabs(numeric[e]))) && r->bad_input < 0) {
            r->bad_input = input;
            r->bad_index = e;
            r->bad_analytic = analytic[e];
            r->bad_numeric = numeric[e];
        }
    }
}

static int analytic_grads(gc_state *s, vlm_ctx *ctx, float **grads) {
    vlm_ctx_seed(ctx, s->rng);
    vlm_tensor *out = s->f(ctx, s->x, s->user);
    if (!out) return -1;
    if (out->dtype != VLM_F32) return vlm_set_error("gradcheck: output is not f32");
    s->out_numel = out->numel;
    float *R = vlm_arena_alloc(ctx, (size_t)out->numel * sizeof(float));
    if (!R) return -1;
    uint64_t st = s->rng ^ 0x5DEECE66DULL;
    for (int64_t i = 0; i < out->numel; i++) R[i] = 2.0f * vlm_rng_uniform(&st) - 1.0f;
    s->R = R;
    if (vlm_backward_from(ctx, 0, out, R) != 0) return -1;
    for (int i = 0; i < s->n; i++) {
        if (s->x[i]->dtype != VLM_F32) continue;
        grads[i] = vlm_arena_alloc(ctx, (size_t)s->x[i]->numel * sizeof(float));
        if (!grads[i]) return -1;
        if (s->x[i]->grad)
            memcpy(grads[i], s->x[i]->grad, (size_t)s->x[i]->numel * sizeof(float));
        else
            memset(grads[i], 0, (size_t)s->x[i]->numel * sizeof(float));
    }
    return 0;
}

/* Checks every f32 tensor in x (perturbed in place, restored) against the
 * analytic grads of one backward pass. */
static int check_tensors(gc_state *s, vlm_ctx *ctx, vlm_ctx *scratch, vlm_gc_tol tol,
                         vlm_gc_report *r) {
    float **grads = vlm_arena_alloc(ctx, (size_t)s->n * sizeof *grads);
    if (!grads) return -1;
    for (int i = 0; i < s->n; i++) grads[i] = NULL;
    if (analytic_grads(s, ctx, grads) != 0) return -1;
    double diff2 = 0, num2 = 0;
    for (int i = 0; i < s->n; i++) {
        if (!grads[i]) continue;
        double *numeric = vlm_arena_alloc(ctx, (size_t)s->x[i]->numel * sizeof(double));
        if (!numeric) return -1;
        float *xv = vlm_f32(s->x[i]);
        for (int64_t e = 0; e < s->x[i]->numel; e++) {
            double d1 = central_diff(s, scratch, &xv[e], tol.h);
            double d2 = central_diff(s, scratch, &xv[e], tol.h / 2);
            if (isnan(d1) || isnan(d2))
                return vlm_set_error("gradcheck: forward failed or changed shape while "
                                     "perturbing input %d (%s)", i, vlm_last_error());
            numeric[e] = (4 * d2 - d1) / 3;
        }
        compare(grads[i], numeric, s->x[i]->numel, i, tol, r, &diff2, &num2);
    }
    r->norm_rel_err = num2 > 0 ? sqrt(diff2 / num2) : sqrt(diff2);
    bool norm_ok = sqrt(diff2) <= tol.rtol * sqrt(num2) + tol.atol;
    if (r->bad_input < 0 && norm_ok) return 1;
    if (r->bad_input < 0) r->bad_input = 0; /* norm-wise failure only */
    return 0;
}

int vlm_gradcheck(vlm_gc_fn f, void *user, int n_inputs, vlm_tensor *const *inputs,
                  vlm_gc_tol tol, uint64_t seed, vlm_gc_report *report) {
    vlm_gc_report r = {.bad_input = -1};
    vlm_ctx *ctx = vlm_ctx_new(0), *scratch = vlm_ctx_new(0);
    vlm_tensor **x = ctx ? vlm_arena_alloc(ctx, (size_t)n_inputs * sizeof *x) : NULL;
    int rc = -1;
    if (!scratch || !x) goto done;
    for (int i = 0; i < n_inputs; i++) { /* leaf copies, so the caller's tensors stay intact */
        x[i] = vlm_tensor_from(ctx, inputs[i]->dtype, inputs[i]->ndim, inputs[i]->shape,
                               inputs[i]->data);
        if (!x[i]) goto done;
        x[i]->requires_grad = inputs[i]->dtype == VLM_F32;
    }
    gc_state s = {.f = f, .user = user, .n = n_inputs, .x = x, .rng = seed};
    rc = check_tensors(&s, ctx, scratch, tol, &r);
done:
    if (report) *report = r;
    vlm_ctx_free(scratch);
    vlm_ctx_free(ctx);
    return rc;
}

typedef struct {
    vlm_gc_params_fn f;
    void *user;
} params_closure;

static vlm_tensor *call_params_fn(vlm_ctx *ctx, vlm_tensor **x, void *user) {
    (void)x;
    params_closure *c = user;
    return c->f(ctx, c->user);
}

int vlm_gradcheck_params(vlm_gc_params_fn f, void *user, vlm_params *p, vlm_gc_tol tol,
                         uint64_t seed, vlm_gc_report *report) {
    vlm_gc_report r = {.bad_input = -1};
    vlm_ctx *ctx = vlm_ctx_new(0), *scratch = vlm_ctx_new(0);
    int n = 0, count = vlm_params_count(p);
    vlm_tensor **x = ctx ? vlm_arena_alloc(ctx, (size_t)(count ? count : 1) * sizeof *x) : NULL;
    int rc = -1;
    if (!scratch || !x) goto done;
    for (int i = 0; i < count; i++) /* frozen parameters are not checked */
        if (vlm_params_at(p, i)->requires_grad) x[n++] = vlm_params_at(p, i);
    vlm_params_zero_grad(p);
    params_closure c = {f, user};
    gc_state s = {.f = call_params_fn, .user = &c, .n = n, .x = x, .rng = seed};
    rc = check_tensors(&s, ctx, scratch, tol, &r);
    vlm_params_zero_grad(p);
done:
    if (report) *report = r;
    vlm_ctx_free(scratch);
    vlm_ctx_free(ctx);
    return rc;
}
