/* spm.c - SentencePiece models (.model files): a protobuf wire-format reader,
 * the normaliser (the precompiled charsmap, a darts-clone double-array trie),
 * Unigram / BPE / WORD / CHAR segmentation, decoding, and SigLIP's text
 * canonicalisation.
 *
 * Every step follows the sentencepiece library 0.1.97 (Debian's
 * python3-sentencepiece), down to its float arithmetic and tie-breaking,
 * because "almost the same ids" is a different model input. The parity
 * fixtures in tests/data/fixtures/spm are produced by that library
 * (scripts/gen_spm_fixtures.py). A model file is untrusted input: every
 * length and index is checked, and a bad file is an error naming the file,
 * the field and the byte offset. */
#include "data.h"

#include <errno.h>
#include <float.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SPACE_SYMBOL "\xe2\x96\x81" /* U+2581: what spaces become inside pieces */
#define SPACE_LEN 3
#define REPLACEMENT "\xef\xbf\xbd" /* U+FFFD for malformed UTF-8 */
#define DEFAULT_UNK_SURFACE " \xe2\x81\x87 " /* " ⁇ ": how <unk> decodes */
#define UNK_PENALTY 10.0f                    /* unigram: unk scores min_score - 10 */
#define MAX_FILE_BYTES ((size_t)1 << 30)
#define MAX_TEXT_BYTES ((size_t)1 << 28) /* keeps every offset in int32 after normalising */

/* ---- small utilities ------------------------------------------------------- */

typedef struct {
    char *p;
    size_t n, cap;
} sbuf;

static int sb_reserve(sbuf *b, size_t extra) {
    if (b->n + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->n + extra + 1) cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return vlm_set_error("spm: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int sb_put(sbuf *b, const void *data, size_t n) {
    if (sb_reserve(b, n) < 0) return -1;
    memcpy(b->p + b->n, data, n);
    b->n += n;
    b->p[b->n] = '\0';
    return 0;
}

/* sentencepiece's OneCharLen: the length a lead byte announces; a stray
 * continuation byte counts as one character. */
static inline size_t one_char_len(uint8_t c) {
    return (size_t)"\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[c >> 4];
}

/* sentencepiece's DecodeUTF8 + IsValidDecodeUTF8: true with the code point and
 * length of a well-formed character (no overlongs, surrogates or > U+10FFFF);
 * false for a malformed byte, which counts as length 1. n >= 1. */
static bool utf8_decode(const uint8_t *s, size_t n, uint32_t *cp, size_t *len) {
    uint32_t c = s[0];
    *len = 1;
    *cp = 0xFFFD;
    if (c < 0x80) {
        *cp = c;
        return true;
    }
    size_t k = (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (k == 0 || n < k) return false;
    static const uint32_t lead_mask[5] = {0, 0, 0x1F, 0x0F, 0x07}, min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
    c &= lead_mask[k];
    for (size_t i = 1; i < k; i++) {
        if ((s[i] & 0xC0) != 0x80) return false;
        c = (c << 6) | (s[i] & 0x3F);
    }
    if (c < min_cp[k] || (c >= 0xD800 && c < 0xE000) || c > 0x10FFFF) return false;
    *cp = c;
    *len = k;
    return true;
}

static size_t utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6);
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* ---- protobuf wire format ---------------------------------------------------- */

/* A message being read: [p, end) is what is left of it; base is the start of
 * the file so errors can give absolute byte offsets. */
typedef struct {
    const uint8_t *base, *p, *end;
    const uint8_t *key_at; /* where the current field's key started */
    const char *file, *msg;
} pb_msg;

typedef struct {
    const uint8_t *p;
    size_t n;
} pb_str;

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };
static const char *const wire_names[8] = {"varint", "64-bit", "length-delimited", "group start",
                                          "group end", "32-bit", "invalid (6)", "invalid (7)"};

