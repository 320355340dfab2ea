/* run.c - the run driver shared by the training commands (run.h): options,
 * config, run directory, model and its initialisation, the trainer loop with
 * evaluation and checkpoints, Ctrl-C, exact resume, the final model. The
 * trainer core is trainer.c; the progress line and metrics log are runlog.c. */
#include "run.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXIT_INTERRUPTED 130

void vlm_run_print_options(FILE *f) {
    fprintf(f,
            "options:\n"
            "  -c, --config FILE    JSON config: {\"model\", \"train\", \"data\", \"init\", \"out\"}\n"
            "  --set KEY=VALUE      override a key, e.g. --set train.optim.lr=1e-3 (repeatable;\n"
            "                       VALUE is JSON when it parses, else a string)\n"
            "  --resume PATH        continue a run: its directory (newest valid checkpoint)\n"
            "                       or one checkpoint file; without -c the checkpoint's\n"
            "                       config is used\n"
            "  --init FILE          initialise weights from a safetensors file by name (HF\n"
            "                       names; parameters the file lacks keep their values)\n"
            "  --init-towers PATH   = --set init.towers=PATH: image and text towers from a\n"
            "                       pretraining run (directory or .safetensors) or a Hugging\n"
            "                       Face SigLIP model directory / file; sizes come from it\n"
            "  --init-decoder PATH  = --set init.decoder=PATH: a captioner's decoder from a\n"
            "                       Hugging Face Llama/SmolLM2 directory / file (its\n"
            "                       config.json gives the sizes, its tokenizer.json the\n"
            "                       decoder tokenizer)\n"
            "  --stop-after STEP    save a checkpoint and exit 0 once STEP steps are done\n"
            "                       (resume later; the schedule still spans train.steps)\n"
            "  -q, --quiet          no progress line\n");
}

/* ---- arguments ----------------------------------------------------------------------- */

typedef struct {
    const char *config, *resume, *init;
    char **sets;  /* --set values, and --init-* turned into "init.X=<JSON string>" */
    bool *owned;  /* sets[i] was malloc'd here */
    int n_sets;
    long long stop_after;
    bool quiet, init_part;
} run_args;

static void args_free(run_args *a) {
    for (int i = 0; i < a->n_sets; i++)
        if (a->owned[i]) free(a->sets[i]);
    free(a->sets);
    free(a->owned);
}

/* --init-towers PATH -> "init.towers=\"PATH\"" (quoted, so any path stays a string). */
static int add_init_set(run_args *a, const char *key, const char *path) {
    cJSON *s = cJSON_CreateString(path);
    char *q = s ? cJSON_PrintUnformatted(s) : NULL;
    cJSON_Delete(s);
    size_t n = q ? strlen(key) + strlen(q) + 2 : 0;
    char *set = q ? malloc(n) : NULL;
    if (set) snprintf(set, n, "%s=%s", key, q);
    free(q);
    if (!set) return vlm_set_error("out of memory");
    a->owned[a->n_sets] = true;
    a->sets[a->n_sets++] = set;
    a->init_part = true;
    return 0;
}

static int bad_usage(const vlm_task *t, const char *fmt, const char *arg) {
    fprintf(stderr, "error: %s: ", t->name);
    fprintf(stderr, fmt, arg);
    fputc('\n', stderr);
    return 2;
}

/* One option with a value at argv[*i]: 0 taken, 1 not one of them, 2 bad
 * usage, 3 out of memory. */
