#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include "aio_internal.h"
#include "tiermem_buffers.h"

int64_t tm_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void tm_signal(int efd) {
    uint64_t one = 1;
    ssize_t rc;
    do {
        rc = write(efd, &one, sizeof(one));
    } while (rc < 0 && errno == EINTR);
}

const char *tm_fs_name(int fd) {
    struct statfs s;
    if (fstatfs(fd, &s) != 0) return "unknown";
    switch ((unsigned long)s.f_type) {
    case 0xEF53UL: return "ext4";
    case 0x58465342UL: return "xfs";
    case 0x9123683EUL: return "btrfs";
    case 0x01021994UL: return "tmpfs";
    case 0x858458F6UL: return "ramfs";
    case 0x794C7630UL: return "overlayfs";
    case 0x6969UL: return "nfs";
    case 0x2FC12FC1UL: return "zfs";
    case 0xF2F52010UL: return "f2fs";
    case 0x65735546UL: return "fuse";
    case 0x4D44UL: return "vfat";
    case 0x5346544EUL: return "ntfs";
    default: return "other";
    }
}

const char *tm_version(void) {
    return "tiermem_native 0.1.0 (C11"
#if defined(__x86_64__)
           ", x86-64"
#elif defined(__aarch64__)
           ", aarch64"
#endif
           ")";
}

int tm_thread_start(pthread_t *t, void *(*fn)(void *), void *arg) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* [Note: statx through the raw syscall into a buffer laid out like the
 *  kernel's struct statx (its ABI is fixed: the mask at byte 0, the two
 *  direct I/O alignments at bytes 152 and 156), so that headers older than
 *  Linux 6.1 build and a kernel without STATX_DIOALIGN simply does not set
 *  the bit in the mask.] */
#ifndef TM_STATX_DIOALIGN
#define TM_STATX_DIOALIGN 0x00002000U
#endif
typedef struct tm_statx_buf {
    uint32_t mask;
    uint32_t before_dio[37];
    uint32_t dio_mem_align;
    uint32_t dio_offset_align;
    uint64_t spare[12];
} tm_statx_buf;
_Static_assert(sizeof(tm_statx_buf) == 256, "struct statx is 256 bytes");
_Static_assert(offsetof(tm_statx_buf, dio_mem_align) == 152, "stx_dio_mem_align at 152");

int tm_dio_alignment(int fd, uint32_t *mem_align, uint32_t *offset_align) {
    *mem_align = *offset_align = 0;
#ifdef SYS_statx
    tm_statx_buf b;
    memset(&b, 0, sizeof(b));
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, TM_STATX_DIOALIGN, &b) != 0) return 0;
    if (!(b.mask & TM_STATX_DIOALIGN)) return 0;
    *mem_align = b.dio_mem_align;
    *offset_align = b.dio_offset_align;
    return 1;
#else
    (void)fd;
    return 0;
#endif
}

int tm_injected_enter_error(tm_file *f) {
    if (__atomic_load_n(&f->inject_enter_count, __ATOMIC_ACQUIRE) <= 0) return 0;
    if (__atomic_load_n(&f->inject_enter_skip, __ATOMIC_ACQUIRE) > 0) {
        __atomic_sub_fetch(&f->inject_enter_skip, 1, __ATOMIC_ACQ_REL);
        return 0;
    }
    __atomic_sub_fetch(&f->inject_enter_count, 1, __ATOMIC_ACQ_REL);
    return -__atomic_load_n(&f->inject_enter_errno, __ATOMIC_ACQUIRE);
}
