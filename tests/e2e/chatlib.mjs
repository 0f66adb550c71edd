// Helpers for the /chat end-to-end tests (tests/e2e/chat_*.test.mjs): chatd
// `serve` nodes on the test Redis + PostgreSQL, HS256 tokens signed here,
// socket.io-client sockets whose every event (and every ack) lands in one
// ordered log that tests await on, REST calls, direct PostgreSQL queries, and
// stopping/starting the test services (tests/services.sh) for fault tests.
//
// Environment (set by tests/run.sh): CHATD_TEST_DATABASE_URL,
// CHATD_TEST_REDIS_URL, TEST_SERVICES_DIR. Without the database URL the chat
// tests skip (SKIP_REASON); without TEST_SERVICES_DIR the fault tests skip.
//
// By hand:
//   bash tests/services.sh start /tmp/svc && . /tmp/svc/env
//   CHATD_DATABASE_URL=$CHATD_TEST_DATABASE_URL build/chatd migrate
//   TEST_SERVICES_DIR=/tmp/svc CHATD_BIN=build-san/chatd \
//     node --test --test-concurrency=1 tests/e2e/chat_*.test.mjs
//   bash tests/services.sh stop /tmp/svc
import crypto from "node:crypto";
import { spawn } from "node:child_process";
import path from "node:path";
import { createRequire } from "node:module";
import { startServer, client, withTimeout, ROOT, REPLICA } from "./lib.mjs";

const require = createRequire(import.meta.url);

export const DB_URL = process.env.CHATD_TEST_DATABASE_URL || "";
export const REDIS_URL = process.env.CHATD_TEST_REDIS_URL || "";
export const SERVICES_DIR = process.env.TEST_SERVICES_DIR || "";
export const SKIP_REASON = REPLICA
  ? "the /chat tests need chatd serve (E2E_SERVER=replica has no /chat application)"
  : !DB_URL || !REDIS_URL
    ? "CHATD_TEST_DATABASE_URL / CHATD_TEST_REDIS_URL unset: start services with tests/services.sh (tests/run.sh does)"
    : false;

/** A JWT secret for this test file (every node of the file shares it). */
export const SECRET = crypto.randomBytes(24).toString("hex");

export const uid = (prefix = "") => prefix + crypto.randomBytes(6).toString("hex");

/** A fresh org id: tests never see each other's data. */
export const newOrg = () => uid("org-");

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** Signs claims as an HS256 JWT (header override for alg tricks). */
export function signJwt(claims, secret = SECRET, header = { alg: "HS256", typ: "JWT" }) {
  const h = b64url(JSON.stringify(header));
  const p = b64url(JSON.stringify(claims));
  const sig = crypto.createHmac("sha256", secret).update(`${h}.${p}`).digest();
  return `${h}.${p}.${b64url(sig)}`;
}

/**
 * A token for {org, typ, sub, name?, email?, skills?, ttl?(s), extra?:{claims}}.
 * ttl may be negative (expired).
 */
export function token({ org, typ = "customer", sub = uid(`${typ}-`), name, email, skills, ttl = 3600, extra = {}, secret }) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub, org, typ, iat: now, exp: now + ttl, ...extra };
  if (name !== undefined) claims.name = name;
  if (email !== undefined) claims.email = email;
  if (skills !== undefined) claims.skills = skills;
  return signJwt(claims, secret);
}

/** A person with a token: {org, typ, sub, name, email?, key, token}. key = identity key (email else sub). */
export function person(org, typ = "customer", opts = {}) {
  const sub = opts.sub || uid(`${typ}-`);
  const name = opts.name || `${typ === "agent" ? "Agent" : "Customer"} ${sub.slice(-4)}`;
  const p = { org, typ, sub, name, email: opts.email, key: opts.email || sub };
  p.token = token({ org, typ, sub, name, email: opts.email, skills: opts.skills, ttl: opts.ttl });
  return p;
}

/**
 * Starts a `chatd serve` node on the test services. env overrides; nodeId names
 * it in the cluster (CHATD_NODE_ID); port reuses a port (restarts). Returns
 * lib.mjs's handle.
 */
