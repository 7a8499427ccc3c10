/*
 * text.c - bounded, counted text output (see pt_text.h).
 */
#include "pt_text.h"

#include <stdarg.h>
#include <stdio.h>

void pt_text_init(pt_text *t, char *buf, size_t len)
{
    t->buf = buf;
    t->len = buf != NULL ? len : 0;
    t->off = 0;
    if (buf != NULL && len > 0)
        buf[0] = '\0';
}

void pt_text_put(pt_text *t, const char *fmt, ...)
{
    va_list ap;
    char *dst = NULL;
    size_t room = 0;
    int n;

    if (t->buf != NULL && t->off < t->len) {
        dst = t->buf + t->off;
        room = t->len - t->off;
    }
    va_start(ap, fmt);
    n = vsnprintf(dst, room, fmt, ap);
    va_end(ap);
    if (n > 0)
        t->off += (size_t)n;
}
