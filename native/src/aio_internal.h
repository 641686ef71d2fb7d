/* Internal structures shared by the engine (aio.c) and the backends. */
#ifndef TIERMEM_AIO_INTERNAL_H
#define TIERMEM_AIO_INTERNAL_H
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>
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
    /* [Note: the struct outlives tm_file_close while requests refer to it:
     *  each live request holds a reference (refs counts them plus one for the
     *  open file), so tm_request_wait/poll/free after close lock a mutex that
     *  still exists. Close releases the descriptors and the engine; the last
     *  reference frees the mutex and the struct.] */
    int refs;                /* under mu */
    int closed;              /* under mu: tm_file_close has run */
    pid_t pid;               /* the process that opened it (fork check) */
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
    /* Submission refusals to inject (read and written by the backend's submit
     * with atomics): after enter_skip more calls, enter_count calls fail with
     * -enter_errno. */
    int inject_enter_skip;
    int inject_enter_count;
    int inject_enter_errno;
};

extern const tm_backend_ops tm_uring_ops;
extern const tm_backend_ops tm_libaio_ops;
extern const tm_backend_ops tm_threads_ops;

int64_t tm_now_ns(void);
void tm_signal(int efd);
/* Filesystem name of an fd (statfs magic), for messages. */
const char *tm_fs_name(int fd);
/* Start a thread with every signal blocked (signals go to the caller's threads). */
int tm_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);
/* Direct I/O alignment of an open file from statx(STATX_DIOALIGN): 1 and the
 * two alignments (offset 0: no O_DIRECT for this file) when the kernel reports
 * them, 0 when it does not (old kernel or filesystem, or headers). */
int tm_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align);
/* Test hook for the backends' submit: 0, or -errno to return in place of the
 * next kernel submission call. */
int tm_injected_enter_error(tm_file *f);

#endif
