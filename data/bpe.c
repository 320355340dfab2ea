/* bpe.c - byte-level BPE (GPT-2 / SmolLM2): the HF tokenizer.json loader,
 * encode (added tokens, pre-tokenizer pipeline, rank-ordered merging with a
 * per-word cache), decode, the trainer and the writer. The contract is in
 * data.h; unicode.c has the character classes and the GPT-2 split. */
#include "data.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define GPT2_PATTERN                                                                               \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

/* ---- small utilities ------------------------------------------------------ */

static int oom(const char *what) { return vlm_set_error("out of memory (%s)", what); }

/* Grows the array at *pp (elements of elem bytes) to hold need elements. */
static int grow_to(void *pp, size_t *cap, size_t need, size_t elem, const char *what) {
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 4 / elem) return oom(what);
        c *= 2;
    }
    void *p;
    memcpy(&p, pp, sizeof p);
    void *q = realloc(p, c * elem);
    if (!q) return oom(what);
    memcpy(pp, &q, sizeof q);
    *cap = c;
    return 0;
}
#define GROW(arr, cap, need, what)                                                                 \
    ((size_t)(need) <= (cap) ? 0 : grow_to(&(arr), &(cap), (size_t)(need), sizeof *(arr), (what)))

static uint64_t mix64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint32_t hash_bytes(const void *data, size_t n) {
    const uint8_t *s = data;
    uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
    for (; n >= 8; s += 8, n -= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = mix64(h ^ v);
    }
    uint64_t v = 0;
    memcpy(&v, s, n);
    return (uint32_t)mix64(h ^ v);
}

static int utf8_encode(uint32_t cp, char *out) {
    if (cp < 0x80) return out[0] = (char)cp, 1;
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | cp >> 6), out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    out[0] = (char)(0xE0 | cp >> 12), out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[2] = (char)(0x80 | (cp & 0x3F));
    return 3; /* the byte map only reaches U+0143 */
}

/* ---- hash maps ------------------------------------------------------------ */

typedef struct {
    uint32_t off, len;
} span;
#define NO_SPAN UINT32_MAX

/* Strings -> item index, where item i is the span items[i] into a pool that
 * the caller passes on every lookup (pools move when they grow). */
typedef struct {
    uint32_t *item; /* item index + 1; 0 = empty slot */
    uint32_t *hash;
    size_t cap, count; /* cap: power of two */
} strmap;

static void strmap_free(strmap *m) {
    free(m->item);
    free(m->hash);
    memset(m, 0, sizeof *m);
}

static int64_t strmap_get(const strmap *m, const char *pool, const span *items, const void *s,
                          size_t len, uint32_t h) {
    if (!m->cap) return -1;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        uint32_t it = m->item[i];
        if (!it) return -1;
        const span *sp = &items[it - 1];
        if (m->hash[i] == h && sp->len == len && !memcmp(pool + sp->off, s, len)) return it - 1;
    }
}

static void strmap_place(uint32_t *item, uint32_t *hash, size_t cap, uint32_t h, uint32_t it) {
    size_t i = h & (cap - 1);
    while (item[i])
        i = (i + 1) & (cap - 1);
    item[i] = it;
    hash[i] = h;
}

/* Adds item (whose string must not be in the map yet); load factor <= 1/2. */
static int strmap_put(strmap *m, uint32_t h, uint32_t item) {
    if ((m->count + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        uint32_t *it = calloc(cap, sizeof *it), *hs = malloc(cap * sizeof *hs);
        if (!it || !hs) return free(it), free(hs), oom("string map");
        for (size_t i = 0; i < m->cap; i++)
            if (m->item[i]) strmap_place(it, hs, cap, m->hash[i], m->item[i]);
        free(m->item), free(m->hash);
        m->item = it, m->hash = hs, m->cap = cap;
    }
    strmap_place(m->item, m->hash, m->cap, h, item + 1);
    m->count++;
    return 0;
}

/* (left id, right id) -> int32 value. */
typedef struct {
    uint64_t *key;
    int32_t *val;
    size_t cap, count;
} pairmap;
#define PAIR_EMPTY UINT64_MAX

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }

static void pairmap_free(pairmap *m) {
    free(m->key);
    free(m->val);
    memset(m, 0, sizeof *m);
}

static int32_t pairmap_get(const pairmap *m, uint64_t k) {
    if (!m->cap) return -1;
    for (size_t i = mix64(k) & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->key[i] == k) return m->val[i];
        if (m->key[i] == PAIR_EMPTY) return -1;
    }
}

static size_t pairmap_slot(const uint64_t *key, size_t cap, uint64_t k) {
    size_t i = mix64(k) & (cap - 1);
    while (key[i] != k && key[i] != PAIR_EMPTY)
        i = (i + 1) & (cap - 1);
    return i;
}

/* Inserts or overwrites. */
static int pairmap_set(pairmap *m, uint64_t k, int32_t v) {
    if ((m->count + 1) * 2 > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 64;
        uint64_t *key = malloc(cap * sizeof *key);
        int32_t *val = malloc(cap * sizeof *val);
        if (!key || !val) return free(key), free(val), oom("pair map");
        memset(key, 0xFF, cap * sizeof *key);
        for (size_t i = 0; i < m->cap; i++) {
            if (m->key[i] == PAIR_EMPTY) continue;
            size_t j = pairmap_slot(key, cap, m->key[i]);
            key[j] = m->key[i], val[j] = m->val[i];
        }
        free(m->key), free(m->val);
        m->key = key, m->val = val, m->cap = cap;
    }
    size_t i = pairmap_slot(m->key, m->cap, k);
    if (m->key[i] == PAIR_EMPTY) m->count++;
    m->key[i] = k, m->val[i] = v;
    return 0;
}

/* ---- the tokenizer ---------------------------------------------------------- */

enum { TOK_VOCAB = 1, TOK_ADDED = 2, TOK_SPECIAL = 4 };

typedef struct {
    int32_t id;
    uint32_t off, len; /* content in the pool */
    bool special, lstrip, rstrip, normalized;
} added_tok;

/* SplitDelimiterBehavior, in HF's order. */
enum { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
static const char *const split_names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                          "MergedWithNext", "Contiguous"};

typedef enum { STEP_DIGITS, STEP_SPLIT_STRING, STEP_SPLIT_GPT2 } step_kind;

/* One pre-tokenizer that runs before ByteLevel in a Sequence. */
typedef struct {
    step_kind kind;
    bool individual_digits; /* Digits */
    uint32_t off, len;      /* Split: the String pattern in the pool */
    int behavior;           /* Split: SPLIT_*; Digits: Isolated or Contiguous */
    bool invert;
} pre_step;

/* Pieces of at most this many bytes are cached; the cache is emptied when it
 * holds CACHE_MAX_ENTRIES, which bounds it at a few MB. */
#define CACHE_MAX_WORD 64
#define CACHE_MAX_ENTRIES 65536

typedef struct {
    pthread_mutex_t mu;
    strmap map;
    span *key, *val; /* key bytes in kpool, ids in ipool */
    size_t n, key_cap, val_cap;
    char *kpool;
    size_t klen, kcap;
    int32_t *ipool;
    size_t ilen, icap;
} bpe_cache;

struct vlm_bpe {
    char *name; /* the file, for error messages */
    char *pool; /* every string, NUL-terminated */
    size_t pool_len, pool_cap;
    int32_t n_ids;      /* 1 + largest id */
    span *tok;          /* [n_ids] model vocab string (TOK_VOCAB) */
    span *dec;          /* [n_ids] the bytes decode emits */
    uint8_t *flags;     /* [n_ids] TOK_* */
    strmap vocab;       /* vocab string -> id; items = tok */
    int32_t *merge_ab;  /* [2 * n_merges]: left, right id by rank */
    int32_t *merge_out; /* [n_merges]: id of the merged token */
    size_t n_merges, ab_cap, out_cap;
    pairmap merges;       /* (left, right) -> rank */
    int32_t byte_id[256]; /* the symbol of each byte; -1 if not in the vocab */
    added_tok *added;
    size_t n_added, added_cap;
    /* Added-token matching, pass 0 (normalized=false) then 1: indices into
     * added, grouped by first byte (match_start), longest first. */
    int32_t *match[2];
    uint32_t match_start[2][257];
    pre_step *steps;
    size_t n_steps, steps_cap;
    bool add_prefix_space, trim_offsets, use_regex; /* ByteLevel */
    bool ignore_merges, fuse_unk;
    int32_t unk_id;
    bpe_cache *cache;
};

static bpe_cache *cache_new(void) {
    bpe_cache *c = calloc(1, sizeof *c);
    if (!c) return oom("bpe cache"), NULL;
    if (pthread_mutex_init(&c->mu, NULL)) return free(c), oom("bpe cache mutex"), NULL;
    return c;
}

static void cache_free(bpe_cache *c) {
    if (!c) return;
    pthread_mutex_destroy(&c->mu);
    strmap_free(&c->map);
    free(c->key), free(c->val), free(c->kpool), free(c->ipool);
    free(c);
}

void vlm_bpe_free(vlm_bpe *b) {
    if (!b) return;
    free(b->name), free(b->pool), free(b->tok), free(b->dec), free(b->flags);
    strmap_free(&b->vocab);
    free(b->merge_ab), free(b->merge_out);
    pairmap_free(&b->merges);
    free(b->added), free(b->match[0]), free(b->match[1]), free(b->steps);
    cache_free(b->cache);
    free(b);
}

static vlm_bpe *bpe_new(const char *name) {
    vlm_bpe *b = calloc(1, sizeof *b);
    if (!b || !(b->name = strdup(name))) return free(b), oom("bpe"), NULL;
    b->unk_id = -1;
    b->use_regex = true;
    b->trim_offsets = true;
    return b;
}

