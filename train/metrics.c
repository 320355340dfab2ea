/* metrics.c - captioning metrics as pycocoevalcap computes them (BLEU-1..4
 * with the "closest" reference length, CIDEr-D), the PTB-style tokenizer
 * approximation they run on (documented in train.h), and the zero-shot and
 * retrieval metrics over embeddings.
 *
 * N-grams are counted on interned word ids: every sentence becomes a sorted
 * array of (n-gram, count), so matching a hypothesis against a reference is
 * one merge walk, and document frequencies are one sort of the corpus's
 * per-image n-gram sets. */
#include "train.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- the tokenizer ------------------------------------------------------------------- */

static bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }
static bool is_strip(char c) { return c && strchr(".:'-", c); }

static const char *const clitics[] = {"n't", "'s", "'re", "'ve", "'ll", "'d", "'m", NULL};

/* Index of the clitic word ends with (the whole word when whole), or -1. */
static int clitic_suffix(const char *w, size_t n, bool whole) {
    for (int i = 0; clitics[i]; i++) {
        size_t k = strlen(clitics[i]);
        if ((whole ? n == k : n > k) && !memcmp(w + n - k, clitics[i], k)) return i;
    }
    return -1;
}

/* Appends word w[0..n) to out (space-separated); out has room for it. */
static void emit(char *out, size_t *len, const char *w, size_t n) {
    if (!n) return;
    if (*len) out[(*len)++] = ' ';
    memcpy(out + *len, w, n);
    *len += n;
}

/* Rules 3-4 of infer.h for one word. */
static void tokenize_word(char *out, size_t *len, const char *w, size_t n) {
    while (n && is_strip(w[n - 1])) n--;
    if (clitic_suffix(w, n, true) >= 0) return emit(out, len, w, n);
    while (n && is_strip(*w)) w++, n--;
    int c = clitic_suffix(w, n, false);
    if (c < 0) return emit(out, len, w, n);
    size_t k = strlen(clitics[c]);
    emit(out, len, w, n - k);
    emit(out, len, w + n - k, k);
}

char *vlm_caption_tokenize(const char *text) {
    size_t n = strlen(text);
    /* splitting a clitic adds one space per word: at most doubles the size */
    char *low = malloc(n + 1), *out = malloc(2 * n + 1);
    if (!low || !out) {
        free(low), free(out);
        vlm_set_error("caption tokenizer: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        char c = text[i];
        if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
        bool digits = c == ',' && i > 0 && i + 1 < n && is_digit(text[i - 1]) && is_digit(text[i + 1]);
        low[i] = c && strchr(",;!?\"()[]{}`", c) && !digits ? ' ' : c;
    }
    size_t len = 0;
    for (size_t i = 0; i < n;) {
        while (i < n && is_space(low[i])) i++;
        size_t s = i;
        while (i < n && !is_space(low[i])) i++;
        tokenize_word(out, &len, low + s, i - s);
    }
    out[len] = 0;
    free(low);
    return out;
}

/* ---- sentences as sorted n-gram counts ---------------------------------------------- */

#define MAX_N 4

typedef struct {
    int32_t w[MAX_N]; /* word ids; -1 past the n-gram's length */
} ngram;

typedef struct {
    ngram g;
    int32_t count;
} ngram_count;

typedef struct {
    ngram_count *v; /* sorted by n-gram, unique */
    int64_t n;
    int64_t words;
} sentence;

static int ngram_cmp(const ngram *a, const ngram *b) {
    for (int k = 0; k < MAX_N; k++)
        if (a->w[k] != b->w[k]) return a->w[k] < b->w[k] ? -1 : 1;
    return 0;
}
static int ngram_count_cmp(const void *a, const void *b) {
    return ngram_cmp(&((const ngram_count *)a)->g, &((const ngram_count *)b)->g);
}
static int ngram_len(const ngram *g) {
    int k = 0;
    while (k < MAX_N && g->w[k] >= 0) k++;
    return k;
}

/* Word strings -> ids: open addressing over FNV-1a hashes. */
typedef struct {
    char **keys;
    size_t cap, count;
} interner;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)s[i]) * 1099511628211ULL;
    return h;
}

