/* ops_attention.c - scaled-dot-product attention and rotary position
 * embeddings, each forward beside its backward.
 *
 * Attention follows FlashAttention-2: queries and keys are cut into BQ x BK
 * tiles, each query block sweeps the key blocks with a running row max m and
 * sum l (online softmax), so the [Tq, Tk] score matrix never exists. Only the
 * output and the per-row logsumexp are kept for backward, which recomputes
 * every score tile from them. Tile products go to vlm_sgemm on strided rows:
 * for a fixed (batch, head), consecutive rows of q are Hq*D floats apart,
 * which is just the leading dimension, so no head is ever copied out. */
#include "internal.h"
#include "vmath.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

enum { BQ = 64, BK = 64 };

typedef struct {
    int64_t B, Tq, Tk, Hq, Hkv, D, group; /* group = Hq / Hkv */
    vlm_mask_kind kind;
    int64_t prefix;
    float scale;
    const uint8_t *key_mask; /* [B, Tk] or NULL */
    const float *q, *k, *v;
    float *lse; /* [B, Hq, Tq]; +INF marks a row that sees no key */
} attn_geom;

static attn_geom attn_geom_of(const vlm_tensor *q, const vlm_tensor *k, const vlm_tensor *v) {
    attn_geom a = {.B = q->shape[0],
                   .Tq = q->shape[1],
                   .Hq = q->shape[2],
                   .D = q->shape[3],
                   .Tk = k->shape[1],
                   .Hkv = k->shape[2]};
    a.group = a.Hq / a.Hkv;
    a.q = vlm_f32(q), a.k = vlm_f32(k), a.v = vlm_f32(v);
    return a;
}

/* Row (b, i, h) of a [B, T, H, D] tensor; its rows for fixed (b, h) are H*D apart. */
static inline int64_t row_at(int64_t b, int64_t i, int64_t h, int64_t T, int64_t H, int64_t D) {
    return ((b * T + i) * H + h) * D;
}

/* Query i sees keys [0, limit) (before the key padding mask). Monotone in i,
 * so the last row of a query block bounds the key blocks it needs. */
static int64_t key_limit(const attn_geom *a, int64_t i) {
    if (a->kind == VLM_MASK_NONE) return a->Tk;
    int64_t hi = i + (a->Tk - a->Tq) + 1; /* causal: j <= pos(i) */
    if (a->kind == VLM_MASK_PREFIX && hi < a->prefix) hi = a->prefix;
    return hi < 0 ? 0 : hi > a->Tk ? a->Tk : hi;
}

/* Sets the invisible entries of a score tile (ld BK) to -INF. */
static void mask_tile(const attn_geom *a, int64_t b, int64_t i0, int64_t nq, int64_t j0, int64_t nk,
                      float *S) {
    const uint8_t *km = a->key_mask ? a->key_mask + b * a->Tk + j0 : NULL;
    if (!km && key_limit(a, i0) >= j0 + nk) return; /* every row sees the whole tile */
    for (int64_t r = 0; r < nq; r++) {
        int64_t lim = key_limit(a, i0 + r) - j0;
        lim = lim < 0 ? 0 : lim > nk ? nk : lim;
        for (int64_t c = lim; c < nk; c++)
            S[r * BK + c] = -INFINITY;
        for (int64_t c = 0; km && c < lim; c++)
            if (!km[c]) S[r * BK + c] = -INFINITY;
    }
}

/* e^x for the softmax arguments x = s - max <= 0 (up to rounding), in a form
 * the compiler vectorises (vm_exp; libm's expf is a scalar call). x < -87
 * (below the normal range), -INF included, gives exactly 0; NaN stays NaN. */
static inline float softmax_exp(float x) { return x < -87.0f ? 0.0f : vm_exp(x); }

/* ---- attention forward -------------------------------------------------------
 * Per row, over key tiles: m' = max(m, rowmax S), P = exp(S - m'),
 * l = l e^(m - m') + rowsum P, acc = acc e^(m - m') + P V.
 * At the end O = acc / l and lse = m + log l. */

