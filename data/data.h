/* data.h - images, tokenizers, HDF5 datasets, the loader, `vlm prepare`. */
#ifndef VLM_DATA_H
#define VLM_DATA_H

#include "autograd.h"

/* ---- images ------------------------------------------------------------------ */

/* Images are 8-bit RGB, row-major, height x width x 3, in one malloc'd buffer.
 * Decoding (stb_image: JPEG, PNG, BMP, binary PGM/PPM) turns grey into RGB by
 * repeating the value and DROPS any alpha channel (no compositing: transparent
 * pixels keep their stored colour). 16-bit PNG/PNM is decoded at 16 bits and
 * rounded to 8 (v * 255 / 65535); PGM/PPM samples are scaled from their
 * maxval. EXIF orientation is not applied (neither does PIL's Image.open).
 * All functions are thread-safe. */
typedef struct {
    int width, height;
    uint8_t *rgb; /* height * width * 3 bytes */
} vlm_image;

/* Limits checked BEFORE decoding (against decompression bombs); 0 = default. */
typedef struct {
    size_t max_bytes;   /* encoded size (default 64 MiB) */
    int64_t max_pixels; /* width * height from the header (default 64 Mpixels) */
} vlm_image_limits;

/* Decodes a file / a memory buffer into *out (out->rgb to be freed with
 * vlm_image_free). `name` names the buffer in error messages (NULL = "image").
 * lim may be NULL (defaults). Returns 0, or -1 with an error naming the file
 * and the reason. */
int vlm_image_load(const char *path, const vlm_image_limits *lim, vlm_image *out);
int vlm_image_decode(const void *data, size_t size, const char *name,
                     const vlm_image_limits *lim, vlm_image *out);
void vlm_image_free(vlm_image *img);
/* Allocates an uninitialised width x height image. */
int vlm_image_alloc(vlm_image *img, int width, int height);
/* Checks an encoded image's format, size and header dimensions against the
 * limits without decoding it; width/height may be NULL. 0 or -1 with error. */
int vlm_image_probe(const void *data, size_t size, const char *name,
                    const vlm_image_limits *lim, int *width, int *height);
/* Encodes as baseline JPEG (quality 1..100) into a malloc'd buffer. */
int vlm_image_encode_jpeg(const vlm_image *img, int quality, uint8_t **data, size_t *size);

/* A pixel rectangle: top-left (x, y), size w x h. */
typedef struct {
    int x, y, w, h;
} vlm_rect;

/* Resampling filters as in PIL: bilinear (triangle, support 1) and bicubic
 * (Keys a = -0.5, support 2). Both antialias when shrinking: the filter is
 * stretched by the scale factor, so every source pixel contributes. */
typedef enum { VLM_RESIZE_BILINEAR, VLM_RESIZE_BICUBIC } vlm_resize_filter;

/* Resizes the part of src inside box (NULL = all of it; as if cropped first,
 * like torchvision's resized_crop) to out_w x out_h. The u8 version matches
 * PIL's Image.resize bit for bit (same fixed-point arithmetic, 8-bit
 * intermediate); dst is allocated. The f32 version computes the same in
 * double precision without rounding (both passes clamp to [0, 255], as
 * Pillow's 8-bit intermediate does) and writes HWC floats in [0, 255] to dst
 * (out_h * out_w * 3, caller's buffer). */
int vlm_image_resize(const vlm_image *src, const vlm_rect *box, int out_w, int out_h,
                     vlm_resize_filter filter, vlm_image *dst);
int vlm_image_resize_f32(const vlm_image *src, const vlm_rect *box, int out_w, int out_h,
                         vlm_resize_filter filter, float *dst);
/* Copies box out of src into a new image (dst allocated). */
int vlm_image_crop(const vlm_image *src, vlm_rect box, vlm_image *dst);
/* Mirrors left-right in place. */
void vlm_image_hflip(vlm_image *img);

/* torchvision CenterCrop box: offsets round((w - crop_w) / 2) half to even,
 * like Python. A crop larger than the image is clamped to it (torchvision
 * would pad instead). */
vlm_rect vlm_center_crop_box(int w, int h, int crop_w, int crop_h);
/* torchvision RandomResizedCrop.get_params: up to 10 tries of an area fraction
 * uniform in [scale_min, scale_max] and an aspect ratio (w/h) log-uniform in
 * [ratio_min, ratio_max]; then the central crop closest to the ratio range.
 * Randomness comes only from *rng (splitmix64 state, advanced). Without an
 * rng or with an empty ratio/scale range the whole image is returned. */
vlm_rect vlm_random_resized_crop_box(int w, int h, float scale_min, float scale_max,
                                     float ratio_min, float ratio_max, uint64_t *rng);

