/* test_schedule.c - learning-rate schedules at key steps against the closed
 * forms (Hugging Face's LambdaLR lambdas, step 0 = the first update), and
 * vlm_optim_update following the schedule across steps. */
#include "optim.h"
#include "test.h"

#include <string.h>

static vlm_optim_cfg cosine(float lr, int warmup, int total, float ratio) {
    vlm_optim_cfg c;
    vlm_optim_cfg_defaults(&c);
    c.lr = lr;
    c.warmup_steps = warmup;
    c.total_steps = total;
    c.min_lr_ratio = ratio;
    return c;
}

/* |a - b| <= 1e-12 relative (both are double evaluations of the same formula
 * written differently) */
#define CHECK_LR(cfg, step, expect)                                                          \
    do {                                                                                      \
        double got_ = vlm_lr_at(&(cfg), (step)), exp_ = (expect);                             \
        CHECK(fabs(got_ - exp_) <= 1e-12 * fabs(exp_) + 1e-300, "step %lld: lr %.17g, "       \
              "expected %.17g", (long long)(step), got_, exp_);                               \
    } while (0)

static void test_cosine(void) {
    /* lr 1e-3, 10 warmup, 110 total, floor 10% */
    vlm_optim_cfg c = cosine(1e-3f, 10, 110, 0.1f);
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == 0, "%s", vlm_last_error());
    double lr = (double)c.lr, lo = lr * (double)c.min_lr_ratio;
    CHECK_LR(c, 0, 0.0);            /* first update: lr 0 (LambdaLR: factor 0/10) */
    CHECK_LR(c, 1, lr * 0.1);
    CHECK_LR(c, 5, lr * 0.5);
    CHECK_LR(c, 10, lr);            /* warmup end: the peak */
    CHECK_LR(c, 60, lo + (lr - lo) * 0.5); /* the middle of the decay */
    CHECK_LR(c, 35, lo + (lr - lo) * 0.5 * (1 + cos(M_PI * 0.25)));
    CHECK_LR(c, 109, lo + (lr - lo) * 0.5 * (1 + cos(M_PI * 99.0 / 100.0)));
    CHECK_LR(c, 110, lo);           /* end */
    CHECK_LR(c, 500, lo);           /* past the end: the floor, not HF's cosine climbing back */
    CHECK_LR(c, -1, 0.0);
    /* HF get_cosine_with_min_lr_schedule_with_warmup factor form, step by step */
    const double r = (double)c.min_lr_ratio, cycles = 0.5;
    for (int s = 0; s < 110; s++) {
        double f = s < 10 ? s / 10.0
                          : 0.5 * (1 + cos(M_PI * cycles * 2 * (s - 10) / 100.0)) * (1 - r) + r;
        CHECK_LR(c, s, lr * f);
    }
    /* monotone decay after warmup */
    bool mono = true;
    for (int s = 10; s < 200; s++) mono &= vlm_lr_at(&c, s + 1) <= vlm_lr_at(&c, s);
    CHECK(mono, "cosine must not increase after warmup");

    /* an absolute floor; no warmup */
    vlm_optim_cfg d = cosine(2e-3f, 0, 50, 0);
    d.min_lr = 1e-4f;
    CHECK(vlm_optim_cfg_validate(&d, "") == 0, "%s", vlm_last_error());
    CHECK_LR(d, 0, (double)d.lr);
    CHECK_LR(d, 25, (double)d.min_lr + ((double)d.lr - d.min_lr) * 0.5);
    CHECK_LR(d, 50, (double)d.min_lr);
    /* warmup == total: straight to the floor after the ramp */
    vlm_optim_cfg e = cosine(1e-3f, 20, 20, 0);
    CHECK(vlm_optim_cfg_validate(&e, "") == 0, "%s", vlm_last_error());
    CHECK_LR(e, 19, 1e-3f * 19.0 / 20.0);
    CHECK_LR(e, 20, 0.0);
}

