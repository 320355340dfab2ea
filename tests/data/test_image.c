/* test_image.c - decoding every supported format and channel count, bad
 * files, limits, resampling (against Pillow and a direct formula),
 * antialiasing, crops, flips, random-resized-crop reproducibility,
 * normalisation and the preprocessing pipeline. Images are written at test
 * time (stb_image_write, or by hand for 16-bit PNG and PGM/PPM) into a
 * mkdtemp directory. */
#include "data.h"
#include "test.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define STB_IMAGE_WRITE_IMPLEMENTATION
/* see data/image.c: stb's JPEG bit writer shifts a signed int too far */
static void stbiw__jpg_writeBits() __attribute__((no_sanitize("shift")));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image_write.h>
#pragma GCC diagnostic pop

#include "fixtures/resize_pil.h"

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof buf[k], "%s/%s", tmpdir, name);
    return buf[k];
}

static void write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

static uint8_t *read_whole(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n ? *n : 1);
    if (p && fread(p, 1, *n, f) != *n) {
        free(p);
        p = NULL;
    }
    fclose(f);
    return p;
}

static bool has(const char *s, const char *sub) { return strstr(s, sub) != NULL; }

/* A 7x5 test picture: distinct values per pixel and channel. */
#define TW 7
#define TH 5
static uint8_t test_px(int x, int y, int c) { return (uint8_t)(x * 37 + y * 11 + c * 85 + 3); }

static int max_diff_rgb(const vlm_image *im, int comp, const uint8_t *src) {
    int worst = 0;
    for (int y = 0; y < TH; y++)
        for (int x = 0; x < TW; x++)
            for (int c = 0; c < 3; c++) {
                int want = comp <= 2 ? src[(y * TW + x) * comp] : src[(y * TW + x) * comp + c];
                int d = abs(im->rgb[(y * TW + x) * 3 + c] - want);
                if (d > worst) worst = d;
            }
    return worst;
}

/* ---- decoding ----------------------------------------------------------------- */

static void test_png_bmp_channels(void) {
    for (int comp = 1; comp <= 4; comp++) {
        uint8_t src[TW * TH * 4];
        for (int i = 0; i < TW * TH; i++)
            for (int c = 0; c < comp; c++) /* alpha (last of 2 / 4) varies, incl. 0 */
                src[i * comp + c] = test_px(i % TW, i / TW, c);
        char name[64];
        snprintf(name, sizeof name, "c%d.png", comp);
        CHECK(stbi_write_png(tmp_path(name), TW, TH, comp, src, TW * comp), "write %s", name);
        vlm_image im;
        int rc = vlm_image_load(tmp_path(name), NULL, &im);
        CHECK(rc == 0, "png comp %d: %s", comp, vlm_last_error());
        if (!rc) {
            CHECK(im.width == TW && im.height == TH, "png %dx%d", im.width, im.height);
            CHECK(max_diff_rgb(&im, comp, src) == 0, "png comp %d differs", comp);
            vlm_image_free(&im);
        }
        if (comp == 2) continue; /* stb writes BMP as 3 or 4 channels only */
        snprintf(name, sizeof name, "c%d.bmp", comp);
        CHECK(stbi_write_bmp(tmp_path(name), TW, TH, comp, src), "write %s", name);
        rc = vlm_image_load(tmp_path(name), NULL, &im);
        CHECK(rc == 0, "bmp comp %d: %s", comp, vlm_last_error());
        if (!rc) {
            CHECK(max_diff_rgb(&im, comp, src) == 0, "bmp comp %d differs", comp);
            vlm_image_free(&im);
        }
    }
}

static void test_jpeg(void) {
    /* A smooth picture, so JPEG is accurate to a few levels. */
    enum { W = 32, H = 24 };
    uint8_t src[W * H * 3], grey[W * H];
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            for (int c = 0; c < 3; c++)
                src[(y * W + x) * 3 + c] = (uint8_t)(40 + x * 4 + y * 2 + c * 30);
            grey[y * W + x] = (uint8_t)(30 + x * 3 + y * 4);
        }
    CHECK(stbi_write_jpg(tmp_path("rgb.jpg"), W, H, 3, src, 95), "write jpg");
    CHECK(stbi_write_jpg(tmp_path("grey.jpg"), W, H, 1, grey, 95), "write grey jpg");
    vlm_image im;
    CHECK(vlm_image_load(tmp_path("rgb.jpg"), NULL, &im) == 0, "%s", vlm_last_error());
    double sum = 0;
    int worst = 0;
    for (int i = 0; im.rgb && i < W * H * 3; i++) {
        int d = abs(im.rgb[i] - src[i]);
        sum += d;
        if (d > worst) worst = d;
    }
    CHECK(im.width == W && im.height == H && worst <= 12 && sum / (W * H * 3) < 2.5,
          "jpeg max diff %d mean %.2f", worst, sum / (W * H * 3));
    vlm_image_free(&im);
    CHECK(vlm_image_load(tmp_path("grey.jpg"), NULL, &im) == 0, "%s", vlm_last_error());
    worst = 0;
    for (int i = 0; im.rgb && i < W * H; i++)
        for (int c = 0; c < 3; c++)
            if (abs(im.rgb[i * 3 + c] - grey[i]) > worst) worst = abs(im.rgb[i * 3 + c] - grey[i]);
    CHECK(worst <= 8, "grey jpeg max diff %d", worst);
    vlm_image_free(&im);

    /* Our own encoder round-trips too. */
    vlm_image s = {W, H, src};
    uint8_t *enc;
    size_t n;
    CHECK(vlm_image_encode_jpeg(&s, 95, &enc, &n) == 0 && n > 100, "%s", vlm_last_error());
    CHECK(vlm_image_decode(enc, n, "mem", NULL, &im) == 0, "%s", vlm_last_error());
    worst = 0;
    for (int i = 0; im.rgb && i < W * H * 3; i++)
        if (abs(im.rgb[i] - src[i]) > worst) worst = abs(im.rgb[i] - src[i]);
    CHECK(worst <= 12, "encode_jpeg round trip max diff %d", worst);
    vlm_image_free(&im);
    free(enc);
    CHECK(vlm_image_encode_jpeg(&s, 0, &enc, &n) == -1 && has(vlm_last_error(), "quality"), "q0");
}

