// Queue and agent console operations (issue 5, SPEC §4, §5, §7, §12.7-12.11)
// on two chatd nodes: a config without AI opens straight into the queue
// (chat-state queued with queue:{position, etaSeconds}, queue-notification,
// queue-position), pick-next (assign, join, "has joined", last messages,
// capacity, skills narrowing), transfer-chat to skills (priority +1, enqueue
// time kept, waits for an agent with the skill) and to an agent, request-agent
// from an AI chat, close of a queued chat (removed), no-reply reassignment, and
// the rebuild of a lost Redis queue from PostgreSQL.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, token, chat, uid, sql, closeDb, REDIS_URL, waitUntil, services } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const opts = { skip: SKIP_REASON, timeout: 90000 };
const AHT = 120; // CHATD_DEFAULT_HANDLE_TIME_S of these nodes

let A, B, redis;
before(async () => {
  if (SKIP_REASON) return;
  const env = { CHATD_DEFAULT_HANDLE_TIME_S: String(AHT), CHATD_QUEUE_POLL_MS: "200", CHATD_QUEUE_CHECK_MS: "300" };
  [A, B] = await Promise.all([startChatd("queue-a", env), startChatd("queue-b", env)]);
  const { createClient } = require("redis");
  redis = createClient({ url: REDIS_URL });
  await redis.connect();
});
after(async () => {
  closeAll();
  await closeDb();
  if (redis) await redis.quit().catch(() => {});
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

/** A chat config row; returns its id. */
async function config(org, { skills = [], priority = 0, ai = false, greeting = null } = {}) {
  const [{ id }] = await sql(
    "INSERT INTO chat_configs (org_id, name, greeting, ai, skills, priority) VALUES ($1, 'q', $2, $3, $4, $5) RETURNING id",
    [org, greeting, JSON.stringify({ enabled: ai }), skills, priority],
  );
  return id;
}

/** An agent token with skills and max_chats. */
function agent(org, { sub = uid("ag-"), name, skills = [], max = 3 } = {}) {
  name = name || `Agent ${sub.slice(-4)}`;
  return { sub, name, token: token({ org, typ: "agent", sub, name, skills, extra: { max_chats: max } }) };
}

/** A customer who opens a chat of configId on node url; returns {s, chatId, p}. */
async function openChat(url, org, configId, text = "hello") {
  const p = person(org, "customer");
  const s = await chat(url, { token: p.token, context: { configId } });
  const m = await s.sendOk(null, text, uid());
  // the first chat-state follows the enqueue (ai, or queued with its position)
  await s.waitEvent("chat-state", (d) => d.chatId === m.chatId);
  return { s, chatId: m.chatId, p };
}

const chatRow = async (id) => (await sql("SELECT * FROM chats WHERE id = $1", [id]))[0];
const events = async (id) => (await sql("SELECT type, from_status, to_status, actor_type, actor_id FROM chat_events WHERE chat_id = $1 ORDER BY id", [id]));

test("a config without AI opens queued: chat-state with queue, queue-notification, queue-position; pick-next assigns", opts, async () => {
  const org = newOrg();
  const cfg = await config(org, { skills: ["billing"], priority: 2 });
  const ag = agent(org, { skills: ["billing", "fr"], name: "Bob" });
  const a = await chat(B.url, { token: ag.token });
  const observer = await chat(A.url, { token: agent(org).token });

  const { s, chatId } = await openChat(A.url, org, cfg);
  const st = await s.waitEvent("chat-state", (d) => d.chatId === chatId);
  assert.deepEqual(st, { chatId, status: "queued", queue: { position: 1, etaSeconds: AHT } });
  const qp = await s.waitEvent("queue-position", (d) => d.chatId === chatId);
  assert.deepEqual(qp, { chatId, position: 1, etaSeconds: AHT });
  for (const who of [a, observer]) {
    const n = await who.waitEvent("queue-notification", (d) => d.chatId === chatId && d.type === "enqueued");
    assert.deepEqual(n.skills, ["billing"]);
    assert.equal(n.priority, 2);
    assert.equal(n.queueLength, 1);
    assert.ok(n.waitingSeconds >= 0 && n.waitingSeconds < 5, JSON.stringify(n));
  }
  let row = await chatRow(chatId);
  assert.equal(row.status, "queued");

  // an agent without the skill gets nothing; narrowing away the skill gets nothing
  const other = await chat(A.url, { token: agent(org, { skills: ["sales"] }).token });
  assert.deepEqual(await other.ack("pick-next", {}), { ok: true, chat: null });
  assert.deepEqual(await a.ack("pick-next", { skills: ["fr"] }), { ok: true, chat: null });
  assert.equal((await a.ack("pick-next", { skills: "billing" })).error?.code, "bad_request");

  const r = await a.ack("pick-next", { skills: ["billing", "de"] });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.equal(r.chat.id, chatId);
  assert.equal(r.chat.status, "assigned");
  assert.deepEqual(r.chat.agent, { id: ag.sub, name: "Bob" });
  assert.deepEqual(r.messages.map((m) => m.text), ["hello", "Bob has joined"]);
  assert.equal(r.messages[1].sender.type, "system");

  const assigned = await s.waitEvent("chat-state", (d) => d.chatId === chatId && d.status === "assigned");
  assert.deepEqual(assigned.agent, { id: ag.sub, name: "Bob" });
  await s.waitFor((e) => e.event === "chat-message" && e.data.text === "Bob has joined");
  await observer.waitEvent("queue-notification", (d) => d.chatId === chatId && d.type === "picked" && d.queueLength === 0);

  // the agent is in the room (identity-wide, on its node): customer's message reaches it, it can write
  await s.sendOk(chatId, "are you there?", uid());
  await a.waitFor((e) => e.event === "chat-message" && e.data.text === "are you there?");
  const reply = await a.send(chatId, "yes", uid());
  assert.equal(reply.ok, true, JSON.stringify(reply));
  await s.waitFor((e) => e.event === "chat-message" && e.data.text === "yes");

  row = await chatRow(chatId);
  assert.equal(row.status, "assigned");
  assert.equal(row.agent_id, ag.sub);
  assert.equal(row.agent_name, "Bob");
  assert.ok(row.assigned_at);
  assert.deepEqual((await events(chatId)).map((e) => `${e.type}:${e.from_status}->${e.to_status}`), ["opened:null->queued", "assigned:queued->assigned"]);
  // nothing left to pick
  assert.deepEqual(await a.ack("pick-next", {}), { ok: true, chat: null });
  // the session of a new tab lists the assigned chat
  const tab = await chat(A.url, { token: ag.token });
  assert.deepEqual(tab.session.chats.map((c) => [c.id, c.status]), [[chatId, "assigned"]]);

  // closing by the agent frees capacity (max 3: three more can be picked afterwards)
  assert.equal((await a.ack("close-chat", { chatId })).ok, true);
  const more = [];
  for (let i = 0; i < 4; i++) more.push((await openChat(A.url, org, cfg, `c${i}`)).chatId);
  const got = [];
  for (let i = 0; i < 4; i++) got.push((await a.ack("pick-next", {})).chat?.id ?? null);
  assert.deepEqual(got, [...more.slice(0, 3), null], "FIFO, then at capacity (3)");
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM chats WHERE org_id = $1 AND agent_id = $2 AND status = 'assigned'", [org, ag.sub]);
  assert.equal(n, 3);
});

test("priority first, then FIFO; positions and ETAs move as chats are picked", opts, async () => {
  const org = newOrg();
  const low = await config(org, { priority: 1 });
  const high = await config(org, { priority: 7 });
  const c1 = await openChat(A.url, org, low, "l1");
  await c1.s.waitEvent("queue-position", (d) => d.position === 1);
  const c2 = await openChat(B.url, org, low, "l2");
  await c2.s.waitEvent("queue-position", (d) => d.position === 2);
  const c3 = await openChat(A.url, org, high, "h1");
  // the high-priority chat goes first, the others move back by one
  assert.deepEqual(await c3.s.waitEvent("queue-position", (d) => d.chatId === c3.chatId), { chatId: c3.chatId, position: 1, etaSeconds: AHT });
  await c1.s.waitEvent("queue-position", (d) => d.position === 2 && d.etaSeconds === 2 * AHT);
  await c2.s.waitEvent("queue-position", (d) => d.position === 3 && d.etaSeconds === 3 * AHT);

  const ag = await chat(B.url, { token: agent(org, { max: 10 }).token });
  assert.equal((await ag.ack("pick-next", {})).chat.id, c3.chatId);
  await c1.s.waitEvent("queue-position", (d) => d.position === 1);
  await c2.s.waitEvent("queue-position", (d) => d.position === 2);
  assert.equal((await ag.ack("pick-next", {})).chat.id, c1.chatId);
  await c2.s.waitEvent("queue-position", (d) => d.position === 1);
  assert.equal((await ag.ack("pick-next", {})).chat.id, c2.chatId);
  // each customer saw strictly changing positions (one event per change)
  for (const c of [c1, c2, c3]) {
    const ps = c.s.events("queue-position", c.chatId).map((d) => `${d.position}/${d.etaSeconds}`);
    for (let i = 1; i < ps.length; i++) assert.notEqual(ps[i], ps[i - 1], `repeated queue-position for ${c.chatId}: ${ps}`);
  }
});

test("transfer to a skill nobody online has: the chat waits, priority +1, enqueue time kept; taken when such an agent comes", opts, async () => {
  const org = newOrg();
  const cfg = await config(org, { skills: ["billing"], priority: 3 });
  const bob = agent(org, { skills: ["billing"], name: "Bob" });
  const a = await chat(A.url, { token: bob.token });
  const { s, chatId } = await openChat(B.url, org, cfg);
  const before = await chatRow(chatId);
  assert.equal((await a.ack("pick-next", {})).chat.id, chatId);

  // bad payloads and the wrong agent
  assert.equal((await a.ack("transfer-chat", { chatId })).error?.code, "bad_request");
  assert.equal((await a.ack("transfer-chat", { chatId, toSkills: "x" })).error?.code, "bad_request");
  assert.equal((await a.ack("transfer-chat", { chatId, toSkills: ["x"], toAgentId: "y" })).error?.code, "bad_request");
  const eve = await chat(B.url, { token: agent(org, { skills: ["legal"] }).token });
  assert.equal((await eve.ack("transfer-chat", { chatId, toSkills: ["legal"] })).error?.code, "forbidden");
  assert.equal((await a.ack("transfer-chat", { chatId: "nope", toSkills: ["legal"] })).error?.code, "not_found");

  const r = await a.ack("transfer-chat", { chatId, toSkills: ["legal", "de"], note: "needs a lawyer" });
  assert.equal(r.ok, true, JSON.stringify(r));
  const st = await s.waitEvent("chat-state", (d) => d.chatId === chatId && d.status === "queued" && d.queue);
  assert.equal(st.queue.position, 1);
  await s.waitFor((e) => e.event === "chat-message" && /transferred the chat to the queue/.test(e.data.text) && /needs a lawyer/.test(e.data.text));
  const n = await eve.waitEvent("queue-notification", (d) => d.chatId === chatId && d.type === "enqueued");
  assert.deepEqual([n.skills, n.priority], [["de", "legal"], 4]);
  // the old agent left the room: a customer message no longer reaches it (an observer on
  // the same node gets it, so it would have arrived by then)
  const obs = await chat(A.url, { token: agent(org).token });
  assert.equal((await obs.ack("observe-chat", { chatId })).ok, true);
  await s.sendOk(chatId, "still here", uid());
  await obs.waitFor((e) => e.event === "chat-message" && e.data.text === "still here");
  const row = await chatRow(chatId);
  assert.deepEqual([row.status, row.agent_id, row.priority, row.skills], ["queued", null, 4, ["de", "legal"]]);
  assert.equal(row.enqueued_at.getTime(), before.enqueued_at.getTime(), "original enqueue time kept");
  assert.ok(!a.messages(chatId).some((m) => m.text === "still here"), "the old agent must have left the room");
  assert.equal((await a.send(chatId, "x", uid())).error?.code, "forbidden");

  // nobody has both skills: the chat waits
  assert.deepEqual(await a.ack("pick-next", {}), { ok: true, chat: null });
  assert.deepEqual(await eve.ack("pick-next", {}), { ok: true, chat: null });
  // an agent with both arrives and takes it
  const lea = agent(org, { skills: ["de", "legal", "fr"], name: "Lea" });
  const l = await chat(A.url, { token: lea.token });
  const p = await l.ack("pick-next", {});
  assert.equal(p.chat?.id, chatId, JSON.stringify(p));
  assert.ok(p.messages.some((m) => m.text === "still here"));
  const ev = (await events(chatId)).map((e) => e.type);
  assert.deepEqual(ev, ["opened", "assigned", "transferred", "assigned"]);
});

test("a note of more than 1,000 bytes is cut between characters, never inside one; an agent whose token says max_chats 0 takes no chat", opts, async () => {
  const org = newOrg();
  const cfg = await config(org);
  const zero = await chat(B.url, { token: agent(org, { max: 0 }).token });
  const bob = await chat(A.url, { token: agent(org).token });
  const { s, chatId } = await openChat(B.url, org, cfg);
  assert.deepEqual(await zero.ack("pick-next", {}), { ok: true, chat: null }, "capacity 0 is not 3");
  assert.equal((await bob.ack("pick-next", {})).chat.id, chatId);
  // 999 ASCII bytes, then a 2-byte character across the 1,000-byte cut
  const note = "a".repeat(999) + "é" + "tail";
  const r = await bob.ack("transfer-chat", { chatId, toSkills: [], note });
  assert.equal(r.ok, true, JSON.stringify(r).slice(0, 200));
  const sys = await s.waitFor((e) => e.event === "chat-message" && /transferred the chat to the queue/.test(e.data.text));
  assert.ok(sys.data.text.includes("a".repeat(999)), "the note up to the cut");
  assert.ok(!sys.data.text.includes("é") && !sys.data.text.includes("tail"), "nothing from the cut on");
  assert.ok(!sys.data.text.includes("\ufffd"));
});

test("transfer to an agent: online, not away, below capacity; else conflict", opts, async () => {
  const org = newOrg();
  const cfg = await config(org);
  const bob = agent(org, { name: "Bob" });
  const amy = agent(org, { name: "Amy", max: 1 });
  const a = await chat(A.url, { token: bob.token });
  const { s, chatId } = await openChat(A.url, org, cfg);
  assert.equal((await a.ack("pick-next", {})).chat.id, chatId);

  // Amy is not connected: offline
  assert.equal((await a.ack("transfer-chat", { chatId, toAgentId: amy.sub })).error?.code, "conflict");
  const m = await chat(B.url, { token: amy.token });
  assert.equal((await m.ack("set-status", { status: "away" })).ok, true);
  assert.equal((await a.ack("transfer-chat", { chatId, toAgentId: amy.sub })).error?.code, "conflict");
  assert.equal((await m.ack("set-status", { status: "online" })).ok, true);
  assert.equal((await a.ack("transfer-chat", { chatId, toAgentId: bob.sub })).error?.code, "conflict");
  const r = await a.ack("transfer-chat", { chatId, toAgentId: amy.sub, note: "vip" });
  assert.equal(r.ok, true, JSON.stringify(r));
  assert.deepEqual(r.chat.agent, { id: amy.sub, name: "Amy" });
  const st = await s.waitEvent("chat-state", (d) => d.chatId === chatId && d.status === "assigned" && d.agent?.id === amy.sub);
  assert.equal(st.agent.name, "Amy");
  await m.waitFor((e) => e.event === "chat-message" && e.data.text === "Bob transferred the chat to Amy: vip");
  await s.sendOk(chatId, "hi Amy", uid());
  await m.waitFor((e) => e.event === "chat-message" && e.data.text === "hi Amy");
  assert.equal((await m.send(chatId, "hello", uid())).ok, true);
  assert.equal((await a.send(chatId, "me too", uid())).error?.code, "forbidden");
  const row = await chatRow(chatId);
  assert.deepEqual([row.agent_id, row.agent_name], [amy.sub, "Amy"]);
  // Amy is at capacity (max 1): a transfer back to her from another chat is refused
  const c2 = await openChat(B.url, org, cfg);
  assert.equal((await a.ack("pick-next", {})).chat.id, c2.chatId);
  assert.equal((await a.ack("transfer-chat", { chatId: c2.chatId, toAgentId: amy.sub })).error?.code, "conflict");
  assert.equal((await chatRow(c2.chatId)).agent_id, bob.sub);
});

test("request-agent: ai -> queued once; queued/assigned chats answer conflict; close of a queued chat notifies removed", opts, async () => {
  const org = newOrg();
  const aiCfg = await config(org, { ai: true, skills: ["fr"] });
  const watcher = await chat(B.url, { token: agent(org).token });
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token, context: { configId: aiCfg } });
  const m = await s.sendOk(null, "bonjour", uid());
  const chatId = m.chatId;
  assert.equal((await chatRow(chatId)).status, "ai");
  // another customer's chat is not_found; agents may not request
  const stranger = await chat(A.url, { token: person(org, "customer").token });
  assert.equal((await stranger.ack("request-agent", { chatId })).error?.code, "not_found");
  assert.equal((await watcher.ack("request-agent", { chatId })).error?.code, "forbidden");
  assert.equal((await s.ack("request-agent", {})).error?.code, "bad_request");

  const r = await s.ack("request-agent", { chatId });
  assert.equal(r.ok, true, JSON.stringify(r));
  const st = await s.waitEvent("chat-state", (d) => d.chatId === chatId && d.status === "queued");
  assert.deepEqual(st.queue, { position: 1, etaSeconds: AHT });
  await watcher.waitEvent("queue-notification", (d) => d.chatId === chatId && d.type === "enqueued");
  assert.equal((await s.ack("request-agent", { chatId })).error?.code, "conflict");
  assert.deepEqual((await events(chatId)).map((e) => e.type), ["opened", "handoff"]);

  assert.equal((await s.ack("close-chat", { chatId })).ok, true);
  const rm = await watcher.waitEvent("queue-notification", (d) => d.chatId === chatId && d.type === "removed");
  assert.deepEqual(rm.skills, ["fr"]);
  assert.deepEqual(await watcher.ack("pick-next", {}), { ok: true, chat: null });
  assert.equal((await s.ack("request-agent", { chatId })).error?.code, "conflict");
});

