/* eval_cmd.c - `vlm eval`: the metrics that training logs, for a saved model
 * (a run directory, its model.safetensors or a checkpoint) on a dataset:
 * zero-shot classification and retrieval for a contrastive model (as `vlm
 * pretrain`), BLEU and CIDEr-D of greedy captions for a captioner (as `vlm
 * finetune`). */
#include "train.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm eval --model RUN_DIR|FILE [--dataset D] [options]\n"
            "\n"
            "Evaluates a contrastive model: zero-shot top-1/top-5 (datasets with labels and\n"
            "class names; class vector = mean of the normalised prompt embeddings over the\n"
            "templates) and retrieval R@1/5/10 in both directions. A captioner (a vlm\n"
            "finetune run): greedy captions (data.prompt, at most data.caption_len ids)\n"
            "scored with BLEU-1..4 and CIDEr-D against every reference of each image, and\n"
            "data.eval_samples samples next to their references.\n"
            "\n"
            "options:\n"
            "  --model PATH        a run directory (its model.safetensors, else its newest\n"
            "                      checkpoint) or a .safetensors file written by vlm\n"
            "  --dataset D         an HDF5 dataset or fashion-mnist:test (default: the\n"
            "                      run's data.val)\n"
            "  --config FILE       the run config (default: the file's metadata, or\n"
            "                      RUN_DIR/config.json)\n"
            "  --set KEY=VALUE     override a config key (repeatable), e.g.\n"
            "                      --set data.templates=\"a photo of {}|a drawing of {}\"\n"
            "  --tokenizer FILE    tokenizer.json or spiece.model (default: the run's)\n"
            "  --max-images N      the first N images only\n"
            "  --batch-size N      evaluation batch (default data.eval_batch_size)\n"
            "  --threads N         compute threads (default: the run's train.threads)\n"
            "  --json              print the metrics as one JSON object\n"
            "\n"
            "examples:\n"
            "  vlm eval --model runs/fmnist --dataset fashion-mnist:test\n"
            "  vlm eval --model runs/caption-shapes --dataset data_cache/shapes-val.h5 --json\n");
}

typedef struct {
    const char *model, *dataset, *config, *tokenizer;
    char **sets;
    int n_sets;
    long max_images, batch_size, threads;
    bool json;
} eval_args;

static int parse_long(const char *opt, const char *v, long min, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < min) {
        fprintf(stderr, "error: eval: %s needs an integer >= %ld, got '%s'\n", opt, min, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* One option with a value; 1 if it was one, 0 if not, -1 on a bad value. */
static int take(eval_args *a, int argc, char **argv, int *i) {
    static const char *const opts[] = {"--model", "--dataset", "--config", "--tokenizer", "--set",
                                       "--max-images", "--batch-size", "--threads", NULL};
    int k = 0;
    while (opts[k] && strcmp(argv[*i], opts[k])) k++;
    if (!opts[k]) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "error: eval: %s needs a value\n", argv[*i]);
        return -1;
    }
    const char *v = argv[++*i];
    switch (k) {
    case 0: a->model = v; return 1;
    case 1: a->dataset = v; return 1;
    case 2: a->config = v; return 1;
    case 3: a->tokenizer = v; return 1;
    case 4: a->sets[a->n_sets++] = (char *)v; return 1;
    case 5: return parse_long(opts[k], v, 1, &a->max_images) ? -1 : 1;
    case 6: return parse_long(opts[k], v, 1, &a->batch_size) ? -1 : 1;
    default: return parse_long(opts[k], v, 0, &a->threads) ? -1 : 1;
    }
}

static int parse_args(int argc, char **argv, eval_args *a) {
    memset(a, 0, sizeof *a);
    a->threads = -1;
    if (!(a->sets = calloc((size_t)argc, sizeof *a->sets))) return 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return -1;
        }
        if (!strcmp(argv[i], "--json")) {
            a->json = true;
            continue;
        }
        int t = take(a, argc, argv, &i);
        if (t < 0) return 2;
        if (t == 0) {
            fprintf(stderr, "error: eval: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (!a->model) {
        fprintf(stderr, "error: eval: --model is required\n");
        usage(stderr);
        return 2;
    }
    return 0;
}

/* ---- what to load ------------------------------------------------------------------------ */

typedef struct {
    char *weights, *run_dir;
    vlm_run_cfg cfg;
    vlm_model *model;
    vlm_text_encoder *enc;
    vlm_evaluator *ev;
    /* captioners */
    vlm_text_encoder *dec;
    vlm_caption_io io;
    vlm_caption_evaluator *cev;
    vlm_ctx *ctx;
} eval_state;

static void state_free(eval_state *s) {
    vlm_evaluator_free(s->ev);
    vlm_caption_evaluator_free(s->cev);
    vlm_caption_io_free(&s->io);
    vlm_text_encoder_free(s->dec);
    vlm_text_encoder_free(s->enc);
    vlm_model_free(s->model);
    vlm_ctx_free(s->ctx);
    free(s->weights);
    free(s->run_dir);
}

static int locate(const char *model, eval_state *s) {
    struct stat st;
    if (stat(model, &st)) return vlm_set_error("%s: %s (--model)", model, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        s->weights = strdup(model);
        s->run_dir = vlm_run_dir_of(model);
        return s->weights && s->run_dir ? 0 : vlm_set_error("out of memory");
    }
    s->run_dir = strdup(model);
    size_t n = strlen(model) + 32;
    if (!s->run_dir || !(s->weights = malloc(n))) return vlm_set_error("out of memory");
    snprintf(s->weights, n, "%s/model.safetensors", model);
    if (stat(s->weights, &st) == 0) return 0;
    free(s->weights);
    s->weights = vlm_ckpt_find_latest(model);
    if (!s->weights)
        return vlm_set_error("%s has neither model.safetensors nor a usable checkpoint", model);
    return 0;
}

