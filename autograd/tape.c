/* tape.c - recording ops and running them backwards. */
#include "ctx.h"

#include <stdlib.h>
#include <string.h>

static const struct {
    const char *name;
    vlm_backward_fn backward;
} vlm_op_table[VLM_OP_COUNT] = {
#define VLM_OP(e, nm, bw) [VLM_OP_##e] = {#nm, bw},
#include "ops.def"
#undef VLM_OP
};

int vlm_op_count(void) { return VLM_OP_COUNT; }
const char *vlm_op_name(int op) {
    return op >= 0 && op < VLM_OP_COUNT ? vlm_op_table[op].name : "?";
}

/* ---- recording ------------------------------------------------------------ */

bool vlm_needs_grad(const vlm_ctx *ctx, vlm_tensor *const *in, int n) {
    if (!ctx->grad_enabled) return false;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return true;
    return false;
}

vlm_node *vlm_record(vlm_ctx *ctx, vlm_op op, vlm_tensor *out, vlm_tensor *const *in, int n,
                     bool *failed) {
    *failed = false;
    if (!vlm_needs_grad(ctx, in, n)) return NULL;
    if (n > VLM_MAX_INPUTS) {
        *failed = true;
        vlm_set_error("%s: %d inputs (at most %d)", vlm_op_table[op].name, n, VLM_MAX_INPUTS);
        return NULL;
    }
    if (ctx->tape_len == ctx->tape_cap) {
        size_t cap = ctx->tape_cap ? ctx->tape_cap * 2 : 1024;
        vlm_node *t = realloc(ctx->tape, cap * sizeof *t);
        if (!t) {
            *failed = true;
            vlm_set_error("%s: out of memory growing the tape", vlm_op_table[op].name);
            return NULL;
        }
        ctx->tape = t;
        ctx->tape_cap = cap;
    }
    vlm_node *node = &ctx->tape[ctx->tape_len++];
    memset(node, 0, sizeof *node);
    node->op = op;
    node->out = out;
    node->n_in = n;
    for (int i = 0; i < n; i++) node->in[i] = in[i];
    out->requires_grad = true;
    return node;
}

size_t vlm_tape_mark(const vlm_ctx *ctx) { return ctx->tape_len; }
size_t vlm_tape_len(const vlm_ctx *ctx) { return ctx->tape_len; }
void vlm_tape_truncate(vlm_ctx *ctx, size_t mark) {
    if (mark < ctx->tape_len) ctx->tape_len = mark;
}

/* ---- grads ----------------------------------------------------------------
 * Grad buffers come from the arena with a 64-byte header in front. Once a
 * node's backward has run, its output's grad is dead (every consumer of the
 * output was recorded later and ran earlier), so it goes on the context's
 * free list and the next grad of the same size reuses it: the grads alive at
 * any time are about one layer's worth, not one per activation, which halves
 * the peak. vlm_ctx_retain_grads keeps them instead (for inspection). */

#define GRAD_HDR 64

static float *grad_alloc(vlm_ctx *ctx, int64_t numel) {
    size_t bytes = (size_t)numel * sizeof(float);
    for (vlm_grad_hdr **pp = &ctx->grad_free; *pp; pp = &(*pp)->next) {
        if ((*pp)->bytes != bytes) continue;
        vlm_grad_hdr *h = *pp;
        *pp = h->next;
        return (float *)((char *)h + GRAD_HDR);
    }
    size_t at = ctx->used;
    vlm_grad_hdr *h = vlm_arena_alloc(ctx, GRAD_HDR + bytes);
    if (!h) return NULL;
    *h = (vlm_grad_hdr){NULL, bytes, at};
    return (float *)((char *)h + GRAD_HDR);
}

static void grad_release(vlm_ctx *ctx, vlm_tensor *t) {
    if (!t->grad) return; /* handed on by vlm_grad_steal */
    vlm_grad_hdr *h = (vlm_grad_hdr *)((char *)t->grad - GRAD_HDR);
    h->next = ctx->grad_free;
    ctx->grad_free = h;
    t->grad = NULL;
}

void vlm_grad_free_trim(vlm_ctx *ctx, size_t used) {
    for (vlm_grad_hdr **pp = &ctx->grad_free; *pp;) {
        if ((*pp)->at >= used)
            *pp = (*pp)->next;
        else
            pp = &(*pp)->next;
    }
}

void vlm_ctx_retain_grads(vlm_ctx *ctx, bool retain) { ctx->retain_grads = retain; }

bool vlm_grad_steal(vlm_ctx *ctx, vlm_tensor *t, vlm_tensor *out) {
    if (ctx->retain_grads || !t->requires_grad || t->grad || t == out || !out->grad ||
        t->numel != out->numel)
        return false;
    t->grad = out->grad;
    out->grad = NULL;
    return true;
}

