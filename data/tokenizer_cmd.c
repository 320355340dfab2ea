/* tokenizer_cmd.c - `vlm tokenizer train|encode|decode`: train a byte-level
 * BPE tokenizer on a text file, and encode / decode with any supported
 * tokenizer.json. Exit status: 0, 1 on a failure, 2 on bad usage. */
#include "data.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_SPECIALS "<pad>,<bos>,<eos>"

static void usage_main(FILE *f) {
    fprintf(f, "usage: vlm tokenizer train|encode|decode [options]\n"
               "       (vlm tokenizer SUBCOMMAND --help for details)\n"
               "\n"
               "  train   train a byte-level BPE tokenizer on a text file\n"
               "  encode  print the token ids of texts\n"
               "  decode  print the text of token ids\n");
}

static void usage_train(FILE *f) {
    fprintf(f,
            "usage: vlm tokenizer train (--input FILE | --dataset FILE.h5) --vocab-size N\n"
            "                           [options] -o tokenizer.json\n"
            "\n"
            "Trains a byte-level BPE tokenizer (GPT-2 style: 256 byte symbols, GPT-2\n"
            "pre-tokenizer, most frequent pair merged first, ties to the smallest ids) and\n"
            "writes it as a Hugging Face tokenizer.json.\n"
            "\n"
            "options:\n"
            "  --input FILE         texts, one per line (UTF-8; empty lines are skipped)\n"
            "  --dataset FILE.h5    or: the /captions of a dataset written by vlm prepare\n"
            "  --vocab-size N       total ids: special tokens + 256 byte symbols + merges\n"
            "  --special LIST       comma-separated special tokens, given ids 0, 1, ...\n"
            "                       (default \"" DEFAULT_SPECIALS "\"; \"\" for none)\n"
            "  --min-frequency N    never merge a pair seen fewer than N times (default 2)\n"
            "  -o, --output FILE    the tokenizer.json to write\n"
            "\n"
            "example:\n"
            "  vlm tokenizer train --input captions.txt --vocab-size 8192 -o tokenizer.json\n"
            "  vlm tokenizer train --dataset data/shapes.h5 --vocab-size 1024 -o tokenizer.json\n");
}

static void usage_encode(FILE *f) {
    fprintf(f, "usage: vlm tokenizer encode --tokenizer FILE [--tokens] [TEXT...]\n"
               "\n"
               "Prints the ids of each TEXT on one line, separated by spaces; with no TEXT,\n"
               "encodes each line of standard input. Special tokens are not added (encode\n"
               "\"<bos>a cat<eos>\" to get them).\n"
               "\n"
               "options:\n"
               "  --tokenizer FILE   a tokenizer.json (byte-level BPE)\n"
               "  --tokens           print the token strings instead of the ids\n"
               "  --                 what follows is TEXT even if it starts with '-'\n"
               "\n"
               "example:\n"
               "  vlm tokenizer encode --tokenizer tokenizer.json \"a red circle\"\n");
}

static void usage_decode(FILE *f) {
    fprintf(f, "usage: vlm tokenizer decode --tokenizer FILE [--skip-special] ID...\n"
               "\n"
               "Prints the text of the ids (with no ID, the ids are read from standard\n"
               "input). The bytes are written exactly, followed by a newline.\n"
               "\n"
               "options:\n"
               "  --tokenizer FILE   a tokenizer.json (byte-level BPE)\n"
               "  --skip-special     leave out special tokens such as <pad> and <eos>\n"
               "\n"
               "example:\n"
               "  vlm tokenizer decode --tokenizer tokenizer.json 1 64 402 2\n");
}

/* ---- argument helpers ------------------------------------------------------ */

typedef struct {
    int argc, i;
    char **argv;
    const char *cmd; /* for messages: "tokenizer train" */
    void (*usage)(FILE *);
} args;

static bool is_help(const char *a) { return !strcmp(a, "--help") || !strcmp(a, "-h"); }

/* If argv[i] is option name ("--name VALUE" or "--name=VALUE"), stores the
 * value and returns 1; 0 if it is another argument; -1 if the value is missing. */
static int take(args *a, const char *name, const char *alias, const char **val) {
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

static int bad_usage(const args *a, const char *what, const char *arg) {
    fprintf(stderr, "error: %s: %s%s%s%s\n", a->cmd, what, arg ? " '" : "", arg ? arg : "",
            arg ? "'" : "");
    a->usage(stderr);
    return 2;
}

static bool parse_int(const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) return false;
    *out = v;
    return true;
}

