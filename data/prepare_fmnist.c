/* prepare_fmnist.c - Fashion-MNIST from its idx files (Debian package
 * dataset-fashion-mnist: {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz).
 *
 * idx: a big-endian header (magic 0x00000803 = unsigned bytes in 3 dims, then
 * count, rows, cols for images; magic 0x00000801 and count for labels), then
 * the bytes. zlib's gzread reads the .gz files and, transparently, plain ones
 * too. Images are streamed one batch at a time; the labels are read whole
 * (60 kB) and checked first. Grey becomes RGB by repeating the value; each
 * image gets captions_per_image distinct class templates drawn from a stream
 * seeded by (seed, item). */
#include "prepare_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#define SIDE 28
#define PIXELS (SIDE * SIDE)
#define MAGIC_IMAGES 0x00000803u
#define MAGIC_LABELS 0x00000801u
#define DEFAULT_DIR "/usr/share/datasets/fashion-mnist"
#define DEFAULT_CAPTIONS 2
#define STREAM_CAPTIONS 0xca9710ULL

typedef struct {
    gzFile images;
    char img_path[1024], lab_path[1024];
    uint8_t *labels; /* [n] */
    int64_t n;
    uint8_t batch[PREP_BATCH * PIXELS];
    int per_image;
    uint64_t seed;
    char *caps[VLM_FMNIST_CLASSES][VLM_CLASS_TEMPLATES];
} fmnist;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* gzread of exactly n bytes; the message names the file and zlib's reason. */
static int read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what) {
    int got = gzread(f, buf, (unsigned)n);
    if (got == (int)n) return 0;
    int zerr;
    const char *msg = gzerror(f, &zerr);
    if (got < 0 || (zerr != Z_OK && zerr != Z_BUF_ERROR))
        return vlm_set_error("fashion-mnist '%s': cannot read %s (%s)", path, what, msg);
    return vlm_set_error("fashion-mnist '%s': truncated: the file ends inside %s", path, what);
}

/* dir/name.gz, or dir/name when only the uncompressed file is there. */
static gzFile open_idx(const char *dir, const char *name, char *path, size_t cap) {
    snprintf(path, cap, "%s/%s.gz", dir, name);
    gzFile f = gzopen(path, "rb");
    if (f) return f;
    int e = errno;
    char plain[1024];
    snprintf(plain, sizeof plain, "%s/%s", dir, name);
    if ((f = gzopen(plain, "rb"))) {
        snprintf(path, cap, "%s", plain);
        return f;
    }
    vlm_set_error("fashion-mnist '%s': cannot open (%s); install the Debian package "
                  "dataset-fashion-mnist or pass --dir", path, strerror(e ? e : ENOENT));
    return NULL;
}

static int read_labels(fmnist *fm, const char *dir, const char *prefix, uint32_t count) {
    char name[64];
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", prefix);
    gzFile f = open_idx(dir, name, fm->lab_path, sizeof fm->lab_path);
    if (!f) return -1;
    uint8_t h[8];
    int rc = read_exact(f, fm->lab_path, h, sizeof h, "the idx header");
    if (!rc && be32(h) != MAGIC_LABELS)
        rc = vlm_set_error("fashion-mnist '%s': bad idx magic 0x%08x (labels need 0x%08x)",
                           fm->lab_path, be32(h), MAGIC_LABELS);
    if (!rc && be32(h + 4) != count)
        rc = vlm_set_error("fashion-mnist '%s' holds %u labels but '%s' holds %u images",
                           fm->lab_path, be32(h + 4), fm->img_path, count);
    if (!rc && !(fm->labels = malloc(count ? count : 1)))
        rc = vlm_set_error("fashion-mnist: out of memory for %u labels", count);
    if (!rc) rc = read_exact(f, fm->lab_path, fm->labels, count, "the labels");
    for (uint32_t i = 0; !rc && i < count; i++)
        if (fm->labels[i] >= VLM_FMNIST_CLASSES)
            rc = vlm_set_error("fashion-mnist '%s': label %u of item %u is not in 0..9",
                               fm->lab_path, fm->labels[i], i);
    gzclose(f);
    return rc;
}

static int open_files(fmnist *fm, const char *dir, const char *prefix) {
    char name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", prefix);
    if (!(fm->images = open_idx(dir, name, fm->img_path, sizeof fm->img_path))) return -1;
    /* zlib's default 8 kB buffer costs a syscall per 3 images */
    gzbuffer(fm->images, 1 << 18);
    uint8_t h[16];
    if (read_exact(fm->images, fm->img_path, h, sizeof h, "the idx header")) return -1;
    if (be32(h) != MAGIC_IMAGES)
        return vlm_set_error("fashion-mnist '%s': bad idx magic 0x%08x (images need 0x%08x)",
                             fm->img_path, be32(h), MAGIC_IMAGES);
    if (be32(h + 8) != SIDE || be32(h + 12) != SIDE)
        return vlm_set_error("fashion-mnist '%s': images are %ux%u, expected %dx%d", fm->img_path,
                             be32(h + 12), be32(h + 8), SIDE, SIDE);
    fm->n = be32(h + 4);
    return read_labels(fm, dir, prefix, be32(h + 4));
}