/* Turns score tile S into P in place and rescales the row state. */
static void online_softmax(float *S, int64_t nq, int64_t nk, float *m, float *l, float *acc,
                           int64_t D) {
    for (int64_t r = 0; r < nq; r++) {
        float *s = S + r * BK, mx = -INFINITY, sum = 0;
#pragma omp simd reduction(max : mx)
        for (int64_t c = 0; c < nk; c++)
            mx = s[c] > mx ? s[c] : mx;
        float mnew = m[r] > mx ? m[r] : mx;
        if (mnew == -INFINITY) { /* nothing visible yet: P row of zeros */
            memset(s, 0, (size_t)nk * sizeof *s);
            continue;
        }
#pragma omp simd reduction(+ : sum)
        for (int64_t c = 0; c < nk; c++) {
            s[c] = softmax_exp(s[c] - mnew);
            sum += s[c];
        }
        float alpha = softmax_exp(m[r] - mnew);
        l[r] = l[r] * alpha + sum;
        m[r] = mnew;
        if (alpha != 1.0f)
            for (int64_t d = 0; d < D; d++)
                acc[r * D + d] *= alpha;
    }
}

/* The output: f32, or the context's storage type (vlm_attention_lowp). */
typedef struct {
    void *data;
    vlm_dtype dt;
} attn_out;

/* One (batch, head, query block) task; ws holds BQ*BK + BQ*D + 2*BQ floats. */
static void attn_fwd_block(const attn_geom *a, int64_t task, float *ws, void *arg) {
    const attn_out *out = arg;
    size_t esize = vlm_dtype_size(out->dt);
    int64_t nqb = (a->Tq + BQ - 1) / BQ, D = a->D;
    int64_t b = task / (a->Hq * nqb), h = task / nqb % a->Hq, i0 = task % nqb * BQ;
    int64_t nq = a->Tq - i0 < BQ ? a->Tq - i0 : BQ, g = h / a->group;
    int64_t ldq = a->Hq * D, ldk = a->Hkv * D;
    float *S = ws, *acc = S + BQ * BK, *m = acc + BQ * D, *l = m + BQ;
    for (int64_t r = 0; r < nq; r++)
        m[r] = -INFINITY, l[r] = 0;
    memset(acc, 0, (size_t)(nq * D) * sizeof *acc);
    const float *Q = a->q + row_at(b, i0, h, a->Tq, a->Hq, D);
    int64_t kend = key_limit(a, i0 + nq - 1);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        int64_t nk = kend - j0 < BK ? kend - j0 : BK, kv = row_at(b, j0, g, a->Tk, a->Hkv, D);
        vlm_sgemm(false, true, nq, nk, D, a->scale, Q, ldq, a->k + kv, ldk, 0, S, BK);
        mask_tile(a, b, i0, nq, j0, nk, S);
        online_softmax(S, nq, nk, m, l, acc, D);
        vlm_sgemm(false, false, nq, D, nk, 1, S, BK, a->v + kv, ldk, 1, acc, D);
    }
    for (int64_t r = 0; r < nq; r++) {
        float inv = l[r] > 0 ? 1.0f / l[r] : 0.0f; /* l == 0: the row sees no key */
        for (int64_t d = 0; d < D; d++)
            acc[r * D + d] *= inv;
        int64_t at = row_at(b, i0 + r, h, a->Tq, a->Hq, D);
        vlm_store_f32_as((char *)out->data + (size_t)at * esize, out->dt, acc + r * D, D);
        if (a->lse)
            a->lse[(b * a->Hq + h) * a->Tq + i0 + r] = l[r] > 0 ? m[r] + logf(l[r]) : INFINITY;
    }
}

/* Runs fn(a, task, ws, arg) for every task in parallel, with a private
 * workspace of ws_floats per thread. Work is uneven under a causal mask, so
 * tasks are handed out dynamically; each task writes rows no other task
 * touches, so the result does not depend on the schedule. */
typedef void (*attn_task_fn)(const attn_geom *a, int64_t task, float *ws, void *arg);

static int attn_parallel(const attn_geom *a, int64_t n_tasks, size_t ws_floats, attn_task_fn fn,
                         void *arg, const char *what) {
    int nt = omp_get_max_threads();
    float *ws = malloc((size_t)nt * ws_floats * sizeof *ws);
    if (!ws) return vlm_set_error("attention: out of memory for %s workspace", what);
    double work = (double)a->B * a->Hq * a->Tq * a->Tk * a->D;
#pragma omp parallel num_threads(nt) if (n_tasks > 1 && work >= VLM_PAR_MIN)
    {
        float *mine = ws + (size_t)omp_get_thread_num() * ws_floats;
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < n_tasks; t++)
            fn(a, t, mine, arg);
    }
    free(ws);
    return 0;
}

