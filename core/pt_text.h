/*
 * pt_text.h - "key value" text into a caller's buffer (the STATS and INFO
 * texts): every write is truncated to the buffer but counted in full, so the
 * caller learns the length it needs.
 */
#ifndef PT_TEXT_H
#define PT_TEXT_H

#include "pt_base.h"

typedef struct {
    char *buf; /* may be NULL: only count */
    size_t len;
    size_t off; /* length of the full text so far */
} pt_text;

void pt_text_init(pt_text *t, char *buf, size_t len); /* buf[0] = '\0' */
void pt_text_put(pt_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
