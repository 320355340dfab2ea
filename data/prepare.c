/* prepare.c - the `prepare` driver: option checks, the deterministic
 * train/val split, batched parallel decoding, writing through the dataset
 * writer (temp file + rename), skip accounting and progress; plus the class
 * caption templates shared with zero-shot evaluation. The sources live in
 * prepare_fmnist.c, prepare_shapes.c, prepare_folder.c and prepare_coco.c. */
#include "prepare_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_SIZE 4096
#define STREAM_SPLIT 0x5e1ec7ULL
#define PLAIN_PROGRESS_EVERY 10.0 /* seconds between progress lines when not on a tty */

/* ---- class caption templates ------------------------------------------------ */

/* CLIP-style prompts that stay true for small grey product photos. */
const char *const vlm_class_templates[VLM_CLASS_TEMPLATES] = {
    "a photo of {}",
    "a black and white photo of {}",
    "a low resolution photo of {}",
    "a picture of {}",
    "an image of {}",
    "a grayscale photo of {}",
    "a small photo of {}",
    "a close-up photo of {}",
};

const char *const vlm_fmnist_class_names[VLM_FMNIST_CLASSES] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot",
};

char *vlm_class_caption(const char *tmpl, const char *class_name) {
    if (!tmpl || !class_name || !*class_name) {
        vlm_set_error("class caption: NULL template or empty class name");
        return NULL;
    }
    const char *hole = strstr(tmpl, "{}");
    if (!hole) {
        vlm_set_error("class caption: template '%s' has no {}", tmpl);
        return NULL;
    }
    char first = class_name[0] >= 'A' && class_name[0] <= 'Z' ? (char)(class_name[0] + 32) : class_name[0];
    const char *article = strchr("aeiou", first) ? "an " : "a ";
    size_t n = strlen(tmpl) + strlen(class_name) + 4;
    char *out = malloc(n), *p = out;
    if (!out) {
        vlm_set_error("class caption: out of memory");
        return NULL;
    }
    p += snprintf(p, n, "%.*s%s", (int)(hole - tmpl), tmpl, article);
    for (const char *c = class_name; *c; c++) *p++ = *c >= 'A' && *c <= 'Z' ? (char)(*c + 32) : *c;
    strcpy(p, hole + 2);
    return out;
}

/* ---- small shared helpers ------------------------------------------------------ */

uint64_t prep_rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* An independent stream per (seed, purpose, item): mixing each part through
 * splitmix keeps nearby seeds and items uncorrelated. */
uint64_t prep_item_rng(uint64_t seed, uint64_t stream, int64_t item) {
    uint64_t s = seed;
    uint64_t a = prep_rng_next(&s) ^ stream;
    a = prep_rng_next(&a) ^ (uint64_t)item;
    return prep_rng_next(&a);
}

void prep_note_reason(vlm_prepare_report *r, const char *msg) {
    if (r->n_reasons < VLM_PREPARE_MAX_REASONS)
        snprintf(r->reasons[r->n_reasons++], sizeof r->reasons[0], "%s", msg);
}

int prep_ignore(vlm_prepare_report *r, bool strict, const char *fmt, ...) {
    char msg[PREP_WHY];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (strict) return vlm_set_error("%s (--strict)", msg);
    r->ignored_captions++;
    prep_note_reason(r, msg);
    return 0;
}

