/* trainer.c - one optimizer step: accum micro-batches of forward + backward
 * (loss scaled by 1/accum, and by the loss scale in fp16), then
 * vlm_optim_update (unscale, check, clip, step at the scheduled lr), with
 * non-finite losses and gradients either stopping the run with a diagnosis or
 * skipping the update and counting it. Never silently continuing. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Independent seeds for the streams that start from train.seed (the loader
 * derives its own from the seed it is given). */
#define STREAM_DROPOUT 0xd0d0ULL

static uint64_t mix(uint64_t s) {
    s += 0x9E3779B97F4A7C15ULL;
    s = (s ^ (s >> 30)) * 0xBF58476D1CE4E5B9ULL;
    s = (s ^ (s >> 27)) * 0x94D049BB133111EBULL;
    return s ^ (s >> 31);
}

static vlm_precision precision_of(const char *s) {
    return !strcmp(s, "bf16") ? VLM_PREC_BF16 : !strcmp(s, "fp16") ? VLM_PREC_F16 : VLM_PREC_F32;
}

int vlm_trainer_init(vlm_trainer *t, const vlm_run_cfg *cfg, vlm_model *model,
                     vlm_loader *loader, int64_t total_steps, vlm_loss_fn fn, void *user) {
    memset(t, 0, sizeof *t);
    t->cfg = *cfg;
    t->model = model;
    t->loader = loader;
    t->loss_fn = fn;
    t->loss_user = user;
    t->total_steps = total_steps;
    /* total_steps 0 means "the run's length": resolved for the optimizer
     * only, so t->cfg (saved in checkpoints) stays what the user wrote */
    vlm_optim_cfg oc = cfg->train.optim;
    if (oc.total_steps == 0) oc.total_steps = total_steps > INT32_MAX ? INT32_MAX : (int)total_steps;
    if (total_steps < 1) {
        vlm_set_error("trainer: the run has no steps (train.steps / train.epochs)");
        goto fail;
    }
    if (vlm_optim_cfg_validate(&oc, "train.optim")) goto fail;
    if (!(t->optim = vlm_optim_new(model->params, &oc))) goto fail;
    if (!(t->ctx = vlm_ctx_new(0))) goto fail;
    if (vlm_ctx_set_precision(t->ctx, precision_of(cfg->train.precision))) goto fail;
    vlm_ctx_seed(t->ctx, mix((uint64_t)(uint32_t)cfg->train.seed ^ STREAM_DROPOUT));
    t->use_scaler = !strcmp(cfg->train.precision, "fp16");
    vlm_loss_scaler_init(&t->scaler);
    return 0;
fail:
    vlm_trainer_free(t);
    return -1;
}

void vlm_trainer_free(vlm_trainer *t) {
    if (!t) return;
    vlm_optim_free(t->optim);
    vlm_ctx_free(t->ctx);
    vlm_model_free(t->model);
    t->optim = NULL;
    t->ctx = NULL;
    t->model = NULL;
}

/* ---- non-finite diagnosis ---------------------------------------------------------- */

/* %g of a value, with NaN spelled "nan" whatever its sign bit. */
static const char *num(char *buf, size_t cap, double v) {
    if (isnan(v)) snprintf(buf, cap, "nan");
    else snprintf(buf, cap, "%g", v);
    return buf;
}

/* Index of the first non-finite element of n floats, or -1. */
static int64_t first_nonfinite(const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return i;
    return -1;
}

vlm_tensor *vlm_anomaly_check(vlm_anomaly *an, vlm_tensor *t, const char *stage) {
    if (!an || !an->enabled || an->where[0] || !t || t->dtype != VLM_F32) return t;
    int64_t k = first_nonfinite(vlm_f32(t), t->numel);
    if (k >= 0) {
        char s[64], v[32];
        snprintf(an->where, sizeof an->where, "%s %s (element %lld = %s)", stage,
                 vlm_shape_str(t, s, sizeof s), (long long)k, num(v, sizeof v, vlm_f32(t)[k]));
    }
    return t;
}

/* "; first non-finite <what>: NAME [shape] element k" for values or grads. */
static void append_first_bad(char *buf, size_t cap, vlm_params *p, bool grads) {
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *x = vlm_params_at(p, i);
        if (grads && !x->requires_grad) continue;
        const float *v = grads ? vlm_params_grads(p) + vlm_params_offset(p, x) : vlm_f32(x);
        int64_t k = first_nonfinite(v, x->numel);
        if (k < 0) continue;
        size_t len = strlen(buf);
        char s[64], val[32];
        snprintf(buf + len, cap - len, "; first non-finite %s: %s %s element %lld = %s",
                 grads ? "gradient" : "parameter", x->name, vlm_shape_str(x, s, sizeof s),
                 (long long)k, num(val, sizeof val, v[k]));
        return;
    }
}

