/* test_hf_config.c - model configs from Hugging Face checkpoints, loading HF
 * weights, parameter counts, and the shipped configs/.
 *
 * Fixtures (tests/nn/fixtures/hf/, scripts/gen_hf_config_fixtures.py): tiny
 * hub-style snapshots (sparse config.json + model.safetensors with HF names):
 * a nested SiglipModel, a flat SiglipVisionModel, a tied SmolLM2-style Llama
 * ("model." prefix, BF16, rotary inv_freq buffers) and an untied sparse Llama
 * without the "model." prefix. Asserted:
 *   - the derived configs equal the sizes the shapes imply, with the HF
 *     defaults for absent keys (12 SigLIP heads, eps 1e-6, pad 1, Llama kv =
 *     heads, rms 1e-6, theta 1e4, max 2048, tied iff no lm_head);
 *   - the models built from them load every parameter from the file (values
 *     compared bit for bit after the f32 conversion), parameters the file does
 *     not cover are left untouched, position_ids / inv_freq buffers skipped;
 *   - parameter counts from configs alone: siglip-base-patch16-224 =
 *     203,155,970, SmolLM2-135M's decoder = 134,515,008, and equal to the
 *     built model's numel for every config small enough to build;
 *   - errors name the file and the key: missing files, malformed JSON, a
 *     config size that disagrees with a shape, wrong JSON types, unsupported
 *     settings, head counts that do not divide, missing/unexpected/misshapen
 *     tensors at load time (and the config / model are left untouched);
 *   - every configs/<name>.json with a "model" key binds and validates (a snippet
 *     without "type" is validated merged into a captioner), the bench configs
 *     have exactly their documented sizes. */
#define _GNU_SOURCE
#include "nn.h"
#include "test.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char src_dir[1024];
static char tmp_dir[64];

static const char *path_in(const char *dir, const char *name) {
    static char buf[8][1400];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

static const char *fx(const char *name) {
    static char dir[1100];
    snprintf(dir, sizeof dir, "%s/tests/nn/fixtures/hf", src_dir);
    return path_in(dir, name);
}

static const char *tmp(const char *name) { return path_in(tmp_dir, name); }

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    CHECK(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

/* rc must be an error whose message contains every non-NULL needle. */
static void expect_error(int rc, const char *what, const char *n1, const char *n2,
                         const char *n3) {
    const char *e = vlm_last_error();
    CHECK(rc != 0, "%s: expected an error", what);
    if (getenv("VLM_TEST_VERBOSE")) printf("  %-28s %s\n", what, e); /* to read the messages */
    const char *needles[3] = {n1, n2, n3};
    for (int i = 0; i < 3; i++)
        if (needles[i])
            CHECK(strstr(e, needles[i]) != NULL, "%s: error \"%s\" does not mention \"%s\"", what,
                  e, needles[i]);
}

/* ---- comparing a model with a file ---------------------------------------------- */

/* Every parameter called param_prefix + X equals file tensor file_prefix + X
 * (read as f32, bitwise). Returns how many matched. */
static int params_match_file(vlm_params *p, const char *path, const char *param_prefix,
                             const char *file_prefix) {
    vlm_st *st = vlm_st_open(path);
    CHECK(st != NULL, "%s", vlm_last_error());
    if (!st) return 0;
    int matched = 0;
    size_t lp = strlen(param_prefix);
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        if (strncmp(t->name, param_prefix, lp) != 0) continue;
        char name[512];
        snprintf(name, sizeof name, "%s%s", file_prefix, t->name + lp);
        float *ref = malloc((size_t)t->numel * sizeof *ref);
        int rc = ref ? vlm_st_read_f32(st, name, ref, t->numel) : -1;
        CHECK(rc == 0, "%s: %s", name, vlm_last_error());
        bool same = rc == 0 && memcmp(ref, vlm_f32(t), (size_t)t->numel * sizeof *ref) == 0;
        CHECK(same, "parameter %s differs from %s in %s", t->name, name, path);
        matched += same;
        free(ref);
    }
    vlm_st_close(st);
    return matched;
}

/* Parameters with prefix (NULL = all) whose values differ from a snapshot. */
static int changed_since(const vlm_params *p, const float *snap, const char *prefix) {
    int n = 0;
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        if (prefix && strncmp(t->name, prefix, strlen(prefix)) != 0) continue;
        n += memcmp(vlm_f32(t), snap + vlm_params_offset(p, t), (size_t)t->numel * 4) != 0;
    }
    return n;
}

