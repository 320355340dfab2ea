/* dataset.c - the HDF5 dataset file: a streaming writer and a validating,
 * thread-safe reader. The layout is described in data.h. h5py users can
 * read a file this module wrote:
 *
 *     import h5py, numpy as np
 *     with h5py.File("train.h5", "r") as f:
 *         print(dict(f.attrs))          # format_version, image_size, source
 *         img = f["images"][0]          # uint8 [H, W, 3]   (raw layout), or
 *         # img = PIL.Image.open(io.BytesIO(f["jpeg"][0].tobytes()))
 *         cap = f["captions"].asstr()[0]
 *         idx = f["caption_image"][0]   # which image the caption describes
 *         lab = f["labels"][0] if "labels" in f else None
 *         names = f["class_names"].asstr()[:] if "class_names" in f else None
 *
 * and write one we can read:
 *
 *     with h5py.File("mine.h5", "w") as f:
 *         f.attrs["format_version"] = 1; f.attrs["image_size"] = 64
 *         f.attrs["source"] = "my photos"
 *         f.create_dataset("images", data=imgs, chunks=(1, 64, 64, 3))   # uint8 [N,64,64,3]
 *         f.create_dataset("captions", data=caps, dtype=h5py.string_dtype())
 *         f.create_dataset("caption_image", data=np.asarray(idx, np.int64))
 *
 * Threads: Debian's libhdf5 is built without its thread-safety option, so no
 * two HDF5 calls may overlap anywhere in the process. Every entry point here
 * takes one process-wide mutex around its HDF5 work; decoding JPEG blobs
 * happens after the mutex is released, so loader threads still decode in
 * parallel. */
#include "data.h"

#include <hdf5.h>

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FORMAT_VERSION 1
#define MAX_ENTRIES ((int64_t)INT32_MAX) /* images, captions */
#define MAX_CLASSES 1000000
#define MAX_SIDE 65535
#define FLUSH_EVERY 1024 /* captions / labels buffered per HDF5 write */

static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;

/* Takes the HDF5 lock and turns off HDF5's habit of printing its error
 * stack to stderr (we report errors ourselves). */
static void h5_lock(void) {
    pthread_mutex_lock(&h5_mutex);
    /* Every time: in thread-safe HDF5 builds this setting is per thread. */
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static void h5_unlock(void) { pthread_mutex_unlock(&h5_mutex); }

/* ---- errors ----------------------------------------------------------------- */

/* Keeps the most specific message of HDF5's error stack (entry 0). */
static herr_t first_error(unsigned n, const H5E_error2_t *e, void *buf) {
    if (n == 0 && e->desc) snprintf(buf, 256, "%s", e->desc);
    return 0;
}

/* Sets "<what>" plus HDF5's own reason when its stack has one; returns -1. */
static int h5_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int h5_error(const char *fmt, ...) {
    char what[768], why[256] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, first_error, why);
    H5Eclear2(H5E_DEFAULT);
    return why[0] ? vlm_set_error("%s (HDF5: %s)", what, why) : vlm_set_error("%s", what);
}

static void close_id(hid_t *id, herr_t (*fn)(hid_t)) {
    if (*id >= 0) fn(*id);
    *id = -1;
}

/* ---- shared helpers ---------------------------------------------------------- */

static hid_t vlen_str_type(void) {
    hid_t t = H5Tcopy(H5T_C_S1);
    if (t < 0) return -1;
    if (H5Tset_size(t, H5T_VARIABLE) < 0 || H5Tset_cset(t, H5T_CSET_UTF8) < 0) {
        H5Tclose(t);
        return -1;
    }
    return t;
}

