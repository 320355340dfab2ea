/* ops_norm.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_layernorm_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("layernorm: backward not implemented");
}

int vlm_rmsnorm_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("rmsnorm: backward not implemented");
}

int vlm_l2_normalize_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("l2_normalize: backward not implemented");
}

int vlm_softmax_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("softmax: backward not implemented");
}

int vlm_log_softmax_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("log_softmax: backward not implemented");
}