static int intern_grow(interner *t) {
    size_t cap = t->cap ? 2 * t->cap : 1024;
    char **keys = calloc(cap, sizeof *keys);
    if (!keys) return -1;
    for (size_t i = 0; i < t->cap; i++) {
        if (!t->keys[i]) continue;
        size_t j = fnv1a(t->keys[i], strlen(t->keys[i])) & (cap - 1);
        while (keys[j]) j = (j + 1) & (cap - 1);
        keys[j] = t->keys[i];
    }
    free(t->keys);
    t->keys = keys, t->cap = cap;
    return 0;
}

/* The id of w[0..n) (ids count up from 0 in order of first sight). The id
 * lives in the key's first bytes, "<int32 id><word>\0", since slots move
 * when the table grows. -1 when out of memory. */
static int32_t intern(interner *t, const char *w, size_t n) {
    if (2 * (t->count + 1) > t->cap && intern_grow(t)) return -1;
    size_t j = fnv1a(w, n) & (t->cap - 1);
    for (; t->keys[j]; j = (j + 1) & (t->cap - 1)) {
        const char *k = t->keys[j] + sizeof(int32_t);
        if (!strncmp(k, w, n) && !k[n]) {
            int32_t id;
            memcpy(&id, t->keys[j], sizeof id);
            return id;
        }
    }
    char *key = malloc(sizeof(int32_t) + n + 1);
    if (!key) return -1;
    int32_t id = (int32_t)t->count++;
    memcpy(key, &id, sizeof id);
    memcpy(key + sizeof id, w, n);
    key[sizeof id + n] = 0;
    t->keys[j] = key;
    return id;
}

static void interner_free(interner *t) {
    for (size_t i = 0; i < t->cap; i++) free(t->keys[i]);
    free(t->keys);
}

/* Splits text at whitespace into word ids (malloc'd *ids, *n words). */
static int words_of(interner *t, const char *text, int32_t **ids, int64_t *n) {
    size_t len = strlen(text);
    *ids = malloc((len / 2 + 1) * sizeof **ids);
    if (!*ids) return -1;
    *n = 0;
    for (size_t i = 0; i < len;) {
        while (i < len && is_space(text[i])) i++;
        size_t s = i;
        while (i < len && !is_space(text[i])) i++;
        if (i == s) continue;
        int32_t id = intern(t, text + s, i - s);
        if (id < 0) return -1;
        (*ids)[(*n)++] = id;
    }
    return 0;
}

/* Every n-gram of 1..MAX_N words, counted and sorted. */
static int count_ngrams(const int32_t *ids, int64_t n, sentence *s) {
    s->words = n;
    s->n = 0;
    s->v = malloc((size_t)(MAX_N * n + 1) * sizeof *s->v);
    if (!s->v) return -1;
    ngram_count *v = s->v;
    int64_t m = 0;
    for (int k = 1; k <= MAX_N; k++)
        for (int64_t i = 0; i + k <= n; i++, m++) {
            for (int j = 0; j < MAX_N; j++) v[m].g.w[j] = j < k ? ids[i + j] : -1;
            v[m].count = 1;
        }
    qsort(v, (size_t)m, sizeof *v, ngram_count_cmp);
    for (int64_t i = 0; i < m; i++) {
        if (s->n && !ngram_cmp(&v[s->n - 1].g, &v[i].g))
            v[s->n - 1].count++;
        else
            v[s->n++] = v[i];
    }
    return 0;
}

/* The corpus as sentences: hyps[0..n), then every reference. */
typedef struct {
    int64_t n, n_refs;
    sentence *hyp, *ref; /* ref[ref_start[i] ..) are image i's */
    const int64_t *ref_start;
} counted;

