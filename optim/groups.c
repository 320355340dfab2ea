/* groups.c - which parameters decay and at what learning-rate multiplier
 * they train: the default rule by Hugging Face name. */
#include "optim.h"

#include <string.h>

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

bool vlm_param_no_decay(const vlm_tensor *t) {
    const char *n = t->name ? t->name : "";
    /* Biases (".bias", "in_proj_bias", "logit_bias") shift rather than scale,
     * so decaying them only biases the model toward zero outputs. */
    if (ends_with(n, "bias")) return true;
    /* Norm gains: decaying them pulls activations toward zero. Every 1-D
     * ".weight" in the models is one, including names without "norm" in them
     * (fusion.ln_q.weight). */
    if (t->ndim == 1 && ends_with(n, ".weight")) return true;
    /* Lookup tables: a row only gets gradient when its token appears, so
     * decay would shrink rare tokens every step for no reason. */
    if (ends_with(n, "token_embedding.weight") || ends_with(n, "position_embedding.weight") ||
        ends_with(n, "embed_tokens.weight"))
        return true;
    /* The MAP probe is a learned query vector, like an embedding row; the
     * logit temperature and bias are scalars of the loss. */
    return strcmp(n, "vision_model.head.probe") == 0 || strcmp(n, "logit_scale") == 0 ||
           strcmp(n, "logit_bias") == 0;
}

float vlm_optim_lr_mult_of(const vlm_optim_cfg *cfg, const char *name) {
    float mult = 1.0f;
    size_t best = 0;
    for (int i = 0; i < cfg->n_lr_mults; i++) {
        size_t k = strlen(cfg->lr_mults[i].prefix);
        if (k > best && strncmp(name, cfg->lr_mults[i].prefix, k) == 0) {
            best = k;
            mult = cfg->lr_mults[i].mult;
        }
    }
    return mult;
}
