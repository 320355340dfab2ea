/* safetensors.c - the safetensors format: a checking reader, a loader into a
 * parameter store and a crash-safe writer.
 *
 * File layout: [u64 little-endian N][N bytes of JSON header][data]. The header
 * maps tensor names to {"dtype", "shape", "data_offsets": [begin, end]} with
 * offsets relative to the data start, plus an optional "__metadata__" object
 * of strings. The reader enforces the same rules as the reference Rust
 * implementation, each with its own message, so a file that opens can be
 * used without further checks: every tensor's bytes lie inside the mapping.
 */
#include "nn.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are used in place (read) and written from memory as they are,
 * which is only the file's little-endian layout on a little-endian host. */
#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes tensor data in place: little-endian hosts only"
#endif

#define ST_MAX_HEADER 100000000ull /* the reference implementation's limit */
#define ST_MAX_WRITE_DIMS 32

/* ---- dtypes ---------------------------------------------------------------- */

enum {
    ST_F64,
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_I64,
    ST_I32,
    ST_I16,
    ST_I8,
    ST_U8,
    ST_BOOL,
    ST_U16,
    ST_U32,
    ST_U64,
    ST_F8_E4M3,
    ST_F8_E5M2,
    ST_NDTYPES
};

static const struct {
    const char *name;
    unsigned size;
} st_dtypes[ST_NDTYPES] = {
    [ST_F64] = {"F64", 8},   [ST_F32] = {"F32", 4},         [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8},         [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2},   [ST_I8] = {"I8", 1},           [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1}, [ST_U16] = {"U16", 2},         [ST_U32] = {"U32", 4},
    [ST_U64] = {"U64", 8},   [ST_F8_E4M3] = {"F8_E4M3", 1}, [ST_F8_E5M2] = {"F8_E5M2", 1},
};

static int st_dtype_lookup(const char *name) {
    for (int i = 0; i < ST_NDTYPES; i++)
        if (strcmp(st_dtypes[i].name, name) == 0) return i;
    return -1;
}

/* Offset of the first byte that is not valid UTF-8 (overlong forms,
 * surrogates and code points past U+10FFFF are invalid), or SIZE_MAX. */
static size_t st_utf8_invalid(const unsigned char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i], lo = 0x80, hi = 0xBF;
        size_t len;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xC2 && c <= 0xDF)
            len = 2;
        else if (c >= 0xE0 && c <= 0xEF)
            len = 3, lo = c == 0xE0 ? 0xA0 : lo, hi = c == 0xED ? 0x9F : hi;
        else if (c >= 0xF0 && c <= 0xF4)
            len = 4, lo = c == 0xF0 ? 0x90 : lo, hi = c == 0xF4 ? 0x8F : hi;
        else
            return i;
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += len;
    }
    return SIZE_MAX;
}

/* "[2, 3]" into buf (truncated with "..." if it does not fit). */
static const char *st_shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t len = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && len < cap; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (len < cap) len += (size_t)snprintf(buf + len, cap - len, "]");
    if (len >= cap && cap >= 4) strcpy(buf + cap - 4, "...");
    return buf;
}

/* ---- reader ------------------------------------------------------------------ */

typedef struct {
    char *name;
    int dtype;
    int ndim;
    int64_t *shape;
    int64_t numel;
    uint64_t begin, end; /* relative to the data start */
} st_entry;

struct vlm_st {
    char *path;
    unsigned char *map;
    size_t map_len;
    uint64_t header_len;
    const unsigned char *data; /* map + 8 + header_len */
    uint64_t data_len;
    st_entry *t; /* sorted by name once the header is parsed */
    int n;
    char **meta_key, **meta_val;
    int n_meta;
    bool meta_seen;
};