__attribute__((format(printf, 4, 5))) static int pb_fail(const pb_msg *m, const uint8_t *at,
                                                          const char *field, const char *fmt, ...) {
    char what[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    vlm_set_error("spm: %s: %s in %s.%s (byte %zu)", m->file, what, m->msg, field,
                  (size_t)(at - m->base));
    return -1;
}

static int pb_varint(pb_msg *m, uint64_t *v, const char *field) {
    const uint8_t *start = m->p;
    uint64_t x = 0;
    *v = 0;
    for (int i = 0; i < 10; i++) {
        if (m->p >= m->end) return pb_fail(m, start, field, "truncated varint");
        uint8_t b = *m->p++;
        x |= (uint64_t)(b & 0x7F) << (7 * i);
        if (!(b & 0x80)) {
            if (i == 9 && b > 1) return pb_fail(m, start, field, "bad varint (overflows 64 bits)");
            *v = x;
            return 0;
        }
    }
    return pb_fail(m, start, field, "bad varint (longer than 10 bytes)");
}

/* Next field: 1 with its number and wire type, 0 at the end of the message,
 * -1 on error. Groups (wire types 3, 4) are not used by sentencepiece. */
static int pb_key(pb_msg *m, uint32_t *field, int *wt) {
    if (m->p >= m->end) return 0;
    m->key_at = m->p;
    uint64_t key;
    if (pb_varint(m, &key, "key") < 0) return -1;
    *wt = (int)(key & 7);
    if (key >> 3 == 0 || key >> 3 > 0x1FFFFFFF)
        return pb_fail(m, m->key_at, "key", "bad field number %llu", (unsigned long long)(key >> 3));
    *field = (uint32_t)(key >> 3);
    if (*wt != WT_VARINT && *wt != WT_I64 && *wt != WT_LEN && *wt != WT_I32)
        return pb_fail(m, m->key_at, "key", "unsupported wire type %s for field %u",
                       wire_names[*wt], *field);
    return 1;
}

/* A length-delimited payload: sub covers it (named sub_name in errors). */
static int pb_len(pb_msg *m, const char *field, pb_msg *sub, const char *sub_name) {
    const uint8_t *at = m->p;
    uint64_t n;
    *sub = *m;
    if (pb_varint(m, &n, field) < 0) return -1;
    size_t left = (size_t)(m->end - m->p);
    if (n > left)
        return pb_fail(m, at, field, "length %llu runs past the end of the message (%zu bytes left)",
                       (unsigned long long)n, left);
    sub->p = m->p;
    sub->end = m->p + n;
    sub->msg = sub_name ? sub_name : m->msg;
    m->p += n;
    return 0;
}

static int pb_skip(pb_msg *m, int wt, const char *field) {
    uint64_t v;
    pb_msg sub;
    if (wt == WT_VARINT) return pb_varint(m, &v, field);
    if (wt == WT_LEN) return pb_len(m, field, &sub, NULL);
    size_t k = wt == WT_I64 ? 8 : 4;
    if ((size_t)(m->end - m->p) < k) return pb_fail(m, m->p, field, "truncated %zu-byte value", k);
    m->p += k;
    return 0;
}

static int pb_want(const pb_msg *m, int wt, int want, const char *field) {
    if (wt == want) return 0;
    return pb_fail(m, m->key_at, field, "wire type %s, expected %s", wire_names[wt], wire_names[want]);
}

/* int32 and enum fields: a varint whose low 32 bits are the two's-complement
 * value (negative numbers are sign-extended to 10 bytes on the wire). */
static int pb_int32(pb_msg *m, int wt, const char *field, int32_t *out) {
    uint64_t v;
    if (pb_want(m, wt, WT_VARINT, field) < 0 || pb_varint(m, &v, field) < 0) return -1;
    *out = (int32_t)(uint32_t)v;
    return 0;
}

static int pb_bool(pb_msg *m, int wt, const char *field, bool *out) {
    uint64_t v;
    if (pb_want(m, wt, WT_VARINT, field) < 0 || pb_varint(m, &v, field) < 0) return -1;
    *out = v != 0;
    return 0;
}

static int pb_bytes(pb_msg *m, int wt, const char *field, pb_str *out) {
    pb_msg sub;
    if (pb_want(m, wt, WT_LEN, field) < 0 || pb_len(m, field, &sub, NULL) < 0) return -1;
    out->p = sub.p;
    out->n = (size_t)(sub.end - sub.p);
    return 0;
}

static int pb_float(pb_msg *m, int wt, const char *field, float *out) {
    if (pb_want(m, wt, WT_I32, field) < 0) return -1;
    if (m->end - m->p < 4) return pb_fail(m, m->p, field, "truncated 4-byte value");
    uint32_t u = le32(m->p);
    memcpy(out, &u, sizeof u);
    m->p += 4;
    return 0;
}

static int pb_skip_unknown(pb_msg *m, uint32_t field, int wt) {
    char name[24];
    snprintf(name, sizeof name, "field %u", field);
    return pb_skip(m, wt, name);
}

/* ---- ModelProto -------------------------------------------------------------- */

/* NormalizerSpec, with proto2 defaults. */
typedef struct {
    bool present, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    pb_str charsmap;
} proto_norm;

/* The fields of a ModelProto that encoding and decoding need; strings point
 * into the file buffer. */
typedef struct {
    pb_str *piece;
    float *score;
    int32_t *type;
    int n, cap;
    int32_t model_type;
    bool byte_fallback, ws_suffix, has_unk_surface;
    pb_str unk_piece, bos_piece, eos_piece, pad_piece, unk_surface;
    proto_norm norm, denorm;
} spm_proto;

static void proto_free(spm_proto *pr) {
    free(pr->piece);
    free(pr->score);
    free(pr->type);
}

static int proto_grow(spm_proto *pr, const char *file) {
    if (pr->n < pr->cap) return 0;
    int cap = pr->cap ? pr->cap * 2 : 1024;
    pb_str *piece = realloc(pr->piece, (size_t)cap * sizeof *piece);
    if (piece) pr->piece = piece;
    float *score = realloc(pr->score, (size_t)cap * sizeof *score);
    if (score) pr->score = score;
    int32_t *type = realloc(pr->type, (size_t)cap * sizeof *type);
    if (type) pr->type = type;
    if (!piece || !score || !type) return vlm_set_error("spm: %s: out of memory for %d pieces", file, cap);
    pr->cap = cap;
    return 0;
}

/* SentencePiece {piece = 1, score = 2, type = 3 (default NORMAL)} */
static int parse_piece(pb_msg *m, spm_proto *pr) {
    if (proto_grow(pr, m->file) < 0) return -1;
    int i = pr->n;
    pr->piece[i] = (pb_str){NULL, 0};
    pr->score[i] = 0.0f;
    pr->type[i] = VLM_SPM_NORMAL;
    uint32_t f;
    int wt, r;
    while ((r = pb_key(m, &f, &wt)) == 1) {
        int rc = f == 1   ? pb_bytes(m, wt, "piece", &pr->piece[i])
                 : f == 2 ? pb_float(m, wt, "score", &pr->score[i])
                 : f == 3 ? pb_int32(m, wt, "type", &pr->type[i])
                          : pb_skip_unknown(m, f, wt);
        if (rc < 0) return -1;
    }
    if (r < 0) return -1;
    pr->n++;
    return 0;
}

static int parse_trainer(pb_msg *m, spm_proto *pr) {
    uint32_t f;
    int wt, r;
    while ((r = pb_key(m, &f, &wt)) == 1) {
        int rc;
        switch (f) {
        case 3: rc = pb_int32(m, wt, "model_type", &pr->model_type); break;
        case 24: rc = pb_bool(m, wt, "treat_whitespace_as_suffix", &pr->ws_suffix); break;
        case 35: rc = pb_bool(m, wt, "byte_fallback", &pr->byte_fallback); break;
        case 44:
            rc = pb_bytes(m, wt, "unk_surface", &pr->unk_surface);
            pr->has_unk_surface = true;
            break;
        case 45: rc = pb_bytes(m, wt, "unk_piece", &pr->unk_piece); break;
        case 46: rc = pb_bytes(m, wt, "bos_piece", &pr->bos_piece); break;
        case 47: rc = pb_bytes(m, wt, "eos_piece", &pr->eos_piece); break;
        case 48: rc = pb_bytes(m, wt, "pad_piece", &pr->pad_piece); break;
        default: rc = pb_skip_unknown(m, f, wt); /* vocab_size, ids, training options */
        }
        if (rc < 0) return -1;
    }
    return r;
}

static int parse_normalizer(pb_msg *m, proto_norm *nm) {
    nm->present = true;
    uint32_t f;
    int wt, r;
    while ((r = pb_key(m, &f, &wt)) == 1) {
        int rc = f == 2   ? pb_bytes(m, wt, "precompiled_charsmap", &nm->charsmap)
                 : f == 3 ? pb_bool(m, wt, "add_dummy_prefix", &nm->add_dummy_prefix)
                 : f == 4 ? pb_bool(m, wt, "remove_extra_whitespaces", &nm->remove_extra_whitespaces)
                 : f == 5 ? pb_bool(m, wt, "escape_whitespaces", &nm->escape_whitespaces)
                          : pb_skip_unknown(m, f, wt); /* name, normalization_rule_tsv */
        if (rc < 0) return -1;
    }
    return r;
}

/* ModelProto {pieces = 1, trainer_spec = 2, normalizer_spec = 3,
 * self_test_data = 4, denormalizer_spec = 5}. A sub-message that occurs twice
 * is merged, as protobuf does. */
static int parse_model(const uint8_t *data, size_t size, const char *file, spm_proto *pr) {
    pb_msg m = {data, data, data + size, data, file, "ModelProto"};
    pr->model_type = VLM_SPM_UNIGRAM;
    pr->norm = pr->denorm = (proto_norm){false, true, true, true, {NULL, 0}};
    uint32_t f;
    int wt, r;
    while ((r = pb_key(&m, &f, &wt)) == 1) {
        pb_msg sub;
        char name[32];
        int rc;
        switch (f) {
        case 1:
            snprintf(name, sizeof name, "pieces[%d]", pr->n);
            rc = pb_want(&m, wt, WT_LEN, name) < 0 || pb_len(&m, name, &sub, name) < 0
                     ? -1 : parse_piece(&sub, pr);
            break;
        case 2:
            rc = pb_want(&m, wt, WT_LEN, "trainer_spec") < 0 ||
                         pb_len(&m, "trainer_spec", &sub, "trainer_spec") < 0
                     ? -1 : parse_trainer(&sub, pr);
            break;
        case 3:
        case 5: {
            const char *nm = f == 3 ? "normalizer_spec" : "denormalizer_spec";
            rc = pb_want(&m, wt, WT_LEN, nm) < 0 || pb_len(&m, nm, &sub, nm) < 0
                     ? -1 : parse_normalizer(&sub, f == 3 ? &pr->norm : &pr->denorm);
            break;
        }
        default: rc = pb_skip_unknown(&m, f, wt); /* self_test_data */
        }
        if (rc < 0) return -1;
    }
    return r;
}

/* ---- the loaded model ---------------------------------------------------------- */

/* A normaliser: NormalizerSpec flags plus its decoded charsmap. */
typedef struct {
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    uint32_t *units; /* darts-clone double array; NULL = no rules (identity) */
    size_t n_units;
    char *targets; /* replacement strings, each NUL-terminated, plus a final NUL */
    size_t targets_len;
} spm_norm;

/* Open-addressing hash set of piece ids, keyed by the piece string. */
typedef struct {
    int32_t *slot; /* -1 = empty */
    uint32_t mask;
} spm_map;

/* Byte trie over pieces. Node 0 is the root; the children of a node are
 * contiguous and sorted by label, so a step is a binary search. */
typedef struct {
    int32_t value; /* piece id ending here, or -1 */
    int32_t child, n_child;
    uint8_t label;
} trie_node;

typedef struct {
    trie_node *node;
    int32_t n;
} spm_trie;

struct vlm_spm {
    char *name;
    vlm_spm_type type;
    int n;          /* pieces */
    char *pool;     /* the piece strings, NUL-terminated */
    uint32_t *off, *len;
    float *score;
    uint8_t *ptype; /* vlm_spm_piece_type */
    bool byte_fallback, ws_suffix;
    char *unk_surface;
    int unk_index;          /* the UNKNOWN piece: what the segmenters emit */
    int unk, bos, eos, pad; /* as sentencepiece reports them (-1 = none) */
    float min_score, max_score;
    spm_norm norm, denorm;
    bool has_denorm;
    spm_map normal, reserved; /* NORMAL/USER_DEFINED/UNUSED vs the rest */
    spm_trie pieces_trie;     /* the normal map's pieces (Unigram lattice) */
    spm_trie user_trie;       /* user-defined pieces: matched before anything else */
    int32_t byte_id[256];
};

static inline const char *piece_str(const vlm_spm *s, int id) { return s->pool + s->off[id]; }

static uint64_t fnv1a(const void *data, size_t n) {
    const uint8_t *p = data;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static int map_init(spm_map *m, int count) {
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)count) cap *= 2;
    m->slot = malloc(cap * sizeof *m->slot);
    if (!m->slot) return vlm_set_error("spm: out of memory for a %u-slot piece map", cap);
    memset(m->slot, 0xFF, cap * sizeof *m->slot);
    m->mask = cap - 1;
    return 0;
}

/* The id of the piece p[0..n) in m, or -1. With insert >= 0, adds that id when
 * the piece is absent (and still returns -1). */
static int32_t map_lookup(const vlm_spm *s, const spm_map *m, const char *p, size_t n, int32_t insert) {
    for (uint32_t i = (uint32_t)fnv1a(p, n) & m->mask;; i = (i + 1) & m->mask) {
        int32_t id = m->slot[i];
        if (id < 0) {
            if (insert >= 0) m->slot[i] = insert;
            return -1;
        }
        if (s->len[id] == n && !memcmp(piece_str(s, id), p, n)) return id;
    }
}

