/* test_safetensors.c - the safetensors reader's rules (one malformed file per
 * rule, each with its own message), the writer (alignment, metadata, order,
 * crash-safe saving), loading into a parameter store (prefix, strip, missing,
 * unexpected, shape mismatch), BF16/F16 conversion, a fixture written the
 * way Hugging Face writes files, and the `vlm inspect` command. */
#define _GNU_SOURCE
#include "nn.h"
#include "test.h"

#include <errno.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char tmpdir[256];

static const char *tmp_path(const char *name) {
    static char buf[4][512];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

/* Whole file into a malloc'd buffer (NUL-terminated); NULL if unreadable. */
static char *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    if (b && fread(b, 1, (size_t)len, f) != (size_t)len) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[len] = 0;
    if (n) *n = (size_t)len;
    return b;
}

/* [u64 length][header][data_len zero bytes]; len_override replaces the
 * length prefix when nonzero. */
static int write_st(const char *path, const char *header, size_t data_len, uint64_t len_override) {
    size_t hl = strlen(header), n = 8 + hl + data_len;
    unsigned char *b = calloc(1, n);
    if (!b) return -1;
    uint64_t len = len_override ? len_override : hl;
    memcpy(b, &len, 8);
    memcpy(b + 8, header, hl);
    int rc = write_bytes(path, b, n);
    free(b);
    return rc;
}

static bool has(const char *s, const char *sub) { return s && strstr(s, sub) != NULL; }

/* ---- one malformed file per rule ----------------------------------------- */

#define T1(dt, shape, off)                                                                         \
    "{\"a\":{\"dtype\":\"" dt "\",\"shape\":" shape ",\"data_offsets\":" off "}}"

typedef struct {
    const char *what;
    const char *header;
    size_t data_len;
    uint64_t len_override;
    long cut;           /* > 0: keep only the first cut - 1 bytes of the file */
    const char *expect; /* distinctive words of the error; NULL = the file is valid */
} bad_row;

static const bad_row bad_rows[] = {
    {"truncated", "{}", 0, 0, 6, "shorter than the 8-byte header length"},
    {"empty file", "{}", 0, 0, 1, "file is 0 bytes"},
    {"header length beyond the file", "{}", 0, 1000, 0, "goes past the end of the file"},
    {"header length over the limit", "{}", 0, 100000001, 0, "exceeds the limit"},
    {"header not JSON", "{\"a\": ", 0, 0, 0, "not valid JSON"},
    {"garbage after the JSON", "{} x", 0, 0, 0, "not valid JSON"},
    {"control byte in the header", "{\x01}", 0, 0, 0, "control byte 0x01"},
    {"not starting with {", "[]", 0, 0, 0, "does not start with '{'"},
    {"leading space", " {}", 0, 0, 0, "does not start with '{'"},
    {"invalid UTF-8", "{\"a\xff\":1}", 0, 0, 0, "not valid UTF-8"},
    {"overlong UTF-8", "{\"\xc0\xaf\":1}", 0, 0, 0, "not valid UTF-8"},
    {"UTF-8 surrogate", "{\"\xed\xa0\x80\":1}", 0, 0, 0, "not valid UTF-8"},
    {"offsets overlapping",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
     12, 0, 0, "'b' (data_offsets [4, 12]) overlaps tensor 'a'"},
    {"offsets with a gap",
     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}",
     20, 0, 0, "gap of 4 bytes before tensor 'b'"},
    {"gap at the data start", T1("F32", "[2]", "[4,12]"), 12, 0, 0,
     "gap of 4 bytes before tensor 'a'"},
    {"offsets past the end", T1("F32", "[2]", "[0,8]"), 4, 0, 0, "past the end of the data"},
    {"offsets reversed", T1("F32", "[0]", "[8,0]"), 8, 0, 0, "end before they begin"},
    {"byte count not matching shape", T1("F32", "[2,3]", "[0,20]"), 20, 0, 0,
     "hold 20 bytes but shape [2, 3] of F32 needs 24"},
    {"shape overflow", T1("F32", "[4294967296,4294967296,16]", "[0,0]"), 0, 0, 0, "shape overflow"},
    {"byte size overflow", T1("F64", "[4611686018427387904]", "[0,0]"), 0, 0, 0, "shape overflow"},
    {"dim beyond any integer", T1("F32", "[1e999]", "[0,0]"), 0, 0, 0, "shape overflow"},
    {"unknown dtype", T1("F99", "[2]", "[0,8]"), 8, 0, 0, "unknown dtype \"F99\""},
    {"trailing bytes", T1("F32", "[2]", "[0,8]"), 12, 0, 0,
     "4 trailing bytes after the last tensor"},
    {"non-string metadata", "{\"__metadata__\":{\"format\":1}}", 0, 0, 0,
     "value of 'format' is not a string"},
    {"metadata not an object", "{\"__metadata__\":\"pt\"}", 0, 0, 0,
     "\"__metadata__\" is not an object"},
    {"duplicate metadata key", "{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, 0, 0,
     "duplicate \"__metadata__\" key 'k'"},
    {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, 0, 0,
     "'a': missing \"data_offsets\""},
    {"missing dtype", "{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, 0,
     "'a': missing \"dtype\""},
    {"missing shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, 0, 0,
     "'a': missing \"shape\""},
    {"dtype a number", "{\"a\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, 0, 0,
     "\"dtype\" is not a string"},
    {"shape not an array", T1("F32", "\"2\"", "[0,8]"), 8, 0, 0, "\"shape\" is not an array"},
    {"shape not integers", T1("F32", "[2.5]", "[0,8]"), 8, 0, 0, "shape entry 0 is not an integer"},
    {"negative dim", T1("F32", "[2,-2]", "[0,8]"), 8, 0, 0, "negative dim -2"},
    {"offsets not a pair", T1("F32", "[2]", "[0]"), 8, 0, 0, "not a [begin, end] pair"},
    {"offsets negative", T1("F32", "[2]", "[-8,0]"), 8, 0, 0, "not a [begin, end] pair"},
    {"entry not an object", "{\"a\":5}", 0, 0, 0, "'a': entry is not an object"},
    {"duplicate tensor name",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
     2, 0, 0, "duplicate tensor name 'a'"},
    /* valid files next to the rules they brush against */
    {"empty header", "{}", 0, 0, 0, NULL},
    {"trailing spaces", "{\"__metadata__\":{\"format\":\"pt\"}}     ", 0, 0, 0, NULL},
    {"zero-size and scalar",
     "{\"e\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]},"
     "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},\"extra\":{\"dtype\":\"BOOL\","
     "\"shape\":[1],\"data_offsets\":[4,5],\"note\":\"ignored\"}}",
     5, 0, 0, NULL},
};

