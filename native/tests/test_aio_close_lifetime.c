/* Requests outlive their file: tm_request_wait/poll/free after tm_file_close
 * must not touch freed memory (issue 18, item 4). Under ASan a use-after-free
 * aborts the program. */
#include <pthread.h>

#include "tm_test.h"

#define LEN (256 << 10)

/* Close with requests still held: waiting, polling and freeing them afterwards
 * reads the file's state safely, and every byte was written. */
static void tm_test_wait_after_close(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "close_lifetime");
    tm_file *f = tm_test_open(path, backend, 4, 16384);
    unsigned char *buf = tm_test_buffer(LEN, 7);
    tm_request *a = NULL, *b = NULL, *c = NULL;
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, LEN / 2, 0, &a), 0);
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf + LEN / 2, LEN / 2, LEN / 2, &b), 0);
    TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, 0, 0, &c), 0);  /* empty: done at once */
    TM_CHECK_EQ(tm_file_close(f), 0);  /* lets both finish, frees the descriptors */
    int64_t off = 0;
    TM_CHECK_EQ(tm_request_poll(a), 1);
    TM_CHECK_EQ(tm_request_wait(a, &off), LEN / 2);
    TM_CHECK_EQ(off, -1);
    int64_t res = 0;
    TM_CHECK_EQ(tm_request_wait_for(b, 0, &res, NULL), 1);
    TM_CHECK_EQ(res, LEN / 2);
    tm_request_free(a);
    TM_CHECK_EQ(tm_request_poll(b), 1);  /* the file is still referenced by b and c */
    tm_request_free(c);
    tm_request_free(b);  /* the last reference frees the file */

    /* The data reached the file. */
    FILE *fp = fopen(path, "rb");
    TM_CHECK(fp != NULL);
    unsigned char *back = tm_test_buffer(LEN, 99);
    TM_CHECK_EQ(fread(back, 1, LEN, fp), LEN);
    fclose(fp);
    TM_CHECK(memcmp(back, buf, LEN) == 0);
    munmap(back, LEN);
    munmap(buf, LEN);
    unlink(path);
    printf("ok wait_after_close %s\n", tm_backend_name(backend));
}

typedef struct waiter_arg {
    tm_request *req;
    int64_t result;
} waiter_arg;

static void *waiter(void *p) {
    waiter_arg *w = p;
    w->result = tm_request_wait(w->req, NULL);
    tm_request_free(w->req);
    return NULL;
}

/* Another thread waits on and frees a request while this one closes the file. */
static void tm_test_close_while_waiting(int backend) {
    char path[512];
    tm_test_path(path, sizeof(path), "close_waiting");
    for (int round = 0; round < 20; round++) {
        tm_file *f = tm_test_open(path, backend, 2, 4096);
        unsigned char *buf = tm_test_buffer(LEN, (unsigned)round);
        waiter_arg w = {NULL, 0};
        TM_CHECK_EQ(tm_file_submit(f, TM_OP_WRITE, buf, LEN, 0, &w.req), 0);
        pthread_t t;
        TM_CHECK_EQ(pthread_create(&t, NULL, waiter, &w), 0);
        TM_CHECK_EQ(tm_file_close(f), 0);
        pthread_join(t, NULL);
        TM_CHECK_EQ(w.result, LEN);
        munmap(buf, LEN);
    }
    unlink(path);
    printf("ok close_while_waiting %s\n", tm_backend_name(backend));
}

int main(void) {
    alarm(60);
    int backends[3];
    int n = tm_test_backends(backends);
    for (int i = 0; i < n; i++) {
        tm_test_wait_after_close(backends[i]);
        tm_test_close_while_waiting(backends[i]);
    }
    return 0;
}