/* sentencepiece's PieceToId: control/unknown/byte pieces first, then the
 * others, and the unknown piece for anything else. */
static int32_t piece_to_id(const vlm_spm *s, const char *p, size_t n) {
    int32_t id = map_lookup(s, &s->reserved, p, n, -1);
    if (id < 0) id = map_lookup(s, &s->normal, p, n, -1);
    return id < 0 ? s->unk_index : id;
}

static int32_t trie_child(const spm_trie *t, int32_t node, uint8_t c) {
    int32_t lo = t->node[node].child, hi = lo + t->node[node].n_child;
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (t->node[mid].label < c) lo = mid + 1;
        else hi = mid;
    }
    return lo < t->node[node].child + t->node[node].n_child && t->node[lo].label == c ? lo : -1;
}

/* Length of the longest piece in t that is a prefix of s[0..n) (0 if none). */
static size_t trie_longest(const spm_trie *t, const uint8_t *s, size_t n) {
    size_t best = 0;
    int32_t node = 0;
    for (size_t i = 0; i < n && t->n > 1; i++) {
        if ((node = trie_child(t, node, s[i])) < 0) break;
        if (t->node[node].value >= 0) best = i + 1;
    }
    return best;
}

typedef struct {
    const uint8_t *p;
    uint32_t n;
    int32_t id;
} trie_key;

static int key_cmp(const void *a, const void *b) {
    const trie_key *x = a, *y = b;
    int c = memcmp(x->p, y->p, x->n < y->n ? x->n : y->n);
    return c ? c : (x->n > y->n) - (x->n < y->n);
}

/* Builds the trie breadth-first over the sorted keys: node i covers the keys
 * [lo[i], hi[i]) that share its depth[i]-byte prefix, and appends all of its
 * children at once, which keeps them contiguous. */
static int trie_build(spm_trie *t, const vlm_spm *s, bool (*want)(int type)) {
    size_t m = 0, total = 1;
    for (int i = 0; i < s->n; i++)
        if (want(s->ptype[i])) m++, total += s->len[i];
    trie_key *key = malloc((m ? m : 1) * sizeof *key);
    t->node = malloc(total * sizeof *t->node);
    int32_t *lo = malloc(total * sizeof *lo), *hi = malloc(total * sizeof *hi);
    uint32_t *depth = malloc(total * sizeof *depth);
    int rc = 0;
    if (!key || !t->node || !lo || !hi || !depth) {
        rc = vlm_set_error("spm: out of memory for a trie of %zu pieces", m);
        goto done;
    }
    m = 0;
    for (int i = 0; i < s->n; i++)
        if (want(s->ptype[i])) key[m++] = (trie_key){(const uint8_t *)piece_str(s, i), s->len[i], i};
    qsort(key, m, sizeof *key, key_cmp);
    t->n = 1;
    t->node[0] = (trie_node){-1, 1, 0, 0};
    lo[0] = 0, hi[0] = (int32_t)m, depth[0] = 0;
    for (int32_t i = 0; i < t->n; i++) {
        int32_t a = lo[i], b = hi[i];
        uint32_t d = depth[i];
        t->node[i].value = -1;
        if (a < b && key[a].n == d) t->node[i].value = key[a++].id; /* the shortest sorts first */
        t->node[i].child = t->n;
        while (a < b) {
            int32_t c = a;
            while (c < b && key[c].p[d] == key[a].p[d]) c++;
            int32_t k = t->n++;
            t->node[k] = (trie_node){-1, 0, 0, key[a].p[d]};
            lo[k] = a, hi[k] = c, depth[k] = d + 1;
            a = c;
        }
        t->node[i].n_child = t->n - t->node[i].child;
    }
done:
    free(key);
    free(lo);
    free(hi);
    free(depth);
    return rc;
}

static bool is_vocab_type(int type) {
    return type == VLM_SPM_NORMAL || type == VLM_SPM_USER_DEFINED || type == VLM_SPM_UNUSED;
}
static bool is_user_type(int type) { return type == VLM_SPM_USER_DEFINED; }

/* "<0x41>" -> 0x41 as sentencepiece's PieceToByte (upper-case hex only); -1 otherwise. */
static int piece_byte(const char *p, size_t n) {
    static const char hex[] = "0123456789ABCDEF";
    if (n != 6 || memcmp(p, "<0x", 3) || p[5] != '>') return -1;
    const char *h = p[3] ? strchr(hex, p[3]) : NULL, *l = p[4] ? strchr(hex, p[4]) : NULL;
    return h && l ? (int)((h - hex) * 16 + (l - hex)) : -1;
}

/* The precompiled charsmap: [u32 trie bytes][double array][replacement
 * strings]. Checked here as far as possible; a walk that still leaves the
 * array is reported when it happens. */
static int charsmap_load(spm_norm *nm, const proto_norm *pn, const char *file, const char *what) {
    nm->add_dummy_prefix = pn->add_dummy_prefix;
    nm->remove_extra_whitespaces = pn->remove_extra_whitespaces;
    nm->escape_whitespaces = pn->escape_whitespaces;
    size_t n = pn->charsmap.n;
    if (n == 0) return 0;
    const uint8_t *p = pn->charsmap.p;
    uint32_t trie_bytes = n > 4 ? le32(p) : 0;
    if (n <= 4 || trie_bytes == 0 || trie_bytes % 4 || trie_bytes > n - 4)
        return vlm_set_error("spm: %s: %s.precompiled_charsmap is broken (%zu bytes, trie size %u)",
                             file, what, n, trie_bytes);
    nm->n_units = trie_bytes / 4;
    nm->targets_len = n - 4 - trie_bytes;
    nm->units = malloc(trie_bytes);
    nm->targets = malloc(nm->targets_len + 1);
    if (!nm->units || !nm->targets) return vlm_set_error("spm: %s: out of memory for the charsmap", file);
    for (size_t i = 0; i < nm->n_units; i++) nm->units[i] = le32(p + 4 + 4 * i);
    memcpy(nm->targets, p + 4 + trie_bytes, nm->targets_len);
    nm->targets[nm->targets_len] = '\0'; /* so the last string is terminated whatever the file says */
    return 0;
}

void vlm_spm_free(vlm_spm *s) {
    if (!s) return;
    free(s->name);
    free(s->pool);
    free(s->off);
    free(s->len);
    free(s->score);
    free(s->ptype);
    free(s->unk_surface);
    free(s->norm.units);
    free(s->norm.targets);
    free(s->denorm.units);
    free(s->denorm.targets);
    free(s->normal.slot);
    free(s->reserved.slot);
    free(s->pieces_trie.node);
    free(s->user_trie.node);
    free(s);
}

/* Copies the pieces into one pool and checks them as sentencepiece's
 * InitializePieces does (non-empty, no NUL, known type, no duplicates). */
static int build_pieces(vlm_spm *s, const spm_proto *pr) {
    size_t total = 0;
    for (int i = 0; i < pr->n; i++) total += pr->piece[i].n + 1;
    s->pool = malloc(total);
    s->off = malloc((size_t)pr->n * sizeof *s->off);
    s->len = malloc((size_t)pr->n * sizeof *s->len);
    s->score = malloc((size_t)pr->n * sizeof *s->score);
    s->ptype = malloc((size_t)pr->n);
    if (!s->pool || !s->off || !s->len || !s->score || !s->ptype ||
        map_init(&s->normal, pr->n) < 0 || map_init(&s->reserved, pr->n) < 0)
        return vlm_set_error("spm: %s: out of memory for %d pieces", s->name, pr->n);
    size_t at = 0;
    for (int i = 0; i < pr->n; i++) {
        const pb_str *w = &pr->piece[i];
        if (w->n == 0) return vlm_set_error("spm: %s: piece %d is empty", s->name, i);
        if (memchr(w->p, 0, w->n)) return vlm_set_error("spm: %s: piece %d contains a NUL byte", s->name, i);
        if (pr->type[i] < VLM_SPM_NORMAL || pr->type[i] > VLM_SPM_BYTE)
            return vlm_set_error("spm: %s: piece %d has invalid type %d", s->name, i, pr->type[i]);
        memcpy(s->pool + at, w->p, w->n);
        s->pool[at + w->n] = '\0';
        s->off[i] = (uint32_t)at, s->len[i] = (uint32_t)w->n;
        s->score[i] = pr->score[i];
        s->ptype[i] = (uint8_t)pr->type[i];
        at += w->n + 1;
        s->n = i + 1;
        spm_map *m = is_vocab_type(s->ptype[i]) ? &s->normal : &s->reserved;
        int32_t dup = map_lookup(s, m, piece_str(s, i), w->n, i);
        if (dup >= 0)
            return vlm_set_error("spm: %s: piece \"%s\" is defined twice (ids %d and %d)", s->name,
                                 piece_str(s, i), dup, i);
    }
    return 0;
}