static float *snapshot(vlm_params *p) {
    size_t n = (size_t)vlm_params_numel(p);
    float *s = malloc(n * sizeof *s);
    CHECK(s != NULL, "out of memory");
    if (s) memcpy(s, vlm_params_values(p), n * sizeof *s);
    return s;
}

static int count_with_prefix(const vlm_params *p, const char *prefix) {
    int n = 0;
    for (int i = 0; i < vlm_params_count(p); i++)
        n += strncmp(vlm_params_at(p, i)->name, prefix, strlen(prefix)) == 0;
    return n;
}

/* ---- SigLIP --------------------------------------------------------------------------- */

static void test_siglip_nested(void) {
    vlm_model_cfg cfg;
    vlm_model_cfg_defaults(&cfg);
    int rc = vlm_model_cfg_from_hf_siglip(&cfg, fx("siglip/config.json"),
                                          fx("siglip/model.safetensors"));
    CHECK(rc == 0, "siglip: %s", vlm_last_error());
    if (rc) return;
    const vlm_vision_cfg *v = &cfg.vision;
    const vlm_text_cfg *t = &cfg.text;
    /* sizes from shapes (image_size and mlp are not in config.json), heads
     * from the default (12) for vision and from the config (2) for text */
    CHECK(v->image_size == 16 && v->patch == 4 && v->channels == 3 && v->width == 24 &&
              v->layers == 3 && v->heads == 12 && v->mlp == 32 && v->ln_eps == 1e-6f,
          "vision %d/%d/%d width %d layers %d heads %d mlp %d eps %g", v->image_size, v->patch,
          v->channels, v->width, v->layers, v->heads, v->mlp, (double)v->ln_eps);
    CHECK(t->vocab == 50 && t->ctx_len == 8 && t->width == 16 && t->layers == 2 && t->heads == 2 &&
              t->mlp == 40 && t->ln_eps == 1e-5f && t->pad_id == 1,
          "text vocab %d ctx %d width %d layers %d heads %d mlp %d eps %g pad %d", t->vocab,
          t->ctx_len, t->width, t->layers, t->heads, t->mlp, (double)t->ln_eps, t->pad_id);
    CHECK(strcmp(cfg.type, "siglip") == 0 && cfg.embed_dim == 24, "type %s embed %d", cfg.type,
          cfg.embed_dim);

    vlm_model *m = vlm_model_new(&cfg, 7);
    CHECK(m != NULL, "model: %s", vlm_last_error());
    if (!m) return;
    CHECK(vlm_model_cfg_param_count(&cfg) == vlm_params_numel(m->params),
          "count %lld, model %lld", (long long)vlm_model_cfg_param_count(&cfg),
          (long long)vlm_params_numel(m->params));
    float *v0 = vlm_params_values(m->params);
    for (int64_t i = 0; i < vlm_params_numel(m->params); i++)
        v0[i] = NAN; /* anything the file does not set stays NaN and differs */
    rc = vlm_load_hf_siglip(m, fx("siglip/model.safetensors"));
    CHECK(rc == 0, "load: %s", vlm_last_error());
    int n = params_match_file(m->params, fx("siglip/model.safetensors"), "", "");
    /* 104 parameters: every tensor of the file but the two position_ids buffers */
    CHECK(n == vlm_params_count(m->params) && n == 104, "%d of %d parameters match the file", n,
          vlm_params_count(m->params));

    /* a model of another size: shape error naming the tensor and both shapes, model untouched */
    vlm_model_cfg other = cfg;
    other.text.vocab = 51;
    vlm_model *m2 = vlm_model_new(&other, 7);
    CHECK(m2 != NULL, "%s", vlm_last_error());
    if (m2) {
        float *snap = snapshot(m2->params);
        rc = vlm_load_hf_siglip(m2, fx("siglip/model.safetensors"));
        expect_error(rc, "shape mismatch", "text_model.embeddings.token_embedding.weight",
                     "[50, 16]", "[51, 16]");
        CHECK(snap && changed_since(m2->params, snap, NULL) == 0, "model changed by a failed load");
        free(snap);
        vlm_model_free(m2);
    }

    /* missing and unexpected tensors, from files written here */
    const char *skip[] = {"vision_model.post_layernorm.bias", NULL};
    CHECK(vlm_st_save_params(m->params, tmp("missing.safetensors"), NULL, skip) == 0, "%s",
          vlm_last_error());
    float *snap = snapshot(m->params);
    rc = vlm_load_hf_siglip(m, tmp("missing.safetensors"));
    expect_error(rc, "missing tensor", "missing.safetensors", "vision_model.post_layernorm.bias",
                 "missing");
    vlm_st_writer *w = vlm_st_writer_new();
    CHECK(w != NULL, "%s", vlm_last_error());
    float extra[4] = {0};
    int64_t pos_ids[8] = {0, 1, 2, 3, 4, 5, 6, 7};
    for (int i = 0; w && i < vlm_params_count(m->params); i++) {
        vlm_tensor *p = vlm_params_at(m->params, i);
        vlm_st_writer_add(w, p->name, "F32", p->ndim, p->shape, vlm_f32(p));
    }
    if (w) {
        /* position_ids alone is fine; the extra tensor is not */
        vlm_st_writer_add(w, "text_model.embeddings.position_ids", "I64", 2, (int64_t[]){1, 8},
                          pos_ids);
        CHECK(vlm_st_writer_save(w, tmp("ok.safetensors")) == 0, "%s", vlm_last_error());
        CHECK(vlm_load_hf_siglip(m, tmp("ok.safetensors")) == 0, "position_ids: %s",
              vlm_last_error());
        vlm_st_writer_add(w, "vision_model.extra.weight", "F32", 1, (int64_t[]){4}, extra);
        CHECK(vlm_st_writer_save(w, tmp("extra.safetensors")) == 0, "%s", vlm_last_error());
        vlm_st_writer_free(w);
        rc = vlm_load_hf_siglip(m, tmp("extra.safetensors"));
        expect_error(rc, "unexpected tensor", "extra.safetensors", "vision_model.extra.weight",
                     "no matching");
    }
    CHECK(snap && changed_since(m->params, snap, NULL) == 0, "model changed by failed loads");
    free(snap);
    rc = vlm_load_hf_decoder(m, fx("llama/model.safetensors"));
    expect_error(rc, "decoder into siglip", "no decoder", "siglip", NULL);
    vlm_model_free(m);
}

