/* loader.c - the training data loader: epoch orders, sharding, background
 * workers filling preallocated batch slots, in-order delivery and resumable
 * positions. The contract is in data.h ("the loader").
 *
 * Batches are numbered globally, g = epoch * B + index (B batches per epoch),
 * so the stream is one sequence and a position is one number. Slot g % S holds
 * batch g (S = queue_depth + 1 slots). The consumer holds the batch it was
 * last given (head - 1); workers may start batches up to head + depth - 1,
 * which keeps them off the held slot without any per-slot locking.
 *
 * Work is handed out one sample at a time, in order (claim_g, claim_i), under
 * the mutex; the sample itself is read, decoded, augmented and tokenized
 * outside it. Everything random about a sample is derived from (seed, epoch,
 * position in the epoch's order), never from a stream shared by the threads,
 * which is why the thread count and timing cannot change any batch. */
#include "data.h"

#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_THREADS 256
#define MAX_DEPTH 64
#define MAX_BATCH (1 << 20)
#define MAX_CTX (1 << 20)
#define MAX_SIDE 8192 /* one image of side 8192 is already 800 MB of floats */
#define NO_ERROR INT_MAX

/* Each derived stream has its own tag, so the shuffle, the caption draw and
 * the augmentation never reuse each other's random numbers. */
enum { TAG_ORDER = 1, TAG_CAPTION = 2, TAG_AUGMENT = 3 };

typedef struct {
    vlm_batch b;     /* what the caller sees; points into the arrays below */
    int64_t g;       /* global number of the batch in this slot, -1 = none */
    int done;        /* samples finished (successfully or not) */
    bool ready;      /* done == b.n */
    int err_sample;  /* lowest failed sample (deterministic message), NO_ERROR */
    char err[1536];
    int64_t *image, *caption;
    int32_t *label;
    float *pixels;
    char **text;
    int32_t *ids;
    uint8_t *mask;
} slot;

struct vlm_loader {
    vlm_dataset *ds;
    vlm_loader_opts o;
    int64_t units, per_rank, batches; /* U, P, B */
    int64_t *cap_start, *cap_list;    /* image mode: image i's captions, CSR */
    int64_t *order;                   /* the order of epoch order_epoch */
    int64_t order_epoch;
    size_t img_floats;                /* 3 * size * size */
    int nslots;
    slot *slots;

    pthread_mutex_t mu;
    pthread_cond_t work;  /* to workers: a slot came free, or stop */
    pthread_cond_t ready; /* to the consumer: a batch is complete */
    int64_t head;         /* next batch to deliver; written by the consumer only */
    int64_t claim_g;      /* next sample to hand out: claim_i of batch claim_g */
    int claim_i;
    bool stop;
    pthread_t *threads;
    int running;          /* threads started and not yet joined */
};

/* ---- randomness -------------------------------------------------------------- */

/* splitmix64, the generator of vlm_image_to_input's rng state. */
static uint64_t sm_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* A stream state from (seed, tag, epoch, position): the inputs are folded in
 * one at a time between splitmix64 mixing steps (each a bijection), so nearby
 * seeds / epochs / positions give unrelated streams. */
static uint64_t derive(uint64_t seed, uint64_t tag, int64_t epoch, int64_t pos) {
    uint64_t s = seed;
    s = sm_next(&s) ^ tag;
    s = sm_next(&s) ^ (uint64_t)epoch;
    s = sm_next(&s) ^ (uint64_t)pos;
    return sm_next(&s);
}

/* Uniform in [0, n), n >= 1, without modulo bias: draws below 2^64 mod n are
 * rejected, so the accepted range is a multiple of n. */
static uint64_t below(uint64_t *s, uint64_t n) {
    uint64_t reject = (0 - n) % n;
    for (;;) {
        uint64_t r = sm_next(s);
        if (r >= reject) return r % n;
    }
}

/* The epoch's order of the U units: Fisher-Yates (Durstenfeld, from the end)
 * on the identity, with the (seed, epoch) stream. Lock held; O(U) once per
 * epoch. */
