/* CRC32C with the SSE4.2 crc32 instruction; compiled with -msse4.2 -mpclmul
 * and only called when CPUID reports both.
 *
 * The crc32 instruction has a latency of about three cycles and a throughput
 * of one per cycle, so a single dependency chain uses a third of it. Large
 * buffers are cut into blocks of three equal streams whose CRCs are computed
 * side by side and then combined: the CRC register of a concatenation A|B is
 * reg(A) * x^(8|B|) + reg(B) (mod P), and the multiplication by a constant
 * power of x is one carry-less multiply plus one crc32 to reduce it. */
#include <nmmintrin.h>
#include <string.h>
#include <wmmintrin.h>

#include "checksum_internal.h"

/* Bytes per stream: long blocks amortise the combine step to nothing; short
 * blocks keep extents of a few KiB on three streams too. */
#define LONG_STREAM 8192
#define SHORT_STREAM 256

/* k(L) = x^(8L - 33) mod P: see shift() for the 33. */
static uint32_t g_k_long1, g_k_long2, g_k_short1, g_k_short2;

void tm_crc32c_sse42_init(void) {
    g_k_long1 = tm_crc32c_xpow(8ull * LONG_STREAM - 33);
    g_k_long2 = tm_crc32c_xpow(8ull * 2 * LONG_STREAM - 33);
    g_k_short1 = tm_crc32c_xpow(8ull * SHORT_STREAM - 33);
    g_k_short2 = tm_crc32c_xpow(8ull * 2 * SHORT_STREAM - 33);
}

/* reg * x^(8L) mod P, given k = x^(8L-33) mod P.
 * [Note: in the reflected representation the 64-bit carry-less product of
 *  two 32-bit values stands for a*k*x, and crc32(0, q) computes q*x^32 mod P,
 *  so the result is a*k*x^33 = a*x^(8L). Hence the 33.] */
static inline uint32_t shift(uint32_t reg, uint32_t k) {
    __m128i prod = _mm_clmulepi64_si128(_mm_cvtsi32_si128((int)reg), _mm_cvtsi32_si128((int)k), 0);
    return (uint32_t)_mm_crc32_u64(0, (uint64_t)_mm_cvtsi128_si64(prod));
}

static inline uint64_t load64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* One block of three streams of `stream` bytes each, starting at p. */
static inline uint32_t three_streams(uint32_t reg, const unsigned char *p, size_t stream,
                                     uint32_t k1, uint32_t k2) {
    uint64_t c0 = reg, c1 = 0, c2 = 0;
    const unsigned char *end = p + stream;
    for (; p < end; p += 16) {
        c0 = _mm_crc32_u64(c0, load64(p));
        c1 = _mm_crc32_u64(c1, load64(p + stream));
        c2 = _mm_crc32_u64(c2, load64(p + 2 * stream));
        c0 = _mm_crc32_u64(c0, load64(p + 8));
        c1 = _mm_crc32_u64(c1, load64(p + stream + 8));
        c2 = _mm_crc32_u64(c2, load64(p + 2 * stream + 8));
    }
    return shift((uint32_t)c0, k2) ^ shift((uint32_t)c1, k1) ^ (uint32_t)c2;
}

uint32_t tm_crc32c_sse42(uint32_t crc, const void *buf, size_t len) {
    const unsigned char *p = buf;
    uint32_t reg = ~crc;
    /* Byte steps up to 8-byte alignment, so no stream load crosses a line
     * more often than it must. */
    while (len > 0 && ((uintptr_t)p & 7) != 0) {
        reg = _mm_crc32_u8(reg, *p++);
        len--;
    }
    while (len >= 3 * LONG_STREAM) {
        reg = three_streams(reg, p, LONG_STREAM, g_k_long1, g_k_long2);
        p += 3 * LONG_STREAM;
        len -= 3 * LONG_STREAM;
    }
    while (len >= 3 * SHORT_STREAM) {
        reg = three_streams(reg, p, SHORT_STREAM, g_k_short1, g_k_short2);
        p += 3 * SHORT_STREAM;
        len -= 3 * SHORT_STREAM;
    }
    uint64_t r64 = reg;
    for (; len >= 8; p += 8, len -= 8) r64 = _mm_crc32_u64(r64, load64(p));
    reg = (uint32_t)r64;
    for (; len > 0; len--) reg = _mm_crc32_u8(reg, *p++);
    return ~reg;
}
