// bench/ref-socketio.js — the Node reference for the protocol-engine scenarios: a stock
// socket.io 4.8 server with the same handlers as `chatd bench-server`.
//
//   CHATD_LISTEN=127.0.0.1:8090 node bench/ref-socketio.js
//
// Namespace /chat accepts any CONNECT whose auth has a non-empty `token`; `join {chatId}` joins
// that room and acks {ok:true}; `chat-message {chatId,…}` is broadcast unchanged to that room,
// sender included, only when the sender joined it. Engine.IO settings are socket.io's defaults
// (pingInterval 25000, pingTimeout 20000, maxHttpBufferSize 1e6, polling + websocket).
import { createServer } from 'node:http';
import { Server } from 'socket.io';

const listen = process.env.CHATD_LISTEN || '127.0.0.1:8090';
const i = listen.lastIndexOf(':');
const host = listen.slice(0, i) || '127.0.0.1';
const port = Number(listen.slice(i + 1));

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false });
const chat = io.of('/chat');

chat.use((socket, next) => {
  const t = socket.handshake.auth && socket.handshake.auth.token;
  if (typeof t === 'string' && t.length > 0) return next();
  const err = new Error('unauthorized');
  err.data = { code: 'token_missing' };
  next(err);
});

chat.on('connection', (socket) => {
  socket.on('join', (p, ack) => {
    const ok = p && typeof p.chatId === 'string' && p.chatId.length > 0;
    if (ok) socket.join(p.chatId);
    if (typeof ack === 'function') ack(ok ? { ok: true } : { ok: false, error: { code: 'bad_request', message: 'chatId' } });
  });
  socket.on('chat-message', (p, ack) => {
    const ok = p && typeof p.chatId === 'string' && socket.rooms.has(p.chatId);
    if (ok) chat.to(p.chatId).emit('chat-message', p);
    if (typeof ack === 'function') ack(ok ? { ok: true } : { ok: false, error: { code: 'forbidden', message: 'not joined' } });
  });
});

httpServer.listen(port, host, () => console.error(`ref-socketio: listening on ${host}:${port} (pid ${process.pid})`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
