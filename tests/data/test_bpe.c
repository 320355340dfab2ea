/* test_bpe.c - byte-level BPE: Unicode helpers and the GPT-2 split, parity
 * with the Python reference (tests/data/fixtures/bpe, scripts/gen_bpe_fixtures.py)
 * for both merge encodings and several pre-tokenizers, added tokens, decode
 * exactness on random bytes, the trainer, malformed files and the CLI. */
#include "data.h"
#include "test.h"

#include <cjson/cJSON.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- helpers ------------------------------------------------------------------ */

static char *fixture(const char *name) {
    const char *src = getenv("VLM_SOURCE_DIR");
    static char path[4096];
    snprintf(path, sizeof path, "%s/tests/data/fixtures/bpe/%s", src ? src : ".", name);
    return path;
}

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) free(buf), buf = NULL;
    fclose(f);
    if (buf) buf[n] = 0, *len = (size_t)n;
    return buf;
}

static cJSON *load_cjson(const char *path) {
    size_t len;
    char *s = slurp(path, &len);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    free(s);
    return j;
}

/* ids of text, or NULL (and a failed check). */
static int32_t *enc(const vlm_bpe *b, const char *text, size_t len, int *n) {
    int32_t *ids = NULL;
    int rc = vlm_bpe_encode(b, text, len, &ids, n);
    CHECK(rc == 0 && ids, "encode failed: %s", vlm_last_error());
    return rc ? NULL : ids;
}

static bool same_ids(const int32_t *a, int na, const cJSON *arr) {
    if (cJSON_GetArraySize(arr) != na) return false;
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) if ((int32_t)e->valuedouble != a[i++]) return false;
    return true;
}

/* A copy of the JSON tokenizer with pre_tokenizer replaced, loaded. */
static vlm_bpe *with_pretokenizer(const cJSON *tok, const char *pre_json) {
    cJSON *copy = cJSON_Duplicate(tok, 1), *pre = cJSON_Parse(pre_json);
    cJSON_ReplaceItemInObjectCaseSensitive(copy, "pre_tokenizer", pre);
    char *text = cJSON_PrintUnformatted(copy);
    vlm_bpe *b = vlm_bpe_load_json(text, strlen(text), "variant");
    CHECK(b, "variant %s: %s", pre_json, vlm_last_error());
    free(text);
    cJSON_Delete(copy);
    return b;
}

/* ---- Unicode helpers and the GPT-2 split ---------------------------------------- */

static void test_unicode(void) {
    static const struct {
        const char *s;
        uint32_t cp;
        int len;
    } utf8[] = {
        {"A", 'A', 1},
        {"\xC3\xA9", 0xE9, 2},
        {"\xE2\x82\xAC", 0x20AC, 3},
        {"\xF0\x9F\x99\x82", 0x1F642, 4},
        {"\xC0\xAF", VLM_UTF8_INVALID, 1},         /* overlong */
        {"\xED\xA0\x80", VLM_UTF8_INVALID, 1},     /* surrogate */
        {"\xF4\x90\x80\x80", VLM_UTF8_INVALID, 1}, /* > U+10FFFF */
        {"\xE2\x82", VLM_UTF8_INVALID, 1},         /* truncated */
        {"\x80", VLM_UTF8_INVALID, 1},
        {"\xFF", VLM_UTF8_INVALID, 1},
    };
    for (size_t i = 0; i < sizeof utf8 / sizeof utf8[0]; i++) {
        uint32_t cp;
        int len = vlm_utf8_decode((const uint8_t *)utf8[i].s, strlen(utf8[i].s), &cp);
        CHECK(cp == utf8[i].cp && len == utf8[i].len, "utf8 case %zu: U+%X len %d", i, cp, len);
    }
    CHECK(vlm_unicode_class('a') == VLM_UC_LETTER && vlm_unicode_class(0x65E5) == VLM_UC_LETTER,
          "letters");
    CHECK(vlm_unicode_class('7') == VLM_UC_NUMBER && vlm_unicode_class(0xBD) == VLM_UC_NUMBER &&
              vlm_unicode_class(0x216B) == VLM_UC_NUMBER,
          "numbers (7, 1/2, roman XII)");
    CHECK(vlm_unicode_class(0x3000) == VLM_UC_SPACE && vlm_unicode_class(0xA0) == VLM_UC_SPACE &&
              vlm_unicode_class(0x1C) == VLM_UC_OTHER,
          "white space (U+001C is not)");
    CHECK(vlm_unicode_class(0x301) == VLM_UC_OTHER &&
              vlm_unicode_class(VLM_UTF8_INVALID) == VLM_UC_OTHER,
          "combining mark, invalid");
    CHECK(vlm_byte_to_unicode(' ') == 0x120 && vlm_byte_to_unicode(0) == 0x100 &&
              vlm_byte_to_unicode('!') == '!' && vlm_byte_to_unicode(0xAD) == 0x143 &&
              vlm_byte_to_unicode(0x7F) == 0x121 && vlm_byte_to_unicode('\n') == 0x10A,
          "GPT-2 byte map");
    int seen[0x200] = {0}, ok = 1;
    for (int b = 0; b < 256; b++) {
        uint32_t c = vlm_byte_to_unicode((uint8_t)b);
        ok &= c < 0x144 && !seen[c]++ && vlm_unicode_to_byte(c) == b;
    }
    CHECK(ok && vlm_unicode_to_byte(0x144) == -1 && vlm_unicode_to_byte(' ') == -1,
          "byte map is a bijection onto its 256 characters");
}

static void check_split(const char *text, size_t len, const char *const *want, int n_want) {
    int k = 0;
    bool ok = true;
    for (size_t p = 0, e; p < len; p = e, k++) {
        e = vlm_gpt2_split(text, len, p);
        ok &= e > p && k < n_want && strlen(want[k]) == e - p && !memcmp(want[k], text + p, e - p);
    }
    CHECK(ok && k == n_want, "split of '%s': %d pieces, want %d", text, k, n_want);
}