static void counted_free(counted *c) {
    for (int64_t i = 0; c->hyp && i < c->n; i++) free(c->hyp[i].v);
    for (int64_t i = 0; c->ref && i < c->n_refs; i++) free(c->ref[i].v);
    free(c->hyp);
    free(c->ref);
}

static int corpus_ok(const vlm_caption_corpus *c) {
    if (!c || c->n < 1 || !c->hyps || !c->refs || !c->ref_start || c->ref_start[0] != 0)
        return vlm_set_error("caption metrics: need n >= 1 hypotheses, references and "
                             "ref_start with ref_start[0] = 0");
    for (int64_t i = 0; i < c->n; i++) {
        if (c->ref_start[i + 1] <= c->ref_start[i])
            return vlm_set_error("caption metrics: image %lld has no reference "
                                 "(ref_start[%lld] = %lld, ref_start[%lld] = %lld)",
                                 (long long)i, (long long)i, (long long)c->ref_start[i],
                                 (long long)i + 1, (long long)c->ref_start[i + 1]);
        if (!c->hyps[i]) return vlm_set_error("caption metrics: hypothesis %lld is NULL", (long long)i);
    }
    for (int64_t j = 0; j < c->ref_start[c->n]; j++)
        if (!c->refs[j]) return vlm_set_error("caption metrics: reference %lld is NULL", (long long)j);
    return 0;
}

static int count_text(interner *t, const char *text, bool tokenize, sentence *s) {
    char *tok = tokenize ? vlm_caption_tokenize(text) : NULL;
    if (tokenize && !tok) return -1;
    int32_t *ids = NULL;
    int64_t n = 0;
    int rc = words_of(t, tok ? tok : text, &ids, &n);
    if (!rc) rc = count_ngrams(ids, n, s);
    free(ids);
    free(tok);
    return rc;
}

static int count_corpus(const vlm_caption_corpus *c, counted *out) {
    memset(out, 0, sizeof *out);
    if (corpus_ok(c)) return -1;
    interner t = {0};
    out->n = c->n, out->n_refs = c->ref_start[c->n], out->ref_start = c->ref_start;
    out->hyp = calloc((size_t)out->n, sizeof *out->hyp);
    out->ref = calloc((size_t)out->n_refs, sizeof *out->ref);
    int rc = out->hyp && out->ref ? 0 : -1;
    for (int64_t i = 0; !rc && i < out->n; i++) rc = count_text(&t, c->hyps[i], c->tokenize, &out->hyp[i]);
    for (int64_t j = 0; !rc && j < out->n_refs; j++)
        rc = count_text(&t, c->refs[j], c->tokenize, &out->ref[j]);
    interner_free(&t);
    if (rc) {
        counted_free(out);
        return vlm_set_error("caption metrics: out of memory");
    }
    return 0;
}

/* ---- BLEU ------------------------------------------------------------------------------ */

/* Max count of each n-gram over image i's references (sorted, unique) and
 * the closest reference length to testlen (ties to the shorter). */
static ngram_count *ref_maxcounts(const counted *c, int64_t i, int64_t testlen, int64_t *n_out,
                                  int64_t *reflen) {
    int64_t total = 0, best = -1;
    for (int64_t j = c->ref_start[i]; j < c->ref_start[i + 1]; j++) {
        total += c->ref[j].n;
        int64_t l = c->ref[j].words, d = llabs(l - testlen), bd = llabs(best - testlen);
        if (best < 0 || d < bd || (d == bd && l < best)) best = l;
    }
    *reflen = best;
    ngram_count *v = malloc((size_t)(total + 1) * sizeof *v);
    if (!v) return NULL;
    int64_t m = 0;
    for (int64_t j = c->ref_start[i]; j < c->ref_start[i + 1]; j++)
        for (int64_t k = 0; k < c->ref[j].n; k++) v[m++] = c->ref[j].v[k];
    qsort(v, (size_t)m, sizeof *v, ngram_count_cmp);
    int64_t u = 0;
    for (int64_t k = 0; k < m; k++) {
        if (u && !ngram_cmp(&v[u - 1].g, &v[k].g)) {
            if (v[k].count > v[u - 1].count) v[u - 1].count = v[k].count;
        } else {
            v[u++] = v[k];
        }
    }
    *n_out = u;
    return v;
}

