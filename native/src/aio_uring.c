/* io_uring backend through raw syscalls and <linux/io_uring.h>.
 *
 * [Note: no liburing: the build must need nothing beyond kernel headers.
 *  The rings are shared memory with the kernel; tails we write are published
 *  with release stores and heads/tails the kernel writes are read with
 *  acquire loads. READV/WRITEV (kernel 5.1) rather than READ/WRITE (5.6) so
 *  the oldest io_uring kernels work too. Completions signal the file's
 *  eventfd through IORING_REGISTER_EVENTFD.]
 */
#include <errno.h>
#include <linux/io_uring.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "aio_internal.h"

typedef struct uring {
    int fd;
    unsigned entries;
    void *sq_ptr, *cq_ptr;
    size_t sq_sz, cq_sz;
    int single_mmap;
    unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
    unsigned *cq_head, *cq_tail, *cq_mask;
    struct io_uring_sqe *sqes;
    size_t sqes_sz;
    struct io_uring_cqe *cqes;
} uring;

static int sys_setup(unsigned entries, struct io_uring_params *p) {
    return (int)syscall(__NR_io_uring_setup, entries, p);
}

static int sys_enter(int fd, unsigned to_submit, unsigned min_complete, unsigned flags) {
    return (int)syscall(__NR_io_uring_enter, fd, to_submit, min_complete, flags, NULL, 0);
}

static int sys_register(int fd, unsigned op, void *arg, unsigned nr) {
    return (int)syscall(__NR_io_uring_register, fd, op, arg, nr);
}

static void ring_unmap(uring *u) {
    if (u->sqes && u->sqes != MAP_FAILED) munmap(u->sqes, u->sqes_sz);
    if (u->cq_ptr && u->cq_ptr != MAP_FAILED && !u->single_mmap) munmap(u->cq_ptr, u->cq_sz);
    if (u->sq_ptr && u->sq_ptr != MAP_FAILED) munmap(u->sq_ptr, u->sq_sz);
    if (u->fd >= 0) close(u->fd);
}

static int ring_setup(uring *u, unsigned entries) {
    struct io_uring_params p;
    memset(u, 0, sizeof(*u));
    memset(&p, 0, sizeof(p));
    u->fd = sys_setup(entries, &p);
    if (u->fd < 0) {
        u->fd = -1;
        return -errno;
    }
    u->entries = p.sq_entries;
    u->sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
    u->cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
    u->single_mmap = (p.features & IORING_FEAT_SINGLE_MMAP) != 0;
    if (u->single_mmap) {
        if (u->cq_sz > u->sq_sz) u->sq_sz = u->cq_sz;
        u->cq_sz = u->sq_sz;
    }
    u->sq_ptr = mmap(NULL, u->sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                     IORING_OFF_SQ_RING);
    if (u->sq_ptr == MAP_FAILED) goto fail;
    if (u->single_mmap) {
        u->cq_ptr = u->sq_ptr;
    } else {
        u->cq_ptr = mmap(NULL, u->cq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                         IORING_OFF_CQ_RING);
        if (u->cq_ptr == MAP_FAILED) goto fail;
    }
    u->sqes_sz = p.sq_entries * sizeof(struct io_uring_sqe);
    u->sqes = mmap(NULL, u->sqes_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, u->fd,
                   IORING_OFF_SQES);
    if (u->sqes == MAP_FAILED) goto fail;
    char *sq = u->sq_ptr, *cq = u->cq_ptr;
    u->sq_head = (unsigned *)(sq + p.sq_off.head);
    u->sq_tail = (unsigned *)(sq + p.sq_off.tail);
    u->sq_mask = (unsigned *)(sq + p.sq_off.ring_mask);
    u->sq_array = (unsigned *)(sq + p.sq_off.array);
    u->cq_head = (unsigned *)(cq + p.cq_off.head);
    u->cq_tail = (unsigned *)(cq + p.cq_off.tail);
    u->cq_mask = (unsigned *)(cq + p.cq_off.ring_mask);
    u->cqes = (struct io_uring_cqe *)(cq + p.cq_off.cqes);
    return 0;
fail: {
    int e = errno;
    ring_unmap(u);
    return -e;
}
}

