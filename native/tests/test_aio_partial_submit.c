/* A request whose submission fails part way reports the error only once every
 * piece already issued has completed, so the caller may release its buffer
 * (issue 18, item 12, the engine's half). */
#include "tm_test.h"

#define LEN (1 << 20)

static void tm_test_error_after_issued_pieces(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "partial");
    tm_file *f = tm_test_open(path, backend, 8, 4096);
    unsigned char *buf = tm_test_buffer(LEN, 1);
    for (int skip = 1; skip <= 3; skip++) {
        /* The first `skip` submissions go to the kernel, the next one fails. */
        tm_file_inject_submit(f, skip, 1, EIO);
        tm_request *r = NULL;
        TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, LEN, 0, &r), 0);
        int64_t off = -1;
        TM_CHECK_EQ(tm_request_wait(r, &off), -EIO);
        TM_CHECK(off > 0 && off < LEN);  /* pieces before the failed one were issued */
        TM_CHECK_EQ(tm_file_inflight(f), 0);  /* and none of them is still in flight */
        tm_request_free(r);
    }
    tm_file_inject_submit(f, 0, 0, 0);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_WRITE, buf, LEN, 0), LEN);
    TM_CHECK_EQ(tm_file_close(f), 0);
    munmap(buf, LEN);
    unlink(path);
    printf("ok error_after_issued_pieces %s\n", tm_backend_name(backend));
}

int main(void) {
    alarm(60);
    int backends[3];
    int n = tm_test_backends(backends);
    for (int i = 0; i < n; i++) tm_test_error_after_issued_pieces(backends[i]);
    return 0;
}