/* Clipped matches of hypothesis h against max counts (both sorted). */
static void clipped_matches(const sentence *h, const ngram_count *mc, int64_t n_mc,
                            int64_t correct[MAX_N]) {
    int64_t a = 0, b = 0;
    while (a < h->n && b < n_mc) {
        int d = ngram_cmp(&h->v[a].g, &mc[b].g);
        if (d < 0) {
            a++;
        } else if (d > 0) {
            b++;
        } else {
            int32_t m = h->v[a].count < mc[b].count ? h->v[a].count : mc[b].count;
            correct[ngram_len(&h->v[a].g) - 1] += m;
            a++, b++;
        }
    }
}

int vlm_bleu(const vlm_caption_corpus *corpus, double bleu[4]) {
    counted c;
    if (count_corpus(corpus, &c)) return -1;
    int64_t guess[MAX_N] = {0}, correct[MAX_N] = {0}, testlen = 0, reflen = 0;
    for (int64_t i = 0; i < c.n; i++) {
        const sentence *h = &c.hyp[i];
        int64_t n_mc, rl;
        ngram_count *mc = ref_maxcounts(&c, i, h->words, &n_mc, &rl);
        if (!mc) {
            counted_free(&c);
            return vlm_set_error("bleu: out of memory");
        }
        clipped_matches(h, mc, n_mc, correct);
        free(mc);
        for (int k = 0; k < MAX_N; k++) guess[k] += h->words - k > 0 ? h->words - k : 0;
        testlen += h->words, reflen += rl;
    }
    counted_free(&c);
    /* pycocoevalcap's arithmetic, operation for operation */
    const double small = 1e-9, tiny = 1e-15;
    double b = 1.0;
    for (int k = 0; k < MAX_N; k++) {
        b *= ((double)correct[k] + tiny) / ((double)guess[k] + small);
        bleu[k] = pow(b, 1.0 / (k + 1));
    }
    double ratio = ((double)testlen + tiny) / ((double)reflen + small);
    if (ratio < 1)
        for (int k = 0; k < MAX_N; k++) bleu[k] *= exp(1 - 1 / ratio);
    return 0;
}

/* ---- CIDEr-D ------------------------------------------------------------------------------ */

/* Document frequency of every n-gram: in how many images' reference sets it
 * occurs. Sorted by n-gram (count = df). */
static ngram_count *doc_freq(const counted *c, int64_t *n_out) {
    int64_t total = 0;
    for (int64_t j = 0; j < c->n_refs; j++) total += c->ref[j].n;
    ngram_count *all = malloc((size_t)(total + 1) * sizeof *all);
    if (!all) return NULL;
    int64_t m = 0;
    for (int64_t i = 0; i < c->n; i++) {
        int64_t first = m;
        for (int64_t j = c->ref_start[i]; j < c->ref_start[i + 1]; j++)
            for (int64_t k = 0; k < c->ref[j].n; k++) all[m++] = c->ref[j].v[k];
        /* this image's set: each n-gram once */
        qsort(all + first, (size_t)(m - first), sizeof *all, ngram_count_cmp);
        int64_t u = first;
        for (int64_t k = first; k < m; k++)
            if (u == first || ngram_cmp(&all[u - 1].g, &all[k].g)) all[u++] = all[k];
        m = u;
    }
    qsort(all, (size_t)m, sizeof *all, ngram_count_cmp);
    int64_t u = 0;
    for (int64_t k = 0; k < m; k++) {
        if (u && !ngram_cmp(&all[u - 1].g, &all[k].g))
            all[u - 1].count++;
        else
            all[u] = all[k], all[u++].count = 1;
    }
    *n_out = u;
    return all;
}

