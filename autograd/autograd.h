/* autograd.h - the vlm tensor library: dtypes, tensors, arenas, the tape, ops,
 * the parameter store, GEMM dispatch and the gradient checker.
 *
 * Conventions
 *  - Tensors are contiguous, row-major, up to 4 dims. Ops that change layout
 *    (permute, slice, concat) materialise a new tensor.
 *  - Every op takes the context first and returns a new tensor allocated in the
 *    context's activation arena, or NULL with vlm_last_error() set. Ops accept
 *    NULL inputs and return NULL without touching the error, so a chain of ops
 *    can be checked once at its end.
 *  - While grad mode is on and any input requires grad, an op appends a node to
 *    the tape; vlm_backward() walks the tape in reverse. Inputs that do not
 *    require grad (frozen parameters, data) get no backward work.
 *  - Parameters live in a vlm_params store: one flat f32 buffer for values and
 *    one for grads. Their grads accumulate across backward calls until
 *    vlm_params_zero_grad(); activation grads live in the arena, and the grad
 *    of an op's output is released (t->grad = NULL, buffer reused) once the
 *    backward has consumed it, as in PyTorch; leaves keep theirs.
 */
#ifndef VLM_AUTOGRAD_H
#define VLM_AUTOGRAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VLM_MAX_DIMS 4
#define VLM_MAX_INPUTS 8

/* ---- errors ------------------------------------------------------------ */

/* Message of the last failure in this thread ("" if none). */
const char *vlm_last_error(void);
/* Sets the thread's error message (printf-style) and returns -1. The
 * arguments may include vlm_last_error() itself (wrapping a cause). */
int vlm_set_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void vlm_clear_error(void);

/* ---- dtypes ------------------------------------------------------------ */

typedef enum { VLM_F32, VLM_BF16, VLM_F16, VLM_I32, VLM_U8, VLM_DTYPE_COUNT } vlm_dtype;

size_t vlm_dtype_size(vlm_dtype dt);
const char *vlm_dtype_name(vlm_dtype dt);
uint16_t vlm_f32_to_bf16(float x); /* round to nearest even; NaN stays NaN */
float vlm_bf16_to_f32(uint16_t x);
uint16_t vlm_f32_to_f16(float x); /* round to nearest even, overflow -> Inf */
float vlm_f16_to_f32(uint16_t x);
/* Converts n elements; float -> int conversions round to nearest and saturate. */
void vlm_convert(void *dst, vlm_dtype dst_dt, const void *src, vlm_dtype src_dt, int64_t n);

/* ---- tensors and the context ------------------------------------------- */

typedef struct vlm_tensor {
    vlm_dtype dtype;
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    int64_t numel;
    void *data;         /* numel elements of dtype */
    float *grad;        /* f32, numel; NULL until a backward reaches it */
    bool requires_grad; /* leaf: set by the user; op output: any input requires it */
    bool is_param;      /* lives in a vlm_params store; grad accumulates */
    const char *name;   /* parameters: their HF name */
} vlm_tensor;

typedef struct vlm_ctx vlm_ctx;

/* arena_chunk_bytes: size of each arena block (0 = 64 MiB); blocks are added as
 * needed and kept for reuse after vlm_ctx_reset(). */
vlm_ctx *vlm_ctx_new(size_t arena_chunk_bytes);
void vlm_ctx_free(vlm_ctx *ctx);
/* Forgets the tape and every arena allocation (call after the optimizer step). */
void vlm_ctx_reset(vlm_ctx *ctx);
/* 64-byte aligned scratch memory that lives until the next reset. */
void *vlm_arena_alloc(vlm_ctx *ctx, size_t bytes);
size_t vlm_arena_used(const vlm_ctx *ctx);
size_t vlm_arena_peak(const vlm_ctx *ctx);

/* Grad mode: returns the previous setting, so scopes nest:
 *   bool prev = vlm_set_grad_enabled(ctx, false); ...; vlm_set_grad_enabled(ctx, prev); */
