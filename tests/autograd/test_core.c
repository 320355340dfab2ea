/* test_core.c - dtypes and conversions, the arena, the parameter store, the
 * tape (accumulation across backward calls, no_grad, detach, frozen
 * parameters, errors), error messages and the gradient checker itself. */
#include "autograd.h"
#include "test.h"

#include <stdint.h>
#include <string.h>

static void test_bf16(void) {
    CHECK(vlm_f32_to_bf16(1.0f) == 0x3F80, "1.0 -> %#x", vlm_f32_to_bf16(1.0f));
    /* 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties go to even (1.0) */
    CHECK(vlm_f32_to_bf16(1.00390625f) == 0x3F80, "tie to even down");
    /* 1.0078125 + 2^-8 is halfway between 1.0078125 (odd) and 1.015625: rounds up */
    CHECK(vlm_f32_to_bf16(1.01171875f) == 0x3F82, "tie to even up");
    CHECK(vlm_f32_to_bf16(nextafterf(1.00390625f, 2.0f)) == 0x3F81, "above half rounds up");
    CHECK(vlm_bf16_to_f32(0xC040) == -3.0f, "-3");
    uint16_t nan = vlm_f32_to_bf16(NAN);
    CHECK(isnan(vlm_bf16_to_f32(nan)), "NaN stays NaN (%#x)", nan);
    CHECK(isinf(vlm_bf16_to_f32(vlm_f32_to_bf16(INFINITY))), "Inf stays Inf");
    CHECK(vlm_f32_to_bf16(3.4e38f) == 0x7F80, "largest floats round to Inf");
}

static void test_f16(void) {
    CHECK(vlm_f32_to_f16(1.0f) == 0x3C00, "1.0");
    CHECK(vlm_f32_to_f16(-2.0f) == 0xC000, "-2");
    CHECK(vlm_f32_to_f16(65504.0f) == 0x7BFF, "max half");
    CHECK(vlm_f32_to_f16(65519.0f) == 0x7BFF, "below the Inf threshold");
    CHECK(vlm_f32_to_f16(65520.0f) == 0x7C00, "rounds to Inf");
    CHECK(vlm_f32_to_f16(1e-8f) == 0, "underflow to 0");
    CHECK(vlm_f32_to_f16(5.960464477539063e-8f) == 1, "smallest subnormal");
    CHECK(vlm_f16_to_f32(1) == 5.960464477539063e-8f, "subnormal back");
    CHECK(vlm_f32_to_f16(1.0f + 1.0f / 2048) == 0x3C00, "tie to even");
    CHECK(vlm_f32_to_f16(1.0f + 3.0f / 2048) == 0x3C02, "tie to even up");
    CHECK(isnan(vlm_f16_to_f32(vlm_f32_to_f16(NAN))), "NaN");
    /* every finite half converts to f32 and back exactly */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7C00) == 0x7C00) continue;
        if (vlm_f32_to_f16(vlm_f16_to_f32((uint16_t)h)) != h) bad++;
    }
    CHECK(bad == 0, "%d halves do not round-trip", bad);
}

static void test_convert(void) {
    float f[4] = {1.4f, -2.6f, 300.0f, -5.0f};
    int32_t i[4];
    uint8_t u[4];
    vlm_convert(i, VLM_I32, f, VLM_F32, 4);
    CHECK(i[0] == 1 && i[1] == -3 && i[2] == 300 && i[3] == -5, "f32->i32 rounds");
    vlm_convert(u, VLM_U8, f, VLM_F32, 4);
    CHECK(u[0] == 1 && u[1] == 0 && u[2] == 255 && u[3] == 0, "f32->u8 saturates");
    uint16_t b[4];
    float back[4];
    vlm_convert(b, VLM_BF16, f, VLM_F32, 4);
    vlm_convert(back, VLM_F32, b, VLM_BF16, 4);
    CHECK(back[2] == 300.0f && fabsf(back[0] - 1.4f) < 0.01f, "bf16 round trip");
}

static void test_arena(void) {
    vlm_ctx *ctx = vlm_ctx_new(4096);
    void *a = vlm_arena_alloc(ctx, 10), *b = vlm_arena_alloc(ctx, 100000);
    CHECK(a && b && ((uintptr_t)a % 64) == 0 && ((uintptr_t)b % 64) == 0, "aligned");
    memset(b, 1, 100000); /* a request larger than a block gets its own block */
    size_t peak = vlm_arena_peak(ctx);
    vlm_ctx_reset(ctx);
    CHECK(vlm_arena_used(ctx) == 0, "reset frees");
    void *c = vlm_arena_alloc(ctx, 10);
    CHECK(c == a, "blocks are reused after reset");
    CHECK(vlm_arena_peak(ctx) == peak, "peak kept");
    int64_t bad_shape[2] = {-1, 3};
    CHECK(vlm_tensor_new(ctx, VLM_F32, 2, bad_shape) == NULL, "negative dim rejected");
    CHECK(strstr(vlm_last_error(), "dim") != NULL, "message: %s", vlm_last_error());
    int64_t five[5] = {1, 1, 1, 1, 1};
    CHECK(vlm_tensor_new(ctx, VLM_F32, 5, five) == NULL, "5 dims rejected");
    vlm_ctx_free(ctx);
}

