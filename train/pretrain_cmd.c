/* pretrain_cmd.c - `vlm pretrain`: SigLIP contrastive pretraining, as a task
 * of the shared run driver (run.c): captions tokenized for the text tower,
 * the sigmoid loss, zero-shot and retrieval evaluation. */
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "default_config.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm pretrain [-c CONFIG] [--set KEY=VALUE]... [--resume RUN_DIR|CKPT]\n"
            "                    [--init FILE] [--init-towers PATH] [--stop-after STEP]\n"
            "\n"
            "SigLIP contrastive pretraining (sigmoid loss; rows with the same label, or\n"
            "else the same caption, are positives). Writes into the run directory (out):\n"
            "config.json (resolved), metrics.jsonl, checkpoints/step-N.safetensors and,\n"
            "at the end, model.safetensors (HF names). Ctrl-C saves a checkpoint and\n"
            "exits (status 130); --resume continues exactly. Without -c the built-in\n"
            "configs/default.json runs (Fashion-MNIST, prepared into $VLM_DATA_DIR or\n"
            "./data_cache).\n"
            "\n");
    vlm_run_print_options(f);
    fprintf(f, "\nconfig keys (model.type \"siglip\"; the captioner keys are vlm finetune's):\n");
    vlm_run_cfg_print_keys(f);
    fprintf(f, "\nexamples:\n"
               "  vlm pretrain\n"
               "  vlm pretrain -c configs/pretrain-shapes.json --set train.steps=500\n"
               "  vlm pretrain -c my.json --init-towers google/siglip-base-patch16-224 "
               "--set 'train.freeze=[\"vision_model.\"]'\n"
               "  vlm pretrain --resume runs/fmnist\n");
}

typedef struct {
    vlm_evaluator *ev;
} pretrain_state;

static int setup(vlm_run *r, vlm_loader_opts *lo) {
    pretrain_state *s = calloc(1, sizeof *s);
    if (!s) return vlm_set_error("out of memory");
    r->task_state = s;
    r->loss_user = &r->cfg;
    lo->tokenize = vlm_text_encode;
    lo->tokenize_user = r->enc;
    lo->ctx_len = r->cfg.data.ctx_len;
    if (!r->val_path) return 0;
    vlm_eval_opts eo = vlm_run_eval_opts(&r->cfg);
    return (s->ev = vlm_evaluator_new(r->val_path, r->enc, &eo)) ? 0 : -1;
}

/* logit_scale and logit_bias of a fresh run (init.* or --init may replace them). */
static int prepare_model(vlm_run *r, vlm_model *m, bool fresh) {
    (void)fresh;
    if (m->logit_scale && m->logit_bias) {
        vlm_f32(m->logit_scale)[0] = r->cfg.train.init_logit_scale;
        vlm_f32(m->logit_bias)[0] = r->cfg.train.init_logit_bias;
    }
    return 0;
}

static cJSON *evaluate(vlm_run *r, bool final) {
    pretrain_state *s = r->task_state;
    vlm_eval_metrics m;
    int64_t max = final ? 0 : r->cfg.data.eval_images;
    if (vlm_evaluate(s->ev, r->tr.ctx, r->tr.model, max, &m)) return NULL;
    vlm_eval_metrics_print(stdout, &m);
    cJSON *j = vlm_eval_metrics_json(&m);
    if (!j) vlm_set_error("out of memory");
    return j;
}

static void task_free(vlm_run *r) {
    pretrain_state *s = r->task_state;
    if (s) vlm_evaluator_free(s->ev);
    free(s);
    r->task_state = NULL;
}

static const vlm_task pretrain_task = {
    .name = "pretrain",
    .model_type = "siglip",
    .default_config = vlm_default_config,
    .usage = usage,
    .setup = setup,
    .prepare_model = prepare_model,
    .loss = vlm_siglip_batch_loss,
    .evaluate = evaluate,
    .free = task_free,
};

int vlm_cmd_pretrain(int argc, char **argv) { return vlm_run_main(&pretrain_task, argc, argv); }
