/* test_activation.c - gelu, silu, sigmoid, tanh, exp, log, relu, dropout:
 * forward values against closed forms and hand-computed constants, the
 * vectorised tanh / exp / sigmoid / gelu / silu against double over the
 * whole float range (ulp errors, NaN and Inf), behaviour at extreme inputs,
 * grads on tensors large enough for the parallel loops, dropout statistics
 * and determinism, errors, and the tape. */
#include "autograd.h"
#include "test.h"

#include <float.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef vlm_tensor *(*unary_fn)(vlm_ctx *, vlm_tensor *);

static vlm_tensor *vec(vlm_ctx *ctx, int64_t n, const float *v) {
    return vlm_tensor_from(ctx, VLM_F32, 1, &n, v);
}

/* y = f(x) for one value, via a fresh [1] tensor */
static float apply1(vlm_ctx *ctx, unary_fn f, float x) {
    vlm_tensor *y = f(ctx, vec(ctx, 1, &x));
    return y ? vlm_f32(y)[0] : -12345.0f;
}

/* ---- closed forms in double (the reference, written from the definitions) ---- */

static double gelu_ref(double x) {
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}
static double gelu_grad_ref(double x) {
    double c = sqrt(2 / M_PI), t = tanh(c * (x + 0.044715 * x * x * x));
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x);
}
static double sigmoid_ref(double x) { return 1 / (1 + exp(-x)); }
static double sigmoid_grad_ref(double x) { return sigmoid_ref(x) * (1 - sigmoid_ref(x)); }
static double silu_ref(double x) { return x * sigmoid_ref(x); }
static double silu_grad_ref(double x) {
    return sigmoid_ref(x) + x * sigmoid_ref(x) * (1 - sigmoid_ref(x));
}
static double tanh_grad_ref(double x) { return 1 - tanh(x) * tanh(x); }
static double exp_grad_ref(double x) { return exp(x); }
static double log_grad_ref(double x) { return 1 / x; }
static double relu_ref(double x) { return x > 0 ? x : 0; }
static double relu_grad_ref(double x) { return x > 0 ? 1 : 0; }

/* ---- forward values ---------------------------------------------------------- */

