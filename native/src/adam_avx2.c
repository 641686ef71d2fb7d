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
    .scan = scan_avx2,
    .sqnorm = sqnorm_avx2,
};
