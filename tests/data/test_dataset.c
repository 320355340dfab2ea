/* test_dataset.c - the HDF5 dataset writer and reader: round trips in both
 * layouts, streaming past the write buffers, the temp-file-then-rename
 * behaviour, writer input errors, every validation failure of the reader
 * (bad files built here with the raw HDF5 API), and concurrent reads. */
#include "data.h"
#include "test.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }
static bool exists(const char *path) { return access(path, F_OK) == 0; }

enum { N = 5, H = 6, W = 4 };

static uint8_t pix(int i, int y, int x, int c) { return (uint8_t)(i * 50 + y * 9 + x * 5 + c * 3); }

static void make_image(vlm_image *im, int i, int w, int h) {
    vlm_image_alloc(im, w, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < 3; c++)
                im->rgb[(y * w + x) * 3 + c] = pix(i, y, x, c);
}

static const char *captions[] = {
    "a red square", "caf\xc3\xa9 \xe2\x98\x95 on a table", "", "two cats", "a dog",
    "the same dog", "a long caption about nothing"};
static const int64_t caption_img[] = {0, 1, 1, 2, 3, 3, 4};
static const char *classes[] = {"circle", "square", "triangle"};

/* Writes the standard test dataset; returns 0 or -1. */
static int write_dataset(const char *path, vlm_dataset_layout layout, bool in_place) {
    vlm_dataset_writer_opts o = {.layout = layout,
                                 .height = H,
                                 .width = W,
                                 .source = "unit test",
                                 .labels = true,
                                 .jpeg_quality = 95,
                                 .in_place = in_place};
    vlm_dataset_writer *w = vlm_dataset_writer_open(path, &o);
    if (!w) return -1;
    for (int i = 0; i < N; i++) {
        vlm_image im;
        make_image(&im, i, W, H);
        int64_t k = vlm_dataset_writer_add_image(w, &im, i % 3);
        vlm_image_free(&im);
        if (k != i) goto fail;
    }
    for (int j = 0; j < 7; j++)
        if (vlm_dataset_writer_add_caption(w, captions[j], caption_img[j]) != j) goto fail;
    if (vlm_dataset_writer_set_class_names(w, classes, 3)) goto fail;
    return vlm_dataset_writer_close(w);
fail:
    vlm_dataset_writer_abort(w);
    return -1;
}

static void check_contents(vlm_dataset *ds, bool jpeg) {
    CHECK(vlm_dataset_num_images(ds) == N && vlm_dataset_num_captions(ds) == 7, "counts");
    CHECK(vlm_dataset_layout_of(ds) == (jpeg ? VLM_DATASET_JPEG : VLM_DATASET_RAW), "layout");
    int h, w;
    vlm_dataset_image_dims(ds, &h, &w);
    CHECK(jpeg ? (h == 0 && w == 0) : (h == H && w == W), "dims %dx%d", w, h);
    CHECK(vlm_dataset_image_size(ds) == (jpeg ? 0 : H), "image_size %d",
          vlm_dataset_image_size(ds));
    CHECK(!strcmp(vlm_dataset_source(ds), "unit test"), "source '%s'", vlm_dataset_source(ds));
    for (int i = 0; i < N; i++) {
        vlm_image im;
        int rc = vlm_dataset_read_image(ds, i, &im), worst = 0;
        CHECK(rc == 0 && im.width == W && im.height == H, "image %d: %s", i, vlm_last_error());
        for (int y = 0; rc == 0 && y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++)
                    worst = abs(im.rgb[(y * W + x) * 3 + c] - pix(i, y, x, c)) > worst
                                ? abs(im.rgb[(y * W + x) * 3 + c] - pix(i, y, x, c))
                                : worst;
        CHECK(worst <= (jpeg ? 16 : 0), "image %d differs by %d", i, worst);
        vlm_image_free(&im);
        CHECK(vlm_dataset_label(ds, i) == i % 3, "label %d", i);
    }
    for (int j = 0; j < 7; j++) {
        char *s = vlm_dataset_read_caption(ds, j);
        CHECK(s && !strcmp(s, captions[j]), "caption %d: '%s'", j, s ? s : vlm_last_error());
        free(s);
        CHECK(vlm_dataset_caption_image(ds, j) == caption_img[j], "caption_image %d", j);
    }
    CHECK(vlm_dataset_has_labels(ds) && vlm_dataset_num_classes(ds) == 3, "classes");
    CHECK(!strcmp(vlm_dataset_class_name(ds, 2), "triangle") && !vlm_dataset_class_name(ds, 3),
          "names");
    /* out-of-range queries are errors, not crashes */
    vlm_image im;
    CHECK(vlm_dataset_read_image(ds, N, &im) == -1 && has(vlm_last_error(), "out of range"),
          "img N");
    CHECK(vlm_dataset_read_caption(ds, -1) == NULL && has(vlm_last_error(), "out of range"),
          "cap -1");
    CHECK(vlm_dataset_caption_image(ds, 7) == -1, "caption_image 7");
    CHECK(vlm_dataset_label(ds, N) == -1, "label N");
}