int tm_probe_io_uring(void) {
    uring u;
    int rc = ring_setup(&u, 2);
    if (rc == 0) ring_unmap(&u);
    return rc;
}

static int uring_init(tm_file *f) {
    uring *u = malloc(sizeof(*u));
    if (!u) return -ENOMEM;
    unsigned entries = 1;
    while (entries < (unsigned)f->cfg.queue_depth) entries <<= 1;
    int rc = ring_setup(u, entries);
    if (rc < 0) {
        free(u);
        return rc;
    }
    int efd = f->efd;
    if (sys_register(u->fd, IORING_REGISTER_EVENTFD, &efd, 1) < 0) {
        rc = -errno;
        ring_unmap(u);
        free(u);
        return rc;
    }
    f->backend = u;
    return 0;
}

static int uring_submit(tm_file *f, tm_piece **pieces, int n) {
    uring *u = f->backend;
    unsigned tail = *u->sq_tail;
    unsigned head = __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE);
    unsigned room = u->entries - (tail - head);
    if ((unsigned)n > room) n = (int)room;
    if (n == 0) return -EAGAIN;
    for (int i = 0; i < n; i++) {
        tm_piece *p = pieces[i];
        unsigned idx = tail & *u->sq_mask;
        struct io_uring_sqe *sqe = &u->sqes[idx];
        memset(sqe, 0, sizeof(*sqe));
        p->iov.iov_base = p->buf;
        p->iov.iov_len = (size_t)p->len;
        sqe->opcode = p->op == TM_OP_READ ? IORING_OP_READV : IORING_OP_WRITEV;
        sqe->fd = p->fd;
        sqe->addr = (uint64_t)(uintptr_t)&p->iov;
        sqe->len = 1;
        sqe->off = (uint64_t)p->offset;
        sqe->user_data = (uint64_t)(uintptr_t)p;
        u->sq_array[idx] = idx;
        tail++;
    }
    __atomic_store_n(u->sq_tail, tail, __ATOMIC_RELEASE);
    int submitted = 0;
    while (submitted < n) {
        int injected = tm_injected_enter_error(f);
        int rc = injected ? -1 : sys_enter(u->fd, (unsigned)(n - submitted), 0, 0);
        if (injected) errno = -injected;
        if (rc < 0 && errno == EINTR) continue;
        if (rc <= 0) {
            /* [Note: on EAGAIN/EBUSY (the kernel is short of memory or its
             *  completion queue is full) or an error, take back the SQEs the
             *  kernel did not consume and return: the engine requeues or fails
             *  them and backs off. Waiting here for a completion, as this once
             *  did, blocks forever when nothing is in flight.] */
            int e = rc < 0 ? errno : EAGAIN;
            if (e == EBUSY) e = EAGAIN;
            __atomic_store_n(u->sq_tail, __atomic_load_n(u->sq_head, __ATOMIC_ACQUIRE),
                             __ATOMIC_RELEASE);
            return submitted ? submitted : -e;
        }
        submitted += rc;
    }
    return submitted;
}

static int uring_reap(tm_file *f, tm_piece **out, int max) {
    uring *u = f->backend;
    unsigned head = *u->cq_head;
    unsigned tail = __atomic_load_n(u->cq_tail, __ATOMIC_ACQUIRE);
    int n = 0;
    while (head != tail && n < max) {
        struct io_uring_cqe *cqe = &u->cqes[head & *u->cq_mask];
        tm_piece *p = (tm_piece *)(uintptr_t)cqe->user_data;
        p->result = cqe->res;
        out[n++] = p;
        head++;
    }
    __atomic_store_n(u->cq_head, head, __ATOMIC_RELEASE);
    return n;
}

static void uring_destroy(tm_file *f) {
    uring *u = f->backend;
    if (!u) return;
    ring_unmap(u);
    free(u);
    f->backend = NULL;
}

const tm_backend_ops tm_uring_ops = {
    .id = TM_BACKEND_IO_URING,
    .init = uring_init,
    .submit = uring_submit,
    .reap = uring_reap,
    .destroy = uring_destroy,
};
