/* Gradient-check cases: cross_entropy, siglip_loss. */
#include "gc.h"

typedef struct {
    int64_t n;
    int32_t labels[8];
    int32_t ignore_index;
    float smoothing;
} ce_spec;

/* Rows 2 and 5 are ignored, so their grads must stay 0 and the mean divides by 5. */
static const ce_spec CE_PLAIN = {7, {3, 0, -100, 4, 3, -100, 1}, -100, 0.0f};
static const ce_spec CE_SMOOTH = {7, {3, 0, -100, 6, 3, -100, 1}, -100, 0.1f};
/* An ignore_index that is also a valid class. */
static const ce_spec CE_IGNORE_CLASS = {5, {2, 0, 2, 4, 1}, 2, 0.1f};

static vlm_tensor *f_cross_entropy(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const ce_spec *s = u;
    vlm_tensor *labels = vlm_tensor_from(ctx, VLM_I32, 1, &s->n, s->labels);
    return vlm_cross_entropy(ctx, x[0], labels, s->ignore_index, s->smoothing);
}

typedef struct {
    int64_t n, m;
    const int32_t *txt_class, *img_class; /* NULL: the diagonal */
} siglip_spec;

/* txt 0 and 2 share class 0 with images 0 and 2: two positives in those rows. */
static const int32_t CLS4[] = {0, 1, 0, 2};
/* N != M: texts 0 and 1 have two positives each, text 2 (class 3) has none. */
static const int32_t TXT3[] = {1, 0, 3}, IMG5[] = {0, 1, 0, 2, 1};
static const siglip_spec SG_DIAG = {4, 4, NULL, NULL};
static const siglip_spec SG_SHARED = {4, 4, CLS4, CLS4};
static const siglip_spec SG_RECT = {3, 5, TXT3, IMG5};

static vlm_tensor *f_siglip(vlm_ctx *ctx, vlm_tensor **x, void *u) {
    const siglip_spec *s = u;
    vlm_tensor *match = NULL;
    if (s->txt_class) {
        uint8_t m[64];
        for (int64_t i = 0; i < s->n; i++)
            for (int64_t j = 0; j < s->m; j++)
                m[i * s->m + j] = s->txt_class[i] == s->img_class[j];
        match = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){s->n, s->m}, m);
        if (!match) return NULL;
    }
    return vlm_siglip_loss(ctx, x[0], x[1], x[2], x[3], match);
}

/* clang-format off */
static const gc_case cases[] = {
    {"cross_entropy", "[7,5] ignore -100, no smoothing", f_cross_entropy, (void *)&CE_PLAIN, 1,
     {{2, {7, 5}, -3, 3}}},
    {"cross_entropy", "[7,7] ignore -100, smoothing 0.1", f_cross_entropy, (void *)&CE_SMOOTH, 1,
     {{2, {7, 7}, -3, 3}}},
    {"cross_entropy", "[5,5] ignore class 2, smoothing 0.1", f_cross_entropy,
     (void *)&CE_IGNORE_CLASS, 1, {{2, {5, 5}, -3, 3}}},

    {"siglip_loss", "[4,5] diagonal", f_siglip, (void *)&SG_DIAG, 4,
     {{2, {4, 5}}, {2, {4, 5}}, {1, {1}}, {1, {1}}}},
    {"siglip_loss", "[4,5] mask, shared classes", f_siglip, (void *)&SG_SHARED, 4,
     {{2, {4, 5}}, {2, {4, 5}}, {1, {1}}, {1, {1}}}},
    {"siglip_loss", "txt [3,5] img [5,5] mask", f_siglip, (void *)&SG_RECT, 4,
     {{2, {3, 5}}, {2, {5, 5}}, {1, {1}}, {1, {1}}}},
};
/* clang-format on */
GC_REGISTER(cases)
