/* test_parity.c - our models against PyTorch references that follow the
 * Hugging Face modules (scripts/gen_fixtures.py; fixtures in
 * tests/nn/fixtures/parity/). Each model is built from its fixture config,
 * loaded from its HF-named safetensors file (every parameter present except a
 * tied lm_head, nothing unexpected), and run forward and backward on the
 * fixture's inputs:
 *   SigLIP:    vision tokens (post_layernorm), pooled image embedding (MAP
 *              head), text tokens (final layernorm, key padding mask), pooled
 *              text embedding, L2-normalised embeddings, the sigmoid loss and
 *              its gradient w.r.t. every parameter;
 *   captioner: fusion output and pooled fusion embedding (padded text row),
 *              decoder logits (GQA, RoPE theta 1e5) with a prefix-LM and a
 *              causal mask, the same prefix-LM logits decoded incrementally
 *              through the KV cache, the decoder prefix (pixel shuffle 2),
 *              the captioner loss and its gradient w.r.t. every parameter.
 *
 * While nn/captioner.c is a stub (vlm_model_new fails with "not built yet")
 * the captioner part is skipped with a message; any other failure fails.
 * Each fixture file is also listed with `vlm inspect` when VLM_BINARY exists.
 *
 * Criteria, per tensor (ours in f32 against a float64 reference), with
 * err = max |ours - ref| and scale = max |ref| over the tensor:
 *   (A) err <= 1e-4 * max(1, scale)           (the bar)
 *   (B) err <= 1e-5 * scale + 1e-6            (ten times tighter, and relative
 *                                              to the tensor's own size)
 * B's absolute 1e-6 is for gradients that are zero in exact arithmetic: the
 * grads of attention k_proj biases (softmax ignores a per-query constant; the
 * f64 reference has ~1e-17, f32 round-off gives ~1e-7) and those of the
 * parameters the caption loss does not use (exactly 0 on both sides). The
 * measured worst cases are about 1.5e-6 of scale and 2e-7 absolute. */
#define _GNU_SOURCE
#include "nn.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOL_A 1e-4 /* (A): relative to max(1, max|ref|) */
#define TOL_B 1e-5 /* (B): relative to max|ref| ... */
#define ABS_B 1e-6 /* ... plus this */

static char fixture_dir[1024];

static const char *fixture(const char *name) {
    static char buf[4][1400];
    static int k;
    char *p = buf[k++ % 4];
    snprintf(p, sizeof buf[0], "%s/%s", fixture_dir, name);
    return p;
}

/* ---- comparing ----------------------------------------------------------------- */

typedef struct {
    double worst_a, worst_b; /* max over compared tensors of err / tolerance (A), (B) */
    char worst_a_name[300], worst_b_name[300];
    int n;
} summary;

/* Compares n floats with the reference tensor `name` of the io file (label:
 * what to call ours in messages, NULL = name). */
static void compare_as(summary *s, const vlm_st *io, const char *name, const char *label,
                       const float *ours, int64_t n) {
    if (!label) label = name;
    int i = vlm_st_find(io, name);
    CHECK(i >= 0, "reference %s missing from %s", name, vlm_st_path(io));
    if (i < 0) return;
    CHECK(vlm_st_numel(io, i) == n, "%s: %lld values, reference has %lld", label, (long long)n,
          (long long)vlm_st_numel(io, i));
    if (vlm_st_numel(io, i) != n) return;
    float *ref = malloc((size_t)n * sizeof *ref);
    CHECK(ref && vlm_st_read_f32(io, name, ref, n) == 0, "read %s: %s", name, vlm_last_error());
    if (!ref) return;
    double err = 0, scale = 0;
    int64_t at = 0;
    bool finite = true;
    for (int64_t j = 0; j < n; j++) {
        double d = fabs((double)ours[j] - (double)ref[j]);
        finite &= isfinite(ours[j]) != 0;
        if (d > err || d != d) err = d, at = j;
        if (fabs(ref[j]) > scale) scale = fabs(ref[j]);
    }
    double tol_a = TOL_A * fmax(1.0, scale), tol_b = TOL_B * scale + ABS_B;
    CHECK(finite && err <= tol_a,
          "%s: max |ours - ref| = %.3g at [%lld] (ours %.9g, ref %.9g), max |ref| %.3g: over "
          "1e-4 * max(1, max |ref|)",
          label, err, (long long)at, ours[at], ref[at], scale);
    CHECK(finite && err <= tol_b,
          "%s: max |ours - ref| = %.3g at [%lld] (ours %.9g, ref %.9g), max |ref| %.3g: over "
          "1e-5 * max |ref| + 1e-6",
          label, err, (long long)at, ours[at], ref[at], scale);
    printf("  %-58s max|ref| %9.3e  max abs err %9.3e  err/max(1,max|ref|) %9.3e  "
           "err/max|ref| %9.3e\n",
           label, scale, err, err / fmax(1.0, scale), scale > 0 ? err / scale : 0.0);
    if (err / tol_a >= s->worst_a)
        s->worst_a = err / tol_a, snprintf(s->worst_a_name, 300, "%s", label);
    if (err / tol_b >= s->worst_b)
        s->worst_b = err / tol_b, snprintf(s->worst_b_name, 300, "%s", label);
    s->n++;
    free(ref);
}

