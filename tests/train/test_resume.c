/* test_resume.c - checkpoints and exact resume through the CLI, with
 * shuffling, augmentation and dropout on:
 *  - 40 steps straight == 17 steps, stop, new process, resume, 23 steps: the
 *    final model.safetensors bytes and every logged loss are identical (also
 *    resuming from a checkpoint file, and across a fallback);
 *  - a checkpoint of another model config is refused, naming the key;
 *  - a damaged newest checkpoint (truncated, or one flipped byte) is skipped
 *    with a warning, the previous one is used, and a stale temporary file of
 *    an interrupted save is never taken for a checkpoint;
 *  - Ctrl-C (SIGINT) saves a checkpoint and exits with status 130. */
#include "cli.h"
#include "test.h"
#include "train.h"

#include <signal.h>
#include <time.h>

static void test_exact_resume(void) {
    CHECK(vlm_run("A.log", "pretrain -c tiny.json --set out=A") == 0, "straight run");
    CHECK(vlm_run("B1.log", "pretrain -c tiny.json --set out=B --stop-after 17") == 0, "first half");
    CHECK(exists(tpath("B/checkpoints/step-00000017.safetensors")), "checkpoint at the stop");
    CHECK(!exists(tpath("B/model.safetensors")), "no final model yet");
    CHECK(vlm_run("B2.log", "pretrain --resume B") == 0, "resume");
    CHECK(file_has(tpath("B2.log"), "resumed from B/checkpoints/step-00000017.safetensors"), "log");
    CHECK(same_bytes(tpath("A/model.safetensors"), tpath("B/model.safetensors")),
          "resumed weights are bitwise those of the straight run");
    CHECK(same_losses(tpath("A/metrics.jsonl"), tpath("B/metrics.jsonl")), "same losses");

    /* --resume FILE, stopping twice */
    CHECK(vlm_run("C1.log", "pretrain -c tiny.json --set out=C --stop-after 9") == 0, "C 9");
    CHECK(vlm_run("C2.log", "pretrain --resume C/checkpoints/step-00000009.safetensors "
                            "--stop-after 31") == 0, "C 31");
    CHECK(vlm_run("C3.log", "pretrain --resume C") == 0, "C end");
    CHECK(same_bytes(tpath("A/model.safetensors"), tpath("C/model.safetensors")), "C == A");
    CHECK(same_losses(tpath("A/metrics.jsonl"), tpath("C/metrics.jsonl")), "C losses");
}

static void test_other_model_refused(void) {
    int st = vlm_run("D.log", "pretrain -c tiny.json --set model.vision.mlp=48 --resume B");
    CHECK(st == 1, "exit %d", st);
    CHECK(file_has(tpath("D.log"), "different model: model.vision.mlp is 48 in the config but "
                                   "64 in the checkpoint"), "names the key");
    st = vlm_run("D2.log", "pretrain -c tiny.json --set out=B");
    CHECK(st == 1 && file_has(tpath("D2.log"), "already holds a run"), "no overwrite, exit %d", st);
}

static void truncate_file(const char *path) {
    size_t n = 0;
    char *s = slurp(path, &n);
    FILE *f = fopen(path, "wb");
    if (f && s) fwrite(s, 1, n / 2, f);
    if (f) fclose(f);
    free(s);
}

static void flip_byte(const char *path, long at) {
    FILE *f = fopen(path, "r+b");
    if (!f) return;
    fseek(f, at, SEEK_END);
    int c = fgetc(f);
    fseek(f, at, SEEK_END);
    fputc(c ^ 0x10, f);
    fclose(f);
}

