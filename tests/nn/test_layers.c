/* test_layers.c - gradient checks of every layer and of the complete SigLIP
 * model at tiny sizes, over ALL parameter gradients; HF names and
 * initialisation. Each check is also run with a 1%-wrong linear backward
 * and must then fail. */
#include "nn.h"
#include "test.h"

#include <string.h>

/* Deterministic input values in [-1, 1]. */
static vlm_tensor *input(vlm_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        vlm_f32(t)[i] = (float)((seed >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    return t;
}

typedef struct {
    int kind;
    vlm_linear_p lin;
    vlm_norm_p norm;
    vlm_mlp_p mlp;
    vlm_swiglu_p swiglu;
    vlm_attn_p attn;
    vlm_encoder_block block;
} layer_case;

enum { LINEAR, LAYERNORM, MLP, SWIGLU, SELF_ATTN, CROSS_ATTN, GQA_ROPE, BLOCK };

static vlm_tensor *f_layer(vlm_ctx *ctx, void *user) {
    layer_case *c = user;
    vlm_tensor *x = input(ctx, 3, (int64_t[]){2, 3, 6}, 7);
    vlm_tensor *kv = input(ctx, 3, (int64_t[]){2, 5, 4}, 9);
    vlm_mha_opts causal = {.mask = {.kind = VLM_MASK_CAUSAL}, .rope_theta = 10000};
    switch (c->kind) {
    case LINEAR: return vlm_linear_fwd(ctx, &c->lin, x);
    case LAYERNORM: return vlm_layernorm_fwd(ctx, &c->norm, x, 1e-6f);
    case MLP: return vlm_mlp_fwd(ctx, &c->mlp, x, NULL);
    case SWIGLU: return vlm_swiglu_fwd(ctx, &c->swiglu, x, NULL);
    case SELF_ATTN: return vlm_mha_fwd(ctx, &c->attn, x, x, NULL);
    case CROSS_ATTN: return vlm_mha_fwd(ctx, &c->attn, x, kv, NULL);
    case GQA_ROPE: return vlm_mha_fwd(ctx, &c->attn, x, x, &causal);
    case BLOCK: return vlm_encoder_block_fwd(ctx, &c->block, x, NULL, 1e-6f, 0, false);
    }
    return NULL;
}

static int declare(vlm_params *p, layer_case *c) {
    switch (c->kind) {
    case LINEAR: return vlm_linear_declare(p, &c->lin, 6, 5, true, "lin");
    case LAYERNORM: return vlm_norm_declare(p, &c->norm, 6, true, "ln");
    case MLP: return vlm_mlp_declare(p, &c->mlp, 6, 7, "mlp");
    case SWIGLU: return vlm_swiglu_declare(p, &c->swiglu, 6, 7, "mlp");
    case SELF_ATTN: return vlm_attn_declare(p, &c->attn, 6, 6, 2, 2, 3, true, "out_proj", "attn");
    case CROSS_ATTN: return vlm_attn_declare(p, &c->attn, 6, 4, 2, 2, 3, true, "out_proj", "attn");
    case GQA_ROPE: return vlm_attn_declare(p, &c->attn, 6, 6, 4, 2, 2, false, "o_proj", "attn");
    case BLOCK: return vlm_encoder_block_declare(p, &c->block, 6, 2, 7, "blk");
    }
    return -1;
}

/* Norm weights start at 1 and biases at 0: perturb them so their grads are generic. */
static void randomise(vlm_params *p, uint64_t seed) {
    vlm_init_params(p, seed);
    float *v = vlm_params_values(p);
    for (int64_t i = 0; i < vlm_params_numel(p); i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        v[i] += (float)((seed >> 40) * (0.6 / 16777216.0) - 0.3);
    }
}

static void check_params(const char *what, vlm_gc_params_fn f, void *user, vlm_params *p) {
    vlm_gc_report r;
    int rc = vlm_gradcheck_params(f, user, p, vlm_gc_default_tol(), 3, &r);
    CHECK(rc == 1, "%s: rc %d (%s) norm_rel_err %.3g param %s elem %lld analytic %.6g numeric %.6g",
          what, rc, rc < 0 ? vlm_last_error() : "", r.norm_rel_err,
          r.bad_input >= 0 ? vlm_params_at(p, r.bad_input)->name : "-", (long long)r.bad_index,
          r.bad_analytic, r.bad_numeric);
    printf("%-28s %6lld params  max_abs_err %.2e  norm_rel_err %.2e\n", what,
           (long long)vlm_params_numel(p), r.max_abs_err, r.norm_rel_err);
    vlm_debug_mutate_backward("linear", 1.01f);
    rc = vlm_gradcheck_params(f, user, p, vlm_gc_default_tol(), 3, &r);
    vlm_debug_mutate_backward("linear", 1.0f);
    CHECK(rc == 0, "%s: a 1%%-wrong linear backward was not caught", what);
}

static void test_layers(void) {
    const char *names[] = {"linear", "layernorm", "gelu mlp", "swiglu mlp", "self-attention",
                           "cross-attention", "gqa + rope (causal)", "encoder block"};
    for (int k = LINEAR; k <= BLOCK; k++) {
        layer_case c = {.kind = k};
        vlm_params *p = vlm_params_new();
        CHECK(declare(p, &c) == 0 && vlm_params_finalize(p) == 0, "%s: %s", names[k],
              vlm_last_error());
        randomise(p, 11 + (uint64_t)k);
        if (k == LAYERNORM) { /* no linear inside: check without the mutation pass */
            vlm_gc_report r;
            CHECK(vlm_gradcheck_params(f_layer, &c, p, vlm_gc_default_tol(), 3, &r) == 1,
                  "layernorm: norm_rel_err %g", r.norm_rel_err);
        } else {
            check_params(names[k], f_layer, &c, p);
        }
        vlm_params_free(p);
    }
}

/* ---- the whole SigLIP model ------------------------------------------------------ */

static vlm_model_cfg tiny_cfg(void) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    c.vision = (vlm_vision_cfg){.image_size = 8, .patch = 4, .channels = 3, .width = 8,
                                .layers = 1, .heads = 2, .mlp = 12, .ln_eps = 1e-6f};
    c.text = (vlm_text_cfg){.vocab = 11, .ctx_len = 5, .width = 8, .layers = 1, .heads = 2,
                            .mlp = 12, .ln_eps = 1e-6f, .pad_id = 0};
    return c;
}

typedef struct {
    vlm_model *m;
    bool use_mask;
} model_case;

static vlm_tensor *f_siglip(vlm_ctx *ctx, void *user) {
    model_case *c = user;
    vlm_tensor *img = input(ctx, 4, (int64_t[]){3, 3, 8, 8}, 5);
    static const int32_t ids[15] = {1, 4, 7, 2, 0, 3, 3, 9, 10, 2, 5, 6, 1, 0, 0};
    static const uint8_t key_mask[15] = {1, 1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0};
    static const uint8_t match[9] = {1, 0, 1, 0, 1, 0, 1, 0, 1}; /* rows 0 and 2 share a class */
    vlm_tensor *t = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){3, 5}, ids);
    vlm_tensor *km = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){3, 5}, key_mask);
    vlm_tensor *mm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){3, 3}, match);
    return vlm_siglip_forward(ctx, c->m, img, t, c->use_mask ? km : NULL, c->use_mask ? mm : NULL,
                              false, NULL, NULL);
}

