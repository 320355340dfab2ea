/* ops_activation.c - unary elementwise ops: gelu (tanh form), silu, sigmoid,
 * tanh, exp, log, relu, and dropout.
 *
 * Each backward reads what its forward kept: the input (node->in[0]) where the
 * derivative needs x, the output (node->out) where it is cheaper in y
 * (sigmoid, tanh, exp, relu), and dropout's mask in node->saved[0]. */
#include "internal.h"

#include <math.h>

/* Output for a unary op on x, or NULL: x NULL (error already set) or not f32. */
static vlm_tensor *unary_out(vlm_ctx *ctx, const char *op, vlm_tensor *x) {
    if (!x) return NULL;
    if (!vlm_check_f32(op, x, "input")) return NULL;
    return vlm_new_like(ctx, x);
}

static vlm_tensor *unary_record(vlm_ctx *ctx, vlm_op op, vlm_tensor *x, vlm_tensor *y) {
    VLM_RECORD(node, ctx, op, y, &x, 1);
    (void)node;
    return y;
}

/* For the loops below: n elements of the node's input, output and grads. */
#define UNARY_BACKWARD_SETUP(node)                                      \
    float *dx = vlm_input_grad(ctx, (node)->in[0]);                    \
    if (!dx) return (node)->in[0]->requires_grad ? -1 : 0;             \
    const float *dy = (node)->out->grad;                               \
    const float *x = vlm_f32((node)->in[0]), *y = vlm_f32((node)->out); \
    int64_t n = (node)->out->numel;                                    \
    (void)x, (void)y

/* ---- gelu (tanh approximation, = torch gelu(approximate='tanh')) ---------------
 * y = x/2 (1 + t), t = tanh(u), u = c (x + k x^3), c = sqrt(2/pi), k = 0.044715
 * dy/dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3k x^2)
 * Rounding order as in PyTorch's kernel (x^3 first). Backward recomputes t
 * from x rather than keeping another tensor alive. */

#define GELU_C 0.7978845608028654f /* sqrt(2/pi) */
#define GELU_K 0.044715f

vlm_tensor *vlm_gelu(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "gelu", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) {
        float v = xv[i];
        yv[i] = 0.5f * v * (1.0f + tanhf(GELU_C * (v + GELU_K * (v * v * v))));
    }
    return unary_record(ctx, VLM_OP_GELU, x, y);
}

int vlm_gelu_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], t = tanhf(GELU_C * (v + GELU_K * (v * v * v)));
        float du = GELU_C * (1.0f + 3.0f * GELU_K * v * v);
        dx[i] += dy[i] * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) * du);
    }
    return 0;
}

/* ---- sigmoid: y = 1 / (1 + e^-x);  dx += dy y (1 - y) -----------------------------
 * e^-|x| never overflows, so large |x| saturates to 0 or 1 instead of NaN. */

static inline float sigmoid1(float v) {
    if (v >= 0) return 1.0f / (1.0f + expf(-v));
    float e = expf(v);
    return e / (1.0f + e);
}

vlm_tensor *vlm_sigmoid(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "sigmoid", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = sigmoid1(xv[i]);
    return unary_record(ctx, VLM_OP_SIGMOID, x, y);
}

int vlm_sigmoid_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i] * (1.0f - y[i]);
    return 0;
}

/* ---- silu: y = x s, s = sigmoid(x);  dx += dy s (1 + x (1 - s)) -------------------- */

vlm_tensor *vlm_silu(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "silu", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = xv[i] * sigmoid1(xv[i]);
    return unary_record(ctx, VLM_OP_SILU, x, y);
}

int vlm_silu_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        float s = sigmoid1(x[i]);
        dx[i] += dy[i] * s * (1.0f + x[i] * (1.0f - s));
    }
    return 0;
}

/* ---- tanh: y = tanh(x);  dx += dy (1 - y^2) ------------------------------------------ */

vlm_tensor *vlm_tanh(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "tanh", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = tanhf(xv[i]);
    return unary_record(ctx, VLM_OP_TANH, x, y);
}

int vlm_tanh_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * (1.0f - y[i] * y[i]);
    return 0;
}

/* ---- exp: y = e^x;  dx += dy y (overflows to inf above x ~ 88.7, like torch) ------- */

vlm_tensor *vlm_exp(vlm_ctx *ctx, vlm_tensor *x) {
    vlm_tensor *y = unary_out(ctx, "exp", x);
    if (!y) return NULL;
    const float *xv = vlm_f32(x);
    float *yv = vlm_f32(y);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < x->numel; i++) yv[i] = expf(xv[i]);
    return unary_record(ctx, VLM_OP_EXP, x, y);
}

int vlm_exp_backward(vlm_ctx *ctx, vlm_node *node) {
    UNARY_BACKWARD_SETUP(node);
#pragma omp parallel for if (n >= VLM_PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] * y[i];
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
    for (int64_t i = 0; i < n; i++) dx[i] += dy[i] / x[i];
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
    for (int64_t i = 0; i < n; i++) dx[i] += y[i] > 0.0f ? dy[i] : 0.0f;
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
    for (int64_t i = 0; i < n; i++) dx[i] += mask[i] ? dy[i] * scale : 0.0f;
    return 0;
}
