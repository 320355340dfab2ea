/* test_mixed.c - mixed precision: the vectorised conversions, the oneDNN bf16
 * GEMM (against an f64 reference on the bf16-rounded operands and against the
 * f32 GEMM), its primitive cache, linear/matmul forward and backward in BF16
 * and F16 modes against F32 mode, the arena bytes kept for backward, linear
 * on an input already in bf16/f16, the *_lowp ops (outputs in the storage
 * type) and gelu / silu_mul on such inputs, a small MLP trained in all three modes,
 * and F32 mode staying bit-identical after a context has been switched.
 *
 * `test_mixed bench [reps] [cpu]` measures instead of testing: GFLOP/s of
 * the f32 and bf16 GEMMs for the bench model's shapes, and linear / MLP-block
 * forward+backward times per mode (best and median of reps; wall time, or
 * with `cpu` process CPU time / threads, for a machine shared with others). */
#include "autograd.h"
#include "test.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rng = 0x9E3779B97F4A7C15ULL;
static float frand(void) { /* splitmix64 -> [-1, 1) */
    uint64_t z = (rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (float)((z ^ (z >> 31)) >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

static void fill(float *p, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++)
        p[i] = scale * frand();
}

static vlm_tensor *rand_tensor(vlm_ctx *ctx, int ndim, const int64_t *shape, bool grad) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    if (!t) return NULL;
    fill(vlm_f32(t), t->numel, 1.0f);
    t->requires_grad = grad;
    return t;
}

static float bf16r(float x) { return vlm_bf16_to_f32(vlm_f32_to_bf16(x)); }

/* ||a - b|| / ||b|| */
static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static bool all_finite(const float *a, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(a[i])) return false;
    return true;
}

/* ---- conversions ------------------------------------------------------------ */

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* The vector paths agree with the scalar reference conversions on special
 * values (ties, subnormals, overflow, Inf, NaN) and random values, at lengths
 * that exercise the vector body, the tail and the OpenMP split. */
static void test_conversions(void) {
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x00000001, 0x807FFFFF, 0x00800000, /* zeros, subnormals */
        0x3F808000, 0x3F818000, 0x3F808001, 0x3F817FFF,             /* bf16 ties, near ties */
        0x7F7FFFFF, 0xFF7F8000, 0x7F800000, 0xFF800000,             /* max (rounds to Inf), Inf */
        0x7FC00000, 0xFFFFFFFF, 0x7F800001,                         /* NaNs, incl. signalling */
        0x477FE000, 0x477FF000, 0x33000000, 0x33000001, 0x38800000, /* f16 max, overflow, tiny */
        0x3F801000, 0x3F803000,                                     /* f16 ties */
    };
    const int64_t n = 200003;
    float *x = malloc((size_t)n * sizeof *x);
    uint16_t *h = malloc((size_t)n * sizeof *h);
    float *back = malloc((size_t)n * sizeof *back);
    int ns = (int)(sizeof special / sizeof special[0]);
    for (int64_t i = 0; i < n; i++) {
        if (i < ns)
            x[i] = from_bits(special[i]);
        else if (i % 3 == 0) /* random bits: every exponent, subnormals, NaNs */
            x[i] = from_bits((uint32_t)(frand() * 2147483648.0f) * 2u + (uint32_t)(i & 1));
        else
            x[i] = frand() * 1000.0f;
    }
    vlm_f32_to_bf16_n(h, x, n);
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++)
        bad += h[i] != vlm_f32_to_bf16(x[i]);
    CHECK(bad == 0, "f32 -> bf16: %lld of %lld differ from vlm_f32_to_bf16", (long long)bad,
          (long long)n);
    vlm_bf16_to_f32_n(back, h, n);
    bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float r = vlm_bf16_to_f32(h[i]);
        bad += memcmp(&back[i], &r, 4) != 0;
    }
    CHECK(bad == 0, "bf16 -> f32: %lld differ", (long long)bad);

    vlm_f32_to_f16_n(h, x, n);
    bad = 0;
    for (int64_t i = 0; i < n; i++) {
        uint16_t ref = vlm_f32_to_f16(x[i]);
        bool nan = isnan(x[i]);
        /* NaN payloads may differ (F16C keeps the top payload bits) */
        bad += nan ? !((h[i] & 0x7C00u) == 0x7C00u && (h[i] & 0x3FFu) != 0) : h[i] != ref;
    }
    CHECK(bad == 0, "f32 -> f16: %lld of %lld differ from vlm_f32_to_f16", (long long)bad,
          (long long)n);
    vlm_f16_to_f32_n(back, h, n);
    bad = 0;
    for (int64_t i = 0; i < n; i++) {
        float r = vlm_f16_to_f32(h[i]);
        bad += isnan(r) ? !isnan(back[i]) : memcmp(&back[i], &r, 4) != 0;
    }
    CHECK(bad == 0, "f16 -> f32: %lld differ", (long long)bad);
    free(x);
    free(h);
    free(back);
}

/* ---- the bf16 GEMM ------------------------------------------------------------ */

typedef struct {
    int64_t M, N, K;
    bool ta, tb;
    int64_t pad; /* extra elements per stored row: leading dims larger than the width */
    float beta;
} gemm_case;

/* C = op(A) op(B) + beta C0 through vlm_sgemm_via_bf16 (rounds A, B to bf16
 * and runs oneDNN), checked against
 *  - f64 products of the bf16-rounded operands: what remains is the f32
 *    accumulation, |err_ij| <= 2e-6 sum_k |a_ik b_kj| (about 30 f32 ulps of
 *    the absolute sum; K up to 1536) and 1e-6 norm-wise;
 *  - the f32 GEMM on the unrounded operands: bf16 operand rounding (2^-9
 *    relative per operand) gives about 3e-3 norm-wise; bound 1e-2. */
static void check_gemm(const gemm_case *c) {
    int64_t M = c->M, N = c->N, K = c->K;
    int64_t ar = c->ta ? K : M, ac = c->ta ? M : K, br = c->tb ? N : K, bc = c->tb ? K : N;
    int64_t lda = ac + c->pad, ldb = bc + c->pad, ldc = N + c->pad;
    float *A = malloc((size_t)(ar * lda) * sizeof *A), *B = malloc((size_t)(br * ldb) * sizeof *B);
    float *C = malloc((size_t)(M * ldc) * sizeof *C), *C32 = malloc((size_t)(M * ldc) * sizeof *C);
    double *ref = malloc((size_t)(M * N) * sizeof *ref),
           *mag = malloc((size_t)(M * N) * sizeof *mag);
    fill(A, ar * lda, 1.0f);
    fill(B, br * ldb, 1.0f);
    fill(C, M * ldc, 1.0f);
    memcpy(C32, C, (size_t)(M * ldc) * sizeof *C);
    /* bf16-rounded op(A) as [M, K] and op(B)^T as [N, K], so the reference's
     * inner loop is contiguous */
    double *ra = malloc((size_t)(M * K) * sizeof *ra), *rb = malloc((size_t)(N * K) * sizeof *rb);
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++)
            ra[i * K + k] = bf16r(c->ta ? A[k * lda + i] : A[i * lda + k]);
    for (int64_t j = 0; j < N; j++)
        for (int64_t k = 0; k < K; k++)
            rb[j * K + k] = bf16r(c->tb ? B[j * ldb + k] : B[k * ldb + j]);
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0, m = 0;
            for (int64_t k = 0; k < K; k++) {
                double ab = ra[i * K + k] * rb[j * K + k];
                acc += ab;
                m += fabs(ab);
            }
            ref[i * N + j] = acc + (double)c->beta * C[i * ldc + j];
            mag[i * N + j] = m + fabs((double)c->beta * C[i * ldc + j]);
        }
    int rc = vlm_sgemm_via_bf16(c->ta, c->tb, M, N, K, A, lda, B, ldb, c->beta, C, ldc);
    CHECK(rc == 0, "gemm_bf16 %lldx%lldx%lld: %s", (long long)M, (long long)N, (long long)K,
          vlm_last_error());
    vlm_sgemm(c->ta, c->tb, M, N, K, 1.0f, A, lda, B, ldb, c->beta, C32, ldc);
    double worst = 0, num = 0, den = 0, num32 = 0, den32 = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double e = fabs(C[i * ldc + j] - ref[i * N + j]);
            double bound = mag[i * N + j] > 0 ? e / mag[i * N + j] : e;
            if (!(bound <= worst)) worst = bound;
            num += e * e;
            den += ref[i * N + j] * ref[i * N + j];
            double e32 = (double)C[i * ldc + j] - C32[i * ldc + j];
            num32 += e32 * e32;
            den32 += (double)C32[i * ldc + j] * C32[i * ldc + j];
        }
    double nrm = sqrt(num / fmax(den, 1e-300)), nrm32 = sqrt(num32 / fmax(den32, 1e-300));
    CHECK(worst <= 2e-6 && nrm <= 1e-6,
          "gemm_bf16 %lldx%lldx%lld ta %d tb %d pad %lld beta %g vs f64 on bf16 operands: "
          "worst err/sum|ab| %.3g, norm-wise %.3g",
          (long long)M, (long long)N, (long long)K, c->ta, c->tb, (long long)c->pad,
          (double)c->beta, worst, nrm);
    CHECK(nrm32 <= 1e-2,
          "gemm_bf16 %lldx%lldx%lld ta %d tb %d vs f32 GEMM: norm-wise %.3g (bf16 tolerance 1e-2)",
          (long long)M, (long long)N, (long long)K, c->ta, c->tb, nrm32);
    /* untouched padding: oneDNN wrote only the N columns of each row */
    bool pad_ok = true;
    for (int64_t i = 0; i < M && c->pad; i++)
        for (int64_t j = N; j < ldc; j++)
            pad_ok &= C[i * ldc + j] == C32[i * ldc + j];
    CHECK(pad_ok, "gemm_bf16 wrote past N columns (ldc %lld)", (long long)ldc);
    free(A);
    free(B);
    free(C);
    free(C32);
    free(ref);
    free(mag);
    free(ra);
    free(rb);
}