static void test_params(void) {
    vlm_params *p = vlm_params_new();
    int64_t s1[2] = {2, 3}, s2[1] = {4};
    vlm_tensor *w = vlm_param_add(p, "layer.weight", 2, s1);
    vlm_tensor *b = vlm_param_add(p, "layer.bias", 1, s2);
    CHECK(w && b, "added");
    CHECK(vlm_param_add(p, "layer.bias", 1, s2) == NULL, "duplicate rejected");
    CHECK(strstr(vlm_last_error(), "layer.bias") != NULL, "message names it: %s", vlm_last_error());
    CHECK(vlm_params_finalize(p) == 0, "finalize");
    CHECK(vlm_params_numel(p) == 10, "numel");
    CHECK(vlm_f32(w) == vlm_params_values(p) && vlm_f32(b) == vlm_params_values(p) + 6,
          "views into one flat buffer");
    CHECK(w->grad == vlm_params_grads(p) && vlm_params_offset(p, b) == 6, "grad views");
    CHECK(vlm_params_find(p, "layer.weight") == w && vlm_params_find(p, "nope") == NULL, "find");
    CHECK(vlm_param_add(p, "late", 1, s2) == NULL, "no adds after finalize");
    vlm_params_free(p);
}

/* y = 3 w: two forward+backward rounds without zero_grad accumulate. */
static void test_tape_accumulation(void) {
    vlm_params *p = vlm_params_new();
    int64_t s[1] = {1};
    vlm_tensor *w = vlm_param_add(p, "w", 1, s);
    vlm_params_finalize(p);
    vlm_f32(w)[0] = 2.0f;
    vlm_ctx *ctx = vlm_ctx_new(0);
    for (int round = 0; round < 2; round++) {
        vlm_tensor *y = vlm_scale(ctx, w, 3.0f);
        CHECK(y && y->requires_grad && vlm_tape_len(ctx) == 1, "recorded");
        CHECK(vlm_backward(ctx, y) == 0, "backward: %s", vlm_last_error());
        CHECK(vlm_tape_len(ctx) == 0, "tape consumed");
        vlm_ctx_reset(ctx);
    }
    CHECK(w->grad[0] == 6.0f, "accumulated over two backward calls: %g", w->grad[0]);
    vlm_params_zero_grad(p);
    CHECK(w->grad[0] == 0.0f, "zero_grad");

    /* a tensor used twice: y = 3 (2 w) + nothing else; chain of two scales */
    vlm_tensor *z = vlm_scale(ctx, vlm_scale(ctx, w, 2.0f), 3.0f);
    CHECK(vlm_backward(ctx, z) == 0 && w->grad[0] == 6.0f, "chain rule: %g", w->grad[0]);
    vlm_params_zero_grad(p);

    /* no_grad records nothing */
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *n = vlm_scale(ctx, w, 3.0f);
    vlm_set_grad_enabled(ctx, prev);
    CHECK(n && !n->requires_grad && vlm_tape_len(ctx) == 0, "no_grad");
    CHECK(vlm_backward(ctx, n) != 0, "backward through nothing is an error");

    /* detach cuts the graph */
    vlm_tensor *d = vlm_detach(ctx, vlm_scale(ctx, w, 2.0f));
    vlm_tensor *e = vlm_scale(ctx, d, 3.0f);
    CHECK(e && !e->requires_grad, "detached");
    vlm_tape_truncate(ctx, 0);

    /* frozen parameter: no node, no grad */
    vlm_param_set_frozen(w, true);
    vlm_tensor *f = vlm_scale(ctx, w, 3.0f);
    CHECK(f && !f->requires_grad && vlm_tape_len(ctx) == 0, "frozen costs no tape");
    vlm_param_set_frozen(w, false);

    /* loss must be a scalar */
    int64_t s3[1] = {3};
    vlm_tensor *v = vlm_zeros(ctx, VLM_F32, 1, s3);
    v->requires_grad = true;
    vlm_tensor *v3 = vlm_scale(ctx, v, 1.0f);
    CHECK(vlm_backward(ctx, v3) != 0 && strstr(vlm_last_error(), "[3]"), "%s", vlm_last_error());
    vlm_tape_truncate(ctx, 0);

    /* an op on a wrong dtype fails with the op's name, and NULL propagates */
    vlm_tensor *ids = vlm_zeros(ctx, VLM_I32, 1, s3);
    CHECK(vlm_scale(ctx, ids, 2.0f) == NULL && strstr(vlm_last_error(), "scale"), "%s",
          vlm_last_error());
    CHECK(vlm_scale(ctx, NULL, 2.0f) == NULL, "NULL propagates");
    CHECK(vlm_backward(ctx, NULL) != 0, "backward(NULL) is an error");
    vlm_ctx_free(ctx);
    vlm_params_free(p);
}