static void make_order(vlm_loader *l, int64_t epoch) {
    for (int64_t i = 0; i < l->units; i++) l->order[i] = i;
    if (!l->o.sequential) {
        uint64_t s = derive(l->o.seed, TAG_ORDER, epoch, 0);
        for (int64_t i = l->units - 1; i > 0; i--) {
            int64_t j = (int64_t)below(&s, (uint64_t)i + 1), t = l->order[i];
            l->order[i] = l->order[j];
            l->order[j] = t;
        }
    }
    l->order_epoch = epoch;
}

/* Position in the epoch's order of sample i of batch index k (sharding). */
static int64_t order_pos(const vlm_loader *l, int64_t k, int i) {
    return l->o.rank + (int64_t)l->o.world_size * (k * l->o.batch_size + i);
}

/* ---- workers ------------------------------------------------------------------- */

/* Assigns batch g to slot s: which samples, their captions and labels. Lock
 * held; the slot's previous batch has been handed back by the consumer. */
static void slot_setup(vlm_loader *l, slot *s, int64_t g) {
    int64_t e = g / l->batches, k = g % l->batches, first = k * l->o.batch_size;
    if (l->order_epoch != e) make_order(l, e);
    int64_t left = l->per_rank - first;
    int n = left < l->o.batch_size ? (int)left : l->o.batch_size;
    for (int i = 0; i < l->o.batch_size; i++) {
        free(s->text[i]);
        s->text[i] = NULL;
    }
    for (int i = 0; i < n; i++) {
        int64_t p = order_pos(l, k, i), u = l->order[p];
        if (l->o.unit == VLM_SAMPLE_CAPTION) {
            s->caption[i] = u;
            s->image[i] = vlm_dataset_caption_image(l->ds, u);
        } else {
            int64_t c = l->cap_start[u + 1] - l->cap_start[u];
            uint64_t r = derive(l->o.seed, TAG_CAPTION, e, p);
            s->image[i] = u;
            s->caption[i] = c ? l->cap_list[l->cap_start[u] + (int64_t)below(&r, (uint64_t)c)] : -1;
        }
        s->label[i] = vlm_dataset_has_labels(l->ds) ? vlm_dataset_label(l->ds, s->image[i]) : -1;
    }
    s->b.n = n;
    s->b.epoch = e;
    s->b.index = k;
    s->b.last = k == l->batches - 1;
    s->g = g;
    s->done = 0;
    s->ready = false;
    s->err_sample = NO_ERROR;
    s->err[0] = '\0';
}

/* Reads, decodes, augments and tokenizes sample i of slot s (no lock: the
 * slot's indices are fixed and each sample owns its rows). 0 or -1 with error. */
static int load_sample(vlm_loader *l, slot *s, int i) {
    int64_t p = order_pos(l, s->b.index, i);
    vlm_image img;
    if (vlm_dataset_read_image(l->ds, s->image[i], &img)) return -1;
    uint64_t rng = derive(l->o.seed, TAG_AUGMENT, s->b.epoch, p);
    int rc = vlm_image_to_input(&img, &l->o.image, &rng, s->pixels + (size_t)i * l->img_floats);
    vlm_image_free(&img);
    if (rc) return -1;
    char *text = s->caption[i] >= 0 ? vlm_dataset_read_caption(l->ds, s->caption[i]) : strdup("");
    if (!text) return s->caption[i] >= 0 ? -1 : vlm_set_error("out of memory");
    s->text[i] = text;
    if (!l->o.tokenize) return 0;
    size_t row = (size_t)i * (size_t)l->o.ctx_len;
    memset(s->ids + row, 0, (size_t)l->o.ctx_len * sizeof *s->ids);
    memset(s->mask + row, 0, (size_t)l->o.ctx_len);
    vlm_clear_error();
    if (l->o.tokenize(l->o.tokenize_user, text, s->ids + row, s->mask + row, l->o.ctx_len) >= 0)
        return 0;
    return vlm_last_error()[0] ? -1 : vlm_set_error("tokenize callback failed");
}

/* Records sample i's outcome (lock held); the lowest failing sample's message
 * is kept so the error does not depend on which thread finished first. */