bool vlm_set_grad_enabled(vlm_ctx *ctx, bool enabled);
bool vlm_grad_enabled(const vlm_ctx *ctx);

/* Seeded RNG stream used by dropout; saved/restored by checkpointing and resume. */
void vlm_ctx_seed(vlm_ctx *ctx, uint64_t seed);
uint64_t vlm_ctx_rng_state(const vlm_ctx *ctx);
void vlm_ctx_set_rng_state(vlm_ctx *ctx, uint64_t state);

/* New uninitialised tensor in the arena. */
vlm_tensor *vlm_tensor_new(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape);
vlm_tensor *vlm_zeros(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape);
/* New tensor holding a copy of data (numel elements of dt). */
vlm_tensor *vlm_tensor_from(vlm_ctx *ctx, vlm_dtype dt, int ndim, const int64_t *shape,
                            const void *data);
/* Same data, no grad, not on the tape. */
vlm_tensor *vlm_detach(vlm_ctx *ctx, vlm_tensor *t);
static inline float *vlm_f32(const vlm_tensor *t) { return (float *)t->data; }
static inline int32_t *vlm_i32(const vlm_tensor *t) { return (int32_t *)t->data; }
/* "[2, 3, 4]" into buf; returns buf. */
char *vlm_shape_str(const vlm_tensor *t, char *buf, size_t cap);
bool vlm_same_shape(const vlm_tensor *a, const vlm_tensor *b);

/* ---- the tape ----------------------------------------------------------- */

/* Backpropagates from a scalar (numel 1) loss, seeding d loss = 1. Nodes are
 * consumed: the tape is empty afterwards, and each node's output grad is
 * released after its backward ran (unless vlm_ctx_retain_grads), so only
 * leaves (parameters, inputs that require grad) hold grads afterwards.
 * Returns 0 or -1 with error. */
int vlm_backward(vlm_ctx *ctx, vlm_tensor *loss);
/* Seeds out->grad with grad (numel floats, NULL = ones) and backpropagates
 * through the nodes recorded after `mark` (see vlm_tape_mark), then drops
 * them. Used by gradient checkpointing and the gradient checker. */
int vlm_backward_from(vlm_ctx *ctx, size_t mark, vlm_tensor *out, const float *grad);
size_t vlm_tape_mark(const vlm_ctx *ctx);
size_t vlm_tape_len(const vlm_ctx *ctx);
/* Drops the nodes after mark without running them. */
void vlm_tape_truncate(vlm_ctx *ctx, size_t mark);
/* The grad buffer of t, allocated (zeroed, in the arena) on first use. */
float *vlm_grad_of(vlm_ctx *ctx, vlm_tensor *t);
/* Keep the grads of op outputs after backward (default false: released for
 * reuse as soon as the backward has consumed them). For tests and debugging;
 * the arena peak then holds one grad per activation. */
void vlm_ctx_retain_grads(vlm_ctx *ctx, bool retain);

/* ---- gradient checkpointing (autograd/checkpoint.c) ---------------------- */

/* Arena positions. vlm_arena_rewind releases everything allocated after the
 * mark (the memory is reused by later allocations; the peak is kept). Marks
 * nest like a stack: rewinding to one invalidates every later mark, and the
 * caller must no longer use anything allocated after it. A reset invalidates
 * every mark. */
typedef struct {
    void *block;       /* the arena block in use at the mark (NULL: none yet) */
    size_t block_used; /* its fill level */
    size_t used;       /* vlm_arena_used() */
} vlm_arena_pos;
vlm_arena_pos vlm_arena_mark(const vlm_ctx *ctx);
void vlm_arena_rewind(vlm_ctx *ctx, vlm_arena_pos pos);

/* A segment: a pure function of its inputs and of `user` (parameters reached
 * through user are read directly). It must be deterministic given the RNG
 * state (dropout draws from the context's stream) and may not keep pointers to
 * what it allocates. Returns NULL with error on failure. */
typedef vlm_tensor *(*vlm_segment_fn)(vlm_ctx *ctx, vlm_tensor *const *inputs, int n,
                                      const void *user);

