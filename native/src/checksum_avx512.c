/* CRC32C by carry-less multiply folding with AVX-512 VPCLMULQDQ; compiled
 * with -mavx512f -mavx512bw -mavx512vl -mvpclmulqdq -mpclmul -msse4.2 and
 * only called when CPUID and XCR0 report all of them (see checksum.c).
 *
 * The math, in the reflected representation the CRC uses: a 16-byte chunk
 * loaded little-endian is a polynomial of degree < 128 whose bit k holds the
 * coefficient of x^(127-k) (the first bit of the message is the highest
 * term), so its low 64-bit half H carries the terms x^64..x^127 and its high
 * half L the terms x^0..x^63: chunk = H*x^64 + L. The message is the sum of
 * its chunks, each shifted by x^(bits after it). Moving a chunk N bits later
 * in the message multiplies it by x^N, and modulo P that is
 *     H*x^(N+64) + L*x^N  ==  H*(x^(N+64) mod P) + L*(x^N mod P),
 * two 64x32-bit carry-less products of degree < 96 that fit in a 128-bit
 * chunk again and are XORed into the chunk N bits later ("folding"). Four
 * 512-bit accumulators (sixteen chunks, 256 bytes) each fold over the next
 * 256 bytes per step. At the end the chunks fold into one, whose CRC
 * register (X*x^32 mod P) is two crc32 instructions over its 16 bytes, and
 * the bytes after the last whole 64-byte block go through the SSE4.2 code.
 *
 * [Note: a 32-bit constant from tm_crc32c_xpow (bit 31 holds x^0) sits in a
 *  64-bit lane as K*x^32 in 64-bit reflected terms, and a 64x64 carry-less
 *  product of reflected values gains one more x (its top bit is bit 126, not
 *  127), so clmul(H, xpow(e)) stands for H*x^e*x^33. The constants are
 *  therefore xpow(N + 64 - 33) for H and xpow(N - 33) for L.]
 */
#include <immintrin.h>
#include <stdint.h>

#include "checksum_internal.h"

/* Bytes folded per loop step: four 64-byte accumulators. */
#define BLOCK 256

/* Per 128-bit lane: qword 0 multiplies H, qword 1 multiplies L. */
static __m512i g_fold256;  /* every lane moves 256 bytes */
static __m512i g_fold64;   /* every lane moves 64 bytes */
static __m512i g_fold192;  /* 192 bytes: accumulator 0 onto accumulator 3 */
static __m512i g_fold128;  /* 128 bytes: accumulator 1 onto accumulator 3 */
/* Lanes 0, 1, 2 of the last accumulator move 48, 32, 16 bytes onto lane 3;
 * lane 3's constants are zero (it is added as it is). */
static __m512i g_fold_lanes;

/* The (H, L) constants that move a 128-bit chunk `bytes` bytes later. */
static inline void fold_pair(uint64_t pair[2], unsigned bytes) {
    pair[0] = tm_crc32c_xpow(8ull * bytes + 64 - 33);
    pair[1] = tm_crc32c_xpow(8ull * bytes - 33);
}

static __m512i broadcast_pair(unsigned bytes) {
    uint64_t pair[2];
    fold_pair(pair, bytes);
    return _mm512_broadcast_i32x4(_mm_set_epi64x((long long)pair[1], (long long)pair[0]));
}

void tm_crc32c_avx512_init(void) {
    g_fold256 = broadcast_pair(256);
    g_fold64 = broadcast_pair(64);
    g_fold192 = broadcast_pair(192);
    g_fold128 = broadcast_pair(128);
    uint64_t l0[2], l1[2], l2[2];
    fold_pair(l0, 48);
    fold_pair(l1, 32);
    fold_pair(l2, 16);
    g_fold_lanes = _mm512_set_epi64(0, 0, (long long)l2[1], (long long)l2[0], (long long)l1[1],
                                    (long long)l1[0], (long long)l0[1], (long long)l0[0]);
}

/* acc moved by the distance k encodes, plus data: H*kH ^ L*kL ^ data. */
static inline __m512i fold(__m512i acc, __m512i k, __m512i data) {
    __m512i h = _mm512_clmulepi64_epi128(acc, k, 0x00);
    __m512i l = _mm512_clmulepi64_epi128(acc, k, 0x11);
    return _mm512_ternarylogic_epi64(h, l, data, 0x96); /* three-way XOR */
}

uint32_t tm_crc32c_avx512(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = buf;
    /* [Note: below BLOCK + 64 bytes set-up and reduction cost more than
     *  folding saves (measured: equal at 256 B, 1.4x faster at 320 B), so
     *  such buffers go through the SSE4.2 code; so does the unaligned head,
     *  so the 64-byte loads below are aligned and one whole block remains.]
     */
    if (len < BLOCK + 64) return tm_crc32c_sse42(crc, p, len);
    size_t head = (size_t)(-(uintptr_t)p & 63);
    if (head) {
        crc = tm_crc32c_sse42(crc, p, head);
        p += head;
        len -= head;
    }
    /* The register before the first block is XORed into its first four
     * bytes: the CRC of that message from a zero register is the same. */
    __m512i init = _mm512_castsi128_si512(_mm_cvtsi32_si128((int)~crc));
    __m512i a0 = _mm512_xor_si512(_mm512_load_si512((const void *)p), init);
    __m512i a1 = _mm512_load_si512((const void *)(p + 64));
    __m512i a2 = _mm512_load_si512((const void *)(p + 128));
    __m512i a3 = _mm512_load_si512((const void *)(p + 192));
    p += BLOCK;
    len -= BLOCK;
    for (; len >= BLOCK; p += BLOCK, len -= BLOCK) {
        a0 = fold(a0, g_fold256, _mm512_load_si512((const void *)p));
        a1 = fold(a1, g_fold256, _mm512_load_si512((const void *)(p + 64)));
        a2 = fold(a2, g_fold256, _mm512_load_si512((const void *)(p + 128)));
        a3 = fold(a3, g_fold256, _mm512_load_si512((const void *)(p + 192)));
    }
    /* Four accumulators onto the last, then whole 64-byte blocks. */
    __m512i acc = fold(a0, g_fold192, fold(a1, g_fold128, fold(a2, g_fold64, a3)));
    for (; len >= 64; p += 64, len -= 64)
        acc = fold(acc, g_fold64, _mm512_load_si512((const void *)p));
    /* Four 128-bit lanes onto the last one. */
    __m512i moved = fold(acc, g_fold_lanes, _mm512_setzero_si512());
    __m128i x = _mm_xor_si128(_mm512_extracti32x4_epi32(moved, 0),
                              _mm512_extracti32x4_epi32(moved, 1));
    x = _mm_xor_si128(x, _mm512_extracti32x4_epi32(moved, 2));
    x = _mm_xor_si128(x, _mm512_extracti32x4_epi32(acc, 3));
    /* CRC register of the 16-byte chunk x: x*x^32 mod P. */
    uint64_t reg = _mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(x));
    reg = _mm_crc32_u64(reg, (uint64_t)_mm_extract_epi64(x, 1));
    return tm_crc32c_sse42(~(uint32_t)reg, p, len);
}
