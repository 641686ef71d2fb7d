/* AVX-512 (F/BW/VL) Adam/AdamW kernels: 16 fp32 lanes, masked tails.
 *
 * Compiled with -mavx512f -mavx512bw -mavx512vl -ffp-contract=off; only
 * called after CPUID says the CPU (and OS) support those. The arithmetic is
 * adam_scalar.c's, operation for operation. */
#include <immintrin.h>
#include <stdint.h>

#include "adam_internal.h"
#include "adam_lowp.h"

#define TM_INLINE static inline __attribute__((always_inline))

typedef struct coeff_vectors {
    __m512 beta1, one_minus_beta1, beta2, one_minus_beta2, step_size, inv_bc2_sqrt, eps, lr_wd, l2,
        grad_scale;
} coeff_vectors;

/* Full loads/stores in the body, masked ones in the tail.
 * [Note: masked stores are slow on some cores (Zen 4), so the body avoids
 *  them; `full` is a compile-time constant after inlining.] */
TM_INLINE __m512 load_f32(const float *p, __mmask16 k, const int full) {
    return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}

TM_INLINE void store_f32(float *p, __m512 x, __mmask16 k, const int full) {
    if (full)
        _mm512_storeu_ps(p, x);
    else
        _mm512_mask_storeu_ps(p, k, x);
}

TM_INLINE __m512 load_grad(const void *grad, int64_t i, __mmask16 k, const int full,
                           const int dtype) {
    if (dtype == TM_DTYPE_FLOAT32) return load_f32((const float *)grad + i, k, full);
    const uint16_t *src = (const uint16_t *)grad + i;
    __m256i h = full ? _mm256_loadu_si256((const __m256i *)src) : _mm256_maskz_loadu_epi16(k, src);
    if (dtype == TM_DTYPE_BFLOAT16)
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
    return _mm512_cvtph_ps(h);
}

/* Round-to-nearest-even fp32 -> bf16 in integer arithmetic (see
 * tm_f32_to_bf16 for why not VCVTNEPS2BF16). */
TM_INLINE __m256i f32_to_bf16(__m512 x) {
    __m512i u = _mm512_castps_si512(x);
    __m512i upper = _mm512_srli_epi32(u, 16);
    __m512i lsb = _mm512_and_si512(upper, _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7FFF)), lsb), 16);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    __m512i quiet = _mm512_or_si512(upper, _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, quiet));
}

TM_INLINE void store_out(void *out, int64_t i, __m512 x, __mmask16 k, const int full,
                         const int dtype) {
    if (dtype == TM_DTYPE_NONE) return;
    if (dtype == TM_DTYPE_FLOAT32) {
        store_f32((float *)out + i, x, k, full);
        return;
    }
    __m256i h = dtype == TM_DTYPE_BFLOAT16
                    ? f32_to_bf16(x)
                    : _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    uint16_t *dst = (uint16_t *)out + i;
    if (full)
        _mm256_storeu_si256((__m256i *)dst, h);
    else
        _mm256_mask_storeu_epi16(dst, k, h);
}

/* 16 elements starting at i; returns the lanes whose scaled gradient is not finite. */
TM_INLINE __mmask16 adam16(const coeff_vectors *c, const tm_adam_buffers *b, int64_t i,
                           __mmask16 k, const int full, const int grad_dtype,
                           const int out_dtype, const int l2_mode,
                           const int decay_mode) {
    __m512 g = _mm512_mul_ps(load_grad(b->grad, i, k, full, grad_dtype), c->grad_scale);
    __mmask16 bad = _mm512_cmp_ps_mask(_mm512_sub_ps(g, g), _mm512_setzero_ps(), _CMP_UNORD_Q);
    __m512 p = load_f32(b->param + i, k, full);
    if (l2_mode) g = _mm512_add_ps(g, _mm512_mul_ps(c->l2, p));
    __m512 m = _mm512_add_ps(_mm512_mul_ps(c->beta1, load_f32(b->exp_avg + i, k, full)),
                             _mm512_mul_ps(c->one_minus_beta1, g));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(c->beta2, load_f32(b->exp_avg_sq + i, k, full)),
                             _mm512_mul_ps(_mm512_mul_ps(c->one_minus_beta2, g), g));
    __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(v), c->inv_bc2_sqrt), c->eps);
    __m512 update = _mm512_mul_ps(c->step_size, _mm512_div_ps(m, denom));
    if (decay_mode) update = _mm512_add_ps(update, _mm512_mul_ps(c->lr_wd, p));
    p = _mm512_sub_ps(p, update);
    store_f32(b->exp_avg + i, m, k, full);
    store_f32(b->exp_avg_sq + i, v, k, full);
    store_f32(b->param + i, p, k, full);
    store_out(b->param_out, i, p, k, full, out_dtype);
    return bad;
}

