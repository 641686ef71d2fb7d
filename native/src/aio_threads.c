/* Thread-pool backend: workers doing pread/pwrite.
 *
 * [Note: the fallback that works everywhere (seccomp-filtered containers,
 *  filesystems without O_DIRECT, old kernels). Workers take pieces from a
 *  FIFO, do one pread/pwrite each (a short transfer is returned as such and
 *  completed by the engine, like every backend), push the piece onto a done
 *  list and signal the file's eventfd.]
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "aio_internal.h"

typedef struct pool {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    tm_piece *work_head, *work_tail;
    tm_piece *done;
    int stopping;
    int nthreads;
    pthread_t *threads;
    int efd;
} pool;

static void *worker(void *arg) {
    pool *pl = arg;
    for (;;) {
        pthread_mutex_lock(&pl->mu);
        while (!pl->work_head && !pl->stopping) pthread_cond_wait(&pl->cond, &pl->mu);
        if (!pl->work_head) {
            pthread_mutex_unlock(&pl->mu);
            return NULL;
        }
        tm_piece *p = pl->work_head;
        pl->work_head = p->next;
        if (!pl->work_head) pl->work_tail = NULL;
        pthread_mutex_unlock(&pl->mu);

        ssize_t rc;
        do {
            rc = p->op == TM_OP_READ ? pread(p->fd, p->buf, (size_t)p->len, p->offset)
                                     : pwrite(p->fd, p->buf, (size_t)p->len, p->offset);
        } while (rc < 0 && errno == EINTR);
        p->result = rc < 0 ? -(int64_t)errno : (int64_t)rc;

        pthread_mutex_lock(&pl->mu);
        p->next = pl->done;
        pl->done = p;
        pthread_mutex_unlock(&pl->mu);
        tm_signal(pl->efd);
    }
}

static int pool_init(tm_file *f) {
    pool *pl = calloc(1, sizeof(*pl));
    if (!pl) return -ENOMEM;
    pthread_mutex_init(&pl->mu, NULL);
    pthread_cond_init(&pl->cond, NULL);
    pl->efd = f->efd;
    int n = f->cfg.threads;
    if (n <= 0) n = f->cfg.queue_depth < 16 ? f->cfg.queue_depth : 16;
    pl->threads = calloc((size_t)n, sizeof(pthread_t));
    if (!pl->threads) {
        free(pl);
        return -ENOMEM;
    }
    for (int i = 0; i < n; i++) {
        int rc = tm_thread_start(&pl->threads[i], worker, pl);
        if (rc != 0) {
            pthread_mutex_lock(&pl->mu);
            pl->stopping = 1;
            pthread_cond_broadcast(&pl->cond);
            pthread_mutex_unlock(&pl->mu);
            for (int j = 0; j < i; j++) pthread_join(pl->threads[j], NULL);
            free(pl->threads);
            free(pl);
            return -rc;
        }
        pl->nthreads++;
    }
    f->backend = pl;
    return 0;
}

static int pool_submit(tm_file *f, tm_piece **pieces, int n) {
    pool *pl = f->backend;
    int injected = tm_injected_enter_error(f);
    if (injected) return injected;
    pthread_mutex_lock(&pl->mu);
    for (int i = 0; i < n; i++) {
        pieces[i]->next = NULL;
        if (pl->work_tail) pl->work_tail->next = pieces[i];
        else pl->work_head = pieces[i];
        pl->work_tail = pieces[i];
    }
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->mu);
    return n;
}

static int pool_reap(tm_file *f, tm_piece **out, int max) {
    pool *pl = f->backend;
    int n = 0;
    pthread_mutex_lock(&pl->mu);
    while (pl->done && n < max) {
        tm_piece *p = pl->done;
        pl->done = p->next;
        p->next = NULL;
        out[n++] = p;
    }
    pthread_mutex_unlock(&pl->mu);
    return n;
}

static void pool_destroy(tm_file *f) {
    pool *pl = f->backend;
    if (!pl) return;
    pthread_mutex_lock(&pl->mu);
    pl->stopping = 1;
    pthread_cond_broadcast(&pl->cond);
    pthread_mutex_unlock(&pl->mu);
    for (int i = 0; i < pl->nthreads; i++) pthread_join(pl->threads[i], NULL);
    pthread_mutex_destroy(&pl->mu);
    pthread_cond_destroy(&pl->cond);
    free(pl->threads);
    free(pl);
    f->backend = NULL;
}

const tm_backend_ops tm_threads_ops = {
    .id = TM_BACKEND_THREADS,
    .init = pool_init,
    .submit = pool_submit,
    .reap = pool_reap,
    .destroy = pool_destroy,
};
