/* gemm_bf16.c - mixed precision: the context's precision mode, bf16 GEMM
 * through oneDNN, vectorised f32 <-> bf16 / f16 conversions and the scratch
 * buffers that hold transient low-precision copies.
 *
 * Why oneDNN: Debian's OpenBLAS has no sbgemm, while oneDNN's matmul primitive
 * runs bf16 x bf16 -> f32 on the AVX512_BF16 dot-product instructions (brgemm
 * kernels) at about twice the f32 rate. Operands keep their row-major layout:
 * a transpose or a leading dimension is only a stride in the memory
 * descriptor, so nothing is copied besides the f32 -> bf16 conversion the
 * caller does anyway.
 *
 * Creating a oneDNN primitive costs tens of microseconds to milliseconds (JIT
 * code generation), so primitives are cached by everything that shapes them:
 * sizes, transposes, strides, beta and the thread count (oneDNN's OpenMP
 * runtime plans its work split for omp_get_max_threads() at creation time, so
 * a primitive made for 2 threads must not serve a caller that set 1). Debian's
 * libdnnl is built with the OpenMP runtime and links the same libgomp as we
 * and OpenBLAS do: one thread pool, sized by vlm_set_num_threads().
 *
 * One mutex guards the cache and is held while a primitive runs: a cached
 * primitive can then never be evicted while another thread executes it, and
 * the per-entry memory objects (whose data handles change per call) are never
 * shared between concurrent calls. GEMMs are parallel inside oneDNN, so
 * serialising callers costs nothing in the normal single-caller case. */
#include "ctx.h"
#include "internal.h"

#include <dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- precision mode ------------------------------------------------------- */

const char *vlm_precision_name(vlm_precision p) {
    switch (p) {
    case VLM_PREC_F32:
        return "f32";
    case VLM_PREC_BF16:
        return "bf16";
    case VLM_PREC_F16:
        return "f16";
    default:
        return "?";
    }
}

int vlm_ctx_set_precision(vlm_ctx *ctx, vlm_precision p) {
    if (p != VLM_PREC_F32 && p != VLM_PREC_BF16 && p != VLM_PREC_F16)
        return vlm_set_error("ctx_set_precision: unknown precision %d", (int)p);
    ctx->precision = p;
    return 0;
}

vlm_precision vlm_ctx_precision(const vlm_ctx *ctx) { return ctx->precision; }

vlm_dtype vlm_ctx_lowp_dtype(const vlm_ctx *ctx) {
    return ctx->precision == VLM_PREC_BF16 ? VLM_BF16
           : ctx->precision == VLM_PREC_F16 ? VLM_F16
                                            : VLM_F32;
}

bool vlm_bf16_native(void) { return __builtin_cpu_supports("avx512bf16"); }

/* ---- conversions ------------------------------------------------------------
 * Plain C that gcc vectorises (-O3): the bf16 rounding is integer arithmetic
 * on the f32 bits, exactly vlm_f32_to_bf16 (round to nearest even, NaN kept
 * quiet), so the vector and scalar paths agree bit for bit. vcvtne2ps2bf16
 * would be one instruction but flushes subnormal inputs to zero, which
 * vlm_f32_to_bf16 does not. The loops are memory bound either way. */

#define CONV_BLOCK 8192 /* elements per OpenMP chunk: 32 KiB of f32 */
#define CONV_PAR_MIN (1 << 16)

static void f32_to_bf16_block(uint16_t *restrict dst, const float *restrict src, int64_t n) {
    const uint32_t *u = (const uint32_t *)src;
    for (int64_t i = 0; i < n; i++) {
        uint32_t x = u[i];
        uint32_t r = x + 0x7FFFu + ((x >> 16) & 1u);
        uint32_t q = x | 0x00400000u; /* NaN: set the quiet bit, no carry into Inf */
        dst[i] = (uint16_t)(((x & 0x7FFFFFFFu) > 0x7F800000u ? q : r) >> 16);
    }
}