static void test_siglip_model(void) {
    vlm_model_cfg cfg = tiny_cfg();
    vlm_model *m = vlm_model_new(&cfg, 1);
    CHECK(m != NULL, "model: %s", vlm_last_error());
    if (!m) return;
    randomise(m->params, 2);
    /* keep the logits in sigmoid's sensitive range so every grad is sizeable */
    vlm_f32(m->logit_scale)[0] = 1.0f;
    vlm_f32(m->logit_bias)[0] = 0.1f;
    model_case c = {m, false};
    check_params("siglip model", f_siglip, &c, m->params);
    c.use_mask = true;
    check_params("siglip model (masks)", f_siglip, &c, m->params);

    /* frozen tower: its parameters get no grads at all */
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        if (!strncmp(t->name, "vision_model.", 13)) vlm_param_set_frozen(t, true);
    }
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_params_zero_grad(m->params);
    CHECK(vlm_backward(ctx, f_siglip(ctx, &c)) == 0, "%s", vlm_last_error());
    double frozen = 0, trained = 0;
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        double *sum = t->requires_grad ? &trained : &frozen;
        for (int64_t e = 0; e < t->numel; e++) *sum += fabs(t->grad[e]);
    }
    CHECK(frozen == 0 && trained > 0, "frozen grads %g, trained %g", frozen, trained);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