/* --config, else the weights' vlm.config metadata, else RUN_DIR/config.json. */
static cJSON *config_tree(const eval_args *a, const eval_state *s) {
    if (a->config) return vlm_json_load(a->config);
    vlm_st *st = vlm_st_open(s->weights);
    if (!st) return NULL;
    const char *meta = vlm_st_meta(st, "vlm.config");
    cJSON *root = meta ? cJSON_Parse(meta) : NULL;
    vlm_st_close(st);
    if (root) return root;
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", s->run_dir);
    return vlm_json_load(p);
}

static int resolve(const eval_args *a, eval_state *s) {
    if (locate(a->model, s)) return -1;
    cJSON *root = config_tree(a, s);
    for (int i = 0; root && i < a->n_sets; i++)
        if (vlm_cfg_set(root, a->sets[i])) {
            cJSON_Delete(root);
            return -1;
        }
    if (!root) return -1;
    vlm_run_cfg_defaults(&s->cfg);
    int rc = vlm_run_cfg_bind(root, &s->cfg);
    cJSON_Delete(root);
    vlm_data_cfg *d = &s->cfg.data;
    if (!rc && a->tokenizer) snprintf(d->tokenizer, sizeof d->tokenizer, "%s", a->tokenizer);
    if (!rc && a->batch_size) d->eval_batch_size = (int)a->batch_size;
    if (!rc && a->threads >= 0) s->cfg.train.threads = (int)a->threads;
    return rc ? -1 : vlm_run_cfg_validate(&s->cfg);
}

static bool is_captioner(const eval_state *s) { return !strcmp(s->cfg.model.type, "captioner"); }

/* The evaluator of the model's kind over dataset path. */
static int make_evaluator(eval_state *s, const char *path) {
    vlm_eval_opts eo = vlm_run_eval_opts(&s->cfg);
    if (!is_captioner(s)) return (s->ev = vlm_evaluator_new(path, s->enc, &eo)) ? 0 : -1;
    const vlm_data_cfg *d = &s->cfg.data;
    if (!(s->dec = vlm_run_decoder_tokenizer(&s->cfg, s->run_dir, NULL)) ||
        vlm_caption_io_init(&s->io, s->enc, s->dec, d->prompt, d->ctx_len))
        return -1;
    s->cev = vlm_caption_evaluator_new(path, &s->io, &eo, d->caption_len, d->eval_samples);
    return s->cev ? 0 : -1;
}

static int load(const eval_args *a, eval_state *s) {
    if (!(s->model = vlm_model_new(&s->cfg.model, 0))) return -1;
    vlm_st_load_opts o = {.allow_unexpected = true}; /* a checkpoint's optim.* tensors */
    if (vlm_st_load_params(s->model->params, s->weights, "", &o, NULL)) return -1;
    if (!(s->enc = vlm_run_text_encoder(&s->cfg, s->run_dir, NULL))) return -1;
    const char *spec = a->dataset ? a->dataset : s->cfg.data.val;
    if (!*spec) return vlm_set_error("no dataset: pass --dataset (the run has no data.val)");
    char *path = vlm_resolve_dataset(spec);
    if (!path) return -1;
    int rc = make_evaluator(s, path);
    free(path);
    if (rc || !(s->ctx = vlm_ctx_new(0))) return -1;
    const char *p = s->cfg.train.precision;
    return vlm_ctx_set_precision(s->ctx, !strcmp(p, "bf16")   ? VLM_PREC_BF16
                                         : !strcmp(p, "fp16") ? VLM_PREC_F16
                                                              : VLM_PREC_F32);
}

static void print_json(cJSON *j) {
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    printf("%s\n", txt ? txt : "{}");
    free(txt);
    cJSON_Delete(j);
}

/* Evaluates and prints: one JSON object, or the lines training prints. */
static int evaluate(const eval_args *a, eval_state *s) {
    if (is_captioner(s)) {
        vlm_caption_metrics m;
        if (vlm_caption_evaluate(s->cev, s->ctx, s->model, a->max_images, &m)) return -1;
        if (a->json) print_json(vlm_caption_metrics_json(&m));
        else printf("evaluation of %s:\n", s->weights), vlm_caption_metrics_print(stdout, &m);
        vlm_caption_metrics_free(&m);
        return 0;
    }
    vlm_eval_metrics m;
    if (vlm_evaluate(s->ev, s->ctx, s->model, a->max_images, &m)) return -1;
    if (a->json) print_json(vlm_eval_metrics_json(&m));
    else printf("evaluation of %s:\n", s->weights), vlm_eval_metrics_print(stdout, &m);
    return 0;
}

int vlm_cmd_eval(int argc, char **argv) {
    vlm_prefer_passive_omp(argc, argv);
    eval_args a;
    int st = parse_args(argc, argv, &a);
    if (st) {
        free(a.sets);
        return st < 0 ? 0 : st;
    }
    eval_state s;
    memset(&s, 0, sizeof s);
    if (resolve(&a, &s) || (vlm_set_num_threads(s.cfg.train.threads), load(&a, &s)) ||
        evaluate(&a, &s)) {
        fprintf(stderr, "error: %s (eval)\n", vlm_last_error());
        st = 1;
    }
    state_free(&s);
    free(a.sets);
    return st;
}
