// Presence end to end (issue 4, SPEC §4 set-status / presence, §7, §12.10,
// §12.15) on two chatd nodes sharing the test Redis and PostgreSQL, with the
// real socket.io-client:
//   - an agent with three tabs on two nodes is online until its last tab
//     closes, then offline; another agent sees exactly one `presence` per change;
//   - set-status away/online, a new tab does not reset away, role and payload checks;
//   - kill -9 of a node: its agents turn offline within the socket TTL
//     (pingInterval + pingTimeout), seen from the other node, while an agent
//     with a tab on the surviving node stays online.
//
// "Nothing more arrived" is never a sleep: after the steps under test, marker
// agents connect on each node; their `online` events travel the same paths
// (each node's Redis connection, then pub/sub), so any extra event caused by the
// earlier steps would have arrived before the markers.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, REDIS_URL, startChatd, newOrg, person, chat, uid, httpStatus, waitUntil } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const PING = { CHATD_PING_INTERVAL_MS: "1000", CHATD_PING_TIMEOUT_MS: "1000" }; // socket TTL 2 s
const TTL_MS = 2000;

let A, B, redis;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([startChatd("pres-a", PING), startChatd("pres-b", PING)]);
  await Promise.all([A, B].map((n) => waitUntil(async () => (await httpStatus(n.url, "/readyz")) === 200, 10000, "readyz")));
  const { createClient } = require("redis");
  redis = createClient({ url: REDIS_URL });
  redis.on("error", () => {});
  await redis.connect();
});
after(async () => {
  closeAll();
  if (redis) await redis.quit().catch(() => {});
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const presences = (cs, id) => cs.events("presence").filter((p) => p.identity?.id === id);
const key = (org, suffix) => `chat:{${org}}:${suffix}`;

/** Connects a fresh agent on each node and waits until `observer` saw both come online. */
async function markers(org, observer) {
  const ids = [];
  for (const node of [A, B]) {
    const m = person(org, "agent", { sub: uid("marker-") });
    await chat(node.url, { token: m.token });
    ids.push(m.sub);
  }
  for (const id of ids) await observer.waitEvent("presence", (p) => p.identity.id === id && p.status === "online");
}

test("an agent with three tabs on two nodes is online until the last tab closes; others see one presence per change", { skip: SKIP_REASON, timeout: 60000 }, async () => {
  const org = newOrg();
  const obs = await chat(B.url, { token: person(org, "agent").token });
  const x = person(org, "agent", { name: "Xena" });

  const tab1 = await chat(A.url, { token: x.token });
  const online = await obs.waitEvent("presence", (p) => p.identity.id === x.sub);
  assert.deepEqual(online, { identity: { type: "agent", id: x.sub }, status: "online" });
  const tab2 = await chat(B.url, { token: x.token });
  const tab3 = await chat(A.url, { token: x.token, orgId: org }, { transports: ["polling"] });
  await markers(org, obs);
  assert.deepEqual(presences(obs, x.sub), [online], "one online event for three tabs");
  // Redis: three sockets in the identity set, status online, three socket keys with a TTL.
  const sids = (await redis.sMembers(key(org, `ident:agent:${x.sub}`))).sort();
  assert.deepEqual(sids, [tab1.id, tab2.id, tab3.id].sort());
  assert.equal(await redis.hGet(key(org, "status"), `agent:${x.sub}`), "online");
  for (const sid of sids) {
    const ttl = await redis.pTTL(key(org, `sock:${sid}`));
    assert.ok(ttl > 0 && ttl <= TTL_MS, `socket key TTL ${ttl}`);
  }

  // Closing two of three tabs (one per node) changes nothing.
  tab1.close();
  tab2.close();
  await waitUntil(async () => (await redis.sCard(key(org, `ident:agent:${x.sub}`))) === 1, 5000, "two sockets removed");
  await markers(org, obs);
  assert.deepEqual(presences(obs, x.sub), [online]);
  assert.equal(await redis.hGet(key(org, "status"), `agent:${x.sub}`), "online");

  // The last tab: offline, once.
  tab3.close();
  const off = await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "offline");
  assert.deepEqual(off, { identity: { type: "agent", id: x.sub }, status: "offline" });
  await markers(org, obs);
  assert.deepEqual(presences(obs, x.sub), [online, off]);
  assert.equal(await redis.exists(key(org, `ident:agent:${x.sub}`)), 0);
  assert.equal(await redis.hGet(key(org, "status"), `agent:${x.sub}`), null);
  for (const sid of sids) assert.equal(await redis.exists(key(org, `sock:${sid}`)), 0);
  assert.deepEqual(await redis.hmGet(key(org, "sockident"), sids), sids.map(() => null));

  // Coming back: online again (a connected agent starts online).
  const from = obs.log.length;
  await chat(B.url, { token: x.token });
  await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "online", 5000, from);
  assert.equal(presences(obs, x.sub).length, 3);
});

