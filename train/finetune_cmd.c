/* finetune_cmd.c - `vlm finetune`: caption fine-tuning of a captioner, as a
 * task of the shared run driver (run.c): captions tokenized for the decoder,
 * the prompt for the text tower, the caption loss, and evaluation by greedy
 * captions scored with BLEU and CIDEr-D. */
#include "run.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f) {
    fprintf(f,
            "usage: vlm finetune -c CONFIG [--set KEY=VALUE]... [--resume RUN_DIR|CKPT]\n"
            "                    [--init FILE] [--init-towers PATH] [--init-decoder PATH]\n"
            "                    [--stop-after STEP]\n"
            "\n"
            "Caption fine-tuning of a captioner (model.type \"captioner\"): the image tower,\n"
            "the text tower over a prompt (data.prompt), the fusion block and a LLaMA-style\n"
            "decoder that reads [image tokens; fused prompt tokens; BOS + caption] under a\n"
            "prefix-LM mask. The loss is the cross-entropy of the caption tokens and EOS\n"
            "only. Parts can start from a pretraining run or Hugging Face checkpoints\n"
            "(init.towers, init.decoder: their sizes and tokenizers come along) and any\n"
            "parameter-name prefix can be frozen (train.freeze); the contrastive heads\n"
            "(vision_model.head.*, text_model.head.*, logit_*) get no gradient from this\n"
            "loss and are always frozen. Every train.eval_every steps and at the end, the\n"
            "first data.eval_images images of data.val (all of them at the end) get greedy\n"
            "captions, scored with BLEU-1..4 and CIDEr-D against all their references, with\n"
            "data.eval_samples samples printed next to their references. The run directory\n"
            "holds what vlm pretrain writes plus tokenizer.json (text tower) and\n"
            "decoder_tokenizer.json, so vlm caption / vlm eval --model RUN_DIR work on it.\n"
            "Ctrl-C saves a checkpoint and exits (status 130); --resume continues exactly.\n"
            "\n");
    vlm_run_print_options(f);
    fprintf(f, "\nconfig keys (model.type \"captioner\"):\n");
    vlm_run_cfg_print_keys(f);
    fprintf(f,
            "\nexamples:\n"
            "  vlm prepare shapes --count 42000 --val-fraction 0.05 --seed 1 -o data_cache/shapes.h5\n"
            "  vlm finetune -c configs/finetune-shapes.json\n"
            "  vlm caption --model runs/caption-shapes image.png\n"
            "  # towers from a pretraining run, frozen; a new decoder\n"
            "  vlm finetune -c my.json --init-towers runs/shapes \\\n"
            "      --set 'train.freeze=[\"vision_model.\", \"text_model.\"]'\n"
            "  # SigLIP towers and a SmolLM2 decoder (its tokenizer.json too) from the Hub\n"
            "  vlm finetune -c my.json --init-towers siglip-base-patch16-224/ \\\n"
            "      --init-decoder SmolLM2-135M/ --set train.precision=bf16\n"
            "  vlm finetune --resume runs/caption-shapes\n");
}

typedef struct {
    vlm_text_encoder *dec;
    vlm_caption_io io;
    vlm_caption_evaluator *ev;
} finetune_state;

/* Captions longer than data.caption_len are cut (their EOS is then never
 * learned), which a too small decoder vocabulary causes silently: says so,
 * from the first captions of the training set. */
static void check_caption_len(vlm_run *r, const vlm_text_encoder *dec) {
    enum { SAMPLE = 5000 };
    int L = r->cfg.data.caption_len, longest = 0;
    int64_t n = vlm_dataset_num_captions(r->train_ds), cut = 0;
    if (n > SAMPLE) n = SAMPLE;
    int32_t *ids = malloc((size_t)L * 4 * sizeof *ids);
    uint8_t *mask = malloc((size_t)L * 4);
    for (int64_t j = 0; ids && mask && j < n; j++) {
        char *text = vlm_dataset_read_caption(r->train_ds, j);
        int len = text ? vlm_text_encode((void *)dec, text, ids, mask, 4 * L) : -1;
        free(text);
        if (len > longest) longest = len;
        cut += len > L;
    }
    if (cut)
        fprintf(stderr, "warning: %lld of the first %lld training captions are longer than "
                "data.caption_len %d ids (EOS included; the longest has %d%s): they are cut; "
                "raise data.caption_len or the decoder's vocabulary\n", (long long)cut,
                (long long)n, L, longest, longest >= 4 * L ? " or more" : "");
    free(ids);
    free(mask);
}

static int setup(vlm_run *r, vlm_loader_opts *lo) {
    finetune_state *s = calloc(1, sizeof *s);
    if (!s) return vlm_set_error("out of memory");
    r->task_state = s;
    const vlm_data_cfg *d = &r->cfg.data;
    if (!(s->dec = vlm_run_decoder_tokenizer(&r->cfg, r->cfg.out, r->train_ds)) ||
        vlm_caption_io_init(&s->io, r->enc, s->dec, d->prompt, d->ctx_len))
        return -1;
    check_caption_len(r, s->dec);
    r->loss_user = &s->io;
    lo->tokenize = vlm_text_encode;
    lo->tokenize_user = s->dec;
    lo->ctx_len = d->caption_len;
    if (!r->val_path) return 0;
    vlm_eval_opts eo = vlm_run_eval_opts(&r->cfg);
    s->ev = vlm_caption_evaluator_new(r->val_path, &s->io, &eo, d->caption_len, d->eval_samples);
    return s->ev ? 0 : -1;
}

/* The heads only the contrastive loss uses: without a gradient AdamW's
 * weight decay would still shrink them, and they would take optimizer state. */
static int prepare_model(vlm_run *r, vlm_model *m, bool fresh) {
    (void)r, (void)fresh;
    static const char heads[][VLM_OPTIM_PREFIX_LEN] = {"vision_model.head.", "text_model.head.",
                                                       "logit_scale", "logit_bias"};
    return vlm_freeze_prefixes(m, heads, 4, "contrastive heads");
}

static cJSON *evaluate(vlm_run *r, bool final) {
    finetune_state *s = r->task_state;
    vlm_caption_metrics m;
    int64_t max = final ? 0 : r->cfg.data.eval_images;
    if (vlm_caption_evaluate(s->ev, r->tr.ctx, r->tr.model, max, &m)) return NULL;
    vlm_caption_metrics_print(stdout, &m);
    cJSON *j = vlm_caption_metrics_json(&m);
    vlm_caption_metrics_free(&m);
    if (!j) vlm_set_error("out of memory");
    return j;
}

static void task_free(vlm_run *r) {
    finetune_state *s = r->task_state;
    if (s) {
        vlm_caption_evaluator_free(s->ev);
        vlm_caption_io_free(&s->io);
        vlm_text_encoder_free(s->dec);
    }
    free(s);
    r->task_state = NULL;
}

static const vlm_task finetune_task = {
    .name = "finetune",
    .model_type = "captioner",
    .usage = usage,
    .setup = setup,
    .prepare_model = prepare_model,
    .loss = vlm_caption_batch_loss,
    .evaluate = evaluate,
    .free = task_free,
};

int vlm_cmd_finetune(int argc, char **argv) { return vlm_run_main(&finetune_task, argc, argv); }
