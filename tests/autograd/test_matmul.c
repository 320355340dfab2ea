/* test_matmul.c - matmul, linear, linear_residual and embedding: forward and
 * backward against naive loops in double (linear_residual: bitwise against
 * add + linear), frozen weights, bad inputs, the BLAS core. */
#include "autograd.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (float)((z ^ (z >> 31)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static vlm_tensor *rand_tensor(vlm_ctx *ctx, int ndim, const int64_t *shape, bool grad) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++)
        vlm_f32(t)[i] = frand();
    t->requires_grad = grad;
    return t;
}

static float *rand_buf(int64_t n) {
    float *p = malloc((size_t)n * sizeof *p);
    for (int64_t i = 0; i < n; i++)
        p[i] = frand();
    return p;
}

/* Largest |a - b| / max(1, |b|) over n elements. */
static double max_err(const float *a, const double *b, int64_t n) {
    double e = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]) / fmax(1.0, fabs(b[i]));
        if (!(d <= e)) e = d;
    }
    return e;
}

static bool contains(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* ---- matmul ---------------------------------------------------------------- */

typedef struct {
    const char *what;
    int ndim_a, ndim_b;
    int64_t batch[2]; /* leading dims of a (and of b unless it is 2-D) */
    int64_t M, N, K;
    bool ta, tb;
} mm_case;

/* Element (i, k) of op(X) for a stored row-major [rows, cols] matrix. */
static double at(const float *X, bool t, int64_t i, int64_t k, int64_t cols) {
    return t ? X[k * cols + i] : X[i * cols + k];
}

static void check_matmul(const mm_case *c) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t sa[4], sb[4], nb = 1;
    int nbd = c->ndim_a - 2;
    for (int i = 0; i < nbd; i++) {
        sa[i] = sb[i] = c->batch[i];
        nb *= c->batch[i];
    }
    bool shared = c->ndim_b == 2;
    int ob = shared ? 0 : nbd; /* where b's matrix dims start */
    sa[nbd] = c->ta ? c->K : c->M;
    sa[nbd + 1] = c->ta ? c->M : c->K;
    sb[ob] = c->tb ? c->N : c->K;
    sb[ob + 1] = c->tb ? c->K : c->N;
    vlm_tensor *a = rand_tensor(ctx, c->ndim_a, sa, true);
    vlm_tensor *b = rand_tensor(ctx, c->ndim_b, sb, true);
    vlm_tensor *y = vlm_matmul(ctx, a, b, c->ta, c->tb);
    CHECK(y != NULL, "%s: %s", c->what, vlm_last_error());
    if (!y) goto out;
    CHECK(y->ndim == c->ndim_a && y->shape[nbd] == c->M && y->shape[nbd + 1] == c->N,
          "%s: output shape", c->what);
    int64_t M = c->M, N = c->N, K = c->K, acol = c->ta ? M : K, bcol = c->tb ? K : N;
    int64_t bstride = shared ? 0 : K * N;
    float *G = rand_buf(y->numel);
    double *ref = calloc((size_t)y->numel, sizeof *ref);
    double *ra = calloc((size_t)a->numel, sizeof *ra), *rb = calloc((size_t)b->numel, sizeof *rb);
    for (int64_t p = 0; p < nb; p++) {
        const float *A = vlm_f32(a) + p * M * K, *B = vlm_f32(b) + p * bstride;
        const float *g = G + p * M * N;
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                for (int64_t k = 0; k < K; k++) {
                    ref[p * M * N + i * N + j] +=
                        at(A, c->ta, i, k, acol) * at(B, c->tb, k, j, bcol);
                    /* dA(i,k) += g(i,j) B(k,j); dB(k,j) += A(i,k) g(i,j), in stored layout */
                    ra[p * M * K + (c->ta ? k * M + i : i * K + k)] +=
                        g[i * N + j] * at(B, c->tb, k, j, bcol);
                    rb[p * bstride + (c->tb ? j * K + k : k * N + j)] +=
                        at(A, c->ta, i, k, acol) * g[i * N + j];
                }
    }
    double ef = max_err(vlm_f32(y), ref, y->numel);
    CHECK(ef < 1e-5, "%s: forward max err %.3g", c->what, ef);
    CHECK(vlm_backward_from(ctx, 0, y, G) == 0, "%s: backward: %s", c->what, vlm_last_error());
    double ea = a->grad ? max_err(a->grad, ra, a->numel) : 1,
           eb = b->grad ? max_err(b->grad, rb, b->numel) : 1;
    CHECK(ea < 1e-5 && eb < 1e-5, "%s: backward max err dA %.3g dB %.3g", c->what, ea, eb);
    free(G);
    free(ref);
    free(ra);
    free(rb);
out:
    vlm_ctx_free(ctx);
}