static void compare(summary *s, const vlm_st *io, const char *name, const float *ours, int64_t n) {
    compare_as(s, io, name, NULL, ours, n);
}

static void compare_t(summary *s, const vlm_st *io, const char *name, const vlm_tensor *t) {
    CHECK(t != NULL, "%s: %s", name, vlm_last_error());
    if (!t) return;
    int i = vlm_st_find(io, name);
    if (i >= 0) {
        bool same = vlm_st_ndim(io, i) == t->ndim;
        for (int d = 0; same && d < t->ndim; d++)
            same = vlm_st_shape(io, i)[d] == t->shape[d];
        char buf[64];
        CHECK(same, "%s: our shape %s differs from the reference's", name,
              vlm_shape_str(t, buf, sizeof buf));
    }
    compare(s, io, name, vlm_f32(t), t->numel);
}

/* Every parameter's grad against "grad.<name>", and no reference grad left over. */
static void compare_grads(summary *s, const vlm_st *io, const vlm_params *p) {
    int n_ref = 0;
    for (int i = 0; i < vlm_st_count(io); i++)
        n_ref += strncmp(vlm_st_name(io, i), "grad.", 5) == 0;
    CHECK(n_ref == vlm_params_count(p), "%d reference grads for %d parameters", n_ref,
          vlm_params_count(p));
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *t = vlm_params_at(p, i);
        char name[300];
        snprintf(name, sizeof name, "grad.%s", t->name);
        compare(s, io, name, t->grad, t->numel);
    }
}

static void print_summary(const char *what, const summary *s) {
    printf("%s: %d tensors compared; worst use of tolerance (A) %.3f (%s), (B) %.3f (%s)\n", what,
           s->n, s->worst_a, s->worst_a_name, s->worst_b, s->worst_b_name);
}

/* ---- fixtures ------------------------------------------------------------------ */

/* A tensor of the io file as an input (F32, I32 or U8, the file's shape). */
static vlm_tensor *input(vlm_ctx *ctx, const vlm_st *io, const char *name) {
    int i = vlm_st_find(io, name);
    CHECK(i >= 0, "input %s missing from %s", name, vlm_st_path(io));
    if (i < 0) return NULL;
    const char *dt = vlm_st_dtype(io, i);
    vlm_dtype d = !strcmp(dt, "F32") ? VLM_F32 : !strcmp(dt, "I32") ? VLM_I32 : VLM_U8;
    CHECK(!strcmp(dt, "F32") || !strcmp(dt, "I32") || !strcmp(dt, "U8"), "%s: dtype %s", name, dt);
    size_t nb = 0;
    const void *data = vlm_st_data(io, i, &nb);
    CHECK(data && nb == (size_t)vlm_st_numel(io, i) * vlm_dtype_size(d), "%s: %zu bytes", name, nb);
    /* vlm_tensor_from copies, so the file's (possibly unaligned) bytes are fine */
    vlm_tensor *t = vlm_tensor_from(ctx, d, vlm_st_ndim(io, i), vlm_st_shape(io, i), data);
    CHECK(t != NULL, "%s: %s", name, vlm_last_error());
    return t;
}

