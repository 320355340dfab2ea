/* gradcheck_main.c - `gradcheck OP`: runs every gradient-check case of OP,
 * then runs them again with OP's backward perturbed by 1% and requires each
 * to fail. An op with no case fails. */
#include "gc.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#define GC_MAX_CASES 512
static const gc_case *gc_all[GC_MAX_CASES];
static int gc_count;

void gc_register(const gc_case *cases, int n) {
    for (int i = 0; i < n && gc_count < GC_MAX_CASES; i++) gc_all[gc_count++] = &cases[i];
}

static float uniform(uint64_t *state) { /* splitmix64 -> [0, 1) */
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return (float)((z ^ (z >> 31)) >> 40) * (1.0f / 16777216.0f);
}

static vlm_tensor *make_input(vlm_ctx *ctx, const gc_input *in, uint64_t *rng) {
    vlm_tensor *t = vlm_tensor_new(ctx, VLM_F32, in->ndim, in->shape);
    if (!t) return NULL;
    float lo = in->lo, hi = in->hi;
    if (lo == 0 && hi == 0) lo = -1, hi = 1;
    for (int64_t i = 0; i < t->numel; i++) {
        float v;
        do v = lo + (hi - lo) * uniform(rng);
        while (fabsf(v) < in->min_abs);
        vlm_f32(t)[i] = v;
    }
    return t;
}

/* 1 pass, 0 fail, -1 error */
static int run_case(const gc_case *c, vlm_gc_report *r) {
    vlm_ctx *ctx = vlm_ctx_new(0);
    vlm_tensor *x[6];
    uint64_t rng = 0x1234567ULL;
    for (int i = 0; i < c->n; i++) x[i] = make_input(ctx, &c->in[i], &rng);
    vlm_gc_tol tol = c->tol.h != 0 ? c->tol : vlm_gc_default_tol();
    int rc = vlm_gradcheck(c->f, c->user, c->n, x, tol, 42, r);
    vlm_ctx_free(ctx);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gradcheck OP\n");
        return 2;
    }
    const char *op = argv[1];
    int cases = 0;
    for (int i = 0; i < gc_count; i++) {
        const gc_case *c = gc_all[i];
        if (strcmp(c->op, op) != 0) continue;
        cases++;
        vlm_gc_report r;
        int rc = run_case(c, &r);
        CHECK(rc == 1, "%s [%s]: rc %d (%s) max_abs_err %.3g norm_rel_err %.3g, input %d elem %lld "
              "analytic %.6g numeric %.6g", op, c->what, rc, rc < 0 ? vlm_last_error() : "",
              r.max_abs_err, r.norm_rel_err, r.bad_input, (long long)r.bad_index, r.bad_analytic,
              r.bad_numeric);
        printf("%-14s %-44s max_abs_err %.2e norm_rel_err %.2e\n", op, c->what, r.max_abs_err,
               r.norm_rel_err);
        vlm_debug_mutate_backward(op, 1.01f);
        int mrc = run_case(c, &r);
        vlm_debug_mutate_backward(op, 1.0f);
        CHECK(mrc == 0, "%s [%s]: a 1%%-wrong backward was not caught (rc %d, norm_rel_err %.3g)",
              op, c->what, mrc, r.norm_rel_err);
    }
    CHECK(cases > 0, "no gradcheck case for op '%s'", op);
    return TEST_DONE();
}
