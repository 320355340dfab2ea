/* train.h - the trainer core (steps, accumulation, mixed precision, non-finite
 * handling, logging, checkpoints with exact resume), SigLIP pretraining and
 * evaluation (zero-shot classification, retrieval).
 *
 * A run is one config (model + train + data + out), one run directory and one
 * vlm_trainer: model, optimizer, fp16 loss scaler, loader and RNG streams.
 * Every random stream is seeded from train.seed and saved in checkpoints:
 *  - init: the parameters (vlm_model_new(cfg, seed));
 *  - data order and augmentation: the loader's streams, a pure function of
 *    (seed, epoch, position), so its position is their whole state;
 *  - dropout: the context's RNG (vlm_ctx_rng_state).
 * Same config and thread count give the same run bit for bit, and a run
 * resumed from a checkpoint continues exactly as if it had not stopped. */
#ifndef VLM_TRAIN_H
#define VLM_TRAIN_H

#include "data.h"
#include "optim.h"

#include <stdio.h>

/* ---- the run config (train/run_cfg.c) --------------------------------------------
 * JSON {"model": {...}, "train": {...}, "data": {...}, "init": {...}, "out":
 * "RUN_DIR"}; every key is optional except data.train. `vlm pretrain --help`
 * and `vlm finetune --help` print the keys. */

typedef struct {
    bool crop;                  /* RandomResizedCrop (else squash to image_size) */
    float scale_min, scale_max; /* crop area fraction */
    float ratio_min, ratio_max; /* crop aspect ratio w/h */
    bool hflip;                 /* mirror with probability 1/2 */
} vlm_augment_cfg;

typedef struct {
    char train[VLM_CFG_STR];     /* HDF5 dataset, or "fashion-mnist:train" (prepared on use) */
    char val[VLM_CFG_STR];       /* "" = no evaluation */
    int image_size;              /* 0 = model.vision.image_size (must equal it) */
    vlm_augment_cfg augment;
    float mean[3], std[3];       /* JSON: a number or [r, g, b] */
    char sampling[VLM_CFG_STR];  /* "image" (one random caption each) or "caption" */
    char positives[VLM_CFG_STR]; /* "auto" (labels if the dataset has them), "labels", "captions" */
    char tokenizer[VLM_CFG_STR]; /* tokenizer.json, *.model (SentencePiece), "train", or
                                    "auto": init.towers' tokenizer if it has one, else "train" */
    int vocab_size;              /* tokenizer "train": ids (0 = model.text.vocab) */
    int ctx_len;                 /* 0 = model.text.ctx_len */
    bool key_mask;               /* mask padding keys in the text tower (SigLIP: false) */
    int loader_threads;          /* 0 = 2 */
    char templates[VLM_CFG_STR]; /* zero-shot prompts, "|"-separated with "{}", "" = built-in */
    int eval_images;             /* periodic evals use the first N val images (0 = all) */
    int eval_batch_size;         /* 0 = train.batch_size */
    /* captioners */
    char prompt[VLM_CFG_STR];    /* the text tower's prompt (data.ctx_len ids) */
    char decoder_tokenizer[VLM_CFG_STR]; /* tokenizer.json, "train" (BPE on the captions with
                                    <pad> <bos> <eos>), or "auto": the tokenizer.json beside
                                    init.decoder if there is one, else "train" */
    int caption_len;             /* caption ids per sample, EOS included (longer ones are cut) */
    int eval_samples;            /* sample captions printed per evaluation */
} vlm_data_cfg;

#define VLM_MAX_FREEZE 8