void vlm_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n) {
    int64_t nblk = (n + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel for if (n >= CONV_PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t lo = b * CONV_BLOCK, len = n - lo < CONV_BLOCK ? n - lo : CONV_BLOCK;
        f32_to_bf16_block(dst + lo, src + lo, len);
    }
}

void vlm_bf16_to_f32_n(float *dst, const uint16_t *src, int64_t n) {
    uint32_t *d = (uint32_t *)dst;
#pragma omp parallel for if (n >= CONV_PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        d[i] = (uint32_t)src[i] << 16;
}

/* f16: F16C's vcvtps2ph (round to nearest even, overflow to Inf, subnormals
 * kept) and vcvtph2ps (exact) where the compiler may use them; otherwise the
 * scalar reference conversions. The two differ only in NaN payloads. */
#if defined(__F16C__) && defined(__AVX512F__)
#include <immintrin.h>
static void f32_to_f16_block(uint16_t *dst, const float *src, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i h = _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT);
        _mm256_storeu_si256((__m256i *)(dst + i), h);
    }
    for (; i < n; i++)
        dst[i] = vlm_f32_to_f16(src[i]);
}
static void f16_to_f32_block(float *dst, const uint16_t *src, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
    for (; i < n; i++)
        dst[i] = vlm_f16_to_f32(src[i]);
}
#else
static void f32_to_f16_block(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = vlm_f32_to_f16(src[i]);
}
static void f16_to_f32_block(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        dst[i] = vlm_f16_to_f32(src[i]);
}
#endif

void vlm_load_as_f32(float *dst, const void *src, vlm_dtype dt, int64_t n) {
    if (dt == VLM_BF16) {
        const uint16_t *s = src;
        uint32_t *d = (uint32_t *)dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (uint32_t)s[i] << 16;
    } else if (dt == VLM_F16) {
        f16_to_f32_block(dst, src, n);
    } else {
        memcpy(dst, src, (size_t)n * sizeof(float));
    }
}

void vlm_store_f32_as(void *dst, vlm_dtype dt, const float *src, int64_t n) {
    if (dt == VLM_BF16)
        f32_to_bf16_block(dst, src, n);
    else if (dt == VLM_F16)
        f32_to_f16_block(dst, src, n);
    else
        memcpy(dst, src, (size_t)n * sizeof(float));
}

void vlm_f32_to_f16_n(uint16_t *dst, const float *src, int64_t n) {
    int64_t nblk = (n + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel for if (n >= CONV_PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t lo = b * CONV_BLOCK, len = n - lo < CONV_BLOCK ? n - lo : CONV_BLOCK;
        f32_to_f16_block(dst + lo, src + lo, len);
    }
}

void vlm_f16_to_f32_n(float *dst, const uint16_t *src, int64_t n) {
    int64_t nblk = (n + CONV_BLOCK - 1) / CONV_BLOCK;
#pragma omp parallel for if (n >= CONV_PAR_MIN)
    for (int64_t b = 0; b < nblk; b++) {
        int64_t lo = b * CONV_BLOCK, len = n - lo < CONV_BLOCK ? n - lo : CONV_BLOCK;
        f16_to_f32_block(dst + lo, src + lo, len);
    }
}

/* ---- scratch ----------------------------------------------------------------
 * Transient copies (a gradient converted to bf16 for one backward GEMM, an
 * f16 activation widened back to f32) must not go to the arena: the arena
 * only grows until the step's reset, so every linear layer's transient would
 * add up to a second copy of the activations. Instead each thread keeps a few
 * growable buffers, reused by every op; a key destructor frees them when a
 * thread ends. */

typedef struct {
    void *p[VLM_MP_SCRATCH_SLOTS];
    size_t cap[VLM_MP_SCRATCH_SLOTS];
} scratch_set;

static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static pthread_key_t scratch_key;
static bool scratch_key_ok;

static void scratch_free(void *v) {
    scratch_set *s = v;
    for (int i = 0; i < VLM_MP_SCRATCH_SLOTS; i++)
        free(s->p[i]);
    free(s);
}

static void scratch_init(void) {
    scratch_key_ok = pthread_key_create(&scratch_key, scratch_free) == 0;
}

void *vlm_mp_scratch(int slot, size_t bytes) {
    pthread_once(&scratch_once, scratch_init);
    if (!scratch_key_ok || slot < 0 || slot >= VLM_MP_SCRATCH_SLOTS) {
        vlm_set_error("mixed precision: no scratch slot %d", slot);
        return NULL;
    }
    scratch_set *s = pthread_getspecific(scratch_key);
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s || pthread_setspecific(scratch_key, s) != 0) {
            free(s);
            vlm_set_error("mixed precision: out of memory for scratch");
            return NULL;
        }
    }
    if (bytes == 0) bytes = 64;
    if (s->cap[slot] < bytes) {
        size_t cap = (bytes + 4095) / 4096 * 4096;
        void *p = aligned_alloc(64, cap);
        if (!p) {
            vlm_set_error("mixed precision: out of memory for %zu bytes of scratch", bytes);
            return NULL;
        }
        free(s->p[slot]);
        s->p[slot] = p;
        s->cap[slot] = cap;
    }
    return s->p[slot];
}

