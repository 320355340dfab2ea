/* common.c - pieces shared by `vlm pretrain` and `vlm eval`: the dataset
 * cache for Fashion-MNIST, the run's tokenizer, the SigLIP micro-batch loss
 * and small filesystem helpers. */
#include "train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int vlm_mkdirs(const char *path) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf)
        return vlm_set_error("%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p) continue;
        char c = *p;
        *p = 0;
        if (mkdir(buf, 0777) && errno != EEXIST)
            return vlm_set_error("%s: cannot create directory (%s)", buf, strerror(errno));
        if (!(*p = c)) break;
    }
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode))
        return vlm_set_error("%s: not a directory", path);
    return 0;
}

/* ---- Fashion-MNIST cache ------------------------------------------------------------ */

#define FMNIST_PREFIX "fashion-mnist:"

/* Prepares one split into path. The training split gets every template as a
 * caption (the loader draws one per image and epoch); the test split the
 * prepare default (2 per image). */
static int prepare_fmnist(const char *split, const char *path) {
    fprintf(stderr, "preparing Fashion-MNIST %s split into %s (once)\n", split, path);
    vlm_prepare_opts o = {.source = VLM_PREPARE_FASHION_MNIST, .output = path, .split = split,
                          .captions_per_image = !strcmp(split, "train") ? VLM_CLASS_TEMPLATES : 2,
                          .progress = true};
    vlm_prepare_report r;
    return vlm_prepare(&o, &r);
}

char *vlm_resolve_dataset(const char *spec) {
    if (strncmp(spec, FMNIST_PREFIX, strlen(FMNIST_PREFIX)) != 0) {
        char *s = strdup(spec);
        if (!s) vlm_set_error("out of memory");
        return s;
    }
    const char *split = spec + strlen(FMNIST_PREFIX);
    if (strcmp(split, "train") && strcmp(split, "test")) {
        vlm_set_error("dataset '%s': the Fashion-MNIST splits are fashion-mnist:train and "
                      "fashion-mnist:test", spec);
        return NULL;
    }
    const char *dir = getenv("VLM_DATA_DIR");
    if (!dir || !*dir) dir = "data_cache";
    size_t n = strlen(dir) + 64;
    char *path = malloc(n);
    if (!path) {
        vlm_set_error("out of memory");
        return NULL;
    }
    snprintf(path, n, "%s/fashion-mnist-%s.h5", dir, split);
    struct stat st;
    if (stat(path, &st) == 0) return path;
    if (vlm_mkdirs(dir) || prepare_fmnist(split, path)) {
        free(path);
        return NULL;
    }
    return path;
}

/* ---- the run's tokenizer ----------------------------------------------------------------- */

vlm_text_encoder *vlm_run_text_encoder(const vlm_run_cfg *cfg, const char *run_dir,
                                       vlm_dataset *ds) {
    const vlm_data_cfg *d = &cfg->data;
    int pad = cfg->model.text.pad_id;
    vlm_text_encoder *e;
    if (strcmp(d->tokenizer, "train") != 0) {
        e = vlm_text_encoder_load(d->tokenizer, pad);
    } else {
        char path[4200];
        snprintf(path, sizeof path, "%s/tokenizer.json", run_dir);
        struct stat st;
        if (stat(path, &st) == 0) {
            e = vlm_text_encoder_load(path, pad);
        } else if (!ds) {
            vlm_set_error("%s: missing (data.tokenizer is \"train\": the run trains it)", path);
            return NULL;
        } else {
            int vocab = d->vocab_size ? d->vocab_size : cfg->model.text.vocab;
            e = vlm_text_encoder_train(ds, vocab, pad, path);
            if (e)
                fprintf(stderr, "trained a %d-id BPE tokenizer on the captions: %s\n",
                        vlm_text_encoder_vocab(e), path);
        }
    }
    if (e && vlm_text_encoder_vocab(e) > cfg->model.text.vocab) {
        vlm_set_error("the tokenizer has %d ids but model.text.vocab is %d",
                      vlm_text_encoder_vocab(e), cfg->model.text.vocab);
        vlm_text_encoder_free(e);
        return NULL;
    }
    return e;
}

vlm_eval_opts vlm_run_eval_opts(const vlm_run_cfg *cfg) {
    const vlm_data_cfg *d = &cfg->data;
    vlm_eval_opts o = {.image = vlm_image_opts_default(d->image_size),
                       .ctx_len = d->ctx_len,
                       .batch_size = d->eval_batch_size ? d->eval_batch_size : cfg->train.batch_size,
                       .threads = d->loader_threads,
                       .key_mask = d->key_mask,
                       .templates = d->templates};
    memcpy(o.image.mean, d->mean, sizeof o.image.mean);
    memcpy(o.image.std, d->std, sizeof o.image.std);
    return o;
}

