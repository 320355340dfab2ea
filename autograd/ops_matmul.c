/* ops_matmul.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_matmul_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("matmul: backward not implemented");
}

int vlm_linear_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("linear: backward not implemented");
}

int vlm_embedding_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("embedding: backward not implemented");
}
