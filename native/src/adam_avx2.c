/* AVX2 Adam/AdamW kernels: 8 fp32 lanes; F16C for fp16; FMA only in the
 * norm (the Adam arithmetic is adam_scalar.c's, operation for operation).
 *
 * Compiled with -mavx2 -mfma -mf16c -ffp-contract=off; only called after
 * CPUID says the CPU supports those.
 *
 * [Note: AVX2 has no masked 16-bit loads/stores, so the last < 8 elements
 *  are copied into zero-padded stack arrays, run through the same vector
 *  body, and copied back. The tail then gets exactly the body's rounding,
 *  with no separate scalar code path to keep in step.] */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "adam_convert.h"
#include "adam_internal.h"
#include "adam_lowp.h"

#define TM_INLINE static inline __attribute__((always_inline))

typedef struct coeff_vectors {
    __m256 beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_bc2_sqrt, eps, lr_wd, l2,
        grad_scale;
} coeff_vectors;

TM_INLINE __m256 load_grad(const void *grad, const int dtype) {
    if (dtype == TM_DTYPE_FLOAT32) return _mm256_loadu_ps((const float *)grad);
    __m128i h = _mm_loadu_si128((const __m128i *)grad);
    if (dtype == TM_DTYPE_BFLOAT16)
        return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
    return _mm256_cvtph_ps(h);
}

TM_INLINE __m128i f32_to_bf16(__m256 x) {
    __m256i u = _mm256_castps_si256(x);
    __m256i upper = _mm256_srli_epi32(u, 16);
    __m256i lsb = _mm256_and_si256(upper, _mm256_set1_epi32(1));
    __m256i rounded = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7FFF)), lsb), 16);
    __m256i quiet = _mm256_or_si256(upper, _mm256_set1_epi32(0x40));
    __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
    __m256i r = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(rounded), _mm256_castsi256_ps(quiet), nan));
    /* every lane is <= 0xFFFF, so the unsigned-saturating pack is exact */
    return _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
}

TM_INLINE void store_out(void *out, __m256 x, const int dtype) {
    if (dtype == TM_DTYPE_NONE) return;
    if (dtype == TM_DTYPE_FLOAT32) {
        _mm256_storeu_ps((float *)out, x);
        return;
    }
    __m128i h = dtype == TM_DTYPE_BFLOAT16 ? f32_to_bf16(x)
                                           : _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT);
    _mm_storeu_si128((__m128i *)out, h);
}

TM_INLINE size_t dtype_size(const int dtype) {
    return dtype == TM_DTYPE_FLOAT32 ? 4 : dtype == TM_DTYPE_NONE ? 0 : 2;
}

/* 8 elements at the given addresses; returns a lane mask of non-finite scaled gradients. */
TM_INLINE __m256 adam8(const coeff_vectors *c, float *param, float *exp_avg, float *exp_avg_sq,
                       const void *grad, void *out, const int grad_dtype, const int out_dtype,
                       const int l2_mode, const int decay_mode) {
    __m256 g = _mm256_mul_ps(load_grad(grad, grad_dtype), c->grad_scale);
    __m256 bad = _mm256_cmp_ps(_mm256_sub_ps(g, g), _mm256_setzero_ps(), _CMP_UNORD_Q);
    __m256 p = _mm256_loadu_ps(param);
    if (l2_mode) g = _mm256_add_ps(g, _mm256_mul_ps(c->l2, p));
    __m256 m = _mm256_add_ps(_mm256_mul_ps(c->beta1, _mm256_loadu_ps(exp_avg)),
                             _mm256_mul_ps(c->one_minus_beta1, g));
    __m256 v = _mm256_add_ps(_mm256_mul_ps(c->beta2, _mm256_loadu_ps(exp_avg_sq)),
                             _mm256_mul_ps(_mm256_mul_ps(c->one_minus_beta2, g), g));
    __m256 denom = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), c->inv_bc2_sqrt), c->eps);
    __m256 update = _mm256_mul_ps(c->step_size, _mm256_div_ps(m, denom));
    if (decay_mode) update = _mm256_add_ps(update, _mm256_mul_ps(c->lr_wd, p));
    p = _mm256_sub_ps(p, update);
    _mm256_storeu_ps(exp_avg, m);
    _mm256_storeu_ps(exp_avg_sq, v);
    _mm256_storeu_ps(param, p);
    store_out(out, p, out_dtype);
    return bad;
}