/* Captions are declared UTF-8 in the file, so the writer checks they are. */
static bool valid_utf8(const unsigned char *s) {
    while (*s) {
        unsigned c = *s++, n; /* n = continuation bytes */
        if (c < 0x80)
            n = 0;
        else if ((c >> 5) == 6)
            n = 1;
        else if ((c >> 4) == 14)
            n = 2;
        else if ((c >> 3) == 30)
            n = 3;
        else
            return false;
        unsigned cp = n ? c & (0x3F >> n) : c;
        for (unsigned i = 0; i < n; i++, s++) {
            if ((*s & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (*s & 0x3F);
        }
        /* overlong forms, surrogates, beyond U+10FFFF */
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            (cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF)
            return false;
    }
    return true;
}

/* ========================================================================== */
/* ---- writer ----------------------------------------------------------------- */

struct vlm_dataset_writer {
    char *path, *tmp_path; /* the file being written is tmp_path, or path when in place */
    vlm_dataset_writer_opts o;
    hid_t file, images, labels, captions, caption_image, str_type, blob_type;
    int64_t n_images, n_captions, n_labels_written, n_captions_written;
    int n_classes; /* 0 until class names are set */
    int32_t max_label;
    char *cap_buf[FLUSH_EVERY];
    int64_t ci_buf[FLUSH_EVERY];
    int32_t lab_buf[FLUSH_EVERY];
    int n_cap_buf, n_lab_buf;
    bool failed; /* an HDF5 write failed: the file can only be discarded */
};

static const char *writing(const vlm_dataset_writer *w) {
    return w->tmp_path ? w->tmp_path : w->path;
}

/* An extendible dataset with `rank` dims, the first starting at 0. */
static hid_t create_extendible(hid_t file, const char *name, hid_t type, int rank,
                               const hsize_t *rest, const hsize_t *chunk, int deflate) {
    hsize_t dims[4] = {0}, maxd[4] = {H5S_UNLIMITED};
    for (int i = 1; i < rank; i++)
        dims[i] = maxd[i] = rest[i - 1];
    hid_t space = H5Screate_simple(rank, dims, maxd), dcpl = H5Pcreate(H5P_DATASET_CREATE), ds = -1;
    if (space >= 0 && dcpl >= 0 && H5Pset_chunk(dcpl, rank, chunk) >= 0 &&
        (deflate <= 0 || H5Pset_deflate(dcpl, (unsigned)deflate) >= 0))
        ds = H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    if (space >= 0) H5Sclose(space);
    if (dcpl >= 0) H5Pclose(dcpl);
    return ds;
}

/* Appends `count` rows (each `rest` shaped) at row `cur`. */
static int append_rows(hid_t ds, hid_t memtype, int rank, const hsize_t *rest, int64_t cur,
                       int64_t count, const void *buf) {
    hsize_t dims[4] = {(hsize_t)(cur + count)}, start[4] = {(hsize_t)cur},
            cnt[4] = {(hsize_t)count};
    for (int i = 1; i < rank; i++)
        dims[i] = cnt[i] = rest[i - 1];
    if (H5Dset_extent(ds, dims) < 0) return -1;
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(rank, cnt, NULL);
    int rc = -1;
    if (fs >= 0 && ms >= 0 &&
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) >= 0 &&
        H5Dwrite(ds, memtype, ms, fs, H5P_DEFAULT, buf) >= 0)
        rc = 0;
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

static int write_attr(hid_t file, const char *name, hid_t type, hid_t memtype, const void *val) {
    hid_t space = H5Screate(H5S_SCALAR), a = -1;
    int rc = -1;
    if (space >= 0) a = H5Acreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT);
    if (a >= 0 && H5Awrite(a, memtype, val) >= 0) rc = 0;
    if (a >= 0) H5Aclose(a);
    if (space >= 0) H5Sclose(space);
    return rc;
}

static int write_root_attrs(vlm_dataset_writer *w, const char *source) {
    int64_t version = FORMAT_VERSION;
    int64_t size = w->o.image_size                  ? w->o.image_size
                   : w->o.layout == VLM_DATASET_RAW ? w->o.height
                                                    : 0;
    if (!source) source = "";
    if (write_attr(w->file, "format_version", H5T_STD_I64LE, H5T_NATIVE_INT64, &version) ||
        write_attr(w->file, "image_size", H5T_STD_I64LE, H5T_NATIVE_INT64, &size) ||
        write_attr(w->file, "source", w->str_type, w->str_type, &source))
        return h5_error("dataset '%s': cannot write the root attributes", writing(w));
    return 0;
}

static int create_datasets(vlm_dataset_writer *w) {
    const vlm_dataset_writer_opts *o = &w->o;
    hsize_t one[1] = {FLUSH_EVERY}, big[1] = {4 * FLUSH_EVERY};
    if (o->layout == VLM_DATASET_RAW) {
        hsize_t rest[3] = {(hsize_t)o->height, (hsize_t)o->width, 3};
        hsize_t chunk[4] = {1, rest[0], rest[1], 3}; /* one image per chunk: random access */
        w->images = create_extendible(w->file, "images", H5T_STD_U8LE, 4, rest, chunk, o->deflate);
    } else {
        hsize_t chunk[1] = {256};
        w->images = create_extendible(w->file, "jpeg", w->blob_type, 1, NULL, chunk, 0);
    }
    w->captions = create_extendible(w->file, "captions", w->str_type, 1, NULL, one, 0);
    w->caption_image = create_extendible(w->file, "caption_image", H5T_STD_I64LE, 1, NULL, big, 0);
    if (o->labels) w->labels = create_extendible(w->file, "labels", H5T_STD_I32LE, 1, NULL, big, 0);
    if (w->images < 0 || w->captions < 0 || w->caption_image < 0 || (o->labels && w->labels < 0))
        return h5_error("dataset '%s': cannot create the datasets", writing(w));
    return 0;
}

static int check_writer_opts(const char *path, const vlm_dataset_writer_opts *o) {
    if (!path || !*path) return vlm_set_error("dataset writer: empty path");
    if (!o) return vlm_set_error("dataset writer '%s': NULL options", path);
    if (o->layout != VLM_DATASET_RAW && o->layout != VLM_DATASET_JPEG)
        return vlm_set_error("dataset writer '%s': unknown layout %d", path, (int)o->layout);
    if (o->layout == VLM_DATASET_RAW &&
        (o->height <= 0 || o->width <= 0 || o->height > MAX_SIDE || o->width > MAX_SIDE))
        return vlm_set_error(
            "dataset writer '%s': raw layout needs an image size in 1..%d (got %dx%d)", path,
            MAX_SIDE, o->width, o->height);
    if (o->jpeg_quality < 0 || o->jpeg_quality > 100 || o->deflate < 0 || o->deflate > 9 ||
        o->image_size < 0)
        return vlm_set_error("dataset writer '%s': jpeg_quality %d (0..100), deflate %d (0..9) or "
                             "image_size %d (>= 0) out of range",
                             path, o->jpeg_quality, o->deflate, o->image_size);
    if (o->source && !valid_utf8((const unsigned char *)o->source))
        return vlm_set_error("dataset writer '%s': source is not valid UTF-8", path);
    return 0;
}

/* Closes every HDF5 handle (under the lock); returns -1 if the file close failed. */
static int writer_close_handles(vlm_dataset_writer *w) {
    close_id(&w->images, H5Dclose);
    close_id(&w->labels, H5Dclose);
    close_id(&w->captions, H5Dclose);
    close_id(&w->caption_image, H5Dclose);
    close_id(&w->str_type, H5Tclose);
    close_id(&w->blob_type, H5Tclose);
    int rc = 0;
    if (w->file >= 0 && H5Fclose(w->file) < 0) rc = -1;
    w->file = -1;
    return rc;
}

static void writer_free(vlm_dataset_writer *w) {
    for (int i = 0; i < w->n_cap_buf; i++)
        free(w->cap_buf[i]);
    free(w->path);
    free(w->tmp_path);
    free(w);
}

/* Deletes the partial file and frees w; keeps the current error message. */
static void writer_discard(vlm_dataset_writer *w) {
    h5_lock();
    writer_close_handles(w);
    H5Eclear2(H5E_DEFAULT);
    h5_unlock();
    unlink(writing(w));
    writer_free(w);
}

static int writer_init(vlm_dataset_writer *w, const char *path, const vlm_dataset_writer_opts *o) {
    w->o = *o;
    w->o.source = NULL; /* not kept: the attribute is written now */
    w->file = w->images = w->labels = w->captions = w->caption_image = -1;
    w->str_type = w->blob_type = -1;
    w->max_label = -1;
    w->path = strdup(path);
    if (!w->path) return vlm_set_error("dataset writer '%s': out of memory", path);
    if (!o->in_place) {
        size_t n = strlen(path) + 5;
        if (!(w->tmp_path = malloc(n)))
            return vlm_set_error("dataset writer '%s': out of memory", path);
        snprintf(w->tmp_path, n, "%s.tmp", path);
    }
    w->file = H5Fcreate(writing(w), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) return h5_error("dataset '%s': cannot create the file", writing(w));
    w->str_type = vlen_str_type();
    w->blob_type = H5Tvlen_create(H5T_STD_U8LE);
    if (w->str_type < 0 || w->blob_type < 0)
        return h5_error("dataset '%s': cannot create the string types", writing(w));
    return write_root_attrs(w, o->source) || create_datasets(w) ? -1 : 0;
}

vlm_dataset_writer *vlm_dataset_writer_open(const char *path, const vlm_dataset_writer_opts *opts) {
    if (check_writer_opts(path, opts)) return NULL;
    vlm_dataset_writer *w = calloc(1, sizeof *w);
    if (!w) {
        vlm_set_error("dataset writer '%s': out of memory", path);
        return NULL;
    }
    h5_lock();
    int rc = writer_init(w, path, opts);
    h5_unlock();
    if (rc) {
        if (w->file >= 0) /* the file exists: remove it */
            writer_discard(w);
        else
            writer_free(w);
        return NULL;
    }
    return w;
}

/* Writes the buffered captions and labels (lock held). */
static int flush_captions(vlm_dataset_writer *w) {
    if (!w->n_cap_buf) return 0;
    if (append_rows(w->captions, w->str_type, 1, NULL, w->n_captions_written, w->n_cap_buf,
                    w->cap_buf) ||
        append_rows(w->caption_image, H5T_NATIVE_INT64, 1, NULL, w->n_captions_written,
                    w->n_cap_buf, w->ci_buf))
        return h5_error("dataset '%s': writing /captions failed", writing(w));
    for (int i = 0; i < w->n_cap_buf; i++)
        free(w->cap_buf[i]);
    w->n_captions_written += w->n_cap_buf;
    w->n_cap_buf = 0;
    return 0;
}

static int flush_labels(vlm_dataset_writer *w) {
    if (!w->n_lab_buf) return 0;
    if (append_rows(w->labels, H5T_NATIVE_INT32, 1, NULL, w->n_labels_written, w->n_lab_buf,
                    w->lab_buf))
        return h5_error("dataset '%s': writing /labels failed", writing(w));
    w->n_labels_written += w->n_lab_buf;
    w->n_lab_buf = 0;
    return 0;
}

static int check_writable(vlm_dataset_writer *w) {
    if (!w) return vlm_set_error("dataset writer: NULL writer");
    if (w->failed)
        return vlm_set_error("dataset '%s': an earlier write failed; the file can only be aborted",
                             writing(w));
    return 0;
}

static int check_label(vlm_dataset_writer *w, int32_t label) {
    if (!w->o.labels && label != -1)
        return vlm_set_error("dataset '%s': label %d given but the writer has no labels (pass -1)",
                             writing(w), (int)label);
    if (w->o.labels && label < 0)
        return vlm_set_error("dataset '%s': label %d of image %lld is negative", writing(w),
                             (int)label, (long long)w->n_images);
    if (w->n_images >= MAX_ENTRIES)
        return vlm_set_error("dataset '%s': too many images", writing(w));
    return 0;
}

/* Appends one image row (pixels or a blob) and its label; lock held. */
static int64_t append_image(vlm_dataset_writer *w, const void *row, int32_t label) {
    hsize_t rest[3] = {(hsize_t)w->o.height, (hsize_t)w->o.width, 3};
    int rc = w->o.layout == VLM_DATASET_RAW
                 ? append_rows(w->images, H5T_NATIVE_UCHAR, 4, rest, w->n_images, 1, row)
                 : append_rows(w->images, w->blob_type, 1, NULL, w->n_images, 1, row);
    if (rc) {
        w->failed = true;
        return h5_error("dataset '%s': writing image %lld failed", writing(w),
                        (long long)w->n_images);
    }
    if (w->o.labels) {
        w->lab_buf[w->n_lab_buf++] = label;
        if (label > w->max_label) w->max_label = label;
        if (w->n_lab_buf == FLUSH_EVERY && flush_labels(w)) {
            w->failed = true;
            return -1;
        }
    }
    return w->n_images++;
}

static int64_t add_pixels(vlm_dataset_writer *w, const vlm_image *img, int32_t label) {
    if (img->width != w->o.width || img->height != w->o.height)
        return vlm_set_error("dataset '%s': image %lld is %dx%d but /images holds %dx%d images",
                             writing(w), (long long)w->n_images, img->width, img->height,
                             w->o.width, w->o.height);
    h5_lock();
    int64_t i = append_image(w, img->rgb, label);
    h5_unlock();
    return i;
}

static int64_t add_blob(vlm_dataset_writer *w, const void *data, size_t size, int32_t label) {
    hvl_t blob = {.len = size, .p = (void *)data};
    h5_lock();
    int64_t i = append_image(w, &blob, label);
    h5_unlock();
    return i;
}

int64_t vlm_dataset_writer_add_image(vlm_dataset_writer *w, const vlm_image *img, int32_t label) {
    if (check_writable(w) || check_label(w, label)) return -1;
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0)
        return vlm_set_error("dataset '%s': image %lld is empty", writing(w),
                             (long long)w->n_images);
    if (w->o.layout == VLM_DATASET_RAW) return add_pixels(w, img, label);
    uint8_t *jpg;
    size_t n;
    if (vlm_image_encode_jpeg(img, w->o.jpeg_quality ? w->o.jpeg_quality : 90, &jpg, &n)) return -1;
    int64_t i = add_blob(w, jpg, n, label);
    free(jpg);
    return i;
}

