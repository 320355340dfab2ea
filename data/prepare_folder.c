/* prepare_folder.c - a folder of images with a captions file, and the
 * image-file source it shares with COCO.
 *
 * Captions files, chosen by extension:
 *   .tsv    path<TAB>caption per line (the caption is everything after the
 *           first TAB)
 *   .csv    path,caption per record, RFC 4180: fields may be "quoted", with
 *           "" for a quote, and may then hold commas and newlines
 *   .jsonl  one object per line: {"image": path, "caption": text} ("text"
 *           instead of "caption" works too; either may be a list of texts)
 * Blank lines are skipped. A first TSV / CSV line that reads like a header
 * (image|path|file|file_name|filename, caption|text) is skipped. Paths are
 * relative to the images folder (absolute ones are used as they are). The
 * same path on several lines is one image with several captions, in file
 * order; images are numbered by their first line. Captions are trimmed; an
 * empty one is dropped and reported (fatal under --strict). A syntax error,
 * a missing key or a caption that is not UTF-8 stops the run with the file
 * and line. */
#include "prepare_internal.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define MAX_CAPTIONS_FILE ((size_t)4 << 30)
#define MAX_IMAGE_FILE ((size_t)64 << 20) /* = the image module's default limit */

/* ---- helpers shared with prepare_coco.c ------------------------------------- */

char *prep_read_file(const char *path, const char *what, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        vlm_set_error("%s '%s': cannot open (%s)", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
        vlm_set_error("%s '%s': not a regular file", what, path);
    } else if ((uint64_t)st.st_size >= MAX_CAPTIONS_FILE) {
        vlm_set_error("%s '%s': %lld bytes is too large", what, path, (long long)st.st_size);
    } else if (!(buf = malloc((size_t)st.st_size + 1))) {
        vlm_set_error("%s '%s': out of memory for %lld bytes", what, path, (long long)st.st_size);
    } else if (fread(buf, 1, (size_t)st.st_size, f) != (size_t)st.st_size) {
        vlm_set_error("%s '%s': read failed (%s)", what, path, ferror(f) ? strerror(errno) : "file shrank");
        free(buf);
        buf = NULL;
    } else {
        buf[st.st_size] = 0;
        *len = (size_t)st.st_size;
    }
    fclose(f);
    return buf;
}

char *prep_trim(char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) n--;
    s[n] = 0;
    return s;
}

bool prep_valid_utf8(const char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        int k = vlm_utf8_decode((const uint8_t *)s + i, len - i, &cp);
        if (cp == VLM_UTF8_INVALID || cp == 0) return false;
        i += (size_t)k;
    }
    return true;
}

char *prep_join(const char *dir, const char *rel) {
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (!p) {
        vlm_set_error("prepare: out of memory");
        return NULL;
    }
    if (rel[0] == '/' || !*dir) snprintf(p, n, "%s", rel);
    else snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", rel);
    return p;
}

/* ---- the image-file source ---------------------------------------------------- */

int prep_files_group(prep_files *f, const int64_t *item_of, char **texts, int64_t m) {
    f->cap_start = calloc((size_t)f->n + 1, sizeof *f->cap_start);
    f->caps = malloc((size_t)(m ? m : 1) * sizeof *f->caps);
    int64_t *cursor = malloc((size_t)(f->n ? f->n : 1) * sizeof *cursor);
    if (!f->cap_start || !f->caps || !cursor) {
        free(cursor);
        for (int64_t j = 0; j < m; j++) free(texts[j]);
        return vlm_set_error("prepare: out of memory for %lld captions", (long long)m);
    }
    for (int64_t j = 0; j < m; j++) f->cap_start[item_of[j] + 1]++;
    for (int64_t i = 0; i < f->n; i++) f->cap_start[i + 1] += cursor[i] = f->cap_start[i];
    for (int64_t j = 0; j < m; j++) f->caps[cursor[item_of[j]]++] = texts[j];
    free(cursor);
    return 0;
}