static void test_gemm_bf16(void) {
    static const gemm_case cases[] = {
        {1, 1, 1, false, false, 0, 0},       {7, 5, 3, false, false, 0, 0},
        {7, 5, 3, true, false, 0, 0},        {7, 5, 3, false, true, 0, 0},
        {7, 5, 3, true, true, 0, 0},         {1, 384, 1536, false, true, 0, 0}, /* M = 1 */
        {1, 67, 45, true, true, 0, 1},       {67, 45, 33, false, true, 3, 0},
        {129, 257, 383, false, false, 5, 1}, {129, 257, 383, true, true, 0, 0.5f},
        {100, 384, 1536, false, true, 0, 0}, {96, 1536, 384, false, false, 0, 1},
        {384, 96, 1000, true, false, 0, 1}, /* a dW product: the long K is the rows */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_gemm(&cases[i]);

    /* size edge cases: nothing to do, or K == 0 (C = beta C) */
    float c[6] = {1, 2, 3, 4, 5, 6};
    uint16_t one = vlm_f32_to_bf16(1.0f);
    CHECK(vlm_gemm_bf16(false, false, 0, 3, 4, &one, 4, &one, 3, 0, c, 3) == 0 && c[0] == 1,
          "M == 0 must be a no-op: %s", vlm_last_error());
    CHECK(vlm_gemm_bf16(false, false, 2, 3, 0, &one, 1, &one, 3, 0.5f, c, 3) == 0 && c[0] == 0.5f &&
              c[5] == 3,
          "K == 0 must scale C by beta: %s", vlm_last_error());
    CHECK(vlm_gemm_bf16(false, false, -1, 3, 0, &one, 1, &one, 3, 0, c, 3) == -1 &&
              strstr(vlm_last_error(), "negative"),
          "negative size must fail: %s", vlm_last_error());
}

/* Batched products: separate B per batch, a shared (broadcast) B, and every
 * product summed into one C (sc == 0), against per-batch single GEMMs. */
static void test_gemm_bf16_batched(void) {
    const int64_t nb = 5, M = 9, N = 11, K = 13;
    uint16_t *A = malloc((size_t)(nb * M * K) * 2), *B = malloc((size_t)(nb * K * N) * 2);
    float *C = calloc((size_t)(nb * M * N), sizeof *C),
          *R = calloc((size_t)(nb * M * N), sizeof *R);
    for (int64_t i = 0; i < nb * M * K; i++)
        A[i] = vlm_f32_to_bf16(frand());
    for (int64_t i = 0; i < nb * K * N; i++)
        B[i] = vlm_f32_to_bf16(frand());
    for (int shared = 0; shared < 2; shared++) {
        int64_t sb = shared ? 0 : K * N;
        CHECK(vlm_gemm_bf16_batched(true, false, M, N, K, A, M, M * K, B, N, sb, 0, C, N, M * N,
                                    nb) == 0,
              "batched: %s", vlm_last_error());
        for (int64_t i = 0; i < nb; i++)
            CHECK(vlm_gemm_bf16(true, false, M, N, K, A + i * M * K, M, B + i * sb, N, 0,
                                R + i * M * N, N) == 0,
                  "single: %s", vlm_last_error());
        CHECK(rel_err(C, R, nb * M * N) < 1e-6, "batched (shared B %d) differs from single GEMMs",
              shared);
    }
    memset(C, 0, (size_t)(M * N) * sizeof *C);
    CHECK(vlm_gemm_bf16_batched(false, true, M, N, K, A, K, M * K, B, K, K * N, 0, C, N, 0, nb) ==
              0,
          "summed batch: %s", vlm_last_error());
    memset(R, 0, (size_t)(M * N) * sizeof *R);
    for (int64_t i = 0; i < nb; i++)
        vlm_gemm_bf16(false, true, M, N, K, A + i * M * K, K, B + i * K * N, K, 1, R, N);
    CHECK(rel_err(C, R, M * N) < 1e-6, "sc == 0 must sum the batch into one C");
    free(A);
    free(B);
    free(C);
    free(R);
}

/* Repeated shapes reuse the cached primitive; a new thread count makes a new
 * one (oneDNN plans its split for the thread count at creation). */
static void test_gemm_cache(void) {
    const int64_t M = 33, N = 17, K = 29;
    uint16_t *A = malloc((size_t)(M * K) * 2), *B = malloc((size_t)(K * N) * 2);
    float *C = malloc((size_t)(M * N) * sizeof *C), *C1 = malloc((size_t)(M * N) * sizeof *C);
    for (int64_t i = 0; i < M * K; i++)
        A[i] = vlm_f32_to_bf16(frand());
    for (int64_t i = 0; i < K * N; i++)
        B[i] = vlm_f32_to_bf16(frand());
    int64_t h0, m0, h1, m1, h2, m2;
    vlm_gemm_bf16_stats(&h0, &m0);
    vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 0, C, N);
    for (int i = 0; i < 5; i++)
        vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 0, C, N);
    vlm_gemm_bf16_stats(&h1, &m1);
    CHECK(m1 - m0 == 1 && h1 - h0 == 5, "cache: 6 calls of one shape gave %lld misses, %lld hits",
          (long long)(m1 - m0), (long long)(h1 - h0));
    vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 1, C, N); /* beta differs: a new primitive */
    vlm_gemm_bf16(true, false, K, N, M, A, K, B, N, 0, C1, N); /* so does a transpose */
    int nthr = vlm_num_threads();
    vlm_set_num_threads(1);
    vlm_gemm_bf16_stats(&h1, &m1);
    vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 0, C1, N);
    vlm_gemm_bf16_stats(&h2, &m2);
    CHECK(m2 - m1 == 1, "cache: a new thread count must create a new primitive");
    vlm_set_num_threads(nthr);
    vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 0, C, N);
    vlm_gemm_bf16_stats(&h1, &m1);
    CHECK(m1 == m2 && h1 == h2 + 1, "cache: back to %d threads must hit", nthr);
    CHECK(rel_err(C1, C, M * N) < 1e-6, "1 and %d threads disagree", nthr);
    vlm_gemm_bf16_cache_clear();
    vlm_gemm_bf16_stats(&h1, &m1);
    CHECK(h1 == 0 && m1 == 0, "cache clear resets the counters");
    vlm_gemm_bf16(false, false, M, N, K, A, K, B, N, 0, C1, N);
    CHECK(memcmp(C, C1, (size_t)(M * N) * sizeof *C) == 0, "recreated primitive differs");
    free(A);
    free(B);
    free(C);
    free(C1);
}

