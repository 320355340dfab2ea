/* test_checkpoint.c - gradient checkpointing in the towers (cfg.checkpoint):
 * the tiny SigLIP model with residual dropout 0.1 in both towers gives a
 * BITWISE identical loss, identical grads for every parameter and the same
 * RNG state with checkpointing on and off (with and without a key-padding
 * mask, and with a frozen vision tower); with several layers the arena peak
 * is lower. The captioner (vision, prompt text tower and decoder all
 * checkpointed, dropout everywhere) gives bitwise equal loss and grads too.
 *
 * `nn_test_checkpoint --bench [batch [reps]]` instead times forward + backward and
 * reports the arena peak, plain and checkpointed, for a mid-size model
 * (vision width 384, 6 layers, 64 tokens; text width 384, 6 layers, 16 tokens). */
#include "nn.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

static vlm_tensor *input(vlm_ctx *ctx, int ndim, const int64_t *shape, uint64_t seed) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; i < t->numel; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        vlm_f32(t)[i] = (float)((seed >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    return t;
}

/* test_layers.c's tiny model, with dropout and more layers */
static vlm_model_cfg small_cfg(int layers, int width, int image, int ctx_len, bool ckpt) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    c.vision = (vlm_vision_cfg){.image_size = image, .patch = 4, .channels = 3, .width = width,
                                .layers = layers, .heads = 2, .mlp = width * 3 / 2,
                                .ln_eps = 1e-6f, .dropout = 0.1f, .checkpoint = ckpt};
    c.text = (vlm_text_cfg){.vocab = 11, .ctx_len = ctx_len, .width = width, .layers = layers,
                            .heads = 2, .mlp = width * 3 / 2, .ln_eps = 1e-6f, .dropout = 0.1f,
                            .pad_id = 0, .checkpoint = ckpt};
    c.embed_dim = width;
    return c;
}

typedef struct {
    float loss;
    float *grads; /* every parameter's grad, flat */
    int64_t n;
    uint64_t rng;
    size_t peak;
    int rc;
} step_result;

/* One training step's forward + backward on a fresh context, batch of 3. */
static step_result step(const vlm_model_cfg *cfg, bool use_mask, bool freeze_vision) {
    step_result r = {0};
    vlm_model *m = vlm_model_new(cfg, 1);
    if (!m) {
        fprintf(stderr, "model: %s\n", vlm_last_error());
        r.rc = -1;
        return r;
    }
    for (int i = 0; i < vlm_params_count(m->params) && freeze_vision; i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        if (!strncmp(t->name, "vision_model.", 13)) vlm_param_set_frozen(t, true);
    }
    vlm_f32(m->logit_scale)[0] = 1.0f; /* keep the loss in sigmoid's sensitive range */
    vlm_f32(m->logit_bias)[0] = 0.1f;
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_ctx_seed(ctx, 2024);
    int S = cfg->vision.image_size, T = cfg->text.ctx_len;
    vlm_tensor *img = input(ctx, 4, (int64_t[]){3, 3, S, S}, 5);
    vlm_tensor *ids = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){3, T});
    vlm_tensor *km = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){3, T});
    for (int i = 0; i < 3 * T; i++) {
        vlm_i32(ids)[i] = 1 + (i * 7) % 10;
        ((uint8_t *)km->data)[i] = (i % T) < T - i / T; /* row b has b padded keys */
    }
    vlm_tensor *loss =
        vlm_siglip_forward(ctx, m, img, ids, use_mask ? km : NULL, NULL, true, NULL, NULL);
    r.rc = vlm_backward(ctx, loss);
    if (r.rc) fprintf(stderr, "backward: %s\n", vlm_last_error());
    r.loss = loss ? vlm_f32(loss)[0] : 0;
    r.rng = vlm_ctx_rng_state(ctx);
    r.peak = vlm_arena_peak(ctx);
    r.n = vlm_params_numel(m->params);
    r.grads = malloc((size_t)r.n * sizeof(float));
    if (r.grads) memcpy(r.grads, vlm_params_grads(m->params), (size_t)r.n * sizeof(float));
    vlm_ctx_free(ctx);
    vlm_model_free(m);
    return r;
}

/* the first parameter whose grad differs, for the failure message */
static const char *first_diff(const vlm_model_cfg *cfg, const float *a, const float *b) {
    static char name[256];
    vlm_model *m = vlm_model_new(cfg, 1);
    snprintf(name, sizeof name, "?");
    for (int i = 0; m && i < vlm_params_count(m->params); i++) {
        vlm_tensor *t = vlm_params_at(m->params, i);
        int64_t off = vlm_params_offset(m->params, t);
        if (memcmp(a + off, b + off, (size_t)t->numel * sizeof(float))) {
            snprintf(name, sizeof name, "%s", t->name);
            break;
        }
    }
    vlm_model_free(m);
    return name;
}

