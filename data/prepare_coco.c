/* prepare_coco.c - COCO captions (captions_train2017.json and the like):
 *   {"images": [{"id": 391895, "file_name": "000000391895.jpg", ...}, ...],
 *    "annotations": [{"image_id": 391895, "caption": "A man ...", ...}, ...]}
 * Images keep the order of "images"; each gets all its captions, in the
 * order of "annotations". An annotation of an unknown image id or with an
 * empty caption is dropped and reported; an image without captions is left
 * out; a missing or corrupt image file is skipped (fatal under --strict).
 * Anything else that does not fit the schema stops the run, naming the key. */
#include "prepare_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int64_t id, index;
} id_index;

typedef struct {
    const char *file;
    const vlm_prepare_opts *o;
    vlm_prepare_report *r;
    id_index *ids; /* sorted by id */
    int64_t *item_of;
    char **texts;
    int64_t m;
} coco;

static int by_id(const void *a, const void *b) {
    int64_t x = ((const id_index *)a)->id, y = ((const id_index *)b)->id;
    return x < y ? -1 : x > y;
}

/* obj[key] as an integer id; -1 with an error naming where[i].key. */
static int get_id(const coco *c, const cJSON *obj, const char *where, int64_t i, const char *key,
                  int64_t *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d == floor(d) && fabs(d) < 9e15))
        return vlm_set_error("coco '%s': %s[%lld].%s is %s", c->file, where, (long long)i, key,
                             v ? "not an integer" : "missing");
    *out = (int64_t)d;
    return 0;
}

static const char *get_str(const coco *c, const cJSON *obj, const char *where, int64_t i,
                           const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (cJSON_IsString(v)) return v->valuestring;
    vlm_set_error("coco '%s': %s[%lld].%s is %s", c->file, where, (long long)i, key,
                  v ? "not a string" : "missing");
    return NULL;
}

static int read_images(coco *c, const cJSON *images, prep_files *f) {
    int64_t n = cJSON_GetArraySize(images), i = 0;
    f->paths = calloc((size_t)(n ? n : 1), sizeof *f->paths);
    c->ids = malloc((size_t)(n ? n : 1) * sizeof *c->ids);
    if (!f->paths || !c->ids) return vlm_set_error("coco '%s': out of memory", c->file);
    const cJSON *im;
    cJSON_ArrayForEach(im, images) {
        const char *name = get_str(c, im, "images", i, "file_name");
        if (!name || get_id(c, im, "images", i, "id", &c->ids[i].id)) return -1;
        if (!(f->paths[i] = prep_join(c->o->images_dir, name))) return -1;
        c->ids[i].index = i;
        f->n = ++i;
    }
    qsort(c->ids, (size_t)n, sizeof *c->ids, by_id);
    for (int64_t k = 1; k < n; k++)
        if (c->ids[k].id == c->ids[k - 1].id)
            return vlm_set_error("coco '%s': images[%lld] and images[%lld] share the id %lld", c->file,
                                 (long long)c->ids[k - 1].index, (long long)c->ids[k].index,
                                 (long long)c->ids[k].id);
    return 0;
}

static int add_annotation(coco *c, const cJSON *a, int64_t j, int64_t n_images) {
    id_index key = {0, 0};
    const char *text = get_str(c, a, "annotations", j, "caption");
    if (!text || get_id(c, a, "annotations", j, "image_id", &key.id)) return -1;
    const id_index *hit = bsearch(&key, c->ids, (size_t)n_images, sizeof *c->ids, by_id);
    if (!hit)
        return prep_ignore(c->r, c->o->strict, "coco '%s': annotations[%lld]: image_id %lld is not in "
                           "\"images\"", c->file, (long long)j, (long long)key.id);
    char *t = strdup(text);
    if (!t) return vlm_set_error("coco '%s': out of memory", c->file);
    char *trimmed = prep_trim(t);
    if (!*trimmed) {
        free(t);
        return prep_ignore(c->r, c->o->strict, "coco '%s': annotations[%lld]: empty caption",
                           c->file, (long long)j);
    }
    if (!prep_valid_utf8(trimmed, strlen(trimmed))) {
        free(t);
        return vlm_set_error("coco '%s': annotations[%lld].caption is not valid UTF-8", c->file,
                             (long long)j);
    }
    memmove(t, trimmed, strlen(trimmed) + 1);
    c->item_of[c->m] = hit->index, c->texts[c->m++] = t;
    return 0;
}

