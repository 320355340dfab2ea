/* test_vision.c - patchify against a direct stride-p convolution, patchify and
 * pixel-shuffle layouts by hand and by index arithmetic (forward and the
 * backward's routing on sizes that take the parallel path), bad inputs. */
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

static vlm_tensor *iota(vlm_ctx *ctx, int ndim, const int64_t *shape) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, ndim, shape);
    for (int64_t i = 0; t && i < t->numel; i++) vlm_f32(t)[i] = (float)i;
    return t;
}

/* conv(img, w) with stride = kernel = p, no padding, computed directly, must
 * equal patchify(img) times w viewed as [OC, C*p*p]. */
static void test_patchify_is_conv(vlm_ctx *ctx) {
    enum { B = 2, C = 3, H = 8, W = 12, P = 4, OC = 5, GH = H / P, GW = W / P, K = C * P * P };
    static float img[B][C][H][W], w[OC][C][P][P];
    for (int b = 0; b < B; b++)
        for (int c = 0; c < C; c++)
            for (int h = 0; h < H; h++)
                for (int x = 0; x < W; x++)
                    img[b][c][h][x] = sinf(0.3f * (float)(b * 97 + c * 31 + h * 7 + x));
    for (int o = 0; o < OC; o++)
        for (int c = 0; c < C; c++)
            for (int i = 0; i < P; i++)
                for (int j = 0; j < P; j++)
                    w[o][c][i][j] = cosf(0.7f * (float)(o * 53 + c * 17 + i * 5 + j));
    vlm_tensor *t = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){B, C, H, W}, img);
    vlm_tensor *pt = vlm_patchify(ctx, t, P);
    CHECK(pt && pt->ndim == 3 && pt->shape[0] == B && pt->shape[1] == GH * GW &&
              pt->shape[2] == K,
          "patchify shape: %s", vlm_last_error());
    if (!pt) return;
    const float *wf = &w[0][0][0][0];
    double worst = 0;
    for (int b = 0; b < B; b++)
        for (int o = 0; o < OC; o++)
            for (int ph = 0; ph < GH; ph++)
                for (int pw = 0; pw < GW; pw++) {
                    double conv = 0, gemm = 0;
                    for (int c = 0; c < C; c++)
                        for (int i = 0; i < P; i++)
                            for (int j = 0; j < P; j++)
                                conv += (double)img[b][c][ph * P + i][pw * P + j] * w[o][c][i][j];
                    const float *row = vlm_f32(pt) + ((int64_t)b * GH * GW + ph * GW + pw) * K;
                    for (int k = 0; k < K; k++) gemm += (double)row[k] * wf[o * K + k];
                    worst = fmax(worst, fabs(conv - gemm));
                }
    CHECK(worst <= 1e-12, "patchify x W^T differs from the conv by %g", worst);
}

static void test_patchify_by_hand(vlm_ctx *ctx) {
    /* 4x4 iota, p 2: raster order of patches, each row (kh, kw) */
    vlm_tensor *y = vlm_patchify(ctx, iota(ctx, 4, (int64_t[]){1, 1, 4, 4}), 2);
    static const float want[] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    CHECK(y && y->shape[1] == 4 && y->shape[2] == 4, "4x4 p 2 shape");
    CHECK(y && memcmp(vlm_f32(y), want, sizeof want) == 0, "4x4 p 2 values");
    /* two channels, one patch: the row is (c, kh, kw) = the image itself */
    vlm_tensor *z = vlm_patchify(ctx, iota(ctx, 4, (int64_t[]){1, 2, 2, 2}), 2);
    static const float want2[] = {0, 1, 2, 3, 4, 5, 6, 7};
    CHECK(z && z->shape[1] == 1 && memcmp(vlm_f32(z), want2, sizeof want2) == 0, "C=2 one patch");
}

/* Large enough for the parallel path: forward values are the source offsets,
 * and backward with dy = 0, 1, 2, ... must send every output index back to
 * its pixel. */
static void test_patchify_routing(vlm_ctx *ctx) {
    const int64_t B = 4, C = 3, H = 48, W = 64, p = 16, GW = W / p, K = C * p * p;
    vlm_tensor *x = iota(ctx, 4, (int64_t[]){B, C, H, W});
    x->requires_grad = true;
    size_t mark = vlm_tape_mark(ctx);
    vlm_tensor *y = vlm_patchify(ctx, x, (int)p);
    CHECK(y && y->numel == x->numel, "shape");
    if (!y) return;
    float *dy = vlm_arena_alloc(ctx, (size_t)y->numel * sizeof(float));
    for (int64_t i = 0; i < y->numel; i++) dy[i] = (float)i;
    CHECK(vlm_backward_from(ctx, mark, y, dy) == 0, "backward: %s", vlm_last_error());
    int64_t bad_fw = 0, bad_bw = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t c = 0; c < C; c++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t w = 0; w < W; w++) {
                    int64_t src = ((b * C + c) * H + h) * W + w;
                    int64_t token = b * (H / p) * GW + h / p * GW + w / p;
                    int64_t dst = token * K + (c * p + h % p) * p + w % p;
                    bad_fw += vlm_f32(y)[dst] != (float)src;
                    bad_bw += x->grad[src] != (float)dst;
                }
    CHECK(bad_fw == 0 && bad_bw == 0, "routing: %lld forward, %lld backward wrong",
          (long long)bad_fw, (long long)bad_bw);
}