/* Appends len bytes + NUL to the pool; returns the offset or -1. */
static int64_t pool_add(vlm_bpe *b, const void *s, size_t len) {
    if (b->pool_len + len + 1 >= UINT32_MAX)
        return vlm_set_error("%s: strings exceed 4 GiB", b->name);
    if (GROW(b->pool, b->pool_cap, b->pool_len + len + 1, "bpe strings")) return -1;
    int64_t off = (int64_t)b->pool_len;
    memcpy(b->pool + off, s, len);
    b->pool[off + (int64_t)len] = 0;
    b->pool_len += len + 1;
    return off;
}

static const char *str_at(const vlm_bpe *b, span s) { return b->pool + s.off; }

static int alloc_ids(vlm_bpe *b, int32_t n_ids) {
    size_t n = n_ids ? (size_t)n_ids : 1;
    b->tok = malloc(n * sizeof *b->tok);
    b->dec = malloc(n * sizeof *b->dec);
    b->flags = calloc(n, 1);
    if (!b->tok || !b->dec || !b->flags) return oom("bpe vocab");
    for (size_t i = 0; i < n; i++)
        b->tok[i].len = b->dec[i].len = NO_SPAN;
    b->n_ids = n_ids;
    return 0;
}

static int32_t vocab_find(const vlm_bpe *b, const void *s, size_t len) {
    return (int32_t)strmap_get(&b->vocab, b->pool, b->tok, s, len, hash_bytes(s, len));
}

/* Gives id the model vocab string s. key names the JSON entry for errors. */
static int set_vocab(vlm_bpe *b, int32_t id, const char *s, size_t len, const char *key) {
    if (b->flags[id] & TOK_VOCAB)
        return vlm_set_error("%s: %s: id %d is used by both '%.60s' and '%.*s'", b->name, key, id,
                             str_at(b, b->tok[id]), (int)(len < 60 ? len : 60), s);
    uint32_t h = hash_bytes(s, len);
    if (strmap_get(&b->vocab, b->pool, b->tok, s, len, h) >= 0)
        return vlm_set_error("%s: %s: token '%.*s' appears twice", b->name, key,
                             (int)(len < 60 ? len : 60), s);
    int64_t off = pool_add(b, s, len);
    if (off < 0) return -1;
    b->tok[id] = (span){(uint32_t)off, (uint32_t)len};
    b->flags[id] |= TOK_VOCAB;
    return strmap_put(&b->vocab, h, (uint32_t)id);
}

/* Appends the merge (l, r) at the next rank; l + r must be a vocab string. A
 * pair listed twice keeps its last rank, as HF's merge map does. */
static int add_merge(vlm_bpe *b, int32_t l, int32_t r, char **scratch, size_t *cap,
                     const char *key) {
    span a = b->tok[l], c = b->tok[r];
    if (GROW(*scratch, *cap, (size_t)a.len + c.len + 1, "bpe merge")) return -1;
    memcpy(*scratch, str_at(b, a), a.len);
    memcpy(*scratch + a.len, str_at(b, c), c.len);
    int32_t out = vocab_find(b, *scratch, (size_t)a.len + c.len);
    if (out < 0)
        return vlm_set_error("%s: %s: the merged token '%.*s' is not in model.vocab", b->name, key,
                             (int)((size_t)a.len + c.len < 80 ? a.len + c.len : 80), *scratch);
    if (b->n_merges >= INT32_MAX) return vlm_set_error("%s: %s: too many merges", b->name, key);
    if (GROW(b->merge_ab, b->ab_cap, 2 * (b->n_merges + 1), "bpe merges") ||
        GROW(b->merge_out, b->out_cap, b->n_merges + 1, "bpe merges"))
        return -1;
    b->merge_ab[2 * b->n_merges] = l;
    b->merge_ab[2 * b->n_merges + 1] = r;
    b->merge_out[b->n_merges] = out;
    return pairmap_set(&b->merges, pair_key(l, r), (int32_t)b->n_merges++);
}

static int add_added(vlm_bpe *b, const added_tok *t, const char *content, const char *key) {
    if (b->flags[t->id] & TOK_ADDED)
        return vlm_set_error("%s: %s: id %d is used by two added tokens", b->name, key, t->id);
    for (size_t i = 0; i < b->n_added; i++)
        if (b->added[i].len == t->len && !memcmp(b->pool + b->added[i].off, content, t->len))
            return vlm_set_error("%s: %s: content '%.60s' appears twice", b->name, key, content);
    if (GROW(b->added, b->added_cap, b->n_added + 1, "bpe added tokens")) return -1;
    int64_t off = pool_add(b, content, t->len);
    if (off < 0) return -1;
    added_tok a = *t;
    a.off = (uint32_t)off;
    b->added[b->n_added++] = a;
    b->dec[t->id] = (span){a.off, a.len};
    b->flags[t->id] |= TOK_ADDED | (t->special ? TOK_SPECIAL : 0);
    return 0;
}

/* ---- finishing: byte symbols, decode strings, added-token index ----------- */

/* The bytes a vocab token decodes to: every character through the inverse
 * byte map, or (like HF's ByteLevel decoder) the token's own UTF-8 when a
 * character is outside the map. */
static int set_decoded(vlm_bpe *b, int32_t id, char **scratch, size_t *cap) {
    span t = b->tok[id];
    if (GROW(*scratch, *cap, (size_t)t.len + 1, "bpe decode table")) return -1;
    const uint8_t *s = (const uint8_t *)str_at(b, t);
    size_t n = 0;
    for (size_t i = 0; i < t.len;) {
        uint32_t cp;
        i += (size_t)vlm_utf8_decode(s + i, t.len - i, &cp);
        int byte = vlm_unicode_to_byte(cp);
        if (byte < 0) {
            b->dec[id] = t;
            return 0;
        }
        (*scratch)[n++] = (char)byte;
    }
    if (n == t.len && !memcmp(*scratch, s, n)) { /* printable ASCII: share */
        b->dec[id] = t;
        return 0;
    }
    int64_t off = pool_add(b, *scratch, n);
    if (off < 0) return -1;
    b->dec[id] = (span){(uint32_t)off, (uint32_t)n};
    return 0;
}

typedef struct {
    uint8_t first;
    uint32_t len;
    int32_t idx;
} match_key;

static int cmp_match(const void *x, const void *y) {
    const match_key *a = x, *b = y;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1; /* longest first */
    return a->idx < b->idx ? -1 : a->idx > b->idx;
}

static int build_match_index(vlm_bpe *b) {
    match_key *keys = malloc((b->n_added ? b->n_added : 1) * sizeof *keys);
    if (!keys) return oom("bpe added tokens");
    for (int pass = 0; pass < 2; pass++) {
        size_t n = 0;
        for (size_t i = 0; i < b->n_added; i++)
            if (b->added[i].normalized == (pass == 1))
                keys[n++] =
                    (match_key){(uint8_t)b->pool[b->added[i].off], b->added[i].len, (int32_t)i};
        qsort(keys, n, sizeof *keys, cmp_match);
        b->match[pass] = malloc((n ? n : 1) * sizeof *b->match[pass]);
        if (!b->match[pass]) return free(keys), oom("bpe added tokens");
        memset(b->match_start[pass], 0, sizeof b->match_start[pass]);
        for (size_t i = 0; i < n; i++) {
            b->match[pass][i] = keys[i].idx;
            b->match_start[pass][keys[i].first + 1]++;
        }
        for (int c = 0; c < 256; c++)
            b->match_start[pass][c + 1] += b->match_start[pass][c];
    }
    free(keys);
    return 0;
}

static int bpe_finish(vlm_bpe *b) {
    for (int c = 0; c < 256; c++) {
        char s[4];
        b->byte_id[c] = vocab_find(b, s, (size_t)utf8_encode(vlm_byte_to_unicode((uint8_t)c), s));
    }
    char *scratch = NULL;
    size_t cap = 0;
    for (int32_t id = 0; id < b->n_ids; id++)
        if ((b->flags[id] & (TOK_VOCAB | TOK_ADDED)) == TOK_VOCAB &&
            set_decoded(b, id, &scratch, &cap))
            return free(scratch), -1;
    free(scratch);
    if (build_match_index(b)) return -1;
    b->cache = cache_new();
    return b->cache ? 0 : -1;
}

/* ---- loading: JSON helpers ------------------------------------------------- */

