// Refusals and limits with the real socket.io-client 4.x (and fetch for the
// raw HTTP cases): CONNECT_ERROR for an unknown namespace ("Invalid
// namespace") and for a missing token on bench-server /chat; a message just
// under maxPayload passes and one byte over closes the WebSocket; a polling
// POST over maxPayload gets HTTP 413.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, NORMAL_TIMING, client, connect, connected, closeAll, once } from "./lib.mjs";

const MAX = 10000;
let conf, bench, small;
before(async () => {
  [conf, bench, small] = await Promise.all([
    startServer("conformance", NORMAL_TIMING),
    startServer("bench-server", NORMAL_TIMING),
    startServer("conformance", { ...NORMAL_TIMING, CHATD_MAX_PAYLOAD: String(MAX) }),
  ]);
});
after(async () => {
  closeAll();
  await Promise.all([conf, bench, small].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const TRANSPORTS = [["websocket"], ["polling"]];

async function connectError(url, nsp, opts) {
  const s = client(url, nsp, opts);
  await assert.rejects(connected(s), (err) => {
    s.connectError = err;
    return true;
  });
  return s.connectError;
}

test("connect error: unknown namespace on conformance -> Invalid namespace", async () => {
  for (const transports of TRANSPORTS) {
    const err = await connectError(conf.url, "/random", { transports });
    assert.equal(err.message, "Invalid namespace", `transports ${transports}`);
    // the same Engine.IO connection still serves a valid namespace
    const s = await connect(conf.url, "/", { transports });
    assert.equal(s.connected, true);
  }
});

test("connect error: bench-server refuses / and unknown namespaces", async () => {
  for (const nsp of ["/", "/other"]) {
    const err = await connectError(bench.url, nsp, { transports: ["websocket"], auth: { token: "t" } });
    assert.equal(err.message, "Invalid namespace", `namespace ${nsp}`);
  }
});

test("connect error: bench-server /chat without a token", async () => {
  for (const transports of TRANSPORTS) {
    for (const auth of [undefined, {}, { token: "" }, { token: 5 }]) {
      const err = await connectError(bench.url, "/chat", { transports, ...(auth ? { auth } : {}) });
      assert.equal(err.message, "unauthorized", `auth ${JSON.stringify(auth)}`);
      assert.deepEqual(err.data, { code: "token_missing" });
    }
    const ok = await connect(bench.url, "/chat", { transports, auth: { token: "x" } });
    assert.equal(ok.connected, true);
  }
});

// `42["message","<s>"]` is 16 + s.length bytes for ASCII s.
const FRAME_OVERHEAD = 16;

test("websocket message of exactly maxPayload bytes passes, one byte more closes the connection", async () => {
  const s = await connect(small.url, "/", { transports: ["websocket"] });
  const under = "u".repeat(MAX - FRAME_OVERHEAD);
  const back = once(s, "message-back");
  s.emit("message", under);
  assert.equal((await back)[0].length, under.length);

  const disc = once(s, "disconnect", 5000);
  s.emit("message", "o".repeat(MAX - FRAME_OVERHEAD + 1));
  const [reason] = await disc;
  assert.ok(["transport close", "transport error"].includes(reason), `reason ${reason}`);
});

test("polling-only client over maxPayload loses its connection", async () => {
  const s = await connect(small.url, "/", { transports: ["polling"] });
  const under = "u".repeat(MAX - 2000);
  const back = once(s, "message-back");
  s.emit("message", under);
  assert.equal((await back)[0].length, under.length);
  const disc = once(s, "disconnect", 5000);
  s.emit("message", "o".repeat(MAX + 100));
  const [reason] = await disc;
  assert.ok(["transport close", "transport error"].includes(reason), `reason ${reason}`);
});

async function handshake(url) {
  const res = await fetch(`${url}/socket.io/?EIO=4&transport=polling`);
  assert.equal(res.status, 200);
  const body = await res.text();
  assert.equal(body[0], "0");
  const open = JSON.parse(body.slice(1));
  assert.equal(open.maxPayload, MAX);
  return open.sid;
}

const post = (url, sid, body) =>
  fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, {
    method: "POST",
    body,
    headers: { "Content-Type": "text/plain;charset=UTF-8" },
  });

const get = async (url, sid) => {
  const g = await fetch(`${url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
  assert.equal(g.status, 200);
  return g.text();
};

test("polling POST of exactly maxPayload bytes is accepted, one byte more gets 413", async () => {
  // body: one event record, 16 + s bytes
  const body = (n) => `42["message","${"p".repeat(n - FRAME_OVERHEAD)}"]`;

  const sid = await handshake(small.url);
  assert.equal((await post(small.url, sid, "40")).status, 200);
  let seen = "";
  for (let i = 0; i < 5 && !seen.includes('42["auth"'); i++) seen += await get(small.url, sid);
  assert.match(seen, /^40\{"sid":"[^"]+"\}/, "CONNECT reply");

  assert.equal(Buffer.byteLength(body(MAX)), MAX);
  const ok = await post(small.url, sid, body(MAX));
  assert.equal(ok.status, 200);
  assert.equal(await ok.text(), "ok");
  // the event was processed: message-back comes on the next GET
  seen = "";
  for (let i = 0; i < 5 && !seen.includes("message-back"); i++) seen += await get(small.url, sid);
  assert.ok(seen.startsWith('42["message-back","ppp'), "message-back received over polling");
  assert.equal(seen.length, MAX + 5);

  const over = await post(small.url, sid, body(MAX + 1));
  assert.equal(over.status, 413);
  await over.arrayBuffer();
});

test("binary attachment of exactly maxPayload bytes passes on websocket, one byte more closes", async () => {
  const s = await connect(small.url, "/", { transports: ["websocket"] });
  const back = once(s, "message-back");
  s.emit("message", Buffer.alloc(MAX, 7)); // the attachment is one binary frame of MAX bytes
  const [b] = await back;
  assert.equal(Buffer.from(b).length, MAX);
  const disc = once(s, "disconnect", 5000);
  s.emit("message", Buffer.alloc(MAX + 1, 8));
  const [reason] = await disc;
  assert.ok(["transport close", "transport error"].includes(reason), `reason ${reason}`);
});

test("polling POST with a base64 binary record over maxPayload gets 413", async () => {
  const sid = await handshake(small.url);
  assert.equal((await post(small.url, sid, "40")).status, 200);
  const b64 = Buffer.alloc(Math.ceil((MAX * 3) / 4) + 3, 1).toString("base64");
  const body = `451-["message",{"_placeholder":true,"num":0}]\x1eb${b64}`;
  assert.ok(body.length > MAX);
  const over = await post(small.url, sid, body);
  assert.equal(over.status, 413);
  await over.arrayBuffer();
});

test("a second POST while the first one's body is still arriving ends the session (as two GETs do), so packets are never taken out of order", async () => {
  const sid = await handshake(small.url);
  assert.equal((await post(small.url, sid, "40")).status, 200);
  const u = new URL(small.url);
  // POST A: headers and half its body, the rest held back
  const net = await import("node:net");
  const a = net.connect(Number(u.port), u.hostname);
  await once(a, "connect");
  const bodyA = '42["message","first"]';
  let answerA = "";
  a.on("data", (d) => (answerA += d));
  const closedA = once(a, "close", 10000);
  a.write(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
    `Content-Type: text/plain;charset=UTF-8\r\nContent-Length: ${bodyA.length}\r\nConnection: close\r\n\r\n` +
    bodyA.slice(0, 5));
  // POST B, whole, while A is open: refused, and the session is over
  await new Promise((r) => setTimeout(r, 100)); // let A's headers reach the server first
  const b = await post(small.url, sid, '42["message","second"]');
  assert.equal(b.status, 400);
  assert.deepEqual(await b.json(), { code: 3, message: "Bad request" });
  a.write(bodyA.slice(5)); // not end(): a half-close may be taken for the client leaving
  await closedA; // Connection: close, so the server hangs up after its answer
  assert.match(answerA, /^HTTP\/1\.1 400/, "A finds its session gone");
  const g = await fetch(`${small.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`);
  assert.equal(g.status, 400);
  assert.deepEqual(await g.json(), { code: 1, message: "Session ID unknown" });
});

test("a POST announcing more than maxPayload is answered 413 at once and its connection closed, not read to its end", async () => {
  const sid = await handshake(small.url);
  const u = new URL(small.url);
  const net = await import("node:net");
  const c = net.connect(Number(u.port), u.hostname);
  await once(c, "connect");
  let answer = "";
  c.on("data", (d) => (answer += d));
  c.on("error", () => {}); // a reset after the answer is fine
  const closed = once(c, "close", 20000);
  const ended = once(c, "end", 20000);
  c.write(`POST /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n` +
    "Content-Type: text/plain;charset=UTF-8\r\nContent-Length: 1000000000000\r\n\r\n");
  // stream until the server answers (a browser would go on until the connection breaks);
  // 50 MB without an answer is the old behaviour: the 413 came after the whole body
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  let sent = 0, open = true;
  c.on("close", () => (open = false));
  while (open && !answer && sent < 50 * 1024 * 1024) {
    if (!c.write(chunk)) await Promise.race([once(c, "drain", 20000), closed]);
    sent += chunk.length;
  }
  assert.ok(sent < 50 * 1024 * 1024, `no answer after ${sent} bytes of an announced terabyte`);
  await ended; // the server's FIN follows the 413
  assert.match(answer, /^HTTP\/1\.1 413/, `answer after ${sent} bytes: ${answer.slice(0, 40)}`);
  // and it closes the connection even while the client goes on sending
  const t = setInterval(() => open && c.write(chunk), 5);
  await closed;
  clearInterval(t);
});
