/* The engine backs off and retries when the kernel refuses a submission
 * (EAGAIN/EBUSY), also with nothing in flight, and a timed wait returns while
 * a request is held up (issue 18, item 6). Before, io_uring waited for a
 * completion that could never come: the request and tm_file_close hung (the
 * alarm ends the test then). */
#include "tm_test.h"

#define LEN (64 << 10)

static void roundtrip(tm_file *f, unsigned seed) {
    unsigned char *buf = tm_test_buffer(LEN, seed), *back = tm_test_buffer(LEN, seed + 1);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_WRITE, buf, LEN, 0), LEN);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_READ, back, LEN, 0), LEN);
    TM_CHECK(memcmp(buf, back, LEN) == 0);
    munmap(buf, LEN);
    munmap(back, LEN);
}

/* Refusals with nothing in flight: the write completes, byte-exact. */
static void tm_test_refused_then_accepted(int backend, int err) {
    char path[512];
    tm_test_path(path, sizeof(path), "refused");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    tm_file_inject_submit(f, 0, 5, err);
    roundtrip(f, 3);
    TM_CHECK_EQ(tm_file_inflight(f), 0);
    TM_CHECK_EQ(tm_file_close(f), 0);
    unlink(path);
    printf("ok refused_then_accepted %s %s\n", tm_backend_name(backend), strerror(err));
}

/* A request held up by refusals: a timed wait returns 0 (still in flight)
 * after its timeout; once the kernel accepts again the request completes. */
static void tm_test_timed_wait_while_refused(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "timed_wait");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    unsigned char *buf = tm_test_buffer(LEN, 5);
    tm_file_inject_submit(f, 0, 1 << 30, EAGAIN);
    tm_request *r = NULL;
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, LEN, 0, &r), 0);
    int64_t res = 12345;
    TM_CHECK_EQ(tm_request_wait_for(r, 20 * 1000000LL, &res, NULL), 0);
    TM_CHECK_EQ(res, 12345);  /* untouched while in flight */
    TM_CHECK_EQ(tm_request_poll(r), 0);
    tm_file_inject_submit(f, 0, 0, 0);
    TM_CHECK_EQ(tm_request_wait_for(r, 10 * 1000000000LL, &res, NULL), 1);
    TM_CHECK_EQ(res, LEN);
    tm_request_free(r);
    TM_CHECK_EQ(tm_file_close(f), 0);
    munmap(buf, LEN);
    unlink(path);
    printf("ok timed_wait_while_refused %s\n", tm_backend_name(backend));
}

/* A refusal that is an error (not EAGAIN) fails the request with it, and
 * close returns. */
static void tm_test_refused_with_error(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "refused_error");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    unsigned char *buf = tm_test_buffer(LEN, 9);
    tm_file_inject_submit(f, 0, 1, EIO);
    tm_request *r = NULL;
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, LEN, 0, &r), 0);
    int64_t off = -7;
    TM_CHECK_EQ(tm_request_wait(r, &off), -EIO);
    TM_CHECK_EQ(off, 0);
    tm_request_free(r);
    roundtrip(f, 11);  /* the file works afterwards */
    TM_CHECK_EQ(tm_file_close(f), 0);
    munmap(buf, LEN);
    unlink(path);
    printf("ok refused_with_error %s\n", tm_backend_name(backend));
}

int main(void) {
    alarm(60);
    int backends[3];
    int n = tm_test_backends(backends);
    for (int i = 0; i < n; i++) {
        tm_test_refused_then_accepted(backends[i], EAGAIN);
        tm_test_refused_then_accepted(backends[i], EBUSY);
        tm_test_timed_wait_while_refused(backends[i]);
        tm_test_refused_with_error(backends[i]);
    }
    return 0;
}
