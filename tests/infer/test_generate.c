/* test_generate.c - caption generation on a tiny random captioner: cached
 * greedy decoding equals re-running the full forward every step (greedy and
 * sampled), EOS stops a sequence (which then pads) without changing the
 * others, max_tokens is respected, sampling is reproducible for a seed and
 * differs for another, top-k 1 and a tiny top-p equal greedy, top-k / top-p
 * only ever draw from the allowed set, a sequence decodes the same alone as
 * in a batch, the arena is left as found, and bad options are errors. */
#include "fixtures/rundir.h"

enum { B = 3, TP = 8, M = 20, V = 64 };

typedef struct {
    vlm_model *m;
    const vlm_decoder *d;
    vlm_ctx *ctx;
    vlm_tensor *prefix, *pmask; /* [B, P, D], [B, P] */
    float *pixels;
    int32_t ids[B * TP];
    uint8_t mask[B * TP];
} setup;

static void build(setup *s) {
    vlm_model_cfg cfg = tiny_cfg("captioner", V);
    s->m = random_model(&cfg, 11, 0.3f);
    s->d = &((const vlm_captioner *)s->m->captioner)->decoder;
    s->ctx = vlm_ctx_new(0);
    int64_t px = 3 * 16 * 16;
    s->pixels = malloc((size_t)(B * px) * sizeof *s->pixels);
    uint64_t st = 5;
    for (int64_t i = 0; i < B * px; i++) {
        st = st * 6364136223846793005ULL + 1442695040888963407ULL;
        s->pixels[i] = (float)((st >> 40) * (2.0 / 16777216.0) - 1.0);
    }
    const int len[B] = {TP, 5, 2}; /* rows 1 and 2 have prompt padding */
    for (int b = 0; b < B; b++)
        for (int t = 0; t < TP; t++) {
            s->ids[b * TP + t] = t < len[b] ? 3 + (b * 7 + t * 5) % (V - 3) : 0;
            s->mask[b * TP + t] = t < len[b];
        }
    bool prev = vlm_set_grad_enabled(s->ctx, false);
    vlm_tensor *img = vlm_tensor_from(s->ctx, VLM_F32, 4, (int64_t[]){B, 3, 16, 16}, s->pixels);
    vlm_tensor *ids = vlm_tensor_from(s->ctx, VLM_I32, 2, (int64_t[]){B, TP}, s->ids);
    vlm_tensor *mk = vlm_tensor_from(s->ctx, VLM_U8, 2, (int64_t[]){B, TP}, s->mask);
    s->prefix = vlm_captioner_prefix(s->ctx, s->m, img, ids, mk, false);
    s->pmask = vlm_captioner_key_mask(s->ctx, s->m, mk, 0);
    vlm_set_grad_enabled(s->ctx, prev);
    if (!s->prefix || !s->pmask) {
        fprintf(stderr, "prefix: %s\n", vlm_last_error());
        exit(1);
    }
}

static vlm_gen_opts greedy(int max_tokens) {
    vlm_gen_opts o = vlm_gen_opts_default();
    o.max_tokens = max_tokens;
    o.bos_id = 1, o.eos_id = -1, o.pad_id = 0;
    return o;
}

static int gen(setup *s, const vlm_gen_opts *o, int32_t *tok, int *len) {
    int rc = vlm_generate(s->ctx, s->d, s->prefix, s->pmask, o, tok, len, NULL);
    CHECK(rc == 0, "generate: %s", vlm_last_error());
    return rc;
}

static void test_cache_equals_full_forward(setup *s) {
    int32_t a[B * M], b[B * M];
    int la[B], lb[B];
    vlm_gen_opts o = greedy(M);
    size_t used = vlm_arena_used(s->ctx);
    gen(s, &o, a, la);
    CHECK(vlm_arena_used(s->ctx) == used, "arena %zu -> %zu", used, vlm_arena_used(s->ctx));
    o.no_cache = true;
    gen(s, &o, b, lb);
    CHECK(!memcmp(a, b, sizeof a), "cached greedy differs from the full forward");
    for (int i = 0; i < B; i++) CHECK(la[i] == M && lb[i] == M, "no EOS: length %d", la[i]);
    bool varied = false; /* a degenerate model repeating one token would prove little */
    for (int i = 1; i < B * M; i++) varied |= a[i] != a[0];
    CHECK(varied, "greedy output is one repeated token");
    /* sampling consumes the same draws on both paths */
    o = greedy(M);
    o.sample = true, o.temperature = 1.3f, o.top_k = 10, o.top_p = 0.9f, o.seed = 99;
    gen(s, &o, a, la);
    o.no_cache = true;
    gen(s, &o, b, lb);
    CHECK(!memcmp(a, b, sizeof a), "cached sampling differs from the full forward");
}