static char *read_all(FILE *f, const char *name, size_t *len) {
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (n + 65536 > cap) {
            char *q = realloc(buf, cap = cap ? cap * 2 : 1 << 20);
            if (!q) return free(buf), vlm_set_error("out of memory (reading %s)", name), NULL;
            buf = q;
        }
        n += got = fread(buf + n, 1, cap - n - 1, f);
    } while (got);
    if (ferror(f)) return free(buf), vlm_set_error("%s: read error", name), NULL;
    buf[n] = 0;
    *len = n;
    return buf;
}

static int grow_lines(const char ***lines, size_t **lens, size_t *cap) {
    size_t c = *cap ? 2 * *cap : 1024;
    const char **a = realloc(*lines, c * sizeof *a);
    if (!a) return -1;
    *lines = a;
    size_t *b = realloc(*lens, c * sizeof *b);
    if (!b) return -1;
    *lens = b, *cap = c;
    return 0;
}

/* Splits buf into lines in place (dropping "\n" / "\r\n"); empty lines are
 * skipped. Returns the count, or -1 when out of memory. */
static long split_lines(char *buf, size_t len, const char ***lines, size_t **lens) {
    size_t n = 0, cap = 0;
    *lines = NULL, *lens = NULL;
    for (size_t p = 0; p < len;) {
        char *nl = memchr(buf + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - buf) : len, l = e - p;
        if (l && buf[p + l - 1] == '\r') l--;
        if (l) {
            if (n == cap && grow_lines(lines, lens, &cap)) return -1;
            (*lines)[n] = buf + p, (*lens)[n++] = l;
        }
        p = e + 1;
    }
    return (long)n;
}

static vlm_bpe *load_or_report(const char *path) {
    vlm_bpe *b = vlm_bpe_load(path);
    if (!b) fprintf(stderr, "error: %s\n", vlm_last_error());
    return b;
}

/* ---- train ------------------------------------------------------------------ */

