// The bare Engine.IO echo endpoint of `chatd conformance` (/engine.io/) with the
// real engine.io-client 6.x (the transport layer of socket.io-client 4.x):
// text and binary messages come back unchanged on polling, websocket and after
// the upgrade; many messages in one polling payload; close from the client.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { startServer, NORMAL_TIMING, once, withTimeout } from "./lib.mjs";

const require = createRequire(import.meta.url);
const { Socket } = require("engine.io-client");

let srv;
const opened = new Set();
before(async () => {
  srv = await startServer("conformance", NORMAL_TIMING);
});
after(async () => {
  for (const s of opened) s.close();
  if (srv) await srv.stop();
});

async function open(transports, upgrade = true) {
  const s = new Socket(srv.url, { path: "/engine.io/", transports, upgrade });
  opened.add(s);
  await withTimeout(
    new Promise((resolve, reject) => {
      s.once("open", resolve);
      s.once("error", reject);
    }),
    5000,
    "engine.io open",
  );
  return s;
}

/** Sends every item, resolves with the echoes (as many as sent). */
function echo(s, items) {
  const got = [];
  const p = new Promise((resolve) => {
    const f = (d) => {
      got.push(d);
      if (got.length === items.length) {
        s.off("message", f);
        resolve(got);
      }
    };
    s.on("message", f);
  });
  for (const it of items) s.send(it);
  return withTimeout(p, 5000, `${items.length} echoes (got ${got.length})`);
}

const norm = (d) => (typeof d === "string" ? d : { bin: Buffer.from(d).toString("hex") });
// (no 0x1e in text: Engine.IO v4 polling cannot carry it; an empty message
// arrives as undefined in engine.io-client)
const ITEMS = ["hello", "é€😀 \u0001", Buffer.from([1, 2, 3, 4]), Buffer.from([0]), "4x", "2probe", "b"];

for (const [label, transports] of [
  ["polling", ["polling"]],
  ["websocket", ["websocket"]],
]) {
  test(`Engine.IO echo over ${label}: text and binary unchanged`, async () => {
    const s = await open(transports, false);
    assert.equal(s.transport.name, transports[0]);
    const got = await echo(s, ITEMS);
    assert.deepEqual(got.map(norm), ITEMS.map(norm));
    // a burst: over polling these travel as several records of one payload
    const burst = [...Array(50).keys()].map((i) => (i % 5 === 0 ? Buffer.from([i]) : `m${i}`));
    assert.deepEqual((await echo(s, burst)).map(norm), burst.map(norm));
    s.close();
  });
}

test("Engine.IO echo across the upgrade", async () => {
  const s = await open(["polling", "websocket"]);
  const upgraded = once(s, "upgrade", 5000);
  const before = await echo(s, ITEMS);
  assert.deepEqual(before.map(norm), ITEMS.map(norm));
  const [t] = await upgraded;
  assert.equal(t.name, "websocket");
  const afterUp = await echo(s, ITEMS);
  assert.deepEqual(afterUp.map(norm), ITEMS.map(norm));
  s.close();
});

test("Engine.IO handshake values", async () => {
  const s = await open(["polling"], false);
  assert.equal(typeof s.id, "string");
  assert.match(s.id, /^[A-Za-z0-9_-]+$/, "sid is URL-safe");
  assert.equal(s._pingInterval, 25000);
  assert.equal(s._pingTimeout, 20000);
  assert.equal(s._maxPayload, 1000000);
  s.close();
});