static int take_value(const vlm_task *t, run_args *a, int argc, char **argv, int *i) {
    static const char *const opts[] = {"-c", "--config", "--set", "--resume", "--init",
                                       "--init-towers", "--init-decoder", "--stop-after", NULL};
    const char *s = argv[*i];
    int k = 0;
    while (opts[k] && strcmp(s, opts[k])) k++;
    if (!opts[k]) return 1;
    if (*i + 1 >= argc) return bad_usage(t, "%s needs a value", s);
    const char *v = argv[++*i];
    char *end;
    switch (k) {
    case 0: case 1: a->config = v; return 0;
    case 2: a->owned[a->n_sets] = false, a->sets[a->n_sets++] = (char *)v; return 0;
    case 3: a->resume = v; return 0;
    case 4: a->init = v; return 0;
    case 5: return add_init_set(a, "init.towers", v) ? 3 : 0;
    case 6: return add_init_set(a, "init.decoder", v) ? 3 : 0;
    default:
        errno = 0;
        a->stop_after = strtoll(v, &end, 10);
        if (errno || end == v || *end || a->stop_after < 1)
            return bad_usage(t, "--stop-after needs a step >= 1, got '%s'", v);
        return 0;
    }
}

/* 0, or the exit status (2 bad usage, -1 help printed, 1 out of memory). */
static int parse_args(const vlm_task *t, int argc, char **argv, run_args *a) {
    memset(a, 0, sizeof *a);
    a->sets = calloc((size_t)argc, sizeof *a->sets);
    a->owned = calloc((size_t)argc, sizeof *a->owned);
    if (!a->sets || !a->owned) return 1;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-h") || !strcmp(s, "--help")) {
            t->usage(stdout);
            return -1;
        }
        if (!strcmp(s, "-q") || !strcmp(s, "--quiet")) {
            a->quiet = true;
            continue;
        }
        int r = take_value(t, a, argc, argv, &i);
        if (r == 3) return fprintf(stderr, "error: out of memory\n"), 1;
        if (r == 2) return 2;
        if (r == 1) {
            bad_usage(t, "unknown argument '%s'", s);
            t->usage(stderr);
            return 2;
        }
    }
    if (a->resume && (a->init || a->init_part))
        return bad_usage(t, "%s",
                         "--init / --init-towers / --init-decoder and --resume exclude each "
                         "other (a resumed run takes its weights from the checkpoint)");
    if (!a->config && !a->resume && !t->default_config)
        return bad_usage(t, "%s", "a config is required: -c CONFIG (or --resume RUN_DIR)");
    return 0;
}

/* ---- the config ---------------------------------------------------------------------- */

/* The config tree: -c FILE, else the resumed checkpoint's, else the default;
 * then the --set overrides. */
static cJSON *config_tree(const vlm_task *t, const run_args *a, const char *ckpt) {
    cJSON *root = NULL;
    if (a->config) {
        root = vlm_json_load(a->config);
    } else if (ckpt) {
        vlm_st *st = vlm_ckpt_open(ckpt);
        const char *s = st ? vlm_st_meta(st, "vlm.config") : NULL;
        if (st && !(root = s ? cJSON_Parse(s) : NULL))
            vlm_set_error("checkpoint %s: metadata vlm.config is missing or not JSON", ckpt);
        vlm_st_close(st);
    } else if (!(root = cJSON_Parse(t->default_config))) {
        vlm_set_error("the built-in default config is not valid JSON");
    }
    for (int i = 0; root && i < a->n_sets; i++)
        if (vlm_cfg_set(root, a->sets[i])) {
            cJSON_Delete(root);
            root = NULL;
        }
    return root;
}

static int resolve_config(const run_args *a, vlm_run *r) {
    char *run_dir = NULL;
    if (a->resume) {
        struct stat st;
        if (stat(a->resume, &st))
            return vlm_set_error("%s: %s (--resume)", a->resume, strerror(errno));
        bool dir = S_ISDIR(st.st_mode);
        r->ckpt = dir ? vlm_ckpt_find_latest(a->resume) : strdup(a->resume);
        run_dir = dir ? strdup(a->resume) : vlm_run_dir_of(a->resume);
        if (!r->ckpt || !run_dir) return free(run_dir), -1;
    }
    cJSON *root = config_tree(r->task, a, r->ckpt);
    int rc = root ? 0 : -1;
    vlm_run_cfg_defaults(&r->cfg);
    if (!rc) rc = vlm_run_cfg_bind(root, &r->cfg);
    cJSON_Delete(root);
    if (!rc && run_dir) { /* a resumed run continues in its own directory */
        if (strlen(run_dir) >= VLM_CFG_STR)
            rc = vlm_set_error("%s: run directory path too long", run_dir);
        else
            strcpy(r->cfg.out, run_dir);
    }
    free(run_dir);
    if (rc || vlm_init_resolve_config(&r->cfg) || vlm_run_cfg_validate(&r->cfg)) return -1;
    if (strcmp(r->cfg.model.type, r->task->model_type))
        return vlm_set_error("config: model.type must be \"%s\" for vlm %s, got \"%s\"",
                             r->task->model_type, r->task->name, r->cfg.model.type);
    return 0;
}

