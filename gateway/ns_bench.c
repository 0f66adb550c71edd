/* `chatd bench-server`: the Engine.IO/Socket.IO engine and fan-out alone, no
 * Redis or PostgreSQL (issue 6). Namespace /chat accepts any CONNECT whose auth
 * has a non-empty token. Events:
 *   join {chatId}            join room chatId, ack {ok:true}
 *   leave {chatId}           leave it, ack {ok:true}
 *   chat-message {chatId,..} broadcast unchanged to the room (sender included)
 *                            when the sender joined it; ack {ok:true} if asked
 *   echo ...                 ack with the same arguments
 *   server-ack {event,args}  server emits event(...args) with an ack request;
 *                            the client's ack comes back as server-ack-result
 *   disconnect-me            server-side namespace disconnect
 * The last three exist for the end-to-end tests of acks and disconnects. */
#include <string.h>

#include "common/buf.h"
#include "gateway/modes.h"
#include "gateway/sio.h"

static const char OK[] = "[{\"ok\":true}]";
static const char BAD[] = "[{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"bad payload\"}}]";

static void bench_connect(void *ctx, sio_socket *s, const cJSON *auth, const char *raw, size_t len)
{
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(auth, "token");
    if (!cJSON_IsString(tok) || !tok->valuestring[0]) {
        sio_reject(s, "{\"message\":\"unauthorized\",\"data\":{\"code\":\"token_missing\"}}");
        return;
    }
    sio_accept(s);
}

static void reply(sio_socket *s, const sio_event *ev, const char *json)
{
    if (ev->ack_id >= 0)
        sio_ack(s, ev->ack_id, json, strlen(json), NULL, 0);
}

static const char *chat_id(const sio_event *ev)
{
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(ev->args, "chatId");
    return cJSON_IsObject(ev->args) && cJSON_IsString(id) && id->valuestring[0] ? id->valuestring
                                                                                 : NULL;
}

static void on_server_ack(void *ctx, sio_socket *s, const cJSON *args)
{
    if (!args)
        return; /* disconnected first */
    char *json = cJSON_PrintUnformatted(args);
    if (!json)
        return;
    buf_t b;
    buf_init(&b);
    buf_puts(&b, "[\"server-ack-result\",");
    buf_puts(&b, json);
    buf_putc(&b, ']');
    sio_emit(s, b.data, b.len, NULL, 0, 0);
    buf_free(&b);
    cJSON_free(json);
}

static void bench_event(void *ctx, sio_socket *s, const sio_event *ev)
{
    sio_nsp *nsp = sio_nsp_of(s);
    const char *room;
    if (!strcmp(ev->name, "chat-message")) {
        room = chat_id(ev);
        if (!room || !sio_in_room(s, room)) {
            reply(s, ev, BAD);
            return;
        }
        /* The packet as received, minus its ack id: one encode, shared frames. */
        sio_broadcast(nsp, room, ev->data, ev->len, ev->attachments, ev->nattach, NULL, 0);
        reply(s, ev, OK);
    } else if (!strcmp(ev->name, "join") || !strcmp(ev->name, "leave")) {
        room = chat_id(ev);
        if (!room) {
            reply(s, ev, BAD);
            return;
        }
        if (ev->name[0] == 'j')
            sio_join(s, room);
        else
            sio_leave(s, room);
        reply(s, ev, OK);
    } else if (!strcmp(ev->name, "echo")) {
        if (ev->ack_id < 0)
            return;
        buf_t b;
        buf_init(&b);
        buf_putc(&b, '[');
        if (ev->data[ev->rest] == ',')
            buf_append(&b, ev->data + ev->rest + 1, ev->len - ev->rest - 1);
        else
            buf_putc(&b, ']');
        sio_ack(s, ev->ack_id, b.data, b.len, ev->attachments, ev->nattach);
        buf_free(&b);
    } else if (!strcmp(ev->name, "server-ack")) {
        const cJSON *event = cJSON_GetObjectItemCaseSensitive(ev->args, "event");
        const cJSON *args = cJSON_GetObjectItemCaseSensitive(ev->args, "args");
        if (!cJSON_IsString(event) || (args && !cJSON_IsArray(args))) {
            reply(s, ev, BAD);
            return;
        }
        cJSON *arr = cJSON_CreateArray();
        cJSON_AddItemToArray(arr, cJSON_CreateString(event->valuestring));
        for (const cJSON *a = args ? args->child : NULL; a; a = a->next)
            cJSON_AddItemToArray(arr, cJSON_Duplicate(a, 1));
        char *json = cJSON_PrintUnformatted(arr);
        cJSON_Delete(arr);
        if (json) {
            sio_emit_with_ack(s, json, strlen(json), on_server_ack, NULL);
            cJSON_free(json);
        }
        reply(s, ev, OK);
    } else if (!strcmp(ev->name, "disconnect-me")) {
        sio_disconnect(s);
    } else {
        reply(s, ev, "[{\"ok\":false,\"error\":{\"code\":\"bad_request\",\"message\":\"unknown event\"}}]");
    }
}

void mode_bench_setup(eio_server *eio, sio_server **out)
{
    sio_server *sio = sio_server_new(eio, "/socket.io/");
    sio_nsp_ops ops = {bench_connect, bench_event, NULL, NULL};
    sio_add_namespace(sio, "/chat", &ops, NULL);
    *out = sio;
}
