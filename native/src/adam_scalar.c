/* Scalar Adam/AdamW kernels: the readable oracle.
 *
 * The SIMD kernels perform exactly these float operations in exactly this
 * order (this file and they are compiled with -ffp-contract=off), so their
 * results are bit-identical to these. Change the arithmetic here and there
 * together. */
#include <math.h>
#include <stdint.h>

#include "adam_convert.h"
#include "adam_internal.h"

static inline float load_grad(const void *grad, int dtype, int64_t i) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return tm_bf16_to_f32(((const uint16_t *)grad)[i]);
    case TM_DTYPE_FLOAT16: return tm_f16_to_f32(((const uint16_t *)grad)[i]);
    default: return ((const float *)grad)[i];
    }
}

static inline void store_out(void *out, int dtype, int64_t i, float x) {
    switch (dtype) {
    case TM_DTYPE_FLOAT32: ((float *)out)[i] = x; break;
    case TM_DTYPE_BFLOAT16: ((uint16_t *)out)[i] = tm_f32_to_bf16(x); break;
    case TM_DTYPE_FLOAT16: ((uint16_t *)out)[i] = tm_f32_to_f16(x); break;
    default: break;
    }
}

static int adam_scalar(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                       int64_t end) {
    int nonfinite = 0;
    for (int64_t i = begin; i < end; i++) {
        float g = load_grad(b->grad, b->grad_dtype, i) * c->grad_scale;
        if (!isfinite(g)) nonfinite = 1;
        float p = b->param[i];
        /* Adam (L2): the decay term joins the gradient. (Skipped when zero:
         * adding 0 * p would turn an inf parameter into NaN.) */
        if (c->l2 != 0.0f) g = g + c->l2 * p;
        float m = c->beta1 * b->exp_avg[i] + c->one_minus_beta1 * g;
        float v = c->beta2 * b->exp_avg_sq[i] + (c->one_minus_beta2 * g) * g;
        float denom = sqrtf(v) * c->inv_bc2_sqrt + c->eps;
        float update = c->step_size * (m / denom);
        /* AdamW: decoupled decay joins the update, so p is rounded once. */
        if (c->lr_wd != 0.0f) update = update + c->lr_wd * p;
        p = p - update;
        b->exp_avg[i] = m;
        b->exp_avg_sq[i] = v;
        b->param[i] = p;
        if (b->param_out) store_out(b->param_out, b->out_dtype, i, p);
    }
    return nonfinite;
}

static int scan_scalar(const void *grad, int dtype, float scale, int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) {
        if (!isfinite(load_grad(grad, dtype, i) * scale)) return 1;
    }
    return 0;
}

static double sqnorm_scalar(const void *grad, int dtype, int64_t begin, int64_t end) {
    double sum = 0.0;
    for (int64_t i = begin; i < end; i++) {
        double g = (double)load_grad(grad, dtype, i);
        sum += g * g;
    }
    return sum;
}

const tm_adam_kernels tm_adam_kernels_scalar = {
    .name = "scalar",
    .adam = adam_scalar,
    .scan = scan_scalar,
    .sqnorm = sqnorm_scalar,
};
