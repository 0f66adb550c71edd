// Rooms on `chatd bench-server` with the real socket.io-client 4.x: 200 sockets
// spread over 4 rooms each receive their room's broadcast exactly once (and
// nothing from other rooms); only members may broadcast; leave stops delivery.
// "Exactly once" is checked without sleeping: after the counted broadcast a
// second (marker) broadcast goes to every room, and per-socket order means any
// duplicate of the first would arrive before the marker.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { startServer, NORMAL_TIMING, connect, closeAll, once, withTimeout } from "./lib.mjs";

let bench;
before(async () => {
  bench = await startServer("bench-server", NORMAL_TIMING);
});
after(async () => {
  closeAll();
  if (bench) await bench.stop();
});
afterEach(() => closeAll());

const join = (s, chatId) => s.timeout(5000).emitWithAck("join", { chatId });

test("200 sockets in 4 rooms: each receives its room's broadcast exactly once", { timeout: 30000 }, async () => {
  const N = 200,
    ROOMS = 4;
  const members = [];
  // connect in batches; every 4th socket stays on polling, the rest use websocket
  for (let b = 0; b < N; b += 50) {
    const batch = await Promise.all(
      [...Array(50).keys()].map((k) => {
        const i = b + k;
        const transports = i % 4 === 3 ? ["polling"] : ["websocket"];
        return connect(bench.url, "/chat", { transports, auth: { token: `tok-${i}` } });
      }),
    );
    members.push(...batch);
  }
  const counts = members.map(() => new Map()); // per socket: msg id -> count
  const wrong = [];
  members.forEach((s, i) => {
    s.on("chat-message", (m) => {
      if (m.chatId !== `room-${i % ROOMS}`) wrong.push({ socket: i, m });
      counts[i].set(m.id, (counts[i].get(m.id) || 0) + 1);
    });
  });
  const acks = await Promise.all(members.map((s, i) => join(s, `room-${i % ROOMS}`)));
  assert.ok(acks.every((a) => a && a.ok === true), "every join acked {ok:true}");

  // one broadcast per room, sent by one member of that room (sender included)
  const waits = [];
  for (let r = 0; r < ROOMS; r++) {
    const id = `hello-${r}`;
    const roomMembers = members.filter((_, i) => i % ROOMS === r);
    waits.push(
      withTimeout(
        Promise.all(roomMembers.map((s) => once(s, "chat-message", 10000))),
        10000,
        `room-${r} broadcast`,
      ),
    );
    const ack = await members[r].timeout(5000).emitWithAck("chat-message", { chatId: `room-${r}`, id, text: `hi ${r}` });
    assert.deepEqual(ack, { ok: true });
  }
  await Promise.all(waits);

  // marker broadcast in every room; when it has arrived everywhere, count
  const markers = [];
  for (let r = 0; r < ROOMS; r++) {
    const roomMembers = members.filter((_, i) => i % ROOMS === r);
    markers.push(
      withTimeout(
        Promise.all(
          roomMembers.map(
            (s) =>
              new Promise((resolve) => {
                const f = (m) => m.id === "marker" && (s.off("chat-message", f), resolve());
                s.on("chat-message", f);
              }),
          ),
        ),
        10000,
        `marker in room-${r}`,
      ),
    );
    members[r].emit("chat-message", { chatId: `room-${r}`, id: "marker" });
  }
  await Promise.all(markers);

  assert.deepEqual(wrong, [], "nobody got another room's message");
  members.forEach((_, i) => {
    const r = i % ROOMS;
    assert.equal(counts[i].get(`hello-${r}`), 1, `socket ${i} got hello-${r} exactly once`);
    assert.equal(counts[i].get("marker"), 1, `socket ${i} got the marker once`);
    assert.equal(counts[i].size, 2, `socket ${i} got nothing else`);
  });
});

test("only members broadcast; leave stops delivery; the sender is included", async () => {
  const [a, b, c] = await Promise.all(
    ["a", "b", "c"].map((n) => connect(bench.url, "/chat", { transports: ["websocket"], auth: { token: n } })),
  );
  await join(a, "r1");
  await join(b, "r1");
  const gotA = [],
    gotB = [],
    gotC = [];
  a.on("chat-message", (m) => gotA.push(m.id));
  b.on("chat-message", (m) => gotB.push(m.id));
  c.on("chat-message", (m) => gotC.push(m.id));

  // c is not in r1: its chat-message is not broadcast
  const ackC = await c.timeout(2000).emitWithAck("chat-message", { chatId: "r1", id: "from-outsider" });
  assert.notDeepEqual(ackC, { ok: true }, "a non-member's send is not acknowledged as ok");

  const m1a = once(a, "chat-message"),
    m1b = once(b, "chat-message");
  await a.timeout(2000).emitWithAck("chat-message", { chatId: "r1", id: "m1" });
  await Promise.all([m1a, m1b]);

  assert.deepEqual(await b.timeout(2000).emitWithAck("leave", { chatId: "r1" }), { ok: true });
  const m2a = once(a, "chat-message");
  await a.timeout(2000).emitWithAck("chat-message", { chatId: "r1", id: "m2" });
  await m2a;
  // barrier for b and c: a direct ack round trip after m2 was sent (same connection order)
  await b.timeout(2000).emitWithAck("echo", 1);
  await c.timeout(2000).emitWithAck("echo", 1);

  assert.deepEqual(gotA, ["m1", "m2"]);
  assert.deepEqual(gotB, ["m1"]);
  assert.deepEqual(gotC, []);
});

test("the sender's room broadcast without ack request still arrives", async () => {
  const a = await connect(bench.url, "/chat", { transports: ["polling"], auth: { token: "p" } });
  await join(a, "solo");
  const got = once(a, "chat-message");
  a.emit("chat-message", { chatId: "solo", id: "x", text: "no ack" });
  assert.deepEqual(await got, [{ chatId: "solo", id: "x", text: "no ack" }]);
});
