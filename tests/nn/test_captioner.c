/* test_captioner.c - the fusion block, the LLaMA-style decoder with its KV
 * cache and the whole captioner at tiny sizes: gradient checks over ALL
 * parameters (repeated with a 1%-wrong linear backward, which must fail;
 * the second whole-model variant skips that repeat to save time), HF names
 * and shapes, cached decoding against a full forward, the caption loss
 * against a cross-entropy computed here, and bad inputs. */
#include "nn.h"
#include "test.h"

#include <string.h>
#include <time.h>

/* Deterministic values in [-1, 1]. */
static vlm_tensor *input(vlm_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        vlm_f32(t)[i] = (float)((seed >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    return t;
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

/* Vision width 4, text width 6, decoder width 8 all differ, so a mix-up of
 * widths cannot pass. Shuffle 2 needs a 4 x 4 patch grid; either way the
 * decoder sees 4 image tokens. */
static vlm_model_cfg cap_cfg(int shuffle, bool tie) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    strcpy(c.type, "captioner");
    c.vision = (vlm_vision_cfg){.image_size = shuffle == 2 ? 8 : 4,
                                .patch = 2,
                                .channels = 3,
                                .width = 4,
                                .layers = 1,
                                .heads = 2,
                                .mlp = 8,
                                .ln_eps = 1e-6f};
    c.text = (vlm_text_cfg){.vocab = 11,
                            .ctx_len = 5,
                            .width = 6,
                            .layers = 1,
                            .heads = 2,
                            .mlp = 8,
                            .ln_eps = 1e-6f,
                            .pad_id = 0};
    c.fusion = (vlm_fusion_cfg){.heads = 2, .mlp = 5, .ln_eps = 1e-6f};
    c.decoder = (vlm_decoder_cfg){.vocab = 13,
                                  .width = 8,
                                  .layers = 2,
                                  .heads = 4,
                                  .kv_heads = 2,
                                  .mlp = 12,
                                  .max_len = 16,
                                  .rms_eps = 1e-5f,
                                  .rope_theta = 10000.0f,
                                  .tie_embeddings = tie};
    c.pixel_shuffle = shuffle;
    return c;
}

static vlm_model *new_model(const vlm_model_cfg *cfg, uint64_t seed) {
    vlm_model *m = vlm_model_new(cfg, 1);
    CHECK(m != NULL, "model: %s", vlm_last_error());
    if (m) randomise(m->params, seed);
    return m;
}

static const vlm_captioner *cap(const vlm_model *m) { return m->captioner; }

/* Freezes every parameter whose name does not start with prefix (NULL: none). */
static void train_only(vlm_model *m, const char *prefix) {
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        vlm_param_set_frozen(t, prefix && strncmp(t->name, prefix, strlen(prefix)) != 0);
    }
}

/* Name of the i-th trainable parameter (the checker's report->bad_input). */
static const char *trainable_name(vlm_params *p, int i) {
    for (int k = 0, n = 0; k < vlm_params_count(p); k++)
        if (vlm_params_at(p, k)->requires_grad && n++ == i) return vlm_params_at(p, k)->name;
    return "-";
}

static void check_params(const char *what, vlm_gc_params_fn f, void *user, vlm_params *p,
                         bool mutate) {
    clock_t t0 = clock();
    vlm_gc_report r;
    int rc = vlm_gradcheck_params(f, user, p, vlm_gc_default_tol(), 3, &r);
    CHECK(rc == 1, "%s: rc %d (%s) norm_rel_err %.3g param %s elem %lld analytic %.6g numeric %.6g",
          what, rc, rc < 0 ? vlm_last_error() : "", r.norm_rel_err, trainable_name(p, r.bad_input),
          (long long)r.bad_index, r.bad_analytic, r.bad_numeric);
    int64_t n = 0;
    for (int i = 0; i < vlm_params_count(p); i++)
        n += vlm_params_at(p, i)->requires_grad ? vlm_params_at(p, i)->numel : 0;
    printf("%-38s %5lld params  max_abs_err %.2e  norm_rel_err %.2e  (%.2f s cpu)\n", what,
           (long long)n, r.max_abs_err, r.norm_rel_err, (double)(clock() - t0) / CLOCKS_PER_SEC);
    if (!mutate) return;
    vlm_debug_mutate_backward("linear", 1.01f);
    rc = vlm_gradcheck_params(f, user, p, vlm_gc_default_tol(), 3, &r);
    vlm_debug_mutate_backward("linear", 1.0f);
    CHECK(rc == 0, "%s: a 1%%-wrong linear backward was not caught", what);
    printf("%-38s 1%%-wrong linear backward: norm_rel_err %.2e (caught: %s)\n", "", r.norm_rel_err,
           rc == 0 ? "yes" : "NO");
}

/* ---- shared inputs: B = 2, a padded prompt, a padded caption ---------------------- */

enum { B = 2, TP = 4, L = 5 };
static const int32_t prompt_ids[B * TP] = {1, 4, 7, 2, 3, 9, 0, 0};
static const uint8_t prompt_mask[B * TP] = {1, 1, 1, 1, 1, 1, 0, 0};
/* BOS 0 + caption; targets = caption + EOS 12, then -100 on the padding */
static const int32_t caption_in[B * L] = {0, 5, 8, 11, 2, 0, 7, 3, 1, 1};
static const int32_t targets[B * L] = {5, 8, 11, 2, 12, 7, 3, 12, -100, -100};

typedef struct {
    vlm_model *m;
    const int32_t *caption, *target, *prompt;
    bool use_mask;
} loss_case;

static vlm_tensor *i32_tensor(vlm_ctx *ctx, int64_t r, int64_t c, const int32_t *v) {
    return vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){r, c}, v);
}

