/* ops_activation.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_gelu_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("gelu: backward not implemented");
}

int vlm_silu_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("silu: backward not implemented");
}

int vlm_sigmoid_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("sigmoid: backward not implemented");
}

int vlm_tanh_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("tanh: backward not implemented");
}

int vlm_exp_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("exp: backward not implemented");
}

int vlm_log_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("log: backward not implemented");
}

int vlm_relu_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("relu: backward not implemented");
}

int vlm_dropout_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("dropout: backward not implemented");
}