typedef struct {
    int seed;
    int steps, epochs;              /* run length: steps, or epochs of micro-batches / accum */
    int batch_size, accum;          /* micro-batch (the loss's batch) and micro-batches per step */
    char precision[VLM_CFG_STR];    /* "f32", "bf16" or "fp16" (dynamic loss scaling) */
    int threads;                    /* compute threads, 0 = all cores */
    int log_every, eval_every, ckpt_every; /* steps; 0 = never (evaluation: at the end only) */
    int keep_checkpoints;           /* newest K kept (>= 1) */
    char on_nonfinite[VLM_CFG_STR]; /* "stop" (error naming the step) or "skip" (counted) */
    bool detect_anomaly;            /* check every stage of the loss path for non-finite values */
    float init_logit_scale;         /* fresh runs: logit_scale t' (exp(t') multiplies cos) */
    float init_logit_bias;          /* fresh runs: logit_bias b (SigLIP: log 10 and -10) */
    int debug_nan_step;             /* test hook: inject a NaN at this step (0 = off) */
    char debug_nan_target[VLM_CFG_STR]; /* "grad" (one gradient) or "weight" (logit_bias) */
    vlm_optim_cfg optim;            /* lr_mult works; total_steps 0 = the run's steps */
    int n_freeze;                   /* JSON "freeze": ["vision_model.", ...] or "a.,b." */
    char freeze[VLM_MAX_FREEZE][VLM_OPTIM_PREFIX_LEN]; /* parameter-name prefixes kept frozen */
} vlm_train_cfg;

/* Where a fresh run takes parts of its weights from (train/init.c). */
typedef struct {
    char towers[VLM_CFG_STR];  /* image + text towers (+ logit_scale/bias): a vlm run
                                  directory or .safetensors, or a Hugging Face SigLIP file or
                                  directory; "" = none */
    char decoder[VLM_CFG_STR]; /* captioner decoder: a Hugging Face LlamaForCausalLM file or
                                  directory (SmolLM2), or a vlm captioner; "" = none */
} vlm_init_cfg;

typedef struct {
    vlm_model_cfg model;
    vlm_train_cfg train;
    vlm_data_cfg data;
    vlm_init_cfg init;
    char out[VLM_CFG_STR]; /* the run directory */
} vlm_run_cfg;

void vlm_run_cfg_defaults(vlm_run_cfg *c);
/* Binds a whole config tree onto c (absent keys keep their values). Unknown
 * keys and wrong types are errors naming the full key. */
int vlm_run_cfg_bind(const cJSON *root, vlm_run_cfg *c);
/* Range and consistency checks (naming the key); fills data.image_size and
 * data.ctx_len from the model when 0. Any model.type: a command checks it. */
int vlm_run_cfg_validate(vlm_run_cfg *c);
/* Every key of the resolved config. */
cJSON *vlm_run_cfg_to_json(const vlm_run_cfg *c);
/* Reads a config file (NULL = {}) and applies "key=value" overrides. */
cJSON *vlm_run_cfg_load(const char *path, char *const *sets, int n_sets);
/* First difference between two JSON values, written into out as
 * "PATH is A in <name_a> but B in <name_b>"; returns 1 if they differ, 0 if
 * equal. Keys listed in ignore (NULL-terminated full paths) are skipped. */
int vlm_json_diff(const cJSON *a, const cJSON *b, const char *path, const char *const *ignore,
                  const char *name_a, const char *name_b, char *out, size_t cap);
/* Every config key with its help line (for --help). */
void vlm_run_cfg_print_keys(FILE *f);

/* ---- text encoding (train/textenc.c) ----------------------------------------------- */

/* A tokenizer for the text tower: byte-level BPE (tokenizer.json) or
 * SentencePiece (SigLIP's spiece.model). Texts become ctx_len ids:
 *  BPE: tokens + <eos> (when the vocabulary has one), cut to ctx_len (the last
 *       id stays <eos>), padded with pad_id; mask 1 on the real ids.
 *  SPM: vlm_siglip_tokenize (canonicalised, EOS, padded with EOS as SigLIP). */
typedef struct vlm_text_encoder vlm_text_encoder;

vlm_text_encoder *vlm_text_encoder_load(const char *path, int pad_id);
/* Trains a byte-level BPE on every caption of ds (specials <pad> = 0,
 * <eos> = 1), saves it to save_path (tokenizer.json) and returns it. */
