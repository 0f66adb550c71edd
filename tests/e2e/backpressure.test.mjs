// Slow consumers (issue 2 item 5, SPEC §6): each socket's outbound queue is
// bounded (CHATD_MAX_OUTBOUND_BYTES); a member that stops reading is cut once
// its queue passes the bound, while members that keep reading get every
// broadcast and stay connected. chatd only: the Node replica has no such bound
// (socket.io buffers without limit), so the test is skipped with E2E_SERVER=replica.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { startServer, NORMAL_TIMING, connect, closeAll, withTimeout, REPLICA } from "./lib.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

const BOUND = 256 * 1024;
let bench;
before(async () => {
  bench = await startServer("bench-server", { ...NORMAL_TIMING, CHATD_MAX_OUTBOUND_BYTES: String(BOUND) });
});
after(async () => {
  closeAll();
  if (bench) await bench.stop();
});

test("a member that stops reading is cut; readers get every broadcast", { skip: REPLICA && "replica has no outbound bound", timeout: 60000 }, async () => {
  const room = "flood";
  const N = 300;
  const text = "x".repeat(100 * 1024); // 300 x 100 KB = 30 MB: far beyond socket buffers

  // the slow member: a raw WebSocket whose TCP socket stops being read
  const ws = new WebSocket(`${bench.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
  let slowMsgs = 0;
  let slowJoined;
  const joined = new Promise((r) => (slowJoined = r));
  ws.on("message", (d, bin) => {
    const f = bin ? "" : d.toString();
    if (f.startsWith("0{")) ws.send('40/chat,{"token":"slow"}');
    else if (f.startsWith("40/chat,")) ws.send('42/chat,1["join",{"chatId":"flood"}]');
    else if (f.startsWith("43/chat,1")) slowJoined();
    else if (f.startsWith('42/chat,["chat-message"')) slowMsgs++;
  });
  ws.on("error", () => {});
  const slowClosed = new Promise((r) => ws.on("close", r));
  await withTimeout(joined, 5000, "slow member joined");
  ws._socket.pause(); // stop reading: the kernel buffers fill, then chatd's queue

  const reader = await connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: "r" } });
  const sender = await connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: "s" } });
  for (const s of [reader, sender]) assert.deepEqual(await s.timeout(3000).emitWithAck("join", { chatId: room }), { ok: true });
  let readerGot = 0;
  reader.on("chat-message", () => readerGot++);
  let readerDisc = null;
  reader.on("disconnect", (r) => (readerDisc = r));

  for (let i = 0; i < N; i++) {
    // paced by the ack, so the reader's queue never holds more than a frame or two
    const ack = await sender.timeout(5000).emitWithAck("chat-message", { chatId: room, i, text });
    assert.deepEqual(ack, { ok: true });
  }
  await withTimeout(
    new Promise((resolve) => {
      const check = () => (readerGot >= N ? resolve() : setImmediate(check));
      check();
    }),
    10000,
    `reader to get ${N} broadcasts (got ${readerGot})`,
  );
  assert.equal(readerDisc, null, "the reading member stays connected");

  // let the slow member read again: it sees what was buffered, then the close
  ws._socket.resume();
  await withTimeout(slowClosed, 10000, "slow member to be disconnected");
  assert.ok(slowMsgs < N, `slow member was cut before all ${N} broadcasts (got ${slowMsgs})`);
  assert.equal(reader.connected, true);
});
