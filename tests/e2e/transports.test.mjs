// Transports with the real socket.io-client 4.x against `chatd conformance`:
// default (polling, then upgrade to websocket), websocket-only, polling-only,
// events both ways on each, namespaces / and /custom with and without auth.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, NORMAL_TIMING, client, connect, connected, closeAll, once } from "./lib.mjs";

let srv;
before(async () => {
  srv = await startServer("conformance", NORMAL_TIMING);
});
after(async () => {
  closeAll();
  if (srv) await srv.stop();
});
afterEach(() => closeAll());

/** One round trip message -> message-back with a few argument types. */
async function roundTrip(socket, tag) {
  const args = [tag, 1, "2", { 3: [true] }, null, ["é€😀", { nested: { deep: [1.5, -2] } }]];
  const back = once(socket, "message-back");
  socket.emit("message", ...args);
  assert.deepEqual(await back, args);
}

test("default transport: starts on polling, upgrades to websocket, events flow both ways", async () => {
  const s = client(srv.url);
  const engine = s.io.engine;
  assert.equal(engine.transport.name, "polling", "first transport is polling");
  const upgraded = once(engine, "upgrade", 5000);
  const auth = once(s, "auth");
  await connected(s);
  assert.deepEqual(await auth, [{}]);
  await roundTrip(s, "before-upgrade-or-during");
  const [transport] = await upgraded;
  assert.equal(transport.name, "websocket");
  assert.equal(s.io.engine.transport.name, "websocket");
  await roundTrip(s, "after-upgrade");
});

test("websocket only", async () => {
  const s = client(srv.url, "/", { transports: ["websocket"] });
  const auth = once(s, "auth");
  await connected(s);
  assert.equal(s.io.engine.transport.name, "websocket");
  assert.deepEqual(await auth, [{}]);
  await roundTrip(s, "ws");
});

test("polling only: connect, events both ways, never upgrades", async () => {
  const s = client(srv.url, "/", { transports: ["polling"] });
  let upgraded = false;
  s.io.engine.on("upgrade", () => (upgraded = true));
  const auth = once(s, "auth");
  await connected(s);
  assert.equal(s.io.engine.transport.name, "polling");
  assert.deepEqual(await auth, [{}]);
  for (let i = 0; i < 5; i++) await roundTrip(s, `poll-${i}`);
  // several events in flight at once: every reply arrives, in order
  const got = [];
  const all = new Promise((resolve) =>
    s.on("message-back", (n) => {
      got.push(n);
      if (got.length === 20) resolve();
    }),
  );
  for (let i = 0; i < 20; i++) s.emit("message", i);
  await all;
  assert.deepEqual(got, [...Array(20).keys()]);
  assert.equal(upgraded, false);
  assert.equal(s.io.engine.transport.name, "polling");
});

test("CONNECT payload comes back as the auth event on / and /custom", async () => {
  for (const transports of [["websocket"], ["polling"]]) {
    const a = client(srv.url, "/", { transports, auth: { token: "123" } });
    const authA = once(a, "auth");
    await connected(a);
    assert.deepEqual(await authA, [{ token: "123" }]);
    assert.equal(typeof a.id, "string");

    const c = client(srv.url, "/custom", { transports, auth: { token: "abc", n: [1, { x: null }] } });
    const authC = once(c, "auth");
    await connected(c);
    assert.deepEqual(await authC, [{ token: "abc", n: [1, { x: null }] }]);

    const d = client(srv.url, "/custom", { transports });
    const authD = once(d, "auth");
    await connected(d);
    assert.deepEqual(await authD, [{}]);
  }
});

test("two namespaces multiplexed on one Engine.IO connection", async () => {
  const main = client(srv.url, "/", { forceNew: true, transports: ["websocket"] });
  await connected(main);
  // same Manager => same Engine.IO session (Manager.socket() connects by itself)
  const custom = main.io.socket("/custom");
  const auth = once(custom, "auth");
  await connected(custom);
  assert.deepEqual(await auth, [{}]);
  assert.equal(main.io.engine.id, custom.io.engine.id);
  await roundTrip(main, "mux");
  // leaving /custom keeps / working on the same connection
  custom.disconnect();
  await roundTrip(main, "after-custom-left");
  assert.equal(main.connected, true);
});

test("plain connect helper works for every transport mix", async () => {
  for (const transports of [["polling", "websocket"], ["websocket"], ["polling"]]) {
    const s = await connect(srv.url, "/", { transports });
    await roundTrip(s, transports.join("+"));
    s.disconnect();
  }
});

test("a long query parameter before EIO/transport/sid (socket.io-client's `query` option) hides nothing: polling, upgrade and websocket-only all connect", async () => {
  // a JWT passed as a query parameter is easily over 1 KB; engine.io-client puts user query
  // parameters before EIO, transport and sid
  const query = { token: "t".repeat(3000), other: "x".repeat(80) };
  for (const transports of [["polling"], ["polling", "websocket"], ["websocket"]]) {
    const s = client(srv.url, "/", { query, transports });
    await connected(s);
    await roundTrip(s, `query-${transports.join("+")}`);
    if (transports.length === 2 && s.io.engine.transport.name !== "websocket")
      await once(s.io.engine, "upgrade", 5000);
    assert.equal(s.io.engine.transport.name, transports[transports.length - 1]);
    await roundTrip(s, `query-${transports.join("+")}-after`);
    s.disconnect();
  }
});