static void test_names_and_init(void) {
    vlm_model_cfg cfg = tiny_cfg();
    vlm_model *a = vlm_model_new(&cfg, 7), *b = vlm_model_new(&cfg, 7), *c = vlm_model_new(&cfg, 8);
    const char *expect[] = {
        "vision_model.embeddings.patch_embedding.weight",
        "vision_model.embeddings.patch_embedding.bias",
        "vision_model.embeddings.position_embedding.weight",
        "vision_model.encoder.layers.0.self_attn.q_proj.weight",
        "vision_model.encoder.layers.0.self_attn.out_proj.bias",
        "vision_model.encoder.layers.0.layer_norm1.weight",
        "vision_model.encoder.layers.0.mlp.fc2.weight",
        "vision_model.post_layernorm.bias",
        "vision_model.head.probe",
        "vision_model.head.attention.in_proj_weight",
        "vision_model.head.attention.in_proj_bias",
        "vision_model.head.attention.out_proj.weight",
        "vision_model.head.layernorm.weight",
        "vision_model.head.mlp.fc1.weight",
        "text_model.embeddings.token_embedding.weight",
        "text_model.embeddings.position_embedding.weight",
        "text_model.encoder.layers.0.self_attn.v_proj.bias",
        "text_model.final_layer_norm.weight",
        "text_model.head.weight",
        "logit_scale",
        "logit_bias",
    };
    for (size_t i = 0; i < sizeof expect / sizeof *expect; i++)
        CHECK(vlm_params_find(a->params, expect[i]) != NULL, "missing %s", expect[i]);
    /* 16 tensors per encoder layer, as in HF */
    int layer0 = 0;
    for (int i = 0; i < vlm_params_count(a->params); i++)
        layer0 += !strncmp(vlm_params_at(a->params, i)->name, "text_model.encoder.layers.0.", 28);
    CHECK(layer0 == 16, "text layer 0 has %d tensors", layer0);
    vlm_tensor *pe = vlm_params_find(a->params, "vision_model.embeddings.patch_embedding.weight");
    CHECK(pe->ndim == 4 && pe->shape[0] == 8 && pe->shape[1] == 3 && pe->shape[3] == 4,
          "conv weight layout [D, C, p, p]");
    int64_t n = vlm_params_numel(a->params);
    CHECK(!memcmp(vlm_params_values(a->params), vlm_params_values(b->params), (size_t)n * 4),
          "same seed, same init");
    CHECK(memcmp(vlm_params_values(a->params), vlm_params_values(c->params), (size_t)n * 4),
          "another seed, another init");
    CHECK_NEAR(vlm_f32(a->logit_scale)[0], logf(10.0f), 1e-7);
    CHECK(vlm_f32(a->logit_bias)[0] == -10.0f, "logit_bias init");
    CHECK(vlm_f32(vlm_params_find(a->params, "text_model.final_layer_norm.weight"))[3] == 1.0f,
          "norm weight 1");
    /* std of a large weight close to 0.02 */
    vlm_tensor *w = vlm_params_find(a->params, "vision_model.embeddings.patch_embedding.weight");
    double ss = 0;
    for (int64_t i = 0; i < w->numel; i++) ss += (double)vlm_f32(w)[i] * vlm_f32(w)[i];
    CHECK(fabs(sqrt(ss / (double)w->numel) - 0.02) < 0.003, "init std %g", sqrt(ss / (double)w->numel));
    vlm_model_free(a);
    vlm_model_free(b);
    vlm_model_free(c);
}

static void test_bad_inputs(void) {
    vlm_model_cfg cfg = tiny_cfg();
    vlm_model *m = vlm_model_new(&cfg, 1);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *img = input(ctx, 4, (int64_t[]){2, 3, 9, 9}, 1), *pooled;
    CHECK(vlm_vision_forward(ctx, &m->vision, img, false, &pooled) == NULL &&
              strstr(vlm_last_error(), "[2, 3, 9, 9]"),
          "wrong image size: %s", vlm_last_error());
    vlm_tensor *ids = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){2, 6});
    CHECK(vlm_text_forward(ctx, &m->text, ids, NULL, false, &pooled) == NULL &&
              strstr(vlm_last_error(), "text tower"),
          "too long: %s", vlm_last_error());
    vlm_tensor *bad = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){2, 5});
    vlm_i32(bad)[3] = 11; /* vocab is 11 */
    CHECK(vlm_text_forward(ctx, &m->text, bad, NULL, false, &pooled) == NULL &&
              strstr(vlm_last_error(), "embedding"),
          "id out of range: %s", vlm_last_error());
    vlm_model_cfg broken = cfg;
    broken.vision.heads = 3;
    CHECK(vlm_model_new(&broken, 1) == NULL && strstr(vlm_last_error(), "model.vision.heads"),
          "%s", vlm_last_error());
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

int main(void) {
    test_names_and_init();
    test_layers();
    test_siglip_model();
    test_bad_inputs();
    return TEST_DONE();
}
