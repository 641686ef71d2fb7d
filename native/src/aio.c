/* The I/O engine: request splitting, the engine thread, completion handling.
 *
 * [Note: one engine thread per file. The thread carves requests into pieces,
 *  keeps up to queue_depth of them in flight through the backend and reaps
 *  completions, so a request progresses while its submitter computes. It
 *  sleeps on one eventfd that submitters, backends (on completion) and close
 *  all signal; eventfd counts, so no wake-up is lost between a check and the
 *  sleep.]
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aio_internal.h"

#define TM_BATCH_MAX 256
/* Backing off after the kernel refused a submission with nothing in flight:
 * the first pause, the longest, and how long refusals may go on without any
 * progress before the refused pieces fail with -EAGAIN. */
#define TM_BACKOFF_MIN_NS 100000LL
#define TM_BACKOFF_MAX_NS 50000000LL
#define TM_REFUSED_GIVE_UP_NS 10000000000LL

const char *tm_backend_name(int backend) {
    switch (backend) {
    case TM_BACKEND_AUTO: return "auto";
    case TM_BACKEND_IO_URING: return "io_uring";
    case TM_BACKEND_LIBAIO: return "libaio";
    case TM_BACKEND_THREADS: return "threads";
    default: return "unknown";
    }
}

void tm_file_config_default(tm_file_config *cfg) {
    cfg->backend = TM_BACKEND_AUTO;
    cfg->direct = TM_DIRECT_AUTO;
    cfg->block_size = 1 << 20;
    cfg->queue_depth = 32;
    cfg->threads = 0;
}

static int backend_from_env(int requested) {
    if (requested != TM_BACKEND_AUTO) return requested;
    const char *e = getenv("TIERMEM_AIO_BACKEND");
    if (!e || !*e || strcmp(e, "auto") == 0) return TM_BACKEND_AUTO;
    if (strcmp(e, "io_uring") == 0) return TM_BACKEND_IO_URING;
    if (strcmp(e, "libaio") == 0) return TM_BACKEND_LIBAIO;
    if (strcmp(e, "threads") == 0) return TM_BACKEND_THREADS;
    return -1;
}

static int direct_from_env(int requested) {
    if (requested != TM_DIRECT_AUTO) return requested;
    const char *e = getenv("TIERMEM_AIO_DIRECT");
    if (!e || !*e || strcmp(e, "auto") == 0) return TM_DIRECT_AUTO;
    if (strcmp(e, "1") == 0) return TM_DIRECT_ON;
    if (strcmp(e, "0") == 0) return TM_DIRECT_OFF;
    return -1;
}

/* ---- pieces and requests (all under f->mu) ---- */

static tm_piece *piece_get(tm_file *f) {
    tm_piece *p = f->free_pieces;
    if (p) {
        f->free_pieces = p->next;
    } else {
        p = malloc(sizeof(*p));
        if (!p) return NULL;
    }
    memset(p, 0, sizeof(*p));
    return p;
}

static void piece_put(tm_file *f, tm_piece *p) {
    p->next = f->free_pieces;
    f->free_pieces = p;
}

/* Drop one reference to r (under f->mu). Returns 1 when that freed the last
 * request of a closed file: the caller frees the file after unlocking. */
static int request_unref(tm_file *f, tm_request *r) {
    if (--r->refs > 0) return 0;
    free(r);
    return --f->refs == 0;
}

static void file_struct_free(tm_file *f) {
    pthread_mutex_destroy(&f->mu);
    pthread_cond_destroy(&f->cond);
    free(f);
}

/* [Note: a tm_file is not usable across fork: the child has no engine thread
 *  (a request would wait forever) and the mutex may have been copied locked.
 *  Every entry point checks the opener's pid before touching the mutex.] */
static int foreign_process(tm_file *f) { return getpid() != f->pid; }

/* Remove r from the pending list (it is there while r->carved < r->len). */
static void pending_unlink(tm_file *f, tm_request *r) {
    tm_request *prev = NULL;
    for (tm_request *q = f->pending_head; q; prev = q, q = q->next) {
        if (q != r) continue;
        if (prev) prev->next = q->next;
        else f->pending_head = q->next;
        if (f->pending_tail == q) f->pending_tail = prev;
        q->next = NULL;
        return;
    }
}

