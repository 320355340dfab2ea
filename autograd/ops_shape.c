/* ops_shape.c - layout ops: reshape, permute (transpose), concat, slice (split).
 *
 * Tensors are contiguous, so every op except reshape materialises its output.
 * Forwards move raw elements and work for every dtype (ids and masks get
 * reshaped and sliced too); grads are f32 whatever the dtype. */
#include "internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* PyTorch-style negative dims count from the end; -1 if out of range. */
static int norm_dim(int dim, int ndim) {
    if (dim < 0) dim += ndim;
    return dim >= 0 && dim < ndim ? dim : -1;
}

static int64_t prod(const int64_t *shape, int from, int to) {
    int64_t p = 1;
    for (int i = from; i < to; i++) p *= shape[i];
    return p;
}

/* "(a, b, c)" into buf, for error messages about requested shapes and lists. */
static char *list_str(const int64_t *v, int n, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < n && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%" PRId64, i ? ", " : "", v[i]);
    if (k < cap) snprintf(buf + k, cap - k, ")");
    return buf;
}

/* ---- reshape: y = x with a new shape, same data;  dx += dy ----------------- */

/* Resolves a target shape (one dim may be -1) into out; false with error. */
static bool reshape_dims(const vlm_tensor *a, int ndim, const int64_t *shape, int64_t *out) {
    char s[64], t[128];
    if (ndim < 1 || ndim > VLM_MAX_DIMS || !shape) {
        vlm_set_error("reshape: %d target dims for %s (1 to %d)", ndim,
                      vlm_shape_str(a, s, sizeof s), VLM_MAX_DIMS);
        return false;
    }
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
            continue;
        }
        if (shape[i] < 0 || (shape[i] > 0 && known > INT64_MAX / shape[i])) {
            vlm_set_error("reshape: bad target shape %s for %s", list_str(shape, ndim, t, sizeof t),
                          vlm_shape_str(a, s, sizeof s));
            return false;
        }
        known *= shape[i];
    }
    if (infer >= 0 && known > 0 && a->numel % known == 0) {
        out[infer] = a->numel / known;
        known = a->numel;
    } else if (infer >= 0) {
        known = -1; /* ambiguous (other dims multiply to 0) or indivisible */
    }
    if (known != a->numel) {
        vlm_set_error("reshape: cannot reshape %s (%" PRId64 " elements) to %s",
                      vlm_shape_str(a, s, sizeof s), a->numel, list_str(shape, ndim, t, sizeof t));
        return false;
    }
    return true;
}

vlm_tensor *vlm_reshape(vlm_ctx *ctx, vlm_tensor *a, int ndim, const int64_t *shape) {
    VLM_PROPAGATE_NULL(a);
    int64_t dims[VLM_MAX_DIMS];
    if (!reshape_dims(a, ndim, shape, dims)) return NULL;
    vlm_tensor *y = vlm_arena_alloc(ctx, sizeof *y);
    if (!y) return NULL;
    memset(y, 0, sizeof *y);
    y->dtype = a->dtype;
    y->ndim = ndim;
    for (int i = 0; i < ndim; i++) y->shape[i] = dims[i];
    y->numel = a->numel;
    y->data = a->data; /* contiguous: a view; only the grad is separate */
    VLM_RECORD(node, ctx, VLM_OP_RESHAPE, y, &a, 1);
    (void)node;
    return y;
}

int vlm_reshape_backward(vlm_ctx *ctx, vlm_node *node) {
    if (vlm_grad_steal(ctx, node->in[0], node->out)) return 0;
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, node->in[0], &fresh);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const float *dy = node->out->grad, keep = vlm_grad_keep(fresh);
#pragma omp parallel for if (node->out->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < node->out->numel; i++) dx[i] = VLM_OLD(keep, dx[i]) + dy[i];
    return 0;
}

