/* ops_loss.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_cross_entropy_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("cross_entropy: backward not implemented");
}

int vlm_siglip_loss_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("siglip_loss: backward not implemented");
}