static vlm_tensor *images_for(vlm_ctx *ctx, const vlm_model *m) {
    int s = m->cfg.vision.image_size;
    return input(ctx, 4, (int64_t[]){B, 3, s, s}, 5);
}

static vlm_tensor *f_loss(vlm_ctx *ctx, void *user) {
    loss_case *c = user;
    vlm_tensor *pm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, TP}, prompt_mask);
    return vlm_captioner_loss(ctx, c->m, images_for(ctx, c->m),
                              i32_tensor(ctx, B, TP, c->prompt ? c->prompt : prompt_ids),
                              c->use_mask ? pm : NULL,
                              i32_tensor(ctx, B, L, c->caption ? c->caption : caption_in),
                              i32_tensor(ctx, B, L, c->target ? c->target : targets), false);
}

/* ---- whole captioner --------------------------------------------------------------- */

static void test_captioner_gradcheck(void) {
    vlm_model_cfg cfg = cap_cfg(2, true);
    vlm_model *m = new_model(&cfg, 21);
    if (!m) return;
    loss_case c = {.m = m, .use_mask = true};
    check_params("captioner (s=2, tied, masks)", f_loss, &c, m->params, true);
    vlm_model_free(m);

    /* untied head, no shuffle, no prompt mask, and a frozen image tower:
     * the checker skips it, and no grad may reach it */
    cfg = cap_cfg(1, false);
    m = new_model(&cfg, 22);
    if (!m) return;
    train_only(m, NULL);
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        if (!strncmp(t->name, "vision_model.", 13)) vlm_param_set_frozen(t, true);
    }
    c = (loss_case){.m = m, .use_mask = false};
    check_params("captioner (s=1, untied, vision frozen)", f_loss, &c, m->params, false);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_params_zero_grad(m->params);
    CHECK(vlm_backward(ctx, f_loss(ctx, &c)) == 0, "%s", vlm_last_error());
    double frozen = 0, trained = 0;
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        double *sum = t->requires_grad ? &trained : &frozen;
        for (int64_t e = 0; e < t->numel; e++)
            *sum += fabs(t->grad[e]);
    }
    CHECK(frozen == 0 && trained > 0, "frozen grads %g, trained %g", frozen, trained);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

/* ---- fusion block and decoder alone ------------------------------------------------ */

static vlm_tensor *f_fusion(vlm_ctx *ctx, void *user) {
    const vlm_model *m = user;
    static const uint8_t mask[6] = {1, 1, 0, 1, 1, 1};
    vlm_tensor *text = input(ctx, 3, (int64_t[]){2, 3, 6}, 31);
    vlm_tensor *image = input(ctx, 3, (int64_t[]){2, 4, 4}, 32);
    vlm_tensor *tm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){2, 3}, mask), *pooled;
    vlm_tensor *t = vlm_fusion_forward(ctx, &cap(m)->fusion, text, image, tm, &pooled);
    if (!t) return NULL;
    vlm_tensor *parts[2] = {vlm_reshape(ctx, t, 2, (int64_t[]){2, 18}), pooled};
    return vlm_concat(ctx, parts, 2, 1); /* [2, 3*6 + 6]: tokens and pooled */
}

/* The decoder as trained: mean cross-entropy of logits [B, T, V] against
 * fixed labels. Checking the 156 logits themselves puts the checker's f32
 * rounding noise (it grows with the output count and as 1/h: measured
 * 1.9e-4 at h 1e-2, 8.5e-5 at 2e-2) at its atol of 1e-4; one scalar keeps it
 * far below. */
