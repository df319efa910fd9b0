#include <sys/mman.h>

#include "common/big_buffer.h"

void *big_buffer_alloc(size_t len)
{
	void *p;

	if (!len)
		return NULL;
	p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
#ifdef MADV_HUGEPAGE
	(void)madvise(p, len, MADV_HUGEPAGE); /* a hint: without it the buffer still works */
#endif
	return p;
}

void big_buffer_free(void *p, size_t len)
{
	if (p)
		munmap(p, len);
}
