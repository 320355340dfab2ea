/* cli.c - helpers shared by the inference subcommands (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

bool cli_is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

int cli_take(cli_args *a, const char *name, const char *alias, const char **val) {
    const char *s = a->argv[a->i];
    size_t n = strlen(name);
    if (!strncmp(s, name, n) && s[n] == '=') return *val = s + n + 1, 1;
    if (strcmp(s, name) && (!alias || strcmp(s, alias))) return 0;
    if (a->i + 1 >= a->argc) {
        fprintf(stderr, "error: %s: %s needs a value\n", a->cmd, name);
        return -1;
    }
    *val = a->argv[++a->i];
    return 1;
}

int cli_bad_usage(const cli_args *a, const char *what, const char *arg) {
    fprintf(stderr, "error: %s: %s%s%s%s\n", a->cmd, what, arg ? " '" : "", arg ? arg : "",
            arg ? "'" : "");
    a->usage(stderr);
    return 2;
}

int cli_fail(void) {
    fprintf(stderr, "error: %s\n", vlm_last_error());
    return 1;
}

bool cli_parse_int(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

bool cli_parse_u64(const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end) return false;
    *out = v;
    return true;
}

bool cli_parse_float(const char *s, double *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return false;
    *out = v;
    return true;
}

int cli_take_model_opt(cli_args *a, cli_model_opts *m) {
    const char *v = NULL;
    long n;
    int r;
    if ((r = cli_take(a, "--model", "-m", &m->model)) ||
        (r = cli_take(a, "--config", NULL, &m->config)) ||
        (r = cli_take(a, "--tokenizer", NULL, &m->tokenizer)) ||
        (r = cli_take(a, "--decoder-tokenizer", NULL, &m->decoder_tokenizer)))
        return r < 0 ? 2 : 1;
    if ((r = cli_take(a, "--threads", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 1, 4096, &n)) return cli_bad_usage(a, "--threads must be 1..4096, got", v);
        m->threads = (int)n;
        return 1;
    }
    if ((r = cli_take(a, "--batch-size", NULL, &v))) {
        if (r < 0) return 2;
        if (!cli_parse_int(v, 1, 1 << 20, &n)) return cli_bad_usage(a, "--batch-size must be >= 1, got", v);
        m->batch = (int)n;
        return 1;
    }
    return 0;
}

vlm_bundle *cli_load_bundle(const cli_args *a, const cli_model_opts *m) {
    if (!m->model) {
        cli_bad_usage(a, "--model is required", NULL);
        return NULL;
    }
    if (m->threads) vlm_set_num_threads(m->threads);
    vlm_bundle_opts o = {m->config, m->tokenizer, m->decoder_tokenizer};
    vlm_bundle *b = vlm_bundle_load(m->model, &o);
    if (!b) cli_fail();
    return b;
}

float *cli_load_images(const vlm_bundle *b, char *const *paths, int64_t n) {
    int64_t px = 3 * (int64_t)b->image.size * b->image.size;
    float *pixels = malloc((size_t)((n ? n : 1) * px) * sizeof *pixels);
    if (!pixels) {
        vlm_set_error("out of memory for %lld images", (long long)n);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++)
        if (vlm_bundle_load_image(b, paths[i], pixels + i * px)) {
            free(pixels);
            return NULL;
        }
    return pixels;
}

int cli_dataset_pixels(const vlm_bundle *b, vlm_dataset *ds, int64_t first, int64_t n, float *out) {
    int64_t px = 3 * (int64_t)b->image.size * b->image.size;
    for (int64_t i = 0; i < n; i++) {
        vlm_image img;
        if (vlm_dataset_read_image(ds, first + i, &img)) return -1;
        int rc = vlm_image_to_input(&img, &b->image, NULL, out + i * px);
        vlm_image_free(&img);
        if (rc) return vlm_set_error("dataset image %lld: %s", (long long)(first + i), vlm_last_error());
    }
    return 0;
}

void cli_free_strings(char **s, int64_t n) {
    for (int64_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}

/* Appends a copy of p[0..len) to *list (grown by doubling). */
static int push(char ***list, int *n, int *cap, const char *p, size_t len) {
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 16;
        char **l = realloc(*list, (size_t)c * sizeof *l);
        if (!l) return -1;
        *list = l, *cap = c;
    }
    char *s = malloc(len + 1);
    if (!s) return -1;
    memcpy(s, p, len);
    s[len] = 0;
    (*list)[(*n)++] = s;
    return 0;
}

char **cli_read_lines(const char *path, int *n) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vlm_set_error("%s: %s", path, strerror(errno));
        return NULL;
    }
    char **list = NULL, line[4096];
    int cap = 0, rc = 0;
    *n = 0;
    while (!rc && fgets(line, sizeof line, f)) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n')
            rc = vlm_set_error("%s: line %d is longer than %zu bytes", path, *n + 1, sizeof line - 2);
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) len--;
        if (!rc && len && push(&list, n, &cap, line, len)) rc = vlm_set_error("%s: out of memory", path);
    }
    if (!rc && ferror(f)) rc = vlm_set_error("%s: read error", path);
    fclose(f);
    if (!rc && !*n) rc = vlm_set_error("%s: no non-empty line", path);
    if (rc) {
        cli_free_strings(list, *n);
        return NULL;
    }
    return list;
}

