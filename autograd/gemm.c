/* gemm.c - GEMM dispatch and threads.
 *
 * Debian's OpenBLAS 0.3.21 (DYNAMIC_ARCH) picks its kernels once, in its load
 * constructor, and detects newer AMD CPUs as Haswell: AVX2 kernels at about
 * half the AVX-512 speed. It honours OPENBLAS_CORETYPE, but only if the
 * variable is set before the library is loaded. So we do not link OpenBLAS:
 * on first use we choose the core, then dlopen the OpenMP build, which shares
 * our OpenMP thread pool. No re-exec, so gdb and valgrind see one process.
 *
 * The core: VLM_BLAS_CORETYPE if set (e.g. "Haswell" to compare kernels);
 * otherwise SkylakeX on CPUs with AVX-512, replacing an inherited
 * OPENBLAS_CORETYPE: machine images export OPENBLAS_CORETYPE=Haswell
 * globally, which would silently halve every GEMM. Other CPUs keep
 * OpenBLAS's own choice. */
#include "internal.h"

#include <dlfcn.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef VLM_OPENBLAS_PATH
#define VLM_OPENBLAS_PATH "libopenblas.so.0"
#endif

enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 };
typedef void (*sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
                         const float *a, int lda, const float *b, int ldb, float beta, float *c,
                         int ldc);

static struct {
    pthread_once_t once;
    void *lib;
    sgemm_fn sgemm;
    char *(*corename)(void);
    void (*set_threads)(int);
} blas = {.once = PTHREAD_ONCE_INIT};

static bool cpu_has_avx512(void) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
}

static void blas_load(void) {
    const char *want = getenv("VLM_BLAS_CORETYPE");
    if (want && *want)
        setenv("OPENBLAS_CORETYPE", want, 1);
    else if (cpu_has_avx512())
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1);
    blas.lib = dlopen(VLM_OPENBLAS_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib) blas.lib = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
    if (!blas.lib) return;
    blas.sgemm = (sgemm_fn)dlsym(blas.lib, "cblas_sgemm");
    blas.corename = (char *(*)(void))dlsym(blas.lib, "openblas_get_corename");
    blas.set_threads = (void (*)(int))dlsym(blas.lib, "openblas_set_num_threads");
}

static bool blas_ready(void) {
    pthread_once(&blas.once, blas_load);
    return blas.sgemm != NULL;
}

const char *vlm_blas_corename(void) {
    if (!blas_ready()) return "unavailable";
    return blas.corename ? blas.corename() : "unknown";
}

/* Reference kernel used only if OpenBLAS cannot be loaded (never silently:
 * vlm_blas_corename() reports "unavailable"). */
static void sgemm_naive(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc) {
#pragma omp parallel for if (M * N * K >= VLM_PAR_MIN)
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++)
                acc += (double)(ta ? A[k * lda + i] : A[i * lda + k]) *
                       (tb ? B[j * ldb + k] : B[k * ldb + j]);
            C[i * ldc + j] = (float)(alpha * acc + (beta == 0 ? 0 : beta * C[i * ldc + j]));
        }
    }
}

void vlm_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc) {
    if (M == 0 || N == 0) return;
    /* callers check their sizes against INT_MAX (CBLAS takes int); this is the backstop */
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX || lda > INT32_MAX || ldb > INT32_MAX ||
        ldc > INT32_MAX) {
        sgemm_naive(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    if (K == 0) { /* BLAS leaves C untouched here only when beta == 1 */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
        return;
    }
    if (!blas_ready()) {
        sgemm_naive(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    blas.sgemm(ROW_MAJOR, trans_a ? TRANS : NO_TRANS, trans_b ? TRANS : NO_TRANS, (int)M, (int)N,
               (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void vlm_set_num_threads(int n) {
    if (n <= 0) n = omp_get_num_procs();
    omp_set_num_threads(n);
    if (blas_ready() && blas.set_threads) blas.set_threads(n);
}

int vlm_num_threads(void) { return omp_get_max_threads(); }