static void test_round_trip(void) {
    for (int jpeg = 0; jpeg <= 1; jpeg++) {
        const char *path = tmp_path(jpeg ? "rt_jpeg.h5" : "rt_raw.h5");
        CHECK(write_dataset(path, jpeg ? VLM_DATASET_JPEG : VLM_DATASET_RAW, false) == 0,
              "write: %s", vlm_last_error());
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        CHECK(exists(path) && !exists(tmp), "renamed into place, no temp file left");
        vlm_dataset *ds = vlm_dataset_open(path);
        CHECK(ds != NULL, "open: %s", vlm_last_error());
        if (ds) check_contents(ds, jpeg);
        vlm_dataset_close(ds);
    }
}

/* add_encoded in both layouts, deflate on, no labels, many captions (past
 * the writer's 1024-entry buffers). */
static void test_encoded_and_streaming(void) {
    vlm_image im;
    make_image(&im, 2, W, H);
    uint8_t *jpg;
    size_t jn;
    CHECK(vlm_image_encode_jpeg(&im, 90, &jpg, &jn) == 0, "%s", vlm_last_error());
    for (int jpeg = 0; jpeg <= 1; jpeg++) {
        const char *path = tmp_path("enc.h5");
        vlm_dataset_writer_opts o = {.layout = jpeg, .height = H, .width = W, .deflate = 4};
        vlm_dataset_writer *w = vlm_dataset_writer_open(path, &o);
        CHECK(w != NULL, "%s", vlm_last_error());
        CHECK(vlm_dataset_writer_add_encoded(w, jpg, jn, -1) == 0, "%s", vlm_last_error());
        CHECK(vlm_dataset_writer_add_image(w, &im, -1) == 1, "%s", vlm_last_error());
        CHECK(vlm_dataset_writer_add_encoded(w, "junk", 4, -1) == -1 &&
                  has(vlm_last_error(), "image 2"),
              "junk blob: %s", vlm_last_error());
        char cap[32];
        for (int j = 0; j < 2500; j++) {
            snprintf(cap, sizeof cap, "caption %d", j);
            if (vlm_dataset_writer_add_caption(w, cap, j % 2) != j) break;
        }
        CHECK(vlm_dataset_writer_close(w) == 0, "close: %s", vlm_last_error());
        vlm_dataset *ds = vlm_dataset_open(path);
        CHECK(ds && vlm_dataset_num_images(ds) == 2 && vlm_dataset_num_captions(ds) == 2500,
              "streamed counts: %s", vlm_last_error());
        char *s = ds ? vlm_dataset_read_caption(ds, 2499) : NULL;
        CHECK(s && !strcmp(s, "caption 2499") && vlm_dataset_caption_image(ds, 2499) == 1,
              "last caption");
        free(s);
        s = ds ? vlm_dataset_read_caption(ds, 1024) : NULL;
        CHECK(s && !strcmp(s, "caption 1024"), "caption after the first flush");
        free(s);
        CHECK(ds && !vlm_dataset_has_labels(ds) && vlm_dataset_num_classes(ds) == 0, "no labels");
        vlm_image a, b;
        CHECK(ds && vlm_dataset_read_image(ds, 0, &a) == 0 &&
                  vlm_dataset_read_image(ds, 1, &b) == 0,
              "%s", vlm_last_error());
        /* raw: both are the decoded pixels; jpeg: blob 0 is our bytes as given */
        CHECK(a.rgb && b.rgb && (jpeg || !memcmp(b.rgb, im.rgb, W * H * 3)), "pixels");
        vlm_image_free(&a);
        vlm_image_free(&b);
        vlm_dataset_close(ds);
    }
    free(jpg);
    vlm_image_free(&im);
}

