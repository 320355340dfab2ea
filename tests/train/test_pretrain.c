/* test_pretrain.c - `vlm pretrain` end to end on a tiny generated dataset
 * (shapes, 48 + 16 images): the loss falls, evaluation runs and prints its
 * metrics, the run directory holds config.json, tokenizer.json, metrics.jsonl,
 * the newest checkpoints and model.safetensors (which `vlm inspect` reads);
 * `vlm eval` reproduces the final metrics, and those metrics agree with a
 * brute-force computation from the saved weights through the C API. */
#include "cli.h"
#include "test.h"
#include "train.h"

#include <math.h>

static void check_run_dir(void) {
    CHECK(exists(tpath("run/config.json")), "config.json");
    CHECK(file_has(tpath("run/config.json"), "\"batch_size\":\t8"), "resolved config");
    CHECK(exists(tpath("run/tokenizer.json")), "trained tokenizer");
    CHECK(exists(tpath("run/model.safetensors")), "final weights");
    /* keep_checkpoints 2: only the newest two of 10, 20, 30, 40 */
    CHECK(!exists(tpath("run/checkpoints/step-00000020.safetensors")), "pruned");
    CHECK(exists(tpath("run/checkpoints/step-00000030.safetensors")), "kept");
    CHECK(exists(tpath("run/checkpoints/step-00000040.safetensors")), "kept");
    int n;
    double first, last;
    loss_ends(tpath("run/metrics.jsonl"), 5, &first, &last, &n);
    CHECK(n == 40, "40 train events, got %d", n);
    CHECK(last < 0.95 * first, "loss falls: first 5 %.4f, last 5 %.4f", first, last);
    CHECK(file_has(tpath("run/metrics.jsonl"), "\"event\":\"eval\""), "eval events");
    CHECK(file_has(tpath("run/metrics.jsonl"), "\"final\":true"), "final eval event");
}

static void test_pretrain_and_inspect(void) {
    int st = vlm_run("pretrain.log", "pretrain -c tiny.json");
    CHECK(st == 0, "pretrain exit %d", st);
    CHECK(file_has(tpath("pretrain.log"), "zero-shot (3 classes x 8 templates): top-1"), "zs");
    CHECK(file_has(tpath("pretrain.log"), "evaluation at step 40 (final):"), "final eval");
    CHECK(file_has(tpath("pretrain.log"), "text->image R@1"), "retrieval printed");
    CHECK(file_has(tpath("pretrain.log"), "step 40/40"), "progress line");
    check_run_dir();
    st = vlm_run("inspect.log", "inspect run/model.safetensors");
    CHECK(st == 0, "inspect exit %d", st);
    CHECK(file_has(tpath("inspect.log"), "vision_model.embeddings.patch_embedding.weight"), "HF");
    CHECK(file_has(tpath("inspect.log"), "logit_scale"), "logit_scale");
}

/* ---- the metrics, recomputed from the weights -------------------------------------- */

typedef struct {
    vlm_model *m;
    vlm_text_encoder *enc;
    vlm_ctx *ctx;
    int D;
} probe;

/* Normalised embeddings of texts / of images, in batches of 8 like the CLI. */
static int embed_texts(probe *p, char **texts, int n, float *out) {
    for (int s = 0; s < n; s += 8) {
        int b = n - s < 8 ? n - s : 8, L = 12;
        int32_t ids[8 * 12];
        uint8_t mask[8 * 12];
        for (int i = 0; i < b; i++)
            if (vlm_text_encode(p->enc, texts[s + i], ids + i * L, mask + i * L, L) < 0) return -1;
        vlm_tensor *t = vlm_tensor_from(p->ctx, VLM_I32, 2, (int64_t[]){b, L}, ids), *pooled = NULL;
        if (!vlm_text_forward(p->ctx, &p->m->text, t, NULL, false, &pooled)) return -1;
        vlm_tensor *e = vlm_l2_normalize(p->ctx, pooled, 1e-12f);
        if (!e) return -1;
        memcpy(out + (size_t)s * p->D, e->data, (size_t)b * p->D * sizeof(float));
        vlm_ctx_reset(p->ctx);
    }
    return 0;
}

