/* Adam/AdamW front end: kernel selection (CPUID / TIERMEM_SIMD), argument
 * checks, per-step coefficients, and the split of one call into contiguous
 * per-thread chunks on the worker pool. */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "adam_internal.h"
#include "tiermem_adam.h"

/* Fewest elements worth a thread: below this the pool wake-up (tens of us)
 * costs more than the work it would share. */
#define TM_MIN_PER_THREAD (32 * 1024)
/* Chunk boundaries fall on multiples of this many elements (a 64-byte line
 * of fp32 and two of bf16), so no cache line is written by two threads. */
#define TM_CHUNK_ALIGN 64
#define TM_MAX_THREADS 1024
/* The overflow pre-scan checks the shared flag between blocks this long. */
#define TM_SCAN_BLOCK (64 * 1024)

static pthread_once_t g_select_once = PTHREAD_ONCE_INIT;
static int g_active = TM_SIMD_SCALAR;
static char g_reason[256];

static const tm_adam_kernels *kernels_for(int simd) {
    switch (simd) {
#if defined(__x86_64__)
    case TM_SIMD_AVX512: return &tm_adam_kernels_avx512;
    case TM_SIMD_AVX2: return &tm_adam_kernels_avx2;
#endif
    case TM_SIMD_SCALAR: return &tm_adam_kernels_scalar;
    default: return NULL;
    }
}

int tm_simd_supported(int simd) {
    switch (simd) {
    case TM_SIMD_SCALAR: return 1;
#if defined(__x86_64__)
    /* __builtin_cpu_supports also checks that the OS saves the vector state (XCR0). */
    case TM_SIMD_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    case TM_SIMD_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl");
#endif
    default: return 0;
    }
}

const char *tm_simd_name(int simd) {
    switch (simd) {
    case TM_SIMD_AUTO: return "auto";
    case TM_SIMD_SCALAR: return "scalar";
    case TM_SIMD_AVX2: return "avx2";
    case TM_SIMD_AVX512: return "avx512";
    default: return "unknown";
    }
}

static int best_supported(void) {
    if (tm_simd_supported(TM_SIMD_AVX512)) return TM_SIMD_AVX512;
    if (tm_simd_supported(TM_SIMD_AVX2)) return TM_SIMD_AVX2;
    return TM_SIMD_SCALAR;
}

/* [Note: an unknown or unsupported TIERMEM_SIMD value falls back to the best
 *  supported set rather than failing: the variable is a test and debugging
 *  knob, and a job should not die on a typo. tm_simd_reason() says what
 *  happened, and the Python tests check the active set by name.] */
static void select_kernels(void) {
    const char *env = getenv("TIERMEM_SIMD");
    int best = best_supported();
    if (!env || !*env || strcmp(env, "auto") == 0) {
        g_active = best;
        snprintf(g_reason, sizeof g_reason, "%s: best supported by this CPU", tm_simd_name(best));
        return;
    }
    int wanted = strcmp(env, "avx512") == 0   ? TM_SIMD_AVX512
                 : strcmp(env, "avx2") == 0   ? TM_SIMD_AVX2
                 : strcmp(env, "scalar") == 0 ? TM_SIMD_SCALAR
                                              : -1;
    if (wanted < 0) {
        g_active = best;
        snprintf(g_reason, sizeof g_reason,
                 "%s: TIERMEM_SIMD=%.64s is not avx512|avx2|scalar|auto; using the best supported",
                 tm_simd_name(best), env);
    } else if (!tm_simd_supported(wanted)) {
        g_active = best;
        snprintf(g_reason, sizeof g_reason,
                 "%s: TIERMEM_SIMD=%s but this CPU lacks it; using the best supported",
                 tm_simd_name(best), env);
    } else {
        g_active = wanted;
        snprintf(g_reason, sizeof g_reason, "%s: forced by TIERMEM_SIMD", env);
    }
}

