/* tensor.c - errors, dtypes and conversions, the activation arena, the
 * context and tensor construction. */
#include "internal.h"
#include "ctx.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* ---- errors ------------------------------------------------------------ */

static _Thread_local char vlm_err_buf[1024];

const char *vlm_last_error(void) { return vlm_err_buf; }

/* Formats into a temporary first, so that a message may wrap the previous
 * one: vlm_set_error("loading %s: %s", path, vlm_last_error()). */
int vlm_set_error(const char *fmt, ...) {
    char msg[sizeof vlm_err_buf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(vlm_err_buf, msg, sizeof msg);
    return -1;
}

void vlm_clear_error(void) { vlm_err_buf[0] = 0; }

/* ---- dtypes ------------------------------------------------------------ */

static const struct {
    const char *name;
    size_t size;
} vlm_dtypes[VLM_DTYPE_COUNT] = {
    [VLM_F32] = {"f32", 4}, [VLM_BF16] = {"bf16", 2}, [VLM_F16] = {"f16", 2},
    [VLM_I32] = {"i32", 4}, [VLM_U8] = {"u8", 1},
};

size_t vlm_dtype_size(vlm_dtype dt) { return dt < VLM_DTYPE_COUNT ? vlm_dtypes[dt].size : 0; }
const char *vlm_dtype_name(vlm_dtype dt) {
    return dt < VLM_DTYPE_COUNT ? vlm_dtypes[dt].name : "?";
}

static uint32_t f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static float bits_f32(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* bf16 = top 16 bits of f32; round to nearest even by adding 0x7FFF plus the
 * lowest kept bit. NaN is kept quiet (the add could carry it into Inf). */
uint16_t vlm_f32_to_bf16(float x) {
    uint32_t u = f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7FFFu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float vlm_bf16_to_f32(uint16_t x) { return bits_f32((uint32_t)x << 16); }

/* IEEE half: 1 sign, 5 exponent (bias 15), 10 mantissa bits. */
uint16_t vlm_f32_to_f16(float x) {
    uint32_t u = f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return sign | 0x7E00u;     /* NaN */
    if (abs >= 0x477FF000u) return sign | 0x7C00u;    /* >= 65520 rounds to Inf */
    if (abs >= 0x38800000u) { /* normal half (>= 2^-14) */
        uint32_t mant = abs & 0x7FFFFFu;
        uint32_t exp = (abs >> 23) - 127 + 15;
        uint32_t h = (exp << 10) | (mant >> 13);
        uint32_t rest = mant & 0x1FFFu;
        if (rest > 0x1000u || (rest == 0x1000u && (h & 1u))) h++; /* may carry into Inf: correct */
        return sign | (uint16_t)h;
    }
    /* subnormal half: value = m * 2^-24; round abs / 2^-24 to nearest even */
    float f = bits_f32(abs) * 16777216.0f; /* exact: scaling by a power of two */
    float r = nearbyintf(f);               /* default rounding mode: nearest even */
    return sign | (uint16_t)r;
}

float vlm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    if (exp == 0) { /* zero or subnormal: exact in f32 */
        float v = (float)mant * (1.0f / 16777216.0f);
        return sign ? -v : v;
    }
    if (exp == 31) return bits_f32(sign | 0x7F800000u | (mant << 13));
    return bits_f32(sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

static float load_as_f32(const void *src, vlm_dtype dt, int64_t i) {
    switch (dt) {
    case VLM_F32: return ((const float *)src)[i];
    case VLM_BF16: return vlm_bf16_to_f32(((const uint16_t *)src)[i]);
    case VLM_F16: return vlm_f16_to_f32(((const uint16_t *)src)[i]);
    case VLM_I32: return (float)((const int32_t *)src)[i];
    case VLM_U8: return (float)((const uint8_t *)src)[i];
    default: return 0;
    }
}

static int32_t sat_i32(float x) {
    if (isnan(x)) return 0;
    if (x >= 2147483647.0f) return INT32_MAX;
    if (x <= -2147483648.0f) return INT32_MIN;
    return (int32_t)lrintf(x);
}

static uint8_t sat_u8(float x) {
    if (isnan(x) || x <= 0) return 0;
    if (x >= 255) return 255;
    return (uint8_t)lrintf(x);
}

static void store_from_f32(void *dst, vlm_dtype dt, int64_t i, float x) {
    switch (dt) {
    case VLM_F32: ((float *)dst)[i] = x; break;
    case VLM_BF16: ((uint16_t *)dst)[i] = vlm_f32_to_bf16(x); break;
    case VLM_F16: ((uint16_t *)dst)[i] = vlm_f32_to_f16(x); break;
    case VLM_I32: ((int32_t *)dst)[i] = sat_i32(x); break;
    case VLM_U8: ((uint8_t *)dst)[i] = sat_u8(x); break;
    default: break;
    }
}

void vlm_convert(void *dst, vlm_dtype dst_dt, const void *src, vlm_dtype src_dt, int64_t n) {
    if (dst_dt == src_dt) {
        memmove(dst, src, (size_t)n * vlm_dtype_size(dst_dt));
        return;
    }
    if (src_dt == VLM_I32 && dst_dt == VLM_U8) { /* ints do not round-trip through f32 */
        for (int64_t i = 0; i < n; i++) {
            int32_t v = ((const int32_t *)src)[i];
            ((uint8_t *)dst)[i] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        return;
    }
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) store_from_f32(dst, dst_dt, i, load_as_f32(src, src_dt, i));
}

/* ---- arena --------------------------------------------------------------- */

#define VLM_ALIGN 64

/* Buffers of 2 MiB and more are 2 MiB aligned and asked to be backed by
 * transparent huge pages (Linux, THP in "madvise" or "always" mode): the
 * first step of a run touches every activation page once, and with 4 KiB
 * pages those faults cost as much as the step itself on a VM; huge pages also
 * spare TLB misses when the backward walks the activations and the optimizer
 * the parameters. Elsewhere (no MADV_HUGEPAGE, or THP off) the advice is a
 * no-op. Free with free(). */
#define VLM_HUGE ((size_t)2 << 20)

void *vlm_big_alloc(size_t bytes) {
    size_t align = bytes >= VLM_HUGE ? VLM_HUGE : VLM_ALIGN;
    size_t n = (bytes + align - 1) / align * align;
    void *p = aligned_alloc(align, n ? n : align);
#ifdef MADV_HUGEPAGE
    if (p && align == VLM_HUGE) madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

static vlm_arena_block *block_new(size_t cap) {
    vlm_arena_block *b = malloc(sizeof *b);
    if (!b) return NULL;
    b->data = vlm_big_alloc(cap);
    if (!b->data) {
        free(b);
        return NULL;
    }
    b->cap = cap;
    b->used = 0;
    b->next = NULL;
    return b;
}

/* Bump allocation in the current block; when it is full, move to the next
 * kept block or add one (large requests get a block of their own size). Blocks
 * are never moved, so pointers stay valid until the reset. */
void *vlm_arena_alloc(vlm_ctx *ctx, size_t bytes) {
    size_t need = (bytes + VLM_ALIGN - 1) / VLM_ALIGN * VLM_ALIGN;
    if (need == 0) need = VLM_ALIGN;
    vlm_arena_block *b = ctx->cur;
    while (b && b->used + need > b->cap) {
        if (!b->next) break;
        b = b->next;
        b->used = 0;
    }
    if (!b || b->used + need > b->cap) {
        size_t cap = need > ctx->chunk ? need : ctx->chunk;
        vlm_arena_block *nb = block_new(cap);
        if (!nb) {
            vlm_set_error("arena: out of memory allocating %zu bytes", bytes);
            return NULL;
        }
        if (b) {
            nb->next = b->next;
            b->next = nb;
        } else {
            ctx->head = nb;
        }
        b = nb;
    }
    ctx->cur = b;
    void *p = (char *)b->data + b->used;
    b->used += need;
    ctx->used += need;
    if (ctx->used > ctx->peak) ctx->peak = ctx->used;
    return p;
}

size_t vlm_arena_used(const vlm_ctx *ctx) { return ctx->used; }
size_t vlm_arena_peak(const vlm_ctx *ctx) { return ctx->peak; }

/* ---- context ------------------------------------------------------------- */

vlm_ctx *vlm_ctx_new(size_t arena_chunk_bytes) {
    vlm_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        vlm_set_error("ctx: out of memory");
        return NULL;
    }
    ctx->chunk = arena_chunk_bytes ? arena_chunk_bytes : (size_t)64 << 20;
    ctx->grad_enabled = true;
    ctx->rng = 0x853c49e6748fea9bULL;
    return ctx;
}

void vlm_ctx_free(vlm_ctx *ctx) {
    if (!ctx) return;
    for (vlm_arena_block *b = ctx->head, *n; b; b = n) {
        n = b->next;
        free(b->data);
        free(b);
    }
    free(ctx->tape);
    free(ctx);
}

void vlm_ctx_reset(vlm_ctx *ctx) {
    for (vlm_arena_block *b = ctx->head; b; b = b->next) b->used = 0;
    ctx->cur = ctx->head;
    ctx->used = 0;
    ctx->tape_len = 0;
    ctx->grad_free = NULL;
}

bool vlm_set_grad_enabled(vlm_ctx *ctx, bool enabled) {
    bool prev = ctx->grad_enabled;
    ctx->grad_enabled = enabled;
    return prev;
}

bool vlm_grad_enabled(const vlm_ctx *ctx) { return ctx->grad_enabled; }

/* ---- RNG: splitmix64 (a full-period 64-bit stream; state = one integer) -- */

uint64_t vlm_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

float vlm_rng_uniform(uint64_t *state) {
    return (float)(vlm_rng_next(state) >> 40) * (1.0f / 16777216.0f);
}

void vlm_ctx_seed(vlm_ctx *ctx, uint64_t seed) { ctx->rng = seed; }
uint64_t vlm_ctx_rng_state(const vlm_ctx *ctx) { return ctx->rng; }
void vlm_ctx_set_rng_state(vlm_ctx *ctx, uint64_t state) { ctx->rng = state; }
uint64_t *vlm_ctx_rng(vlm_ctx *ctx) { return &ctx->rng; }

/* ---- tensors ------------------------------------------------------------- */

static bool shape_ok(int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 1 || ndim > VLM_MAX_DIMS) {
        vlm_set_error("tensor: %d dims (1 to %d supported)", ndim, VLM_MAX_DIMS);
        return false;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > INT64_MAX / 16 / shape[i])) {
            vlm_set_error("tensor: bad or overflowing dim %d = %lld", i, (long long)shape[i]);
            return false;
        }
        n *= shape[i];
    }
    *numel = n;
    return true;
}

vlm_tensor *vlm_tensor_new(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape) {
    int64_t numel;
    if (dt >= VLM_DTYPE_COUNT) {
        vlm_set_error("tensor: unknown dtype %d", (int)dt);
        return NULL;
    }
    if (!shape_ok(ndim, shape, &numel)) return NULL;
    vlm_tensor *t = vlm_arena_alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->data = vlm_arena_alloc(ctx, (size_t)numel * vlm_dtype_size(dt));
    if (!t->data) return NULL;
    t->dtype = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->numel = numel;
    return t;
}

vlm_tensor *vlm_zeros(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape) {
    vlm_tensor *t = vlm_tensor_new(ctx, dt, ndim, shape);
    if (t) memset(t->data, 0, (size_t)t->numel * vlm_dtype_size(dt));
    return t;
}

vlm_tensor *vlm_tensor_from(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape,
                            const void *data) {
    vlm_tensor *t = vlm_tensor_new(ctx, dt, ndim, shape);
    if (t) memcpy(t->data, data, (size_t)t->numel * vlm_dtype_size(dt));
    return t;
}

vlm_tensor *vlm_new_like(vlm_ctx *ctx, const vlm_tensor *t) {
    return vlm_tensor_new(ctx, t->dtype, t->ndim, t->shape);
}

vlm_tensor *vlm_detach(vlm_ctx *ctx, vlm_tensor *t) {
    if (!t) return NULL;
    vlm_tensor *d = vlm_arena_alloc(ctx, sizeof *d);
    if (!d) return NULL;
    *d = *t;
    d->grad = NULL;
    d->requires_grad = false;
    d->is_param = false;
    return d;
}

char *vlm_shape_str(const vlm_tensor *t, char *buf, size_t cap) {
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
    return buf;
}

bool vlm_same_shape(const vlm_tensor *a, const vlm_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

bool vlm_check_dtype(const char *op, const vlm_tensor *t, vlm_dtype dt, const char *what) {
    if (t->dtype == dt) return true;
    char s[64];
    vlm_set_error("%s: %s must be %s, got %s %s", op, what, vlm_dtype_name(dt),
                  vlm_dtype_name(t->dtype), vlm_shape_str(t, s, sizeof s));
    return false;
}

bool vlm_check_f32(const char *op, const vlm_tensor *t, const char *what) {
    return vlm_check_dtype(op, t, VLM_F32, what);
}