test("set-status away/online: one event per change, a new tab does not reset away, only agents, only online|away", { skip: SKIP_REASON, timeout: 60000 }, async () => {
  const org = newOrg();
  const obs = await chat(A.url, { token: person(org, "agent").token });
  const x = person(org, "agent");
  const tab1 = await chat(A.url, { token: x.token });
  await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "online");

  assert.deepEqual(await tab1.ack("set-status", { status: "away" }), { ok: true, status: "away" });
  const away = await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "away");
  assert.deepEqual(away, { identity: { type: "agent", id: x.sub }, status: "away" });
  // The agent's own tabs are in agents:{org} too.
  await tab1.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "away");

  // A new tab on the other node keeps away; away again is not a change.
  const tab2 = await chat(B.url, { token: x.token });
  await waitUntil(async () => (await redis.sCard(key(org, `ident:agent:${x.sub}`))) === 2, 5000, "second tab registered");
  assert.equal(await redis.hGet(key(org, "status"), `agent:${x.sub}`), "away");
  assert.deepEqual(await tab2.ack("set-status", { status: "away" }), { ok: true, status: "away" });
  await markers(org, obs);
  assert.deepEqual(presences(obs, x.sub).map((p) => p.status), ["online", "away"]);

  // Back online from the second tab: one event, seen on both nodes.
  assert.deepEqual(await tab2.ack("set-status", { status: "online" }), { ok: true, status: "online" });
  await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "online", 5000, obs.log.indexOf(obs.log.find((e) => e.data === away)) + 1);
  await tab1.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "online", 5000, tab1.log.findIndex((e) => e.event === "presence" && e.data.status === "away") + 1);
  await markers(org, obs);
  assert.deepEqual(presences(obs, x.sub).map((p) => p.status), ["online", "away", "online"]);

  // Bad payloads and roles.
  for (const bad of [{}, { status: "offline" }, { status: 1 }, { status: "AWAY" }]) {
    const r = await tab1.ack("set-status", bad);
    assert.equal(r.ok, false, JSON.stringify(bad));
    assert.equal(r.error.code, "bad_request", JSON.stringify(r));
  }
  const cust = await chat(A.url, { token: person(org, "customer").token });
  const r = await cust.ack("set-status", { status: "away" });
  assert.equal(r.ok, false);
  assert.equal(r.error.code, "forbidden");
  assert.equal(cust.events("presence").length, 0, "customers are not in agents:{org}");
  // Customers are tracked too (no events): their socket is registered.
  assert.equal(Number(await redis.sIsMember(key(org, `ident:customer:${cust.session.identity.id}`), cust.id)), 1);
  assert.equal(await redis.hGet(key(org, "status"), `customer:${cust.session.identity.id}`), "online");
});

test("kill -9 of a node: its agents turn offline within the socket TTL, seen from the other node; an agent with a tab elsewhere stays online", { skip: SKIP_REASON, timeout: 60000 }, async (t) => {
  const org = newOrg();
  const C = await startChatd("pres-victim", PING);
  try {
    await waitUntil(async () => (await httpStatus(C.url, "/readyz")) === 200, 10000, "readyz");
    const obs = await chat(B.url, { token: person(org, "agent").token });
    const x = person(org, "agent"); // two tabs, both on the victim
    const y = person(org, "agent"); // one tab on the victim, one on B
    const c1 = person(org, "customer");
    await chat(C.url, { token: x.token });
    await chat(C.url, { token: x.token }, { transports: ["polling"] });
    const yC = await chat(C.url, { token: y.token });
    await chat(B.url, { token: y.token });
    const cust = await chat(C.url, { token: c1.token });
    for (const id of [x.sub, y.sub]) await obs.waitEvent("presence", (p) => p.identity.id === id && p.status === "online");
    await waitUntil(async () => (await redis.sCard(key(org, `ident:agent:${y.sub}`))) === 2, 5000, "y registered twice");
    await waitUntil(async () => (await redis.sCard(key(org, `ident:customer:${c1.sub}`))) === 1, 5000, "customer registered");

    const yCid = yC.id;
    const killedAt = Date.now();
    await C.stop("SIGKILL");
    const off = await obs.waitEvent("presence", (p) => p.identity.id === x.sub && p.status === "offline", TTL_MS + 4000);
    const took = Date.now() - killedAt;
    assert.deepEqual(off, { identity: { type: "agent", id: x.sub }, status: "offline" });
    t.diagnostic(`offline seen ${took} ms after kill -9 (socket TTL ${TTL_MS} ms)`);
    // The key expires at most TTL after the kill; the reconciler (every pingInterval here)
    // notices it even when Redis's expired event is late.
    assert.ok(took <= TTL_MS + 1000 + 1000, `offline ${took} ms after kill -9 (TTL ${TTL_MS} ms)`);

    // y lost its victim tab only; the customer is gone too (no event for customers).
    await waitUntil(async () => (await redis.sCard(key(org, `ident:agent:${y.sub}`))) === 1, TTL_MS + 4000, "y's victim tab cleaned up");
    assert.equal(Number(await redis.sIsMember(key(org, `ident:agent:${y.sub}`), yCid)), 0);
    await waitUntil(async () => (await redis.exists(key(org, `ident:customer:${c1.sub}`))) === 0, TTL_MS + 4000, "customer cleaned up");
    assert.equal(await redis.hGet(key(org, "status"), `customer:${c1.sub}`), null);
    assert.equal(await redis.hGet(key(org, "status"), `agent:${y.sub}`), "online");
    assert.equal(await redis.exists(key(org, `ident:agent:${x.sub}`)), 0);
    assert.equal(await redis.hGet(key(org, "status"), `agent:${x.sub}`), null);
    await markers(org, obs);
    assert.deepEqual(presences(obs, x.sub).map((p) => p.status), ["online", "offline"], "offline exactly once");
    assert.deepEqual(presences(obs, y.sub).map((p) => p.status), ["online"]);
    assert.ok(cust, "customer socket was connected");
  } finally {
    await C.stop("SIGKILL");
  }
});
