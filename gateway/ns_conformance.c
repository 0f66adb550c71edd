/* `chatd conformance`: the handlers the official Engine.IO/Socket.IO suites
 * expect (shared/conformance/EXPECTATIONS.md §0). Exists for the suites only:
 * no authentication, no persistence. */
#include <string.h>

#include "common/buf.h"
#include "gateway/modes.h"
#include "gateway/sio.h"

/* Bare Engine.IO endpoint: every message goes back unchanged. */
static void echo_message(void *ctx, eio_sock *s, const char *data, size_t len, bool binary)
{
    if (binary) {
        gw_frame *f = frame_new(data, len, true);
        eio_send_frame(s, f, 0);
        frame_unref(f);
    } else {
        eio_send_message(s, data, len);
    }
}

static void conf_connect(void *ctx, sio_socket *s, const cJSON *auth, const char *raw, size_t len)
{
    sio_accept(s);
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "[\"auth\",");
    if (auth)
        buf_append(&b, raw, len);
    else
        buf_puts(&b, "{}");
    buf_putc(&b, ']');
    sio_emit(s, b.data, b.len, NULL, 0, 0);
    buf_free(&b);
}

/* On "/": message -> message-back (same args), message-with-ack -> ack(args). */
static void conf_event(void *ctx, sio_socket *s, const sio_event *ev)
{
    if (strcmp(sio_nsp_name(sio_nsp_of(s)), "/") != 0)
        return;
    buf_t b;
    buf_init(&b);
    if (!strcmp(ev->name, "message")) {
        buf_puts(&b, "[\"message-back\"");
        buf_append(&b, ev->data + ev->rest, ev->len - ev->rest);
        sio_emit(s, b.data, b.len, ev->attachments, ev->nattach, 0);
    } else if (!strcmp(ev->name, "message-with-ack") && ev->ack_id >= 0) {
        buf_putc(&b, '[');
        if (ev->data[ev->rest] == ',')
            buf_append(&b, ev->data + ev->rest + 1, ev->len - ev->rest - 1);
        else
            buf_putc(&b, ']');
        sio_ack(s, ev->ack_id, b.data, b.len, ev->attachments, ev->nattach);
    }
    buf_free(&b);
}

void mode_conformance_setup(eio_server *eio, sio_server **out)
{
    eio_app echo = {NULL, echo_message, NULL, NULL};
    eio_add_endpoint(eio, "/engine.io/", &echo);
    sio_server *sio = sio_server_new(eio, "/socket.io/");
    sio_nsp_ops ops = {conf_connect, conf_event, NULL, NULL};
    sio_add_namespace(sio, "/", &ops, NULL);
    sio_add_namespace(sio, "/custom", &ops, NULL);
    *out = sio;
}