int64_t vlm_dataset_writer_add_encoded(vlm_dataset_writer *w, const void *data, size_t size,
                                       int32_t label) {
    if (check_writable(w) || check_label(w, label)) return -1;
    char name[64];
    snprintf(name, sizeof name, "image %lld", (long long)w->n_images);
    if (w->o.layout == VLM_DATASET_JPEG) {
        if (vlm_image_probe(data, size, name, NULL, NULL, NULL)) return -1;
        return add_blob(w, data, size, label);
    }
    vlm_image img;
    if (vlm_image_decode(data, size, name, NULL, &img)) return -1;
    int64_t i = add_pixels(w, &img, label);
    vlm_image_free(&img);
    return i;
}

int64_t vlm_dataset_writer_add_caption(vlm_dataset_writer *w, const char *text, int64_t image) {
    if (check_writable(w)) return -1;
    if (!text || !valid_utf8((const unsigned char *)text))
        return vlm_set_error("dataset '%s': caption %lld is %s", writing(w),
                             (long long)w->n_captions, text ? "not valid UTF-8" : "NULL");
    if (image < 0 || image >= w->n_images)
        return vlm_set_error("dataset '%s': caption %lld refers to image %lld, but only %lld "
                             "images were added",
                             writing(w), (long long)w->n_captions, (long long)image,
                             (long long)w->n_images);
    if (w->n_captions >= MAX_ENTRIES)
        return vlm_set_error("dataset '%s': too many captions", writing(w));
    char *copy = strdup(text);
    if (!copy) return vlm_set_error("dataset '%s': out of memory", writing(w));
    w->cap_buf[w->n_cap_buf] = copy;
    w->ci_buf[w->n_cap_buf++] = image;
    if (w->n_cap_buf == FLUSH_EVERY) {
        h5_lock();
        int rc = flush_captions(w);
        h5_unlock();
        if (rc) {
            w->failed = true;
            return -1;
        }
    }
    return w->n_captions++;
}

