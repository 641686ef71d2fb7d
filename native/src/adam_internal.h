/* Internal interface between the Adam front end (adam.c), its worker pool
 * (adam_pool.c) and the per-ISA kernels (adam_scalar.c, adam_avx2.c,
 * adam_avx512.c). Not installed. */
#ifndef TIERMEM_ADAM_INTERNAL_H
#define TIERMEM_ADAM_INTERNAL_H
#include <stdint.h>

#include "tiermem_adam.h"

/* Per-step coefficients, computed once in double and rounded to float.
 *
 * [Note: 1 - beta2 is formed in double before rounding: (float)(1 - 0.999)
 *  is 0.001 to within half an ulp, whereas 1 - 0.999f is off by 1.3e-5
 *  relative, which alone would break a 1e-6 bound against a float64
 *  reference. torch does the same (the Python float becomes the scalar).] */
/* [Note: AdamW's decay is applied as p - (lr*wd*p + adam_update), not as
 *  torch's p * (1 - lr*wd) followed by the update: rounding 1 - lr*wd to fp32
 *  costs up to 6e-8 * |p|, which is ~1e-3 of the decay itself (lr*wd ~ 1e-5)
 *  and can exceed the whole Adam update's error budget. lr*wd as a float is
 *  accurate to 6e-8 of the decay, and p is rounded once.] */
typedef struct tm_adam_coeffs {
    float beta1;
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float step_size;    /* lr / (1 - beta1^step) */
    /* [Note: a multiply by 1/sqrt(bc2) (rounded once, in double) instead of
     *  torch's division by sqrt(bc2): one division per element fewer, about
     *  2 % faster on cache-resident tiles; it moves the result by ~1e-7
     *  relative (worst parameter error against float64 3.3e-7, was 2.9e-7;
     *  bound 1e-6).] */
    float inv_bc2_sqrt; /* 1 / sqrt(1 - beta2^step) */
    float eps;
    float lr_wd;        /* AdamW: lr * weight_decay (decoupled decay); Adam: 0 */
    float l2;           /* Adam: weight_decay (added to the gradient); AdamW: 0 */
    float grad_scale;   /* inv_loss_scale * clip_coef */
} tm_adam_coeffs;

typedef struct tm_adam_buffers {
    float *param;
    float *exp_avg;
    float *exp_avg_sq;
    const void *grad;
    int grad_dtype;     /* tm_dtype */
    void *param_out;    /* NULL when out_dtype is TM_DTYPE_NONE */
    int out_dtype;
    /* Compact moments (tm_adam_step_states); exp_avg/exp_avg_sq above are
     * then unused. */
    int state_dtype;    /* tm_state_dtype */
    int64_t qblock;     /* INT8: elements per scale */
    void *m_lowp;       /* BFLOAT16: uint16_t[]; INT8: uint8_t[] codes */
    void *v_lowp;
    float *m_absmax;    /* INT8: one per qblock */
    float *v_absmax;
} tm_adam_buffers;

/* The INT8 maps (ascending) and the midpoints between neighbours; built once
 * in adam_quant.c. mid[255] is +inf. */
struct tm_quant_tables;
typedef struct tm_quant_tables {
    float map_signed[256];
    float mid_signed[256];
    float map_unsigned[256];
    float mid_unsigned[256];
    /* A first guess at the code, within one of the nearest, from arithmetic
     * (the vector kernels then settle it with two midpoint comparisons):
     * level E = how many of 1e-1..1e-7 exceed |x| (0..7); within a level the
     * linear bin j = (|x| * 10^E - 0.1) * width_inv[E], clamped to
     * [0, count[E] - 1]; the code is 127 + 1 + before[E] + j (or
     * 127 - 1 - before[E] - j below zero; 127 is the zero code), or 1 + before[E] + j
     * unsigned. Level 7 (below 1e-7) has before = -1, count 1, width_inv 0:
     * the zero code. Index 0 is for the signed map, 1 for the unsigned. */
    float level_bound[8];       /* 1e-1 .. 1e-7, then 0 (never above |x|) */
    float level_scale[8];       /* 10^E; 0 for level 7 */
    float width_inv[2][8];      /* count / 0.9 */
    int32_t count[2][8];
    int32_t before[2][8];       /* entries of smaller levels on the same side */
} tm_quant_tables;

const tm_quant_tables *tm_quant_tables_get(void);

/* Largest INT8 block: kernels keep one block of fresh fp32 moments on the
 * stack before quantizing it. */
#define TM_QBLOCK_MIN 256
#define TM_QBLOCK_MAX 2048

/* One ISA's kernels. Each works on elements [begin, end) of its buffers.
 *
 * [Note: every kernel set performs the same float operations in the same
 *  order, and kernel files are compiled with -ffp-contract=off, so the Adam
 *  results are bit-identical across ISAs and the scalar file is an exact
 *  oracle. Only grad_sqnorm's summation order differs.] */
typedef struct tm_adam_kernels {
    const char *name;
    /* Update; returns 1 if a non-finite scaled gradient was seen, else 0. */
    int (*adam)(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin, int64_t end);
    /* The same with BFLOAT16 or INT8 moments (b->state_dtype); for INT8,
     * begin is a multiple of b->qblock. */
    int (*adam_lowp)(const tm_adam_coeffs *c, const tm_adam_buffers *b, int64_t begin,
                     int64_t end);
    /* Returns 1 if any grad * scale in [begin, end) is inf or NaN, else 0. */
    int (*scan)(const void *grad, int grad_dtype, float scale, int64_t begin, int64_t end);
    /* Codes of n values (already divided by their block maximum) into the
     * signed or unsigned map: tm_quant_code for each (tm_quant_codes). */
    void (*quant)(const struct tm_quant_tables *t, int is_signed, const float *x, int64_t n,
                  uint8_t *codes);
    /* Sum of squares in double. */
    double (*sqnorm)(const void *grad, int grad_dtype, int64_t begin, int64_t end);
} tm_adam_kernels;

extern const tm_adam_kernels tm_adam_kernels_scalar;
/* The kernels for a tm_simd value, or NULL if this CPU cannot run them. */
const tm_adam_kernels *tm_adam_kernels_for(int simd);
#if defined(__x86_64__)
extern const tm_adam_kernels tm_adam_kernels_avx2;
extern const tm_adam_kernels tm_adam_kernels_avx512;
#endif

/* The persistent worker pool (adam_pool.c). fn(ctx, index, count) runs for
 * every index 0..count-1, index 0 on the calling thread, and returns when all
 * are done; with count above the pool size a thread runs several indices.
 * Calls are serialised. */
typedef void (*tm_pool_fn)(void *ctx, int index, int count);
int tm_pool_run(int count, tm_pool_fn fn, void *ctx);
int tm_pool_size(void);
int tm_pool_resize(int n);

#endif