/* Next piece to issue: a retry first, then the head pending request. */
static tm_piece *next_piece(tm_file *f) {
    if (f->retry) {
        tm_piece *p = f->retry;
        f->retry = p->next;
        p->next = NULL;
        return p;
    }
    while (f->pending_head) {
        tm_request *r = f->pending_head;
        if (r->carved >= r->len || r->error) {
            f->pending_head = r->next;
            if (!f->pending_head) f->pending_tail = NULL;
            r->carved = r->len;
            continue;
        }
        tm_piece *p = piece_get(f);
        if (!p) return NULL;
        int64_t start = r->carved, n;
        if (start < r->direct_len) {
            n = r->direct_len - start;
            if (n > f->cfg.block_size) n = f->cfg.block_size;
            p->fd = f->fd_direct;
            p->direct = 1;
        } else {
            n = r->len - start;
            if (n > f->cfg.block_size) n = f->cfg.block_size;
            p->fd = f->fd_buffered;
            p->direct = 0;
        }
        p->req = r;
        p->op = r->op;
        p->buf = r->buf + start;
        p->len = n;
        p->offset = r->offset + start;
        r->carved += n;
        r->outstanding++;
        if (r->carved >= r->len) {
            f->pending_head = r->next;
            if (!f->pending_head) f->pending_tail = NULL;
        }
        return p;
    }
    return NULL;
}

static void finish_piece(tm_file *f, tm_piece *p, int *completed_any) {
    tm_request *r = p->req;
    r->outstanding--;
    piece_put(f, p);
    if (r->outstanding == 0 && r->carved >= r->len) {
        r->done = 1;
        *completed_any = 1;
        (void)request_unref(f, r);  /* the engine's; never the last: close holds the file */
    }
}

/* Apply one completion; may requeue the piece for the rest of a short transfer. */
static void complete_piece(tm_file *f, tm_piece *p, int *completed_any) {
    tm_request *r = p->req;
    int64_t res = p->result;
    f->completions_seen++;
    if (f->lat_log && f->lat_count < f->lat_cap)
        f->lat_log[f->lat_count++] = tm_now_ns() - p->t_submit_ns;
    if (f->inject_fail_nth > 0 && f->completions_seen == f->inject_fail_nth) {
        res = -(int64_t)f->inject_fail_errno;
        f->inject_fail_nth = 0;
    } else if (res == p->len && f->inject_short_every > 0 && p->len >= 2 * TM_ALIGN &&
               f->completions_seen % f->inject_short_every == 0) {
        res = (p->len / 2) & ~(int64_t)(TM_ALIGN - 1);  /* the rest is redone */
    }

    if (res == -EAGAIN || res == -EINTR) {
        p->next = f->retry;
        f->retry = p;
        return;
    }
    if (res < 0 || (res == 0 && p->len > 0)) {
        if (!r->error) {
            /* A read that returns 0 hit the end of the file. */
            r->error = res < 0 ? res : (p->op == TM_OP_READ ? -ENODATA : -EIO);
            r->err_offset = p->offset;
        }
        /* [Note: carve no more, and leave the pending list now: once done, the
         *  waiter may free the request before the engine next looks at the
         *  list, and a freed head would be followed (a use-after-free that
         *  hung the next request on the same file).] */
        if (r->carved < r->len) pending_unlink(f, r);
        r->carved = r->len;
        finish_piece(f, p, completed_any);
        return;
    }
    r->bytes_done += res;
    if (res < p->len) {
        /* Short transfer: reissue the remainder. An O_DIRECT remainder that
         * is no longer aligned continues on the buffered descriptor. */
        p->buf += res;
        p->offset += res;
        p->len -= res;
        if (p->direct && ((res % TM_ALIGN) != 0)) {
            p->fd = f->fd_buffered;
            p->direct = 0;
        }
        p->next = f->retry;
        f->retry = p;
        return;
    }
    finish_piece(f, p, completed_any);
}

