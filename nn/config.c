/* config.c - JSON configs bound to C structs through field tables, and the
 * model config with its defaults and checks. */
#include "nn.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the binder ------------------------------------------------------------ */

static const vlm_cfg_field *find_field(const vlm_cfg_field *fields, const char *key) {
    for (const vlm_cfg_field *f = fields; f->key; f++)
        if (strcmp(f->key, key) == 0) return f;
    return NULL;
}

static int bind_value(const cJSON *v, const vlm_cfg_field *f, char *base, const char *key) {
    void *p = base + f->offset;
    switch (f->type) {
    case VLM_CFG_INT:
        if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
            fabs(v->valuedouble) > 2147483647.0)
            return vlm_set_error("config: %s must be an integer", key);
        *(int *)p = (int)v->valuedouble;
        return 0;
    case VLM_CFG_FLOAT:
        if (!cJSON_IsNumber(v)) return vlm_set_error("config: %s must be a number", key);
        *(float *)p = (float)v->valuedouble;
        return 0;
    case VLM_CFG_BOOL:
        if (!cJSON_IsBool(v)) return vlm_set_error("config: %s must be true or false", key);
        *(bool *)p = cJSON_IsTrue(v);
        return 0;
    case VLM_CFG_STRING:
        if (!cJSON_IsString(v)) return vlm_set_error("config: %s must be a string", key);
        if (strlen(v->valuestring) >= VLM_CFG_STR)
            return vlm_set_error("config: %s is longer than %d bytes", key, VLM_CFG_STR - 1);
        strcpy((char *)p, v->valuestring);
        return 0;
    case VLM_CFG_OBJECT:
        if (!cJSON_IsObject(v)) return vlm_set_error("config: %s must be an object", key);
        return vlm_cfg_bind(v, f->sub, p, key);
    }
    return vlm_set_error("config: %s has an unknown field type", key);
}

int vlm_cfg_bind(const cJSON *obj, const vlm_cfg_field *fields, void *dst, const char *path) {
    if (!cJSON_IsObject(obj)) return vlm_set_error("config: %s must be an object", path);
    for (const cJSON *v = obj->child; v; v = v->next) {
        char key[512];
        snprintf(key, sizeof key, "%s%s%s", path, *path ? "." : "", v->string);
        const vlm_cfg_field *f = find_field(fields, v->string);
        if (!f) return vlm_set_error("config: unknown key '%s'", key);
        if (bind_value(v, f, dst, key) != 0) return -1;
    }
    return 0;
}

cJSON *vlm_cfg_to_json(const vlm_cfg_field *fields, const void *src) {
    cJSON *o = cJSON_CreateObject();
    const char *base = src;
    for (const vlm_cfg_field *f = fields; o && f->key; f++) {
        const void *p = base + f->offset;
        cJSON *v = NULL;
        switch (f->type) {
        case VLM_CFG_INT:
            v = cJSON_CreateNumber(*(const int *)p);
            break;
        case VLM_CFG_FLOAT:
            v = cJSON_CreateNumber((double)*(const float *)p);
            break;
        case VLM_CFG_BOOL:
            v = cJSON_CreateBool(*(const bool *)p);
            break;
        case VLM_CFG_STRING:
            v = cJSON_CreateString((const char *)p);
            break;
        case VLM_CFG_OBJECT:
            v = vlm_cfg_to_json(f->sub, p);
            break;
        }
        if (!v) {
            cJSON_Delete(o);
            vlm_set_error("config: out of memory");
            return NULL;
        }
        cJSON_AddItemToObject(o, f->key, v);
    }
    return o;
}

/* Parses value as JSON when it is JSON (3e-4, true, {"a":1}, "quoted"), else
 * treats it as a bare string (so --set data.path=/tmp/x.h5 works). */
static cJSON *parse_value(const char *value) {
    cJSON *v = cJSON_Parse(value);
    return v ? v : cJSON_CreateString(value);
}