void prep_slot_skip(prep_slot *s) {
    s->status = 1;
    snprintf(s->why, sizeof s->why, "%s", vlm_last_error());
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

char *vlm_prepare_val_path(const char *output) {
    size_t n = strlen(output);
    char *p = malloc(n + 5);
    if (!p) return NULL;
    if (n > 3 && !strcmp(output + n - 3, ".h5"))
        snprintf(p, n + 5, "%.*s-val.h5", (int)(n - 3), output);
    else
        snprintf(p, n + 5, "%s-val", output);
    return p;
}

/* ---- progress ---------------------------------------------------------------- */

typedef struct {
    bool on, tty, printed; /* printed: an unfinished line is on the terminal */
    int64_t total;
    double t0, last;
} progress;

static void format_eta(double s, char *buf, size_t n) {
    long t = s < 0 || !isfinite(s) ? 0 : (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* On a terminal: one line rewritten at most 10 times a second. Otherwise
 * (a log file) a plain line every PLAIN_PROGRESS_EVERY seconds. */
static void progress_update(progress *p, int64_t done, bool final) {
    if (!p->on) return;
    double t = now_s(), el = t - p->t0;
    if (!final && t - p->last < (p->tty ? 0.1 : PLAIN_PROGRESS_EVERY)) return;
    p->last = t;
    p->printed = p->tty && !final;
    double rate = el > 0 ? (double)done / el : 0;
    char eta[32];
    format_eta(rate > 0 ? (double)(p->total - done) / rate : 0, eta, sizeof eta);
    int pct = p->total ? (int)(100 * done / p->total) : 100;
    if (p->tty)
        fprintf(stderr, "\r\033[Kprepare: %lld/%lld images %3d%%  %.0f img/s  ETA %s%s",
                (long long)done, (long long)p->total, pct, rate, eta, final ? "\n" : "");
    else
        fprintf(stderr, "prepare: %lld/%lld images (%d%%), %.0f img/s, ETA %s\n", (long long)done,
                (long long)p->total, pct, rate, eta);
    fflush(stderr);
}

/* ---- the split ----------------------------------------------------------------- */

/* Marks exactly k = round(f * n) items as held out: the first k positions of
 * a seeded Fisher-Yates shuffle. Deterministic for (seed, n, f). */
static int choose_val(int64_t n, double f, uint64_t seed, uint8_t **is_val, int64_t *k) {
    *k = (int64_t)llround(f * (double)n);
    *is_val = calloc((size_t)n, 1);
    int64_t *perm = *k ? malloc((size_t)n * sizeof *perm) : NULL;
    if (!*is_val || (*k && !perm)) {
        free(perm);
        return vlm_set_error("prepare: out of memory for the split of %lld items", (long long)n);
    }
    uint64_t rng = prep_item_rng(seed, STREAM_SPLIT, 0);
    for (int64_t i = 0; *k && i < n; i++) perm[i] = i;
    for (int64_t i = 0; i < *k; i++) {
        int64_t j = i + (int64_t)(prep_rng_next(&rng) % (uint64_t)(n - i));
        int64_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
        (*is_val)[perm[i]] = 1;
    }
    free(perm);
    return 0;
}

/* ---- the run ------------------------------------------------------------------- */

struct prep_sink {
    const vlm_prepare_opts *o;
    const prep_source *src;
    vlm_prepare_report *r;
    vlm_dataset_writer *w[2]; /* train, val (NULL without a val part) */
    const char *path[2];
    uint8_t *is_val;
    int size;                 /* S, or VLM_PREPARE_KEEP_SIZE */
    int part;                 /* the current item's file */
    int64_t image;            /* the current item's index in that file */
    prep_slot slots[PREP_BATCH];
    progress prog;
};

int prep_caption(prep_sink *s, const char *text) {
    if (vlm_dataset_writer_add_caption(s->w[s->part], text, s->image) < 0) return -1;
    if (s->part) s->r->val_captions++;
    else s->r->captions++;
    return 0;
}

/* Central square crop of the shorter side, resized to S x S (bicubic,
 * antialiased when shrinking): the same geometry as torchvision's
 * Resize(S) + CenterCrop(S), with one resampling instead of two. */
static int fit_square(vlm_image *img, int size) {
    if (img->width == size && img->height == size) return 0;
    int m = img->width < img->height ? img->width : img->height;
    vlm_rect box = vlm_center_crop_box(img->width, img->height, m, m);
    vlm_image out;
    if (vlm_image_resize(img, &box, size, size, VLM_RESIZE_BICUBIC, &out)) return -1;
    vlm_image_free(img);
    *img = out;
    return 0;
}

/* Parallel part for one item: the source's make(), then fit and encode. */
static void make_slot(prep_sink *s, int64_t item, int k) {
    prep_slot *sl = &s->slots[k];
    memset(sl, 0, sizeof *sl);
    s->src->make(s->src->ctx, item, k, s->size, sl);
    if (sl->status || !sl->img.rgb) return;
    int rc = fit_square(&sl->img, s->size);
    if (!rc && s->o->jpeg) {
        rc = vlm_image_encode_jpeg(&sl->img, s->o->jpeg_quality ? s->o->jpeg_quality : 90,
                                   &sl->blob, &sl->blob_size);
        vlm_image_free(&sl->img);
    }
    if (rc) {
        sl->status = -1;
        snprintf(sl->why, sizeof sl->why, "%s", vlm_last_error());
    }
}

static void free_slot(prep_slot *sl) {
    vlm_image_free(&sl->img);
    free(sl->blob);
    sl->blob = NULL;
}

/* Sequential part for one item: skip accounting or image + label + captions. */
static int emit_slot(prep_sink *s, int64_t item, int k) {
    prep_slot *sl = &s->slots[k];
    if (sl->status < 0) return vlm_set_error("%s", sl->why);
    if (sl->status > 0) {
        if (s->o->strict) return vlm_set_error("%s (--strict)", sl->why);
        s->r->skipped++;
        prep_note_reason(s->r, sl->why);
        return 0;
    }
    s->part = s->is_val[item];
    int32_t label = s->src->n_classes ? s->src->label(s->src->ctx, item, k) : -1;
    vlm_dataset_writer *w = s->w[s->part];
    s->image = sl->blob ? vlm_dataset_writer_add_encoded(w, sl->blob, sl->blob_size, label)
                        : vlm_dataset_writer_add_image(w, &sl->img, label);
    if (s->image < 0) return -1;
    if (s->part) s->r->val_images++;
    else s->r->images++;
    return s->src->captions(s->src->ctx, item, k, s);
}

static int run_batch(prep_sink *s, int64_t first, int count) {
    if (s->src->fetch && s->src->fetch(s->src->ctx, first, count)) return -1;
    bool par = !s->src->light || s->o->jpeg || s->size != s->src->default_size;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int k = 0; k < count; k++) make_slot(s, first + k, k);
    int rc = 0;
    for (int k = 0; k < count; k++) {
        if (!rc) rc = emit_slot(s, first + k, k);
        free_slot(&s->slots[k]);
    }
    return rc;
}

static int open_writers(prep_sink *s, int64_t n_val) {
    const vlm_prepare_opts *o = s->o;
    vlm_dataset_writer_opts wo = {
        .layout = o->jpeg ? VLM_DATASET_JPEG : VLM_DATASET_RAW,
        .height = s->size > 0 ? s->size : 0,
        .width = s->size > 0 ? s->size : 0,
        .image_size = s->size > 0 ? s->size : 0,
        .source = s->src->description,
        .labels = s->src->n_classes > 0,
        .jpeg_quality = o->jpeg_quality,
        .deflate = o->jpeg ? 0 : o->deflate,
    };
    for (int p = 0; p < (n_val ? 2 : 1); p++) {
        if (!(s->w[p] = vlm_dataset_writer_open(s->path[p], &wo))) return -1;
        if (s->src->n_classes &&
            vlm_dataset_writer_set_class_names(s->w[p], s->src->class_names, s->src->n_classes))
            return -1;
    }
    return 0;
}

/* Both parts must hold images before either file is moved into place. */
static int close_writers(prep_sink *s, int64_t n_val) {
    const vlm_prepare_report *r = s->r;
    if (!r->images || (n_val && !r->val_images))
        return vlm_set_error("prepare: no image of the %s part could be read (%lld skipped%s%s)",
                             r->images ? "val" : "train", (long long)r->skipped,
                             r->n_reasons ? "; first: " : "", r->n_reasons ? r->reasons[0] : "");
    for (int p = 0; p < 2; p++) {
        vlm_dataset_writer *w = s->w[p];
        s->w[p] = NULL;
        if (w && vlm_dataset_writer_close(w)) return -1;
    }
    return 0;
}

static int run_items(prep_sink *s, int64_t n) {
    for (int64_t first = 0; first < n; first += PREP_BATCH) {
        if (s->o->cancelled && s->o->cancelled())
            return vlm_set_error("prepare: interrupted after %lld of %lld items; nothing was written",
                                 (long long)first, (long long)n);
        int count = n - first < PREP_BATCH ? (int)(n - first) : PREP_BATCH;
        if (run_batch(s, first, count)) return -1;
        progress_update(&s->prog, first + count, false);
    }
    progress_update(&s->prog, n, true);
    return 0;
}

int prep_run(const vlm_prepare_opts *o, const prep_source *src, vlm_prepare_report *r) {
    int64_t n = o->limit > 0 && o->limit < src->n_items ? o->limit : src->n_items;
    if (n <= 0) return vlm_set_error("prepare: %s holds no items", src->description);
    prep_sink *s = calloc(1, sizeof *s);
    char *val_path = o->val_output ? NULL : vlm_prepare_val_path(o->output);
    if (!s || (!o->val_output && !val_path)) {
        free(s), free(val_path);
        return vlm_set_error("prepare: out of memory");
    }
    *s = (prep_sink){.o = o, .src = src, .r = r, .path = {o->output, o->val_output ? o->val_output : val_path}};
    s->size = o->image_size ? o->image_size : src->default_size;
    r->image_size = s->size > 0 ? s->size : 0;
    s->prog.on = o->progress, s->prog.tty = isatty(2), s->prog.total = n;
    s->prog.t0 = s->prog.last = now_s();
    int64_t n_val = 0;
    int rc = choose_val(n, o->val_fraction, o->seed, &s->is_val, &n_val);
    if (!rc && n_val == n)
        rc = vlm_set_error("prepare: --val-fraction %g holds out all %lld items", o->val_fraction,
                           (long long)n);
    if (!rc) rc = open_writers(s, n_val);
    if (!rc) rc = run_items(s, n);
    if (!rc) rc = close_writers(s, n_val);
    if (rc && s->prog.printed) fputc('\n', stderr); /* end the progress line */
    for (int p = 0; p < 2; p++) vlm_dataset_writer_abort(s->w[p]);
    free(s->is_val), free(s), free(val_path);
    return rc;
}

/* ---- entry point -------------------------------------------------------------- */

static int check_opts(const vlm_prepare_opts *o) {
    if (!o->output || !*o->output) return vlm_set_error("prepare: no output file");
    if (!(o->val_fraction >= 0 && o->val_fraction < 1))
        return vlm_set_error("prepare: val fraction %g is not in [0, 1)", o->val_fraction);
    if (o->val_output && !strcmp(o->val_output, o->output))
        return vlm_set_error("prepare: the val file '%s' is the output file", o->val_output);
    bool files = o->source == VLM_PREPARE_FOLDER || o->source == VLM_PREPARE_COCO;
    if (o->image_size == VLM_PREPARE_KEEP_SIZE && !(files && o->jpeg))
        return vlm_set_error("prepare: keeping the original image sizes needs --jpeg and the "
                             "folder or coco source");
    int min = o->source == VLM_PREPARE_SHAPES ? 16 : 1;
    if (o->image_size != VLM_PREPARE_KEEP_SIZE && o->image_size != 0 &&
        (o->image_size < min || o->image_size > MAX_SIZE))
        return vlm_set_error("prepare: image size %d is not in %d..%d", o->image_size, min, MAX_SIZE);
    if (o->jpeg_quality < 0 || o->jpeg_quality > 100)
        return vlm_set_error("prepare: JPEG quality %d is not in 1..100", o->jpeg_quality);
    if (o->deflate < 0 || o->deflate > 9)
        return vlm_set_error("prepare: deflate level %d is not in 0..9", o->deflate);
    if (o->limit < 0) return vlm_set_error("prepare: limit %lld is negative", (long long)o->limit);
    return 0;
}

int vlm_prepare(const vlm_prepare_opts *opts, vlm_prepare_report *r) {
    vlm_prepare_report dummy;
    if (!r) r = &dummy;
    memset(r, 0, sizeof *r);
    if (!opts) return vlm_set_error("prepare: NULL options");
    if (check_opts(opts)) return -1;
    double t0 = now_s();
    int rc;
    switch (opts->source) {
    case VLM_PREPARE_FASHION_MNIST: rc = prep_fashion_mnist(opts, r); break;
    case VLM_PREPARE_SHAPES: rc = prep_shapes(opts, r); break;
    case VLM_PREPARE_FOLDER: rc = prep_folder(opts, r); break;
    case VLM_PREPARE_COCO: rc = prep_coco(opts, r); break;
    default: rc = vlm_set_error("prepare: unknown source %d", (int)opts->source);
    }
    r->seconds = now_s() - t0;
    return rc;
}