#define SPLIT(text, ...)                                                                           \
    do {                                                                                           \
        const char *const w_[] = {__VA_ARGS__};                                                    \
        check_split(text, sizeof(text) - 1, w_, (int)(sizeof w_ / sizeof w_[0]));                  \
    } while (0)

static void test_split(void) {
    SPLIT("Hello world's 123  x", "Hello", " world", "'s", " 123", " ", " x");
    SPLIT("a\tb", "a", "\t", "b");
    SPLIT("x   ", "x", "   ");
    SPLIT("  hi", " ", " hi");
    SPLIT("I'M here's", "I", "'", "M", " here", "'s");
    SPLIT("end.\n\nNext", "end", ".", "\n", "\n", "Next");
    SPLIT("a \xE3\x80\x80"
          "b",
          "a", " ", "\xE3\x80\x80", "b"); /* ideographic space */
    SPLIT("\xC3\xBC"
          "b3r 12ab",
          "\xC3\xBC"
          "b",
          "3", "r", " 12", "ab");
    SPLIT("?! 'll", "?!", " '", "ll");
    SPLIT(" \t x", " \t", " x");
    SPLIT("we'll they're I've", "we", "'ll", " they", "'re", " I", "'ve");
    /* invalid UTF-8 bytes are "other" characters, one byte each */
    SPLIT("ab\xFF\xFE"
          "cd \xC3",
          "ab", "\xFF\xFE", "cd", " \xC3");
    SPLIT("\xE2\x82 x", "\xE2\x82", " x");
}

/* ---- parity with the Python reference ----------------------------------------------- */

/* Every case's ids under variant (a key of the case objects). */
static int compare_cases(const vlm_bpe *b, const cJSON *cases, const char *variant) {
    int bad = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int n;
        int32_t *ids = enc(b, text, strlen(text), &n);
        if (!ids || !same_ids(ids, n, cJSON_GetObjectItem(c, variant))) {
            if (!bad++) fprintf(stderr, "variant %s: first mismatch on '%s'\n", variant, text);
        }
        free(ids);
    }
    return bad;
}

static void test_parity(const char *file, const cJSON *fx) {
    const cJSON *cases = cJSON_GetObjectItem(fx, "cases"),
                *variants = cJSON_GetObjectItem(fx, "variants");
    vlm_bpe *b = vlm_bpe_load(fixture(file));
    CHECK(b, "load %s: %s", file, vlm_last_error());
    if (!b) return;
    CHECK(vlm_bpe_vocab_size(b) == 679 + 5 && vlm_bpe_merge_count(b) == 420, "%s: sizes %d %d",
          file, vlm_bpe_vocab_size(b), vlm_bpe_merge_count(b));
    int bad = compare_cases(b, cases, "base");
    CHECK(bad == 0, "%s: %d of %d sentences differ from the reference", file, bad,
          cJSON_GetArraySize(cases));
    int rt = 0, n_rt = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cases) {
        if (!cJSON_IsTrue(cJSON_GetObjectItem(c, "roundtrip"))) continue;
        const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
        int n;
        size_t len;
        int32_t *ids = enc(b, text, strlen(text), &n);
        char *back = ids ? vlm_bpe_decode(b, ids, n, false, &len) : NULL;
        rt += back && len == strlen(text) && !memcmp(back, text, len);
        n_rt++;
        free(ids), free(back);
    }
    CHECK(rt == n_rt && n_rt > 250, "%s: decode(encode(s)) == s for %d of %d", file, rt, n_rt);
    /* the same vocab under other pre-tokenizers */
    cJSON *tok = load_cjson(fixture(file));
    const cJSON *v;
    cJSON_ArrayForEach(v, variants) {
        char *pre = cJSON_PrintUnformatted(v);
        vlm_bpe *bv = with_pretokenizer(tok, pre);
        if (bv) {
            int bad_v = compare_cases(bv, cases, v->string);
            CHECK(bad_v == 0, "%s, variant %s: %d sentences differ", file, v->string, bad_v);
        }
        vlm_bpe_free(bv);
        free(pre);
    }
    /* Split with the GPT-2 pattern + ByteLevel without regex (Qwen style) = ByteLevel */
    vlm_bpe *q = with_pretokenizer(
        tok, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
             "\"'s|'t|'re|'ve|'m|'ll|'d| ?\\\\p{L}+| ?\\\\p{N}+| "
             "?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_"
             "space\":false,"
             "\"use_regex\":false}]}");
    if (q) CHECK(compare_cases(q, cases, "base") == 0, "Split(GPT-2 regex) + ByteLevel(no regex)");
    vlm_bpe_free(q);
    cJSON_Delete(tok);
    vlm_bpe_free(b);
}

/* ---- added tokens, Split behaviours, model options ------------------------------------ */

static void expect_ids(const vlm_bpe *b, const char *text, const int32_t *want, int n_want) {
    int n;
    int32_t *ids = enc(b, text, strlen(text), &n);
    bool ok = ids && n == n_want && !memcmp(ids, want, (size_t)n * sizeof *ids);
    CHECK(ok, "'%s': %d ids, want %d (first %d, want %d)", text, ids ? n : -1, n_want,
          ids && n ? ids[0] : -1, n_want ? want[0] : -1);
    free(ids);
}