static int write_class_names(vlm_dataset_writer *w, const char *const *names, int k) {
    hsize_t dims[1] = {(hsize_t)k};
    hid_t space = H5Screate_simple(1, dims, NULL), ds = -1;
    int rc = -1;
    if (space >= 0)
        ds = H5Dcreate2(w->file, "class_names", w->str_type, space, H5P_DEFAULT, H5P_DEFAULT,
                        H5P_DEFAULT);
    if (ds >= 0 && H5Dwrite(ds, w->str_type, H5S_ALL, H5S_ALL, H5P_DEFAULT, names) >= 0) rc = 0;
    if (ds >= 0) H5Dclose(ds);
    if (space >= 0) H5Sclose(space);
    return rc ? h5_error("dataset '%s': writing /class_names failed", writing(w)) : 0;
}

int vlm_dataset_writer_set_class_names(vlm_dataset_writer *w, const char *const *names, int k) {
    if (check_writable(w)) return -1;
    if (w->n_classes)
        return vlm_set_error("dataset '%s': class names were already set", writing(w));
    if (!names || k <= 0 || k > MAX_CLASSES)
        return vlm_set_error("dataset '%s': %d class names (1..%d expected)", writing(w), k,
                             MAX_CLASSES);
    for (int i = 0; i < k; i++)
        if (!names[i] || !valid_utf8((const unsigned char *)names[i]))
            return vlm_set_error("dataset '%s': class name %d is %s", writing(w), i,
                                 names[i] ? "not valid UTF-8" : "NULL");
    h5_lock();
    int rc = write_class_names(w, names, k);
    h5_unlock();
    if (rc) {
        w->failed = true;
        return -1;
    }
    w->n_classes = k;
    return 0;
}