static const cJSON *jget(const cJSON *obj, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

static bool jabsent(const cJSON *v) { return !v || cJSON_IsNull(v); }

/* obj[key] as a bool; missing or null gives dflt. path names obj. */
static int jbool(const vlm_bpe *b, const cJSON *obj, const char *path, const char *key, bool dflt,
                 bool *out) {
    const cJSON *v = jget(obj, key);
    if (jabsent(v)) return *out = dflt, 0;
    if (!cJSON_IsBool(v))
        return vlm_set_error("%s: %s.%s: expected true or false", b->name, path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* A token id: an integer in [0, INT32_MAX). */
static int jid(const vlm_bpe *b, const cJSON *v, const char *key, int32_t *out) {
    double d = cJSON_IsNumber(v) ? v->valuedouble : -1;
    if (!(d >= 0 && d < INT32_MAX) || d != (double)(int32_t)d)
        return vlm_set_error("%s: %s: expected a token id (an integer >= 0)", b->name, key);
    *out = (int32_t)d;
    return 0;
}

/* The "type" string of a component, or NULL. */
static const char *jtype(const cJSON *obj) {
    const cJSON *t = jget(obj, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* ---- loading: model -------------------------------------------------------- */

/* Largest id in model.vocab and added_tokens, with the entries checked; the
 * id space may have holes, but only so many (a typo'd id of 2e9 must not
 * allocate gigabytes). */
static int count_ids(vlm_bpe *b, const cJSON *vocab, const cJSON *added, int32_t *n_ids) {
    int64_t max = -1, entries = 0;
    const cJSON *e;
    char key[128];
    cJSON_ArrayForEach(e, vocab) {
        int32_t id = 0;
        snprintf(key, sizeof key, "model.vocab['%.60s']", e->string);
        if (jid(b, e, key, &id)) return -1;
        max = id > max ? id : max, entries++;
    }
    int i = 0;
    cJSON_ArrayForEach(e, added) {
        int32_t id = 0;
        snprintf(key, sizeof key, "added_tokens[%d].id", i++);
        if (!cJSON_IsObject(e))
            return vlm_set_error("%s: added_tokens[%d]: expected an object", b->name, i - 1);
        if (jid(b, jget(e, "id"), key, &id)) return -1;
        max = id > max ? id : max, entries++;
    }
    if (max + 1 > 2 * entries + 1024)
        return vlm_set_error("%s: model.vocab: ids reach %lld but there are only %lld tokens",
                             b->name, (long long)max, (long long)entries);
    *n_ids = (int32_t)(max + 1);
    return 0;
}

static int parse_vocab(vlm_bpe *b, const cJSON *vocab) {
    const cJSON *e;
    char key[128];
    cJSON_ArrayForEach(e, vocab) {
        snprintf(key, sizeof key, "model.vocab['%.60s']", e->string);
        if (set_vocab(b, (int32_t)e->valuedouble, e->string, strlen(e->string), key)) return -1;
    }
    return 0;
}

/* A merge entry, "a b" or ["a", "b"], to the two vocab ids. */
static int merge_ids(vlm_bpe *b, const cJSON *m, const char *key, int32_t ids[2]) {
    const char *part[2];
    size_t len[2];
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return vlm_set_error("%s: %s: '%.60s' is not two tokens separated by one space",
                                 b->name, key, s);
        part[0] = s, len[0] = (size_t)(sp - s), part[1] = sp + 1, len[1] = strlen(sp + 1);
    } else if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(m->child) &&
               cJSON_IsString(m->child->next)) {
        part[0] = m->child->valuestring, len[0] = strlen(part[0]);
        part[1] = m->child->next->valuestring, len[1] = strlen(part[1]);
    } else {
        return vlm_set_error("%s: %s: expected \"a b\" or [\"a\", \"b\"]", b->name, key);
    }
    for (int k = 0; k < 2; k++) {
        ids[k] = vocab_find(b, part[k], len[k]);
        if (ids[k] < 0 || !len[k])
            return vlm_set_error("%s: %s: token '%.*s' is not in model.vocab", b->name, key,
                                 (int)(len[k] < 60 ? len[k] : 60), part[k]);
    }
    return 0;
}

static int parse_merges(vlm_bpe *b, const cJSON *merges) {
    if (jabsent(merges)) return 0; /* a vocab of bytes and whole words is valid BPE */
    if (!cJSON_IsArray(merges))
        return vlm_set_error("%s: model.merges: expected an array", b->name);
    char *scratch = NULL, key[64];
    size_t cap = 0;
    int i = 0, rc = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, merges) {
        int32_t ids[2] = {0, 0};
        snprintf(key, sizeof key, "model.merges[%d]", i++);
        if ((rc = merge_ids(b, m, key, ids)) ||
            (rc = add_merge(b, ids[0], ids[1], &scratch, &cap, key)))
            break;
    }
    free(scratch);
    return rc;
}

static int parse_added(vlm_bpe *b, const cJSON *added) {
    const cJSON *e;
    char key[64];
    int i = 0;
    cJSON_ArrayForEach(e, added) {
        snprintf(key, sizeof key, "added_tokens[%d]", i++);
        const cJSON *c = jget(e, "content");
        if (!cJSON_IsString(c) || !c->valuestring[0])
            return vlm_set_error("%s: %s.content: expected a non-empty string", b->name, key);
        added_tok t = {.id = (int32_t)jget(e, "id")->valuedouble,
                       .len = (uint32_t)strlen(c->valuestring)};
        bool single_word = false;
        if (jbool(b, e, key, "special", false, &t.special) ||
            jbool(b, e, key, "lstrip", false, &t.lstrip) ||
            jbool(b, e, key, "rstrip", false, &t.rstrip) ||
            jbool(b, e, key, "normalized", !t.special, &t.normalized) ||
            jbool(b, e, key, "single_word", false, &single_word))
            return -1;
        if (single_word)
            return vlm_set_error("%s: %s.single_word: true is not supported", b->name, key);
        if (add_added(b, &t, c->valuestring, key)) return -1;
    }
    return 0;
}

/* A string option that must be null or "" (a subword prefix or suffix). */
static int no_affix(const vlm_bpe *b, const cJSON *model, const char *key) {
    const cJSON *v = jget(model, key);
    if (jabsent(v) || (cJSON_IsString(v) && !v->valuestring[0])) return 0;
    return vlm_set_error("%s: model.%s: must be null for byte-level BPE", b->name, key);
}

static int parse_model_options(vlm_bpe *b, const cJSON *model) {
    const cJSON *v = jget(model, "dropout");
    if (!jabsent(v) && !(cJSON_IsNumber(v) && v->valuedouble == 0))
        return vlm_set_error("%s: model.dropout: BPE dropout is not supported", b->name);
    bool byte_fallback = false;
    if (no_affix(b, model, "continuing_subword_prefix") ||
        no_affix(b, model, "end_of_word_suffix") ||
        jbool(b, model, "model", "fuse_unk", false, &b->fuse_unk) ||
        jbool(b, model, "model", "byte_fallback", false, &byte_fallback) ||
        jbool(b, model, "model", "ignore_merges", false, &b->ignore_merges))
        return -1;
    if (byte_fallback)
        return vlm_set_error("%s: model.byte_fallback: true is not supported", b->name);
    v = jget(model, "unk_token");
    if (jabsent(v)) return 0;
    if (!cJSON_IsString(v)) return vlm_set_error("%s: model.unk_token: expected a string", b->name);
    b->unk_id = vocab_find(b, v->valuestring, strlen(v->valuestring));
    if (b->unk_id < 0)
        return vlm_set_error("%s: model.unk_token: '%.60s' is not in model.vocab", b->name,
                             v->valuestring);
    return 0;
}

static int parse_model(vlm_bpe *b, const cJSON *root) {
    const cJSON *model = jget(root, "model");
    if (!cJSON_IsObject(model))
        return vlm_set_error("%s: model: %s", b->name,
                             model ? "expected an object" : "missing (not a tokenizer.json?)");
    const char *type = jtype(model);
    if (jget(model, "type") && (!type || strcmp(type, "BPE")))
        return vlm_set_error("%s: model.type: '%s' is not supported (only BPE)", b->name,
                             type ? type : "?");
    const cJSON *vocab = jget(model, "vocab"), *added = jget(root, "added_tokens");
    if (!cJSON_IsObject(vocab))
        return vlm_set_error("%s: model.vocab: %s", b->name,
                             vocab ? "expected an object {token: id}" : "missing");
    if (!jabsent(added) && !cJSON_IsArray(added))
        return vlm_set_error("%s: added_tokens: expected an array", b->name);
    int32_t n_ids = 0;
    if (count_ids(b, vocab, added, &n_ids) || alloc_ids(b, n_ids) || parse_vocab(b, vocab) ||
        parse_merges(b, jget(model, "merges")) || parse_added(b, added))
        return -1;
    return parse_model_options(b, model);
}

/* ---- loading: normalizer, pre-tokenizer, decoder --------------------------- */

static int parse_normalizer(const vlm_bpe *b, const cJSON *root) {
    const cJSON *n = jget(root, "normalizer");
    if (jabsent(n)) return 0;
    const char *type = jtype(n);
    const cJSON *list = jget(n, "normalizers");
    if (type && !strcmp(type, "Sequence") && cJSON_IsArray(list) && !cJSON_GetArraySize(list))
        return 0;
    return vlm_set_error("%s: normalizer: type '%s' is not supported (only null)", b->name,
                         type ? type : "?");
}

static int parse_bytelevel(vlm_bpe *b, const cJSON *pt, const char *path) {
    return jbool(b, pt, path, "add_prefix_space", true, &b->add_prefix_space) ||
                   jbool(b, pt, path, "trim_offsets", true, &b->trim_offsets) ||
                   jbool(b, pt, path, "use_regex", true, &b->use_regex)
               ? -1
               : 0;
}

static int parse_split(vlm_bpe *b, const cJSON *pt, const char *path, pre_step *st) {
    const cJSON *pat = jget(pt, "pattern"), *beh = jget(pt, "behavior");
    const cJSON *str = jget(pat, "String"), *re = jget(pat, "Regex");
    if (cJSON_IsString(str) && str->valuestring[0]) {
        int64_t off = pool_add(b, str->valuestring, strlen(str->valuestring));
        if (off < 0) return -1;
        st->kind = STEP_SPLIT_STRING, st->off = (uint32_t)off;
        st->len = (uint32_t)strlen(str->valuestring);
    } else if (cJSON_IsString(re) && !strcmp(re->valuestring, GPT2_PATTERN)) {
        st->kind = STEP_SPLIT_GPT2;
    } else if (cJSON_IsString(re)) {
        return vlm_set_error("%s: %s.pattern.Regex: only the GPT-2 pattern is supported, not "
                             "'%.80s'",
                             b->name, path, re->valuestring);
    } else {
        return vlm_set_error("%s: %s.pattern: expected {\"String\": s} or {\"Regex\": r}", b->name,
                             path);
    }
    st->behavior = -1;
    for (int k = 0; k < 5 && cJSON_IsString(beh); k++)
        if (!strcmp(beh->valuestring, split_names[k])) st->behavior = k;
    if (st->behavior < 0)
        return vlm_set_error("%s: %s.behavior: expected Removed, Isolated, MergedWithPrevious, "
                             "MergedWithNext or Contiguous",
                             b->name, path);
    return jbool(b, pt, path, "invert", false, &st->invert);
}

/* One element of a Sequence other than ByteLevel. */
static int parse_step(vlm_bpe *b, const cJSON *pt, const char *path) {
    const char *type = jtype(pt);
    pre_step st = {0};
    if (type && !strcmp(type, "Digits")) {
        if (jbool(b, pt, path, "individual_digits", false, &st.individual_digits)) return -1;
        st.kind = STEP_DIGITS;
        st.behavior = st.individual_digits ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS;
    } else if (type && !strcmp(type, "Split")) {
        if (parse_split(b, pt, path, &st)) return -1;
    } else {
        return vlm_set_error("%s: %s: type '%s' is not supported (Digits, Split, ByteLevel)",
                             b->name, path, type ? type : "?");
    }
    if (GROW(b->steps, b->steps_cap, b->n_steps + 1, "bpe pre-tokenizer")) return -1;
    b->steps[b->n_steps++] = st;
    return 0;
}

static int parse_pretokenizer(vlm_bpe *b, const cJSON *root) {
    const cJSON *pt = jget(root, "pre_tokenizer");
    const char *type = jtype(pt);
    if (type && !strcmp(type, "ByteLevel")) return parse_bytelevel(b, pt, "pre_tokenizer");
    if (!type || strcmp(type, "Sequence"))
        return vlm_set_error("%s: pre_tokenizer: %s%s%s is not supported (byte-level BPE needs "
                             "ByteLevel, alone or last in a Sequence)",
                             b->name, type ? "type '" : "", type ? type : "null", type ? "'" : "");
    const cJSON *list = jget(pt, "pretokenizers");
    int n = cJSON_IsArray(list) ? cJSON_GetArraySize(list) : 0;
    const cJSON *e;
    int i = 0;
    char path[64];
    cJSON_ArrayForEach(e, list) {
        snprintf(path, sizeof path, "pre_tokenizer.pretokenizers[%d]", i);
        const char *t = jtype(e);
        bool last = ++i == n;
        if (t && !strcmp(t, "ByteLevel") && last) return parse_bytelevel(b, e, path);
        if (t && !strcmp(t, "ByteLevel"))
            return vlm_set_error("%s: %s: ByteLevel must come last in the Sequence", b->name, path);
        if (parse_step(b, e, path)) return -1;
    }
    return vlm_set_error("%s: pre_tokenizer.pretokenizers: no ByteLevel at the end", b->name);
}

static int parse_decoder(const vlm_bpe *b, const cJSON *root) {
    const cJSON *d = jget(root, "decoder");
    const char *type = jtype(d);
    if (type && !strcmp(type, "ByteLevel")) return 0;
    return vlm_set_error("%s: decoder: %s%s%s is not supported (byte-level BPE needs the "
                         "ByteLevel decoder)",
                         b->name, type ? "type '" : "", type ? type : "null", type ? "'" : "");
}

/* ---- loading: entry points -------------------------------------------------- */

/* "line L, column C" of the byte at pos. */
static void text_position(const char *s, size_t pos, int *line, int *col) {
    *line = 1, *col = 1;
    for (size_t i = 0; i < pos; i++) {
        if (s[i] == '\n')
            ++*line, *col = 1;
        else
            ++*col;
    }
}

static cJSON *parse_json(const char *json, size_t len, const char *name) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    size_t pos = end && end >= json && end <= json + len ? (size_t)(end - json) : len;
    while (root && pos < len &&
           (json[pos] == ' ' || json[pos] == '\t' || json[pos] == '\r' || json[pos] == '\n'))
        pos++;
    if (root && pos == len) return root;
    int line, col;
    text_position(json, pos, &line, &col);
    vlm_set_error("%s: not valid JSON (%s at line %d, column %d)", name,
                  root ? "trailing characters" : "syntax error", line, col);
    cJSON_Delete(root);
    return NULL;
}

vlm_bpe *vlm_bpe_load_json(const char *json, size_t len, const char *name) {
    if (!name) name = "tokenizer.json";
    if (!json) return vlm_set_error("%s: no JSON text (NULL)", name), NULL;
    cJSON *root = parse_json(json, len, name);
    if (!root) return NULL;
    vlm_bpe *b = bpe_new(name);
    if (b && !cJSON_IsObject(root)) vlm_set_error("%s: the top level is not a JSON object", name);
    if (!b || !cJSON_IsObject(root) || parse_model(b, root) || parse_normalizer(b, root) ||
        parse_pretokenizer(b, root) || parse_decoder(b, root) || bpe_finish(b)) {
        vlm_bpe_free(b);
        b = NULL;
    }
    cJSON_Delete(root);
    return b;
}

/* Whole file into a malloc'd buffer. */
static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return vlm_set_error("%s: cannot open (%s)", path, strerror(errno)), NULL;
    char *buf = NULL;
    size_t cap = 0, n = 0, got;
    do {
        if (GROW(buf, cap, n + 65536, "reading a file")) return fclose(f), free(buf), NULL;
        got = fread(buf + n, 1, cap - n, f);
        n += got;
    } while (got);
    int err = ferror(f);
    fclose(f);
    if (err) return free(buf), vlm_set_error("%s: read error", path), NULL;
    *len = n;
    return buf;
}