/* A fresh run must not overwrite another run's results. */
static int check_fresh(const char *run_dir) {
    char p[4200];
    snprintf(p, sizeof p, "%s/model.safetensors", run_dir);
    struct stat st;
    int n = vlm_ckpt_count(run_dir);
    if (n < 0) return -1;
    if (n > 0 || stat(p, &st) == 0)
        return vlm_set_error("run directory %s already holds a run: continue it with --resume "
                             "%s, or choose another with --set out=DIR", run_dir, run_dir);
    return 0;
}

/* Text written to path through a temp file + rename (never half a file). */
static int write_atomic(const char *path, const char *text) {
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f) return vlm_set_error("%s: cannot write (%s)", tmp, strerror(errno));
    bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (fclose(f) || !ok || rename(tmp, path)) {
        unlink(tmp);
        return vlm_set_error("%s: cannot write", path);
    }
    return 0;
}

static int write_config(const vlm_run *r) {
    cJSON *j = vlm_run_cfg_to_json(&r->cfg);
    char *s = j ? cJSON_Print(j) : NULL;
    cJSON_Delete(j);
    if (!s) return vlm_set_error("config: out of memory");
    char path[4200];
    snprintf(path, sizeof path, "%s/config.json", r->cfg.out);
    int rc = write_atomic(path, s);
    free(s);
    return rc;
}

/* ---- data, model, trainer ------------------------------------------------------------------ */

/* The loader's options from the config; the task adds its tokenizer. */
static vlm_loader_opts loader_opts(const vlm_run_cfg *c) {
    const vlm_data_cfg *d = &c->data;
    vlm_loader_opts o = vlm_loader_opts_default(c->train.batch_size, d->image_size);
    o.unit = !strcmp(d->sampling, "caption") ? VLM_SAMPLE_CAPTION : VLM_SAMPLE_IMAGE;
    o.seed = (uint64_t)(uint32_t)c->train.seed; /* order and augmentation streams derive from it */
    o.drop_last = true; /* the sigmoid loss sees full batches only; caption steps stay equal */
    o.image.random_resized_crop = d->augment.crop;
    o.image.scale_min = d->augment.scale_min;
    o.image.scale_max = d->augment.scale_max;
    o.image.ratio_min = d->augment.ratio_min;
    o.image.ratio_max = d->augment.ratio_max;
    o.image.hflip = d->augment.hflip;
    memcpy(o.image.mean, d->mean, sizeof o.image.mean);
    memcpy(o.image.std, d->std, sizeof o.image.std);
    o.num_threads = d->loader_threads;
    return o;
}

static int setup_data(vlm_run *r) {
    const vlm_data_cfg *d = &r->cfg.data;
    char *train = vlm_resolve_dataset(d->train);
    if (!train) return -1;
    r->train_ds = vlm_dataset_open(train);
    free(train);
    if (!r->train_ds) return -1;
    if (d->val[0] && !(r->val_path = vlm_resolve_dataset(d->val))) return -1;
    if (!(r->enc = vlm_run_text_encoder(&r->cfg, r->cfg.out, r->train_ds))) return -1;
    vlm_loader_opts lo = loader_opts(&r->cfg);
    if (r->task->setup(r, &lo)) return -1;
    return (r->loader = vlm_loader_new(r->train_ds, &lo)) ? 0 : -1;
}