TM_INLINE int adam_range(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    coeff_vectors cv = {
        _mm256_set1_ps(c->beta1),     _mm256_set1_ps(c->one_minus_beta1),
        _mm256_set1_ps(c->beta2),     _mm256_set1_ps(c->one_minus_beta2),
        _mm256_set1_ps(c->step_size), _mm256_set1_ps(c->inv_bc2_sqrt),
        _mm256_set1_ps(c->eps),       _mm256_set1_ps(c->lr_wd),
        _mm256_set1_ps(c->l2),        _mm256_set1_ps(c->grad_scale),
    };
    const size_t gsize = dtype_size(grad_dtype), osize = dtype_size(out_dtype);
    const char *grad = (const char *)b->grad;
    char *out = (char *)b->param_out;
    __m256 bad = _mm256_setzero_ps();
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        bad = _mm256_or_ps(bad, adam8(&cv, b->param + i, b->exp_avg + i, b->exp_avg_sq + i,
                                      grad + i * gsize, out ? out + i * osize : NULL,
                                      grad_dtype, out_dtype, l2_mode, decay_mode));
    }
    if (i < end) {
        size_t left = (size_t)(end - i);
        float p[8] = {0}, m[8] = {0}, v[8] = {0};
        _Alignas(32) char g[32] = {0}, o[32] = {0};
        memcpy(p, b->param + i, left * 4);
        memcpy(m, b->exp_avg + i, left * 4);
        memcpy(v, b->exp_avg_sq + i, left * 4);
        memcpy(g, grad + i * gsize, left * gsize);
        __m256 tail_bad =
            adam8(&cv, p, m, v, g, o, grad_dtype, out_dtype, l2_mode, decay_mode);
        /* padding lanes hold a zero gradient (finite); keep only real lanes */
        int lane_mask = (1 << left) - 1;
        if (_mm256_movemask_ps(tail_bad) & lane_mask) bad = _mm256_or_ps(bad, tail_bad);
        memcpy(b->param + i, p, left * 4);
        memcpy(b->exp_avg + i, m, left * 4);
        memcpy(b->exp_avg_sq + i, v, left * 4);
        if (out) memcpy(out + i * osize, o, left * osize);
    }
    return _mm256_movemask_ps(bad) != 0;
}

/* [Note: the dtype and mode switches are resolved here, outside the loop;
 *  always_inline makes each case its own specialised loop.] */
TM_INLINE int adam_by_out(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                          int64_t end, const int grad_dtype, const int l2_mode,
                          const int decay_mode) {
    switch (b->out_dtype) {
    case TM_DTYPE_FLOAT32:
        return adam_range(c, b, begin, end, grad_dtype, TM_DTYPE_FLOAT32, l2_mode, decay_mode);
    case TM_DTYPE_BFLOAT16:
        return adam_range(c, b, begin, end, grad_dtype, TM_DTYPE_BFLOAT16, l2_mode, decay_mode);
    case TM_DTYPE_FLOAT16:
        return adam_range(c, b, begin, end, grad_dtype, TM_DTYPE_FLOAT16, l2_mode, decay_mode);
    default: return adam_range(c, b, begin, end, grad_dtype, TM_DTYPE_NONE, l2_mode, decay_mode);
    }
}

TM_INLINE int adam_by_grad(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                           int64_t end, const int l2_mode, const int decay_mode) {
    switch (b->grad_dtype) {
    case TM_DTYPE_BFLOAT16: return adam_by_out(c, b, begin, end, TM_DTYPE_BFLOAT16, l2_mode,
                           decay_mode);
    case TM_DTYPE_FLOAT16: return adam_by_out(c, b, begin, end, TM_DTYPE_FLOAT16, l2_mode,
                           decay_mode);
    default: return adam_by_out(c, b, begin, end, TM_DTYPE_FLOAT32, l2_mode,
                           decay_mode);
    }
}

static int adam_avx2(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                     int64_t end) {
    if (c->l2 != 0.0f) return adam_by_grad(c, b, begin, end, 1, 0);
    if (c->lr_wd != 0.0f) return adam_by_grad(c, b, begin, end, 0, 1);
    return adam_by_grad(c, b, begin, end, 0, 0);
}

