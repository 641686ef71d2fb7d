/* Per-element arithmetic of the Adam step with compact (bf16 / int8) moments,
 * shared by the scalar kernel (the oracle) and the SIMD kernels' tails.
 * Header-only so each kernel file compiles it with its own flags; every file
 * is built with -ffp-contract=off, so the scalar float operations here round
 * exactly as the vector ones do.
 *
 * [Note: the update is computed from the dequantized old moments in fp32 and
 *  uses the fresh fp32 moments; only what is stored is rounded (bf16) or
 *  quantized (int8). Rounding before the update would add the state's error
 *  to every step's parameter change for no saving.] */
#ifndef TIERMEM_ADAM_LOWP_H
#define TIERMEM_ADAM_LOWP_H
#include <math.h>
#include <stdint.h>

#include "adam_convert.h"
#include "adam_internal.h"

static inline float tm_lowp_load_grad(const void *grad, int dtype, int64_t i) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return tm_bf16_to_f32(((const uint16_t *)grad)[i]);
    case TM_DTYPE_FLOAT16: return tm_f16_to_f32(((const uint16_t *)grad)[i]);
    default: return ((const float *)grad)[i];
    }
}

static inline void tm_lowp_store_out(void *out, int dtype, int64_t i, float x) {
    switch (dtype) {
    case TM_DTYPE_FLOAT32: ((float *)out)[i] = x; break;
    case TM_DTYPE_BFLOAT16: ((uint16_t *)out)[i] = tm_f32_to_bf16(x); break;
    case TM_DTYPE_FLOAT16: ((uint16_t *)out)[i] = tm_f32_to_f16(x); break;
    default: break;
    }
}

/* The Adam arithmetic of adam_scalar.c on one element: g is the scaled
 * gradient, m/v the old moments; writes the new moments and returns the new
 * parameter. */
static inline float tm_lowp_update(const tm_adam_coeffs *c, float g, float p, float m_old,
                                   float v_old, float *m_new, float *v_new) {
    if (c->l2 != 0.0f) g = g + c->l2 * p;
    float m = c->beta1 * m_old + c->one_minus_beta1 * g;
    float v = c->beta2 * v_old + (c->one_minus_beta2 * g) * g;
    float denom = sqrtf(v) * c->inv_bc2_sqrt + c->eps;
    float update = c->step_size * (m / denom);
    if (c->lr_wd != 0.0f) update = update + c->lr_wd * p;
    *m_new = m;
    *v_new = v;
    return p - update;
}

/* bf16 moments, element i; returns 1 if the scaled gradient is not finite. */
static inline int tm_lowp_bf16_elem(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t i) {
    float g = tm_lowp_load_grad(b->grad, b->grad_dtype, i) * c->grad_scale;
    uint16_t *m16 = (uint16_t *)b->m_lowp, *v16 = (uint16_t *)b->v_lowp;
    float m, v;
    float p = tm_lowp_update(c, g, b->param[i], tm_bf16_to_f32(m16[i]), tm_bf16_to_f32(v16[i]),
                             &m, &v);
    m16[i] = tm_f32_to_bf16(m);
    v16[i] = tm_f32_to_bf16(v);
    b->param[i] = p;
    if (b->param_out) tm_lowp_store_out(b->param_out, b->out_dtype, i, p);
    return !isfinite(g);
}

/* Running absolute maximum. [Note: written as the x86 MAXPS rule
 *  (a > acc ? a : acc) so the vector kernels match it lane for lane: a NaN
 *  moment never becomes the scale. Over non-negative, non-NaN values the
 *  maximum does not depend on the order, so lanes may be reduced in any
 *  order.] */
static inline float tm_absmax_fold(float acc, float x) {
    float a = fabsf(x);
    return a > acc ? a : acc;
}

/* The multiplier that maps a block onto [-1, 1]; 0 for an all-zero block. */
static inline float tm_absmax_inverse(float absmax) {
    return absmax > 0.0f ? 1.0f / absmax : 0.0f;
}

/* The code of the map entry nearest to x: the number of midpoints below x,
 * found by an eight-step branch-free binary search (the vector kernels run
 * the same probes). NaN compares false everywhere and gets code 0. */
static inline uint8_t tm_quant_code(const float *mid, float x) {
    int idx = 0;
    for (int step = 128; step >= 1; step >>= 1)
        if (x > mid[idx + step - 1]) idx += step;
    return (uint8_t)idx;
}

/* int8 moments, element i of the block whose scales are am_m / am_v: the
 * fresh fp32 moments go to m_new[j] / v_new[j] (j = i - block start) and
 * fold into the running maxima; returns 1 on a non-finite scaled gradient. */
static inline int tm_lowp_int8_elem(const tm_adam_coeffs *c, const tm_adam_buffers *b,
                                    const tm_quant_tables *t, int64_t i, float am_m, float am_v,
                                    float *m_new, float *v_new, float *max_m, float *max_v) {
    float g = tm_lowp_load_grad(b->grad, b->grad_dtype, i) * c->grad_scale;
    const uint8_t *mq = (const uint8_t *)b->m_lowp, *vq = (const uint8_t *)b->v_lowp;
    float m_old = t->map_signed[mq[i]] * am_m;
    float v_old = t->map_unsigned[vq[i]] * am_v;
    float p = tm_lowp_update(c, g, b->param[i], m_old, v_old, m_new, v_new);
    *max_m = tm_absmax_fold(*max_m, *m_new);
    *max_v = tm_absmax_fold(*max_v, *v_new);
    b->param[i] = p;
    if (b->param_out) tm_lowp_store_out(b->param_out, b->out_dtype, i, p);
    return !isfinite(g);
}

#endif