test("a lost Redis queue is rebuilt from PostgreSQL (order, priority and skills kept)", opts, async () => {
  const org = newOrg();
  const cfg = await config(org, { skills: ["x"] });
  const hi = await config(org, { priority: 5 });
  const c1 = await openChat(A.url, org, cfg);
  const c2 = await openChat(B.url, org, hi);
  const c3 = await openChat(A.url, org, cfg);
  await c3.s.waitEvent("chat-state", (d) => d.status === "queued");
  // Redis loses the org's queue (restart without persistence)
  const keys = await redis.keys(`chat:{${org}}:*`);
  assert.ok(keys.length > 0);
  await redis.del(keys);
  await waitUntil(async () => (await redis.zCard(`chat:{${org}}:queue`)) === 3, 10000, "the queue rebuilt");
  const ag = await chat(B.url, { token: agent(org, { skills: ["x"], max: 5 }).token });
  const got = [];
  for (let i = 0; i < 4; i++) got.push((await ag.ack("pick-next", {})).chat?.id ?? null);
  assert.deepEqual(got, [c2.chatId, c1.chatId, c3.chatId, null]);

  // the other way round: an entry Redis kept for a chat PostgreSQL closed is dropped
  const c4 = await openChat(A.url, org, cfg);
  const c5 = await openChat(B.url, org, cfg);
  await sql("UPDATE chats SET status = 'closed', closed_at = now() WHERE id = $1", [c4.chatId]);
  await waitUntil(async () => (await redis.zCard(`chat:{${org}}:queue`)) === 1, 10000, "the stale entry dropped");
  assert.equal(await redis.zRank(`chat:{${org}}:queue`, (await redis.hGet(`chat:{${org}}:qentry:${c5.chatId}`, "member")) || "-"), 0);
});

