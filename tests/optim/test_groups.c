/* test_groups.c - default parameter grouping on real models (the exact
 * no-decay list of a tiny SigLIP, the captioner's names), lr multipliers by
 * prefix, and a frozen vision tower: after real forward/backward/update
 * steps its values and optimizer state are unchanged bit for bit, its grads
 * are never read, and its state pages never become resident. */
#include "optim.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static vlm_model_cfg tiny_cfg(const char *type) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    strcpy(c.type, type);
    c.vision = (vlm_vision_cfg){.image_size = 8, .patch = 4, .channels = 3, .width = 8,
                                .layers = 1, .heads = 2, .mlp = 12, .ln_eps = 1e-6f};
    c.text = (vlm_text_cfg){.vocab = 11, .ctx_len = 5, .width = 8, .layers = 1, .heads = 2,
                            .mlp = 12, .ln_eps = 1e-6f, .pad_id = 0};
    c.fusion = (vlm_fusion_cfg){.heads = 2, .mlp = 12, .ln_eps = 1e-6f};
    c.decoder.vocab = 13;
    c.decoder.width = 8;
    c.decoder.layers = 1;
    c.decoder.heads = 2;
    c.decoder.kv_heads = 1;
    c.decoder.mlp = 12;
    c.decoder.max_len = 16;
    return c;
}

/* Every parameter of the tiny SigLIP that must not decay. */
static const char *no_decay_expected[] = {
    "vision_model.embeddings.patch_embedding.bias",
    "vision_model.embeddings.position_embedding.weight",
    "vision_model.encoder.layers.0.layer_norm1.weight",
    "vision_model.encoder.layers.0.layer_norm1.bias",
    "vision_model.encoder.layers.0.layer_norm2.weight",
    "vision_model.encoder.layers.0.layer_norm2.bias",
    "vision_model.encoder.layers.0.self_attn.q_proj.bias",
    "vision_model.encoder.layers.0.self_attn.k_proj.bias",
    "vision_model.encoder.layers.0.self_attn.v_proj.bias",
    "vision_model.encoder.layers.0.self_attn.out_proj.bias",
    "vision_model.encoder.layers.0.mlp.fc1.bias",
    "vision_model.encoder.layers.0.mlp.fc2.bias",
    "vision_model.post_layernorm.weight",
    "vision_model.post_layernorm.bias",
    "vision_model.head.probe",
    "vision_model.head.attention.in_proj_bias",
    "vision_model.head.attention.out_proj.bias",
    "vision_model.head.layernorm.weight",
    "vision_model.head.layernorm.bias",
    "vision_model.head.mlp.fc1.bias",
    "vision_model.head.mlp.fc2.bias",
    "text_model.embeddings.token_embedding.weight",
    "text_model.embeddings.position_embedding.weight",
    "text_model.encoder.layers.0.layer_norm1.weight",
    "text_model.encoder.layers.0.layer_norm1.bias",
    "text_model.encoder.layers.0.layer_norm2.weight",
    "text_model.encoder.layers.0.layer_norm2.bias",
    "text_model.encoder.layers.0.self_attn.q_proj.bias",
    "text_model.encoder.layers.0.self_attn.k_proj.bias",
    "text_model.encoder.layers.0.self_attn.v_proj.bias",
    "text_model.encoder.layers.0.self_attn.out_proj.bias",
    "text_model.encoder.layers.0.mlp.fc1.bias",
    "text_model.encoder.layers.0.mlp.fc2.bias",
    "text_model.final_layer_norm.weight",
    "text_model.final_layer_norm.bias",
    "text_model.head.bias",
    "logit_scale",
    "logit_bias",
};
/* ... and every one that must. */
static const char *decay_expected[] = {
    "vision_model.embeddings.patch_embedding.weight",
    "vision_model.encoder.layers.0.self_attn.q_proj.weight",
    "vision_model.encoder.layers.0.self_attn.k_proj.weight",
    "vision_model.encoder.layers.0.self_attn.v_proj.weight",
    "vision_model.encoder.layers.0.self_attn.out_proj.weight",
    "vision_model.encoder.layers.0.mlp.fc1.weight",
    "vision_model.encoder.layers.0.mlp.fc2.weight",
    "vision_model.head.attention.in_proj_weight",
    "vision_model.head.attention.out_proj.weight",
    "vision_model.head.mlp.fc1.weight",
    "vision_model.head.mlp.fc2.weight",
    "text_model.encoder.layers.0.self_attn.q_proj.weight",
    "text_model.encoder.layers.0.self_attn.k_proj.weight",
    "text_model.encoder.layers.0.self_attn.v_proj.weight",
    "text_model.encoder.layers.0.self_attn.out_proj.weight",
    "text_model.encoder.layers.0.mlp.fc1.weight",
    "text_model.encoder.layers.0.mlp.fc2.weight",
    "text_model.head.weight",
};
#define COUNT(a) ((int)(sizeof(a) / sizeof(a)[0]))

