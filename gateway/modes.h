/* The server modes main.c can start; each registers its endpoints/namespaces. */
#ifndef CHATD_MODES_H
#define CHATD_MODES_H
#include "gateway/eio.h"
#include "gateway/sio.h"

void mode_conformance_setup(eio_server *eio, sio_server **out);
void mode_bench_setup(eio_server *eio, sio_server **out);

#endif