TM_INLINE int adam_range(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    coeff_vectors cv = {
        _mm512_set1_ps(c->beta1),     _mm512_set1_ps(c->one_minus_beta1),
        _mm512_set1_ps(c->beta2),     _mm512_set1_ps(c->one_minus_beta2),
        _mm512_set1_ps(c->step_size), _mm512_set1_ps(c->inv_bc2_sqrt),
        _mm512_set1_ps(c->eps),       _mm512_set1_ps(c->lr_wd),
        _mm512_set1_ps(c->l2),        _mm512_set1_ps(c->grad_scale),
    };
    __mmask16 bad = 0;
    int64_t i = begin;
    for (; i + 16 <= end; i += 16)
        bad |= adam16(&cv, b, i, 0xFFFF, 1, grad_dtype, out_dtype, l2_mode, decay_mode);
    if (i < end) {
        __mmask16 k = (__mmask16)((1u << (end - i)) - 1u);
        bad |= adam16(&cv, b, i, k, 0, grad_dtype, out_dtype, l2_mode, decay_mode);
    }
    return bad != 0;
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

static int adam_avx512(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                       int64_t end) {
    if (c->l2 != 0.0f) return adam_by_grad(c, b, begin, end, 1, 0);
    if (c->lr_wd != 0.0f) return adam_by_grad(c, b, begin, end, 0, 1);
    return adam_by_grad(c, b, begin, end, 0, 0);
}

/* ---- compact moments (tm_adam_step_states) ---- */

/* The fp32 arithmetic of adam16 on given old moments; returns the new
 * parameter and the new moments in *m / *v. */
TM_INLINE __m512 update16(const coeff_vectors *c, __m512 g, __m512 p, __m512 m_old,
                          __m512 v_old, __m512 *m, __m512 *v, const int l2_mode,
                          const int decay_mode) {
    if (l2_mode) g = _mm512_add_ps(g, _mm512_mul_ps(c->l2, p));
    *m = _mm512_add_ps(_mm512_mul_ps(c->beta1, m_old), _mm512_mul_ps(c->one_minus_beta1, g));
    *v = _mm512_add_ps(_mm512_mul_ps(c->beta2, v_old),
                       _mm512_mul_ps(_mm512_mul_ps(c->one_minus_beta2, g), g));
    __m512 denom = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(*v), c->inv_bc2_sqrt), c->eps);
    __m512 update = _mm512_mul_ps(c->step_size, _mm512_div_ps(*m, denom));
    if (decay_mode) update = _mm512_add_ps(update, _mm512_mul_ps(c->lr_wd, p));
    return _mm512_sub_ps(p, update);
}

