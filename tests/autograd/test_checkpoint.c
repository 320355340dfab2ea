/* test_checkpoint.c - gradient checkpointing (autograd/checkpoint.c):
 *  - a stack of transformer-like segments with dropout: loss, input and
 *    parameter grads and the RNG state after backward are BITWISE the same
 *    with and without checkpointing, flat and nested, with the segment's user
 *    data clobbered on the caller's stack between forward and backward, with
 *    parameters shared by several segments, and in bf16 mode with the mode
 *    switched before the backward (the replay uses the forward's mode);
 *  - the arena peak drops with checkpointing;
 *  - frozen / constant / mixed inputs, grad off, a tensor captured by user;
 *  - errors: bad arguments, a segment failing or changing shape on replay;
 *  - arena marks and rewinds across blocks. */
#include "autograd.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void fill(vlm_tensor *t, uint64_t seed, float scale) {
    for (int64_t i = 0; i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        vlm_f32(t)[i] = scale * (float)((seed >> 40) * (2.0 / 16777216.0) - 1.0);
    }
}

/* ---- a pre-LN MLP block as the segment ------------------------------------------- */

typedef struct {
    vlm_tensor *ln_w, *ln_b, *w1, *b1, *w2, *b2;
} block_p;

typedef struct {
    const block_p *p;
    float dropout;
    int nested; /* run the two halves as checkpointed segments of their own */
} block_user;

static vlm_tensor *seg_mlp(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    const block_user *b = u;
    vlm_tensor *h = vlm_layernorm(ctx, in[0], b->p->ln_w, b->p->ln_b, 1e-5f);
    return vlm_gelu(ctx, vlm_linear(ctx, h, b->p->w1, b->p->b1));
}

static vlm_tensor *seg_out(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    const block_user *b = u;
    vlm_tensor *f = vlm_linear(ctx, in[1], b->p->w2, b->p->b2);
    return vlm_add(ctx, in[0], vlm_dropout(ctx, f, b->dropout, true));
}

/* x + dropout(W2 gelu(W1 ln(x) + b1) + b2) */
static vlm_tensor *seg_block(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    const block_user *b = u;
    if (!b->nested) return seg_out(ctx, (vlm_tensor *[]){in[0], seg_mlp(ctx, in, n, u)}, 2, u);
    vlm_tensor *h = vlm_checkpoint(ctx, seg_mlp, b, sizeof *b, in, 1);
    return vlm_checkpoint(ctx, seg_out, b, sizeof *b, (vlm_tensor *[]){in[0], h}, 2);
}

static int declare_block(vlm_params *p, block_p *b, int d, int hidden, int idx) {
    char name[64];
    snprintf(name, sizeof name, "b%d.ln_w", idx);
    b->ln_w = vlm_param_add(p, name, 1, (int64_t[]){d});
    snprintf(name, sizeof name, "b%d.ln_b", idx);
    b->ln_b = vlm_param_add(p, name, 1, (int64_t[]){d});
    snprintf(name, sizeof name, "b%d.w1", idx);
    b->w1 = vlm_param_add(p, name, 2, (int64_t[]){hidden, d});
    snprintf(name, sizeof name, "b%d.b1", idx);
    b->b1 = vlm_param_add(p, name, 1, (int64_t[]){hidden});
    snprintf(name, sizeof name, "b%d.w2", idx);
    b->w2 = vlm_param_add(p, name, 2, (int64_t[]){d, hidden});
    snprintf(name, sizeof name, "b%d.b2", idx);
    b->b2 = vlm_param_add(p, name, 1, (int64_t[]){d});
    return b->ln_w && b->ln_b && b->w1 && b->b1 && b->w2 && b->b2 ? 0 : -1;
}

#define MAX_BLOCKS 8

typedef struct {
    vlm_params *params;
    block_p blocks[MAX_BLOCKS];
    int n_blocks;
    int64_t B, T, D;
} stack_model;