/* ---- compact moments (tm_adam_step_states) ----
 * [Note: here the last < 8 elements of a range or block take the scalar
 *  element code of adam_lowp.h, which rounds exactly as these lanes do; the
 *  padded-copy trick above would need copies of four more arrays.] */

TM_INLINE __m256 update8(const coeff_vectors *c, __m256 g, __m256 p, __m256 m_old, __m256 v_old,
                         __m256 *m, __m256 *v, const int l2_mode, const int decay_mode) {
    if (l2_mode) g = _mm256_add_ps(g, _mm256_mul_ps(c->l2, p));
    *m = _mm256_add_ps(_mm256_mul_ps(c->beta1, m_old), _mm256_mul_ps(c->one_minus_beta1, g));
    *v = _mm256_add_ps(_mm256_mul_ps(c->beta2, v_old),
                       _mm256_mul_ps(_mm256_mul_ps(c->one_minus_beta2, g), g));
    __m256 denom = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(*v), c->inv_bc2_sqrt), c->eps);
    __m256 update = _mm256_mul_ps(c->step_size, _mm256_div_ps(*m, denom));
    if (decay_mode) update = _mm256_add_ps(update, _mm256_mul_ps(c->lr_wd, p));
    return _mm256_sub_ps(p, update);
}

TM_INLINE __m256 bf16_load(const uint16_t *src) {
    __m128i h = _mm_loadu_si128((const __m128i *)src);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

TM_INLINE int bf16_range(const coeff_vectors *cv, const tm_adam_coeffs *c,
                         const tm_adam_buffers *b, int64_t begin, int64_t end,
                         const int grad_dtype, const int out_dtype, const int l2_mode,
                         const int decay_mode) {
    uint16_t *m16 = (uint16_t *)b->m_lowp, *v16 = (uint16_t *)b->v_lowp;
    const size_t gsize = dtype_size(grad_dtype), osize = dtype_size(out_dtype);
    const char *grad = (const char *)b->grad;
    char *out = (char *)b->param_out;
    __m256 bad = _mm256_setzero_ps();
    int nonfinite = 0;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_mul_ps(load_grad(grad + i * gsize, grad_dtype), cv->grad_scale);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(g, g), _mm256_setzero_ps(),
                                              _CMP_UNORD_Q));
        __m256 m, v;
        __m256 p = update8(cv, g, _mm256_loadu_ps(b->param + i), bf16_load(m16 + i),
                           bf16_load(v16 + i), &m, &v, l2_mode, decay_mode);
        _mm_storeu_si128((__m128i *)(m16 + i), f32_to_bf16(m));
        _mm_storeu_si128((__m128i *)(v16 + i), f32_to_bf16(v));
        _mm256_storeu_ps(b->param + i, p);
        if (out) store_out(out + i * osize, p, out_dtype);
    }
    for (; i < end; i++) nonfinite |= tm_lowp_bf16_elem(c, b, i);
    return nonfinite | (_mm256_movemask_ps(bad) != 0);
}

/* Codes of 8 normalized values, equal to tm_quant_code's: a guess within one
 * of the answer from the level and linear bin (tm_quant_tables), then one
 * comparison with the midpoint on each side.
 * [Note: the scalar binary search took eight dependent gathers per vector and
 *  made the int8 step several times slower than the fp32 one; this is two.] */