/* Shape strings of q, k, v for error messages. */
typedef struct {
    char q[64], k[64], v[64];
} attn_shapes;

static attn_shapes shapes_of(const vlm_tensor *q, const vlm_tensor *k, const vlm_tensor *v) {
    attn_shapes s;
    vlm_shape_str(q, s.q, sizeof s.q);
    vlm_shape_str(k, s.k, sizeof s.k);
    vlm_shape_str(v, s.v, sizeof s.v);
    return s;
}

static bool attn_shape_ok(const vlm_tensor *q, const vlm_tensor *k, const vlm_tensor *v) {
    attn_shapes s = shapes_of(q, k, v);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4) {
        vlm_set_error("attention: q, k, v must be 4-D [B, T, H, D], got q %s, k %s, v %s", s.q, s.k,
                      s.v);
        return false;
    }
    if (!vlm_same_shape(k, v)) {
        vlm_set_error("attention: k %s and v %s must have the same shape", s.k, s.v);
        return false;
    }
    if (q->shape[0] != k->shape[0] || q->shape[3] != k->shape[3] || q->shape[3] < 1) {
        vlm_set_error("attention: q %s and k %s must share batch and head dim (D >= 1)", s.q, s.k);
        return false;
    }
    if (q->shape[2] < 1 || k->shape[2] < 1 || q->shape[2] % k->shape[2]) {
        vlm_set_error("attention: Hq = %lld must be a positive multiple of Hkv = %lld (q %s, k %s)",
                      (long long)q->shape[2], (long long)k->shape[2], s.q, s.k);
        return false;
    }
    return true;
}

static bool attn_opts_ok(const vlm_tensor *q, const vlm_tensor *k, const vlm_attn_opts *o) {
    attn_shapes s = shapes_of(q, k, k);
    int64_t B = k->shape[0], Tk = k->shape[1];
    if (o->kind != VLM_MASK_NONE && o->kind != VLM_MASK_CAUSAL && o->kind != VLM_MASK_PREFIX) {
        vlm_set_error("attention: unknown mask kind %d (q %s, k %s)", (int)o->kind, s.q, s.k);
        return false;
    }
    if (o->kind == VLM_MASK_PREFIX && (o->prefix_len < 0 || o->prefix_len > Tk)) {
        vlm_set_error("attention: prefix_len %lld outside [0, Tk = %lld] (q %s, k %s)",
                      (long long)o->prefix_len, (long long)Tk, s.q, s.k);
        return false;
    }
    if (!isfinite(o->scale)) {
        vlm_set_error("attention: scale %g is not finite (q %s, k %s)", o->scale, s.q, s.k);
        return false;
    }
    const vlm_tensor *km = o->key_mask;
    if (km && (km->dtype != VLM_U8 || km->ndim != 2 || km->shape[0] != B || km->shape[1] != Tk)) {
        char sm[64];
        vlm_set_error("attention: key_mask must be u8 [B, Tk] = [%lld, %lld], got %s %s (q %s, "
                      "k %s)",
                      (long long)B, (long long)Tk, vlm_dtype_name(km->dtype),
                      vlm_shape_str(km, sm, sizeof sm), s.q, s.k);
        return false;
    }
    return true;
}

static vlm_tensor *attention(vlm_ctx *ctx, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v,
                             const vlm_attn_opts *opts, bool lowp) {
    VLM_PROPAGATE_NULL(q, k, v);
    vlm_attn_opts o = opts ? *opts : (vlm_attn_opts){.kind = VLM_MASK_NONE};
    if (!vlm_check_f32("attention", q, "q") || !vlm_check_f32("attention", k, "k") ||
        !vlm_check_f32("attention", v, "v") || !attn_shape_ok(q, k, v) || !attn_opts_ok(q, k, &o))
        return NULL;
    attn_geom a = attn_geom_of(q, k, v);
    a.kind = o.kind, a.prefix = o.prefix_len;
    a.scale = o.scale != 0 ? o.scale : (float)(1.0 / sqrt((double)a.D));
    a.key_mask = o.key_mask ? (const uint8_t *)o.key_mask->data : NULL;
    vlm_tensor *in[3] = {q, k, v};
    if (vlm_needs_grad(ctx, in, 3)) {
        a.lse = vlm_arena_alloc(ctx, (size_t)(a.B * a.Hq * a.Tq) * sizeof *a.lse);
        if (!a.lse) return NULL;
    }
    vlm_tensor *y = vlm_tensor_new(ctx, lowp ? vlm_ctx_lowp_dtype(ctx) : VLM_F32, 4, q->shape);
    if (!y) return NULL;
    int64_t n_tasks = a.B * a.Hq * ((a.Tq + BQ - 1) / BQ);
    attn_out out = {y->data, y->dtype};
    if (attn_parallel(&a, n_tasks, BQ * BK + BQ * a.D + 2 * BQ, attn_fwd_block, &out, "forward"))
        return NULL;
    VLM_RECORD(node, ctx, VLM_OP_ATTENTION, y, in, 3);
    if (node) {
        node->iarg[0] = a.kind, node->iarg[1] = a.prefix;
        node->farg[0] = a.scale;
        node->saved[0] = a.lse;
        node->saved[1] = (void *)a.key_mask;
    }
    return y;
}

