/* test_reduce.c - forward values, accuracy, determinism and bad inputs of
 * sum_last, mean_last, sum_all, mean_all and masked_mean. */
#include "autograd.h"
#include "test.h"

#include <string.h>

static bool has(const char *msg, const char *a, const char *b) {
    return strstr(msg, a) && (!b || strstr(msg, b));
}

#define CHECK_ERR(expr, a, b)                                                            \
    do {                                                                                 \
        vlm_clear_error();                                                               \
        CHECK((expr) == NULL, "%s should fail", #expr);                                  \
        CHECK(has(vlm_last_error(), a, b), "message '%s' should name '%s' and '%s'",     \
              vlm_last_error(), a, b ? b : "");                                          \
    } while (0)

static bool shape_is(const vlm_tensor *t, int ndim, const int64_t *shape) {
    if (!t || t->ndim != ndim) return false;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return false;
    return true;
}

static void test_known_values(vlm_ctx *ctx) {
    float v[] = {1, 2, 3, 4, 5, 6};
    vlm_tensor *x = vlm_tensor_from(ctx, VLM_F32, 2, (int64_t[]){2, 3}, v);
    vlm_tensor *s = vlm_sum_last(ctx, x), *m = vlm_mean_last(ctx, x);
    CHECK(shape_is(s, 1, (int64_t[]){2}) && shape_is(m, 1, (int64_t[]){2}), "[2, 3] -> [2]");
    CHECK(s && vlm_f32(s)[0] == 6.0f && vlm_f32(s)[1] == 15.0f, "row sums 6, 15");
    CHECK(m && vlm_f32(m)[0] == 2.0f && vlm_f32(m)[1] == 5.0f, "row means 2, 5");

    vlm_tensor *sa = vlm_sum_all(ctx, x), *ma = vlm_mean_all(ctx, x);
    CHECK(shape_is(sa, 1, (int64_t[]){1}) && vlm_f32(sa)[0] == 21.0f, "sum_all 21");
    CHECK(shape_is(ma, 1, (int64_t[]){1}) && vlm_f32(ma)[0] == 3.5f, "mean_all 3.5");

    vlm_tensor *x1 = vlm_tensor_from(ctx, VLM_F32, 1, (int64_t[]){4}, v);
    vlm_tensor *s1 = vlm_sum_last(ctx, x1), *m1 = vlm_mean_last(ctx, x1);
    CHECK(shape_is(s1, 1, (int64_t[]){1}) && vlm_f32(s1)[0] == 10.0f, "1-D sum -> [1] = 10");
    CHECK(shape_is(m1, 1, (int64_t[]){1}) && vlm_f32(m1)[0] == 2.5f, "1-D mean -> [1] = 2.5");

    vlm_tensor *x3 = vlm_tensor_from(ctx, VLM_F32, 3, (int64_t[]){3, 1, 2}, v);
    vlm_tensor *m3 = vlm_mean_last(ctx, x3);
    CHECK(shape_is(m3, 2, (int64_t[]){3, 1}), "[3, 1, 2] -> [3, 1]");
    CHECK(m3 && vlm_f32(m3)[0] == 1.5f && vlm_f32(m3)[1] == 3.5f && vlm_f32(m3)[2] == 5.5f,
          "means 1.5, 3.5, 5.5");
}

/* 2^22 copies of 0.1f: a float running sum drifts by percent; the double
 * accumulation must match the exact value to f32 precision. */
static void test_accuracy_and_determinism(vlm_ctx *ctx) {
    const int64_t n = (int64_t)1 << 22;
    vlm_tensor *x = vlm_tensor_new(ctx, VLM_F32, 2, (int64_t[]){4, n / 4});
    for (int64_t i = 0; i < n; i++) vlm_f32(x)[i] = 0.1f;
    double exact = (double)n * (double)0.1f;
    vlm_tensor *s = vlm_sum_all(ctx, x), *m = vlm_mean_all(ctx, x), *r = vlm_sum_last(ctx, x);
    CHECK(s && fabs(vlm_f32(s)[0] - exact) <= 1e-7 * exact, "sum_all %.9g vs %.9g",
          vlm_f32(s)[0], exact);
    CHECK(m && vlm_f32(m)[0] == 0.1f, "mean_all %.9g", vlm_f32(m)[0]);
    CHECK(r && fabs(vlm_f32(r)[3] - exact / 4) <= 1e-7 * exact / 4, "sum_last row %.9g",
          vlm_f32(r)[3]);

    /* irregular values: same bits whatever the thread count */
    for (int64_t i = 0; i < n; i++) vlm_f32(x)[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.3f;
    int threads = vlm_num_threads();
    vlm_set_num_threads(1);
    float one = vlm_f32(vlm_sum_all(ctx, x))[0];
    vlm_set_num_threads(threads > 1 ? threads : 2);
    float many = vlm_f32(vlm_sum_all(ctx, x))[0];
    vlm_set_num_threads(threads);
    CHECK(memcmp(&one, &many, sizeof one) == 0, "1 thread %.9g, many %.9g", one, many);
}

static void test_masked_mean(vlm_ctx *ctx) {
    /* x [2, 3, 2]; row 0 keeps tokens 0 and 2, row 1 keeps none */
    float v[] = {1, 10, 2, 20, 4, 40, 7, 70, 8, 80, 9, 90};
    uint8_t mv[] = {1, 0, 1, 0, 0, 0};
    vlm_tensor *x = vlm_tensor_from(ctx, VLM_F32, 3, (int64_t[]){2, 3, 2}, v);
    vlm_tensor *mask = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){2, 3}, mv);
    x->requires_grad = true;
    vlm_tensor *y = vlm_masked_mean(ctx, x, mask);
    CHECK(shape_is(y, 2, (int64_t[]){2, 2}), "[2, 3, 2] -> [2, 2]");
    static const float want[] = {2.5f, 25.0f, 0.0f, 0.0f};
    CHECK(y && memcmp(vlm_f32(y), want, sizeof want) == 0, "values %g %g %g %g",
          y ? vlm_f32(y)[0] : 0, y ? vlm_f32(y)[1] : 0, y ? vlm_f32(y)[2] : 0,
          y ? vlm_f32(y)[3] : 0);

    /* d sum(y) / dx: 1/2 on the two valid tokens of row 0, 0 elsewhere */
    CHECK(vlm_backward(ctx, vlm_sum_all(ctx, y)) == 0, "backward: %s", vlm_last_error());
    static const float dwant[] = {0.5f, 0.5f, 0, 0, 0.5f, 0.5f, 0, 0, 0, 0, 0, 0};
    CHECK(x->grad && memcmp(x->grad, dwant, sizeof dwant) == 0, "grads");

    vlm_tensor *m32 = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){2, 3});
    CHECK_ERR(vlm_masked_mean(ctx, x, m32), "masked_mean", "u8");
    vlm_tensor *m23 = vlm_zeros(ctx, VLM_U8, 2, (int64_t[]){3, 2});
    CHECK_ERR(vlm_masked_mean(ctx, x, m23), "masked_mean", "[3, 2]");
    CHECK(has(vlm_last_error(), "[2, 3, 2]", NULL), "names x: %s", vlm_last_error());
    vlm_tensor *m1 = vlm_zeros(ctx, VLM_U8, 1, (int64_t[]){6});
    CHECK_ERR(vlm_masked_mean(ctx, x, m1), "masked_mean", "[6]");
    vlm_tensor *x2 = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){2, 3});
    CHECK_ERR(vlm_masked_mean(ctx, x2, mask), "masked_mean", "[2, 3]");
}

