/* Gradient-check cases: attention (q, k, v all checked), rope. */
#include "gc.h"

#include <string.h>

/* A case's mask setup. pad_from > 0: key padding mask with keys >= pad_from
 * of batch row pad_b masked out. */
typedef struct {
    vlm_mask_kind kind;
    int64_t prefix_len;
    float scale;
    int64_t pad_b, pad_from;
} attn_case;

static vlm_tensor *f_attention(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const attn_case *c = u;
    vlm_attn_opts o = {.kind = c->kind, .prefix_len = c->prefix_len, .scale = c->scale};
    if (c->pad_from > 0) {
        int64_t B = x[1]->shape[0], Tk = x[1]->shape[1];
        o.key_mask = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){B, Tk});
        if (!o.key_mask) return NULL;
        uint8_t *m = o.key_mask->data;
        for (int64_t b = 0; b < B; b++)
            for (int64_t j = 0; j < Tk; j++)
                m[b * Tk + j] = b != c->pad_b || j < c->pad_from;
    }
    return vlm_attention(ctx, x[0], x[1], x[2], &o);
}

static attn_case none = {VLM_MASK_NONE}, causal = {VLM_MASK_CAUSAL};
static attn_case prefix3 = {VLM_MASK_PREFIX, 3}, prefix9 = {VLM_MASK_PREFIX, 9};
static attn_case none_scaled = {VLM_MASK_NONE, .scale = 0.8f};
static attn_case padded = {VLM_MASK_NONE, .pad_b = 1, .pad_from = 3};
static attn_case causal_padded = {VLM_MASK_CAUSAL, .pad_b = 0, .pad_from = 4};

/* q [B, Tq, Hq, D], k and v [B, Tk, Hkv, D] */
// clang-format off
#define QKV(B, Tq, Tk, Hq, Hkv, D) {{4, {B, Tq, Hq, D}}, {4, {B, Tk, Hkv, D}}, {4, {B, Tk, Hkv, D}}}
// clang-format on

static const gc_case attn_cases[] = {
    {"attention", "no mask, Tq 5 != Tk 6", f_attention, &none, 3, QKV(2, 5, 6, 2, 2, 4)},
    {"attention", "no mask, explicit scale 0.8", f_attention, &none_scaled, 3,
     QKV(1, 4, 5, 1, 1, 3)},
    {"attention", "causal, Tq == Tk", f_attention, &causal, 3, QKV(2, 6, 6, 2, 2, 4)},
    {"attention", "causal decode-style, Tq 3 < Tk 7", f_attention, &causal, 3,
     QKV(2, 3, 7, 2, 2, 4)},
    {"attention", "causal Tq 5 > Tk 3: 2 rows see nothing", f_attention, &causal, 3,
     QKV(1, 5, 3, 1, 1, 4)},
    {"attention", "prefix-LM, prefix 3 of 7", f_attention, &prefix3, 3, QKV(1, 7, 7, 2, 2, 4)},
    {"attention", "prefix 3, Tq 4 < Tk 8", f_attention, &prefix3, 3, QKV(2, 4, 8, 1, 1, 4)},
    {"attention", "key padding, batch 1 half padded", f_attention, &padded, 3,
     QKV(2, 5, 6, 1, 1, 4)},
    {"attention", "causal + key padding", f_attention, &causal_padded, 3, QKV(2, 6, 6, 2, 1, 4)},
    {"attention", "GQA Hq 4, Hkv 2, causal", f_attention, &causal, 3, QKV(1, 5, 5, 4, 2, 4)},
    {"attention", "GQA Hq 3, Hkv 1", f_attention, &none, 3, QKV(2, 4, 6, 3, 1, 4)},
    {"attention", "Tq 1 decode step, causal", f_attention, &causal, 3, QKV(2, 1, 5, 2, 2, 4)},
    {"attention", "Tq 1, no mask, GQA 4/2", f_attention, &none, 3, QKV(1, 1, 6, 4, 2, 4)},
    {"attention", "Tq = Tk = 70 (2 tiles), no mask", f_attention, &none, 3,
     QKV(1, 70, 70, 1, 1, 3)},
    {"attention", "Tq = Tk = 70 (2 tiles), causal", f_attention, &causal, 3,
     QKV(1, 70, 70, 1, 1, 3)},
    {"attention", "Tq 66 < Tk 70, prefix 9", f_attention, &prefix9, 3, QKV(1, 66, 70, 1, 1, 2)},
};
GC_REGISTER(attn_cases)

typedef struct {
    int64_t pos_offset;
    float theta;
} rope_case;

static vlm_tensor *f_rope(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const rope_case *c = u;
    return vlm_rope(ctx, x[0], c->pos_offset, c->theta);
}

static rope_case r0_1e4 = {0, 10000.0f}, r5_1e4 = {5, 10000.0f};
static rope_case r0_1e5 = {0, 100000.0f}, r5_1e5 = {5, 100000.0f};

static const gc_case rope_cases[] = {
    {"rope", "[1,3,2,4] pos 0, theta 1e4", f_rope, &r0_1e4, 1, {{4, {1, 3, 2, 4}}}},
    {"rope", "[2,5,3,8] pos 5, theta 1e4", f_rope, &r5_1e4, 1, {{4, {2, 5, 3, 8}}}},
    {"rope", "[1,4,1,2] pos 0, theta 1e5", f_rope, &r0_1e5, 1, {{4, {1, 4, 1, 2}}}},
    {"rope", "[2,3,2,6] pos 5, theta 1e5", f_rope, &r5_1e5, 1, {{4, {2, 3, 2, 6}}}},
    {"rope", "[1,7,1,16] pos 5, theta 1e4", f_rope, &r5_1e4, 1, {{4, {1, 7, 1, 16}}}},
};
GC_REGISTER(rope_cases)