/* "<pad>,<bos>,<eos>" -> its pieces (in a copy that *store owns). */
static int split_specials(const char *list, char **store, const char ***out) {
    size_t n = 1;
    for (const char *p = list; *p; p++)
        n += *p == ',';
    *store = strdup(list);
    *out = malloc(n * sizeof **out);
    if (!*store || !*out) return -1;
    int k = 0;
    if (!**store) return 0;
    for (char *tok = *store, *comma;; tok = comma + 1) {
        comma = strchr(tok, ',');
        if (comma) *comma = 0;
        (*out)[k++] = tok;
        if (!comma) break;
    }
    return k;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int train_lines(const char *const *lines, const size_t *lens, long n, const char *special,
                       long vocab, long min_freq, const char *output) {
    char *store = NULL;
    const char **specials = NULL;
    int k = split_specials(special, &store, &specials), rc = 1;
    vlm_bpe *b = NULL;
    double t0 = now_s();
    if (k < 0) {
        fprintf(stderr, "error: out of memory\n");
    } else {
        vlm_bpe_train_opts o = {.vocab_size = (int)vocab,
                                .specials = specials,
                                .n_specials = k,
                                .min_frequency = (int)min_freq};
        b = vlm_bpe_train(lines, lens, (size_t)n, &o);
        if (!b || vlm_bpe_save(b, output))
            fprintf(stderr, "error: %s\n", vlm_last_error());
        else
            rc = 0;
    }
    if (!rc) {
        printf("wrote %s: %d ids (%d special, 256 bytes, %d merges) from %ld texts in %.2f s\n",
               output, vlm_bpe_vocab_size(b), k, vlm_bpe_merge_count(b), n, now_s() - t0);
        if (vlm_bpe_vocab_size(b) < vocab)
            printf("note: no pair is seen %ld+ times any more; stopped before %ld ids\n",
                   min_freq > 1 ? min_freq : 1, vocab);
    }
    vlm_bpe_free(b);
    free(store), free(specials);
    return rc;
}

static int run_train(const char *input, long vocab, const char *special, long min_freq,
                     const char *output) {
    FILE *f = fopen(input, "rb");
    if (!f) return fprintf(stderr, "error: %s: cannot open (%s)\n", input, strerror(errno)), 1;
    size_t len;
    char *buf = read_all(f, input, &len);
    fclose(f);
    if (!buf) return fprintf(stderr, "error: %s\n", vlm_last_error()), 1;
    const char **lines;
    size_t *lens;
    long n = split_lines(buf, len, &lines, &lens);
    int rc = n < 0 ? (fprintf(stderr, "error: out of memory\n"), 1)
                   : train_lines(lines, lens, n, special, vocab, min_freq, output);
    free(buf), free(lines), free(lens);
    return rc;
}

static int run_train_dataset(const char *path, long vocab, const char *special, long min_freq,
                             const char *output) {
    vlm_dataset *ds = vlm_dataset_open(path);
    int64_t n = 0;
    char **texts = ds ? vlm_dataset_read_captions(ds, &n) : NULL;
    int rc = 1;
    if (!texts)
        fprintf(stderr, "error: %s\n", vlm_last_error());
    else if (n == 0)
        fprintf(stderr, "error: %s: the dataset has no captions\n", path);
    else
        rc = train_lines((const char *const *)texts, NULL, (long)n, special, vocab, min_freq,
                         output);
    vlm_strings_free(texts, n);
    vlm_dataset_close(ds);
    return rc;
}

static int cmd_train(args *a) {
    const char *input = NULL, *dataset = NULL, *output = NULL, *special = DEFAULT_SPECIALS,
               *v = NULL;
    long vocab = -1, min_freq = 2;
    for (a->i = 1; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        int r;
        if (is_help(s)) return a->usage(stdout), 0;
        if ((r = take(a, "--input", NULL, &input)) || (r = take(a, "--dataset", NULL, &dataset)) ||
            (r = take(a, "--output", "-o", &output)) ||
            (r = take(a, "--special", NULL, &special))) {
            if (r < 0) return a->usage(stderr), 2;
        } else if ((r = take(a, "--vocab-size", NULL, &v))) {
            if (r < 0 || !parse_int(v, 257, 1 << 24, &vocab))
                return bad_usage(a, "--vocab-size must be an integer in [257, 16777216], not", v);
        } else if ((r = take(a, "--min-frequency", NULL, &v))) {
            if (r < 0 || !parse_int(v, 0, 1L << 30, &min_freq))
                return bad_usage(a, "--min-frequency must be an integer >= 0, not", v);
        } else {
            return bad_usage(a, "unexpected argument", s);
        }
    }
    if (!input == !dataset) return bad_usage(a, "give one of --input FILE or --dataset FILE.h5", NULL);
    if (vocab < 0) return bad_usage(a, "missing --vocab-size N", NULL);
    if (!output) return bad_usage(a, "missing -o FILE", NULL);
    return input ? run_train(input, vocab, special, min_freq, output)
                 : run_train_dataset(dataset, vocab, special, min_freq, output);
}

/* ---- encode ------------------------------------------------------------------- */

static int print_encoding(const vlm_bpe *b, const char *text, size_t len, bool tokens) {
    int32_t *ids;
    int n;
    if (vlm_bpe_encode(b, text, len, &ids, &n))
        return fprintf(stderr, "error: %s\n", vlm_last_error()), 1;
    for (int i = 0; i < n; i++) {
        if (tokens)
            printf(i ? " %s" : "%s", vlm_bpe_token(b, ids[i]));
        else
            printf(i ? " %d" : "%d", ids[i]);
    }
    putchar('\n');
    free(ids);
    return 0;
}

static int encode_stdin(const vlm_bpe *b, bool tokens) {
    size_t len;
    char *buf = read_all(stdin, "standard input", &len);
    if (!buf) return fprintf(stderr, "error: %s\n", vlm_last_error()), 1;
    int rc = 0;
    for (size_t p = 0; p < len && !rc;) {
        char *nl = memchr(buf + p, '\n', len - p);
        size_t e = nl ? (size_t)(nl - buf) : len;
        rc = print_encoding(b, buf + p, e - p, tokens);
        p = e + 1;
    }
    free(buf);
    return rc;
}

static int cmd_encode(args *a) {
    const char *path = NULL;
    bool tokens = false, only_text = false;
    int first_text = 0, n_text = 0;
    for (a->i = 1; a->i < a->argc; a->i++) {
        const char *s = a->argv[a->i];
        int r;
        if (only_text || s[0] != '-' || !s[1]) {
            if (!n_text++) first_text = a->i;
            if (first_text + n_text - 1 != a->i)
                return bad_usage(a, "options must come before the texts, not", s);
        } else if (is_help(s)) {
            return a->usage(stdout), 0;
        } else if (!strcmp(s, "--")) {
            only_text = true;
        } else if (!strcmp(s, "--tokens")) {
            tokens = true;
        } else if ((r = take(a, "--tokenizer", NULL, &path))) {
            if (r < 0) return a->usage(stderr), 2;
        } else {
            return bad_usage(a, "unknown option", s);
        }
    }
    if (!path) return bad_usage(a, "missing --tokenizer FILE", NULL);
    vlm_bpe *b = load_or_report(path);
    if (!b) return 1;
    int rc = n_text ? 0 : encode_stdin(b, tokens);
    for (int i = 0; i < n_text && !rc; i++)
        rc = print_encoding(b, a->argv[first_text + i], strlen(a->argv[first_text + i]), tokens);
    vlm_bpe_free(b);
    return rc;
}

/* ---- decode ------------------------------------------------------------------- */

static int push_id(args *a, const char *s, int32_t **ids, size_t *n, size_t *cap) {
    long v;
    if (!parse_int(s, 0, INT32_MAX, &v)) return bad_usage(a, "not a token id:", s);
    if (*n == *cap) {
        int32_t *q = realloc(*ids, (*cap = *cap ? 2 * *cap : 256) * sizeof *q);
        if (!q) return fprintf(stderr, "error: out of memory\n"), 1;
        *ids = q;
    }
    (*ids)[(*n)++] = (int32_t)v;
    return 0;
}

static int ids_from_stdin(args *a, int32_t **ids, size_t *n, size_t *cap) {
    size_t len;
    char *buf = read_all(stdin, "standard input", &len);
    if (!buf) return fprintf(stderr, "error: %s\n", vlm_last_error()), 1;
    int rc = 0;
    for (char *tok = strtok(buf, " \t\r\n,"); tok && !rc; tok = strtok(NULL, " \t\r\n,"))
        rc = push_id(a, tok, ids, n, cap);
    free(buf);
    return rc;
}

static int run_decode(const char *path, const int32_t *ids, size_t n, bool skip) {
    vlm_bpe *b = load_or_report(path);
    if (!b) return 1;
    size_t len;
    char *text = n > INT32_MAX ? NULL : vlm_bpe_decode(b, ids, (int)n, skip, &len);
    vlm_bpe_free(b);
    if (!text)
        return fprintf(stderr, "error: %s\n", n > INT32_MAX ? "too many ids" : vlm_last_error()), 1;
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return 0;
}

static int cmd_decode(args *a) {
    const char *path = NULL;
    bool skip = false;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    for (a->i = 1; a->i < a->argc && !rc; a->i++) {
        const char *s = a->argv[a->i];
        int r;
        if (is_help(s)) {
            a->usage(stdout);
            return free(ids), 0;
        } else if (!strcmp(s, "--skip-special")) {
            skip = true;
        } else if ((r = take(a, "--tokenizer", NULL, &path))) {
            if (r < 0) rc = 2, a->usage(stderr);
        } else if (s[0] == '-') {
            rc = bad_usage(a, "unknown option", s);
        } else {
            rc = push_id(a, s, &ids, &n, &cap);
        }
    }
    if (!rc && !path) rc = bad_usage(a, "missing --tokenizer FILE", NULL);
    if (!rc && !n) rc = ids_from_stdin(a, &ids, &n, &cap);
    if (!rc) rc = run_decode(path, ids, n, skip);
    free(ids);
    return rc;
}

/* ---- dispatch ------------------------------------------------------------------- */

int vlm_cmd_tokenizer(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "error: tokenizer: missing SUBCOMMAND\n");
        return usage_main(stderr), 2;
    }
    if (is_help(argv[1])) return usage_main(stdout), 0;
    static const struct {
        const char *name, *cmd;
        int (*run)(args *);
        void (*usage)(FILE *);
    } subs[] = {
        {"train", "tokenizer train", cmd_train, usage_train},
        {"encode", "tokenizer encode", cmd_encode, usage_encode},
        {"decode", "tokenizer decode", cmd_decode, usage_decode},
    };
    for (size_t k = 0; k < sizeof subs / sizeof subs[0]; k++) {
        if (strcmp(argv[1], subs[k].name)) continue;
        args a = {.argc = argc - 1, .argv = argv + 1, .cmd = subs[k].cmd, .usage = subs[k].usage};
        return subs[k].run(&a);
    }
    fprintf(stderr, "error: tokenizer: unknown subcommand '%s'\n", argv[1]);
    return usage_main(stderr), 2;
}