/* Sets "safetensors: <message> (<file>)" and returns -1. */
__attribute__((format(printf, 2, 3))) static int st_err(const vlm_st *st, const char *fmt, ...) {
    char msg[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return vlm_set_error("safetensors: %s (%s)", msg, st->path);
}

static int st_map(vlm_st *st) {
    int fd = open(st->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return st_err(st, "cannot open: %s", strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return st_err(st, "not a regular file");
    }
    if (sb.st_size < 8) {
        close(fd);
        return st_err(st, "file is %lld bytes, shorter than the 8-byte header length",
                      (long long)sb.st_size);
    }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd); /* the mapping keeps the file */
    if (m == MAP_FAILED)
        return st_err(st, "cannot map %lld bytes: %s", (long long)sb.st_size, strerror(e));
    st->map = m;
    st->map_len = (size_t)sb.st_size;
    return 0;
}

/* An integral JSON number in [0, 2^64), for shapes and offsets. */
static bool st_json_uint(const cJSON *v, double *out) {
    if (!cJSON_IsNumber(v)) return false;
    double d = v->valuedouble;
    if (!(d >= 0) || d != floor(d) || d >= 18446744073709551616.0) return false;
    *out = d;
    return true;
}

static int st_parse_shape(const vlm_st *st, st_entry *e, const cJSON *sh) {
    if (!cJSON_IsArray(sh)) return st_err(st, "tensor '%s': \"shape\" is not an array", e->name);
    int nd = cJSON_GetArraySize(sh), i = 0;
    e->shape = malloc((size_t)(nd ? nd : 1) * sizeof *e->shape);
    if (!e->shape) return st_err(st, "out of memory");
    e->ndim = nd;
    uint64_t numel = 1;
    bool overflow = false;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        double v = d->valuedouble; /* huge numbers parse as Inf: an overflow, not a type error */
        if (!cJSON_IsNumber(d) || v != floor(v))
            return st_err(st, "tensor '%s': shape entry %d is not an integer", e->name, i);
        if (v < 0) return st_err(st, "tensor '%s': negative dim %g in shape", e->name, v);
        if (v >= 9223372036854775808.0) overflow = true;
        e->shape[i] = overflow ? 0 : (int64_t)v;
        if (!overflow && __builtin_mul_overflow(numel, (uint64_t)v, &numel)) overflow = true;
    }
    uint64_t bytes;
    if (overflow || numel > (uint64_t)INT64_MAX ||
        __builtin_mul_overflow(numel, (uint64_t)st_dtypes[e->dtype].size, &bytes))
        return st_err(st,
                      "tensor '%s': shape overflow (element count or byte size exceeds 64 bits)",
                      e->name);
    e->numel = (int64_t)numel;
    return 0;
}

static int st_parse_offsets(const vlm_st *st, st_entry *e, const cJSON *off) {
    double b, x;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 || !st_json_uint(off->child, &b) ||
        !st_json_uint(off->child->next, &x))
        return st_err(st, "tensor '%s': \"data_offsets\" is not a [begin, end] pair of integers",
                      e->name);
    e->begin = (uint64_t)b;
    e->end = (uint64_t)x;
    if (e->end < e->begin)
        return st_err(st, "tensor '%s': data_offsets [%llu, %llu] end before they begin", e->name,
                      (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > st->data_len)
        return st_err(
            st, "tensor '%s': data_offsets [%llu, %llu] go past the end of the data (%llu bytes)",
            e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
            (unsigned long long)st->data_len);
    uint64_t need = (uint64_t)e->numel * st_dtypes[e->dtype].size;
    if (e->end - e->begin != need) {
        char s[128];
        return st_err(
            st,
            "tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but shape %s of %s needs %llu",
            e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
            (unsigned long long)(e->end - e->begin), st_shape_str(s, sizeof s, e->ndim, e->shape),
            st_dtypes[e->dtype].name, (unsigned long long)need);
    }
    return 0;
}

/* One "name": {"dtype", "shape", "data_offsets"} entry; other keys are
 * ignored, as the reference implementation does. */
static int st_parse_tensor(const vlm_st *st, const cJSON *item, st_entry *e) {
    if (!(e->name = strdup(item->string))) return st_err(st, "out of memory");
    if (!cJSON_IsObject(item)) return st_err(st, "tensor '%s': entry is not an object", e->name);
    static const char *const keys[3] = {"dtype", "shape", "data_offsets"};
    const cJSON *v[3];
    for (int k = 0; k < 3; k++)
        if (!(v[k] = cJSON_GetObjectItemCaseSensitive(item, keys[k])))
            return st_err(st, "tensor '%s': missing \"%s\"", e->name, keys[k]);
    if (!cJSON_IsString(v[0])) return st_err(st, "tensor '%s': \"dtype\" is not a string", e->name);
    if ((e->dtype = st_dtype_lookup(v[0]->valuestring)) < 0)
        return st_err(st, "tensor '%s': unknown dtype \"%s\"", e->name, v[0]->valuestring);
    if (st_parse_shape(st, e, v[1])) return -1;
    return st_parse_offsets(st, e, v[2]);
}

static int st_parse_meta(vlm_st *st, const cJSON *m) {
    if (st->meta_seen) return st_err(st, "duplicate \"__metadata__\"");
    st->meta_seen = true;
    if (!cJSON_IsObject(m)) return st_err(st, "\"__metadata__\" is not an object");
    int n = cJSON_GetArraySize(m);
    st->meta_key = calloc((size_t)(n ? n : 1), sizeof *st->meta_key);
    st->meta_val = calloc((size_t)(n ? n : 1), sizeof *st->meta_val);
    if (!st->meta_key || !st->meta_val) return st_err(st, "out of memory");
    for (const cJSON *it = m->child; it; it = it->next) {
        if (!cJSON_IsString(it))
            return st_err(st, "\"__metadata__\" value of '%s' is not a string", it->string);
        if (vlm_st_meta(st, it->string))
            return st_err(st, "duplicate \"__metadata__\" key '%s'", it->string);
        int k = st->n_meta++; /* counted first: close frees a half-filled pair */
        st->meta_key[k] = strdup(it->string);
        st->meta_val[k] = strdup(it->valuestring);
        if (!st->meta_key[k] || !st->meta_val[k]) return st_err(st, "out of memory");
    }
    return 0;
}

