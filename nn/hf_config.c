/* hf_config.c - model configs from Hugging Face checkpoints (config.json +
 * model.safetensors), loading HF weights into our models, and parameter
 * counts computed from a config alone.
 *
 * Hub config.json files are sparse: save_pretrained drops every value equal
 * to the config class default, and those defaults belong to a transformers
 * version we do not run. So sizes are derived from the tensor shapes, which
 * cannot lie, and config.json only supplies what shapes cannot tell (head
 * counts, epsilons, RoPE base, token ids), with the class defaults when a key
 * is absent. A size that config.json does state must agree with the shapes. */
#include "nn.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- parameter counts (pure: mirror the declarations in towers.c, layers.c
 * and captioner.c; -1 for a config whose sizes cannot be counted) ----------------- */

static int64_t linear_n(int64_t in, int64_t out, bool bias) { return in * out + (bias ? out : 0); }

static int64_t mlp_n(int64_t d, int64_t hidden) {
    return linear_n(d, hidden, true) + linear_n(hidden, d, true);
}

/* pre-LN encoder block: two biased layernorms, q/k/v/out, MLP */
static int64_t block_n(int64_t d, int64_t mlp) {
    return 4 * d + 4 * linear_n(d, d, true) + mlp_n(d, mlp);
}

static int64_t vision_n(const vlm_vision_cfg *v) {
    int64_t d = v->width, grid = v->image_size / v->patch;
    int64_t embed = d * v->channels * v->patch * v->patch + d + grid * grid * d;
    /* MAP head: probe, fused in_proj [3D, D], out_proj, layernorm, MLP */
    int64_t head = d + linear_n(d, 3 * d, true) + linear_n(d, d, true) + 2 * d + mlp_n(d, v->mlp);
    return embed + v->layers * block_n(d, v->mlp) + 2 * d + head;
}

static int64_t text_n(const vlm_text_cfg *t, int64_t embed_dim) {
    int64_t d = t->width;
    return (int64_t)t->vocab * d + (int64_t)t->ctx_len * d + t->layers * block_n(d, t->mlp) +
           2 * d + linear_n(d, embed_dim, true);
}

int64_t vlm_decoder_cfg_param_count(const vlm_decoder_cfg *c) {
    if (!c || c->heads <= 0 || c->vocab < 0 || c->width < 0 || c->layers < 0 || c->kv_heads < 0 ||
        c->mlp < 0)
        return -1;
    int64_t d = c->width, hd = d / c->heads;
    int64_t attn = linear_n(d, c->heads * hd, false) + 2 * linear_n(d, c->kv_heads * hd, false) +
                   linear_n(c->heads * hd, d, false);
    int64_t layer = 2 * d + attn + 3 * linear_n(d, c->mlp, false);
    int64_t embed = (int64_t)c->vocab * d;
    /* a tied head is the embedding matrix itself: counted once */
    return embed + c->layers * layer + d + (c->tie_embeddings ? 0 : embed);
}

int64_t vlm_model_cfg_param_count(const vlm_model_cfg *c) {
    if (!c) return -1;
    const vlm_vision_cfg *v = &c->vision;
    const vlm_text_cfg *t = &c->text;
    bool captioner = strcmp(c->type, "captioner") == 0;
    if ((!captioner && strcmp(c->type, "siglip") != 0) || v->patch <= 0 || v->width < 0 ||
        v->layers < 0 || v->mlp < 0 || v->channels < 0 || v->image_size < 0 || t->vocab < 0 ||
        t->ctx_len < 0 || t->width < 0 || t->layers < 0 || t->mlp < 0)
        return -1;
    /* the towers and logit_scale/logit_bias exist in both model types */
    int64_t n = vision_n(v) + text_n(t, v->width) + 2;
    if (!captioner) return n;
    const vlm_fusion_cfg *f = &c->fusion;
    int64_t dt = t->width, dv = v->width, s = c->pixel_shuffle;
    int64_t dec = vlm_decoder_cfg_param_count(&c->decoder);
    if (dec < 0 || f->mlp < 0 || s <= 0) return -1;
    /* fusion: ln_q, ln_kv, q [dt <- dt], k/v [dt <- dv], out, ln_mlp, MLP */
    int64_t fusion = 2 * dt + 2 * dv + 2 * linear_n(dt, dt, true) + 2 * linear_n(dv, dt, true) +
                     2 * dt + mlp_n(dt, f->mlp);
    int64_t dd = c->decoder.width;
    return n + fusion + dec + linear_n(dv * s * s, dd, true) + linear_n(dt, dd, true);
}

/* ---- small helpers ---------------------------------------------------------------- */

static bool starts_with(const char *s, const char *prefix) {
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static char *shape_str(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < ndim && len < size; i++)
        len += (size_t)snprintf(buf + len, size - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < size) snprintf(buf + len, size - len, "]");
    return buf;
}

/* The first three names of a list and its length: enough for an error message
 * without allocating (the names are borrowed from the file or the store). */
typedef struct {
    const char *first[3];
    int n;
} name_list;