static void compare(const char *what, int layers, bool use_mask, bool freeze_vision) {
    vlm_model_cfg off = small_cfg(layers, 8, 8, 5, false), on = small_cfg(layers, 8, 8, 5, true);
    step_result a = step(&off, use_mask, freeze_vision), b = step(&on, use_mask, freeze_vision);
    CHECK(a.rc == 0 && b.rc == 0 && a.grads && b.grads, "%s: steps ran", what);
    if (!a.grads || !b.grads) return;
    CHECK(memcmp(&a.loss, &b.loss, sizeof a.loss) == 0, "%s: loss %.9g vs %.9g", what,
          (double)a.loss, (double)b.loss);
    CHECK(memcmp(a.grads, b.grads, (size_t)a.n * sizeof(float)) == 0,
          "%s: grads differ, first in %s", what, first_diff(&off, a.grads, b.grads));
    CHECK(a.rng == b.rng, "%s: RNG after the step %llx vs %llx", what,
          (unsigned long long)a.rng, (unsigned long long)b.rng);
    double sum = 0;
    for (int64_t i = 0; i < a.n; i++) sum += a.grads[i] != 0;
    CHECK(sum > a.n / 4, "%s: only %.0f of %lld grads non-zero", what, sum, (long long)a.n);
    printf("%-34s loss %.9g  bitwise equal grads over %lld values\n", what, (double)a.loss,
           (long long)a.n);
    free(a.grads);
    free(b.grads);
}

/* The captioner with checkpointing in all three stacks (vision, prompt text
 * tower, decoder) and dropout everywhere: loss and every grad bitwise equal. */
static vlm_model_cfg caption_cfg(bool ckpt) {
    vlm_model_cfg c = small_cfg(2, 8, 8, 5, ckpt);
    strcpy(c.type, "captioner");
    c.fusion = (vlm_fusion_cfg){.heads = 2, .mlp = 12, .ln_eps = 1e-6f};
    c.decoder = (vlm_decoder_cfg){.vocab = 13, .width = 8, .layers = 2, .heads = 2,
                                  .kv_heads = 1, .mlp = 12, .max_len = 32, .rms_eps = 1e-5f,
                                  .rope_theta = 10000, .dropout = 0.1f, .tie_embeddings = true,
                                  .checkpoint = ckpt};
    return c;
}

static step_result caption_step(const vlm_model_cfg *cfg) {
    step_result r = {0};
    vlm_model *m = vlm_model_new(cfg, 1);
    vlm_ctx *ctx = vlm_ctx_new(0);
    if (!m || !ctx) {
        r.rc = -1;
        vlm_model_free(m);
        vlm_ctx_free(ctx);
        return r;
    }
    vlm_ctx_seed(ctx, 77);
    static const int32_t prompt[6] = {1, 2, 3, 4, 5, 0}, in[8] = {1, 5, 6, 7, 1, 8, 9, 0},
                         tgt[8] = {5, 6, 7, 2, 8, 9, 2, -100};
    static const uint8_t pmask[6] = {1, 1, 1, 1, 1, 0};
    vlm_tensor *img = input(ctx, 4, (int64_t[]){2, 3, 8, 8}, 9);
    vlm_tensor *p = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){2, 3}, prompt);
    vlm_tensor *pm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){2, 3}, pmask);
    vlm_tensor *ci = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){2, 4}, in);
    vlm_tensor *tg = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){2, 4}, tgt);
    vlm_tensor *loss = vlm_captioner_loss(ctx, m, img, p, pm, ci, tg, true);
    r.rc = vlm_backward(ctx, loss);
    if (r.rc) fprintf(stderr, "captioner backward: %s\n", vlm_last_error());
    r.loss = loss ? vlm_f32(loss)[0] : 0;
    r.rng = vlm_ctx_rng_state(ctx);
    r.peak = vlm_arena_peak(ctx);
    r.n = vlm_params_numel(m->params);
    r.grads = malloc((size_t)r.n * sizeof(float));
    if (r.grads) memcpy(r.grads, vlm_params_grads(m->params), (size_t)r.n * sizeof(float));
    vlm_ctx_free(ctx);
    vlm_model_free(m);
    return r;
}

static void test_captioner(void) {
    vlm_model_cfg off = caption_cfg(false), on = caption_cfg(true);
    step_result a = caption_step(&off), b = caption_step(&on);
    CHECK(a.rc == 0 && b.rc == 0 && a.grads && b.grads, "captioner steps ran");
    if (a.grads && b.grads) {
        CHECK(memcmp(&a.loss, &b.loss, sizeof a.loss) == 0, "captioner loss %.9g vs %.9g",
              (double)a.loss, (double)b.loss);
        CHECK(memcmp(a.grads, b.grads, (size_t)a.n * sizeof(float)) == 0,
              "captioner grads differ, first in %s", first_diff(&off, a.grads, b.grads));
        CHECK(a.rng == b.rng, "captioner RNG after the step");
        CHECK(b.peak < a.peak, "captioner arena peak %zu (checkpointed) vs %zu", b.peak, a.peak);
        printf("%-34s loss %.9g  bitwise equal grads over %lld values, peak %zu -> %zu B\n",
               "captioner (vision+text+decoder)", (double)a.loss, (long long)a.n, a.peak, b.peak);
    }
    free(a.grads);
    free(b.grads);
}