/* ---- hand-made PNGs (16-bit; a huge header) --------------------------------- */

static uint32_t crc32_of(const uint8_t *p, size_t n, uint32_t crc) {
    crc = ~crc;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1)));
    }
    return ~crc;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8),
    p[3] = (uint8_t)v;
}

static size_t png_chunk(uint8_t *out, const char *type, const uint8_t *data, uint32_t n) {
    put32(out, n);
    memcpy(out + 4, type, 4);
    if (n) memcpy(out + 8, data, n);
    put32(out + 8 + n, crc32_of(out + 4, 4 + n, 0));
    return 12 + n;
}

/* PNG of already-filtered scanlines (`raw`, filter byte first), compressed
 * with zlib "stored" blocks, so no deflate implementation is needed. */
static size_t make_png(uint8_t *out, uint32_t w, uint32_t h, int depth, int ctype,
                       const uint8_t *raw, size_t n) {
    static const uint8_t sig[8] = {137, 'P', 'N', 'G', '\r', '\n', 26, '\n'};
    uint8_t ihdr[13], *z = malloc(n + 64 + n / 65535 * 5);
    put32(ihdr, w);
    put32(ihdr + 4, h);
    ihdr[8] = (uint8_t)depth, ihdr[9] = (uint8_t)ctype, ihdr[10] = ihdr[11] = ihdr[12] = 0;
    size_t zn = 0, pos = 0;
    z[zn++] = 0x78, z[zn++] = 0x01;
    do {
        size_t len = n - pos > 65535 ? 65535 : n - pos;
        z[zn++] = pos + len == n;
        z[zn++] = (uint8_t)len, z[zn++] = (uint8_t)(len >> 8);
        z[zn++] = (uint8_t)~len, z[zn++] = (uint8_t)(~len >> 8);
        memcpy(z + zn, raw + pos, len);
        zn += len, pos += len;
    } while (pos < n);
    uint32_t a = 1, b = 0;
    for (size_t i = 0; i < n; i++)
        a = (a + raw[i]) % 65521, b = (b + a) % 65521;
    put32(z + zn, (b << 16) | a);
    zn += 4;
    size_t o = 8;
    memcpy(out, sig, 8);
    o += png_chunk(out + o, "IHDR", ihdr, 13);
    o += png_chunk(out + o, "IDAT", z, (uint32_t)zn);
    o += png_chunk(out + o, "IEND", NULL, 0);
    free(z);
    return o;
}

static void test_png16(void) {
    /* Values where rounding (v / 257) and truncation (v >> 8) disagree. */
    static const uint16_t vals[] = {0,      0x00FF, 0x0080, 0x80FF, 0x8080,
                                    0xFF7F, 0xFFFF, 0x1234, 0x7F80};
    enum { W = 3, H = 3 };
    for (int grey = 0; grey <= 1; grey++) {
        int ch = grey ? 1 : 3;
        uint8_t raw[H * (1 + W * 3 * 2)], png[1024];
        size_t r = 0;
        for (int y = 0; y < H; y++) {
            raw[r++] = 0;
            for (int x = 0; x < W; x++)
                for (int c = 0; c < ch; c++) {
                    uint16_t v = vals[(y * W + x + c * 4) % 9];
                    raw[r++] = (uint8_t)(v >> 8), raw[r++] = (uint8_t)v;
                }
        }
        size_t n = make_png(png, W, H, 16, grey ? 0 : 2, raw, r);
        const char *path = tmp_path(grey ? "grey16.png" : "rgb16.png");
        write_file(path, png, n);
        vlm_image im;
        int rc = vlm_image_load(path, NULL, &im);
        CHECK(rc == 0, "16-bit %s: %s", grey ? "grey" : "rgb", vlm_last_error());
        int bad = 0;
        for (int y = 0; rc == 0 && y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < 3; c++) {
                    uint16_t v = vals[(y * W + x + (grey ? 0 : c) * 4) % 9];
                    bad += im.rgb[(y * W + x) * 3 + c] != (uint8_t)lround(v / 257.0);
                }
        CHECK(rc == 0 && bad == 0, "16-bit %s: %d samples not rounded v/257", grey ? "grey" : "rgb",
              bad);
        vlm_image_free(&im);
    }
}