/* (pixel / 255 - mean[c]) / std[c] into CHW floats (3 * height * width);
 * std must be > 0. */
int vlm_image_normalize(const vlm_image *img, const float mean[3], const float std[3],
                        float *chw);

/* Eval-time geometry: squash = resize to size x size ignoring the aspect ratio
 * (SigLIP / HF); center_crop = resize the shorter side to size, keeping the
 * aspect ratio, then take the central size x size (CLIP / torchvision). */
typedef enum { VLM_FIT_SQUASH, VLM_FIT_CENTER_CROP } vlm_image_fit;

typedef struct {
    int size;                 /* output is size x size */
    vlm_resize_filter filter;
    vlm_image_fit fit;        /* used when random_resized_crop is off */
    bool random_resized_crop; /* train: random box (scale, ratio) resized to size */
    float scale_min, scale_max;
    float ratio_min, ratio_max;
    bool hflip;               /* train: mirror with probability 1/2 */
    float mean[3], std[3];    /* applied after / 255 */
} vlm_image_opts;

/* SigLIP preprocessing for size x size: bicubic squash, mean = std = 0.5 (so
 * pixels land in [-1, 1]), augmentation off, torchvision's RandomResizedCrop
 * ranges (0.08..1, 3/4..4/3) ready for when it is turned on. */
vlm_image_opts vlm_image_opts_default(int size);
/* Decoded image -> the model's input, CHW f32 [3, size, size] in out.
 * rng (splitmix64 state) is required when an augmentation is on and is
 * advanced, so a seed gives the same augmentation every time. */
int vlm_image_to_input(const vlm_image *img, const vlm_image_opts *opts, uint64_t *rng,
                       float *out);

/* ---- tokenizers ---------------------------------------------------------------- */

/* -- byte-level BPE (GPT-2 / SmolLM2 style, HF tokenizer.json) -- bpe.c, unicode.c
 *
 * Loads what HF tokenizers writes for byte-level BPE: model BPE (vocab; merges
 * as "a b" strings or ["a", "b"] pairs, rank = position), added_tokens,
 * pre_tokenizer ByteLevel alone or last in a Sequence after Digits / Split
 * (Split with a String pattern, or with the GPT-2 pattern as a Regex), decoder
 * ByteLevel, normalizer null. Anything else that would change the ids is an
 * error naming the key, never a different tokenization. Not applied, because
 * they are not tokenization: post_processor, truncation and padding. So
 * encode = HF `encode(text, add_special_tokens=False)`; add <bos>/<eos> with
 * vlm_bpe_token_id(). Unicode classes follow vlm_unicode_version().
 *
 * Encoding: added tokens are cut out first (leftmost-longest; those with
 * normalized=false, then the others, honouring lstrip/rstrip), the rest is
 * pre-tokenized and every piece is merged by lowest rank (ties: leftmost).
 * Pieces are cached, so encoding a corpus costs about one hash lookup per
 * word. Any byte string encodes (invalid UTF-8 bytes are single characters
 * of class "other"), and decode(encode(s)) == s byte for byte whenever the
 * config neither adds nor drops text (no prefix space, no Split "Removed",
 * no lstrip/rstrip tokens, all 256 byte symbols in the vocab), e.g. for
 * vlm_bpe_train's output. Encode and decode are thread-safe. */
typedef struct vlm_bpe vlm_bpe;

/* Reads a tokenizer.json. NULL with an error naming the file and the key on
 * a missing file, malformed JSON or an unsupported / inconsistent config. */
vlm_bpe *vlm_bpe_load(const char *path);
/* The same from JSON text in memory; name is used in error messages. */
vlm_bpe *vlm_bpe_load_json(const char *json, size_t len, const char *name);
void vlm_bpe_free(vlm_bpe *bpe);

/* Encodes len bytes of text into *ids (malloc'd, never NULL on success; free
 * it) and *n. Returns 0, or -1 with error (out of memory). */
int vlm_bpe_encode(const vlm_bpe *bpe, const char *text, size_t len, int32_t **ids, int *n);
/* Bytes of the ids concatenated: vocab tokens through the inverse byte map,
 * added tokens by content (special ones left out when skip_special). The
 * result is malloc'd and NUL-terminated; *len (may be NULL) gets its length,
 * which counts any NUL bytes inside. NULL with error on an unknown id. */
char *vlm_bpe_decode(const vlm_bpe *bpe, const int32_t *ids, int n, bool skip_special,
                     size_t *len);

