/* caption.c - what caption fine-tuning feeds a captioner: the prompt as
 * text-tower ids, the teacher-forced caption loss of a loader batch (inputs
 * BOS + caption, targets caption + EOS, padding ignored), and captions as
 * text from generated ids. */
#include "train.h"

#include <stdlib.h>
#include <string.h>

int vlm_caption_io_init(vlm_caption_io *io, vlm_text_encoder *text, const vlm_text_encoder *dec,
                        const char *prompt, int ctx_len) {
    memset(io, 0, sizeof *io);
    io->prompt_len = ctx_len;
    io->dec = dec;
    vlm_text_encoder_specials(dec, &io->bos_id, &io->eos_id, &io->pad_id);
    io->prompt_ids = calloc((size_t)ctx_len, sizeof *io->prompt_ids);
    io->prompt_mask = calloc((size_t)ctx_len, 1);
    if (!io->prompt_ids || !io->prompt_mask) return vlm_set_error("caption: out of memory");
    if (vlm_text_encode(text, prompt, io->prompt_ids, io->prompt_mask, ctx_len) < 0)
        return vlm_set_error("data.prompt \"%s\": %s", prompt, vlm_last_error());
    return 0;
}

void vlm_caption_io_free(vlm_caption_io *io) {
    free(io->prompt_ids);
    free(io->prompt_mask);
    io->prompt_ids = NULL;
    io->prompt_mask = NULL;
}

vlm_gen_opts vlm_caption_gen_opts(const vlm_caption_io *io, int max_tokens) {
    vlm_gen_opts o = vlm_gen_opts_default();
    o.max_tokens = max_tokens;
    o.bos_id = io->bos_id;
    o.eos_id = io->eos_id;
    o.pad_id = io->pad_id >= 0 ? io->pad_id : 0;
    return o;
}

/* The prompt repeated for n rows: ids i32 [n, Tp], mask u8 [n, Tp]. */
static int prompt_rows(vlm_ctx *ctx, const vlm_caption_io *io, int64_t n, vlm_tensor **ids,
                       vlm_tensor **mask) {
    int64_t T = io->prompt_len;
    *ids = vlm_tensor_new(ctx, VLM_I32, 2, (int64_t[]){n, T});
    *mask = vlm_tensor_new(ctx, VLM_U8, 2, (int64_t[]){n, T});
    if (!*ids || !*mask) return -1;
    for (int64_t r = 0; r < n; r++) {
        memcpy((int32_t *)(*ids)->data + r * T, io->prompt_ids, (size_t)T * sizeof(int32_t));
        memcpy((uint8_t *)(*mask)->data + r * T, io->prompt_mask, (size_t)T);
    }
    return 0;
}

/* Teacher forcing over the loader's rows (caption tokens + EOS, then
 * padding, mask 1 on the real ids): inputs [BOS, c_0 .. c_{L-2}], targets
 * [c_0 .. c_{L-1}] with the padding ignored. Only the longest caption of the
 * batch sets L: the columns after it are padding in every row, and under the
 * causal mask they change nothing before them, so cutting them keeps the
 * loss and saves their compute. */
static int caption_rows(vlm_ctx *ctx, const vlm_caption_io *io, const vlm_batch *b,
                        vlm_tensor **in, vlm_tensor **tgt) {
    int64_t n = b->n, W = b->ctx_len, L = 1;
    for (int64_t r = 0; r < n; r++)
        for (int64_t t = W; t > L; t--)
            if (b->mask[r * W + t - 1]) {
                L = t;
                break;
            }
    *in = vlm_tensor_new(ctx, VLM_I32, 2, (int64_t[]){n, L});
    *tgt = vlm_tensor_new(ctx, VLM_I32, 2, (int64_t[]){n, L});
    if (!*in || !*tgt) return -1;
    int32_t *x = (*in)->data, *y = (*tgt)->data;
    for (int64_t r = 0; r < n; r++) {
        const int32_t *ids = b->ids + r * W;
        const uint8_t *mask = b->mask + r * W;
        for (int64_t t = 0; t < L; t++) {
            x[r * L + t] = t == 0 ? io->bos_id : ids[t - 1];
            y[r * L + t] = mask[t] ? ids[t] : VLM_IGNORE_INDEX;
        }
    }
    return 0;
}

vlm_tensor *vlm_caption_batch_loss(vlm_ctx *ctx, const vlm_model *m, const vlm_batch *b,
                                   void *user, vlm_anomaly *an) {
    const vlm_caption_io *io = user;
    if (!b->ids || !b->mask) {
        vlm_set_error("caption loss: the batch has no caption ids (loader without a tokenizer)");
        return NULL;
    }
    int64_t n = b->n, S = b->size;
    vlm_tensor *images = vlm_tensor_from(ctx, VLM_F32, 4, (int64_t[]){n, 3, S, S}, b->pixels);
    vlm_tensor *pids, *pmask, *in, *tgt;
    if (!images || prompt_rows(ctx, io, n, &pids, &pmask) || caption_rows(ctx, io, b, &in, &tgt))
        return NULL;
    vlm_anomaly_check(an, images, "input images");
    /* the prompt's padding is always masked: vlm caption generates that way */
    vlm_tensor *loss = vlm_captioner_loss(ctx, m, images, pids, pmask, in, tgt, true);
    return vlm_anomaly_check(an, loss, "caption loss (cross-entropy on caption tokens + EOS)");
}

int vlm_caption_texts(vlm_ctx *ctx, const vlm_model *m, const vlm_caption_io *io,
                      const float *pixels, int B, const vlm_gen_opts *o, char **out) {
    int Tp = io->prompt_len, M = o->max_tokens;
    int32_t *ids = calloc((size_t)B * Tp, sizeof *ids), *tok = malloc((size_t)B * M * sizeof *tok);
    uint8_t *mask = calloc((size_t)B * Tp, 1);
    int *len = malloc((size_t)B * sizeof *len);
    int rc = ids && tok && mask && len ? 0 : vlm_set_error("caption: out of memory");
    for (int r = 0; !rc && r < B; r++) {
        memcpy(ids + (size_t)r * Tp, io->prompt_ids, (size_t)Tp * sizeof *ids);
        memcpy(mask + (size_t)r * Tp, io->prompt_mask, (size_t)Tp);
    }
    for (int r = 0; r < B; r++) out[r] = NULL;
    if (!rc) rc = vlm_caption_generate(ctx, m, pixels, B, ids, mask, Tp, o, tok, len, NULL);
    for (int r = 0; !rc && r < B; r++)
        if (!(out[r] = vlm_text_encoder_decode(io->dec, tok + (size_t)r * M, len[r]))) rc = -1;
    if (rc)
        for (int r = 0; r < B; r++) free(out[r]), out[r] = NULL;
    free(ids);
    free(tok);
    free(mask);
    free(len);
    return rc;
}
