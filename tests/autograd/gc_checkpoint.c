/* Gradient-check cases: checkpoint (a segment re-run in backward).
 *
 * Every case has at least one input requiring grad, so the segment is really
 * checkpointed in the analytic pass (the checker's finite-difference forwards
 * run with grad off and take the plain path: same values). Dropout inside a
 * segment works because the checker reseeds before every forward and the
 * checkpoint replays the mask from the RNG state it saved. The 1% mutation
 * scales what the checkpoint node adds to its inputs' grads. */
#include "gc.h"

/* layernorm -> linear -> gelu -> dropout, times x, plus x: every input is
 * used more than once, so its grad is a sum of several contributions. */
static vlm_tensor *seg_block(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n, (void)u;
    vlm_tensor *h = vlm_layernorm(ctx, in[0], in[2], NULL, 1e-5f);
    h = vlm_dropout(ctx, vlm_gelu(ctx, vlm_linear(ctx, h, in[1], NULL)), 0.25f, true);
    return vlm_add(ctx, vlm_mul(ctx, h, in[0]), in[0]);
}

static vlm_tensor *f_block(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_checkpoint(ctx, seg_block, NULL, 0, x, 3);
}

/* x also feeds ops outside the segment, before and after it */
static vlm_tensor *f_block_in_graph(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    vlm_tensor *a = vlm_tanh(ctx, x[0]);
    vlm_tensor *in[3] = {a, x[1], x[2]};
    return vlm_mul(ctx, vlm_checkpoint(ctx, seg_block, NULL, 0, in, 3), a);
}

static vlm_tensor *seg_inner(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n, (void)u;
    return vlm_tanh(ctx, vlm_linear(ctx, in[0], in[1], NULL));
}

/* two checkpointed segments inside a checkpointed segment */
static vlm_tensor *seg_outer(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n, (void)u;
    vlm_tensor *h = vlm_checkpoint(ctx, seg_inner, NULL, 0, in, 2);
    vlm_tensor *in2[2] = {vlm_dropout(ctx, h, 0.2f, true), in[1]};
    return vlm_add(ctx, vlm_checkpoint(ctx, seg_inner, NULL, 0, in2, 2), in[0]);
}

static vlm_tensor *f_nested(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_checkpoint(ctx, seg_outer, NULL, 0, x, 2);
}

/* clang-format off */
static const gc_case cases[] = {
    {"checkpoint", "ln-linear-gelu-dropout segment [2,3,4]", f_block, NULL, 3,
     {{3, {2, 3, 4}}, {2, {4, 4}}, {1, {4}}}},
    {"checkpoint", "segment between ops sharing its input", f_block_in_graph, NULL, 3,
     {{2, {5, 3}}, {2, {3, 3}}, {1, {3}}}},
    {"checkpoint", "nested segments [2,2,3]", f_nested, NULL, 2, {{3, {2, 2, 3}}, {2, {3, 3}}}},
};
/* clang-format on */
GC_REGISTER(cases)