static void test_malformed(void) {
    const char *path = tmp_path("bad.safetensors");
    for (size_t r = 0; r < sizeof bad_rows / sizeof *bad_rows; r++) {
        const bad_row *row = &bad_rows[r];
        CHECK(write_st(path, row->header, row->data_len, row->len_override) == 0, "write %s",
              row->what);
        if (row->cut) CHECK(truncate(path, row->cut - 1) == 0, "truncate %s", row->what);
        vlm_clear_error();
        vlm_st *st = vlm_st_open(path);
        if (!row->expect) {
            CHECK(st != NULL, "%s: should open, got: %s", row->what, vlm_last_error());
        } else {
            CHECK(st == NULL, "%s: opened a malformed file", row->what);
            CHECK(has(vlm_last_error(), row->expect) && has(vlm_last_error(), path),
                  "%s: error '%s' lacks '%s' or the path", row->what, vlm_last_error(),
                  row->expect);
        }
        vlm_st_close(st);
    }
    CHECK(!vlm_st_open(tmp_path("no_such.safetensors")) && has(vlm_last_error(), "cannot open") &&
              has(vlm_last_error(), "no_such.safetensors"),
          "missing file: %s", vlm_last_error());
    CHECK(!vlm_st_open(tmpdir) && has(vlm_last_error(), "not a regular file"), "directory: %s",
          vlm_last_error());
}

/* ---- parameter stores ------------------------------------------------------ */

/* The round-trip values; scripts/gen_safetensors_fixtures.py --check knows
 * the same formula. Exact in f32. */
static void fill_formula(vlm_tensor *t) {
    int seed = 0;
    for (const char *c = t->name; *c; c++)
        seed += (unsigned char)*c;
    seed %= 17;
    for (int64_t i = 0; i < t->numel; i++)
        vlm_f32(t)[i] = (float)((i * 7 + seed * 13) % 101 - 50) / 64.0f;
}

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[4];
} pdef;

/* A finalized store with these parameters (fill: formula values, else zeros). */
static vlm_params *make_store(const pdef *defs, int n, bool fill) {
    vlm_params *p = vlm_params_new();
    for (int i = 0; p && i < n; i++)
        if (!vlm_param_add(p, defs[i].name, defs[i].ndim, defs[i].shape)) {
            fprintf(stderr, "make_store: %s\n", vlm_last_error());
            vlm_params_free(p);
            return NULL;
        }
    if (!p || vlm_params_finalize(p)) {
        vlm_params_free(p);
        return NULL;
    }
    for (int i = 0; fill && i < n; i++)
        fill_formula(vlm_params_at(p, i));
    return p;
}

static const pdef rt_defs[] = {
    {"b.weight", 2, {3, 4}},
    {"a.bias", 1, {5}},
    {"c.conv", 4, {2, 1, 2, 2}},
    {"tied.lm_head", 2, {3, 4}},
};