typedef enum { BUILT, SKIPPED, FAILED } build_rc;

/* Model from <name>.json ({"model": {...}}) with the weights of <name>.safetensors. */
static build_rc build(const char *name, vlm_model **out) {
    char f[256];
    *out = NULL;
    snprintf(f, sizeof f, "%s.json", name);
    cJSON *root = vlm_json_load(fixture(f));
    CHECK(root != NULL, "%s", vlm_last_error());
    if (!root) return FAILED;
    vlm_model_cfg cfg;
    vlm_model_cfg_defaults(&cfg);
    int rc = vlm_cfg_bind(cJSON_GetObjectItemCaseSensitive(root, "model"), vlm_model_cfg_fields,
                          &cfg, "model");
    cJSON_Delete(root);
    CHECK(rc == 0, "%s config: %s", name, vlm_last_error());
    if (rc) return FAILED;
    vlm_model *m = vlm_model_new(&cfg, 1);
    if (!m && strstr(vlm_last_error(), "not built yet")) {
        printf("SKIP %s parity: vlm_model_new says \"%s\"\n", name, vlm_last_error());
        return SKIPPED;
    }
    CHECK(m != NULL, "%s model: %s", name, vlm_last_error());
    if (!m) return FAILED;
    /* poison every value first, so anything the file does not set shows up as NaN */
    float *v = vlm_params_values(m->params);
    for (int64_t i = 0; i < vlm_params_numel(m->params); i++)
        v[i] = NAN;
    const char *const optional[] = {"decoder.lm_head.weight", NULL};
    vlm_st_load_opts opts = {.optional = optional};
    vlm_st_load_report rep;
    snprintf(f, sizeof f, "%s.safetensors", name);
    rc = vlm_st_load_params(m->params, fixture(f), "", &opts, &rep);
    CHECK(rc == 0, "load %s: %s (%d missing, %d unexpected)", f, vlm_last_error(), rep.n_missing,
          rep.n_unexpected);
    for (int i = 0; i < rep.n_missing; i++)
        fprintf(stderr, "  missing: %s\n", rep.missing[i]);
    for (int i = 0; i < rep.n_unexpected; i++)
        fprintf(stderr, "  unexpected: %s\n", rep.unexpected[i]);
    CHECK(rep.n_loaded == vlm_params_count(m->params) &&
              rep.numel_loaded == vlm_params_numel(m->params),
          "%s: loaded %d tensors / %lld values of %d / %lld", f, rep.n_loaded,
          (long long)rep.numel_loaded, vlm_params_count(m->params),
          (long long)vlm_params_numel(m->params));
    printf("%s: %d parameters, %lld values loaded from %s\n", name, rep.n_loaded,
           (long long)rep.numel_loaded, f);
    vlm_st_load_report_free(&rep);
    if (rc) {
        vlm_model_free(m);
        return FAILED;
    }
    *out = m;
    return BUILT;
}

static vlm_st *open_io(const char *name) {
    vlm_st *io = vlm_st_open(fixture(name));
    CHECK(io != NULL, "%s", vlm_last_error());
    return io;
}

/* ---- SigLIP ----------------------------------------------------------------------- */