static void test_values(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    /* gelu, tanh form (= torch gelu(approximate='tanh')), values from the formula in double */
    CHECK_NEAR(apply1(ctx, vlm_gelu, 1.0f), 0.8411919906082768, 1e-6);
    CHECK_NEAR(apply1(ctx, vlm_gelu, -1.0f), -0.15880800939172324, 1e-6);
    CHECK_NEAR(apply1(ctx, vlm_gelu, 2.0f), 1.954597694087775, 1e-6);
    CHECK_NEAR(apply1(ctx, vlm_gelu, -3.0f), -0.0036373920817729943, 1e-6);
    CHECK_NEAR(apply1(ctx, vlm_gelu, 0.5f), 0.34571400982514394, 1e-6);
    CHECK(apply1(ctx, vlm_gelu, 0.0f) == 0.0f, "gelu(0) = 0");
    CHECK(apply1(ctx, vlm_gelu, 10.0f) == 10.0f, "gelu(10) = 10");
    float big = apply1(ctx, vlm_gelu, 1e20f), nbig = apply1(ctx, vlm_gelu, -1e20f);
    CHECK(big == 1e20f && nbig == 0.0f, "gelu(+-1e20) = %g, %g (x^3 overflows)", big, nbig);

    CHECK(apply1(ctx, vlm_sigmoid, 0.0f) == 0.5f, "sigmoid(0) = 0.5");
    CHECK_NEAR(apply1(ctx, vlm_sigmoid, 2.0f), 0.8807970779778823, 1e-7);
    CHECK_NEAR(apply1(ctx, vlm_sigmoid, -2.0f), 0.11920292202211755, 1e-7);
    float s100 = apply1(ctx, vlm_sigmoid, -100.0f);
    CHECK(!isnan(s100) && s100 >= 0 && s100 < 1e-40f, "sigmoid(-100) = %g (0, not NaN)", s100);
    CHECK(apply1(ctx, vlm_sigmoid, -1000.0f) == 0.0f, "sigmoid(-1000) = 0");
    CHECK(apply1(ctx, vlm_sigmoid, 100.0f) == 1.0f, "sigmoid(100) = 1");
    CHECK(apply1(ctx, vlm_sigmoid, 1000.0f) == 1.0f, "sigmoid(1000) = 1");

    /* silu(x) = x sigmoid(x) */
    CHECK_NEAR(apply1(ctx, vlm_silu, 1.5f), 1.2263617142904655, 1e-6);
    CHECK_NEAR(apply1(ctx, vlm_silu, -4.0f), -0.07194483984836623, 1e-6);
    for (float x = -9.0f; x <= 9.0f; x += 0.75f)
        CHECK_NEAR(apply1(ctx, vlm_silu, x), silu_ref(x), 1e-6);
    float sm = apply1(ctx, vlm_silu, -100.0f);
    CHECK(!isnan(sm) && fabsf(sm) < 1e-38f, "silu(-100) = %g", sm);
    CHECK(apply1(ctx, vlm_silu, 100.0f) == 100.0f, "silu(100) = 100");

    CHECK_NEAR(apply1(ctx, vlm_tanh, 0.5f), 0.46211715726000974, 1e-7);
    CHECK(apply1(ctx, vlm_tanh, 50.0f) == 1.0f && apply1(ctx, vlm_tanh, -50.0f) == -1.0f,
          "tanh saturates");

    CHECK(apply1(ctx, vlm_exp, 0.0f) == 1.0f, "exp(0) = 1");
    CHECK_NEAR(apply1(ctx, vlm_exp, 1.5f), 4.4816890703380645, 1e-6);
    CHECK(apply1(ctx, vlm_exp, -200.0f) == 0.0f, "exp(-200) underflows to 0");
    CHECK(isinf(apply1(ctx, vlm_exp, 100.0f)), "exp(100) overflows to inf in f32");

    CHECK(apply1(ctx, vlm_log, 1.0f) == 0.0f, "log(1) = 0");
    CHECK_NEAR(apply1(ctx, vlm_log, 3.0f), 1.0986122886681098, 1e-7);
    float l0 = apply1(ctx, vlm_log, 0.0f), ln = apply1(ctx, vlm_log, -1.0f);
    CHECK(isinf(l0) && l0 < 0, "log(0) = -inf, got %g", l0);
    CHECK(isnan(ln), "log(-1) = NaN, got %g", ln);

    const float rx[] = {-2.0f, -0.25f, 0.0f, 0.5f, 3.0f, NAN};
    vlm_tensor *r = vlm_relu(ctx, vec(ctx, 6, rx));
    CHECK(r, "relu: %s", vlm_last_error());
    for (int i = 0; r && i < 5; i++) CHECK(vlm_f32(r)[i] == relu_ref(rx[i]), "relu(%g)", rx[i]);
    CHECK(r && isnan(vlm_f32(r)[5]), "relu(NaN) stays NaN");
    vlm_ctx_free(ctx);
}

/* ---- grads on a tensor large enough for the parallel loops ----------------------- */

typedef struct {
    const char *name;
    unary_fn f;
    double (*fwd)(double);
    double (*grad)(double);
    float lo, hi;
} unary_case;

