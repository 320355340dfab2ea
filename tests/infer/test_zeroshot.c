/* test_zeroshot.c - the contrastive side through the command line, on a
 * tiny random SigLIP saved as a run directory (config.json +
 * model.safetensors from vlm_st_save_params + a trained tokenizer.json):
 *  - vlm classify prints every image with its top-k labels, softmax scores
 *    that sum to 1 over all labels and come best first, equal to a direct
 *    library computation (bundle -> class vectors -> image embedding), and
 *    sigmoid / cosine scores as defined;
 *  - vlm retrieve --text / --image rank as a direct computation, and
 *    --recall prints R@1 <= R@5 <= R@10 = 1 (8 images, 1 caption each),
 *    equal to vlm_retrieval_recall on the library's embeddings;
 *  - vlm embed writes image_embeds / text_embeds / names / caption_image /
 *    labels that the HDF5 C API (and h5py, when installed) reads back equal
 *    to the library's embeddings;
 *  - the bundle loads from a checkpoint-style file with vlm.config metadata,
 *    and reads a Hugging Face SigLIP directory's config and weights;
 *  - bad inputs (missing model, missing / corrupt image, bad options) fail
 *    with a clear message and a non-zero status. */
#include "fixtures/rundir.h"

#include <hdf5/serial/hdf5.h>

enum { NI = 8 };

static char run[512], img[3][512], data[512];

static void setup(void) {
    make_tmpdir("zeroshot");
    vlm_model_cfg cfg = tiny_cfg("siglip", 300);
    vlm_model *m = random_model(&cfg, 3, 0.2f);
    snprintf(run, sizeof run, "%s", tmp("run"));
    write_run(run, m);
    vlm_model_free(m);
    for (int i = 0; i < 3; i++) {
        char name[32];
        snprintf(name, sizeof name, "img%d.png", i);
        snprintf(img[i], sizeof img[i], "%s", tmp(name));
        write_png(img[i], 24 + 4 * i, 20, i);
    }
    snprintf(data, sizeof data, "%s", tmp("data.h5"));
    write_dataset(data, NI, 1, true);
}

/* The scores classify should print for image `path`, from the library. */
static void library_scores(const char *path, char *const *labels, int k, float *cos) {
    vlm_bundle *b = vlm_bundle_load(run, NULL);
    CHECK(b, "bundle: %s", vlm_last_error());
    if (!b) return;
    int D = vlm_bundle_embed_dim(b);
    float *cls = malloc((size_t)k * D * sizeof *cls), *px = malloc(3 * 16 * 16 * sizeof *px), e[64];
    vlm_ctx *ctx = vlm_ctx_new(0);
    CHECK(vlm_bundle_class_vectors(ctx, b, (const char *const *)labels, k, vlm_class_templates,
                                   VLM_CLASS_TEMPLATES, 4, cls) == 0 &&
              vlm_bundle_load_image(b, path, px) == 0 && vlm_bundle_embed_images(ctx, b, px, 1, 1, e) == 0,
          "%s", vlm_last_error());
    for (int c = 0; c < k; c++) {
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)e[i] * cls[c * D + i];
        cos[c] = (float)s;
    }
    cos[k] = vlm_bundle_logit_scale(b), cos[k + 1] = vlm_bundle_logit_bias(b);
    vlm_ctx_free(ctx);
    free(cls), free(px);
    vlm_bundle_free(b);
}

/* Parses "  SCORE  LABEL" lines after the line naming path. */
static int parse_block(const char *out, const char *path, float *score, char labels[][32], int max) {
    const char *p = strstr(out, path);
    if (!p) return -1;
    p = strchr(p, '\n');
    int n = 0;
    while (p && n < max && p[1] == ' ') {
        if (sscanf(p + 1, " %f %31[^\n]", &score[n], labels[n]) != 2) break;
        n++;
        p = strchr(p + 1, '\n');
    }
    return n;
}

static int label_index(char *const *labels, int k, const char *name) {
    for (int c = 0; c < k; c++)
        if (!strcmp(labels[c], name)) return c;
    return -1;
}

