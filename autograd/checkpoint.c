/* checkpoint.c - gradient checkpointing: a segment (typically one transformer
 * block) runs forward without recording and keeps only its inputs and output;
 * its backward re-runs it with recording on and backpropagates through the
 * recomputation. Also the arena marks it is built on.
 *
 * Memory. Activations live in a bump-allocated arena, so running a segment
 * with grad off saves nothing by itself: its intermediates would still sit in
 * the arena until the step ends. Both halves therefore rewind the arena:
 *  - forward: mark, run f, copy f's output down to the mark (through a heap
 *    buffer: the new tensor may overlap the old one) and drop the rest. Safe
 *    because with grad off no node refers to f's allocations and a segment
 *    keeps no pointers to them.
 *  - backward: the grad buffers of the segment's inputs are allocated BEFORE
 *    the mark (earlier nodes read them after this one); parameter grads live
 *    in the parameter store; the output's grad was allocated by its consumers
 *    before this node ran. After the mark come the recomputed activations,
 *    what their nodes saved and their grads, all dead once the nested
 *    vlm_backward_from has consumed those nodes, so the arena is rewound.
 *    The one thing that could escape is a grad buffer allocated during the
 *    recomputation for a tensor from outside it (a non-parameter tensor that
 *    requires grad, captured through user rather than passed as an input):
 *    grads_escape() detects it beforehand and the rewind is then skipped
 *    (for the enclosing segments too, when nested).
 * What stays until the reset per checkpointed segment: its output, the
 * output's grad and the inputs' grads. Peak ~ everything outside segments +
 * those + one segment's recomputation (activations and grads).
 *
 * Bit-for-bit grads. The recomputation runs the same kernels on the same
 * inputs from the same RNG state and precision mode, so it reproduces every
 * activation exactly. Its nodes run in the same reverse order as they would
 * have on the main tape, at the same place in it (this node's position), and
 * accumulate straight into the inputs' and parameters' grad buffers (no
 * detached copies whose sums would be added afterwards, which would change
 * the rounding of x.grad = (g + a) + b into g + (a + b)). The output grad
 * arrives in a fresh buffer: 0 + g == g. */
#include "ctx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena positions ------------------------------------------------------- */

vlm_arena_pos vlm_arena_mark(const vlm_ctx *ctx) {
    return (vlm_arena_pos){ctx->cur, ctx->cur ? ctx->cur->used : 0, ctx->used};
}

/* Blocks after the marked one keep stale fill levels, which is fine:
 * vlm_arena_alloc zeroes a block's fill level when it moves on to it (the
 * same invariant vlm_ctx_reset relies on). */
void vlm_arena_rewind(vlm_ctx *ctx, vlm_arena_pos pos) {
    vlm_arena_block *b = pos.block;
    if (!b) { /* marked before the first allocation since the context was made */
        b = ctx->head;
        if (b) b->used = 0;
    } else {
        b->used = pos.block_used;
    }
    ctx->cur = b;
    ctx->used = pos.used;
    vlm_grad_free_trim(ctx, pos.used);
}

/* A copy of out at pos; everything allocated since pos is released. */
static vlm_tensor *move_down(vlm_ctx *ctx, vlm_arena_pos pos, const vlm_tensor *out) {
    size_t bytes = (size_t)out->numel * vlm_dtype_size(out->dtype);
    void *tmp = malloc(bytes ? bytes : 1);
    if (!tmp) {
        vlm_set_error("checkpoint: out of memory copying a %zu-byte segment output", bytes);
        return NULL;
    }
    memcpy(tmp, out->data, bytes);
    vlm_tensor meta = *out; /* out itself may be overwritten by the new tensor */
    vlm_arena_rewind(ctx, pos);
    vlm_tensor *y = vlm_tensor_from(ctx, meta.dtype, meta.ndim, meta.shape, tmp);
    free(tmp);
    return y;
}

/* ---- forward ------------------------------------------------------------------ */

/* What the node's backward needs to replay the segment. */
typedef struct {
    vlm_segment_fn f;
    const void *user;
    uint64_t rng;            /* the RNG stream's state when the segment started */
    vlm_precision precision; /* the mode it ran under */
} ckpt_state;

/* Nothing to differentiate through the inputs: f runs as it is. If it
 * records nothing (grad off, frozen parameters) its intermediates are dead
 * and released; if it records (trainable parameters inside), its nodes stay
 * and the segment is simply not checkpointed. */
static vlm_tensor *run_plain(vlm_ctx *ctx, vlm_segment_fn f, const void *user,
                             vlm_tensor *const *inputs, int n) {
    vlm_arena_pos pos = vlm_arena_mark(ctx);
    size_t mark = vlm_tape_mark(ctx);
    vlm_tensor *out = f(ctx, inputs, n, user);
    if (vlm_tape_len(ctx) != mark) return out;
    if (!out) {
        vlm_arena_rewind(ctx, pos);
        return NULL;
    }
    return move_down(ctx, pos, out);
}

static vlm_tensor *run_checkpointed(vlm_ctx *ctx, vlm_segment_fn f, const void *user,
                                    size_t user_size, vlm_tensor *const *inputs, int n) {
    uint64_t rng = vlm_ctx_rng_state(ctx);
    vlm_arena_pos pos = vlm_arena_mark(ctx);
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *out = f(ctx, inputs, n, user);
    vlm_set_grad_enabled(ctx, prev);
    if (!out) {
        vlm_arena_rewind(ctx, pos);
        return NULL;
    }
    vlm_tensor *y = move_down(ctx, pos, out);
    ckpt_state *s = y ? vlm_arena_alloc(ctx, sizeof *s) : NULL;
    void *copy = s && user_size ? vlm_arena_alloc(ctx, user_size) : NULL;
    if (!s || (user_size && !copy)) return NULL;
    if (copy) memcpy(copy, user, user_size);
    *s = (ckpt_state){f, copy ? copy : user, rng, vlm_ctx_precision(ctx)};
    VLM_RECORD(node, ctx, VLM_OP_CHECKPOINT, y, inputs, n);
    if (node) node->saved[0] = s;
    return y;
}

