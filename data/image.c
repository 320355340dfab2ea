/* image.c - decoding (stb_image), PIL-exact resampling, crops, flips and
 * normalisation: everything between an image file and the CHW f32 tensor
 * the vision tower eats.
 *
 * Resampling follows Pillow's Resample.c (which HF's SiglipImageProcessor
 * calls through PIL): a separable two-pass filter, horizontal first, whose
 * support grows with the shrink factor (antialiasing), weights truncated at
 * the borders and renormalised. The u8 path reproduces Pillow's fixed-point
 * arithmetic (22-bit coefficients, 8-bit intermediate image), so our inputs
 * match the HF preprocessing exactly. */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Only the decoders we need (less attack surface, smaller binary); no stdio
 * (we read files ourselves, after the size check); static so no other
 * translation unit can clash with stb symbols. */
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_ONLY_BMP
#define STBI_ONLY_PNM
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_FAILURE_USERMSG /* "Corrupt PNG" rather than "bad IHDR len" */
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
/* stb_image_write 1.16's JPEG bit writer shifts a signed int past its top
 * bit (harmless on every target we build for, but undefined, so UBSan stops
 * the sanitizer build). Declaring the function first, without a prototype,
 * attaches the attribute to stb's definition. */
static void stbiw__jpg_writeBits() __attribute__((no_sanitize("shift")));
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#include <stb_image.h>
#include <stb_image_write.h>
#pragma GCC diagnostic pop
/* stb declares static prototypes of decoders compiled out above; GCC reports
 * them at the end of the file, where a push/pop no longer covers them. */
#pragma GCC diagnostic ignored "-Wunused-function"

#define DEFAULT_MAX_BYTES ((size_t)64 << 20)
#define DEFAULT_MAX_PIXELS ((int64_t)64 << 20)
/* Resize outputs beyond this are a caller bug, not an image. */
#define MAX_OUT_SIDE (1 << 16)

/* ---- allocation ------------------------------------------------------------ */

int vlm_image_alloc(vlm_image *img, int width, int height) {
    img->width = img->height = 0;
    img->rgb = NULL;
    if (width <= 0 || height <= 0 || (int64_t)width * height > ((int64_t)1 << 40) / 3)
        return vlm_set_error("image: bad size %dx%d", width, height);
    img->rgb = malloc((size_t)width * (size_t)height * 3);
    if (!img->rgb) return vlm_set_error("image: out of memory for %dx%d pixels", width, height);
    img->width = width;
    img->height = height;
    return 0;
}

void vlm_image_free(vlm_image *img) {
    if (!img) return;
    free(img->rgb);
    img->rgb = NULL;
    img->width = img->height = 0;
}

/* ---- limits ---------------------------------------------------------------- */

static size_t limit_bytes(const vlm_image_limits *lim) {
    return lim && lim->max_bytes ? lim->max_bytes : DEFAULT_MAX_BYTES;
}
static int64_t limit_pixels(const vlm_image_limits *lim) {
    return lim && lim->max_pixels > 0 ? lim->max_pixels : DEFAULT_MAX_PIXELS;
}

/* ---- headers: our own parse of the dimensions ---------------------------------
 * stbi_info tries every format in turn and, when the real one fails (say a
 * PNG claiming 100000x100000), reports only "unknown type". Reading the
 * dimensions here first gives a precise "over the limit" error and checks
 * the limit independently of stb's own checks. */

static uint32_t be16(const uint8_t *p) { return (uint32_t)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p) { return be16(p) << 16 | be16(p + 2); }
static uint32_t le32(const uint8_t *p) {
    return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

typedef struct {
    int64_t w, h;
    int channels, maxval; /* PNM only */
    size_t offset;        /* PNM only: first sample byte */
} header;

/* Binary PGM (P5) / PPM (P6): "P5 <w> <h> <maxval>" + one whitespace byte,
 * '#' comments allowed between the fields. */
static bool pnm_header(const uint8_t *p, size_t n, header *hd) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return false;
    size_t i = 2;
    int64_t v[3];
    for (int f = 0; f < 3; f++) {
        for (;;) { /* whitespace, then maybe a comment line */
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r')))
                i++;
            if (i >= n || p[i] != '#') break;
            while (i < n && p[i] != '\n' && p[i] != '\r')
                i++;
        }
        if (i >= n || p[i] < '0' || p[i] > '9') return false;
        for (v[f] = 0; i < n && p[i] >= '0' && p[i] <= '9'; i++)
            if ((v[f] = v[f] * 10 + (p[i] - '0')) > (int64_t)1 << 32) return false;
    }
    if (v[2] < 1 || v[2] > 65535 || i >= n) return false;
    *hd = (header){v[0], v[1], p[1] == '6' ? 3 : 1, (int)v[2], i + 1};
    return true;
}