static bool group_has(const vlm_param_group *g, const vlm_params *p, const char *name) {
    for (int j = 0; j < g->n_params; j++)
        if (strcmp(vlm_params_at(p, g->params[j])->name, name) == 0) return true;
    return false;
}

static void test_default_grouping(void) {
    vlm_model_cfg mc = tiny_cfg("siglip");
    vlm_model *m = vlm_model_new(&mc, 1);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (!m) return;
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.weight_decay = 0.05f;
    cfg.total_steps = 10;
    vlm_optim *o = vlm_optim_new(m->params, &cfg);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    CHECK(vlm_optim_group_count(o) == 2, "groups: %d", vlm_optim_group_count(o));
    const vlm_param_group *d = vlm_optim_group(o, 0), *nd = vlm_optim_group(o, 1);
    if (strcmp(d->name, "decay") != 0) {
        const vlm_param_group *t = d;
        d = nd;
        nd = t;
    }
    CHECK(strcmp(d->name, "decay") == 0 && strcmp(nd->name, "no_decay") == 0, "names %s %s",
          d->name, nd->name);
    CHECK(d->weight_decay == 0.05f && nd->weight_decay == 0.0f && d->lr_mult == 1.0f &&
              nd->lr_mult == 1.0f,
          "group settings");
    CHECK(nd->n_params == COUNT(no_decay_expected) && d->n_params == COUNT(decay_expected),
          "no_decay has %d (want %d), decay %d (want %d)", nd->n_params,
          COUNT(no_decay_expected), d->n_params, COUNT(decay_expected));
    CHECK(nd->n_params + d->n_params == vlm_params_count(m->params), "every parameter grouped");
    for (int i = 0; i < COUNT(no_decay_expected); i++)
        CHECK(group_has(nd, m->params, no_decay_expected[i]), "%s must not decay",
              no_decay_expected[i]);
    for (int i = 0; i < COUNT(decay_expected); i++)
        CHECK(group_has(d, m->params, decay_expected[i]), "%s must decay", decay_expected[i]);
    printf("tiny SigLIP: %d parameters, %d in no_decay (%lld values), %d in decay (%lld values)\n",
           vlm_params_count(m->params), nd->n_params, (long long)nd->numel, d->n_params,
           (long long)d->numel);
    vlm_optim_free(o);
    vlm_model_free(m);
}

static void test_captioner_names(void) {
    vlm_model_cfg mc = tiny_cfg("captioner");
    vlm_model *m = vlm_model_new(&mc, 1);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (!m) return;
    const struct {
        const char *name;
        bool no_decay;
    } cases[] = {
        {"fusion.ln_q.weight", true},  /* a norm gain without "norm" in its name */
        {"fusion.ln_kv.bias", true},
        {"fusion.attn.q_proj.weight", false},
        {"fusion.mlp.fc1.weight", false},
        {"decoder.model.embed_tokens.weight", true},
        {"decoder.model.layers.0.input_layernorm.weight", true},
        {"decoder.model.layers.0.post_attention_layernorm.weight", true},
        {"decoder.model.layers.0.self_attn.o_proj.weight", false},
        {"decoder.model.layers.0.mlp.gate_proj.weight", false},
        {"decoder.model.norm.weight", true},
        {"image_proj.weight", false},
        {"image_proj.bias", true},
        {"fused_proj.weight", false},
    };
    for (int i = 0; i < COUNT(cases); i++) {
        vlm_tensor *t = vlm_params_find(m->params, cases[i].name);
        CHECK(t && vlm_param_no_decay(t) == cases[i].no_decay, "%s: %s", cases[i].name,
              t ? (cases[i].no_decay ? "must not decay" : "must decay") : "missing");
    }
    vlm_model_free(m);
}

