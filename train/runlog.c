/* runlog.c - progress and metrics of a training run. On a terminal the
 * progress is one line redrawn in place (at most 10 times a second) and kept
 * every log_every steps; otherwise (a log file, CI) a plain line is printed
 * every log_every steps. metrics.jsonl gets one JSON object per line: "train"
 * events every log_every steps and "eval" events. */
#include "runlog.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double vlm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Keeps the lines of steps <= last (lines that do not parse are dropped: a
 * crash may have cut the final one). Rewritten through a temp file + rename. */
static int truncate_metrics(const char *path, int64_t last) {
    FILE *in = fopen(path, "r");
    if (!in) return 0; /* no log yet */
    char tmp[4300];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return vlm_set_error("%s: cannot write", tmp);
    }
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, in) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "step");
        if (cJSON_IsNumber(s) && s->valuedouble <= (double)last) fputs(line, out);
        cJSON_Delete(j);
    }
    free(line);
    fclose(in);
    if (fclose(out) || rename(tmp, path)) {
        unlink(tmp);
        return vlm_set_error("%s: cannot rewrite", path);
    }
    return 0;
}

int vlm_runlog_open(vlm_runlog *l, const char *run_dir, int64_t resume_step, int64_t total,
                    int log_every, bool quiet) {
    memset(l, 0, sizeof *l);
    char path[4200];
    snprintf(path, sizeof path, "%s/metrics.jsonl", run_dir);
    if (resume_step >= 0 && truncate_metrics(path, resume_step)) return -1;
    if (!(l->metrics = fopen(path, resume_step >= 0 ? "a" : "w")))
        return vlm_set_error("%s: cannot open for writing", path);
    l->tty = isatty(STDERR_FILENO);
    l->quiet = quiet;
    l->log_every = log_every;
    l->total = total;
    l->first_step = resume_step > 0 ? resume_step : 0;
    l->t_start = vlm_now();
    return 0;
}

void vlm_runlog_close(vlm_runlog *l) {
    if (l->line_open) fputc('\n', stderr);
    l->line_open = false;
    if (l->metrics) fclose(l->metrics);
    l->metrics = NULL;
}

static void write_event(vlm_runlog *l, cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    if (s && l->metrics) {
        fprintf(l->metrics, "%s\n", s);
        fflush(l->metrics);
    }
    free(s);
    cJSON_Delete(o);
}

static void fmt_duration(char *buf, size_t cap, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600) snprintf(buf, cap, "%ldh%02ldm", t / 3600, t / 60 % 60);
    else if (t >= 60) snprintf(buf, cap, "%ldm%02lds", t / 60, t % 60);
    else snprintf(buf, cap, "%lds", t);
}

static void draw(vlm_runlog *l, const vlm_trainer *t, const vlm_step_stats *st, bool keep) {
    int64_t done = t->step - l->first_step;
    double per_step = done > 0 ? l->train_seconds / (double)done : 0;
    char eta[32], el[32];
    fmt_duration(eta, sizeof eta, per_step * (double)(t->total_steps - t->step));
    fmt_duration(el, sizeof el, vlm_now() - l->t_start);
    double ips = l->interval_seconds > 0 ? (double)l->interval_samples / l->interval_seconds : 0;
    fprintf(stderr, "%sstep %lld/%lld (%.0f%%) | loss %.4f | lr %.2e | %.0f img/s | ETA %s | %s",
            l->tty ? "\r" : "", (long long)t->step, (long long)t->total_steps,
            100.0 * (double)t->step / (double)t->total_steps, st->loss, st->lr, ips, eta, el);
    if (t->skipped) fprintf(stderr, " | skipped %lld", (long long)t->skipped);
    if (l->tty && !keep) {
        fputs("\033[K", stderr); /* clear what a longer previous line left */
        l->line_open = true;
    } else {
        fputs(l->tty ? "\033[K\n" : "\n", stderr);
        l->line_open = false;
    }
    fflush(stderr);
}

static void train_event(vlm_runlog *l, const vlm_trainer *t, const vlm_step_stats *st) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return;
    cJSON_AddStringToObject(o, "event", "train");
    cJSON_AddNumberToObject(o, "step", (double)t->step);
    cJSON_AddNumberToObject(o, "epoch", (double)t->epoch);
    cJSON_AddNumberToObject(o, "loss", st->loss);
    cJSON_AddNumberToObject(o, "loss_avg", l->loss_n ? l->loss_sum / l->loss_n : st->loss);
    cJSON_AddNumberToObject(o, "lr", st->lr);
    if (isfinite(st->grad_norm)) cJSON_AddNumberToObject(o, "grad_norm", st->grad_norm);
    if (st->scale > 0) cJSON_AddNumberToObject(o, "loss_scale", st->scale);
    cJSON_AddNumberToObject(o, "skipped", (double)t->skipped);
    cJSON_AddNumberToObject(o, "samples", (double)t->samples);
    cJSON_AddNumberToObject(o, "images_per_s",
                            l->interval_seconds > 0 ? l->interval_samples / l->interval_seconds : 0);
    cJSON_AddNumberToObject(o, "elapsed_s", vlm_now() - l->t_start);
    write_event(l, o);
}

void vlm_runlog_step(vlm_runlog *l, const vlm_trainer *t, const vlm_step_stats *st,
                     double step_seconds) {
    l->train_seconds += step_seconds;
    l->interval_seconds += step_seconds;
    l->interval_samples += st->samples;
    l->loss_sum += st->loss;
    l->loss_n++;
    bool log = l->log_every > 0 && t->step % l->log_every == 0;
    bool last = t->step == t->total_steps;
    if (log || last) train_event(l, t, st);
    if (!l->quiet) {
        double now = vlm_now();
        if (log || last || (l->tty && now - l->t_last_draw >= 0.1)) {
            draw(l, t, st, log || last || !l->tty);
            l->t_last_draw = now;
        }
    }
    if (log || last) {
        l->loss_sum = l->interval_seconds = 0;
        l->loss_n = 0;
        l->interval_samples = 0;
    }
}

void vlm_runlog_eval(vlm_runlog *l, int64_t step, cJSON *o, bool final) {
    if (o) {
        cJSON *ev = cJSON_CreateString("eval");
        if (ev) cJSON_AddItemToObject(o, "event", ev);
        cJSON_AddNumberToObject(o, "step", (double)step);
        cJSON_AddBoolToObject(o, "final", final);
    }
    write_event(l, o);
}

void vlm_runlog_clear(vlm_runlog *l) {
    if (!l->line_open) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    l->line_open = false;
}

void vlm_runlog_note(vlm_runlog *l, const char *fmt, ...) {
    vlm_runlog_clear(l);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}