/* More shapes than the cache holds (128): the least recently used primitives
 * are evicted and re-created on demand, results unchanged. */
static void test_gemm_cache_eviction(void) {
    const int n = 140;
    uint16_t *A = malloc(64 * 64 * 2), *B = malloc(64 * 64 * 2);
    float *C = malloc(64 * 64 * sizeof *C), *C0 = malloc(64 * 64 * sizeof *C);
    for (int i = 0; i < 64 * 64; i++)
        A[i] = vlm_f32_to_bf16(frand()), B[i] = vlm_f32_to_bf16(frand());
    vlm_gemm_bf16(false, false, 1, 64, 64, A, 64, B, 64, 0, C0, 64);
    int64_t h0, m0, h1, m1;
    vlm_gemm_bf16_stats(&h0, &m0);
    int bad = 0;
    for (int s = 0; s < n; s++) /* shapes M = 2 .. n+1 */
        bad +=
            vlm_gemm_bf16(false, false, 2 + s % 63, 64, 64 - s / 63, A, 64, B, 64, 0, C, 64) != 0;
    vlm_gemm_bf16_stats(&h1, &m1);
    CHECK(bad == 0 && m1 - m0 == n, "eviction: %d failures, %lld misses for %d new shapes", bad,
          (long long)(m1 - m0), n);
    vlm_gemm_bf16(false, false, 1, 64, 64, A, 64, B, 64, 0, C, 64); /* evicted: re-created */
    vlm_gemm_bf16_stats(&h0, &m0);
    CHECK(m0 == m1 + 1, "the oldest shape must have been evicted");
    CHECK(memcmp(C, C0, 64 * sizeof *C) == 0, "re-created primitive gives different results");
    free(A);
    free(B);
    free(C);
    free(C0);
}

/* Calls from inside an OpenMP parallel region (each thread its own shape and
 * scratch; oneDNN runs serially inside a parallel region and the cache lock
 * serialises the calls) give the same results as serial calls. */
static void test_gemm_threads(void) {
    enum { NJ = 8 };
    float *A = malloc(96 * 80 * sizeof *A), *B = malloc(80 * 72 * sizeof *B);
    float *C = calloc(NJ * 96 * 72, sizeof *C), *R = calloc(NJ * 96 * 72, sizeof *R);
    fill(A, 96 * 80, 1.0f);
    fill(B, 80 * 72, 1.0f);
    for (int j = 0; j < NJ; j++) /* job j: M = 96 - 7 j */
        vlm_sgemm_via_bf16(false, false, 96 - 7 * j, 72, 80, A, 80, B, 72, 0, R + j * 96 * 72, 72);
    int bad = 0;
#pragma omp parallel for reduction(+ : bad)
    for (int j = 0; j < NJ; j++)
        bad += vlm_sgemm_via_bf16(false, false, 96 - 7 * j, 72, 80, A, 80, B, 72, 0,
                                  C + j * 96 * 72, 72) != 0;
    CHECK(bad == 0 && rel_err(C, R, NJ * 96 * 72) < 1e-6,
          "bf16 GEMMs from a parallel region: %d failures, rel err %.3g", bad,
          rel_err(C, R, NJ * 96 * 72));
    free(A);
    free(B);
    free(C);
    free(R);
}

/* ---- linear and matmul in each mode --------------------------------------------- */

typedef enum { F_LINEAR, F_MATMUL } op_kind;
typedef struct {
    const char *what;
    op_kind kind;
    int na, nb; /* dims */
    int64_t sa[4], sb[4];
    bool ta, tb, bias, gram;
} op_case;

typedef struct {
    float *y, *ga, *gb, *gbias;
    int64_t ny, na, nb, nbias;
} op_result;

static void result_free(op_result *r) {
    free(r->y);
    free(r->ga);
    free(r->gb);
    free(r->gbias);
}

static float *copy_or_null(const float *p, int64_t n) {
    if (!p) return NULL;
    float *c = malloc((size_t)n * sizeof *c);
    memcpy(c, p, (size_t)n * sizeof *c);
    return c;
}

/* Runs the op forward and backward (random upstream grad, same seed in every
 * mode) in precision p; returns copies of the output and grads. */
static op_result run_op(const op_case *c, vlm_precision p, uint64_t seed) {
    op_result r = {0};
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, p);
    rng = seed;
    vlm_tensor *a = rand_tensor(ctx, c->na, c->sa, true);
    vlm_tensor *b = c->gram ? a : rand_tensor(ctx, c->nb, c->sb, true);
    vlm_tensor *bias = c->bias ? rand_tensor(ctx, 1, (int64_t[]){c->sb[0]}, true) : NULL;
    vlm_tensor *y =
        c->kind == F_LINEAR ? vlm_linear(ctx, a, b, bias) : vlm_matmul(ctx, a, b, c->ta, c->tb);
    CHECK(y != NULL, "%s (%s): %s", c->what, vlm_precision_name(p), vlm_last_error());
    if (y) {
        float *g = malloc((size_t)y->numel * sizeof *g);
        fill(g, y->numel, 1.0f);
        CHECK(vlm_backward_from(ctx, 0, y, g) == 0, "%s backward (%s): %s", c->what,
              vlm_precision_name(p), vlm_last_error());
        free(g);
        r.y = copy_or_null(vlm_f32(y), y->numel);
        r.ny = y->numel;
        r.ga = copy_or_null(a->grad, a->numel);
        r.na = a->numel;
        r.gb = c->gram ? NULL : copy_or_null(b->grad, b->numel);
        r.nb = b->numel;
        r.gbias = bias ? copy_or_null(bias->grad, bias->numel) : NULL;
        r.nbias = bias ? bias->numel : 0;
    }
    vlm_ctx_free(ctx);
    return r;
}

/* BF16 and F16 modes against F32 mode: forward and every grad within the
 * format's tolerance (norm-wise 1e-2 for bf16: operand rounding 2^-9, the
 * backward also rounds the upstream grad; 2e-3 for f16 storage: 2^-12), all
 * finite. */
static void check_op_modes(const op_case *c) {
    op_result f = run_op(c, VLM_PREC_F32, 42);
    static const struct {
        vlm_precision p;
        double tol;
    } modes[] = {{VLM_PREC_BF16, 1e-2}, {VLM_PREC_F16, 2e-3}};
    for (int m = 0; m < 2; m++) {
        op_result r = run_op(c, modes[m].p, 42);
        const char *pn = vlm_precision_name(modes[m].p);
        if (!r.y || !f.y) {
            result_free(&r);
            continue;
        }
        double ey = rel_err(r.y, f.y, f.ny);
        double ea = r.ga && f.ga ? rel_err(r.ga, f.ga, f.na) : 1;
        double eb = c->gram ? 0 : r.gb && f.gb ? rel_err(r.gb, f.gb, f.nb) : 1;
        double ebias = c->bias ? (r.gbias ? rel_err(r.gbias, f.gbias, f.nbias) : 1) : 0;
        CHECK(ey <= modes[m].tol && ea <= modes[m].tol && eb <= modes[m].tol && ebias <= 1e-6,
              "%s: %s vs f32: y %.3g, grad a %.3g, grad b %.3g, grad bias %.3g (tol %g)", c->what,
              pn, ey, ea, eb, ebias, modes[m].tol);
        /* the mixed modes must actually round (a silent f32 fallback would pass above) */
        CHECK(ey > 1e-7, "%s: %s forward equals f32 (%.3g): no rounding happened", c->what, pn, ey);
        CHECK(all_finite(r.y, r.ny) && all_finite(r.ga, r.na) &&
                  (c->gram || all_finite(r.gb, r.nb)),
              "%s: %s: non-finite values", c->what, pn);
        result_free(&r);
    }
    result_free(&f);
}