static void sleep_ns(int64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000LL), (long)(ns % 1000000000LL)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static void *engine_main(void *arg) {
    tm_file *f = arg;
    tm_piece *batch[TM_BATCH_MAX];
    tm_piece *done[TM_BATCH_MAX];
    int qd = f->cfg.queue_depth;
    int64_t backoff_ns = 0;     /* > 0 while the kernel refuses submissions */
    int64_t refused_since = 0;  /* when the current run of refusals began */
    for (;;) {
        int nb = 0, refused = 0;
        pthread_mutex_lock(&f->mu);
        if (f->stopping && !f->pending_head && !f->retry && f->inflight == 0) {
            pthread_mutex_unlock(&f->mu);
            break;
        }
        while (f->inflight + nb < qd && nb < TM_BATCH_MAX) {
            tm_piece *p = next_piece(f);
            if (!p) break;
            batch[nb++] = p;
        }
        f->inflight += nb;
        f->pieces_submitted += nb;
        pthread_mutex_unlock(&f->mu);

        if (nb) {
            int64_t t = tm_now_ns();
            for (int i = 0; i < nb; i++) batch[i]->t_submit_ns = t;
            int issued = 0;
            while (issued < nb) {
                int rc = f->ops->submit(f, batch + issued, nb - issued);
                if (rc > 0) {
                    issued += rc;
                    continue;
                }
                /* Nothing accepted: requeue what is left on EAGAIN (the engine
                 * backs off below), else fail it. Pieces already issued stay
                 * in flight and are reaped; their request completes (with the
                 * error) only after the last of them, so the caller's buffer
                 * is never released under I/O. */
                int again = rc == -EAGAIN || rc == -EBUSY || rc == 0;
                if (again && issued == 0) {
                    if (!refused_since) refused_since = t;
                    if (t - refused_since > TM_REFUSED_GIVE_UP_NS) again = 0;
                }
                if (!again && rc == 0) rc = -EAGAIN;
                pthread_mutex_lock(&f->mu);
                int completed_any = 0;
                for (int i = issued; i < nb; i++) {
                    f->inflight--;
                    if (again) {
                        batch[i]->next = f->retry;
                        f->retry = batch[i];
                    } else {
                        batch[i]->result = rc == -EBUSY ? -EAGAIN : rc;
                        complete_piece(f, batch[i], &completed_any);
                    }
                }
                if (completed_any) pthread_cond_broadcast(&f->cond);
                pthread_mutex_unlock(&f->mu);
                refused = again && issued == 0;
                break;
            }
            if (!refused) refused_since = 0;
        }

        int nd = f->ops->reap(f, done, TM_BATCH_MAX);
        if (nd > 0) {
            int completed_any = 0;
            pthread_mutex_lock(&f->mu);
            for (int i = 0; i < nd; i++) {
                f->inflight--;
                complete_piece(f, done[i], &completed_any);
            }
            if (completed_any) pthread_cond_broadcast(&f->cond);
            pthread_mutex_unlock(&f->mu);
        }
        if (refused && nd <= 0) {
            /* [Note: the kernel refused every piece. With pieces in flight,
             *  their completions free what it lacked and signal the eventfd:
             *  sleep on it. With none, nothing would ever signal it: pause
             *  for a growing interval (100 us doubling up to 50 ms) and retry;
             *  after 10 s of refusals without progress the pieces fail.] */
            pthread_mutex_lock(&f->mu);
            int busy = f->inflight > 0;
            pthread_mutex_unlock(&f->mu);
            if (busy) {
                uint64_t v;
                ssize_t rr = read(f->efd, &v, sizeof(v));
                (void)rr;
            } else {
                backoff_ns = backoff_ns ? backoff_ns * 2 : TM_BACKOFF_MIN_NS;
                if (backoff_ns > TM_BACKOFF_MAX_NS) backoff_ns = TM_BACKOFF_MAX_NS;
                sleep_ns(backoff_ns);
            }
        } else if (nb == 0 && nd <= 0) {
            uint64_t v;
            ssize_t rr = read(f->efd, &v, sizeof(v));
            (void)rr;
        }
        if (!refused) backoff_ns = 0;
    }
    return NULL;
}