static vlm_tensor *ce_of(vlm_ctx *ctx, vlm_tensor *logits) {
    if (!logits) return NULL;
    int64_t n = logits->shape[0] * logits->shape[1], V = logits->shape[2];
    vlm_tensor *labels = vlm_tensor_new(ctx, VLM_I32, 1, (int64_t[]){n});
    if (!labels) return NULL;
    for (int64_t i = 0; i < n; i++)
        vlm_i32(labels)[i] = (int32_t)((i * 5 + 3) % V);
    return vlm_cross_entropy(ctx, vlm_reshape(ctx, logits, 2, (int64_t[]){n, V}), labels,
                             VLM_IGNORE_INDEX, 0.0f);
}

/* embeds [2, 6, D]: prefix of 3 with one padded key in row 1; dropout on */
static vlm_tensor *f_decoder(vlm_ctx *ctx, void *user) {
    const vlm_model *m = user;
    static const uint8_t km[12] = {1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1};
    vlm_tensor *x = input(ctx, 3, (int64_t[]){2, 6, m->cfg.decoder.width}, 41);
    vlm_attn_opts mask = {.kind = VLM_MASK_PREFIX,
                          .prefix_len = 3,
                          .key_mask = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){2, 6}, km)};
    return ce_of(ctx, vlm_decoder_forward(ctx, &cap(m)->decoder, x, &mask, NULL, true));
}

static void test_parts_gradcheck(void) {
    vlm_model_cfg cfg = cap_cfg(1, true);
    vlm_model *m = new_model(&cfg, 23);
    if (!m) return;
    train_only(m, "fusion.");
    check_params("fusion block", f_fusion, m, m->params, true);
    vlm_model_free(m);

    cfg.decoder.dropout = 0.25f; /* the checker repeats the dropout masks */
    m = new_model(&cfg, 24);
    if (!m) return;
    train_only(m, "decoder.");
    check_params("decoder (prefix mask, dropout)", f_decoder, m, m->params, true);
    vlm_model_free(m);
}

/* ---- names, shapes, init, tying ---------------------------------------------------- */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
} expect_t;

static void check_expected(const vlm_model *m, const expect_t *e, size_t n) {
    for (size_t i = 0; i < n; i++) {
        vlm_tensor *t = vlm_params_find(m->params, e[i].name);
        CHECK(t != NULL, "missing %s", e[i].name);
        if (!t) continue;
        bool ok = t->ndim == e[i].ndim;
        for (int d = 0; ok && d < t->ndim; d++)
            ok = t->shape[d] == e[i].shape[d];
        char s[64];
        CHECK(ok, "%s has shape %s", e[i].name, vlm_shape_str(t, s, sizeof s));
    }
}

