/* optim.h - optimizers (AdamW, SGD with momentum), parameter groups, LR
 * schedules, global-norm gradient clipping and the fp16 loss scaler.
 *
 * Conventions
 *  - Everything works on a vlm_params store and touches only its trainable
 *    parameters (requires_grad true). Frozen parameters belong to no group:
 *    their values, grads and optimizer state are never read or written, so a
 *    frozen tower costs neither time nor (resident) state memory.
 *  - Optimizer state buffers are flat f32 arrays parallel to the store: the
 *    state of parameter t starts at vlm_params_offset(p, t), exactly like its
 *    value and grad. They are mapped lazily (anonymous mmap), so the parts
 *    that belong to frozen parameters stay zero and never become resident.
 *  - Semantics follow PyTorch (torch.optim.AdamW / SGD, LambdaLR schedules as
 *    in Hugging Face transformers, clip_grad_norm_, torch.amp.GradScaler);
 *    each function documents where it differs.
 *
 * A training step, with everything on (see vlm_optim_update):
 *   vlm_params_zero_grad(p);
 *   for each micro-batch: loss = forward(...) * (scale / n_micro); vlm_backward(loss);
 *   vlm_optim_update(opt, &scaler, &info);   unscale, check, clip, step, update scale
 */
#ifndef VLM_OPTIM_H
#define VLM_OPTIM_H

#include "nn.h"

/* ---- configuration ----------------------------------------------------------- */

#define VLM_OPTIM_MAX_LR_MULTS 8
#define VLM_OPTIM_PREFIX_LEN 128

/* Parameters whose name starts with prefix train at lr * mult. */
typedef struct {
    char prefix[VLM_OPTIM_PREFIX_LEN];
    float mult;
} vlm_lr_mult;

typedef struct {
    char optimizer[VLM_CFG_STR]; /* "adamw" or "sgd" */
    float lr;                    /* peak learning rate */
    float beta1, beta2, eps;     /* AdamW */
    float weight_decay;          /* AdamW: decoupled; SGD: coupled (added to the grad) */
    float momentum;              /* SGD (0 = plain SGD, no state) */
    bool nesterov;               /* SGD */
    char schedule[VLM_CFG_STR];  /* "cosine" or "constant" */
    int warmup_steps;            /* linear warmup from 0 (both schedules) */
    int total_steps;             /* cosine: decay ends here; 0 = not set yet (the trainer
                                    fills in its run length before validating) */
    float min_lr_ratio;          /* cosine floor as a fraction of lr ... */
    float min_lr;                /* ... or as an absolute rate (set at most one) */
    float clip_norm;             /* global grad-norm clipping threshold (0 = off) */
    int n_lr_mults;              /* JSON: "lr_mult": {"vision_model.": 0.1, ...} */
    vlm_lr_mult lr_mults[VLM_OPTIM_MAX_LR_MULTS];
} vlm_optim_cfg;

/* The scalar fields (everything but lr_mult). A parent table may embed them
 * as {"optim", VLM_CFG_OBJECT, offsetof(...), vlm_optim_cfg_fields, ...}, but
 * then "lr_mult" is an unknown key: the generic binder has no type for an
 * object with free-form keys. Bind the section with vlm_optim_cfg_bind to
 * get lr_mult as well. */
extern const vlm_cfg_field vlm_optim_cfg_fields[];

/* AdamW, lr 3e-4, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01, momentum
 * 0.9 (SGD), cosine schedule without warmup, total_steps 0 (to be set),
 * floor 0, no clipping, no multipliers. */
void vlm_optim_cfg_defaults(vlm_optim_cfg *cfg);
/* Like vlm_cfg_bind with vlm_optim_cfg_fields, plus "lr_mult": an object of
 * {prefix: multiplier} (at most VLM_OPTIM_MAX_LR_MULTS) that replaces the
 * current list. Errors name the full key, e.g. "train.optim.lr_mult.text_model.". */
int vlm_optim_cfg_bind(const cJSON *obj, vlm_optim_cfg *cfg, const char *path);
/* Every field, lr_mult included, as a JSON object (for the resolved config). */
cJSON *vlm_optim_cfg_to_json(const vlm_optim_cfg *cfg);
/* Range checks; errors name path.key (path "" = bare keys). */
int vlm_optim_cfg_validate(const vlm_optim_cfg *cfg, const char *path);

/* ---- learning-rate schedules ----------------------------------------------------- */

