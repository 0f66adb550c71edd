// /chat event semantics (issue 3, SPEC §4, §12.5-12.8, §12.16, §12.22): bad
// payloads and unknown events answer bad_request; history pages both ways over
// the socket and REST; read markers are monotonic; typing reaches the room but
// not its sender; close-chat by the customer closes the chat for writes while
// a retried clientId still returns its original message.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, chat, uid, rest, sql, closeDb } from "./chatlib.mjs";

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const seqs = (msgs) => msgs.map((m) => m.seq);

let A, B;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([startChatd("events-a"), startChatd("events-b")]);
});
after(async () => {
  closeAll();
  await closeDb();
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const opts = { skip: SKIP_REASON, timeout: 60000 };

async function expectCode(s, ev, payload, code) {
  const r = await s.ack(ev, payload);
  assert.equal(r?.ok, false, `${ev} ${JSON.stringify(payload)} should fail with ${code}: ${JSON.stringify(r)}`);
  assert.equal(r.error?.code, code, `${ev} ${JSON.stringify(payload)}: ${JSON.stringify(r)}`);
  assert.equal(typeof r.error.message, "string");
}

test("bad payloads and unknown events answer bad_request, and store or broadcast nothing", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const other = await chat(A.url, { token: cust.token });
  const chatId = (await s.sendOk(null, "first", uid())).chatId;

  const badMessages = [
    ["missing clientId", { chatId, text: "x" }],
    ["empty clientId", { chatId, clientId: "", text: "x" }],
    ["numeric clientId", { chatId, clientId: 7, text: "x" }],
    ["missing text", { chatId, clientId: uid() }],
    ["numeric text", { chatId, clientId: uid(), text: 42 }],
    ["object text", { chatId, clientId: uid(), text: { a: 1 } }],
    ["null text", { chatId, clientId: uid(), text: null }],
    ["attachments not an array", { chatId, clientId: uid(), text: "x", attachments: "up-1" }],
    ["attachments of numbers", { chatId, clientId: uid(), text: "x", attachments: [1, 2] }],
    ["no chatId, missing clientId", { text: "x" }],
  ];
  for (const [what, payload] of badMessages) {
    const r = await s.ack("chat-message", payload);
    assert.equal(r?.ok, false, `${what}: ${JSON.stringify(r)}`);
    assert.equal(r.error?.code, "bad_request", `${what}: ${JSON.stringify(r)}`);
  }
  for (const args of [[], ["just a string"], [42], [null], [[1, 2]]]) {
    const r = await s.ackRaw("chat-message", args);
    assert.equal(r?.error?.code, "bad_request", `chat-message with args ${JSON.stringify(args)}: ${JSON.stringify(r)}`);
  }
  await expectCode(s, "frobnicate", { chatId }, "bad_request");
  await expectCode(s, "pick-me-up", undefined, "bad_request");
  await expectCode(s, "typing", { chatId }, "bad_request");
  await expectCode(s, "typing", { chatId, isTyping: "yes" }, "bad_request");
  await expectCode(s, "typing", { isTyping: true }, "bad_request");
  await expectCode(s, "read", { chatId }, "bad_request");
  await expectCode(s, "read", { chatId, seq: "3" }, "bad_request");
  await expectCode(s, "read", { chatId, seq: -1 }, "bad_request");
  await expectCode(s, "read", { chatId, seq: 1.5 }, "bad_request");
  await expectCode(s, "read", { seq: 1 }, "bad_request");
  await expectCode(s, "history", {}, "bad_request");
  await expectCode(s, "history", { chatId, afterSeq: "x" }, "bad_request");
  await expectCode(s, "history", { chatId, beforeSeq: -3 }, "bad_request");
  await expectCode(s, "history", { chatId, limit: "ten" }, "bad_request");
  await expectCode(s, "close-chat", {}, "bad_request");
  // REST bodies
  for (const body of ["not json", "[]", JSON.stringify({ text: "x" }), JSON.stringify({ clientId: uid(), text: 3 })]) {
    const r = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body });
    assert.equal(r.status, 400, `POST ${body}: ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error.code, "bad_request");
  }
  const r = await rest(A.url, "GET", `/chat/chats/${chatId}/messages?afterSeq=abc`, { token: cust.token });
  assert.equal(r.status, 400, JSON.stringify(r.body));

  // the socket is still fine and nothing was stored or broadcast
  const m = await s.sendOk(chatId, "after the bad ones", uid());
  assert.equal(m.seq, 2);
  await other.waitMessage(chatId, 2);
  assert.deepEqual(seqs(other.messages(chatId)), [1, 2]);
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1", [chatId]);
  assert.equal(n, 2);
  assert.deepEqual(s.disconnects, []);
});

test("history pages both ways: afterSeq / beforeSeq / limit / hasMore (socket and REST)", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const chatId = (await s.sendOk(null, "m1", "m1")).chatId;
  for (let i = 2; i <= 25; i++) await s.sendOk(chatId, `m${i}`, `m${i}`);
  const ag = await chat(B.url, { token: person(org, "agent").token });

  const cases = [
    [{}, range(1, 25), false],
    [{ limit: 10 }, range(16, 25), true],
    [{ beforeSeq: 16, limit: 10 }, range(6, 15), true],
    [{ beforeSeq: 6, limit: 10 }, range(1, 5), false],
    [{ beforeSeq: 11, limit: 10 }, range(1, 10), false],
    [{ beforeSeq: 1 }, [], false],
    [{ beforeSeq: 1000, limit: 3 }, [23, 24, 25], true],
    [{ afterSeq: 0, limit: 10 }, range(1, 10), true],
    [{ afterSeq: 10, limit: 10 }, range(11, 20), true],
    [{ afterSeq: 20, limit: 10 }, range(21, 25), false],
    [{ afterSeq: 15, limit: 10 }, range(16, 25), false],
    [{ afterSeq: 25 }, [], false],
    [{ afterSeq: 99 }, [], false],
    [{ afterSeq: 3, limit: 1 }, [4], true],
    [{ afterSeq: 0 }, range(1, 25), false],
  ];
  for (const [q, want, more] of cases) {
    for (const who of [s, ag]) {
      const h = await who.ack("history", { chatId, ...q });
      assert.equal(h.ok, true, `${JSON.stringify(q)}: ${JSON.stringify(h).slice(0, 200)}`);
      assert.deepEqual([seqs(h.messages), h.hasMore], [want, more], `history ${JSON.stringify(q)} (${who === s ? "customer" : "agent"})`);
      for (const m of h.messages) assert.equal(m.text, `m${m.seq}`);
    }
    const qs = new URLSearchParams(Object.entries(q).map(([k, v]) => [k, String(v)])).toString();
    const r = await rest(B.url, "GET", `/chat/chats/${chatId}/messages${qs ? `?${qs}` : ""}`, { token: cust.token });
    assert.equal(r.status, 200, `REST ${qs}: ${JSON.stringify(r.body)}`);
    assert.deepEqual([seqs(r.body.messages), r.body.hasMore], [want, more], `REST ?${qs}`);
  }
  // a page walk backwards then forwards covers every message once
  const back = [];
  let h = await s.ack("history", { chatId, limit: 7 });
  back.unshift(...h.messages);
  while (h.hasMore) {
    h = await s.ack("history", { chatId, beforeSeq: back[0].seq, limit: 7 });
    back.unshift(...h.messages);
  }
  assert.deepEqual(seqs(back), range(1, 25));
  const fwd = [];
  h = { hasMore: true };
  while (h.hasMore) {
    h = await ag.ack("history", { chatId, afterSeq: fwd.length ? fwd[fwd.length - 1].seq : 0, limit: 6 });
    fwd.push(...h.messages);
  }
  assert.deepEqual(fwd, back);
  // an existing chat with no message in range is an empty page, a missing one is not_found
  await expectCode(s, "history", { chatId: "missing-chat" }, "not_found");
});

test("read markers are monotonic: a lower seq is acknowledged with the stored marker and not announced", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent");
  const tab1 = await chat(A.url, { token: cust.token });
  const tab2 = await chat(B.url, { token: cust.token }, { transports: ["polling"] });
  const ag = await chat(B.url, { token: agent.token });
  const chatId = (await tab1.sendOk(null, "m1", uid())).chatId;
  for (let i = 2; i <= 15; i++) await tab1.sendOk(chatId, `m${i}`, uid());
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
  await tab2.waitMessage(chatId, 15);

  assert.deepEqual(await tab1.ack("read", { chatId, seq: 10 }), { ok: true, seq: 10 });
  assert.deepEqual(await tab1.ack("read", { chatId, seq: 5 }), { ok: true, seq: 10 }, "lower seq: the stored marker");
  assert.deepEqual(await tab2.ack("read", { chatId, seq: 10 }), { ok: true, seq: 10 }, "same seq from another tab of the same customer");
  assert.deepEqual(await tab2.ack("read", { chatId, seq: 0 }), { ok: true, seq: 10 });
  assert.deepEqual(await tab1.ack("read", { chatId, seq: 12 }), { ok: true, seq: 12 });
  // the agent's marker is its own
  assert.deepEqual(await ag.ack("read", { chatId, seq: 3 }), { ok: true, seq: 3 });
  assert.deepEqual(await ag.ack("read", { chatId, seq: 2 }), { ok: true, seq: 3 });
  // marker: the customer's next advance
  assert.deepEqual(await tab2.ack("read", { chatId, seq: 15 }), { ok: true, seq: 15 });
  for (const [name, s] of Object.entries({ tab1, tab2, ag })) {
    await s.waitEvent("read", (d) => d.chatId === chatId && d.seq === 15);
    assert.deepEqual(
      s.events("read", chatId),
      [
        { chatId, by: { type: "customer", id: cust.key }, seq: 10 },
        { chatId, by: { type: "customer", id: cust.key }, seq: 12 },
        { chatId, by: { type: "agent", id: agent.sub }, seq: 3 },
        { chatId, by: { type: "customer", id: cust.key }, seq: 15 },
      ],
      `${name}: only advances are announced`,
    );
  }
  const rows = await sql("SELECT reader_type, reader_id, seq::int AS seq FROM read_markers WHERE chat_id = $1 ORDER BY reader_type", [chatId]);
  assert.deepEqual(rows, [
    { reader_type: "agent", reader_id: agent.sub, seq: 3 },
    { reader_type: "customer", reader_id: cust.key, seq: 15 },
  ]);
});

test("typing reaches the room (other tabs, observers on another node) but not the sending socket; it is never stored", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer", { name: "Tia" });
  const agent = person(org, "agent");
  const tab1 = await chat(A.url, { token: cust.token });
  const tab2 = await chat(A.url, { token: cust.token });
  const ag = await chat(B.url, { token: agent.token });
  const chatId = (await tab1.sendOk(null, "m1", uid())).chatId;
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
  assert.equal((await tab1.ack("typing", { chatId, isTyping: true })).ok, true);
  assert.equal((await tab1.ack("typing", { chatId, isTyping: false })).ok, true);
  const want = (isTyping) => ({ chatId, from: { type: "customer", id: cust.key, name: "Tia" }, isTyping });
  for (const s of [tab2, ag]) {
    await s.waitEvent("typing", (d) => d.isTyping === false);
    assert.deepEqual(s.events("typing"), [want(true), want(false)]);
  }
  const marker = await tab2.sendOk(chatId, "marker", uid());
  assert.equal(marker.seq, 2, "typing took no seq");
  await tab1.waitMessage(chatId, 2);
  assert.deepEqual(tab1.events("typing"), [], "the sender's own socket gets no typing");
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1", [chatId]);
  assert.equal(n, 2);
});

test("close-chat by the customer: system message, chat-state closed, chat-closed; then writes are conflict, a retried clientId returns the original, a new message opens a new chat", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent");
  const tab1 = await chat(A.url, { token: cust.token });
  const tab2 = await chat(B.url, { token: cust.token });
  const ag = await chat(B.url, { token: agent.token });
  const m1 = await tab1.sendOk(null, "m1", "keep-1");
  const chatId = m1.chatId;
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
  const m2 = await tab2.sendOk(chatId, "m2", "keep-2");
  // (closing only once m2 reached every socket: concurrent writes on two nodes
  // are the cross-node ordering test of chat_delivery)
  for (const s of [tab1, tab2, ag]) await s.waitMessage(chatId, 2);

  const r = await tab1.ack("close-chat", { chatId });
  assert.equal(r.ok, true, JSON.stringify(r));
  for (const [name, s] of Object.entries({ tab1, tab2, ag })) {
    const closed = await s.waitEvent("chat-closed", (d) => d.chatId === chatId);
    assert.deepEqual(closed, { chatId, reason: "customer" }, name);
    const st = await s.waitEvent("chat-state", (d) => d.chatId === chatId && d.status === "closed");
    assert.equal(st.status, "closed");
    const sys = await s.waitMessage(chatId, 3);
    assert.equal(sys.sender.type, "system", `${name}: ${JSON.stringify(sys)}`);
    assert.equal(typeof sys.text, "string");
    assert.ok(sys.text.length > 0);
  }
  const chatRow = await rest(A.url, "GET", `/chat/chats/${chatId}`, { token: cust.token });
  assert.equal(chatRow.body.chat.status, "closed");
  assert.match(chatRow.body.chat.closedAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  assert.equal(chatRow.body.chat.lastSeq, 3);

  // writing into a closed chat is conflict, on both nodes and over REST
  await expectCode(tab1, "chat-message", { chatId, clientId: "new-1", text: "still there?" }, "conflict");
  await expectCode(tab2, "chat-message", { chatId, clientId: "new-2", text: "still there?" }, "conflict");
  // and so is starting to type (SPEC 12.8), on both nodes; stopping is harmless
  await expectCode(tab1, "typing", { chatId, isTyping: true }, "conflict");
  await expectCode(tab2, "typing", { chatId, isTyping: true }, "conflict");
  const post = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body: { clientId: "new-3", text: "x" } });
  assert.equal(post.status, 409, JSON.stringify(post.body));
  assert.equal(post.body.error.code, "conflict");
  // a retried clientId still returns the original (SPEC 12.8)
  assert.deepEqual(await tab2.send(chatId, "m1", "keep-1"), { ok: true, message: m1 });
  assert.deepEqual(await tab1.send(chatId, "m2", "keep-2"), { ok: true, message: m2 });
  const replay = await rest(B.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body: { clientId: "keep-2", text: "m2" } });
  assert.equal(replay.status, 200, JSON.stringify(replay.body));
  assert.deepEqual(replay.body, { message: m2 });
  // the chat is no longer an open chat of the customer
  const again = await chat(A.url, { token: cust.token });
  assert.deepEqual(again.session.chats, []);

  // a message without chatId opens a new chat (seq 1): the marker for "nothing else arrived"
  const fresh = await tab1.sendOk(null, "new topic", uid());
  assert.notEqual(fresh.chatId, chatId);
  assert.equal(fresh.seq, 1);
  await tab2.waitMessage(fresh.chatId, 1);
  for (const [name, s] of Object.entries({ tab1, tab2 })) {
    assert.deepEqual(seqs(s.messages(chatId)), [1, 2, 3], `${name}: no message after the close`);
    assert.equal(s.events("chat-closed").length, 1);
  }
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1", [chatId]);
  assert.equal(n, 3);
});

test("five tabs opening the customer's chat at the same moment share one chat: one chat-state, seqs 1..5", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const tabs = await Promise.all(range(1, 5).map((i) => chat(i % 2 ? A.url : B.url, { token: cust.token })));
  const acks = await Promise.all(tabs.map((t, i) => t.send(null, `open ${i}`, `open-${i}`)));
  for (const a of acks) assert.equal(a.ok, true, JSON.stringify(a));
  const ids = new Set(acks.map((a) => a.message.chatId));
  assert.equal(ids.size, 1, `one chat: ${JSON.stringify([...ids])}`);
  const chatId = acks[0].message.chatId;
  assert.deepEqual(seqs(acks.map((a) => a.message)).sort(), [1, 2, 3, 4, 5]);
  const marker = await tabs[0].sendOk(chatId, "marker", uid());
  for (const t of tabs) {
    await t.waitMessage(chatId, marker.seq);
    assert.equal(t.events("chat-state", chatId).length, 1, `one chat-state per tab: ${JSON.stringify(t.events("chat-state"))}`);
    // each once (their order across nodes is chat_delivery's cross-node ordering test)
    assert.deepEqual(seqs(t.messages(chatId)).sort((p, q) => p - q), [1, 2, 3, 4, 5, 6]);
  }
  const rows = await sql("SELECT id FROM chats WHERE org_id = $1", [org]);
  assert.deepEqual(rows.map((r) => r.id), [chatId]);
});

test("a config's greeting (no assistant) is the chat's first message, once; an unknown or foreign configId is not_found", opts, async () => {
  const org = newOrg();
  const [{ id: cfg }] = await sql("INSERT INTO chat_configs (org_id, name, greeting) VALUES ($1, 'Support', 'Welcome! An agent will be with you shortly.') RETURNING id", [org]);
  const cust = person(org, "customer");
  const t1 = await chat(A.url, { token: cust.token, context: { configId: cfg } });
  assert.deepEqual(t1.session.chats, []);
  const first = await t1.sendOk(null, "hi", "hi");
  assert.equal(first.seq, 2, "the greeting took seq 1");
  const chatId = first.chatId;
  const greet = await t1.waitMessage(chatId, 1);
  assert.equal(greet.sender.type, "system");
  assert.equal(greet.text, "Welcome! An agent will be with you shortly.");
  await t1.waitMessage(chatId, 2);
  assert.deepEqual(seqs(t1.messages(chatId)), [1, 2], "the greeting arrives first");
  const st = await t1.waitEvent("chat-state", (d) => d.chatId === chatId);
  assert.equal(st.status, "queued");
  const chatObj = (await rest(A.url, "GET", `/chat/chats/${chatId}`, { token: cust.token })).body.chat;
  assert.equal(chatObj.configId, cfg);
  // a second tab and a reconnect reuse the chat; no second greeting
  const t2 = await chat(B.url, { token: cust.token, context: { configId: cfg } });
  assert.deepEqual(t2.session.chats.map((c) => c.id), [chatId]);
  const again = await t2.sendOk(null, "me again", uid());
  assert.deepEqual([again.chatId, again.seq], [chatId, 3]);
  await t1.waitMessage(chatId, 3);
  assert.deepEqual(seqs(t1.messages(chatId)), [1, 2, 3]);
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM messages WHERE chat_id = $1 AND sender_type = 'system'", [chatId]);
  assert.equal(n, 1);
  // configs of other orgs and unknown ids
  const [{ id: foreign }] = await sql("INSERT INTO chat_configs (org_id, name) VALUES ($1, 'Theirs') RETURNING id", [newOrg()]);
  for (const configId of [foreign, "no-such-config"]) {
    const t = await chat(A.url, { token: person(org, "customer").token, context: { configId } });
    await expectCode(t, "chat-message", { clientId: uid(), text: "hello?" }, "not_found");
  }
});

test("GET /chat/chats: agents list the org's chats with status filter and cursor pages; customers only theirs", opts, async () => {
  const org = newOrg();
  const agent = person(org, "agent");
  const custs = range(1, 3).map(() => person(org, "customer"));
  const ids = [];
  for (const c of custs) {
    const s = await chat(A.url, { token: c.token });
    ids.push((await s.sendOk(null, "hello", uid())).chatId);
    if (ids.length === 2) assert.equal((await s.ack("close-chat", { chatId: ids[1] })).ok, true);
  }
  const p1 = await rest(A.url, "GET", "/chat/chats?limit=2", { token: agent.token });
  assert.equal(p1.status, 200, JSON.stringify(p1.body));
  assert.equal(p1.body.chats.length, 2);
  assert.equal(typeof p1.body.nextCursor, "string");
  const p2 = await rest(B.url, "GET", `/chat/chats?limit=2&cursor=${encodeURIComponent(p1.body.nextCursor)}`, { token: agent.token });
  assert.equal(p2.status, 200, JSON.stringify(p2.body));
  assert.equal(p2.body.chats.length, 1);
  assert.equal(p2.body.nextCursor, null);
  assert.deepEqual([...p1.body.chats, ...p2.body.chats].map((c) => c.id).sort(), [...ids].sort());
  const c0 = [...p1.body.chats, ...p2.body.chats].find((c) => c.id === ids[0]);
  assert.equal(c0.orgId, org);
  assert.equal(c0.status, "queued");
  assert.equal(c0.customer.id, custs[0].key);
  assert.equal(c0.customer.name, custs[0].name);
  assert.equal(c0.lastSeq, 1);
  assert.ok(Array.isArray(c0.skills));
  assert.equal(typeof c0.priority, "number");
  assert.match(c0.createdAt, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);
  const closed = await rest(A.url, "GET", "/chat/chats?status=closed", { token: agent.token });
  assert.deepEqual(closed.body.chats.map((c) => c.id), [ids[1]]);
  const queued = await rest(A.url, "GET", "/chat/chats?status=queued", { token: agent.token });
  assert.deepEqual(queued.body.chats.map((c) => c.id).sort(), [ids[0], ids[2]].sort());
  assert.equal((await rest(A.url, "GET", "/chat/chats?status=bogus", { token: agent.token })).status, 400);
  const mine = await rest(A.url, "GET", "/chat/chats", { token: custs[2].token });
  assert.deepEqual(mine.body.chats.map((c) => c.id), [ids[2]]);
});

test("unobserve-chat: the agent's tabs (on both nodes) stop receiving the chat; the observe joined all of them", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent");
  const c = await chat(A.url, { token: cust.token });
  const x = (await c.sendOk(null, "chat x", uid())).chatId;
  const c2 = await chat(A.url, { token: person(org, "customer").token });
  const y = (await c2.sendOk(null, "chat y", uid())).chatId;
  const ag1 = await chat(A.url, { token: agent.token });
  const ag2 = await chat(A.url, { token: agent.token }, { transports: ["polling"] });
  const ag3 = await chat(B.url, { token: agent.token });
  assert.equal((await ag1.ack("observe-chat", { chatId: x })).ok, true);
  assert.equal((await ag1.ack("observe-chat", { chatId: y })).ok, true);
  const mx = await c.sendOk(x, "x while observed", uid());
  for (const s of [ag1, ag2, ag3]) await s.waitMessage(x, mx.seq);
  assert.deepEqual(await ag2.ack("unobserve-chat", { chatId: x }), { ok: true });
  const gone = await c.sendOk(x, "x after unobserve", "gone");
  await c.waitMessage(x, gone.seq);
  const my = await c2.sendOk(y, "y marker", uid());
  for (const s of [ag1, ag2, ag3]) {
    await s.waitMessage(y, my.seq);
    assert.deepEqual(seqs(s.messages(x)), [mx.seq], "nothing of x after unobserve");
  }
});

test("message text round-trips exactly (unicode, 60 KB); odd text never answers internal", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const other = await chat(B.url, { token: cust.token });
  const chatId = (await s.sendOk(null, "start", uid())).chatId;
  const texts = ["héllo 👋 مرحبا 你好 \u{1F600}\u200d", "quotes \" ' \\ \n\t</script><b>x</b>", "x".repeat(60000), ""];
  for (const text of texts) {
    const m = await s.sendOk(chatId, text, uid());
    assert.equal(m.text, text);
    const got = await other.waitMessage(chatId, m.seq);
    assert.equal(got.text, text);
    const [row] = await sql("SELECT text FROM messages WHERE chat_id = $1 AND seq = $2", [chatId, m.seq]);
    assert.equal(row.text, text);
  }
  // PostgreSQL text cannot hold NUL: either stored faithfully or refused as bad_request
  const r = await s.send(chatId, "a\u0000b", uid());
  if (r.ok) assert.equal(r.message.text, "a\u0000b", "NUL: the text was cut short instead of kept or refused");
  else assert.equal(r.error.code, "bad_request", JSON.stringify(r));
  const h = await s.ack("history", { chatId });
  assert.equal(h.ok, true);
  assert.deepEqual(s.disconnects, []);
});

test("200 messages back to back from one socket are all accepted (rate limit defaults, SPEC 12.23)", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const chatId = (await s.sendOk(null, "m0", uid())).chatId;
  const acks = await Promise.all(range(1, 199).map((i) => s.send(chatId, `m${i}`, `m${i}`)));
  const bad = acks.filter((a) => !a.ok);
  assert.deepEqual(bad.slice(0, 3), [], `${bad.length} of 199 refused`);
  assert.deepEqual(seqs(acks.map((a) => a.message)), range(2, 200));
});

test("the assigned agent (assignment written to PostgreSQL as pick-next would) is in the chat at connect, writes as agent, and closes with reason agent", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const agent = person(org, "agent", { name: "Ada" });
  const other = person(org, "agent");
  const c = await chat(A.url, { token: cust.token });
  const chatId = (await c.sendOk(null, "help please", uid())).chatId;
  await sql("UPDATE chats SET status = 'assigned', agent_id = $2, agent_name = $3, assigned_at = now() WHERE id = $1", [chatId, agent.sub, agent.name]);
  const ag = await chat(B.url, { token: agent.token });
  assert.deepEqual(ag.session.chats, [{ id: chatId, status: "assigned", lastSeq: 1 }]);
  const ag2 = await chat(A.url, { token: agent.token }, { transports: ["polling"] });
  const oth = await chat(A.url, { token: other.token });

  const fromCust = await c.sendOk(chatId, "are you there?", uid());
  for (const s of [ag, ag2]) await s.waitMessage(chatId, fromCust.seq);
  const reply = await ag.sendOk(chatId, "Yes, how can I help?", "agent-1");
  assert.equal(reply.sender.type, "agent");
  assert.equal(reply.sender.id, agent.sub);
  assert.equal(reply.sender.name, "Ada");
  for (const s of [c, ag2]) assert.deepEqual(await s.waitMessage(chatId, reply.seq), reply);
  assert.deepEqual(await ag2.send(chatId, "Yes, how can I help?", "agent-1"), { ok: true, message: reply }, "replay from the agent's other tab");
  const viaRest = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: agent.token, body: { clientId: "agent-2", text: "via REST" } });
  assert.equal(viaRest.status, 201, JSON.stringify(viaRest.body));
  assert.equal(viaRest.body.message.sender.type, "agent");
  // typing from the agent reaches the customer
  assert.equal((await ag.ack("typing", { chatId, isTyping: true })).ok, true);
  const t = await c.waitEvent("typing", (d) => d.chatId === chatId);
  assert.deepEqual(t.from, { type: "agent", id: agent.sub, name: "Ada" });
  // another agent may not write or close
  await expectCode(oth, "chat-message", { chatId, clientId: uid(), text: "me too" }, "forbidden");
  await expectCode(oth, "close-chat", { chatId }, "forbidden");
  // the assigned agent closes it
  assert.equal((await ag2.ack("close-chat", { chatId })).ok, true);
  for (const s of [c, ag, ag2]) {
    assert.deepEqual(await s.waitEvent("chat-closed", (d) => d.chatId === chatId), { chatId, reason: "agent" });
    const sys = await s.waitMessage(chatId, viaRest.body.message.seq + 1);
    assert.equal(sys.sender.type, "system");
  }
  await expectCode(ag, "chat-message", { chatId, clientId: uid(), text: "one more thing" }, "conflict");
  await expectCode(c, "chat-message", { chatId, clientId: uid(), text: "one more thing" }, "conflict");
  const [row] = await sql("SELECT status, close_reason FROM chats WHERE id = $1", [chatId]);
  assert.deepEqual(row, { status: "closed", close_reason: "agent" });
});