static void list_add(name_list *l, const char *name) {
    if (l->n < 3) l->first[l->n] = name;
    l->n++;
}

static int list_err(const char *file, const char *what, const name_list *l) {
    return vlm_set_error("%s: %s (%d): %s%s%s%s%s%s", file, what, l->n, l->first[0],
                         l->n > 1 ? ", " : "", l->n > 1 ? l->first[1] : "", l->n > 2 ? ", " : "",
                         l->n > 2 ? l->first[2] : "", l->n > 3 ? ", ..." : "");
}

/* ---- reading config.json ------------------------------------------------------------ */

/* Where keys are read: obj (NULL = every key absent), named `path` in
 * messages ("vision_config." for the nested form, "" at the top level). */
typedef struct {
    const char *file;
    const cJSON *obj;
    const char *path;
} hf_keys;

/* The value of key, or NULL when absent. transformers writes null for an
 * unset optional (pad_token_id, num_key_value_heads, rope_scaling), which
 * means "use the default", so null counts as absent. */
static const cJSON *hf_get(const hf_keys *k, const char *key) {
    const cJSON *v = k->obj ? cJSON_GetObjectItemCaseSensitive(k->obj, key) : NULL;
    return v && !cJSON_IsNull(v) ? v : NULL;
}

/* Integer key: *out = its value (and *found = true), or def when absent. */
static int hf_int(const hf_keys *k, const char *key, int def, int *out, bool *found) {
    const cJSON *v = hf_get(k, key);
    if (found) *found = v != NULL;
    *out = def;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        fabs(v->valuedouble) > (double)INT_MAX)
        return vlm_set_error("%s: %s%s must be an integer", k->file, k->path, key);
    *out = (int)v->valuedouble;
    return 0;
}

/* A positive finite number (epsilons, RoPE base), or def when absent. */
static int hf_positive(const hf_keys *k, const char *key, float def, float *out) {
    const cJSON *v = hf_get(k, key);
    *out = def;
    if (!v) return 0;
    if (!cJSON_IsNumber(v)) return vlm_set_error("%s: %s%s must be a number", k->file, k->path, key);
    float x = (float)v->valuedouble;
    /* negated so that NaN fails too */
    if (!(x > 0) || isinf(x))
        return vlm_set_error("%s: %s%s must be a positive number, got %g", k->file, k->path, key,
                             v->valuedouble);
    *out = x;
    return 0;
}

