/* Aligned host buffers for O_DIRECT and pinned transfers. */
#ifndef TIERMEM_BUFFERS_H
#define TIERMEM_BUFFERS_H
#include <stddef.h>
#include <stdint.h>
#include "tiermem_api.h"

/* Allocate size bytes aligned to align (a power of two >= 4096), zeroed
 * lazily by the kernel (anonymous mmap). With lock != 0 the pages are
 * mlock'ed; *lock_err receives 0 or the negative errno of mlock (the buffer
 * is still returned). Returns NULL on allocation failure. */
TM_API void *tm_buffer_alloc(int64_t size, int64_t align, int lock, int *lock_err);
TM_API void tm_buffer_free(void *ptr, int64_t size);

/* The library's version and build description. */
TM_API const char *tm_version(void);
TM_API int tm_page_size(void);

#endif