vlm_tensor *vlm_attention(vlm_ctx *ctx, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v,
                          const vlm_attn_opts *opts) {
    return attention(ctx, q, k, v, opts, false);
}

vlm_tensor *vlm_attention_lowp(vlm_ctx *ctx, vlm_tensor *q, vlm_tensor *k, vlm_tensor *v,
                               const vlm_attn_opts *opts) {
    return attention(ctx, q, k, v, opts, true);
}

/* ---- attention backward ------------------------------------------------------
 * Per tile, with P = exp(S - lse) recomputed and Drow = rowsum(dO * O):
 *   dV += P^T dO,  dP = dO V^T,  dS = P (dP - Drow),
 *   dQ += scale dS K,  dK += scale dS^T Q.
 * A task owns one (batch, kv head): the dK/dV rows of that head and the dQ
 * rows of the query heads that read it, so no two threads write one row. */

typedef struct {
    const float *dO, *Drow;
    float *dq, *dk, *dv;       /* NULL: that input needs no grad */
    bool fq, fk, fv;           /* fresh (unzeroed) buffers: each task zeroes its rows */
} attn_grads;

/* ws holds 2 * BQ * BK floats: P, then dP (which becomes dS). */
static void attn_bwd_tile(const attn_geom *a, const attn_grads *gr, int64_t b, int64_t h,
                          int64_t i0, int64_t nq, int64_t j0, int64_t nk, float *ws) {
    int64_t D = a->D, ldq = a->Hq * D, ldk = a->Hkv * D;
    int64_t qo = row_at(b, i0, h, a->Tq, a->Hq, D),
            kv = row_at(b, j0, h / a->group, a->Tk, a->Hkv, D);
    const float *lse = a->lse + (b * a->Hq + h) * a->Tq + i0,
                *Dr = gr->Drow + (b * a->Hq + h) * a->Tq + i0;
    float *P = ws, *dS = ws + BQ * BK;
    vlm_sgemm(false, true, nq, nk, D, a->scale, a->q + qo, ldq, a->k + kv, ldk, 0, P, BK);
    mask_tile(a, b, i0, nq, j0, nk, P);
    for (int64_t r = 0; r < nq; r++) { /* masked: exp(-INF) = 0; empty row: lse = +INF */
        float *p = P + r * BK, l = lse[r] == INFINITY ? 0.0f : lse[r];
#pragma omp simd
        for (int64_t c = 0; c < nk; c++)
            p[c] = softmax_exp(p[c] - l);
    }
    if (gr->dv) vlm_sgemm(true, false, nk, D, nq, 1, P, BK, gr->dO + qo, ldq, 1, gr->dv + kv, ldk);
    if (!gr->dq && !gr->dk) return;
    vlm_sgemm(false, true, nq, nk, D, 1, gr->dO + qo, ldq, a->v + kv, ldk, 0, dS, BK);
    for (int64_t r = 0; r < nq; r++)
        for (int64_t c = 0; c < nk; c++)
            dS[r * BK + c] = P[r * BK + c] * (dS[r * BK + c] - Dr[r]);
    if (gr->dq)
        vlm_sgemm(false, false, nq, D, nk, a->scale, dS, BK, a->k + kv, ldk, 1, gr->dq + qo, ldq);
    if (gr->dk)
        vlm_sgemm(true, false, nk, D, nq, a->scale, dS, BK, a->q + qo, ldq, 1, gr->dk + kv, ldk);
}

