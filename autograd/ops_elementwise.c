/* ops_elementwise.c - add, sub, mul, div with numpy broadcasting, and scale.
 *
 * Broadcasting is planned once per call: the shapes are aligned from the
 * right, output dims of size 1 are dropped, and neighbouring dims that both
 * operands treat the same way (both kept, or both stretched) are merged. What
 * is left is at most 4 dims whose innermost has stride 1 or 0 in each operand,
 * so the hot cases become short loops without per-element index math:
 *   same shape      [B,T,D] + [B,T,D]  -> [N],     strides a (1),   b (1)
 *   suffix operand  [B,T,D] + [D]      -> [BT, D], strides a (D,1), b (0,1)
 *   stretched rows  [B,T,D] * [B,T,1]  -> [BT, D], strides a (D,1), b (1,0)
 * and any other broadcast walks the (<= 3) outer merged dims per row.
 *
 * Work is split into tiles (a row, or a piece of a long row) that depend only
 * on the shapes, and every reduced gradient element is summed in a fixed order
 * (in double), so results do not depend on the number of threads. */
#include "internal.h"

/* ---- broadcast plan ---------------------------------------------------------- */

typedef struct {
    int64_t n[4];  /* merged output dims, right-aligned, leading 1s */
    int64_t sa[4]; /* element strides of a per merged dim, 0 where a is stretched */
    int64_t sb[4];
    int64_t numel;
} bc_plan;

/* dim i of t counted from the right (0 = innermost); 1 where t has fewer dims */
static int64_t dim_from_right(const vlm_tensor *t, int i) {
    return i < t->ndim ? t->shape[t->ndim - 1 - i] : 1;
}

/* Fills the output shape and the merged plan; false with an error naming the
 * op and both shapes if they do not broadcast. */
static bool plan_make(const char *op, const vlm_tensor *a, const vlm_tensor *b, int *ndim,
                      int64_t shape[VLM_MAX_DIMS], bc_plan *p) {
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    int64_t sa_raw[VLM_MAX_DIMS], sb_raw[VLM_MAX_DIMS], stride_a = 1, stride_b = 1;
    p->numel = 1;
    for (int i = 0; i < nd; i++) { /* i counts from the right */
        int64_t da = dim_from_right(a, i), db = dim_from_right(b, i);
        if (da != db && da != 1 && db != 1) {
            char sa[64], sb[64];
            vlm_set_error("%s: shapes %s and %s do not broadcast", op,
                          vlm_shape_str(a, sa, sizeof sa), vlm_shape_str(b, sb, sizeof sb));
            return false;
        }
        int64_t d = da == 1 ? db : da;
        shape[nd - 1 - i] = d;
        sa_raw[nd - 1 - i] = da == d ? stride_a : 0;
        sb_raw[nd - 1 - i] = db == d ? stride_b : 0;
        stride_a *= da;
        stride_b *= db;
        p->numel *= d;
    }
    *ndim = nd;
    /* merge, outermost first: dim d folds into the merged dim m before it when
     * i_m s_m + i_d s_d == (i_m n_d + i_d) s_d, i.e. s_m == n_d s_d, for both
     * operands (true when both are kept, or both stretched with stride 0) */
    int64_t n[VLM_MAX_DIMS], sa[VLM_MAX_DIMS], sb[VLM_MAX_DIMS];
    int m = 0;
    for (int d = 0; d < nd; d++) {
        if (shape[d] == 1) continue;
        if (m > 0 && sa[m - 1] == sa_raw[d] * shape[d] && sb[m - 1] == sb_raw[d] * shape[d]) {
            n[m - 1] *= shape[d];
        } else {
            n[m] = shape[d];
            m++;
        }
        sa[m - 1] = sa_raw[d];
        sb[m - 1] = sb_raw[d];
    }
    for (int d = 0; d < 4; d++) { /* right-align; padding dims have size 1 */
        int src = d - (4 - m);
        p->n[d] = src >= 0 ? n[src] : 1;
        p->sa[d] = src >= 0 ? sa[src] : 1;
        p->sb[d] = src >= 0 ? sb[src] : 1;
    }
    return true;
}

