/* ops_activation.c - unary elementwise ops: gelu (tanh form), silu, sigmoid,
 * tanh, exp, log, relu, and dropout.
 *
 * Each backward reads what its forward kept: the input (node->in[0]) where the
 * derivative needs x, the output (node->out) where it is cheaper in y
 * (sigmoid, tanh, exp, relu), and dropout's mask in node->saved[0]. */
#include "internal.h"
#include "vmath.h"

#include <math.h>

/* Output for a unary op on x, or NULL: x NULL (error already set) or not f32. */
static vlm_tensor *unary_out(vlm_ctx *ctx, const char *op, vlm_tensor *x) {
    if (!x) return NULL;
    if (!vlm_check_f32(op, x, "input")) return NULL;
    return vlm_new_like(ctx, x);
}

/* gelu and silu_mul also read inputs in the context's storage type (the
 * output of vlm_linear_lowp), widened chunk by chunk. */
static bool act_in_ok(const vlm_ctx *ctx, const char *op, const vlm_tensor *x) {
    if (x->dtype == VLM_F32 || x->dtype == vlm_ctx_lowp_dtype(ctx)) return true;
    char s[64];
    vlm_set_error("%s: input %s %s needs f32 or the context's storage type (%s mode)", op,
                  vlm_dtype_name(x->dtype), vlm_shape_str(x, s, sizeof s),
                  vlm_precision_name(vlm_ctx_precision(ctx)));
    return false;
}

static vlm_tensor *unary_record(vlm_ctx *ctx, vlm_op op, vlm_tensor *x, vlm_tensor *y) {
    VLM_RECORD(node, ctx, op, y, &x, 1);
    (void)node;
    return y;
}

/* Runs the body (the variadic part: it may hold commas) over [0, total) in
 * parallel chunks of CHUNK elements, with i0 and n (the chunk's first element
 * and length) in scope. */
#define CHUNK 1024
#define CHUNKED(total, ...)                                                              \
    do {                                                                                 \
        int64_t vlm__n = (total), vlm__chunks = (vlm__n + CHUNK - 1) / CHUNK;            \
        _Pragma("omp parallel for if (vlm__n >= VLM_PAR_MIN)")                           \
        for (int64_t vlm__c = 0; vlm__c < vlm__chunks; vlm__c++) {                       \
            int64_t i0 = vlm__c * CHUNK, n = vlm__n - i0 < CHUNK ? vlm__n - i0 : CHUNK; \
            __VA_ARGS__;                                                                 \
        }                                                                                \
    } while (0)

/* CHUNKED with dst pointing at the f32 results of elements i0..: y's own
 * memory, or a stack buffer then stored in y's low-precision type (the same
 * rounding as converting afterwards). */
#define UNARY_FORWARD(y, total, ...)                                                     \
    CHUNKED(total, {                                                                     \
        float vlm__buf[CHUNK];                                                           \
        bool vlm__lowp = (y)->dtype != VLM_F32;                                          \
        float *dst = vlm__lowp ? vlm__buf : vlm_f32(y) + i0;                             \
        __VA_ARGS__;                                                                     \
        if (vlm__lowp)                                                                   \
            vlm_store_f32_as((uint16_t *)(y)->data + i0, (y)->dtype, vlm__buf, n);      \
    })

/* For the loops below: n elements of the node's input, output and grads. The
 * grad is fetched raw: a first contribution stores (0 + term, which rounds
 * like the accumulation into a zeroed buffer did), later ones accumulate. */
#define UNARY_BACKWARD_SETUP(node)                                      \
    bool fresh;                                                        \
    float *dx = vlm_input_grad_raw(ctx, (node)->in[0], &fresh);        \
    if (!dx) return (node)->in[0]->requires_grad ? -1 : 0;             \
    const float keep = vlm_grad_keep(fresh);                           \
    const float *dy = (node)->out->grad;                               \
    const float *x = vlm_f32((node)->in[0]), *y = vlm_f32((node)->out); \
    int64_t n = (node)->out->numel;                                    \
    (void)x, (void)y
#define DX0(i) VLM_OLD(keep, dx[i])

/* ---- gelu (tanh approximation, = torch gelu(approximate='tanh')) ---------------
 * y = x/2 (1 + t), t = tanh(u), u = c (x + k x^3), c = sqrt(2/pi), k = 0.044715
 * dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3k x^2)
 * Rounding order as in PyTorch's kernel (x^3 first). Backward recomputes t
 * from x rather than keeping another tensor alive. */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f

static vlm_tensor *gelu(vlm_ctx *ctx, vlm_tensor *x, bool lowp) {
    if (!x || !act_in_ok(ctx, "gelu", x)) return NULL;
    vlm_dtype dt = lowp ? vlm_ctx_lowp_dtype(ctx) : VLM_F32;
    vlm_tensor *y = vlm_tensor_new(ctx, dt, x->ndim, x->shape);
    if (!y) return NULL;
    UNARY_FORWARD(y, x->numel, {
        float xbuf[CHUNK];
        const float *xs = vlm_chunk_f32(x, i0, n, xbuf);
        for (int64_t i = 0; i < n; i++) {
            float v = xs[i];
            dst[i] = 0.5f * v * (1.0f + vm_tanh(GELU_C * (v + GELU_K * (v * v * v))));
        }
    });
    return unary_record(ctx, VLM_OP_GELU, x, y);
}