/* A captioner whose image tower comes from a flat SiglipVisionModel and whose
 * decoder comes from a SmolLM2-style file. */
static void test_captioner_from_hf(void) {
    vlm_model_cfg cfg;
    vlm_model_cfg_defaults(&cfg);
    strcpy(cfg.type, "captioner");
    vlm_text_cfg text0 = cfg.text;
    int rc = vlm_model_cfg_from_hf_llama(&cfg.decoder, fx("llama/config.json"),
                                         fx("llama/model.safetensors"));
    CHECK(rc == 0, "llama: %s", vlm_last_error());
    rc = rc ? rc
            : vlm_model_cfg_from_hf_siglip(&cfg, fx("siglip_vision/config.json"),
                                           fx("siglip_vision/model.safetensors"));
    CHECK(rc == 0, "siglip vision: %s", vlm_last_error());
    if (rc) return;
    const vlm_vision_cfg *v = &cfg.vision;
    CHECK(v->image_size == 16 && v->patch == 4 && v->width == 16 && v->layers == 1 &&
              v->heads == 2 && v->mlp == 32,
          "flat vision: %d/%d width %d layers %d heads %d mlp %d", v->image_size, v->patch,
          v->width, v->layers, v->heads, v->mlp);
    CHECK(memcmp(&cfg.text, &text0, sizeof text0) == 0, "the text tower changed");
    CHECK(strcmp(cfg.type, "captioner") == 0, "type %s", cfg.type);
    vlm_model *m = vlm_model_new(&cfg, 3);
    CHECK(m != NULL, "captioner: %s", vlm_last_error());
    if (!m) return;
    CHECK(vlm_model_cfg_param_count(&cfg) == vlm_params_numel(m->params), "count %lld vs %lld",
          (long long)vlm_model_cfg_param_count(&cfg), (long long)vlm_params_numel(m->params));
    float *snap = snapshot(m->params);
    rc = vlm_load_hf_siglip(m, fx("siglip_vision/model.safetensors"));
    CHECK(rc == 0, "load vision: %s", vlm_last_error());
    rc = vlm_load_hf_decoder(m, fx("llama/model.safetensors"));
    CHECK(rc == 0, "load decoder: %s", vlm_last_error());
    int nv = params_match_file(m->params, fx("siglip_vision/model.safetensors"), "vision_model.",
                               "vision_model.");
    int nd = params_match_file(m->params, fx("llama/model.safetensors"), "decoder.model.",
                               "model.");
    CHECK(nv == 32 && nv == count_with_prefix(m->params, "vision_model."), "%d vision params", nv);
    CHECK(nd == 20 && nd == count_with_prefix(m->params, "decoder."), "%d decoder params", nd);
    CHECK(vlm_params_find(m->params, "decoder.lm_head.weight") == NULL, "tied head declared");
    if (snap) {
        CHECK(changed_since(m->params, snap, "text_model.") == 0 &&
                  changed_since(m->params, snap, "fusion.") == 0 &&
                  changed_since(m->params, snap, "image_proj.") == 0 &&
                  changed_since(m->params, snap, "logit_") == 0,
              "parameters outside the loaded towers changed");
        free(snap);
    }
    /* the full SigLIP file's text tower (width 16) does not fit this
     * captioner's (width 64): named error, nothing written */
    snap = snapshot(m->params);
    rc = vlm_load_hf_siglip(m, fx("siglip/model.safetensors"));
    expect_error(rc, "siglip text into captioner", "siglip/model.safetensors", "text_model.",
                 "but the model's parameter");
    CHECK(snap && changed_since(m->params, snap, NULL) == 0, "model changed by a failed load");
    free(snap);
    vlm_model_free(m);
}