/* Offsets of a and b at the start of output row r (rows = the 3 outer dims). */
static void plan_row(const bc_plan *p, int64_t r, int64_t *oa, int64_t *ob) {
    int64_t i2 = r % p->n[2], i1 = (r / p->n[2]) % p->n[1], i0 = r / (p->n[2] * p->n[1]);
    *oa = i0 * p->sa[0] + i1 * p->sa[1] + i2 * p->sa[2];
    *ob = i0 * p->sb[0] + i1 * p->sb[1] + i2 * p->sb[2];
}

#define TILE 1024 /* elements per parallel work item of a row */

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }

/* ---- row kernels: one per op, specialised on the inner strides (1 or 0) ------ */

typedef void (*row_fwd_fn)(const float *a, int64_t sa, const float *b, int64_t sb, float *y,
                           int64_t n);

#define VLM_ROW_FWD(name, expr)                                                        \
    static void name(const float *restrict a, int64_t sa, const float *restrict b,     \
                     int64_t sb, float *restrict y, int64_t n) {                       \
        if (sa && sb) {                                                                \
            for (int64_t k = 0; k < n; k++) { float A = a[k], B = b[k]; y[k] = expr; } \
        } else if (sa) {                                                               \
            float B = b[0];                                                            \
            for (int64_t k = 0; k < n; k++) { float A = a[k]; y[k] = expr; }           \
        } else {                                                                       \
            float A = a[0];                                                            \
            for (int64_t k = 0; k < n; k++) { float B = b[k]; y[k] = expr; }           \
        }                                                                              \
    }
VLM_ROW_FWD(row_add, A + B)
VLM_ROW_FWD(row_sub, A - B)
VLM_ROW_FWD(row_mul, A * B)
VLM_ROW_FWD(row_div, A / B)

/* Backward contribution of one operand over a row piece: t = dy * dy/d(operand)
 * at each output element, before any reduction. Y is the forward output. */
typedef void (*row_bwd_fn)(const float *dy, const float *a, int64_t sa, const float *b,
                           int64_t sb, const float *y, float *t, int64_t n);

#define VLM_ROW_BWD(name, expr)                                                        \
    static void name(const float *restrict dy, const float *restrict a, int64_t sa,    \
                     const float *restrict b, int64_t sb, const float *restrict y,     \
                     float *restrict t, int64_t n) {                                   \
        (void)a, (void)b, (void)y;                                                     \
        for (int64_t k = 0; k < n; k++) {                                              \
            float A = a[k * sa], B = b[k * sb], Y = y[k];                              \
            (void)A, (void)B, (void)Y;                                                 \
            t[k] = dy[k] * (expr);                                                     \
        }                                                                              \
    }
VLM_ROW_BWD(grad_pos, 1.0f)     /* add: da, db; sub: da */
VLM_ROW_BWD(grad_neg, -1.0f)    /* sub: db */
VLM_ROW_BWD(grad_mul_a, B)      /* mul: da = dy b */
VLM_ROW_BWD(grad_mul_b, A)      /* mul: db = dy a */
VLM_ROW_BWD(grad_div_a, 1.0f / B) /* div: da = dy / b */
VLM_ROW_BWD(grad_div_b, -Y / B) /* div: db = -dy a / b^2 = -dy y / b */

/* ---- shared forward ----------------------------------------------------------- */