/* ---- permute: y[i_0, .., i_n-1] = x[j] with j[perm[k]] = i_k;
 *      dx += permute(dy, perm^-1) ----------------------------------------------
 *
 * Both directions are a gather: walk the destination in order and read the
 * source through strides. Writes stay sequential; the innermost dim is a
 * memcpy when it is the source's innermost dim too. */

typedef struct {
    int64_t n[4], st[4]; /* destination extents, source strides (elements) */
} walk4;

/* Walk for permuting a tensor of `shape` by perm, right-aligned in 4 dims. */
static walk4 permute_walk(int ndim, const int64_t *shape, const int *perm) {
    int64_t stride[VLM_MAX_DIMS];
    stride[ndim - 1] = 1;
    for (int i = ndim - 2; i >= 0; i--) stride[i] = stride[i + 1] * shape[i + 1];
    walk4 w;
    int pad = 4 - ndim;
    for (int i = 0; i < pad; i++) w.n[i] = 1, w.st[i] = 0;
    for (int i = 0; i < ndim; i++) {
        w.n[pad + i] = shape[perm[i]];
        w.st[pad + i] = stride[perm[i]];
    }
    return w;
}

/* memcpy with a size the caller makes constant, so each case below compiles
 * to plain loads and stores (and stays clear of strict-aliasing trouble). */
static inline void copy_strided(char *d, const char *s, int64_t n, int64_t st, size_t es) {
    for (int64_t i = 0; i < n; i++) memcpy(d + (size_t)i * es, s + (size_t)(i * st) * es, es);
}

static void copy_row(void *dst, const void *src, int64_t n, int64_t st, size_t es) {
    if (st == 1) {
        memcpy(dst, src, (size_t)n * es);
        return;
    }
    switch (es) {
    case 4: copy_strided(dst, src, n, st, 4); break;
    case 2: copy_strided(dst, src, n, st, 2); break;
    case 1: copy_strided(dst, src, n, st, 1); break;
    default: copy_strided(dst, src, n, st, es); break;
    }
}

static void add_row(float *restrict dst, const float *restrict src, int64_t n, int64_t st) {
    for (int64_t i = 0; i < n; i++) dst[i] += src[i * st];
}

static void move_row(char *d, const char *s, int64_t n, int64_t st, size_t es, bool add) {
    if (add)
        add_row((float *)d, (const float *)s, n, st);
    else
        copy_row(d, s, n, st, es);
}

/* Row by row: right when the destination's innermost dim is the source's too
 * (each row is one memcpy or add). */
static void gather_rows(void *dst, const void *src, const walk4 *w, size_t es, bool add) {
    const int64_t n3 = w->n[3], rows = w->n[0] * w->n[1] * w->n[2];
#pragma omp parallel for if (rows * n3 >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t i2 = r % w->n[2], i1 = r / w->n[2] % w->n[1], i0 = r / w->n[2] / w->n[1];
        int64_t off = i0 * w->st[0] + i1 * w->st[1] + i2 * w->st[2];
        move_row((char *)dst + (size_t)(r * n3) * es, (const char *)src + (size_t)off * es, n3,
                 w->st[3], es, add);
    }
}

/* Transposing walks: destination dim k reads the source's innermost dim
 * (stride 1) while the destination's innermost dim is strided. Row by row,
 * every read would touch a new cache line (and often a new page); TILE x TILE
 * tiles over dims (k, 3) use each source line TILE times while it is hot. */
