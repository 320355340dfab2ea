/* checkpoint.c - training checkpoints: one safetensors file holding the
 * weights (HF names), the optimizer state as flat tensors and every other
 * piece of run state as metadata (layout in train.h). Written crash-safely by
 * the safetensors writer (temp file, fsync, rename, directory fsync) and
 * guarded by a checksum, so resume can tell a damaged file from a good one
 * and fall back to the previous checkpoint. */
#include "train.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CKPT_DIR "checkpoints"
#define CKPT_FMT "step-%08lld.safetensors"
#define KIND "checkpoint"

char *vlm_ckpt_path(const char *run_dir, int64_t step) {
    size_t n = strlen(run_dir) + 64;
    char *p = malloc(n);
    if (!p) {
        vlm_set_error("checkpoint: out of memory");
        return NULL;
    }
    snprintf(p, n, "%s/" CKPT_DIR "/" CKPT_FMT, run_dir, (long long)step);
    return p;
}

/* ---- checksum ------------------------------------------------------------------- */

/* A 64-bit hash of a byte string, 8 bytes per round (the bytes may be
 * unaligned, so words are memcpy'd). Not cryptographic: it detects damage. */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    const uint64_t k = 0x9E3779B97F4A7C15ULL;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * k;
        h ^= h >> 29;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ULL;
    return h ^ (uint64_t)n;
}

/* Order-independent combination of per-tensor hashes (the writer and the
 * reader list tensors in different orders). */
static uint64_t tensor_hash(const char *name, const void *data, size_t n) {
    return hash_bytes(hash_bytes(0xCBF29CE484222325ULL, name, strlen(name)), data, n);
}

/* ---- saving ------------------------------------------------------------------------ */

static int meta_i64(vlm_st_writer *w, const char *key, int64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)v);
    return vlm_st_writer_meta(w, key, s);
}

static int meta_u64(vlm_st_writer *w, const char *key, uint64_t v) {
    char s[32];
    snprintf(s, sizeof s, "%" PRIu64, v);
    return vlm_st_writer_meta(w, key, s);
}

static int meta_json(vlm_st_writer *w, const char *key, cJSON *j) {
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!s) return vlm_set_error("checkpoint: out of memory");
    int rc = vlm_st_writer_meta(w, key, s);
    free(s);
    return rc;
}

/* Weights and optimizer state into w; returns the checksum through *h. */
static int add_tensors(vlm_st_writer *w, vlm_trainer *t, uint64_t *h) {
    vlm_params *p = t->model->params;
    for (int i = 0; i < vlm_params_count(p); i++) {
        vlm_tensor *x = vlm_params_at(p, i);
        if (vlm_st_writer_add(w, x->name, "F32", x->ndim, x->shape, x->data)) return -1;
        *h += tensor_hash(x->name, x->data, (size_t)x->numel * sizeof(float));
    }
    for (int k = 0; k < vlm_optim_state_count(t->optim); k++) {
        int64_t numel = 0;
        float *s = vlm_optim_state(t->optim, k, &numel);
        char name[128];
        snprintf(name, sizeof name, "optim.%s", vlm_optim_state_name(t->optim, k));
        if (vlm_st_writer_add(w, name, "F32", 1, &numel, s)) return -1;
        *h += tensor_hash(name, s, (size_t)numel * sizeof(float));
    }
    return 0;
}

static int add_meta(vlm_st_writer *w, vlm_trainer *t, uint64_t h) {
    vlm_loader_pos pos = vlm_loader_position(t->loader);
    char scale[32];
    snprintf(scale, sizeof scale, "%.9g", (double)t->scaler.scale);
    if (vlm_st_writer_meta(w, "vlm.kind", KIND) || meta_i64(w, "vlm.step", t->step) ||
        meta_i64(w, "vlm.total_steps", t->total_steps) || meta_i64(w, "vlm.epoch", t->epoch) ||
        meta_i64(w, "vlm.loader_epoch", pos.epoch) || meta_i64(w, "vlm.loader_batch", pos.batch) ||
        meta_i64(w, "vlm.samples", t->samples) || meta_i64(w, "vlm.skipped", t->skipped) ||
        meta_i64(w, "vlm.optim_steps", vlm_optim_steps(t->optim)) ||
        meta_i64(w, "vlm.seed", t->cfg.train.seed) ||
        meta_u64(w, "vlm.rng_dropout", vlm_ctx_rng_state(t->ctx)) ||
        vlm_st_writer_meta(w, "vlm.scaler_scale", scale) ||
        meta_i64(w, "vlm.scaler_good_steps", t->scaler.good_steps) ||
        meta_json(w, "vlm.model_config", vlm_cfg_to_json(vlm_model_cfg_fields, &t->model->cfg)) ||
        meta_json(w, "vlm.config", vlm_run_cfg_to_json(&t->cfg)) ||
        meta_u64(w, "vlm.checksum", h))
        return -1;
    return 0;
}

