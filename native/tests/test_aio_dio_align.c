/* O_DIRECT only where the filesystem's direct I/O alignment (statx
 * STATX_DIOALIGN) fits tiermem's 4 KiB buffers; otherwise buffered, with the
 * reason (issue 18, item 14). TIERMEM_AIO_DIO_ALIGN stands in for the kernel. */
#include "tm_test.h"

#define LEN (64 << 10)

static tm_file *open_with(const char *path, const char *align, int direct, int *rc) {
    if (align) setenv("TIERMEM_AIO_DIO_ALIGN", align, 1);
    else unsetenv("TIERMEM_AIO_DIO_ALIGN");
    tm_file_config cfg;
    tm_file_config_default(&cfg);
    cfg.direct = direct;
    tm_file *f = NULL;
    *rc = tm_file_open(path, TM_OPEN_READ | TM_OPEN_WRITE | TM_OPEN_CREATE, &cfg, &f);
    return f;
}

static void check_roundtrip(tm_file *f) {
    unsigned char *buf = tm_test_buffer(LEN, 4), *back = tm_test_buffer(LEN, 5);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_WRITE, buf, LEN, 0), LEN);
    TM_CHECK_EQ(tm_test_transfer(f, TM_OP_READ, back, LEN, 0), LEN);
    TM_CHECK(memcmp(buf, back, LEN) == 0);
    munmap(buf, LEN);
    munmap(back, LEN);
}

static void tm_test_larger_alignment_falls_back(const char *path) {
    int rc;
    tm_file *f = open_with(path, "8192:8192", TM_DIRECT_AUTO, &rc);
    TM_CHECK_EQ(rc, 0);
    tm_file_info info;
    tm_file_info_get(f, &info);
    TM_CHECK_EQ(info.direct, 0);
    TM_CHECK(strstr(info.reason, "8192") != NULL);
    TM_CHECK(strstr(info.reason, "buffered") != NULL);
    check_roundtrip(f);
    TM_CHECK_EQ(tm_file_close(f), 0);
    /* direct=on: refused rather than silently buffered. */
    f = open_with(path, "8192:8192", TM_DIRECT_ON, &rc);
    TM_CHECK_EQ(rc, -EINVAL);
    TM_CHECK(f == NULL);
    printf("ok larger_alignment_falls_back (%s)\n", info.reason);
}

static void tm_test_no_direct_for_file(const char *path) {
    int rc;
    tm_file *f = open_with(path, "0:0", TM_DIRECT_AUTO, &rc);
    TM_CHECK_EQ(rc, 0);
    tm_file_info info;
    tm_file_info_get(f, &info);
    TM_CHECK_EQ(info.direct, 0);
    TM_CHECK(strstr(info.reason, "not supported") != NULL);
    check_roundtrip(f);
    TM_CHECK_EQ(tm_file_close(f), 0);
    printf("ok no_direct_for_file (%s)\n", info.reason);
}

static void tm_test_smaller_alignment_keeps_direct(const char *path) {
    int rc;
    tm_file *f = open_with(path, "512:512", TM_DIRECT_AUTO, &rc);
    TM_CHECK_EQ(rc, 0);
    tm_file_info info;
    tm_file_info_get(f, &info);
    TM_CHECK_EQ(info.direct, 1);
    TM_CHECK(strstr(info.reason, "512-byte") != NULL);
    check_roundtrip(f);
    TM_CHECK_EQ(tm_file_close(f), 0);
    printf("ok smaller_alignment_keeps_direct (%s)\n", info.reason);
}

/* Without the override the reason names where the alignment came from. */
static void tm_test_kernel_answer(const char *path) {
    int rc;
    tm_file *f = open_with(path, NULL, TM_DIRECT_AUTO, &rc);
    TM_CHECK_EQ(rc, 0);
    tm_file_info info;
    tm_file_info_get(f, &info);
    if (info.direct)
        TM_CHECK(strstr(info.reason, "statx") != NULL);
    check_roundtrip(f);
    TM_CHECK_EQ(tm_file_close(f), 0);
    printf("ok kernel_answer (%s)\n", info.reason);
}

int main(void) {
    alarm(60);
    char path[512];
    tm_test_path(path, sizeof(path), "dio_align");
    tm_test_larger_alignment_falls_back(path);
    tm_test_no_direct_for_file(path);
    tm_test_smaller_alignment_keeps_direct(path);
    tm_test_kernel_answer(path);
    unlink(path);
    return 0;
}
