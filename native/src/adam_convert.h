/* Scalar conversions between fp32 and bf16 / fp16, bit-exact with the
 * vector instructions the SIMD kernels use. Header-only (static inline) so
 * every kernel file can finish its tails with them if it wants. */
#ifndef TIERMEM_ADAM_CONVERT_H
#define TIERMEM_ADAM_CONVERT_H
#include <stdint.h>
#include <string.h>

static inline uint32_t tm_f32_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static inline float tm_f32_from_bits(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* bf16 is the top half of an fp32: widening is exact. */
static inline float tm_bf16_to_f32(uint16_t h) {
    return tm_f32_from_bits((uint32_t)h << 16);
}

/* Round to nearest, ties to even; inf stays inf, overflow rounds to inf,
 * subnormals are kept (no flush), like torch's .to(torch.bfloat16).
 *
 * [Note: NaN becomes a quiet NaN keeping sign and top payload bits (what
 *  VCVTNEPS2BF16 does). torch itself is inconsistent here (0x7FC0 scalar,
 *  0xFFFF vectorised), so NaN is only promised to stay NaN. The AVX-512 BF16
 *  instruction is not used: it flushes subnormals, which torch's cast does
 *  not.] */
static inline uint16_t tm_f32_to_bf16(float x) {
    uint32_t u = tm_f32_bits(x);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040u);
    uint32_t lsb = (u >> 16) & 1u;
    return (uint16_t)((u + 0x7FFFu + lsb) >> 16);
}

/* IEEE binary16 -> binary32, exact (what VCVTPH2PS does). */
static inline float tm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1Fu;
    uint32_t mant = h & 0x3FFu;
    if (exp == 0x1Fu) return tm_f32_from_bits(sign | 0x7F800000u | (mant << 13));
    if (exp != 0) return tm_f32_from_bits(sign | ((exp + 112u) << 23) | (mant << 13));
    if (mant == 0) return tm_f32_from_bits(sign);
    /* subnormal half: mant * 2^-24, exactly representable in fp32 */
    float mag = (float)mant * 0x1p-24f;
    return sign ? -mag : mag;
}

/* IEEE binary32 -> binary16, round to nearest even, overflow to inf,
 * subnormals kept (what VCVTPS2PH with _MM_FROUND_TO_NEAREST_INT does).
 * NaN: sign | 0x7E00 | top payload bits (quiet). */
static inline uint16_t tm_f32_to_f16(float x) {
    uint32_t u = tm_f32_bits(x);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t abs = u & 0x7FFFFFFFu;
    if (abs > 0x7F800000u) return (uint16_t)(sign | 0x7E00u | ((abs >> 13) & 0x3FFu));
    if (abs >= 0x47800000u) return (uint16_t)(sign | 0x7C00u); /* >= 65536: inf (incl. inf) */
    if (abs < 0x38800000u) {
        /* below the smallest normal half (2^-14): the result is a subnormal
         * or zero, i.e. round(|x| * 2^24) ulps of 2^-24. */
        if (abs < 0x33000000u) return sign; /* < 2^-25: rounds to zero (ties at 2^-25 too) */
        uint32_t e = abs >> 23;             /* 102..112 */
        uint32_t m = (abs & 0x7FFFFFu) | 0x800000u;
        uint32_t shift = 126u - e;          /* value = m * 2^(e-150); ulps = m >> (126-e) */
        uint32_t q = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias exponent, round the 13 dropped mantissa bits to even;
     * a carry into the exponent (or to inf) is the correct result. */
    uint32_t r = abs + 0x0FFFu + ((abs >> 13) & 1u);
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

#endif