static void test_roundtrip(void) {
    vlm_params *p = make_store(rt_defs, 4, true), *q = make_store(rt_defs, 3, false);
    CHECK(p && q, "stores");
    if (!p || !q) return;
    /* values that must survive bit for bit */
    uint32_t nan_payload = 0x7FC00123u;
    float *a = vlm_f32(vlm_params_find(p, "a.bias"));
    memcpy(&a[0], &nan_payload, 4);
    a[1] = INFINITY, a[2] = -0.0f, a[3] = 1e-45f, a[4] = -3.4e38f;
    const char *path = tmp_path("rt.safetensors");
    const char *meta[] = {"vlm_test", "roundtrip", "step", "10", NULL};
    const char *skip[] = {"tied.lm_head", "not.a.param", NULL};
    CHECK(vlm_st_save_params(p, path, meta, skip) == 0, "save: %s", vlm_last_error());
    if (getenv("VLM_ST_KEEP")) /* developer check with the Python reader */
        CHECK(vlm_st_save_params(p, getenv("VLM_ST_KEEP"), meta, skip) == 0, "keep: %s",
              vlm_last_error());
    vlm_st_load_report rep;
    CHECK(vlm_st_load_params(q, path, NULL, NULL, &rep) == 0, "load: %s", vlm_last_error());
    CHECK(rep.n_loaded == 3 && rep.numel_loaded == 12 + 5 + 8 && !rep.n_missing &&
              !rep.n_unexpected,
          "report: loaded %d (%lld values), missing %d, unexpected %d", rep.n_loaded,
          (long long)rep.numel_loaded, rep.n_missing, rep.n_unexpected);
    vlm_st_load_report_free(&rep);
    CHECK(memcmp(vlm_params_values(p), vlm_params_values(q), (size_t)vlm_params_numel(q) * 4) == 0,
          "values differ after the round trip");

    vlm_st *st = vlm_st_open(path);
    CHECK(st && vlm_st_count(st) == 3 && vlm_st_find(st, "tied.lm_head") < 0, "skip list honoured");
    if (st) {
        CHECK(!strcmp(vlm_st_name(st, 0), "a.bias") && !strcmp(vlm_st_dtype(st, 0), "F32"),
              "sorted, F32");
        CHECK(vlm_st_header_bytes(st) % 8 == 0, "header %llu bytes, not 8-aligned",
              (unsigned long long)vlm_st_header_bytes(st));
        CHECK(vlm_st_meta(st, "format") && !strcmp(vlm_st_meta(st, "format"), "pt"), "format pt");
        CHECK(!strcmp(vlm_st_meta_key(st, 0), "format") && vlm_st_meta(st, "step") &&
                  !strcmp(vlm_st_meta(st, "step"), "10") && vlm_st_meta_count(st) == 3,
              "metadata");
        CHECK(vlm_st_ndim(st, 1) == 2 && vlm_st_shape(st, 1)[0] == 3 && vlm_st_numel(st, 1) == 12 &&
                  vlm_st_name(st, 9) == NULL && vlm_st_numel(st, -1) == -1,
              "accessors");
    }
    vlm_st_close(st);
    size_t n;
    char *bytes = read_all(path, &n);
    CHECK(bytes &&
              has(bytes + 8, "{\"__metadata__\":{\"format\":\"pt\",\"vlm_test\":\"roundtrip\""),
          "header starts with the metadata");
    /* deterministic: the same store declared in another order gives the same bytes */
    const pdef rev[] = {rt_defs[2], rt_defs[1], rt_defs[0]};
    vlm_params *r = make_store(rev, 3, true);
    memcpy(vlm_f32(vlm_params_find(r, "a.bias")), a, 5 * sizeof(float));
    const char *path2 = tmp_path("rt2.safetensors");
    CHECK(r && vlm_st_save_params(r, path2, meta, NULL) == 0, "save 2: %s", vlm_last_error());
    size_t n2;
    char *bytes2 = read_all(path2, &n2);
    CHECK(bytes && bytes2 && n == n2 && memcmp(bytes, bytes2, n) == 0,
          "saves are not byte-identical");
    free(bytes);
    free(bytes2);
    vlm_params_free(r);
    vlm_params_free(p);
    vlm_params_free(q);
}

/* ---- loading with prefix, strip, missing, unexpected ------------------------ */

static void save_file_store(const char *path, const pdef *defs, int n) {
    vlm_params *f = make_store(defs, n, true);
    CHECK(f && vlm_st_save_params(f, path, NULL, NULL) == 0, "save %s: %s", path, vlm_last_error());
    vlm_params_free(f);
}