static void check_grad_large(const unary_case *c) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    int64_t n = 40000; /* > VLM_PAR_MIN */
    float *xv = malloc((size_t)n * sizeof *xv), *dy = malloc((size_t)n * sizeof *dy);
    for (int64_t i = 0; i < n; i++) {
        xv[i] = c->lo + (c->hi - c->lo) * (float)(i + 0.5) / (float)n;
        dy[i] = (float)((i % 7) - 3) * 0.25f;
    }
    vlm_tensor *x = vec(ctx, n, xv);
    x->requires_grad = true;
    vlm_tensor *y = c->f(ctx, x);
    int rc = y ? vlm_backward_from(ctx, 0, y, dy) : -1;
    CHECK(rc == 0 && x->grad, "%s backward: %s", c->name, vlm_last_error());
    double worst_y = 0, worst_g = 0;
    for (int64_t i = 0; rc == 0 && i < n; i++) {
        double ry = c->fwd(xv[i]), rg = dy[i] * c->grad(xv[i]);
        double ey = fabs(vlm_f32(y)[i] - ry) / fmax(1, fabs(ry));
        double eg = fabs(x->grad[i] - rg) / fmax(1, fabs(rg));
        if (!(ey <= worst_y)) worst_y = ey;
        if (!(eg <= worst_g)) worst_g = eg;
    }
    CHECK(worst_y < 2e-6 && worst_g < 2e-6, "%s on [%g, %g]: max err y %.3g grad %.3g", c->name,
          c->lo, c->hi, worst_y, worst_g);
    free(xv);
    free(dy);
    vlm_ctx_free(ctx);
}

static void test_grads_large(void) {
    static const unary_case cases[] = {
        {"gelu", vlm_gelu, gelu_ref, gelu_grad_ref, -8, 8},
        {"silu", vlm_silu, silu_ref, silu_grad_ref, -12, 12},
        {"sigmoid", vlm_sigmoid, sigmoid_ref, sigmoid_grad_ref, -20, 20},
        {"tanh", vlm_tanh, tanh, tanh_grad_ref, -6, 6},
        {"exp", vlm_exp, exp, exp_grad_ref, -10, 3},
        {"log", vlm_log, log, log_grad_ref, 0.05f, 20},
        {"relu", vlm_relu, relu_ref, relu_grad_ref, -3, 3},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_grad_large(&cases[i]);
}

/* Derivatives stay finite (no inf * 0) where the functions saturate. */
static void test_grads_extreme(void) {
    static const unary_fn fns[] = {vlm_gelu, vlm_silu, vlm_sigmoid, vlm_tanh};
    static const char *names[] = {"gelu", "silu", "sigmoid", "tanh"};
    const float xv[] = {-100, -30, 30, 100};
    for (int k = 0; k < 4; k++) {
        vlm_ctx *ctx = vlm_ctx_new(1 << 20);
        vlm_tensor *x = vec(ctx, 4, xv);
        x->requires_grad = true;
        vlm_tensor *y = fns[k](ctx, x);
        CHECK(y && vlm_backward_from(ctx, 0, y, NULL) == 0, "%s: %s", names[k], vlm_last_error());
        for (int i = 0; y && x->grad && i < 4; i++) {
            double want = xv[i] > 0 && k < 2 ? 1 : 0; /* gelu, silu -> identity; else flat */
            CHECK(fabs(x->grad[i] - want) < 1e-6, "%s'(%g) = %g, want %g", names[k], xv[i],
                  x->grad[i], want);
        }
        vlm_ctx_free(ctx);
    }
}

/* ---- the vectorised kernels against double --------------------------------------------
 * tanh, exp and sigmoid run on vectorised polynomials (autograd/vmath.h), not
 * libm. Inputs: every 4099th float bit pattern (about a million values over
 * the whole range: tiny, subnormal, huge, both signs) plus the specials.
 * Error in units in the last place of the correctly rounded f32 result. */

static double ulp_of(double r) { /* spacing of floats at |r| (subnormal: 2^-149) */
    int e;
    frexp(fabs(r), &e);
    double u = ldexp(1.0, e - 24);
    return u < 0x1p-149 ? 0x1p-149 : u;
}

/* Error of got against the double reference in ulp; 0 for matching NaN/Inf. */
static double ulp_err(float got, double want) {
    if (isnan(want)) return isnan(got) ? 0 : INFINITY;
    float w = (float)want;
    if (isinf(w)) return got == w ? 0 : INFINITY;
    return fabs((double)got - want) / ulp_of(want);
}

static float *sweep_inputs(int64_t *n) {
    static const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, -NAN, FLT_MAX,
                                     -FLT_MAX, FLT_MIN, -FLT_MIN, 1e-45f, -1e-45f, 88.72f,
                                     88.73f, -87.3f, -103.9f, -104.1f, 9.0f, 9.02f, -9.02f,
                                     10.0f, 0.625f, -0.625f, 0.62499994f, 1e20f, -1e20f};
    int64_t ns = (int64_t)(sizeof specials / sizeof specials[0]), step = 4099;
    *n = ns + (0x100000000LL + step - 1) / step;
    float *x = malloc((size_t)*n * sizeof *x);
    for (int64_t i = 0; x && i < *n; i++) {
        uint32_t u = (uint32_t)((i - ns) * step);
        if (i < ns)
            x[i] = specials[i];
        else
            memcpy(&x[i], &u, sizeof u);
    }
    return x;
}

