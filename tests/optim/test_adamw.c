/* test_adamw.c - AdamW against a double-precision reference written here
 * (torch.optim.AdamW's update), over 100 steps with two parameter groups (one
 * without decay, one with weight decay and an lr multiplier), a scheduled lr,
 * a trainable parameter in no group and a frozen one; thread-count
 * independence; throughput. */
#include "optim.h"
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static double uniform(void) { /* [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

enum { NP = 5, STEPS = 100 };
static const char *names[NP] = {"a.weight", "a.bias", "b.weight", "c.weight", "frozen.weight"};
static const int64_t shapes[NP][2] = {{37, 19}, {19, 1}, {150, 200}, {70, 300}, {64, 64}};

static vlm_params *make_store(void) {
    vlm_params *p = vlm_params_new();
    for (int i = 0; i < NP; i++)
        vlm_param_add(p, names[i], shapes[i][1] == 1 ? 1 : 2, shapes[i]);
    if (vlm_params_finalize(p)) {
        vlm_params_free(p);
        return NULL;
    }
    vlm_param_set_frozen(vlm_params_find(p, "frozen.weight"), true);
    return p;
}

/* The reference state, and for p and m the same recurrences run on absolute
 * values (pa, ma). m and p are sums of terms of both signs; where they cancel
 * to near 0, |a - b| / |b| measures the cancellation, not the optimizer: any
 * f32 evaluation of such a sum is off by up to ~u * sum |terms|. Dividing by
 * the sum of |terms| (pa, ma) is the relative error that f32 rounding is
 * accountable for. v is a sum of positive terms, so v itself is that sum. */
typedef struct {
    double *p, *m, *v, *pa, *ma;
} ref_state;

/* torch.optim.AdamW, in double, for one parameter tensor. */
static void ref_adamw(ref_state *s, const float *g, int64_t n, double lr, double wd, double b1,
                      double b2, double eps, int64_t t) {
    double bc1 = 1 - pow(b1, (double)t), bc2 = 1 - pow(b2, (double)t);
    for (int64_t i = 0; i < n; i++) {
        s->p[i] *= 1 - lr * wd;
        s->pa[i] *= 1 - lr * wd;
        s->m[i] = b1 * s->m[i] + (1 - b1) * g[i];
        s->ma[i] = b1 * s->ma[i] + (1 - b1) * fabs((double)g[i]);
        s->v[i] = b2 * s->v[i] + (1 - b2) * (double)g[i] * g[i];
        double denom = sqrt(s->v[i]) / sqrt(bc2) + eps;
        s->p[i] -= lr / bc1 * s->m[i] / denom;
        s->pa[i] += lr / bc1 * s->ma[i] / denom;
    }
}

/* max |a - b| / scale over n elements (scale = |b| when NULL); worst_abs
 * collects max |a - b|. */
static double max_rel(const float *a, const double *b, const double *scale, int64_t n,
                      double *worst_abs) {
    double r = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]), s = scale ? scale[i] : fabs(b[i]);
        if (worst_abs && d > *worst_abs) *worst_abs = d;
        if (s != 0) r = fmax(r, d / s);
        else if (d != 0) r = INFINITY;
    }
    return r;
}

