/* optimizer.c - AdamW and SGD with momentum over a parameter store: groups,
 * the lazily mapped state buffers parallel to the store, and the update
 * kernels, parallel over fixed chunks of elements. */
#include "optim.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Elements per work item: 64 KiB of each array (p, g, m, v), so a chunk
 * streams through L2 and there are enough chunks to balance the threads. */
#define CHUNK 16384
/* Below this many elements a parallel region costs more than it saves. */
#define PAR_MIN 32768

/* A run of adjacent parameters of one group, at most CHUNK elements. */
typedef struct {
    int64_t off, len;
    int group;
} chunk;

/* Per-group constants of one step, derived in double and rounded once. */
typedef struct {
    float decay, step, inv_bc2; /* AdamW: 1 - lr wd; lr / bc1; 1 / sqrt(bc2) */
    float lr, wd;               /* SGD */
} group_k;

struct vlm_optim {
    vlm_params *p;
    vlm_optim_cfg cfg;
    bool sgd;
    int n_params, n_groups;
    vlm_param_group *groups; /* names and params arrays are owned */
    group_k *k;              /* n_groups, rewritten each step */
    int *group_of;           /* per store parameter, -1 = none */
    bool *trainable;         /* requires_grad when built */
    chunk *chunks;
    int n_chunks;
    int64_t grouped_numel;
    int n_state;
    float *state[2];
    size_t state_bytes; /* of each mapping */
    int64_t t;
};

void vlm_optim_free(vlm_optim *o) {
    if (!o) return;
    for (int g = 0; o->groups && g < o->n_groups; g++) {
        free((char *)o->groups[g].name);
        free((int *)o->groups[g].params);
    }
    for (int k = 0; k < o->n_state; k++)
        if (o->state[k]) munmap(o->state[k], o->state_bytes);
    free(o->groups);
    free(o->k);
    free(o->group_of);
    free(o->trainable);
    free(o->chunks);
    free(o);
}

/* ---- building ---------------------------------------------------------------------- */

static vlm_optim *optim_alloc(vlm_params *p, const vlm_optim_cfg *cfg) {
    if (!p || !vlm_params_values(p)) {
        vlm_set_error("optim: the parameter store must exist and be finalized");
        return NULL;
    }
    if (vlm_optim_cfg_validate(cfg, "optim")) return NULL;
    vlm_optim *o = calloc(1, sizeof *o);
    int n = vlm_params_count(p);
    if (o) {
        o->group_of = malloc((size_t)(n ? n : 1) * sizeof *o->group_of);
        o->trainable = malloc((size_t)(n ? n : 1) * sizeof *o->trainable);
    }
    if (!o || !o->group_of || !o->trainable) {
        vlm_optim_free(o);
        vlm_set_error("optim: out of memory");
        return NULL;
    }
    o->p = p;
    o->cfg = *cfg;
    o->sgd = strcmp(cfg->optimizer, "sgd") == 0;
    o->n_params = n;
    for (int i = 0; i < n; i++) {
        o->group_of[i] = -1;
        o->trainable[i] = vlm_params_at(p, i)->requires_grad;
    }
    return o;
}

/* Adds an empty group; members are filled by fill_groups from group_of. */
static int add_group(vlm_optim *o, const char *name, float lr_mult, float wd) {
    vlm_param_group *gs = realloc(o->groups, (size_t)(o->n_groups + 1) * sizeof *gs);
    if (!gs) return vlm_set_error("optim: out of memory");
    o->groups = gs;
    char *nm = strdup(name);
    if (!nm) return vlm_set_error("optim: out of memory");
    gs[o->n_groups++] = (vlm_param_group){.name = nm, .lr_mult = lr_mult, .weight_decay = wd};
    return 0;
}

