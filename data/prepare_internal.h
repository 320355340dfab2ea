/* prepare_internal.h - what the `prepare` driver (prepare.c) and the sources
 * (prepare_fmnist.c, prepare_shapes.c, prepare_folder.c, prepare_coco.c)
 * share. Not part of the public API.
 *
 * A source describes N items. The driver walks them in batches: fetch()
 * (sequential: e.g. read the next batch of raw bytes), make() on every item of
 * the batch in parallel (decode / render: must be thread-safe), then, in item
 * order, writes each image to the train or val file and asks captions() for
 * its texts. */
#ifndef VLM_PREPARE_INTERNAL_H
#define VLM_PREPARE_INTERNAL_H

#include "data.h"

#define PREP_BATCH 128
#define PREP_WHY 320 /* = sizeof report.reasons[0] */

/* What make() produces for one item. */
typedef struct {
    vlm_image img;      /* the decoded image at any size (the driver fits it) */
    uint8_t *blob;      /* or: encoded bytes to store as they are (keep-size jpeg) */
    size_t blob_size;
    int status;         /* 0 ok, 1 skip the item (why says why), -1 fail the run */
    char why[PREP_WHY];
} prep_slot;

typedef struct prep_sink prep_sink;

typedef struct {
    char description[512];   /* the `source` attribute */
    int64_t n_items;
    int default_size;
    bool light;              /* make() is cheaper than a thread wake-up: run it serially
                                unless the driver resizes or encodes */
    const char *const *class_names; /* labels are written when n_classes > 0 */
    int n_classes;
    void *ctx;
    int (*fetch)(void *ctx, int64_t first, int count);             /* may be NULL */
    void (*make)(void *ctx, int64_t item, int slot, int size, prep_slot *out);
    int32_t (*label)(void *ctx, int64_t item, int slot);           /* with classes */
    int (*captions)(void *ctx, int64_t item, int slot, prep_sink *s);
} prep_source;

/* Runs the conversion of src with the common options. */
int prep_run(const vlm_prepare_opts *o, const prep_source *src, vlm_prepare_report *r);
/* From captions(): adds a caption of the current item (0 or -1 with error). */
int prep_caption(prep_sink *s, const char *text);
/* A caption or entry that was dropped without failing the run (unless strict):
 * counted in report.ignored_captions, message kept. Returns 0, or -1 under strict. */
int prep_ignore(vlm_prepare_report *r, bool strict, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void prep_note_reason(vlm_prepare_report *r, const char *msg);

/* The thread's last error copied into a slot as a skip (status 1). */
void prep_slot_skip(prep_slot *s);
/* splitmix64 and a per-(seed, stream, item) generator, shared by the sources. */
uint64_t prep_rng_next(uint64_t *state);
uint64_t prep_item_rng(uint64_t seed, uint64_t stream, int64_t item);

/* Per-source entry points (called by vlm_prepare). */
int prep_fashion_mnist(const vlm_prepare_opts *o, vlm_prepare_report *r);
int prep_shapes(const vlm_prepare_opts *o, vlm_prepare_report *r);
int prep_folder(const vlm_prepare_opts *o, vlm_prepare_report *r);
int prep_coco(const vlm_prepare_opts *o, vlm_prepare_report *r);

/* An image-file source shared by folder and coco: item i is the file
 * paths[i] (already joined with the images folder) with the captions
 * caps[cap_start[i] .. cap_start[i + 1]). prep_files_free frees everything. */
typedef struct {
    int64_t n;
    char **paths;       /* [n] */
    int64_t *cap_start; /* [n + 1] */
    char **caps;        /* [cap_start[n]] */
} prep_files;

/* Builds f->cap_start / f->caps from m captions: texts[j] belongs to item
 * item_of[j] (in [0, f->n)); captions keep their order within an item. Takes
 * ownership of the strings (not of the arrays). 0 or -1 (out of memory). */
int prep_files_group(prep_files *f, const int64_t *item_of, char **texts, int64_t m);
/* Leaves out the items without captions (counted as uncaptioned), applies
 * the limit and runs the conversion. */
int prep_files_run(const vlm_prepare_opts *o, prep_files *f, const char *description,
                   vlm_prepare_report *r);
void prep_files_free(prep_files *f);
/* DIR + "/" + rel (rel as is when absolute); malloc'd or NULL (error set). */
char *prep_join(const char *dir, const char *rel);
/* Reads a whole file (NUL-terminated); NULL with an error naming it. */
char *prep_read_file(const char *path, const char *what, size_t *len);
/* Trims ASCII whitespace at both ends, in place; returns s. */
char *prep_trim(char *s);
/* Whether len bytes at s are valid UTF-8 (no NUL inside). */
bool prep_valid_utf8(const char *s, size_t len);

#endif
