/* layers.c - parameter declaration under HF names, initialisation, and the
 * building blocks (linear, norms, MLPs, attention, the pre-LN encoder block). */
#include "nn.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- declaration ----------------------------------------------------------- */

#define NAME_MAX_LEN 256

/* out = name "." suffix; -1 with error if it does not fit */
static int subname(char out[NAME_MAX_LEN], const char *name, const char *suffix) {
    int n = snprintf(out, NAME_MAX_LEN, "%s.%s", name, suffix);
    if (n < 0 || n >= NAME_MAX_LEN)
        return vlm_set_error("params: name too long (%s.%s)", name, suffix);
    return 0;
}

vlm_tensor *vlm_declare(vlm_params *p, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof name) {
        vlm_set_error("params: name too long (%s...)", name);
        return NULL;
    }
    return vlm_param_add(p, name, ndim, shape);
}

int vlm_linear_declare(vlm_params *p, vlm_linear_p *l, int in, int out, bool bias,
                       const char *name) {
    int64_t w[2] = {out, in}, b[1] = {out};
    l->w = vlm_declare(p, 2, w, "%s.weight", name);
    l->b = bias ? vlm_declare(p, 1, b, "%s.bias", name) : NULL;
    return l->w && (!bias || l->b) ? 0 : -1;
}

int vlm_norm_declare(vlm_params *p, vlm_norm_p *nrm, int dim, bool bias, const char *name) {
    int64_t shape[1] = {dim};
    nrm->w = vlm_declare(p, 1, shape, "%s.weight", name);
    nrm->b = bias ? vlm_declare(p, 1, shape, "%s.bias", name) : NULL;
    return nrm->w && (!bias || nrm->b) ? 0 : -1;
}

int vlm_mlp_declare(vlm_params *p, vlm_mlp_p *m, int dim, int hidden, const char *name) {
    char n[NAME_MAX_LEN];
    if (subname(n, name, "fc1") || vlm_linear_declare(p, &m->fc1, dim, hidden, true, n)) return -1;
    if (subname(n, name, "fc2")) return -1;
    return vlm_linear_declare(p, &m->fc2, hidden, dim, true, n);
}

int vlm_swiglu_declare(vlm_params *p, vlm_swiglu_p *m, int dim, int hidden, const char *name) {
    char n[NAME_MAX_LEN];
    if (subname(n, name, "gate_proj") || vlm_linear_declare(p, &m->gate, dim, hidden, false, n))
        return -1;
    if (subname(n, name, "up_proj") || vlm_linear_declare(p, &m->up, dim, hidden, false, n))
        return -1;
    if (subname(n, name, "down_proj")) return -1;
    return vlm_linear_declare(p, &m->down, hidden, dim, false, n);
}

int vlm_attn_declare(vlm_params *p, vlm_attn_p *a, int q_dim, int kv_dim, int heads, int kv_heads,
                     int head_dim, bool bias, const char *out_name, const char *name) {
    char n[NAME_MAX_LEN];
    a->heads = heads;
    a->kv_heads = kv_heads;
    if (subname(n, name, "q_proj") ||
        vlm_linear_declare(p, &a->q, q_dim, heads * head_dim, bias, n))
        return -1;
    if (subname(n, name, "k_proj") ||
        vlm_linear_declare(p, &a->k, kv_dim, kv_heads * head_dim, bias, n))
        return -1;
    if (subname(n, name, "v_proj") ||
        vlm_linear_declare(p, &a->v, kv_dim, kv_heads * head_dim, bias, n))
        return -1;
    if (subname(n, name, out_name)) return -1;
    return vlm_linear_declare(p, &a->o, heads * head_dim, q_dim, bias, n);
}

int vlm_encoder_block_declare(vlm_params *p, vlm_encoder_block *b, int dim, int heads, int mlp,
                              const char *name) {
    char n[NAME_MAX_LEN];
    if (subname(n, name, "layer_norm1") || vlm_norm_declare(p, &b->ln1, dim, true, n)) return -1;
    if (subname(n, name, "layer_norm2") || vlm_norm_declare(p, &b->ln2, dim, true, n)) return -1;
    if (subname(n, name, "self_attn") ||
        vlm_attn_declare(p, &b->attn, dim, dim, heads, heads, dim / heads, true, "out_proj", n))
        return -1;
    if (subname(n, name, "mlp")) return -1;
    return vlm_mlp_declare(p, &b->mlp, dim, mlp, n);
}

/* ---- initialisation ---------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Box-Muller on two 53-bit uniforms: exact enough and reproducible everywhere. */
static void fill_normal(float *x, int64_t n, float std, uint64_t seed) {
    for (int64_t i = 0; i < n; i += 2) {
        double u1 = ((splitmix(&seed) >> 11) + 1.0) * 0x1.0p-53; /* (0, 1] */
        double u2 = (splitmix(&seed) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)), th = 2.0 * M_PI * u2;
        x[i] = (float)(std * r * cos(th));
        if (i + 1 < n) x[i + 1] = (float)(std * r * sin(th));
    }
}

static void fill_const(float *x, int64_t n, float v) {
    for (int64_t i = 0; i < n; i++)
        x[i] = v;
}

void vlm_init_params(vlm_params *p, uint64_t seed) {
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        float *x = vlm_f32(t);
        /* every 1-D ".weight" in these models is a norm gain (fusion.ln_q has no
         * "norm" in its name, so the name alone would not do) */
        bool is_norm = t->ndim == 1 && ends_with(t->name, ".weight");
        if (strcmp(t->name, "logit_scale") == 0)
            fill_const(x, t->numel, logf(10.0f));
        else if (strcmp(t->name, "logit_bias") == 0)
            fill_const(x, t->numel, -10.0f);
        else if (ends_with(t->name, "bias"))
            fill_const(x, t->numel, 0.0f);
        else if (is_norm)
            fill_const(x, t->numel, 1.0f);
        else
            fill_normal(x, t->numel, 0.02f, seed ^ fnv1a(t->name));
    }
}

