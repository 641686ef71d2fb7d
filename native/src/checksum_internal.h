/* Shared between the CRC32C front end and its SSE4.2 and AVX-512 kernels
 * (not public). */
#ifndef TIERMEM_CHECKSUM_INTERNAL_H
#define TIERMEM_CHECKSUM_INTERNAL_H
#include <stddef.h>
#include <stdint.h>

/* The CRC32C polynomial, bit-reflected. */
#define TM_CRC32C_POLY 0x82F63B78u

/* x^n mod P in the reflected representation (bit 31 holds x^0). */
uint32_t tm_crc32c_xpow(uint64_t n);

#if defined(__x86_64__)
/* Fills the kernel's shift constants; call once before tm_crc32c_sse42. */
void tm_crc32c_sse42_init(void);
uint32_t tm_crc32c_sse42(uint32_t crc, const void *buf, size_t len);
/* Fills the folding constants; call once (after tm_crc32c_sse42_init, whose
 * kernel handles the short buffers and tails) before tm_crc32c_avx512. */
void tm_crc32c_avx512_init(void);
uint32_t tm_crc32c_avx512(uint32_t crc, const void *buf, size_t len);
#endif

#endif
