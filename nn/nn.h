/* nn.h - layers, models with Hugging Face parameter names, safetensors I/O. */
#ifndef VLM_NN_H
#define VLM_NN_H

#include "autograd.h"

#include <cjson/cJSON.h>

/* ---- configs -------------------------------------------------------------- */

/* A JSON object is bound to a C struct through a table of fields; unknown
 * keys and wrong types are errors naming the full key ("model.vision.width"). */
typedef enum { VLM_CFG_INT, VLM_CFG_FLOAT, VLM_CFG_BOOL, VLM_CFG_STRING, VLM_CFG_OBJECT } vlm_cfg_type;

typedef struct vlm_cfg_field {
    const char *key;
    vlm_cfg_type type;
    size_t offset;                     /* into the struct; STRING: char[VLM_CFG_STR] */
    const struct vlm_cfg_field *sub;   /* OBJECT: fields of the nested struct at offset */
    const char *help;                  /* one line for the config reference */
} vlm_cfg_field;

#define VLM_CFG_STR 256

/* Fills dst from obj (keys absent from obj keep their current values). */
int vlm_cfg_bind(const cJSON *obj, const vlm_cfg_field *fields, void *dst, const char *path);
/* The struct as a JSON object (every field), for saving resolved configs. */
cJSON *vlm_cfg_to_json(const vlm_cfg_field *fields, const void *src);
/* Applies "a.b.c=value" to a JSON tree: value parsed as JSON if it parses
 * (numbers, true/false, quoted strings, objects), else taken as a string. */
int vlm_cfg_set(cJSON *root, const char *assignment);
/* Reads and parses a JSON file (errors name the file and the line). */
cJSON *vlm_json_load(const char *path);

/* ---- model configs --------------------------------------------------------- */

typedef struct {
    int image_size, patch, channels;
    int width, layers, heads, mlp;
    float ln_eps;
    float dropout;   /* residual dropout after attention and MLP (0 = off) */
    bool checkpoint; /* gradient checkpointing per block */
} vlm_vision_cfg;

typedef struct {
    int vocab, ctx_len;
    int width, layers, heads, mlp;
    float ln_eps, dropout;
    int pad_id;
    bool checkpoint;
} vlm_text_cfg;

typedef struct {
    int heads, mlp;
    float ln_eps;
} vlm_fusion_cfg;

typedef struct {
    int vocab, width, layers, heads, kv_heads, mlp, max_len;
    float rms_eps, rope_theta, dropout;
    bool tie_embeddings, checkpoint;
} vlm_decoder_cfg;

typedef struct {
    char type[VLM_CFG_STR]; /* "siglip" (contrastive) or "captioner" */
    vlm_vision_cfg vision;
    vlm_text_cfg text;
    vlm_fusion_cfg fusion;
    vlm_decoder_cfg decoder;
    int pixel_shuffle;      /* captioner: space-to-depth factor before image_proj (1 = off) */
    int embed_dim;          /* contrastive embedding size = vision width = text head out */
} vlm_model_cfg;

extern const vlm_cfg_field vlm_model_cfg_fields[];
/* Defaults for a tiny model, so a config only states what differs. */
void vlm_model_cfg_defaults(vlm_model_cfg *cfg);
/* Checks divisibility and ranges; errors name the key. */
int vlm_model_cfg_validate(const vlm_model_cfg *cfg);

/* ---- layers ------------------------------------------------------------------ */

/* Parameters are declared into a vlm_params store under their Hugging Face
 * names (prefix + suffix); the structs below only point at them. */