static void test_pnm(void) {
    uint8_t buf[256];
    /* P6 RGB, maxval 255 */
    int n = snprintf((char *)buf, sizeof buf, "P6\n# comment\n%d %d\n255\n", TW, TH);
    for (int i = 0; i < TW * TH * 3; i++)
        buf[n + i] = test_px((i / 3) % TW, i / 3 / TW, i % 3);
    write_file(tmp_path("a.ppm"), buf, (size_t)n + TW * TH * 3);
    vlm_image im;
    CHECK(vlm_image_load(tmp_path("a.ppm"), NULL, &im) == 0, "ppm: %s", vlm_last_error());
    CHECK(im.rgb && max_diff_rgb(&im, 3, buf + n) == 0, "ppm differs");
    vlm_image_free(&im);
    /* P5 grey, maxval 255 */
    n = snprintf((char *)buf, sizeof buf, "P5 %d %d 255\n", TW, TH);
    for (int i = 0; i < TW * TH; i++)
        buf[n + i] = test_px(i % TW, i / TW, 0);
    write_file(tmp_path("a.pgm"), buf, (size_t)n + TW * TH);
    CHECK(vlm_image_load(tmp_path("a.pgm"), NULL, &im) == 0, "pgm: %s", vlm_last_error());
    CHECK(im.rgb && max_diff_rgb(&im, 1, buf + n) == 0, "pgm differs");
    vlm_image_free(&im);
    /* P5 maxval 15: samples are stretched to 0..255 */
    n = snprintf((char *)buf, sizeof buf, "P5 4 1 15\n");
    memcpy(buf + n, (uint8_t[]){0, 1, 8, 15}, 4);
    write_file(tmp_path("b.pgm"), buf, (size_t)n + 4);
    CHECK(vlm_image_load(tmp_path("b.pgm"), NULL, &im) == 0, "pgm15: %s", vlm_last_error());
    CHECK(im.rgb && im.rgb[0] == 0 && im.rgb[3] == 17 && im.rgb[6] == 136 && im.rgb[9] == 255,
          "pgm maxval 15: %d %d %d %d", im.rgb ? im.rgb[0] : -1, im.rgb ? im.rgb[3] : -1,
          im.rgb ? im.rgb[6] : -1, im.rgb ? im.rgb[9] : -1);
    vlm_image_free(&im);
    /* P5 16-bit, maxval 65535 (big-endian samples) */
    n = snprintf((char *)buf, sizeof buf, "P5 2 1 65535\n");
    memcpy(buf + n, (uint8_t[]){0x01, 0xFF, 0x00, 0xFF}, 4); /* 511 / 257 -> 2, 255 / 257 -> 1 */
    write_file(tmp_path("c.pgm"), buf, (size_t)n + 4);
    CHECK(vlm_image_load(tmp_path("c.pgm"), NULL, &im) == 0, "pgm16: %s", vlm_last_error());
    CHECK(im.rgb && im.rgb[0] == 2 && im.rgb[3] == 1, "pgm16: %d %d", im.rgb ? im.rgb[0] : -1,
          im.rgb ? im.rgb[3] : -1);
    vlm_image_free(&im);
    /* P6 16-bit with maxval 1000: one pixel (1000, 500, 2) -> (255, 128, 1) */
    n = snprintf((char *)buf, sizeof buf, "P6 1 1 1000\n");
    memcpy(buf + n, (uint8_t[]){0x03, 0xE8, 0x01, 0xF4, 0x00, 0x02}, 6);
    write_file(tmp_path("d.ppm"), buf, (size_t)n + 6);
    CHECK(vlm_image_load(tmp_path("d.ppm"), NULL, &im) == 0, "ppm16: %s", vlm_last_error());
    CHECK(im.rgb && im.rgb[0] == 255 && im.rgb[1] == 128 && im.rgb[2] == 1, "ppm16 maxval 1000");
    vlm_image_free(&im);
    write_file(tmp_path("e.ppm"), buf, (size_t)n + 5); /* one byte short */
    CHECK(vlm_image_load(tmp_path("e.ppm"), NULL, &im) == -1 &&
              has(vlm_last_error(), "truncated") && has(vlm_last_error(), "e.ppm"),
          "truncated ppm16: %s", vlm_last_error());
}

static void test_memory_decode(void) {
    size_t n;
    uint8_t *png = read_whole(tmp_path("c3.png"), &n);
    CHECK(png != NULL, "read c3.png");
    vlm_image im;
    CHECK(vlm_image_decode(png, n, "blob 7", NULL, &im) == 0, "%s", vlm_last_error());
    CHECK(im.width == TW && im.height == TH && im.rgb[5] == test_px(1, 0, 2), "memory decode");
    vlm_image_free(&im);
    /* A truncated buffer: the error names the buffer. */
    CHECK(vlm_image_decode(png, n / 2, "blob 7", NULL, &im) == -1 &&
              has(vlm_last_error(), "blob 7"),
          "truncated buffer: %s", vlm_last_error());
    CHECK(im.rgb == NULL && im.width == 0, "no image on error");
    CHECK(vlm_image_decode(png, 0, "blob 8", NULL, &im) == -1 && has(vlm_last_error(), "blob 8") &&
              has(vlm_last_error(), "empty"),
          "empty buffer: %s", vlm_last_error());
    free(png);
}

