// Presence and timer footprint in Redis through a real chatd node (issue 4):
// N /chat sockets (default 10,000: N/20 agents with two tabs each, the rest
// customers with one tab — every agent's `online` goes to every agent tab, so
// a mass connect of agents costs agents^2 deliveries), then an inactivity timer pair (warn + close) for
// each customer's assigned chat, armed by one message per chat. Prints the
// keys and bytes of the org's keys (SCAN + MEMORY USAGE, exact per key) and
// the INFO memory used_memory delta of the whole server at each step, then
// checks that everything is removed again when the sockets close and the
// chats are closed. Not a test (not *.test.mjs); run by hand:
//
//   . /tmp/svc/env && CHATD_BIN=build/chatd node tests/e2e/presence_footprint.mjs [N]
//
// Uses raw Engine.IO/Socket.IO over `ws` (socket.io-client per socket would
// measure the client more than the server).
import { createRequire } from "node:module";
import { startChatd, newOrg, token, sql, closeDb, httpStatus, waitUntil, REDIS_URL } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const { createClient } = require("redis");

const N = Number(process.argv[2] || 10000);
const org = newOrg();
const redis = createClient({ url: REDIS_URL });
redis.on("error", () => {});
await redis.connect();

async function usedMemory() {
  const info = await redis.info("memory");
  return Number(/used_memory:(\d+)/.exec(info)[1]);
}

/** Keys of the org by type and their MEMORY USAGE sum. */
async function footprint() {
  const byType = {};
  let keys = 0, bytes = 0;
  for await (const batch of redis.scanIterator({ MATCH: `chat:{${org}}:*`, COUNT: 1000 })) {
    for (const k of Array.isArray(batch) ? batch : [batch]) {
      const kind = k.slice(`chat:{${org}}:`.length).split(":")[0];
      const b = await redis.memoryUsage(k, { SAMPLES: 0 });
      if (b == null) continue;
      byType[kind] = byType[kind] || { keys: 0, bytes: 0 };
      byType[kind].keys++;
      byType[kind].bytes += b;
      keys++;
      bytes += b;
    }
  }
  return { keys, bytes, byType };
}

/** One raw /chat socket: resolves with {ws, session} once `session` arrived. */
function open(url, tok) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
    const s = { ws, acks: new Map(), nextAck: 1 };
    ws.on("error", reject);
    ws.on("message", (buf) => {
      const m = buf.toString();
      if (m === "2") return ws.send("3");
      if (m[0] === "0") return ws.send(`40/chat,${JSON.stringify({ token: tok })}`);
      if (m.startsWith("44/chat,")) return reject(new Error(m));
      if (m.startsWith("42/chat,[\"session\"")) {
        s.session = JSON.parse(m.slice(8))[1];
        return resolve(s);
      }
      const a = /^43\/chat,(\d+)(\[.*)$/s.exec(m);
      if (a) {
        const cb = s.acks.get(Number(a[1]));
        s.acks.delete(Number(a[1]));
        if (cb) cb(JSON.parse(a[2])[0]);
      }
    });
  });
}

function emit(s, event, payload) {
  return new Promise((resolve) => {
    const id = s.nextAck++;
    s.acks.set(id, resolve);
    s.ws.send(`42/chat,${id}${JSON.stringify([event, payload])}`);
  });
}

async function inBatches(items, size, fn) {
  const out = [];
  for (let i = 0; i < items.length; i += size) out.push(...(await Promise.all(items.slice(i, i + size).map(fn))));
  return out;
}