void prep_files_free(prep_files *f) {
    for (int64_t i = 0; f->paths && i < f->n; i++) free(f->paths[i]);
    for (int64_t j = 0; f->caps && f->cap_start && j < f->cap_start[f->n]; j++) free(f->caps[j]);
    free(f->paths), free(f->cap_start), free(f->caps);
    memset(f, 0, sizeof *f);
}

/* Reads at most MAX_IMAGE_FILE bytes of an image file into a blob. */
static int read_blob(const char *path, prep_slot *out) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return vlm_set_error("image '%s': cannot open (%s)", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode) || st.st_size <= 0)
        rc = vlm_set_error("image '%s': not a regular, non-empty file", path);
    else if ((uint64_t)st.st_size > MAX_IMAGE_FILE)
        rc = vlm_set_error("image '%s': %lld bytes is over the limit", path, (long long)st.st_size);
    else if (!(out->blob = malloc((size_t)st.st_size)))
        rc = vlm_set_error("image '%s': out of memory", path);
    else if (fread(out->blob, 1, (size_t)st.st_size, fp) != (size_t)st.st_size)
        rc = vlm_set_error("image '%s': read failed", path);
    else
        out->blob_size = (size_t)st.st_size;
    fclose(fp);
    return rc;
}

/* Keep-size mode stores the file's bytes, after a full decode proves them sound. */
static void files_make(void *ctx, int64_t item, int slot, int size, prep_slot *out) {
    (void)slot;
    const char *path = ((prep_files *)ctx)->paths[item];
    if (size != VLM_PREPARE_KEEP_SIZE) {
        if (vlm_image_load(path, NULL, &out->img)) prep_slot_skip(out);
        return;
    }
    vlm_image img;
    if (read_blob(path, out) || vlm_image_decode(out->blob, out->blob_size, path, NULL, &img)) {
        prep_slot_skip(out);
        free(out->blob);
        out->blob = NULL;
        return;
    }
    vlm_image_free(&img);
}

static int files_captions(void *ctx, int64_t item, int slot, prep_sink *s) {
    (void)slot;
    prep_files *f = ctx;
    for (int64_t j = f->cap_start[item]; j < f->cap_start[item + 1]; j++)
        if (prep_caption(s, f->caps[j])) return -1;
    return 0;
}

/* Drops the items without captions. Their captions range is empty, so the
 * captions array stays as it is and only the starts move. */
static void drop_uncaptioned(prep_files *f, vlm_prepare_report *r) {
    int64_t k = 0;
    for (int64_t i = 0; i < f->n; i++) {
        if (f->cap_start[i + 1] == f->cap_start[i]) {
            char msg[PREP_WHY];
            snprintf(msg, sizeof msg, "image '%s': no caption", f->paths[i]);
            prep_note_reason(r, msg);
            r->uncaptioned++;
            free(f->paths[i]);
            continue;
        }
        f->paths[k] = f->paths[i];
        f->cap_start[k++] = f->cap_start[i];
    }
    f->cap_start[k] = f->cap_start[f->n];
    f->n = k;
}

int prep_files_run(const vlm_prepare_opts *o, prep_files *f, const char *description,
                   vlm_prepare_report *r) {
    drop_uncaptioned(f, r);
    prep_source src = {.n_items = f->n, .default_size = 64, .ctx = f, .make = files_make,
                       .captions = files_captions};
    snprintf(src.description, sizeof src.description, "%s", description);
    return prep_run(o, &src, r);
}

/* ---- collecting (path, caption) pairs ----------------------------------------- */

/* Distinct paths in order of first appearance (found again through an
 * open-addressing hash table) and every caption with its path's number. */
