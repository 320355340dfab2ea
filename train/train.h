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
 * JSON {"model": {...}, "train": {...}, "data": {...}, "out": "RUN_DIR"}; every
 * key is optional except data.train. `vlm pretrain --help` prints the keys. */

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
    char tokenizer[VLM_CFG_STR]; /* tokenizer.json, *.model (SentencePiece) or "train" */
    int vocab_size;              /* tokenizer "train": ids (0 = model.text.vocab) */
    int ctx_len;                 /* 0 = model.text.ctx_len */
    bool key_mask;               /* mask padding keys in the text tower (SigLIP: false) */
    int loader_threads;          /* 0 = 2 */
    char templates[VLM_CFG_STR]; /* zero-shot prompts, "|"-separated with "{}", "" = built-in */
    int eval_images;             /* periodic evals use the first N val images (0 = all) */
    int eval_batch_size;         /* 0 = train.batch_size */
} vlm_data_cfg;

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
} vlm_train_cfg;

typedef struct {
    vlm_model_cfg model;
    vlm_train_cfg train;
    vlm_data_cfg data;
    char out[VLM_CFG_STR]; /* the run directory */
} vlm_run_cfg;

void vlm_run_cfg_defaults(vlm_run_cfg *c);
/* Binds a whole config tree onto c (absent keys keep their values). Unknown
 * keys and wrong types are errors naming the full key. */
int vlm_run_cfg_bind(const cJSON *root, vlm_run_cfg *c);
/* Range and consistency checks (naming the key); fills data.image_size and
 * data.ctx_len from the model when 0. */
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

/* ---- subcommands ----------------------------------------------------------------------- */

/* vlm pretrain [-c CONFIG] [--set k=v]... [--resume RUN_DIR|CKPT] [--init FILE]
 * Exit status 0, 1 on failure, 2 on bad usage, 130 when interrupted (after
 * saving a checkpoint). */
int vlm_cmd_pretrain(int argc, char **argv);
/* vlm eval --model RUN_DIR|FILE --dataset D [...] */
int vlm_cmd_eval(int argc, char **argv);

/* Shared by the commands (train/common.c). */
/* "fashion-mnist:train" / "fashion-mnist:test" -> the cached dataset under
 * $VLM_DATA_DIR (default ./data_cache), prepared first if missing; any other
 * spec is returned as is. malloc'd, NULL with error. */
char *vlm_resolve_dataset(const char *spec);
/* The run's text encoder: data.tokenizer as a path, or "train" (trained on
 * ds's captions into run_dir/tokenizer.json, reused when it exists). */
vlm_text_encoder *vlm_run_text_encoder(const vlm_run_cfg *cfg, const char *run_dir,
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
/* mkdir -p; 0 or -1 with error. */
int vlm_mkdirs(const char *path);

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