static int stack_new(stack_model *m, int n_blocks, int64_t B, int64_t T, int64_t D, int hidden) {
    memset(m, 0, sizeof *m);
    m->params = vlm_params_new();
    m->n_blocks = n_blocks, m->B = B, m->T = T, m->D = D;
    for (int l = 0; l < n_blocks; l++)
        if (declare_block(m->params, &m->blocks[l], (int)D, hidden, l)) return -1;
    if (vlm_params_finalize(m->params)) return -1;
    for (int i = 0; i < vlm_params_count(m->params); i++)
        fill(vlm_params_at(m->params, i), 100 + (uint64_t)i, 0.3f);
    return 0;
}

/* mode 0: plain, 1: each block checkpointed, 2: nested (each block's two
 * halves checkpointed inside the checkpointed block) */
typedef struct {
    float loss;
    float *x_grad, *p_grad;
    uint64_t rng_fwd, rng_bwd;
    size_t peak, tape_after;
    int rc;
} run_result;

/* x0 -> a = tanh(x0) -> blocks -> loss = mean(h * a): a is used by the first
 * segment and again after the last, so its grad sums contributions from both
 * sides of the checkpoints. Block l reuses block l % 2's parameters when
 * share is set (a parameter in several segments). */
static vlm_tensor *stack_forward(vlm_ctx *ctx, const stack_model *m, vlm_tensor *x0, int mode,
                                 bool share) {
    vlm_tensor *a = vlm_tanh(ctx, x0), *h = a;
    for (int l = 0; l < m->n_blocks; l++) {
        block_user u = {&m->blocks[share ? l % 2 : l], 0.2f, mode == 2};
        if (mode == 0)
            h = seg_block(ctx, &h, 1, &u);
        else
            h = vlm_checkpoint(ctx, seg_block, &u, sizeof u, &h, 1);
        memset(&u, 0xA5, sizeof u); /* the checkpoint must have copied it */
    }
    return vlm_mean_all(ctx, vlm_mul(ctx, h, a));
}

static uint64_t run_seed = 1234;
/* precision mode of the forward, and the one set before the backward */
static vlm_precision run_prec = VLM_PREC_F32, run_bwd_prec = VLM_PREC_F32;

static run_result run_stack(const stack_model *m, int mode, bool share) {
    run_result r = {0};
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_params_zero_grad(m->params);
    vlm_ctx_seed(ctx, run_seed);
    vlm_ctx_set_precision(ctx, run_prec);
    vlm_tensor *x0 = vlm_tensor_new(ctx, VLM_F32, 3, (int64_t[]){m->B, m->T, m->D});
    fill(x0, 7, 1.0f);
    x0->requires_grad = true;
    vlm_tensor *loss = stack_forward(ctx, m, x0, mode, share);
    r.rng_fwd = vlm_ctx_rng_state(ctx);
    vlm_ctx_set_precision(ctx, run_bwd_prec);
    r.rc = vlm_backward(ctx, loss);
    if (r.rc) fprintf(stderr, "backward: %s\n", vlm_last_error());
    r.rng_bwd = vlm_ctx_rng_state(ctx);
    r.peak = vlm_arena_peak(ctx);
    r.tape_after = vlm_tape_len(ctx);
    if (loss) r.loss = vlm_f32(loss)[0];
    size_t xb = (size_t)x0->numel * sizeof(float);
    size_t pb = (size_t)vlm_params_numel(m->params) * sizeof(float);
    r.x_grad = malloc(xb), r.p_grad = malloc(pb);
    if (r.x_grad && x0->grad) memcpy(r.x_grad, x0->grad, xb);
    if (r.p_grad) memcpy(r.p_grad, vlm_params_grads(m->params), pb);
    vlm_ctx_free(ctx);
    return r;
}