/* The unknown piece, byte pieces and score range. */
static int check_specials(vlm_spm *s) {
    s->unk_index = -1;
    bool have_byte[256] = {false};
    s->min_score = FLT_MAX;
    s->max_score = FLT_MIN; /* sic: sentencepiece starts from the smallest positive float */
    for (int i = 0; i < s->n; i++) {
        int t = s->ptype[i];
        if (t == VLM_SPM_UNKNOWN) {
            if (s->unk_index >= 0)
                return vlm_set_error("spm: %s: two unknown pieces (ids %d and %d)", s->name, s->unk_index, i);
            s->unk_index = i;
        } else if (t == VLM_SPM_BYTE) {
            int b = piece_byte(piece_str(s, i), s->len[i]);
            if (!s->byte_fallback)
                return vlm_set_error("spm: %s: byte piece %d \"%s\" although byte_fallback is off",
                                     s->name, i, piece_str(s, i));
            if (b < 0) return vlm_set_error("spm: %s: invalid byte piece %d \"%s\"", s->name, i, piece_str(s, i));
            have_byte[b] = true;
            s->byte_id[b] = i;
        } else if (t == VLM_SPM_NORMAL) {
            if (s->score[i] < s->min_score) s->min_score = s->score[i];
            if (s->score[i] > s->max_score) s->max_score = s->score[i];
        }
    }
    if (s->unk_index < 0) return vlm_set_error("spm: %s: no unknown piece (<unk>) defined", s->name);
    for (int b = 0; b < 256 && s->byte_fallback; b++)
        if (!have_byte[b])
            return vlm_set_error("spm: %s: byte_fallback is on but piece <0x%02X> is missing", s->name, b);
    return 0;
}

/* sentencepiece's unk_id() / bos_id() ...: the piece named in the trainer
 * spec, if it exists with the right type. */
static int special_id(const vlm_spm *s, pb_str name, const char *dflt, int type) {
    const char *p = name.n ? (const char *)name.p : dflt;
    size_t n = name.n ? name.n : strlen(dflt);
    int id = piece_to_id(s, p, n);
    return s->ptype[id] == type ? id : -1;
}

static vlm_spm *spm_build(const spm_proto *pr, const char *name) {
    vlm_spm *s = calloc(1, sizeof *s);
    if (!s || !(s->name = strdup(name))) {
        free(s);
        vlm_set_error("spm: out of memory loading %s", name);
        return NULL;
    }
    s->type = (vlm_spm_type)pr->model_type;
    s->byte_fallback = pr->byte_fallback;
    s->ws_suffix = pr->ws_suffix;
    if (pr->model_type < VLM_SPM_UNIGRAM || pr->model_type > VLM_SPM_CHAR) {
        vlm_set_error("spm: %s: unknown trainer_spec.model_type %d", name, pr->model_type);
        goto fail;
    }
    if (pr->n == 0) {
        vlm_set_error("spm: %s: the model has no pieces", name);
        goto fail;
    }
    if (build_pieces(s, pr) < 0 || check_specials(s) < 0) goto fail;
    if (trie_build(&s->pieces_trie, s, is_vocab_type) < 0 || trie_build(&s->user_trie, s, is_user_type) < 0)
        goto fail;
    if (charsmap_load(&s->norm, &pr->norm, name, "normalizer_spec") < 0) goto fail;
    s->has_denorm = pr->denorm.present && pr->denorm.charsmap.n > 0;
    if (s->has_denorm && charsmap_load(&s->denorm, &pr->denorm, name, "denormalizer_spec") < 0) goto fail;
    const pb_str surf = pr->has_unk_surface ? pr->unk_surface : (pb_str){(const uint8_t *)DEFAULT_UNK_SURFACE, strlen(DEFAULT_UNK_SURFACE)};
    if (!(s->unk_surface = strndup((const char *)surf.p, surf.n))) {
        vlm_set_error("spm: out of memory loading %s", name);
        goto fail;
    }
    s->unk = special_id(s, pr->unk_piece, "<unk>", VLM_SPM_UNKNOWN);
    s->bos = special_id(s, pr->bos_piece, "<s>", VLM_SPM_CONTROL);
    s->eos = special_id(s, pr->eos_piece, "</s>", VLM_SPM_CONTROL);
    s->pad = special_id(s, pr->pad_piece, "<pad>", VLM_SPM_CONTROL);
    return s;
fail:
    vlm_spm_free(s);
    return NULL;
}

vlm_spm *vlm_spm_load_buffer(const void *data, size_t size, const char *name) {
    if (!name) name = "buffer";
    if (!data && size) {
        vlm_set_error("spm: %s: NULL data", name);
        return NULL;
    }
    if (size == 0) {
        vlm_set_error("spm: %s: empty file", name);
        return NULL;
    }
    spm_proto pr = {0};
    vlm_spm *s = parse_model(data, size, name, &pr) < 0 ? NULL : spm_build(&pr, name);
    proto_free(&pr);
    return s;
}

vlm_spm *vlm_spm_load(const char *path) {
    if (!path) {
        vlm_set_error("spm: NULL path");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        vlm_set_error("spm: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    long size = -1;
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) errno = EISDIR;
    else if (fseek(f, 0, SEEK_END) == 0) size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        vlm_set_error("spm: cannot read %s: %s", path, strerror(errno));
    } else if ((size_t)size > MAX_FILE_BYTES) {
        vlm_set_error("spm: %s: %ld bytes is too large for a model file", path, size);
    } else if (!(buf = malloc(size ? (size_t)size : 1))) {
        vlm_set_error("spm: out of memory reading %s (%ld bytes)", path, size);
    } else if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        vlm_set_error("spm: cannot read %s: short read", path);
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (!buf) return NULL;
    vlm_spm *s = vlm_spm_load_buffer(buf, (size_t)size, path);
    free(buf);
    return s;
}

int vlm_spm_size(const vlm_spm *s) { return s ? s->n : 0; }
vlm_spm_type vlm_spm_model_type(const vlm_spm *s) { return s ? s->type : VLM_SPM_UNIGRAM; }
const char *vlm_spm_piece(const vlm_spm *s, int id) { return s && id >= 0 && id < s->n ? piece_str(s, id) : NULL; }
float vlm_spm_score(const vlm_spm *s, int id) { return s && id >= 0 && id < s->n ? s->score[id] : 0.0f; }
int vlm_spm_type_of(const vlm_spm *s, int id) { return s && id >= 0 && id < s->n ? s->ptype[id] : 0; }
int vlm_spm_piece_to_id(const vlm_spm *s, const char *piece) {
    return s && piece ? piece_to_id(s, piece, strlen(piece)) : -1;
}
int vlm_spm_unk_id(const vlm_spm *s) { return s ? s->unk : -1; }
int vlm_spm_bos_id(const vlm_spm *s) { return s ? s->bos : -1; }
int vlm_spm_eos_id(const vlm_spm *s) { return s ? s->eos : -1; }
int vlm_spm_pad_id(const vlm_spm *s) { return s ? s->pad : -1; }

/* ---- normalisation -------------------------------------------------------------- */

/* darts-clone's 32-bit unit: has_leaf bit 8, value = low 31 bits, label = low
 * byte (+ bit 31 so a value unit never matches a label), offset in bits 10..31
 * scaled by 2^8 when bit 9 is set. */
static inline bool du_has_leaf(uint32_t u) { return (u >> 8) & 1; }
static inline uint32_t du_value(uint32_t u) { return u & 0x7FFFFFFFu; }
static inline uint32_t du_label(uint32_t u) { return u & (0x80000000u | 0xFFu); }
static inline uint32_t du_offset(uint32_t u) { return (u >> 10) << ((u & (1u << 9)) >> 6); }

/* darts-clone's commonPrefixSearch as the normaliser uses it: of the first 32
 * rules that are prefixes of s (shortest first), the longest. *len = 0 when
 * none matches. -1 if the walk leaves the array (a corrupt charsmap). */
static int charsmap_match(const spm_norm *nm, const char *file, const uint8_t *s, size_t n,
                          size_t *len, const char **rep) {
    enum { MAX_RESULTS = 32 }; /* Normalizer::kMaxTrieResultsSize */
    size_t pos = du_offset(nm->units[0]), found = 0;
    *len = 0;
    for (size_t i = 0; i < n; i++) {
        pos ^= s[i];
        if (pos >= nm->n_units) break; /* darts never leaves its array: no match */
        uint32_t unit = nm->units[pos];
        if (du_label(unit) != s[i]) break;
        pos ^= du_offset(unit);
        if (!du_has_leaf(unit)) continue;
        if (pos >= nm->n_units) return vlm_set_error("spm: %s: corrupt precompiled_charsmap (leaf outside the trie)", file);
        if (found++ < MAX_RESULTS) {
            uint32_t v = du_value(nm->units[pos]);
            if (v >= nm->targets_len)
                return vlm_set_error("spm: %s: corrupt precompiled_charsmap (replacement %u past the end)", file, v);
            *len = i + 1;
            *rep = nm->targets + v;
        }
    }
    return 0;
}

