/* embed.c - a bundle's embeddings (image, text, fused), zero-shot class
 * vectors and captions, computed a batch at a time under no-grad. Each batch
 * is released (arena rewind) before the next, so memory stays at one batch. */
#include "infer.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_BATCH 32

/* Runs f on rows [i, i + n) for every batch; the arena is rewound after each
 * and grad mode is off throughout. */
typedef int (*batch_fn)(vlm_ctx *ctx, const vlm_bundle *b, int64_t i, int n, void *user);

static int batched(vlm_ctx *ctx, const vlm_bundle *b, int64_t total, int batch, batch_fn f,
                   void *user) {
    if (!ctx || !b || total < 0) return vlm_set_error("embed: NULL context or bundle");
    if (batch <= 0) batch = DEFAULT_BATCH;
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_arena_pos mark = vlm_arena_mark(ctx);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < total; i += batch) {
        rc = f(ctx, b, i, (int)(total - i < batch ? total - i : batch), user);
        vlm_arena_rewind(ctx, mark);
    }
    vlm_set_grad_enabled(ctx, prev);
    return rc;
}

static int copy_rows(const vlm_tensor *t, float *out) {
    if (!t) return -1;
    memcpy(out, t->data, (size_t)t->numel * sizeof(float));
    return 0;
}

static vlm_tensor *pixels_tensor(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels, int n) {
    int S = b->image.size;
    return vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){n, 3, S, S}, pixels);
}

/* ids [n, ctx_len] and mask for texts[0..n) */
static int tokenize_rows(vlm_ctx *ctx, const vlm_bundle *b, const char *const *texts, int n,
                         vlm_tensor **ids, vlm_tensor **mask) {
    int64_t shape[2] = {n, b->ctx_len};
    *ids = vlm_tensor_new(ctx, VLM_I32, 2, shape);
    *mask = vlm_tensor_new(ctx, VLM_U8, 2, shape);
    if (!*ids || !*mask) return -1;
    for (int r = 0; r < n; r++)
        if (vlm_bundle_tokenize(b, texts[r], vlm_i32(*ids) + (int64_t)r * b->ctx_len,
                                (uint8_t *)(*mask)->data + (int64_t)r * b->ctx_len))
            return -1;
    return 0;
}

/* ---- images and texts ------------------------------------------------------------------- */

typedef struct {
    const float *pixels;
    const char *const *texts;
    float *out;
} rows_job;

static int image_batch(vlm_ctx *ctx, const vlm_bundle *b, int64_t i, int n, void *user) {
    rows_job *j = user;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size, D = vlm_bundle_embed_dim(b);
    vlm_tensor *pooled = NULL;
    vlm_tensor *img = pixels_tensor(ctx, b, j->pixels + i * px, n);
    if (!vlm_vision_forward(ctx, &b->model->vision, img, false, &pooled)) return -1;
    return copy_rows(vlm_l2_normalize(ctx, pooled, 1e-12f), j->out + i * D);
}

int vlm_bundle_embed_images(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels, int64_t n,
                            int batch, float *out) {
    rows_job j = {.pixels = pixels, .out = out};
    return batched(ctx, b, n, batch, image_batch, &j);
}

static int text_batch(vlm_ctx *ctx, const vlm_bundle *b, int64_t i, int n, void *user) {
    rows_job *j = user;
    vlm_tensor *ids, *mask, *pooled = NULL;
    if (tokenize_rows(ctx, b, j->texts + i, n, &ids, &mask)) return -1;
    /* the text tower sees the padding mask only when it was trained with it */
    if (!vlm_text_forward(ctx, &b->model->text, ids, b->key_mask ? mask : NULL, false, &pooled))
        return -1;
    return copy_rows(vlm_l2_normalize(ctx, pooled, 1e-12f), j->out + i * vlm_bundle_embed_dim(b));
}

int vlm_bundle_embed_texts(vlm_ctx *ctx, const vlm_bundle *b, const char *const *texts, int64_t n,
                           int batch, float *out) {
    rows_job j = {.texts = texts, .out = out};
    return batched(ctx, b, n, batch, text_batch, &j);
}

/* As vlm_captioner_prefix: the prompt's mask goes to the text tower and to
 * the fusion's pooling. */
static int fused_batch(vlm_ctx *ctx, const vlm_bundle *b, int64_t i, int n, void *user) {
    rows_job *j = user;
    const vlm_captioner *cap = b->model->captioner;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size, Dt = b->model->cfg.text.width;
    vlm_tensor *ids, *mask, *pooled = NULL;
    if (tokenize_rows(ctx, b, j->texts + i, n, &ids, &mask)) return -1;
    vlm_tensor *img = vlm_vision_forward(ctx, &b->model->vision,
                                         pixels_tensor(ctx, b, j->pixels + i * px, n), false, NULL);
    vlm_tensor *txt = vlm_text_forward(ctx, &b->model->text, ids, mask, false, NULL);
    if (!vlm_fusion_forward(ctx, &cap->fusion, txt, img, mask, &pooled)) return -1;
    return copy_rows(pooled, j->out + i * Dt);
}

