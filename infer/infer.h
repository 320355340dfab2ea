/* infer.h - inference: zero-shot classification, retrieval, caption
 * generation with a KV cache, embeddings, and the evaluation metrics.
 *
 * Everything here runs with grad mode off and resets nothing it did not
 * allocate: functions taking a vlm_ctx rewind its arena to where they found
 * it, so a caller's tensors survive. */
#ifndef VLM_INFER_H
#define VLM_INFER_H

#include <stdio.h> /* train.h declares functions taking FILE * */

#include "train.h"

/* ---- caption metrics (infer/metrics.c) ----------------------------------------------
 * BLEU-1..4 and CIDEr-D computed exactly as pycocoevalcap's BleuScorer
 * (option "closest") and CiderScorer (CIDEr-D, sigma 6), on text split at
 * ASCII whitespace. pycocoevalcap first runs Stanford's PTBTokenizer (Java)
 * and drops punctuation tokens; with corpus.tokenize we apply this
 * approximation of it instead (vlm_caption_tokenize):
 *   1. ASCII letters are lowercased (other bytes are kept as they are);
 *   2. , ; ! ? " ( ) [ ] { } ` become spaces (a comma between two digits stays:
 *      "1,000");
 *   3. the text is split at whitespace; from each word trailing . : ' - are
 *      stripped, then (unless the word is itself a clitic) leading ones;
 *   4. the clitics n't 's 're 've 'll 'd 'm are split off as PTB does
 *      ("can't" -> "ca n't", "dog's" -> "dog 's"); empty words are dropped.
 * Internal . : ' - are kept ("e.g", "3.5", "black-and-white"), as PTB keeps
 * them. Known differences from PTB: abbreviations lose their final period
 * ("mr." -> "mr"), and PTB splits a few more cases ("cannot" -> "can not").
 * The tokenizer is idempotent, so pre-tokenized text passes unchanged. */

/* The tokens of text joined by single spaces (malloc'd; "" when none), or
 * NULL when out of memory. */
char *vlm_caption_tokenize(const char *text);

typedef struct {
    int64_t n;                /* images (hypotheses), >= 1 */
    const char *const *hyps;  /* [n] one hypothesis per image ("" is allowed) */
    const char *const *refs;  /* every reference, image by image */
    const int64_t *ref_start; /* [n + 1]: image i's references are
                                 refs[ref_start[i] .. ref_start[i + 1]), at least one */
    bool tokenize;            /* apply vlm_caption_tokenize to hyps and refs first */
} vlm_caption_corpus;

/* Corpus BLEU-n for n = 1..4 in bleu[n - 1] (pycocoevalcap's cumulative
 * scores: clipped n-gram precisions summed over the corpus, geometric mean
 * of p_1..p_n with its 1e-15 / 1e-9 smoothing, brevity penalty from the
 * summed closest reference lengths, ties to the shorter). 0 or -1 with error
 * (a bad corpus names the image). */
int vlm_bleu(const vlm_caption_corpus *c, double bleu[4]);
/* CIDEr-D: *score = mean over images; per_image [n] may be NULL. With one
 * image every idf is log(1) = 0 and the score is 0, as in pycocoevalcap. */
int vlm_cider_d(const vlm_caption_corpus *c, double *score, double *per_image);

/* ---- zero-shot classification and retrieval over embeddings (infer/metrics.c) --------
 * Embeddings are rows of floats, assumed L2-normalised (scores are dot
 * products). Ranks break ties by the lower index, as a stable sort would. */

/* Class vectors: text_emb [classes * templates, dim], class-major (row
 * c * templates + t embeds template t for class c) -> out [classes, dim]:
 * each row L2-normalised, averaged over templates, re-normalised (CLIP). */
int vlm_class_vectors(const float *text_emb, int classes, int templates, int dim, float *out);
/* The k best of n scores, best first, into idx[k] (k <= n). */
int vlm_topk(const float *scores, int n, int k, int *idx);
/* Top-1 / top-5 accuracy of images [n, dim] against class vectors
 * [classes, dim] for labels[n] in [0, classes). Top-5 counts a hit among the
 * min(5, classes) best. */