/* Normalizer::NormalizePrefix: how many input bytes the next step consumes and
 * what they become. User-defined pieces pass unchanged, then the longest
 * charsmap rule, else one character (a malformed byte becomes U+FFFD). */
static int normalize_prefix(const vlm_spm *s, const spm_norm *nm, bool user, const uint8_t *in,
                            size_t n, const char **rep, size_t *rep_len, size_t *consumed) {
    size_t k = user ? trie_longest(&s->user_trie, in, n) : 0;
    if (k) {
        *rep = (const char *)in, *rep_len = *consumed = k;
        return 0;
    }
    if (nm->units) {
        if (charsmap_match(nm, s->name, in, n, &k, rep) < 0) return -1;
        if (k) {
            *rep_len = strlen(*rep), *consumed = k;
            return 0;
        }
    }
    uint32_t cp;
    if (utf8_decode(in, n, &cp, &k)) {
        *rep = (const char *)in, *rep_len = *consumed = k;
    } else {
        *rep = REPLACEMENT, *rep_len = 3, *consumed = 1;
    }
    return 0;
}

static bool ends_with(const sbuf *b, const char *x, size_t n) {
    return b->n >= n && !memcmp(b->p + b->n - n, x, n);
}

/* Normalizer::Normalize: drops leading, trailing and repeated spaces (if
 * remove_extra_whitespaces), adds the dummy "▁" prefix (or suffix when
 * whitespace is a suffix), and turns spaces into "▁" (escape_whitespaces). */
static int normalize(const vlm_spm *s, const spm_norm *nm, bool user, bool suffix, const char *text,
                     size_t n, sbuf *out) {
    const uint8_t *in = (const uint8_t *)text;
    const char *rep, *ws = nm->escape_whitespaces ? SPACE_SYMBOL : " ";
    const size_t ws_len = nm->escape_whitespaces ? SPACE_LEN : 1;
    size_t rep_len, used;
    out->n = 0;
    if (sb_reserve(out, n * 3 + 8) < 0) return -1;
    out->p[0] = '\0';
    while (nm->remove_extra_whitespaces && n > 0) {
        if (normalize_prefix(s, nm, user, in, n, &rep, &rep_len, &used) < 0) return -1;
        if (rep_len != 1 || rep[0] != ' ') break;
        in += used, n -= used;
    }
    if (n == 0) return 0;
    if (!suffix && nm->add_dummy_prefix && sb_put(out, ws, ws_len) < 0) return -1;
    bool prev_space = nm->remove_extra_whitespaces;
    while (n > 0) {
        if (normalize_prefix(s, nm, user, in, n, &rep, &rep_len, &used) < 0) return -1;
        while (prev_space && rep_len > 0 && rep[0] == ' ') rep++, rep_len--;
        if (rep_len > 0) {
            for (size_t i = 0; i < rep_len; i++) {
                bool sp = rep[i] == ' ' && nm->escape_whitespaces;
                if (sb_put(out, sp ? SPACE_SYMBOL : rep + i, sp ? SPACE_LEN : 1) < 0) return -1;
            }
            prev_space = rep[rep_len - 1] == ' ';
        }
        in += used, n -= used;
        if (!nm->remove_extra_whitespaces) prev_space = false;
    }
    while (nm->remove_extra_whitespaces && ends_with(out, ws, ws_len)) out->n -= ws_len;
    if (suffix && nm->add_dummy_prefix && sb_put(out, ws, ws_len) < 0) return -1;
    out->p[out->n] = '\0';
    return 0;
}

/* ---- segmentation ------------------------------------------------------------------ */

/* A piece of the normalised text: bytes [start, start + len) and its id. */
typedef struct {
    int32_t start, len, id;
} spm_tok;

typedef struct {
    spm_tok *t;
    int32_t n, cap;
} tok_list;

static int tok_push(tok_list *l, int32_t start, int32_t len, int32_t id) {
    if (l->n == l->cap) {
        int32_t cap = l->cap ? l->cap * 2 : 64;
        spm_tok *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t) return vlm_set_error("spm: out of memory (%d pieces)", cap);
        l->t = t, l->cap = cap;
    }
    l->t[l->n++] = (spm_tok){start, len, id};
    return 0;
}

/* The length of the character at text[at], as sentencepiece counts it. */
static int32_t char_len_at(const char *text, int32_t at, int32_t size) {
    int32_t n = (int32_t)one_char_len((uint8_t)text[at]);
    return n < size - at ? n : size - at;
}

/* Unigram: sentencepiece's EncodeOptimized, a Viterbi pass over byte positions
 * that keeps the best path ending at each one (start < 0: none yet). */
typedef struct {
    float score;
    int32_t start, id;
} uni_best;

/* Offers every piece that starts at byte st to the paths ending where it
 * ends. The arithmetic is sentencepiece's, because ties decide ids: a piece's
 * score is a double (the literal 0.1 of the user-defined bonus makes the
 * expression double), added in double to the stored float path score,
 * compared in double and stored as float. Only a strictly better path
 * replaces one found before. Returns whether a piece covers exactly the
 * character at st. */
static bool unigram_offer_pieces(const vlm_spm *s, const char *text, int32_t st, int32_t size,
                                 int32_t mblen, uni_best *best) {
    const float till = best[st].score;
    bool single = false;
    int32_t nd = 0;
    for (int32_t k = st; k < size;) {
        if ((nd = trie_child(&s->pieces_trie, nd, (uint8_t)text[k++])) < 0) break;
        const int32_t id = s->pieces_trie.node[nd].value, length = k - st;
        if (id < 0 || s->ptype[id] == VLM_SPM_UNUSED) continue;
        /* User-defined pieces get bytes * max_score - 0.1, to be chosen whole. */
        double sc = s->ptype[id] == VLM_SPM_USER_DEFINED ? (double)((float)length * s->max_score) - 0.1
                                                          : (double)s->score[id];
        double cand = sc + (double)till;
        if (best[k].start < 0 || cand > (double)best[k].score) best[k] = (uni_best){(float)cand, st, id};
        if (length == mblen) single = true;
    }
    return single;
}

static int encode_unigram(const vlm_spm *s, const char *text, int32_t size, tok_list *out) {
    uni_best *best = malloc((size_t)(size + 1) * sizeof *best);
    if (!best) return vlm_set_error("spm: out of memory encoding %d bytes", size);
    for (int32_t i = 0; i <= size; i++) best[i] = (uni_best){0.0f, -1, -1};
    const float unk_score = s->min_score - UNK_PENALTY;
    for (int32_t st = 0, mblen; st < size; st += mblen) {
        mblen = char_len_at(text, st, size);
        if (unigram_offer_pieces(s, text, st, size, mblen, best)) continue;
        /* No piece for this character: an unknown node, float arithmetic. */
        float cand = unk_score + best[st].score;
        uni_best *b = &best[st + mblen];
        if (b->start < 0 || cand > b->score) *b = (uni_best){cand, st, s->unk_index};
    }
    /* Backtrack from the end, then reverse in place. */
    int rc = 0, first = out->n;
    for (int32_t end = size; end > 0 && rc == 0; end = best[end].start) {
        if (best[end].start < 0) {
            rc = vlm_set_error("spm: %s: no segmentation reaches byte %d", s->name, end);
            break;
        }
        rc = tok_push(out, best[end].start, end - best[end].start, best[end].id);
    }
    for (int32_t i = first, j = out->n - 1; i < j; i++, j--) {
        spm_tok t = out->t[i];
        out->t[i] = out->t[j], out->t[j] = t;
    }
    free(best);
    return rc;
}

/* The initial symbols of BPE and CHAR: user-defined pieces whole (frozen:
 * never merged), else one character. */
static int32_t next_symbol(const vlm_spm *s, const char *text, int32_t at, int32_t size, bool *frozen) {
    size_t k = trie_longest(&s->user_trie, (const uint8_t *)text + at, (size_t)(size - at));
    *frozen = k > 0;
    return k ? (int32_t)k : char_len_at(text, at, size);
}

typedef struct {
    int32_t prev, next, start, len;
    bool frozen;
} bpe_sym;

typedef struct {
    int32_t left, right, size;
    float score;
} bpe_pair;

typedef struct { /* an UNUSED piece met while merging, and where it splits */
    int32_t start, len, left_len;
} bpe_rev;

