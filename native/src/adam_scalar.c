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
#include "adam_lowp.h"

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

/* One INT8 block [begin, end): update, then re-quantize with the new maxima. */
static int int8_block_scalar(const tm_adam_coeffs *c, const tm_adam_buffers *b,
                             const tm_quant_tables *t, int64_t begin, int64_t end) {
    float m_new[TM_QBLOCK_MAX], v_new[TM_QBLOCK_MAX];
    int64_t q = begin / b->qblock;
    float am_m = b->m_absmax[q], am_v = b->v_absmax[q];
    float max_m = 0.0f, max_v = 0.0f;
    int nonfinite = 0;
    for (int64_t i = begin; i < end; i++)
        nonfinite |= tm_lowp_int8_elem(c, b, t, i, am_m, am_v, &m_new[i - begin],
                                       &v_new[i - begin], &max_m, &max_v);
    b->m_absmax[q] = max_m;
    b->v_absmax[q] = max_v;
    float inv_m = tm_absmax_inverse(max_m), inv_v = tm_absmax_inverse(max_v);
    uint8_t *mq = (uint8_t *)b->m_lowp, *vq = (uint8_t *)b->v_lowp;
    for (int64_t i = begin; i < end; i++) {
        mq[i] = tm_quant_code(t->mid_signed, m_new[i - begin] * inv_m);
        vq[i] = tm_quant_code(t->mid_unsigned, v_new[i - begin] * inv_v);
    }
    return nonfinite;
}

static int adam_lowp_scalar(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                            int64_t end) {
    int nonfinite = 0;
    if (b->state_dtype == TM_STATE_BFLOAT16) {
        for (int64_t i = begin; i < end; i++) nonfinite |= tm_lowp_bf16_elem(c, b, i);
        return nonfinite;
    }
    const tm_quant_tables *t = tm_quant_tables_get();
    for (int64_t q = begin; q < end; q += b->qblock) {
        int64_t q_end = q + b->qblock < end ? q + b->qblock : end;
        nonfinite |= int8_block_scalar(c, b, t, q, q_end);
    }
    return nonfinite;
}

static void quant_scalar(const tm_quant_tables *t, int is_signed, const float *x, int64_t n,
                         uint8_t *codes) {
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    for (int64_t i = 0; i < n; i++) codes[i] = tm_quant_code(mid, x[i]);
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
    .adam_lowp = adam_lowp_scalar,
    .quant = quant_scalar,
    .scan = scan_scalar,
    .sqnorm = sqnorm_scalar,
};
