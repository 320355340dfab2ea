/* test_spm.c - SentencePiece models: id-for-id parity with the sentencepiece
 * library (fixtures from scripts/gen_spm_fixtures.py), decoding, special ids,
 * SigLIP canonicalisation and tokenisation, and malformed model files. */
#include "data.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char fixdir[1024];

/* ---- fixture files ------------------------------------------------------------ */

static char *read_all(const char *path, size_t *size) {
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
    if (buf) buf[n] = '\0';
    if (size) *size = (size_t)n;
    return buf;
}

/* Splits buf into lines in place (the '\n's become NULs). */
static int split_lines(char *buf, char ***lines) {
    int n = 0, cap = 1024;
    *lines = malloc((size_t)cap * sizeof **lines);
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        if (nl) *nl = '\0';
        if (n == cap) *lines = realloc(*lines, (size_t)(cap *= 2) * sizeof **lines);
        (*lines)[n++] = p;
        if (!nl) break;
        p = nl + 1;
    }
    return n;
}

/* The fixtures' escapes: \\ \t \n \r \xHH. In place. */
static char *unescape(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p != '\\') {
            *o++ = *p;
            continue;
        }
        p++;
        if (*p == 't') *o++ = '\t';
        else if (*p == 'n') *o++ = '\n';
        else if (*p == 'r') *o++ = '\r';
        else if (*p == 'x') {
            char hex[3] = {p[1], p[2], 0};
            *o++ = (char)strtol(hex, NULL, 16);
            p += 2;
        } else *o++ = *p;
    }
    *o = '\0';
    return s;
}

static int parse_ids(const char *s, int32_t *ids, int cap) {
    int n = 0;
    for (char *end; *s && *s != '\t' && n < cap; s = end) {
        ids[n++] = (int32_t)strtol(s, &end, 10);
        if (end == s) break;
        while (*end == ' ') end++;
    }
    return n;
}

static vlm_spm *load_fixture(const char *name) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.model", fixdir, name);
    vlm_spm *s = vlm_spm_load(path);
    CHECK(s != NULL, "loading %s: %s", path, vlm_last_error());
    return s;
}

static bool same_ids(const int32_t *a, int na, const int32_t *b, int nb) {
    return na == nb && (na == 0 || !memcmp(a, b, (size_t)na * sizeof *a));
}