/* --init: weights by HF name; what the file lacks keeps its initial value. */
static int init_from(vlm_model *m, const char *path) {
    vlm_st_load_opts o = {.allow_missing = true, .allow_unexpected = true};
    vlm_st_load_report rep = {0};
    int rc = vlm_st_load_params(m->params, path, "", &o, &rep);
    if (!rc && rep.n_loaded == 0)
        rc = vlm_set_error("--init %s: no tensor matches a parameter of this model", path);
    if (!rc) {
        fprintf(stderr, "init: %d tensors (%lld values) from %s; %d parameters missing (kept at "
                "their initial values)%s%s; %d tensors of the file unused\n", rep.n_loaded,
                (long long)rep.numel_loaded, path, rep.n_missing, rep.n_missing ? ", e.g. " : "",
                rep.n_missing ? rep.missing[0] : "", rep.n_unexpected);
    }
    vlm_st_load_report_free(&rep);
    return rc;
}

static int64_t run_length(const vlm_run_cfg *c, const vlm_loader *l) {
    if (c->train.steps > 0) return c->train.steps;
    int64_t s = (int64_t)c->train.epochs * vlm_loader_batches_per_epoch(l) / c->train.accum;
    return s > 0 ? s : 1;
}

/* A resumed run with other train/data settings is allowed (extending a run,
 * more threads) but is no longer the same run: say which key differs. */
static void warn_config_change(const vlm_run *r) {
    vlm_st *st = vlm_ckpt_open(r->ckpt);
    const char *s = st ? vlm_st_meta(st, "vlm.config") : NULL;
    cJSON *theirs = s ? cJSON_Parse(s) : NULL, *ours = vlm_run_cfg_to_json(&r->cfg);
    static const char *const ignore[] = {"out", NULL};
    char d[512];
    if (theirs && ours && vlm_json_diff(ours, theirs, "", ignore, "this run", "the checkpoint", d,
                                        sizeof d))
        fprintf(stderr, "warning: the config changed since the checkpoint (%s): the result will "
                        "differ from an uninterrupted run\n", d);
    cJSON_Delete(theirs);
    cJSON_Delete(ours);
    vlm_st_close(st);
}

/* The model: built from the seed, then (fresh runs) init.* and --init,
 * then train.freeze, which must be in place before the optimizer is built. */
static vlm_model *build_model(vlm_run *r, const run_args *a) {
    vlm_model *m = vlm_model_new(&r->cfg.model, (uint64_t)(uint32_t)r->cfg.train.seed);
    bool fresh = !r->ckpt;
    int rc = m ? 0 : -1;
    if (!rc && r->task->prepare_model) rc = r->task->prepare_model(r, m, fresh);
    if (!rc && fresh) rc = vlm_init_load(m, &r->cfg.init);
    if (!rc && fresh && a->init) rc = init_from(m, a->init);
    if (!rc) rc = vlm_freeze_prefixes(m, (const char (*)[VLM_OPTIM_PREFIX_LEN])r->cfg.train.freeze,
                                      r->cfg.train.n_freeze, "train.freeze");
    if (rc) {
        vlm_model_free(m);
        return NULL;
    }
    return m;
}

static int setup_trainer(vlm_run *r, const run_args *a) {
    vlm_model *m = build_model(r, a);
    if (!m) return -1;
    if (vlm_trainer_init(&r->tr, &r->cfg, m, r->loader, run_length(&r->cfg, r->loader),
                         r->task->loss, r->loss_user))
        return -1;
    r->tr_live = true;
    r->last_saved = -1;
    if (r->ckpt) {
        warn_config_change(r);
        if (vlm_ckpt_load(&r->tr, r->ckpt)) return -1;
        r->last_saved = r->tr.step;
        fprintf(stderr, "resumed from %s at step %lld\n", r->ckpt, (long long)r->tr.step);
    }
    return 0;
}