/* The base learning rate for update number `step`, a pure function of the
 * config, so a resumed run continues exactly.
 *
 * Step numbering follows torch.optim.lr_scheduler.LambdaLR as used by the
 * Hugging Face schedules (get_cosine_with_min_lr_schedule_with_warmup,
 * get_constant_schedule_with_warmup): step = the number of optimizer updates
 * already done, so the first update uses step 0. With W warmup steps the
 * factor is step / W during warmup, so update 0 runs at lr 0 and update W at
 * the full lr (nanoGPT/llm.c use (step + 1) / W instead). Cosine, T total steps,
 * floor f = min_lr, or lr * min_lr_ratio:
 *   step < W:       lr * step / W
 *   W <= step < T:  f + (lr - f) * 0.5 * (1 + cos(pi * (step - W) / (T - W)))
 *   step >= T:      f  (the HF formula would climb back up; we hold the floor)
 * Constant: lr * step / W during warmup, then lr. Negative steps give 0. */
double vlm_lr_at(const vlm_optim_cfg *cfg, int64_t step);

/* ---- parameter groups ------------------------------------------------------------- */

/* The default weight-decay rule: true for biases (name ends in "bias",
 * including in_proj_bias and logit_bias), norm gains (1-D ".weight": every
 * 1-D weight in these models is a LayerNorm or RMSNorm gain, whatever its
 * name: layer_norm1, post_layernorm, input_layernorm, decoder.model.norm,
 * fusion.ln_q), token and position embedding tables (token_embedding,
 * position_embedding, embed_tokens), the MAP probe (vision_model.head.probe)
 * and logit_scale / logit_bias. The patch embedding is a convolution and decays. */
bool vlm_param_no_decay(const vlm_tensor *t);
/* The multiplier for a name: the longest matching prefix in cfg, else 1. */
float vlm_optim_lr_mult_of(const vlm_optim_cfg *cfg, const char *name);

/* A group as given to vlm_optim_new_groups. Frozen parameters listed are
 * skipped (they join no group); trainable parameters in no group are left
 * alone, as in torch when they are not passed to the optimizer. */
typedef struct {
    const char *name;   /* copied; NULL = "group<i>" */
    const int *params;  /* indices into the store */
    int n_params;
    float lr_mult;      /* the group trains at lr * lr_mult */
    float weight_decay; /* replaces cfg->weight_decay for this group */
} vlm_param_group_spec;

/* A group of a built optimizer (read-only view). */
typedef struct {
    const char *name;
    float lr_mult, weight_decay;
    int n_params;
    const int *params; /* ascending store indices */
    int64_t numel;
} vlm_param_group;

/* ---- the optimizer ---------------------------------------------------------------- */

typedef struct vlm_optim vlm_optim;

/* Builds the optimizer in cfg (validated, path "optim") for the trainable
 * parameters of p with the default grouping: one group per (decay or not,
 * lr multiplier) that has members, named e.g. "decay", "no_decay",
 * "decay lr_mult=0.1"; decaying groups get cfg->weight_decay, the others 0.
 * The store must be finalized; p is borrowed and must outlive the optimizer.
 * Which parameters are frozen is fixed from here on (vlm_optim_step fails if
 * it changes: build a new optimizer). */
vlm_optim *vlm_optim_new(vlm_params *p, const vlm_optim_cfg *cfg);
/* The same with explicit groups; cfg->lr_mults and the default rule are not used. */
vlm_optim *vlm_optim_new_groups(vlm_params *p, const vlm_optim_cfg *cfg,
                                const vlm_param_group_spec *groups, int n_groups);
void vlm_optim_free(vlm_optim *o);

int vlm_optim_group_count(const vlm_optim *o);
const vlm_param_group *vlm_optim_group(const vlm_optim *o, int g); /* NULL if out of range */
/* The group of store parameter i, or -1 (frozen, or in no group). */
int vlm_optim_group_of(const vlm_optim *o, int i);
const vlm_optim_cfg *vlm_optim_config(const vlm_optim *o);
vlm_params *vlm_optim_params(const vlm_optim *o); /* the store it updates */

/* One update of every grouped parameter from its grad, at base rate lr
 * (group g uses lr * lr_mult_g, as a torch param group's "lr"):
 *  AdamW (torch.optim.AdamW, amsgrad off): t += 1;
 *      p *= 1 - lr_g wd_g;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
 *      p -= lr_g / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 *  SGD (torch.optim.SGD, dampening 0): t += 1;  d = g + wd_g p;
 *      momentum mu > 0: buf = mu buf + d (buf starts at 0, so the first step
 *      gives buf = d as torch's clone does); d = nesterov ? d + mu buf : buf;
 *      p -= lr_g d
 * Grads are read, not modified or zeroed. Parallel over elements; the result
 * does not depend on the thread count. Returns 0, or -1 with error (lr not a
 * finite number >= 0, frozen flags changed since the optimizer was built). */
