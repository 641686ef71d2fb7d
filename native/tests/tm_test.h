/* Helpers shared by the C tests of the I/O engine.
 *
 * Each test program checks one feature, prints "ok <name>" per passing case
 * and exits 0, or prints what failed and exits 1. An alarm turns a hang into
 * a failure (SIGALRM ends the process). Scratch files go under TMPDIR (or
 * /tmp) and are removed by the test.
 */
#ifndef TM_TEST_H
#define TM_TEST_H
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tiermem_aio.h"

#define TM_CHECK(cond)                                                                  \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);  \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

#define TM_CHECK_EQ(a, b)                                                              \
    do {                                                                                \
        long long tm_a_ = (long long)(a), tm_b_ = (long long)(b);                      \
        if (tm_a_ != tm_b_) {                                                           \
            fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", __FILE__,      \
                    __LINE__, #a, tm_a_, #b, tm_b_);                                    \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

/* A scratch path unique to this process; the caller unlinks it. */
static inline void tm_test_path(char *out, size_t n, const char *tag) {
    const char *dir = getenv("TMPDIR");
    snprintf(out, n, "%s/tm_test_%s_%d.bin", dir && *dir ? dir : "/tmp", tag, (int)getpid());
}

/* A 4 KiB-aligned buffer of n bytes filled with a pattern seeded by seed. */
static inline unsigned char *tm_test_buffer(size_t n, unsigned seed) {
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TM_CHECK(p != MAP_FAILED);
    unsigned char *b = p;
    for (size_t i = 0; i < n; i++) b[i] = (unsigned char)(i * 131u + seed);
    return b;
}

/* Open path read-write (created, truncated) with the given backend. */
static inline tm_file *tm_test_open(const char *path, int backend, int queue_depth,
                                    int64_t block_size) {
    tm_file_config cfg;
    tm_file_config_default(&cfg);
    cfg.backend = backend;
    cfg.queue_depth = queue_depth;
    cfg.block_size = block_size;
    tm_file *f = NULL;
    int rc = tm_file_open(path, TM_OPEN_READ | TM_OPEN_WRITE | TM_OPEN_CREATE | TM_OPEN_TRUNC,
                          &cfg, &f);
    if (rc < 0) {
        fprintf(stderr, "tm_file_open(%s, backend %s): %s\n", path, tm_backend_name(backend),
                strerror(-rc));
        exit(1);
    }
    return f;
}

/* Submit, wait and free one request; returns what tm_request_wait returned. */
static inline int64_t tm_test_transfer(tm_file *f, int op, void *buf, int64_t len,
                                       int64_t offset) {
    tm_request *r = NULL;
    int rc = tm_file_submit(f, op, buf, len, offset, &r);
    if (rc < 0) return rc;
    int64_t res = tm_request_wait(r, NULL);
    tm_request_free(r);
    return res;
}

/* The backends this kernel lets the process use. */
static inline int tm_test_backends(int *out) {
    int n = 0;
    if (tm_probe_io_uring() == 0) out[n++] = TM_BACKEND_IO_URING;
    if (tm_probe_libaio() == 0) out[n++] = TM_BACKEND_LIBAIO;
    out[n++] = TM_BACKEND_THREADS;
    return n;
}

#endif
