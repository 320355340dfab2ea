/* common.c - pieces shared by the training commands and `vlm eval`: the
 * dataset cache for Fashion-MNIST, the run's tokenizers, the SigLIP
 * micro-batch loss and small filesystem helpers. */
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

/* ---- the run's tokenizers ---------------------------------------------------------------- */

int vlm_copy_file(const char *src, const char *dst) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", dst);
    FILE *in = fopen(src, "rb"), *out = in ? fopen(tmp, "wb") : NULL;
    if (!in || !out) {
        if (in) fclose(in);
        return vlm_set_error("cannot copy %s to %s (%s)", src, dst, strerror(errno));
    }
    char buf[65536];
    size_t n;
    bool ok = true;
    while (ok && (n = fread(buf, 1, sizeof buf, in)) > 0) ok = fwrite(buf, 1, n, out) == n;
    ok = ok && !ferror(in);
    fclose(in);
    if (fclose(out) || !ok || rename(tmp, dst)) {
        unlink(tmp);
        return vlm_set_error("cannot copy %s to %s", src, dst);
    }
    return 0;
}

bool vlm_is_dir(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool vlm_is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* "auto": a tokenizer beside init.towers, copied into the run directory under
 * its own name (tokenizer.json or spiece.model), so that the run stands on
 * its own. 1 when one was copied into out, 0 when there is none. */
static int copy_towers_tokenizer(const vlm_run_cfg *cfg, const char *run_dir, char *out,
                                 size_t cap) {
    static const char *const names[] = {"tokenizer.json", "spiece.model", NULL};
    char src[4200];
    if (!cfg->init.towers[0] || strcmp(cfg->data.tokenizer, "auto")) return 0;
    int found = vlm_init_find_file(cfg->init.towers, names, src, sizeof src);
    if (found <= 0) return found;
    size_t n = strlen(src);
    bool spm = n >= 12 && !strcmp(src + n - 12, "spiece.model");
    snprintf(out, cap, "%s/%s", run_dir, spm ? "spiece.model" : "tokenizer.json");
    if (vlm_copy_file(src, out)) return -1;
    fprintf(stderr, "text tokenizer: %s (from init.towers), copied to %s\n", src, out);
    return 1;
}

/* data.tokenizer "train" / "auto": the run directory's own tokenizer. */
static vlm_text_encoder *run_dir_text_encoder(const vlm_run_cfg *cfg, const char *run_dir,
                                              vlm_dataset *ds) {
    const vlm_data_cfg *d = &cfg->data;
    int pad = cfg->model.text.pad_id;
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", run_dir);
    if (vlm_is_file(path)) return vlm_text_encoder_load(path, pad);
    snprintf(path, sizeof path, "%s/spiece.model", run_dir);
    if (vlm_is_file(path)) return vlm_text_encoder_load(path, pad);
    int copied = ds ? copy_towers_tokenizer(cfg, run_dir, path, sizeof path) : 0;
    if (copied < 0) return NULL;
    if (copied) return vlm_text_encoder_load(path, pad);
    snprintf(path, sizeof path, "%s/tokenizer.json", run_dir);
    if (!ds) {
        vlm_set_error("%s: missing (data.tokenizer is \"%s\": the run trains it)", path,
                      d->tokenizer);
        return NULL;
    }
    int vocab = d->vocab_size ? d->vocab_size : cfg->model.text.vocab;
    vlm_text_encoder *e = vlm_text_encoder_train(ds, vocab, pad, path);
    if (e)
        fprintf(stderr, "trained a %d-id BPE tokenizer on the captions: %s\n",
                vlm_text_encoder_vocab(e), path);
    return e;
}

static bool run_owned(const char *spec) { return !strcmp(spec, "train") || !strcmp(spec, "auto"); }

/* A training run keeps a copy of a tokenizer given by path, so that the run
 * directory stands on its own (vlm caption, init.towers of a later run). */
static int keep_copy(const char *spec, const char *run_dir) {
    size_t n = strlen(spec);
    bool spm = n >= 6 && !strcmp(spec + n - 6, ".model");
    char dst[4200];
    snprintf(dst, sizeof dst, "%s/%s", run_dir, spm ? "spiece.model" : "tokenizer.json");
    return strcmp(spec, dst) ? vlm_copy_file(spec, dst) : 0;
}

vlm_text_encoder *vlm_run_text_encoder(const vlm_run_cfg *cfg, const char *run_dir,
                                       vlm_dataset *ds) {
    const vlm_data_cfg *d = &cfg->data;
    vlm_text_encoder *e = run_owned(d->tokenizer)
                              ? run_dir_text_encoder(cfg, run_dir, ds)
                              : vlm_text_encoder_load(d->tokenizer, cfg->model.text.pad_id);
    if (e && ds && !run_owned(d->tokenizer) && keep_copy(d->tokenizer, run_dir)) {
        vlm_text_encoder_free(e);
        return NULL;
    }
    if (e && vlm_text_encoder_vocab(e) > cfg->model.text.vocab) {
        vlm_set_error("the tokenizer has %d ids but model.text.vocab is %d",
                      vlm_text_encoder_vocab(e), cfg->model.text.vocab);
        vlm_text_encoder_free(e);
        return NULL;
    }
    return e;
}

/* data.decoder_tokenizer "train" / "auto" (path: run_dir/decoder_tokenizer.json). */
static vlm_text_encoder *run_dir_decoder_tokenizer(const vlm_run_cfg *cfg, const char *path,
                                                   vlm_dataset *ds) {
    const char *spec = cfg->data.decoder_tokenizer;
    if (vlm_is_file(path)) return vlm_decoder_tokenizer_load(path);
    char src[4200];
    int found = !strcmp(spec, "auto") && cfg->init.decoder[0] && ds
                    ? vlm_init_find_file(cfg->init.decoder,
                                         (const char *const[]){"tokenizer.json", NULL}, src,
                                         sizeof src)
                    : 0;
    if (found < 0 || (found && vlm_copy_file(src, path))) return NULL;
    if (found) {
        fprintf(stderr, "decoder tokenizer: %s (from init.decoder), copied to %s\n", src, path);
        return vlm_decoder_tokenizer_load(path);
    }
    if (!ds) {
        vlm_set_error("%s: missing (data.decoder_tokenizer is \"%s\": the run writes it)", path,
                      spec);
        return NULL;
    }
    vlm_text_encoder *e = vlm_decoder_tokenizer_train(ds, cfg->model.decoder.vocab, path);
    if (e)
        fprintf(stderr, "trained a %d-id BPE decoder tokenizer on the captions: %s\n",
                vlm_text_encoder_vocab(e), path);
    return e;
}

vlm_text_encoder *vlm_run_decoder_tokenizer(const vlm_run_cfg *cfg, const char *run_dir,
                                            vlm_dataset *ds) {
    const char *spec = cfg->data.decoder_tokenizer;
    char path[4200];
    snprintf(path, sizeof path, "%s/decoder_tokenizer.json", run_dir);
    vlm_text_encoder *e;
    if (run_owned(spec) || (!ds && vlm_is_file(path))) {
        /* evaluating a run: its own copy, whatever the file it came from */
        e = run_dir_decoder_tokenizer(cfg, path, ds);
    } else {
        e = vlm_decoder_tokenizer_load(spec);
        /* a training run keeps a copy where `vlm caption` looks for it */
        if (e && ds && strcmp(spec, path) && vlm_copy_file(spec, path)) {
            vlm_text_encoder_free(e);
            return NULL;
        }
    }
    if (e && vlm_text_encoder_vocab(e) > cfg->model.decoder.vocab) {
        vlm_set_error("the decoder tokenizer has %d ids but model.decoder.vocab is %d",
                      vlm_text_encoder_vocab(e), cfg->model.decoder.vocab);
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