/* ---- Llama ---------------------------------------------------------------------------- */

static void test_llama(void) {
    vlm_model_cfg base;
    vlm_model_cfg_defaults(&base);
    vlm_decoder_cfg d = base.decoder;
    d.dropout = 0.25f; /* not an HF setting: kept */
    int rc = vlm_model_cfg_from_hf_llama(&d, fx("llama/config.json"), fx("llama/model.safetensors"));
    CHECK(rc == 0, "tied: %s", vlm_last_error());
    CHECK(d.vocab == 64 && d.width == 32 && d.layers == 2 && d.heads == 4 && d.kv_heads == 2 &&
              d.mlp == 40 && d.max_len == 64 && d.rms_eps == 1e-5f && d.rope_theta == 1e5f &&
              d.tie_embeddings && d.dropout == 0.25f,
          "tied: vocab %d width %d layers %d heads %d kv %d mlp %d max %d eps %g theta %g tied %d",
          d.vocab, d.width, d.layers, d.heads, d.kv_heads, d.mlp, d.max_len, (double)d.rms_eps,
          (double)d.rope_theta, d.tie_embeddings);

    /* sparse config, no "model." prefix, lm_head present: LlamaConfig defaults */
    vlm_decoder_cfg u = base.decoder;
    rc = vlm_model_cfg_from_hf_llama(&u, fx("llama_untied/config.json"),
                                     fx("llama_untied/model.safetensors"));
    CHECK(rc == 0, "untied: %s", vlm_last_error());
    CHECK(u.vocab == 64 && u.width == 32 && u.layers == 2 && u.heads == 4 && u.kv_heads == 4 &&
              u.mlp == 40 && u.max_len == 2048 && u.rms_eps == 1e-6f && u.rope_theta == 1e4f &&
              !u.tie_embeddings,
          "untied: kv %d max %d eps %g theta %g tied %d", u.kv_heads, u.max_len,
          (double)u.rms_eps, (double)u.rope_theta, u.tie_embeddings);
    CHECK(vlm_decoder_cfg_param_count(&u) ==
              vlm_decoder_cfg_param_count(&(vlm_decoder_cfg){.vocab = 64, .width = 32, .layers = 2,
                                                             .heads = 4, .kv_heads = 4, .mlp = 40,
                                                             .tie_embeddings = true}) +
                  64 * 32,
          "an untied head adds V x D");

    base.decoder = u;
    strcpy(base.type, "captioner");
    vlm_model *m = vlm_model_new(&base, 5);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (!m) return;
    rc = vlm_load_hf_decoder(m, fx("llama_untied/model.safetensors"));
    CHECK(rc == 0, "load untied: %s", vlm_last_error());
    int nd = params_match_file(m->params, fx("llama_untied/model.safetensors"), "decoder.model.",
                               "");
    int nh = params_match_file(m->params, fx("llama_untied/model.safetensors"),
                               "decoder.lm_head.", "lm_head.");
    CHECK(nd == 20 && nh == 1 && count_with_prefix(m->params, "decoder.") == 21,
          "%d body + %d head parameters loaded", nd, nh);
    vlm_model_free(m);

    /* the tied file has no lm_head for an untied model of its sizes */
    base.decoder = d;
    base.decoder.tie_embeddings = false;
    m = vlm_model_new(&base, 5);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (m) {
        float *snap = snapshot(m->params);
        rc = vlm_load_hf_decoder(m, fx("llama/model.safetensors"));
        expect_error(rc, "untied model, tied file", "decoder.lm_head.weight", "missing", NULL);
        CHECK(snap && changed_since(m->params, snap, NULL) == 0, "model changed by a failed load");
        free(snap);
        vlm_model_free(m);
    }
    base.decoder = u;

    /* a tied model and a file whose lm_head is not the embedding */
    base.decoder.tie_embeddings = true;
    m = vlm_model_new(&base, 5);
    CHECK(m != NULL, "%s", vlm_last_error());
    if (m) {
        rc = vlm_load_hf_decoder(m, fx("llama_untied/model.safetensors"));
        expect_error(rc, "tied model, untied file", "lm_head.weight differs", "tie_embeddings",
                     NULL);
        vlm_model_free(m);
    }
}