static double sigmoid_ref_stable(double x) {
    return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
}

static void check_ulp(const char *name, unary_fn f, double (*ref)(double), double max_ulp) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t n;
    float *xv = sweep_inputs(&n);
    vlm_tensor *y = xv ? f(ctx, vec(ctx, n, xv)) : NULL;
    CHECK(y != NULL, "%s: %s", name, vlm_last_error());
    double worst = 0;
    float at = 0;
    for (int64_t i = 0; y && i < n; i++) {
        double e = ulp_err(vlm_f32(y)[i], ref(xv[i]));
        if (!(e <= worst)) worst = e, at = xv[i];
    }
    printf("%-8s max error %.3f ulp (at x = %.9g) over %lld inputs\n", name, worst, at,
           (long long)n);
    CHECK(worst <= max_ulp, "%s: %.3f ulp at x = %.9g (allowed %g)", name, worst, at, max_ulp);
    free(xv);
    vlm_ctx_free(ctx);
}

/* gelu and silu multiply x by a saturating factor: near the saturation the
 * result is a small difference, so the bound is in ulp of the terms' scale
 * (|x| / 2 for gelu, |x| for silu) rather than of the result. NaN in gives
 * NaN out, as do the IEEE products inf * 0 at -inf; +inf gives +inf. */
static void check_scaled(const char *name, unary_fn f, double (*ref)(double), double scale,
                         double max_ulp) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t n;
    float *xv = sweep_inputs(&n);
    vlm_tensor *y = xv ? f(ctx, vec(ctx, n, xv)) : NULL;
    CHECK(y != NULL, "%s: %s", name, vlm_last_error());
    double worst = 0;
    float at = 0;
    int64_t bad_special = 0;
    for (int64_t i = 0; y && i < n; i++) {
        float x = xv[i], got = vlm_f32(y)[i];
        if (isnan(x) || isinf(x)) {
            bad_special += isnan(x) || x < 0 ? !isnan(got) : got != INFINITY;
            continue;
        }
        double r = ref(x), e = fabs((double)got - r) / ulp_of(fmax(fabs(r), scale * fabs(x)));
        if (isinf((float)r)) e = got == (float)r ? 0 : INFINITY;
        if (!(e <= worst)) worst = e, at = x;
    }
    printf("%-8s max error %.3f ulp of max(|f(x)|, %g |x|) (at x = %.9g)\n", name, worst, scale,
           at);
    CHECK(worst <= max_ulp, "%s: %.3f ulp at x = %.9g (allowed %g)", name, worst, at, max_ulp);
    CHECK(bad_special == 0, "%s: %lld NaN/Inf inputs gave the wrong special", name,
          (long long)bad_special);
    free(xv);
    vlm_ctx_free(ctx);
}

