/* libFuzzer target for the Socket.IO decoder (gateway/sio_packet.c).
 *
 * Input: one Socket.IO packet string. When it decodes: the header is
 * re-encoded with sio_encode_header, the payload bytes appended, and the
 * result must decode to the same type, attachments, namespace, ack id and
 * payload (same printed JSON tree). For EVENT packets sio_skip_first_element
 * must succeed (the first element is a string or a number by then), and the
 * placeholders of binary packets must be countable. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.c"
#include "common/xalloc.c"
#include "gateway/sio_packet.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* exact-size copy: ASan sees any read past the end */
    char *in = xmalloc(size ? size : 1);
    if (size)
        memcpy(in, data, size);
    sio_packet p;
    int rc = sio_decode(in, size, &p);
    if (rc > 0 || rc < SIO_ERR_PAYLOAD)
        abort();
    if (rc != SIO_OK) {
        if (p.json)
            abort(); /* nothing to clear on error */
        free(in);
        return 0;
    }
    if (p.type > SIO_BINARY_ACK || p.nsp_len < 1 || p.nsp[0] != '/' || p.data_len > size)
        abort();
    if (p.attachments < 0 || p.attachments > SIO_MAX_ATTACHMENTS)
        abort();
    if (p.data_len && !p.json)
        abort();

    if (p.type == SIO_EVENT || p.type == SIO_BINARY_EVENT) {
        size_t after;
        if (sio_skip_first_element(p.data, p.data_len, &after) != 0 || after >= p.data_len ||
            (p.data[after] != ',' && p.data[after] != ']'))
            abort();
    }
    if ((p.type == SIO_BINARY_EVENT || p.type == SIO_BINARY_ACK) &&
        sio_count_placeholders(p.json, p.attachments) < 0)
        abort();

    /* round trip (a namespace with a NUL byte cannot be a C string: skip) */
    if (!memchr(p.nsp, '\0', p.nsp_len)) {
        char *nsp = xstrndup(p.nsp, p.nsp_len);
        buf_t b;
        buf_init(&b);
        sio_encode_header(&b, p.type, nsp, p.attachments, p.ack_id);
        buf_append(&b, p.data, p.data_len);
        sio_packet q;
        if (sio_decode(b.data, b.len, &q) != SIO_OK)
            abort();
        if (q.type != p.type || q.attachments != p.attachments || q.ack_id != p.ack_id ||
            q.nsp_len != p.nsp_len || memcmp(q.nsp, p.nsp, p.nsp_len) != 0 || q.data_len != p.data_len ||
            (p.data_len && memcmp(q.data, p.data, p.data_len) != 0))
            abort();
        if ((p.json == NULL) != (q.json == NULL))
            abort();
        if (p.json) {
            /* compare printed trees (cJSON_Compare is wrong for duplicate keys) */
            char *pa = cJSON_PrintUnformatted(p.json), *pb = cJSON_PrintUnformatted(q.json);
            if (!pa || !pb || strcmp(pa, pb) != 0)
                abort();
            cJSON_free(pa);
            cJSON_free(pb);
        }
        sio_packet_clear(&q);
        buf_free(&b);
        free(nsp);
    }
    sio_packet_clear(&p);
    free(in);
    return 0;
}
