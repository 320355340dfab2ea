/* captioner.c - fusion block, LLaMA-style decoder and the captioner.
 * (Being written: the declarations below are the integration points.) */
#include "nn.h"

int vlm_captioner_declare(vlm_model *m) {
    (void)m;
    return vlm_set_error("captioner: not built yet in this version");
}

void vlm_captioner_free(vlm_model *m) { (void)m; }