vlm_text_encoder *vlm_text_encoder_train(vlm_dataset *ds, int vocab_size, int pad_id,
                                         const char *save_path);
void vlm_text_encoder_free(vlm_text_encoder *e);
int vlm_text_encoder_vocab(const vlm_text_encoder *e);
/* vlm_tokenize_fn for the loader (user = the encoder); thread-safe. */
int vlm_text_encode(void *enc, const char *text, int32_t *ids, uint8_t *mask, int ctx_len);

/* A captioner's decoder tokenizer: a byte-level BPE tokenizer.json whose
 * specials follow vlm_decoder_specials. vlm_text_encode then gives caption
 * tokens + EOS padded with the pad id (mask 1 on the tokens and EOS); a
 * caption longer than the row is cut and its last id stays EOS. An error if
 * the vocabulary has no EOS. */
vlm_text_encoder *vlm_decoder_tokenizer_load(const char *path);
/* Trains one on every caption of ds with specials <pad> = 0, <bos> = 1,
 * <eos> = 2, saves it to save_path (tokenizer.json) and returns it. */
vlm_text_encoder *vlm_decoder_tokenizer_train(vlm_dataset *ds, int vocab_size,
                                              const char *save_path);
/* BOS (fed before a caption), EOS and pad ids (-1 when there is none). */
void vlm_text_encoder_specials(const vlm_text_encoder *e, int32_t *bos, int32_t *eos,
                               int32_t *pad);
/* Ids -> text with special tokens left out; see vlm_tokens_to_text. */
char *vlm_text_encoder_decode(const vlm_text_encoder *e, const int32_t *ids, int n);

/* A decoder's specials in a BPE vocabulary: EOS = "<eos>" / "</s>" /
 * "<|endoftext|>", BOS = "<bos>" / "<s>" (else EOS), pad = "<pad>" (else
 * EOS); -1 where the vocabulary has none of them. */
void vlm_decoder_specials(const vlm_bpe *bpe, int32_t *bos, int32_t *eos, int32_t *pad);
/* Ids -> text through bpe (or spm when bpe is NULL): special tokens and ids
 * the tokenizer does not know (an untrained model may produce ids past a
 * tokenizer smaller than its vocabulary) are left out, and invalid UTF-8
 * becomes U+FFFD (as HF's decode). malloc'd, NULL with error. */
char *vlm_tokens_to_text(const vlm_bpe *bpe, const vlm_spm *spm, const int32_t *ids, int n);

/* ---- the trainer (train/trainer.c) ---------------------------------------------------- */

/* Non-finite diagnosis, filled by the loss function when train.detect_anomaly
 * is on: the first stage of the loss path whose output holds a NaN or Inf.
 * The SigLIP loss checks, in order: input images, image tower tokens, its
 * pooled output, text tower tokens, its pooled output, both embeddings,
 * logit_scale, logit_bias, the loss (one extra pass over each; off by
 * default). Finer, per-op detection needs a hook on the autograd tape, whose
 * nodes are private to autograd/. Independently of the flag, a stop always
 * names the first non-finite parameter and gradient. */
typedef struct {
    bool enabled;
    char where[256]; /* "" = none found */
} vlm_anomaly;

/* Checks t for NaN/Inf; on the first one found (when an->enabled and nothing
 * was recorded yet) records "stage [shape] (element k = v)". Returns t. */
vlm_tensor *vlm_anomaly_check(vlm_anomaly *an, vlm_tensor *t, const char *stage);

/* The loss of one micro-batch (a [1] tensor on the tape), or NULL with error. */
typedef vlm_tensor *(*vlm_loss_fn)(vlm_ctx *ctx, const vlm_model *m, const vlm_batch *b,
                                   void *user, vlm_anomaly *an);