vlm_bpe *vlm_bpe_load(const char *path) {
    if (!path) return vlm_set_error("bpe_load: no path (NULL)"), NULL;
    size_t len;
    char *buf = read_file(path, &len);
    if (!buf) return NULL;
    vlm_bpe *b = vlm_bpe_load_json(buf, len, path);
    free(buf);
    return b;
}

/* ---- queries ------------------------------------------------------------------ */

int vlm_bpe_vocab_size(const vlm_bpe *b) { return b ? b->n_ids : 0; }
int vlm_bpe_merge_count(const vlm_bpe *b) { return b ? (int)b->n_merges : 0; }

int32_t vlm_bpe_token_id(const vlm_bpe *b, const char *token) {
    if (!b || !token) return vlm_set_error("bpe_token_id: NULL argument");
    size_t len = strlen(token);
    for (size_t i = 0; i < b->n_added; i++)
        if (b->added[i].len == len && !memcmp(b->pool + b->added[i].off, token, len))
            return b->added[i].id;
    int32_t id = vocab_find(b, token, len);
    if (id < 0) return vlm_set_error("%s: no token '%.60s'", b->name, token);
    return id;
}

const char *vlm_bpe_token(const vlm_bpe *b, int32_t id) {
    if (!b || id < 0 || id >= b->n_ids) return NULL;
    if (b->flags[id] & TOK_ADDED) return str_at(b, b->dec[id]);
    return b->flags[id] & TOK_VOCAB ? str_at(b, b->tok[id]) : NULL;
}

bool vlm_bpe_is_special(const vlm_bpe *b, int32_t id) {
    return b && id >= 0 && id < b->n_ids && (b->flags[id] & TOK_SPECIAL);
}

/* ---- encoding: per-call state -------------------------------------------------- */

typedef struct {
    int32_t rank, pos;
} hent;

typedef struct {
    int32_t *ids; /* the output */
    size_t n, cap;
    span *pc[2]; /* piece lists for the pre-tokenizer steps */
    size_t pc_n[2], pc_cap[2];
    char *buf; /* a piece with its prefix space */
    size_t buf_cap;
    char *map; /* a piece in byte-mapped characters (ignore_merges) */
    size_t map_cap;
    int32_t *sym, *prv, *nxt; /* the word being merged, as a linked list */
    size_t sym_cap, prv_cap, nxt_cap;
    hent *heap;
    size_t heap_cap;
} enc_state;

static void enc_free(enc_state *st) {
    free(st->ids), free(st->pc[0]), free(st->pc[1]), free(st->buf), free(st->map);
    free(st->sym), free(st->prv), free(st->nxt), free(st->heap);
}

static int push_ids(enc_state *st, const int32_t *ids, size_t n) {
    if (GROW(st->ids, st->cap, st->n + n, "bpe encode")) return -1;
    memcpy(st->ids + st->n, ids, n * sizeof *ids);
    st->n += n;
    return 0;
}

/* ---- encoding: the word cache -------------------------------------------------- */

static void cache_clear(bpe_cache *c) {
    if (c->map.cap) memset(c->map.item, 0, c->map.cap * sizeof *c->map.item);
    c->map.count = c->n = c->klen = c->ilen = 0;
}

