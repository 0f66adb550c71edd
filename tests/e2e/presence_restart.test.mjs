// Inactivity timers with every node down (issue 4, SPEC §7): the timer key
// of an assigned chat expires while no chatd node runs, so its keyspace
// notification reaches nobody; the first node(s) to start fire it through the
// reconciler and close the chat, exactly once (two nodes start together).
// Also: sockets of a node that stopped without cleaning up (kill -9 while no
// other node runs) are swept and their identity goes offline when a node starts;
// Redis restarted without its data: sockets are registered again and the
// timers of assigned chats are re-armed from PostgreSQL.
import { test, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, REDIS_URL, SERVICES_DIR, startChatd, newOrg, person, chat, sql, closeDb, httpStatus, waitUntil, services } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const ENV = { CHATD_INACTIVITY_WARN_S: "2", CHATD_INACTIVITY_CLOSE_S: "4", CHATD_PING_INTERVAL_MS: "1000", CHATD_PING_TIMEOUT_MS: "1000" };

const nodes = [];
let redis;
async function node(name) {
  const n = await startChatd(name, ENV);
  nodes.push(n);
  await waitUntil(async () => (await httpStatus(n.url, "/readyz")) === 200, 10000, "readyz");
  return n;
}
async function redisClient() {
  if (!redis) {
    const { createClient } = require("redis");
    redis = createClient({ url: REDIS_URL });
    redis.on("error", () => {});
    await redis.connect();
  }
  return redis;
}
after(async () => {
  closeAll();
  await closeDb();
  if (redis) await redis.quit().catch(() => {});
  // the nodes still running stop gracefully (a sanitizer report fails the run)
  await Promise.all(nodes.filter((n) => n.child.exitCode === null && n.child.signalCode === null).map((n) => n.stop()));
});
afterEach(() => closeAll());

test("every node stopped while a timer expires: the first nodes to start close the chat, once", { skip: SKIP_REASON, timeout: 60000 }, async (t) => {
  const r = await redisClient();
  const org = newOrg();
  const [n1, n2] = await Promise.all([node("rs-1"), node("rs-2")]);
  const cust = person(org, "customer");
  const agent = person(org, "agent", { name: "Ann" });
  const ctab = await chat(n1.url, { token: cust.token });
  const open = await ctab.send(null, "hello");
  const chatId = open.message.chatId;
  await sql("UPDATE chats SET status = 'assigned', agent_id = $2, agent_name = $3, assigned_at = now() WHERE id = $1", [chatId, agent.sub, agent.name]);
  assert.equal((await ctab.send(chatId, "are you there?")).ok, true); // arms warn (2 s) and close (4 s)
  const closeKey = `chat:{${org}}:timer:close:${chatId}`;
  await waitUntil(async () => (await r.pTTL(closeKey)) > 0, 5000, "close timer armed"); // armed right after the ack

  // Every node goes away (graceful stop: no leak, no sanitizer report).
  ctab.close();
  await Promise.all([n1.stop(), n2.stop()]);
  // The close deadline passes with nobody listening: the key is gone, the claim token is left.
  await waitUntil(async () => (await r.pTTL(closeKey)) === -2, 8000, "close timer key expired");
  assert.notEqual(await r.zScore(`chat:{${org}}:timers`, `close:${chatId}`), null, "nobody claimed the close");
  assert.equal((await sql("SELECT status FROM chats WHERE id = $1", [chatId]))[0].status, "assigned");

  // Two nodes start together; one of them closes the chat.
  const started = Date.now();
  const [n3, n4] = await Promise.all([node("rs-3"), node("rs-4")]);
  await waitUntil(async () => (await sql("SELECT status FROM chats WHERE id = $1", [chatId]))[0].status === "closed", 10000, "chat closed by a restarted node");
  t.diagnostic(`closed ${Date.now() - started} ms after the nodes were started`);
  const [row] = await sql("SELECT close_reason FROM chats WHERE id = $1", [chatId]);
  assert.equal(row.close_reason, "inactivity");
  const closes = await sql("SELECT text FROM messages WHERE chat_id = $1 AND sender_type = 'system' AND text = 'The chat was closed for inactivity'", [chatId]);
  assert.equal(closes.length, 1);
  const ev = await sql("SELECT actor_type FROM chat_events WHERE chat_id = $1 AND type = 'closed'", [chatId]);
  assert.deepEqual(ev, [{ actor_type: "system" }]);
  // (a node's re-arm from PostgreSQL may land just after the other node's close: it fires and claims too)
  await waitUntil(async () => (await r.zScore(`chat:{${org}}:timers`, `close:${chatId}`)) === null, 5000, "close claimed");
  assert.equal(await r.zScore(`chat:{${org}}:timers`, `warn:${chatId}`), null);
  // No warning posted after the restart: the close was due as well.
  const warns = await sql("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1 AND text LIKE '%will be closed for inactivity%'", [chatId]);
  assert.ok(warns[0].n <= 1);
  await Promise.all([n3.stop(), n4.stop()]); // the next test needs every node down again
});