typedef struct {
    const char *file; /* the captions file, for messages */
    const vlm_prepare_opts *o;
    vlm_prepare_report *r;
    char **paths;
    int64_t n, n_cap;
    int64_t *table; /* path number + 1; 0 = empty */
    size_t mask;
    int64_t *item_of;
    char **texts;
    int64_t m, m_cap;
} collector;

static uint64_t hash_str(const char *s) {
    uint64_t h = 0xcbf29ce484222325ULL; /* FNV-1a */
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 0x100000001b3ULL;
    return h;
}

static int grow_table(collector *c) {
    size_t size = c->mask ? 2 * (c->mask + 1) : 1024;
    int64_t *t = calloc(size, sizeof *t);
    if (!t) return -1;
    for (int64_t i = 0; i < c->n; i++) {
        size_t h = hash_str(c->paths[i]) & (size - 1);
        while (t[h]) h = (h + 1) & (size - 1);
        t[h] = i + 1;
    }
    free(c->table);
    c->table = t, c->mask = size - 1;
    return 0;
}

/* The number of path (added when new), or -1 when out of memory. */
static int64_t path_number(collector *c, const char *path) {
    if ((size_t)c->n * 2 >= c->mask && grow_table(c)) return -1;
    size_t h = hash_str(path) & c->mask;
    for (; c->table[h]; h = (h + 1) & c->mask)
        if (!strcmp(c->paths[c->table[h] - 1], path)) return c->table[h] - 1;
    if (c->n == c->n_cap) {
        int64_t cap = c->n_cap ? 2 * c->n_cap : 1024;
        char **p = realloc(c->paths, (size_t)cap * sizeof *p);
        if (!p) return -1;
        c->paths = p, c->n_cap = cap;
    }
    if (!(c->paths[c->n] = strdup(path))) return -1;
    c->table[h] = c->n + 1;
    return c->n++;
}

/* Adds one caption of path (both NUL-terminated, modified in place). */
static int collect(collector *c, long line, char *path, char *caption) {
    path = prep_trim(path), caption = prep_trim(caption);
    if (!*path) return vlm_set_error("captions '%s' line %ld: empty image path", c->file, line);
    if (!*caption)
        return prep_ignore(c->r, c->o->strict, "captions '%s' line %ld: empty caption for '%s'",
                           c->file, line, path);
    if (!prep_valid_utf8(caption, strlen(caption)))
        return vlm_set_error("captions '%s' line %ld: the caption is not valid UTF-8", c->file, line);
    if (c->m == c->m_cap) {
        int64_t cap = c->m_cap ? 2 * c->m_cap : 1024;
        int64_t *a = realloc(c->item_of, (size_t)cap * sizeof *a);
        if (a) c->item_of = a;
        char **b = a ? realloc(c->texts, (size_t)cap * sizeof *b) : NULL;
        if (!b) return vlm_set_error("captions '%s': out of memory", c->file);
        c->texts = b, c->m_cap = cap;
    }
    int64_t i = path_number(c, path);
    char *text = i < 0 ? NULL : strdup(caption);
    if (!text) return vlm_set_error("captions '%s': out of memory", c->file);
    c->item_of[c->m] = i, c->texts[c->m++] = text;
    return 0;
}

static bool is_header(const char *path, const char *caption) {
    static const char *const p[] = {"image", "path", "file", "file_name", "filename", "image_path"};
    bool ok = false;
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) ok |= !strcasecmp(path, p[i]);
    return ok && (!strcasecmp(caption, "caption") || !strcasecmp(caption, "text"));
}

/* ---- TSV -------------------------------------------------------------------------- */

static bool blank(const char *s) {
    while (*s == ' ' || *s == '\t' || *s == '\r') s++;
    return !*s;
}

