/* test_loader.c - the data loader over small datasets written here: coverage
 * per epoch (image and caption units), drop_last, batch contents, determinism
 * across thread counts and queue depths, seeds and epochs, resume from a
 * position (new loader and seek), sharding, worker errors (a corrupt JPEG
 * blob, a failing tokenizer), option errors and shutdown mid-epoch. */
#include "data.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { N = 37, W = 20, H = 16, SIZE = 12, CTX = 24, CLASSES = 5, BAD = 11 };

static char tmpdir[256];
static char raw_path[300], jpeg_path[300], bad_path[300];

/* Image i has i % 3 captions, so a third have none; M = 36. */
static int n_captions(int i) { return i % 3; }

static void caption_text(char *buf, size_t cap, int i, int k) {
    snprintf(buf, cap, "image %d caption %d", i, k);
}

static void make_image(vlm_image *im, int i) {
    vlm_image_alloc(im, W, H);
    uint64_t s = (uint64_t)i * 2654435761u + 1;
    for (int k = 0; k < W * H * 3; k++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        im->rgb[k] = (uint8_t)((k * 7 + i * 31) % 200 + (s >> 60));
    }
}

/* The bytes of a valid JPEG up to the end of its frame header (SOF0): the
 * header probe accepts it, decoding fails (no Huffman tables, no scan). */
static size_t cut_after_sof(const uint8_t *p, size_t n) {
    for (size_t k = 2; k + 4 <= n;) {
        if (p[k] != 0xFF) return 0;
        size_t len = (size_t)p[k + 2] << 8 | p[k + 3];
        if (p[k + 1] == 0xC0) return k + 2 + len;
        k += 2 + len;
    }
    return 0;
}

static int add_image(vlm_dataset_writer *w, int i, bool corrupt) {
    vlm_image im;
    make_image(&im, i);
    int64_t r;
    if (corrupt) {
        uint8_t *jpg;
        size_t n;
        if (vlm_image_encode_jpeg(&im, 90, &jpg, &n)) return -1;
        size_t cut = cut_after_sof(jpg, n);
        r = cut ? vlm_dataset_writer_add_encoded(w, jpg, cut, i % CLASSES) : -1;
        free(jpg);
    } else {
        r = vlm_dataset_writer_add_image(w, &im, i % CLASSES);
    }
    vlm_image_free(&im);
    return r == i ? 0 : -1;
}

static int write_dataset(const char *path, vlm_dataset_layout layout, int corrupt) {
    static const char *const classes[CLASSES] = {"a", "b", "c", "d", "e"};
    vlm_dataset_writer_opts o = {.layout = layout, .height = H, .width = W, .labels = true};
    vlm_dataset_writer *w = vlm_dataset_writer_open(path, &o);
    if (!w) return -1;
    for (int i = 0; i < N; i++)
        if (add_image(w, i, i == corrupt)) goto fail;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < n_captions(i); k++) {
            char buf[64];
            caption_text(buf, sizeof buf, i, k);
            if (vlm_dataset_writer_add_caption(w, buf, i) < 0) goto fail;
        }
    if (vlm_dataset_writer_set_class_names(w, classes, CLASSES)) goto fail;
    return vlm_dataset_writer_close(w);
fail:
    fprintf(stderr, "write %s: %s\n", path, vlm_last_error());
    vlm_dataset_writer_abort(w);
    return -1;
}

/* A byte tokenizer: id = byte + 1, mask 1; fails on texts containing "fail"
 * when user is non-NULL (to test error propagation). */
static int byte_tokenize(void *user, const char *text, int32_t *ids, uint8_t *mask, int ctx) {
    if (user && strstr(text, (const char *)user))
        return vlm_set_error("test tokenizer: refusing '%s'", text);
    int n = 0;
    for (; text[n] && n < ctx; n++) {
        ids[n] = (uint8_t)text[n] + 1;
        mask[n] = 1;
    }
    return n;
}

static vlm_loader_opts base_opts(int bs, bool augment) {
    vlm_loader_opts o = vlm_loader_opts_default(bs, SIZE);
    o.seed = 1234;
    o.tokenize = byte_tokenize;
    o.ctx_len = CTX;
    o.image.random_resized_crop = augment;
    o.image.hflip = augment;
    return o;
}

/* ---- recorded batches ------------------------------------------------------------ */

