#include "gateway/frame.h"

#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

gw_frame *frame_new(const void *data, size_t len, bool binary)
{
    gw_frame *f = xmalloc(sizeof *f + GW_PRE + len + 1);
    f->refs = 1;
    f->binary = binary;
    f->len = len;
    if (len)
        memcpy(frame_data(f), data, len);
    frame_data(f)[len] = '\0';
    return f;
}

gw_frame *frame_new_prefixed(const char *prefix, const void *data, size_t len)
{
    size_t plen = strlen(prefix);
    gw_frame *f = xmalloc(sizeof *f + GW_PRE + plen + len + 1);
    f->refs = 1;
    f->binary = false;
    f->len = plen + len;
    memcpy(frame_data(f), prefix, plen);
    if (len)
        memcpy(frame_data(f) + plen, data, len);
    frame_data(f)[f->len] = '\0';
    return f;
}

gw_frame *frame_ref(gw_frame *f)
{
    f->refs++;
    return f;
}

void frame_unref(gw_frame *f)
{
    if (f && --f->refs == 0)
        free(f);
}
