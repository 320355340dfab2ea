/* captioner.c - the fusion block (text tokens cross-attend to image tokens),
 * the LLaMA-style decoder with its KV cache, and the captioner that joins the
 * two towers, the fusion block and the decoder. Parameter names and shapes
 * are in nn.h; the decoder's match HF LlamaForCausalLM under "decoder.". */
#include "nn.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- fusion block ------------------------------------------------------------------ */

static int fusion_declare(vlm_params *p, vlm_fusion_block *f, const vlm_model_cfg *c) {
    int dt = c->text.width, dv = c->vision.width, h = c->fusion.heads;
    f->eps = c->fusion.ln_eps;
    if (vlm_norm_declare(p, &f->ln_q, dt, true, "fusion.ln_q") ||
        vlm_norm_declare(p, &f->ln_kv, dv, true, "fusion.ln_kv") ||
        vlm_attn_declare(p, &f->attn, dt, dv, h, h, dt / h, true, "out_proj", "fusion.attn") ||
        vlm_norm_declare(p, &f->ln_mlp, dt, true, "fusion.ln_mlp"))
        return -1;
    return vlm_mlp_declare(p, &f->mlp, dt, c->fusion.mlp, "fusion.mlp");
}

static bool fusion_inputs_ok(const vlm_fusion_block *f, const vlm_tensor *text,
                             const vlm_tensor *image, const vlm_tensor *mask) {
    int64_t dt = f->ln_q.w->shape[0], dv = f->ln_kv.w->shape[0];
    char st[64], si[64], sm[64];
    vlm_shape_str(text, st, sizeof st);
    vlm_shape_str(image, si, sizeof si);
    if (text->dtype != VLM_F32 || image->dtype != VLM_F32 || text->ndim != 3 || image->ndim != 3 ||
        text->shape[2] != dt || image->shape[2] != dv || text->shape[0] != image->shape[0] ||
        text->shape[1] < 1 || image->shape[1] < 1) {
        vlm_set_error("fusion: text must be f32 [B, T, %lld] and image f32 [B, N, %lld] with "
                      "the same B, got text %s %s and image %s %s",
                      (long long)dt, (long long)dv, vlm_dtype_name(text->dtype), st,
                      vlm_dtype_name(image->dtype), si);
        return false;
    }
    if (mask && (mask->dtype != VLM_U8 || mask->ndim != 2 || mask->shape[0] != text->shape[0] ||
                 mask->shape[1] != text->shape[1])) {
        vlm_set_error("fusion: text_mask must be u8 [B, T] = [%lld, %lld] (text %s), got %s %s",
                      (long long)text->shape[0], (long long)text->shape[1], st,
                      vlm_dtype_name(mask->dtype), vlm_shape_str(mask, sm, sizeof sm));
        return false;
    }
    return true;
}

/* u8 [B, T] of ones: "every token valid" for vlm_masked_mean. */
static vlm_tensor *all_valid(vlm_ctx *ctx, int64_t B, int64_t T) {
    vlm_tensor *m = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){B, T});
    if (m) memset(m->data, 1, (size_t)m->numel);
    return m;
}

vlm_tensor *vlm_fusion_forward(vlm_ctx *ctx, const vlm_fusion_block *f, vlm_tensor *text,
                               vlm_tensor *image, vlm_tensor *text_mask, vlm_tensor **pooled) {
    if (pooled) *pooled = NULL;
    if (!text || !image || !fusion_inputs_ok(f, text, image, text_mask)) return NULL;
    /* the norms' outputs feed only linears: low precision (see vlm_ctx_lowp_dtype) */
    vlm_tensor *q = vlm_layernorm_lowp(ctx, text, f->ln_q.w, f->ln_q.b, f->eps);
    vlm_tensor *kv = vlm_layernorm_lowp(ctx, image, f->ln_kv.w, f->ln_kv.b, f->eps);
    /* The keys are image tokens, all valid, so the text's padding mask does
     * not enter the attention; padded text rows are dropped by the pooling
     * here and by the decoder's key mask in the captioner. */
    vlm_tensor *t = vlm_mha_fwd(ctx, &f->attn, q, kv, &(vlm_mha_opts){.residual = text});
    vlm_tensor *h = vlm_layernorm_lowp(ctx, t, f->ln_mlp.w, f->ln_mlp.b, f->eps);
    t = vlm_mlp_fwd(ctx, &f->mlp, h, t);
    if (!t || !pooled) return t;
    vlm_tensor *m = text_mask ? text_mask : all_valid(ctx, t->shape[0], t->shape[1]);
    *pooled = vlm_masked_mean(ctx, t, m);
    return *pooled ? t : NULL;
}