/* ---- errors --------------------------------------------------------------------------- */

static int siglip_with(const char *json, vlm_model_cfg *cfg) {
    write_text(tmp("config.json"), json);
    return vlm_model_cfg_from_hf_siglip(cfg, tmp("config.json"), fx("siglip/model.safetensors"));
}

static int llama_with(const char *json, vlm_decoder_cfg *dec) {
    write_text(tmp("config.json"), json);
    return vlm_model_cfg_from_hf_llama(dec, tmp("config.json"), fx("llama/model.safetensors"));
}

static void test_errors(void) {
    vlm_model_cfg cfg, before;
    vlm_model_cfg_defaults(&cfg);
    before = cfg;
    /* copies: fx() and tmp() hand out rotating buffers */
    char cj[1400], sw[1400];
    snprintf(cj, sizeof cj, "%s", fx("siglip/config.json"));
    snprintf(sw, sizeof sw, "%s", fx("siglip/model.safetensors"));

    expect_error(vlm_model_cfg_from_hf_siglip(&cfg, "/nonexistent/config.json", sw),
                 "missing config", "/nonexistent/config.json", NULL, NULL);
    expect_error(vlm_model_cfg_from_hf_siglip(&cfg, cj, "/nonexistent/model.safetensors"),
                 "missing weights", "/nonexistent/model.safetensors", NULL, NULL);
    expect_error(siglip_with("{\"text_config\": {\"hidden_size\": 16,\n", &cfg), "malformed",
                 "config.json", "invalid JSON", NULL);
    expect_error(siglip_with("[1, 2]", &cfg), "not an object", "config.json", "object", NULL);
    /* config size against the shapes: names the key, both values and the tensor */
    expect_error(siglip_with("{\"vision_config\": {\"hidden_size\": 768}}", &cfg),
                 "hidden_size mismatch", "vision_config.hidden_size is 768",
                 "the weights say 24", "patch_embedding");
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": 2, \"vocab_size\": "
                             "32000}}",
                             &cfg),
                 "vocab mismatch", "text_config.vocab_size is 32000", "50", "token_embedding");
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": 2, "
                             "\"num_hidden_layers\": 12}}",
                             &cfg),
                 "layers mismatch", "text_config.num_hidden_layers is 12", "2",
                 "text_model.encoder.layers.1");
    expect_error(siglip_with("{\"vision_config\": {\"image_size\": 224}, \"text_config\": "
                             "{\"num_attention_heads\": 2}}",
                             &cfg),
                 "image_size mismatch", "vision_config.image_size is 224", "16", NULL);
    /* wrong JSON types for keys we read */
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": \"2\"}}", &cfg),
                 "string heads", "config.json", "text_config.num_attention_heads",
                 "must be an integer");
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": 2.5}}", &cfg),
                 "fractional heads", "text_config.num_attention_heads", "integer", NULL);
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": 2, \"layer_norm_eps\": "
                             "\"1e-6\"}}",
                             &cfg),
                 "string eps", "text_config.layer_norm_eps", "must be a number", NULL);
    expect_error(siglip_with("{\"text_config\": 5}", &cfg), "text_config type", "text_config",
                 "must be an object", NULL);
    /* absent text heads: the default 12 does not divide the width 16 */
    expect_error(siglip_with("{\"text_config\": {}}", &cfg), "default heads",
                 "text_config.num_attention_heads = 12", "the default", "16");
    expect_error(siglip_with("{\"vision_config\": {\"hidden_act\": \"gelu\"}, \"text_config\": "
                             "{\"num_attention_heads\": 2}}",
                             &cfg),
                 "activation", "vision_config.hidden_act", "gelu_pytorch_tanh", NULL);
    expect_error(siglip_with("{\"vision_config\": {\"vision_use_head\": false}, \"text_config\": "
                             "{\"num_attention_heads\": 2}}",
                             &cfg),
                 "no head", "vision_config.vision_use_head", NULL, NULL);
    expect_error(siglip_with("{\"text_config\": {\"num_attention_heads\": 2, \"pad_token_id\": "
                             "50}}",
                             &cfg),
                 "pad id", "text_config.pad_token_id = 50", "vocabulary", NULL);
    CHECK(memcmp(&cfg, &before, sizeof cfg) == 0, "config changed by failed calls");
    /* unknown keys, null values and the bookkeeping keys are ignored */
    CHECK(siglip_with("{\"text_config\": {\"num_attention_heads\": 2, \"pad_token_id\": null, "
                      "\"bos_token_id\": 49406, \"whatever\": [1, {}]}, \"torch_dtype\": "
                      "\"float32\", \"vision_config\": null}",
                      &cfg) == 0 &&
              cfg.text.pad_id == 1,
          "unknown keys: %s", vlm_last_error());
    /* a Llama file is no SigLIP checkpoint */
    expect_error(vlm_model_cfg_from_hf_siglip(&cfg, cj, fx("llama/model.safetensors")),
                 "llama as siglip", "llama/model.safetensors", "not a SigLIP checkpoint", NULL);

    vlm_decoder_cfg dec = cfg.decoder, dec0 = cfg.decoder;
    expect_error(llama_with("{\"hidden_size\": 576, \"num_attention_heads\": 4}", &dec),
                 "llama hidden", "hidden_size is 576", "32", "model.embed_tokens.weight");
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 4}", &dec),
                 "llama kv", "num_key_value_heads is 4", "the weights say 2", "k_proj");
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 3}", &dec),
                 "llama kv divides", "num_key_value_heads = 3", "must divide", NULL);
    /* absent kv heads mean kv = heads (4), but k_proj has 2 heads' rows */
    expect_error(llama_with("{\"num_attention_heads\": 4}", &dec), "llama default kv",
                 "num_key_value_heads is 4 (absent", "say 2", NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"tie_word_embeddings\": false}",
                            &dec),
                 "llama untied without head", "tie_word_embeddings is false", "lm_head.weight",
                 NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"tie_word_embeddings\": \"yes\"}",
                            &dec),
                 "llama tie type", "tie_word_embeddings must be true or false", NULL, NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}}",
                            &dec),
                 "llama rope scaling", "rope_scaling", NULL, NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"rope_theta\": -1}",
                            &dec),
                 "llama theta", "rope_theta must be a positive number", NULL, NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"attention_bias\": true}",
                            &dec),
                 "llama bias", "attention_bias", NULL, NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2, "
                            "\"head_dim\": 16}",
                            &dec),
                 "llama head_dim", "head_dim 16", NULL, NULL);
    expect_error(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2,", &dec),
                 "llama malformed", "config.json", "invalid JSON", NULL);
    expect_error(vlm_model_cfg_from_hf_llama(&dec, fx("llama/config.json"), sw), "siglip as llama",
                 "siglip/model.safetensors", "not a Llama checkpoint", NULL);
    CHECK(memcmp(&dec, &dec0, sizeof dec) == 0, "decoder config changed by failed calls");
    CHECK(llama_with("{\"num_attention_heads\": 4, \"num_key_value_heads\": 2}", &dec) == 0 &&
              dec.tie_embeddings && dec.max_len == 2048,
          "minimal llama config: %s", vlm_last_error());
}