static void test_classify(void) {
    char *labels[] = {"red disc", "green disc", "blue disc", "apple"};
    char cmd[4096], got[4][32];
    float s[4], cos[6];
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels 'red disc, green disc,blue disc,apple' "
             "--top-k 4 '%s' '%s' '%s'", run, img[0], img[1], img[2]);
    CHECK(vlm_run(cmd) == 0, "classify failed: %s", err_buf);
    for (int i = 0; i < 3; i++) {
        int n = parse_block(out_buf, img[i], s, got, 4);
        CHECK(n == 4, "image %d: %d score lines in\n%s", i, n, out_buf);
        if (n != 4) continue;
        library_scores(img[i], labels, 4, cos);
        double sum = 0, mx = -1e30, z = 0;
        for (int c = 0; c < 4; c++) mx = fmax(mx, cos[4] * cos[c]);
        for (int c = 0; c < 4; c++) z += exp(cos[4] * cos[c] - mx);
        for (int r = 0; r < 4; r++) {
            int c = label_index(labels, 4, got[r]);
            CHECK(c >= 0, "unknown label '%s'", got[r]);
            if (c < 0) continue;
            CHECK_NEAR(s[r], exp(cos[4] * cos[c] - mx) / z, 2e-6);
            if (r) CHECK(s[r] <= s[r - 1], "not best first");
            sum += s[r];
        }
        CHECK_NEAR(sum, 1.0, 1e-5);
    }
    /* sigmoid: independent probabilities; cosine: the similarity */
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels 'red disc,green disc,blue disc,apple' "
             "--score sigmoid -k 2 '%s'", run, img[0]);
    CHECK(vlm_run(cmd) == 0 && parse_block(out_buf, img[0], s, got, 4) == 2, "sigmoid: %s%s", out_buf, err_buf);
    library_scores(img[0], labels, 4, cos);
    int c = label_index(labels, 4, got[0]);
    if (c >= 0) CHECK_NEAR(s[0], 1 / (1 + exp(-(cos[4] * cos[c] + cos[5]))), 2e-6);
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels 'red disc,green disc,blue disc,apple' "
             "--score cosine -k 1 '%s'", run, img[0]);
    CHECK(vlm_run(cmd) == 0 && parse_block(out_buf, img[0], s, got, 4) == 1, "cosine: %s%s", out_buf, err_buf);
    c = label_index(labels, 4, got[0]);
    if (c >= 0) CHECK_NEAR(s[0], cos[c], 2e-6);
    /* a templates file and -k larger than the labels */
    write_text(tmp("templates.txt"), "a photo of {}\n\nan image showing {}\n");
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels 'cat,dog' --templates '%s' -k 9 '%s'",
             run, tmp("templates.txt"), img[1]);
    CHECK(vlm_run(cmd) == 0 && parse_block(out_buf, img[1], s, got, 4) == 2, "templates: %s%s", out_buf, err_buf);
}

/* Embeddings of the dataset from the library: images [NI, D], captions [NI, D]. */
static int library_embeddings(float *ie, float *te) {
    vlm_bundle *b = vlm_bundle_load(run, NULL);
    vlm_dataset *ds = vlm_dataset_open(data);
    vlm_ctx *ctx = vlm_ctx_new(0);
    float *px = malloc((size_t)NI * 3 * 16 * 16 * sizeof *px);
    char *caps[NI] = {0};
    int rc = b && ds && ctx && px ? 0 : -1;
    for (int i = 0; !rc && i < NI; i++) {
        vlm_image im;
        rc = vlm_dataset_read_image(ds, i, &im) || vlm_image_to_input(&im, &b->image, NULL, px + i * 768);
        vlm_image_free(&im);
        if (!rc && !(caps[i] = vlm_dataset_read_caption(ds, i))) rc = -1;
    }
    if (!rc) rc = vlm_bundle_embed_images(ctx, b, px, NI, 3, ie);
    if (!rc) rc = vlm_bundle_embed_texts(ctx, b, (const char *const *)caps, NI, 5, te);
    CHECK(rc == 0, "library embeddings: %s", vlm_last_error());
    int D = b ? vlm_bundle_embed_dim(b) : 0;
    for (int i = 0; i < NI; i++) free(caps[i]);
    free(px);
    vlm_ctx_free(ctx);
    vlm_dataset_close(ds);
    vlm_bundle_free(b);
    return D;
}