/* y = f(inputs) without keeping f's activations: f runs with grad off, its
 * intermediates are released (the arena is rewound, y copied down), and one
 * "checkpoint" node holds the inputs, f, user, the RNG state and the precision
 * mode. Its backward re-runs f with recording on from that RNG state and mode
 * (dropout masks repeat; the stream is then put back where the backward found
 * it), backpropagates through the recomputation into the inputs' and
 * parameters' grads, and releases the recomputation. Grads are bit-for-bit
 * those of f(inputs). Kept until the reset per segment: y, y's grad and the
 * inputs' grads; the peak adds one segment's recomputation.
 *  - n: 1..VLM_MAX_INPUTS. A NULL input returns NULL (error left as is).
 *  - user_size > 0: user (that many bytes) is copied into the arena, so it may
 *    live on the caller's stack; 0: the pointer itself must stay valid until
 *    the backward. The copy is shallow.
 *  - y requires grad whenever an input does (as with PyTorch's checkpoint),
 *    even if f happens not to use it; those grads are then zero.
 *  - Grad off or no input requiring grad (frozen tower, data): f simply runs;
 *    if it records nothing its intermediates are released as above, if it
 *    does (trainable parameters inside, constant inputs) the segment is not
 *    checkpointed and its nodes stay on the tape.
 *  - Tensors that require grad and are not parameters should be inputs. One
 *    captured through user still gets its grad, but then that segment's
 *    recomputation is kept in the arena until the reset.
 *  - Segments nest. An error while recomputing fails vlm_backward. */
vlm_tensor *vlm_checkpoint(vlm_ctx *ctx, vlm_segment_fn f, const void *user, size_t user_size,
                           vlm_tensor *const *inputs, int n);

/* ---- parameters --------------------------------------------------------- */

typedef struct vlm_params vlm_params;

vlm_params *vlm_params_new(void);
void vlm_params_free(vlm_params *p);
/* Declares a parameter; its data pointer is valid after vlm_params_finalize().
 * Names must be unique. Returns NULL with error on a duplicate or bad shape. */
vlm_tensor *vlm_param_add(vlm_params *p, const char *name, int ndim, const int64_t *shape);
/* Allocates the flat value and grad buffers (zeroed) and points every tensor in. */
int vlm_params_finalize(vlm_params *p);
int vlm_params_count(const vlm_params *p);
vlm_tensor *vlm_params_at(const vlm_params *p, int i);
vlm_tensor *vlm_params_find(const vlm_params *p, const char *name);
int64_t vlm_params_numel(const vlm_params *p);
float *vlm_params_values(vlm_params *p);
float *vlm_params_grads(vlm_params *p);
/* Offset of t's first element inside the flat buffers. */
int64_t vlm_params_offset(const vlm_params *p, const vlm_tensor *t);
void vlm_params_zero_grad(vlm_params *p);
/* Frozen parameters get no grads and no optimizer work. */
void vlm_param_set_frozen(vlm_tensor *t, bool frozen);

/* ---- GEMM dispatch ------------------------------------------------------ */

/* C[M,N] = alpha * op(A) op(B) + beta * C, row-major, op = transpose if trans.
 * lda/ldb/ldc are row strides in elements. Goes to OpenBLAS, which is loaded
 * with the AVX-512 kernels on CPUs that have them (OPENBLAS_CORETYPE). */
void vlm_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc);
/* Name of the OpenBLAS kernel set in use (e.g. "SkylakeX"), loading it if needed. */
const char *vlm_blas_corename(void);
/* Threads for OpenMP regions and BLAS (0 = number of cores). */
void vlm_set_num_threads(int n);
int vlm_num_threads(void);