#define VLM_TILE 32
static void gather_tiled(void *dst, const void *src, const walk4 *w, int k, size_t es,
                         bool add) {
    const int a = k == 0 ? 1 : 0, b = k == 2 ? 1 : 2; /* the other two outer dims */
    const int64_t dst_st[3] = {w->n[1] * w->n[2] * w->n[3], w->n[2] * w->n[3], w->n[3]};
    const int64_t n3 = w->n[3], tiles = (w->n[k] + VLM_TILE - 1) / VLM_TILE;
    const int64_t jobs = w->n[a] * w->n[b] * tiles;
#pragma omp parallel for if (jobs * VLM_TILE * n3 >= VLM_PAR_MIN)
    for (int64_t job = 0; job < jobs; job++) {
        int64_t t = job % tiles, ib = job / tiles % w->n[b], ia = job / tiles / w->n[b];
        int64_t k0 = t * VLM_TILE, k1 = k0 + VLM_TILE < w->n[k] ? k0 + VLM_TILE : w->n[k];
        int64_t dbase = ia * dst_st[a] + ib * dst_st[b], sbase = ia * w->st[a] + ib * w->st[b];
        for (int64_t j0 = 0; j0 < n3; j0 += VLM_TILE) {
            int64_t len = n3 - j0 < VLM_TILE ? n3 - j0 : VLM_TILE;
            for (int64_t ik = k0; ik < k1; ik++) { /* source stride of dim k is 1 */
                int64_t doff = dbase + ik * dst_st[k] + j0, soff = sbase + ik + j0 * w->st[3];
                move_row((char *)dst + (size_t)doff * es, (const char *)src + (size_t)soff * es,
                         len, w->st[3], es, add);
            }
        }
    }
}

/* dst (in order) = src through the walk, or dst += src when add (f32 only). */
static void gather4(void *dst, const void *src, const walk4 *w, size_t es, bool add) {
    int k = -1;
    if (w->st[3] != 1 && w->n[3] > 1)
        for (int d = 0; d < 3; d++)
            if (w->st[d] == 1 && w->n[d] > 1) k = d;
    if (k < 0)
        gather_rows(dst, src, w, es, add);
    else
        gather_tiled(dst, src, w, k, es, add);
}

static bool perm_ok(const vlm_tensor *a, const int *perm) {
    bool seen[VLM_MAX_DIMS] = {false}, ok = perm != NULL;
    for (int i = 0; ok && i < a->ndim; i++) {
        ok = perm[i] >= 0 && perm[i] < a->ndim && !seen[perm[i]];
        if (ok) seen[perm[i]] = true;
    }
    if (ok) return true;
    char s[64], p[128] = "NULL";
    int64_t v[VLM_MAX_DIMS];
    for (int i = 0; perm && i < a->ndim; i++) v[i] = perm[i];
    if (perm) list_str(v, a->ndim, p, sizeof p);
    vlm_set_error("permute: perm %s is not a permutation of the dims of %s", p,
                  vlm_shape_str(a, s, sizeof s));
    return false;
}

vlm_tensor *vlm_permute(vlm_ctx *ctx, vlm_tensor *a, const int *perm) {
    VLM_PROPAGATE_NULL(a);
    if (!perm_ok(a, perm)) return NULL;
    int64_t shape[VLM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) shape[i] = a->shape[perm[i]];
    vlm_tensor *y = vlm_tensor_new(ctx, a->dtype, a->ndim, shape);
    if (!y) return NULL;
    walk4 w = permute_walk(a->ndim, a->shape, perm);
    gather4(y->data, a->data, &w, vlm_dtype_size(a->dtype), false);
    VLM_RECORD(node, ctx, VLM_OP_PERMUTE, y, &a, 1);
    if (node)
        for (int i = 0; i < a->ndim; i++) node->iarg[i] = perm[i];
    return y;
}

int vlm_permute_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *y = node->out;
    int inv[VLM_MAX_DIMS];
    for (int i = 0; i < y->ndim; i++) inv[node->iarg[i]] = i;
    walk4 w = permute_walk(y->ndim, y->shape, inv);
    gather4(dx, y->grad, &w, sizeof(float), true);
    return 0;
}