typedef struct {
    vlm_run_cfg cfg;
    vlm_model *model;      /* owned */
    vlm_optim *optim;      /* owned */
    vlm_loss_scaler scaler;
    bool use_scaler;       /* fp16 */
    vlm_ctx *ctx;          /* owned: arena, tape, dropout RNG, precision */
    vlm_loader *loader;    /* borrowed */
    vlm_loss_fn loss_fn;
    void *loss_user;
    int64_t step;          /* steps done (skipped ones included) */
    int64_t total_steps;
    int64_t skipped;       /* steps whose update was skipped (non-finite) */
    int64_t samples;       /* samples consumed */
    int64_t epoch;         /* epoch of the last batch consumed */
} vlm_trainer;

typedef struct {
    double loss;      /* mean over the micro-batches (unscaled) */
    double lr, grad_norm;
    bool skipped;
    float scale;      /* fp16: loss scale for the next step, else 0 */
    int samples;
} vlm_step_stats;

/* Takes ownership of model; builds the optimizer (total_steps filled in),
 * the context (precision, dropout RNG seeded from train.seed) and the scaler.
 * total_steps must be resolved (> 0). On error model is freed. */
int vlm_trainer_init(vlm_trainer *t, const vlm_run_cfg *cfg, vlm_model *model,
                     vlm_loader *loader, int64_t total_steps, vlm_loss_fn fn, void *user);
void vlm_trainer_free(vlm_trainer *t);
/* One optimizer step over train.accum micro-batches: each micro-batch is
 * forwarded and backpropagated with its loss scaled by 1/accum (and by the
 * loss scale in fp16), so grads accumulate to the mean. The sigmoid loss of a
 * micro-batch only sees its own negatives: accum trades memory, not the
 * loss, against a larger batch_size. Non-finite loss or
 * grads: with on_nonfinite "stop", -1 with an error naming the step (and the
 * first non-finite parameter / gradient / anomaly stage); with "skip" the
 * update is skipped, counted in t->skipped and st->skipped, and 0 returned.
 * fp16: overflow skips are the scaler's business (not counted as errors)
 * until the scale falls below 1. */
int vlm_trainer_step(vlm_trainer *t, vlm_step_stats *st);

/* ---- checkpoints (train/checkpoint.c) ---------------------------------------------------
 * RUN_DIR/checkpoints/step-NNNNNNNN.safetensors: every parameter under its HF
 * name (F32), the optimizer state as flat F32 tensors "optim.<state>" (AdamW:
 * optim.exp_avg, optim.exp_avg_sq; numel = all parameters, in the store's
 * order, so state of parameter p is at vlm_params_offset(p)), and metadata
 * (strings): vlm.kind "checkpoint", vlm.step, vlm.epoch, vlm.loader_epoch,
 * vlm.loader_batch, vlm.samples, vlm.skipped, vlm.optim_steps, vlm.seed,
 * vlm.rng_dropout, vlm.scaler_scale, vlm.scaler_good_steps, vlm.model_config,
 * vlm.config (the resolved config JSON) and vlm.checksum (64-bit hash of every
 * tensor's name and bytes, so a damaged file is detected, not loaded). */

char *vlm_ckpt_path(const char *run_dir, int64_t step); /* malloc'd */
int vlm_ckpt_save(vlm_trainer *t, const char *path);
/* Opens path and checks format, kind and checksum: NULL with error if bad. */
vlm_st *vlm_ckpt_open(const char *path);
/* The newest checkpoint of run_dir that passes vlm_ckpt_open; newer bad ones
 * are reported on stderr and renamed to *.corrupt. NULL with error if none. */
char *vlm_ckpt_find_latest(const char *run_dir);
/* Restores everything saved into t (the model config must match: the error
 * names the first differing key) and seeks the loader. */
int vlm_ckpt_load(vlm_trainer *t, const char *path);
/* Deletes all but the newest keep checkpoints (call after a save succeeded). */
int vlm_ckpt_prune(const char *run_dir, int keep);
/* Number of checkpoint files in run_dir (valid or not), -1 with error. */
int vlm_ckpt_count(const char *run_dir);