/* ---- counts and the shipped configs --------------------------------------------------- */

static void test_counts(void) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    c.vision = (vlm_vision_cfg){.image_size = 224, .patch = 16, .channels = 3, .width = 768,
                                .layers = 12, .heads = 12, .mlp = 3072, .ln_eps = 1e-6f};
    c.text = (vlm_text_cfg){.vocab = 32000, .ctx_len = 64, .width = 768, .layers = 12,
                            .heads = 12, .mlp = 3072, .ln_eps = 1e-6f, .pad_id = 1};
    CHECK(vlm_model_cfg_param_count(&c) == 203155970, "siglip-base: %lld",
          (long long)vlm_model_cfg_param_count(&c));
    vlm_decoder_cfg smol = {.vocab = 49152, .width = 576, .layers = 30, .heads = 9, .kv_heads = 3,
                            .mlp = 1536, .tie_embeddings = true};
    CHECK(vlm_decoder_cfg_param_count(&smol) == 134515008, "SmolLM2-135M: %lld",
          (long long)vlm_decoder_cfg_param_count(&smol));
    strcpy(c.type, "unknown");
    CHECK(vlm_model_cfg_param_count(&c) == -1, "unknown type counted");
    smol.heads = 0;
    CHECK(vlm_decoder_cfg_param_count(&smol) == -1, "zero heads counted");
}