static void test_matmul_values(void) {
    static const mm_case cases[] = {
        {"2-D nn", 2, 2, {0}, 7, 5, 3, false, false},
        {"2-D tn", 2, 2, {0}, 7, 5, 3, true, false},
        {"2-D nt", 2, 2, {0}, 7, 5, 3, false, true},
        {"2-D tt", 2, 2, {0}, 7, 5, 3, true, true},
        {"2-D 67x45x33 nt", 2, 2, {0}, 67, 45, 33, false, true},
        {"3-D batched tn", 3, 3, {3}, 5, 4, 6, true, false},
        {"3-D 16 small GEMMs (threads over batch) nn", 3, 3, {16}, 8, 16, 24, false, false},
        {"3-D 16 small GEMMs (threads over batch) tt", 3, 3, {16}, 8, 16, 24, true, true},
        {"4-D batched nt", 4, 4, {2, 3}, 5, 7, 4, false, true},
        {"shared 2-D b, nn (one stacked GEMM)", 3, 2, {4}, 5, 6, 7, false, false},
        {"shared 2-D b, tt (loop, dB summed)", 4, 2, {2, 3}, 5, 6, 7, true, true},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_matmul(&cases[i]);
}

/* ---- linear ---------------------------------------------------------------- */

/* y = x W^T + b with rows * out large enough for the parallel column sums. */
static void test_linear_values(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    const int64_t B = 4, T = 64, in = 37, out = 160, rows = B * T;
    vlm_tensor *x = rand_tensor(ctx, 3, (int64_t[]){B, T, in}, true);
    vlm_tensor *w = rand_tensor(ctx, 2, (int64_t[]){out, in}, true);
    vlm_tensor *b = rand_tensor(ctx, 1, (int64_t[]){out}, true);
    vlm_tensor *y = vlm_linear(ctx, x, w, b);
    CHECK(y && y->ndim == 3 && y->shape[2] == out, "linear: %s", vlm_last_error());
    if (!y) goto out;
    float *G = rand_buf(y->numel);
    double *ry = calloc((size_t)y->numel, sizeof *ry), *rx = calloc((size_t)x->numel, sizeof *rx);
    double *rw = calloc((size_t)w->numel, sizeof *rw), *rb = calloc((size_t)out, sizeof *rb);
    const float *X = vlm_f32(x), *W = vlm_f32(w);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t o = 0; o < out; o++) {
            double g = G[r * out + o], acc = vlm_f32(b)[o];
            for (int64_t k = 0; k < in; k++) {
                acc += (double)X[r * in + k] * W[o * in + k];
                rx[r * in + k] += g * W[o * in + k];
                rw[o * in + k] += g * X[r * in + k];
            }
            ry[r * out + o] = acc;
            rb[o] += g;
        }
    double ey = max_err(vlm_f32(y), ry, y->numel);
    CHECK(ey < 1e-5, "linear forward max err %.3g", ey);
    CHECK(vlm_backward_from(ctx, 0, y, G) == 0, "linear backward: %s", vlm_last_error());
    double ex = max_err(x->grad, rx, x->numel), ew = max_err(w->grad, rw, w->numel),
           eb = max_err(b->grad, rb, out);
    CHECK(ex < 1e-5 && ew < 1e-5 && eb < 1e-5, "linear grads max err dx %.3g dW %.3g db %.3g", ex,
          ew, eb);
    free(G);
    free(ry);
    free(rx);
    free(rw);
    free(rb);
out:
    vlm_ctx_free(ctx);
}