int vlm_cfg_set(cJSON *root, const char *assignment) {
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return vlm_set_error("--set: expected key=value, got '%s'", assignment);
    char key[512];
    size_t klen = (size_t)(eq - assignment);
    if (klen >= sizeof key) return vlm_set_error("--set: key too long in '%s'", assignment);
    memcpy(key, assignment, klen);
    key[klen] = 0;
    cJSON *node = root;
    char *save = NULL;
    char *part = strtok_r(key, ".", &save);
    while (part) {
        char *next = strtok_r(NULL, ".", &save);
        if (!next) {
            cJSON *v = parse_value(eq + 1);
            if (!v) return vlm_set_error("--set: out of memory");
            if (cJSON_GetObjectItemCaseSensitive(node, part))
                cJSON_ReplaceItemInObjectCaseSensitive(node, part, v);
            else
                cJSON_AddItemToObject(node, part, v);
            return 0;
        }
        cJSON *child = cJSON_GetObjectItemCaseSensitive(node, part);
        if (!child) {
            child = cJSON_CreateObject();
            if (!child) return vlm_set_error("--set: out of memory");
            cJSON_AddItemToObject(node, part, child);
        } else if (!cJSON_IsObject(child)) {
            return vlm_set_error("--set: '%s' is not an object in '%s'", part, assignment);
        }
        node = child;
        part = next;
    }
    return vlm_set_error("--set: empty key in '%s'", assignment);
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vlm_set_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len + 4096 + 1 > cap) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) {
                free(buf);
                fclose(f);
                vlm_set_error("%s: out of memory", path);
                return NULL;
            }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, 4096, f);
        len += n;
        if (n < 4096) break;
    }
    bool err = ferror(f);
    fclose(f);
    if (err) {
        free(buf);
        vlm_set_error("%s: read error", path);
        return NULL;
    }
    buf[len] = 0;
    return buf;
}

cJSON *vlm_json_load(const char *path) {
    char *text = read_text(path);
    if (!text) return NULL;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, true);
    if (!root) {
        int line = 1;
        for (const char *c = text; end && c < end; c++)
            line += *c == '\n';
        vlm_set_error("%s: invalid JSON near line %d", path, line);
    }
    free(text);
    return root;
}

/* ---- the model config -------------------------------------------------------- */

