/* textenc.c - texts -> fixed-length id rows for the text tower, with a
 * byte-level BPE (tokenizer.json, possibly trained here on the captions) or
 * SigLIP's SentencePiece model. */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vlm_text_encoder {
    vlm_bpe *bpe;
    vlm_spm *spm;
    int32_t eos; /* BPE: appended when >= 0 */
    int32_t pad;
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The end-of-text id of a BPE vocabulary: the usual spellings, or -1. */
static int32_t bpe_eos(const vlm_bpe *bpe) {
    static const char *const names[] = {"<eos>", "</s>", "<|endoftext|>", NULL};
    for (int i = 0; names[i]; i++) {
        int32_t id = vlm_bpe_token_id(bpe, names[i]);
        if (id >= 0) return id;
    }
    vlm_clear_error();
    return -1;
}

static vlm_text_encoder *wrap(vlm_bpe *bpe, vlm_spm *spm, int pad_id) {
    vlm_text_encoder *e = calloc(1, sizeof *e);
    if (!e) {
        vlm_bpe_free(bpe);
        vlm_spm_free(spm);
        vlm_set_error("tokenizer: out of memory");
        return NULL;
    }
    e->bpe = bpe;
    e->spm = spm;
    e->pad = pad_id;
    e->eos = bpe ? bpe_eos(bpe) : -1;
    return e;
}

vlm_text_encoder *vlm_text_encoder_load(const char *path, int pad_id) {
    if (ends_with(path, ".model")) {
        vlm_spm *spm = vlm_spm_load(path);
        return spm ? wrap(NULL, spm, pad_id) : NULL;
    }
    vlm_bpe *bpe = vlm_bpe_load(path);
    return bpe ? wrap(bpe, NULL, pad_id) : NULL;
}

/* Every caption of ds, read once (the trainer sees each distinct text). */
static char **read_captions(vlm_dataset *ds, int64_t *n_out) {
    int64_t n = vlm_dataset_num_captions(ds);
    char **texts = calloc((size_t)(n ? n : 1), sizeof *texts);
    if (!texts) {
        vlm_set_error("tokenizer: out of memory for %lld captions", (long long)n);
        return NULL;
    }
    for (int64_t j = 0; j < n; j++) {
        if (!(texts[j] = vlm_dataset_read_caption(ds, j))) {
            for (int64_t k = 0; k < j; k++) free(texts[k]);
            free(texts);
            return NULL;
        }
    }
    *n_out = n;
    return texts;
}

vlm_text_encoder *vlm_text_encoder_train(vlm_dataset *ds, int vocab_size, int pad_id,
                                         const char *save_path) {
    int64_t n = 0;
    char **texts = read_captions(ds, &n);
    if (!texts) return NULL;
    static const char *const specials[] = {"<pad>", "<eos>"};
    vlm_bpe_train_opts o = {.vocab_size = vocab_size, .specials = specials, .n_specials = 2,
                            .min_frequency = 2};
    vlm_bpe *bpe = n ? vlm_bpe_train((const char *const *)texts, NULL, (size_t)n, &o) : NULL;
    if (!n) vlm_set_error("tokenizer: the training dataset has no captions to train on");
    for (int64_t j = 0; j < n; j++) free(texts[j]);
    free(texts);
    if (!bpe) return NULL;
    if (save_path && vlm_bpe_save(bpe, save_path)) {
        vlm_bpe_free(bpe);
        return NULL;
    }
    return wrap(bpe, NULL, pad_id);
}

void vlm_text_encoder_free(vlm_text_encoder *e) {
    if (!e) return;
    vlm_bpe_free(e->bpe);
    vlm_spm_free(e->spm);
    free(e);
}

int vlm_text_encoder_vocab(const vlm_text_encoder *e) {
    return e->bpe ? vlm_bpe_vocab_size(e->bpe) : vlm_spm_size(e->spm);
}

static int encode_bpe(const vlm_text_encoder *e, const char *text, int32_t *ids, uint8_t *mask,
                      int ctx_len) {
    int32_t *tok = NULL;
    int n = 0;
    if (vlm_bpe_encode(e->bpe, text, strlen(text), &tok, &n)) return -1;
    int room = e->eos >= 0 ? ctx_len - 1 : ctx_len;
    int keep = n < room ? n : room, len = keep;
    memcpy(ids, tok, (size_t)keep * sizeof *ids);
    free(tok);
    if (e->eos >= 0) ids[len++] = e->eos;
    for (int i = 0; i < ctx_len; i++) {
        if (i >= len) ids[i] = e->pad;
        mask[i] = i < len;
    }
    return len;
}

int vlm_text_encode(void *enc, const char *text, int32_t *ids, uint8_t *mask, int ctx_len) {
    const vlm_text_encoder *e = enc;
    if (e->bpe) return encode_bpe(e, text, ids, mask, ctx_len);
    int len = vlm_siglip_tokenize(e->spm, text, ctx_len, ids);
    if (len < 0) return -1;
    for (int i = 0; i < ctx_len; i++) mask[i] = i < len;
    return len;
}