/* A frozen weight gets no grad (and costs no GEMM); x and the bias still do. */
static void test_linear_frozen(void) {
    vlm_params *p = vlm_params_new();
    vlm_tensor *w = vlm_param_add(p, "fc.weight", 2, (int64_t[]){3, 4});
    vlm_tensor *b = vlm_param_add(p, "fc.bias", 1, (int64_t[]){3});
    CHECK(vlm_params_finalize(p) == 0, "finalize: %s", vlm_last_error());
    for (int64_t i = 0; i < w->numel; i++)
        vlm_f32(w)[i] = frand();
    vlm_param_set_frozen(w, true);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){2, 4}, true);
    vlm_tensor *y = vlm_linear(ctx, x, w, b);
    CHECK(y && vlm_backward_from(ctx, 0, y, NULL) == 0, "frozen: %s", vlm_last_error());
    const float *gw = vlm_params_grads(p) + vlm_params_offset(p, w);
    const float *gb = vlm_params_grads(p) + vlm_params_offset(p, b);
    int64_t nz = 0;
    for (int64_t i = 0; i < w->numel; i++)
        nz += gw[i] != 0;
    CHECK(nz == 0, "frozen weight got %lld nonzero grads", (long long)nz);
    for (int64_t o = 0; o < 3; o++)
        CHECK_NEAR(gb[o], 2.0, 1e-6); /* two rows of ones */
    /* dx = ones W: column sums of W */
    for (int64_t k = 0; k < 4; k++) {
        double s = 0;
        for (int64_t o = 0; o < 3; o++)
            s += vlm_f32(w)[o * 4 + k];
        CHECK(x->grad && fabs(x->grad[k] - s) < 1e-6 && fabs(x->grad[4 + k] - s) < 1e-6,
              "dx[%lld] wrong with a frozen weight", (long long)k);
    }
    /* a plain leaf that does not require grad keeps grad == NULL */
    vlm_tensor *w2 = rand_tensor(ctx, 2, (int64_t[]){3, 4}, false);
    vlm_tensor *y2 = vlm_linear(ctx, x, w2, NULL);
    CHECK(y2 && vlm_backward_from(ctx, 0, y2, NULL) == 0, "leaf: %s", vlm_last_error());
    CHECK(w2->grad == NULL, "leaf without requires_grad got a grad buffer");
    vlm_ctx_free(ctx);
    vlm_params_free(p);
}

/* ---- embedding ------------------------------------------------------------- */

/* Many repeated ids over a small table; n * D large enough for the threaded
 * scatter-add. The result must not depend on the thread count. */
static void test_embedding_values(void) {
    const int64_t V = 37, D = 96, B = 8, T = 64, n = B * T;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *table = rand_tensor(ctx, 2, (int64_t[]){V, D}, true);
    vlm_tensor *ids = vlm_tensor_new(ctx, VLM_I32, 2, (int64_t[]){B, T});
    for (int64_t i = 0; i < n; i++)
        vlm_i32(ids)[i] = (int32_t)((i * 7 + i / 5) % V);
    float *G = rand_buf(n * D), *dt1 = malloc((size_t)(V * D) * sizeof(float));
    double *ref = calloc((size_t)(V * D), sizeof *ref);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < D; j++)
            ref[vlm_i32(ids)[i] * D + j] += G[i * D + j];
    for (int threads = 1; threads <= 2; threads++) {
        vlm_set_num_threads(threads);
        table->grad = NULL;
        vlm_tensor *y = vlm_embedding(ctx, table, ids);
        CHECK(y && y->ndim == 3 && y->shape[0] == B && y->shape[1] == T && y->shape[2] == D,
              "embedding shape: %s", vlm_last_error());
        if (!y) break;
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += memcmp(vlm_f32(y) + i * D, vlm_f32(table) + vlm_i32(ids)[i] * D,
                          (size_t)D * sizeof(float)) != 0;
        CHECK(bad == 0, "embedding: %lld rows differ from the table", (long long)bad);
        CHECK(vlm_backward_from(ctx, 0, y, G) == 0, "embedding backward: %s", vlm_last_error());
        double e = max_err(table->grad, ref, V * D);
        CHECK(e < 1e-5, "embedding scatter-add max err %.3g (%d threads)", e, threads);
        if (threads == 1)
            memcpy(dt1, table->grad, (size_t)(V * D) * sizeof(float));
        else
            CHECK(memcmp(dt1, table->grad, (size_t)(V * D) * sizeof(float)) == 0,
                  "embedding grad differs between 1 and 2 threads");
    }
    vlm_set_num_threads(0);
    free(G);
    free(dt1);
    free(ref);
    vlm_ctx_free(ctx);
}