static void test_lr_mults(void) {
    vlm_model_cfg mc = tiny_cfg("siglip");
    vlm_model *m = vlm_model_new(&mc, 1);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (!m) return;
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.total_steps = 10;
    cfg.n_lr_mults = 2;
    cfg.lr_mults[0] = (vlm_lr_mult){"vision_model.", 0.1f};
    cfg.lr_mults[1] = (vlm_lr_mult){"vision_model.head.", 0.5f}; /* longest prefix wins */
    vlm_optim *o = vlm_optim_new(m->params, &cfg);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    CHECK(vlm_optim_group_count(o) == 6, "groups %d", vlm_optim_group_count(o));
    bool ok = true;
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        const vlm_param_group *g = vlm_optim_group(o, vlm_optim_group_of(o, i));
        float want = strncmp(t->name, "vision_model.head.", 18) == 0 ? 0.5f
                     : strncmp(t->name, "vision_model.", 13) == 0    ? 0.1f
                                                                      : 1.0f;
        bool good = g && g->lr_mult == want &&
                    g->weight_decay == (vlm_param_no_decay(t) ? 0.0f : cfg.weight_decay);
        if (!good) printf("  %s: group %s\n", t->name, g ? g->name : "none");
        ok &= good;
    }
    CHECK(ok, "every parameter in the group of its prefix and decay rule");
    for (int g = 0; g < vlm_optim_group_count(o); g++)
        printf("  group %-24s lr_mult %.2f wd %.2f: %2d params\n", vlm_optim_group(o, g)->name,
               (double)vlm_optim_group(o, g)->lr_mult, (double)vlm_optim_group(o, g)->weight_decay,
               vlm_optim_group(o, g)->n_params);
    vlm_optim_free(o);
    vlm_model_free(m);
}

/* ---- a frozen tower ------------------------------------------------------------ */

static vlm_tensor *input(vlm_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        vlm_f32(t)[i] = (float)((seed >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    return t;
}

static void poison_frozen_grads(vlm_params *p) {
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        if (!t->requires_grad)
            for (int64_t j = 0; j < t->numel; j++) t->grad[j] = NAN;
    }
}

static void test_frozen_tower(void) {
    vlm_model_cfg mc = tiny_cfg("siglip");
    vlm_model *m = vlm_model_new(&mc, 3);
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    CHECK(m && ctx, "%s", vlm_last_error());
    if (!m || !ctx) return;
    vlm_params *p = m->params;
    int n_frozen = 0;
    for (int i = 0; i < vlm_params_count(p); i++)
        if (strncmp(vlm_params_at(p, i)->name, "vision_model.", 13) == 0) {
            vlm_param_set_frozen(vlm_params_at(p, i), true);
            n_frozen++;
        }
    int64_t N = vlm_params_numel(p);
    float *v0 = malloc((size_t)N * sizeof *v0);
    memcpy(v0, vlm_params_values(p), (size_t)N * sizeof *v0);
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.lr = 1e-2f;
    cfg.total_steps = 5;
    cfg.clip_norm = 1.0f;
    vlm_optim *o = vlm_optim_new(p, &cfg);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    for (int i = 0; i < vlm_params_count(p); i++)
        if (!vlm_params_at(p, i)->requires_grad)
            CHECK(vlm_optim_group_of(o, i) == -1, "frozen %s is in a group",
                  vlm_params_at(p, i)->name);
    static const int32_t ids[8] = {1, 4, 7, 2, 3, 9, 10, 2};
    for (int s = 0; s < 5; s++) {
        vlm_params_zero_grad(p);
        poison_frozen_grads(p);
        vlm_tensor *img = input(ctx, 4, (int64_t[]){2, 3, 8, 8}, 5 + (uint64_t)s);
        vlm_tensor *t = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){2, 4}, ids);
        vlm_tensor *loss = vlm_siglip_forward(ctx, m, img, t, NULL, NULL, true, NULL, NULL);
        CHECK(loss && vlm_backward(ctx, loss) == 0, "%s", vlm_last_error());
        vlm_step_info info;
        CHECK(vlm_optim_update(o, NULL, &info) == 0 && !info.skipped && isfinite(info.grad_norm),
              "step %d: skipped %d norm %g: frozen NaN grads were read?", s, info.skipped,
              info.grad_norm);
        vlm_ctx_reset(ctx);
    }
    bool frozen_same = true, trained_moved = false, state_zero = true, finite = true;
    float *M = vlm_optim_state(o, 0, NULL), *V = vlm_optim_state(o, 1, NULL);
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        int64_t off = vlm_params_offset(p, t);
        bool same = memcmp(vlm_f32(t), v0 + off, (size_t)t->numel * sizeof(float)) == 0;
        for (int64_t j = 0; j < t->numel; j++) finite &= isfinite(vlm_f32(t)[j]);
        if (!t->requires_grad) {
            frozen_same &= same;
            for (int64_t j = 0; j < t->numel; j++) state_zero &= M[off + j] == 0 && V[off + j] == 0;
        } else {
            trained_moved |= !same;
        }
    }
    printf("frozen vision tower: %d tensors unchanged after 5 steps: %s; state zero: %s\n",
           n_frozen, frozen_same ? "yes" : "no", state_zero ? "yes" : "no");
    CHECK(frozen_same, "frozen values changed");
    CHECK(state_zero, "frozen optimizer state was written");
    CHECK(trained_moved && finite, "the text tower did not train (or went non-finite)");
    free(v0);
    vlm_optim_free(o);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

