/* test_errors.c - `vlm pretrain` on bad input and bad numbers: config
 * mistakes (unknown key, wrong type, bad value, missing file or dataset) are
 * errors that name the key or file and exit non-zero before any training;
 * lr_mult binds; a NaN injected at a step (train.debug_nan_step) stops the
 * run naming the step and the first non-finite gradient / parameter / stage,
 * or is skipped and counted with on_nonfinite "skip" and by the fp16 scaler. */
#include "cli.h"
#include "test.h"

/* pretrain with extra args: exit status st and the log containing want. */
static void expect(const char *args, int st, const char *want) {
    int got = vlm_run("err.log", "pretrain -c tiny.json --set train.steps=6 %s", args);
    CHECK(got == st, "'%s': exit %d, expected %d", args, got, st);
    if (want) CHECK(file_has(tpath("err.log"), want), "'%s' says '%s'", args, want);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s/run'", tmpdir);
    if (system(cmd)) fprintf(stderr, "rm failed\n");
}

static void test_config_errors(void) {
    expect("--set train.bogus=1", 1, "error: config: unknown key 'train.bogus' (pretrain)");
    expect("--set model.vision.widht=64", 1, "unknown key 'model.vision.widht'");
    expect("--set train.batch_size=true", 1, "train.batch_size must be an integer");
    expect("--set 'data.augment.hflip=\"yes\"'", 1, "data.augment.hflip must be true or false");
    expect("--set train.precision=f8", 1, "train.precision must be \"f32\", \"bf16\" or \"fp16\"");
    expect("--set 'data.mean=[1,2]'", 1, "data.mean must be a number or an array of 3 numbers");
    expect("--set data.train=missing.h5", 1, "missing.h5");
    expect("--set data.image_size=20", 1, "data.image_size (20) must equal model.vision.image_size");
    expect("--set 'train.optim.lr_mult={\"text_model.\":\"x\"}'", 1,
           "train.optim.lr_mult.text_model. must be a number");
    expect("--set 'train.optim.lr_mult={\"text_model.\":0.5}' --set data.val=", 0, NULL);
    expect("--set train.optim.warmup_steps=100", 1, "train.optim.total_steps (6)");
    expect("--bogus", 2, "unknown argument '--bogus'");
    expect("--stop-after x", 2, "--stop-after needs a step");

    CHECK(write_text(tpath("typo.json"), "{\"trian\": {}}") == 0, "write");
    int st = vlm_run("err.log", "pretrain -c typo.json");
    CHECK(st == 1 && file_has(tpath("err.log"), "unknown key 'trian'"), "top-level typo %d", st);
    CHECK(write_text(tpath("broken.json"), "{\n\"train\": {,}\n}") == 0, "write");
    st = vlm_run("err.log", "pretrain -c broken.json");
    CHECK(st == 1 && file_has(tpath("err.log"), "broken.json: invalid JSON near line 2"), "%d", st);
    st = vlm_run("err.log", "pretrain -c nothere.json");
    CHECK(st == 1 && file_has(tpath("err.log"), "nothere.json"), "missing config %d", st);
    st = vlm_run("err.log", "eval --model nothere");
    CHECK(st == 1 && file_has(tpath("err.log"), "nothere"), "eval of a missing model %d", st);
}

static void test_nonfinite(void) {
    expect("--set train.debug_nan_step=4", 1,
           "non-finite gradients (norm nan) at step 4; first non-finite gradient: ");
    CHECK(!exists(tpath("run/model.safetensors")), "no final model after a stop");
    expect("--set train.debug_nan_step=4 --set train.on_nonfinite=skip", 0,
           "1 steps were skipped (non-finite loss or gradients)");
    expect("--set train.debug_nan_step=3 --set train.debug_nan_target=weight", 1,
           "non-finite loss (nan) at step 3; first non-finite parameter: logit_bias [1]");
    expect("--set train.debug_nan_step=3 --set train.debug_nan_target=weight "
           "--set train.detect_anomaly=true", 1,
           "anomaly: first non-finite stage: logit_bias [1] (element 0 = nan)");
    /* fp16: a NaN gradient is an overflow to the scaler: skipped, scale halved */
    int st = vlm_run("fp16.log", "pretrain -c tiny.json --set train.steps=6 --set out=F "
                     "--set train.precision=fp16 --set train.debug_nan_step=2");
    CHECK(st == 0, "fp16 exit %d", st);
    CHECK(file_has(tpath("F/metrics.jsonl"), "\"loss_scale\":32768"), "scale halved");
    CHECK(file_has(tpath("F/metrics.jsonl"), "\"skipped\":1"), "counted");
}

int main(void) {
    if (make_tmpdir("errors")) return 1;
    CHECK(make_shapes() == 0, "prepare shapes");
    CHECK(make_tiny_config() == 0, "config");
    test_config_errors();
    test_nonfinite();
    remove_tmpdir();
    return TEST_DONE();
}