/* Swaps two dims through permute (no node of its own). */
vlm_tensor *vlm_transpose(vlm_ctx *ctx, vlm_tensor *a, int dim0, int dim1) {
    VLM_PROPAGATE_NULL(a);
    int d0 = norm_dim(dim0, a->ndim), d1 = norm_dim(dim1, a->ndim);
    if (d0 < 0 || d1 < 0) {
        char s[64];
        vlm_set_error("transpose: dims (%d, %d) out of range for %s", dim0, dim1,
                      vlm_shape_str(a, s, sizeof s));
        return NULL;
    }
    int perm[VLM_MAX_DIMS];
    for (int i = 0; i < a->ndim; i++) perm[i] = i;
    perm[d0] = d1;
    perm[d1] = d0;
    return vlm_permute(ctx, a, perm);
}

/* ---- concat: y = [x_0 | x_1 | ...] along dim;  dx_i += its block of dy ------
 *
 * Seen as [outer, shape[dim] * inner] matrices, every input is a column block
 * of the output, so each output row is n memcpys. */

static bool concat_ok(vlm_tensor *const *ts, int n, int dim, int *d) {
    const vlm_tensor *a = ts[0];
    char s0[64], s1[64];
    *d = norm_dim(dim, a->ndim);
    if (*d < 0) {
        vlm_set_error("concat: dim %d out of range for input 0 %s", dim,
                      vlm_shape_str(a, s0, sizeof s0));
        return false;
    }
    for (int i = 1; i < n; i++) {
        const vlm_tensor *b = ts[i];
        bool ok = b->ndim == a->ndim && b->dtype == a->dtype;
        for (int k = 0; ok && k < a->ndim; k++) ok = k == *d || b->shape[k] == a->shape[k];
        if (!ok) {
            vlm_set_error("concat: input %d %s %s does not match input 0 %s %s outside dim %d", i,
                          vlm_dtype_name(b->dtype), vlm_shape_str(b, s1, sizeof s1),
                          vlm_dtype_name(a->dtype), vlm_shape_str(a, s0, sizeof s0), *d);
            return false;
        }
    }
    return true;
}

vlm_tensor *vlm_concat(vlm_ctx *ctx, vlm_tensor *const *ts, int n, int dim) {
    if (!ts || n < 1 || n > VLM_MAX_INPUTS) {
        vlm_set_error("concat: %d inputs%s (1 to %d)", n, ts ? "" : " in a NULL array",
                      VLM_MAX_INPUTS);
        return NULL;
    }
    for (int i = 0; i < n; i++)
        if (!ts[i]) return NULL;
    int d;
    if (!concat_ok(ts, n, dim, &d)) return NULL;
    const vlm_tensor *a = ts[0];
    int64_t shape[VLM_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    for (int i = 1; i < n; i++) shape[d] += ts[i]->shape[d];
    vlm_tensor *y = vlm_tensor_new(ctx, a->dtype, a->ndim, shape);
    if (!y) return NULL;
    const size_t es = vlm_dtype_size(a->dtype);
    const int64_t outer = prod(shape, 0, d), inner = prod(shape, d + 1, a->ndim);
    const int64_t row = shape[d] * inner;
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        char *dst = (char *)y->data + (size_t)(o * row) * es;
        for (int i = 0; i < n; i++) {
            size_t chunk = (size_t)(ts[i]->shape[d] * inner) * es;
            memcpy(dst, (const char *)ts[i]->data + (size_t)o * chunk, chunk);
            dst += chunk;
        }
    }
    VLM_RECORD(node, ctx, VLM_OP_CONCAT, y, ts, n);
    if (node) node->iarg[0] = d;
    return y;
}

int vlm_concat_backward(vlm_ctx *ctx, vlm_node *node) {
    const int n = node->n_in, d = (int)node->iarg[0];
    const vlm_tensor *y = node->out;
    float *dx[VLM_MAX_INPUTS];
    for (int i = 0; i < n; i++) {
        dx[i] = vlm_input_grad(ctx, node->in[i]);
        if (!dx[i] && node->in[i]->requires_grad) return -1;
    }
    const int64_t outer = prod(y->shape, 0, d), inner = prod(y->shape, d + 1, y->ndim);
    const int64_t row = y->shape[d] * inner;
    const float *dy = y->grad;
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        const float *src = dy + o * row;
        for (int i = 0; i < n; i++) {
            int64_t chunk = node->in[i]->shape[d] * inner;
            if (dx[i])
                for (int64_t k = 0; k < chunk; k++) dx[i][o * chunk + k] += src[k];
            src += chunk;
        }
    }
    return 0;
}