static int embed_images(probe *p, vlm_dataset *ds, int n, float *out) {
    vlm_image_opts io = vlm_image_opts_default(16);
    float px[8 * 3 * 16 * 16];
    for (int s = 0; s < n; s += 8) {
        int b = n - s < 8 ? n - s : 8;
        for (int i = 0; i < b; i++) {
            vlm_image im;
            if (vlm_dataset_read_image(ds, s + i, &im)) return -1;
            int rc = vlm_image_to_input(&im, &io, NULL, px + i * 3 * 16 * 16);
            vlm_image_free(&im);
            if (rc) return -1;
        }
        vlm_tensor *t = vlm_tensor_from(p->ctx, VLM_F32, 4, (int64_t[]){b, 3, 16, 16}, px);
        vlm_tensor *pooled = NULL;
        if (!vlm_vision_forward(p->ctx, &p->m->vision, t, false, &pooled)) return -1;
        vlm_tensor *e = vlm_l2_normalize(p->ctx, pooled, 1e-12f);
        if (!e) return -1;
        memcpy(out + (size_t)s * p->D, e->data, (size_t)b * p->D * sizeof(float));
        vlm_ctx_reset(p->ctx);
    }
    return 0;
}

static double dot(const float *a, const float *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

/* Zero-shot top-1 by brute force: class vector = renormalised template mean. */
static double brute_top1(probe *p, vlm_dataset *ds, const float *img, int n) {
    int K = vlm_dataset_num_classes(ds), T = VLM_CLASS_TEMPLATES, D = p->D;
    char *prompts[64];
    float emb[64 * 64], cls[8 * 64];
    for (int k = 0; k < K; k++)
        for (int t = 0; t < T; t++)
            prompts[k * T + t] = vlm_class_caption(vlm_class_templates[t], vlm_dataset_class_name(ds, k));
    if (embed_texts(p, prompts, K * T, emb)) return -1;
    for (int k = 0; k < K; k++) {
        double norm = 0;
        for (int d = 0; d < D; d++) {
            double s = 0;
            for (int t = 0; t < T; t++) s += emb[(k * T + t) * D + d];
            cls[k * D + d] = (float)(s / T);
            norm += (s / T) * (s / T);
        }
        for (int d = 0; d < D; d++) cls[k * D + d] /= (float)sqrt(norm);
    }
    for (int i = 0; i < K * T; i++) free(prompts[i]);
    int hits = 0;
    for (int i = 0; i < n; i++) {
        int best = 0;
        for (int k = 1; k < K; k++)
            if (dot(img + i * D, cls + k * D, D) > dot(img + i * D, cls + best * D, D)) best = k;
        hits += best == vlm_dataset_label(ds, i);
    }
    return (double)hits / n;
}

/* text -> image R@1: a caption's own image scores highest (ties: lower index). */
static double brute_t2i_r1(probe *p, vlm_dataset *ds, const float *img, int n) {
    int m = (int)vlm_dataset_num_captions(ds), hits = 0, D = p->D;
    char **caps = calloc((size_t)m, sizeof *caps);
    float *emb = malloc((size_t)m * D * sizeof *emb);
    for (int j = 0; j < m; j++) caps[j] = vlm_dataset_read_caption(ds, j);
    if (embed_texts(p, caps, m, emb) == 0) {
        for (int j = 0; j < m; j++) {
            int g = (int)vlm_dataset_caption_image(ds, j), rank = 0;
            double own = dot(emb + j * D, img + g * D, D);
            for (int i = 0; i < n; i++) {
                double s = dot(emb + j * D, img + i * D, D);
                rank += s > own || (s == own && i < g);
            }
            hits += rank == 0;
        }
    }
    for (int j = 0; j < m; j++) free(caps[j]);
    free(caps);
    free(emb);
    return (double)hits / m;
}

static double json_num(const char *json, const char *key) {
    char k[64];
    snprintf(k, sizeof k, "\"%s\":", key);
    const char *s = json ? strstr(json, k) : NULL;
    return s ? atof(s + strlen(k)) : -1;
}

static void test_eval_matches_brute_force(void) {
    int st = vlm_run("eval.log", "eval --model run --json");
    CHECK(st == 0, "eval exit %d", st);
    char *out = slurp(tpath("eval.log"), NULL);
    double top1 = json_num(out, "zeroshot_top1"), t2i = json_num(out, "t2i_r1");
    free(out);
    CHECK(top1 >= 0 && t2i >= 0, "eval --json has the metrics");
    st = vlm_run("eval2.log", "eval --model run/checkpoints/step-00000040.safetensors "
                 "--dataset shapes-val.h5");
    CHECK(st == 0 && file_has(tpath("eval2.log"), "zero-shot"), "eval of a checkpoint, exit %d", st);

    cJSON *root = vlm_json_load(tpath("run/config.json"));
    vlm_run_cfg cfg;
    vlm_run_cfg_defaults(&cfg);
    CHECK(root && vlm_run_cfg_bind(root, &cfg) == 0, "config.json binds: %s", vlm_last_error());
    cJSON_Delete(root);
    probe p = {vlm_model_new(&cfg.model, 0), vlm_text_encoder_load(tpath("run/tokenizer.json"), 0),
               vlm_ctx_new(0), cfg.model.vision.width};
    vlm_dataset *ds = vlm_dataset_open(tpath("shapes-val.h5"));
    CHECK(p.m && p.enc && p.ctx && ds, "setup: %s", vlm_last_error());
    if (!p.m || !p.enc || !p.ctx || !ds) return;
    CHECK(vlm_st_load_params(p.m->params, tpath("run/model.safetensors"), "", NULL, NULL) == 0,
          "weights: %s", vlm_last_error());
    int n = (int)vlm_dataset_num_images(ds);
    float *img = malloc((size_t)n * p.D * sizeof *img);
    vlm_set_grad_enabled(p.ctx, false);
    CHECK(embed_images(&p, ds, n, img) == 0, "embed: %s", vlm_last_error());
    double bt = brute_top1(&p, ds, img, n), br = brute_t2i_r1(&p, ds, img, n);
    CHECK(fabs(bt - top1) <= 1.0 / n + 1e-9, "zero-shot top-1 %g, brute force %g", top1, bt);
    CHECK(fabs(br - t2i) <= 1.0 / n + 1e-9, "t2i R@1 %g, brute force %g", t2i, br);
    free(img);
    vlm_dataset_close(ds);
    vlm_text_encoder_free(p.enc);
    vlm_model_free(p.m);
    vlm_ctx_free(p.ctx);
}

/* --init: a full file, a partial one (the rest keeps its initial values) and
 * a wrong shape. Update 0 runs at lr 0 (warmup), so one step keeps the value. */
static void test_init(void) {
    int st = vlm_run("init.log", "pretrain -c tiny.json --set out=I --set train.steps=1 --set train.optim.warmup_steps=1 "
                     "--set data.val= --init run/model.safetensors");
    CHECK(st == 0 && file_has(tpath("init.log"), "from run/model.safetensors; 0 parameters "
                                                 "missing"), "full init, exit %d", st);
    float v = 1.5f;
    int64_t one = 1, two = 2;
    vlm_st_writer *w = vlm_st_writer_new();
    CHECK(w && vlm_st_writer_add(w, "logit_bias", "F32", 1, &one, &v) == 0 &&
              vlm_st_writer_save(w, tpath("part.safetensors")) == 0, "write part");
    vlm_st_writer_free(w);
    st = vlm_run("init2.log", "pretrain -c tiny.json --set out=I2 --set train.steps=1 --set train.optim.warmup_steps=1 "
                 "--set data.val= --init part.safetensors");
    CHECK(st == 0 && file_has(tpath("init2.log"), "init: 1 tensors (1 values) from "
                                                  "part.safetensors;"), "partial, exit %d", st);
    vlm_st *f = vlm_st_open(tpath("I2/model.safetensors"));
    float got = 0;
    CHECK(f && vlm_st_read_f32(f, "logit_bias", &got, 1) == 0 && got == 1.5f, "loaded %g", got);
    vlm_st_close(f);
    float vv[2] = {1, 2};
    w = vlm_st_writer_new();
    CHECK(w && vlm_st_writer_add(w, "logit_bias", "F32", 1, &two, vv) == 0 &&
              vlm_st_writer_save(w, tpath("bad.safetensors")) == 0, "write bad");
    vlm_st_writer_free(w);
    st = vlm_run("init3.log", "pretrain -c tiny.json --set out=I3 --init bad.safetensors");
    CHECK(st == 1 && file_has(tpath("init3.log"), "logit_bias"), "shape mismatch, exit %d", st);
}

static void test_help_and_default_config(void) {
    CHECK(vlm_run("help.log", "pretrain --help") == 0, "pretrain --help");
    CHECK(file_has(tpath("help.log"), "train.optim.lr_mult"), "help lists the config keys");
    CHECK(vlm_run("evalhelp.log", "eval --help") == 0, "eval --help");
    /* the built-in default config parses and validates up to this override */
    int st = vlm_run("default.log", "pretrain --set train.steps=0 --set train.epochs=0");
    CHECK(st == 1 && file_has(tpath("default.log"), "train.steps and train.epochs are both 0"),
          "built-in config, exit %d", st);
}

int main(void) {
    if (make_tmpdir("pretrain")) return 1;
    CHECK(make_shapes() == 0, "prepare shapes");
    CHECK(make_tiny_config() == 0, "config");
    test_pretrain_and_inspect();
    test_eval_matches_brute_force();
    test_init();
    test_help_and_default_config();
    remove_tmpdir();
    return TEST_DONE();
}