int tm_simd_active(void) {
    pthread_once(&g_select_once, select_kernels);
    return g_active;
}

const char *tm_simd_reason(void) {
    pthread_once(&g_select_once, select_kernels);
    return g_reason;
}

/* The kernels for a requested tm_simd value, or NULL if it cannot run here. */
static const tm_adam_kernels *resolve(int simd) {
    if (simd == TM_SIMD_AUTO) return kernels_for(tm_simd_active());
    if (!tm_simd_supported(simd)) return NULL;
    return kernels_for(simd);
}

const tm_adam_kernels *tm_adam_kernels_for(int simd) { return resolve(simd); }

int tm_adam_set_threads(int n) { return tm_pool_resize(n); }

int tm_adam_threads(void) { return tm_pool_size(); }

void tm_adam_config_default(tm_adam_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    cfg->lr = 1e-3;
    cfg->beta1 = 0.9;
    cfg->beta2 = 0.999;
    cfg->eps = 1e-8;
    cfg->weight_decay = 0.0;
    cfg->step = 1;
    cfg->adamw_mode = 1;
    cfg->bias_correction = 1;
    cfg->inv_loss_scale = 1.0;
    cfg->clip_coef = 1.0;
    cfg->skip_on_overflow = 0;
    cfg->simd = TM_SIMD_AUTO;
    cfg->threads = 0;
}

/* How many threads and how many elements each (a multiple of TM_CHUNK_ALIGN). */
static int plan_threads(int64_t n, int cap, int64_t *chunk) {
    int64_t t = (n + TM_MIN_PER_THREAD - 1) / TM_MIN_PER_THREAD;
    int limit = tm_pool_size();
    if (cap > 0 && cap < limit) limit = cap;
    if (limit > TM_MAX_THREADS) limit = TM_MAX_THREADS;
    if (t > limit) t = limit;
    if (t < 1) t = 1;
    int64_t c = (n + t - 1) / t;
    c = (c + TM_CHUNK_ALIGN - 1) / TM_CHUNK_ALIGN * TM_CHUNK_ALIGN;
    *chunk = c;
    return (int)((n + c - 1) / c);
}

/* One thread's range of blocks; `next` is claimed with atomic adds by its
 * owner and, once they are done with their own, by the other threads. */
typedef struct block_cursor {
    int64_t next;
    int64_t end;
    char pad[64 - 2 * sizeof(int64_t)]; /* one cache line each */
} block_cursor;

/* [Note: the update and the overflow scan hand out work in blocks of at most
 *  TM_BLOCK elements. Thread i first works through its own contiguous range
 *  (the i-th of `count`), then claims blocks left in the other threads'
 *  ranges. On a machine shared with other jobs one of our threads is often
 *  descheduled for a while; with fixed chunks the whole step waited for it,
 *  now the running threads finish its range. The own-range-first order keeps
 *  the scan and the update of a block on the same core (its gradient stays in
 *  that core's L2 between them) whenever no thread falls behind. Each element
 *  is still updated exactly once, so results do not depend on the schedule.] */
#define TM_BLOCK (64 * 1024)
#define TM_STACK_CURSORS 64

typedef struct adam_job {
    const tm_adam_kernels *kernels;
    const tm_adam_coeffs *coeffs;
    const tm_adam_buffers *buffers;
    int64_t n;
    int64_t block;          /* elements per block, a multiple of TM_CHUNK_ALIGN */
    block_cursor *cursors;  /* one per share */
    int found_nonfinite;    /* atomic: set by any thread */
} adam_job;

/* Blocks of at most TM_BLOCK elements, at least four per thread when n allows
 * (so a fast thread has something to take), split into count ranges. */