static void test_vector_math(void) {
    check_ulp("tanh", vlm_tanh, tanh, 3);
    check_ulp("exp", vlm_exp, exp, 2);
    check_ulp("sigmoid", vlm_sigmoid, sigmoid_ref_stable, 3);
    check_scaled("gelu", vlm_gelu, gelu_ref, 0.5, 4);
    check_scaled("silu", vlm_silu, silu_ref, 1.0, 4);
    /* the specials one by one, as libm and torch give them */
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    CHECK(apply1(ctx, vlm_tanh, INFINITY) == 1.0f && apply1(ctx, vlm_tanh, -INFINITY) == -1.0f,
          "tanh(+-inf) = +-1");
    CHECK(isnan(apply1(ctx, vlm_tanh, NAN)) && isnan(apply1(ctx, vlm_exp, NAN)) &&
              isnan(apply1(ctx, vlm_sigmoid, NAN)) && isnan(apply1(ctx, vlm_gelu, NAN)),
          "NaN propagates");
    CHECK(apply1(ctx, vlm_exp, INFINITY) == INFINITY && apply1(ctx, vlm_exp, -INFINITY) == 0.0f &&
              apply1(ctx, vlm_exp, 89.0f) == INFINITY,
          "exp(inf) = inf, exp(-inf) = 0, exp(89) overflows");
    CHECK(apply1(ctx, vlm_exp, -100.0f) == (float)exp(-100.0) && apply1(ctx, vlm_exp, -103.0f) > 0,
          "exp keeps subnormal results: %g", apply1(ctx, vlm_exp, -100.0f));
    CHECK(apply1(ctx, vlm_sigmoid, INFINITY) == 1.0f && apply1(ctx, vlm_sigmoid, -INFINITY) == 0.0f,
          "sigmoid(+-inf) = 1, 0");
    CHECK(apply1(ctx, vlm_gelu, INFINITY) == INFINITY, "gelu(inf) = inf");
    vlm_ctx_free(ctx);
}

/* The gelu backward (also vectorised) against the derivative in double, on
 * the scale of its terms: |dy/dx| <= ~1.13, so an absolute bound. */
static void test_gelu_grad_wide(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t n = 1 << 20;
    float *xv = malloc((size_t)n * sizeof *xv);
    for (int64_t i = 0; xv && i < n; i++) xv[i] = -30.0f + 60.0f * (float)i / (float)n;
    vlm_tensor *x = xv ? vec(ctx, n, xv) : NULL;
    if (x) x->requires_grad = true;
    vlm_tensor *y = vlm_gelu(ctx, x);
    CHECK(y && vlm_backward_from(ctx, 0, y, NULL) == 0, "gelu: %s", vlm_last_error());
    double worst = 0;
    for (int64_t i = 0; y && x->grad && i < n; i++) {
        double e = fabs(x->grad[i] - gelu_grad_ref(xv[i]));
        if (!(e <= worst)) worst = e;
    }
    printf("gelu'    max abs error %.3g on [-30, 30]\n", worst);
    CHECK(worst < 1e-6, "gelu' max abs error %.3g", worst);
    free(xv);
    vlm_ctx_free(ctx);
}

/* ---- dropout ------------------------------------------------------------------------- */

static vlm_tensor *ones(vlm_ctx *ctx, int64_t n) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, 1, &n);
    for (int64_t i = 0; t && i < n; i++) vlm_f32(t)[i] = 1.0f;
    return t;
}

static void test_dropout_stats(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    const int64_t n = 100000;
    const float p = 0.3f;
    vlm_tensor *x = ones(ctx, n);
    vlm_ctx_seed(ctx, 7);
    vlm_tensor *y = vlm_dropout(ctx, x, p, true);
    CHECK(y && y != x, "dropout: %s", vlm_last_error());
    int64_t zeros = 0, bad_scale = 0;
    for (int64_t i = 0; y && i < n; i++) {
        float v = vlm_f32(y)[i];
        if (v == 0.0f) zeros++;
        else if (fabs(v - 1.0 / 0.7) > 1e-6) bad_scale++;
    }
    /* zeros ~ Binomial(n, 0.3): sd = sqrt(n p (1-p)) / n = 0.00145, so 0.01 is ~7 sd */
    CHECK(fabs((double)zeros / n - 0.3) < 0.01, "fraction of zeros %.4f, want 0.3",
          (double)zeros / n);
    CHECK(bad_scale == 0, "%lld kept values are not 1 / (1 - p)", (long long)bad_scale);
    vlm_ctx_free(ctx);
}

