// Heartbeats, upgrade under load, big payloads and a hostile sender, with the
// real socket.io-client 4.x (and the `ws` package for raw frames):
// - with pingInterval 300 / pingTimeout 200 (chatd conformance defaults) a client
//   answering pings stays connected across several heartbeats, on every transport;
// - events emitted while polling is being upgraded to websocket all arrive, in order;
// - a 200 KB binary and a 200 KB string survive polling (base64) and websocket;
// - a raw client sending JSON that JSON.parse rejects (a raw control character
//   inside a string) is cut, and room members never receive those bytes.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { startServer, NORMAL_TIMING, client, connect, connected, closeAll, once, withTimeout } from "./lib.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

let fast, conf, bench;
before(async () => {
  [fast, conf, bench] = await Promise.all([
    startServer("conformance", { CHATD_PING_INTERVAL_MS: "300", CHATD_PING_TIMEOUT_MS: "200" }),
    startServer("conformance", NORMAL_TIMING),
    startServer("bench-server", NORMAL_TIMING),
  ]);
});
after(async () => {
  closeAll();
  await Promise.all([fast, conf, bench].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

for (const [label, transports] of [
  ["websocket", ["websocket"]],
  ["polling", ["polling"]],
  ["default", ["polling", "websocket"]],
]) {
  test(`heartbeat: 4 pings at 300/200 ms answered, still connected (${label})`, { timeout: 10000 }, async () => {
    const s = client(fast.url, "/", { transports });
    await connected(s);
    let disconnected = null;
    s.on("disconnect", (r) => (disconnected = r));
    for (let i = 0; i < 4; i++) await once(s.io.engine, "ping", 2000);
    assert.equal(disconnected, null, `no disconnect (got ${disconnected})`);
    const back = once(s, "message-back");
    s.emit("message", "alive");
    assert.deepEqual(await back, ["alive"]);
  });
}

test("events emitted during the polling -> websocket upgrade all arrive in order", async () => {
  for (let round = 0; round < 3; round++) {
    const s = client(conf.url, "/", { transports: ["polling", "websocket"] });
    const N = 200;
    const got = [];
    const all = new Promise((resolve) =>
      s.on("message-back", (i) => {
        got.push(i);
        if (got.length === N) resolve();
      }),
    );
    const upgraded = once(s.io.engine, "upgrade", 5000);
    await connected(s);
    // spread the sends over the upgrade window: some before, some while probing
    for (let i = 0; i < N; i++) {
      s.emit("message", i);
      if (i % 20 === 19) await new Promise((r) => setImmediate(r));
    }
    await upgraded;
    await withTimeout(all, 5000, `${N} message-back (got ${got.length})`);
    assert.deepEqual(got, [...Array(N).keys()]);
    assert.equal(s.io.engine.transport.name, "websocket");
    s.disconnect();
  }
});

test("200 KB binary and 200 KB text round trip on polling and websocket", { timeout: 15000 }, async () => {
  const big = Buffer.alloc(200 * 1024);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 8)) & 0xff;
  const text = "é".repeat(100 * 1024); // 200 KB of UTF-8
  for (const transports of [["polling"], ["websocket"]]) {
    const s = await connect(conf.url, "/", { transports });
    const back = once(s, "message-back", 10000);
    s.emit("message", { big, text });
    const [r] = await back;
    assert.ok(Buffer.isBuffer(r.big));
    assert.equal(Buffer.compare(r.big, big), 0, `binary intact over ${transports}`);
    assert.equal(r.text, text, `text intact over ${transports}`);
  }
});

test("strings cut inside a surrogate pair (lone surrogates) round trip like JSON.parse allows", async () => {
  const emoji = "😀";
  const cut = `cut ${emoji}`.slice(0, -1); // ends in a lone high surrogate
  const args = [cut, emoji.slice(1) + "x", { k: `${emoji}${cut}` }];
  for (const transports of [["websocket"], ["polling"]]) {
    const s = await connect(conf.url, "/", { transports });
    const back = once(s, "message-back");
    s.emit("message", ...args);
    assert.deepEqual(await back, args, `transports ${transports}`);
    assert.equal(s.connected, true);
  }
});

/** A raw Engine.IO/Socket.IO WebSocket client: resolves once CONNECTed to nsp. */
async function rawClient(url, nsp, auth) {
  const ws = new WebSocket(`${url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
  const frames = [];
  const waiters = [];
  ws.on("message", (data, isBinary) => {
    const f = isBinary ? data : data.toString();
    if (f === "2") return ws.send("3");
    frames.push(f);
    while (waiters.length) waiters.shift()();
  });
  const closed = new Promise((resolve) => ws.on("close", (code) => resolve(code)));
  const next = async (pred, what) => {
    for (;;) {
      const i = frames.findIndex(pred);
      if (i >= 0) return frames.splice(i, 1)[0];
      await withTimeout(new Promise((r) => waiters.push(r)), 3000, what);
    }
  };
  await next((f) => f.startsWith("0{"), "open packet");
  const prefix = nsp === "/" ? "40" : `40${nsp},`;
  ws.send(`${prefix}${JSON.stringify(auth)}`);
  await next((f) => f.startsWith(nsp === "/" ? "40{" : prefix), "CONNECT reply");
  return { ws, next, closed, frames };
}

test("a sender of invalid JSON is cut; room members never receive it", async () => {
  const room = "hostile";
  const member = await connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: "m" } });
  assert.deepEqual(await member.timeout(2000).emitWithAck("join", { chatId: room }), { ok: true });
  const received = [];
  member.on("chat-message", (m) => received.push(m));
  let memberDisc = null;
  member.on("disconnect", (r) => (memberDisc = r));

  const raw = await rawClient(bench.url, "/chat", { token: "r" });
  raw.ws.send(`42/chat,1["join",{"chatId":"${room}"}]`);
  await raw.next((f) => f.startsWith("43/chat,1"), "join ack");
  // a valid message first: both receive it
  const firstAtMember = once(member, "chat-message");
  raw.ws.send(`42/chat,["chat-message",{"chatId":"${room}","text":"ok"}]`);
  await firstAtMember;
  // then a raw line feed inside a JSON string: JSON.parse rejects it
  raw.ws.send(`42/chat,["chat-message",{"chatId":"${room}","text":"a\nb"}]`);
  await withTimeout(raw.closed, 3000, "the server to close the hostile connection");
  // the member is still connected and gets later messages (nothing in between)
  const other = await connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: "o" } });
  await other.timeout(2000).emitWithAck("join", { chatId: room });
  const after = once(member, "chat-message");
  await other.timeout(2000).emitWithAck("chat-message", { chatId: room, text: "after" });
  await after;
  assert.equal(memberDisc, null, `member disconnected: ${memberDisc}`);
  assert.deepEqual(
    received.map((m) => m.text),
    ["ok", "after"],
  );
});

test("malformed packets close only the offending connection", async () => {
  const bystander = await connect(conf.url, "/", { transports: ["websocket"] });
  for (const bad of ["4abc", "42{}", "42[]", '42abc["message",1]', "41{}", '42["disconnect"]', "9", '452-["message"]x']) {
    const raw = await rawClient(conf.url, "/", {});
    raw.ws.send(bad);
    const code = await withTimeout(raw.closed, 3000, `close after ${JSON.stringify(bad)}`);
    assert.ok(typeof code === "number");
  }
  const back = once(bystander, "message-back");
  bystander.emit("message", "still here");
  assert.deepEqual(await back, ["still here"]);
});

test("a client that half-closes the connection of its pending long-poll ends its session at once, and chatd does not spin on that socket", { timeout: 15000 }, async () => {
  const net = await import("node:net");
  const fs = await import("node:fs");
  const cpu = () => {
    const f = fs.readFileSync(`/proc/${conf.pid}/stat`, "utf8").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks of 10 ms
  };
  const hs = await (await fetch(`${conf.url}/socket.io/?EIO=4&transport=polling`)).text();
  const sid = JSON.parse(hs.slice(1)).sid;
  const c = net.connect(conf.port, "127.0.0.1");
  await once(c, "connect");
  c.write(`GET /socket.io/?EIO=4&transport=polling&sid=${sid} HTTP/1.1\r\nHost: x\r\n\r\n`);
  c.on("data", () => {});
  const closed = once(c, "close");
  c.end(); // FIN while the long-poll is held: the peer is gone
  await withTimeout(closed, 5000, "chatd closing the long-poll connection");
  // the session is gone (Node: "poll connection closed prematurely"): a POST is refused
  let status = 0;
  for (const deadline = Date.now() + 3000; Date.now() < deadline && status !== 400; ) {
    status = (await fetch(`${conf.url}/socket.io/?EIO=4&transport=polling&sid=${sid}`, { method: "POST", body: "6" })).status;
  }
  assert.equal(status, 400, "the session ended");
  // and nothing keeps the loop busy: well under a core over one second
  const before = cpu();
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok(cpu() - before < 0.3, `chatd used ${(cpu() - before).toFixed(2)} CPU-s in 1 s while idle`);
});