static void test_atomic(void) {
    const char *path = tmp_path("atomic.h5");
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    CHECK(write_dataset(path, VLM_DATASET_RAW, false) == 0, "%s", vlm_last_error());
    struct stat before, after;
    stat(path, &before);

    /* abort: the good file is untouched and the temp file is gone */
    vlm_dataset_writer_opts o = {.layout = VLM_DATASET_RAW, .height = 2, .width = 2};
    vlm_dataset_writer *w = vlm_dataset_writer_open(path, &o);
    vlm_image im;
    make_image(&im, 0, 2, 2);
    CHECK(w && vlm_dataset_writer_add_image(w, &im, -1) == 0, "%s", vlm_last_error());
    CHECK(exists(tmp), "writes go to the temp file");
    vlm_dataset *ds = vlm_dataset_open(path);
    CHECK(ds && vlm_dataset_num_images(ds) == N, "old file readable while writing");
    vlm_dataset_close(ds);
    vlm_dataset_writer_abort(w);
    stat(path, &after);
    CHECK(!exists(tmp), "abort removes the temp file");
    CHECK(before.st_ino == after.st_ino && before.st_size == after.st_size &&
              before.st_mtime == after.st_mtime,
          "abort leaves the existing file untouched");

    /* a failed close behaves like abort */
    w = vlm_dataset_writer_open(path, &o);
    CHECK(w && vlm_dataset_writer_close(w) == -1 && has(vlm_last_error(), "no images"),
          "empty close: %s", vlm_last_error());
    o.labels = true;
    w = vlm_dataset_writer_open(path, &o);
    CHECK(w && vlm_dataset_writer_add_image(w, &im, 5) == 0, "%s", vlm_last_error());
    CHECK(vlm_dataset_writer_set_class_names(w, classes, 3) == 0, "%s", vlm_last_error());
    CHECK(vlm_dataset_writer_close(w) == -1 && has(vlm_last_error(), "labels"), "label 5 of 3: %s",
          vlm_last_error());
    stat(path, &after);
    CHECK(!exists(tmp) && before.st_ino == after.st_ino, "failed closes leave the file untouched");
    ds = vlm_dataset_open(path);
    CHECK(ds && vlm_dataset_num_images(ds) == N, "still the old dataset");
    vlm_dataset_close(ds);

    /* no file at all before: abort leaves none */
    const char *fresh = tmp_path("fresh.h5");
    o.labels = false;
    w = vlm_dataset_writer_open(fresh, &o);
    vlm_dataset_writer_add_image(w, &im, -1);
    vlm_dataset_writer_abort(w);
    snprintf(tmp, sizeof tmp, "%s.tmp", fresh);
    CHECK(!exists(fresh) && !exists(tmp), "abort of a new dataset leaves nothing");
    /* in place: the file itself is written, and abort deletes it */
    o.in_place = true;
    w = vlm_dataset_writer_open(fresh, &o);
    vlm_dataset_writer_add_image(w, &im, -1);
    CHECK(exists(fresh) && !exists(tmp), "in_place writes the path itself");
    vlm_dataset_writer_abort(w);
    CHECK(!exists(fresh), "in_place abort deletes the file");
    CHECK(write_dataset(fresh, VLM_DATASET_RAW, true) == 0 && (ds = vlm_dataset_open(fresh)),
          "in_place close: %s", vlm_last_error());
    vlm_dataset_close(ds);
    vlm_image_free(&im);
}

