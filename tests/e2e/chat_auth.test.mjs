// /chat identity and access (issue 3, SPEC §2, §3, §9, §12.1, §12.2, §12.8):
// every bad token gets its CONNECT_ERROR code; the role comes from the token's
// `typ` alone; a chat of another org or of another customer is not_found over
// the socket and 404 over REST, while the rightful parties are served (so each
// refusal is checked next to an acceptance).
import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { closeAll, client, connected } from "./lib.mjs";
import { SKIP_REASON, SECRET, startChatd, newOrg, person, token, signJwt, chat, connectError, uid, rest } from "./chatlib.mjs";

let A, B;
before(async () => {
  if (SKIP_REASON) return;
  [A, B] = await Promise.all([startChatd("auth-a"), startChatd("auth-b")]);
});
after(async () => {
  closeAll();
  await Promise.all([A, B].filter(Boolean).map((s) => s.stop()));
});
afterEach(() => closeAll());

const opts = { skip: SKIP_REASON, timeout: 60000 };

test("bad tokens get their connect_error code on polling and websocket", opts, async () => {
  const org = newOrg();
  const now = Math.floor(Date.now() / 1000);
  const good = { sub: "c1", org, typ: "customer", exp: now + 600 };
  const cases = [
    ["no auth at all", undefined, "token_missing"],
    ["empty auth", {}, "token_missing"],
    ["empty token", { token: "" }, "token_missing"],
    ["expired", { token: token({ org, ttl: -120 }) }, "token_expired"],
    ["expired agent", { token: token({ org, typ: "agent", ttl: -5 }) }, "token_expired"],
    ["malformed: not a JWT", { token: "not-a-jwt" }, "token_invalid"],
    ["malformed: garbage segments", { token: "a.b.c" }, "token_invalid"],
    ["malformed: payload not JSON", { token: `${Buffer.from('{"alg":"HS256"}').toString("base64url")}.${Buffer.from("nope").toString("base64url")}.x` }, "token_invalid"],
    ["wrong signature", { token: signJwt(good, "another-secret") }, "token_invalid"],
    ["signature of another payload", { token: signJwt(good).split(".").slice(0, 2).join(".") + "." + signJwt({ ...good, sub: "c2" }).split(".")[2] }, "token_invalid"],
    ["alg none", { token: signJwt(good, SECRET, { alg: "none", typ: "JWT" }).split(".").slice(0, 2).join(".") + "." }, "token_invalid"],
    ["no exp", { token: signJwt({ sub: "c1", org, typ: "customer" }) }, "token_invalid"],
    ["unknown typ", { token: signJwt({ ...good, typ: "admin" }) }, "token_invalid"],
    ["no org claim", { token: signJwt({ sub: "c1", typ: "customer", exp: now + 600 }) }, "token_invalid"],
    ["wrong org", { token: token({ org }), orgId: "some-other-org" }, "org_mismatch"],
    ["wrong org (agent)", { token: token({ org, typ: "agent" }), orgId: `${org}x` }, "org_mismatch"],
  ];
  for (const transports of [["polling"], ["websocket"]]) {
    for (const [what, auth, code] of cases) {
      const err = await connectError(A.url, auth, { transports });
      assert.ok(err, `${what} (${transports}): connected instead of connect_error`);
      assert.equal(err.message, "unauthorized", `${what} (${transports})`);
      assert.deepEqual(err.data, { code }, `${what} (${transports})`);
    }
  }
  // the same tokens done right are accepted, also with a matching orgId
  const ok = await chat(A.url, { token: token({ org }), orgId: org });
  assert.equal(ok.session.role, "customer");
});

test("a customer claiming role agent in its auth (or in extra claims) is still a customer", opts, async () => {
  const org = newOrg();
  const sub = uid("cust-");
  const tok = token({ org, typ: "customer", sub, name: "Mallory", extra: { role: "agent", admin: true, skills: ["billing"] } });
  const s = await chat(A.url, { token: tok, role: "agent", typ: "agent", type: "agent", admin: true, context: { role: "agent", typ: "agent" } });
  assert.deepEqual(s.session, { role: "customer", identity: { type: "customer", id: sub, name: "Mallory" }, chats: [] });
  const chatId = (await s.sendOk(null, "hi", uid())).chatId;
  for (const ev of ["observe-chat", "unobserve-chat"]) {
    const r = await s.ack(ev, { chatId });
    assert.equal(r.ok, false, `${ev}: ${JSON.stringify(r)}`);
    assert.equal(r.error.code, "forbidden", `${ev}: ${JSON.stringify(r)}`);
  }
  // REST lists only its own chat, as for any customer
  const list = await rest(A.url, "GET", "/chat/chats", { token: tok });
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.chats.map((c) => c.id), [chatId]);
  // an agent of the same org is an agent (control)
  const ag = await chat(A.url, { token: token({ org, typ: "agent" }) });
  assert.equal(ag.session.role, "agent");
  assert.equal((await ag.ack("observe-chat", { chatId })).ok, true);
});

