/* tiermem CRC32C (Castagnoli, reflected polynomial 0x82F63B78).
 *
 * The store checksums every swapped extent with it. tm_crc32c uses the
 * fastest implementation this CPU supports, chosen on first use: carry-less
 * multiply folding of 512-bit blocks with AVX-512 VPCLMULQDQ ("avx512"), the
 * SSE4.2 crc32 instruction over three interleaved streams combined with
 * PCLMUL ("sse42"), or the byte-at-a-time table ("scalar").
 * TIERMEM_CRC=avx512|sse42|scalar forces one (an unknown or unsupported
 * value falls back to the best one).
 *
 * Incremental: crc is the value returned for the bytes before buf (0 to
 * start), so feeding pieces in order gives the CRC of their concatenation.
 * tm_crc32c(0, "123456789", 9) == 0xE3069283.
 *
 * This header is also read by the Python loader (cffi): keep declarations in
 * plain C, no macros inside declarations.
 */
#ifndef TIERMEM_CHECKSUM_H
#define TIERMEM_CHECKSUM_H
#include <stddef.h>
#include <stdint.h>
#include "tiermem_api.h"

/* CRC32C of len bytes at buf, continuing from crc. Any alignment; buf may be
 * NULL when len is 0. Thread-safe. */
TM_API uint32_t tm_crc32c(uint32_t crc, const void *buf, size_t len);

/* The same through the portable table-driven code (the readable oracle). */
TM_API uint32_t tm_crc32c_scalar(uint32_t crc, const void *buf, size_t len);

/* Name of the implementation tm_crc32c uses: "avx512", "sse42" or "scalar". */
TM_API const char *tm_crc32c_impl(void);

#endif