static bool jpeg_header(const uint8_t *p, size_t n, header *hd) {
    size_t i = 2; /* after SOI; walk the marker segments to the first SOFn */
    while (i + 4 <= n) {
        if (p[i] != 0xFF) return false;
        uint8_t m = p[i + 1];
        if (m == 0xFF || m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
            i += m == 0xFF ? 1 : 2; /* fill byte, or a marker without a length */
            continue;
        }
        if (m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC) {
            if (i + 9 > n) return false;
            hd->h = be16(p + i + 5);
            hd->w = be16(p + i + 7);
            return true;
        }
        i += 2 + be16(p + i + 2);
    }
    return false;
}

static bool header_dims(const uint8_t *p, size_t n, header *hd) {
    memset(hd, 0, sizeof *hd);
    if (n >= 24 && !memcmp(p, "\x89PNG\r\n\x1a\n", 8) && !memcmp(p + 12, "IHDR", 4)) {
        hd->w = be32(p + 16);
        hd->h = be32(p + 20);
        return true;
    }
    if (n >= 26 && p[0] == 'B' && p[1] == 'M') {
        if (le32(p + 14) == 12) { /* OS/2 header: 16-bit sizes */
            hd->w = p[18] | p[19] << 8;
            hd->h = p[20] | p[21] << 8;
        } else { /* signed 32-bit; a negative height means top-down rows */
            hd->w = (int32_t)le32(p + 18);
            hd->h = (int32_t)le32(p + 22);
            if (hd->h < 0) hd->h = -hd->h;
        }
        return true;
    }
    if (n >= 4 && p[0] == 0xFF && p[1] == 0xD8) return jpeg_header(p, n, hd);
    return pnm_header(p, n, hd);
}

/* ---- decoding ------------------------------------------------------------------ */

/* Samples in 0..maxval -> 0..255, rounded (16-bit: v * 255 / 65535). */
static uint8_t scale_sample(unsigned v, unsigned maxval) {
    if (v > maxval) v = maxval;
    return (uint8_t)((v * 255u + maxval / 2) / maxval);
}

/* 16-bit PGM/PPM (maxval > 255), decoded here: stb 2.27 mangles them (it
 * reads the big-endian samples with its 8-bit converter). */
static int decode_pnm16(const uint8_t *p, size_t n, const header *hd, const char *name,
                        vlm_image *out) {
    size_t samples = (size_t)hd->w * hd->h * hd->channels;
    if (hd->w <= 0 || hd->h <= 0 || n - hd->offset < samples * 2)
        return vlm_set_error("image '%s': cannot decode (truncated 16-bit PGM/PPM)", name);
    if (vlm_image_alloc(out, (int)hd->w, (int)hd->h)) return -1;
    const uint8_t *s = p + hd->offset;
    for (size_t i = 0; i < (size_t)hd->w * hd->h; i++)
        for (int c = 0; c < 3; c++) {
            const uint8_t *v = s + 2 * (i * hd->channels + (hd->channels == 3 ? c : 0));
            out->rgb[3 * i + c] = scale_sample(be16(v), (unsigned)hd->maxval);
        }
    return 0;
}

/* Decodes after the limits have passed; stb converts any channel count to 3. */
static int decode_rgb(const uint8_t *p, int len, const char *name, vlm_image *out) {
    header pnm;
    bool is_pnm = pnm_header(p, (size_t)len, &pnm);
    if (is_pnm && pnm.maxval > 255) return decode_pnm16(p, (size_t)len, &pnm, name, out);
    int w, h, comp, is16 = stbi_is_16_bit_from_memory(p, len);
    void *pix = is16 ? (void *)stbi_load_16_from_memory(p, len, &w, &h, &comp, 3)
                     : (void *)stbi_load_from_memory(p, len, &w, &h, &comp, 3);
    if (!pix) return vlm_set_error("image '%s': cannot decode (%s)", name, stbi_failure_reason());
    if (vlm_image_alloc(out, w, h)) {
        stbi_image_free(pix);
        return vlm_set_error("image '%s': out of memory for %dx%d pixels", name, w, h);
    }
    size_t n = (size_t)w * h * 3;
    if (is16) /* 16-bit PNG: rounded, where stb's own conversion truncates */
        for (size_t i = 0; i < n; i++)
            out->rgb[i] = scale_sample(((uint16_t *)pix)[i], 65535u);
    else if (is_pnm && pnm.maxval < 255) /* stb leaves samples in 0..maxval */
        for (size_t i = 0; i < n; i++)
            out->rgb[i] = scale_sample(((uint8_t *)pix)[i], (unsigned)pnm.maxval);
    else
        memcpy(out->rgb, pix, n);
    stbi_image_free(pix);
    return 0;
}

