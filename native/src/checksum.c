/* CRC32C front end: the portable table-driven implementation (the oracle),
 * x^n mod P for the fast kernels' constants, and the choice of
 * implementation (CPUID / TIERMEM_CRC). */
#include <pthread.h>
#include <stdlib.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <string.h>

#include "checksum_internal.h"
#include "tiermem_checksum.h"

static pthread_once_t g_table_once = PTHREAD_ONCE_INIT;
static uint32_t g_table[256];

/* g_table[b] is the register after shifting byte b through eight steps of
 * the reflected shift-register algorithm. */
static void build_table(void) {
    for (uint32_t b = 0; b < 256; b++) {
        uint32_t r = b;
        for (int k = 0; k < 8; k++) r = (r & 1) ? (r >> 1) ^ TM_CRC32C_POLY : r >> 1;
        g_table[b] = r;
    }
}

uint32_t tm_crc32c_scalar(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&g_table_once, build_table);
    const unsigned char *p = buf;
    /* [Note: the register is kept inverted (init and final xor 0xFFFFFFFF),
     *  so the value passed in and out is the standard CRC and calls chain.] */
    uint32_t r = ~crc;
    for (size_t i = 0; i < len; i++) r = g_table[(r ^ p[i]) & 0xFF] ^ (r >> 8);
    return ~r;
}

uint32_t tm_crc32c_xpow(uint64_t n) {
    /* Reflected: x^0 is bit 31; multiplying by x is a right shift, and the
     * x^32 that falls off bit 0 is replaced by P - x^32. */
    uint32_t v = 0x80000000u;
    for (uint64_t i = 0; i < n; i++) v = (v & 1) ? (v >> 1) ^ TM_CRC32C_POLY : v >> 1;
    return v;
}

typedef uint32_t (*crc_fn)(uint32_t, const void *, size_t);

static pthread_once_t g_select_once = PTHREAD_ONCE_INIT;
static crc_fn g_crc = tm_crc32c_scalar;
static const char *g_impl = "scalar";

static int sse42_supported(void) {
#if defined(__x86_64__)
    __builtin_cpu_init();
    return __builtin_cpu_supports("sse4.2") && __builtin_cpu_supports("pclmul");
#else
    return 0;
#endif
}

/* AVX-512 F/BW/VL and VPCLMULQDQ in the CPU, and zmm state enabled by the OS.
 * [Note: vpclmulqdq is read from CPUID leaf 7 (ECX bit 10) directly, and
 *  XCR0 must have x87/SSE/AVX state (bits 1, 2) and opmask/zmm state (bits
 *  5, 6, 7): a kernel that does not save zmm registers leaves the CPU flags
 *  set, and the first AVX-512 instruction would fault.] */
static int avx512_supported(void) {
#if defined(__x86_64__)
    if (!sse42_supported()) return 0;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl"))
        return 0;
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) return 0; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 10))) return 0;
    uint32_t xcr0_lo, xcr0_hi;
    __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
    const uint32_t need = (1u << 1) | (1u << 2) | (1u << 5) | (1u << 6) | (1u << 7);
    return (xcr0_lo & need) == need;
#else
    return 0;
#endif
}

/* [Note: like TIERMEM_SIMD, an unknown or unsupported TIERMEM_CRC value falls
 *  back to the best supported implementation: it is a test knob, and every
 *  implementation computes the same CRC, so a typo costs speed, never data.
 *  tm_crc32c_impl() says which one runs.] */
static void select_impl(void) {
    const char *env = getenv("TIERMEM_CRC");
    int want_scalar = env && strcmp(env, "scalar") == 0;
    int want_sse42 = env && strcmp(env, "sse42") == 0;
#if defined(__x86_64__)
    if (!want_scalar && sse42_supported()) {
        tm_crc32c_sse42_init();
        if (!want_sse42 && avx512_supported()) {
            tm_crc32c_avx512_init();
            g_crc = tm_crc32c_avx512;
            g_impl = "avx512";
            return;
        }
        g_crc = tm_crc32c_sse42;
        g_impl = "sse42";
        return;
    }
#endif
    (void)want_scalar;
    (void)want_sse42;
    g_crc = tm_crc32c_scalar;
    g_impl = "scalar";
}

uint32_t tm_crc32c(uint32_t crc, const void *buf, size_t len) {
    pthread_once(&g_select_once, select_impl);
    return g_crc(crc, buf, len);
}

const char *tm_crc32c_impl(void) {
    pthread_once(&g_select_once, select_impl);
    return g_impl;
}
