/* test_metrics.c - BLEU-1..4 and CIDEr-D against values computed by an
 * independent Python transcription of pycocoevalcap's scorers
 * (fixtures/gen_metrics_fixture.py, 24 images with 1-5 references each), to
 * 1e-9; the tokenizer approximation; edge cases (empty hypothesis, no n-gram
 * match, exact match, one image, closest-length ties, bad corpora); class
 * vectors, zero-shot accuracy, top-k and retrieval recall against brute force. */
#include "infer.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#include "fixtures/metrics_fixture.h"

static vlm_caption_corpus fixture(bool tokenize) {
    return (vlm_caption_corpus){FIX_N, fix_hyps, fix_refs, fix_ref_start, tokenize};
}

static void test_fixture(void) {
    double b[4], c, per[FIX_N];
    vlm_caption_corpus corpus = fixture(true);
    CHECK(vlm_bleu(&corpus, b) == 0, "%s", vlm_last_error());
    for (int k = 0; k < 4; k++) CHECK_NEAR(b[k], fix_bleu[k], 1e-9);
    CHECK(vlm_cider_d(&corpus, &c, per) == 0, "%s", vlm_last_error());
    CHECK_NEAR(c, fix_cider, 1e-9);
    for (int i = 0; i < FIX_N; i++) CHECK_NEAR(per[i], fix_cider_per_image[i], 1e-9);
    /* the scorers alone, on text split at whitespace */
    corpus = fixture(false);
    CHECK(vlm_bleu(&corpus, b) == 0 && vlm_cider_d(&corpus, &c, NULL) == 0, "%s", vlm_last_error());
    for (int k = 0; k < 4; k++) CHECK_NEAR(b[k], fix_bleu_raw[k], 1e-9);
    CHECK_NEAR(c, fix_cider_raw, 1e-9);
}