static void test_load_prefix(void) {
    const char *path = tmp_path("smol.safetensors");
    const pdef file_defs[] = {{"model.a", 2, {2, 3}}, {"model.b", 1, {4}}, {"extra.t", 1, {1}}};
    save_file_store(path, file_defs, 3);
    const pdef defs[] = {{"decoder.model.a", 2, {2, 3}},
                         {"decoder.model.b", 1, {4}},
                         {"decoder.lm_head.weight", 2, {3, 2}},
                         {"other.c", 1, {2}}};
    vlm_params *p = make_store(defs, 4, false);
    if (!p) return;
    const char *optional[] = {"decoder.lm_head.weight", NULL};
    vlm_st_load_opts o = {.optional = optional};
    vlm_st_load_report rep;
    /* the extra tensor is unexpected: an error that names it, store untouched */
    CHECK(vlm_st_load_params(p, path, "decoder.", &o, &rep) != 0 &&
              has(vlm_last_error(),
                  "unexpected tensors in the file, with no matching parameter (1)") &&
              has(vlm_last_error(), "extra.t"),
          "unexpected: %s", vlm_last_error());
    CHECK(rep.n_unexpected == 1 && !strcmp(rep.unexpected[0], "extra.t") && rep.n_missing == 0 &&
              rep.n_absent_optional == 1 &&
              !strcmp(rep.absent_optional[0], "decoder.lm_head.weight"),
          "report: unexpected %d, missing %d, absent optional %d", rep.n_unexpected, rep.n_missing,
          rep.n_absent_optional);
    vlm_st_load_report_free(&rep);
    float zero[6] = {0};
    CHECK(!memcmp(vlm_f32(vlm_params_find(p, "decoder.model.a")), zero, sizeof zero),
          "store touched on error");
    /* allowed: loads, "decoder." + file name */
    o.allow_unexpected = true;
    CHECK(vlm_st_load_params(p, path, "decoder.", &o, &rep) == 0, "load: %s", vlm_last_error());
    CHECK(rep.n_loaded == 2 && rep.numel_loaded == 10 && rep.n_unexpected == 1, "report loaded %d",
          rep.n_loaded);
    vlm_st_load_report_free(&rep);
    vlm_params *f = make_store(file_defs, 3, true);
    CHECK(f &&
              !memcmp(vlm_f32(vlm_params_find(p, "decoder.model.a")),
                      vlm_f32(vlm_params_find(f, "model.a")), 24) &&
              !memcmp(vlm_f32(vlm_params_find(p, "decoder.model.b")),
                      vlm_f32(vlm_params_find(f, "model.b")), 16),
          "prefixed values");
    vlm_params_free(f);
    /* without the optional list the absent lm_head is missing; other.c is not under the prefix */
    vlm_st_load_opts o2 = {.allow_unexpected = true};
    CHECK(vlm_st_load_params(p, path, "decoder.", &o2, &rep) != 0 &&
              has(vlm_last_error(), "parameters missing from the file (1): decoder.lm_head.weight"),
          "missing: %s", vlm_last_error());
    CHECK(rep.n_missing == 1 && !strcmp(rep.missing[0], "decoder.lm_head.weight"),
          "missing report");
    vlm_st_load_report_free(&rep);
    o2.allow_missing = true;
    CHECK(vlm_st_load_params(p, path, "decoder.", &o2, NULL) == 0, "allow_missing: %s",
          vlm_last_error());
    vlm_params_free(p);
}

static void test_load_errors(void) {
    const char *path = tmp_path("vis.safetensors");
    const pdef file_defs[] = {{"vision_model.x", 2, {2, 3}}, {"vision_model.y", 1, {4}}};
    save_file_store(path, file_defs, 2);
    /* strip + prefix: vision_model.x -> img.x */
    const pdef defs[] = {{"img.x", 2, {2, 3}}, {"img.y", 1, {4}}};
    vlm_params *p = make_store(defs, 2, false);
    vlm_st_load_opts o = {.strip = "vision_model."};
    CHECK(p && vlm_st_load_params(p, path, "img.", &o, NULL) == 0, "strip: %s", vlm_last_error());
    vlm_params *f = make_store(file_defs, 2, true);
    CHECK(p && f && !memcmp(vlm_params_values(p), vlm_params_values(f), 10 * sizeof(float)),
          "strip loaded values");
    vlm_params_free(f);
    /* a file name without the strip prefix is unexpected */
    vlm_st_load_opts o3 = {.strip = "text_model.", .allow_missing = true};
    CHECK(p && vlm_st_load_params(p, path, "img.", &o3, NULL) != 0 &&
              has(vlm_last_error(), "vision_model.x"),
          "unstripped: %s", vlm_last_error());
    vlm_params_free(p);
    /* shape mismatch names the tensor and both shapes; the store is untouched */
    const pdef bad[] = {{"vision_model.x", 2, {3, 2}}, {"vision_model.y", 1, {4}}};
    p = make_store(bad, 2, false);
    CHECK(p && vlm_st_load_params(p, path, NULL, NULL, NULL) != 0 &&
              has(vlm_last_error(), "'vision_model.x'") && has(vlm_last_error(), "[2, 3]") &&
              has(vlm_last_error(), "[3, 2]") && has(vlm_last_error(), "shape mismatch"),
          "shape mismatch: %s", vlm_last_error());
    float zero[4] = {0};
    CHECK(p && !memcmp(vlm_f32(vlm_params_find(p, "vision_model.y")), zero, sizeof zero),
          "store untouched after a mismatch");
    vlm_params_free(p);
    /* an unfinalized store, a missing file */
    vlm_params *u = vlm_params_new();
    int64_t s6[1] = {6};
    vlm_param_add(u, "vision_model.x", 1, s6);
    CHECK(vlm_st_load_params(u, path, NULL, NULL, NULL) != 0 &&
              has(vlm_last_error(), "not finalized"),
          "unfinalized: %s", vlm_last_error());
    CHECK(vlm_st_save_params(u, tmp_path("u.safetensors"), NULL, NULL) != 0 &&
              has(vlm_last_error(), "not finalized"),
          "save unfinalized: %s", vlm_last_error());
    CHECK(vlm_st_load_params(u, tmp_path("nope.safetensors"), NULL, NULL, NULL) != 0 &&
              has(vlm_last_error(), "cannot open"),
          "missing file: %s", vlm_last_error());
    vlm_params_free(u);
}