/* ---- opening ---- */

static int open_flags(int flags) {
    int o = O_CLOEXEC;
    if (flags & TM_OPEN_WRITE) o |= O_RDWR;
    else o |= O_RDONLY;
    if (flags & TM_OPEN_CREATE) o |= O_CREAT;
    if (flags & TM_OPEN_EXCL) o |= O_EXCL;
    if (flags & TM_OPEN_TRUNC) o |= O_TRUNC;
    if (flags & TM_OPEN_NOFOLLOW) o |= O_NOFOLLOW;
    return o;
}

static const tm_backend_ops *ops_for(int backend) {
    switch (backend) {
    case TM_BACKEND_IO_URING: return &tm_uring_ops;
    case TM_BACKEND_LIBAIO: return &tm_libaio_ops;
    case TM_BACKEND_THREADS: return &tm_threads_ops;
    default: return NULL;
    }
}

static void file_close_fds(tm_file *f) {
    if (f->fd_direct >= 0) close(f->fd_direct);
    if (f->fd_buffered >= 0) close(f->fd_buffered);
    if (f->efd >= 0) close(f->efd);
    f->fd_direct = f->fd_buffered = f->efd = -1;
}

/* Release everything but the struct, its mutex and condition variable. */
static void file_release(tm_file *f) {
    file_close_fds(f);
    while (f->free_pieces) {
        tm_piece *p = f->free_pieces;
        f->free_pieces = p->next;
        free(p);
    }
}

static void file_free(tm_file *f) {
    file_release(f);
    file_struct_free(f);
}

/* Choose and initialise the backend; writes the reason into f->info. */
static int choose_backend(tm_file *f, int requested) {
    char *why = f->info.reason + strlen(f->info.reason);
    size_t room = sizeof(f->info.reason) - strlen(f->info.reason);
    if (requested != TM_BACKEND_AUTO) {
        if (requested == TM_BACKEND_LIBAIO && f->fd_direct < 0) {
            /* Linux AIO is only asynchronous with O_DIRECT. */
            snprintf(why, room, "; libaio requested but it needs O_DIRECT, using threads");
            requested = TM_BACKEND_THREADS;
        } else {
            snprintf(why, room, "; %s requested", tm_backend_name(requested));
        }
        f->ops = ops_for(requested);
        int rc = f->ops->init(f);
        if (rc < 0) {
            snprintf(why, room, "; %s requested but unavailable: %s", tm_backend_name(requested),
                     strerror(-rc));
            return rc;
        }
        f->info.backend = requested;
        return 0;
    }
    f->ops = &tm_uring_ops;
    int rc = f->ops->init(f);
    if (rc == 0) {
        f->info.backend = TM_BACKEND_IO_URING;
        snprintf(why, room, "; io_uring available");
        return 0;
    }
    int uring_err = -rc;
    if (f->fd_direct >= 0) {
        f->ops = &tm_libaio_ops;
        rc = f->ops->init(f);
        if (rc == 0) {
            f->info.backend = TM_BACKEND_LIBAIO;
            snprintf(why, room, "; io_uring refused (%s), using libaio", strerror(uring_err));
            return 0;
        }
        snprintf(why, room, "; io_uring refused (%s), libaio refused (%s), using threads",
                 strerror(uring_err), strerror(-rc));
    } else {
        snprintf(why, room, "; io_uring refused (%s), libaio needs O_DIRECT, using threads",
                 strerror(uring_err));
    }
    f->ops = &tm_threads_ops;
    rc = f->ops->init(f);
    if (rc < 0) return rc;
    f->info.backend = TM_BACKEND_THREADS;
    return 0;
}

/* Parse TIERMEM_AIO_DIO_ALIGN=MEM:OFFSET, which stands in for the kernel's
 * answer in tests (a filesystem that needs more than 4 KiB is hard to come by). */
