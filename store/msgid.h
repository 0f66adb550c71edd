/* Time-ordered message ids: UUID version 7 (RFC 9562), text form, 36 characters.
 *
 * PostgreSQL's messages primary key is a B-tree on the id: random UUIDs land on random leaf
 * pages, time-ordered ones at the right edge (one hot page, the B-tree's fast path). Within a
 * process ids are strictly increasing (a 12-bit counter within a millisecond, RFC 9562 method 1);
 * across processes 62 random bits keep them apart. Pure: the caller supplies clock and seed. */
#ifndef CHATD_STORE_MSGID_H
#define CHATD_STORE_MSGID_H

#include <stdint.h>

typedef struct msgid_gen {
    uint64_t last_ms;  /* millisecond of the last id (never goes back) */
    uint32_t counter;  /* 12-bit sequence within last_ms */
    uint64_t rng;      /* splitmix64 state */
} msgid_gen;

#define MSGID_LEN 36

void msgid_init(msgid_gen *g, uint64_t seed);
/* Writes the next id (MSGID_LEN characters and a NUL) for the wall-clock time now_ms. */
void msgid_next(msgid_gen *g, uint64_t now_ms, char out[MSGID_LEN + 1]);

#endif