/* ---- decoder: declaration -------------------------------------------------------- */

static int decoder_layer_declare(vlm_params *p, vlm_decoder_layer *L, const vlm_decoder_cfg *c,
                                 int l) {
    char n[64];
    int d = c->width, hd = c->width / c->heads;
    snprintf(n, sizeof n, "decoder.model.layers.%d.input_layernorm", l);
    if (vlm_norm_declare(p, &L->in_ln, d, false, n)) return -1;
    snprintf(n, sizeof n, "decoder.model.layers.%d.post_attention_layernorm", l);
    if (vlm_norm_declare(p, &L->post_ln, d, false, n)) return -1;
    snprintf(n, sizeof n, "decoder.model.layers.%d.self_attn", l);
    if (vlm_attn_declare(p, &L->attn, d, d, c->heads, c->kv_heads, hd, false, "o_proj", n))
        return -1;
    snprintf(n, sizeof n, "decoder.model.layers.%d.mlp", l);
    return vlm_swiglu_declare(p, &L->mlp, d, c->mlp, n);
}

static int decoder_declare(vlm_params *p, vlm_decoder *d, const vlm_decoder_cfg *c) {
    d->cfg = *c;
    d->embed =
        vlm_declare(p, 2, (int64_t[]){c->vocab, c->width}, "decoder.model.embed_tokens.weight");
    d->layers = calloc((size_t)c->layers, sizeof *d->layers);
    if (!d->embed || !d->layers) return d->layers ? -1 : vlm_set_error("decoder: out of memory");
    for (int l = 0; l < c->layers; l++)
        if (decoder_layer_declare(p, &d->layers[l], c, l)) return -1;
    if (vlm_norm_declare(p, &d->norm, c->width, false, "decoder.model.norm")) return -1;
    /* tied: the head reads the embedding matrix, and HF files omit lm_head */
    d->lm_head = c->tie_embeddings
                     ? d->embed
                     : vlm_declare(p, 2, (int64_t[]){c->vocab, c->width}, "decoder.lm_head.weight");
    return d->lm_head ? 0 : -1;
}

/* ---- KV cache ---------------------------------------------------------------------- *
 * Plain malloc buffers, not arena memory, so a generation loop may reset its
 * context between steps. Cached keys/values are data: gradients flow only
 * through the positions of the current call. */

struct vlm_kv_cache {
    int layers, kv_heads, head_dim;
    int64_t batch, max_len, len;
    int64_t row;      /* floats per position: kv_heads * head_dim */
    float *k, *v;     /* [layers][batch][max_len][row] */
    uint8_t *valid;   /* [batch][max_len]: 0 = a padding key, never attended */
    bool any_invalid; /* some cached key is padding: attention needs a key mask */
};

static bool decoder_cfg_shape_ok(const vlm_decoder_cfg *c) {
    return c->layers > 0 && c->width > 0 && c->heads > 0 && c->kv_heads > 0 &&
           c->width % c->heads == 0 && c->heads % c->kv_heads == 0;
}

vlm_kv_cache *vlm_kv_cache_new(const vlm_decoder_cfg *cfg, int batch, int max_len) {
    if (!cfg || !decoder_cfg_shape_ok(cfg)) {
        vlm_set_error("kv cache: decoder config needs positive layers, width, heads, kv_heads "
                      "with heads | width and kv_heads | heads");
        return NULL;
    }
    if (batch < 1 || max_len < 1 || max_len > cfg->max_len) {
        vlm_set_error("kv cache: batch %d must be positive and max_len %d in [1, "
                      "model.decoder.max_len = %d]",
                      batch, max_len, cfg->max_len);
        return NULL;
    }
    vlm_kv_cache *c = calloc(1, sizeof *c);
    int64_t row = (int64_t)cfg->kv_heads * (cfg->width / cfg->heads);
    /* every factor is a positive int, so the product only overflows size_t
     * on a 32-bit machine: check it in double */
    double floats = (double)cfg->layers * batch * max_len * (double)row;
    if (c && floats * sizeof(float) < (double)SIZE_MAX) {
        size_t n = (size_t)cfg->layers * (size_t)batch * (size_t)max_len * (size_t)row;
        c->k = malloc(n * sizeof *c->k);
        c->v = malloc(n * sizeof *c->v);
        c->valid = malloc((size_t)batch * (size_t)max_len);
    }
    if (!c || !c->k || !c->v || !c->valid) {
        vlm_kv_cache_free(c);
        vlm_set_error("kv cache: out of memory for %d layers x batch %d x %d positions x %lld",
                      cfg->layers, batch, max_len, (long long)row);
        return NULL;
    }
    c->layers = cfg->layers, c->kv_heads = cfg->kv_heads, c->head_dim = cfg->width / cfg->heads;
    c->batch = batch, c->max_len = max_len, c->row = row;
    return c;
}

