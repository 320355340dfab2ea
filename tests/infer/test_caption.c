/* test_caption.c - `vlm caption` and the captioner side of `vlm embed`
 * through the command line, on a tiny random captioner saved as a run
 * directory with images written by stb_image_write:
 *  - greedy captions print as IMAGE<TAB>CAPTION and equal the library's
 *    (vlm_bundle_caption with the same prompt, specials and max tokens);
 *  - sampling through the CLI is reproducible for a seed and differs for
 *    another; --top-k 1 equals greedy;
 *  - --dataset scoring prints BLEU-1..4 / CIDEr-D equal to the metrics of
 *    the library's captions against the dataset's captions;
 *  - vlm embed --images writes fused embeddings equal to the library's;
 *  - bad inputs: missing model, missing / corrupt image, bad --top-p /
 *    --temperature, --greedy with sampling, too many tokens, a SigLIP model. */
#include "fixtures/rundir.h"

#include <hdf5/serial/hdf5.h>

static char run[512], sig[512], img[2][512], data[512];

static void setup(void) {
    make_tmpdir("caption");
    vlm_model_cfg cfg = tiny_cfg("captioner", 300);
    vlm_model *m = random_model(&cfg, 4, 0.3f);
    snprintf(run, sizeof run, "%s", tmp("cap"));
    write_run(run, m);
    vlm_model_free(m);
    cfg = tiny_cfg("siglip", 300);
    m = random_model(&cfg, 5, 0.2f);
    snprintf(sig, sizeof sig, "%s", tmp("sig"));
    write_run(sig, m);
    vlm_model_free(m);
    mkdir(tmp("imgs"), 0755);
    snprintf(img[0], sizeof img[0], "%s", tmp("imgs/a.png"));
    snprintf(img[1], sizeof img[1], "%s", tmp("imgs/b.png"));
    write_png(img[0], 24, 20, 0);
    write_png(img[1], 18, 30, 3);
    snprintf(data, sizeof data, "%s", tmp("data.h5"));
    write_dataset(data, 5, 2, false);
}

/* The caption of line `path\t...` of out_buf, into cap (tabs/newlines as spaces). */
static bool caption_of(const char *path, char *cap, size_t n) {
    char key[1100];
    snprintf(key, sizeof key, "%s\t", path);
    const char *p = strstr(out_buf, key);
    if (!p) return false;
    p += strlen(key);
    size_t len = strcspn(p, "\n");
    snprintf(cap, n, "%.*s", (int)len, p);
    return true;
}

static void sanitize(char *s) {
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t') *s = ' ';
}

/* Library captions with the CLI's defaults (prompt, specials, max tokens). */
static void library_captions(const vlm_gen_opts *base, char **caps) {
    vlm_bundle *b = vlm_bundle_load(run, NULL);
    CHECK(b, "bundle: %s", vlm_last_error());
    if (!b) return;
    float *px = malloc(2 * 768 * sizeof *px);
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_gen_opts o = *base;
    o.bos_id = b->bos_id, o.eos_id = b->eos_id, o.pad_id = b->pad_id;
    CHECK(b->bos_id == 1 && b->eos_id == 2 && b->pad_id == 0, "specials %d %d %d", b->bos_id, b->eos_id, b->pad_id);
    /* 16 image tokens + 8 prompt ids leave 48 - 24 = 24 of the default 32 */
    if (!o.max_tokens) o.max_tokens = 24;
    CHECK(vlm_bundle_load_image(b, img[0], px) == 0 && vlm_bundle_load_image(b, img[1], px + 768) == 0 &&
              vlm_bundle_caption(ctx, b, px, 2, "describe the image", 8, &o, caps, NULL) == 0,
          "library caption: %s", vlm_last_error());
    vlm_ctx_free(ctx);
    free(px);
    vlm_bundle_free(b);
}