typedef struct {
    int n;
    int64_t epoch, index;
    bool last;
    int64_t image[64], caption[64];
    int32_t label[64];
    float *pixels;
    int32_t ids[64 * CTX];
    uint8_t mask[64 * CTX];
    char text[64][40];
} rec;

static void record(rec *r, const vlm_batch *b) {
    size_t px = (size_t)b->n * 3 * SIZE * SIZE;
    r->n = b->n;
    r->epoch = b->epoch;
    r->index = b->index;
    r->last = b->last;
    memcpy(r->image, b->image, (size_t)b->n * sizeof *r->image);
    memcpy(r->caption, b->caption, (size_t)b->n * sizeof *r->caption);
    memcpy(r->label, b->label, (size_t)b->n * sizeof *r->label);
    r->pixels = malloc(px * sizeof *r->pixels);
    if (r->pixels) memcpy(r->pixels, b->pixels, px * sizeof *r->pixels);
    memcpy(r->ids, b->ids, (size_t)b->n * CTX * sizeof *r->ids);
    memcpy(r->mask, b->mask, (size_t)b->n * CTX);
    for (int i = 0; i < b->n; i++) snprintf(r->text[i], sizeof r->text[i], "%s", b->text[i]);
}

/* Runs k batches of a new loader into r[0..k); returns how many succeeded. */
static int run(vlm_dataset *ds, const vlm_loader_opts *o, rec *r, int k) {
    vlm_loader *l = vlm_loader_new(ds, o);
    CHECK(l != NULL, "loader_new: %s", vlm_last_error());
    if (!l) return 0;
    int got = 0;
    for (; got < k; got++) {
        const vlm_batch *b = vlm_loader_next(l);
        CHECK(b != NULL, "batch %d: %s", got, vlm_last_error());
        if (!b) break;
        record(&r[got], b);
    }
    vlm_loader_free(l);
    return got;
}

static void free_recs(rec *r, int k) {
    for (int i = 0; i < k; i++) free(r[i].pixels);
}

static bool same_rec(const rec *a, const rec *b) {
    size_t n = (size_t)a->n;
    if (a->n != b->n || a->epoch != b->epoch || a->index != b->index || a->last != b->last)
        return false;
    if (memcmp(a->image, b->image, n * sizeof *a->image) ||
        memcmp(a->caption, b->caption, n * sizeof *a->caption) ||
        memcmp(a->label, b->label, n * sizeof *a->label) ||
        memcmp(a->ids, b->ids, n * CTX * sizeof *a->ids) || memcmp(a->mask, b->mask, n * CTX))
        return false;
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->text[i], b->text[i])) return false;
    return a->pixels && b->pixels && !memcmp(a->pixels, b->pixels, n * 3 * SIZE * SIZE * sizeof(float));
}

static bool same_order(const rec *a, const rec *b, int k) {
    for (int j = 0; j < k; j++)
        if (a[j].n != b[j].n || memcmp(a[j].image, b[j].image, (size_t)a[j].n * sizeof(int64_t)))
            return false;
    return true;
}

/* ---- tests ------------------------------------------------------------------------- */

/* Every sample of one batch against the dataset: caption belongs to the image,
 * text, label, tokens, and (without augmentation) the pixels. */
static void check_contents(vlm_dataset *ds, const rec *r, bool pixels) {
    vlm_image_opts io = vlm_image_opts_default(SIZE);
    float want[3 * SIZE * SIZE];
    for (int i = 0; i < r->n; i++) {
        int64_t img = r->image[i], c = r->caption[i];
        char prefix[64];
        snprintf(prefix, sizeof prefix, "image %lld caption ", (long long)img);
        CHECK(c < 0 ? n_captions((int)img) == 0 : vlm_dataset_caption_image(ds, c) == img,
              "caption %lld of image %lld", (long long)c, (long long)img);
        char *t = c >= 0 ? vlm_dataset_read_caption(ds, c) : NULL;
        CHECK(!strcmp(r->text[i], t ? t : "") && (c < 0 || !strncmp(t, prefix, strlen(prefix))),
              "text '%s'", r->text[i]);
        free(t);
        CHECK(r->label[i] == img % CLASSES, "label %d of image %lld", r->label[i], (long long)img);
        size_t len = strlen(r->text[i]);
        bool ok = true;
        for (int k = 0; k < CTX; k++)
            ok &= k < (int)len ? r->ids[i * CTX + k] == (uint8_t)r->text[i][k] + 1 && r->mask[i * CTX + k]
                               : r->ids[i * CTX + k] == 0 && !r->mask[i * CTX + k];
        CHECK(ok, "tokens of '%s'", r->text[i]);
        if (!pixels) continue;
        vlm_image im;
        if (vlm_dataset_read_image(ds, img, &im) || vlm_image_to_input(&im, &io, NULL, want)) {
            CHECK(0, "reference pixels: %s", vlm_last_error());
            return;
        }
        vlm_image_free(&im);
        CHECK(!memcmp(want, r->pixels + (size_t)i * 3 * SIZE * SIZE, sizeof want), "pixels of sample %d", i);
    }
}

