/* bundle.c - loading what inference needs from a run directory, a
 * checkpoint or a Hugging Face SigLIP directory: config, weights, tokenizers,
 * decoder specials and image preprocessing (infer.h says where each comes
 * from). */
#include "infer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- paths --------------------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* dir/name into out (VLM_CFG_STR bytes); false if it does not fit. */
static bool join(char *out, const char *dir, const char *name) {
    int n = snprintf(out, VLM_CFG_STR, "%s/%s", dir, name);
    return n > 0 && n < VLM_CFG_STR;
}

/* The first of names found in dirs[0..n) (NULL-terminated names) into out. */
static bool find_in(char dirs[][VLM_CFG_STR], int n, const char *const *names, char *out) {
    for (int d = 0; d < n; d++)
        for (int i = 0; names[i]; i++)
            if (join(out, dirs[d], names[i]) && vlm_is_file(out)) return true;
    return false;
}

/* ---- config ------------------------------------------------------------------------------ */

/* What a loaded config says beyond the model. */
typedef struct {
    vlm_run_cfg run;
    bool hf;                      /* a Hugging Face SigLIP config.json */
    char file[VLM_CFG_STR + 64];  /* where it came from, for messages */
} bundle_cfg;

static bool is_hf_siglip(const cJSON *root) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    return cJSON_GetObjectItemCaseSensitive(root, "vision_config") ||
           cJSON_GetObjectItemCaseSensitive(root, "text_config") ||
           (cJSON_IsString(mt) && !strncmp(mt->valuestring, "siglip", 6));
}

/* A run config {"model": ..., "data": ...}, a bare model config, or HF. */
static int bind_config(const cJSON *root, bundle_cfg *c) {
    vlm_run_cfg_defaults(&c->run);
    if (!cJSON_IsObject(root)) return vlm_set_error("%s: the config must be a JSON object", c->file);
    if (is_hf_siglip(root)) {
        c->hf = true;
        strcpy(c->run.model.type, "siglip");
        return 0;
    }
    int rc = cJSON_GetObjectItemCaseSensitive(root, "model")
                 ? vlm_run_cfg_bind(root, &c->run)
                 : vlm_cfg_bind(root, vlm_model_cfg_fields, &c->run.model, "model");
    if (rc) return vlm_set_error("%s: %s", c->file, vlm_last_error());
    return 0;
}

static int config_from_file(const char *path, bundle_cfg *c) {
    snprintf(c->file, sizeof c->file, "%s", path);
    cJSON *root = vlm_json_load(path);
    if (!root) return -1;
    int rc = bind_config(root, c);
    cJSON_Delete(root);
    return rc;
}

/* A checkpoint's vlm.config (or vlm.model_config) metadata; 1 if it has none. */
static int config_from_meta(const char *weights, bundle_cfg *c) {
    vlm_st *st = vlm_st_open(weights);
    if (!st) return -1;
    const char *keys[] = {"vlm.config", "vlm.model_config"};
    int rc = 1;
    for (int i = 0; i < 2 && rc == 1; i++) {
        const char *json = vlm_st_meta(st, keys[i]);
        if (!json) continue;
        snprintf(c->file, sizeof c->file, "%s (metadata %s)", weights, keys[i]);
        cJSON *root = cJSON_Parse(json);
        rc = root ? bind_config(root, c) : vlm_set_error("%s: not valid JSON", c->file);
        cJSON_Delete(root);
    }
    vlm_st_close(st);
    return rc;
}

/* ---- locating the files -------------------------------------------------------------------- */

/* The weights and the run directory they belong to, as `vlm eval` finds
 * them: a directory's model.safetensors, else its newest good checkpoint;
 * a file's run directory is its folder (the folder above for
 * RUN/checkpoints/step-N.safetensors). */
typedef struct {
    char weights[VLM_CFG_STR];
    char dirs[1][VLM_CFG_STR]; /* the run directory: config and tokenizers */
    int n_dirs;
} located;

static int locate(const char *path, located *l) {
    char *dir = NULL, *ckpt = NULL;
    l->n_dirs = 1;
    if (vlm_is_dir(path)) {
        snprintf(l->dirs[0], VLM_CFG_STR, "%s", path);
        if (join(l->weights, path, "model.safetensors") && vlm_is_file(l->weights)) return 0;
        if (!(ckpt = vlm_ckpt_find_latest(path)))
            return vlm_set_error("model '%s': no model.safetensors and no usable checkpoint in "
                                 "this directory", path);
        snprintf(l->weights, VLM_CFG_STR, "%s", ckpt);
        free(ckpt);
        return 0;
    }
    if (!vlm_is_file(path))
        return vlm_set_error("model '%s': no such file or directory (expected a run directory "
                             "or a .safetensors file)", path);
    if (!(dir = vlm_run_dir_of(path))) return -1;
    snprintf(l->weights, VLM_CFG_STR, "%s", path);
    snprintf(l->dirs[0], VLM_CFG_STR, "%s", dir);
    free(dir);
    return 0;
}

