// A small network fuzzer against the whole server (HTTP router, Engine.IO
// sessions, Socket.IO layer): seeded mutations of valid packets over raw
// WebSocket frames and polling POSTs, plus odd HTTP requests. The server must
// answer each one without dying, a bystander socket.io-client keeps working,
// and (with CHATD_BIN=build-san/chatd) stop() fails on any sanitizer report.
// E2E_GARBAGE_SEED=<n> replays one seed; E2E_GARBAGE_N scales the input count.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { startServer, NORMAL_TIMING, connect, closeAll, once, withTimeout } from "./lib.mjs";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");

const SEED = Number(process.env.E2E_GARBAGE_SEED || Date.now() % 100000);
const N = Number(process.env.E2E_GARBAGE_N || 150);

let conf, bench;
before(async () => {
  [conf, bench] = await Promise.all([
    startServer("conformance", { ...NORMAL_TIMING, CHATD_MAX_PAYLOAD: "100000" }),
    startServer("bench-server", NORMAL_TIMING),
  ]);
});
after(async () => {
  closeAll();
  await Promise.all([conf, bench].filter(Boolean).map((s) => s.stop()));
});

function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

const SEEDS = [
  "40", "40/custom,", '40{"token":"1"}', "41", '42["message",1,"2",{"3":[true]}]',
  '42456["message-with-ack",1]', '452-["message",{"_placeholder":true,"num":0}]',
  '462-7[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]',
  '40/chat,{"token":"t"}', '42/chat,1["join",{"chatId":"g"}]', '42/chat,["chat-message",{"chatId":"g","x":[1,2]}]',
  '42/chat,2["server-ack",{"event":"e","args":[1]}]', '43/chat,0["r"]', "3", "2", "6", "5", "1", "2probe",
  '44/x,{"message":"m"}',
];
const TOKENS = ["\x1e", "-", ",", "/", "[", "]", "{", "}", '"', "\\", "\x00", "\n", "é", "\xff", "999999999999999999", "-1", "null", "4", "5", "b"];

function mutate(r, s) {
  let out = s;
  const n = 1 + Math.floor(r() * 4);
  for (let k = 0; k < n; k++) {
    const pos = Math.floor(r() * (out.length + 1));
    switch (Math.floor(r() * 6)) {
      case 0: out = out.slice(0, pos) + out.slice(pos + 1); break; // delete
      case 1: out = out.slice(0, pos) + TOKENS[Math.floor(r() * TOKENS.length)] + out.slice(pos); break;
      case 2: out = out.slice(0, pos); break; // truncate
      case 3: out = out + SEEDS[Math.floor(r() * SEEDS.length)]; break; // splice
      case 4: out = out.slice(0, pos) + String.fromCharCode(Math.floor(r() * 256)) + out.slice(pos + 1); break;
      case 5: out = out.replace(/\d+/, String(Math.floor(r() * 1e6))); break;
    }
  }
  return out;
}

async function alive(srv) {
  const res = await fetch(`${srv.url}/socket.io/?EIO=4&transport=polling`);
  await res.arrayBuffer();
  assert.equal(res.status, 200, "server still answers a handshake");
}

/** Opens a raw WebSocket, sends frames, waits until closed by the server or all sent + an echo barrier. */
async function wsSession(srv, frames) {
  const ws = new WebSocket(`${srv.url.replace("http", "ws")}/socket.io/?EIO=4&transport=websocket`);
  const closed = new Promise((resolve) => ws.on("close", resolve));
  ws.on("error", () => {});
  ws.on("message", (d, bin) => !bin && d.toString() === "2" && ws.readyState === 1 && ws.send("3"));
  await withTimeout(new Promise((resolve, reject) => {
    ws.once("open", resolve);
    ws.once("error", reject);
  }), 3000, "ws open");
  for (const f of frames) {
    if (ws.readyState !== 1) break;
    if (typeof f === "string") ws.send(f);
    else ws.send(f, { binary: true });
  }
  // Done when the server closed us, or after our own close completes.
  if (ws.readyState === 1) ws.close();
  await withTimeout(closed, 3000, "ws close");
}

