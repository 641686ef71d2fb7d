/* tiermem CPU Adam / AdamW.
 *
 * One fused, multi-threaded pass over fp32 master parameters and fp32
 * moments: the gradient is read as fp32, bf16 or fp16, multiplied by the
 * inverse loss scale and the clip coefficient, checked for inf/NaN, used for
 * the update, and (optionally) a bf16 or fp16 copy of the new parameters is
 * written for the trip back to the GPU. A second kernel gives the squared L2
 * norm of a gradient for global-norm clipping.
 *
 * Kernels exist for AVX-512, AVX2 and plain C; the best one the CPU supports
 * is chosen on first use, or forced with TIERMEM_SIMD=avx512|avx2|scalar.
 * All three give bit-identical Adam results (same operations in the same
 * order, no FMA contraction); the norm differs only in summation order.
 *
 * Conventions: functions returning int return 0 on success or a negative
 * errno. Thread-safe; concurrent calls share one worker pool and run one at
 * a time.
 *
 * This header is also read by the Python loader (cffi): keep declarations in
 * plain C, no macros inside declarations.
 */
#ifndef TIERMEM_ADAM_H
#define TIERMEM_ADAM_H
#include <stddef.h>
#include <stdint.h>
#include "tiermem_api.h"

typedef enum tm_dtype {
    TM_DTYPE_NONE = -1,     /* no buffer (e.g. no low-precision copy) */
    TM_DTYPE_FLOAT32 = 0,
    TM_DTYPE_BFLOAT16 = 1,
    TM_DTYPE_FLOAT16 = 2
} tm_dtype;

typedef enum tm_simd {
    TM_SIMD_AUTO = 0,       /* the process-wide choice (CPUID or TIERMEM_SIMD) */
    TM_SIMD_SCALAR = 1,
    TM_SIMD_AVX2 = 2,       /* AVX2 + FMA + F16C */
    TM_SIMD_AVX512 = 3      /* AVX-512 F/BW/VL */
} tm_simd;

typedef struct tm_adam_config {
    double lr;
    double beta1;
    double beta2;
    double eps;
    double weight_decay;
    int64_t step;           /* 1-based count including this update (bias correction) */
    int adamw_mode;         /* 1: decoupled weight decay (AdamW); 0: L2 added to the gradient (Adam) */
    int bias_correction;    /* 1: divide by 1 - beta^step */
    double inv_loss_scale;  /* the gradient is multiplied by inv_loss_scale * clip_coef */
    double clip_coef;
    int skip_on_overflow;   /* 1: on an inf/NaN gradient, write nothing at all */
    int simd;               /* tm_simd; AUTO uses the process-wide choice */
    int threads;            /* most threads for this call; 0 = the pool size */
} tm_adam_config;

/* lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay, AdamW, bias
 * correction, step 1, scales 1, no skip, AUTO simd, all threads. */
TM_API void tm_adam_config_default(tm_adam_config *cfg);

/* One Adam/AdamW step over n elements, in place on param, exp_avg and
 * exp_avg_sq (fp32). grad has grad_dtype (FLOAT32, BFLOAT16 or FLOAT16).
 * param_out (may be NULL with out_dtype NONE) receives the new parameters as
 * out_dtype (FLOAT32, BFLOAT16 or FLOAT16; round-to-nearest-even).
 * *overflow (may be NULL) is set to 1 if any scaled gradient element is inf
 * or NaN, else 0; with cfg->skip_on_overflow nothing is then written.
 * Any length and alignment (element-aligned). Returns 0, -EINVAL or -ENOTSUP
 * (a forced simd the CPU lacks). */
TM_API int tm_adam_step(const tm_adam_config *cfg, int64_t n, float *param, float *exp_avg, float *exp_avg_sq, const void *grad, int grad_dtype, void *param_out, int out_dtype, int *overflow);