TM_INLINE __m256i quant8(__m256 x, const tm_quant_tables *t, const int is_signed) {
    const int side = is_signed ? 0 : 1;
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    const __m256i one = _mm256_set1_epi32(1), zero = _mm256_setzero_si256();
    __m256 a = _mm256_and_ps(x, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF)));
    __m256i level = zero;
    for (int k = 0; k < 7; k++) /* a true compare is -1: subtracting counts it */
        level = _mm256_sub_epi32(level, _mm256_castps_si256(_mm256_cmp_ps(
                                            a, _mm256_set1_ps(t->level_bound[k]), _CMP_LT_OQ)));
    __m256 scale = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t->level_scale), level);
    __m256 width_inv = _mm256_permutevar8x32_ps(_mm256_loadu_ps(t->width_inv[side]), level);
    __m256i count = _mm256_permutevar8x32_epi32(
        _mm256_loadu_si256((const __m256i *)t->count[side]), level);
    __m256i before = _mm256_permutevar8x32_epi32(
        _mm256_loadu_si256((const __m256i *)t->before[side]), level);
    __m256 capped = _mm256_min_ps(a, _mm256_set1_ps(2.0f)); /* keeps the bin index finite */
    __m256 f = _mm256_mul_ps(_mm256_sub_ps(_mm256_mul_ps(capped, scale), _mm256_set1_ps(0.1f)),
                             width_inv);
    __m256i j = _mm256_max_epi32(_mm256_cvttps_epi32(f), zero);
    j = _mm256_min_epi32(j, _mm256_sub_epi32(count, one));
    __m256i off = _mm256_add_epi32(_mm256_add_epi32(before, j), one);
    __m256i c = off;
    if (is_signed) {
        __m256i center = _mm256_set1_epi32(127);
        __m256 neg = _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ);
        c = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(_mm256_add_epi32(center, off)),
            _mm256_castsi256_ps(_mm256_sub_epi32(center, off)), neg));
    }
    __m256 hi = _mm256_i32gather_ps(mid, c, 4);
    __m256 lo = _mm256_i32gather_ps(mid, _mm256_max_epi32(_mm256_sub_epi32(c, one), zero), 4);
    __m256i up = _mm256_castps_si256(_mm256_cmp_ps(x, hi, _CMP_GT_OQ));
    __m256i down = _mm256_and_si256(_mm256_castps_si256(_mm256_cmp_ps(x, lo, _CMP_LE_OQ)),
                                    _mm256_cmpgt_epi32(c, zero));
    c = _mm256_add_epi32(_mm256_sub_epi32(c, up), down); /* masks are -1 */
    __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
    return _mm256_andnot_si256(nan, c); /* NaN: code 0, as the binary search gives */
}

/* The low byte of each of 8 lanes, stored as 8 bytes. */
TM_INLINE void store_codes8(uint8_t *dst, __m256i idx) {
    const __m256i pick = _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, 0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
                                          -1, -1);
    __m256i bytes = _mm256_shuffle_epi8(idx, pick);
    __m256i joined = _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm_storel_epi64((__m128i *)dst, _mm256_castsi256_si128(joined));
}

TM_INLINE __m256 dequant8(const uint8_t *codes, const float *map, __m256 scale) {
    __m256i at = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)codes));
    return _mm256_mul_ps(_mm256_i32gather_ps(map, at, 4), scale);
}

TM_INLINE float reduce_max8(__m256 x) {
    float lanes[8];
    _mm256_storeu_ps(lanes, x);
    float r = lanes[0];
    for (int k = 1; k < 8; k++) r = lanes[k] > r ? lanes[k] : r;
    return r;
}