/* ---- oneDNN engine and the primitive cache --------------------------------- */

typedef struct {
    int64_t M, N, K, lda, ldb, ldc, batch, sa, sb, sc;
    uint32_t beta_bits;
    int32_t nthr;
    int32_t ta, tb, bias, c_bf16;
} gemm_key;

typedef struct {
    gemm_key key;
    dnnl_primitive_t prim;
    dnnl_memory_t a, b, c, bias;
    uint64_t last_use; /* 0 = empty slot */
} gemm_entry;

/* A transformer touches a handful of shapes per layer kind (forward, dX, dW
 * for each linear); 128 covers a model and its eval shapes with room to spare.
 * When full, the least recently used entry is replaced. */
#define GEMM_CACHE_CAP 128

static struct {
    pthread_once_t once;
    pthread_mutex_t lock;
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    dnnl_status_t init_status;
    gemm_entry cache[GEMM_CACHE_CAP];
    uint64_t clock;
    int64_t hits, misses;
} dnn = {.once = PTHREAD_ONCE_INIT, .lock = PTHREAD_MUTEX_INITIALIZER};

static void dnn_init(void) {
    dnn.init_status = dnnl_engine_create(&dnn.engine, dnnl_cpu, 0);
    if (dnn.init_status == dnnl_success)
        dnn.init_status = dnnl_stream_create(&dnn.stream, dnn.engine, dnnl_stream_default_flags);
}

static void entry_clear(gemm_entry *e) {
    if (e->prim) dnnl_primitive_destroy(e->prim);
    if (e->a) dnnl_memory_destroy(e->a);
    if (e->b) dnnl_memory_destroy(e->b);
    if (e->c) dnnl_memory_destroy(e->c);
    if (e->bias) dnnl_memory_destroy(e->bias);
    memset(e, 0, sizeof *e);
}

/* Logical dims and strides of one operand: rows x cols of op(X), stored with
 * leading dimension ld (transposed: element (r, c) at c * ld + r), batch
 * stride bs. A batched operand with bs == 0 is broadcast (dim 1). */
static dnnl_status_t operand_md(dnnl_memory_desc_t *md, dnnl_data_type_t dt, int64_t batch,
                                int64_t bs, int64_t rows, int64_t cols, int64_t ld, bool trans) {
    dnnl_dims_t dims, strides;
    int nd = 0;
    if (batch > 1) {
        dims[nd] = bs == 0 ? 1 : batch;
        strides[nd++] = bs == 0 ? rows * cols : bs;
    }
    dims[nd] = rows;
    strides[nd++] = trans ? 1 : ld;
    dims[nd] = cols;
    strides[nd++] = trans ? ld : 1;
    return dnnl_memory_desc_init_by_strides(md, nd, dims, dt, strides);
}

static dnnl_status_t entry_create(gemm_entry *e, const gemm_key *k, float beta) {
    dnnl_memory_desc_t ma, mb, mc, mbias;
    dnnl_status_t st;
    if ((st = operand_md(&ma, dnnl_bf16, k->batch, k->sa, k->M, k->K, k->lda, k->ta)) ||
        (st = operand_md(&mb, dnnl_bf16, k->batch, k->sb, k->K, k->N, k->ldb, k->tb)) ||
        (st = operand_md(&mc, k->c_bf16 ? dnnl_bf16 : dnnl_f32, k->batch, k->sc, k->M, k->N,
                         k->ldc, false)))
        return st;
    /* the bias is one f32 row [N] broadcast over rows (and batches) */
    if (k->bias && (st = operand_md(&mbias, dnnl_f32, k->batch, 0, 1, k->N, k->N, false)))
        return st;
    dnnl_matmul_desc_t md;
    if ((st = dnnl_matmul_desc_init(&md, &ma, &mb, k->bias ? &mbias : NULL, &mc))) return st;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (beta != 0.0f) { /* C = op(A) op(B) + beta C: the "sum" post-op */
        if ((st = dnnl_primitive_attr_create(&attr)) || (st = dnnl_post_ops_create(&po)) ||
            (st = dnnl_post_ops_append_sum(po, beta)) ||
            (st = dnnl_primitive_attr_set_post_ops(attr, po)))
            goto out;
    }
    dnnl_primitive_desc_t pd = NULL;
    if ((st = dnnl_primitive_desc_create(&pd, &md, attr, dnn.engine, NULL))) goto out;
    st = dnnl_primitive_create(&e->prim, pd);
    dnnl_primitive_desc_destroy(pd);
    if (st) goto out;
    if ((st = dnnl_memory_create(&e->a, &ma, dnn.engine, DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->b, &mb, dnn.engine, DNNL_MEMORY_NONE)) ||
        (st = dnnl_memory_create(&e->c, &mc, dnn.engine, DNNL_MEMORY_NONE)) ||
        (k->bias && (st = dnnl_memory_create(&e->bias, &mbias, dnn.engine, DNNL_MEMORY_NONE))))
        goto out;
    e->key = *k;
out:
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st) entry_clear(e);
    return st;
}