static void test_names(void) {
    static const expect_t expect[] = {
        {"decoder.model.embed_tokens.weight", 2, {13, 8}},
        {"decoder.model.layers.0.self_attn.q_proj.weight", 2, {8, 8}},
        {"decoder.model.layers.0.self_attn.k_proj.weight", 2, {4, 8}}, /* kv_heads * hd */
        {"decoder.model.layers.0.self_attn.v_proj.weight", 2, {4, 8}},
        {"decoder.model.layers.0.self_attn.o_proj.weight", 2, {8, 8}},
        {"decoder.model.layers.1.mlp.gate_proj.weight", 2, {12, 8}},
        {"decoder.model.layers.1.mlp.up_proj.weight", 2, {12, 8}},
        {"decoder.model.layers.1.mlp.down_proj.weight", 2, {8, 12}},
        {"decoder.model.layers.1.input_layernorm.weight", 1, {8}},
        {"decoder.model.layers.1.post_attention_layernorm.weight", 1, {8}},
        {"decoder.model.norm.weight", 1, {8}},
        {"fusion.ln_q.weight", 1, {6}},
        {"fusion.ln_q.bias", 1, {6}},
        {"fusion.ln_kv.weight", 1, {4}},
        {"fusion.attn.q_proj.weight", 2, {6, 6}},
        {"fusion.attn.k_proj.weight", 2, {6, 4}}, /* keys from the vision width */
        {"fusion.attn.v_proj.bias", 1, {6}},
        {"fusion.attn.out_proj.weight", 2, {6, 6}},
        {"fusion.ln_mlp.bias", 1, {6}},
        {"fusion.mlp.fc1.weight", 2, {5, 6}},
        {"fusion.mlp.fc2.bias", 1, {6}},
        {"image_proj.weight", 2, {8, 16}}, /* vision width * s^2 */
        {"image_proj.bias", 1, {8}},
        {"fused_proj.weight", 2, {8, 6}},
        {"fused_proj.bias", 1, {8}},
    };
    vlm_model_cfg cfg = cap_cfg(2, true);
    vlm_model *m = vlm_model_new(&cfg, 7);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (!m) return;
    check_expected(m, expect, sizeof expect / sizeof *expect);
    CHECK(vlm_params_find(m->params, "decoder.lm_head.weight") == NULL, "tied: no lm_head");
    CHECK(cap(m)->decoder.lm_head == cap(m)->decoder.embed, "tied head is the embedding");
    int per_layer = 0, fusion = 0, biases = 0;
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        const char *n = t->name;
        per_layer += !strncmp(n, "decoder.model.layers.1.", 23);
        fusion += !strncmp(n, "fusion.", 7);
        biases += !strncmp(n, "decoder.", 8) && strstr(n, "bias") != NULL;
        /* init by name: norm weights 1, biases 0, the rest small */
        bool norm_w = t->ndim == 1 && strstr(n, ".weight") &&
                      (!strncmp(n, "decoder.", 8) || !strncmp(n, "fusion.", 7));
        if (norm_w) CHECK(vlm_f32(t)[0] == 1.0f, "%s initialised to %g, not 1", n, vlm_f32(t)[0]);
    }
    CHECK(per_layer == 9, "decoder layer 1 has %d tensors (HF: 9)", per_layer);
    CHECK(vlm_params_numel(m->params) == vlm_model_cfg_param_count(&cfg),
          "declared %lld parameters, the config counts %lld",
          (long long)vlm_params_numel(m->params), (long long)vlm_model_cfg_param_count(&cfg));
    CHECK(fusion == 18, "fusion block has %d tensors", fusion);
    CHECK(biases == 0, "LLaMA has no biases, found %d", biases);
    vlm_model_free(m);

    cfg = cap_cfg(1, false);
    m = vlm_model_new(&cfg, 7);
    static const expect_t untied[] = {{"decoder.lm_head.weight", 2, {13, 8}},
                                      {"image_proj.weight", 2, {8, 4}}};
    if (m) check_expected(m, untied, 2);
    if (m)
        CHECK(vlm_params_numel(m->params) == vlm_model_cfg_param_count(&cfg),
              "untied: declared %lld parameters, the config counts %lld",
              (long long)vlm_params_numel(m->params), (long long)vlm_model_cfg_param_count(&cfg));
    vlm_model_free(m);
}

/* d(sum logits^2) with embeds fed directly: the embedding gets a grad only
 * through the head, so it has one iff the head is tied. */
