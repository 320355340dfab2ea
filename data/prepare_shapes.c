/* prepare_shapes.c - synthetic scenes of one to three coloured shapes with
 * compositional captions ("a small red circle left of a large blue square"),
 * the data set the captioning demo trains on. The caption grammar is in
 * data.h. Scene i of a seed comes from its own random stream, so scenes do
 * not depend on the count, the split or the thread count.
 *
 * Geometry, in units of the base size b (small: 0.08..0.10 S, large:
 * 0.15..0.18 S): a circle of radius b; a square of half side 0.886 b (the
 * circle's area); an upward equilateral triangle of circumradius 1.35 b
 * (centred on its centroid). Shapes keep a gap of 0.04 S between their
 * bounding circles and stay inside the image. Edges are antialiased from a
 * signed distance: coverage = clamp(0.5 - d, 0, 1) at each pixel centre. */
#include "prepare_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_SHAPES 0x5a4e5ULL
#define TRIES 200 /* placements tried before dropping a shape */
#define SQUARE_HALF 0.886f
#define TRIANGLE_R 1.35f

const char *const vlm_shape_kind_names[VLM_SHAPE_KINDS] = {"circle", "square", "triangle"};
const char *const vlm_shape_color_names[VLM_SHAPE_COLORS] = {"red",    "green",  "blue",
                                                            "yellow", "purple", "orange"};
const uint8_t vlm_shape_color_rgb[VLM_SHAPE_COLORS][3] = {
    {220, 30, 30}, {30, 160, 50}, {30, 70, 220}, {235, 200, 20}, {130, 50, 170}, {245, 130, 20},
};

/* Bounding-circle radius per unit of base size. */
static float extent_per_base(vlm_shape_kind k) {
    return k == VLM_SHAPE_CIRCLE ? 1.0f : k == VLM_SHAPE_SQUARE ? SQUARE_HALF * 1.41421356f : TRIANGLE_R;
}

static float uniform(uint64_t *rng, float lo, float hi) {
    return lo + (hi - lo) * (float)((double)(prep_rng_next(rng) >> 11) * (1.0 / 9007199254740992.0));
}

const char *vlm_shape_relation(const vlm_shape *a, const vlm_shape *b) {
    float dx = a->cx - b->cx, dy = a->cy - b->cy;
    if (fabsf(dx) > fabsf(dy)) return dx < 0 ? "left of" : "right of";
    return dy < 0 ? "above" : "below";
}

/* The relation is clear when the main axis offset is >= twice the other. */
static bool clear_relation(const vlm_shape *a, const vlm_shape *b) {
    float dx = fabsf(a->cx - b->cx), dy = fabsf(a->cy - b->cy);
    return dx >= 2 * dy || dy >= 2 * dx;
}

/* One attempt at n shapes: false when they overlap or a relation is unclear. */
static bool try_scene(uint64_t *rng, int size, int n, vlm_shape_scene *sc) {
    int colors[VLM_SHAPE_COLORS];
    for (int c = 0; c < VLM_SHAPE_COLORS; c++) colors[c] = c;
    for (int i = 0; i < n; i++) { /* distinct colours: a partial shuffle */
        int j = i + (int)(prep_rng_next(rng) % (uint64_t)(VLM_SHAPE_COLORS - i)), t = colors[i];
        colors[i] = colors[j], colors[j] = t;
    }
    float s = (float)size, gap = 0.04f * s;
    for (int i = 0; i < n; i++) {
        vlm_shape *sh = &sc->shapes[i];
        sh->kind = (vlm_shape_kind)(prep_rng_next(rng) % VLM_SHAPE_KINDS);
        sh->color = colors[i];
        sh->large = prep_rng_next(rng) >> 63;
        float base = sh->large ? uniform(rng, 0.15f, 0.18f) * s : uniform(rng, 0.08f, 0.10f) * s;
        sh->extent = base * extent_per_base(sh->kind);
        sh->cx = uniform(rng, sh->extent + 1, s - 1 - sh->extent);
        sh->cy = uniform(rng, sh->extent + 1, s - 1 - sh->extent);
        for (int j = 0; j < i; j++)
            if (hypotf(sh->cx - sc->shapes[j].cx, sh->cy - sc->shapes[j].cy) <
                sh->extent + sc->shapes[j].extent + gap)
                return false;
    }
    sc->n = n;
    return (n < 2 || clear_relation(&sc->shapes[0], &sc->shapes[1])) &&
           (n < 3 || clear_relation(&sc->shapes[2], &sc->shapes[1]));
}

int vlm_shape_scene_make(uint64_t seed, int64_t index, int size, vlm_shape_scene *sc) {
    if (!sc || size < 16 || size > 4096)
        return vlm_set_error("shapes: image size %d is not in 16..4096", size);
    memset(sc, 0, sizeof *sc);
    uint64_t rng = prep_item_rng(seed, STREAM_SHAPES, index);
    sc->background = (uint8_t)(190 + prep_rng_next(&rng) % 61);
    int n = 1 + (int)(prep_rng_next(&rng) % 3);
    /* Three large shapes do not always fit: after TRIES failures, one fewer. */
    for (; n > 1; n--)
        for (int t = 0; t < TRIES; t++)
            if (try_scene(&rng, size, n, sc)) return 0;
    try_scene(&rng, size, 1, sc); /* one shape always fits */
    return 0;
}