/* Called with the lock held: the cached primitive for k, created on a miss. */
static gemm_entry *cache_get(const gemm_key *k, float beta, dnnl_status_t *st) {
    gemm_entry *victim = &dnn.cache[0];
    dnn.clock++;
    for (int i = 0; i < GEMM_CACHE_CAP; i++) {
        gemm_entry *e = &dnn.cache[i];
        if (e->last_use && memcmp(&e->key, k, sizeof *k) == 0) {
            e->last_use = dnn.clock;
            dnn.hits++;
            return e;
        }
        if (e->last_use < victim->last_use) victim = e;
    }
    dnn.misses++;
    entry_clear(victim);
    if ((*st = entry_create(victim, k, beta))) return NULL;
    victim->last_use = dnn.clock;
    return victim;
}

void vlm_gemm_bf16_stats(int64_t *hits, int64_t *misses) {
    pthread_mutex_lock(&dnn.lock);
    if (hits) *hits = dnn.hits;
    if (misses) *misses = dnn.misses;
    pthread_mutex_unlock(&dnn.lock);
}

void vlm_gemm_bf16_cache_clear(void) {
    pthread_mutex_lock(&dnn.lock);
    for (int i = 0; i < GEMM_CACHE_CAP; i++)
        entry_clear(&dnn.cache[i]);
    dnn.hits = dnn.misses = 0;
    pthread_mutex_unlock(&dnn.lock);
}

/* C = beta C when there is nothing to multiply (K == 0). */
static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
            C[i * ldc + j] = beta == 0 ? 0 : beta * C[i * ldc + j];
}

/* C is f32, or bf16 (rounded from the f32 accumulator by the primitive) when
 * c_bf16. */
static int gemm_run(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                    int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb,
                    const float *bias, float beta, void *C, int64_t ldc, int64_t sc,
                    int64_t batch, bool c_bf16) {
    pthread_once(&dnn.once, dnn_init);
    if (dnn.init_status != dnnl_success)
        return vlm_set_error("gemm_bf16: oneDNN CPU engine unavailable (status %d)",
                             (int)dnn.init_status);
    gemm_key k;
    memset(&k, 0, sizeof k); /* the key is compared with memcmp: padding must be zero */
    k.M = M, k.N = N, k.K = K, k.lda = lda, k.ldb = ldb, k.ldc = ldc;
    k.batch = batch, k.sa = batch > 1 ? sa : 0, k.sb = batch > 1 ? sb : 0;
    k.sc = batch > 1 ? sc : 0;
    memcpy(&k.beta_bits, &beta, sizeof beta);
    k.nthr = omp_get_max_threads();
    k.ta = ta, k.tb = tb, k.bias = bias != NULL, k.c_bf16 = c_bf16;
    pthread_mutex_lock(&dnn.lock);
    dnnl_status_t st = dnnl_success;
    gemm_entry *e = cache_get(&k, beta, &st);
    if (e) {
        /* const is cast away for the handle only: oneDNN reads src/weights */
        if ((st = dnnl_memory_set_data_handle(e->a, (void *)(uintptr_t)A)) ||
            (st = dnnl_memory_set_data_handle(e->b, (void *)(uintptr_t)B)) ||
            (st = dnnl_memory_set_data_handle(e->c, C)) ||
            (bias && (st = dnnl_memory_set_data_handle(e->bias, (void *)(uintptr_t)bias))))
            goto out;
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->a},
                                   {DNNL_ARG_WEIGHTS, e->b},
                                   {DNNL_ARG_DST, e->c},
                                   {DNNL_ARG_BIAS, e->bias}};
        if ((st = dnnl_primitive_execute(e->prim, dnn.stream, bias ? 4 : 3, args))) goto out;
        st = dnnl_stream_wait(dnn.stream);
    }