static vlm_tensor *binary_forward(vlm_ctx *ctx, vlm_op op, const char *name, row_fwd_fn row,
                                  vlm_tensor *a, vlm_tensor *b) {
    VLM_PROPAGATE_NULL(a, b);
    if (!vlm_check_f32(name, a, "a") || !vlm_check_f32(name, b, "b")) return NULL;
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    bc_plan p;
    if (!plan_make(name, a, b, &ndim, shape, &p)) return NULL;
    vlm_tensor *y = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    if (!y) return NULL;
    if (p.numel > 0) {
        const float *av = vlm_f32(a), *bv = vlm_f32(b);
        float *yv = vlm_f32(y);
        int64_t n3 = p.n[3], pieces = (n3 + TILE - 1) / TILE, tiles = p.numel / n3 * pieces;
#pragma omp parallel for if (p.numel >= VLM_PAR_MIN)
        for (int64_t t = 0; t < tiles; t++) {
            int64_t r = t / pieces, k0 = t % pieces * TILE, oa, ob;
            int64_t len = min64(n3 - k0, TILE);
            plan_row(&p, r, &oa, &ob);
            row(av + oa + k0 * p.sa[3], p.sa[3], bv + ob + k0 * p.sb[3], p.sb[3],
                yv + r * n3 + k0, len);
        }
    }
    vlm_tensor *in[2] = {a, b};
    VLM_RECORD(node, ctx, op, y, in, 2);
    (void)node;
    return y;
}

/* ---- shared backward ----------------------------------------------------------- */

/* What a backward pass over one operand x reads. */
typedef struct {
    const bc_plan *p;
    const int64_t *sx; /* x's strides in the plan (p->sa or p->sb) */
    row_bwd_fn fn;     /* x's contribution per output element */
    const float *dy, *a, *b, *y;
} grad_job;

/* Operand with the output's shape: gx[o] += t[o], tile by tile (keep: see
 * vlm_grad_keep). */
static void grad_full(const grad_job *j, float *gx, float keep) {
    const bc_plan *p = j->p;
    int64_t n3 = p->n[3], pieces = (n3 + TILE - 1) / TILE, tiles = p->numel / n3 * pieces;
#pragma omp parallel for if (p->numel >= VLM_PAR_MIN)
    for (int64_t t = 0; t < tiles; t++) {
        int64_t r = t / pieces, k0 = t % pieces * TILE, oa, ob;
        int64_t len = min64(n3 - k0, TILE), o = r * n3 + k0;
        float buf[TILE];
        plan_row(p, r, &oa, &ob);
        j->fn(j->dy + o, j->a + oa + k0 * p->sa[3], p->sa[3], j->b + ob + k0 * p->sb[3],
              p->sb[3], j->y + o, buf, len);
        for (int64_t k = 0; k < len; k++) gx[o + k] = VLM_OLD(keep, gx[o + k]) + buf[k];
    }
}

#define COLS 256     /* output columns summed together by one reduction task */
#define SLICES 64    /* a reduction is split until it has about this many tasks */
#define SLICE_MIN 16384 /* ... as long as each task keeps this many elements */

/* Sums, into acc, the contributions of output rows q0..q1-1 of the preimage
 * of x-row xr, columns [k0, k0 + len): the outer coords are fixed where x is
 * kept and enumerate q where x is stretched. If x is stretched in the inner
 * dim too, every column adds into acc[0]. */
static void reduce_rows(const grad_job *j, int64_t xr, int64_t q0, int64_t q1, int64_t k0,
                        int64_t len, double *acc) {
    const bc_plan *p = j->p;
    const int64_t *sx = j->sx;
    int64_t xc[3];
    for (int d = 2; d >= 0; d--) {
        xc[d] = sx[d] ? xr % p->n[d] : 0;
        xr = sx[d] ? xr / p->n[d] : xr;
    }
    float t[COLS];
    for (int64_t q = q0; q < q1; q++) {
        int64_t i[3], rest = q;
        for (int d = 2; d >= 0; d--) {
            i[d] = sx[d] ? xc[d] : rest % p->n[d];
            rest = sx[d] ? rest : rest / p->n[d];
        }
        int64_t o = ((i[0] * p->n[1] + i[1]) * p->n[2] + i[2]) * p->n[3] + k0;
        int64_t oa = i[0] * p->sa[0] + i[1] * p->sa[1] + i[2] * p->sa[2] + k0 * p->sa[3];
        int64_t ob = i[0] * p->sb[0] + i[1] * p->sb[1] + i[2] * p->sb[2] + k0 * p->sb[3];
        j->fn(j->dy + o, j->a + oa, p->sa[3], j->b + ob, p->sb[3], j->y + o, t, len);
        if (sx[3])
            for (int64_t k = 0; k < len; k++) acc[k] += t[k];
        else
            for (int64_t k = 0; k < len; k++) acc[0] += t[k];
    }
}

