/* vmath.h - private to autograd/: exp, tanh and sigmoid in f32 as branch-free
 * inline functions that gcc vectorises inside `#pragma omp simd` loops (libm's
 * tanhf and expf are scalar calls: tanh-GELU alone was a quarter of a bf16
 * training step). Portable C, so the build needs no particular CPU: with
 * -march=native the loops use AVX-512 or AVX2, otherwise SSE2.
 *
 * Accuracy against double, over all floats (tests/autograd/test_activation.c):
 * exp within 2 ulp (gradual underflow included: results below FLT_MIN keep
 * their subnormal bits), tanh within 3 ulp, sigmoid within 3 ulp. Specials
 * as libm: exp(-inf) = 0, exp(+inf) = exp(x > 88.73) = inf, tanh(+-inf) = +-1,
 * sigmoid(-inf) = 0, sigmoid(+inf) = 1; NaN in gives NaN out. */
#ifndef VLM_AUTOGRAD_VMATH_H
#define VLM_AUTOGRAD_VMATH_H

#include <stdint.h>
#include <string.h>

static inline float vm_bits_f32(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint32_t vm_f32_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* Rounding to an integer by adding 1.5 * 2^23: the sum's low mantissa bits
 * then hold the integer (for |n| < 2^22). Float -> int conversions would do,
 * but gcc does not if-convert the clamps below around them. */
#define VM_SHIFTER 12582912.0f
#define VM_SHIFTER_BITS 0x4B400000u

/* 2^n from t = n + VM_SHIFTER, n integer in [-126, 127]: n + 127 goes
 * straight into the exponent bits (unsigned: the arithmetic wraps). */
static inline float vm_pow2_shifted(float t) {
    return vm_bits_f32((vm_f32_bits(t) - VM_SHIFTER_BITS + 127u) << 23);
}

/* e^x: x = n ln2 + r with |r| <= ln2/2 (Cody-Waite, ln2 in two parts), e^r by
 * Cephes' degree-7 polynomial (relative error ~1e-7), then the scale 2^n as
 * two factors 2^n1 2^n2, n1 = round(n/2), so that results down to the
 * smallest subnormal and up to overflow come out of one multiply chain with
 * a single rounding. x is clamped to [-104, 89] first (beyond, the result is
 * 0 or inf anyway); the comparisons are false for NaN, which so flows
 * through. No select on NaN at the end: gcc would then not if-convert the
 * loop without AVX-512 masking (the multiplies could trap). */
static inline float vm_exp(float x) {
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 89.0f ? 89.0f : xc;
    float n = (xc * 1.44269504088896341f + VM_SHIFTER) - VM_SHIFTER;
    float r = xc - n * 0.693359375f - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    float t1 = n * 0.5f + VM_SHIFTER, n1 = t1 - VM_SHIFTER; /* n1, n - n1 in [-75, 64] */
    return p * vm_pow2_shifted(t1) * vm_pow2_shifted((n - n1) + VM_SHIFTER);
}

/* tanh: |x| < 0.625 by Cephes' odd polynomial x + x^3 P(x^2) (no cancellation
 * near 0); above, 1 - 2 / (e^(2|x|) + 1), where the subtraction loses at most
 * a bit because the fraction stays below 0.45. |x| >= 10 rounds to +-1 (the
 * argument is capped there, so e^(2|x|) never overflows). */
static inline float vm_tanh(float x) {
    float ax = x < 0 ? -x : x, z = x * x;
    float p = -5.70498872745e-3f;
    p = p * z + 2.06390887954e-2f;
    p = p * z - 5.37397155531e-2f;
    p = p * z + 1.33314422036e-1f;
    p = p * z - 3.33332819422e-1f;
    float small = x + x * z * p;
    float e = vm_exp(2.0f * (ax > 10.0f ? 10.0f : ax)); /* NaN stays NaN */
    float big = 1.0f - 2.0f / (e + 1.0f);
    big = x < 0 ? -big : big;
    return ax < 0.625f ? small : big;
}

/* sigmoid: e = e^-|x| never overflows; 1 / (1 + e) for x >= 0 and e / (1 + e)
 * for x < 0, which keeps tiny results (down to subnormals) accurate instead of
 * flushing them to 0. NaN propagates through e. */
static inline float vm_sigmoid(float x) {
    float e = vm_exp(x < 0 ? x : -x);
    return (x < 0 ? e : 1.0f) / (1.0f + e);
}

#endif
