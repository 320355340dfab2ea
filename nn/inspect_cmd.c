/* inspect_cmd.c - `vlm inspect FILE.safetensors`: checks a safetensors file
 * with the full reader (so a file that lists is one that loads) and prints
 * its metadata, its tensors sorted by name and the total parameter count. */
#include "nn.h"

#include <stdio.h>
#include <string.h>

static void inspect_usage(FILE *f) {
    fprintf(f, "usage: vlm inspect FILE.safetensors\n"
               "\n"
               "Checks a safetensors file and lists its __metadata__, its tensors (name,\n"
               "dtype, shape, element count) sorted by name, and the total parameter count\n"
               "(the sum of all element counts). A malformed file is an error naming the\n"
               "broken rule and tensor, with exit status 1.\n"
               "\n"
               "example:\n"
               "  vlm inspect runs/default/model.safetensors\n"
               "  vlm inspect SmolLM2-135M/model.safetensors | grep layers.0.\n");
}

/* 134515008 -> "134.52M", for a quick read of the count next to the exact one. */
static const char *human_count(char *buf, size_t cap, int64_t n) {
    static const char *const unit[] = {"", "K", "M", "B", "T"};
    double v = (double)n;
    int u = 0;
    while (v >= 1000 && u < 4)
        v /= 1000, u++;
    snprintf(buf, cap, "%.2f%s", v, unit[u]);
    return buf;
}

static void print_shape(const vlm_st *st, int i, int width) {
    char buf[256];
    size_t len = (size_t)snprintf(buf, sizeof buf, "[");
    const int64_t *shape = vlm_st_shape(st, i);
    for (int d = 0; d < vlm_st_ndim(st, i) && len < sizeof buf; d++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%lld", d ? ", " : "",
                                (long long)shape[d]);
    if (len < sizeof buf) snprintf(buf + len, sizeof buf - len, "]");
    printf("%-*s", width, buf);
}

static void print_tensors(const vlm_st *st) {
    int name_w = 4;
    for (int i = 0; i < vlm_st_count(st); i++) {
        int len = (int)strlen(vlm_st_name(st, i));
        if (len > name_w) name_w = len < 72 ? len : 72;
    }
    printf("tensors:\n  %-*s  %-7s  %-22s  %s\n", name_w, "name", "dtype", "shape", "elements");
    for (int i = 0; i < vlm_st_count(st); i++) {
        printf("  %-*s  %-7s  ", name_w, vlm_st_name(st, i), vlm_st_dtype(st, i));
        print_shape(st, i, 22);
        printf("  %lld\n", (long long)vlm_st_numel(st, i));
    }
}

static void print_file(const vlm_st *st) {
    printf("file: %s\n", vlm_st_path(st));
    printf("header: %llu bytes, data: %llu bytes\n", (unsigned long long)vlm_st_header_bytes(st),
           (unsigned long long)vlm_st_data_bytes(st));
    printf("metadata:%s\n", vlm_st_meta_count(st) ? "" : " (none)");
    for (int i = 0; i < vlm_st_meta_count(st); i++)
        printf("  %s: %s\n", vlm_st_meta_key(st, i), vlm_st_meta_value(st, i));
    print_tensors(st);
    int64_t total = 0;
    for (int i = 0; i < vlm_st_count(st); i++)
        total += vlm_st_numel(st, i);
    char h[32];
    printf("total: %d tensors, %lld parameters", vlm_st_count(st), (long long)total);
    printf(total >= 1000 ? " (%s)\n" : "\n", human_count(h, sizeof h, total));
}

int vlm_cmd_inspect(int argc, char **argv) {
    const char *file = NULL;
    bool only_files = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!only_files && (!strcmp(a, "--help") || !strcmp(a, "-h"))) {
            inspect_usage(stdout);
            return 0;
        }
        if (!only_files && !strcmp(a, "--")) {
            only_files = true;
        } else if (!only_files && a[0] == '-' && a[1]) {
            fprintf(stderr, "error: inspect: unknown option '%s'\n", a);
            inspect_usage(stderr);
            return 2;
        } else if (file) {
            fprintf(stderr, "error: inspect: one file at a time ('%s' and '%s')\n", file, a);
            return 2;
        } else {
            file = a;
        }
    }
    if (!file) {
        fprintf(stderr, "error: inspect: missing FILE.safetensors\n");
        inspect_usage(stderr);
        return 2;
    }
    vlm_st *st = vlm_st_open(file);
    if (!st) {
        fprintf(stderr, "error: %s\n", vlm_last_error());
        return 1;
    }
    print_file(st);
    vlm_st_close(st);
    return 0;
}