/* Parses the header bytes as one JSON object followed only by whitespace.
 * Raw control bytes (a NUL would end cJSON's view early) are not JSON. */
static cJSON *st_parse_json(const vlm_st *st, const char *hdr, size_t n) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)hdr[i];
        if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            st_err(st, "header is not valid JSON: control byte 0x%02x at byte %zu", c, i);
            return NULL;
        }
    }
    char *buf = malloc(n + 1); /* cJSON wants a terminated string */
    if (!buf) {
        st_err(st, "out of memory for a %zu-byte header", n);
        return NULL;
    }
    memcpy(buf, hdr, n);
    buf[n] = 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, n, &end, 0);
    size_t pos = end ? (size_t)(end - buf) : 0;
    if (root)
        while (pos < n && strchr(" \t\r\n", buf[pos]))
            pos++;
    if (!root || pos < n || !cJSON_IsObject(root)) {
        st_err(st, "header is not valid JSON (error near byte %zu of %zu)", pos, n);
        cJSON_Delete(root);
        root = NULL;
    }
    free(buf);
    return root;
}

static int st_parse_header(vlm_st *st) {
    uint64_t n;
    memcpy(&n, st->map, 8);
    if (n > ST_MAX_HEADER)
        return st_err(st, "header length %llu exceeds the limit of %llu bytes",
                      (unsigned long long)n, ST_MAX_HEADER);
    if (8 + n > st->map_len)
        return st_err(st, "header length %llu goes past the end of the file (%zu bytes)",
                      (unsigned long long)n, st->map_len);
    st->header_len = n;
    st->data = st->map + 8 + n;
    st->data_len = st->map_len - 8 - n;
    const unsigned char *h = st->map + 8;
    size_t bad = st_utf8_invalid(h, (size_t)n);
    if (bad != SIZE_MAX)
        return st_err(st, "header is not valid UTF-8 (byte %zu of the header)", bad);
    if (n == 0 || h[0] != '{') return st_err(st, "header does not start with '{'");
    cJSON *root = st_parse_json(st, (const char *)h, (size_t)n);
    if (!root) return -1;
    int count = cJSON_GetArraySize(root), rc = 0;
    st->t = calloc((size_t)(count ? count : 1), sizeof *st->t);
    if (!st->t) rc = st_err(st, "out of memory");
    for (const cJSON *it = root->child; it && !rc; it = it->next) {
        if (strcmp(it->string, "__metadata__") == 0)
            rc = st_parse_meta(st, it);
        else
            rc = st_parse_tensor(st, it, &st->t[st->n++]); /* counted first: close frees it */
    }
    cJSON_Delete(root);
    return rc;
}

static int st_cmp_name(const void *a, const void *b) {
    return strcmp(((const st_entry *)a)->name, ((const st_entry *)b)->name);
}

static int st_cmp_offsets(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Sorted by offset, the tensors must tile the data exactly: from 0, no gap,
 * no overlap, nothing after the last one. */
static int st_check_tiling(const vlm_st *st) {
    const st_entry **ord = malloc((size_t)(st->n ? st->n : 1) * sizeof *ord);
    if (!ord) return st_err(st, "out of memory");
    for (int i = 0; i < st->n; i++)
        ord[i] = &st->t[i];
    qsort(ord, (size_t)st->n, sizeof *ord, st_cmp_offsets);
    uint64_t pos = 0;
    int rc = 0;
    for (int i = 0; i < st->n && !rc; i++) {
        const st_entry *e = ord[i];
        if (e->begin < pos)
            rc = st_err(
                st, "tensor '%s' (data_offsets [%llu, %llu]) overlaps tensor '%s' (ends at %llu)",
                e->name, (unsigned long long)e->begin, (unsigned long long)e->end, ord[i - 1]->name,
                (unsigned long long)pos);
        else if (e->begin > pos)
            rc = st_err(
                st, "gap of %llu bytes before tensor '%s' (data_offsets [%llu, %llu]; %s at %llu)",
                (unsigned long long)(e->begin - pos), e->name, (unsigned long long)e->begin,
                (unsigned long long)e->end, i ? "the previous tensor ends" : "the data starts",
                (unsigned long long)pos);
        pos = e->end;
    }
    free(ord);
    if (!rc && pos != st->data_len)
        rc = st_err(
            st,
            "%llu trailing bytes after the last tensor (tensors end at %llu, data is %llu bytes)",
            (unsigned long long)(st->data_len - pos), (unsigned long long)pos,
            (unsigned long long)st->data_len);
    return rc;
}

static int st_check_layout(vlm_st *st) {
    qsort(st->t, (size_t)st->n, sizeof *st->t, st_cmp_name);
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->t[i - 1].name, st->t[i].name) == 0)
            return st_err(st, "duplicate tensor name '%s'", st->t[i].name);
    return st_check_tiling(st);
}