/* Once the backward has consumed an op output's grad it is released (NULL)
 * and its buffer reused, so a chain of n equal ops holds two grads at a time,
 * not n; leaves keep theirs. vlm_ctx_retain_grads keeps every one. */
static void test_grad_release(void) {
    const int64_t n = 1 << 18, depth = 20;
    for (int retain = 0; retain < 2; retain++) {
        vlm_ctx *ctx = vlm_ctx_new(0);
        vlm_ctx_retain_grads(ctx, retain);
        vlm_tensor *x = vlm_zeros(ctx, VLM_F32, 1, &n);
        for (int64_t i = 0; i < n; i++) vlm_f32(x)[i] = (float)(i % 7);
        x->requires_grad = true;
        vlm_tensor *a = vlm_scale(ctx, x, 2.0f), *y = vlm_mul(ctx, a, a); /* a used twice */
        vlm_tensor *mid = y;
        for (int k = 0; k < depth; k++) y = vlm_scale(ctx, y, 1.0f);
        size_t before = vlm_arena_used(ctx);
        CHECK(vlm_backward(ctx, vlm_sum_all(ctx, y)) == 0, "backward: %s", vlm_last_error());
        size_t grads = vlm_arena_peak(ctx) - before;
        int64_t bad = 0; /* d sum((2x)^2) / dx = 8x */
        for (int64_t i = 0; x->grad && i < n; i++) bad += x->grad[i] != 8.0f * vlm_f32(x)[i];
        CHECK(x->grad && bad == 0, "leaf grad (retain %d): %lld wrong", retain, (long long)bad);
        CHECK(retain ? a->grad && mid->grad && y->grad : !a->grad && !mid->grad && !y->grad,
              "op outputs' grads %s", retain ? "kept" : "released");
        size_t one = (size_t)n * sizeof(float);
        printf("grad bytes in the arena over %lld chained ops (retain %d): %zu (%.1f grads)\n",
               (long long)depth + 2, retain, grads, (double)grads / (double)one);
        CHECK(retain ? grads > (size_t)depth * one : grads < 4 * one,
              "retain %d: %zu bytes of grads for %lld ops of %zu bytes", retain, grads,
              (long long)depth + 2, one);
        vlm_ctx_free(ctx);
    }
}

/* The checker catches a deliberately wrong backward and passes the right one. */
static vlm_tensor *f_scale(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    (void)u;
    return vlm_scale(ctx, x[0], 0.5f);
}

static void test_gradcheck_catches_mutation(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    int64_t s[2] = {4, 5};
    vlm_tensor *x = vlm_zeros(ctx, VLM_F32, 2, s);
    for (int i = 0; i < 20; i++) vlm_f32(x)[i] = 0.1f * (float)i - 1.0f;
    vlm_gc_report r;
    CHECK(vlm_gradcheck(f_scale, NULL, 1, &x, vlm_gc_default_tol(), 1, &r) == 1, "correct passes");
    for (int k = 0; k < 2; k++) {
        float factor = k ? 0.99f : 1.01f;
        vlm_debug_mutate_backward("scale", factor);
        int rc = vlm_gradcheck(f_scale, NULL, 1, &x, vlm_gc_default_tol(), 1, &r);
        vlm_debug_mutate_backward("scale", 1.0f);
        CHECK(rc == 0, "factor %g not caught (norm_rel_err %g)", factor, r.norm_rel_err);
        CHECK(fabs(r.norm_rel_err - 0.01) < 1e-3, "relative error %g ~ 1%%", r.norm_rel_err);
    }
    CHECK(vlm_debug_mutate_backward("no_such_op", 1.1f) != 0, "unknown op name");
    vlm_ctx_free(ctx);
}

/* A message that wraps the previous one (the usual "context: cause" chain)
 * reads its argument from the buffer it writes to. */
static void test_error_wrap(void) {
    vlm_set_error("cause %d", 42);
    vlm_set_error("context: %s", vlm_last_error());
    CHECK(strcmp(vlm_last_error(), "context: cause 42") == 0, "wrapped: \"%s\"", vlm_last_error());
    vlm_set_error("%s / %s", vlm_last_error(), vlm_last_error());
    CHECK(strcmp(vlm_last_error(), "context: cause 42 / context: cause 42") == 0, "twice: \"%s\"",
          vlm_last_error());
    vlm_clear_error();
    CHECK(vlm_last_error()[0] == 0, "cleared");
}

int main(void) {
    test_error_wrap();
    test_bf16();
    test_f16();
    test_convert();
    test_arena();
    test_params();
    test_tape_accumulation();
    test_grad_release();
    test_gradcheck_catches_mutation();
    return TEST_DONE();
}
