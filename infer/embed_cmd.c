/* embed_cmd.c - `vlm embed`: image, text and (captioners) fused embeddings
 * of a folder of images, a dataset or a text file, written as an HDF5 file
 * that h5py reads. The file is written as OUT.tmp and renamed when complete.
 * HDF5 calls here never overlap the data module's (it is done reading
 * before we write), as Debian's non-thread-safe libhdf5 requires. */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm embed --model M (--images DIR | --dataset D | --text FILE) -o OUT.h5\n"
            "                 [options]\n"
            "\n"
            "Embeds images and texts with the model's towers (L2-normalised, as used for\n"
            "zero-shot and retrieval) and writes an HDF5 file:\n"
            "  /image_embeds   float32 [N, D]   --images (every image file of DIR, sorted by\n"
            "                                   name) or --dataset (every image)\n"
            "  /text_embeds    float32 [M, D]   --dataset (every caption) or --text (every\n"
            "                                   non-empty line)\n"
            "  /fused_embeds   float32 [R, Dt]  captioners: the fusion block's mean over the\n"
            "                                   text tokens (not normalised); --images: each\n"
            "                                   image with --prompt; --dataset: each caption\n"
            "                                   with its image (R = M)\n"
            "  /names          strings [N]      the rows of image_embeds: file names, or\n"
            "                                   \"DATASET:INDEX\" (--text: the texts)\n"
            "  /texts          strings [M]      the embedded texts\n"
            "  /caption_image  int64 [M]        --dataset: the image of each caption\n"
            "  /labels         int32 [N]        --dataset with labels\n"
            "  attributes of /: model (string), embed_dim (int)\n"
            "\n"
            "options:\n" CLI_MODEL_HELP
            "  --images DIR         .jpg .jpeg .png .bmp .pgm .ppm .pnm files of DIR\n"
            "  --dataset D          an HDF5 dataset (vlm prepare)\n"
            "  --text FILE          texts, one per line\n"
            "  --limit N            --dataset: the first N images and their captions\n"
            "  --prompt TEXT        captioners with --images: the fusion prompt\n"
            "                       (default \"describe the image\")\n"
            "  --no-fused           skip the fused embeddings\n"
            "  -o, --output FILE    the HDF5 file to write\n"
            "\n"
            "example:\n"
            "  vlm embed --model runs/shapes --dataset data/shapes-val.h5 -o shapes-emb.h5\n"
            "  python3 -c \"import h5py; f = h5py.File('shapes-emb.h5'); print(f['image_embeds'].shape)\"\n",
            32);
}

typedef struct {
    cli_model_opts m;
    const char *images, *dataset, *text, *output, *prompt;
    bool no_fused;
    int64_t limit;
} embed_args;

static int parse(int argc, char **argv, embed_args *o) {
    cli_args a = {argc, 1, argv, "embed", usage};
    o->prompt = "describe the image";
    for (; a.i < argc; a.i++) {
        const char *s = argv[a.i], *v = NULL;
        int r;
        long n;
        if (cli_is_help(s)) return usage(stdout), -1;
        if ((r = cli_take_model_opt(&a, &o->m))) {
            if (r == 2) return 2;
        } else if ((r = cli_take(&a, "--images", NULL, &o->images)) ||
                   (r = cli_take(&a, "--dataset", NULL, &o->dataset)) ||
                   (r = cli_take(&a, "--text", NULL, &o->text)) ||
                   (r = cli_take(&a, "--prompt", NULL, &o->prompt)) ||
                   (r = cli_take(&a, "--output", "-o", &o->output))) {
            if (r < 0) return 2;
        } else if ((r = cli_take(&a, "--limit", NULL, &v))) {
            if (r < 0) return 2;
            if (!cli_parse_int(v, 1, 1L << 40, &n)) return cli_bad_usage(&a, "--limit must be >= 1, got", v);
            o->limit = n;
        } else if (!strcmp(s, "--no-fused")) {
            o->no_fused = true;
        } else {
            return cli_bad_usage(&a, s[0] == '-' ? "unknown option" : "unexpected argument", s);
        }
    }
    if (!o->m.model) return cli_bad_usage(&a, "--model is required", NULL);
    if ((o->images != NULL) + (o->dataset != NULL) + (o->text != NULL) != 1)
        return cli_bad_usage(&a, "give exactly one of --images, --dataset and --text", NULL);
    if (!o->output) return cli_bad_usage(&a, "-o OUT.h5 is required", NULL);
    return 0;
}

/* ---- what gets written ------------------------------------------------------------------ */

