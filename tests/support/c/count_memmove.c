/*
 * count_memmove.c - an LD_PRELOAD shim for tests: counts the memmove()
 * calls of at least PT_BIG_MOVE bytes made by the libraries of the process
 * (libssl's moves of its read buffer's contents) while counting is on.
 *
 *   pt_count_memmove(1) ... pt_count_memmove(0); pt_big_moves(); pt_big_bytes()
 *
 * Built by the test that uses it (gcc -shared -fPIC -ldl).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

#define PT_BIG_MOVE 32768

static void *(*real_memmove)(void *, const void *, size_t);
static volatile int counting;
static size_t big_moves, big_bytes;

void *memmove(void *dst, const void *src, size_t n)
{
    if (real_memmove == NULL) {
        real_memmove = (void *(*)(void *, const void *, size_t))dlsym(RTLD_NEXT, "memmove");
        if (real_memmove == NULL) { /* not resolved yet: byte by byte */
            unsigned char *d = dst;
            const unsigned char *s = src;

            if (d < s)
                while (n--)
                    *d++ = *s++;
            else
                while (n--)
                    d[n] = s[n];
            return dst;
        }
    }
    if (counting && n >= PT_BIG_MOVE) {
        big_moves++;
        big_bytes += n;
    }
    return real_memmove(dst, src, n);
}

void pt_count_memmove(int on)
{
    if (on)
        big_moves = big_bytes = 0;
    counting = on;
}

size_t pt_big_moves(void)
{
    return big_moves;
}

size_t pt_big_bytes(void)
{
    return big_bytes;
}