/* ---- bad inputs -------------------------------------------------------------- */

/* vlm_linear_residual(r, x, w, b) is vlm_add(r, vlm_linear(x, w, b)) to the
 * bit, grads included, in f32 and bf16 mode (with the sum weighted, so each
 * element's grad differs). fused: which of the two builds the graph. */
static void residual_run(vlm_precision p, bool fused, float *out, float *grads[4]) {
    rng = 0x1234;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, p);
    vlm_tensor *r = rand_tensor(ctx, 3, (int64_t[]){2, 5, 6}, true);
    vlm_tensor *x = rand_tensor(ctx, 3, (int64_t[]){2, 5, 7}, true);
    vlm_tensor *w = rand_tensor(ctx, 2, (int64_t[]){6, 7}, true);
    vlm_tensor *b = rand_tensor(ctx, 1, (int64_t[]){6}, true);
    vlm_tensor *c = rand_tensor(ctx, 3, (int64_t[]){2, 5, 6}, false);
    vlm_tensor *y = fused ? vlm_linear_residual(ctx, r, x, w, b)
                          : vlm_add(ctx, r, vlm_linear(ctx, x, w, b));
    CHECK(y && vlm_backward(ctx, vlm_sum_all(ctx, vlm_mul(ctx, y, c))) == 0, "%s",
          vlm_last_error());
    memcpy(out, y->data, 60 * sizeof(float));
    vlm_tensor *in[4] = {r, x, w, b};
    for (int i = 0; i < 4; i++)
        memcpy(grads[i], in[i]->grad, (size_t)in[i]->numel * sizeof(float));
    vlm_ctx_free(ctx);
}

static void test_linear_residual(void) {
    for (int p = VLM_PREC_F32; p <= VLM_PREC_BF16; p++) {
        float y[2][60], g[2][4][70];
        for (int f = 0; f < 2; f++)
            residual_run((vlm_precision)p, f, y[f], (float *[]){g[f][0], g[f][1], g[f][2], g[f][3]});
        CHECK(memcmp(y[0], y[1], sizeof y[0]) == 0, "%s: output differs from add + linear",
              vlm_precision_name((vlm_precision)p));
        const int n[4] = {60, 70, 42, 6};
        for (int i = 0; i < 4; i++)
            CHECK(memcmp(g[0][i], g[1][i], (size_t)n[i] * sizeof(float)) == 0,
                  "%s: grad of input %d differs from add + linear",
                  vlm_precision_name((vlm_precision)p), i);
    }
}

static void expect_error(vlm_tensor *r, const char *what, const char *const *subs) {
    CHECK(r == NULL, "%s: expected NULL", what);
    for (; *subs; subs++)
        CHECK(contains(vlm_last_error(), *subs), "%s: message '%s' lacks '%s'", what,
              vlm_last_error(), *subs);
}