#define F(struct_, field, kind, help)                                                              \
    { #field, kind, offsetof(struct_, field), NULL, help }

static const vlm_cfg_field vision_fields[] = {
    F(vlm_vision_cfg, image_size, VLM_CFG_INT, "input resolution (square)"),
    F(vlm_vision_cfg, patch, VLM_CFG_INT, "patch size"),
    F(vlm_vision_cfg, channels, VLM_CFG_INT, "image channels (3)"),
    F(vlm_vision_cfg, width, VLM_CFG_INT, "hidden size"),
    F(vlm_vision_cfg, layers, VLM_CFG_INT, "encoder layers"),
    F(vlm_vision_cfg, heads, VLM_CFG_INT, "attention heads"),
    F(vlm_vision_cfg, mlp, VLM_CFG_INT, "MLP hidden size"),
    F(vlm_vision_cfg, ln_eps, VLM_CFG_FLOAT, "layernorm epsilon"),
    F(vlm_vision_cfg, dropout, VLM_CFG_FLOAT, "residual dropout"),
    F(vlm_vision_cfg, checkpoint, VLM_CFG_BOOL, "gradient checkpointing per block"),
    {0},
};

static const vlm_cfg_field text_fields[] = {
    F(vlm_text_cfg, vocab, VLM_CFG_INT, "vocabulary size"),
    F(vlm_text_cfg, ctx_len, VLM_CFG_INT, "context length (texts are padded to it)"),
    F(vlm_text_cfg, width, VLM_CFG_INT, "hidden size"),
    F(vlm_text_cfg, layers, VLM_CFG_INT, "encoder layers"),
    F(vlm_text_cfg, heads, VLM_CFG_INT, "attention heads"),
    F(vlm_text_cfg, mlp, VLM_CFG_INT, "MLP hidden size"),
    F(vlm_text_cfg, ln_eps, VLM_CFG_FLOAT, "layernorm epsilon"),
    F(vlm_text_cfg, dropout, VLM_CFG_FLOAT, "residual dropout"),
    F(vlm_text_cfg, pad_id, VLM_CFG_INT, "padding token id"),
    F(vlm_text_cfg, checkpoint, VLM_CFG_BOOL, "gradient checkpointing per block"),
    {0},
};

static const vlm_cfg_field fusion_fields[] = {
    F(vlm_fusion_cfg, heads, VLM_CFG_INT, "cross-attention heads"),
    F(vlm_fusion_cfg, mlp, VLM_CFG_INT, "MLP hidden size"),
    F(vlm_fusion_cfg, ln_eps, VLM_CFG_FLOAT, "layernorm epsilon"),
    {0},
};

static const vlm_cfg_field decoder_fields[] = {
    F(vlm_decoder_cfg, vocab, VLM_CFG_INT, "vocabulary size"),
    F(vlm_decoder_cfg, width, VLM_CFG_INT, "hidden size"),
    F(vlm_decoder_cfg, layers, VLM_CFG_INT, "decoder layers"),
    F(vlm_decoder_cfg, heads, VLM_CFG_INT, "query heads"),
    F(vlm_decoder_cfg, kv_heads, VLM_CFG_INT, "key/value heads (grouped-query attention)"),
    F(vlm_decoder_cfg, mlp, VLM_CFG_INT, "SwiGLU hidden size"),
    F(vlm_decoder_cfg, max_len, VLM_CFG_INT,
      "longest sequence (prefix + caption) for the KV cache"),
    F(vlm_decoder_cfg, rms_eps, VLM_CFG_FLOAT, "RMSNorm epsilon"),
    F(vlm_decoder_cfg, rope_theta, VLM_CFG_FLOAT, "RoPE base"),
    F(vlm_decoder_cfg, dropout, VLM_CFG_FLOAT, "residual dropout"),
    F(vlm_decoder_cfg, tie_embeddings, VLM_CFG_BOOL, "lm head shares the token embedding"),
    F(vlm_decoder_cfg, checkpoint, VLM_CFG_BOOL, "gradient checkpointing per block"),
    {0},
};

const vlm_cfg_field vlm_model_cfg_fields[] = {
    F(vlm_model_cfg, type, VLM_CFG_STRING, "\"siglip\" (contrastive towers) or \"captioner\""),
    {"vision", VLM_CFG_OBJECT, offsetof(vlm_model_cfg, vision), vision_fields, "image tower"},
    {"text", VLM_CFG_OBJECT, offsetof(vlm_model_cfg, text), text_fields, "text tower"},
    {"fusion", VLM_CFG_OBJECT, offsetof(vlm_model_cfg, fusion), fusion_fields, "fusion block"},
    {"decoder", VLM_CFG_OBJECT, offsetof(vlm_model_cfg, decoder), decoder_fields, "decoder"},
    F(vlm_model_cfg, pixel_shuffle, VLM_CFG_INT, "captioner: space-to-depth factor (1 = off)"),
    F(vlm_model_cfg, embed_dim, VLM_CFG_INT, "contrastive embedding size (0 = vision width)"),
    {0},
};
#undef F

void vlm_model_cfg_defaults(vlm_model_cfg *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->type, "siglip");
    c->vision = (vlm_vision_cfg){.image_size = 32,
                                 .patch = 8,
                                 .channels = 3,
                                 .width = 64,
                                 .layers = 2,
                                 .heads = 4,
                                 .mlp = 256,
                                 .ln_eps = 1e-6f};
    c->text = (vlm_text_cfg){.vocab = 1024,
                             .ctx_len = 16,
                             .width = 64,
                             .layers = 2,
                             .heads = 4,
                             .mlp = 256,
                             .ln_eps = 1e-6f,
                             .pad_id = 0};
    c->fusion = (vlm_fusion_cfg){.heads = 4, .mlp = 256, .ln_eps = 1e-6f};
    c->decoder = (vlm_decoder_cfg){.vocab = 1024,
                                   .width = 64,
                                   .layers = 2,
                                   .heads = 4,
                                   .kv_heads = 2,
                                   .mlp = 192,
                                   .max_len = 128,
                                   .rms_eps = 1e-5f,
                                   .rope_theta = 10000.0f,
                                   .tie_embeddings = true};
    c->pixel_shuffle = 1;
}

static int positive(int v, const char *key) {
    return v > 0 ? 0 : vlm_set_error("config: %s must be positive (got %d)", key, v);
}

static int divides(int a, int b, const char *ka, const char *kb) {
    if (a > 0 && b % a == 0) return 0;
    return vlm_set_error("config: %s (%d) must divide %s (%d)", ka, a, kb, b);
}

