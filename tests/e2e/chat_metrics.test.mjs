// GET /metrics (Prometheus text exposition; the list is in README "Commands"): every
// sample is announced by a `# TYPE` line; the counters move by exactly what
// happened (a stored message counts once, its retry not at all; a refused
// CONNECT is not a connect); what one node publishes is what the other node
// counts in, and a node never counts its own publications coming back; the
// gauges follow sessions, the pool and the spread of appends.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, chat, connectError, uid, closeDb, waitUntil } from "./chatlib.mjs";

let A, B;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([startChatd("metrics-a", {
    CHATD_PG_POOL: "3",
    // short pings: the Engine.IO session of the start-up probe (a bare polling handshake) times
    // out in 2 s, so the session gauge can be awaited at 0
    CHATD_PING_INTERVAL_MS: "1000",
    CHATD_PING_TIMEOUT_MS: "1000",
  }), startChatd("metrics-b")]);
});
after(async () => {
  closeAll();
  await closeDb();
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const opts = { skip: SKIP_REASON, timeout: 60000 };

/** GETs url/metrics and parses it; asserts the exposition format on the way. */
async function metrics(url) {
  const res = await fetch(url + "/metrics");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/plain; version=0.0.4");
  const text = await res.text();
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const types = new Map();
  const values = new Map();
  for (const line of text.slice(0, -1).split("\n")) {
    const t = /^# TYPE ([a-z_]+) (counter|gauge)$/.exec(line);
    if (t) {
      assert.ok(!types.has(t[1]), `${t[1]} announced twice`);
      types.set(t[1], t[2]);
      continue;
    }
    const s = /^([a-z_]+) (-?\d+)$/.exec(line);
    assert.ok(s, `not a sample line: ${JSON.stringify(line)}`);
    assert.ok(types.has(s[1]), `${s[1]} has no # TYPE line before it`);
    assert.ok(!values.has(s[1]), `${s[1]} sampled twice`);
    assert.equal(types.get(s[1]) === "counter", s[1].endsWith("_total"), `${s[1]}: counters and only counters end in _total`);
    values.set(s[1], Number(s[2]));
  }
  assert.deepEqual([...types.keys()].sort(), [...values.keys()].sort(), "every announced metric is sampled");
  return Object.fromEntries(values);
}

const delta = (now, then, name) => now[name] - then[name];

test("/metrics: counters move by exactly what happened, across two nodes; gauges follow sessions and the pool", opts, async () => {
  const names = [
    "chatd_engineio_sessions", "chatd_chat_connects_total", "chatd_chat_messages_total",
    "chatd_room_broadcasts_total", "chatd_fanout_in_total", "chatd_fanout_out_total",
    "chatd_pg_connections_ready", "chatd_pg_queries_total", "chatd_pg_errors_total",
    "chatd_pg_spread", "chatd_redis_ready",
  ];
  // the pool of 3 connects in the background; an idle node spreads appends over one
  const a0 = await waitUntil(async () => {
    const m = await metrics(A.url);
    return m.chatd_pg_connections_ready === 3 && m.chatd_redis_ready === 1 && m.chatd_engineio_sessions === 0 ? m : null;
  }, 10000, "node A's 3 PostgreSQL connections, Redis, and no Engine.IO session");
  assert.deepEqual(Object.keys(a0).sort(), [...names].sort());
  assert.equal(a0.chatd_pg_spread, 1);
  const b0 = await waitUntil(async () => {
    const m = await metrics(B.url);
    return m.chatd_pg_connections_ready === 4 && m.chatd_redis_ready === 1 ? m : null;
  }, 10000, "node B's 4 PostgreSQL connections (the default pool) and Redis");

  const org = newOrg();
  const bad = await connectError(A.url, { token: "not-a-jwt" });
  assert.equal(bad?.data?.code, "token_invalid");
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const m1 = await metrics(A.url);
  assert.equal(m1.chatd_engineio_sessions, 1, "the refused socket is gone, the customer's is open");
  assert.equal(delta(m1, a0, "chatd_chat_connects_total"), 1, "a refused CONNECT is not a connect");

  const first = await s.sendOk(null, "one", uid("c-"));
  const cid = uid("c-");
  const second = await s.sendOk(first.chatId, "two", cid);
  await s.sendOk(first.chatId, "three", uid("c-"));
  const retry = await s.sendOk(first.chatId, "two", cid); // a retried clientId: the stored original
  assert.equal(retry.id, second.id);

  const a1 = await metrics(A.url);
  assert.equal(delta(a1, a0, "chatd_chat_messages_total"), 3, "three stored messages; the retry is not one");
  assert.ok(delta(a1, a0, "chatd_pg_queries_total") >= 5, "connect lookup + 4 appends at least");
  assert.equal(delta(a1, a0, "chatd_pg_errors_total"), 0);
  assert.ok(delta(a1, a0, "chatd_room_broadcasts_total") >= 3, "each stored message went to the chat room");
  const published = delta(a1, a0, "chatd_fanout_out_total");
  assert.ok(published >= 3, `each stored message is published for other nodes (${published})`);
  assert.equal(delta(a1, a0, "chatd_fanout_in_total"), 0, "a node never counts its own publications coming back");
  assert.equal(a1.chatd_pg_spread, 1, "four appends, one at a time, need one connection");

  // node B has no sockets and publishes nothing: it counts in exactly what A sent out
  const b1 = await waitUntil(async () => {
    const m = await metrics(B.url);
    return delta(m, b0, "chatd_fanout_in_total") >= published ? m : null;
  }, 10000, `node B counting ${published} publications in`);
  assert.equal(delta(b1, b0, "chatd_fanout_in_total"), published);
  assert.equal(delta(b1, b0, "chatd_fanout_out_total"), 0);
  assert.equal(delta(b1, b0, "chatd_chat_messages_total"), 0, "messages count where they were stored");

  s.close();
  await waitUntil(async () => (await metrics(A.url)).chatd_engineio_sessions === 0, 10000, "node A's session count back to 0");
});