typedef struct {
    int64_t n_img, n_txt, n_fused;
    int D, Dt;
    float *img, *txt, *fused;
    char **names;   /* [n_img], NULL without images */
    char **texts;   /* [n_txt] */
    int64_t *caption_image;
    int32_t *labels;
} embeddings;

static void embeddings_free(embeddings *e) {
    free(e->img), free(e->txt), free(e->fused);
    cli_free_strings(e->names, e->n_img);
    cli_free_strings(e->texts, e->n_txt);
    free(e->caption_image), free(e->labels);
}

/* ---- HDF5 ------------------------------------------------------------------------------- */

static int h5_dataset(hid_t f, const char *name, hid_t type, int rank, const hsize_t *dims,
                      const void *data, const char *path) {
    hid_t space = H5Screate_simple(rank, dims, NULL);
    hid_t d = space < 0 ? -1 : H5Dcreate2(f, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = d < 0 ? -1 : H5Dwrite(d, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    if (space >= 0) H5Sclose(space);
    return w < 0 ? vlm_set_error("%s: cannot write /%s", path, name) : 0;
}

static int h5_floats(hid_t f, const char *name, const float *x, int64_t rows, int cols, const char *path) {
    if (!x) return 0;
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    return h5_dataset(f, name, H5T_NATIVE_FLOAT, 2, dims, x, path);
}

/* Variable-length UTF-8 strings, as h5py writes str (the caller closes it). */
static hid_t h5_string_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t >= 0 && (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0)) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

static int h5_strings(hid_t f, const char *name, char *const *s, int64_t n, const char *path) {
    if (!s) return 0;
    hid_t t = h5_string_type();
    int rc = t >= 0 ? h5_dataset(f, name, t, 1, (hsize_t[]){(hsize_t)n}, s, path)
                    : vlm_set_error("%s: cannot make a string type", path);
    if (t >= 0) H5Tclose(t);
    return rc;
}

static herr_t h5_attr(hid_t f, const char *name, hid_t type, const void *value) {
    hid_t s = H5Screate(H5S_SCALAR);
    hid_t a = s < 0 ? -1 : H5Acreate2(f, name, type, s, H5P_DEFAULT, H5P_DEFAULT);
    herr_t w = a < 0 ? -1 : H5Awrite(a, type, value);
    if (a >= 0) H5Aclose(a);
    if (s >= 0) H5Sclose(s);
    return w;
}

static int h5_attrs(hid_t f, const char *model, int D, const char *path) {
    hid_t t = h5_string_type();
    bool ok = t >= 0 && h5_attr(f, "model", t, &model) >= 0 &&
              h5_attr(f, "embed_dim", H5T_NATIVE_INT, &D) >= 0;
    if (t >= 0) H5Tclose(t);
    return ok ? 0 : vlm_set_error("%s: cannot write the attributes", path);
}

static int write_all(hid_t f, const embeddings *e, const char *model, const char *path) {
    /* names label the image rows; with texts only, the texts themselves */
    char **names = e->names ? e->names : e->texts;
    int64_t n_names = e->names ? e->n_img : e->n_txt;
    if (h5_attrs(f, model, e->D, path) || h5_floats(f, "image_embeds", e->img, e->n_img, e->D, path) ||
        h5_floats(f, "text_embeds", e->txt, e->n_txt, e->D, path) ||
        h5_floats(f, "fused_embeds", e->fused, e->n_fused, e->Dt, path) ||
        h5_strings(f, "names", names, n_names, path) || h5_strings(f, "texts", e->texts, e->n_txt, path))
        return -1;
    if (e->caption_image &&
        h5_dataset(f, "caption_image", H5T_NATIVE_INT64, 1, (hsize_t[]){(hsize_t)e->n_txt}, e->caption_image, path))
        return -1;
    if (e->labels && h5_dataset(f, "labels", H5T_NATIVE_INT32, 1, (hsize_t[]){(hsize_t)e->n_img}, e->labels, path))
        return -1;
    return 0;
}

/* OUT.tmp, then renamed over OUT: a failed run leaves no half-written file. */
static int write_h5(const embeddings *e, const char *model, const char *out) {
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", out) >= (int)sizeof tmp)
        return vlm_set_error("%s: path too long", out);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL); /* errors come back as our messages */
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) return vlm_set_error("%s: cannot create the file (does its folder exist?)", tmp);
    int rc = write_all(f, e, model, out);
    if (H5Fclose(f) < 0 && !rc) rc = vlm_set_error("%s: cannot close the file", tmp);
    if (!rc && rename(tmp, out)) rc = vlm_set_error("%s: cannot rename into place: %s", out, strerror(errno));
    if (rc) remove(tmp);
    return rc;
}

/* ---- gathering ------------------------------------------------------------------------------ */