vlm_tensor *vlm_gelu(vlm_ctx *ctx, vlm_tensor *x) { return gelu(ctx, x, false); }
vlm_tensor *vlm_gelu_lowp(vlm_ctx *ctx, vlm_tensor *x) { return gelu(ctx, x, true); }

int vlm_gelu_backward(vlm_ctx *ctx, vlm_node *node) {
    bool fresh;
    vlm_tensor *x = node->in[0];
    float *dx = vlm_input_grad_raw(ctx, x, &fresh), keep = vlm_grad_keep(fresh);
    if (!dx) return x->requires_grad ? -1 : 0;
    const float *dy = node->out->grad;
    CHUNKED(x->numel, {
        float xbuf[CHUNK];
        const float *xs = vlm_chunk_f32(x, i0, n, xbuf);
        float *d = dx + i0;
        const float *g = dy + i0;
        for (int64_t i = 0; i < n; i++) {
            float v = xs[i], t = vm_tanh(GELU_C * (v + GELU_K * (v * v * v)));
            float du = GELU_C * (1.0f + 3.0f * GELU_K * v * v);
            float dydx = 0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du;
            d[i] = VLM_OLD(keep, d[i]) + g[i] * dydx;
        }
    });
    return 0;
}

/* ---- sigmoid: y = 1 / (1 + e^-x);  dx += dy y (1 - y) -----------------------------
 * vm_sigmoid works from e^-|x|, which never overflows, so large |x|
 * saturates to 0 or 1 instead of NaN. */

vlm_tensor *vlm_sigmoid(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "sigmoid", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = vm_sigmoid(xv[i]);
    return unary_record(ctx, VLM_OP_SIGMOID, x, y);
}

int vlm_sigmoid_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + dy[i] * y[i] * (1.0f - y[i]);
    return 0;
}

/* ---- silu: y = x s, s = sigmoid(x);  dx += dy s (1 + x (1 - s)) -------------------- */

vlm_tensor *vlm_silu(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "silu", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = xv[i] * vm_sigmoid(xv[i]);
    return unary_record(ctx, VLM_OP_SILU, x, y);
}

int vlm_silu_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = vm_sigmoid(x[i]);
        dx[i] = DX0(i) + dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
    return 0;
}

/* ---- silu_mul: y = a u, a = silu(g) = g s, s = sigmoid(g)
 *   du += dy a,  dg += (dy u) s (1 + g (1 - s))
 * The rounding of silu followed by mul (a is rounded to f32 before the
 * product, dy u before the silu derivative), without keeping a. */

static bool silu_mul_ok(const vlm_ctx *ctx, const vlm_tensor *g, const vlm_tensor *u) {
    if (!act_in_ok(ctx, "silu_mul", g) || !act_in_ok(ctx, "silu_mul", u)) return false;
    if (vlm_same_shape(g, u)) return true;
    char sg[64], su[64];
    vlm_set_error("silu_mul: gate %s and up %s must have the same shape",
                  vlm_shape_str(g, sg, sizeof sg), vlm_shape_str(u, su, sizeof su));
    return false;
}

static vlm_tensor *silu_mul(vlm_ctx *ctx, vlm_tensor *g, vlm_tensor *u, bool lowp) {
    VLM_PROPAGATE_NULL(g, u);
    if (!silu_mul_ok(ctx, g, u)) return NULL;
    vlm_tensor *y =
        vlm_tensor_new(ctx, lowp ? vlm_ctx_lowp_dtype(ctx) : VLM_F32, g->ndim, g->shape);
    if (!y) return NULL;
    UNARY_FORWARD(y, g->numel, {
        float gbuf[CHUNK], ubuf[CHUNK];
        const float *gs = vlm_chunk_f32(g, i0, n, gbuf), *us = vlm_chunk_f32(u, i0, n, ubuf);
        for (int64_t i = 0; i < n; i++) {
            float a = gs[i] * vm_sigmoid(gs[i]);
            dst[i] = a * us[i];
        }
    });
    vlm_tensor *in[2] = {g, u};
    VLM_RECORD(node, ctx, VLM_OP_SILU_MUL, y, in, 2);
    (void)node;
    return y;
}

vlm_tensor *vlm_silu_mul(vlm_ctx *ctx, vlm_tensor *g, vlm_tensor *u) {
    return silu_mul(ctx, g, u, false);
}
vlm_tensor *vlm_silu_mul_lowp(vlm_ctx *ctx, vlm_tensor *g, vlm_tensor *u) {
    return silu_mul(ctx, g, u, true);
}