typedef struct {
    const vlm_spm *s;
    const char *text;
    bpe_sym *sym;
    bpe_pair *heap;
    int32_t n_heap, cap_heap;
    bpe_rev *rev, *stack; /* stack: bpe_emit's pending (start, len) */
    int32_t n_rev, cap_rev, n_stack, cap_stack;
} bpe_state;

/* std::priority_queue order of bpe_model.cc: higher score first, then the
 * leftmost pair. */
static bool pair_before(const bpe_pair *a, const bpe_pair *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int grow(void **p, int32_t *cap, size_t elem) {
    int32_t c = *cap ? *cap * 2 : 64;
    void *q = realloc(*p, (size_t)c * elem);
    if (!q) return vlm_set_error("spm: out of memory (BPE, %d entries)", c);
    *p = q, *cap = c;
    return 0;
}

static int heap_push(bpe_state *b, bpe_pair x) {
    if (b->n_heap == b->cap_heap && grow((void **)&b->heap, &b->cap_heap, sizeof x) < 0) return -1;
    int32_t i = b->n_heap++;
    while (i > 0 && pair_before(&x, &b->heap[(i - 1) / 2])) {
        b->heap[i] = b->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    b->heap[i] = x;
    return 0;
}

static bpe_pair heap_pop(bpe_state *b) {
    bpe_pair top = b->heap[0], x = b->heap[--b->n_heap];
    int32_t i = 0, n = b->n_heap;
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && pair_before(&b->heap[c + 1], &b->heap[c])) c++;
        if (!pair_before(&b->heap[c], &x)) break;
        b->heap[i] = b->heap[c];
        i = c;
    }
    if (n > 0) b->heap[i] = x;
    return top;
}

/* MaybeAddNewSymbolPair: queue left+right if it is a piece. */
static int bpe_add_pair(bpe_state *b, int32_t left, int32_t right) {
    if (left < 0 || right < 0 || b->sym[left].frozen || b->sym[right].frozen) return 0;
    const bpe_sym *l = &b->sym[left], *r = &b->sym[right];
    int32_t id = map_lookup(b->s, &b->s->normal, b->text + l->start, (size_t)(l->len + r->len), -1);
    if (id < 0) return 0;
    if (heap_push(b, (bpe_pair){left, right, l->len + r->len, b->s->score[id]}) < 0) return -1;
    if (b->s->ptype[id] != VLM_SPM_UNUSED) return 0;
    if (b->n_rev == b->cap_rev && grow((void **)&b->rev, &b->cap_rev, sizeof *b->rev) < 0) return -1;
    b->rev[b->n_rev++] = (bpe_rev){l->start, l->len + r->len, l->len};
    return 0;
}

/* rev_merge lookup: the latest split recorded for this string (later
 * records overwrite earlier ones in sentencepiece's map). */
static const bpe_rev *bpe_find_rev(const bpe_state *b, int32_t start, int32_t len) {
    for (int32_t i = b->n_rev - 1; i >= 0; i--)
        if (b->rev[i].len == len && !memcmp(b->text + b->rev[i].start, b->text + start, (size_t)len))
            return &b->rev[i];
    return NULL;
}

/* Emits a final symbol; an UNUSED piece is split back into the two symbols it
 * was merged from, recursively (explicit stack, right half pushed first). */
static int bpe_emit(bpe_state *b, int32_t start, int32_t len, tok_list *out) {
    b->n_stack = 0;
    if (b->cap_stack == 0 && grow((void **)&b->stack, &b->cap_stack, sizeof *b->stack) < 0) return -1;
    b->stack[b->n_stack++] = (bpe_rev){start, len, 0};
    while (b->n_stack > 0) {
        bpe_rev x = b->stack[--b->n_stack];
        int32_t id = piece_to_id(b->s, b->text + x.start, (size_t)x.len);
        const bpe_rev *r = b->s->ptype[id] == VLM_SPM_UNUSED ? bpe_find_rev(b, x.start, x.len) : NULL;
        if (!r) {
            if (tok_push(out, x.start, x.len, id) < 0) return -1;
            continue;
        }
        if (b->n_stack + 2 > b->cap_stack && grow((void **)&b->stack, &b->cap_stack, sizeof x) < 0) return -1;
        int32_t left = r->left_len;
        b->stack[b->n_stack++] = (bpe_rev){x.start + left, x.len - left, 0};
        b->stack[b->n_stack++] = (bpe_rev){x.start, left, 0};
    }
    return 0;
}

/* BPE as bpe_model.cc: start from characters (user-defined pieces frozen),
 * repeatedly merge the best-scoring adjacent pair that is a piece; queue
 * entries made stale by earlier merges are recognised by their size. */
static int encode_bpe(const vlm_spm *s, const char *text, int32_t size, tok_list *out) {
    bpe_state b = {s, text, malloc((size_t)size * sizeof *b.sym), NULL, 0, 0, NULL, NULL, 0, 0, 0, 0};
    int rc = -1;
    if (!b.sym) {
        vlm_set_error("spm: out of memory encoding %d bytes", size);
        goto done;
    }
    int32_t n = 0;
    for (int32_t at = 0; at < size; n++) {
        bool frozen;
        int32_t len = next_symbol(s, text, at, size, &frozen);
        b.sym[n] = (bpe_sym){n - 1, at + len < size ? n + 1 : -1, at, len, frozen};
        at += len;
    }
    for (int32_t i = 1; i < n; i++)
        if (bpe_add_pair(&b, i - 1, i) < 0) goto done;
    while (b.n_heap > 0) {
        bpe_pair top = heap_pop(&b);
        bpe_sym *l = &b.sym[top.left], *r = &b.sym[top.right];
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) b.sym[r->next].prev = top.left;
        r->len = 0;
        if (bpe_add_pair(&b, l->prev, top.left) < 0 || bpe_add_pair(&b, top.left, l->next) < 0) goto done;
    }
    for (int32_t i = 0; i < n && i >= 0; i = b.sym[i].next)
        if (bpe_emit(&b, b.sym[i].start, b.sym[i].len, out) < 0) goto done;
    rc = 0;
done:
    free(b.sym);
    free(b.heap);
    free(b.rev);
    free(b.stack);
    return rc;
}

/* WORD: SplitIntoWords (a word starts at every "▁"), each word looked up whole. */
static int encode_word(const vlm_spm *s, const char *text, int32_t size, tok_list *out) {
    int32_t start = 0;
    for (int32_t at = 0; at < size;) {
        int32_t k = char_len_at(text, at, size);
        if (at > start && k == SPACE_LEN && !memcmp(text + at, SPACE_SYMBOL, SPACE_LEN)) {
            if (tok_push(out, start, at - start, piece_to_id(s, text + start, (size_t)(at - start))) < 0) return -1;
            start = at;
        }
        at += k;
    }
    if (size > start && tok_push(out, start, size - start, piece_to_id(s, text + start, (size_t)(size - start))) < 0)
        return -1;
    return 0;
}

/* CHAR: every character (or user-defined piece) looked up alone. */
static int encode_char(const vlm_spm *s, const char *text, int32_t size, tok_list *out) {
    for (int32_t at = 0; at < size;) {
        bool frozen;
        int32_t k = next_symbol(s, text, at, size, &frozen);
        if (tok_push(out, at, k, piece_to_id(s, text + at, (size_t)k)) < 0) return -1;
        at += k;
    }
    return 0;
}

/* SentencePieceProcessor::Encode after the model: with byte fallback an
 * unknown piece becomes its UTF-8 bytes; without it a run of unknown pieces
 * becomes one unk id. */
static int tokens_to_ids(const vlm_spm *s, const char *text, const tok_list *toks, int32_t **ids, int *n) {
    size_t total = 0;
    for (int32_t i = 0; i < toks->n; i++)
        total += s->byte_fallback && s->ptype[toks->t[i].id] == VLM_SPM_UNKNOWN ? (size_t)toks->t[i].len : 1;
    int32_t *v = malloc((total ? total : 1) * sizeof *v);
    if (!v) return vlm_set_error("spm: out of memory for %zu ids", total);
    size_t k = 0;
    bool prev_unk = false;
    for (int32_t i = 0; i < toks->n; i++) {
        const spm_tok *t = &toks->t[i];
        bool unk = s->ptype[t->id] == VLM_SPM_UNKNOWN;
        if (unk && s->byte_fallback) {
            for (int32_t j = 0; j < t->len; j++) v[k++] = s->byte_id[(uint8_t)text[t->start + j]];
        } else if (!(unk && prev_unk)) {
            v[k++] = t->id;
        }
        prev_unk = unk;
    }
    *ids = v;
    *n = (int)k;
    return 0;
}