/* 1 and the ids appended to st on a hit, 0 on a miss, -1 on error. */
static int cache_get(bpe_cache *c, const char *w, size_t n, uint32_t h, enc_state *st) {
    pthread_mutex_lock(&c->mu);
    int64_t i = strmap_get(&c->map, c->kpool, c->key, w, n, h);
    int rc = i < 0 ? 0 : push_ids(st, c->ipool + c->val[i].off, c->val[i].len) ? -1 : 1;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* Best effort: when memory runs out the cache is emptied and encoding goes on. */
static void cache_put(bpe_cache *c, const char *w, size_t n, uint32_t h, const int32_t *ids,
                      size_t k) {
    pthread_mutex_lock(&c->mu);
    if (strmap_get(&c->map, c->kpool, c->key, w, n, h) < 0) { /* another thread may have */
        if (c->n >= CACHE_MAX_ENTRIES) cache_clear(c);
        if (GROW(c->key, c->key_cap, c->n + 1, "bpe cache") ||
            GROW(c->val, c->val_cap, c->n + 1, "bpe cache") ||
            GROW(c->kpool, c->kcap, c->klen + n, "bpe cache") ||
            GROW(c->ipool, c->icap, c->ilen + k, "bpe cache")) {
            cache_clear(c);
        } else {
            memcpy(c->kpool + c->klen, w, n);
            memcpy(c->ipool + c->ilen, ids, k * sizeof *ids);
            c->key[c->n] = (span){(uint32_t)c->klen, (uint32_t)n};
            c->val[c->n] = (span){(uint32_t)c->ilen, (uint32_t)k};
            if (strmap_put(&c->map, h, (uint32_t)c->n))
                cache_clear(c);
            else
                c->n++, c->klen += n, c->ilen += k;
        }
    }
    pthread_mutex_unlock(&c->mu);
}

/* ---- encoding: merging one piece ------------------------------------------------ */

static bool hent_less(hent a, hent b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(hent *h, size_t *n, hent e) {
    size_t i = (*n)++;
    while (i > 0 && hent_less(e, h[(i - 1) / 2]))
        h[i] = h[(i - 1) / 2], i = (i - 1) / 2;
    h[i] = e;
}

static hent heap_pop(hent *h, size_t *n) {
    hent top = h[0], last = h[--*n];
    size_t i = 0;
    for (size_t c; (c = 2 * i + 1) < *n; i = c) {
        if (c + 1 < *n && hent_less(h[c + 1], h[c])) c++;
        if (!hent_less(h[c], last)) break;
        h[i] = h[c];
    }
    h[i] = last;
    return top;
}

/* Queues the pair that starts at symbol i if it has a merge. */
static void push_pair(const vlm_bpe *b, enc_state *st, size_t *nh, int32_t i) {
    int32_t j = st->nxt[i];
    int32_t r = j < 0 ? -1 : pairmap_get(&b->merges, pair_key(st->sym[i], st->sym[j]));
    if (r >= 0) heap_push(st->heap, nh, (hent){r, i});
}

/* The piece's bytes as initial symbols. A byte whose symbol is missing from
 * the vocab becomes unk_token (runs fused when fuse_unk) or, without one, is
 * dropped, as HF does. */
static int word_symbols(const vlm_bpe *b, enc_state *st, const char *w, size_t n, int32_t *k) {
    if (n > INT32_MAX / 4)
        return vlm_set_error("%s: encode: a %zu-byte piece is too long", b->name, n);
    if (GROW(st->sym, st->sym_cap, n, "bpe encode") ||
        GROW(st->prv, st->prv_cap, n, "bpe encode") ||
        GROW(st->nxt, st->nxt_cap, n, "bpe encode") ||
        GROW(st->heap, st->heap_cap, 3 * n + 1, "bpe encode"))
        return -1;
    bool prev_unk = false;
    *k = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t id = b->byte_id[(uint8_t)w[i]];
        if (id >= 0) {
            st->sym[(*k)++] = id, prev_unk = false;
        } else if (b->unk_id >= 0) {
            if (!(b->fuse_unk && prev_unk)) st->sym[(*k)++] = b->unk_id;
            prev_unk = true;
        }
    }
    return 0;
}

/* Merges st->sym[0..n): always the pair of lowest rank, the leftmost among
 * equals. The symbols form a linked list; the heap holds candidate pairs by
 * (rank, position) and entries made stale by an earlier merge are skipped.
 * At most n - 1 initial entries plus 2 per merge: 3n bounds the heap. */
static int merge_word(const vlm_bpe *b, enc_state *st, int32_t n) {
    int32_t *sym = st->sym, *prv = st->prv, *nxt = st->nxt;
    size_t nh = 0;
    for (int32_t i = 0; i < n; i++)
        prv[i] = i - 1, nxt[i] = i + 1 < n ? i + 1 : -1;
    for (int32_t i = 0; i + 1 < n; i++)
        push_pair(b, st, &nh, i);
    while (nh) {
        hent e = heap_pop(st->heap, &nh);
        int32_t i = e.pos, j = nxt[i];
        if (sym[i] < 0 || j < 0 || pairmap_get(&b->merges, pair_key(sym[i], sym[j])) != e.rank)
            continue;
        sym[i] = b->merge_out[e.rank];
        sym[j] = -1;
        nxt[i] = nxt[j];
        if (nxt[i] >= 0) prv[nxt[i]] = i;
        if (prv[i] >= 0) push_pair(b, st, &nh, prv[i]);
        push_pair(b, st, &nh, i);
    }
    if (GROW(st->ids, st->cap, st->n + (size_t)n, "bpe encode")) return -1;
    for (int32_t i = n ? 0 : -1; i >= 0; i = nxt[i])
        st->ids[st->n++] = sym[i];
    return 0;
}

/* ignore_merges: the id of the whole piece if the vocab has it, -1 if not,
 * -2 on error. */
static int32_t whole_word(const vlm_bpe *b, enc_state *st, const char *w, size_t n) {
    if (GROW(st->map, st->map_cap, 2 * n + 1, "bpe encode")) return -2;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        k += (size_t)utf8_encode(vlm_byte_to_unicode((uint8_t)w[i]), st->map + k);
    return vocab_find(b, st->map, k);
}

static int encode_piece(const vlm_bpe *b, enc_state *st, const char *w, size_t n) {
    bool cacheable = n <= CACHE_MAX_WORD;
    uint32_t h = cacheable ? hash_bytes(w, n) : 0;
    if (cacheable) {
        int hit = cache_get(b->cache, w, n, h, st);
        if (hit) return hit < 0 ? -1 : 0;
    }
    size_t first = st->n;
    int32_t id = b->ignore_merges ? whole_word(b, st, w, n) : -1, k;
    if (id == -2) return -1;
    if (id >= 0 ? push_ids(st, &id, 1) : word_symbols(b, st, w, n, &k) || merge_word(b, st, k))
        return -1;
    if (cacheable) cache_put(b->cache, w, n, h, st->ids + first, st->n - first);
    return 0;
}

/* ---- encoding: the pre-tokenizer ----------------------------------------------- */

/* ByteLevel: the prefix space (on every piece that lacks one, as HF does),
 * the GPT-2 split, then each piece through the model. */
static int bytelevel(const vlm_bpe *b, enc_state *st, const char *p, size_t n) {
    if (!n) return 0;
    if (b->add_prefix_space && p[0] != ' ') {
        if (GROW(st->buf, st->buf_cap, n + 1, "bpe encode")) return -1;
        st->buf[0] = ' ';
        memcpy(st->buf + 1, p, n);
        p = st->buf, n++;
    }
    if (!b->use_regex) return encode_piece(b, st, p, n);
    for (size_t i = 0, e; i < n; i = e) {
        e = vlm_gpt2_split(p, n, i);
        if (encode_piece(b, st, p + i, e - i)) return -1;
    }
    return 0;
}

/* Turns the matches / non-matches of one pre-tokenizer over one piece into
 * output pieces, per HF's SplitDelimiterBehavior (see split_names). */
typedef struct {
    enc_state *st;
    int out; /* the piece list written */
    int behavior;
    bool invert;
    size_t first; /* the first output of the current input piece */
    bool prev_match, held;
    span pend; /* MergedWithNext: a match waiting for what follows */
} splitter;

static int sp_push(splitter *sp, uint32_t off, uint32_t len) {
    enc_state *st = sp->st;
    int k = sp->out;
    if (GROW(st->pc[k], st->pc_cap[k], st->pc_n[k] + 1, "bpe pre-tokenizer")) return -1;
    st->pc[k][st->pc_n[k]++] = (span){off, len};
    return 0;
}

static int sp_event(splitter *sp, uint32_t s, uint32_t e, bool match) {
    enc_state *st = sp->st;
    span *last = st->pc_n[sp->out] > sp->first ? &st->pc[sp->out][st->pc_n[sp->out] - 1] : NULL;
    bool prev = sp->prev_match;
    match ^= sp->invert;
    sp->prev_match = match;
    switch (sp->behavior) {
    case SPLIT_REMOVED:
        return match ? 0 : sp_push(sp, s, e - s);
    case SPLIT_ISOLATED:
        return sp_push(sp, s, e - s);
    case SPLIT_CONTIGUOUS: /* runs of equal kind become one piece */
        if (last && match == prev) return last->len = e - last->off, 0;
        return sp_push(sp, s, e - s);
    case SPLIT_MERGED_PREV: /* a match joins the piece before it */
        if (last && match && !prev) return last->len = e - last->off, 0;
        return sp_push(sp, s, e - s);
    default: /* SPLIT_MERGED_NEXT: a match joins a non-match after it */
        if (sp->held) {
            sp->held = false;
            if (!match) return sp_push(sp, sp->pend.off, e - sp->pend.off);
            if (sp_push(sp, sp->pend.off, sp->pend.len)) return -1;
        }
        if (!match) return sp_push(sp, s, e - s);
        sp->pend = (span){s, e - s}, sp->held = true;
        return 0;
    }
}

/* Length of the step's match at i in [s, e), 0 if none. */
static uint32_t step_match(const vlm_bpe *b, const pre_step *ps, const char *t, uint32_t s,
                           uint32_t i, uint32_t e) {
    if (ps->kind == STEP_SPLIT_GPT2) return (uint32_t)vlm_gpt2_split(t + s, e - s, i - s) + s - i;
    if (ps->kind == STEP_SPLIT_STRING)
        return ps->len <= e - i && !memcmp(t + i, b->pool + ps->off, ps->len) ? ps->len : 0;
    uint32_t cp;
    int len = vlm_utf8_decode((const uint8_t *)t + i, e - i, &cp);
    return vlm_unicode_class(cp) == VLM_UC_NUMBER ? (uint32_t)len : 0; /* Digits */
}

static int step_piece(const vlm_bpe *b, const pre_step *ps, splitter *sp, const char *t, span p) {
    uint32_t s = p.off, e = p.off + p.len, gap = s;
    sp->first = sp->st->pc_n[sp->out], sp->prev_match = sp->held = false;
    for (uint32_t i = s; i < e;) {
        uint32_t m = step_match(b, ps, t, s, i, e);
        if (!m) { /* step over one character (a string pattern never starts mid-character) */
            uint32_t cp;
            i += ps->kind == STEP_DIGITS
                     ? (uint32_t)vlm_utf8_decode((const uint8_t *)t + i, e - i, &cp)
                     : 1;
            continue;
        }
        if ((gap < i && sp_event(sp, gap, i, false)) || sp_event(sp, i, i + m, true)) return -1;
        gap = i += m;
    }
    if (gap < e && sp_event(sp, gap, e, false)) return -1;
    if (!sp->held) return 0;
    sp->held = false; /* MergedWithNext: a final match stays alone */
    return sp_push(sp, sp->pend.off, sp->pend.len);
}

/* Text between added tokens: the Sequence steps, then ByteLevel. */
static int encode_segment(const vlm_bpe *b, enc_state *st, const char *t, size_t s, size_t e) {
    if (!b->n_steps) return bytelevel(b, st, t + s, e - s);
    int cur = 0;
    st->pc_n[0] = 0;
    splitter sp = {.st = st, .out = 0, .behavior = SPLIT_ISOLATED};
    if (sp_push(&sp, (uint32_t)s, (uint32_t)(e - s))) return -1;
    for (size_t k = 0; k < b->n_steps; k++, cur = !cur) {
        sp = (splitter){
            .st = st, .out = !cur, .behavior = b->steps[k].behavior, .invert = b->steps[k].invert};
        st->pc_n[!cur] = 0;
        for (size_t i = 0; i < st->pc_n[cur]; i++)
            if (step_piece(b, &b->steps[k], &sp, t, st->pc[cur][i])) return -1;
    }
    for (size_t i = 0; i < st->pc_n[cur]; i++)
        if (bytelevel(b, st, t + st->pc[cur][i].off, st->pc[cur][i].len)) return -1;
    return 0;
}

/* ---- encoding: added tokens ------------------------------------------------------ */

/* The longest added token of this pass that starts at p. */
static const added_tok *match_added(const vlm_bpe *b, int pass, const char *t, size_t p, size_t e) {
    uint8_t c = (uint8_t)t[p];
    for (uint32_t k = b->match_start[pass][c]; k < b->match_start[pass][c + 1]; k++) {
        const added_tok *a = &b->added[b->match[pass][k]];
        if (a->len <= e - p && !memcmp(b->pool + a->off, t + p, a->len)) return a;
    }
    return NULL;
}

/* lstrip: where the white space that ends [s, e) starts. */
static size_t space_tail(const char *t, size_t s, size_t e) {
    size_t tail = s;
    for (size_t i = s; i < e;) {
        uint32_t cp;
        i += (size_t)vlm_utf8_decode((const uint8_t *)t + i, e - i, &cp);
        if (vlm_unicode_class(cp) != VLM_UC_SPACE) tail = i;
    }
    return tail;
}

/* rstrip: where the white space that starts at s ends. */
static size_t space_head(const char *t, size_t s, size_t e) {
    while (s < e) {
        uint32_t cp;
        int len = vlm_utf8_decode((const uint8_t *)t + s, e - s, &cp);
        if (vlm_unicode_class(cp) != VLM_UC_SPACE) break;
        s += (size_t)len;
    }
    return s;
}

/* Cuts this pass's added tokens out of [s, e), leftmost-longest; the text in
 * between goes to pass 1 (the normalized=true tokens), then to the
 * pre-tokenizer. */
static int encode_added(const vlm_bpe *b, enc_state *st, const char *t, size_t s, size_t e,
                        int pass) {
    size_t prev = s;
    bool any = b->match_start[pass][256] > 0;
    for (size_t p = s; any && p < e;) {
        const added_tok *a = match_added(b, pass, t, p, e);
        if (!a) {
            p++;
            continue;
        }
        size_t ms = a->lstrip ? space_tail(t, prev, p) : p, me = p + a->len;
        if (a->rstrip) me = space_head(t, me, e);
        if (ms > prev &&
            (pass ? encode_segment(b, st, t, prev, ms) : encode_added(b, st, t, prev, ms, 1)))
            return -1;
        if (push_ids(st, &a->id, 1)) return -1;
        prev = p = me;
    }
    if (prev == e) return 0;
    return pass ? encode_segment(b, st, t, prev, e) : encode_added(b, st, t, prev, e, 1);
}

int vlm_bpe_encode(const vlm_bpe *b, const char *text, size_t len, int32_t **ids, int *n) {
    if (ids) *ids = NULL;
    if (n) *n = 0;
    if (!b || !ids || !n || (!text && len)) return vlm_set_error("bpe_encode: NULL argument");
    if (len >= INT32_MAX)
        return vlm_set_error("%s: encode: %zu bytes of text is too long", b->name, len);
    enc_state st = {0};
    int rc = GROW(st.ids, st.cap, len / 2 + 16, "bpe encode");
    if (!rc && len) rc = encode_added(b, &st, text, 0, len, 0);
    if (!rc) {
        *ids = st.ids, *n = (int)st.n;
        st.ids = NULL;
    }
    enc_free(&st);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------- */

char *vlm_bpe_decode(const vlm_bpe *b, const int32_t *ids, int n, bool skip_special, size_t *len) {
    if (len) *len = 0;
    if (!b || n < 0 || (!ids && n)) return vlm_set_error("bpe_decode: bad arguments"), NULL;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= b->n_ids || b->dec[id].len == NO_SPAN)
            return vlm_set_error("%s: decode: id %d (position %d) is not a token (vocab size %d)",
                                 b->name, id, i, b->n_ids),
                   NULL;
        if (!(skip_special && (b->flags[id] & TOK_SPECIAL))) total += b->dec[id].len;
    }
    char *out = malloc(total + 1);
    if (!out) return oom("bpe decode"), NULL;
    size_t k = 0;
    for (int i = 0; i < n; i++) {
        span d = b->dec[ids[i]];
        if (skip_special && (b->flags[ids[i]] & TOK_SPECIAL)) continue;
        memcpy(out + k, b->pool + d.off, d.len);
        k += d.len;
    }
    out[k] = 0;
    if (len) *len = k;
    return out;
}

