/* evaluate.c - evaluation of a contrastive model on a dataset:
 *  - zero-shot classification (datasets with labels and class names): the
 *    class vector is the mean of the L2-normalised text embeddings of the
 *    class under every prompt template, re-normalised; an image is classified
 *    by the largest image . class score (top-1, top-5);
 *  - retrieval R@1/5/10: text -> image counts a caption when its image is
 *    among the K best-scoring images; image -> text counts an image when any
 *    of its captions is among the K best-scoring captions (an image without
 *    captions is a miss).
 * The metrics themselves are metrics.c's (ties rank the lower index first, as
 * a stable sort does, so duplicate captions are not all "first"); this file
 * computes the embeddings. Captions are embedded once per distinct text
 * (Fashion-MNIST's 20,000 test captions are 80 texts), images in batches
 * through a sequential loader. */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_TEMPLATES 64

struct vlm_evaluator {
    vlm_dataset *ds;
    vlm_text_encoder *enc;
    vlm_eval_opts o;
    int64_t n_images, n_captions, n_texts;
    int64_t *cap_image; /* [M] */
    int64_t *cap_text;  /* [M] index into texts */
    char **texts;       /* distinct caption texts */
    char *tmpl_buf;
    const char *templates[MAX_TEMPLATES];
    int n_templates;
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- setup --------------------------------------------------------------------------- */

static int parse_templates(vlm_evaluator *e, const char *spec) {
    if (!spec || !*spec) {
        for (int i = 0; i < VLM_CLASS_TEMPLATES; i++) e->templates[i] = vlm_class_templates[i];
        e->n_templates = VLM_CLASS_TEMPLATES;
        return 0;
    }
    if (!(e->tmpl_buf = strdup(spec))) return vlm_set_error("eval: out of memory");
    char *save = NULL;
    for (char *t = strtok_r(e->tmpl_buf, "|", &save); t; t = strtok_r(NULL, "|", &save)) {
        if (!strstr(t, "{}"))
            return vlm_set_error("data.templates: template '%s' has no {} for the class name", t);
        if (e->n_templates == MAX_TEMPLATES)
            return vlm_set_error("data.templates: more than %d templates", MAX_TEMPLATES);
        e->templates[e->n_templates++] = t;
    }
    return e->n_templates ? 0 : vlm_set_error("data.templates: no template in '%s'", spec);
}

static uint64_t str_hash(const char *s) {
    uint64_t h = 0xCBF29CE484222325ULL;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ULL;
    return h;
}

/* Reads every caption, keeping one copy per distinct text (open addressing). */
static int read_captions(vlm_evaluator *e) {
    int64_t m = e->n_captions;
    size_t cap = 16;
    while (cap < 2 * (size_t)m) cap *= 2;
    int64_t *table = malloc(cap * sizeof *table);
    e->cap_image = malloc((size_t)(m ? m : 1) * sizeof *e->cap_image);
    e->cap_text = malloc((size_t)(m ? m : 1) * sizeof *e->cap_text);
    e->texts = calloc((size_t)(m ? m : 1), sizeof *e->texts);
    if (!table || !e->cap_image || !e->cap_text || !e->texts) {
        free(table);
        return vlm_set_error("eval: out of memory for %lld captions", (long long)m);
    }
    memset(table, 0xff, cap * sizeof *table);
    for (int64_t j = 0; j < m; j++) {
        char *s = vlm_dataset_read_caption(e->ds, j);
        if (!s) {
            free(table);
            return -1;
        }
        e->cap_image[j] = vlm_dataset_caption_image(e->ds, j);
        size_t h = (size_t)str_hash(s) & (cap - 1);
        while (table[h] >= 0 && strcmp(e->texts[table[h]], s)) h = (h + 1) & (cap - 1);
        if (table[h] < 0) {
            table[h] = e->n_texts;
            e->texts[e->n_texts++] = s;
        } else {
            free(s);
        }
        e->cap_text[j] = table[h];
    }
    free(table);
    return 0;
}

vlm_evaluator *vlm_evaluator_new(const char *dataset, vlm_text_encoder *enc,
                                 const vlm_eval_opts *opts) {
    vlm_evaluator *e = calloc(1, sizeof *e);
    if (!e) {
        vlm_set_error("eval: out of memory");
        return NULL;
    }
    e->enc = enc;
    e->o = *opts;
    if (!(e->ds = vlm_dataset_open(dataset)) || parse_templates(e, opts->templates)) goto fail;
    e->n_images = vlm_dataset_num_images(e->ds);
    e->n_captions = vlm_dataset_num_captions(e->ds);
    if (read_captions(e)) goto fail;
    return e;
fail:
    vlm_evaluator_free(e);
    return NULL;
}

void vlm_evaluator_free(vlm_evaluator *e) {
    if (!e) return;
    for (int64_t i = 0; e->texts && i < e->n_texts; i++) free(e->texts[i]);
    free(e->texts);
    free(e->cap_image);
    free(e->cap_text);
    free(e->tmpl_buf);
    vlm_dataset_close(e->ds);
    free(e);
}

/* ---- embeddings ------------------------------------------------------------------------- */

/* L2-normalised embeddings of n texts into out [n, D], in batches. */
static int embed_texts(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *m,
                       const char *const *texts, int64_t n, float *out) {
    int L = e->o.ctx_len, bs = e->o.batch_size, D = m->cfg.vision.width;
    int32_t *ids = malloc((size_t)bs * L * sizeof *ids);
    uint8_t *mask = malloc((size_t)bs * L);
    int rc = ids && mask ? 0 : vlm_set_error("eval: out of memory");
    for (int64_t s = 0; !rc && s < n; s += bs) {
        int64_t b = n - s < bs ? n - s : bs;
        for (int64_t i = 0; !rc && i < b; i++)
            if (vlm_text_encode(e->enc, texts[s + i], ids + i * L, mask + i * L, L) < 0) rc = -1;
        if (rc) break;
        vlm_tensor *ti = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){b, L}, ids);
        vlm_tensor *tm = vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){b, L}, mask);
        vlm_tensor *pooled = NULL;
        if (!vlm_text_forward(ctx, &m->text, ti, e->o.key_mask ? tm : NULL, false, &pooled))
            rc = -1;
        vlm_tensor *te = rc ? NULL : vlm_l2_normalize(ctx, pooled, 1e-12f);
        if (!rc && !te) rc = -1;
        if (!rc) memcpy(out + s * D, te->data, (size_t)(b * D) * sizeof(float));
        vlm_ctx_reset(ctx);
    }
    free(ids);
    free(mask);
    return rc;
}