TM_INLINE __m512 bf16_load(const uint16_t *src) {
    __m256i h = _mm256_loadu_si256((const __m256i *)src);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

TM_INLINE int bf16_range(const coeff_vectors *cv, const tm_adam_coeffs *c,
                         const tm_adam_buffers *b, int64_t begin, int64_t end,
                         const int grad_dtype, const int out_dtype, const int l2_mode,
                         const int decay_mode) {
    uint16_t *m16 = (uint16_t *)b->m_lowp, *v16 = (uint16_t *)b->v_lowp;
    __mmask16 bad = 0;
    int nonfinite = 0;
    int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
        __m512 g = _mm512_mul_ps(load_grad(b->grad, i, 0xFFFF, 1, grad_dtype), cv->grad_scale);
        bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(g, g), _mm512_setzero_ps(), _CMP_UNORD_Q);
        __m512 m, v;
        __m512 p = update16(cv, g, _mm512_loadu_ps(b->param + i), bf16_load(m16 + i),
                            bf16_load(v16 + i), &m, &v, l2_mode, decay_mode);
        _mm256_storeu_si256((__m256i *)(m16 + i), f32_to_bf16(m));
        _mm256_storeu_si256((__m256i *)(v16 + i), f32_to_bf16(v));
        _mm512_storeu_ps(b->param + i, p);
        store_out(b->param_out, i, p, 0xFFFF, 1, out_dtype);
    }
    for (; i < end; i++) nonfinite |= tm_lowp_bf16_elem(c, b, i);
    return nonfinite | (bad != 0);
}

/* Codes of 16 normalized values, equal to tm_quant_code's: a guess within one
 * of the answer from the level and linear bin (tm_quant_tables), then one
 * comparison with the midpoint on each side (as quant8 in adam_avx2.c). */
TM_INLINE __m128i quant16(__m512 x, const tm_quant_tables *t, const int is_signed) {
    const int side = is_signed ? 0 : 1;
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    const __m512i one = _mm512_set1_epi32(1), zero = _mm512_setzero_si512();
    __m512 a = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7FFFFFFF)));
    __m512i level = zero;
    for (int k = 0; k < 7; k++) {
        __mmask16 below = _mm512_cmp_ps_mask(a, _mm512_set1_ps(t->level_bound[k]), _CMP_LT_OQ);
        level = _mm512_mask_add_epi32(level, below, level, one);
    }
    /* 8-entry tables: the upper half of each register is never indexed */
    __m512 scale = _mm512_permutexvar_ps(level, _mm512_castps256_ps512(_mm256_loadu_ps(t->level_scale)));
    __m512 width_inv =
        _mm512_permutexvar_ps(level, _mm512_castps256_ps512(_mm256_loadu_ps(t->width_inv[side])));
    __m512i count = _mm512_permutexvar_epi32(
        level, _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)t->count[side])));
    __m512i before = _mm512_permutexvar_epi32(
        level, _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)t->before[side])));
    __m512 capped = _mm512_min_ps(a, _mm512_set1_ps(2.0f));
    __m512 f = _mm512_mul_ps(_mm512_sub_ps(_mm512_mul_ps(capped, scale), _mm512_set1_ps(0.1f)),
                             width_inv);
    __m512i j = _mm512_max_epi32(_mm512_cvttps_epi32(f), zero);
    j = _mm512_min_epi32(j, _mm512_sub_epi32(count, one));
    __m512i off = _mm512_add_epi32(_mm512_add_epi32(before, j), one);
    __m512i c = off;
    if (is_signed) {
        __m512i center = _mm512_set1_epi32(127);
        __mmask16 neg = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ);
        c = _mm512_mask_blend_epi32(neg, _mm512_add_epi32(center, off),
                                    _mm512_sub_epi32(center, off));
    }
    __m512 hi = _mm512_i32gather_ps(c, mid, 4);
    __m512 lo = _mm512_i32gather_ps(_mm512_max_epi32(_mm512_sub_epi32(c, one), zero), mid, 4);
    __mmask16 up = _mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ);
    __mmask16 down = _mm512_cmp_ps_mask(x, lo, _CMP_LE_OQ) & _mm512_cmpgt_epi32_mask(c, zero);
    c = _mm512_mask_add_epi32(c, up, c, one);
    c = _mm512_mask_sub_epi32(c, down, c, one);
    __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
    c = _mm512_maskz_mov_epi32((__mmask16)~nan, c); /* NaN: code 0, as the binary search */
    return _mm512_cvtepi32_epi8(c);
}

TM_INLINE __m512 dequant16(const uint8_t *codes, const float *map, __m512 scale) {
    __m512i at = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)codes));
    return _mm512_mul_ps(_mm512_i32gather_ps(at, map, 4), scale);
}

