// bench/ref-pg-redis.js — the Node reference for the persisted scenario, built the way a Node team
// would build chatd's message path: socket.io 4.8 + @socket.io/redis-adapter + pg.
//
//   CHATD_LISTEN=127.0.0.1:8091 CHATD_REDIS_URL=redis://… CHATD_DATABASE_URL=postgresql://… \
//   CHATD_JWT_SECRET=… node bench/ref-pg-redis.js
//
// Namespace /chat, auth {token} = HS256 JWT (sub, org, typ), checked with CHATD_JWT_SECRET (when unset,
// the claims are read unverified, and a non-JWT token is a customer named by the token).
//   chat-message {chatId?, clientId, text} (customer): without chatId opens (or reuses) the
//     customer's open chat and joins its room; in one transaction allocates the chat's next seq
//     (UPDATE … RETURNING, row lock, gap-free) and inserts the message, unique (chat_id, client_id):
//     a retry returns the original. Then acks {ok, message} and broadcasts chat-message to the room
//     through the Redis adapter. A failed commit answers {ok:false, error:{code:"unavailable"}}.
//   observe-chat {chatId} (agent of the same org): joins the chat's room, acks {ok:true}.
// Tables live in schema `noderef` (created at start), apart from chatd's own.
import { createServer } from 'node:http';
import { createHmac } from 'node:crypto';
import { Server } from 'socket.io';
import { createAdapter } from '@socket.io/redis-adapter';
import { createClient } from 'redis';
import pg from 'pg';

const listen = process.env.CHATD_LISTEN || '127.0.0.1:8091';
const i = listen.lastIndexOf(':');
const host = listen.slice(0, i) || '127.0.0.1';
const port = Number(listen.slice(i + 1));
const redisUrl = process.env.CHATD_REDIS_URL || 'redis://127.0.0.1:6379';
const dbUrl = process.env.CHATD_DATABASE_URL || 'postgresql://chatd@127.0.0.1:5432/chatd';
const secret = process.env.CHATD_JWT_SECRET || '';

const pool = new pg.Pool({ connectionString: dbUrl, max: Number(process.env.REF_PG_POOL || 10) });

await pool.query(`
  CREATE SCHEMA IF NOT EXISTS noderef;
  CREATE TABLE IF NOT EXISTS noderef.chats (
    id bigserial PRIMARY KEY,
    org text NOT NULL,
    customer_id text NOT NULL,
    status text NOT NULL DEFAULT 'open',
    last_seq bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now());
  CREATE UNIQUE INDEX IF NOT EXISTS chats_one_open ON noderef.chats (org, customer_id) WHERE status = 'open';
  CREATE TABLE IF NOT EXISTS noderef.messages (
    id bigserial PRIMARY KEY,
    chat_id bigint NOT NULL REFERENCES noderef.chats(id),
    seq bigint NOT NULL,
    client_id text NOT NULL,
    sender_type text NOT NULL,
    sender_id text NOT NULL,
    text text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chat_id, seq),
    UNIQUE (chat_id, client_id));`);

const pubClient = createClient({ url: redisUrl });
const subClient = pubClient.duplicate();
pubClient.on('error', (e) => console.error('redis pub:', e.message));
subClient.on('error', (e) => console.error('redis sub:', e.message));
await Promise.all([pubClient.connect(), subClient.connect()]);

const httpServer = createServer();
const io = new Server(httpServer, { serveClient: false, adapter: createAdapter(pubClient, subClient) });
const chat = io.of('/chat');

function claimsOf(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return secret ? null : { sub: token, org: 'bench', typ: 'customer' };
  if (secret) {
    const sig = createHmac('sha256', secret).update(`${parts[0]}.${parts[1]}`).digest('base64url');
    if (sig !== parts[2]) return null;
  }
  try {
    const c = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8'));
    if (typeof c.exp === 'number' && c.exp * 1000 < Date.now()) return null;
    if (!c.sub || !c.org || (c.typ !== 'customer' && c.typ !== 'agent')) return null;
    return c;
  } catch {
    return null;
  }
}

chat.use((socket, next) => {
  const t = socket.handshake.auth && socket.handshake.auth.token;
  const c = typeof t === 'string' && t ? claimsOf(t) : null;
  if (!c) {
    const err = new Error('unauthorized');
    err.data = { code: t ? 'token_invalid' : 'token_missing' };
    return next(err);
  }
  socket.data.user = c;
  next();
});

