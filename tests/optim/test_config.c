/* test_config.c - the optimizer config section: binding from JSON (with the
 * hand-parsed "lr_mult" object), --set overrides, the resolved config
 * round trip, and errors that name the key. */
#include "optim.h"
#include "test.h"

#include <string.h>

static int bind_text(const char *json, vlm_optim_cfg *cfg) {
    cJSON *root = cJSON_Parse(json);
    if (!root) return vlm_set_error("test: bad JSON");
    int rc = vlm_optim_cfg_bind(cJSON_GetObjectItemCaseSensitive(root, "optim"), cfg,
                                "train.optim");
    cJSON_Delete(root);
    return rc;
}

static void test_bind(void) {
    vlm_optim_cfg c;
    vlm_optim_cfg_defaults(&c);
    CHECK(strcmp(c.optimizer, "adamw") == 0 && c.lr == 3e-4f && c.beta1 == 0.9f &&
              c.beta2 == 0.999f && c.eps == 1e-8f && c.weight_decay == 0.01f &&
              strcmp(c.schedule, "cosine") == 0 && c.clip_norm == 0 && c.n_lr_mults == 0,
          "defaults");
    const char *json = "{\"optim\": {\"optimizer\": \"sgd\", \"lr\": 0.1, \"momentum\": 0.8, "
                       "\"nesterov\": true, \"schedule\": \"constant\", \"warmup_steps\": 50, "
                       "\"clip_norm\": 1.0, \"lr_mult\": {\"vision_model.\": 0.1, "
                       "\"text_model.\": 0.5}}}";
    CHECK(bind_text(json, &c) == 0, "%s", vlm_last_error());
    CHECK(strcmp(c.optimizer, "sgd") == 0 && c.lr == 0.1f && c.momentum == 0.8f && c.nesterov &&
              strcmp(c.schedule, "constant") == 0 && c.warmup_steps == 50 && c.clip_norm == 1.0f,
          "scalars bound");
    CHECK(c.n_lr_mults == 2 && strcmp(c.lr_mults[0].prefix, "vision_model.") == 0 &&
              c.lr_mults[0].mult == 0.1f && strcmp(c.lr_mults[1].prefix, "text_model.") == 0 &&
              c.lr_mults[1].mult == 0.5f,
          "lr_mult bound");
    CHECK(c.beta2 == 0.999f, "absent keys keep their values");
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == 0, "%s", vlm_last_error());
    CHECK(vlm_optim_lr_mult_of(&c, "vision_model.head.probe") == 0.1f &&
              vlm_optim_lr_mult_of(&c, "text_model.head.weight") == 0.5f &&
              vlm_optim_lr_mult_of(&c, "logit_scale") == 1.0f,
          "multiplier lookup");

    /* the resolved config round-trips, lr_mult included */
    cJSON *out = vlm_optim_cfg_to_json(&c);
    CHECK(out != NULL, "%s", vlm_last_error());
    vlm_optim_cfg d;
    vlm_optim_cfg_defaults(&d);
    CHECK(vlm_optim_cfg_bind(out, &d, "x") == 0, "%s", vlm_last_error());
    CHECK(memcmp(&c, &d, sizeof c) == 0, "to_json -> bind must give the same struct");
    cJSON_Delete(out);
}

static void test_set_override(void) {
    cJSON *root = cJSON_Parse("{\"train\": {\"optim\": {\"lr\": 0.001}}}");
    CHECK(vlm_cfg_set(root, "train.optim.lr_mult={\"vision_model.\": 0.25}") == 0 &&
              vlm_cfg_set(root, "train.optim.beta2=0.95") == 0,
          "%s", vlm_last_error());
    vlm_optim_cfg c;
    vlm_optim_cfg_defaults(&c);
    cJSON *sec = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(root, "train"), "optim");
    CHECK(vlm_optim_cfg_bind(sec, &c, "train.optim") == 0, "%s", vlm_last_error());
    CHECK(c.lr == 0.001f && c.beta2 == 0.95f && c.n_lr_mults == 1 &&
              c.lr_mults[0].mult == 0.25f,
          "--set overrides");
    cJSON_Delete(root);
}

static void expect_error(const char *json, const char *needle) {
    vlm_optim_cfg c;
    vlm_optim_cfg_defaults(&c);
    vlm_optim_cfg before = c;
    int rc = bind_text(json, &c);
    CHECK(rc == -1 && strstr(vlm_last_error(), needle), "%s: got rc %d, error '%s'", json, rc,
          vlm_last_error());
    CHECK(memcmp(&c, &before, sizeof c) == 0, "%s: a failed bind changed the struct", json);
}

static void test_errors(void) {
    expect_error("{\"optim\": {\"lrr\": 1}}", "unknown key 'train.optim.lrr'");
    expect_error("{\"optim\": {\"lr\": \"fast\"}}", "train.optim.lr must be a number");
    expect_error("{\"optim\": {\"lr\": 0.5, \"lr_mult\": 3}}", "train.optim.lr_mult must be an object");
    expect_error("{\"optim\": {\"lr_mult\": {\"text_model.\": \"x\"}}}",
                 "train.optim.lr_mult.text_model. must be a number");
    expect_error("{\"optim\": {\"lr_mult\": {\"a\": 1, \"a\": 2}}}",
                 "train.optim.lr_mult.a appears twice");
    expect_error("{\"optim\": {\"lr_mult\": {\"a\": 1, \"b\": 1, \"c\": 1, \"d\": 1, \"e\": 1, "
                 "\"f\": 1, \"g\": 1, \"h\": 1, \"i\": 1}}}",
                 "more than 8 prefixes");
    expect_error("{\"optim\": {\"warmup_steps\": 1.5}}", "train.optim.warmup_steps must be an integer");
    expect_error("{\"optim\": 3}", "train.optim must be an object");

    vlm_optim_cfg c;
    vlm_optim_cfg_defaults(&c);
    c.total_steps = 100;
    CHECK(vlm_optim_cfg_validate(&c, "train.optim") == 0, "%s", vlm_last_error());
    const struct {
        const char *json, *key;
    } bad[] = {
        {"{\"optim\": {\"optimizer\": \"adam\"}}", "train.optim.optimizer"},
        {"{\"optim\": {\"beta1\": 1.0}}", "train.optim.beta1"},
        {"{\"optim\": {\"beta2\": -0.1}}", "train.optim.beta2"},
        {"{\"optim\": {\"eps\": 0}}", "train.optim.eps"},
        {"{\"optim\": {\"weight_decay\": -1}}", "train.optim.weight_decay"},
        {"{\"optim\": {\"clip_norm\": -1}}", "train.optim.clip_norm"},
        {"{\"optim\": {\"momentum\": 1.5}}", "train.optim.momentum"},
        {"{\"optim\": {\"lr_mult\": {\"vision_model.\": -2}}}", "train.optim.lr_mult.vision_model."},
        {"{\"optim\": {\"warmup_steps\": -3}}", "train.optim.warmup_steps"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        vlm_optim_cfg b = c;
        CHECK(bind_text(bad[i].json, &b) == 0, "%s", vlm_last_error());
        CHECK(vlm_optim_cfg_validate(&b, "train.optim") == -1 &&
                  strstr(vlm_last_error(), bad[i].key),
              "%s: error '%s' must name %s", bad[i].json, vlm_last_error(), bad[i].key);
    }
}

int main(void) {
    test_bind();
    test_set_override();
    test_errors();
    return TEST_DONE();
}
