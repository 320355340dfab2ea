/* model.c - building a model from its config: declare every parameter under
 * its HF name, finalize the flat store, initialise from the seed. */
#include "nn.h"

#include <stdlib.h>
#include <string.h>

static int declare_siglip(vlm_model *m) {
    vlm_params *p = m->params;
    int embed = m->cfg.vision.width;
    if (vlm_vision_declare(p, &m->vision, &m->cfg.vision) ||
        vlm_text_declare(p, &m->text, &m->cfg.text, embed))
        return -1;
    m->logit_scale = vlm_declare(p, 1, (int64_t[]){1}, "logit_scale");
    m->logit_bias = vlm_declare(p, 1, (int64_t[]){1}, "logit_bias");
    return m->logit_scale && m->logit_bias ? 0 : -1;
}

vlm_model *vlm_model_new(const vlm_model_cfg *cfg, uint64_t seed) {
    if (vlm_model_cfg_validate(cfg)) return NULL;
    vlm_model *m = calloc(1, sizeof *m);
    if (!m) {
        vlm_set_error("model: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    m->cfg.embed_dim = cfg->vision.width;
    m->params = vlm_params_new();
    int rc = m->params ? declare_siglip(m) : -1;
    if (rc == 0 && strcmp(cfg->type, "captioner") == 0) rc = vlm_captioner_declare(m);
    if (rc == 0) rc = vlm_params_finalize(m->params);
    if (rc != 0) {
        vlm_model_free(m);
        return NULL;
    }
    vlm_init_params(m->params, seed);
    return m;
}

void vlm_model_free(vlm_model *m) {
    if (!m) return;
    free(m->vision.layers);
    free(m->text.layers);
    vlm_captioner_free(m);
    vlm_params_free(m->params);
    free(m);
}