static void test_added(void) {
    vlm_bpe *b = vlm_bpe_load(fixture("tokenizer.json"));
    if (!b) return;
    int32_t bos = vlm_bpe_token_id(b, "<bos>"), eos = vlm_bpe_token_id(b, "<eos>");
    int32_t a = vlm_bpe_token_id(b, "<a>"), ab = vlm_bpe_token_id(b, "<a><b>");
    CHECK(bos == 1 && eos == 2 && vlm_bpe_token_id(b, "<pad>") == 0, "special ids %d %d", bos, eos);
    CHECK(vlm_bpe_token_id(b, "no such token") == -1 && strstr(vlm_last_error(), "no such token"),
          "unknown token: %s", vlm_last_error());
    CHECK(vlm_bpe_is_special(b, bos) && !vlm_bpe_is_special(b, a) && !vlm_bpe_is_special(b, 100),
          "is_special");
    CHECK(vlm_bpe_token_id(b, "\xC4\xA0"
                              "and") >= 0,
          "vocab strings are looked up as stored (Ġand)");
    int n;
    int32_t *ids = enc(b, "<bos>wo<eos>rds<eos>", 20, &n);
    CHECK(ids && n >= 4 && ids[0] == bos && ids[n - 1] == eos,
          "specials matched first, inside words");
    size_t len;
    char *s = ids ? vlm_bpe_decode(b, ids, n, true, &len) : NULL;
    CHECK(s && !strcmp(s, "words") && len == 5, "skip_special decode: '%s'", s ? s : "(null)");
    free(s), free(ids);
    expect_ids(b, "<a><a><b>", (int32_t[]){a, ab}, 2); /* leftmost, then longest */
    expect_ids(b, "<a><b><a>", (int32_t[]){ab, a}, 2);
    int32_t mask = vlm_bpe_token_id(b, "<mask>"), sp = vlm_bpe_token_id(b, "<sep>");
    int32_t x = vlm_bpe_token_id(b, "x");
    expect_ids(b, "x   <mask>", (int32_t[]){x, mask}, 2); /* lstrip eats the spaces */
    expect_ids(b, "<sep>  \t x", (int32_t[]){sp, x}, 2);  /* rstrip */
    int32_t bad[] = {5, 1 << 30};
    CHECK(!vlm_bpe_decode(b, bad, 2, false, NULL) && strstr(vlm_last_error(), "1073741824"),
          "unknown id in decode: %s", vlm_last_error());
    CHECK(vlm_bpe_token(b, bos) && !strcmp(vlm_bpe_token(b, bos), "<bos>") && !vlm_bpe_token(b, -1),
          "token strings");
    ids = enc(b, "", 0, &n);
    CHECK(ids && n == 0, "empty text");
    free(ids);
    vlm_bpe_free(b);
}

/* ids of the pieces, each encoded alone without any split: what a Split
 * pre-tokenizer followed by ByteLevel(use_regex=false) must produce. */
static void expect_pieces(const vlm_bpe *split, const vlm_bpe *whole, const char *text,
                          const char *const *pieces, int np, const char *what) {
    int32_t want[256];
    int nw = 0;
    for (int i = 0; i < np; i++) {
        int n;
        int32_t *ids = enc(whole, pieces[i], strlen(pieces[i]), &n);
        for (int k = 0; ids && k < n && nw < 256; k++)
            want[nw++] = ids[k];
        free(ids);
    }
    int n;
    int32_t *got = enc(split, text, strlen(text), &n);
    CHECK(got && n == nw && !memcmp(got, want, (size_t)n * sizeof *got), "%s on '%s'", what, text);
    free(got);
}

static vlm_bpe *split_variant(const cJSON *tok, const char *pattern, const char *behavior,
                              bool invert) {
    char pre[512];
    snprintf(
        pre, sizeof pre,
        "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":"
        "\"%s\"},\"behavior\":\"%s\",\"invert\":%s},{\"type\":\"ByteLevel\","
        "\"add_prefix_space\":false,\"use_regex\":false}]}",
        pattern, behavior, invert ? "true" : "false");
    return with_pretokenizer(tok, pre);
}

#define PIECES(split, text, what, ...)                                                             \
    do {                                                                                           \
        const char *const p_[] = {__VA_ARGS__};                                                    \
        expect_pieces(split, whole, text, p_, (int)(sizeof p_ / sizeof p_[0]), what);              \
    } while (0)

/* HF's documented examples of SplitDelimiterBehavior and Digits. */
static void test_split_behaviours(void) {
    cJSON *tok = load_cjson(fixture("tokenizer.json"));
    vlm_bpe *whole = with_pretokenizer(tok, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,"
                                            "\"use_regex\":false}");
    const char *t = "the-final--countdown";
    vlm_bpe *s;
    s = split_variant(tok, "-", "Removed", false);
    PIECES(s, t, "Removed", "the", "final", "countdown");
    vlm_bpe_free(s);
    s = split_variant(tok, "-", "Isolated", false);
    PIECES(s, t, "Isolated", "the", "-", "final", "-", "-", "countdown");
    vlm_bpe_free(s);
    s = split_variant(tok, "-", "MergedWithPrevious", false);
    PIECES(s, t, "MergedWithPrevious", "the-", "final-", "-", "countdown");
    vlm_bpe_free(s);
    s = split_variant(tok, "-", "MergedWithNext", false);
    PIECES(s, t, "MergedWithNext", "the", "-final", "-", "-countdown");
    vlm_bpe_free(s);
    s = split_variant(tok, "-", "Contiguous", false);
    PIECES(s, t, "Contiguous", "the", "-", "final", "--", "countdown");
    vlm_bpe_free(s);
    s = split_variant(tok, "Hello", "Removed", true);
    PIECES(s, "Hello Hello Hello", "inverted Removed", "Hello", "Hello", "Hello");
    vlm_bpe_free(s);
    s = with_pretokenizer(tok, "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\","
                               "\"individual_digits\":true},{\"type\":\"ByteLevel\","
                               "\"add_prefix_space\":false,\"use_regex\":false}]}");
    PIECES(s, "Hey 123 friend!", "Digits(individual)", "Hey ", "1", "2", "3", " friend!");
    vlm_bpe_free(s);
    vlm_bpe_free(whole);
    cJSON_Delete(tok);
}

/* A hand-made model: merges "b c" only, "abc" in the vocab, no "z" symbol. */
static vlm_bpe *tiny(const char *model_extra) {
    char json[1024];
    snprintf(json, sizeof json,
             "{\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
             "\"decoder\":{\"type\":\"ByteLevel\"},\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,"
             "\"b\":1,\"c\":2,\"bc\":3,\"abc\":4,\"<unk>\":5},\"merges\":[\"b c\"]%s}}",
             model_extra);
    vlm_bpe *b = vlm_bpe_load_json(json, strlen(json), "tiny");
    CHECK(b, "tiny model %s: %s", model_extra, vlm_last_error());
    return b;
}