static int read_annotations(coco *c, const cJSON *anns, int64_t n_images) {
    int64_t n = cJSON_GetArraySize(anns), j = 0;
    c->item_of = malloc((size_t)(n ? n : 1) * sizeof *c->item_of);
    c->texts = malloc((size_t)(n ? n : 1) * sizeof *c->texts);
    if (!c->item_of || !c->texts) return vlm_set_error("coco '%s': out of memory", c->file);
    const cJSON *a;
    cJSON_ArrayForEach(a, anns) if (add_annotation(c, a, j++, n_images)) return -1;
    return 0;
}

/* Line and column of byte `at` of text, for parse errors. */
static void position(const char *text, const char *at, long *line, long *col) {
    *line = 1, *col = 1;
    for (const char *p = text; p < at; p++) {
        if (*p == '\n') ++*line, *col = 1;
        else ++*col;
    }
}

static cJSON *parse_json(const char *file, const char *buf, size_t len) {
    const char *stop = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &stop, false);
    if (root && stop) { /* cJSON stops after the value: anything but blanks after it is an error */
        while (stop < buf + len && (*stop == ' ' || *stop == '\t' || *stop == '\r' || *stop == '\n')) stop++;
        if (stop < buf + len) {
            cJSON_Delete(root);
            root = NULL;
        }
    }
    if (!root) {
        long line, col;
        position(buf, stop && stop >= buf && stop <= buf + len ? stop : buf, &line, &col);
        vlm_set_error("coco '%s': malformed JSON at line %ld, column %ld", file, line, col);
    }
    return root;
}

static int read_coco(coco *c, const cJSON *root, prep_files *f) {
    const cJSON *images = cJSON_GetObjectItemCaseSensitive(root, "images");
    const cJSON *anns = cJSON_GetObjectItemCaseSensitive(root, "annotations");
    if (!cJSON_IsArray(images) || !cJSON_IsArray(anns))
        return vlm_set_error("coco '%s': \"%s\" is %s (a COCO captions file has \"images\" and "
                             "\"annotations\" lists)", c->file, cJSON_IsArray(images) ? "annotations" : "images",
                             (cJSON_IsArray(images) ? anns : images) ? "not a list" : "missing");
    if (read_images(c, images, f) || read_annotations(c, anns, f->n)) return -1;
    int rc = prep_files_group(f, c->item_of, c->texts, c->m);
    c->m = 0; /* the texts belong to f now */
    return rc;
}

int prep_coco(const vlm_prepare_opts *o, vlm_prepare_report *r) {
    if (!o->annotations || !o->images_dir)
        return vlm_set_error("coco: --annotations FILE and --images DIR are required");
    size_t len;
    char *buf = prep_read_file(o->annotations, "coco annotations", &len);
    if (!buf) return -1;
    cJSON *root = parse_json(o->annotations, buf, len);
    free(buf);
    if (!root) return -1;
    coco c = {.file = o->annotations, .o = o, .r = r};
    prep_files f = {0};
    int rc = cJSON_IsObject(root) ? read_coco(&c, root, &f)
                                  : vlm_set_error("coco '%s': the top level is not a JSON object", c.file);
    cJSON_Delete(root); /* before the long part: the tree is large */
    for (int64_t j = 0; j < c.m; j++) free(c.texts[j]);
    free(c.ids), free(c.item_of), free(c.texts);
    if (!rc) {
        char desc[512];
        snprintf(desc, sizeof desc, "coco %s (images %s)", o->annotations, o->images_dir);
        rc = prep_files_run(o, &f, desc, r);
    }
    prep_files_free(&f);
    return rc;
}