const node = await startChatd("footprint", { CHATD_RATE_CONN_PER_S: "1000000", CHATD_LOG: "warn" });
try {
  await waitUntil(async () => (await httpStatus(node.url, "/readyz")) === 200, 10000, "readyz");
  const nAgents = Math.floor(N / 20), nCust = N - 2 * nAgents;
  const chats = await sql(
    `INSERT INTO chats (org_id, status, customer_key, customer_id, agent_id, agent_name, assigned_at)
     SELECT $1, 'assigned', 'cust-' || i, 'cust-' || i, 'agent-' || (i % $3), 'Agent', now()
       FROM generate_series(0, $2 - 1) i RETURNING id, customer_key`,
    [org, nCust, Math.max(nAgents, 1)],
  );
  const mem0 = await usedMemory();
  const t0 = Date.now();
  const toks = [];
  for (let i = 0; i < nAgents; i++) {
    const t = token({ org, typ: "agent", sub: `agent-${i}`, name: `Agent ${i}` });
    toks.push(t, t);
  }
  for (let i = 0; i < nCust; i++) toks.push(token({ org, typ: "customer", sub: `cust-${i}`, name: `Customer ${i}` }));
  const socks = await inBatches(toks, 250, (t) => open(node.url, t));
  const connectMs = Date.now() - t0;
  await waitUntil(async () => (await redis.hLen(`chat:{${org}}:sockident`)) === N, 30000, `${N} sockets registered`);
  const p = await footprint();
  const mem1 = await usedMemory();
  const rss = Number(/VmRSS:\s+(\d+)/.exec(require("node:fs").readFileSync(`/proc/${node.pid}/status`, "utf8"))[1]) * 1024;
  console.log(JSON.stringify({ step: "presence", sockets: N, agents: nAgents, agentTabs: 2, customers: nCust, connectMs, keys: p.keys, keysPerSocket: +(p.keys / N).toFixed(3), bytes: p.bytes, bytesPerSocket: Math.round(p.bytes / N), usedMemoryDelta: mem1 - mem0, usedMemoryPerSocket: Math.round((mem1 - mem0) / N), byType: p.byType, chatdRssBytes: rss }));

  // One message per customer chat arms its warn + close timers.
  const custSocks = socks.slice(2 * nAgents);
  const byKey = new Map(chats.map((c) => [c.customer_key, c.id]));
  const t1 = Date.now();
  const acks = await inBatches(custSocks, 500, (s) => emit(s, "chat-message", { chatId: byKey.get(s.session.identity.id), clientId: "fp-1", text: "hello" }));
  const bad = acks.filter((a) => !a || a.ok !== true);
  if (bad.length) throw new Error(`${bad.length} messages failed: ${JSON.stringify(bad[0])}`);
  await waitUntil(async () => (await redis.zCard(`chat:{${org}}:timers`)) === 2 * nCust, 30000, "timers armed");
  const armMs = Date.now() - t1;
  const q = await footprint();
  const mem2 = await usedMemory();
  console.log(JSON.stringify({ step: "timers", chats: nCust, timersPerChat: 2, armMs, keys: q.keys - p.keys, keysPerChat: +((q.keys - p.keys) / nCust).toFixed(3), bytes: q.bytes - p.bytes, bytesPerChat: Math.round((q.bytes - p.bytes) / nCust), usedMemoryDelta: mem2 - mem1, usedMemoryPerChat: Math.round((mem2 - mem1) / nCust), byType: q.byType }));

  // Everything goes away again: sockets closed, chats closed by the customers.
  await inBatches(custSocks, 500, (s) => emit(s, "close-chat", { chatId: byKey.get(s.session.identity.id) }));
  for (const s of socks) s.ws.close();
  await waitUntil(async () => (await redis.hLen(`chat:{${org}}:sockident`)) === 0, 30000, "sockets removed");
  await waitUntil(async () => (await redis.zCard(`chat:{${org}}:timers`)) === 0, 30000, "timers stopped");
  const r = await footprint();
  console.log(JSON.stringify({ step: "after close", keys: r.keys, bytes: r.bytes, byType: r.byType }));
} catch (e) {
  console.error(e);
  console.error(node.output().slice(-3000));
  process.exitCode = 1;
} finally {
  await node.stop();
  await closeDb();
  await redis.quit().catch(() => {});
}