static void test_bitwise(bool share) {
    stack_model m;
    CHECK(stack_new(&m, 4, 2, 5, 8, 16) == 0, "model: %s", vlm_last_error());
    size_t xb = (size_t)(m.B * m.T * m.D) * sizeof(float);
    size_t pb = (size_t)vlm_params_numel(m.params) * sizeof(float);
    run_result ref = run_stack(&m, 0, share);
    CHECK(ref.rc == 0 && ref.loss != 0, "reference run");
    for (int mode = 1; mode <= 2; mode++) {
        run_result r = run_stack(&m, mode, share);
        const char *what = mode == 1 ? "checkpointed" : "nested";
        CHECK(r.rc == 0 && r.tape_after == 0, "%s: backward rc %d, tape %zu", what, r.rc,
              r.tape_after);
        CHECK(memcmp(&r.loss, &ref.loss, sizeof r.loss) == 0, "%s: loss %.9g vs %.9g", what,
              (double)r.loss, (double)ref.loss);
        CHECK(memcmp(r.x_grad, ref.x_grad, xb) == 0, "%s: input grads differ", what);
        CHECK(memcmp(r.p_grad, ref.p_grad, pb) == 0, "%s: parameter grads differ", what);
        CHECK(r.rng_fwd == ref.rng_fwd && r.rng_bwd == ref.rng_bwd && r.rng_bwd == r.rng_fwd,
              "%s: RNG after forward %llx/%llx, after backward %llx/%llx", what,
              (unsigned long long)r.rng_fwd, (unsigned long long)ref.rng_fwd,
              (unsigned long long)r.rng_bwd, (unsigned long long)ref.rng_bwd);
        free(r.x_grad), free(r.p_grad);
    }
    /* dropout really was on: another seed changes the loss */
    run_seed = 99;
    run_result other = run_stack(&m, 0, share);
    run_seed = 1234;
    CHECK(other.loss != ref.loss, "dropout masks depend on the seed");
    free(other.x_grad), free(other.p_grad);
    free(ref.x_grad), free(ref.p_grad);
    vlm_params_free(m.params);
}

/* bf16 forward, mode switched to f32 before the backward: the replay must
 * run in the forward's mode (as every other node's backward does) */
static void test_precision(void) {
    run_prec = VLM_PREC_BF16, run_bwd_prec = VLM_PREC_F32;
    test_bitwise(false);
    run_prec = run_bwd_prec = VLM_PREC_F32;
}

static void test_peak(void) {
    stack_model m;
    /* 8 blocks: the backward releases each grad once consumed, so without
     * checkpointing the peak is the activations plus about one block's grads,
     * and keeping one block's recomputation instead pays off with depth */
    CHECK(stack_new(&m, 8, 4, 32, 64, 256) == 0, "model: %s", vlm_last_error());
    run_result plain = run_stack(&m, 0, false), ck = run_stack(&m, 1, false);
    CHECK(ck.rc == 0 && plain.rc == 0, "runs");
    CHECK(memcmp(&ck.loss, &plain.loss, sizeof ck.loss) == 0, "loss");
    CHECK(ck.peak * 2 < plain.peak, "arena peak %zu with checkpointing, %zu without", ck.peak,
          plain.peak);
    printf("8 blocks [4,32,64] mlp 256: arena peak %zu bytes plain, %zu checkpointed\n",
           plain.peak, ck.peak);
    free(plain.x_grad), free(plain.p_grad), free(ck.x_grad), free(ck.p_grad);
    vlm_params_free(m.params);
}

/* ---- inputs that do not require grad, grad off, captured tensors ------------------- */

static vlm_tensor *seg_scale_add(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    const block_p *p = u;
    vlm_tensor *h = vlm_tanh(ctx, vlm_linear(ctx, in[0], p->w1, p->b1));
    return vlm_add(ctx, vlm_linear(ctx, h, p->w2, NULL), in[1]);
}

static vlm_tensor *make(vlm_ctx *ctx, int64_t r, int64_t c, uint64_t seed, bool grad) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, 2, (int64_t[]){r, c});
    fill(t, seed, 1.0f);
    t->requires_grad = grad;
    return t;
}