test(`garbage over WebSocket (seed ${SEED}, ${N} sessions)`, { timeout: 60000 }, async () => {
  const r = rng(SEED);
  const bystander = await connect(conf.url, "/", { transports: ["websocket"] });
  for (let i = 0; i < N; i++) {
    const srv = r() < 0.5 ? conf : bench;
    const frames = [];
    const n = 1 + Math.floor(r() * 5);
    if (r() < 0.7) frames.push(r() < 0.5 ? "40" : '40/chat,{"token":"t"}');
    for (let k = 0; k < n; k++) {
      if (r() < 0.15) frames.push(Buffer.from([...Array(Math.floor(r() * 8))].map(() => Math.floor(r() * 256))));
      else frames.push(mutate(r, SEEDS[Math.floor(r() * SEEDS.length)]));
    }
    try {
      await wsSession(srv, frames);
    } catch (e) {
      throw new Error(`seed ${SEED} session ${i} frames ${JSON.stringify(frames.map(String))}: ${e.message}`);
    }
  }
  await alive(conf);
  await alive(bench);
  const back = once(bystander, "message-back");
  bystander.emit("message", "survived");
  assert.deepEqual(await back, ["survived"]);
});

test(`garbage over polling and odd HTTP requests (seed ${SEED})`, { timeout: 60000 }, async () => {
  const r = rng(SEED + 1);
  const base = `${conf.url}/socket.io/`;
  const odd = [
    ["GET", "?EIO=3&transport=polling"], ["GET", "?EIO=4"], ["GET", "?EIO=4&transport=abc"],
    ["GET", "?EIO=4&transport=polling&sid=nope"], ["POST", "?EIO=4&transport=polling&sid=nope"],
    ["POST", "?EIO=4&transport=polling"], ["PUT", "?EIO=4&transport=polling"], ["DELETE", "?EIO=4&transport=polling"],
    ["OPTIONS", "?EIO=4&transport=polling"], ["GET", "?EIO=4&transport=websocket"], ["GET", "?EIO=4&transport=polling&sid="],
    ["GET", "?EIO=4&&&transport=polling&j=1&b64=1"], ["GET", "?%zz=%&EIO=4&transport=polling"],
  ];
  for (const [method, q] of odd) {
    const res = await fetch(base + q, { method });
    await res.arrayBuffer();
    assert.ok(res.status >= 200 && res.status < 600, `${method} ${q}`);
  }
  for (let i = 0; i < N; i++) {
    const h = await fetch(`${base}?EIO=4&transport=polling`);
    const sid = JSON.parse((await h.text()).slice(1)).sid;
    const recs = [];
    const n = 1 + Math.floor(r() * 4);
    if (r() < 0.7) recs.push("40");
    for (let k = 0; k < n; k++) recs.push(mutate(r, SEEDS[Math.floor(r() * SEEDS.length)]));
    const body = recs.join("\x1e");
    const p = await fetch(`${base}?EIO=4&transport=polling&sid=${sid}`, { method: "POST", body });
    await p.arrayBuffer();
    assert.ok([200, 400, 413].includes(p.status), `POST ${JSON.stringify(body)} -> ${p.status} (seed ${SEED})`);
    if (r() < 0.3) {
      // the session is either alive (200, maybe a close/noop) or gone (400)
      const ctl = new AbortController();
      const t = setTimeout(() => ctl.abort(), 200); // a live session holds the GET: stop waiting
      try {
        const g = await fetch(`${base}?EIO=4&transport=polling&sid=${sid}`, { signal: ctl.signal });
        await g.arrayBuffer();
        assert.ok([200, 400].includes(g.status));
      } catch (e) {
        if (e.name !== "AbortError") throw e;
      } finally {
        clearTimeout(t);
      }
    }
  }
  await alive(conf);
});
