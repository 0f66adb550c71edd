// /chat under PostgreSQL and Redis outages (issue 3, SPEC §6, §11): with
// PostgreSQL stopped, sends answer `unavailable`, nothing is broadcast or
// stored and /readyz answers 503; with Redis stopped, /readyz answers 503 but
// messages still persist and reach sockets on the sender's node. After a
// restart on the same port chatd recovers by itself (no chatd restart): sends
// succeed, /readyz is 200 and cross-node fan-out works again (and every
// socket's stream is gap-free again). Open sockets stay connected throughout.
// Also: sends in flight when PostgreSQL stops; a chat opened while Redis is down
// reaching the customer's tab on the other node afterwards; a chat row locked
// by another transaction (statement timeout, isolation from other chats).
//
// Stops and starts the test services with tests/services.sh (TEST_SERVICES_DIR,
// set by tests/run.sh); every test restarts what it stopped even when it fails.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, SERVICES_DIR, DB_URL, REDIS_URL, startChatd, newOrg, person, chat, uid, rest, sql, closeDb, services, httpStatus, waitUntil } from "./chatlib.mjs";

const SKIP = SKIP_REASON || (!SERVICES_DIR && "TEST_SERVICES_DIR unset: the fault tests stop and start the services of tests/services.sh");
const seqs = (msgs) => msgs.map((m) => m.seq);

let A, B;
before(async () => {
  if (SKIP) return;
  [A, B] = await Promise.all([startChatd("faults-a"), startChatd("faults-b")]);
});
after(async () => {
  closeAll();
  await closeDb();
  if (!SKIP) {
    // whatever happened, leave both services running for the next test file
    await services("start-pg").catch(() => {});
    await services("start-redis").catch(() => {});
  }
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const opts = { skip: SKIP, timeout: 120000 };

const readyIs = (code) => async () => (await httpStatus(A.url, "/readyz")) === code && (await httpStatus(B.url, "/readyz")) === code;

async function setup() {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent");
  const tab1 = await chat(A.url, { token: cust.token }, { transports: ["polling"] });
  const tab2 = await chat(A.url, { token: cust.token }, { transports: ["websocket"] });
  const tabB = await chat(B.url, { token: cust.token });
  const ag = await chat(B.url, { token: agent.token });
  const m1 = await tab1.sendOk(null, "before", uid());
  const chatId = m1.chatId;
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
  const m2 = await tab2.sendOk(chatId, "before 2", uid());
  for (const s of [tab1, tab2, tabB, ag]) await s.waitMessage(chatId, m2.seq);
  assert.equal(await httpStatus(A.url, "/readyz"), 200);
  assert.equal(await httpStatus(B.url, "/readyz"), 200);
  return { org, cust, agent, tab1, tab2, tabB, ag, chatId, m1, m2 };
}

test("PostgreSQL down: sends answer unavailable and nothing is broadcast, /readyz 503; after it restarts chatd recovers by itself", opts, async () => {
  const { cust, agent, tab1, tab2, tabB, ag, chatId } = await setup();
  const lost = [];
  try {
    await services("stop-pg");
    await waitUntil(readyIs(503), 15000, "/readyz 503 on both nodes while PostgreSQL is down");
    assert.equal(await httpStatus(A.url, "/healthz"), 200, "liveness is not readiness");

    for (const [s, name] of [[tab1, "polling tab on A"], [tab2, "websocket tab on A"], [tabB, "tab on B"]]) {
      const cid = uid("lost-");
      lost.push(cid);
      const r = await s.send(chatId, `lost from ${name}`, cid);
      assert.equal(r.ok, false, `${name}: a send while PostgreSQL is down: ${JSON.stringify(r)}`);
      assert.equal(r.error?.code, "unavailable", `${name}: ${JSON.stringify(r)}`);
    }
    // opening a chat needs the database too
    const cid = uid("lost-");
    lost.push(cid);
    const open = await tab1.send(null, "open while down", cid);
    assert.equal(open.error?.code, "unavailable", `customer send without chatId: ${JSON.stringify(open)}`);
    const h = await ag.ack("history", { chatId });
    assert.equal(h.error?.code, "unavailable", `history: ${JSON.stringify(h)}`);
    const rd = await tab2.ack("read", { chatId, seq: 2 });
    assert.equal(rd.error?.code, "unavailable", `read: ${JSON.stringify(rd)}`);
    const rcid = uid("lost-");
    lost.push(rcid);
    const post = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body: { clientId: rcid, text: "rest while down" } });
    assert.equal(post.status, 503, `REST POST: ${post.status} ${JSON.stringify(post.body)}`);
    assert.equal(post.body?.error?.code, "unavailable");
    const get = await rest(B.url, "GET", `/chat/chats/${chatId}/messages`, { token: agent.token });
    assert.equal(get.status, 503, `REST GET: ${get.status} ${JSON.stringify(get.body)}`);
  } finally {
    await services("start-pg");
  }

  // recovery without restarting chatd: /readyz 200, then a send succeeds (a retry
  // with one clientId is idempotent, so retrying until it succeeds sends it once)
  await waitUntil(readyIs(200), 30000, "/readyz 200 on both nodes after PostgreSQL restarted");
  const back = await waitUntil(
    async () => {
      const r = await tab1.send(chatId, "back again", "back-1");
      return r.ok ? r.message : false;
    },
    15000,
    "a send to succeed after PostgreSQL restarted",
  );
  assert.equal(back.seq, 3, "the failed sends consumed no seq");
  const backB = await tabB.sendOk(chatId, "back on B", "back-2");
  assert.equal(backB.seq, 4);
  for (const [name, s] of Object.entries({ tab1, tab2, tabB, ag })) {
    await s.waitMessage(chatId, 4);
    const got = s.messages(chatId);
    assert.deepEqual(seqs(got), name === "ag" ? [2, 3, 4] : [1, 2, 3, 4], `${name}: nothing of the failed sends was broadcast`);
    assert.ok(!got.some((m) => lost.includes(m.clientId)));
    assert.deepEqual(s.disconnects, [], `${name} stayed connected`);
  }
  const rows = await sql("SELECT client_id FROM messages WHERE client_id = ANY($1)", [lost]);
  assert.deepEqual(rows, [], "no failed send was stored");
  const h = await ag.ack("history", { chatId, afterSeq: 0 });
  assert.deepEqual(seqs(h.messages), [1, 2, 3, 4]);
  const post = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body: { clientId: uid(), text: "rest is back" } });
  assert.equal(post.status, 201, JSON.stringify(post.body));
});