export async function startChatd(nodeId = uid("node-"), env = {}, port = undefined) {
  return startServer("serve", {
    CHATD_DATABASE_URL: DB_URL,
    CHATD_REDIS_URL: REDIS_URL,
    CHATD_JWT_SECRET: SECRET,
    CHATD_NODE_ID: nodeId,
    CHATD_PING_INTERVAL_MS: "25000",
    CHATD_PING_TIMEOUT_MS: "20000",
    ...env,
  }, { port });
}

/**
 * A /chat socket whose every incoming event is appended, in arrival order, to
 * log ({event, data, at}); acks sent through ack() are logged too ({event:
 * "ack", name, data}) at the moment they arrive, so a test can check what came
 * before what. Waiters resolve as soon as a matching entry is logged.
 */
export class ChatSocket {
  constructor(url, auth, opts = {}) {
    this.log = [];
    this.waiters = [];
    this.disconnects = [];
    this.socket = client(url, "/chat", { auth, ...opts });
    this.socket.onAny((event, ...args) => this.push({ event, data: args[0], args }));
    this.socket.on("disconnect", (reason) => this.disconnects.push(reason));
  }

  push(entry) {
    entry.at = Date.now();
    entry.i = this.log.length;
    this.log.push(entry);
    for (const w of [...this.waiters]) {
      if (w.pred(entry)) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(entry);
      }
    }
  }

  /** The first log entry (from index `from`) matching pred, now or when it arrives. */
  waitFor(pred, ms = 5000, what = "a matching event", from = 0) {
    const found = this.log.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    let w;
    const p = new Promise((resolve) => {
      w = { pred, resolve };
      this.waiters.push(w);
    });
    return withTimeout(p, ms, what).catch((e) => {
      const i = this.waiters.indexOf(w);
      if (i >= 0) this.waiters.splice(i, 1);
      e.message += `\nlast events: ${JSON.stringify(this.log.slice(-8).map(brief))}`;
      throw e;
    });
  }

  /** Waits for event `name` whose payload satisfies pred. */
  waitEvent(name, pred = () => true, ms = 5000, from = 0) {
    return this.waitFor((e) => e.event === name && pred(e.data), ms, `"${name}"`, from).then((e) => e.data);
  }

  /** Waits for the chat-message with chatId and seq (or clientId when a string). */
  waitMessage(chatId, seqOrClientId, ms = 5000) {
    const key = typeof seqOrClientId === "number" ? "seq" : "clientId";
    return this.waitFor(
      (e) => e.event === "chat-message" && e.data?.chatId === chatId && e.data?.[key] === seqOrClientId,
      ms,
      `chat-message ${key}=${seqOrClientId} of ${chatId}`,
    ).then((e) => e.data);
  }

  /** Payloads of event `name` (optionally only those for chatId), in arrival order. */
  events(name, chatId) {
    return this.log.filter((e) => e.event === name && (chatId === undefined || e.data?.chatId === chatId)).map((e) => e.data);
  }

  /** chat-message payloads for chatId in arrival order. */
  messages(chatId) {
    return this.events("chat-message", chatId);
  }

  /** Emits with an ack; resolves with the ack payload (rejects after ms). The ack is logged. */
  ack(event, payload, ms = 10000) {
    return new Promise((resolve, reject) => {
      const args = payload === undefined ? [] : [payload];
      this.socket.timeout(ms).emit(event, ...args, (err, res) => {
        if (err) return reject(new Error(`no ack for "${event}" ${JSON.stringify(payload)} within ${ms} ms`));
        this.push({ event: "ack", name: event, data: res });
        resolve(res);
      });
    });
  }

  /** Emits raw arguments (any number, any types) with an ack. */
  ackRaw(event, args, ms = 10000) {
    return new Promise((resolve, reject) => {
      this.socket.timeout(ms).emit(event, ...args, (err, res) => {
        if (err) return reject(new Error(`no ack for "${event}" within ${ms} ms`));
        resolve(res);
      });
    });
  }

  /** Sends a chat-message; returns the ack. */
  send(chatId, text, clientId = uid("c-"), extra = {}) {
    const payload = { clientId, text, ...extra };
    if (chatId) payload.chatId = chatId;
    return this.ack("chat-message", payload);
  }

  /** Sends a chat-message and asserts an ok ack; returns the message. */
  async sendOk(chatId, text, clientId) {
    const res = await this.send(chatId, text, clientId);
    if (!res || res.ok !== true) throw new Error(`chat-message ${JSON.stringify(text)} not ok: ${JSON.stringify(res)}`);
    return res.message;
  }

  get id() {
    return this.socket.id;
  }

  get connected() {
    return this.socket.connected;
  }

  close() {
    this.socket.disconnect();
  }
}

