/* A persistent pthread worker pool for the Adam kernels.
 *
 * Workers are created on first use and then sleep on a condition variable
 * between calls, so a step costs a wake-up rather than a thread creation.
 * The calling thread does share 0 of every job itself.
 *
 * [Note: condition variables, not spinning: the kernels are memory-bound and
 *  the machine is often shared (I/O threads, the Python main thread), so a
 *  worker spinning between steps would steal the cycles the step needs. The
 *  wake-up costs tens of microseconds, which is why adam.c gives small
 *  calls fewer threads.]
 *
 * [Note: after fork() only the forking thread exists in the child, so a
 *  pthread_atfork handler forgets the pool there (leaking its memory, which
 *  is all that can safely be done) and the child builds a fresh one.] */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>

#include "adam_internal.h"

#define TM_POOL_MAX_THREADS 1024

typedef struct tm_pool {
    int size;                   /* threads including the caller */
    pthread_t *threads;         /* size - 1 workers */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;
    pthread_cond_t done_cv;
    uint64_t generation;        /* bumped for each job */
    int active;                 /* threads taking part in the current job */
    int count;                  /* shares in the current job (>= active) */
    int pending;                /* workers of the current job not yet finished */
    int stop;
    tm_pool_fn fn;
    void *ctx;
} tm_pool;

typedef struct tm_worker_arg {
    tm_pool *pool;
    int index;
} tm_worker_arg;

static pthread_mutex_t g_pool_lock = PTHREAD_MUTEX_INITIALIZER; /* one job or resize at a time */
static tm_pool *g_pool;
static int g_requested; /* 0 = affinity count */
static pthread_once_t g_atfork_once = PTHREAD_ONCE_INIT;

static void *worker_main(void *p) {
    tm_worker_arg arg = *(tm_worker_arg *)p;
    free(p);
    tm_pool *pool = arg.pool;
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        while (pool->generation == seen && !pool->stop)
            pthread_cond_wait(&pool->work_cv, &pool->mu);
        if (pool->stop) break;
        seen = pool->generation;
        if (arg.index >= pool->active) continue;
        tm_pool_fn fn = pool->fn;
        void *ctx = pool->ctx;
        int active = pool->active, count = pool->count;
        pthread_mutex_unlock(&pool->mu);
        for (int share = arg.index; share < count; share += active) fn(ctx, share, count);
        pthread_mutex_lock(&pool->mu);
        if (--pool->pending == 0) pthread_cond_signal(&pool->done_cv);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

static int affinity_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    return 1;
}

static void pool_destroy(tm_pool *pool) {
    if (!pool) return;
    pthread_mutex_lock(&pool->mu);
    pool->stop = 1;
    pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < pool->size - 1; i++) pthread_join(pool->threads[i], NULL);
    pthread_mutex_destroy(&pool->mu);
    pthread_cond_destroy(&pool->work_cv);
    pthread_cond_destroy(&pool->done_cv);
    free(pool->threads);
    free(pool);
}

/* A pool of `size` threads; if some workers cannot be created, a smaller one. */
static tm_pool *pool_create(int size) {
    tm_pool *pool = calloc(1, sizeof *pool);
    if (!pool) return NULL;
    pool->threads = calloc((size_t)(size > 1 ? size - 1 : 1), sizeof(pthread_t));
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->work_cv, NULL);
    pthread_cond_init(&pool->done_cv, NULL);
    pool->size = 1;
    /* workers block every signal: signals (Ctrl-C in Python) go to the caller */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 1; i < size; i++) {
        tm_worker_arg *arg = malloc(sizeof *arg);
        if (!arg) break;
        arg->pool = pool;
        arg->index = i;
        if (pthread_create(&pool->threads[i - 1], NULL, worker_main, arg) != 0) {
            free(arg);
            break;
        }
        pool->size = i + 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return pool;
}

static void atfork_child(void) {
    pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
    g_pool_lock = fresh;
    g_pool = NULL;
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, atfork_child); }

/* Requires g_pool_lock. */
static tm_pool *pool_get(void) {
    pthread_once(&g_atfork_once, register_atfork);
    if (!g_pool) {
        int n = g_requested > 0 ? g_requested : affinity_cpus();
        if (n > TM_POOL_MAX_THREADS) n = TM_POOL_MAX_THREADS;
        g_pool = pool_create(n);
    }
    return g_pool;
}

int tm_pool_run(int count, tm_pool_fn fn, void *ctx) {
    if (count <= 1) {
        fn(ctx, 0, 1);
        return 0;
    }
    pthread_mutex_lock(&g_pool_lock);
    tm_pool *pool = pool_get();
    if (!pool) {
        pthread_mutex_unlock(&g_pool_lock);
        return -ENOMEM;
    }
    /* a pool smaller than count (thread creation failed, or a resize) runs
     * shares index, index + active, ... on each thread */
    int active = count < pool->size ? count : pool->size;
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->ctx = ctx;
    pool->active = active;
    pool->count = count;
    pool->pending = active - 1;
    pool->generation++;
    if (active > 1) pthread_cond_broadcast(&pool->work_cv);
    pthread_mutex_unlock(&pool->mu);

    for (int share = 0; share < count; share += active) fn(ctx, share, count);

    pthread_mutex_lock(&pool->mu);
    while (pool->pending > 0) pthread_cond_wait(&pool->done_cv, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_unlock(&g_pool_lock);
    return 0;
}

int tm_pool_size(void) {
    pthread_mutex_lock(&g_pool_lock);
    int n = g_requested > 0 ? g_requested : affinity_cpus();
    if (g_pool) n = g_pool->size;
    pthread_mutex_unlock(&g_pool_lock);
    return n;
}

int tm_pool_resize(int n) {
    if (n < 0 || n > TM_POOL_MAX_THREADS) return -EINVAL;
    pthread_mutex_lock(&g_pool_lock);
    pool_destroy(g_pool);
    g_pool = NULL;
    g_requested = n;
    pthread_mutex_unlock(&g_pool_lock);
    return 0;
}