static void print_header(const vlm_run *r) {
    const vlm_trainer *t = &r->tr;
    const vlm_train_cfg *c = &r->cfg.train;
    double epochs = (double)t->total_steps * c->accum /
                    (double)vlm_loader_batches_per_epoch(r->loader);
    int64_t all = vlm_params_numel(t->model->params), trainable = vlm_trainable_numel(t->model);
    char frozen[64] = "";
    if (trainable < all)
        snprintf(frozen, sizeof frozen, " (%lld trainable)", (long long)trainable);
    fprintf(stderr, "%s: %lld parameters%s | %lld images, %lld captions | batch %d x %d | "
            "%lld steps (%.2f epochs) | %s | %d threads | %s\n", r->task->name, (long long)all,
            frozen, (long long)vlm_dataset_num_images(r->train_ds),
            (long long)vlm_dataset_num_captions(r->train_ds), c->batch_size, c->accum,
            (long long)t->total_steps, epochs, c->precision, vlm_num_threads(), r->cfg.out);
}

/* ---- saving and evaluating --------------------------------------------------------------- */

static int save_checkpoint(vlm_run *r) {
    if (r->last_saved == r->tr.step) return 0;
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/checkpoints", r->cfg.out);
    char *path = vlm_ckpt_path(r->cfg.out, r->tr.step);
    int rc = path ? vlm_mkdirs(dir) : -1;
    if (!rc) rc = vlm_ckpt_save(&r->tr, path);
    /* older checkpoints go only once the new one is durable */
    if (!rc) rc = vlm_ckpt_prune(r->cfg.out, r->cfg.train.keep_checkpoints);
    if (!rc) {
        r->last_saved = r->tr.step;
        vlm_runlog_note(&r->log, "checkpoint: %s", path);
    }
    free(path);
    return rc;
}

/* model.safetensors: the weights (HF names, format pt) and, as metadata, the
 * model config and the resolved config without "out", so that the same run
 * in another directory writes the same bytes. */
static int save_model(vlm_run *r) {
    cJSON *cfg = vlm_run_cfg_to_json(&r->cfg);
    cJSON *model = vlm_cfg_to_json(vlm_model_cfg_fields, &r->tr.model->cfg);
    if (cfg) cJSON_DeleteItemFromObjectCaseSensitive(cfg, "out");
    char *cs = cfg ? cJSON_PrintUnformatted(cfg) : NULL;
    char *ms = model ? cJSON_PrintUnformatted(model) : NULL;
    cJSON_Delete(cfg);
    cJSON_Delete(model);
    char step[32], path[4200];
    snprintf(step, sizeof step, "%lld", (long long)r->tr.step);
    snprintf(path, sizeof path, "%s/model.safetensors", r->cfg.out);
    const char *meta[] = {"vlm.kind", "model", "vlm.step", step, "vlm.model_config", ms,
                          "vlm.config", cs, NULL};
    int rc = cs && ms ? vlm_st_save_params(r->tr.model->params, path, meta, NULL)
                      : vlm_set_error("out of memory");
    free(cs);
    free(ms);
    if (!rc) vlm_runlog_note(&r->log, "model: %s", path);
    return rc;
}

static int run_eval(vlm_run *r, bool final) {
    if (!r->task->evaluate || !r->val_path) return 0;
    vlm_runlog_clear(&r->log);
    printf("evaluation at step %lld%s:\n", (long long)r->tr.step, final ? " (final)" : "");
    cJSON *m = r->task->evaluate(r, final);
    fflush(stdout);
    if (!m) return -1;
    vlm_runlog_eval(&r->log, r->tr.step, m, final);
    return 0;
}

/* ---- the loop ---------------------------------------------------------------------------- */

static volatile sig_atomic_t g_interrupted;

static void on_signal(int sig) {
    (void)sig;
    g_interrupted = 1;
}

/* Ctrl-C / SIGTERM set a flag that the loop checks between steps; the
 * handler resets itself, so a second Ctrl-C kills the process at once (a
 * checkpoint being written is then simply not renamed into place). */