static int32_t df_of(const ngram_count *df, int64_t n, const ngram *g) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        int d = ngram_cmp(&df[mid].g, g);
        if (!d) return df[mid].count;
        if (d < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* counts2vec: tf-idf weights (parallel to s->v), per-n norms, and the
 * "length" pycocoevalcap uses: the number of bigrams (its n == 1 branch). */
typedef struct {
    double *vec;
    double norm[MAX_N];
    int64_t length;
} tfidf;

static int counts2vec(const sentence *s, const ngram_count *df, int64_t n_df, double ref_len,
                      tfidf *t) {
    memset(t, 0, sizeof *t);
    t->vec = malloc((size_t)(s->n + 1) * sizeof *t->vec);
    if (!t->vec) return -1;
    for (int64_t i = 0; i < s->n; i++) {
        int32_t d = df_of(df, n_df, &s->v[i].g);
        int k = ngram_len(&s->v[i].g) - 1;
        t->vec[i] = (double)s->v[i].count * (ref_len - log(d > 1 ? (double)d : 1.0));
        t->norm[k] += pow(t->vec[i], 2);
        if (k == 1) t->length += s->v[i].count;
    }
    for (int k = 0; k < MAX_N; k++) t->norm[k] = sqrt(t->norm[k]);
    return 0;
}

/* sim(): clipped tf-idf dot product per n, cosine-normalised, times the
 * Gaussian length penalty (sigma 6); added into val. */
static void cider_sim(const sentence *h, const tfidf *th, const sentence *r, const tfidf *tr,
                      double val[MAX_N]) {
    double v[MAX_N] = {0};
    for (int64_t a = 0, b = 0; a < h->n && b < r->n;) {
        int d = ngram_cmp(&h->v[a].g, &r->v[b].g);
        if (d < 0) {
            a++; /* absent from the reference: its weight there is 0 */
        } else if (d > 0) {
            b++;
        } else {
            double vh = th->vec[a], vr = tr->vec[b];
            v[ngram_len(&h->v[a].g) - 1] += (vh < vr ? vh : vr) * vr;
            a++, b++;
        }
    }
    double delta = (double)(th->length - tr->length), sigma = 6.0;
    for (int k = 0; k < MAX_N; k++) {
        if (th->norm[k] != 0 && tr->norm[k] != 0) v[k] /= th->norm[k] * tr->norm[k];
        v[k] *= pow(M_E, -(delta * delta) / (2 * sigma * sigma));
        val[k] += v[k];
    }
}

/* Image i's score: mean over n of the summed sims, / #refs, * 10. */
static int cider_image(const counted *c, int64_t i, const ngram_count *df, int64_t n_df,
                       double ref_len, double *out) {
    tfidf th, tr;
    if (counts2vec(&c->hyp[i], df, n_df, ref_len, &th)) return -1;
    double val[MAX_N] = {0};
    for (int64_t j = c->ref_start[i]; j < c->ref_start[i + 1]; j++) {
        if (counts2vec(&c->ref[j], df, n_df, ref_len, &tr)) {
            free(th.vec);
            return -1;
        }
        cider_sim(&c->hyp[i], &th, &c->ref[j], &tr, val);
        free(tr.vec);
    }
    free(th.vec);
    double mean = (((val[0] + val[1]) + val[2]) + val[3]) / MAX_N;
    *out = mean / (double)(c->ref_start[i + 1] - c->ref_start[i]) * 10.0;
    return 0;
}

int vlm_cider_d(const vlm_caption_corpus *corpus, double *score, double *per_image) {
    counted c;
    if (count_corpus(corpus, &c)) return -1;
    int64_t n_df = 0;
    ngram_count *df = doc_freq(&c, &n_df);
    double ref_len = log((double)c.n), sum = 0;
    int rc = df ? 0 : -1;
    for (int64_t i = 0; !rc && i < c.n; i++) {
        double s = 0;
        rc = cider_image(&c, i, df, n_df, ref_len, &s);
        if (per_image) per_image[i] = s;
        sum += s;
    }
    free(df);
    counted_free(&c);
    if (rc) return vlm_set_error("cider-d: out of memory");
    *score = sum / (double)corpus->n;
    return 0;
}

/* ---- zero-shot and retrieval -------------------------------------------------------------- */

static double dot(const float *a, const float *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++) s += (double)a[i] * b[i];
    return s;
}