void vlm_kv_cache_reset(vlm_kv_cache *c) {
    if (!c) return;
    c->len = 0;
    c->any_invalid = false;
}

int64_t vlm_kv_cache_len(const vlm_kv_cache *c) { return c ? c->len : 0; }

void vlm_kv_cache_free(vlm_kv_cache *c) {
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c->valid);
    free(c);
}

/* Rows [0, n) of every batch entry of one layer's buffer as a [B, n, Hkv, hd]
 * tensor (a constant). */
static vlm_tensor *cache_rows(vlm_ctx *ctx, const vlm_kv_cache *c, const float *buf, int64_t n) {
    vlm_tensor *t =
        vlm_tensor_new(ctx, VLM_F32, 4, (int64_t[]){c->batch, n, c->kv_heads, c->head_dim});
    for (int64_t b = 0; t && b < c->batch; b++)
        memcpy(vlm_f32(t) + b * n * c->row, buf + b * c->max_len * c->row,
               (size_t)(n * c->row) * sizeof(float));
    return t;
}

/* Writes x [B, T, Hkv, hd] into rows len.. of one layer's buffer and returns
 * the keys (or values) of positions [0, len + T): the cached rows as a
 * constant, the new ones keeping x's graph when it has one (otherwise one
 * copy out of the cache does). len advances only once every layer has
 * succeeded (cache_commit), so a failed call leaves the cache as it was:
 * rows past len are scratch. */
static vlm_tensor *cache_append(vlm_ctx *ctx, const vlm_kv_cache *c, float *buf, vlm_tensor *x) {
    if (!x) return NULL;
    int64_t T = x->shape[1], len = c->len;
    for (int64_t b = 0; b < c->batch; b++)
        memcpy(buf + (b * c->max_len + len) * c->row, vlm_f32(x) + b * T * c->row,
               (size_t)(T * c->row) * sizeof(float));
    if (len == 0) return x;
    if (!x->requires_grad || !vlm_grad_enabled(ctx)) return cache_rows(ctx, c, buf, len + T);
    return vlm_concat(ctx, (vlm_tensor *[]){cache_rows(ctx, c, buf, len), x}, 2, 1);
}

/* The attention's key mask over [0, len + T): the cached validity flags then
 * this call's (new_mask [B, T], NULL = all valid). NULL when all are valid. */
static vlm_tensor *cache_key_mask(vlm_ctx *ctx, const vlm_kv_cache *c, vlm_tensor *new_mask,
                                  int64_t T, bool *failed) {
    *failed = false;
    if (!new_mask && !c->any_invalid) return NULL;
    int64_t B = c->batch, len = c->len, tk = len + T;
    vlm_tensor *m = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){B, tk});
    *failed = !m;
    for (int64_t b = 0; m && b < B; b++) {
        uint8_t *dst = (uint8_t *)m->data + b * tk;
        memcpy(dst, c->valid + b * c->max_len, (size_t)len);
        if (new_mask)
            memcpy(dst + len, (const uint8_t *)new_mask->data + b * T, (size_t)T);
        else
            memset(dst + len, 1, (size_t)T);
    }
    return m;
}

/* After a successful call: remember which new keys are padding, advance len. */
static void cache_commit(vlm_kv_cache *c, const vlm_tensor *new_mask, int64_t T) {
    for (int64_t b = 0; b < c->batch; b++) {
        uint8_t *dst = c->valid + b * c->max_len + c->len;
        for (int64_t t = 0; t < T; t++) {
            dst[t] = new_mask ? ((const uint8_t *)new_mask->data)[b * T + t] != 0 : 1;
            c->any_invalid |= !dst[t];
        }
    }
    c->len += T;
}

