/* Reference-counted outbound frame: the bytes of one Engine.IO packet in its
 * WebSocket form ("<type><data>" for text, raw bytes for binary), preceded by
 * GW_PRE bytes of headroom so the WebSocket shell can write its frame header in
 * place (lws_write needs LWS_PRE). A broadcast encodes one frame and every
 * recipient's queue holds a reference: no per-recipient copy or JSON work. */
#ifndef CHATD_FRAME_H
#define CHATD_FRAME_H
#include <stdbool.h>
#include <stddef.h>

#define GW_PRE 16 /* >= LWS_PRE; checked with a static assert in the lws shell */

typedef struct gw_frame {
    unsigned refs;
    bool binary;
    size_t len;
    unsigned char storage[]; /* GW_PRE headroom, then len bytes, then a NUL */
} gw_frame;

static inline unsigned char *frame_data(gw_frame *f)
{
    return f->storage + GW_PRE;
}

/* New frame with refs = 1 holding a copy of data (caller owns the reference). */
gw_frame *frame_new(const void *data, size_t len, bool binary);
/* New frame "<prefix><data>" (prefix is a short string such as "4"). */
gw_frame *frame_new_prefixed(const char *prefix, const void *data, size_t len);
gw_frame *frame_ref(gw_frame *f);
void frame_unref(gw_frame *f); /* accepts NULL */

#endif