static void test_frozen_and_constant(void) {
    stack_model m;
    CHECK(stack_new(&m, 1, 1, 6, 8, 32) == 0, "model: %s", vlm_last_error());
    const block_p *p = &m.blocks[0];
    for (int i = 0; i < vlm_params_count(m.params); i++)
        vlm_param_set_frozen(vlm_params_at(m.params, i), true);
    /* frozen parameters, data inputs: no node, same output, intermediates released */
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *in[2] = {make(ctx, 6, 8, 1, false), make(ctx, 6, 8, 2, false)};
    size_t used0 = vlm_arena_used(ctx);
    vlm_tensor *ref = seg_scale_add(ctx, in, 2, p);
    size_t plain_used = vlm_arena_used(ctx) - used0;
    used0 = vlm_arena_used(ctx);
    vlm_tensor *y = vlm_checkpoint(ctx, seg_scale_add, p, 0, in, 2);
    size_t ck_used = vlm_arena_used(ctx) - used0;
    CHECK(y && !y->requires_grad && vlm_tape_len(ctx) == 0, "frozen: no node");
    CHECK(y && !memcmp(y->data, ref->data, (size_t)ref->numel * 4), "frozen: same output");
    CHECK(ck_used < plain_used / 2, "frozen: %zu bytes kept vs %zu", ck_used, plain_used);
    /* trainable parameters, data inputs: f records as usual, same grads */
    for (int i = 0; i < vlm_params_count(m.params); i++)
        vlm_param_set_frozen(vlm_params_at(m.params, i), false);
    float *g_ref = malloc((size_t)vlm_params_numel(m.params) * 4);
    for (int pass = 0; pass < 2; pass++) {
        vlm_params_zero_grad(m.params);
        y = pass ? vlm_checkpoint(ctx, seg_scale_add, p, 0, in, 2) : seg_scale_add(ctx, in, 2, p);
        CHECK(y && y->requires_grad && vlm_tape_len(ctx) > 1, "constant inputs: recorded");
        CHECK(vlm_backward(ctx, vlm_sum_all(ctx, y)) == 0, "%s", vlm_last_error());
        if (!pass) memcpy(g_ref, vlm_params_grads(m.params), (size_t)vlm_params_numel(m.params) * 4);
    }
    CHECK(!memcmp(g_ref, vlm_params_grads(m.params), (size_t)vlm_params_numel(m.params) * 4),
          "constant inputs: parameter grads");
    /* grad off: nothing recorded even though the parameters require grad */
    bool prev = vlm_set_grad_enabled(ctx, false);
    in[0]->requires_grad = true;
    y = vlm_checkpoint(ctx, seg_scale_add, p, 0, in, 2);
    CHECK(y && !y->requires_grad && vlm_tape_len(ctx) == 0, "grad off: no node");
    vlm_set_grad_enabled(ctx, prev);
    free(g_ref);
    vlm_ctx_free(ctx);
    vlm_params_free(m.params);
}

/* in[0] requires grad, in[1] does not and must get no grad buffer */
static void test_mixed_inputs(void) {
    stack_model m;
    CHECK(stack_new(&m, 1, 1, 6, 8, 32) == 0, "model: %s", vlm_last_error());
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *in[2] = {make(ctx, 6, 8, 1, true), make(ctx, 6, 8, 2, false)};
    float ref[48];
    for (int pass = 0; pass < 2; pass++) {
        in[0]->grad = NULL;
        vlm_tensor *y = pass ? vlm_checkpoint(ctx, seg_scale_add, &m.blocks[0], 0, in, 2)
                             : seg_scale_add(ctx, in, 2, &m.blocks[0]);
        CHECK(vlm_backward(ctx, vlm_sum_all(ctx, vlm_mul(ctx, y, y))) == 0, "%s", vlm_last_error());
        if (!pass) memcpy(ref, in[0]->grad, sizeof ref);
    }
    CHECK(!memcmp(ref, in[0]->grad, sizeof ref), "mixed: grad of the input requiring it");
    CHECK(in[1]->grad == NULL, "mixed: no grad for the constant input");
    vlm_ctx_free(ctx);
    vlm_params_free(m.params);
}

/* A non-parameter tensor that requires grad reached through user, not as an
 * input: it still gets its grad, and the buffer survives (no rewind). */
typedef struct {
    vlm_tensor *c;
} captured_user;

static vlm_tensor *seg_captured(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    const captured_user *cu = u;
    return vlm_tanh(ctx, vlm_mul(ctx, vlm_gelu(ctx, in[0]), cu->c));
}

/* the same inside an outer segment: the inner keeps its recomputation, so
 * the outer must keep its own, which contains it */
static vlm_tensor *seg_captured_outer(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    vlm_tensor *h = vlm_checkpoint(ctx, seg_captured, u, sizeof(captured_user), in, 1);
    return vlm_add(ctx, vlm_sigmoid(ctx, h), in[0]);
}