/* ---- BF16 / F16 written by hand -------------------------------------------- */

static bool same_bits(float a, float b) { return (isnan(a) && isnan(b)) || !memcmp(&a, &b, 4); }

static void test_half_conversions(void) {
    /* header by hand, data as raw little-endian 16-bit words */
    const char *hdr = "{\"h\":{\"dtype\":\"F16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
                      "\"b\":{\"dtype\":\"BF16\",\"shape\":[6],\"data_offsets\":[12,24]},"
                      "\"i\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[24,32]}}";
    const uint16_t f16[6] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00, 0x7E00};
    const float f16_want[6] = {1.0f, -2.0f, 65504.0f, 5.9604644775390625e-8f, INFINITY, NAN};
    const uint16_t bf16[6] = {0x3F80, 0xC0A0, 0x7F80, 0xFF80, 0x0001, 0x4049};
    const float bf16_want[6] = {
        1.0f, -5.0f, INFINITY, -INFINITY, 9.18354961579912115600575419705e-41f, 3.140625f};
    size_t hl = strlen(hdr);
    unsigned char buf[1024] = {0};
    uint64_t len = hl;
    memcpy(buf, &len, 8);
    memcpy(buf + 8, hdr, hl);
    memcpy(buf + 8 + hl, f16, 12);
    memcpy(buf + 8 + hl + 12, bf16, 12);
    const char *path = tmp_path("half.safetensors");
    CHECK(write_bytes(path, buf, 8 + hl + 32) == 0, "write");
    vlm_st *st = vlm_st_open(path);
    CHECK(st != NULL, "open: %s", vlm_last_error());
    if (!st) return;
    float out[6];
    CHECK(vlm_st_read_f32(st, "h", out, 6) == 0, "read F16: %s", vlm_last_error());
    for (int i = 0; i < 6; i++)
        CHECK(same_bits(out[i], f16_want[i]), "F16[%d] = %g, want %g", i, out[i], f16_want[i]);
    CHECK(vlm_st_read_f32(st, "b", out, 6) == 0, "read BF16: %s", vlm_last_error());
    for (int i = 0; i < 6; i++)
        CHECK(same_bits(out[i], bf16_want[i]), "BF16[%d] = %g, want %g", i, out[i], bf16_want[i]);
    CHECK(vlm_st_read_f32(st, "i", out, 1) != 0 && has(vlm_last_error(), "'i' is I64"), "I64: %s",
          vlm_last_error());
    CHECK(vlm_st_read_f32(st, "b", out, 5) != 0 && has(vlm_last_error(), "has 6 elements"), "n: %s",
          vlm_last_error());
    CHECK(vlm_st_read_f32(st, "zz", out, 1) != 0 && has(vlm_last_error(), "no tensor 'zz'"),
          "absent: %s", vlm_last_error());
    vlm_st_close(st);
    /* BF16 loads into a parameter; I64 does not */
    const pdef d[] = {{"b", 1, {6}}, {"h", 2, {2, 3}}, {"i", 1, {1}}};
    vlm_params *p = make_store(d, 2, false);
    vlm_st_load_opts o = {.allow_unexpected = true};
    CHECK(p && vlm_st_load_params(p, path, "", &o, NULL) == 0, "load halves: %s", vlm_last_error());
    for (int i = 0; p && i < 6; i++)
        CHECK(same_bits(vlm_f32(vlm_params_at(p, 0))[i], bf16_want[i]), "param b[%d]", i);
    vlm_params_free(p);
    p = make_store(d, 3, false);
    CHECK(p && vlm_st_load_params(p, path, "", NULL, NULL) != 0 &&
              has(vlm_last_error(), "'i' is I64"),
          "I64 param: %s", vlm_last_error());
    vlm_params_free(p);
}

/* ---- the general writer ---------------------------------------------------- */

