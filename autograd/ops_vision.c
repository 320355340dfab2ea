/* ops_vision.c - image and token-grid layout ops: patchify (the im2col of a
 * stride = kernel conv) and pixel shuffle (space-to-depth on a token grid).
 *
 * Both are pure gathers that copy runs of contiguous elements (a patch row of
 * p pixels, a token of D features), so forwards work for every dtype. Each
 * input element lands in exactly one output element, so the backwards are the
 * same walks with dx += dy and parallelise over disjoint blocks. */
#include "internal.h"

#include <inttypes.h>
#include <math.h>
#include <string.h>

/* dst[i] += src[i] for a run of n floats. */
static void add_run(float *restrict dst, const float *restrict src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* ---- patchify: y[b, ph*GW + pw, (c*p + kh)*p + kw] = x[b, c, ph*p + kh, pw*p + kw]
 *      dx[b, c, h, w] += dy at the same index pair ----------------------------- */

typedef struct {
    int64_t B, C, H, W, p, GH, GW;
} patch_dims;

/* Element offsets of the p-pixel run (b, ph, pw, c, kh) in the output and the image. */
static inline int64_t patch_out_off(const patch_dims *g, int64_t bph, int64_t pw, int64_t c,
                                    int64_t kh) {
    return ((bph * g->GW + pw) * g->C + c) * g->p * g->p + kh * g->p;
}
static inline int64_t patch_img_off(const patch_dims *g, int64_t bph, int64_t pw, int64_t c,
                                    int64_t kh) {
    int64_t b = bph / g->GH, ph = bph % g->GH;
    return ((b * g->C + c) * g->H + ph * g->p + kh) * g->W + pw * g->p;
}

vlm_tensor *vlm_patchify(vlm_ctx *ctx, vlm_tensor *img, int patch) {
    VLM_PROPAGATE_NULL(img);
    char s[64];
    if (img->ndim != 4) {
        vlm_set_error("patchify: image must be [B, C, H, W], got %s",
                      vlm_shape_str(img, s, sizeof s));
        return NULL;
    }
    if (patch < 1 || img->shape[2] % patch || img->shape[3] % patch) {
        vlm_set_error("patchify: H and W of image %s must be multiples of patch %d",
                      vlm_shape_str(img, s, sizeof s), patch);
        return NULL;
    }
    patch_dims g = {img->shape[0], img->shape[1], img->shape[2], img->shape[3], patch,
                    img->shape[2] / patch, img->shape[3] / patch};
    vlm_tensor *y = vlm_tensor_new(ctx, img->dtype, 3,
                                   (int64_t[]){g.B, g.GH * g.GW, g.C * g.p * g.p});
    if (!y) return NULL;
    const size_t es = vlm_dtype_size(img->dtype), run = (size_t)g.p * es;
    char *dst = y->data;
    const char *src = img->data;
#pragma omp parallel for if (img->numel >= VLM_PAR_MIN)
    for (int64_t bph = 0; bph < g.B * g.GH; bph++)
        for (int64_t pw = 0; pw < g.GW; pw++)
            for (int64_t c = 0; c < g.C; c++)
                for (int64_t kh = 0; kh < g.p; kh++)
                    memcpy(dst + (size_t)patch_out_off(&g, bph, pw, c, kh) * es,
                           src + (size_t)patch_img_off(&g, bph, pw, c, kh) * es, run);
    VLM_RECORD(node, ctx, VLM_OP_PATCHIFY, y, &img, 1);
    if (node) node->iarg[0] = patch;
    return y;
}

int vlm_patchify_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *img = node->in[0];
    const int64_t p = node->iarg[0];
    patch_dims g = {img->shape[0], img->shape[1], img->shape[2], img->shape[3], p,
                    img->shape[2] / p, img->shape[3] / p};
    const float *dy = node->out->grad;
    /* one (b, ph) block owns image rows ph*p .. ph*p + p - 1 of batch b */
#pragma omp parallel for if (img->numel >= VLM_PAR_MIN)
    for (int64_t bph = 0; bph < g.B * g.GH; bph++)
        for (int64_t pw = 0; pw < g.GW; pw++)
            for (int64_t c = 0; c < g.C; c++)
                for (int64_t kh = 0; kh < g.p; kh++)
                    add_run(dx + patch_img_off(&g, bph, pw, c, kh),
                            dy + patch_out_off(&g, bph, pw, c, kh), g.p);
    return 0;
}