int vlm_image_probe(const void *data, size_t size, const char *name, const vlm_image_limits *lim,
                    int *width, int *height) {
    if (!name) name = "image";
    if (!data || size == 0) return vlm_set_error("image '%s': empty", name);
    size_t max_bytes = limit_bytes(lim);
    int64_t max_px = limit_pixels(lim);
    if (size > max_bytes || size > INT_MAX)
        return vlm_set_error("image '%s': %zu bytes is over the limit of %zu", name, size,
                             max_bytes < INT_MAX ? max_bytes : (size_t)INT_MAX);
    header hd;
    if (header_dims(data, size, &hd) && hd.w * hd.h > max_px)
        return vlm_set_error("image '%s': %lldx%lld pixels is over the limit of %lld", name,
                             (long long)hd.w, (long long)hd.h, (long long)max_px);
    int w, h, comp;
    if (!stbi_info_from_memory(data, (int)size, &w, &h, &comp))
        return vlm_set_error("image '%s': unreadable header (%s; JPEG, PNG, BMP and binary "
                             "PGM/PPM are supported)",
                             name, stbi_failure_reason());
    if (w <= 0 || h <= 0 || (int64_t)w * h > max_px)
        return vlm_set_error("image '%s': %dx%d pixels is over the limit of %lld", name, w, h,
                             (long long)max_px);
    if (width) *width = w;
    if (height) *height = h;
    return 0;
}

int vlm_image_decode(const void *data, size_t size, const char *name, const vlm_image_limits *lim,
                     vlm_image *out) {
    out->width = out->height = 0;
    out->rgb = NULL;
    if (vlm_image_probe(data, size, name, lim, NULL, NULL)) return -1;
    return decode_rgb(data, (int)size, name ? name : "image", out);
}

/* Reads a whole regular file after checking its size against the limit. */
static int read_file(const char *path, size_t max_bytes, uint8_t **data, size_t *size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return vlm_set_error("image '%s': cannot open (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
        close(fd);
        return vlm_set_error("image '%s': not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return vlm_set_error("image '%s': empty file", path);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return vlm_set_error("image '%s': file of %lld bytes is over the limit of %zu", path,
                             (long long)st.st_size, max_bytes);
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *buf = malloc(n);
    if (!buf) {
        close(fd);
        return vlm_set_error("image '%s': out of memory for %zu bytes", path, n);
    }
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = r < 0 ? errno : 0;
            free(buf);
            close(fd);
            return vlm_set_error("image '%s': read failed (%s)", path,
                                 e ? strerror(e) : "file shrank");
        }
        got += (size_t)r;
    }
    close(fd);
    *data = buf;
    *size = n;
    return 0;
}

int vlm_image_load(const char *path, const vlm_image_limits *lim, vlm_image *out) {
    out->width = out->height = 0;
    out->rgb = NULL;
    if (!path) return vlm_set_error("image: NULL path");
    uint8_t *buf = NULL;
    size_t n = 0;
    if (read_file(path, limit_bytes(lim), &buf, &n)) return -1;
    int rc = vlm_image_decode(buf, n, path, lim, out);
    free(buf);
    return rc;
}

