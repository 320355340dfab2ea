/* run_cfg.c - the run config: field tables for "train", "data" and "init",
 * binding of the whole tree (model + train + data + init + out), defaults,
 * checks, the resolved JSON, and a JSON diff that names the first differing
 * key. */
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define F(struct_, field, kind, help) {#field, kind, offsetof(struct_, field), NULL, help}

static const vlm_cfg_field augment_fields[] = {
    F(vlm_augment_cfg, crop, VLM_CFG_BOOL, "random resized crop"),
    F(vlm_augment_cfg, scale_min, VLM_CFG_FLOAT, "smallest crop area fraction"),
    F(vlm_augment_cfg, scale_max, VLM_CFG_FLOAT, "largest crop area fraction"),
    F(vlm_augment_cfg, ratio_min, VLM_CFG_FLOAT, "smallest crop aspect ratio (w/h)"),
    F(vlm_augment_cfg, ratio_max, VLM_CFG_FLOAT, "largest crop aspect ratio (w/h)"),
    F(vlm_augment_cfg, hflip, VLM_CFG_BOOL, "random horizontal flip"),
    {0},
};

/* mean and std are arrays or numbers: bound by hand (bind_channels). */
static const vlm_cfg_field data_fields[] = {
    F(vlm_data_cfg, train, VLM_CFG_STRING,
      "training dataset (.h5), or fashion-mnist:train (prepared into $VLM_DATA_DIR)"),
    F(vlm_data_cfg, val, VLM_CFG_STRING, "evaluation dataset (\"\" = none), e.g. fashion-mnist:test"),
    F(vlm_data_cfg, image_size, VLM_CFG_INT, "input side (0 = model.vision.image_size)"),
    {"augment", VLM_CFG_OBJECT, offsetof(vlm_data_cfg, augment), augment_fields,
     "training augmentation"},
    F(vlm_data_cfg, sampling, VLM_CFG_STRING,
      "\"image\" (each image once per epoch, a random caption) or \"caption\""),
    F(vlm_data_cfg, positives, VLM_CFG_STRING,
      "sigmoid-loss positives: \"auto\" (labels when the dataset has them), \"labels\", "
      "\"captions\" (same image or same caption text)"),
    F(vlm_data_cfg, tokenizer, VLM_CFG_STRING,
      "tokenizer.json, spiece.model, \"train\" (BPE on the training captions), or \"auto\" "
      "(init.towers' tokenizer if it has one, else train)"),
    F(vlm_data_cfg, vocab_size, VLM_CFG_INT, "trained tokenizer size (0 = model.text.vocab)"),
    F(vlm_data_cfg, ctx_len, VLM_CFG_INT, "ids per text (0 = model.text.ctx_len)"),
    F(vlm_data_cfg, key_mask, VLM_CFG_BOOL, "mask padding keys in the text tower"),
    F(vlm_data_cfg, loader_threads, VLM_CFG_INT, "loader worker threads (0 = 2)"),
    F(vlm_data_cfg, templates, VLM_CFG_STRING,
      "zero-shot prompts separated by |, each with {} (\"\" = built-in)"),
    F(vlm_data_cfg, eval_images, VLM_CFG_INT, "periodic evals: first N val images (0 = all)"),
    F(vlm_data_cfg, eval_batch_size, VLM_CFG_INT, "evaluation batch (0 = train.batch_size)"),
    F(vlm_data_cfg, prompt, VLM_CFG_STRING, "captioner: the text tower's prompt (data.ctx_len ids)"),
    F(vlm_data_cfg, decoder_tokenizer, VLM_CFG_STRING,
      "captioner: tokenizer.json, \"train\" (BPE on the captions), or \"auto\" (the "
      "tokenizer.json beside init.decoder if there is one, else train)"),
    F(vlm_data_cfg, caption_len, VLM_CFG_INT,
      "captioner: caption ids per sample, EOS included (longer captions are cut)"),
    F(vlm_data_cfg, eval_samples, VLM_CFG_INT,
      "captioner: sample captions printed next to their references per evaluation"),
    {0},
};

static const vlm_cfg_field init_fields[] = {
    F(vlm_init_cfg, towers, VLM_CFG_STRING,
      "fresh runs: image + text towers from a vlm run (directory or .safetensors) or a "
      "Hugging Face SigLIP model (directory or file); sizes come from it"),
    F(vlm_init_cfg, decoder, VLM_CFG_STRING,
      "fresh runs: the captioner's decoder from a Hugging Face Llama/SmolLM2 model "
      "(directory or file) or a vlm captioner; sizes come from its config.json"),
    {0},
};

/* optim is bound by vlm_optim_cfg_bind (for lr_mult). */
static const vlm_cfg_field train_fields[] = {
    F(vlm_train_cfg, seed, VLM_CFG_INT, "seed of every random stream"),
    F(vlm_train_cfg, steps, VLM_CFG_INT, "optimizer steps (0 = use epochs)"),
    F(vlm_train_cfg, epochs, VLM_CFG_INT, "epochs when steps is 0"),
    F(vlm_train_cfg, batch_size, VLM_CFG_INT, "micro-batch: the sigmoid loss's batch"),
    F(vlm_train_cfg, accum, VLM_CFG_INT, "micro-batches per optimizer step"),
    F(vlm_train_cfg, precision, VLM_CFG_STRING, "\"f32\", \"bf16\" or \"fp16\""),
    F(vlm_train_cfg, threads, VLM_CFG_INT, "compute threads (0 = all cores)"),
    F(vlm_train_cfg, log_every, VLM_CFG_INT, "steps between metrics lines (0 = never)"),
    F(vlm_train_cfg, eval_every, VLM_CFG_INT, "steps between evaluations (0 = at the end only)"),
    F(vlm_train_cfg, ckpt_every, VLM_CFG_INT, "steps between checkpoints (0 = at the end only)"),
    F(vlm_train_cfg, keep_checkpoints, VLM_CFG_INT, "checkpoints kept (newest)"),
    F(vlm_train_cfg, on_nonfinite, VLM_CFG_STRING,
      "\"stop\" (error naming the step) or \"skip\" (skip the update, count it)"),
    F(vlm_train_cfg, detect_anomaly, VLM_CFG_BOOL,
      "check each stage of the loss path for NaN/Inf and name the first"),
    F(vlm_train_cfg, init_logit_scale, VLM_CFG_FLOAT,
      "fresh runs: initial logit_scale t' (scale = exp(t'); SigLIP: log 10)"),
    F(vlm_train_cfg, init_logit_bias, VLM_CFG_FLOAT,
      "fresh runs: initial logit_bias (SigLIP: -10; ~log(p/(1-p)) for a positive rate p)"),
    F(vlm_train_cfg, debug_nan_step, VLM_CFG_INT, "test hook: inject a NaN at this step (0 = off)"),
    F(vlm_train_cfg, debug_nan_target, VLM_CFG_STRING, "test hook: \"grad\" or \"weight\""),
    {0},
};
#undef F

void vlm_run_cfg_defaults(vlm_run_cfg *c) {
    memset(c, 0, sizeof *c);
    vlm_model_cfg_defaults(&c->model);
    vlm_train_cfg *t = &c->train;
    t->epochs = 1;
    t->batch_size = 64;
    t->accum = 1;
    strcpy(t->precision, "f32");
    t->log_every = 10;
    t->keep_checkpoints = 3;
    strcpy(t->on_nonfinite, "stop");
    t->init_logit_scale = 2.302585093f; /* log 10, as vlm_init_params */
    t->init_logit_bias = -10.0f;
    strcpy(t->debug_nan_target, "grad");
    vlm_optim_cfg_defaults(&t->optim);
    vlm_data_cfg *d = &c->data;
    d->augment = (vlm_augment_cfg){false, 0.08f, 1.0f, 3.0f / 4.0f, 4.0f / 3.0f, false};
    for (int k = 0; k < 3; k++) d->mean[k] = d->std[k] = 0.5f;
    strcpy(d->sampling, "image");
    strcpy(d->positives, "auto");
    strcpy(d->tokenizer, "auto");
    strcpy(d->prompt, "describe the image");
    strcpy(d->decoder_tokenizer, "auto");
    d->caption_len = 32;
    d->eval_samples = 4;
    strcpy(c->out, "runs/run");
}

/* ---- binding ------------------------------------------------------------------ */

/* "mean": 0.5 or [0.48, 0.46, 0.41] */
static int bind_channels(const cJSON *v, float out[3], const char *key) {
    if (cJSON_IsNumber(v)) {
        for (int k = 0; k < 3; k++) out[k] = (float)v->valuedouble;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 3)
        return vlm_set_error("config: %s must be a number or an array of 3 numbers", key);
    float tmp[3];
    for (int k = 0; k < 3; k++) {
        const cJSON *e = cJSON_GetArrayItem(v, k);
        if (!cJSON_IsNumber(e)) return vlm_set_error("config: %s[%d] must be a number", key, k);
        tmp[k] = (float)e->valuedouble;
    }
    memcpy(out, tmp, sizeof tmp);
    return 0;
}

/* Binds obj without the keys in `special` (handled by the caller). */
static int bind_without(const cJSON *obj, const vlm_cfg_field *fields, void *dst, const char *path,
                        const char *const *special, cJSON **detached) {
    if (!cJSON_IsObject(obj)) return vlm_set_error("config: %s must be an object", path);
    cJSON *rest = cJSON_Duplicate(obj, true);
    if (!rest) return vlm_set_error("config: %s: out of memory", path);
    for (int i = 0; special[i]; i++)
        detached[i] = cJSON_DetachItemFromObjectCaseSensitive(rest, special[i]);
    int rc = vlm_cfg_bind(rest, fields, dst, path);
    cJSON_Delete(rest);
    return rc;
}

/* Adds prefix s[0..n) to the freeze list. */
static int add_freeze(vlm_train_cfg *t, const char *s, size_t n) {
    while (n && *s == ' ') s++, n--;
    while (n && s[n - 1] == ' ') n--;
    if (!n) return vlm_set_error("config: train.freeze has an empty prefix");
    if (t->n_freeze == VLM_MAX_FREEZE)
        return vlm_set_error("config: train.freeze has more than %d prefixes", VLM_MAX_FREEZE);
    if (n >= VLM_OPTIM_PREFIX_LEN)
        return vlm_set_error("config: train.freeze prefix '%.*s' is longer than %d bytes", (int)n, s,
                             VLM_OPTIM_PREFIX_LEN - 1);
    memcpy(t->freeze[t->n_freeze], s, n);
    t->freeze[t->n_freeze++][n] = 0;
    return 0;
}

/* "freeze": ["vision_model.", "text_model."], or one string with the
 * prefixes separated by commas (so --set train.freeze=vision_model. works);
 * it replaces the current list. */
static int bind_freeze(const cJSON *v, vlm_train_cfg *t) {
    vlm_train_cfg tmp = *t;
    tmp.n_freeze = 0;
    if (cJSON_IsString(v)) {
        for (const char *p = v->valuestring; *p;) {
            size_t n = strcspn(p, ",");
            if (add_freeze(&tmp, p, n)) return -1;
            p += n + (p[n] == ',');
        }
    } else if (cJSON_IsArray(v)) {
        for (const cJSON *e = v->child; e; e = e->next)
            if (!cJSON_IsString(e))
                return vlm_set_error("config: train.freeze must hold strings (parameter-name "
                                     "prefixes)");
            else if (add_freeze(&tmp, e->valuestring, strlen(e->valuestring)))
                return -1;
    } else {
        return vlm_set_error("config: train.freeze must be an array of parameter-name prefixes, "
                             "e.g. [\"vision_model.\", \"text_model.\"]");
    }
    *t = tmp;
    return 0;
}

static int bind_train(const cJSON *obj, vlm_train_cfg *t) {
    static const char *const special[] = {"optim", "freeze", NULL};
    cJSON *det[2] = {NULL, NULL};
    int rc = bind_without(obj, train_fields, t, "train", special, det);
    if (rc == 0 && det[0]) rc = vlm_optim_cfg_bind(det[0], &t->optim, "train.optim");
    if (rc == 0 && det[1]) rc = bind_freeze(det[1], t);
    cJSON_Delete(det[0]);
    cJSON_Delete(det[1]);
    return rc;
}

static int bind_data(const cJSON *obj, vlm_data_cfg *d) {
    static const char *const special[] = {"mean", "std", NULL};
    cJSON *det[2] = {NULL, NULL};
    int rc = bind_without(obj, data_fields, d, "data", special, det);
    if (rc == 0 && det[0]) rc = bind_channels(det[0], d->mean, "data.mean");
    if (rc == 0 && det[1]) rc = bind_channels(det[1], d->std, "data.std");
    cJSON_Delete(det[0]);
    cJSON_Delete(det[1]);
    return rc;
}

int vlm_run_cfg_bind(const cJSON *root, vlm_run_cfg *c) {
    if (!cJSON_IsObject(root)) return vlm_set_error("config: the top level must be an object");
    vlm_run_cfg tmp = *c;
    for (const cJSON *v = root->child; v; v = v->next) {
        int rc;
        if (!strcmp(v->string, "model"))
            rc = vlm_cfg_bind(v, vlm_model_cfg_fields, &tmp.model, "model");
        else if (!strcmp(v->string, "train"))
            rc = bind_train(v, &tmp.train);
        else if (!strcmp(v->string, "data"))
            rc = bind_data(v, &tmp.data);
        else if (!strcmp(v->string, "init"))
            rc = vlm_cfg_bind(v, init_fields, &tmp.init, "init");
        else if (!strcmp(v->string, "out")) {
            if (!cJSON_IsString(v) || strlen(v->valuestring) >= VLM_CFG_STR)
                return vlm_set_error("config: out must be a string (a directory) shorter than %d "
                                     "bytes", VLM_CFG_STR);
            strcpy(tmp.out, v->valuestring);
            rc = 0;
        } else
            return vlm_set_error("config: unknown key '%s' (expected model, train, data, init, "
                                 "out)",
                                 v->string);
        if (rc) return -1;
    }
    *c = tmp;
    return 0;
}

/* ---- checks ------------------------------------------------------------------------ */

static int one_of(const char *v, const char *a, const char *b, const char *c, const char *key) {
    if (!strcmp(v, a) || !strcmp(v, b) || (c && !strcmp(v, c))) return 0;
    return vlm_set_error("config: %s must be \"%s\", \"%s\"%s%s%s, got \"%s\"", key, a, b,
                         c ? " or \"" : "", c ? c : "", c ? "\"" : "", v);
}

static int at_least(int v, int lo, const char *key) {
    return v >= lo ? 0 : vlm_set_error("config: %s must be >= %d, got %d", key, lo, v);
}

static int validate_train(const vlm_train_cfg *t) {
    if (at_least(t->steps, 0, "train.steps") || at_least(t->epochs, 0, "train.epochs") ||
        at_least(t->batch_size, 1, "train.batch_size") || at_least(t->accum, 1, "train.accum") ||
        at_least(t->threads, 0, "train.threads") || at_least(t->log_every, 0, "train.log_every") ||
        at_least(t->eval_every, 0, "train.eval_every") ||
        at_least(t->ckpt_every, 0, "train.ckpt_every") ||
        at_least(t->keep_checkpoints, 1, "train.keep_checkpoints") ||
        at_least(t->debug_nan_step, 0, "train.debug_nan_step") ||
        one_of(t->precision, "f32", "bf16", "fp16", "train.precision") ||
        one_of(t->on_nonfinite, "stop", "skip", NULL, "train.on_nonfinite") ||
        one_of(t->debug_nan_target, "grad", "weight", NULL, "train.debug_nan_target"))
        return -1;
    if (!isfinite(t->init_logit_scale) || !isfinite(t->init_logit_bias))
        return vlm_set_error("config: train.init_logit_scale and train.init_logit_bias must be "
                             "finite");
    if (t->steps == 0 && t->epochs == 0)
        return vlm_set_error("config: train.steps and train.epochs are both 0: set one");
    /* the run length is not known yet (epochs need the dataset): check the
     * rest of the optimizer section with a stand-in */
    vlm_optim_cfg o = t->optim;
    if (o.total_steps == 0) o.total_steps = t->steps ? t->steps : o.warmup_steps > 0 ? o.warmup_steps : 1;
    return vlm_optim_cfg_validate(&o, "train.optim");
}

static int validate_augment(const vlm_augment_cfg *a) {
    if (!(a->scale_min > 0 && a->scale_min <= a->scale_max && a->scale_max <= 1))
        return vlm_set_error("config: data.augment.scale_min/scale_max must satisfy 0 < min <= "
                             "max <= 1, got %g, %g", (double)a->scale_min, (double)a->scale_max);
    if (!(a->ratio_min > 0 && a->ratio_min <= a->ratio_max) || isinf(a->ratio_max))
        return vlm_set_error("config: data.augment.ratio_min/ratio_max must satisfy 0 < min <= "
                             "max, got %g, %g", (double)a->ratio_min, (double)a->ratio_max);
    return 0;
}

static int validate_data(vlm_data_cfg *d, const vlm_model_cfg *m) {
    if (!d->train[0]) return vlm_set_error("config: data.train (the training dataset) is not set");
    if (d->image_size == 0) d->image_size = m->vision.image_size;
    if (d->image_size != m->vision.image_size)
        return vlm_set_error("config: data.image_size (%d) must equal model.vision.image_size (%d)",
                             d->image_size, m->vision.image_size);
    if (d->ctx_len == 0) d->ctx_len = m->text.ctx_len;
    if (d->ctx_len < 1 || d->ctx_len > m->text.ctx_len)
        return vlm_set_error("config: data.ctx_len (%d) must be in 1..model.text.ctx_len (%d)",
                             d->ctx_len, m->text.ctx_len);
    for (int k = 0; k < 3; k++)
        if (!(d->std[k] > 0) || !isfinite(d->mean[k]) || isinf(d->std[k]))
            return vlm_set_error("config: data.std[%d] must be > 0 and data.mean finite", k);
    if (validate_augment(&d->augment) || one_of(d->sampling, "image", "caption", NULL, "data.sampling") ||
        one_of(d->positives, "auto", "labels", "captions", "data.positives") ||
        at_least(d->vocab_size, 0, "data.vocab_size") ||
        at_least(d->loader_threads, 0, "data.loader_threads") ||
        at_least(d->eval_images, 0, "data.eval_images") ||
        at_least(d->eval_batch_size, 0, "data.eval_batch_size"))
        return -1;
    if (!d->tokenizer[0])
        return vlm_set_error("config: data.tokenizer is empty (a file, or \"train\")");
    if (d->vocab_size > m->text.vocab)
        return vlm_set_error("config: data.vocab_size (%d) exceeds model.text.vocab (%d)",
                             d->vocab_size, m->text.vocab);
    return 0;
}

/* A captioner's prefix (image tokens + prompt) and captions must fit the decoder. */
static int validate_captioner(const vlm_run_cfg *c) {
    const vlm_model_cfg *m = &c->model;
    const vlm_data_cfg *d = &c->data;
    if (at_least(d->caption_len, 2, "data.caption_len") ||
        at_least(d->eval_samples, 0, "data.eval_samples"))
        return -1;
    if (d->eval_samples > VLM_CAPTION_SAMPLES)
        return vlm_set_error("config: data.eval_samples must be <= %d, got %d", VLM_CAPTION_SAMPLES,
                             d->eval_samples);
    if (!d->decoder_tokenizer[0])
        return vlm_set_error("config: data.decoder_tokenizer is empty (a tokenizer.json, \"train\" "
                             "or \"auto\")");
    int g = m->vision.image_size / m->vision.patch / m->pixel_shuffle;
    long need = (long)g * g + d->ctx_len + d->caption_len;
    if (need > m->decoder.max_len)
        return vlm_set_error("config: %d image tokens + data.ctx_len %d + data.caption_len %d = "
                             "%ld positions exceed model.decoder.max_len %d", g * g, d->ctx_len,
                             d->caption_len, need, m->decoder.max_len);
    return 0;
}

int vlm_run_cfg_validate(vlm_run_cfg *c) {
    if (vlm_model_cfg_validate(&c->model) || validate_train(&c->train) ||
        validate_data(&c->data, &c->model))
        return -1;
    bool captioner = !strcmp(c->model.type, "captioner");
    if (captioner && validate_captioner(c)) return -1;
    if (!captioner && c->init.decoder[0])
        return vlm_set_error("config: init.decoder is set but model.type \"%s\" has no decoder",
                             c->model.type);
    if (!c->out[0]) return vlm_set_error("config: out (the run directory) is empty");
    return 0;
}

/* ---- the resolved config ------------------------------------------------------------ */

static cJSON *channels_json(const float v[3]) {
    double d[3] = {v[0], v[1], v[2]};
    return cJSON_CreateDoubleArray(d, 3);
}

cJSON *vlm_run_cfg_to_json(const vlm_run_cfg *c) {
    cJSON *root = cJSON_CreateObject();
    cJSON *model = vlm_cfg_to_json(vlm_model_cfg_fields, &c->model);
    cJSON *train = vlm_cfg_to_json(train_fields, &c->train);
    cJSON *optim = vlm_optim_cfg_to_json(&c->train.optim);
    cJSON *data = vlm_cfg_to_json(data_fields, &c->data);
    cJSON *mean = channels_json(c->data.mean), *std = channels_json(c->data.std);
    cJSON *init = vlm_cfg_to_json(init_fields, &c->init);
    cJSON *freeze = cJSON_CreateArray();
    cJSON *out = cJSON_CreateString(c->out);
    for (int i = 0; freeze && i < c->train.n_freeze; i++) {
        cJSON *s = cJSON_CreateString(c->train.freeze[i]);
        if (!s || !cJSON_AddItemToArray(freeze, s)) {
            cJSON_Delete(s);
            cJSON_Delete(freeze);
            freeze = NULL;
        }
    }
    if (!root || !model || !train || !optim || !data || !mean || !std || !init || !freeze || !out) {
        cJSON *all[] = {root, model, train, optim, data, mean, std, init, freeze, out};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++) cJSON_Delete(all[i]);
        vlm_set_error("config: out of memory");
        return NULL;
    }
    cJSON_AddItemToObject(train, "optim", optim);
    cJSON_AddItemToObject(train, "freeze", freeze);
    cJSON_AddItemToObject(data, "mean", mean);
    cJSON_AddItemToObject(data, "std", std);
    cJSON_AddItemToObject(root, "model", model);
    cJSON_AddItemToObject(root, "train", train);
    cJSON_AddItemToObject(root, "data", data);
    cJSON_AddItemToObject(root, "init", init);
    cJSON_AddItemToObject(root, "out", out);
    return root;
}