char **cli_split_list(const char *list, char sep, int *n) {
    char **out = NULL;
    int cap = 0;
    *n = 0;
    for (const char *p = list;; p++) {
        const char *comma = strchr(p, sep);
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        /* trim spaces around each piece: "a, b" means "a" and "b" */
        while (len && *p == ' ') p++, len--;
        while (len && p[len - 1] == ' ') len--;
        if (!len) {
            cli_free_strings(out, *n);
            vlm_set_error("list \"%s\": item %d is empty", list, *n + 1);
            return NULL;
        }
        if (push(&out, n, &cap, p, len)) {
            cli_free_strings(out, *n);
            vlm_set_error("out of memory");
            return NULL;
        }
        if (!comma) return out;
        p = comma;
    }
}

double cli_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- datasets ----------------------------------------------------------------------------- */

int cli_embed_dataset_images(vlm_ctx *ctx, const vlm_bundle *b, vlm_dataset *ds, int64_t n,
                             int batch, float *out) {
    if (batch <= 0) batch = 32;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size, D = vlm_bundle_embed_dim(b);
    float *pixels = malloc((size_t)(batch * px) * sizeof *pixels);
    if (!pixels) return vlm_set_error("out of memory for a batch of %d images", batch);
    int rc = 0;
    for (int64_t i = 0; rc == 0 && i < n; i += batch) {
        int64_t m = n - i < batch ? n - i : batch;
        rc = cli_dataset_pixels(b, ds, i, m, pixels);
        if (!rc) rc = vlm_bundle_embed_images(ctx, b, pixels, m, batch, out + i * D);
    }
    free(pixels);
    return rc;
}

typedef struct {
    const char *s;
    int64_t j;
} text_ref;

static int by_text(const void *a, const void *b) {
    const text_ref *x = a, *y = b;
    int d = strcmp(x->s, y->s);
    return d ? d : (x->j > y->j) - (x->j < y->j);
}

/* unique / unique_of from text: sort by text, number the runs, and list the
 * distinct texts in order of first appearance. */
static int dedupe(cli_captions *c) {
    text_ref *r = malloc((size_t)(c->n ? c->n : 1) * sizeof *r);
    c->unique_of = malloc((size_t)(c->n ? c->n : 1) * sizeof *c->unique_of);
    c->unique = malloc((size_t)(c->n ? c->n : 1) * sizeof *c->unique);
    if (!r || !c->unique_of || !c->unique) return free(r), vlm_set_error("out of memory");
    for (int64_t j = 0; j < c->n; j++) r[j] = (text_ref){c->text[j], j};
    qsort(r, (size_t)c->n, sizeof *r, by_text);
    for (int64_t k = 0, first = 0; k < c->n; k++) {
        if (k && strcmp(r[k].s, r[k - 1].s)) first = k;
        c->unique_of[r[k].j] = r[first].j; /* the first caption with this text */
    }
    free(r);
    c->n_unique = 0;
    for (int64_t j = 0; j < c->n; j++) {
        if (c->unique_of[j] == j) {
            c->unique[c->n_unique] = c->text[j];
            c->unique_of[j] = c->n_unique++;
        } else {
            c->unique_of[j] = c->unique_of[c->unique_of[j]]; /* its first's row, set earlier */
        }
    }
    return 0;
}

int cli_read_captions(vlm_dataset *ds, int64_t max_images, cli_captions *c) {
    memset(c, 0, sizeof *c);
    int64_t m = vlm_dataset_num_captions(ds), n = 0;
    c->text = calloc((size_t)(m ? m : 1), sizeof *c->text);
    c->image = malloc((size_t)(m ? m : 1) * sizeof *c->image);
    if (!c->text || !c->image) return vlm_set_error("out of memory for %lld captions", (long long)m);
    for (int64_t j = 0; j < m; j++) {
        int64_t img = vlm_dataset_caption_image(ds, j);
        if (img < 0) return -1;
        if (img >= max_images) continue;
        if (!(c->text[n] = vlm_dataset_read_caption(ds, j))) return -1;
        c->image[n] = img, c->n = ++n;
    }
    return dedupe(c);
}

void cli_captions_free(cli_captions *c) {
    cli_free_strings(c->text, c->n);
    free(c->image);
    free(c->unique_of);
    free(c->unique);
    memset(c, 0, sizeof *c);
}

int cli_embed_captions(vlm_ctx *ctx, const vlm_bundle *b, const cli_captions *c, int batch,
                       float *out) {
    int64_t D = vlm_bundle_embed_dim(b);
    float *u = malloc((size_t)((c->n_unique ? c->n_unique : 1) * D) * sizeof *u);
    if (!u) return vlm_set_error("out of memory for %lld text embeddings", (long long)c->n_unique);
    int rc = vlm_bundle_embed_texts(ctx, b, c->unique, c->n_unique, batch, u);
    for (int64_t j = 0; rc == 0 && j < c->n; j++)
        memcpy(out + j * D, u + c->unique_of[j] * D, (size_t)D * sizeof *out);
    free(u);
    return rc;
}
