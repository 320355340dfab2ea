/* ops_reduce.c - STUB: to be implemented (forward + backward side by side). */
#include "internal.h"

int vlm_sum_last_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("sum_last: backward not implemented");
}

int vlm_mean_last_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("mean_last: backward not implemented");
}

int vlm_sum_all_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("sum_all: backward not implemented");
}

int vlm_mean_all_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("mean_all: backward not implemented");
}

int vlm_masked_mean_backward(vlm_ctx *ctx, vlm_node *node) {
    (void)ctx; (void)node;
    return vlm_set_error("masked_mean: backward not implemented");
}