static void test_ops_modes(void) {
    static const op_case cases[] = {
        {"linear [4,33,65] W [47,65] + b", F_LINEAR, 3, 2, {4, 33, 65}, {47, 65}, 0, 0, true, 0},
        {"linear [1,64] W [96,64], no bias (M = 1)", F_LINEAR, 2, 2, {1, 64}, {96, 64}, 0, 0, 0, 0},
        {"linear [256,384] W [1536,384] + b", F_LINEAR, 2, 2, {256, 384}, {1536, 384}, 0, 0, 1, 0},
        {"matmul nn [37,29] x [29,41]", F_MATMUL, 2, 2, {37, 29}, {29, 41}, 0, 0, 0, 0},
        {"matmul tn [29,37]^T x [29,41]", F_MATMUL, 2, 2, {29, 37}, {29, 41}, 1, 0, 0, 0},
        {"matmul nt [37,29] x [41,29]^T", F_MATMUL, 2, 2, {37, 29}, {41, 29}, 0, 1, 0, 0},
        {"matmul tt [29,37]^T x [41,29]^T", F_MATMUL, 2, 2, {29, 37}, {41, 29}, 1, 1, 0, 0},
        {"matmul 3-D batched tn", F_MATMUL, 3, 3, {3, 19, 23}, {3, 19, 21}, 1, 0, 0, 0},
        {"matmul 4-D batched nt", F_MATMUL, 4, 4, {2, 3, 17, 24}, {2, 3, 31, 24}, 0, 1, 0, 0},
        {"matmul 16 small GEMMs nn", F_MATMUL, 3, 3, {16, 8, 24}, {16, 24, 16}, 0, 0, 0, 0},
        {"matmul shared b nn (stacked)", F_MATMUL, 3, 2, {4, 25, 30}, {30, 26}, 0, 0, 0, 0},
        {"matmul shared b tt (dB summed)", F_MATMUL, 4, 2, {2, 3, 30, 25}, {26, 30}, 1, 1, 0, 0},
        {"matmul x x^T (one tensor both sides)", F_MATMUL, 2, 2, {21, 40}, {21, 40}, 0, 1, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_op_modes(&cases[i]);
}

/* BF16 linear is exactly "bf16 operands, f32 accumulation": forward and both
 * GEMM grads match f64 products of the bf16-rounded x, W and upstream grad. */
static void test_linear_bf16_exact(void) {
    const int64_t R = 45, I = 70, O = 33;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, VLM_PREC_BF16);
    vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){R, I}, true);
    vlm_tensor *w = rand_tensor(ctx, 2, (int64_t[]){O, I}, true);
    vlm_tensor *b = rand_tensor(ctx, 1, (int64_t[]){O}, true);
    vlm_tensor *y = vlm_linear(ctx, x, w, b);
    float *g = malloc((size_t)(R * O) * sizeof *g);
    fill(g, R * O, 1.0f);
    CHECK(y && vlm_backward_from(ctx, 0, y, g) == 0, "bf16 linear: %s", vlm_last_error());
    const float *X = vlm_f32(x), *W = vlm_f32(w);
    double ey = 0, ex = 0, ew = 0;
    for (int64_t r = 0; r < R && y; r++)
        for (int64_t o = 0; o < O; o++) {
            double acc = vlm_f32(b)[o];
            for (int64_t k = 0; k < I; k++)
                acc += (double)bf16r(X[r * I + k]) * bf16r(W[o * I + k]);
            ey = fmax(ey, fabs(vlm_f32(y)[r * O + o] - acc));
        }
    for (int64_t r = 0; r < R && y; r++)
        for (int64_t k = 0; k < I; k++) {
            double acc = 0;
            for (int64_t o = 0; o < O; o++)
                acc += (double)bf16r(g[r * O + o]) * bf16r(W[o * I + k]);
            ex = fmax(ex, fabs(x->grad[r * I + k] - acc));
        }
    for (int64_t o = 0; o < O && y; o++)
        for (int64_t k = 0; k < I; k++) {
            double acc = 0;
            for (int64_t r = 0; r < R; r++)
                acc += (double)bf16r(g[r * O + o]) * bf16r(X[r * I + k]);
            ew = fmax(ew, fabs(w->grad[o * I + k] - acc));
        }
    CHECK(ey < 1e-5 && ex < 1e-5 && ew < 1e-5,
          "bf16 linear vs f64 on bf16 operands: y %.3g dx %.3g dW %.3g", ey, ex, ew);
    free(g);
    vlm_ctx_free(ctx);
}

/* ---- memory kept for backward ------------------------------------------------------
 * In F32 mode the node keeps x by reference: its f32 buffer (4 bytes per
 * element) must outlive the forward. In BF16 and F16 mode backward reads a
 * 2-byte copy of x; the weight is read from the f32 parameter (BF16 mode
 * rounds it again in backward), so no copy of it is kept.
 * Sizes are multiples of 32 elements, so the arena's 64-byte rounding adds
 * nothing and the byte counts are exact. */
static size_t linear_forward_bytes(vlm_precision p, bool x_grad, bool w_grad, int64_t R, int64_t I,
                                   int64_t O) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, p);
    vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){R, I}, x_grad);
    vlm_tensor *w = rand_tensor(ctx, 2, (int64_t[]){O, I}, w_grad);
    size_t before = vlm_arena_used(ctx);
    vlm_tensor *y = vlm_linear(ctx, x, w, NULL);
    size_t used = vlm_arena_used(ctx) - before;
    CHECK(y != NULL, "linear (%s): %s", vlm_precision_name(p), vlm_last_error());
    vlm_ctx_free(ctx);
    return used;
}

static void test_saved_bytes(void) {
    const int64_t R = 512, I = 384, O = 128;
    const size_t xf32 = (size_t)(R * I) * 4;
    size_t f32 = linear_forward_bytes(VLM_PREC_F32, true, true, R, I, O);
    size_t bf16 = linear_forward_bytes(VLM_PREC_BF16, true, true, R, I, O);
    size_t f16 = linear_forward_bytes(VLM_PREC_F16, true, true, R, I, O);
    printf("linear [%lld,%lld] x W[%lld,%lld] forward, arena bytes: f32 %zu, bf16 %zu, f16 %zu "
           "(x in f32 = %zu)\n",
           (long long)R, (long long)I, (long long)O, (long long)I, f32, bf16, f16, xf32);
    /* the saved activation: half of x's f32 bytes */
    CHECK(bf16 - f32 == xf32 / 2, "bf16 saved activation: %zu bytes, expected %zu", bf16 - f32,
          xf32 / 2);
    CHECK(f16 - f32 == xf32 / 2, "f16 saved activation: %zu bytes, expected %zu", f16 - f32,
          xf32 / 2);
    /* frozen weight: no activation copy kept, and no weight copy either */
    size_t frozen = linear_forward_bytes(VLM_PREC_BF16, true, false, R, I, O);
    CHECK(frozen == f32, "bf16, frozen weight: kept %zu extra bytes", frozen - f32);
    /* data input (no grad): only the activation copy (for dW) */
    size_t data = linear_forward_bytes(VLM_PREC_BF16, false, true, R, I, O);
    CHECK(data - f32 == xf32 / 2, "bf16, data input: kept %zu bytes, expected %zu", data - f32,
          xf32 / 2);
    /* no grad at all: nothing kept */
    size_t none = linear_forward_bytes(VLM_PREC_BF16, false, false, R, I, O);
    CHECK(none == f32, "bf16 without grad kept %zu extra bytes", none - f32);
}

/* x handed to vlm_linear already in the mode's storage type: same results as
 * the f32 x it was rounded from (rounding twice changes nothing), x kept by
 * reference (no arena bytes for it), grad in f32; refused in another mode. */