static vlm_tensor *captured_forward(vlm_ctx *ctx, vlm_tensor *x, const captured_user *cu,
                                    int mode) {
    if (mode == 0) return seg_captured(ctx, &x, 1, cu);
    if (mode == 1) return vlm_checkpoint(ctx, seg_captured, cu, sizeof *cu, &x, 1);
    if (mode == 2) return vlm_add(ctx, vlm_sigmoid(ctx, seg_captured(ctx, &x, 1, cu)), x);
    return vlm_checkpoint(ctx, seg_captured_outer, cu, sizeof *cu, &x, 1);
}

static void test_captured(int nested) {
    vlm_ctx *ctx = vlm_ctx_new(4096);
    vlm_tensor *x = make(ctx, 4, 16, 3, true), *c = make(ctx, 4, 16, 4, true);
    captured_user cu = {c};
    float ref[64], got[64];
    for (int pass = 0; pass < 2; pass++) {
        x->grad = c->grad = NULL;
        vlm_tensor *y = captured_forward(ctx, x, &cu, 2 * nested + pass);
        CHECK(vlm_backward(ctx, vlm_sum_all(ctx, vlm_mul(ctx, y, x))) == 0, "%s",
              vlm_last_error());
        if (!pass) memcpy(ref, c->grad, sizeof ref);
    }
    memcpy(got, c->grad, sizeof got);
    for (int i = 0; i < 8; i++) { /* anything released would be overwritten here */
        float *junk = vlm_arena_alloc(ctx, 1024);
        for (int j = 0; j < 256; j++) junk[j] = 1e30f;
    }
    CHECK(!memcmp(ref, got, sizeof ref), "captured (nested %d): same grad", nested);
    CHECK(!memcmp(got, c->grad, sizeof got), "captured (nested %d): grad buffer kept alive",
          nested);
    vlm_ctx_free(ctx);
}

/* A recomputation longer than the tape's capacity: the tape is reallocated
 * while the checkpoint node's backward runs (it must not hold on to the node). */
static vlm_tensor *seg_long(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n, (void)u;
    vlm_tensor *h = in[0];
    for (int i = 0; i < 1500 && h; i++) h = i % 2 ? vlm_scale(ctx, h, 1.001f) : vlm_tanh(ctx, h);
    return h;
}

static void test_tape_growth(void) {
    float grads[2][6];
    for (int pass = 0; pass < 2; pass++) { /* a fresh context: the tape starts small */
        vlm_ctx *ctx = vlm_ctx_new(0);
        vlm_tensor *x = make(ctx, 2, 3, 8, true);
        vlm_tensor *y = pass ? vlm_checkpoint(ctx, seg_long, NULL, 0, &x, 1)
                             : seg_long(ctx, &x, 1, NULL);
        CHECK(vlm_tape_len(ctx) == (pass ? 1u : 1500u), "tape %zu", vlm_tape_len(ctx));
        CHECK(vlm_backward(ctx, vlm_sum_all(ctx, y)) == 0, "%s", vlm_last_error());
        memcpy(grads[pass], x->grad, sizeof grads[pass]);
        vlm_ctx_free(ctx);
    }
    CHECK(!memcmp(grads[0], grads[1], sizeof grads[0]), "long segment: same grads");
}

/* ---- errors ---------------------------------------------------------------------- */

typedef struct {
    int calls, fail_on;
    bool change_shape;
} flaky_user;

static vlm_tensor *seg_flaky(vlm_ctx *ctx, vlm_tensor *const *in, int n, const void *u) {
    (void)n;
    flaky_user *f = (flaky_user *)u; /* user_size 0: the caller's struct, counted */
    if (++f->calls == f->fail_on) {
        vlm_set_error("flaky segment failed on call %d", f->calls);
        return NULL;
    }
    vlm_tensor *y = vlm_dropout(ctx, vlm_tanh(ctx, in[0]), 0.5f, true);
    if (f->change_shape && f->calls > 1) y = vlm_slice(ctx, y, 0, 0, 1);
    return y;
}