static void test_writer(void) {
    vlm_st_writer *w = vlm_st_writer_new();
    if (!w) return;
    const double f64[3] = {1.5, -2.25, 1e300};
    const uint8_t u8[5] = {1, 2, 3, 4, 255};
    const uint16_t bf[3] = {0x3F80, 0x4000, 0xC040};
    const int64_t i64[2] = {-7, INT64_MAX};
    const float sc = 0.5f;
    int64_t s3[1] = {3}, s5[1] = {5}, s2[1] = {2}, s04[2] = {0, 4};
    CHECK(vlm_st_writer_add(w, "z.f64", "F64", 1, s3, f64) == 0 &&
              vlm_st_writer_add(w, "a.u8", "U8", 1, s5, u8) == 0 &&
              vlm_st_writer_add(w, "m.bf16", "BF16", 1, s3, bf) == 0 &&
              vlm_st_writer_add(w, "step", "I64", 1, s2, i64) == 0 &&
              vlm_st_writer_add(w, "scalar", "F32", 0, NULL, &sc) == 0 &&
              vlm_st_writer_add(w, "empty \"quoted\"\\ \xc3\xa9", "F32", 2, s04, NULL) == 0,
          "add: %s", vlm_last_error());
    const char *note = "line\nbreak \"q\" \\ \x01 \xe2\x82\xac";
    CHECK(vlm_st_writer_meta(w, "note", "first") == 0 && vlm_st_writer_meta(w, "note", note) == 0,
          "meta: %s", vlm_last_error());
    const char *path = tmp_path("mixed.safetensors");
    CHECK(vlm_st_writer_save(w, path) == 0, "save: %s", vlm_last_error());
    vlm_st *st = vlm_st_open(path);
    CHECK(st && vlm_st_count(st) == 6, "reopen: %s", vlm_last_error());
    const struct {
        const char *name, *dtype;
        const void *data;
        size_t bytes, align;
    } want[] = {{"z.f64", "F64", f64, 24, 8}, {"a.u8", "U8", u8, 5, 1},
                {"m.bf16", "BF16", bf, 6, 2}, {"step", "I64", i64, 16, 8},
                {"scalar", "F32", &sc, 4, 4}, {"empty \"quoted\"\\ \xc3\xa9", "F32", NULL, 0, 4}};
    for (int k = 0; st && k < 6; k++) {
        int i = vlm_st_find(st, want[k].name);
        size_t nb = 99;
        const void *d = i >= 0 ? vlm_st_data(st, i, &nb) : NULL;
        CHECK(i >= 0 && !strcmp(vlm_st_dtype(st, i), want[k].dtype) && nb == want[k].bytes &&
                  (!nb || !memcmp(d, want[k].data, nb)),
              "tensor %s", want[k].name);
        /* the file mapping is page-aligned, so this is the in-file alignment */
        CHECK(d && (uintptr_t)d % want[k].align == 0, "tensor %s not aligned to %zu", want[k].name,
              want[k].align);
    }
    CHECK(st && vlm_st_ndim(st, vlm_st_find(st, "scalar")) == 0 &&
              vlm_st_numel(st, vlm_st_find(st, "scalar")) == 1,
          "scalar");
    CHECK(st && vlm_st_meta(st, "note") && !strcmp(vlm_st_meta(st, "note"), note) &&
              vlm_st_meta_count(st) == 2,
          "meta replaced and escaped");
    vlm_st_close(st);
    vlm_st_writer_free(w);
}

/* Each bad argument is refused by name; nothing is written by a bad writer. */
static void test_writer_errors(void) {
    vlm_st_writer *w = vlm_st_writer_new();
    if (!w) return;
    const double f64[3] = {1.5, -2.25, 1e300};
    int64_t s3[1] = {3};
    CHECK(vlm_st_writer_add(w, "a.u8", "U8", 1, s3, f64) == 0, "add: %s", vlm_last_error());
    CHECK(vlm_st_writer_add(w, "__metadata__", "F32", 1, s3, f64) != 0 &&
              has(vlm_last_error(), "reserved"),
          "reserved");
    CHECK(vlm_st_writer_add(w, "q", "Q4", 1, s3, f64) != 0 &&
              has(vlm_last_error(), "unknown dtype \"Q4\""),
          "dtype");
    int64_t neg[1] = {-1};
    CHECK(vlm_st_writer_add(w, "q", "F32", 1, neg, f64) != 0 &&
              has(vlm_last_error(), "negative dim"),
          "neg");
    CHECK(vlm_st_writer_add(w, "q", "F32", 1, s3, NULL) != 0 && has(vlm_last_error(), "no data"),
          "no data");
    CHECK(vlm_st_writer_add(w, "\xff", "F32", 1, s3, f64) != 0 && has(vlm_last_error(), "UTF-8"),
          "utf8");
    CHECK(vlm_st_writer_add(w, "", "F32", 1, s3, f64) != 0 &&
              has(vlm_last_error(), "empty tensor name"),
          "empty");
    CHECK(vlm_st_writer_add(w, "a.u8", "F32", 1, s3, f64) == 0, "dup add is accepted until save");
    CHECK(vlm_st_writer_save(w, tmp_path("dup.safetensors")) != 0 &&
              has(vlm_last_error(), "duplicate tensor name 'a.u8'"),
          "dup: %s", vlm_last_error());
    CHECK(access(tmp_path("dup.safetensors"), F_OK) != 0, "nothing written on a bad writer");
    const char *odd[] = {"k", NULL};
    vlm_params *p = make_store(rt_defs, 1, true);
    CHECK(p && vlm_st_save_params(p, tmp_path("odd.safetensors"), odd, NULL) != 0 &&
              has(vlm_last_error(), "no value"),
          "odd meta: %s", vlm_last_error());
    vlm_st_writer_free(w);
    vlm_params_free(p);
}

/* ---- crash-safe saving ------------------------------------------------------ */