int vlm_ckpt_save(vlm_trainer *t, const char *path) {
    vlm_st_writer *w = vlm_st_writer_new();
    if (!w) return -1;
    uint64_t h = 0;
    int rc = add_tensors(w, t, &h);
    if (!rc) rc = add_meta(w, t, h);
    if (!rc) rc = vlm_st_writer_save(w, path);
    vlm_st_writer_free(w);
    if (rc) return vlm_set_error("checkpoint %s: %s", path, vlm_last_error());
    return 0;
}

/* ---- reading --------------------------------------------------------------------------- */

static int meta_num(const vlm_st *st, const char *key, int64_t *out) {
    const char *s = vlm_st_meta(st, key);
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || errno || end == s || *end)
        return vlm_set_error("checkpoint %s: metadata %s is %s", vlm_st_path(st), key,
                             s ? "not an integer" : "missing");
    *out = v;
    return 0;
}

static int meta_unum(const vlm_st *st, const char *key, uint64_t *out) {
    const char *s = vlm_st_meta(st, key);
    char *end = NULL;
    errno = 0;
    unsigned long long v = s ? strtoull(s, &end, 10) : 0;
    if (!s || errno || end == s || *end)
        return vlm_set_error("checkpoint %s: metadata %s is %s", vlm_st_path(st), key,
                             s ? "not an unsigned integer" : "missing");
    *out = v;
    return 0;
}

static uint64_t file_checksum(const vlm_st *st) {
    uint64_t h = 0;
    for (int i = 0; i < vlm_st_count(st); i++) {
        size_t n = 0;
        const void *d = vlm_st_data(st, i, &n);
        h += tensor_hash(vlm_st_name(st, i), d, n);
    }
    return h;
}

vlm_st *vlm_ckpt_open(const char *path) {
    vlm_st *st = vlm_st_open(path);
    if (!st) return NULL;
    const char *kind = vlm_st_meta(st, "vlm.kind");
    uint64_t want = 0;
    int rc = 0;
    if (!kind || strcmp(kind, KIND))
        rc = vlm_set_error("checkpoint %s: not a vlm checkpoint (metadata vlm.kind is %s)", path,
                           kind ? kind : "missing");
    if (!rc) rc = meta_unum(st, "vlm.checksum", &want);
    if (!rc && file_checksum(st) != want)
        rc = vlm_set_error("checkpoint %s: checksum mismatch (the file is damaged)", path);
    if (rc) {
        vlm_st_close(st);
        return NULL;
    }
    return st;
}

/* The model config of the checkpoint must be ours; gradient checkpointing
 * is a memory setting that does not change results, so it may differ. */
static int check_model(const vlm_st *st, const vlm_model *m) {
    static const char *const ignore[] = {"model.vision.checkpoint", "model.text.checkpoint",
                                         "model.decoder.checkpoint", NULL};
    const char *s = vlm_st_meta(st, "vlm.model_config");
    cJSON *theirs = s ? cJSON_Parse(s) : NULL;
    cJSON *ours = vlm_cfg_to_json(vlm_model_cfg_fields, &m->cfg);
    int rc = 0;
    char d[512];
    if (!theirs)
        rc = vlm_set_error("checkpoint %s: metadata vlm.model_config is missing or not JSON",
                           vlm_st_path(st));
    else if (!ours)
        rc = -1;
    else if (vlm_json_diff(ours, theirs, "model", ignore, "the config", "the checkpoint", d,
                           sizeof d))
        rc = vlm_set_error("checkpoint %s was written for a different model: %s", vlm_st_path(st),
                           d);
    cJSON_Delete(theirs);
    cJSON_Delete(ours);
    return rc;
}

static int load_optim(vlm_trainer *t, const vlm_st *st) {
    for (int k = 0; k < vlm_optim_state_count(t->optim); k++) {
        int64_t numel = 0;
        float *s = vlm_optim_state(t->optim, k, &numel);
        char name[128];
        snprintf(name, sizeof name, "optim.%s", vlm_optim_state_name(t->optim, k));
        if (vlm_st_find(st, name) < 0)
            return vlm_set_error("checkpoint %s: no optimizer state '%s' (saved by another "
                                 "optimizer?)", vlm_st_path(st), name);
        if (vlm_st_read_f32(st, name, s, numel)) return -1;
    }
    int64_t steps = 0;
    if (meta_num(st, "vlm.optim_steps", &steps)) return -1;
    return vlm_optim_set_steps(t->optim, steps);
}