/* ---- evaluation (train/evaluate.c) -------------------------------------------------------- */

typedef struct {
    bool zeroshot;             /* the dataset has labels and class names */
    double top1, top5;         /* zero-shot accuracy, fractions */
    double t2i[3], i2t[3];     /* retrieval R@1, R@5, R@10 */
    int64_t images, captions;  /* evaluated */
    int classes, templates;
    double seconds;
} vlm_eval_metrics;

typedef struct {
    vlm_image_opts image;      /* size, mean, std (no augmentation) */
    int ctx_len, batch_size, threads;
    bool key_mask;             /* as in training (data.key_mask) */
    const char *templates;     /* "|"-separated, NULL or "" = vlm_class_templates */
} vlm_eval_opts;

/* The evaluation's image loader over ds: in order, no augmentation, o's
 * image settings, batch size and threads. NULL with error. */
vlm_loader *vlm_eval_loader_new(vlm_dataset *ds, const vlm_eval_opts *o);

typedef struct vlm_evaluator vlm_evaluator;

/* Opens the dataset and reads its captions once (texts deduplicated). */
vlm_evaluator *vlm_evaluator_new(const char *dataset, vlm_text_encoder *enc,
                                 const vlm_eval_opts *opts);
void vlm_evaluator_free(vlm_evaluator *e);
/* Embeds the first max_images images (0 = all) and their captions, and the
 * class prompts; fills m. ctx is reset as it goes (call between steps). */
int vlm_evaluate(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *model, int64_t max_images,
                 vlm_eval_metrics *m);
/* Metrics as a JSON object / one line of text. */
cJSON *vlm_eval_metrics_json(const vlm_eval_metrics *m);
void vlm_eval_metrics_print(FILE *f, const vlm_eval_metrics *m);

/* ---- starting parts of a model, freezing (train/init.c) ----------------------------------
 * init.towers / init.decoder name a source: a directory (its model.safetensors,
 * or a vlm run's newest good checkpoint) or a .safetensors file. Weights with
 * vlm.model_config metadata are ours and load by name; others are Hugging
 * Face checkpoints (SigLIP towers via vlm_load_hf_siglip, a LlamaForCausalLM
 * / SmolLM2 decoder via vlm_load_hf_decoder). */

/* Takes the sizes of the parts that cfg->init names from their sources: the
 * metadata's model config (ours), or config.json beside HF weights with the
 * tensor shapes (none there: the config's sizes stay and must match).
 * Dropout and gradient checkpointing keep cfg's values. Says on stderr what
 * it took. */
int vlm_init_resolve_config(vlm_run_cfg *cfg);
/* Loads init.towers (vision_model.*, text_model.*, logit_*) and init.decoder
 * (decoder.*) into m; every name and shape is checked before values change. */
int vlm_init_load(vlm_model *m, const vlm_init_cfg *init);
/* The first of names (NULL-terminated) found in a source's directory, into
 * out: 1 found, 0 none, -1 error. */
int vlm_init_find_file(const char *source, const char *const *names, char *out, size_t cap);
/* Freezes every parameter whose name starts with one of the prefixes; a
 * prefix that matches nothing, or freezing everything, is an error naming
 * key (e.g. "train.freeze"). */
int vlm_freeze_prefixes(vlm_model *m, const char (*prefixes)[VLM_OPTIM_PREFIX_LEN], int n,
                        const char *key);
/* Values in trainable (not frozen) parameters. */
int64_t vlm_trainable_numel(const vlm_model *m);

/* ---- caption metrics (train/metrics.c) ----------------------------------------------
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

/* ---- zero-shot classification and retrieval over embeddings (train/metrics.c) --------
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

/* ---- caption generation (train/generate.c) ---------------------------------------------- */

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

/* ---- caption fine-tuning (train/caption.c, train/caption_eval.c) ------------------------ */

/* The prompt as text-tower ids and the decoder's tokenizer with its
 * specials: everything the caption loss and generation need beside the model. */