/* Member lists (ascending indices) and sizes from group_of. */
static int fill_groups(vlm_optim *o) {
    for (int g = 0; g < o->n_groups; g++) {
        vlm_param_group *G = &o->groups[g];
        int cnt = 0;
        for (int i = 0; i < o->n_params; i++) cnt += o->group_of[i] == g;
        int *idx = malloc((size_t)(cnt ? cnt : 1) * sizeof *idx);
        if (!idx) return vlm_set_error("optim: out of memory");
        G->params = idx;
        G->n_params = 0;
        G->numel = 0;
        for (int i = 0; i < o->n_params; i++)
            if (o->group_of[i] == g) {
                idx[G->n_params++] = i;
                G->numel += vlm_params_at(o->p, i)->numel;
            }
        o->grouped_numel += G->numel;
    }
    o->k = calloc((size_t)(o->n_groups ? o->n_groups : 1), sizeof *o->k);
    return o->k ? 0 : vlm_set_error("optim: out of memory");
}

static int default_groups(vlm_optim *o) {
    /* one group per (no-decay flag, multiplier) in use */
    bool group_nd[2 * (1 + VLM_OPTIM_MAX_LR_MULTS)];
    for (int i = 0; i < o->n_params; i++) {
        const vlm_tensor *t = vlm_params_at(o->p, i);
        if (!t->requires_grad) continue;
        bool nd = vlm_param_no_decay(t);
        float mult = vlm_optim_lr_mult_of(&o->cfg, t->name);
        float wd = nd ? 0.0f : o->cfg.weight_decay;
        int g = 0;
        while (g < o->n_groups && !(o->groups[g].lr_mult == mult && group_nd[g] == nd)) g++;
        if (g == o->n_groups) {
            group_nd[g] = nd;
            char name[64];
            if (mult == 1.0f)
                snprintf(name, sizeof name, "%s", nd ? "no_decay" : "decay");
            else
                snprintf(name, sizeof name, "%s lr_mult=%g", nd ? "no_decay" : "decay",
                         (double)mult);
            if (add_group(o, name, mult, wd)) return -1;
        }
        o->group_of[i] = g;
    }
    return fill_groups(o);
}

static int check_spec(const vlm_optim *o, const vlm_param_group_spec *s, int g) {
    char gname[32];
    snprintf(gname, sizeof gname, "group%d", g);
    const char *name = s->name ? s->name : gname;
    if (s->n_params < 0 || (s->n_params > 0 && !s->params))
        return vlm_set_error("optim: group '%s' has no parameter list", name);
    if (!(s->lr_mult >= 0) || isinf(s->lr_mult) || !(s->weight_decay >= 0) ||
        isinf(s->weight_decay))
        return vlm_set_error("optim: group '%s': lr_mult and weight_decay must be finite "
                             "numbers >= 0", name);
    for (int j = 0; j < s->n_params; j++) {
        int i = s->params[j];
        if (i < 0 || i >= o->n_params)
            return vlm_set_error("optim: group '%s' lists parameter index %d (the store has %d)",
                                 name, i, o->n_params);
        int other = o->group_of[i] >= 0 ? o->group_of[i] : -2 - o->group_of[i];
        if (o->group_of[i] != -1)
            return vlm_set_error("optim: parameter '%s' is in groups '%s' and '%s'",
                                 vlm_params_at(o->p, i)->name, o->groups[other].name, name);
    }
    return 0;
}

static int spec_groups(vlm_optim *o, const vlm_param_group_spec *specs, int n) {
    if (n < 0 || (n > 0 && !specs)) return vlm_set_error("optim: bad group list (%d groups)", n);
    for (int g = 0; g < n; g++) {
        const vlm_param_group_spec *s = &specs[g];
        char gname[32];
        snprintf(gname, sizeof gname, "group%d", g);
        if (check_spec(o, s, g) || add_group(o, s->name ? s->name : gname, s->lr_mult,
                                             s->weight_decay))
            return -1;
        /* a frozen parameter is remembered as -2 - g (to report duplicates), then dropped */
        for (int j = 0; j < s->n_params; j++) {
            int i = s->params[j];
            o->group_of[i] = o->trainable[i] ? g : -2 - g;
        }
    }
    for (int i = 0; i < o->n_params; i++)
        if (o->group_of[i] < -1) o->group_of[i] = -1;
    return fill_groups(o);
}