/* Counters, streams and scaler from the metadata, then the loader position. */
static int load_state(vlm_trainer *t, const vlm_st *st) {
    int64_t step = 0, epoch = 0, lep = 0, lb = 0, samples = 0, skipped = 0, good = 0;
    uint64_t rng = 0;
    if (meta_num(st, "vlm.step", &step) || meta_num(st, "vlm.epoch", &epoch) ||
        meta_num(st, "vlm.loader_epoch", &lep) || meta_num(st, "vlm.loader_batch", &lb) ||
        meta_num(st, "vlm.samples", &samples) || meta_num(st, "vlm.skipped", &skipped) ||
        meta_num(st, "vlm.scaler_good_steps", &good) || meta_unum(st, "vlm.rng_dropout", &rng))
        return -1;
    const char *scale = vlm_st_meta(st, "vlm.scaler_scale");
    char *end = NULL;
    float sc = scale ? strtof(scale, &end) : 0;
    if (!scale || end == scale || *end || !(sc > 0))
        return vlm_set_error("checkpoint %s: metadata vlm.scaler_scale is missing or invalid",
                             vlm_st_path(st));
    if (vlm_loader_seek(t->loader, (vlm_loader_pos){lep, lb}))
        return vlm_set_error("checkpoint %s: %s (was the dataset or batch size changed?)",
                             vlm_st_path(st), vlm_last_error());
    t->step = step;
    t->epoch = epoch;
    t->samples = samples;
    t->skipped = skipped;
    t->scaler.scale = sc;
    t->scaler.good_steps = (int)good;
    vlm_ctx_set_rng_state(t->ctx, rng);
    return 0;
}

int vlm_ckpt_load(vlm_trainer *t, const char *path) {
    vlm_st *st = vlm_ckpt_open(path);
    if (!st) return -1;
    int rc = check_model(st, t->model);
    vlm_st_load_opts o = {.allow_unexpected = true}; /* the optim.* tensors */
    if (!rc) rc = vlm_st_load_params(t->model->params, path, "", &o, NULL);
    if (!rc) rc = load_optim(t, st);
    if (!rc) rc = load_state(t, st);
    vlm_st_close(st);
    return rc;
}

/* ---- the checkpoint directory ----------------------------------------------------------- */

typedef struct {
    int64_t *steps;
    int n;
} step_list;

static int cmp_desc(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Steps of the files named exactly like CKPT_FMT, newest first. Stale
 * temporary files of a crashed save ("...safetensors.tmp.PID") are removed
 * when clean is set. */
static int list_steps(const char *run_dir, bool clean, step_list *out) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/" CKPT_DIR, run_dir);
    out->steps = NULL;
    out->n = 0;
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : vlm_set_error("%s: %s", dir, strerror(errno));
    int cap = 0, rc = 0;
    for (struct dirent *e; (e = readdir(d));) {
        long long s;
        char again[64];
        if (sscanf(e->d_name, "step-%lld.safetensors", &s) != 1 || s < 0) continue;
        snprintf(again, sizeof again, CKPT_FMT, s);
        if (clean && strstr(e->d_name, ".safetensors.tmp.")) {
            char p[4400];
            snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
            unlink(p);
        }
        if (strcmp(again, e->d_name)) continue;
        if (out->n == cap) {
            int64_t *ns = realloc(out->steps, (size_t)(cap = cap ? 2 * cap : 16) * sizeof *ns);
            if (!ns) {
                rc = vlm_set_error("checkpoint: out of memory");
                break;
            }
            out->steps = ns;
        }
        out->steps[out->n++] = s;
    }
    closedir(d);
    if (out->n) qsort(out->steps, (size_t)out->n, sizeof *out->steps, cmp_desc);
    return rc;
}

/* Moves a bad checkpoint out of the way (kept for inspection as *.corrupt). */
static void quarantine(const char *path) {
    char bad[4200];
    snprintf(bad, sizeof bad, "%s.corrupt", path);
    if (rename(path, bad) == 0)
        fprintf(stderr, "warning: renamed it to %s\n", bad);
}

char *vlm_ckpt_find_latest(const char *run_dir) {
    step_list l;
    if (list_steps(run_dir, true, &l)) return NULL;
    for (int i = 0; i < l.n; i++) {
        char *p = vlm_ckpt_path(run_dir, l.steps[i]);
        if (!p) break;
        vlm_st *st = vlm_ckpt_open(p);
        if (st) {
            vlm_st_close(st);
            free(l.steps);
            return p;
        }
        fprintf(stderr, "warning: skipping unusable checkpoint: %s\n", vlm_last_error());
        if (i + 1 < l.n) fprintf(stderr, "warning: falling back to the previous checkpoint\n");
        quarantine(p);
        free(p);
    }
    free(l.steps);
    vlm_set_error("no usable checkpoint in %s/" CKPT_DIR, run_dir);
    return NULL;
}

int vlm_ckpt_prune(const char *run_dir, int keep) {
    step_list l;
    if (list_steps(run_dir, false, &l)) return -1;
    int rc = 0;
    for (int i = keep; i < l.n; i++) {
        char *p = vlm_ckpt_path(run_dir, l.steps[i]);
        if (!p || (unlink(p) && errno != ENOENT)) {
            rc = p ? vlm_set_error("%s: cannot delete (%s)", p, strerror(errno)) : -1;
            free(p);
            break;
        }
        free(p);
    }
    free(l.steps);
    return rc;
}

int vlm_ckpt_count(const char *run_dir) {
    step_list l;
    if (list_steps(run_dir, false, &l)) return -1;
    free(l.steps);
    return l.n;
}