/* One reduction task: x-row xr, column block cb (x keeps the inner dim) and
 * slice s of S. Slices split the stretched outer rows when x keeps the inner
 * dim, else the inner columns, which x then sums. */
static void reduce_task(const grad_job *j, int64_t xr, int64_t cb, int64_t s, int64_t S,
                        int64_t R, double *acc) {
    int64_t n3 = j->p->n[3];
    if (j->sx[3]) {
        int64_t k0 = cb * COLS, len = min64(n3 - k0, COLS);
        reduce_rows(j, xr, R * s / S, R * (s + 1) / S, k0, len, acc);
    } else {
        int64_t c1 = n3 * (s + 1) / S;
        for (int64_t k0 = n3 * s / S; k0 < c1; k0 += COLS)
            reduce_rows(j, xr, 0, R, k0, min64(c1 - k0, COLS), acc);
    }
}

/* Stretched operand: every x element sums its preimage in the output, in an
 * order fixed by the shapes. Tasks are (x-row, column block); when there are
 * few, each is cut into S slices whose partial sums (arena, double) are added
 * up in slice order. */
static int grad_reduce(vlm_ctx *ctx, const grad_job *j, int64_t xnumel, float *gx,
                       float keep) {
    const bc_plan *p = j->p;
    int64_t n3 = p->n[3], xcols = j->sx[3] ? n3 : 1, R = 1;
    for (int d = 0; d < 3; d++) R *= j->sx[d] ? 1 : p->n[d];
    int64_t blocks = j->sx[3] ? (n3 + COLS - 1) / COLS : 1, tasks = xnumel / xcols * blocks;
    int64_t split = j->sx[3] ? R : n3, S = 1;
    while (S * 2 <= split && tasks * S * 2 <= SLICES && p->numel / (tasks * S * 2) >= SLICE_MIN)
        S *= 2;
    double *part = S > 1 ? vlm_arena_alloc(ctx, (size_t)(S * xnumel) * sizeof(double)) : NULL;
    if (S > 1 && !part) return -1;
#pragma omp parallel for if (p->numel >= VLM_PAR_MIN)
    for (int64_t task = 0; task < tasks * S; task++) {
        int64_t s = task % S, xr = task / S / blocks, cb = task / S % blocks;
        int64_t e0 = xr * xcols + cb * COLS, len = min64(xcols - cb * COLS, COLS);
        double acc[COLS];
        for (int64_t k = 0; k < len; k++) acc[k] = 0;
        reduce_task(j, xr, cb, s, S, R, acc);
        for (int64_t k = 0; k < len; k++) {
            if (S > 1)
                part[s * xnumel + e0 + k] = acc[k];
            else
                gx[e0 + k] = VLM_OLD(keep, gx[e0 + k]) + (float)acc[k];
        }
    }
    for (int64_t e = 0; S > 1 && e < xnumel; e++) {
        double sum = 0;
        for (int64_t s = 0; s < S; s++) sum += part[s * xnumel + e];
        gx[e] = VLM_OLD(keep, gx[e]) + (float)sum;
    }
    return 0;
}

/* da += reduce(dy * fa), db += reduce(dy * fb), each over its stretched dims.
 * a and b may be the same tensor (mul(x, x)): its grad is fetched again for
 * the second pass, which then adds to the first. b goes first: when da is dy
 * itself (add, sub), a can then take dy's buffer instead of a copy. */