/* ---- decoder: forward ---------------------------------------------------------------- */

vlm_tensor *vlm_decoder_embed(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *ids) {
    if (!ids) return NULL;
    if (ids->dtype != VLM_I32 || ids->ndim != 2 || ids->shape[1] < 1) {
        char s[64];
        vlm_set_error("decoder: ids must be i32 [B, T] with T >= 1, got %s %s",
                      vlm_dtype_name(ids->dtype), vlm_shape_str(ids, s, sizeof s));
        return NULL;
    }
    return vlm_embedding(ctx, d->embed, ids);
}

static bool embeds_ok(const vlm_decoder *d, const vlm_tensor *x, const vlm_kv_cache *c) {
    char s[64];
    vlm_shape_str(x, s, sizeof s);
    if (x->dtype != VLM_F32 || x->ndim != 3 || x->shape[1] < 1 || x->shape[2] != d->cfg.width) {
        vlm_set_error("decoder: embeds must be f32 [B, T, %d] with T >= 1, got %s %s", d->cfg.width,
                      vlm_dtype_name(x->dtype), s);
        return false;
    }
    if (!c && x->shape[1] > d->cfg.max_len) {
        vlm_set_error("decoder: embeds %s have %lld positions, more than model.decoder.max_len "
                      "%d",
                      s, (long long)x->shape[1], d->cfg.max_len);
        return false;
    }
    if (c && (c->layers != d->cfg.layers || c->kv_heads != d->cfg.kv_heads ||
              c->head_dim != d->cfg.width / d->cfg.heads || c->batch != x->shape[0])) {
        vlm_set_error("decoder: KV cache (%d layers, %d kv heads, head dim %d, batch %lld) does "
                      "not fit this decoder (%d layers, %d kv heads, head dim %d) and embeds %s",
                      c->layers, c->kv_heads, c->head_dim, (long long)c->batch, d->cfg.layers,
                      d->cfg.kv_heads, d->cfg.width / d->cfg.heads, s);
        return false;
    }
    if (c && c->len + x->shape[1] > c->max_len) {
        vlm_set_error("decoder: KV cache overflow: %lld cached + %lld new positions exceed its "
                      "max_len %lld",
                      (long long)c->len, (long long)x->shape[1], (long long)c->max_len);
        return false;
    }
    return true;
}

/* The mask applies to this call's T positions: key_mask u8 [B, T]; with a
 * cache, prefix_len counts absolute positions and must lie within len + T. */
static bool mask_ok(const vlm_tensor *x, const vlm_attn_opts *m, const vlm_kv_cache *c) {
    int64_t B = x->shape[0], T = x->shape[1], len = c ? c->len : 0;
    const vlm_tensor *km = m->key_mask;
    char s[64];
    if (km && (km->dtype != VLM_U8 || km->ndim != 2 || km->shape[0] != B || km->shape[1] != T)) {
        vlm_set_error("decoder: key_mask must be u8 [B, T] = [%lld, %lld] over this call's "
                      "positions, got %s %s",
                      (long long)B, (long long)T, vlm_dtype_name(km->dtype),
                      vlm_shape_str(km, s, sizeof s));
        return false;
    }
    if (m->kind == VLM_MASK_PREFIX && (m->prefix_len < 0 || m->prefix_len > len + T)) {
        vlm_set_error("decoder: prefix_len %lld outside [0, %lld] (%lld cached + %lld new "
                      "positions)",
                      (long long)m->prefix_len, (long long)(len + T), (long long)len, (long long)T);
        return false;
    }
    return true;
}

/* [B, T, H*hd] -> [B, T, H, hd]: attention takes heads in dim 2, no permute. */
static vlm_tensor *heads_view(vlm_ctx *ctx, vlm_tensor *x, int heads) {
    if (!x) return NULL;
    return vlm_reshape(ctx, x, 4,
                       (int64_t[]){x->shape[0], x->shape[1], heads, x->shape[2] / heads});
}

/* Self-attention of layer l with RoPE at positions len.. (len = 0 without a
 * cache); with a cache the rotated keys and values are appended first. */