static void test_tokenizer(void) {
    for (int i = 0; i < FIX_N; i++) {
        char *t = vlm_caption_tokenize(fix_hyps[i]);
        CHECK(t && !strcmp(t, fix_tok_hyps[i]), "hyp %d: \"%s\" -> \"%s\", expected \"%s\"", i,
              fix_hyps[i], t ? t : "(null)", fix_tok_hyps[i]);
        char *again = t ? vlm_caption_tokenize(t) : NULL;
        CHECK(again && !strcmp(again, t), "not idempotent on \"%s\"", t ? t : "");
        free(t), free(again);
    }
    static const char *const cases[][2] = {
        {"The dog's bone.", "the dog 's bone"},
        {"I can't, won't (really)!", "i ca n't wo n't really"},
        {"black-and-white photo -- e.g. 3.5 cm", "black-and-white photo e.g 3.5 cm"},
        {"  \t\n ", ""},
        {"\"quoted\" [x] {y} `z`; a:b", "quoted x y z a:b"},
        {"1,000 and a,b", "1,000 and a b"},
        {"dogs' 's n't", "dogs 's n't"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char *t = vlm_caption_tokenize(cases[i][0]);
        CHECK(t && !strcmp(t, cases[i][1]), "\"%s\" -> \"%s\", expected \"%s\"", cases[i][0],
              t ? t : "(null)", cases[i][1]);
        free(t);
    }
}

/* scores of a small hand-made corpus */
static void scores(int64_t n, const char *const *hyps, const char *const *refs,
                   const int64_t *start, double b[4], double *c, double *per) {
    vlm_caption_corpus corpus = {n, hyps, refs, start, true};
    CHECK(vlm_bleu(&corpus, b) == 0, "%s", vlm_last_error());
    CHECK(vlm_cider_d(&corpus, c, per) == 0, "%s", vlm_last_error());
}

static void test_edge_cases(void) {
    double b[4], c, per[3];
    /* exact matches with distinct n-grams: BLEU 1 (up to the 1e-9 smoothing), CIDEr-D 10
     * (every n = 1..4 present: a 3-word sentence would score 7.5, its 4-gram
     * similarity being 0) */
    const char *h1[] = {"a red circle on the left", "two blue squares side by side",
                        "one green triangle at the top"};
    const int64_t s1[] = {0, 1, 2, 3};
    scores(3, h1, h1, s1, b, &c, per);
    for (int k = 0; k < 4; k++) CHECK_NEAR(b[k], 1.0, 1e-8);
    CHECK_NEAR(c, 10.0, 1e-12);
    /* an empty hypothesis scores 0 (its image), and a corpus of only empty
     * hypotheses has BLEU 0 (brevity penalty exp(1 - 1/ratio) underflows) */
    const char *h2[] = {"", h1[1], h1[2]};
    scores(3, h2, h1, s1, b, &c, per);
    CHECK(per[0] == 0 && per[1] > 9.99 && per[2] > 9.99, "per image %g %g %g", per[0], per[1], per[2]);
    const char *h3[] = {"", "", ""};
    scores(3, h3, h1, s1, b, &c, per);
    for (int k = 0; k < 4; k++) CHECK(b[k] == 0, "BLEU-%d of empty hypotheses = %g", k + 1, b[k]);
    CHECK(c == 0, "CIDEr-D of empty hypotheses = %g", c);
    /* no n-gram in common: BLEU only the smoothing (~1e-15 / guesses), CIDEr-D 0 */
    const char *h4[] = {"zebra xylophone", "quantum flux", "purple monkey dishwasher"};
    scores(3, h4, h1, s1, b, &c, per);
    CHECK(b[0] < 1e-12 && b[3] < 1e-12, "BLEU %g %g", b[0], b[3]);
    CHECK(c == 0, "CIDEr-D %g", c);
    /* one image: every idf is log(1) = 0, so CIDEr-D is 0 as in pycocoevalcap */
    scores(1, h1, h1, s1, b, &c, per);
    CHECK(c == 0, "one-image CIDEr-D %g", c);
    /* closest reference length, tie to the shorter: hyp of 4 words, refs of
     * 5 and 3 -> reflen 3, no brevity penalty (5 would give exp(-0.25)) */
    const char *h5[] = {"a b c d"}, *r5[] = {"a b c d e", "a b c"};
    const int64_t s5[] = {0, 2};
    scores(1, h5, r5, s5, b, &c, per);
    CHECK_NEAR(b[3], 1.0, 1e-8);
    /* brevity penalty: hyp "a b" against "a b c d": exp(1 - 4/2) */
    const char *h6[] = {"a b"}, *r6[] = {"a b c d"};
    scores(1, h6, r6, s1, b, &c, per);
    CHECK_NEAR(b[0], exp(-1.0), 1e-8);
}

static void test_bad_corpus(void) {
    double b[4], c;
    const char *h[] = {"a", "b"}, *r[] = {"a"};
    const int64_t start[] = {0, 1, 1}; /* image 1 has no reference */
    vlm_caption_corpus corpus = {2, h, r, start, false};
    CHECK(vlm_bleu(&corpus, b) < 0 && strstr(vlm_last_error(), "image 1"), "%s", vlm_last_error());
    CHECK(vlm_cider_d(&corpus, &c, NULL) < 0 && strstr(vlm_last_error(), "no reference"), "%s",
          vlm_last_error());
    corpus.n = 0;
    CHECK(vlm_bleu(&corpus, b) < 0, "n = 0 accepted");
}

static void test_class_vectors(void) {
    /* 2 classes x 2 templates in 3-D, unnormalised on purpose */
    const float t[] = {2, 0, 0, 0, 3, 0, /* class 0: x, y -> (1, 1, 0)/sqrt2 */
                       0, 0, 5, 0, 0, 1}; /* class 1: z, z -> (0, 0, 1) */
    float out[6];
    CHECK(vlm_class_vectors(t, 2, 2, 3, out) == 0, "%s", vlm_last_error());
    CHECK_NEAR(out[0], sqrt(0.5), 1e-6);
    CHECK_NEAR(out[1], sqrt(0.5), 1e-6);
    CHECK_NEAR(out[2], 0, 1e-7);
    CHECK_NEAR(out[5], 1, 1e-7);
    /* images next to class 0, 1, 0 with labels 0, 1, 1: top-1 2/3, top-5 1 */
    const float img[] = {0.7f, 0.7f, 0.1f, 0, 0.1f, 1, 1, 0, 0};
    const int32_t labels[] = {0, 1, 1};
    double top1, top5;
    CHECK(vlm_zeroshot_accuracy(img, 3, out, 2, 3, labels, &top1, &top5) == 0, "%s", vlm_last_error());
    CHECK_NEAR(top1, 2.0 / 3, 1e-12);
    CHECK_NEAR(top5, 1.0, 1e-12);
    const int32_t bad[] = {0, 2, 0};
    CHECK(vlm_zeroshot_accuracy(img, 3, out, 2, 3, bad, &top1, &top5) < 0 &&
              strstr(vlm_last_error(), "label 2"), "%s", vlm_last_error());
}

static void test_topk(void) {
    const float s[] = {0.5f, 0.9f, 0.5f, -1, 0.9f, 0.1f};
    int idx[6];
    CHECK(vlm_topk(s, 6, 4, idx) == 0, "%s", vlm_last_error());
    /* ties go to the lower index */
    CHECK(idx[0] == 1 && idx[1] == 4 && idx[2] == 0 && idx[3] == 2, "%d %d %d %d", idx[0], idx[1],
          idx[2], idx[3]);
    CHECK(vlm_topk(s, 6, 6, idx) == 0 && idx[5] == 3, "last %d", idx[5]);
    CHECK(vlm_topk(s, 6, 7, idx) < 0, "k > n accepted");
}

static float frand(uint64_t *st) {
    *st = *st * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*st >> 40) * (2.0 / 16777216.0) - 1.0);
}