test("a node killed while it was the only one: a node started later sweeps its sockets and the agent goes offline", { skip: SKIP_REASON, timeout: 60000 }, async () => {
  const r = await redisClient();
  const org = newOrg();
  const n1 = await node("rs-victim");
  const x = person(org, "agent");
  const tab = await chat(n1.url, { token: x.token });
  const sid = tab.id;
  await waitUntil(async () => Number(await r.sIsMember(`chat:{${org}}:ident:agent:${x.sub}`, sid)) === 1, 5000, "registered");
  await n1.stop("SIGKILL");
  // Its socket key expires with nobody subscribed: the identity is left online in Redis.
  await waitUntil(async () => (await r.pTTL(`chat:{${org}}:sock:${sid}`)) === -2, 8000, "socket key expired");
  assert.equal(await r.hGet(`chat:{${org}}:status`, `agent:${x.sub}`), "online");
  // A node starts; an agent connected to it sees x go offline (reconciler sweep).
  const n2 = await node("rs-later");
  const obs = await chat(n2.url, { token: person(org, "agent").token });
  await waitUntil(async () => (await r.hGet(`chat:{${org}}:status`, `agent:${x.sub}`)) === null, 10000, "x swept");
  assert.equal(await r.exists(`chat:{${org}}:ident:agent:${x.sub}`), 0);
  assert.equal(await r.hGet(`chat:{${org}}:sockident`, sid), null);
  assert.ok(obs.connected);
});

test("Redis restarted without its data: sockets are registered again, assigned chats' timers re-armed from PostgreSQL", { skip: SKIP_REASON || (!SERVICES_DIR && "TEST_SERVICES_DIR unset"), timeout: 60000 }, async () => {
  const org = newOrg();
  const n = await node("rs-redis");
  const x = person(org, "agent");
  const xtab = await chat(n.url, { token: x.token });
  const cust = person(org, "customer");
  const ctab = await chat(n.url, { token: cust.token });
  const open = await ctab.send(null, "hello");
  const chatId = open.message.chatId;
  await sql("UPDATE chats SET status = 'assigned', agent_id = $2, agent_name = 'X', assigned_at = now() WHERE id = $1", [chatId, x.sub]);
  assert.equal((await ctab.send(chatId, "still there?")).ok, true);
  const t0 = Date.now();
  if (redis) {
    await redis.quit().catch(() => {});
    redis = undefined;
  }
  await services("stop-redis");
  await services("start-redis");
  const r = await redisClient();
  assert.equal(await r.exists(`chat:{${org}}:sockident`), 0, "Redis came back empty");
  // The node notices Redis is back: its sockets are registered again ...
  await waitUntil(async () => Number(await r.sIsMember(`chat:{${org}}:ident:agent:${x.sub}`, xtab.id)) === 1, 10000, "agent socket registered again");
  assert.equal(await r.hGet(`chat:{${org}}:status`, `agent:${x.sub}`), "online");
  assert.equal(await r.hGet(`chat:{${org}}:sockident`, ctab.id), `customer:${cust.sub}`);
  // ... and the chat's timers are back, with the deadline of the last message: it closes.
  const closed = await ctab.waitFor((e) => e.event === "chat-closed" && e.data.chatId === chatId, 15000, "chat-closed after the Redis restart");
  assert.equal(closed.data.reason, "inactivity");
  assert.ok(closed.at - t0 >= 4000 - 150, `closed ${closed.at - t0} ms after the last message`);
  await xtab.waitEvent("chat-closed", (d) => d.chatId === chatId);
  const [row] = await sql("SELECT status, close_reason FROM chats WHERE id = $1", [chatId]);
  assert.deepEqual(row, { status: "closed", close_reason: "inactivity" });
});