test("the identity key is the email claim when present: two subs with one email are one customer", opts, async () => {
  const org = newOrg();
  const email = `${uid()}@example.com`;
  const t1 = await chat(A.url, { token: token({ org, sub: "device-1", email, name: "Ann" }) });
  assert.deepEqual(t1.session.identity, { type: "customer", id: email, name: "Ann" });
  const chatId = (await t1.sendOk(null, "from device 1", uid())).chatId;
  const t2 = await chat(B.url, { token: token({ org, sub: "device-2", email, name: "Ann" }) });
  assert.deepEqual(t2.session.chats.map((c) => c.id), [chatId]);
  const m = await t2.sendOk(chatId, "from device 2", uid());
  assert.equal(m.sender.id, email);
  await t1.waitMessage(chatId, m.seq);
  // and without email the key is sub: another sub is another customer
  const other = await chat(A.url, { token: token({ org, sub: "device-3", name: "Ann" }) });
  assert.deepEqual(other.session.chats, []);
});

async function expectCode(s, ev, payload, code) {
  const r = await s.ack(ev, payload);
  assert.equal(r?.ok, false, `${ev} ${JSON.stringify(payload)} should fail with ${code}: ${JSON.stringify(r)}`);
  assert.equal(r.error?.code, code, `${ev} ${JSON.stringify(payload)}: ${JSON.stringify(r)}`);
  assert.equal(typeof r.error.message, "string");
}