/* ---- bad files and limits ------------------------------------------------------ */

static void expect_load_error(const char *path, const vlm_image_limits *lim, const char *why) {
    vlm_image im = {1, 1, NULL};
    int rc = vlm_image_load(path, lim, &im);
    CHECK(rc == -1 && has(vlm_last_error(), path) && has(vlm_last_error(), why),
          "%s: rc %d, error '%s' (want '%s')", path, rc, vlm_last_error(), why);
    CHECK(im.rgb == NULL && im.width == 0, "%s: image left empty", path);
}

static void test_bad_files(void) {
    expect_load_error(tmp_path("missing.png"), NULL, "No such file");
    write_file(tmp_path("empty.png"), "", 0);
    expect_load_error(tmp_path("empty.png"), NULL, "empty");
    expect_load_error(tmpdir, NULL, "not a regular file");
    size_t n;
    uint8_t *png = read_whole(tmp_path("c3.png"), &n);
    write_file(tmp_path("trunc.png"), png, n - 20);
    expect_load_error(tmp_path("trunc.png"), NULL, "cannot decode");
    write_file(tmp_path("short.png"), png, 20); /* cut inside the header */
    expect_load_error(tmp_path("short.png"), NULL, "unreadable header");
    /* Corrupt compressed data: the zlib header of IDAT is destroyed. */
    uint8_t *bad = malloc(n);
    memcpy(bad, png, n);
    for (size_t i = 0; i + 4 < n; i++)
        if (!memcmp(bad + i, "IDAT", 4)) {
            bad[i + 4] = 0xFF, bad[i + 5] = 0xFF;
            break;
        }
    write_file(tmp_path("corrupt.png"), bad, n);
    expect_load_error(tmp_path("corrupt.png"), NULL, "cannot decode");
    write_file(tmp_path("garbage.jpg"), "this is not an image at all", 27);
    expect_load_error(tmp_path("garbage.jpg"), NULL, "unreadable header");
    write_file(tmp_path("anim.gif"), "GIF89a\x01\x00\x01\x00\x00\x00\x00;", 14);
    expect_load_error(tmp_path("anim.gif"), NULL, "unreadable header");
    free(bad);

    /* Decompression bombs: rejected from the header, before decoding. */
    uint8_t raw[2] = {0, 0}, big[256];
    size_t bn = make_png(big, 9000, 9000, 8, 2, raw, 2); /* 81 Mpixels > 64 */
    write_file(tmp_path("bomb.png"), big, bn);
    expect_load_error(tmp_path("bomb.png"), NULL, "over the limit");
    bn = make_png(big, 100000, 100000, 8, 2, raw, 2);
    write_file(tmp_path("huge.png"), big, bn);
    expect_load_error(tmp_path("huge.png"), NULL, "100000x100000 pixels is over the limit");
    /* A baseline JPEG frame header claiming 65535x65535. */
    static const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, 'J',  'F',  0xFF, 0xC0,
                                  0x00, 0x11, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x03, 0x01, 0x22,
                                  0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xFF, 0xD9};
    write_file(tmp_path("bomb.jpg"), jpg, sizeof jpg);
    expect_load_error(tmp_path("bomb.jpg"), NULL, "65535x65535 pixels is over the limit");
    /* A BMP info header claiming 20000 x -20000 (top-down) pixels. */
    uint8_t bmp[64] = {'B', 'M'};
    bmp[14] = 40;                                             /* BITMAPINFOHEADER */
    bmp[18] = 0x20, bmp[19] = 0x4E;                           /* width 20000 */
    bmp[22] = 0xE0, bmp[23] = 0xB1, bmp[24] = bmp[25] = 0xFF; /* height -20000 */
    bmp[26] = 1, bmp[28] = 24;
    write_file(tmp_path("bomb.bmp"), bmp, sizeof bmp);
    expect_load_error(tmp_path("bomb.bmp"), NULL, "20000x20000 pixels is over the limit");
    vlm_image_limits lim = {.max_pixels = 30}; /* 7x5 = 35 */
    expect_load_error(tmp_path("c3.png"), &lim, "over the limit");
    lim = (vlm_image_limits){.max_bytes = 50};
    expect_load_error(tmp_path("c3.png"), &lim, "over the limit");
    lim = (vlm_image_limits){.max_pixels = 35, .max_bytes = n};
    vlm_image im;
    CHECK(vlm_image_load(tmp_path("c3.png"), &lim, &im) == 0, "at the limits: %s",
          vlm_last_error());
    vlm_image_free(&im);
    int w = 0, h = 0;
    CHECK(vlm_image_probe(png, n, "p", NULL, &w, &h) == 0 && w == TW && h == TH, "probe %dx%d", w,
          h);
    free(png);
}

/* ---- resampling ------------------------------------------------------------------ */

static uint8_t pattern_pixel(int x, int y, int c) {
    return (uint8_t)((x * 7 + y * 13 + c * 50 + ((x * y) % 31) * 3 + ((x / 16 + y / 16) % 2) * 90) %
                     256);
}