static void test_tying(bool tie) {
    vlm_model_cfg cfg = cap_cfg(1, tie);
    vlm_model *m = new_model(&cfg, 25);
    if (!m) return;
    const vlm_decoder *d = &cap(m)->decoder;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_params_zero_grad(m->params);
    vlm_tensor *x = input(ctx, 3, (int64_t[]){2, 3, 8}, 3);
    vlm_tensor *y = vlm_decoder_forward(ctx, d, x, NULL, NULL, false);
    CHECK(vlm_backward(ctx, vlm_sum_all(ctx, vlm_mul(ctx, y, y))) == 0, "%s", vlm_last_error());
    int rows_with_grad = 0;
    for (int v = 0; v < 13; v++) {
        double s = 0;
        for (int e = 0; e < 8; e++)
            s += fabs(d->embed->grad[v * 8 + e]);
        rows_with_grad += s > 0;
    }
    CHECK(rows_with_grad == (tie ? 13 : 0), "tie %d: %d embedding rows got a grad", tie,
          rows_with_grad);
    if (!tie) {
        double s = 0;
        for (int64_t e = 0; e < d->lm_head->numel; e++)
            s += fabs(d->lm_head->grad[e]);
        CHECK(s > 0, "untied lm_head got no grad");
    }
    vlm_params_zero_grad(m->params);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

/* ---- KV cache -------------------------------------------------------------------------- */

/* max |a[:, t0:t0+T] - chunk| over logits [B, Tfull, V] and chunk [B, T, V] */
static double chunk_diff(const vlm_tensor *full, const vlm_tensor *chunk, int64_t t0) {
    if (!chunk) return INFINITY;
    int64_t T = chunk->shape[1], V = chunk->shape[2], Tf = full->shape[1];
    double worst = 0;
    for (int64_t b = 0; b < full->shape[0]; b++)
        for (int64_t i = 0; i < T * V; i++) {
            double dd =
                fabs(vlm_f32(full)[(b * Tf + t0) * V + i] - vlm_f32(chunk)[(b * T) * V + i]);
            worst = dd > worst ? dd : worst;
        }
    return worst;
}

/* Prefill the prefix of 4, then 2 tokens at once, then one at a time; every
 * chunk's logits must match the full forward's (prefix-LM mask). With
 * use_mask, prefix key 1 of row 1 is padding: stored in the cache, it must
 * stay masked in later calls; that case also records grads, which takes the
 * cache's other path (cached rows concatenated with the new, graph-carrying
 * ones). */
static void test_kv_cache_case(bool use_mask) {
    vlm_model_cfg cfg = cap_cfg(1, true);
    cfg.decoder.width = 16; /* head dim 4: two RoPE frequencies */
    cfg.decoder.max_len = 12;
    vlm_model *m = new_model(&cfg, 26);
    if (!m) return;
    const vlm_decoder *d = &cap(m)->decoder;
    enum { T = 10, P = 4 };
    uint8_t km[B * T];
    memset(km, 1, sizeof km);
    km[T + 1] = 0;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_set_grad_enabled(ctx, use_mask);
    vlm_tensor *x = input(ctx, 3, (int64_t[]){B, T, 16}, 9);
    vlm_tensor *kmt = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, T}, km);
    vlm_attn_opts full_mask = {
        .kind = VLM_MASK_PREFIX, .prefix_len = P, .key_mask = use_mask ? kmt : NULL};
    vlm_tensor *full = vlm_decoder_forward(ctx, d, x, &full_mask, NULL, false);
    CHECK(full != NULL, "%s", vlm_last_error());
    vlm_kv_cache *c = vlm_kv_cache_new(&cfg.decoder, B, T);
    CHECK(c != NULL && vlm_kv_cache_len(c) == 0, "%s", vlm_last_error());
    if (!full || !c) goto done;
    double worst = 0;
    vlm_attn_opts pre = {.kind = VLM_MASK_PREFIX,
                         .prefix_len = P,
                         .key_mask = use_mask ? vlm_slice(ctx, kmt, 1, 0, P) : NULL};
    worst =
        fmax(worst,
             chunk_diff(
                 full, vlm_decoder_forward(ctx, d, vlm_slice(ctx, x, 1, 0, P), &pre, c, false), 0));
    worst =
        fmax(worst,
             chunk_diff(
                 full, vlm_decoder_forward(ctx, d, vlm_slice(ctx, x, 1, P, 2), NULL, c, false), P));
    /* PREFIX with the prefix already cached is causal: absolute prefix_len */
    vlm_attn_opts later = {.kind = VLM_MASK_PREFIX, .prefix_len = P};
    for (int t = P + 2; t < T; t++) {
        vlm_tensor *y = vlm_decoder_forward(ctx, d, vlm_slice(ctx, x, 1, t, 1), &later, c, false);
        worst = fmax(worst, chunk_diff(full, y, t));
    }
    CHECK(worst <= 1e-5, "max |full - cached| = %g", worst);
    CHECK(vlm_kv_cache_len(c) == T, "cache len %lld", (long long)vlm_kv_cache_len(c));
    printf("kv cache (%s): max |full - cached| logits %.2e\n",
           use_mask ? "key mask, grad on" : "no mask, no grad", worst);
    /* one more position overflows max_len 10, naming both numbers; nothing changes */
    CHECK(vlm_decoder_forward(ctx, d, vlm_slice(ctx, x, 1, 0, 1), NULL, c, false) == NULL &&
              strstr(vlm_last_error(), "10 cached + 1 new") &&
              strstr(vlm_last_error(), "max_len 10"),
          "overflow: %s", vlm_last_error());
    CHECK(vlm_kv_cache_len(c) == T, "a failed call changed the cache");
    vlm_kv_cache_reset(c);
    CHECK(vlm_kv_cache_len(c) == 0, "reset");
done:
    vlm_kv_cache_free(c);
    vlm_ctx_free(ctx);
    vlm_model_free(m);
}

/* A decode step with grad on: the cache (filled by a fixed copy of the
 * weights) is a constant, so the step's grads must match finite differences
 * of the step alone; a 1%-wrong linear backward must show. */
typedef struct {
    vlm_model *m, *copy;
    vlm_kv_cache *c;
} step_case;