test("Redis down: /readyz 503, messages still persist and reach sockets on the same node; after it restarts cross-node fan-out works again", opts, async () => {
  const { cust, tab1, tab2, tabB, ag, chatId } = await setup();
  let duringA, duringB;
  try {
    await services("stop-redis");
    await waitUntil(readyIs(503), 15000, "/readyz 503 on both nodes while Redis is down");
    assert.equal(await httpStatus(B.url, "/healthz"), 200);

    duringA = await tab1.sendOk(chatId, "during outage, from A", "during-a");
    await tab2.waitMessage(chatId, duringA.seq);
    duringB = await tabB.sendOk(chatId, "during outage, from B", "during-b");
    await ag.waitMessage(chatId, duringB.seq);
    assert.deepEqual(seqs([duringA, duringB]), [3, 4]);
    // a new tab can still connect (its chats come from PostgreSQL) and catch up by seq
    const late = await chat(A.url, { token: cust.token, context: { lastSeq: { [chatId]: 2 } } });
    assert.deepEqual(late.session.chats.map((c) => c.id), [chatId]);
    await late.waitMessage(chatId, 4);
    assert.deepEqual(seqs(late.messages(chatId)), [3, 4]);
    const rows = await sql("SELECT client_id, seq::int AS seq FROM messages WHERE chat_id = $1 AND client_id LIKE 'during-%' ORDER BY seq", [chatId]);
    assert.deepEqual(rows, [
      { client_id: "during-a", seq: 3 },
      { client_id: "during-b", seq: 4 },
    ]);
  } finally {
    await services("start-redis");
  }

  await waitUntil(readyIs(200), 30000, "/readyz 200 on both nodes after Redis restarted");
  // The fan-out subscription comes back by itself: send from A until node B gets
  // one (bounded), then every further message crosses both ways at once.
  let n = 0;
  await waitUntil(
    async () => {
      const m = await tab1.sendOk(chatId, `probe ${n}`, `probe-${n++}`);
      return ag.waitMessage(chatId, m.seq, 1000).then(
        () => true,
        () => false,
      );
    },
    20000,
    "a message from node A to reach the agent on node B after Redis restarted",
  );
  const a2b = await tab2.sendOk(chatId, "A to B", uid());
  await ag.waitMessage(chatId, a2b.seq, 5000);
  await tabB.waitMessage(chatId, a2b.seq, 5000);
  const b2a = await tabB.sendOk(chatId, "B to A", uid());
  for (const s of [tab1, tab2, ag]) await s.waitMessage(chatId, b2a.seq, 5000);

  // what a node missed during the outage comes back by seq (history afterSeq)
  const h = await ag.ack("history", { chatId, afterSeq: 2 });
  assert.deepEqual(h.messages.slice(0, 2).map((m) => m.clientId), ["during-a", "during-b"]);
  // every socket's stream is in seq order without duplicates, and gap-free
  // (SPEC 12.3): what the other node published while Redis was down is filled
  // in by seq, at the latest when the next message of the chat arrives
  const streams = {};
  for (const [name, s] of Object.entries({ tab1, tab2, tabB, ag })) {
    const got = seqs(s.messages(chatId));
    for (let i = 1; i < got.length; i++) assert.ok(got[i] > got[i - 1], `${name}: ${JSON.stringify(got)}`);
    assert.equal(got[got.length - 1], b2a.seq);
    assert.deepEqual(s.disconnects, [], `${name} stayed connected`);
    streams[name] = got;
  }
  const want = (from) => Array.from({ length: b2a.seq - from + 1 }, (_, i) => from + i);
  assert.deepEqual(streams, { tab1: want(1), tab2: want(1), tabB: want(1), ag: want(2) }, "gap-free streams after the outage");
  // during the outage each node's sockets got that node's messages
  for (const s of [tab1, tab2]) assert.deepEqual(seqs(s.messages(chatId)).slice(0, 3), [1, 2, 3]);
  for (const s of [tabB]) assert.ok(seqs(s.messages(chatId)).includes(4));
});