/* ---- training ---------------------------------------------------------------------- */

/* A pair of adjacent symbols with its count over the corpus and the words it
 * occurs in (a superset: words that lost it stay listed and are skipped). */
typedef struct {
    int32_t a, b;
    int64_t count;
    int64_t before; /* count when the current step first touched it */
    int32_t stamp;  /* that step */
    int32_t last_word;
    int32_t *words;
    size_t nw, words_cap;
} tpair;

typedef struct {
    int64_t count;
    int32_t a, b;
} qent;

typedef struct {
    /* distinct pre-tokenized pieces ("words"): bytes, count, current symbols */
    strmap wmap;
    span *wkey, *wsym;
    int64_t *wcount;
    size_t nw, wkey_cap, wsym_cap, wcount_cap;
    char *wpool;
    size_t wlen, wpool_cap;
    int32_t *syms;
    size_t syms_cap;
    /* pairs; the queue is a max-heap with lazily corrected counts */
    pairmap pmap; /* (a, b) -> index in pairs */
    tpair *pairs;
    size_t np, pairs_cap;
    qent *heap;
    size_t nh, heap_cap;
    int32_t *touched; /* pairs whose count changed in this step */
    size_t nt, touched_cap;
    uint64_t *old_keys, *new_keys; /* pairs of a word before / after a merge */
    size_t *merged_at;             /* where the merged symbols went */
    size_t old_cap, new_cap, merged_cap;
    int32_t step;
} trainer;

static void trainer_free(trainer *tr) {
    strmap_free(&tr->wmap);
    free(tr->wkey), free(tr->wsym), free(tr->wcount), free(tr->wpool), free(tr->syms);
    pairmap_free(&tr->pmap);
    for (size_t i = 0; i < tr->np; i++)
        free(tr->pairs[i].words);
    free(tr->pairs), free(tr->heap), free(tr->touched), free(tr->old_keys), free(tr->new_keys),
        free(tr->merged_at);
}

static int add_word(trainer *tr, const char *w, size_t n) {
    uint32_t h = hash_bytes(w, n);
    int64_t i = strmap_get(&tr->wmap, tr->wpool, tr->wkey, w, n, h);
    if (i >= 0) return tr->wcount[i]++, 0;
    if (tr->wlen + n >= UINT32_MAX || tr->nw >= INT32_MAX)
        return vlm_set_error("bpe_train: more than 4 GiB of distinct words");
    if (GROW(tr->wkey, tr->wkey_cap, tr->nw + 1, "bpe training") ||
        GROW(tr->wcount, tr->wcount_cap, tr->nw + 1, "bpe training") ||
        GROW(tr->wpool, tr->wpool_cap, tr->wlen + n, "bpe training"))
        return -1;
    memcpy(tr->wpool + tr->wlen, w, n);
    tr->wkey[tr->nw] = (span){(uint32_t)tr->wlen, (uint32_t)n};
    tr->wcount[tr->nw] = 1;
    tr->wlen += n;
    return strmap_put(&tr->wmap, h, (uint32_t)tr->nw++);
}

static int count_words(trainer *tr, const char *const *texts, const size_t *lens, size_t n) {
    for (size_t t = 0; t < n; t++) {
        if (!texts[t]) return vlm_set_error("bpe_train: text %zu is NULL", t);
        size_t len = lens ? lens[t] : strlen(texts[t]);
        for (size_t p = 0, e; p < len; p = e) {
            e = vlm_gpt2_split(texts[t], len, p);
            if (add_word(tr, texts[t] + p, e - p)) return -1;
        }
    }
    return 0;
}

static bool q_better(qent x, qent y) {
    if (x.count != y.count) return x.count > y.count;
    return x.a != y.a ? x.a < y.a : x.b < y.b;
}

static int q_push(trainer *tr, qent e) {
    if (GROW(tr->heap, tr->heap_cap, tr->nh + 1, "bpe training")) return -1;
    size_t i = tr->nh++;
    while (i > 0 && q_better(e, tr->heap[(i - 1) / 2]))
        tr->heap[i] = tr->heap[(i - 1) / 2], i = (i - 1) / 2;
    tr->heap[i] = e;
    return 0;
}