vlm_st *vlm_st_open(const char *path) {
    vlm_st *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path ? path : "(null)"))) {
        free(st);
        vlm_set_error("safetensors: out of memory opening %s", path ? path : "(null)");
        return NULL;
    }
    if (st_map(st) || st_parse_header(st) || st_check_layout(st)) {
        vlm_st_close(st);
        return NULL;
    }
    return st;
}

void vlm_st_close(vlm_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) {
        free(st->t[i].name);
        free(st->t[i].shape);
    }
    for (int i = 0; i < st->n_meta; i++) {
        free(st->meta_key[i]);
        free(st->meta_val[i]);
    }
    free(st->meta_key);
    free(st->meta_val);
    free(st->t);
    if (st->map) munmap(st->map, st->map_len);
    free(st->path);
    free(st);
}

/* ---- reader accessors ---------------------------------------------------- */

static const st_entry *st_at(const vlm_st *st, int i) {
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const char *vlm_st_path(const vlm_st *st) { return st->path; }
int vlm_st_count(const vlm_st *st) { return st->n; }
uint64_t vlm_st_header_bytes(const vlm_st *st) { return st->header_len; }
uint64_t vlm_st_data_bytes(const vlm_st *st) { return st->data_len; }

int vlm_st_find(const vlm_st *st, const char *name) {
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2, c = strcmp(st->t[mid].name, name);
        if (c == 0) return mid;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return -1;
}

const char *vlm_st_name(const vlm_st *st, int i) {
    const st_entry *e = st_at(st, i);
    return e ? e->name : NULL;
}

const char *vlm_st_dtype(const vlm_st *st, int i) {
    const st_entry *e = st_at(st, i);
    return e ? st_dtypes[e->dtype].name : NULL;
}

int vlm_st_ndim(const vlm_st *st, int i) {
    const st_entry *e = st_at(st, i);
    return e ? e->ndim : -1;
}

const int64_t *vlm_st_shape(const vlm_st *st, int i) {
    const st_entry *e = st_at(st, i);
    return e ? e->shape : NULL;
}

int64_t vlm_st_numel(const vlm_st *st, int i) {
    const st_entry *e = st_at(st, i);
    return e ? e->numel : -1;
}

const void *vlm_st_data(const vlm_st *st, int i, size_t *nbytes) {
    const st_entry *e = st_at(st, i);
    if (nbytes) *nbytes = e ? (size_t)(e->end - e->begin) : 0;
    return e ? st->data + e->begin : NULL;
}

const char *vlm_st_meta(const vlm_st *st, const char *key) {
    for (int i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_key[i], key) == 0) return st->meta_val[i];
    return NULL;
}

int vlm_st_meta_count(const vlm_st *st) { return st->n_meta; }
const char *vlm_st_meta_key(const vlm_st *st, int i) {
    return i >= 0 && i < st->n_meta ? st->meta_key[i] : NULL;
}
const char *vlm_st_meta_value(const vlm_st *st, int i) {
    return i >= 0 && i < st->n_meta ? st->meta_val[i] : NULL;
}

static bool st_to_f32_ok(int dtype) {
    return dtype == ST_F32 || dtype == ST_BF16 || dtype == ST_F16;
}

int vlm_st_read_f32(const vlm_st *st, const char *name, float *dst, int64_t n) {
    int i = vlm_st_find(st, name);
    if (i < 0) return st_err(st, "no tensor '%s' in the file", name);
    const st_entry *e = &st->t[i];
    if (!st_to_f32_ok(e->dtype))
        return st_err(st, "tensor '%s' is %s; only F32, BF16 and F16 convert to f32", name,
                      st_dtypes[e->dtype].name);
    if (e->numel != n)
        return st_err(st, "tensor '%s' has %lld elements, the destination %lld", name,
                      (long long)e->numel, (long long)n);
    const unsigned char *src = st->data + e->begin; /* may be unaligned: memcpy */
    if (e->dtype == ST_F32) {
        memcpy(dst, src, (size_t)n * sizeof *dst);
        return 0;
    }
    for (int64_t k = 0; k < n; k++) {
        uint16_t h;
        memcpy(&h, src + 2 * k, 2);
        dst[k] = e->dtype == ST_BF16 ? vlm_bf16_to_f32(h) : vlm_f16_to_f32(h);
    }
    return 0;
}

/* ---- loading into a parameter store --------------------------------------- */

typedef struct {
    const char *name;
    vlm_tensor *t;
    int index;
} st_pname;

static int st_cmp_pname(const void *a, const void *b) {
    return strcmp(((const st_pname *)a)->name, ((const st_pname *)b)->name);
}

static int st_list_add(char ***list, int *n, const char *s) {
    char **l = realloc(*list, (size_t)(*n + 1) * sizeof *l);
    if (!l) return vlm_set_error("safetensors: out of memory");
    *list = l;
    if (!(l[*n] = strdup(s))) return vlm_set_error("safetensors: out of memory");
    (*n)++;
    return 0;
}