test("PostgreSQL stopped with sends in flight: every ok is stored and broadcast, nothing unavailable is broadcast, retries after recovery fill the chat gap-free", opts, async () => {
  const { tab1, tab2, tabB, ag, chatId } = await setup();
  const results = []; // {cid, res}
  let stop = false;
  let n = 0;
  const counts = () => ({
    ok: results.filter((r) => r.res.ok).length,
    unavailable: results.filter((r) => r.res.error?.code === "unavailable").length,
  });
  // 3 senders on node A (the polling tab, and two loops on the websocket tab),
  // each one message at a time, paced like an honest client (25/s per loop: the
  // websocket tab stays at the 50/s default rate limit). Senders on both nodes
  // at once are chat_delivery's cross-node ordering test.
  let loopError = null;
  const sender = (s) =>
    (async () => {
      while (!stop) {
        const cid = `fly-${n++}`;
        const at = Date.now();
        const res = await s.send(chatId, `in flight ${cid}`, cid);
        results.push({ cid, res, ms: Date.now() - at });
        if (!res.ok && res.error?.code !== "unavailable") throw new Error(`${cid}: unexpected answer ${JSON.stringify(res)}`);
        await new Promise((r) => setTimeout(r, Math.max(0, 40 - (Date.now() - at))));
      }
    })().catch((e) => {
      loopError ??= e;
      stop = true;
    });
  const loops = [sender(tab1), sender(tab2), sender(tab2)];
  const ok = async (what) => {
    if (loopError) throw loopError;
    return what();
  };
  try {
    try {
      await waitUntil(() => ok(() => counts().ok >= 20), 20000, "20 sends ok before the outage");
      await services("stop-pg");
      const okAtStop = counts().ok;
      await waitUntil(() => ok(() => counts().unavailable >= 8), 20000, `sends answered unavailable while PostgreSQL is down`);
      assert.ok(counts().ok - okAtStop <= 8, `at most the in-flight sends succeed after the stop: ${JSON.stringify(counts())}`);
    } finally {
      await services("start-pg");
    }
    await waitUntil(readyIs(200), 30000, "/readyz 200 after PostgreSQL restarted");
    const okAfter = counts().ok;
    await waitUntil(() => ok(() => counts().ok >= okAfter + 20), 20000, "sends ok again after the restart");
  } finally {
    stop = true;
    await Promise.all(loops);
  }
  if (loopError) throw loopError;
  const slow = results.filter((r) => r.ms > 5000);
  assert.deepEqual(slow.map((r) => `${r.cid} ${r.ms} ms ${JSON.stringify(r.res)}`), [], "every answer within 5 s");

  // retry every unavailable one with its clientId: all succeed now. Anything of
  // theirs a socket got before the retries began was a broadcast of a send
  // that was answered unavailable.
  const retryFrom = new Map([tab1, tab2, tabB, ag].map((s) => [s, s.log.length]));
  const failed = results.filter((r) => !r.res.ok);
  for (const f of failed) {
    f.retry = await tab1.send(chatId, `in flight ${f.cid}`, f.cid);
    await new Promise((r) => setTimeout(r, 25)); // an honest client's pace (rate limit 50/s)
  }
  for (const f of failed) assert.equal(f.retry.ok, true, `retry of ${f.cid}: ${JSON.stringify(f.retry)}`);

  const okMsgs = results.filter((r) => r.res.ok).map((r) => r.res.message);
  const marker = await tab2.sendOk(chatId, "marker", "marker");
  const rows = await sql("SELECT seq::int AS seq, client_id FROM messages WHERE chat_id = $1 ORDER BY seq", [chatId]);
  assert.deepEqual(rows.map((r) => r.seq), Array.from({ length: marker.seq }, (_, i) => i + 1), "seq gap-free in the table");
  const stored = new Map(rows.map((r) => [r.client_id, r.seq]));
  assert.equal(rows.filter((r) => r.client_id?.startsWith("fly-")).length, results.length, "each send stored once");
  for (const r of results) assert.ok(stored.has(r.cid), `${r.cid} stored after its retry`);
  for (const m of okMsgs) assert.equal(stored.get(m.clientId), m.seq, `ok ack of ${m.clientId} matches its stored seq`);
  for (const f of failed) assert.equal(f.retry.message.seq, stored.get(f.cid));

  const failedIds = new Set(failed.map((f) => f.cid));
  for (const [name, s] of Object.entries({ tab1, tab2, tabB, ag })) {
    await s.waitMessage(chatId, marker.seq, 10000);
    const entries = s.log.filter((e) => e.event === "chat-message" && e.data.chatId === chatId);
    const g = entries.map((e) => e.data.seq);
    for (let i = 1; i < g.length; i++) assert.ok(g[i] > g[i - 1], `${name}: strictly increasing: ${g[i - 1]} then ${g[i]}`);
    const seen = new Set(entries.map((e) => e.data.clientId));
    for (const m of okMsgs) assert.ok(seen.has(m.clientId), `${name}: missed ${m.clientId} (seq ${m.seq}) that was acked ok`);
    const early = entries.filter((e) => failedIds.has(e.data.clientId) && e.i < retryFrom.get(s));
    assert.deepEqual(early.map((e) => e.data.clientId), [], `${name}: broadcasts of sends answered unavailable`);
    assert.deepEqual(s.disconnects, [], `${name} stayed connected`);
  }
  console.log(`in flight: ${results.length} sends, ${okMsgs.length} ok, ${failed.length} unavailable then retried`);
});