static int hf_bool(const hf_keys *k, const char *key, bool def, bool *out, bool *found) {
    const cJSON *v = hf_get(k, key);
    if (found) *found = v != NULL;
    *out = def;
    if (!v) return 0;
    if (!cJSON_IsBool(v))
        return vlm_set_error("%s: %s%s must be true or false", k->file, k->path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A setting we implement only one way: absent, or exactly `want`. */
static int hf_only_string(const hf_keys *k, const char *key, const char *want) {
    const cJSON *v = hf_get(k, key);
    if (!v) return 0;
    if (!cJSON_IsString(v)) return vlm_set_error("%s: %s%s must be a string", k->file, k->path, key);
    if (strcmp(v->valuestring, want) != 0)
        return vlm_set_error("%s: %s%s is \"%s\"; only \"%s\" is supported", k->file, k->path, key,
                             v->valuestring, want);
    return 0;
}

static int hf_only_bool(const hf_keys *k, const char *key, bool want) {
    bool b;
    if (hf_bool(k, key, want, &b, NULL)) return -1;
    if (b != want)
        return vlm_set_error("%s: %s%s is %s; only %s is supported", k->file, k->path, key,
                             b ? "true" : "false", want ? "true" : "false");
    return 0;
}

/* A size the shapes determine: config.json may omit it, but if it states it,
 * it must agree. `evidence` says which tensor gave the value. */
static int hf_agree(const hf_keys *k, const char *key, int derived, const char *evidence) {
    int v;
    bool found;
    if (hf_int(k, key, derived, &v, &found)) return -1;
    if (found && v != derived)
        return vlm_set_error("%s: %s%s is %d, but the weights say %d (%s)", k->file, k->path, key, v,
                             derived, evidence);
    return 0;
}

/* A head count from config.json (default def when absent) that must split width. */
static int hf_heads(const hf_keys *k, const char *key, int def, int width, int *out) {
    bool found;
    if (hf_int(k, key, def, out, &found)) return -1;
    if (*out <= 0 || width % *out != 0)
        return vlm_set_error("%s: %s%s = %d%s must be positive and divide the hidden size %d of "
                             "the weights",
                             k->file, k->path, key, *out, found ? "" : " (the default: key absent)",
                             width);
    return 0;
}

/* ---- reading shapes ----------------------------------------------------------------- */

/* The shape of tensor `name`, which must exist with ndim dims, each in
 * [1, INT_MAX] (our configs hold ints). `why` completes "needed for ...". */
static const int64_t *st_shape_of(const vlm_st *st, const char *name, int ndim, const char *why) {
    int i = vlm_st_find(st, name);
    if (i < 0) {
        vlm_set_error("%s: tensor '%s' is missing (needed for %s)", vlm_st_path(st), name, why);
        return NULL;
    }
    const int64_t *s = vlm_st_shape(st, i);
    bool ok = vlm_st_ndim(st, i) == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = s[d] >= 1 && s[d] <= INT_MAX;
    if (!ok) {
        char b[128];
        vlm_set_error("%s: tensor '%s' is %s; expected %d dims of positive size (needed for %s)",
                      vlm_st_path(st), name, shape_str(b, sizeof b, vlm_st_ndim(st, i), s), ndim,
                      why);
        return NULL;
    }
    return s;
}

/* Layer count = highest N in "<prefix>N.<anything>" + 1 (0 if none). */
static int layer_count(const vlm_st *st, const char *prefix) {
    size_t lp = strlen(prefix);
    long top = -1;
    for (int i = 0; i < vlm_st_count(st); i++) {
        const char *name = vlm_st_name(st, i);
        if (strncmp(name, prefix, lp) != 0) continue;
        const char *p = name + lp;
        long n = 0;
        int digits = 0;
        /* at most 6 digits: a million layers is no real checkpoint, and it keeps n small */
        for (; *p >= '0' && *p <= '9' && digits < 7; p++, digits++)
            n = n * 10 + (*p - '0');
        if (digits && digits < 7 && *p == '.' && n > top) top = n;
    }
    return (int)(top + 1);
}

static bool has_prefix_tensor(const vlm_st *st, const char *prefix) {
    for (int i = 0; i < vlm_st_count(st); i++)
        if (starts_with(vlm_st_name(st, i), prefix)) return true;
    return false;
}

/* "<name> is [a, b]" for hf_agree's evidence. */
static const char *evidence(char *buf, size_t size, const char *name, int ndim,
                            const int64_t *shape) {
    char s[128];
    snprintf(buf, size, "%s is %s", name, shape_str(s, sizeof s, ndim, shape));
    return buf;
}

/* ---- SigLIP ----------------------------------------------------------------------------- */

#define SIGLIP_ACT "gelu_pytorch_tanh"

static int siglip_vision(vlm_vision_cfg *v, const hf_keys *k, const vlm_st *st) {
    const char *pe_name = "vision_model.embeddings.patch_embedding.weight";
    const char *pos_name = "vision_model.embeddings.position_embedding.weight";
    const char *fc1_name = "vision_model.encoder.layers.0.mlp.fc1.weight";
    const int64_t *pe = st_shape_of(st, pe_name, 4, "the vision width, channels and patch size");
    if (!pe) return -1;
    const int64_t *pos = st_shape_of(st, pos_name, 2, "the vision image size");
    const int64_t *fc1 = st_shape_of(st, fc1_name, 2, "the vision MLP size");
    /* our tower always has the MAP head (vision_use_head = true) */
    const int64_t *probe = st_shape_of(st, "vision_model.head.probe", 3, "the MAP head");
    if (!pos || !fc1 || !probe) return -1;
    int d = (int)pe[0], ch = (int)pe[1], p = (int)pe[2];
    char b1[128], b2[128], ev[300];
    if (pe[3] != p || pos[1] != d || fc1[1] != d || probe[0] != 1 || probe[1] != 1 || probe[2] != d)
        return vlm_set_error("%s: inconsistent vision shapes: %s is %s, %s is %s, %s and the "
                             "probe must agree on the width %d with square patches",
                             vlm_st_path(st), pe_name, shape_str(b1, sizeof b1, 4, pe), pos_name,
                             shape_str(b2, sizeof b2, 2, pos), fc1_name, d);
    int64_t n = pos[0], grid = (int64_t)llround(sqrt((double)n));
    if (grid * grid != n || grid * p > INT_MAX)
        return vlm_set_error("%s: %s has %lld rows, not a square patch grid", vlm_st_path(st),
                             pos_name, (long long)n);
    int layers = layer_count(st, "vision_model.encoder.layers.");
    if (layers < 1)
        return vlm_set_error("%s: no vision_model.encoder.layers.N tensors", vlm_st_path(st));
    char last[80];
    snprintf(last, sizeof last, "the last is vision_model.encoder.layers.%d", layers - 1);
    if (hf_agree(k, "hidden_size", d, evidence(ev, sizeof ev, pe_name, 4, pe)) ||
        hf_agree(k, "num_channels", ch, evidence(ev, sizeof ev, pe_name, 4, pe)) ||
        hf_agree(k, "patch_size", p, evidence(ev, sizeof ev, pe_name, 4, pe)) ||
        hf_agree(k, "image_size", (int)(grid * p), evidence(ev, sizeof ev, pos_name, 2, pos)) ||
        hf_agree(k, "intermediate_size", (int)fc1[0], evidence(ev, sizeof ev, fc1_name, 2, fc1)) ||
        hf_agree(k, "num_hidden_layers", layers, last) ||
        hf_only_string(k, "hidden_act", SIGLIP_ACT) || hf_only_bool(k, "vision_use_head", true))
        return -1;
    int heads;
    float eps;
    if (hf_heads(k, "num_attention_heads", 12, d, &heads) ||
        hf_positive(k, "layer_norm_eps", 1e-6f, &eps))
        return -1;
    v->image_size = (int)(grid * p);
    v->patch = p;
    v->channels = ch;
    v->width = d;
    v->layers = layers;
    v->heads = heads;
    v->mlp = (int)fc1[0];
    v->ln_eps = eps;
    return 0;
}

/* embed_dim: the width the text head must map to (= the vision width). */
static int siglip_text(vlm_text_cfg *t, const hf_keys *k, const vlm_st *st, int embed_dim) {
    const char *tok_name = "text_model.embeddings.token_embedding.weight";
    const char *pos_name = "text_model.embeddings.position_embedding.weight";
    const char *fc1_name = "text_model.encoder.layers.0.mlp.fc1.weight";
    const char *head_name = "text_model.head.weight";
    const int64_t *tok = st_shape_of(st, tok_name, 2, "the text vocabulary and width");
    if (!tok) return -1;
    const int64_t *pos = st_shape_of(st, pos_name, 2, "the text context length");
    const int64_t *fc1 = st_shape_of(st, fc1_name, 2, "the text MLP size");
    const int64_t *head = st_shape_of(st, head_name, 2, "the text embedding size");
    if (!pos || !fc1 || !head) return -1;
    int v = (int)tok[0], d = (int)tok[1];
    char b1[128], b2[128], ev[300];
    if (pos[1] != d || fc1[1] != d || head[1] != d)
        return vlm_set_error("%s: inconsistent text shapes: %s is %s but %s is %s (%s and %s must "
                             "have the width %d too)",
                             vlm_st_path(st), tok_name, shape_str(b1, sizeof b1, 2, tok), pos_name,
                             shape_str(b2, sizeof b2, 2, pos), fc1_name, head_name, d);
    if (head[0] != embed_dim)
        return vlm_set_error("%s: %s is %s: the text embedding size %lld must equal the vision "
                             "width %d (the towers share one embedding space)",
                             vlm_st_path(st), head_name, shape_str(b1, sizeof b1, 2, head),
                             (long long)head[0], embed_dim);
    int layers = layer_count(st, "text_model.encoder.layers.");
    if (layers < 1)
        return vlm_set_error("%s: no text_model.encoder.layers.N tensors", vlm_st_path(st));
    char last[80];
    snprintf(last, sizeof last, "the last is text_model.encoder.layers.%d", layers - 1);
    if (hf_agree(k, "vocab_size", v, evidence(ev, sizeof ev, tok_name, 2, tok)) ||
        hf_agree(k, "hidden_size", d, evidence(ev, sizeof ev, tok_name, 2, tok)) ||
        hf_agree(k, "max_position_embeddings", (int)pos[0],
                 evidence(ev, sizeof ev, pos_name, 2, pos)) ||
        hf_agree(k, "intermediate_size", (int)fc1[0], evidence(ev, sizeof ev, fc1_name, 2, fc1)) ||
        hf_agree(k, "projection_size", (int)head[0], evidence(ev, sizeof ev, head_name, 2, head)) ||
        hf_agree(k, "num_hidden_layers", layers, last) ||
        hf_only_string(k, "hidden_act", SIGLIP_ACT))
        return -1;
    int heads, pad;
    bool pad_found;
    float eps;
    if (hf_heads(k, "num_attention_heads", 12, d, &heads) ||
        hf_positive(k, "layer_norm_eps", 1e-6f, &eps) ||
        hf_int(k, "pad_token_id", 1, &pad, &pad_found))
        return -1;
    if (pad < 0 || pad >= v)
        return vlm_set_error("%s: %spad_token_id = %d%s is outside the vocabulary (%d)", k->file,
                             k->path, pad, pad_found ? "" : " (the default: key absent)", v);
    t->vocab = v;
    t->ctx_len = (int)pos[0];
    t->width = d;
    t->layers = layers;
    t->heads = heads;
    t->mlp = (int)fc1[0];
    t->ln_eps = eps;
    t->pad_id = pad;
    return 0;
}

/* "<a> + <b>: the derived config is invalid: <validate's message>" */
static int invalid_derived(const char *config_json, const char *safetensors) {
    return vlm_set_error("%s + %s: the derived config is invalid: %s", config_json, safetensors,
                         vlm_last_error());
}

/* An optional sub-object of a config.json: NULL when absent or null. */
static int sub_object(const cJSON *root, const char *file, const char *key, const cJSON **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    *out = v && !cJSON_IsNull(v) ? v : NULL;
    if (*out && !cJSON_IsObject(*out))
        return vlm_set_error("%s: %s must be an object", file, key);
    return 0;
}

static cJSON *load_object(const char *config_json) {
    cJSON *root = vlm_json_load(config_json);
    if (root && !cJSON_IsObject(root)) {
        vlm_set_error("%s: expected a JSON object at the top level", config_json);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int vlm_model_cfg_from_hf_siglip(vlm_model_cfg *cfg, const char *config_json,
                                 const char *safetensors) {
    if (!cfg || !config_json || !safetensors)
        return vlm_set_error("hf siglip config: NULL argument");
    cJSON *root = load_object(config_json);
    if (!root) return -1;
    vlm_st *st = vlm_st_open(safetensors);
    int rc = st ? 0 : -1;
    const cJSON *vc = NULL, *tc = NULL;
    if (rc == 0)
        rc = sub_object(root, config_json, "vision_config", &vc) ||
                     sub_object(root, config_json, "text_config", &tc)
                 ? -1
                 : 0;
    /* nested (SiglipModel: text_config / vision_config, either possibly
     * absent when all its values are defaults) or flat (a single tower's
     * SiglipVisionConfig / SiglipTextConfig: keys at the top level) */
    bool flat = !vc && !tc;
    hf_keys vk = {config_json, vc ? vc : flat ? root : NULL, vc ? "vision_config." : ""};
    hf_keys tk = {config_json, tc ? tc : flat ? root : NULL, tc ? "text_config." : ""};
    /* work on a copy, so that *cfg is untouched on error */
    vlm_model_cfg c = *cfg;
    bool has_v = rc == 0 && has_prefix_tensor(st, "vision_model.");
    bool has_t = rc == 0 && has_prefix_tensor(st, "text_model.");
    if (rc == 0 && !has_v && !has_t)
        rc = vlm_set_error("%s: no vision_model.* or text_model.* tensors: not a SigLIP checkpoint",
                           safetensors);
    if (rc == 0 && has_v) rc = siglip_vision(&c.vision, &vk, st);
    if (rc == 0 && has_t) rc = siglip_text(&c.text, &tk, st, c.vision.width);
    if (rc == 0) {
        c.embed_dim = c.vision.width;
        rc = vlm_model_cfg_validate(&c) ? invalid_derived(config_json, safetensors) : 0;
    }
    if (rc == 0) *cfg = c;
    vlm_st_close(st);
    cJSON_Delete(root);
    return rc;
}

/* ---- Llama / SmolLM2 --------------------------------------------------------------------- */

/* LlamaConfig defaults (transformers) for the keys that shapes do not give. */
#define LLAMA_HEADS 32
#define LLAMA_RMS_EPS 1e-6f
#define LLAMA_ROPE_THETA 10000.0f
#define LLAMA_MAX_POS 2048

/* "model." when the file is a LlamaForCausalLM ("model.embed_tokens.weight"),
 * "" for a bare LlamaModel ("embed_tokens.weight"); NULL if neither. */
static const char *llama_prefix(const vlm_st *st) {
    if (vlm_st_find(st, "model.embed_tokens.weight") >= 0) return "model.";
    if (vlm_st_find(st, "embed_tokens.weight") >= 0) return "";
    vlm_set_error("%s: neither model.embed_tokens.weight nor embed_tokens.weight: not a Llama "
                  "checkpoint",
                  vlm_st_path(st));
    return NULL;
}

typedef struct {
    const int64_t *emb, *q, *k, *gate, *norm, *lm; /* lm NULL when the file has no lm_head */
    char emb_name[64], q_name[80], k_name[80], gate_name[80], norm_name[64];
    int layers;
} llama_shapes;

static int llama_read_shapes(llama_shapes *s, const vlm_st *st, const char *px) {
    snprintf(s->emb_name, sizeof s->emb_name, "%sembed_tokens.weight", px);
    snprintf(s->q_name, sizeof s->q_name, "%slayers.0.self_attn.q_proj.weight", px);
    snprintf(s->k_name, sizeof s->k_name, "%slayers.0.self_attn.k_proj.weight", px);
    snprintf(s->gate_name, sizeof s->gate_name, "%slayers.0.mlp.gate_proj.weight", px);
    snprintf(s->norm_name, sizeof s->norm_name, "%snorm.weight", px);
    char layers_prefix[32];
    snprintf(layers_prefix, sizeof layers_prefix, "%slayers.", px);
    s->emb = st_shape_of(st, s->emb_name, 2, "the vocabulary and width");
    s->q = s->emb ? st_shape_of(st, s->q_name, 2, "the query size") : NULL;
    s->k = s->q ? st_shape_of(st, s->k_name, 2, "the key/value heads") : NULL;
    s->gate = s->k ? st_shape_of(st, s->gate_name, 2, "the SwiGLU size") : NULL;
    s->norm = s->gate ? st_shape_of(st, s->norm_name, 1, "the width") : NULL;
    if (!s->norm) return -1;
    s->lm = NULL;
    if (vlm_st_find(st, "lm_head.weight") >= 0 &&
        !(s->lm = st_shape_of(st, "lm_head.weight", 2, "the output head")))
        return -1;
    s->layers = layer_count(st, layers_prefix);
    if (s->layers < 1) return vlm_set_error("%s: no %sN tensors", vlm_st_path(st), layers_prefix);
    int64_t d = s->emb[1];
    char b1[128], b2[128];
    if (s->q[1] != d || s->k[1] != d || s->gate[1] != d || s->norm[0] != d ||
        (s->lm && (s->lm[0] != s->emb[0] || s->lm[1] != d)))
        return vlm_set_error("%s: inconsistent shapes: %s is %s but %s is %s (q/k/gate/norm/"
                             "lm_head must have the width %lld too)",
                             vlm_st_path(st), s->emb_name, shape_str(b1, sizeof b1, 2, s->emb),
                             s->q_name, shape_str(b2, sizeof b2, 2, s->q), (long long)d);
    return 0;
}

/* Options this decoder does not implement must be absent or at their
 * LlamaConfig defaults, or the weights would load and compute something else. */
static int llama_unsupported(const hf_keys *k) {
    if (hf_only_string(k, "hidden_act", "silu") || hf_only_bool(k, "attention_bias", false) ||
        hf_only_bool(k, "mlp_bias", false))
        return -1;
    if (hf_get(k, "rope_scaling"))
        return vlm_set_error("%s: rope_scaling is set; only plain RoPE (rope_scaling null) is "
                             "supported",
                             k->file);
    return 0;
}

static int llama_derive(vlm_decoder_cfg *dec, const hf_keys *k, const vlm_st *st) {
    const char *px = llama_prefix(st);
    llama_shapes s;
    if (!px || llama_read_shapes(&s, st, px) || llama_unsupported(k)) return -1;
    int v = (int)s.emb[0], d = (int)s.emb[1];
    char ev[300], last[96];
    snprintf(last, sizeof last, "the last is %slayers.%d", px, s.layers - 1);
    if (hf_agree(k, "vocab_size", v, evidence(ev, sizeof ev, s.emb_name, 2, s.emb)) ||
        hf_agree(k, "hidden_size", d, evidence(ev, sizeof ev, s.emb_name, 2, s.emb)) ||
        hf_agree(k, "intermediate_size", (int)s.gate[0],
                 evidence(ev, sizeof ev, s.gate_name, 2, s.gate)) ||
        hf_agree(k, "num_hidden_layers", s.layers, last))
        return -1;
    int heads, kv, head_dim, max_pos;
    bool kv_found;
    if (hf_heads(k, "num_attention_heads", LLAMA_HEADS, d, &heads)) return -1;
    int hd = d / heads;
    /* newer configs state head_dim; we only implement head_dim = hidden / heads */
    if (hf_int(k, "head_dim", hd, &head_dim, NULL)) return -1;
    if (head_dim != hd || s.q[0] != d)
        return vlm_set_error("%s: head_dim %d with %d heads (query rows %lld in %s): only "
                             "head_dim = hidden_size / num_attention_heads = %d is supported",
                             k->file, head_dim, heads, (long long)s.q[0], s.q_name, hd);
    if (hd % 2)
        return vlm_set_error("%s: head size %d (hidden_size %d / num_attention_heads %d) must be "
                             "even for RoPE",
                             k->file, hd, d, heads);
    /* absent num_key_value_heads means one kv head per query head */
    if (hf_int(k, "num_key_value_heads", heads, &kv, &kv_found)) return -1;
    const char *kv_note = kv_found ? "" : " (absent: = num_attention_heads)";
    if (kv <= 0 || heads % kv != 0)
        return vlm_set_error("%s: num_key_value_heads = %d%s must divide num_attention_heads = %d",
                             k->file, kv, kv_note, heads);
    if (s.k[0] != (int64_t)kv * hd)
        return vlm_set_error("%s: num_key_value_heads is %d%s, but the weights say %lld (%s: "
                             "rows = kv heads x head size %d)",
                             k->file, kv, kv_note, (long long)(s.k[0] / hd),
                             evidence(ev, sizeof ev, s.k_name, 2, s.k), hd);
    float eps, theta;
    if (hf_positive(k, "rms_norm_eps", LLAMA_RMS_EPS, &eps) ||
        hf_positive(k, "rope_theta", LLAMA_ROPE_THETA, &theta) ||
        hf_int(k, "max_position_embeddings", LLAMA_MAX_POS, &max_pos, NULL))
        return -1;
    if (max_pos <= 0)
        return vlm_set_error("%s: max_position_embeddings must be positive, got %d", k->file,
                             max_pos);
    /* tie_word_embeddings defaults to false in LlamaConfig, but a file with
     * no lm_head.weight can only mean a tied head (transformers drops the
     * tied copy when saving) */
    bool tie, tie_found;
    if (hf_bool(k, "tie_word_embeddings", false, &tie, &tie_found)) return -1;
    if (!tie_found) tie = s.lm == NULL;
    if (!tie && !s.lm)
        return vlm_set_error("%s: tie_word_embeddings is false, but %s has no lm_head.weight",
                             k->file, vlm_st_path(st));
    dec->vocab = v;
    dec->width = d;
    dec->layers = s.layers;
    dec->heads = heads;
    dec->kv_heads = kv;
    dec->mlp = (int)s.gate[0];
    dec->max_len = max_pos;
    dec->rms_eps = eps;
    dec->rope_theta = theta;
    dec->tie_embeddings = tie;
    return 0;
}

int vlm_model_cfg_from_hf_llama(vlm_decoder_cfg *dec, const char *config_json,
                                const char *safetensors) {
    if (!dec || !config_json || !safetensors)
        return vlm_set_error("hf llama config: NULL argument");
    cJSON *root = load_object(config_json);
    if (!root) return -1;
    vlm_st *st = vlm_st_open(safetensors);
    hf_keys k = {config_json, root, ""};
    vlm_decoder_cfg d = *dec; /* *dec untouched on error */
    int rc = st ? llama_derive(&d, &k, st) : -1;
    if (rc == 0) *dec = d;
    vlm_st_close(st);
    cJSON_Delete(root);
    return rc;
}

/* ---- loading HF weights -------------------------------------------------------------------- */

/* File tensor i can fill parameter t: same shape, a float dtype. */
static int tensor_fits(const vlm_st *st, int i, const vlm_tensor *t) {
    const char *dt = vlm_st_dtype(st, i);
    bool same = vlm_st_ndim(st, i) == t->ndim;
    for (int d = 0; same && d < t->ndim; d++)
        same = vlm_st_shape(st, i)[d] == t->shape[d];
    char a[128], b[128];
    if (!same)
        return vlm_set_error("%s: tensor '%s' is %s, but the model's parameter '%s' is %s",
                             vlm_st_path(st), vlm_st_name(st, i),
                             shape_str(a, sizeof a, vlm_st_ndim(st, i), vlm_st_shape(st, i)),
                             t->name, shape_str(b, sizeof b, t->ndim, t->shape));
    if (strcmp(dt, "F32") && strcmp(dt, "BF16") && strcmp(dt, "F16"))
        return vlm_set_error("%s: tensor '%s' is %s; weights load from F32, BF16 or F16",
                             vlm_st_path(st), vlm_st_name(st, i), dt);
    return 0;
}

static bool siglip_param(const char *name) {
    return starts_with(name, "vision_model.") || starts_with(name, "text_model.") ||
           strcmp(name, "logit_scale") == 0 || strcmp(name, "logit_bias") == 0;
}

/* Every check before any value is written: names, shapes, dtypes. */
static int siglip_plan(const vlm_model *m, const vlm_st *st) {
    bool siglip = strcmp(m->cfg.type, "siglip") == 0;
    /* a captioner takes the text tower only from a file that has one (a
     * SiglipVisionModel file initialises just its image tower) */
    bool need_text = siglip || has_prefix_tensor(st, "text_model.");
    name_list unexpected = {0}, missing = {0};
    for (int i = 0; i < vlm_st_count(st); i++) {
        const char *name = vlm_st_name(st, i);
        /* buffers some exports persist (I64 position indices), not parameters */
        if (ends_with(name, "position_ids")) continue;
        const vlm_tensor *t = siglip_param(name) ? vlm_params_find(m->params, name) : NULL;
        if (!t)
            list_add(&unexpected, name);
        else if (tensor_fits(st, i, t))
            return -1;
    }
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        const char *name = vlm_params_at(m->params, i)->name;
        bool required = starts_with(name, "vision_model.") ||
                        (need_text && starts_with(name, "text_model.")) ||
                        (siglip && siglip_param(name));
        if (required && vlm_st_find(st, name) < 0) list_add(&missing, name);
    }
    if (unexpected.n)
        return list_err(vlm_st_path(st), "tensors with no matching SigLIP parameter in the model",
                        &unexpected);
    if (missing.n)
        return list_err(vlm_st_path(st), "SigLIP parameters missing from the file", &missing);
    return 0;
}

int vlm_load_hf_siglip(vlm_model *m, const char *safetensors) {
    if (!m || !safetensors) return vlm_set_error("load hf siglip: NULL argument");
    vlm_st *st = vlm_st_open(safetensors);
    if (!st) return -1;
    int rc = siglip_plan(m, st);
    vlm_st_close(st);
    if (rc) return -1;
    /* the plan has checked everything the loader would: it now only skips the
     * position_ids buffers and leaves the parameters the file does not cover
     * (a captioner's fusion and decoder) alone */
    vlm_st_load_opts opts = {.allow_missing = true, .allow_unexpected = true};
    return vlm_st_load_params(m->params, safetensors, "", &opts, NULL);
}

/* Whether tensors a and b of st hold the same values (compared as f32 when
 * their dtypes differ). */
static int same_values(const vlm_st *st, int a, int b, bool *same) {
    size_t na, nb;
    const void *pa = vlm_st_data(st, a, &na), *pb = vlm_st_data(st, b, &nb);
    if (strcmp(vlm_st_dtype(st, a), vlm_st_dtype(st, b)) == 0) {
        *same = na == nb && memcmp(pa, pb, na) == 0;
        return 0;
    }
    int64_t n = vlm_st_numel(st, a);
    float *fa = malloc((size_t)n * sizeof *fa), *fb = malloc((size_t)n * sizeof *fb);
    int rc = fa && fb ? 0 : vlm_set_error("%s: out of memory comparing lm_head", vlm_st_path(st));
    if (rc == 0)
        rc = vlm_st_read_f32(st, vlm_st_name(st, a), fa, n) ||
                     vlm_st_read_f32(st, vlm_st_name(st, b), fb, n)
                 ? -1
                 : 0;
    if (rc == 0) *same = memcmp(fa, fb, (size_t)n * sizeof *fa) == 0;
    free(fa);
    free(fb);
    return rc;
}

/* The file's lm_head.weight against a model whose head is tied: HF re-ties
 * and drops it, which is harmless only when it is a copy of the embedding. */
static int tied_head_ok(const vlm_st *st, const char *px, int lm) {
    char emb_name[64];
    snprintf(emb_name, sizeof emb_name, "%sembed_tokens.weight", px);
    int e = vlm_st_find(st, emb_name);
    bool same = false;
    if (e >= 0 && vlm_st_ndim(st, e) == vlm_st_ndim(st, lm) &&
        vlm_st_numel(st, e) == vlm_st_numel(st, lm) && same_values(st, e, lm, &same))
        return -1;
    if (!same)
        return vlm_set_error("%s: lm_head.weight differs from %s, but model.decoder."
                             "tie_embeddings is true: set it false to load an untied head",
                             vlm_st_path(st), emb_name);
    return 0;
}

static int decoder_plan(const vlm_model *m, const vlm_st *st, const char *px, bool tied) {
    const char *dp = "decoder.model.";
    size_t lpx = strlen(px), ldp = strlen(dp);
    int lm = vlm_st_find(st, "lm_head.weight");
    name_list unexpected = {0}, missing = {0};
    char full[512];
    for (int i = 0; i < vlm_st_count(st); i++) {
        const char *name = vlm_st_name(st, i);
        /* RoPE tables older transformers persisted: recomputed, not loaded */
        if (ends_with(name, "rotary_emb.inv_freq") || i == lm) continue;
        const vlm_tensor *t = NULL;
        if (starts_with(name, px) && (size_t)snprintf(full, sizeof full, "%s%s", dp,
                                                      name + lpx) < sizeof full)
            t = vlm_params_find(m->params, full);
        if (!t)
            list_add(&unexpected, name);
        else if (tensor_fits(st, i, t))
            return -1;
    }
    for (int i = 0; i < vlm_params_count(m->params); i++) {
        const char *name = vlm_params_at(m->params, i)->name;
        if (!starts_with(name, dp)) continue;
        snprintf(full, sizeof full, "%s%s", px, name + ldp);
        if (vlm_st_find(st, full) < 0) list_add(&missing, name);
    }
    if (!tied) {
        const vlm_tensor *head = vlm_params_find(m->params, "decoder.lm_head.weight");
        if (lm < 0)
            list_add(&missing, "decoder.lm_head.weight");
        else if (head && tensor_fits(st, lm, head))
            return -1;
    } else if (lm >= 0 && tied_head_ok(st, px, lm)) {
        return -1;
    }
    if (unexpected.n)
        return list_err(vlm_st_path(st), "tensors with no matching decoder parameter in the model",
                        &unexpected);
    if (missing.n)
        return list_err(vlm_st_path(st), "decoder parameters missing from the file", &missing);
    return 0;
}

int vlm_load_hf_decoder(vlm_model *m, const char *safetensors) {
    if (!m || !safetensors) return vlm_set_error("load hf decoder: NULL argument");
    const vlm_captioner *cap = m->captioner;
    if (!cap)
        return vlm_set_error("load hf decoder %s: the model (type \"%s\") has no decoder",
                             safetensors, m->cfg.type);
    bool tied = cap->decoder.cfg.tie_embeddings;
    vlm_st *st = vlm_st_open(safetensors);
    if (!st) return -1;
    const char *px = llama_prefix(st);
    int rc = px ? decoder_plan(m, st, px, tied) : -1;
    bool bare = px && !*px, has_lm = vlm_st_find(st, "lm_head.weight") >= 0;
    vlm_st_close(st);
    if (rc) return -1;
    /* Names map by prefix: "model.X" -> "decoder.model.X" and "lm_head.weight"
     * -> "decoder.lm_head.weight" (a tied model has no such parameter, so the
     * loader skips it). A bare LlamaModel file ("X" -> "decoder.model.X")
     * needs a second pass for an untied lm_head. The plan has checked every
     * name, shape and dtype, so neither pass can fail on content. */
    vlm_st_load_opts opts = {.allow_missing = true, .allow_unexpected = true};
    rc = vlm_st_load_params(m->params, safetensors, bare ? "decoder.model." : "decoder.", &opts,
                            NULL);
    if (rc == 0 && bare && !tied && has_lm)
        rc = vlm_st_load_params(m->params, safetensors, "decoder.", &opts, NULL);
    return rc;
}