static int parse_tsv(collector *c, char *buf, size_t len) {
    long line = 0;
    bool first = true;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;
        *e = 0, line++;
        char *next = e + 1, *tab = strchr(p, '\t');
        if (!blank(p)) {
            if (!tab) return vlm_set_error("captions '%s' line %ld: no TAB between the image path "
                                           "and the caption", c->file, line);
            *tab = 0;
            if (!(first && is_header(prep_trim(p), prep_trim(tab + 1))) && collect(c, line, p, tab + 1))
                return -1;
            first = false;
        }
        p = next;
    }
    return 0;
}

/* ---- CSV (RFC 4180) ------------------------------------------------------------ */

/* Decodes the field at *pp in place (a quoted field only shrinks, so the
 * write position never passes the read position) and NUL-terminates it;
 * *delim gets what ended it: ',', '\n' or 0 at the end of the buffer. */
static int csv_field(collector *c, char **pp, char *end, long *line, char **out, char *delim) {
    char *r = *pp, *w = r;
    *out = r;
    if (r < end && *r == '"') {
        long open_line = *line;
        for (r++;; *w++ = *r++) {
            if (r >= end)
                return vlm_set_error("captions '%s' line %ld: unterminated quoted field", c->file, open_line);
            if (*r == '"' && r + 1 < end && r[1] == '"') r++; /* "" -> " */
            else if (*r == '"') break;
            if (*r == '\n') (*line)++;
        }
        r++; /* the closing quote */
        if (r < end && *r == '\r' && (r + 1 == end || r[1] == '\n')) r++;
        if (r < end && *r != ',' && *r != '\n')
            return vlm_set_error("captions '%s' line %ld: '%c' after a closing quote (quotes inside "
                                 "a quoted field are written \"\")", c->file, *line, *r);
    } else {
        while (r < end && *r != ',' && *r != '\n') r++;
        w = r;
        if (w > *out && w[-1] == '\r' && (r == end || *r == '\n')) w--;
    }
    *delim = r < end ? *r : 0;
    *pp = r < end ? r + 1 : end;
    *w = 0; /* may overwrite the delimiter, already read */
    return 0;
}

static int parse_csv(collector *c, char *buf, size_t len) {
    long line = 1;
    bool first = true;
    for (char *p = buf, *end = buf + len; p < end;) {
        long start = line;
        char *f[2] = {NULL, NULL}, d;
        int nf = 0;
        do {
            char *v;
            if (csv_field(c, &p, end, &line, &v, &d)) return -1;
            if (nf < 2) f[nf] = v;
            nf++;
        } while (d == ',');
        if (d == '\n') line++;
        if (nf == 1 && blank(f[0])) continue;
        if (nf != 2)
            return vlm_set_error("captions '%s' line %ld: %d fields, expected 2 (path,caption; quote a "
                                 "caption that holds commas)", c->file, start, nf);
        if (!(first && is_header(prep_trim(f[0]), prep_trim(f[1]))) && collect(c, start, f[0], f[1]))
            return -1;
        first = false;
    }
    return 0;
}

/* ---- JSONL ------------------------------------------------------------------------ */

static int jsonl_add(collector *c, long line, const char *path, const char *text) {
    char *p = strdup(path), *t = strdup(text);
    int rc = p && t ? collect(c, line, p, t) : vlm_set_error("captions '%s': out of memory", c->file);
    free(p), free(t);
    return rc;
}

static int jsonl_object(collector *c, long line, const cJSON *j) {
    if (!cJSON_IsObject(j)) return vlm_set_error("captions '%s' line %ld: not a JSON object", c->file, line);
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(j, "image");
    const cJSON *cap = cJSON_GetObjectItemCaseSensitive(j, "caption");
    if (!cap) cap = cJSON_GetObjectItemCaseSensitive(j, "text");
    if (!cJSON_IsString(img))
        return vlm_set_error("captions '%s' line %ld: \"image\" is %s", c->file, line,
                             img ? "not a string" : "missing");
    if (cJSON_IsString(cap)) return jsonl_add(c, line, img->valuestring, cap->valuestring);
    if (!cJSON_IsArray(cap))
        return vlm_set_error("captions '%s' line %ld: \"caption\" (or \"text\") is %s", c->file, line,
                             cap ? "neither a string nor a list of strings" : "missing");
    const cJSON *t;
    cJSON_ArrayForEach(t, cap) {
        if (!cJSON_IsString(t))
            return vlm_set_error("captions '%s' line %ld: \"%s\" holds a non-string", c->file, line,
                                 cap->string);
        if (jsonl_add(c, line, img->valuestring, t->valuestring)) return -1;
    }
    return 0;
}