static void test_failed_save(void) {
    vlm_params *good = make_store(rt_defs, 3, true), *other = make_store(rt_defs, 2, false);
    if (!good || !other) return;
    const char *path = tmp_path("keep.safetensors");
    CHECK(vlm_st_save_params(good, path, NULL, NULL) == 0, "save: %s", vlm_last_error());
    size_t n0, n1;
    char *before = read_all(path, &n0);
    /* the temp path is taken by a directory: the save fails, the old file stays */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(mkdir(tmp, 0700) == 0, "mkdir %s", tmp);
    CHECK(vlm_st_save_params(other, path, NULL, NULL) != 0 &&
              has(vlm_last_error(), "cannot create") && has(vlm_last_error(), ".tmp."),
          "blocked temp: %s", vlm_last_error());
    rmdir(tmp);
    char *after = read_all(path, &n1);
    CHECK(before && after && n0 == n1 && !memcmp(before, after, n0),
          "existing file changed by a failed save");
    vlm_st *st = vlm_st_open(path);
    CHECK(st && vlm_st_count(st) == 3, "existing file still opens");
    vlm_st_close(st);
    free(before);
    free(after);
    /* the target is a directory: rename fails, the temp file is removed */
    const char *dir = tmp_path("adir");
    CHECK(mkdir(dir, 0700) == 0, "mkdir");
    CHECK(vlm_st_save_params(good, dir, NULL, NULL) != 0 && has(vlm_last_error(), "cannot rename"),
          "dir target: %s", vlm_last_error());
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    struct stat sb;
    CHECK(access(tmp, F_OK) != 0 && stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode),
          "temp left behind or dir gone");
    /* a directory that does not exist */
    CHECK(vlm_st_save_params(good, "/nonexistent-vlm-dir/x.safetensors", NULL, NULL) != 0 &&
              has(vlm_last_error(), "/nonexistent-vlm-dir/x.safetensors.tmp."),
          "no dir: %s", vlm_last_error());
    /* a stale temp file from a crashed run with our pid does not block saving */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    CHECK(write_bytes(tmp, "stale", 5) == 0, "stale temp");
    CHECK(vlm_st_save_params(other, path, NULL, NULL) == 0 && access(tmp, F_OK) != 0, "stale: %s",
          vlm_last_error());
    st = vlm_st_open(path);
    CHECK(st && vlm_st_count(st) == 2, "new file in place");
    vlm_st_close(st);
    vlm_params_free(good);
    vlm_params_free(other);
}

/* ---- a file written the way Hugging Face writes them ----------------------- */

static void test_hf_fixture(void) {
    const char *src = getenv("VLM_SOURCE_DIR");
    CHECK(src != NULL, "VLM_SOURCE_DIR not set (run through ctest)");
    if (!src) return;
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/nn/fixtures/hf_tiny.safetensors", src);
    vlm_st *st = vlm_st_open(path);
    CHECK(st && vlm_st_count(st) == 14, "open fixture: %s", vlm_last_error());
    if (!st) return;
    CHECK(vlm_st_meta(st, "format") && !strcmp(vlm_st_meta(st, "format"), "pt"), "format");
    /* torch's bf16/f16 rounding and widening, reproduced bit for bit */
    const char *pairs[][2] = {{"model.embed_tokens.weight", "ref.model.embed_tokens.weight"},
                              {"model.norm.weight", "ref.model.norm.weight"},
                              {"special.bf16", "ref.special.bf16"}};
    for (int k = 0; k < 3; k++) {
        int i = vlm_st_find(st, pairs[k][0]);
        int64_t n = vlm_st_numel(st, i);
        float a[32], b[32];
        CHECK(i >= 0 && n <= 32 && vlm_st_read_f32(st, pairs[k][0], a, n) == 0 &&
                  vlm_st_read_f32(st, pairs[k][1], b, n) == 0,
              "read %s: %s", pairs[k][0], vlm_last_error());
        for (int64_t j = 0; j < n && j < 32; j++)
            CHECK(same_bits(a[j], b[j]), "%s[%lld] = %.9g, torch says %.9g", pairs[k][0],
                  (long long)j, a[j], b[j]);
    }
    /* our own f32 -> bf16 / f16 rounding agrees with torch's on the sources */
    float emb[24], esrc[24], norm[8], nsrc[8];
    CHECK(vlm_st_read_f32(st, "model.embed_tokens.weight", emb, 24) == 0 &&
              vlm_st_read_f32(st, "src.model.embed_tokens.weight", esrc, 24) == 0,
          "read emb: %s", vlm_last_error());
    for (int j = 0; j < 24; j++)
        CHECK(emb[j] == vlm_bf16_to_f32(vlm_f32_to_bf16(esrc[j])), "bf16 rounding of %.9g [%d]",
              esrc[j], j);
    CHECK(vlm_st_read_f32(st, "model.norm.weight", norm, 8) == 0 &&
              vlm_st_read_f32(st, "src.model.norm.weight", nsrc, 8) == 0,
          "read norm: %s", vlm_last_error());
    for (int j = 0; j < 8; j++)
        CHECK(same_bits(norm[j], vlm_f16_to_f32(vlm_f32_to_f16(nsrc[j]))),
              "f16 rounding of %.9g [%d]", nsrc[j], j);
    CHECK(norm[0] == 1.0f && norm[3] == 65504.0f && isinf(norm[6]) && signbit(norm[7]),
          "f16 values");
    float up[12], sp[6], s;
    CHECK(vlm_st_read_f32(st, "model.layers.0.mlp.up_proj.weight", up, 12) == 0, "up");
    for (int j = 0; j < 12; j++)
        CHECK(up[j] == ((float)j - 5.5f) * 0.25f, "up[%d] = %g", j, up[j]);
    CHECK(vlm_st_read_f32(st, "special.f32", sp, 6) == 0 && isnan(sp[0]) && sp[1] == INFINITY &&
              sp[2] == -INFINITY && sp[3] == 0 && signbit(sp[3]) && sp[4] == 1e-45f &&
              sp[5] == 3.4e38f,
          "special values");
    CHECK(vlm_st_read_f32(st, "scalar", &s, 1) == 0 && s == 2.5f &&
              vlm_st_ndim(st, vlm_st_find(st, "scalar")) == 0,
          "scalar");
    int i = vlm_st_find(st, "position_ids");
    size_t nb;
    const void *d = vlm_st_data(st, i, &nb);
    int64_t pos[5] = {0};
    if (d && nb == sizeof pos) memcpy(pos, d, nb);
    CHECK(i >= 0 && !strcmp(vlm_st_dtype(st, i), "I64") && vlm_st_shape(st, i)[1] == 5 &&
              pos[4] == 4,
          "position_ids");
    i = vlm_st_find(st, "mask");
    const uint8_t *m = vlm_st_data(st, i, &nb);
    CHECK(m && nb == 3 && m[0] == 1 && m[1] == 0 && m[2] == 1 &&
              !strcmp(vlm_st_dtype(st, i), "BOOL"),
          "mask");
    i = vlm_st_find(st, "empty");
    CHECK(vlm_st_numel(st, i) == 0 && vlm_st_shape(st, i)[1] == 4, "empty");
    vlm_st_close(st);
}