/* --config, else the weights' vlm.config metadata (runs write it into
 * model.safetensors and checkpoints), else RUN_DIR/config.json. */
static int find_config(const char *path, const vlm_bundle_opts *o, located *l, bundle_cfg *c) {
    if (o && o->config) return config_from_file(o->config, c);
    int rc = config_from_meta(l->weights, c);
    if (rc <= 0) return rc;
    char file[VLM_CFG_STR];
    if (find_in(l->dirs, l->n_dirs, (const char *const[]){"config.json", NULL}, file))
        return config_from_file(file, c);
    return vlm_set_error("model '%s': no config (no vlm.config metadata in %s and no "
                         "config.json in %s; pass --config)", path, l->weights, l->dirs[0]);
}

/* ---- weights -------------------------------------------------------------------------------- */

/* Our own files: every parameter by its name; checkpoints also hold the
 * optimizer state ("optim.*"), skipped here. */
static int load_own(vlm_model *m, const char *weights) {
    vlm_st_load_report rep;
    vlm_st_load_opts o = {.allow_unexpected = true};
    int rc = vlm_st_load_params(m->params, weights, "", &o, &rep);
    for (int i = 0; rc == 0 && i < rep.n_unexpected; i++)
        if (strncmp(rep.unexpected[i], "optim.", 6))
            rc = vlm_set_error("%s: tensor '%s' is not a parameter of this model (model.type "
                               "\"%s\"); is the config the one it was trained with?",
                               weights, rep.unexpected[i], m->cfg.type);
    vlm_st_load_report_free(&rep);
    return rc;
}

static vlm_model *load_model(bundle_cfg *c, const char *weights) {
    if (c->hf && vlm_model_cfg_from_hf_siglip(&c->run.model, c->file, weights)) return NULL;
    vlm_model *m = vlm_model_new(&c->run.model, 0);
    if (!m) {
        vlm_set_error("%s: %s", c->file, vlm_last_error());
        return NULL;
    }
    if (c->hf ? vlm_load_hf_siglip(m, weights) : load_own(m, weights)) {
        vlm_model_free(m);
        return NULL;
    }
    return m;
}

/* ---- tokenizers ------------------------------------------------------------------------------ */

/* --tokenizer, else data.tokenizer when it names a file, else the run
 * directory's tokenizer.json (a trained one) or spiece.model (HF SigLIP). */
static int find_tokenizer(const vlm_bundle_opts *o, located *l, const bundle_cfg *c, char *out) {
    const char *t = c->run.data.tokenizer;
    if (o && o->tokenizer)
        snprintf(out, VLM_CFG_STR, "%s", o->tokenizer);
    else if (strcmp(t, "train") && vlm_is_file(t))
        snprintf(out, VLM_CFG_STR, "%s", t);
    else if (!find_in(l->dirs, l->n_dirs, (const char *const[]){"tokenizer.json", "spiece.model", NULL},
                      out))
        return vlm_set_error("model '%s': no tokenizer (data.tokenizer is \"%s\" and %s has no "
                             "tokenizer.json or spiece.model; pass --tokenizer)",
                             l->weights, t, l->dirs[0]);
    return 0;
}

static int load_text_encoder(vlm_bundle *b) {
    if (!(b->text = vlm_text_encoder_load(b->tokenizer, b->model->cfg.text.pad_id))) return -1;
    int v = vlm_text_encoder_vocab(b->text);
    if (v > b->model->cfg.text.vocab)
        return vlm_set_error("tokenizer %s has %d ids but model.text.vocab is %d: not this "
                             "model's tokenizer", b->tokenizer, v, b->model->cfg.text.vocab);
    return 0;
}

/* The decoder's tokenizer and its BOS / EOS / pad ids. */
static int load_decoder_tokenizer(vlm_bundle *b, const vlm_bundle_opts *o, located *l) {
    char path[VLM_CFG_STR];
    if (o && o->decoder_tokenizer)
        snprintf(path, sizeof path, "%s", o->decoder_tokenizer);
    else if (!find_in(l->dirs, l->n_dirs, (const char *const[]){"decoder_tokenizer.json", NULL},
                      path))
        snprintf(path, sizeof path, "%s", b->tokenizer);
    if (ends_with(path, ".model")) {
        if (!(b->dec_spm = vlm_spm_load(path))) return -1;
        b->eos_id = vlm_spm_eos_id(b->dec_spm);
        b->bos_id = vlm_spm_bos_id(b->dec_spm);
        b->pad_id = vlm_spm_pad_id(b->dec_spm);
    } else {
        if (!(b->dec_bpe = vlm_bpe_load(path))) return -1;
        vlm_decoder_specials(b->dec_bpe, &b->bos_id, &b->eos_id, &b->pad_id);
    }
    if (b->bos_id < 0) b->bos_id = b->eos_id; /* GPT-2 style: one token for both */
    if (b->pad_id < 0) b->pad_id = b->eos_id;
    return 0;
}