static void test_image_epochs(vlm_dataset *ds) {
    vlm_loader_opts o = base_opts(8, false);
    rec r[10];
    int got = run(ds, &o, r, 10); /* B = 5: two epochs */
    CHECK(got == 10, "got %d", got);
    for (int e = 0; e < 2 && got == 10; e++) {
        int seen[N] = {0};
        for (int k = 0; k < 5; k++) {
            const rec *b = &r[e * 5 + k];
            CHECK(b->epoch == e && b->index == k && b->last == (k == 4), "batch %d of epoch %d", k, e);
            CHECK(b->n == (k < 4 ? 8 : 5), "n %d", b->n);
            for (int i = 0; i < b->n; i++) seen[b->image[i]]++;
            check_contents(ds, b, e == 0);
        }
        bool once = true;
        for (int i = 0; i < N; i++) once &= seen[i] == 1;
        CHECK(once, "every image once in epoch %d", e);
    }
    CHECK(got == 10 && !same_order(r, r + 5, 5), "epoch 1's order differs from epoch 0's");
    free_recs(r, got);
}

static void test_caption_epochs(vlm_dataset *ds) {
    vlm_loader_opts o = base_opts(7, false);
    o.unit = VLM_SAMPLE_CAPTION;
    o.num_threads = 3;
    rec r[12];
    int got = run(ds, &o, r, 12); /* 36 captions: B = 6 */
    for (int e = 0; e < 2 && got == 12; e++) {
        int seen[36] = {0};
        for (int k = 0; k < 6; k++) {
            const rec *b = &r[e * 6 + k];
            CHECK(b->n == (k < 5 ? 7 : 1) && b->epoch == e, "n %d epoch %lld", b->n, (long long)b->epoch);
            for (int i = 0; i < b->n; i++) seen[b->caption[i]]++;
            check_contents(ds, b, false);
        }
        bool once = true;
        for (int j = 0; j < 36; j++) once &= seen[j] == 1;
        CHECK(once, "every caption once in epoch %d", e);
    }
    CHECK(got == 12, "got %d", got);
    free_recs(r, got);
}

static void test_drop_last_and_sequential(vlm_dataset *ds) {
    vlm_loader_opts o = base_opts(8, false);
    o.drop_last = true;
    o.sequential = true;
    vlm_loader *l = vlm_loader_new(ds, &o);
    CHECK(l && vlm_loader_batches_per_epoch(l) == 4 && vlm_loader_samples_per_epoch(l) == N,
          "drop_last: %s", vlm_last_error());
    bool in_order = true;
    for (int k = 0; l && k < 5; k++) {
        const vlm_batch *b = vlm_loader_next(l);
        CHECK(b && b->n == 8 && b->epoch == k / 4 && b->index == k % 4, "batch %d", k);
        for (int i = 0; b && i < b->n; i++) in_order &= b->image[i] == (k % 4) * 8 + i;
    }
    CHECK(in_order, "sequential order, last 5 images dropped");
    vlm_loader_free(l);
}