static vlm_tensor *f_cached_step(vlm_ctx *ctx, void *user) {
    step_case *s = user;
    vlm_tensor *x = input(ctx, 3, (int64_t[]){B, 6, 8}, 43);
    vlm_attn_opts pre = {.kind = VLM_MASK_PREFIX, .prefix_len = 4};
    vlm_kv_cache_reset(s->c);
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *y = vlm_decoder_forward(ctx, &cap(s->copy)->decoder, vlm_slice(ctx, x, 1, 0, 4),
                                        &pre, s->c, false);
    vlm_set_grad_enabled(ctx, prev);
    if (!y) return NULL;
    return ce_of(ctx, vlm_decoder_forward(ctx, &cap(s->m)->decoder, vlm_slice(ctx, x, 1, 4, 2),
                                          NULL, s->c, false));
}

static void test_cached_step_gradcheck(void) {
    vlm_model_cfg cfg = cap_cfg(1, true);
    step_case s = {new_model(&cfg, 27), new_model(&cfg, 27), vlm_kv_cache_new(&cfg.decoder, B, 6)};
    CHECK(s.c != NULL, "%s", vlm_last_error());
    if (s.m && s.copy && s.c) {
        train_only(s.m, "decoder.");
        check_params("decoder step with KV cache", f_cached_step, &s, s.m->params, true);
    }
    vlm_kv_cache_free(s.c);
    vlm_model_free(s.m);
    vlm_model_free(s.copy);
}

/* ---- the caption loss ------------------------------------------------------------------ */

static double loss_of(loss_case *c) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_set_grad_enabled(ctx, false);
    vlm_tensor *y = f_loss(ctx, c);
    double v = y ? vlm_f32(y)[0] : NAN;
    CHECK(y != NULL, "loss: %s", vlm_last_error());
    vlm_ctx_free(ctx);
    return v;
}

/* The loss rebuilt from public parts: prefix, embeddings, the decoder's
 * logits under a hand-made mask, cross-entropy in double over the caption
 * positions whose target is not ignored. */
static double hand_loss(const vlm_model *m) {
    const vlm_decoder *d = &cap(m)->decoder;
    enum { P = 4 + TP, TT = P + L, V = 13 };
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_set_grad_enabled(ctx, false);
    vlm_tensor *pm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, TP}, prompt_mask);
    vlm_tensor *parts[2] = {vlm_captioner_prefix(ctx, m, images_for(ctx, m),
                                                 i32_tensor(ctx, B, TP, prompt_ids), pm, false),
                            vlm_decoder_embed(ctx, d, i32_tensor(ctx, B, L, caption_in))};
    CHECK(parts[0] && parts[0]->shape[1] == P && parts[0]->shape[2] == 8, "prefix: %s",
          vlm_last_error());
    uint8_t km[B * TT];
    memset(km, 1, sizeof km);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < TP; t++)
            km[b * TT + 4 + t] = prompt_mask[b * TP + t];
    vlm_tensor *kmt = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){B, TT}, km);
    vlm_tensor *helper = vlm_captioner_key_mask(ctx, m, pm, L);
    CHECK(helper && helper->numel == B * TT && !memcmp(helper->data, km, sizeof km),
          "vlm_captioner_key_mask differs from [1 x 4 image; prompt mask; 1 x L]");
    vlm_attn_opts mask = {.kind = VLM_MASK_PREFIX, .prefix_len = P, .key_mask = kmt};
    vlm_tensor *y = vlm_decoder_forward(ctx, d, vlm_concat(ctx, parts, 2, 1), &mask, NULL, false);
    double sum = 0;
    int n = 0;
    for (int b = 0; y && b < B; b++)
        for (int i = 0; i < L; i++) {
            int32_t t = targets[b * L + i];
            if (t == VLM_IGNORE_INDEX) continue;
            const float *z = vlm_f32(y) + ((int64_t)b * TT + P + i) * V;
            double mx = z[0], se = 0;
            for (int v = 1; v < V; v++)
                mx = fmax(mx, z[v]);
            for (int v = 0; v < V; v++)
                se += exp(z[v] - mx);
            sum += mx + log(se) - z[t];
            n++;
        }
    vlm_ctx_free(ctx);
    return y ? sum / n : NAN;
}

