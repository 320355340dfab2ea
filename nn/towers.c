/* towers.c - the SigLIP image tower (ViT + MAP head) and the text tower, with
 * HF parameter names (REFERENCE.md), and the contrastive model. */
#include "nn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- encoder blocks, optionally checkpointed --------------------------------------- */

/* One block as a checkpoint segment (autograd.h): x is the input, the rest
 * travels by value in the user data, which vlm_checkpoint copies into the
 * arena (the mask's key_mask tensor is arena data that lives until the reset). */
typedef struct {
    const vlm_encoder_block *b;
    vlm_attn_opts mask;
    bool has_mask, training;
    float eps, dropout;
} block_segment;

static vlm_tensor *block_segment_fn(vlm_ctx *ctx, vlm_tensor *const *in, int n,
                                    const void *user) {
    (void)n;
    const block_segment *s = user;
    return vlm_encoder_block_fwd(ctx, s->b, in[0], s->has_mask ? &s->mask : NULL, s->eps,
                                 s->dropout, s->training);
}

/* With checkpoint the block keeps only its input and output until backward,
 * which recomputes it (same grads bit for bit, dropout masks included). */
static vlm_tensor *encoder_block(vlm_ctx *ctx, const vlm_encoder_block *b, vlm_tensor *x,
                                 const vlm_attn_opts *mask, float eps, float dropout,
                                 bool training, bool checkpoint) {
    if (!checkpoint) return vlm_encoder_block_fwd(ctx, b, x, mask, eps, dropout, training);
    block_segment s = {b, mask ? *mask : (vlm_attn_opts){0}, mask != NULL, training, eps,
                       dropout};
    return vlm_checkpoint(ctx, block_segment_fn, &s, sizeof s, &x, 1);
}

/* ---- image tower --------------------------------------------------------------- */

static int declare_map_head(vlm_params *p, vlm_vision_tower *t, int d, int mlp) {
    t->probe = vlm_declare(p, 3, (int64_t[]){1, 1, d}, "vision_model.head.probe");
    t->in_proj.w =
        vlm_declare(p, 2, (int64_t[]){3 * d, d}, "vision_model.head.attention.in_proj_weight");
    t->in_proj.b =
        vlm_declare(p, 1, (int64_t[]){3 * d}, "vision_model.head.attention.in_proj_bias");
    if (!t->probe || !t->in_proj.w || !t->in_proj.b ||
        vlm_linear_declare(p, &t->out_proj, d, d, true, "vision_model.head.attention.out_proj") ||
        vlm_norm_declare(p, &t->head_ln, d, true, "vision_model.head.layernorm") ||
        vlm_mlp_declare(p, &t->head_mlp, d, mlp, "vision_model.head.mlp"))
        return -1;
    return 0;
}

int vlm_vision_declare(vlm_params *p, vlm_vision_tower *t, const vlm_vision_cfg *cfg) {
    int d = cfg->width, ps = cfg->patch, grid = cfg->image_size / cfg->patch;
    t->cfg = *cfg;
    t->heads = cfg->heads;
    t->patch.w = vlm_declare(p, 4, (int64_t[]){d, cfg->channels, ps, ps},
                             "vision_model.embeddings.patch_embedding.weight");
    t->patch.b = vlm_declare(p, 1, (int64_t[]){d}, "vision_model.embeddings.patch_embedding.bias");
    t->pos = vlm_declare(p, 2, (int64_t[]){grid * grid, d},
                         "vision_model.embeddings.position_embedding.weight");
    t->layers = calloc((size_t)cfg->layers, sizeof *t->layers);
    if (!t->patch.w || !t->patch.b || !t->pos || !t->layers)
        return t->layers ? -1 : vlm_set_error("vision tower: out of memory");
    for (int l = 0; l < cfg->layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "vision_model.encoder.layers.%d", l);
        if (vlm_encoder_block_declare(p, &t->layers[l], d, cfg->heads, cfg->mlp, name)) return -1;
    }
    if (vlm_norm_declare(p, &t->post_ln, d, true, "vision_model.post_layernorm")) return -1;
    return declare_map_head(p, t, d, cfg->mlp);
}