int vlm_optim_step(vlm_optim *o, double lr);

/* State for checkpoints. Buffer k (0 <= k < count) is a flat f32 array of
 * vlm_params_numel(p) elements with the store's offsets; AdamW has
 * "exp_avg" (m) and "exp_avg_sq" (v), SGD with momentum "momentum_buffer",
 * plain SGD none (torch's state_dict names). Write into them to restore.
 * Regions of frozen parameters read as zeros. */
int vlm_optim_state_count(const vlm_optim *o);
const char *vlm_optim_state_name(const vlm_optim *o, int k);
float *vlm_optim_state(vlm_optim *o, int k, int64_t *numel);
/* Updates done so far (AdamW's bias-correction t; the schedule's step). */
int64_t vlm_optim_steps(const vlm_optim *o);
int vlm_optim_set_steps(vlm_optim *o, int64_t steps); /* -1 if steps < 0 */

/* ---- gradients: finiteness, clipping ------------------------------------------------- */

/* True if every trainable grad is finite (no Inf, no NaN). Parallel, one read. */
bool vlm_grads_finite(const vlm_params *p);
/* Global L2 norm of the trainable grads, accumulated in double in a fixed
 * order (same value for any thread count). Inf/NaN if any grad is. */
double vlm_grad_norm(const vlm_params *p);
/* torch.nn.utils.clip_grad_norm_: computes the norm as above and the factor
 * c = max_norm / (norm + 1e-6); if c < 1 (the norm exceeds max_norm, give or
 * take the 1e-6), multiplies every trainable grad by (float)c. Returns the
 * norm before clipping. Grads are left untouched when c >= 1, when
 * max_norm <= 0 (measure only) and when the norm is not finite; the caller
 * decides what a non-finite norm means (vlm_optim_update skips the step). */
double vlm_clip_grad_norm(vlm_params *p, double max_norm);
/* Multiplies every trainable grad by s. */
void vlm_grads_scale(vlm_params *p, float s);

/* ---- fp16 dynamic loss scaling ---------------------------------------------------------- */

/* State of torch.amp.GradScaler; scale and good_steps go into checkpoints. */
typedef struct {
    float scale;          /* multiply the loss by this before backward (init 65536) */
    int good_steps;       /* consecutive finite steps since the scale last changed */
    int growth_interval;  /* grow after this many finite steps (2000) */
    float growth_factor;  /* 2 */
    float backoff_factor; /* 0.5 */
} vlm_loss_scaler;

void vlm_loss_scaler_init(vlm_loss_scaler *s);
/* Multiplies every trainable grad by (float)(1 / scale) and checks the result
 * in the same pass. Returns true if all are finite. */
bool vlm_loss_scaler_unscale(const vlm_loss_scaler *s, vlm_params *p);
/* After each update attempt: on found_inf the scale is multiplied by
 * backoff_factor and good_steps reset; otherwise good_steps counts up and,
 * on reaching growth_interval, the scale grows by growth_factor and the
 * count restarts at 0. */
void vlm_loss_scaler_update(vlm_loss_scaler *s, bool found_inf);

/* ---- the whole update ----------------------------------------------------------------- */

typedef struct {
    double lr;        /* base rate used (vlm_lr_at at the step count); 0 if skipped */
    double grad_norm; /* norm of the unscaled grads before clipping; NaN when the scaler
                         found non-finite grads (not measured) */
    bool skipped;     /* non-finite grads: nothing was updated */
    float scale;      /* loss scale for the next step (0 without a scaler) */
} vlm_step_info;

/* After the backward passes of one step (grads accumulated, scaled by the
 * scaler's scale when scaler is not NULL):
 *  1. scaler: unscale the grads; non-finite -> skip.
 *  2. grad norm (always, for logging); cfg clip_norm > 0: clip; a non-finite
 *     norm -> skip.
 *  3. vlm_optim_step at lr = vlm_lr_at(cfg, vlm_optim_steps(o)).
 *  4. scaler: vlm_loss_scaler_update(found_inf = skipped).
 * A skipped step leaves the weights, the optimizer state and the step count
 * bit for bit as they were (the schedule does not advance either). Grads are
 * not zeroed. info may be NULL. Returns 0 (also when skipped) or -1 with error. */
int vlm_optim_update(vlm_optim *o, vlm_loss_scaler *scaler, vlm_step_info *info);

#endif