static int dio_alignment_override(uint32_t *mem, uint32_t *off) {
    const char *e = getenv("TIERMEM_AIO_DIO_ALIGN");
    unsigned m, o;
    if (!e || !*e || sscanf(e, "%u:%u", &m, &o) != 2) return 0;
    *mem = m;
    *off = o;
    return 1;
}

/* [Note: the kernel's O_DIRECT alignment (statx STATX_DIOALIGN, Linux 6.1+)
 *  decides whether this file gets O_DIRECT at all: tiermem's buffers and
 *  extents are 4 KiB-aligned, so a filesystem that needs more (or reports no
 *  direct I/O for this file) gets buffered I/O and the reason says why. A
 *  smaller reported alignment is not used to send more bytes direct: the
 *  direct body and the buffered tail of a request run concurrently and must
 *  not share a page of the page cache, so the split stays at 4096.] */
static int check_dio_alignment(tm_file *f, const char *fs, int direct) {
    uint32_t mem = 0, off = 0;
    const char *source = "statx";
    int known = tm_dio_alignment(f->fd_direct, &mem, &off);
    if (dio_alignment_override(&mem, &off)) {
        known = 1;
        source = "TIERMEM_AIO_DIO_ALIGN";
    }
    char *why = f->info.reason;
    size_t room = sizeof(f->info.reason);
    if (!known) {
        snprintf(why, room, "O_DIRECT on %s (4096-byte alignment assumed: statx reports none)",
                 fs);
        return 0;
    }
    int pow2 = mem && off && !(mem & (mem - 1)) && !(off & (off - 1));
    if (off == 0 || !pow2 || mem > TM_ALIGN || off > TM_ALIGN) {
        if (direct == TM_DIRECT_ON) return -EINVAL;
        close(f->fd_direct);
        f->fd_direct = -1;
        if (off == 0)
            snprintf(why, room, "O_DIRECT not supported for this file by %s (%s), buffered", fs,
                     source);
        else
            snprintf(why, room,
                     "O_DIRECT on %s needs %u-byte memory and %u-byte offset alignment (%s), "
                     "more than tiermem's 4096-byte buffers give, buffered",
                     fs, mem, off, source);
        return 0;
    }
    snprintf(why, room, "O_DIRECT on %s (%s: %u-byte memory, %u-byte offset alignment)", fs,
             source, mem, off);
    return 0;
}

