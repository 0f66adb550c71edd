// Queue benchmark through chatd (issue 5): two `chatd serve` nodes, 10,000
// waiting chats whose required skills come from 50 skills, then
//   1. rebuild: the chats are written to PostgreSQL only and chatd's rebuild
//      enqueues them into Redis (queue_enqueue.lua, pipelined EVALSHA): ops/s;
//   2. open + enqueue: customers open chats (chat-message without chatId ->
//      chat_open -> enqueue -> chat-state queued) at a fixed concurrency:
//      ops/s and latency percentiles from the emit to the chat-state event;
//   3. pick-next: agents with 10 random skills each call pick-next in a loop
//      (Redis pick + chat_assign in PostgreSQL + last 50 messages): ops/s and
//      latency percentiles of the ack. The queue stays above 8,000 waiting.
// Not part of the test suite. Run (services from tests/services.sh):
//   . DIR/env && CHATD_TEST_DATABASE_URL=... CHATD_TEST_REDIS_URL=... \
//   CHATD_BIN=build/chatd node tests/e2e/queue_bench.mjs
import { createRequire } from "node:module";
import { closeAll } from "./lib.mjs";
import { startChatd, newOrg, person, token, chat, uid, sql, closeDb, REDIS_URL } from "./chatlib.mjs";

const require = createRequire(import.meta.url);
const WAITING = Number(process.env.QB_WAITING || 10000);
const SKILLS = 50;
const OPENS = Number(process.env.QB_OPENS || 2000);
const PICKS = Number(process.env.QB_PICKS || 2000);
const CONC = Number(process.env.QB_CONCURRENCY || 32);
const AGENTS = Number(process.env.QB_AGENTS || 100);

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const fmt = (xs) => `p50 ${pct(xs, 50).toFixed(2)} ms, p99 ${pct(xs, 99).toFixed(2)} ms, max ${Math.max(...xs).toFixed(2)} ms`;

async function pool(n, conc, fn) {
  let next = 0;
  await Promise.all(
    Array.from({ length: conc }, async (_, w) => {
      for (let i = next++; i < n; i = next++) await fn(i, w);
    }),
  );
}

const env = { CHATD_RATE_EVENTS_PER_S: "100000", CHATD_RATE_CONN_PER_S: "100000", CHATD_LOG: "warn" };
const [A, B] = await Promise.all([startChatd("qbench-a", env), startChatd("qbench-b", env)]);
const { createClient } = require("redis");
const redis = createClient({ url: REDIS_URL });
await redis.connect();
try {
  const org = newOrg();
  const qkey = `chat:{${org}}:queue`;

  // 1. 10,000 queued chats in PostgreSQL; chatd's rebuild puts them into Redis
  let t0 = performance.now();
  await sql(
    `INSERT INTO chats (org_id, status, customer_key, customer_id, skills, priority, enqueued_at)
     SELECT $1, 'queued', 'bench-' || g, 'bench-' || g,
            CASE WHEN g % 3 = 0 THEN ARRAY['s' || (g * 7 % $2), 's' || (g * 13 % $2)]
                 ELSE ARRAY['s' || (g * 7 % $2)] END,
            g % 10, now() - interval '1 hour' + g * interval '1 ms'
       FROM generate_series(1, $3) g`,
    [org, SKILLS, WAITING],
  );
  const tIns = performance.now() - t0;
  t0 = performance.now();
  let t1 = t0;
  for (;;) {
    const n = await redis.zCard(qkey);
    if (n >= WAITING) break;
    if (n > 0 && t1 === t0) t1 = performance.now(); // first entries: the rebuild started
    await new Promise((r) => setTimeout(r, 20));
  }
  const tReb = performance.now() - t1;
  console.log(`rebuild: ${WAITING} chats inserted in ${tIns.toFixed(0)} ms; enqueued by chatd in ${tReb.toFixed(0)} ms after the first entry = ${((WAITING / tReb) * 1000).toFixed(0)} enqueues/s (pipelined EVALSHA queue_enqueue)`);

  // 2. open + enqueue through the socket path, 10,000+ waiting
  const cfgs = [];
  for (let i = 0; i < 10; i++) {
    const [{ id }] = await sql(
      "INSERT INTO chat_configs (org_id, name, ai, skills, priority) VALUES ($1, 'qb', '{\"enabled\":false}', $2, $3) RETURNING id",
      [org, [`s${i * 5}`], i % 10],
    );
    cfgs.push(id);
  }
  const custs = [];
  await pool(OPENS, 64, async (i) => {
    const p = person(org, "customer");
    custs[i] = await chat(i % 2 ? A.url : B.url, { token: p.token, context: { configId: cfgs[i % cfgs.length] } });
  });
  const openLat = [];
  t0 = performance.now();
  await pool(OPENS, CONC, async (i) => {
    const s = custs[i];
    const from = s.log.length;
    const t = performance.now();
    s.socket.emit("chat-message", { clientId: uid(), text: "hi" });
    await s.waitFor((e) => e.event === "chat-state" && e.data.status === "queued", 20000, "chat-state queued", from);
    openLat.push(performance.now() - t);
  });
  let dt = performance.now() - t0;
  console.log(`open + enqueue (socket chat-message -> chat_open -> queue_enqueue -> chat-state), concurrency ${CONC}, ${await redis.zCard(qkey)} waiting after: ${((OPENS / dt) * 1000).toFixed(0)} ops/s, ${fmt(openLat)}`);
  for (const s of custs) s.close();

  // 3. pick-next by AGENTS agents with 10 of the 50 skills each
  const agents = [];
  for (let i = 0; i < AGENTS; i++) {
    const skills = Array.from({ length: 10 }, (_, k) => `s${(i * 3 + k * 5) % SKILLS}`);
    agents.push(await chat(i % 2 ? A.url : B.url, { token: token({ org, typ: "agent", sub: `qa${i}`, name: `QA${i}`, skills, extra: { max_chats: 100000 } }) }));
  }
  const pickLat = [];
  let empty = 0;
  t0 = performance.now();
  await pool(PICKS, CONC, async (i) => {
    const a = agents[i % agents.length];
    const t = performance.now();
    const r = await a.ack("pick-next", {}, 20000);
    pickLat.push(performance.now() - t);
    if (!r.ok) throw new Error(JSON.stringify(r));
    if (!r.chat) empty++;
  });
  dt = performance.now() - t0;
  console.log(`pick-next by ${AGENTS} agents (each gets every queue-notification) (Redis pick + chat_assign + last 50 messages), concurrency ${CONC}, ${PICKS} picks (${empty} empty), ${await redis.zCard(qkey)} waiting after: ${((PICKS / dt) * 1000).toFixed(0)} ops/s, ${fmt(pickLat)}`);
} finally {
  closeAll();
  await redis.quit().catch(() => {});
  await closeDb();
  await Promise.all([A, B].map((s) => s.stop("SIGKILL")));
}