static void st_list_free(char **list, int n) {
    for (int i = 0; i < n; i++)
        free(list[i]);
    free(list);
}

void vlm_st_load_report_free(vlm_st_load_report *rep) {
    if (!rep) return;
    st_list_free(rep->missing, rep->n_missing);
    st_list_free(rep->unexpected, rep->n_unexpected);
    st_list_free(rep->absent_optional, rep->n_absent_optional);
    memset(rep, 0, sizeof *rep);
}

/* State of one load: the file, the store's names sorted for lookup, and per
 * file tensor the parameter it goes to (NULL = unexpected). */
typedef struct {
    vlm_st *st;
    vlm_params *p;
    const char *prefix;
    vlm_st_load_opts o;
    vlm_st_load_report *rep;
    st_pname *names;
    bool *found;       /* per store index */
    vlm_tensor **dest; /* per file tensor */
    char *full;        /* name buffer */
    size_t full_cap;
} st_load;

static int st_load_init(st_load *L) {
    int np = vlm_params_count(L->p);
    L->names = malloc((size_t)(np ? np : 1) * sizeof *L->names);
    L->found = calloc((size_t)(np ? np : 1), sizeof *L->found);
    L->dest = calloc((size_t)(L->st->n ? L->st->n : 1), sizeof *L->dest);
    if (!L->names || !L->found || !L->dest) return vlm_set_error("safetensors: out of memory");
    for (int i = 0; i < np; i++) {
        vlm_tensor *t = vlm_params_at(L->p, i);
        if (!t->data)
            return vlm_set_error("safetensors: parameter store not finalized (loading %s)",
                                 L->st->path);
        L->names[i] = (st_pname){t->name, t, i};
    }
    qsort(L->names, (size_t)np, sizeof *L->names, st_cmp_pname);
    return 0;
}

/* The store parameter that file tensor i maps to (*out = NULL if none). */
static int st_load_lookup(st_load *L, int i, const st_pname **out) {
    const char *name = L->st->t[i].name;
    size_t ls = L->o.strip ? strlen(L->o.strip) : 0, lp = strlen(L->prefix);
    *out = NULL;
    if (ls && strncmp(name, L->o.strip, ls) != 0) return 0;
    size_t need = lp + strlen(name + ls) + 1;
    if (need > L->full_cap) {
        char *b = realloc(L->full, need);
        if (!b) return vlm_set_error("safetensors: out of memory");
        L->full = b;
        L->full_cap = need;
    }
    memcpy(L->full, L->prefix, lp);
    strcpy(L->full + lp, name + ls);
    st_pname key = {L->full, NULL, 0};
    *out = bsearch(&key, L->names, (size_t)vlm_params_count(L->p), sizeof key, st_cmp_pname);
    return 0;
}

static int st_load_match(st_load *L, int i, const st_pname *pn) {
    const st_entry *e = &L->st->t[i];
    const vlm_tensor *t = pn->t;
    bool same = e->ndim == t->ndim;
    for (int d = 0; same && d < e->ndim; d++)
        same = e->shape[d] == t->shape[d];
    if (!same) {
        char a[128], b[128];
        return st_err(L->st, "shape mismatch for tensor '%s': file has %s, parameter '%s' is %s",
                      e->name, st_shape_str(a, sizeof a, e->ndim, e->shape), t->name,
                      st_shape_str(b, sizeof b, t->ndim, t->shape));
    }
    if (!st_to_f32_ok(e->dtype))
        return st_err(L->st, "tensor '%s' is %s; parameters load from F32, BF16 or F16", e->name,
                      st_dtypes[e->dtype].name);
    L->dest[i] = pn->t;
    L->found[pn->index] = true;
    return 0;
}

static bool st_in_list(const char *const *list, const char *name) {
    for (; list && *list; list++)
        if (strcmp(*list, name) == 0) return true;
    return false;
}

/* Parameters under the prefix that the file does not have. */
static int st_load_missing(st_load *L) {
    size_t lp = strlen(L->prefix);
    for (int i = 0; i < vlm_params_count(L->p); i++) {
        const char *name = vlm_params_at(L->p, i)->name;
        if (L->found[i] || strncmp(name, L->prefix, lp) != 0) continue;
        int rc = st_in_list(L->o.optional, name)
                     ? st_list_add(&L->rep->absent_optional, &L->rep->n_absent_optional, name)
                     : st_list_add(&L->rep->missing, &L->rep->n_missing, name);
        if (rc) return -1;
    }
    return 0;
}

/* "parameters missing from the file (5): a, b, c, ..." (the first three). */
static int st_list_err(const vlm_st *st, const char *what, char *const *list, int n) {
    char names[400] = "";
    size_t len = 0;
    for (int i = 0; i < n && i < 3 && len < sizeof names; i++)
        len += (size_t)snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", list[i]);
    return st_err(st, "%s (%d): %s%s", what, n, names, n > 3 ? ", ..." : "");
}