async function expect404(url, method, p, tok, body) {
  const r = await rest(url, method, p, { token: tok, body });
  assert.equal(r.status, 404, `${method} ${p}: ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body?.error?.code, "not_found", `${method} ${p}: ${JSON.stringify(r.body)}`);
}

test("an agent of org B gets not_found for a chat of org A (socket and REST); an agent of org A is served", opts, async () => {
  const orgA = newOrg();
  const orgB = newOrg();
  const cust = person(orgA, "customer");
  const c = await chat(A.url, { token: cust.token });
  const chatId = (await c.sendOk(null, "secret stuff", uid())).chatId;
  const agentA = person(orgA, "agent");
  const agentB = person(orgB, "agent");
  const a = await chat(B.url, { token: agentA.token });
  const b = await chat(B.url, { token: agentB.token });

  // control: the agent of org A may read and observe it
  const hA = await a.ack("history", { chatId });
  assert.equal(hA.ok, true, JSON.stringify(hA));
  assert.equal(hA.messages.length, 1);
  assert.equal((await a.ack("observe-chat", { chatId })).ok, true);
  assert.equal((await rest(A.url, "GET", `/chat/chats/${chatId}`, { token: agentA.token })).status, 200);
  assert.equal((await rest(A.url, "GET", `/chat/chats/${chatId}/messages`, { token: agentA.token })).status, 200);

  // org B: not_found for every event on that chat
  await expectCode(b, "history", { chatId }, "not_found");
  await expectCode(b, "history", { chatId, afterSeq: 0 }, "not_found");
  await expectCode(b, "read", { chatId, seq: 1 }, "not_found");
  await expectCode(b, "observe-chat", { chatId }, "not_found");
  await expectCode(b, "unobserve-chat", { chatId }, "not_found");
  await expectCode(b, "chat-message", { chatId, clientId: uid(), text: "hi from B" }, "not_found");
  await expectCode(b, "typing", { chatId, isTyping: true }, "not_found");
  await expectCode(b, "close-chat", { chatId }, "not_found");
  await expect404(A.url, "GET", `/chat/chats/${chatId}`, agentB.token);
  await expect404(A.url, "GET", `/chat/chats/${chatId}/messages`, agentB.token);
  await expect404(A.url, "GET", `/chat/chats/${chatId}/messages?afterSeq=0`, agentB.token);
  await expect404(A.url, "POST", `/chat/chats/${chatId}/messages`, agentB.token, { clientId: uid(), text: "hi from B" });
  const list = await rest(A.url, "GET", "/chat/chats", { token: agentB.token });
  assert.equal(list.status, 200);
  assert.deepEqual(list.body.chats, [], "org B lists none of org A's chats");
  // an agent of org A lists it
  const listA = await rest(A.url, "GET", "/chat/chats", { token: agentA.token });
  assert.deepEqual(listA.body.chats.map((x) => x.id), [chatId]);

  // unknown and malformed ids are not_found too (SPEC 12.1), never bad_request
  for (const id of ["no-such-chat", "00000000-0000-0000-0000-000000000000", "%2e%2e", "x'; DROP TABLE chats; --"]) {
    await expectCode(a, "history", { chatId: id }, "not_found");
    await expectCode(c, "chat-message", { chatId: id, clientId: uid(), text: "x" }, "not_found");
  }
  await expect404(A.url, "GET", "/chat/chats/no-such-chat", agentA.token);

  // nothing reached the chat: the customer's marker is seq 2
  const marker = await c.sendOk(chatId, "marker", uid());
  assert.equal(marker.seq, 2);
  await a.waitMessage(chatId, 2);
  assert.deepEqual(b.messages(), [], "org B's agent got no message");
  assert.deepEqual(b.events("typing"), []);
});

test("a customer gets not_found for another customer's chat (socket and REST) and its lastSeq for it is ignored", opts, async () => {
  const org = newOrg();
  const alice = person(org, "customer");
  const bob = person(org, "customer");
  const a = await chat(A.url, { token: alice.token });
  const chatId = (await a.sendOk(null, "alice's chat", uid())).chatId;
  await a.sendOk(chatId, "more", uid());
  // bob asks for catch-up of alice's chat: ignored (SPEC 12.4)
  const b = await chat(B.url, { token: bob.token, context: { lastSeq: { [chatId]: 0 } } });
  assert.deepEqual(b.session.chats, []);

  await expectCode(b, "history", { chatId }, "not_found");
  await expectCode(b, "read", { chatId, seq: 1 }, "not_found");
  await expectCode(b, "chat-message", { chatId, clientId: uid(), text: "bob was here" }, "not_found");
  await expectCode(b, "typing", { chatId, isTyping: true }, "not_found");
  await expectCode(b, "close-chat", { chatId }, "not_found");
  await expect404(A.url, "GET", `/chat/chats/${chatId}`, bob.token);
  await expect404(A.url, "GET", `/chat/chats/${chatId}/messages`, bob.token);
  await expect404(A.url, "POST", `/chat/chats/${chatId}/messages`, bob.token, { clientId: uid(), text: "bob was here" });
  assert.deepEqual((await rest(A.url, "GET", "/chat/chats", { token: bob.token })).body.chats, []);
  // control: alice gets her chat over REST
  const mine = await rest(B.url, "GET", `/chat/chats/${chatId}`, { token: alice.token });
  assert.equal(mine.status, 200);
  assert.equal(mine.body.chat.id, chatId);
  assert.equal(mine.body.chat.lastSeq, 2);

  // bob's own first message is his marker: nothing of alice's chat reached him before it
  const own = await b.sendOk(null, "bob's chat", uid());
  assert.notEqual(own.chatId, chatId);
  assert.equal(own.seq, 1);
  await b.waitMessage(own.chatId, 1);
  assert.deepEqual(b.messages(chatId), [], "no catch-up or live message of alice's chat");
  // and alice saw nothing of bob's attempts: her marker
  const m3 = await a.sendOk(chatId, "marker", uid());
  assert.equal(m3.seq, 3);
  await a.waitMessage(chatId, 3);
  assert.deepEqual(a.messages(chatId).map((m) => m.seq), [1, 2, 3]);
  assert.deepEqual(a.events("typing"), []);
});

test("agents who are not assigned may read and observe but not write, type or close (forbidden)", opts, async () => {
  const org = newOrg();
  const cust = person(org, "customer");
  const c = await chat(A.url, { token: cust.token });
  const chatId = (await c.sendOk(null, "help", uid())).chatId;
  const agent = person(org, "agent");
  const ag = await chat(B.url, { token: agent.token });
  await expectCode(ag, "chat-message", { chatId, clientId: uid(), text: "not mine" }, "forbidden");
  await expectCode(ag, "chat-message", { clientId: uid(), text: "no chat id" }, "bad_request");
  await expectCode(ag, "typing", { chatId, isTyping: true }, "forbidden");
  await expectCode(ag, "close-chat", { chatId }, "forbidden");
  const r = await rest(A.url, "POST", `/chat/chats/${chatId}/messages`, { token: agent.token, body: { clientId: uid(), text: "x" } });
  assert.equal(r.status, 403, JSON.stringify(r.body));
  assert.equal(r.body.error.code, "forbidden");
  const h = await ag.ack("history", { chatId });
  assert.equal(h.ok, true);
  assert.deepEqual(h.messages.map((m) => m.text), ["help"]);
});

test("REST without a valid bearer token is 401 with the token error", opts, async () => {
  const org = newOrg();
  const cases = [
    [undefined, "token_missing"],
    ["garbage", "token_invalid"],
    [token({ org, ttl: -60 }), "token_expired"],
    [signJwt({ sub: "x", org, typ: "agent", exp: Math.floor(Date.now() / 1000) + 60 }, "wrong"), "token_invalid"],
  ];
  for (const [tok, code] of cases) {
    for (const p of ["/chat/chats", "/chat/chats/abc", "/chat/chats/abc/messages"]) {
      const r = await rest(A.url, "GET", p, { token: tok });
      assert.equal(r.status, 401, `${p} ${code}: ${r.status}`);
      assert.equal(r.body?.error?.code, "unauthorized", `${p}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error.message, code, `${p}: ${JSON.stringify(r.body)}`);
    }
  }
});