static void test_determinism(vlm_dataset *ds) {
    enum { K = 12 };
    rec a[K], b[K], c[K];
    vlm_loader_opts o = base_opts(6, true); /* B = 7: two epochs */
    o.num_threads = 1;
    o.queue_depth = 1;
    int na = run(ds, &o, a, K);
    o.num_threads = 3;
    o.queue_depth = 4;
    int nb = run(ds, &o, b, K);
    bool same = na == K && nb == K;
    for (int k = 0; same && k < K; k++) same = same_rec(&a[k], &b[k]);
    CHECK(same, "1 thread depth 1 == 3 threads depth 4 (pixels, ids, indices)");
    o.seed = 99;
    int nc = run(ds, &o, c, K);
    CHECK(nc == K && !same_order(a, c, 7), "another seed gives another order");
    /* augmentation: an image's pixels differ between epochs 0 and 1 */
    int differ = 0, pairs = 0;
    for (int k = 0; na == K && k < 7; k++)
        for (int i = 0; i < a[k].n; i++)
            for (int k2 = 7; k2 < K; k2++)
                for (int i2 = 0; i2 < a[k2].n; i2++)
                    if (a[k2].image[i2] == a[k].image[i]) {
                        pairs++;
                        differ += memcmp(a[k].pixels + i * 3 * SIZE * SIZE,
                                         a[k2].pixels + i2 * 3 * SIZE * SIZE, 3 * SIZE * SIZE * 4) != 0;
                    }
    CHECK(pairs > 10 && differ == pairs, "augmentation changes with the epoch: %d of %d", differ, pairs);
    free_recs(a, na);
    free_recs(b, nb);
    free_recs(c, nc);
}

static void test_resume(vlm_dataset *ds) {
    enum { K = 16 };
    rec full[K];
    vlm_loader_opts o = base_opts(6, true);
    int nf = run(ds, &o, full, K);
    vlm_loader *l = vlm_loader_new(ds, &o);
    for (int k = 0; l && k < 5; k++) CHECK(vlm_loader_next(l), "batch %d", k);
    vlm_loader_pos pos = vlm_loader_position(l);
    CHECK(pos.epoch == 0 && pos.batch == 5, "position %lld/%lld", (long long)pos.epoch, (long long)pos.batch);
    o.start = pos;
    o.num_threads = 3;
    rec r[K - 5];
    int nr = run(ds, &o, r, K - 5);
    bool same = nf == K && nr == K - 5;
    for (int k = 0; same && k < K - 5; k++) same = same_rec(&full[k + 5], &r[k]);
    CHECK(same, "resumed loader gives batches 6.. of the uninterrupted run");
    /* seek on a running loader, back and across an epoch boundary */
    CHECK(l && vlm_loader_seek(l, (vlm_loader_pos){1, 2}) == 0, "seek: %s", vlm_last_error());
    same = nf == K;
    for (int k = 9; l && same && k < K; k++) {
        const vlm_batch *b = vlm_loader_next(l);
        rec x;
        if (b) record(&x, b);
        same = b && same_rec(&full[k], &x);
        if (b) free(x.pixels);
    }
    CHECK(same, "seek(1, 2) gives batches 10..");
    CHECK(l && vlm_loader_seek(l, (vlm_loader_pos){0, 7}) == -1 && strstr(vlm_last_error(), "out of range"),
          "bad seek: %s", vlm_last_error());
    vlm_loader_free(l);
    free_recs(full, nf);
    free_recs(r, nr);
}

static void test_shards(vlm_dataset *ds) {
    int owner[2][N];
    memset(owner, -1, sizeof owner);
    bool disjoint = true;
    for (int rank = 0; rank < 3; rank++) {
        vlm_loader_opts o = base_opts(5, false);
        o.rank = rank;
        o.world_size = 3;
        rec r[6];
        int got = run(ds, &o, r, 6); /* P = 12: B = 3 */
        CHECK(got == 6, "rank %d", rank);
        for (int k = 0; k < got; k++) {
            CHECK(r[k].n == (k % 3 < 2 ? 5 : 2) && r[k].epoch == k / 3, "rank %d batch %d n %d", rank, k, r[k].n);
            for (int i = 0; i < r[k].n; i++) {
                int *w = &owner[r[k].epoch][r[k].image[i]];
                disjoint &= *w < 0;
                *w = rank;
            }
        }
        free_recs(r, got);
    }
    CHECK(disjoint, "ranks see disjoint samples");
    for (int e = 0; e < 2; e++) {
        int covered = 0;
        for (int i = 0; i < N; i++) covered += owner[e][i] >= 0;
        CHECK(covered == 36, "epoch %d: ranks cover %d of 37 (3 * 12)", e, covered);
    }
}