static int st_load_plan(st_load *L) {
    if (st_load_init(L)) return -1;
    for (int i = 0; i < L->st->n; i++) {
        const st_pname *pn;
        if (st_load_lookup(L, i, &pn)) return -1;
        if (pn ? st_load_match(L, i, pn)
               : st_list_add(&L->rep->unexpected, &L->rep->n_unexpected, L->st->t[i].name))
            return -1;
    }
    if (st_load_missing(L)) return -1;
    if (L->rep->n_missing && !L->o.allow_missing)
        return st_list_err(L->st, "parameters missing from the file", L->rep->missing,
                           L->rep->n_missing);
    if (L->rep->n_unexpected && !L->o.allow_unexpected)
        return st_list_err(L->st, "unexpected tensors in the file, with no matching parameter",
                           L->rep->unexpected, L->rep->n_unexpected);
    return 0;
}

int vlm_st_load_params(vlm_params *p, const char *path, const char *prefix,
                       const vlm_st_load_opts *opts, vlm_st_load_report *rep) {
    vlm_st_load_report local;
    st_load L = {.p = p, .prefix = prefix ? prefix : "", .rep = rep ? rep : &local};
    if (opts) L.o = *opts;
    memset(L.rep, 0, sizeof *L.rep);
    if (!(L.st = vlm_st_open(path))) return -1;
    int rc = st_load_plan(&L);
    for (int i = 0; rc == 0 && i < L.st->n; i++) {
        if (!L.dest[i]) continue;
        rc = vlm_st_read_f32(L.st, L.st->t[i].name, vlm_f32(L.dest[i]), L.dest[i]->numel);
        L.rep->n_loaded++;
        L.rep->numel_loaded += L.dest[i]->numel;
    }
    free(L.names);
    free(L.found);
    free(L.dest);
    free(L.full);
    vlm_st_close(L.st);
    if (!rep) vlm_st_load_report_free(&local);
    return rc;
}

/* ---- writer -------------------------------------------------------------------- */

typedef struct {
    char *name;
    int dtype;
    int ndim;
    int64_t shape[ST_MAX_WRITE_DIMS];
    uint64_t nbytes, offset;
    const void *data;
} st_item;

struct vlm_st_writer {
    st_item *items;
    int n, cap;
    char **meta_key, **meta_val;
    int n_meta;
};

vlm_st_writer *vlm_st_writer_new(void) {
    vlm_st_writer *w = calloc(1, sizeof *w);
    if (!w) {
        vlm_set_error("safetensors writer: out of memory");
        return NULL;
    }
    if (vlm_st_writer_meta(w, "format", "pt")) { /* transformers refuses other formats */
        vlm_st_writer_free(w);
        return NULL;
    }
    return w;
}

void vlm_st_writer_free(vlm_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++)
        free(w->items[i].name);
    free(w->items);
    st_list_free(w->meta_key, w->n_meta);
    st_list_free(w->meta_val, w->n_meta);
    free(w);
}

static int st_check_utf8(const char *what, const char *s) {
    if (st_utf8_invalid((const unsigned char *)s, strlen(s)) != SIZE_MAX)
        return vlm_set_error("safetensors writer: %s is not valid UTF-8", what);
    return 0;
}

int vlm_st_writer_meta(vlm_st_writer *w, const char *key, const char *value) {
    if (!key || !value) return vlm_set_error("safetensors writer: NULL metadata key or value");
    if (st_check_utf8("metadata key", key) || st_check_utf8("metadata value", value)) return -1;
    for (int i = 0; i < w->n_meta; i++) {
        if (strcmp(w->meta_key[i], key) != 0) continue;
        char *v = strdup(value);
        if (!v) return vlm_set_error("safetensors writer: out of memory");
        free(w->meta_val[i]);
        w->meta_val[i] = v;
        return 0;
    }
    int nk = w->n_meta, nv = w->n_meta;
    if (st_list_add(&w->meta_key, &nk, key)) return -1;
    if (st_list_add(&w->meta_val, &nv, value)) {
        free(w->meta_key[--nk]);
        return -1;
    }
    w->n_meta++;
    return 0;
}

/* Byte size of a shape, with overflow and sign checks. */
static int st_item_bytes(const char *name, int dt, int ndim, const int64_t *shape, uint64_t *out) {
    if (ndim < 0 || ndim > ST_MAX_WRITE_DIMS || (ndim && !shape))
        return vlm_set_error("safetensors writer: tensor '%s' has %d dims (0 to %d)", name, ndim,
                             ST_MAX_WRITE_DIMS);
    uint64_t n = st_dtypes[dt].size;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return vlm_set_error("safetensors writer: tensor '%s' has negative dim %lld", name,
                                 (long long)shape[i]);
        if (__builtin_mul_overflow(n, (uint64_t)shape[i], &n) || n > (uint64_t)INT64_MAX)
            return vlm_set_error("safetensors writer: tensor '%s': shape overflow", name);
    }
    *out = n;
    return 0;
}