test("REST surface: CORS only for the configured origins, JSON 404 for unknown paths, 413 for an oversized body; the / namespace is refused", opts, async () => {
  const origin = "https://shop.example";
  const C = await startChatd("auth-cors", { CHATD_CORS_ORIGINS: `${origin},https://other.example`, CHATD_MAX_PAYLOAD: "100000" });
  try {
    const org = newOrg();
    const cust = person(org, "customer");
    const s = await chat(C.url, { token: cust.token });
    const chatId = (await s.sendOk(null, "hi", uid())).chatId;

    const pre = await fetch(`${C.url}/chat/chats/${chatId}/messages`, {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" },
    });
    await pre.arrayBuffer();
    assert.ok(pre.status === 204 || pre.status === 200, `preflight status ${pre.status}`);
    assert.equal(pre.headers.get("access-control-allow-origin"), origin);
    assert.match(pre.headers.get("access-control-allow-methods") || "", /POST/);
    assert.match((pre.headers.get("access-control-allow-headers") || "").toLowerCase(), /authorization/);
    const get = await rest(C.url, "GET", `/chat/chats/${chatId}`, { token: cust.token, headers: { origin } });
    assert.equal(get.status, 200);
    assert.equal(get.headers.get("access-control-allow-origin"), origin);
    const evil = await rest(C.url, "GET", `/chat/chats/${chatId}`, { token: cust.token, headers: { origin: "https://evil.example" } });
    assert.equal(evil.headers.get("access-control-allow-origin"), null, "no CORS grant for other origins");
    const evilPre = await fetch(`${C.url}/chat/chats`, { method: "OPTIONS", headers: { origin: "https://evil.example", "access-control-request-method": "GET" } });
    await evilPre.arrayBuffer();
    assert.equal(evilPre.headers.get("access-control-allow-origin"), null);

    for (const p of ["/chat/nope", "/chat/chats/x/y/z", "/chat/chats/x/transcripts"]) {
      const r = await rest(C.url, "GET", p, { token: cust.token });
      assert.equal(r.status, 404, p);
      assert.equal(r.body?.error?.code, "not_found", `${p}: ${JSON.stringify(r.body)}`);
    }
    const big = await rest(C.url, "POST", `/chat/chats/${chatId}/messages`, { token: cust.token, body: { clientId: uid(), text: "x".repeat(150000) } });
    assert.equal(big.status, 413, `${big.status} ${JSON.stringify(big.body).slice(0, 200)}`);
    assert.equal(big.body?.error?.code, "payload_too_large");

    for (const nsp of ["/", "/admin"]) {
      const other = client(C.url, nsp, { auth: { token: cust.token } });
      await assert.rejects(connected(other), (e) => e.message === "Invalid namespace", `namespace ${nsp}`);
    }
  } finally {
    closeAll();
    await C.stop();
  }
});

function signAsym(claims, alg, privateKey) {
  const h = Buffer.from(JSON.stringify({ alg, typ: "JWT" })).toString("base64url");
  const p = Buffer.from(JSON.stringify(claims)).toString("base64url");
  const sig = crypto.sign("sha256", Buffer.from(`${h}.${p}`), alg === "ES256" ? { key: privateKey, dsaEncoding: "ieee-p1363" } : privateKey);
  return `${h}.${p}.${sig.toString("base64url")}`;
}