vlm_loader *vlm_eval_loader_new(vlm_dataset *ds, const vlm_eval_opts *o) {
    vlm_loader_opts lo = vlm_loader_opts_default(o->batch_size, o->image.size);
    lo.image = o->image;
    lo.sequential = true;
    lo.num_threads = o->threads;
    return vlm_loader_new(ds, &lo);
}

/* Embeddings of images [0, n) into out [n, D], labels into labels[n]. */
static int embed_images(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *m, int64_t n,
                        float *out, int32_t *labels) {
    vlm_loader *l = vlm_eval_loader_new(e->ds, &e->o);
    if (!l) return -1;
    int D = m->cfg.vision.width, rc = 0;
    for (int64_t done = 0; !rc && done < n;) {
        const vlm_batch *b = vlm_loader_next(l);
        if (!b) {
            rc = -1;
            break;
        }
        int64_t use = n - done < b->n ? n - done : b->n;
        int64_t S = b->size;
        vlm_tensor *im = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){use, 3, S, S}, b->pixels);
        vlm_tensor *pooled = NULL;
        if (!vlm_vision_forward(ctx, &m->vision, im, false, &pooled)) rc = -1;
        vlm_tensor *ie = rc ? NULL : vlm_l2_normalize(ctx, pooled, 1e-12f);
        if (!rc && !ie) rc = -1;
        if (!rc) memcpy(out + done * D, ie->data, (size_t)(use * D) * sizeof(float));
        for (int64_t i = 0; i < use; i++) labels[done + i] = b->label[i];
        done += use;
        vlm_ctx_reset(ctx);
    }
    vlm_loader_free(l);
    return rc;
}