/* Makes the renamed file durable: data on disk before the name points at it. */
static int fsync_path(const char *path, bool dir) {
    int fd = open(path, (dir ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

static int finish_file(vlm_dataset_writer *w) {
    if (w->n_images == 0) return vlm_set_error("dataset '%s': no images were added", writing(w));
    if (w->n_classes && w->max_label >= w->n_classes)
        return vlm_set_error("dataset '%s': /labels holds %d but there are only %d class names",
                             writing(w), (int)w->max_label, w->n_classes);
    h5_lock();
    int rc = flush_captions(w) || flush_labels(w) ? -1 : 0;
    if (!rc && H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0)
        rc = h5_error("dataset '%s': flushing failed", writing(w));
    if (!rc && writer_close_handles(w)) rc = h5_error("dataset '%s': closing failed", writing(w));
    h5_unlock();
    if (rc || !w->tmp_path) return rc;
    if (fsync_path(w->tmp_path, false) || rename(w->tmp_path, w->path))
        return vlm_set_error("dataset '%s': cannot move '%s' into place (%s)", w->path, w->tmp_path,
                             strerror(errno));
    char *slash = strrchr(w->path, '/');
    if (slash) {
        *slash = 0; /* the directory entry: fsync the parent, best effort */
        fsync_path(slash == w->path ? "/" : w->path, true);
        *slash = '/';
    } else {
        fsync_path(".", true);
    }
    return 0;
}

int vlm_dataset_writer_close(vlm_dataset_writer *w) {
    if (!w) return vlm_set_error("dataset writer: NULL writer");
    if (w->failed) {
        vlm_set_error("dataset '%s': an earlier write failed; nothing was written", w->path);
        writer_discard(w);
        return -1;
    }
    if (finish_file(w)) {
        writer_discard(w);
        return -1;
    }
    writer_free(w);
    return 0;
}

void vlm_dataset_writer_abort(vlm_dataset_writer *w) {
    if (w) writer_discard(w);
}

/* ========================================================================== */
/* ---- reader ----------------------------------------------------------------- */

struct vlm_dataset {
    char *path;
    hid_t file, images, captions, blob_type, str_type, dxpl;
    vlm_dataset_layout layout;
    int64_t n, m;
    int height, width, image_size, k;
    int64_t *caption_image; /* [m] */
    int32_t *labels;        /* [n], NULL without /labels */
    char **class_names;     /* [k] */
    char *source;
    size_t blob_limit; /* the vlen allocator refuses blobs bigger than this */
    bool blob_too_big;
};

/* The HDF5 allocator for variable-length data read by the reader: plain
 * malloc (so results can be handed out and freed with free() outside the
 * lock), refusing oversize blobs before they are read. */
static void *vlen_alloc(size_t size, void *info) {
    vlm_dataset *ds = info;
    if (size > ds->blob_limit) {
        ds->blob_too_big = true;
        return NULL;
    }
    return malloc(size ? size : 1);
}

static void vlen_free(void *p, void *info) {
    (void)info;
    free(p);
}

/* The kinds of element type the schema allows. */
typedef enum { T_U8, T_INT, T_BLOB, T_STR } elem_kind;

static const char *kind_name(elem_kind k) {
    switch (k) {
    case T_U8:
        return "uint8";
    case T_INT:
        return "an integer type";
    case T_BLOB:
        return "variable-length uint8";
    default:
        return "variable-length strings";
    }
}

static bool type_is(hid_t t, elem_kind k) {
    H5T_class_t c = H5Tget_class(t);
    if (k == T_U8) return c == H5T_INTEGER && H5Tget_size(t) == 1 && H5Tget_sign(t) == H5T_SGN_NONE;
    if (k == T_INT) return c == H5T_INTEGER && H5Tget_size(t) <= 8;
    if (k == T_STR) return c == H5T_STRING && H5Tis_variable_str(t) > 0;
    if (c != H5T_VLEN) return false;
    hid_t base = H5Tget_super(t);
    bool ok = base >= 0 && H5Tget_class(base) == H5T_INTEGER && H5Tget_size(base) == 1;
    if (base >= 0) H5Tclose(base);
    return ok;
}

/* Refuses anything but a plain dataset stored inside this file. */
static int check_storage(const vlm_dataset *d, hid_t ds, const char *name) {
    hid_t dcpl = H5Dget_create_plist(ds);
    if (dcpl < 0)
        return h5_error("dataset '%s': cannot read the properties of '%s'", d->path, name);
    int rc = 0;
    H5D_layout_t layout = H5Pget_layout(dcpl);
    if (layout == H5D_VIRTUAL)
        rc = vlm_set_error("dataset '%s': '%s' is a virtual dataset (refused)", d->path, name);
    else if (H5Pget_external_count(dcpl) != 0)
        rc = vlm_set_error("dataset '%s': '%s' uses external storage (refused)", d->path, name);
    int nf = rc ? 0 : H5Pget_nfilters(dcpl);
    for (int i = 0; i < nf && !rc; i++) {
        unsigned flags, cd[8], cfg;
        size_t ncd = 8;
        char fname[64] = "";
        H5Z_filter_t id =
            H5Pget_filter2(dcpl, (unsigned)i, &flags, &ncd, cd, sizeof fname, fname, &cfg);
        if (id != H5Z_FILTER_DEFLATE && id != H5Z_FILTER_SHUFFLE)
            rc = vlm_set_error(
                "dataset '%s': '%s' uses filter %d (%s); only deflate and shuffle are "
                "allowed",
                d->path, name, (int)id, fname[0] ? fname : "unknown");
    }
    H5Pclose(dcpl);
    return rc;
}

/* Checks type and rank; returns the dims in dims[rank]. */
static int check_shape(const vlm_dataset *d, hid_t ds, const char *name, elem_kind kind, int rank,
                       hsize_t *dims) {
    hid_t t = H5Dget_type(ds), s = H5Dget_space(ds);
    int rc = 0;
    if (t < 0 || s < 0)
        rc = h5_error("dataset '%s': cannot read the type of '%s'", d->path, name);
    else if (!type_is(t, kind))
        rc = vlm_set_error("dataset '%s': '%s' must hold %s", d->path, name, kind_name(kind));
    else if (H5Sget_simple_extent_type(s) != H5S_SIMPLE || H5Sget_simple_extent_ndims(s) != rank)
        rc = vlm_set_error(
            "dataset '%s': '%s' must have rank %d (has %d)", d->path, name, rank,
            H5Sget_simple_extent_type(s) == H5S_SIMPLE ? H5Sget_simple_extent_ndims(s) : 0);
    else
        H5Sget_simple_extent_dims(s, dims, NULL);
    if (t >= 0) H5Tclose(t);
    if (s >= 0) H5Sclose(s);
    return rc;
}

/* 1 if the dataset exists (as a hard link), 0 if absent, -1 on error. */
static int has_dataset(const vlm_dataset *d, const char *name) {
    htri_t e = H5Lexists(d->file, name, H5P_DEFAULT);
    if (e < 0) return h5_error("dataset '%s': cannot look up '%s'", d->path, name);
    if (!e) return 0;
    H5L_info_t li;
    if (H5Lget_info(d->file, name, &li, H5P_DEFAULT) < 0)
        return h5_error("dataset '%s': cannot look up '%s'", d->path, name);
    if (li.type != H5L_TYPE_HARD)
        return vlm_set_error("dataset '%s': '%s' is %s link (refused: only datasets inside the "
                             "file are read)",
                             d->path, name,
                             li.type == H5L_TYPE_EXTERNAL ? "an external"
                             : li.type == H5L_TYPE_SOFT   ? "a soft"
                                                          : "a user-defined");
    return 1;
}

/* Opens and validates one dataset. required: absence is an error. Returns
 * the id, -1 when absent and optional (no error), -2 on error. */
static hid_t open_checked(const vlm_dataset *d, const char *name, bool required, elem_kind kind,
                          int rank, hsize_t *dims) {
    int e = has_dataset(d, name);
    if (e < 0) return -2;
    if (!e) {
        if (!required) return -1;
        vlm_set_error("dataset '%s': missing '%s'", d->path, name);
        return -2;
    }
    hid_t obj = H5Oopen(d->file, name, H5P_DEFAULT);
    if (obj < 0) {
        h5_error("dataset '%s': cannot open '%s'", d->path, name);
        return -2;
    }
    if (H5Iget_type(obj) != H5I_DATASET) {
        H5Oclose(obj);
        vlm_set_error("dataset '%s': '%s' is not a dataset", d->path, name);
        return -2;
    }
    if (check_storage(d, obj, name) || check_shape(d, obj, name, kind, rank, dims)) {
        H5Oclose(obj);
        return -2;
    }
    return obj;
}

/* Reads a root attribute: integer (scalar or one element) into *v. Returns
 * 1 if read, 0 if absent, -1 on error. */
static int read_int_attr(const vlm_dataset *d, const char *name, int64_t *v) {
    htri_t e = H5Aexists(d->file, name);
    if (e <= 0)
        return e < 0 ? h5_error("dataset '%s': cannot look up attribute '%s'", d->path, name) : 0;
    hid_t a = H5Aopen(d->file, name, H5P_DEFAULT), t = -1, s = -1;
    int rc = -1;
    if (a >= 0) {
        t = H5Aget_type(a);
        s = H5Aget_space(a);
    }
    if (a < 0 || t < 0 || s < 0)
        h5_error("dataset '%s': cannot open attribute '%s'", d->path, name);
    else if (H5Tget_class(t) != H5T_INTEGER || H5Sget_simple_extent_npoints(s) != 1)
        vlm_set_error("dataset '%s': attribute '%s' must be one integer", d->path, name);
    else if (H5Aread(a, H5T_NATIVE_INT64, v) < 0)
        h5_error("dataset '%s': cannot read attribute '%s'", d->path, name);
    else
        rc = 1;
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

/* Reads the optional string attribute `source` (fixed or variable length). */
static int read_source_attr(vlm_dataset *d) {
    htri_t e = H5Aexists(d->file, "source");
    if (e < 0) return h5_error("dataset '%s': cannot look up attribute 'source'", d->path);
    if (!e) return (d->source = strdup("")) ? 0 : vlm_set_error("dataset: out of memory");
    hid_t a = H5Aopen(d->file, "source", H5P_DEFAULT), t = a >= 0 ? H5Aget_type(a) : -1;
    hid_t s = a >= 0 ? H5Aget_space(a) : -1;
    int rc = -1;
    if (t < 0 || s < 0) {
        h5_error("dataset '%s': cannot open attribute 'source'", d->path);
    } else if (H5Tget_class(t) != H5T_STRING || H5Sget_simple_extent_npoints(s) != 1) {
        vlm_set_error("dataset '%s': attribute 'source' must be one string", d->path);
    } else if (H5Tis_variable_str(t) > 0) {
        char *v = NULL;
        if (H5Aread(a, d->str_type, &v) >= 0) {
            d->source = v ? v : strdup(""); /* allocated by our vlen allocator */
            rc = d->source ? 0 : vlm_set_error("dataset: out of memory");
        } else {
            h5_error("dataset '%s': cannot read attribute 'source'", d->path);
        }
    } else {
        size_t n = H5Tget_size(t);
        d->source = n < (1 << 20) ? calloc(n + 1, 1) : NULL;
        if (!d->source)
            vlm_set_error("dataset '%s': attribute 'source' is too long", d->path);
        else if (H5Aread(a, t, d->source) < 0)
            h5_error("dataset '%s': cannot read attribute 'source'", d->path);
        else
            rc = 0;
    }
    if (s >= 0) H5Sclose(s);
    if (t >= 0) H5Tclose(t);
    if (a >= 0) H5Aclose(a);
    return rc;
}

static int read_attrs(vlm_dataset *d) {
    int64_t v = 0;
    int e = read_int_attr(d, "format_version", &v);
    if (e < 0) return -1;
    if (!e)
        return vlm_set_error("dataset '%s': missing root attribute 'format_version' (not a vlm "
                             "dataset?)",
                             d->path);
    if (v != FORMAT_VERSION)
        return vlm_set_error(
            "dataset '%s': format_version %lld is not supported (this build reads %d)", d->path,
            (long long)v, FORMAT_VERSION);
    v = 0;
    if ((e = read_int_attr(d, "image_size", &v)) < 0) return -1;
    if (e && (v < 0 || v > MAX_SIDE))
        return vlm_set_error("dataset '%s': attribute 'image_size' = %lld is out of range", d->path,
                             (long long)v);
    d->image_size = (int)v;
    return read_source_attr(d);
}

/* Reads a whole 1-D integer dataset as int64 (bounded by the caller's n). */
static int64_t *read_ints(const vlm_dataset *d, hid_t ds, const char *name, int64_t n) {
    int64_t *v = malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (!v) {
        vlm_set_error("dataset '%s': out of memory reading '%s'", d->path, name);
        return NULL;
    }
    if (n && H5Dread(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) < 0) {
        h5_error("dataset '%s': cannot read '%s'", d->path, name);
        free(v);
        return NULL;
    }
    return v;
}

/* Finds the images: /images (raw) or /jpeg, exactly one. */
static int open_images(vlm_dataset *d) {
    hsize_t dims[4], jdims[1];
    hid_t raw = open_checked(d, "/images", false, T_U8, 4, dims);
    if (raw == -2) return -1;
    hid_t jpg = open_checked(d, "/jpeg", false, T_BLOB, 1, jdims);
    if (jpg == -2 || (raw >= 0 && jpg >= 0) || (raw < 0 && jpg < 0)) {
        if (raw >= 0) H5Dclose(raw);
        if (jpg >= 0) H5Dclose(jpg);
        if (jpg == -2) return -1;
        return vlm_set_error("dataset '%s': %s", d->path,
                             raw < 0 ? "missing '/images' (or '/jpeg')"
                                     : "has both '/images' and '/jpeg' (only one is allowed)");
    }
    d->images = raw >= 0 ? raw : jpg;
    d->layout = raw >= 0 ? VLM_DATASET_RAW : VLM_DATASET_JPEG;
    if (raw < 0) dims[0] = jdims[0];
    const char *name = raw >= 0 ? "/images" : "/jpeg";
    if (dims[0] == 0 || dims[0] > (hsize_t)MAX_ENTRIES)
        return vlm_set_error("dataset '%s': '%s' holds %llu images (1..%lld allowed)", d->path,
                             name, (unsigned long long)dims[0], (long long)MAX_ENTRIES);
    d->n = (int64_t)dims[0];
    if (raw < 0) return 0;
    if (dims[3] != 3 || dims[1] == 0 || dims[2] == 0 || dims[1] > MAX_SIDE || dims[2] > MAX_SIDE)
        return vlm_set_error("dataset '%s': '/images' must be [N, H, W, 3] with H, W in 1..%d "
                             "(is [%llu, %llu, %llu, %llu])",
                             d->path, MAX_SIDE, (unsigned long long)dims[0],
                             (unsigned long long)dims[1], (unsigned long long)dims[2],
                             (unsigned long long)dims[3]);
    d->height = (int)dims[1];
    d->width = (int)dims[2];
    return 0;
}

static int open_captions(vlm_dataset *d) {
    hsize_t dc[1], di[1];
    d->captions = open_checked(d, "/captions", true, T_STR, 1, dc);
    if (d->captions < 0) return -1;
    hid_t ci = open_checked(d, "/caption_image", true, T_INT, 1, di);
    if (ci < 0) return -1;
    int rc = 0;
    if (dc[0] != di[0] || dc[0] > (hsize_t)MAX_ENTRIES)
        rc = vlm_set_error(
            "dataset '%s': '/caption_image' has %llu entries but '/captions' has %llu", d->path,
            (unsigned long long)di[0], (unsigned long long)dc[0]);
    else if (!(d->caption_image = read_ints(d, ci, "/caption_image", d->m = (int64_t)dc[0])))
        rc = -1;
    for (int64_t j = 0; !rc && j < d->m; j++)
        if (d->caption_image[j] < 0 || d->caption_image[j] >= d->n)
            rc = vlm_set_error("dataset '%s': '/caption_image'[%lld] = %lld is not an image index "
                               "(0..%lld)",
                               d->path, (long long)j, (long long)d->caption_image[j],
                               (long long)d->n - 1);
    H5Dclose(ci);
    return rc;
}

static int read_class_names(vlm_dataset *d, hid_t ds, hsize_t k) {
    if (k == 0 || k > MAX_CLASSES)
        return vlm_set_error("dataset '%s': '/class_names' holds %llu names (1..%d allowed)",
                             d->path, (unsigned long long)k, MAX_CLASSES);
    if (!(d->class_names = calloc(k, sizeof(char *))))
        return vlm_set_error("dataset '%s': out of memory", d->path);
    d->k = (int)k;
    if (H5Dread(ds, d->str_type, H5S_ALL, H5S_ALL, d->dxpl, d->class_names) < 0)
        return h5_error("dataset '%s': cannot read '/class_names'", d->path);
    for (int i = 0; i < d->k; i++)
        if (!d->class_names[i] && !(d->class_names[i] = strdup("")))
            return vlm_set_error("dataset '%s': out of memory", d->path);
    return 0;
}

/* Copies the labels (read as int64) after checking each is in [0, K). */
static int check_labels(vlm_dataset *d, const int64_t *v) {
    int64_t hi = d->k ? d->k - 1 : INT32_MAX;
    for (int64_t i = 0; i < d->n; i++) {
        if (v[i] < 0 || v[i] > hi)
            return vlm_set_error("dataset '%s': '/labels'[%lld] = %lld is out of range (0..%lld)",
                                 d->path, (long long)i, (long long)v[i], (long long)hi);
        d->labels[i] = (int32_t)v[i];
    }
    return 0;
}

static int open_labels(vlm_dataset *d) {
    hsize_t dl[1], dk[1];
    hid_t names = open_checked(d, "/class_names", false, T_STR, 1, dk);
    if (names == -2) return -1;
    int rc = names >= 0 ? read_class_names(d, names, dk[0]) : 0;
    if (names >= 0) H5Dclose(names);
    if (rc) return -1;
    hid_t lab = open_checked(d, "/labels", false, T_INT, 1, dl);
    if (lab < 0) return lab == -1 ? 0 : -1; /* absent is fine */
    int64_t *v = NULL;
    if (dl[0] != (hsize_t)d->n)
        rc = vlm_set_error("dataset '%s': '/labels' has %llu entries for %lld images", d->path,
                           (unsigned long long)dl[0], (long long)d->n);
    else if (!(v = read_ints(d, lab, "/labels", d->n)))
        rc = -1;
    else if (!(d->labels = malloc((size_t)d->n * sizeof(int32_t))))
        rc = vlm_set_error("dataset '%s': out of memory", d->path);
    else
        rc = check_labels(d, v);
    free(v);
    H5Dclose(lab);
    return rc;
}

static int reader_init(vlm_dataset *d) {
    d->str_type = vlen_str_type();
    d->blob_type = H5Tvlen_create(H5T_NATIVE_UCHAR);
    d->dxpl = H5Pcreate(H5P_DATASET_XFER);
    if (d->str_type < 0 || d->blob_type < 0 || d->dxpl < 0 ||
        H5Pset_vlen_mem_manager(d->dxpl, vlen_alloc, d, vlen_free, NULL) < 0)
        return h5_error("dataset '%s': cannot set up HDF5 types", d->path);
    htri_t is = H5Fis_hdf5(d->path);
    if (is <= 0)
        return is == 0 ? vlm_set_error("dataset '%s': not an HDF5 file", d->path)
                       : h5_error("dataset '%s': cannot read the file", d->path);
    d->file = H5Fopen(d->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (d->file < 0) return h5_error("dataset '%s': cannot open the file", d->path);
    return read_attrs(d) || open_images(d) || open_captions(d) || open_labels(d) ? -1 : 0;
}

vlm_dataset *vlm_dataset_open(const char *path) {
    if (!path || !*path) {
        vlm_set_error("dataset: empty path");
        return NULL;
    }
    struct stat st;
    if (stat(path, &st) || !S_ISREG(st.st_mode)) {
        bool missing = stat(path, &st) != 0;
        vlm_set_error("dataset '%s': %s", path, missing ? strerror(errno) : "not a regular file");
        return NULL;
    }
    vlm_dataset *d = calloc(1, sizeof *d);
    if (!d || !(d->path = strdup(path))) {
        free(d);
        vlm_set_error("dataset '%s': out of memory", path);
        return NULL;
    }
    d->file = d->images = d->captions = d->blob_type = d->str_type = d->dxpl = -1;
    d->blob_limit = (size_t)1 << 30; /* metadata strings; image blobs get the image limit */
    h5_lock();
    int rc = reader_init(d);
    h5_unlock();
    if (rc) {
        vlm_dataset_close(d);
        return NULL;
    }
    return d;
}

void vlm_dataset_close(vlm_dataset *d) {
    if (!d) return;
    h5_lock();
    close_id(&d->images, H5Dclose);
    close_id(&d->captions, H5Dclose);
    close_id(&d->blob_type, H5Tclose);
    close_id(&d->str_type, H5Tclose);
    close_id(&d->dxpl, H5Pclose);
    close_id(&d->file, H5Fclose);
    H5Eclear2(H5E_DEFAULT);
    h5_unlock();
    for (int i = 0; d->class_names && i < d->k; i++)
        free(d->class_names[i]);
    free(d->class_names);
    free(d->caption_image);
    free(d->labels);
    free(d->source);
    free(d->path);
    free(d);
}

/* ---- reader: queries --------------------------------------------------------- */

int64_t vlm_dataset_num_images(const vlm_dataset *d) { return d ? d->n : 0; }
int64_t vlm_dataset_num_captions(const vlm_dataset *d) { return d ? d->m : 0; }
vlm_dataset_layout vlm_dataset_layout_of(const vlm_dataset *d) {
    return d ? d->layout : VLM_DATASET_RAW;
}
int vlm_dataset_image_size(const vlm_dataset *d) { return d ? d->image_size : 0; }
const char *vlm_dataset_source(const vlm_dataset *d) { return d && d->source ? d->source : ""; }
bool vlm_dataset_has_labels(const vlm_dataset *d) { return d && d->labels; }
int vlm_dataset_num_classes(const vlm_dataset *d) { return d ? d->k : 0; }

void vlm_dataset_image_dims(const vlm_dataset *d, int *height, int *width) {
    *height = d ? d->height : 0;
    *width = d ? d->width : 0;
}

const char *vlm_dataset_class_name(const vlm_dataset *d, int k) {
    return d && k >= 0 && k < d->k ? d->class_names[k] : NULL;
}

int64_t vlm_dataset_caption_image(const vlm_dataset *d, int64_t j) {
    if (!d || j < 0 || j >= d->m)
        return vlm_set_error("dataset '%s': caption %lld is out of range (%lld captions)",
                             d ? d->path : "?", (long long)j, d ? (long long)d->m : 0LL);
    return d->caption_image[j];
}

int32_t vlm_dataset_label(const vlm_dataset *d, int64_t i) {
    if (!d || !d->labels) return vlm_set_error("dataset '%s': has no '/labels'", d ? d->path : "?");
    if (i < 0 || i >= d->n)
        return vlm_set_error("dataset '%s': image %lld is out of range (%lld images)", d->path,
                             (long long)i, (long long)d->n);
    return d->labels[i];
}

/* ---- reader: random access ----------------------------------------------------- */

/* Reads element i of a 1-D vlen dataset into *buf (lock held). */
static int read_vlen(vlm_dataset *d, hid_t ds, hid_t memtype, int64_t i, void *buf) {
    hsize_t start[1] = {(hsize_t)i}, one[1] = {1};
    hid_t fs = H5Dget_space(ds), ms = H5Screate_simple(1, one, NULL);
    int rc = -1;
    if (fs >= 0 && ms >= 0 &&
        H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, one, NULL) >= 0 &&
        H5Dread(ds, memtype, ms, fs, d->dxpl, buf) >= 0)
        rc = 0;
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    return rc;
}

static int read_raw_image(vlm_dataset *d, int64_t i, vlm_image *out) {
    if (vlm_image_alloc(out, d->width, d->height)) return -1;
    hsize_t start[4] = {(hsize_t)i}, cnt[4] = {1, (hsize_t)d->height, (hsize_t)d->width, 3};
    h5_lock();
    hid_t fs = H5Dget_space(d->images), ms = H5Screate_simple(4, cnt, NULL);
    int rc = 0;
    if (fs < 0 || ms < 0 || H5Sselect_hyperslab(fs, H5S_SELECT_SET, start, NULL, cnt, NULL) < 0 ||
        H5Dread(d->images, H5T_NATIVE_UCHAR, ms, fs, H5P_DEFAULT, out->rgb) < 0)
        rc = h5_error("dataset '%s': cannot read '/images'[%lld]", d->path, (long long)i);
    if (fs >= 0) H5Sclose(fs);
    if (ms >= 0) H5Sclose(ms);
    h5_unlock();
    if (rc) vlm_image_free(out);
    return rc;
}

static int read_jpeg_image(vlm_dataset *d, int64_t i, vlm_image *out) {
    hvl_t blob = {0};
    h5_lock();
    d->blob_limit = (size_t)64 << 20; /* = the default vlm_image_limits max_bytes */
    d->blob_too_big = false;
    int rc = read_vlen(d, d->images, d->blob_type, i, &blob);
    if (rc) {
        h5_error("dataset '%s': cannot read '/jpeg'[%lld]", d->path, (long long)i);
        if (d->blob_too_big)
            vlm_set_error("dataset '%s': '/jpeg'[%lld] is over the 64 MiB image limit", d->path,
                          (long long)i);
    }
    d->blob_limit = (size_t)1 << 30;
    h5_unlock();
    if (rc) return -1;
    char name[64 + 4096];
    snprintf(name, sizeof name, "%s:/jpeg[%lld]", d->path, (long long)i);
    rc = vlm_image_decode(blob.p, blob.len, name, NULL, out);
    free(blob.p);
    return rc;
}

int vlm_dataset_read_image(vlm_dataset *d, int64_t i, vlm_image *out) {
    out->rgb = NULL;
    out->width = out->height = 0;
    if (!d) return vlm_set_error("dataset: NULL dataset");
    if (i < 0 || i >= d->n)
        return vlm_set_error("dataset '%s': image %lld is out of range (%lld images)", d->path,
                             (long long)i, (long long)d->n);
    return d->layout == VLM_DATASET_RAW ? read_raw_image(d, i, out) : read_jpeg_image(d, i, out);
}

char *vlm_dataset_read_caption(vlm_dataset *d, int64_t j) {
    if (!d || j < 0 || j >= d->m) {
        vlm_set_error("dataset '%s': caption %lld is out of range (%lld captions)",
                      d ? d->path : "?", (long long)j, d ? (long long)d->m : 0LL);
        return NULL;
    }
    char *s = NULL;
    h5_lock();
    int rc = read_vlen(d, d->captions, d->str_type, j, &s);
    if (rc) h5_error("dataset '%s': cannot read '/captions'[%lld]", d->path, (long long)j);
    h5_unlock();
    if (rc) return NULL;
    if (!s && !(s = strdup(""))) vlm_set_error("dataset '%s': out of memory", d->path);
    return s;
}

char **vlm_dataset_read_captions(vlm_dataset *d, int64_t *n) {
    *n = 0;
    int64_t m = vlm_dataset_num_captions(d);
    char **texts = calloc((size_t)(m ? m : 1), sizeof *texts);
    if (!texts) {
        vlm_set_error("dataset '%s': out of memory for %lld captions", d->path, (long long)m);
        return NULL;
    }
    for (int64_t j = 0; j < m; j++) {
        if (!(texts[j] = vlm_dataset_read_caption(d, j))) {
            vlm_strings_free(texts, j);
            return NULL;
        }
    }
    *n = m;
    return texts;
}

void vlm_strings_free(char **s, int64_t n) {
    for (int64_t i = 0; s && i < n; i++) free(s[i]);
    free(s);
}