static void plan_blocks(adam_job *job, int count) {
    /* INT8 moments: blocks hold whole quantization blocks (a multiple of
     * TM_CHUNK_ALIGN), so each scale is computed by one thread. */
    int64_t align = job->buffers->state_dtype == TM_STATE_INT8 ? job->buffers->qblock
                                                               : TM_CHUNK_ALIGN;
    int64_t per = (job->n + (int64_t)count * 4 - 1) / ((int64_t)count * 4);
    per = (per + align - 1) / align * align;
    job->block = per < TM_BLOCK ? per : TM_BLOCK / align * align;
    if (count == 1) job->block = job->n; /* nobody to share with: one call */
    int64_t blocks = (job->n + job->block - 1) / job->block;
    for (int i = 0; i < count; i++) {
        job->cursors[i].next = blocks * i / count;
        job->cursors[i].end = blocks * (i + 1) / count;
    }
}

/* The next unclaimed block for share `index` (own range first, then the
 * others' in turn); returns 0 when none is left. */
static int claim_block(adam_job *job, int index, int count, int *range, int64_t *begin,
                       int64_t *end) {
    for (; *range < count; (*range)++) {
        block_cursor *c = &job->cursors[(index + *range) % count];
        if (__atomic_load_n(&c->next, __ATOMIC_RELAXED) >= c->end) continue;
        int64_t b = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
        if (b >= c->end) continue;
        *begin = b * job->block;
        *end = *begin + job->block < job->n ? *begin + job->block : job->n;
        return 1;
    }
    return 0;
}

static void run_update(void *ctx, int index, int count) {
    adam_job *job = ctx;
    int64_t begin, end;
    int range = 0, nonfinite = 0;
    int lowp = job->buffers->state_dtype != TM_STATE_FLOAT32;
    while (claim_block(job, index, count, &range, &begin, &end))
        nonfinite |= lowp ? job->kernels->adam_lowp(job->coeffs, job->buffers, begin, end)
                          : job->kernels->adam(job->coeffs, job->buffers, begin, end);
    if (nonfinite) __atomic_store_n(&job->found_nonfinite, 1, __ATOMIC_RELAXED);
}