/* ---- the bundle --------------------------------------------------------------------------------- */

static int finish(vlm_bundle *b, const bundle_cfg *c) {
    const vlm_model_cfg *mc = &b->model->cfg;
    const vlm_data_cfg *d = &c->run.data;
    if (mc->vision.channels != 3)
        return vlm_set_error("%s: model.vision.channels is %d; images are decoded as RGB (3)",
                             c->file, mc->vision.channels);
    if (d->image_size && d->image_size != mc->vision.image_size)
        return vlm_set_error("%s: data.image_size %d differs from model.vision.image_size %d",
                             c->file, d->image_size, mc->vision.image_size);
    b->image = vlm_image_opts_default(mc->vision.image_size);
    memcpy(b->image.mean, d->mean, sizeof b->image.mean);
    memcpy(b->image.std, d->std, sizeof b->image.std);
    b->ctx_len = d->ctx_len ? d->ctx_len : mc->text.ctx_len;
    if (b->ctx_len < 1 || b->ctx_len > mc->text.ctx_len)
        return vlm_set_error("%s: data.ctx_len %d outside [1, model.text.ctx_len = %d]", c->file,
                             b->ctx_len, mc->text.ctx_len);
    b->key_mask = d->key_mask;
    snprintf(b->templates, sizeof b->templates, "%s", d->templates);
    snprintf(b->prompt, sizeof b->prompt, "%s", d->prompt);
    return 0;
}

vlm_bundle *vlm_bundle_load(const char *path, const vlm_bundle_opts *opts) {
    vlm_bundle *b = calloc(1, sizeof *b);
    bundle_cfg *c = calloc(1, sizeof *c);
    located l = {0};
    int rc = b && c ? 0 : vlm_set_error("model: out of memory");
    if (!rc) rc = locate(path, &l);
    if (!rc) rc = find_config(path, opts, &l, c);
    if (!rc) snprintf(b->weights, sizeof b->weights, "%s", l.weights);
    if (!rc && !(b->model = load_model(c, l.weights))) rc = -1;
    if (!rc) rc = find_tokenizer(opts, &l, c, b->tokenizer);
    if (!rc) rc = load_text_encoder(b);
    if (!rc && b->model->captioner) rc = load_decoder_tokenizer(b, opts, &l);
    if (!rc) rc = finish(b, c);
    free(c);
    if (rc) {
        vlm_bundle_free(b);
        return NULL;
    }
    return b;
}

void vlm_bundle_free(vlm_bundle *b) {
    if (!b) return;
    vlm_model_free(b->model);
    vlm_text_encoder_free(b->text);
    vlm_bpe_free(b->dec_bpe);
    vlm_spm_free(b->dec_spm);
    free(b);
}

bool vlm_bundle_is_captioner(const vlm_bundle *b) { return b && b->model && b->model->captioner; }

int vlm_bundle_embed_dim(const vlm_bundle *b) { return b->model->cfg.embed_dim; }

float vlm_bundle_logit_scale(const vlm_bundle *b) {
    return b->model->logit_scale ? expf(vlm_f32(b->model->logit_scale)[0]) : 1.0f;
}

float vlm_bundle_logit_bias(const vlm_bundle *b) {
    return b->model->logit_bias ? vlm_f32(b->model->logit_bias)[0] : 0.0f;
}

int vlm_bundle_load_image(const vlm_bundle *b, const char *path, float *out) {
    vlm_image img;
    if (vlm_image_load(path, NULL, &img)) return -1;
    int rc = vlm_image_to_input(&img, &b->image, NULL, out);
    vlm_image_free(&img);
    if (rc) return vlm_set_error("%s: %s", path, vlm_last_error());
    return 0;
}

int vlm_bundle_tokenize(const vlm_bundle *b, const char *text, int32_t *ids, uint8_t *mask) {
    memset(ids, 0, (size_t)b->ctx_len * sizeof *ids);
    memset(mask, 0, (size_t)b->ctx_len);
    if (vlm_text_encode(b->text, text, ids, mask, b->ctx_len) < 0) return -1;
    int V = b->model->cfg.text.vocab;
    for (int i = 0; i < b->ctx_len; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return vlm_set_error("tokenizer %s gives id %d for \"%s\", outside model.text.vocab "
                                 "%d: the tokenizer does not belong to this model",
                                 b->tokenizer, ids[i], text, V);
    return 0;
}

char *vlm_bundle_decode(const vlm_bundle *b, const int32_t *ids, int n) {
    if (!b->dec_bpe && !b->dec_spm) {
        vlm_set_error("decode: the model has no decoder tokenizer");
        return NULL;
    }
    return vlm_tokens_to_text(b->dec_bpe, b->dec_spm, ids, n);
}