typedef struct {
    int prompt_len;                 /* Tp = data.ctx_len */
    int32_t *prompt_ids;            /* [Tp] data.prompt through the text tokenizer */
    uint8_t *prompt_mask;           /* [Tp] 1 on its real ids */
    int32_t bos_id, eos_id, pad_id; /* the decoder's */
    const vlm_text_encoder *dec;    /* borrowed: the decoder tokenizer */
} vlm_caption_io;

int vlm_caption_io_init(vlm_caption_io *io, vlm_text_encoder *text, const vlm_text_encoder *dec,
                        const char *prompt, int ctx_len);
void vlm_caption_io_free(vlm_caption_io *io);
/* Greedy decoding of up to max_tokens ids (EOS included) with io's specials. */
vlm_gen_opts vlm_caption_gen_opts(const vlm_caption_io *io, int max_tokens);
/* vlm_loss_fn of caption fine-tuning (user = the vlm_caption_io): the loader
 * rows are caption tokens + EOS from io->dec (vlm_text_encode); the decoder
 * reads [image tokens; fused prompt; BOS + caption] and the loss is the mean
 * cross-entropy of the caption tokens and EOS (vlm_captioner_loss). */
vlm_tensor *vlm_caption_batch_loss(vlm_ctx *ctx, const vlm_model *m, const vlm_batch *b,
                                   void *user, vlm_anomaly *an);
/* Captions of B preprocessed images (pixels [B, 3, S, S]) as text, out[B]
 * malloc'd (free each). */
int vlm_caption_texts(vlm_ctx *ctx, const vlm_model *m, const vlm_caption_io *io,
                      const float *pixels, int B, const vlm_gen_opts *o, char **out);

#define VLM_CAPTION_SAMPLES 8

typedef struct {
    double bleu[4];            /* BLEU-1..4 */
    double cider;              /* CIDEr-D */
    int64_t images, references; /* scored (images without references are left out) */
    int n_samples;             /* the first images' captions, for display */
    int64_t sample_image[VLM_CAPTION_SAMPLES];
    char *sample_hyp[VLM_CAPTION_SAMPLES], *sample_refs[VLM_CAPTION_SAMPLES]; /* refs: " | " */
    double seconds;
} vlm_caption_metrics;

typedef struct vlm_caption_evaluator vlm_caption_evaluator;

/* Opens the dataset and reads its captions, grouped by image. Captions get
 * at most max_tokens ids (EOS included); samples (<= VLM_CAPTION_SAMPLES) are
 * kept for display. opts: image preprocessing, batch size, loader threads. */
vlm_caption_evaluator *vlm_caption_evaluator_new(const char *dataset, const vlm_caption_io *io,
                                                 const vlm_eval_opts *opts, int max_tokens,
                                                 int samples);
void vlm_caption_evaluator_free(vlm_caption_evaluator *e);
/* Greedy captions of the first max_images images (0 = all), BLEU-1..4 and
 * CIDEr-D against all references of each image; ctx is reset as it goes.
 * Free m with vlm_caption_metrics_free. */
int vlm_caption_evaluate(vlm_caption_evaluator *e, vlm_ctx *ctx, const vlm_model *model,
                         int64_t max_images, vlm_caption_metrics *m);
void vlm_caption_metrics_free(vlm_caption_metrics *m);
cJSON *vlm_caption_metrics_json(const vlm_caption_metrics *m);
void vlm_caption_metrics_print(FILE *f, const vlm_caption_metrics *m);

/* ---- subcommands ----------------------------------------------------------------------- */

/* vlm pretrain [-c CONFIG] [--set k=v]... [--resume RUN_DIR|CKPT] [--init FILE]
 * Exit status 0, 1 on failure, 2 on bad usage, 130 when interrupted (after
 * saving a checkpoint). */