int vlm_bundle_embed_fused(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels,
                           const char *const *texts, int64_t n, int batch, float *out) {
    if (!vlm_bundle_is_captioner(b))
        return vlm_set_error("fused embeddings need a captioner (model.type is \"%s\")",
                             b ? b->model->cfg.type : "?");
    rows_job j = {.pixels = pixels, .texts = texts, .out = out};
    return batched(ctx, b, n, batch, fused_batch, &j);
}

/* ---- zero-shot class vectors ----------------------------------------------------------- */

int vlm_bundle_class_vectors(vlm_ctx *ctx, const vlm_bundle *b, const char *const *names, int k,
                             const char *const *templates, int n_templates, int batch,
                             float *out) {
    if (k < 1 || n_templates < 1)
        return vlm_set_error("zero-shot: need at least one class and one template (got %d, %d)",
                             k, n_templates);
    int64_t n = (int64_t)k * n_templates, D = vlm_bundle_embed_dim(b);
    char **texts = calloc((size_t)n, sizeof *texts);
    float *emb = malloc((size_t)(n * D) * sizeof *emb);
    int rc = texts && emb ? 0 : vlm_set_error("zero-shot: out of memory");
    for (int64_t i = 0; rc == 0 && i < n; i++)
        if (!(texts[i] = vlm_class_caption(templates[i % n_templates], names[i / n_templates])))
            rc = -1;
    if (rc == 0) rc = vlm_bundle_embed_texts(ctx, b, (const char *const *)texts, n, batch, emb);
    if (rc == 0) rc = vlm_class_vectors(emb, k, n_templates, (int)D, out);
    for (int64_t i = 0; texts && i < n; i++) free(texts[i]);
    free(texts);
    free(emb);
    return rc;
}

/* ---- captions ------------------------------------------------------------------------- */

typedef struct {
    const float *pixels;
    const int32_t *ids;  /* the prompt, one row */
    const uint8_t *mask;
    const vlm_gen_opts *o;
    char **captions;
    vlm_gen_stats *st;
} caption_job;

static int caption_batch(vlm_ctx *ctx, const vlm_bundle *b, int64_t i, int n, void *user) {
    caption_job *j = user;
    int T = b->ctx_len, M = j->o->max_tokens;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size;
    int32_t *ids = vlm_arena_alloc(ctx, (size_t)n * T * sizeof *ids);
    uint8_t *mask = vlm_arena_alloc(ctx, (size_t)n * T);
    int32_t *tok = vlm_arena_alloc(ctx, (size_t)n * M * sizeof *tok);
    int *len = vlm_arena_alloc(ctx, (size_t)n * sizeof *len);
    if (!ids || !mask || !tok || !len) return vlm_set_error("caption: out of memory");
    for (int r = 0; r < n; r++) {
        memcpy(ids + (int64_t)r * T, j->ids, (size_t)T * sizeof *ids);
        memcpy(mask + (int64_t)r * T, j->mask, (size_t)T);
    }
    if (vlm_caption_generate(ctx, b->model, j->pixels + i * px, n, ids, mask, T, j->o, tok, len,
                             j->st))
        return -1;
    for (int r = 0; r < n; r++)
        if (!(j->captions[i + r] = vlm_bundle_decode(b, tok + (int64_t)r * M, len[r]))) return -1;
    return 0;
}

int vlm_bundle_caption(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels, int64_t n,
                       const char *prompt, int batch, const vlm_gen_opts *o, char **captions,
                       vlm_gen_stats *st) {
    if (!vlm_bundle_is_captioner(b))
        return vlm_set_error("caption: the model is not a captioner (model.type \"%s\")",
                             b ? b->model->cfg.type : "?");
    int32_t *ids = malloc((size_t)b->ctx_len * sizeof *ids);
    uint8_t *mask = malloc((size_t)b->ctx_len);
    int rc = ids && mask ? vlm_bundle_tokenize(b, prompt ? prompt : "", ids, mask)
                         : vlm_set_error("caption: out of memory");
    for (int64_t i = 0; i < n; i++) captions[i] = NULL;
    caption_job j = {pixels, ids, mask, o, captions, st};
    if (rc == 0) rc = batched(ctx, b, n, batch, caption_batch, &j);
    if (rc)
        for (int64_t i = 0; i < n; i++) free(captions[i]), captions[i] = NULL;
    free(ids);
    free(mask);
    return rc;
}