for (const alg of ["RS256", "ES256"]) {
  test(`${alg} with CHATD_JWT_PUBLIC_KEY only: its tokens are accepted; HS256 tokens (the default dev secret, the PEM as HMAC key) and other keys are token_invalid`, opts, async () => {
    const gen = () => (alg === "RS256" ? crypto.generateKeyPairSync("rsa", { modulusLength: 2048 }) : crypto.generateKeyPairSync("ec", { namedCurve: "P-256" }));
    const { publicKey, privateKey } = gen();
    const pem = publicKey.export({ type: "spki", format: "pem" });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "chatd-jwt-"));
    const file = path.join(dir, "public.pem");
    fs.writeFileSync(file, pem);
    // no CHATD_JWT_SECRET at all: the node knows only the public key
    const C = await startChatd(`auth-${alg}`, { CHATD_JWT_SECRET: undefined, CHATD_JWT_PUBLIC_KEY: file });
    try {
      const org = newOrg();
      const now = Math.floor(Date.now() / 1000);
      const claims = { sub: "pk-user", org, typ: "agent", name: "PK", exp: now + 600 };
      const ok = await chat(C.url, { token: signAsym(claims, alg, privateKey) });
      assert.equal(ok.session.role, "agent");
      assert.equal(ok.session.identity.id, "pk-user");
      const r = await rest(C.url, "GET", "/chat/chats", { token: signAsym(claims, alg, privateKey) });
      assert.equal(r.status, 200, JSON.stringify(r.body));

      const cases = [
        ["HS256 with the documented default secret", signJwt(claims, "dev-secret-change-me")],
        ["HS256 with the public PEM as HMAC key (alg confusion)", signJwt(claims, pem)],
        [`${alg} from another key`, signAsym(claims, alg, gen().privateKey)],
        [`${alg} expired`, signAsym({ ...claims, exp: now - 60 }, alg, privateKey), "token_expired"],
      ];
      const problems = [];
      for (const [what, tok, code = "token_invalid"] of cases) {
        const err = await connectError(C.url, { token: tok });
        if (!err) problems.push(`${what}: connected (session) instead of connect_error ${code}`);
        else if (err.data?.code !== code) problems.push(`${what}: connect_error ${JSON.stringify(err.data)}, want ${code}`);
        const rr = await rest(C.url, "GET", "/chat/chats", { token: tok });
        if (rr.status !== 401) problems.push(`${what}: REST GET /chat/chats ${rr.status}, want 401`);
      }
      assert.deepEqual(problems, []);
    } finally {
      closeAll();
      await C.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
}

test("iss/aud are checked when configured, nbf always", opts, async () => {
  const C = await startChatd("auth-iss", { CHATD_JWT_ISSUER: "https://auth.example", CHATD_JWT_AUDIENCE: "chatd" });
  try {
    const org = newOrg();
    const now = Math.floor(Date.now() / 1000);
    const base = { sub: "u1", org, typ: "customer", exp: now + 600, iss: "https://auth.example", aud: "chatd" };
    for (const [what, claims] of [
      ["iss + aud", base],
      ["aud array", { ...base, aud: ["other", "chatd"] }],
      ["nbf in the past", { ...base, nbf: now - 10 }],
    ]) {
      const s = await chat(C.url, { token: signJwt(claims) });
      assert.equal(s.session.role, "customer", what);
    }
    const problems = [];
    for (const [what, claims] of [
      ["no iss", { ...base, iss: undefined }],
      ["wrong iss", { ...base, iss: "https://evil.example" }],
      ["no aud", { ...base, aud: undefined }],
      ["wrong aud", { ...base, aud: "other" }],
      ["aud array without chatd", { ...base, aud: ["a", "b"] }],
      ["nbf in the future", { ...base, nbf: now + 600 }],
    ]) {
      const err = await connectError(C.url, { token: signJwt(JSON.parse(JSON.stringify(claims))) });
      if (!err || err.data?.code !== "token_invalid") problems.push(`${what}: ${err ? JSON.stringify(err.data) : "connected"}`);
    }
    assert.deepEqual(problems, []);
    // without the settings (node A) iss/aud are not required
    const plain = await chat(A.url, { token: signJwt({ sub: "u2", org, typ: "customer", exp: now + 600 }) });
    assert.equal(plain.session.role, "customer");
    const nbf = await connectError(A.url, { token: signJwt({ sub: "u2", org, typ: "customer", exp: now + 600, nbf: now + 600 }) });
    assert.deepEqual(nbf?.data, { code: "token_invalid" }, "nbf in the future without iss/aud settings");
  } finally {
    closeAll();
    await C.stop();
  }
});