static void test_linear_lowp_input(void) {
    const int64_t R = 64, I = 96, O = 32;
    static const struct {
        vlm_precision p;
        vlm_dtype dt;
    } modes[] = {{VLM_PREC_BF16, VLM_BF16}, {VLM_PREC_F16, VLM_F16}};
    for (int m = 0; m < 2; m++) {
        vlm_ctx *ctx = vlm_ctx_new(0);
        vlm_ctx_set_precision(ctx, modes[m].p);
        const char *pn = vlm_precision_name(modes[m].p);
        vlm_tensor *x = rand_tensor(ctx, 2, (int64_t[]){R, I}, true);
        vlm_tensor *w = rand_tensor(ctx, 2, (int64_t[]){O, I}, true);
        vlm_tensor *b = rand_tensor(ctx, 1, (int64_t[]){O}, true);
        vlm_tensor *xl = vlm_tensor_new(ctx, modes[m].dt, 2, (int64_t[]){R, I});
        vlm_convert(xl->data, modes[m].dt, x->data, VLM_F32, x->numel);
        xl->requires_grad = true;
        float *g = malloc((size_t)(R * O) * sizeof *g);
        fill(g, R * O, 1.0f);
        vlm_tensor *y = vlm_linear(ctx, x, w, b);
        CHECK(y && vlm_backward_from(ctx, 0, y, g) == 0, "%s linear: %s", pn, vlm_last_error());
        float *y0 = copy_or_null(vlm_f32(y), R * O), *dw0 = copy_or_null(w->grad, O * I);
        float *dx0 = copy_or_null(x->grad, R * I);
        memset(w->grad, 0, (size_t)(O * I) * sizeof(float));
        size_t before = vlm_arena_used(ctx);
        vlm_tensor *yl = vlm_linear(ctx, xl, w, b);
        size_t kept = vlm_arena_used(ctx) - before;
        CHECK(yl && vlm_backward_from(ctx, 0, yl, g) == 0, "%s linear on %s x: %s", pn,
              vlm_dtype_name(modes[m].dt), vlm_last_error());
        if (yl && xl->grad) {
            CHECK(memcmp(vlm_f32(yl), y0, (size_t)(R * O) * 4) == 0 &&
                      memcmp(w->grad, dw0, (size_t)(O * I) * 4) == 0 &&
                      memcmp(xl->grad, dx0, (size_t)(R * I) * 4) == 0,
                  "%s: linear on a %s x differs from linear on the f32 x", pn,
                  vlm_dtype_name(modes[m].dt));
            /* arena: y (tensor struct + data) only */
            size_t expect = (size_t)(R * O) * 4;
            CHECK(kept <= expect + 256 && kept >= expect,
                  "%s: linear on a %s x used %zu arena bytes, expected %zu (+ the struct)", pn,
                  vlm_dtype_name(modes[m].dt), kept, expect);
        }
        free(y0);
        free(dw0);
        free(dx0);
        free(g);
        /* the other storage type (or f32 mode) is refused by name */
        vlm_ctx_set_precision(ctx, VLM_PREC_F32);
        CHECK(vlm_linear(ctx, xl, w, b) == NULL && strstr(vlm_last_error(), "f32 mode"),
              "%s x in f32 mode must be refused: %s", vlm_dtype_name(modes[m].dt),
              vlm_last_error());
        vlm_ctx_free(ctx);
    }
}

/* ---- the *_lowp ops ------------------------------------------------------------------
 * In BF16 and F16 mode each _lowp op stores exactly what converting the plain
 * op's f32 output gives (vlm_linear_lowp in BF16 mode: the primitive rounds
 * its f32 sum, within one bf16 ulp of that), its backward gives bit for bit
 * the plain op's grads, and gelu / silu_mul on a low-precision input equal the
 * plain op on the widened values. F32 mode: the plain ops themselves. */

typedef enum { LP_LAYERNORM, LP_RMSNORM, LP_GELU, LP_SILU_MUL, LP_LINEAR, LP_COUNT } lp_op;
static const char *const lp_names[LP_COUNT] = {"layernorm", "rmsnorm", "gelu", "silu_mul",
                                               "linear"};

typedef struct {
    vlm_tensor *x, *u, *w, *b, *lw, *lb; /* inputs; w/b: norm gains, lw/lb: linear */
} lp_inputs;

static vlm_tensor *lp_apply(vlm_ctx *ctx, lp_op op, const lp_inputs *in, bool lowp) {
    switch (op) {
    case LP_LAYERNORM:
        return (lowp ? vlm_layernorm_lowp : vlm_layernorm)(ctx, in->x, in->w, in->b, 1e-5f);
    case LP_RMSNORM: return (lowp ? vlm_rmsnorm_lowp : vlm_rmsnorm)(ctx, in->x, in->w, 1e-5f);
    case LP_GELU: return (lowp ? vlm_gelu_lowp : vlm_gelu)(ctx, in->x);
    case LP_SILU_MUL: return (lowp ? vlm_silu_mul_lowp : vlm_silu_mul)(ctx, in->x, in->u);
    default: return (lowp ? vlm_linear_lowp : vlm_linear)(ctx, in->x, in->lw, in->lb);
    }
}

/* y and x's grad (malloc'd copies) of one op, with upstream grad g. */
static void lp_run(vlm_precision p, lp_op op, bool lowp, const float *g, vlm_tensor **y_out,
                   float **y_f32, float **dx, vlm_ctx **keep_ctx) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, p);
    rng = 99;
    const int64_t R = 48, D = 64, O = 40;
    lp_inputs in = {rand_tensor(ctx, 2, (int64_t[]){R, D}, true),
                    rand_tensor(ctx, 2, (int64_t[]){R, D}, true),
                    rand_tensor(ctx, 1, (int64_t[]){D}, true),
                    rand_tensor(ctx, 1, (int64_t[]){D}, true),
                    rand_tensor(ctx, 2, (int64_t[]){O, D}, true),
                    rand_tensor(ctx, 1, (int64_t[]){O}, true)};
    vlm_tensor *y = lp_apply(ctx, op, &in, lowp);
    CHECK(y != NULL, "%s%s: %s", lp_names[op], lowp ? "_lowp" : "", vlm_last_error());
    *y_f32 = y ? malloc((size_t)y->numel * sizeof(float)) : NULL;
    if (y) vlm_convert(*y_f32, VLM_F32, y->data, y->dtype, y->numel);
    CHECK(y && vlm_backward_from(ctx, 0, y, g) == 0, "%s backward: %s", lp_names[op],
          vlm_last_error());
    *dx = copy_or_null(in.x->grad, in.x->numel);
    *y_out = y;
    *keep_ctx = ctx;
}

static void test_lowp_ops(void) {
    static const vlm_precision modes[] = {VLM_PREC_F32, VLM_PREC_BF16, VLM_PREC_F16};
    float *g = malloc(48 * 64 * sizeof *g);
    fill(g, 48 * 64, 1.0f);
    for (int m = 0; m < 3; m++) {
        vlm_dtype want = modes[m] == VLM_PREC_BF16 ? VLM_BF16
                         : modes[m] == VLM_PREC_F16 ? VLM_F16
                                                    : VLM_F32;
        for (int op = 0; op < LP_COUNT; op++) {
            vlm_tensor *y0, *y1;
            float *f0, *f1, *d0, *d1;
            vlm_ctx *c0, *c1;
            lp_run(modes[m], (lp_op)op, false, g, &y0, &f0, &d0, &c0);
            lp_run(modes[m], (lp_op)op, true, g, &y1, &f1, &d1, &c1);
            const char *pn = vlm_precision_name(modes[m]);
            if (y0 && y1 && f0 && f1 && d0 && d1) {
                CHECK(y1->dtype == want, "%s_lowp in %s mode gives %s", lp_names[op], pn,
                      vlm_dtype_name(y1->dtype));
                int64_t bad = 0;
                for (int64_t i = 0; i < y0->numel; i++) {
                    float r = want == VLM_BF16 ? bf16r(f0[i])
                              : want == VLM_F16 ? vlm_f16_to_f32(vlm_f32_to_f16(f0[i]))
                                                : f0[i];
                    /* the bf16-output GEMM rounds its own f32 sum: one bf16 ulp */
                    float tol = op == LP_LINEAR && want == VLM_BF16 ? fabsf(r) / 128 : 0;
                    bad += !(fabsf(f1[i] - r) <= tol);
                }
                CHECK(bad == 0, "%s_lowp (%s): %lld outputs differ from the rounded f32 op",
                      lp_names[op], pn, (long long)bad);
                CHECK(memcmp(d0, d1, 48 * 64 * sizeof *d0) == 0,
                      "%s_lowp (%s): grads differ from the f32 op's", lp_names[op], pn);
            }
            free(f0), free(f1), free(d0), free(d1);
            vlm_ctx_free(c0), vlm_ctx_free(c1);
        }
    }
    free(g);
}

