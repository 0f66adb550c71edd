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

test("an upgrade probe that does not finish in time is dropped and the session goes on polling, with what the probe held back", async () => {
  // upgrade timeout = min(10 s, pingInterval) = 1 s here
  const quick = await startServer("conformance", { CHATD_PING_INTERVAL_MS: "1000", CHATD_PING_TIMEOUT_MS: "3000" });
  const WebSocket = require("ws");
  const base = `${quick.url}/engine.io/?EIO=4`;
  try {
    const hs = await (await fetch(`${base}&transport=polling`)).text();
    const sid = JSON.parse(hs.slice(1)).sid;
    const poll = `${base}&transport=polling&sid=${sid}`;
    const post = async (body) => assert.equal((await fetch(poll, { method: "POST", body })).status, 200);
    /** Polls until a packet matches (answering pings); returns every packet seen. */
    const pollFor = async (want, ms) => {
      const seen = [];
      const t0 = Date.now();
      while (Date.now() - t0 < ms) {
        const r = await fetch(poll);
        assert.equal(r.status, 200, `session alive (${seen.join(",")})`);
        const packets = (await r.text()).split("\x1e");
        seen.push(...packets);
        if (packets.includes("2")) await post("3");
        if (packets.includes(want)) return seen;
      }
      assert.fail(`no ${want} within ${ms} ms: ${seen.join(",")}`);
    };
    const probe = () => {
      const ws = new WebSocket(`${base.replace("http", "ws")}&transport=websocket&sid=${sid}`);
      const closed = once(ws, "close", 8000);
      return { ws, closed, opened: once(ws, "open", 5000) };
    };

    // A: a probe that never says anything
    const a = probe();
    await a.opened;
    await post("4while A");
    await a.closed; // dropped by the server
    await pollFor("4while A", 3000);

    // B: "2probe" answered, but "5" never comes (as if "3probe" had been lost)
    const b = probe();
    await b.opened;
    const got3 = once(b.ws, "message", 5000);
    b.ws.send("2probe");
    assert.equal(String((await got3)[0]), "3probe");
    await post("4while B");
    await b.closed;
    await pollFor("4while B", 3000);

    // and a probe that does finish still upgrades
    const c = probe();
    await c.opened;
    const next = (want) =>
      withTimeout(new Promise((resolve) => c.ws.on("message", (m) => String(m) === want && resolve())), 5000, want);
    const probed = next("3probe");
    c.ws.send("2probe");
    await probed;
    const echoed = next("4after upgrade");
    c.ws.send("5");
    c.ws.send("4after upgrade");
    await echoed;
    c.ws.close();
  } finally {
    await quick.stop();
  }
});