static void test_bad_inputs(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *a = rand_tensor(ctx, 2, (int64_t[]){3, 5}, false);
    vlm_tensor *b = rand_tensor(ctx, 2, (int64_t[]){4, 5}, false);
    vlm_tensor *a3 = rand_tensor(ctx, 3, (int64_t[]){2, 3, 5}, false);
    vlm_tensor *b3 = rand_tensor(ctx, 3, (int64_t[]){3, 5, 4}, false);
    vlm_tensor *v = rand_tensor(ctx, 1, (int64_t[]){5}, false);
    expect_error(vlm_matmul(ctx, a, b, false, false), "matmul inner dims",
                 (const char *[]){"matmul", "[3, 5]", "[4, 5]", NULL});
    expect_error(vlm_matmul(ctx, a3, b3, false, false), "matmul batch dims",
                 (const char *[]){"matmul", "[2, 3, 5]", "[3, 5, 4]", NULL});
    expect_error(vlm_matmul(ctx, v, b, false, true), "matmul 1-D",
                 (const char *[]){"matmul", "[5]", NULL});
    expect_error(vlm_matmul(ctx, a, b3, false, false), "matmul 2-D a with batched b",
                 (const char *[]){"matmul", NULL});
    expect_error(vlm_linear(ctx, a, rand_tensor(ctx, 2, (int64_t[]){4, 6}, false), NULL),
                 "linear in mismatch", (const char *[]){"linear", "[3, 5]", "[4, 6]", NULL});
    expect_error(vlm_linear(ctx, a, b, rand_tensor(ctx, 1, (int64_t[]){5}, false)),
                 "linear bias mismatch", (const char *[]){"linear", "bias [5]", NULL});
    expect_error(vlm_linear_residual(ctx, rand_tensor(ctx, 2, (int64_t[]){3, 5}, false), a, b,
                                     NULL),
                 "linear_residual shape", (const char *[]){"linear_residual", "[3, 5]", "4]", NULL});

    vlm_tensor *table = rand_tensor(ctx, 2, (int64_t[]){7, 3}, false);
    vlm_tensor *fids = rand_tensor(ctx, 1, (int64_t[]){4}, false);
    expect_error(vlm_embedding(ctx, table, fids), "embedding f32 ids",
                 (const char *[]){"embedding", "ids", "i32", "f32", NULL});
    vlm_tensor *ids = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){2, 2}, (int32_t[]){1, 6, 7, 0});
    expect_error(vlm_embedding(ctx, table, ids), "embedding id out of range",
                 (const char *[]){"embedding", "id 7", "position 2", "[0, 7)", NULL});
    vlm_i32(ids)[2] = -1;
    expect_error(vlm_embedding(ctx, table, ids), "embedding negative id",
                 (const char *[]){"embedding", "id -1", "position 2", NULL});
    vlm_tensor *ids4 = vlm_zeros(ctx, VLM_I32, 4, (int64_t[]){1, 1, 1, 2});
    expect_error(vlm_embedding(ctx, table, ids4), "embedding 4-D ids",
                 (const char *[]){"embedding", NULL});

    /* a NULL input means an earlier failure: NULL out, message untouched */
    vlm_set_error("earlier failure");
    CHECK(vlm_matmul(ctx, NULL, b, false, true) == NULL && vlm_linear(ctx, NULL, b, NULL) == NULL &&
              vlm_embedding(ctx, table, NULL) == NULL,
          "NULL input must give NULL");
    CHECK(strcmp(vlm_last_error(), "earlier failure") == 0, "NULL input overwrote the error: %s",
          vlm_last_error());
    vlm_ctx_free(ctx);
}

/* No tape in no-grad mode, and none when no input requires grad. */
static void test_no_record(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *a = rand_tensor(ctx, 2, (int64_t[]){3, 5}, true);
    vlm_tensor *b = rand_tensor(ctx, 2, (int64_t[]){5, 2}, false);
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *y = vlm_matmul(ctx, a, b, false, false);
    vlm_set_grad_enabled(ctx, prev);
    CHECK(y && vlm_tape_len(ctx) == 0 && !y->requires_grad, "no_grad recorded a node");
    a->requires_grad = false;
    y = vlm_matmul(ctx, a, b, false, false);
    CHECK(y && vlm_tape_len(ctx) == 0 && !y->requires_grad, "constant inputs recorded a node");
    vlm_ctx_free(ctx);
}

/* The AVX-512 kernels are chosen on AVX-512 CPUs, even when the environment
 * carries an inherited OPENBLAS_CORETYPE (machine images export Haswell);
 * VLM_BLAS_CORETYPE picks another core on purpose. */
static void test_blas_core(const char *chosen) {
    const char *core = vlm_blas_corename();
    CHECK(strcmp(core, "unavailable") != 0, "OpenBLAS could not be loaded");
    bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
    if (chosen && *chosen)
        CHECK(strcasecmp(core, chosen) == 0, "VLM_BLAS_CORETYPE=%s but the core is %s", chosen,
              core);
    else if (avx512)
        CHECK(strcmp(core, "SkylakeX") == 0, "AVX-512 CPU but OpenBLAS core is %s", core);
    printf("OpenBLAS core: %s (VLM_BLAS_CORETYPE %s)\n", core, chosen ? chosen : "unset");
}

int main(void) {
    const char *coretype = getenv("VLM_BLAS_CORETYPE");
    char user_core[64] = "";
    if (coretype) snprintf(user_core, sizeof user_core, "%s", coretype);
    test_matmul_values();
    test_linear_values();
    test_linear_frozen();
    test_linear_residual();
    test_embedding_values();
    test_bad_inputs();
    test_no_record();
    test_blas_core(coretype ? user_core : NULL);
    return TEST_DONE();
}
