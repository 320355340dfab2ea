/* init.c - starting parts of a model from other models (init.towers,
 * init.decoder) and freezing parameters by name prefix (train.freeze).
 *
 * A source is a directory or a .safetensors file. A directory stands for its
 * model.safetensors (a vlm run without one: its newest good checkpoint), and
 * files beside the weights (config.json, tokenizers) are looked up in it; a
 * file's directory is its folder (RUN/checkpoints/step-N: RUN). Weights that
 * carry vlm.model_config metadata were written by vlm and load by our names;
 * anything else is taken for a Hugging Face checkpoint (SigLIP towers, a
 * LlamaForCausalLM decoder) and goes through nn's HF loaders.
 *
 * The sizes of a part come from its source, so a config names the source
 * and not its shape: from the vlm metadata, or from HF config.json + tensor
 * shapes (vlm_model_cfg_from_hf_*). Without a config.json beside HF weights
 * the config's sizes stay, and a mismatch is a load error naming the tensor.
 * Dropout and gradient checkpointing are training choices: they keep the
 * config's values. */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char weights[VLM_CFG_STR + 64];
    char dir[VLM_CFG_STR + 64];
    char config[VLM_CFG_STR + 80]; /* config.json beside the weights, "" = none */
    bool ours;                     /* written by vlm: vlm.model_config metadata */
    vlm_model_cfg model;           /* ours: the metadata's model config */
} init_source;

/* The weights of a source directory: model.safetensors, else the newest good
 * checkpoint of a vlm run. */
static int dir_weights(const char *key, const char *path, init_source *s) {
    snprintf(s->dir, sizeof s->dir, "%s", path);
    snprintf(s->weights, sizeof s->weights, "%s/model.safetensors", path);
    if (vlm_is_file(s->weights)) return 0;
    char ck[VLM_CFG_STR + 32];
    snprintf(ck, sizeof ck, "%s/checkpoints", path);
    char *latest = vlm_is_dir(ck) ? vlm_ckpt_find_latest(path) : NULL;
    if (!latest)
        return vlm_set_error("%s: %s has no model.safetensors%s", key, path,
                             vlm_is_dir(ck) ? " and no usable checkpoint" : "");
    snprintf(s->weights, sizeof s->weights, "%s", latest);
    free(latest);
    return 0;
}

/* The metadata's model config, when the weights are ours. */
static int read_meta(const char *key, init_source *s) {
    vlm_st *st = vlm_st_open(s->weights);
    if (!st) return vlm_set_error("%s: %s", key, vlm_last_error());
    const char *json = vlm_st_meta(st, "vlm.model_config");
    int rc = 0;
    s->ours = json != NULL;
    if (json) {
        cJSON *root = cJSON_Parse(json);
        vlm_model_cfg_defaults(&s->model);
        rc = root ? vlm_cfg_bind(root, vlm_model_cfg_fields, &s->model, "model") : -1;
        if (rc) rc = vlm_set_error("%s: %s: metadata vlm.model_config: %s", key, s->weights,
                                   root ? vlm_last_error() : "not JSON");
        cJSON_Delete(root);
    }
    vlm_st_close(st);
    return rc;
}

static int locate(const char *key, const char *path, init_source *s) {
    memset(s, 0, sizeof *s);
    if (vlm_is_dir(path)) {
        if (dir_weights(key, path, s)) return -1;
    } else if (vlm_is_file(path)) {
        char *d = vlm_run_dir_of(path);
        if (!d) return -1;
        snprintf(s->weights, sizeof s->weights, "%s", path);
        snprintf(s->dir, sizeof s->dir, "%s", d);
        free(d);
    } else {
        return vlm_set_error("%s: %s: no such file or directory (expected a run directory, a "
                             "model directory or a .safetensors file)", key, path);
    }
    snprintf(s->config, sizeof s->config, "%s/config.json", s->dir);
    if (!vlm_is_file(s->config)) s->config[0] = 0;
    return read_meta(key, s);
}

int vlm_init_find_file(const char *source, const char *const *names, char *out, size_t cap) {
    char dir[VLM_CFG_STR + 64];
    if (vlm_is_dir(source)) {
        snprintf(dir, sizeof dir, "%s", source);
    } else {
        char *d = vlm_run_dir_of(source);
        if (!d) return -1;
        snprintf(dir, sizeof dir, "%s", d);
        free(d);
    }
    for (int i = 0; names[i]; i++) {
        snprintf(out, cap, "%s/%s", dir, names[i]);
        if (vlm_is_file(out)) return 1;
    }
    return 0;
}

/* ---- sizes ------------------------------------------------------------------------------- */

static void keep_training_choices(vlm_model_cfg *to, const vlm_model_cfg *from) {
    to->vision.dropout = from->vision.dropout;
    to->vision.checkpoint = from->vision.checkpoint;
    to->text.dropout = from->text.dropout;
    to->text.checkpoint = from->text.checkpoint;
    to->decoder.dropout = from->decoder.dropout;
    to->decoder.checkpoint = from->decoder.checkpoint;
}

static int towers_config(vlm_run_cfg *c) {
    init_source s;
    if (locate("init.towers", c->init.towers, &s)) return -1;
    vlm_model_cfg m = c->model;
    if (s.ours) {
        m.vision = s.model.vision;
        m.text = s.model.text;
    } else if (s.config[0]) {
        if (vlm_model_cfg_from_hf_siglip(&m, s.config, s.weights))
            return vlm_set_error("init.towers: %s", vlm_last_error());
    } else {
        return 0; /* HF weights alone: the config's sizes must match them */
    }
    keep_training_choices(&m, &c->model);
    m.embed_dim = m.vision.width;
    c->model = m;
    fprintf(stderr, "init.towers: model.vision and model.text from %s (image %d, width %d x %d "
            "layers; text width %d x %d layers, vocab %d)\n", s.ours ? s.weights : s.config,
            m.vision.image_size, m.vision.width, m.vision.layers, m.text.width, m.text.layers,
            m.text.vocab);
    return 0;
}