static void test_greedy(void) {
    char cmd[4096], got[2][4096];
    snprintf(cmd, sizeof cmd, "caption --model '%s' '%s' '%s'", run, img[0], img[1]);
    CHECK(vlm_run(cmd) == 0, "caption: %s", err_buf);
    vlm_gen_opts o = vlm_gen_opts_default();
    o.max_tokens = 0;
    char *caps[2] = {0};
    library_captions(&o, caps);
    for (int i = 0; i < 2; i++) {
        CHECK(caption_of(img[i], got[i], sizeof got[i]), "no line for %s in\n%s", img[i], out_buf);
        if (caps[i]) sanitize(caps[i]);
        CHECK(caps[i] && !strcmp(got[i], caps[i]), "CLI \"%s\" != library \"%s\"", got[i], caps[i] ? caps[i] : "");
        free(caps[i]);
    }
    /* batch size 1 gives the same captions */
    snprintf(cmd, sizeof cmd, "caption --model '%s' --greedy --batch-size 1 '%s' '%s'", run, img[0], img[1]);
    char again[4096];
    CHECK(vlm_run(cmd) == 0 && caption_of(img[1], again, sizeof again) && !strcmp(again, got[1]),
          "batch 1: \"%s\" vs \"%s\"", again, got[1]);
    /* top-k 1 sampling is greedy */
    snprintf(cmd, sizeof cmd, "caption --model '%s' --top-k 1 --seed 5 '%s' '%s'", run, img[0], img[1]);
    CHECK(vlm_run(cmd) == 0 && caption_of(img[0], again, sizeof again) && !strcmp(again, got[0]),
          "top-k 1: \"%s\" vs \"%s\"", again, got[0]);
}

static void test_sampling(void) {
    static char a[sizeof out_buf], b[sizeof out_buf];
    char cmd[4096];
    const char *fmt = "caption --model '%s' --temperature 1.5 --top-p 0.95 --seed %d --max-tokens 12 '%s' '%s'";
    snprintf(cmd, sizeof cmd, fmt, run, 7, img[0], img[1]);
    CHECK(vlm_run(cmd) == 0, "sampling: %s", err_buf);
    snprintf(a, sizeof a, "%s", out_buf);
    CHECK(vlm_run(cmd) == 0 && !strcmp(a, out_buf), "seed 7 twice:\n%s\n%s", a, out_buf);
    snprintf(cmd, sizeof cmd, fmt, run, 8, img[0], img[1]);
    CHECK(vlm_run(cmd) == 0, "sampling: %s", err_buf);
    snprintf(b, sizeof b, "%s", out_buf);
    CHECK(strcmp(a, b), "seeds 7 and 8 gave the same captions:\n%s", a);
    /* and the library agrees with the CLI for seed 7 */
    vlm_gen_opts o = vlm_gen_opts_default();
    o.sample = true, o.temperature = 1.5f, o.top_p = 0.95f, o.seed = 7, o.max_tokens = 12;
    char *caps[2] = {0}, got[4096];
    library_captions(&o, caps);
    if (caps[0]) sanitize(caps[0]);
    snprintf(out_buf, sizeof out_buf, "%s", a);
    CHECK(caption_of(img[0], got, sizeof got) && caps[0] && !strcmp(got, caps[0]), "seed 7: \"%s\" vs \"%s\"",
          got, caps[0] ? caps[0] : "");
    free(caps[0]), free(caps[1]);
}

/* --dataset: the printed scores are the metrics of the printed captions. */
static void test_dataset_scores(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "caption --model '%s' --dataset '%s' --max-tokens 6 --batch-size 2", run, data);
    CHECK(vlm_run(cmd) == 0, "caption --dataset: %s", err_buf);
    double want[5], got[5];
    const char *p = strstr(out_buf, "BLEU-1");
    CHECK(p && sscanf(p, "BLEU-1 %lf BLEU-2 %lf BLEU-3 %lf BLEU-4 %lf CIDEr-D %lf", &got[0], &got[1],
                      &got[2], &got[3], &got[4]) == 5, "no scores in\n%s", out_buf);
    if (!p) return;
    char *hyps[5] = {0}, *refs[10] = {0};
    vlm_dataset *ds = vlm_dataset_open(data);
    for (int i = 0; i < 5; i++) {
        char key[16];
        snprintf(key, sizeof key, "%d\t", i);
        const char *q = out_buf;
        while (q && strncmp(q, key, strlen(key))) q = (q = strchr(q, '\n')) ? q + 1 : NULL;
        CHECK(q, "no line %d in\n%s", i, out_buf);
        hyps[i] = q ? strndup(q + strlen(key), strcspn(q + strlen(key), "\n")) : strdup("");
        refs[2 * i] = vlm_dataset_read_caption(ds, 2 * i);
        refs[2 * i + 1] = vlm_dataset_read_caption(ds, 2 * i + 1);
    }
    const int64_t start[6] = {0, 2, 4, 6, 8, 10};
    vlm_caption_corpus c = {5, (const char *const *)hyps, (const char *const *)refs, start, true};
    CHECK(vlm_bleu(&c, want) == 0 && vlm_cider_d(&c, &want[4], NULL) == 0, "%s", vlm_last_error());
    for (int k = 0; k < 5; k++) CHECK_NEAR(got[k], want[k], 6e-5);
    for (int i = 0; i < 10; i++) free(refs[i]);
    for (int i = 0; i < 5; i++) free(hyps[i]);
    vlm_dataset_close(ds);
    snprintf(cmd, sizeof cmd, "caption --model '%s' --dataset '%s' --limit 2 --quiet", run, data);
    CHECK(vlm_run(cmd) == 0 && !strncmp(out_buf, "BLEU-1", 6) && strstr(out_buf, "(2 images, 4 references)"),
          "--quiet --limit 2: %s%s", out_buf, err_buf);
}

