/* test_units.c - the train module's C API without training: config binding
 * (mean/std arrays, lr_mult, unknown keys, values kept on failure), the
 * resolved config round trip, the JSON diff that names the first differing
 * key, and the text encoder (EOS, padding, mask, truncation). */
#include "test.h"
#include "train.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static cJSON *parse(const char *s) {
    cJSON *j = cJSON_Parse(s);
    CHECK(j != NULL, "parse %s", s);
    return j;
}

static void test_bind(void) {
    vlm_run_cfg c;
    vlm_run_cfg_defaults(&c);
    cJSON *j = parse("{\"train\": {\"steps\": 7, \"optim\": {\"lr\": 0.01, \"lr_mult\": "
                     "{\"text_model.\": 0.5}}}, \"data\": {\"train\": \"x.h5\", \"mean\": "
                     "[0.1, 0.2, 0.3], \"std\": 0.25}, \"out\": \"r\"}");
    CHECK(vlm_run_cfg_bind(j, &c) == 0, "bind: %s", vlm_last_error());
    cJSON_Delete(j);
    CHECK(c.train.steps == 7 && c.train.optim.n_lr_mults == 1, "train");
    CHECK_NEAR(c.train.optim.lr, 0.01, 1e-7);
    CHECK_NEAR(c.data.mean[2], 0.3, 1e-7);
    CHECK_NEAR(c.data.std[1], 0.25, 1e-7);
    CHECK(vlm_run_cfg_validate(&c) == 0, "validate: %s", vlm_last_error());
    CHECK(c.data.image_size == c.model.vision.image_size, "image_size from the model");
    CHECK(c.data.ctx_len == c.model.text.ctx_len, "ctx_len from the model");

    /* a failed bind changes nothing */
    vlm_run_cfg before = c;
    j = parse("{\"train\": {\"steps\": 9, \"nope\": 1}}");
    CHECK(vlm_run_cfg_bind(j, &c) == -1, "unknown key");
    CHECK(strstr(vlm_last_error(), "train.nope") != NULL, "%s", vlm_last_error());
    CHECK(memcmp(&before, &c, sizeof c) == 0, "unchanged after a failure");
    cJSON_Delete(j);
    j = parse("{\"data\": {\"std\": [1, \"a\", 2]}}");
    CHECK(vlm_run_cfg_bind(j, &c) == -1 && strstr(vlm_last_error(), "data.std[1]"), "%s",
          vlm_last_error());
    cJSON_Delete(j);

    /* the resolved config binds back to the same struct */
    cJSON *res = vlm_run_cfg_to_json(&c);
    vlm_run_cfg again;
    vlm_run_cfg_defaults(&again);
    CHECK(res && vlm_run_cfg_bind(res, &again) == 0, "rebind: %s", vlm_last_error());
    CHECK(vlm_run_cfg_validate(&again) == 0, "revalidate");
    CHECK(memcmp(&again, &c, sizeof c) == 0, "round trip");
    cJSON_Delete(res);
}

static void test_diff(void) {
    cJSON *a = parse("{\"model\": {\"v\": {\"w\": 64, \"eps\": 1e-6, \"ck\": true}, \"t\": \"x\"}}");
    cJSON *b = parse("{\"model\": {\"v\": {\"w\": 64, \"eps\": 9.99999997475243e-07, \"ck\": true},"
                     " \"t\": \"x\"}}");
    char d[256];
    /* 1e-6 read back from 15 digits is the same f32 */
    CHECK(vlm_json_diff(a, b, "", NULL, "A", "B", d, sizeof d) == 0, "equal: %s", d);
    cJSON_Delete(b);
    b = parse("{\"model\": {\"v\": {\"w\": 48, \"eps\": 1e-6, \"ck\": false}, \"t\": \"x\"}}");
    CHECK(vlm_json_diff(a, b, "", NULL, "A", "B", d, sizeof d) == 1, "differ");
    CHECK(strcmp(d, "model.v.w is 64 in A but 48 in B") == 0, "%s", d);
    const char *ignore[] = {"model.v.w", NULL};
    CHECK(vlm_json_diff(a, b, "", ignore, "A", "B", d, sizeof d) == 1, "next");
    CHECK(strcmp(d, "model.v.ck is true in A but false in B") == 0, "%s", d);
    cJSON_Delete(b);
    b = parse("{\"model\": {\"v\": {\"w\": 64, \"eps\": 1e-6, \"ck\": true}, \"t\": \"x\", \"z\": 1}}");
    CHECK(vlm_json_diff(a, b, "", NULL, "A", "B", d, sizeof d) == 1, "extra key");
    CHECK(strcmp(d, "model.z is absent in A but 1 in B") == 0, "%s", d);
    cJSON_Delete(a);
    cJSON_Delete(b);
}

static void test_text_encoder(void) {
    const char *texts[] = {"a red circle", "a blue square", "a red square", "a blue circle"};
    const char *specials[] = {"<pad>", "<eos>"};
    vlm_bpe_train_opts o = {.vocab_size = 280, .specials = specials, .n_specials = 2};
    vlm_bpe *bpe = vlm_bpe_train(texts, NULL, 4, &o);
    char path[] = "/tmp/vlm-units-XXXXXX";
    int fd = mkstemp(path);
    CHECK(bpe && fd >= 0 && vlm_bpe_save(bpe, path) == 0, "tokenizer: %s", vlm_last_error());
    vlm_text_encoder *e = vlm_text_encoder_load(path, 0);
    CHECK(e != NULL, "load: %s", vlm_last_error());
    if (e) {
        int32_t ids[8];
        uint8_t mask[8];
        int n = vlm_text_encode(e, "a red circle", ids, mask, 8);
        CHECK(n >= 2 && n < 8, "length %d", n);
        CHECK(ids[n - 1] == 1, "ends with <eos> (id 1), got %d", ids[n - 1]);
        CHECK(ids[n] == 0 && ids[7] == 0 && mask[n - 1] == 1 && mask[n] == 0, "padded, masked");
        int32_t shortid[3];
        uint8_t shortmask[3];
        n = vlm_text_encode(e, "a red circle and a blue square", shortid, shortmask, 3);
        CHECK(n == 3 && shortid[2] == 1 && shortmask[2] == 1, "cut, still ending in <eos>");
        CHECK(vlm_text_encoder_vocab(e) == vlm_bpe_vocab_size(bpe), "vocab");
    }
    vlm_text_encoder_free(e);
    vlm_bpe_free(bpe);
    if (fd >= 0) close(fd), unlink(path);
}

int main(void) {
    test_bind();
    test_diff();
    test_text_encoder();
    return TEST_DONE();
}