int vlm_class_vectors(const float *text_emb, int classes, int templates, int dim, float *out) {
    if (!text_emb || !out || classes < 1 || templates < 1 || dim < 1)
        return vlm_set_error("class vectors: need classes, templates and dim >= 1 (got %d, %d, %d)",
                             classes, templates, dim);
    double *acc = malloc((size_t)dim * sizeof *acc);
    if (!acc) return vlm_set_error("class vectors: out of memory");
    for (int c = 0; c < classes; c++) {
        memset(acc, 0, (size_t)dim * sizeof *acc);
        for (int t = 0; t < templates; t++) {
            const float *e = text_emb + ((size_t)c * templates + t) * dim;
            double n = sqrt(dot(e, e, dim));
            n = n > 1e-12 ? n : 1e-12;
            for (int i = 0; i < dim; i++) acc[i] += e[i] / n;
        }
        double n = 0;
        for (int i = 0; i < dim; i++) n += acc[i] * acc[i];
        n = sqrt(n) > 1e-12 ? sqrt(n) : 1e-12;
        for (int i = 0; i < dim; i++) out[(size_t)c * dim + i] = (float)(acc[i] / n);
    }
    free(acc);
    return 0;
}

/* Does (s, i) rank before (t, j)? Higher score first, then the lower index. */
static bool before(float s, int64_t i, float t, int64_t j) { return s > t || (s == t && i < j); }

int vlm_topk(const float *scores, int n, int k, int *idx) {
    if (!scores || !idx || k < 0 || k > n)
        return vlm_set_error("topk: k = %d must lie in [0, n = %d]", k, n);
    /* insertion into a sorted list of k: O(n k), and k is small in practice */
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m == k && (k == 0 || !before(scores[i], i, scores[idx[k - 1]], idx[k - 1]))) continue;
        int p = m < k ? m++ : k - 1;
        while (p > 0 && before(scores[i], i, scores[idx[p - 1]], idx[p - 1])) {
            idx[p] = idx[p - 1];
            p--;
        }
        idx[p] = i;
    }
    return 0;
}

/* Rank (0 = best) of item `pos` among n scored items. */
static int64_t rank_of(const float *s, int64_t n, int64_t pos) {
    int64_t r = 0;
    for (int64_t j = 0; j < n; j++) r += before(s[j], j, s[pos], pos);
    return r;
}

int vlm_zeroshot_accuracy(const float *img, int64_t n, const float *cls, int classes, int dim,
                          const int32_t *labels, double *top1, double *top5) {
    if (!img || !cls || !labels || n < 1 || classes < 1 || dim < 1)
        return vlm_set_error("zero-shot accuracy: need n, classes and dim >= 1");
    float *s = malloc((size_t)classes * sizeof *s);
    if (!s) return vlm_set_error("zero-shot accuracy: out of memory");
    int64_t hit1 = 0, hit5 = 0;
    for (int64_t i = 0; i < n; i++) {
        if (labels[i] < 0 || labels[i] >= classes) {
            free(s);
            return vlm_set_error("zero-shot accuracy: label %d of image %lld outside [0, %d)",
                                 labels[i], (long long)i, classes);
        }
        for (int c = 0; c < classes; c++)
            s[c] = (float)dot(img + (size_t)i * dim, cls + (size_t)c * dim, dim);
        int64_t r = rank_of(s, classes, labels[i]);
        hit1 += r < 1, hit5 += r < 5;
    }
    free(s);
    *top1 = (double)hit1 / (double)n, *top5 = (double)hit5 / (double)n;
    return 0;
}