static void test_errors(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x = make(ctx, 3, 4, 5, true);
    flaky_user f = {0, 2, false};
    CHECK(!vlm_checkpoint(ctx, NULL, NULL, 0, &x, 1) && strstr(vlm_last_error(), "checkpoint"),
          "no function: %s", vlm_last_error());
    CHECK(!vlm_checkpoint(ctx, seg_flaky, &f, 0, &x, 0), "0 inputs");
    CHECK(!vlm_checkpoint(ctx, seg_flaky, &f, 0, (vlm_tensor *[9]){x}, 9), "9 inputs");
    CHECK(!vlm_checkpoint(ctx, seg_flaky, NULL, 8, &x, 1), "user_size without user");
    vlm_set_error("earlier");
    CHECK(!vlm_checkpoint(ctx, seg_flaky, &f, 0, (vlm_tensor *[1]){NULL}, 1) &&
              !strcmp(vlm_last_error(), "earlier"),
          "NULL input passes through: %s", vlm_last_error());
    CHECK(f.calls == 0, "no call on bad arguments");

    /* the segment fails when re-run in backward */
    vlm_tensor *y = vlm_checkpoint(ctx, seg_flaky, &f, 0, &x, 1);
    uint64_t rng = vlm_ctx_rng_state(ctx);
    CHECK(y && vlm_backward(ctx, vlm_sum_all(ctx, y)) == -1, "backward fails");
    CHECK(strstr(vlm_last_error(), "checkpoint") && strstr(vlm_last_error(), "flaky segment"),
          "error: %s", vlm_last_error());
    CHECK(vlm_tape_len(ctx) == 0 && vlm_grad_enabled(ctx) && vlm_ctx_rng_state(ctx) == rng,
          "state restored after the failure");

    /* a different shape on replay */
    flaky_user g = {0, 0, true};
    y = vlm_checkpoint(ctx, seg_flaky, &g, 0, &x, 1);
    CHECK(y && vlm_backward(ctx, vlm_sum_all(ctx, y)) == -1 &&
              strstr(vlm_last_error(), "deterministic"),
          "shape change: %s", vlm_last_error());
    CHECK(vlm_tape_len(ctx) == 0, "tape empty");
    vlm_ctx_free(ctx);
}

/* ---- arena marks ------------------------------------------------------------------- */

static void test_arena_marks(void) {
    vlm_ctx *ctx = vlm_ctx_new(4096);
    vlm_arena_pos start = vlm_arena_mark(ctx); /* before any block exists */
    void *first = vlm_arena_alloc(ctx, 100);
    vlm_arena_rewind(ctx, start);
    CHECK(vlm_arena_used(ctx) == 0 && vlm_arena_alloc(ctx, 100) == first, "rewind to empty");
    vlm_arena_pos mid = vlm_arena_mark(ctx);
    size_t used = vlm_arena_used(ctx);
    void *next = vlm_arena_alloc(ctx, 1000);
    for (int i = 0; i < 10; i++) vlm_arena_alloc(ctx, 3000); /* spills into more blocks */
    vlm_arena_alloc(ctx, 20000);                                /* a block of its own */
    size_t peak = vlm_arena_peak(ctx);
    vlm_arena_pos inner = vlm_arena_mark(ctx);
    vlm_arena_alloc(ctx, 5000);
    vlm_arena_rewind(ctx, inner);
    vlm_arena_rewind(ctx, mid);
    CHECK(vlm_arena_used(ctx) == used, "used back to %zu, got %zu", used, vlm_arena_used(ctx));
    CHECK(vlm_arena_peak(ctx) >= peak, "peak kept");
    CHECK(vlm_arena_alloc(ctx, 1000) == next, "memory after the mark is reused");
    for (int i = 0; i < 10; i++) { /* the kept blocks are reused, memory is writable */
        char *p = vlm_arena_alloc(ctx, 3000);
        CHECK(p != NULL, "alloc");
        if (p) memset(p, i, 3000);
    }
    vlm_ctx_reset(ctx);
    CHECK(vlm_arena_used(ctx) == 0, "reset");
    vlm_ctx_free(ctx);
}

int main(void) {
    test_arena_marks();
    test_bitwise(false);
    test_bitwise(true);
    test_precision();
    test_peak();
    test_frozen_and_constant();
    test_mixed_inputs();
    test_captured(0);
    test_captured(1);
    test_tape_growth();
    test_errors();
    return TEST_DONE();
}