static void sample_done(vlm_loader *l, slot *s, int i, int rc) {
    if (rc && i < s->err_sample) {
        s->err_sample = i;
        snprintf(s->err, sizeof s->err,
                 "loader: epoch %lld batch %lld sample %d (image %lld, caption %lld): %s",
                 (long long)s->b.epoch, (long long)s->b.index, i, (long long)s->image[i],
                 (long long)s->caption[i], vlm_last_error());
    }
    if (++s->done == s->b.n) {
        s->ready = true;
        pthread_cond_signal(&l->ready);
    }
}

static void *worker(void *arg) {
    vlm_loader *l = arg;
    pthread_mutex_lock(&l->mu);
    for (;;) {
        while (!l->stop && l->claim_g >= l->head + l->o.queue_depth)
            pthread_cond_wait(&l->work, &l->mu);
        if (l->stop) break;
        slot *s = &l->slots[l->claim_g % l->nslots];
        int i = l->claim_i;
        if (i == 0) slot_setup(l, s, l->claim_g);
        if (++l->claim_i == s->b.n) {
            l->claim_g++;
            l->claim_i = 0;
        }
        pthread_mutex_unlock(&l->mu);
        int rc = load_sample(l, s, i);
        pthread_mutex_lock(&l->mu);
        sample_done(l, s, i, rc);
    }
    pthread_mutex_unlock(&l->mu);
    return NULL;
}

/* Asks the workers to stop and joins them; each finishes its current sample. */
static void stop_workers(vlm_loader *l) {
    pthread_mutex_lock(&l->mu);
    l->stop = true;
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    for (int t = 0; t < l->running; t++) pthread_join(l->threads[t], NULL);
    l->running = 0;
}

/* Empties the slots and starts the workers at global batch g. */
static int start_workers(vlm_loader *l, int64_t g) {
    for (int k = 0; k < l->nslots; k++) {
        l->slots[k].g = -1;
        l->slots[k].ready = false;
    }
    l->head = l->claim_g = g;
    l->claim_i = 0;
    l->stop = false;
    for (int t = 0; t < l->o.num_threads; t++) {
        int rc = pthread_create(&l->threads[t], NULL, worker, l);
        if (rc) {
            stop_workers(l);
            return vlm_set_error("loader: cannot start worker thread %d (%s)", t, strerror(rc));
        }
        l->running++;
    }
    return 0;
}

/* ---- setup ----------------------------------------------------------------------- */

vlm_loader_opts vlm_loader_opts_default(int batch_size, int image_size) {
    return (vlm_loader_opts){.batch_size = batch_size, .unit = VLM_SAMPLE_IMAGE,
                             .image = vlm_image_opts_default(image_size)};
}

/* Runs the image options (at output size 1) on a 1x1 image, so a bad option
 * fails here, with vlm_image_to_input's message, not in every sample. */
static int check_image_opts(const vlm_image_opts *io) {
    if (io->size <= 0 || io->size > MAX_SIDE)
        return vlm_set_error("loader: image size %d is not in 1..%d", io->size, MAX_SIDE);
    vlm_image_opts one_px = *io;
    one_px.size = 1;
    uint8_t px[3] = {0, 0, 0};
    vlm_image one = {1, 1, px};
    float out[3];
    uint64_t rng = 0;
    return vlm_image_to_input(&one, &one_px, &rng, out);
}

static int check_opts(vlm_dataset *ds, vlm_loader_opts *o) {
    if (!ds || !o) return vlm_set_error("loader: NULL dataset or options");
    if (o->batch_size < 1 || o->batch_size > MAX_BATCH)
        return vlm_set_error("loader: batch_size %d is not in 1..%d", o->batch_size, MAX_BATCH);
    if (o->unit != VLM_SAMPLE_IMAGE && o->unit != VLM_SAMPLE_CAPTION)
        return vlm_set_error("loader: unknown sampling unit %d", (int)o->unit);
    if (!o->world_size) o->world_size = 1;
    if (o->world_size < 1 || o->rank < 0 || o->rank >= o->world_size)
        return vlm_set_error("loader: rank %d of world_size %d", o->rank, o->world_size);
    if (o->tokenize && (o->ctx_len < 1 || o->ctx_len > MAX_CTX))
        return vlm_set_error("loader: ctx_len %d is not in 1..%d", o->ctx_len, MAX_CTX);
    if (!o->tokenize) o->ctx_len = 0;
    if (!o->num_threads) o->num_threads = 2;
    if (!o->queue_depth) o->queue_depth = 3;
    if (o->num_threads < 1 || o->num_threads > MAX_THREADS)
        return vlm_set_error("loader: num_threads %d is not in 1..%d", o->num_threads, MAX_THREADS);
    if (o->queue_depth < 1 || o->queue_depth > MAX_DEPTH)
        return vlm_set_error("loader: queue_depth %d is not in 1..%d", o->queue_depth, MAX_DEPTH);
    return check_image_opts(&o->image);
}