function brief(e) {
  const d = e.data;
  if (e.event === "chat-message") return `chat-message ${d?.chatId?.slice(0, 8)}#${d?.seq} ${String(d?.text).slice(0, 20)}`;
  if (e.event === "ack") return `ack(${e.name}) ${JSON.stringify(d).slice(0, 80)}`;
  return `${e.event} ${JSON.stringify(d).slice(0, 80)}`;
}

/** Connects a /chat socket and waits for `session`. Returns the ChatSocket (with .session). */
export async function chat(url, auth, opts = {}) {
  const cs = new ChatSocket(url, typeof auth === "string" ? { token: auth } : auth, opts);
  let onErr;
  const failed = new Promise((_, reject) => {
    onErr = (err) => reject(new Error(`connect_error ${err.message} ${JSON.stringify(err.data)}`));
    cs.socket.once("connect_error", onErr);
  });
  try {
    cs.session = await Promise.race([cs.waitEvent("session", () => true, opts.sessionMs || 8000), failed]);
  } finally {
    cs.socket.off("connect_error", onErr);
  }
  return cs;
}

/** Connects with auth that must be refused; resolves with the connect_error (message, data). */
export async function connectError(url, auth, opts = {}) {
  const cs = new ChatSocket(url, auth, opts);
  const p = new Promise((resolve) => {
    cs.socket.once("connect_error", (err) => resolve(err));
    cs.socket.once("connect", () => resolve(null));
  });
  const err = await withTimeout(p, 8000, "connect_error");
  cs.close();
  return err;
}

/** REST call: returns {status, body (parsed JSON or text), headers}. */
export async function rest(url, method, p, { token: tok, body, headers = {} } = {}) {
  const h = { ...headers };
  if (tok) h.authorization = `Bearer ${tok}`;
  if (body !== undefined) h["content-type"] = "application/json";
  const res = await fetch(url + p, { method, headers: h, body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body) });
  const text = await res.text();
  let parsed = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, body: parsed, headers: res.headers };
}

/** HTTP status of GET url+p (0 when the request fails). */
export async function httpStatus(url, p) {
  try {
    const res = await fetch(url + p);
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/**
 * Polls fn() (async) until it returns a truthy value, with a short backoff,
 * for conditions that have no event to await (HTTP readiness, a service coming
 * back). Throws after ms, naming what was awaited and the last value.
 */
export async function waitUntil(fn, ms, what) {
  const deadline = Date.now() + ms;
  let last;
  for (let delay = 20; ; delay = Math.min(delay * 2, 250)) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timeout after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

let pool;
/** Runs SQL on the test database (pg Pool, closed by closeDb()). */
export async function sql(text, params = []) {
  if (!pool) {
    const { Pool } = require("pg");
    pool = new Pool({ connectionString: DB_URL, max: 2 });
    pool.on("error", () => {}); // idle clients die when a fault test stops PostgreSQL
  }
  const r = await pool.query(text, params);
  return r.rows;
}

export async function closeDb() {
  if (pool) {
    const p = pool;
    pool = undefined;
    await p.end().catch(() => {});
  }
}

/** tests/services.sh CMD TEST_SERVICES_DIR (stop-pg, start-pg, stop-redis, start-redis). */
export function services(cmd) {
  if (!SERVICES_DIR) throw new Error("TEST_SERVICES_DIR unset");
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [path.join(ROOT, "tests/services.sh"), cmd, SERVICES_DIR], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    child.on("exit", (code) => (code === 0 ? resolve(out) : reject(new Error(`services.sh ${cmd} exited ${code}: ${out}`))));
  });
}

export const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** Checks seqs are consecutive integers (each exactly one more than the previous). Returns a problem string or null. */
export function gapProblem(seqs) {
  for (let i = 1; i < seqs.length; i++) {
    if (seqs[i] !== seqs[i - 1] + 1) return `at index ${i}: ${seqs[i - 1]} then ${seqs[i]} (seqs ${JSON.stringify(seqs.slice(Math.max(0, i - 5), i + 5))})`;
  }
  return null;
}