/* How the moments of tm_adam_step_states are stored. Master parameters are
 * always fp32; the update itself is computed in fp32 in every case.
 *  FLOAT32: float[n] each (what tm_adam_step does).
 *  BFLOAT16: uint16_t[n] bf16 bit patterns, rounded to nearest even after
 *    each update.
 *  INT8: uint8_t[n] codes, block-wise dynamic quantization (Dettmers et al.,
 *    "8-bit Optimizers via Block-wise Quantization"): each run of `block`
 *    elements keeps its absolute maximum as an fp32 scale and each element
 *    the index (0..255) of the nearest entry of a 256-value map, in ascending
 *    order. exp_avg uses the signed map, exp_avg_sq the unsigned one
 *    (tm_adam_quant_map). */
typedef enum tm_state_dtype {
    TM_STATE_FLOAT32 = 0,
    TM_STATE_BFLOAT16 = 1,
    TM_STATE_INT8 = 2
} tm_state_dtype;

typedef struct tm_adam_state {
    int dtype;                  /* tm_state_dtype */
    int64_t block;              /* INT8: elements per scale, a multiple of 64 in [256, 2048] */
    void *exp_avg;              /* n elements of the state dtype */
    void *exp_avg_sq;
    float *exp_avg_absmax;      /* INT8: ceil(n / block) scales; else unused */
    float *exp_avg_sq_absmax;
} tm_adam_state;

/* tm_adam_step with moments stored as state->dtype (above). The same
 * gradient, overflow, clipping and param_out handling; FLOAT32 is exactly
 * tm_adam_step. For INT8 the call must start at a block boundary (element 0
 * of the block numbering); the last block may be short. Returns 0 or
 * -EINVAL / -ENOTSUP. */
TM_API int tm_adam_step_states(const tm_adam_config *cfg, int64_t n, float *param, const tm_adam_state *state, const void *grad, int grad_dtype, void *param_out, int out_dtype, int *overflow);

/* The 256-entry dynamic quantization map (ascending) and the 255 midpoints
 * between neighbours that decide the nearest code (a value equal to a
 * midpoint takes the lower code); is_signed selects the exp_avg map, else the
 * exp_avg_sq map. mid receives 256 floats (the last is +inf). */
TM_API int tm_adam_quant_map(int is_signed, float *map, float *mid);

/* Block-wise quantization as the INT8 step stores it, and its inverse (for
 * conversions, e.g. checkpoints saved with another state dtype). */
TM_API int tm_quantize_blockwise(const float *x, int64_t n, int64_t block, int is_signed, uint8_t *codes, float *absmax);
/* Codes of n normalized values with the quantizer of kernel set simd (tm_simd;
 * AUTO for the process-wide one): the same codes from every set (tests). */
TM_API int tm_quant_codes(int simd, const float *x, int64_t n, int is_signed, uint8_t *codes);
TM_API int tm_dequantize_blockwise(const uint8_t *codes, const float *absmax, int64_t n, int64_t block, int is_signed, float *x);

/* Sum of squares of n gradient elements (fp32, bf16 or fp16), accumulated in
 * double, in one read. A non-finite element makes the result inf or NaN.
 * simd: tm_simd (AUTO for the process-wide choice); threads: 0 = pool size. */
TM_API int tm_grad_sqnorm(const void *grad, int grad_dtype, int64_t n, int simd, int threads, double *out);

/* The kernel set chosen for this process (tm_simd value, never AUTO), its
 * name ("avx512", "avx2", "scalar"), and why it was chosen. */
TM_API int tm_simd_active(void);
TM_API const char *tm_simd_name(int simd);
TM_API const char *tm_simd_reason(void);
/* 1 if this CPU (and this build) can run the kernel set, else 0. */
TM_API int tm_simd_supported(int simd);

/* Worker pool size for the kernels: n >= 1, or 0 for the CPUs this process
 * may run on (sched_getaffinity). Returns 0 or a negative errno. */
TM_API int tm_adam_set_threads(int n);
TM_API int tm_adam_threads(void);

#endif