int tm_file_open(const char *path, int flags, const tm_file_config *cfg_in, tm_file **out) {
    *out = NULL;
    tm_file_config cfg;
    if (cfg_in) cfg = *cfg_in;
    else tm_file_config_default(&cfg);
    if (cfg.block_size <= 0 || cfg.block_size % TM_ALIGN != 0 || cfg.block_size > (1LL << 30))
        return -EINVAL;
    if (cfg.queue_depth <= 0 || cfg.queue_depth > 4096) return -EINVAL;
    if (cfg.threads < 0 || cfg.threads > 256) return -EINVAL;
    int backend = backend_from_env(cfg.backend);
    int direct = direct_from_env(cfg.direct);
    if (backend < 0 || direct < 0) return -EINVAL;

    tm_file *f = calloc(1, sizeof(*f));
    if (!f) return -ENOMEM;
    f->fd_direct = -1;
    f->efd = -1;
    f->cfg = cfg;
    f->refs = 1;
    f->pid = getpid();
    pthread_mutex_init(&f->mu, NULL);
    /* Timed waits (tm_request_wait_for) measure against the monotonic clock. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&f->cond, &ca);
    pthread_condattr_destroy(&ca);

    int oflags = open_flags(flags);
    f->fd_buffered = open(path, oflags, 0600);
    if (f->fd_buffered < 0) {
        int e = errno;
        f->fd_buffered = -1;
        file_free(f);
        return -e;
    }
    const char *fs = tm_fs_name(f->fd_buffered);
    if (direct != TM_DIRECT_OFF) {
        int dflags = (oflags & ~(O_CREAT | O_EXCL | O_TRUNC)) | O_DIRECT | O_NOFOLLOW;
        f->fd_direct = open(path, dflags);
        if (f->fd_direct < 0) {
            int e = errno;
            f->fd_direct = -1;
            if (direct == TM_DIRECT_ON) {
                file_free(f);
                return -e;
            }
            snprintf(f->info.reason, sizeof(f->info.reason), "O_DIRECT refused by %s (%s), buffered",
                     fs, strerror(e));
        } else {
            int rc = check_dio_alignment(f, fs, direct);
            if (rc < 0) {
                file_free(f);
                return rc;
            }
        }
    } else {
        snprintf(f->info.reason, sizeof(f->info.reason), "buffered on %s (O_DIRECT off)", fs);
    }
    f->info.direct = f->fd_direct >= 0;
    f->info.block_size = cfg.block_size;
    f->info.queue_depth = cfg.queue_depth;

    f->efd = eventfd(0, EFD_CLOEXEC);
    if (f->efd < 0) {
        int e = errno;
        file_free(f);
        return -e;
    }
    int rc = choose_backend(f, backend);
    if (rc < 0) {
        file_free(f);
        return rc;
    }
    rc = tm_thread_start(&f->engine, engine_main, f);
    if (rc != 0) {
        f->ops->destroy(f);
        file_free(f);
        return -rc;
    }
    *out = f;
    return 0;
}

int tm_file_info_get(tm_file *f, tm_file_info *out) {
    *out = f->info;
    return 0;
}

int tm_file_close(tm_file *f) {
    if (!f) return 0;
    if (foreign_process(f)) {
        /* The child's copies of the descriptors are its own to close; the
         * engine, the ring and the struct belong to the parent's threads. */
        file_close_fds(f);
        return -ECHILD;
    }
    pthread_mutex_lock(&f->mu);
    if (f->closed) {
        pthread_mutex_unlock(&f->mu);
        return -EBADF;
    }
    f->stopping = 1;
    pthread_mutex_unlock(&f->mu);
    tm_signal(f->efd);
    pthread_join(f->engine, NULL);
    f->ops->destroy(f);
    pthread_mutex_lock(&f->mu);
    f->closed = 1;
    file_release(f);
    int last = --f->refs == 0;
    pthread_mutex_unlock(&f->mu);
    /* Requests still held by callers keep the struct until they are freed. */
    if (last) file_struct_free(f);
    return 0;
}

int tm_file_allocate(tm_file *f, int64_t size) {
    if (foreign_process(f)) return -ECHILD;
    if (size < 0) return -EINVAL;
    if (fallocate(f->fd_buffered, 0, 0, size) == 0) return 0;
    int e = errno;
    if (e != EOPNOTSUPP && e != ENOSYS) return -e;
    int rc = posix_fallocate(f->fd_buffered, 0, size);
    return rc ? -rc : 0;
}

int tm_file_sync(tm_file *f) {
    if (foreign_process(f)) return -ECHILD;
    return fdatasync(f->fd_buffered) == 0 ? 0 : -errno;
}

int64_t tm_file_size(tm_file *f) {
    struct stat st;
    if (fstat(f->fd_buffered, &st) != 0) return -errno;
    return st.st_size;
}

int tm_file_submit(tm_file *f, int op, void *buf, int64_t len, int64_t offset, tm_request **out) {
    *out = NULL;
    if (foreign_process(f)) return -ECHILD;
    if ((op != TM_OP_READ && op != TM_OP_WRITE) || len < 0 || offset < 0 || (!buf && len > 0))
        return -EINVAL;
    tm_request *r = calloc(1, sizeof(*r));
    if (!r) return -ENOMEM;
    r->file = f;
    r->op = op;
    r->buf = buf;
    r->len = len;
    r->offset = offset;
    r->refs = 2;
    pthread_mutex_lock(&f->mu);
    if (f->stopping) {
        pthread_mutex_unlock(&f->mu);
        free(r);
        return -EBADF;
    }
    if (f->fd_direct >= 0 && ((uintptr_t)buf % TM_ALIGN) == 0 && (offset % TM_ALIGN) == 0)
        r->direct_len = len & ~(int64_t)(TM_ALIGN - 1);
    f->refs++;  /* the request's reference to the file */
    if (len == 0) {
        r->done = 1;
        r->refs = 1;
    } else {
        if (f->pending_tail) f->pending_tail->next = r;
        else f->pending_head = r;
        f->pending_tail = r;
    }
    pthread_mutex_unlock(&f->mu);
    if (len) tm_signal(f->efd);
    *out = r;
    return 0;
}