TM_INLINE int int8_block(const coeff_vectors *cv, const tm_adam_coeffs *c,
                         const tm_adam_buffers *b, const tm_quant_tables *t, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    _Alignas(32) float m_new[TM_QBLOCK_MAX];
    _Alignas(32) float v_new[TM_QBLOCK_MAX];
    uint8_t *mq = (uint8_t *)b->m_lowp, *vq = (uint8_t *)b->v_lowp;
    const size_t gsize = dtype_size(grad_dtype), osize = dtype_size(out_dtype);
    const char *grad = (const char *)b->grad;
    char *out = (char *)b->param_out;
    int64_t q = begin / b->qblock;
    float am_m = b->m_absmax[q], am_v = b->v_absmax[q];
    __m256 scale_m = _mm256_set1_ps(am_m), scale_v = _mm256_set1_ps(am_v);
    __m256 abs_bits = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
    __m256 vmax_m = _mm256_setzero_ps(), vmax_v = _mm256_setzero_ps();
    __m256 bad = _mm256_setzero_ps();
    int nonfinite = 0;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_mul_ps(load_grad(grad + i * gsize, grad_dtype), cv->grad_scale);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(_mm256_sub_ps(g, g), _mm256_setzero_ps(),
                                              _CMP_UNORD_Q));
        __m256 m, v;
        __m256 p = update8(cv, g, _mm256_loadu_ps(b->param + i),
                           dequant8(mq + i, t->map_signed, scale_m),
                           dequant8(vq + i, t->map_unsigned, scale_v), &m, &v, l2_mode,
                           decay_mode);
        _mm256_store_ps(m_new + (i - begin), m);
        _mm256_store_ps(v_new + (i - begin), v);
        /* max(a, acc): acc when a is NaN, as tm_absmax_fold */
        vmax_m = _mm256_max_ps(_mm256_and_ps(m, abs_bits), vmax_m);
        vmax_v = _mm256_max_ps(_mm256_and_ps(v, abs_bits), vmax_v);
        _mm256_storeu_ps(b->param + i, p);
        if (out) store_out(out + i * osize, p, out_dtype);
    }
    float max_m = reduce_max8(vmax_m), max_v = reduce_max8(vmax_v);
    for (; i < end; i++)
        nonfinite |= tm_lowp_int8_elem(c, b, t, i, am_m, am_v, &m_new[i - begin],
                                       &v_new[i - begin], &max_m, &max_v);
    b->m_absmax[q] = max_m;
    b->v_absmax[q] = max_v;
    float s_m = tm_absmax_inverse(max_m), s_v = tm_absmax_inverse(max_v);
    __m256 inv_m = _mm256_set1_ps(s_m), inv_v = _mm256_set1_ps(s_v);
    int64_t j = 0, len = end - begin;
    for (; j + 8 <= len; j += 8) {
        store_codes8(mq + begin + j, quant8(_mm256_mul_ps(_mm256_load_ps(m_new + j), inv_m), t, 1));
        store_codes8(vq + begin + j, quant8(_mm256_mul_ps(_mm256_load_ps(v_new + j), inv_v), t, 0));
    }
    for (; j < len; j++) {
        mq[begin + j] = tm_quant_code(t->mid_signed, m_new[j] * s_m);
        vq[begin + j] = tm_quant_code(t->mid_unsigned, v_new[j] * s_v);
    }
    return nonfinite | (_mm256_movemask_ps(bad) != 0);
}

TM_INLINE int lowp_range(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    coeff_vectors cv = {
        _mm256_set1_ps(c->beta1),     _mm256_set1_ps(c->one_minus_beta1),
        _mm256_set1_ps(c->beta2),     _mm256_set1_ps(c->one_minus_beta2),
        _mm256_set1_ps(c->step_size), _mm256_set1_ps(c->inv_bc2_sqrt),
        _mm256_set1_ps(c->eps),       _mm256_set1_ps(c->lr_wd),
        _mm256_set1_ps(c->l2),        _mm256_set1_ps(c->grad_scale),
    };
    if (b->state_dtype == TM_STATE_BFLOAT16)
        return bf16_range(&cv, c, b, begin, end, grad_dtype, out_dtype, l2_mode, decay_mode);
    const tm_quant_tables *t = tm_quant_tables_get();
    int nonfinite = 0;
    for (int64_t q = begin; q < end; q += b->qblock) {
        int64_t q_end = q + b->qblock < end ? q + b->qblock : end;
        nonfinite |=
            int8_block(&cv, c, b, t, q, q_end, grad_dtype, out_dtype, l2_mode, decay_mode);
    }
    return nonfinite;
}

TM_INLINE int lowp_by_out(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                          int64_t end, const int grad_dtype, const int l2_mode,
                          const int decay_mode) {
    switch (b->out_dtype) {
    case TM_DTYPE_FLOAT32:
        return lowp_range(c, b, begin, end, grad_dtype, TM_DTYPE_FLOAT32, l2_mode, decay_mode);
    case TM_DTYPE_BFLOAT16:
        return lowp_range(c, b, begin, end, grad_dtype, TM_DTYPE_BFLOAT16, l2_mode, decay_mode);
    case TM_DTYPE_FLOAT16:
        return lowp_range(c, b, begin, end, grad_dtype, TM_DTYPE_FLOAT16, l2_mode, decay_mode);
    default: return lowp_range(c, b, begin, end, grad_dtype, TM_DTYPE_NONE, l2_mode, decay_mode);
    }
}