static vlm_tensor *decoder_attn(vlm_ctx *ctx, const vlm_decoder *d, int l, vlm_tensor *h,
                                const vlm_attn_opts *mask, vlm_kv_cache *c, vlm_tensor *r) {
    const vlm_attn_p *a = &d->layers[l].attn;
    int64_t pos = c ? c->len : 0;
    float theta = d->cfg.rope_theta;
    vlm_tensor *q =
        vlm_rope(ctx, heads_view(ctx, vlm_linear_fwd(ctx, &a->q, h), a->heads), pos, theta);
    vlm_tensor *k =
        vlm_rope(ctx, heads_view(ctx, vlm_linear_fwd(ctx, &a->k, h), a->kv_heads), pos, theta);
    vlm_tensor *v = heads_view(ctx, vlm_linear_fwd(ctx, &a->v, h), a->kv_heads);
    if (c) {
        size_t off = (size_t)l * (size_t)(c->batch * c->max_len * c->row);
        k = cache_append(ctx, c, c->k + off, k);
        v = cache_append(ctx, c, c->v + off, v);
    }
    vlm_tensor *o = vlm_attention_lowp(ctx, q, k, v, mask); /* feeds o_proj only */
    if (!o) return NULL;
    int64_t s[3] = {o->shape[0], o->shape[1], o->shape[2] * o->shape[3]};
    o = vlm_reshape(ctx, o, 3, s);
    return r ? vlm_linear_residual(ctx, r, o, a->o.w, a->o.b) : vlm_linear_fwd(ctx, &a->o, o);
}

/* x += o_proj(attn(rmsnorm x)); x += down(silu(gate h) * up h), h = rmsnorm x */
static vlm_tensor *decoder_layer(vlm_ctx *ctx, const vlm_decoder *d, int l, vlm_tensor *x,
                                 const vlm_attn_opts *mask, vlm_kv_cache *c, bool training) {
    const vlm_decoder_layer *L = &d->layers[l];
    float eps = d->cfg.rms_eps, p = d->cfg.dropout;
    vlm_tensor *h = vlm_rmsnorm_lowp(ctx, x, L->in_ln.w, eps); /* feeds q, k, v only */
    vlm_tensor *r = vlm_residual_for(x, p, training);
    vlm_tensor *y = decoder_attn(ctx, d, l, h, mask, c, r);
    x = r ? y : vlm_residual(ctx, x, y, p, training);
    h = vlm_rmsnorm_lowp(ctx, x, L->post_ln.w, eps); /* gate, up */
    r = vlm_residual_for(x, p, training);
    y = vlm_swiglu_fwd(ctx, &L->mlp, h, r);
    return r ? y : vlm_residual(ctx, x, y, p, training);
}

/* One decoder layer as a gradient-checkpointing segment (no KV cache: a
 * cache means inference, where there is nothing to save). */
typedef struct {
    const vlm_decoder *d;
    int l;
    vlm_attn_opts mask;
    bool training;
} decoder_segment;

static vlm_tensor *decoder_segment_fn(vlm_ctx *ctx, vlm_tensor *const *in, int n,
                                      const void *user) {
    (void)n;
    const decoder_segment *s = user;
    return decoder_layer(ctx, s->d, s->l, in[0], &s->mask, NULL, s->training);
}

/* Every layer, without the final norm and head (so the captioner's loss can
 * drop the prefix positions before the [V, D] head GEMM). */
static vlm_tensor *decoder_trunk(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *x,
                                 const vlm_attn_opts *mask, vlm_kv_cache *c, bool training) {
    if (!x || !embeds_ok(d, x, c)) return NULL;
    vlm_attn_opts m = mask ? *mask : (vlm_attn_opts){.kind = VLM_MASK_CAUSAL};
    if (!mask_ok(x, &m, c)) return NULL;
    vlm_tensor *new_mask = m.key_mask;
    if (c) {
        bool failed;
        m.key_mask = cache_key_mask(ctx, c, new_mask, x->shape[1], &failed);
        if (failed) return NULL;
    }
    for (int l = 0; l < d->cfg.layers && x; l++) {
        if (d->cfg.checkpoint && !c) {
            decoder_segment seg = {d, l, m, training};
            x = vlm_checkpoint(ctx, decoder_segment_fn, &seg, sizeof seg, &x, 1);
        } else {
            x = decoder_layer(ctx, d, l, x, &m, c, training);
        }
    }
    if (x && c) cache_commit(c, new_mask, x->shape[1]);
    return x;
}