/* Runs of adjacent same-group parameters, cut into CHUNK-sized work items. */
static int build_chunks(vlm_optim *o) {
    int cap = 0;
    for (int i = 0; i < o->n_params; i++) {
        int g = o->group_of[i];
        if (g < 0) continue;
        const vlm_tensor *t = vlm_params_at(o->p, i);
        int64_t off = vlm_params_offset(o->p, t), len = t->numel;
        while (len > 0) {
            chunk *last = o->n_chunks ? &o->chunks[o->n_chunks - 1] : NULL;
            if (last && last->group == g && last->off + last->len == off && last->len < CHUNK) {
                int64_t take = len < CHUNK - last->len ? len : CHUNK - last->len;
                last->len += take;
                off += take;
                len -= take;
                continue;
            }
            if (o->n_chunks == cap) {
                cap = cap ? 2 * cap : 256;
                chunk *c = realloc(o->chunks, (size_t)cap * sizeof *c);
                if (!c) return vlm_set_error("optim: out of memory");
                o->chunks = c;
            }
            o->chunks[o->n_chunks++] = (chunk){off, 0, g};
        }
    }
    return 0;
}

/* Anonymous mappings start as untouched zero pages: the regions of frozen
 * parameters are never written, so they never take physical memory. */
static int map_state(vlm_optim *o) {
    o->n_state = o->sgd ? (o->cfg.momentum > 0) : 2;
    int64_t numel = vlm_params_numel(o->p);
    o->state_bytes = (size_t)(numel ? numel : 1) * sizeof(float);
    for (int k = 0; k < o->n_state; k++) {
        void *m = mmap(NULL, o->state_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (m == MAP_FAILED)
            return vlm_set_error("optim: cannot map %zu bytes of optimizer state",
                                 o->state_bytes);
        o->state[k] = m;
    }
    return 0;
}

static vlm_optim *finish(vlm_optim *o, int rc) {
    if (rc == 0 && build_chunks(o) == 0 && map_state(o) == 0) return o;
    vlm_optim_free(o);
    return NULL;
}

vlm_optim *vlm_optim_new(vlm_params *p, const vlm_optim_cfg *cfg) {
    vlm_optim *o = optim_alloc(p, cfg);
    return o ? finish(o, default_groups(o)) : NULL;
}

vlm_optim *vlm_optim_new_groups(vlm_params *p, const vlm_optim_cfg *cfg,
                                const vlm_param_group_spec *groups, int n_groups) {
    vlm_optim *o = optim_alloc(p, cfg);
    return o ? finish(o, spec_groups(o, groups, n_groups)) : NULL;
}

/* ---- accessors -------------------------------------------------------------------- */

int vlm_optim_group_count(const vlm_optim *o) { return o->n_groups; }
const vlm_param_group *vlm_optim_group(const vlm_optim *o, int g) {
    return g >= 0 && g < o->n_groups ? &o->groups[g] : NULL;
}
int vlm_optim_group_of(const vlm_optim *o, int i) {
    return i >= 0 && i < o->n_params ? o->group_of[i] : -1;
}
const vlm_optim_cfg *vlm_optim_config(const vlm_optim *o) { return &o->cfg; }
vlm_params *vlm_optim_params(const vlm_optim *o) { return o->p; }
int vlm_optim_state_count(const vlm_optim *o) { return o->n_state; }

const char *vlm_optim_state_name(const vlm_optim *o, int k) {
    if (k < 0 || k >= o->n_state) return NULL;
    return o->sgd ? "momentum_buffer" : k == 0 ? "exp_avg" : "exp_avg_sq";
}

float *vlm_optim_state(vlm_optim *o, int k, int64_t *numel) {
    if (k < 0 || k >= o->n_state) return NULL;
    if (numel) *numel = vlm_params_numel(o->p);
    return o->state[k];
}

int64_t vlm_optim_steps(const vlm_optim *o) { return o->t; }
int vlm_optim_set_steps(vlm_optim *o, int64_t steps) {
    if (steps < 0) return vlm_set_error("optim: step count must be >= 0, got %lld",
                                        (long long)steps);
    o->t = steps;
    return 0;
}

/* ---- the update ------------------------------------------------------------------------ */

static void adamw_chunk(float *restrict p, const float *restrict g, float *restrict m,
                        float *restrict v, int64_t n, float b1, float b2, float eps,
                        group_k k) {
    const float c1 = 1.0f - b1, c2 = 1.0f - b2;
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = b1 * m[i] + c1 * gi;
        float vi = b2 * v[i] + c2 * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * k.decay - k.step * mi / (sqrtf(vi) * k.inv_bc2 + eps);
    }
}