/* Zeroes the T rows (b, *, h) of a [B, T, H, D] grad (rows H*D apart). */
static void zero_rows(float *x, int64_t b, int64_t h, int64_t T, int64_t H, int64_t D) {
    for (int64_t i = 0; i < T; i++)
        memset(x + row_at(b, i, h, T, H, D), 0, (size_t)D * sizeof *x);
}

/* Key blocks outermost, so a dK/dV tile stays in cache while every query
 * block of every head in the group adds to it. The task first zeroes the
 * rows it owns in fresh grad buffers (in parallel, right before use, instead
 * of a serial memset of the whole buffer). */
static void attn_bwd_task(const attn_geom *a, int64_t task, float *ws, void *arg) {
    const attn_grads *gr = arg;
    int64_t b = task / a->Hkv, g = task % a->Hkv;
    if (gr->fk) zero_rows(gr->dk, b, g, a->Tk, a->Hkv, a->D);
    if (gr->fv) zero_rows(gr->dv, b, g, a->Tk, a->Hkv, a->D);
    for (int64_t h = g * a->group; gr->fq && h < (g + 1) * a->group; h++)
        zero_rows(gr->dq, b, h, a->Tq, a->Hq, a->D);
    for (int64_t j0 = 0; j0 < a->Tk; j0 += BK) {
        int64_t nk = a->Tk - j0 < BK ? a->Tk - j0 : BK;
        for (int64_t h = g * a->group; h < (g + 1) * a->group; h++)
            for (int64_t i0 = 0; i0 < a->Tq; i0 += BQ) {
                int64_t nq = a->Tq - i0 < BQ ? a->Tq - i0 : BQ;
                if (j0 < key_limit(a, i0 + nq - 1)) attn_bwd_tile(a, gr, b, h, i0, nq, j0, nk, ws);
            }
    }
}

/* Drow[b, h, i] = dO . O over D, laid out like lse. A low-precision O (the
 * _lowp output, as FlashAttention-2 keeps it in bf16) is widened in chunks. */
enum { DROW_CHUNK = 64 };
static void attn_drow(const attn_geom *a, const float *dO, const vlm_tensor *out, float *Drow) {
    int64_t rows = a->B * a->Tq * a->Hq, D = a->D;
#pragma omp parallel for if (rows * D >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t h = r % a->Hq, i = r / a->Hq % a->Tq, b = r / (a->Hq * a->Tq);
        float s = 0, buf[DROW_CHUNK];
        for (int64_t d0 = 0; d0 < D; d0 += DROW_CHUNK) {
            int64_t n = D - d0 < DROW_CHUNK ? D - d0 : DROW_CHUNK;
            const float *o = vlm_chunk_f32(out, r * D + d0, n, buf);
            for (int64_t d = 0; d < n; d++)
                s += dO[r * D + d0 + d] * o[d];
        }
        Drow[(b * a->Hq + h) * a->Tq + i] = s;
    }
}

int vlm_attention_backward(vlm_ctx *ctx, vlm_node *node) {
    vlm_tensor *q = node->in[0], *k = node->in[1], *v = node->in[2];
    attn_grads gr = {.dO = node->out->grad};
    gr.dq = vlm_input_grad_raw(ctx, q, &gr.fq);
    gr.dk = vlm_input_grad_raw(ctx, k, &gr.fk);
    gr.dv = vlm_input_grad_raw(ctx, v, &gr.fv);
    if ((!gr.dq && q->requires_grad) || (!gr.dk && k->requires_grad) ||
        (!gr.dv && v->requires_grad))
        return -1;
    attn_geom a = attn_geom_of(q, k, v);
    a.kind = (vlm_mask_kind)node->iarg[0], a.prefix = node->iarg[1];
    a.scale = node->farg[0];
    a.lse = node->saved[0];
    a.key_mask = node->saved[1];
    if (node->out->numel == 0) { /* no query: grads are zero (k, v may be non-empty) */
        vlm_tensor *t[3] = {q, k, v};
        float *d[3] = {gr.dq, gr.dk, gr.dv};
        bool f[3] = {gr.fq, gr.fk, gr.fv};
        for (int i = 0; i < 3; i++)
            if (f[i]) memset(d[i], 0, (size_t)t[i]->numel * sizeof(float));
        return 0;
    }
    float *Drow = malloc((size_t)(a.B * a.Hq * a.Tq) * sizeof *Drow);
    if (!Drow) return vlm_set_error("attention: out of memory for backward row sums");
    attn_drow(&a, gr.dO, node->out, Drow);
    gr.Drow = Drow;
    int rc = attn_parallel(&a, a.B * a.Hkv, 2 * BQ * BK, attn_bwd_task, &gr, "backward");
    free(Drow);
    return rc;
}