static vlm_tensor *decoder_head(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *x) {
    return vlm_linear(ctx, vlm_rmsnorm_lowp(ctx, x, d->norm.w, d->cfg.rms_eps), d->lm_head, NULL);
}

vlm_tensor *vlm_decoder_forward(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *embeds,
                                const vlm_attn_opts *mask, vlm_kv_cache *cache, bool training) {
    return decoder_head(ctx, d, decoder_trunk(ctx, d, embeds, mask, cache, training));
}

/* ---- the captioner ------------------------------------------------------------------- */

int vlm_captioner_declare(vlm_model *m) {
    const vlm_model_cfg *c = &m->cfg;
    int s = c->pixel_shuffle;
    vlm_captioner *cap = calloc(1, sizeof *cap);
    if (!cap) return vlm_set_error("captioner: out of memory");
    m->captioner = cap; /* set first: vlm_model_free releases a half-declared one */
    if (fusion_declare(m->params, &cap->fusion, c) ||
        decoder_declare(m->params, &cap->decoder, &c->decoder) ||
        vlm_linear_declare(m->params, &cap->image_proj, c->vision.width * s * s, c->decoder.width,
                           true, "image_proj"))
        return -1;
    return vlm_linear_declare(m->params, &cap->fused_proj, c->text.width, c->decoder.width, true,
                              "fused_proj");
}

void vlm_captioner_free(vlm_model *m) {
    if (!m || !m->captioner) return;
    vlm_captioner *cap = m->captioner;
    free(cap->decoder.layers);
    free(cap);
    m->captioner = NULL;
}

static const vlm_captioner *captioner_of(const vlm_model *m) {
    if (m && m->captioner) return m->captioner;
    vlm_set_error("captioner: the model is not a captioner (model.type \"%s\")",
                  m ? m->cfg.type : "(null model)");
    return NULL;
}

/* Image tokens after pixel shuffle: (grid / s)^2. */
static int64_t image_tokens(const vlm_model *m) {
    int64_t g = m->cfg.vision.image_size / m->cfg.vision.patch / m->cfg.pixel_shuffle;
    return g * g;
}

/* Batch agreement of images [B, ...] and prompt ids [B, Tp]; the towers check the rest. */
static bool prefix_inputs_ok(const vlm_tensor *images, const vlm_tensor *ids) {
    if (images->ndim == 4 && ids->ndim == 2 && images->shape[0] == ids->shape[0]) return true;
    char si[64], sp[64];
    vlm_set_error("captioner: images %s %s and prompt ids %s %s must be [B, C, H, W] and "
                  "[B, Tp] with the same B",
                  vlm_dtype_name(images->dtype), vlm_shape_str(images, si, sizeof si),
                  vlm_dtype_name(ids->dtype), vlm_shape_str(ids, sp, sizeof sp));
    return false;
}

vlm_tensor *vlm_captioner_prefix(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                                 vlm_tensor *prompt_ids, vlm_tensor *prompt_mask, bool training) {
    const vlm_captioner *c = captioner_of(m);
    if (!c || !images || !prompt_ids || !prefix_inputs_ok(images, prompt_ids)) return NULL;
    int s = m->cfg.pixel_shuffle;
    vlm_tensor *img = vlm_vision_forward(ctx, &m->vision, images, training, NULL);
    vlm_tensor *txt = vlm_text_forward(ctx, &m->text, prompt_ids, prompt_mask, training, NULL);
    /* the fusion reads the image tokens at vision width, before the shuffle */
    vlm_tensor *fused = vlm_fusion_forward(ctx, &c->fusion, txt, img, prompt_mask, NULL);
    vlm_tensor *parts[2] = {
        vlm_linear_fwd(ctx, &c->image_proj, s > 1 ? vlm_pixel_shuffle(ctx, img, s) : img),
        vlm_linear_fwd(ctx, &c->fused_proj, fused)};
    if (!parts[0] || !parts[1]) return NULL;
    return vlm_concat(ctx, parts, 2, 1);
}