static void test_loss(void) {
    vlm_model_cfg cfg = cap_cfg(1, true);
    vlm_model *m = new_model(&cfg, 28);
    if (!m) return;
    loss_case c = {.m = m, .use_mask = true};
    double base = loss_of(&c), hand = hand_loss(m);
    CHECK_NEAR(base, hand, 1e-5);
    printf("caption loss %.7f, by hand %.7f\n", base, hand);
    /* caption tokens whose targets (and all later ones) are ignored */
    int32_t cap2[B * L], tgt2[B * L], pr2[B * TP];
    memcpy(cap2, caption_in, sizeof cap2);
    cap2[L + 3] = 9, cap2[L + 4] = 12;
    c.caption = cap2;
    CHECK_NEAR(loss_of(&c), base, 1e-6);
    /* the prompt's padding */
    memcpy(pr2, prompt_ids, sizeof pr2);
    pr2[TP + 2] = 10, pr2[TP + 3] = 5;
    c = (loss_case){.m = m, .use_mask = true, .prompt = pr2};
    CHECK_NEAR(loss_of(&c), base, 1e-6);
    /* ...but a valid prompt token, a valid caption token or a target does count */
    pr2[TP + 1] = 7;
    CHECK(fabs(loss_of(&c) - base) > 1e-4, "a valid prompt token does not change the loss");
    memcpy(cap2, caption_in, sizeof cap2);
    cap2[L + 1] = 4;
    c = (loss_case){.m = m, .use_mask = true, .caption = cap2};
    CHECK(fabs(loss_of(&c) - base) > 1e-4, "a valid caption token does not change the loss");
    memcpy(tgt2, targets, sizeof tgt2);
    tgt2[0] = 6;
    c = (loss_case){.m = m, .use_mask = true, .target = tgt2};
    CHECK(fabs(loss_of(&c) - base) > 1e-4, "a valid target does not change the loss");
    for (int i = 0; i < B * L; i++)
        tgt2[i] = VLM_IGNORE_INDEX;
    CHECK(loss_of(&c) == 0.0, "every target ignored: loss 0");
    vlm_model_free(m);
}

/* ---- bad inputs ------------------------------------------------------------------------ */

#define EXPECT_ERR(expr, substr)                                                                   \
    do {                                                                                           \
        vlm_clear_error();                                                                         \
        bool null_ = (expr) == NULL;                                                               \
        CHECK(null_ &&strstr(vlm_last_error(), substr), "%s: NULL %d, error '%s', want '%s'",      \
              #expr, null_, vlm_last_error(), substr);                                             \
    } while (0)

static void test_bad_captioner_inputs(vlm_ctx *ctx, vlm_model *m) {
    vlm_tensor *img = images_for(ctx, m), *ids = i32_tensor(ctx, B, TP, prompt_ids);
    vlm_tensor *ids3 = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){3, TP});
    vlm_tensor *cap = i32_tensor(ctx, B, L, caption_in), *tgt = i32_tensor(ctx, B, L, targets);
    vlm_tensor *cap3 = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){3, L});
    vlm_tensor *long9 = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){B, 9});
    vlm_tensor *capf = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){B, L});
    vlm_tensor *tgtu8 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){B, L});
    vlm_tensor *tgt4 = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){B, 4});
    vlm_tensor *idsf = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){B, TP});
    vlm_tensor *mask3 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){B, 3});
    vlm_tensor *img9 = vlm_zeros(ctx, VLM_F32, 4, (int64_t[]){B, 3, 9, 9});
    EXPECT_ERR(vlm_captioner_prefix(ctx, m, img, ids3, NULL, false), "same B");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, cap3, cap3, false), "images' B");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, long9, long9, false),
               "4 image tokens + 4 prompt + 9 caption = 17 positions exceed "
               "model.decoder.max_len 16");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, capf, tgt, false), "caption_in f32");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, cap, tgtu8, false), "targets u8");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, cap, tgt4, false), "targets i32 [2, 4]");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, idsf, NULL, cap, tgt, false), "ids must be i32");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, mask3, cap, tgt, false), "key mask");
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img9, ids, NULL, cap, tgt, false), "[2, 3, 9, 9]");
    vlm_tensor *tgt13 = i32_tensor(ctx, B, L, targets);
    vlm_i32(tgt13)[2] = 13; /* vocab 13 */
    EXPECT_ERR(vlm_captioner_loss(ctx, m, img, ids, NULL, cap, tgt13, false), "label 13");
    EXPECT_ERR(vlm_captioner_key_mask(ctx, m, ids, 0), "u8 [B, Tp] prompt mask");
}

