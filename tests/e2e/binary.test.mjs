// Binary round trips (BINARY_EVENT / BINARY_ACK with attachments) with the real
// socket.io-client 4.x, over websocket (binary frames) and polling (base64 "b"
// records): Buffers nested in objects and arrays, via message -> message-back
// and message-with-ack on `chatd conformance`, and via a chat-message room
// broadcast on `chatd bench-server`.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, NORMAL_TIMING, connect, closeAll, once } from "./lib.mjs";

let conf, bench;
before(async () => {
  [conf, bench] = await Promise.all([
    startServer("conformance", NORMAL_TIMING),
    startServer("bench-server", NORMAL_TIMING),
  ]);
});
after(async () => {
  closeAll();
  await Promise.all([conf && conf.stop(), bench && bench.stop()]);
});
afterEach(() => closeAll());

const TRANSPORTS = [["websocket"], ["polling"], ["polling", "websocket"]];

function bytes(n, seed) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** The payload: buffers at several depths, empty and all-byte-values buffers. */
function payload() {
  return [
    bytes(3, 1),
    { file: bytes(300, 2), meta: { name: "a.bin", parts: [bytes(1, 3), "text", bytes(0, 0)] } },
    [1, [2, [bytes(256, 0)]]],
    "plain",
  ];
}

/** Buffers arrive as Buffer in Node; compare them as bytes. */
function normalize(v) {
  if (Buffer.isBuffer(v) || v instanceof ArrayBuffer || ArrayBuffer.isView(v))
    return { $bin: Buffer.from(v).toString("hex") };
  if (Array.isArray(v)) return v.map(normalize);
  if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, normalize(x)]));
  return v;
}

test("binary event round trip: message -> message-back", async () => {
  for (const transports of TRANSPORTS) {
    const s = await connect(conf.url, "/", { transports });
    const args = payload();
    const back = once(s, "message-back");
    s.emit("message", ...args);
    const got = await back;
    assert.deepEqual(normalize(got), normalize(args), `transports ${transports}`);
    assert.ok(Buffer.isBuffer(got[0]), "a Buffer comes back as a Buffer");
    // a single top-level buffer
    const one = once(s, "message-back");
    s.emit("message", bytes(5, 9));
    assert.deepEqual(normalize(await one), normalize([bytes(5, 9)]));
  }
});

test("binary ack round trip: message-with-ack acks with the same buffers", async () => {
  for (const transports of TRANSPORTS) {
    const s = await connect(conf.url, "/", { transports });
    const args = payload();
    const res = await new Promise((resolve, reject) =>
      s.timeout(3000).emit("message-with-ack", ...args, (err, ...r) => (err ? reject(err) : resolve(r))),
    );
    assert.deepEqual(normalize(res), normalize(args), `transports ${transports}`);
  }
});

test("binary and text events interleaved keep their order", async () => {
  const s = await connect(conf.url, "/", { transports: ["websocket"] });
  const got = [];
  const done = new Promise((resolve) =>
    s.on("message-back", (...a) => {
      got.push(a);
      if (got.length === 30) resolve();
    }),
  );
  const sent = [];
  for (let i = 0; i < 30; i++) {
    const a = i % 3 === 0 ? [i, bytes(i + 1, i)] : [i, "t"];
    sent.push(a);
    s.emit("message", ...a);
  }
  await done;
  assert.deepEqual(normalize(got), normalize(sent));
});

test("binary in a room broadcast: chat-message with buffers reaches every member", async () => {
  const room = "bin-room";
  const members = [];
  for (const transports of TRANSPORTS) {
    const s = await connect(bench.url, "/chat", { transports, auth: { token: "t" } });
    assert.deepEqual(await s.timeout(2000).emitWithAck("join", { chatId: room }), { ok: true });
    members.push(s);
  }
  const msg = { chatId: room, text: "here is a file", file: bytes(1000, 7), thumbs: [bytes(10, 1), bytes(20, 2)] };
  const received = members.map((m) => once(m, "chat-message"));
  const ack = await members[1].timeout(2000).emitWithAck("chat-message", msg);
  assert.deepEqual(ack, { ok: true });
  for (const [i, r] of (await Promise.all(received)).entries())
    assert.deepEqual(normalize(r), normalize([msg]), `member ${i}`);
});