/* MAP head: the learned probe attends over the tokens through the fused
 * in_proj ([Wq; Wk; Wv] rows), then a = a + mlp(layernorm(a)); pooled = a[:, 0]. */
static vlm_tensor *map_head(vlm_ctx *ctx, const vlm_vision_tower *t, vlm_tensor *tokens) {
    int64_t d = t->cfg.width, B = tokens->shape[0];
    vlm_linear_p pq = {vlm_slice(ctx, t->in_proj.w, 0, 0, d),
                       vlm_slice(ctx, t->in_proj.b, 0, 0, d)};
    vlm_linear_p pk = {vlm_slice(ctx, t->in_proj.w, 0, d, d),
                       vlm_slice(ctx, t->in_proj.b, 0, d, d)};
    vlm_linear_p pv = {vlm_slice(ctx, t->in_proj.w, 0, 2 * d, d),
                       vlm_slice(ctx, t->in_proj.b, 0, 2 * d, d)};
    vlm_attn_p attn = {pq, pk, pv, t->out_proj, t->heads, t->heads};
    /* the probe is shared by the batch: broadcast [1, 1, D] to [B, 1, D] */
    vlm_tensor *zeros = vlm_zeros(ctx, VLM_F32, 3, (int64_t[]){B, 1, d});
    vlm_tensor *probe = vlm_add(ctx, zeros, t->probe);
    vlm_tensor *a = vlm_mha_fwd(ctx, &attn, probe, tokens, NULL);
    vlm_tensor *h = vlm_layernorm_lowp(ctx, a, t->head_ln.w, t->head_ln.b, t->cfg.ln_eps);
    a = vlm_mlp_fwd(ctx, &t->head_mlp, h, a);
    return vlm_reshape(ctx, a, 2, (int64_t[]){B, d});
}

static bool check_images(const vlm_vision_tower *t, const vlm_tensor *images) {
    const vlm_vision_cfg *c = &t->cfg;
    if (images->dtype == VLM_F32 && images->ndim == 4 && images->shape[1] == c->channels &&
        images->shape[2] == c->image_size && images->shape[3] == c->image_size)
        return true;
    char s[64];
    vlm_set_error("vision tower: images must be f32 [B, %d, %d, %d], got %s %s", c->channels,
                  c->image_size, c->image_size, vlm_dtype_name(images->dtype),
                  vlm_shape_str(images, s, sizeof s));
    return false;
}

vlm_tensor *vlm_vision_forward(vlm_ctx *ctx, const vlm_vision_tower *t, vlm_tensor *images,
                               bool training, vlm_tensor **pooled) {
    if (!images || !check_images(t, images)) return NULL;
    const vlm_vision_cfg *c = &t->cfg;
    /* conv(stride = patch) == patch rows x W[D, C*p*p]^T */
    vlm_tensor *w =
        vlm_reshape(ctx, t->patch.w, 2, (int64_t[]){c->width, t->patch.w->numel / c->width});
    vlm_tensor *x = vlm_linear(ctx, vlm_patchify(ctx, images, c->patch), w, t->patch.b);
    x = vlm_add(ctx, x, t->pos);
    for (int l = 0; l < c->layers; l++)
        x = encoder_block(ctx, &t->layers[l], x, NULL, c->ln_eps, c->dropout, training,
                          c->checkpoint);
    x = vlm_layernorm_fwd(ctx, &t->post_ln, x, c->ln_eps);
    if (pooled) *pooled = x ? map_head(ctx, t, x) : NULL;
    return x;
}

/* ---- text tower ------------------------------------------------------------------ */

