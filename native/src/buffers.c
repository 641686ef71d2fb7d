/* Aligned host buffers. */
#include <errno.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#include "tiermem_buffers.h"

/* [Note: anonymous mmap rather than malloc: page-aligned, returned to the
 *  kernel on free (a pool that grows and shrinks does not leave a fragmented
 *  heap behind), and lazily zeroed. Larger alignments over-map and trim.] */
void *tm_buffer_alloc(int64_t size, int64_t align, int lock, int *lock_err) {
    if (lock_err) *lock_err = 0;
    long page = sysconf(_SC_PAGESIZE);
    if (size <= 0 || align <= 0 || (align & (align - 1)) != 0) return NULL;
    if (align < page) align = page;
    size_t len = ((size_t)size + (size_t)page - 1) & ~((size_t)page - 1);
    size_t map_len = len + (size_t)(align - page);
    char *p = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return NULL;
    uintptr_t aligned = ((uintptr_t)p + (uintptr_t)align - 1) & ~((uintptr_t)align - 1);
    size_t head = aligned - (uintptr_t)p;
    if (head) munmap(p, head);
    size_t tail = map_len - head - len;
    if (tail) munmap((char *)aligned + len, tail);
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