static void print_ids(const char *what, const int32_t *ids, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* ---- parity: every sentence, ids and decode ------------------------------------ */

static void test_parity(const char *name, char **sentences, int n_sentences) {
    vlm_spm *s = load_fixture(name);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.tsv", fixdir, name);
    char *buf = read_all(path, NULL);
    CHECK(buf != NULL, "cannot read %s", path);
    if (!s || !buf) {
        vlm_spm_free(s);
        free(buf);
        return;
    }
    char **lines;
    int n = split_lines(buf, &lines), id_bad = 0, dec_bad = 0, total_ids = 0;
    CHECK(n <= n_sentences && n >= 300, "%s: %d lines for %d sentences", path, n, n_sentences);
    static int32_t want[8192];
    for (int i = 0; i < n && i < n_sentences; i++) {
        int nw = parse_ids(lines[i], want, 8192);
        char *tab = strchr(lines[i], '\t');
        const char *want_text = !tab ? "" : strcmp(tab + 1, "=") ? unescape(tab + 1) : sentences[i];
        int32_t *ids = NULL;
        int ni = -1;
        int rc = vlm_spm_encode(s, sentences[i], &ids, &ni);
        total_ids += nw;
        if (rc != 0 || !same_ids(ids, ni, want, nw)) {
            if (id_bad++ < 5) {
                fprintf(stderr, "  %s: sentence %d ids differ: \"%s\" (%s)\n", name, i, sentences[i],
                        rc ? vlm_last_error() : "");
                print_ids("got ", ids, ni);
                print_ids("want", want, nw);
            }
        }
        char *text = vlm_spm_decode(s, want, nw);
        if (!text || strcmp(text, want_text)) {
            if (dec_bad++ < 5)
                fprintf(stderr, "  %s: sentence %d decode: got \"%s\", want \"%s\"\n", name, i,
                        text ? text : vlm_last_error(), want_text);
        }
        free(text);
        free(ids);
    }
    printf("%-8s %4d sentences, %6d ids: %d id mismatches, %d decode mismatches\n", name, n,
           total_ids, id_bad, dec_bad);
    CHECK(id_bad == 0, "%s: %d of %d sentences encode differently from sentencepiece", name, id_bad, n);
    CHECK(dec_bad == 0, "%s: %d of %d decodes differ from sentencepiece", name, dec_bad, n);
    free(lines);
    free(buf);
    vlm_spm_free(s);
}

/* Random id sequences (control, unk, byte runs) decoded by sentencepiece. */
static void test_decode_fixture(const char *name) {
    vlm_spm *s = load_fixture(name);
    char path[1200];
    snprintf(path, sizeof path, "%s/%s.decode.tsv", fixdir, name);
    char *buf = read_all(path, NULL);
    CHECK(buf != NULL, "cannot read %s", path);
    if (s && buf) {
        char **lines;
        int n = split_lines(buf, &lines), bad = 0;
        int32_t ids[64];
        for (int i = 0; i < n; i++) {
            int k = parse_ids(lines[i], ids, 64);
            char *tab = strchr(lines[i], '\t');
            const char *want = tab ? unescape(tab + 1) : "";
            char *got = vlm_spm_decode(s, ids, k);
            if ((!got || strcmp(got, want)) && bad++ < 5)
                fprintf(stderr, "  %s: decode line %d: got \"%s\", want \"%s\"\n", name, i,
                        got ? got : vlm_last_error(), want);
            free(got);
        }
        CHECK(n >= 40 && bad == 0, "%s: %d of %d random id sequences decode differently", name, bad, n);
        free(lines);
    }
    free(buf);
    vlm_spm_free(s);
}

/* ---- special ids, accessors, edge cases ------------------------------------------ */

static void test_specials(void) {
    vlm_spm *u = load_fixture("unigram"), *b = load_fixture("bpe");
    if (!u || !b) goto done;
    /* unigram.model uses T5's / SigLIP's layout: pad 0, eos 1, unk 2, no bos. */
    CHECK(vlm_spm_model_type(u) == VLM_SPM_UNIGRAM && vlm_spm_size(u) == 1000, "unigram: type/size");
    CHECK(vlm_spm_pad_id(u) == 0 && vlm_spm_eos_id(u) == 1 && vlm_spm_unk_id(u) == 2 &&
              vlm_spm_bos_id(u) == -1, "unigram specials %d %d %d %d", vlm_spm_pad_id(u),
          vlm_spm_eos_id(u), vlm_spm_unk_id(u), vlm_spm_bos_id(u));
    CHECK(!strcmp(vlm_spm_piece(u, 1), "</s>") && vlm_spm_type_of(u, 1) == VLM_SPM_CONTROL, "eos piece");
    int mask = vlm_spm_piece_to_id(u, "[MASK]");
    CHECK(mask > 2 && vlm_spm_type_of(u, mask) == VLM_SPM_USER_DEFINED, "[MASK] id %d", mask);
    CHECK(vlm_spm_piece_to_id(u, "no such piece") == 2, "absent piece -> unk");
    CHECK(vlm_spm_piece(u, -1) == NULL && vlm_spm_piece(u, 1000) == NULL && vlm_spm_type_of(u, 1000) == 0,
          "out-of-range accessors");
    CHECK(vlm_spm_score(u, 1) == 0.0f && vlm_spm_score(u, 10) < 0.0f, "scores");
    CHECK(vlm_spm_model_type(b) == VLM_SPM_BPE && vlm_spm_bos_id(b) == 1 && vlm_spm_eos_id(b) == 2 &&
              vlm_spm_pad_id(b) == -1 && vlm_spm_unk_id(b) == 0, "bpe specials");
    int byte_a = vlm_spm_piece_to_id(b, "<0x41>");
    CHECK(byte_a > 0 && vlm_spm_type_of(b, byte_a) == VLM_SPM_BYTE, "byte piece id %d", byte_a);

    int32_t *ids = NULL;
    int n = -1;
    CHECK(vlm_spm_encode(u, "", &ids, &n) == 0 && n == 0 && ids, "empty text -> no ids");
    free(ids);
    CHECK(vlm_spm_encode(u, " \t \n ", &ids, &n) == 0 && n == 0, "blank text -> no ids");
    free(ids);
    CHECK(vlm_spm_encode(u, NULL, &ids, &n) == -1 && ids == NULL && n == 0, "NULL text is an error");
    char *t = vlm_spm_decode(u, NULL, 0);
    CHECK(t && !strcmp(t, ""), "decode of nothing");
    free(t);
    int32_t bad[] = {5, 1000};
    CHECK(vlm_spm_decode(u, bad, 2) == NULL && strstr(vlm_last_error(), "1000"),
          "out-of-range id: %s", vlm_last_error());
    int32_t neg[] = {-1};
    CHECK(vlm_spm_decode(u, neg, 1) == NULL, "negative id");
done:
    vlm_spm_free(u);
    vlm_spm_free(b);
}

/* ---- SigLIP ---------------------------------------------------------------------------- */

static void test_canonicalize(void) {
    static const char *cases[][2] = {
        {"a photo of 2 cats", "a photo of 2 cats"},
        {"A Photo of 2 Dogs.", "a photo of 2 dogs"},
        {"  Hello,   World!  ", "hello world"},
        {"", ""},
        {"!!!...", ""},
        {" \t\n ", ""},
        {"It's a \"test\" -- (really)?", "its a test really"},
        {"snake_case/kebab-case", "snake casekebabcase"}, /* big_vision: "_" is a space */
        {"golden_retriever", "golden retriever"},
        {"a - b", "a b"}, /* punctuation goes first, then the spaces collapse */
        {"CAFÉ Ünïcödé ÀÉÎÕÜ", "café ünïcödé àéîõü"},
        {"ΑΘΗΝΑ Москва", "αθηνα москва"},
        {"İstanbul", "i\xcc\x87stanbul"},
        {"ＦＵＬＬ ｗｉｄｔｈ！", "ｆｕｌｌ ｗｉｄｔｈ！"}, /* only ASCII punctuation is removed */
        {"tab\there\u00a0nbsp\u3000ideographic\u2028line", "tab here nbsp ideographic line"},
        {"東京 タワー。", "東京 タワー。"},
        {"price: $9.99 (50% off)", "price 999 50 off"},
        {"caf\xff\xfe", "caf\xff\xfe"}, /* bytes that are not UTF-8 pass through */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = vlm_siglip_canonicalize(cases[i][0]);
        CHECK(got && !strcmp(got, cases[i][1]), "canonicalize(\"%s\") = \"%s\", want \"%s\"", cases[i][0],
              got ? got : vlm_last_error(), cases[i][1]);
        free(got);
    }
    CHECK(vlm_siglip_canonicalize(NULL) == NULL, "NULL text");
}

static void test_siglip_tokenize(void) {
    vlm_spm *s = load_fixture("unigram");
    char path[1200];
    snprintf(path, sizeof path, "%s/siglip.tsv", fixdir);
    char *buf = read_all(path, NULL);
    CHECK(buf != NULL, "cannot read %s", path);
    if (!s || !buf) goto done;
    char **lines;
    int n = split_lines(buf, &lines), bad = 0;
    for (int i = 0; i < n; i++) {
        char *tab1 = strchr(lines[i], '\t'), *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        if (!tab2) continue;
        *tab1 = '\0';
        int ctx = atoi(tab1 + 1);
        int32_t want[64], got[64];
        int nw = parse_ids(tab2 + 1, want, 64);
        int k = vlm_siglip_tokenize(s, unescape(lines[i]), ctx, got);
        int real = 0; /* encode never yields the control id 1, so the first 1 is the EOS */
        while (real < nw && want[real] != 1) real++;
        if ((nw != ctx || k != real + 1 || !same_ids(got, ctx, want, nw)) && bad++ < 5) {
            fprintf(stderr, "  siglip \"%s\" ctx %d -> %d\n", lines[i], ctx, k);
            print_ids("got ", got, ctx);
            print_ids("want", want, nw);
        }
    }
    CHECK(n >= 30 && bad == 0, "siglip: %d of %d texts tokenised differently", bad, n);
    free(lines);
    int32_t out[64];
    CHECK(vlm_siglip_tokenize(s, "A photo of 2 cats.", 0, out) > 1 && out[63] == 1, "ctx_len 0 = 64");
    CHECK(vlm_siglip_tokenize(s, "", 4, out) == 1 && out[0] == 1 && out[3] == 1, "empty text -> EOS + pad");
    CHECK(vlm_siglip_tokenize(s, "a photo", 1, out) == 1 && out[0] == 1, "ctx_len 1 keeps only EOS");
    CHECK(vlm_siglip_tokenize(s, "x", -3, out) == -1 && strstr(vlm_last_error(), "-3"), "negative ctx_len");
done:
    free(buf);
    vlm_spm_free(s);
}

/* ---- malformed files ----------------------------------------------------------------- */

/* A tiny protobuf writer for hand-made models. */
typedef struct {
    uint8_t b[4096];
    size_t n;
} pbw;

static void w_varint(pbw *w, uint64_t v) {
    do {
        w->b[w->n++] = (uint8_t)((v & 0x7F) | (v > 0x7F ? 0x80 : 0));
        v >>= 7;
    } while (v);
}
static void w_key(pbw *w, int field, int wt) { w_varint(w, (uint64_t)field << 3 | (uint64_t)wt); }
static void w_bytes(pbw *w, int field, const void *p, size_t n) {
    w_key(w, field, 2);
    w_varint(w, n);
    memcpy(w->b + w->n, p, n);
    w->n += n;
}
static void w_piece(pbw *w, const char *piece, float score, int type) {
    pbw sub = {{0}, 0};
    w_bytes(&sub, 1, piece, strlen(piece));
    w_key(&sub, 2, 5);
    memcpy(sub.b + sub.n, &score, 4);
    sub.n += 4;
    w_key(&sub, 3, 0);
    w_varint(&sub, (uint64_t)type);
    w_bytes(w, 1, sub.b, sub.n);
}
static void w_model_type(pbw *w, int type, int byte_fallback) {
    pbw sub = {{0}, 0};
    w_key(&sub, 3, 0);
    w_varint(&sub, (uint64_t)type);
    w_key(&sub, 35, 0);
    w_varint(&sub, (uint64_t)byte_fallback);
    w_key(&sub, 42, 0); /* eos_id -1: negative int32 on 10 bytes */
    w_varint(&sub, (uint64_t)(int64_t)-1);
    w_bytes(w, 2, sub.b, sub.n);
}

/* A valid little Unigram model: <unk>, </s>, ▁a, a, b, ▁ab, user "<x>". */
static void minimal_model(pbw *w) {
    w->n = 0;
    w_piece(w, "<unk>", 0, 2);
    w_piece(w, "</s>", 0, 3);
    w_piece(w, "\xe2\x96\x81" "a", -1, 1);
    w_piece(w, "a", -2, 1);
    w_piece(w, "b", -2, 1);
    w_piece(w, "\xe2\x96\x81" "ab", -1.5f, 1);
    w_piece(w, "\xe2\x96\x81", -3, 1);
    w_piece(w, "<x>", 0, 4);
    w_model_type(w, 1, 0);
}

static char tmpdir[64];

/* Writes bytes to tmpdir/name, loads it; expects failure with an error that
 * names the file and contains `want`. */
static void expect_bad(const char *name, const void *data, size_t n, const char *want) {
    char path[256];
    snprintf(path, sizeof path, "%s/%s", tmpdir, name);
    FILE *f = fopen(path, "wb");
    if (f) {
        fwrite(data, 1, n, f);
        fclose(f);
    }
    vlm_clear_error();
    vlm_spm *s = vlm_spm_load(path);
    const char *e = vlm_last_error();
    CHECK(s == NULL && strstr(e, path) && strstr(e, want), "%s: got %s \"%s\", want an error with \"%s\"",
          name, s ? "a model" : "error", e, want);
    if (s == NULL) printf("  %-18s -> %s\n", name, e);
    vlm_spm_free(s);
    remove(path);
}

static void test_minimal_model(void) {
    pbw w;
    minimal_model(&w);
    vlm_spm *s = vlm_spm_load_buffer(w.b, w.n, "minimal");
    CHECK(s != NULL, "minimal model: %s", vlm_last_error());
    if (!s) return;
    int32_t *ids = NULL;
    int n = 0;
    /* "▁ab" (-1.5) beats "▁a" + "b" (-3); "c" is unknown; a run of unknowns is one unk;
     * "<x>" is user-defined and taken whole. */
    CHECK(vlm_spm_encode(s, "ab ccc a<x>b", &ids, &n) == 0, "encode: %s", vlm_last_error());
    int32_t want[] = {5, 6, 0, 2, 7, 4};
    CHECK(same_ids(ids, n, want, 6), "minimal encode");
    if (!same_ids(ids, n, want, 6)) print_ids("got", ids, n);
    char *t = vlm_spm_decode(s, ids, n);
    CHECK(t && !strcmp(t, "ab  \xe2\x81\x87  a<x>b"), "minimal decode \"%s\"", t ? t : "");
    free(t);
    free(ids);
    CHECK(vlm_spm_eos_id(s) == 1 && vlm_spm_bos_id(s) == -1 && vlm_spm_pad_id(s) == -1, "minimal specials");
    vlm_spm_free(s);
    /* Ties and the user-defined bonus, checked against sentencepiece 0.1.97:
     * "▁c" (-5) and "▁" (10) + unk (min -5 - 10) tie at -5: the first found
     * stays, so [2]. A user-defined piece scores bytes * max_score - 0.1:
     * "<x>" = 2.9 loses to "<" "x" ">" = 3 when max_score is 1, and wins when
     * "<" scores 1.2 (3.5 > 3.2). */
    static const struct {
        const char *pieces[6];
        float scores[6];
        int types[6];
        const char *text;
        int32_t want[4];
        int n_want;
    } cases[] = {
        {{"<unk>", "\xe2\x96\x81", "\xe2\x96\x81" "c"}, {0, 10, -5}, {2, 1, 1}, "c", {2}, 1},
        {{"<unk>", "\xe2\x96\x81", "<", "x", ">", "<x>"}, {0, 1, 1, 1, 1, 0}, {2, 1, 1, 1, 1, 4}, "<x>", {1, 2, 3, 4}, 4},
        {{"<unk>", "\xe2\x96\x81", "<", "x", ">", "<x>"}, {0, 1, 1.2f, 1, 1, 0}, {2, 1, 1, 1, 1, 4}, "<x>", {1, 5}, 2},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        w.n = 0;
        for (int i = 0; i < 6 && cases[c].pieces[i]; i++) w_piece(&w, cases[c].pieces[i], cases[c].scores[i], cases[c].types[i]);
        s = vlm_spm_load_buffer(w.b, w.n, "case");
        ids = NULL;
        CHECK(s && vlm_spm_encode(s, cases[c].text, &ids, &n) == 0 && same_ids(ids, n, cases[c].want, cases[c].n_want),
              "hand-made case %zu: %s", c, vlm_last_error());
        free(ids);
        vlm_spm_free(s);
    }
    w.n = 0; /* no "</s>": SigLIP tokenisation has no EOS to append */
    w_piece(&w, "<unk>", 0, 2);
    w_piece(&w, "a", -1, 1);
    s = vlm_spm_load_buffer(w.b, w.n, "no-eos");
    int32_t out[8];
    CHECK(s && vlm_siglip_tokenize(s, "a", 8, out) == -1 && strstr(vlm_last_error(), "no EOS"),
          "no EOS: %s", vlm_last_error());
    vlm_spm_free(s);
}

static void test_malformed(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlm_spm_XXXXXX");
    CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp");
    pbw good;
    minimal_model(&good);

    expect_bad("empty.model", "", 0, "empty file");
    uint8_t trunc[4096];
    memcpy(trunc, good.b, good.n);
    expect_bad("truncated.model", trunc, good.n - 3, "runs past the end");
    expect_bad("truncated_key.model", "\x0a\x05\x0a\x03<un\x80", 8, "truncated varint");
    uint8_t varint[16] = {0x0A};
    memset(varint + 1, 0xFF, 11);
    expect_bad("bad_varint.model", varint, 12, "bad varint");
    expect_bad("overflow.model", "\x30\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11, "overflows");
    expect_bad("wrong_wire.model", "\x08\x01", 2,
               "wire type varint, expected length-delimited in ModelProto.pieces[0]");
    /* pieces[0].score sent as a varint */
    expect_bad("wrong_wire_score.model", "\x0a\x05\x0a\x01" "a" "\x10\x01", 7,
               "wire type varint, expected 32-bit in pieces[0].score");
    expect_bad("truncated_type.model", "\x0a\x04\x0a\x01" "a" "\x18", 6, "truncated varint in pieces[0].type");
    expect_bad("length.model", "\x0a\x64\x0a\x01" "a", 5, "length 100 runs past the end");
    expect_bad("group.model", "\x0b\x0c", 2, "unsupported wire type group start");
    expect_bad("field0.model", "\x02\x00", 2, "bad field number 0");
    expect_bad("fixed32.model", "\x0a\x06\x0a\x01" "a" "\x15\x01\x02", 8, "truncated 4-byte value");
    expect_bad("no_pieces.model", "\x12\x02\x18\x01", 4, "no pieces");

    pbw w = {{0}, 0};
    w_piece(&w, "a", 0, 1);
    w_model_type(&w, 1, 0);
    expect_bad("no_unk.model", w.b, w.n, "no unknown piece");
    minimal_model(&w);
    w_piece(&w, "a", -5, 1);
    expect_bad("duplicate.model", w.b, w.n, "\"a\" is defined twice");
    minimal_model(&w);
    w_piece(&w, "", -5, 1);
    expect_bad("empty_piece.model", w.b, w.n, "piece 8 is empty");
    minimal_model(&w);
    w_piece(&w, "q", -5, 9);
    expect_bad("bad_type.model", w.b, w.n, "invalid type 9");
    minimal_model(&w);
    w_piece(&w, "<0x41>", 0, 6);
    expect_bad("byte_no_fallback.model", w.b, w.n, "byte_fallback is off");
    w.n = 0;
    w_piece(&w, "<unk>", 0, 2);
    w_piece(&w, "<0x41>", 0, 6);
    w_model_type(&w, 1, 1);
    expect_bad("missing_bytes.model", w.b, w.n, "<0x00> is missing");
    minimal_model(&w);
    w_model_type(&w, 7, 0);
    expect_bad("model_type.model", w.b, w.n, "model_type 7");
    minimal_model(&w);
    w_bytes(&w, 3, "\x12\x05\xff\x00\x00\x00\x00", 7); /* normalizer_spec.precompiled_charsmap */
    expect_bad("charsmap.model", w.b, w.n, "precompiled_charsmap is broken");

    CHECK(vlm_spm_load("/nonexistent/spiece.model") == NULL &&
              strstr(vlm_last_error(), "/nonexistent/spiece.model"), "missing file: %s", vlm_last_error());
    CHECK(vlm_spm_load(tmpdir) == NULL && strstr(vlm_last_error(), "directory"), "directory: %s", vlm_last_error());
    CHECK(vlm_spm_load_buffer(NULL, 5, "nothing") == NULL && strstr(vlm_last_error(), "nothing"), "NULL buffer");
    rmdir(tmpdir);
}

/* Every prefix of a real model, and random byte flips: an error or a model
 * that encodes without crashing, never a crash (run under ASan). */
static void test_fuzz(void) {
    char path[1200];
    size_t n;
    snprintf(path, sizeof path, "%s/bpe.model", fixdir);
    uint8_t *orig = (uint8_t *)read_all(path, &n);
    snprintf(path, sizeof path, "%s/unigram.model", fixdir);
    size_t nu;
    uint8_t *uni = (uint8_t *)read_all(path, &nu);
    CHECK(orig && uni, "fixtures");
    if (!orig || !uni) return;
    int loaded = 0, failed = 0;
    for (size_t k = 0; k < n; k += k < 3000 ? 1 : 97) {
        vlm_spm *s = vlm_spm_load_buffer(orig, k, "prefix");
        if (s) {
            loaded++;
        } else {
            failed++;
            CHECK(strstr(vlm_last_error(), "prefix"), "error names the buffer: %s", vlm_last_error());
        }
        vlm_spm_free(s);
    }
    CHECK(failed > 0, "truncations fail");
    uint8_t *buf = malloc(nu);
    uint64_t rng = 12345;
    int encoded = 0;
    for (int trial = 0; trial < 300; trial++) {
        const bool charsmap = trial % 2; /* half the flips land in unigram.model's charsmap */
        const uint8_t *src = charsmap ? uni : orig;
        size_t size = charsmap ? nu : n;
        memcpy(buf, src, size);
        for (int f = 0; f < 1 + trial % 8; f++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            size_t at = charsmap ? (size_t)(rng >> 33) % (nu - 20000) + 10000 : (size_t)(rng >> 33) % size;
            buf[at] ^= (uint8_t)(1u << ((rng >> 20) & 7));
        }
        vlm_spm *s = vlm_spm_load_buffer(buf, size, "flipped");
        if (s) {
            int32_t *ids = NULL;
            int k = 0;
            if (vlm_spm_encode(s, "Hello wörld, ＡＢＣ ① 東京 ﬁne\t 123", &ids, &k) == 0) {
                char *t = vlm_spm_decode(s, ids, k);
                free(t);
                encoded++;
            }
            free(ids);
        }
        vlm_spm_free(s);
    }
    printf("fuzz: %d of %d prefixes loaded; %d of 300 flipped models loaded and encoded\n", loaded,
           loaded + failed, encoded);
    free(buf);
    free(orig);
    free(uni);
}

/* Encoding speed on the parity sentences (informational). */
static void bench(char **sentences, int n) {
    vlm_spm *s = load_fixture("unigram");
    if (!s) return;
    struct timespec a, b;
    size_t bytes = 0, ids_total = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int rep = 0; rep < 3; rep++)
        for (int i = 0; i < n; i++) {
            int32_t *ids;
            int k;
            if (vlm_spm_encode(s, sentences[i], &ids, &k) == 0) free(ids), ids_total += (size_t)k;
            bytes += strlen(sentences[i]);
        }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double sec = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    printf("unigram encode: %.0f sentences/s, %.1f MB/s\n", 3 * n / sec, (double)bytes / sec / 1e6);
    vlm_spm_free(s);
}

int main(void) {
    const char *src = getenv("VLM_SOURCE_DIR");
    snprintf(fixdir, sizeof fixdir, "%s/tests/data/fixtures/spm", src ? src : ".");
    char path[1200];
    snprintf(path, sizeof path, "%s/sentences.txt", fixdir);
    char *buf = read_all(path, NULL);
    CHECK(buf != NULL, "cannot read %s (set VLM_SOURCE_DIR)", path);
    if (!buf) return TEST_DONE();
    char **sentences;
    int n = split_lines(buf, &sentences);
    for (int i = 0; i < n; i++) unescape(sentences[i]);

    const char *models[] = {"unigram", "bpe", "small", "char", "word"};
    for (int i = 0; i < 5; i++) {
        test_parity(models[i], sentences, n);
        test_decode_fixture(models[i]);
    }
    test_specials();
    test_canonicalize();
    test_siglip_tokenize();
    test_minimal_model();
    test_malformed();
    test_fuzz();
    bench(sentences, n);
    free(sentences);
    free(buf);
    return TEST_DONE();
}