TM_INLINE int int8_block(const coeff_vectors *cv, const tm_adam_coeffs *c,
                         const tm_adam_buffers *b, const tm_quant_tables *t, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    _Alignas(64) float m_new[TM_QBLOCK_MAX];
    _Alignas(64) float v_new[TM_QBLOCK_MAX];
    uint8_t *mq = (uint8_t *)b->m_lowp, *vq = (uint8_t *)b->v_lowp;
    int64_t q = begin / b->qblock;
    float am_m = b->m_absmax[q], am_v = b->v_absmax[q];
    __m512 scale_m = _mm512_set1_ps(am_m), scale_v = _mm512_set1_ps(am_v);
    __m512i abs_bits = _mm512_set1_epi32(0x7FFFFFFF);
    __m512 vmax_m = _mm512_setzero_ps(), vmax_v = _mm512_setzero_ps();
    __mmask16 bad = 0;
    int nonfinite = 0;
    int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
        __m512 g = _mm512_mul_ps(load_grad(b->grad, i, 0xFFFF, 1, grad_dtype), cv->grad_scale);
        bad |= _mm512_cmp_ps_mask(_mm512_sub_ps(g, g), _mm512_setzero_ps(), _CMP_UNORD_Q);
        __m512 m, v;
        __m512 p = update16(cv, g, _mm512_loadu_ps(b->param + i),
                            dequant16(mq + i, t->map_signed, scale_m),
                            dequant16(vq + i, t->map_unsigned, scale_v), &m, &v, l2_mode,
                            decay_mode);
        _mm512_store_ps(m_new + (i - begin), m);
        _mm512_store_ps(v_new + (i - begin), v);
        /* max(a, acc): acc when a is NaN, as tm_absmax_fold */
        vmax_m = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(m), abs_bits)), vmax_m);
        vmax_v = _mm512_max_ps(_mm512_castsi512_ps(_mm512_and_si512(_mm512_castps_si512(v), abs_bits)), vmax_v);
        _mm512_storeu_ps(b->param + i, p);
        store_out(b->param_out, i, p, 0xFFFF, 1, out_dtype);
    }
    float max_m = _mm512_reduce_max_ps(vmax_m), max_v = _mm512_reduce_max_ps(vmax_v);
    for (; i < end; i++)
        nonfinite |= tm_lowp_int8_elem(c, b, t, i, am_m, am_v, &m_new[i - begin],
                                       &v_new[i - begin], &max_m, &max_v);
    b->m_absmax[q] = max_m;
    b->v_absmax[q] = max_v;
    __m512 inv_m = _mm512_set1_ps(tm_absmax_inverse(max_m));
    __m512 inv_v = _mm512_set1_ps(tm_absmax_inverse(max_v));
    int64_t j = 0, len = end - begin;
    for (; j + 16 <= len; j += 16) {
        _mm_storeu_si128((__m128i *)(mq + begin + j),
                         quant16(_mm512_mul_ps(_mm512_load_ps(m_new + j), inv_m), t, 1));
        _mm_storeu_si128((__m128i *)(vq + begin + j),
                         quant16(_mm512_mul_ps(_mm512_load_ps(v_new + j), inv_v), t, 0));
    }
    float s_m = tm_absmax_inverse(max_m), s_v = tm_absmax_inverse(max_v);
    for (; j < len; j++) {
        mq[begin + j] = tm_quant_code(t->mid_signed, m_new[j] * s_m);
        vq[begin + j] = tm_quant_code(t->mid_unsigned, v_new[j] * s_v);
    }
    return nonfinite | (bad != 0);
}