vlm_tensor *vlm_checkpoint(vlm_ctx *ctx, vlm_segment_fn f, const void *user, size_t user_size,
                           vlm_tensor *const *inputs, int n) {
    if (!f || !inputs || n < 1 || n > VLM_MAX_INPUTS || (user_size && !user)) {
        vlm_set_error("checkpoint: need a segment function, 1 to %d inputs (got %d) and user "
                      "data when user_size > 0",
                      VLM_MAX_INPUTS, n);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!inputs[i]) return NULL; /* an earlier op failed and set the error */
    if (!vlm_needs_grad(ctx, inputs, n)) return run_plain(ctx, f, user, inputs, n);
    return run_checkpointed(ctx, f, user, user_size, inputs, n);
}

/* ---- backward ------------------------------------------------------------------- */

/* A segment must give the same output shape when replayed. */
static int check_replay(const vlm_tensor *again, const vlm_tensor *first) {
    if (again->dtype == first->dtype && vlm_same_shape(again, first)) return 0;
    char s1[64], s2[64];
    return vlm_set_error("checkpoint: the recomputed segment gave %s %s, the forward %s %s (a "
                         "segment must be a deterministic function of its inputs)",
                         vlm_dtype_name(again->dtype), vlm_shape_str(again, s1, sizeof s1),
                         vlm_dtype_name(first->dtype), vlm_shape_str(first, s2, sizeof s2));
}

/* True if backpropagating through the nodes after mark would give a grad
 * buffer to a tensor from outside the recomputation (it requires grad and has
 * none yet): that buffer would sit after the arena mark yet outlive it.
 * Outputs of the recorded nodes are tagged so they are told apart, then
 * untagged (they have no grad before the backward). */
static float produced_tag;

static bool grads_escape(vlm_ctx *ctx, size_t mark) {
    for (size_t k = mark; k < ctx->tape_len; k++)
        if (!ctx->tape[k].out->grad) ctx->tape[k].out->grad = &produced_tag;
    bool escape = false;
    for (size_t k = mark; k < ctx->tape_len && !escape; k++)
        for (int i = 0; i < ctx->tape[k].n_in; i++) {
            const vlm_tensor *t = ctx->tape[k].in[i];
            if (t && t->requires_grad && !t->grad) escape = true;
        }
    for (size_t k = mark; k < ctx->tape_len; k++)
        if (ctx->tape[k].out->grad == &produced_tag) ctx->tape[k].out->grad = NULL;
    return escape;
}

/* Recomputations kept because of an escaping grad, in this thread. A kept one
 * nested in an outer segment's recomputation lies inside the outer's arena
 * region, so the outer must keep its region too; it compares this count
 * before and after its backward (a context is driven by one thread). */
static _Thread_local unsigned long kept_regions;

/* Prefixes the current error (from inside the segment) with what failed. */
static int replay_error(void) {
    char msg[768];
    snprintf(msg, sizeof msg, "%s", vlm_last_error());
    return vlm_set_error("checkpoint: recomputing the segment in backward failed: %s", msg);
}

/* Re-runs the segment from its saved RNG state and precision with recording
 * on, backpropagates the output's grad through it, and releases it. The RNG
 * stream and mode are put back afterwards, so later RNG use is unaffected.
 * The replay appends to the tape, which may move it: work on a copy of the
 * node, never through the pointer after f has run. */
int vlm_checkpoint_backward(vlm_ctx *ctx, vlm_node *node_on_tape) {
    const vlm_node nd = *node_on_tape, *node = &nd;
    const ckpt_state *s = node->saved[0];
    for (int i = 0; i < node->n_in; i++) /* before the mark: see the top of the file */
        if (node->in[i]->requires_grad && !vlm_grad_of(ctx, node->in[i])) return -1;
    uint64_t rng_now = vlm_ctx_rng_state(ctx);
    vlm_precision prec_now = vlm_ctx_precision(ctx);
    vlm_arena_pos pos = vlm_arena_mark(ctx);
    size_t mark = vlm_tape_mark(ctx);
    vlm_ctx_set_rng_state(ctx, s->rng);
    vlm_ctx_set_precision(ctx, s->precision);
    bool prev = vlm_set_grad_enabled(ctx, true);
    vlm_tensor *out = s->f(ctx, node->in, node->n_in, s->user);
    vlm_set_grad_enabled(ctx, prev);
    int rc = out ? check_replay(out, node->out) : replay_error();
    unsigned long kept_before = kept_regions;
    bool keep = false;
    if (rc == 0 && out->requires_grad) { /* else nothing in f depends on a trained tensor */
        keep = grads_escape(ctx, mark);
        rc = vlm_backward_from(ctx, mark, out, node->out->grad) ? replay_error() : 0;
    }
    vlm_tape_truncate(ctx, mark);
    vlm_ctx_set_rng_state(ctx, rng_now);
    vlm_ctx_set_precision(ctx, prec_now);
    if (keep || kept_regions != kept_before)
        kept_regions++;
    else
        vlm_arena_rewind(ctx, pos);
    return rc;
}