/* vlm_attention_lowp: the plain op's output rounded to the storage type, bit
 * for bit (F32 mode: the plain op, grads included); its grads read the rounded
 * output for the row sums dO . O, so they agree with the plain op's to within
 * that rounding (bf16: 2^-9 relative per element of O). */
static void attn_run(vlm_precision p, bool lowp, float **y, float **dq, float **dk, float **dv) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, p);
    rng = 7;
    const int64_t B = 2, T = 9, H = 2, D = 8, n = B * T * H * D;
    vlm_tensor *q = rand_tensor(ctx, 4, (int64_t[]){B, T, H, D}, true);
    vlm_tensor *k = rand_tensor(ctx, 4, (int64_t[]){B, T, H, D}, true);
    vlm_tensor *v = rand_tensor(ctx, 4, (int64_t[]){B, T, H, D}, true);
    float *g = malloc((size_t)n * sizeof *g);
    fill(g, n, 1.0f);
    vlm_attn_opts causal = {.kind = VLM_MASK_CAUSAL};
    vlm_tensor *o = (lowp ? vlm_attention_lowp : vlm_attention)(ctx, q, k, v, &causal);
    CHECK(o && vlm_backward_from(ctx, 0, o, g) == 0, "attention%s: %s", lowp ? "_lowp" : "",
          vlm_last_error());
    *y = malloc((size_t)n * sizeof **y);
    if (o) vlm_convert(*y, VLM_F32, o->data, o->dtype, n);
    *dq = copy_or_null(q->grad, n), *dk = copy_or_null(k->grad, n), *dv = copy_or_null(v->grad, n);
    free(g);
    vlm_ctx_free(ctx);
}

static void test_attention_lowp(void) {
    static const vlm_precision modes[] = {VLM_PREC_F32, VLM_PREC_BF16, VLM_PREC_F16};
    const int64_t n = 2 * 9 * 2 * 8;
    for (int m = 0; m < 3; m++) {
        float *y[2], *d[2][3];
        for (int lowp = 0; lowp < 2; lowp++)
            attn_run(modes[m], lowp, &y[lowp], &d[lowp][0], &d[lowp][1], &d[lowp][2]);
        const char *pn = vlm_precision_name(modes[m]);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++) {
            float r = modes[m] == VLM_PREC_BF16  ? bf16r(y[0][i])
                      : modes[m] == VLM_PREC_F16 ? vlm_f16_to_f32(vlm_f32_to_f16(y[0][i]))
                                                 : y[0][i];
            bad += y[1][i] != r;
        }
        CHECK(bad == 0, "attention_lowp (%s): %lld outputs differ from the rounded f32 op", pn,
              (long long)bad);
        /* dv = P^T dO does not involve O: equal in every mode */
        CHECK(d[0][2] && d[1][2] && memcmp(d[0][2], d[1][2], (size_t)n * sizeof(float)) == 0,
              "attention_lowp (%s): dv differs", pn);
        for (int i = 0; i < 2; i++) {
            double e = d[0][i] && d[1][i] ? rel_err(d[1][i], d[0][i], n) : 1;
            double tol = modes[m] == VLM_PREC_F32 ? 0 : modes[m] == VLM_PREC_BF16 ? 1e-2 : 2e-3;
            CHECK(e <= tol, "attention_lowp (%s): %s relative error %.2e > %.0e", pn,
                  i ? "dk" : "dq", e, tol);
            if (modes[m] != VLM_PREC_F32)
                CHECK(e > 0, "attention_lowp (%s): %s equal to the f32 op's: is O rounded?", pn,
                      i ? "dk" : "dq");
        }
        for (int l = 0; l < 2; l++) {
            free(y[l]);
            for (int i = 0; i < 3; i++)
                free(d[l][i]);
        }
    }
}

/* gelu / silu_mul on bf16 inputs (as vlm_linear_lowp gives them): the plain
 * op on the widened values, forward and grads bit for bit; refused in F32 mode. */
static void test_lowp_inputs(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_set_precision(ctx, VLM_PREC_BF16);
    const int64_t n = 5000; /* several chunks and a tail */
    vlm_tensor *a = rand_tensor(ctx, 1, &n, true), *b = rand_tensor(ctx, 1, &n, true);
    for (int64_t i = 0; i < n; i++) /* bf16-exact values, up to |x| = 8 */
        vlm_f32(a)[i] = bf16r(8 * vlm_f32(a)[i]), vlm_f32(b)[i] = bf16r(vlm_f32(b)[i]);
    vlm_tensor *al = vlm_tensor_new(ctx, VLM_BF16, 1, &n);
    vlm_tensor *bl = vlm_tensor_new(ctx, VLM_BF16, 1, &n);
    vlm_convert(al->data, VLM_BF16, a->data, VLM_F32, n);
    vlm_convert(bl->data, VLM_BF16, b->data, VLM_F32, n);
    al->requires_grad = bl->requires_grad = true;
    float *g = malloc((size_t)n * sizeof *g);
    fill(g, n, 1.0f);
    vlm_tensor *y[4] = {vlm_gelu(ctx, a), vlm_gelu(ctx, al), vlm_silu_mul(ctx, a, b),
                        vlm_silu_mul(ctx, al, bl)};
    for (int k = 0; k < 4; k++)
        CHECK(y[k] && vlm_backward_from(ctx, 0, y[k], g) == 0, "op %d: %s", k, vlm_last_error());
    if (y[0] && y[1] && y[2] && y[3] && a->grad && al->grad && b->grad && bl->grad) {
        CHECK(!memcmp(y[0]->data, y[1]->data, (size_t)n * 4) &&
                  !memcmp(y[2]->data, y[3]->data, (size_t)n * 4),
              "gelu / silu_mul on bf16 inputs differ from the f32 op on the same values");
        CHECK(!memcmp(a->grad, al->grad, (size_t)n * 4) &&
                  !memcmp(b->grad, bl->grad, (size_t)n * 4),
              "grads through bf16 inputs differ");
    }
    vlm_ctx_set_precision(ctx, VLM_PREC_F32);
    CHECK(vlm_gelu(ctx, al) == NULL && strstr(vlm_last_error(), "storage type"),
          "bf16 input in f32 mode must be refused: %s", vlm_last_error());
    free(g);
    vlm_ctx_free(ctx);
}

/* ---- a small MLP trained in each mode ------------------------------------------------ */

enum { MLP_N = 256, MLP_D = 32, MLP_H = 64, MLP_O = 8, MLP_STEPS = 200 };
#define MLP_LR 0.2f
#define MLP_TARGET_SCALE 3.0f

typedef struct {
    vlm_params *p;
    vlm_tensor *w1, *b1, *w2, *b2;
} mlp;

static int mlp_init(mlp *m) {
    m->p = vlm_params_new();
    m->w1 = vlm_param_add(m->p, "fc1.weight", 2, (int64_t[]){MLP_H, MLP_D});
    m->b1 = vlm_param_add(m->p, "fc1.bias", 1, (int64_t[]){MLP_H});
    m->w2 = vlm_param_add(m->p, "fc2.weight", 2, (int64_t[]){MLP_O, MLP_H});
    m->b2 = vlm_param_add(m->p, "fc2.bias", 1, (int64_t[]){MLP_O});
    if (vlm_params_finalize(m->p)) return -1;
    rng = 7; /* same init in every mode */
    fill(vlm_f32(m->w1), m->w1->numel, 1.0f / sqrtf(MLP_D));
    fill(vlm_f32(m->w2), m->w2->numel, 1.0f / sqrtf(MLP_H));
    return 0;
}