test("no-reply reassignment: an agent that does not answer in time loses the chat to the front of the queue", opts, async () => {
  const N = await startChatd("queue-noreply", { CHATD_AGENT_REPLY_TIMEOUT_S: "1", CHATD_QUEUE_POLL_MS: "200", CHATD_QUEUE_CHECK_MS: "300" });
  try {
    const org = newOrg();
    const cfg = await config(org);
    const slow = agent(org, { name: "Slow" });
    const fast = agent(org, { name: "Fast" });
    const a = await chat(N.url, { token: slow.token });
    const first = await openChat(N.url, org, cfg, "first");
    const second = await openChat(N.url, org, cfg, "second");
    await second.s.waitEvent("queue-position", (d) => d.position === 2);
    assert.equal((await a.ack("pick-next", {})).chat.id, first.chatId);
    // Slow never answers: back in the queue, ahead of `second`
    const st = await first.s.waitEvent("chat-state", (d) => d.status === "queued", 8000);
    assert.equal(st.queue.position, 1);
    await first.s.waitFor((e) => e.event === "chat-message" && /did not reply/.test(e.data.text));
    const row = await chatRow(first.chatId);
    assert.deepEqual([row.status, row.agent_id], ["queued", null]);
    // Fast answers in time and keeps it
    const f = await chat(N.url, { token: fast.token });
    assert.equal((await f.ack("pick-next", {})).chat.id, first.chatId);
    assert.equal((await f.send(first.chatId, "hi, I am here", uid())).ok, true);
    await new Promise((r) => setTimeout(r, 1800)); // past the timeout: nothing must happen
    assert.equal((await chatRow(first.chatId)).agent_id, fast.sub);
    assert.deepEqual((await events(first.chatId)).map((e) => e.type), ["opened", "assigned", "requeued", "assigned"]);
  } finally {
    closeAll();
    await N.stop();
  }
});