static void test_constant(void) {
    vlm_optim_cfg c = cosine(5e-4f, 0, 0, 0);
    strcpy(c.schedule, "constant");
    CHECK(vlm_optim_cfg_validate(&c, "") == 0, "constant needs no total_steps: %s",
          vlm_last_error());
    CHECK_LR(c, 0, (double)c.lr);
    CHECK_LR(c, 123456789, (double)c.lr);
    c.warmup_steps = 4;
    CHECK_LR(c, 0, 0.0);
    CHECK_LR(c, 2, (double)c.lr * 0.5);
    CHECK_LR(c, 4, (double)c.lr);
    CHECK_LR(c, 1000, (double)c.lr);
}

static void test_validation(void) {
    vlm_optim_cfg c = cosine(1e-3f, 10, 0, 0);
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == -1 &&
              strstr(vlm_last_error(), "train.optim.total_steps"),
          "cosine without total_steps: %s", vlm_last_error());
    c = cosine(1e-3f, 10, 5, 0);
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == -1 &&
              strstr(vlm_last_error(), "train.optim.total_steps"),
          "warmup beyond total: %s", vlm_last_error());
    c = cosine(1e-3f, 0, 5, 0);
    strcpy(c.schedule, "linear");
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == -1 &&
              strstr(vlm_last_error(), "train.optim.schedule"),
          "unknown schedule: %s", vlm_last_error());
    c = cosine(1e-3f, 0, 5, 1.5f);
    CHECK(vlm_optim_cfg_validate(&c, "x") == -1 && strstr(vlm_last_error(), "x.min_lr_ratio"),
          "%s", vlm_last_error());
    c = cosine(NAN, 0, 5, 0);
    CHECK(vlm_optim_cfg_validate(&c, "x") == -1 && strstr(vlm_last_error(), "x.lr"), "%s",
          vlm_last_error());
    c = cosine(1e-3f, 0, 5, 0.1f);
    c.min_lr = 1e-5f;
    CHECK(vlm_optim_cfg_validate(&c, "x") == -1 && strstr(vlm_last_error(), "x.min_lr"), "%s",
          vlm_last_error());
}

/* vlm_optim_update uses vlm_lr_at(step count): with lr multiplier 1 and SGD
 * without momentum, p moves by exactly -lr(step) * g each update, and a
 * resumed optimizer (set_steps) continues the schedule. */
static void test_update_follows_schedule(void) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "w", 2, (int64_t[]){1, 1});
    CHECK(vlm_params_finalize(p) == 0, "%s", vlm_last_error());
    vlm_optim_cfg c = cosine(0.5f, 3, 8, 0.2f);
    strcpy(c.optimizer, "sgd");
    c.momentum = 0;
    c.weight_decay = 0;
    vlm_optim *o = vlm_optim_new(p, &c);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    float *w = vlm_params_values(p), *g = vlm_params_grads(p);
    for (int s = 0; s < 12; s++) {
        w[0] = 0.0f;
        g[0] = 1.0f;
        vlm_step_info info;
        CHECK(vlm_optim_update(o, NULL, &info) == 0 && !info.skipped, "%s", vlm_last_error());
        CHECK(info.lr == vlm_lr_at(&c, s) && w[0] == -(float)info.lr && info.grad_norm == 1.0,
              "update %d: lr %g, w %g, norm %g", s, info.lr, (double)w[0], info.grad_norm);
    }
    CHECK(vlm_optim_set_steps(o, 5) == 0 && vlm_optim_set_steps(o, -1) == -1, "set_steps");
    vlm_step_info info;
    vlm_optim_update(o, NULL, &info);
    CHECK(info.lr == vlm_lr_at(&c, 5) && vlm_optim_steps(o) == 6, "resume at step 5: lr %g",
          info.lr);
    vlm_optim_free(o);
    vlm_params_free(p);
}

int main(void) {
    test_cosine();
    test_constant();
    test_validation();
    test_update_follows_schedule();
    return TEST_DONE();
}