static int decoder_config(vlm_run_cfg *c) {
    init_source s;
    if (locate("init.decoder", c->init.decoder, &s)) return -1;
    vlm_model_cfg m = c->model;
    if (s.ours) {
        if (strcmp(s.model.type, "captioner"))
            return vlm_set_error("init.decoder: %s is a \"%s\" model, which has no decoder",
                                 s.weights, s.model.type);
        m.decoder = s.model.decoder;
    } else if (s.config[0]) {
        if (vlm_model_cfg_from_hf_llama(&m.decoder, s.config, s.weights))
            return vlm_set_error("init.decoder: %s", vlm_last_error());
    } else {
        return 0;
    }
    keep_training_choices(&m, &c->model);
    c->model = m;
    fprintf(stderr, "init.decoder: model.decoder from %s (width %d x %d layers, %d/%d heads, "
            "vocab %d)\n", s.ours ? s.weights : s.config, m.decoder.width, m.decoder.layers,
            m.decoder.heads, m.decoder.kv_heads, m.decoder.vocab);
    return 0;
}

int vlm_init_resolve_config(vlm_run_cfg *c) {
    if (c->init.towers[0] && towers_config(c)) return -1;
    if (c->init.decoder[0] && decoder_config(c)) return -1;
    return 0;
}

/* ---- weights ------------------------------------------------------------------------------ */

/* Our tensors whose names start with prefix, every such parameter required
 * (optional: a full name that may be absent). */
static int load_prefix(vlm_model *m, const init_source *s, const char *key, const char *prefix,
                       const char *optional, int *loaded) {
    const char *opt[] = {optional, NULL};
    vlm_st_load_opts o = {.strip = prefix, .allow_unexpected = true, .optional = opt};
    vlm_st_load_report rep = {0};
    int rc = vlm_st_load_params(m->params, s->weights, prefix, &o, &rep);
    *loaded += rep.n_loaded;
    vlm_st_load_report_free(&rep);
    if (rc) return vlm_set_error("%s: %s", key, vlm_last_error());
    return 0;
}

/* A part a source can initialise: its key, HF loader, and our name prefixes. */
typedef struct {
    const char *key, *hf_kind;
    int (*load_hf)(vlm_model *m, const char *safetensors);
    const char *prefixes[4]; /* NULL-terminated; each one's parameters are required */
    const char *optional;    /* a parameter that may be absent (a tied lm_head) */
} init_part;

static const init_part towers_part = {"init.towers", "SigLIP", vlm_load_hf_siglip,
                                      {"vision_model.", "text_model.", "logit_", NULL}, NULL};
static const init_part decoder_part = {"init.decoder", "Llama", vlm_load_hf_decoder,
                                       {"decoder.", NULL}, "decoder.lm_head.weight"};

static int load_part(vlm_model *m, const init_part *p, const char *path) {
    init_source s;
    if (locate(p->key, path, &s)) return -1;
    if (!s.ours) {
        if (p->load_hf(m, s.weights)) return vlm_set_error("%s: %s", p->key, vlm_last_error());
        fprintf(stderr, "%s: Hugging Face %s weights from %s\n", p->key, p->hf_kind, s.weights);
        return 0;
    }
    int n = 0;
    char names[128] = "";
    for (int i = 0; p->prefixes[i]; i++) {
        if (load_prefix(m, &s, p->key, p->prefixes[i], p->optional, &n)) return -1;
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s*", i ? ", " : "", p->prefixes[i]);
    }
    fprintf(stderr, "%s: %d tensors (%s) from %s\n", p->key, n, names, s.weights);
    return 0;
}

int vlm_init_load(vlm_model *m, const vlm_init_cfg *init) {
    if (init->towers[0] && load_part(m, &towers_part, init->towers)) return -1;
    if (init->decoder[0] && load_part(m, &decoder_part, init->decoder)) return -1;
    return 0;
}

/* ---- freezing ------------------------------------------------------------------------------- */

int64_t vlm_trainable_numel(const vlm_model *m) {
    int64_t n = 0;
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        const vlm_tensor *t = vlm_params_at(m->params, i);
        if (t->requires_grad) n += t->numel;
    }
    return n;
}

int vlm_freeze_prefixes(vlm_model *m, const char (*prefixes)[VLM_OPTIM_PREFIX_LEN], int n,
                        const char *key) {
    for (int k = 0; k < n; k++) {
        size_t len = strlen(prefixes[k]);
        int hits = 0;
        for (int i = 0; i < vlm_params_count(m->params); i++) {
            vlm_tensor *t = vlm_params_at(m->params, i);
            if (strncmp(t->name, prefixes[k], len)) continue;
            vlm_param_set_frozen(t, true);
            hits++;
        }
        /* a typo would otherwise train what the user meant to keep */
        if (!hits)
            return vlm_set_error("%s: no parameter name starts with '%s' (names are as in "
                                 "`vlm inspect`, e.g. vision_model., text_model., decoder.)", key,
                                 prefixes[k]);
    }
    if (vlm_trainable_numel(m) == 0)
        return vlm_set_error("%s: every parameter is frozen: nothing to train", key);
    return 0;
}
