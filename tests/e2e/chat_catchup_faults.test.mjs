// Catch-up under faults (a review of 2026-11-23): a catch-up whose read fails closes the
// socket's transport, so the client reconnects and catches up, instead of going on without the
// messages it missed; a catch-up that overruns the socket's outbound bound (slow consumer)
// closes it without the server touching the freed socket (ASan found a use-after-free there).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, chat, uid, closeDb, DB_URL } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
let A;
before(async () => {
  if (SKIP_REASON) return;
  A = await startChatd("catchup-a", { CHATD_MAX_OUTBOUND_BYTES: "20000", CHATD_RATE_EVENTS_PER_S: "1000" });
});
after(async () => {
  closeAll();
  await closeDb();
  if (A) await A.stop(); // fails on a sanitizer report of the server
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