static void test_against_reference(void) {
    vlm_params *p = make_store();
    CHECK(p != NULL, "%s", vlm_last_error());
    if (!p) return;
    float *P = vlm_params_values(p), *G = vlm_params_grads(p);
    int64_t N = vlm_params_numel(p);
    for (int64_t i = 0; i < N; i++) P[i] = (float)uniform();
    float *P0 = malloc((size_t)N * sizeof *P0);
    memcpy(P0, P, (size_t)N * sizeof *P0);

    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.lr = 1e-2f;
    cfg.beta2 = 0.95f;
    cfg.warmup_steps = 10;
    cfg.total_steps = STEPS;
    cfg.min_lr_ratio = 0.1f;
    /* group 0: a.bias + b.weight, no decay; group 1: a.weight + c.weight, decay 0.1 at lr x0.3.
     * frozen.weight is listed (and skipped); nothing else holds it. */
    const int g0[] = {1, 2}, g1[] = {0, 3, 4};
    vlm_param_group_spec specs[2] = {{"no_decay", g0, 2, 1.0f, 0.0f},
                                     {"decay_slow", g1, 3, 0.3f, 0.1f}};
    vlm_optim *o = vlm_optim_new_groups(p, &cfg, specs, 2);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    CHECK(vlm_optim_group_count(o) == 2 && vlm_optim_group(o, 1)->n_params == 2 &&
              vlm_optim_group_of(o, 4) == -1 && vlm_optim_group_of(o, 3) == 1,
          "groups: frozen.weight must join no group");
    CHECK(vlm_optim_state_count(o) == 2 && strcmp(vlm_optim_state_name(o, 0), "exp_avg") == 0 &&
              strcmp(vlm_optim_state_name(o, 1), "exp_avg_sq") == 0,
          "state names");

    ref_state ref[NP];
    for (int i = 0; i < NP; i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        ref[i].p = malloc((size_t)t->numel * sizeof(double));
        ref[i].m = calloc((size_t)t->numel, sizeof(double));
        ref[i].v = calloc((size_t)t->numel, sizeof(double));
        ref[i].pa = malloc((size_t)t->numel * sizeof(double));
        ref[i].ma = calloc((size_t)t->numel, sizeof(double));
        for (int64_t j = 0; j < t->numel; j++) {
            ref[i].p[j] = vlm_f32(t)[j];
            ref[i].pa[j] = fabs(ref[i].p[j]);
        }
    }
    const double wd[NP] = {0.1, 0, 0, 0.1, 0}, mult[NP] = {0.3, 1, 1, 0.3, 0};
    /* grads differ in scale by 1e3 across tensors (Adam is scale-free, decay is not) */
    const double gscale[NP] = {1, 1e-3, 0.5, 2, 1};
    float *G_before = malloc((size_t)N * sizeof *G_before);
    for (int s = 0; s < STEPS; s++) {
        for (int i = 0; i < NP; i++) {
            vlm_tensor *t = vlm_params_at(p, i);
            for (int64_t j = 0; j < t->numel; j++) t->grad[j] = (float)(gscale[i] * uniform());
        }
        vlm_tensor *fz = vlm_params_find(p, "frozen.weight");
        for (int64_t j = 0; j < fz->numel; j++) fz->grad[j] = NAN; /* must never be read */
        memcpy(G_before, G, (size_t)N * sizeof *G);
        double lr = vlm_lr_at(&cfg, vlm_optim_steps(o));
        CHECK(vlm_optim_step(o, lr) == 0, "step %d: %s", s, vlm_last_error());
        for (int i = 0; i < NP - 1; i++)
            ref_adamw(&ref[i], vlm_params_at(p, i)->grad, vlm_params_at(p, i)->numel,
                      lr * mult[i], wd[i], (double)cfg.beta1, (double)cfg.beta2,
                      (double)cfg.eps, s + 1);
    }
    CHECK(memcmp(G_before, G, (size_t)N * sizeof *G) == 0, "the step must not modify grads");
    CHECK(vlm_optim_steps(o) == STEPS, "steps %lld", (long long)vlm_optim_steps(o));

    float *M = vlm_optim_state(o, 0, NULL), *V = vlm_optim_state(o, 1, NULL);
    double worst_p = 0, worst_m = 0, worst_v = 0, worst_abs = 0, plain_p = 0, plain_m = 0;
    for (int i = 0; i < NP - 1; i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        int64_t off = vlm_params_offset(p, t);
        double rp = max_rel(vlm_f32(t), ref[i].p, ref[i].pa, t->numel, &worst_abs);
        double rm = max_rel(M + off, ref[i].m, ref[i].ma, t->numel, NULL);
        double rv = max_rel(V + off, ref[i].v, NULL, t->numel, NULL);
        double pp = max_rel(vlm_f32(t), ref[i].p, NULL, t->numel, NULL);
        double pm = max_rel(M + off, ref[i].m, NULL, t->numel, NULL);
        printf("%-14s rel err: params %.2e  m %.2e  v %.2e   (plain |a-b|/|b|: params %.2e, "
               "m %.2e)\n", t->name, rp, rm, rv, pp, pm);
        worst_p = fmax(worst_p, rp);
        worst_m = fmax(worst_m, rm);
        worst_v = fmax(worst_v, rv);
        plain_p = fmax(plain_p, pp);
        plain_m = fmax(plain_m, pm);
    }
    printf("AdamW vs double reference, %d steps: max rel err params %.2e (max abs %.2e), "
           "m %.2e, v %.2e\n", STEPS, worst_p, worst_abs, worst_m, worst_v);
    /* f32 rounds p once or twice per step: 100 steps of u = 2^-24 is 6e-6 */
    CHECK(worst_p <= STEPS * 0x1p-24, "params differ from the reference by %.3g relative",
          worst_p);
    CHECK(worst_m <= 1e-6 && worst_v <= 1e-6, "state differs: m %.3g v %.3g", worst_m, worst_v);
    CHECK(worst_abs <= 1e-5, "params differ by %.3g absolute", worst_abs);

    vlm_tensor *fz = vlm_params_find(p, "frozen.weight");
    int64_t foff = vlm_params_offset(p, fz);
    CHECK(memcmp(vlm_f32(fz), P0 + foff, (size_t)fz->numel * sizeof(float)) == 0,
          "frozen values changed");
    bool zero = true;
    for (int64_t j = 0; j < fz->numel; j++) zero &= M[foff + j] == 0 && V[foff + j] == 0;
    CHECK(zero, "frozen state was written");

    for (int i = 0; i < NP; i++) {
        free(ref[i].p);
        free(ref[i].m);
        free(ref[i].v);
        free(ref[i].pa);
        free(ref[i].ma);
    }
    free(G_before);
    free(P0);
    vlm_optim_free(o);
    vlm_params_free(p);
}

