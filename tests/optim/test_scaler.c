/* test_scaler.c - the fp16 dynamic loss scaler: the state machine (growth
 * after 2000 clean steps, and after a smaller configured interval inside
 * full updates; backoff on Inf/NaN), exact unscaling, and skipped steps that
 * leave weights, AdamW m and v and the step count untouched bit for bit. */
#include "optim.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0xda3e39cb94b95bdbULL;
static double uniform(void) { /* [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

static void test_state_machine(void) {
    vlm_loss_scaler s;
    vlm_loss_scaler_init(&s);
    CHECK(s.scale == 65536.0f && s.good_steps == 0 && s.growth_interval == 2000 &&
              s.growth_factor == 2.0f && s.backoff_factor == 0.5f,
          "defaults");
    for (int i = 0; i < 1999; i++) vlm_loss_scaler_update(&s, false);
    CHECK(s.scale == 65536.0f && s.good_steps == 1999, "after 1999 clean steps: %g %d",
          (double)s.scale, s.good_steps);
    vlm_loss_scaler_update(&s, false);
    CHECK(s.scale == 131072.0f && s.good_steps == 0, "after 2000 clean steps: %g %d",
          (double)s.scale, s.good_steps);
    for (int i = 0; i < 1500; i++) vlm_loss_scaler_update(&s, false);
    vlm_loss_scaler_update(&s, true);
    CHECK(s.scale == 65536.0f && s.good_steps == 0, "backoff resets the count: %g %d",
          (double)s.scale, s.good_steps);
    for (int i = 0; i < 1999; i++) vlm_loss_scaler_update(&s, false);
    CHECK(s.scale == 65536.0f, "the count restarted after the backoff");
    /* growth that would overflow is not taken (torch) */
    s.scale = 0x1p127f;
    s.growth_interval = 1;
    vlm_loss_scaler_update(&s, false);
    CHECK(s.scale == 0x1p127f && s.good_steps == 0, "overflowing growth: %g", (double)s.scale);
}

/* A store with a frozen parameter whose grads are NaN: never looked at. */
static vlm_params *make_store(void) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "enc.weight", 2, (int64_t[]){200, 300});
    vlm_param_add(p, "enc.bias", 1, (int64_t[]){200});
    vlm_param_add(p, "frozen.weight", 2, (int64_t[]){50, 50});
    vlm_param_add(p, "head.weight", 2, (int64_t[]){10, 200});
    if (vlm_params_finalize(p)) return NULL;
    vlm_param_set_frozen(vlm_params_find(p, "frozen.weight"), true);
    for (int64_t i = 0; i < vlm_params_numel(p); i++) vlm_params_values(p)[i] = (float)uniform();
    return p;
}

/* grads = scale * fresh random values (NaN for the frozen parameter) */
static void fill_grads(vlm_params *p, float scale, float *unscaled) {
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        int64_t off = vlm_params_offset(p, t);
        for (int64_t j = 0; j < t->numel; j++) {
            float g = (float)(1e-3 * uniform());
            unscaled[off + j] = g;
            t->grad[j] = t->requires_grad ? g * scale : NAN;
        }
    }
}

static void test_unscale(void) {
    vlm_params *p = make_store();
    CHECK(p != NULL, "%s", vlm_last_error());
    if (!p) return;
    int64_t N = vlm_params_numel(p);
    float *g0 = malloc((size_t)N * sizeof *g0);
    vlm_loss_scaler s;
    vlm_loss_scaler_init(&s);
    fill_grads(p, s.scale, g0);
    CHECK(vlm_loss_scaler_unscale(&s, p), "finite grads reported non-finite");
    bool exact = true;
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        int64_t off = vlm_params_offset(p, t);
        for (int64_t j = 0; j < t->numel; j++)
            exact &= t->requires_grad ? t->grad[j] == g0[off + j] : isnan(t->grad[j]);
    }
    CHECK(exact, "unscale by a power of two must give back the unscaled grads exactly");
    vlm_params_find(p, "head.weight")->grad[1999] = INFINITY;
    CHECK(!vlm_loss_scaler_unscale(&s, p), "an Inf grad was not found");
    free(g0);
    vlm_params_free(p);
}

typedef struct {
    float *p, *m, *v;
    int64_t steps;
} snapshot;

static snapshot take(vlm_optim *o, int64_t n) {
    snapshot s = {malloc((size_t)n * 4), malloc((size_t)n * 4), malloc((size_t)n * 4),
                  vlm_optim_steps(o)};
    memcpy(s.p, vlm_params_values(vlm_optim_params(o)), (size_t)n * 4);
    memcpy(s.m, vlm_optim_state(o, 0, NULL), (size_t)n * 4);
    memcpy(s.v, vlm_optim_state(o, 1, NULL), (size_t)n * 4);
    return s;
}