static int make_captions(fmnist *fm) {
    for (int k = 0; k < VLM_FMNIST_CLASSES; k++)
        for (int t = 0; t < VLM_CLASS_TEMPLATES; t++)
            if (!(fm->caps[k][t] = vlm_class_caption(vlm_class_templates[t], vlm_fmnist_class_names[k])))
                return -1;
    return 0;
}

static void fmnist_free(fmnist *fm) {
    if (fm->images) gzclose(fm->images);
    free(fm->labels);
    for (int k = 0; k < VLM_FMNIST_CLASSES; k++)
        for (int t = 0; t < VLM_CLASS_TEMPLATES; t++) free(fm->caps[k][t]);
    free(fm);
}

/* ---- source callbacks ------------------------------------------------------- */

static int fm_fetch(void *ctx, int64_t first, int count) {
    fmnist *fm = ctx;
    char what[64];
    snprintf(what, sizeof what, "images %lld..%lld", (long long)first, (long long)first + count - 1);
    return read_exact(fm->images, fm->img_path, fm->batch, (size_t)count * PIXELS, what);
}

static void fm_make(void *ctx, int64_t item, int slot, int size, prep_slot *out) {
    (void)item, (void)size;
    const uint8_t *g = ((fmnist *)ctx)->batch + (size_t)slot * PIXELS;
    if (vlm_image_alloc(&out->img, SIDE, SIDE)) {
        out->status = -1;
        snprintf(out->why, sizeof out->why, "%s", vlm_last_error());
        return;
    }
    for (int i = 0; i < PIXELS; i++) out->img.rgb[3 * i] = out->img.rgb[3 * i + 1] = out->img.rgb[3 * i + 2] = g[i];
}

static int32_t fm_label(void *ctx, int64_t item, int slot) {
    (void)slot;
    return ((fmnist *)ctx)->labels[item];
}

/* per_image distinct templates: the first draws of a seeded Fisher-Yates. */
static int fm_captions(void *ctx, int64_t item, int slot, prep_sink *s) {
    (void)slot;
    fmnist *fm = ctx;
    int order[VLM_CLASS_TEMPLATES];
    for (int t = 0; t < VLM_CLASS_TEMPLATES; t++) order[t] = t;
    uint64_t rng = prep_item_rng(fm->seed, STREAM_CAPTIONS, item);
    for (int i = 0; i < fm->per_image; i++) {
        int j = i + (int)(prep_rng_next(&rng) % (uint64_t)(VLM_CLASS_TEMPLATES - i));
        int t = order[i];
        order[i] = order[j], order[j] = t;
        if (prep_caption(s, fm->caps[fm->labels[item]][order[i]])) return -1;
    }
    return 0;
}

int prep_fashion_mnist(const vlm_prepare_opts *o, vlm_prepare_report *r) {
    const char *split = o->split ? o->split : "train", *dir = o->dir ? o->dir : DEFAULT_DIR;
    if (strcmp(split, "train") && strcmp(split, "test"))
        return vlm_set_error("fashion-mnist: split '%s' is not train or test", split);
    int per = o->captions_per_image ? o->captions_per_image : DEFAULT_CAPTIONS;
    if (per < 1 || per > VLM_CLASS_TEMPLATES)
        return vlm_set_error("fashion-mnist: %d captions per image is not in 1..%d", per,
                             VLM_CLASS_TEMPLATES);
    fmnist *fm = calloc(1, sizeof *fm);
    if (!fm) return vlm_set_error("fashion-mnist: out of memory");
    fm->per_image = per, fm->seed = o->seed;
    int rc = open_files(fm, dir, strcmp(split, "train") ? "t10k" : "train");
    if (!rc) rc = make_captions(fm);
    if (!rc) {
        prep_source src = {.n_items = fm->n, .default_size = SIDE, .light = true,
                           .class_names = vlm_fmnist_class_names, .n_classes = VLM_FMNIST_CLASSES,
                           .ctx = fm, .fetch = fm_fetch, .make = fm_make, .label = fm_label,
                           .captions = fm_captions};
        snprintf(src.description, sizeof src.description, "fashion-mnist %s (%.400s)", split, fm->img_path);
        rc = prep_run(o, &src, r);
    }
    fmnist_free(fm);
    return rc;
}