/* Signed distance (pixels) from (x, y) to the shape's edge, negative inside. */
static float shape_sdf(const vlm_shape *sh, float x, float y) {
    float dx = x - sh->cx, dy = y - sh->cy, b = sh->extent / extent_per_base(sh->kind);
    switch (sh->kind) {
    case VLM_SHAPE_CIRCLE: return hypotf(dx, dy) - b;
    case VLM_SHAPE_SQUARE: return fmaxf(fabsf(dx), fabsf(dy)) - SQUARE_HALF * b;
    default: { /* three half-planes; y grows downwards, the apex points up */
        float r = TRIANGLE_R * b, e1 = 0.8660254f * dx - 0.5f * dy, e2 = -0.8660254f * dx - 0.5f * dy;
        return fmaxf(dy, fmaxf(e1, e2)) - 0.5f * r;
    }
    }
}

static void draw_shape(const vlm_shape *sh, int size, vlm_image *img) {
    const uint8_t *col = vlm_shape_color_rgb[sh->color];
    int x0 = (int)floorf(sh->cx - sh->extent) - 1, x1 = (int)ceilf(sh->cx + sh->extent) + 1;
    int y0 = (int)floorf(sh->cy - sh->extent) - 1, y1 = (int)ceilf(sh->cy + sh->extent) + 1;
    for (int y = y0 < 0 ? 0 : y0; y <= y1 && y < size; y++) {
        for (int x = x0 < 0 ? 0 : x0; x <= x1 && x < size; x++) {
            float cov = 0.5f - shape_sdf(sh, (float)x + 0.5f, (float)y + 0.5f);
            if (cov <= 0) continue;
            if (cov > 1) cov = 1;
            uint8_t *p = img->rgb + ((size_t)y * (size_t)size + (size_t)x) * 3;
            for (int c = 0; c < 3; c++) p[c] = (uint8_t)lrintf((float)p[c] + ((float)col[c] - (float)p[c]) * cov);
        }
    }
}

int vlm_shape_scene_render(const vlm_shape_scene *sc, int size, vlm_image *out) {
    if (!sc || sc->n < 1 || sc->n > 3 || size < 16 || size > 4096)
        return vlm_set_error("shapes: bad scene or image size %d", size);
    if (vlm_image_alloc(out, size, size)) return -1;
    memset(out->rgb, sc->background, (size_t)size * (size_t)size * 3);
    for (int i = 0; i < sc->n; i++) draw_shape(&sc->shapes[i], size, out);
    return 0;
}

/* "small red circle" (no article: the caller adds "a" or "the") */
static const char *noun(const vlm_shape *s, char *buf, size_t n) {
    snprintf(buf, n, "%s %s %s", s->large ? "large" : "small", vlm_shape_color_names[s->color],
             vlm_shape_kind_names[s->kind]);
    return buf;
}

int vlm_shape_scene_caption(const vlm_shape_scene *sc, char *buf, size_t cap) {
    if (!sc || sc->n < 1 || sc->n > 3) return vlm_set_error("shapes: bad scene");
    char a[48], b[48], c[48];
    const vlm_shape *s = sc->shapes;
    int len;
    if (sc->n == 1)
        len = snprintf(buf, cap, "a %s", noun(&s[0], a, sizeof a));
    else if (sc->n == 2)
        len = snprintf(buf, cap, "a %s %s a %s", noun(&s[0], a, sizeof a),
                       vlm_shape_relation(&s[0], &s[1]), noun(&s[1], b, sizeof b));
    else
        len = snprintf(buf, cap, "a %s %s a %s and a %s %s the %s", noun(&s[0], a, sizeof a),
                       vlm_shape_relation(&s[0], &s[1]), noun(&s[1], b, sizeof b),
                       noun(&s[2], c, sizeof c), vlm_shape_relation(&s[2], &s[1]), b);
    if (len < 0 || (size_t)len >= cap) return vlm_set_error("shapes: caption buffer of %zu bytes is too small", cap);
    return 0;
}

/* ---- the prepare source ------------------------------------------------------- */

typedef struct {
    uint64_t seed;
    vlm_shape_scene scenes[PREP_BATCH];
} shapes_ctx;

static void sh_make(void *ctx, int64_t item, int slot, int size, prep_slot *out) {
    shapes_ctx *c = ctx;
    if (vlm_shape_scene_make(c->seed, item, size, &c->scenes[slot]) ||
        vlm_shape_scene_render(&c->scenes[slot], size, &out->img)) {
        out->status = -1;
        snprintf(out->why, sizeof out->why, "%s", vlm_last_error());
    }
}

static int32_t sh_label(void *ctx, int64_t item, int slot) {
    (void)item;
    return (int32_t)((shapes_ctx *)ctx)->scenes[slot].shapes[0].kind;
}

static int sh_captions(void *ctx, int64_t item, int slot, prep_sink *s) {
    (void)item;
    char buf[160];
    if (vlm_shape_scene_caption(&((shapes_ctx *)ctx)->scenes[slot], buf, sizeof buf)) return -1;
    return prep_caption(s, buf);
}

int prep_shapes(const vlm_prepare_opts *o, vlm_prepare_report *r) {
    if (o->count <= 0) return vlm_set_error("shapes: --count N (>= 1) is required");
    shapes_ctx *c = calloc(1, sizeof *c);
    if (!c) return vlm_set_error("shapes: out of memory");
    c->seed = o->seed;
    prep_source src = {.n_items = o->count, .default_size = 64,
                       .class_names = vlm_shape_kind_names, .n_classes = VLM_SHAPE_KINDS,
                       .ctx = c, .make = sh_make, .label = sh_label, .captions = sh_captions};
    snprintf(src.description, sizeof src.description, "shapes seed=%llu", (unsigned long long)o->seed);
    int rc = prep_run(o, &src, r);
    free(c);
    return rc;
}