static void test_resize_constant(void) {
    vlm_image src;
    vlm_image_alloc(&src, 17, 13);
    for (int i = 0; i < 17 * 13; i++)
        src.rgb[3 * i] = 10, src.rgb[3 * i + 1] = 200, src.rgb[3 * i + 2] = 77;
    static const int sizes[][2] = {{1, 1}, {5, 3}, {17, 13}, {40, 9}, {64, 64}};
    for (int f = 0; f <= 1; f++)
        for (int s = 0; s < 5; s++) {
            int ow = sizes[s][0], oh = sizes[s][1], bad = 0;
            vlm_image out;
            float *o32 = malloc((size_t)ow * oh * 3 * sizeof(float));
            CHECK(vlm_image_resize(&src, NULL, ow, oh, f, &out) == 0, "%s", vlm_last_error());
            CHECK(vlm_image_resize_f32(&src, NULL, ow, oh, f, o32) == 0, "%s", vlm_last_error());
            for (int i = 0; i < ow * oh; i++)
                for (int c = 0; c < 3; c++) {
                    bad += out.rgb[3 * i + c] != src.rgb[c];
                    bad += fabsf(o32[3 * i + c] - src.rgb[c]) > 1e-3f;
                }
            CHECK(bad == 0, "constant image %s to %dx%d: %d samples changed",
                  f ? "bicubic" : "bilinear", ow, oh, bad);
            vlm_image_free(&out);
            free(o32);
        }
    vlm_image_free(&src);
}

static void test_resize_pil(void) {
    vlm_image small = {PIL_SMALL_W, PIL_SMALL_H, (uint8_t *)pil_small}, pat;
    vlm_image_alloc(&pat, PIL_PATTERN_W, PIL_PATTERN_H);
    for (int y = 0; y < PIL_PATTERN_H; y++)
        for (int x = 0; x < PIL_PATTERN_W; x++)
            for (int c = 0; c < 3; c++)
                pat.rgb[(y * PIL_PATTERN_W + x) * 3 + c] = pattern_pixel(x, y, c);
    for (size_t i = 0; i < sizeof pil_cases / sizeof pil_cases[0]; i++) {
        const pil_case *pc = &pil_cases[i];
        vlm_rect box = {pc->x, pc->y, pc->w, pc->h};
        const vlm_rect *bp = pc->w ? &box : NULL;
        vlm_image out;
        size_t n = (size_t)pc->out_w * pc->out_h * 3;
        float *o32 = malloc(n * sizeof(float));
        int rc = vlm_image_resize(pc->pattern ? &pat : &small, bp, pc->out_w, pc->out_h,
                                  pc->bicubic ? VLM_RESIZE_BICUBIC : VLM_RESIZE_BILINEAR, &out);
        CHECK(rc == 0, "case %zu: %s", i, vlm_last_error());
        rc |= vlm_image_resize_f32(pc->pattern ? &pat : &small, bp, pc->out_w, pc->out_h,
                                   pc->bicubic ? VLM_RESIZE_BICUBIC : VLM_RESIZE_BILINEAR, o32);
        int exact_bad = 0;
        float worst = 0;
        for (size_t k = 0; rc == 0 && k < n; k++) {
            exact_bad += out.rgb[k] != pc->out[k];
            worst = fmaxf(worst, fabsf(o32[k] - pc->out[k]));
        }
        CHECK(rc == 0 && exact_bad == 0, "case %zu (%s %dx%d): %d samples differ from Pillow", i,
              pc->bicubic ? "bicubic" : "bilinear", pc->out_w, pc->out_h, exact_bad);
        /* f32 skips the roundings: within about one level of Pillow */
        CHECK(rc == 0 && worst <= 1.5f, "case %zu: f32 path max diff %.3f from Pillow", i,
              (double)worst);
        vlm_image_free(&out);
        free(o32);
    }
    vlm_image_free(&pat);
}

/* The resampling definition written out directly, in double precision:
 * out(X, Y) = clamp(sum_j wy(Y, j) clamp(sum_i wx(X, i) src(i, j))), weights
 * = filter((i + 0.5 - centre) / s) normalised, s = max(1, in / out), centre =
 * (X + 0.5) in / out, clamp to [0, 255] after each pass as Pillow does. */