/* ---- mixed precision ---------------------------------------------------- */
/* The context's precision mode decides how vlm_linear and vlm_matmul compute
 * and what they keep for backward; every other op, the parameters, their grads
 * and the optimizer state stay f32 in every mode.
 *  - F32 (default): f32 GEMMs (OpenBLAS), inputs kept by reference.
 *  - BF16: forward and backward GEMMs on bf16 operands with f32 accumulation
 *    and f32 outputs (oneDNN). The bf16 copies of the inputs are what
 *    backward uses, so the saved activations take 2 bytes per element; a
 *    linear's weight is rounded to bf16 in the forward and again (into
 *    scratch, from the f32 weight, so no copy is kept) in the backward. The
 *    incoming gradient is rounded to bf16 for the backward GEMMs (as under
 *    PyTorch autocast).
 *  - F16: inputs are rounded to f16 and that f16 copy is saved for backward;
 *    the GEMMs run in f32 on the f16-rounded values (oneDNN has no fast f16
 *    matmul without AVX512_FP16). Weights and gradients stay f32.
 * The mode in force at forward time also governs that node's backward.
 * vlm_linear also takes x already in the mode's storage type (a bf16 tensor in
 * BF16 mode, f16 in F16 mode) and keeps it by reference; its grad is f32 like
 * every grad. That is how the saving becomes real in the arena: an f32 x stays
 * allocated until the reset whether or not the linear keeps a copy, so only a
 * producer that emits bf16 (layernorm or gelu output feeding linears) avoids
 * holding the 4-byte activation. */
typedef enum { VLM_PREC_F32 = 0, VLM_PREC_BF16 = 1, VLM_PREC_F16 = 2 } vlm_precision;
/* Returns 0, or -1 with error for an unknown mode. */
int vlm_ctx_set_precision(vlm_ctx *ctx, vlm_precision p);
vlm_precision vlm_ctx_precision(const vlm_ctx *ctx);
/* The mode's activation storage type: bf16 (BF16), f16 (F16) or f32 (F32).
 * The *_lowp ops (vlm_layernorm_lowp, vlm_rmsnorm_lowp, vlm_gelu_lowp,
 * vlm_silu_mul_lowp, vlm_linear_lowp) compute in f32 and store their output
 * in this type, for outputs whose only consumers are vlm_linear calls (or,
 * for vlm_linear_lowp, gelu and silu_mul, which read that type too): the f32
 * activation then never exists and every linear reading it shares the one
 * copy. In F32 mode they are the plain ops. */
vlm_dtype vlm_ctx_lowp_dtype(const vlm_ctx *ctx);
const char *vlm_precision_name(vlm_precision p);
/* True if the CPU has AVX512_BF16 (otherwise oneDNN emulates bf16: correct but
 * no faster than f32). */
bool vlm_bf16_native(void);

/* C = op(A) op(B) + beta C for bf16 A, B (raw uint16 bits) and f32 C,
 * row-major with leading dimensions as vlm_sgemm, accumulating in f32 through
 * oneDNN's matmul primitive. Primitives are cached by shape, strides, beta and
 * thread count. Returns 0 or -1 with error. */
int vlm_gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const uint16_t *A,
                  int64_t lda, const uint16_t *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* batch products, operands sa, sb, sc elements apart; sb == 0 shares B across
 * the batch, sc == 0 sums every product into one C. */
int vlm_gemm_bf16_batched(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                          const uint16_t *A, int64_t lda, int64_t sa, const uint16_t *B,
                          int64_t ldb, int64_t sb, float beta, float *C, int64_t ldc, int64_t sc,
                          int64_t batch);
/* vlm_sgemm's contract (alpha 1) computed as a bf16 GEMM: A and B are rounded
 * to bf16 (into per-thread scratch) first. For benchmarks and tests. */
int vlm_sgemm_via_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc);
/* Primitive cache counters since start (or the last clear), and a clear that
 * destroys every cached primitive. */
void vlm_gemm_bf16_stats(int64_t *hits, int64_t *misses);
void vlm_gemm_bf16_cache_clear(void);
/* Vectorised, OpenMP-parallel conversions with the scalar functions'
 * rounding (nearest even): bf16 bit-identical to vlm_f32_to_bf16, f16 equal
 * to vlm_f32_to_f16 except for NaN payloads. */