static void test_retrieve(void) {
    float ie[NI * 64], te[NI * 64];
    int D = library_embeddings(ie, te);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "retrieve --model '%s' --dataset '%s' --recall --batch-size 3", run, data);
    CHECK(vlm_run(cmd) == 0, "recall: %s", err_buf);
    double t2i[3], i2t[3], want_t[3], want_i[3];
    const char *p = strstr(out_buf, "text->image");
    CHECK(p && sscanf(p, "text->image R@1 %lf R@5 %lf R@10 %lf", &t2i[0], &t2i[1], &t2i[2]) == 3,
          "no text->image line in\n%s", out_buf);
    p = strstr(out_buf, "image->text");
    CHECK(p && sscanf(p, "image->text R@1 %lf R@5 %lf R@10 %lf", &i2t[0], &i2t[1], &i2t[2]) == 3,
          "no image->text line in\n%s", out_buf);
    int64_t owner[NI];
    for (int i = 0; i < NI; i++) owner[i] = i;
    CHECK(vlm_retrieval_recall(ie, NI, te, NI, D, owner, want_t, want_i) == 0, "%s", vlm_last_error());
    for (int k = 0; k < 3; k++) {
        CHECK_NEAR(t2i[k], want_t[k], 6e-5);
        CHECK_NEAR(i2t[k], want_i[k], 6e-5);
        if (k) CHECK(t2i[k] >= t2i[k - 1] && i2t[k] >= i2t[k - 1], "R@K not monotone");
    }
    CHECK(t2i[2] == 1 && i2t[2] == 1, "R@10 with 8 items must be 1: %g %g", t2i[2], i2t[2]);
    /* a text query: the best image is the library's best for that caption */
    snprintf(cmd, sizeof cmd, "retrieve --model '%s' --dataset '%s' --text 'a red disc number 0' -k 3", run, data);
    int best = -1, rank;
    float score;
    CHECK(vlm_run(cmd) == 0 && sscanf(out_buf, "%d %f image %d", &rank, &score, &best) == 3 && rank == 1,
          "text query: %s%s", out_buf, err_buf);
    int lines = 0;
    for (const char *q = out_buf; (q = strchr(q, '\n')); q++) lines++;
    CHECK(lines == 3, "-k 3 printed %d lines", lines);
    CHECK(strstr(out_buf, "red") || strstr(out_buf, "green") || strstr(out_buf, "blue"), "no class names: %s", out_buf);
    snprintf(cmd, sizeof cmd, "retrieve --model '%s' --dataset '%s' --image '%s' -k 2", run, data, img[2]);
    CHECK(vlm_run(cmd) == 0 && strstr(out_buf, "disc number"), "image query: %s%s", out_buf, err_buf);
}

static double *read_h5(hid_t f, const char *name, int64_t *rows, int64_t *cols) {
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) return NULL;
    hid_t s = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    int rank = H5Sget_simple_extent_dims(s, dims, NULL);
    *rows = (int64_t)dims[0], *cols = rank == 2 ? (int64_t)dims[1] : 1;
    double *x = malloc((size_t)(*rows * *cols) * sizeof *x);
    H5Dread(d, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, x);
    H5Sclose(s);
    H5Dclose(d);
    return x;
}

static void test_embed(void) {
    float ie[NI * 64], te[NI * 64];
    int D = library_embeddings(ie, te);
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "embed --model '%s' --dataset '%s' -o '%s'", run, data, tmp("emb.h5"));
    CHECK(vlm_run(cmd) == 0, "embed: %s", err_buf);
    hid_t f = H5Fopen(tmp("emb.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    CHECK(f >= 0, "cannot open the output");
    if (f < 0) return;
    int64_t r, c;
    double *x = read_h5(f, "image_embeds", &r, &c);
    CHECK(x && r == NI && c == D, "image_embeds [%lld, %lld]", (long long)r, (long long)c);
    for (int i = 0; x && i < NI * D; i++) CHECK_NEAR(x[i], ie[i], 1e-6);
    free(x);
    x = read_h5(f, "text_embeds", &r, &c);
    CHECK(x && r == NI && c == D, "text_embeds [%lld, %lld]", (long long)r, (long long)c);
    for (int i = 0; x && i < NI * D; i++) CHECK_NEAR(x[i], te[i], 1e-6);
    free(x);
    x = read_h5(f, "caption_image", &r, &c);
    CHECK(x && r == NI && x[5] == 5, "caption_image");
    free(x);
    x = read_h5(f, "labels", &r, &c);
    CHECK(x && r == NI && x[7] == 1, "labels");
    free(x);
    hid_t d = H5Dopen2(f, "names", H5P_DEFAULT);
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    char *names[NI] = {0};
    CHECK(d >= 0 && H5Dread(d, t, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) >= 0 && names[3] &&
              !strcmp(names[3], "data.h5:3"), "names[3] = %s", names[3] ? names[3] : "(none)");
    for (int i = 0; i < NI; i++) H5free_memory(names[i]);
    H5Tclose(t);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    /* h5py, when installed, reads it too */
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 -c 'import h5py' 2>/dev/null && /usr/bin/python3 -c \""
             "import h5py; f = h5py.File('%s', 'r'); assert f['image_embeds'].shape == (%d, %d); "
             "assert f['names'].asstr()[0] == 'data.h5:0'; assert f.attrs['embed_dim'] == %d\"",
             tmp("emb.h5"), NI, D, D);
    int st = system(cmd);
    CHECK(st == 0 || WEXITSTATUS(st) == 1, "h5py could not read the file (status %d)", st);
    /* text file mode */
    write_text(tmp("texts.txt"), "a red disc\na green disc\n");
    snprintf(cmd, sizeof cmd, "embed --model '%s' --text '%s' -o '%s'", run, tmp("texts.txt"), tmp("t.h5"));
    CHECK(vlm_run(cmd) == 0 && strstr(err_buf, "2 text"), "embed --text: %s", err_buf);
}