/* EOS = a token that sequence 0 produces at step 3: each sequence must be
 * the no-EOS output up to its first EOS, then padding. */
static void test_eos(setup *s) {
    int32_t ref[B * M], tok[B * M];
    int len[B];
    vlm_gen_opts o = greedy(M);
    gen(s, &o, ref, len);
    o.eos_id = ref[3], o.pad_id = V - 1;
    vlm_gen_stats st = {0};
    CHECK(vlm_generate(s->ctx, s->d, s->prefix, s->pmask, &o, tok, len, &st) == 0, "%s", vlm_last_error());
    int64_t produced = 0;
    for (int b = 0; b < B; b++) {
        int first = M;
        for (int t = 0; t < M && first == M; t++)
            if (ref[b * M + t] == o.eos_id) first = t;
        CHECK(len[b] == first, "seq %d: length %d, first EOS at %d", b, len[b], first);
        for (int t = 0; t < M; t++) {
            int32_t want = t <= first ? ref[b * M + t] : o.pad_id;
            CHECK(tok[b * M + t] == want, "seq %d step %d: %d, expected %d", b, t, tok[b * M + t], want);
        }
        produced += first < M ? first + 1 : M;
    }
    CHECK(len[0] <= 3, "sequence 0 should stop by step 3 (length %d)", len[0]);
    CHECK(st.tokens == produced, "stats: %lld tokens, expected %lld", (long long)st.tokens, (long long)produced);
    /* max_tokens is respected */
    o = greedy(4);
    gen(s, &o, tok, len);
    for (int b = 0; b < B; b++) CHECK(len[b] == 4 && !memcmp(tok + b * 4, ref + b * M, 16), "max 4");
}

static void test_sampling(setup *s) {
    int32_t g[B * M], a[B * M], b[B * M];
    vlm_gen_opts o = greedy(M);
    gen(s, &o, g, NULL);
    o.sample = true, o.temperature = 1.5f, o.seed = 1;
    gen(s, &o, a, NULL);
    gen(s, &o, b, NULL);
    CHECK(!memcmp(a, b, sizeof a), "same seed, different samples");
    o.seed = 2;
    gen(s, &o, b, NULL);
    CHECK(memcmp(a, b, sizeof a), "seeds 1 and 2 gave the same samples");
    CHECK(memcmp(a, g, sizeof a), "temperature 1.5 sampling equals greedy");
    o.top_k = 1;
    gen(s, &o, a, NULL);
    CHECK(!memcmp(a, g, sizeof a), "top-k 1 differs from greedy");
    o.top_k = 0, o.top_p = 1e-6f;
    gen(s, &o, a, NULL);
    CHECK(!memcmp(a, g, sizeof a), "top-p 1e-6 differs from greedy");
}

/* The first step's logits of sequence 0, by a plain full forward. */
static void first_logits(setup *s, float *out) {
    vlm_arena_pos mark = vlm_arena_mark(s->ctx);
    bool prev = vlm_set_grad_enabled(s->ctx, false);
    int32_t bos[B] = {1, 1, 1};
    int64_t P = s->prefix->shape[1];
    vlm_tensor *e = vlm_decoder_embed(s->ctx, s->d, vlm_tensor_from(s->ctx, VLM_I32, 2, (int64_t[]){B, 1}, bos));
    vlm_tensor *x = vlm_concat(s->ctx, (vlm_tensor *[]){s->prefix, e}, 2, 1);
    vlm_tensor *km = vlm_tensor_new(s->ctx, VLM_U8, 2, (int64_t[]){B, P + 1});
    for (int b = 0; b < B; b++) {
        memcpy((uint8_t *)km->data + b * (P + 1), (uint8_t *)s->pmask->data + b * P, (size_t)P);
        ((uint8_t *)km->data)[b * (P + 1) + P] = 1;
    }
    vlm_attn_opts mask = {.kind = VLM_MASK_PREFIX, .prefix_len = P, .key_mask = km};
    vlm_tensor *l = vlm_decoder_forward(s->ctx, s->d, x, &mask, NULL, false);
    memcpy(out, vlm_f32(l) + P * V, V * sizeof *out); /* row b = 0, position P */
    vlm_set_grad_enabled(s->ctx, prev);
    vlm_arena_rewind(s->ctx, mark);
}

/* Over many seeds, first tokens only from the top 2 (top-k 2, or a top-p
 * whose nucleus is exactly 2 ids), and both of them seen. */
