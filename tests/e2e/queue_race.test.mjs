// 20 agents on two chatd nodes race pick-next over 300 queued chats (issue 5):
// every chat is assigned exactly once (PostgreSQL: one `assigned` event, the
// agent in the row equals the one whose ack got it), no agent ends above its
// max_chats, an agent with room left stops only when nothing it may serve is
// queued, and every pick respects priority then FIFO among the chats that
// agent may take (no better eligible chat was still waiting at the moment of
// the pick, on the queue's clock). Redis and PostgreSQL agree at the end
// (queue length, per-agent loads).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, token, chat, uid, sql, closeDb, REDIS_URL } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const opts = { skip: SKIP_REASON, timeout: 180000 };

let A, B, redis;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([startChatd("race-a"), startChatd("race-b")]);
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

// deterministic pseudo-random numbers (the run can be replayed from its seed)
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

test("20 agents on two nodes race pick-next over 300 queued chats", opts, async () => {
  const seed = Number(process.env.QUEUE_RACE_SEED || Date.now() % 100000);
  const rand = rng(seed);
  const org = newOrg();
  const skillSets = [[], ["a"], ["b"], ["a", "b"], ["c"], ["a", "c"]];
  const configs = [];
  for (const skills of skillSets) {
    for (const priority of [0, 3, 7]) {
      const [{ id }] = await sql(
        "INSERT INTO chat_configs (org_id, name, ai, skills, priority) VALUES ($1, 'race', '{\"enabled\":false}', $2, $3) RETURNING id",
        [org, skills, priority],
      );
      configs.push(id);
    }
  }
  // 300 chats opened by 300 customers, 30 at a time, on both nodes
  const N = 300;
  for (let i = 0; i < N; i += 30) {
    await Promise.all(
      Array.from({ length: 30 }, async (_, j) => {
        const p = person(org, "customer");
        const cfg = configs[Math.floor(rand() * configs.length)];
        const s = await chat((i + j) % 2 ? A.url : B.url, { token: p.token, context: { configId: cfg } });
        await s.sendOk(null, `chat ${i + j}`, uid());
        await s.waitEvent("chat-state", (d) => d.status === "queued");
        s.close();
      }),
    );
  }
  const [{ n: queued }] = await sql("SELECT count(*)::int AS n FROM chats WHERE org_id = $1 AND status = 'queued'", [org]);
  assert.equal(queued, N);
  assert.equal(await redis.zCard(`chat:{${org}}:queue`), N);

  // 20 agents with random skills and capacities, half on each node
  const agentSkills = [[], ["a"], ["b"], ["a", "b"], ["a", "b", "c"], ["c"], ["a", "c"]];
  const agents = [];
  for (let i = 0; i < 20; i++) {
    const sub = `ag${i}-${uid()}`;
    const skills = agentSkills[Math.floor(rand() * agentSkills.length)];
    const max = 5 + Math.floor(rand() * 16);
    const s = await chat(i % 2 ? A.url : B.url, { token: token({ org, typ: "agent", sub, name: `A${i}`, skills, extra: { max_chats: max } }) });
    agents.push({ sub, skills, max, s, got: [] });
  }
  // every agent picks until it gets null, all concurrently
  await Promise.all(
    agents.map(async (ag) => {
      for (;;) {
        const r = await ag.s.ack("pick-next", {}, 30000);
        assert.equal(r.ok, true, `${ag.sub}: ${JSON.stringify(r)}`);
        if (!r.chat) break;
        assert.equal(r.chat.agent.id, ag.sub);
        ag.got.push(r.chat.id);
      }
    }),
  );

  const rows = await sql(
    `SELECT id, status, agent_id, priority, skills,
            floor(extract(epoch FROM enqueued_at) * 1000)::bigint AS enq,
            round(extract(epoch FROM assigned_at) * 1000)::bigint AS at,
            (SELECT count(*)::int FROM chat_events e WHERE e.chat_id = c.id AND e.type = 'assigned') AS assigns
       FROM chats c WHERE org_id = $1`,
    [org],
  );
  const byId = new Map(rows.map((r) => [r.id, r]));
  const all = agents.flatMap((a) => a.got);
  assert.equal(new Set(all).size, all.length, "a chat was handed to two agents");
  for (const ag of agents) {
    assert.ok(ag.got.length <= ag.max, `${ag.sub} holds ${ag.got.length} > max ${ag.max}`);
    for (const id of ag.got) {
      const r = byId.get(id);
      assert.equal(r.status, "assigned");
      assert.equal(r.agent_id, ag.sub);
      assert.ok(r.skills.every((k) => ag.skills.includes(k)), `${ag.sub} (${ag.skills}) got ${id} needing ${r.skills}`);
    }
  }
  for (const r of rows) {
    assert.ok(r.assigns <= 1, `${r.id} assigned ${r.assigns} times`);
    if (r.status === "assigned") assert.ok(all.includes(r.id), `${r.id} assigned in PostgreSQL but no ack said so`);
    else assert.equal(r.assigns, 0);
  }
  const eligible = (ag, r) => r.skills.every((k) => ag.skills.includes(k));
  const better = (x, y) => x.priority > y.priority || (x.priority === y.priority && Number(x.enq) < Number(y.enq));
  let checked = 0;
  for (const ag of agents) {
    // an agent with room left stopped because nothing it may serve was waiting
    if (ag.got.length < ag.max) {
      const left = rows.filter((r) => r.status === "queued" && eligible(ag, r));
      assert.deepEqual(left.map((r) => r.id), [], `${ag.sub} (${ag.got.length}/${ag.max}, ${ag.skills}) stopped with eligible chats queued`);
    }
    // priority then FIFO: when it took C, no better chat it could serve was still queued
    for (const id of ag.got) {
      const c = byId.get(id);
      for (const o of rows) {
        if (o.id === id || !eligible(ag, o) || !better(o, c)) continue;
        const stillQueued = o.status === "queued" || Number(o.at) > Number(c.at);
        assert.ok(!stillQueued, `${ag.sub} took ${id} (p${c.priority}, enq ${c.enq}, at ${c.at}) while ${o.id} (p${o.priority}, enq ${o.enq}, at ${o.at ?? "never"}) was waiting (seed ${seed})`);
        checked++;
      }
    }
  }
  assert.ok(checked > 100, `order check covered only ${checked} pairs`);

  // Redis agrees with PostgreSQL
  const left = rows.filter((r) => r.status === "queued").length;
  assert.equal(await redis.zCard(`chat:{${org}}:queue`), left);
  const loads = await redis.hGetAll(`chat:{${org}}:agentload`);
  for (const ag of agents) assert.equal(Number(loads[ag.sub] || 0), ag.got.length, `load of ${ag.sub}`);
  console.log(`# race: seed ${seed}, ${all.length} assigned, ${left} left queued, ${checked} order pairs checked`);
});
