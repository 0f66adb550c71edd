// Acknowledgements both ways with the real socket.io-client 4.x:
// client -> server (emitWithAck with a timeout) on `chatd conformance` and
// `chatd bench-server`, server -> client (bench `server-ack`), and the client's
// ack timeout error when the server never acknowledges.
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

test("client -> server ack: message-with-ack returns its arguments (conformance /)", async () => {
  for (const transports of TRANSPORTS) {
    const s = await connect(conf.url, "/", { transports });
    const args = [1, "2", { 3: [false] }, null, [true, { x: "é" }]];
    const res = await s.timeout(2000).emitWithAck("message-with-ack", ...args);
    assert.deepEqual(res, args[0], "emitWithAck resolves with the first ack argument");
    // the callback form sees every ack argument
    const all = await new Promise((resolve, reject) =>
      s.timeout(2000).emit("message-with-ack", ...args, (err, ...r) => (err ? reject(err) : resolve(r))),
    );
    assert.deepEqual(all, args);
    // no arguments at all
    const none = await new Promise((resolve, reject) =>
      s.timeout(2000).emit("message-with-ack", (err, ...r) => (err ? reject(err) : resolve(r))),
    );
    assert.deepEqual(none, []);
  }
});

test("client -> server ack ids: many acks in flight resolve to the right callers", async () => {
  const s = await connect(conf.url, "/", { transports: ["websocket"] });
  const n = 100;
  const res = await Promise.all(
    [...Array(n).keys()].map((i) => s.timeout(3000).emitWithAck("message-with-ack", { i })),
  );
  assert.deepEqual(
    res.map((r) => r.i),
    [...Array(n).keys()],
  );
});

test("client -> server ack on bench-server: echo, join", async () => {
  for (const transports of TRANSPORTS) {
    const s = await connect(bench.url, "/chat", { transports, auth: { token: "t" } });
    const args = ["a", 2, { b: [3, null] }];
    const r = await new Promise((resolve, reject) =>
      s.timeout(2000).emit("echo", ...args, (err, ...res) => (err ? reject(err) : resolve(res))),
    );
    assert.deepEqual(r, args);
    assert.deepEqual(await s.timeout(2000).emitWithAck("join", { chatId: "room-ack" }), { ok: true });
    assert.deepEqual(await s.timeout(2000).emitWithAck("leave", { chatId: "room-ack" }), { ok: true });
  }
});

test("server -> client ack: server-ack emits with an ack request, the reply comes back", async () => {
  for (const transports of TRANSPORTS) {
    const s = await connect(bench.url, "/chat", { transports, auth: { token: "t" } });
    let seen = null;
    s.on("ping-me", (a, b, ack) => {
      seen = [a, b];
      assert.equal(typeof ack, "function", "server asked for an ack");
      ack("pong", { got: [a, b] }, 42);
    });
    const result = once(s, "server-ack-result");
    const ok = await s.timeout(2000).emitWithAck("server-ack", { event: "ping-me", args: [1, { two: 2 }] });
    assert.deepEqual(ok, { ok: true });
    const [res] = await result;
    assert.deepEqual(seen, [1, { two: 2 }]);
    assert.deepEqual(res, ["pong", { got: [1, { two: 2 }] }, 42]);
    s.off("ping-me");
  }
});

test("server -> client ack with an empty ack", async () => {
  const s = await connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: "t" } });
  s.on("no-args", (ack) => ack());
  const result = once(s, "server-ack-result");
  await s.timeout(2000).emitWithAck("server-ack", { event: "no-args", args: [] });
  assert.deepEqual(await result, [[]]);
});

test("ack timeout: the server never acknowledges an ignored event", async () => {
  for (const transports of [["websocket"], ["polling"]]) {
    const s = await connect(conf.url, "/", { transports });
    const t0 = Date.now();
    const err = await new Promise((resolve) =>
      s.timeout(200).emit("nobody-listens", { x: 1 }, (e) => resolve(e)),
    );
    assert.ok(err instanceof Error, "callback gets an error");
    assert.match(err.message, /timed out/);
    assert.ok(Date.now() - t0 >= 190, "not before the timeout");
    await assert.rejects(s.timeout(200).emitWithAck("nobody-listens"), /timed out/);
    // the connection is still fine afterwards
    assert.deepEqual(await s.timeout(2000).emitWithAck("message-with-ack", "still-here"), "still-here");
  }
});