/* du first: g and u may be one tensor, and its second grad fetch then adds. */
int vlm_silu_mul_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *g = node->in[0], *u = node->in[1];
    const float *dy = node->out->grad;
    bool fresh;
    float *du = vlm_input_grad_raw(ctx, u, &fresh), keep = vlm_grad_keep(fresh);
    if (u->requires_grad && !du) return -1;
    if (du)
        CHUNKED(g->numel, {
            float gbuf[CHUNK];
            const float *gs = vlm_chunk_f32(g, i0, n, gbuf);
            for (int64_t i = 0; i < n; i++) {
                float a = gs[i] * vm_sigmoid(gs[i]);
                du[i0 + i] = VLM_OLD(keep, du[i0 + i]) + dy[i0 + i] * a;
            }
        });
    float *dg = vlm_input_grad_raw(ctx, g, &fresh);
    if (!dg) return g->requires_grad ? -1 : 0;
    keep = vlm_grad_keep(fresh);
    CHUNKED(g->numel, {
        float gbuf[CHUNK], ubuf[CHUNK];
        const float *gs = vlm_chunk_f32(g, i0, n, gbuf), *us = vlm_chunk_f32(u, i0, n, ubuf);
        for (int64_t i = 0; i < n; i++) {
            float s = vm_sigmoid(gs[i]), t = dy[i0 + i] * us[i];
            dg[i0 + i] = VLM_OLD(keep, dg[i0 + i]) + t * s * (1.0f + gs[i] * (1.0f - s));
        }
    });
    return 0;
}

/* ---- tanh: y = tanh(x);  dx += dy (1 - y^2) ------------------------------------------ */

vlm_tensor *vlm_tanh(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "tanh", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = vm_tanh(xv[i]);
    return unary_record(ctx, VLM_OP_TANH, x, y);
}

int vlm_tanh_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + dy[i] * (1.0f - y[i] * y[i]);
    return 0;
}

/* ---- exp: y = e^x;  dx += dy y (overflows to inf above x ~ 88.7, like torch) ------- */

vlm_tensor *vlm_exp(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "exp", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = vm_exp(xv[i]);
    return unary_record(ctx, VLM_OP_EXP, x, y);
}

int vlm_exp_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + dy[i] * y[i];
    return 0;
}

/* ---- log: y = ln x;  dx += dy / x ------------------------------------------------------
 * Not an error on bad values, like torch: log(0) = -inf (grad inf), log(x < 0)
 * and log(NaN) are NaN. Callers that need a floor clamp before. */

vlm_tensor *vlm_log(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "log", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = logf(xv[i]);
    return unary_record(ctx, VLM_OP_LOG, x, y);
}

int vlm_log_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + dy[i] / x[i];
    return 0;
}

/* ---- relu: y = max(x, 0);  dx += dy [y > 0] -----------------------------------------
 * NaN passes through the forward (as in torch) so a blow-up stays visible; the
 * grad at the kink x = 0 is 0, also as in torch. */

vlm_tensor *vlm_relu(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "relu", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = xv[i] < 0.0f ? 0.0f : xv[i];
    return unary_record(ctx, VLM_OP_RELU, x, y);
}

int vlm_relu_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + (y[i] > 0.0f ? dy[i] : 0.0f);
    return 0;
}

/* ---- dropout (inverted): y = x m / (1 - p), m ~ Bernoulli(1 - p);  dx += dy m / (1 - p)
 * The mask is drawn element by element from the context's RNG stream, in order,
 * so a given RNG state gives the same mask for any thread count. It is kept as
 * u8 in saved[0], the scale in farg[0]. Identity (the input itself, no node)
 * when !training or p == 0. */

vlm_tensor *vlm_dropout(vlm_ctx *ctx, vlm_tensor *x, float p, bool training) {
    if (!x) return NULL;
    if (!vlm_check_f32("dropout", x, "input")) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        vlm_set_error("dropout: p = %g outside [0, 1)", (double)p);
        return NULL;
    }
    if (!training || p == 0.0f) return x;
    vlm_tensor *y = vlm_new_like(ctx, x);
    uint8_t *mask = vlm_arena_alloc(ctx, (size_t)x->numel);
    if (!y || !mask) return NULL;
    uint64_t *rng = vlm_ctx_rng(ctx);
    for (int64_t i = 0; i < x->numel; i++) mask[i] = vlm_rng_uniform(rng) >= p;
    const float scale = 1.0f / (1.0f - p), *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = mask[i] ? xv[i] * scale : 0.0f;
    VLM_RECORD(node, ctx, VLM_OP_DROPOUT, y, &x, 1);
    if (node) {
        node->saved[0] = mask;
        node->farg[0] = scale;
    }
    return y;
}

int vlm_dropout_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
    const uint8_t *mask = node->saved[0];
    const float scale = node->farg[0];
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] = DX0(i) + (mask[i] ? dy[i] * scale : 0.0f);
    return 0;
}
