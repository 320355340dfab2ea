/* test_sgd.c - SGD (momentum, Nesterov, coupled weight decay, plain) against
 * a double-precision reference of torch.optim.SGD, 100 steps, with a default
 * grouping (a bias without decay) and an lr multiplier by prefix. */
#include "optim.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x2545f4914f6cdd1dULL;
static double uniform(void) { /* [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

enum { STEPS = 100 };

/* Reference state and, as in test_adamw.c, the same recurrences on absolute
 * values (pa, ba): the error f32 rounding is accountable for in a sum of
 * terms of both signs is relative to the sum of their magnitudes. */
typedef struct {
    double *p, *b, *pa, *ba;
} ref_t;

/* torch.optim.SGD with dampening 0 (first step: buf = d, as 0 * mu + d). */
static void ref_sgd(ref_t *r, const float *g, int64_t n, double lr, double wd, double mu,
                    bool nesterov) {
    for (int64_t i = 0; i < n; i++) {
        double d = g[i] + wd * r->p[i], da = fabs((double)g[i]) + wd * r->pa[i];
        if (mu > 0) {
            r->b[i] = mu * r->b[i] + d;
            r->ba[i] = mu * r->ba[i] + da;
            d = nesterov ? d + mu * r->b[i] : r->b[i];
            da = nesterov ? da + mu * r->ba[i] : r->ba[i];
        }
        r->p[i] -= lr * d;
        r->pa[i] += lr * da;
    }
}

static double max_rel(const float *a, const double *b, const double *scale, int64_t n) {
    double r = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (scale[i] != 0) r = fmax(r, d / scale[i]);
        else if (d != 0) r = INFINITY;
    }
    return r;
}

static void run_case(float momentum, bool nesterov, float wd) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "enc.fc.weight", 2, (int64_t[]){120, 90});
    vlm_param_add(p, "enc.fc.bias", 1, (int64_t[]){120});
    vlm_param_add(p, "head.weight", 2, (int64_t[]){300, 110});
    CHECK(vlm_params_finalize(p) == 0, "%s", vlm_last_error());
    int64_t N = vlm_params_numel(p);
    for (int64_t i = 0; i < N; i++) vlm_params_values(p)[i] = (float)uniform();
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    strcpy(cfg.optimizer, "sgd");
    strcpy(cfg.schedule, "constant");
    cfg.lr = 0.05f;
    cfg.momentum = momentum;
    cfg.nesterov = nesterov;
    cfg.weight_decay = wd;
    cfg.n_lr_mults = 1;
    cfg.lr_mults[0] = (vlm_lr_mult){"enc.", 0.5f};
    vlm_optim *o = vlm_optim_new(p, &cfg);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    CHECK(vlm_optim_state_count(o) == (momentum > 0), "state count %d",
          vlm_optim_state_count(o));
    if (momentum > 0)
        CHECK(strcmp(vlm_optim_state_name(o, 0), "momentum_buffer") == 0, "state name");

    ref_t ref[3];
    const double mult[3] = {0.5, 0.5, 1}, wds[3] = {wd, 0, wd}; /* the bias does not decay */
    for (int k = 0; k < 3; k++) {
        vlm_tensor *t = vlm_params_at(p, k);
        ref[k].p = malloc((size_t)t->numel * sizeof(double));
        ref[k].pa = malloc((size_t)t->numel * sizeof(double));
        ref[k].b = calloc((size_t)t->numel, sizeof(double));
        ref[k].ba = calloc((size_t)t->numel, sizeof(double));
        for (int64_t j = 0; j < t->numel; j++) {
            ref[k].p[j] = vlm_f32(t)[j];
            ref[k].pa[j] = fabs(ref[k].p[j]);
        }
    }
    for (int s = 0; s < STEPS; s++) {
        for (int64_t i = 0; i < N; i++) vlm_params_grads(p)[i] = (float)uniform();
        CHECK(vlm_optim_step(o, cfg.lr) == 0, "%s", vlm_last_error());
        for (int k = 0; k < 3; k++)
            ref_sgd(&ref[k], vlm_params_at(p, k)->grad, vlm_params_at(p, k)->numel,
                    (double)cfg.lr * mult[k], wds[k], (double)momentum, nesterov);
        if (s == 0 && momentum > 0 && wd == 0) { /* torch clones d into the buffer */
            float *buf = vlm_optim_state(o, 0, NULL);
            CHECK(memcmp(buf, vlm_params_grads(p), (size_t)N * sizeof(float)) == 0,
                  "first momentum buffer must equal the grad bit for bit");
        }
    }
    double rp = 0, rb = 0;
    float *buf = momentum > 0 ? vlm_optim_state(o, 0, NULL) : NULL;
    for (int k = 0; k < 3; k++) {
        vlm_tensor *t = vlm_params_at(p, k);
        rp = fmax(rp, max_rel(vlm_f32(t), ref[k].p, ref[k].pa, t->numel));
        if (buf)
            rb = fmax(rb, max_rel(buf + vlm_params_offset(p, t), ref[k].b, ref[k].ba, t->numel));
        free(ref[k].p);
        free(ref[k].pa);
        free(ref[k].b);
        free(ref[k].ba);
    }
    printf("SGD momentum %.2f nesterov %d wd %g: max rel err params %.2e, buffer %.2e\n",
           (double)momentum, nesterov, (double)wd, rp, rb);
    CHECK(rp <= STEPS * 0x1p-24 && rb <= STEPS * 0x1p-24, "params %.3g buffer %.3g", rp, rb);
    vlm_optim_free(o);
    vlm_params_free(p);
}

static void test_config_errors(void) {
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    strcpy(cfg.optimizer, "sgd");
    cfg.total_steps = 10;
    cfg.momentum = 0;
    cfg.nesterov = true;
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "w", 1, (int64_t[]){4});
    vlm_params_finalize(p);
    CHECK(vlm_optim_new(p, &cfg) == NULL && strstr(vlm_last_error(), "optim.nesterov"),
          "nesterov without momentum: %s", vlm_last_error());
    vlm_params_free(p);
}

int main(void) {
    run_case(0.9f, false, 0.0f);
    run_case(0.9f, false, 1e-3f);
    run_case(0.9f, true, 1e-3f);
    run_case(0.0f, false, 1e-3f);
    test_config_errors();
    return TEST_DONE();
}
