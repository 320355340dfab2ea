/* ctx.h - private to autograd/: the context's layout (arena blocks, tape). */
#ifndef VLM_AUTOGRAD_CTX_H
#define VLM_AUTOGRAD_CTX_H

#include "internal.h"

typedef struct vlm_arena_block {
    void *data;
    size_t cap, used;
    struct vlm_arena_block *next;
} vlm_arena_block;

struct vlm_ctx {
    vlm_arena_block *head, *cur;
    size_t chunk, used, peak;
    vlm_node *tape;
    size_t tape_len, tape_cap;
    bool grad_enabled;
    uint64_t rng;
    vlm_precision precision; /* mixed precision mode; 0 (calloc) = VLM_PREC_F32 */
};

#endif