vlm_tensor *vlm_captioner_key_mask(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *prompt_mask,
                                   int64_t extra) {
    if (!captioner_of(m) || !prompt_mask) return NULL;
    char s[64];
    if (prompt_mask->dtype != VLM_U8 || prompt_mask->ndim != 2 || extra < 0) {
        vlm_set_error("captioner: key mask needs a u8 [B, Tp] prompt mask and extra >= 0, got "
                      "%s %s and extra %lld",
                      vlm_dtype_name(prompt_mask->dtype), vlm_shape_str(prompt_mask, s, sizeof s),
                      (long long)extra);
        return NULL;
    }
    int64_t B = prompt_mask->shape[0], Tp = prompt_mask->shape[1], N = image_tokens(m);
    vlm_tensor *k = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){B, N + Tp + extra});
    if (!k) return NULL;
    uint8_t *dst = k->data;
    for (int64_t b = 0; b < B; b++, dst += N + Tp + extra) {
        memset(dst, 1, (size_t)(N + Tp + extra));
        memcpy(dst + N, (const uint8_t *)prompt_mask->data + b * Tp, (size_t)Tp);
    }
    return k;
}

static bool caption_inputs_ok(const vlm_model *m, const vlm_tensor *images,
                              const vlm_tensor *prompt_ids, const vlm_tensor *cap,
                              const vlm_tensor *tgt) {
    char sc[64], st[64];
    vlm_shape_str(cap, sc, sizeof sc);
    vlm_shape_str(tgt, st, sizeof st);
    if (cap->dtype != VLM_I32 || tgt->dtype != VLM_I32 || cap->ndim != 2 || cap->shape[1] < 1 ||
        !vlm_same_shape(cap, tgt) || images->ndim < 1 || cap->shape[0] != images->shape[0]) {
        char si[64];
        vlm_set_error("captioner: caption_in %s %s and targets %s %s must both be i32 [B, L] "
                      "(L >= 1) with the images' B (images %s)",
                      vlm_dtype_name(cap->dtype), sc, vlm_dtype_name(tgt->dtype), st,
                      vlm_shape_str(images, si, sizeof si));
        return false;
    }
    int64_t n = image_tokens(m), tp = prompt_ids->ndim == 2 ? prompt_ids->shape[1] : 0;
    int64_t total = n + tp + cap->shape[1];
    if (total > m->cfg.decoder.max_len) {
        vlm_set_error("captioner: %lld image tokens + %lld prompt + %lld caption = %lld "
                      "positions exceed model.decoder.max_len %d",
                      (long long)n, (long long)tp, (long long)cap->shape[1], (long long)total,
                      m->cfg.decoder.max_len);
        return false;
    }
    return true;
}

vlm_tensor *vlm_captioner_loss(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                               vlm_tensor *prompt_ids, vlm_tensor *prompt_mask,
                               vlm_tensor *caption_in, vlm_tensor *targets, bool training) {
    const vlm_captioner *c = captioner_of(m);
    if (!c || !images || !prompt_ids || !caption_in || !targets ||
        !caption_inputs_ok(m, images, prompt_ids, caption_in, targets))
        return NULL;
    const vlm_decoder *d = &c->decoder;
    int64_t B = caption_in->shape[0], L = caption_in->shape[1];
    vlm_tensor *parts[2] = {vlm_captioner_prefix(ctx, m, images, prompt_ids, prompt_mask, training),
                            vlm_decoder_embed(ctx, d, caption_in)};
    if (!parts[0] || !parts[1]) return NULL;
    int64_t P = parts[0]->shape[1];
    /* prefix-LM: image and prompt tokens see each other, the caption is
     * causal; the prompt's padding is masked out as keys everywhere */
    vlm_attn_opts mask = {.kind = VLM_MASK_PREFIX, .prefix_len = P};
    if (prompt_mask && !(mask.key_mask = vlm_captioner_key_mask(ctx, m, prompt_mask, L)))
        return NULL;
    vlm_tensor *h = decoder_trunk(ctx, d, vlm_concat(ctx, parts, 2, 1), &mask, NULL, training);
    /* only caption positions are scored, so the head skips the prefix rows */
    vlm_tensor *logits = decoder_head(ctx, d, vlm_slice(ctx, h, 1, P, L));
    logits = vlm_reshape(ctx, logits, 2, (int64_t[]){B * L, d->cfg.vocab});
    vlm_tensor *labels = vlm_reshape(ctx, targets, 1, (int64_t[]){B * L});
    return vlm_cross_entropy(ctx, logits, labels, VLM_IGNORE_INDEX, 0.0f);
}