/* ---- vlm inspect ----------------------------------------------------------- */

static int run_cli(const char *args, char **out) {
    char cmd[2048];
    const char *log = tmp_path("cli.txt");
    snprintf(cmd, sizeof cmd, "\"%s\" %s > \"%s\" 2>&1", getenv("VLM_BINARY"), args, log);
    int st = system(cmd);
    *out = read_all(log, NULL);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void test_cli(void) {
    if (!getenv("VLM_BINARY")) {
        CHECK(0, "VLM_BINARY not set (run through ctest)");
        return;
    }
    vlm_params *p = make_store(rt_defs, 3, true);
    const char *good = tmp_path("cli_good.safetensors"), *bad = tmp_path("cli_bad.safetensors");
    const char *meta[] = {"source", "unit test", NULL};
    CHECK(p && vlm_st_save_params(p, good, meta, NULL) == 0, "save: %s", vlm_last_error());
    vlm_params_free(p);
    char args[1024], *out = NULL;
    snprintf(args, sizeof args, "inspect \"%s\"", good);
    int rc = run_cli(args, &out);
    CHECK(rc == 0, "inspect good: exit %d: %s", rc, out ? out : "");
    CHECK(has(out, "a.bias") && has(out, "b.weight") && has(out, "c.conv") &&
              has(out, "[2, 1, 2, 2]") && has(out, "total: 3 tensors, 25 parameters") &&
              has(out, "source: unit test") && has(out, "format: pt"),
          "inspect output:\n%s", out ? out : "");
    CHECK(out && strstr(out, "a.bias") < strstr(out, "b.weight") &&
              strstr(out, "b.weight") < strstr(out, "c.conv"),
          "sorted by name");
    free(out);
    CHECK(write_st(bad, T1("F32", "[2]", "[0,8]"), 12, 0) == 0, "write bad");
    snprintf(args, sizeof args, "inspect \"%s\"", bad);
    rc = run_cli(args, &out);
    CHECK(rc == 1 && has(out, "error: safetensors: 4 trailing bytes") &&
              has(out, "cli_bad.safetensors"),
          "inspect bad: exit %d: %s", rc, out ? out : "");
    free(out);
    rc = run_cli("inspect --help", &out);
    CHECK(rc == 0 && has(out, "usage: vlm inspect") && has(out, "example"), "help: %d %s", rc,
          out ? out : "");
    free(out);
    rc = run_cli("inspect", &out);
    CHECK(rc == 2 && has(out, "error: inspect: missing FILE"), "no file: %d %s", rc,
          out ? out : "");
    free(out);
    rc = run_cli("inspect --bogus x", &out);
    CHECK(rc == 2 && has(out, "unknown option '--bogus'"), "bad option: %d %s", rc, out ? out : "");
    free(out);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/vlm_st_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_malformed();
    test_roundtrip();
    test_load_prefix();
    test_load_errors();
    test_half_conversions();
    test_writer();
    test_writer_errors();
    test_failed_save();
    test_hf_fixture();
    test_cli();
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return TEST_DONE();
}