typedef struct { vlm_tensor *w, *b; } vlm_linear_p; /* w [out, in], b [out] or NULL */
typedef struct { vlm_tensor *w, *b; } vlm_norm_p;   /* b NULL for RMSNorm */
typedef struct { vlm_linear_p fc1, fc2; } vlm_mlp_p;         /* fc2(gelu_tanh(fc1 x)) */
typedef struct { vlm_linear_p gate, up, down; } vlm_swiglu_p; /* down(silu(gate x) * up x) */
typedef struct {
    vlm_linear_p q, k, v, o;
    int heads, kv_heads;
} vlm_attn_p;
/* pre-LN encoder block: x += attn(ln1 x); x += mlp(ln2 x) */
typedef struct {
    vlm_norm_p ln1, ln2;
    vlm_attn_p attn;
    vlm_mlp_p mlp;
} vlm_encoder_block;

/* Declares name = printf(fmt, ...) with the given shape. */
vlm_tensor *vlm_declare(vlm_params *p, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int vlm_linear_declare(vlm_params *p, vlm_linear_p *l, int in, int out, bool bias,
                       const char *name);
int vlm_norm_declare(vlm_params *p, vlm_norm_p *n, int dim, bool bias, const char *name);
int vlm_mlp_declare(vlm_params *p, vlm_mlp_p *m, int dim, int hidden, const char *name);
int vlm_swiglu_declare(vlm_params *p, vlm_swiglu_p *m, int dim, int hidden, const char *name);
/* q/k/v/o under name.{q,k,v}_proj and name.<out_name> ("out_proj" or "o_proj"). */
int vlm_attn_declare(vlm_params *p, vlm_attn_p *a, int q_dim, int kv_dim, int heads,
                     int kv_heads, int head_dim, bool bias, const char *out_name,
                     const char *name);
int vlm_encoder_block_declare(vlm_params *p, vlm_encoder_block *b, int dim, int heads, int mlp,
                              const char *name);

/* Initialisation from a seed, by parameter name (so it does not depend on
 * declaration order): biases 0; norm weights (every 1-D ".weight") 1; logit_scale log(10);
 * logit_bias -10; every other tensor N(0, 0.02^2). Each tensor draws from its
 * own stream seeded by (seed, name). */
void vlm_init_params(vlm_params *p, uint64_t seed);

vlm_tensor *vlm_linear_fwd(vlm_ctx *ctx, const vlm_linear_p *l, vlm_tensor *x);
vlm_tensor *vlm_layernorm_fwd(vlm_ctx *ctx, const vlm_norm_p *n, vlm_tensor *x, float eps);
/* The residual branches take r, the skip connection to add (NULL: none):
 * their last linear adds it (vlm_linear_residual), so r + branch(x) costs no
 * separate activation for the branch's output. */
vlm_tensor *vlm_mlp_fwd(vlm_ctx *ctx, const vlm_mlp_p *m, vlm_tensor *x, vlm_tensor *r);
vlm_tensor *vlm_swiglu_fwd(vlm_ctx *ctx, const vlm_swiglu_p *m, vlm_tensor *x, vlm_tensor *r);

/* Multi-head attention: xq [B, Tq, Dq] queries xkv [B, Tk, Dkv] (self-attention:
 * xkv == xq). With rope_theta > 0, RoPE rotates q and k at positions
 * q_pos / k_pos + t. Returns [B, Tq, Dq_out]. */
typedef struct {
    vlm_attn_opts mask;
    float rope_theta;
    int64_t q_pos, k_pos;
    vlm_tensor *residual; /* added to the output projection's result (NULL: none) */
} vlm_mha_opts;
vlm_tensor *vlm_mha_fwd(vlm_ctx *ctx, const vlm_attn_p *a, vlm_tensor *xq, vlm_tensor *xkv,
                        const vlm_mha_opts *opts);
/* x + dropout(f) with dropout off when p == 0 or !training */
vlm_tensor *vlm_residual(vlm_ctx *ctx, vlm_tensor *x, vlm_tensor *f, float p, bool training);
/* The r to hand a branch so that it adds x itself: x, or NULL when dropout
 * is on (it comes between the branch and the add: then use vlm_residual). */
vlm_tensor *vlm_residual_for(vlm_tensor *x, float p, bool training);
vlm_tensor *vlm_encoder_block_fwd(vlm_ctx *ctx, const vlm_encoder_block *b, vlm_tensor *x,
                                  const vlm_attn_opts *mask, float eps, float dropout,
                                  bool training);

/* ---- towers and models ------------------------------------------------------- */

/* SigLIP vision transformer: conv patch embedding (as patchify + GEMM), learned
 * positions, pre-LN blocks, post_layernorm, MAP head. Names vision_model.*. */
typedef struct {
    vlm_vision_cfg cfg;
    vlm_linear_p patch;      /* w [D, C, p, p] (HF conv layout), b [D] */
    vlm_tensor *pos;         /* [N, D] */
    vlm_encoder_block *layers;
    vlm_norm_p post_ln;
    vlm_tensor *probe;       /* [1, 1, D] */
    vlm_linear_p in_proj;    /* [3D, D] rows = [Wq; Wk; Wv] */
    vlm_linear_p out_proj;
    vlm_norm_p head_ln;
    vlm_mlp_p head_mlp;
    int heads;
} vlm_vision_tower;

/* Encoder-only text transformer: token + position embeddings, pre-LN blocks,
 * final layernorm, pooled = last position, linear head. Names text_model.*. */
typedef struct {
    vlm_text_cfg cfg;
    vlm_tensor *tok, *pos;   /* [V, D], [ctx_len, D] */
    vlm_encoder_block *layers;
    vlm_norm_p final_ln;
    vlm_linear_p head;       /* [embed_dim, D] */
} vlm_text_tower;

typedef struct vlm_model vlm_model;
struct vlm_model {
    vlm_model_cfg cfg;
    vlm_params *params;
    vlm_vision_tower vision;
    vlm_text_tower text;
    vlm_tensor *logit_scale, *logit_bias; /* siglip: [1] each */
    void *captioner;                      /* captioner parts (nn/captioner.c), NULL for siglip */
};

int vlm_vision_declare(vlm_params *p, vlm_vision_tower *t, const vlm_vision_cfg *cfg);
int vlm_text_declare(vlm_params *p, vlm_text_tower *t, const vlm_text_cfg *cfg, int embed_dim);
/* images [B, C, H, W] -> post-layernorm tokens [B, N, D]; *pooled = MAP head [B, D]
 * (pooled may be NULL to skip the head). */
vlm_tensor *vlm_vision_forward(vlm_ctx *ctx, const vlm_vision_tower *t, vlm_tensor *images,
                               bool training, vlm_tensor **pooled);
/* ids i32 [B, T] (T <= ctx_len), key_mask u8 [B, T] or NULL -> final-layernorm
 * tokens [B, T, D]; *pooled = head(tokens[:, T-1]) [B, embed_dim] (may be NULL). */
vlm_tensor *vlm_text_forward(vlm_ctx *ctx, const vlm_text_tower *t, vlm_tensor *ids,
                             vlm_tensor *key_mask, bool training, vlm_tensor **pooled);

/* Builds a model from a validated config: declares every parameter under its
 * HF name, finalizes the store and initialises it from seed. */
vlm_model *vlm_model_new(const vlm_model_cfg *cfg, uint64_t seed);
void vlm_model_free(vlm_model *m);

/* SigLIP contrastive forward: L2-normalised embeddings and the sigmoid loss.
 * match: u8 [B, B] positives (NULL = diagonal). img_emb/txt_emb may be NULL. */
vlm_tensor *vlm_siglip_forward(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                               vlm_tensor *ids, vlm_tensor *key_mask, vlm_tensor *match,
                               bool training, vlm_tensor **img_emb, vlm_tensor **txt_emb);

/* ---- captioner (nn/captioner.c) ---------------------------------------------------- */

/* Fusion block (text tokens query image tokens), names fusion.*:
 *   t = t + attn.out_proj(MHA(ln_q(t) Wq, ln_kv(v) Wk, ln_kv(v) Wv))
 *   t = t + mlp(ln_mlp(t))
 * fusion.ln_q, fusion.ln_kv, fusion.attn.{q,k,v,out}_proj (biased), fusion.ln_mlp,
 * fusion.mlp.fc1/fc2. Queries have the text width, keys/values the vision width. */
typedef struct {
    vlm_norm_p ln_q, ln_kv, ln_mlp;
    vlm_attn_p attn;
    vlm_mlp_p mlp;
    float eps;
} vlm_fusion_block;

/* LLaMA-style decoder, names as HF LlamaForCausalLM under "decoder.":
 * decoder.model.embed_tokens.weight, decoder.model.layers.N.{input_layernorm,
 * post_attention_layernorm}.weight, .self_attn.{q,k,v,o}_proj.weight,
 * .mlp.{gate,up,down}_proj.weight, decoder.model.norm.weight, and
 * decoder.lm_head.weight only when embeddings are not tied. */
typedef struct {
    vlm_norm_p in_ln, post_ln;
    vlm_attn_p attn;
    vlm_swiglu_p mlp;
} vlm_decoder_layer;

typedef struct {
    vlm_decoder_cfg cfg;
    vlm_tensor *embed;   /* [V, D] */
    vlm_decoder_layer *layers;
    vlm_norm_p norm;
    vlm_tensor *lm_head; /* [V, D], or embed when tied */
} vlm_decoder;

/* Per-layer key/value cache for incremental decoding: keys and values of
 * every position seen so far (after RoPE), [B, max_len, kv_heads, head_dim],
 * and which of them are padding. Heap memory, so the context may be reset
 * between calls; cached positions are constants (gradients flow only through
 * the positions of the current call). 1 <= max_len <= cfg->max_len. */
typedef struct vlm_kv_cache vlm_kv_cache;
vlm_kv_cache *vlm_kv_cache_new(const vlm_decoder_cfg *cfg, int batch, int max_len);
void vlm_kv_cache_reset(vlm_kv_cache *c);
int64_t vlm_kv_cache_len(const vlm_kv_cache *c);
void vlm_kv_cache_free(vlm_kv_cache *c);

/* The captioner's parts beyond the towers (m->captioner points here).
 * image_proj: [Dd, Dv * s^2] (+bias), fused_proj: [Dd, Dt] (+bias). */
typedef struct {
    vlm_fusion_block fusion;
    vlm_decoder decoder;
    vlm_linear_p image_proj, fused_proj;
} vlm_captioner;

/* Declares fusion, decoder and projections for m->cfg (type "captioner") and
 * sets m->captioner. Called by vlm_model_new after the towers. */
int vlm_captioner_declare(vlm_model *m);
void vlm_captioner_free(vlm_model *m);

/* text [B, T, Dt], image [B, N, Dv], text_mask u8 [B, T] or NULL -> fused
 * tokens [B, T, Dt]; *pooled = mean over valid text tokens [B, Dt] (may be NULL). */
vlm_tensor *vlm_fusion_forward(vlm_ctx *ctx, const vlm_fusion_block *f, vlm_tensor *text,
                               vlm_tensor *image, vlm_tensor *text_mask, vlm_tensor **pooled);
/* ids i32 [B, T] -> embeddings [B, T, D] */
vlm_tensor *vlm_decoder_embed(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *ids);
/* embeds [B, T, D] -> logits [B, T, V]. Without a cache: positions 0..T-1 and
 * the given mask (CAUSAL, or PREFIX with prefix_len; NULL = CAUSAL). With a
 * cache: the new positions follow the cached ones, their keys/values are
 * appended, and they attend to everything cached plus themselves causally
 * (mask->kind PREFIX keeps the prefix bidirectional when the prefix is in
 * this call; prefix_len counts absolute positions). mask->key_mask is u8
 * [B, T] over this call's positions (0 = padding key); the cache remembers it,
 * so later calls keep ignoring those keys. */
vlm_tensor *vlm_decoder_forward(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *embeds,
                                const vlm_attn_opts *mask, vlm_kv_cache *cache, bool training);

/* The decoder's input prefix [image_proj(image tokens); fused_proj(fused
 * tokens)] for images [B, C, H, W] and a prompt (ids i32 [B, Tp], mask u8 [B, Tp]
 * or NULL) -> [B, P, Dd] with P = N / s^2 + Tp. */
vlm_tensor *vlm_captioner_prefix(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                                 vlm_tensor *prompt_ids, vlm_tensor *prompt_mask, bool training);
/* The decoder's key mask for [prefix; extra more positions]: u8 [B, P + extra],
 * 0 at the prompt's padding (prompt_mask 0) and 1 elsewhere, so the fused
 * tokens of padding are never attended (loss and generation alike). */
vlm_tensor *vlm_captioner_key_mask(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *prompt_mask,
                                   int64_t extra);
/* Teacher-forced caption loss: decoder input [prefix; embed(caption_in)] with
 * a prefix-LM mask; caption_in i32 [B, L] = BOS + caption tokens, targets i32
 * [B, L] = caption tokens + EOS with ignore_index (-100) on padding; mean
 * cross-entropy over the caption positions only. The prompt's padding is
 * masked as keys (vlm_captioner_key_mask). */
vlm_tensor *vlm_captioner_loss(vlm_ctx *ctx, const vlm_model *m, vlm_tensor *images,
                               vlm_tensor *prompt_ids, vlm_tensor *prompt_mask,
                               vlm_tensor *caption_in, vlm_tensor *targets, bool training);
#define VLM_IGNORE_INDEX (-100)

/* ---- HF configs (nn/hf_config.c) ------------------------------------------------- */

/* Configs from a Hugging Face checkpoint: its config.json and its
 * model.safetensors. Hub config.json files are sparse (save_pretrained drops
 * values equal to the class defaults), so every size comes from the tensor
 * shapes; config.json gives only what shapes cannot (head counts, epsilons,
 * RoPE base, pad id), with the transformers class defaults when a key is
 * absent or null. A size config.json does state must agree with the shapes.
 * Keys we do not read are ignored; a key we read with the wrong JSON type, a
 * disagreement, or a setting we do not implement (hidden_act other than
 * gelu_pytorch_tanh / silu, rope_scaling, attention biases in Llama, a
 * SigLIP vision tower without its MAP head) is an error naming the file and
 * the key. On error the output struct is untouched.
 *
 * SigLIP: config.json nested (SiglipModel: text_config / vision_config, each
 * optional) or flat (SiglipVisionConfig / SiglipTextConfig keys at the top
 * level). Only the towers present in the weights (vision_model.*,
 * text_model.*) are overwritten in *cfg; everything else in *cfg (type,
 * fusion, decoder, dropout, checkpointing, the other tower) is kept, so start
 * from vlm_model_cfg_defaults() or a loaded config (e.g. a captioner taking
 * its image tower from a SiglipVisionModel). Vision: width/channels/patch from
 * patch_embedding [D, C, p, p], image_size = sqrt(position rows) * p, layers =
 * highest layer index + 1, mlp from fc1; num_attention_heads (12),
 * layer_norm_eps (1e-6). Text: vocab/width from token_embedding, ctx_len =
 * position rows, head [E, D] with E = the vision width; num_attention_heads
 * (12), layer_norm_eps (1e-6), pad_token_id (1). embed_dim is set to the
 * vision width and the result must pass vlm_model_cfg_validate. */
int vlm_model_cfg_from_hf_siglip(vlm_model_cfg *cfg, const char *config_json,
                                 const char *safetensors);
/* LlamaForCausalLM / SmolLM2 (names with or without "model."): vocab/width
 * from embed_tokens, layers, mlp from gate_proj, kv heads checked against
 * k_proj [kv * head_dim, D]; num_attention_heads (32), num_key_value_heads
 * (= heads), rms_norm_eps (1e-6), rope_theta (10000), max_position_embeddings
 * (2048, -> max_len), tie_word_embeddings (absent: tied exactly when the file
 * has no lm_head.weight; false with no lm_head.weight is an error). dropout
 * and checkpoint keep their values in *dec. */
int vlm_model_cfg_from_hf_llama(vlm_decoder_cfg *dec, const char *config_json,
                                const char *safetensors);

/* Load HF weights into a built model; every name, shape and dtype is checked
 * before any value is written, so on error the model is untouched. Errors
 * list (the first three) unexpected or missing names with the file.
 * SigLIP: names map 1:1 (vision_model.*, text_model.*, logit_scale,
 * logit_bias); names ending in "position_ids" (buffers) are skipped. A
 * "siglip" model needs every tower parameter and both logits; a "captioner"
 * needs the vision tower, and takes the text tower (all of it) and logits only
 * if the file has them. Other parameters (fusion, decoder) are left alone. */
int vlm_load_hf_siglip(vlm_model *m, const char *safetensors);
/* Decoder of a captioner from a LlamaForCausalLM file: "model.X" ->
 * "decoder.model.X" (a bare LlamaModel file: "X" -> "decoder.model.X"),
 * "lm_head.weight" -> "decoder.lm_head.weight" (required when untied; with a
 * tied model it must equal embed_tokens, as HF would silently re-tie it).
 * "rotary_emb.inv_freq" buffers are skipped. */
int vlm_load_hf_decoder(vlm_model *m, const char *safetensors);

/* Parameter counts computed from a config alone (nothing allocated), equal to
 * vlm_params_numel of the model vlm_model_new builds; -1 for a config whose
 * sizes cannot be counted (unknown type, negative sizes, zero heads/patch).
 * A tied lm_head counts once. siglip-base-patch16-224: 203,155,970;
 * SmolLM2-135M's decoder: 134,515,008. Shipped configs (configs/): tiny,
 * model-fmnist, bench-siglip, bench-caption, siglip-base-patch16-224, and
 * smollm2-135m-decoder, a snippet holding only model.decoder (no type) to be
 * merged into a captioner config (copy the block, or --set model.decoder=...). */
int64_t vlm_model_cfg_param_count(const vlm_model_cfg *cfg);
int64_t vlm_decoder_cfg_param_count(const vlm_decoder_cfg *dec);

/* ---- safetensors --------------------------------------------------------- */

/* Reader. vlm_st_open maps the file read-only and checks every rule of the
 * format (REFERENCE.md "safetensors"), so a file that opens is consistent:
 * every tensor's bytes lie inside the file. Errors name the file and tensor.
 * Tensors are indexed 0..count-1 in name order. Dtypes listed: F64 F32 F16
 * BF16 I64 I32 I16 I8 U8 BOOL U16 U32 U64 F8_E4M3 F8_E5M2. */
typedef struct vlm_st vlm_st;

vlm_st *vlm_st_open(const char *path);
void vlm_st_close(vlm_st *st);
const char *vlm_st_path(const vlm_st *st);
int vlm_st_count(const vlm_st *st);
/* Index of the tensor called name, or -1 (sets no error). */
int vlm_st_find(const vlm_st *st, const char *name);
/* Accessors return NULL / -1 for an index out of range. */
const char *vlm_st_name(const vlm_st *st, int i);
const char *vlm_st_dtype(const vlm_st *st, int i); /* "F32", "BF16", ... */
int vlm_st_ndim(const vlm_st *st, int i);          /* 0 for a scalar */
const int64_t *vlm_st_shape(const vlm_st *st, int i);
int64_t vlm_st_numel(const vlm_st *st, int i);
/* The stored bytes (little-endian, row-major, possibly unaligned), valid
 * until vlm_st_close. nbytes may be NULL. */
const void *vlm_st_data(const vlm_st *st, int i, size_t *nbytes);
uint64_t vlm_st_header_bytes(const vlm_st *st); /* N, the JSON header length */
uint64_t vlm_st_data_bytes(const vlm_st *st);
/* __metadata__ (string values), in file order; vlm_st_meta gives NULL for an
 * absent key. */
const char *vlm_st_meta(const vlm_st *st, const char *key);
int vlm_st_meta_count(const vlm_st *st);
const char *vlm_st_meta_key(const vlm_st *st, int i);
const char *vlm_st_meta_value(const vlm_st *st, int i);
/* Copies tensor `name` into dst as f32; n must equal its element count.
 * F32 is copied, BF16 and F16 converted exactly; other dtypes are an error. */
int vlm_st_read_f32(const vlm_st *st, const char *name, float *dst, int64_t n);

/* Loading a file into a parameter store. File tensor "X" goes to parameter
 * prefix + X, after removing `strip` from the front of X (a file name that
 * does not start with strip is unexpected). E.g. prefix "decoder." loads a
 * SmolLM2 file ("model.layers.0...") into "decoder.model.layers.0...".
 * Everything is checked before any value is written, so on error the store
 * is untouched. Shapes must match exactly; dtypes F32/BF16/F16. */
typedef struct {
    const char *strip;           /* NULL = strip nothing */
    bool allow_missing;          /* store params under prefix absent from the file */
    bool allow_unexpected;       /* file tensors with no parameter are skipped */
    const char *const *optional; /* NULL-terminated full parameter names that may be
                                    absent (e.g. a tied "decoder.lm_head.weight") */
} vlm_st_load_opts;

/* Filled by vlm_st_load_params (also when it fails on missing/unexpected
 * names); release with vlm_st_load_report_free. Names are full parameter
 * names, except `unexpected`, which holds the file's names. */
typedef struct {
    int n_loaded;
    int64_t numel_loaded;
    int n_missing;
    char **missing;
    int n_unexpected;
    char **unexpected;
    int n_absent_optional; /* optional names that the file did not have */
    char **absent_optional;
} vlm_st_load_report;

/* opts and rep may be NULL (defaults: nothing allowed, no report). */
int vlm_st_load_params(vlm_params *p, const char *path, const char *prefix,
                       const vlm_st_load_opts *opts, vlm_st_load_report *rep);
void vlm_st_load_report_free(vlm_st_load_report *rep);

/* General writer for named buffers. add copies the name and shape but only
 * borrows data, which must stay valid until save. Tensors are stored in a
 * deterministic order (larger dtypes first, then by name, so every tensor is
 * aligned to its element size), the header is padded with spaces to a
 * multiple of 8, and __metadata__ starts with "format": "pt" (meta replaces
 * the value of an existing key). save is crash-safe: it writes
 * "<path>.tmp.<pid>", fsyncs, renames over path and fsyncs the directory; on
 * failure the temporary file is removed and path is untouched. */
typedef struct vlm_st_writer vlm_st_writer;

vlm_st_writer *vlm_st_writer_new(void);
void vlm_st_writer_free(vlm_st_writer *w);
int vlm_st_writer_add(vlm_st_writer *w, const char *name, const char *dtype, int ndim,
                      const int64_t *shape, const void *data);
int vlm_st_writer_meta(vlm_st_writer *w, const char *key, const char *value);
int vlm_st_writer_save(vlm_st_writer *w, const char *path);

/* Saves every parameter (F32) except those named in skip_names (NULL-
 * terminated; names not in the store are ignored), e.g. a tied lm_head.
 * meta_kv = {"key", "value", ..., NULL} adds metadata (NULL = none). */
int vlm_st_save_params(const vlm_params *p, const char *path, const char *const *meta_kv,
                       const char *const *skip_names);

/* ---- subcommands ------------------------------------------------------------ */

/* vlm inspect FILE.safetensors: tensors sorted by name, parameter count,
 * metadata. Returns the exit status (0, 1 on a bad file, 2 on bad usage). */
int vlm_cmd_inspect(int argc, char **argv);

#endif
