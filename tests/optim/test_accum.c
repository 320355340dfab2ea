/* test_accum.c - gradient accumulation on the tiny SigLIP model's text tower
 * with a per-example loss (mean over the batch of ||pooled_i - target_i||^2,
 * built from autograd ops; the SigLIP loss itself couples the examples of a
 * batch, so it is not a sum over micro-batches): two micro-batches of 2, each
 * loss scaled by 1/2, accumulate the grads of the full batch of 4, and one
 * AdamW step from either gives the same weights. */
#include "optim.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

enum { B = 4, T = 5, E = 8 };

static vlm_model_cfg tiny_cfg(void) {
    vlm_model_cfg c;
    vlm_model_cfg_defaults(&c);
    c.vision = (vlm_vision_cfg){.image_size = 8, .patch = 4, .channels = 3, .width = 8,
                                .layers = 1, .heads = 2, .mlp = 12, .ln_eps = 1e-6f};
    c.text = (vlm_text_cfg){.vocab = 11, .ctx_len = 5, .width = 8, .layers = 1, .heads = 2,
                            .mlp = 12, .ln_eps = 1e-6f, .pad_id = 0};
    return c;
}

static const int32_t ids[B * T] = {1, 4, 7, 2, 5, 3, 3, 9, 10, 2, 5, 6, 1, 8, 8, 2, 2, 7, 4, 1};

/* mean_i sum_j (head(text(ids[first : first + n]))_ij - target_ij)^2 * scale */
static vlm_tensor *loss_of(vlm_ctx *ctx, const vlm_model *m, int first, int n, float scale) {
    float target[B * E];
    for (int i = 0; i < B * E; i++) target[i] = (float)((i * 37) % 17) / 17.0f - 0.5f;
    vlm_tensor *x = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){n, T}, ids + first * T);
    vlm_tensor *y = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){n, E}, target + first * E);
    vlm_tensor *pooled = NULL;
    if (!x || !y || !vlm_text_forward(ctx, &m->text, x, NULL, false, &pooled)) return NULL;
    vlm_tensor *d = vlm_sub(ctx, pooled, y);
    vlm_tensor *per_example = vlm_sum_last(ctx, vlm_mul(ctx, d, d));
    return vlm_scale(ctx, vlm_mean_all(ctx, per_example), scale);
}

static int backward(vlm_ctx *ctx, const vlm_model *m, int first, int n, float scale) {
    vlm_tensor *loss = loss_of(ctx, m, first, n, scale);
    int rc = loss ? vlm_backward(ctx, loss) : -1;
    vlm_ctx_reset(ctx);
    return rc;
}

static void test_accumulation(void) {
    vlm_model_cfg mc = tiny_cfg();
    vlm_model *full = vlm_model_new(&mc, 9), *micro = vlm_model_new(&mc, 9);
    vlm_ctx *ctx = vlm_ctx_new(1 << 20);
    CHECK(full && micro && ctx, "%s", vlm_last_error());
    if (!full || !micro || !ctx) return;
    vlm_params *pf = full->params, *pm = micro->params;
    int64_t N = vlm_params_numel(pf);
    CHECK(memcmp(vlm_params_values(pf), vlm_params_values(pm), (size_t)N * 4) == 0,
          "same seed, same weights");

    CHECK(backward(ctx, full, 0, 4, 1.0f) == 0, "%s", vlm_last_error());
    CHECK(backward(ctx, micro, 0, 2, 0.5f) == 0, "%s", vlm_last_error());
    CHECK(backward(ctx, micro, 2, 2, 0.5f) == 0, "%s", vlm_last_error());

    const float *gf = vlm_params_grads(pf), *gm = vlm_params_grads(pm);
    double max_diff = 0, max_g = 0, diff2 = 0, g2 = 0;
    int64_t nonzero = 0;
    for (int64_t i = 0; i < N; i++) {
        double d = fabs((double)gf[i] - gm[i]);
        max_diff = fmax(max_diff, d);
        max_g = fmax(max_g, fabs((double)gf[i]));
        diff2 += d * d;
        g2 += (double)gf[i] * gf[i];
        nonzero += gf[i] != 0;
    }
    printf("accumulated (2 x 2) vs full batch (4) grads: %lld nonzero, max |diff| %.2e "
           "(max |g| %.2e), norm-wise rel %.2e\n",
           (long long)nonzero, max_diff, max_g, sqrt(diff2 / g2));
    CHECK(nonzero > 500, "the text tower must get grads (%lld nonzero)", (long long)nonzero);
    CHECK(max_diff <= 1e-6 * fmax(1.0, max_g), "grads differ by %.3g", max_diff);
    CHECK(sqrt(diff2 / g2) <= 1e-6, "grads differ by %.3g norm-wise", sqrt(diff2 / g2));

    vlm_optim_cfg cfg;
    vlm_optim_cfg_defaults(&cfg);
    cfg.lr = 1e-3f;
    strcpy(cfg.schedule, "constant");
    cfg.clip_norm = 1.0f;
    vlm_optim *of = vlm_optim_new(pf, &cfg), *om = vlm_optim_new(pm, &cfg);
    CHECK(of && om, "%s", vlm_last_error());
    if (!of || !om) return;
    vlm_step_info inf_f, inf_m;
    CHECK(vlm_optim_update(of, NULL, &inf_f) == 0 && vlm_optim_update(om, NULL, &inf_m) == 0,
          "%s", vlm_last_error());
    double wdiff = 0, moved = 0;
    int64_t differ = 0;
    const float *wf = vlm_params_values(pf), *wm = vlm_params_values(pm);
    for (int64_t i = 0; i < N; i++) {
        wdiff = fmax(wdiff, fabs((double)wf[i] - wm[i]));
        differ += wf[i] != wm[i];
    }
    float *w0 = malloc((size_t)N * 4);
    vlm_model *fresh = vlm_model_new(&mc, 9);
    memcpy(w0, vlm_params_values(fresh->params), (size_t)N * 4);
    for (int64_t i = 0; i < N; i++) moved = fmax(moved, fabs((double)wf[i] - w0[i]));
    printf("one AdamW step (lr %g): grad norms %.9g / %.9g, weights: %lld of %lld differ, "
           "max |diff| %.2e (largest move %.2e)\n",
           (double)cfg.lr, inf_f.grad_norm, inf_m.grad_norm, (long long)differ, (long long)N,
           wdiff, moved);
    CHECK(fabs(inf_f.grad_norm - inf_m.grad_norm) <= 1e-6 * inf_f.grad_norm, "grad norms");
    /* The weights (|w| <= ~1) agree to 1e-6, as the grads do; what differs is
     * the last-bit rounding of w - update where the updates differ in their
     * 8th digit. */
    CHECK(wdiff <= 1e-6, "weights after one step differ by %.3g", wdiff);
    CHECK(moved > 0.5 * cfg.lr, "the step must move the weights (%.3g)", moved);
    free(w0);
    vlm_model_free(fresh);
    vlm_optim_free(of);
    vlm_optim_free(om);
    vlm_ctx_free(ctx);
    vlm_model_free(full);
    vlm_model_free(micro);
}

int main(void) {
    test_accumulation();
    return TEST_DONE();
}