/* ---- the SigLIP loss of a batch ----------------------------------------------------------- */

/* Positives: rows with the same label (data.positives "labels", or "auto"
 * on a dataset with labels), else rows with the same image or the same
 * caption text. u8 [n, n], rows = texts. */
static vlm_tensor *match_mask(vlm_ctx *ctx, const vlm_batch *b, const char *positives) {
    int n = b->n;
    bool labels = strcmp(positives, "captions") != 0;
    for (int i = 0; i < n; i++) labels &= b->label[i] >= 0;
    if (!labels && !strcmp(positives, "labels")) {
        vlm_set_error("data.positives is \"labels\" but the dataset has no labels");
        return NULL;
    }
    vlm_tensor *m = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){n, n});
    if (!m) return NULL;
    uint8_t *p = m->data;
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++)
            p[i * n + j] = labels ? b->label[i] == b->label[j]
                                  : i == j || b->image[i] == b->image[j] ||
                                        !strcmp(b->text[i], b->text[j]);
    return m;
}

/* vlm_siglip_forward, stage by stage so that anomaly mode can check each. */
vlm_tensor *vlm_siglip_batch_loss(vlm_ctx *ctx, const vlm_model *m, const vlm_batch *b,
                                  void *user, vlm_anomaly *an) {
    const vlm_run_cfg *cfg = user;
    int64_t n = b->n, S = b->size, L = b->ctx_len;
    vlm_tensor *images = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){n, 3, S, S}, b->pixels);
    vlm_tensor *ids = vlm_tensor_from(ctx, VLM_I32, 2, (int64_t[]){n, L}, b->ids);
    vlm_tensor *mask = cfg->data.key_mask
                           ? vlm_tensor_from(ctx, VLM_U8, 2, (int64_t[]){n, L}, b->mask)
                           : NULL;
    vlm_tensor *match = match_mask(ctx, b, cfg->data.positives);
    if (!images || !ids || !match || (cfg->data.key_mask && !mask)) return NULL;
    vlm_tensor *ip = NULL, *tp = NULL;
    vlm_anomaly_check(an, images, "input images");
    vlm_tensor *tok = vlm_vision_forward(ctx, &m->vision, images, true, &ip);
    vlm_anomaly_check(an, tok, "image tower tokens (post_layernorm)");
    vlm_anomaly_check(an, ip, "image tower pooled output (MAP head)");
    vlm_tensor *tt = vlm_text_forward(ctx, &m->text, ids, mask, true, &tp);
    vlm_anomaly_check(an, tt, "text tower tokens (final_layer_norm)");
    vlm_anomaly_check(an, tp, "text tower pooled output (head)");
    if (!tok || !ip || !tt || !tp) return NULL;
    vlm_tensor *ie = vlm_anomaly_check(an, vlm_l2_normalize(ctx, ip, 1e-12f), "image embeddings");
    vlm_tensor *te = vlm_anomaly_check(an, vlm_l2_normalize(ctx, tp, 1e-12f), "text embeddings");
    vlm_anomaly_check(an, m->logit_scale, "logit_scale");
    vlm_anomaly_check(an, m->logit_bias, "logit_bias");
    vlm_tensor *loss = vlm_siglip_loss(ctx, te, ie, m->logit_scale, m->logit_bias, match);
    return vlm_anomaly_check(an, loss, "sigmoid loss");
}

char *vlm_run_dir_of(const char *file) {
    char *d = strdup(file);
    if (!d) {
        vlm_set_error("out of memory");
        return NULL;
    }
    char *slash = strrchr(d, '/');
    if (!slash) return strcpy(d, "."), d;
    *slash = 0;
    char *base = strrchr(d, '/');
    if (!strcmp(base ? base + 1 : d, "checkpoints")) {
        if (base) *base = 0;
        else strcpy(d, ".");
    }
    return d;
}

/* libgomp reads OMP_WAIT_POLICY once, when the program loads, and by default
 * its threads spin at every barrier. On a machine whose cores are busy with
 * other work that starves the team: measured with 2 threads on 2 busy cores,
 * steps ran 6x slower than with one thread, and at one thread's speed with
 * OMP_WAIT_POLICY=passive. So the training commands restart themselves once
 * with the passive policy unless the user chose a policy (or a spin count). */
void vlm_prefer_passive_omp(int argc, char **argv) {
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    char **v = calloc((size_t)argc + 2, sizeof *v);
    if (!v) return;
    v[0] = "vlm";
    for (int i = 0; i < argc; i++) v[i + 1] = argv[i];
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", v);
    free(v); /* exec failed: carry on with the default policy */
}