int vlm_cmd_pretrain(int argc, char **argv);
/* vlm finetune [-c CONFIG] [--set k=v]... [--resume RUN_DIR|CKPT] [--init FILE]
 * [--init-towers PATH] [--init-decoder PATH]: caption fine-tuning of a
 * captioner; exit status as vlm_cmd_pretrain. */
int vlm_cmd_finetune(int argc, char **argv);
/* vlm eval --model RUN_DIR|FILE --dataset D [...] */
int vlm_cmd_eval(int argc, char **argv);

/* Shared by the commands (train/common.c). */
/* "fashion-mnist:train" / "fashion-mnist:test" -> the cached dataset under
 * $VLM_DATA_DIR (default ./data_cache), prepared first if missing; any other
 * spec is returned as is. malloc'd, NULL with error. */
char *vlm_resolve_dataset(const char *spec);
/* The run's text encoder: data.tokenizer as a path (ds given, i.e. a
 * training run: copied into run_dir as tokenizer.json or spiece.model); or
 * "train" / "auto": run_dir/tokenizer.json or run_dir/spiece.model when there
 * is one, else ("auto") the tokenizer of init.towers copied into run_dir,
 * else one trained on ds's captions into run_dir/tokenizer.json (ds NULL: an
 * error). Its vocabulary must fit model.text.vocab. */
vlm_text_encoder *vlm_run_text_encoder(const vlm_run_cfg *cfg, const char *run_dir,
                                       vlm_dataset *ds);
/* The same for a captioner's decoder (data.decoder_tokenizer), kept as
 * run_dir/decoder_tokenizer.json, where vlm_bundle_load looks for it: a path
 * is loaded and (ds given: a training run) copied there; "train" / "auto"
 * reuse that file when it exists, else ("auto") copy the tokenizer.json
 * beside init.decoder, else train one on ds's captions (model.decoder.vocab
 * ids). Without ds (evaluating a run) the run's copy comes first. Its
 * vocabulary must fit model.decoder.vocab. */
vlm_text_encoder *vlm_run_decoder_tokenizer(const vlm_run_cfg *cfg, const char *run_dir,
                                            vlm_dataset *ds);
/* The SigLIP micro-batch loss used by pretraining (user = the run config). */
vlm_tensor *vlm_siglip_batch_loss(vlm_ctx *ctx, const vlm_model *m, const vlm_batch *b,
                                  void *user, vlm_anomaly *an);
/* Eval options from a run config. */
vlm_eval_opts vlm_run_eval_opts(const vlm_run_cfg *cfg);
/* The run directory of a file in it: the parent of a checkpoints/ folder,
 * else the file's folder. malloc'd. */
char *vlm_run_dir_of(const char *file);
/* Re-executes `vlm argv...` once with OMP_WAIT_POLICY=passive unless the
 * environment sets OMP_WAIT_POLICY or GOMP_SPINCOUNT (see common.c); returns
 * only when it did not. argv[0] is the subcommand's name. */
void vlm_prefer_passive_omp(int argc, char **argv);
/* Whether path is a directory / a regular file (following links). */
bool vlm_is_dir(const char *path);
bool vlm_is_file(const char *path);
/* mkdir -p; 0 or -1 with error. */
int vlm_mkdirs(const char *path);
/* Copies a file's bytes to dst through a temp file + rename. */
int vlm_copy_file(const char *src, const char *dst);

/* ---- benchmarks (train/bench_model.c) ------------------------------------------------ */

/* vlm bench model|generate (argv[0] = "model" or "generate"): training-step and
 * greedy-decoding throughput on a synthetic batch. Exit status 0, 1 on a
 * failure, 2 on bad usage. `vlm bench` (data/bench_cmd.c) dispatches here
 * through a weak reference, since data links below train; a weak reference
 * does not pull an object out of a static library, so this pointer keeps
 * bench_model.o in every program that includes train.h (vlm.c does, through
 * infer.h). */
int vlm_cmd_bench_model(int argc, char **argv);
__attribute__((used)) static int (*const vlm_bench_model_keep_)(int, char **) = vlm_cmd_bench_model;

#endif