int vlm_text_declare(vlm_params *p, vlm_text_tower *t, const vlm_text_cfg *cfg, int embed_dim) {
    int d = cfg->width;
    t->cfg = *cfg;
    t->tok = vlm_declare(p, 2, (int64_t[]){cfg->vocab, d},
                         "text_model.embeddings.token_embedding.weight");
    t->pos = vlm_declare(p, 2, (int64_t[]){cfg->ctx_len, d},
                         "text_model.embeddings.position_embedding.weight");
    t->layers = calloc((size_t)cfg->layers, sizeof *t->layers);
    if (!t->tok || !t->pos || !t->layers)
        return t->layers ? -1 : vlm_set_error("text tower: out of memory");
    for (int l = 0; l < cfg->layers; l++) {
        char name[64];
        snprintf(name, sizeof name, "text_model.encoder.layers.%d", l);
        if (vlm_encoder_block_declare(p, &t->layers[l], d, cfg->heads, cfg->mlp, name)) return -1;
    }
    if (vlm_norm_declare(p, &t->final_ln, d, true, "text_model.final_layer_norm")) return -1;
    return vlm_linear_declare(p, &t->head, d, embed_dim, true, "text_model.head");
}

static bool check_ids(const vlm_text_tower *t, const vlm_tensor *ids, const vlm_tensor *mask) {
    char s[64];
    if (ids->dtype != VLM_I32 || ids->ndim != 2 || ids->shape[1] < 1 ||
        ids->shape[1] > t->cfg.ctx_len) {
        vlm_set_error("text tower: ids must be i32 [B, T] with 1 <= T <= %d, got %s %s",
                      t->cfg.ctx_len, vlm_dtype_name(ids->dtype), vlm_shape_str(ids, s, sizeof s));
        return false;
    }
    if (mask && (mask->dtype != VLM_U8 || !vlm_same_shape(mask, ids))) {
        vlm_set_error("text tower: key mask must be u8 with the ids' shape, got %s %s",
                      vlm_dtype_name(mask->dtype), vlm_shape_str(mask, s, sizeof s));
        return false;
    }
    return true;
}

vlm_tensor *vlm_text_forward(vlm_ctx *ctx, const vlm_text_tower *t, vlm_tensor *ids,
                             vlm_tensor *key_mask, bool training, vlm_tensor **pooled) {
    if (!ids || !check_ids(t, ids, key_mask)) return NULL;
    const vlm_text_cfg *c = &t->cfg;
    int64_t B = ids->shape[0], T = ids->shape[1];
    vlm_tensor *x = vlm_embedding(ctx, t->tok, ids);
    x = vlm_add(ctx, x, T == c->ctx_len ? t->pos : vlm_slice(ctx, t->pos, 0, 0, T));
    vlm_attn_opts mask = {.kind = VLM_MASK_NONE, .key_mask = key_mask};
    for (int l = 0; l < c->layers; l++)
        x = encoder_block(ctx, &t->layers[l], x, &mask, c->ln_eps, c->dropout, training,
                          c->checkpoint);
    x = vlm_layernorm_fwd(ctx, &t->final_ln, x, c->ln_eps);
    if (pooled) {
        vlm_tensor *last =
            vlm_reshape(ctx, vlm_slice(ctx, x, 1, T - 1, 1), 2, (int64_t[]){B, c->width});
        *pooled = vlm_linear_fwd(ctx, &t->head, last);
    }
    return x;
}

/* ---- the contrastive model ------------------------------------------------------- */

vlm_tensor *vlm_siglip_forward(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                               vlm_tensor *ids, vlm_tensor *key_mask, vlm_tensor *match,
                               bool training, vlm_tensor **img_emb, vlm_tensor **txt_emb) {
    vlm_tensor *ip = NULL, *tp = NULL;
    if (!vlm_vision_forward(ctx, &m->vision, images, training, &ip)) return NULL;
    if (!vlm_text_forward(ctx, &m->text, ids, key_mask, training, &tp)) return NULL;
    vlm_tensor *ie = vlm_l2_normalize(ctx, ip, 1e-12f), *te = vlm_l2_normalize(ctx, tp, 1e-12f);
    if (img_emb) *img_emb = ie;
    if (txt_emb) *txt_emb = te;
    return vlm_siglip_loss(ctx, te, ie, m->logit_scale, m->logit_bias, match);
}
