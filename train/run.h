/* run.h - private to train/: the run driver that `vlm pretrain` and `vlm
 * finetune` share. It parses the common options, resolves the config (file,
 * checkpoint or built-in default, --set overrides, sizes from init sources),
 * owns the run directory (config.json, metrics.jsonl, checkpoints,
 * model.safetensors), builds and initialises the model (init.*, --init,
 * train.freeze), runs the trainer loop with periodic evaluation, checkpoints
 * and a clean stop on Ctrl-C, and resumes exactly. A command supplies a
 * vlm_task: its model type, its help, how its batches are tokenized, its
 * loss and its evaluation. */
#ifndef VLM_TRAIN_RUN_H
#define VLM_TRAIN_RUN_H

#include "runlog.h"

typedef struct vlm_run vlm_run;

typedef struct {
    const char *name;           /* the subcommand: messages, "vlm NAME --resume" */
    const char *model_type;     /* the model.type it trains */
    const char *default_config; /* JSON used without -c and --resume; NULL = -c is required */
    void (*usage)(FILE *f);
    /* Datasets are open and r->enc (the text tower's tokenizer) loaded: set
     * up what the loss needs (r->loss_user) and the loader's tokenizer in lo,
     * and the evaluator when r->val_path is set. */
    int (*setup)(vlm_run *r, vlm_loader_opts *lo);
    /* A model just built (fresh: before init.* and --init are loaded into it;
     * resumed: before the checkpoint is). May set values or freeze. */
    int (*prepare_model)(vlm_run *r, vlm_model *m, bool fresh);
    vlm_loss_fn loss;
    /* Evaluates the model at the current step (final: the end of the run, all
     * of data.val), prints the metrics on stdout and returns them as a JSON
     * object for metrics.jsonl; NULL with error. NULL hook: no evaluation. */
    cJSON *(*evaluate)(vlm_run *r, bool final);
    void (*free)(vlm_run *r); /* releases task_state */
} vlm_task;

struct vlm_run {
    const vlm_task *task;
    vlm_run_cfg cfg;
    char *ckpt;          /* the checkpoint resumed from */
    char *val_path;      /* data.val resolved, NULL = none */
    vlm_dataset *train_ds;
    vlm_text_encoder *enc;
    vlm_loader *loader;
    vlm_trainer tr;
    bool tr_live;
    vlm_runlog log;
    int64_t last_saved;  /* step of the newest checkpoint on disk, -1 = none */
    void *loss_user;     /* passed to task->loss */
    void *task_state;    /* the task's own (evaluator, tokenizers) */
};

/* The options every training command takes, for its --help. */
void vlm_run_print_options(FILE *f);
/* Runs the command: exit status 0, 1 on failure, 2 on bad usage, 130 when
 * interrupted (after saving a checkpoint). */
int vlm_run_main(const vlm_task *task, int argc, char **argv);

#endif