/* The same weights as a lone file carrying its config as metadata. */
static void test_checkpoint_file(void) {
    vlm_model_cfg cfg = tiny_cfg("siglip", 300);
    vlm_model *m = random_model(&cfg, 3, 0.2f);
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "model", vlm_cfg_to_json(vlm_model_cfg_fields, &cfg));
    char *json = cJSON_PrintUnformatted(root);
    const char *meta[] = {"vlm.config", json, NULL};
    mkdir(tmp("other"), 0755);
    CHECK(vlm_st_save_params(m->params, tmp("other/weights.safetensors"), meta, NULL) == 0, "%s", vlm_last_error());
    vlm_bundle_opts o = {.tokenizer = tmp("run/tokenizer.json")};
    vlm_bundle *b = vlm_bundle_load(tmp("other/weights.safetensors"), &o);
    CHECK(b && b->model->cfg.text.vocab == 300, "bundle from metadata: %s", vlm_last_error());
    vlm_bundle_free(b);
    b = vlm_bundle_load(tmp("other/weights.safetensors"), NULL);
    CHECK(!b && strstr(vlm_last_error(), "tokenizer"), "no tokenizer: %s", vlm_last_error());
    free(json);
    cJSON_Delete(root);
    vlm_model_free(m);
    /* a Hugging Face SigLIP directory: config and weights load (the text
     * vocabulary, 50, comes from the weights); no shipped SentencePiece
     * model is that small, so the tokenizer check is what stops it */
    char hf[1024], spm[1024];
    const char *src = getenv("VLM_SOURCE_DIR");
    snprintf(hf, sizeof hf, "%s/tests/nn/fixtures/hf/siglip", src ? src : ".");
    snprintf(spm, sizeof spm, "%s/tests/data/fixtures/spm/small.model", src ? src : ".");
    o.tokenizer = spm;
    b = vlm_bundle_load(hf, &o);
    CHECK(!b && strstr(vlm_last_error(), "model.text.vocab is 50"), "HF SigLIP: %s", vlm_last_error());
    vlm_bundle_free(b);
}

static void expect_fail(const char *args, int status, const char *needle) {
    int st = vlm_run(args);
    CHECK(st == status && strstr(err_buf, "error: ") && strstr(err_buf, needle),
          "vlm %s: status %d, stderr: %s (expected %d and \"%s\")", args, st, err_buf, status, needle);
}

static void test_bad_inputs(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels a,b '%s'", tmp("nope"), img[0]);
    expect_fail(cmd, 1, tmp("nope"));
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels a,b '%s'", run, tmp("missing.png"));
    expect_fail(cmd, 1, "missing.png");
    write_text(tmp("corrupt.png"), "\x89PNG\r\n\x1a\nthis is not a png");
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels a,b '%s'", run, tmp("corrupt.png"));
    expect_fail(cmd, 1, "corrupt.png");
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels 'a,,b' '%s'", run, img[0]);
    expect_fail(cmd, 1, "empty");
    snprintf(cmd, sizeof cmd, "classify --model '%s' '%s'", run, img[0]);
    expect_fail(cmd, 2, "--labels");
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels a --frobnicate '%s'", run, img[0]);
    expect_fail(cmd, 2, "--frobnicate");
    write_text(tmp("bad_templates.txt"), "a photo of\n");
    snprintf(cmd, sizeof cmd, "classify --model '%s' --labels a --templates '%s' '%s'", run, tmp("bad_templates.txt"), img[0]);
    expect_fail(cmd, 1, "{}");
    snprintf(cmd, sizeof cmd, "retrieve --model '%s' --dataset '%s' --text x --image y", run, data);
    expect_fail(cmd, 2, "exactly one");
    snprintf(cmd, sizeof cmd, "retrieve --model '%s' --dataset '%s' --text x", run, tmp("none.h5"));
    expect_fail(cmd, 1, "none.h5");
    snprintf(cmd, sizeof cmd, "embed --model '%s' --images '%s' -o '%s'", run, tmp("run"), tmp("x.h5"));
    expect_fail(cmd, 1, "no image files");
    snprintf(cmd, sizeof cmd, "embed --model '%s' --dataset '%s' -o '%s'", run, data, tmp("no/dir/x.h5"));
    expect_fail(cmd, 1, "x.h5");
    for (const char *const *c = (const char *const[]){"classify", "retrieve", "caption", "embed", NULL}; *c; c++) {
        snprintf(cmd, sizeof cmd, "%s --help", *c);
        CHECK(vlm_run(cmd) == 0 && strstr(out_buf, "usage: vlm") && strstr(out_buf, "example"), "%s --help", *c);
    }
}

int main(void) {
    setup();
    test_classify();
    test_retrieve();
    test_embed();
    test_checkpoint_file();
    test_bad_inputs();
    remove_tmpdir();
    return TEST_DONE();
}
