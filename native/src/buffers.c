/* Aligned host buffers. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tiermem_buffers.h"

/* [Note: anonymous mmap rather than malloc: page-aligned, returned to the
 *  kernel on free (a pool that grows and shrinks does not leave a fragmented
 *  heap behind), and lazily zeroed. Larger alignments over-map and trim.]
 * [Note: buffers of 2 MiB or more are 2 MiB-aligned and advised
 *  MADV_HUGEPAGE (before mlock faults them in), so transparent huge pages
 *  back them where the kernel allows ("madvise" is the common default).
 *  Physically contiguous memory lets the block layer merge a queue's
 *  sequential O_DIRECT pieces into maximal device requests: with 4 KiB pages
 *  a request stops at the device's segment limit (virtio-blk: 254 pages, so
 *  about 1 MiB), and on a virtual disk measured here reads ran 2.4 GB/s with
 *  ~1.9 MiB requests from 4 KiB pages against 3.7 GB/s with 4 MiB requests
 *  from huge pages. Fewer pages to pin per I/O and fewer TLB misses in CPU
 *  Adam are a bonus. madvise failing (THP compiled out) changes nothing.] */
#define TM_HUGE_PAGE (2LL << 20)

void *tm_buffer_alloc(int64_t size, int64_t align, int lock, int *lock_err) {
    if (lock_err) *lock_err = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (size <= 0 || align <= 0 || (align & (align - 1)) != 0) return NULL;
    if (align < page) align = page;
    int huge = size >= TM_HUGE_PAGE;
    if (huge && align < TM_HUGE_PAGE) align = TM_HUGE_PAGE;
    size_t len = ((size_t)size + (size_t)page - 1) & ~((size_t)page - 1);
    size_t map_len = len + (size_t)(align - page);
    char *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t aligned = ((uintptr_t)p + (uintptr_t)align - 1) & ~((uintptr_t)align - 1);
    size_t head = aligned - (uintptr_t)p;
    if (head) munmap(p, head);
    size_t tail = map_len - head - len;
    if (tail) munmap((char *)aligned + len, tail);
    if (huge) (void)madvise((void *)aligned, len, MADV_HUGEPAGE);
    if (lock && mlock((void *)aligned, len) != 0 && lock_err) *lock_err = -errno;
    return (void *)aligned;
}

void tm_buffer_free(void *ptr, int64_t size) {
    if (!ptr || size <= 0) return;
    long page = sysconf(_SC_PAGESIZE);
    size_t len = ((size_t)size + (size_t)page - 1) & ~((size_t)page - 1);
    munmap(ptr, len);  /* also drops any mlock */
}

int tm_page_size(void) { return (int)sysconf(_SC_PAGESIZE); }
