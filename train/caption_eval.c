/* caption_eval.c - evaluation of a captioner on a held-out dataset: greedy
 * captions for its first images (a sequential loader, no augmentation),
 * scored with BLEU-1..4 and CIDEr-D (metrics.c, text tokenized as
 * pycocoevalcap does) against every reference caption of each image, and a
 * few samples kept to show next to their references. */
#include "runlog.h" /* vlm_now */

#include <stdlib.h>
#include <string.h>

struct vlm_caption_evaluator {
    vlm_dataset *ds;
    const vlm_caption_io *io;
    vlm_eval_opts o;
    int max_tokens, samples;
    int64_t n_images;
    char **refs;        /* every caption, grouped by image */
    int64_t *ref_start; /* [n_images + 1]: image i's are refs[ref_start[i] .. ref_start[i + 1]) */
};

/* Reads every caption and groups them by image (a counting sort). */
static int read_refs(vlm_caption_evaluator *e) {
    int64_t m = 0, n = e->n_images;
    char **caps = vlm_dataset_read_captions(e->ds, &m);
    if (!caps) return -1;
    e->refs = malloc((size_t)(m ? m : 1) * sizeof *e->refs);
    e->ref_start = calloc((size_t)n + 2, sizeof *e->ref_start);
    int rc = e->refs && e->ref_start ? 0 : vlm_set_error("eval: out of memory");
    for (int64_t j = 0; !rc && j < m; j++) e->ref_start[vlm_dataset_caption_image(e->ds, j) + 2]++;
    for (int64_t i = 0; !rc && i < n; i++) e->ref_start[i + 2] += e->ref_start[i + 1];
    for (int64_t j = 0; !rc && j < m; j++) {
        int64_t i = vlm_dataset_caption_image(e->ds, j);
        e->refs[e->ref_start[i + 1]++] = caps[j];
        caps[j] = NULL; /* moved */
    }
    vlm_strings_free(caps, m);
    return rc; /* ref_start[i] .. ref_start[i + 1] now delimit image i's */
}

vlm_caption_evaluator *vlm_caption_evaluator_new(const char *dataset, const vlm_caption_io *io,
                                                 const vlm_eval_opts *opts, int max_tokens,
                                                 int samples) {
    vlm_caption_evaluator *e = calloc(1, sizeof *e);
    if (!e) {
        vlm_set_error("eval: out of memory");
        return NULL;
    }
    e->io = io;
    e->o = *opts;
    e->max_tokens = max_tokens;
    e->samples = samples < VLM_CAPTION_SAMPLES ? samples : VLM_CAPTION_SAMPLES;
    if (!(e->ds = vlm_dataset_open(dataset))) goto fail;
    e->n_images = vlm_dataset_num_images(e->ds);
    if (read_refs(e)) goto fail;
    return e;
fail:
    vlm_caption_evaluator_free(e);
    return NULL;
}

void vlm_caption_evaluator_free(vlm_caption_evaluator *e) {
    if (!e) return;
    if (e->refs) vlm_strings_free(e->refs, e->ref_start[e->n_images]);
    free(e->ref_start);
    vlm_dataset_close(e->ds);
    free(e);
}

/* Greedy captions of images [0, n) into hyps[n]. */
static int caption_images(vlm_caption_evaluator *e, vlm_ctx *ctx, const vlm_model *m, int64_t n,
                          char **hyps) {
    vlm_loader *l = vlm_eval_loader_new(e->ds, &e->o);
    if (!l) return -1;
    vlm_gen_opts g = vlm_caption_gen_opts(e->io, e->max_tokens);
    int rc = 0;
    for (int64_t done = 0; !rc && done < n;) {
        const vlm_batch *b = vlm_loader_next(l);
        if (!b) {
            rc = -1;
            break;
        }
        int use = (int)(n - done < b->n ? n - done : b->n);
        rc = vlm_caption_texts(ctx, m, e->io, b->pixels, use, &g, hyps + done);
        done += use;
        vlm_ctx_reset(ctx);
    }
    vlm_loader_free(l);
    return rc;
}

/* The images of [0, n) that have references, as a corpus (pointers into hyps
 * and e->refs; start is [n + 1]). */
static vlm_caption_corpus make_corpus(const vlm_caption_evaluator *e, char **hyps, int64_t n,
                                      const char **h, const char **refs, int64_t *start) {
    int64_t k = 0;
    start[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t a = e->ref_start[i], z = e->ref_start[i + 1];
        if (a == z) continue;
        for (int64_t j = a; j < z; j++) refs[start[k] + j - a] = e->refs[j];
        start[k + 1] = start[k] + z - a;
        h[k++] = hyps[i];
    }
    return (vlm_caption_corpus){k, h, refs, start, true};
}

/* Image i's references joined by " | ". */
static char *joined_refs(const vlm_caption_evaluator *e, int64_t i) {
    size_t len = 1;
    for (int64_t j = e->ref_start[i]; j < e->ref_start[i + 1]; j++) len += strlen(e->refs[j]) + 3;
    char *s = malloc(len);
    if (!s) return NULL;
    s[0] = 0;
    for (int64_t j = e->ref_start[i]; j < e->ref_start[i + 1]; j++) {
        if (j > e->ref_start[i]) strcat(s, " | ");
        strcat(s, e->refs[j]);
    }
    return s;
}

