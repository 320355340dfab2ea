/* cli.h - helpers for the train tests: a temporary directory, running the
 * vlm binary ($VLM_BINARY) with its output in a log file, reading files, and
 * a tiny shapes dataset and config to train on in a second. */
#ifndef VLM_TEST_TRAIN_CLI_H
#define VLM_TEST_TRAIN_CLI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];
static const char *vlm_bin;

/* Exit status of `vlm ARGS > log 2>&1` run from tmpdir (-1 if it did not exit). */
static inline int vlm_run(const char *log, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int vlm_run(const char *log, const char *fmt, ...) {
    char args[4096], cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(cmd, sizeof cmd, "cd '%s' && '%s' %s > '%s' 2>&1", tmpdir, vlm_bin, args, log);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

/* path relative to tmpdir -> absolute, in a rotating static buffer */
static inline const char *tpath(const char *rel) {
    static char bufs[8][1024];
    static int k;
    char *b = bufs[k++ % 8];
    snprintf(b, sizeof bufs[0], "%s/%s", tmpdir, rel);
    return b;
}

static inline char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) buf[n] = 0;
    if (buf && len) *len = (size_t)n;
    return buf;
}

static inline bool file_has(const char *path, const char *needle) {
    char *s = slurp(path, NULL);
    bool ok = s && strstr(s, needle);
    if (!ok) fprintf(stderr, "--- %s (looking for \"%s\"):\n%s\n---\n", path, needle, s ? s : "(missing)");
    free(s);
    return ok;
}

static inline bool exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

static inline bool same_bytes(const char *a, const char *b) {
    size_t na = 0, nb = 0;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    bool same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

static inline int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* The "step loss" pairs of the train events of a metrics.jsonl, one per line. */
static inline char *loss_lines(const char *metrics) {
    char *s = slurp(metrics, NULL);
    if (!s) return NULL;
    size_t cap = strlen(s) + 1, len = 0;
    char *out = calloc(cap, 1);
    for (char *line = strtok(s, "\n"); out && line; line = strtok(NULL, "\n")) {
        if (!strstr(line, "\"event\":\"train\"")) continue;
        char *st = strstr(line, "\"step\":"), *lo = strstr(line, "\"loss\":");
        if (!st || !lo) continue;
        len += (size_t)snprintf(out + len, cap - len, "%lld %.17g\n", atoll(st + 7), atof(lo + 7));
    }
    free(s);
    return out;
}

/* Whether two metrics.jsonl files log the same losses, bit for bit. */
static inline bool same_losses(const char *a, const char *b) {
    char *x = loss_lines(a), *y = loss_lines(b);
    bool same = x && y && *x && strcmp(x, y) == 0;
    if (!same) fprintf(stderr, "losses differ:\n%s---\n%s", x ? x : "", y ? y : "");
    free(x);
    free(y);
    return same;
}

/* Mean of the first / last k losses of the train events; *n = their count. */
static inline void loss_ends(const char *metrics, int k, double *first, double *last, int *n) {
    char *lines = loss_lines(metrics);
    static double v[4096];
    *n = 0;
    for (char *l = lines ? strtok(lines, "\n") : NULL; l && *n < 4096; l = strtok(NULL, "\n"))
        v[(*n)++] = atof(strchr(l, ' ') + 1);
    free(lines);
    *first = *last = 0;
    for (int i = 0; i < k && i < *n; i++) {
        *first += v[i] / k;
        *last += v[*n - 1 - i] / k;
    }
}

static inline int make_tmpdir(const char *name) {
    vlm_bin = getenv("VLM_BINARY");
    if (!vlm_bin || !exists(vlm_bin)) {
        fprintf(stderr, "VLM_BINARY (the vlm executable) is not set or missing\n");
        return -1;
    }
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/vlm-%s-XXXXXX", base && *base ? base : "/tmp", name);
    return mkdtemp(tmpdir) ? 0 : -1;
}

static inline void remove_tmpdir(void) {
    if (getenv("VLM_KEEP_TMP")) {
        fprintf(stderr, "kept %s\n", tmpdir);
        return;
    }
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

/* shapes.h5 (48 images) + shapes-val.h5 (16), 16x16, labelled by the first
 * shape's kind (3 classes). */
static inline int make_shapes(void) {
    return vlm_run("prepare.log", "prepare shapes --count 64 --image-size 16 --val-fraction 0.25 "
                   "--seed 5 --quiet -o shapes.h5");
}

/* A tiny SigLIP run with shuffling, augmentation and dropout all on. */
static const char *const tiny_config =
    "{\n"
    "  \"model\": {\"type\": \"siglip\",\n"
    "    \"vision\": {\"image_size\": 16, \"patch\": 4, \"width\": 32, \"layers\": 2, \"heads\": 2,\n"
    "               \"mlp\": 64, \"dropout\": 0.1},\n"
    "    \"text\": {\"vocab\": 300, \"ctx_len\": 12, \"width\": 32, \"layers\": 2, \"heads\": 2,\n"
    "             \"mlp\": 64, \"dropout\": 0.1}},\n"
    "  \"train\": {\"seed\": 3, \"steps\": 40, \"batch_size\": 8, \"threads\": 1, \"log_every\": 1,\n"
    "            \"eval_every\": 20, \"ckpt_every\": 10, \"keep_checkpoints\": 2,\n"
    "            \"optim\": {\"lr\": 3e-3, \"warmup_steps\": 5}},\n"
    "  \"data\": {\"train\": \"shapes.h5\", \"val\": \"shapes-val.h5\",\n"
    "           \"augment\": {\"crop\": true, \"scale_min\": 0.5, \"hflip\": true},\n"
    "           \"loader_threads\": 2},\n"
    "  \"out\": \"run\"\n"
    "}\n";

static inline int make_tiny_config(void) { return write_text(tpath("tiny.json"), tiny_config); }

#endif