static void test_writer_errors(void) {
    const char *path = tmp_path("werr.h5");
    vlm_dataset_writer_opts o = {.layout = VLM_DATASET_RAW};
    CHECK(!vlm_dataset_writer_open(path, &o) && has(vlm_last_error(), "image size"), "no size: %s",
          vlm_last_error());
    o = (vlm_dataset_writer_opts){
        .layout = VLM_DATASET_RAW, .height = H, .width = W, .deflate = 12};
    CHECK(!vlm_dataset_writer_open(path, &o) && has(vlm_last_error(), "deflate"), "deflate 12");
    CHECK(!vlm_dataset_writer_open(tmp_path("no/such/dir/x.h5"),
                                   &(vlm_dataset_writer_opts){.layout = VLM_DATASET_JPEG}) &&
              has(vlm_last_error(), "no/such/dir"),
          "bad dir: %s", vlm_last_error());
    o.deflate = 0;
    vlm_dataset_writer *w = vlm_dataset_writer_open(path, &o);
    vlm_image im, wrong;
    make_image(&im, 1, W, H);
    make_image(&wrong, 1, W + 1, H);
    CHECK(vlm_dataset_writer_add_image(w, &wrong, -1) == -1 && has(vlm_last_error(), "5x6"),
          "wrong size: %s", vlm_last_error());
    CHECK(vlm_dataset_writer_add_image(w, &im, 2) == -1 && has(vlm_last_error(), "no labels"),
          "label");
    CHECK(vlm_dataset_writer_add_image(w, &im, -1) == 0, "%s", vlm_last_error());
    CHECK(vlm_dataset_writer_add_caption(w, "x", 1) == -1 && has(vlm_last_error(), "image 1"),
          "caption of a missing image: %s", vlm_last_error());
    CHECK(vlm_dataset_writer_add_caption(w, "bad \xff utf8", 0) == -1 &&
              has(vlm_last_error(), "UTF-8"),
          "bad utf8");
    CHECK(vlm_dataset_writer_add_caption(w, "\xc0\xaf", 0) == -1, "overlong utf8");
    CHECK(vlm_dataset_writer_set_class_names(w, classes, 0) == -1, "0 classes");
    CHECK(vlm_dataset_writer_set_class_names(w, classes, 2) == 0, "%s", vlm_last_error());
    CHECK(vlm_dataset_writer_set_class_names(w, classes, 2) == -1 &&
              has(vlm_last_error(), "already"),
          "twice");
    CHECK(vlm_dataset_writer_add_caption(w, "fine", 0) == 0,
          "errors above did not poison the writer");
    CHECK(vlm_dataset_writer_close(w) == 0, "%s", vlm_last_error());
    vlm_image_free(&im);
    vlm_image_free(&wrong);
}

/* ---- bad files, built with the raw HDF5 API ------------------------------------- */

enum {
    B_OK,
    B_NO_VERSION,
    B_VERSION_2,
    B_NO_IMAGES,
    B_IMAGES_RANK3,
    B_IMAGES_U16,
    B_IMAGES_4CH,
    B_CI_FLOAT,
    B_CI_RANGE,
    B_CI_NEGATIVE,
    B_CI_COUNT,
    B_CAPTIONS_INT,
    B_NO_CAPTIONS,
    B_LABEL_RANGE,
    B_LABELS_LEN,
    B_EXT_LINK,
    B_SOFT_LINK,
    B_EXT_STORAGE,
    B_VIRTUAL,
    B_FLETCHER,
    B_BOTH,
    B_IMAGES_GROUP,
    B_CI_INT32,
    B_LABELS_FLOAT
};

static void put(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                const void *data, hid_t dcpl) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t d = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (d < 0) fprintf(stderr, "cannot create %s\n", name);
    if (data && H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        fprintf(stderr, "cannot write %s\n", name);
    H5Dclose(d);
    H5Sclose(sp);
}