/* ---- slice: y = x[..., start:start+len, ...] along dim;  dx[block] += dy ---- */

vlm_tensor *vlm_slice(vlm_ctx *ctx, vlm_tensor *a, int dim, int64_t start, int64_t len) {
    VLM_PROPAGATE_NULL(a);
    char s[64];
    int d = norm_dim(dim, a->ndim);
    if (d < 0 || start < 0 || len < 0 || start > a->shape[d] - len) {
        vlm_set_error("slice: start %" PRId64 " len %" PRId64 " along dim %d is out of range "
                      "for %s", start, len, dim, vlm_shape_str(a, s, sizeof s));
        return NULL;
    }
    int64_t shape[VLM_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[d] = len;
    vlm_tensor *y = vlm_tensor_new(ctx, a->dtype, a->ndim, shape);
    if (!y) return NULL;
    const size_t es = vlm_dtype_size(a->dtype);
    const int64_t outer = prod(shape, 0, d), inner = prod(shape, d + 1, a->ndim);
    const size_t block = (size_t)(len * inner) * es;
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
    for (int64_t o = 0; o < outer; o++)
        memcpy((char *)y->data + (size_t)o * block,
               (const char *)a->data + (size_t)((o * a->shape[d] + start) * inner) * es, block);
    VLM_RECORD(node, ctx, VLM_OP_SLICE, y, &a, 1);
    if (node) {
        node->iarg[0] = d;
        node->iarg[1] = start;
    }
    return y;
}

int vlm_slice_backward(vlm_ctx *ctx, vlm_node *node) {
    float *dx = vlm_input_grad(ctx, node->in[0]);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const vlm_tensor *x = node->in[0], *y = node->out;
    const int d = (int)node->iarg[0];
    const int64_t start = node->iarg[1];
    const int64_t outer = prod(y->shape, 0, d), inner = prod(y->shape, d + 1, y->ndim);
    const int64_t block = y->shape[d] * inner;
#pragma omp parallel for if (y->numel >= VLM_PAR_MIN)
    for (int64_t o = 0; o < outer; o++) {
        float *dst = dx + (o * x->shape[d] + start) * inner;
        const float *src = y->grad + o * block;
        for (int64_t k = 0; k < block; k++) dst[k] += src[k];
    }
    return 0;
}

/* A loop of slices (no node of its own). */
int vlm_split(vlm_ctx *ctx, vlm_tensor *a, int dim, int n, const int64_t *sizes,
              vlm_tensor **out) {
    for (int i = 0; out && i < n; i++) out[i] = NULL;
    if (!a) return -1;
    char s[64], l[128] = "NULL";
    int d = norm_dim(dim, a->ndim);
    bool ok = d >= 0 && n >= 1 && sizes && out;
    int64_t total = 0;
    for (int i = 0; ok && i < n; i++) {
        ok = sizes[i] >= 0 && sizes[i] <= a->shape[d] - total;
        total += ok ? sizes[i] : 0;
    }
    if (!ok || total != a->shape[d]) {
        if (sizes && n >= 1) list_str(sizes, n < 16 ? n : 16, l, sizeof l);
        return vlm_set_error("split: %d sizes %s along dim %d do not partition %s", n, l, dim,
                             vlm_shape_str(a, s, sizeof s));
    }
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        out[i] = vlm_slice(ctx, a, d, start, sizes[i]);
        if (!out[i]) return -1;
        start += sizes[i];
    }
    return 0;
}