/* Keeps the first samples (images with references) for display. */
static int keep_samples(const vlm_caption_evaluator *e, char **hyps, int64_t n,
                        vlm_caption_metrics *r) {
    for (int64_t i = 0; i < n && r->n_samples < e->samples; i++) {
        if (e->ref_start[i] == e->ref_start[i + 1]) continue;
        int k = r->n_samples;
        r->sample_image[k] = i;
        r->sample_hyp[k] = strdup(hyps[i]);
        r->sample_refs[k] = joined_refs(e, i);
        r->n_samples++;
        if (!r->sample_hyp[k] || !r->sample_refs[k]) return vlm_set_error("eval: out of memory");
    }
    return 0;
}

static int score(const vlm_caption_evaluator *e, char **hyps, int64_t n, vlm_caption_metrics *r) {
    int64_t nr = e->ref_start[n];
    const char **h = malloc((size_t)(n ? n : 1) * sizeof *h);
    const char **refs = malloc((size_t)(nr ? nr : 1) * sizeof *refs);
    int64_t *start = malloc((size_t)(n + 1) * sizeof *start);
    int rc = h && refs && start ? 0 : vlm_set_error("eval: out of memory");
    vlm_caption_corpus c = {0};
    if (!rc) c = make_corpus(e, hyps, n, h, refs, start);
    if (!rc && c.n == 0)
        rc = vlm_set_error("eval: none of the first %lld images has a reference caption",
                           (long long)n);
    if (!rc) rc = vlm_bleu(&c, r->bleu);
    if (!rc) rc = vlm_cider_d(&c, &r->cider, NULL);
    r->images = c.n;
    r->references = c.n ? start[c.n] : 0;
    if (!rc) rc = keep_samples(e, hyps, n, r);
    free(h);
    free(refs);
    free(start);
    return rc;
}

int vlm_caption_evaluate(vlm_caption_evaluator *e, vlm_ctx *ctx, const vlm_model *model,
                         int64_t max_images, vlm_caption_metrics *r) {
    double t0 = vlm_now();
    memset(r, 0, sizeof *r);
    int64_t n = max_images > 0 && max_images < e->n_images ? max_images : e->n_images;
    char **hyps = calloc((size_t)(n ? n : 1), sizeof *hyps);
    int rc = hyps ? 0 : vlm_set_error("eval: out of memory for %lld captions", (long long)n);
    if (!rc && n < 1) rc = vlm_set_error("the evaluation dataset has no images");
    if (!rc) rc = caption_images(e, ctx, model, n, hyps);
    if (!rc) rc = score(e, hyps, n, r);
    vlm_ctx_reset(ctx);
    if (hyps) vlm_strings_free(hyps, n);
    r->seconds = vlm_now() - t0;
    if (rc) return vlm_set_error("eval: %s", vlm_last_error());
    return 0;
}

void vlm_caption_metrics_free(vlm_caption_metrics *m) {
    for (int k = 0; k < m->n_samples; k++) {
        free(m->sample_hyp[k]);
        free(m->sample_refs[k]);
    }
    m->n_samples = 0;
}

cJSON *vlm_caption_metrics_json(const vlm_caption_metrics *m) {
    cJSON *o = cJSON_CreateObject(), *samples = cJSON_CreateArray();
    if (!o || !samples) {
        cJSON_Delete(o);
        cJSON_Delete(samples);
        return NULL;
    }
    static const char *const keys[] = {"bleu1", "bleu2", "bleu3", "bleu4"};
    cJSON_AddNumberToObject(o, "images", (double)m->images);
    cJSON_AddNumberToObject(o, "references", (double)m->references);
    for (int k = 0; k < 4; k++) cJSON_AddNumberToObject(o, keys[k], m->bleu[k]);
    cJSON_AddNumberToObject(o, "cider_d", m->cider);
    for (int k = 0; k < m->n_samples; k++) {
        cJSON *s = cJSON_CreateObject();
        if (!s) continue;
        cJSON_AddNumberToObject(s, "image", (double)m->sample_image[k]);
        cJSON_AddStringToObject(s, "caption", m->sample_hyp[k]);
        cJSON_AddStringToObject(s, "references", m->sample_refs[k]);
        cJSON_AddItemToArray(samples, s);
    }
    cJSON_AddItemToObject(o, "samples", samples);
    cJSON_AddNumberToObject(o, "eval_seconds", m->seconds);
    return o;
}

void vlm_caption_metrics_print(FILE *f, const vlm_caption_metrics *m) {
    fprintf(f, "  %lld images, %lld references (%.1f s)\n", (long long)m->images,
            (long long)m->references, m->seconds);
    fprintf(f, "  BLEU-1 %.4f  BLEU-2 %.4f  BLEU-3 %.4f  BLEU-4 %.4f  CIDEr-D %.4f\n", m->bleu[0],
            m->bleu[1], m->bleu[2], m->bleu[3], m->cider);
    for (int k = 0; k < m->n_samples; k++)
        fprintf(f, "  [%lld] %s\n      ref: %s\n", (long long)m->sample_image[k], m->sample_hyp[k],
                m->sample_refs[k]);
}
