/*
 * The four functions a freestanding GCC build may call on its own (GCC manual, "C Language
 * Standards": memcpy, memmove, memset and memcmp must be provided): it turns struct copies
 * and zeroing loops into calls to them. Bare-metal builds link no C library, so here they
 * are, byte by byte. Compiled with -fno-tree-loop-distribute-patterns so that GCC does not
 * turn these very loops back into calls to themselves.
 */
#include <stddef.h>

void *memcpy(void *destination, const void *source, size_t count);
void *memmove(void *destination, const void *source, size_t count);
void *memset(void *destination, int value, size_t count);
int memcmp(const void *left, const void *right, size_t count);

void *memcpy(void *destination, const void *source, size_t count)
{
    unsigned char *to = destination;
    const unsigned char *from = source;
    while (count--) {
        *to++ = *from++;
    }
    return destination;
}

void *memmove(void *destination, const void *source, size_t count)
{
    unsigned char *to = destination;
    const unsigned char *from = source;
    if (to < from) {
        while (count--) {
            *to++ = *from++;
        }
    } else {
        while (count--) {
            to[count] = from[count];
        }
    }
    return destination;
}

void *memset(void *destination, int value, size_t count)
{
    unsigned char *to = destination;
    while (count--) {
        *to++ = (unsigned char)value;
    }
    return destination;
}

int memcmp(const void *left, const void *right, size_t count)
{
    const unsigned char *a = left, *b = right;
    for (; count--; ++a, ++b) {
        if (*a != *b) {
            return *a < *b ? -1 : 1;
        }
    }
    return 0;
}