/* 1 + the largest id (vocab and added tokens). */
int vlm_bpe_vocab_size(const vlm_bpe *bpe);
int vlm_bpe_merge_count(const vlm_bpe *bpe);
/* Id of an added token's content or of a vocab string (as stored, e.g.
 * "Ġthe"); -1 with error when there is none. */
int32_t vlm_bpe_token_id(const vlm_bpe *bpe, const char *token);
/* The string of an id as stored (added content, else the vocab string);
 * NULL for an unused id. */
const char *vlm_bpe_token(const vlm_bpe *bpe, int32_t id);
bool vlm_bpe_is_special(const vlm_bpe *bpe, int32_t id);

/* Byte-level BPE training (HF BpeTrainer semantics):
 *  - ids 0..n_specials-1 are the special tokens (in vocab and in added_tokens,
 *    special=true), then the 256 byte symbols in code point order of their
 *    mapped characters (GPT-2's order: "!" first), then one id per merge;
 *  - texts are pre-tokenized like encode (ByteLevel, GPT-2 pattern, no prefix
 *    space; special tokens in the text are not treated specially) and counted
 *    as words;
 *  - each step merges the most frequent adjacent pair; ties go to the
 *    smallest (left id, right id), so the result does not depend on hashing
 *    or input order; a merge whose string already exists reuses that id;
 *  - training stops at vocab_size ids, or earlier when no pair occurs at least
 *    max(1, min_frequency) times (check vlm_bpe_vocab_size()). */
typedef struct {
    int vocab_size; /* total ids: specials + 256 + merges */
    const char *const *specials;
    int n_specials;
    int min_frequency;
} vlm_bpe_train_opts;

/* Trains on n texts (lens[i] bytes each; lens NULL = NUL-terminated). */
vlm_bpe *vlm_bpe_train(const char *const *texts, const size_t *lens, size_t n,
                       const vlm_bpe_train_opts *opts);
/* Writes tokenizer.json in HF's layout (merges as "a b" strings when no token
 * contains a space). Written to a temporary file, then renamed over path. */
int vlm_bpe_save(const vlm_bpe *bpe, const char *path);

/* Unicode helpers of the pre-tokenizer (unicode.c; tables generated by
 * scripts/gen_unicode_tables.py). */
enum { VLM_UC_OTHER = 0, VLM_UC_LETTER = 1, VLM_UC_NUMBER = 2, VLM_UC_SPACE = 3 };
#define VLM_UTF8_INVALID 0xFFFFFFFFu
/* Decodes the character at s (len >= 1 bytes available) into *cp and returns
 * its length. A byte that does not start a valid shortest-form sequence gives
 * *cp = VLM_UTF8_INVALID and length 1. */
int vlm_utf8_decode(const uint8_t *s, size_t len, uint32_t *cp);
/* VLM_UC_LETTER (category L*), VLM_UC_NUMBER (N*), VLM_UC_SPACE (White_Space)
 * or VLM_UC_OTHER (everything else, VLM_UTF8_INVALID included). */
int vlm_unicode_class(uint32_t cp);
const char *vlm_unicode_version(void);
/* GPT-2's byte <-> printable character map (space -> U+0120 "Ġ");
 * vlm_unicode_to_byte returns -1 for characters outside the map. */
uint32_t vlm_byte_to_unicode(uint8_t b);
int vlm_unicode_to_byte(uint32_t cp);
/* The GPT-2 split: returns the end of the piece that starts at pos < len.
 * Iterate `for (p = 0; p < len; p = e) e = vlm_gpt2_split(t, len, p);`. */
size_t vlm_gpt2_split(const char *text, size_t len, size_t pos);
/* -- end byte-level BPE -- */

/* -- SentencePiece --
 * Reads SentencePiece `.model` files (a serialized sentencepiece ModelProto,
 * e.g. SigLIP's / T5's spiece.model) and encodes and decodes exactly as the
 * sentencepiece library 0.1.97 does with default options (no sampling, no
 * BOS/EOS added): normalisation with the model's precompiled charsmap (nmt_nfkc
 * and custom rules), user-defined symbols, whitespace handling, then Unigram
 * (Viterbi), BPE (merge by piece score), WORD or CHAR segmentation, runs of
 * unknown characters merged into one unk id, or byte fallback. Text is UTF-8;
 * malformed bytes become U+FFFD as in sentencepiece. A loaded model is
 * read-only: every function may be called from several threads at once. */
typedef struct vlm_spm vlm_spm;

typedef enum { VLM_SPM_UNIGRAM = 1, VLM_SPM_BPE = 2, VLM_SPM_WORD = 3, VLM_SPM_CHAR = 4 } vlm_spm_type;
/* Piece types, numbered as in sentencepiece_model.proto. */
typedef enum {
    VLM_SPM_NORMAL = 1, VLM_SPM_UNKNOWN = 2, VLM_SPM_CONTROL = 3,
    VLM_SPM_USER_DEFINED = 4, VLM_SPM_UNUSED = 5, VLM_SPM_BYTE = 6
} vlm_spm_piece_type;