static void test_model_options(void) {
    vlm_bpe *b = tiny("");
    if (b) expect_ids(b, "abc", (int32_t[]){0, 3}, 2);
    if (b) expect_ids(b, "azzb", (int32_t[]){0, 1}, 2); /* no symbol, no unk: dropped */
    vlm_bpe_free(b);
    b = tiny(",\"ignore_merges\":true");
    if (b) expect_ids(b, "abc", (int32_t[]){4}, 1);
    vlm_bpe_free(b);
    b = tiny(",\"unk_token\":\"<unk>\"");
    if (b) expect_ids(b, "azzb", (int32_t[]){0, 5, 5, 1}, 4);
    vlm_bpe_free(b);
    b = tiny(",\"unk_token\":\"<unk>\",\"fuse_unk\":true");
    if (b) expect_ids(b, "azzbz", (int32_t[]){0, 5, 1, 5}, 4);
    vlm_bpe_free(b);
}

/* ---- exactness, long inputs, threads --------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Random bytes: uniform, ASCII-heavy, or UTF-8 fragments (often cut short). */
static size_t random_text(uint64_t *rng, char *buf, size_t cap) {
    static const char *const frags[] = {
        "\xC3\xA9",     "\xE2\x82\xAC", "\xF0\x9F\x99\x82", " ", "  ", "\n", "'s",
        "\xE3\x80\x80", "<eos>",        "<a><b>",           "7"};
    size_t n = rng_next(rng) % cap, k = 0;
    int mode = (int)(rng_next(rng) % 3);
    while (k < n) {
        uint64_t r = rng_next(rng);
        if (mode == 0)
            buf[k++] = (char)r;
        else if (mode == 1)
            buf[k++] = r % 3 ? (char)('a' + r % 26) : " .,\t'0"[r % 6];
        else {
            const char *f = frags[r % (sizeof frags / sizeof frags[0])];
            size_t l = strlen(f), cut = (r >> 20) % 5 ? l : (r >> 24) % l; /* 1 in 5 cut */
            for (size_t i = 0; i < cut && k < n; i++)
                buf[k++] = f[i];
            if ((r >> 32) % 4 == 0 && k < n) buf[k++] = (char)(r >> 40);
        }
    }
    return n;
}

static void test_random_roundtrip(void) {
    vlm_bpe *b = vlm_bpe_load(fixture("tokenizer.json"));
    if (!b) return;
    uint64_t rng = 12345;
    char text[400];
    int ok = 0, valid_ids = 1, trials = 3000;
    for (int t = 0; t < trials; t++) {
        size_t len = random_text(&rng, text, sizeof text), out_len;
        int n;
        int32_t *ids = enc(b, text, len, &n);
        for (int i = 0; ids && i < n; i++)
            valid_ids &= ids[i] >= 0 && ids[i] < vlm_bpe_vocab_size(b);
        char *back = ids ? vlm_bpe_decode(b, ids, n, false, &out_len) : NULL;
        ok += back && out_len == len && !memcmp(back, text, len);
        free(ids), free(back);
    }
    CHECK(ok == trials && valid_ids, "decode(encode(s)) == s for %d of %d random byte strings", ok,
          trials);
    /* a 100 000-byte piece (one run of letters): the heap merge, no cache */
    size_t big = 100000;
    char *s = malloc(big);
    for (size_t i = 0; i < big; i++)
        s[i] = "ab"[i % 7 == 0];
    int n;
    size_t len;
    int32_t *ids = enc(b, s, big, &n);
    char *back = ids ? vlm_bpe_decode(b, ids, n, false, &len) : NULL;
    CHECK(back && len == big && !memcmp(back, s, big) && n > 0, "long piece: %d ids", n);
    free(ids), free(back), free(s);
    vlm_bpe_free(b);
}

/* More distinct words than the cache holds: same ids before and after it is emptied. */
static void test_cache_eviction(void) {
    vlm_bpe *b = vlm_bpe_load(fixture("tokenizer.json"));
    if (!b) return;
    size_t cap = 80000 * 8, len = 0;
    char *s = malloc(cap);
    for (int i = 0; i < 80000; i++)
        len += (size_t)snprintf(s + len, cap - len, " %d", i);
    int n1, n2;
    int32_t *a = enc(b, s, len, &n1), *c = enc(b, s, len, &n2);
    CHECK(a && c && n1 == n2 && !memcmp(a, c, (size_t)n1 * sizeof *a),
          "ids stable across evictions");
    free(a), free(c), free(s);
    vlm_bpe_free(b);
}

typedef struct {
    const vlm_bpe *b;
    const cJSON *cases;
    int bad;
} thread_arg;

static void *encode_thread(void *p) {
    thread_arg *t = p;
    for (int rep = 0; rep < 20; rep++) {
        const cJSON *c;
        cJSON_ArrayForEach(c, t->cases) {
            const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
            int32_t *ids;
            int n;
            if (vlm_bpe_encode(t->b, text, strlen(text), &ids, &n)) {
                t->bad++;
                continue;
            }
            t->bad += !same_ids(ids, n, cJSON_GetObjectItem(c, "base"));
            free(ids);
        }
    }
    return NULL;
}

static void test_threads(const cJSON *fx) {
    vlm_bpe *b = vlm_bpe_load(fixture("tokenizer.json"));
    if (!b) return;
    thread_arg args[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (thread_arg){b, cJSON_GetObjectItem(fx, "cases"), 0};
        pthread_create(&th[i], NULL, encode_thread, &args[i]);
    }
    int bad = 0;
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL), bad += args[i].bad;
    CHECK(bad == 0, "3 threads sharing one tokenizer: %d wrong encodings", bad);
    vlm_bpe_free(b);
}

/* ---- the trainer ------------------------------------------------------------------- */