static void test_siglip(void) {
    vlm_model *m;
    if (build("siglip", &m) != BUILT) return;
    vlm_st *io = open_io("siglip_io.safetensors");
    vlm_ctx *ctx = vlm_ctx_new(0);
    if (!io || !ctx) goto done;
    summary s = {0};
    printf("siglip forward:\n");
    vlm_tensor *images = input(ctx, io, "images"), *ids = input(ctx, io, "ids");
    vlm_tensor *key_mask = input(ctx, io, "key_mask");
    bool prev = vlm_set_grad_enabled(ctx, false);
    vlm_tensor *pooled = NULL;
    vlm_tensor *tokens = vlm_vision_forward(ctx, &m->vision, images, false, &pooled);
    compare_t(&s, io, "vision_tokens", tokens);
    compare_t(&s, io, "vision_pooled", pooled);
    pooled = NULL;
    tokens = vlm_text_forward(ctx, &m->text, ids, key_mask, false, &pooled);
    compare_t(&s, io, "text_tokens", tokens);
    compare_t(&s, io, "text_pooled", pooled);
    vlm_set_grad_enabled(ctx, prev);

    vlm_params_zero_grad(m->params);
    vlm_tensor *ie = NULL, *te = NULL;
    vlm_tensor *loss = vlm_siglip_forward(ctx, m, images, ids, key_mask, NULL, false, &ie, &te);
    compare_t(&s, io, "img_emb", ie);
    compare_t(&s, io, "txt_emb", te);
    compare_t(&s, io, "loss", loss);
    CHECK(loss && vlm_backward(ctx, loss) == 0, "siglip backward: %s", vlm_last_error());
    printf("siglip gradients of the sigmoid loss:\n");
    if (loss) compare_grads(&s, io, m->params);
    print_summary("siglip", &s);
done:
    vlm_ctx_free(ctx);
    vlm_st_close(io);
    vlm_model_free(m);
}

/* ---- captioner ----------------------------------------------------------------------- */

/* The prefix-LM logits again, decoded through the KV cache: the prefix in one
 * call (PREFIX mask), then one position per call (causal against the cache). */
static void check_kv_cache(vlm_ctx *ctx, summary *s, const vlm_st *io, const vlm_decoder *d,
                           vlm_tensor *embeds, int64_t prefix_len) {
    int64_t B = embeds->shape[0], T = embeds->shape[1], V = d->cfg.vocab;
    vlm_kv_cache *cache = vlm_kv_cache_new(&d->cfg, (int)B, (int)T);
    CHECK(cache != NULL, "kv cache: %s", vlm_last_error());
    float *all = calloc((size_t)(B * T * V), sizeof *all);
    if (!cache || !all) goto done;
    for (int64_t t = 0; t < T;) {
        int64_t n = t == 0 ? prefix_len : 1;
        vlm_attn_opts mask = {.kind = t == 0 ? VLM_MASK_PREFIX : VLM_MASK_CAUSAL,
                              .prefix_len = prefix_len};
        vlm_tensor *lg =
            vlm_decoder_forward(ctx, d, vlm_slice(ctx, embeds, 1, t, n), &mask, cache, false);
        CHECK(lg && lg->shape[1] == n && vlm_kv_cache_len(cache) == t + n,
              "kv cache step at %lld: %s", (long long)t, vlm_last_error());
        if (!lg) goto done;
        for (int64_t b = 0; b < B; b++)
            memcpy(all + (b * T + t) * V, vlm_f32(lg) + b * n * V, (size_t)(n * V) * sizeof *all);
        t += n;
    }
    compare_as(s, io, "decoder.logits_prefix", "decoder.logits_prefix (KV cache)", all, B * T * V);
done:
    free(all);
    vlm_kv_cache_free(cache);
}