static bool is_image_name(const char *name) {
    static const char *const ext[] = {".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".pnm", NULL};
    const char *dot = strrchr(name, '.');
    for (int i = 0; dot && ext[i]; i++)
        if (!strcasecmp(dot, ext[i])) return true;
    return false;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Appends a copy of name to *names; false when out of memory. */
static bool push_name(char ***names, int64_t *n, int64_t *cap, const char *name) {
    if (*n == *cap) {
        int64_t c = *cap ? 2 * *cap : 64;
        char **g = realloc(*names, (size_t)c * sizeof *g);
        if (!g) return false;
        *names = g, *cap = c;
    }
    return ((*names)[*n] = strdup(name)) ? (++*n, true) : false;
}

/* The image files of dir, sorted, as malloc'd names (relative to dir). */
static char **list_images(const char *dir, int64_t *n) {
    DIR *d = opendir(dir);
    if (!d) return vlm_set_error("--images %s: %s", dir, strerror(errno)), NULL;
    char **names = NULL;
    int64_t cap = 0;
    bool ok = true;
    *n = 0;
    for (struct dirent *e; ok && (e = readdir(d));)
        if (e->d_name[0] != '.' && is_image_name(e->d_name)) ok = push_name(&names, n, &cap, e->d_name);
    closedir(d);
    if (!ok || !*n) {
        cli_free_strings(names, *n);
        vlm_set_error(ok ? "--images %s: no image files (.jpg .jpeg .png .bmp .pgm .ppm .pnm)"
                         : "--images %s: out of memory", dir);
        return NULL;
    }
    qsort(names, (size_t)*n, sizeof *names, by_name);
    return names;
}

/* Image embeddings (and fused ones with the prompt) a batch of files at a time. */
static int from_images(const embed_args *o, const vlm_bundle *b, vlm_ctx *ctx, embeddings *e) {
    if (!(e->names = list_images(o->images, &e->n_img))) return -1;
    int bs = o->m.batch ? o->m.batch : 32;
    bool fused = vlm_bundle_is_captioner(b) && !o->no_fused;
    e->img = malloc((size_t)(e->n_img * e->D) * sizeof *e->img);
    e->fused = fused ? malloc((size_t)(e->n_img * e->Dt) * sizeof *e->fused) : NULL;
    char **paths = calloc((size_t)bs, sizeof *paths);
    const char **prompts = malloc((size_t)bs * sizeof *prompts);
    int rc = e->img && (e->fused || !fused) && paths && prompts ? 0 : vlm_set_error("out of memory");
    for (int k = 0; !rc && k < bs; k++) prompts[k] = o->prompt;
    for (int64_t i = 0; !rc && i < e->n_img; i += bs) {
        int m = (int)(e->n_img - i < bs ? e->n_img - i : bs);
        for (int k = 0; !rc && k < m; k++) {
            free(paths[k]);
            size_t len = strlen(o->images) + strlen(e->names[i + k]) + 2;
            if (!(paths[k] = malloc(len))) rc = vlm_set_error("out of memory");
            else snprintf(paths[k], len, "%s/%s", o->images, e->names[i + k]);
        }
        float *px = rc ? NULL : cli_load_images(b, paths, m);
        if (!px) rc = -1;
        if (!rc) rc = vlm_bundle_embed_images(ctx, b, px, m, bs, e->img + i * e->D);
        if (!rc && fused) rc = vlm_bundle_embed_fused(ctx, b, px, prompts, m, bs, e->fused + i * e->Dt);
        free(px);
    }
    e->n_fused = fused ? e->n_img : 0;
    cli_free_strings(paths, bs);
    free(prompts);
    return rc;
}

/* Fused embeddings of every caption with its image, a batch of captions at a
 * time (the images are read again per caption: a dataset has few per image). */
static int dataset_fused(const embed_args *o, const vlm_bundle *b, vlm_ctx *ctx, vlm_dataset *ds,
                         embeddings *e) {
    int bs = o->m.batch ? o->m.batch : 32;
    int64_t px = 3 * (int64_t)b->image.size * b->image.size;
    float *pixels = malloc((size_t)(bs * px) * sizeof *pixels);
    e->fused = malloc((size_t)((e->n_txt ? e->n_txt : 1) * e->Dt) * sizeof *e->fused);
    int rc = pixels && e->fused ? 0 : vlm_set_error("out of memory");
    for (int64_t j = 0; !rc && j < e->n_txt; j += bs) {
        int m = (int)(e->n_txt - j < bs ? e->n_txt - j : bs);
        for (int k = 0; !rc && k < m; k++)
            rc = cli_dataset_pixels(b, ds, e->caption_image[j + k], 1, pixels + k * px);
        if (!rc)
            rc = vlm_bundle_embed_fused(ctx, b, pixels, (const char *const *)e->texts + j, m, bs,
                                        e->fused + j * e->Dt);
    }
    e->n_fused = e->n_txt;
    free(pixels);
    return rc;
}

/* "DATASET:INDEX" names and the labels of the first n images. */
static int dataset_names(const char *path, vlm_dataset *ds, embeddings *e) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    e->names = calloc((size_t)e->n_img, sizeof *e->names);
    e->labels = vlm_dataset_has_labels(ds) ? malloc((size_t)e->n_img * sizeof *e->labels) : NULL;
    if (!e->names || (vlm_dataset_has_labels(ds) && !e->labels)) return vlm_set_error("out of memory");
    for (int64_t i = 0; i < e->n_img; i++) {
        size_t len = strlen(base) + 24;
        if (!(e->names[i] = malloc(len))) return vlm_set_error("out of memory");
        snprintf(e->names[i], len, "%s:%lld", base, (long long)i);
        if (e->labels) e->labels[i] = vlm_dataset_label(ds, i);
    }
    return 0;
}

static int from_dataset(const embed_args *o, const vlm_bundle *b, vlm_ctx *ctx, embeddings *e) {
    vlm_dataset *ds = vlm_dataset_open(o->dataset);
    if (!ds) return -1;
    e->n_img = vlm_dataset_num_images(ds);
    if (o->limit && o->limit < e->n_img) e->n_img = o->limit;
    cli_captions c = {0};
    int rc = e->n_img ? dataset_names(o->dataset, ds, e) : vlm_set_error("dataset %s has no images", o->dataset);
    if (!rc) rc = cli_read_captions(ds, e->n_img, &c);
    /* the texts and their images move into e */
    e->texts = c.text, e->caption_image = c.image, e->n_txt = c.n;
    c.text = NULL, c.image = NULL, c.n = 0;
    e->img = rc ? NULL : malloc((size_t)(e->n_img * e->D) * sizeof *e->img);
    e->txt = rc ? NULL : malloc((size_t)((e->n_txt ? e->n_txt : 1) * e->D) * sizeof *e->txt);
    if (!rc && (!e->img || !e->txt)) rc = vlm_set_error("out of memory");
    if (!rc) rc = cli_embed_dataset_images(ctx, b, ds, e->n_img, o->m.batch, e->img);
    c.text = e->texts, c.n = e->n_txt; /* borrowed back for the deduplicated embedding */
    if (!rc) rc = cli_embed_captions(ctx, b, &c, o->m.batch, e->txt);
    c.text = NULL, c.n = 0;
    if (!rc && vlm_bundle_is_captioner(b) && !o->no_fused && e->n_txt) rc = dataset_fused(o, b, ctx, ds, e);
    cli_captions_free(&c);
    vlm_dataset_close(ds);
    return rc;
}

static int from_text(const embed_args *o, const vlm_bundle *b, vlm_ctx *ctx, embeddings *e) {
    int n = 0;
    if (!(e->texts = cli_read_lines(o->text, &n))) return -1;
    e->n_txt = n;
    if (!(e->txt = malloc((size_t)(n * e->D) * sizeof *e->txt))) return vlm_set_error("out of memory");
    return vlm_bundle_embed_texts(ctx, b, (const char *const *)e->texts, n, o->m.batch, e->txt);
}

int vlm_cmd_embed(int argc, char **argv) {
    embed_args o = {0};
    int rc = parse(argc, argv, &o);
    if (rc) return rc < 0 ? 0 : rc;
    cli_args a = {argc, 1, argv, "embed", usage};
    vlm_bundle *b = cli_load_bundle(&a, &o.m);
    if (!b) return 1;
    embeddings e = {.D = vlm_bundle_embed_dim(b), .Dt = b->model->cfg.text.width};
    vlm_ctx *ctx = vlm_ctx_new(0);
    rc = ctx ? 0 : vlm_set_error("out of memory");
    if (!rc) rc = o.images ? from_images(&o, b, ctx, &e) : o.dataset ? from_dataset(&o, b, ctx, &e)
                                                                     : from_text(&o, b, ctx, &e);
    if (!rc) rc = write_h5(&e, o.m.model, o.output);
    if (!rc)
        fprintf(stderr, "wrote %s: %lld image, %lld text, %lld fused embeddings\n", o.output,
                (long long)e.n_img, (long long)e.n_txt, (long long)e.n_fused);
    embeddings_free(&e);
    vlm_ctx_free(ctx);
    vlm_bundle_free(b);
    return rc ? cli_fail() : 0;
}