typedef struct {
    char *buf;
    const char **lines;
    size_t *lens;
    size_t n;
} corpus;

static corpus read_corpus(void) {
    corpus c = {0};
    size_t len;
    c.buf = slurp(fixture("corpus.txt"), &len);
    CHECK(c.buf, "corpus.txt missing");
    if (!c.buf) return c;
    c.lines = malloc(len * sizeof *c.lines);
    c.lens = malloc(len * sizeof *c.lens);
    for (char *p = c.buf, *nl; p < c.buf + len; p = nl + 1) {
        nl = memchr(p, '\n', (size_t)(c.buf + len - p));
        if (!nl) nl = c.buf + len;
        c.lines[c.n] = p, c.lens[c.n++] = (size_t)(nl - p);
    }
    return c;
}

static void test_train(const cJSON *fx) {
    corpus c = read_corpus();
    if (!c.buf) return;
    const char *specials[] = {"<pad>", "<bos>", "<eos>"};
    vlm_bpe_train_opts o = {
        .vocab_size = 679, .specials = specials, .n_specials = 3, .min_frequency = 2};
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(fx, "train"), "vocab_size")->valueint == 679,
          "fixture");
    vlm_bpe *b = vlm_bpe_train(c.lines, c.lens, c.n, &o);
    CHECK(b && vlm_bpe_vocab_size(b) == 679, "trained vocab size %d: %s", vlm_bpe_vocab_size(b),
          b ? "" : vlm_last_error());
    if (!b) goto out;
    CHECK(vlm_bpe_token_id(b, "<eos>") == 2 && vlm_bpe_is_special(b, 0) &&
              !strcmp(vlm_bpe_token(b, 3), "!") && vlm_bpe_token_id(b, "\xC4\xA0") >= 3,
          "specials first, then the byte symbols in code point order");
    char path[] = "/tmp/vlm_test_bpe_XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK(vlm_bpe_save(b, path) == 0, "save: %s", vlm_last_error());
    /* the merges equal the Python trainer's, in order */
    cJSON *mine = load_cjson(path), *ref = load_cjson(fixture("tokenizer.json"));
    const cJSON *m1 = cJSON_GetObjectItem(cJSON_GetObjectItem(mine, "model"), "merges");
    const cJSON *m2 = cJSON_GetObjectItem(cJSON_GetObjectItem(ref, "model"), "merges");
    int same = cJSON_GetArraySize(m1) == cJSON_GetArraySize(m2) && cJSON_GetArraySize(m1) == 420;
    for (int i = 0; same && i < cJSON_GetArraySize(m1); i++)
        same =
            !strcmp(cJSON_GetArrayItem(m1, i)->valuestring, cJSON_GetArrayItem(m2, i)->valuestring);
    CHECK(same, "trained merges equal the reference trainer's (%d vs %d)", cJSON_GetArraySize(m1),
          cJSON_GetArraySize(m2));
    cJSON_Delete(mine), cJSON_Delete(ref);
    /* the file loads back and encodes the corpus like the trained object, compressed */
    vlm_bpe *back = vlm_bpe_load(path);
    CHECK(back && vlm_bpe_vocab_size(back) == 679, "reload: %s", back ? "" : vlm_last_error());
    size_t bytes = 0, tokens = 0;
    int diff = 0, rt = 0;
    for (size_t i = 0; back && i < c.n; i++) {
        int n1, n2;
        size_t len;
        int32_t *x = enc(b, c.lines[i], c.lens[i], &n1), *y = enc(back, c.lines[i], c.lens[i], &n2);
        char *s = y ? vlm_bpe_decode(back, y, n2, false, &len) : NULL;
        diff += !x || !y || n1 != n2 || memcmp(x, y, (size_t)n1 * sizeof *x);
        rt += s && len == c.lens[i] && !memcmp(s, c.lines[i], len);
        bytes += c.lens[i], tokens += (size_t)n2;
        free(x), free(y), free(s);
    }
    CHECK(back && diff == 0 && rt == (int)c.n, "reloaded: %d differ, %d/%zu round trips", diff, rt,
          c.n);
    CHECK(tokens * 2 < bytes, "corpus: %zu bytes -> %zu tokens", bytes, tokens);
    /* deterministic: a second run writes the same file */
    vlm_bpe *again = vlm_bpe_train(c.lines, c.lens, c.n, &o);
    char path2[] = "/tmp/vlm_test_bpe_XXXXXX";
    fd = mkstemp(path2);
    close(fd);
    size_t l1 = 0, l2 = 0;
    char *f1 = slurp(path, &l1),
         *f2 = again && !vlm_bpe_save(again, path2) ? slurp(path2, &l2) : NULL;
    CHECK(f1 && f2 && l1 == l2 && !memcmp(f1, f2, l1), "training twice gives the same file");
    free(f1), free(f2), remove(path), remove(path2);
    vlm_bpe_free(again), vlm_bpe_free(back), vlm_bpe_free(b);
out:
    free(c.buf), free(c.lines), free(c.lens);
}

static void test_train_edges(void) {
    const char *texts[] = {"aaaa aaaa", "ab"};
    vlm_bpe_train_opts o = {.vocab_size = 1000};
    vlm_bpe *b = vlm_bpe_train(texts, NULL, 2, &o);
    CHECK(b && vlm_bpe_vocab_size(b) > 256 && vlm_bpe_vocab_size(b) < 1000,
          "a tiny corpus runs out of pairs: %d ids", vlm_bpe_vocab_size(b));
    int n;
    int32_t *ids = b ? enc(b, "aaaa aaaa", 9, &n) : NULL;
    CHECK(ids && n == 2, "'aaaa aaaa' -> 2 tokens (%d)", ids ? n : -1);
    free(ids), vlm_bpe_free(b);
    o.vocab_size = 256;
    const char *sp[] = {"<pad>", "<eos>", "<pad>"}, *byte_sp[] = {"a"};
    o.specials = sp, o.n_specials = 1;
    CHECK(!vlm_bpe_train(texts, NULL, 2, &o) && strstr(vlm_last_error(), "vocab size"),
          "too small: %s", vlm_last_error());
    o.vocab_size = 300, o.n_specials = 3;
    CHECK(!vlm_bpe_train(texts, NULL, 2, &o) && strstr(vlm_last_error(), "twice"),
          "duplicate special: %s", vlm_last_error());
    o.specials = byte_sp, o.n_specials = 1;
    CHECK(!vlm_bpe_train(texts, NULL, 2, &o) && strstr(vlm_last_error(), "byte symbol"),
          "special equal to a byte symbol: %s", vlm_last_error());
}

