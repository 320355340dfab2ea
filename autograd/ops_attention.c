/* ops_attention.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_attention_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("attention: backward not implemented");
}

int vlm_rope_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("rope: backward not implemented");
}
