/* optim_cfg.c - the optimizer section of a config: field table, defaults,
 * binding (with the free-form "lr_mult" object parsed by hand), checks, and
 * the learning-rate schedule as a pure function of the config. */
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define F(field, kind, help)                                                               \
    { #field, kind, offsetof(vlm_optim_cfg, field), NULL, help }

const vlm_cfg_field vlm_optim_cfg_fields[] = {
    F(optimizer, VLM_CFG_STRING, "\"adamw\" or \"sgd\""),
    F(lr, VLM_CFG_FLOAT, "peak learning rate"),
    F(beta1, VLM_CFG_FLOAT, "AdamW first-moment decay"),
    F(beta2, VLM_CFG_FLOAT, "AdamW second-moment decay"),
    F(eps, VLM_CFG_FLOAT, "AdamW denominator epsilon"),
    F(weight_decay, VLM_CFG_FLOAT, "weight decay (AdamW: decoupled; SGD: added to the grad)"),
    F(momentum, VLM_CFG_FLOAT, "SGD momentum (0 = none)"),
    F(nesterov, VLM_CFG_BOOL, "SGD Nesterov momentum"),
    F(schedule, VLM_CFG_STRING, "\"cosine\" or \"constant\" (both with linear warmup)"),
    F(warmup_steps, VLM_CFG_INT, "linear warmup updates (update 0 runs at lr 0)"),
    F(total_steps, VLM_CFG_INT, "cosine: update where the decay reaches the floor"),
    F(min_lr_ratio, VLM_CFG_FLOAT, "cosine floor as a fraction of lr"),
    F(min_lr, VLM_CFG_FLOAT, "cosine floor as an absolute rate (instead of min_lr_ratio)"),
    F(clip_norm, VLM_CFG_FLOAT, "clip the global grad norm to this (0 = off)"),
    {0},
};
#undef F

void vlm_optim_cfg_defaults(vlm_optim_cfg *c) {
    memset(c, 0, sizeof *c);
    strcpy(c->optimizer, "adamw");
    c->lr = 3e-4f;
    c->beta1 = 0.9f;
    c->beta2 = 0.999f;
    c->eps = 1e-8f;
    c->weight_decay = 0.01f;
    c->momentum = 0.9f;
    strcpy(c->schedule, "cosine");
}

static void join_key(char *dst, size_t cap, const char *path, const char *key) {
    snprintf(dst, cap, "%s%s%s", path, *path ? "." : "", key);
}

/* "lr_mult": {"vision_model.": 0.1, ...}; replaces the whole list. */
static int bind_lr_mults(const cJSON *v, vlm_optim_cfg *c, const char *key) {
    if (!cJSON_IsObject(v))
        return vlm_set_error("config: %s must be an object of {\"prefix\": multiplier}", key);
    vlm_optim_cfg tmp = *c;
    tmp.n_lr_mults = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        char ekey[512 + VLM_OPTIM_PREFIX_LEN + 8];
        snprintf(ekey, sizeof ekey, "%s.%.*s", key, VLM_OPTIM_PREFIX_LEN, e->string);
        if (!cJSON_IsNumber(e)) return vlm_set_error("config: %s must be a number", ekey);
        if (!*e->string || strlen(e->string) >= VLM_OPTIM_PREFIX_LEN)
            return vlm_set_error("config: %s: a prefix must have 1 to %d bytes", ekey,
                                 VLM_OPTIM_PREFIX_LEN - 1);
        if (tmp.n_lr_mults == VLM_OPTIM_MAX_LR_MULTS)
            return vlm_set_error("config: %s has more than %d prefixes", key,
                                 VLM_OPTIM_MAX_LR_MULTS);
        for (int i = 0; i < tmp.n_lr_mults; i++)
            if (strcmp(tmp.lr_mults[i].prefix, e->string) == 0)
                return vlm_set_error("config: %s appears twice", ekey);
        vlm_lr_mult *m = &tmp.lr_mults[tmp.n_lr_mults++];
        strcpy(m->prefix, e->string);
        m->mult = (float)e->valuedouble;
    }
    *c = tmp;
    return 0;
}

int vlm_optim_cfg_bind(const cJSON *obj, vlm_optim_cfg *cfg, const char *path) {
    if (!cJSON_IsObject(obj)) return vlm_set_error("config: %s must be an object", path);
    /* The generic binder would reject "lr_mult", so it sees a copy without it.
     * Bind into a copy of the struct so that a failure changes nothing. */
    cJSON *rest = cJSON_Duplicate(obj, true);
    if (!rest) return vlm_set_error("config: %s: out of memory", path);
    cJSON *mults = cJSON_DetachItemFromObjectCaseSensitive(rest, "lr_mult");
    vlm_optim_cfg tmp = *cfg;
    int rc = vlm_cfg_bind(rest, vlm_optim_cfg_fields, &tmp, path);
    if (rc == 0 && mults) {
        char key[512];
        join_key(key, sizeof key, path, "lr_mult");
        rc = bind_lr_mults(mults, &tmp, key);
    }
    cJSON_Delete(mults);
    cJSON_Delete(rest);
    if (rc == 0) *cfg = tmp;
    return rc;
}