/* The error for a non-finite step: what was non-finite, where it shows. */
static int nonfinite_error(vlm_trainer *t, int64_t step, double loss, double norm,
                           const vlm_anomaly *an) {
    char msg[1024], v[32];
    if (!isfinite(loss))
        snprintf(msg, sizeof msg, "non-finite loss (%s) at step %lld", num(v, sizeof v, loss),
                 (long long)step);
    else
        snprintf(msg, sizeof msg, "non-finite gradients (norm %s) at step %lld",
                 num(v, sizeof v, norm), (long long)step);
    append_first_bad(msg, sizeof msg, t->model->params, false);
    append_first_bad(msg, sizeof msg, t->model->params, true);
    size_t len = strlen(msg);
    if (an->enabled)
        snprintf(msg + len, sizeof msg - len, "; anomaly: %s%s",
                 an->where[0] ? "first non-finite stage: " : "every stage was finite",
                 an->where);
    else
        snprintf(msg + len, sizeof msg - len,
                 "; set train.detect_anomaly=true to find the stage, or "
                 "train.on_nonfinite=\"skip\" to skip such steps");
    return vlm_set_error("%s", msg);
}

/* ---- the step ------------------------------------------------------------------------- */

/* Test hook (train.debug_nan_step): a NaN in one gradient after backward, or
 * in logit_bias before the forward (which then poisons every later loss). */
static void inject_nan(vlm_trainer *t, int64_t step, bool before_forward) {
    const vlm_train_cfg *c = &t->cfg.train;
    if (c->debug_nan_step == 0 || step != c->debug_nan_step) return;
    bool weight = !strcmp(c->debug_nan_target, "weight");
    if (weight && before_forward && t->model->logit_bias) vlm_f32(t->model->logit_bias)[0] = NAN;
    if (!weight && !before_forward) {
        vlm_params *p = t->model->params;
        for (int i = 0; i < vlm_params_count(p); i++) {
            vlm_tensor *x = vlm_params_at(p, i);
            if (!x->requires_grad) continue;
            vlm_params_grads(p)[vlm_params_offset(p, x)] = NAN;
            return;
        }
    }
}

/* Forward + backward of one micro-batch; *loss gets the unscaled loss. A
 * non-finite loss without a scaler skips the backward (the step is lost). */
static int micro_step(vlm_trainer *t, int64_t step, vlm_anomaly *an, double *loss, int *n) {
    const vlm_batch *b = vlm_loader_next(t->loader);
    if (!b) return vlm_set_error("step %lld: %s", (long long)step, vlm_last_error());
    t->samples += b->n;
    t->epoch = b->epoch;
    *n += b->n;
    vlm_tensor *l = t->loss_fn(t->ctx, t->model, b, t->loss_user, an);
    int rc = 0;
    if (!l) {
        rc = vlm_set_error("step %lld: %s", (long long)step, vlm_last_error());
    } else {
        *loss = vlm_f32(l)[0];
        if (isfinite(*loss) || t->use_scaler) {
            float s = (t->use_scaler ? t->scaler.scale : 1.0f) / (float)t->cfg.train.accum;
            vlm_tensor *ls = s == 1.0f ? l : vlm_scale(t->ctx, l, s);
            if (!ls || vlm_backward(t->ctx, ls))
                rc = vlm_set_error("step %lld: backward: %s", (long long)step, vlm_last_error());
        }
    }
    vlm_ctx_reset(t->ctx);
    return rc;
}

int vlm_trainer_step(vlm_trainer *t, vlm_step_stats *st) {
    const vlm_train_cfg *c = &t->cfg.train;
    int64_t step = t->step + 1; /* 1-based in messages, like the progress line */
    vlm_anomaly an = {.enabled = c->detect_anomaly};
    double loss_sum = 0;
    bool loss_bad = false;
    int n = 0;
    inject_nan(t, step, true);
    vlm_params_zero_grad(t->model->params);
    for (int k = 0; k < c->accum; k++) {
        double l = 0;
        if (micro_step(t, step, &an, &l, &n)) return -1;
        loss_sum += l;
        loss_bad |= !isfinite(l);
    }
    inject_nan(t, step, false);
    vlm_step_info info = {.grad_norm = NAN, .skipped = true};
    if (!loss_bad || t->use_scaler) {
        if (vlm_optim_update(t->optim, t->use_scaler ? &t->scaler : NULL, &info))
            return vlm_set_error("step %lld: %s", (long long)step, vlm_last_error());
    }
    double loss = loss_sum / c->accum;
    if (info.skipped) {
        bool dead_scaler = t->use_scaler && t->scaler.scale < 1.0f;
        if ((!t->use_scaler && !strcmp(c->on_nonfinite, "stop")) || dead_scaler) {
            nonfinite_error(t, step, loss, info.grad_norm, &an);
            if (dead_scaler)
                return vlm_set_error("%s (fp16: the loss scale fell below 1, so this is not an "
                                     "overflow)", vlm_last_error());
            return -1;
        }
        t->skipped++;
    }
    t->step = step;
    if (st)
        *st = (vlm_step_stats){.loss = loss, .lr = info.lr, .grad_norm = info.grad_norm,
                               .skipped = info.skipped, .scale = info.scale, .samples = n};
    return 0;
}