static double clamp255(double v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

static double kernel(int bicubic, double x) {
    x = fabs(x);
    if (!bicubic) return x < 1 ? 1 - x : 0;
    if (x < 1) return 1.5 * x * x * x - 2.5 * x * x + 1;
    if (x < 2) return -0.5 * x * x * x + 2.5 * x * x - 4 * x + 2;
    return 0;
}

static void weights(int bicubic, int in, int out, int X, double *w) {
    double scale = (double)in / out, s = scale > 1 ? scale : 1, centre = (X + 0.5) * scale, sum = 0;
    double support = (bicubic ? 2 : 1) * s;
    for (int i = 0; i < in; i++) {
        /* Pillow's window: input indices whose centre is within the support */
        int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
        w[i] = i >= lo && i < hi ? kernel(bicubic, (i + 0.5 - centre) / s) : 0;
        sum += w[i];
    }
    for (int i = 0; i < in; i++)
        w[i] /= sum;
}

static void test_resize_formula(void) {
    /* the classic: [0, 255] stretched to 4 samples is [0, 64, 191, 255] */
    vlm_image two;
    vlm_image_alloc(&two, 2, 1);
    memset(two.rgb, 0, 3);
    memset(two.rgb + 3, 255, 3);
    vlm_image out;
    CHECK(vlm_image_resize(&two, NULL, 4, 1, VLM_RESIZE_BILINEAR, &out) == 0, "%s",
          vlm_last_error());
    CHECK(out.rgb[0] == 0 && out.rgb[3] == 64 && out.rgb[6] == 191 && out.rgb[9] == 255,
          "bilinear 2->4: %d %d %d %d", out.rgb[0], out.rgb[3], out.rgb[6], out.rgb[9]);
    vlm_image_free(&out);
    vlm_image_free(&two);

    static const int cases[][3] = {{0, 9, 4}, {1, 9, 4}, {1, 21, 13}, {0, 5, 12}, {1, 6, 15}};
    vlm_image src;
    vlm_image_alloc(&src, 11, 8);
    uint64_t st = 99;
    for (int i = 0; i < 11 * 8 * 3; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        src.rgb[i] = (uint8_t)(st >> 56);
    }
    for (int k = 0; k < 5; k++) {
        int bic = cases[k][0], ow = cases[k][1], oh = cases[k][2];
        float *o = malloc((size_t)ow * oh * 3 * sizeof(float));
        double wx[11], wy[8], worst = 0;
        CHECK(vlm_image_resize_f32(&src, NULL, ow, oh, bic, o) == 0, "%s", vlm_last_error());
        for (int Y = 0; Y < oh; Y++)
            for (int X = 0; X < ow; X++) {
                weights(bic, 11, ow, X, wx);
                weights(bic, 8, oh, Y, wy);
                for (int c = 0; c < 3; c++) {
                    double v = 0;
                    for (int j = 0; j < 8; j++) {
                        double row = 0;
                        for (int i = 0; i < 11; i++)
                            row += wx[i] * src.rgb[(j * 11 + i) * 3 + c];
                        v += wy[j] * clamp255(row);
                    }
                    v = clamp255(v);
                    worst = fmax(worst, fabs(v - o[(Y * ow + X) * 3 + c]));
                }
            }
        CHECK(worst < 2e-3, "formula %s 11x8 -> %dx%d: max diff %g", bic ? "bicubic" : "bilinear",
              ow, oh, worst);
        free(o);
    }
    vlm_image_free(&src);
}

static double stddev(const uint8_t *p, size_t n, size_t step) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < n; i += step)
        s += p[i], s2 += (double)p[i] * p[i];
    double m = s / (n / step);
    return sqrt(fmax(0, s2 / (n / step) - m * m));
}

static void test_antialias(void) {
    /* 1-pixel checkerboard shrunk 3.2x: a filter that is not stretched
     * (point-sampled bilinear) aliases into large swings; ours averages. */
    enum { N = 64, M = 20 };
    vlm_image cb;
    vlm_image_alloc(&cb, N, N);
    for (int y = 0; y < N; y++)
        for (int x = 0; x < N; x++)
            memset(cb.rgb + (y * N + x) * 3, (x + y) % 2 ? 255 : 0, 3);
    uint8_t naive[M * M];
    double sc = (double)N / M;
    for (int Y = 0; Y < M; Y++)
        for (int X = 0; X < M; X++) {
            double fx = (X + 0.5) * sc - 0.5, fy = (Y + 0.5) * sc - 0.5;
            int x0 = (int)floor(fx), y0 = (int)floor(fy);
            double ax = fx - x0, ay = fy - y0, v = 0;
            for (int dy = 0; dy <= 1; dy++)
                for (int dx = 0; dx <= 1; dx++)
                    v += (dx ? ax : 1 - ax) * (dy ? ay : 1 - ay) *
                         cb.rgb[((y0 + dy) * N + x0 + dx) * 3];
            naive[Y * M + X] = (uint8_t)lround(v);
        }
    for (int f = 0; f <= 1; f++) {
        vlm_image out;
        CHECK(vlm_image_resize(&cb, NULL, M, M, f, &out) == 0, "%s", vlm_last_error());
        double s_aa = stddev(out.rgb, M * M * 3, 3), s_naive = stddev(naive, M * M, 1);
        CHECK(s_aa < 8 && s_naive > 40 && s_aa < 0.15 * s_naive,
              "%s checkerboard std %.2f (antialiased) vs %.2f (point-sampled)",
              f ? "bicubic" : "bilinear", s_aa, s_naive);
        vlm_image_free(&out);
    }
    vlm_image_free(&cb);
}

static void test_resize_errors(void) {
    vlm_image src, out;
    vlm_image_alloc(&src, 8, 6);
    memset(src.rgb, 1, 8 * 6 * 3);
    vlm_rect box = {5, 0, 4, 6};
    CHECK(vlm_image_resize(&src, &box, 4, 4, VLM_RESIZE_BICUBIC, &out) == -1 &&
              has(vlm_last_error(), "not inside"),
          "box outside: %s", vlm_last_error());
    CHECK(vlm_image_resize(&src, NULL, 0, 4, VLM_RESIZE_BICUBIC, &out) == -1 &&
              has(vlm_last_error(), "output size"),
          "zero size: %s", vlm_last_error());
    CHECK(vlm_image_crop(&src, (vlm_rect){-1, 0, 2, 2}, &out) == -1 && out.rgb == NULL,
          "crop outside");
    vlm_image_free(&src);
}