int vlm_st_writer_add(vlm_st_writer *w, const char *name, const char *dtype, int ndim,
                      const int64_t *shape, const void *data) {
    if (!name || !*name) return vlm_set_error("safetensors writer: empty tensor name");
    if (strcmp(name, "__metadata__") == 0)
        return vlm_set_error("safetensors writer: \"__metadata__\" is reserved, not a tensor name");
    if (st_check_utf8("tensor name", name)) return -1;
    int dt = dtype ? st_dtype_lookup(dtype) : -1;
    if (dt < 0)
        return vlm_set_error("safetensors writer: tensor '%s': unknown dtype \"%s\"", name,
                             dtype ? dtype : "(null)");
    st_item it = {.dtype = dt, .ndim = ndim, .data = data};
    if (st_item_bytes(name, dt, ndim, shape, &it.nbytes)) return -1;
    if (it.nbytes && !data)
        return vlm_set_error("safetensors writer: tensor '%s' has no data", name);
    if (ndim) memcpy(it.shape, shape, (size_t)ndim * sizeof *shape);
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        st_item *items = realloc(w->items, (size_t)cap * sizeof *items);
        if (!items) return vlm_set_error("safetensors writer: out of memory");
        w->items = items;
        w->cap = cap;
    }
    if (!(it.name = strdup(name))) return vlm_set_error("safetensors writer: out of memory");
    w->items[w->n++] = it;
    return 0;
}

/* A growable string for the header; oom is sticky and checked once. */
typedef struct {
    char *p;
    size_t len, cap;
    bool oom;
} st_buf;

static void st_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void st_puts(st_buf *b, const char *s) { st_put(b, s, strlen(s)); }

static void st_put_u64(st_buf *b, uint64_t v) {
    char s[24];
    st_put(b, s, (size_t)snprintf(s, sizeof s, "%llu", (unsigned long long)v));
}

/* A JSON string literal; the text is valid UTF-8 (checked on entry), so only
 * quotes, backslashes and control characters need escaping. */
static void st_put_json_str(st_buf *b, const char *s) {
    st_put(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\')
            st_put(b, (const char[]){'\\', (char)c}, 2);
        else if (c < 0x20)
            st_put(b, esc, (size_t)snprintf(esc, sizeof esc, "\\u%04x", c));
        else
            st_put(b, (const char *)s, 1);
    }
    st_put(b, "\"", 1);
}

/* Larger element sizes first, then by name: with an 8-aligned data start every
 * tensor is then aligned to its element size (as the Python writer does). */
static int st_cmp_item(const void *a, const void *b) {
    const st_item *x = *(const st_item *const *)a, *y = *(const st_item *const *)b;
    unsigned sx = st_dtypes[x->dtype].size, sy = st_dtypes[y->dtype].size;
    if (sx != sy) return sx > sy ? -1 : 1;
    return strcmp(x->name, y->name);
}

static int st_cmp_item_name(const void *a, const void *b) {
    return strcmp((*(const st_item *const *)a)->name, (*(const st_item *const *)b)->name);
}

/* Orders the items for the file and assigns data offsets. */
static int st_writer_order(vlm_st_writer *w, st_item **ord) {
    for (int i = 0; i < w->n; i++)
        ord[i] = &w->items[i];
    qsort(ord, (size_t)w->n, sizeof *ord, st_cmp_item_name);
    for (int i = 1; i < w->n; i++)
        if (strcmp(ord[i - 1]->name, ord[i]->name) == 0)
            return vlm_set_error("safetensors writer: duplicate tensor name '%s'", ord[i]->name);
    qsort(ord, (size_t)w->n, sizeof *ord, st_cmp_item);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        ord[i]->offset = off;
        if (__builtin_add_overflow(off, ord[i]->nbytes, &off))
            return vlm_set_error("safetensors writer: total size overflows");
    }
    return 0;
}

static int st_writer_header(const vlm_st_writer *w, st_item *const *ord, st_buf *b) {
    st_puts(b, "{\"__metadata__\":{");
    for (int i = 0; i < w->n_meta; i++) {
        if (i) st_puts(b, ",");
        st_put_json_str(b, w->meta_key[i]);
        st_puts(b, ":");
        st_put_json_str(b, w->meta_val[i]);
    }
    st_puts(b, "}");
    for (int i = 0; i < w->n; i++) {
        const st_item *it = ord[i];
        st_puts(b, ",");
        st_put_json_str(b, it->name);
        st_puts(b, ":{\"dtype\":\"");
        st_puts(b, st_dtypes[it->dtype].name);
        st_puts(b, "\",\"shape\":[");
        for (int d = 0; d < it->ndim; d++) {
            if (d) st_puts(b, ",");
            st_put_u64(b, (uint64_t)it->shape[d]);
        }
        st_puts(b, "],\"data_offsets\":[");
        st_put_u64(b, it->offset);
        st_puts(b, ",");
        st_put_u64(b, it->offset + it->nbytes);
        st_puts(b, "]}");
    }
    st_puts(b, "}");
    while (!b->oom && b->len % 8)
        st_puts(b, " "); /* data starts 8-aligned */
    if (b->oom) return vlm_set_error("safetensors writer: out of memory for the header");
    if (b->len > ST_MAX_HEADER)
        return vlm_set_error("safetensors writer: header of %zu bytes exceeds the %llu-byte limit",
                             b->len, ST_MAX_HEADER);
    return 0;
}