/** Resolves when the customer's latest queue-position for chatId is {position, etaSeconds}. */
async function positionIs(s, chatId, position, etaSeconds, what) {
  const latest = () => s.events("queue-position", chatId).at(-1);
  const ok = (d) => d && d.position === position && d.etaSeconds === etaSeconds;
  if (ok(latest())) return;
  const from = s.log.length;
  if (ok(latest())) return;
  await s
    .waitFor((e) => e.event === "queue-position" && e.data.chatId === chatId && ok(e.data), 8000, what, from)
    .catch((e) => {
      e.message = `${what}: want ${position}/${etaSeconds}s, latest ${JSON.stringify(latest())}\n${e.message}`;
      throw e;
    });
}

test("position and ETA follow ceil(position / availableAgents) * avgHandleTime as agents go online, away, offline, fill up", opts, async () => {
  const org = newOrg();
  const cfg = await config(org);
  const cs = [];
  for (let i = 0; i < 4; i++) cs.push(await openChat(A.url, org, cfg, `c${i}`));
  const expect = async (waiting, available, aht, what) => {
    for (let i = 0; i < waiting.length; i++) {
      const p = i + 1;
      await positionIs(waiting[i].s, waiting[i].chatId, p, Math.ceil(p / Math.max(available, 1)) * aht, `${what}, position ${p}`);
    }
  };
  await expect(cs, 0, AHT, "no agent");
  const X = await chat(B.url, { token: agent(org, { name: "X", max: 1 }).token });
  await expect(cs, 1, AHT, "X online");
  const Y = await chat(A.url, { token: agent(org, { name: "Y", max: 2 }).token });
  await expect(cs, 2, AHT, "X, Y online");
  const Z = await chat(B.url, { token: agent(org, { name: "Z", max: 3 }).token });
  await expect(cs, 3, AHT, "X, Y, Z online");
  assert.equal((await Y.ack("set-status", { status: "away" })).ok, true);
  await expect(cs, 2, AHT, "Y away");
  assert.equal((await Y.ack("set-status", { status: "online" })).ok, true);
  await expect(cs, 3, AHT, "Y back");
  Z.close();
  await expect(cs, 2, AHT, "Z offline");
  // X takes the first chat and is then at capacity (max 1): not available
  const picked = await X.ack("pick-next", {});
  assert.equal(picked.chat.id, cs[0].chatId);
  await expect(cs.slice(1), 1, AHT, "X full");
  // the first close sets the org's average handle time (moving average of assigned -> closed)
  assert.equal((await X.ack("close-chat", { chatId: cs[0].chatId })).ok, true);
  const aht = Number(await redis.get(`chat:{${org}}:aht`));
  assert.ok(Number.isInteger(aht) && aht >= 0 && aht < 10, `aht ${aht}`);
  await expect(cs.slice(1), 2, aht, "X free again, average from the close");
  // one event per change: no repeated value in a row
  for (const c of cs) {
    const ps = c.s.events("queue-position", c.chatId).map((d) => `${d.position}/${d.etaSeconds}`);
    for (let i = 1; i < ps.length; i++) assert.notEqual(ps[i], ps[i - 1], `repeated queue-position for ${c.chatId}: ${ps}`);
  }
});