static void put_images(hid_t f, int bad, const char *ext_path) {
    static uint8_t img[N * H * W * 4];
    static uint16_t img16[N * H * W * 3];
    hsize_t d4[4] = {N, H, W, 3}, chunk[4] = {1, H, W, 3};
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (bad == B_IMAGES_RANK3) {
        put(f, "images", H5T_STD_U8LE, 3, (hsize_t[]){N, H, W * 3}, img, H5P_DEFAULT);
    } else if (bad == B_IMAGES_U16) {
        put(f, "images", H5T_STD_U16LE, 4, d4, img16, H5P_DEFAULT);
    } else if (bad == B_IMAGES_4CH) {
        put(f, "images", H5T_STD_U8LE, 4, (hsize_t[]){N, H, W, 4}, img, H5P_DEFAULT);
    } else if (bad == B_EXT_STORAGE) {
        H5Pset_external(dcpl, ext_path, 0, N * H * W * 3);
        put(f, "images", H5T_STD_U8LE, 4, d4, img, dcpl);
    } else if (bad == B_VIRTUAL) {
        hid_t vs = H5Screate_simple(4, d4, NULL);
        H5Pset_virtual(dcpl, vs, "elsewhere.h5", "/images", vs);
        put(f, "images", H5T_STD_U8LE, 4, d4, NULL, dcpl);
        H5Sclose(vs);
    } else if (bad == B_FLETCHER) {
        H5Pset_chunk(dcpl, 4, chunk);
        H5Pset_shuffle(dcpl); /* allowed */
        H5Pset_fletcher32(dcpl);
        put(f, "images", H5T_STD_U8LE, 4, d4, img, dcpl);
    } else if (bad == B_EXT_LINK) {
        H5Lcreate_external("elsewhere.h5", "/images", f, "images", H5P_DEFAULT, H5P_DEFAULT);
    } else if (bad == B_SOFT_LINK) {
        H5Pset_chunk(dcpl, 4, chunk);
        put(f, "real_images", H5T_STD_U8LE, 4, d4, img, dcpl);
        H5Lcreate_soft("/real_images", f, "images", H5P_DEFAULT, H5P_DEFAULT);
    } else if (bad == B_IMAGES_GROUP) {
        H5Gclose(H5Gcreate2(f, "images", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT));
    } else if (bad != B_NO_IMAGES) {
        H5Pset_chunk(dcpl, 4, chunk);
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 1); /* allowed filters */
        put(f, "images", H5T_STD_U8LE, 4, d4, img, dcpl);
    }
    H5Pclose(dcpl);
    if (bad == B_BOTH) {
        hid_t vt = H5Tvlen_create(H5T_STD_U8LE);
        hvl_t blobs[N] = {{0}};
        put(f, "jpeg", vt, 1, (hsize_t[]){N}, blobs, H5P_DEFAULT);
        H5Tclose(vt);
    }
}

static void put_captions(hid_t f, int bad) {
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    H5Tset_cset(st, H5T_CSET_UTF8);
    if (bad == B_CAPTIONS_INT)
        put(f, "captions", H5T_STD_I32LE, 1, (hsize_t[]){7}, caption_img, H5P_DEFAULT);
    else if (bad != B_NO_CAPTIONS)
        put(f, "captions", st, 1, (hsize_t[]){7}, captions, H5P_DEFAULT);
    int64_t ci[8];
    memcpy(ci, caption_img, sizeof caption_img);
    ci[7] = 0;
    if (bad == B_CI_RANGE) ci[5] = N;
    if (bad == B_CI_NEGATIVE) ci[2] = -1;
    double cf[7] = {0};
    int32_t c32[7] = {0, 1, 1, 2, 3, 3, 4};
    if (bad == B_CI_FLOAT)
        put(f, "caption_image", H5T_IEEE_F64LE, 1, (hsize_t[]){7}, cf, H5P_DEFAULT);
    else if (bad == B_CI_INT32) /* h5py users may write int32: accepted */
        put(f, "caption_image", H5T_STD_I32LE, 1, (hsize_t[]){7}, c32, H5P_DEFAULT);
    else
        put(f, "caption_image", H5T_STD_I64LE, 1, (hsize_t[]){bad == B_CI_COUNT ? 8 : 7}, ci,
            H5P_DEFAULT);
    put(f, "class_names", st, 1, (hsize_t[]){3}, classes, H5P_DEFAULT);
    int32_t labels[N + 1] = {0, 1, 2, 0, 1, 2};
    if (bad == B_LABEL_RANGE) labels[3] = 3;
    float lf[N] = {0};
    if (bad == B_LABELS_FLOAT)
        put(f, "labels", H5T_IEEE_F32LE, 1, (hsize_t[]){N}, lf, H5P_DEFAULT);
    else
        put(f, "labels", H5T_STD_I32LE, 1, (hsize_t[]){bad == B_LABELS_LEN ? N + 1 : N}, labels,
            H5P_DEFAULT);
    H5Tclose(st);
}