/* Returns a malloc'd copy of dropout(ones(n)) drawn from RNG state `state`. */
static float *dropout_copy(uint64_t state, int64_t n, uint64_t *state_after) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    vlm_ctx_set_rng_state(ctx, state);
    vlm_tensor *y = vlm_dropout(ctx, ones(ctx, n), 0.5f, true);
    float *copy = y ? malloc((size_t)n * sizeof *copy) : NULL;
    if (copy) memcpy(copy, vlm_f32(y), (size_t)n * sizeof *copy);
    if (state_after) *state_after = vlm_ctx_rng_state(ctx);
    vlm_ctx_free(ctx);
    return copy;
}

static void test_dropout_determinism(void) {
    const int64_t n = 50000; /* the apply loop runs in parallel */
    size_t bytes = (size_t)n * sizeof(float);
    uint64_t after;
    vlm_set_num_threads(1);
    float *m1 = dropout_copy(99, n, &after);
    vlm_set_num_threads(2);
    float *m2 = dropout_copy(99, n, NULL);
    vlm_set_num_threads(0);
    float *m3 = dropout_copy(100, n, NULL), *m4 = dropout_copy(after, n, NULL);
    CHECK(m1 && m2 && m3 && m4, "dropout failed: %s", vlm_last_error());
    if (m1 && m2 && m3 && m4) {
        CHECK(memcmp(m1, m2, bytes) == 0, "same RNG state, 1 or 2 threads: same mask");
        CHECK(memcmp(m1, m3, bytes) != 0, "different seeds: different masks");
        CHECK(after != 99 && memcmp(m1, m4, bytes) != 0, "the RNG stream advances");
    }
    free(m1), free(m2), free(m3), free(m4);
}

static void test_dropout_identity_and_grad(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    vlm_tensor *x = ones(ctx, 1000);
    x->requires_grad = true;
    size_t len = vlm_tape_len(ctx);
    uint64_t st = vlm_ctx_rng_state(ctx);
    CHECK(vlm_dropout(ctx, x, 0.5f, false) == x, "eval mode returns the input itself");
    CHECK(vlm_dropout(ctx, x, 0.0f, true) == x, "p = 0 returns the input itself");
    CHECK(vlm_tape_len(ctx) == len && vlm_ctx_rng_state(ctx) == st,
          "identity records no node and draws nothing");

    /* dx = dy m / (1 - p): with x = 1 and dy = 1 the grad equals the output */
    vlm_tensor *y = vlm_dropout(ctx, x, 0.25f, true);
    CHECK(y && vlm_tape_len(ctx) == len + 1, "training dropout records a node");
    CHECK(y && vlm_backward_from(ctx, 0, y, NULL) == 0, "backward: %s", vlm_last_error());
    int64_t bad = 0;
    for (int64_t i = 0; y && x->grad && i < 1000; i++) bad += x->grad[i] != vlm_f32(y)[i];
    CHECK(x->grad && bad == 0, "%lld grads differ from mask / (1 - p)", (long long)bad);
    vlm_ctx_free(ctx);
}

