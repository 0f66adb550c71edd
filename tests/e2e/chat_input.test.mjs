// Untrusted input at the edges of /chat (a review of 2026-11-23): what the REST API gets in
// paths, cursors and bodies is held to the socket's rules and answered 400/404, never 500;
// "\\u0000" typed as text is text, not a NUL; context.lastSeq is read for at most 100 chats.
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { closeAll } from "./lib.mjs";
import { SKIP_REASON, startChatd, newOrg, person, chat, uid, rest, closeDb } from "./chatlib.mjs";

let A;
before(async () => {
  if (SKIP_REASON) return;
  A = await startChatd("input-a");
});
after(async () => {
  closeAll();
  await closeDb();
  if (A) await A.stop();
});
afterEach(() => closeAll());

const opts = { skip: SKIP_REASON, timeout: 60000 };

/** POST raw bytes (not necessarily UTF-8 or JSON) as application/json; {status, body}. */
function postRaw(url, path, tok, bytes) {
  return new Promise((resolve, reject) => {
    const u = new URL(url + path);
    const req = http.request(
      { host: u.hostname, port: u.port, path: u.pathname, method: "POST",
        headers: { authorization: `Bearer ${tok}`, "content-type": "application/json", "content-length": bytes.length } },
      (res) => {
        let data = "";
        res.on("data", (c) => (data += c));
        res.on("end", () => {
          let body = data;
          try {
            body = JSON.parse(data);
          } catch {}
          resolve({ status: res.statusCode, body });
        });
      },
    );
    req.on("error", reject);
    req.end(bytes);
  });
}

test("REST: ids and cursors that are not text or not dates answer 404/400, never 500", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const ag = person(org, "agent");
  const s = await chat(A.url, { token: cust.token });
  await s.sendOk(null, "hello", uid());
  for (const p of ["/chat/chats/%FF", "/chat/chats/%FF/messages", "/chat/chats/a%01b", "/chat/chats/%C3%28/messages"]) {
    const r = await rest(A.url, "GET", p, { token: ag.token });
    assert.equal(r.status, 404, `${p}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error?.code, "not_found");
  }
  const bad = ["9999-99-99T99:99:99.999Z~x", "2024-02-31T00:00:00.000Z~x", "2024-01-01T24:00:00.000Z~x",
    "2024-01-01T00:00:00.000Z~%FF", "+024-01-01T00:00:00.000Z~x", "2024-01-01T00:00:00.000Z"];
  for (const c of bad) {
    const r = await rest(A.url, "GET", `/chat/chats?cursor=${c}`, { token: ag.token });
    assert.equal(r.status, 400, `cursor ${c}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error?.code, "bad_request");
  }
  // control: a real cursor pages
  const first = await rest(A.url, "GET", "/chat/chats?limit=1", { token: ag.token });
  assert.equal(first.status, 200);
  const ok = await rest(A.url, "GET", `/chat/chats?cursor=${encodeURIComponent("2024-02-29T23:59:59.999Z~x")}`, { token: ag.token });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
});

test("REST send takes what the socket takes: strict UTF-8 JSON, text <= 64 KiB, <= 10 attachments; an escaped backslash before u0000 is text", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const s = await chat(A.url, { token: cust.token });
  const chatId = (await s.sendOk(null, "first", uid())).chatId;
  const path = `/chat/chats/${chatId}/messages`;
  const json = (o) => Buffer.from(JSON.stringify(o));
  const cases = [
    ["invalid UTF-8 in text", Buffer.concat([Buffer.from('{"clientId":"c1","text":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')])],
    ["a raw NUL byte inside a string", Buffer.from('{"clientId":"c2","text":"a\u0000b"}')],
    ["an escaped NUL", Buffer.from('{"clientId":"c3","text":"a\\u0000b"}')],
    ["text over 65,536 bytes", json({ clientId: "c4", text: "x".repeat(65537) })],
    ["11 attachments", json({ clientId: "c5", text: "x", attachments: Array.from({ length: 11 }, (_, i) => `up-${i}`) })],
    ["not JSON", Buffer.from("clientId=c6&text=x")],
  ];
  for (const [what, body] of cases) {
    const r = await postRaw(A.url, path, cust.token, body);
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body).slice(0, 200)}`);
    assert.equal(r.body.error?.code, "bad_request", what);
  }
  // nothing of that was stored: the next message is seq 2
  const text = "C escape: \\u0000 is NUL";
  const r = await postRaw(A.url, path, cust.token, json({ clientId: "c7", text }));
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal(r.body.message.seq, 2);
  assert.equal(r.body.message.text, text);
  // the socket takes the same text
  const m = await s.sendOk(chatId, text, uid());
  assert.equal(m.text, text);
  assert.equal(m.seq, 3);
  const esc = await s.send(chatId, "a\u0000b", uid());
  assert.equal(esc.error?.code, "bad_request");
});

test("context.lastSeq is read for its first 100 chats; the rest is ignored", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const w = await chat(A.url, { token: cust.token });
  const chatId = (await w.sendOk(null, "m1", uid())).chatId;
  await w.sendOk(chatId, "m2", uid());
  const filler = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`none-${i}`, 0]));
  // first among 101: caught up from 1; after 100 others: ignored (no catch-up)
  const early = await chat(A.url, { token: cust.token, context: { lastSeq: { [chatId]: 1, ...filler } } });
  const late = await chat(A.url, { token: cust.token, context: { lastSeq: { ...filler, [chatId]: 1 } } });
  // Many entries cost nothing: each used to cost a linear search of the socket's delivery log,
  // and 80,000 of them (750 KB, under maxPayload) held the whole process for 24 s. The bound
  // below is 100 times what the capped loop needs; the uncapped one missed it by far.
  const many = Object.fromEntries(Array.from({ length: 80000 }, (_, i) => [`c${i}`, 0]));
  const t0 = Date.now();
  const [big, health] = await Promise.all([
    chat(A.url, { token: cust.token, context: { lastSeq: many } }, { sessionMs: 60000 }),
    (async () => {
      await new Promise((r) => setTimeout(r, 50)); // while the CONNECT is being handled
      const r = await fetch(A.url + "/healthz");
      return { status: r.status, ms: Date.now() - t0 };
    })(),
  ]);
  assert.equal(health.status, 200);
  assert.ok(health.ms < 5000, `the loop answered /healthz after ${health.ms} ms`);
  const marker = await w.sendOk(chatId, "marker", uid());
  await early.waitMessage(chatId, marker.seq);
  await late.waitMessage(chatId, marker.seq);
  await big.waitMessage(chatId, marker.seq);
  assert.deepEqual(early.messages(chatId).map((m) => m.seq), [2, 3]);
  assert.deepEqual(late.messages(chatId).map((m) => m.seq), [3]);
  assert.deepEqual(big.messages(chatId).map((m) => m.seq), [3]);
});