TM_INLINE int lowp_range(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                         int64_t end, const int grad_dtype, const int out_dtype,
                         const int l2_mode, const int decay_mode) {
    coeff_vectors cv = {
        _mm512_set1_ps(c->beta1),     _mm512_set1_ps(c->one_minus_beta1),
        _mm512_set1_ps(c->beta2),     _mm512_set1_ps(c->one_minus_beta2),
        _mm512_set1_ps(c->step_size), _mm512_set1_ps(c->inv_bc2_sqrt),
        _mm512_set1_ps(c->eps),       _mm512_set1_ps(c->lr_wd),
        _mm512_set1_ps(c->l2),        _mm512_set1_ps(c->grad_scale),
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

static int adam_lowp_avx512(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                            int64_t end) {
    if (c->l2 != 0.0f) return lowp_by_grad(c, b, begin, end, 1, 0);
    if (c->lr_wd != 0.0f) return lowp_by_grad(c, b, begin, end, 0, 1);
    return lowp_by_grad(c, b, begin, end, 0, 0);
}

static void quant_avx512(const tm_quant_tables *t, int is_signed, const float *x, int64_t n,
                         uint8_t *codes) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm_storeu_si128((__m128i *)(codes + i), is_signed
                                                     ? quant16(_mm512_loadu_ps(x + i), t, 1)
                                                     : quant16(_mm512_loadu_ps(x + i), t, 0));
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    for (; i < n; i++) codes[i] = tm_quant_code(mid, x[i]);
}

TM_INLINE int scan_typed(const void *grad, float scale, int64_t begin, int64_t end,
                         const int dtype) {
    __m512 s = _mm512_set1_ps(scale);
    int64_t i = begin;
    for (; i + 16 <= end; i += 16) {
        __m512 g = _mm512_mul_ps(load_grad(grad, i, 0xFFFF, 1, dtype), s);
        if (_mm512_cmp_ps_mask(_mm512_sub_ps(g, g), _mm512_setzero_ps(), _CMP_UNORD_Q)) return 1;
    }
    if (i < end) {
        __mmask16 k = (__mmask16)((1u << (end - i)) - 1u);
        __m512 g = _mm512_mul_ps(load_grad(grad, i, k, 0, dtype), s);
        if (_mm512_cmp_ps_mask(_mm512_sub_ps(g, g), _mm512_setzero_ps(), _CMP_UNORD_Q)) return 1;
    }
    return 0;
}

static int scan_avx512(const void *grad, int dtype, float scale, int64_t begin, int64_t end) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return scan_typed(grad, scale, begin, end, TM_DTYPE_BFLOAT16);
    case TM_DTYPE_FLOAT16: return scan_typed(grad, scale, begin, end, TM_DTYPE_FLOAT16);
    default: return scan_typed(grad, scale, begin, end, TM_DTYPE_FLOAT32);
    }
}

TM_INLINE __m512d sumsq16(__m512d acc, __m512 g) {
    __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(g));
    __m512d hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(g), 1)));
    return _mm512_fmadd_pd(hi, hi, _mm512_fmadd_pd(lo, lo, acc));
}

TM_INLINE double sqnorm_typed(const void *grad, int64_t begin, int64_t end, const int dtype) {
    /* two accumulators so consecutive FMAs do not wait on each other */
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    int64_t i = begin;
    for (; i + 32 <= end; i += 32) {
        acc0 = sumsq16(acc0, load_grad(grad, i, 0xFFFF, 1, dtype));
        acc1 = sumsq16(acc1, load_grad(grad, i + 16, 0xFFFF, 1, dtype));
    }
    for (; i < end; i += 16) {
        int64_t left = end - i;
        __mmask16 k = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        acc0 = sumsq16(acc0, load_grad(grad, i, k, 0, dtype));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
}

static double sqnorm_avx512(const void *grad, int dtype, int64_t begin, int64_t end) {
    switch (dtype) {
    case TM_DTYPE_BFLOAT16: return sqnorm_typed(grad, begin, end, TM_DTYPE_BFLOAT16);
    case TM_DTYPE_FLOAT16: return sqnorm_typed(grad, begin, end, TM_DTYPE_FLOAT16);
    default: return sqnorm_typed(grad, begin, end, TM_DTYPE_FLOAT32);
    }
}

const tm_adam_kernels tm_adam_kernels_avx512 = {
    .name = "avx512",
    .adam = adam_avx512,
    .adam_lowp = adam_lowp_avx512,
    .quant = quant_avx512,
    .scan = scan_avx512,
    .sqnorm = sqnorm_avx512,
};