void vlm_f32_to_bf16_n(uint16_t *dst, const float *src, int64_t n);
void vlm_bf16_to_f32_n(float *dst, const uint16_t *src, int64_t n);
void vlm_f32_to_f16_n(uint16_t *dst, const float *src, int64_t n);
void vlm_f16_to_f32_n(float *dst, const uint16_t *src, int64_t n);

/* ---- ops ---------------------------------------------------------------- */
/* Shapes: [..., X] means any number of leading dims (total <= 4). */

/* Binary elementwise ops broadcast numpy-style (dims aligned from the right,
 * size-1 or missing dims stretch), e.g. [B,T,D] + [D], [B,T,D] * [B,1,D]. */
vlm_tensor *vlm_add(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_sub(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_mul(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_div(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b);
vlm_tensor *vlm_scale(vlm_ctx *ctx, vlm_tensor *a, float s);

/* Reductions: over the last dim ([..., D] -> [...], a 1-D input gives [1]) or
 * over everything (-> [1]). */
vlm_tensor *vlm_sum_last(vlm_ctx *ctx, vlm_tensor *a);
vlm_tensor *vlm_mean_last(vlm_ctx *ctx, vlm_tensor *a);
vlm_tensor *vlm_sum_all(vlm_ctx *ctx, vlm_tensor *a);
vlm_tensor *vlm_mean_all(vlm_ctx *ctx, vlm_tensor *a);

/* Layout. reshape: one dim may be -1. permute: perm[i] = input dim of output dim i. */
vlm_tensor *vlm_reshape(vlm_ctx *ctx, vlm_tensor *a, int ndim, const int64_t *shape);
vlm_tensor *vlm_permute(vlm_ctx *ctx, vlm_tensor *a, const int *perm);
vlm_tensor *vlm_transpose(vlm_ctx *ctx, vlm_tensor *a, int dim0, int dim1);
vlm_tensor *vlm_concat(vlm_ctx *ctx, vlm_tensor *const *ts, int n, int dim);
vlm_tensor *vlm_slice(vlm_ctx *ctx, vlm_tensor *a, int dim, int64_t start, int64_t len);
/* Splits along dim into n pieces of the given sizes (summing to shape[dim]). */
int vlm_split(vlm_ctx *ctx, vlm_tensor *a, int dim, int n, const int64_t *sizes,
              vlm_tensor **out);

/* Matmul: a [..., M, K] x b [..., K, N] (transpose flags apply to the last two
 * dims). Batch dims must match, or b may be 2-D and is shared by every batch. */
vlm_tensor *vlm_matmul(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b, bool trans_a, bool trans_b);
/* x [..., in] W[out, in] -> x W^T + bias; bias may be NULL. */
vlm_tensor *vlm_linear(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias);
/* The same with the output in vlm_ctx_lowp_dtype (see mixed precision), for
 * an output read only by vlm_gelu(_lowp), vlm_silu_mul(_lowp) or vlm_linear. */
vlm_tensor *vlm_linear_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *bias);
/* r + x W^T + bias (r f32, the output's shape): a residual branch's last
 * linear and the skip connection in one op, so the branch's output is never
 * stored apart from the sum. Equal to vlm_add(r, vlm_linear(x, w, bias)). */
vlm_tensor *vlm_linear_residual(vlm_ctx *ctx, vlm_tensor *r, vlm_tensor *x, vlm_tensor *w,
                                vlm_tensor *bias);

/* Embedding gather: table [V, D], ids i32 (any shape S) -> [S..., D]. */
vlm_tensor *vlm_embedding(vlm_ctx *ctx, vlm_tensor *table, vlm_tensor *ids);

/* Norms over the last dim. w, b are [D]; b may be NULL. */
vlm_tensor *vlm_layernorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b, float eps);
vlm_tensor *vlm_rmsnorm(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, float eps);
/* The same with the output in vlm_ctx_lowp_dtype (see mixed precision). */
vlm_tensor *vlm_layernorm_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b,
                               float eps);
vlm_tensor *vlm_rmsnorm_lowp(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *w, float eps);
/* x / max(||x||_2, eps) over the last dim. */
vlm_tensor *vlm_l2_normalize(vlm_ctx *ctx, vlm_tensor *x, float eps);