static void catch_signals(struct sigaction *old_int, struct sigaction *old_term) {
    struct sigaction sa = {.sa_handler = on_signal, .sa_flags = SA_RESETHAND};
    sigemptyset(&sa.sa_mask);
    g_interrupted = 0;
    sigaction(SIGINT, &sa, old_int);
    sigaction(SIGTERM, &sa, old_term);
}

static bool every(int64_t step, int n) { return n > 0 && step % n == 0; }

/* Steps until the end, --stop-after or a signal. */
static int train_loop(vlm_run *r, long long stop_after) {
    vlm_trainer *t = &r->tr;
    while (t->step < t->total_steps && !g_interrupted && !(stop_after && t->step >= stop_after)) {
        vlm_step_stats st;
        double t0 = vlm_now();
        if (vlm_trainer_step(t, &st)) return -1;
        vlm_runlog_step(&r->log, t, &st, vlm_now() - t0);
        if (t->step == t->total_steps) break;
        if (every(t->step, r->cfg.train.ckpt_every) && save_checkpoint(r)) return -1;
        if (every(t->step, r->cfg.train.eval_every) && run_eval(r, false)) return -1;
    }
    return 0;
}

static int finish(vlm_run *r) {
    vlm_trainer *t = &r->tr;
    if (t->step < t->total_steps) {
        if (save_checkpoint(r)) return 1;
        bool sig = g_interrupted;
        vlm_runlog_note(&r->log, "%s at step %lld of %lld: continue with vlm %s --resume %s",
                        sig ? "interrupted" : "stopped (--stop-after)", (long long)t->step,
                        (long long)t->total_steps, r->task->name, r->cfg.out);
        return sig ? EXIT_INTERRUPTED : 0;
    }
    if (save_checkpoint(r) || save_model(r) || run_eval(r, true)) return 1;
    if (t->skipped)
        vlm_runlog_note(&r->log, "%lld steps were skipped (non-finite loss or gradients)",
                        (long long)t->skipped);
    return 0;
}

static void run_free(vlm_run *r) {
    vlm_runlog_close(&r->log);
    /* The loader first: its workers tokenize with the task's encoders (the
     * decoder's, for finetune) and must be joined before those are freed. */
    vlm_loader_free(r->loader);
    if (r->task->free) r->task->free(r);
    if (r->tr_live) vlm_trainer_free(&r->tr);
    vlm_text_encoder_free(r->enc);
    vlm_dataset_close(r->train_ds);
    free(r->val_path);
    free(r->ckpt);
}

static int fail(const vlm_task *t) {
    fprintf(stderr, "error: %s (%s)\n", vlm_last_error(), t->name);
    return 1;
}

static int setup(vlm_run *r, const run_args *a) {
    vlm_set_num_threads(r->cfg.train.threads);
    if (vlm_mkdirs(r->cfg.out) || (!r->ckpt && check_fresh(r->cfg.out)) || setup_data(r) ||
        write_config(r) || setup_trainer(r, a))
        return -1;
    return vlm_runlog_open(&r->log, r->cfg.out, r->ckpt ? r->tr.step : -1, r->tr.total_steps,
                           r->cfg.train.log_every, a->quiet);
}

int vlm_run_main(const vlm_task *task, int argc, char **argv) {
    vlm_prefer_passive_omp(argc, argv);
    run_args a;
    int st = parse_args(task, argc, argv, &a);
    if (st) {
        args_free(&a);
        return st < 0 ? 0 : st;
    }
    vlm_run r;
    memset(&r, 0, sizeof r);
    r.task = task;
    if (resolve_config(&a, &r) || setup(&r, &a)) {
        st = fail(task);
    } else {
        struct sigaction old_int, old_term;
        print_header(&r);
        catch_signals(&old_int, &old_term);
        st = train_loop(&r, a.stop_after) ? -1 : finish(&r);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        if (st < 0 || st == 1) {
            vlm_runlog_note(&r.log, "error: %s (%s, run directory %s)", vlm_last_error(),
                            task->name, r.cfg.out);
            st = 1;
        }
    }
    run_free(&r);
    args_free(&a);
    return st;
}