/* ---- rope: per pair (x1, x2) = (x[j], x[j + D/2]) at angle p * inv_freq[j]
 *   y1 = x1 cos - x2 sin,  y2 = x2 cos + x1 sin;  backward rotates dy by -angle:
 *   dx1 += dy1 cos + dy2 sin,  dx2 += dy2 cos - dy1 sin. */

/* cos then sin, each [T, D/2]. As in HF, inv_freq is computed in double and
 * rounded to f32, and the angle is the f32 product position * inv_freq. */
static void rope_table(float *cs, int64_t T, int64_t D, int64_t pos_offset, float theta) {
    int64_t half = D / 2;
    float *sn = cs + T * half;
    for (int64_t i = 0; i < half; i++) {
        float inv = (float)pow((double)theta, -2.0 * (double)i / (double)D);
        for (int64_t t = 0; t < T; t++) {
            float ang = (float)(pos_offset + t) * inv;
            cs[t * half + i] = (float)cos((double)ang);
            sn[t * half + i] = (float)sin((double)ang);
        }
    }
}

/* y = R(sign * angle) x over rows of D; accumulate adds into y instead,
 * or into 0 when y is a fresh grad buffer (see vlm_input_grad_raw). */
static void rope_apply(const vlm_tensor *x, const float *src, float *y, const float *cs, float sign,
                       bool accumulate, bool fresh) {
    int64_t T = x->shape[1], H = x->shape[2], D = x->shape[3], half = D / 2;
    int64_t rows = x->shape[0] * T * H;
    const float *sn = cs + T * half, keep = vlm_grad_keep(fresh);
#pragma omp parallel for if (x->numel >= VLM_PAR_MIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = r / H % T;
        const float *c = cs + t * half, *s = sn + t * half, *x1 = src + r * D, *x2 = x1 + half;
        float *y1 = y + r * D, *y2 = y1 + half;
        for (int64_t j = 0; j < half; j++) {
            float a = x1[j] * c[j] - x2[j] * sign * s[j], b = x2[j] * c[j] + x1[j] * sign * s[j];
            if (accumulate)
                y1[j] = VLM_OLD(keep, y1[j]) + a, y2[j] = VLM_OLD(keep, y2[j]) + b;
            else
                y1[j] = a, y2[j] = b;
        }
    }
}

vlm_tensor *vlm_rope(vlm_ctx *ctx, vlm_tensor *x, int64_t pos_offset, float theta) {
    VLM_PROPAGATE_NULL(x);
    if (!vlm_check_f32("rope", x, "x")) return NULL;
    char sx[64];
    if (x->ndim != 4 || x->shape[3] < 2 || x->shape[3] % 2) {
        vlm_set_error("rope: x must be [B, T, H, D] with D even, got %s",
                      vlm_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    if (!(theta > 0) || !isfinite(theta) || pos_offset < 0) {
        vlm_set_error("rope: need theta > 0 and pos_offset >= 0, got theta %g, pos_offset %lld "
                      "(x %s)",
                      theta, (long long)pos_offset, vlm_shape_str(x, sx, sizeof sx));
        return NULL;
    }
    int64_t T = x->shape[1], D = x->shape[3];
    float *cs = vlm_arena_alloc(ctx, (size_t)(T * D) * sizeof *cs);
    vlm_tensor *y = cs ? vlm_new_like(ctx, x) : NULL;
    if (!y) return NULL;
    rope_table(cs, T, D, pos_offset, theta);
    rope_apply(x, vlm_f32(x), vlm_f32(y), cs, 1.0f, false, false);
    VLM_RECORD(node, ctx, VLM_OP_ROPE, y, &x, 1);
    if (node) node->saved[0] = cs;
    return y;
}

int vlm_rope_backward(vlm_ctx *ctx, vlm_node *node) {
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, node->in[0], &fresh);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    rope_apply(node->in[0], node->out->grad, dx, node->saved[0], -1.0f, true, fresh);
    return 0;
}