test("a chat opened while Redis is down reaches the customer's tab on the other node once Redis is back (identity-wide join converges)", opts, async () => {
  const { tab1, ag, chatId } = await setup();
  const org = newOrg();
  const cust = person(org, "customer");
  const tA = await chat(A.url, { token: cust.token });
  const tB = await chat(B.url, { token: cust.token });
  let opened;
  try {
    await services("stop-redis");
    await waitUntil(readyIs(503), 15000, "/readyz 503 while Redis is down");
    opened = await tA.sendOk(null, "opened during the outage", uid());
  } finally {
    await services("start-redis");
  }
  await waitUntil(readyIs(200), 30000, "/readyz 200 after Redis restarted");
  let n = 0;
  await waitUntil(
    async () => {
      const m = await tab1.sendOk(chatId, `probe ${n}`, `probe-${n++}`);
      return ag.waitMessage(chatId, m.seq, 1000).then(
        () => true,
        () => false,
      );
    },
    20000,
    "fan-out from node A to node B again",
  );
  const next = await tA.sendOk(opened.chatId, "after the outage", uid());
  await tB.waitMessage(opened.chatId, next.seq, 5000);
  // and the tab on node B has the whole chat, the message of the outage included: the resync
  // joined it where it had nothing, not at the chat's last seq then
  assert.deepEqual(tB.messages(opened.chatId).map((m) => m.seq), [1, 2]);
});