/* ---- encoding -------------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} membuf;

static void membuf_write(void *ctx, void *data, int size) {
    membuf *m = ctx;
    if (m->oom || size <= 0) return;
    if (m->n + (size_t)size > m->cap) {
        size_t cap = m->cap ? m->cap : 4096;
        while (cap < m->n + (size_t)size)
            cap *= 2;
        uint8_t *p = realloc(m->p, cap);
        if (!p) {
            m->oom = 1;
            return;
        }
        m->p = p;
        m->cap = cap;
    }
    memcpy(m->p + m->n, data, (size_t)size);
    m->n += (size_t)size;
}

int vlm_image_encode_jpeg(const vlm_image *img, int quality, uint8_t **data, size_t *size) {
    *data = NULL;
    *size = 0;
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return vlm_set_error("image: encode_jpeg of an empty image");
    if (quality < 1 || quality > 100)
        return vlm_set_error("image: JPEG quality %d is not in 1..100", quality);
    if (img->width > 65535 || img->height > 65535)
        return vlm_set_error("image: %dx%d is too large for JPEG (65535 max)", img->width,
                             img->height);
    membuf m = {0};
    int ok =
        stbi_write_jpg_to_func(membuf_write, &m, img->width, img->height, 3, img->rgb, quality);
    if (!ok || m.oom || m.n == 0) {
        free(m.p);
        return vlm_set_error("image: JPEG encoding failed (%s)", m.oom ? "out of memory" : "stb");
    }
    *data = m.p;
    *size = m.n;
    return 0;
}

/* ---- resampling coefficients (Pillow's precompute_coeffs) ----------------- */

static double filter_support(vlm_resize_filter f) { return f == VLM_RESIZE_BICUBIC ? 2.0 : 1.0; }

