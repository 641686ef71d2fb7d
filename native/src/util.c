#include <errno.h>
#include <stdint.h>
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