static void run_scan(void *ctx, int index, int count) {
    adam_job *job = ctx;
    const tm_adam_buffers *b = job->buffers;
    int64_t begin, end;
    int range = 0;
    while (claim_block(job, index, count, &range, &begin, &end)) {
        if (__atomic_load_n(&job->found_nonfinite, __ATOMIC_RELAXED)) return;
        if (job->kernels->scan(b->grad, b->grad_dtype, job->coeffs->grad_scale, begin, end)) {
            __atomic_store_n(&job->found_nonfinite, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

static int valid_grad_dtype(int d) {
    return d == TM_DTYPE_FLOAT32 || d == TM_DTYPE_BFLOAT16 || d == TM_DTYPE_FLOAT16;
}

static int check_config(const tm_adam_config *cfg) {
    /* written as negated ranges so that NaN hyperparameters are refused too */
    if (!(cfg->lr >= 0.0) || !(cfg->eps >= 0.0) || !(cfg->weight_decay >= 0.0)) return -EINVAL;
    if (!(cfg->beta1 >= 0.0 && cfg->beta1 < 1.0) || !(cfg->beta2 >= 0.0 && cfg->beta2 < 1.0))
        return -EINVAL;
    if (!isfinite(cfg->inv_loss_scale) || !isfinite(cfg->clip_coef)) return -EINVAL;
    if (cfg->bias_correction && cfg->step < 1) return -EINVAL;
    if (cfg->threads < 0) return -EINVAL;
    return 0;
}

static void make_coeffs(const tm_adam_config *cfg, tm_adam_coeffs *c) {
    double bc1 = 1.0, bc2 = 1.0;
    if (cfg->bias_correction) {
        bc1 = 1.0 - pow(cfg->beta1, (double)cfg->step);
        bc2 = 1.0 - pow(cfg->beta2, (double)cfg->step);
    }
    c->beta1 = (float)cfg->beta1;
    c->one_minus_beta1 = (float)(1.0 - cfg->beta1);
    c->beta2 = (float)cfg->beta2;
    c->one_minus_beta2 = (float)(1.0 - cfg->beta2);
    c->step_size = (float)(cfg->lr / bc1);
    c->inv_bc2_sqrt = (float)(1.0 / sqrt(bc2));
    c->eps = (float)cfg->eps;
    c->lr_wd = cfg->adamw_mode ? (float)(cfg->lr * cfg->weight_decay) : 0.0f;
    c->l2 = cfg->adamw_mode ? 0.0f : (float)cfg->weight_decay;
    c->grad_scale = (float)(cfg->inv_loss_scale * cfg->clip_coef);
}

static int run_step(const tm_adam_config *cfg, adam_job *job, int count, int *overflow);

/* Checks shared by both entry points; the buffers are filled by the caller. */
static int step_buffers(const tm_adam_config *cfg, int64_t n, tm_adam_buffers *buffers,
                        int *overflow) {
    if (overflow) *overflow = 0;
    if (!cfg || n < 0) return -EINVAL;
    int rc = check_config(cfg);
    if (rc) return rc;
    if (!valid_grad_dtype(buffers->grad_dtype)) return -EINVAL;
    int out_dtype = buffers->out_dtype;
    if (out_dtype != TM_DTYPE_NONE && !valid_grad_dtype(out_dtype)) return -EINVAL;
    if (out_dtype != TM_DTYPE_NONE && !buffers->param_out) return -EINVAL;
    if (out_dtype == TM_DTYPE_NONE) buffers->param_out = NULL;
    const tm_adam_kernels *kernels = resolve(cfg->simd);
    if (!kernels) return -ENOTSUP;
    if (n == 0) return 0;
    if (!buffers->param || !buffers->grad) return -EINVAL;
    if (buffers->state_dtype == TM_STATE_FLOAT32 && (!buffers->exp_avg || !buffers->exp_avg_sq))
        return -EINVAL;
    if (buffers->state_dtype != TM_STATE_FLOAT32 && (!buffers->m_lowp || !buffers->v_lowp))
        return -EINVAL;
    if (buffers->state_dtype == TM_STATE_INT8 && (!buffers->m_absmax || !buffers->v_absmax))
        return -EINVAL;

    tm_adam_coeffs coeffs;
    make_coeffs(cfg, &coeffs);
    int64_t chunk;
    int count = plan_threads(n, cfg->threads, &chunk);
    block_cursor stack_cursors[TM_STACK_CURSORS];
    block_cursor *cursors = stack_cursors;
    if (count > TM_STACK_CURSORS) {
        cursors = malloc((size_t)count * sizeof *cursors);
        if (!cursors) return -ENOMEM;
    }
    adam_job job = {
        .kernels = kernels, .coeffs = &coeffs, .buffers = buffers, .n = n, .cursors = cursors};
    rc = run_step(cfg, &job, count, overflow);
    if (cursors != stack_cursors) free(cursors);
    return rc;
}

int tm_adam_step(const tm_adam_config *cfg, int64_t n, float *param, float *exp_avg,
                 float *exp_avg_sq, const void *grad, int grad_dtype, void *param_out,
                 int out_dtype, int *overflow) {
    tm_adam_buffers buffers = {
        .param = param,
        .exp_avg = exp_avg,
        .exp_avg_sq = exp_avg_sq,
        .grad = grad,
        .grad_dtype = grad_dtype,
        .param_out = param_out,
        .out_dtype = out_dtype,
        .state_dtype = TM_STATE_FLOAT32,
    };
    return step_buffers(cfg, n, &buffers, overflow);
}

int tm_adam_step_states(const tm_adam_config *cfg, int64_t n, float *param,
                        const tm_adam_state *state, const void *grad, int grad_dtype,
                        void *param_out, int out_dtype, int *overflow) {
    if (overflow) *overflow = 0;
    if (!state) return -EINVAL;
    tm_adam_buffers buffers = {
        .param = param,
        .grad = grad,
        .grad_dtype = grad_dtype,
        .param_out = param_out,
        .out_dtype = out_dtype,
        .state_dtype = state->dtype,
    };
    switch (state->dtype) {
    case TM_STATE_FLOAT32:
        buffers.exp_avg = state->exp_avg;
        buffers.exp_avg_sq = state->exp_avg_sq;
        break;
    case TM_STATE_INT8:
        if (state->block < TM_QBLOCK_MIN || state->block > TM_QBLOCK_MAX || state->block % 64)
            return -EINVAL;
        buffers.qblock = state->block;
        buffers.m_absmax = state->exp_avg_absmax;
        buffers.v_absmax = state->exp_avg_sq_absmax;
        /* fall through */
    case TM_STATE_BFLOAT16:
        buffers.m_lowp = state->exp_avg;
        buffers.v_lowp = state->exp_avg_sq;
        break;
    default: return -EINVAL;
    }
    return step_buffers(cfg, n, &buffers, overflow);
}

static int run_step(const tm_adam_config *cfg, adam_job *job, int count, int *overflow) {
    int rc;

    /* [Note: skip_on_overflow must leave *everything* untouched, so every
     *  gradient element has to be checked before the first write. The scan
     *  reads only the gradient (2 bytes per element for bf16, against the
     *  28 the update moves), each thread the blocks it then updates (its own
     *  range, unless a thread fell behind); when a range's gradient fits in
     *  the core's L2 (calls of up to ~0.5M elements per thread, the engine's
     *  tile sizes) the update reads it from cache
     *  and the step is still one pass over memory. Without skip the update
     *  checks in-line and only reports.] */
    if (cfg->skip_on_overflow) {
        plan_blocks(job, count);
        rc = tm_pool_run(count, run_scan, job);
        if (rc) return rc;
        if (job->found_nonfinite) {
            if (overflow) *overflow = 1;
            return 0;
        }
    }
    plan_blocks(job, count);
    rc = tm_pool_run(count, run_update, job);
    if (rc) return rc;
    if (overflow) *overflow = job->found_nonfinite;
    return 0;
}

typedef struct norm_job {
    const tm_adam_kernels *kernels;
    const void *grad;
    int grad_dtype;
    int64_t n;
    int64_t chunk;
    double partial[TM_MAX_THREADS];
} norm_job;

static void run_norm(void *ctx, int index, int count) {
    norm_job *job = ctx;
    int64_t begin = (int64_t)index * job->chunk;
    int64_t end = begin + job->chunk < job->n ? begin + job->chunk : job->n;
    job->partial[index] = begin < end ? job->kernels->sqnorm(job->grad, job->grad_dtype, begin, end)
                                      : 0.0;
}

int tm_grad_sqnorm(const void *grad, int grad_dtype, int64_t n, int simd, int threads,
                   double *out) {
    if (!out || n < 0 || threads < 0 || !valid_grad_dtype(grad_dtype)) return -EINVAL;
    *out = 0.0;
    const tm_adam_kernels *kernels = resolve(simd);
    if (!kernels) return -ENOTSUP;
    if (n == 0) return 0;
    if (!grad) return -EINVAL;
    norm_job *job = calloc(1, sizeof *job);
    if (!job) return -ENOMEM;
    job->kernels = kernels;
    job->grad = grad;
    job->grad_dtype = grad_dtype;
    job->n = n;
    int count = plan_threads(n, threads, &job->chunk);
    int rc = tm_pool_run(count, run_norm, job);
    if (rc == 0) {
        /* fixed order: the result depends only on the thread count, not on timing */
        double sum = 0.0;
        for (int i = 0; i < count; i++) sum += job->partial[i];
        *out = sum;
    }
    free(job);
    return rc;
}