static bool same(vlm_optim *o, const snapshot *s, int64_t n) {
    return memcmp(s->p, vlm_params_values(vlm_optim_params(o)), (size_t)n * 4) == 0 &&
           memcmp(s->m, vlm_optim_state(o, 0, NULL), (size_t)n * 4) == 0 &&
           memcmp(s->v, vlm_optim_state(o, 1, NULL), (size_t)n * 4) == 0 &&
           s->steps == vlm_optim_steps(o);
}

static void drop(snapshot *s) {
    free(s->p);
    free(s->m);
    free(s->v);
}

/* Two identical models: A trains with the scaler on scaled grads, B without
 * one on the unscaled grads; clean steps must agree bit for bit (the scale
 * is a power of two), skipped steps must change nothing in A. */
static void test_updates(void) {
    vlm_params *pa = make_store(), *pb = make_store();
    CHECK(pa && pb, "%s", vlm_last_error());
    if (!pa || !pb) return;
    memcpy(vlm_params_values(pb), vlm_params_values(pa),
           (size_t)vlm_params_numel(pa) * sizeof(float));
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.lr = 1e-2f;
    cfg.warmup_steps = 2;
    cfg.total_steps = 20;
    cfg.clip_norm = 0.05f; /* clipping after unscaling: on the true norm */
    vlm_optim *a = vlm_optim_new(pa, &cfg), *b = vlm_optim_new(pb, &cfg);
    CHECK(a && b, "%s", vlm_last_error());
    if (!a || !b) return;
    int64_t N = vlm_params_numel(pa);
    float *g = malloc((size_t)N * sizeof *g);
    vlm_loss_scaler s;
    vlm_loss_scaler_init(&s);
    s.growth_interval = 3;
    /* step: 0 1 2 | 3: Inf | 4 5 | 6: NaN | 7 8 9 -> scale 65536 x2 /2 /2 x2 */
    const float expect_scale[10] = {65536, 65536, 131072, 65536, 65536,
                                    65536, 32768, 32768,  32768, 65536};
    int updates = 0;
    for (int k = 0; k < 10; k++) {
        fill_grads(pa, s.scale, g);
        memcpy(vlm_params_grads(pb), g, (size_t)N * sizeof *g);
        bool poison = k == 3 || k == 6;
        if (poison) vlm_params_find(pa, "enc.weight")->grad[777] = k == 3 ? INFINITY : NAN;
        snapshot before = take(a, N);
        vlm_step_info ia, ib;
        CHECK(vlm_optim_update(a, &s, &ia) == 0, "%s", vlm_last_error());
        CHECK(ia.skipped == poison, "step %d: skipped %d", k, ia.skipped);
        CHECK(ia.scale == expect_scale[k] && s.scale == expect_scale[k],
              "step %d: scale %g, expected %g", k, (double)s.scale, (double)expect_scale[k]);
        if (poison) {
            CHECK(same(a, &before, N), "step %d: a skipped step changed weights, m, v or the "
                  "step count", k);
            CHECK(s.good_steps == 0 && isnan(ia.grad_norm) && ia.lr == 0, "step %d: info", k);
        } else {
            CHECK(vlm_optim_update(b, NULL, &ib) == 0, "%s", vlm_last_error());
            CHECK(ia.grad_norm == ib.grad_norm && ia.lr == ib.lr,
                  "step %d: norm %.17g vs %.17g, lr %g vs %g", k, ia.grad_norm, ib.grad_norm,
                  ia.lr, ib.lr);
            CHECK(memcmp(vlm_params_values(pa), vlm_params_values(pb), (size_t)N * 4) == 0,
                  "step %d: scaled and unscaled training differ", k);
            updates++;
        }
        drop(&before);
    }
    CHECK(vlm_optim_steps(a) == updates && vlm_optim_steps(b) == updates,
          "step counts %lld %lld, expected %d", (long long)vlm_optim_steps(a),
          (long long)vlm_optim_steps(b), updates);
    vlm_tensor *fz = vlm_params_find(pa, "frozen.weight");
    bool zero = true;
    float *m = vlm_optim_state(a, 0, NULL);
    for (int64_t j = 0; j < fz->numel; j++) zero &= m[vlm_params_offset(pa, fz) + j] == 0;
    CHECK(zero, "frozen state written");
    free(g);
    vlm_optim_free(a);
    vlm_optim_free(b);
    vlm_params_free(pa);
    vlm_params_free(pb);
}

int main(void) {
    test_state_machine();
    test_unscale();
    test_updates();
    return TEST_DONE();
}