/* ---- forward building blocks ------------------------------------------------------ */

vlm_tensor *vlm_linear_fwd(vlm_ctx *ctx, const vlm_linear_p *l, vlm_tensor *x) {
    return vlm_linear(ctx, x, l->w, l->b);
}

vlm_tensor *vlm_layernorm_fwd(vlm_ctx *ctx, const vlm_norm_p *n, vlm_tensor *x, float eps) {
    return vlm_layernorm(ctx, x, n->w, n->b, eps);
}

/* Inside the MLP every tensor feeds only the activation or fc2 (down): the
 * _lowp ops keep them in the mixed precision storage type (bf16 in bf16 mode,
 * as PyTorch's autocast does), so no f32 copy of the hidden layer is kept. */
static vlm_tensor *linear_res_fwd(vlm_ctx *ctx, const vlm_linear_p *l, vlm_tensor *x,
                                  vlm_tensor *r) {
    return r ? vlm_linear_residual(ctx, r, x, l->w, l->b) : vlm_linear(ctx, x, l->w, l->b);
}

vlm_tensor *vlm_mlp_fwd(vlm_ctx *ctx, const vlm_mlp_p *m, vlm_tensor *x, vlm_tensor *r) {
    vlm_tensor *h = vlm_linear_lowp(ctx, x, m->fc1.w, m->fc1.b);
    return linear_res_fwd(ctx, &m->fc2, vlm_gelu_lowp(ctx, h), r);
}

vlm_tensor *vlm_swiglu_fwd(vlm_ctx *ctx, const vlm_swiglu_p *m, vlm_tensor *x, vlm_tensor *r) {
    vlm_tensor *g = vlm_linear_lowp(ctx, x, m->gate.w, m->gate.b);
    vlm_tensor *u = vlm_linear_lowp(ctx, x, m->up.w, m->up.b);
    return linear_res_fwd(ctx, &m->down, vlm_silu_mul_lowp(ctx, g, u), r);
}

/* [B, T, H*hd] <-> [B, T, H, hd] are free reshapes: attention takes heads in
 * the third dim, so no permutes are needed around it. */
static vlm_tensor *split_heads(vlm_ctx *ctx, vlm_tensor *x, int heads) {
    if (!x) return NULL;
    int64_t s[4] = {x->shape[0], x->shape[1], heads, x->shape[2] / heads};
    return vlm_reshape(ctx, x, 4, s);
}

vlm_tensor *vlm_mha_fwd(vlm_ctx *ctx, const vlm_attn_p *a, vlm_tensor *xq, vlm_tensor *xkv,
                        const vlm_mha_opts *opts) {
    if (!xq || !xkv) return NULL;
    if (xq->ndim != 3 || xkv->ndim != 3) {
        char s1[64], s2[64];
        vlm_set_error("attention layer: inputs must be [B, T, D], got %s and %s",
                      vlm_shape_str(xq, s1, sizeof s1), vlm_shape_str(xkv, s2, sizeof s2));
        return NULL;
    }
    vlm_tensor *q = split_heads(ctx, vlm_linear_fwd(ctx, &a->q, xq), a->heads);
    vlm_tensor *k = split_heads(ctx, vlm_linear_fwd(ctx, &a->k, xkv), a->kv_heads);
    vlm_tensor *v = split_heads(ctx, vlm_linear_fwd(ctx, &a->v, xkv), a->kv_heads);
    if (opts && opts->rope_theta > 0) {
        q = vlm_rope(ctx, q, opts->q_pos, opts->rope_theta);
        k = vlm_rope(ctx, k, opts->k_pos, opts->rope_theta);
    }
    /* o feeds only the output projection: low precision */
    vlm_tensor *o = vlm_attention_lowp(ctx, q, k, v, opts ? &opts->mask : NULL);
    if (!o) return NULL;
    int64_t s[3] = {o->shape[0], o->shape[1], o->shape[2] * o->shape[3]};
    return linear_res_fwd(ctx, &a->o, vlm_reshape(ctx, o, 3, s), opts ? opts->residual : NULL);
}

vlm_tensor *vlm_residual(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *f, float p, bool training) {
    return vlm_add(ctx, x, vlm_dropout(ctx, f, p, training));
}

vlm_tensor *vlm_residual_for(vlm_tensor *x, float p, bool training) {
    return p > 0 && training ? NULL : x;
}

vlm_tensor *vlm_encoder_block_fwd(vlm_ctx *ctx, const vlm_encoder_block *b, vlm_tensor *x,
                                  const vlm_attn_opts *mask, float eps, float dropout,
                                  bool training) {
    vlm_mha_opts o = {.residual = vlm_residual_for(x, dropout, training)};
    if (mask) o.mask = *mask;
    /* each norm's output feeds only linears (q, k, v; fc1): low precision */
    vlm_tensor *h = vlm_layernorm_lowp(ctx, x, b->ln1.w, b->ln1.b, eps);
    vlm_tensor *y = vlm_mha_fwd(ctx, &b->attn, h, h, &o);
    x = o.residual ? y : vlm_residual(ctx, x, y, dropout, training);
    h = vlm_layernorm_lowp(ctx, x, b->ln2.w, b->ln2.b, eps);
    vlm_tensor *r = vlm_residual_for(x, dropout, training);
    y = vlm_mlp_fwd(ctx, &b->mlp, h, r);
    return r ? y : vlm_residual(ctx, x, y, dropout, training);
}