float *vlm_grad_of(vlm_ctx *ctx, vlm_tensor *t) {
    if (!t->grad) {
        t->grad = grad_alloc(ctx, t->numel);
        if (t->grad) memset(t->grad, 0, (size_t)t->numel * sizeof(float));
    }
    return t->grad;
}

float *vlm_input_grad(vlm_ctx *ctx, vlm_tensor *t) {
    return t && t->requires_grad ? vlm_grad_of(ctx, t) : NULL;
}

/* Zeroing a grad buffer only for the first contribution to overwrite it costs
 * a pass over memory per activation (5-10% of a step), so a first writer gets
 * the buffer as it is and stores instead of accumulating. */
float *vlm_input_grad_raw(vlm_ctx *ctx, vlm_tensor *t, bool *fresh) {
    *fresh = false;
    if (!t || !t->requires_grad) return NULL;
    if (t->grad) return t->grad;
    t->grad = grad_alloc(ctx, t->numel);
    *fresh = t->grad != NULL;
    return t->grad;
}

/* ---- the mutation switch (tests only) --------------------------------------- */

static float vlm_mutation[VLM_OP_COUNT];

int vlm_debug_mutate_backward(const char *op_name, float factor) {
    for (int i = 0; i < VLM_OP_COUNT; i++) {
        if (strcmp(vlm_op_table[i].name, op_name) == 0) {
            vlm_mutation[i] = factor == 1.0f ? 0.0f : factor;
            return 0;
        }
    }
    return vlm_set_error("debug_mutate_backward: no op named '%s'", op_name);
}

/* Runs a node's backward with its contributions scaled by the mutation
 * factor: snapshot every distinct input grad, run, then g = old + f (g - old). */
static int run_mutated(vlm_ctx *ctx, vlm_node *node, float f) {
    float *old[VLM_MAX_INPUTS] = {0};
    for (int i = 0; i < node->n_in; i++) {
        vlm_tensor *t = node->in[i];
        bool dup = false;
        for (int j = 0; j < i; j++) dup |= node->in[j] == t;
        float *g = dup ? NULL : vlm_input_grad(ctx, t);
        if (!g) continue;
        old[i] = vlm_arena_alloc(ctx, (size_t)t->numel * sizeof(float));
        if (!old[i]) return -1;
        memcpy(old[i], g, (size_t)t->numel * sizeof(float));
    }
    /* a checkpoint backward records a recomputation, which may move the tape:
     * keep our own copy of the node */
    vlm_node nd = *node;
    if (vlm_op_table[nd.op].backward(ctx, node) != 0) return -1;
    for (int i = 0; i < nd.n_in; i++) {
        if (!old[i]) continue;
        float *g = nd.in[i]->grad;
        for (int64_t e = 0; e < nd.in[i]->numel; e++) g[e] = old[i][e] + f * (g[e] - old[i][e]);
    }
    return 0;
}

/* ---- backward --------------------------------------------------------------- */

int vlm_backward_from(vlm_ctx *ctx, size_t mark, vlm_tensor *out, const float *grad) {
    if (!out) return vlm_set_error("backward: output is NULL (an earlier op failed: %s)",
                                   vlm_last_error());
    if (!out->requires_grad) {
        vlm_tape_truncate(ctx, mark);
        return vlm_set_error("backward: output does not require grad (nothing on the tape "
                             "leads to it)");
    }
    float *g = vlm_grad_of(ctx, out);
    if (!g) return -1;
    for (int64_t i = 0; i < out->numel; i++) g[i] += grad ? grad[i] : 1.0f;
    /* Inputs are recorded before their consumers, so reverse tape order is a
     * valid topological order. A node whose output got no grad is skipped. */
    bool prev = vlm_set_grad_enabled(ctx, false);
    int rc = 0;
    for (size_t n = ctx->tape_len; n > mark && rc == 0; n--) {
        vlm_node *node = &ctx->tape[n - 1];
        vlm_tensor *y = node->out; /* the node may move: a checkpoint appends */
        if (!y->grad) continue;
        if (vlm_mutation[node->op] != 0.0f)
            rc = run_mutated(ctx, node, vlm_mutation[node->op]);
        else
            rc = vlm_op_table[node->op].backward(ctx, node);
        if (rc == 0 && !ctx->retain_grads) grad_release(ctx, y);
    }
    vlm_set_grad_enabled(ctx, prev);
    vlm_tape_truncate(ctx, mark);
    return rc;
}

int vlm_backward(vlm_ctx *ctx, vlm_tensor *loss) {
    if (loss && loss->numel != 1) {
        char s[64];
        return vlm_set_error("backward: loss must have one element, got %s",
                             vlm_shape_str(loss, s, sizeof s));
    }
    return vlm_backward_from(ctx, 0, loss, NULL);
}
