/* tiermem asynchronous file I/O.
 *
 * One tm_file is an open file plus its own I/O engine: a backend (io_uring,
 * Linux AIO or a pthread pool) and one engine thread that keeps up to
 * queue_depth pieces of block_size bytes in flight. Requests of any length
 * are split into pieces; completions are reaped by the engine thread, so a
 * request makes progress while the caller computes.
 *
 * Conventions: every function returning int returns 0 (or a count) on
 * success and a negative errno on failure. Functions are thread-safe.
 *
 * Lifetime: requests hold a reference to their file, so tm_request_wait,
 * tm_request_poll and tm_request_free stay valid after tm_file_close (which
 * lets every submitted request finish first); no other call may follow
 * tm_file_close. A file belongs to the process that opened it: in a forked
 * child every call returns -ECHILD (tm_file_close closes the child's copies
 * of the descriptors and nothing else). The engine and worker threads block
 * every signal, so signals go to the caller's threads.
 *
 * This header is also read by the Python loader (cffi): keep declarations in
 * plain C, one per line group, no macros inside declarations.
 */
#ifndef TIERMEM_AIO_H
#define TIERMEM_AIO_H
#include <stddef.h>
#include <stdint.h>
#include "tiermem_api.h"

typedef enum tm_backend {
    TM_BACKEND_AUTO = 0,
    TM_BACKEND_IO_URING = 1,
    TM_BACKEND_LIBAIO = 2,
    TM_BACKEND_THREADS = 3
} tm_backend;

typedef enum tm_direct_mode {
    TM_DIRECT_AUTO = 0,  /* O_DIRECT when the filesystem accepts it */
    TM_DIRECT_ON = 1,    /* O_DIRECT or fail with the filesystem's error */
    TM_DIRECT_OFF = 2    /* buffered I/O */
} tm_direct_mode;

typedef enum tm_open_flags {
    TM_OPEN_READ = 1,
    TM_OPEN_WRITE = 2,
    TM_OPEN_CREATE = 4,     /* create if missing (mode 0600) */
    TM_OPEN_EXCL = 8,       /* with CREATE: fail if it exists */
    TM_OPEN_TRUNC = 16,
    TM_OPEN_NOFOLLOW = 32   /* refuse a symlink as the final component */
} tm_open_flags;

typedef enum tm_op {
    TM_OP_READ = 0,
    TM_OP_WRITE = 1
} tm_op;

typedef struct tm_file_config {
    int backend;         /* tm_backend; AUTO probes io_uring, then libaio, then threads */
    int direct;          /* tm_direct_mode */
    int64_t block_size;  /* bytes per piece; multiple of 4096 */
    int queue_depth;     /* pieces in flight */
    int threads;         /* worker threads for the threads backend; 0 = queue_depth capped at 16 */
} tm_file_config;

typedef struct tm_file_info {
    int backend;            /* the backend actually used */
    int direct;             /* 1 if O_DIRECT is in use */
    int64_t block_size;
    int queue_depth;
    char reason[256];       /* why this backend and direct mode were chosen */
} tm_file_info;

typedef struct tm_file tm_file;
typedef struct tm_request tm_request;

/* Environment variables read by tm_file_open when the config says AUTO:
 * TIERMEM_AIO_BACKEND=io_uring|libaio|threads, TIERMEM_AIO_DIRECT=0|1.
 * O_DIRECT is used only where statx(STATX_DIOALIGN) reports alignments of at
 * most 4096 bytes (or reports none); otherwise I/O is buffered and
 * tm_file_info.reason says why. For tests, TIERMEM_AIO_DIO_ALIGN=MEM:OFFSET
 * stands in for the kernel's answer. */
TM_API void tm_file_config_default(tm_file_config *cfg);
TM_API int tm_file_open(const char *path, int flags, const tm_file_config *cfg, tm_file **out);
TM_API int tm_file_info_get(tm_file *f, tm_file_info *out);
TM_API const char *tm_backend_name(int backend);
TM_API int tm_file_close(tm_file *f);

/* Preallocate [0, size) with fallocate (posix_fallocate fallback). */
TM_API int tm_file_allocate(tm_file *f, int64_t size);
TM_API int tm_file_sync(tm_file *f);
TM_API int64_t tm_file_size(tm_file *f);

/* Submit a read or write of len bytes between buf and the file at offset.
 * O_DIRECT is used for the 4 KiB-aligned body when buf and offset are
 * 4 KiB-aligned; the unaligned tail (and any unaligned request) goes through
 * a buffered descriptor of the same file, byte-exact. buf must stay valid
 * until the request completes. */
TM_API int tm_file_submit(tm_file *f, int op, void *buf, int64_t len, int64_t offset, tm_request **out);
/* Block until done. Returns bytes transferred, or a negative errno; on error
 * *err_offset (if not NULL) receives the file offset of the failed piece. */
TM_API int64_t tm_request_wait(tm_request *r, int64_t *err_offset);
/* Wait at most timeout_ns (< 0: no limit). Returns 1 when done (*result gets
 * what tm_request_wait returns), 0 if still in flight, -ECHILD in a forked
 * child. Callers that must stay interruptible wait in slices. */
TM_API int tm_request_wait_for(tm_request *r, int64_t timeout_ns, int64_t *result, int64_t *err_offset);
/* 1 if done, 0 if still in flight. */
TM_API int tm_request_poll(tm_request *r);
/* The caller's reference is dropped; safe before completion. */
TM_API void tm_request_free(tm_request *r);

/* Pieces in flight right now and pieces submitted since open (for tests). */
TM_API int tm_file_inflight(tm_file *f);
TM_API int64_t tm_file_pieces_submitted(tm_file *f);
/* Record the latency (ns, submit to completion) of each piece into log[0..cap);
 * returns the number of entries written so far. Pass NULL to stop recording. */
TM_API int tm_file_latency_log(tm_file *f, int64_t *log, int64_t cap);
TM_API int64_t tm_file_latency_count(tm_file *f);

/* Fault injection for tests: the Nth piece completed from now (1-based; 0
 * disables) fails with -fail_errno, and every short_every-th piece (0
 * disables) reports a short transfer of half its length, which the engine
 * must complete by resubmitting the rest. */
TM_API void tm_file_inject(tm_file *f, int64_t fail_nth, int fail_errno, int64_t short_every);
/* Fault injection for tests: after skip more kernel submission calls
 * (io_uring_enter, io_submit, or a hand-off to the worker threads), count
 * calls are refused with -err (EAGAIN, EBUSY or any errno) without reaching
 * the kernel. */
TM_API void tm_file_inject_submit(tm_file *f, int skip, int count, int err);

/* Probes: 0 if available, else the negative errno the kernel gave. */
TM_API int tm_probe_io_uring(void);
TM_API int tm_probe_libaio(void);

#endif