int vlm_zeroshot_accuracy(const float *img, int64_t n, const float *cls, int classes, int dim,
                          const int32_t *labels, double *top1, double *top5);
/* Recall@K for K = 1, 5, 10 (VLM_RECALL_KS): t2i[j] = fraction of texts whose
 * image is among the K best images; i2t[j] = fraction of images with at least
 * one of their texts among the K best texts (an image without texts counts as
 * a miss). img [n_img, dim], txt [n_txt, dim], txt_image[n_txt] in [0, n_img). */
#define VLM_RECALL_KS {1, 5, 10}
int vlm_retrieval_recall(const float *img, int64_t n_img, const float *txt, int64_t n_txt,
                         int dim, const int64_t *txt_image, double t2i[3], double i2t[3]);

/* ---- caption generation (infer/generate.c) ---------------------------------------------- */

typedef struct {
    int max_tokens;      /* >= 1 new tokens per sequence, EOS included */
    bool sample;         /* false: greedy (argmax, ties to the lowest id) */
    float temperature;   /* sampling: > 0 (logits are divided by it) */
    int top_k;           /* sampling: keep the k most likely ids (0 = all); exactly k,
                            ties at the k-th logit to the lower id (HF keeps them all) */
    float top_p;         /* sampling: nucleus mass in (0, 1] (1 = off) */
    uint64_t seed;       /* sequence b draws from its own stream seeded by (seed, b) */
    int32_t bos_id;      /* fed after the prefix */
    int32_t eos_id;      /* ends a sequence (-1: none, run to max_tokens) */
    int32_t pad_id;      /* written (and fed) after a sequence's EOS */
    bool no_cache;       /* reference path: re-run the whole forward every step */
} vlm_gen_opts;

/* greedy, 32 tokens, temperature 1, top_k 0, top_p 1, seed 0, ids 0 / -1 / 0. */
vlm_gen_opts vlm_gen_opts_default(void);

typedef struct {
    double prefill_s, decode_s; /* wall time of the prefix call and of the steps */
    int64_t tokens;             /* tokens generated, EOS included, padding not */
    int steps;                  /* decoder calls after the prefill */
} vlm_gen_stats;

/* Autoregressive decoding after a prefix of embeddings prefix [B, P, D] (a
 * constant) whose padding keys are 0 in prefix_mask (u8 [B, P], or NULL).
 * The prefix and BOS are run in one decoder call with a prefix-LM mask (the
 * prefix bidirectional, BOS causal), as vlm_captioner_loss trains; then one
 * token per step for the whole batch with a KV cache (o->no_cache: the full
 * forward over everything so far, every step). Sampling order as HF's
 * generate(): temperature, then top-k, then top-p (the smallest set of most
 * likely ids whose mass reaches top_p), then a draw. A sequence that produced
 * EOS is fed pad_id from then on (it attends only to its own keys, so the
 * others are unaffected) and stops counting; decoding ends when every
 * sequence has ended or after max_tokens. Needs P + max_tokens <=
 * model.decoder.max_len. Output: tokens [B, max_tokens] (EOS, then pad_id),
 * lengths [B] = tokens before EOS (may be NULL), stats (may be NULL). */
int vlm_generate(vlm_ctx *ctx, const vlm_decoder *d, vlm_tensor *prefix, vlm_tensor *prefix_mask,
                 const vlm_gen_opts *o, int32_t *tokens, int *lengths, vlm_gen_stats *st);

/* A captioner's captions for B preprocessed images (pixels [B, 3, S, S]) and
 * prompts (ids i32 [B, Tp], mask u8 [B, Tp] or NULL): vlm_captioner_prefix,
 * then vlm_generate. */
int vlm_caption_generate(vlm_ctx *ctx, const vlm_model *m, const float *pixels, int B,
                         const int32_t *prompt_ids, const uint8_t *prompt_mask, int Tp,
                         const vlm_gen_opts *o, int32_t *tokens, int *lengths,
                         vlm_gen_stats *st);

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
 *    (0 = model.text.ctx_len), data.key_mask, data.templates.
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
/* Decoder ids -> text (special tokens left out); malloc'd, NULL with error. */
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
