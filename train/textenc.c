/* textenc.c - texts -> fixed-length id rows for the text tower, with a
 * byte-level BPE (tokenizer.json, possibly trained here on the captions) or
 * SigLIP's SentencePiece model; the same for a captioner's decoder (BPE
 * only), whose rows are caption tokens + EOS; and ids back to text. */
#include "train.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vlm_text_encoder {
    vlm_bpe *bpe;
    vlm_spm *spm;
    int32_t eos; /* BPE: appended when >= 0 */
    int32_t pad;
    int32_t bos; /* decoder tokenizers: fed before the caption */
};

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* The id of the first of names that the vocabulary has, or -1. */
static int32_t bpe_first(const vlm_bpe *bpe, const char *const *names) {
    for (int i = 0; names[i]; i++) {
        int32_t id = vlm_bpe_token_id(bpe, names[i]);
        if (id >= 0) return id;
    }
    vlm_clear_error();
    return -1;
}

static const char *const eos_names[] = {"<eos>", "</s>", "<|endoftext|>", NULL};

/* The end-of-text id of a BPE vocabulary: the usual spellings, or -1. */
static int32_t bpe_eos(const vlm_bpe *bpe) { return bpe_first(bpe, eos_names); }

void vlm_decoder_specials(const vlm_bpe *bpe, int32_t *bos, int32_t *eos, int32_t *pad) {
    *eos = bpe_eos(bpe);
    *bos = bpe_first(bpe, (const char *const[]){"<bos>", "<s>", NULL});
    *pad = bpe_first(bpe, (const char *const[]){"<pad>", NULL});
    if (*bos < 0) *bos = *eos; /* GPT-2 style: one token for both */
    if (*pad < 0) *pad = *eos;
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
    e->eos = bpe ? bpe_eos(bpe) : spm ? vlm_spm_eos_id(spm) : -1;
    e->bos = bpe ? e->eos : spm ? vlm_spm_bos_id(spm) : -1;
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

/* A BPE with the given specials trained on ds's captions, saved to save_path. */
static vlm_bpe *train_bpe(vlm_dataset *ds, int vocab_size, const char *const *specials,
                          int n_specials, const char *save_path) {
    int64_t n = 0;
    char **texts = read_captions(ds, &n);
    if (!texts) return NULL;
    vlm_bpe_train_opts o = {.vocab_size = vocab_size, .specials = specials,
                            .n_specials = n_specials, .min_frequency = 2};
    vlm_bpe *bpe = n ? vlm_bpe_train((const char *const *)texts, NULL, (size_t)n, &o) : NULL;
    if (!n) vlm_set_error("tokenizer: the training dataset has no captions to train on");
    for (int64_t j = 0; j < n; j++) free(texts[j]);
    free(texts);
    if (bpe && save_path && vlm_bpe_save(bpe, save_path)) {
        vlm_bpe_free(bpe);
        return NULL;
    }
    return bpe;
}

vlm_text_encoder *vlm_text_encoder_train(vlm_dataset *ds, int vocab_size, int pad_id,
                                         const char *save_path) {
    static const char *const specials[] = {"<pad>", "<eos>"};
    vlm_bpe *bpe = train_bpe(ds, vocab_size, specials, 2, save_path);
    return bpe ? wrap(bpe, NULL, pad_id) : NULL;
}

/* ---- decoder tokenizers ------------------------------------------------------------------ */

static vlm_text_encoder *wrap_decoder(vlm_bpe *bpe, const char *path) {
    int32_t bos, eos, pad;
    vlm_decoder_specials(bpe, &bos, &eos, &pad);
    if (eos < 0) {
        vlm_bpe_free(bpe);
        vlm_set_error("decoder tokenizer %s has no end-of-text token (<eos>, </s> or "
                      "<|endoftext|>): captions could not end", path);
        return NULL;
    }
    vlm_text_encoder *e = wrap(bpe, NULL, pad);
    if (e) e->bos = bos;
    return e;
}

vlm_text_encoder *vlm_decoder_tokenizer_load(const char *path) {
    if (ends_with(path, ".model")) {
        vlm_set_error("decoder tokenizer %s: a captioner's decoder needs a byte-level BPE "
                      "tokenizer.json (SentencePiece models are for the text tower)", path);
        return NULL;
    }
    vlm_bpe *bpe = vlm_bpe_load(path);
    return bpe ? wrap_decoder(bpe, path) : NULL;
}

vlm_text_encoder *vlm_decoder_tokenizer_train(vlm_dataset *ds, int vocab_size,
                                              const char *save_path) {
    static const char *const specials[] = {"<pad>", "<bos>", "<eos>"};
    vlm_bpe *bpe = train_bpe(ds, vocab_size, specials, 3, save_path);
    return bpe ? wrap_decoder(bpe, save_path ? save_path : "(trained)") : NULL;
}

void vlm_text_encoder_specials(const vlm_text_encoder *e, int32_t *bos, int32_t *eos,
                               int32_t *pad) {
    *bos = e->bos;
    *eos = e->eos;
    *pad = e->pad;
}

/* Invalid UTF-8 (an untrained model happily emits half a character) becomes
 * U+FFFD, as HF's decode does (from_utf8_lossy). Returns a new string. */
static char *utf8_lossy(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = malloc(3 * n + 1); /* each bad byte grows to 3 */
    if (!out) {
        vlm_set_error("decode: out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = vlm_utf8_decode((const uint8_t *)s + i, n - i, &cp);
        if (cp == VLM_UTF8_INVALID) {
            memcpy(out + o, "\xEF\xBF\xBD", 3), o += 3;
        } else {
            memcpy(out + o, s + i, (size_t)len), o += (size_t)len;
        }
        i += (size_t)len;
    }
    out[o] = 0;
    return out;
}

char *vlm_tokens_to_text(const vlm_bpe *bpe, const vlm_spm *spm, const int32_t *ids, int n) {
    int32_t *keep = malloc((size_t)(n > 0 ? n : 1) * sizeof *keep);
    if (!keep) {
        vlm_set_error("decode: out of memory");
        return NULL;
    }
    int k = 0;
    for (int i = 0; i < n; i++) {
        bool known = bpe ? vlm_bpe_token(bpe, ids[i]) != NULL
                         : spm && ids[i] >= 0 && ids[i] < vlm_spm_size(spm);
        if (known) keep[k++] = ids[i];
    }
    char *s = bpe ? vlm_bpe_decode(bpe, keep, k, true, NULL)
              : spm ? vlm_spm_decode(spm, keep, k)
                    : (vlm_set_error("decode: no tokenizer"), NULL);
    free(keep);
    char *clean = s && bpe ? utf8_lossy(s) : s; /* sentencepiece already replaces */
    if (clean != s) free(s);
    return clean;
}

char *vlm_text_encoder_decode(const vlm_text_encoder *e, const int32_t *ids, int n) {
    return vlm_tokens_to_text(e->bpe, e->spm, ids, n);
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