const fail = (code, message) => ({ ok: false, error: { code, message } });

async function openChat(user) {
  const r = await pool.query(
    `INSERT INTO noderef.chats (org, customer_id) VALUES ($1, $2)
     ON CONFLICT (org, customer_id) WHERE status = 'open' DO UPDATE SET status = EXCLUDED.status
     RETURNING id`, [user.org, user.sub]);
  return String(r.rows[0].id);
}

function toMessage(row, chatId) {
  return {
    id: String(row.id), chatId, seq: Number(row.seq), clientId: row.client_id,
    sender: { type: row.sender_type, id: row.sender_id }, text: row.text, attachments: [],
    createdAt: row.created_at.toISOString(),
  };
}

// One transaction: next seq under the chat row's lock, insert, commit. Returns [message, isNew].
async function persist(chatId, user, clientId, text) {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const s = await client.query(
      'UPDATE noderef.chats SET last_seq = last_seq + 1 WHERE id = $1 RETURNING last_seq', [chatId]);
    const ins = await client.query(
      `INSERT INTO noderef.messages (chat_id, seq, client_id, sender_type, sender_id, text)
       VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (chat_id, client_id) DO NOTHING
       RETURNING id, seq, client_id, sender_type, sender_id, text, created_at`,
      [chatId, s.rows[0].last_seq, clientId, user.typ, user.sub, text]);
    if (ins.rowCount === 0) {
      await client.query('ROLLBACK');
      const old = await client.query(
        `SELECT id, seq, client_id, sender_type, sender_id, text, created_at FROM noderef.messages
         WHERE chat_id = $1 AND client_id = $2`, [chatId, clientId]);
      return [toMessage(old.rows[0], chatId), false];
    }
    await client.query('COMMIT');
    return [toMessage(ins.rows[0], chatId), true];
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {});
    throw e;
  } finally {
    client.release();
  }
}

chat.on('connection', (socket) => {
  const user = socket.data.user;
  socket.data.chats = new Set();

  socket.on('chat-message', async (p, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (!p || typeof p.clientId !== 'string' || !p.clientId || typeof p.text !== 'string') {
      return reply(fail('bad_request', 'clientId and text required'));
    }
    try {
      let chatId = p.chatId;
      if (!chatId) {
        if (user.typ !== 'customer') return reply(fail('bad_request', 'chatId required'));
        chatId = await openChat(user);
        socket.data.chats.add(chatId);
        socket.join(`chat:${chatId}`);
      } else if (!socket.data.chats.has(String(chatId))) {
        const r = await pool.query('SELECT org, customer_id FROM noderef.chats WHERE id = $1', [chatId]);
        const row = r.rows[0];
        if (!row || row.org !== user.org || (user.typ === 'customer' && row.customer_id !== user.sub)) {
          return reply(fail('not_found', 'no such chat'));
        }
        chatId = String(chatId);
        socket.data.chats.add(chatId);
        socket.join(`chat:${chatId}`);
      }
      const [message, isNew] = await persist(chatId, user, p.clientId, p.text);
      reply({ ok: true, message });
      if (isNew) chat.to(`chat:${chatId}`).emit('chat-message', message);
    } catch (e) {
      reply(fail('unavailable', e.message));
    }
  });

  socket.on('observe-chat', async (p, ack) => {
    const reply = typeof ack === 'function' ? ack : () => {};
    if (user.typ !== 'agent') return reply(fail('forbidden', 'agents only'));
    if (!p || !p.chatId) return reply(fail('bad_request', 'chatId required'));
    try {
      const r = await pool.query('SELECT org FROM noderef.chats WHERE id = $1', [p.chatId]);
      if (!r.rows[0] || r.rows[0].org !== user.org) return reply(fail('not_found', 'no such chat'));
      socket.join(`chat:${p.chatId}`);
      reply({ ok: true });
    } catch (e) {
      reply(fail('unavailable', e.message));
    }
  });
});

httpServer.listen(port, host, () => console.error(`ref-pg-redis: listening on ${host}:${port} (pid ${process.pid})`));
for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => process.exit(0));