static void test_dropout_errors(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    vlm_tensor *x = ones(ctx, 10);
    const float bad_p[] = {1.0f, 1.5f, -0.1f, NAN};
    for (int i = 0; i < 4; i++) {
        vlm_clear_error();
        CHECK(vlm_dropout(ctx, x, bad_p[i], true) == NULL, "p = %g must fail", bad_p[i]);
        CHECK(strstr(vlm_last_error(), "dropout") && strstr(vlm_last_error(), "p"),
              "message: '%s'", vlm_last_error());
        CHECK(vlm_dropout(ctx, x, bad_p[i], false) == NULL, "p = %g fails in eval too", bad_p[i]);
    }
    vlm_ctx_free(ctx);
}

/* ---- errors and the tape ---------------------------------------------------------------- */

static vlm_tensor *dropout_train(vlm_ctx *ctx, vlm_tensor *x) {
    return vlm_dropout(ctx, x, 0.1f, true);
}

static void test_errors(void) {
    static const unary_fn fns[] = {vlm_gelu, vlm_silu, vlm_sigmoid, vlm_tanh,
                                   vlm_exp,  vlm_log,  vlm_relu,    dropout_train};
    static const char *names[] = {"gelu", "silu", "sigmoid", "tanh", "exp", "log", "relu",
                                  "dropout"};
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    int64_t s[] = {2, 3};
    vlm_tensor *ids = vlm_zeros(ctx, VLM_I32, 2, s);
    for (int k = 0; k < 8; k++) {
        vlm_clear_error();
        CHECK(fns[k](ctx, ids) == NULL, "%s of an i32 tensor must fail", names[k]);
        CHECK(strstr(vlm_last_error(), names[k]) && strstr(vlm_last_error(), "i32"),
              "%s: message '%s'", names[k], vlm_last_error());
        vlm_set_error("earlier failure");
        CHECK(fns[k](ctx, NULL) == NULL && strcmp(vlm_last_error(), "earlier failure") == 0,
              "%s: NULL in, NULL out, error kept", names[k]);
    }
    vlm_ctx_free(ctx);
}

static void test_tape(void) {
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    const float xv[] = {-1.5f, -0.2f, 0.3f, 2.0f};
    vlm_tensor *x = vec(ctx, 4, xv);
    x->requires_grad = true;

    /* y = tanh(x) + x: two paths, dy/dx = 1 - tanh^2 + 1 */
    vlm_tensor *y = vlm_add(ctx, vlm_tanh(ctx, x), x);
    CHECK(y && vlm_backward_from(ctx, 0, y, NULL) == 0, "backward: %s", vlm_last_error());
    for (int i = 0; x->grad && i < 4; i++) CHECK_NEAR(x->grad[i], tanh_grad_ref(xv[i]) + 1, 1e-6);

    /* exp(c) * x with c a constant: c gets no grad, x gets exp(c) */
    vlm_tensor *c = vec(ctx, 4, xv);
    x->grad = NULL;
    vlm_tensor *z = vlm_mul(ctx, vlm_exp(ctx, c), x);
    CHECK(z && vlm_tape_len(ctx) == 1, "exp of a constant records nothing, mul does");
    CHECK(z && vlm_backward_from(ctx, 0, z, NULL) == 0, "backward: %s", vlm_last_error());
    CHECK(c->grad == NULL, "constant input gets no grad");
    for (int i = 0; x->grad && i < 4; i++) CHECK_NEAR(x->grad[i], exp(xv[i]), 1e-6);

    /* no-grad scope: nothing recorded, outputs need no grad */
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *ng = vlm_dropout(ctx, vlm_gelu(ctx, vlm_sigmoid(ctx, x)), 0.5f, true);
    CHECK(ng && !ng->requires_grad && vlm_tape_len(ctx) == 0, "no-grad scope records nothing");
    vlm_set_grad_enabled(ctx, prev);
    vlm_ctx_free(ctx);
}

int main(void) {
    test_values();
    test_vector_math();
    test_gelu_grad_wide();
    test_grads_large();
    test_grads_extreme();
    test_dropout_stats();
    test_dropout_determinism();
    test_dropout_identity_and_grad();
    test_dropout_errors();
    test_errors();
    test_tape();
    return TEST_DONE();
}