/* Loads a model file / a buffer holding one (`name` names it in errors). A
 * bad file gives NULL and an error naming the file (and for a malformed
 * encoding the field and byte offset), never a crash. */
vlm_spm *vlm_spm_load(const char *path);
vlm_spm *vlm_spm_load_buffer(const void *data, size_t size, const char *name);
void vlm_spm_free(vlm_spm *spm);

/* Encodes NUL-terminated text into *ids (malloc'd; free() it) and *n. An empty
 * or all-blank text gives *n = 0 (and *ids a valid pointer). Returns 0 or -1. */
int vlm_spm_encode(const vlm_spm *spm, const char *text, int32_t **ids, int *n);
/* Decodes ids into a malloc'd NUL-terminated string as sentencepiece's
 * DecodeIds: control ids vanish, unk ids read as " \u2047 " (the model's
 * unk_surface), runs of byte pieces are joined and decoded as UTF-8 (bad bytes
 * -> U+FFFD), U+2581 -> space, the leading space of the dummy prefix is
 * dropped. An id outside [0, size) is an error (NULL). */
char *vlm_spm_decode(const vlm_spm *spm, const int32_t *ids, int n);

int vlm_spm_size(const vlm_spm *spm);                     /* number of pieces */
vlm_spm_type vlm_spm_model_type(const vlm_spm *spm);
const char *vlm_spm_piece(const vlm_spm *spm, int id);    /* NULL if out of range */
float vlm_spm_score(const vlm_spm *spm, int id);          /* 0 if out of range */
int vlm_spm_type_of(const vlm_spm *spm, int id);         /* vlm_spm_piece_type, 0 if out of range */
/* Id of a piece string (control and byte pieces included); unk id if absent. */
int vlm_spm_piece_to_id(const vlm_spm *spm, const char *piece);
/* Special ids as sentencepiece reports them (looked up by the trainer's piece
 * names "<unk>", "<s>", "</s>", "<pad>"); -1 when the model has none. */
int vlm_spm_unk_id(const vlm_spm *spm);
int vlm_spm_bos_id(const vlm_spm *spm);
int vlm_spm_eos_id(const vlm_spm *spm);
int vlm_spm_pad_id(const vlm_spm *spm);

/* SigLIP text preprocessing, big_vision's _canonicalize: "_" -> space, remove
 * ASCII punctuation (Python's string.punctuation), lowercase (Python's
 * str.lower, one-to-one mappings plus U+0130; no final-sigma rule), collapse
 * every run of Unicode whitespace into one space, strip both ends. (HF's
 * SiglipTokenizer.canonicalize_text is the same without the "_" rule and the
 * lowercasing.) Returns a malloc'd string or NULL. */
char *vlm_siglip_canonicalize(const char *text);
#define VLM_SIGLIP_CONTEXT_LEN 64
/* canonicalize -> encode -> append EOS -> pad with EOS (SigLIP's pad id is its
 * EOS, id 1 in spiece.model) to ctx_len ids in out (ctx_len 0 = 64). A text
 * longer than ctx_len - 1 pieces is cut and still ends with EOS, as HF does.
 * Returns the number of ids before padding (EOS included), or -1 (e.g. the
 * model has no EOS piece). */
int vlm_siglip_tokenize(const vlm_spm *spm, const char *text, int ctx_len, int32_t *out);
/* -- end SentencePiece -- */

/* ---- HDF5 datasets ----------------------------------------------------------------- */

/* File layout, format_version 1 (h5py reads and writes it; see dataset.c):
 *   /images         uint8 [N, H, W, 3], chunked one image per chunk    } exactly
 *   /jpeg           vlen uint8 [N]: encoded images (JPEG, PNG, ...)   } one of
 *   /captions       vlen UTF-8 string [M]
 *   /caption_image  int64 [M], index into the N images (several captions per image)
 *   /labels         int32 [N], optional class id in [0, K)
 *   /class_names    vlen string [K], optional
 *   attributes of /: format_version = 1 (int), image_size (int), source (string)
 * Only plain datasets are accepted: no external or soft links, external
 * storage or virtual datasets, no filters but deflate and shuffle. */
typedef enum { VLM_DATASET_RAW, VLM_DATASET_JPEG } vlm_dataset_layout;