int vlm_spm_encode(const vlm_spm *s, const char *text, int32_t **ids, int *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!s || !text || !ids || !n) return vlm_set_error("spm_encode: NULL argument");
    size_t len = strlen(text);
    if (len > MAX_TEXT_BYTES) return vlm_set_error("spm_encode: text of %zu bytes is too long", len);
    sbuf norm = {0};
    tok_list toks = {0};
    int rc = normalize(s, &s->norm, true, s->ws_suffix, text, len, &norm);
    if (rc == 0 && norm.n > MAX_TEXT_BYTES)
        rc = vlm_set_error("spm_encode: normalised text of %zu bytes is too long", norm.n);
    if (rc == 0 && norm.n > 0) {
        const int32_t size = (int32_t)norm.n;
        rc = s->type == VLM_SPM_UNIGRAM ? encode_unigram(s, norm.p, size, &toks)
             : s->type == VLM_SPM_BPE   ? encode_bpe(s, norm.p, size, &toks)
             : s->type == VLM_SPM_WORD  ? encode_word(s, norm.p, size, &toks)
                                        : encode_char(s, norm.p, size, &toks);
    }
    if (rc == 0) rc = tokens_to_ids(s, norm.p, &toks, ids, n);
    free(norm.p);
    free(toks.t);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------ */

/* A run of byte pieces decoded as UTF-8, each malformed byte -> U+FFFD. */
static int flush_bytes(sbuf *text, sbuf *bytes) {
    for (size_t at = 0; at < bytes->n;) {
        uint32_t cp;
        size_t k;
        bool ok = utf8_decode((const uint8_t *)bytes->p + at, bytes->n - at, &cp, &k);
        if (sb_put(text, ok ? bytes->p + at : REPLACEMENT, ok ? k : 3) < 0) return -1;
        at += k;
    }
    bytes->n = 0;
    return 0;
}

/* One normal piece: "▁" -> " ", and while nothing has been written yet the
 * leading "▁" of the dummy prefix is dropped. */
static int put_piece(const vlm_spm *s, sbuf *text, const char *p, size_t n) {
    if (text->n == 0 && (s->norm.add_dummy_prefix || s->norm.remove_extra_whitespaces) &&
        n >= SPACE_LEN && !memcmp(p, SPACE_SYMBOL, SPACE_LEN))
        p += SPACE_LEN, n -= SPACE_LEN;
    for (size_t i = 0; i < n;) {
        bool sp = n - i >= SPACE_LEN && !memcmp(p + i, SPACE_SYMBOL, SPACE_LEN);
        if (sb_put(text, sp ? " " : p + i, 1) < 0) return -1;
        i += sp ? SPACE_LEN : 1;
    }
    return 0;
}

static int decode_ids(const vlm_spm *s, const int32_t *ids, int n, sbuf *text) {
    sbuf bytes = {0};
    int rc = sb_reserve(text, 16);
    if (rc == 0) text->p[0] = '\0';
    for (int i = 0; i < n && rc == 0; i++) {
        if (ids[i] < 0 || ids[i] >= s->n) {
            rc = vlm_set_error("spm_decode: id %d at position %d is outside [0, %d) (%s)", ids[i], i, s->n, s->name);
            break;
        }
        /* DecodeIds goes through the piece strings, so a piece spelled like a
         * control or byte piece decodes as that piece. */
        const char *p = piece_str(s, ids[i]);
        int32_t id = piece_to_id(s, p, s->len[ids[i]]);
        int type = s->ptype[id];
        if (type == VLM_SPM_BYTE) {
            char c = (char)piece_byte(p, s->len[ids[i]]);
            rc = sb_put(&bytes, &c, 1);
            continue;
        }
        rc = flush_bytes(text, &bytes);
        if (rc < 0 || type == VLM_SPM_CONTROL) continue;
        if (type == VLM_SPM_UNKNOWN) rc = sb_put(text, s->unk_surface, strlen(s->unk_surface));
        else rc = put_piece(s, text, p, s->len[ids[i]]);
    }
    if (rc == 0) rc = flush_bytes(text, &bytes);
    free(bytes.p);
    return rc;
}

char *vlm_spm_decode(const vlm_spm *s, const int32_t *ids, int n) {
    if (!s || (!ids && n > 0) || n < 0) {
        vlm_set_error("spm_decode: NULL model/ids or negative count");
        return NULL;
    }
    sbuf text = {0};
    if (decode_ids(s, ids, n, &text) < 0) {
        free(text.p);
        return NULL;
    }
    if (!s->has_denorm) return text.p;
    sbuf out = {0};
    int rc = normalize(s, &s->denorm, false, false, text.p, text.n, &out);
    free(text.p);
    if (rc < 0 || sb_reserve(&out, 0) < 0) {
        free(out.p);
        return NULL;
    }
    out.p[out.n] = '\0';
    return out.p;
}

/* ---- SigLIP text ------------------------------------------------------------------------ */

/* Generated by scripts/gen_spm_fixtures.py --lower-table from Python 3.11.2's
 * str.lower() (Unicode 14.0.0): code points first..last (every step-th)
 * map to cp + delta. U+0130 (to two code points) is handled in code. */