typedef struct {
    int files, built;
    bool seen_base, seen_smol, seen_bench_siglip, seen_bench_caption, seen_fmnist, seen_tiny;
} configs_seen;

static void check_named(const char *name, const vlm_model_cfg *c, int64_t count, configs_seen *s) {
    const vlm_vision_cfg *v = &c->vision;
    const vlm_text_cfg *t = &c->text;
    const vlm_decoder_cfg *d = &c->decoder;
    if (strcmp(name, "siglip-base-patch16-224.json") == 0) {
        s->seen_base = true;
        CHECK(count == 203155970, "%s: %lld parameters", name, (long long)count);
        CHECK(strcmp(c->type, "siglip") == 0 && t->pad_id == 1 && t->ctx_len == 64, "%s", name);
    } else if (strcmp(name, "smollm2-135m-decoder.json") == 0) {
        s->seen_smol = true;
        CHECK(vlm_decoder_cfg_param_count(d) == 134515008, "%s: decoder %lld parameters", name,
              (long long)vlm_decoder_cfg_param_count(d));
        CHECK(d->rope_theta == 1e5f && d->rms_eps == 1e-5f && d->kv_heads == 3 &&
                  d->tie_embeddings,
              "%s", name);
    } else if (strcmp(name, "bench-siglip.json") == 0 || strcmp(name, "bench-caption.json") == 0) {
        bool cap = strcmp(name, "bench-caption.json") == 0;
        if (cap) s->seen_bench_caption = true;
        else s->seen_bench_siglip = true;
        int tokens = (v->image_size / v->patch) * (v->image_size / v->patch);
        CHECK(v->image_size == 128 && v->patch == 16 && tokens == 64 && v->width == 384 &&
                  v->layers == 6 && v->heads == 6 && v->mlp == 1536,
              "%s: vision", name);
        CHECK(t->vocab == 8192 && t->width == 384 && t->heads == 6 && t->mlp == 1536 &&
                  t->ctx_len == (cap ? 8 : 32) && t->layers == (cap ? 2 : 6),
              "%s: text", name);
        CHECK(strcmp(c->type, cap ? "captioner" : "siglip") == 0, "%s: type %s", name, c->type);
        if (cap)
            CHECK(c->fusion.heads == 6 && c->fusion.mlp == 1536 && d->width == 384 &&
                      d->layers == 6 && d->heads == 6 && d->kv_heads == 2 && d->mlp == 1024 &&
                      d->vocab == 8192 && d->tie_embeddings && d->max_len >= 64 + 8 + 33 &&
                      c->pixel_shuffle == 1,
                  "%s: fusion/decoder", name);
        printf("  %s: %.1fM parameters\n", name, (double)count / 1e6);
    } else if (strcmp(name, "model-fmnist.json") == 0) {
        s->seen_fmnist = true;
        CHECK(v->image_size == 32 && v->patch == 4 && v->width == 128 && v->layers == 4 &&
                  v->heads == 4 && v->mlp == 512 && t->width == 128 && t->ctx_len == 16 &&
                  t->vocab == 512 && t->layers >= 2 && t->layers <= 4,
              "%s", name);
    } else if (strcmp(name, "tiny.json") == 0) {
        s->seen_tiny = true;
    }
}