/* Unary elementwise. gelu is the tanh approximation (gelu_pytorch_tanh).
 * tanh, gelu, sigmoid, silu and exp use vectorised f32 kernels accurate to a
 * few ulp (tests/autograd/test_activation.c measures them against double). */
vlm_tensor *vlm_gelu(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_silu(vlm_ctx *ctx, vlm_tensor *x);
/* SwiGLU's gate: silu(g) * u in one op (g, u same shape), without the silu
 * output as a separate activation. gelu and silu_mul also take inputs in the
 * context's storage type (vlm_linear_lowp's output); grads are f32. */
vlm_tensor *vlm_silu_mul(vlm_ctx *ctx, vlm_tensor *g, vlm_tensor *u);
/* Output in vlm_ctx_lowp_dtype (see mixed precision). */
vlm_tensor *vlm_gelu_lowp(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_silu_mul_lowp(vlm_ctx *ctx, vlm_tensor *g, vlm_tensor *u);
vlm_tensor *vlm_sigmoid(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_tanh(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_exp(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_log(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_relu(vlm_ctx *ctx, vlm_tensor *x);
/* Inverted dropout with the context's RNG stream; identity when !training or p == 0. */
vlm_tensor *vlm_dropout(vlm_ctx *ctx, vlm_tensor *x, float p, bool training);

/* Over the last dim. */
vlm_tensor *vlm_softmax(vlm_ctx *ctx, vlm_tensor *x);
vlm_tensor *vlm_log_softmax(vlm_ctx *ctx, vlm_tensor *x);

/* Mean cross-entropy over rows whose label != ignore_index: logits [N, C],
 * labels i32 [N]. With label smoothing e the target is (1-e) one-hot + e/C.
 * Returns [1]; 0 if every row is ignored. */
vlm_tensor *vlm_cross_entropy(vlm_ctx *ctx, vlm_tensor *logits, vlm_tensor *labels,
                              int32_t ignore_index, float label_smoothing);

/* SigLIP sigmoid loss over embeddings txt [N, D] and img [M, D] (normally
 * L2-normalised): z = exp(logit_scale) * txt img^T + logit_bias,
 * loss = -sum_ij log sigmoid(label_ij z_ij) / N with label +1 where match[i,j]
 * (u8 [N, M]; NULL = the diagonal) and -1 elsewhere. logit_scale, logit_bias [1]. */
vlm_tensor *vlm_siglip_loss(vlm_ctx *ctx, vlm_tensor *txt, vlm_tensor *img,
                            vlm_tensor *logit_scale, vlm_tensor *logit_bias,
                            vlm_tensor *match);

/* Scaled dot-product attention, never materialising the [Tq, Tk] scores
 * (tiled, online softmax). q [B, Tq, Hq, D], k and v [B, Tk, Hkv, D] with
 * Hq % Hkv == 0 (query head h reads kv head h / (Hq / Hkv)) -> [B, Tq, Hq, D].
 * Masks combine: kind NONE / CAUSAL / PREFIX and an optional key padding mask.
 * Query i sits at absolute position i + (Tk - Tq) (so a decode step with a KV
 * cache is causal against everything before it). CAUSAL: key j visible iff
 * j <= pos(i). PREFIX: visible iff j < prefix_len or j <= pos(i).
 * key_mask: u8 [B, Tk], 1 = attend. scale 0 means 1/sqrt(D). A query row that
 * sees no key gives zeros. */
typedef enum { VLM_MASK_NONE, VLM_MASK_CAUSAL, VLM_MASK_PREFIX } vlm_mask_kind;
typedef struct {
    vlm_mask_kind kind;
    int64_t prefix_len;
    vlm_tensor *key_mask;
    float scale;
} vlm_attn_opts;
vlm_tensor *vlm_attention(vlm_ctx *ctx, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v,
                          const vlm_attn_opts *opts);
/* The same with the output in vlm_ctx_lowp_dtype, for an output read only by
 * vlm_linear (the output projection): backward then reads the rounded output
 * (as FlashAttention-2 in bf16 does), so grads are within rounding of the
 * plain op's, not equal to them. */
vlm_tensor *vlm_attention_lowp(vlm_ctx *ctx, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v,
                               const vlm_attn_opts *opts);

/* RoPE, HF half-split convention, on x [B, T, H, D] (D even) at positions
 * pos_offset + t: x' = x cos + rotate_half(x) sin, inv_freq[i] = theta^(-2i/D). */
vlm_tensor *vlm_rope(vlm_ctx *ctx, vlm_tensor *x, int64_t pos_offset, float theta);

/* Image [B, C, H, W] -> patch rows [B, (H/p)(W/p), C*p*p] in raster order, each
 * row flattened (c, kh, kw) like a conv weight [out, C, p, p]; so a ViT patch
 * embedding is vlm_linear(patchify(img), conv_weight viewed as [out, C*p*p]). */
vlm_tensor *vlm_patchify(vlm_ctx *ctx, vlm_tensor *img, int patch);

/* Space-to-depth on tokens laid out on a square grid: x [B, N, D] with
 * N = g*g, g % s == 0 -> [B, N/s^2, D*s^2]. Output token (i, j) concatenates
 * the s x s block of input tokens (i*s + di, j*s + dj) in (di, dj) row-major order. */
vlm_tensor *vlm_pixel_shuffle(vlm_ctx *ctx, vlm_tensor *x, int s);

/* Mean over the tokens where mask (u8 [B, T]) is 1: x [B, T, D] -> [B, D].
 * A row with no valid token gives zeros. */
vlm_tensor *vlm_masked_mean(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *mask);

/* ---- gradient checking -------------------------------------------------- */

/* Builds the function under test from leaf inputs (f32, requires_grad set by
 * the checker). Return NULL on error. */
typedef vlm_tensor *(*vlm_gc_fn)(vlm_ctx *ctx, vlm_tensor **inputs, void *user);

typedef struct {
    double h;    /* finite-difference step (Richardson: h and h/2) */
    double atol; /* per element: |analytic - numeric| <= atol + rtol |numeric| */
    double rtol; /* and norm-wise: ||analytic - numeric|| <= rtol ||numeric|| + atol */
} vlm_gc_tol;

/* Default tolerances for smooth f32 ops: h 1e-2, atol 1e-4, rtol 2e-3. */
vlm_gc_tol vlm_gc_default_tol(void);

typedef struct {
    double max_abs_err;  /* worst element */
    double norm_rel_err; /* ||a - n|| / ||n|| over all inputs */
    int bad_input;       /* first input that failed, -1 if none */
    int64_t bad_index;   /* its element */
    double bad_analytic, bad_numeric;
} vlm_gc_report;

/* Checks d(sum(f(x) * R))/dx for every f32 input against central finite
 * differences with Richardson extrapolation (O(h^4)), accumulated in double,
 * where R is a fixed random projection. inputs[i] supplies shapes and values.
 * Returns 1 if all grads agree, 0 if not (report filled), -1 on error. */
int vlm_gradcheck(vlm_gc_fn f, void *user, int n_inputs, vlm_tensor *const *inputs,
                  vlm_gc_tol tol, uint64_t seed, vlm_gc_report *report);

/* The same check over every trainable parameter of a store (perturbed in place
 * and restored; grads are zeroed before and after). report->bad_input is the
 * index among the trainable parameters. */
typedef vlm_tensor *(*vlm_gc_params_fn)(vlm_ctx *ctx, void *user);
int vlm_gradcheck_params(vlm_gc_params_fn f, void *user, vlm_params *p, vlm_gc_tol tol,
                         uint64_t seed, vlm_gc_report *report);

/* Test-only switch: multiplies every gradient contribution of the named op's
 * backward by factor (1 = off). Used to show a 1% wrong backward fails gradcheck. */
int vlm_debug_mutate_backward(const char *op_name, float factor);

/* Names of the ops in the op table, for tooling and tests. */
int vlm_op_count(void);
const char *vlm_op_name(int op);

#endif