/* U, P and B from the dataset and options (see data.h on sharding). */
static int count_units(vlm_loader *l) {
    const vlm_loader_opts *o = &l->o;
    bool img = o->unit == VLM_SAMPLE_IMAGE;
    l->units = img ? vlm_dataset_num_images(l->ds) : vlm_dataset_num_captions(l->ds);
    l->per_rank = l->units / o->world_size;
    if (l->per_rank == 0)
        return vlm_set_error("loader: %lld %s cannot be shared by %d ranks", (long long)l->units,
                             img ? "images" : "captions", o->world_size);
    l->batches = o->drop_last ? l->per_rank / o->batch_size
                              : (l->per_rank + o->batch_size - 1) / o->batch_size;
    if (l->batches == 0)
        return vlm_set_error("loader: batch_size %d with drop_last is more than the %lld "
                             "samples of an epoch (per rank)", o->batch_size, (long long)l->per_rank);
    return 0;
}

/* Image mode: the captions of each image, in index order (CSR by counting). */
static int index_captions(vlm_loader *l) {
    int64_t n = vlm_dataset_num_images(l->ds), m = vlm_dataset_num_captions(l->ds);
    l->cap_start = calloc((size_t)n + 1, sizeof *l->cap_start);
    l->cap_list = malloc(((size_t)m + 1) * sizeof *l->cap_list);
    int64_t *next = malloc(((size_t)n + 1) * sizeof *next);
    if (!l->cap_start || !l->cap_list || !next) {
        free(next);
        return vlm_set_error("loader: out of memory indexing %lld captions", (long long)m);
    }
    for (int64_t j = 0; j < m; j++) l->cap_start[vlm_dataset_caption_image(l->ds, j) + 1]++;
    for (int64_t i = 0; i < n; i++) l->cap_start[i + 1] += l->cap_start[i];
    memcpy(next, l->cap_start, (size_t)n * sizeof *next);
    for (int64_t j = 0; j < m; j++) l->cap_list[next[vlm_dataset_caption_image(l->ds, j)]++] = j;
    free(next);
    return 0;
}

static int slot_alloc(vlm_loader *l, slot *s) {
    size_t bs = (size_t)l->o.batch_size, ctx = (size_t)l->o.ctx_len;
    s->image = calloc(bs, sizeof *s->image);
    s->caption = calloc(bs, sizeof *s->caption);
    s->label = calloc(bs, sizeof *s->label);
    s->text = calloc(bs, sizeof *s->text);
    s->pixels = calloc(bs * l->img_floats, sizeof *s->pixels);
    if (ctx) {
        s->ids = calloc(bs * ctx, sizeof *s->ids);
        s->mask = calloc(bs * ctx, 1);
    }
    if (!s->image || !s->caption || !s->label || !s->text || !s->pixels ||
        (ctx && (!s->ids || !s->mask)))
        return vlm_set_error("loader: out of memory for a batch of %zu", bs);
    s->b = (vlm_batch){.size = l->o.image.size, .ctx_len = l->o.ctx_len, .image = s->image,
                       .caption = s->caption, .label = s->label, .pixels = s->pixels,
                       .text = (const char *const *)s->text, .ids = s->ids, .mask = s->mask};
    s->g = -1;
    return 0;
}

static void slot_free(vlm_loader *l, slot *s) {
    for (int i = 0; s->text && i < l->o.batch_size; i++) free(s->text[i]);
    free(s->text);
    free(s->image);
    free(s->caption);
    free(s->label);
    free(s->pixels);
    free(s->ids);
    free(s->mask);
}

