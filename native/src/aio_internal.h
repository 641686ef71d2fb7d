/* Internal structures shared by the engine (aio.c) and the backends. */
#ifndef TIERMEM_AIO_INTERNAL_H
#define TIERMEM_AIO_INTERNAL_H
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/uio.h>

#include "tiermem_aio.h"

#define TM_ALIGN 4096

typedef struct tm_piece {
    tm_request *req;
    struct tm_piece *next;
    char *buf;
    int64_t len;
    int64_t offset;
    int64_t result;      /* set by the backend: bytes or -errno */
    int64_t t_submit_ns;
    int fd;
    int direct;          /* fd is the O_DIRECT descriptor */
    int op;
    struct iovec iov;    /* io_uring readv/writev */
    struct iocb iocb;    /* Linux AIO */
} tm_piece;

struct tm_request {
    tm_file *file;
    tm_request *next;    /* pending queue link */
    char *buf;
    int64_t len;
    int64_t offset;
    int64_t carved;      /* bytes already cut into pieces */
    int64_t direct_len;  /* bytes [0, direct_len) go to the O_DIRECT fd */
    int64_t bytes_done;
    int64_t error;       /* first negative errno */
    int64_t err_offset;
    int outstanding;     /* pieces issued and not completed */
    int refs;            /* caller + engine */
    int done;
    int op;
};

typedef struct tm_backend_ops {
    int id;
    /* Set up backend state; efd must be signalled on every completion. */
    int (*init)(tm_file *f);
    /* Issue n pieces; returns how many were accepted, or -errno if none. */
    int (*submit)(tm_file *f, tm_piece **pieces, int n);
    /* Collect up to max completed pieces without blocking (result set). */
    int (*reap)(tm_file *f, tm_piece **out, int max);
    void (*destroy)(tm_file *f);
} tm_backend_ops;

struct tm_file {
    int fd_buffered;
    int fd_direct;       /* -1 when O_DIRECT is not used */
    int efd;             /* eventfd: new work, completions, stop */
    tm_file_config cfg;
    tm_file_info info;
    const tm_backend_ops *ops;
    void *backend;       /* backend-private state */

    pthread_t engine;
    pthread_mutex_t mu;
    pthread_cond_t cond;     /* broadcast when a request completes */
    tm_request *pending_head, *pending_tail;
    tm_piece *retry;         /* pieces to reissue (short transfers, EAGAIN) */
    tm_piece *free_pieces;
    int inflight;
    int stopping;
    int64_t pieces_submitted;

    int64_t *lat_log;
    int64_t lat_cap;
    int64_t lat_count;

    int64_t inject_fail_nth;
    int inject_fail_errno;
    int64_t inject_short_every;
    int64_t completions_seen;
};

extern const tm_backend_ops tm_uring_ops;
extern const tm_backend_ops tm_libaio_ops;
extern const tm_backend_ops tm_threads_ops;

int64_t tm_now_ns(void);
void tm_signal(int efd);
/* Filesystem name of an fd (statfs magic), for messages. */
const char *tm_fs_name(int fd);

#endif
