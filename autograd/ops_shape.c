/* ops_shape.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_reshape_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("reshape: backward not implemented");
}

int vlm_permute_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("permute: backward not implemented");
}

int vlm_concat_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("concat: backward not implemented");
}

int vlm_slice_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("slice: backward not implemented");
}