static int validate_towers(const vlm_model_cfg *c) {
    const vlm_vision_cfg *v = &c->vision;
    const vlm_text_cfg *t = &c->text;
    if (positive(v->width, "model.vision.width") || positive(v->layers, "model.vision.layers") ||
        positive(v->mlp, "model.vision.mlp") || positive(v->channels, "model.vision.channels") ||
        divides(v->patch, v->image_size, "model.vision.patch", "model.vision.image_size") ||
        divides(v->heads, v->width, "model.vision.heads", "model.vision.width"))
        return -1;
    if (positive(t->vocab, "model.text.vocab") || positive(t->ctx_len, "model.text.ctx_len") ||
        positive(t->width, "model.text.width") || positive(t->layers, "model.text.layers") ||
        positive(t->mlp, "model.text.mlp") ||
        divides(t->heads, t->width, "model.text.heads", "model.text.width"))
        return -1;
    if (t->pad_id < 0 || t->pad_id >= t->vocab)
        return vlm_set_error("config: model.text.pad_id %d outside the vocabulary (%d)", t->pad_id,
                             t->vocab);
    if (v->dropout < 0 || v->dropout >= 1 || t->dropout < 0 || t->dropout >= 1)
        return vlm_set_error("config: dropout must be in [0, 1)");
    return 0;
}

static int validate_captioner(const vlm_model_cfg *c) {
    const vlm_decoder_cfg *d = &c->decoder;
    int grid = c->vision.image_size / c->vision.patch;
    if (positive(c->fusion.mlp, "model.fusion.mlp") ||
        divides(c->fusion.heads, c->text.width, "model.fusion.heads", "model.text.width") ||
        positive(d->vocab, "model.decoder.vocab") || positive(d->layers, "model.decoder.layers") ||
        positive(d->mlp, "model.decoder.mlp") || positive(d->max_len, "model.decoder.max_len") ||
        divides(d->heads, d->width, "model.decoder.heads", "model.decoder.width") ||
        divides(d->kv_heads, d->heads, "model.decoder.kv_heads", "model.decoder.heads") ||
        divides(c->pixel_shuffle, grid, "model.pixel_shuffle", "the patch grid side"))
        return -1;
    if (positive(d->width, "model.decoder.width")) return -1;
    if ((d->width / d->heads) % 2)
        return vlm_set_error("config: decoder head size %d must be even for RoPE",
                             d->width / d->heads);
    /* negated comparisons so that NaN fails too */
    if (!(d->dropout >= 0 && d->dropout < 1))
        return vlm_set_error("config: model.decoder.dropout (%g) must be in [0, 1)",
                             (double)d->dropout);
    if (!(d->rms_eps > 0) || !(c->fusion.ln_eps > 0))
        return vlm_set_error("config: model.decoder.rms_eps (%g) and model.fusion.ln_eps (%g) "
                             "must be positive",
                             (double)d->rms_eps, (double)c->fusion.ln_eps);
    if (!(d->rope_theta > 0) || isinf(d->rope_theta))
        return vlm_set_error("config: model.decoder.rope_theta must be a positive number, got %g",
                             (double)d->rope_theta);
    /* the decoder sees image tokens + a prompt (>= 1) + a caption (>= 1) */
    int image_tokens = (grid / c->pixel_shuffle) * (grid / c->pixel_shuffle);
    if (d->max_len < image_tokens + 2)
        return vlm_set_error("config: model.decoder.max_len (%d) leaves no room for a prompt and "
                             "a caption after the %d image tokens",
                             d->max_len, image_tokens);
    return 0;
}

int vlm_model_cfg_validate(const vlm_model_cfg *c) {
    bool captioner = strcmp(c->type, "captioner") == 0;
    if (!captioner && strcmp(c->type, "siglip") != 0)
        return vlm_set_error("config: model.type must be \"siglip\" or \"captioner\", got \"%s\"",
                             c->type);
    if (validate_towers(c)) return -1;
    if (c->embed_dim != 0 && c->embed_dim != c->vision.width)
        return vlm_set_error("config: model.embed_dim (%d) must equal model.vision.width (%d)",
                             c->embed_dim, c->vision.width);
    return captioner ? validate_captioner(c) : 0;
}
