// Catch-up under faults (a review of 2026-11-23): a catch-up whose read fails closes the
// socket's transport, so the client reconnects and catches up, instead of going on without the
// messages it missed; a catch-up that overruns the socket's outbound bound (slow consumer)
// closes it without the server touching the freed socket (ASan found a use-after-free there).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, chat, uid, sql, closeDb, DB_URL } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
let A, B;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([
    startChatd("catchup-a", { CHATD_MAX_OUTBOUND_BYTES: "20000", CHATD_RATE_EVENTS_PER_S: "1000" }),
    startChatd("catchup-b"),
  ]);
});
after(async () => {
  closeAll();
  await closeDb();
  await Promise.all([A, B].filter(Boolean).map((n) => n.stop())); // fails on a sanitizer report
});
afterEach(() => closeAll());

const opts = { skip: SKIP_REASON, timeout: 60000 };
const seqs = (msgs) => msgs.map((m) => m.seq);

test("a catch-up read that fails closes the transport; the client reconnects and gets every missed message, in order", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const w = await chat(A.url, { token: cust.token }, { transports: ["websocket"] });
  const chatId = (await w.sendOk(null, "one", uid())).chatId;
  for (let i = 0; i < 4; i++) await w.sendOk(chatId, `m${i}`, uid());
  const { Client } = require("pg");
  const locker = new Client({ connectionString: DB_URL });
  await locker.connect();
  try {
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE"); // the read waits past lock_timeout
    const r = await chat(A.url, { token: cust.token, context: { lastSeq: { [chatId]: 1 } } },
      { transports: ["websocket"], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 200 });
    await r.waitFor((e) => r.disconnects.length > 0 || e.event === "chat-message", 10000, "the failed catch-up");
    assert.deepEqual(r.messages(chatId), [], "nothing before the failure");
    assert.equal(r.disconnects[0], "transport close");
    await locker.query("COMMIT");
    // reconnected with the same lastSeq: caught up, then live
    await r.waitMessage(chatId, 5, 10000);
    const live = await w.sendOk(chatId, "later", uid());
    await r.waitMessage(chatId, live.seq);
    assert.deepEqual(seqs(r.messages(chatId)), [2, 3, 4, 5, 6]);
  } finally {
    await locker.end().catch(() => {});
  }
});

test("a catch-up larger than the outbound bound closes the slow socket; the server goes on", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const w = await chat(A.url, { token: cust.token }, { transports: ["websocket"] });
  const chatId = (await w.sendOk(null, "x".repeat(500), uid())).chatId;
  for (let i = 0; i < 80; i++) await w.sendOk(chatId, "y".repeat(1000), uid());
  for (let k = 0; k < 2; k++) {
    const p = await chat(A.url, { token: cust.token, context: { lastSeq: { [chatId]: 0 } } },
      { transports: ["polling"], sessionMs: 3000 }).catch((e) => e); // the session may be cut first
    if (!(p instanceof Error)) p.close();
  }
  // the process survived and still serves
  assert.equal((await fetch(A.url + "/healthz")).status, 200);
  const m = await w.sendOk(chatId, "still here", uid());
  assert.equal(m.seq, 82);
});

test("a gap read that fails is retried: a message whose publication was lost still reaches every reader, in order", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent");
  const c = await chat(A.url, { token: cust.token }, { transports: ["websocket"] });
  const ag = await chat(B.url, { token: agent.token }, { transports: ["websocket"] });
  const chatId = (await c.sendOk(null, "hello", uid())).chatId;
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
  const m2 = await c.sendOk(chatId, "two", uid());
  await ag.waitMessage(chatId, m2.seq);
  // seq 3 committed, its publication never sent (a publisher that lost Redis)
  const [row] = await sql(
    "SELECT status, seq FROM chat_append_one($1, $2, $3, 'system', NULL, NULL, 'lost publication', NULL, $4, NULL)",
    ["direct-" + uid(), chatId, uid(), org]);
  assert.equal(Number(row.seq), 3);
  await c.sendOk(chatId, "after the lost one", uid()); // seq 4: both nodes now wait for 3
  const { Client } = require("pg");
  const locker = new Client({ connectionString: DB_URL });
  await locker.connect();
  try {
    await locker.query("BEGIN");
    await locker.query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE");
    // held past a few gap reads (one every 300 ms, each failing after the 500 ms lock timeout):
    // there is no event to await for "a read failed"
    await new Promise((r) => setTimeout(r, 1500));
    await locker.query("COMMIT");
  } finally {
    await locker.end().catch(() => {});
  }
  for (const s of [c, ag]) await s.waitMessage(chatId, 4, 10000);
  assert.deepEqual(c.messages(chatId).map((m) => m.seq), [1, 2, 3, 4]);
  assert.deepEqual(ag.messages(chatId).map((m) => m.seq).filter((q) => q >= 2), [2, 3, 4]);
});