test("the stores never disagree: a chat closed behind Redis's back is skipped; a pick while PostgreSQL is down answers unavailable and leaves the chat queued in both", opts, async () => {
  const org = newOrg();
  const cfg = await config(org);
  const ag = agent(org, { max: 5 });
  const c1 = await openChat(A.url, org, cfg, "one");
  const c2 = await openChat(A.url, org, cfg, "two");
  const c3 = await openChat(A.url, org, cfg, "three");
  await c3.s.waitEvent("chat-state", (d) => d.status === "queued");
  const a = await chat(B.url, { token: ag.token });
  const qkey = `chat:{${org}}:queue`;
  const loadOf = async () => Number((await redis.hGet(`chat:{${org}}:agentload`, ag.sub)) || 0);

  // closed in PostgreSQL only: the pick releases it in Redis and takes the next one
  await sql("UPDATE chats SET status = 'closed', closed_at = now() WHERE id = $1", [c1.chatId]);
  assert.equal((await a.ack("pick-next", {})).chat?.id, c2.chatId);
  assert.equal(await redis.zCard(qkey), 1, "the closed chat left the Redis queue");
  assert.equal(await loadOf(), 1, "capacity counts only the assigned chat");

  // PostgreSQL down: the Redis pick is undone, the chat keeps its place
  const members = await redis.zRangeWithScores(qkey, 0, -1);
  try {
    await services("stop-pg");
    const r = await a.ack("pick-next", {});
    assert.equal(r.ok, false, JSON.stringify(r));
    assert.equal(r.error.code, "unavailable");
    await waitUntil(async () => JSON.stringify(await redis.zRangeWithScores(qkey, 0, -1)) === JSON.stringify(members), 5000, "the entry restored in place");
    assert.equal(await loadOf(), 1);
  } finally {
    await services("start-pg");
  }
  const got = await waitUntil(async () => {
    const r = await a.ack("pick-next", {});
    return r.ok ? r : null;
  }, 30000, "pick-next after PostgreSQL restarted");
  assert.equal(got.chat?.id, c3.chatId);
  const row = await chatRow(c3.chatId);
  assert.deepEqual([row.status, row.agent_id], ["assigned", ag.sub]);
  assert.equal(await loadOf(), 2);
  assert.equal(await redis.zCard(qkey), 0);
  const [{ n }] = await sql("SELECT count(*)::int AS n FROM chat_events WHERE chat_id = $1 AND type = 'assigned'", [c3.chatId]);
  assert.equal(n, 1);
});