/* ---- geometry and normalisation ------------------------------------------------- */

static void test_flip_crop(void) {
    vlm_image im;
    for (int w = 4; w <= 5; w++) { /* even and odd widths */
        vlm_image_alloc(&im, w, 3);
        for (int i = 0; i < w * 3 * 3; i++)
            im.rgb[i] = (uint8_t)i;
        vlm_image_hflip(&im);
        int bad = 0;
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < w; x++)
                for (int c = 0; c < 3; c++)
                    bad += im.rgb[(y * w + x) * 3 + c] != (y * w + (w - 1 - x)) * 3 + c;
        CHECK(bad == 0, "hflip width %d: %d wrong", w, bad);
        vlm_image_free(&im);
    }
    vlm_rect b = vlm_center_crop_box(10, 7, 4, 4); /* (10-4)/2 = 3, round(1.5) = 2 */
    CHECK(b.x == 3 && b.y == 2 && b.w == 4 && b.h == 4, "center box %d %d %d %d", b.x, b.y, b.w,
          b.h);
    b = vlm_center_crop_box(9, 8, 4, 3); /* round(2.5) = 2 (half to even, as Python) */
    CHECK(b.x == 2 && b.y == 2, "center box half-even %d %d", b.x, b.y);
    vlm_image_alloc(&im, 10, 7);
    for (int i = 0; i < 10 * 7 * 3; i++)
        im.rgb[i] = (uint8_t)(i * 7);
    vlm_image c;
    CHECK(vlm_image_crop(&im, vlm_center_crop_box(10, 7, 4, 4), &c) == 0, "%s", vlm_last_error());
    int bad = 0;
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 4; x++)
            for (int k = 0; k < 3; k++)
                bad += c.rgb[(y * 4 + x) * 3 + k] != im.rgb[((y + 2) * 10 + x + 3) * 3 + k];
    CHECK(c.width == 4 && c.height == 4 && bad == 0, "center crop content");
    vlm_image_free(&c);
    vlm_image_free(&im);
}

static void test_random_resized_crop(void) {
    vlm_rect a[20], b[20];
    uint64_t s1 = 42, s2 = 42, s3 = 43;
    int same = 1, differ = 0, in_range = 1;
    for (int i = 0; i < 20; i++) {
        a[i] = vlm_random_resized_crop_box(320, 240, 0.08f, 1.0f, 0.75f, 4.0f / 3, &s1);
        b[i] = vlm_random_resized_crop_box(320, 240, 0.08f, 1.0f, 0.75f, 4.0f / 3, &s2);
        vlm_rect c = vlm_random_resized_crop_box(320, 240, 0.08f, 1.0f, 0.75f, 4.0f / 3, &s3);
        same &= !memcmp(&a[i], &b[i], sizeof a[i]);
        differ += memcmp(&a[i], &c, sizeof c) != 0;
        double area = (double)a[i].w * a[i].h / (320 * 240), ratio = (double)a[i].w / a[i].h;
        in_range &= a[i].x >= 0 && a[i].y >= 0 && a[i].x + a[i].w <= 320 &&
                    a[i].y + a[i].h <= 240 && area > 0.07 && area <= 1.0 && ratio > 0.73 &&
                    ratio < 1.36;
    }
    CHECK(same, "same seed gives the same boxes");
    CHECK(differ >= 18, "another seed gives other boxes (%d of 20 differ)", differ);
    CHECK(in_range, "boxes inside the image, area and ratio in range");
    CHECK(s1 == s2 && s1 != 42, "rng advanced");
    /* No box of ratio 2..3 covering the whole square fits: central fallback. */
    uint64_t s = 7;
    vlm_rect f = vlm_random_resized_crop_box(100, 100, 1.0f, 1.0f, 2.0f, 3.0f, &s);
    CHECK(f.x == 0 && f.y == 25 && f.w == 100 && f.h == 50, "fallback %d %d %d %d", f.x, f.y, f.w,
          f.h);
    f = vlm_random_resized_crop_box(100, 40, 1.0f, 1.0f, 0.5f, 1.0f, &s); /* too wide: w = h * 1 */
    CHECK(f.x == 30 && f.y == 0 && f.w == 40 && f.h == 40, "fallback wide %d %d %d %d", f.x, f.y,
          f.w, f.h);
}

static void test_normalize(void) {
    vlm_image im;
    vlm_image_alloc(&im, 2, 1);
    const uint8_t px[6] = {0, 128, 255, 51, 102, 204};
    memcpy(im.rgb, px, 6);
    float out[6];
    const float half[3] = {0.5f, 0.5f, 0.5f};
    CHECK(vlm_image_normalize(&im, half, half, out) == 0, "%s", vlm_last_error());
    /* CHW: out[c * 2 + x] */
    CHECK_NEAR(out[0], -1.0, 1e-6);
    CHECK_NEAR(out[1], 51 / 127.5 - 1, 1e-6);
    CHECK_NEAR(out[2], 128 / 127.5 - 1, 1e-6);
    CHECK_NEAR(out[4], 1.0, 1e-6);
    CHECK_NEAR(out[5], 204 / 127.5 - 1, 1e-6);
    const float mean[3] = {0.485f, 0.456f, 0.406f}, sd[3] = {0.229f, 0.224f, 0.225f};
    CHECK(vlm_image_normalize(&im, mean, sd, out) == 0, "%s", vlm_last_error());
    CHECK_NEAR(out[3], (102 / 255.0 - 0.456) / 0.224, 1e-5);
    const float zero[3] = {0.5f, 0.0f, 0.5f};
    CHECK(vlm_image_normalize(&im, half, zero, out) == -1 && has(vlm_last_error(), "std"), "std 0");
    vlm_image_free(&im);
}