static qent q_pop(trainer *tr) {
    qent *h = tr->heap, top = h[0], last = h[--tr->nh];
    size_t i = 0, n = tr->nh;
    for (size_t c; (c = 2 * i + 1) < n; i = c) {
        if (c + 1 < n && q_better(h[c + 1], h[c])) c++;
        if (!q_better(h[c], last)) break;
        h[i] = h[c];
    }
    h[i] = last;
    return top;
}

/* Index of pair (a, b), created with count 0 if new; -1 on error. */
static int64_t pair_index(trainer *tr, int32_t a, int32_t b) {
    int32_t i = pairmap_get(&tr->pmap, pair_key(a, b));
    if (i >= 0) return i;
    if (tr->np >= INT32_MAX) return vlm_set_error("bpe_train: too many pairs");
    if (GROW(tr->pairs, tr->pairs_cap, tr->np + 1, "bpe training") ||
        pairmap_set(&tr->pmap, pair_key(a, b), (int32_t)tr->np))
        return -1;
    tr->pairs[tr->np] = (tpair){.a = a, .b = b, .stamp = -1, .last_word = -1};
    return (int64_t)tr->np++;
}

static int pair_add_word(trainer *tr, int64_t pi, int32_t w) {
    tpair *p = &tr->pairs[pi];
    if (p->last_word == w) return 0;
    if (GROW(p->words, p->words_cap, p->nw + 1, "bpe training")) return -1;
    p->words[p->nw++] = w;
    p->last_word = w;
    return 0;
}

/* Every word as byte symbols, every adjacent pair counted, all queued. */
static int init_pairs(trainer *tr, const int32_t byte_sym[256]) {
    if (GROW(tr->syms, tr->syms_cap, tr->wlen, "bpe training") ||
        GROW(tr->wsym, tr->wsym_cap, tr->nw, "bpe training"))
        return -1;
    for (size_t w = 0; w < tr->nw; w++) {
        span k = tr->wkey[w];
        int32_t *s = tr->syms + k.off;
        tr->wsym[w] = k; /* symbols start one per byte, at the same offsets */
        for (uint32_t i = 0; i < k.len; i++)
            s[i] = byte_sym[(uint8_t)tr->wpool[k.off + i]];
        for (uint32_t i = 0; i + 1 < k.len; i++) {
            int64_t pi = pair_index(tr, s[i], s[i + 1]);
            if (pi < 0 || pair_add_word(tr, pi, (int32_t)w)) return -1;
            tr->pairs[pi].count += tr->wcount[w];
        }
    }
    for (size_t i = 0; i < tr->np; i++)
        if (q_push(tr, (qent){tr->pairs[i].count, tr->pairs[i].a, tr->pairs[i].b})) return -1;
    return 0;
}

static int cmp_u64(const void *x, const void *y) {
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

static void sort_keys(uint64_t *k, size_t n) {
    if (n > 32) { /* a rare long word */
        qsort(k, n, sizeof *k, cmp_u64);
        return;
    }
    for (size_t i = 1; i < n; i++) { /* most words are short: insertion sort */
        uint64_t v = k[i];
        size_t j = i;
        for (; j > 0 && k[j - 1] > v; j--)
            k[j] = k[j - 1];
        k[j] = v;
    }
}

/* Changes pair key's count by delta because of word w; queues nothing yet. */
static int apply_delta(trainer *tr, uint64_t key, int32_t w, int64_t delta, bool new_in_word) {
    int64_t pi = pair_index(tr, (int32_t)(key >> 32), (int32_t)(uint32_t)key);
    if (pi < 0) return -1;
    if (tr->pairs[pi].stamp != tr->step) {
        if (GROW(tr->touched, tr->touched_cap, tr->nt + 1, "bpe training")) return -1;
        tr->touched[tr->nt++] = (int32_t)pi;
        tr->pairs[pi].stamp = tr->step;
        tr->pairs[pi].before = tr->pairs[pi].count;
    }
    tr->pairs[pi].count += delta;
    return new_in_word ? pair_add_word(tr, pi, w) : 0;
}

/* The pairs of s[0..n) at positions lo..hi (pair k = (s[k], s[k + 1])) that
 * are not collected yet (*next = first uncollected position), into keys. */
static void collect(const int32_t *s, size_t n, size_t lo, size_t hi, size_t *next, uint64_t *keys,
                    size_t *nk) {
    for (size_t k = lo > *next ? lo : *next; k <= hi && k + 1 < n; k++)
        keys[(*nk)++] = pair_key(s[k], s[k + 1]), *next = k + 1;
}

/* Merges every (a, b) in word w into c (left to right, like encoding) and
 * applies the change of the word's pair multiset. Only pairs that touch a
 * merged occurrence change, so just those are compared (sorted, walked
 * together): exact in every overlap case ("a a a", a reused id) and O(n). */
static int update_word(trainer *tr, int32_t w, int32_t a, int32_t b, int32_t c) {
    int32_t *s = tr->syms + tr->wsym[w].off;
    size_t n = tr->wsym[w].len, m = 0, no = 0, nn = 0, nm = 0, next = 0, i;
    if (GROW(tr->old_keys, tr->old_cap, n, "bpe training") ||
        GROW(tr->new_keys, tr->new_cap, n, "bpe training") ||
        GROW(tr->merged_at, tr->merged_cap, n, "bpe training"))
        return -1;
    for (i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            collect(s, n, i ? i - 1 : 0, i + 1, &next, tr->old_keys, &no);
            tr->merged_at[nm++] = m;
            s[m++] = c, i += 2;
        } else {
            s[m++] = s[i++];
        }
    }
    if (!nm) return 0; /* the word lost the pair in an earlier step */
    tr->wsym[w].len = (uint32_t)m;
    next = 0;
    for (size_t k = 0; k < nm; k++) {
        size_t j = tr->merged_at[k];
        collect(s, m, j ? j - 1 : 0, j, &next, tr->new_keys, &nn);
    }
    sort_keys(tr->old_keys, no), sort_keys(tr->new_keys, nn);
    for (i = 0, m = 0; i < no || m < nn;) {
        uint64_t k = m >= nn || (i < no && tr->old_keys[i] < tr->new_keys[m]) ? tr->old_keys[i]
                                                                              : tr->new_keys[m];
        int64_t co = 0, cn = 0;
        for (; i < no && tr->old_keys[i] == k; i++)
            co++;
        for (; m < nn && tr->new_keys[m] == k; m++)
            cn++;
        if (co != cn && apply_delta(tr, k, w, (cn - co) * tr->wcount[w], co == 0)) return -1;
    }
    return 0;
}

static int apply_merge(trainer *tr, int32_t a, int32_t b, int32_t c) {
    int64_t pi = pairmap_get(&tr->pmap, pair_key(a, b));
    size_t nw = tr->pairs[pi].nw; /* (a, b) gains no words while merging */
    tr->step++, tr->nt = 0;
    for (size_t k = 0; k < nw; k++)
        if (update_word(tr, tr->pairs[pi].words[k], a, b, c)) return -1;
    for (size_t k = 0; k < tr->nt; k++) { /* decreases are corrected when popped */
        const tpair *p = &tr->pairs[tr->touched[k]];
        if (p->count > p->before && q_push(tr, (qent){p->count, p->a, p->b})) return -1;
    }
    return 0;
}

/* The id of left + right: an existing token with that string, or a new one. */
static int merged_id(vlm_bpe *bp, int32_t l, int32_t r, int32_t *next, char **buf, size_t *cap,
                     int32_t *id) {
    span a = bp->tok[l], c = bp->tok[r];
    if (GROW(*buf, *cap, (size_t)a.len + c.len + 1, "bpe training")) return -1;
    memcpy(*buf, str_at(bp, a), a.len);
    memcpy(*buf + a.len, str_at(bp, c), c.len);
    *id = vocab_find(bp, *buf, (size_t)a.len + c.len);
    if (*id >= 0) return 0;
    *id = (*next)++;
    return set_vocab(bp, *id, *buf, (size_t)a.len + c.len, "training");
}

static int train_loop(trainer *tr, vlm_bpe *bp, int32_t vocab_size, int64_t min_count,
                      int32_t *next) {
    char *buf = NULL;
    size_t cap = 0;
    int rc = 0;
    while (!rc && *next < vocab_size && tr->nh) {
        qent top = q_pop(tr);
        const tpair *p = &tr->pairs[pairmap_get(&tr->pmap, pair_key(top.a, top.b))];
        if (p->count != top.count) { /* stale: requeue with the true count */
            if (p->count > 0) rc = q_push(tr, (qent){p->count, top.a, top.b});
            continue;
        }
        if (top.count < min_count) break;
        int32_t id;
        rc = merged_id(bp, top.a, top.b, next, &buf, &cap, &id) ||
             add_merge(bp, top.a, top.b, &buf, &cap, "training") ||
             apply_merge(tr, top.a, top.b, id);
    }
    free(buf);
    return rc ? -1 : 0;
}

/* Ids 0..k-1: the special tokens; then the 256 byte symbols in code point
 * order of their characters. */
static int train_alphabet(vlm_bpe *bp, const vlm_bpe_train_opts *o, int32_t byte_sym[256],
                          int32_t *next) {
    char key[64];
    for (int i = 0; i < o->n_specials; i++) {
        const char *s = o->specials[i];
        snprintf(key, sizeof key, "special token %d", i);
        if (!s || !*s) return vlm_set_error("bpe_train: %s is empty", key);
        added_tok t = {.id = i, .len = (uint32_t)strlen(s), .special = true};
        if (set_vocab(bp, i, s, t.len, key) || add_added(bp, &t, s, key)) return -1;
    }
    *next = o->n_specials;
    for (uint32_t cp = 0; cp < 0x100 + 68; cp++) {
        int byte = vlm_unicode_to_byte(cp);
        char s[4];
        if (byte < 0) continue;
        byte_sym[byte] = *next;
        if (set_vocab(bp, (*next)++, s, (size_t)utf8_encode(cp, s),
                      "byte symbol (a special token may not be a single byte symbol)"))
            return -1;
    }
    return 0;
}

