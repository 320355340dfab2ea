/* internal.h - private to autograd/: the tape node, the op enum and the
 * helpers every op file uses. Not installed, not included outside autograd/. */
#ifndef VLM_AUTOGRAD_INTERNAL_H
#define VLM_AUTOGRAD_INTERNAL_H

#include "autograd.h"

typedef enum {
#define VLM_OP(e, name, bw) VLM_OP_##e,
#include "ops.def"
#undef VLM_OP
    VLM_OP_COUNT
} vlm_op;

/* One recorded op. Forward functions fill in the op's arguments and whatever
 * they saved for backward (arena memory, valid until the context is reset). */
typedef struct vlm_node {
    vlm_op op;
    vlm_tensor *out;
    int n_in;
    vlm_tensor *in[VLM_MAX_INPUTS];
    int64_t iarg[8];
    float farg[4];
    void *saved[4];
} vlm_node;

/* Backward: accumulates into the grads of the inputs that require grad
 * (vlm_input_grad), returns 0 or -1 with error. */
typedef int (*vlm_backward_fn)(vlm_ctx *ctx, vlm_node *node);

#define VLM_OP(e, name, bw) int bw(vlm_ctx *ctx, vlm_node *node);
#include "ops.def"
#undef VLM_OP

/* True if grad mode is on and any of the n inputs requires grad. */
bool vlm_needs_grad(const vlm_ctx *ctx, vlm_tensor *const *in, int n);
/* Marks out as requiring grad and appends a node for it when vlm_needs_grad();
 * returns the node (to fill in args/saved) or NULL if nothing was recorded.
 * A failed append (out of memory) is reported by returning NULL with
 * *failed set, so callers use VLM_RECORD below. */
vlm_node *vlm_record(vlm_ctx *ctx, vlm_op op, vlm_tensor *out, vlm_tensor *const *in, int n,
                     bool *failed);
/* Grad buffer of an input if it requires grad, else NULL (skip that input). */
float *vlm_input_grad(vlm_ctx *ctx, vlm_tensor *t);
/* The same for a backward that writes every element of the grad: when the
 * buffer is allocated by this call, *fresh is set and the buffer is NOT
 * zeroed, so the caller must store rather than accumulate (GEMM beta = !fresh).
 * An input that appears twice in a node: fetch its grad again after the first
 * write (it is then not fresh). On NULL with t->requires_grad: out of memory. */
float *vlm_input_grad_raw(vlm_ctx *ctx, vlm_tensor *t, bool *fresh);
/* In a loop updating such a grad, g[i] = VLM_OLD(keep, g[i]) + term with
 * keep = vlm_grad_keep(fresh): the old value is 0 in a fresh buffer, so the
 * sum rounds exactly as accumulating into a zeroed buffer did. keep is a
 * float because gcc does not vectorise a loop that selects on a bool. */
static inline float vlm_grad_keep(bool fresh) { return fresh ? 0.0f : 1.0f; }
#define VLM_OLD(keep, v) ((keep) != 0.0f ? (v) : 0.0f)
/* For a backward whose whole contribution to t is out's grad itself (reshape,
 * the first operand of add and sub): when t has no grad yet, t takes out's
 * buffer (out's grad would be released right after this node anyway) and
 * nothing is copied. Returns false (do the normal update) otherwise, or when
 * grads are retained. */
bool vlm_grad_steal(vlm_ctx *ctx, vlm_tensor *t, vlm_tensor *out);
/* 64-byte (2 MiB from 2 MiB on, with huge pages advised) aligned memory for
 * big long-lived buffers (arena blocks, the parameter store); free(). */
void *vlm_big_alloc(size_t bytes);
/* Drops the released grad buffers allocated at arena position >= used (the
 * arena is being rewound there). */
void vlm_grad_free_trim(vlm_ctx *ctx, size_t used);
/* Stores n f32 values as dt (F32, BF16 or F16) with the rounding of
 * vlm_f32_to_bf16 / vlm_f32_to_f16; serial and vectorised, for ops that emit
 * low-precision outputs row by row. */
void vlm_store_f32_as(void *dst, vlm_dtype dt, const float *src, int64_t n);

/* Op-argument checks: set an error naming the op and return false. */
bool vlm_check_f32(const char *op, const vlm_tensor *t, const char *what);
bool vlm_check_dtype(const char *op, const vlm_tensor *t, vlm_dtype dt, const char *what);
/* out-of-memory helper for arena allocations inside ops */
vlm_tensor *vlm_new_like(vlm_ctx *ctx, const vlm_tensor *t);

/* 64-bit splitmix/xorshift RNG shared by dropout and the gradient checker. */
uint64_t vlm_rng_next(uint64_t *state);
float vlm_rng_uniform(uint64_t *state); /* [0, 1) */
uint64_t *vlm_ctx_rng(vlm_ctx *ctx);

/* Returns NULL from the calling op if any of the listed tensors is NULL
 * (an earlier op failed and already set the error). */
#define VLM_PROPAGATE_NULL(...)                                                       \
    do {                                                                              \
        const vlm_tensor *vlm__ins[] = {__VA_ARGS__};                                 \
        for (size_t vlm__i = 0; vlm__i < sizeof vlm__ins / sizeof vlm__ins[0]; vlm__i++) \
            if (!vlm__ins[vlm__i]) return NULL;                                       \
    } while (0)

/* Records a node for out; on allocation failure returns NULL from the op. */
#define VLM_RECORD(node_var, ctx, op, out, in_array, n)                               \
    vlm_node *node_var __attribute__((unused));                                       \
    do {                                                                              \
        bool vlm__failed = false;                                                     \
        node_var = vlm_record(ctx, op, out, in_array, n, &vlm__failed);               \
        if (vlm__failed) return NULL;                                                 \
    } while (0)

/* Mixed precision (gemm_bf16.c): per-thread growable scratch buffers for
 * transient low-precision copies that must not pile up in the arena. A slot's
 * pointer stays valid until the next call for the same slot in this thread. */
#define VLM_MP_SCRATCH_SLOTS 4
void *vlm_mp_scratch(int slot, size_t bytes);
/* C = op(A) op(B) + bias (f32 [N] added to every row, NULL = none), bf16
 * operands: vlm_gemm_bf16 with the bias fused into the primitive. C is f32,
 * or bf16 (the f32 result rounded by the primitive) when c_bf16. */
int vlm_gemm_bf16_bias(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                       const uint16_t *A, int64_t lda, const uint16_t *B, int64_t ldb,
                       const float *bias, void *C, int64_t ldc, bool c_bf16);
/* Loads n elements of type dt (F32, BF16 or F16) as f32 (exact); serial and
 * vectorised, for ops that read low-precision inputs chunk by chunk. */
void vlm_load_as_f32(float *dst, const void *src, vlm_dtype dt, int64_t n);
/* Elements i0 .. i0 + n of t (F32, BF16 or F16) as f32: in place, or widened
 * into buf (n floats). */
static inline const float *vlm_chunk_f32(const vlm_tensor *t, int64_t i0, int64_t n, float *buf) {
    if (t->dtype == VLM_F32) return (const float *)t->data + i0;
    vlm_load_as_f32(buf, (const uint16_t *)t->data + i0, t->dtype, n);
    return buf;
}

/* Parallel-for threshold: loops over fewer elements than this stay serial. */
#define VLM_PAR_MIN 32768

#endif