/* Reader. Opens read-only and validates every dataset's presence, rank,
 * dims, dtype, storage and index ranges (caption_image in [0, N), labels in
 * [0, K) when class names exist) before returning; each problem is reported
 * by file and dataset name. Debian's libhdf5 is not thread-safe, so every
 * HDF5 call of this module (reader and writer) runs under one process-wide
 * mutex: the loader's threads may read concurrently (JPEG decoding runs
 * outside the lock); other code must not call HDF5 concurrently with it. */
typedef struct vlm_dataset vlm_dataset;

vlm_dataset *vlm_dataset_open(const char *path);
void vlm_dataset_close(vlm_dataset *ds);

int64_t vlm_dataset_num_images(const vlm_dataset *ds);
int64_t vlm_dataset_num_captions(const vlm_dataset *ds);
vlm_dataset_layout vlm_dataset_layout_of(const vlm_dataset *ds);
/* Raw layout: the size of every image; jpeg layout: 0, 0 (sizes vary). */
void vlm_dataset_image_dims(const vlm_dataset *ds, int *height, int *width);
int vlm_dataset_image_size(const vlm_dataset *ds); /* attribute; 0 if absent */
const char *vlm_dataset_source(const vlm_dataset *ds); /* attribute; "" if absent */

/* Image i as RGB u8 into *out (free with vlm_image_free); jpeg blobs are
 * decoded within the default vlm_image_limits. 0 or -1 with error. */
int vlm_dataset_read_image(vlm_dataset *ds, int64_t i, vlm_image *out);
/* Caption j as a malloc'd UTF-8 string, or NULL with error. */
char *vlm_dataset_read_caption(vlm_dataset *ds, int64_t j);
/* Every caption, in order, as malloc'd strings (*n of them); free with
 * vlm_strings_free. NULL with error. */
char **vlm_dataset_read_captions(vlm_dataset *ds, int64_t *n);
void vlm_strings_free(char **s, int64_t n);
/* Image of caption j, or -1 with error when j is out of range. */
int64_t vlm_dataset_caption_image(const vlm_dataset *ds, int64_t j);
bool vlm_dataset_has_labels(const vlm_dataset *ds);
/* Label of image i; -1 (error set) without labels or when i is out of range. */
int32_t vlm_dataset_label(const vlm_dataset *ds, int64_t i);
int vlm_dataset_num_classes(const vlm_dataset *ds); /* K; 0 without /class_names */
const char *vlm_dataset_class_name(const vlm_dataset *ds, int k); /* NULL if out of range */

/* Writer: streams images and captions into extendible chunked datasets, so
 * 60,000 images never sit in memory. By default it writes "<path>.tmp" and
 * renames it to path only when vlm_dataset_writer_close succeeds; abort (or a
 * failed close) deletes the temp file, so a half-written dataset never
 * replaces a good one. */
typedef struct vlm_dataset_writer vlm_dataset_writer;

typedef struct {
    vlm_dataset_layout layout;
    int height, width;  /* raw layout: size of every image (required) */
    int image_size;     /* image_size attribute; 0 = height (raw) / 0 (jpeg) */
    const char *source; /* source attribute; NULL = "" */
    bool labels;        /* write /labels: every image gets a class id >= 0 */
    int jpeg_quality;   /* jpeg layout, add_image: 1..100; 0 = 90 */
    int deflate;        /* raw layout: gzip level 1..9 for /images, 0 = none */
    bool in_place;      /* write path itself (abort deletes it) instead of path.tmp */
} vlm_dataset_writer_opts;

vlm_dataset_writer *vlm_dataset_writer_open(const char *path, const vlm_dataset_writer_opts *opts);
/* Appends an image; label is its class id with opts.labels, else pass -1.
 * The raw layout stores the pixels (the size must be opts height x width),
 * the jpeg layout encodes them. Returns the image index or -1 with error. */
int64_t vlm_dataset_writer_add_image(vlm_dataset_writer *w, const vlm_image *img, int32_t label);
/* Appends an already encoded image (JPEG, PNG, BMP, PGM/PPM): the jpeg layout
 * stores the bytes as they are (after checking they are a decodable image
 * within the default limits), the raw layout decodes them. */
int64_t vlm_dataset_writer_add_encoded(vlm_dataset_writer *w, const void *data, size_t size,
                                       int32_t label);
/* Appends a caption (valid UTF-8) of an image already added. Returns its index. */
int64_t vlm_dataset_writer_add_caption(vlm_dataset_writer *w, const char *text, int64_t image);
/* Writes /class_names (once). Labels must then be < k when the file closes. */
int vlm_dataset_writer_set_class_names(vlm_dataset_writer *w, const char *const *names, int k);
/* Flushes, checks, closes and (by default) renames into place; frees w.
 * On failure the temp file is removed and -1 returned with error. */