static void test_pipeline(void) {
    enum { S = 16 };
    vlm_image im, ref;
    vlm_image_alloc(&im, 40, 30);
    for (int y = 0; y < 30; y++)
        for (int x = 0; x < 40; x++)
            for (int c = 0; c < 3; c++)
                im.rgb[(y * 40 + x) * 3 + c] = pattern_pixel(x * 3, y * 2, c);
    float got[3 * S * S], want[3 * S * S], other[3 * S * S];
    /* Default (SigLIP): bicubic squash, then (x/255 - 0.5)/0.5 */
    vlm_image_opts o = vlm_image_opts_default(S);
    CHECK(vlm_image_to_input(&im, &o, NULL, got) == 0, "%s", vlm_last_error());
    vlm_image_resize(&im, NULL, S, S, VLM_RESIZE_BICUBIC, &ref);
    vlm_image_normalize(&ref, o.mean, o.std, want);
    CHECK(!memcmp(got, want, sizeof got), "default pipeline = resize + normalize");
    float lo = 1e9f, hi = -1e9f;
    for (int i = 0; i < 3 * S * S; i++)
        lo = fminf(lo, got[i]), hi = fmaxf(hi, got[i]);
    CHECK(lo >= -1.0f && hi <= 1.0f, "SigLIP range [%g, %g]", (double)lo, (double)hi);
    vlm_image_free(&ref);
    /* Centre crop: shorter side to 16 (40x30 -> 21x16), centre 16x16 at x = round(2.5) = 2 */
    o.fit = VLM_FIT_CENTER_CROP;
    CHECK(vlm_image_to_input(&im, &o, NULL, got) == 0, "%s", vlm_last_error());
    vlm_image mid, crop;
    vlm_image_resize(&im, NULL, 21, 16, VLM_RESIZE_BICUBIC, &mid);
    vlm_image_crop(&mid, (vlm_rect){2, 0, 16, 16}, &crop);
    vlm_image_normalize(&crop, o.mean, o.std, want);
    CHECK(!memcmp(got, want, sizeof got), "center-crop pipeline");
    vlm_image_free(&mid);
    vlm_image_free(&crop);
    /* Augmentation is reproducible for a seed and differs between seeds. */
    o = vlm_image_opts_default(S);
    o.random_resized_crop = o.hflip = true;
    CHECK(vlm_image_to_input(&im, &o, NULL, got) == -1 && has(vlm_last_error(), "RNG"), "no rng");
    uint64_t r1 = 5, r2 = 5, r3 = 6;
    CHECK(vlm_image_to_input(&im, &o, &r1, got) == 0, "%s", vlm_last_error());
    CHECK(vlm_image_to_input(&im, &o, &r2, want) == 0, "%s", vlm_last_error());
    CHECK(vlm_image_to_input(&im, &o, &r3, other) == 0, "%s", vlm_last_error());
    CHECK(!memcmp(got, want, sizeof got) && r1 == r2, "same seed, same augmentation");
    CHECK(memcmp(got, other, sizeof got) != 0, "other seed, other augmentation");
    /* hflip alone gives exactly the eval output or its mirror, both seen. */
    o = vlm_image_opts_default(S);
    CHECK(vlm_image_to_input(&im, &o, NULL, want) == 0, "%s", vlm_last_error());
    o.hflip = true;
    int plain = 0, mirrored = 0;
    for (uint64_t seed = 0; seed < 32; seed++) {
        uint64_t r = seed;
        vlm_image_to_input(&im, &o, &r, got);
        int is_plain = !memcmp(got, want, sizeof got), is_mirror = 1;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++)
                    is_mirror &= got[(c * S + y) * S + x] == want[(c * S + y) * S + S - 1 - x];
        plain += is_plain, mirrored += is_mirror && !is_plain;
    }
    CHECK(plain + mirrored == 32 && plain >= 6 && mirrored >= 6, "flips: %d plain, %d mirrored",
          plain, mirrored);
    o.size = 0;
    CHECK(vlm_image_to_input(&im, &o, NULL, got) == -1 && has(vlm_last_error(), "size"), "size 0");
    vlm_image_free(&im);
}

static void cleanup(void) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

int main(void) {
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/vlm_test_image_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_png_bmp_channels();
    test_jpeg();
    test_png16();
    test_pnm();
    test_memory_decode();
    test_bad_files();
    test_resize_constant();
    test_resize_pil();
    test_resize_formula();
    test_antialias();
    test_resize_errors();
    test_flip_crop();
    test_random_resized_crop();
    test_normalize();
    test_pipeline();
    cleanup();
    return TEST_DONE();
}
