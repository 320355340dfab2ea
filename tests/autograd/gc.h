/* gc.h - gradient-check cases. Each gc_*.c file holds the cases of a group of
 * ops and registers them with GC_REGISTER; `gradcheck OP` runs the cases of
 * one op: each must pass, and each must FAIL when the op's backward is
 * perturbed by 1% (so the tolerance is tight enough to catch such a bug).
 *
 * Inputs are f32, drawn uniformly from [lo, hi] (default [-1, 1]) with a fixed
 * seed; |x| < min_abs is redrawn (keeps kinks such as relu's 0 away from the
 * finite-difference step). Non-f32 inputs (ids, labels, masks) are built
 * inside the case function from `user`. */
#ifndef VLM_TESTS_GC_H
#define VLM_TESTS_GC_H

#include "autograd.h"

typedef struct {
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    float lo, hi;
    float min_abs;
} gc_input;

typedef struct {
    const char *op;   /* name in autograd/ops.def */
    const char *what; /* what this case covers, e.g. "[3,1,5] + [5] broadcast" */
    vlm_gc_fn f;
    void *user;
    int n;
    gc_input in[6];
    vlm_gc_tol tol; /* h == 0: vlm_gc_default_tol() */
} gc_case;

void gc_register(const gc_case *cases, int n);

#define GC_REGISTER(arr)                                                   \
    __attribute__((constructor)) static void gc_register_##arr(void) {     \
        gc_register(arr, (int)(sizeof arr / sizeof arr[0]));               \
    }

#endif
