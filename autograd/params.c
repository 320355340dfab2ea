/* params.c - the persistent parameter store: every parameter is a view into
 * one flat f32 value buffer and one flat f32 grad buffer, so the optimizer,
 * clipping, checkpoints and an allreduce each touch one contiguous array. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

struct vlm_params {
    vlm_tensor **items;
    int count, cap;
    int64_t numel;
    float *values, *grads;
};

vlm_params *vlm_params_new(void) {
    vlm_params *p = calloc(1, sizeof *p);
    if (!p) vlm_set_error("params: out of memory");
    return p;
}

void vlm_params_free(vlm_params *p) {
    if (!p) return;
    for (int i = 0; i < p->count; i++) {
        free((char *)p->items[i]->name);
        free(p->items[i]);
    }
    free(p->items);
    free(p->values);
    free(p->grads);
    free(p);
}

vlm_tensor *vlm_param_add(vlm_params *p, const char *name, int ndim, const int64_t *shape) {
    if (p->values) {
        vlm_set_error("params: cannot add '%s' after finalize", name);
        return NULL;
    }
    if (vlm_params_find(p, name)) {
        vlm_set_error("params: duplicate parameter name '%s'", name);
        return NULL;
    }
    if (ndim < 1 || ndim > VLM_MAX_DIMS) {
        vlm_set_error("params: '%s' has %d dims (1 to %d supported)", name, ndim, VLM_MAX_DIMS);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || n > ((int64_t)1 << 40) / shape[i]) {
            vlm_set_error("params: '%s' has bad dim %d = %lld", name, i, (long long)shape[i]);
            return NULL;
        }
        n *= shape[i];
    }
    if (p->count == p->cap) {
        int cap = p->cap ? p->cap * 2 : 64;
        vlm_tensor **items = realloc(p->items, (size_t)cap * sizeof *items);
        if (!items) {
            vlm_set_error("params: out of memory");
            return NULL;
        }
        p->items = items;
        p->cap = cap;
    }
    vlm_tensor *t = calloc(1, sizeof *t);
    char *nm = strdup(name);
    if (!t || !nm) {
        free(t);
        free(nm);
        vlm_set_error("params: out of memory");
        return NULL;
    }
    t->dtype = VLM_F32;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    t->numel = n;
    t->requires_grad = true;
    t->is_param = true;
    t->name = nm;
    p->items[p->count++] = t;
    p->numel += n;
    return t;
}

int vlm_params_finalize(vlm_params *p) {
    if (p->values) return vlm_set_error("params: finalize called twice");
    size_t bytes = (size_t)(p->numel ? p->numel : 1) * sizeof(float);
    p->values = vlm_big_alloc(bytes); /* huge pages: the optimizer streams through both */
    p->grads = vlm_big_alloc(bytes);
    if (!p->values || !p->grads)
        return vlm_set_error("params: out of memory for %lld parameters", (long long)p->numel);
    memset(p->values, 0, bytes);
    memset(p->grads, 0, bytes);
    int64_t off = 0;
    for (int i = 0; i < p->count; i++) {
        p->items[i]->data = p->values + off;
        p->items[i]->grad = p->grads + off;
        off += p->items[i]->numel;
    }
    return 0;
}

int vlm_params_count(const vlm_params *p) { return p->count; }
vlm_tensor *vlm_params_at(const vlm_params *p, int i) {
    return i >= 0 && i < p->count ? p->items[i] : NULL;
}

vlm_tensor *vlm_params_find(const vlm_params *p, const char *name) {
    for (int i = 0; i < p->count; i++)
        if (strcmp(p->items[i]->name, name) == 0) return p->items[i];
    return NULL;
}

int64_t vlm_params_numel(const vlm_params *p) { return p->numel; }
float *vlm_params_values(vlm_params *p) { return p->values; }
float *vlm_params_grads(vlm_params *p) { return p->grads; }

int64_t vlm_params_offset(const vlm_params *p, const vlm_tensor *t) {
    return (const float *)t->data - p->values;
}

void vlm_params_zero_grad(vlm_params *p) {
    if (p->grads) memset(p->grads, 0, (size_t)p->numel * sizeof(float));
}

void vlm_param_set_frozen(vlm_tensor *t, bool frozen) { t->requires_grad = !frozen; }