/* The data: inputs X and targets from a fixed random "teacher" (tanh of a
 * linear map, then a second linear map) that the MLP can fit well. */
static void mlp_data(float *X, float *Y) {
    float *t1 = malloc(sizeof(float) * MLP_D * MLP_H), *t2 = malloc(sizeof(float) * MLP_H * MLP_O);
    rng = 99;
    fill(X, MLP_N * MLP_D, 1.0f);
    fill(t1, MLP_D * MLP_H, 1.0f / sqrtf(MLP_D));
    fill(t2, MLP_H * MLP_O, 1.0f / sqrtf(MLP_H));
    for (int n = 0; n < MLP_N; n++) {
        float h[MLP_H];
        for (int j = 0; j < MLP_H; j++) {
            double a = 0;
            for (int k = 0; k < MLP_D; k++)
                a += X[n * MLP_D + k] * t1[k * MLP_H + j];
            h[j] = tanhf((float)a);
        }
        for (int o = 0; o < MLP_O; o++) {
            double a = 0;
            for (int j = 0; j < MLP_H; j++)
                a += h[j] * t2[j * MLP_O + o];
            Y[n * MLP_O + o] = MLP_TARGET_SCALE * (float)a;
        }
    }
    free(t1);
    free(t2);
}

/* One SGD step: loss = mean((fc2(gelu(fc1(x))) - y)^2); returns the loss, NAN on error. */
static float mlp_step(vlm_ctx *ctx, mlp *m, const float *X, const float *Y, float lr) {
    vlm_tensor *x = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){MLP_N, MLP_D}, X);
    vlm_tensor *y = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){MLP_N, MLP_O}, Y);
    vlm_tensor *h = vlm_gelu(ctx, vlm_linear(ctx, x, m->w1, m->b1));
    vlm_tensor *d = vlm_sub(ctx, vlm_linear(ctx, h, m->w2, m->b2), y);
    vlm_tensor *loss = vlm_mean_all(ctx, vlm_mul(ctx, d, d));
    float l = loss ? vlm_f32(loss)[0] : NAN;
    vlm_params_zero_grad(m->p);
    if (!loss || vlm_backward(ctx, loss)) {
        vlm_ctx_reset(ctx);
        return NAN;
    }
    float *v = vlm_params_values(m->p);
    const float *g = vlm_params_grads(m->p);
    for (int64_t i = 0; i < vlm_params_numel(m->p); i++)
        v[i] -= lr * g[i];
    vlm_ctx_reset(ctx);
    return l;
}

/* Trains MLP_STEPS steps in mode p; returns the final loss and (if out) a copy
 * of the final parameters. `detour` first runs one step in BF16 on a scratch
 * model, then switches back to p, to show a switched context leaves no trace. */
static float mlp_train(vlm_precision p, bool detour, float *out_params, float *first_loss) {
    float *X = malloc(sizeof(float) * MLP_N * MLP_D), *Y = malloc(sizeof(float) * MLP_N * MLP_O);
    mlp_data(X, Y);
    vlm_ctx *ctx = vlm_ctx_new(0);
    mlp m;
    float l = NAN;
    if (detour) {
        mlp s;
        if (mlp_init(&s) == 0) {
            vlm_ctx_set_precision(ctx, VLM_PREC_BF16);
            mlp_step(ctx, &s, X, Y, MLP_LR);
            vlm_ctx_set_precision(ctx, VLM_PREC_F16);
            mlp_step(ctx, &s, X, Y, MLP_LR);
        }
        vlm_params_free(s.p);
    }
    vlm_ctx_set_precision(ctx, p);
    if (mlp_init(&m) == 0) {
        for (int s = 0; s < MLP_STEPS; s++) {
            l = mlp_step(ctx, &m, X, Y, MLP_LR);
            if (s == 0 && first_loss) *first_loss = l;
            if (isnan(l)) break;
        }
        if (out_params)
            memcpy(out_params, vlm_params_values(m.p),
                   (size_t)vlm_params_numel(m.p) * sizeof(float));
    }
    CHECK(!isnan(l), "MLP training (%s): %s", vlm_precision_name(p), vlm_last_error());
    vlm_params_free(m.p);
    vlm_ctx_free(ctx);
    free(X);
    free(Y);
    return l;
}

/* Margin: the mixed-precision final loss must be within 2% of the f32 one
 * (relative) and the training must have made real progress (< 1/4 of the
 * first loss). Measured values are printed. */
static void test_mlp_training(void) {
    const int64_t np = (int64_t)MLP_H * MLP_D + MLP_H + MLP_O * MLP_H + MLP_O;
    float *p32 = malloc((size_t)np * sizeof(float)), *pdet = malloc((size_t)np * sizeof(float));
    float l0 = NAN;
    float l32 = mlp_train(VLM_PREC_F32, false, p32, &l0);
    float lbf = mlp_train(VLM_PREC_BF16, false, NULL, NULL);
    float l16 = mlp_train(VLM_PREC_F16, false, NULL, NULL);
    printf("MLP %d steps SGD: first loss %.6f, final f32 %.6f, bf16 %.6f (%+.2f%%), f16 %.6f "
           "(%+.2f%%)\n",
           MLP_STEPS, (double)l0, (double)l32, (double)lbf, 100.0 * (lbf - l32) / l32, (double)l16,
           100.0 * (l16 - l32) / l32);
    CHECK(l32 < 0.25f * l0, "f32 training made no progress: %g -> %g", (double)l0, (double)l32);
    CHECK(fabsf(lbf - l32) <= 0.02f * l32, "bf16 final loss %g vs f32 %g: beyond 2%%", (double)lbf,
          (double)l32);
    CHECK(fabsf(l16 - l32) <= 0.02f * l32, "f16 final loss %g vs f32 %g: beyond 2%%", (double)l16,
          (double)l32);
    /* a context that went through BF16 and F16 and came back to F32 trains
     * bit-identically to one that never left F32 */
    float ldet = mlp_train(VLM_PREC_F32, true, pdet, NULL);
    CHECK(memcmp(&ldet, &l32, sizeof l32) == 0 &&
              memcmp(p32, pdet, (size_t)np * sizeof(float)) == 0,
          "F32 after switching modes is not bit-identical (loss %.9g vs %.9g)", (double)ldet,
          (double)l32);
    free(p32);
    free(pdet);
}

static void test_bad_mode(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    CHECK(vlm_ctx_set_precision(ctx, (vlm_precision)7) == -1 &&
              strstr(vlm_last_error(), "unknown precision"),
          "unknown mode must fail: %s", vlm_last_error());
    CHECK(vlm_ctx_precision(ctx) == VLM_PREC_F32, "default/unchanged mode is f32");
    vlm_ctx_free(ctx);
}

/* ---- bench mode -------------------------------------------------------------------- */

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double cpu_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Best and median wall time of reps runs of fn. On a shared machine wall
 * time includes the time other processes held our cores, so the best run
 * also gets a CPU-time figure: process CPU seconds / threads, i.e. the wall
 * time if every thread had run undisturbed (meaningful with
 * OMP_WAIT_POLICY=passive, where idle threads sleep instead of spinning). */
typedef void (*bench_fn)(void *);
static bool bench_cpu; /* report CPU-time equivalents instead of wall time */
static void time_it(bench_fn fn, void *u, int reps, double *best, double *median) {
    double *t = malloc((size_t)reps * sizeof *t);
    fn(u); /* warm-up: primitive creation, page faults, scratch growth */
    for (int r = 0; r < reps; r++) {
        double t0 = bench_cpu ? cpu_seconds() : omp_get_wtime();
        fn(u);
        t[r] = bench_cpu ? (cpu_seconds() - t0) / vlm_num_threads() : omp_get_wtime() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_d);
    *best = t[0];
    *median = t[reps / 2];
    free(t);
}