static void test_bad_decoder_inputs(vlm_ctx *ctx, vlm_model *m) {
    const vlm_decoder *d = &cap(m)->decoder;
    const vlm_fusion_block *f = &cap(m)->fusion;
    vlm_tensor *x = input(ctx, 3, (int64_t[]){B, 3, 8}, 1);
    vlm_tensor *x7 = input(ctx, 3, (int64_t[]){B, 3, 7}, 1);
    vlm_tensor *x17 = input(ctx, 3, (int64_t[]){B, 17, 8}, 1);
    vlm_tensor *km4 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){B, 4});
    EXPECT_ERR(vlm_decoder_forward(ctx, d, x7, NULL, NULL, false), "embeds must be f32 [B, T, 8]");
    EXPECT_ERR(vlm_decoder_forward(ctx, d, x17, NULL, NULL, false),
               "17 positions, more than model.decoder.max_len 16");
    vlm_attn_opts bad_km = {.kind = VLM_MASK_CAUSAL, .key_mask = km4};
    EXPECT_ERR(vlm_decoder_forward(ctx, d, x, &bad_km, NULL, false), "[B, T] = [2, 3]");
    vlm_attn_opts bad_prefix = {.kind = VLM_MASK_PREFIX, .prefix_len = 5};
    EXPECT_ERR(vlm_decoder_forward(ctx, d, x, &bad_prefix, NULL, false), "prefix_len 5 outside");
    EXPECT_ERR(vlm_decoder_embed(ctx, d, x), "ids must be i32");
    vlm_tensor *text = input(ctx, 3, (int64_t[]){2, 3, 6}, 2);
    vlm_tensor *img3 = input(ctx, 3, (int64_t[]){3, 4, 4}, 3);
    EXPECT_ERR(vlm_fusion_forward(ctx, f, text, img3, NULL, NULL), "same B");
    EXPECT_ERR(vlm_fusion_forward(ctx, f, x, vlm_slice(ctx, img3, 0, 0, 2), NULL, NULL),
               "text must be f32 [B, T, 6]");
    EXPECT_ERR(vlm_kv_cache_new(&m->cfg.decoder, 0, 8), "batch 0");
    EXPECT_ERR(vlm_kv_cache_new(&m->cfg.decoder, 1, 17), "max_len 17");
    vlm_kv_cache *c1 = vlm_kv_cache_new(&m->cfg.decoder, 1, 8);
    EXPECT_ERR(vlm_decoder_forward(ctx, d, x, NULL, c1, false), "does not fit");
    vlm_kv_cache_free(c1);
}

static void test_bad_inputs(void) {
    vlm_model_cfg cfg = cap_cfg(1, true);
    vlm_model *m = new_model(&cfg, 29);
    vlm_model_cfg scfg = cap_cfg(1, true);
    strcpy(scfg.type, "siglip");
    vlm_model *sig = vlm_model_new(&scfg, 1);
    vlm_ctx *ctx = vlm_ctx_new(0);
    if (m && sig) {
        test_bad_captioner_inputs(ctx, m);
        test_bad_decoder_inputs(ctx, m);
        vlm_tensor *img = images_for(ctx, m), *ids = i32_tensor(ctx, B, TP, prompt_ids);
        EXPECT_ERR(vlm_captioner_prefix(ctx, sig, img, ids, NULL, false), "not a captioner");
    }
    vlm_ctx_free(ctx);
    vlm_model_free(sig);
    vlm_model_free(m);
}

static void test_bad_configs(void) {
    vlm_model_cfg base = cap_cfg(2, true), c;
    c = base, c.decoder.width = 0;
    EXPECT_ERR(vlm_model_new(&c, 1), "model.decoder.width");
    c = base, c.decoder.max_len = 5; /* 4 image tokens + prompt + caption need 6 */
    EXPECT_ERR(vlm_model_new(&c, 1), "max_len (5)");
    c = base, c.decoder.rope_theta = 0;
    EXPECT_ERR(vlm_model_new(&c, 1), "rope_theta");
    c = base, c.decoder.rms_eps = 0;
    EXPECT_ERR(vlm_model_new(&c, 1), "rms_eps");
    c = base, c.decoder.kv_heads = 3;
    EXPECT_ERR(vlm_model_new(&c, 1), "model.decoder.kv_heads");
    c = base, c.pixel_shuffle = 3;
    EXPECT_ERR(vlm_model_new(&c, 1), "model.pixel_shuffle");
    c = base, c.fusion.heads = 5;
    EXPECT_ERR(vlm_model_new(&c, 1), "model.fusion.heads");
}

int main(void) {
    test_names();
    test_tying(true);
    test_tying(false);
    test_kv_cache_case(false);
    test_kv_cache_case(true);
    test_loss();
    test_bad_inputs();
    test_bad_configs();
    test_parts_gradcheck();
    test_cached_step_gradcheck();
    test_captioner_gradcheck();
    return TEST_DONE();
}