static void test_filters(setup *s) {
    float l[V];
    first_logits(s, l);
    int top[2];
    vlm_topk(l, V, 2, top);
    double z = 0, p0, p1;
    for (int i = 0; i < V; i++) z += exp(l[i] - l[top[0]]);
    p0 = 1 / z, p1 = exp(l[top[1]] - l[top[0]]) / z;
    for (int pass = 0; pass < 2; pass++) {
        vlm_gen_opts o = greedy(1);
        o.sample = true;
        if (pass == 0) o.top_k = 2;
        else o.top_p = (float)(p0 + p1 / 2);
        int seen[2] = {0, 0}, other = 0;
        for (int seed = 0; seed < 200; seed++) {
            int32_t t[B];
            o.seed = (uint64_t)seed;
            gen(s, &o, t, NULL);
            if (t[0] == top[0]) seen[0]++;
            else if (t[0] == top[1]) seen[1]++;
            else other++;
        }
        CHECK(other == 0 && seen[0] && seen[1], "%s: top-2 drawn %d and %d times, others %d",
              pass ? "top-p" : "top-k", seen[0], seen[1], other);
        /* the draw follows the renormalised probabilities: p0 / (p0 + p1) */
        double f = seen[0] / 200.0, want = p0 / (p0 + p1);
        CHECK(fabs(f - want) < 4 * sqrt(want * (1 - want) / 200) + 0.01, "frequency %g, expected %g", f, want);
    }
}

/* Sequence 1 alone decodes as it does inside the batch. */
static void test_batch_independence(setup *s) {
    int32_t all[B * M], one[M];
    vlm_gen_opts o = greedy(M);
    gen(s, &o, all, NULL);
    vlm_arena_pos mark = vlm_arena_mark(s->ctx);
    vlm_tensor *p = vlm_slice(s->ctx, s->prefix, 0, 1, 1), *k = vlm_slice(s->ctx, s->pmask, 0, 1, 1);
    CHECK(p && k && vlm_generate(s->ctx, s->d, p, k, &o, one, NULL, NULL) == 0, "%s", vlm_last_error());
    CHECK(!memcmp(one, all + M, sizeof one), "sequence 1 differs alone");
    vlm_arena_rewind(s->ctx, mark);
}

static void test_caption_generate(setup *s) {
    int32_t a[B * M], b[B * M];
    vlm_gen_opts o = greedy(M);
    gen(s, &o, a, NULL);
    size_t used = vlm_arena_used(s->ctx);
    CHECK(vlm_caption_generate(s->ctx, s->m, s->pixels, B, s->ids, s->mask, TP, &o, b, NULL, NULL) == 0,
          "%s", vlm_last_error());
    CHECK(!memcmp(a, b, sizeof a), "vlm_caption_generate differs from vlm_generate on its prefix");
    CHECK(vlm_arena_used(s->ctx) == used, "arena not rewound");
}

static void expect_error(setup *s, const vlm_gen_opts *o, const char *needle) {
    int32_t t[B * 64];
    int rc = vlm_generate(s->ctx, s->d, s->prefix, s->pmask, o, t, NULL, NULL);
    CHECK(rc < 0 && strstr(vlm_last_error(), needle), "expected an error with \"%s\", got rc %d: %s",
          needle, rc, vlm_last_error());
}

static void test_errors(setup *s) {
    vlm_gen_opts o = greedy(48 - 24 + 1); /* P = 16 image tokens + 8 prompt = 24 */
    expect_error(s, &o, "max_len");
    o = greedy(0);
    expect_error(s, &o, "max_tokens");
    o = greedy(4);
    o.sample = true, o.temperature = 0;
    expect_error(s, &o, "temperature");
    o.temperature = 1, o.top_p = 1.5f;
    expect_error(s, &o, "top_p");
    o.top_p = 1, o.top_k = -1;
    expect_error(s, &o, "top_k");
    o = greedy(4);
    o.bos_id = V;
    expect_error(s, &o, "bos_id");
    o = greedy(4);
    int32_t t[4];
    CHECK(vlm_generate(s->ctx, s->d, s->pmask, NULL, &o, t, NULL, NULL) < 0 &&
              strstr(vlm_last_error(), "prefix"), "%s", vlm_last_error());
    vlm_model_cfg cfg = tiny_cfg("siglip", V);
    vlm_model *sig = vlm_model_new(&cfg, 1);
    CHECK(vlm_caption_generate(s->ctx, sig, s->pixels, B, s->ids, s->mask, TP, &o, t, NULL, NULL) < 0 &&
              strstr(vlm_last_error(), "not a captioner"), "%s", vlm_last_error());
    vlm_model_free(sig);
}

int main(void) {
    vlm_set_num_threads(2);
    setup s;
    build(&s);
    test_cache_equals_full_forward(&s);
    test_eos(&s);
    test_sampling(&s);
    test_filters(&s);
    test_batch_independence(&s);
    test_caption_generate(&s);
    test_errors(&s);
    free(s.pixels);
    vlm_ctx_free(s.ctx);
    vlm_model_free(s.m);
    return TEST_DONE();
}
