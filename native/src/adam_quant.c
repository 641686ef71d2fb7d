/* The dynamic quantization maps of the INT8 optimizer states, and
 * block-wise quantization outside the Adam step (conversions).
 *
 * [Note: the maps follow the description of "dynamic tree quantization" in
 *  Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (ICLR
 *  2022): after the sign bit, the number of leading zero bits E is a decimal
 *  exponent, the first one bit ends it, and the remaining bits split the
 *  interval [0.1, 1] linearly; the value is 10^-E times that fraction. With
 *  E = 0..6 the signed map has 2^(6-E) fractions per sign at exponent E
 *  (127 per sign), plus 0 and 1; the unsigned map (exp_avg_sq is never
 *  negative) uses the sign bit as one more fraction bit, 2^(7-E) values per
 *  exponent (254), plus 0 and 1. Each fraction is the centre of its linear
 *  bin. Built here from that description in double (exact divisions by
 *  powers of ten) and rounded to float once; codes are the indices of the
 *  ascending map, not the bit patterns, so the nearest entry is a binary
 *  search.] */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>

#include "adam_internal.h"
#include "adam_lowp.h"
#include "tiermem_adam.h"

static pthread_once_t g_tables_once = PTHREAD_ONCE_INIT;
static tm_quant_tables g_tables;

static const double k_pow10[7] = {1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0, 1000000.0};

/* Fills out[256] in ascending order. */
static void build_map(int is_signed, float *out) {
    double vals[256];
    int count = 0;
    vals[count++] = 0.0;
    vals[count++] = 1.0;
    for (int e = 0; e <= 6; e++) {
        int bits = (is_signed ? 6 : 7) - e;
        int n = 1 << bits;
        for (int j = 0; j < n; j++) {
            double frac = 0.1 + ((double)j + 0.5) * 0.9 / (double)n;
            double v = frac / k_pow10[e];
            vals[count++] = v;
            if (is_signed) vals[count++] = -v;
        }
    }
    /* insertion sort: 256 values, once per process */
    for (int i = 1; i < count; i++) {
        double x = vals[i];
        int j = i - 1;
        while (j >= 0 && vals[j] > x) {
            vals[j + 1] = vals[j];
            j--;
        }
        vals[j + 1] = x;
    }
    for (int i = 0; i < 256; i++) out[i] = (float)vals[i];
}

static void build_mid(const float *map, float *mid) {
    for (int i = 0; i < 255; i++) mid[i] = (map[i] + map[i + 1]) * 0.5f;
    mid[255] = INFINITY;
}

static void build_guess(void) {
    tm_quant_tables *t = &g_tables;
    for (int e = 0; e < 8; e++) {
        t->level_bound[e] = e < 7 ? (float)(1.0 / k_pow10[e] / 10.0) : 0.0f;
        t->level_scale[e] = e < 7 ? (float)k_pow10[e] : 0.0f;
    }
    for (int side = 0; side < 2; side++) {
        int top_bits = side == 0 ? 6 : 7; /* signed: 6 - E fraction bits, unsigned 7 - E */
        int smaller = 0;
        for (int e = 6; e >= 0; e--) {
            int n = 1 << (top_bits - e);
            t->count[side][e] = n;
            t->width_inv[side][e] = (float)((double)n / 0.9);
            t->before[side][e] = smaller;
            smaller += n;
        }
        t->count[side][7] = 1;
        t->width_inv[side][7] = 0.0f;
        t->before[side][7] = -1;
    }
}

static void build_tables(void) {
    build_map(1, g_tables.map_signed);
    build_mid(g_tables.map_signed, g_tables.mid_signed);
    build_map(0, g_tables.map_unsigned);
    build_mid(g_tables.map_unsigned, g_tables.mid_unsigned);
    build_guess();
}

const tm_quant_tables *tm_quant_tables_get(void) {
    pthread_once(&g_tables_once, build_tables);
    return &g_tables;
}

int tm_adam_quant_map(int is_signed, float *map, float *mid) {
    const tm_quant_tables *t = tm_quant_tables_get();
    const float *src_map = is_signed ? t->map_signed : t->map_unsigned;
    const float *src_mid = is_signed ? t->mid_signed : t->mid_unsigned;
    for (int i = 0; i < 256; i++) {
        if (map) map[i] = src_map[i];
        if (mid) mid[i] = src_mid[i];
    }
    return 0;
}

static int valid_block(int64_t block) {
    return block >= TM_QBLOCK_MIN && block <= TM_QBLOCK_MAX && block % 64 == 0;
}

int tm_quantize_blockwise(const float *x, int64_t n, int64_t block, int is_signed,
                          uint8_t *codes, float *absmax) {
    if (n < 0 || !valid_block(block)) return -EINVAL;
    if (n == 0) return 0;
    if (!x || !codes || !absmax) return -EINVAL;
    const tm_quant_tables *t = tm_quant_tables_get();
    const float *mid = is_signed ? t->mid_signed : t->mid_unsigned;
    for (int64_t b = 0; b * block < n; b++) {
        int64_t begin = b * block, end = begin + block < n ? begin + block : n;
        float amax = 0.0f;
        for (int64_t i = begin; i < end; i++) amax = tm_absmax_fold(amax, x[i]);
        float inv = tm_absmax_inverse(amax);
        absmax[b] = amax;
        for (int64_t i = begin; i < end; i++) codes[i] = tm_quant_code(mid, x[i] * inv);
    }
    return 0;
}

int tm_quant_codes(int simd, const float *x, int64_t n, int is_signed, uint8_t *codes) {
    if (n < 0 || (n > 0 && (!x || !codes))) return -EINVAL;
    const tm_adam_kernels *k = tm_adam_kernels_for(simd);
    if (!k) return -ENOTSUP;
    k->quant(tm_quant_tables_get(), is_signed, x, n, codes);
    return 0;
}

int tm_dequantize_blockwise(const uint8_t *codes, const float *absmax, int64_t n, int64_t block,
                            int is_signed, float *x) {
    if (n < 0 || !valid_block(block)) return -EINVAL;
    if (n == 0) return 0;
    if (!x || !codes || !absmax) return -EINVAL;
    const tm_quant_tables *t = tm_quant_tables_get();
    const float *map = is_signed ? t->map_signed : t->map_unsigned;
    for (int64_t i = 0; i < n; i++) x[i] = map[codes[i]] * absmax[i / block];
    return 0;
}