/* Scores of `rows` queries (q) against all n keys into s [rows, n] (GEMM). */
static void score_block(const float *q, int64_t rows, const float *keys, int64_t n, int dim,
                        float *s) {
    vlm_sgemm(false, true, rows, n, dim, 1.0f, q, dim, keys, dim, 0.0f, s, n);
}

#define RECALL_BLOCK 256

/* text -> image: the rank of each text's own image. */
static void recall_t2i(const float *img, int64_t n_img, const float *txt, int64_t n_txt, int dim,
                       const int64_t *txt_image, float *s, const int *ks, double t2i[3]) {
    int64_t hits[3] = {0};
    for (int64_t t0 = 0; t0 < n_txt; t0 += RECALL_BLOCK) {
        int64_t rows = n_txt - t0 < RECALL_BLOCK ? n_txt - t0 : RECALL_BLOCK;
        score_block(txt + t0 * dim, rows, img, n_img, dim, s);
        for (int64_t r = 0; r < rows; r++) {
            int64_t rank = rank_of(s + r * n_img, n_img, txt_image[t0 + r]);
            for (int j = 0; j < 3; j++) hits[j] += rank < ks[j];
        }
    }
    for (int j = 0; j < 3; j++) t2i[j] = (double)hits[j] / (double)n_txt;
}

/* image -> text: the best rank among the image's texts, i.e. the rank of its
 * highest-scoring text. */
static void recall_i2t(const float *img, int64_t n_img, const float *txt, int64_t n_txt, int dim,
                       const int64_t *txt_image, float *s, const int *ks, double i2t[3]) {
    int64_t hits[3] = {0};
    for (int64_t i0 = 0; i0 < n_img; i0 += RECALL_BLOCK) {
        int64_t rows = n_img - i0 < RECALL_BLOCK ? n_img - i0 : RECALL_BLOCK;
        score_block(img + i0 * dim, rows, txt, n_txt, dim, s);
        for (int64_t r = 0; r < rows; r++) {
            const float *row = s + r * n_txt;
            int64_t best = -1;
            for (int64_t j = 0; j < n_txt; j++)
                if (txt_image[j] == i0 + r && (best < 0 || before(row[j], j, row[best], best)))
                    best = j;
            if (best < 0) continue; /* no text: a miss */
            int64_t rank = rank_of(row, n_txt, best);
            for (int j = 0; j < 3; j++) hits[j] += rank < ks[j];
        }
    }
    for (int j = 0; j < 3; j++) i2t[j] = (double)hits[j] / (double)n_img;
}

int vlm_retrieval_recall(const float *img, int64_t n_img, const float *txt, int64_t n_txt,
                         int dim, const int64_t *txt_image, double t2i[3], double i2t[3]) {
    if (!img || !txt || !txt_image || n_img < 1 || n_txt < 1 || dim < 1)
        return vlm_set_error("retrieval: need images, texts and dim >= 1 (got %lld, %lld, %d)",
                             (long long)n_img, (long long)n_txt, dim);
    for (int64_t j = 0; j < n_txt; j++)
        if (txt_image[j] < 0 || txt_image[j] >= n_img)
            return vlm_set_error("retrieval: text %lld belongs to image %lld, outside [0, %lld)",
                                 (long long)j, (long long)txt_image[j], (long long)n_img);
    int64_t wide = n_img > n_txt ? n_img : n_txt;
    float *s = malloc((size_t)(RECALL_BLOCK * wide) * sizeof *s);
    if (!s) return vlm_set_error("retrieval: out of memory for %lld scores", (long long)wide);
    const int ks[3] = VLM_RECALL_KS;
    recall_t2i(img, n_img, txt, n_txt, dim, txt_image, s, ks, t2i);
    recall_i2t(img, n_img, txt, n_txt, dim, txt_image, s, ks, i2t);
    free(s);
    return 0;
}
