/* runlog.h - private to train/: the progress line (stderr) and the metrics
 * log (RUN_DIR/metrics.jsonl) of a training run. */
#ifndef VLM_TRAIN_RUNLOG_H
#define VLM_TRAIN_RUNLOG_H

#include "train.h"

#include <stdio.h>

typedef struct {
    FILE *metrics;
    bool tty;             /* stderr is a terminal: one \r-updated line */
    bool quiet;           /* no progress output at all */
    bool line_open;       /* a \r line is on screen (clear it before other output) */
    int log_every;
    int64_t total, first_step;
    double t_start;       /* this process's start */
    double train_seconds; /* time inside steps only (evaluation and saving excluded) */
    double t_last_draw;
    /* since the last metrics line */
    double loss_sum, interval_seconds;
    int loss_n;
    int64_t interval_samples;
} vlm_runlog;

double vlm_now(void);
/* Opens RUN_DIR/metrics.jsonl: truncated for a fresh run; for a resumed run
 * (resume_step >= 0) the lines of steps after resume_step (written after the
 * checkpoint by the interrupted process) are dropped, so the log reads as one
 * uninterrupted run. */
int vlm_runlog_open(vlm_runlog *l, const char *run_dir, int64_t resume_step, int64_t total,
                    int log_every, bool quiet);
void vlm_runlog_close(vlm_runlog *l);
/* After each step: progress line, and a "train" event every log_every steps. */
void vlm_runlog_step(vlm_runlog *l, const vlm_trainer *t, const vlm_step_stats *st,
                     double step_seconds);
/* An "eval" event of metrics m (a JSON object, consumed; final: the end-of-run
 * evaluation). */
void vlm_runlog_eval(vlm_runlog *l, int64_t step, cJSON *m, bool final);
/* Erases the progress line (if one is on screen) before other output. */
void vlm_runlog_clear(vlm_runlog *l);
/* A message on stderr that does not collide with the progress line. */
void vlm_runlog_note(vlm_runlog *l, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