cJSON *vlm_run_cfg_load(const char *path, char *const *sets, int n_sets) {
    cJSON *root = path ? vlm_json_load(path) : cJSON_CreateObject();
    if (!root) {
        if (!path) vlm_set_error("config: out of memory");
        return NULL;
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        vlm_set_error("%s: the top level must be a JSON object", path);
        return NULL;
    }
    for (int i = 0; i < n_sets; i++) {
        if (vlm_cfg_set(root, sets[i])) {
            cJSON_Delete(root);
            return NULL;
        }
    }
    return root;
}

/* ---- JSON diff ---------------------------------------------------------------------- */

/* Config numbers are ints or f32 values; cJSON prints doubles with 15
 * significant digits when they read back "close enough", which can miss the
 * exact double of a float but always reads back as the same float. */
static bool integral(double x) { return x == floor(x) && fabs(x) < 9e15; }

static bool same_number(double a, double b) {
    if (a == b) return true;
    return !(integral(a) && integral(b)) && (float)a == (float)b;
}

static void value_str(const cJSON *v, char *buf, size_t cap) {
    if (!v) {
        snprintf(buf, cap, "absent");
        return;
    }
    if (cJSON_IsNumber(v)) {
        snprintf(buf, cap, integral(v->valuedouble) ? "%.0f" : "%.9g",
                 integral(v->valuedouble) ? v->valuedouble : (double)(float)v->valuedouble);
        return;
    }
    char *s = cJSON_PrintUnformatted(v);
    snprintf(buf, cap, "%s", s ? s : "?");
    free(s);
}

