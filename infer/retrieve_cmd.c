/* retrieve_cmd.c - `vlm retrieve`: text -> image and image -> text search
 * over a dataset, and its retrieval recall (R@1/5/10 both ways). */
#include "cli.h"

#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm retrieve --model M --dataset D (--text TEXT | --image FILE | --recall)\n"
            "                    [-k K] [options]\n"
            "\n"
            "Embeds the dataset batch by batch and ranks it against the query by cosine\n"
            "similarity: --text ranks the dataset's images, --image ranks its captions\n"
            "(each distinct text once). Prints the K best, best first:\n"
            "  RANK  SCORE  image INDEX  CLASS or first caption      (--text)\n"
            "  RANK  SCORE  CAPTION  (image INDEX[, N captions])     (--image)\n"
            "--recall instead embeds every image and caption and prints recall@1/5/10\n"
            "for text -> image and image -> text (open_clip's retrieval metrics).\n"
            "\n"
            "options:\n" CLI_MODEL_HELP
            "  --dataset D          an HDF5 dataset (vlm prepare)\n"
            "  --text TEXT          find the images that match TEXT\n"
            "  --image FILE         find the captions that match the image FILE\n"
            "  --recall             R@1/5/10 over the dataset (images vs their captions)\n"
            "  -k, --top-k K        results printed (default 5)\n"
            "  --limit N            use only the first N images (and their captions)\n"
            "\n"
            "examples:\n"
            "  vlm retrieve --model runs/shapes --dataset data/shapes-val.h5 \\\n"
            "      --text \"a small red circle\" -k 5\n"
            "  vlm retrieve --model runs/shapes --dataset data/shapes-val.h5 --recall\n",
            32);
}

typedef struct {
    cli_model_opts m;
    const char *dataset, *text, *image;
    bool recall;
    int k;
    int64_t limit;
} retrieve_args;

static int parse(int argc, char **argv, retrieve_args *o) {
    cli_args a = {argc, 1, argv, "retrieve", usage};
    o->k = 5;
    for (; a.i < argc; a.i++) {
        const char *s = argv[a.i], *v = NULL;
        int r;
        long n;
        if (cli_is_help(s)) return usage(stdout), -1;
        if ((r = cli_take_model_opt(&a, &o->m))) {
            if (r == 2) return 2;
        } else if ((r = cli_take(&a, "--dataset", NULL, &o->dataset)) ||
                   (r = cli_take(&a, "--text", NULL, &o->text)) ||
                   (r = cli_take(&a, "--image", NULL, &o->image))) {
            if (r < 0) return 2;
        } else if (!strcmp(s, "--recall")) {
            o->recall = true;
        } else if ((r = cli_take(&a, "--top-k", "-k", &v))) {
            if (r < 0) return 2;
            if (!cli_parse_int(v, 1, 1 << 30, &n)) return cli_bad_usage(&a, "-k must be >= 1, got", v);
            o->k = (int)n;
        } else if ((r = cli_take(&a, "--limit", NULL, &v))) {
            if (r < 0) return 2;
            if (!cli_parse_int(v, 1, 1L << 40, &n)) return cli_bad_usage(&a, "--limit must be >= 1, got", v);
            o->limit = n;
        } else {
            return cli_bad_usage(&a, s[0] == '-' ? "unknown option" : "unexpected argument", s);
        }
    }
    if (!o->m.model) return cli_bad_usage(&a, "--model is required", NULL);
    if (!o->dataset) return cli_bad_usage(&a, "--dataset is required", NULL);
    if ((o->text != NULL) + (o->image != NULL) + o->recall != 1)
        return cli_bad_usage(&a, "give exactly one of --text, --image and --recall", NULL);
    return 0;
}

/* Scores of every row of emb [n, D] against q [D], and the k best. */
static int rank_rows(const float *emb, int64_t n, const float *q, int D, int k, float **s,
                     int **idx) {
    *s = malloc((size_t)(n ? n : 1) * sizeof **s);
    *idx = malloc((size_t)k * sizeof **idx);
    if (!*s || !*idx) return vlm_set_error("out of memory");
    for (int64_t i = 0; i < n; i++) {
        double d = 0;
        for (int j = 0; j < D; j++) d += (double)emb[i * D + j] * q[j];
        (*s)[i] = (float)d;
    }
    return vlm_topk(*s, (int)n, k, *idx);
}

/* What to show for an image: its class, else its first caption. */
static void describe_image(vlm_dataset *ds, const cli_captions *c, int64_t i) {
    int32_t label = vlm_dataset_has_labels(ds) ? vlm_dataset_label(ds, i) : -1;
    const char *cls = label >= 0 ? vlm_dataset_class_name(ds, label) : NULL;
    if (cls) {
        printf("  %s\n", cls);
        return;
    }
    for (int64_t j = 0; j < c->n; j++)
        if (c->image[j] == i) {
            printf("  \"%s\"\n", c->text[j]);
            return;
        }
    printf("\n");
}

