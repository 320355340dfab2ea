/* test_clip.c - global grad norm, clipping (torch.nn.utils.clip_grad_norm_)
 * and the non-finite check over trainable grads only: norm vs a reference,
 * exact scaling, no-op below the threshold, Inf/NaN reported with grads
 * untouched, frozen grads never read, thread-count independence. */
#include "optim.h"
#include "test.h"

#include <float.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng = 0x853c49e6748fea9bULL;
static double uniform(void) { /* [-1, 1) */
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(rng >> 11) * (2.0 / 9007199254740992.0) - 1.0;
}

/* A store of ~4.6M elements (several parallel rounds of the norm), with a
 * frozen parameter in the middle whose grads are NaN. */
static vlm_params *make_store(void) {
    vlm_params *p = vlm_params_new();
    vlm_param_add(p, "a.weight", 2, (int64_t[]){300, 200});
    vlm_param_add(p, "a.bias", 1, (int64_t[]){300});
    vlm_param_add(p, "frozen.weight", 2, (int64_t[]){100, 100});
    vlm_param_add(p, "big.weight", 2, (int64_t[]){2300, 2000});
    vlm_param_add(p, "z.bias", 1, (int64_t[]){7});
    if (vlm_params_finalize(p)) return NULL;
    vlm_tensor *fz = vlm_params_find(p, "frozen.weight");
    vlm_param_set_frozen(fz, true);
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        for (int64_t j = 0; j < t->numel; j++) t->grad[j] = t == fz ? NAN : (float)uniform();
    }
    return p;
}

static double ref_norm(vlm_params *p) {
    long double s = 0;
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        if (!t->requires_grad) continue;
        for (int64_t j = 0; j < t->numel; j++) s += (long double)t->grad[j] * t->grad[j];
    }
    return (double)sqrtl(s);
}

static void test_norm_and_clip(void) {
    vlm_params *p = make_store();
    CHECK(p != NULL, "%s", vlm_last_error());
    if (!p) return;
    int64_t N = vlm_params_numel(p);
    float *G = vlm_params_grads(p), *before = malloc((size_t)N * sizeof *before);
    memcpy(before, G, (size_t)N * sizeof *before);

    double ref = ref_norm(p);
    int threads = omp_get_max_threads();
    vlm_set_num_threads(1);
    double n1 = vlm_grad_norm(p);
    vlm_set_num_threads(threads);
    double t0 = omp_get_wtime();
    double n2 = vlm_grad_norm(p);
    double ms = (omp_get_wtime() - t0) * 1e3;
    printf("grad norm of %lld trainable grads: %.12g (reference %.12g, rel %.1e), %.2f ms\n",
           (long long)(N - 10000), n2, ref, fabs(n2 - ref) / ref, ms);
    CHECK(fabs(n2 - ref) <= 1e-12 * ref, "norm %.17g vs %.17g", n2, ref);
    CHECK(n1 == n2, "1 and %d threads give different norms: %.17g %.17g", threads, n1, n2);

    /* above the threshold: every trainable grad times the same f32 factor, exactly */
    double max_norm = ref / 3;
    double got = vlm_clip_grad_norm(p, max_norm);
    CHECK(got == n2, "clip returns the pre-clip norm: %.17g", got);
    float coef = (float)(max_norm / (n2 + 1e-6));
    bool exact = true, frozen_kept = true;
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        int64_t off = vlm_params_offset(p, t);
        for (int64_t j = 0; j < t->numel; j++) {
            if (t->requires_grad) exact &= t->grad[j] == before[off + j] * coef;
            else frozen_kept &= isnan(t->grad[j]);
        }
    }
    CHECK(exact, "clipped grads must be the originals times (float)(max / (norm + 1e-6))");
    CHECK(frozen_kept, "frozen grads were written");
    double after = vlm_grad_norm(p);
    printf("clip to %.6g: norm after %.9g (rel %.1e)\n", max_norm, after,
           fabs(after - max_norm) / max_norm);
    CHECK(fabs(after - max_norm) <= 1e-6 * max_norm, "norm after clipping %.9g, wanted %.9g",
          after, max_norm);

    /* below the threshold, and measure-only: bit for bit unchanged */
    memcpy(before, G, (size_t)N * sizeof *before);
    CHECK(vlm_clip_grad_norm(p, after * 1.5) == after, "norm below threshold");
    CHECK(vlm_clip_grad_norm(p, 0) == after, "measure only");
    CHECK(memcmp(before, G, (size_t)N * sizeof *G) == 0, "clip below the threshold changed grads");

    /* non-finite: reported, nothing scaled */
    vlm_tensor *big = vlm_params_find(p, "big.weight");
    big->grad[123456] = INFINITY;
    memcpy(before, G, (size_t)N * sizeof *before);
    double inf_norm = vlm_clip_grad_norm(p, 1.0);
    CHECK(isinf(inf_norm), "an Inf grad must give an Inf norm, got %g", inf_norm);
    big->grad[123456] = NAN;
    before[vlm_params_offset(p, big) + 123456] = NAN;
    double nan_norm = vlm_clip_grad_norm(p, 1.0);
    CHECK(isnan(nan_norm), "a NaN grad must give a NaN norm, got %g", nan_norm);
    CHECK(memcmp(before, G, (size_t)N * sizeof *G) == 0, "a non-finite norm must not scale");

    free(before);
    vlm_params_free(p);
}

static void test_finite(void) {
    vlm_params *p = make_store();
    CHECK(p != NULL, "%s", vlm_last_error());
    if (!p) return;
    CHECK(vlm_grads_finite(p), "finite grads (the frozen NaNs do not count)");
    vlm_tensor *a = vlm_params_find(p, "a.weight"), *z = vlm_params_find(p, "z.bias"),
               *big = vlm_params_find(p, "big.weight");
    a->grad[0] = FLT_MAX;
    z->grad[6] = -FLT_MIN / 4; /* subnormal */
    CHECK(vlm_grads_finite(p), "FLT_MAX and subnormals are finite");
    const struct {
        vlm_tensor *t;
        int64_t at;
        float v;
    } cases[] = {{a, 0, INFINITY}, {z, 6, NAN}, {big, 2222222, -INFINITY}, {big, 0, NAN}};
    double t0 = omp_get_wtime();
    for (int k = 0; k < 4; k++) {
        float keep = cases[k].t->grad[cases[k].at];
        cases[k].t->grad[cases[k].at] = cases[k].v;
        CHECK(!vlm_grads_finite(p), "case %d: %s[%lld] = %g not found", k, cases[k].t->name,
              (long long)cases[k].at, (double)cases[k].v);
        cases[k].t->grad[cases[k].at] = keep;
    }
    printf("non-finite check: %.2f ms per pass over %lld grads\n",
           (omp_get_wtime() - t0) * 1e3 / 4, (long long)vlm_params_numel(p));
    vlm_params_free(p);
}

int main(void) {
    test_norm_and_clip();
    test_finite();
    return TEST_DONE();
}