static void put_attr(hid_t f, const char *name, int64_t v) {
    hid_t sp = H5Screate(H5S_SCALAR),
          a = H5Acreate2(f, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, H5T_NATIVE_INT64, &v);
    H5Aclose(a);
    H5Sclose(sp);
}

static void make_file(const char *path, int bad) {
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (bad != B_NO_VERSION) put_attr(f, "format_version", bad == B_VERSION_2 ? 2 : 1);
    put_attr(f, "image_size", H);
    put_images(f, bad, tmp_path("ext.bin"));
    put_captions(f, bad);
    H5Fclose(f);
}

static void test_validation(void) {
    static const struct {
        int bad;
        const char *a, *b; /* both must appear in the error */
    } cases[] = {
        {B_NO_VERSION, "format_version", "missing"},
        {B_VERSION_2, "format_version 2", "not supported"},
        {B_NO_IMAGES, "'/images'", "missing"},
        {B_IMAGES_RANK3, "'/images'", "rank 4"},
        {B_IMAGES_U16, "'/images'", "uint8"},
        {B_IMAGES_4CH, "'/images'", "[N, H, W, 3]"},
        {B_CI_FLOAT, "'/caption_image'", "integer"},
        {B_CI_RANGE, "'/caption_image'[5] = 5", "not an image index"},
        {B_CI_NEGATIVE, "'/caption_image'[2] = -1", "not an image index"},
        {B_CI_COUNT, "'/caption_image' has 8", "'/captions' has 7"},
        {B_CAPTIONS_INT, "'/captions'", "strings"},
        {B_NO_CAPTIONS, "'/captions'", "missing"},
        {B_LABEL_RANGE, "'/labels'[3] = 3", "out of range"},
        {B_LABELS_LEN, "'/labels' has 6", "5 images"},
        {B_LABELS_FLOAT, "'/labels'", "integer"},
        {B_EXT_LINK, "'/images'", "external link"},
        {B_SOFT_LINK, "'/images'", "soft link"},
        {B_EXT_STORAGE, "'/images'", "external storage"},
        {B_VIRTUAL, "'/images'", "virtual"},
        {B_FLETCHER, "'/images'", "filter"},
        {B_BOTH, "'/images' and '/jpeg'", "only one"},
        {B_IMAGES_GROUP, "'/images'", "not a dataset"},
    };
    const char *ok = tmp_path("ok.h5");
    make_file(ok, B_OK);
    vlm_dataset *ds = vlm_dataset_open(ok);
    CHECK(ds != NULL, "hand-built file opens: %s", vlm_last_error());
    vlm_dataset_close(ds);
    make_file(ok, B_CI_INT32);
    ds = vlm_dataset_open(ok);
    CHECK(ds && vlm_dataset_caption_image(ds, 6) == 4, "int32 caption_image: %s", vlm_last_error());
    vlm_dataset_close(ds);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%d.h5", cases[i].bad);
        const char *path = tmp_path(name);
        make_file(path, cases[i].bad);
        ds = vlm_dataset_open(path);
        const char *e = vlm_last_error();
        CHECK(!ds && has(e, path) && has(e, cases[i].a) && has(e, cases[i].b),
              "case %d: got '%s', want '%s' and '%s'", cases[i].bad, ds ? "(opened)" : e,
              cases[i].a, cases[i].b);
        vlm_dataset_close(ds);
    }
}