static void check_config_file(const char *dir, const char *name, configs_seen *s) {
    cJSON *root = vlm_json_load(path_in(dir, name));
    CHECK(root != NULL, "%s", vlm_last_error());
    const cJSON *model = root ? cJSON_GetObjectItemCaseSensitive(root, "model") : NULL;
    if (!model) {
        cJSON_Delete(root);
        return;
    }
    s->files++;
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    /* a snippet (no "type", e.g. only "decoder") is meant to be merged into a
     * captioner config: check it as one */
    bool snippet = !cJSON_GetObjectItemCaseSensitive(model, "type");
    if (snippet) strcpy(c.type, "captioner");
    int rc = vlm_cfg_bind(model, vlm_model_cfg_fields, &c, "model");
    CHECK(rc == 0, "%s: %s", name, vlm_last_error());
    rc = rc ? rc : vlm_model_cfg_validate(&c);
    CHECK(rc == 0, "%s: %s", name, vlm_last_error());
    cJSON_Delete(root);
    if (rc) return;
    int64_t count = vlm_model_cfg_param_count(&c);
    CHECK(count > 0, "%s: count %lld", name, (long long)count);
    check_named(name, &c, count, s);
    if (snippet || count > 3000000) return; /* building allocates values + grads */
    vlm_model *m = vlm_model_new(&c, 1);
    CHECK(m != NULL, "%s: %s", name, vlm_last_error());
    if (!m) return;
    s->built++;
    CHECK(vlm_params_numel(m->params) == count, "%s: model %lld, counted %lld", name,
          (long long)vlm_params_numel(m->params), (long long)count);
    vlm_model_free(m);
}

static void test_configs(void) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/configs", src_dir);
    DIR *d = opendir(dir);
    CHECK(d != NULL, "cannot list %s", dir);
    if (!d) return;
    configs_seen s = {0};
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 5 && strcmp(e->d_name + n - 5, ".json") == 0) check_config_file(dir, e->d_name, &s);
    }
    closedir(d);
    printf("configs: %d with a model, %d built\n", s.files, s.built);
    CHECK(s.seen_base && s.seen_smol && s.seen_bench_siglip && s.seen_bench_caption &&
              s.seen_fmnist && s.seen_tiny,
          "a shipped config is missing from %s", dir);
    CHECK(s.built >= 2, "only %d configs built", s.built);
}

int main(void) {
    const char *src = getenv("VLM_SOURCE_DIR");
    if (!src) {
        fprintf(stderr, "VLM_SOURCE_DIR is not set (run through ctest)\n");
        return 1;
    }
    snprintf(src_dir, sizeof src_dir, "%s", src);
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/vlm_hf_XXXXXX");
    if (!mkdtemp(tmp_dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_siglip_nested();
    test_captioner_from_hf();
    test_llama();
    test_errors();
    test_counts();
    test_configs();
    const char *files[] = {"config.json", "missing.safetensors", "ok.safetensors",
                           "extra.safetensors"};
    for (size_t i = 0; i < sizeof files / sizeof *files; i++)
        unlink(tmp(files[i]));
    rmdir(tmp_dir);
    return TEST_DONE();
}