int vlm_dataset_writer_close(vlm_dataset_writer *w);
/* Discards everything written (the temp file, or path with in_place); frees w. */
void vlm_dataset_writer_abort(vlm_dataset_writer *w);

/* ---- subcommands ------------------------------------------------------------------- */

/* vlm tokenizer train|encode|decode (tokenizer_cmd.c). Returns the exit status
 * (0, 1 on a failure, 2 on bad usage). */
int vlm_cmd_tokenizer(int argc, char **argv);

/* -- prepare: data sources -> HDF5 dataset files (prepare*.c) --
 * vlm_prepare() converts one source into OUT.h5 (and, with a val fraction,
 * OUT-val.h5), through the dataset writer's temp-file-then-rename mode: a
 * failed, interrupted or --strict-refused run leaves no file behind and never
 * touches an existing one. Items are numbered in source order; the captions
 * drawn for an item and its shapes scene depend only on the seed and that
 * number, so --limit gives a prefix of the full run's items. The val part is
 * exactly round(f * n) of the n items used, drawn with the seed. Images are
 * decoded, resized and encoded on all OpenMP threads and written in item
 * order, so the output does not depend on the thread count. */
typedef enum {
    VLM_PREPARE_FASHION_MNIST, /* Debian's dataset-fashion-mnist idx(.gz) files */
    VLM_PREPARE_SHAPES,        /* synthetic scenes, compositional captions */
    VLM_PREPARE_FOLDER,        /* image folder + TSV / CSV / JSONL captions */
    VLM_PREPARE_COCO           /* COCO captions JSON + image folder */
} vlm_prepare_source;

#define VLM_PREPARE_KEEP_SIZE (-1) /* image_size: store the files as they are (jpeg only) */

typedef struct {
    vlm_prepare_source source;
    const char *output;      /* OUT.h5: the train (or only) part */
    const char *val_output;  /* NULL = vlm_prepare_val_path(output) */
    double val_fraction;     /* [0, 1): exactly round(f * n) items held out */
    int image_size;          /* S x S; 0 = 28 for fashion-mnist, 64 otherwise;
                                VLM_PREPARE_KEEP_SIZE: folder / coco with jpeg */
    bool jpeg;               /* /jpeg blobs instead of raw /images */
    int jpeg_quality;        /* 1..100, 0 = 90 */
    int deflate;             /* raw /images gzip level 0..9 (0 = none) */
    uint64_t seed;           /* split, captions drawn, shapes scenes */
    bool strict;             /* an unreadable image fails the run */
    int64_t limit;           /* first N items only; 0 = all */
    bool progress;           /* progress on stderr (one updating line on a tty) */
    bool (*cancelled)(void); /* polled between batches (e.g. a SIGINT flag); may be NULL */
    /* fashion-mnist */
    const char *dir;         /* NULL = /usr/share/datasets/fashion-mnist */
    const char *split;       /* "train" (default) or "test" */
    int captions_per_image;  /* distinct templates per image, 1..VLM_CLASS_TEMPLATES; 0 = 2 */
    /* shapes */
    int64_t count;
    /* folder and coco */
    const char *images_dir;  /* paths in the captions file are relative to it */
    const char *captions;    /* folder: .tsv, .csv or .jsonl file */
    const char *annotations; /* coco: captions_*.json */
} vlm_prepare_opts;

#define VLM_PREPARE_MAX_REASONS 5

typedef struct {
    int64_t images, captions;         /* written to output */
    int64_t val_images, val_captions; /* written to the val file (0 without one) */
    int64_t skipped;                  /* unreadable images left out (missing, corrupt, ...) */
    int64_t uncaptioned;              /* images left out because no caption names them */
    int64_t ignored_captions;         /* captions dropped: empty, or of an unknown image */
    int n_reasons;                    /* first messages of skipped / ignored entries */
    char reasons[VLM_PREPARE_MAX_REASONS][320];
    int image_size;                   /* as written; 0 = original sizes */
    double seconds;
} vlm_prepare_report;

/* Runs the conversion; r (may be NULL) is filled also on failure. Returns 0,
 * or -1 with an error naming the file (and line / key / index) at fault. */
int vlm_prepare(const vlm_prepare_opts *opts, vlm_prepare_report *r);
/* The default val file of an output: "x/train.h5" -> "x/train-val.h5"
 * ("-val" appended when there is no ".h5"). malloc'd, NULL when out of memory. */
char *vlm_prepare_val_path(const char *output);

/* Class captions, shared by prepare and zero-shot evaluation: "{}" in a
 * template stands for the class phrase, the lower-cased class name after "a"
 * or "an" (by its first letter: a, e, i, o, u -> "an"). */