static void test_worker_errors(vlm_dataset *jpeg_ds, vlm_dataset *bad_ds) {
    rec r[5];
    vlm_loader_opts o = base_opts(8, true);
    int got = run(jpeg_ds, &o, r, 5);
    CHECK(got == 5, "jpeg layout");
    free_recs(r, got);
    vlm_loader *l = vlm_loader_new(bad_ds, &o);
    int errors = 0, ok = 0;
    for (int k = 0; l && k < 10; k++) { /* two epochs */
        const vlm_batch *b = vlm_loader_next(l);
        if (b) {
            ok++;
            continue;
        }
        errors++;
        const char *e = vlm_last_error();
        CHECK(strstr(e, "/jpeg[11]") && strstr(e, "image 11") && strstr(e, "epoch"), "error: %s", e);
    }
    CHECK(errors == 2 && ok == 8, "one failed batch per epoch, the others fine (%d, %d)", errors, ok);
    vlm_loader_free(l);
    static char refuse[] = "image 5 caption";
    o.tokenize_user = refuse;
    o.sequential = true;
    l = vlm_loader_new(jpeg_ds, &o);
    const vlm_batch *b = l ? vlm_loader_next(l) : NULL;
    CHECK(!b && strstr(vlm_last_error(), "refusing 'image 5 caption") &&
          strstr(vlm_last_error(), "sample 5 (image 5"), "tokenizer error: %s", vlm_last_error());
    CHECK(l && vlm_loader_next(l), "the next batch is fine");
    vlm_loader_free(l);
}

static void expect_error(vlm_dataset *ds, const vlm_loader_opts *o, const char *what) {
    vlm_loader *l = vlm_loader_new(ds, o);
    CHECK(!l && strstr(vlm_last_error(), what), "want '%s', got '%s'", what, vlm_last_error());
    vlm_loader_free(l);
}

static void test_bad_options(vlm_dataset *ds) {
    vlm_loader_opts o = base_opts(0, false);
    expect_error(ds, &o, "batch_size 0");
    o = base_opts(38, false);
    o.drop_last = true;
    expect_error(ds, &o, "more than the 37");
    o = base_opts(4, false);
    o.rank = 3;
    o.world_size = 3;
    expect_error(ds, &o, "rank 3 of world_size 3");
    o = base_opts(4, false);
    o.image.std[1] = 0;
    expect_error(ds, &o, "image");
    o = base_opts(4, false);
    o.ctx_len = 0;
    expect_error(ds, &o, "ctx_len 0");
    o = base_opts(4, false);
    o.start = (vlm_loader_pos){0, 10};
    expect_error(ds, &o, "out of range");
    expect_error(NULL, &o, "NULL");
}

/* Freeing while workers are busy / before any batch (leaks and races show
 * under the sanitizers). */
static void test_free_mid_epoch(vlm_dataset *ds) {
    vlm_loader_opts o = base_opts(4, true);
    o.num_threads = 3;
    o.queue_depth = 4;
    vlm_loader *l = vlm_loader_new(ds, &o);
    CHECK(l && vlm_loader_next(l) && vlm_loader_next(l), "two batches");
    vlm_loader_free(l);
    vlm_loader_free(vlm_loader_new(ds, &o));
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/vlm_test_loader_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(raw_path, sizeof raw_path, "%s/raw.h5", tmpdir);
    snprintf(jpeg_path, sizeof jpeg_path, "%s/jpeg.h5", tmpdir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.h5", tmpdir);
    int rc = write_dataset(raw_path, VLM_DATASET_RAW, -1) ||
             write_dataset(jpeg_path, VLM_DATASET_JPEG, -1) ||
             write_dataset(bad_path, VLM_DATASET_JPEG, BAD);
    vlm_dataset *raw = rc ? NULL : vlm_dataset_open(raw_path);
    vlm_dataset *jpeg = rc ? NULL : vlm_dataset_open(jpeg_path);
    vlm_dataset *bad = rc ? NULL : vlm_dataset_open(bad_path);
    CHECK(raw && jpeg && bad, "datasets: %s", vlm_last_error());
    if (raw && jpeg && bad) {
        test_image_epochs(raw);
        test_caption_epochs(raw);
        test_drop_last_and_sequential(raw);
        test_determinism(raw);
        test_resume(raw);
        test_shards(raw);
        test_worker_errors(jpeg, bad);
        test_bad_options(raw);
        test_free_mid_epoch(raw);
    }
    vlm_dataset_close(raw);
    vlm_dataset_close(jpeg);
    vlm_dataset_close(bad);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!getenv("VLM_KEEP_TMP") && system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    return TEST_DONE();
}
