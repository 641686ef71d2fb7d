/* Linux AIO backend (io_setup/io_submit/io_getevents) through raw syscalls.
 *
 * [Note: kernel AIO is only asynchronous for O_DIRECT descriptors; the engine
 *  does not choose it without O_DIRECT. Buffered tail pieces still go through
 *  it and complete synchronously inside io_submit, which is correct, only not
 *  overlapped. Each iocb carries IOCB_FLAG_RESFD so completions signal the
 *  file's eventfd like the other backends.]
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "aio_internal.h"

typedef struct laio {
    aio_context_t ctx;
    struct io_event *events;
    int nevents;
} laio;

static int sys_io_setup(unsigned nr, aio_context_t *ctx) {
    return (int)syscall(__NR_io_setup, nr, ctx);
}
static int sys_io_destroy(aio_context_t ctx) { return (int)syscall(__NR_io_destroy, ctx); }
static int sys_io_submit(aio_context_t ctx, long n, struct iocb **iocbs) {
    return (int)syscall(__NR_io_submit, ctx, n, iocbs);
}
static int sys_io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev,
                            struct timespec *ts) {
    return (int)syscall(__NR_io_getevents, ctx, min, max, ev, ts);
}

int tm_probe_libaio(void) {
    aio_context_t ctx = 0;
    if (sys_io_setup(1, &ctx) < 0) return -errno;
    sys_io_destroy(ctx);
    return 0;
}

static int laio_init(tm_file *f) {
    laio *a = calloc(1, sizeof(*a));
    if (!a) return -ENOMEM;
    a->nevents = f->cfg.queue_depth;
    a->events = calloc((size_t)a->nevents, sizeof(struct io_event));
    if (!a->events) {
        free(a);
        return -ENOMEM;
    }
    if (sys_io_setup((unsigned)a->nevents, &a->ctx) < 0) {
        int e = errno;
        free(a->events);
        free(a);
        return -e;
    }
    f->backend = a;
    return 0;
}

static int laio_submit(tm_file *f, tm_piece **pieces, int n) {
    laio *a = f->backend;
    struct iocb *list[256];
    if (n > 256) n = 256;
    for (int i = 0; i < n; i++) {
        tm_piece *p = pieces[i];
        struct iocb *cb = &p->iocb;
        memset(cb, 0, sizeof(*cb));
        cb->aio_data = (uint64_t)(uintptr_t)p;
        cb->aio_lio_opcode = p->op == TM_OP_READ ? IOCB_CMD_PREAD : IOCB_CMD_PWRITE;
        cb->aio_fildes = (uint32_t)p->fd;
        cb->aio_buf = (uint64_t)(uintptr_t)p->buf;
        cb->aio_nbytes = (uint64_t)p->len;
        cb->aio_offset = p->offset;
        cb->aio_flags = IOCB_FLAG_RESFD;
        cb->aio_resfd = (uint32_t)f->efd;
        list[i] = cb;
    }
    for (;;) {
        int injected = tm_injected_enter_error(f);
        if (injected) return injected;
        int rc = sys_io_submit(a->ctx, n, list);
        if (rc >= 0) return rc == 0 ? -EAGAIN : rc;
        if (errno == EINTR) continue;
        return -errno;
    }
}

static int laio_reap(tm_file *f, tm_piece **out, int max) {
    laio *a = f->backend;
    struct timespec zero = {0, 0};
    if (max > a->nevents) max = a->nevents;
    int rc;
    do {
        rc = sys_io_getevents(a->ctx, 0, max, a->events, &zero);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) return 0;
    for (int i = 0; i < rc; i++) {
        tm_piece *p = (tm_piece *)(uintptr_t)a->events[i].data;
        p->result = (int64_t)a->events[i].res;
        out[i] = p;
    }
    return rc;
}

static void laio_destroy(tm_file *f) {
    laio *a = f->backend;
    if (!a) return;
    sys_io_destroy(a->ctx);
    free(a->events);
    free(a);
    f->backend = NULL;
}

const tm_backend_ops tm_libaio_ops = {
    .id = TM_BACKEND_LIBAIO,
    .init = laio_init,
    .submit = laio_submit,
    .reap = laio_reap,
    .destroy = laio_destroy,
};
