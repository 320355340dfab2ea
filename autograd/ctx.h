/* ctx.h - private to autograd/: the context's layout (arena blocks, tape). */
#ifndef VLM_AUTOGRAD_CTX_H
#define VLM_AUTOGRAD_CTX_H

#include "internal.h"

typedef struct vlm_arena_block {
    void *data;
    size_t cap, used;
    struct vlm_arena_block *next;
} vlm_arena_block;

/* A grad buffer's header, just before its data (tape.c). While the buffer is
 * on the free list, next links it; `at` is the arena position (used) it was
 * allocated at, so a rewind can drop the buffers it releases. */
typedef struct vlm_grad_hdr {
    struct vlm_grad_hdr *next;
    size_t bytes, at;
} vlm_grad_hdr;

struct vlm_ctx {
    vlm_arena_block *head, *cur;
    size_t chunk, used, peak;
    vlm_grad_hdr *grad_free; /* grad buffers released by the backward, for reuse */
    bool retain_grads;       /* keep op outputs' grads after backward */
    vlm_node *tape;
    size_t tape_len, tape_cap;
    bool grad_enabled;
    uint64_t rng;
    vlm_precision precision; /* mixed precision mode; 0 (calloc) = VLM_PREC_F32 */
};

#endif