static bool ignored(const char *path, const char *const *ignore) {
    for (int i = 0; ignore && ignore[i]; i++)
        if (!strcmp(path, ignore[i])) return true;
    return false;
}

typedef struct {
    const char *const *ignore;
    const char *name_a, *name_b;
    char *out;
    size_t cap;
} diff_ctx;

static int differ(const cJSON *a, const cJSON *b, const char *path, const diff_ctx *d) {
    char va[96], vb[96];
    value_str(a, va, sizeof va);
    value_str(b, vb, sizeof vb);
    snprintf(d->out, d->cap, "%s is %s in %s but %s in %s", path, va, d->name_a, vb, d->name_b);
    return 1;
}

static int diff(const cJSON *a, const cJSON *b, const char *path, const diff_ctx *d);

static int diff_object(const cJSON *a, const cJSON *b, const char *path, const diff_ctx *d) {
    char sub[512];
    for (const cJSON *x = a->child; x; x = x->next) {
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", x->string);
        if (diff(x, cJSON_GetObjectItemCaseSensitive(b, x->string), sub, d)) return 1;
    }
    for (const cJSON *y = b->child; y; y = y->next) {
        snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", y->string);
        if (!cJSON_GetObjectItemCaseSensitive(a, y->string) && !ignored(sub, d->ignore))
            return differ(NULL, y, sub, d);
    }
    return 0;
}