out:
    pthread_mutex_unlock(&dnn.lock);
    if (st != dnnl_success)
        return vlm_set_error("gemm_bf16: oneDNN matmul %lld x %lld x %lld (batch %lld, ta %d, "
                             "tb %d) failed with status %d",
                             (long long)M, (long long)N, (long long)K, (long long)batch, ta, tb,
                             (int)st);
    return 0;
}

int vlm_gemm_bf16_batched(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                          int64_t lda, int64_t sa, const uint16_t *B, int64_t ldb, int64_t sb,
                          float beta, float *C, int64_t ldc, int64_t sc, int64_t batch) {
    if (M < 0 || N < 0 || K < 0 || batch < 0)
        return vlm_set_error("gemm_bf16: negative size %lld x %lld x %lld, batch %lld",
                             (long long)M, (long long)N, (long long)K, (long long)batch);
    if (M == 0 || N == 0 || batch == 0) return 0;
    if (K == 0) {
        for (int64_t i = 0; i < (sc == 0 ? 1 : batch); i++)
            scale_c(M, N, beta, C + i * sc, ldc);
        return 0;
    }
    if (batch > 1 && sc == 0) {
        /* every batch accumulates into one C (the grad of a shared operand):
         * a reduction over batches is not a matmul, so loop, summing from the
         * second product on */
        for (int64_t i = 0; i < batch; i++)
            if (gemm_run(ta, tb, M, N, K, A + i * sa, lda, 0, B + i * sb, ldb, 0, NULL,
                         i == 0 ? beta : 1.0f, C, ldc, 0, 1, false))
                return -1;
        return 0;
    }
    return gemm_run(ta, tb, M, N, K, A, lda, sa, B, ldb, sb, NULL, beta, C, ldc, sc, batch, false);
}

int vlm_gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                  const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    return vlm_gemm_bf16_batched(ta, tb, M, N, K, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

/* The bias is added by the primitive after the f32 accumulation (acc + b:
 * the same single rounding as filling C with b and accumulating with beta
 * 1), which saves the broadcast pass over C and the read of C. A bf16 C is
 * rounded from that f32 sum. */
int vlm_gemm_bf16_bias(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                       int64_t lda, const uint16_t *B, int64_t ldb, const float *bias, void *C,
                       int64_t ldc, bool c_bf16) {
    if (M < 0 || N < 0 || K < 0)
        return vlm_set_error("gemm_bf16: negative size %lld x %lld x %lld", (long long)M,
                             (long long)N, (long long)K);
    if (M == 0 || N == 0) return 0;
    if (K == 0) { /* nothing to multiply: C = bias (or 0) */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                float v = bias ? bias[j] : 0.0f;
                if (c_bf16)
                    ((uint16_t *)C)[i * ldc + j] = vlm_f32_to_bf16(v);
                else
                    ((float *)C)[i * ldc + j] = v;
            }
        return 0;
    }
    return gemm_run(ta, tb, M, N, K, A, lda, 0, B, ldb, 0, bias, 0.0f, C, ldc, 0, 1, c_bf16);
}

/* Packs the rows x cols matrix stored with leading dimension ld into a dense
 * bf16 buffer (one conversion pass; dense when ld == cols). */
static void pack_bf16(uint16_t *dst, const float *src, int64_t rows, int64_t cols, int64_t ld) {
    if (ld == cols) {
        vlm_f32_to_bf16_n(dst, src, rows * cols);
        return;
    }
#pragma omp parallel for if (rows * cols >= CONV_PAR_MIN)
    for (int64_t r = 0; r < rows; r++)
        f32_to_bf16_block(dst + r * cols, src + r * ld, cols);
}

int vlm_sgemm_via_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float *A,
                       int64_t lda, const float *B, int64_t ldb, float beta, float *C,
                       int64_t ldc) {
    if (M == 0 || N == 0) return 0;
    /* stored shapes: A is [M, K] (or [K, M] transposed), B [K, N] (or [N, K]) */
    int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    uint16_t *a16 = vlm_mp_scratch(0, (size_t)(ar * ac) * 2);
    uint16_t *b16 = vlm_mp_scratch(1, (size_t)(br * bc) * 2);
    if (!a16 || !b16) return -1;
    pack_bf16(a16, A, ar, ac, lda);
    pack_bf16(b16, B, br, bc, ldb);
    return vlm_gemm_bf16(ta, tb, M, N, K, a16, ac, b16, bc, beta, C, ldc);
}
