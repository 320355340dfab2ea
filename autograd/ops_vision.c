/* ops_vision.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_patchify_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("patchify: backward not implemented");
}

int vlm_pixel_shuffle_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("pixel_shuffle: backward not implemented");
}