static void test_embed_fused(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "embed --model '%s' --images '%s' --prompt 'a photo' -o '%s'", run, tmp("imgs"), tmp("f.h5"));
    CHECK(vlm_run(cmd) == 0, "embed: %s", err_buf);
    vlm_bundle *b = vlm_bundle_load(run, NULL);
    float px[2 * 768], want[2 * 24], got[2 * 24] = {0};
    vlm_ctx *ctx = vlm_ctx_new(0);
    const char *prompts[2] = {"a photo", "a photo"};
    CHECK(b && vlm_bundle_load_image(b, img[0], px) == 0 && vlm_bundle_load_image(b, img[1], px + 768) == 0 &&
              vlm_bundle_embed_fused(ctx, b, px, prompts, 2, 2, want) == 0, "%s", vlm_last_error());
    hid_t f = H5Fopen(tmp("f.h5"), H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = f >= 0 ? H5Dopen2(f, "fused_embeds", H5P_DEFAULT) : -1;
    CHECK(d >= 0 && H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, got) >= 0, "no fused_embeds");
    for (int i = 0; i < 2 * 24; i++) CHECK_NEAR(got[i], want[i], 1e-6);
    if (d >= 0) H5Dclose(d);
    if (f >= 0) H5Fclose(f);
    vlm_ctx_free(ctx);
    vlm_bundle_free(b);
}

static void expect_fail(const char *args, int status, const char *needle) {
    int st = vlm_run(args);
    CHECK(st == status && strstr(err_buf, "error: ") && strstr(err_buf, needle),
          "vlm %s: status %d, stderr: %s (expected %d and \"%s\")", args, st, err_buf, status, needle);
}

static void test_bad_inputs(void) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "caption --model '%s' '%s'", tmp("missing-run"), img[0]);
    expect_fail(cmd, 1, "missing-run");
    snprintf(cmd, sizeof cmd, "caption --model '%s' '%s'", run, tmp("imgs/none.png"));
    expect_fail(cmd, 1, "none.png");
    write_text(tmp("bad.jpg"), "\xff\xd8\xff\xe0 truncated jpeg");
    snprintf(cmd, sizeof cmd, "caption --model '%s' '%s'", run, tmp("bad.jpg"));
    expect_fail(cmd, 1, "bad.jpg");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --top-p 1.5 '%s'", run, img[0]);
    expect_fail(cmd, 2, "--top-p");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --top-p 0 '%s'", run, img[0]);
    expect_fail(cmd, 2, "--top-p");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --temperature 0 '%s'", run, img[0]);
    expect_fail(cmd, 2, "--temperature");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --greedy --temperature 0.5 '%s'", run, img[0]);
    expect_fail(cmd, 2, "--greedy");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --max-tokens 25 '%s'", run, img[0]);
    expect_fail(cmd, 1, "max_len");
    snprintf(cmd, sizeof cmd, "caption --model '%s' '%s'", sig, img[0]);
    expect_fail(cmd, 1, "not a captioner");
    snprintf(cmd, sizeof cmd, "caption --model '%s'", run);
    expect_fail(cmd, 2, "IMAGE");
    snprintf(cmd, sizeof cmd, "caption --model '%s' --seed -3 '%s'", run, img[0]);
    expect_fail(cmd, 2, "--seed");
}

int main(void) {
    setup();
    test_greedy();
    test_sampling();
    test_dataset_scores();
    test_embed_fused();
    test_bad_inputs();
    remove_tmpdir();
    return TEST_DONE();
}