static void test_dropout_changes_loss(void) {
    vlm_model_cfg c = small_cfg(2, 8, 8, 5, true);
    step_result a = step(&c, true, false);
    c.vision.dropout = c.text.dropout = 0;
    step_result b = step(&c, true, false);
    CHECK(a.loss != b.loss, "dropout is active in the compared steps");
    free(a.grads);
    free(b.grads);
}

static void test_peak(void) {
    vlm_model_cfg off = small_cfg(4, 32, 16, 8, false), on = small_cfg(4, 32, 16, 8, true);
    step_result a = step(&off, true, false), b = step(&on, true, false);
    CHECK(a.rc == 0 && b.rc == 0, "steps ran");
    CHECK(memcmp(&a.loss, &b.loss, sizeof a.loss) == 0 && a.grads && b.grads &&
              !memcmp(a.grads, b.grads, (size_t)a.n * sizeof(float)),
          "4 layers: bitwise equal");
    CHECK(b.peak < a.peak, "arena peak %zu with checkpointing, %zu without", b.peak, a.peak);
    printf("4 layers, width 32, 16 + 8 tokens, batch 3: arena peak %zu bytes plain, %zu "
           "checkpointed (%.0f%%)\n",
           a.peak, b.peak, 100.0 * (double)b.peak / (double)a.peak);
    free(a.grads);
    free(b.grads);
}

/* ---- benchmark ---------------------------------------------------------------------- */

static double clock_s(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
    vlm_model *m;
    vlm_ctx *ctx;
    double wall, fwd, cpu; /* of the fastest step */
} bench_arm;

/* One forward + backward step; keeps it if it is the fastest so far. */
static int bench_step(bench_arm *a, int B, bool keep) {
    int S = a->m->cfg.vision.image_size, T = a->m->cfg.text.ctx_len;
    vlm_ctx_reset(a->ctx);
    vlm_ctx_seed(a->ctx, 7);
    vlm_tensor *img = input(a->ctx, 4, (int64_t[]){B, 3, S, S}, 5);
    vlm_tensor *ids = vlm_zeros(a->ctx, VLM_I32, 2, (int64_t[]){B, T});
    for (int i = 0; i < B * T; i++) vlm_i32(ids)[i] = 1 + (i * 7) % 10;
    double t0 = clock_s(CLOCK_MONOTONIC), c0 = clock_s(CLOCK_PROCESS_CPUTIME_ID);
    vlm_tensor *loss = vlm_siglip_forward(a->ctx, a->m, img, ids, NULL, NULL, true, NULL, NULL);
    double tf = clock_s(CLOCK_MONOTONIC) - t0;
    if (vlm_backward(a->ctx, loss)) return -1;
    double dt = clock_s(CLOCK_MONOTONIC) - t0;
    if (keep && dt < a->wall)
        a->wall = dt, a->fwd = tf, a->cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c0;
    return 0;
}

/* Plain and checkpointed steps alternate (so a burst of load from other
 * processes on shared cores hits both), best of reps after a warm-up. */
static int bench(int B, int reps) {
    bench_arm arm[2] = {{0}};
    int rc = 0;
    for (int ck = 0; ck < 2 && !rc; ck++) {
        vlm_model_cfg c = small_cfg(6, 384, 32, 16, ck);
        c.vision.heads = c.text.heads = 6;
        c.vision.mlp = c.text.mlp = 1536;
        arm[ck] = (bench_arm){vlm_model_new(&c, 1), vlm_ctx_new(0), 1e30, 0, 0};
        rc = arm[ck].m && arm[ck].ctx ? 0 : -1;
    }
    for (int r = 0; r <= reps && !rc; r++)
        for (int ck = 0; ck < 2 && !rc; ck++) rc = bench_step(&arm[ck], B, r > 0);
    if (rc) fprintf(stderr, "bench: %s\n", vlm_last_error());
    for (int ck = 0; ck < 2 && !rc; ck++)
        printf("%-13s batch %d, %d threads: forward+backward %.3f s (forward %.3f s; %.3f s "
               "CPU), arena peak %.1f MiB\n",
               ck ? "checkpointed" : "plain", B, vlm_num_threads(), arm[ck].wall, arm[ck].fwd,
               arm[ck].cpu, (double)vlm_arena_peak(arm[ck].ctx) / 1048576.0);
    for (int ck = 0; ck < 2; ck++) {
        vlm_ctx_free(arm[ck].ctx);
        vlm_model_free(arm[ck].m);
    }
    return rc ? 1 : 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--bench"))
        return bench(argc > 2 ? atoi(argv[2]) : 16, argc > 3 ? atoi(argv[3]) : 5);
    test_dropout_changes_loss();
    compare("1 layer", 1, false, false);
    compare("3 layers, key-padding mask", 3, true, false);
    compare("2 layers, frozen vision tower", 2, true, true);
    test_captioner();
    test_peak();
    return TEST_DONE();
}
