/* infer.h - inference: model bundles (weights + config + tokenizers), zero-shot
 * classification, retrieval, captions and embeddings through the command line.
 * Caption generation and the evaluation metrics live in train/ (train.h),
 * since training evaluates with them; this header exposes them through it.
 *
 * Everything here runs with grad mode off and resets nothing it did not
 * allocate: functions taking a vlm_ctx rewind its arena to where they found
 * it, so a caller's tensors survive. */
#ifndef VLM_INFER_H
#define VLM_INFER_H

#include <stdio.h> /* train.h declares functions taking FILE * */

#include "train.h"

/* ---- model bundles (infer/bundle.c) --------------------------------------------------
 * What inference needs beside the weights: the config, the tokenizers and
 * the image preprocessing. vlm_bundle_load(path) finds them as `vlm eval`
 * does:
 *  - weights: a directory's model.safetensors, else its newest good
 *    checkpoint (vlm_ckpt_find_latest); or the .safetensors file given. The
 *    run directory is the directory, or the file's folder (the one above
 *    for RUN/checkpoints/step-N.safetensors).
 *  - config: opts->config, else the weights' vlm.config metadata (runs write
 *    it into model.safetensors and checkpoints; vlm.model_config also
 *    works), else RUN_DIR/config.json. A config is a run config
 *    {"model": ..., "data": ...}, a bare model config, or a Hugging Face
 *    SigLIP config.json ("vision_config" / "text_config" / model_type
 *    "siglip": sizes from the weights, names as HF, vlm_load_hf_siglip).
 *  - text tokenizer: opts->tokenizer, else data.tokenizer when it names a
 *    file, else RUN_DIR/tokenizer.json (a run's trained one), else
 *    RUN_DIR/spiece.model (SigLIP: vlm_siglip_tokenize semantics). Its
 *    vocabulary must fit model.text.vocab.
 *  - decoder tokenizer (captioners): opts->decoder_tokenizer, else
 *    RUN_DIR/decoder_tokenizer.json, else the text tokenizer. Specials:
 *    BOS = "<bos>" / "<s>" (else EOS), EOS = "<eos>" / "</s>" /
 *    "<|endoftext|>", pad = "<pad>" (else EOS); SentencePiece: its own ids.
 *  - images: vlm_image_opts_default(model.vision.image_size) (bicubic squash)
 *    with data.mean / data.std, no augmentation; text: data.ctx_len ids
 *    (0 = model.text.ctx_len), data.key_mask, data.templates, data.prompt.
 * Checkpoints hold optimizer tensors ("optim.*"), which are skipped; any
 * other tensor that is not a parameter, or a missing parameter, is an error
 * naming the file. */
typedef struct {
    const char *config;            /* NULL: found as above */
    const char *tokenizer;         /* NULL: found as above */
    const char *decoder_tokenizer; /* NULL: found as above */
} vlm_bundle_opts;

typedef struct {
    vlm_model *model;
    vlm_text_encoder *text;  /* the text tower's tokenizer */
    vlm_bpe *dec_bpe;        /* the decoder's tokenizer (captioners): one of these */
    vlm_spm *dec_spm;
    int32_t bos_id, eos_id, pad_id; /* decoder specials (-1 when none) */
    vlm_image_opts image;    /* eval preprocessing at the model's image size */
    int ctx_len;             /* ids per text */
    bool key_mask;           /* mask padding keys in the text tower (data.key_mask) */
    char templates[VLM_CFG_STR]; /* zero-shot templates, "|"-separated ("" = built-in) */
    char prompt[VLM_CFG_STR];    /* captioners: the prompt trained with (data.prompt) */
    char weights[VLM_CFG_STR], tokenizer[VLM_CFG_STR]; /* paths, for messages */
} vlm_bundle;

vlm_bundle *vlm_bundle_load(const char *path, const vlm_bundle_opts *opts);
void vlm_bundle_free(vlm_bundle *b);
bool vlm_bundle_is_captioner(const vlm_bundle *b);
/* Contrastive embedding size (image and text). */
int vlm_bundle_embed_dim(const vlm_bundle *b);

/* Reads an image file and preprocesses it into out [3, S, S]. */
int vlm_bundle_load_image(const vlm_bundle *b, const char *path, float *out);
/* text -> ctx_len ids and mask (1 = real token). */
int vlm_bundle_tokenize(const vlm_bundle *b, const char *text, int32_t *ids, uint8_t *mask);
/* Decoder ids -> text (vlm_tokens_to_text: special and unknown ids left out,
 * invalid UTF-8 as U+FFFD); malloc'd, NULL with error. */
char *vlm_bundle_decode(const vlm_bundle *b, const int32_t *ids, int n);

/* Embeddings, computed batch rows at a time (batch <= 0: 32):
 * images [n, 3, S, S] -> out [n, embed_dim], L2-normalised MAP-head output;
 * texts -> out [n, embed_dim], L2-normalised text-head output;
 * fused (captioners): image i with text i -> out [n, text width], the fusion
 * block's mean over valid text tokens (not normalised). */
int vlm_bundle_embed_images(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels, int64_t n,
                            int batch, float *out);
int vlm_bundle_embed_texts(vlm_ctx *ctx, const vlm_bundle *b, const char *const *texts, int64_t n,
                           int batch, float *out);
int vlm_bundle_embed_fused(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels,
                           const char *const *texts, int64_t n, int batch, float *out);
/* Zero-shot class vectors [k, embed_dim] for class names and templates
 * ("{}" = the class name after "a"/"an", as vlm_class_caption). */
int vlm_bundle_class_vectors(vlm_ctx *ctx, const vlm_bundle *b, const char *const *names, int k,
                             const char *const *templates, int n_templates, int batch,
                             float *out);
/* SigLIP's pairwise probability: sigmoid(exp(logit_scale) * cos + logit_bias);
 * the softmax logit is exp(logit_scale) * cos. */
float vlm_bundle_logit_scale(const vlm_bundle *b); /* exp(logit_scale) */
float vlm_bundle_logit_bias(const vlm_bundle *b);

/* Captions for n images with one prompt, batch at a time: captions[i] is
 * malloc'd (free each). stats (may be NULL) accumulate over the batches. */
int vlm_bundle_caption(vlm_ctx *ctx, const vlm_bundle *b, const float *pixels, int64_t n,
                       const char *prompt, int batch, const vlm_gen_opts *o, char **captions,
                       vlm_gen_stats *st);

/* ---- subcommands (infer/{classify,retrieve,caption,embed}_cmd.c) ------------------------
 * Exit status 0, 1 on a failure, 2 on bad usage. */
int vlm_cmd_classify(int argc, char **argv);
int vlm_cmd_retrieve(int argc, char **argv);
int vlm_cmd_caption(int argc, char **argv);
int vlm_cmd_embed(int argc, char **argv);

#endif