static void test_bad_inputs(vlm_ctx *ctx) {
    vlm_tensor *i = vlm_zeros(ctx, VLM_I32, 2, (int64_t[]){2, 3});
    CHECK_ERR(vlm_sum_last(ctx, i), "sum_last", "[2, 3]");
    CHECK_ERR(vlm_mean_all(ctx, i), "mean_all", "i32");
    vlm_tensor *e = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){2, 0});
    CHECK_ERR(vlm_mean_last(ctx, e), "mean_last", "[2, 0]");
    CHECK_ERR(vlm_mean_all(ctx, e), "mean_all", "[2, 0]");
    vlm_tensor *s = vlm_sum_last(ctx, e);
    CHECK(s && s->shape[0] == 2 && vlm_f32(s)[0] == 0.0f, "sum over an empty dim is 0");

    vlm_set_error("sentinel");
    CHECK(vlm_sum_all(ctx, NULL) == NULL && vlm_masked_mean(ctx, NULL, NULL) == NULL,
          "NULL in, NULL out");
    CHECK(strcmp(vlm_last_error(), "sentinel") == 0, "error untouched");
}

int main(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    test_known_values(ctx);
    test_accuracy_and_determinism(ctx);
    test_masked_mean(ctx);
    test_bad_inputs(ctx);
    vlm_ctx_free(ctx);
    return TEST_DONE();
}