static void test_damaged_checkpoints(void) {
    CHECK(vlm_run("E1.log", "pretrain -c tiny.json --set out=E --stop-after 30") == 0, "E 30");
    /* keep 2: step 20 and 30; 30 loses its second half, and a crashed save left a temp file */
    truncate_file(tpath("E/checkpoints/step-00000030.safetensors"));
    write_text(tpath("E/checkpoints/step-00000040.safetensors.tmp.12345"), "half a checkpoint");
    CHECK(vlm_ckpt_open(tpath("E/checkpoints/step-00000030.safetensors")) == NULL, "truncated");
    CHECK(vlm_run("E2.log", "pretrain --resume E --stop-after 33") == 0, "resume past the damage");
    CHECK(file_has(tpath("E2.log"), "warning: skipping unusable checkpoint"), "warned");
    CHECK(file_has(tpath("E2.log"), "resumed from E/checkpoints/step-00000020.safetensors"),
          "fell back to the previous checkpoint");
    CHECK(exists(tpath("E/checkpoints/step-00000030.safetensors.corrupt")), "kept aside");
    CHECK(!exists(tpath("E/checkpoints/step-00000040.safetensors.tmp.12345")), "temp removed");

    /* one flipped byte inside the weights: the checksum catches it */
    const char *ck = tpath("E/checkpoints/step-00000033.safetensors");
    vlm_st *st = vlm_ckpt_open(ck);
    CHECK(st != NULL, "fresh checkpoint opens: %s", vlm_last_error());
    vlm_st_close(st);
    flip_byte(ck, -100);
    st = vlm_ckpt_open(ck);
    CHECK(st == NULL && strstr(vlm_last_error(), "checksum mismatch"), "flip: %s", vlm_last_error());
    vlm_st_close(st);
    CHECK(vlm_run("E3.log", "pretrain --resume E") == 0, "resume to the end");
    CHECK(file_has(tpath("E3.log"), "step-00000030.safetensors"), "resumed from the good one");
    CHECK(same_bytes(tpath("A/model.safetensors"), tpath("E/model.safetensors")),
          "still exact after falling back twice");
}

/* Starts `vlm pretrain ...` in the background with its output in log. */
static pid_t spawn(const char *log, char *const *args) {
    pid_t pid = fork();
    if (pid == 0) {
        FILE *f = freopen(log, "w", stdout);
        if (!f || dup2(fileno(stdout), 2) < 0 || chdir(tmpdir)) _exit(127);
        execv(vlm_bin, args);
        _exit(127);
    }
    return pid;
}

static int count_lines(const char *path) {
    char *s = slurp(path, NULL);
    int n = 0;
    for (char *c = s; c && *c; c++) n += *c == '\n';
    free(s);
    return n;
}

static void test_sigint(void) {
    char *args[] = {(char *)vlm_bin, "pretrain", "-c", "tiny.json", "--set", "out=S",
                    "--set", "train.steps=100000", NULL};
    pid_t pid = spawn(tpath("S.log"), args);
    CHECK(pid > 0, "fork");
    if (pid <= 0) return;
    for (int i = 0; i < 600 && count_lines(tpath("S/metrics.jsonl")) < 5; i++)
        nanosleep(&(struct timespec){0, 50000000}, NULL);
    kill(pid, SIGINT);
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 130, "exit status %d", WEXITSTATUS(status));
    CHECK(file_has(tpath("S.log"), "interrupted at step"), "says so");
    char *latest = vlm_ckpt_find_latest(tpath("S"));
    CHECK(latest != NULL, "a checkpoint was saved: %s", vlm_last_error());
    long long step = latest && strstr(latest, "step-") ? atoll(strstr(latest, "step-") + 5) : 0;
    free(latest);
    CHECK(step >= 5, "interrupted after step %lld", step);
    CHECK(vlm_run("S2.log", "pretrain --resume S --stop-after %lld", step + 3) == 0, "resumes");
    CHECK(file_has(tpath("S2.log"), "resumed from"), "resumed");
}

int main(void) {
    if (make_tmpdir("resume")) return 1;
    CHECK(make_shapes() == 0, "prepare shapes");
    CHECK(make_tiny_config() == 0, "config");
    test_exact_resume();
    test_other_model_refused();
    test_damaged_checkpoints();
    test_sigint();
    remove_tmpdir();
    return TEST_DONE();
}