/* ---- zero-shot classification ------------------------------------------------------------- */

/* Class vectors from every class under every template (vlm_class_vectors),
 * then top-1 / top-5 of the images against them (vlm_zeroshot_accuracy). */
static int zeroshot(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *m, const float *img,
                    const int32_t *labels, int64_t n, vlm_eval_metrics *r) {
    int K = vlm_dataset_num_classes(e->ds), T = e->n_templates, D = m->cfg.vision.width;
    r->zeroshot = vlm_dataset_has_labels(e->ds) && K > 0 && n > 0;
    if (!r->zeroshot) return 0;
    r->classes = K;
    r->templates = T;
    char **prompts = calloc((size_t)K * T, sizeof *prompts);
    float *emb = malloc((size_t)K * T * D * sizeof *emb), *cls = malloc((size_t)K * D * sizeof *cls);
    int rc = prompts && emb && cls ? 0 : vlm_set_error("eval: out of memory");
    for (int k = 0; !rc && k < K; k++)
        for (int t = 0; !rc && t < T; t++)
            if (!(prompts[k * T + t] =
                      vlm_class_caption(e->templates[t], vlm_dataset_class_name(e->ds, k))))
                rc = -1;
    if (!rc) rc = embed_texts(e, ctx, m, (const char *const *)prompts, (int64_t)K * T, emb);
    if (!rc) rc = vlm_class_vectors(emb, K, T, D, cls);
    if (!rc) rc = vlm_zeroshot_accuracy(img, n, cls, K, D, labels, &r->top1, &r->top5);
    for (int i = 0; prompts && i < K * T; i++) free(prompts[i]);
    free(prompts);
    free(emb);
    free(cls);
    return rc;
}

/* ---- retrieval -------------------------------------------------------------------------- */

/* The captions of images [0, n): their embeddings, gathered from those of
 * the distinct texts (text_pos: row of a distinct text in text_emb), and
 * their images. */
static int gather_captions(vlm_evaluator *e, const float *text_emb, const int64_t *text_pos,
                           int64_t n, int D, float **emb, int64_t **img, int64_t *mc) {
    int64_t m = e->n_captions;
    *emb = malloc((size_t)(m ? m : 1) * D * sizeof **emb);
    *img = malloc((size_t)(m ? m : 1) * sizeof **img);
    if (!*emb || !*img) return vlm_set_error("eval: out of memory");
    *mc = 0;
    for (int64_t j = 0; j < m; j++) {
        if (e->cap_image[j] >= n) continue;
        memcpy(*emb + *mc * D, text_emb + text_pos[e->cap_text[j]] * D, D * sizeof(float));
        (*img)[(*mc)++] = e->cap_image[j];
    }
    return 0;
}

/* Embeds the distinct texts that captions of images [0, n) use; text_pos maps
 * a distinct text to its row in *emb (-1 = unused). */
static int embed_used_texts(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *m, int64_t n,
                            int64_t *text_pos, float **emb) {
    int D = m->cfg.vision.width;
    const char **used = malloc((size_t)(e->n_texts ? e->n_texts : 1) * sizeof *used);
    if (!used) return vlm_set_error("eval: out of memory");
    int64_t u = 0;
    for (int64_t t = 0; t < e->n_texts; t++) text_pos[t] = -1;
    for (int64_t j = 0; j < e->n_captions; j++) {
        int64_t t = e->cap_text[j];
        if (e->cap_image[j] >= n || text_pos[t] >= 0) continue;
        text_pos[t] = u;
        used[u++] = e->texts[t];
    }
    *emb = malloc((size_t)(u ? u : 1) * D * sizeof **emb);
    int rc = *emb ? embed_texts(e, ctx, m, used, u, *emb) : vlm_set_error("eval: out of memory");
    free(used);
    return rc;
}