#define VLM_CLASS_TEMPLATES 8
extern const char *const vlm_class_templates[VLM_CLASS_TEMPLATES];
/* "a photo of {}" + "Ankle boot" -> "a photo of an ankle boot" (malloc'd, or NULL). */
char *vlm_class_caption(const char *tmpl, const char *class_name);
#define VLM_FMNIST_CLASSES 10
extern const char *const vlm_fmnist_class_names[VLM_FMNIST_CLASSES]; /* "T-shirt/top", ... */

/* Synthetic shapes. A scene holds one to three shapes of distinct colours
 * that do not overlap on a plain light-grey background. Caption grammar:
 *   np      := "a " SIZE " " COLOUR " " KIND
 *   rel     := "left of" | "right of" | "above" | "below"
 *   caption := np1
 *            | np1 " " rel(1,2) " " np2
 *            | np1 " " rel(1,2) " " np2 " and " np3 " " rel(3,2) " the " SIZE2 " " COLOUR2 " " KIND2
 * rel(a, b) says where a's centre is relative to b's along the axis on which
 * they are further apart; scenes are drawn so that axis is clear (at least
 * twice the offset on the other one). */
typedef enum { VLM_SHAPE_CIRCLE, VLM_SHAPE_SQUARE, VLM_SHAPE_TRIANGLE } vlm_shape_kind;
#define VLM_SHAPE_KINDS 3
#define VLM_SHAPE_COLORS 6
extern const char *const vlm_shape_kind_names[VLM_SHAPE_KINDS];   /* circle square triangle */
extern const char *const vlm_shape_color_names[VLM_SHAPE_COLORS]; /* red green blue yellow purple orange */
extern const uint8_t vlm_shape_color_rgb[VLM_SHAPE_COLORS][3];

typedef struct {
    vlm_shape_kind kind;
    int color;       /* index into the colour tables */
    bool large;
    float cx, cy;    /* centre (triangles: centroid), pixels from the top-left corner */
    float extent;    /* radius of the bounding circle */
} vlm_shape;

typedef struct {
    int n;
    vlm_shape shapes[3];
    uint8_t background; /* grey level */
} vlm_shape_scene;

/* Scene number `index` of a seed, for size x size images (16..4096). */
int vlm_shape_scene_make(uint64_t seed, int64_t index, int size, vlm_shape_scene *scene);
/* Draws the scene with antialiased edges into *out (allocated). */
int vlm_shape_scene_render(const vlm_shape_scene *scene, int size, vlm_image *out);
/* Writes the caption (at most 160 bytes with its NUL) into buf. */
int vlm_shape_scene_caption(const vlm_shape_scene *scene, char *buf, size_t cap);
/* "left of", "right of", "above" or "below": where a is relative to b. */
const char *vlm_shape_relation(const vlm_shape *a, const vlm_shape *b);

/* vlm prepare SOURCE [options] -o OUT.h5 (prepare_cmd.c). Exit status: 0, 1
 * on a failure, 2 on bad usage, 130 when interrupted. */
int vlm_cmd_prepare(int argc, char **argv);
/* -- end prepare -- */

/* ---- the loader (loader.c) ------------------------------------------------------
 * Training batches from an opened dataset, assembled by background threads
 * while the model trains (PyTorch DataLoader semantics, deterministic).
 *
 * Sampling unit: VLM_SAMPLE_IMAGE visits every image once per epoch, with one
 * of its captions drawn at random (an image without captions gets caption
 * -1 and text ""); VLM_SAMPLE_CAPTION visits every caption once, with its
 * image. The U units of an epoch are ordered by a Fisher-Yates shuffle driven
 * by a splitmix64 stream seeded from (seed, epoch) (identity when sequential).
 *
 * Sharding (DistributedSampler with drop_last): the epoch's order is cut to
 * P * world_size entries, P = U / world_size, and rank r takes entries
 * r, r + world_size, r + 2 * world_size, ... So every rank gets P units, the
 * ranks are disjoint, and the U % world_size units at the end of each
 * epoch's order (different ones every epoch) are left out of that epoch.
 * A rank's P units form ceil(P / batch_size) batches, or floor with drop_last.
 *
 * Determinism: batch k of epoch e is a pure function of (dataset, options,
 * seed, e, k), whatever the thread count, queue depth or timing: samples come
 * from the epoch's order, and each sample's caption draw and augmentation use
 * their own splitmix64 streams seeded from (seed, e, position in the epoch's
 * order). Batches are delivered in order; the stream runs on through epochs
 * without end (batch->epoch / batch->index / batch->last tell where it is).
 *
 * Threads: num_threads workers each take the next sample of the batches
 * being built (read + decode + vlm_image_to_input + tokenize), so all of them
 * work on the oldest batch first. At most queue_depth batches are built ahead
 * of the one the caller holds, each in a preallocated slot: memory is
 * (queue_depth + 1) batches. The loader itself is for one consumer thread. */