static void sgd_chunk(float *restrict p, const float *restrict g, float *restrict buf,
                      int64_t n, float mu, bool nesterov, group_k k) {
    if (!buf) {
        for (int64_t i = 0; i < n; i++) p[i] -= k.lr * (g[i] + k.wd * p[i]);
    } else if (nesterov) {
        for (int64_t i = 0; i < n; i++) {
            float d = g[i] + k.wd * p[i];
            float b = mu * buf[i] + d;
            buf[i] = b;
            p[i] -= k.lr * (d + mu * b);
        }
    } else {
        for (int64_t i = 0; i < n; i++) {
            float b = mu * buf[i] + (g[i] + k.wd * p[i]);
            buf[i] = b;
            p[i] -= k.lr * b;
        }
    }
}

static int check_frozen(const vlm_optim *o) {
    if (vlm_params_count(o->p) != o->n_params)
        return vlm_set_error("optim: the parameter store changed since the optimizer was built");
    for (int i = 0; i < o->n_params; i++) {
        const vlm_tensor *t = vlm_params_at(o->p, i);
        if (t->requires_grad != o->trainable[i])
            return vlm_set_error("optim: parameter '%s' was %s after the optimizer was built "
                                 "(build a new optimizer)", t->name,
                                 t->requires_grad ? "unfrozen" : "frozen");
    }
    return 0;
}

static void set_constants(vlm_optim *o, double lr) {
    double bc1 = 1.0 - pow((double)o->cfg.beta1, (double)o->t);
    double bc2 = 1.0 - pow((double)o->cfg.beta2, (double)o->t);
    for (int g = 0; g < o->n_groups; g++) {
        double lr_g = lr * (double)o->groups[g].lr_mult;
        double wd = o->groups[g].weight_decay;
        o->k[g] = (group_k){.decay = (float)(1.0 - lr_g * wd),
                            .step = (float)(lr_g / bc1),
                            .inv_bc2 = (float)(1.0 / sqrt(bc2)),
                            .lr = (float)lr_g,
                            .wd = (float)wd};
    }
}

int vlm_optim_step(vlm_optim *o, double lr) {
    if (!(lr >= 0) || isinf(lr))
        return vlm_set_error("optim: learning rate must be a finite number >= 0, got %g", lr);
    if (check_frozen(o)) return -1;
    o->t++;
    set_constants(o, lr);
    float *P = vlm_params_values(o->p), *G = vlm_params_grads(o->p);
    float *S0 = o->state[0], *S1 = o->state[1];
    const float b1 = o->cfg.beta1, b2 = o->cfg.beta2, eps = o->cfg.eps, mu = o->cfg.momentum;
    const bool sgd = o->sgd, nesterov = o->cfg.nesterov;
    const chunk *C = o->chunks;
    const group_k *K = o->k;
    /* Elements are independent, so the schedule cannot change the result. */
#pragma omp parallel for schedule(dynamic, 1) if (o->grouped_numel >= PAR_MIN)
    for (int c = 0; c < o->n_chunks; c++) {
        int64_t off = C[c].off, n = C[c].len;
        if (sgd)
            sgd_chunk(P + off, G + off, S0 ? S0 + off : NULL, n, mu, nesterov, K[C[c].group]);
        else
            adamw_chunk(P + off, G + off, S0 + off, S1 + off, n, b1, b2, eps, K[C[c].group]);
    }
    return 0;
}