static double filter_eval(vlm_resize_filter f, double x) {
    x = fabs(x);
    if (f == VLM_RESIZE_BILINEAR) return x < 1.0 ? 1.0 - x : 0.0;
    const double a = -0.5; /* Keys; PIL and HF use -0.5 (torch tensors use -0.75) */
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* For each output sample: the first input index, how many inputs, and their
 * normalised weights (ksize slots, unused ones zero). */
typedef struct {
    int ksize;
    int *bounds; /* [out][2] = first, count */
    double *k;   /* [out][ksize] */
} coeffs;

static void coeffs_free(coeffs *c) {
    free(c->bounds);
    free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

static int coeffs_init(coeffs *c, int in_size, int out_size, vlm_resize_filter f) {
    double scale = (double)in_size / out_size;
    double fscale = scale < 1.0 ? 1.0 : scale; /* stretch the filter only when shrinking */
    double support = filter_support(f) * fscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = malloc((size_t)out_size * 2 * sizeof(int));
    c->k = calloc((size_t)out_size * (size_t)c->ksize, sizeof(double));
    if (!c->bounds || !c->k) {
        coeffs_free(c);
        return vlm_set_error("image resize: out of memory for coefficients");
    }
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / fscale;
        int xmin = (int)(center - support + 0.5), xmax = (int)(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double *k = c->k + (size_t)xx * c->ksize;
        for (int x = 0; x < xmax; x++) {
            k[x] = filter_eval(f, (x + xmin - center + 0.5) * ss);
            ww += k[x];
        }
        if (ww != 0.0)
            for (int x = 0; x < xmax; x++)
                k[x] /= ww;
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    return 0;
}

/* ---- the u8 path: Pillow's 8bpc fixed point -------------------------------- */

#define PRECISION_BITS (32 - 8 - 2)

static int32_t *coeffs_fixed(const coeffs *c, int out_size) {
    size_t n = (size_t)out_size * c->ksize;
    int32_t *kk = malloc(n * sizeof(int32_t));
    if (!kk) {
        vlm_set_error("image resize: out of memory for coefficients");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        double v = c->k[i] * (1 << PRECISION_BITS);
        kk[i] = (int32_t)(v < 0 ? v - 0.5 : v + 0.5);
    }
    return kk;
}

static inline uint8_t clip8(int32_t ss) {
    if (ss < 0) return 0;
    if (ss >= (256 << PRECISION_BITS)) return 255;
    return (uint8_t)(ss >> PRECISION_BITS);
}

/* One row of `out_w` RGB pixels from an input row. */
static void hpass_u8(const uint8_t *in, const coeffs *c, const int32_t *kk, int out_w,
                     uint8_t *out) {
    for (int xx = 0; xx < out_w; xx++) {
        const int32_t *k = kk + (size_t)xx * c->ksize;
        const uint8_t *p = in + (size_t)c->bounds[2 * xx] * 3;
        int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
        for (int x = 0; x < c->bounds[2 * xx + 1]; x++, p += 3) {
            s0 += p[0] * k[x];
            s1 += p[1] * k[x];
            s2 += p[2] * k[x];
        }
        out[3 * xx] = clip8(s0);
        out[3 * xx + 1] = clip8(s1);
        out[3 * xx + 2] = clip8(s2);
    }
}

/* Output row from `count` input rows starting at `first`; acc is scratch of n. */
static void vpass_u8(const uint8_t *in, size_t stride, int first, int count, const int32_t *k,
                     size_t n, int32_t *acc, uint8_t *out) {
    for (size_t i = 0; i < n; i++)
        acc[i] = 1 << (PRECISION_BITS - 1);
    for (int y = 0; y < count; y++) {
        const uint8_t *row = in + (size_t)(first + y) * stride;
        int32_t ky = k[y];
        for (size_t i = 0; i < n; i++)
            acc[i] += row[i] * ky;
    }
    for (size_t i = 0; i < n; i++)
        out[i] = clip8(acc[i]);
}

static int check_box(const char *what, const vlm_image *src, vlm_rect b) {
    if (!src || !src->rgb || src->width <= 0 || src->height <= 0)
        return vlm_set_error("image %s: empty source image", what);
    if (b.x < 0 || b.y < 0 || b.w <= 0 || b.h <= 0 || (int64_t)b.x + b.w > src->width ||
        (int64_t)b.y + b.h > src->height)
        return vlm_set_error("image %s: box %dx%d at (%d, %d) is not inside the %dx%d image", what,
                             b.w, b.h, b.x, b.y, src->width, src->height);
    return 0;
}

static int check_resize_args(const vlm_image *src, const vlm_rect *box, int out_w, int out_h,
                             vlm_rect *b) {
    if (!src || !src->rgb) return vlm_set_error("image resize: empty source image");
    if (out_w <= 0 || out_h <= 0 || out_w > MAX_OUT_SIDE || out_h > MAX_OUT_SIDE)
        return vlm_set_error("image resize: bad output size %dx%d", out_w, out_h);
    *b = box ? *box : (vlm_rect){0, 0, src->width, src->height};
    return check_box("resize", src, *b);
}

/* Vertical pass over the (horizontally resampled) rows `mid`, whose row 0 is
 * source row cv->bounds[0]. */
static int vertical_u8(const uint8_t *mid, size_t stride, const coeffs *cv, int out_w, int out_h,
                       uint8_t *dst) {
    size_t n = (size_t)out_w * 3;
    int32_t *kk = coeffs_fixed(cv, out_h), *acc = malloc(n * sizeof(int32_t));
    if (!kk || !acc) {
        free(kk);
        free(acc);
        return vlm_set_error("image resize: out of memory");
    }
    int y0 = cv->bounds[0];
    for (int yy = 0; yy < out_h; yy++)
        vpass_u8(mid, stride, cv->bounds[2 * yy] - y0, cv->bounds[2 * yy + 1],
                 kk + (size_t)yy * cv->ksize, n, acc, dst + (size_t)yy * n);
    free(kk);
    free(acc);
    return 0;
}

/* Horizontal pass over source rows [y0, y1) of box b into a new buffer. */
static uint8_t *horizontal_u8(const vlm_image *src, vlm_rect b, int y0, int y1, int out_w,
                              vlm_resize_filter f) {
    coeffs ch;
    if (coeffs_init(&ch, b.w, out_w, f)) return NULL;
    int32_t *kk = coeffs_fixed(&ch, out_w);
    uint8_t *tmp = malloc((size_t)(y1 - y0) * out_w * 3);
    if (!kk || !tmp) {
        vlm_set_error("image resize: out of memory");
        free(tmp);
        tmp = NULL;
    } else {
        for (int y = y0; y < y1; y++)
            hpass_u8(src->rgb + ((size_t)(b.y + y) * src->width + b.x) * 3, &ch, kk, out_w,
                     tmp + (size_t)(y - y0) * out_w * 3);
    }
    free(kk);
    coeffs_free(&ch);
    return tmp;
}

static int resize_u8(const vlm_image *src, vlm_rect b, int out_w, int out_h, vlm_resize_filter f,
                     uint8_t *dst) {
    coeffs cv;
    if (coeffs_init(&cv, b.h, out_h, f)) return -1;
    /* Like Pillow: only the source rows the vertical pass reads get the
     * horizontal pass, and a pass whose size does not change is skipped. */
    int y0 = cv.bounds[0], y1 = cv.bounds[2 * (out_h - 1)] + cv.bounds[2 * (out_h - 1) + 1];
    const uint8_t *mid = src->rgb + ((size_t)(b.y + y0) * src->width + b.x) * 3;
    size_t stride = (size_t)src->width * 3;
    uint8_t *tmp = NULL;
    if (out_w != b.w) {
        if (!(tmp = horizontal_u8(src, b, y0, y1, out_w, f))) {
            coeffs_free(&cv);
            return -1;
        }
        mid = tmp;
        stride = (size_t)out_w * 3;
    }
    int rc = 0;
    if (out_h != b.h)
        rc = vertical_u8(mid, stride, &cv, out_w, out_h, dst);
    else
        for (int y = 0; y < out_h; y++)
            memcpy(dst + (size_t)y * out_w * 3, mid + (size_t)y * stride, (size_t)out_w * 3);
    free(tmp);
    coeffs_free(&cv);
    return rc;
}

int vlm_image_resize(const vlm_image *src, const vlm_rect *box, int out_w, int out_h,
                     vlm_resize_filter filter, vlm_image *dst) {
    vlm_rect b;
    dst->rgb = NULL;
    dst->width = dst->height = 0;
    if (check_resize_args(src, box, out_w, out_h, &b) || vlm_image_alloc(dst, out_w, out_h))
        return -1;
    if (resize_u8(src, b, out_w, out_h, filter, dst->rgb)) {
        vlm_image_free(dst);
        return -1;
    }
    return 0;
}

/* ---- the f32 path: the u8 path without its roundings ---------------------- */

static int resize_f32(const vlm_image *src, vlm_rect b, int out_w, int out_h, vlm_resize_filter f,
                      float *dst) {
    coeffs ch = {0}, cv = {0};
    if (coeffs_init(&ch, b.w, out_w, f) || coeffs_init(&cv, b.h, out_h, f)) {
        coeffs_free(&ch);
        return -1;
    }
    int y0 = cv.bounds[0], y1 = cv.bounds[2 * (out_h - 1)] + cv.bounds[2 * (out_h - 1) + 1];
    size_t n = (size_t)out_w * 3;
    float *mid = malloc((size_t)(y1 - y0) * n * sizeof(float));
    if (!mid) {
        coeffs_free(&ch);
        coeffs_free(&cv);
        return vlm_set_error("image resize: out of memory");
    }
    for (int y = y0; y < y1; y++) {
        const uint8_t *row = src->rgb + ((size_t)(b.y + y) * src->width + b.x) * 3;
        float *o = mid + (size_t)(y - y0) * n;
        for (int xx = 0; xx < out_w; xx++) {
            const double *k = ch.k + (size_t)xx * ch.ksize;
            const uint8_t *p = row + (size_t)ch.bounds[2 * xx] * 3;
            double s0 = 0, s1 = 0, s2 = 0;
            for (int x = 0; x < ch.bounds[2 * xx + 1]; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            /* clamped like Pillow's 8-bit intermediate, but not rounded */
            o[3 * xx] = (float)(s0 < 0 ? 0 : s0 > 255 ? 255 : s0);
            o[3 * xx + 1] = (float)(s1 < 0 ? 0 : s1 > 255 ? 255 : s1);
            o[3 * xx + 2] = (float)(s2 < 0 ? 0 : s2 > 255 ? 255 : s2);
        }
    }
    for (int yy = 0; yy < out_h; yy++) {
        float *o = dst + (size_t)yy * n;
        const double *k = cv.k + (size_t)yy * cv.ksize;
        for (size_t i = 0; i < n; i++)
            o[i] = 0.0f;
        for (int y = 0; y < cv.bounds[2 * yy + 1]; y++) {
            const float *row = mid + (size_t)(cv.bounds[2 * yy] - y0 + y) * n;
            float ky = (float)k[y];
            for (size_t i = 0; i < n; i++)
                o[i] += row[i] * ky;
        }
        for (size_t i = 0; i < n; i++)
            o[i] = o[i] < 0.0f ? 0.0f : o[i] > 255.0f ? 255.0f : o[i];
    }
    free(mid);
    coeffs_free(&ch);
    coeffs_free(&cv);
    return 0;
}

int vlm_image_resize_f32(const vlm_image *src, const vlm_rect *box, int out_w, int out_h,
                         vlm_resize_filter filter, float *dst) {
    vlm_rect b;
    if (!dst) return vlm_set_error("image resize: NULL output buffer");
    if (check_resize_args(src, box, out_w, out_h, &b)) return -1;
    return resize_f32(src, b, out_w, out_h, filter, dst);
}

/* ---- crops, flips, normalisation ------------------------------------------ */

int vlm_image_crop(const vlm_image *src, vlm_rect b, vlm_image *dst) {
    dst->rgb = NULL;
    dst->width = dst->height = 0;
    if (check_box("crop", src, b) || vlm_image_alloc(dst, b.w, b.h)) return -1;
    for (int y = 0; y < b.h; y++)
        memcpy(dst->rgb + (size_t)y * b.w * 3,
               src->rgb + ((size_t)(b.y + y) * src->width + b.x) * 3, (size_t)b.w * 3);
    return 0;
}

void vlm_image_hflip(vlm_image *img) {
    if (!img || !img->rgb) return;
    for (int y = 0; y < img->height; y++) {
        uint8_t *row = img->rgb + (size_t)y * img->width * 3;
        for (int l = 0, r = img->width - 1; l < r; l++, r--)
            for (int c = 0; c < 3; c++) {
                uint8_t t = row[3 * l + c];
                row[3 * l + c] = row[3 * r + c];
                row[3 * r + c] = t;
            }
    }
}

static int check_mean_std(const float mean[3], const float std[3]) {
    for (int c = 0; c < 3; c++)
        if (!(std[c] > 0.0f) || !isfinite(std[c]) || !isfinite(mean[c]))
            return vlm_set_error(
                "image normalize: channel %d has mean %g, std %g (std must be > 0)", c,
                (double)mean[c], (double)std[c]);
    return 0;
}

/* Normalises into CHW, reading columns right-to-left when flip is set (a
 * mirrored copy would cost one more pass over the pixels). */
static void normalize(const vlm_image *img, const float mean[3], const float std[3], bool flip,
                      float *chw) {
    size_t plane = (size_t)img->width * img->height;
    for (int c = 0; c < 3; c++) {
        float a = 1.0f / (255.0f * std[c]), b = -mean[c] / std[c];
        float *o = chw + c * plane;
        for (int y = 0; y < img->height; y++) {
            const uint8_t *row = img->rgb + (size_t)y * img->width * 3 + c;
            for (int x = 0; x < img->width; x++) {
                int sx = flip ? img->width - 1 - x : x;
                *o++ = row[3 * sx] * a + b;
            }
        }
    }
}

int vlm_image_normalize(const vlm_image *img, const float mean[3], const float std[3], float *chw) {
    if (!img || !img->rgb || !chw) return vlm_set_error("image normalize: NULL image or output");
    if (check_mean_std(mean, std)) return -1;
    normalize(img, mean, std, false, chw);
    return 0;
}

/* ---- randomness: splitmix64, the same stream as autograd's ---------------- */

static uint64_t rng_next(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi) with 53 random bits. */
static double rng_uniform(uint64_t *state, double lo, double hi) {
    return lo + (hi - lo) * ((double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0));
}

/* Uniform integer in [0, n), n >= 1. */
static int rng_below(uint64_t *state, int n) { return (int)(rng_next(state) % (uint64_t)n); }

/* ---- crop boxes ------------------------------------------------------------ */

vlm_rect vlm_center_crop_box(int w, int h, int crop_w, int crop_h) {
    if (crop_w > w) crop_w = w;
    if (crop_h > h) crop_h = h;
    /* torchvision: int(round((h - crop_h) / 2.0)), round half to even */
    return (vlm_rect){(int)nearbyint((w - crop_w) / 2.0), (int)nearbyint((h - crop_h) / 2.0),
                      crop_w, crop_h};
}

vlm_rect vlm_random_resized_crop_box(int w, int h, float scale_min, float scale_max,
                                     float ratio_min, float ratio_max, uint64_t *rng) {
    if (w <= 0 || h <= 0) return (vlm_rect){0, 0, 0, 0};
    if (!rng || !(ratio_min > 0 && ratio_min <= ratio_max && scale_min <= scale_max))
        return (vlm_rect){0, 0, w, h}; /* nothing sensible to draw from */
    double area = (double)w * h, lr0 = log(ratio_min), lr1 = log(ratio_max);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target = area * rng_uniform(rng, scale_min, scale_max);
        double ar = exp(rng_uniform(rng, lr0, lr1));
        /* Python's round() is half-to-even, as is nearbyint in the default mode. */
        int cw = (int)nearbyint(sqrt(target * ar)), ch = (int)nearbyint(sqrt(target / ar));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            int y = rng_below(rng, h - ch + 1), x = rng_below(rng, w - cw + 1);
            return (vlm_rect){x, y, cw, ch};
        }
    }
    /* Fallback: the central crop with the closest allowed aspect ratio. */
    double in_ratio = (double)w / h;
    int cw = w, ch = h;
    if (in_ratio < ratio_min)
        ch = (int)nearbyint(w / (double)ratio_min);
    else if (in_ratio > ratio_max)
        cw = (int)nearbyint(h * (double)ratio_max);
    if (cw < 1) cw = 1;
    if (ch < 1) ch = 1;
    return (vlm_rect){(w - cw) / 2, (h - ch) / 2, cw, ch};
}

/* ---- the preprocessing pipeline -------------------------------------------- */

vlm_image_opts vlm_image_opts_default(int size) {
    return (vlm_image_opts){
        .size = size,
        .filter = VLM_RESIZE_BICUBIC,
        .fit = VLM_FIT_SQUASH,
        .scale_min = 0.08f,
        .scale_max = 1.0f,
        .ratio_min = 3.0f / 4.0f,
        .ratio_max = 4.0f / 3.0f,
        .mean = {0.5f, 0.5f, 0.5f},
        .std = {0.5f, 0.5f, 0.5f},
    };
}

static int check_opts(const vlm_image_opts *o, const uint64_t *rng) {
    if (o->size <= 0 || o->size > MAX_OUT_SIDE)
        return vlm_set_error("image opts: size %d is not in 1..%d", o->size, MAX_OUT_SIDE);
    if (o->filter != VLM_RESIZE_BILINEAR && o->filter != VLM_RESIZE_BICUBIC)
        return vlm_set_error("image opts: unknown resize filter %d", (int)o->filter);
    if (o->fit != VLM_FIT_SQUASH && o->fit != VLM_FIT_CENTER_CROP)
        return vlm_set_error("image opts: unknown fit %d", (int)o->fit);
    if (o->random_resized_crop &&
        !(o->scale_min > 0 && o->scale_min <= o->scale_max && o->scale_max <= 1 &&
          o->ratio_min > 0 && o->ratio_min <= o->ratio_max && isfinite(o->ratio_max)))
        return vlm_set_error("image opts: random crop needs 0 < scale_min <= scale_max <= 1 and "
                             "0 < ratio_min <= ratio_max (got scale %g..%g, ratio %g..%g)",
                             (double)o->scale_min, (double)o->scale_max, (double)o->ratio_min,
                             (double)o->ratio_max);
    if ((o->random_resized_crop || o->hflip) && !rng)
        return vlm_set_error("image opts: augmentation is on but no RNG state was given");
    return check_mean_std(o->mean, o->std);
}

/* Resizes to size x size following the options (geometry only). */
static int fit_to_size(const vlm_image *img, const vlm_image_opts *o, uint64_t *rng,
                       vlm_image *out) {
    int s = o->size;
    if (o->random_resized_crop) {
        vlm_rect b = vlm_random_resized_crop_box(img->width, img->height, o->scale_min,
                                                 o->scale_max, o->ratio_min, o->ratio_max, rng);
        return vlm_image_resize(img, &b, s, s, o->filter, out);
    }
    if (o->fit == VLM_FIT_SQUASH) return vlm_image_resize(img, NULL, s, s, o->filter, out);
    /* torchvision Resize(s): shorter side to s, the longer one int(s * long / short). */
    int w = img->width, h = img->height;
    int64_t nw = w <= h ? s : (int64_t)s * w / h, nh = w <= h ? (int64_t)s * h / w : s;
    if (nw > MAX_OUT_SIDE || nh > MAX_OUT_SIDE)
        return vlm_set_error("image: %dx%d is too elongated to resize to %d", w, h, s);
    vlm_image tmp;
    if (vlm_image_resize(img, NULL, (int)nw, (int)nh, o->filter, &tmp)) return -1;
    int rc = vlm_image_crop(&tmp, vlm_center_crop_box(tmp.width, tmp.height, s, s), out);
    vlm_image_free(&tmp);
    return rc;
}

int vlm_image_to_input(const vlm_image *img, const vlm_image_opts *opts, uint64_t *rng,
                       float *out) {
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 || !opts || !out)
        return vlm_set_error("image to_input: NULL or empty argument");
    if (check_opts(opts, rng)) return -1;
    vlm_image sized;
    if (fit_to_size(img, opts, rng, &sized)) return -1;
    bool flip = opts->hflip && (rng_next(rng) >> 63);
    normalize(&sized, opts->mean, opts->std, flip, out);
    vlm_image_free(&sized);
    return 0;
}
