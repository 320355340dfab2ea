/* test_prepare.c - `vlm prepare`: every source end to end through the CLI
 * ($VLM_BINARY) and the C API, on inputs written here into a mkdtemp
 * directory: fake Fashion-MNIST idx.gz files (zlib), images (stb_image_write)
 * with TSV / CSV / JSONL captions including a missing and a corrupt image, a
 * small COCO JSON. The outputs are read back with vlm_dataset_open and
 * checked: counts, pixels, captions and their images, labels, class names,
 * the val split, --strict, the temp-file guarantee, shapes determinism and
 * captions against the rendered pixels, and the errors of bad inputs. */
#include "data.h"
#include "test.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include "stb_write.h"

static char tmpdir[256];
static const char *vlm_bin;
static char out_log[1 << 16]; /* stdout + stderr of the last CLI run */

static const char *tmp(const char *name) {
    static char buf[8][512];
    static int k;
    k = (k + 1) % 8;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static void write_text(const char *name, const char *text) { write_file(tmp(name), text, strlen(text)); }

static bool exists(const char *path) { return access(path, F_OK) == 0; }

/* Runs `vlm prepare ARGS` in tmpdir; returns the exit status, output in out_log. */
static int prepare(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int prepare(const char *fmt, ...) {
    char args[2048], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' prepare %s > log.txt 2>&1", tmpdir, vlm_bin, args);
    int st = system(cmd);
    FILE *f = fopen(tmp("log.txt"), "rb");
    size_t n = f ? fread(out_log, 1, sizeof out_log - 1, f) : 0;
    out_log[n] = 0;
    if (f) fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static bool logged(const char *s) { return strstr(out_log, s) != NULL; }

static vlm_dataset *open_ds(const char *name) {
    vlm_dataset *ds = vlm_dataset_open(tmp(name));
    if (!ds) fprintf(stderr, "open %s: %s\n", name, vlm_last_error());
    return ds;
}

/* The captions of image i, joined with '|'. */
static void captions_of(vlm_dataset *ds, int64_t i, char *buf, size_t cap) {
    buf[0] = 0;
    for (int64_t j = 0; j < vlm_dataset_num_captions(ds); j++) {
        if (vlm_dataset_caption_image(ds, j) != i) continue;
        char *c = vlm_dataset_read_caption(ds, j);
        size_t n = strlen(buf);
        snprintf(buf + n, cap - n, "%s%s", n ? "|" : "", c ? c : "(null)");
        free(c);
    }
}

/* ---- Fashion-MNIST --------------------------------------------------------------- */

static uint8_t fm_pixel(int i, int y, int x) { return (uint8_t)(i * 31 + y * 7 + x * 3); }

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An idx pair in dir: the image header announces n_header images, n_written
 * follow (item i: pattern fm_pixel); n_labels labels (i % 10). */
static void write_idx(const char *dir, const char *prefix, int n_header, int n_written, int n_labels,
                      uint32_t magic) {
    char path[600];
    mkdir(tmp(dir), 0700);
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte.gz", tmp(dir), prefix);
    gzFile f = gzopen(path, "wb");
    uint8_t h[16], img[784];
    put32(h, magic), put32(h + 4, (uint32_t)n_header), put32(h + 8, 28), put32(h + 12, 28);
    gzwrite(f, h, 16);
    for (int i = 0; i < n_written; i++) {
        for (int p = 0; p < 784; p++) img[p] = fm_pixel(i, p / 28, p % 28);
        gzwrite(f, img, sizeof img);
    }
    gzclose(f);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte.gz", tmp(dir), prefix);
    f = gzopen(path, "wb");
    put32(h, 0x801), put32(h + 4, (uint32_t)n_labels);
    gzwrite(f, h, 8);
    for (int i = 0; i < n_labels; i++) {
        uint8_t v = (uint8_t)(i % 10);
        gzwrite(f, &v, 1);
    }
    gzclose(f);
}

/* Whether caption is one of the templates applied to class k. */
static bool is_class_caption(const char *caption, int k) {
    for (int t = 0; t < VLM_CLASS_TEMPLATES; t++) {
        char *c = vlm_class_caption(vlm_class_templates[t], vlm_fmnist_class_names[k]);
        bool same = c && !strcmp(c, caption);
        free(c);
        if (same) return true;
    }
    return false;
}

static void check_fmnist_file(const char *name, int n, int per_image) {
    vlm_dataset *ds = open_ds(name);
    CHECK(ds != NULL, "%s", name);
    if (!ds) return;
    int h, w;
    vlm_dataset_image_dims(ds, &h, &w);
    CHECK(vlm_dataset_num_images(ds) == n && h == 28 && w == 28, "%lld images %dx%d",
          (long long)vlm_dataset_num_images(ds), w, h);
    CHECK(vlm_dataset_num_captions(ds) == (int64_t)n * per_image, "%lld captions",
          (long long)vlm_dataset_num_captions(ds));
    CHECK(vlm_dataset_num_classes(ds) == 10 && !strcmp(vlm_dataset_class_name(ds, 9), "Ankle boot"),
          "class names");
    CHECK(strstr(vlm_dataset_source(ds), "fashion-mnist train") != NULL, "source %s", vlm_dataset_source(ds));
    for (int64_t j = 0; j < vlm_dataset_num_captions(ds); j++) {
        char *c = vlm_dataset_read_caption(ds, j);
        int k = vlm_dataset_label(ds, vlm_dataset_caption_image(ds, j));
        CHECK(c && is_class_caption(c, k), "caption %lld '%s' of class %d", (long long)j, c, k);
        if (c && k == 9) CHECK(strstr(c, "an ankle boot") != NULL, "%s", c);
        if (c && k == 0) CHECK(strstr(c, "a t-shirt/top") != NULL, "%s", c);
        free(c);
    }
    vlm_dataset_close(ds);
}

/* Pixels: image i of the file is source item label + 10 * m; the labels
 * are i % 10, so with n <= 10 the label is the item number. */
static void check_fmnist_pixels(const char *name) {
    vlm_dataset *ds = open_ds(name);
    if (!ds) return;
    int bad = 0;
    for (int64_t i = 0; i < vlm_dataset_num_images(ds); i++) {
        vlm_image img;
        int item = vlm_dataset_label(ds, i);
        if (vlm_dataset_read_image(ds, i, &img)) {
            bad++;
            continue;
        }
        for (int p = 0; p < 784; p++) {
            uint8_t g = fm_pixel(item, p / 28, p % 28), *px = img.rgb + 3 * p;
            bad += px[0] != g || px[1] != g || px[2] != g;
        }
        vlm_image_free(&img);
    }
    CHECK(bad == 0, "%d pixels differ from grey -> RGB", bad);
    vlm_dataset_close(ds);
}

/* The labels of a file, as a string of digits (10 classes). */
static void labels_of(const char *name, char *buf) {
    vlm_dataset *ds = open_ds(name);
    int64_t n = ds ? vlm_dataset_num_images(ds) : 0;
    for (int64_t i = 0; i < n; i++) buf[i] = (char)('0' + vlm_dataset_label(ds, i));
    buf[n] = 0;
    vlm_dataset_close(ds);
}

static void test_fmnist_split(void) {
    CHECK(prepare("fashion-mnist --dir fm --val-fraction 0.3 --seed 1 -o fmv.h5") == 0, "%s", out_log);
    CHECK(logged("wrote fmv-val.h5: 3 images, 6 captions"), "%s", out_log);
    check_fmnist_file("fmv.h5", 7, 2);
    check_fmnist_file("fmv-val.h5", 3, 2);
    check_fmnist_pixels("fmv.h5");
    check_fmnist_pixels("fmv-val.h5");
    char tr[16], va[16], va2[16], va3[16];
    labels_of("fmv.h5", tr), labels_of("fmv-val.h5", va);
    int seen[10] = {0}, ok = 1;
    for (char *p = tr; *p; p++) seen[*p - '0']++;
    for (char *p = va; *p; p++) seen[*p - '0']++;
    for (int k = 0; k < 10; k++) ok &= seen[k] == 1;
    CHECK(ok, "train %s + val %s are not a partition of the 10 items", tr, va);
    /* the same seed holds out the same items; another seed (very likely) not */
    CHECK(prepare("fashion-mnist --dir fm --val-fraction 0.3 --seed 1 --val-out held.h5 -o fmv2.h5") == 0, "%s", out_log);
    labels_of("held.h5", va2);
    CHECK(!strcmp(va, va2), "val %s vs %s", va, va2);
    CHECK(prepare("fashion-mnist --dir fm --val-fraction 0.3 --seed 2 -o fmv3.h5") == 0, "%s", out_log);
    labels_of("fmv3-val.h5", va3);
    CHECK(strcmp(va, va3) != 0, "seeds 1 and 2 hold out the same items %s", va);
}

static void test_fmnist_variants(void) {
    CHECK(prepare("fashion-mnist --dir fm --image-size 32 --limit 4 -o fm32.h5") == 0, "%s", out_log);
    vlm_dataset *ds = open_ds("fm32.h5");
    int h = 0, w = 0;
    if (ds) vlm_dataset_image_dims(ds, &h, &w);
    CHECK(ds && vlm_dataset_num_images(ds) == 4 && h == 32 && w == 32 && vlm_dataset_image_size(ds) == 32,
          "resized: %dx%d", w, h);
    vlm_image img = {0};
    if (ds && !vlm_dataset_read_image(ds, 3, &img)) {
        int grey = 1;
        for (int p = 0; p < 32 * 32; p++) grey &= img.rgb[3 * p] == img.rgb[3 * p + 1] && img.rgb[3 * p] == img.rgb[3 * p + 2];
        CHECK(grey, "resized image is not grey");
        vlm_image_free(&img);
    }
    vlm_dataset_close(ds);
    CHECK(prepare("fashion-mnist --dir fm --jpeg --jpeg-quality 95 -o fmj.h5") == 0, "%s", out_log);
    ds = open_ds("fmj.h5");
    CHECK(ds && vlm_dataset_layout_of(ds) == VLM_DATASET_JPEG, "jpeg layout");
    if (ds && !vlm_dataset_read_image(ds, 2, &img)) {
        double err = 0;
        for (int p = 0; p < 784; p++) err += abs(img.rgb[3 * p] - fm_pixel(2, p / 28, p % 28));
        CHECK(img.width == 28 && err / 784 < 12, "jpeg image: %dx%d, mean error %.1f", img.width, img.height, err / 784);
        vlm_image_free(&img);
    }
    vlm_dataset_close(ds);
}

static void test_fmnist_errors(void) {
    write_idx("fmbad", "train", 4, 4, 4, 0x802);
    CHECK(prepare("fashion-mnist --dir fmbad -o bad.h5") == 1 && logged("fmbad/train-images-idx3-ubyte.gz") &&
          logged("magic 0x00000802"), "%s", out_log);
    write_idx("fmcount", "train", 4, 4, 3, 0x803);
    CHECK(prepare("fashion-mnist --dir fmcount -o bad.h5") == 1 && logged("train-labels-idx1-ubyte.gz' holds 3 labels"),
          "%s", out_log);
    write_idx("fmshort", "train", 10, 5, 10, 0x803);
    CHECK(prepare("fashion-mnist --dir fmshort -o bad.h5") == 1 && logged("truncated"), "%s", out_log);
    CHECK(prepare("fashion-mnist --dir fm --split test -o bad.h5") == 1 && logged("fm/t10k-images-idx3-ubyte.gz"),
          "%s", out_log);
    CHECK(!exists(tmp("bad.h5")) && !exists(tmp("bad.h5.tmp")), "a failed run left a file");
}

static void test_fmnist(void) {
    write_idx("fm", "train", 10, 10, 10, 0x803);
    CHECK(prepare("fashion-mnist --dir fm --captions-per-image 3 --seed 5 -o fm.h5") == 0, "%s", out_log);
    CHECK(logged("wrote fm.h5: 10 images (28x28, raw), 30 captions") && logged("done in"), "%s", out_log);
    check_fmnist_file("fm.h5", 10, 3);
    check_fmnist_pixels("fm.h5");
    vlm_dataset *ds = open_ds("fm.h5");
    for (int64_t i = 0; ds && i < 10; i++) { /* three distinct captions per image */
        char buf[1024];
        captions_of(ds, i, buf, sizeof buf);
        char *a = buf, *b = strchr(a, '|'), *c = b ? strchr(b + 1, '|') : NULL;
        CHECK(b && c && !strchr(c + 1, '|'), "image %lld: %s", (long long)i, buf);
        if (b && c) {
            *b = *c = 0;
            CHECK(strcmp(a, b + 1) && strcmp(a, c + 1) && strcmp(b + 1, c + 1), "repeated template");
        }
    }
    vlm_dataset_close(ds);
    test_fmnist_split();
    test_fmnist_variants();
    test_fmnist_errors();
}

/* ---- shapes ------------------------------------------------------------------------- */

typedef struct {
    int color;
    bool large;
} np_t;

static int color_of(const char *w) {
    for (int c = 0; c < VLM_SHAPE_COLORS; c++)
        if (!strcmp(w, vlm_shape_color_names[c])) return c;
    return -1;
}

/* Parses "a SIZE COLOUR KIND" at words[*i]; "the" instead of "a" when the_ref. */
static bool parse_np(char **words, int n, int *i, bool the_ref, np_t *np) {
    if (*i + 4 > n || strcmp(words[*i], the_ref ? "the" : "a")) return false;
    np->large = !strcmp(words[*i + 1], "large");
    np->color = color_of(words[*i + 2]);
    bool kind = false;
    for (int k = 0; k < VLM_SHAPE_KINDS; k++) kind |= !strcmp(words[*i + 3], vlm_shape_kind_names[k]);
    bool ok = (np->large || !strcmp(words[*i + 1], "small")) && np->color >= 0 && kind;
    *i += 4;
    return ok;
}

/* 0 left of, 1 right of, 2 above, 3 below; -1 if none */
static int parse_rel(char **words, int n, int *i) {
    if (*i + 2 <= n && !strcmp(words[*i + 1], "of")) {
        int r = !strcmp(words[*i], "left") ? 0 : !strcmp(words[*i], "right") ? 1 : -1;
        *i += 2;
        return r;
    }
    if (*i >= n) return -1;
    int r = !strcmp(words[*i], "above") ? 2 : !strcmp(words[*i], "below") ? 3 : -1;
    ++*i;
    return r;
}

/* Centroid and count of the pixels of exactly this colour. */
static void colour_blob(const vlm_image *img, int c, double *cx, double *cy, int *count) {
    const uint8_t *rgb = vlm_shape_color_rgb[c];
    double sx = 0, sy = 0;
    int n = 0;
    for (int y = 0; y < img->height; y++)
        for (int x = 0; x < img->width; x++) {
            const uint8_t *p = img->rgb + 3 * ((size_t)y * img->width + x);
            if (p[0] == rgb[0] && p[1] == rgb[1] && p[2] == rgb[2]) sx += x, sy += y, n++;
        }
    *cx = n ? sx / n : -1, *cy = n ? sy / n : -1, *count = n;
}

static bool relation_holds(const vlm_image *img, np_t a, int rel, np_t b) {
    double ax, ay, bx, by;
    int an, bn;
    colour_blob(img, a.color, &ax, &ay, &an);
    colour_blob(img, b.color, &bx, &by, &bn);
    if (!an || !bn) return false;
    if (a.large != b.large && (a.large ? an <= bn : an >= bn)) return false; /* sizes */
    double dx = ax - bx, dy = ay - by;
    switch (rel) {
    case 0: return dx < 0 && fabs(dx) > fabs(dy);
    case 1: return dx > 0 && fabs(dx) > fabs(dy);
    case 2: return dy < 0 && fabs(dy) > fabs(dx);
    case 3: return dy > 0 && fabs(dy) > fabs(dx);
    default: return false;
    }
}

/* Reads the caption as the grammar says and checks every stated relation
 * (and small vs large) on the pixels; returns the number of shapes, 0 if the
 * caption does not parse or a statement is false. */
static int check_caption_on_pixels(const char *caption, const vlm_image *img) {
    char buf[256], *words[32];
    int n = 0, i = 0;
    snprintf(buf, sizeof buf, "%s", caption);
    for (char *t = strtok(buf, " "); t && n < 32; t = strtok(NULL, " ")) words[n++] = t;
    np_t a, b, c, b2;
    if (!parse_np(words, n, &i, false, &a)) return 0;
    double x, y;
    int cnt;
    colour_blob(img, a.color, &x, &y, &cnt);
    if (i == n) return cnt > 0 ? 1 : 0;
    int r1 = parse_rel(words, n, &i);
    if (!parse_np(words, n, &i, false, &b) || !relation_holds(img, a, r1, b)) return 0;
    if (i == n) return 2;
    if (strcmp(words[i++], "and") || !parse_np(words, n, &i, false, &c)) return 0;
    int r2 = parse_rel(words, n, &i);
    if (!parse_np(words, n, &i, true, &b2) || i != n || b2.color != b.color || b2.large != b.large)
        return 0;
    return relation_holds(img, c, r2, b) ? 3 : 0;
}

static void check_shapes_against_api(vlm_dataset *ds, uint64_t seed, int *per_n) {
    for (int64_t i = 0; i < vlm_dataset_num_images(ds); i++) {
        vlm_image img;
        vlm_shape_scene sc;
        char want[160], *got = vlm_dataset_read_caption(ds, i);
        if (vlm_dataset_read_image(ds, i, &img) || vlm_shape_scene_make(seed, i, 64, &sc) ||
            vlm_shape_scene_caption(&sc, want, sizeof want) || !got) {
            CHECK(0, "shape %lld: %s", (long long)i, vlm_last_error());
            free(got);
            continue;
        }
        CHECK(vlm_dataset_caption_image(ds, i) == i && !strcmp(got, want), "caption %lld: %s vs %s",
              (long long)i, got, want);
        CHECK(vlm_dataset_label(ds, i) == (int32_t)sc.shapes[0].kind, "label of %lld", (long long)i);
        for (int k = 0; k < sc.n; k++) { /* the colour at each centre */
            const uint8_t *p = img.rgb + 3 * ((size_t)(int)sc.shapes[k].cy * 64 + (size_t)(int)sc.shapes[k].cx);
            const uint8_t *c = vlm_shape_color_rgb[sc.shapes[k].color];
            CHECK(p[0] == c[0] && p[1] == c[1] && p[2] == c[2], "image %lld shape %d centre is %d,%d,%d",
                  (long long)i, k, p[0], p[1], p[2]);
        }
        int n = check_caption_on_pixels(got, &img);
        CHECK(n == sc.n, "image %lld: '%s' does not match its pixels", (long long)i, got);
        per_n[sc.n]++;
        vlm_image_free(&img);
        free(got);
    }
}

static bool same_files(const char *a, const char *b) {
    vlm_dataset *x = open_ds(a), *y = open_ds(b);
    bool same = x && y && vlm_dataset_num_images(x) == vlm_dataset_num_images(y);
    for (int64_t i = 0; same && i < vlm_dataset_num_images(x); i++) {
        vlm_image p, q;
        char *c = vlm_dataset_read_caption(x, i), *d = vlm_dataset_read_caption(y, i);
        if (vlm_dataset_read_image(x, i, &p) || vlm_dataset_read_image(y, i, &q)) return false;
        same = c && d && !strcmp(c, d) && !memcmp(p.rgb, q.rgb, (size_t)p.width * p.height * 3);
        free(c), free(d), vlm_image_free(&p), vlm_image_free(&q);
    }
    vlm_dataset_close(x), vlm_dataset_close(y);
    return same;
}

static void test_shapes(void) {
    CHECK(prepare("shapes --count 60 --seed 3 -o sh.h5") == 0 && logged("60 images (64x64, raw), 60 captions"),
          "%s", out_log);
    CHECK(prepare("shapes --count 60 --seed 3 --threads 1 -o sh2.h5") == 0, "%s", out_log);
    CHECK(prepare("shapes --count 60 --seed 4 -o sh3.h5") == 0, "%s", out_log);
    CHECK(prepare("shapes --count 60 --seed 3 --deflate 1 -o shd.h5") == 0, "%s", out_log);
    CHECK(same_files("sh.h5", "sh2.h5"), "same seed, different files");
    CHECK(same_files("sh.h5", "shd.h5"), "--deflate changed the pixels");
    CHECK(!same_files("sh.h5", "sh3.h5"), "seeds 3 and 4 give the same files");
    vlm_dataset *ds = open_ds("sh.h5");
    int per_n[4] = {0};
    if (ds) {
        CHECK(vlm_dataset_num_classes(ds) == 3 && !strcmp(vlm_dataset_class_name(ds, 2), "triangle"), "classes");
        check_shapes_against_api(ds, 3, per_n);
    }
    CHECK(per_n[1] && per_n[2] && per_n[3], "scenes of 1/2/3 shapes: %d %d %d", per_n[1], per_n[2], per_n[3]);
    vlm_dataset_close(ds);
    CHECK(prepare("shapes --count 20 --val-fraction 0.25 --jpeg --image-size 32 -o shv.h5") == 0 &&
          logged("wrote shv.h5: 15 images (32x32, jpeg), 15 captions") &&
          logged("wrote shv-val.h5: 5 images, 5 captions"), "%s", out_log);
}

/* ---- folder ----------------------------------------------------------------------- */

static void solid_rgb(uint8_t *p, int w, int h, uint8_t r, uint8_t g, uint8_t b) {
    for (int i = 0; i < w * h; i++) p[3 * i] = r, p[3 * i + 1] = g, p[3 * i + 2] = b;
}

/* imgs/: a.png 20x10 red, b.jpg 16x16 blue, c.bmp 12x24 green, corrupt.jpg. */
static void write_images(void) {
    uint8_t px[24 * 24 * 3];
    mkdir(tmp("imgs"), 0700);
    solid_rgb(px, 20, 10, 255, 0, 0);
    stbi_write_png(tmp("imgs/a.png"), 20, 10, 3, px, 20 * 3);
    solid_rgb(px, 16, 16, 0, 0, 255);
    stbi_write_jpg(tmp("imgs/b.jpg"), 16, 16, 3, px, 95);
    solid_rgb(px, 12, 24, 0, 255, 0);
    stbi_write_bmp(tmp("imgs/c.bmp"), 12, 24, 3, px);
    const uint8_t bad[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x10, 'J', 'F', 'I', 'F', 0, 1, 2, 3, 4, 5, 6, 7};
    write_file(tmp("imgs/corrupt.jpg"), bad, sizeof bad);
}

/* Image i of name is w x h and about colour (r, g, b) everywhere. */
static void check_solid(const char *name, int64_t i, int w, int h, int r, int g, int b) {
    vlm_dataset *ds = open_ds(name);
    vlm_image img = {0};
    CHECK(ds && !vlm_dataset_read_image(ds, i, &img), "%s image %lld", name, (long long)i);
    int worst = 0;
    for (int p = 0; p < img.width * img.height; p++) {
        int d = abs(img.rgb[3 * p] - r) + abs(img.rgb[3 * p + 1] - g) + abs(img.rgb[3 * p + 2] - b);
        if (d > worst) worst = d;
    }
    CHECK(img.width == w && img.height == h && worst <= 12, "%s image %lld: %dx%d, colour off by %d", name,
          (long long)i, img.width, img.height, worst);
    vlm_image_free(&img);
    vlm_dataset_close(ds);
}

static void check_caps(const char *name, int64_t n_images, const char *const *want) {
    vlm_dataset *ds = open_ds(name);
    CHECK(ds && vlm_dataset_num_images(ds) == n_images, "%s: %lld images", name,
          ds ? (long long)vlm_dataset_num_images(ds) : -1LL);
    for (int64_t i = 0; ds && i < n_images; i++) {
        char buf[1024];
        captions_of(ds, i, buf, sizeof buf);
        CHECK(!strcmp(buf, want[i]), "%s image %lld: '%s', expected '%s'", name, (long long)i, buf, want[i]);
    }
    vlm_dataset_close(ds);
}

static void test_tsv(void) {
    write_text("caps.tsv", "image\tcaption\n"
                           "a.png\ta red rectangle\n"
                           "b.jpg\ta blue square\r\n"
                           "a.png\tanother caption of a\n"
                           "missing.png\tnothing\n"
                           "\n"
                           "corrupt.jpg\tbroken\n"
                           "c.bmp\t  green tall  \n");
    CHECK(prepare("folder --images imgs --captions caps.tsv --image-size 16 -o tsv.h5") == 0, "%s", out_log);
    CHECK(logged("3 images (16x16, raw), 4 captions") && logged("skipped 2 unreadable images") &&
          logged("imgs/missing.png") && logged("imgs/corrupt.jpg"), "%s", out_log);
    const char *const want[] = {"a red rectangle|another caption of a", "a blue square", "green tall"};
    check_caps("tsv.h5", 3, want);
    check_solid("tsv.h5", 0, 16, 16, 255, 0, 0);
    check_solid("tsv.h5", 1, 16, 16, 0, 0, 255);
    check_solid("tsv.h5", 2, 16, 16, 0, 255, 0);
    vlm_dataset *ds = open_ds("tsv.h5");
    CHECK(ds && !vlm_dataset_has_labels(ds) && vlm_dataset_num_classes(ds) == 0, "folder has no labels");
    vlm_dataset_close(ds);
}

static void test_csv_jsonl(void) {
    write_text("caps.csv", "path,caption\n"
                           "a.png,\"a red, wide rectangle\"\n"
                           "b.jpg,\"she said \"\"blue\"\"\"\r\n"
                           "\"c.bmp\",\"two\nlines\"\n"
                           "missing.png,gone\n");
    CHECK(prepare("folder --images imgs --captions caps.csv -o csv.h5") == 0 &&
          logged("3 images (64x64, raw), 3 captions") && logged("skipped 1"), "%s", out_log);
    const char *const want[] = {"a red, wide rectangle", "she said \"blue\"", "two\nlines"};
    check_caps("csv.h5", 3, want);
    write_text("caps.jsonl", "{\"image\": \"a.png\", \"caption\": \"red\"}\n"
                             "{\"image\": \"b.jpg\", \"text\": [\"blue one\", \"blue two\"]}\n"
                             "\n"
                             "{\"image\": \"corrupt.jpg\", \"caption\": \"bad\"}\n"
                             "{\"image\": \"a.png\", \"caption\": \"  \"}\n");
    CHECK(prepare("folder --images imgs --captions caps.jsonl --image-size 8 -o jsonl.h5") == 0 &&
          logged("dropped 1 captions") && logged("line 5: empty caption"), "%s", out_log);
    const char *const want2[] = {"red", "blue one|blue two"};
    check_caps("jsonl.h5", 2, want2);
    /* the same items split: 4 distinct paths -> 2 held out; missing.png is skipped in either part */
    CHECK(prepare("folder --images imgs --captions caps.csv --val-fraction 0.5 --seed 2 -o fv.h5") == 0, "%s", out_log);
    vlm_dataset *t = open_ds("fv.h5"), *v = open_ds("fv-val.h5");
    CHECK(t && v && vlm_dataset_num_images(t) + vlm_dataset_num_images(v) == 3 &&
          vlm_dataset_num_captions(t) + vlm_dataset_num_captions(v) == 3, "folder split");
    vlm_dataset_close(t), vlm_dataset_close(v);
}

static void test_folder_jpeg(void) {
    CHECK(prepare("folder --images imgs --captions caps.tsv --jpeg --image-size 0 -o keep.h5") == 0 &&
          logged("original size, jpeg"), "%s", out_log);
    check_solid("keep.h5", 0, 20, 10, 255, 0, 0); /* the PNG as it was */
    check_solid("keep.h5", 2, 12, 24, 0, 255, 0);
    CHECK(prepare("folder --images imgs --captions caps.tsv --jpeg --image-size 24 -o fj.h5") == 0, "%s", out_log);
    check_solid("fj.h5", 1, 24, 24, 0, 0, 255);
    CHECK(prepare("folder --images imgs --captions caps.tsv --image-size 0 -o x.h5") == 2, "%s", out_log);
}

static bool same_bytes(const char *a, const char *b) {
    FILE *f = fopen(a, "rb"), *g = fopen(b, "rb");
    bool same = f && g;
    for (int c, d; same;) {
        c = fgetc(f), d = fgetc(g);
        same = c == d;
        if (c == EOF) break;
    }
    if (f) fclose(f);
    if (g) fclose(g);
    return same;
}

static void copy_file(const char *from, const char *to) {
    FILE *f = fopen(from, "rb"), *g = fopen(to, "wb");
    for (int c; f && g && (c = fgetc(f)) != EOF;) fputc(c, g);
    if (f) fclose(f);
    if (g) fclose(g);
}

static void test_strict(void) {
    write_text("strict.tsv", "a.png\tred\ncorrupt.jpg\tbroken\nb.jpg\tblue\n");
    CHECK(prepare("folder --images imgs --captions strict.tsv --strict -o strict.h5") == 1 &&
          logged("error: ") && logged("corrupt.jpg") && logged("--strict"), "%s", out_log);
    CHECK(!exists(tmp("strict.h5")) && !exists(tmp("strict.h5.tmp")), "--strict left a file");
    /* an existing file is not touched by a failed run */
    CHECK(prepare("folder --images imgs --captions caps.csv -o keep2.h5") == 0, "%s", out_log);
    copy_file(tmp("keep2.h5"), tmp("keep2-copy.h5"));
    CHECK(prepare("folder --images imgs --captions strict.tsv --strict -o keep2.h5") == 1, "%s", out_log);
    CHECK(same_bytes(tmp("keep2.h5"), tmp("keep2-copy.h5")), "a failed run changed the existing file");
    vlm_dataset *ds = open_ds("keep2.h5");
    CHECK(ds && vlm_dataset_num_images(ds) == 3, "the existing file is no longer the old one");
    vlm_dataset_close(ds);
    CHECK(!exists(tmp("keep2.h5.tmp")), "temp file left");
    write_text("empty.tsv", "a.png\t \n");
    CHECK(prepare("folder --images imgs --captions empty.tsv --strict -o e.h5") == 1 && logged("empty caption"),
          "%s", out_log);
}

static void test_folder_errors(void) {
    write_text("bad.tsv", "a.png\tok\na.png no tab here\n");
    CHECK(prepare("folder --images imgs --captions bad.tsv -o bad.h5") == 1 && logged("bad.tsv' line 2") &&
          logged("no TAB"), "%s", out_log);
    write_text("bad.csv", "a.png,fine\nb.jpg,\"unterminated\n");
    CHECK(prepare("folder --images imgs --captions bad.csv -o bad.h5") == 1 && logged("bad.csv' line 2") &&
          logged("unterminated"), "%s", out_log);
    write_text("bad3.csv", "a.png,one,two\n");
    CHECK(prepare("folder --images imgs --captions bad3.csv -o bad.h5") == 1 && logged("3 fields"), "%s", out_log);
    write_text("bad.jsonl", "{\"image\": \"a.png\", \"caption\": \"x\"}\n{\"image\": \"a.png\", \"caption\": }\n");
    CHECK(prepare("folder --images imgs --captions bad.jsonl -o bad.h5") == 1 && logged("bad.jsonl' line 2") &&
          logged("malformed JSON"), "%s", out_log);
    write_text("junk.jsonl", "{\"image\": \"a.png\", \"caption\": \"x\"} junk\n");
    CHECK(prepare("folder --images imgs --captions junk.jsonl -o bad.h5") == 1 && logged("junk.jsonl' line 1") &&
          logged("malformed JSON"), "%s", out_log);
    write_text("bad2.jsonl", "{\"caption\": \"x\"}\n");
    CHECK(prepare("folder --images imgs --captions bad2.jsonl -o bad.h5") == 1 && logged("\"image\" is missing"),
          "%s", out_log);
    write_text("caps.txt", "a.png\tx\n");
    CHECK(prepare("folder --images imgs --captions caps.txt -o bad.h5") == 1 && logged("unknown format"), "%s", out_log);
    CHECK(prepare("folder --images imgs --captions nope.tsv -o bad.h5") == 1 && logged("nope.tsv"), "%s", out_log);
    write_text("allbad.tsv", "missing.png\tx\ncorrupt.jpg\ty\n");
    CHECK(prepare("folder --images imgs --captions allbad.tsv -o bad.h5") == 1 && logged("no image"), "%s", out_log);
    CHECK(!exists(tmp("bad.h5")) && !exists(tmp("bad.h5.tmp")), "a failed run left a file");
}

/* ---- COCO ------------------------------------------------------------------------- */

static void test_coco(void) {
    write_text("coco.json",
               "{\"info\": {}, \"images\": [\n"
               "  {\"id\": 10, \"file_name\": \"a.png\", \"width\": 20},\n"
               "  {\"id\": 3, \"file_name\": \"b.jpg\"},\n"
               "  {\"id\": 7, \"file_name\": \"missing.png\"},\n"
               "  {\"id\": 8, \"file_name\": \"c.bmp\"}],\n"
               " \"annotations\": [\n"
               "  {\"id\": 1, \"image_id\": 3, \"caption\": \"blue 1\"},\n"
               "  {\"id\": 2, \"image_id\": 10, \"caption\": \"A red one. \\n\"},\n"
               "  {\"id\": 3, \"image_id\": 3, \"caption\": \"blue 2\"},\n"
               "  {\"id\": 4, \"image_id\": 99, \"caption\": \"orphan\"},\n"
               "  {\"id\": 5, \"image_id\": 7, \"caption\": \"gone\"}]}\n");
    CHECK(prepare("coco --annotations coco.json --images imgs --image-size 16 -o coco.h5") == 0, "%s", out_log);
    CHECK(logged("2 images (16x16, raw), 3 captions") && logged("skipped 1 unreadable") &&
          logged("left out 1 images without captions") && logged("dropped 1 captions") &&
          logged("image_id 99") && logged("imgs/missing.png") && logged("imgs/c.bmp': no caption"), "%s", out_log);
    const char *const want[] = {"A red one.", "blue 1|blue 2"};
    check_caps("coco.h5", 2, want);
    check_solid("coco.h5", 0, 16, 16, 255, 0, 0);
    check_solid("coco.h5", 1, 16, 16, 0, 0, 255);
    CHECK(prepare("coco --annotations coco.json --images imgs --strict -o cs.h5") == 1 && logged("image_id 99"),
          "%s", out_log);

    CHECK(prepare("coco --annotations nope.json --images imgs -o bad.h5") == 1 && logged("nope.json") &&
          logged("cannot open"), "%s", out_log);
    write_text("trunc.json", "{\"images\": [\n {\"id\": 1, ");
    CHECK(prepare("coco --annotations trunc.json --images imgs -o bad.h5") == 1 && logged("trunc.json") &&
          logged("malformed JSON at line 2"), "%s", out_log);
    write_text("noimages.json", "{\"annotations\": []}");
    CHECK(prepare("coco --annotations noimages.json --images imgs -o bad.h5") == 1 &&
          logged("\"images\" is missing"), "%s", out_log);
    write_text("numcap.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.png\"}],"
                              " \"annotations\": [{\"image_id\": 1, \"caption\": 5}]}");
    CHECK(prepare("coco --annotations numcap.json --images imgs -o bad.h5") == 1 &&
          logged("annotations[0].caption is not a string"), "%s", out_log);
    write_text("dup.json", "{\"images\": [{\"id\": 1, \"file_name\": \"a.png\"}, {\"id\": 1, \"file_name\": \"b.jpg\"}],"
                           " \"annotations\": []}");
    CHECK(prepare("coco --annotations dup.json --images imgs -o bad.h5") == 1 && logged("share the id 1"),
          "%s", out_log);
    CHECK(!exists(tmp("bad.h5")) && !exists(tmp("bad.h5.tmp")), "a failed run left a file");
}

/* ---- C API and command line ----------------------------------------------------------- */

static int polls;
static bool cancel_at_second_poll(void) { return ++polls >= 2; }

static void test_api(void) {
    char *c = vlm_class_caption("a photo of {}", "Ankle boot");
    CHECK(c && !strcmp(c, "a photo of an ankle boot"), "%s", c);
    free(c);
    c = vlm_class_caption("an image of {}.", "T-shirt/top");
    CHECK(c && !strcmp(c, "an image of a t-shirt/top."), "%s", c);
    free(c);
    CHECK(!vlm_class_caption("no hole", "Bag"), "template without {}");
    c = vlm_prepare_val_path("x/train.h5");
    CHECK(c && !strcmp(c, "x/train-val.h5"), "%s", c);
    free(c);
    c = vlm_prepare_val_path("data");
    CHECK(c && !strcmp(c, "data-val"), "%s", c);
    free(c);

    vlm_prepare_opts o = {.source = VLM_PREPARE_SHAPES, .output = tmp("api.h5"), .count = 10, .limit = 4, .seed = 9};
    vlm_prepare_report r;
    CHECK(vlm_prepare(&o, &r) == 0 && r.images == 4 && r.captions == 4 && r.image_size == 64 && !r.skipped,
          "%s", vlm_last_error());
    o.val_fraction = 1;
    CHECK(vlm_prepare(&o, &r) < 0 && strstr(vlm_last_error(), "val fraction"), "%s", vlm_last_error());
    o.val_fraction = 0, o.image_size = VLM_PREPARE_KEEP_SIZE;
    CHECK(vlm_prepare(&o, &r) < 0, "keep size without jpeg");
    /* cancelled between batches: an error and no file */
    o.image_size = 0, o.limit = 0, o.count = 1000, o.output = tmp("cancel.h5"), o.cancelled = cancel_at_second_poll;
    CHECK(vlm_prepare(&o, &r) < 0 && strstr(vlm_last_error(), "interrupted"), "%s", vlm_last_error());
    CHECK(polls == 2 && !exists(tmp("cancel.h5")) && !exists(tmp("cancel.h5.tmp")), "cancelled run left a file");
}

static void test_cli(void) {
    CHECK(prepare("--help") == 0 && logged("vlm prepare fashion-mnist") && logged("vlm prepare shapes --count") &&
          logged("vlm prepare folder --images") && logged("vlm prepare coco --annotations") &&
          logged("--val-fraction") && logged("--strict"), "%s", out_log);
    CHECK(prepare("shapes --help") == 0 && logged("usage: vlm prepare"), "%s", out_log);
    CHECK(prepare("%s", "") == 2, "no source");
    CHECK(prepare("nosuch -o x.h5") == 2 && logged("unknown source"), "%s", out_log);
    CHECK(prepare("shapes -o x.h5") == 2 && logged("--count"), "%s", out_log);
    CHECK(prepare("shapes --count 5") == 2 && logged("-o"), "%s", out_log);
    CHECK(prepare("fashion-mnist --count 3 -o x.h5") == 2 && logged("does not apply"), "%s", out_log);
    CHECK(prepare("shapes --count 5 --val-fraction 1 -o x.h5") == 2, "%s", out_log);
    CHECK(prepare("shapes --count 5 --image-size 8 -o x.h5") == 1 && logged("16..4096"), "%s", out_log);
    CHECK(prepare("shapes --count 5 --limit 0 -o x.h5") == 2, "%s", out_log);
    CHECK(!exists(tmp("x.h5")), "bad usage wrote a file");
}

int main(void) {
    vlm_bin = getenv("VLM_BINARY");
    if (!vlm_bin) {
        fprintf(stderr, "VLM_BINARY (path of the vlm executable) is not set\n");
        return 1;
    }
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlm_test_prepare_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    write_images();
    test_fmnist();
    test_shapes();
    test_tsv();
    test_csv_jsonl();
    test_folder_jpeg();
    test_strict();
    test_folder_errors();
    test_coco();
    test_api();
    test_cli();
    if (!test_failed) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd)) fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "inputs and outputs kept in %s\n", tmpdir);
    }
    return TEST_DONE();
}