vlm_bpe *vlm_bpe_train(const char *const *texts, const size_t *lens, size_t n,
                       const vlm_bpe_train_opts *o) {
    if (!o || (!texts && n) || o->n_specials < 0 || (o->n_specials && !o->specials))
        return vlm_set_error("bpe_train: bad arguments"), NULL;
    int64_t min_vocab = (int64_t)o->n_specials + 256;
    if (o->vocab_size < min_vocab || o->vocab_size > (1 << 24))
        return vlm_set_error("bpe_train: vocab size %d is outside [%lld, %d] (%d special tokens "
                             "+ 256 byte symbols + merges)",
                             o->vocab_size, (long long)min_vocab, 1 << 24, o->n_specials),
               NULL;
    vlm_bpe *bp = bpe_new("bpe_train");
    trainer tr = {0};
    int32_t byte_sym[256], next = 0;
    int rc = !bp || alloc_ids(bp, o->vocab_size) || train_alphabet(bp, o, byte_sym, &next) ||
             count_words(&tr, texts, lens, n) || init_pairs(&tr, byte_sym) ||
             train_loop(&tr, bp, o->vocab_size, o->min_frequency > 1 ? o->min_frequency : 1, &next);
    trainer_free(&tr);
    if (!rc) {
        bp->n_ids = next;
        bp->add_prefix_space = false;
        rc = bpe_finish(bp);
    }
    if (rc) vlm_bpe_free(bp), bp = NULL;
    return bp;
}

/* ---- writing tokenizer.json ---------------------------------------------------------- */

/* Adds item to obj (an object when key, else an array); false if anything
 * is NULL or fails, so a whole build can be checked once. */
static bool put(cJSON *obj, const char *key, cJSON *item) {
    bool ok = obj && item &&
              (key ? cJSON_AddItemToObject(obj, key, item) : cJSON_AddItemToArray(obj, item));
    if (!ok) cJSON_Delete(item);
    return ok;
}

static cJSON *json_bytelevel(bool prefix, bool trim, bool regex) {
    cJSON *o = cJSON_CreateObject();
    bool ok = put(o, "type", cJSON_CreateString("ByteLevel")) &&
              put(o, "add_prefix_space", cJSON_CreateBool(prefix)) &&
              put(o, "trim_offsets", cJSON_CreateBool(trim)) &&
              put(o, "use_regex", cJSON_CreateBool(regex));
    return ok ? o : (cJSON_Delete(o), NULL);
}

static cJSON *json_step(const vlm_bpe *b, const pre_step *s) {
    cJSON *o = cJSON_CreateObject(), *pat = NULL;
    bool ok;
    if (s->kind == STEP_DIGITS)
        return put(o, "type", cJSON_CreateString("Digits")) &&
                       put(o, "individual_digits", cJSON_CreateBool(s->individual_digits))
                   ? o
                   : (cJSON_Delete(o), NULL);
    ok = put(o, "type", cJSON_CreateString("Split")) &&
         put(o, "pattern", pat = cJSON_CreateObject()) &&
         put(pat, s->kind == STEP_SPLIT_GPT2 ? "Regex" : "String",
             cJSON_CreateString(s->kind == STEP_SPLIT_GPT2 ? GPT2_PATTERN : b->pool + s->off)) &&
         put(o, "behavior", cJSON_CreateString(split_names[s->behavior])) &&
         put(o, "invert", cJSON_CreateBool(s->invert));
    return ok ? o : (cJSON_Delete(o), NULL);
}

static cJSON *json_pretokenizer(const vlm_bpe *b) {
    cJSON *bl = json_bytelevel(b->add_prefix_space, b->trim_offsets, b->use_regex);
    if (!b->n_steps) return bl;
    cJSON *o = cJSON_CreateObject(), *list = NULL;
    bool ok = put(o, "type", cJSON_CreateString("Sequence")) &&
              put(o, "pretokenizers", list = cJSON_CreateArray());
    for (size_t i = 0; ok && i < b->n_steps; i++)
        ok = put(list, NULL, json_step(b, &b->steps[i]));
    ok = ok ? put(list, NULL, bl) : (cJSON_Delete(bl), false);
    return ok ? o : (cJSON_Delete(o), NULL);
}

static cJSON *json_added(const vlm_bpe *b) {
    cJSON *list = cJSON_CreateArray();
    bool ok = list != NULL;
    for (size_t i = 0; ok && i < b->n_added; i++) {
        const added_tok *a = &b->added[i];
        cJSON *o = cJSON_CreateObject();
        ok = put(list, NULL, o) && put(o, "id", cJSON_CreateNumber(a->id)) &&
             put(o, "content", cJSON_CreateString(b->pool + a->off)) &&
             put(o, "single_word", cJSON_CreateFalse()) &&
             put(o, "lstrip", cJSON_CreateBool(a->lstrip)) &&
             put(o, "rstrip", cJSON_CreateBool(a->rstrip)) &&
             put(o, "normalized", cJSON_CreateBool(a->normalized)) &&
             put(o, "special", cJSON_CreateBool(a->special));
    }
    return ok ? list : (cJSON_Delete(list), NULL);
}

/* Merges as "a b" strings (readable by every tokenizers version) unless a
 * token contains a space, then as ["a", "b"] pairs. */
static cJSON *json_merges(const vlm_bpe *b, char **buf, size_t *cap) {
    bool pairs = false;
    for (size_t i = 0; i < 2 * b->n_merges; i++)
        pairs |= memchr(str_at(b, b->tok[b->merge_ab[i]]), ' ', b->tok[b->merge_ab[i]].len) != NULL;
    cJSON *list = cJSON_CreateArray();
    bool ok = list != NULL;
    for (size_t i = 0; ok && i < b->n_merges; i++) {
        const char *l = str_at(b, b->tok[b->merge_ab[2 * i]]),
                   *r = str_at(b, b->tok[b->merge_ab[2 * i + 1]]);
        if (pairs) {
            const char *two[2] = {l, r};
            ok = put(list, NULL, cJSON_CreateStringArray(two, 2));
            continue;
        }
        size_t need = strlen(l) + strlen(r) + 2;
        ok = !GROW(*buf, *cap, need, "bpe save");
        if (ok) snprintf(*buf, need, "%s %s", l, r);
        ok = ok && put(list, NULL, cJSON_CreateString(*buf));
    }
    return ok ? list : (cJSON_Delete(list), NULL);
}

static cJSON *json_model(const vlm_bpe *b) {
    cJSON *m = cJSON_CreateObject(), *vocab = NULL;
    char *buf = NULL;
    size_t cap = 0;
    bool ok = put(m, "type", cJSON_CreateString("BPE")) && put(m, "dropout", cJSON_CreateNull()) &&
              put(m, "unk_token",
                  b->unk_id >= 0 ? cJSON_CreateString(str_at(b, b->tok[b->unk_id]))
                                 : cJSON_CreateNull()) &&
              put(m, "continuing_subword_prefix", cJSON_CreateNull()) &&
              put(m, "end_of_word_suffix", cJSON_CreateNull()) &&
              put(m, "fuse_unk", cJSON_CreateBool(b->fuse_unk)) &&
              put(m, "byte_fallback", cJSON_CreateFalse()) &&
              put(m, "ignore_merges", cJSON_CreateBool(b->ignore_merges)) &&
              put(m, "vocab", vocab = cJSON_CreateObject());
    for (int32_t id = 0; ok && id < b->n_ids; id++)
        if (b->flags[id] & TOK_VOCAB)
            ok = put(vocab, str_at(b, b->tok[id]), cJSON_CreateNumber(id));
    ok = ok && put(m, "merges", json_merges(b, &buf, &cap));
    free(buf);
    return ok ? m : (cJSON_Delete(m), NULL);
}

/* The layout HF tokenizers writes (keys in its order). */
static cJSON *to_json(const vlm_bpe *b) {
    cJSON *root = cJSON_CreateObject();
    bool ok =
        put(root, "version", cJSON_CreateString("1.0")) &&
        put(root, "truncation", cJSON_CreateNull()) && put(root, "padding", cJSON_CreateNull()) &&
        put(root, "added_tokens", json_added(b)) && put(root, "normalizer", cJSON_CreateNull()) &&
        put(root, "pre_tokenizer", json_pretokenizer(b)) &&
        put(root, "post_processor", cJSON_CreateNull()) &&
        put(root, "decoder", json_bytelevel(true, true, true)) && put(root, "model", json_model(b));
    return ok ? root : (cJSON_Delete(root), NULL);
}

/* Writes "<path>.tmp.<pid>", flushes it to disk, renames it over path. */
static int write_atomic(const char *path, const char *text, size_t len) {
    size_t n = strlen(path) + 32;
    char *tmp = malloc(n);
    if (!tmp) return oom("bpe save");
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        vlm_set_error("%s: cannot create %s (%s)", path, tmp, strerror(errno));
        return free(tmp), -1;
    }
    bool ok = fwrite(text, 1, len, f) == len && fputc('\n', f) != EOF && fflush(f) == 0 &&
              fsync(fileno(f)) == 0;
    int err = errno;
    ok = fclose(f) == 0 && ok;
    if (ok && rename(tmp, path) != 0) ok = false, err = errno;
    if (!ok) {
        remove(tmp);
        vlm_set_error("%s: cannot write (%s)", path, strerror(err));
    }
    free(tmp);
    return ok ? 0 : -1;
}

int vlm_bpe_save(const vlm_bpe *b, const char *path) {
    if (!b || !path) return vlm_set_error("bpe_save: NULL argument");
    cJSON *root = to_json(b);
    char *text = root ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text) return oom("bpe save");
    int rc = write_atomic(path, text, strlen(text));
    cJSON_free(text);
    return rc;
}