/* R@1/5/10 both ways over the captions of images [0, n) (vlm_retrieval_recall). */
static int retrieval(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *m, const float *img,
                     int64_t n, vlm_eval_metrics *r) {
    int D = m->cfg.vision.width;
    int64_t *text_pos = malloc((size_t)(e->n_texts ? e->n_texts : 1) * sizeof *text_pos);
    int64_t *cimg = NULL, mc = 0;
    float *temb = NULL, *cemb = NULL;
    int rc = text_pos ? embed_used_texts(e, ctx, m, n, text_pos, &temb)
                      : vlm_set_error("eval: out of memory");
    if (!rc) rc = gather_captions(e, temb, text_pos, n, D, &cemb, &cimg, &mc);
    r->captions = mc;
    if (!rc && n > 0 && mc > 0) rc = vlm_retrieval_recall(img, n, cemb, mc, D, cimg, r->t2i, r->i2t);
    free(cemb);
    free(cimg);
    free(temb);
    free(text_pos);
    return rc;
}

int vlm_evaluate(vlm_evaluator *e, vlm_ctx *ctx, const vlm_model *model, int64_t max_images,
                 vlm_eval_metrics *r) {
    double t0 = now();
    memset(r, 0, sizeof *r);
    int64_t n = max_images > 0 && max_images < e->n_images ? max_images : e->n_images;
    int D = model->cfg.vision.width;
    float *img = malloc((size_t)(n ? n : 1) * D * sizeof *img);
    int32_t *labels = malloc((size_t)(n ? n : 1) * sizeof *labels);
    bool prev = vlm_set_grad_enabled(ctx, false);
    int rc = img && labels ? 0 : vlm_set_error("eval: out of memory for %lld images", (long long)n);
    if (!rc) rc = embed_images(e, ctx, model, n, img, labels);
    if (!rc) rc = zeroshot(e, ctx, model, img, labels, n, r);
    if (!rc) rc = retrieval(e, ctx, model, img, n, r);
    vlm_set_grad_enabled(ctx, prev);
    vlm_ctx_reset(ctx);
    free(img);
    free(labels);
    r->images = n;
    r->seconds = now() - t0;
    if (rc) return vlm_set_error("eval: %s", vlm_last_error());
    return 0;
}

cJSON *vlm_eval_metrics_json(const vlm_eval_metrics *m) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddNumberToObject(o, "images", (double)m->images);
    cJSON_AddNumberToObject(o, "captions", (double)m->captions);
    if (m->zeroshot) {
        cJSON_AddNumberToObject(o, "zeroshot_top1", m->top1);
        cJSON_AddNumberToObject(o, "zeroshot_top5", m->top5);
        cJSON_AddNumberToObject(o, "classes", m->classes);
        cJSON_AddNumberToObject(o, "templates", m->templates);
    }
    static const char *const t2i[] = {"t2i_r1", "t2i_r5", "t2i_r10"};
    static const char *const i2t[] = {"i2t_r1", "i2t_r5", "i2t_r10"};
    for (int q = 0; q < 3; q++) {
        cJSON_AddNumberToObject(o, t2i[q], m->t2i[q]);
        cJSON_AddNumberToObject(o, i2t[q], m->i2t[q]);
    }
    cJSON_AddNumberToObject(o, "eval_seconds", m->seconds);
    return o;
}

void vlm_eval_metrics_print(FILE *f, const vlm_eval_metrics *m) {
    fprintf(f, "  %lld images, %lld captions (%.1f s)\n", (long long)m->images,
            (long long)m->captions, m->seconds);
    if (m->zeroshot)
        fprintf(f, "  zero-shot (%d classes x %d templates): top-1 %.2f%%  top-5 %.2f%%\n",
                m->classes, m->templates, 100 * m->top1, 100 * m->top5);
    fprintf(f, "  text->image R@1 %.2f%%  R@5 %.2f%%  R@10 %.2f%%\n", 100 * m->t2i[0],
            100 * m->t2i[1], 100 * m->t2i[2]);
    fprintf(f, "  image->text R@1 %.2f%%  R@5 %.2f%%  R@10 %.2f%%\n", 100 * m->i2t[0],
            100 * m->i2t[1], 100 * m->i2t[2]);
}