TM_INLINE int lowp_by_grad(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                           int64_t end, const int l2_mode, const int decay_mode) {
    switch (b->grad_dtype) {
    case TM_DTYPE_BFLOAT16:
        return lowp_by_out(c, b, begin, end, TM_DTYPE_BFLOAT16, l2_mode, decay_mode);
    case TM_DTYPE_FLOAT16:
        return lowp_by_out(c, b, begin, end, TM_DTYPE_FLOAT16, l2_mode, decay_mode);
    default: return lowp_by_out(c, b, begin, end, TM_DTYPE_FLOAT32, l2_mode, decay_mode);
    }
}

static int adam_lowp_avx2(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                          int64_t end) {
    if (c->l2 != 0.0f) return lowp_by_grad(c, b, begin, end, 1, 0);
    if (c->lr_wd != 0.0f) return lowp_by_grad(c, b, begin, end, 0, 1);
    return lowp_by_grad(c, b, begin, end, 0, 0);
}

static void quant_avx2(const tm_quant_tables *t, int is_signed, const float *x, int64_t n,
                       uint8_t *codes) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        store_codes8(codes + i, is_signed ? quant8(_mm256_loadu_ps(x + i), t, 1)
                                          : quant8(_mm256_loadu_ps(x + i), t, 0));
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    for (; i < n; i++) codes[i] = tm_quant_code(mid, x[i]);
}

/* Gradient element i as fp32 (tails of scan and norm). */
TM_INLINE float grad_at(const void *grad, int64_t i, const int dtype) {
    if (dtype == TM_DTYPE_BFLOAT16) return tm_bf16_to_f32(((const uint16_t *)grad)[i]);
    if (dtype == TM_DTYPE_FLOAT16) return tm_f16_to_f32(((const uint16_t *)grad)[i]);
    return ((const float *)grad)[i];
}

TM_INLINE int scan_typed(const void *grad, float scale, int64_t begin, int64_t end,
                         const int dtype) {
    const char *base = (const char *)grad;
    const size_t gsize = dtype_size(dtype);
    __m256 s = _mm256_set1_ps(scale);
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m256 g = _mm256_mul_ps(load_grad(base + i * gsize, dtype), s);
        __m256 bad = _mm256_cmp_ps(_mm256_sub_ps(g, g), _mm256_setzero_ps(), _CMP_UNORD_Q);
        if (_mm256_movemask_ps(bad)) return 1;
    }
    for (; i < end; i++) {
        float g = grad_at(grad, i, dtype) * scale;
        if (g - g != 0.0f) return 1;
    }
    return 0;
}

static int scan_avx2(const void *grad, int dtype, float scale, int64_t begin, int64_t end) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return scan_typed(grad, scale, begin, end, TM_DTYPE_BFLOAT16);
    case TM_DTYPE_FLOAT16: return scan_typed(grad, scale, begin, end, TM_DTYPE_FLOAT16);
    default: return scan_typed(grad, scale, begin, end, TM_DTYPE_FLOAT32);
    }
}

TM_INLINE __m256d sumsq8(__m256d acc, __m256 g) {
    __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(g));
    __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(g, 1));
    return _mm256_fmadd_pd(hi, hi, _mm256_fmadd_pd(lo, lo, acc));
}

TM_INLINE double sqnorm_typed(const void *grad, int64_t begin, int64_t end, const int dtype) {
    const char *base = (const char *)grad;
    const size_t gsize = dtype_size(dtype);
    __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
    int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
        acc0 = sumsq8(acc0, load_grad(base + i * gsize, dtype));
        acc1 = sumsq8(acc1, load_grad(base + (i + 8) * gsize, dtype));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(acc0, acc1));
    double sum = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
    for (; i < end; i++) {
        double g = (double)grad_at(grad, i, dtype);
        sum += g * g;
    }
    return sum;
}

static double sqnorm_avx2(const void *grad, int dtype, int64_t begin, int64_t end) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return sqnorm_typed(grad, begin, end, TM_DTYPE_BFLOAT16);
    case TM_DTYPE_FLOAT16: return sqnorm_typed(grad, begin, end, TM_DTYPE_FLOAT16);
    default: return sqnorm_typed(grad, begin, end, TM_DTYPE_FLOAT32);
    }
}

const tm_adam_kernels tm_adam_kernels_avx2 = {
    .name = "avx2",
    .adam = adam_avx2,
    .adam_lowp = adam_lowp_avx2,
    .quant = quant_avx2,
    .scan = scan_avx2,
    .sqnorm = sqnorm_avx2,
};