static const struct { uint32_t first, last; int32_t delta; uint8_t step; } lower_runs[] = {
    {0x41, 0x5A, 32, 1}, {0xC0, 0xD6, 32, 1}, {0xD8, 0xDE, 32, 1}, {0x100, 0x12E, 1, 2},
    {0x132, 0x136, 1, 2}, {0x139, 0x147, 1, 2}, {0x14A, 0x176, 1, 2},
    {0x178, 0x178, -121, 1}, {0x179, 0x17D, 1, 2}, {0x181, 0x181, 210, 1},
    {0x182, 0x184, 1, 2}, {0x186, 0x186, 206, 1}, {0x187, 0x187, 1, 1},
    {0x189, 0x18A, 205, 1}, {0x18B, 0x18B, 1, 1}, {0x18E, 0x18E, 79, 1},
    {0x18F, 0x18F, 202, 1}, {0x190, 0x190, 203, 1}, {0x191, 0x191, 1, 1},
    {0x193, 0x193, 205, 1}, {0x194, 0x194, 207, 1}, {0x196, 0x196, 211, 1},
    {0x197, 0x197, 209, 1}, {0x198, 0x198, 1, 1}, {0x19C, 0x19C, 211, 1},
    {0x19D, 0x19D, 213, 1}, {0x19F, 0x19F, 214, 1}, {0x1A0, 0x1A4, 1, 2},
    {0x1A6, 0x1A6, 218, 1}, {0x1A7, 0x1A7, 1, 1}, {0x1A9, 0x1A9, 218, 1},
    {0x1AC, 0x1AC, 1, 1}, {0x1AE, 0x1AE, 218, 1}, {0x1AF, 0x1AF, 1, 1},
    {0x1B1, 0x1B2, 217, 1}, {0x1B3, 0x1B5, 1, 2}, {0x1B7, 0x1B7, 219, 1},
    {0x1B8, 0x1B8, 1, 1}, {0x1BC, 0x1BC, 1, 1}, {0x1C4, 0x1C4, 2, 1}, {0x1C5, 0x1C5, 1, 1},
    {0x1C7, 0x1C7, 2, 1}, {0x1C8, 0x1C8, 1, 1}, {0x1CA, 0x1CA, 2, 1}, {0x1CB, 0x1DB, 1, 2},
    {0x1DE, 0x1EE, 1, 2}, {0x1F1, 0x1F1, 2, 1}, {0x1F2, 0x1F4, 1, 2},
    {0x1F6, 0x1F6, -97, 1}, {0x1F7, 0x1F7, -56, 1}, {0x1F8, 0x21E, 1, 2},
    {0x220, 0x220, -130, 1}, {0x222, 0x232, 1, 2}, {0x23A, 0x23A, 10795, 1},
    {0x23B, 0x23B, 1, 1}, {0x23D, 0x23D, -163, 1}, {0x23E, 0x23E, 10792, 1},
    {0x241, 0x241, 1, 1}, {0x243, 0x243, -195, 1}, {0x244, 0x244, 69, 1},
    {0x245, 0x245, 71, 1}, {0x246, 0x24E, 1, 2}, {0x370, 0x372, 1, 2}, {0x376, 0x376, 1, 1},
    {0x37F, 0x37F, 116, 1}, {0x386, 0x386, 38, 1}, {0x388, 0x38A, 37, 1},
    {0x38C, 0x38C, 64, 1}, {0x38E, 0x38F, 63, 1}, {0x391, 0x3A1, 32, 1},
    {0x3A3, 0x3AB, 32, 1}, {0x3CF, 0x3CF, 8, 1}, {0x3D8, 0x3EE, 1, 2},
    {0x3F4, 0x3F4, -60, 1}, {0x3F7, 0x3F7, 1, 1}, {0x3F9, 0x3F9, -7, 1},
    {0x3FA, 0x3FA, 1, 1}, {0x3FD, 0x3FF, -130, 1}, {0x400, 0x40F, 80, 1},
    {0x410, 0x42F, 32, 1}, {0x460, 0x480, 1, 2}, {0x48A, 0x4BE, 1, 2},
    {0x4C0, 0x4C0, 15, 1}, {0x4C1, 0x4CD, 1, 2}, {0x4D0, 0x52E, 1, 2},
    {0x531, 0x556, 48, 1}, {0x10A0, 0x10C5, 7264, 1}, {0x10C7, 0x10C7, 7264, 1},
    {0x10CD, 0x10CD, 7264, 1}, {0x13A0, 0x13EF, 38864, 1}, {0x13F0, 0x13F5, 8, 1},
    {0x1C90, 0x1CBA, -3008, 1}, {0x1CBD, 0x1CBF, -3008, 1}, {0x1E00, 0x1E94, 1, 2},
    {0x1E9E, 0x1E9E, -7615, 1}, {0x1EA0, 0x1EFE, 1, 2}, {0x1F08, 0x1F0F, -8, 1},
    {0x1F18, 0x1F1D, -8, 1}, {0x1F28, 0x1F2F, -8, 1}, {0x1F38, 0x1F3F, -8, 1},
    {0x1F48, 0x1F4D, -8, 1}, {0x1F59, 0x1F5F, -8, 2}, {0x1F68, 0x1F6F, -8, 1},
    {0x1F88, 0x1F8F, -8, 1}, {0x1F98, 0x1F9F, -8, 1}, {0x1FA8, 0x1FAF, -8, 1},
    {0x1FB8, 0x1FB9, -8, 1}, {0x1FBA, 0x1FBB, -74, 1}, {0x1FBC, 0x1FBC, -9, 1},
    {0x1FC8, 0x1FCB, -86, 1}, {0x1FCC, 0x1FCC, -9, 1}, {0x1FD8, 0x1FD9, -8, 1},
    {0x1FDA, 0x1FDB, -100, 1}, {0x1FE8, 0x1FE9, -8, 1}, {0x1FEA, 0x1FEB, -112, 1},
    {0x1FEC, 0x1FEC, -7, 1}, {0x1FF8, 0x1FF9, -128, 1}, {0x1FFA, 0x1FFB, -126, 1},
    {0x1FFC, 0x1FFC, -9, 1}, {0x2126, 0x2126, -7517, 1}, {0x212A, 0x212A, -8383, 1},
    {0x212B, 0x212B, -8262, 1}, {0x2132, 0x2132, 28, 1}, {0x2160, 0x216F, 16, 1},
    {0x2183, 0x2183, 1, 1}, {0x24B6, 0x24CF, 26, 1}, {0x2C00, 0x2C2F, 48, 1},
    {0x2C60, 0x2C60, 1, 1}, {0x2C62, 0x2C62, -10743, 1}, {0x2C63, 0x2C63, -3814, 1},
    {0x2C64, 0x2C64, -10727, 1}, {0x2C67, 0x2C6B, 1, 2}, {0x2C6D, 0x2C6D, -10780, 1},
    {0x2C6E, 0x2C6E, -10749, 1}, {0x2C6F, 0x2C6F, -10783, 1}, {0x2C70, 0x2C70, -10782, 1},
    {0x2C72, 0x2C72, 1, 1}, {0x2C75, 0x2C75, 1, 1}, {0x2C7E, 0x2C7F, -10815, 1},
    {0x2C80, 0x2CE2, 1, 2}, {0x2CEB, 0x2CED, 1, 2}, {0x2CF2, 0x2CF2, 1, 1},
    {0xA640, 0xA66C, 1, 2}, {0xA680, 0xA69A, 1, 2}, {0xA722, 0xA72E, 1, 2},
    {0xA732, 0xA76E, 1, 2}, {0xA779, 0xA77B, 1, 2}, {0xA77D, 0xA77D, -35332, 1},
    {0xA77E, 0xA786, 1, 2}, {0xA78B, 0xA78B, 1, 1}, {0xA78D, 0xA78D, -42280, 1},
    {0xA790, 0xA792, 1, 2}, {0xA796, 0xA7A8, 1, 2}, {0xA7AA, 0xA7AA, -42308, 1},
    {0xA7AB, 0xA7AB, -42319, 1}, {0xA7AC, 0xA7AC, -42315, 1}, {0xA7AD, 0xA7AD, -42305, 1},
    {0xA7AE, 0xA7AE, -42308, 1}, {0xA7B0, 0xA7B0, -42258, 1}, {0xA7B1, 0xA7B1, -42282, 1},
    {0xA7B2, 0xA7B2, -42261, 1}, {0xA7B3, 0xA7B3, 928, 1}, {0xA7B4, 0xA7C2, 1, 2},
    {0xA7C4, 0xA7C4, -48, 1}, {0xA7C5, 0xA7C5, -42307, 1}, {0xA7C6, 0xA7C6, -35384, 1},
    {0xA7C7, 0xA7C9, 1, 2}, {0xA7D0, 0xA7D0, 1, 1}, {0xA7D6, 0xA7D8, 1, 2},
    {0xA7F5, 0xA7F5, 1, 1}, {0xFF21, 0xFF3A, 32, 1}, {0x10400, 0x10427, 40, 1},
    {0x104B0, 0x104D3, 40, 1}, {0x10570, 0x1057A, 39, 1}, {0x1057C, 0x1058A, 39, 1},
    {0x1058C, 0x10592, 39, 1}, {0x10594, 0x10595, 39, 1}, {0x10C80, 0x10CB2, 64, 1},
    {0x118A0, 0x118BF, 32, 1}, {0x16E40, 0x16E5F, 32, 1}, {0x1E900, 0x1E921, 34, 1},
};

/* Python's string.punctuation, what HF's canonicalize_text removes. */
#define PUNCTUATION "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"

static uint32_t to_lower(uint32_t cp) {
    int lo = 0, hi = (int)(sizeof lower_runs / sizeof lower_runs[0]);
    while (lo < hi) { /* the last run with first <= cp */
        int mid = (lo + hi) / 2;
        if (lower_runs[mid].first <= cp) lo = mid + 1;
        else hi = mid;
    }
    if (lo == 0) return cp;
    const int r = lo - 1;
    if (cp > lower_runs[r].last || (cp - lower_runs[r].first) % lower_runs[r].step) return cp;
    return (uint32_t)((int32_t)cp + lower_runs[r].delta);
}

/* Python's str.isspace(), which is also what re's \s and str.strip() use. */
static bool is_space(uint32_t c) {
    return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 ||
           c == 0x202F || c == 0x205F || c == 0x3000;
}

char *vlm_siglip_canonicalize(const char *text) {
    if (!text) {
        vlm_set_error("siglip_canonicalize: NULL text");
        return NULL;
    }
    const uint8_t *in = (const uint8_t *)text;
    size_t n = strlen(text);
    sbuf out = {0};
    bool pending_space = false;
    if (sb_reserve(&out, n + 2) < 0) return NULL;
    out.p[0] = '\0';
    for (size_t at = 0, k; at < n; at += k) {
        uint32_t cp;
        char buf[8];
        size_t m;
        if (!utf8_decode(in + at, n - at, &cp, &k)) { /* not text: keep the byte */
            buf[0] = (char)in[at], m = 1;
        } else if (cp == '_' || is_space(cp)) { /* big_vision turns "_" into a space first */
            pending_space = out.n > 0;
            continue;
        } else if (cp > 0 && cp < 0x80 && strchr(PUNCTUATION, (int)cp)) {
            continue;
        } else if (cp == 0x130) { /* İ lowers to i + combining dot above */
            memcpy(buf, "i\xcc\x87", 3), m = 3;
        } else {
            m = utf8_encode(to_lower(cp), buf);
        }
        if ((pending_space && sb_put(&out, " ", 1) < 0) || sb_put(&out, buf, m) < 0) {
            free(out.p);
            return NULL;
        }
        pending_space = false;
    }
    return out.p;
}

int vlm_siglip_tokenize(const vlm_spm *s, const char *text, int ctx_len, int32_t *out) {
    if (!s || !text || !out) return vlm_set_error("siglip_tokenize: NULL argument");
    if (ctx_len == 0) ctx_len = VLM_SIGLIP_CONTEXT_LEN;
    if (ctx_len < 1) return vlm_set_error("siglip_tokenize: context length %d < 1", ctx_len);
    if (s->eos < 0) return vlm_set_error("siglip_tokenize: %s has no EOS piece", s->name);
    char *canon = vlm_siglip_canonicalize(text);
    int32_t *ids = NULL;
    int n = 0;
    int rc = canon ? vlm_spm_encode(s, canon, &ids, &n) : -1;
    free(canon);
    if (rc < 0) return -1;
    int k = n < ctx_len - 1 ? n : ctx_len - 1;
    memcpy(out, ids, (size_t)k * sizeof *out);
    for (int i = k; i < ctx_len; i++) out[i] = s->eos;
    free(ids);
    return k + 1;
}