static void test_bad_paths(void) {
    CHECK(!vlm_dataset_open(tmp_path("missing.h5")) && has(vlm_last_error(), "missing.h5") &&
              has(vlm_last_error(), "No such file"),
          "missing: %s", vlm_last_error());
    CHECK(!vlm_dataset_open(tmpdir) && has(vlm_last_error(), "not a regular file"), "dir: %s",
          vlm_last_error());
    const char *txt = tmp_path("notes.h5");
    FILE *f = fopen(txt, "w");
    fputs("this is not HDF5\n", f);
    fclose(f);
    CHECK(!vlm_dataset_open(txt) && has(vlm_last_error(), "not an HDF5 file"), "text: %s",
          vlm_last_error());
    /* a truncated HDF5 file */
    const char *good = tmp_path("rt_raw.h5"), *cut = tmp_path("cut.h5");
    FILE *in = fopen(good, "rb"), *out = fopen(cut, "wb");
    char buf[1500];
    size_t n = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    CHECK(!vlm_dataset_open(cut) && has(vlm_last_error(), "cut.h5"), "truncated: %s",
          vlm_last_error());
    /* a corrupt blob in the jpeg layout: open succeeds, reading names the blob */
    const char *jp = tmp_path("badblob.h5");
    hid_t h = H5Fcreate(jp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    put_attr(h, "format_version", 1);
    hid_t vt = H5Tvlen_create(H5T_STD_U8LE);
    hvl_t blob = {.len = 9, .p = "not a jpg"};
    put(h, "jpeg", vt, 1, (hsize_t[]){1}, &blob, H5P_DEFAULT);
    H5Tclose(vt);
    hid_t st = H5Tcopy(H5T_C_S1);
    H5Tset_size(st, H5T_VARIABLE);
    put(h, "captions", st, 1, (hsize_t[]){0}, NULL, H5P_DEFAULT);
    put(h, "caption_image", H5T_STD_I64LE, 1, (hsize_t[]){0}, NULL, H5P_DEFAULT);
    H5Tclose(st);
    H5Fclose(h);
    vlm_dataset *ds = vlm_dataset_open(jp);
    CHECK(ds != NULL, "jpeg file opens: %s", vlm_last_error());
    vlm_image im;
    CHECK(ds && vlm_dataset_read_image(ds, 0, &im) == -1 && has(vlm_last_error(), "/jpeg[0]") &&
              has(vlm_last_error(), "badblob.h5"),
          "bad blob: %s", vlm_last_error());
    vlm_dataset_close(ds);
}

/* ---- concurrent reads ------------------------------------------------------------ */

typedef struct {
    vlm_dataset *raw, *jpeg;
    int seed, errors;
} reader_arg;

static void *reader_thread(void *p) {
    reader_arg *a = p;
    uint32_t s = (uint32_t)a->seed * 2654435761u + 1;
    for (int it = 0; it < 300; it++) {
        s = s * 1664525u + 1013904223u;
        int i = (int)(s >> 8) % N, j = (int)(s >> 16) % 7;
        vlm_image im;
        vlm_dataset *ds = (s >> 28) & 1 ? a->jpeg : a->raw;
        if (vlm_dataset_read_image(ds, i, &im) || abs(im.rgb[3] - pix(i, 0, 1, 0)) > 16)
            a->errors++;
        vlm_image_free(&im);
        char *c = vlm_dataset_read_caption(ds, j);
        if (!c || strcmp(c, captions[j])) a->errors++;
        free(c);
    }
    return NULL;
}

static void test_threads(void) {
    vlm_dataset *raw = vlm_dataset_open(tmp_path("rt_raw.h5")),
                *jpeg = vlm_dataset_open(tmp_path("rt_jpeg.h5"));
    CHECK(raw && jpeg, "open: %s", vlm_last_error());
    if (!raw || !jpeg) return;
    pthread_t t[4];
    reader_arg args[4];
    for (int k = 0; k < 4; k++) {
        args[k] = (reader_arg){raw, jpeg, k, 0};
        pthread_create(&t[k], NULL, reader_thread, &args[k]);
    }
    int errors = 0;
    for (int k = 0; k < 4; k++) {
        pthread_join(t[k], NULL);
        errors += args[k].errors;
    }
    CHECK(errors == 0, "%d wrong reads from 4 threads", errors);
    vlm_dataset_close(raw);
    vlm_dataset_close(jpeg);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/vlm_test_dataset_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_round_trip();
    test_encoded_and_streaming();
    test_atomic();
    test_writer_errors();
    test_validation();
    test_bad_paths();
    test_threads();
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!getenv("VLM_KEEP_TMP") && system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_DONE();
}