static void normalise(float *x, int n, int d) {
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)x[i * d + j] * x[i * d + j];
        for (int j = 0; j < d; j++) x[i * d + j] = (float)(x[i * d + j] / sqrt(s));
    }
}

/* rank of item p among n scores by sorting-free brute force: count better ones */
static int brute_rank(const float *q, const float *keys, int n, int d, int p) {
    double sp = 0;
    for (int j = 0; j < d; j++) sp += (double)q[j] * keys[p * d + j];
    int r = 0;
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < d; j++) s += (double)q[j] * keys[i * d + j];
        r += (float)s > (float)sp || ((float)s == (float)sp && i < p);
    }
    return r;
}

static void test_retrieval(void) {
    enum { NI = 40, NT = 70, D = 8 };
    static float img[NI * D], txt[NT * D];
    int64_t owner[NT];
    uint64_t st = 7;
    for (int i = 0; i < NI * D; i++) img[i] = frand(&st);
    for (int j = 0; j < NT; j++) {
        owner[j] = j < NI ? j : j % 13; /* every image has a text; some have two */
        for (int k = 0; k < D; k++) txt[j * D + k] = img[owner[j] * D + k] + 0.9f * frand(&st);
    }
    normalise(img, NI, D), normalise(txt, NT, D);
    double t2i[3], i2t[3];
    CHECK(vlm_retrieval_recall(img, NI, txt, NT, D, owner, t2i, i2t) == 0, "%s", vlm_last_error());
    const int ks[3] = VLM_RECALL_KS;
    for (int k = 0; k < 3; k++) {
        int hits = 0, ihits = 0;
        for (int j = 0; j < NT; j++) hits += brute_rank(txt + j * D, img, NI, D, (int)owner[j]) < ks[k];
        for (int i = 0; i < NI; i++) {
            int best = NT;
            for (int j = 0; j < NT; j++)
                if (owner[j] == i) {
                    int r = brute_rank(img + i * D, txt, NT, D, j);
                    best = r < best ? r : best;
                }
            ihits += best < ks[k];
        }
        CHECK_NEAR(t2i[k], (double)hits / NT, 1e-12);
        CHECK_NEAR(i2t[k], (double)ihits / NI, 1e-12);
        if (k) CHECK(t2i[k] >= t2i[k - 1] && i2t[k] >= i2t[k - 1], "R@K not monotone");
    }
    CHECK(t2i[0] > 0.2 && t2i[0] < 1, "t2i R@1 %g should be informative", t2i[0]);
    /* perfect match: texts are their images -> R@1 = 1 both ways */
    int64_t self[NI];
    for (int i = 0; i < NI; i++) self[i] = i;
    CHECK(vlm_retrieval_recall(img, NI, img, NI, D, self, t2i, i2t) == 0 && t2i[0] == 1 && i2t[0] == 1,
          "perfect match R@1 %g %g", t2i[0], i2t[0]);
    owner[3] = NI;
    CHECK(vlm_retrieval_recall(img, NI, txt, NT, D, owner, t2i, i2t) < 0 &&
              strstr(vlm_last_error(), "text 3"), "%s", vlm_last_error());
}

int main(void) {
    test_fixture();
    test_tokenizer();
    test_edge_cases();
    test_bad_corpus();
    test_class_vectors();
    test_topk();
    test_retrieval();
    return TEST_DONE();
}