/* Pages of [addr, addr + len) resident in memory, or -1 if mincore fails. */
static long resident_pages(const void *addr, size_t len) {
    long page = sysconf(_SC_PAGESIZE);
    size_t n = (len + (size_t)page - 1) / (size_t)page;
    unsigned char *vec = malloc(n);
    if (!vec || mincore((void *)addr, len, vec) != 0) {
        free(vec);
        return -1;
    }
    long r = 0;
    for (size_t i = 0; i < n; i++) r += vec[i] & 1;
    free(vec);
    return r;
}

/* A 16 MiB frozen parameter costs no resident optimizer state. */
static void test_frozen_costs_nothing(void) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "frozen.weight", 2, (int64_t[]){2048, 2048});
    vlm_param_add(p, "head.weight", 2, (int64_t[]){64, 64});
    CHECK(vlm_params_finalize(p) == 0, "%s", vlm_last_error());
    vlm_param_set_frozen(vlm_params_find(p, "frozen.weight"), true);
    vlm_tensor *h = vlm_params_find(p, "head.weight");
    for (int64_t j = 0; j < h->numel; j++) h->grad[j] = 1e-3f * (float)(j % 7);
    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.total_steps = 10;
    vlm_optim *o = vlm_optim_new(p, &cfg);
    CHECK(o != NULL, "%s", vlm_last_error());
    if (!o) return;
    for (int s = 0; s < 3; s++) vlm_optim_update(o, NULL, NULL);
    /* stay 4 MiB clear of the trainable part: a transparent huge page (2 MiB)
     * faulted in for it may legitimately cover its neighbourhood */
    size_t frozen_bytes = (size_t)2048 * 2048 * sizeof(float), probe = frozen_bytes - (4u << 20);
    for (int k = 0; k < 2; k++) {
        float *st = vlm_optim_state(o, k, NULL);
        long cold = resident_pages(st, probe);
        long hot = resident_pages(st + vlm_params_offset(p, h), (size_t)h->numel * sizeof(float));
        if (cold < 0 || hot < 0) {
            printf("mincore unavailable: residency not checked\n");
            break;
        }
        printf("%s: %ld resident pages over the frozen 12 MiB, %ld over the trained part\n",
               vlm_optim_state_name(o, k), cold, hot);
        CHECK(cold == 0 && hot > 0, "state %d: frozen pages resident %ld, trained %ld", k, cold,
              hot);
    }
    vlm_optim_free(o);
    vlm_params_free(p);
}

int main(void) {
    test_default_grouping();
    test_captioner_names();
    test_lr_mults();
    test_frozen_tower();
    test_frozen_costs_nothing();
    return TEST_DONE();
}