typedef enum { VLM_SAMPLE_IMAGE, VLM_SAMPLE_CAPTION } vlm_sample_unit;

/* Writes the ctx_len ids and mask entries (1 = attend, 0 = padding) of text;
 * both arrive zeroed. Runs on several worker threads at once, so it must be
 * thread-safe (vlm_bpe_encode and vlm_spm_encode are). Returns >= 0, or -1
 * with vlm_set_error: the message comes back from vlm_loader_next. */
typedef int (*vlm_tokenize_fn)(void *user, const char *text, int32_t *ids, uint8_t *mask,
                               int ctx_len);

/* A place in the stream: the next batch to deliver is batch `batch` of
 * epoch `epoch` (0-based), 0 <= batch < vlm_loader_batches_per_epoch(). */
typedef struct {
    int64_t epoch, batch;
} vlm_loader_pos;

typedef struct {
    int batch_size;          /* samples per batch, >= 1 */
    vlm_sample_unit unit;
    uint64_t seed;
    bool sequential;         /* no shuffle: the dataset's order (evaluation) */
    bool drop_last;          /* leave out each epoch's last, partial batch */
    int rank, world_size;    /* shard (world_size 0 = 1) */
    vlm_image_opts image;    /* image.size is required; augmentation per its flags */
    vlm_tokenize_fn tokenize; /* NULL = no token ids */
    void *tokenize_user;
    int ctx_len;             /* ids per caption, >= 1 with tokenize */
    int num_threads;         /* worker threads, 0 = 2 */
    int queue_depth;         /* batches built ahead, 0 = 3 */
    vlm_loader_pos start;    /* where to begin (e.g. from a checkpoint) */
} vlm_loader_opts;

/* batch_size, unit image, seed 0, image = vlm_image_opts_default(image_size),
 * the rest zero (2 threads, depth 3, no tokens). */
vlm_loader_opts vlm_loader_opts_default(int batch_size, int image_size);

/* One batch; rows [0, n) of every array are valid. It stays valid until the
 * next vlm_loader_next / vlm_loader_seek / vlm_loader_free. */
typedef struct {
    int n;                   /* batch_size; fewer in an epoch's last batch without drop_last */
    int64_t epoch, index;    /* the index-th batch of epoch */
    bool last;               /* index == batches_per_epoch - 1 */
    int size, ctx_len;       /* image side; ids per row (0 without tokenize) */
    const int64_t *image;    /* [n] image index */
    const int64_t *caption;  /* [n] caption index, -1 for an image without captions */
    const int32_t *label;    /* [n] class id, -1 when the dataset has no labels */
    const float *pixels;     /* [n, 3, size, size] from vlm_image_to_input */
    const char *const *text; /* [n] caption texts */
    const int32_t *ids;      /* [n, ctx_len], NULL without tokenize */
    const uint8_t *mask;     /* [n, ctx_len], NULL without tokenize */
} vlm_batch;

typedef struct vlm_loader vlm_loader;

/* Checks the options (image ones included), indexes the captions and starts
 * the workers at o->start. ds must outlive the loader. NULL with error. */
vlm_loader *vlm_loader_new(vlm_dataset *ds, const vlm_loader_opts *o);
/* The next batch (waiting for it if needed). NULL with an error naming the
 * batch, the sample and its image / caption when a sample failed (e.g. a
 * corrupt JPEG); the position has then moved past that batch, so calling
 * again skips it. */
const vlm_batch *vlm_loader_next(vlm_loader *l);
/* The batch the next vlm_loader_next returns: save it in a checkpoint, and
 * resume with opts.start or vlm_loader_seek to get exactly the batches an
 * uninterrupted run would have produced. */
vlm_loader_pos vlm_loader_position(const vlm_loader *l);
/* Drops the batches built ahead and continues at pos. 0 or -1 with error. */
int vlm_loader_seek(vlm_loader *l, vlm_loader_pos pos);
int64_t vlm_loader_batches_per_epoch(const vlm_loader *l);
int64_t vlm_loader_samples_per_epoch(const vlm_loader *l); /* P: this rank's units */
/* Stops and joins the workers (a sample being processed is finished first). */
void vlm_loader_free(vlm_loader *l);

/* vlm bench loader ... (bench_cmd.c). Exit status: 0, 1 on a failure, 2 on bad usage. */
int vlm_cmd_bench(int argc, char **argv);
/* -- end loader -- */

#endif