/* A trainable parameter in no group is not touched. */
static void test_ungrouped(void) {
    vlm_params *p = make_store();
    float *P = vlm_params_values(p), *G = vlm_params_grads(p);
    for (int64_t i = 0; i < vlm_params_numel(p); i++) P[i] = G[i] = (float)uniform();
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.total_steps = 10;
    const int g0[] = {0, 2};
    vlm_param_group_spec spec = {NULL, g0, 2, 1.0f, 0.01f};
    vlm_optim *o = vlm_optim_new_groups(p, &cfg, &spec, 1);
    CHECK(o && strcmp(vlm_optim_group(o, 0)->name, "group0") == 0, "%s", vlm_last_error());
    vlm_tensor *c = vlm_params_find(p, "c.weight");
    float *before = malloc((size_t)c->numel * sizeof *before);
    memcpy(before, vlm_f32(c), (size_t)c->numel * sizeof *before);
    CHECK(vlm_optim_step(o, 1e-3) == 0, "%s", vlm_last_error());
    CHECK(memcmp(before, vlm_f32(c), (size_t)c->numel * sizeof *before) == 0,
          "an ungrouped parameter changed");
    CHECK(vlm_optim_step(o, NAN) == -1 && strstr(vlm_last_error(), "learning rate"),
          "a NaN lr must be refused: %s", vlm_last_error());
    CHECK(vlm_optim_steps(o) == 1, "a refused step must not count");
    /* duplicate membership and bad indices are errors that name the thing */
    const int dup[] = {0}, bad[] = {9};
    vlm_param_group_spec two[2] = {{"x", g0, 2, 1, 0}, {"y", dup, 1, 1, 0}};
    CHECK(vlm_optim_new_groups(p, &cfg, two, 2) == NULL &&
              strstr(vlm_last_error(), "'a.weight' is in groups 'x' and 'y'"),
          "duplicate: %s", vlm_last_error());
    vlm_param_group_spec oob = {"z", bad, 1, 1, 0};
    CHECK(vlm_optim_new_groups(p, &cfg, &oob, 1) == NULL && strstr(vlm_last_error(), "'z'"),
          "out of range: %s", vlm_last_error());
    /* freezing after the build is refused by the step, naming the parameter */
    vlm_param_set_frozen(vlm_params_find(p, "a.bias"), true);
    CHECK(vlm_optim_step(o, 1e-3) == -1 && strstr(vlm_last_error(), "'a.bias' was frozen"),
          "%s", vlm_last_error());
    free(before);
    vlm_optim_free(o);
    vlm_params_free(p);
}

/* Same result bit for bit with 1 and 2 threads, and throughput. */
static void test_threads_and_speed(void) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "w.weight", 2, (int64_t[]){2048, 2048});
    vlm_param_add(p, "w.bias", 1, (int64_t[]){2048});
    vlm_param_add(p, "v.weight", 2, (int64_t[]){1024, 2048});
    CHECK(vlm_params_finalize(p) == 0, "%s", vlm_last_error());
    int64_t N = vlm_params_numel(p);
    float *P = vlm_params_values(p), *G = vlm_params_grads(p);
    float *init = malloc((size_t)N * sizeof *init), *res1 = malloc((size_t)N * sizeof *res1);
    for (int64_t i = 0; i < N; i++) {
        init[i] = (float)uniform();
        G[i] = (float)uniform();
    }
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.total_steps = 100;
    int threads = omp_get_max_threads();
    double ms = 0;
    for (int run = 0; run < 2; run++) {
        vlm_set_num_threads(run == 0 ? 1 : threads);
        memcpy(P, init, (size_t)N * sizeof *P);
        vlm_optim *o = vlm_optim_new(p, &cfg);
        CHECK(vlm_optim_step(o, 1e-3) == 0, "%s", vlm_last_error()); /* faults the state in */
        double t0 = omp_get_wtime();
        for (int s = 0; s < 5; s++) vlm_optim_step(o, 1e-3);
        ms = (omp_get_wtime() - t0) * 1000 / 5;
        if (run == 0) memcpy(res1, P, (size_t)N * sizeof *P);
        else CHECK(memcmp(res1, P, (size_t)N * sizeof *P) == 0, "1 and %d threads differ", threads);
        printf("AdamW step, %lld params, %d thread(s): %.2f ms  (%.1f GB/s at 28 B/param)\n",
               (long long)N, run == 0 ? 1 : threads, ms, 28.0 * (double)N / (ms * 1e6));
        vlm_optim_free(o);
    }
    vlm_set_num_threads(threads);
    free(init);
    free(res1);
    vlm_params_free(p);
}

int main(void) {
    test_against_reference();
    test_ungrouped();
    test_threads_and_speed();
    return TEST_DONE();
}
