/* ops_elementwise.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_add_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("add: backward not implemented");
}

int vlm_sub_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("sub: backward not implemented");
}

int vlm_mul_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("mul: backward not implemented");
}

int vlm_div_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("div: backward not implemented");
}
/* ---- scale: y = s x;  dx += s dy ------------------------------------------ */

vlm_tensor *vlm_scale(vlm_ctx *ctx, vlm_tensor *a, float s) {
    VLM_PROPAGATE_NULL(a);
    if (!vlm_check_f32("scale", a, "input")) return NULL;
    vlm_tensor *y = vlm_new_like(ctx, a);
    if (!y) return NULL;
    const float *x = vlm_f32(a);
    float *o = vlm_f32(y);
#pragma omp parallel for if (a->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < a->numel; i++) o[i] = s * x[i];
    VLM_RECORD(node, ctx, VLM_OP_SCALE, y, &a, 1);
    if (node) node->farg[0] = s;
    return y;
}

int vlm_scale_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const float *dy = node->out->grad;
    float s = node->farg[0];
#pragma omp parallel for if (node->out->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < node->out->numel; i++) dx[i] += s * dy[i];
    return 0;
}