typedef struct {
    bool ta, tb;
    int64_t M, N, K;
    float *A, *B, *C;
    uint16_t *A16, *B16;
} gemm_bench;

static void b_sgemm(void *u) {
    gemm_bench *g = u;
    vlm_sgemm(g->ta, g->tb, g->M, g->N, g->K, 1, g->A, g->ta ? g->M : g->K, g->B,
              g->tb ? g->K : g->N, 0, g->C, g->N);
}
static void b_bf16(void *u) {
    gemm_bench *g = u;
    vlm_gemm_bf16(g->ta, g->tb, g->M, g->N, g->K, g->A16, g->ta ? g->M : g->K, g->B16,
                  g->tb ? g->K : g->N, 0, g->C, g->N);
}
static void b_bf16_conv(void *u) {
    gemm_bench *g = u;
    vlm_sgemm_via_bf16(g->ta, g->tb, g->M, g->N, g->K, g->A, g->ta ? g->M : g->K, g->B,
                       g->tb ? g->K : g->N, 0, g->C, g->N);
}

typedef struct {
    vlm_ctx *ctx;
    vlm_tensor *x, *w1, *b1, *w2, *b2;
    int kind; /* 0: linear, 1: fc1 + gelu + fc2, 2: gelu alone (for scale) */
} layer_bench;

static void b_layer(void *u) {
    layer_bench *l = u;
    vlm_tensor *y = l->kind == 2 ? vlm_gelu(l->ctx, l->x) : vlm_linear(l->ctx, l->x, l->w1, l->b1);
    if (l->kind == 1) y = vlm_linear(l->ctx, vlm_gelu(l->ctx, y), l->w2, l->b2);
    if (!y || vlm_backward_from(l->ctx, 0, y, NULL))
        fprintf(stderr, "bench layer: %s\n", vlm_last_error());
    l->x->grad = NULL; /* arena memory: dropped by the reset */
    vlm_ctx_reset(l->ctx);
}

static int bench(int reps) {
    const char *wp = getenv("OMP_WAIT_POLICY");
    printf("threads %d, OpenBLAS core %s, AVX512_BF16 %s; best / median of %d runs, %s\n",
           vlm_num_threads(), vlm_blas_corename(), vlm_bf16_native() ? "yes" : "no", reps,
           bench_cpu ? "CPU time / threads" : "wall time");
    if (bench_cpu && !(wp && strcmp(wp, "passive") == 0))
        printf("warning: cpu timing without OMP_WAIT_POLICY=passive counts spinning threads\n");
    const int64_t M = 4096;
    const int64_t dims[][2] = {{384, 384}, {384, 1536}, {1536, 384}}; /* in, out */
    printf("%-34s %16s %16s %16s  %s\n", "GEMM (M x N x K)", "f32 GFLOP/s", "bf16 GFLOP/s",
           "bf16+conv", "bf16/f32 (best)");
    for (size_t s = 0; s < 3; s++) {
        int64_t in = dims[s][0], out = dims[s][1];
        /* the three products of a linear layer x [M, in], W [out, in] */
        struct {
            const char *what;
            bool ta, tb;
            int64_t m, n, k;
        } prods[] = {{"fwd  Y = X W^T", false, true, M, out, in},
                     {"bwd dX = dY W", false, false, M, in, out},
                     {"bwd dW = dY^T X", true, false, out, in, M}};
        for (int p = 0; p < 3; p++) {
            gemm_bench g = {prods[p].ta, prods[p].tb, prods[p].m, prods[p].n, prods[p].k};
            int64_t na = g.M * g.K, nb = g.K * g.N;
            g.A = malloc((size_t)na * 4);
            g.B = malloc((size_t)nb * 4);
            g.C = malloc((size_t)(g.M * g.N) * 4);
            g.A16 = malloc((size_t)na * 2);
            g.B16 = malloc((size_t)nb * 2);
            fill(g.A, na, 1.0f);
            fill(g.B, nb, 1.0f);
            vlm_f32_to_bf16_n(g.A16, g.A, na);
            vlm_f32_to_bf16_n(g.B16, g.B, nb);
            double flop = 2.0 * g.M * g.N * g.K, b32, m32, b16, m16, bc, mc;
            time_it(b_sgemm, &g, reps, &b32, &m32);
            time_it(b_bf16, &g, reps, &b16, &m16);
            time_it(b_bf16_conv, &g, reps, &bc, &mc);
            char name[64];
            snprintf(name, sizeof name, "%s %lldx%lldx%lld", prods[p].what, (long long)g.M,
                     (long long)g.N, (long long)g.K);
            printf("%-34s %7.0f / %6.0f %7.0f / %6.0f %7.0f / %6.0f  %.2fx\n", name,
                   flop / b32 * 1e-9, flop / m32 * 1e-9, flop / b16 * 1e-9, flop / m16 * 1e-9,
                   flop / bc * 1e-9, flop / mc * 1e-9, b32 / b16);
            free(g.A);
            free(g.B);
            free(g.C);
            free(g.A16);
            free(g.B16);
        }
    }
    /* whole ops through autograd: forward + backward, all conversions included */
    printf("\n%-44s %18s %18s %18s\n", "op fwd+bwd (ms)", "f32", "bf16", "f16");
    const struct {
        const char *what;
        int64_t in, out;
        int kind;
    } layers[] = {{"linear [4096,384] -> 1536 (+bias)", 384, 1536, 0},
                  {"linear [4096,1536] -> 384 (+bias)", 1536, 384, 0},
                  {"MLP block 384 -> 1536 -> gelu -> 384", 384, 1536, 1},
                  {"gelu [4096,1536] alone (f32 in every mode)", 1536, 384, 2}};
    for (int li = 0; li < 4; li++) {
        double best[3], med[3];
        for (int p = 0; p < 3; p++) {
            layer_bench l = {vlm_ctx_new(0)};
            vlm_ctx_set_precision(l.ctx, (vlm_precision)p);
            vlm_params *ps = vlm_params_new();
            l.w1 = vlm_param_add(ps, "w1", 2, (int64_t[]){layers[li].out, layers[li].in});
            l.b1 = vlm_param_add(ps, "b1", 1, (int64_t[]){layers[li].out});
            l.w2 = vlm_param_add(ps, "w2", 2, (int64_t[]){layers[li].in, layers[li].out});
            l.b2 = vlm_param_add(ps, "b2", 1, (int64_t[]){layers[li].in});
            vlm_params_finalize(ps);
            fill(vlm_params_values(ps), vlm_params_numel(ps), 0.05f);
            l.kind = layers[li].kind;
            /* x lives outside the arena so each run's reset keeps it */
            vlm_ctx *xc = vlm_ctx_new(0);
            l.x = rand_tensor(xc, 2, (int64_t[]){M, layers[li].in}, true);
            time_it(b_layer, &l, reps, &best[p], &med[p]);
            vlm_ctx_free(xc);
            vlm_ctx_free(l.ctx);
            vlm_params_free(ps);
        }
        printf("%-44s %8.2f / %7.2f %8.2f / %7.2f %8.2f / %7.2f   bf16 speedup %.2fx (best), "
               "%.2fx (median)\n",
               layers[li].what, best[0] * 1e3, med[0] * 1e3, best[1] * 1e3, med[1] * 1e3,
               best[2] * 1e3, med[2] * 1e3, best[0] / best[1], med[0] / med[1]);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench_cpu = argc > 3 && strcmp(argv[3], "cpu") == 0;
        return bench(argc > 2 ? atoi(argv[2]) : 10);
    }
    printf("AVX512_BF16: %s, threads %d\n", vlm_bf16_native() ? "yes" : "no", vlm_num_threads());
    test_conversions();
    test_gemm_bf16();
    test_gemm_bf16_batched();
    test_gemm_cache();
    test_gemm_cache_eviction();
    test_gemm_threads();
    test_ops_modes();
    test_linear_bf16_exact();
    test_saved_bytes();
    test_linear_lowp_input();
    test_lowp_ops();
    test_lowp_inputs();
    test_attention_lowp();
    test_mlp_training();
    test_bad_mode();
    return TEST_DONE();
}