static int parse_jsonl(collector *c, char *buf, size_t len) {
    long line = 0;
    for (char *p = buf, *end = buf + len; p < end;) {
        char *nl = memchr(p, '\n', (size_t)(end - p)), *e = nl ? nl : end;
        *e = 0, line++;
        if (!blank(p)) {
            const char *stop = NULL;
            cJSON *j = cJSON_ParseWithLengthOpts(p, (size_t)(e - p), &stop, false);
            if (j && !blank(stop)) { /* cJSON stops after the value: more text is an error */
                cJSON_Delete(j);
                j = NULL;
            }
            if (!j) {
                long col = stop && stop >= p && stop <= e ? (long)(stop - p) + 1 : 1;
                return vlm_set_error("captions '%s' line %ld: malformed JSON near column %ld", c->file,
                                     line, col);
            }
            int rc = jsonl_object(c, line, j);
            cJSON_Delete(j);
            if (rc) return -1;
        }
        p = e + 1;
    }
    return 0;
}

/* ---- the folder source -------------------------------------------------------------- */

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcasecmp(s + n - k, suffix);
}

static void collector_free(collector *c) {
    for (int64_t i = 0; i < c->n; i++) free(c->paths[i]);
    for (int64_t j = 0; j < c->m; j++) free(c->texts[j]);
    free(c->paths), free(c->table), free(c->item_of), free(c->texts);
}

/* Hands the collected pairs over to f (paths joined with the folder). */
static int to_files(collector *c, const char *dir, prep_files *f) {
    if (!c->m) return vlm_set_error("captions '%s': no captions", c->file);
    if (!(f->paths = calloc((size_t)c->n, sizeof *f->paths)))
        return vlm_set_error("prepare: out of memory");
    f->n = c->n;
    for (int64_t i = 0; i < c->n; i++)
        if (!(f->paths[i] = prep_join(dir, c->paths[i]))) return -1;
    int rc = prep_files_group(f, c->item_of, c->texts, c->m);
    c->m = 0; /* the texts belong to f now (or were freed) */
    return rc;
}

int prep_folder(const vlm_prepare_opts *o, vlm_prepare_report *r) {
    if (!o->images_dir || !o->captions)
        return vlm_set_error("folder: --images DIR and --captions FILE are required");
    int (*parse)(collector *, char *, size_t) =
        ends_with(o->captions, ".tsv") ? parse_tsv
        : ends_with(o->captions, ".csv") ? parse_csv
        : ends_with(o->captions, ".jsonl") || ends_with(o->captions, ".ndjson") ? parse_jsonl : NULL;
    if (!parse)
        return vlm_set_error("captions '%s': unknown format (name it .tsv, .csv or .jsonl)", o->captions);
    size_t len;
    char *buf = prep_read_file(o->captions, "captions", &len);
    if (!buf) return -1;
    collector c = {.file = o->captions, .o = o, .r = r};
    prep_files f = {0};
    int rc = parse(&c, buf, len);
    free(buf);
    if (!rc) rc = to_files(&c, o->images_dir, &f);
    collector_free(&c);
    if (!rc) {
        char desc[512];
        snprintf(desc, sizeof desc, "folder %s (captions %s)", o->images_dir, o->captions);
        rc = prep_files_run(o, &f, desc, r);
    }
    prep_files_free(&f);
    return rc;
}
