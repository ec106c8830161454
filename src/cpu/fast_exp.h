/* fast_exp.h: e^x for the CPU epilogues, branch-free so that loops over it vectorise (Cephes'
 * expf polynomial: relative error below 2e-7 over the clamped range; libm's expf is a call per
 * element). Files whose loops use it should allow the compiler to evaluate both sides of its
 * selects (GCC: optimize("no-trapping-math")), or the clamps keep the loop scalar. */
#ifndef ZCI_CPU_FAST_EXP_H
#define ZCI_CPU_FAST_EXP_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* Cephes' expf polynomial: e^r for r = x - k ln2, |r| <= ln2 / 2 (also elementwise.c's Exp). */
static inline float zci_exp_poly(float r)
{
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    return q * r * r + r + 1.0f;
}

static inline float zci_exp_fast(float x)
{
    x = x < -87.0f ? -87.0f : x;
    x = x > 88.0f ? 88.0f : x;
    float k = floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;
    int32_t e = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &e, sizeof scale);
    return zci_exp_poly(r) * scale;
}

#endif