static int diff(const cJSON *a, const cJSON *b, const char *path, const diff_ctx *d) {
    if (ignored(path, d->ignore)) return 0;
    if (!a || !b || (a->type & 0xFF) != (b->type & 0xFF)) return differ(a, b, path, d);
    if (cJSON_IsObject(a)) return diff_object(a, b, path, d);
    if (cJSON_IsArray(a)) {
        int n = cJSON_GetArraySize(a);
        if (n != cJSON_GetArraySize(b)) return differ(a, b, path, d);
        for (int i = 0; i < n; i++) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s[%d]", path, i);
            if (diff(cJSON_GetArrayItem(a, i), cJSON_GetArrayItem(b, i), sub, d)) return 1;
        }
        return 0;
    }
    if (cJSON_IsNumber(a) && !same_number(a->valuedouble, b->valuedouble))
        return differ(a, b, path, d);
    if (cJSON_IsString(a) && strcmp(a->valuestring, b->valuestring)) return differ(a, b, path, d);
    return 0;
}

int vlm_json_diff(const cJSON *a, const cJSON *b, const char *path, const char *const *ignore,
                  const char *name_a, const char *name_b, char *out, size_t cap) {
    diff_ctx d = {ignore, name_a, name_b, out, cap};
    if (cap) out[0] = 0;
    return diff(a, b, path ? path : "", &d);
}