static void test_captioner(void) {
    vlm_model *m;
    if (build("captioner", &m) != BUILT) return;
    vlm_st *io = open_io("captioner_io.safetensors");
    vlm_ctx *ctx = vlm_ctx_new(0);
    const vlm_captioner *cap = m->captioner;
    CHECK(cap != NULL, "captioner parts missing");
    if (!io || !ctx || !cap) goto done;
    summary s = {0};
    bool prev = vlm_set_grad_enabled(ctx, false);

    printf("fusion block:\n");
    vlm_tensor *pooled = NULL;
    vlm_tensor *fused = vlm_fusion_forward(ctx, &cap->fusion, input(ctx, io, "fusion.text"),
                                           input(ctx, io, "fusion.image"),
                                           input(ctx, io, "fusion.text_mask"), &pooled);
    compare_t(&s, io, "fusion.out", fused);
    compare_t(&s, io, "fusion.pooled", pooled);

    printf("decoder (GQA, RoPE):\n");
    vlm_tensor *embeds = input(ctx, io, "decoder.embeds"),
               *pl = input(ctx, io, "decoder.prefix_len");
    if (!embeds || !pl) goto done;
    int64_t prefix_len = vlm_i32(pl)[0];
    vlm_attn_opts prefix = {.kind = VLM_MASK_PREFIX, .prefix_len = prefix_len};
    vlm_attn_opts causal = {.kind = VLM_MASK_CAUSAL};
    compare_t(&s, io, "decoder.logits_prefix",
              vlm_decoder_forward(ctx, &cap->decoder, embeds, &prefix, NULL, false));
    compare_t(&s, io, "decoder.logits_causal",
              vlm_decoder_forward(ctx, &cap->decoder, embeds, &causal, NULL, false));
    printf("decoder through the KV cache:\n");
    check_kv_cache(ctx, &s, io, &cap->decoder, embeds, prefix_len);

    printf("captioner:\n");
    vlm_tensor *images = input(ctx, io, "images"), *prompt = input(ctx, io, "prompt_ids");
    vlm_tensor *pmask = input(ctx, io, "prompt_mask");
    compare_t(&s, io, "prefix", vlm_captioner_prefix(ctx, m, images, prompt, pmask, false));
    vlm_set_grad_enabled(ctx, prev);

    vlm_params_zero_grad(m->params);
    vlm_tensor *loss =
        vlm_captioner_loss(ctx, m, images, prompt, pmask, input(ctx, io, "caption_in"),
                           input(ctx, io, "targets"), false);
    compare_t(&s, io, "loss", loss);
    CHECK(loss && vlm_backward(ctx, loss) == 0, "captioner backward: %s", vlm_last_error());
    printf("captioner gradients of the caption loss:\n");
    if (loss) compare_grads(&s, io, m->params);
    print_summary("captioner", &s);
done:
    vlm_ctx_free(ctx);
    vlm_st_close(io);
    vlm_model_free(m);
}

/* ---- the files are valid for `vlm inspect` -------------------------------------------- */

static void test_inspect(void) {
    static const char *const files[] = {"siglip.safetensors", "siglip_io.safetensors",
                                        "captioner.safetensors", "captioner_io.safetensors"};
    const char *bin = getenv("VLM_BINARY");
    bool have_bin = bin && access(bin, X_OK) == 0;
    if (!have_bin)
        printf("SKIP vlm inspect: %s (the files are still checked with vlm_st_open)\n",
               bin ? "VLM_BINARY is not built" : "VLM_BINARY not set");
    for (size_t k = 0; k < sizeof files / sizeof *files; k++) {
        const char *path = fixture(files[k]);
        vlm_st *st = vlm_st_open(path); /* every rule of the format */
        CHECK(st && vlm_st_meta(st, "format") && !strcmp(vlm_st_meta(st, "format"), "pt"), "%s: %s",
              files[k], st ? "format is not pt" : vlm_last_error());
        int count = st ? vlm_st_count(st) : -1;
        vlm_st_close(st);
        if (!have_bin) continue;
        char cmd[2600];
        snprintf(cmd, sizeof cmd, "\"%s\" inspect \"%s\" 2>&1", bin, path);
        FILE *p = popen(cmd, "r");
        CHECK(p != NULL, "popen %s", cmd);
        if (!p) continue;
        static char out[1 << 16];
        size_t n = fread(out, 1, sizeof out - 1, p);
        out[n] = 0;
        int status = pclose(p);
        char total[64];
        snprintf(total, sizeof total, "total: %d tensors", count);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0 && strstr(out, "format: pt") &&
                  strstr(out, total),
              "vlm inspect %s: status %d, output:\n%s", files[k], status, out);
        printf("vlm inspect %s: ok (%d tensors)\n", files[k], count);
    }
}

int main(void) {
    const char *src = getenv("VLM_SOURCE_DIR");
    CHECK(src != NULL, "VLM_SOURCE_DIR not set (run through ctest)");
    if (!src) return TEST_DONE();
    snprintf(fixture_dir, sizeof fixture_dir, "%s/tests/nn/fixtures/parity", src);
    test_siglip();
    test_captioner();
    test_inspect();
    return TEST_DONE();
}