static int binary_backward(vlm_ctx *ctx, vlm_node *node, const char *name, row_bwd_fn fa,
                           row_bwd_fn fb) {
    vlm_tensor *a = node->in[0], *b = node->in[1];
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    bc_plan p;
    if (!plan_make(name, a, b, &ndim, shape, &p)) return -1;
    if (p.numel == 0) return 0;
    for (int i = 1; i >= 0; i--) {
        vlm_tensor *x = node->in[i];
        if (i == 0 && fa == grad_pos && a != b && vlm_grad_steal(ctx, a, node->out)) break;
        bool fresh;
        float *gx = vlm_input_grad_raw(ctx, x, &fresh);
        if (!gx) {
            if (x->requires_grad) return -1;
            continue;
        }
        grad_job j = {&p, i == 0 ? p.sa : p.sb, i == 0 ? fa : fb, node->out->grad,
                      vlm_f32(a), vlm_f32(b), vlm_f32(node->out)};
        if (x->numel == p.numel)
            grad_full(&j, gx, vlm_grad_keep(fresh));
        else if (grad_reduce(ctx, &j, x->numel, gx, vlm_grad_keep(fresh)) != 0)
            return -1;
    }
    return 0;
}

/* ---- add: y = a + b;  da += dy, db += dy ----------------------------------------- */

vlm_tensor *vlm_add(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b) {
    return binary_forward(ctx, VLM_OP_ADD, "add", row_add, a, b);
}

int vlm_add_backward(vlm_ctx *ctx, vlm_node *node) {
    return binary_backward(ctx, node, "add", grad_pos, grad_pos);
}

/* ---- sub: y = a - b;  da += dy, db -= dy ----------------------------------------- */

vlm_tensor *vlm_sub(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b) {
    return binary_forward(ctx, VLM_OP_SUB, "sub", row_sub, a, b);
}

int vlm_sub_backward(vlm_ctx *ctx, vlm_node *node) {
    return binary_backward(ctx, node, "sub", grad_pos, grad_neg);
}

/* ---- mul: y = a b;  da += dy b, db += dy a --------------------------------------- */

vlm_tensor *vlm_mul(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b) {
    return binary_forward(ctx, VLM_OP_MUL, "mul", row_mul, a, b);
}

int vlm_mul_backward(vlm_ctx *ctx, vlm_node *node) {
    return binary_backward(ctx, node, "mul", grad_mul_a, grad_mul_b);
}

/* ---- div: y = a / b;  da += dy / b, db -= dy a / b^2 (= dy y / b) ------------------
 * IEEE semantics like torch: x / 0 is +-inf, 0 / 0 is NaN. */

vlm_tensor *vlm_div(vlm_ctx *ctx, vlm_tensor *a, vlm_tensor *b) {
    return binary_forward(ctx, VLM_OP_DIV, "div", row_div, a, b);
}

int vlm_div_backward(vlm_ctx *ctx, vlm_node *node) {
    return binary_backward(ctx, node, "div", grad_div_a, grad_div_b);
}

/* ---- scale: y = s x;  dx += s dy ------------------------------------------ */

vlm_tensor *vlm_scale(vlm_ctx *ctx, vlm_tensor *a, float s) {
    VLM_PROPAGATE_NULL(a);
    if (!vlm_check_f32("scale", a, "input")) return NULL;
    vlm_tensor *y = vlm_new_like(ctx, a);
    if (!y) return NULL;
    const float *x = vlm_f32(a);
    float *o = vlm_f32(y);
#pragma omp parallel for if (a->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < a->numel; i++) o[i] = s * x[i];
    VLM_RECORD(node, ctx, VLM_OP_SCALE, y, &a, 1);
    if (node) node->farg[0] = s;
    return y;
}

int vlm_scale_backward(vlm_ctx *ctx, vlm_node *node) {
    bool fresh;
    float *dx = vlm_input_grad_raw(ctx, node->in[0], &fresh);
    if (!dx) return node->in[0]->requires_grad ? -1 : 0;
    const float *dy = node->out->grad;
    float s = node->farg[0], keep = vlm_grad_keep(fresh);
#pragma omp parallel for if (node->out->numel >= VLM_PAR_MIN)
    for (int64_t i = 0; i < node->out->numel; i++) dx[i] = VLM_OLD(keep, dx[i]) + s * dy[i];
    return 0;
}