int tm_request_wait_for(tm_request *r, int64_t timeout_ns, int64_t *result, int64_t *err_offset) {
    tm_file *f = r->file;
    if (foreign_process(f)) return -ECHILD;
    struct timespec deadline;
    if (timeout_ns >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        int64_t ns = deadline.tv_nsec + timeout_ns % 1000000000LL;
        deadline.tv_sec += (time_t)(timeout_ns / 1000000000LL + ns / 1000000000LL);
        deadline.tv_nsec = (long)(ns % 1000000000LL);
    }
    pthread_mutex_lock(&f->mu);
    while (!r->done) {
        if (timeout_ns < 0) {
            pthread_cond_wait(&f->cond, &f->mu);
        } else if (pthread_cond_timedwait(&f->cond, &f->mu, &deadline) == ETIMEDOUT) {
            if (!r->done) {
                pthread_mutex_unlock(&f->mu);
                return 0;
            }
        }
    }
    int64_t res = r->error ? r->error : r->bytes_done;
    if (result) *result = res;
    if (err_offset) *err_offset = r->error ? r->err_offset : -1;
    pthread_mutex_unlock(&f->mu);
    return 1;
}

int64_t tm_request_wait(tm_request *r, int64_t *err_offset) {
    int64_t res = 0;
    int rc = tm_request_wait_for(r, -1, &res, err_offset);
    return rc < 0 ? rc : res;
}

int tm_request_poll(tm_request *r) {
    tm_file *f = r->file;
    if (foreign_process(f)) return -ECHILD;
    pthread_mutex_lock(&f->mu);
    int d = r->done;
    pthread_mutex_unlock(&f->mu);
    return d;
}

void tm_request_free(tm_request *r) {
    if (!r) return;
    tm_file *f = r->file;
    if (foreign_process(f)) return;  /* the parent's memory: leave it */
    pthread_mutex_lock(&f->mu);
    int last = request_unref(f, r);
    pthread_mutex_unlock(&f->mu);
    if (last) file_struct_free(f);
}

int tm_file_inflight(tm_file *f) {
    if (foreign_process(f)) return -ECHILD;
    pthread_mutex_lock(&f->mu);
    int n = f->inflight;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int64_t tm_file_pieces_submitted(tm_file *f) {
    if (foreign_process(f)) return -ECHILD;
    pthread_mutex_lock(&f->mu);
    int64_t n = f->pieces_submitted;
    pthread_mutex_unlock(&f->mu);
    return n;
}

int tm_file_latency_log(tm_file *f, int64_t *log, int64_t cap) {
    pthread_mutex_lock(&f->mu);
    f->lat_log = log;
    f->lat_cap = log ? cap : 0;
    f->lat_count = 0;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

int64_t tm_file_latency_count(tm_file *f) {
    pthread_mutex_lock(&f->mu);
    int64_t n = f->lat_count;
    pthread_mutex_unlock(&f->mu);
    return n;
}

void tm_file_inject_submit(tm_file *f, int skip, int count, int err) {
    __atomic_store_n(&f->inject_enter_errno, err > 0 ? err : EAGAIN, __ATOMIC_RELEASE);
    __atomic_store_n(&f->inject_enter_skip, skip > 0 ? skip : 0, __ATOMIC_RELEASE);
    __atomic_store_n(&f->inject_enter_count, count > 0 ? count : 0, __ATOMIC_RELEASE);
}

void tm_file_inject(tm_file *f, int64_t fail_nth, int fail_errno, int64_t short_every) {
    pthread_mutex_lock(&f->mu);
    f->inject_fail_nth = fail_nth > 0 ? f->completions_seen + fail_nth : 0;
    f->inject_fail_errno = fail_errno > 0 ? fail_errno : EIO;
    f->inject_short_every = short_every;
    pthread_mutex_unlock(&f->mu);
}