/* A loaded tokenizer (added-token flags, a Sequence pre-tokenizer) written
 * back and read again encodes every case the same. */
static void test_save_roundtrip(const cJSON *fx) {
    cJSON *tok = load_cjson(fixture("tokenizer_pairs.json"));
    char *pre =
        cJSON_PrintUnformatted(cJSON_GetObjectItem(cJSON_GetObjectItem(fx, "variants"), "digits"));
    vlm_bpe *b = with_pretokenizer(tok, pre);
    char path[] = "/tmp/vlm_test_bpe_save_XXXXXX";
    close(mkstemp(path));
    CHECK(b && vlm_bpe_save(b, path) == 0, "save: %s", vlm_last_error());
    vlm_bpe *back = vlm_bpe_load(path);
    CHECK(back && vlm_bpe_vocab_size(back) == vlm_bpe_vocab_size(b), "reload: %s",
          vlm_last_error());
    if (back)
        CHECK(compare_cases(back, cJSON_GetObjectItem(fx, "cases"), "digits") == 0,
              "saved and reloaded: same ids");
    cJSON *saved = load_cjson(path);
    const cJSON *merges = cJSON_GetObjectItem(cJSON_GetObjectItem(saved, "model"), "merges");
    CHECK(cJSON_IsString(cJSON_GetArrayItem(merges, 0)), "merges written as \"a b\" strings");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(
              cJSON_GetArrayItem(cJSON_GetObjectItem(saved, "added_tokens"), 3), "lstrip")),
          "added-token flags kept");
    CHECK(vlm_bpe_save(b, "/nonexistent/dir/t.json") != 0 &&
              strstr(vlm_last_error(), "/nonexistent/dir/t.json: cannot create"),
          "unwritable path: %s", vlm_last_error());
    cJSON_Delete(saved), cJSON_Delete(tok), free(pre), remove(path);
    vlm_bpe_free(b), vlm_bpe_free(back);
}

/* ---- malformed files ---------------------------------------------------------------- */

static const char *const BASE_JSON =
    "{\"added_tokens\":[{\"id\":3,\"content\":\"<eos>\",\"special\":true}],\"normalizer\":null,"
    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false},"
    "\"decoder\":{\"type\":\"ByteLevel\"},"
    "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}}";

/* BASE_JSON with the value at a dotted path replaced (NULL value = removed). */
static char *edit(const char *path, const char *value) {
    cJSON *root = cJSON_Parse(BASE_JSON), *obj = root;
    char key[128];
    snprintf(key, sizeof key, "%s", path);
    char *dot, *k = key;
    while ((dot = strchr(k, '.')))
        *dot = 0, obj = cJSON_GetObjectItem(obj, k), k = dot + 1;
    cJSON_DeleteItemFromObjectCaseSensitive(obj, k);
    if (value) cJSON_AddItemToObject(obj, k, cJSON_Parse(value));
    char *s = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    return s;
}

static void expect_error(const char *json, const char *want) {
    vlm_bpe *b = vlm_bpe_load_json(json, strlen(json), "bad.json");
    const char *e = vlm_last_error();
    CHECK(!b && !strncmp(e, "bad.json: ", 10) && strstr(e, want), "want '%s', got '%s'", want,
          b ? "(loaded)" : e);
    vlm_bpe_free(b);
}