cJSON *vlm_optim_cfg_to_json(const vlm_optim_cfg *cfg) {
    cJSON *o = vlm_cfg_to_json(vlm_optim_cfg_fields, cfg);
    if (!o) return NULL;
    cJSON *m = cJSON_AddObjectToObject(o, "lr_mult");
    for (int i = 0; m && i < cfg->n_lr_mults; i++)
        if (!cJSON_AddNumberToObject(m, cfg->lr_mults[i].prefix, (double)cfg->lr_mults[i].mult))
            m = NULL;
    if (!m) {
        cJSON_Delete(o);
        vlm_set_error("config: out of memory");
        return NULL;
    }
    return o;
}

/* ---- checks ------------------------------------------------------------------------ */

/* lo <= x < hi (or <= hi when closed), written so that NaN fails */
static int in_range(float x, double lo, double hi, bool closed, const char *path,
                    const char *key) {
    if (x >= lo && (closed ? x <= hi : x < hi)) return 0;
    char k[512];
    join_key(k, sizeof k, path, key);
    return vlm_set_error("config: %s must be in [%g, %g%s, got %g", k, lo, hi, closed ? "]" : ")",
                         (double)x);
}

static int check_rates(const vlm_optim_cfg *c, const char *path) {
    const double big = 1e30;
    if (in_range(c->lr, 0, big, true, path, "lr") ||
        in_range(c->beta1, 0, 1, false, path, "beta1") ||
        in_range(c->beta2, 0, 1, false, path, "beta2") ||
        in_range(c->eps, 1e-30, 1, true, path, "eps") ||
        in_range(c->weight_decay, 0, big, true, path, "weight_decay") ||
        in_range(c->momentum, 0, 1, false, path, "momentum") ||
        in_range(c->min_lr_ratio, 0, 1, true, path, "min_lr_ratio") ||
        in_range(c->min_lr, 0, c->lr, true, path, "min_lr") ||
        in_range(c->clip_norm, 0, big, true, path, "clip_norm"))
        return -1;
    char k[512];
    if (c->min_lr > 0 && c->min_lr_ratio > 0) {
        join_key(k, sizeof k, path, "min_lr");
        return vlm_set_error("config: %s and min_lr_ratio both set: choose one floor", k);
    }
    for (int i = 0; i < c->n_lr_mults; i++) {
        char mk[512 + VLM_OPTIM_PREFIX_LEN + 8];
        join_key(k, sizeof k, path, "lr_mult");
        snprintf(mk, sizeof mk, "%s.%s", k, c->lr_mults[i].prefix);
        float m = c->lr_mults[i].mult;
        if (!(m >= 0) || isinf(m))
            return vlm_set_error("config: %s must be a finite number >= 0, got %g", mk, (double)m);
    }
    return 0;
}

int vlm_optim_cfg_validate(const vlm_optim_cfg *c, const char *path) {
    char k[512];
    bool sgd = strcmp(c->optimizer, "sgd") == 0;
    if (!sgd && strcmp(c->optimizer, "adamw") != 0) {
        join_key(k, sizeof k, path, "optimizer");
        return vlm_set_error("config: %s must be \"adamw\" or \"sgd\", got \"%s\"", k,
                             c->optimizer);
    }
    if (check_rates(c, path)) return -1;
    if (c->nesterov && !(c->momentum > 0)) {
        join_key(k, sizeof k, path, "nesterov");
        return vlm_set_error("config: %s needs momentum > 0", k);
    }
    bool cosine = strcmp(c->schedule, "cosine") == 0;
    if (!cosine && strcmp(c->schedule, "constant") != 0) {
        join_key(k, sizeof k, path, "schedule");
        return vlm_set_error("config: %s must be \"cosine\" or \"constant\", got \"%s\"", k,
                             c->schedule);
    }
    if (c->warmup_steps < 0 || c->total_steps < 0) {
        join_key(k, sizeof k, path, c->warmup_steps < 0 ? "warmup_steps" : "total_steps");
        return vlm_set_error("config: %s must be >= 0", k);
    }
    if (cosine && (c->total_steps == 0 || c->warmup_steps > c->total_steps)) {
        join_key(k, sizeof k, path, "total_steps");
        return vlm_set_error("config: %s (%d) must be positive and >= warmup_steps (%d) for the "
                             "cosine schedule", k, c->total_steps, c->warmup_steps);
    }
    return 0;
}

/* ---- the schedule ---------------------------------------------------------------------- */

double vlm_lr_at(const vlm_optim_cfg *c, int64_t step) {
    double lr = c->lr;
    if (step < 0) return 0;
    if (step < c->warmup_steps) return lr * (double)step / (double)c->warmup_steps;
    if (strcmp(c->schedule, "cosine") != 0) return lr;
    double floor_lr = c->min_lr > 0 ? (double)c->min_lr : lr * (double)c->min_lr_ratio;
    if (step >= c->total_steps) return floor_lr;
    /* total_steps > warmup_steps here, so the span is at least 1 */
    double progress = (double)(step - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    return floor_lr + (lr - floor_lr) * 0.5 * (1.0 + cos(M_PI * progress));
}