static int check_pos(const vlm_loader *l, vlm_loader_pos pos) {
    if (pos.epoch < 0 || pos.epoch > INT64_MAX / l->batches - 1 || pos.batch < 0 ||
        pos.batch >= l->batches)
        return vlm_set_error("loader: position epoch %lld batch %lld is out of range (%lld "
                             "batches per epoch)", (long long)pos.epoch, (long long)pos.batch,
                             (long long)l->batches);
    return 0;
}

/* Everything but the threads and the synchronisation objects. */
static int loader_alloc(vlm_loader *l) {
    if (count_units(l) || check_pos(l, l->o.start)) return -1;
    if (l->o.unit == VLM_SAMPLE_IMAGE && index_captions(l)) return -1;
    l->img_floats = (size_t)3 * l->o.image.size * l->o.image.size;
    l->order = malloc((size_t)l->units * sizeof *l->order);
    l->nslots = l->o.queue_depth + 1;
    l->slots = calloc((size_t)l->nslots, sizeof *l->slots);
    l->threads = calloc((size_t)l->o.num_threads, sizeof *l->threads);
    if (!l->order || !l->slots || !l->threads) return vlm_set_error("loader: out of memory");
    for (int k = 0; k < l->nslots; k++)
        if (slot_alloc(l, &l->slots[k])) return -1;
    l->order_epoch = -1;
    return 0;
}

static void loader_release(vlm_loader *l) {
    for (int k = 0; l->slots && k < l->nslots; k++) slot_free(l, &l->slots[k]);
    free(l->slots);
    free(l->threads);
    free(l->order);
    free(l->cap_start);
    free(l->cap_list);
    free(l);
}

vlm_loader *vlm_loader_new(vlm_dataset *ds, const vlm_loader_opts *o) {
    vlm_loader_opts opts;
    if (o) opts = *o;
    if (check_opts(ds, o ? &opts : NULL)) return NULL;
    vlm_loader *l = calloc(1, sizeof *l);
    if (!l) {
        vlm_set_error("loader: out of memory");
        return NULL;
    }
    l->ds = ds;
    l->o = opts;
    if (loader_alloc(l)) {
        loader_release(l);
        return NULL;
    }
    pthread_mutex_init(&l->mu, NULL);
    pthread_cond_init(&l->work, NULL);
    pthread_cond_init(&l->ready, NULL);
    if (start_workers(l, l->o.start.epoch * l->batches + l->o.start.batch)) {
        vlm_loader_free(l);
        return NULL;
    }
    return l;
}

void vlm_loader_free(vlm_loader *l) {
    if (!l) return;
    stop_workers(l);
    pthread_cond_destroy(&l->ready);
    pthread_cond_destroy(&l->work);
    pthread_mutex_destroy(&l->mu);
    loader_release(l);
}

/* ---- the consumer side ----------------------------------------------------------- */

const vlm_batch *vlm_loader_next(vlm_loader *l) {
    if (!l) {
        vlm_set_error("loader: NULL loader");
        return NULL;
    }
    if (!l->running) {
        vlm_set_error("loader: no worker is running (a seek failed to restart them)");
        return NULL;
    }
    pthread_mutex_lock(&l->mu);
    slot *s = &l->slots[l->head % l->nslots];
    while (s->g != l->head || !s->ready) pthread_cond_wait(&l->ready, &l->mu);
    l->head++; /* hands back the batch given last time: its slot may be refilled */
    pthread_cond_broadcast(&l->work);
    pthread_mutex_unlock(&l->mu);
    if (s->err_sample != NO_ERROR) {
        vlm_set_error("%s", s->err);
        return NULL;
    }
    return &s->b;
}

/* head is written only by the consumer thread, the one calling this. */
vlm_loader_pos vlm_loader_position(const vlm_loader *l) {
    if (!l) return (vlm_loader_pos){0, 0};
    return (vlm_loader_pos){l->head / l->batches, l->head % l->batches};
}

int vlm_loader_seek(vlm_loader *l, vlm_loader_pos pos) {
    if (!l) return vlm_set_error("loader: NULL loader");
    if (check_pos(l, pos)) return -1;
    stop_workers(l);
    return start_workers(l, pos.epoch * l->batches + pos.batch);
}

int64_t vlm_loader_batches_per_epoch(const vlm_loader *l) { return l ? l->batches : 0; }
int64_t vlm_loader_samples_per_epoch(const vlm_loader *l) { return l ? l->per_rank : 0; }