static int text_query(const retrieve_args *o, const vlm_bundle *b, vlm_ctx *ctx, vlm_dataset *ds,
                      int64_t n) {
    int D = vlm_bundle_embed_dim(b), k = o->k < n ? o->k : (int)n, *idx = NULL;
    float *img = malloc((size_t)(n * D) * sizeof *img), *q = malloc((size_t)D * sizeof *q), *s = NULL;
    cli_captions c = {0};
    int rc = img && q ? 0 : vlm_set_error("out of memory for %lld embeddings", (long long)n);
    if (!rc) rc = vlm_bundle_embed_texts(ctx, b, &o->text, 1, 1, q);
    if (!rc) rc = cli_embed_dataset_images(ctx, b, ds, n, o->m.batch, img);
    if (!rc) rc = cli_read_captions(ds, n, &c);
    if (!rc) rc = rank_rows(img, n, q, D, k, &s, &idx);
    for (int r = 0; !rc && r < k; r++) {
        printf("%3d  %.6f  image %lld", r + 1, s[idx[r]], (long long)idx[r]);
        describe_image(ds, &c, idx[r]);
    }
    cli_captions_free(&c);
    free(img), free(q), free(s), free(idx);
    return rc;
}

static int image_query(const retrieve_args *o, const vlm_bundle *b, vlm_ctx *ctx, vlm_dataset *ds,
                       int64_t n) {
    int D = vlm_bundle_embed_dim(b), *idx = NULL;
    cli_captions c = {0};
    float *px = NULL, *q = malloc((size_t)D * sizeof *q), *txt = NULL, *s = NULL;
    int rc = cli_read_captions(ds, n, &c);
    if (!rc && !c.n_unique) rc = vlm_set_error("dataset %s has no captions", o->dataset);
    int k = o->k < c.n_unique ? o->k : (int)c.n_unique;
    if (!rc && !(px = cli_load_images(b, (char *const *)&o->image, 1))) rc = -1;
    if (!rc && (!q || !(txt = malloc((size_t)(c.n_unique * D) * sizeof *txt))))
        rc = vlm_set_error("out of memory");
    if (!rc) rc = vlm_bundle_embed_images(ctx, b, px, 1, 1, q);
    if (!rc) rc = vlm_bundle_embed_texts(ctx, b, c.unique, c.n_unique, o->m.batch, txt);
    if (!rc) rc = rank_rows(txt, c.n_unique, q, D, k, &s, &idx);
    for (int r = 0; !rc && r < k; r++) {
        int64_t first = -1, count = 0;
        for (int64_t j = 0; j < c.n; j++)
            if (c.unique_of[j] == idx[r]) count++, first = first < 0 ? c.image[j] : first;
        printf("%3d  %.6f  %s  (image %lld", r + 1, s[idx[r]], c.unique[idx[r]], (long long)first);
        printf(count > 1 ? ", %lld captions)\n" : ")\n", (long long)count);
    }
    cli_captions_free(&c);
    free(px), free(q), free(txt), free(s), free(idx);
    return rc;
}

static int recall(const retrieve_args *o, const vlm_bundle *b, vlm_ctx *ctx, vlm_dataset *ds,
                  int64_t n) {
    int D = vlm_bundle_embed_dim(b);
    cli_captions c = {0};
    float *img = malloc((size_t)(n * D) * sizeof *img), *txt = NULL;
    int rc = img ? cli_read_captions(ds, n, &c) : vlm_set_error("out of memory");
    if (!rc && !c.n) rc = vlm_set_error("dataset %s has no captions", o->dataset);
    if (!rc && !(txt = malloc((size_t)(c.n * D) * sizeof *txt))) rc = vlm_set_error("out of memory");
    if (!rc) rc = cli_embed_dataset_images(ctx, b, ds, n, o->m.batch, img);
    if (!rc) rc = cli_embed_captions(ctx, b, &c, o->m.batch, txt);
    double t2i[3], i2t[3];
    if (!rc) rc = vlm_retrieval_recall(img, n, txt, c.n, D, c.image, t2i, i2t);
    if (!rc) {
        printf("images %lld, captions %lld (%lld distinct)\n", (long long)n, (long long)c.n,
               (long long)c.n_unique);
        printf("text->image  R@1 %.4f  R@5 %.4f  R@10 %.4f\n", t2i[0], t2i[1], t2i[2]);
        printf("image->text  R@1 %.4f  R@5 %.4f  R@10 %.4f\n", i2t[0], i2t[1], i2t[2]);
    }
    cli_captions_free(&c);
    free(img), free(txt);
    return rc;
}

static int run(const retrieve_args *o, const vlm_bundle *b) {
    vlm_dataset *ds = vlm_dataset_open(o->dataset);
    vlm_ctx *ctx = ds ? vlm_ctx_new(0) : NULL;
    int rc = ctx ? 0 : -1;
    if (ds && !ctx) vlm_set_error("out of memory");
    int64_t n = ds ? vlm_dataset_num_images(ds) : 0;
    if (o->limit && o->limit < n) n = o->limit;
    if (!rc && n < 1) rc = vlm_set_error("dataset %s has no images", o->dataset);
    if (!rc)
        rc = o->text ? text_query(o, b, ctx, ds, n)
             : o->image ? image_query(o, b, ctx, ds, n)
                        : recall(o, b, ctx, ds, n);
    vlm_ctx_free(ctx);
    vlm_dataset_close(ds);
    return rc;
}

int vlm_cmd_retrieve(int argc, char **argv) {
    retrieve_args o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    cli_args a = {argc, 1, argv, "retrieve", usage};
    vlm_bundle *b = cli_load_bundle(&a, &o.m);
    rc = b ? (run(&o, b) ? cli_fail() : 0) : 1;
    vlm_bundle_free(b);
    return rc;
}