static int st_fwrite(FILE *f, const void *p, size_t n, const char *tmp) {
    if (n && fwrite(p, 1, n, f) != n)
        return vlm_set_error("safetensors writer: cannot write %s: %s", tmp, strerror(errno));
    return 0;
}

static int st_write_body(FILE *f, const st_buf *hdr, st_item *const *ord, int n, const char *tmp) {
    uint64_t len = hdr->len;
    if (st_fwrite(f, &len, 8, tmp) || st_fwrite(f, hdr->p, hdr->len, tmp)) return -1;
    for (int i = 0; i < n; i++)
        if (st_fwrite(f, ord[i]->data, (size_t)ord[i]->nbytes, tmp)) return -1;
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        return vlm_set_error("safetensors writer: cannot flush %s: %s", tmp, strerror(errno));
    return 0;
}

/* Makes the rename durable. Filesystems without directory fsync say EINVAL. */
static int st_sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return vlm_set_error("safetensors writer: out of memory");
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0 || (fsync(fd) != 0 && errno != EINVAL))
        rc = vlm_set_error(
            "safetensors writer: %s was written but its directory %s could not be synced: %s", path,
            dir, strerror(errno));
    if (fd >= 0) close(fd);
    free(dir);
    return rc;
}

/* Writes "<path>.tmp.<pid>" and renames it over path, so a crash at any point
 * leaves either the old file or the complete new one. */
static int st_write_atomic(const char *path, const st_buf *hdr, st_item *const *ord, int n) {
    size_t cap = strlen(path) + 32;
    char *tmp = malloc(cap);
    if (!tmp) return vlm_set_error("safetensors writer: out of memory");
    snprintf(tmp, cap, "%s.tmp.%ld", path, (long)getpid());
    /* O_TRUNC, not O_EXCL: a temp file left by a crashed run with the same pid
     * (containers reuse pids) must not block saving forever. */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) {
        int rc = vlm_set_error("safetensors writer: cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    FILE *f = fdopen(fd, "wb");
    int rc = f ? st_write_body(f, hdr, ord, n, tmp)
               : vlm_set_error("safetensors writer: cannot open %s: %s", tmp, strerror(errno));
    int closed = f ? fclose(f) : close(fd);
    if (closed != 0 && !rc)
        rc = vlm_set_error("safetensors writer: cannot close %s: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = vlm_set_error("safetensors writer: cannot rename %s to %s: %s", tmp, path,
                           strerror(errno));
    if (rc)
        unlink(tmp);
    else
        rc = st_sync_dir(path);
    free(tmp);
    return rc;
}

int vlm_st_writer_save(vlm_st_writer *w, const char *path) {
    if (!path || !*path) return vlm_set_error("safetensors writer: empty path");
    st_item **ord = malloc((size_t)(w->n ? w->n : 1) * sizeof *ord);
    if (!ord) return vlm_set_error("safetensors writer: out of memory");
    st_buf hdr = {0};
    int rc = st_writer_order(w, ord);
    if (!rc) rc = st_writer_header(w, ord, &hdr);
    if (!rc) rc = st_write_atomic(path, &hdr, ord, w->n);
    free(hdr.p);
    free(ord);
    return rc;
}

/* ---- saving a parameter store ----------------------------------------------- */

static int st_add_params(vlm_st_writer *w, const vlm_params *p, const char *const *skip) {
    for (int i = 0; i < vlm_params_count(p); i++) {
        const vlm_tensor *t = vlm_params_at(p, i);
        if (st_in_list(skip, t->name)) continue;
        if (!t->data)
            return vlm_set_error("safetensors: parameter store not finalized ('%s')", t->name);
        if (vlm_st_writer_add(w, t->name, "F32", t->ndim, t->shape, t->data)) return -1;
    }
    return 0;
}

static int st_add_meta_kv(vlm_st_writer *w, const char *const *kv) {
    for (int i = 0; kv && kv[i]; i += 2) {
        if (!kv[i + 1])
            return vlm_set_error(
                "safetensors: metadata key '%s' has no value (meta_kv needs pairs)", kv[i]);
        if (vlm_st_writer_meta(w, kv[i], kv[i + 1])) return -1;
    }
    return 0;
}

int vlm_st_save_params(const vlm_params *p, const char *path, const char *const *meta_kv,
                       const char *const *skip_names) {
    vlm_st_writer *w = vlm_st_writer_new();
    if (!w) return -1;
    int rc = st_add_params(w, p, skip_names);
    if (!rc) rc = st_add_meta_kv(w, meta_kv);
    if (!rc) rc = vlm_st_writer_save(w, path);
    vlm_st_writer_free(w);
    return rc;
}