static void test_pixel_shuffle_by_hand(vlm_ctx *ctx) {
    /* 4x4 grid of 1-feature tokens 0..15, s 2: each output token is a 2x2 block */
    vlm_tensor *y = vlm_pixel_shuffle(ctx, iota(ctx, 3, (int64_t[]){1, 16, 1}), 2);
    static const float want[] = {0, 1, 4, 5, 2, 3, 6, 7, 8, 9, 12, 13, 10, 11, 14, 15};
    CHECK(y && y->shape[1] == 4 && y->shape[2] == 4, "4x4 s 2, D 1 shape");
    CHECK(y && memcmp(vlm_f32(y), want, sizeof want) == 0, "4x4 s 2, D 1 values");
    /* D 2, token n holds (10 n, 10 n + 1): features stay together, blocks in (di, dj) order */
    vlm_tensor *x = vlm_tensor_new(ctx, VLM_F32, 3, (int64_t[]){1, 16, 2});
    for (int n = 0; n < 16; n++) {
        vlm_f32(x)[2 * n] = 10.0f * (float)n;
        vlm_f32(x)[2 * n + 1] = 10.0f * (float)n + 1;
    }
    vlm_tensor *z = vlm_pixel_shuffle(ctx, x, 2);
    static const float want0[] = {0, 1, 10, 11, 40, 41, 50, 51};
    static const float want3[] = {100, 101, 110, 111, 140, 141, 150, 151};
    CHECK(z && z->shape[2] == 8 && memcmp(vlm_f32(z), want0, sizeof want0) == 0, "token 0");
    CHECK(z && memcmp(vlm_f32(z) + 3 * 8, want3, sizeof want3) == 0, "token 3");
}

static void test_pixel_shuffle_routing(vlm_ctx *ctx) {
    const int64_t B = 4, g = 24, N = g * g, D = 16, s = 3, G = g / s;
    vlm_tensor *x = iota(ctx, 3, (int64_t[]){B, N, D});
    x->requires_grad = true;
    size_t mark = vlm_tape_mark(ctx);
    vlm_tensor *y = vlm_pixel_shuffle(ctx, x, (int)s);
    CHECK(y && y->shape[1] == G * G && y->shape[2] == D * s * s, "shape");
    if (!y) return;
    float *dy = vlm_arena_alloc(ctx, (size_t)y->numel * sizeof(float));
    for (int64_t i = 0; i < y->numel; i++) dy[i] = (float)i;
    CHECK(vlm_backward_from(ctx, mark, y, dy) == 0, "backward: %s", vlm_last_error());
    int64_t bad_fw = 0, bad_bw = 0;
    for (int64_t b = 0; b < B; b++)
        for (int64_t r = 0; r < g; r++)
            for (int64_t c = 0; c < g; c++)
                for (int64_t d = 0; d < D; d++) {
                    int64_t src = (b * N + r * g + c) * D + d;
                    int64_t dst = (b * G * G + r / s * G + c / s) * D * s * s +
                                  (r % s * s + c % s) * D + d;
                    bad_fw += vlm_f32(y)[dst] != (float)src;
                    bad_bw += x->grad[src] != (float)dst;
                }
    CHECK(bad_fw == 0 && bad_bw == 0, "routing: %lld forward, %lld backward wrong",
          (long long)bad_fw, (long long)bad_bw);
}

static void test_bad_inputs(vlm_ctx *ctx) {
    vlm_tensor *img = vlm_zeros(ctx, VLM_F32, 4, (int64_t[]){1, 3, 10, 12});
    CHECK_ERR(vlm_patchify(ctx, img, 4), "patchify", "[1, 3, 10, 12]");
    CHECK(has(vlm_last_error(), "patch 4", NULL), "names the patch: %s", vlm_last_error());
    CHECK_ERR(vlm_patchify(ctx, img, 0), "patchify", "[1, 3, 10, 12]");
    CHECK_ERR(vlm_patchify(ctx, img, -2), "patchify", "[1, 3, 10, 12]");
    vlm_tensor *hw = vlm_zeros(ctx, VLM_F32, 3, (int64_t[]){3, 8, 8});
    CHECK_ERR(vlm_patchify(ctx, hw, 4), "patchify", "[3, 8, 8]");

    vlm_tensor *x12 = vlm_zeros(ctx, VLM_F32, 3, (int64_t[]){2, 12, 4});
    CHECK_ERR(vlm_pixel_shuffle(ctx, x12, 2), "pixel_shuffle", "[2, 12, 4]");
    vlm_tensor *x36 = vlm_zeros(ctx, VLM_F32, 3, (int64_t[]){2, 36, 4});
    CHECK_ERR(vlm_pixel_shuffle(ctx, x36, 4), "pixel_shuffle", "[2, 36, 4]");
    CHECK(has(vlm_last_error(), "s = 4", NULL), "names s: %s", vlm_last_error());
    CHECK_ERR(vlm_pixel_shuffle(ctx, x36, 0), "pixel_shuffle", "[2, 36, 4]");
    vlm_tensor *x2d = vlm_zeros(ctx, VLM_F32, 2, (int64_t[]){16, 4});
    CHECK_ERR(vlm_pixel_shuffle(ctx, x2d, 2), "pixel_shuffle", "[16, 4]");

    vlm_set_error("sentinel");
    CHECK(vlm_patchify(ctx, NULL, 2) == NULL && vlm_pixel_shuffle(ctx, NULL, 2) == NULL,
          "NULL in, NULL out");
    CHECK(strcmp(vlm_last_error(), "sentinel") == 0, "error untouched");
}

int main(void) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    test_patchify_is_conv(ctx);
    test_patchify_by_hand(ctx);
    test_patchify_routing(ctx);
    test_pixel_shuffle_by_hand(ctx);
    test_pixel_shuffle_routing(ctx);
    test_bad_inputs(ctx);
    vlm_ctx_free(ctx);
    return TEST_DONE();
}