/* ---- pixel_shuffle: y[b, i*G + j, (di*s + dj)*D + d] = x[b, (i*s + di)*g + j*s + dj, d]
 *      with g = sqrt(N), G = g / s;  dx += dy at the same index pair -------------- */

static int64_t isqrt64(int64_t n) {
    int64_t r = (int64_t)sqrt((double)n);
    while (r > 0 && r * r > n) r--;
    while ((r + 1) * (r + 1) <= n) r++;
    return r;
}

/* N = g*g tokens of D features, G = g / s. The offsets below locate one
 * D-feature run: slot (di, dj) of output token bi*G + j (bi = b*G + i), and
 * the input token it comes from. */
typedef struct {
    int64_t N, D, g, G, s;
} shuffle_dims;

static inline int64_t shuffle_out_off(const shuffle_dims *q, int64_t bi, int64_t j, int64_t di,
                                      int64_t dj) {
    return ((bi * q->G + j) * q->s * q->s + di * q->s + dj) * q->D;
}
static inline int64_t shuffle_in_off(const shuffle_dims *q, int64_t bi, int64_t j, int64_t di,
                                     int64_t dj) {
    int64_t b = bi / q->G, i = bi % q->G;
    return (b * q->N + (i * q->s + di) * q->g + j * q->s + dj) * q->D;
}

static bool pixel_shuffle_ok(const vlm_tensor *x, int s, int64_t *side) {
    char b[64];
    if (x->ndim != 3) {
        vlm_set_error("pixel_shuffle: x must be [B, N, D], got %s", vlm_shape_str(x, b, sizeof b));
        return false;
    }
    *side = isqrt64(x->shape[1]);
    if (*side * *side != x->shape[1]) {
        vlm_set_error("pixel_shuffle: N = %" PRId64 " tokens of x %s is not a square grid",
                      x->shape[1], vlm_shape_str(x, b, sizeof b));
        return false;
    }
    if (s < 1 || *side % s) {
        vlm_set_error("pixel_shuffle: grid side %" PRId64 " of x %s is not divisible by s = %d",
                      *side, vlm_shape_str(x, b, sizeof b), s);
        return false;
    }
    return true;
}

vlm_tensor *vlm_pixel_shuffle(vlm_ctx *ctx, vlm_tensor *x, int s) {
    VLM_PROPAGATE_NULL(x);
    int64_t side;
    if (!pixel_shuffle_ok(x, s, &side)) return NULL;
    const int64_t B = x->shape[0];
    shuffle_dims q = {x->shape[1], x->shape[2], side, side / s, s};
    vlm_tensor *y = vlm_tensor_new(ctx, x->dtype, 3, (int64_t[]){B, q.G * q.G, q.D * s * s});
    if (!y) return NULL;
    const size_t es = vlm_dtype_size(x->dtype), run = (size_t)q.D * es;
    char *dst = y->data;
    const char *src = x->data;
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t bi = 0; bi < B * q.G; bi++)
        for (int64_t j = 0; j < q.G; j++)
            for (int64_t di = 0; di < s; di++)
                for (int64_t dj = 0; dj < s; dj++)
                    memcpy(dst + (size_t)shuffle_out_off(&q, bi, j, di, dj) * es,
                           src + (size_t)shuffle_in_off(&q, bi, j, di, dj) * es, run);
    VLM_RECORD(node, ctx, VLM_OP_PIXEL_SHUFFLE, y, &x, 1);
    if (node) node->iarg[0] = s;
    return y;
}

int vlm_pixel_shuffle_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *x = node->in[0];
    const int64_t s = node->iarg[0], side = isqrt64(x->shape[1]);
    shuffle_dims q = {x->shape[1], x->shape[2], side, side / s, s};
    const float *dy = node->out->grad;
    /* one (b, i) block owns input grid rows i*s .. i*s + s - 1 of batch b */
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t bi = 0; bi < x->shape[0] * q.G; bi++)
        for (int64_t j = 0; j < q.G; j++)
            for (int64_t di = 0; di < s; di++)
                for (int64_t dj = 0; dj < s; dj++)
                    add_run(dx + shuffle_in_off(&q, bi, j, di, dj),
                            dy + shuffle_out_off(&q, bi, j, di, dj), q.D);
    return 0;
}