/* ---- the key reference ---------------------------------------------------------------- */

static void print_fields(FILE *f, const vlm_cfg_field *fields, const char *path) {
    static const char *const types[] = {"int", "number", "bool", "string", "object"};
    for (const vlm_cfg_field *x = fields; x->key; x++) {
        char key[160];
        snprintf(key, sizeof key, "%.80s.%.64s", path, x->key);
        if (x->type == VLM_CFG_OBJECT) {
            print_fields(f, x->sub, key);
            continue;
        }
        fprintf(f, "  %-34s %-6s %s\n", key, types[x->type], x->help ? x->help : "");
    }
}

void vlm_run_cfg_print_keys(FILE *f) {
    print_fields(f, vlm_model_cfg_fields, "model");
    print_fields(f, train_fields, "train");
    fprintf(f, "  %-34s %-6s %s\n", "train.freeze", "array",
            "parameter-name prefixes kept frozen, e.g. [\"vision_model.\", \"text_model.\"]");
    print_fields(f, vlm_optim_cfg_fields, "train.optim");
    fprintf(f, "  %-34s %-6s %s\n", "train.optim.lr_mult", "object",
            "{\"name prefix\": multiplier}, e.g. {\"text_model.\": 0.1}");
    print_fields(f, data_fields, "data");
    fprintf(f, "  %-34s %-6s %s\n", "data.mean", "number", "or [r, g, b]: subtracted after /255");
    fprintf(f, "  %-34s %-6s %s\n", "data.std", "number", "or [r, g, b]: divides after the mean");
    print_fields(f, init_fields, "init");
    fprintf(f, "  %-34s %-6s %s\n", "out", "string", "the run directory");
}