static void test_errors(void) {
    vlm_bpe *ok = vlm_bpe_load_json(BASE_JSON, strlen(BASE_JSON), "base");
    CHECK(ok, "the base of the error cases loads: %s", vlm_last_error());
    vlm_bpe_free(ok);
    static const struct {
        const char *path, *value, *error;
    } cases[] = {
        {"model", NULL, "model: missing"},
        {"model", "[]", "model: expected an object"},
        {"model.type", "\"WordPiece\"", "model.type: 'WordPiece' is not supported"},
        {"model.vocab", NULL, "model.vocab: missing"},
        {"model.vocab", "[\"a\"]", "model.vocab: expected an object"},
        {"model.vocab", "{\"a\":0,\"b\":-1}", "model.vocab['b']: expected a token id"},
        {"model.vocab", "{\"a\":0,\"b\":\"1\"}", "model.vocab['b']: expected a token id"},
        {"model.vocab", "{\"a\":0,\"b\":0,\"ab\":2}", "is used by both 'a' and 'b'"},
        {"model.vocab", "{\"a\":0,\"b\":1,\"ab\":2,\"a\":3}", "token 'a' appears twice"},
        {"model.vocab", "{\"a\":0,\"b\":1,\"ab\":99999}", "ids reach 99999"},
        {"model.merges", "\"a b\"", "model.merges: expected an array"},
        {"model.merges", "[\"a zz\"]", "model.merges[0]: token 'zz' is not in model.vocab"},
        {"model.merges", "[\"a b\",[\"q\",\"b\"]]",
         "model.merges[1]: token 'q' is not in model.vocab"},
        {"model.merges", "[\"ab\"]", "model.merges[0]: 'ab' is not two tokens"},
        {"model.merges", "[\"a b c\"]", "model.merges[0]: 'a b c' is not two tokens"},
        {"model.merges", "[[1,2]]", "model.merges[0]: expected"},
        {"model.merges", "[\"b a\"]",
         "model.merges[0]: the merged token 'ba' is not in model.vocab"},
        {"model.dropout", "0.1", "model.dropout"},
        {"model.byte_fallback", "true", "model.byte_fallback"},
        {"model.fuse_unk", "\"yes\"", "model.fuse_unk: expected true or false"},
        {"model.unk_token", "\"<unk>\"", "model.unk_token: '<unk>' is not in model.vocab"},
        {"model.continuing_subword_prefix", "\"##\"", "model.continuing_subword_prefix"},
        {"added_tokens", "{}", "added_tokens: expected an array"},
        {"added_tokens", "[{\"id\":3,\"content\":\"\"}]", "added_tokens[0].content"},
        {"added_tokens", "[{\"content\":\"x\"}]", "added_tokens[0].id: expected a token id"},
        {"added_tokens", "[{\"id\":3,\"content\":\"x\",\"single_word\":true}]",
         "added_tokens[0].single_word"},
        {"added_tokens", "[{\"id\":3,\"content\":\"x\"},{\"id\":3,\"content\":\"y\"}]",
         "used by two added tokens"},
        {"added_tokens", "[{\"id\":3,\"content\":\"x\"},{\"id\":4,\"content\":\"x\"}]",
         "content 'x' appears twice"},
        {"normalizer", "{\"type\":\"NFC\"}", "normalizer: type 'NFC' is not supported"},
        {"pre_tokenizer", NULL, "pre_tokenizer: null is not supported"},
        {"pre_tokenizer", "{\"type\":\"Whitespace\"}",
         "pre_tokenizer: type 'Whitespace' is not supported"},
        {"pre_tokenizer", "{\"type\":\"ByteLevel\",\"use_regex\":1}",
         "pre_tokenizer.use_regex: expected true or false"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"ByteLevel\"},"
         "{\"type\":\"Digits\"}]}",
         "pretokenizers[0]: ByteLevel must come last"},
        {"pre_tokenizer", "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Digits\"}]}",
         "no ByteLevel at the end"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Metaspace\"},"
         "{\"type\":\"ByteLevel\"}]}",
         "pretokenizers[0]: type 'Metaspace' is not supported"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
         "{\"Regex\":\"\\\\s+\"},\"behavior\":\"Isolated\",\"invert\":false},"
         "{\"type\":\"ByteLevel\"}]}",
         "pattern.Regex: only the GPT-2 pattern"},
        {"pre_tokenizer",
         "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":"
         "{\"String\":\"-\"},\"behavior\":\"Sideways\"},{\"type\":\"ByteLevel\"}]}",
         "pretokenizers[0].behavior"},
        {"decoder", NULL, "decoder: null is not supported"},
        {"decoder", "{\"type\":\"WordPiece\"}", "decoder: type 'WordPiece' is not supported"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *json = edit(cases[i].path, cases[i].value);
        expect_error(json, cases[i].error);
        free(json);
    }
    expect_error("{\"model\": {\"vocab\": {\"a\": 0}", "not valid JSON (syntax error at line 1");
    expect_error("not json", "not valid JSON");
    expect_error("{\"model\":{}}\n\nx", "trailing characters at line 3, column 1");
    expect_error("[1, 2]", "the top level is not a JSON object");
    expect_error("", "not valid JSON");
    CHECK(!vlm_bpe_load_json(NULL, 0, "x") && !vlm_bpe_load(NULL), "NULL arguments");
    CHECK(!vlm_bpe_load("/nonexistent/tokenizer.json") &&
              strstr(vlm_last_error(), "/nonexistent/tokenizer.json: cannot open"),
          "missing file: %s", vlm_last_error());
}

/* ---- the command line ----------------------------------------------------------------- */

/* Runs "vlm ARGS > out 2> err"; returns the exit status, the outputs in buffers. */
static int run_vlm(const char *args, char **out, char **err) {
    const char *bin = getenv("VLM_BINARY");
    char o[] = "/tmp/vlm_test_bpe_out_XXXXXX", e[] = "/tmp/vlm_test_bpe_err_XXXXXX", cmd[8192];
    close(mkstemp(o)), close(mkstemp(e));
    snprintf(cmd, sizeof cmd, "'%s' %s > %s 2> %s", bin, args, o, e);
    int st = system(cmd);
    size_t len;
    *out = slurp(o, &len), *err = slurp(e, &len);
    remove(o), remove(e);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* `tokenizer train --dataset`: trains on a prepared dataset's captions, and
 * the result encodes those captions; bad datasets are errors. */
static void test_cli_dataset(void) {
    if (!getenv("VLM_BINARY")) return;
    char dir[] = "/tmp/vlm_test_bpe_ds_XXXXXX", args[8192], *out, *err;
    if (!mkdtemp(dir)) return;
    snprintf(args, sizeof args, "prepare shapes --count 40 --quiet -o %s/s.h5", dir);
    int rc = run_vlm(args, &out, &err);
    CHECK(rc == 0, "prepare shapes: rc %d: %s", rc, err);
    free(out), free(err);
    snprintf(args, sizeof args, "tokenizer train --dataset %s/s.h5 --vocab-size 300 -o %s/t.json",
             dir, dir);
    rc = run_vlm(args, &out, &err);
    CHECK(rc == 0 && out && strstr(out, "from 40 texts"), "train --dataset: rc %d: %s %s", rc, out,
          err);
    free(out), free(err);
    char path[600];
    snprintf(path, sizeof path, "%s/t.json", dir);
    vlm_bpe *b = vlm_bpe_load(path);
    CHECK(b && vlm_bpe_vocab_size(b) > 259, "trained tokenizer loads: %s", vlm_last_error());
    int n = 0;
    const char *cap = "a small red circle left of a large blue square";
    int32_t *ids = b ? enc(b, cap, strlen(cap), &n) : NULL;
    CHECK(ids && n > 0 && (size_t)n < strlen(cap) / 2, "captions compress: %d ids", n);
    free(ids);
    vlm_bpe_free(b);
    snprintf(args, sizeof args, "tokenizer train --dataset %s/none.h5 --vocab-size 300 -o %s/u.json",
             dir, dir);
    rc = run_vlm(args, &out, &err);
    CHECK(rc == 1 && err && strstr(err, "none.h5"), "missing dataset: rc %d: %s", rc, err);
    free(out), free(err);
    snprintf(args, sizeof args, "tokenizer train --input %s/t.json --dataset %s/s.h5 "
             "--vocab-size 300 -o %s/v.json", dir, dir, dir);
    rc = run_vlm(args, &out, &err);
    CHECK(rc == 2, "--input with --dataset is bad usage: rc %d", rc);
    free(out), free(err);
    snprintf(args, sizeof args, "rm -rf %s", dir);
    CHECK(system(args) == 0, "cleanup");
}

static void test_cli(void) {
    if (!getenv("VLM_BINARY")) {
        printf("VLM_BINARY not set: CLI checks skipped\n");
        return;
    }
    const char *tok = fixture("tokenizer.json");
    char args[8192], *out, *err;
    vlm_bpe *b = vlm_bpe_load(tok);
    if (!b) return;
    const char *text = "<bos>Hello world, 123  x caf\xC3\xA9<eos>";
    int n;
    int32_t *ids = enc(b, text, strlen(text), &n);
    char want[4096] = "";
    for (int i = 0; ids && i < n; i++)
        snprintf(want + strlen(want), sizeof want - strlen(want), i ? " %d" : "%d", ids[i]);
    strcat(want, "\n");
    snprintf(args, sizeof args, "tokenizer encode --tokenizer '%s' '%s'", tok, text);
    int rc = run_vlm(args, &out, &err);
    CHECK(rc == 0 && out && !strcmp(out, want), "cli encode: rc %d, '%s' vs '%s'", rc, out, want);
    free(out), free(err);
    snprintf(args, sizeof args, "tokenizer decode --tokenizer=%s %s", tok, want);
    args[strlen(args) - 1] = 0; /* the newline */
    rc = run_vlm(args, &out, &err);
    char want_text[512];
    snprintf(want_text, sizeof want_text, "%s\n", text);
    CHECK(rc == 0 && out && !strcmp(out, want_text), "cli decode: rc %d, '%s'", rc, out);
    free(out), free(err), free(ids);
    static const struct {
        const char *args, *err;
        int rc;
    } bad[] = {
        {"tokenizer", "missing SUBCOMMAND", 2},
        {"tokenizer frobnicate", "unknown subcommand 'frobnicate'", 2},
        {"tokenizer encode hello", "missing --tokenizer", 2},
        {"tokenizer encode --tokenizer", "--tokenizer needs a value", 2},
        {"tokenizer encode --frob --tokenizer x hello", "unknown option '--frob'", 2},
        {"tokenizer encode --tokenizer /nonexistent.json hi", "/nonexistent.json: cannot open", 1},
        {"tokenizer decode --tokenizer TOK 1 x2", "not a token id: 'x2'", 2},
        {"tokenizer decode --tokenizer TOK 999999", "id 999999 (position 0) is not a token", 1},
        {"tokenizer train --vocab-size 300 -o /tmp/x.json", "give one of --input FILE or --dataset", 2},
        {"tokenizer train --input x --vocab-size 12 -o /tmp/x.json", "--vocab-size must be", 2},
        {"tokenizer train --input /nonexistent.txt --vocab-size 300 -o /tmp/x.json", "cannot open",
         1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *t = strstr(bad[i].args, "TOK");
        if (t)
            snprintf(args, sizeof args, "%.*s'%s'%s", (int)(t - bad[i].args), bad[i].args, tok,
                     t + 3);
        else
            snprintf(args, sizeof args, "%s", bad[i].args);
        rc = run_vlm(args, &out, &err);
        CHECK(rc == bad[i].rc && err && strstr(err, "error: ") && strstr(err, bad[i].err),
              "'%s': rc %d, stderr '%s'", bad[i].args, rc, err ? err : "");
        free(out), free(err);
    }
    static const char *const helps[] = {"train", "encode", "decode"};
    for (int i = 0; i < 3; i++) {
        snprintf(args, sizeof args, "tokenizer %s --help", helps[i]);
        rc = run_vlm(args, &out, &err);
        CHECK(rc == 0 && out && strstr(out, "usage: vlm tokenizer") && strstr(out, "example"),
              "%s --help", helps[i]);
        free(out), free(err);
    }
    /* train from a file, then use the result */
    char out_json[] = "/tmp/vlm_test_bpe_cli_XXXXXX";
    close(mkstemp(out_json));
    snprintf(args, sizeof args,
             "tokenizer train --input '%s' --vocab-size 400 --special '<s>,</s>' -o %s",
             fixture("corpus.txt"), out_json);
    rc = run_vlm(args, &out, &err);
    CHECK(rc == 0 && out && strstr(out, "400 ids (2 special"), "cli train: rc %d, '%s' '%s'", rc,
          out, err);
    free(out), free(err);
    vlm_bpe *t = vlm_bpe_load(out_json);
    CHECK(t && vlm_bpe_vocab_size(t) == 400 && vlm_bpe_token_id(t, "</s>") == 1,
          "trained by the CLI");
    vlm_bpe_free(t), vlm_bpe_free(b);
    remove(out_json);
}

int main(void) {
    cJSON *fx = load_cjson(fixture("cases.json"));
    CHECK(fx, "cases.json missing (VLM_SOURCE_DIR=%s)", getenv("VLM_SOURCE_DIR"));
    if (!fx) return TEST_DONE();
    test_unicode();
    test_split();
    test_parity("tokenizer.json", fx);
    test_parity("tokenizer_pairs.json", fx);
    test_added();
    test_split_behaviours();
    test_model_options();
    test_random_roundtrip();
    test_cache_eviction();
    test_threads(fx);
    test_train(fx);
    test_train_edges();
    test_save_roundtrip(fx);
    test_errors();
    test_cli();
    test_cli_dataset();
    cJSON_Delete(fx);
    return TEST_DONE();
}