test("the fan-out subscription lost alone (CLIENT KILL TYPE pubsub): once it is back, a chat opened meanwhile reaches the customer's tab on the other node, whole", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const tA = await chat(A.url, { token: cust.token }, { transports: ["websocket"] });
  const tB = await chat(B.url, { token: cust.token }, { transports: ["websocket"] });
  const { createClient } = createRequire(import.meta.url)("redis");
  const admin = createClient({ url: REDIS_URL });
  await admin.connect();
  try {
    // as Redis does for a subscriber over its output buffer limit, or a proxy that restarts
    await admin.sendCommand(["CLIENT", "KILL", "TYPE", "pubsub"]);
  } finally {
    await admin.quit().catch(() => {});
  }
  const opened = await tA.sendOk(null, "opened while node B's subscription was down", uid());
  // the identity-wide join was published while B could not hear it: B re-joins its sockets
  // when its subscription is back, and the tab catches up what it missed
  await tB.waitMessage(opened.chatId, 1, 10000);
  const next = await tA.sendOk(opened.chatId, "after", uid());
  await tB.waitMessage(opened.chatId, next.seq, 5000);
  assert.deepEqual(tB.messages(opened.chatId).map((m) => m.seq), [1, 2]);
});

test("a chat row locked by another transaction: its send answers unavailable within the statement timeout and broadcasts nothing; other chats still succeed; after the lock the retry succeeds", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const x = await chat(A.url, { token: cust.token });
  const x2 = await chat(B.url, { token: cust.token });
  const xId = (await x.sendOk(null, "x", uid())).chatId;
  const others = await Promise.all(Array.from({ length: 6 }, () => chat(A.url, { token: person(org, "customer").token })));
  const otherIds = [];
  for (const o of others) otherIds.push((await o.sendOk(null, "o", uid())).chatId);
  const { Client } = createRequire(import.meta.url)("pg");
  const locker = new Client({ connectionString: DB_URL });
  await locker.connect();
  let stuck;
  try {
    await locker.query("BEGIN");
    await locker.query("SELECT id FROM chats WHERE id = $1 FOR UPDATE", [xId]);
    const t0 = Date.now();
    const pStuck = x.send(xId, "stuck", "stuck-1", {}).then((r) => ({ r, ms: Date.now() - t0 }));
    const res = await Promise.all(others.map((o, i) => o.send(otherIds[i], "meanwhile", uid()).then((r) => ({ r, ms: Date.now() - t0 }))));
    const bad = res.flatMap(({ r, ms }, i) => (r.ok ? [] : [`other chat ${i}: ${JSON.stringify(r)} after ${ms} ms`]));
    assert.deepEqual(bad, [], `sends to other chats while chat x is locked (all: ${res.map(({ r, ms }) => `${r.ok ? "ok" : r.error.code} ${ms} ms`).join(", ")})`);
    stuck = await pStuck;
  } finally {
    await locker.query("ROLLBACK").catch(() => {});
    await locker.end().catch(() => {});
  }
  assert.equal(stuck.r.ok, false, JSON.stringify(stuck.r));
  assert.equal(stuck.r.error.code, "unavailable", JSON.stringify(stuck.r));
  assert.ok(stuck.ms < 9000, `answered after ${stuck.ms} ms`);
  const retry = await x.send(xId, "stuck", "stuck-1");
  assert.equal(retry.ok, true, JSON.stringify(retry));
  assert.equal(retry.message.seq, 2);
  await x2.waitMessage(xId, 2);
  assert.deepEqual(seqs(x2.messages(xId)), [1, 2], "one broadcast, from the retry");
});
